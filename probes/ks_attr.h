/* ks_attr.h — gradient attribution and patching on top of the backward pass (model/backward.c):
 * which input tokens, which heads and which (layer, position) drive an objective.
 *
 * Methods (Captum and Inseq name them the same way):
 *  - saliency: ||d f / d e_t||₂, the gradient's norm at each input token's embedding e_t;
 *  - gradient × input: Σ_d e_td · d f / d e_td;
 *  - integrated gradients: Σ_d (e_td − b_td) ∫₀¹ d f / d e_td (b + α (e − b)) dα, by
 *    Gauss–Legendre quadrature (as Captum's default); the completeness error
 *    |Σ attributions − (f(e) − f(b))| / |f(e) − f(b)| comes with every result. The baseline b
 *    is a token's embedding at every attributed position (default: id 0, LLaMA's <unk>), or
 *    zeros. Zeros suit LLaMA badly: RMSNorm is blind to scale, so f(α e) hardly moves until α
 *    is within ~1e-3 of 0 and all of f(e) − f(0) happens there, where no quadrature of a few
 *    dozen nodes looks (measured: completeness errors of 100-260% at 32 nodes on stories260K
 *    and a fixture, against < 1% with the <unk> baseline);
 *  - head attribution: Σ over positions of z_h · d f / d z_h (gradient × activation at hook_z);
 *  - attribution patching: (a_clean − a_corrupt) · d f / d a at the corrupt run, per (layer,
 *    position) of hook_resid_pre or per (layer, head) of hook_z: a first-order estimate of
 *  - activation patching: f(corrupt with a_clean patched in) − f(corrupt), exactly, one forward
 *    per cell.
 * Only the prompt positions [0, n_prompt) are attributed; a continuation after them is what the
 * objective scores. */
#ifndef KS_ATTR_H
#define KS_ATTR_H

#include "ks_model.h"

typedef enum {
    KS_OBJ_LOGPROB = 0,    /* Σ log p(tokens[t+1] | tokens ≤ t) for t = n_prompt−1 .. T−2: the
                              log-probability of the continuation tokens[n_prompt..T) */
    KS_OBJ_LOGIT_DIFF = 1, /* logits[T−1][a] − logits[T−1][b] (" he" vs " she") */
} ks_obj_kind;

typedef struct {
    ks_obj_kind kind;
    int n_prompt; /* tokens before the continuation (LOGPROB: 1..T−1; LOGIT_DIFF: T) */
    int a, b;     /* LOGIT_DIFF: the two token ids */
} ks_objective;

/* f and d f / d logits (T, V) for the tokens of the last forward; NaN for an invalid spec. */
double ks_objective_eval(const ks_objective *o, const int *tokens, const float *logits, int T,
                         int V, float *dlogits);

typedef enum {
    KS_ATTR_SALIENCY = 0,
    KS_ATTR_GRAD_X_INPUT = 1,
    KS_ATTR_INTEGRATED_GRADIENTS = 2,
} ks_attr_method;

const char *ks_attr_method_name(ks_attr_method m); /* "saliency", "grad_x_input", ... */

typedef struct {
    float *values;             /* (n_prompt): per input token (the caller frees it) */
    double f_x;                /* f at the input */
    double f_baseline;         /* IG: f at the baseline; else NaN */
    double completeness_error; /* IG: relative, see above; else NaN */
    int steps;                 /* IG: quadrature nodes (default 64); else 0 */
} ks_attr_result;

/* Attribute obj to the prompt tokens. g must have been created on the model (parameter
 * gradients may be off: they are not used); its hooks are replaced for the call and removed.
 * steps: IG quadrature nodes (0: 64); baseline_id: IG's baseline token (-1: zeros);
 * progress, when not NULL, is told after each node. */
ks_status ks_attribute_tokens(ks_grad *g, const int *tokens, int T, const ks_objective *obj,
                              ks_attr_method method, int steps, int baseline_id,
                              ks_progress_fn progress, void *progress_user, ks_attr_result *out,
                              ks_error *err);

/* Head attribution: out (layers, heads). f_x receives f. */
ks_status ks_attribute_heads(ks_grad *g, const int *tokens, int T, const ks_objective *obj,
                             float *out, double *f_x, ks_error *err);

typedef enum {
    KS_PATCH_RESID_PRE = 0, /* cells (layer, position) of blocks.L.hook_resid_pre */
    KS_PATCH_HEAD_Z = 1,    /* cells (layer, head) of blocks.L.attn.hook_z, all positions */
} ks_patch_site;

/* clean and corrupt have the same length T and the same objective (its continuation or a, b).
 * out (layers, T) for RESID_PRE, (layers, heads) for HEAD_Z. exact: one forward per cell
 * (activation patching); else one forward and backward (attribution patching). f_clean and
 * f_corrupt receive f of the two runs. */
ks_status ks_patch(ks_grad *g, const int *clean, const int *corrupt, int T,
                   const ks_objective *obj, ks_patch_site site, bool exact, ks_progress_fn progress,
                   void *progress_user, float *out, double *f_clean, double *f_corrupt,
                   ks_error *err);

/* Pearson correlation of n pairs; NaN when either has no variance. */
double ks_pearson(const float *x, const float *y, int n);

#endif
