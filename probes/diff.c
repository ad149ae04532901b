/* diff.c — base against tuned on the same tokens (ks_diff.h): model compatibility, weight
 * deltas, and the activation measures accumulated prompt by prompt.
 *
 * The base forward's hook keeps, for the current prompt only, the rows of resid_post, attn_out
 * and mlp_out of every layer ([3][L][n][d]), the causal attention rows packed ([L][H][n(n+1)/2])
 * and the logits ([n][V]). The tuned forward's hook compares each of its tensors with those as
 * it passes: nothing of the tuned model is kept.
 *
 * Exactness for identical models: every measure is computed so that equal inputs give the exact
 * value, not one within rounding: CKA's three accumulators go through the same dgemm call on
 * buffers of the same alignment (so S_xx, S_yy, S_xy are bit-identical when X == Y), and the
 * final ratio is num / a when a == b; a cosine is dot / sqrt(|x|² |y|²) with sqrt(s·s) == s in
 * IEEE arithmetic; JS and KL sum terms that are exactly 0 when the rows are equal. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ks_diff.h"
#include "model_private.h"

/* ---------------------------------------------------------------- names */

const char *ks_diff_module_name(ks_diff_module m) {
    static const char *const names[] = {
#define KS_X(e, s) s,
        KS_DIFF_MODULE_LIST(KS_X)
#undef KS_X
    };
    return (unsigned)m < KS_DIFF_N_MODULES ? names[m] : "?";
}

const char *ks_diff_stream_name(ks_diff_stream s) {
    switch (s) {
    case KS_DIFF_RESID: return "resid_post";
    case KS_DIFF_ATTN: return "attn_out";
    case KS_DIFF_MLP: return "mlp_out";
    default: return "?";
    }
}

/* ---------------------------------------------------------------- compatibility */

ks_status ks_diff_check_models(const ks_model *base, const ks_model *tuned, ks_error *err) {
    if (!base || !tuned) return ks_error_set(err, KS_ERR_ARG, "ks_diff_check_models: NULL model");
    const ks_config *a = ks_model_config(base), *b = ks_model_config(tuned);
#define SAME_INT(f)                                                                            \
    if (a->f != b->f)                                                                          \
        return ks_error_set(err, KS_ERR_ARG,                                                   \
                            "the models differ in architecture: config field %s is %d in the " \
                            "base model and %d in the tuned model", #f, (int)a->f, (int)b->f);
#define SAME_FLT(f)                                                                            \
    if (a->f != b->f)                                                                          \
        return ks_error_set(err, KS_ERR_ARG,                                                   \
                            "the models differ in architecture: config field %s is %g in the " \
                            "base model and %g in the tuned model", #f, (double)a->f,          \
                            (double)b->f);
    SAME_INT(dim)
    SAME_INT(hidden_dim)
    SAME_INT(n_layers)
    SAME_INT(n_heads)
    SAME_INT(n_kv_heads)
    SAME_INT(head_dim)
    SAME_INT(vocab_size)
    SAME_FLT(rms_eps)
    SAME_FLT(rope_theta)
    SAME_INT(rope_scaling)
    if (a->rope_scaling != KS_ROPE_SCALING_NONE) {
        SAME_FLT(rope_factor)
        SAME_FLT(rope_low_freq_factor)
        SAME_FLT(rope_high_freq_factor)
        SAME_INT(rope_orig_max_pos)
    }
#undef SAME_INT
#undef SAME_FLT
    const ks_tokenizer *ta = ks_model_tokenizer(base), *tb = ks_model_tokenizer(tuned);
    if (ta && tb) {
        int na = ks_tokenizer_vocab_size(ta), nb = ks_tokenizer_vocab_size(tb);
        if (na != nb)
            return ks_error_set(err, KS_ERR_ARG, "the models have different tokenizers: %d tokens "
                                "in the base model's, %d in the tuned model's", na, nb);
        if (ks_tokenizer_bos(ta) != ks_tokenizer_bos(tb) || ks_tokenizer_eos(ta) != ks_tokenizer_eos(tb))
            return ks_error_set(err, KS_ERR_ARG, "the models have different tokenizers: BOS/EOS "
                                "ids %d/%d in the base model's, %d/%d in the tuned model's",
                                ks_tokenizer_bos(ta), ks_tokenizer_eos(ta), ks_tokenizer_bos(tb),
                                ks_tokenizer_eos(tb));
        for (int i = 0; i < na; i++) {
            const char *pa = ks_tokenizer_piece(ta, i), *pb = ks_tokenizer_piece(tb, i);
            if (strcmp(pa ? pa : "", pb ? pb : "") != 0)
                return ks_error_set(err, KS_ERR_ARG, "the models have different tokenizers: token "
                                    "%d is '%.40s' in the base model's and '%.40s' in the tuned "
                                    "model's", i, pa ? pa : "", pb ? pb : "");
        }
    }
    return KS_OK;
}

/* ---------------------------------------------------------------- weights */

/* Row of the tuned q/k matrix that holds what row r of the base one holds, when the two
 * checkpoints keep different rotary layouts (a llama2.c or GGUF base, an HF fine-tune):
 * interleaved pairs (2i, 2i+1) are HF's (i, i + hd/2). */
static size_t qk_row(size_t r, int hd, ks_rope_style from, ks_rope_style to) {
    if (from == to) return r;
    size_t h = r / (size_t)hd, j = r % (size_t)hd, half = (size_t)hd / 2;
    size_t i, t;
    if (from == KS_ROPE_STYLE_INTERLEAVED) {
        i = j / 2;
        t = j % 2;
        return h * (size_t)hd + t * half + i;
    }
    t = j / half;
    i = j % half;
    return h * (size_t)hd + 2 * i + t;
}

typedef struct {
    ks_diff_tensor *v;
    int n, cap;
} tensor_list;

static ks_diff_tensor *push(tensor_list *l, const char *name, ks_diff_module mod, int layer) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        ks_diff_tensor *nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) return NULL;
        l->v = nv;
        l->cap = nc;
    }
    ks_diff_tensor *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->module = mod;
    t->layer = layer;
    return t;
}

