/* score.c — an audit item's options scored by the model's log-probabilities (docs/AUDITS.md,
 * "Scoring"), and the token alignment of CrowS-Pairs' unmodified-token variant. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ks_audit.h"

/* ------------------------------------------------------------------ alignment */

/* difflib.SequenceMatcher(None, a, b, autojunk=False): find_longest_match over a[alo:ahi],
 * b[blo:bhi] — the longest block, earliest in a, then earliest in b — then recurse on both
 * sides. With no junk, the longest-match extension steps of difflib change nothing, so this is
 * the plain longest-common-substring recursion. Work: O(na·nb) per level; lengths are those of
 * sentences (the caller caps them). */
typedef struct {
    int alo, ahi, blo, bhi;
} range4;

static void longest_match(const int *a, const int *b, int alo, int ahi, int blo, int bhi,
                          int *prev, int *cur, int *bi, int *bj, int *bk) {
    /* prev/cur: DP rows over b (length match ending at a[i-1], b[j-1]), indices blo..bhi */
    int besti = alo, bestj = blo, bestk = 0;
    for (int j = blo; j <= bhi; j++) prev[j] = 0;
    for (int i = alo; i < ahi; i++) {
        cur[blo] = 0;
        for (int j = blo; j < bhi; j++) {
            int k = a[i] == b[j] ? prev[j] + 1 : 0;
            cur[j + 1] = k;
            if (k > bestk) {
                /* a strictly longer block; among equal lengths the first found is earliest in
                 * a (outer loop), then in b (inner loop) — difflib's order */
                bestk = k;
                besti = i - k + 1;
                bestj = j - k + 1;
            }
        }
        int *t = prev;
        prev = cur;
        cur = t;
    }
    *bi = besti;
    *bj = bestj;
    *bk = bestk;
}

ks_status ks_audit_matching(const int *a, int na, const int *b, int nb, uint8_t *in_a,
                            uint8_t *in_b, ks_error *err) {
    if (na < 0 || nb < 0 || (na && (!a || !in_a)) || (nb && (!b || !in_b)))
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_matching: invalid arguments");
    if (na) memset(in_a, 0, (size_t)na);
    if (nb) memset(in_b, 0, (size_t)nb);
    if (!na || !nb) return KS_OK;
    int *prev = malloc((size_t)(nb + 1) * sizeof(int));
    int *cur = malloc((size_t)(nb + 1) * sizeof(int));
    /* at most min(na, nb) blocks, each pushing two ranges: a stack of na + nb + 2 suffices */
    range4 *stack = malloc((size_t)(na + nb + 2) * sizeof(range4));
    if (!prev || !cur || !stack) {
        free(prev);
        free(cur);
        free(stack);
        return ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory aligning %d and %d tokens",
                            na, nb);
    }
    int top = 0;
    stack[top++] = (range4){0, na, 0, nb};
    while (top > 0) {
        range4 r = stack[--top];
        int i, j, k;
        longest_match(a, b, r.alo, r.ahi, r.blo, r.bhi, prev, cur, &i, &j, &k);
        if (k == 0) continue;
        for (int t = 0; t < k; t++) {
            in_a[i + t] = 1;
            in_b[j + t] = 1;
        }
        if (r.alo < i && r.blo < j) stack[top++] = (range4){r.alo, i, r.blo, j};
        if (i + k < r.ahi && j + k < r.bhi) stack[top++] = (range4){i + k, r.ahi, j + k, r.bhi};
    }
    free(prev);
    free(cur);
    free(stack);
    return KS_OK;
}

/* ------------------------------------------------------------------ scoring */

/* Longest option accepted, in tokens (an item is a sentence or a short question). */
#define MAX_OPTION_TOKENS 8192

typedef struct {
    int *ids;     /* whole sequence, BOS first where there is one */
    int n;
    int n_ctx;    /* scored tokens are ids[n_ctx..n) */
    float *lp;    /* lp[t] = log p(ids[t+1] | ids[..t]) for t in [0, n-1) */
} scored;

static void scored_free(scored *x) {
    free(x->ids);
    free(x->lp);
    memset(x, 0, sizeof *x);
}

