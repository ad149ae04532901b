/* tokenizer.c — LLaMA's SentencePiece BPE: the vocabulary, encoding and decoding.
 *
 * Encoding follows SentencePiece 0.1.97 (normalizer + bpe_model + EncodeAsIds):
 *   1. normalize: empty text stays empty; optionally drop leading/trailing and repeated
 *      spaces (remove_extra_whitespaces); prepend U+2581 (add_dummy_prefix); turn ' ' into
 *      U+2581 (escape_whitespaces); a byte that does not start valid UTF-8 becomes U+FFFD.
 *   2. split into symbols: a user-defined piece matched greedily (longest first) is one
 *      frozen symbol, anything else one UTF-8 character.
 *   3. merge: a max-heap of adjacent pairs whose concatenation is a NORMAL/USER_DEFINED/
 *      UNUSED piece, by piece score, ties to the leftmost pair; stale entries are skipped by
 *      checking the two symbols' lengths, as SentencePiece does. O(n log n).
 *   4. output: each symbol's id (reserved pieces looked up first, then the others, else
 *      unk); an UNUSED piece is split again into the pair that made it; an unknown symbol
 *      becomes its bytes' <0xNN> pieces under byte_fallback, else runs of unknowns fuse.
 * Tokenizers loaded from a Hugging Face tokenizer.json instead merge by merge rank over
 * (left id, right id) pairs, which is what HF tokenizers' BPE does; everything else is
 * shared. Control-token look-alikes in text are plain text: CONTROL pieces are never merge
 * targets.
 *
 * Decoding follows SentencePiece's DecodeIds: control pieces vanish; runs of byte pieces are
 * joined and read as UTF-8, each byte that does not form a valid character giving U+FFFD;
 * <unk> gives the unk surface (" \u2047 "); U+2581 becomes ' '; the first piece that is not
 * a control piece loses one leading U+2581.
 *
 * The loaders (protobuf, tokenizer.json, llama2.c .bin) are in tokenizer_load.c. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_private.h"

#define KS_SPACE_SYMBOL "\xE2\x96\x81" /* U+2581, SentencePiece's spelling of ' ' */
#define KS_SPACE_SYMBOL_LEN 3
#define KS_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */
#define KS_DEFAULT_UNK_SURFACE " \xE2\x81\x87 "

/* ---------------------------------------------------------------- hash maps */

/* Open addressing, power-of-two capacity, slot = id + 1 (0 = empty). Keys are the piece
 * bytes, which live in the tokenizer's arena. */
typedef struct {
    uint32_t *slots;
    uint32_t mask;
} tok_strmap;

/* (left id, right id) -> (rank, merged id), for tokenizers with explicit merges. */
typedef struct {
    uint64_t key; /* UINT64_MAX = empty */
    int32_t rank;
    int32_t id;
} tok_pair_slot;

struct ks_tokenizer {
    int n_vocab;
    char *arena;      /* every piece, NUL-terminated */
    size_t *off;      /* (n_vocab) offset of each piece in arena */
    uint32_t *len;    /* (n_vocab) byte length of each piece */
    float *scores;    /* (n_vocab) */
    uint8_t *types;   /* (n_vocab) ks_token_type */
    int bos, eos, unk;
    int byte_id[256]; /* id of <0xNN>, -1 when absent */
    bool byte_fallback;
    bool add_dummy_prefix, remove_extra_ws, escape_ws, split_ws;
    bool has_unused;
    char *unk_surface;
    size_t unk_surface_len;

    tok_strmap normal;   /* NORMAL, USER_DEFINED, UNUSED: merge targets */
    tok_strmap reserved; /* CONTROL, UNKNOWN, BYTE */
    int *ud_lens;        /* distinct byte lengths of user-defined pieces, longest first */
    int n_ud_lens;

    /* explicit merges (tokenizer.json); NULL for score-driven SentencePiece BPE */
    tok_pair_slot *pairs;
    uint64_t pair_mask;
    bool fuse_unk;
};

static uint64_t tok_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t tok_hash_pair(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ (k >> 33);
}

static const char *tok_piece_ptr(const ks_tokenizer *t, int id) { return t->arena + t->off[id]; }

static int strmap_find(const ks_tokenizer *t, const tok_strmap *m, const char *s, size_t n) {
    if (!m->slots) return -1;
    uint64_t i = tok_hash(s, n) & m->mask;
    for (;;) {
        uint32_t v = m->slots[i];
        if (v == 0) return -1;
        int id = (int)(v - 1);
        if (t->len[id] == n && memcmp(tok_piece_ptr(t, id), s, n) == 0) return id;
        i = (i + 1) & m->mask;
    }
}

