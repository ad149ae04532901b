/* forward.c — the forward pass of a LLaMA-family model with hook points, written once
 * against the backend interface (backend.h); the CPU backend is the reference.
 *
 * A session owns the KV cache and the activation buffers of one sequence (in backend memory).
 * Prefill runs a chunk of B tokens at once (GEMMs); decode (B = 1) runs matrix-vector
 * products. Attention keeps the whole [head, query, key] score tensor of a chunk so that hooks
 * can read or edit exact scores and patterns.
 *
 * Numerics follow HF transformers' LlamaForCausalLM in f32 (eager attention): RMSNorm as
 * w * (x * rsqrt(mean(x^2) + eps)); rotary frequencies 1 / theta^(2i/d) computed in f32 and
 * scaled as config.json's rope_scaling says; softmax in f32 over scores scaled by
 * 1/sqrt(head_dim) with the causal mask at -inf; SwiGLU down(silu(gate x) * up x).
 *
 * Activations are overwritten (`=`); nothing accumulates across calls except the KV cache,
 * which is appended to. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"

/* A hooked tensor on its way to host memory (deferred delivery). */
typedef struct {
    ks_hook_point point;
    int layer, ndim, pos0;
    int64_t shape[3];
    float *host; /* in the pool */
} pend_hook;

/* The pinned pool for deferred hooks grows up to this (a 7B model's residual stream of a
 * 2048-token chunk is 32 MiB per layer); a tensor that does not fit even then is copied
 * synchronously. */
#define KS_HOOK_POOL_MAX ((size_t)1 << 30)

struct ks_session {
    const ks_model *m;
    ks_backend *be;
    int max_seq;   /* KV cache length */
    int max_batch; /* tokens per chunk */
    int pos;       /* tokens in the cache */
    ks_hook_fn hook;
    void *hook_user;
    bool hook_read_only; /* the hook never edits: staged copies are not copied back */
    ks_progress_fn progress;
    void *progress_user;

    /* backend memory. Per head, positions are contiguous so attention reads each head's keys
     * and values as one sequential stream. */
    float *k_cache; /* (n_layers, n_kv_heads, max_seq, head_dim)  keys after rotation */
    float *v_cache; /* (n_layers, n_kv_heads, max_seq, head_dim) */
    /* activations of one chunk of B <= max_batch tokens */
    float *x;     /* (B, dim)      residual stream */
    float *xn;    /* (B, dim)      normalised input of a sublayer */
    float *q;     /* (B, n_heads * head_dim) */
    float *k;     /* (B, kv_dim) */
    float *v;     /* (B, kv_dim) */
    float *z;     /* (B, n_heads * head_dim) */
    float *out;   /* (B, dim)      attention or MLP output */
    float *gate;  /* (B, hidden_dim) */
    float *up;    /* (B, hidden_dim) */
    float *cosv;  /* (B, head_dim / 2) */
    float *sinv;  /* (B, head_dim / 2) */
    float *att;   /* (n_heads, B, L) scores then pattern; grown on demand */
    size_t att_cap;
    float *logits_dev; /* (max_batch, vocab) only for backends whose memory is not host memory */

    /* host memory */
    float *inv_freq; /* (head_dim / 2) */
    float *table;    /* (2, B, head_dim / 2) cos and sin being built */
    float *stage;    /* hook staging for device backends; grown on demand */
    size_t stage_cap;
    /* read-only hooks of a device backend with to_host_async: tensors copied into pool
     * without waiting, delivered (in order) when the chunk ends or the pool is full */
    float *pool;
    size_t pool_cap, pool_used; /* floats */
    pend_hook *pend;
    int n_pend, cap_pend;
};

/* ------------------------------------------------------------------ helpers */

static float *balloc(ks_session *s, size_t n_floats) {
    return s->be->i->alloc(s->be, (n_floats ? n_floats : 1) * sizeof(float));
}

static void bfree(ks_session *s, void *p) {
    if (p) s->be->i->release(s->be, p);
}