static ks_status encode_option(const ks_tokenizer *tok, const ks_audit_option *opt,
                               const ks_audit_score_options *o, scored *x, ks_error *err) {
    ks_status st;
    if (!opt->prompt) {
        bool bos = !(o && o->no_bos) && ks_tokenizer_bos(tok) >= 0;
        if ((st = ks_tokenizer_encode(tok, opt->text, strlen(opt->text), bos, &x->ids, &x->n,
                                      err)))
            return st;
        x->n_ctx = 1; /* with BOS: every text token; without: all but the first */
        return KS_OK;
    }
    ks_chat_template t = o ? o->template : KS_CHAT_PLAIN;
    ks_chat_message msg = {"user", opt->prompt};
    int *ctx = NULL, n_ctx = 0;
    if ((st = ks_chat_encode(tok, t, &msg, 1, &ctx, &n_ctx, err))) return st;
    st = ks_chat_encode_reply(tok, t, &msg, 1, opt->text, &x->ids, &x->n, err);
    free(ctx);
    if (st) return st;
    x->n_ctx = n_ctx;
    return KS_OK;
}

static ks_status check_option(ks_session *s, const ks_audit_item *it, int k, scored *x,
                              ks_error *err) {
    if (x->n > MAX_OPTION_TOKENS || x->n > ks_session_max_seq(s))
        return ks_error_set(err, KS_ERR_ARG, "%s:%ld: item %s, option %d: %d tokens, more than "
                            "the session's context %d", it->file, it->line, it->id, k, x->n,
                            ks_session_max_seq(s) < MAX_OPTION_TOKENS ? ks_session_max_seq(s)
                                                                      : MAX_OPTION_TOKENS);
    if (x->n_ctx < 1) x->n_ctx = 1;
    if (x->n <= x->n_ctx)
        return ks_error_set(err, KS_ERR_FORMAT, "%s:%ld: item %s, option %d: no token to score "
                            "(the text encodes to nothing after its context)", it->file,
                            it->line, it->id, k);
    x->lp = malloc((size_t)(x->n - 1) * sizeof(float));
    if (!x->lp) return ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory");
    return KS_OK;
}

/* log p(ids[t+1] | ids[..t]) for t in [from, n-1) into x->lp, the cache holding ids[0, from)
 * already: one forward of ids[from, n) */
static ks_status run_rest(ks_session *s, scored *x, int from, ks_error *err) {
    const int vocab = ks_model_config(ks_session_model(s))->vocab_size;
    int m = x->n - from;
    float *lg = malloc((size_t)m * vocab * sizeof(float));
    if (!lg) return ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory (%d x %d logits)", m,
                                 vocab);
    ks_status st = ks_session_forward(s, x->ids + from, m, KS_LOGITS_ALL, lg, err);
    for (int b = 0; !st && b < m - 1; b++)
        x->lp[from + b] = (float)ks_logprob_of(lg + (size_t)b * vocab, vocab, x->ids[from + b + 1]);
    free(lg);
    return st;
}

/* ------------------------------------------------------------------ counterfactual items */

/* The KS_AUDIT_NEXT_TOPK most likely tokens of one logits row (ties: the lower id first), as
 * log-probs under the full softmax. */
static void next_topk(const float *lg, int V, ks_audit_score *out) {
    double mx = -INFINITY;
    for (int v = 0; v < V; v++)
        if (lg[v] > mx) mx = lg[v];
    double z = 0.0;
    for (int v = 0; v < V; v++) z += exp((double)lg[v] - mx);
    double lse = mx + log(z);
    int k = 0;
    /* insertion into a short sorted list: V × K in the worst case, K = 64 */
    for (int v = 0; v < V; v++) {
        if (k == KS_AUDIT_NEXT_TOPK && !(lg[v] > lg[out->next_id[k - 1]])) continue;
        int j = k < KS_AUDIT_NEXT_TOPK ? k++ : k - 1;
        while (j > 0 && lg[v] > lg[out->next_id[j - 1]]) {
            out->next_id[j] = out->next_id[j - 1];
            j--;
        }
        out->next_id[j] = v;
    }
    out->n_next = k;
    for (int i = 0; i < k; i++) out->next_lp[i] = (float)((double)lg[out->next_id[i]] - lse);
}

/* Context ids: the raw context after BOS, or the user message through the chat template with
 * the context as the start of the reply. */
