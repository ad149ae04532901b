/* test_reference.c — the CPU engine against HF transformers, on small random checkpoints.
 *
 * Oracle: HF transformers 4.46.3 LlamaForCausalLM (attn_implementation="eager", float32 on
 * CPU, torch 1.13), run by tests/reference/make_hf_fixtures.py on the fixtures in
 * tests/reference/fixtures/ (see the README there). Each prompt is run alone (batch 1, no
 * padding); expected.safetensors holds per prompt p: tokens.p, logits.p [T, V],
 * hidden_states.p [L+1, T, D] and attentions.p [L, H, T, T]. For GGUF files stored in F16,
 * Q8_0, Q4_0, Q4_K or Q4_K_M (Q4_K + Q6_K) the oracle is the same HF model with its weights
 * replaced by exactly what the GGUF stores (f16-rounded, or gguf-py's dequantize() of the
 * stored blocks: so gguf-py's decoder, not ours, defines the quantised weights). The quantised
 * Q4 files are opened twice: weights kept in their stored dtype (rows converted on the fly by
 * the forward) and with ks_model_options.f32_weights (converted once at load).
 *
 * What is compared, all in f32, as max absolute error over every element:
 *   logits.p                                  vs KS_LOGITS_ALL output       tol 1e-4
 *   hidden_states.p[i], i < L                 vs blocks.i.hook_resid_pre    tol 1e-4
 *   hidden_states.p[L] (after the final norm) vs ln_final.hook_normalized   tol 1e-4
 *   attentions.p[l]                           vs blocks.l.attn.hook_pattern tol 1e-5
 * and, engine against itself:
 *   prefill in chunks of max_batch = 3: the same logits as one chunk        tol 1e-5
 *     (and its hooks, reassembled from the chunks, against the oracle as above)
 *   token-by-token decode through the KV cache: last-position logits equal the one-chunk
 *     prefill's                                                             tol 1e-5
 *     (and every step's logits against the oracle's row, tol 1e-4)
 * The decode checks skip prompts longer than a dynamic-NTK model's max_position_embeddings:
 * there HF's rotary base depends on the length of the call, so keys cached at earlier steps
 * were rotated with another base and a full-prompt oracle does not apply.
 *
 * Expected files are read by a small safetensors reader below (8-byte header length, JSON
 * header, raw little-endian data). */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ks_model.h"
#include "tap.h"

#define TOL_LOGITS 1e-4
#define TOL_HIDDEN 1e-4
#define TOL_ATTN 1e-5
#define TOL_SELF 1e-5
#define CHUNK 3

#include "st_read.h"

static int st_n_prompts(const st_file *f) {
    const char *s = json_string_value(json_object_get(json_object_get(f->head, "__metadata__"),
                                                      "n_prompts"));
    return s ? atoi(s) : -1;
}

/* ------------------------------------------------------------------ capture hook */

/* What the hook saw during one sequence, reassembled from however many chunks/calls. */
typedef struct {
    int T, L, D, H;
    float *hidden;      /* (L+1, T, D)  resid_pre of each layer, then ln_final */
    float *attn;        /* (L, H, T, T) */
    int *rows_hidden;   /* (L+1) rows delivered */
    int *rows_attn;     /* (L) query rows delivered */
    int bad_shape;      /* a hook arrived with a shape we did not expect */
    char bad_what[160];
} capture;

static int capture_init(capture *c, int T, int L, int D, int H) {
    memset(c, 0, sizeof *c);
    c->T = T, c->L = L, c->D = D, c->H = H;
    c->hidden = calloc((size_t)(L + 1) * T * D, sizeof(float));
    c->attn = calloc((size_t)L * H * T * T, sizeof(float));
    c->rows_hidden = calloc((size_t)L + 1, sizeof(int));
    c->rows_attn = calloc((size_t)L, sizeof(int));
    return c->hidden && c->attn && c->rows_hidden && c->rows_attn ? 0 : -1;
}

