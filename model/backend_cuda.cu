/* backend_cuda.cu — the CUDA backend: the ops of backend.h on device 0, cuBLAS for the GEMMs
 * and our kernels for the rest. Every op has its twin in backend_cpu.c, which is the
 * reference tests/test_cuda.c holds this file to, op by op and on whole models.
 *
 * Memory. Weights are uploaded once (prepare, or on first use for a weight the model did not
 * list) into a table keyed by the host pointer, in the checkpoint's dtype where cuBLAS takes
 * it (f32, f16, bf16); GGML block formats are dequantised to f16 on the host at upload.
 * Activations, the KV cache and the attention scores are f32 buffers that forward.c
 * allocates through alloc.
 *
 * Numerics.
 *  - f32 weights: SGEMM in f32 (cuBLAS's default math mode, no TF32), so an f32 model matches
 *    the CPU to f32 rounding.
 *  - f16/bf16 weights: prefill GEMMs round the activations to the weight's type and run on
 *    tensor cores with f32 accumulation and f32 output (cublasGemmEx, CUBLAS_COMPUTE_32F);
 *    small batches (decode) run our GEMV, which keeps the activations in f32 and streams the
 *    16-bit weight rows once (it is bound by memory bandwidth, so it reads each weight byte once
 *    for up to KS_GEMV_MAX_B rows of activations).
 *  - Attention (KS_CUDA_ATTN=auto|flash|tc|eager; auto unless set):
 *    - eager: scores by strided-batched SGEMM, the causal mask, a softmax kernel, values by
 *      SGEMM; exact in f32. Always the path of a layer whose scores or pattern a hook reads
 *      (forward.c asks attn_fused only when no hook does), and of f32 models in auto.
 *    - decode (batches up to KS_DECODE_MAX_B): one f32 kernel per (head, query), exact; every
 *      mode but eager.
 *    - flash: the fused kernel (online softmax, scores never materialised), Q K^T and P V in
 *      bf16 on tensor cores with f32 accumulation; head sizes 64 and 128. auto's choice for
 *      16-bit models.
 *    - tc: the same numerics through cuBLAS with the chunk's scores materialised (at most
 *      KS_TC_MAX_BYTES); auto's choice for 16-bit models whose head size flash lacks.
 *  - RMSNorm and softmax sum in double, like the CPU.
 *
 * Errors. Device work is asynchronous: the first CUDA or cuBLAS error is kept (sticky) and
 * returned by check(), which forward.c calls after every chunk. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
}

#define KS_GEMV_MAX_B 4          /* batches up to this run the GEMV kernel for 16-bit weights */
#define KS_UPLOAD_RING (8u << 20) /* pinned bytes for small host-to-device copies */

typedef enum { ATTN_AUTO, ATTN_FLASH, ATTN_TC, ATTN_EAGER } attn_mode;

/* The tensor-core attention (attn_tc) materialises one chunk's scores: it is taken while they
 * fit in this many bytes, and the flash kernel (memory independent of the context) beyond. */
#define KS_TC_MAX_BYTES ((size_t)1 << 30)

typedef struct {
    const void *host; /* key */
    void *dev;
    ks_dtype dtype;      /* KS_DTYPE_F32, _F16 or _BF16 on the device */
    ks_dtype host_dtype; /* as stored at host (reload converts it again) */
    size_t rows, cols;
} wentry;

typedef struct {
    ks_backend base;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* first error met (sticky) */
    ks_status err_code;
    char err_msg[sizeof(((ks_error *)0)->msg)];
    /* weight table: open addressing, capacity a power of two */
    wentry *tab;
    size_t tab_cap, tab_n;
    size_t weight_bytes;
    /* scratch */
    void *xh; /* activations rounded to 16 bits for tensor-core GEMMs */
    size_t xh_cap;
    void *att16; /* q, K and V of one call rounded to bf16 for the fused attention */
    size_t att16_cap;
    void *tcs; /* the tensor-core attention's scores (f32), then probabilities (bf16) in place */
    size_t tcs_cap;
    int *ids; /* token ids on the device */
    size_t ids_cap;
    /* the backward's scratch: gemm's operands rounded to bf16, a 16-bit weight widened to f32
     * (matmul_t of f16 weights), rmsnorm_bwd's row factors */
    void *g16a, *g16b;
    size_t g16a_cap, g16b_cap;
    void *wf32;
    size_t wf32_cap;
    void *rbuf;
    size_t rbuf_cap;
    /* asynchronous copies to the host (to_host_async): a ring of device snapshots taken in
     * stream order, drained to pinned host memory on a copy stream of its own */
    bool async_tried, async_ok;
    cudaStream_t cstream;
    cudaEvent_t ev_snap;
    unsigned char *snap;
    size_t snap_cap, snap_pos;
    unsigned char *ring; /* pinned */
    size_t ring_pos;
    size_t max_in;
    attn_mode attn;
    bool model_16bit; /* set by prepare: auto attention takes the fused path */
    int flash_smem_set; /* bit per head size: the fused kernel's shared memory limit raised */
    /* KS_CUDA_PROFILE=1: device time per op, from event pairs harvested at every check() */
    bool prof;
    cudaEvent_t *ev; /* pairs */
    int *ev_op;
    int ev_n, ev_cap;
    double prof_ms[32];
    long prof_calls[32];
    double prof_wall_ms; /* first begin to last end of each harvest, summed */
} cuda_backend;

/* ops the profiler tells apart */
enum { P_EMBED, P_RMSNORM, P_SGEMM, P_GEMM16, P_GEMV, P_ROUND, P_ROPE, P_KV, P_SCORES, P_MASK,
       P_SOFTMAX, P_VALUES, P_FLASH, P_DECODE_ATT, P_TC, P_SWIGLU, P_ADD, P_D2H, P_H2D,
       P_BGEMM, P_BGEMM16, P_BMATMUL, P_BELEM, P_N };
static const char *const prof_names[P_N] = {
    "embed", "rmsnorm", "matmul f32 (SGEMM)", "matmul 16-bit (GemmEx)", "matmul 16-bit (GEMV)",
    "round to 16 bits", "rope", "kv_store", "attn scores (SGEMM)", "causal mask", "softmax",
    "attn values (SGEMM)", "attention fused (flash)", "attention decode (f32)",
    "attention tensor-core (tc)", "swiglu", "add",
    "copy device->host", "copy host->device", "backward GEMM f32 (SGEMM)",
    "backward GEMM bf16 (GemmEx)", "backward matmul_t / matmul_dw", "backward elementwise"};

static cuda_backend *CB(ks_backend *b) { return (cuda_backend *)b; }

/* ------------------------------------------------------------------ errors */

static void fail(cuda_backend *b, ks_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(cuda_backend *b, ks_status code, const char *fmt, ...) {
    if (b->err_code) return; /* keep the first */
    b->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err_msg, sizeof b->err_msg, fmt, ap);
    va_end(ap);
}

/* true when e is success; else records it */
static bool cu_ok(cuda_backend *b, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return true;
    fail(b, e == cudaErrorMemoryAllocation ? KS_ERR_NOMEM : KS_ERR_BACKEND, "CUDA %s: %s", what,
         cudaGetErrorString(e));
    return false;
}

static bool blas_ok(cuda_backend *b, cublasStatus_t s, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    fail(b, KS_ERR_BACKEND, "cuBLAS %s: %s", what, cublasGetStatusString(s));
    return false;
}

/* a kernel launch's own error (bad configuration); execution errors surface at the next sync */
static void launched(cuda_backend *b, const char *what) { cu_ok(b, cudaGetLastError(), what); }

static void prof_harvest(cuda_backend *b) {
    if (!b->ev_n) return;
    if (cudaStreamSynchronize(b->stream) != cudaSuccess) {
        cu_ok(b, cudaGetLastError(), "profiler");
        b->ev_n = 0;
        return;
    }
    for (int i = 0; i < b->ev_n; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, b->ev[2 * i], b->ev[2 * i + 1]) == cudaSuccess) {
            b->prof_ms[b->ev_op[i]] += ms;
            b->prof_calls[b->ev_op[i]]++;
        }
    }
    float wall = 0.0f;
    if (cudaEventElapsedTime(&wall, b->ev[0], b->ev[2 * b->ev_n - 1]) == cudaSuccess)
        b->prof_wall_ms += wall;
    cudaGetLastError();
    b->ev_n = 0;
}

/* returns the pair index to close with prof_end, or -1 when not profiling */
static int prof_begin(cuda_backend *b, int op) {
    if (!b->prof) return -1;
    if (b->ev_n == b->ev_cap) prof_harvest(b);
    if (b->ev_n == b->ev_cap) return -1;
    int i = b->ev_n++;
    b->ev_op[i] = op;
    cudaEventRecord(b->ev[2 * i], b->stream);
    return i;
}

static void prof_end(cuda_backend *b, int i) {
    if (i >= 0) cudaEventRecord(b->ev[2 * i + 1], b->stream);
}

static void prof_report(cuda_backend *b) {
    prof_harvest(b);
    double tot = 0.0;
    for (int k = 0; k < P_N; k++) tot += b->prof_ms[k];
    fprintf(stderr, "cuda profile (KS_CUDA_PROFILE=1): %.2f ms of device time in ops, %.2f ms "
                    "from the first op to the last of each chunk (the rest: gaps, host-bound)\n",
            tot, b->prof_wall_ms);
    for (int k = 0; k < P_N; k++)
        if (b->prof_calls[k])
            fprintf(stderr, "  %-28s %8ld calls %10.3f ms %5.1f%%  %9.2f us/call\n", prof_names[k],
                    b->prof_calls[k], b->prof_ms[k], tot > 0 ? 100.0 * b->prof_ms[k] / tot : 0.0,
                    1e3 * b->prof_ms[k] / b->prof_calls[k]);
}

static unsigned blocks_for(size_t n, unsigned threads) {
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g > 0x7fffffffu ? 0x7fffffffu : (g ? g : 1));
}

/* ------------------------------------------------------------------ weight table */

