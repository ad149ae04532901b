/* llama2c.c — karpathy/llama2.c checkpoints.
 *
 * Three layouts, all little-endian:
 *  - legacy (v0): 7 int32 `dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 *    seq_len` (vocab_size < 0: the classifier is not shared and follows at the end), then
 *    f32 arrays: token_embedding (vocab, dim), rms_att (L, dim), wq (L, dim, dim),
 *    wk (L, kv_dim, dim), wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn (L, dim),
 *    w1 (L, hidden, dim), w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim),
 *    freq_cis_real and _imag (seq_len, head_size/2) each (unused), [wcls (vocab, dim)].
 *  - version 1: a 256-byte header: uint32 magic "ak42" (0x616b3432), int32 version = 1, the
 *    same 7 int32, uint8 shared_classifier, zero padding. Then f32: rms_att (L, dim),
 *    rms_ffn (L, dim), rms_final (dim), token_embedding, wq, wk, wv, wo, w1, w2, w3,
 *    [wcls]; no freq_cis.
 *  - version 2: header as v1 (version = 2) plus int32 group_size right after the flag byte
 *    (offset 37). Then the norms in f32 (rms_att, rms_ffn, rms_final), then each weight
 *    matrix of the v1 order, one per layer, as int8 values followed by one f32 scale per
 *    group of group_size values: x = q * scale.
 * The file size must equal what the header implies. */
#include "model_private.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define L2C_MAGIC 0x616b3432u
#define L2C_HEADER 256

static int32_t rd_i32(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

/* Running byte count of the file with overflow checks. */
typedef struct {
    uint64_t bytes;
    bool overflow;
} l2c_size;

static void add_elems(l2c_size *z, uint64_t a, uint64_t b, uint64_t c, uint64_t elem_bytes) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
        __builtin_mul_overflow(r, elem_bytes, &r) || __builtin_add_overflow(z->bytes, r, &z->bytes))
        z->overflow = true;
}

typedef struct {
    ks_model *m;
    const uint8_t *data;
    size_t pos;
    const char *source;
    int version;
    int group_size;
} l2c_ctx;

/* f32 vector family of n_layers slices of per elements each (n_layers = 0: one tensor). */
static ks_status bind_f32(l2c_ctx *c, int n_layers, uint64_t per, const float **single,
                          size_t field_off, const char *name, ks_error *err) {
    char what[300];
    int count = n_layers ? n_layers : 1;
    for (int l = 0; l < count; l++) {
        const float **dst = single;
        if (n_layers) dst = (const float **)((char *)&c->m->layers[l] + field_off);
        snprintf(what, sizeof what, "%s: tensor '%s' (layer %d)", c->source, name, l);
        ks_status s = ks_model_bind(c->m, KS_DTYPE_F32, c->data + c->pos, (size_t)per, dst, what, err);
        if (s) return s;
        c->pos += (size_t)per * 4;
    }
    return KS_OK;
}

/* f32 matrix family: n_layers (0: one) matrices of (rows, cols). */
static ks_status bind_mat_f32(l2c_ctx *c, int n_layers, uint64_t rows, uint64_t cols,
                              ks_weight *single, size_t field_off, const char *name, ks_error *err) {
    char what[300];
    int count = n_layers ? n_layers : 1;
    for (int l = 0; l < count; l++) {
        ks_weight *dst = single;
        if (n_layers) dst = (ks_weight *)((char *)&c->m->layers[l] + field_off);
        snprintf(what, sizeof what, "%s: tensor '%s' (layer %d)", c->source, name, l);
        ks_status s = ks_model_bind_matrix(c->m, KS_DTYPE_F32, c->data + c->pos, (size_t)rows,
                                           (size_t)cols, dst, what, err);
        if (s) return s;
        c->pos += (size_t)(rows * cols) * 4;
    }
    return KS_OK;
}

/* v2: int8 values then f32 scales, per layer; converted to f32 (a group size that is not
 * GGML's Q8_0 layout). */