/* Insert id; returns the id already holding the same string, or -1 when inserted. */
static int strmap_insert(const ks_tokenizer *t, tok_strmap *m, int id) {
    const char *s = tok_piece_ptr(t, id);
    size_t n = t->len[id];
    uint64_t i = tok_hash(s, n) & m->mask;
    for (;;) {
        uint32_t v = m->slots[i];
        if (v == 0) {
            m->slots[i] = (uint32_t)id + 1;
            return -1;
        }
        int other = (int)(v - 1);
        if (t->len[other] == n && memcmp(tok_piece_ptr(t, other), s, n) == 0) return other;
        i = (i + 1) & m->mask;
    }
}

static bool strmap_init(tok_strmap *m, int n) {
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2u) cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    return m->slots != NULL;
}

static bool tok_is_normal_class(int type) {
    return type == KS_TOKEN_NORMAL || type == KS_TOKEN_USER_DEFINED || type == KS_TOKEN_UNUSED;
}

/* <0xNN> with upper-case hex, as SentencePiece writes byte pieces; -1 otherwise. */
static int tok_byte_value(const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *a = memchr(hex, s[3], 16), *b = memchr(hex, s[4], 16);
    if (!a || !b) return -1;
    return (int)((a - hex) * 16 + (b - hex));
}

/* ---------------------------------------------------------------- building */

void ks_tokenizer_free(ks_tokenizer *t) {
    if (!t) return;
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->scores);
    free(t->types);
    free(t->unk_surface);
    free(t->normal.slots);
    free(t->reserved.slots);
    free(t->ud_lens);
    free(t->pairs);
    free(t);
}

static int cmp_int_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x < y) - (x > y);
}

ks_status ks_tokenizer_build(const ks_tokenizer_spec *s, ks_tokenizer **out, ks_error *err) {
    const char *src = s->source ? s->source : "vocabulary";
    *out = NULL;
    if (s->n_vocab <= 0) return ks_error_set(err, KS_ERR_FORMAT, "%s: the vocabulary has no pieces", src);
    if (s->n_vocab > KS_TOKENIZER_MAX_VOCAB)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %d pieces, more than the %d supported", src,
                            s->n_vocab, KS_TOKENIZER_MAX_VOCAB);
    int n = s->n_vocab;
    ks_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
    ks_status st = KS_OK;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t l = s->lens[i];
        if (l == 0) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: pieces[%d]: empty piece", src, i);
            goto fail;
        }
        if (l > UINT32_MAX / 2 || total > SIZE_MAX - l - 1) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: pieces[%d]: piece too long", src, i);
            goto fail;
        }
        total += l + 1;
    }
    t->n_vocab = n;
    t->arena = malloc(total);
    t->off = malloc((size_t)n * sizeof *t->off);
    t->len = malloc((size_t)n * sizeof *t->len);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    t->types = malloc((size_t)n);
    t->ud_lens = malloc((size_t)n * sizeof *t->ud_lens);
    if (!t->arena || !t->off || !t->len || !t->scores || !t->types || !t->ud_lens ||
        !strmap_init(&t->normal, n) || !strmap_init(&t->reserved, n)) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory for %d pieces", src, n);
        goto fail;
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->bos = t->eos = t->unk = -1;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        size_t l = s->lens[i];
        memcpy(t->arena + pos, s->pieces[i], l);
        t->arena[pos + l] = '\0';
        t->off[i] = pos;
        t->len[i] = (uint32_t)l;
        pos += l + 1;
        float sc = s->scores ? s->scores[i] : 0.0f;
        t->scores[i] = sc == sc ? sc : -1e30f; /* NaN would make the heap order arbitrary */
        int ty;
        if (s->types) {
            ty = s->types[i];
            if (ty < KS_TOKEN_NORMAL || ty > KS_TOKEN_BYTE) {
                st = ks_error_set(err, KS_ERR_FORMAT, "%s: pieces[%d].type: invalid value %d", src,
                                  i, ty);
                goto fail;
            }
        } else if (i == s->unk_id || (s->unk_id < 0 && l == 5 && memcmp(s->pieces[i], "<unk>", 5) == 0)) {
            ty = KS_TOKEN_UNKNOWN;
        } else if (i == s->bos_id || i == s->eos_id) {
            ty = KS_TOKEN_CONTROL;
        } else if (tok_byte_value(s->pieces[i], l) >= 0) {
            ty = KS_TOKEN_BYTE;
        } else {
            ty = KS_TOKEN_NORMAL;
        }
        t->types[i] = (uint8_t)ty;
    }
    for (int i = 0; i < n; i++) {
        int ty = t->types[i];
        int dup = strmap_insert(t, tok_is_normal_class(ty) ? &t->normal : &t->reserved, i);
        if (dup >= 0) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: pieces[%d]: duplicate piece \"%.64s\" (also pieces[%d])",
                              src, i, tok_piece_ptr(t, i), dup);
            goto fail;
        }
        if (ty == KS_TOKEN_BYTE) {
            int b = tok_byte_value(tok_piece_ptr(t, i), t->len[i]);
            if (b < 0) {
                st = ks_error_set(err, KS_ERR_FORMAT,
                                  "%s: pieces[%d]: byte piece \"%.64s\" is not of the form <0xNN>",
                                  src, i, tok_piece_ptr(t, i));
                goto fail;
            }
            t->byte_id[b] = i;
        } else if (ty == KS_TOKEN_UNKNOWN) {
            if (s->unk_id < 0 && t->unk >= 0) {
                st = ks_error_set(err, KS_ERR_FORMAT, "%s: pieces[%d]: a second unknown piece (first: pieces[%d])",
                                  src, i, t->unk);
                goto fail;
            }
            if (t->unk < 0) t->unk = i;
        } else if (ty == KS_TOKEN_UNUSED) {
            t->has_unused = true;
        } else if (ty == KS_TOKEN_USER_DEFINED) {
            int l = (int)t->len[i], k;
            for (k = 0; k < t->n_ud_lens && t->ud_lens[k] != l; k++) {}
            if (k == t->n_ud_lens) t->ud_lens[t->n_ud_lens++] = l;
        }
    }
    qsort(t->ud_lens, (size_t)t->n_ud_lens, sizeof *t->ud_lens, cmp_int_desc);
    static const struct { const char *name; int which; } ids[] = {{"unk", 0}, {"bos", 1}, {"eos", 2}};
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
        int v = ids[k].which == 0 ? s->unk_id : ids[k].which == 1 ? s->bos_id : s->eos_id;
        if (v < -1 || v >= n) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: %s id %d out of range for %d pieces", src,
                              ids[k].name, v, n);
            goto fail;
        }
    }
    if (s->unk_id >= 0) t->unk = s->unk_id;
    if (t->unk < 0) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: the vocabulary has no unknown piece (<unk>)", src);
        goto fail;
    }
    t->bos = s->bos_id;
    t->eos = s->eos_id;
    bool any_byte = false;
    for (int b = 0; b < 256; b++) any_byte |= t->byte_id[b] >= 0;
    t->byte_fallback = s->byte_fallback < 0 ? any_byte : s->byte_fallback > 0;
    t->add_dummy_prefix = s->add_dummy_prefix;
    t->remove_extra_ws = s->remove_extra_whitespaces;
    t->escape_ws = s->escape_whitespaces;
    t->split_ws = s->split_on_space_symbol;
    const char *us = s->unk_surface ? s->unk_surface : KS_DEFAULT_UNK_SURFACE;
    size_t usl = s->unk_surface ? s->unk_surface_len : strlen(KS_DEFAULT_UNK_SURFACE);
    t->unk_surface = malloc(usl + 1);
    if (!t->unk_surface) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
        goto fail;
    }
    memcpy(t->unk_surface, us, usl);
    t->unk_surface[usl] = '\0';
    t->unk_surface_len = usl;
    *out = t;
    return KS_OK;
