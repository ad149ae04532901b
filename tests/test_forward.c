/* test_forward.c — the CPU forward pass, KV cache, hooks and generation on the real
 * stories260K model (../shared/data/stories260K).
 *
 * Oracles:
 *  - Karpathy's published greedy sample (stories260K.llama2c-doc.md, read at run time):
 *    greedy generation from BOS must reproduce it character for character;
 *  - the top-5 logits after BOS listed in stories260K/PROVENANCE.md (an independent Python
 *    forward), to their printed 4 decimals (tolerance 1e-3);
 *  - the .bin and .gguf files hold the same weights, so their logits must be bit-identical;
 *  - self-consistency with stated tolerances: prefill vs token-by-token decode vs chunked
 *    prefill within 5e-5 absolute on logits of magnitude up to ~20 (a few f32 ulps: GEMM,
 *    GEMV and chunked GEMMs sum in different orders); hook edits exactly.
 * The comparison with HF transformers is in test_reference.c. */
#include "ks_model.h"
#include "tap.h"

static char bin_path[4096], gguf_path[4096], tok_path[4096], doc_path[4096];

static ks_model *open_model(const char *path, const char *tok) {
    ks_model *m = NULL;
    ks_error err = {0};
    ks_model_options o = {.tokenizer_path = tok};
    if (ks_model_open(path, &o, &m, &err) != KS_OK) {
        tap_ok(0, "open %s: %s", path, err.msg);
        return NULL;
    }
    return m;
}

static ks_session *new_session(const ks_model *m, int max_batch) {
    ks_session *s = NULL;
    ks_error err = {0};
    ks_session_options o = {.max_batch = max_batch};
    if (ks_session_create(m, &o, &s, &err)) tap_ok(0, "session: %s", err.msg);
    return s;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float d = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        if (!(e <= d)) d = e; /* NaN propagates as failure */
    }
    return d;
}

/* The greedy sample from the doc: the first ``` block after "temperature 0.0", minus its
 * "$ ./run" command line. */
static char *published_sample(void) {
    FILE *f = fopen(doc_path, "rb");
    if (!f) return NULL;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strstr(buf, "temperature 0.0");
    if (!p || !(p = strstr(p, "```"))) return NULL;
    p = strchr(p, '\n');
    if (!p || strncmp(p + 1, "$ ./run", 7) != 0) return NULL;
    p = strchr(p + 1, '\n') + 1;
    char *end = strstr(p, "\n```");
    if (!end) return NULL;
    *end = 0;
    return p;
}

static void test_published_sample(ks_model *m) {
    const char *expected = published_sample();
    if (!tap_ok(expected != NULL, "found the published greedy sample in %s", doc_path)) return;
    ks_session *s = new_session(m, 0);
    ks_error err = {0};
    int bos = ks_tokenizer_bos(ks_model_tokenizer(m));
    /* llama2.c's run.c runs 256 steps from BOS, sampling one token per step */
    ks_generate_params gp = {.max_new_tokens = 256, .sampling = {.temperature = 0, .top_p = 1}};
    char *text = NULL;
    int *ids = NULL, n = 0;
    ks_status st = ks_generate(s, &bos, 1, &gp, NULL, NULL, &ids, &n, &text, &err);
    tap_ok(st == KS_OK, "greedy generation from BOS: %s", st ? err.msg : "ok");
    if (st == KS_OK) {
        /* run.c stops at BOS (the story delimiter); the published text is what it printed */
        size_t el = strlen(expected);
        int ok = strncmp(text, expected, el) == 0;
        if (!ok) {
            size_t i = 0;
            while (text[i] && text[i] == expected[i]) i++;
            tap_diag("first difference at byte %zu:\n#  got      '%.60s'\n#  expected '%.60s'", i,
                     text + i, expected + i);
        }
        tap_ok(ok, "greedy sample reproduces the published 256-step sample exactly (%zu bytes, %d tokens)",
               el, n);
        static const int first20[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                      315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
        tap_ok(n >= 20 && memcmp(ids, first20, sizeof first20) == 0,
               "first 20 generated ids equal PROVENANCE.md's");
    }
    free(text);
    free(ids);
    ks_session_free(s);
}

static void test_first_logits(ks_model *m) {
    ks_session *s = new_session(m, 0);
    ks_error err = {0};
    float logits[512];
    int bos = 1;
    ks_session_forward(s, &bos, 1, KS_LOGITS_LAST, logits, &err);
    static const struct {
        int id;
        float v;
    } top[] = {{403, 17.0235f}, {385, 15.4062f}, {410, 13.1083f}, {317, 12.7692f}, {407, 12.4181f}};
    float worst = 0;
    for (int i = 0; i < 5; i++) worst = fmaxf(worst, fabsf(logits[top[i].id] - top[i].v));
    tap_ok(worst < 1e-3f, "top-5 logits after BOS equal PROVENANCE.md's to 1e-3 (max error %.2g)",
           (double)worst);
    ks_session_free(s);
}

/* Logits of every position for ids, with a session of the given chunk size. */
static float *all_logits(const ks_model *m, const int *ids, int n, int max_batch) {
    int V = ks_model_config(m)->vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)n * V);
    ks_session *s = new_session(m, max_batch);
    ks_error err = {0};
    if (ks_session_forward(s, ids, n, KS_LOGITS_ALL, lg, &err)) tap_ok(0, "forward: %s", err.msg);
    ks_session_free(s);
    return lg;
}