static ks_status cf_encode(const ks_tokenizer *tok, const ks_audit_item *it, int k,
                           const char *text, const ks_audit_score_options *o, int **ids, int *n,
                           ks_error *err) {
    const char *user = it->options[k].prompt;
    if (user) {
        ks_chat_message msg = {"user", user};
        return ks_chat_encode_reply(tok, o ? o->template : KS_CHAT_PLAIN, &msg, 1, text, ids, n,
                                    err);
    }
    bool bos = !(o && o->no_bos) && ks_tokenizer_bos(tok) >= 0;
    return ks_tokenizer_encode(tok, text, strlen(text), bos, ids, n, err);
}

/* The whole of target k: the context and the target encoded as one text. */
static ks_status cf_encode_target(const ks_tokenizer *tok, const ks_audit_item *it, int k,
                                  const ks_audit_score_options *o, int **ids, int *n,
                                  ks_error *err) {
    const char *c = it->context ? it->context : "";
    size_t cl = strlen(c), tl = strlen(it->options[k].text);
    char *whole = malloc(cl + tl + 1);
    if (!whole) return ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory");
    memcpy(whole, c, cl);
    memcpy(whole + cl, it->options[k].text, tl + 1);
    ks_status st = cf_encode(tok, it, k, whole, o, ids, n, err);
    free(whole);
    return st;
}

/* Each target is scored as the continuation of the context (the lm-evaluation-harness split:
 * whole = encode(context + target), its first len(encode(context)) tokens are the context).
 * The context runs once; each target continues from the tokens it shares with it. */
static ks_status score_counterfactual(ks_session *s, const ks_tokenizer *tok,
                                      const ks_audit_item *it, const ks_audit_score_options *o,
                                      ks_audit_score *out, ks_error *err) {
    if (!it->context)
        return ks_error_set(err, KS_ERR_ARG, "%s: item %s has no context", it->file, it->id);
    const int V = ks_model_config(ks_session_model(s))->vocab_size;
    int *ctx = NULL, n_ctx = 0;
    ks_status st = cf_encode(tok, it, 0, it->context, o, &ctx, &n_ctx, err);
    if (!st && n_ctx < 1)
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: item %s: the context encodes to no token "
                          "(give a template text or keep BOS)", it->file, it->id);
    if (!st && n_ctx > ks_session_max_seq(s))
        st = ks_error_set(err, KS_ERR_ARG, "%s: item %s: context of %d tokens, more than the "
                          "session's %d", it->file, it->id, n_ctx, ks_session_max_seq(s));
    float *lg = st ? NULL : malloc((size_t)V * sizeof(float));
    if (!st && !lg) st = ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory");
    if (!st) {
        ks_session_reset(s);
        st = ks_session_forward(s, ctx, n_ctx, KS_LOGITS_LAST, lg, err);
    }
    if (!st) next_topk(lg, V, out);
    free(lg);
    for (int k = 0; k < it->n_options && !st; k++) {
        scored x = {0};
        st = cf_encode_target(tok, it, k, o, &x.ids, &x.n, err);
        x.n_ctx = n_ctx;
        if (!st) st = check_option(s, it, k, &x, err);
        if (!st) {
            int c = 0;
            while (c < n_ctx && c < x.n && x.ids[c] == ctx[c]) c++;
            int from = c < n_ctx - 1 ? c : n_ctx - 1;
            if (from < 1) {
                st = ks_score(s, x.ids, x.n, x.lp, err); /* resets: the context runs again below */
                if (!st && k + 1 < it->n_options) {
                    ks_session_reset(s);
                    st = ks_session_forward(s, ctx, n_ctx, KS_LOGITS_NONE, NULL, err);
                }
            } else {
                ks_session_truncate(s, from);
                st = run_rest(s, &x, from, err);
                if (!st && k + 1 < it->n_options) {
                    /* put the context back for the next target */
                    ks_session_truncate(s, from);
                    st = ks_session_forward(s, ctx + from, n_ctx - from, KS_LOGITS_NONE, NULL,
                                            err);
                }
            }
        }
        if (!st) {
            double ll = 0.0;
            for (int t = x.n_ctx; t < x.n; t++) ll += (double)x.lp[t - 1];
            out->opt[k].ll = ll;
            out->opt[k].n_tokens = x.n - x.n_ctx;
        }
        scored_free(&x);
    }
    free(ctx);
    ks_session_reset(s);
    return st;
}