fail:
    ks_tokenizer_free(t);
    return st;
}

ks_status ks_tokenizer_set_merges(ks_tokenizer *t, int n_merges, const int *left, const int *right,
                                  bool fuse_unk, const char *source, ks_error *err) {
    const char *src = source ? source : "vocabulary";
    t->fuse_unk = fuse_unk;
    if (n_merges < 0 || n_merges > KS_TOKENIZER_MAX_VOCAB * 4)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %d merges: out of range", src, n_merges);
    uint64_t cap = 16;
    while (cap < (uint64_t)n_merges * 2u) cap <<= 1;
    free(t->pairs);
    t->pairs = malloc(cap * sizeof *t->pairs);
    if (!t->pairs) return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory for merges", src);
    t->pair_mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++) t->pairs[i].key = UINT64_MAX;
    char *buf = NULL;
    size_t bufcap = 0;
    for (int r = 0; r < n_merges; r++) {
        int a = left[r], b = right[r];
        if (a < 0 || a >= t->n_vocab || b < 0 || b >= t->n_vocab) {
            free(buf);
            return ks_error_set(err, KS_ERR_FORMAT, "%s: merges[%d]: id out of range", src, r);
        }
        size_t la = t->len[a], lb = t->len[b];
        if (la + lb > bufcap) {
            char *nb = realloc(buf, la + lb);
            if (!nb) {
                free(buf);
                return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", src);
            }
            buf = nb;
            bufcap = la + lb;
        }
        memcpy(buf, tok_piece_ptr(t, a), la);
        memcpy(buf + la, tok_piece_ptr(t, b), lb);
        int id = strmap_find(t, &t->normal, buf, la + lb);
        if (id < 0) id = strmap_find(t, &t->reserved, buf, la + lb);
        if (id < 0) {
            free(buf);
            return ks_error_set(err, KS_ERR_FORMAT,
                                "%s: merges[%d]: \"%.64s\" + \"%.64s\" is not in the vocabulary",
                                src, r, tok_piece_ptr(t, a), tok_piece_ptr(t, b));
        }
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint64_t i = tok_hash_pair(key) & t->pair_mask;
        while (t->pairs[i].key != UINT64_MAX && t->pairs[i].key != key) i = (i + 1) & t->pair_mask;
        /* A repeated pair: the later rank wins, as when HF builds its merge map. */
        t->pairs[i].key = key;
        t->pairs[i].rank = r;
        t->pairs[i].id = id;
    }
    free(buf);
    return KS_OK;
}

