/* test_probe.c — linear probes (probes/ks_probe.h, probes/probe.c).
 *
 * Checks, with their oracles and tolerances:
 *  - fits against scikit-learn 1.2.1 (tests/reference/fixtures/probe/, made by
 *    tests/reference/make_probe_fixtures.py): binary logistic, 3-class multinomial logistic and
 *    ridge, each at two regularisations, with and without standardisation. Coefficients in
 *    unstandardised units: max_jk |Δcoef| / max_jk |coef_sklearn| ≤ 1e-3; intercepts:
 *    max_k |Δb| / max(1, max_k |b_sklearn|) ≤ 1e-3; with standardisation also the scaler
 *    (mean, scale: relative 1e-9) and the standardised coefficients coef·scale (1e-3 as above);
 *    training accuracy within 0.5 points (ridge: training R² within 1e-3). The C side runs
 *    with tol 1e-10. sklearn's own stop (ftol 64 eps) leaves its unstandardised fits up to 4e-4
 *    from the optimum, so the logistic fits are also held to the fixture's polished optimum
 *    (coef_opt, intercept_opt: max |gradient| ~1e-9) within 1e-5, same norms;
 *  - ks_auroc against roc_auc_score (heavy ties, distinct scores, all tied) within 1e-12;
 *  - a planted feature: 4 "layers" of synthetic rows (this file's own PRNG), one with a
 *    linearly decodable binary label; the sweep's best layer is the planted one, its accuracy
 *    beats the controls, and the shuffled-label control's CI covers 0.5 (balanced labels);
 *  - group folds: no group on both sides of any fold, every fold non-empty, the same folds for
 *    the same seed, as ks_probe_run reports folds_used;
 *  - bad input: every case is KS_ERR_ARG with a message naming the problem (row index, field);
 *  - difference of means against a hand computation (exact in double);
 *  - ridge at d = 400 (the blocked Cholesky over several panels): the optimality condition
 *    recomputed here in double, relative residual ≤ 1e-9;
 *  - a multinomial fit with 1, 2 and 3 OpenMP threads is bitwise the same;
 *  - ks_probe_run is deterministic (two runs, same seed: identical bytes of the metrics), and
 *    runs for multinomial and ridge data. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ks_probe.h"
#include "st_read.h"
#include "tap.h"

/* ---- a small PRNG for synthetic data (independent of the library's) ---- */
static uint64_t t_state = 0x1234567;
static uint64_t t_next(void) {
    uint64_t z = (t_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double t_unif(void) { return ((t_next() >> 11) + 0.5) * 0x1.0p-53; }
static double t_normal(void) { return sqrt(-2 * log(t_unif())) * cos(6.283185307179586 * t_unif()); }

/* ---- fixture reading ---- */
static float *st_f32(const st_file *f, const char *name, int ndim, int64_t *shape) {
    char why[256];
    const uint8_t *p = st_get(f, name, "F32", ndim, shape, why, sizeof why);
    if (!p) {
        tap_ok(0, "fixture: %s", why);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *o = malloc((size_t)n * 4);
    memcpy(o, p, (size_t)n * 4);
    return o;
}

static int32_t *st_i32(const st_file *f, const char *name, int64_t *n) {
    char why[256];
    const uint8_t *p = st_get(f, name, "I32", 1, n, why, sizeof why);
    if (!p) {
        tap_ok(0, "fixture: %s", why);
        return NULL;
    }
    int32_t *o = malloc((size_t)*n * 4);
    memcpy(o, p, (size_t)*n * 4);
    return o;
}

/* max |a − b| over n, and max |b| */
static void max_diff(const double *a, const double *b, int n, double *dmax, double *bmax) {
    *dmax = 0;
    *bmax = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= *dmax)) *dmax = d; /* NaN propagates */
        if (fabs(b[i]) > *bmax) *bmax = fabs(b[i]);
    }
}

/* flatten a JSON list (or list of lists) of numbers */
static int json_doubles(json_t *j, double *out, int cap) {
    int n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
        if (json_is_array(v)) n += json_doubles(v, out + n, cap - n);
        else if (n < cap) out[n++] = json_number_value(v);
    }
    return n;
}

