/* tokenizer_load.c — reading tokenizers from their files: SentencePiece tokenizer.model
 * (a ModelProto protobuf), Hugging Face tokenizer.json, llama2.c tokenizer .bin, and GGUF
 * (handed to gguf.c). The kind is recognised from the content.
 *
 * Every reader is bounds-checked against the bytes it was given: each length is compared
 * with what remains before it is used, sums are checked, nothing is trusted. A failure is
 * KS_ERR_FORMAT with "<file>: <field>: <problem>" in the error; a well-formed file of a kind
 * we do not handle (unigram, a character-normalizing normalizer, WordPiece…) is
 * KS_ERR_UNSUPPORTED. Nothing here prints or aborts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "model_private.h"

#define KS_SPACE_SYMBOL "\xE2\x96\x81"

/* Pieces gathered by a reader before the tokenizer is built. */
typedef struct {
    const char **pieces;
    size_t *lens;
    float *scores;
    int *types;
    char **owned; /* strings a reader had to rewrite (llama2.c spaces, JSON keys) */
    int n, cap;
} tok_vocab;

static void vocab_free(tok_vocab *v) {
    if (v->owned)
        for (int i = 0; i < v->n; i++) free(v->owned[i]);
    free(v->pieces);
    free(v->lens);
    free(v->scores);
    free(v->types);
    free(v->owned);
    memset(v, 0, sizeof *v);
}

static bool vocab_reserve(tok_vocab *v, int n) {
    if (n <= v->cap) return true;
    if (n > KS_TOKENIZER_MAX_VOCAB) return false;
    int cap = v->cap ? v->cap : 256;
    while (cap < n) cap = cap > KS_TOKENIZER_MAX_VOCAB / 2 ? KS_TOKENIZER_MAX_VOCAB : cap * 2;
    const char **p = realloc(v->pieces, (size_t)cap * sizeof *p);
    if (p) v->pieces = p;
    size_t *l = realloc(v->lens, (size_t)cap * sizeof *l);
    if (l) v->lens = l;
    float *s = realloc(v->scores, (size_t)cap * sizeof *s);
    if (s) v->scores = s;
    int *t = realloc(v->types, (size_t)cap * sizeof *t);
    if (t) v->types = t;
    char **o = realloc(v->owned, (size_t)cap * sizeof *o);
    if (o) v->owned = o;
    if (!p || !l || !s || !t || !o) return false;
    for (int i = v->cap; i < cap; i++) {
        v->owned[i] = NULL;
        v->pieces[i] = NULL;
        v->lens[i] = 0;
        v->scores[i] = 0;
        v->types[i] = KS_TOKEN_NORMAL;
    }
    v->cap = cap;
    return true;
}

/* ================================================================ protobuf
 * Wire format: each field is a varint key (field number << 3 | wire type) followed by a
 * varint (type 0), 8 bytes (1), a varint length and that many bytes (2) or 4 bytes (5).
 * Groups (3, 4) are obsolete and refused. */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    size_t base; /* offset of p[0] in the file, for messages */
} pb_reader;

typedef struct {
    const char *src;
    ks_error *err;
} pb_ctx;

/* 0 ok, 1 truncated, 2 longer than 10 bytes */
static int pb_varint(pb_reader *r, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->pos >= r->len) return 1;
        uint8_t b = r->p[r->pos++];
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return 2;
}

typedef struct {
    uint32_t field, wt;
    uint64_t u;                   /* wire type 0, 1, 5 */
    const uint8_t *data;          /* wire type 2 */
    size_t dlen, dpos;            /* wire type 2: length and file offset of the payload */
    size_t at;                    /* file offset of the key */
} pb_field;

