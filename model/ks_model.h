/* ks_model.h — the public interface of model/: load LLaMA-family checkpoints, tokenize,
 * run the forward pass with hook points, sample and generate, format chat prompts.
 *
 * Ownership: every *_open/_create returns a handle through an out-parameter that the
 * caller frees with the matching *_close/_free; all of those accept NULL. Strings returned
 * by accessors are owned by the handle and live as long as it does.
 *
 * Threading: a ks_model is read-only once loaded and may be shared by many sessions on
 * many threads; a ks_session is used by one thread at a time. */
#ifndef KS_MODEL_H
#define KS_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ks_status.h"

/* ---------------------------------------------------------------- config */

typedef enum {
    KS_ROPE_SCALING_NONE = 0,
    KS_ROPE_SCALING_LINEAR = 1,
    KS_ROPE_SCALING_DYNAMIC = 2, /* dynamic NTK, as HF "dynamic" */
    KS_ROPE_SCALING_LLAMA3 = 3,
} ks_rope_scaling;

/* How rotary pairs are laid out inside a head. Meta/llama2.c/GGUF checkpoints rotate
 * adjacent pairs (2i, 2i+1); HF checkpoints were permuted by the conversion script to rotate
 * (i, i + head_dim/2). We keep each checkpoint's own layout rather than permuting weights,
 * so weights stay mmap'd; outputs are identical, only the order inside hook_q/hook_k differs. */
typedef enum {
    KS_ROPE_STYLE_INTERLEAVED = 0,
    KS_ROPE_STYLE_HALF = 1,
} ks_rope_style;

typedef struct {
    int dim;          /* d_model */
    int hidden_dim;   /* d_mlp (SwiGLU inner size) */
    int n_layers;
    int n_heads;      /* query heads */
    int n_kv_heads;   /* key/value heads (GQA when < n_heads) */
    int head_dim;     /* usually dim / n_heads */
    int vocab_size;
    int max_seq_len;  /* max_position_embeddings / context_length */
    float rms_eps;
    float rope_theta;
    ks_rope_style rope_style;
    ks_rope_scaling rope_scaling;
    float rope_factor;
    float rope_low_freq_factor;  /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int rope_orig_max_pos;       /* llama3: original_max_position_embeddings; dynamic: max_seq_len */
    bool tie_embeddings;
    int bos_id; /* -1 when none */
    int eos_id; /* -1 when none */
} ks_config;

/* ---------------------------------------------------------------- tokenizer */

typedef struct ks_tokenizer ks_tokenizer;

typedef enum {
    KS_TOKEN_NORMAL = 1,
    KS_TOKEN_UNKNOWN = 2,
    KS_TOKEN_CONTROL = 3,
    KS_TOKEN_USER_DEFINED = 4,
    KS_TOKEN_UNUSED = 5,
    KS_TOKEN_BYTE = 6,
} ks_token_type;

/* Load a tokenizer from a file: SentencePiece tokenizer.model (protobuf), HF tokenizer.json,
 * or a llama2.c tokenizer .bin; the kind is recognised from the content. */
ks_status ks_tokenizer_open(const char *path, ks_tokenizer **out, ks_error *err);
/* Build a SentencePiece-BPE tokenizer from a vocabulary (pieces in SentencePiece spelling,
 * i.e. U+2581 for spaces). Arrays are copied. types may be NULL (inferred). */
ks_status ks_tokenizer_from_vocab(int n_vocab, const char *const *pieces, const size_t *piece_lens,
                                  const float *scores, const int *types, int bos_id, int eos_id,
                                  int unk_id, bool add_dummy_prefix, ks_tokenizer **out,
                                  ks_error *err);
void ks_tokenizer_free(ks_tokenizer *tok);
/* Write tok as a SentencePiece model file (tokenizer.model: the ModelProto protobuf with its
 * pieces, scores and types, BPE, and the normalizer flags), which ks_tokenizer_open and
 * SentencePiece (so HF's LlamaTokenizer) read back. KS_ERR_UNSUPPORTED for a tokenizer with
 * explicit merges (from a tokenizer.json: copy that file instead). */
ks_status ks_tokenizer_save_spm(const ks_tokenizer *tok, const char *path, ks_error *err);

int ks_tokenizer_vocab_size(const ks_tokenizer *tok);
int ks_tokenizer_bos(const ks_tokenizer *tok); /* -1 when none */
int ks_tokenizer_eos(const ks_tokenizer *tok); /* -1 when none */
/* Piece of a token as stored (SentencePiece spelling), NUL-terminated; NULL if id invalid. */
const char *ks_tokenizer_piece(const ks_tokenizer *tok, int id);
ks_token_type ks_tokenizer_type(const ks_tokenizer *tok, int id);

