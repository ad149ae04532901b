/* forward.c — the CPU reference forward pass of a LLaMA-family model, with hook points.
 *
 * A session owns the KV cache and the activation buffers of one sequence. Prefill runs a
 * chunk of B tokens at once through BLAS GEMMs; decode (B = 1) runs matrix-vector products.
 * Attention keeps the whole [head, query, key] score tensor of a chunk so that hooks can
 * read or edit exact scores and patterns.
 *
 * Numerics follow HF transformers' LlamaForCausalLM in f32 (eager attention): RMSNorm as
 * w * (x * rsqrt(mean(x^2) + eps)); rotary frequencies 1 / theta^(2i/d) computed in f32 and
 * scaled as config.json's rope_scaling says; softmax in f32 over scores scaled by
 * 1/sqrt(head_dim) with the causal mask at -inf; SwiGLU down(silu(gate x) * up x).
 *
 * Activations in this file are overwritten (`=`); nothing accumulates across calls except the
 * KV cache, which is appended to. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model_private.h"

#ifdef KS_HAVE_OPENBLAS
void openblas_set_num_threads(int n);
#endif

struct ks_session {
    const ks_model *m;
    int max_seq;   /* KV cache length */
    int max_batch; /* tokens per chunk */
    int n_threads;
    int pos;       /* tokens in the cache */
    ks_hook_fn hook;
    void *hook_user;

    /* Per head, positions are contiguous so attention reads each head's keys and values
     * as one sequential stream. */
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
    float *inv_freq; /* (head_dim / 2) */
    float *att;   /* (n_heads, B, L) scores then pattern; grown on demand */
    size_t att_cap;
    float *panel; /* (n_panel_threads, KS_PANEL_ROWS, max_in) f32 rows of a non-f32 weight */
    size_t panel_stride;
    int n_panel_threads;
};

/* Rows of a non-f32 weight converted at a time per thread: small enough to stay in cache,
 * large enough that a prefill GEMM on them runs at full speed. */
#define KS_PANEL_ROWS 32

/* ------------------------------------------------------------------ helpers */

static void *xcalloc(size_t n, size_t sz) {
    if (n == 0) n = 1;
    return calloc(n, sz);
}

static void hook_fire(ks_session *s, ks_hook_point p, int layer, float *data, int ndim,
                      int64_t d0, int64_t d1, int64_t d2, int pos0) {
    if (!s->hook) return;
    char name[96];
    ks_hook_name(p, layer, name, sizeof name);
    ks_hook_tensor t = {.name = name, .point = p, .layer = layer, .data = NULL, .ndim = ndim,
                        .shape = {d0, d1, d2, 0}, .pos0 = pos0};
    if (!s->hook(&t, true, s->hook_user)) return;
    t.data = data;
    s->hook(&t, false, s->hook_user);
}

/* Dot product with sixteen independent partial sums: without -ffast-math the compiler may
 * not reorder one running sum, and a single dependent chain of additions would bound
 * decode by add latency instead of memory bandwidth. This form vectorises. */
KS_VECTOR_CLONES static float dot(const float *a, const float *b, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    float tail = 0.0f;
    for (; i < n; i++) tail += a[i] * b[i];
    for (int j = 0; j < 8; j++) acc[j] += acc[j + 8];
    for (int j = 0; j < 4; j++) acc[j] += acc[j + 4];
    return ((acc[0] + acc[2]) + (acc[1] + acc[3])) + tail;
}

