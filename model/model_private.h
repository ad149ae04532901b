/* model_private.h — struct bodies and internal helpers shared inside model/.
 * Not installed, not included outside model/ except by tests and fuzz targets. */
#ifndef KS_MODEL_PRIVATE_H
#define KS_MODEL_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ks_model.h"

/* Hot loops (decode's dot products, weight conversion) are built for several vector widths and
 * the loader picks the widest the CPU has (GCC function multiversioning through an ifunc), so
 * a portable binary still streams memory with AVX-512 or AVX2 where it runs on them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(KS_FUZZING)
#define KS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KS_VECTOR_CLONES
#endif

/* A growable byte string, NUL-terminated once anything was appended; free(p) releases it.
 * ks_strbuf_append returns false when memory runs out (or the size would overflow). */
typedef struct {
    char *p;
    size_t len, cap;
} ks_strbuf;
bool ks_strbuf_append(ks_strbuf *b, const void *s, size_t n);

/* Storage dtypes a checkpoint may hold. X(enum, name, block elements, block bytes).
 * Append only: the values are never renumbered. */
#define KS_DTYPE_LIST(X)               \
    X(KS_DTYPE_F32, "f32", 1, 4)       \
    X(KS_DTYPE_F16, "f16", 1, 2)       \
    X(KS_DTYPE_BF16, "bf16", 1, 2)     \
    X(KS_DTYPE_Q8_0, "q8_0", 32, 34)   \
    X(KS_DTYPE_Q4_0, "q4_0", 32, 18)   \
    X(KS_DTYPE_Q4_K, "q4_k", 256, 144) \
    X(KS_DTYPE_Q4_1, "q4_1", 32, 20)   \
    X(KS_DTYPE_Q5_0, "q5_0", 32, 22)   \
    X(KS_DTYPE_Q5_1, "q5_1", 32, 24)   \
    X(KS_DTYPE_Q2_K, "q2_k", 256, 84)  \
    X(KS_DTYPE_Q3_K, "q3_k", 256, 110) \
    X(KS_DTYPE_Q5_K, "q5_k", 256, 176) \
    X(KS_DTYPE_Q6_K, "q6_k", 256, 210)

typedef enum {
#define KS_X(e, s, be, bb) e,
    KS_DTYPE_LIST(KS_X)
#undef KS_X
    KS_DTYPE_COUNT
} ks_dtype;

const char *ks_dtype_name(ks_dtype t);
int ks_dtype_block_elems(ks_dtype t);
int ks_dtype_block_bytes(ks_dtype t);
/* Bytes of n elements; KS_ERR_RANGE on overflow or n not a multiple of the block size. */
ks_status ks_dtype_nbytes(ks_dtype t, uint64_t n, uint64_t *out, ks_error *err);
/* Convert n elements of src (dtype t) to f32. */
void ks_dtype_to_f32(ks_dtype t, const void *src, float *dst, size_t n);
/* f32 -> IEEE half / bfloat16, round to nearest even, overflow to inf; a NaN stays a NaN with
 * its sign, the quiet bit set and the top payload bits kept (half: 0x7e00 | payload >> 13, what
 * x86's F16C gives; bf16: the top 16 bits | 0x40). F16C / AVX2 where the CPU has them (checked
 * at run time), with the same bits as the portable _scalar versions, which tests compare. */
void ks_f32_to_f16(const float *in, uint16_t *out, size_t n);
void ks_f32_to_bf16(const float *in, uint16_t *out, size_t n);
void ks_f32_to_f16_scalar(const float *in, uint16_t *out, size_t n);
void ks_f32_to_bf16_scalar(const float *in, uint16_t *out, size_t n);
/* What the CPU and the OS offer (cpuid + xgetbv), computed once; false off x86-64. */
bool ks_cpu_f16c(void);
bool ks_cpu_avx2_fma(void); /* AVX2, FMA and F16C */

