/* backward.c — gradients of a scalar objective through the whole LLaMA forward, on the CPU in
 * f32: every parameter (optional) and every hook point.
 *
 * A ks_grad runs its own full-sequence forward (one chunk of T tokens, no KV cache) that keeps
 * what the backward needs, layer by layer, with the numerics of forward.c (HF LlamaForCausalLM,
 * eager attention, f32). The caller turns the logits into an objective and its gradient
 * (ks_objective_*), and ks_grad_backward propagates that gradient back.
 *
 * Each op's backward is written next to the forward it inverts (STYLE.md: forward/backward
 * pairs). Contract: forward outputs are `=`; activation gradients are `=` per backward call
 * (each is written once, then read); parameter gradients accumulate (`+=`) across backward
 * calls until ks_grad_zero, so gradients of several objectives or prompts add up.
 *
 * Hooks: the forward hook sees and may edit activations exactly as in forward.c (same names,
 * shapes, ask/deliver protocol); the backward hook is handed d objective / d activation at the
 * same points, in reverse order, and may edit it (e.g. add a direction: the gradient of a
 * projection objective), and the backward goes on with what it leaves. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "model_private.h"

typedef struct {
    float *x;        /* (T, D)       resid_pre */
    float *xn1;      /* (T, D)       ln1 output */
    float *q, *k;    /* (T, H*hd), (T, KV*hd) after rotation */
    float *v;        /* (T, KV*hd) */
    float *att;      /* (H, T, T)    pattern */
    float *z;        /* (T, H*hd) */
    float *mid;      /* (T, D)       resid_mid */
    float *xn2;      /* (T, D)       ln2 output */
    float *gate, *up; /* (T, hidden) before the activation */
} layer_act;

typedef struct {
    float *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
} layer_grad;

struct ks_grad {
    const ks_model *m;
    bool param_grads;
    ks_hook_fn fwd_hook, bwd_hook;
    void *hook_user;

    /* activations of the last forward, for T tokens */
    int T, cap_T;
    int *tokens;
    float *arena;
    layer_act *la;
    float *xf, *xnf, *logits; /* (T, D), (T, D), (T, V) */
    float *cosv, *sinv;       /* (T, hd/2) */

    /* backward scratch, sized with the arena */
    float *dres, *dmid, *dbuf, *dxn, *dz, *dq, *dk, *dv, *dh1, *dh2, *dP, *dlog, *act;

    /* parameter gradients (param_grads), laid out like the model */
    float *gbuf;
    float *g_emb, *g_out, *g_final_norm;
    layer_grad *lg;
};

/* ------------------------------------------------------------------ hooks */

/* Offer t (host memory, editable) to fn: asked first, then delivered. */
static void fire(ks_grad *g, ks_hook_fn fn, ks_hook_point p, int layer, float *data, int ndim,
                 int64_t d0, int64_t d1, int64_t d2) {
    if (!fn) return;
    char name[96];
    ks_hook_name(p, layer, name, sizeof name);
    ks_hook_tensor t = {.name = name, .point = p, .layer = layer, .data = NULL, .ndim = ndim,
                        .shape = {d0, d1, d2, 0}, .pos0 = 0};
    if (!fn(&t, true, g->hook_user)) return;
    t.data = data;
    fn(&t, false, g->hook_user);
}

#define FWD(p, l, data, nd, a, b, c) fire(g, g->fwd_hook, p, l, data, nd, a, b, c)
#define BWD(p, l, data, nd, a, b, c) fire(g, g->bwd_hook, p, l, data, nd, a, b, c)

/* ------------------------------------------------------------------ op pairs */

/* y (T, out) = x (T, in) · W^T */
static void linear_fwd(float *y, const float *x, const float *W, int T, int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, W, in, 0.0f, y,
                out);
}

/* dx (T, in) (= when beta 0, += when 1) dy · W; dW (out, in) += dy^T · x when dW */
static void linear_bwd(float *dx, float beta, float *dW, const float *dy, const float *x,
                       const float *W, int T, int in, int out) {
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, in, out, 1.0f, dy, out, W, in,
                    beta, dx, in);
    if (dW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, T, 1.0f, dy, out, x, in,
                    1.0f, dW, in);
}

