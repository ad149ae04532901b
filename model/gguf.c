/* gguf.c — GGUF v2/v3 checkpoints (general.architecture = "llama") and GGUF tokenizers.
 *
 * Layout (little-endian): "GGUF", uint32 version, uint64 n_tensors, uint64 n_kv; n_kv
 * metadata pairs {string key, uint32 value type, value}; n_tensors tensor infos {string
 * name, uint32 n_dims, uint64 ne[n_dims] (ne[0] fastest), uint32 ggml type, uint64 offset};
 * padding to general.alignment (default 32); the data section, tensor offsets relative to
 * its start. A string is uint64 length + bytes (no NUL). Value types: 0 u8, 1 i8, 2 u16,
 * 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array {uint32 elem type, uint64 n,
 * values}, 10 u64, 11 i64, 12 f64. Arrays may nest.
 *
 * Everything is validated against the bytes that remain before it is used; no value is
 * copied except tensor names. ne[] is reversed into ks_tensor_info.dims so that a GGUF
 * matrix ne = [in, out] reads as (out, in), the layout of every other format. */
#include "model_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


enum {
    G_U8 = 0, G_I8 = 1, G_U16 = 2, G_I16 = 3, G_U32 = 4, G_I32 = 5, G_F32 = 6, G_BOOL = 7,
    G_STRING = 8, G_ARRAY = 9, G_U64 = 10, G_I64 = 11, G_F64 = 12, G_NTYPES = 13
};
static const char *g_type_names[G_NTYPES] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                             "bool", "string", "array", "u64", "i64", "f64"};
static const size_t g_type_size[G_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

#define GGUF_MAX_DEPTH 8

typedef struct {
    const uint8_t *key;
    size_t key_len;
    uint32_t type;
    const uint8_t *val; /* the value (for arrays: the first element) */
    uint32_t arr_type;  /* arrays only */
    uint64_t arr_n;
} gguf_kv;

typedef struct {
    const uint8_t *data;
    size_t len;
    const char *source;
    uint32_t version;
    uint64_t n_tensors, n_kv;
    gguf_kv *kv;
    size_t after_kv; /* offset of the first tensor info */
} gguf_ctx;

static void gguf_ctx_free(gguf_ctx *g) {
    free(g->kv);
    g->kv = NULL;
}

static ks_status trunc_err(const gguf_ctx *g, ks_error *err, const char *what, const gguf_kv *kv,
                           size_t pos) {
    if (kv)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%.*s': %s truncated at byte %zu "
                            "(file has %zu bytes)", g->source, (int)(kv->key_len > 200 ? 200 : kv->key_len),
                            (const char *)kv->key, what, pos, g->len);
    return ks_error_set(err, KS_ERR_FORMAT, "%s: %s truncated at byte %zu (file has %zu bytes)",
                        g->source, what, pos, g->len);
}

/* Read a string header and check its length against what remains. */
static ks_status read_string(const gguf_ctx *g, ks_reader *r, const char *what, const gguf_kv *kv,
                             const uint8_t **s, size_t *n, ks_error *err) {
    uint64_t len;
    size_t at = r->pos;
    if (!ks_reader_u64(r, &len)) return trunc_err(g, err, what, kv, at);
    if (len > r->len - r->pos) {
        if (kv)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%.*s': %s length %llu exceeds "
                                "the %zu bytes left in the file", g->source,
                                (int)(kv->key_len > 200 ? 200 : kv->key_len), (const char *)kv->key,
                                what, (unsigned long long)len, r->len - r->pos);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %s length %llu at byte %zu exceeds the %zu bytes "
                            "left in the file", g->source, what, (unsigned long long)len, at,
                            r->len - r->pos);
    }
    ks_reader_bytes(r, (size_t)len, s);
    *n = (size_t)len;
    return KS_OK;
}

static ks_status skip_value(const gguf_ctx *g, ks_reader *r, uint32_t type, int depth,
                            const gguf_kv *kv, ks_error *err);