static size_t ptr_hash(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

static wentry *tab_find(cuda_backend *b, const void *host) {
    if (!b->tab_cap) return NULL;
    for (size_t i = ptr_hash(host) & (b->tab_cap - 1);; i = (i + 1) & (b->tab_cap - 1)) {
        if (b->tab[i].host == host) return &b->tab[i];
        if (!b->tab[i].host) return NULL;
    }
}

static wentry *tab_insert(cuda_backend *b, const void *host) {
    if ((b->tab_n + 1) * 2 > b->tab_cap) {
        size_t cap = b->tab_cap ? b->tab_cap * 2 : 256;
        wentry *t = (wentry *)calloc(cap, sizeof *t);
        if (!t) return NULL;
        for (size_t i = 0; i < b->tab_cap; i++) {
            if (!b->tab[i].host) continue;
            size_t j = ptr_hash(b->tab[i].host) & (cap - 1);
            while (t[j].host) j = (j + 1) & (cap - 1);
            t[j] = b->tab[i];
        }
        free(b->tab);
        b->tab = t;
        b->tab_cap = cap;
    }
    size_t i = ptr_hash(host) & (b->tab_cap - 1);
    while (b->tab[i].host) i = (i + 1) & (b->tab_cap - 1);
    b->tab[i].host = host;
    b->tab_n++;
    return &b->tab[i];
}

static bool copy_weight(cuda_backend *b, void *dev, const void *host, ks_dtype t, size_t rows,
                        size_t cols);

/* The device copy of a (rows, cols) matrix stored in dtype t at host (uploaded on first use);
 * NULL after recording an error. */
static const wentry *weight(cuda_backend *b, const void *host, ks_dtype t, size_t rows,
                            size_t cols) {
    wentry *e = tab_find(b, host);
    if (e) {
        if (e->rows != rows || e->cols != cols) {
            fail(b, KS_ERR_ARG, "weight at %p used as (%zu, %zu) after upload as (%zu, %zu)",
                 host, rows, cols, e->rows, e->cols);
            return NULL;
        }
        return e;
    }
    bool direct = t == KS_DTYPE_F32 || t == KS_DTYPE_F16 || t == KS_DTYPE_BF16;
    ks_dtype dt = direct ? t : KS_DTYPE_F16;
    size_t esz = dt == KS_DTYPE_F32 ? 4 : 2;
    size_t bytes = rows * cols * esz;
    void *dev = NULL;
    if (!cu_ok(b, cudaMalloc(&dev, bytes ? bytes : 1), "upload of a weight")) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        b->err_code = KS_ERR_NOMEM;
        snprintf(b->err_msg, sizeof b->err_msg,
                 "CUDA: out of device memory uploading a (%zu x %zu) %s weight (%zu MB; %zu MB "
                 "free of %zu MB, %zu MB of weights uploaded)",
                 rows, cols, ks_dtype_name(dt), bytes >> 20, fr >> 20, tot >> 20,
                 b->weight_bytes >> 20);
        return NULL;
    }
    if (!copy_weight(b, dev, host, t, rows, cols)) {
        cudaFree(dev);
        return NULL;
    }
    e = tab_insert(b, host);
    if (!e) {
        cudaFree(dev);
        fail(b, KS_ERR_NOMEM, "CUDA backend: out of host memory for the weight table");
        return NULL;
    }
    e->dev = dev;
    e->dtype = dt;
    e->host_dtype = t;
    e->rows = rows;
    e->cols = cols;
    b->weight_bytes += bytes;
    return e;
}

/* The host weight (rows, cols) of dtype t into its device copy dev: as it is for f32, f16,
 * bf16, else dequantised to f16 on the host a panel at a time. Synchronous (the host memory
 * may change or go after it). false after recording an error. */
static bool copy_weight(cuda_backend *b, void *dev, const void *host, ks_dtype t, size_t rows,
                        size_t cols) {
    bool direct = t == KS_DTYPE_F32 || t == KS_DTYPE_F16 || t == KS_DTYPE_BF16;
    if (direct) {
        size_t bytes = rows * cols * (t == KS_DTYPE_F32 ? 4 : 2);
        /* in stream order, and finished before the host memory may go */
        return cu_ok(b, cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, b->stream),
                     "weight upload") &&
               cu_ok(b, cudaStreamSynchronize(b->stream), "weight upload");
    } else {
        /* dequantise on the host, a panel of rows at a time */
        size_t row_bytes = ks_dtype_row_bytes(t, cols);
        size_t panel = cols ? (size_t)(1 << 22) / cols : 1;
        if (panel < 1) panel = 1;
        if (panel > rows) panel = rows ? rows : 1;
        float *f = (float *)malloc(panel * cols * sizeof(float));
        __half *h = (__half *)malloc(panel * cols * sizeof(__half));
        bool ok = f && h;
        for (size_t r0 = 0; ok && r0 < rows; r0 += panel) {
            size_t n = rows - r0 < panel ? rows - r0 : panel;
            for (size_t r = 0; r < n; r++)
                ks_dtype_to_f32(t, (const unsigned char *)host + (r0 + r) * row_bytes,
                                f + r * cols, cols);
            for (size_t i = 0; i < n * cols; i++) h[i] = __float2half_rn(f[i]);
            ok = cu_ok(b, cudaMemcpyAsync((__half *)dev + r0 * cols, h, n * cols * sizeof(__half),
                                          cudaMemcpyHostToDevice, b->stream),
                       "weight upload") &&
                 cu_ok(b, cudaStreamSynchronize(b->stream), "weight upload");
        }
        if (!f || !h) fail(b, KS_ERR_NOMEM, "CUDA backend: out of host memory dequantising a weight");
        free(f);
        free(h);
        return ok;
    }
}

/* ------------------------------------------------------------------ memory */

static void *cuda_alloc(ks_backend *b_, size_t bytes) {
    cuda_backend *b = CB(b_);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is reported by the NULL, not sticky */
        return NULL;
    }
    if (!cu_ok(b, cudaMemsetAsync(p, 0, bytes ? bytes : 1, b->stream), "memset")) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_release(ks_backend *b_, void *p) {
    (void)b_;
    cudaFree(p);
}

static void cuda_to_host(ks_backend *b_, float *host, const float *src, size_t n) {
    cuda_backend *b = CB(b_);
    if (!n) return;
    int pe = prof_begin(b, P_D2H);
    bool ok = cu_ok(b, cudaMemcpyAsync(host, src, n * sizeof(float), cudaMemcpyDeviceToHost,
                                       b->stream),
                    "device-to-host copy");
    prof_end(b, pe);
    if (ok)
        cu_ok(b, cudaStreamSynchronize(b->stream), "device-to-host copy");
    if (b->err_code) memset(host, 0, n * sizeof(float)); /* never hand out stale data silently */
}

/* Host bytes to the device, in stream order. Small copies go through the pinned ring so the
 * host never waits; the ring wraps after the stream has drained it. */
static void upload(cuda_backend *b, void *dst, const void *host, size_t bytes) {
    if (!bytes) return;
    if (b->ring && bytes <= KS_UPLOAD_RING / 4) {
        if (b->ring_pos + bytes > KS_UPLOAD_RING) {
            if (!cu_ok(b, cudaStreamSynchronize(b->stream), "upload")) return;
            b->ring_pos = 0;
        }
        unsigned char *slot = b->ring + b->ring_pos;
        memcpy(slot, host, bytes);
        b->ring_pos += (bytes + 255) & ~(size_t)255;
        cu_ok(b, cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, b->stream), "upload");
        return;
    }
    /* large: the runtime stages pageable memory before returning */
    if (cu_ok(b, cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, b->stream), "upload"))
        cu_ok(b, cudaStreamSynchronize(b->stream), "upload");
}

static void cuda_from_host(ks_backend *b_, float *dst, const float *host, size_t n) {
    cuda_backend *b = CB(b_);
    int pe = prof_begin(b, P_H2D);
    upload(b, dst, host, n * sizeof(float));
    prof_end(b, pe);
}

/* grow a scratch buffer (synchronises: the old one may be in use by queued work) */
static bool grow(cuda_backend *b, void **p, size_t *cap, size_t need, const char *what) {
    if (need <= *cap) return true;
    cudaStreamSynchronize(b->stream);
    cudaFree(*p);
    *p = NULL;
    *cap = 0;
    if (cudaMalloc(p, need) != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        fail(b, KS_ERR_NOMEM, "CUDA: out of device memory for %s (%zu bytes)", what, need);
        return false;
    }
    *cap = need;
    return true;
}

/* ------------------------------------------------------------------ elementwise kernels */

__device__ __forceinline__ float load_as_f32(const void *p, int dt, size_t i) {
    if (dt == KS_DTYPE_F32) return ((const float *)p)[i];
    if (dt == KS_DTYPE_F16) return __half2float(((const __half *)p)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

__global__ void k_embed(float *x, const void *emb, int dt, const int *ids, int dim) {
    int b = blockIdx.x;
    size_t row = (size_t)ids[b] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)b * dim + i] = load_as_f32(emb, dt, row + i);
}

/* block-wide sum of doubles (blockDim a multiple of 32, at most 1024) */
__device__ double block_sum(double v) {
    __shared__ double part[32];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (l == 0) part[w] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = l < nw ? part[l] : 0.0;
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v) {
    __shared__ float part[32];
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    __syncthreads();
    if (l == 0) part[w] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = l < nw ? part[l] : -INFINITY;
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__global__ void k_rmsnorm(float *o, const float *x, const float *w, int dim, float eps) {
    const float *xb = x + (size_t)blockIdx.x * dim;
    float *ob = o + (size_t)blockIdx.x * dim;
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xb[i] * xb[i];
    ss = block_sum(ss);
    float r = 1.0f / sqrtf((float)(ss / dim) + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ob[i] = w[i] * (xb[i] * r);
}

/* Index arithmetic in these kernels is 32-bit (a 64-bit division costs tens of instructions,
 * and these kernels are bound by memory): the callers keep their element counts below 2^31. */
__global__ void k_rope(float *v, int B, int n, int hd, int interleaved, const float *cosv,
                       const float *sinv) {
    const unsigned half = (unsigned)hd / 2, total = (unsigned)B * (unsigned)n * half;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        unsigned bh = i / half, j = i - bh * half;
        unsigned b = bh / (unsigned)n;
        float c = cosv[(size_t)b * half + j], s = sinv[(size_t)b * half + j];
        float *x = v + (size_t)bh * hd;
        if (interleaved) {
            float x0 = x[2 * j], x1 = x[2 * j + 1];
            x[2 * j] = x0 * c - x1 * s;
            x[2 * j + 1] = x0 * s + x1 * c;
        } else {
            float x0 = x[j], x1 = x[j + half];
            x[j] = x0 * c - x1 * s;
            x[j + half] = x1 * c + x0 * s;
        }
    }
}

__global__ void k_kv_store(float *cache, const float *src, int B, int n_kv, int hd, int max_seq,
                           int pos0) {
    size_t total = (size_t)B * n_kv * hd;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % hd);
        size_t bg = i / hd;
        int g = (int)(bg % n_kv), b = (int)(bg / n_kv);
        cache[((size_t)g * max_seq + pos0 + b) * hd + d] = src[i];
    }
}

