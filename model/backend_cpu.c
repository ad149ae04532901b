/* backend_cpu.c — the CPU reference backend: every op of the forward pass on host memory,
 * OpenBLAS for GEMMs (single-threaded inside OpenMP threads), vector loops cloned for the
 * widest instructions the CPU has. The numerics are those of HF transformers' LlamaForCausalLM
 * in f32 (see forward.c); tests/test_reference.c holds it to that oracle. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend.h"

#ifdef KS_HAVE_OPENBLAS
void openblas_set_num_threads(int n);
#endif

/* Rows of a non-f32 weight converted at a time per thread: small enough to stay in cache,
 * large enough that a prefill GEMM on them runs at full speed. */
#define KS_PANEL_ROWS 32
/* rows per matmul call: a multiple of KS_PANEL_ROWS (see cpu_matmul) */
#define KS_MATMUL_CHUNK 64

typedef struct {
    ks_backend base;
    ks_backend_i table; /* cpu_i, with to_host/from_host set when staged */
    float *panel; /* (n_panel_threads, KS_PANEL_ROWS, max_in) f32 rows of a non-f32 weight */
    size_t panel_stride;
    int n_panel_threads;
} cpu_backend;

/* ------------------------------------------------------------------ vector kernels */

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
#include <immintrin.h>
__attribute__((target("avx,f16c"))) static void f16_to_f32_f16c(const uint8_t *src, float *dst,
                                                                 size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    if (i < n) ks_dtype_to_f32(KS_DTYPE_F16, src + 2 * i, dst + i, n - i);
}
/* Decode: rows r0..r1 of an f16 or bf16 matrix times x, converting 8 values at a time in
 * registers (F16C for f16; a 16-bit shift for bf16) so the row is read once and nothing is
 * written. */
__attribute__((target("avx2,fma,f16c"))) static void gemv_half_avx2(float *y, const uint8_t *w,
                                                                     const float *x, int in,
                                                                     int r0, int r1, bool bf16) {
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * in * 2;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        int i = 0;
        for (; i + 32 <= in; i += 32)
            for (int k = 0; k < 4; k++) {
                __m128i h = _mm_loadu_si128((const __m128i *)(row + 2 * (size_t)(i + 8 * k)));
                __m256 wv = bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                                 : _mm256_cvtph_ps(h);
                acc[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i + 8 * k), acc[k]);
            }
        __m256 a = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        __m128 hsum = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        hsum = _mm_add_ps(hsum, _mm_movehl_ps(hsum, hsum));
        hsum = _mm_add_ss(hsum, _mm_movehdup_ps(hsum));
        float sum = _mm_cvtss_f32(hsum);
        for (; i < in; i++) {
            float wf;
            ks_dtype_to_f32(bf16 ? KS_DTYPE_BF16 : KS_DTYPE_F16, row + 2 * (size_t)i, &wf, 1);
            sum += wf * x[i];
        }
        y[r] = sum;
    }
}

#define KS_HAVE_Q8_0_AVX2 1
/* Decode: rows r0..r1 of a Q8_0 matrix times x without converting the rows first. Each block
 * is d * sum(q * x): the int8 values are widened and multiplied in registers, so the row is
 * read once and nothing is written. Portable C could not do this faster than convert-then-dot
 * (SSE2 has no int8 widening); AVX2 can. */
__attribute__((target("avx2,fma,f16c"))) static void gemv_q8_0_avx2(float *y, const uint8_t *w,
                                                                     const float *x, int in,
                                                                     int r0, int r1) {
    const size_t row_bytes = (size_t)in / 32 * 34;
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int b = 0; b < in / 32; b++) {
            const uint8_t *blk = row + 34 * (size_t)b;
            const float *xb = x + 32 * (size_t)b;
            uint16_t dh = (uint16_t)(blk[0] | blk[1] << 8);
            __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
            __m256 s0 = _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2)))),
                _mm256_loadu_ps(xb));
            __m256 s1 = _mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 10)))),
                _mm256_loadu_ps(xb + 8));
            s0 = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 18)))),
                _mm256_loadu_ps(xb + 16), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 26)))),
                _mm256_loadu_ps(xb + 24), s1);
            acc0 = _mm256_fmadd_ps(d, s0, acc0);
            acc1 = _mm256_fmadd_ps(d, s1, acc1);
        }
        __m256 acc = _mm256_add_ps(acc0, acc1);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        y[r] = _mm_cvtss_f32(h);
    }
}
#else
static void f16_to_f32_f16c(const uint8_t *src, float *dst, size_t n) {
    ks_dtype_to_f32(KS_DTYPE_F16, src, dst, n);
}
#endif