/* A weight matrix as the checkpoint stores it: row-major (rows, cols) in f32, f16, bf16 or a
 * GGML block format (each row whole blocks), used in place from the file mapping. The
 * forward converts rows to f32 as it streams them, so a 7B f16 model needs 14 GB, not 28. */
typedef struct {
    const void *data;
    ks_dtype dtype;
} ks_weight;

/* Rotary inverse frequencies (head_dim / 2 of them) for a forward call that ends at sequence
 * length seq_len: rope_theta, and the config's rope scaling (linear, llama3, dynamic NTK). */
void ks_rope_inv_freq(const ks_config *c, int seq_len, float *inv_freq);

/* Bytes of one row of cols elements of dtype t (cols a multiple of its block size). */
size_t ks_dtype_row_bytes(ks_dtype t, size_t cols);

/* Weights of one block. Every matrix is row-major (out, in): y = W x. Norm vectors are f32
 * (converted at load when stored otherwise). */
typedef struct {
    const float *attn_norm; /* (dim) */
    ks_weight wq;           /* (n_heads * head_dim, dim) */
    ks_weight wk;           /* (n_kv_heads * head_dim, dim) */
    ks_weight wv;           /* (n_kv_heads * head_dim, dim) */
    ks_weight wo;           /* (dim, n_heads * head_dim) */
    const float *ffn_norm;  /* (dim) */
    ks_weight w_gate;       /* (hidden_dim, dim)  HF gate_proj, GGUF ffn_gate, llama2.c w1 */
    ks_weight w_down;       /* (dim, hidden_dim)  HF down_proj, GGUF ffn_down, llama2.c w2 */
    ks_weight w_up;         /* (hidden_dim, dim)  HF up_proj,   GGUF ffn_up,   llama2.c w3 */
} ks_layer_weights;

typedef struct {
    void *addr;
    size_t len;
} ks_mapping;

struct ks_model {
    ks_config cfg;
    ks_weight tok_embeddings;    /* (vocab, dim) */
    const float *final_norm;     /* (dim) */
    ks_weight output;            /* (vocab, dim); == tok_embeddings when tied */
    ks_layer_weights *layers;    /* (n_layers) */
    ks_tokenizer *tok;           /* owned; NULL when none */

    /* storage: file mappings and heap buffers, released by ks_model_close */
    ks_mapping *maps;
    int n_maps, cap_maps;
    void **owned;
    int n_owned, cap_owned;
    size_t mapped_bytes; /* weight bytes used straight from a mapping */
    size_t n_params;

    char *path;
    const char *format;      /* static string */
    char weight_dtype[16];
    char template_hint[16];
    bool no_mmap;
    bool f32_weights; /* convert every matrix to f32 at load (ks_model_options.f32_weights) */
    bool no_weights;  /* config only, parameters allocated as f32 zeros (ks_model_options) */
    const char *tokenizer_path; /* borrowed from the options during ks_model_open; NULL after */
};

/* Allocate an empty model (cfg zeroed, bos/eos -1). */
ks_status ks_model_alloc(ks_model **out, ks_error *err);
/* Validate cfg (positive sizes, divisibility, overflow-free products); names the field and
 * `source` (a file) in the error. */
ks_status ks_config_validate(const ks_config *cfg, const char *source, ks_error *err);
/* Allocate m->layers for cfg.n_layers. */
ks_status ks_model_alloc_layers(ks_model *m, ks_error *err);
/* Map a whole file read-only (or read it when m->no_mmap); the region is owned by m. */
ks_status ks_model_map_file(ks_model *m, const char *path, const uint8_t **data, size_t *len,
                            ks_error *err);
/* Take ownership of a malloc'd buffer. */
ks_status ks_model_own(ks_model *m, void *p, ks_error *err);
/* Bind a tensor of n elements at src (dtype t) to *dst as f32: aliases src when it is f32
 * and 4-byte aligned, otherwise converts into a new owned buffer. `what` names the tensor
 * and file for errors. Adds n to m->n_params. */