/* kv_store with 16-byte moves, h4 = hd / 4 */
__global__ void k_kv_store4(float4 *cache, const float4 *src, int n_kv, int h4, int max_seq,
                            int pos0, unsigned total4) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total4; i += gridDim.x * blockDim.x) {
        unsigned bg = i / (unsigned)h4, d4 = i - bg * (unsigned)h4;
        unsigned b = bg / (unsigned)n_kv, g = bg - b * (unsigned)n_kv;
        cache[((size_t)g * max_seq + pos0 + b) * h4 + d4] = src[i];
    }
}

/* att (H, B, L): query b sees keys 0..pos0 + b */
__global__ void k_causal_mask(float *att, int B, int L, int pos0, size_t rows) {
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        int b = (int)(r % B);
        float *row = att + r * L;
        for (int t = pos0 + b + 1 + threadIdx.x; t < L; t += blockDim.x) row[t] = -INFINITY;
    }
}

__global__ void k_softmax(float *att, int L) {
    float *row = att + (size_t)blockIdx.x * L;
    float mx = -INFINITY;
    for (int t = threadIdx.x; t < L; t += blockDim.x) mx = fmaxf(mx, row[t]);
    mx = block_max(mx);
    if (mx == -INFINITY) { /* a hook masked the whole row: attend nowhere */
        for (int t = threadIdx.x; t < L; t += blockDim.x) row[t] = 0.0f;
        return;
    }
    double sum = 0.0;
    for (int t = threadIdx.x; t < L; t += blockDim.x) {
        float e = expf(row[t] - mx);
        row[t] = e;
        sum += e;
    }
    sum = block_sum(sum);
    float inv = (float)(1.0 / sum);
    for (int t = threadIdx.x; t < L; t += blockDim.x) row[t] *= inv;
}

__global__ void k_swiglu(float *up, const float *gate, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        up[i] *= g / (1.0f + expf(-g));
    }
}

__global__ void k_add(float *x, const float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

/* n / 4 groups of four, 16 bytes in and 8 out */
template <typename T> __global__ void k_round4(T *dst, const float4 *src, size_t n4) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        float4 v = src[i];
        T *d = dst + 4 * i;
        d[0] = from_f32<T>(v.x);
        d[1] = from_f32<T>(v.y);
        d[2] = from_f32<T>(v.z);
        d[3] = from_f32<T>(v.w);
    }
}

template <typename T> __global__ void k_round(T *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f32<T>(src[i]);
}

/* ------------------------------------------------------------------ GEMV (decode) */

__device__ __forceinline__ void unpack8(const uint4 &u, int dt, float *f) {
    const unsigned short *h = (const unsigned short *)&u;
    if (dt == KS_DTYPE_F16) {
        for (int i = 0; i < 8; i++) f[i] = __half2float(__ushort_as_half(h[i]));
    } else {
        for (int i = 0; i < 8; i++) f[i] = __uint_as_float((unsigned)h[i] << 16);
    }
}

/* Up to three products of one input, launched together: y_m (B, out_m) = x (B, in) · W_m^T for
 * 16-bit W_m (out_m, in) of one dtype, one warp per output row over the rows of all m, B <=
 * KS_GEMV_MAX_B: each weight byte is read once, eight 16-byte loads in flight per lane.
 * in % 8 == 0 and x, W 16-byte aligned. */
typedef struct {
    const void *w[3];
    float *y[3];
    int out[3];
    int n;
} gemv_args;

template <int BB>
__device__ __forceinline__ void gemv_step(float *acc, const uint4 &u, int dt, const float *x,
                                          int in, int i) {
    float f[8];
    unpack8(u, dt, f);
#pragma unroll
    for (int b = 0; b < BB; b++) {
        const float4 *xb = (const float4 *)(x + (size_t)b * in + (size_t)i * 8);
        float4 a = __ldg(xb), c = __ldg(xb + 1);
        acc[b] += f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w + f[4] * c.x + f[5] * c.y +
                  f[6] * c.z + f[7] * c.w;
    }
}

template <int BB>
__global__ void __launch_bounds__(256) k_gemv16(gemv_args a, int dt, const float *x, int in) {
    int warp = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
    int m = 0, row = warp;
    while (m < a.n && row >= a.out[m]) row -= a.out[m++];
    if (m >= a.n) return;
    const uint4 *wr = (const uint4 *)((const unsigned short *)a.w[m] + (size_t)row * in);
    float acc[BB];
#pragma unroll
    for (int b = 0; b < BB; b++) acc[b] = 0.0f;
    const int n8 = in / 8;
    int i = lane;
    for (; i + 224 < n8; i += 256) {
        uint4 u[8];
#pragma unroll
        for (int k = 0; k < 8; k++) u[k] = __ldg(wr + i + 32 * k);
#pragma unroll
        for (int k = 0; k < 8; k++) gemv_step<BB>(acc, u[k], dt, x, in, i + 32 * k);
    }
    for (; i < n8; i += 32) gemv_step<BB>(acc, __ldg(wr + i), dt, x, in, i);
#pragma unroll
    for (int b = 0; b < BB; b++) {
        float v = acc[b];
        for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) a.y[m][(size_t)b * a.out[m] + row] = v;
    }
}

/* ------------------------------------------------------------------ fused attention */

/* Flash-style attention for one (query block of 64, head): 4 warps, each owns 16 queries;
 * keys in tiles of 64. Q, K and V arrive in bf16 (k_stage_bf16 rounds them once per call, so
 * each tile is a plain 16-byte copy). S = Q K^T and O += P V run on tensor cores (bf16 in, f32
 * accumulate); scale, causal mask and the online softmax are f32. Each lane keeps half a row of
 * O in registers: lane / 2 is the row, and the lane owns the columns of parity lane % 2, so
 * that the lanes of a warp touch different shared-memory banks. Shared memory: the f32 scratch
 * (which first holds the Q tile, until its fragments are in registers), then K, V and P. */
namespace flash {
constexpr int BQ = 64, BK = 64, NW = 4, PLD = BK + 8;
/* rows of Q, K and V in shared memory are padded by 16 bytes: unpadded, the 16 rows of a
 * fragment start on the same bank and every fragment load is a 16-way bank conflict */
template <int HD> __host__ __device__ constexpr int kld() { return HD + 8; }
template <int HD> __host__ __device__ constexpr int sld() { return HD + 4; }
template <int HD> __host__ __device__ constexpr size_t scratch_bytes() { return (size_t)NW * 16 * sld<HD>() * 4; }
template <int HD> __host__ __device__ constexpr size_t smem_bytes() {
    return scratch_bytes<HD>() + (size_t)(2 * BK * kld<HD>() + NW * 16 * PLD) * 2;
}
static_assert(scratch_bytes<64>() >= (size_t)BQ * kld<64>() * 2, "Q tile fits the scratch");
static_assert(scratch_bytes<128>() >= (size_t)BQ * kld<128>() * 2, "Q tile fits the scratch");
} // namespace flash

template <int HD>
__global__ void __launch_bounds__(128)
    k_flash(float *z, const __nv_bfloat16 *q, const __nv_bfloat16 *kb, const __nv_bfloat16 *vb,
            int B, int pos0, int H, int kv_mul, int kv_stride, float scale) {
    using namespace nvcuda;
    using flash::BK;
    using flash::BQ;
    using flash::PLD;
    constexpr int SLD = flash::sld<HD>();
    constexpr int KLD = flash::kld<HD>();
    constexpr int V8 = HD / 8; /* 16-byte vectors per row */
    extern __shared__ __align__(128) unsigned char smem[];
    float *sS = (float *)smem;
    __nv_bfloat16 *sQ = (__nv_bfloat16 *)smem; /* aliases the scratch until the fragments load */
    __nv_bfloat16 *sK = (__nv_bfloat16 *)(smem + flash::scratch_bytes<HD>());
    __nv_bfloat16 *sV = sK + BK * KLD;
    __nv_bfloat16 *sP = sV + BK * KLD;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int h = blockIdx.y, g = h / kv_mul;
    const int q0 = blockIdx.x * BQ;
    const int L = pos0 + B;
    const size_t qs = (size_t)H * HD;
    const __nv_bfloat16 *kh = kb + (size_t)g * kv_stride * HD, *vh = vb + (size_t)g * kv_stride * HD;
    __nv_bfloat16 *pw = sP + warp * 16 * PLD;
    float *sw = sS + warp * 16 * SLD;
    const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);

    for (int i = threadIdx.x; i < BQ * V8; i += blockDim.x) {
        int r = i / V8, c = i % V8;
        ((uint4 *)(sQ + r * KLD))[c] =
            q0 + r < B ? *((const uint4 *)(q + (size_t)(q0 + r) * qs + (size_t)h * HD) + c) : zero4;
    }
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qf[HD / 16];
    for (int kk = 0; kk < HD / 16; kk++)
        wmma::load_matrix_sync(qf[kk], sQ + warp * 16 * KLD + kk * 16, KLD);

    const int r = lane / 2, par = lane % 2;
    const int qi = q0 + warp * 16 + r; /* chunk-relative query of this lane's row */
    const int qpos = pos0 + qi;
    float m_i = -INFINITY, l_i = 0.0f;
    float o[HD / 2];
    for (int c = 0; c < HD / 2; c++) o[c] = 0.0f;

    int kend = pos0 + q0 + BQ; /* keys the block's last query may see, exclusive */
    if (kend > L) kend = L;
    for (int k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads(); /* the Q tile, or the previous K/V tile, is no longer read */
        for (int i = threadIdx.x; i < BK * V8; i += blockDim.x) {
            int t = i / V8, c = i % V8;
            bool in = k0 + t < L;
            ((uint4 *)(sK + t * KLD))[c] = in ? *((const uint4 *)(kh + (size_t)(k0 + t) * HD) + c) : zero4;
            ((uint4 *)(sV + t * KLD))[c] = in ? *((const uint4 *)(vh + (size_t)(k0 + t) * HD) + c) : zero4;
        }
        __syncthreads();
        /* S (16, BK) = Q_w K^T into the warp's scratch */
        for (int n = 0; n < BK / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < HD / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kf;
                wmma::load_matrix_sync(kf, sK + n * 16 * KLD + kk * 16, KLD);
                wmma::mma_sync(acc, qf[kk], kf, acc);
            }
            wmma::store_matrix_sync(sw + n * 16, acc, SLD, wmma::mem_row_major);
        }
        __syncwarp();
        /* online softmax over this lane's columns of its row (parity par) */
        const float *srow = sw + r * SLD;
        float mx = -INFINITY;
        for (int j = 0; j < BK / 2; j++) {
            int t = k0 + par + 2 * j;
            if (t <= qpos && t < L) mx = fmaxf(mx, srow[par + 2 * j] * scale);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float m_new = fmaxf(m_i, mx);
        float alpha = m_new == -INFINITY ? 1.0f : expf(m_i - m_new); /* exp(-inf) = 0 */
        float sum = 0.0f;
        __nv_bfloat16 *prow = pw + r * PLD;
        for (int j = 0; j < BK / 2; j++) {
            int c = par + 2 * j, t = k0 + c;
            float p = (t <= qpos && t < L) ? expf(srow[c] * scale - m_new) : 0.0f;
            __nv_bfloat16 pb = __float2bfloat16_rn(p);
            prow[c] = pb;
            sum += __bfloat162float(pb); /* the normaliser sums what P V multiplies */
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l_i = l_i * alpha + sum;
        m_i = m_new;
        __syncwarp();
        /* PV (16, HD) = P_w V into the scratch (S has been consumed), then O = O * alpha + PV */
        for (int n = 0; n < HD / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < BK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pf;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vf;
                wmma::load_matrix_sync(pf, pw + kk * 16, PLD);
                wmma::load_matrix_sync(vf, sV + kk * 16 * KLD + n * 16, KLD);
                wmma::mma_sync(acc, pf, vf, acc);
            }
            wmma::store_matrix_sync(sw + n * 16, acc, SLD, wmma::mem_row_major);
        }
        __syncwarp();
        const float *pv = sw + r * SLD + par;
        for (int j = 0; j < HD / 2; j++) o[j] = o[j] * alpha + pv[2 * j];
        __syncwarp();
    }
    if (qi < B) {
        float inv = l_i > 0.0f ? 1.0f / l_i : 0.0f;
        float *zr = z + (size_t)qi * qs + (size_t)h * HD + par;
        for (int j = 0; j < HD / 2; j++) zr[2 * j] = o[j] * inv;
    }
}