static float rms_inv(const float *x, int D, float eps) {
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss += (double)x[i] * x[i];
    return 1.0f / sqrtf((float)(ss / D) + eps);
}

/* y = w ⊙ x r, r = 1 / sqrt(mean(x²) + eps), per row */
static void rms_fwd(float *y, const float *x, const float *w, int T, int D, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        float *yt = y + (size_t)t * D;
        float r = rms_inv(xt, D, eps);
        for (int i = 0; i < D; i++) yt[i] = w[i] * (xt[i] * r);
    }
}

/* dx += r (w ⊙ dy) − x r³ Σ_i (w ⊙ dy)_i x_i / D;  dw += Σ_t dy ⊙ x r */
static void rms_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, int T,
                    int D, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D, *dyt = dy + (size_t)t * D;
        float *dxt = dx + (size_t)t * D;
        float r = rms_inv(xt, D, eps);
        double dot = 0.0;
        for (int i = 0; i < D; i++) dot += (double)w[i] * dyt[i] * xt[i];
        float c = (float)(dot / D) * r * r * r;
        for (int i = 0; i < D; i++) dxt[i] += r * w[i] * dyt[i] - xt[i] * c;
        if (dw)
            for (int i = 0; i < D; i++) dw[i] += dyt[i] * xt[i] * r;
    }
}

/* Rotate (T, n, hd) in place; inverse = the rotation by -angle (the backward of a rotation). */
static void rope_apply(float *v, int T, int n, int hd, ks_rope_style style, const float *cosv,
                       const float *sinv, bool inverse) {
    int half = hd / 2;
    for (int t = 0; t < T; t++) {
        const float *cb = cosv + (size_t)t * half, *sb = sinv + (size_t)t * half;
        for (int h = 0; h < n; h++) {
            float *x = v + ((size_t)t * n + h) * hd;
            for (int j = 0; j < half; j++) {
                float c = cb[j], s = inverse ? -sb[j] : sb[j];
                int i0 = style == KS_ROPE_STYLE_INTERLEAVED ? 2 * j : j;
                int i1 = style == KS_ROPE_STYLE_INTERLEAVED ? 2 * j + 1 : j + half;
                float x0 = x[i0], x1 = x[i1];
                x[i0] = x0 * c - x1 * s;
                x[i1] = x1 * c + x0 * s;
            }
        }
    }
}

static float silu(float g) { return g / (1.0f + expf(-g)); }

/* d silu(g) / dg = σ(g) (1 + g (1 − σ(g))) */
static float silu_grad(float g) {
    float s = 1.0f / (1.0f + expf(-g));
    return s * (1.0f + g * (1.0f - s));
}

/* ------------------------------------------------------------------ lifecycle */

static bool f32_matrix(const ks_weight *w) { return w->dtype == KS_DTYPE_F32; }

