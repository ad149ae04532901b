/* probe.c — linear probes on activation rows (ks_probe.h): logistic regression by L-BFGS
 * (liblbfgs), ridge by a Cholesky solve of the normal equations, group k-fold
 * cross-validation, bootstrap CIs over groups and the controls (majority, shuffled labels,
 * Hewitt & Liang control task).
 *
 * Numerics. X stays float and is never copied whole: every pass over it converts a chunk of
 * rows (a few hundred KB) to double and hands the chunk to a double BLAS call, so products and
 * sums are double throughout. Standardisation is applied on the fly: the optimiser works on
 * weights v in standardised units, and a pass computes X·u + (b − mean·u) with u = v/scale.
 * Passes split the rows into a fixed number of blocks (not one per thread) whose partial sums
 * are added in block order, so results are bitwise the same for any thread count.
 *
 * Threads: OpenMP over chunks with a single-threaded BLAS inside, as the engine does
 * (model/backend_cpu.c explains why the two thread pools must not both run).
 *
 * Randomness: xoshiro256** seeded by splitmix64 from options.seed, one stream per purpose
 * (folds, shuffles, bootstrap, control task), so each result depends only on the seed and the
 * data. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lbfgs.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ks_probe.h"
#include "ks_rng.h"

#if defined(KS_HAVE_OPENBLAS) && defined(_OPENMP)
void openblas_set_num_threads(int n);
#endif

/* Partial sums of one pass: a fixed count so that the order of additions never depends on the
 * number of threads. */
#define PASS_BLOCKS 32
#define MAX_CLASSES 65536

static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* One BLAS pool only: ours (OpenMP). Without OpenMP, OpenBLAS keeps its own threads. */
static void blas_single_threaded(void) {
#if defined(KS_HAVE_OPENBLAS) && defined(_OPENMP)
    openblas_set_num_threads(1);
#endif
}

/* Rows per chunk: the double copy of a chunk stays around 2 MB. */
static int64_t chunk_rows(int d) {
    int64_t c = 262144 / d;
    return c < 8 ? 8 : c > 256 ? 256 : c;
}

/* ---- PRNG: splitmix64 seeding xoshiro256** ------------------------------------------- */

/* Independent streams: the seed and a stream number mixed through splitmix64. */
static void rng_seed(ks_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed;
    uint64_t mix = ks_splitmix64(&x) ^ (stream * 0xd1342543de82ef95ULL);
    for (int i = 0; i < 4; i++) r->s[i] = ks_splitmix64(&mix);
}

/* Uniform in [0, n), n ≥ 1, without modulo bias (rejection below 2^64 mod n). */
static uint64_t rng_below(ks_rng *r, uint64_t n) {
    uint64_t lim = (0 - n) % n;
    for (;;) {
        uint64_t x = ks_rng_next(r);
        if (x >= lim) return x % n;
    }
}

enum { STREAM_FOLDS = 1, STREAM_SHUFFLE = 2, STREAM_BOOT = 3, STREAM_CONTROL = 4 };

/* ---- options and validation ---------------------------------------------------------- */

void ks_probe_options_default(ks_probe_options *o) {
    if (!o) return;
    *o = (ks_probe_options){.kind = KS_PROBE_LOGISTIC,
                            .C = 1.0,
                            .alpha = 1.0,
                            .standardize = true,
                            .folds = 5,
                            .seed = 0,
                            .n_bootstrap = 1000,
                            .ci_level = 0.95,
                            .n_shuffles = 5,
                            .tol = 1e-6,
                            .max_iter = 1000};
}

static ks_status check_options(const ks_probe_options *o, bool cv, const char *fn, ks_error *err) {
    if (o->kind != KS_PROBE_LOGISTIC && o->kind != KS_PROBE_RIDGE)
        return ks_error_set(err, KS_ERR_ARG, "%s: unknown probe kind %d", fn, (int)o->kind);
    if (o->kind == KS_PROBE_LOGISTIC && !(isfinite(o->C) && o->C > 0))
        return ks_error_set(err, KS_ERR_ARG, "%s: C must be finite and > 0 (got %g)", fn, o->C);
    if (o->kind == KS_PROBE_RIDGE && !(isfinite(o->alpha) && o->alpha >= 0))
        return ks_error_set(err, KS_ERR_ARG, "%s: alpha must be finite and >= 0 (got %g)", fn,
                            o->alpha);
    if (!(isfinite(o->tol) && o->tol > 0))
        return ks_error_set(err, KS_ERR_ARG, "%s: tol must be finite and > 0 (got %g)", fn, o->tol);
    if (o->max_iter < 1)
        return ks_error_set(err, KS_ERR_ARG, "%s: max_iter must be >= 1 (got %d)", fn, o->max_iter);
    if (!cv) return KS_OK;
    if (o->folds < 2)
        return ks_error_set(err, KS_ERR_ARG, "%s: folds must be >= 2 (got %d)", fn, o->folds);
    if (o->n_bootstrap < 0 || o->n_bootstrap > 1000000)
        return ks_error_set(err, KS_ERR_ARG, "%s: n_bootstrap must be in 0..1000000 (got %d)", fn,
                            o->n_bootstrap);
    if (!(o->ci_level > 0 && o->ci_level < 1))
        return ks_error_set(err, KS_ERR_ARG, "%s: ci_level must be in (0, 1) (got %g)", fn,
                            o->ci_level);
    if (o->n_shuffles < 0 || o->n_shuffles > 10000)
        return ks_error_set(err, KS_ERR_ARG, "%s: n_shuffles must be in 0..10000 (got %d)", fn,
                            o->n_shuffles);
    return KS_OK;
}

/* First row (and its column) of X holding NaN or Inf; -1 when all are finite. */
static int64_t first_nonfinite_row(const float *X, int64_t n, int d, int *col) {
    int64_t bad = INT64_MAX;
#pragma omp parallel for schedule(static) reduction(min : bad) if (n * (int64_t)d > 1 << 20)
    for (int64_t i = 0; i < n; i++) {
        if (i >= bad) continue;
        const float *x = X + (size_t)i * d;
        for (int j = 0; j < d; j++)
            if (!isfinite(x[j])) {
                bad = i;
                break;
            }
    }
    if (bad == INT64_MAX) return -1;
    const float *x = X + (size_t)bad * d;
    for (int j = 0; j < d; j++)
        if (!isfinite(x[j])) {
            *col = j;
            break;
        }
    return bad;
}

