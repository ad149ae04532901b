/* ks_train.h — the public interface of train/: fine-tuning a LLaMA-family model on dialogue
 * data on the CPU, the way Koala was trained (docs/FINETUNE.md).
 *
 *  - data.c: dialogue data sets (ShareGPT JSON, Alpaca JSON, Anthropic HH JSONL(.gz), plain
 *    text, pre-tokenized JSONL) read into examples, every record validated;
 *  - encode.c: an example formatted with a chat template and tokenized, with its loss mask;
 *  - trainer.c: AdamW (as torch.optim.AdamW) with linear warmup and cosine decay to a floor,
 *    gradient accumulation, clipping by global norm, epochs with a seeded order, LoRA;
 *  - checkpoint.c: HF safetensors checkpoints (config.json, model.safetensors, tokenizer
 *    files) with the optimizer state and trainer_state.json, written atomically, and resume.
 *
 * Ownership: handles come back through out-parameters and are freed by the matching _free,
 * which accepts NULL. Strings returned by accessors live as long as the handle. Library code
 * never prints: errors come back in the caller's ks_error, naming file:line (or record) and
 * field. */
#ifndef KS_TRAIN_H
#define KS_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ks_model.h"

/* ================================================================ data (data.c) */

typedef enum {
    KS_DATA_AUTO = 0,     /* from the extension and the first record */
    KS_DATA_SHAREGPT = 1, /* JSON list (or JSONL) of {"conversations": [{"from", "value"}]} */
    KS_DATA_ALPACA = 2,   /* JSON list (or JSONL) of {"instruction", "input", "output"} */
    KS_DATA_HH = 3,       /* JSONL(.gz) of {"chosen": "\n\nHuman: … \n\nAssistant: …"} */
    KS_DATA_TEXT = 4,     /* .txt: documents separated by blank lines, every token trained */
    KS_DATA_TOKENS = 5,   /* JSONL of {"ids": [int…], "mask": [0|1…] (optional)} */
} ks_data_format;

ks_status ks_data_format_parse(const char *name, ks_data_format *out, ks_error *err);
const char *ks_data_format_name(ks_data_format f);

typedef struct ks_dataset ks_dataset;

/* One example as read. Exactly one of msgs, text, ids is set. */
typedef struct {
    const ks_chat_message *msgs; /* a dialogue (roles system/user/assistant) */
    int n_msgs;
    const char *text;            /* a plain-text document */
    const int *ids;              /* pre-tokenized */
    const uint8_t *mask;         /* with ids: 1 = target; NULL = every token */
    int n_ids;
    const char *where;           /* "file:line" or "file: record N" */
} ks_example;

ks_status ks_dataset_create(ks_dataset **out, ks_error *err);
void ks_dataset_free(ks_dataset *d);
/* Append the examples of a file (.gz read through zlib). Every record is checked; the first
 * bad one fails the whole file with "file:line" (JSONL, text) or "file: record N" (JSON
 * lists) and the field in err, and nothing of the file is kept. */
ks_status ks_dataset_load(ks_dataset *d, const char *path, ks_data_format f, ks_error *err);
/* The same from memory (already decompressed); source names it in errors. f must not be
 * AUTO unless source has a telling extension. */
ks_status ks_dataset_load_mem(ks_dataset *d, const char *data, size_t len, const char *source,
                              ks_data_format f, ks_error *err);
int ks_dataset_count(const ks_dataset *d);
/* Example i (0 <= i < count); pointers live as long as d. */
ks_status ks_dataset_get(const ks_dataset *d, int i, ks_example *ex, ks_error *err);

/* ================================================================ encoding (encode.c) */

typedef enum {
    KS_LOSS_ASSISTANT = 0, /* only the model's turns (their tokens and end-of-turn token) */
    KS_LOSS_ALL = 1,       /* every token after the first */
} ks_loss_on;

/* A training sequence: ids and mask (1 = ids[t] is a target, predicted from ids[0..t)). */
typedef struct {
    int *ids;
    uint8_t *mask;
    int n;
} ks_train_seq;

/* Format and tokenize one example: a dialogue with the chat template (ks_chat_encode_train),
 * a text as BOS + text + EOS, ids as they are (checked against vocab_size). mask[0] is always
 * 0 (nothing predicts the first token). seq's arrays are malloc'd (ks_train_seq_free). */
ks_status ks_train_encode(const ks_example *ex, const ks_tokenizer *tok, ks_chat_template t,
                          ks_loss_on on, int vocab_size, ks_train_seq *seq, ks_error *err);
void ks_train_seq_free(ks_train_seq *seq);

typedef struct {
    int examples;    /* in the data set */
    int sequences;   /* kept */
    int truncated;   /* cut to max_len */
    int dropped;     /* no target token left (e.g. the reply lies past max_len) */
    int64_t tokens, targets;
} ks_train_data_stats;

/* Every example of d encoded (ks_train_encode), cut to max_len tokens, and those left without
 * a target token dropped. *seqs is a malloc'd array of *n sequences: free with
 * ks_train_seqs_free. */
ks_status ks_train_prepare(const ks_dataset *d, const ks_tokenizer *tok, ks_chat_template t,
                           ks_loss_on on, int vocab_size, int max_len, ks_train_seq **seqs,
                           int *n, ks_train_data_stats *stats, ks_error *err);
void ks_train_seqs_free(ks_train_seq *seqs, int n);

/* ================================================================ training (trainer.c) */

