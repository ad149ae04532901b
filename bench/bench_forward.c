/* bench_forward.c — prefill and decode speed of the CPU engine on random LLaMA-shaped models,
 * each as a ratio to this machine's own limit measured in the same run:
 *   decode:  (f32 weight bytes read per token x tokens/s) / measured read bandwidth
 *            (a parallel streaming sum over a buffer much larger than the caches);
 *   prefill: achieved GFLOP/s (2 x matmul params x tokens, plus attention's QK^T and PV)
 *            / the BLAS SGEMM's own GFLOP/s on the model's largest GEMM at the same M.
 * Nothing here is asserted; the figures go to docs/PERFORMANCE.md.
 *
 * --dtype f16|bf16|q8_0 stores the matrices in that dtype (as a checkpoint would), so decode
 * reads fewer bytes and converts rows on the fly; the ratios use the stored bytes.
 *
 * Usage: bench_forward [--shape 110m|1b|all] [--dtype f32|f16|bf16|q8_0] [--prefill N]
 *                      [--decode N] [--threads N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_model.h"
#include "model_private.h"


/* stories110M (llama2.c) and TinyLlama-1.1B hyperparameters */
static const bench_shape shapes[] = {
    {"110m", 768, 2048, 12, 12, 12, 32000},
    {"1b", 2048, 5632, 22, 32, 4, 32000},
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}


/* f32 -> f16, round to nearest even (bench-only: builds weights to time, not to trust) */
static uint16_t to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, mant = x & 0x7fffff;
    int ex = (int)e - 127 + 15;
    if (ex >= 31) return (uint16_t)(sign | 0x7c00);
    if (ex <= 0) return (uint16_t)sign; /* tiny values flush to zero: fine for timing */
    uint32_t h = sign | ((uint32_t)ex << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

/* Re-store a (rows, cols) f32 matrix in dtype t. */
static bool restore(ks_model *m, ks_weight *w, size_t rows, size_t cols, ks_dtype t) {
    if (t == KS_DTYPE_F32) return true;
    const float *src = w->data;
    size_t bytes = ks_dtype_row_bytes(t, cols) * rows;
    uint8_t *dst = malloc(bytes);
    ks_error err = {0};
    if (!dst || ks_model_own(m, dst, &err)) return false;
    size_t n = rows * cols;
    if (t == KS_DTYPE_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h = to_f16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
    } else if (t == KS_DTYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, &src[i], 4);
            uint16_t h = (uint16_t)(x >> 16);
            memcpy(dst + 2 * i, &h, 2);
        }
    } else if (t == KS_DTYPE_Q8_0) {
        for (size_t b = 0; b < n / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(src[b * 32 + j]));
            float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
            uint16_t dh = to_f16(d);
            memcpy(dst + 34 * b, &dh, 2);
            for (int j = 0; j < 32; j++) dst[34 * b + 2 + j] = (uint8_t)(int8_t)lrintf(src[b * 32 + j] * id);
        }
    } else {
        return false;
    }
    *w = (ks_weight){dst, t};
    return true;
}

/* A hook that is asked about every tensor and wants none: the cost of having hooks on. */
static bool decline_all(const ks_hook_tensor *t, bool ask, void *user) {
    (void)t;
    (void)ask;
    ++*(long *)user;
    return false;
}

static ks_model *random_model(const bench_shape *sh, ks_dtype dt, size_t *n_params, double *matrix_bytes) {
    ks_model *m = bench_random_model(sh->dim, sh->hidden, sh->layers, sh->heads, sh->kv_heads, sh->vocab);
    if (!m) return NULL;
    const ks_config *c = &m->cfg;
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    size_t total = m->n_params;
    *n_params = total;
    /* every matrix but the input embedding (one row read per token) in the chosen dtype */
    size_t q = (size_t)c->n_heads * c->head_dim;
    bool ok = restore(m, &m->output, (size_t)c->vocab_size, d, dt);
    *matrix_bytes = (double)ks_dtype_row_bytes(dt, d) * c->vocab_size;
    for (int l = 0; ok && l < c->n_layers; l++) {
        ks_layer_weights *L = &m->layers[l];
        struct { ks_weight *w; size_t r, k; } mats[] = {
            {&L->wq, q, d}, {&L->wk, kv, d}, {&L->wv, kv, d}, {&L->wo, d, q},
            {&L->w_gate, h, d}, {&L->w_up, h, d}, {&L->w_down, d, h}};
        for (size_t i = 0; ok && i < sizeof mats / sizeof mats[0]; i++) {
            ok = restore(m, mats[i].w, mats[i].r, mats[i].k, dt);
            *matrix_bytes += (double)ks_dtype_row_bytes(dt, mats[i].k) * mats[i].r;
        }
    }
    if (!ok) return NULL;
    return m;
}

