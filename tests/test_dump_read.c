/* test_dump_read.c — the dump reader (activations/dump_read.c) against dumps written by
 * tests/dumps/make_dump_cases.py with h5py, independently of our writer:
 *  - valid.h5, valid_last.h5, valid_wide_strings.h5 (strings far wider than their values)
 *    and interrupted.h5 (a SWMR writer that never closed the file): every accessor and every
 *    read gives back exactly the values of *_expected.json (the oracle: the NumPy arrays
 *    written, rounded to the storage dtype; tolerance 0, since f16/bf16 -> f32 is exact);
 *  - argument errors (capacity, kind, ranges) give their status, never a partial read;
 *  - ks_dump_repair cuts interrupted.h5 back to its committed prompts and clears the flag, so
 *    plain HDF5 opens it, with the same values;
 *  - every malformed dump of cases/EXPECTED.txt is refused (at open, or at the first read
 *    that meets the defect while walking every prompt and hook) with the expected status and
 *    a message naming the file and the fault. Under ASan+UBSan this is the "never crash"
 *    check. */
#include <errno.h>
#include <stdint.h>
#include <unistd.h>

#include <hdf5.h>
#include <jansson.h>

#include "tap.h"

#include "ks_dump.h"

static char cases_dir[4096];

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) tap_diag("%s: %s (line %d)", path, je.text, je.line);
    return j;
}

/* got[i] == expected[i] exactly (null expected: NaN). */
static bool floats_equal(const float *got, const json_t *want, size_t n, const char *what) {
    if (!json_is_array(want) || json_array_size(want) != n) {
        tap_diag("%s: expected %zu values, the oracle has %zu", what, n, json_array_size(want));
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(want, i);
        bool ok = json_is_null(v) ? isnan(got[i]) : got[i] == (float)json_number_value(v);
        if (!ok) {
            tap_diag("%s[%zu]: got %.9g, want %.9g", what, i, (double)got[i],
                     json_is_null(v) ? NAN : json_number_value(v));
            return false;
        }
    }
    return true;
}

