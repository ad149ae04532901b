/* test_tokenizer.c — the tokenizer against its oracles.
 *
 * Oracles (tests/reference/make_tokenizer_fixtures.py makes the fixtures):
 *   - SentencePiece 0.1.97 EncodeAsIds/DecodeIds with the LLaMA tokenizer.model over a
 *     generated corpus (llama_corpus.jsonl) and random id sequences (llama_decode.jsonl);
 *     the same vocabulary is also loaded from llama2.c's tokenizer.bin and llama.cpp's GGUF.
 *   - llama.cpp's 46 reference tokenizations (ggml-vocab-llama-spm.gguf.inp/.out).
 *   - a tiny SentencePiece BPE model (tiny.model) and its HF conversion (tiny.json) with
 *     SentencePiece's and HF tokenizers' ids (tiny_corpus.jsonl).
 * Every comparison is exact (ids and bytes). */
#include <jansson.h>
#include <stdint.h>
#include <time.h>

#include "model_private.h"
#include "tap.h"

#define FIX "tests/reference/fixtures/tokenizer/"

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b) b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

typedef struct {
    json_t **rows;
    size_t n;
} jsonl;

static bool jsonl_read(const char *path, jsonl *out) {
    size_t len;
    uint8_t *buf = read_file(path, &len);
    out->rows = NULL;
    out->n = 0;
    if (!buf) return false;
    size_t cap = 0;
    char *p = (char *)buf, *end = (char *)buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        if (nl > p) {
            json_error_t je;
            json_t *j = json_loadb(p, (size_t)(nl - p), JSON_ALLOW_NUL, &je);
            if (!j) {
                tap_diag("%s: bad line: %s", path, je.text);
                free(buf);
                return false;
            }
            if (out->n == cap) {
                cap = cap ? cap * 2 : 256;
                out->rows = realloc(out->rows, cap * sizeof *out->rows);
            }
            out->rows[out->n++] = j;
        }
        p = nl + 1;
    }
    free(buf);
    return true;
}

static void jsonl_free(jsonl *j) {
    for (size_t i = 0; i < j->n; i++) json_decref(j->rows[i]);
    free(j->rows);
}

static bool ids_equal(const int *a, int na, const json_t *arr) {
    if (!json_is_array(arr) || (size_t)na != json_array_size(arr)) return false;
    for (int i = 0; i < na; i++)
        if (a[i] != (int)json_integer_value(json_array_get(arr, (size_t)i))) return false;
    return true;
}

static void diag_ids(const char *what, const int *a, int n) {
    char buf[600];
    size_t o = 0;
    for (int i = 0; i < n && o < sizeof buf - 16; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, " %d", a[i]);
    tap_diag("  %s:%s", what, buf);
}

/* Concatenate token_text over [BOS] + ids. */
static char *stream_text(const ks_tokenizer *t, const int *ids, int n, size_t *len) {
    size_t cap = 64, o = 0;
    char *out = malloc(cap);
    int prev = ks_tokenizer_bos(t);
    char piece[512];
    for (int i = 0; i < n; i++) {
        size_t l = ks_tokenizer_token_text(t, prev, ids[i], piece, sizeof piece);
        while (o + l + 1 > cap) out = realloc(out, cap *= 2);
        memcpy(out + o, piece, l);
        o += l;
        prev = ids[i];
    }
    out[o] = 0;
    *len = o;
    return out;
}

