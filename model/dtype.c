/* dtype.c — storage dtypes of checkpoints and their conversion to f32.
 *
 * F16 and BF16 are IEEE half / bfloat16. The quantised block formats are GGML's:
 *   Q8_0: 32 elements in 34 bytes: f16 scale d, then 32 int8 q;          x = d * q
 *   Q4_0: 32 elements in 18 bytes: f16 scale d, then 16 bytes of nibbles; element j < 16 is
 *         the low nibble of byte j, element j + 16 its high nibble;       x = d * (nibble - 8)
 *   Q4_K: 256 elements in 144 bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit (scale, min)
 *         pairs for 8 sub-blocks of 32, then 128 bytes of nibbles. Sub-blocks come in pairs
 *         sharing 32 bytes: the first takes the low nibbles, the second the high ones;
 *         x = d * scale_s * nibble - dmin * min_s.
 *   Q4_1: 32 elements in 20 bytes: f16 d, f16 m, 16 bytes of nibbles (as Q4_0);  x = d * nibble + m
 *   Q5_0: 32 elements in 22 bytes: f16 d, 4 bytes qh (a little-endian u32 whose bit j is the
 *         fifth bit of element j), 16 bytes of nibbles (as Q4_0);      x = d * (q5 - 16)
 *   Q5_1: 32 elements in 24 bytes: f16 d, f16 m, then qh and nibbles as Q5_0; x = d * q5 + m
 *   Q2_K: 256 elements in 84 bytes: 16 bytes of (scale low nibble, min high nibble) for 16
 *         sub-blocks of 16, 64 bytes of 2-bit values, f16 d, f16 dmin. The 2-bit values come
 *         in two halves of 128 elements sharing 32 bytes: element 32 * s + l of a half is bits
 *         2s..2s+1 of the half's byte l;                 x = d * scale_s * q2 - dmin * min_s
 *   Q3_K: 256 elements in 110 bytes: 32 bytes hmask, 64 bytes of 2-bit low parts (laid out as
 *         Q2_K's), 12 bytes of 16 packed 6-bit scales, f16 d. Element e's third bit is bit
 *         e / 32 of hmask byte e % 32, and a CLEAR bit means -4: q3 = low2 - (bit ? 0 : 4).
 *         Scale i: low 4 bits from byte i % 8 (low nibble for i < 8, high for i >= 8), top 2
 *         bits from bits 2 * (i / 4) of byte 8 + i % 4; stored with an offset of 32;
 *                                                         x = d * (scale_i - 32) * q3
 *   Q5_K: 256 elements in 176 bytes: f16 d, f16 dmin, 12 bytes of scales/mins (as Q4_K),
 *         32 bytes qh (element e's fifth bit is bit e / 32 of byte e % 32), 128 bytes of
 *         nibbles (as Q4_K);                             x = d * scale_s * q5 - dmin * min_s
 *   Q6_K: 256 elements in 210 bytes: 128 bytes ql, 64 bytes qh, 16 int8 scales (one per 16
 *         elements), f16 d. Two halves of 128 elements, each with 64 ql bytes and 32 qh bytes:
 *         element r < 64 of a half takes the low nibble of ql byte r, element 64 + r the high
 *         one; element 32 * s + l takes bits 2s..2s+1 of qh byte l as its top two bits;
 *                                                         x = d * scale_i * (q6 - 32)
 * Products are evaluated in the order gguf-py's reference decoder uses (the sub-block factor
 * d * scale first, then times the quant, then the min added), each rounded to f32, so the
 * values match it bit for bit; ISO C mode (-std=c11) keeps GCC from fusing them into FMAs. */
#include "model_private.h"

#include <string.h>

const char *ks_dtype_name(ks_dtype t) {
    switch (t) {
#define KS_X(e, s, be, bb) \
    case e:                \
        return s;
        KS_DTYPE_LIST(KS_X)
#undef KS_X
    default:
        break;
    }
    return "?";
}