/* Round the attention inputs of one call to bf16: q (B, H * hd) as laid out, and the L cached
 * keys and values of each kv head (n_kv, max_seq, hd) into (n_kv, L, hd). */
__global__ void k_stage_bf16(__nv_bfloat16 *qb, __nv_bfloat16 *kb, __nv_bfloat16 *vb,
                             const float *q, const float *kc, const float *vc, size_t nq, int n_kv,
                             int L, int hd, int max_seq) {
    size_t nkv = (size_t)n_kv * L * hd;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nq + nkv;
         i += (size_t)gridDim.x * blockDim.x) {
        if (i < nq) {
            qb[i] = __float2bfloat16_rn(q[i]);
            continue;
        }
        size_t j = i - nq;
        int d = (int)(j % hd);
        size_t gt = j / hd;
        int t = (int)(gt % L), g = (int)(gt / L);
        size_t src = ((size_t)g * max_seq + t) * hd + d;
        kb[j] = __float2bfloat16_rn(kc[src]);
        vb[j] = __float2bfloat16_rn(vc[src]);
    }
}

/* The same staging with 16-byte loads and 32-bit index arithmetic (hd % 4 == 0, q, kc, vc
 * 16-byte aligned, counts below 2^31). */
__global__ void k_stage_q4(__nv_bfloat162 *qb, const float4 *q, unsigned nq4) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < nq4; i += gridDim.x * blockDim.x) {
        float4 v = q[i];
        qb[2 * i] = __floats2bfloat162_rn(v.x, v.y);
        qb[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

__global__ void k_stage_kv4(__nv_bfloat162 *kb, __nv_bfloat162 *vb, const float4 *kc,
                            const float4 *vc, int L, int h4, int max_seq, unsigned total4) {
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total4; i += gridDim.x * blockDim.x) {
        unsigned row = i / (unsigned)h4, d4 = i - row * (unsigned)h4;
        unsigned g = row / (unsigned)L, t = row - g * (unsigned)L;
        size_t src = ((size_t)g * max_seq + t) * h4 + d4;
        float4 k = kc[src], v = vc[src];
        kb[2 * i] = __floats2bfloat162_rn(k.x, k.y);
        kb[2 * i + 1] = __floats2bfloat162_rn(k.z, k.w);
        vb[2 * i] = __floats2bfloat162_rn(v.x, v.y);
        vb[2 * i + 1] = __floats2bfloat162_rn(v.z, v.w);
    }
}

/* q (B, H * hd) and the layer's first L keys and values to bf16, (n_kv, L, hd) */
static void stage_bf16(cuda_backend *b, __nv_bfloat16 *qb, __nv_bfloat16 *kb, __nv_bfloat16 *vb,
                       const float *q, const float *kc, const float *vc, size_t nq, int n_kv,
                       int L, int hd, int max_seq) {
    size_t nkv = (size_t)n_kv * L * hd;
    if (hd % 4 == 0 && !(((uintptr_t)q | (uintptr_t)kc | (uintptr_t)vc) & 15) &&
        nq < ((size_t)1 << 31) && nkv < ((size_t)1 << 31)) {
        unsigned gq = blocks_for(nq / 4, 256), gk = blocks_for(nkv / 4, 256);
        if (gq > 65535) gq = 65535;
        if (gk > 65535) gk = 65535;
        k_stage_q4<<<gq, 256, 0, b->stream>>>((__nv_bfloat162 *)qb, (const float4 *)q,
                                              (unsigned)(nq / 4));
        k_stage_kv4<<<gk, 256, 0, b->stream>>>((__nv_bfloat162 *)kb, (__nv_bfloat162 *)vb,
                                               (const float4 *)kc, (const float4 *)vc, L, hd / 4,
                                               max_seq, (unsigned)(nkv / 4));
    } else {
        unsigned sg = blocks_for(nq + nkv, 256);
        if (sg > 65535) sg = 65535;
        k_stage_bf16<<<sg, 256, 0, b->stream>>>(qb, kb, vb, q, kc, vc, nq, n_kv, L, hd, max_seq);
    }
    launched(b, "attention (bf16 staging)");
}

template <int HD>
static bool launch_flash(cuda_backend *b, float *z, const float *q, const float *kc,
                         const float *vc, int B, int pos0, int H, int kv_mul, int max_seq,
                         float scale) {
    const int L = pos0 + B, n_kv = H / kv_mul;
    size_t nq = (size_t)B * H * HD, nkv = (size_t)n_kv * L * HD;
    if (!grow(b, &b->att16, &b->att16_cap, (nq + 2 * nkv) * 2 + 64, "bf16 attention inputs"))
        return false;
    __nv_bfloat16 *qb = (__nv_bfloat16 *)b->att16;
    __nv_bfloat16 *kb = qb + ((nq + 7) & ~(size_t)7), *vb = kb + nkv; /* 16-byte aligned */
    size_t smem = flash::smem_bytes<HD>();
    int bit = HD == 64 ? 1 : 2;
    if (!(b->flash_smem_set & bit)) {
        if (!cu_ok(b, cudaFuncSetAttribute(k_flash<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)smem),
                   "fused attention (shared memory)"))
            return false;
        b->flash_smem_set |= bit;
    }
    int pe = prof_begin(b, P_FLASH);
    stage_bf16(b, qb, kb, vb, q, kc, vc, nq, n_kv, L, HD, max_seq);
    dim3 grid((unsigned)((B + flash::BQ - 1) / flash::BQ), (unsigned)H);
    k_flash<HD><<<grid, 128, smem, b->stream>>>(z, qb, kb, vb, B, pos0, H, kv_mul, L, scale);
    prof_end(b, pe);
    launched(b, "fused attention");
    return true;
}

/* The tensor-core attention's softmax: row r = (h, b) of S (H, B, L) f32 holds scale q K^T;
 * the causal mask, the softmax in f32 and the probabilities rounded to bf16, written in place
 * over the first half of the row's bytes (the row is read whole into registers first). The
 * normaliser sums the rounded values, as the flash kernel's does. L <= 32 * blockDim.x. */
__global__ void __launch_bounds__(256) k_softmax_tc(float *S, int B, int L, int pos0) {
    const size_t r = blockIdx.x;
    const int b = (int)(r % B), n = pos0 + b + 1; /* visible keys */
    float *row = S + r * L;
    float v[32];
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < 32; k++) {
        int t = threadIdx.x + k * blockDim.x;
        v[k] = t < n ? row[t] : -INFINITY;
        mx = fmaxf(mx, v[k]);
    }
    mx = block_max(mx);
    double sum = 0.0;
#pragma unroll
    for (int k = 0; k < 32; k++) {
        float p = v[k] == -INFINITY ? 0.0f : expf(v[k] - mx);
        v[k] = __bfloat162float(__float2bfloat16_rn(p));
        sum += v[k];
    }
    sum = block_sum(sum); /* its barriers also order every read of the row before the writes */
    const float inv = (float)(1.0 / sum);
    __nv_bfloat16 *prow = (__nv_bfloat16 *)row;
#pragma unroll
    for (int k = 0; k < 32; k++) {
        int t = threadIdx.x + k * blockDim.x;
        if (t < L) prow[t] = __float2bfloat16_rn(v[k] * inv);
    }
}

/* Attention on tensor cores through cuBLAS, the scores materialised: q, K, V rounded to bf16;
 * S = scale q K^T (bf16 GEMM, f32 out); the softmax kernel above; z = P V (bf16 GEMM, f32 out).
 * The same numerics as the flash kernel (bf16 operands, f32 accumulation and softmax). */
