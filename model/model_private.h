/* model_private.h — struct bodies and internal helpers shared inside model/.
 * Not installed, not included outside model/ except by tests and fuzz targets. */
#ifndef KS_MODEL_PRIVATE_H
#define KS_MODEL_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include "ks_model.h"

/* Storage dtypes a checkpoint may hold. X(enum, name, block elements, block bytes). */
#define KS_DTYPE_LIST(X)              \
    X(KS_DTYPE_F32, "f32", 1, 4)      \
    X(KS_DTYPE_F16, "f16", 1, 2)      \
    X(KS_DTYPE_BF16, "bf16", 1, 2)    \
    X(KS_DTYPE_Q8_0, "q8_0", 32, 34)  \
    X(KS_DTYPE_Q4_0, "q4_0", 32, 18)  \
    X(KS_DTYPE_Q4_K, "q4_k", 256, 144)

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

/* Weights of one block. Every matrix is row-major (out, in): y = W x. All f32: checkpoints
 * in other dtypes are converted once at load, f32 ones are used from the mapping. */
typedef struct {
    const float *attn_norm; /* (dim) */
    const float *wq;        /* (n_heads * head_dim, dim) */
    const float *wk;        /* (n_kv_heads * head_dim, dim) */
    const float *wv;        /* (n_kv_heads * head_dim, dim) */
    const float *wo;        /* (dim, n_heads * head_dim) */
    const float *ffn_norm;  /* (dim) */
    const float *w_gate;    /* (hidden_dim, dim)  HF gate_proj, GGUF ffn_gate, llama2.c w1 */
    const float *w_down;    /* (dim, hidden_dim)  HF down_proj, GGUF ffn_down, llama2.c w2 */
    const float *w_up;      /* (hidden_dim, dim)  HF up_proj,   GGUF ffn_up,   llama2.c w3 */
} ks_layer_weights;

typedef struct {
    void *addr;
    size_t len;
} ks_mapping;

struct ks_model {
    ks_config cfg;
    const float *tok_embeddings; /* (vocab, dim) */
    const float *final_norm;     /* (dim) */
    const float *output;         /* (vocab, dim); == tok_embeddings when tied */
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
/* Check every weight pointer is set; names the first missing tensor. */
ks_status ks_model_check_complete(const ks_model *m, const char *source, ks_error *err);

/* The loaders. Each fills an allocated model: cfg, weights, tokenizer when the file
 * carries one, format, weight_dtype, template_hint. */
ks_status ks_load_hf(ks_model *m, const char *dir, ks_error *err);
ks_status ks_load_gguf(ks_model *m, const char *path, ks_error *err);
ks_status ks_load_llama2c(ks_model *m, const char *path, ks_error *err);

#endif