static void weight_rows(const ks_weight *w, size_t cols, size_t r0, size_t n, float *dst) {
    const uint8_t *src = (const uint8_t *)w->data + r0 * ks_dtype_row_bytes(w->dtype, cols);
    if (w->dtype == KS_DTYPE_F32)
        memcpy(dst, src, n * cols * sizeof(float));
    else if (w->dtype == KS_DTYPE_F16 && ks_cpu_f16c())
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
static void matmul_rows(cpu_backend *s, int t, float *y, const float *x, const ks_weight *w, int B,
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
#ifdef KS_HAVE_Q8_0_AVX2
    if (B == 1 && ks_cpu_avx2_fma()) {
        if (w->dtype == KS_DTYPE_Q8_0) {
            gemv_q8_0_avx2(y, w->data, x, in, r0, r1);
            return;
        }
        if (w->dtype == KS_DTYPE_F16 || w->dtype == KS_DTYPE_BF16) {
            gemv_half_avx2(y, w->data, x, in, r0, r1, w->dtype == KS_DTYPE_BF16);
            return;
        }
    }
#endif
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
static void cpu_matmul(ks_backend *b, int n, float *const *ys, const ks_weight *const *ws,
                     const int *outs, const float *x, int B, int in) {
    cpu_backend *s = (cpu_backend *)b;
    int total = 0;
    for (int i = 0; i < n; i++) total += outs[i];
#pragma omp parallel num_threads(s->n_panel_threads) if ((size_t)B * in * total > 65536)
    {
        int nt = 1, t = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        t = omp_get_thread_num();
#endif
        /* Each W_i is cut into chunks of KS_MATMUL_CHUNK rows at fixed offsets, and each chunk
         * is one call of its own: the BLAS calls, hence every sum's order, are the same
         * whatever the number of threads, so results are bit-identical across thread counts
         * (koalascope audit promises identical results from 1 or K processes). The threads
         * take equal runs of the chunks of all the W_i stacked. */
        int chunks = 0;
        for (int i = 0; i < n; i++) chunks += (outs[i] + KS_MATMUL_CHUNK - 1) / KS_MATMUL_CHUNK;
        int c0 = (int)((long)chunks * t / nt), c1 = (int)((long)chunks * (t + 1) / nt);
        for (int i = 0, base = 0; i < n && base < c1; i++) {
            int ci = (outs[i] + KS_MATMUL_CHUNK - 1) / KS_MATMUL_CHUNK;
            for (int c = c0 > base ? c0 - base : 0; c < ci && base + c < c1; c++) {
                int r0 = c * KS_MATMUL_CHUNK, r1 = r0 + KS_MATMUL_CHUNK;
                if (r1 > outs[i]) r1 = outs[i];
                matmul_rows(s, t, ys[i], x, ws[i], B, in, outs[i], r0, r1);
            }
            base += ci;
        }
    }
}


/* 1 / sqrt(mean(x²) + eps) of one row, the sum in double */
static float rms_inv(const float *x, int dim, float eps) {
    double ss = 0.0;
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    return 1.0f / sqrtf((float)(ss / dim) + eps);
}

static void cpu_rmsnorm(ks_backend *b_, float *o, const float *x, const float *w, int B, int dim,
                        float eps) {
    (void)b_;
#pragma omp parallel for if (B > 8)
    for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * dim;
        float *ob = o + (size_t)b * dim;
        float r = rms_inv(xb, dim, eps);
        for (int i = 0; i < dim; i++) ob[i] = w[i] * (xb[i] * r);
    }
}

/* Rotate (B, n, head_dim) vectors at positions pos0.. in place. */
static void cpu_rope(ks_backend *b_, float *v, int B, int n, int hd, ks_rope_style style,
                     const float *cosv, const float *sinv) {
    (void)b_;
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

/* ------------------------------------------------------------------ attention */

static void cpu_kv_store(ks_backend *b_, float *cache, const float *src, int B, int n_kv, int hd,
                         int max_seq, int pos0) {
    (void)b_;
    for (int g = 0; g < n_kv; g++)
        for (int b = 0; b < B; b++)
            memcpy(cache + ((size_t)g * max_seq + pos0 + b) * hd,
                   src + (size_t)b * n_kv * hd + (size_t)g * hd, (size_t)hd * sizeof(float));
}

static void cpu_attn_scores(ks_backend *b_, float *att, const float *q, const float *kc, int B,
                            int pos0, int H, int kv_mul, int hd, int max_seq, float scale) {
    (void)b_;
    const int L = pos0 + B;
    const size_t q_dim = (size_t)H * hd, head_stride = (size_t)max_seq * hd;
    if (B == 1) {
#pragma omp parallel for if (L * hd > 4096)
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)h * hd;
            const float *kh = kc + (size_t)(h / kv_mul) * head_stride;
            float *ah = att + (size_t)h * L;
            for (int t = 0; t < L; t++) ah[t] = dot(qh, kh + (size_t)t * hd, hd) * scale;
        }
    } else {
#pragma omp parallel for
        for (int h = 0; h < H; h++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, L, hd, scale,
                        q + (size_t)h * hd, (int)q_dim, kc + (size_t)(h / kv_mul) * head_stride,
                        hd, 0.0f, att + (size_t)h * B * L, L);
    }
    /* causal mask: query b (absolute pos0 + b) sees keys 0..pos0 + b */
#pragma omp parallel for collapse(2) if ((size_t)H * B * L > 16384)
    for (int h = 0; h < H; h++)
        for (int b = 0; b < B; b++) {
            float *row = att + ((size_t)h * B + b) * L;
            for (int t = pos0 + b + 1; t < L; t++) row[t] = -INFINITY;
        }
}