static void test_sklearn_fits(void) {
    char path[4096], why[256];
    st_file f;
    if (st_open(ks_test_src_file("tests/reference/fixtures/probe/data.safetensors", path, sizeof path), &f, why,
                sizeof why)) {
        tap_ok(0, "open fixture: %s", why);
        return;
    }
    json_error_t je;
    json_t *exp = json_load_file(ks_test_src_file("tests/reference/fixtures/probe/expected.json", path, sizeof path),
                                 0, &je);
    if (!exp) {
        tap_ok(0, "expected.json: %s", je.text);
        st_close(&f);
        return;
    }
    int64_t sh[2], ny;
    float *X[3] = {st_f32(&f, "bin.X", 2, sh), NULL, NULL};
    int64_t n[3] = {sh[0]}, d[3] = {sh[1]};
    X[1] = st_f32(&f, "multi.X", 2, sh), n[1] = sh[0], d[1] = sh[1];
    X[2] = st_f32(&f, "ridge.X", 2, sh), n[2] = sh[0], d[2] = sh[1];
    int32_t *yb = st_i32(&f, "bin.y", &ny), *ym = st_i32(&f, "multi.y", &ny);
    float *tf = st_f32(&f, "ridge.target", 1, sh);
    if (!X[0] || !X[1] || !X[2] || !yb || !ym || !tf) goto done;
    double *target = malloc((size_t)n[2] * sizeof *target);
    for (int64_t i = 0; i < n[2]; i++) target[i] = tf[i];

    double worst_coef[3] = {0}, worst_b[3] = {0}, worst_acc[3] = {0}, worst_opt[3] = {0};
    size_t ci;
    json_t *c;
    json_array_foreach(json_object_get(exp, "fits"), ci, c) {
        const char *kind = json_string_value(json_object_get(c, "kind"));
        int q = !strcmp(kind, "binary") ? 0 : !strcmp(kind, "multi") ? 1 : 2;
        double reg = json_number_value(json_object_get(c, "reg"));
        bool std = json_is_true(json_object_get(c, "standardize"));
        ks_probe_data pd = {.X = X[q], .n = n[q], .d = (int)d[q], .y = q == 0 ? yb : ym,
                            .target = target, .n_classes = q == 1 ? 3 : 2};
        ks_probe_options o;
        ks_probe_options_default(&o);
        o.kind = q == 2 ? KS_PROBE_RIDGE : KS_PROBE_LOGISTIC;
        o.C = reg;
        o.alpha = reg;
        o.standardize = std;
        o.tol = 1e-10;
        o.max_iter = 10000;
        ks_probe_fit fit;
        ks_error err = {0};
        ks_status st = ks_probe_fit_data(&pd, &o, &fit, &err);
        if (!tap_ok(st == KS_OK, "%s reg %g std %d: fit (%s)", kind, reg, std, st ? err.msg : "ok")) continue;
        int K = fit.n_out, D = fit.d;
        double ec[64 * 3], eb[3], ecs[64 * 3], em[64], es[64];
        int nc = json_doubles(json_object_get(c, "coef"), ec, 64 * 3);
        int nb = json_doubles(json_object_get(c, "intercept"), eb, 3);
        json_doubles(json_object_get(c, "coef_std"), ecs, 64 * 3);
        json_doubles(json_object_get(c, "mean"), em, 64);
        json_doubles(json_object_get(c, "scale"), es, 64);
        if (!tap_ok(nc == K * D && nb == K, "%s reg %g std %d: shape n_out %d d %d", kind, reg, std, K, D))
            continue;
        double dm, bm, dbm, bbm;
        max_diff(fit.coef, ec, K * D, &dm, &bm);
        max_diff(fit.intercept, eb, K, &dbm, &bbm);
        double rc = dm / bm, rb = dbm / fmax(1.0, bbm);
        if (rc > worst_coef[q]) worst_coef[q] = rc;
        if (rb > worst_b[q]) worst_b[q] = rb;
        tap_ok(rc <= 1e-3 && rb <= 1e-3,
               "%s reg %g std %d: coef max|d|/max|coef| = %.2e, intercept %.2e (<= 1e-3; %d iterations, "
               "sklearn %d, converged %d)",
               kind, reg, std, rc, rb, fit.iterations, (int)json_integer_value(json_object_get(c, "n_iter")),
               fit.converged);
        if (q < 2) { /* against the polished optimum (the fixture's coef_opt) */
            double oc[64 * 3], ob[3], dom, bom, dob, bob;
            json_doubles(json_object_get(c, "coef_opt"), oc, 64 * 3);
            json_doubles(json_object_get(c, "intercept_opt"), ob, 3);
            max_diff(fit.coef, oc, K * D, &dom, &bom);
            max_diff(fit.intercept, ob, K, &dob, &bob);
            double r1 = dom / bom, r2 = dob / fmax(1.0, bob);
            if (r1 > worst_opt[q]) worst_opt[q] = r1;
            if (r2 > worst_opt[q]) worst_opt[q] = r2;
            tap_ok(r1 <= 1e-5 && r2 <= 1e-5, "%s reg %g std %d: vs the polished optimum: coef %.2e, intercept %.2e (<= 1e-5)",
                   kind, reg, std, r1, r2);
        }
        if (std) {
            double dmm, mm, dss, ss, cs[64 * 3], dcs, bcs;
            max_diff(fit.mean, em, D, &dmm, &mm);
            max_diff(fit.scale, es, D, &dss, &ss);
            for (int k = 0; k < K; k++)
                for (int j = 0; j < D; j++) cs[k * D + j] = fit.coef[k * D + j] * fit.scale[j];
            max_diff(cs, ecs, K * D, &dcs, &bcs);
            tap_ok(dmm / mm <= 1e-9 && dss / ss <= 1e-9 && dcs / bcs <= 1e-3,
                   "%s reg %g std: scaler mean %.1e scale %.1e, standardised coef %.2e", kind, reg, dmm / mm,
                   dss / ss, dcs / bcs);
        }
        /* training score */
        double *sc = malloc((size_t)n[q] * K * sizeof *sc);
        ks_probe_predict(&fit, X[q], n[q], sc);
        double score;
        if (q < 2) {
            int64_t ok = 0;
            for (int64_t i = 0; i < n[q]; i++) {
                int p = 0;
                if (K == 1) p = sc[i] > 0;
                else
                    for (int k = 1; k < K; k++)
                        if (sc[i * K + k] > sc[i * K + p]) p = k;
                ok += p == pd.y[i];
            }
            score = (double)ok / (double)n[q];
        } else {
            double m = 0, sst = 0, sse = 0;
            for (int64_t i = 0; i < n[q]; i++) m += target[i];
            m /= (double)n[q];
            for (int64_t i = 0; i < n[q]; i++)
                sst += (target[i] - m) * (target[i] - m), sse += (target[i] - sc[i]) * (target[i] - sc[i]);
            score = 1 - sse / sst;
        }
        free(sc);
        double es_ = json_number_value(json_object_get(c, "score")), dsc = fabs(score - es_);
        if (dsc > worst_acc[q]) worst_acc[q] = dsc;
        tap_ok(q < 2 ? dsc <= 0.005 : dsc <= 1e-3, "%s reg %g std %d: training %s %.4f vs sklearn %.4f", kind,
               reg, std, q < 2 ? "accuracy" : "R2", score, es_);
        ks_probe_fit_free(&fit);
    }
    for (int q = 0; q < 3; q++)
        tap_diag("%s: worst vs sklearn: coef %.2e, intercept %.2e, score |d| %.2e; vs polished optimum %.2e",
                 q == 0 ? "binary" : q == 1 ? "multinomial" : "ridge", worst_coef[q], worst_b[q], worst_acc[q],
                 worst_opt[q]);

    /* AUROC */
    json_t *ea = json_object_get(exp, "auroc");
    for (int i = 0; i < 3; i++) {
        char nm[64];
        int64_t ns, nyy;
        snprintf(nm, sizeof nm, "auroc.%d.score", i);
        float *s = st_f32(&f, nm, 1, &ns);
        snprintf(nm, sizeof nm, "auroc.%d.y", i);
        int32_t *y = st_i32(&f, nm, &nyy);
        if (!s || !y) continue;
        double *sd = malloc((size_t)ns * sizeof *sd);
        for (int64_t k = 0; k < ns; k++) sd[k] = s[k];
        double a = ks_auroc(sd, y, ns), e = json_number_value(json_array_get(ea, (size_t)i));
        tap_ok(fabs(a - e) <= 1e-12, "auroc case %d (n %lld): %.17g vs sklearn %.17g (|d| %.1e <= 1e-12)", i,
               (long long)ns, a, e, fabs(a - e));
        free(sd), free(s), free(y);
    }
    free(target);
done:
    free(X[0]), free(X[1]), free(X[2]), free(yb), free(ym), free(tf);
    json_decref(exp);
    st_close(&f);
}