/* Encode UTF-8 text. add_bos prepends BOS. Control-token look-alikes in text (e.g. "</s>")
 * are encoded as plain text, as SentencePiece does. *ids is malloc'd; caller frees. */
ks_status ks_tokenizer_encode(const ks_tokenizer *tok, const char *text, size_t len, bool add_bos,
                              int **ids, int *n_ids, ks_error *err);
/* As ks_tokenizer_encode, with the dummy-prefix space under the caller's control: false
 * encodes a piece of text that continues a sequence (e.g. after a control token in a chat
 * prompt), so no leading U+2581 is added even when the model's normalizer adds one. */
ks_status ks_tokenizer_encode_ex(const ks_tokenizer *tok, const char *text, size_t len,
                                 bool add_bos, bool add_dummy_prefix, int **ids, int *n_ids,
                                 ks_error *err);
/* Decode ids to UTF-8 as SentencePiece's DecodeIds does (byte pieces joined, leading dummy
 * space removed, control tokens dropped). *text is malloc'd and NUL-terminated. */
ks_status ks_tokenizer_decode(const ks_tokenizer *tok, const int *ids, int n_ids, char **text,
                              size_t *len, ks_error *err);
/* The text one token adds when streamed after prev (-1 at start): handles the dummy-prefix
 * space and byte pieces. Writes at most cap-1 bytes + NUL into buf; returns bytes written.
 * Byte pieces are emitted raw, so a multi-byte character may span several calls. */
size_t ks_tokenizer_token_text(const ks_tokenizer *tok, int prev, int id, char *buf, size_t cap);

/* ---------------------------------------------------------------- model */

typedef struct ks_model ks_model;

typedef struct {
    const char *tokenizer_path; /* overrides/provides the tokenizer (llama2.c needs one) */
    bool no_mmap;               /* read weights into memory instead of mapping */
    bool f32_weights;           /* convert f16/bf16/quantised matrices to f32 at load: faster
                                   decode, 2-8x the memory (default: compute from the stored
                                   dtype, converting rows on the fly) */
    bool no_weights;            /* HF directories only: read config.json (and the tokenizer)
                                   but no weights; every parameter is allocated as f32 zeros that
                                   the model owns, writable through ks_model_param_mut (training
                                   from scratch: the caller initialises them) */
} ks_model_options;

/* Open MODEL: an HF directory (config.json + safetensors), a .gguf file, or a llama2.c
 * .bin checkpoint. PyTorch pickles are refused. opts may be NULL. */
ks_status ks_model_open(const char *path, const ks_model_options *opts, ks_model **out,
                        ks_error *err);
void ks_model_close(ks_model *m);

const ks_config *ks_model_config(const ks_model *m);
/* NULL when the model has no tokenizer (llama2.c without --tokenizer). */
const ks_tokenizer *ks_model_tokenizer(const ks_model *m);
/* "hf-safetensors", "gguf", "llama2c" */
const char *ks_model_format(const ks_model *m);
/* Storage dtype of the weights as loaded ("f32", "f16", "bf16", "q8_0", "mixed"…). */
const char *ks_model_weight_dtype(const ks_model *m);
/* Number of parameters; bytes of weights used in place from the file mapping (the rest were
 * converted or read into memory). */
size_t ks_model_param_count(const ks_model *m);
size_t ks_model_mapped_bytes(const ks_model *m);
/* Chat template suggested by the checkpoint ("koala", "vicuna", "llama2", … or "plain"). */
const char *ks_model_template_hint(const ks_model *m);

/* ---------------------------------------------------------------- parameters by name
 * (params.c). The model's tensors under their HF names (model.embed_tokens.weight,
 * model.layers.{l}.self_attn.q_proj.weight, …, model.norm.weight, lm_head.weight when
 * untied), in the model's own layout: row-major (out, in) matrices, q/k rows in the
 * checkpoint's rotary layout (ks_config.rope_style). */

/* Number of distinct parameter tensors (lm_head.weight not counted when tied). */
int ks_model_tensor_count(const ks_model *m);
/* Name (written into name, cap bytes) and shape of tensor i (0 <= i < count), in a fixed order:
 * embeddings, then each layer's input_layernorm, q, k, v, o, post_attention_layernorm, gate,
 * up, down, then the final norm and the untied head. ndim 1 (shape[0] only) or 2.
 * KS_ERR_RANGE for i out of range. */