/* Encode every corpus string; compare ids, decode, and the streamed text. */
static void corpus_parity(const ks_tokenizer *t, const char *label, const jsonl *rows) {
    size_t ok_ids = 0, ok_dec = 0, ok_stream = 0, shown = 0;
    for (size_t i = 0; i < rows->n; i++) {
        const json_t *r = rows->rows[i];
        const json_t *jt = json_object_get(r, "t");
        const char *text = json_string_value(jt);
        size_t tl = json_string_length(jt);
        const json_t *jd = json_object_get(r, "d");
        const char *want_dec = jd ? json_string_value(jd) : text;
        size_t want_dl = jd ? json_string_length(jd) : tl;
        int *ids = NULL, n = 0;
        ks_error err = {0};
        if (ks_tokenizer_encode(t, text, tl, false, &ids, &n, &err) != KS_OK) {
            tap_diag("%s: encode failed: %s", label, err.msg);
            continue;
        }
        if (ids_equal(ids, n, json_object_get(r, "ids"))) {
            ok_ids++;
        } else if (shown++ < 5) {
            tap_diag("%s: mismatch for string %zu \"%.80s\"", label, i, text);
            diag_ids("got ", ids, n);
        }
        /* decode the oracle's ids, so a decode check does not depend on encode */
        const json_t *want = json_object_get(r, "ids");
        int nw = (int)json_array_size(want);
        int *wids = malloc(((size_t)nw + 1) * sizeof *wids);
        for (int k = 0; k < nw; k++) wids[k] = (int)json_integer_value(json_array_get(want, (size_t)k));
        char *dec = NULL;
        size_t dl = 0;
        if (ks_tokenizer_decode(t, wids, nw, &dec, &dl, &err) == KS_OK && dl == want_dl &&
            memcmp(dec, want_dec, dl) == 0)
            ok_dec++;
        else if (shown++ < 5)
            tap_diag("%s: decode mismatch for string %zu: \"%.80s\"", label, i, dec ? dec : "(error)");
        size_t sl;
        char *st = stream_text(t, wids, nw, &sl);
        if (dec && sl == dl && memcmp(st, dec, sl) == 0) ok_stream++;
        else if (shown++ < 5) tap_diag("%s: stream mismatch for string %zu: \"%.80s\"", label, i, st);
        free(st);
        free(dec);
        free(wids);
        free(ids);
    }
    tap_ok(ok_ids == rows->n, "%s: encode matches SentencePiece: %zu/%zu strings", label, ok_ids, rows->n);
    tap_ok(ok_dec == rows->n, "%s: decode matches SentencePiece DecodeIds: %zu/%zu", label, ok_dec, rows->n);
    tap_ok(ok_stream == rows->n, "%s: token_text stream reproduces decode: %zu/%zu", label, ok_stream, rows->n);
}

static ks_tokenizer *open_tok(const char *path, const char *label) {
    ks_tokenizer *t = NULL;
    ks_error err = {0};
    ks_status st = ks_tokenizer_open(path, &t, &err);
    tap_ok(st == KS_OK, "%s: opens (%s)", label, st == KS_OK ? "ok" : err.msg);
    return t;
}

static void check_llama_basics(const ks_tokenizer *t, const char *label) {
    tap_ok(ks_tokenizer_vocab_size(t) == 32000 && ks_tokenizer_bos(t) == 1 && ks_tokenizer_eos(t) == 2 &&
               ks_tokenizer_unk(t) == 0,
           "%s: 32000 pieces, bos 1, eos 2, unk 0", label);
    tap_ok(strcmp(ks_tokenizer_piece(t, 3), "<0x00>") == 0 && ks_tokenizer_type(t, 3) == KS_TOKEN_BYTE &&
               ks_tokenizer_type(t, 258) == KS_TOKEN_BYTE && ks_tokenizer_type(t, 1) == KS_TOKEN_CONTROL &&
               ks_tokenizer_type(t, 0) == KS_TOKEN_UNKNOWN && ks_tokenizer_type(t, 259) == KS_TOKEN_NORMAL &&
               strcmp(ks_tokenizer_piece(t, 259), "\xE2\x96\x81\xE2\x96\x81") == 0,
           "%s: byte pieces 3..258, control, unknown and normal types, U+2581 spelling", label);
    tap_ok(ks_tokenizer_piece(t, -1) == NULL && ks_tokenizer_piece(t, 32000) == NULL,
           "%s: piece of an invalid id is NULL", label);
    int *ids = NULL, n = 0;
    ks_error err = {0};
    ks_tokenizer_encode(t, "Hello world", 11, true, &ids, &n, &err);
    tap_ok(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186, "%s: \"Hello world\" with BOS = 1 15043 3186",
           label);
    free(ids);
    ks_tokenizer_encode_ex(t, "Hello", 5, false, false, &ids, &n, &err);
    tap_ok(n >= 1 && strncmp(ks_tokenizer_piece(t, ids[0]), "\xE2\x96\x81", 3) != 0,
           "%s: encode_ex without dummy prefix adds no leading U+2581 (first piece \"%s\")", label,
           n ? ks_tokenizer_piece(t, ids[0]) : "");
    free(ids);
    ks_tokenizer_encode(t, "", 0, true, &ids, &n, &err);
    tap_ok(n == 1 && ids[0] == 1, "%s: empty text with BOS is just BOS", label);
    free(ids);
    ks_tokenizer_encode(t, "", 0, false, &ids, &n, &err);
    tap_ok(n == 0 && ids != NULL, "%s: empty text without BOS is no tokens", label);
    free(ids);
}