static void capture_free(capture *c) {
    free(c->hidden);
    free(c->attn);
    free(c->rows_hidden);
    free(c->rows_attn);
}

static void capture_bad(capture *c, const ks_hook_tensor *t) {
    if (!c->bad_shape)
        snprintf(c->bad_what, sizeof c->bad_what,
                 "%s: ndim %d shape [%lld, %lld, %lld] pos0 %d", t->name, t->ndim,
                 (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2], t->pos0);
    c->bad_shape = 1;
}

static bool capture_hook(const ks_hook_tensor *t, bool ask, void *user) {
    capture *c = user;
    bool want = t->point == KS_HOOK_RESID_PRE || t->point == KS_HOOK_LN_FINAL_NORMALIZED ||
                t->point == KS_HOOK_ATTN_PATTERN;
    if (ask) return want;
    if (!want) return false;
    int64_t B = t->shape[0];
    if (t->point == KS_HOOK_ATTN_PATTERN) {
        /* [head, query, key]: queries pos0.., keys 0..pos0+B */
        B = t->shape[1];
        int64_t Lk = t->shape[2];
        if (t->ndim != 3 || t->layer < 0 || t->layer >= c->L || t->shape[0] != c->H ||
            t->pos0 < 0 || t->pos0 + B > c->T || Lk != t->pos0 + B) {
            capture_bad(c, t);
            return false;
        }
        for (int h = 0; h < c->H; h++)
            for (int64_t b = 0; b < B; b++)
                memcpy(c->attn + (((size_t)t->layer * c->H + h) * c->T + t->pos0 + b) * c->T,
                       t->data + ((size_t)h * B + b) * Lk, (size_t)Lk * sizeof(float));
        c->rows_attn[t->layer] += (int)B;
        return false;
    }
    int slot = t->point == KS_HOOK_RESID_PRE ? t->layer : c->L;
    if (t->ndim != 2 || slot < 0 || slot > c->L || t->shape[1] != c->D || t->pos0 < 0 ||
        t->pos0 + B > c->T) {
        capture_bad(c, t);
        return false;
    }
    memcpy(c->hidden + ((size_t)slot * c->T + t->pos0) * c->D, t->data,
           (size_t)B * c->D * sizeof(float));
    c->rows_hidden[slot] += (int)B;
    return false;
}

/* ------------------------------------------------------------------ comparisons */

