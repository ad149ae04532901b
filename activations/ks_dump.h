/* ks_dump.h — the public interface of activations/: record hook points of the forward into
 * an HDF5 dump (ks_recorder_*), read dumps back (ks_dump_*), and store attribution results in
 * a dump or a file of their own (ks_attribution_write). The file layout is docs/FORMAT.md;
 * everything here follows it.
 *
 * Ownership: handles come back through out-parameters and are freed by the matching
 * _close/_free, which accept NULL. Strings returned by accessors live as long as the handle.
 * Buffers filled by _read functions are the caller's.
 *
 * Threading: a ks_dump handle is used by one thread at a time (HDF5 itself serialises calls).
 * A recorder is driven by one thread; it runs its own writer thread inside. */
#ifndef KS_DUMP_H
#define KS_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ks_model.h"
#include "ks_status.h"

#define KS_DUMP_FORMAT "koalascope-dump"
#define KS_DUMP_FORMAT_VERSION 1

typedef enum {
    KS_DUMP_F32 = 0,
    KS_DUMP_F16 = 1,
    KS_DUMP_BF16 = 2,
} ks_dump_dtype;

typedef enum {
    KS_DUMP_COMPRESS_NONE = 0,
    KS_DUMP_COMPRESS_DEFLATE = 1, /* shuffle + deflate level 1 */
    KS_DUMP_COMPRESS_LZ4 = 2,     /* HDF5 filter 32004 (hdf5-filter-plugin) */
} ks_dump_compression;

/* "f32" / "f16" / "bf16"; parse returns KS_ERR_ARG for anything else. */
const char *ks_dump_dtype_name(ks_dump_dtype t);
ks_status ks_dump_dtype_parse(const char *s, ks_dump_dtype *out, ks_error *err);
const char *ks_dump_compression_name(ks_dump_compression c);
ks_status ks_dump_compression_parse(const char *s, ks_dump_compression *out, ks_error *err);

/* ================================================================ reading */

typedef struct ks_dump ks_dump;

typedef enum {
    KS_DUMP_KIND_TOKEN = 0,     /* [rows, dims...] */
    KS_DUMP_KIND_ATTENTION = 1, /* [heads, K]: causal rows packed, see docs/FORMAT.md */
} ks_dump_kind;

/* One recorded hook point. */
typedef struct {
    const char *name;    /* "blocks.3.hook_resid_post" */
    ks_hook_point point;
    int layer;           /* -1 outside the blocks */
    ks_dump_kind kind;
    ks_dump_dtype dtype; /* storage dtype */
    int ndim;            /* token kind: dims after the row axis (1 or 2); attention: 1 (heads) */
    int64_t dims[2];     /* token kind: e.g. {d_model} or {heads, d_head}; attention: {heads} */
    int64_t row_elems;   /* token kind: product of dims (floats per row); attention: heads */
    int n_heads;         /* entries of heads (0 when the tensor has no query-head axis) */
    const int *heads;    /* model head index held at each slot of the head axis */
} ks_dump_hook;

/* Where one prompt's data lies. */
typedef struct {
    int64_t tok_begin;     /* into /tokens */
    int64_t n_tokens;      /* input + generated */
    int n_prompt_tokens;   /* input tokens (BOS and chat template included) */
    int64_t row_begin;     /* into per-token activations */
    int64_t n_rows;
    int64_t attn_begin;    /* into the key axis of attention datasets */
    int64_t n_attn;        /* sum over rows of (position + 1) */
} ks_dump_prompt;

/* Open a dump read-only. Everything read is validated as untrusted input: a foreign or
 * corrupted HDF5 file, or one that is not a koalascope dump, gives KS_ERR_FORMAT with the path
 * and the offending object in err. An interrupted dump (its writer killed) opens; see
 * ks_dump_interrupted. */
ks_status ks_dump_open(const char *path, ks_dump **out, ks_error *err);
void ks_dump_close(ks_dump *d);

