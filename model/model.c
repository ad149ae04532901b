/* model.c — the one model type shared by every checkpoint format: allocation, config
 * validation, file mappings and owned buffers, binding weights as f32, the tensor table
 * the safetensors and GGUF loaders fill, the format dispatcher ks_model_open, accessors.
 *
 * Ownership: a ks_model owns its mappings (munmap'd by ks_model_close), its heap buffers
 * (converted weights, files read with no_mmap), its layer array and its tokenizer. */
#include "model_private.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KS_VERSION
#define KS_VERSION "0.0.0"
#endif

/* Sizes beyond these are not LLaMA-family checkpoints; refusing them early keeps every
 * product below far from overflow and every allocation bounded. */
#define KS_MAX_DIM (1 << 20)
#define KS_MAX_LAYERS (1 << 12)
#define KS_MAX_VOCAB (1 << 24)
#define KS_MAX_SEQ (1 << 26)

const char *ks_version(void) { return KS_VERSION; }

/* ---------------------------------------------------------------- allocation */

ks_status ks_model_alloc(ks_model **out, ks_error *err) {
    ks_model *m = calloc(1, sizeof *m);
    if (!m) return ks_error_set(err, KS_ERR_NOMEM, "out of memory allocating the model");
    m->cfg.bos_id = -1;
    m->cfg.eos_id = -1;
    m->format = "";
    snprintf(m->template_hint, sizeof m->template_hint, "plain");
    *out = m;
    return KS_OK;
}

ks_status ks_config_validate(const ks_config *c, const char *source, ks_error *err) {
#define KS_POS(field, max)                                                                 \
    if (c->field <= 0 || c->field > (max))                                                 \
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field '" #field "' = %d is out " \
                            "of range (1..%d)", source, c->field, (int)(max));
    KS_POS(dim, KS_MAX_DIM)
    KS_POS(hidden_dim, 4 * KS_MAX_DIM)
    KS_POS(n_layers, KS_MAX_LAYERS)
    KS_POS(n_heads, KS_MAX_DIM)
    KS_POS(n_kv_heads, KS_MAX_DIM)
    KS_POS(head_dim, KS_MAX_DIM)
    KS_POS(vocab_size, KS_MAX_VOCAB)
    KS_POS(max_seq_len, KS_MAX_SEQ)
#undef KS_POS
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return ks_error_set(err, KS_ERR_FORMAT,
                            "%s: config field 'n_heads' = %d is not a multiple of 'n_kv_heads' = %d",
                            source, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'head_dim' = %d is odd (RoPE "
                            "rotates pairs)", source, c->head_dim);
    int64_t qdim = (int64_t)c->n_heads * c->head_dim;
    if (qdim > 4 * KS_MAX_DIM)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config fields 'n_heads' * 'head_dim' = %lld "
                            "is out of range", source, (long long)qdim);
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps) || c->rms_eps > 1.0f)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'rms_eps' = %g is out of range",
                            source, (double)c->rms_eps);
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'rope_theta' = %g is out of "
                            "range", source, (double)c->rope_theta);
    if ((int)c->rope_style < 0 || c->rope_style > KS_ROPE_STYLE_HALF)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'rope_style' = %d is unknown",
                            source, (int)c->rope_style);
    if ((int)c->rope_scaling < 0 || c->rope_scaling > KS_ROPE_SCALING_LLAMA3)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'rope_scaling' = %d is unknown",
                            source, (int)c->rope_scaling);
    if (c->rope_scaling != KS_ROPE_SCALING_NONE) {
        if (!(c->rope_factor > 0.0f) || !isfinite(c->rope_factor))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'rope_scaling.factor' = %g "
                                "must be positive", source, (double)c->rope_factor);
        if (c->rope_scaling == KS_ROPE_SCALING_LLAMA3 &&
            (!(c->rope_low_freq_factor > 0.0f) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
             !isfinite(c->rope_high_freq_factor)))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: config fields 'rope_scaling.low_freq_factor' "
                                "= %g / 'high_freq_factor' = %g must be positive and increasing",
                                source, (double)c->rope_low_freq_factor,
                                (double)c->rope_high_freq_factor);
        if (c->rope_scaling != KS_ROPE_SCALING_LINEAR &&
            (c->rope_orig_max_pos <= 0 || c->rope_orig_max_pos > KS_MAX_SEQ))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'rope_scaling.original_max_"
                                "position_embeddings' = %d is out of range", source,
                                c->rope_orig_max_pos);
    }
    if (c->bos_id < -1 || c->bos_id >= c->vocab_size)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'bos_id' = %d is outside the "
                            "vocabulary (%d)", source, c->bos_id, c->vocab_size);
    if (c->eos_id < -1 || c->eos_id >= c->vocab_size)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: config field 'eos_id' = %d is outside the "
                            "vocabulary (%d)", source, c->eos_id, c->vocab_size);
    return KS_OK;
}

