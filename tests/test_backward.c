/* test_backward.c — the backward pass (model/backward.c) against PyTorch autograd and against
 * finite differences.
 *
 * Oracles:
 *  1. PyTorch autograd through HF transformers' LlamaForCausalLM (f32, eager), by
 *     tests/reference/make_grad_fixtures.py, for the f32 fixture models: the objective J = the
 *     log-probability of the prompt's own continuation, dJ/d every parameter and dJ/d every
 *     hidden state; a second objective J2 = logit[T-1][5] − logit[T-1][7] and its hidden-state
 *     gradients. Tolerance: 1e-4 relative to the largest |gradient| of each compared tensor
 *     (the f32 tolerance; both sides sum in f32, in other orders), and 1e-4 relative on
 *     J itself.
 *  2. 50 AdamW steps (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01, PyTorch's update
 *     rule) on gqa_untied, the mean cross-entropy of the prompt's own continuation: the 50
 *     losses within 1e-4 (absolute: losses are O(1..10)) of PyTorch's.
 *  3. Central finite differences on stories260K (f32 weights read into memory): 24 random
 *     parameter coordinates among those whose gradient is at least a tenth of their tensor's
 *     largest, step h = 1e-2, and 8 coordinates of hidden states (a forward hook adds ±h, the
 *     backward hook reads the gradient). Tolerance 3e-2 relative + 2e-4 absolute: the forward
 *     is f32, so J (about -40) carries ~1e-5 of rounding noise, which h = 1e-2 turns into
 *     ~1e-3 of noise on the quotient, and the O(h²) truncation adds ~1e-4 relative.
 *  4. An objective that is not a function of the logits: a projection of a hooked activation on
 *     a direction, <blocks.2.hook_resid_post[6], u>, expressed by a backward hook that adds u to
 *     the gradient there (the logits' gradient is zero): its gradient at layer 0's input against
 *     central differences (same tolerance as 3.), and exactly zero at later positions (causal).
 * Also: parameter gradients off gives the same activation gradients; every fixture again on
 * "cpu-copy" (the device path of backward.c: hooks staged, logits and gradients copied back);
 * a bf16 model used as stored vs converted to f32 (check_16bit); gradients bit-identical with
 * 1 thread and with all (check_threads); param_filter keeps some gradients, bit-identical
 * (check_param_filter); backends refused by name. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_private.h"
#include "st_read.h"
#include "tap.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define TOL_GRAD 1e-4
#define TOL_ADAM 1e-4

static ks_model *open_model(const char *path, const char *tok, bool f32) {
    ks_model *m = NULL;
    ks_error err = {0};
    ks_model_options o = {.tokenizer_path = tok, .no_mmap = true, .f32_weights = f32};
    if (ks_model_open(path, &o, &m, &err) != KS_OK) {
        tap_ok(0, "open %s: %s", path, err.msg);
        return NULL;
    }
    return m;
}

/* max |a − b| / max |b| over n floats (b may be unaligned bytes when e) */
static double rel_err(const float *a, const uint8_t *e, size_t n, double *scale) {
    double d = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        float b;
        memcpy(&b, e + 4 * i, 4);
        double x = fabs((double)a[i] - b);
        if (!(x <= d)) d = x;
        if (fabs(b) > s) s = fabs(b);
    }
    if (scale) *scale = s;
    return s > 0 ? d / s : d;
}

/* The model's own storage of a parameter, by HF name (f32, writable: no_mmap). */
static float *model_param(ks_model *m, const char *name, size_t *n) {
    const ks_config *c = &m->cfg;
    size_t D = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    int l = -1, used = 0;
    char rest[64];
    if (!strcmp(name, "model.embed_tokens.weight")) return *n = V * D, (float *)m->tok_embeddings.data;
    if (!strcmp(name, "lm_head.weight")) return *n = V * D, (float *)m->output.data;
    if (!strcmp(name, "model.norm.weight")) return *n = D, (float *)m->final_norm;
    if (sscanf(name, "model.layers.%d.%63s%n", &l, rest, &used) != 2 || l < 0 || l >= c->n_layers)
        return NULL;
    ks_layer_weights *w = &m->layers[l];
    if (!strcmp(rest, "input_layernorm.weight")) return *n = D, (float *)w->attn_norm;
    if (!strcmp(rest, "post_attention_layernorm.weight")) return *n = D, (float *)w->ffn_norm;
    if (!strcmp(rest, "self_attn.q_proj.weight")) return *n = q * D, (float *)w->wq.data;
    if (!strcmp(rest, "self_attn.k_proj.weight")) return *n = kv * D, (float *)w->wk.data;
    if (!strcmp(rest, "self_attn.v_proj.weight")) return *n = kv * D, (float *)w->wv.data;
    if (!strcmp(rest, "self_attn.o_proj.weight")) return *n = D * q, (float *)w->wo.data;
    if (!strcmp(rest, "mlp.gate_proj.weight")) return *n = hid * D, (float *)w->w_gate.data;
    if (!strcmp(rest, "mlp.up_proj.weight")) return *n = hid * D, (float *)w->w_up.data;
    if (!strcmp(rest, "mlp.down_proj.weight")) return *n = D * hid, (float *)w->w_down.data;
    return NULL;
}