static void cpu_softmax(ks_backend *b_, float *att, int rows, int L) {
    (void)b_;
#pragma omp parallel for if ((size_t)rows * L > 2048)
    for (int r = 0; r < rows; r++) {
        float *row = att + (size_t)r * L;
        float mx = -INFINITY;
        for (int t = 0; t < L; t++)
            if (row[t] > mx) mx = row[t];
        if (mx == -INFINITY) { /* a hook masked the whole row: attend nowhere */
            for (int t = 0; t < L; t++) row[t] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int t = 0; t < L; t++) {
            float e = expf(row[t] - mx);
            row[t] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int t = 0; t < L; t++) row[t] *= inv;
    }
}

static void cpu_attn_values(ks_backend *b_, float *z, const float *att, const float *vc, int B,
                            int pos0, int H, int kv_mul, int hd, int max_seq) {
    (void)b_;
    const int L = pos0 + B;
    const size_t q_dim = (size_t)H * hd, head_stride = (size_t)max_seq * hd;
    if (B == 1) {
#pragma omp parallel for if (L * hd > 4096)
        for (int h = 0; h < H; h++) {
            float *zh = z + (size_t)h * hd;
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
                        0.0f, z + (size_t)h * hd, (int)q_dim);
    }
}

/* ------------------------------------------------------------------ elementwise, memory */

static void cpu_embed(ks_backend *b_, float *x, const ks_weight *emb, const int *ids, int B,
                      int dim) {
    (void)b_;
    for (int b = 0; b < B; b++) weight_rows(emb, (size_t)dim, (size_t)ids[b], 1, x + (size_t)b * dim);
}

static void cpu_swiglu(ks_backend *b_, float *up, const float *gate, size_t n) {
    (void)b_;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        up[i] *= g / (1.0f + expf(-g));
    }
}