/* ---- planted feature in one of several layers ---- */
static void test_layers(void) {
    enum { L = 4, G = 40, T = 10, N = G * T, D = 16, PLANT = 2 };
    float *X = malloc((size_t)L * N * D * sizeof *X);
    int32_t y[N], group[N], token[N];
    for (int i = 0; i < N; i++) y[i] = i < N / 2, group[i] = i / T, token[i] = (int32_t)(t_next() % 50);
    for (int i = N - 1; i > 0; i--) { /* balanced labels in random rows */
        int j = (int)(t_next() % (uint64_t)(i + 1)), t = y[i];
        y[i] = y[j], y[j] = t;
    }
    for (int l = 0; l < L; l++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < D; j++) {
                double v = t_normal() + 0.3 * j;
                if (l == PLANT && j == 3) v += 1.2 * (2 * y[i] - 1);
                X[((size_t)l * N + i) * D + j] = (float)v;
            }
    ks_probe_options o;
    ks_probe_options_default(&o);
    o.seed = 7;
    o.n_bootstrap = 400;
    ks_probe_result r[L];
    int best = -1;
    bool ok = true;
    for (int l = 0; l < L; l++) {
        ks_probe_data pd = {.X = X + (size_t)l * N * D, .n = N, .d = D, .y = y, .n_classes = 2,
                            .group = group, .token = token};
        ks_error err = {0};
        if (ks_probe_run(&pd, &o, &r[l], &err)) {
            tap_ok(0, "layer %d: %s", l, err.msg);
            ok = false;
            continue;
        }
        tap_diag("layer %d: acc %.3f [%.3f, %.3f] auroc %.3f majority %.3f shuffled %.3f [%.3f, %.3f] "
                 "control %.3f selectivity %.3f beats %d",
                 l, r[l].accuracy.value, r[l].accuracy.lo, r[l].accuracy.hi, r[l].auroc.value, r[l].majority.value,
                 r[l].shuffled.value, r[l].shuffled.lo, r[l].shuffled.hi, r[l].control.value, r[l].selectivity,
                 r[l].beats_controls);
        if (best < 0 || r[l].accuracy.value > r[best].accuracy.value) best = l;
    }
    if (!ok) {
        free(X);
        return;
    }
    tap_ok(best == PLANT, "sweep: best layer %d is the planted layer %d", best, PLANT);
    const ks_probe_result *p = &r[PLANT];
    tap_ok(p->beats_controls && p->accuracy.lo > 0.75 && p->auroc.value > 0.8,
           "planted layer beats its controls (acc lo %.3f, auroc %.3f)", p->accuracy.lo, p->auroc.value);
    tap_ok(p->shuffled.lo <= 0.5 && p->shuffled.hi >= 0.5 && fabs(p->shuffled.value - 0.5) < 0.1,
           "shuffled-label control at chance: %.3f, CI [%.3f, %.3f] covers 0.5", p->shuffled.value,
           p->shuffled.lo, p->shuffled.hi);
    bool noise_ok = true;
    for (int l = 0; l < L; l++)
        if (l != PLANT && r[l].beats_controls) noise_ok = false;
    tap_ok(noise_ok, "no noise layer beats its controls");
    tap_ok(p->folds_used == 5 && isfinite(p->control.value) && isfinite(p->selectivity) &&
               p->selectivity > 0.1 && isnan(p->r2.value),
           "folds_used 5, control task %.3f, selectivity %.3f, r2 NaN", p->control.value, p->selectivity);
    tap_ok(p->full.n_out == 1 && p->full.d == D && fabs(p->full.coef[3]) > 3 * fabs(p->full.coef[5]),
           "full refit: the direction is on the planted feature (coef[3] %.3f)", p->full.coef[3]);

    /* determinism: the same run again gives identical metrics */
    ks_probe_result again;
    ks_probe_data pd = {.X = X + (size_t)PLANT * N * D, .n = N, .d = D, .y = y, .n_classes = 2,
                        .group = group, .token = token};
    ks_error err = {0};
    if (ks_probe_run(&pd, &o, &again, &err) == KS_OK) {
        bool same = !memcmp(&again.accuracy, &p->accuracy, 6 * sizeof(ks_probe_metric)) &&
                    !memcmp(again.full.coef, p->full.coef, D * sizeof(double));
        tap_ok(same, "a second run with the same seed is bit-identical");
        ks_probe_result_free(&again);
    } else
        tap_ok(0, "second run: %s", err.msg);
    /* no token: control NaN */
    pd.token = NULL;
    o.n_shuffles = 0;
    o.n_bootstrap = 0;
    if (ks_probe_run(&pd, &o, &again, &err) == KS_OK) {
        tap_ok(isnan(again.control.value) && isnan(again.selectivity) && isnan(again.shuffled.value) &&
                   isnan(again.accuracy.lo) && !again.beats_controls,
               "no tokens, no shuffles, no bootstrap: control/shuffled/CI NaN, beats_controls false");
        ks_probe_result_free(&again);
    } else
        tap_ok(0, "run without tokens: %s", err.msg);
    for (int l = 0; l < L; l++) ks_probe_result_free(&r[l]);
    free(X);
}