static bool attn_tc(cuda_backend *b, float *z, const float *q, const float *kc, const float *vc,
                    int B, int pos0, int H, int kv_mul, int hd, int max_seq, float scale) {
    const int L = pos0 + B, n_kv = H / kv_mul;
    size_t sbytes = (size_t)H * B * L * sizeof(float);
    if (L > 32 * 256 || sbytes > KS_TC_MAX_BYTES) return false;
    size_t nq = (size_t)B * H * hd, nkv = (size_t)n_kv * L * hd;
    if (!grow(b, &b->att16, &b->att16_cap, (nq + 2 * nkv) * 2 + 64, "bf16 attention inputs") ||
        !grow(b, &b->tcs, &b->tcs_cap, sbytes, "attention scores"))
        return false;
    __nv_bfloat16 *qb = (__nv_bfloat16 *)b->att16;
    __nv_bfloat16 *kb = qb + ((nq + 7) & ~(size_t)7), *vb = kb + nkv;
    float *S = (float *)b->tcs;
    const float one = 1.0f, zero = 0.0f;
    int pe = prof_begin(b, P_TC);
    stage_bf16(b, qb, kb, vb, q, kc, vc, nq, n_kv, L, hd, max_seq);
    /* head h = g * kv_mul + j; column-major as in cuda_attn_scores / cuda_attn_values */
    for (int j = 0; j < kv_mul; j++)
        if (!blas_ok(b, cublasGemmStridedBatchedEx(
                            b->blas, CUBLAS_OP_T, CUBLAS_OP_N, L, B, hd, &scale, kb, CUDA_R_16BF,
                            hd, (long long)L * hd, qb + (size_t)j * hd, CUDA_R_16BF, H * hd,
                            (long long)kv_mul * hd, &zero, S + (size_t)j * B * L, CUDA_R_32F, L,
                            (long long)kv_mul * B * L, n_kv, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
                     "tensor-core attention scores"))
            return true; /* the error is kept; z is not valid and check() says so */
    k_softmax_tc<<<(unsigned)((size_t)H * B), 256, 0, b->stream>>>(S, B, L, pos0);
    launched(b, "tensor-core attention softmax");
    /* P rows are bf16 at the start of each f32 row: leading dimension 2L in bf16 elements */
    const __nv_bfloat16 *P = (const __nv_bfloat16 *)S;
    for (int j = 0; j < kv_mul; j++)
        if (!blas_ok(b, cublasGemmStridedBatchedEx(
                            b->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, B, L, &one, vb, CUDA_R_16BF,
                            hd, (long long)L * hd, P + (size_t)j * B * 2 * L, CUDA_R_16BF, 2 * L,
                            (long long)kv_mul * B * 2 * L, &zero, z + (size_t)j * hd, CUDA_R_32F,
                            H * hd, (long long)kv_mul * hd, n_kv, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
                     "tensor-core attention values"))
            return true;
    prof_end(b, pe);
    return true;
}

/* Attention of a few queries (decode), exact in f32 like the eager path: one block per
 * (head, query) and the scores of its pos0 + b + 1 visible keys in shared memory. A thread
 * owns a key for the scores (hd / 4 independent 16-byte loads); for the values, hd / 4 threads
 * cover a row with 16-byte loads and the block's 256 / (hd / 4) groups split the keys.
 * hd a multiple of 4 with 4 <= hd <= 256 and 1024 % hd == 0; at most KS_DECODE_MAX_L keys. */
#define KS_DECODE_MAX_L 8192
#define KS_DECODE_MAX_B 4
__global__ void __launch_bounds__(256)
    k_attn_decode(float *z, const float *q, const float *kc, const float *vc, int pos0, int H,
                  int kv_mul, int hd, int max_seq, float scale) {
    __shared__ __align__(16) float sq[256];
    __shared__ float sp[KS_DECODE_MAX_L];
    __shared__ __align__(16) float4 part[256];
    const int h = blockIdx.x, b = blockIdx.y, g = h / kv_mul;
    const int n = pos0 + b + 1;
    const float *kh = kc + (size_t)g * max_seq * hd, *vh = vc + (size_t)g * max_seq * hd;
    const size_t qs = (size_t)H * hd;
    const int h4 = hd / 4;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) sq[i] = q[(size_t)b * qs + (size_t)h * hd + i];
    __syncthreads();
    const float4 *q4 = (const float4 *)sq;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const float4 *kr = (const float4 *)(kh + (size_t)t * hd);
        float acc = 0.0f;
#pragma unroll 8
        for (int d = 0; d < h4; d++) {
            float4 k = __ldg(kr + d), qq = q4[d];
            acc += qq.x * k.x + qq.y * k.y + qq.z * k.z + qq.w * k.w;
        }
        sp[t] = acc * scale;
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int t = threadIdx.x; t < n; t += blockDim.x) mx = fmaxf(mx, sp[t]);
    mx = block_max(mx);
    double sum = 0.0;
    for (int t = threadIdx.x; t < n; t += blockDim.x) {
        float e = expf(sp[t] - mx);
        sp[t] = e;
        sum += e;
    }
    sum = block_sum(sum); /* its barriers also publish sp[] */
    const float inv = (float)(1.0 / sum);
    const int groups = blockDim.x / h4, grp = threadIdx.x / h4, d4 = threadIdx.x % h4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (grp < groups) {
#pragma unroll 4
        for (int t = grp; t < n; t += groups) {
            float p = sp[t];
            float4 v = __ldg((const float4 *)(vh + (size_t)t * hd) + d4);
            acc.x += p * v.x;
            acc.y += p * v.y;
            acc.z += p * v.z;
            acc.w += p * v.w;
        }
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x < h4) {
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int k = 0; k < groups; k++) {
            float4 a = part[k * h4 + threadIdx.x];
            v.x += a.x;
            v.y += a.y;
            v.z += a.z;
            v.w += a.w;
        }
        float *zr = z + (size_t)b * qs + (size_t)h * hd + 4 * threadIdx.x;
        zr[0] = v.x * inv;
        zr[1] = v.y * inv;
        zr[2] = v.z * inv;
        zr[3] = v.w * inv;
    }
}

/* ------------------------------------------------------------------ ops */

static void cuda_embed(ks_backend *b_, float *x, const ks_weight *emb, const int *ids, int B,
                       int dim) {
    cuda_backend *b = CB(b_);
    const wentry *e = tab_find(b, emb->data);
    if (!e) { /* a table prepare did not see: gather the rows on the host */
        size_t rb = ks_dtype_row_bytes(emb->dtype, (size_t)dim);
        float *rows = (float *)malloc((size_t)B * dim * sizeof(float));
        if (!rows) {
            fail(b, KS_ERR_NOMEM, "CUDA embed: out of host memory");
            return;
        }
        for (int i = 0; i < B; i++)
            ks_dtype_to_f32(emb->dtype, (const unsigned char *)emb->data + (size_t)ids[i] * rb,
                            rows + (size_t)i * dim, (size_t)dim);
        upload(b, x, rows, (size_t)B * dim * sizeof(float));
        cu_ok(b, cudaStreamSynchronize(b->stream), "embed");
        free(rows);
        return;
    }
    if (!grow(b, (void **)&b->ids, &b->ids_cap, (size_t)B * sizeof(int), "token ids")) return;
    int pe = prof_begin(b, P_EMBED);
    upload(b, b->ids, ids, (size_t)B * sizeof(int));
    k_embed<<<B, 256, 0, b->stream>>>(x, e->dev, e->dtype, b->ids, dim);
    prof_end(b, pe);
    launched(b, "embed");
}

static void cuda_rmsnorm(ks_backend *b_, float *out, const float *x, const float *w, int B,
                         int dim, float eps) {
    cuda_backend *b = CB(b_);
    const wentry *e = weight(b, w, KS_DTYPE_F32, 1, (size_t)dim);
    if (!e || B <= 0) return;
    int pe = prof_begin(b, P_RMSNORM);
    k_rmsnorm<<<B, B < 64 ? 1024 : 256, 0, b->stream>>>(out, x, (const float *)e->dev, dim, eps);
    prof_end(b, pe);
    launched(b, "rmsnorm");
}

/* dst (n 16-bit values of type dt, F16 or BF16) = src (n f32) rounded to nearest even */
static void round16(cuda_backend *b, void *dst, const float *src, size_t n, ks_dtype dt) {
    if (!n) return;
    unsigned grid = blocks_for(n, 256);
    if (grid > 65535) grid = 65535;
    int pe = prof_begin(b, P_ROUND);
    bool v4 = n % 4 == 0 && !((uintptr_t)src & 15);
    unsigned g4 = blocks_for(n / 4, 256);
    if (g4 > 65535) g4 = 65535;
    if (v4 && dt == KS_DTYPE_F16)
        k_round4<__half><<<g4, 256, 0, b->stream>>>((__half *)dst, (const float4 *)src, n / 4);
    else if (v4)
        k_round4<__nv_bfloat16><<<g4, 256, 0, b->stream>>>((__nv_bfloat16 *)dst,
                                                           (const float4 *)src, n / 4);
    else if (dt == KS_DTYPE_F16)
        k_round<__half><<<grid, 256, 0, b->stream>>>((__half *)dst, src, n);
    else
        k_round<__nv_bfloat16><<<grid, 256, 0, b->stream>>>((__nv_bfloat16 *)dst, src, n);
    prof_end(b, pe);
    launched(b, "rounding to 16 bits");
}

