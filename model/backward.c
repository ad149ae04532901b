/* backward.c — gradients of a scalar objective through the whole LLaMA forward: every
 * parameter (optional) and every hook point, on any backend with the backward ops of
 * backend.h (the CPU reference, "cpu-copy", CUDA).
 *
 * A ks_grad runs its own full-sequence forward (one chunk of T tokens, no KV cache) that keeps
 * what the backward needs, layer by layer, with the numerics of forward.c (HF LlamaForCausalLM,
 * eager attention: the pattern is kept, f32 activations; weights are used in their own dtype,
 * as the forward uses them). The caller turns the logits into an objective and its gradient
 * (ks_objective_*), and ks_grad_backward propagates that gradient back.
 *
 * Each op's backward is a backend op written next to the forward op it inverts (backend_cpu.c,
 * backend_cuda.cu; STYLE.md: forward/backward pairs); this file strings them together. Contract: forward outputs are `=`; activation gradients are `=` per backward call
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

#include "backend.h"

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
    ks_backend *be;
    bool dev;  /* backend memory is not host memory (to_host/from_host copy) */
    bool fast; /* 16-bit model: the attention GEMMs may run in bf16 (gemm's fast) */
    bool param_grads;
    ks_hook_fn fwd_hook, bwd_hook;
    void *hook_user;
    bool hook_lost; /* a hooked tensor could not be staged (host memory): the call fails */

    /* activations of the last forward, for T tokens (backend memory, one arena) */
    int T, cap_T;
    int *tokens;
    float *arena;
    layer_act *la;
    float *xf, *xnf, *logits; /* (T, D), (T, D), (T, V) */
    float *cosv, *sinv, *nsinv; /* (T, hd/2); nsinv = -sinv rotates back (the rope's backward) */

    /* backward scratch, sized with the arena */
    float *dres, *dmid, *dbuf, *dxn, *dz, *dq, *dk, *dv, *dh1, *dh2, *dP, *dlog, *act;

    /* host memory of a device backend: logits, the rope tables being built, hook staging,
     * one parameter gradient read back (ks_grad_param) */
    float *logits_host, *table;
    float *stage;
    size_t stage_cap;
    float *gbuf_host; /* the parameter gradients' host copy, laid out as gbuf */

    /* parameter gradients (param_grads), laid out like the model (backend memory) */
    float *gbuf;
    size_t gbuf_n;
    float *g_emb, *g_out, *g_final_norm;
    layer_grad *lg;
};

/* ------------------------------------------------------------------ hooks */


/* Offer t (editable) to fn: asked first, then delivered. A device backend's tensor is staged
 * through host memory (pinned where the backend has some) and copied back after the call. */
static void fire(ks_grad *g, ks_hook_fn fn, ks_hook_point p, int layer, float *data, int ndim,
                 int64_t d0, int64_t d1, int64_t d2) {
    if (!fn) return;
    char name[96];
    ks_hook_name(p, layer, name, sizeof name);
    ks_hook_tensor t = {.name = name, .point = p, .layer = layer, .data = NULL, .ndim = ndim,
                        .shape = {d0, d1, d2, 0}, .pos0 = 0};
    if (!fn(&t, true, g->hook_user)) return;
    const ks_backend_i *bi = g->be->i;
    if (!g->dev) {
        t.data = data;
        fn(&t, false, g->hook_user);
        return;
    }
    size_t n = (size_t)d0 * (size_t)d1 * (size_t)(ndim > 2 ? d2 : 1);
    if (!ks_backend_host_reserve(g->be, &g->stage, &g->stage_cap, n)) {
        g->hook_lost = true; /* reported by the call, not handed garbage */
        return;
    }
    bi->to_host(g->be, g->stage, data, n);
    t.data = g->stage;
    fn(&t, false, g->hook_user);
    bi->from_host(g->be, data, g->stage, n);
}

#define FWD(p, l, data, nd, a, b, c) fire(g, g->fwd_hook, p, l, data, nd, a, b, c)
#define BWD(p, l, data, nd, a, b, c) fire(g, g->bwd_hook, p, l, data, nd, a, b, c)

