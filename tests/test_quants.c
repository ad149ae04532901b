/* test_quants.c — GGML block dequantisation (ks_dtype_to_f32) against gguf-py.
 *
 * Oracle: gguf-py 0.19.0's reference decoder, gguf.quants.dequantize(), run on random but
 * valid blocks by tests/reference/make_quant_fixtures.py (layout in that script's header:
 * "KSQF", version, GGML type id, block elements, block bytes, n_blocks, the blocks, then the
 * expected f32). Tolerance: none. gguf-py upcasts the f16 fields to f32 and does every
 * product and sum in f32 numpy (no float16 arithmetic, no fused multiply-add), in the same
 * order as model/dtype.c, so every value must match bit for bit.
 *
 * Per type: the fixture's block geometry equals the KS_DTYPE_LIST entry; each block decoded
 * alone; the whole fixture decoded as one row of n_blocks blocks; a row of 4 blocks starting
 * at an odd block (unaligned source); ks_dtype_nbytes and ks_dtype_row_bytes.
 *
 * Also the other direction, f32 -> f16 / bf16 (ks_f32_to_f16 / ks_f32_to_bf16: the recorder's
 * --dtype and the trainer's bf16 checkpoints), against numpy 1.24's astype(float16) and torch
 * 1.13's to(bfloat16) on ~15k inputs placed on every rounding edge, written by
 * tests/reference/make_half_fixtures.py. Tolerance: none; a NaN input must give a NaN there
 * (of the same sign for numpy; torch returns 0x7fc0 for any NaN) and our documented NaN bits
 * here. The vector paths (F16C, AVX2) must equal the portable ones bit for bit. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_private.h"
#include "tap.h"

typedef struct {
    const char *file;
    uint32_t ggml_type; /* GGMLQuantizationType */
    ks_dtype dtype;
} quant_case;

static const quant_case cases[] = {
    {"q4_0.bin", 2, KS_DTYPE_Q4_0},  {"q4_1.bin", 3, KS_DTYPE_Q4_1},
    {"q5_0.bin", 6, KS_DTYPE_Q5_0},  {"q5_1.bin", 7, KS_DTYPE_Q5_1},
    {"q8_0.bin", 8, KS_DTYPE_Q8_0},  {"q2_k.bin", 10, KS_DTYPE_Q2_K},
    {"q3_k.bin", 11, KS_DTYPE_Q3_K}, {"q4_k.bin", 12, KS_DTYPE_Q4_K},
    {"q5_k.bin", 13, KS_DTYPE_Q5_K}, {"q6_k.bin", 14, KS_DTYPE_Q6_K},
};

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Whole file, malloc'd; NULL (and a diagnostic) on failure. */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        tap_diag("%s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    long n;
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) goto fail;
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, fp) != (size_t)n) goto fail;
    fclose(fp);
    *len = (size_t)n;
    return buf;
fail:
    tap_diag("%s: read error", path);
    free(buf);
    fclose(fp);
    return NULL;
}

/* Count of values whose bits differ from want[0..n); the first few are reported. */
static size_t count_diff(const char *what, const float *got, const float *want, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            if (bad < 4) tap_diag("%s[%zu] = %.9g, gguf-py %.9g", what, i, got[i], want[i]);
            bad++;
        }
    }
    return bad;
}

