/* bench_model.c — the random models and weights of bench/ (see bench_model.h). */
#include <stdlib.h>
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

ks_model *bench_random_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab) {
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
    if (ks_model_alloc_layers(m, &err)) return NULL;
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    size_t per_layer = 2 * d + d * d * 2 + 2 * kv * d + 3 * d * h;
    size_t total = 2 * (size_t)c->vocab_size * d + d + per_layer * c->n_layers;
    float *w = malloc(total * sizeof(float));
    if (!w || ks_model_own(m, w, &err)) return NULL;
    bench_fill_random(w, total, 1234);
    float *p = w;
#define TAKE(dst, n) (dst = p, p += (n))
#define TAKE_W(dst, n) (dst = (ks_weight){p, KS_DTYPE_F32}, p += (n))
    TAKE_W(m->tok_embeddings, c->vocab_size * d);
    TAKE_W(m->output, c->vocab_size * d);
    TAKE(m->final_norm, d);
    for (int l = 0; l < c->n_layers; l++) {
        ks_layer_weights *L = &m->layers[l];
        TAKE(L->attn_norm, d);
        TAKE(L->ffn_norm, d);
        TAKE_W(L->wq, d * d);
        TAKE_W(L->wo, d * d);
        TAKE_W(L->wk, kv * d);
        TAKE_W(L->wv, kv * d);
        TAKE_W(L->w_gate, h * d);
        TAKE_W(L->w_up, h * d);
        TAKE_W(L->w_down, d * h);
    }
#undef TAKE
#undef TAKE_W
    m->n_params = total;
    return m;
}
