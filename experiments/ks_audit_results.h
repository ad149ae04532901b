/* ks_audit_results.h — what an audit run leaves in its output directory (docs/AUDITS.md,
 * "Results"): results.h5, metrics.csv, items_<audit>.csv, report.md with charts. Every file is
 * written under a temporary name and renamed into place when complete. */
#ifndef KS_AUDIT_RESULTS_H
#define KS_AUDIT_RESULTS_H

#include "ks_audit.h"
#include "ks_drill.h"
#include "ks_spec.h"

#define KS_AUDIT_FORMAT "koalascope-audit"
#define KS_AUDIT_FORMAT_VERSION 1

typedef struct {
    const char *name;            /* the spec's audit name */
    const ks_audit_items *items;
    const ks_audit_score *scores;
    const char *template_name;   /* the template its multiple-choice options went through */
    /* drill-down (may be NULL/0): the items drilled into and the file holding their
     * internals, relative to the results directory */
    const ks_drill_entry *drill;
    int n_drill;
    const char *drill_file;
} ks_audit_run;

typedef struct {
    const ks_spec *spec;
    const char *command_line;
    const char *model_sha256, *model_sha256_of;
    const char *backend;
    int n_ranks;
    double seconds;              /* scoring wall time of this invocation */
} ks_audit_meta;

/* items_<name>.csv per audit and metrics.csv */
ks_status ks_audit_write_csv(const char *dir, const ks_audit_run *runs, int n_runs,
                             const ks_audit_metrics *m, ks_error *err);
/* results.h5 (h5py-readable; layout in docs/AUDITS.md) */
ks_status ks_audit_write_h5(const char *dir, const ks_audit_run *runs, int n_runs,
                            const ks_audit_metrics *m, const ks_audit_meta *meta, ks_error *err);
/* report.md and charts/<audit>.png|svg (one interval chart per audit) */
ks_status ks_audit_write_report(const char *dir, const ks_audit_run *runs, int n_runs,
                                const ks_audit_metrics *m, const ks_audit_meta *meta,
                                ks_error *err);

/* Is path an audit results file (root attribute format = "koalascope-audit")? *n_metrics
 * gets the rows of /metrics. KS_ERR_FORMAT naming the file when not. */
ks_status ks_audit_results_check(const char *path, int *n_metrics, ks_error *err);

#endif