ks_status ks_model_alloc_layers(ks_model *m, ks_error *err) {
    if (m->cfg.n_layers <= 0 || m->cfg.n_layers > KS_MAX_LAYERS)
        return ks_error_set(err, KS_ERR_RANGE, "n_layers %d out of range", m->cfg.n_layers);
    free(m->layers);
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers) return ks_error_set(err, KS_ERR_NOMEM, "out of memory allocating layers");
    return KS_OK;
}

static ks_status grow(void **arr, int *cap, int need, size_t elem, ks_error *err) {
    if (need <= *cap) return KS_OK;
    int nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    *arr = p;
    *cap = nc;
    return KS_OK;
}

ks_status ks_model_own(ks_model *m, void *p, ks_error *err) {
    ks_status st = grow((void **)&m->owned, &m->cap_owned, m->n_owned + 1, sizeof(void *), err);
    if (st) {
        free(p);
        return st;
    }
    m->owned[m->n_owned++] = p;
    return KS_OK;
}

static const uint8_t ks_empty_file[1];

ks_status ks_model_map_file(ks_model *m, const char *path, const uint8_t **data, size_t *len,
                            ks_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ks_error_set(err, KS_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ks_error_set(err, KS_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    if (n == 0) {
        close(fd);
        *data = ks_empty_file;
        *len = 0;
        return KS_OK;
    }
    ks_status s = KS_OK;
    if (m->no_mmap) {
        uint8_t *buf = malloc(n);
        if (!buf) {
            close(fd);
            return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
        }
        size_t got = 0;
        while (got < n) {
            ssize_t r = read(fd, buf + got, n - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                int e = errno;
                free(buf);
                close(fd);
                return ks_error_set(err, KS_ERR_IO, "%s: read failed: %s", path,
                                    r < 0 ? strerror(e) : "file shrank");
            }
            got += (size_t)r;
        }
        close(fd);
        if ((s = ks_model_own(m, buf, err))) return s;
        *data = buf;
        *len = n;
        return KS_OK;
    }
    void *p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return ks_error_set(err, KS_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    if ((s = grow((void **)&m->maps, &m->cap_maps, m->n_maps + 1, sizeof(ks_mapping), err))) {
        munmap(p, n);
        return s;
    }
    m->maps[m->n_maps].addr = p;
    m->maps[m->n_maps].len = n;
    m->n_maps++;
    *data = p;
    *len = n;
    return KS_OK;
}

bool ks_model_in_mapping(const ks_model *m, const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < m->n_maps; i++) {
        uintptr_t b = (uintptr_t)m->maps[i].addr;
        if (a >= b && a - b <= m->maps[i].len && bytes <= m->maps[i].len - (a - b)) return true;
    }
    return false;
}

static void note_dtype(ks_model *m, ks_dtype t) {
    const char *name = ks_dtype_name(t);
    if (!m->weight_dtype[0])
        snprintf(m->weight_dtype, sizeof m->weight_dtype, "%s", name);
    else if (strcmp(m->weight_dtype, name) != 0)
        snprintf(m->weight_dtype, sizeof m->weight_dtype, "mixed");
}

ks_status ks_model_bind(ks_model *m, ks_dtype t, const void *src, size_t n, const float **dst,
                        const char *what, ks_error *err) {
    if ((int)t < 0 || t >= KS_DTYPE_COUNT)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: dtype %d out of range", what, (int)t);
    if (n % (size_t)ks_dtype_block_elems(t) != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %zu elements is not a multiple of the %s "
                            "block size", what, n, ks_dtype_name(t));
    note_dtype(m, t);
    m->n_params += n;
    if (t == KS_DTYPE_F32 && ((uintptr_t)src % _Alignof(float)) == 0) {
        *dst = src;
        if (ks_model_in_mapping(m, src, n * sizeof(float))) m->mapped_bytes += n * sizeof(float);
        return KS_OK;
    }
    size_t bytes;
    if (__builtin_mul_overflow(n, sizeof(float), &bytes))
        return ks_error_set(err, KS_ERR_RANGE, "%s: %zu elements overflow", what, n);
    float *buf = malloc(bytes ? bytes : 1);
    if (!buf) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory converting %zu elements",
                                  what, n);
    ks_dtype_to_f32(t, src, buf, n);
    ks_status s = ks_model_own(m, buf, err);
    if (s) return s;
    *dst = buf;
    return KS_OK;
}

ks_status ks_model_bind_matrix(ks_model *m, ks_dtype t, const void *src, size_t rows, size_t cols,
                               ks_weight *dst, const char *what, ks_error *err) {
    if ((int)t < 0 || t >= KS_DTYPE_COUNT)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: dtype %d out of range", what, (int)t);
    if (cols % (size_t)ks_dtype_block_elems(t) != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: rows of %zu elements are not whole %s "
                            "blocks of %d", what, cols, ks_dtype_name(t), ks_dtype_block_elems(t));
    size_t n;
    if (__builtin_mul_overflow(rows, cols, &n))
        return ks_error_set(err, KS_ERR_RANGE, "%s: %zu x %zu elements overflow", what, rows, cols);
    bool keep = t == KS_DTYPE_F32 ? ((uintptr_t)src % _Alignof(float)) == 0 : !m->f32_weights;
    if (!keep) {
        const float *f = NULL;
        ks_status s = ks_model_bind(m, t, src, n, &f, what, err);
        if (s) return s;
        *dst = (ks_weight){f, KS_DTYPE_F32};
        return KS_OK;
    }
    note_dtype(m, t);
    m->n_params += n;
    size_t bytes = ks_dtype_row_bytes(t, cols) * rows;
    if (ks_model_in_mapping(m, src, bytes)) m->mapped_bytes += bytes;
    *dst = (ks_weight){src, t};
    return KS_OK;
}

/* One owned f32 zero buffer of n floats. */
static ks_status zeros(ks_model *m, size_t n, const float **out, ks_error *err) {
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) return ks_error_set(err, KS_ERR_NOMEM, "out of memory allocating %zu parameters", n);
    ks_status s = ks_model_own(m, p, err);
    if (s) return s;
    *out = p;
    m->n_params += n;
    return KS_OK;
}

