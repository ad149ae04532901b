/* ks_drill.h — an audit's drill-down: for the items a user should look at (the largest score
 * contrasts, or the first ones), the internals behind each score — the contrasted options'
 * activations recorded into a dump (activations/, docs/FORMAT.md) and the attribution of each
 * option's score, and of their difference, to input tokens and to attention heads
 * (probes/ks_attr.h). docs/AUDITS.md#drill-down defines the contrast of every kind. */
#ifndef KS_DRILL_H
#define KS_DRILL_H

#include <stdbool.h>
#include <stdint.h>

#include "ks_audit.h"
#include "ks_dump.h"

typedef struct {
    const char *hooks;     /* recorder selection; NULL: no dump, attributions only */
    ks_dump_dtype dtype;   /* of the dump */
    int n_items;           /* how many items (>= 1) */
    bool first;            /* the first n_items instead of the largest |contrast| */
    bool attribution;      /* attribute the options' scores (needs f32 weights) */
    int ig_steps;          /* integrated-gradients nodes (0: 32) */
    const char *model_path, *tokenizer_path, *command_line, *template_name; /* provenance */
} ks_drill_options;

/* One drilled item. */
typedef struct {
    int item;              /* index in the audit's items */
    int opt[2];            /* the contrasted options (opt[1] -1: an item with one option) */
    double contrast;       /* ll[opt[0]] - ll[opt[1]] (ll[opt[0]] when opt[1] is -1) */
    int64_t prompt[2];     /* their prompt indices in the dump (-1: not recorded) */
    bool shared_context;   /* both options continue the same context tokens: the token
                            * attribution of the contrast is defined */
    char top_tokens[160];  /* the three input tokens with the largest |attribution| of the
                            * contrast (or of opt[0]'s score), "piece (value), …"; "" if none */
    char top_heads[96];    /* likewise the heads, "L3.H2 (value), …" */
} ks_drill_entry;

/* The two options an item's contrast compares, by kind: BBQ the biased answer against the
 * other answer that is not "unknown"; the others option 0 against option 1. */
void ks_drill_contrast_options(const ks_audit_items *items, int i, int opt[2]);

/* Drill into one audit: choose the items, record them into dump_path (created, replaced if it
 * exists) when o->hooks is set, and write the attributions under /attributions of dump_path
 * (or of a new attributions file at dump_path when there are no hooks). grad_model must hold
 * f32 weights when o->attribution (ks_model_options.f32_weights); the session is used for
 * recording. *out (malloc'd, *n entries) describes what was written. */
ks_status ks_audit_drill(const char *dump_path, const ks_model *grad_model, ks_session *s,
                         const ks_audit_items *items, const ks_audit_score *scores,
                         const ks_audit_score_options *so, const ks_drill_options *o,
                         ks_drill_entry **out, int *n, ks_error *err);

#endif