ks_status ks_model_bind(ks_model *m, ks_dtype t, const void *src, size_t n, const float **dst,
                        const char *what, ks_error *err);
/* Bind a (rows, cols) matrix at src (dtype t) to *dst: kept in its dtype and used in place
 * (f32 needs 4-byte alignment, the others are read bytewise), or converted to an owned f32
 * buffer when m->f32_weights asks for it. Adds rows * cols to m->n_params. */
ks_status ks_model_bind_matrix(ks_model *m, ks_dtype t, const void *src, size_t rows, size_t cols,
                               ks_weight *dst, const char *what, ks_error *err);
/* Whether [p, p + bytes) lies inside one of m's file mappings (read-only memory). */
bool ks_model_in_mapping(const ks_model *m, const void *p, size_t bytes);
/* Allocate every parameter of m->cfg as owned f32 zeros (ks_model_options.no_weights);
 * cfg.tie_embeddings decides whether the head is its own tensor. */
ks_status ks_model_alloc_zero_weights(ks_model *m, ks_error *err);
/* Check every weight pointer is set; names the first missing tensor. */
ks_status ks_model_check_complete(const ks_model *m, const char *source, ks_error *err);

/* The loaders. Each fills an allocated model: cfg, weights, tokenizer when the file
 * carries one, format, weight_dtype, template_hint. */
ks_status ks_load_hf(ks_model *m, const char *dir, ks_error *err);
ks_status ks_load_gguf(ks_model *m, const char *path, ks_error *err);
ks_status ks_load_llama2c(ks_model *m, const char *path, ks_error *err);

/* ---------------------------------------------------------------- loader internals
 * Shared by safetensors.c, hf.c, gguf.c and llama2c.c (and their fuzz targets). */

/* One tensor of a checkpoint, as described by its file, before it is bound. */
typedef struct {
    char *name;          /* owned, NUL-terminated */
    ks_dtype dtype;
    int n_dims;          /* 1..4 */
    uint64_t dims[4];    /* outermost first (row-major); GGUF's ne[] is stored reversed here */
    uint64_t n_elems;
    uint64_t offset;     /* absolute byte offset of the data in its file */
    uint64_t nbytes;
    const uint8_t *data; /* the data, inside the file's bytes */
    const char *source;  /* the file it came from (borrowed; lives as long as the table) */
    bool used;
} ks_tensor_info;

typedef struct {
    ks_tensor_info *v;
    size_t n, cap;
} ks_tensor_table;

/* Append ti (the table takes ownership of ti->name, also on failure). */
ks_status ks_tensor_table_push(ks_tensor_table *tab, ks_tensor_info *ti, ks_error *err);
void ks_tensor_table_free(ks_tensor_table *tab);
/* Tensors v[from..n) come from one file of file_len bytes: check each lies inside it and
 * that no two overlap (sorted by offset). */
ks_status ks_tensor_table_check_layout(ks_tensor_table *tab, size_t from, uint64_t file_len,
                                       const char *source, ks_error *err);
/* Sort by name and reject duplicates; required before ks_tensor_table_find. */
ks_status ks_tensor_table_index(ks_tensor_table *tab, ks_error *err);
ks_tensor_info *ks_tensor_table_find(ks_tensor_table *tab, const char *name);

typedef enum {
    KS_NAMING_HF = 0,   /* model.layers.N.self_attn.q_proj.weight … */
    KS_NAMING_GGUF = 1, /* blk.N.attn_q.weight … */
} ks_naming;

/* Bind every weight m->cfg expects from an indexed table: each must be present with its
 * expected shape; the output head may be absent (then tied; cfg.tie_embeddings set).
 * Tensors left over are an error unless known to be unused (e.g. rotary inv_freq). */
ks_status ks_model_bind_table(ks_model *m, ks_tensor_table *tab, ks_naming naming,
                              ks_error *err);