static const tok_pair_slot *pair_find(const ks_tokenizer *t, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t i = tok_hash_pair(key) & t->pair_mask;
    for (;;) {
        if (t->pairs[i].key == key) return &t->pairs[i];
        if (t->pairs[i].key == UINT64_MAX) return NULL;
        i = (i + 1) & t->pair_mask;
    }
}

ks_status ks_tokenizer_from_vocab(int n_vocab, const char *const *pieces, const size_t *piece_lens,
                                  const float *scores, const int *types, int bos_id, int eos_id,
                                  int unk_id, bool add_dummy_prefix, ks_tokenizer **out,
                                  ks_error *err) {
    if (!out) return ks_error_set(err, KS_ERR_ARG, "ks_tokenizer_from_vocab: out is NULL");
    *out = NULL;
    if (n_vocab <= 0 || !pieces)
        return ks_error_set(err, KS_ERR_FORMAT, "vocabulary: no pieces");
    if (n_vocab > KS_TOKENIZER_MAX_VOCAB)
        return ks_error_set(err, KS_ERR_FORMAT, "vocabulary: %d pieces, more than the %d supported",
                            n_vocab, KS_TOKENIZER_MAX_VOCAB);
    size_t *lens = malloc((size_t)n_vocab * sizeof *lens);
    if (!lens) return ks_error_set(err, KS_ERR_NOMEM, "vocabulary: out of memory");
    for (int i = 0; i < n_vocab; i++) {
        if (!pieces[i]) {
            free(lens);
            return ks_error_set(err, KS_ERR_FORMAT, "vocabulary: pieces[%d] is NULL", i);
        }
        lens[i] = piece_lens ? piece_lens[i] : strlen(pieces[i]);
    }
    ks_tokenizer_spec s = {
        .n_vocab = n_vocab, .pieces = pieces, .lens = lens, .scores = scores, .types = types,
        .bos_id = bos_id, .eos_id = eos_id, .unk_id = unk_id, .byte_fallback = -1,
        .add_dummy_prefix = add_dummy_prefix, .escape_whitespaces = true, .source = "vocabulary",
    };
    ks_status st = ks_tokenizer_build(&s, out, err);
    free(lens);
    return st;
}

/* ---------------------------------------------------------------- accessors */

int ks_tokenizer_vocab_size(const ks_tokenizer *t) { return t ? t->n_vocab : 0; }
int ks_tokenizer_bos(const ks_tokenizer *t) { return t ? t->bos : -1; }
int ks_tokenizer_eos(const ks_tokenizer *t) { return t ? t->eos : -1; }
int ks_tokenizer_unk(const ks_tokenizer *t) { return t ? t->unk : -1; }

const char *ks_tokenizer_piece(const ks_tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    return tok_piece_ptr(t, id);
}

ks_token_type ks_tokenizer_type(const ks_tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_vocab) return KS_TOKEN_UNKNOWN;
    return (ks_token_type)t->types[id];
}

/* ---------------------------------------------------------------- UTF-8 */

/* Length of the valid UTF-8 character at s (n bytes available), 0 when invalid. Strict as
 * SentencePiece's decoder: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_char_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        uint32_t cp = (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xF0) == 0xE0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        uint32_t cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;
    }
    if ((c & 0xF8) == 0xF0) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        uint32_t cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                      (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- growable buffers */

typedef struct {
    int *v;
    size_t n, cap;
} tok_ids;

static bool ids_push(tok_ids *a, int id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        if (cap > (size_t)INT_MAX) return false;
        int *nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) return false;
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return true;
}

/* ---------------------------------------------------------------- encoding */

/* SentencePiece's normalizer with an identity character map. out has room for 3*len+3. */
static size_t tok_normalize(const ks_tokenizer *t, const uint8_t *s, size_t len, bool dummy,
                            uint8_t *out) {
    size_t o = 0, i = 0;
    if (len == 0) return 0;
    if (t->remove_extra_ws) {
        while (i < len && s[i] == ' ') i++;
        if (i == len) return 0;
    }
    if (dummy) {
        if (t->escape_ws) {
            memcpy(out + o, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN);
            o += KS_SPACE_SYMBOL_LEN;
        } else {
            out[o++] = ' ';
        }
    }
    bool prev_space = t->remove_extra_ws;
    while (i < len) {
        size_t cl = utf8_char_len(s + i, len - i);
        if (cl == 0) {
            memcpy(out + o, KS_REPLACEMENT, 3);
            o += 3;
            i += 1;
            prev_space = false;
            continue;
        }
        if (s[i] == ' ') {
            if (!(t->remove_extra_ws && prev_space)) {
                if (t->escape_ws) {
                    memcpy(out + o, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN);
                    o += KS_SPACE_SYMBOL_LEN;
                } else {
                    out[o++] = ' ';
                }
            }
            prev_space = true;
        } else {
            memcpy(out + o, s + i, cl);
            o += cl;
            prev_space = false;
        }
        i += cl;
    }
    if (t->remove_extra_ws) {
        const char *sp = t->escape_ws ? KS_SPACE_SYMBOL : " ";
        size_t spl = t->escape_ws ? KS_SPACE_SYMBOL_LEN : 1;
        while (o >= spl && memcmp(out + o - spl, sp, spl) == 0) o -= spl;
    }
    return o;
}