/* multinomial and ridge through ks_probe_run */
static void test_run_kinds(void) {
    enum { N = 300, D = 8, K = 3 };
    float X[N * D];
    int32_t y[N], group[N];
    double t[N];
    for (int i = 0; i < N; i++) {
        y[i] = (int32_t)(t_next() % K);
        group[i] = i / 6;
        t[i] = 0;
        for (int j = 0; j < D; j++) {
            double v = t_normal();
            if (j < K) v += 2.0 * (y[i] == j);
            X[i * D + j] = (float)v;
            t[i] += (j + 1) * 0.5 * v;
        }
        t[i] += 0.3 * t_normal();
    }
    ks_probe_options o;
    ks_probe_options_default(&o);
    o.n_bootstrap = 200;
    ks_probe_data pd = {.X = X, .n = N, .d = D, .y = y, .n_classes = K, .group = group, .target = t};
    ks_probe_result r;
    ks_error err = {0};
    if (ks_probe_run(&pd, &o, &r, &err) == KS_OK) {
        tap_ok(r.accuracy.value > 0.7 && r.beats_controls && isnan(r.auroc.value) && r.full.n_out == K &&
                   fabs(r.shuffled.value - 1.0 / K) < 0.1,
               "multinomial run: acc %.3f [%.3f, %.3f], majority %.3f, shuffled %.3f, auroc NaN", r.accuracy.value,
               r.accuracy.lo, r.accuracy.hi, r.majority.value, r.shuffled.value);
        ks_probe_result_free(&r);
    } else
        tap_ok(0, "multinomial run: %s", err.msg);
    o.kind = KS_PROBE_RIDGE;
    if (ks_probe_run(&pd, &o, &r, &err) == KS_OK) {
        tap_ok(r.r2.value > 0.9 && r.beats_controls && isnan(r.accuracy.value) && fabs(r.majority.value) < 0.1 &&
                   r.shuffled.value < 0.1,
               "ridge run: r2 %.3f [%.3f, %.3f], majority %.3f, shuffled %.3f [%.3f, %.3f]", r.r2.value, r.r2.lo,
               r.r2.hi, r.majority.value, r.shuffled.value, r.shuffled.lo, r.shuffled.hi);
        ks_probe_result_free(&r);
    } else
        tap_ok(0, "ridge run: %s", err.msg);
}

