/* ks_diff_results.h — what `koalascope diff` leaves in its output directory (docs/DIFF.md):
 * results.h5, layers.csv, heads.csv, weights.csv, modules.csv, report.md with charts, and
 * diff.h5, the small per-token file the viewer's compare mode opens beside base.h5 and
 * tuned.h5. experiments/diff_results.c. */
#ifndef KS_DIFF_RESULTS_H
#define KS_DIFF_RESULTS_H

#include "ks_diff.h"

#define KS_DIFF_RESULTS_FORMAT "koalascope-diff-results"
#define KS_DIFF_FORMAT "koalascope-diff"
#define KS_DIFF_FORMAT_VERSION 1

/* Provenance, stored as root attributes (any may be NULL: stored as ""). */
typedef struct {
    const char *base_model, *tuned_model;
    const char *prompts_source, *prompts_sha256, *template_name;
    const char *command_line;
    const char *base_dump, *tuned_dump; /* names relative to the output directory, or NULL */
    double seconds;
} ks_diff_meta;

/* Weight deltas folded by layer and by module, and where the largest changes are. */
typedef struct {
    int n_layers, n_heads;
    double *layer_delta, *layer_rel;             /* [n_layers]: ‖ΔW‖_F and relative, the layer's
                                                    tensors together */
    double module_delta[KS_DIFF_N_MODULES], module_rel[KS_DIFF_N_MODULES]; /* NaN: absent */
    double *change, *increment;                  /* [n_layers]: 1 − CKA(resid_post) (1 − cosine
                                                    where CKA is off), and its rise over the layer
                                                    before (layer 0: over 0) */
    int weight_layer;      /* largest layer_rel; -1 when no layer weight changed */
    int weight_module;     /* largest module_rel (a ks_diff_module); -1 when none changed */
    int weight_tensor;     /* index into the tensors of the largest relative change; -1 */
    int first_changed;     /* first layer whose resid_post differs at all (cosine < 1); -1 */
    int activation_layer;  /* largest increment; -1 when nothing changed */
    int head_layer, head;  /* largest mean JS; -1 when every head is identical */
    double spearman_increment; /* ρ(layer_rel, increment) over layers */
    double spearman_change;    /* ρ(layer_rel, change) */
} ks_diff_findings;

ks_status ks_diff_findings_compute(const ks_diff_summary *s, const ks_diff_tensor *t, int n_t,
                                   ks_diff_findings *out, ks_error *err);
void ks_diff_findings_clear(ks_diff_findings *f);
/* The report's sentence naming where the largest changes are (malloc'd). */
char *ks_diff_findings_sentence(const ks_diff_findings *f, const ks_diff_summary *s,
                                const ks_diff_tensor *t);

/* results.h5, the CSV tables, report.md and charts/ into dir (which exists). Each file is
 * written under a temporary name and renamed when complete. */
ks_status ks_diff_write_results(const char *dir, const ks_diff_meta *meta,
                                const ks_diff_summary *s, const ks_diff_tensor *t, int n_t,
                                const ks_diff_findings *f, ks_error *err);

/* diff.h5, streamed prompt by prompt: create, add each prompt's ks_diff_prompt, finish with the
 * totals (which marks it complete). _free without _finish leaves it incomplete. */
typedef struct ks_diff_writer ks_diff_writer;
ks_status ks_diff_writer_create(const char *path, const ks_diff_meta *meta, int n_layers,
                                int n_heads, ks_diff_writer **out, ks_error *err);
ks_status ks_diff_writer_add(ks_diff_writer *w, const ks_diff_prompt *p, ks_error *err);
ks_status ks_diff_writer_finish(ks_diff_writer *w, const ks_diff_summary *s,
                                const ks_diff_findings *f, ks_error *err);
void ks_diff_writer_free(ks_diff_writer *w);

#endif