/* y += a * x over n elements (attention's weighted sum of values in decode). */
KS_VECTOR_CLONES static void axpy(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* Four rows of W against x at once: x is loaded once per four rows and the four partial-sum
 * chains are independent. */
KS_VECTOR_CLONES static void dot4(float *y, const float *w, size_t stride, const float *x, int n) {
    float a0[16] = {0}, a1[16] = {0}, a2[16] = {0}, a3[16] = {0};
    const float *w0 = w, *w1 = w + stride, *w2 = w + 2 * stride, *w3 = w + 3 * stride;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) {
            float xv = x[i + j];
            a0[j] += w0[i + j] * xv;
            a1[j] += w1[i + j] * xv;
            a2[j] += w2[i + j] * xv;
            a3[j] += w3[i + j] * xv;
        }
    float t[4] = {0, 0, 0, 0};
    for (; i < n; i++) {
        t[0] += w0[i] * x[i];
        t[1] += w1[i] * x[i];
        t[2] += w2[i] * x[i];
        t[3] += w3[i] * x[i];
    }
    float *acc[4] = {a0, a1, a2, a3};
    for (int r = 0; r < 4; r++) {
        float *a = acc[r];
        for (int j = 0; j < 8; j++) a[j] += a[j + 8];
        for (int j = 0; j < 4; j++) a[j] += a[j + 4];
        y[r] = ((a[0] + a[2]) + (a[1] + a[3])) + t[r];
    }
}

/* Rows r0..r1 of y = W x for one token: decode reads W once, row by row. */
static void gemv_rows(float *y, const float *x, const float *w, int in, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) dot4(y + r, w + (size_t)r * in, (size_t)in, x, in);
    for (; r < r1; r++) y[r] = dot(w + (size_t)r * in, x, in);
}

/* n rows from r0 of a (rows, cols) weight as f32 into dst. f16 uses the F16C instructions
 * where the CPU has them (checked at run time); every other path is ks_dtype_to_f32. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint8_t *src, float *dst,
                                                                 size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    if (i < n) ks_dtype_to_f32(KS_DTYPE_F16, src + 2 * i, dst + i, n - i);
}
/* F16C and AVX present and the OS saves the AVX state (cpuid + xgetbv: works with GCC and
 * clang alike). Computed once; a racing first call computes the same value. */
static bool have_f16c(void) {
    static int v = -1;
    if (v < 0) {
        unsigned a, b, c, d;
        int ok = 0;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && (c & bit_AVX) && (c & bit_OSXSAVE)) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            ok = (lo & 6) == 6;
        }
        v = ok;
    }
    return v;
}
#else
static void f16_to_f32_f16c(const uint8_t *src, float *dst, size_t n) {
    ks_dtype_to_f32(KS_DTYPE_F16, src, dst, n);
}
static bool have_f16c(void) { return false; }
#endif

static void weight_rows(const ks_weight *w, size_t cols, size_t r0, size_t n, float *dst) {
    const uint8_t *src = (const uint8_t *)w->data + r0 * ks_dtype_row_bytes(w->dtype, cols);
    if (w->dtype == KS_DTYPE_F32)
        memcpy(dst, src, n * cols * sizeof(float));
    else if (w->dtype == KS_DTYPE_F16 && have_f16c())
        f16_to_f32_f16c(src, dst, n * cols);
    else
        ks_dtype_to_f32(w->dtype, src, dst, n * cols);
}

/* y (B, out) = x (B, in) · W^T, W (out, in) row-major.
 *
 * OpenMP is the engine's one thread pool: each thread computes its own block of W's rows
 * (output columns), with a single-threaded BLAS GEMM for prefill and gemv_rows for decode.
 * Letting OpenBLAS start threads of its own as well makes the two pools spin against each
 * other between calls, which cost 2-3x in decode on a 2-core machine (bench/bench_forward).
 * A weight stored in another dtype is streamed through a per-thread f32 panel of
 * KS_PANEL_ROWS rows; the values are exactly those of converting the whole matrix. */