ks_status ks_grad_create(const ks_model *m, const ks_grad_options *o, ks_grad **out,
                         ks_error *err) {
    if (!m || !out) return ks_error_set(err, KS_ERR_ARG, "ks_grad_create: NULL argument");
    *out = NULL;
    const ks_config *c = &m->cfg;
    bool f32 = f32_matrix(&m->tok_embeddings) && f32_matrix(&m->output);
    for (int l = 0; f32 && l < c->n_layers; l++) {
        const ks_layer_weights *w = &m->layers[l];
        f32 = f32_matrix(&w->wq) && f32_matrix(&w->wk) && f32_matrix(&w->wv) &&
              f32_matrix(&w->wo) && f32_matrix(&w->w_gate) && f32_matrix(&w->w_up) &&
              f32_matrix(&w->w_down);
    }
    if (!f32)
        return ks_error_set(err, KS_ERR_ARG,
                            "gradients need f32 weights, and this model stores %s: open it with "
                            "--f32-weights (ks_model_options.f32_weights)",
                            ks_model_weight_dtype(m));
    ks_grad *g = calloc(1, sizeof *g);
    if (!g) return ks_error_set(err, KS_ERR_NOMEM, "gradients: out of memory");
    g->m = m;
    g->param_grads = !o || o->param_grads;
    g->la = calloc((size_t)c->n_layers, sizeof *g->la);
    if (!g->la) goto nomem;
    if (g->param_grads) {
        size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
        size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
        size_t per = 2 * D + q * D + 2 * kv * D + D * q + 3 * hid * D;
        bool tied = m->output.data == m->tok_embeddings.data;
        size_t total = V * D * (tied ? 1 : 2) + D + per * (size_t)c->n_layers;
        g->gbuf = calloc(total, sizeof(float));
        g->lg = calloc((size_t)c->n_layers, sizeof *g->lg);
        if (!g->gbuf || !g->lg) goto nomem;
        float *p = g->gbuf;
#define TAKE(dst, n) (dst = p, p += (n))
        TAKE(g->g_emb, V * D);
        if (tied)
            g->g_out = g->g_emb;
        else
            TAKE(g->g_out, V * D);
        TAKE(g->g_final_norm, D);
        for (int l = 0; l < c->n_layers; l++) {
            layer_grad *L = &g->lg[l];
            TAKE(L->attn_norm, D);
            TAKE(L->ffn_norm, D);
            TAKE(L->wq, q * D);
            TAKE(L->wk, kv * D);
            TAKE(L->wv, kv * D);
            TAKE(L->wo, D * q);
            TAKE(L->w_gate, hid * D);
            TAKE(L->w_up, hid * D);
            TAKE(L->w_down, D * hid);
        }
#undef TAKE
    }
    *out = g;
    return KS_OK;
nomem:
    ks_grad_free(g);
    return ks_error_set(err, KS_ERR_NOMEM, "gradients: out of memory for the parameter gradients");
}

void ks_grad_free(ks_grad *g) {
    if (!g) return;
    free(g->arena);
    free(g->tokens);
    free(g->la);
    free(g->gbuf);
    free(g->lg);
    free(g);
}

const ks_model *ks_grad_model(const ks_grad *g) { return g->m; }

const float *ks_model_embedding_row(const ks_model *m, int id) {
    if (!m || id < 0 || id >= m->cfg.vocab_size || m->tok_embeddings.dtype != KS_DTYPE_F32)
        return NULL;
    return (const float *)m->tok_embeddings.data + (size_t)id * m->cfg.dim;
}

void ks_grad_set_hooks(ks_grad *g, ks_hook_fn forward, ks_hook_fn backward, void *user) {
    g->fwd_hook = forward;
    g->bwd_hook = backward;
    g->hook_user = user;
}

void ks_grad_zero(ks_grad *g) {
    if (!g->gbuf) return;
    const ks_config *c = &g->m->cfg;
    size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    size_t per = 2 * D + q * D + 2 * kv * D + D * q + 3 * hid * D;
    size_t total = V * D * (g->g_out == g->g_emb ? 1 : 2) + D + per * (size_t)c->n_layers;
    memset(g->gbuf, 0, total * sizeof(float));
}

