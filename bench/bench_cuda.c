/* bench_cuda.c — the CUDA backend (session backend "cuda") on a model random-initialised in
 * memory at a real shape, each figure as a ratio to a limit of the same GPU measured in the
 * same run:
 *
 *   gemm     the GEMM peak: cublasGemmEx bf16 x bf16 -> f32 (CUBLAS_COMPUTE_32F), N x N x N with
 *            N = 8192 (--quick 4096), 3 warm-ups, median of 10 timed with CUDA events; SGEMM f32
 *            (CUBLAS_DEFAULT_MATH: no TF32) likewise, the limit of f32 models. The model's own
 *            largest prefill GEMM is shown too (informative).
 *   copy     memory bandwidth: device-to-device cudaMemcpyAsync of 2 GiB (--quick 256 MiB),
 *            median of 10, counting bytes read + written.
 *   prefill  one prompt of 2048 random tokens (--quick 256), KS_LOGITS_LAST, one warm-up, median
 *            of 5: MFU = model FLOPs / time / GEMM peak (the formula is printed).
 *   decode   64 one-token steps after a 128-token prefill: (matmul weight bytes + KV-cache bytes
 *            read) per token / time per token / copy bandwidth.
 *   record   against the plain prefill of the same tokens in the same session: a hook copying
 *            every layer's hook_resid_post to host memory; a hook copying layers 0-3's
 *            attn.hook_pattern; the recorder (activations/) writing the same to an HDF5 dump.
 *   train    ks_grad (model/backward.c) on the backend, one sequence of 2048 tokens (--quick
 *            256; halved until its activations fit): forward + backward with every parameter's
 *            gradient (a training step without the optimizer): MFU = 3 x prefill model FLOPs /
 *            time / GEMM peak; and with activation gradients only (attribution): 2 x. The
 *            objective (log-softmax over the vocabulary, on the host) is not timed; the logits'
 *            copy to the host and dlogits' back are.
 * Nothing is asserted: targets are printed beside the figures. Every figure is printed as it
 * completes (a FIGURE line, which tests/gpu/run.sh collects) and, with --json, the JSON file is
 * rewritten after each one, so a run cut short keeps what it measured.
 *
 * Every CUDA and cuBLAS call is checked; a failure ends its part (with the call, file and line)
 * and the run goes on with the next. Exit status: 0 every part ran, 1 a part failed, 2 usage,
 * 3 the time budget (--budget) ran out, 77 no CUDA device (a skip for test harnesses).
 *
 * --backend cpu|cpu-copy runs the model parts on the CPU backend without touching CUDA (gemm and
 * copy are skipped): a way to test this program on a machine without a GPU. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_model.h"
#include "ks_dump.h"
#include "model_private.h"

/* ------------------------------------------------------------------ options and state */


/* LLaMA-7B and -13B (Touvron et al. 2023); tiny: smoke runs */
static const bench_shape shapes[] = {
    {"7b", 4096, 11008, 32, 32, 32, 32000},
    {"13b", 5120, 13824, 40, 40, 40, 32000},
    {"tiny", 256, 688, 2, 2, 2, 1000},
};

enum { P_GEMM = 1, P_COPY = 2, P_PREFILL = 4, P_DECODE = 8, P_RECORD = 16, P_TRAIN = 32,
       P_ALL = 63, N_PARTS = 6 };
static const char *const part_names[] = {"gemm", "copy", "prefill", "decode", "record", "train"};

typedef struct {
    /* options */
    bench_shape sh;
    char shape_label[64];
    ks_dtype dtype;
    bool quick;
    const char *json_path;
    const char *out_dir;
    unsigned parts;
    const char *backend;
    double budget_s;
    bool cuda; /* the backend is "cuda": CUDA calls are made */
    int T;     /* prompt length of prefill and record */

    /* limits measured in this run (0: not measured) */
    double gemm_bf16, gemm_f32; /* TFLOP/s */
    double copy_gbs;            /* GB/s, read + written */

    json_t *root, *figs, *notes;
    bool json_warned;
    bool failed;
    double t0;
    /* temporary files, removed at exit and by the budget alarm */
    char ident[4096], dump[4096];
} bench;

static bench G;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static double elapsed(void) { return now() - G.t0; }
static double time_left(void) { return G.budget_s - elapsed(); }

/* stdout is a pipe under run.sh: flush every line so a run cut short keeps its output */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...) {
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_cuda: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    G.failed = true;
}

static bool cuda_ok(cudaError_t e, const char *call, const char *file, int line) {
    if (e == cudaSuccess) return true;
    fail("%s:%d: %s: %s (%s)", file, line, call, cudaGetErrorName(e), cudaGetErrorString(e));
    return false;
}

static bool cublas_ok(cublasStatus_t s, const char *call, const char *file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    fail("%s:%d: %s: %s (%s)", file, line, call, cublasGetStatusName(s), cublasGetStatusString(s));
    return false;
}

/* Each evaluates to true on success; on failure it prints the call, file and line. */
#define CUDA_OK(call) cuda_ok((call), #call, __FILE__, __LINE__)
#define CUBLAS_OK(call) cublas_ok((call), #call, __FILE__, __LINE__)

static void remove_temp_files(void) {
    if (G.dump[0]) unlink(G.dump);
    if (G.ident[0]) unlink(G.ident);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "\nbench_cuda: the time budget (--budget) ran out; stopping here "
                              "(the figures printed so far are in the JSON file)\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) {}
    remove_temp_files(); /* unlink is async-signal-safe */
    _exit(3);
}

/* How many timed repetitions fit: want, or fewer (at least 1) when each takes each_s and the
 * repetitions should stay within share_s seconds and the budget left. */
static int fit_reps(int want, double each_s, double share_s) {
    double room = share_s;
    double left = time_left() - 20.0; /* keep some for the parts after */
    if (left < room) room = left;
    if (each_s <= 0) return want;
    int n = (int)(room / each_s);
    if (n < 1) n = 1;
    return n < want ? n : want;
}

