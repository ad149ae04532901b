/* attribution.c — token, head and patching attributions (ks_attr.h) on the backward pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ks_attr.h"

/* ------------------------------------------------------------------ objectives */

double ks_objective_eval(const ks_objective *o, const int *tokens, const float *logits, int T,
                         int V, float *dlogits) {
    if (!o || T <= 0) return NAN;
    if (o->kind == KS_OBJ_LOGIT_DIFF)
        return ks_objective_logit_diff(logits, T, V, T - 1, o->a, o->b, dlogits);
    if (o->kind != KS_OBJ_LOGPROB || o->n_prompt < 1 || o->n_prompt >= T) return NAN;
    int *tg = malloc((size_t)T * sizeof(int));
    if (!tg) return NAN;
    for (int t = 0; t < T; t++) tg[t] = t >= o->n_prompt - 1 && t + 1 < T ? tokens[t + 1] : -1;
    double f = ks_objective_logprob(logits, T, V, tg, dlogits);
    free(tg);
    return f;
}

const char *ks_attr_method_name(ks_attr_method m) {
    switch (m) {
    case KS_ATTR_SALIENCY: return "saliency";
    case KS_ATTR_GRAD_X_INPUT: return "grad_x_input";
    case KS_ATTR_INTEGRATED_GRADIENTS: return "integrated_gradients";
    }
    return "unknown";
}

/* ------------------------------------------------------------------ hooks */

typedef struct {
    int T, n_prompt;
    /* forward: embeddings */
    float *emb;      /* (T, D) captured when not NULL */
    float emb_scale; /* prompt positions' embeddings become b + emb_scale (e − b) */
    const float *base; /* b (D): the baseline embedding; NULL: zeros */
    /* forward: a site captured per layer, and an optional patch */
    ks_hook_point site;
    size_t width;    /* floats per position at the site */
    float *acts;     /* (L, T, width) */
    int patch_layer; /* -1: none */
    int patch_pos;   /* RESID_PRE: the position; -1 for a head */
    int patch_lo, patch_hi; /* columns of each position to patch (a head's slice, or all) */
    const float *patch_src; /* (L, T, width): values patched in */
    /* backward */
    float *demb;     /* (T, D) */
    float *grads;    /* (L, T, width) */
} actx;

static bool fwd_hook(const ks_hook_tensor *t, bool ask, void *user) {
    actx *c = user;
    if (t->point == KS_HOOK_EMBED) {
        if (!c->emb && c->emb_scale == 1.0f) return false;
        if (ask) return true;
        size_t D = (size_t)t->shape[1];
        if (c->emb_scale != 1.0f)
            for (size_t i = 0; i < (size_t)c->n_prompt * D; i++) {
                float b = c->base ? c->base[i % D] : 0.0f;
                t->data[i] = b + c->emb_scale * (t->data[i] - b);
            }
        if (c->emb) memcpy(c->emb, t->data, (size_t)c->T * D * sizeof(float));
        return false;
    }
    if (t->point != c->site || t->layer < 0) return false;
    bool patch = t->layer == c->patch_layer;
    if (!c->acts && !patch) return false;
    if (ask) return true;
    size_t off = (size_t)t->layer * c->T * c->width;
    if (patch) {
        const float *src = c->patch_src + off;
        for (int p = 0; p < c->T; p++) {
            if (c->patch_pos >= 0 && p != c->patch_pos) continue;
            for (int j = c->patch_lo; j < c->patch_hi; j++)
                t->data[(size_t)p * c->width + j] = src[(size_t)p * c->width + j];
        }
    }
    if (c->acts) memcpy(c->acts + off, t->data, (size_t)c->T * c->width * sizeof(float));
    return false;
}

static bool bwd_hook(const ks_hook_tensor *t, bool ask, void *user) {
    actx *c = user;
    float *dst = NULL;
    size_t n = 0;
    if (t->point == KS_HOOK_EMBED && c->demb) {
        dst = c->demb;
        n = (size_t)c->T * (size_t)t->shape[1];
    } else if (t->point == c->site && t->layer >= 0 && c->grads) {
        dst = c->grads + (size_t)t->layer * c->T * c->width;
        n = (size_t)c->T * c->width;
    }
    if (!dst) return false;
    if (ask) return true;
    memcpy(dst, t->data, n * sizeof(float));
    return false;
}

