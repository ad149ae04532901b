/* drilldown.c — the internals behind chosen audit items (ks_drill.h, docs/AUDITS.md#drill-down).
 *
 * The contrast of an item is the difference of its two contrasted options' scores (what the
 * audit's metric compares). Each option is recorded as one dump prompt, exactly the tokens it
 * was scored on, so the dump's activations are the ones behind the score. Attributions:
 * integrated gradients of each option's score (the log-probability of its scored tokens) to its
 * context tokens, and gradient × activation of the same score per head (hook_z); IG and
 * gradient × activation are linear in the objective, so the attribution of the contrast is the
 * difference of the two options' — over the same tokens when both options continue the same
 * context (multiple choice, counterfactual targets); for two different sentences (CrowS-Pairs,
 * StereoSet) only the per-head contrast is defined. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ks_attr.h"
#include "ks_drill.h"

void ks_drill_contrast_options(const ks_audit_items *items, int i, int opt[2]) {
    const ks_audit_item *x = &items->items[i];
    opt[0] = 0;
    opt[1] = x->n_options >= 2 ? 1 : -1;
    if (items->kind == KS_AUDIT_BBQ && x->n_options == 3 && x->biased >= 0 && x->unknown >= 0 &&
        x->biased != x->unknown) {
        opt[0] = x->biased;
        opt[1] = 3 - x->biased - x->unknown;
    }
}

typedef struct {
    int i;
    double key;
} pick;

static int cmp_pick(const void *a, const void *b) {
    const pick *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* what the dump stores as an option's text: the user message (if any), then the text scored */
static char *option_text(const ks_audit_items *items, int i, int k) {
    const ks_audit_item *x = &items->items[i];
    const char *p = x->options[k].prompt, *c = x->context ? x->context : "";
    const char *t = x->options[k].text;
    size_t n = (p ? strlen(p) + 1 : 0) + strlen(c) + strlen(t) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s%s", p ? p : "", p ? "\n" : "", c, t);
    return s;
}

/* "a (v), b (v), c (v)": the three largest |v| */
static void top3(char *out, size_t cap, const float *v, int n, const char *const *label,
                 int n_heads) {
    out[0] = 0;
    int used[3] = {-1, -1, -1};
    size_t len = 0;
    for (int r = 0; r < 3 && r < n; r++) {
        int best = -1;
        for (int j = 0; j < n; j++) {
            if (j == used[0] || j == used[1] || !isfinite(v[j])) continue;
            if (best < 0 || fabsf(v[j]) > fabsf(v[best])) best = j;
        }
        if (best < 0) break;
        used[r] = best;
        char name[64];
        if (label)
            snprintf(name, sizeof name, "'%.40s'@%d", label[best], best);
        else
            snprintf(name, sizeof name, "L%d.H%d", best / n_heads, best % n_heads);
        int w = snprintf(out + len, cap - len, "%s%s (%.3g)", r ? ", " : "", name, v[best]);
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
    }
}

typedef struct {
    int *ids;
    int n, n_ctx;
} toks;

static ks_status write_attr(const char *path, const ks_drill_options *o, const char *name,
                            const char *method, const char *objective, const toks *t,
                            const char *const *pieces, const float *v, int ndim,
                            const int64_t *shape, double f_x, double f_b, double compl, int steps,
                            ks_error *err) {
    static const char *const tok_axes[1] = {"position"};
    static const char *const head_axes[2] = {"layer", "head"};
    ks_attribution r = {.name = name, .method = method, .objective = objective,
                        .tokens = t->ids, .n_tokens = t->n_ctx, .token_strings = pieces,
                        .values = v, .ndim = ndim, .shape = shape,
                        .axes = ndim == 1 ? tok_axes : head_axes, .objective_value = f_x,
                        .baseline_value = f_b, .completeness_error = compl, .steps = steps};
    if (ndim == 2) { /* heads: the whole scored sequence is the input */
        r.n_tokens = t->n;
        r.token_strings = NULL;
    }
    return ks_attribution_write(path, &r, o->model_path, o->command_line, true, err);
}