/* Size the arena for T tokens. */
static ks_status reserve(ks_grad *g, int T, ks_error *err) {
    if (T <= g->cap_T) return KS_OK;
    const ks_config *c = &g->m->cfg;
    size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    size_t H = (size_t)c->n_heads, half = (size_t)c->head_dim / 2, t = (size_t)T;
    size_t per_layer = t * (4 * D + 2 * q + 2 * kv + 2 * hid) + H * t * t;
    size_t scratch = t * (3 * D) + t * D + 2 * t * q + 2 * t * kv + 2 * t * hid + H * t * t +
                     t * V + t * hid;
    size_t total = per_layer * (size_t)c->n_layers + 2 * t * D + t * V + 2 * t * half + scratch;
    float *a = malloc(total * sizeof(float));
    int *tok = malloc(t * sizeof(int));
    if (!a || !tok) {
        free(a);
        free(tok);
        return ks_error_set(err, KS_ERR_NOMEM,
                            "gradients: out of memory keeping the activations of %d tokens "
                            "(%zu MB)",
                            T, total * sizeof(float) >> 20);
    }
    free(g->arena);
    free(g->tokens);
    g->arena = a;
    g->tokens = tok;
    g->cap_T = T;
    float *p = a;
#define TAKE(dst, n) (dst = p, p += (n))
    for (int l = 0; l < c->n_layers; l++) {
        layer_act *L = &g->la[l];
        TAKE(L->x, t * D);
        TAKE(L->xn1, t * D);
        TAKE(L->q, t * q);
        TAKE(L->k, t * kv);
        TAKE(L->v, t * kv);
        TAKE(L->att, H * t * t);
        TAKE(L->z, t * q);
        TAKE(L->mid, t * D);
        TAKE(L->xn2, t * D);
        TAKE(L->gate, t * hid);
        TAKE(L->up, t * hid);
    }
    TAKE(g->xf, t * D);
    TAKE(g->xnf, t * D);
    TAKE(g->logits, t * V);
    TAKE(g->cosv, t * half);
    TAKE(g->sinv, t * half);
    TAKE(g->dres, t * D);
    TAKE(g->dmid, t * D);
    TAKE(g->dbuf, t * D);
    TAKE(g->dxn, t * D);
    TAKE(g->dz, t * q);
    TAKE(g->dq, t * q);
    TAKE(g->dk, t * kv);
    TAKE(g->dv, t * kv);
    TAKE(g->dh1, t * hid);
    TAKE(g->dh2, t * hid);
    TAKE(g->dP, H * t * t);
    TAKE(g->dlog, t * V);
    TAKE(g->act, t * hid);
#undef TAKE
    return KS_OK;
}

/* ------------------------------------------------------------------ forward */

