/* fuzz_tokenizer_encode.c — libFuzzer target for encoding and decoding. The input's first
 * byte picks the tokenizer and options, the rest is the text. Two built-in tokenizers share
 * one small vocabulary (256 byte pieces, a user-defined piece, merges over U+2581 and a few
 * letters): one driven by piece scores (SentencePiece BPE), one by merge ranks (the HF
 * tokenizer.json path). $KS_FUZZ_TOKENIZER may name a tokenizer file to fuzz instead.
 *
 * Properties checked:
 *   - ids are in range; decode succeeds and is NUL-terminated;
 *   - with the dummy prefix on: decode(encode(x)) == x with every byte that does not start
 *     valid UTF-8 replaced by U+FFFD (and U+2581 read back as ' '), since every piece and
 *     byte is in the vocabulary;
 *   - streaming token_text over [BOS] + ids gives decode's bytes when x is valid UTF-8. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_private.h"

static void check(bool ok) {
    if (!ok) abort();
}

static const char *normal_pieces[] = {
    "\xE2\x96\x81", "a", "b", "c", "e", "h", "l", "o", "t", "s", "<", ">", "/", "x", "0", "1",
    "\xE2\x96\x81t", "he", "\xE2\x96\x81the", "ll", "\xE2\x96\x81h", "\xE2\x96\x81" "a", "ab",
    "abc", "\xE2\x96\x81<", "</", "<s", "s>", "\xE2\x96\x81\xE2\x96\x81",
    "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81", "\xC3\xA9", "\xE4\xB8\xAD", "\xE4\xB8\xAD\xC3\xA9",
    "hello", "\xE2\x96\x81hello", "hell", "el", "lo", "00", "000", "\xE2\x96\x81" "0",
};

static ks_tokenizer *tok[2];
static bool external;

static ks_tokenizer *build(bool merges) {
    enum { N_NORMAL = sizeof normal_pieces / sizeof normal_pieces[0] };
    int n = 3 + 256 + 1 + N_NORMAL;
    const char **p = calloc((size_t)n, sizeof *p);
    size_t *l = calloc((size_t)n, sizeof *l);
    float *s = calloc((size_t)n, sizeof *s);
    int *ty = calloc((size_t)n, sizeof *ty);
    static char bytes[256][8];
    p[0] = "<unk>", ty[0] = KS_TOKEN_UNKNOWN;
    p[1] = "<s>", ty[1] = KS_TOKEN_CONTROL;
    p[2] = "</s>", ty[2] = KS_TOKEN_CONTROL;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        p[3 + b] = bytes[b];
        ty[3 + b] = KS_TOKEN_BYTE;
    }
    p[259] = "<tool>", ty[259] = KS_TOKEN_USER_DEFINED;
    for (int i = 0; i < N_NORMAL; i++) {
        p[260 + i] = normal_pieces[i];
        ty[260 + i] = KS_TOKEN_NORMAL;
        s[260 + i] = -(float)i;
    }
    for (int i = 0; i < n; i++) l[i] = strlen(p[i]);
    ks_tokenizer_spec spec = {
        .n_vocab = n, .pieces = p, .lens = l, .scores = s, .types = ty, .bos_id = 1, .eos_id = 2,
        .unk_id = 0, .byte_fallback = 1, .add_dummy_prefix = true, .escape_whitespaces = true,
        .source = "builtin",
    };
    ks_tokenizer *t = NULL;
    check(ks_tokenizer_build(&spec, &t, NULL) == KS_OK);
    if (merges) {
        /* every split of a multi-character piece into two pieces, ranked by the piece */
        int *ml = malloc(sizeof(int) * 4096), *mr = malloc(sizeof(int) * 4096), nm = 0;
        for (int i = 260; i < n; i++)
            for (size_t k = 1; k < l[i]; k++)
                for (int a = 260; a < n; a++)
                    if (l[a] == k && memcmp(p[a], p[i], k) == 0)
                        for (int b = 260; b < n; b++)
                            if (l[b] == l[i] - k && memcmp(p[b], p[i] + k, l[b]) == 0 && nm < 4096) {
                                ml[nm] = a;
                                mr[nm++] = b;
                            }
        check(ks_tokenizer_set_merges(t, nm, ml, mr, true, "builtin", NULL) == KS_OK);
        free(ml);
        free(mr);
    }
    free(p);
    free(l);
    free(s);
    free(ty);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("KS_FUZZ_TOKENIZER");
    if (path && *path) {
        ks_error err;
        if (ks_tokenizer_open(path, &tok[0], &err) != KS_OK) {
            fprintf(stderr, "%s\n", err.msg);
            abort();
        }
        tok[1] = tok[0];
        external = true;
    } else {
        tok[0] = build(false);
        tok[1] = build(true);
    }
    return 0;
}

/* Independent strict UTF-8 check: length of the character at s, 0 if invalid. */
static size_t u8len(const uint8_t *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t k = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3 : s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : 0;
    if (k == 0 || n < k) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (k == 3 && s[0] == 0xE0 && s[1] < 0xA0) return 0;
    if (k == 3 && s[0] == 0xED && s[1] >= 0xA0) return 0;
    if (k == 4 && s[0] == 0xF0 && s[1] < 0x90) return 0;
    if (k == 4 && s[0] == 0xF4 && s[1] >= 0x90) return 0;
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const ks_tokenizer *t = tok[mode & 1];
    bool bos = mode & 2, dummy = !(mode & 4);
    int nv = ks_tokenizer_vocab_size(t);
    int *ids = NULL, n = 0;
    check(ks_tokenizer_encode_ex(t, text, len, bos, dummy, &ids, &n, NULL) == KS_OK);
    for (int i = 0; i < n; i++) check(ids[i] >= 0 && ids[i] < nv);
    char *dec = NULL;
    size_t dl = 0;
    check(ks_tokenizer_decode(t, ids, n, &dec, &dl, NULL) == KS_OK && dec[dl] == '\0');

    /* expected text: invalid bytes -> U+FFFD, U+2581 -> ' ' */
    char *want = malloc(len * 3 + 1);
    size_t wl = 0;
    bool valid = true;
    for (size_t i = 0; i < len;) {
        size_t k = u8len((const uint8_t *)text + i, len - i);
        if (k == 0) {
            memcpy(want + wl, "\xEF\xBF\xBD", 3), wl += 3, i++;
            valid = false;
        } else if (k == 3 && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
            want[wl++] = ' ', i += 3;
        } else {
            memcpy(want + wl, text + i, k), wl += k, i += k;
        }
    }
    if (!external && dummy) check(dl == wl && memcmp(dec, want, wl) == 0);

    if (valid && dummy) {
        char piece[64];
        char *st = malloc(dl + 64);
        size_t sl = 0;
        int prev = bos ? -1 : ks_tokenizer_bos(t);
        for (int i = 0; i < n; i++) {
            size_t l = ks_tokenizer_token_text(t, prev, ids[i], piece, sizeof piece);
            check(sl + l <= dl + 63);
            memcpy(st + sl, piece, l);
            sl += l;
            prev = ids[i];
        }
        check(sl == dl && memcmp(st, dec, dl) == 0);
        free(st);
    }
    free(want);
    free(dec);
    free(ids);
    return 0;
}