const char *ks_dump_path(const ks_dump *d);
/* Committed prompts (len(/prompt_offsets) - 1). */
int64_t ks_dump_n_prompts(const ks_dump *d);
int64_t ks_dump_n_tokens(const ks_dump *d);
int64_t ks_dump_n_rows(const ks_dump *d);
/* Root attribute `complete` is 1. */
bool ks_dump_complete(const ks_dump *d);
/* The writer did not close the file (killed, crashed, or still running). */
bool ks_dump_interrupted(const ks_dump *d);
/* The model config stored in the dump (from the model_config attribute). */
const ks_config *ks_dump_config(const ks_dump *d);
/* A root attribute as text: strings as they are, integers in decimal. NULL when absent. */
const char *ks_dump_attr(const ks_dump *d, const char *name);
/* Top-k of /logits (0 when the dump has none); whether /logits/full is present. */
int ks_dump_logits_topk(const ks_dump *d);
bool ks_dump_has_full_logits(const ks_dump *d);

/* Recorded hook points, in file order (which is the forward's order). */
int ks_dump_n_hooks(const ks_dump *d);
const ks_dump_hook *ks_dump_hook_at(const ks_dump *d, int i);
/* NULL when the dump did not record that hook. */
const ks_dump_hook *ks_dump_find_hook(const ks_dump *d, const char *name);
/* Bytes that hook h's dataset (h from this d) takes in the file: the chunks allocated, after
 * compression, as HDF5's H5Dget_storage_size counts them. -1 when HDF5 cannot tell or h is not
 * one of d's hooks. Nothing to free. */
int64_t ks_dump_hook_storage_bytes(const ks_dump *d, const ks_dump_hook *h);

/* Offsets of prompt p (0 <= p < n_prompts), validated. */
ks_status ks_dump_prompt_info(const ks_dump *d, int64_t p, ks_dump_prompt *out, ks_error *err);
/* Strings of prompt p: /prompts, /prompt_ids, /generations. *out is malloc'd, NUL-terminated. */
ks_status ks_dump_prompt_text(const ks_dump *d, int64_t p, char **out, ks_error *err);
ks_status ks_dump_prompt_id(const ks_dump *d, int64_t p, char **out, ks_error *err);
ks_status ks_dump_generation(const ks_dump *d, int64_t p, char **out, ks_error *err);
/* Token ids of prompt p into ids (capacity cap, needs n_tokens). */
ks_status ks_dump_read_tokens(const ks_dump *d, int64_t p, int32_t *ids, size_t cap,
                              ks_error *err);
/* Token strings of prompt p: *out is a malloc'd array of n_tokens malloc'd strings; free with
 * ks_dump_strings_free. */
ks_status ks_dump_read_token_strings(const ks_dump *d, int64_t p, char ***out, ks_error *err);
void ks_dump_strings_free(char **s, int64_t n);
/* Positions (inside the prompt) of prompt p's rows (capacity cap, needs n_rows). */
ks_status ks_dump_read_positions(const ks_dump *d, int64_t p, int32_t *pos, size_t cap,
                                 ks_error *err);

/* Per-token hook: the rows of prompts [p0, p1) as f32, row-major [rows, row_elems], into out
 * (capacity cap floats). KS_ERR_ARG for an attention hook. */
ks_status ks_dump_read_rows(const ks_dump *d, const ks_dump_hook *h, int64_t p0, int64_t p1,
                            float *out, size_t cap, ks_error *err);
/* Attention hook: prompt p as f32. head_slot -1 reads every recorded head, [heads, n_attn];
 * otherwise one slot of the head axis, [n_attn]. Row r of the prompt (position q) holds its
 * q+1 keys at offset (attn_row_starts[r] - attn_begin). */
ks_status ks_dump_read_attention(const ks_dump *d, const ks_dump_hook *h, int64_t p,
                                 int head_slot, float *out, size_t cap, ks_error *err);
