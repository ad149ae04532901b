/* test_recorder.c — the recorder's data path (activations/record.c) through its C API, with
 * chunks far smaller than the prompts so that every boundary case happens: rows and attention
 * columns that straddle chunks, commits that write a chunk the hook is still filling, a
 * resumed dump whose first chunk is half on disk, and a prompt that fails after its hook
 * tensors were taken (whose rows the next prompt must overwrite).
 *
 * Model: tests/reference/fixtures/hf/gqa_untied (in the repository: 2 layers, d_model 64, 8
 * query heads, vocab 320). The hook tensors of 3 prompts (23, 41 and 30 tokens) are captured
 * once from its forward and replayed into the recorder (ks_recorder_record_replay, the
 * recorder's own hook as in a real run). Chunks: 16 rows (expected_tokens 16), attention
 * 1024 key columns (the three prompts have 276 + 861 + 465).
 *
 * Oracle: the captured f32 tensors themselves; a dump stores them rounded to its dtype, so
 * every value read back must equal the captured value rounded to nearest-even (numpy/torch's
 * rule, checked against them in test_quants), bit for bit (tolerance 0). Dumps written along
 * different paths (a failed prompt retried, a resume, a commit after every prompt) must equal
 * the straight one bit for bit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dump_private.h"
#include "model_private.h"
#include "tap.h"

enum { NP = 3 };
static const int LENS[NP] = {23, 41, 30};
static const char *HOOKS = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern,blocks.1.attn.hook_z";
static const char *HEADS = "1,3-5";

typedef struct {
    int ids[64], n;
    ks_hook_tensor *t;
    int n_t, cap_t;
    float *logits;
} captured;

static bool capture(const ks_hook_tensor *t, bool ask, void *user) {
    if (ask) return true;
    captured *c = user;
    if (c->n_t == c->cap_t) {
        c->cap_t = c->cap_t ? 2 * c->cap_t : 64;
        c->t = realloc(c->t, (size_t)c->cap_t * sizeof *c->t);
        if (!c->t) abort();
    }
    ks_hook_tensor *d = &c->t[c->n_t++];
    *d = *t;
    size_t e = 1;
    for (int k = 0; k < t->ndim; k++) e *= (size_t)t->shape[k];
    d->name = strdup(t->name);
    d->data = malloc(e * sizeof(float));
    if (!d->name || !d->data) abort();
    memcpy(d->data, t->data, e * sizeof(float));
    return false;
}

static captured cap[NP];
static ks_model *model;
static char dir[4096], mpath[4096];

/* f32 -> storage dtype -> f32: what the dump must hold */
static float stored(float x, ks_dump_dtype dt) {
    uint16_t h;
    if (dt == KS_DUMP_F32) return x;
    if (dt == KS_DUMP_BF16) {
        ks_f32_to_bf16_scalar(&x, &h, 1);
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    ks_f32_to_f16_scalar(&x, &h, 1);
    float f;
    ks_dtype_to_f32(KS_DTYPE_F16, &h, &f, 1);
    return f;
}

static ks_record_options options(ks_dump_dtype dt, ks_dump_compression comp, double flush) {
    return (ks_record_options){.hooks = HOOKS, .heads = HEADS, .dtype = dt, .compression = comp,
                               .logits_topk = 4, .flush_seconds = flush, .no_fsync = true,
                               .expected_tokens = 16, .expected_attn = 1024, .model_path = mpath,
                               .command_line = "test_recorder", .prompts_source = "synthetic",
                               .n_prompts_planned = NP};
}

/* Replay prompt p. fail: replay another prompt's tensors without the logits the recorder
 * asks for, so that it fails after its hook took every tensor, leaving other values in the
 * rows the retry of p must overwrite (1 in 2's place: its rows run past the open chunk, which
 * is dropped; 2 in 1's place: they end inside it, which is cut back). */
static ks_status replay(ks_recorder *r, int p, bool fail, ks_error *err) {
    if (fail) {
        int o = p == 1 ? 2 : 1;
        return ks_recorder_record_replay(r, cap[o].ids, cap[o].n, cap[o].t, cap[o].n_t, NULL, err);
    }
    return ks_recorder_record_replay(r, cap[p].ids, cap[p].n, cap[p].t, cap[p].n_t, cap[p].logits, err);
}

/* Every hook's every prompt of a and b, as f32, bit for bit. */
static bool same_dumps(const char *a, const char *b, char *why, size_t cap_why) {
    ks_dump *da = NULL, *db = NULL;
    ks_error e = {0};
    bool ok = false;
    float *x = malloc(1 << 22), *y = malloc(1 << 22);
    size_t capf = (1 << 22) / sizeof(float);
    if (!x || !y || ks_dump_open(a, &da, &e) || ks_dump_open(b, &db, &e)) {
        snprintf(why, cap_why, "open: %s", e.msg);
        goto out;
    }
    if (ks_dump_n_prompts(da) != NP || ks_dump_n_prompts(db) != NP || ks_dump_n_hooks(da) != ks_dump_n_hooks(db)) {
        snprintf(why, cap_why, "prompts %lld / %lld, hooks %d / %d", (long long)ks_dump_n_prompts(da),
                 (long long)ks_dump_n_prompts(db), ks_dump_n_hooks(da), ks_dump_n_hooks(db));
        goto out;
    }
    for (int i = 0; i < ks_dump_n_hooks(da); i++) {
        const ks_dump_hook *ha = ks_dump_hook_at(da, i), *hb = ks_dump_find_hook(db, ha->name);
        if (!hb) {
            snprintf(why, cap_why, "%s missing", ha->name);
            goto out;
        }
        for (int p = 0; p < NP; p++) {
            memset(x, 0, capf * sizeof *x);
            memset(y, 0, capf * sizeof *y);
            ks_status s1, s2;
            if (ha->kind == KS_DUMP_KIND_ATTENTION) {
                s1 = ks_dump_read_attention(da, ha, p, -1, x, capf, &e);
                s2 = s1 ? s1 : ks_dump_read_attention(db, hb, p, -1, y, capf, &e);
            } else {
                s1 = ks_dump_read_rows(da, ha, p, p + 1, x, capf, &e);
                s2 = s1 ? s1 : ks_dump_read_rows(db, hb, p, p + 1, y, capf, &e);
            }
            if (s1 || s2) {
                snprintf(why, cap_why, "%s prompt %d: %s", ha->name, p, e.msg);
                goto out;
            }
            if (memcmp(x, y, capf * sizeof *x)) {
                snprintf(why, cap_why, "%s prompt %d differs", ha->name, p);
                goto out;
            }
        }
    }
    ok = true;
out:
    ks_dump_close(da);
    ks_dump_close(db);
    free(x);
    free(y);
    return ok;
}

/* The dump's values against the captured tensors rounded to dt. */
static bool values_match(const char *path, ks_dump_dtype dt, char *why, size_t cap_why) {
    ks_dump *d = NULL;
    ks_error e = {0};
    bool ok = false;
    size_t capf = (1 << 22) / sizeof(float);
    float *x = malloc(capf * sizeof *x);
    if (!x || ks_dump_open(path, &d, &e)) {
        snprintf(why, cap_why, "open: %s", e.msg);
        goto out;
    }
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        for (int p = 0; p < NP; p++) {
            const ks_hook_tensor *t = NULL;
            for (int k = 0; k < cap[p].n_t; k++)
                if (!strcmp(cap[p].t[k].name, h->name)) t = &cap[p].t[k];
            if (!t) {
                snprintf(why, cap_why, "%s: not captured", h->name);
                goto out;
            }
            int n = cap[p].n;
            if (h->kind == KS_DUMP_KIND_ATTENTION) {
                if (ks_dump_read_attention(d, h, p, -1, x, capf, &e)) goto fail;
                int64_t na = (int64_t)n * (n + 1) / 2;
                for (int s = 0; s < h->n_heads; s++)
                    for (int q = 0, off = 0; q < n; off += q + 1, q++)
                        for (int k = 0; k <= q; k++) {
                            float want = stored(t->data[((size_t)h->heads[s] * n + q) * (size_t)t->shape[2] + k], dt);
                            float got = x[(size_t)s * na + off + k];
                            if (memcmp(&want, &got, 4)) {
                                snprintf(why, cap_why, "%s prompt %d head slot %d [%d,%d]: %.9g, want %.9g", h->name,
                                         p, s, q, k, got, want);
                                goto out;
                            }
                        }
            } else {
                if (ks_dump_read_rows(d, h, p, p + 1, x, capf, &e)) goto fail;
                int64_t per = h->row_elems, src_row = t->shape[1] * (t->ndim > 2 ? t->shape[2] : 1);
                int64_t hd = h->ndim == 2 ? h->dims[1] : per;
                for (int q = 0; q < n; q++)
                    for (int64_t j = 0; j < per; j++) {
                        /* a head axis holds the selected heads only */
                        int64_t src = h->n_heads ? (int64_t)h->heads[j / hd] * hd + j % hd : j;
                        float want = stored(t->data[(size_t)q * (size_t)src_row + (size_t)src], dt);
                        float got = x[(size_t)q * (size_t)per + (size_t)j];
                        if (memcmp(&want, &got, 4)) {
                            snprintf(why, cap_why, "%s prompt %d row %d [%lld]: %.9g, want %.9g", h->name, p, q,
                                     (long long)j, got, want);
                            goto out;
                        }
                    }
            }
        }
    }
    ok = true;
    goto out;
fail:
    snprintf(why, cap_why, "read: %s", e.msg);
out:
    ks_dump_close(d);
    free(x);
    return ok;
}