static bool ints_equal(const int32_t *got, const json_t *want, size_t n, const char *what) {
    if (!json_is_array(want) || json_array_size(want) != n) {
        tap_diag("%s: expected %zu values, the oracle has %zu", what, n, json_array_size(want));
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (got[i] != json_integer_value(json_array_get(want, i))) {
            tap_diag("%s[%zu]: got %d, want %lld", what, i, got[i],
                     (long long)json_integer_value(json_array_get(want, i)));
            return false;
        }
    return true;
}

static long long jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void check_hooks(const ks_dump *d, const json_t *want) {
    size_t n = json_array_size(want);
    tap_ok(ks_dump_n_hooks(d) == (int)n, "%zu hooks (got %d)", n, ks_dump_n_hooks(d));
    for (size_t i = 0; i < n && (int)i < ks_dump_n_hooks(d); i++) {
        const json_t *w = json_array_get(want, i);
        const ks_dump_hook *h = ks_dump_hook_at(d, (int)i);
        const json_t *dims = json_object_get(w, "dims"), *heads = json_object_get(w, "heads");
        bool ok = h && !strcmp(h->name, jstr(w, "name")) && h->layer == jint(w, "layer") &&
                  !strcmp(h->kind == KS_DUMP_KIND_TOKEN ? "token" : "attention", jstr(w, "kind")) &&
                  !strcmp(ks_dump_dtype_name(h->dtype), jstr(w, "dtype")) &&
                  h->ndim == (int)json_array_size(dims) && h->n_heads == (int)json_array_size(heads);
        int64_t elems = 1;
        for (int k = 0; ok && k < h->ndim; k++) {
            ok = h->dims[k] == json_integer_value(json_array_get(dims, (size_t)k));
            elems *= h->dims[k];
        }
        ok = ok && h->row_elems == elems;
        for (int k = 0; ok && k < h->n_heads; k++)
            ok = h->heads[k] == json_integer_value(json_array_get(heads, (size_t)k));
        char name[64];
        ks_hook_name(h ? h->point : KS_HOOK_EMBED, h ? h->layer : -1, name, sizeof name);
        ok = ok && !strcmp(name, h->name) && ks_dump_find_hook(d, jstr(w, "name")) == h;
        tap_ok(ok, "hook %zu is %s (%s, %s, layer %lld, %zu dims, %zu heads), in forward order",
               i, jstr(w, "name"), jstr(w, "kind"), jstr(w, "dtype"), jint(w, "layer"),
               json_array_size(dims), json_array_size(heads));
    }
    tap_ok(ks_dump_find_hook(d, "blocks.9.hook_resid_post") == NULL &&
               ks_dump_hook_at(d, -1) == NULL && ks_dump_hook_at(d, (int)n) == NULL,
           "unknown hooks and indices give NULL");
}

static void check_prompt(const ks_dump *d, int64_t p, const json_t *w, int topk) {
    ks_error e = {0};
    ks_dump_prompt pi;
    ks_status s = ks_dump_prompt_info(d, p, &pi, &e);
    tap_ok(s == KS_OK && pi.tok_begin == jint(w, "tok_begin") && pi.n_tokens == jint(w, "n_tokens") &&
               pi.n_prompt_tokens == jint(w, "n_prompt_tokens") &&
               pi.row_begin == jint(w, "row_begin") && pi.n_rows == jint(w, "n_rows") &&
               pi.attn_begin == jint(w, "attn_begin") && pi.n_attn == jint(w, "n_attn"),
           "prompt %lld: offsets (tokens %lld+%lld, rows %lld+%lld, keys %lld+%lld) %s", (long long)p,
           (long long)pi.tok_begin, (long long)pi.n_tokens, (long long)pi.row_begin,
           (long long)pi.n_rows, (long long)pi.attn_begin, (long long)pi.n_attn, e.msg);
    if (s != KS_OK) return;
    size_t nt = (size_t)pi.n_tokens, nr = (size_t)pi.n_rows, na = (size_t)pi.n_attn;

    char *txt = NULL, *id = NULL, *gen = NULL;
    ks_error_clear(&e);
    s = ks_dump_prompt_text(d, p, &txt, &e);
    if (s == KS_OK) s = ks_dump_prompt_id(d, p, &id, &e);
    if (s == KS_OK) s = ks_dump_generation(d, p, &gen, &e);
    tap_ok(s == KS_OK && !strcmp(txt, jstr(w, "text")) && !strcmp(id, jstr(w, "id")) &&
               !strcmp(gen, jstr(w, "generation")),
           "prompt %lld: text '%s', id '%s', generation '%s' %s", (long long)p, txt ? txt : "",
           id ? id : "", gen ? gen : "", e.msg);
    free(txt);
    free(id);
    free(gen);

    int32_t *ids = calloc(nt + 1, sizeof *ids), *pos = calloc(nr + 1, sizeof *pos);
    ks_error_clear(&e);
    s = ks_dump_read_tokens(d, p, ids, nt, &e);
    tap_ok(s == KS_OK && ints_equal(ids, json_object_get(w, "tokens"), nt, "tokens"),
           "prompt %lld: %zu token ids %s", (long long)p, nt, e.msg);
    if (nt > 0)
        tap_ok(ks_dump_read_tokens(d, p, ids, nt - 1, &e) == KS_ERR_RANGE,
               "prompt %lld: tokens into a buffer one short: KS_ERR_RANGE (%s)", (long long)p, e.msg);
    char **strs = NULL;
    ks_error_clear(&e);
    s = ks_dump_read_token_strings(d, p, &strs, &e);
    bool ok = s == KS_OK && strs;
    const json_t *ws = json_object_get(w, "token_strings");
    for (size_t i = 0; ok && i < nt; i++) ok = !strcmp(strs[i], json_string_value(json_array_get(ws, i)));
    tap_ok(ok, "prompt %lld: token strings (UTF-8 kept) %s", (long long)p, e.msg);
    ks_dump_strings_free(strs, pi.n_tokens);
    ks_error_clear(&e);
    s = ks_dump_read_positions(d, p, pos, nr, &e);
    tap_ok(s == KS_OK && ints_equal(pos, json_object_get(w, "positions"), nr, "positions"),
           "prompt %lld: %zu row positions %s", (long long)p, nr, e.msg);

    /* per-token hooks, one prompt at a time */
    const json_t *rows = json_object_get(w, "rows");
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        if (h->kind == KS_DUMP_KIND_TOKEN) {
            size_t n = nr * (size_t)h->row_elems;
            float *buf = malloc((n + 1) * sizeof *buf);
            ks_error_clear(&e);
            s = ks_dump_read_rows(d, h, p, p + 1, buf, n, &e);
            tap_ok(s == KS_OK && floats_equal(buf, json_object_get(rows, h->name), n, h->name),
                   "prompt %lld: %s [%zu, %lld] %s exact %s", (long long)p, h->name, nr,
                   (long long)h->row_elems, ks_dump_dtype_name(h->dtype), e.msg);
            if (n > 0)
                tap_ok(ks_dump_read_rows(d, h, p, p + 1, buf, n - 1, &e) == KS_ERR_RANGE,
                       "prompt %lld: %s into a buffer one short: KS_ERR_RANGE", (long long)p, h->name);
            tap_ok(ks_dump_read_attention(d, h, p, -1, buf, n, &e) == KS_ERR_ARG,
                   "read_attention of a token hook: KS_ERR_ARG (%s)", e.msg);
            free(buf);
            continue;
        }
        int nh = h->n_heads;
        size_t n = (size_t)nh * na;
        float *buf = malloc((n + 1) * sizeof *buf), *one = malloc((na + 1) * sizeof *one);
        const json_t *att = json_object_get(w, "attention");
        ks_error_clear(&e);
        s = ks_dump_read_attention(d, h, p, -1, buf, n, &e);
        tap_ok(s == KS_OK && floats_equal(buf, att, n, h->name),
               "prompt %lld: %s every head [%d, %zu] %s", (long long)p, h->name, nh, na, e.msg);
        ok = true;
        for (int k = 0; k < nh && ok; k++) {
            ok = ks_dump_read_attention(d, h, p, k, one, na, &e) == KS_OK;
            for (size_t j = 0; ok && j < na; j++) ok = one[j] == buf[(size_t)k * na + j];
        }
        tap_ok(ok, "prompt %lld: %s one head slot at a time matches %s", (long long)p, h->name, e.msg);
        if (n > 0)
            tap_ok(ks_dump_read_attention(d, h, p, -1, buf, n - 1, &e) == KS_ERR_RANGE &&
                       ks_dump_read_attention(d, h, p, nh, one, na, &e) == KS_ERR_RANGE &&
                       ks_dump_read_attention_square(d, h, p, -1, buf, n, &e) == KS_ERR_RANGE &&
                       ks_dump_read_rows(d, h, p, p + 1, buf, n, &e) == KS_ERR_ARG,
                   "prompt %lld: %s: short buffer, bad head slot, read_rows refused", (long long)p,
                   h->name);
        float *sq = malloc((nt * nt + 1) * sizeof *sq);
        const json_t *squares = json_object_get(w, "attention_square");
        for (int k = 0; k < nh; k++) {
            ks_error_clear(&e);
            s = ks_dump_read_attention_square(d, h, p, k, sq, nt * nt, &e);
            tap_ok(s == KS_OK && floats_equal(sq, json_array_get(squares, (size_t)k), nt * nt, "square"),
                   "prompt %lld: %s head slot %d as a square [%zu, %zu] %s", (long long)p, h->name,
                   k, nt, nt, e.msg);
        }
        if (nt > 0)
            tap_ok(ks_dump_read_attention_square(d, h, p, 0, sq, nt * nt - 1, &e) == KS_ERR_RANGE,
                   "prompt %lld: square into a buffer one short: KS_ERR_RANGE", (long long)p);
        free(sq);
        free(buf);
        free(one);
    }

    if (topk > 0) {
        int32_t *tid = malloc((nr * (size_t)topk + 1) * sizeof *tid);
        float *tlp = malloc((nr * (size_t)topk + 1) * sizeof *tlp), *nx = malloc((nr + 1) * sizeof *nx);
        ks_error_clear(&e);
        s = ks_dump_read_topk(d, p, tid, tlp, nx, nr, &e);
        tap_ok(s == KS_OK && ints_equal(tid, json_object_get(w, "topk_ids"), nr * (size_t)topk, "topk_ids") &&
                   floats_equal(tlp, json_object_get(w, "topk_logprobs"), nr * (size_t)topk, "topk_logprobs") &&
                   floats_equal(nx, json_object_get(w, "next_logprob"), nr, "next_logprob"),
               "prompt %lld: top-%d ids and log-probs, next log-prob (NaN at the last token) %s",
               (long long)p, topk, e.msg);
        ks_error_clear(&e);
        s = ks_dump_read_topk(d, p, NULL, NULL, nx, nr, &e);
        tap_ok(s == KS_OK && floats_equal(nx, json_object_get(w, "next_logprob"), nr, "next_logprob"),
               "prompt %lld: next log-prob alone %s", (long long)p, e.msg);
        if (nr > 0)
            tap_ok(ks_dump_read_topk(d, p, tid, NULL, NULL, nr - 1, &e) == KS_ERR_RANGE,
                   "prompt %lld: top-k into a buffer one row short: KS_ERR_RANGE", (long long)p);
        free(tid);
        free(tlp);
        free(nx);
    }
    free(ids);
    free(pos);
}