/* Convenience: one head of prompt p as a dense square [n_tokens, n_tokens] map (row q holds
 * keys 0..q, zero elsewhere; rows not recorded are zero). */
ks_status ks_dump_read_attention_square(const ks_dump *d, const ks_dump_hook *h, int64_t p,
                                        int head_slot, float *out, size_t cap, ks_error *err);
/* Top-k of prompt p: ids and logprobs [n_rows, k]; next: [n_rows] (NaN at the last token).
 * Any of the three may be NULL. KS_ERR_NOT_FOUND when the dump has no logits. */
ks_status ks_dump_read_topk(const ks_dump *d, int64_t p, int32_t *ids, float *logprobs,
                            float *next, size_t cap_rows, ks_error *err);

/* Clear the "open for writing" flag of an interrupted dump and cut every dataset back to its
 * committed length, so plain HDF5 readers open it. *n_prompts gets the committed count.
 * Do not run it on a dump that a recorder is still writing (HDF5's SWMR writer drops its file
 * lock, so this cannot be detected). */
ks_status ks_dump_repair(const char *path, int64_t *n_prompts, ks_error *err);

/* ================================================================ identity */

/* Hex SHA-256 of a file's bytes (hex: 64 digits and a NUL). */
ks_status ks_sha256_file(const char *path, char hex[65], ks_error *err);
/* What identifies a model (the dump's model_sha256 / model_sha256_of): the hash of its single
 * weights file, or of a sharded HF checkpoint's model.safetensors.index.json (which names the
 * shards: hashing 26 GB of shards at every run would cost a minute); *of is "weights" or
 * "index". tokfile gets the model's own tokenizer file where there is one ("" otherwise). */
ks_status ks_model_identity(const char *path, char hex[65], const char **of, char *tokfile,
                            size_t tokcap, ks_error *err);

/* ================================================================ recording */

typedef struct ks_recorder ks_recorder;

/* Progress, called on the recording thread after each prompt is queued. */
typedef struct {
    int64_t prompts_done;      /* recorded by this run, queued to the writer */
    int64_t prompts_committed; /* in the file, as of the last flush (all runs) */
    int64_t tokens_done;       /* by this run */
    int64_t bytes_written;     /* payload handed to HDF5 by this run */
    size_t buffer_bytes;       /* queued, not yet written */
} ks_record_progress;

typedef struct {
    /* what to record */
    const char *hooks;     /* selection: comma-separated globs, "blocks.0-3.attn.hook_pattern",
                              "blocks.*.hook_resid_post"; required */
    const char *positions; /* "all" (NULL), "last", "0,-1", "5:10", "-3:" */
    const char *heads;     /* "all" (NULL), "0,3,5-7": query heads kept for attention, q, z */
    ks_dump_dtype dtype;
    ks_dump_compression compression;
    int logits_topk;       /* 0: no /logits */
    bool logits_full;
    /* how */
    size_t buffer_bytes;   /* per-prompt messages queued for the writer (tokens, strings,
                              logits); 0 = 256 MiB. Activations go in chunks: one being filled
                              per dataset and at most one more (the largest) in flight. */
    double flush_seconds;  /* commit when this long has passed since the last (0: every prompt) */
    bool no_fsync;
    /* sizes the caller expects over the whole run (0: unknown), to choose chunk shapes that
     * do not waste space on small dumps: tokens, and sum over tokens of (position + 1) */
    int64_t expected_tokens;
    int64_t expected_attn;
    /* width of /prompts: the longest prompt text in bytes (0: 4096); a longer text is refused */
    int64_t max_text_bytes;
    /* provenance, stored as root attributes (any may be NULL) */
    const char *model_path;
    const char *tokenizer_path; /* NULL: the model's own */
    const char *chat_template;  /* "none" when NULL */
    const char *system_prompt;
    const char *backend;
    const char *command_line;
    const char *prompts_source;
    const char *prompts_sha256;
    int64_t n_prompts_planned; /* -1 unknown */
    int generate_max_tokens;
    ks_sampler_params sampling;
} ks_record_options;