/* Max |a - e| over n floats; e may be unaligned. NaN anywhere gives +inf. */
static double max_err(const float *a, const uint8_t *e, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        float ev;
        memcpy(&ev, e + 4 * i, 4);
        double d = fabs((double)a[i] - (double)ev);
        if (!(d <= m)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static double max_err_ff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

/* Where the largest error is, for a failure message: "layer l pos t". */
static void worst_hidden(const capture *c, const uint8_t *e, char *buf, size_t cap) {
    double m = -1.0;
    int wl = 0, wt = 0, wd = 0;
    for (int l = 0; l <= c->L; l++)
        for (int t = 0; t < c->T; t++)
            for (int d = 0; d < c->D; d++) {
                size_t i = ((size_t)l * c->T + t) * c->D + d;
                float ev;
                memcpy(&ev, e + 4 * i, 4);
                double x = fabs((double)c->hidden[i] - ev);
                if (isnan(x)) x = INFINITY;
                if (x > m) m = x, wl = l, wt = t, wd = d;
            }
    if (wl < c->L)
        snprintf(buf, cap, "worst at blocks.%d.hook_resid_pre pos %d dim %d", wl, wt, wd);
    else
        snprintf(buf, cap, "worst at ln_final.hook_normalized pos %d dim %d", wt, wd);
}

static void worst_attn(const capture *c, const uint8_t *e, char *buf, size_t cap) {
    double m = -1.0;
    int wl = 0, wh = 0, wq = 0, wk = 0;
    for (int l = 0; l < c->L; l++)
        for (int h = 0; h < c->H; h++)
            for (int q = 0; q < c->T; q++)
                for (int k = 0; k < c->T; k++) {
                    size_t i = (((size_t)l * c->H + h) * c->T + q) * c->T + k;
                    float ev;
                    memcpy(&ev, e + 4 * i, 4);
                    double x = fabs((double)c->attn[i] - ev);
                    if (isnan(x)) x = INFINITY;
                    if (x > m) m = x, wl = l, wh = h, wq = q, wk = k;
                }
    snprintf(buf, cap, "worst at blocks.%d.attn.hook_pattern head %d query %d key %d", wl, wh, wq,
             wk);
}

/* ------------------------------------------------------------------ fixtures */

typedef struct {
    const char *model;    /* relative to the source root */
    const char *expected; /* relative to the source root */
    bool f32_weights;     /* open with ks_model_options.f32_weights */
} fixture;

#define FX "tests/reference/fixtures/"
static const fixture fixtures[] = {
    {FX "hf/mha_tied", FX "hf/mha_tied/expected.safetensors", false},
    {FX "hf/gqa_untied", FX "hf/gqa_untied/expected.safetensors", false},
    {FX "hf/rope_linear", FX "hf/rope_linear/expected.safetensors", false},
    {FX "hf/rope_llama3", FX "hf/rope_llama3/expected.safetensors", false},
    {FX "hf/rope_dynamic", FX "hf/rope_dynamic/expected.safetensors", false},
    {FX "hf/f16_gqa", FX "hf/f16_gqa/expected.safetensors", false},
    {FX "hf/bf16_mha", FX "hf/bf16_mha/expected.safetensors", false},
    {FX "hf/sharded", FX "hf/sharded/expected.safetensors", false},
    {FX "hf/head_dim", FX "hf/head_dim/expected.safetensors", false},
    /* GGUF: F32 files share the HF oracle (same math); F16/Q8_0/Q4_0/Q4_K/Q4_K_M their own */
    {FX "gguf/gqa_untied.f32.gguf", FX "hf/gqa_untied/expected.safetensors", false},
    {FX "gguf/rope_linear.f32.gguf", FX "hf/rope_linear/expected.safetensors", false},
    {FX "gguf/mha_tied.f16.gguf", FX "gguf/mha_tied.f16.expected.safetensors", false},
    {FX "gguf/gqa_untied.q8_0.gguf", FX "gguf/gqa_untied.q8_0.expected.safetensors", false},
    /* Q4_0 everywhere (embeddings and output too); Q4_K for the embeddings and every layer
     * matrix, Q8_0 output: each with the weights kept quantised, then converted at load */
    {FX "gguf/gqa_untied.q4_0.gguf", FX "gguf/gqa_untied.q4_0.expected.safetensors", false},
    {FX "gguf/gqa_untied.q4_0.gguf", FX "gguf/gqa_untied.q4_0.expected.safetensors", true},
    {FX "gguf/gqa_256.q4_k.gguf", FX "gguf/gqa_256.q4_k.expected.safetensors", false},
    {FX "gguf/gqa_256.q4_k.gguf", FX "gguf/gqa_256.q4_k.expected.safetensors", true},
    /* Q4_K_M as downloaded: Q4_K embeddings and layer matrices, Q6_K attn_v, ffn_down and
     * output; kept quantised, then converted at load */
    {FX "gguf/gqa_256.q4_k_m.gguf", FX "gguf/gqa_256.q4_k_m.expected.safetensors", false},
    {FX "gguf/gqa_256.q4_k_m.gguf", FX "gguf/gqa_256.q4_k_m.expected.safetensors", true},
};

typedef struct {
    double logits, hidden, attn, chunk_self, chunk_logits, chunk_hidden, chunk_attn, decode_self,
        decode_logits;
} worst;

static void upd(double *m, double v) {
    if (!(v <= *m)) *m = v;
}

/* Run tokens through a fresh session with options o (hooks captured into cap when non-NULL),
 * logits (T, V) into lg. Returns the status; err filled. */
static ks_status run_prefill(const ks_model *m, const ks_session_options *o, const int *tok,
                             int T, capture *cap, float *lg, ks_error *err) {
    ks_session *s = NULL;
    ks_status st = ks_session_create(m, o, &s, err);
    if (st) return st;
    if (cap) ks_session_set_hook(s, capture_hook, cap);
    st = ks_session_forward(s, tok, T, KS_LOGITS_ALL, lg, err);
    if (!st && ks_session_pos(s) != T)
        st = ks_error_set(err, KS_ERR_INTERNAL, "session pos %d after %d tokens",
                          ks_session_pos(s), T);
    ks_session_free(s);
    return st;
}

static int hooks_complete(const capture *c) {
    for (int l = 0; l <= c->L; l++)
        if (c->rows_hidden[l] != c->T) return 0;
    for (int l = 0; l < c->L; l++)
        if (c->rows_attn[l] != c->T) return 0;
    return !c->bad_shape;
}

static void check_model(const fixture *fx) {
    char mpath[4096], epath[4096], why[512];
    ks_test_src_file(fx->model, mpath, sizeof mpath);
    ks_test_src_file(fx->expected, epath, sizeof epath);
    char name[256];
    snprintf(name, sizeof name, "%s%s", fx->model + strlen(FX),
             fx->f32_weights ? " (f32_weights)" : "");

    st_file ef;
    if (st_open(epath, &ef, why, sizeof why) != 0) {
        tap_ok(0, "%s: read expected outputs: %s", name, why);
        return;
    }
    ks_model *m = NULL;
    ks_error err = {0};
    ks_model_options mo = {.f32_weights = fx->f32_weights};
    ks_status st = ks_model_open(mpath, &mo, &m, &err);
    if (!tap_ok(st == KS_OK, "%s: ks_model_open (%s)", name,
                st ? err.msg : ks_model_weight_dtype(m))) {
        st_close(&ef);
        return;
    }
    const ks_config *cfg = ks_model_config(m);
    int n_prompts = st_n_prompts(&ef);
    tap_ok(n_prompts > 0, "%s: expected file has n_prompts = %d", name, n_prompts);
    worst w = {0};
    bool any_decode = false;

    for (int p = 0; p < n_prompts; p++) {
        char key[64];
        int64_t sh_tok[1], sh_lg[2], sh_hs[3], sh_at[4];
        snprintf(key, sizeof key, "tokens.%d", p);
        const uint8_t *etok = st_get(&ef, key, "I32", 1, sh_tok, why, sizeof why);
        snprintf(key, sizeof key, "logits.%d", p);
        const uint8_t *elg = etok ? st_get(&ef, key, "F32", 2, sh_lg, why, sizeof why) : NULL;
        snprintf(key, sizeof key, "hidden_states.%d", p);
        const uint8_t *ehs = elg ? st_get(&ef, key, "F32", 3, sh_hs, why, sizeof why) : NULL;
        snprintf(key, sizeof key, "attentions.%d", p);
        const uint8_t *eat = ehs ? st_get(&ef, key, "F32", 4, sh_at, why, sizeof why) : NULL;
        if (!eat) {
            tap_ok(0, "%s prompt %d: expected tensors: %s", name, p, why);
            continue;
        }
        const int T = (int)sh_tok[0], V = (int)sh_lg[1], L = (int)sh_at[0], H = (int)sh_at[1];
        const int D = (int)sh_hs[2];
        if (!tap_ok(sh_lg[0] == T && sh_hs[0] == L + 1 && sh_hs[1] == T && sh_at[2] == T &&
                        sh_at[3] == T && cfg->vocab_size == V && cfg->dim == D &&
                        cfg->n_layers == L && cfg->n_heads == H,
                    "%s prompt %d: config matches the oracle (T %d, V %d/%d, D %d/%d, L %d/%d, "
                    "H %d/%d)",
                    name, p, T, cfg->vocab_size, V, cfg->dim, D, cfg->n_layers, L, cfg->n_heads,
                    H))
            continue;
        int *tok = malloc((size_t)T * sizeof(int));
        float *lg = malloc((size_t)T * V * sizeof(float));
        float *lg_chunk = malloc((size_t)T * V * sizeof(float));
        float *lg_step = malloc((size_t)V * sizeof(float));
        capture cap, cap_chunk;
        if (!tok || !lg || !lg_chunk || !lg_step || capture_init(&cap, T, L, D, H) ||
            capture_init(&cap_chunk, T, L, D, H)) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        for (int t = 0; t < T; t++) {
            int32_t v;
            memcpy(&v, etok + 4 * (size_t)t, 4);
            tok[t] = v;
        }

        /* a context long enough for the prompt even when it outruns max_position_embeddings
         * (the dynamic-NTK fixture does, on purpose) */
        ks_session_options o = {0};
        if (T > cfg->max_seq_len) o.max_seq_len = T;

        /* 1. one chunk, against the oracle */
        st = run_prefill(m, &o, tok, T, &cap, lg, &err);
        if (tap_ok(st == KS_OK, "%s prompt %d (T=%d): forward, one chunk%s%s", name, p, T,
                   st ? ": " : "", st ? err.msg : "")) {
            double e_lg = max_err(lg, elg, (size_t)T * V);
            double e_hs = max_err(cap.hidden, ehs, (size_t)(L + 1) * T * D);
            double e_at = max_err(cap.attn, eat, (size_t)L * H * T * T);
            upd(&w.logits, e_lg), upd(&w.hidden, e_hs), upd(&w.attn, e_at);
            tap_ok(hooks_complete(&cap),
                   "%s prompt %d: hooks resid_pre/ln_final/pattern delivered every row%s%s", name,
                   p, cap.bad_shape ? "; unexpected " : "", cap.bad_what);
            tap_ok(e_lg <= TOL_LOGITS, "%s prompt %d: logits vs HF, max |err| %.3g <= %g", name,
                   p, e_lg, TOL_LOGITS);
            char where[160] = "";
            if (!(e_hs <= TOL_HIDDEN)) worst_hidden(&cap, ehs, where, sizeof where);
            tap_ok(e_hs <= TOL_HIDDEN,
                   "%s prompt %d: hook_resid_pre + ln_final.hook_normalized vs HF hidden_states, "
                   "max |err| %.3g <= %g %s",
                   name, p, e_hs, TOL_HIDDEN, where);
            where[0] = 0;
            if (!(e_at <= TOL_ATTN)) worst_attn(&cap, eat, where, sizeof where);
            tap_ok(e_at <= TOL_ATTN,
                   "%s prompt %d: attn.hook_pattern vs HF attentions, max |err| %.3g <= %g %s",
                   name, p, e_at, TOL_ATTN, where);
        }

        /* 2. prefill in chunks of CHUNK tokens: same logits as one chunk, hooks vs oracle */
        ks_session_options oc = o;
        oc.max_batch = CHUNK;
        ks_status stc = run_prefill(m, &oc, tok, T, &cap_chunk, lg_chunk, &err);
        if (tap_ok(stc == KS_OK, "%s prompt %d: forward in chunks of %d%s%s", name, p, CHUNK,
                   stc ? ": " : "", stc ? err.msg : "") &&
            st == KS_OK) {
            double e_self = max_err_ff(lg_chunk, lg, (size_t)T * V);
            double e_lg = max_err(lg_chunk, elg, (size_t)T * V);
            double e_hs = max_err(cap_chunk.hidden, ehs, (size_t)(L + 1) * T * D);
            double e_at = max_err(cap_chunk.attn, eat, (size_t)L * H * T * T);
            upd(&w.chunk_self, e_self), upd(&w.chunk_logits, e_lg);
            upd(&w.chunk_hidden, e_hs), upd(&w.chunk_attn, e_at);
            tap_ok(e_self <= TOL_SELF,
                   "%s prompt %d: chunked logits vs one chunk, max |err| %.3g <= %g", name, p,
                   e_self, TOL_SELF);
            tap_ok(hooks_complete(&cap_chunk) && e_lg <= TOL_LOGITS && e_hs <= TOL_HIDDEN &&
                       e_at <= TOL_ATTN,
                   "%s prompt %d: chunked hooks and logits vs HF (complete %d; logits %.3g, "
                   "hidden %.3g <= %g; pattern %.3g <= %g)",
                   name, p, hooks_complete(&cap_chunk), e_lg, e_hs, TOL_HIDDEN, e_at, TOL_ATTN);
        }

        /* 3. token by token through the KV cache */
        int orig = cfg->rope_orig_max_pos > 0 ? cfg->rope_orig_max_pos : cfg->max_seq_len;
        if (cfg->rope_scaling == KS_ROPE_SCALING_DYNAMIC && T > orig) {
            tap_skip("%s prompt %d: decode vs prefill: T=%d > %d under dynamic NTK, the rotary "
                     "base of a call depends on its length (as in HF)",
                     name, p, T, orig);
        } else if (st == KS_OK) {
            ks_session *s = NULL;
            ks_status sd = ks_session_create(m, &o, &s, &err);
            double e_steps = 0.0;
            for (int t = 0; sd == KS_OK && t < T; t++) {
                sd = ks_session_forward(s, tok + t, 1, KS_LOGITS_LAST, lg_step, &err);
                if (sd == KS_OK)
                    upd(&e_steps, max_err(lg_step, elg + (size_t)t * V * 4, (size_t)V));
            }
            ks_session_free(s);
            if (tap_ok(sd == KS_OK, "%s prompt %d: token-by-token decode%s%s", name, p,
                       sd ? ": " : "", sd ? err.msg : "")) {
                double e_self = max_err_ff(lg_step, lg + (size_t)(T - 1) * V, (size_t)V);
                upd(&w.decode_self, e_self), upd(&w.decode_logits, e_steps);
                any_decode = true;
                tap_ok(e_self <= TOL_SELF,
                       "%s prompt %d: decoded last-position logits vs prefill, max |err| %.3g "
                       "<= %g",
                       name, p, e_self, TOL_SELF);
                tap_ok(e_steps <= TOL_LOGITS,
                       "%s prompt %d: every decode step's logits vs HF, max |err| %.3g <= %g",
                       name, p, e_steps, TOL_LOGITS);
            }
        }
        capture_free(&cap);
        capture_free(&cap_chunk);
        free(tok);
        free(lg);
        free(lg_chunk);
        free(lg_step);
    }
    tap_diag("%-38s max |err| vs HF: logits %.3g  hidden %.3g  pattern %.3g", name, w.logits,
             w.hidden, w.attn);
    tap_diag("%-38s chunked(%d): vs one chunk %.3g; vs HF logits %.3g hidden %.3g pattern %.3g",
             "", CHUNK, w.chunk_self, w.chunk_logits, w.chunk_hidden, w.chunk_attn);
    if (any_decode)
        tap_diag("%-38s decode: last logits vs prefill %.3g; step logits vs HF %.3g", "",
                 w.decode_self, w.decode_logits);
    ks_model_close(m);
    st_close(&ef);
}

int main(void) {
    tap_diag("oracle: HF transformers LlamaForCausalLM (eager, f32); tolerances: logits %g, "
             "hidden %g, pattern %g, engine self-consistency %g",
             TOL_LOGITS, TOL_HIDDEN, TOL_ATTN, TOL_SELF);
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) check_model(&fixtures[i]);
    return tap_done();
}