/* One forward (and a backward when dlog) with the context's hooks; f returned in *f. */
static ks_status run(ks_grad *g, actx *c, const int *tokens, int T, const ks_objective *obj,
                     float *dlog, double *f, ks_error *err) {
    ks_grad_set_hooks(g, fwd_hook, bwd_hook, c);
    ks_status st = ks_grad_forward(g, tokens, T, err);
    if (!st) {
        int V = 0;
        const float *lg = ks_grad_logits(g, NULL, &V);
        *f = ks_objective_eval(obj, tokens, lg, T, V, dlog);
        if (isnan(*f))
            st = ks_error_set(err, KS_ERR_ARG, "the objective does not apply to these %d tokens "
                              "(prompt length %d, token ids %d and %d)",
                              T, obj->n_prompt, obj->a, obj->b);
        else if (dlog)
            st = ks_grad_backward(g, dlog, err);
    }
    ks_grad_set_hooks(g, NULL, NULL, NULL);
    return st;
}

/* Gauss–Legendre nodes and weights on [0, 1] (Newton on P_n; n <= 256). */
static void gauss_legendre(int n, double *x, double *w) {
    for (int i = 0; i < n; i++) {
        double z = cos(M_PI * (i + 0.75) / (n + 0.5)), pp = 1.0;
        for (int it = 0; it < 100; it++) {
            double p1 = 1.0, p2 = 0.0;
            for (int j = 1; j <= n; j++) {
                double p3 = p2;
                p2 = p1;
                p1 = ((2.0 * j - 1.0) * z * p2 - (j - 1.0) * p3) / j;
            }
            pp = n * (z * p1 - p2) / (z * z - 1.0);
            double z1 = z;
            z = z1 - p1 / pp;
            if (fabs(z - z1) < 1e-15) break;
        }
        x[i] = 0.5 * (1.0 - z);
        w[i] = 1.0 / ((1.0 - z * z) * pp * pp);
    }
}

/* ------------------------------------------------------------------ token attribution */