/* Everything about the data that a fit needs; class counts into counts[n_classes] when given. */
static ks_status check_data(const ks_probe_data *D, const ks_probe_options *o, const char *fn,
                            ks_error *err) {
    if (!D || !o) return ks_error_set(err, KS_ERR_ARG, "%s: NULL data or options", fn);
    if (!D->X) return ks_error_set(err, KS_ERR_ARG, "%s: data.X is NULL", fn);
    if (D->n < 2) return ks_error_set(err, KS_ERR_ARG, "%s: need at least 2 rows (n = %lld)", fn,
                                      (long long)D->n);
    if (D->d < 1) return ks_error_set(err, KS_ERR_ARG, "%s: need at least 1 feature (d = %d)", fn, D->d);
    if ((uint64_t)D->n > (uint64_t)(SIZE_MAX / sizeof(double)) / (uint64_t)D->d)
        return ks_error_set(err, KS_ERR_ARG, "%s: n x d = %lld x %d is too large", fn,
                            (long long)D->n, D->d);
    if (o->kind == KS_PROBE_LOGISTIC) {
        if (!D->y) return ks_error_set(err, KS_ERR_ARG, "%s: logistic probe without labels (data.y is NULL)", fn);
        if (D->n_classes < 2 || D->n_classes > MAX_CLASSES)
            return ks_error_set(err, KS_ERR_ARG, "%s: n_classes must be in 2..%d (got %d)", fn,
                                MAX_CLASSES, D->n_classes);
        int64_t *cnt = calloc((size_t)D->n_classes, sizeof *cnt);
        if (!cnt) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", fn);
        for (int64_t i = 0; i < D->n; i++) {
            int32_t c = D->y[i];
            if (c < 0 || c >= D->n_classes) {
                free(cnt);
                return ks_error_set(err, KS_ERR_ARG,
                                    "%s: label %d of row %lld is out of range 0..%d (n_classes = %d)",
                                    fn, (int)c, (long long)i, D->n_classes - 1, D->n_classes);
            }
            cnt[c]++;
        }
        int present = 0, one = -1, absent = -1;
        for (int c = 0; c < D->n_classes; c++) {
            if (cnt[c]) present++, one = c;
            else if (absent < 0) absent = c;
        }
        free(cnt);
        if (present < 2)
            return ks_error_set(err, KS_ERR_ARG,
                                "%s: all %lld rows have the same label %d: a probe needs at least 2 classes",
                                fn, (long long)D->n, one);
        if (absent >= 0)
            return ks_error_set(err, KS_ERR_ARG,
                                "%s: class %d has no rows (n_classes = %d): relabel to the classes present",
                                fn, absent, D->n_classes);
    } else {
        if (!D->target)
            return ks_error_set(err, KS_ERR_ARG, "%s: ridge probe without targets (data.target is NULL)", fn);
        for (int64_t i = 0; i < D->n; i++)
            if (!isfinite(D->target[i]))
                return ks_error_set(err, KS_ERR_ARG, "%s: target of row %lld is not finite (%g)", fn,
                                    (long long)i, D->target[i]);
    }
    int col = 0;
    int64_t bad = first_nonfinite_row(D->X, D->n, D->d, &col);
    if (bad >= 0) {
        float v = D->X[(size_t)bad * D->d + col];
        return ks_error_set(err, KS_ERR_ARG, "%s: row %lld of X has a non-finite value (%s) in column %d",
                            fn, (long long)bad, isnan(v) ? "NaN" : "Inf", col);
    }
    return KS_OK;
}

/* ---- passes over rows ---------------------------------------------------------------- */

static inline const float *row_of(const float *X, int d, const int64_t *rows, int64_t i) {
    return X + (size_t)(rows ? rows[i] : i) * d;
}

/* Chunk c of a pass over m rows: [c·ch, min(m, (c+1)·ch)). Blocks group chunks. */
typedef struct {
    int64_t m, ch, nch;
    int nblk;
} pass_plan;

static pass_plan plan_pass(int64_t m, int d) {
    pass_plan p = {.m = m, .ch = chunk_rows(d)};
    p.nch = (m + p.ch - 1) / p.ch;
    p.nblk = p.nch < PASS_BLOCKS ? (int)p.nch : PASS_BLOCKS;
    return p;
}

static void to_double(double *buf, const float *X, int d, const int64_t *rows, int64_t i0,
                      int64_t rn) {
    for (int64_t r = 0; r < rn; r++) {
        const float *x = row_of(X, d, rows, i0 + r);
        double *b = buf + (size_t)r * d;
        for (int j = 0; j < d; j++) b[j] = x[j];
    }
}

/* Mean and population std (ddof = 0) of the rows, in double, two passes as StandardScaler;
 * a feature that is constant up to rounding (sklearn's bound n·ε·var + (n·ε·mean)²) gets
 * scale 1. */
static ks_status column_stats(const float *X, int d, const int64_t *rows, int64_t m, double *mean,
                              double *scale) {
    pass_plan p = plan_pass(m, d);
    double *acc = calloc((size_t)p.nblk * d, sizeof *acc);
    if (!acc) return KS_ERR_NOMEM;
    for (int pass = 0; pass < 2; pass++) {
        memset(acc, 0, (size_t)p.nblk * d * sizeof *acc);
#pragma omp parallel for schedule(dynamic) if (m * (int64_t)d > 65536)
        for (int b = 0; b < p.nblk; b++) {
            double *a = acc + (size_t)b * d;
            int64_t r0 = p.nch * b / p.nblk * p.ch, r1 = p.nch * (b + 1) / p.nblk * p.ch;
            if (r1 > m) r1 = m;
            for (int64_t i = r0; i < r1; i++) {
                const float *x = row_of(X, d, rows, i);
                if (pass == 0)
                    for (int j = 0; j < d; j++) a[j] += x[j];
                else
                    for (int j = 0; j < d; j++) {
                        double t = x[j] - mean[j];
                        a[j] += t * t;
                    }
            }
        }
        double *dst = pass == 0 ? mean : scale;
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int b = 0; b < p.nblk; b++) s += acc[(size_t)b * d + j];
            dst[j] = s / (double)m;
        }
    }
    free(acc);
    for (int j = 0; j < d; j++) {
        double var = scale[j], eps = DBL_EPSILON, nm = (double)m * mean[j] * eps;
        bool constant = var <= (double)m * eps * var + nm * nm;
        scale[j] = constant ? 1.0 : sqrt(var);
    }
    return KS_OK;
}

/* out [m, K] = rows · W^T + b, W [K, d] in double. */
static ks_status scores_rows(const float *X, int d, const int64_t *rows, int64_t m, const double *W,
                             const double *b, int K, double *out) {
    pass_plan p = plan_pass(m, d);
    int nt = n_threads();
    double *buf = malloc((size_t)nt * p.ch * d * sizeof *buf);
    if (!buf) return KS_ERR_NOMEM;
#pragma omp parallel for schedule(dynamic) num_threads(nt) if (m * (int64_t)d > 65536)
    for (int64_t c = 0; c < p.nch; c++) {
        double *bb = buf + (size_t)thread_id() * p.ch * d;
        int64_t i0 = c * p.ch, rn = m - i0 < p.ch ? m - i0 : p.ch;
        to_double(bb, X, d, rows, i0, rn);
        double *o = out + (size_t)i0 * K;
        if (K == 1)
            cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rn, d, 1.0, bb, d, W, 1, 0.0, o, 1);
        else
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, K, d, 1.0, bb, d, W, d, 0.0,
                        o, K);
        for (int64_t r = 0; r < rn; r++)
            for (int k = 0; k < K; k++) o[r * K + k] += b[k];
    }
    free(buf);
    return KS_OK;
}

/* ---- fit records --------------------------------------------------------------------- */

void ks_probe_fit_free(ks_probe_fit *f) {
    if (!f) return;
    free(f->coef);
    free(f->intercept);
    free(f->mean);
    free(f->scale);
    memset(f, 0, sizeof *f);
}

static ks_status fit_alloc(ks_probe_fit *f, ks_probe_kind kind, int d, int n_out) {
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->d = d;
    f->n_out = n_out;
    f->coef = calloc((size_t)n_out * d, sizeof *f->coef);
    f->intercept = calloc((size_t)n_out, sizeof *f->intercept);
    f->mean = calloc((size_t)d, sizeof *f->mean);
    f->scale = calloc((size_t)d, sizeof *f->scale);
    if (!f->coef || !f->intercept || !f->mean || !f->scale) {
        ks_probe_fit_free(f);
        return KS_ERR_NOMEM;
    }
    return KS_OK;
}

void ks_probe_predict(const ks_probe_fit *f, const float *X, int64_t n, double *out) {
    if (!f || !f->coef || !X || !out || n <= 0) return;
    if (scores_rows(X, f->d, NULL, n, f->coef, f->intercept, f->n_out, out) == KS_OK) return;
    /* out of memory for the chunk buffer: the same sums one row at a time */
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < f->n_out; k++) {
            double s = f->intercept[k];
            const double *w = f->coef + (size_t)k * f->d;
            const float *x = X + (size_t)i * f->d;
            for (int j = 0; j < f->d; j++) s += w[j] * x[j];
            out[i * f->n_out + k] = s;
        }
}

/* ---- logistic regression by L-BFGS --------------------------------------------------- */

/* Objective, divided by the row count m as sklearn does (same minimiser, better scaled):
 *   F(v, b) = (1/m) Σ_i logloss(y_i, s_i) + ‖v‖² / (2·C·m),   s_i = ((x_i − mean)/scale)·v + b
 * Variables: v [K, d] then b [K], padded with zeros to a multiple of 16 (liblbfgs built with
 * SSE needs it; the pad has zero gradient and stays 0). K = 1: sigmoid (binary), else softmax. */