static void fold(ks_diff_tensor *t, const float *b, const float *u, size_t n) {
    double ds = 0, bs = 0, mx = t->max_abs;
    for (size_t i = 0; i < n; i++) {
        double d = (double)u[i] - (double)b[i];
        ds += d * d;
        bs += (double)b[i] * b[i];
        if (fabs(d) > mx) mx = fabs(d);
    }
    t->delta_sq += ds;
    t->base_sq += bs;
    t->max_abs = mx;
    t->n_elems += (int64_t)n;
}

static ks_status diff_matrix(tensor_list *l, const char *name, ks_diff_module mod, int layer,
                             ks_weight wb, ks_weight wt, size_t rows, size_t cols, int qk_hd,
                             ks_rope_style sb, ks_rope_style st, float *rb, float *rt,
                             ks_error *err) {
    ks_diff_tensor *t = push(l, name, mod, layer);
    if (!t) return ks_error_set(err, KS_ERR_NOMEM, "weight deltas: out of memory");
    size_t bb = ks_dtype_row_bytes(wb.dtype, cols), bt = ks_dtype_row_bytes(wt.dtype, cols);
    for (size_t r = 0; r < rows; r++) {
        size_t rt_idx = qk_hd ? qk_row(r, qk_hd, sb, st) : r;
        ks_dtype_to_f32(wb.dtype, (const unsigned char *)wb.data + r * bb, rb, cols);
        ks_dtype_to_f32(wt.dtype, (const unsigned char *)wt.data + rt_idx * bt, rt, cols);
        fold(t, rb, rt, cols);
    }
    return KS_OK;
}

static ks_status diff_vector(tensor_list *l, const char *name, ks_diff_module mod, int layer,
                             const float *b, const float *u, size_t n, ks_error *err) {
    ks_diff_tensor *t = push(l, name, mod, layer);
    if (!t) return ks_error_set(err, KS_ERR_NOMEM, "weight deltas: out of memory");
    fold(t, b, u, n);
    return KS_OK;
}