/* Rows r0..r1 of one product y (B, out) = x · W^T, on the calling thread. */
static void matmul_rows(ks_session *s, int t, float *y, const float *x, const ks_weight *w, int B,
                        int in, int out, int r0, int r1) {
    if (r1 <= r0) return;
    if (w->dtype == KS_DTYPE_F32) {
        const float *wf = w->data;
        if (B == 1)
            gemv_rows(y, x, wf, in, r0, r1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, r1 - r0, in, 1.0f, x, in,
                        wf + (size_t)r0 * in, in, 0.0f, y + r0, out);
        return;
    }
    float *panel = s->panel + (size_t)t * s->panel_stride;
    /* decode converts a few rows at a time so they are still in L1 for the dot products */
    const int P = B == 1 ? 4 : KS_PANEL_ROWS;
    for (int p = r0; p < r1; p += P) {
        int n = r1 - p < P ? r1 - p : P;
        weight_rows(w, (size_t)in, (size_t)p, (size_t)n, panel);
        if (B == 1)
            gemv_rows(y + p, x, panel, in, 0, n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n, in, 1.0f, x, in, panel, in,
                        0.0f, y + p, out);
    }
}

/* Several products of the same input, y_i (B, out_i) = x (B, in) · W_i^T, in one parallel
 * region: the threads split the rows of all the W_i stacked, so q/k/v (and gate/up) cost one
 * fork and one barrier, and each thread streams an equal share of the bytes.
 *
 * OpenMP is the engine's one thread pool: each thread computes its own rows (output columns),
 * with a single-threaded BLAS GEMM for prefill and gemv_rows for decode. Letting OpenBLAS
 * start threads of its own as well makes the two pools spin against each other between
 * calls, which cost 2-3x in decode on a 2-core machine (bench/bench_forward). A weight stored
 * in another dtype is streamed through a per-thread f32 panel; the values are exactly those
 * of converting the whole matrix. */
static void matmul_n(ks_session *s, int n, float *const *ys, const ks_weight *const *ws,
                     const int *outs, const float *x, int B, int in) {
    int total = 0;
    for (int i = 0; i < n; i++) total += outs[i];
#pragma omp parallel num_threads(s->n_panel_threads) if ((size_t)B * in * total > 65536)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        /* blocks of 16 rows keep each thread's share aligned to cache lines */
        int blocks = (total + 15) / 16;
        int g0 = (int)((long)blocks * t / nt) * 16, g1 = (int)((long)blocks * (t + 1) / nt) * 16;
        for (int i = 0, base = 0; i < n; base += outs[i], i++) {
            int r0 = g0 - base, r1 = g1 - base;
            if (r0 < 0) r0 = 0;
            if (r1 > outs[i]) r1 = outs[i];
            matmul_rows(s, t, ys[i], x, ws[i], B, in, outs[i], r0, r1);
        }
    }
}

static void matmul(ks_session *s, float *y, const float *x, const ks_weight *w, int B, int in,
                   int out) {
    matmul_n(s, 1, &y, &w, &out, x, B, in);
}

static void rmsnorm(float *o, const float *x, const float *w, int B, int dim, float eps) {
#pragma omp parallel for if (B > 8)
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * dim;
        float *ob = o + (size_t)b * dim;
        double ss = 0.0;
        for (int i = 0; i < dim; i++) ss += (double)xb[i] * xb[i];
        float r = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int i = 0; i < dim; i++) ob[i] = w[i] * (xb[i] * r);
    }
}