/* The backend's first error, or a lost hook tensor, after a forward or backward. */
static ks_status finish(ks_grad *g, const char *what, ks_error *err) {
    if (g->be->i->check) {
        ks_status st = g->be->i->check(g->be, err);
        if (st) return st;
    }
    if (g->hook_lost) {
        g->hook_lost = false;
        return ks_error_set(err, KS_ERR_NOMEM, "%s: out of host memory staging a hooked tensor "
                            "of the %s backend; the hook did not see it", what, g->be->i->name);
    }
    return KS_OK;
}

/* ------------------------------------------------------------------ lifecycle */

static bool backward_ops(const ks_backend_i *i) {
    return i->gemm && i->matmul_t && i->matmul_dw && i->rmsnorm_bwd && i->causal_mask &&
           i->softmax_bwd && i->swiglu_bwd && i->embed_bwd && i->copy && i->zero;
}


/* The parameter gradients laid out like the model from base, those the options' filter keeps
 * (all without one); the others' pointers stay NULL. Returns the floats taken; base NULL only
 * counts. A tied head shares the embedding's gradient. */
static size_t layout_grads(ks_grad *g, float *base, const ks_grad_options *o) {
    const ks_model *m = g->m;
    const ks_config *c = &m->cfg;
    size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    bool tied = m->output.data == m->tok_embeddings.data;
    size_t used = 0;
    char name[128];
#define TAKE(dst, n, ...)                                                                  \
    do {                                                                                   \
        snprintf(name, sizeof name, __VA_ARGS__);                                          \
        bool keep = !o || !o->param_filter || o->param_filter(name, o->param_filter_user); \
        float *at = keep && base ? base + used : NULL;                                     \
        if (keep) used += (n);                                                             \
        dst = at;                                                                          \
    } while (0)
    TAKE(g->g_emb, V * D, "model.embed_tokens.weight");
    if (tied)
        g->g_out = g->g_emb;
    else
        TAKE(g->g_out, V * D, "lm_head.weight");
    TAKE(g->g_final_norm, D, "model.norm.weight");
    for (int l = 0; l < c->n_layers; l++) {
        layer_grad *L = &g->lg[l];
        TAKE(L->attn_norm, D, "model.layers.%d.input_layernorm.weight", l);
        TAKE(L->ffn_norm, D, "model.layers.%d.post_attention_layernorm.weight", l);
        TAKE(L->wq, q * D, "model.layers.%d.self_attn.q_proj.weight", l);
        TAKE(L->wk, kv * D, "model.layers.%d.self_attn.k_proj.weight", l);
        TAKE(L->wv, kv * D, "model.layers.%d.self_attn.v_proj.weight", l);
        TAKE(L->wo, D * q, "model.layers.%d.self_attn.o_proj.weight", l);
        TAKE(L->w_gate, hid * D, "model.layers.%d.mlp.gate_proj.weight", l);
        TAKE(L->w_up, hid * D, "model.layers.%d.mlp.up_proj.weight", l);
        TAKE(L->w_down, D * hid, "model.layers.%d.mlp.down_proj.weight", l);
    }
#undef TAKE
    return used;
}