static int sample_ids[64];

static void test_bin_vs_gguf(ks_model *bin, ks_model *gguf) {
    float *a = all_logits(bin, sample_ids, 64, 0), *b = all_logits(gguf, sample_ids, 64, 0);
    tap_ok(memcmp(a, b, sizeof(float) * 64 * 512) == 0,
           ".bin and .gguf give bit-identical logits over 64 positions");
    free(a);
    free(b);
}

static void prog_cb(int done, int total, void *user) {
    struct prog {
        int *seen, *n;
    } *p = user;
    (void)total;
    if (*p->n < 16) p->seen[(*p->n)++] = done;
}

static void test_cache_consistency(ks_model *m) {
    const int n = 40, V = 512;
    float *full = all_logits(m, sample_ids, n, 0);
    float *chunked = all_logits(m, sample_ids, n, 7);
    float *step = malloc(sizeof(float) * n * V);
    ks_session *s = new_session(m, 0);
    ks_error err = {0};
    for (int i = 0; i < n; i++) ks_session_forward(s, sample_ids + i, 1, KS_LOGITS_LAST, step + (size_t)i * V, &err);
    float d1 = max_abs_diff(full, step, (size_t)n * V), d2 = max_abs_diff(full, chunked, (size_t)n * V);
    tap_ok(d1 < 5e-5f, "token-by-token decode with the KV cache equals prefill (max |diff| %.2g < 5e-5)", (double)d1);
    tap_ok(d2 < 5e-5f, "prefill in chunks of 7 equals one chunk (max |diff| %.2g < 5e-5)", (double)d2);
    /* progress: a 40-token call in chunks of 7 reports 7, 14, ..., 40 */
    {
        ks_session *ps = new_session(m, 7);
        int seen[16], n_seen = 0;
        struct prog { int *seen, *n; } pr = {seen, &n_seen};
        ks_session_set_progress(ps, prog_cb, &pr);
        ks_session_forward(ps, sample_ids, n, KS_LOGITS_LAST, step, &err);
        tap_ok(n_seen == 6 && seen[0] == 7 && seen[5] == 40, "progress reported after each chunk (%d calls, last %d)",
               n_seen, n_seen ? seen[n_seen - 1] : -1);
        ks_session_free(ps);
    }
    /* truncate and re-run the tail: same logits */
    ks_session_truncate(s, 20);
    float *tail = malloc(sizeof(float) * 20 * V);
    ks_session_forward(s, sample_ids + 20, 20, KS_LOGITS_ALL, tail, &err);
    float d3 = max_abs_diff(tail, full + 20 * V, 20 * (size_t)V);
    tap_ok(d3 < 5e-5f, "truncate + re-run reuses the cached prefix (max |diff| %.2g)", (double)d3);
    /* limits */
    ks_session_reset(s);
    int bad = 512;
    tap_ok(ks_session_forward(s, &bad, 1, KS_LOGITS_LAST, step, &err) == KS_ERR_RANGE && strstr(err.msg, "512"),
           "a token id outside the vocabulary is refused: %s", err.msg);
    ks_session_options so = {.max_seq_len = 8};
    ks_session *small = NULL;
    ks_session_create(m, &so, &small, &err);
    tap_ok(ks_session_forward(small, sample_ids, 9, KS_LOGITS_LAST, step, &err) == KS_ERR_RANGE &&
               strstr(err.msg, "context"),
           "overrunning the context is refused: %s", err.msg);
    ks_session_free(small);
    /* score equals log-softmax of the logits */
    float lp[39];
    ks_score(s, sample_ids, n, lp, &err);
    double worst = 0;
    for (int i = 0; i + 1 < n; i++) {
        const float *row = full + (size_t)i * V;
        double mx = row[0], z = 0;
        for (int j = 1; j < V; j++) mx = fmax(mx, row[j]);
        for (int j = 0; j < V; j++) z += exp(row[j] - mx);
        worst = fmax(worst, fabs(lp[i] - (row[sample_ids[i + 1]] - mx - log(z))));
    }
    tap_ok(worst < 1e-5, "score = log-softmax of the logits (max |diff| %.2g)", worst);
    free(full);
    free(chunked);
    free(step);
    free(tail);
    ks_session_free(s);
}