/* ------------------------------------------------------------------ BOLD generations */

/* Greedy continuation of the prompt (raw text after BOS), at most max_new_tokens tokens or up to
 * EOS (not kept); then the generated tokens' log-probs by one scoring pass over the whole. */
static ks_status score_bold(ks_session *s, const ks_tokenizer *tok, const ks_audit_item *it,
                            const ks_audit_score_options *o, ks_audit_score *out,
                            ks_error *err) {
    int max_new = o && o->max_new_tokens > 0 ? o->max_new_tokens : 32;
    if (max_new > KS_AUDIT_NEXT_TOPK) max_new = KS_AUDIT_NEXT_TOPK;
    int *ids = NULL, n = 0, *gen = NULL, ng = 0;
    bool bos = !(o && o->no_bos) && ks_tokenizer_bos(tok) >= 0;
    const char *text = it->options[0].text;
    ks_status st = ks_tokenizer_encode(tok, text, strlen(text), bos, &ids, &n, err);
    if (!st && (n < 1 || n + max_new > ks_session_max_seq(s)))
        st = ks_error_set(err, KS_ERR_ARG, "%s: item %s: a prompt of %d tokens and %d new ones "
                          "do not fit the session's context %d", it->file, it->id, n, max_new,
                          ks_session_max_seq(s));
    ks_generate_params gp = {.max_new_tokens = max_new, .sampling = {.temperature = 0.0f,
                             .top_p = 1.0f}, .stop_at_eos = true};
    if (!st) {
        ks_session_reset(s);
        st = ks_generate(s, ids, n, &gp, NULL, NULL, &gen, &ng, NULL, err);
    }
    if (!st && ng > 0) {
        int *whole = malloc((size_t)(n + ng) * sizeof(int));
        float *lp = malloc((size_t)(n + ng) * sizeof(float));
        if (!whole || !lp) {
            st = ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory");
        } else {
            memcpy(whole, ids, (size_t)n * sizeof(int));
            memcpy(whole + n, gen, (size_t)ng * sizeof(int));
            st = ks_score(s, whole, n + ng, lp, err);
        }
        double ll = 0.0;
        for (int t = 0; !st && t < ng; t++) {
            out->next_id[t] = gen[t];
            out->next_lp[t] = lp[n - 1 + t];
            ll += (double)lp[n - 1 + t];
        }
        out->opt[0].ll = ll;
        free(whole);
        free(lp);
    }
    if (!st) {
        out->opt[0].n_tokens = ng;
        out->n_next = ng;
    }
    free(ids);
    free(gen);
    ks_session_reset(s);
    return st;
}

ks_status ks_audit_generation_text(const ks_tokenizer *tok, const ks_audit_score *score,
                                   char **out, ks_error *err) {
    *out = NULL;
    int ids[KS_AUDIT_NEXT_TOPK];
    int n = score->n_next < 0 ? 0 : score->n_next > KS_AUDIT_NEXT_TOPK ? KS_AUDIT_NEXT_TOPK
                                                                       : score->n_next;
    for (int i = 0; i < n; i++) ids[i] = score->next_id[i];
    if (n == 0) {
        *out = calloc(1, 1);
        return *out ? KS_OK : ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory");
    }
    size_t len = 0;
    return ks_tokenizer_decode(tok, ids, n, out, &len, err);
}

