/* sample.c — choosing the next token: greedy, temperature, top-k, top-p, seeded.
 *
 * The random source is SplitMix64 (a well-known 64-bit mixer), so a seed gives the same
 * tokens on every machine. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ks_model.h"

typedef struct {
    float p;
    int id;
} cand;

struct ks_sampler {
    ks_sampler_params prm;
    int vocab;
    uint64_t state;
    cand *c; /* (vocab) */
};

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) with 24 bits, as a float can hold */
static float rand_unit(uint64_t *s) { return (float)(splitmix64(s) >> 40) / 16777216.0f; }

ks_status ks_sampler_create(const ks_sampler_params *p, int vocab_size, ks_sampler **out,
                            ks_error *err) {
    if (!p || !out || vocab_size <= 0)
        return ks_error_set(err, KS_ERR_ARG, "ks_sampler_create: invalid arguments");
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return ks_error_set(err, KS_ERR_ARG, "temperature must be >= 0 (got %g)",
                            (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return ks_error_set(err, KS_ERR_ARG, "top-p must be in (0, 1] (got %g)",
                            (double)p->top_p);
    if (p->top_k < 0) return ks_error_set(err, KS_ERR_ARG, "top-k must be >= 0 (got %d)", p->top_k);
    ks_sampler *s = calloc(1, sizeof *s);
    if (!s) return ks_error_set(err, KS_ERR_NOMEM, "sampler: out of memory");
    s->c = malloc((size_t)vocab_size * sizeof(cand));
    if (!s->c) {
        free(s);
        return ks_error_set(err, KS_ERR_NOMEM, "sampler: out of memory");
    }
    s->prm = *p;
    s->vocab = vocab_size;
    s->state = p->seed;
    *out = s;
    return KS_OK;
}

void ks_sampler_free(ks_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static int cand_desc(const void *a, const void *b) {
    float pa = ((const cand *)a)->p, pb = ((const cand *)b)->p;
    if (pa != pb) return pa < pb ? 1 : -1;
    return ((const cand *)a)->id - ((const cand *)b)->id; /* stable: lower id first */
}

int ks_sampler_sample(ks_sampler *s, float *logits) {
    const int n = s->vocab;
    if (s->prm.temperature == 0.0f) return argmax(logits, n);
    /* softmax at the temperature */
    float mx = logits[argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        logits[i] = expf((logits[i] - mx) / s->prm.temperature);
        sum += logits[i];
    }
    for (int i = 0; i < n; i++) logits[i] = (float)(logits[i] / sum);

    int k = s->prm.top_k > 0 && s->prm.top_k < n ? s->prm.top_k : n;
    float top_p = s->prm.top_p;
    if (k == n && top_p >= 1.0f) {
        float r = rand_unit(&s->state), cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (r < cdf) return i;
        }
        return argmax(logits, n); /* rounding left r above the last cdf */
    }
    /* Candidates: with only top-p, tokens below (1 - p) / (n - 1) cannot be in the nucleus
     * (the nucleus would be complete before reaching them), so they need not be sorted. */
    int m = 0;
    float cutoff = k == n ? (1.0f - top_p) / (float)(n - 1) : 0.0f;
    for (int i = 0; i < n; i++)
        if (logits[i] >= cutoff) s->c[m++] = (cand){logits[i], i};
    qsort(s->c, (size_t)m, sizeof(cand), cand_desc);
    if (k < m) m = k;
    double cum = 0.0;
    int keep = m;
    for (int i = 0; i < m; i++) {
        cum += s->c[i].p;
        if (cum >= top_p) {
            keep = i + 1;
            break;
        }
    }
    double total = 0.0;
    for (int i = 0; i < keep; i++) total += s->c[i].p;
    double r = rand_unit(&s->state) * total, cdf = 0.0;
    for (int i = 0; i < keep; i++) {
        cdf += s->c[i].p;
        if (r < cdf) return s->c[i].id;
    }
    return s->c[keep - 1].id;
}
