/* ks_rng.h — the random numbers of the statistics (probes, audits): xoshiro256** (Blackman &
 * Vigna 2018) seeded through splitmix64. Header-only; each user seeds its own streams, so a
 * result depends only on its seed and its stream. */
#ifndef KS_RNG_H
#define KS_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} ks_rng;

static inline uint64_t ks_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t ks_rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t ks_rng_next(ks_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = ks_rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ks_rotl64(s[3], 45);
    return out;
}

#endif
