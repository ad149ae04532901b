/* ks_probe.h — linear probes on in-memory activation rows, with the controls that make a
 * probe result trustworthy: logistic regression (binary and multinomial, L2) and ridge
 * regression, standardisation, k-fold cross-validation with group (prompt-level) splits,
 * metrics with bootstrap confidence intervals, a majority-class baseline, a shuffled-label
 * baseline and Hewitt & Liang (2019) control tasks with selectivity. probes/probe.c.
 *
 * Objectives are scikit-learn's, so fits can be compared coefficient by coefficient:
 *   logistic: min_w,b  C · Σ_i logloss(y_i, X_i w + b) + ½‖w‖²   (intercept not penalised;
 *             binary: one weight vector, sklearn's LogisticRegression(solver="lbfgs");
 *             K > 2: multinomial softmax, K weight vectors, as sklearn's multinomial)
 *   ridge:    min_w,b  Σ_i (y_i − X_i w − b)² + alpha · ‖w‖²        (sklearn's Ridge)
 * solved by L-BFGS (liblbfgs) for the logistic loss and by a Cholesky solve of the normal
 * equations (in double) for ridge. Rows are float; all accumulation is in double. */
#ifndef KS_PROBE_H
#define KS_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "ks_status.h"

typedef enum {
    KS_PROBE_LOGISTIC = 0, /* class labels 0..K-1 */
    KS_PROBE_RIDGE = 1,    /* real-valued targets */
} ks_probe_kind;

/* The data of one probe: n rows of d features (row-major), with a label per row and the
 * group (prompt index) of each row, which cross-validation never splits. token[i] is the
 * token id at row i, which control tasks use (NULL: control task skipped). */
typedef struct {
    const float *X;        /* [n, d] */
    int64_t n;
    int d;
    const int32_t *y;      /* logistic: class of each row, 0..n_classes-1 */
    const double *target;  /* ridge: target of each row */
    int n_classes;         /* logistic: K ≥ 2 */
    const int32_t *group;  /* [n] prompt of each row (NULL: each row its own group) */
    const int32_t *token;  /* [n] token id of each row (NULL: no control task) */
} ks_probe_data;

/* One fitted model, in the units of the *unstandardised* features: predict with
 * X·coef[k] + intercept[k]. Binary logistic and ridge: n_out = 1 (the logit of class 1, or
 * the prediction); multinomial: n_out = K. Also the standardisation used (mean, scale per
 * feature; scale 1 and mean 0 when off). */
typedef struct {
    ks_probe_kind kind;
    int d, n_out;
    double *coef;      /* [n_out, d] */
    double *intercept; /* [n_out] */
    double *mean;      /* [d] */
    double *scale;     /* [d] */
    int iterations;    /* L-BFGS iterations (0 for ridge) */
    bool converged;
} ks_probe_fit;

typedef struct {
    ks_probe_kind kind;
    double C;              /* logistic inverse regularisation (sklearn's C); default 1 */
    double alpha;          /* ridge regularisation (sklearn's alpha); default 1 */
    bool standardize;      /* fit on (x − mean)/std of the training fold; default true */
    int folds;             /* k of k-fold CV over groups; default 5; ≥ 2 */
    uint64_t seed;         /* fold assignment, shuffles, bootstrap, control labels */
    int n_bootstrap;       /* bootstrap resamples (of groups) for CIs; default 1000 */
    double ci_level;       /* default 0.95 */
    int n_shuffles;        /* shuffled-label repetitions; default 5; 0: skipped */
    double tol;            /* convergence: L-BFGS gradient norm relative; default 1e-6 */
    int max_iter;          /* L-BFGS iterations; default 1000 */
} ks_probe_options;

/* Fill the defaults above (call, then override fields). */
void ks_probe_options_default(ks_probe_options *o);

/* A metric with its bootstrap confidence interval (percentile, resampling groups). */
typedef struct {
    double value, lo, hi;
} ks_probe_metric;