typedef struct {
    double lr;           /* peak learning rate */
    double min_lr;       /* floor the cosine decays to */
    int warmup_steps;    /* linear warmup from 0 */
    double weight_decay; /* decoupled (AdamW), on matrices and embeddings, not on norms */
    double beta1, beta2, eps;
    double clip;         /* max global gradient norm; 0 = no clipping */
    int batch;           /* sequences per micro-batch */
    int grad_accum;      /* micro-batches per optimizer step */
    int epochs;          /* passes over the data (used when steps == 0) */
    int steps;           /* optimizer steps; 0 = epochs × steps per epoch */
    uint64_t seed;       /* order of the examples (and LoRA's initial A) */
    bool shuffle;        /* a new seeded order every epoch (false: file order) */
    int lora_rank;       /* 0 = full fine-tuning */
    double lora_alpha;   /* LoRA scale = alpha / rank */
    const char *backend; /* where forward and backward run: "cpu" (NULL: the same) or "cuda";
                            the optimizer runs on the host either way */
} ks_train_options;

/* Koala's recipe: lr 2e-5, min_lr 0, warmup 0, weight decay 0, betas 0.9/0.999, eps 1e-8,
 * clip 1, batch 1, accumulation 1, 2 epochs, seed 0, shuffled. */
void ks_train_options_default(ks_train_options *o);

typedef struct ks_trainer ks_trainer;

/* Train m (its parameters written in place: they must be writable, see ks_model_param_mut)
 * on seqs (copied). The model must outlive the trainer. KS_ERR_ARG names the option at fault. */
ks_status ks_trainer_create(ks_model *m, const ks_train_options *o, const ks_train_seq *seqs,
                            int n_seqs, ks_trainer **out, ks_error *err);
void ks_trainer_free(ks_trainer *t);

int ks_trainer_total_steps(const ks_trainer *t);
int ks_trainer_steps_per_epoch(const ks_trainer *t);
/* Optimizer steps done so far. */
int ks_trainer_step_index(const ks_trainer *t);
/* The learning rate update `step` (0-based) uses: peak × step / warmup during the warmup,
 * then min_lr + (peak − min_lr) × (1 + cos(π p)) / 2, p = (step − warmup) / (total − warmup)
 * (transformers' get_cosine_with_min_lr_schedule_with_warmup). */
double ks_trainer_lr_at(const ks_trainer *t, int step);

typedef struct {
    int step;              /* 1-based index of the step just done */
    int epoch;             /* 0-based epoch it belonged to */
    double loss;           /* mean cross-entropy over the step's target tokens, before the update */
    double lr;
    double grad_norm;      /* global norm of the trainable gradients before clipping */
    int64_t tokens;        /* tokens run through the model */
    int64_t targets;       /* target tokens the loss averages over */
    int n_seqs;
} ks_train_step_info;

/* One optimizer step over the next batch × grad_accum sequences (fewer at an epoch's end).
 * KS_ERR_RANGE when every step is done. */
ks_status ks_trainer_step(ks_trainer *t, ks_train_step_info *info, ks_error *err);
/* History of the steps done (n = step index): loss, lr, gradient norm per step. */
const double *ks_trainer_losses(const ks_trainer *t, int *n);
const double *ks_trainer_lrs(const ks_trainer *t, int *n);
const double *ks_trainer_grad_norms(const ks_trainer *t, int *n);
/* The sequence indices of step `step` (0-based) in order; *n receives their count. The
 * pointer is valid until the next call. */
const int *ks_trainer_step_seqs(ks_trainer *t, int step, int *n);
/* A SHA-256-free fingerprint (FNV-1a, hex) of the sequences and options that decide the run,
 * stored in checkpoints so that a resume refuses different data. */
const char *ks_trainer_fingerprint(const ks_trainer *t);

/* Initialise every parameter as HF's LlamaForCausalLM._init_weights does: normal(0, std) for
 * linear and embedding weights, 1 for RMSNorm weights; from seed (Box-Muller over xoshiro256**).
 * The parameters must be writable. */
ks_status ks_train_init_random(ks_model *m, double std, uint64_t seed, ks_error *err);

/* ================================================================ checkpoints (checkpoint.c) */

typedef struct {
    bool bf16;                     /* model.safetensors in bf16 (f32 master weights then go
                                      into optimizer.safetensors for --resume) */
    const char *tokenizer_dir;     /* an HF directory whose tokenizer files are copied; NULL:
                                      tokenizer.model written from the model's tokenizer */
    const char *template_name;     /* recorded in config.json's _name_or_path (template hint) */
    const char *run_json;          /* a JSON object stored as trainer_state.json's "run" */
    bool with_state;               /* optimizer.safetensors + trainer_state.json (resume) */
} ks_checkpoint_options;

/* Write the model as an HF checkpoint directory at dir: config.json, model.safetensors (HF
 * layout: q/k rows in rotate-half order), tokenizer files, and with_state the optimizer state
 * and trainer_state.json. Atomic: written under a temporary name beside dir, synced, renamed;
 * an existing dir is replaced. */
ks_status ks_trainer_save(const ks_trainer *t, const char *dir, const ks_checkpoint_options *o,
                          ks_error *err);
/* Continue from a checkpoint written with_state by a run with the same model, data and
 * options: weights, optimizer moments, LoRA factors, step and history are restored. */
ks_status ks_trainer_restore(ks_trainer *t, const char *dir, ks_error *err);
/* The "run" object of a checkpoint's trainer_state.json (malloc'd JSON text) and its step. */
ks_status ks_checkpoint_read_run(const char *dir, char **run_json, int *step, ks_error *err);

#endif
