/* test_sample.c — the sampler: greedy, temperature, top-k and top-p against the
 * distributions they define (oracle: the closed-form softmax / truncated-and-renormalised
 * probabilities), checked with a chi-square test at p = 1e-6 over 200,000 seeded draws
 * (deterministic: the seed is fixed, so the test cannot flake). */
#include "ks_model.h"
#include "tap.h"

#define DRAWS 200000

static double chi2(const int *count, const double *p, int n) {
    double x = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] == 0) {
            if (count[i]) return INFINITY;
            continue;
        }
        double e = p[i] * DRAWS;
        x += (count[i] - e) * (count[i] - e) / e;
    }
    return x;
}

static void draw(ks_sampler_params prm, const float *logits, int n, int *count) {
    ks_sampler *s = NULL;
    ks_error err = {0};
    ks_sampler_create(&prm, n, &s, &err);
    float buf[16];
    memset(count, 0, sizeof(int) * n);
    for (int i = 0; i < DRAWS; i++) {
        memcpy(buf, logits, sizeof(float) * n);
        count[ks_sampler_sample(s, buf)]++;
    }
    ks_sampler_free(s);
}

int main(void) {
    const float logits[5] = {2.0f, 1.5f, 0.3f, 0.3f, -1.0f};
    int n = 5, count[5];
    double p[5], z = 0;

    /* greedy: argmax, lowest id on ties */
    ks_sampler *s = NULL;
    ks_error err = {0};
    ks_sampler_params g = {.temperature = 0, .top_p = 1};
    ks_sampler_create(&g, 5, &s, &err);
    float tie[5] = {0, 3, 1, 3, 2}, buf[5];
    memcpy(buf, tie, sizeof buf);
    tap_ok(ks_sampler_sample(s, buf) == 1, "greedy picks the first of tied maxima");
    ks_sampler_free(s);

    /* temperature 0.7: softmax(logits / 0.7) */
    for (int i = 0; i < n; i++) z += exp(logits[i] / 0.7);
    for (int i = 0; i < n; i++) p[i] = exp(logits[i] / 0.7) / z;
    draw((ks_sampler_params){.temperature = 0.7f, .top_p = 1, .seed = 1}, logits, n, count);
    double x = chi2(count, p, n);
    tap_ok(x < 33.4, "temperature 0.7 matches softmax(logits/T): chi2 = %.2f (df 4, p=1e-6 at 33.4)", x);

    /* top-k 2 at temperature 1: the two best, renormalised */
    double e0 = exp(2.0), e1 = exp(1.5);
    double pk[5] = {e0 / (e0 + e1), e1 / (e0 + e1), 0, 0, 0};
    draw((ks_sampler_params){.temperature = 1, .top_k = 2, .top_p = 1, .seed = 2}, logits, n, count);
    x = chi2(count, pk, n);
    tap_ok(x < 23.9, "top-k 2 keeps the two best, renormalised: chi2 = %.2f (df 1, p=1e-6 at 23.9)", x);

    /* top-p: probabilities 0.5 0.3 0.1 0.1 -> nucleus for p=0.7 is {0,1} (0.8 >= 0.7) */
    const float lp[4] = {logf(0.5f), logf(0.3f), logf(0.1f), logf(0.1f)};
    double pp[4] = {0.625, 0.375, 0, 0};
    draw((ks_sampler_params){.temperature = 1, .top_p = 0.7f, .seed = 3}, lp, 4, count);
    x = chi2(count, pp, 4);
    tap_ok(x < 23.9, "top-p 0.7 keeps the smallest set reaching 0.7: chi2 = %.2f", x);
    /* top-p 0.85 -> {0,1,2 or 3}: cumulative 0.9 after one of the 0.1s; ties by lower id */
    double pp2[4] = {0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0};
    draw((ks_sampler_params){.temperature = 1, .top_p = 0.85f, .seed = 4}, lp, 4, count);
    x = chi2(count, pp2, 4);
    tap_ok(x < 27.7, "top-p 0.85 includes exactly one of two tied 0.1 tokens: chi2 = %.2f", x);

    /* determinism: same seed, same draws; another seed, other draws */
    int a[64], b[64], c[64];
    ks_sampler_params prm = {.temperature = 1, .top_p = 1, .seed = 7};
    for (int r = 0; r < 3; r++) {
        if (r == 2) prm.seed = 8;
        ks_sampler_create(&prm, n, &s, &err);
        for (int i = 0; i < 64; i++) {
            memcpy(buf, logits, sizeof buf);
            (r == 0 ? a : r == 1 ? b : c)[i] = ks_sampler_sample(s, buf);
        }
        ks_sampler_free(s);
    }
    tap_ok(memcmp(a, b, sizeof a) == 0, "same seed, same tokens");
    tap_ok(memcmp(a, c, sizeof a) != 0, "different seed, different tokens");

    /* bad parameters */
    ks_sampler_params bad = {.temperature = -1, .top_p = 1};
    tap_ok(ks_sampler_create(&bad, 5, &s, &err) == KS_ERR_ARG && strstr(err.msg, "temperature"),
           "negative temperature refused: %s", err.msg);
    bad = (ks_sampler_params){.temperature = 1, .top_p = 1.5f};
    tap_ok(ks_sampler_create(&bad, 5, &s, &err) == KS_ERR_ARG && strstr(err.msg, "top-p"),
           "top-p > 1 refused: %s", err.msg);
    return tap_done();
}