static ks_status skip_array(const gguf_ctx *g, ks_reader *r, int depth, const gguf_kv *kv,
                            uint32_t *elem_type, uint64_t *count, ks_error *err) {
    uint32_t et;
    uint64_t n;
    size_t at = r->pos;
    if (depth >= GGUF_MAX_DEPTH)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%.*s': arrays nested deeper than %d",
                            g->source, (int)(kv->key_len > 200 ? 200 : kv->key_len),
                            (const char *)kv->key, GGUF_MAX_DEPTH);
    if (!ks_reader_u32(r, &et) || !ks_reader_u64(r, &n)) return trunc_err(g, err, "array header", kv, at);
    if (et >= G_NTYPES)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%.*s': array element type %u is "
                            "unknown", g->source, (int)(kv->key_len > 200 ? 200 : kv->key_len),
                            (const char *)kv->key, et);
    /* every element takes at least min bytes: bounds the count by the bytes left */
    size_t min = et == G_STRING ? 8 : et == G_ARRAY ? 12 : g_type_size[et];
    size_t left = r->len - r->pos;
    if (n > left / min)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%.*s': array length %llu of %s "
                            "exceeds the %zu bytes left in the file", g->source,
                            (int)(kv->key_len > 200 ? 200 : kv->key_len), (const char *)kv->key,
                            (unsigned long long)n, g_type_names[et], left);
    if (elem_type) *elem_type = et;
    if (count) *count = n;
    if (et != G_STRING && et != G_ARRAY) {
        ks_reader_bytes(r, (size_t)n * min, NULL);
        return KS_OK;
    }
    for (uint64_t i = 0; i < n; i++) {
        ks_status s = skip_value(g, r, et, depth + 1, kv, err);
        if (s) return s;
    }
    return KS_OK;
}

static ks_status skip_value(const gguf_ctx *g, ks_reader *r, uint32_t type, int depth,
                            const gguf_kv *kv, ks_error *err) {
    if (type >= G_NTYPES)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%.*s': value type %u is unknown",
                            g->source, (int)(kv->key_len > 200 ? 200 : kv->key_len),
                            (const char *)kv->key, type);
    if (type == G_STRING) {
        const uint8_t *s;
        size_t n = 0;
        return read_string(g, r, "string", kv, &s, &n, err);
    }
    if (type == G_ARRAY) return skip_array(g, r, depth, kv, NULL, NULL, err);
    size_t at = r->pos;
    if (!ks_reader_bytes(r, g_type_size[type], NULL)) return trunc_err(g, err, "value", kv, at);
    return KS_OK;
}

static ks_status gguf_parse_header(gguf_ctx *g, const uint8_t *data, size_t len, const char *source,
                                   ks_error *err) {
    memset(g, 0, sizeof *g);
    g->data = data;
    g->len = len;
    g->source = source;
    ks_reader r = {data, len, 0};
    const uint8_t *magic;
    if (!ks_reader_bytes(&r, 4, &magic) || memcmp(magic, "GGUF", 4) != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: bad magic: not a GGUF file", source);
    if (!ks_reader_u32(&r, &g->version)) return trunc_err(g, err, "header field 'version'", NULL, r.pos);
    if (g->version != 2 && g->version != 3)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: GGUF header field 'version' = %u is not "
                            "supported (2 or 3)", source, g->version);
    if (!ks_reader_u64(&r, &g->n_tensors) || !ks_reader_u64(&r, &g->n_kv))
        return trunc_err(g, err, "header fields 'n_tensors'/'n_kv'", NULL, r.pos);
    size_t left = len - r.pos;
    /* a KV takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info 8 + 4 + 8 + 4 + 8 */
    if (g->n_kv > left / 13)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: GGUF header field 'n_kv' = %llu is larger than "
                            "the %zu bytes left could hold", source, (unsigned long long)g->n_kv, left);
    if (g->n_tensors > left / 32)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: GGUF header field 'n_tensors' = %llu is larger "
                            "than the %zu bytes left could hold", source,
                            (unsigned long long)g->n_tensors, left);
    g->kv = calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *g->kv);
    if (!g->kv) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory for %llu metadata keys",
                                    source, (unsigned long long)g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        ks_status s = read_string(g, &r, "metadata key", NULL, &kv->key, &kv->key_len, err);
        if (s) return s;
        size_t at = r.pos;
        if (!ks_reader_u32(&r, &kv->type)) return trunc_err(g, err, "value type", kv, at);
        kv->val = data + r.pos;
        if (kv->type == G_ARRAY) {
            if ((s = skip_array(g, &r, 0, kv, &kv->arr_type, &kv->arr_n, err))) return s;
            kv->val = data + at + 4 + 12;
        } else if ((s = skip_value(g, &r, kv->type, 0, kv, err))) {
            return s;
        }
    }
    g->after_kv = r.pos;
    return KS_OK;
}

