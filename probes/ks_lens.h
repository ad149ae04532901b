/* ks_lens.h — the logit lens: read a residual stream as the model's output would, at any layer
 * (nostalgebraist 2020): logits = W_out · RMSNorm_final(x). probes/lens.c. */
#ifndef KS_LENS_H
#define KS_LENS_H

#include "ks_model.h"

/* logits (n, V) of n residual vectors x (n, D) through the model's final norm and output
 * matrix (any stored dtype, converted row by row). */
ks_status ks_logit_lens(const ks_model *m, const float *x, int n, float *logits, ks_error *err);

/* What the lens says of one row of logits: the log-probability and rank (0 = top) of a target
 * token (target < 0: skipped), and KL(ref ‖ this) in nats against reference logits (NULL:
 * skipped; the final layer's distribution, usually). */
typedef struct {
    double target_logprob;
    int target_rank;
    double kl_to_ref;
} ks_lens_stats;

void ks_lens_row_stats(const float *logits, const float *ref, int V, int target,
                       ks_lens_stats *out);

#endif