ks_status ks_model_alloc_zero_weights(ks_model *m, ks_error *err) {
    const ks_config *c = &m->cfg;
    ks_status s;
    if (!m->layers && (s = ks_model_alloc_layers(m, err))) return s;
    size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    const float *p = NULL;
#define KS_ZMAT(dst, n)                                      \
    if ((s = zeros(m, (n), &p, err))) return s;               \
    (dst) = (ks_weight){p, KS_DTYPE_F32};
    KS_ZMAT(m->tok_embeddings, V * D)
    if (c->tie_embeddings) {
        m->output = m->tok_embeddings;
    } else {
        KS_ZMAT(m->output, V * D)
    }
    if ((s = zeros(m, D, &m->final_norm, err))) return s;
    for (int l = 0; l < c->n_layers; l++) {
        ks_layer_weights *w = &m->layers[l];
        if ((s = zeros(m, D, &w->attn_norm, err)) || (s = zeros(m, D, &w->ffn_norm, err))) return s;
        KS_ZMAT(w->wq, q * D)
        KS_ZMAT(w->wk, kv * D)
        KS_ZMAT(w->wv, kv * D)
        KS_ZMAT(w->wo, D * q)
        KS_ZMAT(w->w_gate, hid * D)
        KS_ZMAT(w->w_up, hid * D)
        KS_ZMAT(w->w_down, D * hid)
    }
#undef KS_ZMAT
    snprintf(m->weight_dtype, sizeof m->weight_dtype, "f32");
    return KS_OK;
}

