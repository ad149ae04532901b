/* fuzz_tokenizer_load.c — libFuzzer target for ks_tokenizer_from_memory: the input is a
 * whole tokenizer file (SentencePiece protobuf, tokenizer.json, llama2.c .bin or GGUF,
 * recognised from the content). A load must either succeed with a usable tokenizer or fail
 * with a status and a message naming the file; a loaded tokenizer must encode and decode
 * (some of the input itself, as text) without leaving its vocabulary. */
#include <stdlib.h>
#include <string.h>

#include "model_private.h"

static void check(bool ok) {
    if (!ok) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ks_tokenizer *t = NULL;
    ks_error err = {0};
    ks_status st = ks_tokenizer_from_memory(data, size, "fuzz.tok", &t, &err);
    if (st != KS_OK) {
        check(t == NULL);
        check(strncmp(err.msg, "fuzz.tok", 8) == 0);
        return 0;
    }
    check(t != NULL);
    int nv = ks_tokenizer_vocab_size(t);
    check(nv > 0);
    check(ks_tokenizer_bos(t) >= -1 && ks_tokenizer_bos(t) < nv);
    check(ks_tokenizer_eos(t) >= -1 && ks_tokenizer_eos(t) < nv);
    for (int i = 0; i < nv && i < 64; i++) check(ks_tokenizer_piece(t, i) != NULL);
    size_t tl = size < 256 ? size : 256;
    int *ids = NULL, n = 0;
    st = ks_tokenizer_encode(t, (const char *)data + (size - tl), tl, true, &ids, &n, &err);
    check(st == KS_OK);
    for (int i = 0; i < n; i++) check(ids[i] >= 0 && ids[i] < nv);
    char *text = NULL;
    size_t len = 0;
    check(ks_tokenizer_decode(t, ids, n, &text, &len, &err) == KS_OK);
    check(text[len] == '\0');
    char buf[32];
    int prev = -1;
    for (int i = 0; i < n; i++) {
        size_t l = ks_tokenizer_token_text(t, prev, ids[i], buf, sizeof buf);
        check(l < sizeof buf && buf[l] == '\0');
        prev = ids[i];
    }
    free(text);
    free(ids);
    ks_tokenizer_free(t);
    return 0;
}