/* Every accessor of the dump at path against the oracle json. */
static void check_dump(const char *path, const char *json_path, bool interrupted) {
    json_t *w = load_json(json_path);
    if (!tap_ok(w != NULL, "oracle %s loads", json_path)) return;
    ks_dump *d = NULL;
    ks_error e = {0};
    ks_status s = ks_dump_open(path, &d, &e);
    if (!tap_ok(s == KS_OK && d, "%s opens (%s)", path, e.msg)) {
        json_decref(w);
        return;
    }
    bool complete = json_is_true(json_object_get(w, "complete"));
    tap_ok(!strcmp(ks_dump_path(d), path) && ks_dump_n_prompts(d) == jint(w, "n_prompts") &&
               ks_dump_n_tokens(d) == jint(w, "n_tokens") && ks_dump_n_rows(d) == jint(w, "n_rows"),
           "%lld prompts, %lld tokens, %lld rows", (long long)ks_dump_n_prompts(d),
           (long long)ks_dump_n_tokens(d), (long long)ks_dump_n_rows(d));
    tap_ok(ks_dump_complete(d) == complete && ks_dump_interrupted(d) == interrupted,
           "complete %d, interrupted %d", ks_dump_complete(d), ks_dump_interrupted(d));
    const ks_config *c = ks_dump_config(d);
    const json_t *wc = json_object_get(w, "config");
    tap_ok(c && c->dim == jint(wc, "dim") && c->hidden_dim == jint(wc, "hidden_dim") &&
               c->n_layers == jint(wc, "n_layers") && c->n_heads == jint(wc, "n_heads") &&
               c->n_kv_heads == jint(wc, "n_kv_heads") && c->head_dim == jint(wc, "head_dim") &&
               c->vocab_size == jint(wc, "vocab_size") && c->max_seq_len == jint(wc, "max_seq_len") &&
               c->bos_id == jint(wc, "bos_id") && c->eos_id == jint(wc, "eos_id") &&
               c->rms_eps == (float)json_number_value(json_object_get(wc, "rms_eps")) &&
               c->rope_theta == (float)json_number_value(json_object_get(wc, "rope_theta")) &&
               c->rope_style == KS_ROPE_STYLE_INTERLEAVED && c->rope_scaling == KS_ROPE_SCALING_NONE &&
               !c->tie_embeddings,
           "model config from the model_config attribute");
    const char *k;
    json_t *v;
    bool ok = true;
    json_object_foreach(json_object_get(w, "attrs"), k, v) {
        const char *got = ks_dump_attr(d, k);
        if (!got || strcmp(got, json_string_value(v)) != 0) {
            tap_diag("attribute %s: got '%s', want '%s'", k, got ? got : "(null)", json_string_value(v));
            ok = false;
        }
    }
    tap_ok(ok && ks_dump_attr(d, "no_such_attribute") == NULL,
           "root attributes as text (strings as stored, integers in decimal), NULL when absent");
    int topk = (int)jint(w, "logits_topk");
    tap_ok(ks_dump_logits_topk(d) == topk && !ks_dump_has_full_logits(d), "top-%d logits, no full logits",
           ks_dump_logits_topk(d));
    check_hooks(d, json_object_get(w, "hooks"));
    const json_t *prompts = json_object_get(w, "prompts");
    for (size_t p = 0; p < json_array_size(prompts); p++)
        check_prompt(d, (int64_t)p, json_array_get(prompts, p), topk);

    /* rows of every prompt at once are the prompts' rows one after the other */
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        if (h->kind != KS_DUMP_KIND_TOKEN) continue;
        size_t n = (size_t)(ks_dump_n_rows(d) * h->row_elems);
        float *all = malloc(n * sizeof *all);
        ks_error_clear(&e);
        s = ks_dump_read_rows(d, h, 0, ks_dump_n_prompts(d), all, n, &e);
        ok = s == KS_OK;
        size_t at = 0;
        for (size_t p = 0; ok && p < json_array_size(prompts); p++) {
            const json_t *r = json_object_get(json_object_get(json_array_get(prompts, p), "rows"), h->name);
            ok = floats_equal(all + at, r, json_array_size(r), h->name);
            at += json_array_size(r);
        }
        tap_ok(ok && at == n, "%s: rows of prompts [0, %lld) in one read %s", h->name,
               (long long)ks_dump_n_prompts(d), e.msg);
        free(all);
    }

    /* argument errors */
    ks_dump_prompt pi;
    float f1;
    const ks_dump_hook *h0 = ks_dump_hook_at(d, 0);
    tap_ok(ks_dump_prompt_info(d, -1, &pi, &e) == KS_ERR_RANGE &&
               ks_dump_prompt_info(d, ks_dump_n_prompts(d), &pi, &e) == KS_ERR_RANGE &&
               strstr(e.msg, "out of range") != NULL,
           "prompt index out of range: KS_ERR_RANGE (%s)", e.msg);
    tap_ok(ks_dump_read_rows(d, h0, 1, 0, &f1, 1, &e) == KS_ERR_RANGE &&
               ks_dump_read_rows(d, h0, 0, ks_dump_n_prompts(d) + 1, &f1, 1, &e) == KS_ERR_RANGE &&
               ks_dump_read_rows(d, h0, 2, 2, NULL, 0, &e) == KS_OK,
           "prompt ranges: reversed or past the end refused, empty reads nothing");
    ks_dump_hook fake = *h0;
    tap_ok(ks_dump_read_rows(d, &fake, 0, 1, &f1, 1, &e) == KS_ERR_ARG,
           "a hook that is not the dump's own: KS_ERR_ARG (%s)", e.msg);
    ks_dump_close(d);
    json_decref(w);
}

