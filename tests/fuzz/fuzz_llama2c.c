/* fuzz_llama2c.c — libFuzzer target: a llama2.c checkpoint (legacy, v1 or v2) from memory. */
#include <stdint.h>
#include <stdlib.h>

#include "model_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ks_error err;
    ks_model *m = NULL;
    if (ks_model_alloc(&m, &err) != KS_OK) return 0;
    if (ks_llama2c_load_mem(m, data, size, "fuzz.bin", &err) == KS_OK) {
        if (m->output.data == NULL) m->output = m->tok_embeddings; /* as ks_load_llama2c leaves it */
        if (ks_model_check_complete(m, "fuzz", &err) != KS_OK) abort();
    }
    ks_model_close(m);
    return 0;
}