ks_status ks_model_tensor_info(const ks_model *m, int i, char *name, size_t cap,
                               int64_t shape[2], int *ndim);
/* Read-only f32 view of a parameter by HF name; n receives its element count. NULL when the
 * name is unknown, when the tensor is not stored in f32 (open with f32_weights), and for
 * lm_head.weight of a tied model. */
const float *ks_model_param(const ks_model *m, const char *hf_name, size_t *n);
/* Writable f32 view of a parameter: only where the model holds its own f32 copy in memory
 * (opened with no_mmap and f32_weights, or no_weights); NULL for weights used in place from
 * a file mapping (those stay read-only), for other dtypes and unknown names. Writing changes
 * what every later forward (sessions, ks_grad) computes; no session may be running. */
float *ks_model_param_mut(ks_model *m, const char *hf_name, size_t *n);

/* ---------------------------------------------------------------- hooks */

/* Hook points, named as TransformerLens names them. X(enum, name suffix, per_layer). */
#define KS_HOOK_LIST(X)                                  \
    X(KS_HOOK_EMBED, "hook_embed", 0)                    \
    X(KS_HOOK_RESID_PRE, "hook_resid_pre", 1)            \
    X(KS_HOOK_LN1_NORMALIZED, "ln1.hook_normalized", 1)  \
    X(KS_HOOK_ATTN_Q, "attn.hook_q", 1)                  \
    X(KS_HOOK_ATTN_K, "attn.hook_k", 1)                  \
    X(KS_HOOK_ATTN_V, "attn.hook_v", 1)                  \
    X(KS_HOOK_ATTN_ROT_Q, "attn.hook_rot_q", 1)          \
    X(KS_HOOK_ATTN_ROT_K, "attn.hook_rot_k", 1)          \
    X(KS_HOOK_ATTN_SCORES, "attn.hook_attn_scores", 1)   \
    X(KS_HOOK_ATTN_PATTERN, "attn.hook_pattern", 1)      \
    X(KS_HOOK_ATTN_Z, "attn.hook_z", 1)                  \
    X(KS_HOOK_ATTN_OUT, "hook_attn_out", 1)              \
    X(KS_HOOK_RESID_MID, "hook_resid_mid", 1)            \
    X(KS_HOOK_LN2_NORMALIZED, "ln2.hook_normalized", 1)  \
    X(KS_HOOK_MLP_PRE, "mlp.hook_pre", 1)                \
    X(KS_HOOK_MLP_PRE_LINEAR, "mlp.hook_pre_linear", 1)  \
    X(KS_HOOK_MLP_POST, "mlp.hook_post", 1)              \
    X(KS_HOOK_MLP_OUT, "hook_mlp_out", 1)                \
    X(KS_HOOK_RESID_POST, "hook_resid_post", 1)          \
    X(KS_HOOK_LN_FINAL_NORMALIZED, "ln_final.hook_normalized", 0) \
    X(KS_HOOK_LOGITS, "logits", 0)

typedef enum {
#define KS_X(e, s, l) e,
    KS_HOOK_LIST(KS_X)
#undef KS_X
    KS_HOOK_COUNT
} ks_hook_point;

/* The tensor a hook sees. data is row-major with the TransformerLens axis order, batch
 * axis dropped: per-token tensors are [pos, ...] (hook_q: [pos, head, d_head]); attention
 * scores/pattern are [head, query_pos, key_pos] where key_pos spans the whole context so
 * far (cached keys included). pos0 is the absolute position of the first query row. */
typedef struct {
    const char *name;     /* full name, e.g. "blocks.3.attn.hook_pattern" */
    ks_hook_point point;
    int layer;            /* -1 for points outside the blocks */
    float *data;          /* NULL when asking */
    int ndim;
    int64_t shape[4];
    int pos0;
} ks_hook_tensor;

/* Hook callback. Called first with ask=true (data NULL): return true to be handed the
 * tensor. Then called with ask=false and data set: read it, or edit it in place (the edit
 * flows into the rest of the forward); the return value is then ignored.
 * Not called at all when no hook is installed, so an unhooked forward pays nothing. */
typedef bool (*ks_hook_fn)(const ks_hook_tensor *t, bool ask, void *user);

/* ---------------------------------------------------------------- gradients (backward.c) */