static void check_case(const quant_case *c) {
    const char *root = getenv("KS_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/reference/fixtures/quants/%s", root ? root : ".", c->file);
    const char *name = ks_dtype_name(c->dtype);
    size_t len = 0;
    uint8_t *buf = slurp(path, &len);
    if (!tap_ok(buf && len >= 24 && !memcmp(buf, "KSQF", 4) && rd32(buf + 4) == 1,
                "%s: fixture %s readable, version 1", name, c->file)) {
        free(buf);
        return;
    }
    uint32_t type = rd32(buf + 8), be = rd32(buf + 12), bb = rd32(buf + 16), nb = rd32(buf + 20);
    int geom = type == c->ggml_type && be == (uint32_t)ks_dtype_block_elems(c->dtype) &&
               bb == (uint32_t)ks_dtype_block_bytes(c->dtype) && nb >= 8 &&
               len == 24 + (size_t)nb * bb + (size_t)nb * be * 4;
    if (!tap_ok(geom, "%s: GGML type %u, block %u elements in %u bytes (gguf-py) == KS_DTYPE_LIST "
                "(%d in %d), %u blocks", name, type, be, bb, ks_dtype_block_elems(c->dtype),
                ks_dtype_block_bytes(c->dtype), nb)) {
        free(buf);
        return;
    }
    const uint8_t *blocks = buf + 24;
    size_t n = (size_t)nb * be;
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    if (!want || !got) abort();
    memcpy(want, blocks + (size_t)nb * bb, n * sizeof *want); /* fixtures are little-endian */

    /* one block at a time */
    memset(got, 0xff, n * sizeof *got);
    for (uint32_t b = 0; b < nb; b++)
        ks_dtype_to_f32(c->dtype, blocks + (size_t)b * bb, got + (size_t)b * be, be);
    size_t bad = count_diff(name, got, want, n);
    tap_ok(bad == 0, "%s: %u blocks decoded one by one == gguf-py bit for bit (%zu of %zu differ)",
           name, nb, bad, n);

    /* all blocks as one row */
    memset(got, 0xff, n * sizeof *got);
    ks_dtype_to_f32(c->dtype, blocks, got, n);
    bad = count_diff(name, got, want, n);
    tap_ok(bad == 0, "%s: row of %u blocks == gguf-py bit for bit (%zu of %zu differ)", name, nb,
           bad, n);

    /* a row of 4 blocks from a copy at an odd address (block fields are read bytewise) */
    uint8_t *odd = malloc(4 * (size_t)bb + 1);
    if (!odd) abort();
    memcpy(odd + 1, blocks + 3 * (size_t)bb, 4 * (size_t)bb);
    memset(got, 0xff, 4 * (size_t)be * sizeof *got);
    ks_dtype_to_f32(c->dtype, odd + 1, got, 4 * (size_t)be);
    bad = count_diff(name, got, want + 3 * (size_t)be, 4 * (size_t)be);
    tap_ok(bad == 0, "%s: blocks 3..6 from an unaligned source == gguf-py", name);
    free(odd);

    /* sizes */
    uint64_t nbytes = 0;
    ks_error e = {0};
    int sz = ks_dtype_nbytes(c->dtype, n, &nbytes, &e) == KS_OK && nbytes == (uint64_t)nb * bb &&
             ks_dtype_nbytes(c->dtype, n + 1, &nbytes, &e) == KS_ERR_RANGE &&
             ks_dtype_nbytes(c->dtype, be / 2, &nbytes, &e) == KS_ERR_RANGE &&
             ks_dtype_row_bytes(c->dtype, 3 * (size_t)be) == 3 * (size_t)bb &&
             ks_dtype_row_bytes(c->dtype, 4096) == 4096 / be * bb;
    tap_ok(sz, "%s: nbytes(%zu) = %llu, partial blocks refused, row_bytes(3 blocks) = %zu, "
           "row_bytes(4096) = %zu", name, n, (unsigned long long)((uint64_t)nb * bb),
           ks_dtype_row_bytes(c->dtype, 3 * (size_t)be), ks_dtype_row_bytes(c->dtype, 4096));
    free(want);
    free(got);
    free(buf);
}

/* ------------------------------------------------------------------ f32 -> f16 / bf16 */

typedef void (*half_fn)(const float *, uint16_t *, size_t);

static bool is_nan16(uint16_t h, bool bf) {
    return bf ? (h & 0x7fffu) > 0x7f80u : (h & 0x7fffu) > 0x7c00u;
}

/* Our documented NaN bits (model_private.h) for an f32 NaN x. */
static uint16_t our_nan(uint32_t x, bool bf) {
    if (bf) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)(((x >> 16) & 0x8000u) | 0x7e00u | ((x & 0x7fffffu) >> 13));
}

/* fn on in[0..n) against want (the oracle): non-NaN bit for bit; a NaN -> our NaN bits, and
 * a NaN in the oracle too (the oracles canonicalise NaN payloads differently). */
static size_t half_diff(const char *what, half_fn fn, const uint32_t *in, const uint16_t *want, size_t n,
                        bool bf) {
    uint16_t *got = malloc(n * sizeof *got);
    if (!got) abort();
    fn((const float *)(const void *)in, got, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        bool nan = (in[i] & 0x7fffffffu) > 0x7f800000u;
        /* torch gives 0x7fc0 for every NaN, sign dropped; numpy keeps the sign */
        bool ok = nan ? got[i] == our_nan(in[i], bf) && is_nan16(want[i], bf) &&
                            (bf || ((got[i] ^ want[i]) & 0x8000u) == 0)
                      : got[i] == want[i];
        if (!ok && bad++ < 4) tap_diag("%s(0x%08x) = 0x%04x, oracle 0x%04x", what, in[i], got[i], want[i]);
    }
    free(got);
    return bad;
}