int ks_dtype_block_elems(ks_dtype t) {
    switch (t) {
#define KS_X(e, s, be, bb) \
    case e:                \
        return be;
        KS_DTYPE_LIST(KS_X)
#undef KS_X
    default:
        break;
    }
    return 0;
}

int ks_dtype_block_bytes(ks_dtype t) {
    switch (t) {
#define KS_X(e, s, be, bb) \
    case e:                \
        return bb;
        KS_DTYPE_LIST(KS_X)
#undef KS_X
    default:
        break;
    }
    return 0;
}

ks_status ks_dtype_nbytes(ks_dtype t, uint64_t n, uint64_t *out, ks_error *err) {
    if ((int)t < 0 || t >= KS_DTYPE_COUNT)
        return ks_error_set(err, KS_ERR_RANGE, "dtype %d out of range", (int)t);
    uint64_t be = (uint64_t)ks_dtype_block_elems(t), bb = (uint64_t)ks_dtype_block_bytes(t);
    if (n % be != 0)
        return ks_error_set(err, KS_ERR_RANGE,
                            "%llu elements is not a multiple of the %s block size %llu",
                            (unsigned long long)n, ks_dtype_name(t), (unsigned long long)be);
    uint64_t r;
    if (__builtin_mul_overflow(n / be, bb, &r))
        return ks_error_set(err, KS_ERR_RANGE, "byte size of %llu %s elements overflows",
                            (unsigned long long)n, ks_dtype_name(t));
    *out = r;
    return KS_OK;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE binary16 → binary32, exact for every input (subnormals renormalised, inf/nan kept,
 * nan payload shifted into the top of the f32 mantissa). */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: value = man * 2^-24; normalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400u));
            man &= 0x3ffu;
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return bits_f32(u);
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    /* 8 six-bit scales and 8 six-bit mins in 12 bytes: sub-blocks 0..3 hold theirs in the
     * low 6 bits of bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7 keep the low 4 bits
     * in bytes 8..11 (scale low nibble, min high nibble) and the top 2 bits in the spare
     * high bits of bytes 0..3 (scales) and 4..7 (mins). */
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