/* host -> backend (a plain copy when backend memory is host memory) */
static void put(ks_session *s, float *dst, const float *host, size_t n) {
    if (s->be->i->from_host)
        s->be->i->from_host(s->be, dst, host, n);
    else
        memcpy(dst, host, n * sizeof(float));
}



/* Wait for the deferred copies and hand each tensor to the hook, in the order they were
 * hooked; deliver false (after an error) drops them instead. */
static void drain_hooks(ks_session *s, bool deliver) {
    if (!s->n_pend) return;
    const ks_backend_i *bi = s->be->i;
    bi->copies_wait(s->be);
    ks_error e = {0};
    if (deliver && bi->check && bi->check(s->be, &e)) deliver = false; /* the caller reports it */
    for (int i = 0; i < s->n_pend && deliver; i++) {
        const pend_hook *h = &s->pend[i];
        char name[96];
        ks_hook_name(h->point, h->layer, name, sizeof name);
        ks_hook_tensor t = {.name = name, .point = h->point, .layer = h->layer, .data = h->host,
                            .ndim = h->ndim, .shape = {h->shape[0], h->shape[1], h->shape[2], 0},
                            .pos0 = h->pos0};
        s->hook(&t, false, s->hook_user);
    }
    s->n_pend = 0;
    s->pool_used = 0;
}

/* Start the copy of a hooked tensor for later delivery; false when it cannot be deferred
 * (no room even in an empty pool of the largest size: the caller copies it now). */
static bool defer_hook(ks_session *s, ks_hook_point p, int layer, const float *data, int ndim,
                       int64_t d0, int64_t d1, int64_t d2, int pos0, size_t n) {
    const size_t max = KS_HOOK_POOL_MAX / sizeof(float);
    if (n > max) return false;
    size_t want = s->pool_cap;
    if (s->pool_cap - s->pool_used < n) { /* full: drain, and grow so one chunk fits next time */
        drain_hooks(s, true);
        want = s->pool_cap ? 2 * s->pool_cap : ((size_t)1 << 20) / sizeof(float);
    }
    if (s->n_pend == s->cap_pend) {
        int nc = s->cap_pend ? 2 * s->cap_pend : 64;
        pend_hook *q = realloc(s->pend, (size_t)nc * sizeof *q);
        if (!q) return false;
        s->pend = q;
        s->cap_pend = nc;
    }
    while (want < n) want *= 2;
    if (want > max) want = max;
    /* larger only when empty (after the drain) */
    if (!ks_backend_host_reserve(s->be, &s->pool, &s->pool_cap, want)) return false;
    float *host = s->pool + s->pool_used;
    s->pool_used += (n + 15) & ~(size_t)15; /* 64-byte aligned slots */
    if (s->pool_used > s->pool_cap) s->pool_used = s->pool_cap;
    s->be->i->to_host_async(s->be, host, data, n);
    s->pend[s->n_pend++] = (pend_hook){.point = p, .layer = layer, .ndim = ndim, .pos0 = pos0,
                                       .shape = {d0, d1, d2}, .host = host};
    return true;
}

static void hook_fire(ks_session *s, ks_hook_point p, int layer, float *data, int ndim,
                      int64_t d0, int64_t d1, int64_t d2, int pos0) {
    if (!s->hook) return;
    char name[96];
    ks_hook_name(p, layer, name, sizeof name);
    ks_hook_tensor t = {.name = name, .point = p, .layer = layer, .data = NULL, .ndim = ndim,
                        .shape = {d0, d1, d2, 0}, .pos0 = pos0};
    if (!s->hook(&t, true, s->hook_user)) return;
    const ks_backend_i *bi = s->be->i;
    if (!bi->to_host) { /* host memory: the hook reads and edits it in place */
        t.data = data;
        s->hook(&t, false, s->hook_user);
        return;
    }
    size_t n = (size_t)d0 * (size_t)d1 * (size_t)(ndim > 2 ? d2 : 1);
    if (s->hook_read_only && bi->to_host_async &&
        defer_hook(s, p, layer, data, ndim, d0, d1, d2, pos0, n))
        return;
    drain_hooks(s, true); /* delivered in order: what is deferred goes first */
    /* skipped rather than handed garbage */
    if (!ks_backend_host_reserve(s->be, &s->stage, &s->stage_cap, n)) return;
    bi->to_host(s->be, s->stage, data, n);
    t.data = s->stage;
    s->hook(&t, false, s->hook_user);
    if (!s->hook_read_only) bi->from_host(s->be, data, s->stage, n);
}