ks_status ks_attribute_tokens(ks_grad *g, const int *tokens, int T, const ks_objective *obj,
                              ks_attr_method method, int steps, int baseline_id,
                              ks_progress_fn progress, void *progress_user, ks_attr_result *out,
                              ks_error *err) {
    memset(out, 0, sizeof *out);
    out->f_baseline = out->completeness_error = NAN;
    if (!g || !tokens || !obj || T <= 0) return ks_error_set(err, KS_ERR_ARG, "attribute: no input");
    int np = obj->kind == KS_OBJ_LOGIT_DIFF ? T : obj->n_prompt;
    if (np < 1 || np > T)
        return ks_error_set(err, KS_ERR_ARG, "attribute: prompt length %d outside 1..%d", np, T);
    const ks_model *m = ks_grad_model(g);
    const ks_config *cfg = ks_model_config(m);
    const int D = cfg->dim, V = cfg->vocab_size;
    const size_t TD = (size_t)T * D;
    if (baseline_id >= V)
        return ks_error_set(err, KS_ERR_ARG, "attribute: baseline token %d outside the "
                            "vocabulary (0..%d)", baseline_id, V - 1);
    ks_status st = KS_OK;
    float *dlog = malloc((size_t)T * V * sizeof(float));
    float *emb = NULL, *demb = NULL, *acc = NULL, *vals = NULL, *base = NULL;
    actx c = {.T = T, .n_prompt = np, .emb_scale = 1.0f, .site = KS_HOOK_COUNT, .patch_layer = -1};
    if (!dlog) return ks_error_set(err, KS_ERR_NOMEM, "attribute: out of memory");
    emb = malloc(TD * sizeof(float));
    demb = malloc(TD * sizeof(float));
    acc = calloc(TD, sizeof(float));
    vals = calloc((size_t)np, sizeof(float));
    if (baseline_id >= 0) base = malloc((size_t)D * sizeof(float));
    if (!emb || !demb || !acc || !vals || (baseline_id >= 0 && !base)) {
        st = ks_error_set(err, KS_ERR_NOMEM, "attribute: out of memory");
        goto out;
    }
    /* the baseline token's embedding row, in f32 whatever the table's dtype */
    if (base && (st = ks_model_embedding_f32(m, baseline_id, base, err))) goto out;
    c.emb = emb;
    c.demb = demb;
    double f = NAN;
    if ((st = run(g, &c, tokens, T, obj, dlog, &f, err))) goto out;
    out->f_x = f;
    c.emb = NULL;
    if (method == KS_ATTR_SALIENCY || method == KS_ATTR_GRAD_X_INPUT) {
        for (int t = 0; t < np; t++) {
            double s = 0.0;
            for (int d = 0; d < D; d++) {
                double gd = demb[(size_t)t * D + d];
                s += method == KS_ATTR_SALIENCY ? gd * gd : gd * emb[(size_t)t * D + d];
            }
            vals[t] = (float)(method == KS_ATTR_SALIENCY ? sqrt(s) : s);
        }
    } else if (method == KS_ATTR_INTEGRATED_GRADIENTS) {
        int n = steps > 0 ? steps : 64;
        if (n > 256) n = 256;
        double x[256], w[256];
        gauss_legendre(n, x, w);
        double fb = NAN;
        c.base = base;
        c.emb_scale = 0.0f;
        if ((st = run(g, &c, tokens, T, obj, NULL, &fb, err))) goto out;
        for (int k = 0; k < n; k++) {
            double fk;
            c.emb_scale = (float)x[k];
            if ((st = run(g, &c, tokens, T, obj, dlog, &fk, err))) goto out;
            for (size_t i = 0; i < (size_t)np * D; i++) acc[i] += (float)(w[k] * demb[i]);
            if (progress) progress(k + 1, n, progress_user);
        }
        double sum = 0.0;
        for (int t = 0; t < np; t++) {
            double s = 0.0;
            for (int d = 0; d < D; d++)
                s += ((double)emb[(size_t)t * D + d] - (base ? base[d] : 0.0f)) *
                     acc[(size_t)t * D + d];
            vals[t] = (float)s;
            sum += s;
        }
        out->f_baseline = fb;
        double delta = out->f_x - fb;
        out->completeness_error = fabs(sum - delta) / fmax(fabs(delta), 1e-30);
        out->steps = n;
    } else {
        st = ks_error_set(err, KS_ERR_ARG, "attribute: unknown method %d", (int)method);
        goto out;
    }
    out->values = vals;
    vals = NULL;
out:
    free(base);
    free(vals);
    free(emb);
    free(demb);
    free(acc);
    free(dlog);
    return st;
}

/* ------------------------------------------------------------------ heads */

ks_status ks_attribute_heads(ks_grad *g, const int *tokens, int T, const ks_objective *obj,
                             float *out, double *f_x, ks_error *err) {
    const ks_config *cfg = ks_model_config(ks_grad_model(g));
    const int L = cfg->n_layers, H = cfg->n_heads, hd = cfg->head_dim, V = cfg->vocab_size;
    size_t width = (size_t)H * hd, n = (size_t)L * T * width;
    float *acts = malloc(n * sizeof(float)), *grads = malloc(n * sizeof(float));
    float *dlog = NULL;
    ks_status st = KS_OK;
    if (!acts || !grads) {
        st = ks_error_set(err, KS_ERR_NOMEM, "head attribution: out of memory");
        goto out;
    }
    if (!(dlog = malloc((size_t)T * V * sizeof(float)))) {
        st = ks_error_set(err, KS_ERR_NOMEM, "head attribution: out of memory");
        goto out;
    }
    actx c = {.T = T, .n_prompt = T, .emb_scale = 1.0f, .site = KS_HOOK_ATTN_Z, .width = width,
              .acts = acts, .patch_layer = -1, .grads = grads};
    double f;
    if ((st = run(g, &c, tokens, T, obj, dlog, &f, err))) goto out;
    if (f_x) *f_x = f;
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++) {
            double s = 0.0;
            for (int t = 0; t < T; t++) {
                size_t o = ((size_t)l * T + t) * width + (size_t)h * hd;
                for (int d = 0; d < hd; d++) s += (double)acts[o + d] * grads[o + d];
            }
            out[(size_t)l * H + h] = (float)s;
        }