/* A forward that keeps its activations, and the backward through it: gradients of a scalar
 * objective with respect to every parameter and every hook point, in f32 activations on the
 * CPU or a CUDA device. Weights are used in their stored dtype, as the forward uses them (a
 * 16-bit model on CUDA runs its GEMMs on tensor cores with f32 accumulation); parameter
 * gradients are f32. One sequence of T tokens at a time, no KV cache; memory grows with T
 * (each layer keeps ~9 vectors per token and its [head, query, key] pattern). */
typedef struct ks_grad ks_grad;

typedef struct {
    bool param_grads; /* keep and accumulate every parameter's gradient (false: only the
                         activation gradients handed to hooks: attribution, half the memory) */
    const char *backend; /* "cpu" (NULL: the same), "cpu-copy" (the device path on the CPU,
                            for tests) or "cuda" (device 0); as ks_session_options.backend */
    /* with param_grads: keep only the gradients of the parameters (HF names) this returns true
     * for; NULL keeps all. The others cost nothing: no memory, no dW products (LoRA trains the
     * attention projections only), and ks_grad_param returns NULL for them. */
    bool (*param_filter)(const char *hf_name, void *user);
    void *param_filter_user;
} ks_grad_options;

/* opts NULL: parameter gradients on, CPU. KS_ERR_BACKEND where the backend cannot start (no
 * CUDA device, a build without CUDA). */
ks_status ks_grad_create(const ks_model *m, const ks_grad_options *opts, ks_grad **out,
                         ks_error *err);
void ks_grad_free(ks_grad *g);
const ks_model *ks_grad_model(const ks_grad *g);
/* The backend's name ("cpu", "cpu-copy", "cuda"). */
const char *ks_grad_backend(const ks_grad *g);
/* Row id of the token embedding table when it is stored in f32; NULL otherwise or when id is
 * out of range. */
const float *ks_model_embedding_row(const ks_model *m, int id);
/* Row id of the token embedding table converted to f32 (dim floats into out), whatever its
 * dtype; KS_ERR_RANGE for an id outside the vocabulary. */
ks_status ks_model_embedding_f32(const ks_model *m, int id, float *out, ks_error *err);
/* forward: called during ks_grad_forward as a session's hook is (same names, shapes, edits);
 * backward: called during ks_grad_backward with d objective / d (that tensor), in reverse
 * order; it may edit the gradient (e.g. add a direction), and the backward goes on with it. */
void ks_grad_set_hooks(ks_grad *g, ks_hook_fn forward, ks_hook_fn backward, void *user);
/* Run tokens[0..T) from position 0, keeping what the backward needs. */
ks_status ks_grad_forward(ks_grad *g, const int *tokens, int T, ks_error *err);
/* The logits (T, V) of the last forward (host memory); NULL before one or after a failed one. */
const float *ks_grad_logits(const ks_grad *g, int *T, int *V);
/* Back from dlogits (T, V) = d objective / d logits: parameter gradients += (until
 * ks_grad_zero), activation gradients to the backward hook. */
ks_status ks_grad_backward(ks_grad *g, const float *dlogits, ks_error *err);
void ks_grad_zero(ks_grad *g);
/* The gradient of a parameter by its HF name (model.layers.0.self_attn.q_proj.weight, …,
 * model.embed_tokens.weight, model.norm.weight, lm_head.weight), in that tensor's layout; n
 * receives its element count. NULL when unknown, when parameter gradients are off, and for
 * lm_head.weight of a tied model (its gradient is in the embedding's). On a device backend the
 * pointer is into a host copy of all parameter gradients (made on first use, stable for the
 * ks_grad's life; NULL when host memory for it is short); this call refreshes the tensor's part
 * of it, ks_grad_sync_params all of it. */
const float *ks_grad_param(const ks_grad *g, const char *hf_name, size_t *n);
/* Device backends: copy every parameter gradient into the host copy ks_grad_param points into
 * (after the backward passes of an optimizer step). KS_OK and nothing to do where gradients
 * are host memory. */
ks_status ks_grad_sync_params(ks_grad *g, ks_error *err);
/* The model's weights were written in host memory (ks_model_param_mut: an optimizer step): a
 * device backend copies them again before the next forward. KS_OK and nothing to do on the CPU. */
ks_status ks_grad_weights_changed(ks_grad *g, ks_error *err);

/* Objectives: each returns its value and writes d value / d logits into dlogits (T, V) when
 * not NULL. logprob: the sum over positions t with targets[t] >= 0 of log p(targets[t] | tokens
 * up to t) (a continuation's log-probability, or minus the loss of a span). logit_diff:
 * logits[pos][a] − logits[pos][b] (e.g. " he" vs " she"); NaN for an index out of range. */