/* ------------------------------------------------------------------ malformed */


/* Read everything: every prompt's strings, tokens, positions, every hook, the top-k. Returns
 * the first failure (its detail in err), KS_OK when all reads pass. */
static ks_status walk(const ks_dump *d, ks_error *err) {
    ks_status s = KS_OK;
    for (int64_t p = 0; p < ks_dump_n_prompts(d) && s == KS_OK; p++) {
        ks_dump_prompt pi;
        char *str = NULL, **strs = NULL;
        if ((s = ks_dump_prompt_info(d, p, &pi, err))) break;
        if ((s = ks_dump_prompt_text(d, p, &str, err))) break;
        free(str);
        if ((s = ks_dump_prompt_id(d, p, &str, err))) break;
        free(str);
        if ((s = ks_dump_generation(d, p, &str, err))) break;
        free(str);
        size_t nt = (size_t)pi.n_tokens, nr = (size_t)pi.n_rows, na = (size_t)pi.n_attn;
        int32_t *ib = malloc((nt + 1) * sizeof *ib);
        s = ks_dump_read_tokens(d, p, ib, nt, err);
        if (!s) s = ks_dump_read_token_strings(d, p, &strs, err);
        ks_dump_strings_free(strs, pi.n_tokens);
        if (!s) s = ks_dump_read_positions(d, p, ib, nr, err);
        free(ib);
        for (int i = 0; i < ks_dump_n_hooks(d) && !s; i++) {
            const ks_dump_hook *h = ks_dump_hook_at(d, i);
            if (h->kind == KS_DUMP_KIND_TOKEN) {
                size_t n = nr * (size_t)h->row_elems;
                float *b = malloc((n + 1) * sizeof *b);
                s = ks_dump_read_rows(d, h, p, p + 1, b, n, err);
                free(b);
            } else {
                size_t n = (size_t)h->n_heads * na;
                float *b = malloc((n + nt * nt + 1) * sizeof *b);
                s = ks_dump_read_attention(d, h, p, -1, b, n, err);
                for (int k = 0; k < h->n_heads && !s; k++)
                    s = ks_dump_read_attention_square(d, h, p, k, b, nt * nt, err);
                free(b);
            }
        }
        if (!s && ks_dump_logits_topk(d) > 0) {
            size_t n = nr * (size_t)ks_dump_logits_topk(d);
            int32_t *tid = malloc((n + 1) * sizeof *tid);
            float *tlp = malloc((n + 1) * sizeof *tlp), *nx = malloc((nr + 1) * sizeof *nx);
            s = ks_dump_read_topk(d, p, tid, tlp, nx, nr, err);
            free(tid);
            free(tlp);
            free(nx);
        }
    }
    return s;
}