static const gguf_kv *find_kv(const gguf_ctx *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

static uint64_t rd_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Integer value of any integer type (bool included). false: wrong type. */
static bool kv_int(const gguf_kv *kv, int64_t *out) {
    uint64_t u;
    switch (kv->type) {
    case G_U8: case G_BOOL: *out = kv->val[0]; return true;
    case G_I8: *out = (int8_t)kv->val[0]; return true;
    case G_U16: *out = (int64_t)rd_le(kv->val, 2); return true;
    case G_I16: *out = (int16_t)rd_le(kv->val, 2); return true;
    case G_U32: *out = (int64_t)rd_le(kv->val, 4); return true;
    case G_I32: *out = (int32_t)(uint32_t)rd_le(kv->val, 4); return true;
    case G_U64:
        u = rd_le(kv->val, 8);
        *out = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        return true;
    case G_I64: u = rd_le(kv->val, 8); memcpy(out, &u, 8); return true;
    default: return false;
    }
}

static bool kv_float(const gguf_kv *kv, double *out) {
    if (kv->type == G_F32) {
        uint32_t u = (uint32_t)rd_le(kv->val, 4);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
        return true;
    }
    if (kv->type == G_F64) {
        uint64_t u = rd_le(kv->val, 8);
        memcpy(out, &u, 8);
        return true;
    }
    int64_t i;
    if (kv_int(kv, &i)) {
        *out = (double)i;
        return true;
    }
    return false;
}

static bool kv_string(const gguf_kv *kv, const char **s, size_t *n) {
    if (kv->type != G_STRING) return false;
    *n = (size_t)rd_le(kv->val, 8);
    *s = (const char *)kv->val + 8;
    return true;
}

/* Integer metadata `key`: absent → *out unchanged and KS_OK unless required. Must fit in
 * [lo, hi]. */
static ks_status get_int(const gguf_ctx *g, const char *key, bool required, int64_t lo, int64_t hi,
                         int *out, ks_error *err) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) {
        if (required)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%s' is missing", g->source, key);
        return KS_OK;
    }
    int64_t v;
    if (!kv_int(kv, &v))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%s' has type %s, expected an "
                            "integer", g->source, key,
                            kv->type < G_NTYPES ? g_type_names[kv->type] : "?");
    if (v < lo || v > hi)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%s' = %lld is out of range "
                            "(%lld..%lld)", g->source, key, (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return KS_OK;
}

static ks_status get_float(const gguf_ctx *g, const char *key, float *out, ks_error *err) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return KS_OK;
    double v;
    if (!kv_float(kv, &v))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%s' has type %s, expected a "
                            "number", g->source, key,
                            kv->type < G_NTYPES ? g_type_names[kv->type] : "?");
    if (!isfinite(v) || v <= 0 || v > 3.0e38)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key '%s' = %g is out of range",
                            g->source, key, v);
    *out = (float)v;
    return KS_OK;
}

/* ---------------------------------------------------------------- tokenizer */