static void cuda_matmul(ks_backend *b_, int n, float *const *ys, const ks_weight *const *ws,
                        const int *outs, const float *x, int B, int in) {
    cuda_backend *b = CB(b_);
    if (B <= 0) return;
    ks_dtype rounded = KS_DTYPE_F32; /* the type x was last rounded to in xh */
    /* decode: one GEMV launch for all the products when their weights share a 16-bit type */
    if (B <= KS_GEMV_MAX_B && n <= 3 && in % 8 == 0 && ((uintptr_t)x & 15) == 0) {
        gemv_args a;
        memset(&a, 0, sizeof a);
        size_t rows = 0;
        bool same = true;
        for (int i = 0; i < n && same; i++) {
            const wentry *e = weight(b, ws[i]->data, ws[i]->dtype, (size_t)outs[i], (size_t)in);
            if (!e) return;
            same = (e->dtype == KS_DTYPE_F16 || e->dtype == KS_DTYPE_BF16) &&
                   (i == 0 || e->dtype == (ks_dtype)a.n);
            a.w[i] = e->dev;
            a.y[i] = ys[i];
            a.out[i] = outs[i];
            a.n = (int)e->dtype; /* the dtype, until the loop ends */
            rows += (size_t)outs[i];
        }
        if (same) {
            int dt = a.n;
            a.n = n;
            unsigned threads = 256, grid = blocks_for(rows * 32, threads);
            int pe = prof_begin(b, P_GEMV);
            switch (B) {
            case 1: k_gemv16<1><<<grid, threads, 0, b->stream>>>(a, dt, x, in); break;
            case 2: k_gemv16<2><<<grid, threads, 0, b->stream>>>(a, dt, x, in); break;
            case 3: k_gemv16<3><<<grid, threads, 0, b->stream>>>(a, dt, x, in); break;
            default: k_gemv16<4><<<grid, threads, 0, b->stream>>>(a, dt, x, in); break;
            }
            prof_end(b, pe);
            launched(b, "GEMV");
            return;
        }
    }
    for (int i = 0; i < n; i++) {
        const wentry *e = weight(b, ws[i]->data, ws[i]->dtype, (size_t)outs[i], (size_t)in);
        if (!e) return;
        const float one = 1.0f, zero = 0.0f;
        if (e->dtype == KS_DTYPE_F32) {
            int pe = prof_begin(b, P_SGEMM);
            blas_ok(b, cublasSgemm(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, outs[i], B, in, &one,
                                   (const float *)e->dev, in, x, in, &zero, ys[i], outs[i]),
                    "SGEMM");
            prof_end(b, pe);
            continue;
        }
        size_t n_x = (size_t)B * in;
        if (rounded != e->dtype) {
            if (!grow(b, &b->xh, &b->xh_cap, n_x * 2, "16-bit activations")) return;
            round16(b, b->xh, x, n_x, e->dtype);
            rounded = e->dtype;
        }
        cudaDataType t = e->dtype == KS_DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF;
        int pe = prof_begin(b, P_GEMM16);
        blas_ok(b, cublasGemmEx(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, outs[i], B, in, &one, e->dev, t,
                                in, b->xh, t, in, &zero, ys[i], CUDA_R_32F, outs[i],
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                "GemmEx (16-bit)");
        prof_end(b, pe);
    }
}

static void cuda_rope(ks_backend *b_, float *v, int B, int heads, int hd, ks_rope_style style,
                      const float *cosv, const float *sinv) {
    cuda_backend *b = CB(b_);
    size_t n = (size_t)B * heads * (hd / 2);
    if (!n) return;
    unsigned grid = blocks_for(n, 256);
    if (grid > 65535) grid = 65535;
    int pe = prof_begin(b, P_ROPE);
    k_rope<<<grid, 256, 0, b->stream>>>(v, B, heads, hd, style == KS_ROPE_STYLE_INTERLEAVED, cosv,
                                        sinv);
    prof_end(b, pe);
    launched(b, "rope");
}

static void cuda_kv_store(ks_backend *b_, float *cache, const float *src, int B, int n_kv, int hd,
                          int max_seq, int pos0) {
    cuda_backend *b = CB(b_);
    size_t n = (size_t)B * n_kv * hd;
    if (!n) return;
    unsigned grid = blocks_for(n, 256);
    if (grid > 65535) grid = 65535;
    int pe = prof_begin(b, P_KV);
    if (hd % 4 == 0 && !(((uintptr_t)cache | (uintptr_t)src) & 15) && n < ((size_t)1 << 31)) {
        unsigned total4 = (unsigned)(n / 4), g4 = blocks_for(total4, 256);
        if (g4 > 65535) g4 = 65535;
        k_kv_store4<<<g4, 256, 0, b->stream>>>((float4 *)cache, (const float4 *)src, n_kv, hd / 4,
                                               max_seq, pos0, total4);
    } else {
        k_kv_store<<<grid, 256, 0, b->stream>>>(cache, src, B, n_kv, hd, max_seq, pos0);
    }
    prof_end(b, pe);
    launched(b, "kv_store");
}

static void cuda_attn_scores(ks_backend *b_, float *att, const float *q, const float *kc, int B,
                             int pos0, int H, int kv_mul, int hd, int max_seq, float scale) {
    cuda_backend *b = CB(b_);
    const int L = pos0 + B, n_kv = H / kv_mul;
    const float zero = 0.0f;
    /* head h = g * kv_mul + j: for each j, one strided batch over the kv groups g.
     * Column-major: att_h^T (L, B) = K_g (L, hd) · q_h^T (hd, B). */
    int pe = prof_begin(b, P_SCORES);
    for (int j = 0; j < kv_mul; j++)
        if (!blas_ok(b, cublasSgemmStridedBatched(
                            b->blas, CUBLAS_OP_T, CUBLAS_OP_N, L, B, hd, &scale, kc, hd,
                            (long long)max_seq * hd, q + (size_t)j * hd, H * hd,
                            (long long)kv_mul * hd, &zero, att + (size_t)j * B * L, L,
                            (long long)kv_mul * B * L, n_kv),
                     "attention scores (SGEMM)"))
            return;
    prof_end(b, pe);
    size_t rows = (size_t)H * B;
    unsigned grid = rows > 65535 ? 65535 : (unsigned)rows;
    pe = prof_begin(b, P_MASK);
    k_causal_mask<<<grid, 128, 0, b->stream>>>(att, B, L, pos0, rows);
    prof_end(b, pe);
    launched(b, "causal mask");
}

static void cuda_softmax(ks_backend *b_, float *att, int rows, int L) {
    cuda_backend *b = CB(b_);
    if (rows <= 0) return;
    /* rows is H * B <= 2^31; the grid's x dimension takes up to 2^31 - 1 */
    int pe = prof_begin(b, P_SOFTMAX);
    k_softmax<<<(unsigned)rows, L >= 512 ? 256 : 128, 0, b->stream>>>(att, L);
    prof_end(b, pe);
    launched(b, "softmax");
}

static void cuda_attn_values(ks_backend *b_, float *z, const float *att, const float *vc, int B,
                             int pos0, int H, int kv_mul, int hd, int max_seq) {
    cuda_backend *b = CB(b_);
    const int L = pos0 + B, n_kv = H / kv_mul;
    const float one = 1.0f, zero = 0.0f;
    /* column-major: z_h^T (hd, B) = V_g^T (hd, L) · att_h^T (L, B) */
    int pe = prof_begin(b, P_VALUES);
    for (int j = 0; j < kv_mul; j++)
        if (!blas_ok(b, cublasSgemmStridedBatched(
                            b->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, B, L, &one, vc, hd,
                            (long long)max_seq * hd, att + (size_t)j * B * L, L,
                            (long long)kv_mul * B * L, &zero, z + (size_t)j * hd, H * hd,
                            (long long)kv_mul * hd, n_kv),
                     "attention values (SGEMM)"))
            return;
    prof_end(b, pe);
}

static bool cuda_attn_fused(ks_backend *b_, float *z, const float *q, const float *kc,
                            const float *vc, int B, int pos0, int H, int kv_mul, int hd,
                            int max_seq, float scale) {
    cuda_backend *b = CB(b_);
    if (b->attn == ATTN_EAGER || B <= 0) return false;
    /* decode: exact f32, for every model */
    if (B <= KS_DECODE_MAX_B && pos0 + B <= KS_DECODE_MAX_L && hd >= 4 && hd <= 256 &&
        1024 % hd == 0 && !(((uintptr_t)q | (uintptr_t)kc | (uintptr_t)vc) & 15)) {
        int pe = prof_begin(b, P_DECODE_ATT);
        k_attn_decode<<<dim3((unsigned)H, (unsigned)B), 256, 0, b->stream>>>(
            z, q, kc, vc, pos0, H, kv_mul, hd, max_seq, scale);
        prof_end(b, pe);
        launched(b, "decode attention");
        return true;
    }
    /* auto, 16-bit models: the fused kernel where it applies (on an H200 at 7B it was 2.6%
     * faster than the tensor-core path and needs no scores buffer), else the tensor-core path */
    bool auto16 = b->attn == ATTN_AUTO && b->model_16bit;
    bool flash_ok = (hd == 64 || hd == 128) && !((uintptr_t)z & 15);
    if ((b->attn == ATTN_FLASH || auto16) && flash_ok)
        return hd == 64 ? launch_flash<64>(b, z, q, kc, vc, B, pos0, H, kv_mul, max_seq, scale)
                        : launch_flash<128>(b, z, q, kc, vc, B, pos0, H, kv_mul, max_seq, scale);
    if ((b->attn == ATTN_TC || auto16) && hd % 8 == 0)
        return attn_tc(b, z, q, kc, vc, B, pos0, H, kv_mul, hd, max_seq, scale);
    return false;
}

static void cuda_swiglu(ks_backend *b_, float *up, const float *gate, size_t n) {
    cuda_backend *b = CB(b_);
    if (!n) return;
    unsigned grid = blocks_for(n, 256);
    if (grid > 65535) grid = 65535;
    int pe = prof_begin(b, P_SWIGLU);
    k_swiglu<<<grid, 256, 0, b->stream>>>(up, gate, n);
    prof_end(b, pe);
    launched(b, "swiglu");
}

static void cuda_add(ks_backend *b_, float *x, const float *y, size_t n) {
    cuda_backend *b = CB(b_);
    if (!n) return;
    unsigned grid = blocks_for(n, 256);
    if (grid > 65535) grid = 65535;
    int pe = prof_begin(b, P_ADD);
    k_add<<<grid, 256, 0, b->stream>>>(x, y, n);
    prof_end(b, pe);
    launched(b, "add");
}

/* ------------------------------------------------------------------ backward (backward.c)
 *
 * Numerics, against backend_cpu.c's twins:
 *  - gemm: SGEMM (f32, no TF32) unless fast, then both operands rounded to bf16 and
 *    GemmStridedBatchedEx with f32 accumulation and output (tensor cores).
 *  - matmul_t (dx = dy · W): f32 weights SGEMM; bf16 weights: dy rounded to bf16, GemmEx; f16
 *    weights (and GGML formats, uploaded as f16) are widened to f32 and run in SGEMM, because a
 *    gradient rounded to f16 loses its small values (f16's smallest normal is 6e-5).
 *  - matmul_dw (dW += dy^T x): 16-bit models round dy and x to bf16 (f32's range), f32 models
 *    run SGEMM.
 *  - rmsnorm_bwd and softmax_bwd sum in double, like the CPU; embed_bwd adds rows with atomics
 *    (repeated token ids add in an unspecified order). */

/* rows of the row-major (rows, cols) operand with row stride ld, batch items sa apart: how
 * many floats from its first element to past its last */
static size_t span(int rows, int cols, int ld, long long sa, int batch) {
    if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
    return (size_t)(batch - 1) * (size_t)sa + (size_t)(rows - 1) * (size_t)ld + (size_t)cols;
}

static void cuda_gemm(ks_backend *b_, bool ta, bool tb, int M, int N, int K, float alpha,
                      const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                      float beta, float *C, int ldc, long long sc, int batch, bool fast) {
    cuda_backend *b = CB(b_);
    if (M <= 0 || N <= 0 || batch <= 0) return;
    /* row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands */
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (!fast || K <= 0) {
        int pe = prof_begin(b, P_BGEMM);
        blas_ok(b, cublasSgemmStridedBatched(b->blas, ob, oa, N, M, K, &alpha, B, ldb, sb, A, lda,
                                             sa, &beta, C, ldc, sc, batch),
                "backward GEMM (SGEMM)");
        prof_end(b, pe);
        return;
    }
    size_t na = span(ta ? K : M, ta ? M : K, lda, sa, batch);
    size_t nb = span(tb ? N : K, tb ? K : N, ldb, sb, batch);
    if (!grow(b, &b->g16a, &b->g16a_cap, na * 2, "a backward GEMM's bf16 operand") ||
        !grow(b, &b->g16b, &b->g16b_cap, nb * 2, "a backward GEMM's bf16 operand"))
        return;
    round16(b, b->g16a, A, na, KS_DTYPE_BF16);
    round16(b, b->g16b, B, nb, KS_DTYPE_BF16);
    int pe = prof_begin(b, P_BGEMM16);
    blas_ok(b, cublasGemmStridedBatchedEx(b->blas, ob, oa, N, M, K, &alpha, b->g16b, CUDA_R_16BF,
                                          ldb, sb, b->g16a, CUDA_R_16BF, lda, sa, &beta, C,
                                          CUDA_R_32F, ldc, sc, batch, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT),
            "backward GEMM (bf16 GemmStridedBatchedEx)");
    prof_end(b, pe);
}

__global__ void k_widen(float *dst, const void *src, int dt, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = load_as_f32(src, dt, i);
}

static void cuda_matmul_t(ks_backend *b_, float *dx, const ks_weight *w, const float *dy, int B,
                          int in, int out, float beta) {
    cuda_backend *b = CB(b_);
    if (B <= 0) return;
    const wentry *e = weight(b, w->data, w->dtype, (size_t)out, (size_t)in);
    if (!e) return;
    const float one = 1.0f;
    /* column-major: dx^T (in, B) = W^T (in, out) · dy^T (out, B); W (out, in) row-major is
     * W^T column-major with leading dimension in */
    if (e->dtype == KS_DTYPE_BF16) {
        size_t n = (size_t)B * out;
        if (!grow(b, &b->xh, &b->xh_cap, n * 2, "16-bit gradients")) return;
        round16(b, b->xh, dy, n, KS_DTYPE_BF16);
        int pe = prof_begin(b, P_BMATMUL);
        blas_ok(b, cublasGemmEx(b->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, B, out, &one, e->dev,
                                CUDA_R_16BF, in, b->xh, CUDA_R_16BF, out, &beta, dx, CUDA_R_32F,
                                in, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                "matmul_t (bf16 GemmEx)");
        prof_end(b, pe);
        return;
    }
    const float *wf = (const float *)e->dev;
    if (e->dtype != KS_DTYPE_F32) {
        size_t n = (size_t)out * in;
        if (!grow(b, &b->wf32, &b->wf32_cap, n * sizeof(float), "a weight widened to f32")) return;
        unsigned grid = blocks_for(n, 256);
        int pe = prof_begin(b, P_ROUND);
        k_widen<<<grid > 65535 ? 65535 : grid, 256, 0, b->stream>>>((float *)b->wf32, e->dev,
                                                                     e->dtype, n);
        prof_end(b, pe);
        launched(b, "widening a weight to f32");
        wf = (const float *)b->wf32;
    }
    int pe = prof_begin(b, P_BMATMUL);
    blas_ok(b, cublasSgemm(b->blas, CUBLAS_OP_N, CUBLAS_OP_N, in, B, out, &one, wf, in, dy, out,
                           &beta, dx, in),
            "matmul_t (SGEMM)");
    prof_end(b, pe);
}

static void cuda_matmul_dw(ks_backend *b_, float *dW, const ks_weight *w, const float *dy,
                           const float *x, int B, int in, int out) {
    /* dW (out, in) += dy^T x: gemm's row-major form, bf16 operands for 16-bit models */
    cuda_gemm(b_, true, false, out, in, B, 1.0f, dy, out, 0, x, in, 0, 1.0f, dW, in, 0, 1,
              w->dtype != KS_DTYPE_F32);
}

/* dx row += r w dy − x r³ Σ(w dy x)/dim, one block per row; r kept for the dw kernel */
__global__ void k_rmsnorm_bwd(float *dx, float *rk, const float *dy, const float *x,
                              const float *w, int dim, float eps) {
    size_t off = (size_t)blockIdx.x * dim;
    const float *xb = x + off, *dyb = dy + off;
    float *dxb = dx + off;
    double ss = 0.0, dot = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xb[i] * xb[i];
    ss = block_sum(ss);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += (double)w[i] * dyb[i] * xb[i];
    dot = block_sum(dot);
    float r = 1.0f / sqrtf((float)(ss / dim) + eps);
    float c = (float)(dot / dim) * r * r * r;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dxb[i] += r * w[i] * dyb[i] - xb[i] * c;
    if (threadIdx.x == 0) rk[blockIdx.x] = r;
}

/* dw[i] += Σ_t dy[t,i] x[t,i] r[t]: 32 columns per block, 8 row groups summed in shared memory
 * in a fixed order (deterministic) */
__global__ void k_rmsnorm_dw(float *dw, const float *dy, const float *x, const float *rk, int B,
                             int dim) {
    __shared__ float part[8][33];
    int i = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (i < dim)
        for (int t = threadIdx.y; t < B; t += 8)
            acc += dy[(size_t)t * dim + i] * x[(size_t)t * dim + i] * rk[t];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < dim) {
        float s = dw[i];
        for (int k = 0; k < 8; k++) s += part[k][threadIdx.x];
        dw[i] = s;
    }
}

static void cuda_rmsnorm_bwd(ks_backend *b_, float *dx, float *dw, const float *dy,
                             const float *x, const float *w, int B, int dim, float eps) {
    cuda_backend *b = CB(b_);
    const wentry *e = weight(b, w, KS_DTYPE_F32, 1, (size_t)dim);
    if (!e || B <= 0) return;
    if (!grow(b, &b->rbuf, &b->rbuf_cap, (size_t)B * sizeof(float), "rmsnorm_bwd's row factors"))
        return;
    int pe = prof_begin(b, P_BELEM);
    k_rmsnorm_bwd<<<B, B < 64 ? 1024 : 256, 0, b->stream>>>(dx, (float *)b->rbuf, dy, x,
                                                           (const float *)e->dev, dim, eps);
    if (dw)
        k_rmsnorm_dw<<<(unsigned)((dim + 31) / 32), dim3(32, 8), 0, b->stream>>>(
            dw, dy, x, (const float *)b->rbuf, B, dim);
    prof_end(b, pe);
    launched(b, "rmsnorm_bwd");
}

static void cuda_causal_mask(ks_backend *b_, float *att, int H, int B, int L, int pos0) {
    cuda_backend *b = CB(b_);
    size_t rows = (size_t)H * B;
    if (!rows) return;
    unsigned grid = rows > 65535 ? 65535 : (unsigned)rows;
    int pe = prof_begin(b, P_MASK);
    k_causal_mask<<<grid, 128, 0, b->stream>>>(att, B, L, pos0, rows);
    prof_end(b, pe);
    launched(b, "causal mask");
}

__global__ void k_softmax_bwd(float *d, const float *P, int L) {
    float *dr = d + (size_t)blockIdx.x * L;
    const float *p = P + (size_t)blockIdx.x * L;
    double s = 0.0;
    for (int t = threadIdx.x; t < L; t += blockDim.x) s += (double)p[t] * dr[t];
    float sf = (float)block_sum(s);
    for (int t = threadIdx.x; t < L; t += blockDim.x) dr[t] = p[t] * (dr[t] - sf);
}

static void cuda_softmax_bwd(ks_backend *b_, float *d, const float *P, int rows, int L) {
    cuda_backend *b = CB(b_);
    if (rows <= 0) return;
    int pe = prof_begin(b, P_BELEM);
    k_softmax_bwd<<<(unsigned)rows, L >= 512 ? 256 : 128, 0, b->stream>>>(d, P, L);
    prof_end(b, pe);
    launched(b, "softmax_bwd");
}

__global__ void k_swiglu_bwd(float *dgate, float *dup, const float *da, const float *gate,
                             const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float a = da[i], g = gate[i];
        float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = a * (g / (1.0f + expf(-g)));
        dgate[i] = a * up[i] * (sg * (1.0f + g * (1.0f - sg)));
    }
}