KS_VECTOR_CLONES void ks_dtype_to_f32(ks_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    switch (t) {
    case KS_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case KS_DTYPE_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(rd16(s + 2 * i));
        break;
    case KS_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = bits_f32((uint32_t)rd16(s + 2 * i) << 16);
        break;
    case KS_DTYPE_Q8_0:
        for (size_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = s + b * 34;
            float d = f16_to_f32(rd16(blk));
            for (int j = 0; j < 32; j++) dst[b * 32 + j] = d * (float)(int8_t)blk[2 + j];
        }
        break;
    case KS_DTYPE_Q4_0:
        for (size_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = s + b * 18;
            float d = f16_to_f32(rd16(blk));
            float *y = dst + b * 32;
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)((blk[2 + j] & 0x0f) - 8);
                y[j + 16] = d * (float)((blk[2 + j] >> 4) - 8);
            }
        }
        break;
    case KS_DTYPE_Q4_K:
        for (size_t b = 0; b < n / 256; b++) {
            const uint8_t *blk = s + b * 144;
            float d = f16_to_f32(rd16(blk)), dmin = f16_to_f32(rd16(blk + 2));
            const uint8_t *scales = blk + 4, *qs = blk + 16;
            float *y = dst + b * 256;
            for (int pair = 0; pair < 4; pair++) {
                uint8_t sc0, m0, sc1, m1;
                q4k_scale_min(2 * pair, scales, &sc0, &m0);
                q4k_scale_min(2 * pair + 1, scales, &sc1, &m1);
                float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
                const uint8_t *q = qs + 32 * pair;
                for (int l = 0; l < 32; l++) y[64 * pair + l] = d0 * (float)(q[l] & 0x0f) - mm0;
                for (int l = 0; l < 32; l++) y[64 * pair + 32 + l] = d1 * (float)(q[l] >> 4) - mm1;
            }
        }
        break;
    case KS_DTYPE_Q4_1:
        for (size_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = s + b * 20;
            float d = f16_to_f32(rd16(blk)), m = f16_to_f32(rd16(blk + 2));
            const uint8_t *q = blk + 4;
            float *y = dst + b * 32;
            for (int j = 0; j < 16; j++) {
                y[j] = d * (float)(q[j] & 0x0f) + m;
                y[j + 16] = d * (float)(q[j] >> 4) + m;
            }
        }
        break;
    case KS_DTYPE_Q5_0:
    case KS_DTYPE_Q5_1: {
        /* the same layout but for the min field: Q5_0 centres at 16, Q5_1 adds m */
        const bool has_min = t == KS_DTYPE_Q5_1;
        const size_t bb = has_min ? 24 : 22;
        for (size_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = s + b * bb;
            float d = f16_to_f32(rd16(blk));
            const uint8_t *h = blk + (has_min ? 4 : 2);
            const uint8_t *q = h + 4;
            uint32_t qh = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 |
                          (uint32_t)h[3] << 24;
            float *y = dst + b * 32;
            if (has_min) {
                float m = f16_to_f32(rd16(blk + 2));
                for (int j = 0; j < 16; j++) {
                    y[j] = d * (float)((q[j] & 0x0f) | ((qh >> j) & 1) << 4) + m;
                    y[j + 16] = d * (float)((q[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) + m;
                }
            } else {
                for (int j = 0; j < 16; j++) {
                    y[j] = d * (float)((int)((q[j] & 0x0f) | ((qh >> j) & 1) << 4) - 16);
                    y[j + 16] = d * (float)((int)((q[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16);
                }
            }
        }
        break;
    }
    case KS_DTYPE_Q2_K:
        for (size_t b = 0; b < n / 256; b++) {
            const uint8_t *blk = s + b * 84;
            const uint8_t *scales = blk, *qs = blk + 16;
            float d = f16_to_f32(rd16(blk + 80)), dmin = f16_to_f32(rd16(blk + 82));
            float *y = dst + b * 256;
            for (int sb = 0; sb < 16; sb++) { /* sub-block of 16: half sb / 8, shift (sb / 2) % 4 */
                float dl = d * (float)(scales[sb] & 0x0f), ml = dmin * (float)(scales[sb] >> 4);
                const uint8_t *q = qs + 32 * (sb / 8) + 16 * (sb % 2);
                int shift = 2 * ((sb / 2) % 4);
                for (int l = 0; l < 16; l++) y[16 * sb + l] = dl * (float)((q[l] >> shift) & 3) - ml;
            }
        }
        break;
    case KS_DTYPE_Q3_K:
        for (size_t b = 0; b < n / 256; b++) {
            const uint8_t *blk = s + b * 110;
            const uint8_t *hmask = blk, *qs = blk + 32, *sc = blk + 96;
            float d = f16_to_f32(rd16(blk + 108));
            float *y = dst + b * 256;
            for (int sb = 0; sb < 16; sb++) {
                int lo = sb < 8 ? sc[sb] & 0x0f : sc[sb - 8] >> 4;
                int hi = (sc[8 + sb % 4] >> (2 * (sb / 4))) & 3;
                float dl = d * (float)((lo | hi << 4) - 32);
                const uint8_t *q = qs + 32 * (sb / 8) + 16 * (sb % 2);
                const uint8_t *hm = hmask + 16 * (sb % 2);
                int shift = 2 * ((sb / 2) % 4), hbit = sb / 2; /* element 16 sb + l: hmask bit e / 32 */
                for (int l = 0; l < 16; l++) {
                    int q3 = ((q[l] >> shift) & 3) - (((hm[l] >> hbit) & 1) ? 0 : 4);
                    y[16 * sb + l] = dl * (float)q3;
                }
            }
        }
        break;
    case KS_DTYPE_Q5_K:
        for (size_t b = 0; b < n / 256; b++) {
            const uint8_t *blk = s + b * 176;
            float d = f16_to_f32(rd16(blk)), dmin = f16_to_f32(rd16(blk + 2));
            const uint8_t *scales = blk + 4, *qh = blk + 16, *qs = blk + 48;
            float *y = dst + b * 256;
            for (int pair = 0; pair < 4; pair++) {
                uint8_t sc0, m0, sc1, m1;
                q4k_scale_min(2 * pair, scales, &sc0, &m0);
                q4k_scale_min(2 * pair + 1, scales, &sc1, &m1);
                float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
                const uint8_t *q = qs + 32 * pair;
                int h0 = 2 * pair, h1 = 2 * pair + 1; /* sub-block s takes bit s of qh */
                for (int l = 0; l < 32; l++)
                    y[64 * pair + l] = d0 * (float)((q[l] & 0x0f) | ((qh[l] >> h0) & 1) << 4) - mm0;
                for (int l = 0; l < 32; l++)
                    y[64 * pair + 32 + l] = d1 * (float)((q[l] >> 4) | ((qh[l] >> h1) & 1) << 4) - mm1;
            }
        }
        break;
    case KS_DTYPE_Q6_K:
        for (size_t b = 0; b < n / 256; b++) {
            const uint8_t *blk = s + b * 210;
            const uint8_t *ql = blk, *qh = blk + 128;
            const int8_t *sc = (const int8_t *)(blk + 192);
            float d = f16_to_f32(rd16(blk + 208));
            float *y = dst + b * 256;
            for (int sb = 0; sb < 16; sb++) { /* element e = 16 sb + l; r = e % 128 in its half */
                float dl = d * (float)sc[sb];
                int half = sb / 8, r0 = 16 * (sb % 8);
                const uint8_t *lo = ql + 64 * half + r0 % 64, *hi = qh + 32 * half + r0 % 32;
                int lshift = 4 * (r0 / 64), hshift = 2 * (r0 / 32);
                for (int l = 0; l < 16; l++) {
                    int q6 = (int)(((lo[l] >> lshift) & 0x0f) | ((hi[l] >> hshift) & 3) << 4) - 32;
                    y[16 * sb + l] = dl * (float)q6;
                }
            }
        }
        break;
    default:
        break;
    }
}

size_t ks_dtype_row_bytes(ks_dtype t, size_t cols) {
    return cols / (size_t)ks_dtype_block_elems(t) * (size_t)ks_dtype_block_bytes(t);
}

/* ------------------------------------------------------------------ f32 -> 16-bit */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

/* AVX state saved by the OS (xgetbv) as well as the cpuid bits. Computed once; a racing
 * first call computes the same value. */
static bool os_avx(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX)) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;
}

bool ks_cpu_f16c(void) {
    static int v = -1;
    if (v < 0) {
        unsigned a, b, c, d;
        v = os_avx() && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    }
    return v;
}

bool ks_cpu_avx2_fma(void) {
    static int v = -1;
    if (v < 0) {
        unsigned a, b, c, d;
        bool fma = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_FMA) && (c & bit_F16C);
        bool avx2 = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
        v = os_avx() && fma && avx2;
    }
    return v;
}