double ks_objective_logprob(const float *logits, int T, int V, const int *targets,
                            float *dlogits);
double ks_objective_logit_diff(const float *logits, int T, int V, int pos, int a, int b,
                               float *dlogits);

/* Full name of a hook point ("blocks.{layer}.<suffix>" or the bare name). Returns the
 * length, like snprintf. */
int ks_hook_name(ks_hook_point p, int layer, char *buf, size_t cap);
/* Parse a full name; KS_ERR_NOT_FOUND when it names no hook point. */
ks_status ks_hook_parse(const char *name, ks_hook_point *p, int *layer);
/* Floats per token of a per-token hook point (hook_q: n_heads × head_dim, …); 0 for the
 * attention scores and pattern, which are not per token. */
int64_t ks_hook_row_size(const ks_config *c, ks_hook_point p);

/* ---------------------------------------------------------------- session (forward) */

typedef struct ks_session ks_session;

typedef struct {
    const char *backend; /* "cpu" (NULL: the same), or "cpu-copy": the CPU backend with its
                            memory treated as device memory, to test that path without a GPU */
    int max_seq_len; /* KV cache length; 0 = the model's max_seq_len */
    int max_batch;   /* tokens per prefill chunk (bounds activation memory); 0 = 512 */
    int n_threads;   /* 0 = all cores */
} ks_session_options;

/* A session holds the KV cache and activation buffers for one sequence. The model must
 * outlive it. opts may be NULL.
 * Threads: the forward runs on OpenMP's pool (n_threads sets its size for the process) and
 * calls BLAS single-threaded inside it, so creating a session sets OpenBLAS to one thread
 * for the whole process (two thread pools spinning against each other cost 2-3x). */
ks_status ks_session_create(const ks_model *m, const ks_session_options *opts, ks_session **out,
                            ks_error *err);
void ks_session_free(ks_session *s);

/* Install (or with fn NULL remove) the hook callback. */
void ks_session_set_hook(ks_session *s, ks_hook_fn fn, void *user);
/* Promise that the installed hook only reads the tensors it is handed (recording, probing):
 * a device backend then does not copy them back after each hook, and copies them to the host
 * without waiting (the copies overlap the layers after them): the hook is still asked at once,
 * but handed the tensors later, in order, by the end of the chunk (of ks_session_forward's
 * max_batch tokens) they belong to. Editing a tensor after this promise changes nothing on a
 * device backend (the edit is lost) and is undefined on the CPU. ks_session_set_hook resets
 * the promise. */
void ks_session_set_hook_read_only(ks_session *s, bool read_only);
/* Called after each chunk of a ks_session_forward call that spans more than one chunk, with
 * the tokens done and the call's total: progress for long prompts. fn NULL removes it. */
typedef void (*ks_progress_fn)(int done, int total, void *user);
void ks_session_set_progress(ks_session *s, ks_progress_fn fn, void *user);
/* Forget the cached context (position back to 0). */
void ks_session_reset(ks_session *s);
/* Keep only the first n cached tokens (n <= pos), e.g. to reuse a shared prompt prefix. */
void ks_session_truncate(ks_session *s, int n);
/* Number of tokens in the cache. */
int ks_session_pos(const ks_session *s);
const ks_model *ks_session_model(const ks_session *s);
/* The session's context length (KV cache size) and prefill chunk size. */
int ks_session_max_seq(const ks_session *s);
int ks_session_max_batch(const ks_session *s);

typedef enum {
    KS_LOGITS_NONE = 0, /* only fill the cache */
    KS_LOGITS_LAST = 1, /* logits of the last token */
    KS_LOGITS_ALL = 2,  /* logits of every token */
} ks_logits_mode;

/* Run tokens[0..n) at positions pos..pos+n, appending to the cache. logits receives
 * (n, vocab) floats for KS_LOGITS_ALL, (vocab) for KS_LOGITS_LAST; it may be NULL for
 * KS_LOGITS_NONE. Prefill goes through GEMMs in chunks of max_batch tokens. */
ks_status ks_session_forward(ks_session *s, const int *tokens, int n, ks_logits_mode mode,
                             float *logits, ks_error *err);

/* ---------------------------------------------------------------- sampling */

typedef struct {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;
} ks_sampler_params;

typedef struct ks_sampler ks_sampler;
ks_status ks_sampler_create(const ks_sampler_params *p, int vocab_size, ks_sampler **out,
                            ks_error *err);