ks_status ks_grad_forward(ks_grad *g, const int *tokens, int T, ks_error *err) {
    if (!g || !tokens || T <= 0) return ks_error_set(err, KS_ERR_ARG, "ks_grad_forward: no tokens");
    const ks_model *m = g->m;
    const ks_config *c = &m->cfg;
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab_size)
            return ks_error_set(err, KS_ERR_RANGE, "token id %d at position %d is outside the "
                                "vocabulary (0..%d)", tokens[t], t, c->vocab_size - 1);
    ks_status st = reserve(g, T, err);
    if (st) return st;
    g->T = T;
    memcpy(g->tokens, tokens, (size_t)T * sizeof(int));
    const int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    const int hid = c->hidden_dim, V = c->vocab_size, half = hd / 2, kv_mul = H / KV;
    const int q_dim = H * hd, kv_dim = KV * hd;
    const float scale = 1.0f / sqrtf((float)hd), eps = c->rms_eps;

    float inv_freq[512];
    if (half > 512) return ks_error_set(err, KS_ERR_RANGE, "head_dim %d: at most 1024", hd);
    ks_rope_inv_freq(c, T, inv_freq);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < half; j++) {
            float f = (float)t * inv_freq[j];
            g->cosv[(size_t)t * half + j] = cosf(f);
            g->sinv[(size_t)t * half + j] = sinf(f);
        }

    float *x = g->la[0].x;
    const float *emb = m->tok_embeddings.data;
    for (int t = 0; t < T; t++)
        memcpy(x + (size_t)t * D, emb + (size_t)tokens[t] * D, (size_t)D * sizeof(float));
    FWD(KS_HOOK_EMBED, -1, x, 2, T, D, 0);

    for (int l = 0; l < c->n_layers; l++) {
        const ks_layer_weights *w = &m->layers[l];
        layer_act *A = &g->la[l];
        /* A->x: the embeddings, or the previous layer's resid_post written there */
        FWD(KS_HOOK_RESID_PRE, l, A->x, 2, T, D, 0);
        rms_fwd(A->xn1, A->x, w->attn_norm, T, D, eps);
        FWD(KS_HOOK_LN1_NORMALIZED, l, A->xn1, 2, T, D, 0);
        linear_fwd(A->q, A->xn1, w->wq.data, T, D, q_dim);
        linear_fwd(A->k, A->xn1, w->wk.data, T, D, kv_dim);
        linear_fwd(A->v, A->xn1, w->wv.data, T, D, kv_dim);
        FWD(KS_HOOK_ATTN_Q, l, A->q, 3, T, H, hd);
        FWD(KS_HOOK_ATTN_K, l, A->k, 3, T, KV, hd);
        FWD(KS_HOOK_ATTN_V, l, A->v, 3, T, KV, hd);
        rope_apply(A->q, T, H, hd, c->rope_style, g->cosv, g->sinv, false);
        rope_apply(A->k, T, KV, hd, c->rope_style, g->cosv, g->sinv, false);
        FWD(KS_HOOK_ATTN_ROT_Q, l, A->q, 3, T, H, hd);
        FWD(KS_HOOK_ATTN_ROT_K, l, A->k, 3, T, KV, hd);
        /* scores (H, T, T), causal mask, softmax */
        for (int h = 0; h < H; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, A->q + h * hd,
                        q_dim, A->k + (h / kv_mul) * hd, kv_dim, 0.0f, A->att + (size_t)h * T * T,
                        T);
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                float *row = A->att + ((size_t)h * T + t) * T;
                for (int u = t + 1; u < T; u++) row[u] = -INFINITY;
            }
        FWD(KS_HOOK_ATTN_SCORES, l, A->att, 3, H, T, T);
        for (size_t r = 0; r < (size_t)H * T; r++) {
            float *row = A->att + r * T;
            float mx = -INFINITY;
            for (int u = 0; u < T; u++)
                if (row[u] > mx) mx = row[u];
            if (mx == -INFINITY) {
                memset(row, 0, (size_t)T * sizeof(float));
                continue;
            }
            double sum = 0.0;
            for (int u = 0; u < T; u++) {
                row[u] = expf(row[u] - mx);
                sum += row[u];
            }
            float inv = (float)(1.0 / sum);
            for (int u = 0; u < T; u++) row[u] *= inv;
        }
        FWD(KS_HOOK_ATTN_PATTERN, l, A->att, 3, H, T, T);
        for (int h = 0; h < H; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f,
                        A->att + (size_t)h * T * T, T, A->v + (h / kv_mul) * hd, kv_dim, 0.0f,
                        A->z + h * hd, q_dim);
        FWD(KS_HOOK_ATTN_Z, l, A->z, 3, T, H, hd);
        float *o = g->dbuf; /* the sublayer output, before it is added */
        linear_fwd(o, A->z, w->wo.data, T, q_dim, D);
        FWD(KS_HOOK_ATTN_OUT, l, o, 2, T, D, 0);
        for (size_t i = 0; i < (size_t)T * D; i++) A->mid[i] = A->x[i] + o[i];
        FWD(KS_HOOK_RESID_MID, l, A->mid, 2, T, D, 0);
        rms_fwd(A->xn2, A->mid, w->ffn_norm, T, D, eps);
        FWD(KS_HOOK_LN2_NORMALIZED, l, A->xn2, 2, T, D, 0);
        linear_fwd(A->gate, A->xn2, w->w_gate.data, T, D, hid);
        linear_fwd(A->up, A->xn2, w->w_up.data, T, D, hid);
        FWD(KS_HOOK_MLP_PRE, l, A->gate, 2, T, hid, 0);
        FWD(KS_HOOK_MLP_PRE_LINEAR, l, A->up, 2, T, hid, 0);
        for (size_t i = 0; i < (size_t)T * hid; i++) g->act[i] = silu(A->gate[i]) * A->up[i];
        FWD(KS_HOOK_MLP_POST, l, g->act, 2, T, hid, 0);
        linear_fwd(o, g->act, w->w_down.data, T, hid, D);
        FWD(KS_HOOK_MLP_OUT, l, o, 2, T, D, 0);
        float *post = l + 1 < c->n_layers ? g->la[l + 1].x : g->xf;
        for (size_t i = 0; i < (size_t)T * D; i++) post[i] = A->mid[i] + o[i];
        FWD(KS_HOOK_RESID_POST, l, post, 2, T, D, 0);
    }
    rms_fwd(g->xnf, g->xf, m->final_norm, T, D, eps);
    FWD(KS_HOOK_LN_FINAL_NORMALIZED, -1, g->xnf, 2, T, D, 0);
    linear_fwd(g->logits, g->xnf, m->output.data, T, D, V);
    FWD(KS_HOOK_LOGITS, -1, g->logits, 2, T, V, 0);
    return KS_OK;
}