/* ------------------------------------------------------------------ JSON */

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void json_save(void) {
    if (!G.json_path || !G.root) return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", G.json_path);
    json_object_set_new(G.root, "elapsed_s", json_real(elapsed()));
    if (json_dump_file(G.root, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 ||
        rename(tmp, G.json_path) != 0) {
        if (!G.json_warned) fail("cannot write %s: %s", G.json_path, strerror(errno));
        G.json_warned = true;
    }
}

/* One figure: printed now as a FIGURE line and kept in the JSON. ratio and target are NAN
 * when there is none; cmp is ">=" or "<=" (the direction of the target). */
static void figure(const char *name, double value, const char *unit, double ratio,
                   const char *ratio_of, double target, const char *cmp, const char *what) {
    char line[512];
    int n = snprintf(line, sizeof line, "FIGURE %-27s %12.4g %-8s", name, value, unit);
    const char *verdict = NULL;
    if (isfinite(ratio) && n > 0 && (size_t)n < sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, " ratio %.3f of %s", ratio, ratio_of);
    if (isfinite(ratio) && isfinite(target)) {
        bool met = cmp[0] == '>' ? ratio >= target : ratio <= target;
        verdict = met ? "met" : "NOT met";
        if (n > 0 && (size_t)n < sizeof line)
            snprintf(line + n, sizeof line - (size_t)n, " (target %s %.2f: %s)", cmp, target, verdict);
    }
    say("%s\n", line);
    if (!G.figs) return;
    json_t *f = json_object();
    json_object_set_new(f, "name", json_string(name));
    json_object_set_new(f, "value", jnum(value));
    json_object_set_new(f, "unit", json_string(unit));
    json_object_set_new(f, "ratio", jnum(ratio));
    json_object_set_new(f, "ratio_of", isfinite(ratio) ? json_string(ratio_of) : json_null());
    json_object_set_new(f, "target", jnum(target));
    json_object_set_new(f, "target_cmp", isfinite(target) ? json_string(cmp) : json_null());
    json_object_set_new(f, "met", verdict ? json_boolean(verdict[0] == 'm') : json_null());
    json_object_set_new(f, "what", json_string(what));
    json_array_append_new(G.figs, f);
    json_save();
}

/* A figure that was not measured, with the reason (printed and kept in the JSON). */
static void not_measured(const char *name, double target, const char *cmp, const char *why) {
    say("NOT MEASURED %s: %s\n", name, why);
    if (!G.notes) return;
    json_t *f = json_object();
    json_object_set_new(f, "name", json_string(name));
    json_object_set_new(f, "target", jnum(target));
    json_object_set_new(f, "target_cmp", isfinite(target) ? json_string(cmp) : json_null());
    json_object_set_new(f, "reason", json_string(why));
    json_array_append_new(G.notes, f);
    json_save();
}

/* ------------------------------------------------------------------ device */

/* Header lines about device 0; false when there is no usable CUDA device. */
static bool device_info(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(why, cap, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        return false;
    }
    if (n == 0) {
        snprintf(why, cap, "the CUDA runtime sees 0 devices");
        return false;
    }
    if (!CUDA_OK(cudaSetDevice(0))) {
        snprintf(why, cap, "cudaSetDevice(0) failed");
        return false;
    }
    struct cudaDeviceProp p;
    if (!CUDA_OK(cudaGetDeviceProperties(&p, 0))) {
        snprintf(why, cap, "cudaGetDeviceProperties failed");
        return false;
    }
    size_t free_b = 0, total_b = 0;
    if (!CUDA_OK(cudaMemGetInfo(&free_b, &total_b))) {
        snprintf(why, cap, "cudaMemGetInfo failed");
        return false;
    }
    int drv = 0, rt = 0, clk = 0, mclk = 0, cublas_v = 0;
    CUDA_OK(cudaDriverGetVersion(&drv));
    CUDA_OK(cudaRuntimeGetVersion(&rt));
    /* clocks in kHz; informative only, so a failure just leaves 0 */
    if (cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0) != cudaSuccess) clk = 0;
    if (cudaDeviceGetAttribute(&mclk, cudaDevAttrMemoryClockRate, 0) != cudaSuccess) mclk = 0;
    (void)cudaGetLastError();
    int maj = 0, min = 0, pat = 0;
    if (cublasGetProperty(MAJOR_VERSION, &maj) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(MINOR_VERSION, &min) == CUBLAS_STATUS_SUCCESS &&
        cublasGetProperty(PATCH_LEVEL, &pat) == CUBLAS_STATUS_SUCCESS)
        cublas_v = maj * 10000 + min * 100 + pat;
    say("device 0 of %d: %s, compute %d.%d, %d SMs, %.1f GiB (%.1f GiB free), L2 %.0f MiB, "
        "memory bus %d bits\n",
        n, p.name, p.major, p.minor, p.multiProcessorCount, total_b / 1073741824.0,
        free_b / 1073741824.0, p.l2CacheSize / 1048576.0, p.memoryBusWidth);
    say("clocks: %d MHz SM, %d MHz memory; driver supports CUDA %d.%d, runtime %d.%d, cuBLAS %d.%d.%d\n",
        clk / 1000, mclk / 1000, drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10, maj, min,
        pat);
    if (G.root) {
        json_t *d = json_object();
        json_object_set_new(d, "name", json_string(p.name));
        json_object_set_new(d, "count", json_integer(n));
        json_object_set_new(d, "compute_capability", json_sprintf("%d.%d", p.major, p.minor));
        json_object_set_new(d, "sms", json_integer(p.multiProcessorCount));
        json_object_set_new(d, "memory_gib", json_real(total_b / 1073741824.0));
        json_object_set_new(d, "memory_free_gib", json_real(free_b / 1073741824.0));
        json_object_set_new(d, "sm_clock_mhz", json_integer(clk / 1000));
        json_object_set_new(d, "memory_clock_mhz", json_integer(mclk / 1000));
        json_object_set_new(d, "memory_bus_bits", json_integer(p.memoryBusWidth));
        json_object_set_new(d, "driver_cuda_version", json_integer(drv));
        json_object_set_new(d, "runtime_version", json_integer(rt));
        json_object_set_new(d, "cublas_version", json_integer(cublas_v));
        json_object_set_new(G.root, "device", d);
    }
    return true;
}

/* Wait for the device (a backend may return before its kernels finish); false when an
 * asynchronous error surfaces here. */
static bool sync_device(void) {
    return !G.cuda || CUDA_OK(cudaDeviceSynchronize());
}

/* ------------------------------------------------------------------ gemm */

/* Median seconds of one GEMM (3 warm-ups, reps timed with events); -1 on a failure. bf16: A
 * and B bf16, C f32 (cublasGemmEx, CUBLAS_COMPUTE_32F); else SGEMM. Column-major C (m x n) =
 * A^T B with A (k x m), B (k x n): the layout of the engine's y = x W^T. */
static double time_gemm(cublasHandle_t h, cudaStream_t st, cudaEvent_t e0, cudaEvent_t e1,
                        bool bf16, int m, int n, int k, const void *A, const void *B, float *C,
                        int reps) {
    const float alpha = 1.0f, beta = 0.0f;
    double t[16];
    if (reps > 16) reps = 16;
    for (int r = -3; r < reps; r++) {
        if (!CUDA_OK(cudaEventRecord(e0, st))) return -1;
        bool ok = bf16 ? CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, A,
                                                CUDA_R_16BF, k, B, CUDA_R_16BF, k, &beta, C,
                                                CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT))
                       : CUBLAS_OK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, A, k,
                                               B, k, &beta, C, m));
        if (!ok) return -1;
        if (!CUDA_OK(cudaEventRecord(e1, st)) || !CUDA_OK(cudaEventSynchronize(e1))) return -1;
        float ms = 0;
        if (!CUDA_OK(cudaEventElapsedTime(&ms, e0, e1))) return -1;
        if (r >= 0) t[r] = ms * 1e-3;
    }
    return bench_median(t, reps);
}