static ks_status gguf_tokenizer(const gguf_ctx *g, ks_tokenizer **out, ks_error *err) {
    *out = NULL;
    const gguf_kv *mk = find_kv(g, "tokenizer.ggml.model");
    const char *model;
    size_t model_n;
    if (!mk || !kv_string(mk, &model, &model_n))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.model' is missing "
                            "or not a string", g->source);
    if (model_n != 5 || memcmp(model, "llama", 5) != 0)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: metadata key 'tokenizer.ggml.model' = "
                            "'%.*s' is not supported (only 'llama', SentencePiece)", g->source,
                            (int)(model_n > 64 ? 64 : model_n), model);
    const gguf_kv *tk = find_kv(g, "tokenizer.ggml.tokens");
    if (!tk || tk->type != G_ARRAY || tk->arr_type != G_STRING)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.tokens' is missing "
                            "or not an array of strings", g->source);
    if (tk->arr_n == 0 || tk->arr_n > (1u << 24))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.tokens' has %llu "
                            "entries (1..%u)", g->source, (unsigned long long)tk->arr_n, 1u << 24);
    int n = (int)tk->arr_n;
    const gguf_kv *sk = find_kv(g, "tokenizer.ggml.scores");
    const gguf_kv *yk = find_kv(g, "tokenizer.ggml.token_type");
    if (sk && (sk->type != G_ARRAY || sk->arr_type != G_F32 || sk->arr_n != tk->arr_n))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.scores' must be an "
                            "f32 array of %d entries", g->source, n);
    if (yk && (yk->type != G_ARRAY || (yk->arr_type != G_I32 && yk->arr_type != G_U32) ||
               yk->arr_n != tk->arr_n))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'tokenizer.ggml.token_type' must "
                            "be an i32 array of %d entries", g->source, n);
    int bos = -1, eos = -1, unk = -1;
    ks_status s;
    if ((s = get_int(g, "tokenizer.ggml.bos_token_id", false, -1, n - 1, &bos, err)) ||
        (s = get_int(g, "tokenizer.ggml.eos_token_id", false, -1, n - 1, &eos, err)) ||
        (s = get_int(g, "tokenizer.ggml.unknown_token_id", false, -1, n - 1, &unk, err)))
        return s;
    int dummy = 1;
    if ((s = get_int(g, "tokenizer.ggml.add_space_prefix", false, 0, 1, &dummy, err))) return s;

    const char **pieces = malloc((size_t)n * sizeof *pieces);
    size_t *lens = malloc((size_t)n * sizeof *lens);
    float *scores = malloc((size_t)n * sizeof *scores);
    int *types = yk ? malloc((size_t)n * sizeof *types) : NULL;
    if (!pieces || !lens || !scores || (yk && !types)) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory for the vocabulary", g->source);
        goto out;
    }
    /* the array was validated while parsing: walk it without re-checking */
    const uint8_t *p = tk->val;
    for (int i = 0; i < n; i++) {
        size_t l = (size_t)rd_le(p, 8);
        pieces[i] = (const char *)p + 8;
        lens[i] = l;
        p += 8 + l;
    }
    for (int i = 0; i < n; i++) {
        if (sk) {
            uint32_t u = (uint32_t)rd_le(sk->val + 4 * (size_t)i, 4);
            memcpy(&scores[i], &u, 4);
        } else {
            scores[i] = 0.0f;
        }
        if (types) types[i] = (int)(int32_t)(uint32_t)rd_le(yk->val + 4 * (size_t)i, 4);
    }
    ks_error e2 = {0};
    s = ks_tokenizer_from_vocab(n, pieces, lens, scores, types, bos, eos, unk, dummy != 0, out, &e2);
    if (s) ks_error_set(err, s, "%s: embedded tokenizer: %s", g->source, e2.msg);
out:
    free(pieces);
    free(lens);
    free(scores);
    free(types);
    return s;
}

ks_status ks_gguf_tokenizer_mem(const uint8_t *data, size_t len, const char *source,
                                ks_tokenizer **out, ks_error *err) {
    gguf_ctx g;
    *out = NULL;
    ks_status s = gguf_parse_header(&g, data, len, source, err);
    if (!s) s = gguf_tokenizer(&g, out, err);
    gguf_ctx_free(&g);
    return s;
}

ks_status ks_gguf_open_tokenizer(const char *path, ks_tokenizer **out, ks_error *err) {
    ks_model *m = NULL;
    ks_status s = ks_model_alloc(&m, err);
    if (s) return s;
    const uint8_t *data;
    size_t len;
    if (!(s = ks_model_map_file(m, path, &data, &len, err)))
        s = ks_gguf_tokenizer_mem(data, len, path, out, err);
    ks_model_close(m); /* the tokenizer copied what it needs */
    return s;
}

/* ---------------------------------------------------------------- model */