void ks_sampler_free(ks_sampler *s);
/* Pick the next token from logits (vocab floats; may be modified in place). */
int ks_sampler_sample(ks_sampler *s, float *logits);

/* ---------------------------------------------------------------- generation */

/* Called with the text of each new token as it is produced; return false to stop. */
typedef bool (*ks_stream_fn)(const char *piece, size_t len, int token, void *user);

typedef struct {
    int max_new_tokens;
    ks_sampler_params sampling;
    const char *const *stop_strings; /* NULL-terminated list, may be NULL */
    bool stop_at_eos;
} ks_generate_params;

/* Feed prompt ids (the session's cache is extended), then generate. The generated ids
 * (without the prompt, without the stop token) go to *out_ids (malloc'd) when non-NULL;
 * generated text (stop string removed) to *out_text (malloc'd) when non-NULL. */
ks_status ks_generate(ks_session *s, const int *prompt, int n_prompt, const ks_generate_params *gp,
                      ks_stream_fn stream, void *user, int **out_ids, int *n_out, char **out_text,
                      ks_error *err);

/* Per-token log-probabilities of ids[1..n) given the prefix (ids[0] gets none): logprobs
 * receives n-1 floats. Resets the session. */
ks_status ks_score(ks_session *s, const int *ids, int n, float *logprobs, ks_error *err);
/* log softmax(logits)[id] over vocab logits, summed in f64 (what ks_score reports per token). */
double ks_logprob_of(const float *logits, int vocab, int id);

/* ---------------------------------------------------------------- chat templates */

typedef enum {
    KS_CHAT_PLAIN = 0,
    KS_CHAT_KOALA = 1,
    KS_CHAT_VICUNA = 2,
    KS_CHAT_ALPACA = 3,
    KS_CHAT_LLAMA2 = 4,
} ks_chat_template;

typedef struct {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} ks_chat_message;

ks_status ks_chat_template_parse(const char *name, ks_chat_template *out, ks_error *err);
const char *ks_chat_template_name(ks_chat_template t);
/* Render messages into the prompt text a model of that template expects, ending with the
 * cue for the assistant's next turn. Finished assistant turns are closed with "</s>" where
 * the template says so; the text is then tokenized with control tokens recognised
 * (see ks_chat_encode). *out is malloc'd. */
ks_status ks_chat_render(ks_chat_template t, const ks_chat_message *msgs, int n_msgs, char **out,
                         ks_error *err);
/* Tokenize a rendered chat prompt: "<s>" and "</s>" written by the template become the BOS
 * and EOS ids (never user text: user text is encoded as text). Starts with BOS. */
ks_status ks_chat_encode(const ks_tokenizer *tok, ks_chat_template t, const ks_chat_message *msgs,
                         int n_msgs, int **ids, int *n_ids, ks_error *err);
/* As ks_chat_encode, followed by reply as the start of the assistant's answer (appended to the
 * cue's text, so the two are tokenized as one text, and not closed by an end-of-turn token):
 * the "whole" of a context/continuation pair whose context is ks_chat_encode's output. */
ks_status ks_chat_encode_reply(const ks_tokenizer *tok, ks_chat_template t,
                               const ks_chat_message *msgs, int n_msgs, const char *reply,
                               int **ids, int *n_ids, ks_error *err);

/* A whole conversation for training: the messages rendered without the final cue (the
 * last message is normally the assistant's, closed by the template's end-of-turn token),
 * tokenized exactly as ks_chat_encode tokenizes prompts, and a loss mask (n_ids bytes, 1 =
 * the token is a training target). Assistant turns are the targets: for assistant message i,
 * the tokens after the longest common prefix of the whole encoding with ks_chat_encode of the
 * messages before it (the prompt the model answers at inference), up to and including its
 * end-of-turn token. Everything else (BOS, system text, user turns, the template's
 * scaffolding and cues) is 0. *ids and *mask are malloc'd. */
ks_status ks_chat_encode_train(const ks_tokenizer *tok, ks_chat_template t,
                               const ks_chat_message *msgs, int n_msgs, int **ids,
                               uint8_t **mask, int *n_ids, ks_error *err);

/* ---------------------------------------------------------------- misc */

/* Library version string. */
const char *ks_version(void);

/* CUDA devices the runtime sees: the count (0 with the reason in msg when there is no GPU or
 * driver), or -1 when this build has no CUDA. msg may be NULL. */
int ks_cuda_device_count(char *msg, size_t cap);

#endif