/* Read one field; what names the enclosing message for errors ("pieces[3]"). */
static ks_status pb_next(pb_reader *r, pb_field *f, const char *what, const pb_ctx *c) {
    uint64_t key;
    f->at = r->base + r->pos;
    int e = pb_varint(r, &key);
    if (e)
        return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s: %s field key at byte %zu", c->src, what,
                            e == 1 ? "truncated" : "overlong varint in", f->at);
    f->field = (uint32_t)(key >> 3);
    f->wt = (uint32_t)(key & 7);
    if (key >> 3 == 0 || key >> 3 > 0x1FFFFFFF)
        return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s: invalid field number at byte %zu",
                            c->src, what, f->at);
    switch (f->wt) {
    case 0:
        e = pb_varint(r, &f->u);
        if (e)
            return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s: field %u: %s varint at byte %zu",
                                c->src, what, f->field, e == 1 ? "truncated" : "overlong",
                                r->base + r->pos);
        return KS_OK;
    case 1:
    case 5: {
        size_t n = f->wt == 1 ? 8 : 4;
        if (r->len - r->pos < n)
            return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s: field %u: truncated fixed%zu at byte %zu",
                                c->src, what, f->field, n * 8, r->base + r->pos);
        f->u = 0;
        for (size_t i = 0; i < n; i++) f->u |= (uint64_t)r->p[r->pos + i] << (8 * i);
        r->pos += n;
        return KS_OK;
    }
    case 2: {
        uint64_t n;
        e = pb_varint(r, &n);
        if (e)
            return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s: field %u: %s length at byte %zu",
                                c->src, what, f->field, e == 1 ? "truncated" : "overlong",
                                r->base + r->pos);
        if (n > r->len - r->pos)
            return ks_error_set(c->err, KS_ERR_FORMAT,
                                "%s: %s: field %u: length %llu at byte %zu runs past the end (%zu bytes left)",
                                c->src, what, f->field, (unsigned long long)n, r->base + r->pos,
                                r->len - r->pos);
        f->data = r->p + r->pos;
        f->dlen = (size_t)n;
        f->dpos = r->base + r->pos;
        r->pos += (size_t)n;
        return KS_OK;
    }
    default:
        return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s: field %u: unsupported wire type %u at byte %zu",
                            c->src, what, f->field, f->wt, f->at);
    }
}

static ks_status pb_expect(const pb_field *f, uint32_t wt, const char *what, const char *name,
                           const pb_ctx *c) {
    if (f->wt == wt) return KS_OK;
    return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s.%s: wire type %u, expected %u at byte %zu",
                        c->src, what, name, f->wt, wt, f->at);
}

typedef struct {
    int model_type; /* 1 unigram (the default), 2 bpe, 3 word, 4 char */
    bool byte_fallback;
    bool treat_ws_as_suffix;
    const uint8_t *unk_surface;
    size_t unk_surface_len;
    bool have_unk_surface;
    const uint8_t *bos_piece, *eos_piece;
    size_t bos_len, eos_len;
    /* normalizer */
    char norm_name[64];
    size_t charsmap_len;
    bool add_dummy_prefix, remove_extra_ws, escape_ws;
} pb_model_info;

static ks_status pb_piece(const pb_field *outer, int idx, tok_vocab *v, const pb_ctx *c) {
    pb_reader r = {outer->data, outer->dlen, 0, outer->dpos};
    char what[48];
    snprintf(what, sizeof what, "pieces[%d]", idx);
    bool have_piece = false;
    while (r.pos < r.len) {
        pb_field f;
        ks_status st = pb_next(&r, &f, what, c);
        if (st) return st;
        if (f.field == 1) {
            if ((st = pb_expect(&f, 2, what, "piece", c))) return st;
            v->pieces[idx] = (const char *)f.data;
            v->lens[idx] = f.dlen;
            have_piece = true;
        } else if (f.field == 2) {
            if ((st = pb_expect(&f, 5, what, "score", c))) return st;
            uint32_t u = (uint32_t)f.u;
            float s;
            memcpy(&s, &u, sizeof s);
            v->scores[idx] = s;
        } else if (f.field == 3) {
            if ((st = pb_expect(&f, 0, what, "type", c))) return st;
            if (f.u < KS_TOKEN_NORMAL || f.u > KS_TOKEN_BYTE)
                return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s.type: invalid value %llu at byte %zu",
                                    c->src, what, (unsigned long long)f.u, f.at);
            v->types[idx] = (int)f.u;
        }
    }
    if (!have_piece || v->lens[idx] == 0)
        return ks_error_set(c->err, KS_ERR_FORMAT, "%s: %s.piece: missing or empty (message at byte %zu)",
                            c->src, what, outer->dpos);
    return KS_OK;
}