typedef struct {
    int start, len; /* bytes of the normalized text */
    int prev, next;
    int id;         /* explicit-merge mode: the symbol's id */
    bool freeze;    /* user-defined piece: never merged */
} tok_sym;

typedef struct {
    double score;
    int left, right, size, id;
} tok_cand;

typedef struct {
    tok_cand *v;
    size_t n, cap;
} tok_heap;

/* a ranks above b: higher score, then the leftmost pair. */
static bool cand_above(const tok_cand *a, const tok_cand *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static bool heap_push(tok_heap *h, tok_cand c) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        tok_cand *nv = realloc(h->v, cap * sizeof *nv);
        if (!nv) return false;
        h->v = nv;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_above(&c, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = c;
    return true;
}

static tok_cand heap_pop(tok_heap *h) {
    tok_cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const tok_cand *best = &last;
        if (l < h->n && cand_above(&h->v[l], best)) { m = l; best = &h->v[l]; }
        if (r < h->n && cand_above(&h->v[r], best)) { m = r; }
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

typedef struct {
    const ks_tokenizer *t;
    const uint8_t *norm;
    tok_sym *sym;
    tok_heap heap;
    int *rev_left; /* (n_vocab) for UNUSED pieces: byte length of the left half, 0 = none */
} tok_enc;

/* Queue the pair (left, right) if it merges into a piece. */
static bool enc_try_pair(tok_enc *e, int left, int right) {
    if (left < 0 || right < 0) return true;
    const tok_sym *a = &e->sym[left], *b = &e->sym[right];
    if (a->freeze || b->freeze) return true;
    const ks_tokenizer *t = e->t;
    if (t->split_ws && b->len >= KS_SPACE_SYMBOL_LEN &&
        memcmp(e->norm + b->start, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN) == 0)
        return true;
    tok_cand c = {.left = left, .right = right, .size = a->len + b->len};
    if (t->pairs) {
        if (a->id < 0 || b->id < 0) return true;
        const tok_pair_slot *p = pair_find(t, a->id, b->id);
        if (!p) return true;
        c.score = -(double)p->rank;
        c.id = p->id;
    } else {
        int id = strmap_find(t, &t->normal, (const char *)e->norm + a->start, (size_t)c.size);
        if (id < 0) return true;
        c.score = t->scores[id];
        c.id = id;
        if (e->rev_left && t->types[id] == KS_TOKEN_UNUSED) e->rev_left[id] = a->len;
    }
    return heap_push(&e->heap, c);
}

static int tok_lookup_any(const ks_tokenizer *t, const char *s, size_t n) {
    int id = strmap_find(t, &t->reserved, s, n);
    if (id < 0) id = strmap_find(t, &t->normal, s, n);
    return id;
}

/* Append the ids for one final symbol's text, SentencePiece style. */
static bool enc_emit(const tok_enc *e, const char *s, size_t n, tok_ids *out, bool *last_unk) {
    const ks_tokenizer *t = e->t;
    /* Resegment UNUSED pieces into the pair that made them (explicit stack: a hostile model
     * could chain many). */
    struct { size_t off, len; } stack[64];
    int sp = 0;
    stack[sp].off = 0;
    stack[sp].len = n;
    sp++;
    while (sp > 0) {
        sp--;
        const char *w = s + stack[sp].off;
        size_t wl = stack[sp].len;
        int id = tok_lookup_any(t, w, wl);
        if (id >= 0 && t->types[id] == KS_TOKEN_UNUSED && e->rev_left && e->rev_left[id] > 0 &&
            (size_t)e->rev_left[id] < wl && sp + 2 <= 64) {
            size_t l = (size_t)e->rev_left[id];
            stack[sp].off = stack[sp].off + l; /* right half is popped second */
            stack[sp].len = wl - l;
            stack[sp + 1].off = (size_t)(w - s);
            stack[sp + 1].len = l;
            sp += 2;
            continue;
        }
        if (id < 0 || t->types[id] == KS_TOKEN_UNKNOWN) {
            if (t->byte_fallback) {
                for (size_t k = 0; k < wl; k++) {
                    int b = t->byte_id[(uint8_t)w[k]];
                    if (!ids_push(out, b >= 0 ? b : t->unk)) return false;
                }
                *last_unk = false;
            } else {
                if (!*last_unk && !ids_push(out, t->unk)) return false;
                *last_unk = true;
            }
        } else {
            if (!ids_push(out, id)) return false;
            *last_unk = false;
        }
    }
    return true;
}

ks_status ks_tokenizer_encode_ex(const ks_tokenizer *t, const char *text, size_t len,
                                 bool add_bos, bool add_dummy_prefix, int **ids_out, int *n_out,
                                 ks_error *err) {
    if (!t || !ids_out || !n_out || (!text && len > 0))
        return ks_error_set(err, KS_ERR_ARG, "ks_tokenizer_encode: NULL argument");
    *ids_out = NULL;
    *n_out = 0;
    if (len > (size_t)(INT_MAX / 4))
        return ks_error_set(err, KS_ERR_RANGE, "ks_tokenizer_encode: text of %zu bytes is too long", len);
    ks_status st = KS_OK;
    tok_enc e = {.t = t};
    tok_ids out = {0};
    uint8_t *norm = malloc(len * 3 + 4);
    if (!norm) return ks_error_set(err, KS_ERR_NOMEM, "ks_tokenizer_encode: out of memory");
    size_t nl = tok_normalize(t, (const uint8_t *)text, len, add_dummy_prefix && t->add_dummy_prefix, norm);
    e.norm = norm;
    if (add_bos && t->bos >= 0 && !ids_push(&out, t->bos)) goto nomem;
    if (nl > 0) {
        e.sym = malloc(nl * sizeof *e.sym);
        if (!e.sym) goto nomem;
        if (t->has_unused && !t->pairs) {
            e.rev_left = calloc((size_t)t->n_vocab, sizeof *e.rev_left);
            if (!e.rev_left) goto nomem;
        }
        /* split into symbols */
        int ns = 0;
        size_t i = 0;
        while (i < nl) {
            size_t cl = 0;
            bool ud = false;
            for (int k = 0; k < t->n_ud_lens; k++) {
                size_t l = (size_t)t->ud_lens[k];
                if (l > nl - i) continue;
                int id = strmap_find(t, &t->normal, (const char *)norm + i, l);
                if (id >= 0 && t->types[id] == KS_TOKEN_USER_DEFINED) {
                    cl = l;
                    ud = true;
                    break;
                }
            }
            if (!ud) {
                cl = utf8_char_len(norm + i, nl - i);
                if (cl == 0) cl = 1; /* cannot happen after normalizing */
            }
            int id = -1;
            if (t->pairs) {
                id = tok_lookup_any(t, (const char *)norm + i, cl);
                if (id < 0 || t->types[id] == KS_TOKEN_UNKNOWN) {
                    /* HF BPE: an unknown character is split into its byte pieces before
                     * merging (or stays unknown without byte fallback). */
                    bool all = t->byte_fallback;
                    for (size_t k = 0; all && k < cl; k++) all = t->byte_id[norm[i + k]] >= 0;
                    if (all) {
                        for (size_t k = 0; k < cl; k++) {
                            e.sym[ns] = (tok_sym){.start = (int)(i + k), .len = 1, .prev = ns - 1,
                                                  .next = ns + 1, .id = t->byte_id[norm[i + k]]};
                            ns++;
                        }
                        i += cl;
                        continue;
                    }
                    id = t->unk;
                }
            }
            e.sym[ns] = (tok_sym){.start = (int)i, .len = (int)cl, .prev = ns - 1, .next = ns + 1,
                                  .id = id, .freeze = ud};
            ns++;
            i += cl;
        }
        e.sym[ns - 1].next = -1;
        for (int k = 0; k + 1 < ns; k++)
            if (!enc_try_pair(&e, k, k + 1)) goto nomem;
        while (e.heap.n > 0) {
            tok_cand c = heap_pop(&e.heap);
            tok_sym *a = &e.sym[c.left], *b = &e.sym[c.right];
            if (a->len == 0 || b->len == 0 || a->len + b->len != c.size || a->next != c.right)
                continue; /* stale */
            a->len += b->len;
            a->id = c.id;
            b->len = 0;
            a->next = b->next;
            if (b->next >= 0) e.sym[b->next].prev = c.left;
            if (!enc_try_pair(&e, a->prev, c.left) || !enc_try_pair(&e, c.left, a->next))
                goto nomem;
        }
        bool last_unk = false;
        for (int k = 0; k >= 0; k = e.sym[k].next) {
            const tok_sym *y = &e.sym[k];
            if (t->pairs) {
                if (y->id == t->unk && t->fuse_unk && last_unk) continue;
                if (!ids_push(&out, y->id)) goto nomem;
                last_unk = y->id == t->unk;
            } else if (!enc_emit(&e, (const char *)norm + y->start, (size_t)y->len, &out, &last_unk)) {
                goto nomem;
            }
        }
    }
    if (out.n > (size_t)INT_MAX) {
        st = ks_error_set(err, KS_ERR_RANGE, "ks_tokenizer_encode: too many tokens");
        goto done;
    }
    if (!out.v) {
        out.v = malloc(sizeof *out.v); /* a valid pointer even for no tokens */
        if (!out.v) goto nomem;
    }
    *ids_out = out.v;
    *n_out = (int)out.n;
    out.v = NULL;
    goto done;
nomem:
    st = ks_error_set(err, KS_ERR_NOMEM, "ks_tokenizer_encode: out of memory");
done:
    free(out.v);
    free(norm);
    free(e.sym);
    free(e.heap.v);
    free(e.rev_left);
    return st;
}

ks_status ks_tokenizer_encode(const ks_tokenizer *t, const char *text, size_t len, bool add_bos,
                              int **ids, int *n_ids, ks_error *err) {
    return ks_tokenizer_encode_ex(t, text, len, add_bos, true, ids, n_ids, err);
}

/* ---------------------------------------------------------------- decoding */

/* Append piece text with U+2581 turned into ' ', dropping one leading U+2581 if strip. */
static bool put_piece(ks_strbuf *b, const char *s, size_t n, bool strip) {
    if (strip && n >= KS_SPACE_SYMBOL_LEN && memcmp(s, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN) == 0) {
        s += KS_SPACE_SYMBOL_LEN;
        n -= KS_SPACE_SYMBOL_LEN;
    }
    size_t i = 0, run = 0;
    while (i < n) {
        if (n - i >= KS_SPACE_SYMBOL_LEN && memcmp(s + i, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN) == 0) {
            if (!ks_strbuf_append(b, s + run, i - run) || !ks_strbuf_append(b, " ", 1)) return false;
            i += KS_SPACE_SYMBOL_LEN;
            run = i;
        } else {
            i++;
        }
    }
    return ks_strbuf_append(b, s + run, n - run);
}

/* Bytes of a run of byte pieces, as SentencePiece turns them into text. */
static bool put_bytes(ks_strbuf *b, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t cl = utf8_char_len(s + i, n - i);
        if (cl == 0) {
            if (!ks_strbuf_append(b, KS_REPLACEMENT, 3)) return false;
            i++;
        } else {
            if (!ks_strbuf_append(b, s + i, cl)) return false;
            i += cl;
        }
    }
    return true;
}

ks_status ks_tokenizer_decode(const ks_tokenizer *t, const int *ids, int n_ids, char **text,
                              size_t *len, ks_error *err) {
    if (!t || !text || (!ids && n_ids > 0) || n_ids < 0)
        return ks_error_set(err, KS_ERR_ARG, "ks_tokenizer_decode: invalid argument");
    *text = NULL;
    if (len) *len = 0;
    ks_strbuf b = {0};
    ks_strbuf bytes = {0};
    bool bos_ws = true;
    if (!ks_strbuf_append(&b, "", 0)) goto nomem;
    for (int i = 0; i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            free(b.p);
            free(bytes.p);
            return ks_error_set(err, KS_ERR_RANGE, "ks_tokenizer_decode: ids[%d] = %d is not in [0, %d)",
                                i, id, t->n_vocab);
        }
        int ty = t->types[id];
        if (ty == KS_TOKEN_BYTE) {
            char v = (char)tok_byte_value(tok_piece_ptr(t, id), t->len[id]);
            if (!ks_strbuf_append(&bytes, &v, 1)) goto nomem;
            bos_ws = false;
            continue;
        }
        if (bytes.len > 0) {
            if (!put_bytes(&b, (const uint8_t *)bytes.p, bytes.len)) goto nomem;
            bytes.len = 0;
        }
        if (ty == KS_TOKEN_CONTROL) continue;
        if (ty == KS_TOKEN_UNKNOWN) {
            if (!ks_strbuf_append(&b, t->unk_surface, t->unk_surface_len)) goto nomem;
        } else if (!put_piece(&b, tok_piece_ptr(t, id), t->len[id], bos_ws)) {
            goto nomem;
        }
        bos_ws = false;
    }
    if (bytes.len > 0 && !put_bytes(&b, (const uint8_t *)bytes.p, bytes.len)) goto nomem;
    free(bytes.p);
    *text = b.p;
    if (len) *len = b.len;
    return KS_OK;
nomem:
    free(b.p);
    free(bytes.p);
    return ks_error_set(err, KS_ERR_NOMEM, "ks_tokenizer_decode: out of memory");
}