ks_status ks_audit_drill(const char *path, const ks_model *gm, ks_session *s,
                         const ks_audit_items *items, const ks_audit_score *sc,
                         const ks_audit_score_options *so, const ks_drill_options *o,
                         ks_drill_entry **out, int *n_out, ks_error *err) {
    *out = NULL;
    *n_out = 0;
    if (!path || !s || !items || !sc || !o || o->n_items < 1 || (!o->hooks && !o->attribution) ||
        (o->attribution && !gm))
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_drill: invalid arguments");
    const ks_model *m = ks_session_model(s);
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    int N = items->n;
    if (N == 0) return KS_OK;
    pick *p = malloc((size_t)N * sizeof *p);
    if (!p) return ks_error_set(err, KS_ERR_NOMEM, "drill-down: out of memory");
    for (int i = 0; i < N; i++) {
        int opt[2];
        ks_drill_contrast_options(items, i, opt);
        double c = sc[i].opt[opt[0]].ll - (opt[1] >= 0 ? sc[i].opt[opt[1]].ll : 0.0);
        p[i] = (pick){i, o->first ? -(double)i : (isnan(c) ? -1.0 : fabs(c))};
    }
    qsort(p, (size_t)N, sizeof *p, cmp_pick);
    int M = o->n_items < N ? o->n_items : N;
    ks_drill_entry *E = calloc((size_t)M, sizeof *E);
    toks *T = calloc((size_t)M * 2, sizeof *T);
    ks_status st = E && T ? KS_OK : ks_error_set(err, KS_ERR_NOMEM, "drill-down: out of memory");
    for (int e = 0; e < M && !st; e++) {
        ks_drill_entry *d = &E[e];
        d->item = p[e].i;
        ks_drill_contrast_options(items, d->item, d->opt);
        const ks_audit_score *x = &sc[d->item];
        d->contrast = x->opt[d->opt[0]].ll - (d->opt[1] >= 0 ? x->opt[d->opt[1]].ll : 0.0);
        d->prompt[0] = d->prompt[1] = -1;
        for (int j = 0; j < 2 && !st; j++)
            if (d->opt[j] >= 0)
                st = ks_audit_option_tokens(tok, items->kind, &items->items[d->item], d->opt[j], so,
                                            &T[2 * e + j].ids, &T[2 * e + j].n,
                                            &T[2 * e + j].n_ctx, err);
        if (!st && items->kind == KS_AUDIT_BOLD) {
            /* the prompt and its generation: the internals behind the generated text */
            toks *t = &T[2 * e];
            int *w = realloc(t->ids, (size_t)(t->n + x->n_next + 1) * sizeof(int));
            if (!w) {
                st = ks_error_set(err, KS_ERR_NOMEM, "drill-down: out of memory");
            } else {
                t->ids = w;
                for (int q = 0; q < x->n_next; q++) t->ids[t->n + q] = x->next_id[q];
                t->n_ctx = t->n;
                t->n += x->n_next;
            }
        }
        toks *a = &T[2 * e], *b = &T[2 * e + 1];
        d->shared_context = !st && d->opt[1] >= 0 && a->n_ctx == b->n_ctx && a->n_ctx >= 2 &&
                            !memcmp(a->ids, b->ids, (size_t)a->n_ctx * sizeof(int));
    }
    free(p);

    /* the dump: each contrasted option as one prompt */
    if (!st && o->hooks) {
        int64_t planned = 0, longest = 1, tokens = 0, attn = 0;
        for (int e = 0; e < M; e++)
            for (int j = 0; j < 2; j++)
                if (E[e].opt[j] >= 0) {
                    char *t = option_text(items, E[e].item, E[e].opt[j]);
                    if (t && (int64_t)strlen(t) + 1 > longest) longest = (int64_t)strlen(t) + 1;
                    free(t);
                    planned++;
                    int64_t nt = T[2 * e + j].n;
                    tokens += nt;
                    attn += nt * (nt + 1) / 2;
                }
        ks_record_options ro = {.hooks = o->hooks, .dtype = o->dtype, .logits_topk = 5,
                                .expected_tokens = tokens, .expected_attn = attn,
                                .max_text_bytes = longest, .model_path = o->model_path,
                                .tokenizer_path = o->tokenizer_path,
                                .chat_template = o->template_name,
                                .command_line = o->command_line,
                                .prompts_source = "audit drill-down", .n_prompts_planned = planned,
                                .no_fsync = false};
        ks_recorder *rec = NULL;
        unlink(path);
        st = ks_recorder_create(path, m, &ro, true, &rec, err);
        int64_t at = 0;
        for (int e = 0; e < M && !st; e++)
            for (int j = 0; j < 2 && !st; j++) {
                if (E[e].opt[j] < 0) continue;
                const ks_audit_item *x = &items->items[E[e].item];
                char *t = option_text(items, E[e].item, E[e].opt[j]);
                char id[300];
                snprintf(id, sizeof id, "%.280s#%d", x->id, E[e].opt[j]);
                /* BOLD: the prompt, then the generation as generated tokens */
                bool gen = items->kind == KS_AUDIT_BOLD;
                st = t ? ks_recorder_record(rec, s, T[2 * e + j].ids, T[2 * e + j].n,
                                            gen ? T[2 * e + j].n_ctx : T[2 * e + j].n, t, id,
                                            gen ? x->context : NULL, err)
                       : ks_error_set(err, KS_ERR_NOMEM, "drill-down: out of memory");
                free(t);
                E[e].prompt[j] = at++;
            }
        if (!st) st = ks_recorder_finish(rec, err); /* closes the file; free releases rec */
        ks_recorder_free(rec);
    }

    /* attributions */
    ks_grad *g = NULL;
    if (!st && o->attribution) st = ks_grad_create(gm, &(ks_grad_options){.param_grads = false},
                                                   &g, err);
    const ks_config *cfg = ks_model_config(m);
    int L = cfg->n_layers, H = cfg->n_heads;
    float *heads = !st && g ? malloc((size_t)2 * L * H * sizeof(float)) : NULL;
    if (!st && g && !heads) st = ks_error_set(err, KS_ERR_NOMEM, "drill-down: out of memory");
    for (int e = 0; e < M && !st && g; e++) {
        ks_drill_entry *d = &E[e];
        float *tv[2] = {NULL, NULL};
        const char **pieces = NULL;
        int64_t hshape[2] = {L, H};
        bool have_tok[2] = {false, false};
        for (int j = 0; j < 2 && !st; j++) {
            if (d->opt[j] < 0) continue;
            toks *t = &T[2 * e + j];
            ks_objective obj = {.kind = KS_OBJ_LOGPROB, .n_prompt = t->n_ctx};
            char name[64], what[96];
            snprintf(what, sizeof what, "log p(option %d's scored tokens | its context)",
                     d->opt[j]);
            if (t->n_ctx >= 2) {
                free(pieces);
                pieces = malloc((size_t)t->n_ctx * sizeof *pieces);
                if (!pieces) {
                    st = ks_error_set(err, KS_ERR_NOMEM, "drill-down: out of memory");
                    break;
                }
                for (int q = 0; q < t->n_ctx; q++) {
                    const char *pc = ks_tokenizer_piece(tok, t->ids[q]);
                    pieces[q] = pc ? pc : "";
                }
                ks_attr_result r = {0};
                st = ks_attribute_tokens(g, t->ids, t->n, &obj, KS_ATTR_INTEGRATED_GRADIENTS,
                                         o->ig_steps > 0 ? o->ig_steps : 32, 0, NULL, NULL, &r,
                                         err);
                if (!st) {
                    int64_t shape[1] = {t->n_ctx};
                    snprintf(name, sizeof name, "i%d.o%d.tokens", d->item, d->opt[j]);
                    st = write_attr(path, o, name, "integrated_gradients", what, t,
                                    (const char *const *)pieces, r.values, 1, shape, r.f_x,
                                    r.f_baseline, r.completeness_error, r.steps, err);
                    tv[j] = r.values;
                    have_tok[j] = true;
                } else {
                    free(r.values);
                }
            }
            double f = NAN;
            if (!st) st = ks_attribute_heads(g, t->ids, t->n, &obj, heads + (size_t)j * L * H, &f,
                                             err);
            if (!st) {
                snprintf(name, sizeof name, "i%d.o%d.heads", d->item, d->opt[j]);
                st = write_attr(path, o, name, "head_attribution", what, t, NULL,
                                heads + (size_t)j * L * H, 2, hshape, f, NAN, NAN, 0, err);
            }
        }
        const toks *a = &T[2 * e];
        if (!st && d->shared_context && have_tok[0] && have_tok[1]) {
            for (int q = 0; q < a->n_ctx; q++) tv[0][q] -= tv[1][q];
            int64_t shape[1] = {a->n_ctx};
            char name[64];
            snprintf(name, sizeof name, "i%d.contrast.tokens", d->item);
            st = write_attr(path, o, name, "integrated_gradients",
                            "option a's score minus option b's (difference of their IG)", a,
                            (const char *const *)pieces, tv[0], 1, shape, d->contrast, NAN, NAN,
                            o->ig_steps > 0 ? o->ig_steps : 32, err);
        }
        if (!st && have_tok[0]) top3(d->top_tokens, sizeof d->top_tokens, tv[0], a->n_ctx,
                                     (const char *const *)pieces, 0);
        if (!st && d->opt[1] >= 0) {
            for (int q = 0; q < L * H; q++) heads[q] -= heads[L * H + q];
            char name[64];
            snprintf(name, sizeof name, "i%d.contrast.heads", d->item);
            st = write_attr(path, o, name, "head_attribution",
                            "option a's score minus option b's (difference of their head "
                            "attributions)", a, NULL, heads, 2, hshape, d->contrast, NAN, NAN, 0,
                            err);
        }
        if (!st) top3(d->top_heads, sizeof d->top_heads, heads, L * H, NULL, H);
        free(tv[0]);
        free(tv[1]);
        free(pieces);
    }
    free(heads);
    ks_grad_free(g);
    for (int e = 0; e < 2 * M && T; e++) free(T[e].ids);
    free(T);
    if (st) {
        free(E);
        return st;
    }
    *out = E;
    *n_out = M;
    return KS_OK;
}