static ks_status pb_trainer(const pb_field *outer, pb_model_info *mi, const pb_ctx *c) {
    pb_reader r = {outer->data, outer->dlen, 0, outer->dpos};
    const char *what = "trainer_spec";
    while (r.pos < r.len) {
        pb_field f;
        ks_status st = pb_next(&r, &f, what, c);
        if (st) return st;
        switch (f.field) {
        case 3:
            if ((st = pb_expect(&f, 0, what, "model_type", c))) return st;
            mi->model_type = f.u > 100 ? 100 : (int)f.u;
            break;
        case 24:
            if ((st = pb_expect(&f, 0, what, "treat_whitespace_as_suffix", c))) return st;
            mi->treat_ws_as_suffix = f.u != 0;
            break;
        case 35:
            if ((st = pb_expect(&f, 0, what, "byte_fallback", c))) return st;
            mi->byte_fallback = f.u != 0;
            break;
        case 44:
            if ((st = pb_expect(&f, 2, what, "unk_surface", c))) return st;
            mi->unk_surface = f.data;
            mi->unk_surface_len = f.dlen;
            mi->have_unk_surface = true;
            break;
        case 46:
            if ((st = pb_expect(&f, 2, what, "bos_piece", c))) return st;
            mi->bos_piece = f.data;
            mi->bos_len = f.dlen;
            break;
        case 47:
            if ((st = pb_expect(&f, 2, what, "eos_piece", c))) return st;
            mi->eos_piece = f.data;
            mi->eos_len = f.dlen;
            break;
        default:
            break;
        }
    }
    return KS_OK;
}

static ks_status pb_normalizer(const pb_field *outer, pb_model_info *mi, const pb_ctx *c) {
    pb_reader r = {outer->data, outer->dlen, 0, outer->dpos};
    const char *what = "normalizer_spec";
    while (r.pos < r.len) {
        pb_field f;
        ks_status st = pb_next(&r, &f, what, c);
        if (st) return st;
        switch (f.field) {
        case 1: {
            if ((st = pb_expect(&f, 2, what, "name", c))) return st;
            size_t n = f.dlen < sizeof mi->norm_name - 1 ? f.dlen : sizeof mi->norm_name - 1;
            memcpy(mi->norm_name, f.data, n);
            mi->norm_name[n] = '\0';
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)mi->norm_name[i] < 0x20 || (unsigned char)mi->norm_name[i] > 0x7E)
                    mi->norm_name[i] = '?';
            break;
        }
        case 2:
            if ((st = pb_expect(&f, 2, what, "precompiled_charsmap", c))) return st;
            mi->charsmap_len = f.dlen;
            break;
        case 3:
            if ((st = pb_expect(&f, 0, what, "add_dummy_prefix", c))) return st;
            mi->add_dummy_prefix = f.u != 0;
            break;
        case 4:
            if ((st = pb_expect(&f, 0, what, "remove_extra_whitespaces", c))) return st;
            mi->remove_extra_ws = f.u != 0;
            break;
        case 5:
            if ((st = pb_expect(&f, 0, what, "escape_whitespaces", c))) return st;
            mi->escape_ws = f.u != 0;
            break;
        default:
            break;
        }
    }
    return KS_OK;
}

static int vocab_find(const tok_vocab *v, const uint8_t *s, size_t n) {
    for (int i = 0; i < v->n; i++)
        if (v->lens[i] == n && memcmp(v->pieces[i], s, n) == 0) return i;
    return -1;
}