static void test_decode_fixture(const ks_tokenizer *t) {
    char p[4096];
    jsonl rows;
    if (!jsonl_read(ks_test_src_file(FIX "llama_decode.jsonl", p, sizeof p), &rows)) {
        tap_ok(0, "read llama_decode.jsonl");
        return;
    }
    size_t ok = 0;
    for (size_t i = 0; i < rows.n; i++) {
        const json_t *arr = json_object_get(rows.rows[i], "ids");
        int n = (int)json_array_size(arr);
        int *ids = malloc(((size_t)n + 1) * sizeof *ids);
        for (int k = 0; k < n; k++) ids[k] = (int)json_integer_value(json_array_get(arr, (size_t)k));
        char *dec = NULL;
        size_t dl = 0;
        const json_t *jd = json_object_get(rows.rows[i], "d");
        if (ks_tokenizer_decode(t, ids, n, &dec, &dl, NULL) == KS_OK && dl == json_string_length(jd) &&
            memcmp(dec, json_string_value(jd), dl) == 0)
            ok++;
        else if (i - ok < 5)
            tap_diag("decode sequence %zu: got \"%s\" want \"%s\"", i, dec ? dec : "(error)", json_string_value(jd));
        free(dec);
        free(ids);
    }
    tap_ok(ok == rows.n, "decode of random id sequences matches DecodeIds: %zu/%zu", ok, rows.n);
    jsonl_free(&rows);
    char *dec = NULL;
    int bad = 32000;
    tap_ok(ks_tokenizer_decode(t, &bad, 1, &dec, NULL, NULL) == KS_ERR_RANGE && dec == NULL,
           "decode of an out-of-range id is KS_ERR_RANGE");
}

static void test_llamacpp_vectors(const ks_tokenizer *t) {
    char pi[4096], po[4096];
    const char *fi = ks_test_data_file("llama-tokenizer/ggml-vocab-llama-spm.gguf.inp", pi, sizeof pi);
    if (!fi) return;
    const char *fo = ks_test_data_file("llama-tokenizer/ggml-vocab-llama-spm.gguf.out", po, sizeof po);
    if (!fo) return;
    size_t il, ol;
    char *in = (char *)read_file(fi, &il), *out = (char *)read_file(fo, &ol);
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    int cases = 0, ok = 0;
    char *p = in, *q = out;
    /* Each case is followed by the separator; what follows the last one is not a case. */
    for (;;) {
        char *s = strstr(p, sep);
        if (!s) break;
        char *nl = strchr(q, '\n');
        if (!nl) break;
        *nl = 0;
        int want[512], nw = 0;
        for (char *tok = strtok(q, " "); tok && nw < 512; tok = strtok(NULL, " ")) want[nw++] = atoi(tok);
        int *ids = NULL, n = 0;
        ks_tokenizer_encode(t, p, (size_t)(s - p), false, &ids, &n, NULL);
        bool same = n == nw && (n == 0 || memcmp(ids, want, (size_t)n * sizeof *ids) == 0);
        ok += same;
        if (!same) tap_diag("llama.cpp case %d (\"%.*s\") differs", cases, (int)(s - p), p);
        free(ids);
        cases++;
        p = s + seplen;
        q = nl + 1;
    }
    tap_ok(cases == 46 && ok == 46, "llama.cpp reference tokenizations: %d/%d match (46 expected)", ok, cases);
    free(in);
    free(out);
}