static void test_folds(void) {
    enum { N = 1000 };
    int32_t group[N], fold[N], fold2[N];
    for (int i = 0; i < N; i++) group[i] = (int32_t)(t_next() % 37) * 3 - 50; /* ids unsorted, negative */
    ks_error err = {0};
    int used = 0;
    ks_status st = ks_probe_fold_of_groups(group, N, 5, 42, fold, &used, &err);
    if (!tap_ok(st == KS_OK && used == 5, "fold_of_groups: 37 groups into 5 folds (%s)", st ? err.msg : "ok"))
        return;
    /* each group in one fold only */
    int gf[200];
    for (int g = 0; g < 200; g++) gf[g] = -1;
    bool split = false, count_ok = true;
    int per[5] = {0}, gper[5] = {0};
    for (int i = 0; i < N; i++) {
        int g = group[i] + 50;
        if (gf[g] >= 0 && gf[g] != fold[i]) split = true;
        if (gf[g] < 0) gper[fold[i]]++;
        gf[g] = fold[i];
        per[fold[i]]++;
    }
    for (int f = 0; f < 5; f++)
        if (per[f] == 0 || gper[f] < 7 || gper[f] > 8) count_ok = false;
    tap_ok(!split, "no group has rows in two folds (so none is in both train and test of a fold)");
    tap_ok(count_ok, "every fold has 7 or 8 groups: %d %d %d %d %d", gper[0], gper[1], gper[2], gper[3], gper[4]);
    ks_probe_fold_of_groups(group, N, 5, 42, fold2, NULL, &err);
    tap_ok(!memcmp(fold, fold2, sizeof fold), "same seed, same folds");
    ks_probe_fold_of_groups(group, N, 5, 43, fold2, NULL, &err);
    tap_ok(memcmp(fold, fold2, sizeof fold) != 0, "another seed, other folds");
    int32_t two[4] = {9, 9, 4, 4};
    st = ks_probe_fold_of_groups(two, 4, 5, 1, fold, &used, &err);
    tap_ok(st == KS_OK && used == 2 && fold[0] == fold[1] && fold[2] == fold[3] && fold[0] != fold[2],
           "2 groups, 5 folds asked: 2 folds used");
    st = ks_probe_fold_of_groups(NULL, 3, 2, 1, fold, &used, &err);
    tap_ok(st == KS_OK && used == 2, "group NULL: each row its own group");
}