static ks_status load_protobuf(const uint8_t *data, size_t len, const char *src, ks_tokenizer **out,
                               ks_error *err) {
    pb_ctx c = {src, err};
    pb_reader r = {data, len, 0, 0};
    pb_model_info mi = {.model_type = 1, .add_dummy_prefix = true, .remove_extra_ws = true,
                        .escape_ws = true};
    strcpy(mi.norm_name, "nmt_nfkc");
    tok_vocab v = {0};
    ks_status st = KS_OK;
    while (r.pos < r.len) {
        pb_field f;
        if ((st = pb_next(&r, &f, "ModelProto", &c))) goto out;
        if (f.field == 1) {
            if ((st = pb_expect(&f, 2, "ModelProto", "pieces", &c))) goto out;
            if (!vocab_reserve(&v, v.n + 1)) {
                st = v.n + 1 > KS_TOKENIZER_MAX_VOCAB
                         ? ks_error_set(err, KS_ERR_FORMAT, "%s: pieces: more than %d pieces", src,
                                        KS_TOKENIZER_MAX_VOCAB)
                         : ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
                goto out;
            }
            v.scores[v.n] = 0.0f;
            v.types[v.n] = KS_TOKEN_NORMAL;
            if ((st = pb_piece(&f, v.n, &v, &c))) goto out;
            v.n++;
        } else if (f.field == 2) {
            if ((st = pb_expect(&f, 2, "ModelProto", "trainer_spec", &c))) goto out;
            if ((st = pb_trainer(&f, &mi, &c))) goto out;
        } else if (f.field == 3) {
            if ((st = pb_expect(&f, 2, "ModelProto", "normalizer_spec", &c))) goto out;
            if ((st = pb_normalizer(&f, &mi, &c))) goto out;
        }
    }
    if (v.n == 0) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: pieces: the model has no pieces", src);
        goto out;
    }
    if (mi.model_type != 2) {
        static const char *names[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
        st = ks_error_set(err, KS_ERR_UNSUPPORTED,
                          "%s: trainer_spec.model_type: %s (%d) — only BPE SentencePiece models are supported",
                          src, mi.model_type >= 0 && mi.model_type <= 4 ? names[mi.model_type] : "?",
                          mi.model_type);
        goto out;
    }
    if (mi.treat_ws_as_suffix) {
        st = ks_error_set(err, KS_ERR_UNSUPPORTED,
                          "%s: trainer_spec.treat_whitespace_as_suffix: not supported", src);
        goto out;
    }
    if (mi.charsmap_len > 0) {
        st = ks_error_set(err, KS_ERR_UNSUPPORTED,
                          "%s: normalizer_spec: character normalization \"%s\" (precompiled_charsmap) is not supported; only the identity normalizer is",
                          src, mi.norm_name);
        goto out;
    }
    int bos = vocab_find(&v, mi.bos_piece ? mi.bos_piece : (const uint8_t *)"<s>",
                         mi.bos_piece ? mi.bos_len : 3);
    int eos = vocab_find(&v, mi.eos_piece ? mi.eos_piece : (const uint8_t *)"</s>",
                         mi.eos_piece ? mi.eos_len : 4);
    ks_tokenizer_spec s = {
        .n_vocab = v.n, .pieces = v.pieces, .lens = v.lens, .scores = v.scores, .types = v.types,
        .bos_id = bos, .eos_id = eos, .unk_id = -1, .byte_fallback = mi.byte_fallback,
        .add_dummy_prefix = mi.add_dummy_prefix, .remove_extra_whitespaces = mi.remove_extra_ws,
        .escape_whitespaces = mi.escape_ws,
        .unk_surface = mi.have_unk_surface ? (const char *)mi.unk_surface : NULL,
        .unk_surface_len = mi.unk_surface_len, .source = src,
    };
    st = ks_tokenizer_build(&s, out, err);
out:
    vocab_free(&v);
    return st;
}

/* ================================================================ llama2.c .bin
 * int32 max_token_length, then per token: float32 score, int32 length, the bytes. Spaces
 * are plain spaces; ids 0, 1, 2 are <unk>, BOS ("\n<s>\n"), EOS ("\n</s>\n"). The file does
 * not store the vocabulary size: tokens run to the end of the file. */