static void test_speed(const ks_tokenizer *t, const jsonl *rows) {
    /* ~100 KB of mixed corpus text, and two degenerate inputs */
    size_t cap = 1 << 17, n = 0;
    char *text = malloc(cap + 4096);
    for (size_t i = 0; n < 100000; i = (i + 7) % rows->n) {
        const json_t *jt = json_object_get(rows->rows[i], "t");
        size_t l = json_string_length(jt);
        if (l > 4000) continue;
        memcpy(text + n, json_string_value(jt), l);
        n += l;
        text[n++] = ' ';
    }
    char *same = malloc(100000), *spaces = malloc(100000);
    memset(same, 'a', 100000);
    memset(spaces, ' ', 100000);
    const char *inputs[] = {text, same, spaces};
    size_t lens[] = {n, 100000, 100000};
    const char *names[] = {"mixed text", "'a' x 100000", "' ' x 100000"};
    for (int k = 0; k < 3; k++) {
        struct timespec a, b;
        int *ids = NULL, ni = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        ks_status st = ks_tokenizer_encode(t, inputs[k], lens[k], false, &ids, &ni, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        char *dec = NULL;
        size_t dl = 0;
        ks_tokenizer_decode(t, ids, ni, &dec, &dl, NULL);
        bool round = k == 0 || (dl == lens[k] && memcmp(dec, inputs[k], dl) == 0);
        tap_ok(st == KS_OK && s < 2.0 && round, "encode %s (%zu bytes): %d tokens in %.1f ms (limit 2 s)%s",
               names[k], lens[k], ni, s * 1e3, round ? "" : ", round trip FAILED");
        free(dec);
        free(ids);
    }
    free(text);
    free(same);
    free(spaces);
}

static void test_tiny(void) {
    char pm[4096], pj[4096], pc[4096];
    ks_tokenizer *sp = open_tok(ks_test_src_file(FIX "tiny.model", pm, sizeof pm), "tiny.model");
    ks_tokenizer *hf = open_tok(ks_test_src_file(FIX "tiny.json", pj, sizeof pj), "tiny.json");
    jsonl rows;
    if (!sp || !hf || !jsonl_read(ks_test_src_file(FIX "tiny_corpus.jsonl", pc, sizeof pc), &rows)) {
        tap_ok(0, "tiny fixtures load");
        ks_tokenizer_free(sp);
        ks_tokenizer_free(hf);
        return;
    }
    tap_ok(ks_tokenizer_vocab_size(sp) == ks_tokenizer_vocab_size(hf) && ks_tokenizer_bos(hf) == 1 &&
               ks_tokenizer_eos(hf) == 2 && ks_tokenizer_unk(hf) == 0 &&
               ks_tokenizer_type(hf, 3) == KS_TOKEN_USER_DEFINED && ks_tokenizer_type(sp, 3) == KS_TOKEN_USER_DEFINED,
           "tiny: same vocabulary size (%d/%d), bos/eos/unk, user-defined pieces from both files",
           ks_tokenizer_vocab_size(sp), ks_tokenizer_vocab_size(hf));
    size_t ok_sp = 0, n_hf = 0, ok_hf = 0, ok_json_sp = 0, shown = 0;
    for (size_t i = 0; i < rows.n; i++) {
        const json_t *jt = json_object_get(rows.rows[i], "t");
        const char *text = json_string_value(jt);
        size_t tl = json_string_length(jt);
        int *a = NULL, na = 0, *b = NULL, nb = 0;
        ks_tokenizer_encode(sp, text, tl, false, &a, &na, NULL);
        ks_tokenizer_encode(hf, text, tl, false, &b, &nb, NULL);
        if (ids_equal(a, na, json_object_get(rows.rows[i], "sp"))) ok_sp++;
        else if (shown++ < 5) {
            tap_diag("tiny.model: mismatch on \"%.60s\"", text);
            diag_ids("got", a, na);
        }
        if (ids_equal(b, nb, json_object_get(rows.rows[i], "sp"))) ok_json_sp++;
        const json_t *h = json_object_get(rows.rows[i], "hf");
        if (h) {
            n_hf++;
            if (ids_equal(b, nb, h)) ok_hf++;
            else if (shown++ < 5) {
                tap_diag("tiny.json: mismatch on \"%.60s\"", text);
                diag_ids("got", b, nb);
            }
        }
        free(a);
        free(b);
    }
    tap_ok(ok_sp == rows.n, "tiny.model (user-defined pieces, byte fallback): matches SentencePiece on %zu/%zu strings",
           ok_sp, rows.n);
    tap_ok(n_hf > 300 && ok_hf == n_hf, "tiny.json: matches HF tokenizers on %zu/%zu strings", ok_hf, n_hf);
    tap_ok(ok_json_sp == rows.n, "tiny.json: matches SentencePiece's ids of tiny.model on %zu/%zu strings",
           ok_json_sp, rows.n);
    jsonl_free(&rows);
    ks_tokenizer_free(sp);
    ks_tokenizer_free(hf);
}

static void test_token_text(const ks_tokenizer *t) {
    char buf[64];
    size_t n = ks_tokenizer_token_text(t, -1, 1, buf, sizeof buf);
    tap_ok(n == 0 && buf[0] == 0, "token_text: BOS gives nothing");
    n = ks_tokenizer_token_text(t, 1, 15043, buf, sizeof buf);
    tap_ok(n == 5 && strcmp(buf, "Hello") == 0, "token_text: first piece after BOS drops the dummy space (\"%s\")", buf);
    n = ks_tokenizer_token_text(t, 15043, 3186, buf, sizeof buf);
    tap_ok(n == 6 && strcmp(buf, " world") == 0, "token_text: later pieces keep their space (\"%s\")", buf);
    n = ks_tokenizer_token_text(t, 15043, 3 + 0xE4, buf, sizeof buf);
    tap_ok(n == 1 && (uint8_t)buf[0] == 0xE4, "token_text: a byte piece is one raw byte");
    n = ks_tokenizer_token_text(t, 15043, 3186, buf, 4);
    tap_ok(n == 3 && strcmp(buf, " wo") == 0, "token_text: truncated to cap-1 bytes with NUL");
    n = ks_tokenizer_token_text(t, 15043, 0, buf, sizeof buf);
    tap_ok(strcmp(buf, " \xE2\x81\x87 ") == 0, "token_text: <unk> gives the unk surface");
    n = ks_tokenizer_token_text(t, 15043, 99999, buf, sizeof buf);
    tap_ok(n == 0 && buf[0] == 0, "token_text: invalid id gives nothing");
}

/* ---------------------------------------------------------------- malformed input */

static void expect_fail(const uint8_t *d, size_t n, const char *name, ks_status want, const char *what) {
    ks_tokenizer *t = NULL;
    ks_error err = {0};
    ks_status st = ks_tokenizer_from_memory(d, n, name, &t, &err);
    bool named = strncmp(err.msg, name, strlen(name)) == 0;
    tap_ok(st == want && t == NULL && named, "%s: %s (%s)", what, ks_status_str(st), err.msg);
    ks_tokenizer_free(t);
}

/* Minimal protobuf writer for hand-made models. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} pbw;
static void pw_varint(pbw *w, uint64_t v) {
    do {
        uint8_t c = v & 0x7F;
        v >>= 7;
        w->b[w->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void pw_bytes(pbw *w, int field, const void *d, size_t n) {
    pw_varint(w, (uint64_t)field << 3 | 2);
    pw_varint(w, n);
    memcpy(w->b + w->n, d, n);
    w->n += n;
}
static void pw_piece(pbw *w, const char *s, float score, int type) {
    pbw p = {.n = 0};
    pw_bytes(&p, 1, s, strlen(s));
    uint32_t u;
    memcpy(&u, &score, 4);
    pw_varint(&p, 2 << 3 | 5);
    memcpy(p.b + p.n, &u, 4);
    p.n += 4;
    pw_varint(&p, 3 << 3 | 0);
    pw_varint(&p, (uint64_t)type);
    pw_bytes(w, 1, p.b, p.n);
}
static void pw_trainer(pbw *w, int model_type) {
    pbw p = {.n = 0};
    pw_varint(&p, 3 << 3 | 0);
    pw_varint(&p, (uint64_t)model_type);
    pw_bytes(w, 2, p.b, p.n);
}

static void test_errors(void) {
    char path[4096];
    const char *mp = ks_test_data_file("llama-tokenizer/tokenizer.model", path, sizeof path);
    if (mp) {
        size_t len;
        uint8_t *d = read_file(mp, &len);
        size_t cuts[] = {1, 2, 5, 17, 100, 1000, 4321, len / 2, len - 100, len - 1};
        int ok = 0;
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            ks_tokenizer *t = NULL;
            ks_error err = {0};
            ks_status st = ks_tokenizer_from_memory(d, cuts[k], "tokenizer.model", &t, &err);
            bool good = st == KS_ERR_FORMAT && !t && strncmp(err.msg, "tokenizer.model: ", 17) == 0;
            ok += good;
            if (!good || k == 4) tap_diag("cut at %zu: %s: %s", cuts[k], ks_status_str(st), err.msg);
            ks_tokenizer_free(t);
        }
        tap_ok(ok == 10, "truncated tokenizer.model: %d/10 cuts give KS_ERR_FORMAT naming the file", ok);
        uint8_t *g = malloc(len);
        memcpy(g, d, len);
        for (size_t i = 200; i < len; i += 997) g[i] ^= 0xA5;
        ks_tokenizer *t = NULL;
        ks_error err = {0};
        ks_status st = ks_tokenizer_from_memory(g, len, "tokenizer.model", &t, &err);
        tap_ok(st == KS_OK || st == KS_ERR_FORMAT, "corrupted tokenizer.model: no crash (%s: %s)",
               ks_status_str(st), err.msg);
        ks_tokenizer_free(t);
        free(g);
        free(d);
    }
    const char *bp = ks_test_data_file("llama-tokenizer/tokenizer.bin", path, sizeof path);
    if (bp) {
        size_t len;
        uint8_t *d = read_file(bp, &len);
        expect_fail(d, len - 3, "tokenizer.bin", KS_ERR_FORMAT, "truncated llama2.c tokenizer.bin");
        expect_fail(d, 33, "tokenizer.bin", KS_ERR_FORMAT, "llama2.c tokenizer.bin cut inside a token");
        free(d);
    }
    expect_fail((const uint8_t *)"", 0, "empty.model", KS_ERR_FORMAT, "empty file");
    expect_fail((const uint8_t *)"\xff\xfe garbage", 10, "garbage.bin", KS_ERR_FORMAT, "garbage");
    expect_fail((const uint8_t *)"GGUF\x03\x00", 6, "short.gguf", KS_ERR_FORMAT, "truncated GGUF");
    expect_fail((const uint8_t *)"{\"model\": ", 10, "bad.json", KS_ERR_FORMAT, "truncated JSON");
    const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    expect_fail((const uint8_t *)wp, strlen(wp), "wp.json", KS_ERR_UNSUPPORTED, "WordPiece tokenizer.json");
    const char *gap = "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"a\": 2}, \"merges\": []}}";
    expect_fail((const uint8_t *)gap, strlen(gap), "gap.json", KS_ERR_FORMAT, "tokenizer.json with an id gap");
    const char *bm = "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"a\": 1}, \"merges\": [\"a b\"]}}";
    expect_fail((const uint8_t *)bm, strlen(bm), "merge.json", KS_ERR_FORMAT, "tokenizer.json merge of an unknown piece");
    const char *dup = "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"a\": 0}, \"merges\": []}}";
    expect_fail((const uint8_t *)dup, strlen(dup), "dup.json", KS_ERR_FORMAT, "tokenizer.json with two pieces on one id");

    pbw w = {.n = 0};
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    pw_piece(&w, "a", -1, KS_TOKEN_NORMAL);
    pw_trainer(&w, 1);
    expect_fail(w.b, w.n, "uni.model", KS_ERR_UNSUPPORTED, "unigram SentencePiece model");
    w.n = 0;
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    pw_piece(&w, "a", -1, KS_TOKEN_NORMAL);
    pw_piece(&w, "a", -2, KS_TOKEN_NORMAL);
    pw_trainer(&w, 2);
    expect_fail(w.b, w.n, "dup.model", KS_ERR_FORMAT, "duplicate pieces");
    w.n = 0;
    pw_piece(&w, "a", -1, KS_TOKEN_NORMAL);
    pw_trainer(&w, 2);
    expect_fail(w.b, w.n, "nounk.model", KS_ERR_FORMAT, "no unknown piece");
    w.n = 0;
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    pw_piece(&w, "<0x4g>", 0, KS_TOKEN_BYTE);
    pw_trainer(&w, 2);
    expect_fail(w.b, w.n, "byte.model", KS_ERR_FORMAT, "malformed byte piece");
    w.n = 0;
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    pw_piece(&w, "a", 0, 9);
    pw_trainer(&w, 2);
    expect_fail(w.b, w.n, "type.model", KS_ERR_FORMAT, "invalid piece type");
    w.n = 0;
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    w.b[w.n++] = 0x0A; /* pieces: length 127, 1 byte left */
    w.b[w.n++] = 0x7F;
    w.b[w.n++] = 'x';
    expect_fail(w.b, w.n, "len.model", KS_ERR_FORMAT, "length past the end");
    w.n = 0;
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    memcpy(w.b + w.n, "\x12\x0b\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 13);
    w.n += 13; /* trainer_spec: a varint longer than 10 bytes */
    expect_fail(w.b, w.n, "varint.model", KS_ERR_FORMAT, "overlong varint");
    /* a valid hand-made model: scores drive the merges */
    w.n = 0;
    pw_piece(&w, "<unk>", 0, KS_TOKEN_UNKNOWN);
    pw_piece(&w, "\xE2\x96\x81", -1, KS_TOKEN_NORMAL);
    pw_piece(&w, "a", -1, KS_TOKEN_NORMAL);
    pw_piece(&w, "b", -1, KS_TOKEN_NORMAL);
    pw_piece(&w, "ab", -3, KS_TOKEN_NORMAL);
    pw_piece(&w, "\xE2\x96\x81" "a", -2, KS_TOKEN_NORMAL);
    pw_trainer(&w, 2);
    ks_tokenizer *t = NULL;
    ks_error err = {0};
    ks_status st = ks_tokenizer_from_memory(w.b, w.n, "hand.model", &t, &err);
    int *ids = NULL, n = 0;
    if (st == KS_OK) ks_tokenizer_encode(t, "abc", 3, false, &ids, &n, NULL);
    /* "▁abc": ▁a (-2) beats ab (-3); c is unknown and there is no byte fallback */
    tap_ok(st == KS_OK && n == 3 && ids[0] == 5 && ids[1] == 3 && ids[2] == 0,
           "hand-made model: highest-scoring pair merges first, unknown char -> unk (%s)", err.msg);
    free(ids);
    ks_tokenizer_free(t);

    const char *pieces[] = {"<unk>", "<s>", "</s>", "a"};
    st = ks_tokenizer_from_vocab(4, pieces, NULL, NULL, NULL, 1, 7, 0, true, &t, &err);
    tap_ok(st == KS_ERR_FORMAT && !t, "from_vocab: eos id out of range is KS_ERR_FORMAT (%s)", err.msg);
    st = ks_tokenizer_from_vocab(0, pieces, NULL, NULL, NULL, -1, -1, -1, true, &t, &err);
    tap_ok(st == KS_ERR_FORMAT && !t, "from_vocab: no pieces is KS_ERR_FORMAT (%s)", err.msg);
    st = ks_tokenizer_from_vocab(4, pieces, NULL, NULL, NULL, 1, 2, 0, true, &t, &err);
    tap_ok(st == KS_OK && ks_tokenizer_type(t, 1) == KS_TOKEN_CONTROL && ks_tokenizer_type(t, 0) == KS_TOKEN_UNKNOWN,
           "from_vocab: types inferred (control BOS/EOS, unknown)");
    ks_tokenizer_free(t);
    ks_tokenizer_free(NULL);
    tap_ok(1, "ks_tokenizer_free(NULL) is a no-op");
}

int main(void) {
    char p[4096];
    jsonl corpus = {0};
    bool have_corpus = jsonl_read(ks_test_src_file(FIX "llama_corpus.jsonl", p, sizeof p), &corpus);
    tap_ok(have_corpus && corpus.n >= 2000, "corpus fixture: %zu strings", corpus.n);

    const char *mp = ks_test_data_file("llama-tokenizer/tokenizer.model", p, sizeof p);
    if (mp) {
        ks_tokenizer *t = open_tok(mp, "tokenizer.model");
        if (t) {
            check_llama_basics(t, "tokenizer.model");
            corpus_parity(t, "tokenizer.model", &corpus);
            test_decode_fixture(t);
            test_llamacpp_vectors(t);
            test_token_text(t);
            test_speed(t, &corpus);
        }
        ks_tokenizer_free(t);
    }
    const char *bp = ks_test_data_file("llama-tokenizer/tokenizer.bin", p, sizeof p);
    if (bp) {
        ks_tokenizer *t = open_tok(bp, "tokenizer.bin (llama2.c)");
        if (t) {
            check_llama_basics(t, "tokenizer.bin");
            corpus_parity(t, "tokenizer.bin", &corpus);
        }
        ks_tokenizer_free(t);
    }
    const char *gp = ks_test_data_file("llama-tokenizer/ggml-vocab-llama-spm.gguf", p, sizeof p);
    if (gp) {
        ks_tokenizer *t = open_tok(gp, "ggml-vocab-llama-spm.gguf");
        if (t) {
            check_llama_basics(t, "gguf");
            corpus_parity(t, "gguf", &corpus);
        }
        ks_tokenizer_free(t);
    }
    test_tiny();
    test_errors();
    jsonl_free(&corpus);
    return tap_done();
}