static int ggml_to_dtype(uint32_t t) {
    switch (t) {
    case 0: return KS_DTYPE_F32;
    case 1: return KS_DTYPE_F16;
    case 30: return KS_DTYPE_BF16;
    case 8: return KS_DTYPE_Q8_0;
    case 2: return KS_DTYPE_Q4_0;
    case 12: return KS_DTYPE_Q4_K;
    case 3: return KS_DTYPE_Q4_1;
    case 6: return KS_DTYPE_Q5_0;
    case 7: return KS_DTYPE_Q5_1;
    case 10: return KS_DTYPE_Q2_K;
    case 11: return KS_DTYPE_Q3_K;
    case 13: return KS_DTYPE_Q5_K;
    case 14: return KS_DTYPE_Q6_K;
    default: return -1;
    }
}

static ks_status gguf_tensors(const gguf_ctx *g, uint32_t alignment, ks_tensor_table *tab,
                              ks_error *err) {
    ks_reader r = {g->data, g->len, g->after_kv};
    ks_status s;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const uint8_t *nm = NULL;
        size_t nl = 0;
        char what[48];
        snprintf(what, sizeof what, "tensor info %llu name", (unsigned long long)i);
        if ((s = read_string(g, &r, what, NULL, &nm, &nl, err))) return s;
        if (nl == 0 || nl > 256 || memchr(nm, 0, nl))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor info %llu: name of %zu bytes is empty, "
                                "too long or contains NUL", g->source, (unsigned long long)i, nl);
        ks_tensor_info ti = {0};
        uint32_t nd, type;
        uint64_t ne[4], off;
        size_t at = r.pos;
#define TNAME (int)nl, (const char *)nm
        if (!ks_reader_u32(&r, &nd))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': info truncated at byte %zu",
                                g->source, TNAME, at);
        if (nd < 1 || nd > 4)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': n_dims = %u is out of range "
                                "(1..4)", g->source, TNAME, nd);
        uint64_t n = 1;
        for (uint32_t d = 0; d < nd; d++) {
            if (!ks_reader_u64(&r, &ne[d]))
                return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': info truncated at byte "
                                    "%zu", g->source, TNAME, r.pos);
            if (ne[d] == 0 || __builtin_mul_overflow(n, ne[d], &n) || n > (UINT64_C(1) << 40))
                return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': dimension ne[%u] = %llu "
                                    "is zero or makes the element count overflow", g->source, TNAME,
                                    d, (unsigned long long)ne[d]);
        }
        if (!ks_reader_u32(&r, &type) || !ks_reader_u64(&r, &off))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': info truncated at byte %zu",
                                g->source, TNAME, r.pos);
        int dt = ggml_to_dtype(type);
        if (dt < 0)
            return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: tensor '%.*s': ggml type %u is not "
                                "supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, "
                                "Q5_K, Q6_K)", g->source, TNAME, type);
        if (ne[0] % (uint64_t)ks_dtype_block_elems((ks_dtype)dt) != 0)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': row length ne[0] = %llu is "
                                "not a multiple of the %s block size %d", g->source, TNAME,
                                (unsigned long long)ne[0], ks_dtype_name((ks_dtype)dt),
                                ks_dtype_block_elems((ks_dtype)dt));
        if (off % alignment != 0)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.*s': offset %llu is not a multiple "
                                "of general.alignment %u", g->source, TNAME, (unsigned long long)off,
                                alignment);
        ti.dtype = (ks_dtype)dt;
        ti.n_dims = (int)nd;
        for (uint32_t d = 0; d < nd; d++) ti.dims[d] = ne[nd - 1 - d];
        ti.n_elems = n;
        if ((s = ks_dtype_nbytes(ti.dtype, n, &ti.nbytes, err))) return s;
        ti.offset = off; /* relative for now */
        ti.source = g->source;
        ti.name = malloc(nl + 1);
        if (!ti.name) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        memcpy(ti.name, nm, nl);
        ti.name[nl] = '\0';
        if ((s = ks_tensor_table_push(tab, &ti, err))) return s;