ks_status ks_diff_weights(const ks_model *base, const ks_model *tuned, ks_diff_tensor **out,
                          int *n, ks_error *err) {
    ks_status s = ks_diff_check_models(base, tuned, err);
    if (s) return s;
    const ks_config *c = &base->cfg;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    const size_t QD = (size_t)c->n_heads * (size_t)c->head_dim;
    const size_t KD = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    size_t wmax = D > F ? D : F;
    if (QD > wmax) wmax = QD;
    float *rb = malloc(wmax * sizeof(float)), *rt = malloc(wmax * sizeof(float));
    tensor_list l = {0};
    ks_rope_style sb = base->cfg.rope_style, st = tuned->cfg.rope_style;
    const int hd = c->head_dim;
    char nm[96];
    if (!rb || !rt) {
        s = ks_error_set(err, KS_ERR_NOMEM, "weight deltas: out of memory");
        goto out;
    }
#define TRY(call)                   \
    do {                            \
        if ((s = (call))) goto out; \
    } while (0)
    TRY(diff_matrix(&l, "model.embed_tokens.weight", KS_DIFF_MOD_EMBED, -1, base->tok_embeddings,
                    tuned->tok_embeddings, V, D, 0, sb, st, rb, rt, err));
    for (int i = 0; i < c->n_layers; i++) {
        const ks_layer_weights *a = &base->layers[i], *b = &tuned->layers[i];
        const char *p = "model.layers";
        snprintf(nm, sizeof nm, "%s.%d.input_layernorm.weight", p, i);
        TRY(diff_vector(&l, nm, KS_DIFF_MOD_ATTN_NORM, i, a->attn_norm, b->attn_norm, D, err));
        snprintf(nm, sizeof nm, "%s.%d.self_attn.q_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_Q, i, a->wq, b->wq, QD, D, hd, sb, st, rb, rt, err));
        snprintf(nm, sizeof nm, "%s.%d.self_attn.k_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_K, i, a->wk, b->wk, KD, D, hd, sb, st, rb, rt, err));
        snprintf(nm, sizeof nm, "%s.%d.self_attn.v_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_V, i, a->wv, b->wv, KD, D, 0, sb, st, rb, rt, err));
        snprintf(nm, sizeof nm, "%s.%d.self_attn.o_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_O, i, a->wo, b->wo, D, QD, 0, sb, st, rb, rt, err));
        snprintf(nm, sizeof nm, "%s.%d.post_attention_layernorm.weight", p, i);
        TRY(diff_vector(&l, nm, KS_DIFF_MOD_MLP_NORM, i, a->ffn_norm, b->ffn_norm, D, err));
        snprintf(nm, sizeof nm, "%s.%d.mlp.gate_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_GATE, i, a->w_gate, b->w_gate, F, D, 0, sb, st, rb, rt, err));
        snprintf(nm, sizeof nm, "%s.%d.mlp.up_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_UP, i, a->w_up, b->w_up, F, D, 0, sb, st, rb, rt, err));
        snprintf(nm, sizeof nm, "%s.%d.mlp.down_proj.weight", p, i);
        TRY(diff_matrix(&l, nm, KS_DIFF_MOD_DOWN, i, a->w_down, b->w_down, D, F, 0, sb, st, rb, rt, err));
    }
    TRY(diff_vector(&l, "model.norm.weight", KS_DIFF_MOD_FINAL_NORM, -1, base->final_norm,
                    tuned->final_norm, D, err));
    if (!base->cfg.tie_embeddings || !tuned->cfg.tie_embeddings)
        TRY(diff_matrix(&l, "lm_head.weight", KS_DIFF_MOD_LM_HEAD, -1, base->output, tuned->output,
                        V, D, 0, sb, st, rb, rt, err));
#undef TRY
    *out = l.v;
    *n = l.n;
    l.v = NULL;
out:
    free(l.v);
    free(rb);
    free(rt);
    return s;
}

/* ---------------------------------------------------------------- the accumulator */

/* kinds of tensors the hooks take, for the completeness check */
enum { K_RESID, K_ATTN, K_MLP, K_PATTERN, K_LOGITS, K_COUNT };

struct ks_diff {
    const ks_model *base, *tuned;
    int L, H, D, V;
    ks_diff_options o;
    /* totals */
    double *S;         /* [3][L][3][D*D]: S_xx, S_yy, S_xy per stream and layer (NULL where off) */
    double *sums;      /* [3][L][2][D]: s_x, s_y */
    double *cos_sum;   /* [3][L] */
    double *js_sum, *tv_sum; /* [L][H] */
    double *kl_sum, *top1_sum; /* [L] */
    double fkl_sum, ftop1_sum;
    int64_t n_tok, n_prompts;
    /* the current prompt */
    int n, cap;
    float *act;        /* [3][L][cap][D] base rows */
    float *pat;        /* [L][H][cap(cap+1)/2] base attention rows, packed */
    float *logits;     /* [cap][V] base logits */
    int *got;          /* [2][K_COUNT][L]: rows received per side, kind, layer */
    float *p_cos, *p_kl, *p_fkl, *p_js, *p_tv;
    uint8_t *p_top1, *p_ftop1;
    double *pj, *pt;   /* [L][H] this prompt's JS/TV sums */
    /* scratch */
    double *xd, *yd;   /* [chunk][D], 64-byte aligned */
    int xd_rows;
    float *xn, *lb, *lt; /* lens: [LENS_ROWS][D], [LENS_ROWS][V] x2 */
    bool failed;
    ks_error hook_err;
};

#define LENS_ROWS 32

static int streamof(ks_hook_point p) {
    switch (p) {
    case KS_HOOK_RESID_POST: return KS_DIFF_RESID;
    case KS_HOOK_ATTN_OUT: return KS_DIFF_ATTN;
    case KS_HOOK_MLP_OUT: return KS_DIFF_MLP;
    default: return -1;
    }
}

static void *aligned(size_t bytes) {
    void *p = NULL;
    size_t n = (bytes + 63) / 64 * 64;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) return NULL;
    return p;
}

size_t ks_diff_accumulator_bytes(const ks_diff *d) {
    if (!d) return 0;
    size_t per = 3 * (size_t)d->D * (size_t)d->D * sizeof(double), total = 0;
    for (int s = 0; s < KS_DIFF_N_STREAMS; s++)
        if (!d->o.cka_off[s]) total += per * (size_t)d->L;
    return total;
}

ks_status ks_diff_create(const ks_model *base, const ks_model *tuned, const ks_diff_options *opts,
                         ks_diff **out, ks_error *err) {
    *out = NULL;
    ks_status s = ks_diff_check_models(base, tuned, err);
    if (s) return s;
    ks_diff *d = calloc(1, sizeof *d);
    if (!d) return ks_error_set(err, KS_ERR_NOMEM, "diff: out of memory");
    const ks_config *c = ks_model_config(base);
    d->base = base;
    d->tuned = tuned;
    d->L = c->n_layers;
    d->H = c->n_heads;
    d->D = c->dim;
    d->V = c->vocab_size;
    if (opts) d->o = *opts;
    size_t L = (size_t)d->L, H = (size_t)d->H, D = (size_t)d->D, V = (size_t)d->V;
    size_t acc = ks_diff_accumulator_bytes(d);
    if (acc) d->S = calloc(acc / sizeof(double), sizeof(double));
    d->sums = calloc(3 * L * 2 * D, sizeof(double));
    d->cos_sum = calloc(3 * L, sizeof(double));
    d->js_sum = calloc(L * H, sizeof(double));
    d->tv_sum = calloc(L * H, sizeof(double));
    d->kl_sum = calloc(L, sizeof(double));
    d->top1_sum = calloc(L, sizeof(double));
    d->got = calloc(2 * K_COUNT * L, sizeof(int));
    d->pj = calloc(L * H, sizeof(double));
    d->pt = calloc(L * H, sizeof(double));
    d->p_js = calloc(L * H, sizeof(float));
    d->p_tv = calloc(L * H, sizeof(float));
    d->xn = malloc((size_t)LENS_ROWS * D * sizeof(float));
    d->lb = malloc((size_t)LENS_ROWS * V * sizeof(float));
    d->lt = malloc((size_t)LENS_ROWS * V * sizeof(float));
    if ((acc && !d->S) || !d->sums || !d->cos_sum || !d->js_sum || !d->tv_sum || !d->kl_sum ||
        !d->top1_sum || !d->got || !d->pj || !d->pt || !d->p_js || !d->p_tv || !d->xn || !d->lb ||
        !d->lt) {
        ks_diff_free(d);
        return ks_error_set(err, KS_ERR_NOMEM, "diff: out of memory (the CKA accumulators need "
                            "%zu bytes; --cka resid or none needs less)", acc);
    }
    *out = d;
    return KS_OK;
}

void ks_diff_free(ks_diff *d) {
    if (!d) return;
    free(d->S);
    free(d->sums);
    free(d->cos_sum);
    free(d->js_sum);
    free(d->tv_sum);
    free(d->kl_sum);
    free(d->top1_sum);
    free(d->act);
    free(d->pat);
    free(d->logits);
    free(d->got);
    free(d->p_cos);
    free(d->p_kl);
    free(d->p_fkl);
    free(d->p_js);
    free(d->p_tv);
    free(d->p_top1);
    free(d->p_ftop1);
    free(d->pj);
    free(d->pt);
    free(d->xd);
    free(d->yd);
    free(d->xn);
    free(d->lb);
    free(d->lt);
    free(d);
}

ks_status ks_diff_begin(ks_diff *d, int n, ks_error *err) {
    if (!d || n <= 0) return ks_error_set(err, KS_ERR_ARG, "ks_diff_begin: no tokens");
    size_t L = (size_t)d->L, H = (size_t)d->H, D = (size_t)d->D, V = (size_t)d->V;
    if (n > d->cap) {
        size_t N = (size_t)n;
        free(d->act);
        free(d->pat);
        free(d->logits);
        free(d->p_cos);
        free(d->p_kl);
        free(d->p_fkl);
        free(d->p_top1);
        free(d->p_ftop1);
        d->act = malloc(3 * L * N * D * sizeof(float));
        d->pat = malloc(L * H * (N * (N + 1) / 2) * sizeof(float));
        d->logits = malloc(N * V * sizeof(float));
        d->p_cos = malloc(3 * L * N * sizeof(float));
        d->p_kl = malloc(L * N * sizeof(float));
        d->p_fkl = malloc(N * sizeof(float));
        d->p_top1 = malloc(L * N);
        d->p_ftop1 = malloc(N);
        d->cap = n;
        if (!d->act || !d->pat || !d->logits || !d->p_cos || !d->p_kl || !d->p_fkl ||
            !d->p_top1 || !d->p_ftop1) {
            d->cap = 0;
            return ks_error_set(err, KS_ERR_NOMEM, "diff: a prompt of %d tokens: out of memory", n);
        }
    }
    d->n = n;
    memset(d->got, 0, 2 * K_COUNT * L * sizeof(int));
    memset(d->pj, 0, L * H * sizeof(double));
    memset(d->pt, 0, L * H * sizeof(double));
    d->failed = false;
    memset(&d->hook_err, 0, sizeof d->hook_err);
    return KS_OK;
}

static void hook_fail(ks_diff *d, ks_status code, const char *what) {
    if (d->failed) return;
    d->failed = true;
    ks_error_set(&d->hook_err, code, "diff: %s", what);
}

static bool wanted(const ks_hook_tensor *t, const ks_diff *d) {
    if (t->point == KS_HOOK_LOGITS) return true;
    if (t->layer < 0 || t->layer >= d->L) return false;
    return streamof(t->point) >= 0 || t->point == KS_HOOK_ATTN_PATTERN;
}

static int kind_of(ks_hook_point p) {
    int s = streamof(p);
    if (s >= 0) return s;
    return p == KS_HOOK_ATTN_PATTERN ? K_PATTERN : K_LOGITS;
}

/* rows pos0..pos0+B of a per-token tensor, checked against the prompt */
static bool rows_ok(ks_diff *d, const ks_hook_tensor *t, int B) {
    if (t->pos0 < 0 || B < 0 || t->pos0 + B > d->n) {
        hook_fail(d, KS_ERR_ARG, "a forward ran more tokens than ks_diff_begin announced");
        return false;
    }
    return true;
}

bool ks_diff_hook_base(const ks_hook_tensor *t, bool ask, void *user) {
    ks_diff *d = user;
    if (ask) return !d->failed && wanted(t, d);
    if (d->failed || !wanted(t, d)) return false;
    const size_t D = (size_t)d->D, V = (size_t)d->V, N = (size_t)d->cap;
    int kind = kind_of(t->point);
    if (kind == K_PATTERN) {
        int H = (int)t->shape[0], B = (int)t->shape[1], K = (int)t->shape[2];
        if (H != d->H || !rows_ok(d, t, B)) return false;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < B; i++) {
                size_t q = (size_t)(t->pos0 + i);
                float *dst = d->pat + ((size_t)t->layer * (size_t)H + (size_t)h) * (N * (N + 1) / 2) +
                             q * (q + 1) / 2;
                memcpy(dst, t->data + ((size_t)h * (size_t)B + (size_t)i) * (size_t)K,
                       (q + 1) * sizeof(float));
            }
        d->got[kind * d->L + t->layer] += B;
        return false;
    }
    int B = (int)t->shape[0];
    if (!rows_ok(d, t, B)) return false;
    if (kind == K_LOGITS) {
        memcpy(d->logits + (size_t)t->pos0 * V, t->data, (size_t)B * V * sizeof(float));
        d->got[K_LOGITS * d->L] += B;
        return false;
    }
    float *dst = d->act + (((size_t)kind * (size_t)d->L + (size_t)t->layer) * N + (size_t)t->pos0) * D;
    memcpy(dst, t->data, (size_t)B * D * sizeof(float));
    d->got[kind * d->L + t->layer] += B;
    return false;
}

/* ---------------------------------------------------------------- lens */

/* logits (b, V) of rows x (b, D) through m's final RMSNorm (as the forward computes it) and
 * its output matrix; f32 matrices are used in place, others converted in panels. */
static ks_status lens(const ks_model *m, const float *x, int b, float *xn, float *out) {
    const ks_config *c = &m->cfg;
    const int D = c->dim, V = c->vocab_size;
    for (int i = 0; i < b; i++) {
        const float *xi = x + (size_t)i * D;
        double ss = 0.0;
        for (int k = 0; k < D; k++) ss += (double)xi[k] * xi[k];
        float r = 1.0f / sqrtf((float)(ss / D) + c->rms_eps);
        for (int k = 0; k < D; k++) xn[(size_t)i * D + k] = m->final_norm[k] * (xi[k] * r);
    }
    const int P = 1024; /* vocabulary rows per panel */
    const int n_panels = (V + P - 1) / P;
    bool f32 = m->output.dtype == KS_DTYPE_F32;
    size_t rb = ks_dtype_row_bytes(m->output.dtype, (size_t)D);
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n_panels > 1)
    for (int p = 0; p < n_panels; p++) {
        int v0 = p * P, nv = V - v0 < P ? V - v0 : P;
        const float *w;
        float *tmp = NULL;
        if (f32) {
            w = (const float *)m->output.data + (size_t)v0 * D;
        } else {
            tmp = malloc((size_t)nv * D * sizeof(float));
            if (!tmp) {
                bad = 1;
                continue;
            }
            ks_dtype_to_f32(m->output.dtype, (const unsigned char *)m->output.data + (size_t)v0 * rb,
                            tmp, (size_t)nv * D);
            w = tmp;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, nv, D, 1.0f, xn, D, w, D, 0.0f,
                    out + v0, V);
        free(tmp);
    }
    return bad ? KS_ERR_NOMEM : KS_OK;
}

/* log-sum-exp and argmax of a row */
static double lse_argmax(const float *z, int V, int *amax) {
    float mx = -INFINITY;
    int a = 0;
    for (int i = 0; i < V; i++)
        if (z[i] > mx) {
            mx = z[i];
            a = i;
        }
    double s = 0.0;
    for (int i = 0; i < V; i++) s += exp((double)z[i] - mx);
    *amax = a;
    return mx + log(s);
}

/* KL(p_t ‖ p_b) in nats of two rows of logits, and whether their top-1 agree */
static double kl_row(const float *zt, const float *zb, int V, uint8_t *agree) {
    int at, ab;
    double lt = lse_argmax(zt, V, &at), lb = lse_argmax(zb, V, &ab);
    double kl = 0.0;
    for (int i = 0; i < V; i++) {
        double a = zt[i] - lt, b = zb[i] - lb;
        if (a == b) continue; /* exactly 0, also where both are -inf */
        kl += exp(a) * (a - b);
    }
    *agree = at == ab;
    return kl > 0.0 ? kl : 0.0;
}

/* ---------------------------------------------------------------- the tuned side */

static ks_status ensure_xd(ks_diff *d, int B) {
    if (B <= d->xd_rows) return KS_OK;
    free(d->xd);
    free(d->yd);
    d->xd = aligned((size_t)B * (size_t)d->D * sizeof(double));
    d->yd = aligned((size_t)B * (size_t)d->D * sizeof(double));
    d->xd_rows = d->xd && d->yd ? B : 0;
    return d->xd_rows ? KS_OK : KS_ERR_NOMEM;
}

/* S (D, D) += Aᵀ B for A, B (n, D), f64. BLAS runs single-threaded inside a session (ks_model.h),
 * so the columns of S are split over OpenMP threads in blocks of 64, each its own dgemm: every
 * element is still one dot product over the n rows computed by the same kernel, whatever the
 * thread count, and the partition depends only on D and n, so the three accumulators of one
 * prompt see the same arithmetic. */
static void gram_add(const double *A, const double *B, int D, int n, double *S) {
    const int W = 64, nb = (D + W - 1) / W;
#pragma omp parallel for schedule(static) if (nb > 1 && (size_t)D * D * (size_t)n > (1u << 20))
    for (int j = 0; j < nb; j++) {
        int c0 = j * W, nc = D - c0 < W ? D - c0 : W;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, nc, n, 1.0, A, D, B + c0, D, 1.0,
                    S + c0, D);
    }
}

static void tuned_stream(ks_diff *d, const ks_hook_tensor *t, int st, int B) {
    const int D = d->D, L = d->L, l = t->layer;
    const size_t N = (size_t)d->cap;
    const float *xb = d->act + (((size_t)st * L + l) * N + (size_t)t->pos0) * D; /* base */
    const float *yb = t->data;                                                 /* tuned */
    for (int i = 0; i < B; i++) {
        const float *x = xb + (size_t)i * D, *y = yb + (size_t)i * D;
        double xy = 0, xx = 0, yy = 0;
        for (int k = 0; k < D; k++) {
            xy += (double)x[k] * y[k];
            xx += (double)x[k] * x[k];
            yy += (double)y[k] * y[k];
        }
        double c = xx == 0 && yy == 0 ? 1.0 : xx == 0 || yy == 0 ? 0.0 : xy / sqrt(xx * yy);
        if (xx == yy && xy == xx && xx > 0) c = 1.0; /* sqrt(s*s) == s, but say so */
        d->p_cos[((size_t)st * L + l) * N + (size_t)(t->pos0 + i)] = (float)c;
    }
    if (!d->o.cka_off[st]) {
        if (ensure_xd(d, B)) {
            hook_fail(d, KS_ERR_NOMEM, "CKA rows: out of memory");
            return;
        }
        double *sx = d->sums + (((size_t)st * L + l) * 2) * D, *sy = sx + D;
        for (size_t i = 0; i < (size_t)B * D; i++) {
            d->xd[i] = xb[i];
            d->yd[i] = yb[i];
        }
        for (int i = 0; i < B; i++)
            for (int k = 0; k < D; k++) {
                sx[k] += d->xd[(size_t)i * D + k];
                sy[k] += d->yd[(size_t)i * D + k];
            }
        size_t DD = (size_t)D * D;
        double *S = d->S + ((size_t)st * L + l) * 3 * DD;
        /* the three through the same routine, same partition, same alignment: see the file top */
        gram_add(d->xd, d->xd, D, B, S);
        gram_add(d->yd, d->yd, D, B, S + DD);
        gram_add(d->xd, d->yd, D, B, S + 2 * DD);
    }
    if (st != KS_DIFF_RESID) return;
    /* the lens of both models at this layer */
    const int V = d->V;
    for (int i0 = 0; i0 < B; i0 += LENS_ROWS) {
        int b = B - i0 < LENS_ROWS ? B - i0 : LENS_ROWS;
        if (lens(d->base, xb + (size_t)i0 * D, b, d->xn, d->lb) ||
            lens(d->tuned, yb + (size_t)i0 * D, b, d->xn, d->lt)) {
            hook_fail(d, KS_ERR_NOMEM, "lens: out of memory");
            return;
        }
        for (int i = 0; i < b; i++) {
            size_t pos = (size_t)(t->pos0 + i0 + i);
            uint8_t ag;
            d->p_kl[(size_t)l * N + pos] =
                (float)kl_row(d->lt + (size_t)i * V, d->lb + (size_t)i * V, V, &ag);
            d->p_top1[(size_t)l * N + pos] = ag;
        }
    }
}

/* Jensen–Shannon divergence (bits) and total variation of two distributions over n keys */
static void js_tv(const float *p, const float *q, size_t n, double *js, double *tv) {
    double j = 0.0, v = 0.0;
    for (size_t k = 0; k < n; k++) {
        double a = p[k], b = q[k];
        if (a == b) continue; /* both terms 0 */
        double m = 0.5 * (a + b);
        if (a > 0) j += a * log2(a / m);
        if (b > 0) j += b * log2(b / m);
        v += fabs(a - b);
    }
    *js = j > 0 ? 0.5 * j : 0.0;
    *tv = 0.5 * v;
}

bool ks_diff_hook_tuned(const ks_hook_tensor *t, bool ask, void *user) {
    ks_diff *d = user;
    if (ask) return !d->failed && wanted(t, d);
    if (d->failed || !wanted(t, d)) return false;
    const size_t V = (size_t)d->V, N = (size_t)d->cap;
    int kind = kind_of(t->point);
    int *got = d->got + K_COUNT * d->L;
    if (kind == K_PATTERN) {
        int H = (int)t->shape[0], B = (int)t->shape[1], K = (int)t->shape[2];
        if (H != d->H || !rows_ok(d, t, B)) return false;
        for (int h = 0; h < H; h++) {
            double sj = 0, sv = 0;
            for (int i = 0; i < B; i++) {
                size_t q = (size_t)(t->pos0 + i);
                const float *pb = d->pat + ((size_t)t->layer * (size_t)H + (size_t)h) * (N * (N + 1) / 2) +
                                  q * (q + 1) / 2;
                double j, v;
                js_tv(pb, t->data + ((size_t)h * (size_t)B + (size_t)i) * (size_t)K, q + 1, &j, &v);
                sj += j;
                sv += v;
            }
            d->pj[(size_t)t->layer * H + h] += sj;
            d->pt[(size_t)t->layer * H + h] += sv;
        }
        got[kind * d->L + t->layer] += B;
        return false;
    }
    int B = (int)t->shape[0];
    if (!rows_ok(d, t, B)) return false;
    if (kind == K_LOGITS) {
        for (int i = 0; i < B; i++) {
            size_t pos = (size_t)(t->pos0 + i);
            d->p_fkl[pos] = (float)kl_row(t->data + (size_t)i * V, d->logits + pos * V, (int)V,
                                          &d->p_ftop1[pos]);
        }
        got[K_LOGITS * d->L] += B;
        return false;
    }
    tuned_stream(d, t, kind, B);
    got[kind * d->L + t->layer] += B;
    return false;
}

ks_status ks_diff_end(ks_diff *d, ks_diff_prompt *out, ks_error *err) {
    if (!d) return ks_error_set(err, KS_ERR_ARG, "ks_diff_end: NULL");
    if (d->failed) {
        if (err) *err = d->hook_err;
        return d->hook_err.code ? d->hook_err.code : KS_ERR_ARG;
    }
    const int L = d->L, H = d->H, n = d->n;
    const size_t N = (size_t)d->cap;
    for (int side = 0; side < 2; side++)
        for (int k = 0; k < K_COUNT; k++)
            for (int l = 0; l < (k == K_LOGITS ? 1 : L); l++)
                if (d->got[(side * K_COUNT + k) * L + l] != n)
                    return ks_error_set(err, KS_ERR_ARG, "diff: the %s forward gave %d of %d rows "
                                        "of %s at layer %d (run every token from position 0 with "
                                        "every row's logits)", side ? "tuned" : "base",
                                        d->got[(side * K_COUNT + k) * L + l], n,
                                        k == K_PATTERN ? "attn.hook_pattern" : k == K_LOGITS ? "logits"
                                        : ks_diff_stream_name((ks_diff_stream)k), l);
    /* fold into the totals; the per-prompt arrays are packed to [.][n] for the caller */
    for (int s = 0; s < 3; s++)
        for (int l = 0; l < L; l++) {
            float *src = d->p_cos + ((size_t)s * L + l) * N;
            double sum = 0;
            for (int i = 0; i < n; i++) sum += src[i];
            d->cos_sum[s * L + l] += sum;
            memmove(d->p_cos + ((size_t)s * L + l) * (size_t)n, src, (size_t)n * sizeof(float));
        }
    for (int l = 0; l < L; l++) {
        const float *kl = d->p_kl + (size_t)l * N;
        const uint8_t *ag = d->p_top1 + (size_t)l * N;
        double sk = 0, sa = 0;
        for (int i = 0; i < n; i++) {
            sk += kl[i];
            sa += ag[i];
        }
        d->kl_sum[l] += sk;
        d->top1_sum[l] += sa;
        memmove(d->p_kl + (size_t)l * (size_t)n, kl, (size_t)n * sizeof(float));
        memmove(d->p_top1 + (size_t)l * (size_t)n, ag, (size_t)n);
    }
    for (int i = 0; i < n; i++) {
        d->fkl_sum += d->p_fkl[i];
        d->ftop1_sum += d->p_ftop1[i];
    }
    for (int k = 0; k < L * H; k++) {
        d->js_sum[k] += d->pj[k];
        d->tv_sum[k] += d->pt[k];
        d->p_js[k] = (float)(d->pj[k] / n);
        d->p_tv[k] = (float)(d->pt[k] / n);
    }
    d->n_tok += n;
    d->n_prompts++;
    if (out)
        *out = (ks_diff_prompt){.n = n, .n_layers = L, .n_heads = H, .cos = d->p_cos,
                                .lens_kl = d->p_kl, .lens_top1 = d->p_top1, .final_kl = d->p_fkl,
                                .final_top1 = d->p_ftop1, .head_js = d->p_js, .head_tv = d->p_tv};
    return KS_OK;
}

ks_status ks_diff_run(ks_diff *d, ks_session *s_base, ks_session *s_tuned, const int *tokens,
                      int n, ks_diff_prompt *out, ks_error *err) {
    ks_status s = ks_diff_begin(d, n, err);
    if (s) return s;
    ks_session *ss[2] = {s_base, s_tuned};
    ks_hook_fn fn[2] = {ks_diff_hook_base, ks_diff_hook_tuned};
    float *logits = malloc((size_t)n * (size_t)d->V * sizeof(float));
    if (!logits) return ks_error_set(err, KS_ERR_NOMEM, "diff: logits of %d tokens: out of memory", n);
    for (int k = 0; k < 2 && !s; k++) {
        ks_session_reset(ss[k]);
        ks_session_set_hook(ss[k], fn[k], d);
        ks_session_set_hook_read_only(ss[k], true);
        s = ks_session_forward(ss[k], tokens, n, KS_LOGITS_ALL, logits, err);
        ks_session_set_hook(ss[k], NULL, NULL);
    }
    free(logits);
    return s ? s : ks_diff_end(d, out, err);
}

/* ---------------------------------------------------------------- totals */

static double cka_of(const ks_diff *d, int st, int l) {
    const size_t D = (size_t)d->D, DD = D * D;
    const double N = (double)d->n_tok;
    if (d->o.cka_off[st] || d->n_tok < 2) return NAN;
    const double *S = d->S + ((size_t)st * d->L + l) * 3 * DD;
    const double *sx = d->sums + (((size_t)st * d->L + l) * 2) * D, *sy = sx + D;
    const double *sxy[3][2] = {{sx, sx}, {sy, sy}, {sx, sy}};
    double f[3]; /* ‖C_xx‖², ‖C_yy‖², ‖C_xy‖² */
    for (int m = 0; m < 3; m++) {
        double acc = 0;
        const double *A = S + (size_t)m * DD, *u = sxy[m][0], *v = sxy[m][1];
        for (size_t i = 0; i < D; i++)
            for (size_t j = 0; j < D; j++) {
                double c = A[i * D + j] - u[i] * v[j] / N;
                acc += c * c;
            }
        f[m] = acc;
    }
    if (!(f[0] > 0) || !(f[1] > 0)) return NAN;
    double den = f[0] == f[1] ? f[0] : sqrt(f[0]) * sqrt(f[1]);
    return f[2] / den;
}

ks_status ks_diff_summarize(const ks_diff *d, ks_diff_summary *out, ks_error *err) {
    memset(out, 0, sizeof *out);
    const int L = d->L, H = d->H;
    out->n_layers = L;
    out->n_heads = H;
    out->n_prompts = d->n_prompts;
    out->n_tokens = d->n_tok;
    out->cka = malloc(3 * (size_t)L * sizeof(double));
    out->cos = malloc(3 * (size_t)L * sizeof(double));
    out->head_js = malloc((size_t)L * H * sizeof(double));
    out->head_tv = malloc((size_t)L * H * sizeof(double));
    out->lens_kl = malloc((size_t)L * sizeof(double));
    out->lens_top1 = malloc((size_t)L * sizeof(double));
    if (!out->cka || !out->cos || !out->head_js || !out->head_tv || !out->lens_kl || !out->lens_top1) {
        ks_diff_summary_clear(out);
        return ks_error_set(err, KS_ERR_NOMEM, "diff summary: out of memory");
    }
    double N = d->n_tok > 0 ? (double)d->n_tok : NAN;
    for (int s = 0; s < 3; s++)
        for (int l = 0; l < L; l++) {
            out->cka[s * L + l] = cka_of(d, s, l);
            out->cos[s * L + l] = d->cos_sum[s * L + l] / N;
        }
    for (int k = 0; k < L * H; k++) {
        out->head_js[k] = d->js_sum[k] / N;
        out->head_tv[k] = d->tv_sum[k] / N;
    }
    for (int l = 0; l < L; l++) {
        out->lens_kl[l] = d->kl_sum[l] / N;
        out->lens_top1[l] = d->top1_sum[l] / N;
    }
    out->final_kl = d->fkl_sum / N;
    out->final_top1 = d->ftop1_sum / N;
    return KS_OK;
}

void ks_diff_summary_clear(ks_diff_summary *s) {
    if (!s) return;
    free(s->cka);
    free(s->cos);
    free(s->head_js);
    free(s->head_tv);
    free(s->lens_kl);
    free(s->lens_top1);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- Spearman */

typedef struct {
    double v;
    int i;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* average ranks (1-based) of v[0..n) into r */
static bool ranks(const double *v, int n, double *r) {
    ranked *t = malloc((size_t)n * sizeof *t);
    if (!t) return false;
    for (int i = 0; i < n; i++) t[i] = (ranked){v[i], i};
    qsort(t, (size_t)n, sizeof *t, cmp_ranked);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && t[j + 1].v == t[i].v) j++;
        double avg = 0.5 * (i + j) + 1.0;
        for (int k = i; k <= j; k++) r[t[k].i] = avg;
        i = j + 1;
    }
    free(t);
    return true;
}

double ks_diff_spearman(const double *x, const double *y, int n) {
    double *a = malloc((size_t)(n > 0 ? n : 1) * 4 * sizeof(double));
    if (!a) return NAN;
    double *xs = a, *ys = a + n, *rx = a + 2 * n, *ry = a + 3 * n;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && !isnan(y[i])) {
            xs[m] = x[i];
            ys[m] = y[i];
            m++;
        }
    double r = NAN;
    if (m >= 2 && ranks(xs, m, rx) && ranks(ys, m, ry)) {
        double mx = 0, my = 0;
        for (int i = 0; i < m; i++) {
            mx += rx[i];
            my += ry[i];
        }
        mx /= m;
        my /= m;
        double sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < m; i++) {
            sxy += (rx[i] - mx) * (ry[i] - my);
            sxx += (rx[i] - mx) * (rx[i] - mx);
            syy += (ry[i] - my) * (ry[i] - my);
        }
        if (sxx > 0 && syy > 0) r = sxy / sqrt(sxx * syy);
    }
    free(a);
    return r;
}