/* Rotary inverse frequencies for a call that ends at sequence length seq_len. */
static void rope_inv_freq(const ks_config *c, int seq_len, float *inv_freq) {
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

/* Rotate (B, n, head_dim) vectors at positions pos0.. in place. */
static void rope_apply(float *v, int B, int n, int hd, ks_rope_style style, const float *cosv,
                       const float *sinv) {
    int half = hd / 2;
#pragma omp parallel for if (B > 8)
    for (int b = 0; b < B; b++) {
        const float *cb = cosv + (size_t)b * half, *sb = sinv + (size_t)b * half;
        for (int h = 0; h < n; h++) {
            float *x = v + ((size_t)b * n + h) * hd;
            if (style == KS_ROPE_STYLE_INTERLEAVED) {
                for (int j = 0; j < half; j++) {
                    float x0 = x[2 * j], x1 = x[2 * j + 1];
                    x[2 * j] = x0 * cb[j] - x1 * sb[j];
                    x[2 * j + 1] = x0 * sb[j] + x1 * cb[j];
                }
            } else {
                for (int j = 0; j < half; j++) {
                    float x0 = x[j], x1 = x[j + half];
                    x[j] = x0 * cb[j] - x1 * sb[j];
                    x[j + half] = x1 * cb[j] + x0 * sb[j];
                }
            }
        }
    }
}

static ks_status ensure_att(ks_session *s, size_t need, ks_error *err) {
    if (need <= s->att_cap) return KS_OK;
    float *p = realloc(s->att, need * sizeof(float));
    if (!p)
        return ks_error_set(err, KS_ERR_NOMEM, "attention buffer of %zu floats: out of memory",
                            need);
    s->att = p;
    s->att_cap = need;
    return KS_OK;
}

/* ------------------------------------------------------------------ session */

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
    s->n_threads = opts ? opts->n_threads : 0;
#ifdef _OPENMP
    if (s->n_threads > 0) omp_set_num_threads(s->n_threads);
#endif
#ifdef KS_HAVE_OPENBLAS
    /* BLAS calls run single-threaded inside our OpenMP threads (see matmul) */
    openblas_set_num_threads(1);
#endif
    size_t kv_dim = (size_t)c->n_kv_heads * c->head_dim, q_dim = (size_t)c->n_heads * c->head_dim;
    size_t B = (size_t)s->max_batch, half = (size_t)c->head_dim / 2;
    size_t cache = (size_t)c->n_layers * (size_t)s->max_seq * kv_dim;
    s->k_cache = xcalloc(cache, sizeof(float));
    s->v_cache = xcalloc(cache, sizeof(float));
    s->x = xcalloc(B * c->dim, sizeof(float));
    s->xn = xcalloc(B * c->dim, sizeof(float));
    s->q = xcalloc(B * q_dim, sizeof(float));
    s->k = xcalloc(B * kv_dim, sizeof(float));
    s->v = xcalloc(B * kv_dim, sizeof(float));
    s->z = xcalloc(B * q_dim, sizeof(float));
    s->out = xcalloc(B * c->dim, sizeof(float));
    s->gate = xcalloc(B * c->hidden_dim, sizeof(float));
    s->up = xcalloc(B * c->hidden_dim, sizeof(float));
    s->cosv = xcalloc(B * half, sizeof(float));
    s->sinv = xcalloc(B * half, sizeof(float));
    s->inv_freq = xcalloc(half, sizeof(float));
    size_t max_in = (size_t)c->dim;
    if (q_dim > max_in) max_in = q_dim;
    if ((size_t)c->hidden_dim > max_in) max_in = (size_t)c->hidden_dim;
    s->n_panel_threads = 1;
#ifdef _OPENMP
    s->n_panel_threads = omp_get_max_threads();
#endif
    s->panel_stride = (size_t)KS_PANEL_ROWS * max_in;
    s->panel = xcalloc((size_t)s->n_panel_threads * s->panel_stride, sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->x || !s->xn || !s->q || !s->k || !s->v || !s->z ||
        !s->out || !s->gate || !s->up || !s->cosv || !s->sinv || !s->inv_freq || !s->panel) {
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
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->xn);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->z);
    free(s->out);
    free(s->gate);
    free(s->up);
    free(s->cosv);
    free(s->sinv);
    free(s->inv_freq);
    free(s->att);
    free(s->panel);
    free(s);
}

void ks_session_set_hook(ks_session *s, ks_hook_fn fn, void *user) {
    s->hook = fn;
    s->hook_user = user;
}

void ks_session_reset(ks_session *s) { s->pos = 0; }
void ks_session_truncate(ks_session *s, int n) {
    if (n >= 0 && n < s->pos) s->pos = n;
}
int ks_session_pos(const ks_session *s) { return s->pos; }
const ks_model *ks_session_model(const ks_session *s) { return s->m; }
int ks_session_max_seq(const ks_session *s) { return s->max_seq; }
int ks_session_max_batch(const ks_session *s) { return s->max_batch; }

/* ------------------------------------------------------------------ attention */