ks_status ks_model_check_complete(const ks_model *m, const char *source, ks_error *err) {
#define KS_NEED(ptr, name)                                                                  \
    if (!(ptr)) return ks_error_set(err, KS_ERR_FORMAT, "%s: weight '%s' is missing", source, name);
    KS_NEED(m->tok_embeddings.data, "tok_embeddings")
    KS_NEED(m->final_norm, "final_norm")
    KS_NEED(m->output.data, "output")
    KS_NEED(m->layers, "layers")
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ks_layer_weights *w = &m->layers[l];
        const struct {
            const void *p;
            const char *n;
        } f[] = {{w->attn_norm, "attn_norm"},   {w->wq.data, "wq"},         {w->wk.data, "wk"},
                 {w->wv.data, "wv"},            {w->wo.data, "wo"},         {w->ffn_norm, "ffn_norm"},
                 {w->w_gate.data, "w_gate"},    {w->w_down.data, "w_down"}, {w->w_up.data, "w_up"}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
            if (!f[i].p)
                return ks_error_set(err, KS_ERR_FORMAT, "%s: weight 'layers.%d.%s' is missing",
                                    source, l, f[i].n);
    }
#undef KS_NEED
    return KS_OK;
}

/* ---------------------------------------------------------------- byte reader */

bool ks_reader_bytes(ks_reader *r, size_t n, const uint8_t **out) {
    if (r->pos > r->len || n > r->len - r->pos) return false;
    if (out) *out = r->p + r->pos;
    r->pos += n;
    return true;
}

bool ks_reader_u8(ks_reader *r, uint8_t *v) {
    const uint8_t *b;
    if (!ks_reader_bytes(r, 1, &b)) return false;
    *v = b[0];
    return true;
}

bool ks_reader_u32(ks_reader *r, uint32_t *v) {
    const uint8_t *b;
    if (!ks_reader_bytes(r, 4, &b)) return false;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return true;
}

bool ks_reader_u64(ks_reader *r, uint64_t *v) {
    uint32_t lo, hi;
    if (!ks_reader_u32(r, &lo) || !ks_reader_u32(r, &hi)) return false;
    *v = (uint64_t)lo | (uint64_t)hi << 32;
    return true;
}

/* ---------------------------------------------------------------- tensor table */

ks_status ks_tensor_table_push(ks_tensor_table *tab, ks_tensor_info *ti, ks_error *err) {
    if (tab->n == tab->cap) {
        size_t nc = tab->cap ? tab->cap * 2 : 64;
        ks_tensor_info *v = realloc(tab->v, nc * sizeof *v);
        if (!v) {
            free(ti->name);
            ti->name = NULL;
            return ks_error_set(err, KS_ERR_NOMEM, "out of memory for the tensor table");
        }
        tab->v = v;
        tab->cap = nc;
    }
    tab->v[tab->n++] = *ti;
    ti->name = NULL;
    return KS_OK;
}

void ks_tensor_table_free(ks_tensor_table *tab) {
    if (!tab) return;
    for (size_t i = 0; i < tab->n; i++) free(tab->v[i].name);
    free(tab->v);
    tab->v = NULL;
    tab->n = tab->cap = 0;
}