/* Does the hook want this point? (so work only a hook needs can be skipped) */
static bool hook_wants(ks_session *s, ks_hook_point p, int layer) {
    if (!s->hook) return false;
    char name[96];
    ks_hook_name(p, layer, name, sizeof name);
    ks_hook_tensor t = {.name = name, .point = p, .layer = layer};
    return s->hook(&t, true, s->hook_user);
}

/* Rotary inverse frequencies for a call that ends at sequence length seq_len. */
void ks_rope_inv_freq(const ks_config *c, int seq_len, float *inv_freq) {
    int half = c->head_dim / 2;
    double base = c->rope_theta;
    if (c->rope_scaling == KS_ROPE_SCALING_DYNAMIC) {
        /* dynamic NTK: the base grows once the sequence outruns the trained length */
        int orig = c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_seq_len;
        double sl = seq_len > orig ? seq_len : orig;
        double f = c->rope_factor;
        base = base * pow(f * sl / orig - (f - 1.0), (double)c->head_dim / (c->head_dim - 2));
    }
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)c->head_dim;
        inv_freq[i] = 1.0f / powf((float)base, e);
    }
    if (c->rope_scaling == KS_ROPE_SCALING_LINEAR) {
        for (int i = 0; i < half; i++) inv_freq[i] /= c->rope_factor;
    } else if (c->rope_scaling == KS_ROPE_SCALING_LLAMA3) {
        double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
        double orig = c->rope_orig_max_pos;
        double low_wavelen = orig / lo, high_wavelen = orig / hi;
        for (int i = 0; i < half; i++) {
            float f = inv_freq[i];
            double wavelen = 2.0 * M_PI / f;
            float scaled = wavelen > low_wavelen ? (float)(f / factor) : f;
            if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
                float smooth = (float)((orig / wavelen - lo) / (hi - lo));
                scaled = (1.0f - smooth) * scaled / (float)factor + smooth * scaled;
            }
            inv_freq[i] = scaled;
        }
    }
}

/* ------------------------------------------------------------------ session */

ks_status ks_backend_open(const ks_model *m, const char *name, ks_backend **out, ks_error *err) {
    const ks_config *c = &m->cfg;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, max_in = (size_t)c->dim;
    if (q_dim > max_in) max_in = q_dim;
    if ((size_t)c->hidden_dim > max_in) max_in = (size_t)c->hidden_dim;
    const char *bname = name ? name : "cpu";
    if (!strcmp(bname, "cpu") || !strcmp(bname, "cpu-copy"))
        return ks_backend_cpu_create(max_in, !strcmp(bname, "cpu-copy"), out, err);
    if (!strcmp(bname, "cuda")) return ks_backend_cuda_create(max_in, out, err);
    return ks_error_set(err, KS_ERR_ARG, "backend '%s': unknown (expected cpu or cuda)", bname);
}