/* ---- hooks */

typedef struct {
    int asked, handed;
    char seen[128][48];
    int n_seen;
    const char *want;     /* full name to act on */
    const char *want2;    /* full name to copy out into buf2 (any mode) */
    float *buf2;
    size_t buf2_len;
    int mode;             /* 0 read-only count, 1 zero, 2 copy out, 3 copy in */
    float *buf;
    size_t buf_len;
    bool check_pattern;
    float pattern_err;
} hook_state;

static bool hook_cb(const ks_hook_tensor *t, bool ask, void *user) {
    hook_state *h = user;
    if (ask) {
        h->asked++;
        if (h->mode == 0 && !h->want2) return true;
        return strcmp(t->name, h->want) == 0 || (h->want2 && strcmp(t->name, h->want2) == 0);
    }
    h->handed++;
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    if (h->want2 && strcmp(t->name, h->want2) == 0) {
        h->buf2 = malloc(n * sizeof(float));
        memcpy(h->buf2, t->data, n * sizeof(float));
        h->buf2_len = n;
        return true;
    }
    if (h->mode == 0 && h->n_seen < 128) {
        int dup = 0;
        for (int i = 0; i < h->n_seen; i++) dup |= strcmp(h->seen[i], t->name) == 0;
        if (!dup) snprintf(h->seen[h->n_seen++], 48, "%s", t->name);
        if (t->point == KS_HOOK_ATTN_PATTERN) { /* rows sum to 1, future keys get 0 */
            int H = (int)t->shape[0], B = (int)t->shape[1], L = (int)t->shape[2];
            for (int a = 0; a < H; a++)
                for (int b = 0; b < B; b++) {
                    double sum = 0;
                    for (int k = 0; k < L; k++) {
                        float v = t->data[((size_t)a * B + b) * L + k];
                        sum += v;
                        if (k > t->pos0 + b && v != 0) h->pattern_err = 1;
                    }
                    h->pattern_err = fmaxf(h->pattern_err, (float)fabs(sum - 1));
                }
        }
    } else if (h->mode == 1) {
        memset(t->data, 0, n * sizeof(float));
    } else if (h->mode == 2) {
        h->buf = malloc(n * sizeof(float));
        memcpy(h->buf, t->data, n * sizeof(float));
        h->buf_len = n;
    } else if (h->mode == 3 && n == h->buf_len) {
        memcpy(t->data, h->buf, n * sizeof(float));
    }
    return true;
}

static const char *hook_backend = NULL; /* NULL: cpu */

static void run_hooked(const ks_model *m, const int *ids, int n, hook_state *h, float *logits) {
    ks_session *s = NULL;
    ks_error e0 = {0};
    ks_session_options so = {.backend = hook_backend};
    if (ks_session_create(m, &so, &s, &e0)) {
        tap_ok(0, "session (%s): %s", hook_backend ? hook_backend : "cpu", e0.msg);
        return;
    }
    ks_error err = {0};
    if (h) ks_session_set_hook(s, hook_cb, h);
    ks_session_forward(s, ids, n, logits ? KS_LOGITS_ALL : KS_LOGITS_NONE, logits, &err);
    ks_session_free(s);
}