typedef struct {
    const float *X;
    const int64_t *rows;
    int64_t m;
    int d, K;
    const int32_t *y; /* [m] label of each fitted row: 0/1 (K = 1), 0..K-1 */
    const double *mean, *scale;
    double C;
    pass_plan p;
    int nt;
    double *u, *off;  /* [K, d], [K] */
    double *acc;      /* [nblk, K·d + K + 1]: gradient sums, residual sums, loss */
    double *buf, *z;  /* per thread: [ch, d], [ch, K] */
    int iterations;
} lg_ctx;

static lbfgsfloatval_t lg_eval(void *inst, const lbfgsfloatval_t *x, lbfgsfloatval_t *g, const int nvar,
                               const lbfgsfloatval_t step) {
    (void)step;
    lg_ctx *c = inst;
    const int K = c->K, d = c->d;
    const size_t KD = (size_t)K * d, stride = KD + K + 1;
    const double *v = x, *b = x + KD;
    for (int k = 0; k < K; k++) {
        double o = b[k];
        for (int j = 0; j < d; j++) {
            double u = v[(size_t)k * d + j] / c->scale[j];
            c->u[(size_t)k * d + j] = u;
            o -= c->mean[j] * u;
        }
        c->off[k] = o;
    }
    const pass_plan p = c->p;
#pragma omp parallel for schedule(dynamic) num_threads(c->nt) if (c->m * (int64_t)d > 65536)
    for (int blk = 0; blk < p.nblk; blk++) {
        int t = thread_id();
        double *a = c->acc + (size_t)blk * stride, *rsum = a + KD;
        double *buf = c->buf + (size_t)t * p.ch * d, *z = c->z + (size_t)t * p.ch * K;
        memset(a, 0, stride * sizeof *a);
        double loss = 0;
        for (int64_t ch = p.nch * blk / p.nblk; ch < p.nch * (blk + 1) / p.nblk; ch++) {
            int64_t i0 = ch * p.ch, rn = c->m - i0 < p.ch ? c->m - i0 : p.ch;
            to_double(buf, c->X, d, c->rows, i0, rn);
            if (K == 1)
                cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rn, d, 1.0, buf, d, c->u, 1, 0.0, z, 1);
            else
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, K, d, 1.0, buf, d, c->u,
                            d, 0.0, z, K);
            /* z becomes the residual ∂loss/∂s: p − y */
            for (int64_t r = 0; r < rn; r++) {
                int y = c->y[i0 + r];
                double *zr = z + r * K;
                if (K == 1) {
                    double s = zr[0] + c->off[0];
                    /* log(1 + e^s) − y·s and σ(s) − y, both without overflow */
                    double sp = s > 0 ? s + log1p(exp(-s)) : log1p(exp(s));
                    double sg = s >= 0 ? 1.0 / (1.0 + exp(-s)) : exp(s) / (1.0 + exp(s));
                    loss += sp - (y ? s : 0.0);
                    zr[0] = sg - y;
                    rsum[0] += zr[0];
                } else {
                    double mx = -INFINITY;
                    for (int k = 0; k < K; k++) {
                        zr[k] += c->off[k];
                        if (zr[k] > mx) mx = zr[k];
                    }
                    double se = 0;
                    for (int k = 0; k < K; k++) se += exp(zr[k] - mx);
                    double lse = mx + log(se);
                    loss += lse - zr[y];
                    for (int k = 0; k < K; k++) {
                        zr[k] = exp(zr[k] - lse) - (k == y);
                        rsum[k] += zr[k];
                    }
                }
            }
            /* gradient sums G [K, d] += residual^T · rows */
            if (K == 1)
                cblas_dgemv(CblasRowMajor, CblasTrans, (int)rn, d, 1.0, buf, d, z, 1, 1.0, a, 1);
            else
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, d, (int)rn, 1.0, z, K, buf, d,
                            1.0, a, d);
        }
        a[KD + K] = loss;
    }
    /* reduce the blocks in order */
    for (size_t q = 1; q < (size_t)p.nblk; q++) {
        const double *a = c->acc + q * stride;
        for (size_t j = 0; j < stride; j++) c->acc[j] += a[j];
    }
    const double *G = c->acc, *rsum = c->acc + KD;
    const double inv_m = 1.0 / (double)c->m, inv_cm = 1.0 / (c->C * (double)c->m);
    double f = c->acc[KD + K] * inv_m, pen = 0;
    for (int k = 0; k < K; k++)
        for (int j = 0; j < d; j++) {
            size_t q = (size_t)k * d + j;
            g[q] = (G[q] - c->mean[j] * rsum[k]) / c->scale[j] * inv_m + v[q] * inv_cm;
            pen += v[q] * v[q];
        }
    for (int k = 0; k < K; k++) g[KD + k] = rsum[k] * inv_m;
    for (int q = (int)(KD + K); q < nvar; q++) g[q] = 0;
    return f + 0.5 * pen * inv_cm;
}

static int lg_progress(void *inst, const lbfgsfloatval_t *x, const lbfgsfloatval_t *g,
                       const lbfgsfloatval_t fx, const lbfgsfloatval_t xnorm,
                       const lbfgsfloatval_t gnorm, const lbfgsfloatval_t step, int n, int k, int ls) {
    (void)x, (void)g, (void)fx, (void)xnorm, (void)gnorm, (void)step, (void)n, (void)ls;
    ((lg_ctx *)inst)->iterations = k;
    return 0;
}

/* Fit on the given rows (global labels lab[], classes 0..n_classes-1). The fit is in full
 * class space: binary n_out 1, else n_out = n_classes. Classes absent from these rows (only
 * in internal CV fits; ks_probe_fit_data refuses them) get coef 0 and intercept −∞, and a
 * binary fit on one class a constant ±∞ score, so predictions are that class. */