/* bad input: KS_ERR_ARG and a message holding `needle` */
static void expect_arg(ks_status st, const ks_error *err, const char *needle, const char *what) {
    tap_ok(st == KS_ERR_ARG && strstr(err->msg, needle) != NULL, "bad input, %s: %s (%s)", what,
           ks_status_str(st), err->msg);
}

static void test_bad_input(void) {
    enum { N = 20, D = 3 };
    float X[N * D];
    int32_t y[N], g[N];
    double t[N];
    for (int i = 0; i < N; i++) {
        y[i] = i % 2, g[i] = i / 4, t[i] = i;
        for (int j = 0; j < D; j++) X[i * D + j] = (float)t_normal();
    }
    ks_probe_options o;
    ks_probe_options_default(&o);
    o.n_bootstrap = 10;
    ks_probe_data pd = {.X = X, .n = N, .d = D, .y = y, .n_classes = 2, .group = g};
    ks_probe_fit f;
    ks_probe_result r;
    ks_error e = {0};

    X[7 * D + 1] = NAN;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "row 7", "NaN in X");
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "row 7", "NaN in X (run)");
    X[7 * D + 1] = INFINITY;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "Inf", "Inf in X");
    X[7 * D + 1] = 0;
    y[5] = 2;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "row 5", "label out of range");
    y[5] = -1;
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "row 5", "negative label");
    y[5] = 1;
    pd.n_classes = 1;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "n_classes", "n_classes 1");
    pd.n_classes = 3;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "class 2 has no rows", "a class without rows");
    pd.n_classes = 2;
    int32_t one[N];
    for (int i = 0; i < N; i++) one[i] = 1;
    pd.y = one;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "same label", "single class");
    pd.y = y;
    int32_t g1[N] = {0};
    pd.group = g1;
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "fewer than 2 groups", "one group");
    pd.group = g;
    pd.d = 0;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "d = 0", "d == 0");
    pd.d = D;
    pd.n = 1;
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "n = 1", "one row");
    pd.n = N;
    pd.X = NULL;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "X is NULL", "X NULL");
    pd.X = X;
    pd.y = NULL;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "data.y is NULL", "labels NULL");
    pd.y = y;
    o.C = 0;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "C must be", "C = 0");
    o.C = NAN;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "C must be", "C NaN");
    o.C = 1;
    o.folds = 1;
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "folds", "folds 1");
    o.folds = 5;
    o.ci_level = 1.5;
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "ci_level", "ci_level 1.5");
    o.ci_level = 0.95;
    o.tol = -1;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "tol", "tol < 0");
    o.tol = 1e-6;
    o.kind = (ks_probe_kind)7;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "kind", "unknown kind");
    o.kind = KS_PROBE_RIDGE;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "data.target is NULL", "ridge without targets");
    pd.target = t;
    t[3] = NAN;
    expect_arg(ks_probe_run(&pd, &o, &r, &e), &e, "row 3", "ridge target NaN");
    t[3] = 3;
    o.alpha = -1;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "alpha", "alpha < 0");
    o.alpha = 0;
    for (int i = 0; i < N; i++) X[i * D + 2] = 1.0f; /* constant column and no penalty: singular */
    o.standardize = false;
    expect_arg(ks_probe_fit_data(&pd, &o, &f, &e), &e, "singular", "ridge alpha 0, singular");
    expect_arg(ks_probe_fit_data(NULL, &o, &f, &e), &e, "NULL", "data NULL");
    tap_ok(ks_probe_fit_data(&pd, &o, NULL, &e) == KS_ERR_ARG, "out NULL");
    ks_probe_fit_free(NULL);
    ks_probe_result_free(NULL);
    tap_ok(1, "_free(NULL) is a no-op");
    int32_t ya[3] = {0, 1, 1}, yz[3] = {1, 1, 1};
    double sa[3] = {0.1, NAN, 0.3};
    tap_ok(isnan(ks_auroc(sa, ya, 3)) && isnan(ks_auroc((double[]){1, 2, 3}, yz, 3)),
           "auroc: NaN score or one class gives NaN");
}