/* Scores, mask, softmax and weighted values for one layer and one chunk of B queries at
 * positions pos0..pos0+B, attending to L = pos0 + B cached keys. */
static ks_status attention(ks_session *s, int layer, int B, int pos0, ks_error *err) {
    const ks_config *c = &s->m->cfg;
    const int hd = c->head_dim, H = c->n_heads, kv_mul = c->n_heads / c->n_kv_heads;
    const int L = pos0 + B;
    const size_t kv_dim = (size_t)c->n_kv_heads * hd, q_dim = (size_t)H * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t head_stride = (size_t)s->max_seq * hd; /* one kv head's cache */
    const float *kc = s->k_cache + (size_t)layer * s->max_seq * kv_dim;
    const float *vc = s->v_cache + (size_t)layer * s->max_seq * kv_dim;
    ks_status st = ensure_att(s, (size_t)H * B * L, err);
    if (st) return st;
    float *att = s->att; /* (H, B, L) */

    if (B == 1) {
#pragma omp parallel for if (L * hd > 4096)
        for (int h = 0; h < H; h++) {
            const float *qh = s->q + (size_t)h * hd;
            const float *kh = kc + (size_t)(h / kv_mul) * head_stride;
            float *ah = att + (size_t)h * L;
            for (int t = 0; t < L; t++) ah[t] = dot(qh, kh + (size_t)t * hd, hd) * scale;
        }
    } else {
#pragma omp parallel for
        for (int h = 0; h < H; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, L, hd, scale,
                        s->q + (size_t)h * hd, (int)q_dim, kc + (size_t)(h / kv_mul) * head_stride,
                        hd, 0.0f, att + (size_t)h * B * L, L);
    }
    /* causal mask: query b (absolute pos0 + b) sees keys 0..pos0 + b */
#pragma omp parallel for collapse(2) if ((size_t)H * B * L > 16384)
    for (int h = 0; h < H; h++)
        for (int b = 0; b < B; b++) {
            float *row = att + ((size_t)h * B + b) * L;
            for (int t = pos0 + b + 1; t < L; t++) row[t] = -INFINITY;
        }
    hook_fire(s, KS_HOOK_ATTN_SCORES, layer, att, 3, H, B, L, pos0);

#pragma omp parallel for collapse(2) if ((size_t)H * B * L > 2048)
    for (int h = 0; h < H; h++)
        for (int b = 0; b < B; b++) {
            float *row = att + ((size_t)h * B + b) * L;
            float mx = -INFINITY;
            for (int t = 0; t < L; t++)
                if (row[t] > mx) mx = row[t];
            double sum = 0.0;
            if (mx == -INFINITY) { /* a hook masked the whole row: attend nowhere */
                for (int t = 0; t < L; t++) row[t] = 0.0f;
                continue;
            }
            for (int t = 0; t < L; t++) {
                float e = expf(row[t] - mx);
                row[t] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            for (int t = 0; t < L; t++) row[t] *= inv;
        }
    hook_fire(s, KS_HOOK_ATTN_PATTERN, layer, att, 3, H, B, L, pos0);

    if (B == 1) {
#pragma omp parallel for if (L * hd > 4096)
        for (int h = 0; h < H; h++) {
            float *zh = s->z + (size_t)h * hd;
            const float *vh = vc + (size_t)(h / kv_mul) * head_stride;
            const float *ah = att + (size_t)h * L;
            memset(zh, 0, (size_t)hd * sizeof(float));
            for (int t = 0; t < L; t++) axpy(zh, ah[t], vh + (size_t)t * hd, hd);
        }
    } else {
#pragma omp parallel for
        for (int h = 0; h < H; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, hd, L, 1.0f,
                        att + (size_t)h * B * L, L, vc + (size_t)(h / kv_mul) * head_stride, hd,
                        0.0f, s->z + (size_t)h * hd, (int)q_dim);
    }
    return KS_OK;
}

/* ------------------------------------------------------------------ forward */

/* Wants the hook this point? (so we can skip work only a hook needs) */
static bool hook_wants(ks_session *s, ks_hook_point p, int layer) {
    if (!s->hook) return false;
    char name[96];
    ks_hook_name(p, layer, name, sizeof name);
    ks_hook_tensor t = {.name = name, .point = p, .layer = layer};
    return s->hook(&t, true, s->hook_user);
}

/* One chunk of B tokens at positions pos0..; rope frequencies already set for the call.
 * logits_rows: how many trailing rows get logits (0, 1 or B) into logits (rows, vocab). */
static ks_status forward_chunk(ks_session *s, const int *tokens, int B, int logits_rows,
                               float *logits, ks_error *err) {
    const ks_model *m = s->m;
    const ks_config *c = &m->cfg;
    const int dim = c->dim, hd = c->head_dim, H = c->n_heads, Hkv = c->n_kv_heads;
    const int hidden = c->hidden_dim, half = hd / 2;
    const size_t kv_dim = (size_t)Hkv * hd, q_dim = (size_t)H * hd;
    const int pos0 = s->pos;
    ks_status st;

    for (int b = 0; b < B; b++) {
        int id = tokens[b];
        if (id < 0 || id >= c->vocab_size)
            return ks_error_set(err, KS_ERR_RANGE, "token id %d at position %d is outside the "
                                "vocabulary (0..%d)", id, pos0 + b, c->vocab_size - 1);
        weight_rows(&m->tok_embeddings, (size_t)dim, (size_t)id, 1, s->x + (size_t)b * dim);
    }
    hook_fire(s, KS_HOOK_EMBED, -1, s->x, 2, B, dim, 0, pos0);

    for (int b = 0; b < B; b++) {
        float p = (float)(pos0 + b);
        for (int j = 0; j < half; j++) {
            float f = p * s->inv_freq[j];
            s->cosv[(size_t)b * half + j] = cosf(f);
            s->sinv[(size_t)b * half + j] = sinf(f);
        }
    }

    for (int l = 0; l < c->n_layers; l++) {
        const ks_layer_weights *w = &m->layers[l];
        hook_fire(s, KS_HOOK_RESID_PRE, l, s->x, 2, B, dim, 0, pos0);

        /* attention sublayer */
        rmsnorm(s->xn, s->x, w->attn_norm, B, dim, c->rms_eps);
        hook_fire(s, KS_HOOK_LN1_NORMALIZED, l, s->xn, 2, B, dim, 0, pos0);
        {
            float *ys[3] = {s->q, s->k, s->v};
            const ks_weight *ws[3] = {&w->wq, &w->wk, &w->wv};
            int outs[3] = {(int)q_dim, (int)kv_dim, (int)kv_dim};
            matmul_n(s, 3, ys, ws, outs, s->xn, B, dim);
        }
        hook_fire(s, KS_HOOK_ATTN_Q, l, s->q, 3, B, H, hd, pos0);
        hook_fire(s, KS_HOOK_ATTN_K, l, s->k, 3, B, Hkv, hd, pos0);
        hook_fire(s, KS_HOOK_ATTN_V, l, s->v, 3, B, Hkv, hd, pos0);
        rope_apply(s->q, B, H, hd, c->rope_style, s->cosv, s->sinv);
        rope_apply(s->k, B, Hkv, hd, c->rope_style, s->cosv, s->sinv);
        hook_fire(s, KS_HOOK_ATTN_ROT_Q, l, s->q, 3, B, H, hd, pos0);
        hook_fire(s, KS_HOOK_ATTN_ROT_K, l, s->k, 3, B, Hkv, hd, pos0);
        for (int g = 0; g < Hkv; g++) {
            size_t at = (((size_t)l * Hkv + g) * s->max_seq + pos0) * hd;
            for (int b = 0; b < B; b++) {
                memcpy(s->k_cache + at + (size_t)b * hd, s->k + (size_t)b * kv_dim + (size_t)g * hd,
                       (size_t)hd * sizeof(float));
                memcpy(s->v_cache + at + (size_t)b * hd, s->v + (size_t)b * kv_dim + (size_t)g * hd,
                       (size_t)hd * sizeof(float));
            }
        }
        if ((st = attention(s, l, B, pos0, err))) return st;
        hook_fire(s, KS_HOOK_ATTN_Z, l, s->z, 3, B, H, hd, pos0);
        matmul(s, s->out, s->z, &w->wo, B, (int)q_dim, dim);
        hook_fire(s, KS_HOOK_ATTN_OUT, l, s->out, 2, B, dim, 0, pos0);
        for (size_t i = 0; i < (size_t)B * dim; i++) s->x[i] += s->out[i];
        hook_fire(s, KS_HOOK_RESID_MID, l, s->x, 2, B, dim, 0, pos0);

        /* MLP sublayer (SwiGLU) */
        rmsnorm(s->xn, s->x, w->ffn_norm, B, dim, c->rms_eps);
        hook_fire(s, KS_HOOK_LN2_NORMALIZED, l, s->xn, 2, B, dim, 0, pos0);
        {
            float *ys[2] = {s->gate, s->up};
            const ks_weight *ws[2] = {&w->w_gate, &w->w_up};
            int outs[2] = {hidden, hidden};
            matmul_n(s, 2, ys, ws, outs, s->xn, B, dim);
        }
        hook_fire(s, KS_HOOK_MLP_PRE, l, s->gate, 2, B, hidden, 0, pos0);
        hook_fire(s, KS_HOOK_MLP_PRE_LINEAR, l, s->up, 2, B, hidden, 0, pos0);
        const size_t nh = (size_t)B * hidden;
#pragma omp parallel for if (nh > 65536)
        for (size_t i = 0; i < nh; i++) {
            float g = s->gate[i];
            s->up[i] *= g / (1.0f + expf(-g));
        }
        hook_fire(s, KS_HOOK_MLP_POST, l, s->up, 2, B, hidden, 0, pos0);
        matmul(s, s->out, s->up, &w->w_down, B, hidden, dim);
        hook_fire(s, KS_HOOK_MLP_OUT, l, s->out, 2, B, dim, 0, pos0);
        for (size_t i = 0; i < (size_t)B * dim; i++) s->x[i] += s->out[i];
        hook_fire(s, KS_HOOK_RESID_POST, l, s->x, 2, B, dim, 0, pos0);
    }
    s->pos += B;

    /* final norm: every row when a hook wants it, else only the rows that get logits */
    int norm_rows = hook_wants(s, KS_HOOK_LN_FINAL_NORMALIZED, -1) ? B : logits_rows;
    if (norm_rows == 0) return KS_OK;
    float *xr = s->x + (size_t)(B - norm_rows) * dim, *xnr = s->xn + (size_t)(B - norm_rows) * dim;
    rmsnorm(xnr, xr, m->final_norm, norm_rows, dim, c->rms_eps);
    hook_fire(s, KS_HOOK_LN_FINAL_NORMALIZED, -1, xnr, 2, norm_rows, dim, 0,
              pos0 + B - norm_rows);
    if (logits_rows == 0) return KS_OK;
    const float *xl = s->xn + (size_t)(B - logits_rows) * dim;
    matmul(s, logits, xl, &m->output, logits_rows, dim, c->vocab_size);
    hook_fire(s, KS_HOOK_LOGITS, -1, logits, 2, logits_rows, c->vocab_size, 0,
              pos0 + B - logits_rows);
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
    rope_inv_freq(c, s->pos + n, s->inv_freq);
    for (int done = 0; done < n;) {
        int B = n - done < s->max_batch ? n - done : s->max_batch;
        bool last = done + B == n;
        int rows = mode == KS_LOGITS_ALL ? B : (mode == KS_LOGITS_LAST && last ? 1 : 0);
        float *lg = mode == KS_LOGITS_ALL ? logits + (size_t)done * c->vocab_size : logits;
        ks_status st = forward_chunk(s, tokens + done, B, rows, lg, err);
        if (st) return st;
        done += B;
    }
    return KS_OK;
}