static int cmp_offset(const void *a, const void *b) {
    const ks_tensor_info *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
    const ks_tensor_info *x = a, *y = b;
    return strcmp(x->name, y->name);
}

ks_status ks_tensor_table_check_layout(ks_tensor_table *tab, size_t from, uint64_t file_len,
                                       const char *source, ks_error *err) {
    if (from > tab->n) return ks_error_set(err, KS_ERR_INTERNAL, "bad table range");
    if (from == tab->n) return KS_OK;
    ks_tensor_info *v = tab->v + from;
    size_t n = tab->n - from;
    for (size_t i = 0; i < n; i++) {
        uint64_t end;
        if (__builtin_add_overflow(v[i].offset, v[i].nbytes, &end) || end > file_len)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': data [%llu, +%llu) lies past "
                                "the end of the file (%llu bytes)", source, v[i].name,
                                (unsigned long long)v[i].offset, (unsigned long long)v[i].nbytes,
                                (unsigned long long)file_len);
    }
    if (n > 1) qsort(v, n, sizeof *v, cmp_offset);
    for (size_t i = 1; i < n; i++) {
        /* Zero-sized tensors cannot overlap anything. */
        if (v[i - 1].nbytes == 0 || v[i].nbytes == 0) continue;
        if (v[i - 1].offset + v[i - 1].nbytes > v[i].offset)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' [%llu, %llu) overlaps tensor "
                                "'%s' [%llu, %llu)", source, v[i].name,
                                (unsigned long long)v[i].offset,
                                (unsigned long long)(v[i].offset + v[i].nbytes), v[i - 1].name,
                                (unsigned long long)v[i - 1].offset,
                                (unsigned long long)(v[i - 1].offset + v[i - 1].nbytes));
    }
    return KS_OK;
}

ks_status ks_tensor_table_index(ks_tensor_table *tab, ks_error *err) {
    if (tab->n > 1) qsort(tab->v, tab->n, sizeof *tab->v, cmp_name);
    for (size_t i = 1; i < tab->n; i++)
        if (strcmp(tab->v[i - 1].name, tab->v[i].name) == 0)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' appears twice%s%s",
                                tab->v[i].source, tab->v[i].name,
                                tab->v[i - 1].source != tab->v[i].source ? " (also in " : "",
                                tab->v[i - 1].source != tab->v[i].source
                                    ? tab->v[i - 1].source
                                    : "");
    return KS_OK;
}

ks_tensor_info *ks_tensor_table_find(ks_tensor_table *tab, const char *name) {
    ks_tensor_info key = {.name = (char *)name};
    if (tab->n == 0) return NULL;
    return bsearch(&key, tab->v, tab->n, sizeof *tab->v, cmp_name);
}

/* ---------------------------------------------------------------- binding by name */

typedef enum {
    W_EMBED, W_FINAL_NORM, W_OUTPUT,
    W_ATTN_NORM, W_Q, W_K, W_V, W_O, W_FFN_NORM, W_GATE, W_DOWN, W_UP,
    W_COUNT
} weight_kind;

static void weight_name(ks_naming nm, weight_kind k, int layer, char *buf, size_t cap) {
    static const char *hf[W_COUNT] = {
        "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
        "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.down_proj",
        "mlp.up_proj"};
    static const char *gg[W_COUNT] = {
        "token_embd.weight", "output_norm.weight", "output.weight",
        "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
        "ffn_down", "ffn_up"};
    const char **t = nm == KS_NAMING_HF ? hf : gg;
    if (k <= W_OUTPUT)
        snprintf(buf, cap, "%s", t[k]);
    else if (nm == KS_NAMING_HF)
        snprintf(buf, cap, "model.layers.%d.%s.weight", layer, t[k]);
    else
        snprintf(buf, cap, "blk.%d.%s.weight", layer, t[k]);
}