/* Checked little-endian reads from a byte range; each returns false when out of bounds. */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
} ks_reader;
bool ks_reader_bytes(ks_reader *r, size_t n, const uint8_t **out);
bool ks_reader_u8(ks_reader *r, uint8_t *v);
bool ks_reader_u32(ks_reader *r, uint32_t *v);
bool ks_reader_u64(ks_reader *r, uint64_t *v);

/* Open the tokenizer at path into m->tok and check it against the config. */
ks_status ks_model_load_tokenizer(ks_model *m, const char *path, ks_error *err);
/* Guess a chat template from a free-form text (model name, path, chat template). */
const char *ks_guess_template(const char *text);

/* Memory entry points (used by the loaders and the fuzz targets). `source` names the file
 * in error messages. The model keeps pointers into data: data must outlive it. */
ks_status ks_safetensors_parse(const uint8_t *data, size_t len, const char *source,
                               ks_tensor_table *tab, ks_error *err);
/* Parse config.json text into cfg (HF field names in errors); hint receives a template
 * guess ("plain" when none). */
ks_status ks_hf_config_parse(const char *json, size_t len, const char *source, ks_config *cfg,
                             char hint[16], ks_error *err);
ks_status ks_gguf_load_mem(ks_model *m, const uint8_t *data, size_t len, const char *source,
                           ks_error *err);
ks_status ks_llama2c_load_mem(ks_model *m, const uint8_t *data, size_t len, const char *source,
                              ks_error *err);
/* The tokenizer embedded in a GGUF file (also vocab-only files with 0 tensors). */
ks_status ks_gguf_open_tokenizer(const char *path, ks_tokenizer **out, ks_error *err);
ks_status ks_gguf_tokenizer_mem(const uint8_t *data, size_t len, const char *source,
                                ks_tokenizer **out, ks_error *err);

/* ---------------------------------------------------------------- tokenizer internals
 * Shared by tokenizer.c, tokenizer_load.c, gguf.c and the tokenizer tests/fuzz targets. */

#define KS_TOKENIZER_MAX_VOCAB (1 << 24)

/* Everything a tokenizer is built from. Arrays are copied; pieces need not be NUL-terminated
 * (lens gives their byte lengths). scores and types may be NULL (0, inferred). An id of -1
 * means none; unk_id -1 takes the piece of type UNKNOWN. byte_fallback -1 = on when any
 * <0xNN> piece exists. source names the file in error messages. */
typedef struct {
    int n_vocab;
    const char *const *pieces;
    const size_t *lens;
    const float *scores;
    const int *types;
    int bos_id, eos_id, unk_id;
    int byte_fallback;
    bool add_dummy_prefix;
    bool remove_extra_whitespaces;
    bool escape_whitespaces;    /* ' ' -> U+2581 (SentencePiece default: true) */
    bool split_on_space_symbol; /* no merge across a U+2581 (HF Metaspace split=true) */
    const char *unk_surface;    /* NULL = " \u2047 " */
    size_t unk_surface_len;
    const char *source;
} ks_tokenizer_spec;

ks_status ks_tokenizer_build(const ks_tokenizer_spec *spec, ks_tokenizer **out, ks_error *err);
/* Switch t to HF-style BPE: merge (left[r], right[r]) has rank r (lower merges first). */
ks_status ks_tokenizer_set_merges(ks_tokenizer *t, int n_merges, const int *left, const int *right,
                                  bool fuse_unk, const char *source, ks_error *err);
int ks_tokenizer_unk(const ks_tokenizer *t);
/* Load a tokenizer from bytes: GGUF, SentencePiece protobuf, tokenizer.json or llama2.c
 * .bin, recognised from the content. Every parse failure is KS_ERR_FORMAT (or
 * KS_ERR_UNSUPPORTED for a well-formed model of a kind not supported) naming source and
 * the field. The data may be freed afterwards. */
ks_status ks_tokenizer_from_memory(const uint8_t *data, size_t len, const char *source,
                                   ks_tokenizer **out, ks_error *err);

#endif