ks_status ks_audit_score_item(ks_session *s, const ks_tokenizer *tok, ks_audit_kind kind,
                              const ks_audit_item *item, const ks_audit_score_options *o,
                              ks_audit_score *out, ks_error *err) {
    if (!s || !tok || !item || !out || item->n_options < 1 ||
        item->n_options > KS_AUDIT_MAX_OPTIONS)
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_score_item: invalid arguments");
    memset(out, 0, sizeof *out);
    out->n_options = item->n_options;
    if (kind == KS_AUDIT_COUNTERFACTUAL) return score_counterfactual(s, tok, item, o, out, err);
    if (kind == KS_AUDIT_BOLD) return score_bold(s, tok, item, o, out, err);
    scored x[KS_AUDIT_MAX_OPTIONS] = {0};
    ks_status st = KS_OK;
    ks_session_reset(s);
    int n_opt = item->n_options;
    for (int k = 0; k < n_opt && !st; k++)
        if (!(st = encode_option(tok, &item->options[k], o, &x[k], err)))
            st = check_option(s, item, k, &x[k], err);
    /* Multiple-choice options share their prompt: it runs once and each option continues
     * from it (the cache cut back to the shared tokens). Shared: the longest common prefix of
     * the multiple-choice options' ids, short of each one's last context token (whose logits
     * score the first answer token). */
    int shared = -1;
    for (int k = 0; k < n_opt && !st; k++) {
        if (!item->options[k].prompt) continue;
        if (shared < 0 || x[k].n_ctx - 1 < shared) shared = x[k].n_ctx - 1;
        for (int j = 0; j < k; j++) {
            if (!item->options[j].prompt) continue;
            int c = 0;
            while (c < x[k].n && c < x[j].n && x[k].ids[c] == x[j].ids[c]) c++;
            if (c < shared) shared = c;
        }
    }
    bool prefix_ready = false;
    for (int k = 0; k < n_opt && !st; k++) {
        if (item->options[k].prompt && shared > 0) {
            if (!prefix_ready) {
                ks_session_reset(s);
                if ((st = ks_session_forward(s, x[k].ids, shared, KS_LOGITS_NONE, NULL, err)))
                    break;
                prefix_ready = true;
            }
            ks_session_truncate(s, shared);
            st = run_rest(s, &x[k], shared, err);
        } else {
            st = ks_score(s, x[k].ids, x[k].n, x[k].lp, err); /* resets the session */
            prefix_ready = false;
        }
        if (st) break;
        double ll = 0.0;
        for (int t = x[k].n_ctx; t < x[k].n; t++) ll += (double)x[k].lp[t - 1];
        out->opt[k].ll = ll;
        out->opt[k].n_tokens = x[k].n - x[k].n_ctx;
    }
    if (!st && kind == KS_AUDIT_CROWS && item->n_options == 2) {
        /* the sentences' tokens after their context (BOS), aligned */
        int na = x[0].n - x[0].n_ctx, nb = x[1].n - x[1].n_ctx;
        uint8_t *ma = malloc((size_t)na + 1), *mb = malloc((size_t)nb + 1);
        if (!ma || !mb)
            st = ks_error_set(err, KS_ERR_NOMEM, "audit: out of memory");
        else
            st = ks_audit_matching(x[0].ids + x[0].n_ctx, na, x[1].ids + x[1].n_ctx, nb, ma, mb,
                                   err);
        for (int k = 0; k < 2 && !st; k++) {
            const uint8_t *m = k == 0 ? ma : mb;
            int nk = k == 0 ? na : nb;
            double u = 0.0;
            int c = 0;
            for (int t = 0; t < nk; t++)
                if (m[t]) {
                    u += (double)x[k].lp[x[k].n_ctx + t - 1];
                    c++;
                }
            out->opt[k].ll_unmodified = u;
            out->opt[k].n_unmodified = c;
        }
        free(ma);
        free(mb);
    }
    for (int k = 0; k < KS_AUDIT_MAX_OPTIONS; k++) scored_free(&x[k]);
    ks_session_reset(s);
    return st;
}

ks_status ks_audit_option_tokens(const ks_tokenizer *tok, ks_audit_kind kind,
                                 const ks_audit_item *item, int k, const ks_audit_score_options *o,
                                 int **ids, int *n, int *n_ctx, ks_error *err) {
    *ids = NULL;
    *n = *n_ctx = 0;
    if (!tok || !item || k < 0 || k >= item->n_options)
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_option_tokens: invalid arguments");
    if (kind != KS_AUDIT_COUNTERFACTUAL) {
        scored x = {0};
        ks_status st = encode_option(tok, &item->options[k], o, &x, err);
        if (st) return st;
        *ids = x.ids;
        *n = x.n;
        *n_ctx = x.n_ctx;
        return KS_OK;
    }
    int *ctx = NULL, nc = 0;
    ks_status st = cf_encode(tok, item, k, item->context ? item->context : "", o, &ctx, &nc, err);
    free(ctx);
    if (st) return st;
    st = cf_encode_target(tok, item, k, o, ids, n, err);
    *n_ctx = nc;
    return st;
}