static bool part_gemm(void) {
    say("\n== gemm: cuBLAS peak ==\n");
    const int N = G.quick ? 4096 : 8192;
    const int T = G.T, d = G.sh.dim, hid = G.sh.hidden;
    size_t nn = (size_t)N * N, cap = nn;
    if ((size_t)T * d > cap) cap = (size_t)T * d;
    if ((size_t)hid * d > cap) cap = (size_t)hid * d;
    if ((size_t)T * hid > cap) cap = (size_t)T * hid;
    bool ok = false;
    cublasHandle_t h = NULL;
    cudaStream_t st = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    void *A = NULL, *B = NULL;
    float *C = NULL;
    void *host = malloc(cap * sizeof(float));
    if (!host) {
        fail("gemm: out of host memory (%zu MB)", cap * sizeof(float) >> 20);
        return false;
    }
    if (!CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)) ||
        !CUDA_OK(cudaEventCreate(&e0)) || !CUDA_OK(cudaEventCreate(&e1)) ||
        !CUBLAS_OK(cublasCreate(&h)) || !CUBLAS_OK(cublasSetStream(h, st)) ||
        !CUBLAS_OK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH)))
        goto out;
    /* random operands: constant or zero data draws less power, so it would overstate the peak */
    if (!CUDA_OK(cudaMalloc(&A, cap * sizeof(float))) || !CUDA_OK(cudaMalloc(&B, cap * sizeof(float))) ||
        !CUDA_OK(cudaMalloc((void **)&C, cap * sizeof(float))))
        goto out;
    bench_fill_random_bf16(host, cap, 11);
    if (!CUDA_OK(cudaMemcpy(A, host, cap * 2, cudaMemcpyHostToDevice))) goto out;
    bench_fill_random_bf16(host, cap, 12);
    if (!CUDA_OK(cudaMemcpy(B, host, cap * 2, cudaMemcpyHostToDevice))) goto out;

    double t = time_gemm(h, st, e0, e1, true, N, N, N, A, B, C, 10);
    if (t <= 0) goto out;
    G.gemm_bf16 = 2.0 * N * N * (double)N / t / 1e12;
    say("bf16 x bf16 -> f32 (cublasGemmEx, CUBLAS_COMPUTE_32F) %d^3: %.3f ms, median of 10\n", N,
        t * 1e3);
    figure("gemm_bf16_peak", G.gemm_bf16, "TFLOP/s", NAN, "", NAN, "", "cublasGemmEx bf16 in, f32 out, N^3, median of 10");
    if (G.dtype == KS_DTYPE_BF16) {
        /* the model's widest prefill GEMM, (T x d) . (hidden x d)^T: what prefill can reach */
        t = time_gemm(h, st, e0, e1, true, hid, T, d, A, B, C, 10);
        if (t <= 0) goto out;
        double tf = 2.0 * T * (double)hid * d / t / 1e12;
        say("the model's MLP GEMM (%d x %d) . (%d x %d)^T, bf16: %.3f ms = %.1f TFLOP/s\n", T, d,
            hid, d, t * 1e3, tf);
        figure("gemm_bf16_model_shape", tf, "TFLOP/s", tf / G.gemm_bf16, "gemm_bf16_peak", NAN, "",
               "cublasGemmEx at the model's (T x dim) . (hidden x dim)^T");
    }

    /* f32 operands: regenerate (f32 needs twice the bytes of the bf16 fill) */
    bench_fill_random(host, cap, 13);
    if (!CUDA_OK(cudaMemcpy(A, host, cap * sizeof(float), cudaMemcpyHostToDevice))) goto out;
    bench_fill_random(host, cap, 14);
    if (!CUDA_OK(cudaMemcpy(B, host, cap * sizeof(float), cudaMemcpyHostToDevice))) goto out;
    t = time_gemm(h, st, e0, e1, false, N, N, N, A, B, C, 10);
    if (t <= 0) goto out;
    G.gemm_f32 = 2.0 * N * N * (double)N / t / 1e12;
    say("f32 SGEMM %d^3 (CUBLAS_DEFAULT_MATH: no TF32): %.3f ms, median of 10\n", N, t * 1e3);
    figure("gemm_f32_peak", G.gemm_f32, "TFLOP/s", NAN, "", NAN, "", "cublasSgemm f32, no TF32, N^3, median of 10");
    if (G.dtype == KS_DTYPE_F32) {
        t = time_gemm(h, st, e0, e1, false, hid, T, d, A, B, C, 10);
        if (t <= 0) goto out;
        double tf = 2.0 * T * (double)hid * d / t / 1e12;
        say("the model's MLP GEMM (%d x %d) . (%d x %d)^T, f32: %.3f ms = %.1f TFLOP/s\n", T, d,
            hid, d, t * 1e3, tf);
        figure("gemm_f32_model_shape", tf, "TFLOP/s", tf / G.gemm_f32, "gemm_f32_peak", NAN, "",
               "cublasSgemm at the model's (T x dim) . (hidden x dim)^T");
    }
    ok = true;
out:
    if (h) CUBLAS_OK(cublasDestroy(h));
    if (A) CUDA_OK(cudaFree(A));
    if (B) CUDA_OK(cudaFree(B));
    if (C) CUDA_OK(cudaFree(C));
    if (e0) CUDA_OK(cudaEventDestroy(e0));
    if (e1) CUDA_OK(cudaEventDestroy(e1));
    if (st) CUDA_OK(cudaStreamDestroy(st));
    free(host);
    if (!ok) fail("gemm: part failed (see above)");
    return ok;
}

/* ------------------------------------------------------------------ copy */

static bool part_copy(void) {
    say("\n== copy: device-to-device bandwidth ==\n");
    const size_t bytes = G.quick ? (size_t)256 << 20 : (size_t)2 << 30;
    bool ok = false;
    cudaStream_t st = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    void *src = NULL, *dst = NULL;
    double t[10];
    if (!CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)) ||
        !CUDA_OK(cudaEventCreate(&e0)) || !CUDA_OK(cudaEventCreate(&e1)) ||
        !CUDA_OK(cudaMalloc(&src, bytes)) || !CUDA_OK(cudaMalloc(&dst, bytes)) ||
        !CUDA_OK(cudaMemsetAsync(src, 0x5a, bytes, st)) || !CUDA_OK(cudaMemsetAsync(dst, 0, bytes, st)))
        goto out;
    for (int r = -2; r < 10; r++) {
        float ms = 0;
        if (!CUDA_OK(cudaEventRecord(e0, st)) ||
            !CUDA_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st)) ||
            !CUDA_OK(cudaEventRecord(e1, st)) || !CUDA_OK(cudaEventSynchronize(e1)) ||
            !CUDA_OK(cudaEventElapsedTime(&ms, e0, e1)))
            goto out;
        if (r >= 0) t[r] = ms * 1e-3;
    }
    double tm = bench_median(t, 10);
    G.copy_gbs = 2.0 * (double)bytes / tm / 1e9;
    say("cudaMemcpyAsync device to device, %zu MiB: %.3f ms, median of 10 (%.3f-%.3f)\n",
        bytes >> 20, tm * 1e3, t[0] * 1e3, t[9] * 1e3);
    figure("copy_bandwidth", G.copy_gbs, "GB/s", NAN, "", NAN, "", "D2D cudaMemcpyAsync, bytes read + written, median of 10");
    ok = true;
out:
    if (src) CUDA_OK(cudaFree(src));
    if (dst) CUDA_OK(cudaFree(dst));
    if (e0) CUDA_OK(cudaEventDestroy(e0));
    if (e1) CUDA_OK(cudaEventDestroy(e1));
    if (st) CUDA_OK(cudaStreamDestroy(st));
    if (!ok) fail("copy: part failed (see above)");
    return ok;
}

/* ------------------------------------------------------------------ model parts */

/* Seconds of one forward of ids[0..n) from position 0 (KS_LOGITS_LAST: logits copied to the
 * host), device synchronised; -1 on an error (printed). */
static double timed_prefill(ks_session *s, const int *ids, int n, float *logits) {
    ks_error err = {0};
    ks_session_reset(s);
    double t0 = now();
    if (ks_session_forward(s, ids, n, KS_LOGITS_LAST, logits, &err)) {
        fail("forward of %d tokens: %s", n, err.msg);
        return -1;
    }
    if (!sync_device()) return -1;
    return now() - t0;
}