static ks_status load_llama2c(const uint8_t *data, size_t len, const char *src, ks_tokenizer **out,
                              ks_error *err) {
    ks_reader r = {data, len, 0};
    uint32_t max_len;
    if (!ks_reader_u32(&r, &max_len))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: max_token_length: truncated header (%zu bytes)",
                            src, len);
    if (max_len == 0 || max_len > (1u << 20))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: max_token_length: %u out of range", src, max_len);
    tok_vocab v = {0};
    ks_status st = KS_OK;
    while (r.pos < r.len) {
        int i = v.n;
        uint32_t score_bits, n;
        const uint8_t *bytes;
        size_t at = r.pos;
        if (!ks_reader_u32(&r, &score_bits)) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: tokens[%d].score: truncated at byte %zu", src, i, at);
            goto out;
        }
        at = r.pos;
        if (!ks_reader_u32(&r, &n)) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: tokens[%d].len: truncated at byte %zu", src, i, at);
            goto out;
        }
        if (n == 0 || n > max_len) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: tokens[%d].len: %d at byte %zu is not in [1, max_token_length = %u]",
                              src, i, (int32_t)n, at, max_len);
            goto out;
        }
        if (!ks_reader_bytes(&r, n, &bytes)) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: tokens[%d].bytes: %u bytes at byte %zu run past the end",
                              src, i, n, r.pos);
            goto out;
        }
        if (!vocab_reserve(&v, i + 1)) {
            st = i + 1 > KS_TOKENIZER_MAX_VOCAB
                     ? ks_error_set(err, KS_ERR_FORMAT, "%s: more than %d tokens", src, KS_TOKENIZER_MAX_VOCAB)
                     : ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
            goto out;
        }
        v.n = i + 1;
        memcpy(&v.scores[i], &score_bits, sizeof score_bits);
        /* SentencePiece spelling: ' ' -> U+2581; BOS/EOS as <s> and </s>. */
        const char *fixed = i == 0 ? "<unk>" : i == 1 ? "<s>" : i == 2 ? "</s>" : NULL;
        size_t spaces = 0;
        for (uint32_t k = 0; k < n; k++) spaces += bytes[k] == ' ';
        size_t nl = fixed ? strlen(fixed) : n + 2 * spaces;
        char *p = malloc(nl + 1);
        if (!p) {
            st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
            goto out;
        }
        v.owned[i] = p;
        if (fixed) {
            memcpy(p, fixed, nl);
        } else {
            size_t o = 0;
            for (uint32_t k = 0; k < n; k++) {
                if (bytes[k] == ' ') {
                    memcpy(p + o, KS_SPACE_SYMBOL, 3);
                    o += 3;
                } else {
                    p[o++] = (char)bytes[k];
                }
            }
        }
        p[nl] = '\0';
        v.pieces[i] = p;
        v.lens[i] = nl;
        v.types[i] = i == 0 ? KS_TOKEN_UNKNOWN : i <= 2 ? KS_TOKEN_CONTROL : KS_TOKEN_NORMAL;
        if (i > 2 && nl == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' &&
            strchr("0123456789ABCDEF", p[3]) && strchr("0123456789ABCDEF", p[4]) && p[3] && p[4])
            v.types[i] = KS_TOKEN_BYTE;
    }
    if (v.n < 3) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: %d tokens; a llama2.c tokenizer has at least <unk>, BOS and EOS",
                          src, v.n);
        goto out;
    }
    ks_tokenizer_spec s = {
        .n_vocab = v.n, .pieces = v.pieces, .lens = v.lens, .scores = v.scores, .types = v.types,
        .bos_id = 1, .eos_id = 2, .unk_id = 0, .byte_fallback = -1, .add_dummy_prefix = true,
        .escape_whitespaces = true, .source = src,
    };
    st = ks_tokenizer_build(&s, out, err);
out:
    vocab_free(&v);
    return st;
}

/* ================================================================ tokenizer.json */

static ks_status json_normalizer(const json_t *n, const char *src, bool *dummy, bool *escape,
                                 const char *path, ks_error *err) {
    if (!n || json_is_null(n)) return KS_OK;
    if (!json_is_object(n))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %s: not an object", src, path);
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type) return ks_error_set(err, KS_ERR_FORMAT, "%s: %s.type: missing", src, path);
    if (strcmp(type, "Sequence") == 0) {
        const json_t *a = json_object_get(n, "normalizers");
        if (!json_is_array(a))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: %s.normalizers: not an array", src, path);
        for (size_t i = 0; i < json_array_size(a); i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
            ks_status st = json_normalizer(json_array_get(a, i), src, dummy, escape, sub, err);
            if (st) return st;
        }
        return KS_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *p = json_string_value(json_object_get(n, "prepend"));
        if (!p || strcmp(p, KS_SPACE_SYMBOL) != 0)
            return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: %s.prepend: only \"\xE2\x96\x81\" is supported",
                                src, path);
        *dummy = true;
        return KS_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const char *from = json_string_value(json_object_get(json_object_get(n, "pattern"), "String"));
        const char *to = json_string_value(json_object_get(n, "content"));
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, KS_SPACE_SYMBOL) != 0)
            return ks_error_set(err, KS_ERR_UNSUPPORTED,
                                "%s: %s: only Replace \" \" -> \"\xE2\x96\x81\" is supported", src, path);
        *escape = true;
        return KS_OK;
    }
    return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: %s.type: normalizer \"%.64s\" is not supported",
                        src, path, type);
}