static ks_status lg_fit_rows(const float *X, int d, const int64_t *rows, int64_t m, const int32_t *lab,
                             int n_classes, const ks_probe_options *o, ks_probe_fit *out, ks_error *err) {
    const int n_out = n_classes == 2 ? 1 : n_classes;
    ks_status st = fit_alloc(out, KS_PROBE_LOGISTIC, d, n_out);
    if (st) return ks_error_set(err, st, "probe fit: out of memory");
    int *map = malloc((size_t)n_classes * sizeof *map); /* class → compact index, -1 absent */
    int32_t *yl = malloc((size_t)m * sizeof *yl);
    lg_ctx c = {0};
    lbfgsfloatval_t *x = NULL;
    if (!map || !yl) goto nomem;
    for (int k = 0; k < n_classes; k++) map[k] = -1;
    for (int64_t i = 0; i < m; i++) map[lab[rows ? rows[i] : i]] = 0;
    int kp = 0, last = -1;
    for (int k = 0; k < n_classes; k++)
        if (map[k] >= 0) map[k] = kp++, last = k;
    for (int64_t i = 0; i < m; i++) yl[i] = map[lab[rows ? rows[i] : i]];
    if (kp < 2) { /* one class: a constant prediction */
        for (int j = 0; j < d; j++) out->scale[j] = 1.0;
        if (n_out == 1) out->intercept[0] = last == 1 ? INFINITY : -INFINITY;
        else
            for (int k = 0; k < n_classes; k++) out->intercept[k] = k == last ? 0.0 : -INFINITY;
        out->converged = true;
        free(map);
        free(yl);
        return KS_OK;
    }
    if (o->standardize) {
        if (column_stats(X, d, rows, m, out->mean, out->scale)) goto nomem;
    } else {
        for (int j = 0; j < d; j++) out->scale[j] = 1.0;
    }
    c = (lg_ctx){.X = X, .rows = rows, .m = m, .d = d, .K = kp == 2 && n_out == 1 ? 1 : kp, .y = yl,
                 .mean = out->mean, .scale = out->scale, .C = o->C, .p = plan_pass(m, d),
                 .nt = n_threads()};
    const int K = c.K;
    const size_t KD = (size_t)K * d;
    c.u = malloc(KD * sizeof(double));
    c.off = malloc((size_t)K * sizeof(double));
    c.acc = malloc((size_t)c.p.nblk * (KD + K + 1) * sizeof(double));
    c.buf = malloc((size_t)c.nt * c.p.ch * d * sizeof(double));
    c.z = malloc((size_t)c.nt * c.p.ch * K * sizeof(double));
    size_t nvar = (KD + K + 15) / 16 * 16;
    if (nvar > INT32_MAX) {
        st = ks_error_set(err, KS_ERR_ARG, "probe fit: %zu parameters is too many for L-BFGS", nvar);
        goto out;
    }
    x = lbfgs_malloc((int)nvar);
    if (!c.u || !c.off || !c.acc || !c.buf || !c.z || !x) goto nomem;
    memset(x, 0, nvar * sizeof *x);
    lbfgs_parameter_t lp;
    lbfgs_parameter_init(&lp);
    lp.epsilon = o->tol;
    lp.max_iterations = o->max_iter;
    lp.m = 10;
    blas_single_threaded();
    lbfgsfloatval_t fx = 0;
    int ret = lbfgs((int)nvar, x, &fx, lg_eval, lg_progress, &c, &lp);
    if (ret == LBFGSERR_OUTOFMEMORY) goto nomem;
    /* Converged: liblbfgs met ‖g‖ < tol·max(1, ‖x‖); or its line search stopped on rounding
     * (no decrease left to find in double) with ‖g‖ within 100·tol of that bound. */
    bool conv = ret == LBFGS_SUCCESS || ret == LBFGS_STOP || ret == LBFGS_ALREADY_MINIMIZED;
    if (!conv && ret != LBFGSERR_MAXIMUMITERATION) {
        double *gg = malloc(nvar * sizeof *gg);
        if (!gg) goto nomem;
        lg_eval(&c, x, gg, (int)nvar, 0);
        double gn = 0, xn = 0;
        for (size_t q = 0; q < nvar; q++) gn += gg[q] * gg[q], xn += x[q] * x[q];
        free(gg);
        conv = sqrt(gn) <= 100.0 * o->tol * fmax(1.0, sqrt(xn));
    }
    out->iterations = c.iterations;
    out->converged = conv;
    /* Back to the classes and to unstandardised units. Softmax intercepts are defined up to a
     * common shift (the penalty does not see them): centred, as sklearn's lbfgs leaves them. */
    double bmean = 0;
    if (K > 1) {
        for (int k = 0; k < K; k++) bmean += x[KD + k];
        bmean /= K;
    }
    for (int k = 0; k < n_out; k++) {
        int kc = n_out == 1 ? 0 : map[k];
        if (kc < 0) {
            out->intercept[k] = -INFINITY;
            continue;
        }
        double b = x[KD + kc] - bmean;
        for (int j = 0; j < d; j++) {
            double w = x[(size_t)kc * d + j] / out->scale[j];
            out->coef[(size_t)k * d + j] = w;
            b -= w * out->mean[j];
        }
        out->intercept[k] = b;
    }
    st = KS_OK;
    goto out;
nomem:
    st = ks_error_set(err, KS_ERR_NOMEM, "probe fit: out of memory");
out:
    if (x) lbfgs_free(x);
    free(c.u);
    free(c.off);
    free(c.acc);
    free(c.buf);
    free(c.z);
    free(map);
    free(yl);
    if (st) ks_probe_fit_free(out);
    return st;
}

/* ---- ridge by Cholesky ----------------------------------------------------------------- */

/* In-place Cholesky A = L·L^T of a row-major symmetric matrix, lower triangle read and
 * written (the upper is ignored). Left-looking by column panels of NB so that nearly all the
 * work is BLAS 3 (dsyrk, dgemm, dtrsm), panel rows split across threads. Returns -1, or the
 * index of the first non-positive pivot. */
static int64_t cholesky(double *A, int d) {
    enum { NB = 96, PR = 256 };
    for (int j0 = 0; j0 < d; j0 += NB) {
        int jb = d - j0 < NB ? d - j0 : NB;
        double *Ajj = A + (size_t)j0 * d + j0;
        if (j0 > 0)
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, jb, j0, -1.0, A + (size_t)j0 * d, d,
                        1.0, Ajj, d);
        for (int j = 0; j < jb; j++) {
            double s = Ajj[(size_t)j * d + j];
            for (int k = 0; k < j; k++) s -= Ajj[(size_t)j * d + k] * Ajj[(size_t)j * d + k];
            if (!(s > 0)) return j0 + j;
            s = sqrt(s);
            Ajj[(size_t)j * d + j] = s;
            for (int i = j + 1; i < jb; i++) {
                double t = Ajj[(size_t)i * d + j];
                for (int k = 0; k < j; k++) t -= Ajj[(size_t)i * d + k] * Ajj[(size_t)j * d + k];
                Ajj[(size_t)i * d + j] = t / s;
            }
        }
        int rest = d - j0 - jb;
#pragma omp parallel for schedule(dynamic) if (rest > PR)
        for (int q = 0; q < rest; q += PR) {
            int pr = rest - q < PR ? rest - q : PR;
            double *P = A + (size_t)(j0 + jb + q) * d + j0;
            if (j0 > 0)
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pr, jb, j0, -1.0,
                            A + (size_t)(j0 + jb + q) * d, d, A + (size_t)j0 * d, d, 1.0, P, d);
            cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, pr, jb, 1.0,
                        Ajj, d, P, d);
        }
    }
    return -1;
}

/* Ridge on the given rows for nt target vectors at once (tg[t][global row]): one Gram matrix
 * and one factorisation serve all of them (CV fits the real and the shuffled targets
 * together). Centred always (sklearn's Ridge fits an unpenalised intercept by centring), and
 * divided by the std when standardising:
 *   (Z^T Z + alpha·I) w = Z^T (t − t̄),  Z = (X − mean)/scale,  coef = w/scale,
 *   intercept = t̄ − mean·coef. */
static ks_status ridge_fit_rows(const float *X, int d, const int64_t *rows, int64_t m,
                                const double *const *tg, int nt, const ks_probe_options *o,
                                ks_probe_fit *outs, ks_error *err) {
    ks_status st = KS_OK;
    for (int t = 0; t < nt; t++) memset(&outs[t], 0, sizeof outs[t]);
    double *mean = malloc((size_t)d * sizeof *mean), *scale = malloc((size_t)d * sizeof *scale);
    double *A = malloc((size_t)d * d * sizeof *A), *B = calloc((size_t)d * nt, sizeof *B);
    double *tbar = calloc((size_t)nt, sizeof *tbar);
    pass_plan p = plan_pass(m, d);
    double *buf = malloc((size_t)p.ch * d * sizeof *buf), *T = malloc((size_t)p.ch * nt * sizeof *T);
    if (!mean || !scale || !A || !B || !tbar || !buf || !T || column_stats(X, d, rows, m, mean, scale)) {
        st = ks_error_set(err, KS_ERR_NOMEM, "ridge fit: out of memory (d = %d)", d);
        goto out;
    }
    if (!o->standardize)
        for (int j = 0; j < d; j++) scale[j] = 1.0;
    for (int t = 0; t < nt; t++) {
        double s = 0;
        for (int64_t i = 0; i < m; i++) s += tg[t][rows ? rows[i] : i];
        tbar[t] = s / (double)m;
    }
    memset(A, 0, (size_t)d * d * sizeof *A);
    blas_single_threaded();
    enum { BAND = 64 };
    for (int64_t c = 0; c < p.nch; c++) {
        int64_t i0 = c * p.ch, rn = m - i0 < p.ch ? m - i0 : p.ch;
#pragma omp parallel for schedule(static) if (rn * (int64_t)d > 65536)
        for (int64_t r = 0; r < rn; r++) {
            const float *x = row_of(X, d, rows, i0 + r);
            double *z = buf + (size_t)r * d;
            for (int j = 0; j < d; j++) z[j] = (x[j] - mean[j]) / scale[j];
        }
        for (int64_t r = 0; r < rn; r++) {
            int64_t gi = rows ? rows[i0 + r] : i0 + r;
            for (int t = 0; t < nt; t++) T[r * nt + t] = tg[t][gi] - tbar[t];
        }
        /* lower triangle by bands of rows: A[r0:r1, 0:r1] += Z[:, r0:r1]^T Z[:, 0:r1] */
#pragma omp parallel for schedule(dynamic) if ((int64_t)d * d * rn > 1 << 22)
        for (int r0 = 0; r0 < d; r0 += BAND) {
            int r1 = d - r0 < BAND ? d : r0 + BAND;
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, r1, (int)rn, 1.0, buf + r0, d,
                        buf, d, 1.0, A + (size_t)r0 * d, d);
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, nt, (int)rn, 1.0, buf + r0, d,
                        T, nt, 1.0, B + (size_t)r0 * nt, nt);
        }
    }
    for (int j = 0; j < d; j++) A[(size_t)j * d + j] += o->alpha;
    int64_t bad = cholesky(A, d);
    if (bad >= 0) {
        st = ks_error_set(err, KS_ERR_ARG,
                          "ridge: the normal equations are singular at feature %lld (alpha = %g with "
                          "constant or collinear features): use alpha > 0",
                          (long long)bad, o->alpha);
        goto out;
    }
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, d, nt, 1.0, A, d, B, nt);
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, d, nt, 1.0, A, d, B, nt);
    for (int t = 0; t < nt; t++) {
        ks_probe_fit *f = &outs[t];
        if (fit_alloc(f, KS_PROBE_RIDGE, d, 1)) {
            st = ks_error_set(err, KS_ERR_NOMEM, "ridge fit: out of memory");
            goto out;
        }
        double b = tbar[t];
        for (int j = 0; j < d; j++) {
            double w = B[(size_t)j * nt + t] / scale[j];
            f->coef[j] = w;
            b -= w * mean[j];
            f->mean[j] = o->standardize ? mean[j] : 0.0;
            f->scale[j] = scale[j];
        }
        f->intercept[0] = b;
        f->converged = true;
    }