/* Read bandwidth: parallel sum over a 2 GiB buffer, best of 5 passes. Sixteen independent
 * accumulators per thread so the loop vectorises and is bound by memory, not by the latency
 * of one dependent chain of additions. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* the widest vectors the CPU has, so the limit is not understated */
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static float sum_block(const float *a, size_t n) {
    float acc[16] = {0};
    for (size_t i = 0; i < n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j];
    float t = 0;
    for (int j = 0; j < 16; j++) t += acc[j];
    return t;
}

static double measure_bandwidth(void) {
    size_t n = (size_t)1 << 29; /* floats = 2 GiB */
    float *a = malloc(n * sizeof(float));
    if (!a) return 0;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double best = 0;
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        float total = 0;
#pragma omp parallel reduction(+ : total)
        {
            int nt = 1, t = 0;
#ifdef _OPENMP
            nt = omp_get_num_threads();
            t = omp_get_thread_num();
#endif
            size_t chunk = n / 16 / (size_t)nt * 16;
            total += sum_block(a + chunk * (size_t)t, t == nt - 1 ? n - chunk * (size_t)t : chunk);
        }
        double dt = now() - t0;
        sink += total;
        double gbs = n * sizeof(float) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    (void)sink;
    free(a);
    return best;
}

#ifdef KS_HAVE_OPENBLAS
void openblas_set_num_threads(int n);
#endif

/* SGEMM GFLOP/s for (M x K) * (K x N)^T on all threads with OpenBLAS's own threading (the
 * engine runs BLAS single-threaded inside its own threads), best of 5. */
static double measure_gemm(int M, int K, int N, int threads) {
#ifdef KS_HAVE_OPENBLAS
    openblas_set_num_threads(threads);
#else
    (void)threads;
#endif
    float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)N * K),
          *c = malloc(sizeof(float) * (size_t)M * N);
    bench_fill_random(a, (size_t)M * K, 1);
    bench_fill_random(b, (size_t)N * K, 2);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        double dt = now() - t0;
        double g = 2.0 * M * K * N / dt / 1e9;
        if (g > best) best = g;
    }
    free(a);
    free(b);
    free(c);
#ifdef KS_HAVE_OPENBLAS
    openblas_set_num_threads(1);
#endif
    return best;
}

int main(int argc, char **argv) {
    const char *which = "all";
    ks_dtype dt = KS_DTYPE_F32;
    int n_prefill = 512, n_decode = 32, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--prefill") && i + 1 < argc) n_prefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode") && i + 1 < argc) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *n = argv[++i];
            if (!strcmp(n, "f32")) dt = KS_DTYPE_F32;
            else if (!strcmp(n, "f16")) dt = KS_DTYPE_F16;
            else if (!strcmp(n, "bf16")) dt = KS_DTYPE_BF16;
            else if (!strcmp(n, "q8_0")) dt = KS_DTYPE_Q8_0;
            else {
                fprintf(stderr, "bench_forward: --dtype: '%s' is not f32, f16, bf16 or q8_0\n", n);
                return 1;
            }
        }
        else {
            fprintf(stderr, "usage: %s [--shape 110m|1b|all] [--dtype f32|f16|bf16|q8_0] [--prefill N] [--decode N] [--threads N]\n", argv[0]);
            return 1;
        }
    }
    if (n_prefill < 1 || n_decode < 1) {
        fprintf(stderr, "bench_forward: --prefill and --decode must be >= 1\n");
        return 1;
    }
    int nthreads = 1;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
    nthreads = omp_get_max_threads();