out:
    free(acts);
    free(grads);
    free(dlog);
    return st;
}

/* ------------------------------------------------------------------ patching */

ks_status ks_patch(ks_grad *g, const int *clean, const int *corrupt, int T,
                   const ks_objective *obj, ks_patch_site site, bool exact, ks_progress_fn progress,
                   void *progress_user, float *out, double *f_clean, double *f_corrupt,
                   ks_error *err) {
    const ks_config *cfg = ks_model_config(ks_grad_model(g));
    const int L = cfg->n_layers, H = cfg->n_heads, hd = cfg->head_dim, D = cfg->dim;
    const int V = cfg->vocab_size;
    const size_t width = site == KS_PATCH_HEAD_Z ? (size_t)H * hd : (size_t)D;
    const size_t n = (size_t)L * T * width;
    const int cells = site == KS_PATCH_HEAD_Z ? H : T;
    float *a_clean = malloc(n * sizeof(float)), *a_corr = malloc(n * sizeof(float));
    float *grads = exact ? NULL : malloc(n * sizeof(float)), *dlog = NULL;
    ks_status st = KS_OK;
    if (!a_clean || !a_corr || (!exact && !grads)) {
        st = ks_error_set(err, KS_ERR_NOMEM, "patching: out of memory for %zu activations", n);
        goto out;
    }
    if (!(dlog = malloc((size_t)T * V * sizeof(float)))) {
        st = ks_error_set(err, KS_ERR_NOMEM, "patching: out of memory");
        goto out;
    }
    actx c = {.T = T, .n_prompt = T, .emb_scale = 1.0f,
              .site = site == KS_PATCH_HEAD_Z ? KS_HOOK_ATTN_Z : KS_HOOK_RESID_PRE,
              .width = width, .acts = a_clean, .patch_layer = -1};
    double fc, fx;
    if ((st = run(g, &c, clean, T, obj, NULL, &fc, err))) goto out;
    c.acts = a_corr;
    c.grads = grads;
    if ((st = run(g, &c, corrupt, T, obj, exact ? NULL : dlog, &fx, err))) goto out;
    if (f_clean) *f_clean = fc;
    if (f_corrupt) *f_corrupt = fx;
    c.acts = NULL;
    c.grads = NULL;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < cells; k++) {
            int lo = site == KS_PATCH_HEAD_Z ? k * hd : 0;
            int hi = site == KS_PATCH_HEAD_Z ? lo + hd : (int)width;
            int pos = site == KS_PATCH_HEAD_Z ? -1 : k;
            double v = 0.0;
            if (exact) {
                c.patch_layer = l;
                c.patch_pos = pos;
                c.patch_lo = lo;
                c.patch_hi = hi;
                c.patch_src = a_clean;
                double fp;
                if ((st = run(g, &c, corrupt, T, obj, NULL, &fp, err))) goto out;
                v = fp - fx;
            } else {
                for (int p = 0; p < T; p++) {
                    if (pos >= 0 && p != pos) continue;
                    size_t o = ((size_t)l * T + p) * width;
                    for (int j = lo; j < hi; j++)
                        v += ((double)a_clean[o + j] - a_corr[o + j]) * grads[o + j];
                }
            }
            out[(size_t)l * cells + k] = (float)v;
            if (progress && exact) progress(l * cells + k + 1, L * cells, progress_user);
        }
out:
    free(a_clean);
    free(a_corr);
    free(grads);
    free(dlog);
    return st;
}

double ks_pearson(const float *x, const float *y, int n) {
    if (n < 2) return NAN;
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    if (sxx <= 0 || syy <= 0) return NAN;
    return sxy / sqrt(sxx * syy);
}