/* Vectors (rows == 0) bind to *vec as f32; matrices to *mat in their stored dtype. */
static ks_status bind_one(ks_model *m, ks_tensor_table *tab, ks_naming nm, weight_kind k,
                          int layer, uint64_t rows, uint64_t cols, const float **vec,
                          ks_weight *mat, bool optional, ks_error *err) {
    char name[128];
    weight_name(nm, k, layer, name, sizeof name);
    ks_tensor_info *t = ks_tensor_table_find(tab, name);
    if (!t) {
        if (optional) return KS_OK;
        const char *src = tab->n ? tab->v[0].source : m->path;
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' is missing", src ? src : "?",
                            name);
    }
    /* A vector may be stored as (n) or (1, n); a matrix must be exactly (rows, cols). */
    bool ok;
    if (rows == 0)
        ok = (t->n_dims == 1 && t->dims[0] == cols) ||
             (t->n_dims == 2 && t->dims[0] == 1 && t->dims[1] == cols);
    else
        ok = t->n_dims == 2 && t->dims[0] == rows && t->dims[1] == cols;
    if (!ok) {
        char got[96] = "", want[64];
        size_t o = 0;
        for (int i = 0; i < t->n_dims && o < sizeof got; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%llu", i ? ", " : "",
                                  (unsigned long long)t->dims[i]);
        if (rows)
            snprintf(want, sizeof want, "[%llu, %llu]", (unsigned long long)rows,
                     (unsigned long long)cols);
        else
            snprintf(want, sizeof want, "[%llu]", (unsigned long long)cols);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': shape [%s] does not match the "
                            "config, expected %s (row-major)", t->source, name, got, want);
    }
    t->used = true;
    char what[512];
    snprintf(what, sizeof what, "%s: tensor '%s'", t->source, name);
    if (rows == 0) return ks_model_bind(m, t->dtype, t->data, (size_t)t->n_elems, vec, what, err);
    return ks_model_bind_matrix(m, t->dtype, t->data, (size_t)rows, (size_t)cols, mat, what, err);
}

/* Tensors a checkpoint may carry that the forward pass does not use. */
static bool ignorable(const char *name) {
    size_t n = strlen(name);
    static const char *suffixes[] = {"rotary_emb.inv_freq", "rope_freqs.weight"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t k = strlen(suffixes[i]);
        if (n >= k && strcmp(name + n - k, suffixes[i]) == 0) return true;
    }
    return false;
}

ks_status ks_model_bind_table(ks_model *m, ks_tensor_table *tab, ks_naming nm, ks_error *err) {
    const ks_config *c = &m->cfg;
    ks_status s;
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim, voc = (uint64_t)c->vocab_size;
    uint64_t qd = (uint64_t)c->n_heads * (uint64_t)c->head_dim;
    uint64_t kvd = (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim;
    if (!m->layers && (s = ks_model_alloc_layers(m, err))) return s;
    if ((s = bind_one(m, tab, nm, W_EMBED, -1, voc, dim, NULL, &m->tok_embeddings, false, err)) ||
        (s = bind_one(m, tab, nm, W_FINAL_NORM, -1, 0, dim, &m->final_norm, NULL, false, err)))
        return s;
    /* The head: absent means tied. HF says so in config.json; when the config claims untied
     * weights the head must be there. */
    bool head_optional = nm == KS_NAMING_GGUF || c->tie_embeddings;
    if ((s = bind_one(m, tab, nm, W_OUTPUT, -1, voc, dim, NULL, &m->output, head_optional, err)))
        return s;
    if (!m->output.data) {
        m->output = m->tok_embeddings;
        m->cfg.tie_embeddings = true;
    } else {
        m->cfg.tie_embeddings = false;
    }
    for (int l = 0; l < c->n_layers; l++) {
        ks_layer_weights *w = &m->layers[l];
        if ((s = bind_one(m, tab, nm, W_ATTN_NORM, l, 0, dim, &w->attn_norm, NULL, false, err)) ||
            (s = bind_one(m, tab, nm, W_Q, l, qd, dim, NULL, &w->wq, false, err)) ||
            (s = bind_one(m, tab, nm, W_K, l, kvd, dim, NULL, &w->wk, false, err)) ||
            (s = bind_one(m, tab, nm, W_V, l, kvd, dim, NULL, &w->wv, false, err)) ||
            (s = bind_one(m, tab, nm, W_O, l, dim, qd, NULL, &w->wo, false, err)) ||
            (s = bind_one(m, tab, nm, W_FFN_NORM, l, 0, dim, &w->ffn_norm, NULL, false, err)) ||
            (s = bind_one(m, tab, nm, W_GATE, l, hid, dim, NULL, &w->w_gate, false, err)) ||
            (s = bind_one(m, tab, nm, W_DOWN, l, dim, hid, NULL, &w->w_down, false, err)) ||
            (s = bind_one(m, tab, nm, W_UP, l, hid, dim, NULL, &w->w_up, false, err)))
            return s;
    }
    for (size_t i = 0; i < tab->n; i++) {
        const ks_tensor_info *t = &tab->v[i];
        if (t->used || ignorable(t->name)) continue;
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' is not part of a LLaMA model "
                            "with %d layers (unexpected tensor)", t->source, t->name, c->n_layers);
    }
    return KS_OK;
}