static void test_hooks(ks_model *m) {
    const int n = 12, V = 512;
    const ks_config *c = ks_model_config(m);
    float *base = malloc(sizeof(float) * n * V), *lg = malloc(sizeof(float) * n * V);
    run_hooked(m, sample_ids, n, NULL, base);

    /* every hook point fires, named as TransformerLens names it */
    hook_state all = {.mode = 0};
    run_hooked(m, sample_ids, n, &all, lg);
    int expected = 3 + (KS_HOOK_COUNT - 3) * c->n_layers;
    tap_ok(all.n_seen == expected, "%d distinct hook points fired (expected %d = 3 + 18 x %d layers)",
           all.n_seen, expected, c->n_layers);
    int named = 0;
    for (int i = 0; i < all.n_seen; i++) {
        ks_hook_point p;
        int l;
        named += ks_hook_parse(all.seen[i], &p, &l) == KS_OK;
    }
    tap_ok(named == all.n_seen, "every fired name parses back (e.g. %s)", all.n_seen > 9 ? all.seen[9] : "");
    tap_ok(all.pattern_err < 1e-6f, "hook_pattern rows sum to 1 and future keys are 0 (err %.2g)",
           (double)all.pattern_err);
    tap_ok(memcmp(base, lg, sizeof(float) * n * V) == 0, "read-only hooks leave the logits bit-identical");

    /* zero-ablating the last MLP: the edit flows on, so that block's resid_post (read in the
     * same run, after the edit) equals its resid_mid exactly, and the logits change */
    char name[64], name2[64];
    int L = c->n_layers - 1;
    snprintf(name, sizeof name, "blocks.%d.hook_mlp_out", L);
    snprintf(name2, sizeof name2, "blocks.%d.hook_resid_post", L);
    hook_state zero = {.mode = 1, .want = name, .want2 = name2};
    run_hooked(m, sample_ids, n, &zero, lg);
    tap_ok(zero.handed == 2, "asked %d times, handed exactly the 2 tensors wanted", zero.asked);
    snprintf(name2, sizeof name2, "blocks.%d.hook_resid_mid", L);
    hook_state mid = {.mode = 0, .want = "", .want2 = name2};
    run_hooked(m, sample_ids, n, &mid, NULL);
    tap_ok(zero.buf2 && mid.buf2 && zero.buf2_len == mid.buf2_len &&
               memcmp(zero.buf2, mid.buf2, zero.buf2_len * sizeof(float)) == 0,
           "after zero-ablating %s, resid_post == resid_mid exactly", name);
    float d = max_abs_diff(base, lg, (size_t)n * V);
    tap_ok(d > 1e-3f, "zero-ablating %s changes the logits (max |diff| %.3g)", name, (double)d);
    free(zero.buf2);
    free(mid.buf2);

    /* patching: resid_pre of layer 2 from run A into run B gives run A's logits exactly */
    snprintf(name, sizeof name, "blocks.2.hook_resid_pre");
    hook_state a = {.mode = 2, .want = name};
    run_hooked(m, sample_ids, n, &a, base);
    int other[12];
    for (int i = 0; i < n; i++) other[i] = sample_ids[n + i];
    hook_state b = {.mode = 3, .want = name, .buf = a.buf, .buf_len = a.buf_len};
    run_hooked(m, other, n, &b, lg);
    tap_ok(max_abs_diff(base, lg, (size_t)n * V) == 0.0f,
           "patching blocks.2.hook_resid_pre from run A into run B reproduces A's logits exactly");
    free(a.buf);
    free(base);
    free(lg);
}

/* Weights kept in their stored dtype (converted row by row as the forward streams them) give
 * the logits of the same checkpoint converted to f32 at load: prefill and decode, within 1e-5
 * (the conversion is the same, only GEMM blocking differs). Fixtures from tests/reference. */
