/* generate.c — autoregressive generation with streaming and stop strings, and per-token
 * scoring of a text (the building block of every audit). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_private.h"

/* Longest suffix of text[0..len) that is a proper prefix of some stop string: that many
 * bytes must be held back from the stream until we know whether a stop string follows. */
static size_t stop_holdback(const char *text, size_t len, const char *const *stops) {
    size_t hold = 0;
    for (int i = 0; stops && stops[i]; i++) {
        size_t sl = strlen(stops[i]);
        for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
            if (k <= len && memcmp(text + len - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

/* Earliest occurrence of any stop string at or after `from`; len when none. */
static size_t stop_find(const char *text, size_t len, size_t from, const char *const *stops) {
    size_t best = len;
    for (int i = 0; stops && stops[i]; i++) {
        if (!stops[i][0]) continue;
        const char *hit = memmem(text + from, len - from, stops[i], strlen(stops[i]));
        if (hit && (size_t)(hit - text) < best) best = (size_t)(hit - text);
    }
    return best;
}

ks_status ks_generate(ks_session *s, const int *prompt, int n_prompt, const ks_generate_params *gp,
                      ks_stream_fn stream, void *user, int **out_ids, int *n_out, char **out_text,
                      ks_error *err) {
    if (!s || !gp || (n_prompt > 0 && !prompt) || n_prompt < 0)
        return ks_error_set(err, KS_ERR_ARG, "ks_generate: invalid arguments");
    const ks_model *m = ks_session_model(s);
    const ks_tokenizer *tok = m->tok;
    const int vocab = m->cfg.vocab_size;
    if (n_prompt == 0 && ks_session_pos(s) == 0)
        return ks_error_set(err, KS_ERR_ARG, "generate: empty prompt (give at least BOS)");
    int eos = tok ? ks_tokenizer_eos(tok) : m->cfg.eos_id;

    ks_status st = KS_OK;
    ks_sampler *smp = NULL;
    float *logits = malloc((size_t)vocab * sizeof(float));
    int *ids = malloc((size_t)(gp->max_new_tokens > 0 ? gp->max_new_tokens : 1) * sizeof(int));
    ks_strbuf text = {0};
    int n = 0;
    size_t emitted = 0;
    if (!logits || !ids) {
        st = ks_error_set(err, KS_ERR_NOMEM, "generate: out of memory");
        goto out;
    }
    if ((st = ks_sampler_create(&gp->sampling, vocab, &smp, err))) goto out;
    if (n_prompt > 0) {
        if ((st = ks_session_forward(s, prompt, n_prompt, KS_LOGITS_LAST, logits, err))) goto out;
    } else {
        st = ks_error_set(err, KS_ERR_ARG, "generate: continuing without a prompt is not "
                                           "supported; pass the last token again");
        goto out;
    }
    int prev = n_prompt > 0 ? prompt[n_prompt - 1] : -1;
    bool stopped = false;
    while (n < gp->max_new_tokens && !stopped) {
        int next = ks_sampler_sample(smp, logits);
        if (gp->stop_at_eos && next == eos) break;
        ids[n++] = next;
        if (tok) {
            char piece[256];
            size_t pl = ks_tokenizer_token_text(tok, prev, next, piece, sizeof piece);
            size_t before = text.len;
            if (!ks_strbuf_append(&text, piece, pl)) {
                st = ks_error_set(err, KS_ERR_NOMEM, "generate: out of memory");
                goto out;
            }
            /* a stop string may begin in text already held back */
            size_t from = before > 64 ? before - 64 : 0;
            size_t hit = stop_find(text.p, text.len, from, gp->stop_strings);
            size_t safe;
            if (hit < text.len) {
                text.len = hit;
                text.p[hit] = '\0';
                safe = hit;
                stopped = true;
            } else {
                safe = text.len - stop_holdback(text.p, text.len, gp->stop_strings);
            }
            if (stream && safe > emitted) {
                if (!stream(text.p + emitted, safe - emitted, next, user)) stopped = true;
                emitted = safe;
            }
        } else if (stream && !stream("", 0, next, user)) {
            stopped = true;
        }
        prev = next;
        if (stopped || n == gp->max_new_tokens) break;
        if (ks_session_pos(s) >= ks_session_max_seq(s)) break; /* context full: stop, not fail */
        if ((st = ks_session_forward(s, &next, 1, KS_LOGITS_LAST, logits, err))) goto out;
    }
    if (stream && tok && text.len > emitted) stream(text.p + emitted, text.len - emitted, -1, user);
    if (out_ids) {
        *out_ids = ids;
        ids = NULL;
    }
    if (n_out) *n_out = n;
    if (out_text) {
        if (!text.p && !ks_strbuf_append(&text, "", 0)) {
            st = ks_error_set(err, KS_ERR_NOMEM, "generate: out of memory");
            goto out;
        }
        *out_text = text.p;
        text.p = NULL;
    }
out:
    ks_sampler_free(smp);
    free(logits);
    free(ids);
    free(text.p);
    return st;
}

double ks_logprob_of(const float *logits, int vocab, int id) {
    float mx = logits[0];
    for (int i = 1; i < vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) sum += exp((double)logits[i] - mx);
    return (double)logits[id] - mx - log(sum);
}

ks_status ks_score(ks_session *s, const int *ids, int n, float *logprobs, ks_error *err) {
    if (!s || !ids || n < 1 || (!logprobs && n > 1))
        return ks_error_set(err, KS_ERR_ARG, "ks_score: invalid arguments");
    const int vocab = ks_session_model(s)->cfg.vocab_size;
    const int chunk = ks_session_max_batch(s);
    ks_session_reset(s);
    float *lg = malloc((size_t)chunk * vocab * sizeof(float));
    if (!lg) return ks_error_set(err, KS_ERR_NOMEM, "score: out of memory");
    ks_status st = KS_OK;
    for (int done = 0; done < n; done += chunk) {
        int B = n - done < chunk ? n - done : chunk;
        if ((st = ks_session_forward(s, ids + done, B, KS_LOGITS_ALL, lg, err))) break;
        for (int b = 0; b < B; b++) {
            int g = done + b; /* row g predicts ids[g + 1] */
            if (g + 1 >= n) break;
            logprobs[g] = (float)ks_logprob_of(lg + (size_t)b * vocab, vocab, ids[g + 1]);
        }
    }
    free(lg);
    return st;
}