static ks_status bind_q8(l2c_ctx *c, int n_layers, uint64_t rows, uint64_t cols,
                         ks_weight *single, size_t field_off, const char *name, ks_error *err) {
    int count = n_layers ? n_layers : 1;
    uint64_t gs = (uint64_t)c->group_size, per = rows * cols;
    for (int l = 0; l < count; l++) {
        ks_weight *dst = single;
        if (n_layers) dst = (ks_weight *)((char *)&c->m->layers[l] + field_off);
        float *buf = malloc((size_t)per * sizeof(float));
        if (!buf)
            return ks_error_set(err, KS_ERR_NOMEM, "%s: tensor '%s': out of memory", c->source, name);
        const int8_t *q = (const int8_t *)(c->data + c->pos);
        const uint8_t *sc = c->data + c->pos + per;
        for (uint64_t g = 0; g < per / gs; g++) {
            float scale;
            memcpy(&scale, sc + 4 * g, 4);
            for (uint64_t j = 0; j < gs; j++) buf[g * gs + j] = (float)q[g * gs + j] * scale;
        }
        ks_status s = ks_model_own(c->m, buf, err);
        if (s) return s;
        *dst = (ks_weight){buf, KS_DTYPE_F32};
        c->m->n_params += (size_t)per;
        c->pos += (size_t)(per + 4 * (per / gs));
    }
    return KS_OK;
}

#define LOFF(f) offsetof(ks_layer_weights, f)