out:
    if (st)
        for (int t = 0; t < nt; t++) ks_probe_fit_free(&outs[t]);
    free(mean);
    free(scale);
    free(A);
    free(B);
    free(tbar);
    free(buf);
    free(T);
    return st;
}

ks_status ks_probe_fit_data(const ks_probe_data *data, const ks_probe_options *o, ks_probe_fit *out,
                            ks_error *err) {
    if (!out) return ks_error_set(err, KS_ERR_ARG, "ks_probe_fit_data: out is NULL");
    memset(out, 0, sizeof *out);
    if (!o) return ks_error_set(err, KS_ERR_ARG, "ks_probe_fit_data: NULL options");
    ks_status st = check_options(o, false, "ks_probe_fit_data", err);
    if (!st) st = check_data(data, o, "ks_probe_fit_data", err);
    if (st) return st;
    if (o->kind == KS_PROBE_LOGISTIC)
        return lg_fit_rows(data->X, data->d, NULL, data->n, data->y, data->n_classes, o, out, err);
    const double *tg[1] = {data->target};
    return ridge_fit_rows(data->X, data->d, NULL, data->n, tg, 1, o, out, err);
}

/* ---- metrics ----------------------------------------------------------------------------- */

typedef struct {
    double s;
    int64_t i;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s < y->s) return -1;
    if (x->s > y->s) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* AUROC over rows in ascending score order ord[] with row weights w (group multiplicities; NULL:
 * 1): the probability that a positive outranks a negative, ties counted half. Sums of integer
 * weights are exact in double, so the only rounding is the final division. */
static double auroc_sorted(const scored *ord, int64_t n, const int32_t *y, const double *w) {
    double U = 0, P = 0, N = 0;
    for (int64_t a = 0; a < n;) {
        int64_t b = a;
        double pw = 0, nw = 0;
        while (b < n && ord[b].s == ord[a].s) {
            double wi = w ? w[ord[b].i] : 1.0;
            if (y[ord[b].i]) pw += wi;
            else nw += wi;
            b++;
        }
        U += pw * N + 0.5 * pw * nw;
        P += pw;
        N += nw;
        a = b;
    }
    return P > 0 && N > 0 ? U / (P * N) : NAN;
}

double ks_auroc(const double *score, const int32_t *y, int64_t n) {
    if (!score || !y || n < 2) return NAN;
    for (int64_t i = 0; i < n; i++)
        if (isnan(score[i]) || (y[i] != 0 && y[i] != 1)) return NAN;
    scored *o = malloc((size_t)n * sizeof *o);
    if (!o) return NAN;
    for (int64_t i = 0; i < n; i++) o[i] = (scored){score[i], i};
    qsort(o, (size_t)n, sizeof *o, cmp_scored);
    double a = auroc_sorted(o, n, y, NULL);
    free(o);
    return a;
}

ks_status ks_probe_diff_means(const ks_probe_data *data, double *out, ks_error *err) {
    if (!data || !out || !data->X || !data->y)
        return ks_error_set(err, KS_ERR_ARG, "ks_probe_diff_means: NULL data, X, y or out");
    if (data->n < 1 || data->d < 1)
        return ks_error_set(err, KS_ERR_ARG, "ks_probe_diff_means: empty data (n = %lld, d = %d)",
                            (long long)data->n, data->d);
    const int d = data->d;
    double *s1 = calloc((size_t)d, sizeof *s1);
    if (!s1) return ks_error_set(err, KS_ERR_NOMEM, "ks_probe_diff_means: out of memory");
    int64_t n0 = 0, n1 = 0;
    memset(out, 0, (size_t)d * sizeof *out);
    for (int64_t i = 0; i < data->n; i++) {
        int32_t c = data->y[i];
        if (c != 0 && c != 1) {
            free(s1);
            return ks_error_set(err, KS_ERR_ARG, "ks_probe_diff_means: label %d of row %lld is not 0 or 1",
                                (int)c, (long long)i);
        }
        const float *x = data->X + (size_t)i * d;
        for (int j = 0; j < d; j++)
            if (!isfinite(x[j])) {
                free(s1);
                return ks_error_set(err, KS_ERR_ARG,
                                    "ks_probe_diff_means: row %lld of X has a non-finite value in column %d",
                                    (long long)i, j);
            }
        double *acc = c ? s1 : out;
        for (int j = 0; j < d; j++) acc[j] += x[j];
        c ? n1++ : n0++;
    }
    if (!n0 || !n1) {
        free(s1);
        return ks_error_set(err, KS_ERR_ARG, "ks_probe_diff_means: class %d has no rows", n0 ? 1 : 0);
    }
    for (int j = 0; j < d; j++) out[j] = s1[j] / (double)n1 - out[j] / (double)n0;
    free(s1);
    return KS_OK;
}

/* ---- folds over groups --------------------------------------------------------------------- */

typedef struct {
    int32_t g;
    int64_t i;
} grow;

static int cmp_grow(const void *a, const void *b) {
    const grow *x = a, *y = b;
    if (x->g != y->g) return x->g < y->g ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Dense group index of each row (groups numbered in ascending id order); NULL groups: each row
 * its own. Returns the group count, -1 out of memory. */
static int64_t dense_groups(const int32_t *group, int64_t n, int64_t *gidx) {
    if (!group) {
        for (int64_t i = 0; i < n; i++) gidx[i] = i;
        return n;
    }
    grow *s = malloc((size_t)n * sizeof *s);
    if (!s) return -1;
    for (int64_t i = 0; i < n; i++) s[i] = (grow){group[i], i};
    qsort(s, (size_t)n, sizeof *s, cmp_grow);
    int64_t G = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && s[i].g != s[i - 1].g) G++;
        gidx[s[i].i] = G;
    }
    free(s);
    return G + 1;
}

/* Groups shuffled (seeded), then dealt round-robin to folds: fold sizes in groups differ by at
 * most one. fold_of_group [G]. */
static void deal_folds(int64_t G, int k, uint64_t seed, int32_t *fold_of_group, int64_t *perm) {
    ks_rng r;
    rng_seed(&r, seed, STREAM_FOLDS);
    for (int64_t g = 0; g < G; g++) perm[g] = g;
    for (int64_t g = G - 1; g > 0; g--) {
        int64_t j = (int64_t)rng_below(&r, (uint64_t)g + 1), t = perm[g];
        perm[g] = perm[j];
        perm[j] = t;
    }
    for (int64_t q = 0; q < G; q++) fold_of_group[perm[q]] = (int32_t)(q % k);
}

