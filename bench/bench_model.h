/* bench_model.h — what the benchmarks share: random weights, and a random f32 model at a
 * real shape built in memory (no file), so each benchmark measures the same model. */
#ifndef KS_BENCH_MODEL_H
#define KS_BENCH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model_private.h"

/* A model shape by name: LLaMA-family hyperparameters (head_dim = dim / heads). */
typedef struct {
    const char *name;
    int dim, hidden, layers, heads, kv_heads, vocab;
} bench_shape;

/* n uniform values in [-0.02, 0.02), deterministic for a seed (xorshift per OpenMP thread). */
void bench_fill_random(float *p, size_t n, uint64_t seed);
/* n bf16 values (raw bits), uniform in [-0.02, 0.02) at 16-bit resolution rounded to nearest
 * even, deterministic for a seed and thread count; generated directly in parallel. */
void bench_fill_random_bf16(uint16_t *p, size_t n, uint64_t seed);
/* The median of v[0..n) (n >= 1); sorts v in place, so v[0] is then the minimum and v[n-1]
 * the maximum. */
double bench_median(double *v, int n);
/* A model of that shape with f32 weights (head_dim = dim / heads, untied output, context 2048);
 * NULL when out of memory. Free with ks_model_close. */
ks_model *bench_random_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab);
/* The same shape with its matrices (token embedding, output head and each layer's seven) stored
 * in dtype: KS_DTYPE_F32 gives bench_random_model's model; KS_DTYPE_BF16 stores them as a bf16
 * checkpoint would, generated in parallel in place (a 7B model, 13.5 GB, in seconds), with the
 * norm weights in f32. NULL when out of memory or for any other dtype. */
ks_model *bench_random_model_dtype(int dim, int hidden, int layers, int heads, int kv_heads,
                                   int vocab, ks_dtype dtype);

#endif