/* F16C's conversion with the rounding given in the instruction (nearest even), whatever
 * MXCSR says; its NaN result is the one ks_f32_to_f16_scalar documents. Blocks of 16 and 8
 * go straight through; the last n % 8 values through a small copy (the recorder converts many
 * short rows: an attention row, one head of a per-head tensor). */
#define KS_F16C_RND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
__attribute__((target("avx,f16c"))) static void f16_f16c(const float *in, uint16_t *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(in + i), KS_F16C_RND);
        __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(in + i + 8), KS_F16C_RND);
        _mm_storeu_si128((__m128i *)(out + i), a);
        _mm_storeu_si128((__m128i *)(out + i + 8), b);
    }
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), KS_F16C_RND));
    if (i < n) {
        float x[8] = {0};
        uint16_t h[8];
        memcpy(x, in + i, (n - i) * sizeof *x);
        _mm_storeu_si128((__m128i *)h, _mm256_cvtps_ph(_mm256_loadu_ps(x), KS_F16C_RND));
        memcpy(out + i, h, (n - i) * sizeof *h);
    }
}

/* bf16: the scalar rule on 8 lanes (integer rounding, NaN lanes blended in), giving 8 values
 * in the low halves of 32-bit lanes; packus packs two such vectors within 128-bit lanes, the
 * permute puts them in order. Blocks of 16 and 8, then the last n % 8 through a small copy. */
