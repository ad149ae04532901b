/* fuzz_tuned_lens.c — libFuzzer target for the tuned-lens file reader (probes/tuned_lens.c,
 * ks_tuned_lens_load_mem): the input is the whole file. It is checked once against no model and
 * once against a fixed small identity (d_model 2, 2 layers, vocab 3, no sha). A load either
 * fails with KS_ERR_FORMAT / KS_ERR_ARG (or NOMEM) and a message naming the source, or gives a
 * lens of the declared shape whose every weight is finite. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ks_tuned_lens.h"

static void check(bool ok) {
    if (!ok) abort();
}

static void one(const uint8_t *data, size_t size, const ks_tuned_lens_identity *expect) {
    ks_tuned_lens *tl = NULL;
    ks_error err = {0};
    ks_status st = ks_tuned_lens_load_mem(data, size, "fuzz.safetensors", expect, &tl, &err);
    if (st) {
        check(tl == NULL);
        check(st == KS_ERR_FORMAT || st == KS_ERR_NOMEM || (expect && st == KS_ERR_ARG));
        check(st == KS_ERR_NOMEM || strstr(err.msg, "fuzz.safetensors") != NULL);
        return;
    }
    const ks_tuned_lens_identity *id = ks_tuned_lens_id(tl);
    check(id->d_model >= 1 && id->n_layers >= 1 && id->vocab_size >= 1);
    if (expect)
        check(id->d_model == expect->d_model && id->n_layers == expect->n_layers &&
              id->vocab_size == expect->vocab_size);
    size_t D = (size_t)id->d_model;
    for (int l = 0; l < id->n_layers; l++) {
        const float *w = ks_tuned_lens_weight(tl, l), *b = ks_tuned_lens_bias(tl, l);
        for (size_t i = 0; i < D * D; i++) check(isfinite(w[i]));
        for (size_t i = 0; i < D; i++) check(isfinite(b[i]));
    }
    check(ks_tuned_lens_weight(tl, id->n_layers) == NULL);
    ks_tuned_lens_free(tl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ks_tuned_lens_identity small = {.d_model = 2, .n_layers = 2, .vocab_size = 3};
    one(data, size, NULL);
    one(data, size, &small);
    return 0;
}
