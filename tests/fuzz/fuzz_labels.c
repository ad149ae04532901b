/* fuzz_labels.c — libFuzzer target for the probe labels reader (probes/labels.c): the first
 * byte picks JSONL (even) or CSV (odd), the rest is the file. A parse either fails with a
 * message naming the source, or gives labels that keep ks_labels.h's promises. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ks_labels.h"

static void check(bool ok) {
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool csv = data[0] & 1;
    ks_labels L;
    ks_error err = {0};
    ks_status st = ks_labels_parse((const char *)data + 1, size - 1, csv, "fuzz.labels", &L, &err);
    if (st) {
        check(strstr(err.msg, "fuzz.labels") != NULL || st == KS_ERR_NOMEM);
        check(L.n == 0 && L.v == NULL);
        return 0;
    }
    check(L.n > 0);
    bool all_num = true;
    for (size_t i = 0; i < L.n; i++) {
        const ks_label *l = &L.v[i];
        check(l->label && l->label[0]);
        check((l->prompt_index >= 0) != (l->prompt_id != NULL));
        check(!(l->has_position && l->token_regex));
        check(l->line >= 1);
        if (isnan(l->value)) all_num = false;
    }
    check(all_num == L.all_numeric);
    ks_labels_free(&L);
    return 0;
}