/* Model FLOPs of a prefill of T tokens: 2 T (matmul parameters, output head included, the
 * embedding table not) + QK^T and PV over the causal triangle. */
static double prefill_flops(const ks_config *c, int T) {
    double d = c->dim, h = c->hidden_dim, q = (double)c->n_heads * c->head_dim;
    double kv = (double)c->n_kv_heads * c->head_dim;
    double per_layer = d * q + 2.0 * d * kv + q * d + 3.0 * d * h;
    double matmul = c->n_layers * per_layer + (double)c->vocab_size * d;
    return 2.0 * T * matmul + 2.0 * 2.0 * c->n_layers * d * ((double)T * (T + 1) / 2.0);
}

static double peak_for_dtype(void) { return G.dtype == KS_DTYPE_BF16 ? G.gemm_bf16 : G.gemm_f32; }

static bool part_prefill(ks_session *s, const int *ids, float *logits) {
    const int T = G.T;
    const ks_config *c = ks_model_config(ks_session_model(s));
    say("\n== prefill: one prompt of %d tokens ==\n", T);
    double w = timed_prefill(s, ids, T, logits);
    if (w < 0) return false;
    int reps = fit_reps(5, w, 30.0);
    say("warm-up: %.3f s; timing %d repetitions\n", w, reps);
    double t[5];
    for (int r = 0; r < reps; r++)
        if ((t[r] = timed_prefill(s, ids, T, logits)) < 0) return false;
    double tm = bench_median(t, reps);
    double flops = prefill_flops(c, T);
    double tflops = flops / tm / 1e12;
    say("%d tokens: %.2f ms, median of %d (%.2f-%.2f ms): %.0f tokens/s, %.1f TFLOP/s model FLOPs\n",
        T, tm * 1e3, reps, t[0] * 1e3, t[reps - 1] * 1e3, T / tm, tflops);
    say("model FLOPs = 2*T*(layers*(wq+wk+wv+wo+w_gate+w_up+w_down) + output head) "
        "+ 2*2*layers*dim*T*(T+1)/2\n"
        "            = 2*%d*%.0f + 4*%d*%d*%.0f = %.4g (embedding table not counted)\n",
        T, (flops - 4.0 * c->n_layers * c->dim * ((double)T * (T + 1) / 2.0)) / (2.0 * T),
        c->n_layers, c->dim, (double)T * (T + 1) / 2.0, flops);
    figure("prefill_tokens_per_s", T / tm, "tok/s", NAN, "", NAN, "", "prompt of T random tokens, KS_LOGITS_LAST, median");
    double peak = peak_for_dtype();
    const char *peak_name = G.dtype == KS_DTYPE_BF16 ? "gemm_bf16_peak" : "gemm_f32_peak";
    if (peak > 0)
        figure("prefill_mfu", tflops, "TFLOP/s", tflops / peak, peak_name, 0.5, ">=",
               "model FLOPs / prefill time / measured GEMM peak");
    else {
        figure("prefill_model_tflops", tflops, "TFLOP/s", NAN, "", NAN, "", "model FLOPs / prefill time");
        not_measured("prefill_mfu", 0.5, ">=", "no GEMM peak measured in this run (part gemm not run)");
    }
    return true;
}

static bool part_decode(ks_session *s, const int *ids, float *logits) {
    const ks_model *m = ks_session_model(s);
    const ks_config *c = ks_model_config(m);
    const int P = 128, warm = 4;
    int steps = 64;
    say("\n== decode: one token at a time after a %d-token prefill ==\n", P);
    ks_error err = {0};
    ks_session_reset(s);
    if (ks_session_forward(s, ids, P, KS_LOGITS_LAST, logits, &err)) {
        fail("decode: prefill of %d tokens: %s", P, err.msg);
        return false;
    }
    if (!sync_device()) return false;
    double tw = now();
    for (int i = 0; i < warm; i++)
        if (ks_session_forward(s, &ids[P + i], 1, KS_LOGITS_LAST, logits, &err)) {
            fail("decode: step %d: %s", i, err.msg);
            return false;
        }
    if (!sync_device()) return false;
    tw = (now() - tw) / warm;
    steps = fit_reps(steps, tw, 30.0);
    ks_session_truncate(s, P);
    double t[64];
    for (int i = 0; i < steps; i++) {
        double t0 = now();
        if (ks_session_forward(s, &ids[P + i], 1, KS_LOGITS_LAST, logits, &err)) {
            fail("decode: step %d: %s", i, err.msg);
            return false;
        }
        if (!sync_device()) return false;
        t[i] = now() - t0;
    }
    double tm = bench_median(t, steps);
    /* bytes read per token: every matmul weight (output head included) in its dtype, and the
     * f32 keys and values cached so far, at the mean position of the timed steps */
    size_t el = G.dtype == KS_DTYPE_BF16 ? 2 : 4;
    double d = c->dim, h = c->hidden_dim, q = (double)c->n_heads * c->head_dim;
    double kv = (double)c->n_kv_heads * c->head_dim;
    double wbytes = ((double)c->n_layers * (2.0 * d * q + 2.0 * d * kv + 3.0 * d * h) +
                     (double)c->vocab_size * d) * (double)el;
    double pos = P + (steps + 1) / 2.0;
    double kvbytes = (double)c->n_layers * kv * pos * 4.0 * 2.0;
    double gbs = (wbytes + kvbytes) / tm / 1e9;
    say("%d steps from position %d: %.3f ms/token, median (%.3f-%.3f): %.1f tokens/s\n", steps, P,
        tm * 1e3, t[0] * 1e3, t[steps - 1] * 1e3, 1.0 / tm);
    say("bytes per token = matmul weights %.3f GB (%s, output head included) + KV cache read "
        "layers*kv_dim*pos*4*2 = %.1f MB (pos %.1f) -> %.1f GB/s\n",
        wbytes / 1e9, ks_dtype_name(G.dtype), kvbytes / 1e6, pos, gbs);
    figure("decode_ms_per_token", tm * 1e3, "ms", NAN, "", NAN, "", "batch 1, KS_LOGITS_LAST each step, median");
    if (G.copy_gbs > 0)
        figure("decode_bandwidth", gbs, "GB/s", gbs / G.copy_gbs, "copy_bandwidth", 0.7, ">=",
               "(matmul weight bytes + KV bytes read) per token / time per token");
    else {
        figure("decode_bytes_per_s", gbs, "GB/s", NAN, "", NAN, "", "(weight + KV bytes) per token / time");
        not_measured("decode_bandwidth", 0.7, ">=", "no copy bandwidth measured in this run (part copy not run)");
    }
    return true;
}

/* A hook that takes one hook point of layers [0, n_layers) and copies each tensor into a
 * host buffer of its layer: what a user's hook that keeps activations does. */
typedef struct {
    ks_hook_point point;
    int n_layers;
    float **buf;    /* (n_layers) buffers of cap floats */
    size_t cap;
    long delivered; /* tensors copied */
    long too_big;   /* tensors larger than a buffer (not copied) */
    double bytes;
} copy_hook;

/* memcpy on every thread: one thread does not reach the memory bandwidth of the host */
static void par_copy(void *dst, const void *src, size_t bytes) {
    const size_t piece = (size_t)4 << 20;
    long n = (long)((bytes + piece - 1) / piece);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        size_t off = (size_t)i * piece, len = bytes - off < piece ? bytes - off : piece;
        memcpy((char *)dst + off, (const char *)src + off, len);
    }
}