/* The tokenizer.json's model.vocab, model.merges and added_tokens. */
static ks_status load_json(const uint8_t *data, size_t len, const char *src, ks_tokenizer **out,
                           ks_error *err) {
    json_error_t je;
    json_t *root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", src,
                            je.line, je.column, je.text);
    ks_status st = KS_OK;
    tok_vocab v = {0};
    int *ml = NULL, *mr = NULL;
    ks_tokenizer *t = NULL;
    if (!json_is_object(root)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: the top level is not an object", src);
        goto out;
    }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model: missing or not an object", src);
        goto out;
    }
    const json_t *jt = json_object_get(model, "type");
    if (jt && !json_is_string(jt)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.type: not a string", src);
        goto out;
    }
    if (jt && strcmp(json_string_value(jt), "BPE") != 0) {
        st = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: model.type: \"%.64s\" — only BPE is supported",
                          src, json_string_value(jt));
        goto out;
    }
    static const char *must_be_null[] = {"continuing_subword_prefix", "end_of_word_suffix", "dropout"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *x = json_object_get(model, must_be_null[i]);
        if (x && !json_is_null(x) && !(i == 2 && json_is_number(x) && json_number_value(x) == 0) &&
            !(i < 2 && json_is_string(x) && json_string_length(x) == 0)) {
            st = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: model.%s: not supported", src, must_be_null[i]);
            goto out;
        }
    }
    const json_t *jbf = json_object_get(model, "byte_fallback");
    const json_t *jfu = json_object_get(model, "fuse_unk");
    if ((jbf && !json_is_boolean(jbf)) || (jfu && !json_is_boolean(jfu))) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.byte_fallback/fuse_unk: not a boolean", src);
        goto out;
    }
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.vocab: missing or not an object", src);
        goto out;
    }
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: added_tokens: not an array", src);
        goto out;
    }
    /* Size: one past the largest id. */
    json_int_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= KS_TOKENIZER_MAX_VOCAB) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.vocab[\"%.64s\"]: id is not an integer in [0, %d)",
                              src, key, KS_TOKENIZER_MAX_VOCAB);
            goto out;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    size_t n_added = added ? json_array_size(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i);
        const json_t *id = json_object_get(a, "id");
        if (!json_is_object(a) || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= KS_TOKENIZER_MAX_VOCAB ||
            !json_is_string(json_object_get(a, "content"))) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: added_tokens[%zu]: needs an integer id in [0, %d) and a string content",
                              src, i, KS_TOKENIZER_MAX_VOCAB);
            goto out;
        }
        if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
    }
    /* ids must be dense, so the size cannot exceed the number of entries: checked before
     * allocating anything for it */
    if ((size_t)(max_id + 1) > json_object_size(vocab) + n_added) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.vocab: ids run up to %lld but there are only %zu entries",
                          src, (long long)max_id, json_object_size(vocab) + n_added);
        goto out;
    }
    int n = (int)(max_id + 1);
    if (n <= 0) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.vocab: empty", src);
        goto out;
    }
    if (!vocab_reserve(&v, n)) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory for %d pieces", src, n);
        goto out;
    }
    v.n = n;
    for (int i = 0; i < n; i++) v.types[i] = 0; /* 0 = not seen yet */
    json_object_foreach((json_t *)vocab, key, val) {
        int id = (int)json_integer_value(val);
        if (v.pieces[id]) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.vocab[\"%.64s\"]: id %d already used by \"%.64s\"",
                              src, key, id, v.pieces[id]);
            goto out;
        }
        v.pieces[id] = key;
        v.lens[id] = strlen(key);
        v.types[id] = KS_TOKEN_NORMAL;
    }
    const char *unk_tok = json_string_value(json_object_get(model, "unk_token"));
    int unk = -1, bos = -1, eos = -1;
    for (size_t i = 0; i < n_added; i++) {
        const json_t *a = json_array_get(added, i);
        int id = (int)json_integer_value(json_object_get(a, "id"));
        const char *content = json_string_value(json_object_get(a, "content"));
        size_t cl = json_string_length(json_object_get(a, "content"));
        if (v.pieces[id] && (v.lens[id] != cl || memcmp(v.pieces[id], content, cl) != 0)) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: added_tokens[%zu]: id %d is \"%.64s\" in model.vocab but \"%.64s\" here",
                              src, i, id, v.pieces[id], content);
            goto out;
        }
        v.pieces[id] = content;
        v.lens[id] = cl;
        bool special = json_is_true(json_object_get(a, "special"));
        if (unk_tok && strcmp(content, unk_tok) == 0) {
            v.types[id] = KS_TOKEN_UNKNOWN;
        } else {
            v.types[id] = special ? KS_TOKEN_CONTROL : KS_TOKEN_USER_DEFINED;
        }
        if (special && strcmp(content, "<s>") == 0) bos = id;
        if (special && strcmp(content, "</s>") == 0) eos = id;
    }
    bool byte_fallback = json_is_true(jbf);
    for (int i = 0; i < n; i++) {
        if (!v.pieces[i]) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.vocab: no piece has id %d (ids must run from 0 to %d)",
                              src, i, n - 1);
            goto out;
        }
        if (unk_tok && v.types[i] == KS_TOKEN_NORMAL && strcmp(v.pieces[i], unk_tok) == 0)
            v.types[i] = KS_TOKEN_UNKNOWN;
        if (unk_tok && v.types[i] == KS_TOKEN_UNKNOWN) unk = unk < 0 ? i : unk;
        if (byte_fallback && v.types[i] == KS_TOKEN_NORMAL && v.lens[i] == 6 &&
            memcmp(v.pieces[i], "<0x", 3) == 0 && v.pieces[i][5] == '>' &&
            strchr("0123456789ABCDEF", v.pieces[i][3]) && strchr("0123456789ABCDEF", v.pieces[i][4]))
            v.types[i] = KS_TOKEN_BYTE;
    }
    if (unk_tok && unk < 0) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.unk_token: \"%.64s\" is not in the vocabulary", src, unk_tok);
        goto out;
    }
    bool dummy = false, escape = false, split = false;
    if ((st = json_normalizer(json_object_get(root, "normalizer"), src, &dummy, &escape,
                              "normalizer", err)))
        goto out;
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    if (pre && !json_is_null(pre)) {
        const char *ptype = json_string_value(json_object_get(pre, "type"));
        if (!ptype || strcmp(ptype, "Metaspace") != 0) {
            st = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: pre_tokenizer.type: \"%.64s\" — only Metaspace (or none) is supported",
                              src, ptype ? ptype : "(missing)");
            goto out;
        }
        const char *rep = json_string_value(json_object_get(pre, "replacement"));
        if (rep && strcmp(rep, KS_SPACE_SYMBOL) != 0) {
            st = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: pre_tokenizer.replacement: only \"\xE2\x96\x81\" is supported", src);
            goto out;
        }
        escape = true;
        const char *scheme = json_string_value(json_object_get(pre, "prepend_scheme"));
        const json_t *aps = json_object_get(pre, "add_prefix_space");
        dummy = scheme ? strcmp(scheme, "never") != 0 : (aps ? json_is_true(aps) : true);
        const json_t *sp = json_object_get(pre, "split");
        split = sp ? json_is_true(sp) : true;
    }
    ks_tokenizer_spec s = {
        .n_vocab = n, .pieces = v.pieces, .lens = v.lens, .scores = NULL, .types = v.types,
        .bos_id = bos, .eos_id = eos, .unk_id = unk, .byte_fallback = byte_fallback,
        .add_dummy_prefix = dummy, .escape_whitespaces = escape, .split_on_space_symbol = split,
        .source = src,
    };
    /* Merges: "a b" strings (tokenizers < 0.20 style) or ["a", "b"] pairs. */
    const json_t *merges = json_object_get(model, "merges");
    if (merges && !json_is_array(merges)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.merges: not an array", src);
        goto out;
    }
    size_t nm = merges ? json_array_size(merges) : 0;
    if (nm > (size_t)KS_TOKENIZER_MAX_VOCAB * 4) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.merges: too many (%zu)", src, nm);
        goto out;
    }
    ml = malloc((nm + 1) * sizeof *ml);
    mr = malloc((nm + 1) * sizeof *mr);
    if (!ml || !mr) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
        goto out;
    }
    for (size_t i = 0; i < nm; i++) {
        const json_t *m = json_array_get(merges, i);
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (json_is_string(m)) {
            const char *s0 = json_string_value(m);
            const char *spc = strchr(s0, ' ');
            if (spc && !strchr(spc + 1, ' ')) {
                a = s0;
                al = (size_t)(spc - s0);
                b = spc + 1;
                bl = strlen(b);
            }
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bl = json_string_length(json_array_get(m, 1));
        }
        if (!a) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.merges[%zu]: not \"a b\" or [\"a\", \"b\"]", src, i);
            goto out;
        }
        /* look the halves up in model.vocab (a JSON object: needs NUL-terminated keys) */
        char *ka = strndup(a, al), *kb = strndup(b, bl);
        if (!ka || !kb) {
            free(ka);
            free(kb);
            st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
            goto out;
        }
        const json_t *ia = json_object_get(vocab, ka), *ib = json_object_get(vocab, kb);
        if (!ia || !ib) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: model.merges[%zu]: \"%.64s\" is not in model.vocab",
                              src, i, !ia ? ka : kb);
            free(ka);
            free(kb);
            goto out;
        }
        free(ka);
        free(kb);
        ml[i] = (int)json_integer_value(ia);
        mr[i] = (int)json_integer_value(ib);
    }
    if ((st = ks_tokenizer_build(&s, &t, err))) goto out;
    if ((st = ks_tokenizer_set_merges(t, (int)nm, ml, mr, json_is_true(jfu), src, err))) goto out;
    *out = t;
    t = NULL;
