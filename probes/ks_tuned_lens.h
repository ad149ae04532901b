/* ks_tuned_lens.h — the tuned lens (Belrose et al. 2023, "Eliciting Latent Predictions from
 * Transformers with the Tuned Lens", arXiv:2303.08112): before the logit lens reads layer l's
 * residual stream, an affine translator moves it to where the final layer would put it,
 *     y = h + A_l h + b_l              A_l (D, D) row-major (out, in), b_l (D)
 *     lens_l(h) = W_out · RMSNorm_final(y)
 * trained so that softmax(lens_l(h_l)) matches the model's own output distribution: the mean
 * over tokens of KL(final ‖ lens_l), one translator per layer (hook blocks.l.hook_resid_post).
 * A_l = 0, b_l = 0 is the logit lens exactly, and training starts there. probes/tuned_lens.c.
 *
 * Training: Adam (β 0.9/0.999, ε 1e-8; the paper used SGD with Nesterov momentum, Adam needs
 * no per-model learning-rate search at the sizes here), the learning rate warmed up linearly
 * over the first 10% of steps then decayed linearly to zero, minibatches of rows drawn with a
 * seeded generator: the same data, options and thread count give the same bytes. The gradient
 * of the KL through the final RMSNorm and the unembedding is a dedicated backward
 * (ks_tuned_lens_layer_grad), checked in tests/test_tuned_lens.c against the engine's ks_grad
 * backward and against finite differences. The last layer's lens is the model's output
 * itself (KL 0, gradient 0): its translator is kept at zero and not trained.
 *
 * File: safetensors, "layers.{l}.weight" (D, D) F32 and "layers.{l}.bias" (D) F32 for every
 * layer, and __metadata__ {format: "koalascope-tuned-lens", version: "1", d_model, n_layers,
 * vocab_size, model_sha256, model_sha256_of, and how it was trained}. model_sha256 is the
 * recorder's model identity (activations/record.c: SHA-256 of the weights file, or of
 * model.safetensors.index.json for a sharded HF checkpoint), so a lens, a dump and a model can
 * be matched; loading refuses a lens of another model, naming the file and the field.
 *
 * Ownership: handles come back through out-parameters and are freed with the matching _free
 * (NULL is a no-op). The model must outlive the lens data collected from it. */
#ifndef KS_TUNED_LENS_H
#define KS_TUNED_LENS_H

#include <stdint.h>

#include "ks_model.h"

/* What a lens was trained for: checked when it is loaded. */
typedef struct {
    int d_model;
    int n_layers;
    int vocab_size;
    char model_sha256[65]; /* lower-case hex; "" when unknown (then not compared) */
    char model_sha256_of[16]; /* "weights" or "index" (informative, not compared) */
} ks_tuned_lens_identity;

/* The identity of an opened model: its config and the recorder's SHA-256 of its file
 * (reads the whole weights file once: ~1 s per 2 GB). */
ks_status ks_tuned_lens_model_identity(const ks_model *m, ks_tuned_lens_identity *out,
                                       ks_error *err);

typedef struct ks_tuned_lens ks_tuned_lens;

/* A lens of zero translators (the logit lens) for the identity's shape. */
ks_status ks_tuned_lens_create(const ks_tuned_lens_identity *id, ks_tuned_lens **out,
                               ks_error *err);
void ks_tuned_lens_free(ks_tuned_lens *tl);
const ks_tuned_lens_identity *ks_tuned_lens_id(const ks_tuned_lens *tl);
/* The translator of a layer, owned by the lens and writable: A (D, D) row-major, b (D).
 * NULL for a layer out of range. */
float *ks_tuned_lens_weight(ks_tuned_lens *tl, int layer);
float *ks_tuned_lens_bias(ks_tuned_lens *tl, int layer);

/* y (n, D) = x + x A_lᵀ + b_l. y may not alias x. */
ks_status ks_tuned_lens_translate(const ks_tuned_lens *tl, int layer, const float *x, int n,
                                  float *y, ks_error *err);
/* logits (n, V) of rows x (n, D) of layer `layer`: translate, then ks_logit_lens. With zero
 * translators this is ks_logit_lens bit for bit. */
ks_status ks_tuned_lens_apply(const ks_tuned_lens *tl, const ks_model *m, int layer,
                              const float *x, int n, float *logits, ks_error *err);

/* ------------------------------------------------------------------ training data */