static void par_zero(void *dst, size_t bytes) {
    const size_t piece = (size_t)4 << 20;
    long n = (long)((bytes + piece - 1) / piece);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        size_t off = (size_t)i * piece, len = bytes - off < piece ? bytes - off : piece;
        memset((char *)dst + off, 0, len);
    }
}

static bool copy_hook_fn(const ks_hook_tensor *t, bool ask, void *user) {
    copy_hook *h = user;
    if (t->point != h->point || t->layer < 0 || t->layer >= h->n_layers) return false;
    if (ask) return true;
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    if (n > h->cap) {
        h->too_big++;
        return false;
    }
    par_copy(h->buf[t->layer], t->data, n * sizeof(float));
    h->delivered++;
    h->bytes += (double)n * sizeof(float);
    return false;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Record one prompt (ids[0..T)) *R times into a fresh dump through the recorder; *per_prompt
 * gets (first record call to the end of finish) / *R, *call_med the median record call, *bytes
 * the dump's size. A one-prompt dump is written first as a warm-up; *R shrinks when the budget
 * left is short. */
static bool run_recorder(const ks_model *m, ks_session *s, const int *ids, const char *hooks,
                         const char *tag, int *R_io, double *per_prompt, double *call_med,
                         int64_t *bytes) {
    int R = *R_io < 16 ? *R_io : 16;
    const int T = G.T;
    ks_error err = {0};
    snprintf(G.dump, sizeof G.dump, "%s/bench_cuda_%ld_%s.h5", G.out_dir, (long)getpid(), tag);
    for (int pass = 0; pass < 2; pass++) {
        int n = pass == 0 ? 1 : R;
        ks_record_options ro = {.hooks = hooks,
                                .dtype = KS_DUMP_BF16,
                                .logits_topk = 0,
                                .flush_seconds = 2.0,
                                .model_path = G.ident,
                                .backend = G.backend,
                                .command_line = "bench_cuda",
                                .prompts_source = "synthetic",
                                .n_prompts_planned = n,
                                .expected_tokens = (int64_t)n * T,
                                .expected_attn = (int64_t)n * T * (T + 1) / 2};
        ks_recorder *r = NULL;
        if (ks_recorder_create(G.dump, m, &ro, true, &r, &err)) {
            fail("record %s: %s", hooks, err.msg);
            unlink(G.dump);
            return false;
        }
        double t[16], t0 = now();
        for (int i = 0; i < n; i++) {
            double a = now();
            if (ks_recorder_record(r, s, ids, T, T, NULL, NULL, NULL, &err)) {
                fail("record %s, prompt %d: %s", hooks, i, err.msg);
                ks_recorder_free(r);
                unlink(G.dump);
                return false;
            }
            t[i] = now() - a;
        }
        if (ks_recorder_finish(r, &err)) {
            fail("record %s: finish: %s", hooks, err.msg);
            ks_recorder_free(r);
            unlink(G.dump);
            return false;
        }
        ks_recorder_free(r);
        double total = now() - t0;
        *bytes = file_size(G.dump);
        unlink(G.dump);
        if (pass == 0) {
            /* the warm-up tells how many prompts fit the time left */
            int fit = fit_reps(R, total, 25.0);
            if (fit < R) say("(%s: %d prompts instead of %d, to stay in the time budget)\n", tag, fit, R);
            R = fit;
            continue;
        }
        *per_prompt = total / n;
        *call_med = bench_median(t, n);
        *R_io = n;
    }
    G.dump[0] = 0;
    return true;
}

static bool part_record(const ks_model *m, ks_session *s, const int *ids, float *logits) {
    const ks_config *c = ks_model_config(m);
    const int T = G.T, L4 = c->n_layers < 4 ? c->n_layers : 4;
    say("\n== record: hooks and the recorder vs the plain forward of %d tokens ==\n", T);
    bool ok = false;
    size_t cap_r = (size_t)T * c->dim, cap_p = (size_t)c->n_heads * T * T;
    float **br = calloc((size_t)c->n_layers, sizeof *br), **bp = calloc((size_t)L4, sizeof *bp);
    if (!br || !bp) goto oom;
    for (int l = 0; l < c->n_layers; l++)
        if (!(br[l] = malloc(cap_r * sizeof(float)))) goto oom;
    for (int l = 0; l < L4; l++)
        if (!(bp[l] = malloc(cap_p * sizeof(float)))) goto oom;
    /* touch every page now, so the timed copies do not pay for first-touch faults */
    for (int l = 0; l < c->n_layers; l++) par_zero(br[l], cap_r * sizeof(float));
    for (int l = 0; l < L4; l++) par_zero(bp[l], cap_p * sizeof(float));

    copy_hook hr = {.point = KS_HOOK_RESID_POST, .n_layers = c->n_layers, .buf = br, .cap = cap_r};
    copy_hook hp = {.point = KS_HOOK_ATTN_PATTERN, .n_layers = L4, .buf = bp, .cap = cap_p};
    copy_hook *hooks[3] = {NULL, &hr, &hp};
    char plab[64];
    snprintf(plab, sizeof plab, "hook: layers 0-%d attn.hook_pattern -> host", L4 - 1);
    const char *labels[3] = {"plain forward (no hook)", "hook: every layer's hook_resid_post -> host",
                             plab};
    double t[3][8], w[3];
    /* warm-up of each configuration (the first pattern run allocates the score buffers) */
    for (int k = 0; k < 3; k++) {
        ks_session_set_hook(s, hooks[k] ? copy_hook_fn : NULL, hooks[k]);
        ks_session_set_hook_read_only(s, true);
        w[k] = timed_prefill(s, ids, T, logits);
        ks_session_set_hook(s, NULL, NULL);
        if (w[k] < 0) goto out;
    }
    say("one delivery: resid_post %ld tensors (%.1f MB), pattern %ld tensors (%.1f MB)%s\n",
        hr.delivered, hr.bytes / 1e6, hp.delivered, hp.bytes / 1e6,
        hr.too_big || hp.too_big ? " (some tensors were larger than their buffers: not copied)" : "");
    if (hr.delivered != c->n_layers || hp.delivered != L4)
        say("warning: expected %d resid_post and %d pattern tensors per forward\n", c->n_layers, L4);
    int reps = fit_reps(5, w[0] + w[1] + w[2], 30.0);
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 3; k++) { /* interleaved, so drift affects all three alike */
            ks_session_set_hook(s, hooks[k] ? copy_hook_fn : NULL, hooks[k]);
            ks_session_set_hook_read_only(s, true);
            t[k][r] = timed_prefill(s, ids, T, logits);
            ks_session_set_hook(s, NULL, NULL);
            if (t[k][r] < 0) goto out;
        }
    double med[3];
    for (int k = 0; k < 3; k++) {
        med[k] = bench_median(t[k], reps);
        say("%-46s %9.2f ms, median of %d (%.2f-%.2f)  x%.3f\n", labels[k], med[k] * 1e3, reps,
            t[k][0] * 1e3, t[k][reps - 1] * 1e3, med[k] / med[0]);
    }
    say("(the hooks copy each tensor they are handed into a preallocated host buffer with all "
        "threads)\n");
    figure("record_plain_forward", med[0] * 1e3, "ms", NAN, "", NAN, "", "the prefill these ratios divide by");
    figure("record_hook_resid_all", med[1] * 1e3, "ms", med[1] / med[0], "plain forward", 1.1, "<=",
           "hook copying every layer's hook_resid_post to host");
    char nm[64];
    snprintf(nm, sizeof nm, "record_hook_pattern_%d", L4);
    figure(nm, med[2] * 1e3, "ms", med[2] / med[0], "plain forward", 1.5, "<=",
           "hook copying all heads' attn.hook_pattern of the first 4 layers to host");
    for (int l = 0; l < c->n_layers; l++) free(br[l]);
    for (int l = 0; l < L4; l++) free(bp[l]);
    free(br);
    free(bp);
    br = bp = NULL;

    /* the recorder, as `koalascope record --dtype bf16 --topk 0` drives it */
    {
        char sel[64], pname[64], plabel[96];
        snprintf(sel, sizeof sel, "blocks.0-%d.attn.hook_pattern", L4 - 1);
        snprintf(pname, sizeof pname, "record_dump_pattern_%d", L4);
        snprintf(plabel, sizeof plabel, "recorder: %s", sel);
        struct { const char *hooks, *tag, *name, *label; double target; } rc[2] = {
            {"blocks.*.hook_resid_post", "resid", "record_dump_resid_all", "recorder: blocks.*.hook_resid_post", 1.1},
            {sel, "pattern", pname, plabel, 1.5},
        };
        for (int k = 0; k < 2; k++) {
            int R = G.quick ? 2 : 3;
            if (time_left() < 30) {
                not_measured(rc[k].name, rc[k].target, "<=", "skipped: too little of the time budget left");
                continue;
            }
            double per = 0, call = 0;
            int64_t bytes = 0;
            if (!run_recorder(m, s, ids, rc[k].hooks, rc[k].tag, &R, &per, &call, &bytes)) {
                not_measured(rc[k].name, rc[k].target, "<=", "the recorder failed (see the error above)");
                continue;
            }
            say("%-46s %9.2f ms per prompt from the first record call to finish (x%.3f); "
                "record call %.2f ms (x%.3f); %.1f MB per prompt in the dump, %.0f MB/s\n",
                rc[k].label, per * 1e3, per / med[0], call * 1e3, call / med[0],
                bytes / 1e6 / R, bytes / 1e6 / R / per);
            figure(rc[k].name, per * 1e3, "ms", per / med[0], "plain forward", rc[k].target, "<=",
                   "ks_recorder bf16, top-k 0, per prompt incl. writing and fsync");
            char cn[64];
            snprintf(cn, sizeof cn, "%s_call", rc[k].name);
            figure(cn, call * 1e3, "ms", call / med[0], "plain forward", NAN, "",
                   "the ks_recorder_record call alone (forward, hooks, queueing), median");
        }
        say("(dumps in %s, bf16, no compression, fsync every 2 s, 256 MiB queue; removed after)\n",
            G.out_dir);
    }
    ok = true;
    goto out;
oom:
    fail("record: out of host memory for the hook buffers");
out:
    ks_session_set_hook(s, NULL, NULL);
    if (br)
        for (int l = 0; l < c->n_layers; l++) free(br[l]);
    if (bp)
        for (int l = 0; l < L4; l++) free(bp[l]);
    free(br);
    free(bp);
    return ok;
}