static void cuda_swiglu_bwd(ks_backend *b_, float *dgate, float *dup, const float *da,
                            const float *gate, const float *up, size_t n) {
    cuda_backend *b = CB(b_);
    if (!n) return;
    unsigned grid = blocks_for(n, 256);
    int pe = prof_begin(b, P_BELEM);
    k_swiglu_bwd<<<grid > 65535 ? 65535 : grid, 256, 0, b->stream>>>(dgate, dup, da, gate, up, n);
    prof_end(b, pe);
    launched(b, "swiglu_bwd");
}

__global__ void k_embed_bwd(float *demb, const float *dx, const int *ids, int dim) {
    float *row = demb + (size_t)ids[blockIdx.x] * dim;
    const float *d = dx + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) atomicAdd(row + i, d[i]);
}

static void cuda_embed_bwd(ks_backend *b_, float *demb, const float *dx, const int *ids, int B,
                           int dim) {
    cuda_backend *b = CB(b_);
    if (B <= 0) return;
    if (!grow(b, (void **)&b->ids, &b->ids_cap, (size_t)B * sizeof(int), "token ids")) return;
    int pe = prof_begin(b, P_BELEM);
    upload(b, b->ids, ids, (size_t)B * sizeof(int));
    k_embed_bwd<<<B, 256, 0, b->stream>>>(demb, dx, b->ids, dim);
    prof_end(b, pe);
    launched(b, "embed_bwd");
}

static void cuda_copy(ks_backend *b_, float *dst, const float *src, size_t n) {
    cuda_backend *b = CB(b_);
    if (n)
        cu_ok(b, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, b->stream),
              "device copy");
}

static void cuda_zero(ks_backend *b_, float *p, size_t n) {
    cuda_backend *b = CB(b_);
    if (n) cu_ok(b, cudaMemsetAsync(p, 0, n * sizeof(float), b->stream), "device memset");
}