/* The cross-validated result of one probe. Metrics are computed on the out-of-fold
 * predictions pooled over folds. For logistic: accuracy (always), auroc (binary only; NaN
 * otherwise); for ridge: r2 (and accuracy, auroc NaN).
 * Controls: majority = accuracy of predicting the training fold's majority class (ridge:
 * r2 of predicting the training mean, ≈ 0); shuffled = the same probe on labels permuted
 * at row level (a uniform permutation of all n labels, ignoring groups; the folds stay the
 * same), value the mean over n_shuffles runs, CI the percentile interval of the bootstrap
 * replicates of all runs pooled (run-to-run spread and sampling noise together); control =
 * the probe on a Hewitt & Liang control task (each distinct token id gets the label of a
 * uniformly drawn row, i.e. a draw from the empirical label distribution, fixed by the seed;
 * logistic only; NaN when data.token is NULL); selectivity = accuracy − control accuracy
 * (NaN without a control).
 * CIs: percentile, n_bootstrap resamples of groups with replacement, the same resamples for
 * every metric; r2 of a resample is about that resample's mean target. n_bootstrap = 0:
 * lo = hi = NaN and beats_controls is false.
 * beats_controls: the metric's (accuracy, or r2 for ridge) CI lower bound is above the
 * majority baseline's value and above the shuffled baseline's upper bound (that part skipped
 * when n_shuffles = 0).
 * Within cross-validation a training fold may lack a class (rare classes, control labels):
 * its model then never predicts that class (the class's intercept is −∞). */
typedef struct {
    ks_probe_metric accuracy, auroc, r2;
    ks_probe_metric majority;
    ks_probe_metric shuffled;
    ks_probe_metric control;
    double selectivity;
    bool beats_controls;
    int folds_used;        /* min(folds, number of groups) */
    ks_probe_fit full;     /* the probe refit on all rows (its coef is the probe direction) */
} ks_probe_result;

/* Fit one model on all rows of data (no CV). Every class 0..n_classes-1 must have rows. out
 * is owned by the caller (ks_probe_fit_free); zeroed on failure. converged: liblbfgs met
 * ‖g‖ < tol·max(1, ‖x‖) on the objective divided by n (sklearn's scaling), or its line search
 * stopped on rounding with ‖g‖ within 100× that bound; false at max_iter. */
ks_status ks_probe_fit_data(const ks_probe_data *data, const ks_probe_options *o,
                            ks_probe_fit *out, ks_error *err);
/* Scores X·coef + intercept: out [n, n_out]. */
void ks_probe_predict(const ks_probe_fit *f, const float *X, int64_t n, double *out);
void ks_probe_fit_free(ks_probe_fit *f);

/* Cross-validate, run the controls and refit on everything. KS_ERR_ARG names the problem
 * (fewer than 2 groups, a label out of range, a single class, NaN/Inf in X …). */
ks_status ks_probe_run(const ks_probe_data *data, const ks_probe_options *o,
                       ks_probe_result *out, ks_error *err);
/* Frees r->full; NULL is a no-op. */
void ks_probe_result_free(ks_probe_result *r);

/* The fold of each row as ks_probe_run deals them for options.seed: distinct groups
 * (group NULL: each row its own) shuffled by the seed and dealt round-robin to
 * min(folds, groups) folds, so no group is split and fold sizes in groups differ by at most
 * one. fold [n] (caller-owned); folds_used may be NULL. KS_ERR_ARG: folds < 2, fewer than 2
 * groups. */
ks_status ks_probe_fold_of_groups(const int32_t *group, int64_t n, int folds, uint64_t seed,
                                  int32_t *fold, int *folds_used, ks_error *err);

/* Area under the ROC curve of scores for binary labels (ties counted half), as sklearn's
 * roc_auc_score. NaN when only one class is present, a score is NaN or a label is not 0/1. */
double ks_auroc(const double *score, const int32_t *y, int64_t n);

/* Difference-of-means direction: mean of rows with y == 1 minus mean of rows with y == 0
 * (binary labels), out [d], in double. KS_ERR_ARG when a class is empty. */
ks_status ks_probe_diff_means(const ks_probe_data *data, double *out, ks_error *err);

#endif