out:
    ks_tokenizer_free(t);
    free(ml);
    free(mr);
    /* v's pieces point into root's strings: free v before root, and owned[] is all NULL */
    vocab_free(&v);
    json_decref(root);
    return st;
}

/* ================================================================ detection */

ks_status ks_tokenizer_from_memory(const uint8_t *data, size_t len, const char *source,
                                   ks_tokenizer **out, ks_error *err) {
    const char *src = source ? source : "tokenizer";
    if (!out) return ks_error_set(err, KS_ERR_ARG, "%s: out is NULL", src);
    *out = NULL;
    if (!data || len == 0) return ks_error_set(err, KS_ERR_FORMAT, "%s: empty file", src);
    if (len >= 4 && memcmp(data, "GGUF", 4) == 0)
        return ks_gguf_tokenizer_mem(data, len, src, out, err);
    size_t i = 0;
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) i = 3;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r')) i++;
    if (i < len && data[i] == '{') return load_json(data, len, src, out, err);
    /* A ModelProto starts with its pieces (field 1, length-delimited: 0x0A). A llama2.c
     * file starting 0A 00 00 00 (max_token_length 10) would be a zero-length piece followed
     * by field number 0, which no protobuf has. */
    if (data[0] == 0x0A && !(len >= 4 && data[1] == 0 && data[2] == 0 && data[3] == 0))
        return load_protobuf(data, len, src, out, err);
    if (len >= 4 && data[3] == 0 && data[2] < 0x10)
        return load_llama2c(data, len, src, out, err);
    return ks_error_set(err, KS_ERR_FORMAT,
                        "%s: not a tokenizer (neither GGUF, SentencePiece protobuf, tokenizer.json nor llama2.c .bin)",
                        src);
}

ks_status ks_tokenizer_open(const char *path, ks_tokenizer **out, ks_error *err) {
    if (!path || !out) return ks_error_set(err, KS_ERR_ARG, "ks_tokenizer_open: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char magic[4];
    size_t got = fread(magic, 1, 4, f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
        /* A GGUF can be a whole model: let gguf.c map it rather than read it. */
        fclose(f);
        return ks_gguf_open_tokenizer(path, out, err);
    }
    ks_status st = KS_OK;
    uint8_t *buf = NULL;
    long size;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = ks_error_set(err, KS_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
        goto out;
    }
    if ((unsigned long)size > (1ul << 30)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: %ld bytes is too large for a tokenizer", path, size);
        goto out;
    }
    buf = malloc(size > 0 ? (size_t)size : 1);
    if (!buf) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    if (size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        st = ks_error_set(err, KS_ERR_IO, "%s: read error", path);
        goto out;
    }
    st = ks_tokenizer_from_memory(buf, (size_t)size, path, out, err);
out:
    free(buf);
    fclose(f);
    return st;
}