static void check_half(void) {
    const char *root = getenv("KS_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/reference/fixtures/half/cases.bin", root ? root : ".");
    size_t len = 0;
    uint8_t *buf = slurp(path, &len);
    uint32_t n = len >= 12 ? rd32(buf + 8) : 0;
    if (!tap_ok(buf && len >= 12 && memcmp(buf, "KSHF", 4) == 0 && rd32(buf + 4) == 1 &&
                    len == 12 + (size_t)n * 8,
                "half: fixture cases.bin readable, version 1, %u inputs", n)) {
        free(buf);
        return;
    }
    /* copies at aligned addresses (the fixture is little-endian, as this host) */
    uint32_t *in = malloc((size_t)n * 4);
    uint16_t *f16 = malloc((size_t)n * 2), *bf16 = malloc((size_t)n * 2);
    if (!in || !f16 || !bf16) abort();
    memcpy(in, buf + 12, (size_t)n * 4);
    memcpy(f16, buf + 12 + (size_t)n * 4, (size_t)n * 2);
    memcpy(bf16, buf + 12 + (size_t)n * 6, (size_t)n * 2);
    tap_diag("half: this CPU: F16C %s, AVX2 %s (the vector paths run only where present)",
             ks_cpu_f16c() ? "yes" : "no", ks_cpu_avx2_fma() ? "yes" : "no");
    size_t bad = half_diff("f16", ks_f32_to_f16, in, f16, n, false);
    tap_ok(bad == 0, "ks_f32_to_f16 == numpy 1.24 astype(float16) on %u edge inputs (%zu differ)", n, bad);
    bad = half_diff("f16_scalar", ks_f32_to_f16_scalar, in, f16, n, false);
    tap_ok(bad == 0, "ks_f32_to_f16_scalar == numpy on the same inputs (%zu differ)", bad);
    bad = half_diff("bf16", ks_f32_to_bf16, in, bf16, n, true);
    tap_ok(bad == 0, "ks_f32_to_bf16 == torch 1.13 to(bfloat16) on %u edge inputs (%zu differ)", n, bad);
    bad = half_diff("bf16_scalar", ks_f32_to_bf16_scalar, in, bf16, n, true);
    tap_ok(bad == 0, "ks_f32_to_bf16_scalar == torch on the same inputs (%zu differ)", bad);

    /* the vector and portable paths agree on every 251st f32 bit pattern (17.1M, NaNs with
     * all kinds of payload included), and on every length 0..40 from an odd element offset */
    enum { BLOCK = 1 << 16 };
    uint32_t *x = malloc(BLOCK * 4);
    uint16_t *a = malloc(BLOCK * 2), *b = malloc(BLOCK * 2);
    if (!x || !a || !b) abort();
    size_t diff16 = 0, diffbf = 0, total = 0;
    uint64_t v = 0;
    while (v <= 0xffffffffull) {
        size_t m = 0;
        for (; m < BLOCK && v <= 0xffffffffull; v += 251) x[m++] = (uint32_t)v;
        ks_f32_to_f16((const float *)(const void *)x, a, m);
        ks_f32_to_f16_scalar((const float *)(const void *)x, b, m);
        for (size_t i = 0; i < m; i++) diff16 += a[i] != b[i];
        ks_f32_to_bf16((const float *)(const void *)x, a, m);
        ks_f32_to_bf16_scalar((const float *)(const void *)x, b, m);
        for (size_t i = 0; i < m; i++) diffbf += a[i] != b[i];
        total += m;
    }
    tap_ok(diff16 == 0 && diffbf == 0, "vector == portable on %zu bit patterns (f16 %zu, bf16 %zu differ)",
           total, diff16, diffbf);
    size_t tails = 0;
    for (int len = 0; len <= 40; len++) {
        memset(a, 0xab, 64 * 2);
        memset(b, 0xab, 64 * 2);
        ks_f32_to_f16((const float *)(const void *)(in + 1), a + 1, (size_t)len);
        ks_f32_to_f16_scalar((const float *)(const void *)(in + 1), b + 1, (size_t)len);
        tails += memcmp(a, b, 64 * 2) != 0;
        ks_f32_to_bf16((const float *)(const void *)(in + 1), a + 1, (size_t)len);
        ks_f32_to_bf16_scalar((const float *)(const void *)(in + 1), b + 1, (size_t)len);
        tails += memcmp(a, b, 64 * 2) != 0;
    }
    tap_ok(tails == 0, "lengths 0..40 from an odd offset: same values, nothing written outside (%zu differ)", tails);
    free(x);
    free(a);
    free(b);
    free(in);
    free(f16);
    free(bf16);
    free(buf);
}

int main(void) {
    tap_diag("oracle: gguf-py 0.19.0 gguf.quants.dequantize; tolerance: none (bit for bit)");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
    check_half();
    /* every dtype in the list has a fixture or is one of the plain float types */
    tap_ok(KS_DTYPE_COUNT == 3 + (int)(sizeof cases / sizeof cases[0]),
           "every block dtype (%d in KS_DTYPE_LIST) has an oracle fixture", (int)KS_DTYPE_COUNT - 3);
    return tap_done();
}