const float *ks_grad_logits(const ks_grad *g, int *T, int *V) {
    if (T) *T = g->T;
    if (V) *V = g->m->cfg.vocab_size;
    return g->T ? g->logits : NULL;
}

/* ------------------------------------------------------------------ backward */

ks_status ks_grad_backward(ks_grad *g, const float *dlogits, ks_error *err) {
    if (!g || !dlogits) return ks_error_set(err, KS_ERR_ARG, "ks_grad_backward: NULL argument");
    if (!g->T) return ks_error_set(err, KS_ERR_ARG, "ks_grad_backward: no forward to go back through");
    const ks_model *m = g->m;
    const ks_config *c = &m->cfg;
    const int T = g->T, D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    const int hid = c->hidden_dim, V = c->vocab_size, kv_mul = H / KV;
    const int q_dim = H * hd, kv_dim = KV * hd;
    const float scale = 1.0f / sqrtf((float)hd), eps = c->rms_eps;
    const bool pg = g->param_grads;
    const size_t TD = (size_t)T * D;

    memcpy(g->dlog, dlogits, (size_t)T * V * sizeof(float));
    BWD(KS_HOOK_LOGITS, -1, g->dlog, 2, T, V, 0);
    /* logits = xnf · W_out^T; xnf = rms(xf) */
    linear_bwd(g->dxn, 0.0f, pg ? g->g_out : NULL, g->dlog, g->xnf, m->output.data, T, D, V);
    BWD(KS_HOOK_LN_FINAL_NORMALIZED, -1, g->dxn, 2, T, D, 0);
    memset(g->dres, 0, TD * sizeof(float));
    rms_bwd(g->dres, pg ? g->g_final_norm : NULL, g->dxn, g->xf, m->final_norm, T, D, eps);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const ks_layer_weights *w = &m->layers[l];
        const layer_act *A = &g->la[l];
        layer_grad *G = pg ? &g->lg[l] : NULL;
        /* dres: d resid_post of layer l */
        BWD(KS_HOOK_RESID_POST, l, g->dres, 2, T, D, 0);

        /* MLP: post = mid + W_down (silu(gate) ⊙ up) */
        memcpy(g->dbuf, g->dres, TD * sizeof(float));
        BWD(KS_HOOK_MLP_OUT, l, g->dbuf, 2, T, D, 0);
        for (size_t i = 0; i < (size_t)T * hid; i++) g->act[i] = silu(A->gate[i]) * A->up[i];
        linear_bwd(g->dh1, 0.0f, G ? G->w_down : NULL, g->dbuf, g->act, w->w_down.data, T, hid, D);
        BWD(KS_HOOK_MLP_POST, l, g->dh1, 2, T, hid, 0);
        for (size_t i = 0; i < (size_t)T * hid; i++) {
            float da = g->dh1[i], gt = A->gate[i];
            g->dh2[i] = da * silu(gt);               /* d up */
            g->dh1[i] = da * A->up[i] * silu_grad(gt); /* d gate */
        }
        BWD(KS_HOOK_MLP_PRE, l, g->dh1, 2, T, hid, 0);
        BWD(KS_HOOK_MLP_PRE_LINEAR, l, g->dh2, 2, T, hid, 0);
        linear_bwd(g->dxn, 0.0f, G ? G->w_gate : NULL, g->dh1, A->xn2, w->w_gate.data, T, D, hid);
        linear_bwd(g->dxn, 1.0f, G ? G->w_up : NULL, g->dh2, A->xn2, w->w_up.data, T, D, hid);
        BWD(KS_HOOK_LN2_NORMALIZED, l, g->dxn, 2, T, D, 0);
        memcpy(g->dmid, g->dres, TD * sizeof(float));
        rms_bwd(g->dmid, G ? G->ffn_norm : NULL, g->dxn, A->mid, w->ffn_norm, T, D, eps);
        BWD(KS_HOOK_RESID_MID, l, g->dmid, 2, T, D, 0);

        /* attention: mid = x + W_o z */
        memcpy(g->dbuf, g->dmid, TD * sizeof(float));
        BWD(KS_HOOK_ATTN_OUT, l, g->dbuf, 2, T, D, 0);
        linear_bwd(g->dz, 0.0f, G ? G->wo : NULL, g->dbuf, A->z, w->wo.data, T, q_dim, D);
        BWD(KS_HOOK_ATTN_Z, l, g->dz, 3, T, H, hd);
        /* z_h = P_h V_g: dP_h = dz_h V_g^T; dV_g += P_h^T dz_h */
        memset(g->dv, 0, (size_t)T * kv_dim * sizeof(float));
        for (int h = 0; h < H; h++) {
            const int gi = h / kv_mul;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, g->dz + h * hd,
                        q_dim, A->v + gi * hd, kv_dim, 0.0f, g->dP + (size_t)h * T * T, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f,
                        A->att + (size_t)h * T * T, T, g->dz + h * hd, q_dim, 1.0f,
                        g->dv + gi * hd, kv_dim);
        }
        BWD(KS_HOOK_ATTN_PATTERN, l, g->dP, 3, H, T, T);
        /* softmax: dS = P ⊙ (dP − Σ_u P dP), in place over dP; masked entries have P = 0 */
        for (size_t r = 0; r < (size_t)H * T; r++) {
            const float *P = A->att + r * T;
            float *d = g->dP + r * T;
            double s = 0.0;
            for (int u = 0; u < T; u++) s += (double)P[u] * d[u];
            for (int u = 0; u < T; u++) d[u] = P[u] * (d[u] - (float)s);
        }
        BWD(KS_HOOK_ATTN_SCORES, l, g->dP, 3, H, T, T);
        /* S_h = scale Q_h K_g^T: dQ_h = scale dS_h K_g; dK_g += scale dS_h^T Q_h */
        memset(g->dk, 0, (size_t)T * kv_dim * sizeof(float));
        for (int h = 0; h < H; h++) {
            const int gi = h / kv_mul;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale,
                        g->dP + (size_t)h * T * T, T, A->k + gi * hd, kv_dim, 0.0f,
                        g->dq + h * hd, q_dim);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale,
                        g->dP + (size_t)h * T * T, T, A->q + h * hd, q_dim, 1.0f,
                        g->dk + gi * hd, kv_dim);
        }
        BWD(KS_HOOK_ATTN_ROT_Q, l, g->dq, 3, T, H, hd);
        BWD(KS_HOOK_ATTN_ROT_K, l, g->dk, 3, T, KV, hd);
        rope_apply(g->dq, T, H, hd, c->rope_style, g->cosv, g->sinv, true);
        rope_apply(g->dk, T, KV, hd, c->rope_style, g->cosv, g->sinv, true);
        BWD(KS_HOOK_ATTN_Q, l, g->dq, 3, T, H, hd);
        BWD(KS_HOOK_ATTN_K, l, g->dk, 3, T, KV, hd);
        BWD(KS_HOOK_ATTN_V, l, g->dv, 3, T, KV, hd);
        linear_bwd(g->dxn, 0.0f, G ? G->wq : NULL, g->dq, A->xn1, w->wq.data, T, D, q_dim);
        linear_bwd(g->dxn, 1.0f, G ? G->wk : NULL, g->dk, A->xn1, w->wk.data, T, D, kv_dim);
        linear_bwd(g->dxn, 1.0f, G ? G->wv : NULL, g->dv, A->xn1, w->wv.data, T, D, kv_dim);
        BWD(KS_HOOK_LN1_NORMALIZED, l, g->dxn, 2, T, D, 0);
        memcpy(g->dres, g->dmid, TD * sizeof(float));
        rms_bwd(g->dres, G ? G->attn_norm : NULL, g->dxn, A->x, w->attn_norm, T, D, eps);
        BWD(KS_HOOK_RESID_PRE, l, g->dres, 2, T, D, 0);
    }
    BWD(KS_HOOK_EMBED, -1, g->dres, 2, T, D, 0);
    if (pg)
        for (int t = 0; t < T; t++) {
            float *ge = g->g_emb + (size_t)g->tokens[t] * D;
            const float *d = g->dres + (size_t)t * D;
            for (int i = 0; i < D; i++) ge[i] += d[i];
        }
    (void)err;
    return KS_OK;
}