ks_status ks_grad_create(const ks_model *m, const ks_grad_options *o, ks_grad **out,
                         ks_error *err) {
    if (!m || !out) return ks_error_set(err, KS_ERR_ARG, "ks_grad_create: NULL argument");
    *out = NULL;
    const ks_config *c = &m->cfg;
    if (c->head_dim / 2 > 512)
        return ks_error_set(err, KS_ERR_RANGE, "gradients: head_dim %d: at most 1024", c->head_dim);
    ks_grad *g = calloc(1, sizeof *g);
    if (!g) return ks_error_set(err, KS_ERR_NOMEM, "gradients: out of memory");
    g->m = m;
    g->param_grads = !o || o->param_grads;
    g->fast = c->n_layers > 0 && m->layers[0].wq.dtype != KS_DTYPE_F32;
    const char *bname = o && o->backend ? o->backend : "cpu";
    ks_status st = ks_backend_open(m, bname, &g->be, err);
    if (st) {
        free(g);
        return st;
    }
    if (!backward_ops(g->be->i)) {
        ks_grad_free(g);
        return ks_error_set(err, KS_ERR_BACKEND, "backend '%s' has no backward pass", bname);
    }
    g->dev = g->be->i->to_host != NULL;
    if (g->be->i->prepare && (st = g->be->i->prepare(g->be, m, err))) {
        ks_grad_free(g);
        return st;
    }
    /* lg always: without parameter gradients its pointers stay NULL, and the backward skips
     * every parameter product whose gradient pointer is NULL */
    g->la = calloc((size_t)c->n_layers, sizeof *g->la);
    g->lg = calloc((size_t)c->n_layers, sizeof *g->lg);
    if (!g->la || !g->lg) goto nomem;
    if (g->param_grads) {
        g->gbuf_n = layout_grads(g, NULL, o); /* count, then place */
        g->gbuf = g->be->i->alloc(g->be, (g->gbuf_n ? g->gbuf_n : 1) * sizeof(float)); /* zeroed */
        if (!g->gbuf) {
            ks_grad_free(g);
            return ks_error_set(err, KS_ERR_NOMEM, "gradients: out of %s memory for the "
                                "parameter gradients (%zu MB)", g->dev ? "device" : "host",
                                g->gbuf_n * sizeof(float) >> 20);
        }
        layout_grads(g, g->gbuf, o);
    }
    *out = g;
    return KS_OK;
nomem:
    ks_grad_free(g);
    return ks_error_set(err, KS_ERR_NOMEM, "gradients: out of memory");
}

void ks_grad_free(ks_grad *g) {
    if (!g) return;
    if (g->be) {
        if (g->arena) g->be->i->release(g->be, g->arena);
        if (g->gbuf) g->be->i->release(g->be, g->gbuf);
        ks_backend_host_free(g->be, g->stage);
        g->be->i->destroy(g->be);
    }
    free(g->tokens);
    free(g->logits_host);
    free(g->table);
    free(g->gbuf_host);
    free(g->la);
    free(g->lg);
    free(g);
}

const ks_model *ks_grad_model(const ks_grad *g) { return g->m; }

const char *ks_grad_backend(const ks_grad *g) { return g->be->i->name; }

const float *ks_model_embedding_row(const ks_model *m, int id) {
    if (!m || id < 0 || id >= m->cfg.vocab_size || m->tok_embeddings.dtype != KS_DTYPE_F32)
        return NULL;
    return (const float *)m->tok_embeddings.data + (size_t)id * m->cfg.dim;
}

ks_status ks_model_embedding_f32(const ks_model *m, int id, float *out, ks_error *err) {
    if (!m || !out) return ks_error_set(err, KS_ERR_ARG, "ks_model_embedding_f32: NULL argument");
    if (id < 0 || id >= m->cfg.vocab_size)
        return ks_error_set(err, KS_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", id,
                            m->cfg.vocab_size - 1);
    size_t rb = ks_dtype_row_bytes(m->tok_embeddings.dtype, (size_t)m->cfg.dim);
    ks_dtype_to_f32(m->tok_embeddings.dtype,
                    (const unsigned char *)m->tok_embeddings.data + (size_t)id * rb, out,
                    (size_t)m->cfg.dim);
    return KS_OK;
}

void ks_grad_set_hooks(ks_grad *g, ks_hook_fn forward, ks_hook_fn backward, void *user) {
    g->fwd_hook = forward;
    g->bwd_hook = backward;
    g->hook_user = user;
}

void ks_grad_zero(ks_grad *g) {
    if (g->gbuf) g->be->i->zero(g->be, g->gbuf, g->gbuf_n);
}