#endif
    printf("threads: %d\n", nthreads);
    double bw = measure_bandwidth();
    printf("memory read bandwidth: %.2f GB/s (parallel streaming sum, best of 5)\n", bw);
    printf("matrices stored as %s\n\n", ks_dtype_name(dt));
    printf("%-5s %9s %8s | %10s %9s %7s | %9s %10s %9s %7s\n", "shape", "params", "prompt",
           "prefill/s", "GFLOP/s", "ratio", "decode/s", "GB/s", "limit/s", "ratio");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const bench_shape *sh = &shapes[si];
        if (strcmp(which, "all") && strcmp(which, sh->name)) continue;
        size_t np = 0;
        double mat_bytes = 0;
        ks_model *m = random_model(sh, dt, &np, &mat_bytes);
        if (!m) {
            fprintf(stderr, "bench_forward: cannot build the %s model (out of memory?)\n", sh->name);
            return 1;
        }
        ks_session *s = NULL;
        ks_error err = {0};
        ks_session_options so = {.max_seq_len = n_prefill + n_decode + 1, .max_batch = n_prefill,
                                 .n_threads = threads};
        if (ks_session_create(m, &so, &s, &err)) {
            fprintf(stderr, "bench_forward: %s\n", err.msg);
            return 1;
        }
        int *ids = malloc(sizeof(int) * (size_t)n_prefill);
        for (int i = 0; i < n_prefill; i++) ids[i] = (i * 7919) % sh->vocab;
        float *logits = malloc(sizeof(float) * sh->vocab);
        /* warm-up: touch every weight once */
        ks_session_forward(s, ids, 8, KS_LOGITS_LAST, logits, &err);
        ks_session_reset(s);

        double t0 = now();
        ks_session_forward(s, ids, n_prefill, KS_LOGITS_LAST, logits, &err);
        double t_pre = now() - t0;
        /* FLOPs: every matmul weight once per token (output layer only for the last token),
         * plus QK^T and PV over the causal triangle */
        size_t d = (size_t)sh->dim, vocab = (size_t)sh->vocab;
        double matmul_params = (double)(np - 2 * vocab * d - d) - (double)sh->layers * 2 * d;
        double attn = 2.0 * 2.0 * sh->layers * d * ((double)n_prefill * (n_prefill + 1) / 2);
        double flops = 2.0 * matmul_params * n_prefill + 2.0 * vocab * d + attn;
        double gflops = flops / t_pre / 1e9;
        double gemm = measure_gemm(n_prefill, sh->dim, sh->hidden, nthreads);

        t0 = now();
        int tok = ids[n_prefill - 1];
        for (int i = 0; i < n_decode; i++) ks_session_forward(s, &tok, 1, KS_LOGITS_LAST, logits, &err);
        double t_dec = now() - t0;
        double dec_tps = n_decode / t_dec;
        /* bytes per decoded token: all weights but the input embedding (one row), plus the
         * keys and values cached so far (read by attention), at the mean decode position */
        double kv_bytes = 2.0 * sh->layers * ((double)sh->kv_heads * (sh->dim / sh->heads)) *
                          (n_prefill + n_decode / 2.0) * sizeof(float);
        double norm_bytes = (double)(2 * sh->layers + 1) * d * sizeof(float);
        double bytes = mat_bytes + norm_bytes + kv_bytes;
        double limit = bw * 1e9 / bytes;
        printf("%-5s %8.0fM %8d | %10.1f %9.1f %7.2f | %9.2f %10.2f %9.2f %7.2f\n", sh->name,
               np / 1e6, n_prefill, n_prefill / t_pre, gflops, gflops / gemm, dec_tps,
               dec_tps * bytes / 1e9, limit, dec_tps / limit);
        printf("      (SGEMM %dx%dx%d: %.1f GFLOP/s)\n", n_prefill, sh->dim, sh->hidden, gemm);
        /* the same decode with a hook installed that declines everything */
        long asked = 0;
        ks_session_set_hook(s, decline_all, &asked);
        ks_session_truncate(s, n_prefill);
        t0 = now();
        for (int i = 0; i < n_decode; i++) ks_session_forward(s, &tok, 1, KS_LOGITS_LAST, logits, &err);
        double t_hook = now() - t0;
        ks_session_set_hook(s, NULL, NULL);
        printf("      (decode with a hook asked %ld times that declines: %.2f tok/s, %.1f%% of unhooked)\n",
               asked, n_decode / t_hook, 100.0 * t_dec / t_hook);
        fflush(stdout);
        free(ids);
        free(logits);
        ks_session_free(s);
        ks_model_close(m);
    }
    return 0;
}