static void cpu_add(ks_backend *b_, float *x, const float *y, size_t n) {
    (void)b_;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* ------------------------------------------------------------------ backward ops
 * (backward.c). Parallel loops split their work at fixed boundaries, never by the thread
 * count, so gradients are bit-identical whatever the number of threads (as matmul's). */
/* Pieces a GEMM dimension of length len is cut into: a function of len alone (never of the
 * thread count, so every C element is computed by the same BLAS call whatever the threads),
 * enough tiles for up to 16-32 threads on large products, few enough that each call stays
 * efficient. */
static int gemm_pieces(int len) { return len >= 2048 ? 8 : len >= 256 ? 4 : len >= 128 ? 2 : 1; }

/* C[i] (M, N) = alpha op(A[i]) op(B[i]) + beta C[i]: one single-threaded BLAS call per batch
 * item and tile of C (gemm_pieces along M and along N, sizes rounded up to multiples of 16),
 * the tiles spread over the OpenMP threads. */
static void cpu_gemm(ks_backend *b_, bool ta, bool tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                     float beta, float *C, int ldc, long long sc, int batch, bool fast) {
    (void)b_;
    (void)fast;
    if (M <= 0 || N <= 0 || batch <= 0) return;
    const int pm = gemm_pieces(M), pn = gemm_pieces(N);
    const int tm = ((M + pm - 1) / pm + 15) / 16 * 16, tn = ((N + pn - 1) / pn + 15) / 16 * 16;
    const long items = (long)batch * pm * pn;
#pragma omp parallel for schedule(dynamic) if (items > 1 && (double)M * N * K * batch > 1e5)
    for (long it = 0; it < items; it++) {
        int i = (int)(it / (pm * pn)), tile = (int)(it % (pm * pn));
        int m0 = (tile / pn) * tm, n0 = (tile % pn) * tn;
        int m = M - m0 < tm ? M - m0 : tm, n = N - n0 < tn ? N - n0 : tn;
        if (m <= 0 || n <= 0) continue;
        /* rows m0.. of op(A) and of C; columns n0.. of op(B) and of C */
        const float *a = A + i * sa + (ta ? (size_t)m0 : (size_t)m0 * lda);
        const float *bb = B + i * sb + (tb ? (size_t)n0 * ldb : (size_t)n0);
        float *cc = C + i * sc + (size_t)m0 * ldc + n0;
        if (K <= 0) { /* no products: C = beta C */
            for (int r = 0; r < m; r++)
                for (int j = 0; j < n; j++)
                    cc[(size_t)r * ldc + j] = beta == 0.0f ? 0.0f : beta * cc[(size_t)r * ldc + j];
            continue;
        }
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, K, alpha, a, lda, bb, ldb, beta, cc, ldc);
    }
}

/* dx (B, in) = dy (B, out) · W + beta dx. A weight in another dtype is converted
 * KS_PANEL_ROWS rows at a time into the first thread's panel, and each panel's product added:
 * the values are those of converting the whole matrix, summed panel by panel. */
static void cpu_matmul_t(ks_backend *b_, float *dx, const ks_weight *w, const float *dy, int B,
                         int in, int out, float beta) {
    cpu_backend *s = (cpu_backend *)b_;
    if (w->dtype == KS_DTYPE_F32) {
        cpu_gemm(b_, false, false, B, in, out, 1.0f, dy, out, 0, w->data, in, 0, beta, dx, in, 0,
                 1, false);
        return;
    }
    for (int p = 0; p < out; p += KS_PANEL_ROWS) {
        int n = out - p < KS_PANEL_ROWS ? out - p : KS_PANEL_ROWS;
        weight_rows(w, (size_t)in, (size_t)p, (size_t)n, s->panel);
        cpu_gemm(b_, false, false, B, in, n, 1.0f, dy + p, out, 0, s->panel, in, 0,
                 p == 0 ? beta : 1.0f, dx, in, 0, 1, false);
    }
}

static void cpu_matmul_dw(ks_backend *b_, float *dW, const ks_weight *w, const float *dy,
                          const float *x, int B, int in, int out) {
    (void)w;
    cpu_gemm(b_, true, false, out, in, B, 1.0f, dy, out, 0, x, in, 0, 1.0f, dW, in, 0, 1, false);
}

static void cpu_rmsnorm_bwd(ks_backend *b_, float *dx, float *dw, const float *dy, const float *x,
                            const float *w, int B, int dim, float eps) {
    (void)b_;
    float *r = malloc((size_t)(B > 0 ? B : 1) * sizeof(float));
    bool keep = r != NULL; /* the row factors, for dw; recomputed where memory is short */
#pragma omp parallel for if (B > 8)
    for (int t = 0; t < B; t++) {
        const float *xt = x + (size_t)t * dim, *dyt = dy + (size_t)t * dim;
        float *dxt = dx + (size_t)t * dim;
        float rt = rms_inv(xt, dim, eps);
        double dot = 0.0;
        for (int i = 0; i < dim; i++) dot += (double)w[i] * dyt[i] * xt[i];
        float c = (float)(dot / dim) * rt * rt * rt;
        for (int i = 0; i < dim; i++) dxt[i] += rt * w[i] * dyt[i] - xt[i] * c;
        if (keep) r[t] = rt;
    }
    if (dw) {
        if (!keep) { /* sequential, one row factor at a time */
            for (int t = 0; t < B; t++) {
                const float *xt = x + (size_t)t * dim, *dyt = dy + (size_t)t * dim;
                float rt = rms_inv(xt, dim, eps);
                for (int i = 0; i < dim; i++) dw[i] += dyt[i] * xt[i] * rt;
            }
        } else {
#pragma omp parallel for if ((size_t)B * dim > 65536)
            for (int i = 0; i < dim; i++) {
                float acc = dw[i];
                for (int t = 0; t < B; t++)
                    acc += dy[(size_t)t * dim + i] * x[(size_t)t * dim + i] * r[t];
                dw[i] = acc;
            }
        }
    }
    free(r);
}

static void cpu_causal_mask(ks_backend *b_, float *att, int H, int B, int L, int pos0) {
    (void)b_;
#pragma omp parallel for collapse(2) if ((size_t)H * B * L > 16384)
    for (int h = 0; h < H; h++)
        for (int b = 0; b < B; b++) {
            float *row = att + ((size_t)h * B + b) * L;
            for (int t = pos0 + b + 1; t < L; t++) row[t] = -INFINITY;
        }
}

static void cpu_softmax_bwd(ks_backend *b_, float *d, const float *P, int rows, int L) {
    (void)b_;
#pragma omp parallel for if ((size_t)rows * L > 16384)
    for (int r = 0; r < rows; r++) {
        const float *p = P + (size_t)r * L;
        float *dr = d + (size_t)r * L;
        double s = 0.0;
        for (int u = 0; u < L; u++) s += (double)p[u] * dr[u];
        for (int u = 0; u < L; u++) dr[u] = p[u] * (dr[u] - (float)s);
    }
}

static void cpu_swiglu_bwd(ks_backend *b_, float *dgate, float *dup, const float *da,
                           const float *gate, const float *up, size_t n) {
    (void)b_;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float a = da[i], g = gate[i];
        float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = a * (g / (1.0f + expf(-g)));
        dgate[i] = a * up[i] * (sg * (1.0f + g * (1.0f - sg)));
    }
}