static void test_diff_means(void) {
    /* class 1: rows 0, 2, 3; class 0: rows 1, 4 */
    float X[5 * 3] = {1, 2, 3, 10, 20, 30, 4, 5, 6, 7, 8, 9, 0, -2, 5};
    int32_t y[5] = {1, 0, 1, 1, 0};
    double want[3] = {(1 + 4 + 7) / 3.0 - (10 + 0) / 2.0, (2 + 5 + 8) / 3.0 - (20 - 2) / 2.0,
                      (3 + 6 + 9) / 3.0 - (30 + 5) / 2.0};
    double got[3];
    ks_probe_data pd = {.X = X, .n = 5, .d = 3, .y = y, .n_classes = 2};
    ks_error e = {0};
    ks_status st = ks_probe_diff_means(&pd, got, &e);
    tap_ok(st == KS_OK && got[0] == want[0] && got[1] == want[1] && got[2] == want[2],
           "diff of means: (%g, %g, %g) = hand (%g, %g, %g)", got[0], got[1], got[2], want[0], want[1], want[2]);
    int32_t y1[5] = {1, 1, 1, 1, 1};
    pd.y = y1;
    expect_arg(ks_probe_diff_means(&pd, got, &e), &e, "class 0 has no rows", "diff of means, empty class");
}

/* Ridge at d = 400: the blocked Cholesky with several panels (96 columns) and row chunks
 * (256 rows). Oracle: the optimality condition Xcᵀ(Xc·w − tc) + alpha·w = 0 recomputed here
 * in double, relative to max |Xcᵀ tc|, ≤ 1e-9. */