static void malformed(void) {
    char list[8192];
    snprintf(list, sizeof list, "%s/EXPECTED.txt", cases_dir);
    FILE *f = fopen(list, "r");
    if (!tap_ok(f != NULL, "open %s", list)) return;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *name = line, *st = strchr(name, '\t'), *sub;
        if (!st || !(sub = strchr(st + 1, '\t'))) continue;
        *st++ = '\0';
        *sub++ = '\0';
        bool known;
        ks_status want = status_from_name(st, &known);
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", cases_dir, name);
        ks_dump *d = NULL;
        ks_error e = {0};
        ks_status s = ks_dump_open(p, &d, &e);
        const char *when = "open";
        if (s == KS_OK) {
            s = walk(d, &e);
            when = "read";
        }
        ks_dump_close(d);
        bool ok = known && s == want && strstr(e.msg, name) && strstr(e.msg, sub);
        tap_ok(ok, "%s: %s at %s (want %s containing \"%s\"): %s", name, ks_status_str(s), when, st,
               sub, e.msg);
        n++;
    }
    fclose(f);
    tap_ok(n >= 20, "%d malformed cases", n);
}

/* ------------------------------------------------------------------ repair */


/* Length of axis `axis` of dataset name, opened with plain HDF5 (no SWMR): -1 on failure. */
static long long h5_len(hid_t f, const char *name, int axis) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[3] = {0};
    long long n = -1;
    if (sp >= 0 && H5Sget_simple_extent_dims(sp, dims, NULL) > axis) n = (long long)dims[axis];
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return n;
}