size_t ks_tokenizer_token_text(const ks_tokenizer *t, int prev, int id, char *buf, size_t cap) {
    if (!buf || cap == 0) return 0;
    buf[0] = '\0';
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    const char *s = NULL;
    size_t n = 0;
    char one;
    bool strip = false;
    switch (t->types[id]) {
    case KS_TOKEN_CONTROL:
        return 0;
    case KS_TOKEN_BYTE:
        one = (char)tok_byte_value(tok_piece_ptr(t, id), t->len[id]);
        s = &one;
        n = 1;
        break;
    case KS_TOKEN_UNKNOWN:
        s = t->unk_surface;
        n = t->unk_surface_len;
        break;
    default:
        s = tok_piece_ptr(t, id);
        n = t->len[id];
        /* SentencePiece drops the dummy-prefix space of the first piece of a text. */
        strip = prev < 0 || (prev == t->bos && t->bos >= 0);
        break;
    }
    if (strip && n >= KS_SPACE_SYMBOL_LEN && memcmp(s, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN) == 0) {
        s += KS_SPACE_SYMBOL_LEN;
        n -= KS_SPACE_SYMBOL_LEN;
    }
    /* Copy whole characters only, so a short buffer never ends inside one (a byte piece is
     * one raw byte and may be part of a character by design). */
    bool is_byte = t->types[id] == KS_TOKEN_BYTE;
    size_t o = 0, i = 0;
    while (i < n) {
        bool space = !is_byte && n - i >= KS_SPACE_SYMBOL_LEN &&
                     memcmp(s + i, KS_SPACE_SYMBOL, KS_SPACE_SYMBOL_LEN) == 0;
        size_t in = space ? KS_SPACE_SYMBOL_LEN : 1, outn = 1;
        if (!space && !is_byte) {
            in = utf8_char_len((const uint8_t *)s + i, n - i);
            if (in == 0) in = 1;
            outn = in;
        }
        if (o + outn >= cap) break;
        memcpy(buf + o, space ? " " : s + i, outn);
        o += outn;
        i += in;
    }
    buf[o] = '\0';
    return o;
}

