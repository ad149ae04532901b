/* train_private.h — the trainer's struct, shared by trainer.c and checkpoint.c only.
 * Families are kept apart (STYLE.md rule 6): the weights live in the model, the gradients in
 * the ks_grad (and lora_grad), the optimizer state in adam_state. */
#ifndef KS_TRAIN_PRIVATE_H
#define KS_TRAIN_PRIVATE_H

#include "ks_train.h"

/* AdamW moments of one trainable tensor (n floats each). */
typedef struct {
    float *m, *v;
} adam_state;

/* A tensor the optimizer updates. */
typedef struct {
    char name[96];   /* HF name; LoRA: "<target>.lora_A" / ".lora_B" */
    float *p;        /* (n) the values, updated in place */
    const float *g;  /* (n) the gradient of the step (ks_grad's buffer or lora grads) */
    size_t n;
    int64_t shape[2];
    int ndim;
    bool decay;      /* weight decay applies (matrices, embeddings; not norms) */
    adam_state st;
} trainable;

/* LoRA on one matrix W (out, in): W = W0 + scale · B A, A (r, in), B (out, r). */
typedef struct {
    char name[96];
    float *w;        /* (out, in) the model's matrix: the merged weight the forward uses */
    float *w0;       /* (out, in) the frozen base */
    float *a, *b;    /* (r, in), (out, r) */
    float *ga, *gb;  /* gradients */
    int out, in;
} lora_slot;

struct ks_trainer {
    ks_model *m;
    ks_train_options o;
    ks_train_seq *seqs;
    int n_seqs;
    int max_len;
    ks_grad *g;

    trainable *tr;
    int n_tr;
    float *adam_buf;   /* every tensor's moments, one allocation */
    lora_slot *lora;
    int n_lora;
    float lora_scale;

    int step, total, spe; /* steps done, total, per epoch */
    double *loss_hist, *lr_hist, *norm_hist;
    int perm_epoch;
    int *perm;         /* (n_seqs) the order of perm_epoch */
    int *step_idx;     /* (batch * grad_accum) scratch for ks_trainer_step_seqs */
    int *targets;      /* (max_len) */
    float *dlogits;    /* (max_len, vocab) */
    char fingerprint[17];
};

/* Recompute every LoRA matrix W = W0 + scale · B A. */
void ks_trainer_lora_merge(ks_trainer *t);

#endif
