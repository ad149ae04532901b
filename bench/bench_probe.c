/* bench_probe.c — time of a logistic probe fit (probes/probe.c) against the machine's own
 * floor: one pass X·w over the same rows.
 *
 * Data: n rows × d features of N(0, 1) floats with a planted binary label (a noisy linear
 * function of the first features), default 20000 × 512, standardised, C = 1, tol 1e-6.
 * Printed: the time of one ks_probe_fit_data (best of two), the L-BFGS iterations, and
 *   pass f32   cblas_sgemv over X (the memory-bound minimum of touching every value once)
 *   pass f64   ks_probe_predict (a pass as the fit makes one: rows converted to double, dgemv)
 * with the fit's ratio to each. One objective + gradient evaluation is two such products on a
 * cached chunk, so ratio / iterations is the cost of an iteration in passes (line searches
 * add evaluations). --run also times ks_probe_run with the defaults (5 folds, 5 shuffles,
 * 1000 bootstrap resamples; no control task).
 *
 * --classes K (K > 2) makes it a multinomial fit (labels: which of K noisy linear scores is
 * largest); --ridge a ridge fit (alpha 1) on a noisy linear target instead.
 *
 * Usage: bench_probe [--rows N] [--dim D] [--classes K | --ridge] [--run] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "ks_probe.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t st = 88172645463325252ULL;
static double unif(void) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    return ((st >> 11) + 0.5) * 0x1.0p-53;
}
static double normal(void) { return sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()); }

int main(int argc, char **argv) {
    int64_t n = 20000;
    int d = 512;
    int run = 0, K = 2, ridge = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) d = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--run")) run = 1;
        else if (!strcmp(argv[i], "--classes") && i + 1 < argc) K = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ridge")) ridge = 1;
        else {
            fprintf(stderr, "usage: %s [--rows N] [--dim D] [--classes K | --ridge] [--run]\n", argv[0]);
            return 2;
        }
    }
    if (n < 100 || d < 8 || K < 2 || K > 64) {
        fprintf(stderr, "bench_probe: need rows >= 100, dim >= 8, classes 2..64\n");
        return 2;
    }
    float *X = malloc((size_t)n * d * sizeof *X), *wf = malloc((size_t)d * sizeof *wf),
          *yf = malloc((size_t)n * sizeof *yf);
    int32_t *y = malloc((size_t)n * sizeof *y), *group = malloc((size_t)n * sizeof *group);
    double *out = malloc((size_t)n * K * sizeof *out), *target = malloc((size_t)n * sizeof *target);
    if (!X || !wf || !yf || !y || !group || !out || !target) return 2;
    for (int64_t i = 0; i < n; i++) {
        double s = 0, best = -1e300;
        for (int j = 0; j < d; j++) {
            double v = normal();
            X[(size_t)i * d + j] = (float)v;
            if (j < 8) s += v * 0.4;
        }
        y[i] = s + normal() > 0;
        target[i] = s + normal();
        if (K > 2)
            for (int k = 0; k < K; k++) {
                double sk = X[(size_t)i * d + k % d] + X[(size_t)i * d + (k + 1) % d] + normal();
                if (sk > best) best = sk, y[i] = k;
            }
        group[i] = (int32_t)(i / 20);
    }
    for (int j = 0; j < d; j++) wf[j] = 0.01f * (float)(j % 7);

    ks_probe_data pd = {.X = X, .n = n, .d = d, .y = y, .n_classes = K, .group = group, .target = target};
    ks_probe_options o;
    ks_probe_options_default(&o);
    if (ridge) o.kind = KS_PROBE_RIDGE;
    ks_error err = {0};
    ks_probe_fit fit;
    double t_fit = 1e30;
    int iters = 0;
    for (int r = 0; r < 2; r++) {
        double t0 = now();
        if (ks_probe_fit_data(&pd, &o, &fit, &err)) {
            fprintf(stderr, "bench_probe: %s\n", err.msg);
            return 1;
        }
        double t = now() - t0;
        if (t < t_fit) t_fit = t;
        iters = fit.iterations;
        if (r == 0) ks_probe_fit_free(&fit);
    }
    /* the passes, after the fit (which has set BLAS to one thread, as the engine does) */
    double t_f32 = 1e30, t_f64 = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, d, 1.0f, X, d, wf, 1, 0.0f, yf, 1);
        double t1 = now();
        ks_probe_predict(&fit, X, n, out);
        double t2 = now();
        if (t1 - t0 < t_f32) t_f32 = t1 - t0;
        if (t2 - t1 < t_f64) t_f64 = t2 - t1;
    }
    if (ridge) printf("bench_probe: ridge, %lld rows x %d features, standardised, alpha 1\n", (long long)n, d);
    else
        printf("bench_probe: %s logistic (K = %d), %lld rows x %d features, standardised, C 1, tol %g\n",
               K == 2 ? "binary" : "multinomial", K, (long long)n, d, o.tol);
    printf("fit            %8.3f s  %d L-BFGS iterations, converged %d\n", t_fit, iters, fit.converged);
    printf("pass f32 sgemv %8.5f s  fit = x%.0f passes (x%.1f per iteration)\n", t_f32, t_fit / t_f32,
           t_fit / t_f32 / (iters > 0 ? iters : 1));
    printf("pass f64       %8.5f s  fit = x%.0f passes (x%.1f per iteration)\n", t_f64, t_fit / t_f64,
           t_fit / t_f64 / (iters > 0 ? iters : 1));
    ks_probe_fit_free(&fit);
    if (run) {
        ks_probe_result res;
        double t0 = now();
        if (ks_probe_run(&pd, &o, &res, &err)) {
            fprintf(stderr, "bench_probe: %s\n", err.msg);
            return 1;
        }
        double t = now() - t0;
        const ks_probe_metric *m = ridge ? &res.r2 : &res.accuracy;
        printf("ks_probe_run   %8.3f s  (= x%.1f the single fit); %s %.3f [%.3f, %.3f]\n", t, t / t_fit,
               ridge ? "r2" : "accuracy", m->value, m->lo, m->hi);
        ks_probe_result_free(&res);
    }
    free(X), free(wf), free(yf), free(y), free(group), free(out), free(target);
    return 0;
}