ks_status ks_llama2c_load_mem(ks_model *m, const uint8_t *data, size_t len, const char *source,
                              ks_error *err) {
    if (len < 28)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header truncated: the file has %zu "
                            "bytes, the header needs 28", source, len);
    uint32_t magic = (uint32_t)rd_i32(data);
    int version = 0;
    const uint8_t *hp = data;
    bool shared = true;
    int group_size = 0;
    size_t header = 28;
    if (magic == L2C_MAGIC) {
        if (len < L2C_HEADER)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c v1/v2 header truncated: the file "
                                "has %zu bytes, the header needs %d", source, len, L2C_HEADER);
        version = rd_i32(data + 4);
        if (version != 1 && version != 2)
            return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: llama2.c header field 'version' = %d "
                                "is not supported (1 = f32, 2 = int8)", source, version);
        hp = data + 8;
        if (data[36] > 1)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header field 'shared_classifier' "
                                "= %u is not 0 or 1", source, data[36]);
        shared = data[36] != 0;
        if (version == 2) group_size = rd_i32(data + 37);
        header = L2C_HEADER;
    }
    static const char *names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                   "vocab_size", "seq_len"};
    int p[7];
    for (int i = 0; i < 7; i++) p[i] = rd_i32(hp + 4 * i);
    if (version == 0 && p[5] < 0 && p[5] != INT_MIN) {
        shared = false;
        p[5] = -p[5];
    }
    for (int i = 0; i < 7; i++)
        if (p[i] <= 0)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header field '%s' = %d must be "
                                "positive%s", source, names[i], p[i],
                                version == 0 ? " (is this a llama2.c checkpoint?)" : "");
    int dim = p[0], hidden = p[1], n_layers = p[2], n_heads = p[3], n_kv = p[4], vocab = p[5],
        seq = p[6];
    if (dim % n_heads != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header field 'dim' = %d is not "
                            "divisible by 'n_heads' = %d", source, dim, n_heads);
    if (n_kv > n_heads || n_heads % n_kv != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header field 'n_heads' = %d is not a "
                            "multiple of 'n_kv_heads' = %d", source, n_heads, n_kv);
    ks_config *cfg = &m->cfg;
    cfg->dim = dim;
    cfg->hidden_dim = hidden;
    cfg->n_layers = n_layers;
    cfg->n_heads = n_heads;
    cfg->n_kv_heads = n_kv;
    cfg->head_dim = dim / n_heads;
    cfg->vocab_size = vocab;
    cfg->max_seq_len = seq;
    cfg->rms_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
    cfg->rope_style = KS_ROPE_STYLE_INTERLEAVED;
    cfg->rope_scaling = KS_ROPE_SCALING_NONE;
    cfg->tie_embeddings = shared;
    /* llama2.c tokenizers use 1/2 for BOS/EOS; a tokenizer, when attached, may say otherwise */
    cfg->bos_id = vocab > 1 ? 1 : -1;
    cfg->eos_id = vocab > 2 ? 2 : -1;
    ks_status s = ks_config_validate(cfg, source, err);
    if (s) return s;

    uint64_t D = (uint64_t)dim, H = (uint64_t)hidden, L = (uint64_t)n_layers,
             V = (uint64_t)vocab, KV = (uint64_t)n_kv * (uint64_t)cfg->head_dim,
             HS = (uint64_t)cfg->head_dim, S = (uint64_t)seq;
    if (version == 2) {
        if (group_size <= 0)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header field 'group_size' = %d "
                                "must be positive", source, group_size);
        uint64_t G = (uint64_t)group_size;
        const struct {
            uint64_t n;
            const char *name;
        } mats[] = {{V * D, "token_embedding"}, {D * D, "wq"}, {KV * D, "wk"}, {KV * D, "wv"},
                    {D * D, "wo"}, {H * D, "w1"}, {D * H, "w2"}, {H * D, "w3"}};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            if (mats[i].n % G != 0)
                return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c header field 'group_size' = "
                                    "%d does not divide tensor '%s' (%llu elements)", source,
                                    group_size, mats[i].name, (unsigned long long)mats[i].n);
    }

    /* expected file size */
    l2c_size z = {header, false};
    if (version < 2) {
        add_elems(&z, V, D, 1, 4);                     /* token_embedding */
        add_elems(&z, L, D, 2, 4);                     /* rms_att, rms_ffn */
        add_elems(&z, L, D, D, 4);                     /* wq */
        add_elems(&z, L, KV, 2 * D, 4);                /* wk, wv */
        add_elems(&z, L, D, D, 4);                     /* wo */
        add_elems(&z, L, H, 3 * D, 4);                 /* w1, w2, w3 */
        add_elems(&z, D, 1, 1, 4);                     /* rms_final */
        if (version == 0) add_elems(&z, S, HS, 1, 4);  /* freq_cis real + imag */
        if (!shared) add_elems(&z, V, D, 1, 4);        /* wcls */
    } else {
        uint64_t G = (uint64_t)group_size;
        add_elems(&z, L, D, 2, 4);
        add_elems(&z, D, 1, 1, 4);
        /* each quantised tensor of n elements: n int8 + 4 * n / G scale bytes */
        uint64_t per[] = {V * D, L * D * D, L * KV * D, L * KV * D, L * D * D, L * H * D,
                          L * H * D, L * H * D, shared ? 0 : V * D};
        for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
            add_elems(&z, per[i], 1, 1, 1);
            add_elems(&z, per[i] / G, 4, 1, 1);
        }
    }
    if (z.overflow)
        return ks_error_set(err, KS_ERR_RANGE, "%s: llama2.c header implies a size that overflows "
                            "(dim %d, hidden_dim %d, n_layers %d, vocab_size %d)", source, dim,
                            hidden, n_layers, vocab);
    if (z.bytes != (uint64_t)len)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: llama2.c file size %zu does not match the "
                            "%llu bytes its header (dim %d, hidden_dim %d, n_layers %d, n_heads %d, "
                            "n_kv_heads %d, vocab_size %d, seq_len %d%s) implies", source, len,
                            (unsigned long long)z.bytes, dim, hidden, n_layers, n_heads, n_kv,
                            vocab, seq, shared ? "" : ", unshared classifier");

    if ((s = ks_model_alloc_layers(m, err))) return s;
    l2c_ctx c = {m, data, header, source, version, group_size};
    if (version == 0) {
        if ((s = bind_mat_f32(&c, 0, V, D, &m->tok_embeddings, 0, "token_embedding", err)) ||
            (s = bind_f32(&c, n_layers, D, NULL, LOFF(attn_norm), "rms_att_weight", err)) ||
            (s = bind_mat_f32(&c, n_layers, D, D, NULL, LOFF(wq), "wq", err)) ||
            (s = bind_mat_f32(&c, n_layers, KV, D, NULL, LOFF(wk), "wk", err)) ||
            (s = bind_mat_f32(&c, n_layers, KV, D, NULL, LOFF(wv), "wv", err)) ||
            (s = bind_mat_f32(&c, n_layers, D, D, NULL, LOFF(wo), "wo", err)) ||
            (s = bind_f32(&c, n_layers, D, NULL, LOFF(ffn_norm), "rms_ffn_weight", err)) ||
            (s = bind_mat_f32(&c, n_layers, H, D, NULL, LOFF(w_gate), "w1", err)) ||
            (s = bind_mat_f32(&c, n_layers, D, H, NULL, LOFF(w_down), "w2", err)) ||
            (s = bind_mat_f32(&c, n_layers, H, D, NULL, LOFF(w_up), "w3", err)) ||
            (s = bind_f32(&c, 0, D, &m->final_norm, 0, "rms_final_weight", err)))
            return s;
        c.pos += (size_t)(S * HS * 4); /* freq_cis_real, freq_cis_imag: unused */
        if (!shared && (s = bind_mat_f32(&c, 0, V, D, &m->output, 0, "wcls", err))) return s;
    } else {
        if ((s = bind_f32(&c, n_layers, D, NULL, LOFF(attn_norm), "rms_att_weight", err)) ||
            (s = bind_f32(&c, n_layers, D, NULL, LOFF(ffn_norm), "rms_ffn_weight", err)) ||
            (s = bind_f32(&c, 0, D, &m->final_norm, 0, "rms_final_weight", err)))
            return s;
        ks_status (*bind)(l2c_ctx *, int, uint64_t, uint64_t, ks_weight *, size_t, const char *,
                          ks_error *) = version == 1 ? bind_mat_f32 : bind_q8;
        if ((s = bind(&c, 0, V, D, &m->tok_embeddings, 0, "token_embedding", err)) ||
            (s = bind(&c, n_layers, D, D, NULL, LOFF(wq), "wq", err)) ||
            (s = bind(&c, n_layers, KV, D, NULL, LOFF(wk), "wk", err)) ||
            (s = bind(&c, n_layers, KV, D, NULL, LOFF(wv), "wv", err)) ||
            (s = bind(&c, n_layers, D, D, NULL, LOFF(wo), "wo", err)) ||
            (s = bind(&c, n_layers, H, D, NULL, LOFF(w_gate), "w1", err)) ||
            (s = bind(&c, n_layers, D, H, NULL, LOFF(w_down), "w2", err)) ||
            (s = bind(&c, n_layers, H, D, NULL, LOFF(w_up), "w3", err)))
            return s;
        if (!shared && (s = bind(&c, 0, V, D, &m->output, 0, "wcls", err))) return s;
        if (version == 2) snprintf(m->weight_dtype, sizeof m->weight_dtype, "int8-g%d", group_size);
    }
    if (shared) m->output = m->tok_embeddings;
    m->format = "llama2c";
    return KS_OK;
}

ks_status ks_load_llama2c(ks_model *m, const char *path, ks_error *err) {
    const uint8_t *data;
    size_t len;
    ks_status s = ks_model_map_file(m, path, &data, &len, err);
    if (s) return s;
    if ((s = ks_llama2c_load_mem(m, data, len, path, err))) return s;
    snprintf(m->template_hint, sizeof m->template_hint, "%s", ks_guess_template(path));
    if (m->tokenizer_path) return ks_model_load_tokenizer(m, m->tokenizer_path, err);
    /* tokenizer.bin beside the checkpoint, when there is one */
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    char *tp = malloc(dlen + sizeof "tokenizer.bin");
    if (!tp) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    memcpy(tp, path, dlen);
    memcpy(tp + dlen, "tokenizer.bin", sizeof "tokenizer.bin");
    struct stat st;
    if (stat(tp, &st) == 0 && S_ISREG(st.st_mode)) s = ks_model_load_tokenizer(m, tp, err);
    free(tp);
    return s;
}
