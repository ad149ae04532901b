/* ks_results.h — the probe results file (`koalascope probe -o RESULTS`): one HDF5 file per
 * sweep, readable by h5py alone, laid out in docs/PROBES.md ("The results file"); and the
 * reading of a direction back out of it for steering. activations/probe_results.c. */
#ifndef KS_RESULTS_H
#define KS_RESULTS_H

#include <stdbool.h>
#include <stdint.h>

#include "ks_status.h"

#define KS_PROBE_FORMAT "koalascope-probe"
#define KS_PROBE_FORMAT_VERSION 1

/* A metric with its confidence interval. */
typedef struct {
    double value, lo, hi;
} ks_ci;

/* The result of the probe on one hook. Arrays are the caller's. */
typedef struct {
    const char *hook;
    int layer;                 /* -1 outside the blocks */
    int64_t n_rows, n_groups;
    int folds;
    ks_ci accuracy, auroc, r2, majority, shuffled, control;
    double selectivity;
    bool beats_controls;
    int d, n_out;
    const double *coef;        /* [n_out, d], unstandardised units */
    const double *intercept;   /* [n_out] */
    const double *mean, *scale;/* [d] standardisation */
    const double *diff_means;  /* [d] binary tasks only; NULL otherwise */
    int iterations;
    bool converged;
} ks_probe_record;

typedef struct {
    const char *task;          /* "logistic" or "ridge" */
    const char *dump_path, *labels_path, *labels_sha256, *position, *command_line;
    const char *model_fingerprint; /* the dump's model identity, NULL when it has none */
    int n_classes;
    const char *const *classes;    /* class names, index = class id */
    double C, alpha, ci_level;
    int folds, n_bootstrap, n_shuffles;
    uint64_t seed;
    bool standardize;
    const ks_probe_record *hooks;
    int n_hooks;
} ks_probe_results;

/* Write r to path (as path.tmp, renamed at the end: a failure leaves no partial file).
 * An existing path is refused unless overwrite. */
ks_status ks_probe_results_write(const char *path, const ks_probe_results *r, bool overwrite,
                                 ks_error *err);

/* What a results file holds, checked as untrusted input (format attribute, /hooks). */
typedef struct {
    char task[16];   /* "logistic" or "ridge" */
    int n_hooks;
} ks_probe_results_info;
ks_status ks_probe_results_info_read(const char *path, ks_probe_results_info *out, ks_error *err);

/* A direction from a results file: kind "diff_means" (mean of class 1 minus class 0) or
 * "probe" (the probe's weight vector of a binary task, unstandardised units) of hook. *out
 * is malloc'd [*d] floats. The file is untrusted input: KS_ERR_FORMAT names it and the object. */
ks_status ks_probe_direction_read(const char *path, const char *hook, const char *kind,
                                  float **out, int *d, ks_error *err);

#endif