/* ------------------------------------------------------------------ parameter gradients */

const float *ks_grad_param(const ks_grad *g, const char *name, size_t *n) {
    if (!g || !g->gbuf || !name) return NULL;
    const ks_config *c = &g->m->cfg;
    size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    const float *p = NULL;
    size_t cnt = 0;
    int l = -1, used = 0;
    char rest[64];
    if (!strcmp(name, "model.embed_tokens.weight")) {
        p = g->g_emb;
        cnt = V * D;
    } else if (!strcmp(name, "lm_head.weight")) {
        if (g->g_out == g->g_emb) return NULL; /* tied: the embedding's gradient holds both */
        p = g->g_out;
        cnt = V * D;
    } else if (!strcmp(name, "model.norm.weight")) {
        p = g->g_final_norm;
        cnt = D;
    } else if (sscanf(name, "model.layers.%d.%63s%n", &l, rest, &used) == 2 &&
               (size_t)used == strlen(name) && l >= 0 && l < c->n_layers) {
        const layer_grad *L = &g->lg[l];
        static const struct {
            const char *suffix;
            size_t off;
        } map[] = {
            {"input_layernorm.weight", offsetof(layer_grad, attn_norm)},
            {"post_attention_layernorm.weight", offsetof(layer_grad, ffn_norm)},
            {"self_attn.q_proj.weight", offsetof(layer_grad, wq)},
            {"self_attn.k_proj.weight", offsetof(layer_grad, wk)},
            {"self_attn.v_proj.weight", offsetof(layer_grad, wv)},
            {"self_attn.o_proj.weight", offsetof(layer_grad, wo)},
            {"mlp.gate_proj.weight", offsetof(layer_grad, w_gate)},
            {"mlp.up_proj.weight", offsetof(layer_grad, w_up)},
            {"mlp.down_proj.weight", offsetof(layer_grad, w_down)},
        };
        const size_t counts[] = {D, D, q * D, kv * D, kv * D, D * q, hid * D, hid * D, D * hid};
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            if (!strcmp(rest, map[k].suffix)) {
                p = *(float *const *)((const char *)L + map[k].off);
                cnt = counts[k];
            }
    }
    if (p && n) *n = cnt;
    return p;
}