/* Read-only hooks on a device backend are copied without waiting and delivered when the chunk
 * ends (or the pinned pool fills): on "cpu-copy" (the device path on the CPU) a hook reading
 * every tensor must see the same sequence — names, shapes, pos0, every bit, in the same order —
 * as on "cpu", where it reads the tensors in place. 64 tokens in chunks of 64 (about 2.8 MB of
 * hooked tensors: the pool starts at 1 MiB, so it fills, drains and grows mid-chunk) and of 16. */
typedef struct {
    char (*names)[48];
    int64_t (*meta)[5]; /* ndim, shape[0..2], pos0 */
    uint64_t *hash;
    int n, cap;
    bool oom;
} seq_log;

static bool log_cb(const ks_hook_tensor *t, bool ask, void *user) {
    seq_log *q = user;
    if (ask) return true;
    if (q->n == q->cap) {
        int nc = q->cap ? 2 * q->cap : 256;
        void *a = realloc(q->names, (size_t)nc * sizeof *q->names);
        if (a) q->names = a;
        void *b = realloc(q->meta, (size_t)nc * sizeof *q->meta);
        if (b) q->meta = b;
        void *c = realloc(q->hash, (size_t)nc * sizeof *q->hash);
        if (c) q->hash = c;
        if (!a || !b || !c) {
            q->oom = true;
            return false;
        }
        q->cap = nc;
    }
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over the bytes */
    const unsigned char *b = (const unsigned char *)t->data;
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ULL;
    snprintf(q->names[q->n], 48, "%s", t->name);
    int64_t *m = q->meta[q->n];
    m[0] = t->ndim, m[1] = t->shape[0], m[2] = t->shape[1], m[3] = t->ndim > 2 ? t->shape[2] : 0;
    m[4] = t->pos0;
    q->hash[q->n++] = h;
    return false;
}

static void seq_run(const ks_model *m, const char *backend, int max_batch, seq_log *q,
                    float *logits) {
    ks_session *s = NULL;
    ks_error e = {0};
    ks_session_options so = {.backend = backend, .max_batch = max_batch};
    if (ks_session_create(m, &so, &s, &e)) {
        tap_ok(0, "deferred hooks: session on %s: %s", backend, e.msg);
        return;
    }
    ks_session_set_hook(s, log_cb, q);
    ks_session_set_hook_read_only(s, true);
    if (ks_session_forward(s, sample_ids, 64, KS_LOGITS_ALL, logits, &e))
        tap_ok(0, "deferred hooks: forward on %s: %s", backend, e.msg);
    ks_session_free(s);
}

static void test_deferred_hooks(const ks_model *m) {
    static const int batches[] = {64, 16};
    const int V = ks_model_config(m)->vocab_size;
    for (int k = 0; k < 2; k++) {
        seq_log a = {0}, b = {0};
        float *la = malloc(sizeof(float) * 64 * (size_t)V), *lb = malloc(sizeof(float) * 64 * (size_t)V);
        if (!la || !lb) {
            tap_ok(0, "deferred hooks: out of memory");
            free(la);
            free(lb);
            return;
        }
        seq_run(m, "cpu", batches[k], &a, la);
        seq_run(m, "cpu-copy", batches[k], &b, lb);
        int first = -1;
        for (int i = 0; i < a.n && i < b.n && first < 0; i++)
            if (strcmp(a.names[i], b.names[i]) || memcmp(a.meta[i], b.meta[i], sizeof a.meta[i]) ||
                a.hash[i] != b.hash[i])
                first = i;
        bool same = !a.oom && !b.oom && a.n == b.n && a.n > 0 && first < 0 &&
                    memcmp(la, lb, sizeof(float) * 64 * (size_t)V) == 0;
        tap_ok(same, "read-only hooks delivered deferred on cpu-copy (chunks of %d): the same %d "
               "tensors in the same order, names, shapes, pos0 and bits as read in place on cpu "
               "(%d on cpu-copy%s%s), logits identical", batches[k], a.n, b.n,
               first >= 0 ? "; first difference at " : "", first >= 0 ? a.names[first] : "");
        free(a.names);
        free(a.meta);
        free(a.hash);
        free(b.names);
        free(b.meta);
        free(b.hash);
        free(la);
        free(lb);
    }
}