static void repair(void) {
    char tmpl[] = "/tmp/ks_test_dump_XXXXXX", src[8192], dst[8192], json[8192];
    if (!tap_ok(mkdtemp(tmpl) != NULL, "temp dir (%s)", strerror(errno))) return;
    snprintf(src, sizeof src, "%s/interrupted.h5", cases_dir);
    snprintf(dst, sizeof dst, "%s/interrupted.h5", tmpl);
    snprintf(json, sizeof json, "%s/interrupted_expected.json", cases_dir);
    tap_ok(ks_test_copy_file(src, dst), "copy interrupted.h5");

    /* before: plain HDF5 refuses it */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(dst, H5F_ACC_RDONLY, H5P_DEFAULT);
    tap_ok(f < 0, "before repair, plain HDF5 refuses the interrupted dump");
    if (f >= 0) H5Fclose(f);

    int64_t np = -1;
    ks_error e = {0};
    ks_status s = ks_dump_repair(dst, &np, &e);
    tap_ok(s == KS_OK && np == 3, "ks_dump_repair: %lld prompts committed %s", (long long)np, e.msg);
    f = H5Fopen(dst, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (tap_ok(f >= 0, "after repair, plain HDF5 opens it")) {
        struct {
            const char *name;
            int axis;
            long long n;
        } want[] = {{"prompt_offsets", 0, 4},
                    {"row_offsets", 0, 4},
                    {"attn_offsets", 0, 4},
                    {"prompts", 0, 3},
                    {"prompt_ids", 0, 3},
                    {"prompt_lengths", 0, 3},
                    {"generations", 0, 3},
                    {"tokens", 0, 9},
                    {"token_strings", 0, 9},
                    {"row_positions", 0, 9},
                    {"attn_row_starts", 0, 9},
                    {"activations/hook_embed", 0, 9},
                    {"activations/blocks.0.hook_resid_post", 0, 9},
                    {"activations/blocks.1.attn.hook_z", 0, 9},
                    {"activations/blocks.1.attn.hook_pattern", 1, 22},
                    {"activations/blocks.1.attn.hook_pattern", 0, 2},
                    {"logits/topk_ids", 0, 9},
                    {"logits/topk_logprobs", 0, 9},
                    {"logits/next_logprob", 0, 9}};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            long long n = h5_len(f, want[i].name, want[i].axis);
            tap_ok(n == want[i].n, "after repair, /%s axis %d holds %lld (want %lld)", want[i].name,
                   want[i].axis, n, want[i].n);
        }
        H5Fclose(f);
    }
    check_dump(dst, json, false);
    ks_error_clear(&e);
    s = ks_dump_repair(dst, &np, &e);
    tap_ok(s == KS_OK && np == 3, "repairing again changes nothing %s", e.msg);
    check_dump(dst, json, false);

    snprintf(src, sizeof src, "%s/plain_hdf5.h5", cases_dir);
    snprintf(dst, sizeof dst, "%s/plain_hdf5.h5", tmpl);
    ks_test_copy_file(src, dst);
    ks_error_clear(&e);
    s = ks_dump_repair(dst, &np, &e);
    tap_ok(s == KS_ERR_FORMAT && strstr(e.msg, "not a koalascope dump"),
           "repair refuses a file that is not a dump: %s", e.msg);
    tap_ok(ks_test_same_bytes(src, dst), "and leaves it byte for byte as it was");
    unlink(dst);
    snprintf(dst, sizeof dst, "%s/interrupted.h5", tmpl);
    unlink(dst);
    ks_error_clear(&e);
    s = ks_dump_repair(dst, &np, &e);
    tap_ok(s == KS_ERR_IO && strstr(e.msg, "interrupted.h5"), "repair of a missing file: %s", e.msg);
    rmdir(tmpl);
}