ks_status ks_session_create(const ks_model *m, const ks_session_options *opts, ks_session **out,
                            ks_error *err) {
    if (!m || !out) return ks_error_set(err, KS_ERR_ARG, "ks_session_create: NULL argument");
    *out = NULL;
    const ks_config *c = &m->cfg;
    ks_session *s = calloc(1, sizeof *s);
    if (!s) return ks_error_set(err, KS_ERR_NOMEM, "session: out of memory");
    s->m = m;
    s->max_seq = opts && opts->max_seq_len > 0 ? opts->max_seq_len : c->max_seq_len;
    if (s->max_seq <= 0) s->max_seq = 2048;
    s->max_batch = opts && opts->max_batch > 0 ? opts->max_batch : 512;
    if (s->max_batch > s->max_seq) s->max_batch = s->max_seq;
#ifdef _OPENMP
    if (opts && opts->n_threads > 0) omp_set_num_threads(opts->n_threads);
#endif
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim, q_dim = (size_t)c->n_heads * c->head_dim;
    size_t B = (size_t)s->max_batch, half = (size_t)c->head_dim / 2;
    ks_status st = ks_backend_open(m, opts ? opts->backend : NULL, &s->be, err);
    if (st) {
        free(s);
        return st;
    }
    if (s->be->i->prepare && (st = s->be->i->prepare(s->be, m, err))) {
        s->be->i->destroy(s->be);
        free(s);
        return st;
    }
    size_t cache = (size_t)c->n_layers * (size_t)s->max_seq * kv_dim;
    s->k_cache = balloc(s, cache);
    s->v_cache = balloc(s, cache);
    s->x = balloc(s, B * c->dim);
    s->xn = balloc(s, B * c->dim);
    s->q = balloc(s, B * q_dim);
    s->k = balloc(s, B * kv_dim);
    s->v = balloc(s, B * kv_dim);
    s->z = balloc(s, B * q_dim);
    s->out = balloc(s, B * c->dim);
    s->gate = balloc(s, B * c->hidden_dim);
    s->up = balloc(s, B * c->hidden_dim);
    s->cosv = balloc(s, B * half);
    s->sinv = balloc(s, B * half);
    s->inv_freq = calloc(half ? half : 1, sizeof(float));
    s->table = calloc(2 * B * half + 1, sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->x || !s->xn || !s->q || !s->k || !s->v || !s->z ||
        !s->out || !s->gate || !s->up || !s->cosv || !s->sinv || !s->inv_freq || !s->table) {
        ks_session_free(s);
        return ks_error_set(err, KS_ERR_NOMEM,
                            "session: out of memory (KV cache of %d tokens needs %zu MB; lower "
                            "the context length)",
                            s->max_seq, cache * 2 * sizeof(float) >> 20);
    }
    *out = s;
    return KS_OK;
}

void ks_session_free(ks_session *s) {
    if (!s) return;
    if (s->be) {
        float *bufs[] = {s->k_cache, s->v_cache, s->x,    s->xn,   s->q,   s->k,   s->v,
                         s->z,       s->out,     s->gate, s->up,   s->cosv, s->sinv, s->att,
                         s->logits_dev};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) bfree(s, bufs[i]);
        ks_backend_host_free(s->be, s->stage);
        drain_hooks(s, false);
        ks_backend_host_free(s->be, s->pool);
        s->be->i->destroy(s->be);
    }
    free(s->pend);
    free(s->inv_freq);
    free(s->table);
    free(s);
}

void ks_session_set_hook(ks_session *s, ks_hook_fn fn, void *user) {
    drain_hooks(s, false); /* nothing is pending between calls; never for a new hook */
    s->hook = fn;
    s->hook_user = user;
    s->hook_read_only = false;
}

void ks_session_set_hook_read_only(ks_session *s, bool read_only) { s->hook_read_only = read_only; }

void ks_session_set_progress(ks_session *s, ks_progress_fn fn, void *user) {
    s->progress = fn;
    s->progress_user = user;
}

void ks_session_reset(ks_session *s) { s->pos = 0; }
void ks_session_truncate(ks_session *s, int n) {
    if (n >= 0 && n < s->pos) s->pos = n;
}
int ks_session_pos(const ks_session *s) { return s->pos; }
const ks_model *ks_session_model(const ks_session *s) { return s->m; }
int ks_session_max_seq(const ks_session *s) { return s->max_seq; }
int ks_session_max_batch(const ks_session *s) { return s->max_batch; }