/* ------------------------------------------------------------------ train */

/* Seconds of ks_grad_forward + ks_grad_backward (device synchronised), the objective between
 * them untimed; -1 on an error (printed). */
static double timed_step(ks_grad *g, const int *ids, int T, int *tg, float *dlog) {
    ks_error err = {0};
    double t0 = now();
    if (ks_grad_forward(g, ids, T, &err)) {
        fail("train: forward of %d tokens: %s", T, err.msg);
        return -1;
    }
    double t1 = now();
    int V = 0;
    ks_objective_logprob(ks_grad_logits(g, NULL, &V), T, V, tg, dlog);
    double t2 = now();
    if (ks_grad_backward(g, dlog, &err)) {
        fail("train: backward of %d tokens: %s", T, err.msg);
        return -1;
    }
    if (!sync_device()) return -1;
    return (t1 - t0) + (now() - t2);
}

static bool part_train(ks_model *m, const int *ids) {
    const ks_config *c = ks_model_config(m);
    bool ok = true;
    for (int mode = 0; mode < 2 && ok; mode++) {
        const bool pg = mode == 0;
        const char *what = pg ? "forward + backward, parameter gradients (training step)"
                              : "forward + backward, activation gradients only (attribution)";
        say("\n== train: %s ==\n", what);
        ks_grad *g = NULL;
        ks_error err = {0};
        ks_grad_options o = {.param_grads = pg, .backend = G.backend};
        double t0 = now();
        if (ks_grad_create(m, &o, &g, &err)) {
            fail("train: ks_grad on backend %s: %s", G.backend, err.msg);
            ok = false;
            break;
        }
        say("ks_grad created in %.2f s (weights uploaded%s)\n", now() - t0,
            pg ? ", f32 parameter gradients allocated" : "");
        int T = G.T;
        float *dlog = NULL;
        int *tg = malloc(sizeof(int) * (size_t)T);
        double w = -1;
        while (tg && T >= 64) {
            for (int t = 0; t < T; t++) tg[t] = t + 1 < T ? ids[t + 1] : -1;
            free(dlog);
            dlog = malloc(sizeof(float) * (size_t)T * c->vocab_size);
            if (!dlog) break;
            ks_error e2 = {0};
            if (ks_grad_forward(g, ids, T, &e2) == KS_ERR_NOMEM) { /* the arena did not fit */
                say("%d tokens do not fit (%s): halving\n", T, e2.msg);
                T /= 2;
                continue;
            }
            w = timed_step(g, ids, T, tg, dlog);
            break;
        }
        if (w < 0) {
            if (!tg || !dlog) fail("train: out of host memory");
            ok = false;
        } else {
            if (G.cuda) {
                size_t fb = 0, tb = 0;
                if (CUDA_OK(cudaMemGetInfo(&fb, &tb)))
                    say("device memory in use: %.1f GiB of %.1f GiB\n", (tb - fb) / 1073741824.0,
                        tb / 1073741824.0);
            }
            int reps = fit_reps(3, w, 40.0);
            say("%d tokens; warm-up %.3f s; timing %d repetitions\n", T, w, reps);
            double t[3];
            for (int r = 0; r < reps && ok; r++) ok = (t[r] = timed_step(g, ids, T, tg, dlog)) >= 0;
            if (ok) {
                double tm = bench_median(t, reps);
                double flops = (pg ? 3.0 : 2.0) * prefill_flops(c, T);
                double tflops = flops / tm / 1e12, peak = peak_for_dtype();
                say("%d tokens: %.1f ms (median of %d), %.0f tokens/s, %.1f TFLOP/s model FLOPs "
                    "(%s x the prefill's)\n", T, tm * 1e3, reps, T / tm, tflops, pg ? "3" : "2");
                const char *peak_name = G.dtype == KS_DTYPE_BF16 ? "gemm_bf16_peak" : "gemm_f32_peak";
                figure(pg ? "train_step_tokens_per_s" : "attr_step_tokens_per_s", T / tm, "tok/s",
                       NAN, "", NAN, "", pg ? "forward + backward with parameter gradients"
                                            : "forward + backward, activation gradients only");
                if (peak > 0)
                    figure(pg ? "forward_backward_mfu" : "attr_forward_backward_mfu", tflops,
                           "TFLOP/s", tflops / peak, peak_name, pg ? 0.4 : NAN, pg ? ">=" : "",
                           pg ? "3 x prefill model FLOPs / time / measured GEMM peak"
                              : "2 x prefill model FLOPs / time / measured GEMM peak");
                else if (pg)
                    not_measured("forward_backward_mfu", 0.4, ">=",
                                 "no GEMM peak measured in this run (part gemm not run)");
            }
        }
        free(tg);
        free(dlog);
        ks_grad_free(g);
    }
    return ok;
}