/* Every parameter name of m (HF naming), for iteration: returns the count. */
static int param_names(const ks_model *m, char names[][96], int cap) {
    static const char *const per[] = {"input_layernorm.weight", "post_attention_layernorm.weight",
                                      "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                      "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                      "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                      "mlp.down_proj.weight"};
    int n = 0;
    snprintf(names[n++], 96, "model.embed_tokens.weight");
    if (m->output.data != m->tok_embeddings.data) snprintf(names[n++], 96, "lm_head.weight");
    snprintf(names[n++], 96, "model.norm.weight");
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (size_t k = 0; k < sizeof per / sizeof per[0] && n < cap; k++)
            snprintf(names[n++], 96, "model.layers.%d.%s", l, per[k]);
    return n;
}

/* ------------------------------------------------------------------ hidden-state capture */

/* Backward hook: copies d/d resid_pre of each layer and d/d ln_final into hid (L+1, T, D),
 * the layout of HF's hidden_states. Forward hook: adds `add` to one coordinate of one. */
typedef struct {
    float *hid;
    int L, T, D;
    int seen;
    /* forward perturbation */
    ks_hook_point fp;
    int fl;
    size_t fi;
    float add;
} hcap;

static int hid_index(const hcap *h, const ks_hook_tensor *t) {
    if (t->point == KS_HOOK_RESID_PRE) return t->layer;
    if (t->point == KS_HOOK_LN_FINAL_NORMALIZED) return h->L;
    return -1;
}

static bool bwd_capture(const ks_hook_tensor *t, bool ask, void *user) {
    hcap *h = user;
    int i = hid_index(h, t);
    if (i < 0) return false;
    if (ask) return true;
    memcpy(h->hid + (size_t)i * h->T * h->D, t->data, (size_t)h->T * h->D * sizeof(float));
    h->seen++;
    return false;
}

static bool fwd_perturb(const ks_hook_tensor *t, bool ask, void *user) {
    hcap *h = user;
    if (t->point != h->fp || t->layer != h->fl || h->add == 0.0f) return false;
    if (ask) return true;
    t->data[h->fi] += h->add;
    return false;
}

/* The model folder of fixture name and its gradient oracle (opened into f); false after a
 * failing test point. */
static bool open_fixture(const char *name, char *mdir, size_t cap, st_file *f) {
    char fx[4096], rel[512], why[512] = "";
    snprintf(rel, sizeof rel, "tests/reference/fixtures/hf/%s", name);
    ks_test_src_file(rel, mdir, cap);
    snprintf(rel, sizeof rel, "tests/reference/fixtures/grad/%s/expected_grad.safetensors", name);
    ks_test_src_file(rel, fx, sizeof fx);
    if (st_open(fx, f, why, sizeof why)) {
        tap_ok(0, "%s: %s", name, why);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ 1. PyTorch fixtures */

static double objective_J(ks_grad *g, const int *tok, int T, float *dlog, ks_error *err,
                          bool *ok) {
    int V = 0;
    *ok = ks_grad_forward(g, tok, T, err) == KS_OK;
    if (!*ok) return NAN;
    const float *lg = ks_grad_logits(g, NULL, &V);
    int *tg = malloc((size_t)T * sizeof(int));
    if (!tg) {
        *ok = false;
        return NAN;
    }
    for (int t = 0; t < T; t++) tg[t] = t + 1 < T ? tok[t + 1] : -1;
    double J = ks_objective_logprob(lg, T, V, tg, dlog);
    free(tg);
    return J;
}

/* On backend be ("cpu", or "cpu-copy": the device path — staged hooks, logits and parameter
 * gradients copied back — on the CPU); test names carry the backend when not "cpu". */
static void check_fixture(const char *fixture, const char *be) {
    char mdir[4096], why[512] = "", name[96];
    snprintf(name, sizeof name, "%s%s%s", fixture, strcmp(be, "cpu") ? " on " : "",
             strcmp(be, "cpu") ? be : "");
    st_file f;
    if (!open_fixture(fixture, mdir, sizeof mdir, &f)) return;
    ks_model *m = open_model(mdir, NULL, true);
    ks_grad *g = NULL;
    float *dlog = NULL;
    hcap h = {0};
    ks_grad_options o1 = {.param_grads = true, .backend = be};
    ks_error err = {0};
    if (!m) goto out;
    const ks_config *c = &m->cfg;
    int64_t sh[3];
    const uint8_t *tk = st_get(&f, "tokens", "I32", 1, sh, why, sizeof why);
    if (!tk) {
        tap_ok(0, "%s: %s", name, why);
        goto out;
    }
    int T = (int)sh[0], V = c->vocab_size, D = c->dim, L = c->n_layers;
    int tok[4096];
    if (T > 4096) goto out;
    memcpy(tok, tk, (size_t)T * 4);
    if (ks_grad_create(m, &o1, &g, &err)) {
        tap_ok(0, "%s: ks_grad_create: %s", name, err.msg);
        goto out;
    }
    dlog = malloc((size_t)T * V * sizeof(float));
    h = (hcap){.hid = calloc((size_t)(L + 1) * T * D, sizeof(float)), .L = L, .T = T, .D = D};
    if (!dlog || !h.hid) goto out;
    ks_grad_set_hooks(g, NULL, bwd_capture, &h);
    bool ok;
    double J = objective_J(g, tok, T, dlog, &err, &ok);
    if (!ok || ks_grad_backward(g, dlog, &err)) {
        tap_ok(0, "%s: forward/backward: %s", name, err.msg);
        goto out;
    }
    const uint8_t *ej = st_get(&f, "objective", "F32", 1, sh, why, sizeof why);
    float jref = NAN;
    if (ej) memcpy(&jref, ej, 4);
    tap_ok(ej && fabs(J - jref) <= TOL_GRAD * fabs(jref), "%s: J = log p(own continuation) = %.6f, "
           "PyTorch %.6f (rel tol %g)", name, J, jref, TOL_GRAD);
    const uint8_t *edl = st_get(&f, "dlogits", "F32", 2, sh, why, sizeof why);
    double s;
    double e = edl ? rel_err(dlog, edl, (size_t)T * V, &s) : INFINITY;
    tap_ok(e <= TOL_GRAD, "%s: dJ/dlogits rel err %.2e (tol %g)", name, e, TOL_GRAD);

    /* every parameter */
    char names[512][96];
    int np = param_names(m, names, 512);
    double worst = 0.0;
    char wname[96] = "";
    int missing = 0;
    for (int k = 0; k < np; k++) {
        char key[128];
        snprintf(key, sizeof key, "grad.%s", names[k]);
        size_t n = 0;
        const float *gp = ks_grad_param(g, names[k], &n);
        json_t *t = json_object_get(f.head, key);
        int nd = t ? (int)json_array_size(json_object_get(t, "shape")) : 0;
        int64_t shp[4];
        const uint8_t *ep = nd ? st_get(&f, key, "F32", nd, shp, why, sizeof why) : NULL;
        size_t ne = 1;
        for (int i = 0; ep && i < nd; i++) ne *= (size_t)shp[i];
        if (!gp || !ep || ne != n) {
            missing++;
            tap_diag("%s: %s: ours %s (%zu), PyTorch's %s (%zu)", name, names[k],
                     gp ? "present" : "missing", n, ep ? "present" : "missing", ne);
            continue;
        }
        double ek = rel_err(gp, ep, n, &s);
        if (!(ek <= worst)) {
            worst = ek;
            snprintf(wname, sizeof wname, "%s", names[k]);
        }
    }
    tap_ok(!missing && worst <= TOL_GRAD, "%s: dJ/dparam for all %d parameters, worst %s rel err "
           "%.2e (tol %g)%s", name, np, wname, worst, TOL_GRAD, missing ? ", some missing" : "");
    /* every hidden state */
    const uint8_t *eh = st_get(&f, "dhidden", "F32", 3, sh, why, sizeof why);
    e = eh && h.seen == L + 1 ? rel_err(h.hid, eh, (size_t)(L + 1) * T * D, &s) : INFINITY;
    tap_ok(e <= TOL_GRAD, "%s: dJ/dhidden_states (%d of %d seen by the backward hook), rel err "
           "%.2e (tol %g)", name, h.seen, L + 1, e, TOL_GRAD);

    /* J2: a logit difference, activation gradients only (param_grads off) */
    ks_grad *g2 = NULL;
    ks_grad_options o2 = {.param_grads = false, .backend = be};
    if (!ks_grad_create(m, &o2, &g2, &err)) {
        h.seen = 0;
        ks_grad_set_hooks(g2, NULL, bwd_capture, &h);
        int V2 = 0;
        double J2 = NAN;
        if (!ks_grad_forward(g2, tok, T, &err)) {
            const float *lg2 = ks_grad_logits(g2, NULL, &V2);
            J2 = ks_objective_logit_diff(lg2, T, V2, T - 1, 5, 7, dlog);
            ks_grad_backward(g2, dlog, &err);
        }
        const uint8_t *ej2 = st_get(&f, "objective2", "F32", 1, sh, why, sizeof why);
        const uint8_t *eh2 = st_get(&f, "dhidden2", "F32", 3, sh, why, sizeof why);
        float j2 = NAN;
        if (ej2) memcpy(&j2, ej2, 4);
        e = eh2 && h.seen == L + 1 ? rel_err(h.hid, eh2, (size_t)(L + 1) * T * D, &s) : INFINITY;
        tap_ok(fabs(J2 - j2) <= TOL_GRAD * fmax(1.0, fabs(j2)) && e <= TOL_GRAD,
               "%s: J2 = logit[5] - logit[7] = %.6f (PyTorch %.6f), dJ2/dhidden rel err %.2e with "
               "parameter gradients off", name, J2, j2, e);
        tap_ok(ks_grad_param(g2, "model.norm.weight", NULL) == NULL,
               "%s: with parameter gradients off there are none to read", name);
        ks_grad_free(g2);
    } else {
        tap_ok(0, "%s: ks_grad_create without parameter gradients: %s", name, err.msg);
    }
out:
    free(h.hid);
    free(dlog);
    ks_grad_free(g);
    ks_model_close(m);
    st_close(&f);
}

/* ------------------------------------------------------------------ 2. AdamW */

typedef struct {
    float *p, *m, *v;
    const float *g;
    size_t n;
} adam_slot;

/* PyTorch's AdamW step: p *= 1 − lr wd; m, v moments; p −= lr / bc1 · m / (sqrt(v) / sqrt(bc2)
 * + eps). */
static void adamw_step(adam_slot *s, int ns, int step, float lr, float b1, float b2, float eps,
                       float wd) {
    double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
    float step_size = (float)(lr / bc1), sq2 = (float)sqrt(bc2);
    for (int k = 0; k < ns; k++)
        for (size_t i = 0; i < s[k].n; i++) {
            float g = s[k].g[i];
            s[k].p[i] *= 1.0f - lr * wd;
            s[k].m[i] = b1 * s[k].m[i] + (1.0f - b1) * g;
            s[k].v[i] = b2 * s[k].v[i] + (1.0f - b2) * g * g;
            s[k].p[i] -= step_size * s[k].m[i] / (sqrtf(s[k].v[i]) / sq2 + eps);
        }
}

static void check_adamw(const char *name) {
    char mdir[4096], why[512] = "";
    st_file f;
    if (!open_fixture(name, mdir, sizeof mdir, &f)) return;
    ks_model *m = open_model(mdir, NULL, true);
    ks_grad *g = NULL;
    ks_error err = {0};
    float *dlog = NULL, *mom = NULL;
    adam_slot slots[512];
    int ns = 0;
    int64_t sh[2];
    const uint8_t *tk = st_get(&f, "tokens", "I32", 1, sh, why, sizeof why);
    const uint8_t *el = st_get(&f, "adamw_losses", "F32", 1, sh + 1, why, sizeof why);
    if (!m || !tk || !el || sh[1] != 50 || ks_grad_create(m, NULL, &g, &err)) {
        tap_ok(0, "%s: AdamW fixture or setup: %s %s", name, why, err.msg);
        goto out;
    }
    int T = (int)sh[0], V = m->cfg.vocab_size;
    int tok[4096];
    if (T > 4096 || T < 2) goto out;
    memcpy(tok, tk, (size_t)T * 4);
    char names[512][96];
    int np = param_names(m, names, 512);
    size_t total = 0;
    for (int k = 0; k < np; k++) {
        size_t n = 0, n2 = 0;
        slots[k].p = model_param(m, names[k], &n);
        slots[k].g = ks_grad_param(g, names[k], &n2);
        slots[k].n = n;
        if (!slots[k].p || !slots[k].g || n != n2) {
            tap_ok(0, "%s: parameter %s not found on both sides", name, names[k]);
            goto out;
        }
        total += n;
    }
    ns = np;
    mom = calloc(2 * total, sizeof(float));
    dlog = malloc((size_t)T * V * sizeof(float));
    if (!mom || !dlog) goto out;
    float *mp = mom;
    for (int k = 0; k < ns; k++) {
        slots[k].m = mp;
        mp += slots[k].n;
        slots[k].v = mp;
        mp += slots[k].n;
    }
    double worst = 0.0, first = NAN, last = NAN;
    int worst_step = -1;
    for (int step = 1; step <= 50; step++) {
        bool ok;
        ks_grad_zero(g);
        double J = objective_J(g, tok, T, dlog, &err, &ok);
        if (!ok) break;
        double loss = -J / (T - 1);
        for (size_t i = 0; i < (size_t)T * V; i++) dlog[i] *= (float)(-1.0 / (T - 1));
        if (ks_grad_backward(g, dlog, &err)) break;
        float ref;
        memcpy(&ref, el + 4 * (step - 1), 4);
        double d = fabs(loss - ref);
        if (!(d <= worst)) {
            worst = d;
            worst_step = step;
        }
        if (step == 1) first = loss;
        last = loss;
        adamw_step(slots, ns, step, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
    }
    tap_ok(worst <= TOL_ADAM, "%s: 50 AdamW steps: losses %.5f -> %.5f, worst |diff| to PyTorch "
           "%.2e at step %d (tol %g)", name, first, last, worst, worst_step, TOL_ADAM);
out:
    free(dlog);
    free(mom);
    ks_grad_free(g);
    ks_model_close(m);
    st_close(&f);
}

/* ------------------------------------------------------------------ 3. finite differences */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double J_only(ks_grad *g, const int *tok, int T, ks_error *err) {
    bool ok;
    double J = objective_J(g, tok, T, NULL, err, &ok);
    return ok ? J : NAN;
}

static void check_finite_differences(void) {
    char bin[4096], tok_path[4096];
    if (!ks_test_data_file("stories260K/stories260K.bin", bin, sizeof bin) ||
        !ks_test_data_file("stories260K/tok512.bin", tok_path, sizeof tok_path))
        return;
    ks_model *m = open_model(bin, tok_path, true);
    if (!m) return;
    ks_grad *g = NULL;
    ks_error err = {0};
    float *dlog = NULL;
    hcap h = {0};
    const int T = 24;
    int tok[24];
    for (int t = 0; t < T; t++) tok[t] = 1 + (int)(next() % (uint64_t)(m->cfg.vocab_size - 1));
    if (ks_grad_create(m, NULL, &g, &err)) {
        tap_ok(0, "stories260K: ks_grad_create: %s", err.msg);
        goto out;
    }
    const ks_config *c = &m->cfg;
    dlog = malloc((size_t)T * c->vocab_size * sizeof(float));
    h = (hcap){.hid = calloc((size_t)(c->n_layers + 1) * T * c->dim, sizeof(float)),
               .L = c->n_layers, .T = T, .D = c->dim};
    if (!dlog || !h.hid) goto out;
    ks_grad_set_hooks(g, fwd_perturb, bwd_capture, &h);
    bool ok;
    double J0 = objective_J(g, tok, T, dlog, &err, &ok);
    if (!ok || ks_grad_backward(g, dlog, &err)) {
        tap_ok(0, "stories260K: forward/backward: %s", err.msg);
        goto out;
    }
    const float h_step = 1e-2f;
    char names[512][96];
    int np = param_names(m, names, 512);
    int bad = 0, n_checked = 0;
    double worst = 0.0;
    char wdesc[160] = "";
    for (int k = 0; k < 24; k++) {
        const char *nm = names[next() % (uint64_t)np];
        size_t n = 0, n2 = 0;
        float *p = model_param(m, nm, &n);
        const float *gp = ks_grad_param(g, nm, &n2);
        if (!p || !gp || n != n2) continue;
        float gmax = 0.0f;
        for (size_t i = 0; i < n; i++) gmax = fmaxf(gmax, fabsf(gp[i]));
        size_t i = 0;
        for (int tries = 0; tries < 1000; tries++) { /* a coordinate that matters */
            i = next() % n;
            if (fabsf(gp[i]) >= 0.1f * gmax) break;
        }
        float p0 = p[i], an = gp[i];
        p[i] = p0 + h_step;
        double Jp = J_only(g, tok, T, &err);
        p[i] = p0 - h_step;
        double Jm = J_only(g, tok, T, &err);
        p[i] = p0;
        double fd = (Jp - Jm) / (2.0 * h_step);
        double d = fabs(fd - an), tol = 3e-2 * fabs(fd) + 2e-4;
        n_checked++;
        if (!(d <= tol)) bad++;
        if (!(d / (fabs(fd) + 1e-12) <= worst)) {
            worst = d / (fabs(fd) + 1e-12);
            snprintf(wdesc, sizeof wdesc, "%s[%zu]: analytic %.5g, differences %.5g", nm, i, an, fd);
        }
    }
    tap_ok(n_checked >= 20 && !bad, "stories260K: dJ/dparam at %d random coordinates vs central "
           "differences (h %g): %d outside 3e-2 rel + 2e-4; worst %s", n_checked, h_step, bad,
           wdesc);
    /* hidden states: perturb resid_pre of a layer (or ln_final) in the forward */
    bad = 0;
    worst = 0.0;
    for (int k = 0; k < 8; k++) {
        int li = (int)(next() % (uint64_t)(c->n_layers + 1));
        size_t fi = next() % ((size_t)T * c->dim);
        float an = h.hid[(size_t)li * T * c->dim + fi];
        h.fp = li < c->n_layers ? KS_HOOK_RESID_PRE : KS_HOOK_LN_FINAL_NORMALIZED;
        h.fl = li < c->n_layers ? li : -1;
        h.fi = fi;
        h.add = h_step;
        double Jp = J_only(g, tok, T, &err);
        h.add = -h_step;
        double Jm = J_only(g, tok, T, &err);
        h.add = 0.0f;
        double fd = (Jp - Jm) / (2.0 * h_step);
        if (!(fabs(fd - an) <= 3e-2 * fabs(fd) + 2e-4)) {
            bad++;
            tap_diag("hidden %d [%zu]: analytic %.6g, differences %.6g", li, fi, an, fd);
        }
    }
    tap_ok(!bad, "stories260K: d J / d hidden state at 8 random coordinates (forward hook adds "
           "±h, backward hook reads) vs central differences: %d outside tolerance; J = %.4f",
           bad, J0);
out:
    free(h.hid);
    free(dlog);
    ks_grad_free(g);
    ks_model_close(m);
}

/* ------------------------------------------------------------------ 4. a projection objective */

/* f = <blocks.2.hook_resid_post[pos], u>: the backward starts from zero logits and a backward
 * hook adds u there; d f / d resid_pre of layer 0 is read at the end. The forward hooks add ±h
 * to one coordinate of layer 0's input and read the projection, for central differences. */
typedef struct {
    const float *u;
    int layer, pos, D;
    float *d0;       /* d f / d blocks.0.hook_resid_pre (T, D) */
    size_t fi;       /* perturbed coordinate of blocks.0.hook_resid_pre */
    float add;
    double proj;     /* the forward's projection */
} proj_ctx;

static bool proj_fwd(const ks_hook_tensor *t, bool ask, void *user) {
    proj_ctx *c = user;
    bool pert = t->point == KS_HOOK_RESID_PRE && t->layer == 0 && c->add != 0.0f;
    bool read = t->point == KS_HOOK_RESID_POST && t->layer == c->layer;
    if (!pert && !read) return false;
    if (ask) return true;
    if (pert) t->data[c->fi] += c->add;
    if (read) {
        c->proj = 0.0;
        for (int i = 0; i < c->D; i++) c->proj += (double)t->data[(size_t)c->pos * c->D + i] * c->u[i];
    }
    return false;
}

static bool proj_bwd(const ks_hook_tensor *t, bool ask, void *user) {
    proj_ctx *c = user;
    bool inject = t->point == KS_HOOK_RESID_POST && t->layer == c->layer;
    bool read = t->point == KS_HOOK_RESID_PRE && t->layer == 0;
    if (!inject && !read) return false;
    if (ask) return true;
    if (inject)
        for (int i = 0; i < c->D; i++) t->data[(size_t)c->pos * c->D + i] += c->u[i];
    if (read) memcpy(c->d0, t->data, (size_t)t->shape[0] * c->D * sizeof(float));
    return false;
}

static void check_projection(void) {
    char bin[4096], tok_path[4096];
    if (!ks_test_data_file("stories260K/stories260K.bin", bin, sizeof bin) ||
        !ks_test_data_file("stories260K/tok512.bin", tok_path, sizeof tok_path))
        return;
    ks_model *m = open_model(bin, tok_path, true);
    if (!m) return;
    const ks_config *c = &m->cfg;
    const int T = 10, D = c->dim;
    int tok[10];
    for (int t = 0; t < T; t++) tok[t] = 1 + (int)(next() % (uint64_t)(c->vocab_size - 1));
    float *u = malloc((size_t)D * sizeof(float)), *d0 = calloc((size_t)T * D, sizeof(float));
    float *dlog = calloc((size_t)T * c->vocab_size, sizeof(float));
    ks_grad *g = NULL;
    ks_error err = {0};
    ks_grad_options o = {.param_grads = false};
    if (!u || !d0 || !dlog || ks_grad_create(m, &o, &g, &err)) {
        tap_ok(0, "projection objective: setup: %s", err.msg);
        goto out;
    }
    for (int i = 0; i < D; i++) u[i] = (float)((double)(next() % 2001) / 1000.0 - 1.0);
    proj_ctx pc = {.u = u, .layer = 2, .pos = 6, .D = D, .d0 = d0};
    ks_grad_set_hooks(g, proj_fwd, proj_bwd, &pc);
    bool ok = !ks_grad_forward(g, tok, T, &err) && !ks_grad_backward(g, dlog, &err);
    int bad = 0, zero_after = 0;
    for (int k = 0; ok && k < 8; k++) {
        int t = (int)(next() % (uint64_t)(pc.pos + 1));
        pc.fi = (size_t)t * D + next() % (uint64_t)D;
        const float h = 1e-2f;
        pc.add = h;
        ok = !ks_grad_forward(g, tok, T, &err);
        double fp = pc.proj;
        pc.add = -h;
        ok = ok && !ks_grad_forward(g, tok, T, &err);
        double fm = pc.proj;
        pc.add = 0.0f;
        double fd = (fp - fm) / (2.0 * h);
        if (!(fabs(fd - d0[pc.fi]) <= 3e-2 * fabs(fd) + 2e-4)) {
            bad++;
            tap_diag("projection: d f / d x[%zu]: analytic %.6g, differences %.6g", pc.fi,
                     d0[pc.fi], fd);
        }
    }
    for (size_t i = (size_t)(pc.pos + 1) * D; i < (size_t)T * D; i++) zero_after += d0[i] != 0.0f;
    tap_ok(ok && !bad && !zero_after,
           "projection objective <blocks.2.hook_resid_post[6], u> through a backward hook: d f / d "
           "blocks.0.hook_resid_pre at 8 coordinates vs central differences (%d off), and exactly "
           "0 after position 6 (%d non-zero)%s%s", bad, zero_after, ok ? "" : ": ", ok ? "" : err.msg);
out:
    ks_grad_free(g);
    free(u);
    free(d0);
    free(dlog);
    ks_model_close(m);
}

/* ------------------------------------------------------------------ 16-bit weights, backends */

/* A model with bf16 weights, used as stored, against the same checkpoint converted to f32 at
 * load: the same products of the same values (the CPU converts each weight panel to f32), so
 * the gradients agree to f32 summation order (panel by panel instead of one GEMM): 1e-5
 * relative to each tensor's largest |gradient|. */
static void check_16bit(const char *be) {
    char mdir[4096];
    ks_test_src_file("tests/reference/fixtures/hf/bf16_mha", mdir, sizeof mdir);
    ks_model *m16 = open_model(mdir, NULL, false), *m32 = open_model(mdir, NULL, true);
    ks_grad *g16 = NULL, *g32 = NULL;
    ks_error err = {0};
    float *d16 = NULL, *d32 = NULL;
    if (!m16 || !m32) goto out;
    ks_grad_options o16 = {.param_grads = true, .backend = be};
    if (ks_grad_create(m16, &o16, &g16, &err) || ks_grad_create(m32, NULL, &g32, &err)) {
        tap_ok(0, "bf16_mha on %s: ks_grad_create: %s", be, err.msg);
        goto out;
    }
    const int T = 9, V = m16->cfg.vocab_size;
    int tok[9];
    for (int t = 0; t < T; t++) tok[t] = (7 * t + 3) % V;
    d16 = malloc((size_t)T * V * sizeof(float));
    d32 = malloc((size_t)T * V * sizeof(float));
    bool ok16, ok32;
    if (!d16 || !d32) goto out;
    double J16 = objective_J(g16, tok, T, d16, &err, &ok16);
    double J32 = objective_J(g32, tok, T, d32, &err, &ok32);
    if (!ok16 || !ok32 || ks_grad_backward(g16, d16, &err) || ks_grad_backward(g32, d32, &err)) {
        tap_ok(0, "bf16_mha on %s: forward/backward: %s", be, err.msg);
        goto out;
    }
    tap_ok(fabs(J16 - J32) <= 1e-5 * fabs(J32), "bf16_mha on %s: J with bf16 weights used as "
           "stored %.7f, converted to f32 at load %.7f", be, J16, J32);
    char names[512][96];
    int np = param_names(m16, names, 512), missing = 0;
    double worst = 0.0, s;
    char wname[96] = "";
    for (int k = 0; k < np; k++) {
        size_t n1 = 0, n2 = 0;
        const float *a = ks_grad_param(g32, names[k], &n2);
        const float *b = ks_grad_param(g16, names[k], &n1);
        if (!a || !b || n1 != n2) {
            missing++;
            continue;
        }
        double e = rel_err(b, (const uint8_t *)a, n1, &s);
        if (!(e <= worst)) {
            worst = e;
            snprintf(wname, sizeof wname, "%s", names[k]);
        }
    }
    tap_ok(!missing && worst <= 1e-5, "bf16_mha on %s: dJ/dparam of all %d parameters with bf16 "
           "weights as stored vs converted to f32: worst %s rel err %.2e (tol 1e-5)", be, np,
           wname, worst);
out:
    free(d16);
    free(d32);
    ks_grad_free(g16);
    ks_grad_free(g32);
    ks_model_close(m16);
    ks_model_close(m32);
}

/* Gradients bit-identical with 1 thread and with all of them (the CPU backend cuts its work
 * at boundaries that do not depend on the thread count: audits promise the same results from
 * 1 or K processes). */
static void check_threads(void) {
#ifdef _OPENMP
    char mdir[4096];
    ks_test_src_file("tests/reference/fixtures/hf/gqa_untied", mdir, sizeof mdir);
    ks_model *m = open_model(mdir, NULL, true);
    if (!m) return;
    const int T = 40, V = m->cfg.vocab_size, nmax = omp_get_max_threads();
    int tok[40];
    for (int t = 0; t < T; t++) tok[t] = (11 * t + 5) % V;
    float *dl = malloc((size_t)T * V * sizeof(float));
    float *first = NULL;
    size_t total = 0;
    int differ = -1, n = 0;
    char names[512][96];
    int np = param_names(m, names, 512);
    for (int run = 0; run < 2 && dl; run++) {
        omp_set_num_threads(run == 0 ? 1 : nmax);
        ks_grad *g = NULL;
        ks_error err = {0};
        bool ok = false;
        if (!ks_grad_create(m, NULL, &g, &err)) {
            objective_J(g, tok, T, dl, &err, &ok);
            ok = ok && !ks_grad_backward(g, dl, &err);
        }
        if (!ok) {
            tap_ok(0, "threads: gradients with %d thread(s): %s", run ? nmax : 1, err.msg);
            ks_grad_free(g);
            break;
        }
        size_t off = 0;
        for (int k = 0; k < np; k++) {
            size_t cnt = 0;
            const float *p = ks_grad_param(g, names[k], &cnt);
            if (!p) continue;
            if (run == 0) {
                float *nf = realloc(first, (total + cnt) * sizeof(float));
                if (!nf) break;
                first = nf;
                memcpy(first + total, p, cnt * sizeof(float));
                total += cnt;
            } else if (differ < 0 && (off + cnt > total ||
                                      memcmp(first + off, p, cnt * sizeof(float)))) {
                differ = k;
            }
            off += cnt;
        }
        n = run + 1;
        ks_grad_free(g);
    }
    omp_set_num_threads(nmax);
    if (n == 2)
        tap_ok(differ < 0, "gradients with 1 thread and with %d are bit-identical (%zu floats)%s%s",
               nmax, total, differ < 0 ? "" : "; first differing: ", differ < 0 ? "" : names[differ]);
    free(first);
    free(dl);
    ks_model_close(m);
#endif
}

/* param_filter: only the kept parameters have gradients, each bit-identical to the unfiltered
 * run's, and the activation gradients (what the hooks see) are unchanged. */
static bool keep_q0_norm(const char *name, void *user) {
    (void)user;
    return !strcmp(name, "model.layers.0.self_attn.q_proj.weight") ||
           !strcmp(name, "model.norm.weight");
}

static void check_param_filter(void) {
    char mdir[4096];
    ks_test_src_file("tests/reference/fixtures/hf/gqa_untied", mdir, sizeof mdir);
    ks_model *m = open_model(mdir, NULL, true);
    if (!m) return;
    const int T = 17, V = m->cfg.vocab_size, L = m->cfg.n_layers, D = m->cfg.dim;
    int tok[17];
    for (int t = 0; t < T; t++) tok[t] = (13 * t + 2) % V;
    ks_grad *ga = NULL, *gb = NULL;
    ks_error err = {0};
    float *dl = malloc((size_t)T * V * sizeof(float));
    hcap ha = {.hid = calloc((size_t)(L + 1) * T * D, sizeof(float)), .L = L, .T = T, .D = D};
    hcap hb = {.hid = calloc((size_t)(L + 1) * T * D, sizeof(float)), .L = L, .T = T, .D = D};
    ks_grad_options of = {.param_grads = true, .param_filter = keep_q0_norm};
    bool ok = dl && ha.hid && hb.hid && !ks_grad_create(m, NULL, &ga, &err) &&
              !ks_grad_create(m, &of, &gb, &err);
    if (ok) {
        ks_grad_set_hooks(ga, NULL, bwd_capture, &ha);
        ks_grad_set_hooks(gb, NULL, bwd_capture, &hb);
        bool o1, o2;
        objective_J(ga, tok, T, dl, &err, &o1);
        ok = o1 && !ks_grad_backward(ga, dl, &err);
        objective_J(gb, tok, T, dl, &err, &o2);
        ok = ok && o2 && !ks_grad_backward(gb, dl, &err);
    }
    if (!ok) {
        tap_ok(0, "param_filter: %s", err.msg);
    } else {
        char names[512][96];
        int np = param_names(m, names, 512), kept = 0, wrong = 0;
        for (int k = 0; k < np; k++) {
            size_t na = 0, nb = 0;
            const float *a = ks_grad_param(ga, names[k], &na), *b = ks_grad_param(gb, names[k], &nb);
            bool want = keep_q0_norm(names[k], NULL);
            if (want) {
                kept++;
                if (!a || !b || na != nb || memcmp(a, b, na * sizeof(float))) wrong++;
            } else if (b) {
                wrong++;
            }
        }
        bool acts = memcmp(ha.hid, hb.hid, (size_t)(L + 1) * T * D * sizeof(float)) == 0;
        tap_ok(kept == 2 && !wrong && acts, "param_filter keeping 2 of %d parameters: those "
               "bit-identical to the unfiltered run's, the others absent (%d wrong), hidden-state "
               "gradients %s", np, wrong, acts ? "identical" : "DIFFERENT");
    }
    ks_grad_free(ga);
    ks_grad_free(gb);
    free(dl);
    free(ha.hid);
    free(hb.hid);
    ks_model_close(m);
}

static void check_backends(void) {
    char mdir[4096];
    ks_test_src_file("tests/reference/fixtures/hf/bf16_mha", mdir, sizeof mdir);
    ks_model *m = open_model(mdir, NULL, false);
    if (!m) return;
    ks_grad *g = NULL;
    ks_error err = {0};
    ks_grad_options o = {.backend = "tpu"};
    ks_status st = ks_grad_create(m, &o, &g, &err);
    tap_ok(st == KS_ERR_ARG && !g && strstr(err.msg, "'tpu'"),
           "an unknown backend is refused by name: %s", err.msg);
    o.backend = "cuda";
    st = ks_grad_create(m, &o, &g, &err);
    if (st == KS_OK) {
        tap_ok(strcmp(ks_grad_backend(g), "cuda") == 0, "backend cuda: a device is present and "
               "ks_grad runs on it (test_cuda compares it with the CPU)");
        ks_grad_free(g);
    } else {
        tap_ok(st == KS_ERR_BACKEND && !g && strstr(err.msg, "cuda"),
               "backend cuda without a usable device or CUDA build: a clear error: %s", err.msg);
    }
    ks_model_close(m);
}

int main(void) {
    static const char *const fixtures[] = {"mha_tied", "gqa_untied", "head_dim",
                                           "rope_linear", "rope_llama3", "rope_dynamic"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        check_fixture(fixtures[i], "cpu");
        check_fixture(fixtures[i], "cpu-copy");
    }
    check_adamw("gqa_untied");
    check_finite_differences();
    check_projection();
    check_16bit("cpu");
    check_16bit("cpu-copy");
    check_threads();
    check_param_filter();
    check_backends();
    return tap_done();
}