/* ================================================================ SentencePiece writer */

/* Protobuf wire format (as tokenizer_load.c reads it): a key varint (field << 3 | wire type),
 * then a varint (type 0), 4 little-endian bytes (type 5) or a length-prefixed run (type 2). */
static bool pb_varint(ks_strbuf *b, uint64_t v) {
    uint8_t buf[10];
    int n = 0;
    do {
        buf[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) buf[n] |= 0x80;
        n++;
    } while (v);
    return ks_strbuf_append(b, buf, (size_t)n);
}

static bool pb_key(ks_strbuf *b, unsigned field, unsigned wt) {
    return pb_varint(b, ((uint64_t)field << 3) | wt);
}

static bool pb_int(ks_strbuf *b, unsigned field, int64_t v) {
    return pb_key(b, field, 0) && pb_varint(b, (uint64_t)v); /* negative: 10-byte two's complement */
}

static bool pb_bytes(ks_strbuf *b, unsigned field, const void *p, size_t n) {
    return pb_key(b, field, 2) && pb_varint(b, n) && (n == 0 || ks_strbuf_append(b, p, n));
}

ks_status ks_tokenizer_save_spm(const ks_tokenizer *t, const char *path, ks_error *err) {
    if (!t || !path) return ks_error_set(err, KS_ERR_ARG, "ks_tokenizer_save_spm: NULL argument");
    if (t->pairs)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: this tokenizer has explicit BPE merges "
                            "(tokenizer.json) and cannot be written as a SentencePiece model",
                            path);
    ks_strbuf out = {0}, sub = {0};
    bool ok = true;
    for (int i = 0; ok && i < t->n_vocab; i++) {
        sub.len = 0;
        uint32_t bits;
        memcpy(&bits, &t->scores[i], 4);
        uint8_t le[4] = {(uint8_t)bits, (uint8_t)(bits >> 8), (uint8_t)(bits >> 16), (uint8_t)(bits >> 24)};
        ok = pb_bytes(&sub, 1, t->arena + t->off[i], t->len[i]) && pb_key(&sub, 2, 5) &&
             ks_strbuf_append(&sub, le, 4) && pb_int(&sub, 3, t->types[i]) &&
             pb_bytes(&out, 1, sub.p, sub.len);
    }
    sub.len = 0;
    ok = ok && pb_int(&sub, 3, 2 /* BPE */) && pb_int(&sub, 4, t->n_vocab) &&
         pb_int(&sub, 35, t->byte_fallback) && pb_int(&sub, 40, t->unk) && pb_int(&sub, 41, t->bos) &&
         pb_int(&sub, 42, t->eos) && pb_bytes(&out, 2, sub.p, sub.len);
    sub.len = 0;
    ok = ok && pb_bytes(&sub, 1, "identity", 8) && pb_int(&sub, 3, t->add_dummy_prefix) &&
         pb_int(&sub, 4, t->remove_extra_ws) && pb_int(&sub, 5, t->escape_ws) &&
         pb_bytes(&out, 3, sub.p, sub.len);
    free(sub.p);
    if (!ok) {
        free(out.p);
        return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(out.p);
        return ks_error_set(err, KS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    ok = fwrite(out.p, 1, out.len, f) == out.len;
    ok = (fclose(f) == 0) && ok;
    free(out.p);
    if (!ok) return ks_error_set(err, KS_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return KS_OK;
}
