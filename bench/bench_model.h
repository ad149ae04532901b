/* bench_model.h — what the benchmarks share: random weights, and a random f32 model at a
 * real shape built in memory (no file), so each benchmark measures the same model. */
#ifndef KS_BENCH_MODEL_H
#define KS_BENCH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model_private.h"

/* n uniform values in [-0.02, 0.02), deterministic for a seed (xorshift per OpenMP thread). */
void bench_fill_random(float *p, size_t n, uint64_t seed);
/* A model of that shape with f32 weights (head_dim = dim / heads, untied output, context 2048);
 * NULL when out of memory. Free with ks_model_close. */
ks_model *bench_random_model(int dim, int hidden, int layers, int heads, int kv_heads, int vocab);

#endif
