/* test_malformed.c — every malformed checkpoint of tests/malformed/cases.tsv is refused by
 * ks_model_open with the expected status and a message naming the file and the field; the
 * tiny valid controls written beside them load. Run under ASan+UBSan this is the "never
 * crash" check. Oracle: the table written by make_malformed.py (one defect per case). */
#include "tap.h"

#include "model_private.h"


static void controls(const char *dir) {
    static const char *valid[] = {"valid_legacy.bin", "valid_v1.bin", "valid_v2.bin", "valid.gguf", "valid_v2.gguf",
                                  "valid_hf", "valid_hf/model.safetensors"};
    char p[8192];
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, valid[i]);
        ks_model *m = NULL;
        ks_error e = {0};
        ks_status s = ks_model_open(p, NULL, &m, &e);
        tap_ok(s == KS_OK && m && ks_model_config(m)->dim == 8 && ks_model_config(m)->n_layers == 1,
               "control %s loads (%s)", valid[i], e.msg);
        if (m && !strcmp(valid[i], "valid_v2.bin"))
            tap_ok(!strcmp(ks_model_weight_dtype(m), "int8-g4") &&
                       fabsf(((const float *)m->layers[0].wq.data)[1] - 5.0f * 0.01f) < 1e-7f,
                   "llama2.c v2 int8 dequantised (q * scale)");
        ks_model_close(m);
    }
    ks_tokenizer *tok = NULL;
    ks_error e = {0};
    snprintf(p, sizeof p, "%s/valid_vocab_only.gguf", dir);
    ks_status s = ks_gguf_open_tokenizer(p, &tok, &e);
    tap_ok(s == KS_OK || s == KS_ERR_UNSUPPORTED, "vocab-only GGUF opens as a tokenizer (%s)", e.msg);
    if (tok) ks_tokenizer_free(tok);
    /* the model loader, on the other hand, refuses it: no tensors */
    ks_model *m = NULL;
    s = ks_model_open(p, NULL, &m, &e);
    tap_ok(s == KS_ERR_FORMAT && strstr(e.msg, "no tensors") && strstr(e.msg, "tokenizer"),
           "vocab-only GGUF is not a model: %s", e.msg);
    ks_model_close(m);
}

int main(void) {
    char tsv[4096], dir[4096];
    ks_test_src_file("tests/malformed/cases.tsv", tsv, sizeof tsv);
    ks_test_src_file("tests/malformed/cases", dir, sizeof dir);
    FILE *f = fopen(tsv, "r");
    if (!tap_ok(f != NULL, "open %s", tsv)) return tap_done();
    char line[2048];
    int n_cases = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        line[strcspn(line, "\r\n")] = '\0';
        char *name = line, *st = strchr(name, '\t');
        if (!st) continue;
        *st++ = '\0';
        char *sub = strchr(st, '\t');
        if (!sub) continue;
        *sub++ = '\0';
        bool known;
        ks_status want = status_from_name(st, &known);
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        for (int no_mmap = 0; no_mmap < 2; no_mmap++) {
            ks_model *m = NULL;
            ks_error e = {0};
            ks_model_options o = {.no_mmap = no_mmap != 0};
            ks_status s = ks_model_open(p, &o, &m, &e);
            bool ok = known && s == want && m == NULL && strstr(e.msg, name) && strstr(e.msg, sub);
            tap_ok(ok, "%s%s: %s (want %s containing \"%s\")%s%s", name, no_mmap ? " [no_mmap]" : "",
                   ks_status_str(s), st, sub, ok ? "" : " got: ", ok ? "" : e.msg);
            ks_model_close(m);
        }
        n_cases++;
    }
    fclose(f);
    tap_ok(n_cases >= 25, "%d malformed cases (at least 25)", n_cases);
    controls(dir);
    return tap_done();
}
