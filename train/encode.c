/* encode.c — one example into a training sequence: token ids and the loss mask.
 *
 * Dialogues go through the chat template exactly as prompts do at inference
 * (ks_chat_encode_train), so the model is trained on the token sequences it will later be
 * given; the mask keeps the loss on the model's own turns, as Koala's training did. Plain
 * text is BOS + text + EOS, every token a target (pretraining). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_train.h"

void ks_train_seq_free(ks_train_seq *s) {
    if (!s) return;
    free(s->ids);
    free(s->mask);
    memset(s, 0, sizeof *s);
}

/* Put "where: " before the message already in err. */
static void prefix(ks_error *err, ks_status st, const char *where) {
    if (!err) return;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    ks_error_set(err, st, "%s: %s", where, msg);
}

ks_status ks_train_encode(const ks_example *ex, const ks_tokenizer *tok, ks_chat_template t,
                          ks_loss_on on, int vocab_size, ks_train_seq *seq, ks_error *err) {
    memset(seq, 0, sizeof *seq);
    const char *where = ex->where ? ex->where : "(example)";
    ks_status st = KS_OK;
    if (ex->ids) {
        seq->n = ex->n_ids;
        seq->ids = malloc((size_t)ex->n_ids * sizeof(int));
        seq->mask = malloc((size_t)ex->n_ids);
        if (!seq->ids || !seq->mask) goto nomem;
        memcpy(seq->ids, ex->ids, (size_t)ex->n_ids * sizeof(int));
        for (int i = 0; i < ex->n_ids; i++) {
            if (ex->ids[i] >= vocab_size) {
                st = ks_error_set(err, KS_ERR_RANGE, "%s: ids[%d] = %d is outside the model's "
                                  "vocabulary (0..%d)", where, i, ex->ids[i], vocab_size - 1);
                goto fail;
            }
            seq->mask[i] = ex->mask && on == KS_LOSS_ASSISTANT ? ex->mask[i] : 1;
        }
    } else {
        if (!tok) {
            st = ks_error_set(err, KS_ERR_ARG, "%s: the model has no tokenizer to encode text with "
                              "(pre-tokenized data needs none)", where);
            goto fail;
        }
        if (ex->text) {
            int *ids = NULL, n = 0;
            if ((st = ks_tokenizer_encode(tok, ex->text, strlen(ex->text), true, &ids, &n, err))) {
                prefix(err, st, where);
                goto fail;
            }
            int eos = ks_tokenizer_eos(tok);
            seq->ids = realloc(ids, (size_t)(n + 1) * sizeof(int));
            if (!seq->ids) {
                free(ids);
                goto nomem;
            }
            if (eos >= 0) seq->ids[n++] = eos;
            seq->n = n;
            if (!(seq->mask = malloc((size_t)n))) goto nomem;
            memset(seq->mask, 1, (size_t)n);
        } else {
            if ((st = ks_chat_encode_train(tok, t, ex->msgs, ex->n_msgs, &seq->ids, &seq->mask,
                                           &seq->n, err))) {
                prefix(err, st, where);
                goto fail;
            }
            if (on == KS_LOSS_ALL) memset(seq->mask, 1, (size_t)seq->n);
        }
        for (int i = 0; i < seq->n; i++)
            if (seq->ids[i] >= vocab_size) {
                st = ks_error_set(err, KS_ERR_RANGE, "%s: token %d has id %d, outside the model's "
                                  "vocabulary (0..%d)", where, i, seq->ids[i], vocab_size - 1);
                goto fail;
            }
    }
    if (seq->n > 0) seq->mask[0] = 0;
    return KS_OK;
nomem:
    st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", where);
fail:
    ks_train_seq_free(seq);
    return st;
}

void ks_train_seqs_free(ks_train_seq *seqs, int n) {
    for (int i = 0; seqs && i < n; i++) ks_train_seq_free(&seqs[i]);
    free(seqs);
}

ks_status ks_train_prepare(const ks_dataset *d, const ks_tokenizer *tok, ks_chat_template t,
                           ks_loss_on on, int vocab_size, int max_len, ks_train_seq **seqs,
                           int *n, ks_train_data_stats *stats, ks_error *err) {
    ks_train_data_stats s = {.examples = ks_dataset_count(d)};
    if (max_len < 2) return ks_error_set(err, KS_ERR_ARG, "max_len: at least 2 tokens");
    ks_train_seq *v = calloc((size_t)s.examples + 1, sizeof *v);
    if (!v) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    int k = 0;
    for (int i = 0; i < s.examples; i++) {
        ks_example ex;
        ks_status st;
        if ((st = ks_dataset_get(d, i, &ex, err)) ||
            (st = ks_train_encode(&ex, tok, t, on, vocab_size, &v[k], err))) {
            ks_train_seqs_free(v, k);
            return st;
        }
        if (v[k].n > max_len) {
            v[k].n = max_len;
            s.truncated++;
        }
        int tg = 0;
        for (int j = 1; j < v[k].n; j++) tg += v[k].mask[j] != 0;
        if (tg == 0) {
            s.dropped++;
            ks_train_seq_free(&v[k]);
            continue;
        }
        s.tokens += v[k].n;
        s.targets += tg;
        k++;
    }
    s.sequences = k;
    *seqs = v;
    *n = k;
    if (stats) *stats = s;
    return KS_OK;
}
