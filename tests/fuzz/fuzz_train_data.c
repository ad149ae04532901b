/* fuzz_train_data.c — libFuzzer target for the fine-tuning data loaders (train/data.c): the
 * first byte picks the format (auto, sharegpt, alpaca, hh, text, tokens), the rest is the
 * file. A load either fails naming the source and keeping nothing, or gives examples that keep
 * ks_train.h's promises (one kind each, roles known, masks 0/1); each dialogue then goes
 * through the Koala template's training encoder with a small byte-level tokenizer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_train.h"

static void check(bool ok) {
    if (!ok) abort();
}

/* <unk>, <s>, </s> and the 256 byte pieces: every text encodes. */
static ks_tokenizer *byte_tokenizer(void) {
    static ks_tokenizer *tok;
    if (tok) return tok;
    static char pieces[259][8];
    const char *pp[259];
    size_t lens[259];
    int types[259];
    snprintf(pieces[0], 8, "<unk>");
    snprintf(pieces[1], 8, "<s>");
    snprintf(pieces[2], 8, "</s>");
    for (int i = 0; i < 256; i++) snprintf(pieces[3 + i], 8, "<0x%02X>", i);
    for (int i = 0; i < 259; i++) {
        pp[i] = pieces[i];
        lens[i] = strlen(pieces[i]);
        types[i] = i == 0 ? KS_TOKEN_UNKNOWN : i < 3 ? KS_TOKEN_CONTROL : KS_TOKEN_BYTE;
    }
    ks_error err = {0};
    check(ks_tokenizer_from_vocab(259, pp, lens, NULL, types, 1, 2, 0, true, &tok, &err) == KS_OK);
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const ks_data_format fmts[] = {KS_DATA_AUTO, KS_DATA_SHAREGPT, KS_DATA_ALPACA,
                                          KS_DATA_HH,   KS_DATA_TEXT,     KS_DATA_TOKENS};
    ks_data_format f = fmts[data[0] % 6];
    const char *src = data[0] & 0x80 ? "fuzz.txt" : "fuzz.jsonl";
    ks_dataset *d = NULL;
    ks_error err = {0};
    check(ks_dataset_create(&d, &err) == KS_OK);
    ks_status st = ks_dataset_load_mem(d, (const char *)data + 1, size - 1, src, f, &err);
    if (st) {
        check(strstr(err.msg, src) != NULL || st == KS_ERR_NOMEM);
        check(ks_dataset_count(d) == 0);
        ks_dataset_free(d);
        return 0;
    }
    check(ks_dataset_count(d) > 0);
    for (int i = 0; i < ks_dataset_count(d); i++) {
        ks_example ex;
        check(ks_dataset_get(d, i, &ex, &err) == KS_OK);
        check((ex.msgs != NULL) + (ex.text != NULL) + (ex.ids != NULL) == 1);
        check(ex.where && strstr(ex.where, src) == ex.where);
        for (int k = 0; k < ex.n_msgs; k++)
            check(!strcmp(ex.msgs[k].role, "user") || !strcmp(ex.msgs[k].role, "assistant") ||
                  (!strcmp(ex.msgs[k].role, "system") && k == 0));
        for (int k = 0; ex.mask && k < ex.n_ids; k++) check(ex.mask[k] <= 1);
        if (i < 4) {
            ks_train_seq s;
            if (ks_train_encode(&ex, byte_tokenizer(), KS_CHAT_KOALA, KS_LOSS_ASSISTANT, 1 << 30, &s,
                                &err) == KS_OK) {
                check(s.n >= 1 && s.mask[0] == 0);
                for (int k = 0; k < s.n; k++) check(s.mask[k] <= 1 && s.ids[k] >= 0);
                ks_train_seq_free(&s);
            }
        }
    }
    ks_dataset_free(d);
    return 0;
}