static void path_of(char *out, size_t cap_out, const char *name) { snprintf(out, cap_out, "%s/%s.h5", dir, name); }

/* Record the prompts in order; fail_first: before prompts 1 and 2, a failing one (replay). */
static ks_status record(const char *path, const ks_record_options *o, bool fail_first, ks_error *err) {
    ks_recorder *r = NULL;
    ks_status st = ks_recorder_create(path, model, o, true, &r, err);
    for (int p = 0; !st && p < NP; p++) {
        if (fail_first && p > 0) {
            ks_error fe = {0};
            if (replay(r, p, true, &fe) == KS_OK) st = ks_error_set(err, KS_ERR_INTERNAL, "the failing replay passed");
        }
        if (!st) st = replay(r, p, false, err);
    }
    if (!st) st = ks_recorder_finish(r, err);
    ks_recorder_free(r);
    return st;
}

static void check_config(ks_dump_dtype dt, ks_dump_compression comp) {
    char label[64], ref[4096], b[4096], why[512] = "";
    snprintf(label, sizeof label, "%s/%s", ks_dump_compression_name(comp), ks_dump_dtype_name(dt));
    ks_error e = {0};
    ks_record_options o = options(dt, comp, 1e9); /* one commit, at the end */
    path_of(ref, sizeof ref, "ref");
    if (!tap_ok(record(ref, &o, false, &e) == KS_OK, "%s: three prompts recorded: %s", label, e.msg)) return;
    tap_ok(values_match(ref, dt, why, sizeof why), "%s: every value read back = the hook's, rounded to %s (%s)",
           label, ks_dump_dtype_name(dt), why);

    /* a commit after every prompt: chunks the hook is filling are written part by part */
    ks_record_options o0 = options(dt, comp, 0);
    path_of(b, sizeof b, "every");
    why[0] = 0;
    tap_ok(record(b, &o0, false, &e) == KS_OK && same_dumps(ref, b, why, sizeof why),
           "%s: committed after every prompt == one commit (%s%s)", label, why, e.msg);

    /* before prompts 1 and 2, another prompt fails after its hook ran */
    path_of(b, sizeof b, "retry");
    why[0] = 0;
    tap_ok(record(b, &o0, true, &e) == KS_OK && same_dumps(ref, b, why, sizeof why),
           "%s: a prompt failing after its hook before prompts 1 and 2 leaves no trace (%s%s)", label, why, e.msg);

    /* two prompts, then --resume for the third: its first chunks are partly on disk */
    path_of(b, sizeof b, "resumed");
    why[0] = 0;
    ks_recorder *r = NULL;
    int64_t have = -1;
    ks_status st = ks_recorder_create(b, model, &o0, true, &r, &e);
    for (int p = 0; !st && p < 2; p++) st = replay(r, p, false, &e);
    if (!st) st = ks_recorder_finish(r, &e);
    ks_recorder_free(r);
    r = NULL;
    if (!st) st = ks_recorder_resume(b, model, &o0, &r, &have, &e);
    if (!st) st = replay(r, 2, false, &e);
    if (!st) st = ks_recorder_finish(r, &e);
    ks_recorder_free(r);
    tap_ok(!st && have == 2 && same_dumps(ref, b, why, sizeof why),
           "%s: resumed after 2 of 3 prompts == straight (resumed at %lld; %s%s)", label, (long long)have, why,
           e.msg);
}