static void test_native_dtypes(void) {
    static const char *fixtures[] = {"tests/reference/fixtures/gguf/mha_tied.f16.gguf",
                                     "tests/reference/fixtures/gguf/gqa_untied.q8_0.gguf",
                                     "tests/reference/fixtures/hf/bf16_mha",
                                     "tests/reference/fixtures/hf/f16_gqa"};
    int ids[12];
    for (size_t f = 0; f < sizeof fixtures / sizeof fixtures[0]; f++) {
        char path[4096];
        ks_test_src_file(fixtures[f], path, sizeof path);
        ks_model *nat = NULL, *f32 = NULL;
        ks_error err = {0};
        ks_model_options o32 = {.f32_weights = true};
        if (!tap_ok(ks_model_open(path, NULL, &nat, &err) == KS_OK &&
                        ks_model_open(path, &o32, &f32, &err) == KS_OK,
                    "open %s natively and as f32 (%s)", fixtures[f], err.msg))
            continue;
        int V = ks_model_config(nat)->vocab_size;
        for (int i = 0; i < 12; i++) ids[i] = (i * 37 + 5) % V;
        float *a = all_logits(nat, ids, 12, 0), *b = all_logits(f32, ids, 12, 0);
        float *c = malloc(sizeof(float) * 12 * (size_t)V);
        ks_session *s = new_session(nat, 0);
        for (int i = 0; i < 12; i++)
            ks_session_forward(s, ids + i, 1, KS_LOGITS_LAST, c + (size_t)i * V, &err);
        ks_session_free(s);
        float d1 = max_abs_diff(a, b, 12 * (size_t)V), d2 = max_abs_diff(c, b, 12 * (size_t)V);
        tap_ok(d1 < 1e-5f && d2 < 1e-5f && ks_model_mapped_bytes(nat) > ks_model_mapped_bytes(f32),
               "%s (%s): stored-dtype prefill/decode vs f32 at load: max |diff| %.2g / %.2g",
               fixtures[f], ks_model_weight_dtype(nat), (double)d1, (double)d2);
        free(a);
        free(b);
        free(c);
        ks_model_close(nat);
        ks_model_close(f32);
    }
}

int main(void) {
    test_native_dtypes();
    if (!ks_test_data_file("stories260K/stories260K.bin", bin_path, sizeof bin_path) ||
        !ks_test_data_file("stories260K/stories260K.gguf", gguf_path, sizeof gguf_path) ||
        !ks_test_data_file("stories260K/tok512.bin", tok_path, sizeof tok_path) ||
        !ks_test_data_file("stories260K/stories260K.llama2c-doc.md", doc_path, sizeof doc_path))
        return tap_done();
    ks_model *bin = open_model(bin_path, tok_path), *gguf = open_model(gguf_path, NULL);
    if (!bin || !gguf) return tap_done();
    /* a realistic token sequence: the model's own greedy continuation from BOS */
    {
        ks_session *s = new_session(bin, 0);
        ks_error err = {0};
        int bos = 1, *ids = NULL, n = 0;
        ks_generate_params gp = {.max_new_tokens = 63, .sampling = {.top_p = 1}};
        ks_generate(s, &bos, 1, &gp, NULL, NULL, &ids, &n, NULL, &err);
        sample_ids[0] = 1;
        for (int i = 0; i < 63 && i < n; i++) sample_ids[i + 1] = ids[i];
        free(ids);
        ks_session_free(s);
    }
    test_published_sample(bin);
    test_first_logits(bin);
    test_first_logits(gguf);
    test_bin_vs_gguf(bin, gguf);
    test_cache_consistency(bin);
    test_hooks(bin);
    /* the same hook tests through the forward's device path (staged copies, logits copied out) */
    hook_backend = "cpu-copy";
    tap_diag("hooks again on backend cpu-copy");
    test_hooks(bin);
    test_deferred_hooks(bin);
    {
        ks_session *s = NULL;
        ks_error e = {0};
        ks_session_options so = {.backend = "tpu"};
        tap_ok(ks_session_create(bin, &so, &s, &e) == KS_ERR_ARG && strstr(e.msg, "tpu"),
               "an unknown backend is refused by name: %s", e.msg);
    }
    ks_model_close(bin);
    ks_model_close(gguf);
    return tap_done();
}