/* ------------------------------------------------------------------ main */

static int usage(FILE *f, int rc) {
    fprintf(f,
            "usage: bench_cuda [--random-init SHAPE] [--dtype bf16|f32] [--quick] [--json FILE]\n"
            "                  [--out-dir DIR] [--part gemm,copy,prefill,decode,record,train]\n"
            "                  [--budget SECONDS] [--backend cuda|cpu|cpu-copy]\n"
            "GPU figures of the CUDA backend, each a ratio to a limit measured in the same run.\n"
            "  --random-init SHAPE  model shape, random-initialised in memory: 7b (default), 13b,\n"
            "                       tiny, or DIM:HIDDEN:LAYERS:HEADS:KV_HEADS:VOCAB\n"
            "  --dtype T            storage of the weight matrices: bf16 (default) or f32\n"
            "  --quick              GEMM 4096^3, copy 256 MiB, prompts of 256 tokens\n"
            "  --json FILE          write every figure (value, unit, ratio, target) to FILE,\n"
            "                       rewritten after each figure\n"
            "  --out-dir DIR        where the recorder's dumps go (default $TMPDIR or /tmp)\n"
            "  --part LIST          parts to run, comma-separated (default: all)\n"
            "  --budget SECONDS     stop (exit 3) after this long; repetitions shrink to fit\n"
            "                       (default 225)\n"
            "  --backend NAME       cuda (default); cpu or cpu-copy run the model parts on the CPU\n"
            "                       without CUDA, to test this program where there is no GPU\n"
            "Exit status: 0 every part ran, 1 a part failed, 2 usage, 3 out of time, 77 no CUDA\n"
            "device.\n");
    return rc;
}

static bool parse_parts(const char *s, unsigned *out) {
    *out = 0;
    if (!strcmp(s, "all")) {
        *out = P_ALL;
        return true;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned bit = 0;
        for (int i = 0; i < N_PARTS; i++)
            if (!strcmp(tok, part_names[i])) bit = 1u << i;
        if (!bit) return false;
        *out |= bit;
    }
    return *out != 0;
}

static bool parse_shape(const char *s) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(s, shapes[i].name)) {
            G.sh = shapes[i];
            snprintf(G.shape_label, sizeof G.shape_label, "%s", s);
            return true;
        }
    bench_shape sh = {"custom", 0, 0, 0, 0, 0, 0};
    char tail;
    if (sscanf(s, "%d:%d:%d:%d:%d:%d%c", &sh.dim, &sh.hidden, &sh.layers, &sh.heads, &sh.kv_heads,
               &sh.vocab, &tail) != 6)
        return false;
    if (sh.dim <= 0 || sh.hidden <= 0 || sh.layers <= 0 || sh.heads <= 0 || sh.kv_heads <= 0 ||
        sh.vocab < 2 || sh.dim % sh.heads || sh.heads % sh.kv_heads || (sh.dim / sh.heads) % 2 ||
        sh.dim > (1 << 16) || sh.hidden > (1 << 18) || sh.layers > 1024 || sh.vocab > (1 << 22)) {
        fprintf(stderr, "bench_cuda: --random-init %s: need positive sizes, heads dividing dim into "
                        "an even head size, kv heads dividing heads\n", s);
        return false;
    }
    G.sh = sh;
    snprintf(G.shape_label, sizeof G.shape_label, "%s", s);
    return true;
}