static void test_ridge_large(void) {
    enum { N = 600, D = 400 };
    float *X = malloc((size_t)N * D * sizeof *X);
    double *t = malloc(N * sizeof *t), *xc = malloc((size_t)N * D * sizeof *xc), mean[D], tc[N], r[N];
    for (int i = 0; i < N; i++) {
        t[i] = 0;
        for (int j = 0; j < D; j++) {
            double v = t_normal() + (j % 5);
            X[(size_t)i * D + j] = (float)v;
            if (j % 3 == 0) t[i] += 0.1 * v;
        }
        t[i] += t_normal();
    }
    ks_probe_options o;
    ks_probe_options_default(&o);
    o.kind = KS_PROBE_RIDGE;
    o.alpha = 3;
    o.standardize = false;
    ks_probe_data pd = {.X = X, .n = N, .d = D, .target = t};
    ks_probe_fit f;
    ks_error e = {0};
    if (!tap_ok(ks_probe_fit_data(&pd, &o, &f, &e) == KS_OK, "ridge d = %d: %s", D, e.msg[0] ? e.msg : "ok")) {
        free(X), free(t), free(xc);
        return;
    }
    double tm = 0;
    for (int i = 0; i < N; i++) tm += t[i];
    tm /= N;
    for (int j = 0; j < D; j++) {
        mean[j] = 0;
        for (int i = 0; i < N; i++) mean[j] += X[(size_t)i * D + j];
        mean[j] /= N;
    }
    for (int i = 0; i < N; i++) {
        tc[i] = t[i] - tm;
        r[i] = -tc[i];
        for (int j = 0; j < D; j++) {
            xc[(size_t)i * D + j] = X[(size_t)i * D + j] - mean[j];
            r[i] += xc[(size_t)i * D + j] * f.coef[j];
        }
    }
    double gmax = 0, ref = 0;
    for (int j = 0; j < D; j++) {
        double g = o.alpha * f.coef[j], b = 0;
        for (int i = 0; i < N; i++) g += xc[(size_t)i * D + j] * r[i], b += xc[(size_t)i * D + j] * tc[i];
        gmax = fmax(gmax, fabs(g));
        ref = fmax(ref, fabs(b));
    }
    double b0 = tm;
    for (int j = 0; j < D; j++) b0 -= mean[j] * f.coef[j];
    tap_ok(gmax / ref <= 1e-9 && fabs(b0 - f.intercept[0]) <= 1e-9 * fmax(1, fabs(b0)),
           "ridge d = %d: optimality residual %.1e (<= 1e-9), intercept = t̄ − mean·coef", D, gmax / ref);
    ks_probe_fit_free(&f);
    free(X), free(t), free(xc);
}

/* The same fit with 1, 2 and 3 threads: bitwise equal (partial sums in a fixed block order). */
static void test_threads(void) {
#ifdef _OPENMP
    enum { N = 5000, D = 40 };
    float *X = malloc((size_t)N * D * sizeof *X);
    int32_t *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
            double v = t_normal();
            X[(size_t)i * D + j] = (float)v;
            s += j < 4 ? v : 0;
        }
        y[i] = (int32_t)((s + t_normal() > 0) + (s > 1.5));
    }
    ks_probe_options o;
    ks_probe_options_default(&o);
    ks_probe_data pd = {.X = X, .n = N, .d = D, .y = y, .n_classes = 3};
    ks_probe_fit f[3];
    ks_error e = {0};
    int saved = omp_get_max_threads();
    bool ok = true;
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        ok = ok && ks_probe_fit_data(&pd, &o, &f[t], &e) == KS_OK;
    }
    omp_set_num_threads(saved);
    if (tap_ok(ok, "multinomial fits with 1, 2, 3 threads (%s)", ok ? "ok" : e.msg)) {
        bool same = true;
        for (int t = 1; t < 3; t++)
            same = same && !memcmp(f[0].coef, f[t].coef, 3 * D * sizeof(double)) &&
                   !memcmp(f[0].intercept, f[t].intercept, 3 * sizeof(double)) && f[0].iterations == f[t].iterations;
        tap_ok(same, "bitwise the same for 1, 2 and 3 threads (%d iterations)", f[0].iterations);
    }
    for (int t = 0; t < 3; t++) ks_probe_fit_free(&f[t]);
    free(X), free(y);
#else
    tap_skip("built without OpenMP");
#endif
}

int main(void) {
    test_sklearn_fits();
    test_layers();
    test_run_kinds();
    test_folds();
    test_bad_input();
    test_diff_means();
    test_ridge_large();
    test_threads();
    return tap_done();
}