/* ------------------------------------------------------------------ forward */

static ks_status ensure_att(ks_session *s, size_t need, ks_error *err) {
    if (need <= s->att_cap) return KS_OK;
    bfree(s, s->att);
    s->att = balloc(s, need);
    s->att_cap = s->att ? need : 0;
    if (!s->att)
        return ks_error_set(err, KS_ERR_NOMEM, "attention buffer of %zu floats: out of memory",
                            need);
    return KS_OK;
}

/* Scores, mask, softmax and weighted values for one layer and one chunk of B queries at
 * positions pos0..pos0+B, attending to L = pos0 + B cached keys. */
static ks_status attention(ks_session *s, int layer, int B, int pos0, ks_error *err) {
    const ks_config *c = &s->m->cfg;
    const ks_backend_i *bi = s->be->i;
    const int hd = c->head_dim, H = c->n_heads, kv_mul = c->n_heads / c->n_kv_heads;
    const int L = pos0 + B;
    const size_t kv_dim = (size_t)c->n_kv_heads * hd;
    const float *kc = s->k_cache + (size_t)layer * s->max_seq * kv_dim;
    const float *vc = s->v_cache + (size_t)layer * s->max_seq * kv_dim;
    const float scale = 1.0f / sqrtf((float)hd);
    /* the fast path when nobody looks at this layer's scores or pattern */
    if (bi->attn_fused && !hook_wants(s, KS_HOOK_ATTN_SCORES, layer) &&
        !hook_wants(s, KS_HOOK_ATTN_PATTERN, layer) &&
        bi->attn_fused(s->be, s->z, s->q, kc, vc, B, pos0, H, kv_mul, hd, s->max_seq, scale))
        return KS_OK;
    ks_status st = ensure_att(s, (size_t)H * B * L, err);
    if (st) return st;
    bi->attn_scores(s->be, s->att, s->q, kc, B, pos0, H, kv_mul, hd, s->max_seq, scale);
    hook_fire(s, KS_HOOK_ATTN_SCORES, layer, s->att, 3, H, B, L, pos0);
    bi->softmax(s->be, s->att, H * B, L);
    hook_fire(s, KS_HOOK_ATTN_PATTERN, layer, s->att, 3, H, B, L, pos0);
    bi->attn_values(s->be, s->z, s->att, vc, B, pos0, H, kv_mul, hd, s->max_seq);
    return KS_OK;
}

/* One chunk of B tokens at positions pos0..; rope frequencies already set for the call.
 * logits_rows: how many trailing rows get logits (0, 1 or B) into logits (rows, vocab), host. */