/* Create DUMP (refusing to overwrite an existing file unless overwrite) for model m, with
 * every dataset the selection needs. The selection is checked against the model: an unknown
 * hook, a layer out of range, a selection matching nothing give KS_ERR_ARG naming it. */
ks_status ks_recorder_create(const char *path, const ks_model *m, const ks_record_options *o,
                             bool overwrite, ks_recorder **out, ks_error *err);
/* Continue an interrupted (or complete) dump: checks that m and o match what the dump was
 * started with (model sha256, config, selection, dtype, prompts source sha256, sampling),
 * cuts uncommitted data, and reports how many prompts are already committed. */
ks_status ks_recorder_resume(const char *path, const ks_model *m, const ks_record_options *o,
                             ks_recorder **out, int64_t *n_committed, ks_error *err);

void ks_recorder_set_progress(ks_recorder *r, void (*fn)(const ks_record_progress *, void *),
                              void *user);

/* Record one prompt: runs tokens[0..n) through a fresh forward of session s (which is reset
 * first, and whose hook the recorder replaces for the call) and queues what the selection
 * asks. n_prompt of the tokens are input, the rest generated. text/id/generation are stored
 * as given (NULL = empty). Blocks while the writer's buffer is full. Errors from the writer
 * thread (disk full, …) come back here or from _finish. */
ks_status ks_recorder_record(ks_recorder *r, ks_session *s, const int *tokens, int n, int n_prompt,
                             const char *text, const char *id, const char *generation,
                             ks_error *err);
/* Commit everything, mark the dump complete (when every planned prompt is in), close. */
ks_status ks_recorder_finish(ks_recorder *r, ks_error *err);
/* Stop without marking complete (what is committed stays). NULL-safe. */
void ks_recorder_free(ks_recorder *r);
/* A second hook that runs beside the recorder during ks_recorder_record, so an analysis reads
 * the same forward that is recorded (koalascope diff) instead of running its own: it is asked
 * about every tensor of the forward (its answer does not change what is recorded; asked about
 * "logits", true makes every row's logits computed) and handed those it wants, after the
 * recorder has copied them. It must only read them (the forward is read-only for the
 * recorder). fn NULL removes it. */
void ks_recorder_set_tap(ks_recorder *r, ks_hook_fn fn, void *user);
/* Prompts committed in the file so far (all runs). */
int64_t ks_recorder_committed(const ks_recorder *r);
/* Peak of bytes queued so far. */
size_t ks_recorder_peak_buffer(const ks_recorder *r);

/* ================================================================ attribution results */

/* Root attribute `format` of a file holding attribution results only (docs/FORMAT.md,
 * "/attributions"). */
#define KS_ATTRIBUTIONS_FORMAT "koalascope-attributions"
#define KS_ATTRIBUTIONS_FORMAT_VERSION 1

/* One attribution result (koalascope attribute / koalascope patch). Every pointer is the
 * caller's; ks_attribution_write only reads them. */