int main(void) {
    char path[8192], json[8192];
    ks_test_src_file("tests/dumps/cases", cases_dir, sizeof cases_dir);
    static const char *valid[] = {"valid", "valid_last"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s.h5", cases_dir, valid[i]);
        snprintf(json, sizeof json, "%s/%s_expected.json", cases_dir, valid[i]);
        check_dump(path, json, false);
    }
    snprintf(path, sizeof path, "%s/interrupted.h5", cases_dir);
    snprintf(json, sizeof json, "%s/interrupted_expected.json", cases_dir);
    check_dump(path, json, true);
    /* strings far wider than their values (read in blocks, NUL padding stripped) */
    snprintf(path, sizeof path, "%s/valid_wide_strings.h5", cases_dir);
    snprintf(json, sizeof json, "%s/valid_expected.json", cases_dir);
    check_dump(path, json, false);

    ks_dump *d = NULL;
    ks_error e = {0};
    snprintf(path, sizeof path, "%s/no_such_dump.h5", cases_dir);
    ks_status s = ks_dump_open(path, &d, &e);
    tap_ok(s == KS_ERR_IO && d == NULL && strstr(e.msg, "no_such_dump.h5") && strstr(e.msg, "cannot open"),
           "a missing file: KS_ERR_IO (%s)", e.msg);
    ks_error_clear(&e);
    s = ks_dump_open(cases_dir, &d, &e);
    tap_ok(s == KS_ERR_IO && d == NULL, "a directory: KS_ERR_IO (%s)", e.msg);
    ks_dump_close(NULL);
    ks_dump_strings_free(NULL, 3);
    tap_ok(1, "ks_dump_close(NULL) and ks_dump_strings_free(NULL) are no-ops");

    malformed();
    repair();
    return tap_done();
}