__attribute__((target("avx2"))) static __m256i bf16_round8(const float *in) {
    const __m256i abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
    __m256i x = _mm256_loadu_si256((const __m256i *)in);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs), inf);
    __m256i hi = _mm256_srli_epi32(x, 16);
    __m256i rnd = _mm256_add_epi32(x, _mm256_add_epi32(bias, _mm256_and_si256(hi, one)));
    return _mm256_blendv_epi8(_mm256_srli_epi32(rnd, 16), _mm256_or_si256(hi, quiet), nan);
}

__attribute__((target("avx2"))) static void bf16_avx2(const float *in, uint16_t *out, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i p = _mm256_packus_epi32(bf16_round8(in + i), bf16_round8(in + i + 8));
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_permute4x64_epi64(p, 0xd8));
    }
    for (; i + 8 <= n; i += 8) {
        __m256i r = bf16_round8(in + i);
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(p));
    }
    if (i < n) {
        float x[8] = {0};
        uint16_t h[8];
        memcpy(x, in + i, (n - i) * sizeof *x);
        __m256i r = bf16_round8(x);
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8);
        _mm_storeu_si128((__m128i *)h, _mm256_castsi256_si128(p));
        memcpy(out + i, h, (n - i) * sizeof *h);
    }
}
#else
bool ks_cpu_f16c(void) { return false; }
bool ks_cpu_avx2_fma(void) { return false; }
#endif

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

void ks_f32_to_f16_scalar(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t x = f32_bits(in[i]);
        uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
        uint32_t ax = x & 0x7fffffffu;
        uint16_t h;
        if (ax > 0x7f800000u) {
            h = (uint16_t)(0x7e00u | ((ax & 0x7fffffu) >> 13)); /* NaN: quiet, top payload bits */
        } else if (ax >= 0x477ff000u) {
            h = 0x7c00u; /* inf, or rounds to >= 65520: inf */
        } else if (ax < 0x38800000u) { /* below 2^-14: subnormal half */
            if (ax < 0x33000000u) {    /* below 2^-25: rounds to 0 */
                h = 0;
            } else {
                uint32_t m = (ax & 0x7fffffu) | 0x800000u;
                int shift = 126 - (int)(ax >> 23); /* mantissa bits dropped: 14..24 */
                uint32_t v = m >> shift;
                uint32_t rem = m & ((1u << shift) - 1u), mid = 1u << (shift - 1);
                if (rem > mid || (rem == mid && (v & 1u))) v++;
                h = (uint16_t)v;
            }
        } else {
            uint32_t v = (ax - 0x38000000u) >> 13; /* rebias 127 -> 15 */
            uint32_t rem = ax & 0x1fffu;
            if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) v++;
            h = (uint16_t)v;
        }
        out[i] = (uint16_t)(sign | h);
    }
}

void ks_f32_to_bf16_scalar(const float *in, uint16_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t x = f32_bits(in[i]);
        if ((x & 0x7fffffffu) > 0x7f800000u) {
            out[i] = (uint16_t)((x >> 16) | 0x40u); /* NaN stays NaN: quiet bit set */
            continue;
        }
        x += 0x7fffu + ((x >> 16) & 1u); /* nearest, ties to even (torch's and numpy's rule) */
        out[i] = (uint16_t)(x >> 16);
    }
}

void ks_f32_to_f16(const float *in, uint16_t *out, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (ks_cpu_f16c()) {
        f16_f16c(in, out, n);
        return;
    }
#endif
    ks_f32_to_f16_scalar(in, out, n);
}

void ks_f32_to_bf16(const float *in, uint16_t *out, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (ks_cpu_avx2_fma()) {
        bf16_avx2(in, out, n);
        return;
    }
#endif
    ks_f32_to_bf16_scalar(in, out, n);
}