/* blocks.{l}.hook_resid_post of every layer at every position of a set of token sequences,
 * (rows, D) per layer; the last layer's rows give the reference (the model's output). */
typedef struct ks_lens_data ks_lens_data;

/* Run each sequence from position 0 in one session (hooks read-only) and keep its resid_post
 * rows; a sequence longer than the context is cut to it, and collection stops at max_rows
 * rows in all (0: no limit). so may be NULL. Memory: rows × n_layers × D floats. */
ks_status ks_lens_data_collect(const ks_model *m, const int *const *seqs, const int *lens,
                               int n_seqs, int64_t max_rows, const ks_session_options *so,
                               ks_lens_data **out, ks_error *err);
void ks_lens_data_free(ks_lens_data *d);
int64_t ks_lens_data_rows(const ks_lens_data *d);
/* (rows, D) of a layer, owned by d; NULL when out of range. */
const float *ks_lens_data_resid(const ks_lens_data *d, int layer);

/* ------------------------------------------------------------------ training */

typedef void (*ks_tuned_lens_progress_fn)(int step, int steps, double train_kl, void *user);

typedef struct {
    int steps;          /* optimiser steps (0: 250) */
    float lr;           /* peak Adam learning rate (0: 2e-3) */
    int batch_rows;     /* rows per step, every layer (0: 256; capped at the data's rows) */
    uint64_t seed;      /* minibatch order */
    ks_tuned_lens_progress_fn progress; /* every 10 steps and at the last; may be NULL */
    void *user;
} ks_tuned_lens_train_options;

/* Train every translator but the last layer's from its current value (zero after _create) on
 * d, which must have been collected with the model m. Memory beyond d: the f32 output matrix
 * (V × D, aliased when stored in f32) and three (batch, V) buffers. */
ks_status ks_tuned_lens_train(ks_tuned_lens *tl, const ks_model *m, const ks_lens_data *d,
                              const ks_tuned_lens_train_options *o, ks_error *err);

/* Mean over d's rows of KL(final ‖ logit lens) and KL(final ‖ tuned lens) in nats, per layer:
 * kl_logit and kl_tuned receive n_layers values each (either may be NULL). */
ks_status ks_tuned_lens_eval(const ks_tuned_lens *tl, const ks_model *m, const ks_lens_data *d,
                             double *kl_logit, double *kl_tuned, ks_error *err);

/* The training objective of one layer on n rows and its gradient (the dedicated backward):
 * J = (1/n) Σ_i KL(softmax(ref_i) ‖ softmax(lens_l(x_i))), ref (n, V) the reference logits.
 * Writes J, and when not NULL dy (n, D) = dJ/dy at the translated rows, dA (D, D) = dJ/dA_l,
 * db (D) = dJ/db_l. Exposed for the gradient checks of the tests. */
ks_status ks_tuned_lens_layer_grad(const ks_tuned_lens *tl, const ks_model *m, int layer,
                                   const float *x, const float *ref, int n, double *J, float *dy,
                                   float *dA, float *db, ks_error *err);

/* ------------------------------------------------------------------ files */

/* Training provenance written to __metadata__ by _save (all optional: 0 / NULL omitted). */
typedef struct {
    int steps;
    float lr;
    uint64_t seed;
    int64_t train_rows;
    const char *data_source; /* e.g. "prompts FILE" or "generated 32 x 128 tokens, seed 1" */
} ks_tuned_lens_provenance;

/* Write the lens to path (replaced atomically: PATH.tmp then rename). prov may be NULL. */
ks_status ks_tuned_lens_save(const ks_tuned_lens *tl, const ks_tuned_lens_provenance *prov,
                             const char *path, ks_error *err);
/* Read a lens file and check it against expect (NULL: no check; model_sha256 "" in either:
 * not compared). Malformed files give KS_ERR_FORMAT naming the file and the field; a lens of
 * another model KS_ERR_ARG naming the file, the field and both values. */
ks_status ks_tuned_lens_load(const char *path, const ks_tuned_lens_identity *expect,
                             ks_tuned_lens **out, ks_error *err);
/* The same from memory; source names the file in messages (the fuzz target's entry). */
ks_status ks_tuned_lens_load_mem(const uint8_t *data, size_t len, const char *source,
                                 const ks_tuned_lens_identity *expect, ks_tuned_lens **out,
                                 ks_error *err);

#endif