static ks_status forward_chunk(ks_session *s, const int *tokens, int B, int logits_rows,
                               float *logits, ks_error *err) {
    const ks_model *m = s->m;
    const ks_config *c = &m->cfg;
    const ks_backend_i *bi = s->be->i;
    ks_backend *be = s->be;
    const int dim = c->dim, hd = c->head_dim, H = c->n_heads, Hkv = c->n_kv_heads;
    const int hidden = c->hidden_dim, half = hd / 2;
    const size_t kv_dim = (size_t)Hkv * hd, q_dim = (size_t)H * hd;
    const int pos0 = s->pos;
    ks_status st;

    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= c->vocab_size)
            return ks_error_set(err, KS_ERR_RANGE, "token id %d at position %d is outside the "
                                "vocabulary (0..%d)", tokens[b], pos0 + b, c->vocab_size - 1);
    bi->embed(be, s->x, &m->tok_embeddings, tokens, B, dim);
    hook_fire(s, KS_HOOK_EMBED, -1, s->x, 2, B, dim, 0, pos0);

    float *cos_h = s->table, *sin_h = s->table + (size_t)B * half;
    for (int b = 0; b < B; b++) {
        float p = (float)(pos0 + b);
        for (int j = 0; j < half; j++) {
            float f = p * s->inv_freq[j];
            cos_h[(size_t)b * half + j] = cosf(f);
            sin_h[(size_t)b * half + j] = sinf(f);
        }
    }
    put(s, s->cosv, cos_h, (size_t)B * half);
    put(s, s->sinv, sin_h, (size_t)B * half);

    for (int l = 0; l < c->n_layers; l++) {
        const ks_layer_weights *w = &m->layers[l];
        hook_fire(s, KS_HOOK_RESID_PRE, l, s->x, 2, B, dim, 0, pos0);

        /* attention sublayer */
        bi->rmsnorm(be, s->xn, s->x, w->attn_norm, B, dim, c->rms_eps);
        hook_fire(s, KS_HOOK_LN1_NORMALIZED, l, s->xn, 2, B, dim, 0, pos0);
        {
            float *ys[3] = {s->q, s->k, s->v};
            const ks_weight *ws[3] = {&w->wq, &w->wk, &w->wv};
            int outs[3] = {(int)q_dim, (int)kv_dim, (int)kv_dim};
            bi->matmul(be, 3, ys, ws, outs, s->xn, B, dim);
        }
        hook_fire(s, KS_HOOK_ATTN_Q, l, s->q, 3, B, H, hd, pos0);
        hook_fire(s, KS_HOOK_ATTN_K, l, s->k, 3, B, Hkv, hd, pos0);
        hook_fire(s, KS_HOOK_ATTN_V, l, s->v, 3, B, Hkv, hd, pos0);
        bi->rope(be, s->q, B, H, hd, c->rope_style, s->cosv, s->sinv);
        bi->rope(be, s->k, B, Hkv, hd, c->rope_style, s->cosv, s->sinv);
        hook_fire(s, KS_HOOK_ATTN_ROT_Q, l, s->q, 3, B, H, hd, pos0);
        hook_fire(s, KS_HOOK_ATTN_ROT_K, l, s->k, 3, B, Hkv, hd, pos0);
        size_t layer_off = (size_t)l * s->max_seq * kv_dim;
        bi->kv_store(be, s->k_cache + layer_off, s->k, B, Hkv, hd, s->max_seq, pos0);
        bi->kv_store(be, s->v_cache + layer_off, s->v, B, Hkv, hd, s->max_seq, pos0);
        if ((st = attention(s, l, B, pos0, err))) return st;
        hook_fire(s, KS_HOOK_ATTN_Z, l, s->z, 3, B, H, hd, pos0);
        {
            const ks_weight *wo = &w->wo;
            int o = dim;
            bi->matmul(be, 1, &s->out, &wo, &o, s->z, B, (int)q_dim);
        }
        hook_fire(s, KS_HOOK_ATTN_OUT, l, s->out, 2, B, dim, 0, pos0);
        bi->add(be, s->x, s->out, (size_t)B * dim);
        hook_fire(s, KS_HOOK_RESID_MID, l, s->x, 2, B, dim, 0, pos0);

        /* MLP sublayer (SwiGLU) */
        bi->rmsnorm(be, s->xn, s->x, w->ffn_norm, B, dim, c->rms_eps);
        hook_fire(s, KS_HOOK_LN2_NORMALIZED, l, s->xn, 2, B, dim, 0, pos0);
        {
            float *ys[2] = {s->gate, s->up};
            const ks_weight *ws[2] = {&w->w_gate, &w->w_up};
            int outs[2] = {hidden, hidden};
            bi->matmul(be, 2, ys, ws, outs, s->xn, B, dim);
        }
        hook_fire(s, KS_HOOK_MLP_PRE, l, s->gate, 2, B, hidden, 0, pos0);
        hook_fire(s, KS_HOOK_MLP_PRE_LINEAR, l, s->up, 2, B, hidden, 0, pos0);
        bi->swiglu(be, s->up, s->gate, (size_t)B * hidden);
        hook_fire(s, KS_HOOK_MLP_POST, l, s->up, 2, B, hidden, 0, pos0);
        {
            const ks_weight *wd = &w->w_down;
            int o = dim;
            bi->matmul(be, 1, &s->out, &wd, &o, s->up, B, hidden);
        }
        hook_fire(s, KS_HOOK_MLP_OUT, l, s->out, 2, B, dim, 0, pos0);
        bi->add(be, s->x, s->out, (size_t)B * dim);
        hook_fire(s, KS_HOOK_RESID_POST, l, s->x, 2, B, dim, 0, pos0);
    }
    s->pos += B;

    /* final norm: every row when a hook wants it, else only the rows that get logits */
    int norm_rows = hook_wants(s, KS_HOOK_LN_FINAL_NORMALIZED, -1) ? B : logits_rows;
    if (norm_rows == 0) return KS_OK;
    float *xr = s->x + (size_t)(B - norm_rows) * dim, *xnr = s->xn + (size_t)(B - norm_rows) * dim;
    bi->rmsnorm(be, xnr, xr, m->final_norm, norm_rows, dim, c->rms_eps);
    hook_fire(s, KS_HOOK_LN_FINAL_NORMALIZED, -1, xnr, 2, norm_rows, dim, 0,
              pos0 + B - norm_rows);
    if (logits_rows == 0) return KS_OK;
    const float *xl = s->xn + (size_t)(B - logits_rows) * dim;
    /* host-memory backends write the caller's buffer directly */
    float *lg = logits;
    if (bi->to_host) {
        if (!s->logits_dev && !(s->logits_dev = balloc(s, (size_t)s->max_batch * c->vocab_size)))
            return ks_error_set(err, KS_ERR_NOMEM, "logits buffer: out of memory");
        lg = s->logits_dev;
    }
    {
        const ks_weight *wout = &m->output;
        int o = c->vocab_size;
        bi->matmul(be, 1, &lg, &wout, &o, xl, logits_rows, dim);
    }
    hook_fire(s, KS_HOOK_LOGITS, -1, lg, 2, logits_rows, c->vocab_size, 0,
              pos0 + B - logits_rows);
    if (bi->to_host) bi->to_host(be, logits, lg, (size_t)logits_rows * c->vocab_size);
    return KS_OK;
}

