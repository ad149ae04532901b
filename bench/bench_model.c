/* bench_model.c — the random models and weights of bench/ (see bench_model.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_model.h"

void bench_fill_random(float *p, size_t n, uint64_t seed) {
#pragma omp parallel
    {
        uint64_t s = seed;
#ifdef _OPENMP
        s += 0x9e3779b97f4a7c15ULL * (uint64_t)(omp_get_thread_num() + 1);
#endif
#pragma omp for
        for (size_t i = 0; i < n; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            p[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.04f;
        }
    }
}

/* f32 -> bf16 bits, round to nearest even (the values here are finite) */
static inline uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

void bench_fill_random_bf16(uint16_t *p, size_t n, uint64_t seed) {
    /* four 16-bit uniforms from each 64-bit draw: the xorshift chain is serial, so one draw per
     * value would bound the fill at a few ns per value; 16 bits are plenty for a bf16 */
    size_t n4 = n / 4;
#pragma omp parallel
    {
        uint64_t s = seed;
#ifdef _OPENMP
        s += 0x9e3779b97f4a7c15ULL * (uint64_t)(omp_get_thread_num() + 1);
#endif
#pragma omp for
        for (size_t i = 0; i < n4; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            for (int j = 0; j < 4; j++)
                p[4 * i + j] = to_bf16(((float)((s >> (16 * j)) & 0xffff) / 65536.0f - 0.5f) * 0.04f);
        }
    }
    for (size_t i = 4 * n4; i < n; i++) p[i] = to_bf16((float)(i - 4 * n4) * 0.001f);
}

/* An empty model with the config of that shape and its layer table; NULL when out of memory. */
static ks_model *random_config(int dim, int hidden, int layers, int heads, int kv_heads, int vocab) {
    ks_model *m = NULL;
    ks_error err = {0};
    if (ks_model_alloc(&m, &err)) return NULL;
    ks_config *c = &m->cfg;
    c->dim = dim;
    c->hidden_dim = hidden;
    c->n_layers = layers;
    c->n_heads = heads;
    c->n_kv_heads = kv_heads;
    c->head_dim = dim / heads;
    c->vocab_size = vocab;
    c->max_seq_len = 2048;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tie_embeddings = false;
    if (ks_model_alloc_layers(m, &err)) {
        ks_model_close(m);
        return NULL;
    }
    return m;
}

/* Matrices and norm-weight vectors of a model of m's shape: (count of matrix elements, count of
 * norm elements). */
static void random_counts(const ks_model *m, size_t *n_mat, size_t *n_norm) {
    const ks_config *c = &m->cfg;
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    *n_mat = 2 * V * d + (2 * q * d + 2 * kv * d + 3 * d * h) * (size_t)c->n_layers;
    *n_norm = d + 2 * d * (size_t)c->n_layers;
}

/* Point m's tensors into mat (matrices one after another, esz bytes per element, dtype dt) and
 * norms (the f32 norm vectors). */
static void bind_random(ks_model *m, unsigned char *mat, size_t esz, ks_dtype dt, float *norms) {
    const ks_config *c = &m->cfg;
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
#define TAKE(dst, n) (dst = norms, norms += (n))
#define TAKE_W(dst, n) (dst = (ks_weight){mat, dt}, mat += (n) * esz)
    TAKE_W(m->tok_embeddings, V * d);
    TAKE_W(m->output, V * d);
    TAKE(m->final_norm, d);
    for (int l = 0; l < c->n_layers; l++) {
        ks_layer_weights *L = &m->layers[l];
        TAKE(L->attn_norm, d);
        TAKE(L->ffn_norm, d);
        TAKE_W(L->wq, q * d);
        TAKE_W(L->wo, d * q);
        TAKE_W(L->wk, kv * d);
        TAKE_W(L->wv, kv * d);
        TAKE_W(L->w_gate, h * d);
        TAKE_W(L->w_up, h * d);
        TAKE_W(L->w_down, d * h);
    }
#undef TAKE
#undef TAKE_W
}

ks_model *bench_random_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab) {
    ks_model *m = random_config(dim, hidden, layers, heads, kv_heads, vocab);
    if (!m) return NULL;
    ks_error err = {0};
    size_t n_mat, n_norm;
    random_counts(m, &n_mat, &n_norm);
    size_t total = n_mat + n_norm;
    float *w = malloc(total * sizeof(float));
    if (!w || ks_model_own(m, w, &err)) { /* ks_model_own frees w when it fails */
        ks_model_close(m);
        return NULL;
    }
    bench_fill_random(w, total, 1234);
    bind_random(m, (unsigned char *)w, sizeof(float), KS_DTYPE_F32, w + n_mat);
    m->n_params = total;
    return m;
}

/* A buffer for many GB, on 2 MiB boundaries and advised to use huge pages, so the parallel
 * first touch does not spend its time in 4 KiB page faults. free() releases it. */
static void *alloc_big(size_t bytes) {
    const size_t A = (size_t)2 << 20;
    size_t rounded = (bytes + A - 1) / A * A;
    void *p = aligned_alloc(A, rounded ? rounded : A);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, rounded, MADV_HUGEPAGE); /* advice only: failure changes nothing */
#endif
    return p;
}

ks_model *bench_random_model_dtype(int dim, int hidden, int layers, int heads, int kv_heads,
                                   int vocab, ks_dtype dtype) {
    if (dtype == KS_DTYPE_F32) return bench_random_model(dim, hidden, layers, heads, kv_heads, vocab);
    if (dtype != KS_DTYPE_BF16) return NULL;
    ks_model *m = random_config(dim, hidden, layers, heads, kv_heads, vocab);
    if (!m) return NULL;
    ks_error err = {0};
    size_t n_mat, n_norm;
    random_counts(m, &n_mat, &n_norm);
    uint16_t *w = alloc_big(n_mat * sizeof(uint16_t));
    float *nw = NULL;
    if (!w || ks_model_own(m, w, &err) || !(nw = malloc(n_norm * sizeof(float))) ||
        ks_model_own(m, nw, &err)) { /* ks_model_own frees what it cannot take */
        ks_model_close(m);
        return NULL;
    }
    bench_fill_random_bf16(w, n_mat, 1234);
    /* norm weights near 1, as trained models have them, so activations keep their scale */
    for (size_t i = 0; i < n_norm; i++) nw[i] = 1.0f;
    bind_random(m, (unsigned char *)w, sizeof(uint16_t), KS_DTYPE_BF16, nw);
    m->n_params = n_mat + n_norm;
    snprintf(m->weight_dtype, sizeof m->weight_dtype, "bf16");
    return m;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
