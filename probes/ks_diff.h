/* ks_diff.h — where fine-tuning changed a model: two models of one architecture and tokenizer
 * (a base and a tuned copy) compared on the same tokens, layer by layer and head by head, and
 * weight by weight (koalascope diff, docs/DIFF.md). probes/diff.c.
 *
 * Activations: each prompt runs through the base model, whose hooked tensors are kept for that
 * prompt only, then through the tuned model, whose hook compares each tensor with the base's as
 * it passes and folds the result into running sums. Memory is bounded by the longest prompt
 * (plus the CKA accumulators, see below), whatever the number of prompts.
 *
 * Measures (all "tuned against base", on the same token ids):
 *  - residual-stream similarity per layer for blocks.L.hook_resid_post, hook_attn_out and
 *    hook_mlp_out: linear CKA (Kornblith et al. 2019) over every token of every prompt pooled
 *    (rows centred by their pooled mean), and the mean over tokens of the cosine similarity of
 *    the two models' rows. CKA is computed in its feature-space form from accumulated d×d
 *    statistics, never from N×N Gram matrices: with S_xy = Σ_t x_t y_tᵀ and s_x = Σ_t x_t,
 *    the centred cross-covariance is C_xy = S_xy − s_x s_yᵀ / N and
 *    CKA = ‖C_xy‖_F² / (‖C_xx‖_F ‖C_yy‖_F). Each stream costs 3 d×d doubles per layer.
 *  - attention per layer and head (blocks.L.attn.hook_pattern): the mean over query rows (every
 *    position of every prompt, position 0 included) of the Jensen–Shannon divergence between
 *    the two rows, in bits (log base 2, so it lies in [0, 1]), and of the total variation
 *    distance ½ Σ |p − q|.
 *  - logit lens: each model's own final RMSNorm and unembedding applied to its resid_post at
 *    every layer and position; per layer the mean over positions of KL(tuned ‖ base) in nats
 *    and the share of positions whose top-1 tokens agree; and the same for the real output
 *    logits ("final").
 *  - weights: ‖ΔW‖_F and ‖ΔW‖_F / ‖W_base‖_F per parameter tensor (ks_diff_weights).
 * Identical models give exactly CKA 1, cosine 1, JS 0, TV 0, KL 0 and ΔW 0 (the two forwards
 * are bit-identical and every measure is written so that equal inputs give the exact value).
 *
 * Ownership: ks_diff_create returns a handle freed by ks_diff_free (NULL is a no-op). Arrays
 * in a ks_diff_prompt live until the next ks_diff_begin; a ks_diff_summary owns its arrays
 * (ks_diff_summary_clear). The models must outlive the handle. One thread at a time. */
#ifndef KS_DIFF_H
#define KS_DIFF_H

#include <stdbool.h>
#include <stdint.h>

#include "ks_model.h"

/* ---------------------------------------------------------------- compatibility */

/* Same architecture (every shape field of the config, the norm epsilon and the rotary
 * settings; the rotary layout of q/k rows may differ, it is undone when weights are compared)
 * and the same tokenizer (vocabulary size, every piece, BOS and EOS; a model without a
 * tokenizer matches any). KS_ERR_ARG naming the first differing field, e.g.
 * "n_layers: base 5, tuned 6" or "tokenizer: piece 17 differs". */
ks_status ks_diff_check_models(const ks_model *base, const ks_model *tuned, ks_error *err);

/* ---------------------------------------------------------------- weights */

/* Module kinds of the parameter tensors. X(enum, name). Append only. */
#define KS_DIFF_MODULE_LIST(X)           \
    X(KS_DIFF_MOD_EMBED, "embed")        \
    X(KS_DIFF_MOD_Q, "q")                \
    X(KS_DIFF_MOD_K, "k")                \
    X(KS_DIFF_MOD_V, "v")                \
    X(KS_DIFF_MOD_O, "o")                \
    X(KS_DIFF_MOD_GATE, "gate")          \
    X(KS_DIFF_MOD_UP, "up")              \
    X(KS_DIFF_MOD_DOWN, "down")          \
    X(KS_DIFF_MOD_ATTN_NORM, "attn_norm") \
    X(KS_DIFF_MOD_MLP_NORM, "mlp_norm")  \
    X(KS_DIFF_MOD_FINAL_NORM, "final_norm") \
    X(KS_DIFF_MOD_LM_HEAD, "lm_head")

typedef enum {
#define KS_X(e, s) e,
    KS_DIFF_MODULE_LIST(KS_X)
#undef KS_X
    KS_DIFF_N_MODULES
} ks_diff_module;

const char *ks_diff_module_name(ks_diff_module m);

typedef struct {
    char name[96];          /* HF name: model.layers.3.self_attn.q_proj.weight, ... */
    ks_diff_module module;
    int layer;              /* -1 outside the blocks */
    int64_t n_elems;
    double delta_sq;        /* ‖W_tuned − W_base‖_F², summed in f64 over f32 values */
    double base_sq;         /* ‖W_base‖_F² */
    double max_abs;         /* max |ΔW| */
} ks_diff_tensor;