ks_status ks_session_forward(ks_session *s, const int *tokens, int n, ks_logits_mode mode,
                             float *logits, ks_error *err) {
    if (!s || (!tokens && n > 0) || n < 0)
        return ks_error_set(err, KS_ERR_ARG, "ks_session_forward: invalid arguments");
    if (mode != KS_LOGITS_NONE && !logits)
        return ks_error_set(err, KS_ERR_ARG, "ks_session_forward: logits buffer is NULL");
    if (n == 0) return KS_OK;
    if (n > s->max_seq - s->pos)
        return ks_error_set(err, KS_ERR_RANGE,
                            "context full: %d cached + %d new tokens exceed the session's "
                            "context length %d",
                            s->pos, n, s->max_seq);
    const ks_config *c = &s->m->cfg;
    /* rotary frequencies are set once per call (dynamic NTK looks at the call's end) */
    ks_rope_inv_freq(c, s->pos + n, s->inv_freq);
    for (int done = 0; done < n;) {
        int B = n - done < s->max_batch ? n - done : s->max_batch;
        bool last = done + B == n;
        int rows = mode == KS_LOGITS_ALL ? B : (mode == KS_LOGITS_LAST && last ? 1 : 0);
        float *lg = mode == KS_LOGITS_ALL ? logits + (size_t)done * c->vocab_size : logits;
        ks_status st = forward_chunk(s, tokens + done, B, rows, lg, err);
        /* the chunk's deferred hooks, before it counts as done (drain_hooks delivers nothing
         * once the backend has an error, which check then reports) */
        drain_hooks(s, st == KS_OK);
        if (!st && s->be->i->check) st = s->be->i->check(s->be, err);
        if (st) return st;
        done += B;
        if (s->progress && n > s->max_batch) s->progress(done, n, s->progress_user);
    }
    return KS_OK;
}