/* host -> backend */
static void put(ks_grad *g, float *dst, const float *host, size_t n) {
    if (g->dev)
        g->be->i->from_host(g->be, dst, host, n);
    else
        memcpy(dst, host, n * sizeof(float));
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
    size_t total = per_layer * (size_t)c->n_layers + 2 * t * D + t * V + 3 * t * half + scratch;
    if (g->arena) g->be->i->release(g->be, g->arena);
    free(g->tokens);
    free(g->logits_host);
    free(g->table);
    g->arena = NULL;
    g->tokens = NULL;
    g->logits_host = g->table = NULL;
    g->cap_T = 0;
    float *a = g->be->i->alloc(g->be, total * sizeof(float));
    g->tokens = malloc(t * sizeof(int));
    g->table = malloc(2 * t * half * sizeof(float) + 1);
    if (g->dev) g->logits_host = malloc(t * V * sizeof(float));
    if (!a || !g->tokens || !g->table || (g->dev && !g->logits_host)) {
        if (a) g->be->i->release(g->be, a);
        return ks_error_set(err, KS_ERR_NOMEM,
                            "gradients: out of %s memory keeping the activations of %d tokens "
                            "(%zu MB)",
                            a ? "host" : g->dev ? "device" : "host", T,
                            total * sizeof(float) >> 20);
    }
    g->arena = a;
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
    TAKE(g->nsinv, t * half);
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

/* ------------------------------------------------------------------ attention
 * Query head h reads kv head h / kv_mul, so h = gi * kv_mul + j: for each j < kv_mul the heads
 * j, j + kv_mul, … form one strided batch over the kv heads gi (as backend_cuda.cu's
 * attention scores). q, z (T, H*hd) and k, v (T, KV*hd) are row-major per token; a head's
 * (T, hd) slice has row stride H*hd or KV*hd. */

typedef struct {
    int T, H, KV, kv_mul, hd, q_dim, kv_dim;
    long long tt; /* T*T: one head's (T, T) block */
} att_dims;

/* S_h = scale Q_h K_g^T, masked; then the hooks' scores, softmax, pattern; Z_h = P_h V_g */
static void attn_fwd(ks_grad *g, const att_dims *a, layer_act *A, int l, float scale) {
    const ks_backend_i *bi = g->be->i;
    ks_backend *be = g->be;
    const int T = a->T, hd = a->hd, km = a->kv_mul;
    for (int j = 0; j < km; j++)
        bi->gemm(be, false, true, T, T, hd, scale, A->q + (size_t)j * hd, a->q_dim,
                 (long long)km * hd, A->k, a->kv_dim, hd, 0.0f, A->att + j * a->tt, T, km * a->tt,
                 a->KV, g->fast);
    bi->causal_mask(be, A->att, a->H, T, T, 0);
    FWD(KS_HOOK_ATTN_SCORES, l, A->att, 3, a->H, T, T);
    bi->softmax(be, A->att, a->H * T, T);
    FWD(KS_HOOK_ATTN_PATTERN, l, A->att, 3, a->H, T, T);
    for (int j = 0; j < km; j++)
        bi->gemm(be, false, false, T, hd, T, 1.0f, A->att + j * a->tt, T, km * a->tt, A->v,
                 a->kv_dim, hd, 0.0f, A->z + (size_t)j * hd, a->q_dim, (long long)km * hd, a->KV,
                 g->fast);
}

/* From dz (g->dz) to dq, dk, dv (rotated q and k), with the pattern and scores hooks. */
static void attn_bwd(ks_grad *g, const att_dims *a, const layer_act *A, int l, float scale) {
    const ks_backend_i *bi = g->be->i;
    ks_backend *be = g->be;
    const int T = a->T, hd = a->hd, km = a->kv_mul;
    const long long sq = (long long)km * hd, sp = km * a->tt;
    /* Z_h = P_h V_g: dP_h = dZ_h V_g^T; dV_g = Σ_j P_h^T dZ_h */
    for (int j = 0; j < km; j++) {
        bi->gemm(be, false, true, T, T, hd, 1.0f, g->dz + (size_t)j * hd, a->q_dim, sq, A->v,
                 a->kv_dim, hd, 0.0f, g->dP + j * a->tt, T, sp, a->KV, g->fast);
        bi->gemm(be, true, false, T, hd, T, 1.0f, A->att + j * a->tt, T, sp,
                 g->dz + (size_t)j * hd, a->q_dim, sq, j ? 1.0f : 0.0f, g->dv, a->kv_dim, hd,
                 a->KV, g->fast);
    }
    BWD(KS_HOOK_ATTN_PATTERN, l, g->dP, 3, a->H, T, T);
    /* masked entries have P = 0, so their dS is 0 */
    bi->softmax_bwd(be, g->dP, A->att, a->H * T, T);
    BWD(KS_HOOK_ATTN_SCORES, l, g->dP, 3, a->H, T, T);
    /* S_h = scale Q_h K_g^T: dQ_h = scale dS_h K_g; dK_g = Σ_j scale dS_h^T Q_h */
    for (int j = 0; j < km; j++) {
        bi->gemm(be, false, false, T, hd, T, scale, g->dP + j * a->tt, T, sp, A->k, a->kv_dim, hd,
                 0.0f, g->dq + (size_t)j * hd, a->q_dim, sq, a->KV, g->fast);
        bi->gemm(be, true, false, T, hd, T, scale, g->dP + j * a->tt, T, sp,
                 A->q + (size_t)j * hd, a->q_dim, sq, j ? 1.0f : 0.0f, g->dk, a->kv_dim, hd,
                 a->KV, g->fast);
    }
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
    g->T = 0;
    ks_status st = reserve(g, T, err);
    if (st) return st;
    memcpy(g->tokens, tokens, (size_t)T * sizeof(int));
    const ks_backend_i *bi = g->be->i;
    ks_backend *be = g->be;
    const int D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    const int hid = c->hidden_dim, V = c->vocab_size, half = hd / 2;
    const int q_dim = H * hd, kv_dim = KV * hd;
    const float scale = 1.0f / sqrtf((float)hd), eps = c->rms_eps;
    const size_t TD = (size_t)T * D, TH = (size_t)T * hid;
    const att_dims ad = {T, H, KV, H / KV, hd, q_dim, kv_dim, (long long)T * T};

    float inv_freq[512];
    ks_rope_inv_freq(c, T, inv_freq);
    float *ct = g->table, *stab = g->table + (size_t)T * half;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < half; j++) {
            float f = (float)t * inv_freq[j];
            ct[(size_t)t * half + j] = cosf(f);
            stab[(size_t)t * half + j] = sinf(f);
        }
    put(g, g->cosv, ct, (size_t)T * half);
    put(g, g->sinv, stab, (size_t)T * half);
    for (size_t i = 0; i < (size_t)T * half; i++) stab[i] = -stab[i];
    put(g, g->nsinv, stab, (size_t)T * half);

    float *x = g->la[0].x;
    bi->embed(be, x, &m->tok_embeddings, tokens, T, D);
    FWD(KS_HOOK_EMBED, -1, x, 2, T, D, 0);

    for (int l = 0; l < c->n_layers; l++) {
        const ks_layer_weights *w = &m->layers[l];
        layer_act *A = &g->la[l];
        /* A->x: the embeddings, or the previous layer's resid_post written there */
        FWD(KS_HOOK_RESID_PRE, l, A->x, 2, T, D, 0);
        bi->rmsnorm(be, A->xn1, A->x, w->attn_norm, T, D, eps);
        FWD(KS_HOOK_LN1_NORMALIZED, l, A->xn1, 2, T, D, 0);
        float *qkv[3] = {A->q, A->k, A->v};
        const ks_weight *wqkv[3] = {&w->wq, &w->wk, &w->wv};
        const int oqkv[3] = {q_dim, kv_dim, kv_dim};
        bi->matmul(be, 3, qkv, wqkv, oqkv, A->xn1, T, D);
        FWD(KS_HOOK_ATTN_Q, l, A->q, 3, T, H, hd);
        FWD(KS_HOOK_ATTN_K, l, A->k, 3, T, KV, hd);
        FWD(KS_HOOK_ATTN_V, l, A->v, 3, T, KV, hd);
        bi->rope(be, A->q, T, H, hd, c->rope_style, g->cosv, g->sinv);
        bi->rope(be, A->k, T, KV, hd, c->rope_style, g->cosv, g->sinv);
        FWD(KS_HOOK_ATTN_ROT_Q, l, A->q, 3, T, H, hd);
        FWD(KS_HOOK_ATTN_ROT_K, l, A->k, 3, T, KV, hd);
        attn_fwd(g, &ad, A, l, scale);
        FWD(KS_HOOK_ATTN_Z, l, A->z, 3, T, H, hd);
        float *o = g->dbuf; /* the sublayer output, before it is added */
        bi->matmul(be, 1, &o, (const ks_weight *const[]){&w->wo}, &D, A->z, T, q_dim);
        FWD(KS_HOOK_ATTN_OUT, l, o, 2, T, D, 0);
        bi->copy(be, A->mid, A->x, TD);
        bi->add(be, A->mid, o, TD);
        FWD(KS_HOOK_RESID_MID, l, A->mid, 2, T, D, 0);
        bi->rmsnorm(be, A->xn2, A->mid, w->ffn_norm, T, D, eps);
        FWD(KS_HOOK_LN2_NORMALIZED, l, A->xn2, 2, T, D, 0);
        float *gu[2] = {A->gate, A->up};
        const ks_weight *wgu[2] = {&w->w_gate, &w->w_up};
        const int ogu[2] = {hid, hid};
        bi->matmul(be, 2, gu, wgu, ogu, A->xn2, T, D);
        FWD(KS_HOOK_MLP_PRE, l, A->gate, 2, T, hid, 0);
        FWD(KS_HOOK_MLP_PRE_LINEAR, l, A->up, 2, T, hid, 0);
        bi->copy(be, g->act, A->up, TH);
        bi->swiglu(be, g->act, A->gate, TH);
        FWD(KS_HOOK_MLP_POST, l, g->act, 2, T, hid, 0);
        bi->matmul(be, 1, &o, (const ks_weight *const[]){&w->w_down}, &D, g->act, T, hid);
        FWD(KS_HOOK_MLP_OUT, l, o, 2, T, D, 0);
        float *post = l + 1 < c->n_layers ? g->la[l + 1].x : g->xf;
        bi->copy(be, post, A->mid, TD);
        bi->add(be, post, o, TD);
        FWD(KS_HOOK_RESID_POST, l, post, 2, T, D, 0);
    }
    bi->rmsnorm(be, g->xnf, g->xf, m->final_norm, T, D, eps);
    FWD(KS_HOOK_LN_FINAL_NORMALIZED, -1, g->xnf, 2, T, D, 0);
    bi->matmul(be, 1, &g->logits, (const ks_weight *const[]){&m->output}, &V, g->xnf, T, D);
    FWD(KS_HOOK_LOGITS, -1, g->logits, 2, T, V, 0);
    if (g->dev) bi->to_host(be, g->logits_host, g->logits, (size_t)T * V);
    if ((st = finish(g, "gradients: forward", err))) return st;
    g->T = T;
    return KS_OK;
}