/* Every parameter tensor of base against tuned, in the order embed, then per layer attn_norm,
 * q, k, v, o, mlp_norm, gate, up, down, then final_norm, lm_head. lm_head is listed only when
 * one of the two models has its own output matrix (a tied model's is its embedding). Stored
 * dtypes may differ (each is converted to f32 row by row). *out is malloc'd (caller frees). */
ks_status ks_diff_weights(const ks_model *base, const ks_model *tuned, ks_diff_tensor **out,
                          int *n, ks_error *err);

/* ---------------------------------------------------------------- activations */

typedef enum {
    KS_DIFF_RESID = 0, /* blocks.L.hook_resid_post */
    KS_DIFF_ATTN = 1,  /* blocks.L.hook_attn_out */
    KS_DIFF_MLP = 2,   /* blocks.L.hook_mlp_out */
    KS_DIFF_N_STREAMS = 3
} ks_diff_stream;

/* "resid_post", "attn_out", "mlp_out" */
const char *ks_diff_stream_name(ks_diff_stream s);

typedef struct {
    bool cka_off[KS_DIFF_N_STREAMS]; /* skip CKA for a stream (its 3·L·d² doubles); the cosine
                                        is always computed */
} ks_diff_options;

typedef struct ks_diff ks_diff;

/* Checks the models (ks_diff_check_models) and allocates the accumulators. opts may be NULL
 * (everything on). KS_ERR_NOMEM says how many bytes the CKA accumulators needed. */
ks_status ks_diff_create(const ks_model *base, const ks_model *tuned, const ks_diff_options *opts,
                         ks_diff **out, ks_error *err);
void ks_diff_free(ks_diff *d);
/* Bytes the CKA accumulators take (for progress lines and docs). */
size_t ks_diff_accumulator_bytes(const ks_diff *d);

/* One prompt of n tokens: ks_diff_begin, then a forward of the base model over the n tokens
 * with ks_diff_hook_base installed (user = d), then one of the tuned model with
 * ks_diff_hook_tuned, both from position 0 and with every row's logits (KS_LOGITS_ALL), then
 * ks_diff_end. The hooks only read. Chunked prefill is fine. A forward that skipped a tensor
 * (a missing layer, a short chunk) is reported by ks_diff_end as KS_ERR_ARG. */
ks_status ks_diff_begin(ks_diff *d, int n, ks_error *err);
bool ks_diff_hook_base(const ks_hook_tensor *t, bool ask, void *user);
bool ks_diff_hook_tuned(const ks_hook_tensor *t, bool ask, void *user);

/* What one prompt gave (arrays owned by d, valid until the next ks_diff_begin). */
typedef struct {
    int n;                  /* tokens */
    int n_layers, n_heads;
    const float *cos;       /* [3][n_layers][n]: cosine per stream, layer, position */
    const float *lens_kl;   /* [n_layers][n]: KL(tuned ‖ base) of the lens, nats */
    const uint8_t *lens_top1; /* [n_layers][n]: 1 where the lens top-1 tokens agree */
    const float *final_kl;  /* [n] */
    const uint8_t *final_top1; /* [n] */
    const float *head_js;   /* [n_layers][n_heads]: mean over this prompt's rows, bits */
    const float *head_tv;   /* [n_layers][n_heads] */
} ks_diff_prompt;

/* Folds the prompt into the totals. out may be NULL. */
ks_status ks_diff_end(ks_diff *d, ks_diff_prompt *out, ks_error *err);

/* Convenience: the whole of one prompt on two sessions (of base and of tuned, in that order),
 * which are reset and whose hooks are replaced for the call and removed after. */
ks_status ks_diff_run(ks_diff *d, ks_session *s_base, ks_session *s_tuned, const int *tokens,
                      int n, ks_diff_prompt *out, ks_error *err);

/* The totals so far. Arrays are malloc'd; ks_diff_summary_clear frees them. */
typedef struct {
    int n_layers, n_heads;
    int64_t n_prompts, n_tokens;
    double *cka;        /* [3][n_layers]; NaN where off, or with fewer than 2 tokens */
    double *cos;        /* [3][n_layers]: mean cosine over tokens */
    double *head_js;    /* [n_layers][n_heads]: mean over every query row, bits */
    double *head_tv;    /* [n_layers][n_heads] */
    double *lens_kl;    /* [n_layers]: mean KL(tuned ‖ base), nats */
    double *lens_top1;  /* [n_layers]: share of positions whose top-1 tokens agree */
    double final_kl, final_top1;
} ks_diff_summary;

ks_status ks_diff_summarize(const ks_diff *d, ks_diff_summary *out, ks_error *err);
void ks_diff_summary_clear(ks_diff_summary *s);

/* Spearman's rank correlation of x and y (n values; ties get their mean rank; pairs with a NaN
 * are left out). NaN when fewer than 2 pairs remain or either side is constant. */
double ks_diff_spearman(const double *x, const double *y, int n);

#endif