static void cpu_embed_bwd(ks_backend *b_, float *demb, const float *dx, const int *ids, int B,
                          int dim) {
    (void)b_;
    for (int t = 0; t < B; t++) {
        float *row = demb + (size_t)ids[t] * dim;
        const float *d = dx + (size_t)t * dim;
        for (int i = 0; i < dim; i++) row[i] += d[i];
    }
}

static void cpu_copy(ks_backend *b_, float *dst, const float *src, size_t n) {
    (void)b_;
    memcpy(dst, src, n * sizeof(float));
}

static void cpu_zero(ks_backend *b_, float *p, size_t n) {
    (void)b_;
    memset(p, 0, n * sizeof(float));
}

static void *cpu_alloc(ks_backend *b_, size_t bytes) {
    (void)b_;
    return calloc(bytes ? bytes : 1, 1);
}

static void cpu_release(ks_backend *b_, void *p) {
    (void)b_;
    free(p);
}

static void cpu_destroy(ks_backend *b_) {
    cpu_backend *b = (cpu_backend *)b_;
    if (!b) return;
    free(b->panel);
    free(b);
}

static const ks_backend_i cpu_i = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .to_host = NULL,
    .from_host = NULL,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attn_scores = cpu_attn_scores,
    .softmax = cpu_softmax,
    .attn_values = cpu_attn_values,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .gemm = cpu_gemm,
    .matmul_t = cpu_matmul_t,
    .matmul_dw = cpu_matmul_dw,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .causal_mask = cpu_causal_mask,
    .softmax_bwd = cpu_softmax_bwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .embed_bwd = cpu_embed_bwd,
    .copy = cpu_copy,
    .zero = cpu_zero,
};

/* "cpu-copy": the same ops, but the forward must treat its memory as device memory — hooks are
 * handed staged copies and logits are copied out — so the forward's path for device backends
 * is tested on machines with no GPU. */
static void copy_floats(ks_backend *b_, float *dst, const float *src, size_t n) {
    (void)b_;
    memcpy(dst, src, n * sizeof(float));
}

static void no_wait(ks_backend *b_) { (void)b_; }


ks_status ks_backend_cpu_create(size_t max_in, bool staged, ks_backend **out, ks_error *err) {
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) return ks_error_set(err, KS_ERR_NOMEM, "cpu backend: out of memory");
    b->table = cpu_i;
    if (staged) {
        b->table.name = "cpu-copy";
        b->table.to_host = copy_floats;
        b->table.from_host = copy_floats;
        /* the deferred path of read-only hooks too (a copy now is a copy done) */
        b->table.to_host_async = copy_floats;
        b->table.copies_wait = no_wait;
    }
    b->base.i = &b->table;
    b->n_panel_threads = 1;
#ifdef _OPENMP
    b->n_panel_threads = omp_get_max_threads();
#endif
#ifdef KS_HAVE_OPENBLAS
    /* BLAS calls run single-threaded inside our OpenMP threads (see cpu_matmul) */
    openblas_set_num_threads(1);
#endif
    b->panel_stride = (size_t)KS_PANEL_ROWS * max_in;
    b->panel = calloc((size_t)b->n_panel_threads * b->panel_stride, sizeof(float));
    if (!b->panel) {
        free(b);
        return ks_error_set(err, KS_ERR_NOMEM, "cpu backend: out of memory for weight panels");
    }
    *out = &b->base;
    return KS_OK;
}
