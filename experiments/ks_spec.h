/* ks_spec.h — audit spec files (JSON): what to run, on which model, with which statistics.
 * Format: docs/AUDITS.md#spec-files, experiments/spec.schema.json; examples in experiments/. */
#ifndef KS_SPEC_H
#define KS_SPEC_H

#include <stdint.h>

#include "ks_audit.h"

typedef struct {
    char *name;                 /* unique within the spec; names the results */
    ks_audit_kind kind;
    char **data;                /* paths, resolved (env expanded, relative to the spec) */
    int n_data;
    char **categories;          /* NULL: all */
    int n_categories;
    int limit, limit_per_file;  /* 0: all */
    char *split;                /* WinoBias; NULL: "test" */
    char *template_name;        /* NULL: the spec's */
    int max_new_tokens;         /* BOLD: generation length (default 32, at most 64) */
    /* drill-down ("record", docs/AUDITS.md#drill-down): after scoring, the chosen items'
     * contrasted options are recorded into OUT/drilldown/<name>.h5 with their attributions */
    bool record;
    char *record_hooks;         /* recorder selection; NULL: no activations, attributions only */
    int record_items;           /* how many items (default 10) */
    bool record_first;          /* the first items instead of the largest |contrast| */
    bool record_attribution;    /* default true */
    int record_ig_steps;        /* integrated-gradients nodes (default 32) */
    char *record_dtype;         /* "f32" (default), "f16", "bf16" */
} ks_spec_audit;

typedef struct {
    char *path;                 /* the spec file */
    char *model, *tokenizer;    /* tokenizer NULL: from the model */
    char *backend;              /* "cpu" (default) or "cuda" */
    char *template_name;        /* NULL: the model's hint */
    char *output;               /* NULL: the command line's -o */
    uint64_t seed;
    int n_bootstrap, n_permutations;
    double ci;
    int threads, ctx;           /* 0: defaults */
    ks_spec_audit *audits;
    int n_audits;
    char *canonical;            /* the spec as compact JSON with sorted keys (results record it,
                                 * --resume checks it) */
} ks_spec;

/* Read and validate a spec. Errors (KS_ERR_FORMAT) name the file and the field as a JSON path,
 * e.g. "audit.json: audits[1].limit: expected a non-negative integer". */
ks_status ks_spec_load(const char *path, ks_spec *out, ks_error *err);
/* The same from text (path only names it in errors; relative data paths resolve against its
 * directory). */
ks_status ks_spec_parse(const char *text, size_t len, const char *path, ks_spec *out,
                        ks_error *err);
void ks_spec_free(ks_spec *s);

#endif
