/* fuzz_gguf.c — libFuzzer target: a whole GGUF file from memory through the model loader
 * (header, metadata, hyperparameters, tensor infos, layout, binding, embedded tokenizer),
 * and through the tokenizer-only entry point. */
#include <stdint.h>
#include <stdlib.h>

#include "model_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ks_error err;
    ks_model *m = NULL;
    if (ks_model_alloc(&m, &err) == KS_OK) {
        if (ks_gguf_load_mem(m, data, size, "fuzz.gguf", &err) == KS_OK &&
            ks_model_check_complete(m, "fuzz", &err) != KS_OK)
            abort(); /* loaded but incomplete: a loader bug */
        ks_model_close(m);
    }
    ks_tokenizer *tok = NULL;
    if (ks_gguf_tokenizer_mem(data, size, "fuzz.gguf", &tok, &err) == KS_OK) ks_tokenizer_free(tok);
    return 0;
}