/* ------------------------------------------------------------------ objectives */

double ks_objective_logprob(const float *logits, int T, int V, const int *targets,
                            float *dlogits) {
    double J = 0.0;
    for (int t = 0; t < T; t++) {
        const float *z = logits + (size_t)t * V;
        float *d = dlogits ? dlogits + (size_t)t * V : NULL;
        int y = targets[t];
        if (y < 0 || y >= V) {
            if (d) memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++)
            if (z[i] > mx) mx = z[i];
        double sum = 0.0;
        for (int i = 0; i < V; i++) sum += exp((double)z[i] - mx);
        double lse = mx + log(sum);
        J += z[y] - lse;
        if (d) {
            for (int i = 0; i < V; i++) d[i] = (float)-exp((double)z[i] - lse);
            d[y] += 1.0f;
        }
    }
    return J;
}

double ks_objective_logit_diff(const float *logits, int T, int V, int pos, int a, int b,
                               float *dlogits) {
    if (dlogits) memset(dlogits, 0, (size_t)T * V * sizeof(float));
    if (pos < 0 || pos >= T || a < 0 || a >= V || b < 0 || b >= V) return NAN;
    if (dlogits) {
        dlogits[(size_t)pos * V + a] += 1.0f;
        dlogits[(size_t)pos * V + b] -= 1.0f;
    }
    return (double)logits[(size_t)pos * V + a] - logits[(size_t)pos * V + b];
}