#undef TNAME
    }
    /* the data section starts at the next multiple of the alignment */
    uint64_t data_start = r.pos;
    if (data_start % alignment) data_start += alignment - data_start % alignment;
    for (size_t i = 0; i < tab->n; i++) {
        ks_tensor_info *t = &tab->v[i];
        if (__builtin_add_overflow(t->offset, data_start, &t->offset))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': offset overflows", g->source,
                                t->name);
    }
    if ((s = ks_tensor_table_check_layout(tab, 0, g->len, g->source, err))) return s;
    for (size_t i = 0; i < tab->n; i++) tab->v[i].data = g->data + tab->v[i].offset;
    return ks_tensor_table_index(tab, err);
}

ks_status ks_gguf_load_mem(ks_model *m, const uint8_t *data, size_t len, const char *source,
                           ks_error *err) {
    gguf_ctx g;
    ks_tensor_table tab = {0};
    ks_status s = gguf_parse_header(&g, data, len, source, err);
    if (s) goto out;

    const gguf_kv *ak = find_kv(&g, "general.architecture");
    const char *arch;
    size_t arch_n;
    if (!ak || !kv_string(ak, &arch, &arch_n)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'general.architecture' is missing or "
                         "not a string", source);
        goto out;
    }
    if (arch_n != 5 || memcmp(arch, "llama", 5) != 0) {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: metadata key 'general.architecture' = '%.*s' "
                         "is not supported (only 'llama')", source, (int)(arch_n > 64 ? 64 : arch_n),
                         arch);
        goto out;
    }
    int alignment = 32;
    if ((s = get_int(&g, "general.alignment", false, 1, 1 << 24, &alignment, err))) goto out;
    if (alignment & (alignment - 1)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'general.alignment' = %d is not a "
                         "power of two", source, alignment);
        goto out;
    }

    ks_config *c = &m->cfg;
    const int big = 1 << 30;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_style = KS_ROPE_STYLE_INTERLEAVED;
    c->n_kv_heads = 0;
    c->head_dim = 0;
    int rope_dims = 0;
    if ((s = get_int(&g, "llama.embedding_length", true, 1, big, &c->dim, err)) ||
        (s = get_int(&g, "llama.feed_forward_length", true, 1, big, &c->hidden_dim, err)) ||
        (s = get_int(&g, "llama.block_count", true, 1, big, &c->n_layers, err)) ||
        (s = get_int(&g, "llama.attention.head_count", true, 1, big, &c->n_heads, err)) ||
        (s = get_int(&g, "llama.attention.head_count_kv", false, 1, big, &c->n_kv_heads, err)) ||
        (s = get_int(&g, "llama.attention.key_length", false, 1, big, &c->head_dim, err)) ||
        (s = get_int(&g, "llama.context_length", true, 1, big, &c->max_seq_len, err)) ||
        (s = get_int(&g, "llama.rope.dimension_count", false, 1, big, &rope_dims, err)) ||
        (s = get_float(&g, "llama.attention.layer_norm_rms_epsilon", &c->rms_eps, err)) ||
        (s = get_float(&g, "llama.rope.freq_base", &c->rope_theta, err)))
        goto out;
    if (!c->n_kv_heads) c->n_kv_heads = c->n_heads;
    if (!c->head_dim) {
        if (c->dim % c->n_heads != 0) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'llama.embedding_length' = %d is "
                             "not divisible by 'llama.attention.head_count' = %d", source, c->dim,
                             c->n_heads);
            goto out;
        }
        c->head_dim = c->dim / c->n_heads;
    }
    if (rope_dims && rope_dims != c->head_dim) {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: metadata key 'llama.rope.dimension_count' = %d "
                         "differs from the head size %d (partial rotary is not supported)", source,
                         rope_dims, c->head_dim);
        goto out;
    }
    const gguf_kv *sk = find_kv(&g, "llama.rope.scaling.type");
    if (sk) {
        const char *st;
        size_t sn;
        if (!kv_string(sk, &st, &sn)) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: metadata key 'llama.rope.scaling.type' is not a "
                             "string", source);
            goto out;
        }
        if (sn == 6 && memcmp(st, "linear", 6) == 0) {
            c->rope_scaling = KS_ROPE_SCALING_LINEAR;
        } else if (!(sn == 4 && memcmp(st, "none", 4) == 0)) {
            s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: metadata key 'llama.rope.scaling.type' = "
                             "'%.*s' is not supported (none, linear)", source,
                             (int)(sn > 64 ? 64 : sn), st);
            goto out;
        }
    }
    if (c->rope_scaling == KS_ROPE_SCALING_NONE && find_kv(&g, "llama.rope.scale_linear"))
        c->rope_scaling = KS_ROPE_SCALING_LINEAR;
    if (c->rope_scaling == KS_ROPE_SCALING_LINEAR) {
        c->rope_factor = 1.0f;
        if ((s = get_float(&g, "llama.rope.scaling.factor", &c->rope_factor, err)) ||
            (s = get_float(&g, "llama.rope.scale_linear", &c->rope_factor, err)))
            goto out;
        c->rope_orig_max_pos = c->max_seq_len;
        if ((s = get_int(&g, "llama.rope.scaling.original_context_length", false, 1, big,
                         &c->rope_orig_max_pos, err)))
            goto out;
    }

    if ((s = gguf_tensors(&g, (uint32_t)alignment, &tab, err))) goto out;
    /* vocabulary size: the embedding's rows, else the tokenizer's, else llama.vocab_size */
    ks_tensor_info *emb = ks_tensor_table_find(&tab, "token_embd.weight");
    const gguf_kv *tk = find_kv(&g, "tokenizer.ggml.tokens");
    if (emb && emb->n_dims == 2 && emb->dims[0] <= (uint64_t)big) {
        c->vocab_size = (int)emb->dims[0];
    } else if (tk && tk->type == G_ARRAY && tk->arr_n <= (uint64_t)big) {
        c->vocab_size = (int)tk->arr_n;
    } else if ((s = get_int(&g, "llama.vocab_size", true, 1, big, &c->vocab_size, err))) {
        goto out;
    }
    if ((s = get_int(&g, "tokenizer.ggml.bos_token_id", false, -1, c->vocab_size - 1, &c->bos_id, err)) ||
        (s = get_int(&g, "tokenizer.ggml.eos_token_id", false, -1, c->vocab_size - 1, &c->eos_id, err)))
        goto out;
    if ((s = ks_config_validate(c, source, err))) goto out;
    if (ks_tensor_table_find(&tab, "rope_freqs.weight")) {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: tensor 'rope_freqs.weight' (llama3-style "
                         "per-frequency RoPE factors) is not supported", source);
        goto out;
    }
    if (tab.n == 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: the file holds no tensors (a vocabulary-only "
                         "GGUF): it can serve as a tokenizer (--tokenizer), not as a model", source);
        goto out;
    }
    if ((s = ks_model_bind_table(m, &tab, KS_NAMING_GGUF, err))) goto out;

    m->format = "gguf";
    const gguf_kv *nk = find_kv(&g, "general.name");
    const gguf_kv *ck = find_kv(&g, "tokenizer.chat_template");
    const char *txt;
    size_t tn;
    char buf[512];
    const char *hint = "plain";
    if (nk && kv_string(nk, &txt, &tn)) {
        snprintf(buf, sizeof buf, "%.*s", (int)(tn > 500 ? 500 : tn), txt);
        hint = ks_guess_template(buf);
    }
    if (!strcmp(hint, "plain") && ck && kv_string(ck, &txt, &tn)) {
        snprintf(buf, sizeof buf, "%.*s", (int)(tn > 500 ? 500 : tn), txt);
        hint = ks_guess_template(buf);
    }
    if (!strcmp(hint, "plain")) hint = ks_guess_template(source);
    snprintf(m->template_hint, sizeof m->template_hint, "%s", hint);

    if (!m->tokenizer_path && tk) {
        ks_tokenizer *tok = NULL;
        if ((s = gguf_tokenizer(&g, &tok, err))) goto out;
        m->tok = tok;
    }
out:
    ks_tensor_table_free(&tab);
    gguf_ctx_free(&g);
    return s;
}

ks_status ks_load_gguf(ks_model *m, const char *path, ks_error *err) {
    const uint8_t *data;
    size_t len;
    ks_status s = ks_model_map_file(m, path, &data, &len, err);
    if (s) return s;
    if ((s = ks_gguf_load_mem(m, data, len, path, err))) return s;
    if (m->tokenizer_path) return ks_model_load_tokenizer(m, m->tokenizer_path, err);
    return KS_OK;
}