/* ---------------------------------------------------------------- tokenizer, template */

ks_status ks_model_load_tokenizer(ks_model *m, const char *path, ks_error *err) {
    ks_tokenizer *tok = NULL;
    ks_error e2 = {0};
    ks_status s = ks_tokenizer_open(path, &tok, &e2);
    if (s) {
        /* the tokenizer's own message names the file already when it can */
        if (strstr(e2.msg, path))
            return ks_error_set(err, s, "%s", e2.msg);
        return ks_error_set(err, s, "%s: tokenizer: %s", path, e2.msg[0] ? e2.msg : ks_status_str(s));
    }
    ks_tokenizer_free(m->tok);
    m->tok = tok;
    return KS_OK;
}

static bool contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0) return true;
    return false;
}

const char *ks_guess_template(const char *text) {
    if (!text) return "plain";
    if (contains_ci(text, "koala")) return "koala";
    if (contains_ci(text, "vicuna")) return "vicuna";
    if (contains_ci(text, "alpaca") || contains_ci(text, "### Instruction")) return "alpaca";
    if (contains_ci(text, "[INST]") ||
        ((contains_ci(text, "llama-2") || contains_ci(text, "llama2")) && contains_ci(text, "chat")))
        return "llama2";
    if (contains_ci(text, "ASSISTANT:")) return "vicuna";
    return "plain";
}

/* ---------------------------------------------------------------- open / close */

static bool has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcasecmp(s + n - k, suf) == 0;
}

static ks_status refuse_pickle(const char *path, ks_error *err) {
    return ks_error_set(err, KS_ERR_UNSUPPORTED,
                        "%s: this is a PyTorch pickle checkpoint; koalascope never unpickles "
                        "(unpickling runs arbitrary code). Convert it to safetensors first, e.g. "
                        "in Python: transformers.AutoModelForCausalLM.from_pretrained(DIR)"
                        ".save_pretrained(OUT, safe_serialization=True), then open OUT",
                        path);
}

