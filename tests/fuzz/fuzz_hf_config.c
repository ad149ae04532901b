/* fuzz_hf_config.c — libFuzzer target: config.json text into a ks_config. Whatever parses
 * must also pass ks_config_validate (the parser promises a valid config). */
#include <stdint.h>
#include <stdlib.h>

#include "model_private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ks_error err;
    ks_config c;
    char hint[16];
    if (ks_hf_config_parse((const char *)data, size, "fuzz/config.json", &c, hint, &err) == KS_OK &&
        ks_config_validate(&c, "fuzz", &err) != KS_OK)
        abort();
    return 0;
}