static void *cuda_host_alloc(ks_backend *b_, size_t bytes) {
    (void)b_;
    void *p = NULL;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(ks_backend *b_, void *p) {
    cuda_backend *b = CB(b_);
    cudaStreamSynchronize(b->stream); /* a queued copy may still read it */
    if (b->cstream) cudaStreamSynchronize(b->cstream);
    cudaFreeHost(p);
}

/* The copy stream, its event and the snapshot ring, made on first use: the ring takes an
 * eighth of the free device memory, between 64 MiB and 1 GiB. false (and copies stay
 * synchronous) where any of it cannot be had. */
static bool async_ready(cuda_backend *b) {
    if (b->async_tried) return b->async_ok;
    b->async_tried = true;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    size_t cap = fr / 8;
    if (cap > ((size_t)1 << 30)) cap = (size_t)1 << 30;
    if (cap < ((size_t)64 << 20)) return false;
    if (cudaStreamCreateWithFlags(&b->cstream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreateWithFlags(&b->ev_snap, cudaEventDisableTiming) != cudaSuccess ||
        cudaMalloc((void **)&b->snap, cap) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    b->snap_cap = cap;
    b->async_ok = true;
    return true;
}

/* src is copied to a snapshot slot on the compute stream (so the ops after it may overwrite
 * src at once), and from there to host on the copy stream, which waits for the snapshot only:
 * the transfer over the bus overlaps the computation that follows. Slots are reused only after
 * the copy stream has drained (a wrap of the ring waits for it). A tensor larger than half the
 * ring is copied synchronously. */
static void cuda_to_host_async(ks_backend *b_, float *host, const float *src, size_t n) {
    cuda_backend *b = CB(b_);
    size_t bytes = n * sizeof(float);
    if (!n) return;
    if (!async_ready(b) || bytes > b->snap_cap / 2) {
        cuda_to_host(b_, host, src, n);
        return;
    }
    if (b->snap_pos + bytes > b->snap_cap) {
        if (!cu_ok(b, cudaStreamSynchronize(b->cstream), "asynchronous copies")) return;
        b->snap_pos = 0;
    }
    unsigned char *slot = b->snap + b->snap_pos;
    b->snap_pos += (bytes + 255) & ~(size_t)255;
    int pe = prof_begin(b, P_D2H);
    bool ok = cu_ok(b, cudaMemcpyAsync(slot, src, bytes, cudaMemcpyDeviceToDevice, b->stream),
                    "snapshot for an asynchronous copy") &&
              cu_ok(b, cudaEventRecord(b->ev_snap, b->stream), "snapshot event") &&
              cu_ok(b, cudaStreamWaitEvent(b->cstream, b->ev_snap, 0), "copy stream wait") &&
              cu_ok(b, cudaMemcpyAsync(host, slot, bytes, cudaMemcpyDeviceToHost, b->cstream),
                    "asynchronous device-to-host copy");
    prof_end(b, pe);
    (void)ok; /* an error is sticky: check() reports it, and forward.c then delivers nothing */
}

static void cuda_copies_wait(ks_backend *b_) {
    cuda_backend *b = CB(b_);
    if (!b->cstream) return;
    if (cu_ok(b, cudaStreamSynchronize(b->cstream), "asynchronous copies")) b->snap_pos = 0;
}

/* ------------------------------------------------------------------ lifecycle */

static ks_status cuda_check(ks_backend *b_, ks_error *err) {
    cuda_backend *b = CB(b_);
    launched(b, "kernel");
    if (b->prof) prof_harvest(b);
    if (!b->err_code) return KS_OK;
    return ks_error_set(err, b->err_code, "%s", b->err_msg);
}

static ks_status cuda_prepare(ks_backend *b_, const ks_model *m, ks_error *err) {
    cuda_backend *b = CB(b_);
    const ks_config *c = &m->cfg;
    size_t dim = (size_t)c->dim, hidden = (size_t)c->hidden_dim;
    size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers && !b->err_code; l++) {
        const ks_layer_weights *w = &m->layers[l];
        weight(b, w->attn_norm, KS_DTYPE_F32, 1, dim);
        weight(b, w->ffn_norm, KS_DTYPE_F32, 1, dim);
        weight(b, w->wq.data, w->wq.dtype, q_dim, dim);
        weight(b, w->wk.data, w->wk.dtype, kv_dim, dim);
        weight(b, w->wv.data, w->wv.dtype, kv_dim, dim);
        weight(b, w->wo.data, w->wo.dtype, dim, q_dim);
        weight(b, w->w_gate.data, w->w_gate.dtype, hidden, dim);
        weight(b, w->w_up.data, w->w_up.dtype, hidden, dim);
        weight(b, w->w_down.data, w->w_down.dtype, dim, hidden);
    }
    if (!b->err_code) weight(b, m->final_norm, KS_DTYPE_F32, 1, dim);
    if (!b->err_code)
        weight(b, m->tok_embeddings.data, m->tok_embeddings.dtype, (size_t)c->vocab_size, dim);
    if (!b->err_code) weight(b, m->output.data, m->output.dtype, (size_t)c->vocab_size, dim);
    if (b->err_code) return ks_error_set(err, b->err_code, "%s", b->err_msg);
    b->model_16bit = c->n_layers > 0 && m->layers[0].wq.dtype != KS_DTYPE_F32;
    return KS_OK;
}

static ks_status cuda_reload(ks_backend *b_, ks_error *err) {
    cuda_backend *b = CB(b_);
    for (size_t i = 0; i < b->tab_cap && !b->err_code; i++) {
        const wentry *e = &b->tab[i];
        if (e->host) copy_weight(b, e->dev, e->host, e->host_dtype, e->rows, e->cols);
    }
    if (b->err_code) return ks_error_set(err, b->err_code, "%s", b->err_msg);
    return KS_OK;
}

static void cuda_destroy(ks_backend *b_) {
    cuda_backend *b = CB(b_);
    if (!b) return;
    if (b->prof) prof_report(b);
    for (int i = 0; b->ev && i < 2 * b->ev_cap; i++) cudaEventDestroy(b->ev[i]);
    free(b->ev);
    free(b->ev_op);
    cudaStreamSynchronize(b->stream);
    if (b->cstream) {
        cudaStreamSynchronize(b->cstream);
        cudaStreamDestroy(b->cstream);
    }
    if (b->ev_snap) cudaEventDestroy(b->ev_snap);
    cudaFree(b->snap);
    for (size_t i = 0; i < b->tab_cap; i++)
        if (b->tab[i].host) cudaFree(b->tab[i].dev);
    free(b->tab);
    cudaFree(b->xh);
    cudaFree(b->att16);
    cudaFree(b->tcs);
    cudaFree(b->ids);
    cudaFree(b->g16a);
    cudaFree(b->g16b);
    cudaFree(b->wf32);
    cudaFree(b->rbuf);
    if (b->ring) cudaFreeHost(b->ring);
    if (b->blas) cublasDestroy(b->blas);
    if (b->stream) cudaStreamDestroy(b->stream);
    free(b);
}

static const ks_backend_i cuda_i = {
    /* .name = */ "cuda",
    /* .destroy = */ cuda_destroy,
    /* .alloc = */ cuda_alloc,
    /* .release = */ cuda_release,
    /* .to_host = */ cuda_to_host,
    /* .from_host = */ cuda_from_host,
    /* .embed = */ cuda_embed,
    /* .rmsnorm = */ cuda_rmsnorm,
    /* .matmul = */ cuda_matmul,
    /* .rope = */ cuda_rope,
    /* .kv_store = */ cuda_kv_store,
    /* .attn_scores = */ cuda_attn_scores,
    /* .softmax = */ cuda_softmax,
    /* .attn_values = */ cuda_attn_values,
    /* .swiglu = */ cuda_swiglu,
    /* .add = */ cuda_add,
    /* .prepare = */ cuda_prepare,
    /* .attn_fused = */ cuda_attn_fused,
    /* .check = */ cuda_check,
    /* .host_alloc = */ cuda_host_alloc,
    /* .host_free = */ cuda_host_free,
    /* .to_host_async = */ cuda_to_host_async,
    /* .copies_wait = */ cuda_copies_wait,
    /* .gemm = */ cuda_gemm,
    /* .matmul_t = */ cuda_matmul_t,
    /* .matmul_dw = */ cuda_matmul_dw,
    /* .rmsnorm_bwd = */ cuda_rmsnorm_bwd,
    /* .causal_mask = */ cuda_causal_mask,
    /* .softmax_bwd = */ cuda_softmax_bwd,
    /* .swiglu_bwd = */ cuda_swiglu_bwd,
    /* .embed_bwd = */ cuda_embed_bwd,
    /* .copy = */ cuda_copy,
    /* .zero = */ cuda_zero,
    /* .reload = */ cuda_reload,
};

extern "C" ks_status ks_backend_cuda_create(size_t max_in, ks_backend **out, ks_error *err) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return ks_error_set(err, KS_ERR_BACKEND,
                            "backend 'cuda': no usable CUDA device (%s); use --backend cpu",
                            e != cudaSuccess ? cudaGetErrorString(e) : "the runtime sees 0 devices");
    }
    const char *ev = getenv("KS_CUDA_ATTN");
    attn_mode mode = ATTN_AUTO;
    if (ev && *ev) {
        if (!strcmp(ev, "flash"))
            mode = ATTN_FLASH;
        else if (!strcmp(ev, "tc"))
            mode = ATTN_TC;
        else if (!strcmp(ev, "eager"))
            mode = ATTN_EAGER;
        else if (strcmp(ev, "auto"))
            return ks_error_set(err, KS_ERR_ARG,
                                "KS_CUDA_ATTN='%s': expected auto, tc, flash or eager", ev);
    }
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    if (!b) return ks_error_set(err, KS_ERR_NOMEM, "cuda backend: out of memory");
    b->base.i = &cuda_i;
    b->max_in = max_in;
    b->attn = mode;
    if ((e = cudaSetDevice(0)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        free(b);
        return ks_error_set(err, KS_ERR_BACKEND, "backend 'cuda': cannot start device 0: %s",
                            cudaGetErrorString(e));
    }
    cublasStatus_t s = cublasCreate(&b->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(b->blas, b->stream);
    /* f32 stays f32: no TF32 behind the caller's back */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        if (b->blas) cublasDestroy(b->blas);
        b->blas = NULL;
        cuda_destroy(&b->base);
        return ks_error_set(err, KS_ERR_BACKEND, "backend 'cuda': cuBLAS: %s",
                            cublasGetStatusString(s));
    }
    const char *pv = getenv("KS_CUDA_PROFILE");
    if (pv && *pv && strcmp(pv, "0")) {
        b->ev_cap = 4096;
        b->ev = (cudaEvent_t *)calloc(2 * (size_t)b->ev_cap, sizeof *b->ev);
        b->ev_op = (int *)calloc((size_t)b->ev_cap, sizeof *b->ev_op);
        bool ok = b->ev && b->ev_op;
        for (int i = 0; ok && i < 2 * b->ev_cap; i++)
            ok = cudaEventCreate(&b->ev[i]) == cudaSuccess;
        if (!ok) {
            cudaGetLastError();
            b->ev_cap = 0; /* no profile rather than no backend */
        }
        b->prof = ok;
    }
    if (cudaMallocHost((void **)&b->ring, KS_UPLOAD_RING) != cudaSuccess) {
        cudaGetLastError();
        b->ring = NULL; /* uploads then go through the runtime's own staging */
    }
    *out = &b->base;
    return KS_OK;
}