ks_status ks_model_open(const char *path, const ks_model_options *opts, ks_model **out,
                        ks_error *err) {
    if (!out) return ks_error_set(err, KS_ERR_ARG, "ks_model_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return ks_error_set(err, KS_ERR_ARG, "ks_model_open: empty path");
    ks_error_clear(err);
    struct stat st;
    if (stat(path, &st) != 0)
        return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));

    ks_model *m = NULL;
    ks_status s = ks_model_alloc(&m, err);
    if (s) return s;
    m->no_mmap = opts && opts->no_mmap;
    m->f32_weights = opts && opts->f32_weights;
    m->no_weights = opts && opts->no_weights;
    m->tokenizer_path = opts && opts->tokenizer_path && *opts->tokenizer_path
                            ? opts->tokenizer_path
                            : NULL;
    m->path = strdup(path);
    if (!m->path) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }

    if (m->no_weights && !S_ISDIR(st.st_mode)) {
        s = ks_error_set(err, KS_ERR_ARG, "%s: a model without weights (random initialisation) "
                         "must be an HF directory with config.json and tokenizer files", path);
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        s = ks_load_hf(m, path, err);
    } else {
        uint8_t head[8] = {0};
        ssize_t got = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            s = ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
            goto out;
        }
        got = read(fd, head, sizeof head);
        close(fd);
        if (got < 0) {
            s = ks_error_set(err, KS_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        bool zip = got >= 4 && memcmp(head, "PK\x03\x04", 4) == 0;
        /* A pickle starts with PROTO (0x80) and a protocol 2..5, then an opcode. A llama2.c
         * header whose dim is 0x0280..0x0580 also starts so, but is followed by two zero
         * bytes, where a pickle has an opcode. */
        bool pickle = got >= 3 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5 && head[2] != 0;
        if (got >= 4 && memcmp(head, "GGUF", 4) == 0) {
            s = ks_load_gguf(m, path, err);
        } else if (zip || pickle) {
            s = refuse_pickle(path, err);
        } else if (has_suffix(path, ".safetensors") || has_suffix(path, ".json")) {
            /* a file inside an HF directory: open the directory */
            char *dir = strdup(path);
            if (!dir) {
                s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
                goto out;
            }
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            else
                strcpy(dir, ".");
            s = ks_load_hf(m, dir, err);
            free(dir);
        } else if (has_suffix(path, ".pt") || has_suffix(path, ".pth") ||
                   has_suffix(path, ".ckpt")) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: not a recognised checkpoint (.pt/.pth files "
                             "are PyTorch pickles, but this one has no pickle or zip header)",
                             path);
        } else {
            s = ks_load_llama2c(m, path, err);
        }
    }
    if (s) goto out;
    if ((s = ks_model_check_complete(m, path, err))) goto out;
    if (m->tok) {
        int tv = ks_tokenizer_vocab_size(m->tok);
        if (tv > m->cfg.vocab_size) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: tokenizer has %d tokens but the model's "
                             "vocab_size is %d", path, tv, m->cfg.vocab_size);
            goto out;
        }
        if (m->cfg.bos_id < 0) m->cfg.bos_id = ks_tokenizer_bos(m->tok);
        if (m->cfg.eos_id < 0) m->cfg.eos_id = ks_tokenizer_eos(m->tok);
    }
out:
    if (m) m->tokenizer_path = NULL;
    if (s) {
        ks_model_close(m);
        return s;
    }
    *out = m;
    return KS_OK;
}

void ks_model_close(ks_model *m) {
    if (!m) return;
    ks_tokenizer_free(m->tok);
    for (int i = 0; i < m->n_maps; i++) munmap(m->maps[i].addr, m->maps[i].len);
    free(m->maps);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->path);
    free(m);
}

/* ---------------------------------------------------------------- accessors */

const ks_config *ks_model_config(const ks_model *m) { return m ? &m->cfg : NULL; }
const ks_tokenizer *ks_model_tokenizer(const ks_model *m) { return m ? m->tok : NULL; }
const char *ks_model_format(const ks_model *m) { return m && m->format ? m->format : ""; }
const char *ks_model_weight_dtype(const ks_model *m) {
    return m && m->weight_dtype[0] ? m->weight_dtype : "f32";
}
size_t ks_model_param_count(const ks_model *m) { return m ? m->n_params : 0; }
size_t ks_model_mapped_bytes(const ks_model *m) { return m ? m->mapped_bytes : 0; }
const char *ks_model_template_hint(const ks_model *m) {
    return m && m->template_hint[0] ? m->template_hint : "plain";
}