int main(int argc, char **argv) {
    G.t0 = now();
    G.sh = shapes[0];
    snprintf(G.shape_label, sizeof G.shape_label, "7b");
    G.dtype = KS_DTYPE_BF16;
    G.parts = P_ALL;
    G.backend = "cuda";
    G.budget_s = 225;
    const char *tmp = getenv("TMPDIR");
    G.out_dir = tmp && tmp[0] ? tmp : "/tmp";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout, 0);
        else if (!strcmp(a, "--quick")) G.quick = true;
        else if (!strcmp(a, "--random-init") && has) {
            if (!parse_shape(argv[++i])) return usage(stderr, 2);
        } else if (!strcmp(a, "--dtype") && has) {
            const char *d = argv[++i];
            if (!strcmp(d, "bf16")) G.dtype = KS_DTYPE_BF16;
            else if (!strcmp(d, "f32")) G.dtype = KS_DTYPE_F32;
            else {
                fprintf(stderr, "bench_cuda: --dtype %s: expected bf16 or f32\n", d);
                return 2;
            }
        } else if (!strcmp(a, "--json") && has) G.json_path = argv[++i];
        else if (!strcmp(a, "--out-dir") && has) G.out_dir = argv[++i];
        else if (!strcmp(a, "--part") && has) {
            if (!parse_parts(argv[++i], &G.parts)) {
                fprintf(stderr, "bench_cuda: --part %s: expected a comma-separated list of gemm, "
                                "copy, prefill, decode, record, train (or all)\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--budget") && has) {
            char *end;
            G.budget_s = strtod(argv[++i], &end);
            if (*end || !(G.budget_s >= 10)) {
                fprintf(stderr, "bench_cuda: --budget %s: expected seconds >= 10\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--backend") && has) {
            G.backend = argv[++i];
            if (strcmp(G.backend, "cuda") && strcmp(G.backend, "cpu") && strcmp(G.backend, "cpu-copy")) {
                fprintf(stderr, "bench_cuda: --backend %s: expected cuda, cpu or cpu-copy\n", G.backend);
                return 2;
            }
        } else {
            fprintf(stderr, "bench_cuda: unknown or incomplete option '%s'\n", a);
            return usage(stderr, 2);
        }
    }
    G.cuda = !strcmp(G.backend, "cuda");
    G.T = G.quick ? 256 : 2048;
    signal(SIGALRM, on_alarm);
    alarm((unsigned)ceil(G.budget_s));

    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const bench_shape *sh = &G.sh;
    char parts[64] = "";
    for (int i = 0; i < N_PARTS; i++)
        if (G.parts & (1u << i)) {
            if (parts[0]) strcat(parts, ",");
            strcat(parts, part_names[i]);
        }
    const char *attn = getenv("KS_CUDA_ATTN");
    say("bench_cuda (koalascope %s): model %s (dim %d, hidden %d, %d layers, %d heads, %d kv heads, "
        "vocab %d), %s matrices; parts %s%s; backend %s; budget %.0f s; %d host threads; "
        "KS_CUDA_ATTN=%s\n",
        ks_version(), G.shape_label, sh->dim, sh->hidden, sh->layers, sh->heads, sh->kv_heads,
        sh->vocab, ks_dtype_name(G.dtype), parts, G.quick ? " (--quick)" : "", G.backend,
        G.budget_s, threads, attn ? attn : "(unset: auto)");

    G.root = json_object();
    G.figs = json_array();
    G.notes = json_array();
    if (G.root && G.figs && G.notes) {
        json_object_set_new(G.root, "program", json_string("bench_cuda"));
        json_object_set_new(G.root, "version", json_string(ks_version()));
        json_t *js = json_object();
        json_object_set_new(js, "name", json_string(G.shape_label));
        json_object_set_new(js, "dim", json_integer(sh->dim));
        json_object_set_new(js, "hidden", json_integer(sh->hidden));
        json_object_set_new(js, "layers", json_integer(sh->layers));
        json_object_set_new(js, "heads", json_integer(sh->heads));
        json_object_set_new(js, "kv_heads", json_integer(sh->kv_heads));
        json_object_set_new(js, "vocab", json_integer(sh->vocab));
        json_object_set_new(G.root, "shape", js);
        json_object_set_new(G.root, "dtype", json_string(ks_dtype_name(G.dtype)));
        json_object_set_new(G.root, "quick", json_boolean(G.quick));
        json_object_set_new(G.root, "backend", json_string(G.backend));
        json_object_set_new(G.root, "prompt_tokens", json_integer(G.T));
        json_object_set_new(G.root, "ks_cuda_attn", attn ? json_string(attn) : json_null());
        json_object_set_new(G.root, "complete", json_false());
        json_object_set(G.root, "figures", G.figs);
        json_object_set(G.root, "not_measured", G.notes);
    } else {
        fail("out of memory for the JSON report");
        return 1;
    }

    if (G.cuda) {
        char why[512];
        if (!device_info(why, sizeof why)) {
            say("bench_cuda: no CUDA device: %s; nothing measured (exit 77: skipped)\n", why);
            json_object_set_new(G.root, "skipped", json_string(why));
            json_save();
            json_decref(G.figs);
            json_decref(G.notes);
            json_decref(G.root);
            return 77;
        }
    } else {
        say("device: none used (backend %s): gemm and copy are skipped\n", G.backend);
        G.parts &= ~(unsigned)(P_GEMM | P_COPY);
    }
    json_save();

    if (G.parts & P_GEMM) part_gemm();
    if (G.parts & P_COPY) part_copy();

    int rc_model = 0;
    if (G.parts & (P_PREFILL | P_DECODE | P_RECORD | P_TRAIN)) {
        say("\n== model ==\n");
        const int T = G.T;
        double t0 = now();
        ks_model *m = bench_random_model_dtype(sh->dim, sh->hidden, sh->layers, sh->heads,
                                               sh->kv_heads, sh->vocab, G.dtype);
        size_t el = G.dtype == KS_DTYPE_BF16 ? 2 : 4;
        if (!m) {
            fail("cannot build the %s model (out of host memory?)", G.shape_label);
            rc_model = 1;
        } else {
            const ks_config *c = ks_model_config(m);
            double mat = (double)ks_model_param_count(m) - c->dim * (2.0 * c->n_layers + 1);
            say("random-initialised in %.2f s on %d threads: %.3f B parameters, %.2f GB of weights "
                "(%s matrices, f32 norms)\n",
                now() - t0, threads, ks_model_param_count(m) / 1e9,
                (mat * el + c->dim * (2.0 * c->n_layers + 1) * 4) / 1e9, ks_dtype_name(G.dtype));
            figure("model_init_s", now() - t0, "s", NAN, "", NAN, "", "random initialisation in host memory");
            /* the recorder hashes model_path into the dump's identity: a small file naming the model */
            snprintf(G.ident, sizeof G.ident, "%s/bench_cuda_%ld_model.txt", G.out_dir, (long)getpid());
            FILE *f = fopen(G.ident, "w");
            if (f) {
                fprintf(f, "bench_cuda: random-initialised %s model %s (seed 1234)\n",
                        ks_dtype_name(G.dtype), G.shape_label);
                fclose(f);
            } else {
                say("warning: cannot write %s (%s): the recorder part will fail\n", G.ident, strerror(errno));
            }
            if (G.cuda) {
                size_t fb = 0, tb = 0;
                if (CUDA_OK(cudaMemGetInfo(&fb, &tb))) {
                    double need = mat * el + 2.0 * c->n_layers * (T + 64.0) *
                                                 ((double)c->n_kv_heads * c->head_dim) * 4;
                    say("device memory: %.1f GiB free; weights + KV cache need %.1f GiB\n",
                        fb / 1073741824.0, need / 1073741824.0);
                }
            }
            ks_session *s = NULL;
            ks_error err = {0};
            ks_session_options so = {.backend = G.backend, .max_seq_len = T + 64, .max_batch = T};
            t0 = now();
            if (ks_session_create(m, &so, &s, &err)) {
                fail("session (backend %s, context %d, batch %d): %s", G.backend, T + 64, T, err.msg);
                rc_model = 1;
            } else {
                say("session: backend %s, context %d, batch %d: created in %.2f s (weights uploaded)\n",
                    G.backend, T + 64, T, now() - t0);
                if (G.cuda) {
                    size_t fb = 0, tb = 0;
                    if (CUDA_OK(cudaMemGetInfo(&fb, &tb)))
                        say("device memory after the session: %.1f GiB used, %.1f GiB free\n",
                            (tb - fb) / 1073741824.0, fb / 1073741824.0);
                }
                int n_ids = T + 256;
                int *ids = malloc(sizeof(int) * (size_t)n_ids);
                float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
                if (!ids || !logits) {
                    fail("out of host memory");
                    rc_model = 1;
                } else {
                    uint64_t x = 0x2545f4914f6cdd1dULL;
                    for (int i = 0; i < n_ids; i++) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        ids[i] = 1 + (int)(x % (uint64_t)(c->vocab_size - 1));
                    }
                    if ((G.parts & P_PREFILL) && !part_prefill(s, ids, logits)) rc_model = 1;
                    if ((G.parts & P_DECODE) && !part_decode(s, ids, logits)) rc_model = 1;
                    if ((G.parts & P_RECORD) && !part_record(m, s, ids, logits)) rc_model = 1;
                }
                free(logits);
                ks_session_free(s); /* its device memory, before ks_grad takes its own */
                s = NULL;
                if ((G.parts & P_TRAIN) && ids && !part_train(m, ids)) rc_model = 1;
                free(ids);
            }
            ks_model_close(m);
        }
    }
    if (rc_model) G.failed = true;

    say("\n== summary (%.0f s) ==\n", elapsed());
    size_t i;
    json_t *f;
    json_array_foreach(G.figs, i, f) {
        double r = json_is_real(json_object_get(f, "ratio")) ? json_real_value(json_object_get(f, "ratio")) : NAN;
        double tg = json_is_real(json_object_get(f, "target")) ? json_real_value(json_object_get(f, "target")) : NAN;
        json_t *met = json_object_get(f, "met");
        say("  %-27s %12.4g %-8s", json_string_value(json_object_get(f, "name")),
            json_real_value(json_object_get(f, "value")), json_string_value(json_object_get(f, "unit")));
        if (isfinite(r)) say(" ratio %.3f", r);
        if (isfinite(tg))
            say(" (target %s %.2f: %s)", json_string_value(json_object_get(f, "target_cmp")), tg,
                json_is_true(met) ? "met" : "NOT met");
        say("\n");
    }
    json_array_foreach(G.notes, i, f)
        say("  %-27s %s\n", json_string_value(json_object_get(f, "name")),
            json_string_value(json_object_get(f, "reason")));
    json_object_set_new(G.root, "complete", json_true());
    json_object_set_new(G.root, "failed", json_boolean(G.failed));
    json_save();
    if (G.json_path) say("JSON: %s\n", G.json_path);
    remove_temp_files();
    json_decref(G.figs);
    json_decref(G.notes);
    json_decref(G.root);
    return G.failed ? 1 : 0;
}