typedef struct {
    const char *name;      /* group name under /attributions: [A-Za-z0-9_.-]+, at most 255 bytes,
                              not "." or ".."; unique in the file */
    const char *method;    /* "saliency", "grad_x_input", "integrated_gradients", "head_attribution",
                              "attribution_patching", "activation_patching", ... (free text, stored;
                              required, non-empty, valid UTF-8) */
    const char *objective; /* what was differentiated, in words, e.g. "log p(' Paris' | prompt)"
                              (NULL: stored as ""; bytes that are not UTF-8 stored as "<0xNN>") */
    const int *tokens;     /* the token ids of the input, n_tokens >= 1 of them, each >= 0 (stored as
                              int32 dataset "tokens") */
    int n_tokens;
    const char *const *token_strings; /* optional (NULL): n_tokens pieces, stored as fixed-length
                                         UTF-8 strings like the dump's token_strings; a byte that
                                         is not part of valid UTF-8 (a byte token's raw text) is
                                         stored as "<0xNN>", as the dump spells byte tokens */
    const float *values;   /* the result, row-major, shape[0..ndim) (stored as f32 dataset "values");
                              NaN and infinities are stored as they are */
    int ndim;              /* 1..3 */
    const int64_t *shape;  /* ndim extents, each >= 1, product < 2^31 */
    const char *const *axes; /* ndim names, e.g. {"position"}, {"layer","head"}, {"layer","position"};
                                non-empty, valid UTF-8, no ',', 1 KiB in all; stored as the "axes"
                                attribute "layer,head" */
    double objective_value;    /* f(input); stored as attribute */
    double baseline_value;     /* f(baseline) or f(corrupt); NaN when not applicable */
    double completeness_error; /* |sum(values) - (f(x) - f(baseline))| / |f(x) - f(baseline)|, NaN
                                  when n/a */
    int steps;                 /* integration steps, 0 when n/a; >= 0 */
    const char *extra_json;    /* optional (NULL): further parameters as a JSON object text, stored
                                  verbatim as attribute "params" */
} ks_attribution;

/* Write r into path as the group /attributions/<r->name> (layout: docs/FORMAT.md).
 *  - path is a koalascope dump (root attribute format == "koalascope-dump") or a file written
 *    by this function before (format == "koalascope-attributions"): the group is added to it.
 *    A dump must open with ks_dump_open and must not be interrupted (its writer killed, or
 *    still running): resume or repair it first. A result of the same name is KS_ERR_ARG
 *    naming it, unless overwrite, which replaces it.
 *  - path does not exist: a new file is created with the root attributes format =
 *    "koalascope-attributions", format_version = 1, koalascope_version, created (UTC ISO
 *    8601), model_path and command_line (NULL: stored as "").
 *  - any other existing file (not HDF5, or HDF5 that is neither of the two) is refused,
 *    KS_ERR_FORMAT naming it, and left as it was; a newer format_version, KS_ERR_UNSUPPORTED.
 * The group records model_path and command_line too (in a dump, the root attributes describe
 * the recording, not this result). Invalid fields of r give KS_ERR_ARG before the file is
 * touched; HDF5 and file-system failures KS_ERR_IO. All or nothing, as far as
 * HDF5 allows: the group is built unlinked and linked under its name as the last step, so
 * a failure leaves no part of it in the file (and removes a file this call created); a
 * process killed in the middle of a write into an existing file may still leave that file
 * damaged, as any HDF5 write can. Errors come back in err as one line naming the file. */
ks_status ks_attribution_write(const char *path, const ks_attribution *r, const char *model_path,
                               const char *command_line, bool overwrite, ks_error *err);

/* What ks_attribution_list reports of each /attributions/<name> result. */
typedef struct {
    char name[256];
    char method[128];
    char axes[256];
    int ndim;
    int64_t shape[3];
} ks_attribution_info;

/* The results under /attributions of a dump or an attribution file, by name (none: *n 0).
 * *out is malloc'd; the caller frees it. */
ks_status ks_attribution_list(const char *path, ks_attribution_info **out, int *n, ks_error *err);

/* ---------------------------------------------------------------- selection (exposed for tests) */

/* Parse a hook selection against a model shape: selected[point * (n_layers + 1) + layer + 1]
 * for every hook point (layer -1 for non-block points) is set true when matched. */
ks_status ks_select_hooks(const char *sel, const ks_config *c, bool *selected, ks_error *err);
/* Positions of a prompt of n tokens that a position selection keeps, ascending, no
 * duplicates: keep[i] for i < n. Returns the count through *n_keep. */
ks_status ks_select_positions(const char *sel, int n, bool *keep, int *n_keep, ks_error *err);
/* Head list: "all"/NULL gives 0..n_heads-1. heads has room for n_heads. */
ks_status ks_select_heads(const char *sel, int n_heads, int *heads, int *n_out, ks_error *err);

#endif