ks_status ks_probe_fold_of_groups(const int32_t *group, int64_t n, int folds, uint64_t seed,
                                  int32_t *fold, int *folds_used, ks_error *err) {
    if (!fold || n < 1)
        return ks_error_set(err, KS_ERR_ARG, "ks_probe_fold_of_groups: NULL fold or n < 1");
    if (folds < 2)
        return ks_error_set(err, KS_ERR_ARG, "ks_probe_fold_of_groups: folds must be >= 2 (got %d)", folds);
    int64_t *gidx = malloc((size_t)n * sizeof *gidx);
    if (!gidx) return ks_error_set(err, KS_ERR_NOMEM, "ks_probe_fold_of_groups: out of memory");
    int64_t G = dense_groups(group, n, gidx);
    if (G < 0) {
        free(gidx);
        return ks_error_set(err, KS_ERR_NOMEM, "ks_probe_fold_of_groups: out of memory");
    }
    if (G < 2) {
        free(gidx);
        return ks_error_set(err, KS_ERR_ARG,
                            "ks_probe_fold_of_groups: fewer than 2 groups (all %lld rows in one group)",
                            (long long)n);
    }
    int k = G < folds ? (int)G : folds;
    int32_t *fg = malloc((size_t)G * sizeof *fg);
    int64_t *perm = malloc((size_t)G * sizeof *perm);
    if (!fg || !perm) {
        free(gidx), free(fg), free(perm);
        return ks_error_set(err, KS_ERR_NOMEM, "ks_probe_fold_of_groups: out of memory");
    }
    deal_folds(G, k, seed, fg, perm);
    for (int64_t i = 0; i < n; i++) fold[i] = fg[gidx[i]];
    if (folds_used) *folds_used = k;
    free(gidx), free(fg), free(perm);
    return KS_OK;
}

/* ---- cross-validation ---------------------------------------------------------------------- */

/* Out-of-fold predictions of one label set. Logistic: predicted class and (binary) the logit;
 * ridge: the prediction in score. */
typedef struct {
    int32_t *pred;
    double *score;
} oof;

static void oof_free(oof *p) {
    free(p->pred);
    free(p->score);
    p->pred = NULL;
    p->score = NULL;
}

typedef struct {
    const ks_probe_data *D;
    const ks_probe_options *o;
    int k;
    int64_t n, G;
    int64_t *gidx;     /* [n] dense group */
    int32_t *fold;     /* [n] */
    int64_t *test;     /* rows ordered by fold */
    int64_t *fstart;   /* [k + 1] */
    int64_t *train;    /* scratch [n] */
} cv_ctx;

/* Training rows of fold f into c->train; returns their count. */
static int64_t train_rows(cv_ctx *c, int f) {
    int64_t m = 0;
    for (int64_t i = 0; i < c->n; i++)
        if (c->fold[i] != f) c->train[m++] = i;
    return m;
}

/* Logistic CV on labels lab: each fold's fit predicts its held-out rows. */
static ks_status cv_logistic(cv_ctx *c, const int32_t *lab, oof *out, ks_error *err) {
    const ks_probe_data *D = c->D;
    const int K = D->n_classes, n_out = K == 2 ? 1 : K;
    out->pred = malloc((size_t)c->n * sizeof *out->pred);
    out->score = malloc((size_t)c->n * sizeof *out->score);
    double *sc = malloc((size_t)c->n * n_out * sizeof *sc);
    ks_status st = KS_OK;
    if (!out->pred || !out->score || !sc) {
        st = ks_error_set(err, KS_ERR_NOMEM, "ks_probe_run: out of memory");
        goto out;
    }
    for (int f = 0; f < c->k && !st; f++) {
        int64_t m = train_rows(c, f), t0 = c->fstart[f], mt = c->fstart[f + 1] - t0;
        ks_probe_fit fit;
        st = lg_fit_rows(D->X, D->d, c->train, m, lab, K, c->o, &fit, err);
        if (st) break;
        st = scores_rows(D->X, D->d, c->test + t0, mt, fit.coef, fit.intercept, n_out, sc);
        ks_probe_fit_free(&fit);
        if (st) {
            st = ks_error_set(err, st, "ks_probe_run: out of memory");
            break;
        }
        for (int64_t r = 0; r < mt; r++) {
            int64_t i = c->test[t0 + r];
            const double *s = sc + r * n_out;
            if (n_out == 1) {
                out->score[i] = s[0];
                out->pred[i] = s[0] > 0; /* sklearn: class 1 when the decision is > 0 */
            } else {
                int best = 0;
                for (int q = 1; q < K; q++)
                    if (s[q] > s[best]) best = q;
                out->pred[i] = best;
                out->score[i] = s[best];
            }
        }
    }
out:
    free(sc);
    if (st) oof_free(out);
    return st;
}

/* Ridge CV on nt target vectors together (one factorisation per fold). */
static ks_status cv_ridge(cv_ctx *c, const double *const *tg, int nt, oof *outs, ks_error *err) {
    const ks_probe_data *D = c->D;
    ks_status st = KS_OK;
    ks_probe_fit *fits = calloc((size_t)nt, sizeof *fits);
    double *sc = malloc((size_t)c->n * sizeof *sc);
    if (!fits || !sc) st = ks_error_set(err, KS_ERR_NOMEM, "ks_probe_run: out of memory");
    for (int t = 0; t < nt && !st; t++) {
        outs[t].score = malloc((size_t)c->n * sizeof(double));
        if (!outs[t].score) st = ks_error_set(err, KS_ERR_NOMEM, "ks_probe_run: out of memory");
    }
    for (int f = 0; f < c->k && !st; f++) {
        int64_t m = train_rows(c, f), t0 = c->fstart[f], mt = c->fstart[f + 1] - t0;
        st = ridge_fit_rows(D->X, D->d, c->train, m, tg, nt, c->o, fits, err);
        for (int t = 0; t < nt && !st; t++) {
            st = scores_rows(D->X, D->d, c->test + t0, mt, fits[t].coef, fits[t].intercept, 1, sc);
            if (st) st = ks_error_set(err, st, "ks_probe_run: out of memory");
            for (int64_t r = 0; r < mt && !st; r++) outs[t].score[c->test[t0 + r]] = sc[r];
        }
        for (int t = 0; t < nt && fits; t++) ks_probe_fit_free(&fits[t]);
    }
    free(fits);
    free(sc);
    if (st)
        for (int t = 0; t < nt; t++) oof_free(&outs[t]);
    return st;
}

/* ---- bootstrap --------------------------------------------------------------------------- */

/* Per-group sums from which a metric is recomputed for any group weights in O(G). */
typedef struct {
    double *a, *b, *c; /* accuracy: correct, rows; r2: Σ(t−t̄), Σ(t−t̄)², Σ(t−pred)² */
} gsums;

static void gsums_free(gsums *s) {
    free(s->a), free(s->b), free(s->c);
    memset(s, 0, sizeof *s);
}

static bool gsums_acc(gsums *s, const cv_ctx *c, const int32_t *pred, const int32_t *lab) {
    s->a = calloc((size_t)c->G, sizeof(double));
    s->b = calloc((size_t)c->G, sizeof(double));
    if (!s->a || !s->b) return false;
    for (int64_t i = 0; i < c->n; i++) {
        s->a[c->gidx[i]] += pred[i] == lab[i];
        s->b[c->gidx[i]] += 1;
    }
    return true;
}

static bool gsums_r2(gsums *s, const cv_ctx *c, const double *pred, const double *t, double tbar) {
    s->a = calloc((size_t)c->G, sizeof(double));
    s->b = calloc((size_t)c->G, sizeof(double));
    s->c = calloc((size_t)c->G, sizeof(double));
    if (!s->a || !s->b || !s->c) return false;
    for (int64_t i = 0; i < c->n; i++) {
        double e = t[i] - tbar, r = t[i] - pred[i];
        s->a[c->gidx[i]] += e;
        s->b[c->gidx[i]] += e * e;
        s->c[c->gidx[i]] += r * r;
    }
    return true;
}