int main(void) {
    const char *root = getenv("KS_SOURCE_ROOT");
    snprintf(mpath, sizeof mpath, "%s/tests/reference/fixtures/hf/gqa_untied", root ? root : ".");
    ks_error e = {0};
    if (!tap_ok(ks_model_open(mpath, NULL, &model, &e) == KS_OK, "open %s: %s", mpath, e.msg)) return tap_done();
    const ks_config *c = ks_model_config(model);
    ks_session *s = NULL;
    ks_session_options so = {.n_threads = 1};
    if (!tap_ok(ks_session_create(model, &so, &s, &e) == KS_OK, "session: %s", e.msg)) return tap_done();
    uint64_t seed = 12345;
    bool ok = true;
    for (int p = 0; p < NP; p++) {
        cap[p].n = LENS[p];
        for (int i = 0; i < LENS[p]; i++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            cap[p].ids[i] = (int)((seed >> 33) % (uint64_t)c->vocab_size);
        }
        cap[p].logits = malloc((size_t)LENS[p] * (size_t)c->vocab_size * sizeof(float));
        if (!cap[p].logits) abort();
        ks_session_reset(s);
        ks_session_set_hook(s, capture, &cap[p]);
        ok &= ks_session_forward(s, cap[p].ids, cap[p].n, KS_LOGITS_ALL, cap[p].logits, &e) == KS_OK;
        ks_session_set_hook(s, NULL, NULL);
    }
    ks_session_free(s);
    if (!tap_ok(ok, "hook tensors of %d prompts captured: %s", NP, e.msg)) return tap_done();
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ks_test_recorder_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!tap_ok(mkdtemp(dir) != NULL, "temporary directory")) return tap_done();

    check_config(KS_DUMP_F32, KS_DUMP_COMPRESS_NONE);
    check_config(KS_DUMP_BF16, KS_DUMP_COMPRESS_NONE);
    check_config(KS_DUMP_F16, KS_DUMP_COMPRESS_DEFLATE);

    const char *names[] = {"ref", "every", "retry", "resumed"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[4096];
        path_of(p, sizeof p, names[i]);
        unlink(p);
    }
    rmdir(dir);
    for (int p = 0; p < NP; p++) {
        for (int k = 0; k < cap[p].n_t; k++) {
            free((void *)cap[p].t[k].name);
            free(cap[p].t[k].data);
        }
        free(cap[p].t);
        free(cap[p].logits);
    }
    ks_model_close(model);
    return tap_done();
}