const float *ks_grad_logits(const ks_grad *g, int *T, int *V) {
    if (T) *T = g->T;
    if (V) *V = g->m->cfg.vocab_size;
    if (!g->T) return NULL;
    return g->dev ? g->logits_host : g->logits;
}

/* ------------------------------------------------------------------ backward */

ks_status ks_grad_backward(ks_grad *g, const float *dlogits, ks_error *err) {
    if (!g || !dlogits) return ks_error_set(err, KS_ERR_ARG, "ks_grad_backward: NULL argument");
    if (!g->T) return ks_error_set(err, KS_ERR_ARG, "ks_grad_backward: no forward to go back through");
    const ks_model *m = g->m;
    const ks_config *c = &m->cfg;
    const ks_backend_i *bi = g->be->i;
    ks_backend *be = g->be;
    const int T = g->T, D = c->dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    const int hid = c->hidden_dim, V = c->vocab_size;
    const int q_dim = H * hd, kv_dim = KV * hd;
    const float scale = 1.0f / sqrtf((float)hd), eps = c->rms_eps;
    const size_t TD = (size_t)T * D, TH = (size_t)T * hid;
    const att_dims ad = {T, H, KV, H / KV, hd, q_dim, kv_dim, (long long)T * T};

    put(g, g->dlog, dlogits, (size_t)T * V);
    BWD(KS_HOOK_LOGITS, -1, g->dlog, 2, T, V, 0);
    /* logits = xnf · W_out^T; xnf = rms(xf) */
    bi->matmul_t(be, g->dxn, &m->output, g->dlog, T, D, V, 0.0f);
    if (g->g_out) bi->matmul_dw(be, g->g_out, &m->output, g->dlog, g->xnf, T, D, V);
    BWD(KS_HOOK_LN_FINAL_NORMALIZED, -1, g->dxn, 2, T, D, 0);
    bi->zero(be, g->dres, TD);
    bi->rmsnorm_bwd(be, g->dres, g->g_final_norm, g->dxn, g->xf, m->final_norm, T, D,
                    eps);

    for (int l = c->n_layers - 1; l >= 0; l--) {
        const ks_layer_weights *w = &m->layers[l];
        const layer_act *A = &g->la[l];
        const layer_grad *G = &g->lg[l]; /* NULL pointers: not kept */
        /* dres: d resid_post of layer l */
        BWD(KS_HOOK_RESID_POST, l, g->dres, 2, T, D, 0);

        /* MLP: post = mid + W_down (silu(gate) ⊙ up) */
        bi->copy(be, g->dbuf, g->dres, TD);
        BWD(KS_HOOK_MLP_OUT, l, g->dbuf, 2, T, D, 0);
        bi->copy(be, g->act, A->up, TH);
        bi->swiglu(be, g->act, A->gate, TH);
        bi->matmul_t(be, g->dh1, &w->w_down, g->dbuf, T, hid, D, 0.0f);
        if (G->w_down) bi->matmul_dw(be, G->w_down, &w->w_down, g->dbuf, g->act, T, hid, D);
        BWD(KS_HOOK_MLP_POST, l, g->dh1, 2, T, hid, 0);
        bi->swiglu_bwd(be, g->dh1, g->dh2, g->dh1, A->gate, A->up, TH); /* d gate, d up */
        BWD(KS_HOOK_MLP_PRE, l, g->dh1, 2, T, hid, 0);
        BWD(KS_HOOK_MLP_PRE_LINEAR, l, g->dh2, 2, T, hid, 0);
        bi->matmul_t(be, g->dxn, &w->w_gate, g->dh1, T, D, hid, 0.0f);
        bi->matmul_t(be, g->dxn, &w->w_up, g->dh2, T, D, hid, 1.0f);
        if (G->w_gate) bi->matmul_dw(be, G->w_gate, &w->w_gate, g->dh1, A->xn2, T, D, hid);
        if (G->w_up) bi->matmul_dw(be, G->w_up, &w->w_up, g->dh2, A->xn2, T, D, hid);
        BWD(KS_HOOK_LN2_NORMALIZED, l, g->dxn, 2, T, D, 0);
        bi->copy(be, g->dmid, g->dres, TD);
        bi->rmsnorm_bwd(be, g->dmid, G->ffn_norm, g->dxn, A->mid, w->ffn_norm, T, D,
                        eps);
        BWD(KS_HOOK_RESID_MID, l, g->dmid, 2, T, D, 0);

        /* attention: mid = x + W_o z */
        bi->copy(be, g->dbuf, g->dmid, TD);
        BWD(KS_HOOK_ATTN_OUT, l, g->dbuf, 2, T, D, 0);
        bi->matmul_t(be, g->dz, &w->wo, g->dbuf, T, q_dim, D, 0.0f);
        if (G->wo) bi->matmul_dw(be, G->wo, &w->wo, g->dbuf, A->z, T, q_dim, D);
        BWD(KS_HOOK_ATTN_Z, l, g->dz, 3, T, H, hd);
        attn_bwd(g, &ad, A, l, scale);
        BWD(KS_HOOK_ATTN_ROT_Q, l, g->dq, 3, T, H, hd);
        BWD(KS_HOOK_ATTN_ROT_K, l, g->dk, 3, T, KV, hd);
        /* the backward of a rotation is the rotation by minus the angle */
        bi->rope(be, g->dq, T, H, hd, c->rope_style, g->cosv, g->nsinv);
        bi->rope(be, g->dk, T, KV, hd, c->rope_style, g->cosv, g->nsinv);
        BWD(KS_HOOK_ATTN_Q, l, g->dq, 3, T, H, hd);
        BWD(KS_HOOK_ATTN_K, l, g->dk, 3, T, KV, hd);
        BWD(KS_HOOK_ATTN_V, l, g->dv, 3, T, KV, hd);
        bi->matmul_t(be, g->dxn, &w->wq, g->dq, T, D, q_dim, 0.0f);
        bi->matmul_t(be, g->dxn, &w->wk, g->dk, T, D, kv_dim, 1.0f);
        bi->matmul_t(be, g->dxn, &w->wv, g->dv, T, D, kv_dim, 1.0f);
        if (G->wq) bi->matmul_dw(be, G->wq, &w->wq, g->dq, A->xn1, T, D, q_dim);
        if (G->wk) bi->matmul_dw(be, G->wk, &w->wk, g->dk, A->xn1, T, D, kv_dim);
        if (G->wv) bi->matmul_dw(be, G->wv, &w->wv, g->dv, A->xn1, T, D, kv_dim);
        BWD(KS_HOOK_LN1_NORMALIZED, l, g->dxn, 2, T, D, 0);
        bi->copy(be, g->dres, g->dmid, TD);
        bi->rmsnorm_bwd(be, g->dres, G->attn_norm, g->dxn, A->x, w->attn_norm, T, D,
                        eps);
        BWD(KS_HOOK_RESID_PRE, l, g->dres, 2, T, D, 0);
    }
    BWD(KS_HOOK_EMBED, -1, g->dres, 2, T, D, 0);
    if (g->g_emb) bi->embed_bwd(be, g->g_emb, g->dres, g->tokens, T, D);
    return finish(g, "gradients: backward", err);
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
    if (!p) return NULL;
    if (n) *n = cnt;
    if (!g->dev) return p;
    /* a device backend's gradient: read back into its place in the host copy (made on first
     * use: attribution on a GPU never needs one) */
    ks_grad *mg = (ks_grad *)g;
    if (!mg->gbuf_host && !(mg->gbuf_host = malloc(g->gbuf_n * sizeof(float)))) return NULL;
    float *h = g->gbuf_host + (p - g->gbuf);
    g->be->i->to_host(g->be, h, p, cnt);
    return h;
}

ks_status ks_grad_sync_params(ks_grad *g, ks_error *err) {
    if (!g || !g->dev || !g->gbuf) return KS_OK;
    if (!g->gbuf_host && !(g->gbuf_host = malloc(g->gbuf_n * sizeof(float))))
        return ks_error_set(err, KS_ERR_NOMEM, "gradients: out of host memory for a copy of the "
                            "parameter gradients (%zu MB)", g->gbuf_n * sizeof(float) >> 20);
    g->be->i->to_host(g->be, g->gbuf_host, g->gbuf, g->gbuf_n);
    return finish(g, "gradients: copying the parameter gradients", err);
}

ks_status ks_grad_weights_changed(ks_grad *g, ks_error *err) {
    if (!g || !g->be->i->reload) return KS_OK;
    return g->be->i->reload(g->be, err);
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