/* w: group weights; rows: row count per group (for r2's N). */
static double metric_of(const gsums *s, const double *w, const double *rows, int64_t G, bool r2) {
    double x = 0, y = 0, z = 0, N = 0;
    for (int64_t g = 0; g < G; g++) {
        if (w[g] == 0) continue;
        x += w[g] * s->a[g];
        y += w[g] * s->b[g];
        if (r2) z += w[g] * s->c[g], N += w[g] * rows[g];
    }
    if (!r2) return y > 0 ? x / y : NAN;
    double sst = y - x * x / N; /* about the mean of the resampled targets */
    return sst > 0 ? 1.0 - z / sst : NAN;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentile interval (linear interpolation between order statistics, numpy's default) of the
 * finite values; NaN when there are none. */
static void percentile_ci(double *v, int64_t nv, double level, double *lo, double *hi) {
    int64_t m = 0;
    for (int64_t i = 0; i < nv; i++)
        if (isfinite(v[i])) v[m++] = v[i];
    if (m == 0) {
        *lo = *hi = NAN;
        return;
    }
    qsort(v, (size_t)m, sizeof *v, cmp_double);
    double q[2] = {(1 - level) / 2, 1 - (1 - level) / 2}, *dst[2] = {lo, hi};
    for (int e = 0; e < 2; e++) {
        double h = (double)(m - 1) * q[e];
        int64_t f = (int64_t)floor(h);
        if (f >= m - 1) *dst[e] = v[m - 1];
        else *dst[e] = v[f] + (h - (double)f) * (v[f + 1] - v[f]);
    }
}

/* ---- the run ------------------------------------------------------------------------------- */

static const ks_probe_metric NAN_METRIC = {NAN, NAN, NAN};

void ks_probe_result_free(ks_probe_result *r) {
    if (!r) return;
    ks_probe_fit_free(&r->full);
    memset(r, 0, sizeof *r);
}

/* Hewitt & Liang control labels: each distinct token id gets the label of a uniformly drawn row
 * (a draw from the empirical label distribution), in ascending token order, from the control
 * stream of the seed. */
static bool control_labels(const ks_probe_data *D, uint64_t seed, int32_t *out) {
    grow *s = malloc((size_t)D->n * sizeof *s);
    if (!s) return false;
    for (int64_t i = 0; i < D->n; i++) s[i] = (grow){D->token[i], i};
    qsort(s, (size_t)D->n, sizeof *s, cmp_grow);
    ks_rng r;
    rng_seed(&r, seed, STREAM_CONTROL);
    int32_t lab = 0;
    for (int64_t i = 0; i < D->n; i++) {
        if (i == 0 || s[i].g != s[i - 1].g) lab = D->y[rng_below(&r, (uint64_t)D->n)];
        out[s[i].i] = lab;
    }
    free(s);
    return true;
}

ks_status ks_probe_run(const ks_probe_data *data, const ks_probe_options *o, ks_probe_result *out,
                       ks_error *err) {
    static const char fn[] = "ks_probe_run";
    if (!out) return ks_error_set(err, KS_ERR_ARG, "%s: out is NULL", fn);
    memset(out, 0, sizeof *out);
    if (!o) return ks_error_set(err, KS_ERR_ARG, "%s: NULL options", fn);
    ks_status st = check_options(o, true, fn, err);
    if (!st) st = check_data(data, o, fn, err);
    if (st) return st;
    const ks_probe_data *D = data;
    const bool logistic = o->kind == KS_PROBE_LOGISTIC;
    const int S = o->n_shuffles;
    const int64_t n = D->n;
    const bool binary = logistic && D->n_classes == 2, with_control = logistic && D->token;

    cv_ctx c = {.D = D, .o = o, .n = n};
    oof real = {0}, ctrl = {0}, *shuf = calloc((size_t)S + 1, sizeof *shuf);
    int32_t *lab_sh = NULL, *lab_ctrl = NULL, *maj = NULL;
    double *tg_sh = NULL, *pmean = NULL, *w = NULL, *grows = NULL, *reps = NULL, *rowsw = NULL;
    const double **tgs = NULL;
    scored *ord = NULL;
    int32_t *fg = NULL;
    int64_t *perm = NULL;
    gsums gs_real = {0}, gs_maj = {0}, gs_ctrl = {0}, *gs_sh = calloc((size_t)S + 1, sizeof *gs_sh);
    c.gidx = malloc((size_t)n * sizeof *c.gidx);
    c.fold = malloc((size_t)n * sizeof *c.fold);
    c.test = malloc((size_t)n * sizeof *c.test);
    c.train = malloc((size_t)n * sizeof *c.train);
    c.fstart = calloc((size_t)o->folds + 1, sizeof *c.fstart);
    if (!shuf || !gs_sh || !c.gidx || !c.fold || !c.test || !c.train || !c.fstart) goto nomem;

    /* folds */
    c.G = dense_groups(D->group, n, c.gidx);
    if (c.G < 0) goto nomem;
    if (c.G < 2) {
        st = ks_error_set(err, KS_ERR_ARG, "%s: fewer than 2 groups (all %lld rows are one prompt): "
                          "cross-validation needs at least 2", fn, (long long)n);
        goto out;
    }
    c.k = c.G < o->folds ? (int)c.G : o->folds;
    out->folds_used = c.k;
    fg = malloc((size_t)c.G * sizeof *fg);
    perm = malloc((size_t)c.G * sizeof *perm);
    if (!fg || !perm) goto nomem;
    deal_folds(c.G, c.k, o->seed, fg, perm);
    for (int64_t i = 0; i < n; i++) c.fold[i] = fg[c.gidx[i]], c.fstart[c.fold[i] + 1]++;
    for (int f = 0; f < c.k; f++) c.fstart[f + 1] += c.fstart[f];
    {
        int64_t *pos = malloc((size_t)c.k * sizeof *pos);
        if (!pos) goto nomem;
        memcpy(pos, c.fstart, (size_t)c.k * sizeof *pos);
        for (int64_t i = 0; i < n; i++) c.test[pos[c.fold[i]]++] = i;
        free(pos);
    }

    /* shuffled labels: a uniform permutation of all rows' labels (row level, ignoring groups),
     * folds unchanged; run s continues the shuffle stream of run s-1 */
    ks_rng rs;
    rng_seed(&rs, o->seed, STREAM_SHUFFLE);
    if (logistic) {
        st = cv_logistic(&c, D->y, &real, err);
        if (st) goto out;
        lab_sh = malloc((size_t)n * (S > 0 ? S : 1) * sizeof *lab_sh);
        if (!lab_sh) goto nomem;
        for (int s = 0; s < S; s++) {
            int32_t *l = lab_sh + (size_t)s * n;
            memcpy(l, D->y, (size_t)n * sizeof *l);
            for (int64_t i = n - 1; i > 0; i--) {
                int64_t j = (int64_t)rng_below(&rs, (uint64_t)i + 1);
                int32_t t = l[i];
                l[i] = l[j], l[j] = t;
            }
            st = cv_logistic(&c, l, &shuf[s], err);
            if (st) goto out;
        }
        if (with_control) {
            lab_ctrl = malloc((size_t)n * sizeof *lab_ctrl);
            if (!lab_ctrl || !control_labels(D, o->seed, lab_ctrl)) goto nomem;
            st = cv_logistic(&c, lab_ctrl, &ctrl, err);
            if (st) goto out;
        }
        /* majority of each training fold (smallest class on ties) */
        maj = malloc((size_t)n * sizeof *maj);
        int64_t *cnt = calloc((size_t)D->n_classes, sizeof *cnt);
        if (!maj || !cnt) {
            free(cnt);
            goto nomem;
        }
        for (int f = 0; f < c.k; f++) {
            memset(cnt, 0, (size_t)D->n_classes * sizeof *cnt);
            for (int64_t i = 0; i < n; i++)
                if (c.fold[i] != f) cnt[D->y[i]]++;
            int best = 0;
            for (int q = 1; q < D->n_classes; q++)
                if (cnt[q] > cnt[best]) best = q;
            for (int64_t r = c.fstart[f]; r < c.fstart[f + 1]; r++) maj[c.test[r]] = best;
        }
        free(cnt);
    } else {
        tg_sh = malloc((size_t)n * (S > 0 ? S : 1) * sizeof *tg_sh);
        tgs = malloc((size_t)(S + 1) * sizeof *tgs);
        pmean = malloc((size_t)n * sizeof *pmean);
        if (!tg_sh || !tgs || !pmean) goto nomem;
        tgs[0] = D->target;
        for (int s = 0; s < S; s++) {
            double *l = tg_sh + (size_t)s * n;
            memcpy(l, D->target, (size_t)n * sizeof *l);
            for (int64_t i = n - 1; i > 0; i--) {
                int64_t j = (int64_t)rng_below(&rs, (uint64_t)i + 1);
                double t = l[i];
                l[i] = l[j], l[j] = t;
            }
            tgs[s + 1] = l;
        }
        oof *all = calloc((size_t)S + 1, sizeof *all);
        if (!all) goto nomem;
        st = cv_ridge(&c, tgs, S + 1, all, err);
        if (!st) {
            real = all[0];
            for (int s = 0; s < S; s++) shuf[s] = all[s + 1];
        }
        free(all);
        if (st) goto out;
        /* majority baseline for ridge: the training fold's mean target */
        for (int f = 0; f < c.k; f++) {
            double s = 0;
            int64_t m = 0;
            for (int64_t i = 0; i < n; i++)
                if (c.fold[i] != f) s += D->target[i], m++;
            for (int64_t r = c.fstart[f]; r < c.fstart[f + 1]; r++) pmean[c.test[r]] = s / (double)m;
        }
    }

    /* the probe on all rows */
    if (logistic) st = lg_fit_rows(D->X, D->d, NULL, n, D->y, D->n_classes, o, &out->full, err);
    else {
        const double *t1[1] = {D->target};
        st = ridge_fit_rows(D->X, D->d, NULL, n, t1, 1, o, &out->full, err);
    }
    if (st) goto out;

    /* per-group sums, then point values and the bootstrap */
    double tbar = 0;
    if (!logistic) {
        for (int64_t i = 0; i < n; i++) tbar += D->target[i];
        tbar /= (double)n;
    }
    if (logistic) {
        if (!gsums_acc(&gs_real, &c, real.pred, D->y) || !gsums_acc(&gs_maj, &c, maj, D->y)) goto nomem;
        if (with_control && !gsums_acc(&gs_ctrl, &c, ctrl.pred, lab_ctrl)) goto nomem;
        for (int s = 0; s < S; s++)
            if (!gsums_acc(&gs_sh[s], &c, shuf[s].pred, lab_sh + (size_t)s * n)) goto nomem;
    } else {
        if (!gsums_r2(&gs_real, &c, real.score, D->target, tbar) ||
            !gsums_r2(&gs_maj, &c, pmean, D->target, tbar))
            goto nomem;
        for (int s = 0; s < S; s++)
            if (!gsums_r2(&gs_sh[s], &c, shuf[s].score, tg_sh + (size_t)s * n, tbar)) goto nomem;
    }
    w = malloc((size_t)c.G * sizeof *w);
    grows = calloc((size_t)c.G, sizeof *grows);
    if (!w || !grows) goto nomem;
    for (int64_t i = 0; i < n; i++) grows[c.gidx[i]] += 1;
    for (int64_t g = 0; g < c.G; g++) w[g] = 1;
    const bool r2 = !logistic;
    ks_probe_metric *main_m = logistic ? &out->accuracy : &out->r2;
    main_m->value = metric_of(&gs_real, w, grows, c.G, r2);
    out->majority.value = metric_of(&gs_maj, w, grows, c.G, r2);
    out->control.value = with_control ? metric_of(&gs_ctrl, w, grows, c.G, false) : NAN;
    double shmean = 0;
    for (int s = 0; s < S; s++) shmean += metric_of(&gs_sh[s], w, grows, c.G, r2);
    out->shuffled.value = S > 0 ? shmean / S : NAN;
    if (binary) {
        ord = malloc((size_t)n * sizeof *ord);
        rowsw = malloc((size_t)n * sizeof *rowsw);
        if (!ord || !rowsw) goto nomem;
        for (int64_t i = 0; i < n; i++) ord[i] = (scored){real.score[i], i};
        qsort(ord, (size_t)n, sizeof *ord, cmp_scored);
        out->auroc.value = auroc_sorted(ord, n, D->y, NULL);
    }

    const int B = o->n_bootstrap;
    /* replicates: [main, auroc, majority, control] × B, then shuffled × B·S */
    reps = malloc(((size_t)4 * B + (size_t)B * S + 1) * sizeof *reps);
    if (!reps) goto nomem;
    double *rm = reps, *ra = reps + B, *rj = reps + 2 * (size_t)B, *rc = reps + 3 * (size_t)B,
           *rsh = reps + 4 * (size_t)B;
    ks_rng rb;
    rng_seed(&rb, o->seed, STREAM_BOOT);
    for (int b = 0; b < B; b++) {
        /* one resample of groups, shared by every metric (paired replicates) */
        for (int64_t g = 0; g < c.G; g++) w[g] = 0;
        for (int64_t g = 0; g < c.G; g++) w[rng_below(&rb, (uint64_t)c.G)] += 1;
        rm[b] = metric_of(&gs_real, w, grows, c.G, r2);
        rj[b] = metric_of(&gs_maj, w, grows, c.G, r2);
        rc[b] = with_control ? metric_of(&gs_ctrl, w, grows, c.G, false) : NAN;
        for (int s = 0; s < S; s++) rsh[(size_t)s * B + b] = metric_of(&gs_sh[s], w, grows, c.G, r2);
        if (binary) {
            for (int64_t i = 0; i < n; i++) rowsw[i] = w[c.gidx[i]];
            ra[b] = auroc_sorted(ord, n, D->y, rowsw);
        } else ra[b] = NAN;
    }
    const double L = o->ci_level;
    if (B > 0) {
        percentile_ci(rm, B, L, &main_m->lo, &main_m->hi);
        percentile_ci(rj, B, L, &out->majority.lo, &out->majority.hi);
        percentile_ci(rc, B, L, &out->control.lo, &out->control.hi);
        percentile_ci(ra, B, L, &out->auroc.lo, &out->auroc.hi);
        percentile_ci(rsh, (int64_t)B * S, L, &out->shuffled.lo, &out->shuffled.hi);
    } else {
        main_m->lo = main_m->hi = out->majority.lo = out->majority.hi = NAN;
        out->control.lo = out->control.hi = out->auroc.lo = out->auroc.hi = NAN;
        out->shuffled.lo = out->shuffled.hi = NAN;
    }
    if (!binary) out->auroc = NAN_METRIC;
    if (logistic) out->r2 = NAN_METRIC;
    else out->accuracy = out->auroc = out->control = NAN_METRIC;
    if (!with_control) out->control = NAN_METRIC;
    out->selectivity = with_control ? out->accuracy.value - out->control.value : NAN;
    out->beats_controls = main_m->lo > out->majority.value && (S == 0 || main_m->lo > out->shuffled.hi);
    st = KS_OK;
    goto out;
nomem:
    st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory (n = %lld, d = %d)", fn, (long long)n, D->d);
out:
    oof_free(&real);
    oof_free(&ctrl);
    for (int s = 0; shuf && s < S; s++) oof_free(&shuf[s]);
    for (int s = 0; gs_sh && s < S; s++) gsums_free(&gs_sh[s]);
    gsums_free(&gs_real), gsums_free(&gs_maj), gsums_free(&gs_ctrl);
    free(shuf), free(gs_sh), free(lab_sh), free(lab_ctrl), free(maj), free(tg_sh), free(pmean);
    free(w), free(grows), free(reps), free(rowsw), free(tgs), free(ord), free(fg), free(perm);
    free(c.gidx), free(c.fold), free(c.test), free(c.train), free(c.fstart);
    if (st) ks_probe_result_free(out);
    return st;
}
