/* trainer.c — the training loop: batches in a seeded order, the loss of the model's turns,
 * gradients from ks_grad, clipping by global norm, AdamW with warmup and cosine decay, and
 * LoRA.
 *
 * Numerics follow PyTorch, which the reference test runs the same recipe in:
 *  - loss of a step = Σ over its target tokens of −log p / the number of target tokens in the
 *    whole step (all batch × grad_accum sequences), so accumulation is the same as one large
 *    batch (transformers ≥ 4.46's num_items_in_batch);
 *  - clipping as torch.nn.utils.clip_grad_norm_: coef = clip / (norm + 1e-6), grads × min(coef, 1);
 *  - AdamW as torch.optim.AdamW (foreach=False): p ← p (1 − lr wd); m ← β1 m + (1 − β1) g;
 *    v ← β2 v + (1 − β2) g²; p ← p − lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + eps), in f32
 *    with the scalars computed in double as Python does;
 *  - the schedule as transformers' get_cosine_with_min_lr_schedule_with_warmup.
 *
 * LoRA: the model's matrix holds the merged W = W0 + (alpha / r) B A at all times, so the
 * forward and backward are the full model's; ks_grad gives dW and the chain rule gives
 * dA = s Bᵀ dW, dB = s dW Aᵀ (exact; the full dW is still computed, so LoRA here saves the
 * optimizer state, not the gradient memory). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_rng.h"
#include "train_private.h"

void ks_train_options_default(ks_train_options *o) {
    *o = (ks_train_options){.lr = 2e-5, .min_lr = 0.0, .warmup_steps = 0, .weight_decay = 0.0,
                            .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .clip = 1.0, .batch = 1,
                            .grad_accum = 1, .epochs = 2, .steps = 0, .seed = 0, .shuffle = true,
                            .lora_rank = 0, .lora_alpha = 16.0};
}

/* ------------------------------------------------------------------ random numbers */

static void rng_seed(ks_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed * 1000003ULL + stream;
    for (int i = 0; i < 4; i++) r->s[i] = ks_splitmix64(&x);
}

/* Uniform in [0, 1) with 53 bits. */
static double rng_unit(ks_rng *r) { return (double)(ks_rng_next(r) >> 11) * 0x1.0p-53; }

/* Standard normal (Box-Muller, one value per pair of uniforms). */
static double rng_normal(ks_rng *r) {
    double u1 = 1.0 - rng_unit(r), u2 = rng_unit(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Streams of the trainer: 1 + epoch for the orders, these for the rest. */
#define STREAM_INIT 0x696e6974ULL /* "init" */
#define STREAM_LORA 0x6c6f7261ULL /* "lora" */

ks_status ks_train_init_random(ks_model *m, double std, uint64_t seed, ks_error *err) {
    if (!m || !(std > 0) || !isfinite(std))
        return ks_error_set(err, KS_ERR_ARG, "random init: initializer_range must be positive");
    ks_rng r;
    rng_seed(&r, seed, STREAM_INIT);
    int nt = ks_model_tensor_count(m);
    for (int i = 0; i < nt; i++) {
        char name[96];
        int64_t shape[2];
        int nd;
        ks_model_tensor_info(m, i, name, sizeof name, shape, &nd);
        size_t n = 0;
        float *p = ks_model_param_mut(m, name, &n);
        if (!p)
            return ks_error_set(err, KS_ERR_ARG, "random init: parameter %s is not writable (open "
                                "the model with no_weights, or no_mmap and f32_weights)", name);
        if (nd == 1)
            for (size_t k = 0; k < n; k++) p[k] = 1.0f;
        else
            for (size_t k = 0; k < n; k++) p[k] = (float)(std * rng_normal(&r));
    }
    return KS_OK;
}

/* ------------------------------------------------------------------ order of the data */

static void make_perm(ks_trainer *t, int epoch) {
    if (t->perm_epoch == epoch) return;
    for (int i = 0; i < t->n_seqs; i++) t->perm[i] = i;
    if (t->o.shuffle) {
        /* Fisher-Yates, j = next() mod (i + 1), from the epoch's own stream */
        ks_rng r;
        rng_seed(&r, t->o.seed, 1 + (uint64_t)epoch);
        for (int i = t->n_seqs - 1; i > 0; i--) {
            int j = (int)(ks_rng_next(&r) % (uint64_t)(i + 1));
            int tmp = t->perm[i];
            t->perm[i] = t->perm[j];
            t->perm[j] = tmp;
        }
    }
    t->perm_epoch = epoch;
}

const int *ks_trainer_step_seqs(ks_trainer *t, int step, int *n) {
    int per = t->o.batch * t->o.grad_accum;
    int epoch = step / t->spe, j = step % t->spe;
    make_perm(t, epoch);
    int a = j * per, b = a + per < t->n_seqs ? a + per : t->n_seqs;
    for (int i = a; i < b; i++) t->step_idx[i - a] = t->perm[i];
    *n = b - a;
    return t->step_idx;
}

/* ------------------------------------------------------------------ lifecycle */

static void fnv(uint64_t *h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 1099511628211ULL;
    }
}

static ks_status check_options(const ks_train_options *o, int n_seqs, ks_error *err) {
#define KS_BAD(cond, ...) if (cond) return ks_error_set(err, KS_ERR_ARG, __VA_ARGS__)
    KS_BAD(!(o->lr > 0) || !isfinite(o->lr), "--lr: must be a positive number (got %g)", o->lr);
    KS_BAD(!(o->min_lr >= 0) || o->min_lr > o->lr, "--min-lr: must be in [0, lr] (got %g)", o->min_lr);
    KS_BAD(o->warmup_steps < 0, "--warmup-steps: must be >= 0");
    KS_BAD(!(o->weight_decay >= 0) || !isfinite(o->weight_decay), "--weight-decay: must be >= 0");
    KS_BAD(!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1),
           "betas: must be in [0, 1)");
    KS_BAD(!(o->eps > 0), "eps: must be positive");
    KS_BAD(!(o->clip >= 0) || !isfinite(o->clip), "--clip: must be >= 0 (0: off)");
    KS_BAD(o->batch < 1, "--batch: must be >= 1");
    KS_BAD(o->grad_accum < 1, "--grad-accum: must be >= 1");
    KS_BAD(o->steps < 0 || (o->steps == 0 && o->epochs < 1), "--epochs/--steps: need at least one step");
    KS_BAD(o->lora_rank < 0, "--lora-rank: must be >= 0");
    KS_BAD(o->lora_rank > 0 && !(o->lora_alpha > 0), "--lora-alpha: must be positive");
    KS_BAD(n_seqs < 1, "no training sequences");
#undef KS_BAD
    return KS_OK;
}

/* The matrices LoRA adapts: every layer's q, k, v and o projections (ks_grad's filter). */
static bool lora_target(const char *name, void *user) {
    (void)user;
    static const char *const proj[] = {".self_attn.q_proj.weight", ".self_attn.k_proj.weight",
                                       ".self_attn.v_proj.weight", ".self_attn.o_proj.weight"};
    size_t n = strlen(name);
    for (int k = 0; k < 4; k++) {
        size_t m = strlen(proj[k]);
        if (n > m && !strcmp(name + n - m, proj[k]) && !strncmp(name, "model.layers.", 13))
            return true;
    }
    return false;
}

static ks_status add_lora(ks_trainer *t, const char *name, ks_rng *r, ks_error *err) {
    int64_t shape[2] = {0, 0};
    size_t n = 0;
    float *w = ks_model_param_mut(t->m, name, &n);
    if (!w) return ks_error_set(err, KS_ERR_ARG, "LoRA: parameter %s is not writable", name);
    const ks_config *c = ks_model_config(t->m);
    /* q/k/v/o: shapes from the config */
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    if (strstr(name, "q_proj")) shape[0] = q, shape[1] = c->dim;
    else if (strstr(name, "o_proj")) shape[0] = c->dim, shape[1] = q;
    else shape[0] = kv, shape[1] = c->dim;
    int R = t->o.lora_rank, out = (int)shape[0], in = (int)shape[1];
    lora_slot *L = &t->lora[t->n_lora++];
    snprintf(L->name, sizeof L->name, "%s", name);
    L->w = w;
    L->out = out;
    L->in = in;
    size_t na = (size_t)R * in, nb = (size_t)out * R;
    L->w0 = malloc(n * sizeof(float));
    L->a = malloc(na * sizeof(float));
    L->b = calloc(nb, sizeof(float));
    L->ga = malloc(na * sizeof(float));
    L->gb = malloc(nb * sizeof(float));
    if (!L->w0 || !L->a || !L->b || !L->ga || !L->gb)
        return ks_error_set(err, KS_ERR_NOMEM, "LoRA: out of memory");
    memcpy(L->w0, w, n * sizeof(float));
    /* A as PEFT initialises it (kaiming_uniform_ with a = √5: U(−1/√in, 1/√in)), B = 0 */
    double bound = 1.0 / sqrt((double)in);
    for (size_t k = 0; k < na; k++) L->a[k] = (float)((2.0 * rng_unit(r) - 1.0) * bound);
    trainable *ta = &t->tr[t->n_tr++], *tb = &t->tr[t->n_tr++];
    *ta = (trainable){.p = L->a, .g = L->ga, .n = na, .shape = {R, in}, .ndim = 2, .decay = true};
    *tb = (trainable){.p = L->b, .g = L->gb, .n = nb, .shape = {out, R}, .ndim = 2, .decay = true};
    snprintf(ta->name, sizeof ta->name, "%s.lora_A", name);
    snprintf(tb->name, sizeof tb->name, "%s.lora_B", name);
    return KS_OK;
}

void ks_trainer_lora_merge(ks_trainer *t) {
    for (int i = 0; i < t->n_lora; i++) {
        lora_slot *L = &t->lora[i];
        memcpy(L->w, L->w0, (size_t)L->out * L->in * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->out, L->in, t->o.lora_rank,
                    t->lora_scale, L->b, t->o.lora_rank, L->a, L->in, 1.0f, L->w, L->in);
    }
}

ks_status ks_trainer_create(ks_model *m, const ks_train_options *o, const ks_train_seq *seqs,
                            int n_seqs, ks_trainer **out, ks_error *err) {
    if (!m || !o || !out || (!seqs && n_seqs)) return ks_error_set(err, KS_ERR_ARG, "ks_trainer_create: NULL argument");
    *out = NULL;
    ks_status st = check_options(o, n_seqs, err);
    if (st) return st;
    ks_trainer *t = calloc(1, sizeof *t);
    if (!t) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    t->m = m;
    t->o = *o;
    t->perm_epoch = -1;
    const ks_config *c = ks_model_config(m);
    uint64_t h = 1469598103934665603ULL;
    t->seqs = calloc((size_t)n_seqs, sizeof *t->seqs);
    if (!t->seqs) goto nomem;
    for (int i = 0; i < n_seqs; i++) {
        const ks_train_seq *s = &seqs[i];
        if (s->n < 2) {
            st = ks_error_set(err, KS_ERR_ARG, "sequence %d has %d tokens (at least 2 are needed)", i, s->n);
            goto fail;
        }
        ks_train_seq *d = &t->seqs[i];
        d->ids = malloc((size_t)s->n * sizeof(int));
        d->mask = malloc((size_t)s->n);
        if (!d->ids || !d->mask) goto nomem;
        memcpy(d->ids, s->ids, (size_t)s->n * sizeof(int));
        memcpy(d->mask, s->mask, (size_t)s->n);
        d->n = s->n;
        t->n_seqs++;
        if (s->n > t->max_len) t->max_len = s->n;
        fnv(&h, &s->n, sizeof s->n);
        fnv(&h, s->ids, (size_t)s->n * sizeof(int));
        fnv(&h, s->mask, (size_t)s->n);
    }
    int per = o->batch * o->grad_accum;
    t->spe = (n_seqs + per - 1) / per;
    t->total = o->steps > 0 ? o->steps : o->epochs * t->spe;
    double opts[] = {o->lr, o->min_lr, o->weight_decay, o->beta1, o->beta2, o->eps, o->clip, o->lora_alpha};
    int iopts[] = {o->warmup_steps, o->batch, o->grad_accum, t->total, o->shuffle, o->lora_rank};
    fnv(&h, opts, sizeof opts);
    fnv(&h, iopts, sizeof iopts);
    fnv(&h, &o->seed, sizeof o->seed);
    fnv(&h, c, sizeof *c);
    snprintf(t->fingerprint, sizeof t->fingerprint, "%016llx", (unsigned long long)h);

    /* LoRA trains factors of the attention projections: only their matrices' gradients are
     * needed (the rest of the backward still runs, for the activations' gradients) */
    ks_grad_options go = {.param_grads = true, .backend = o->backend,
                          .param_filter = o->lora_rank > 0 ? lora_target : NULL};
    if ((st = ks_grad_create(m, &go, &t->g, err))) goto fail;
    t->perm = malloc((size_t)n_seqs * sizeof(int));
    t->step_idx = malloc((size_t)per * sizeof(int));
    t->targets = malloc((size_t)t->max_len * sizeof(int));
    t->dlogits = malloc((size_t)t->max_len * c->vocab_size * sizeof(float));
    t->loss_hist = calloc((size_t)t->total, sizeof(double));
    t->lr_hist = calloc((size_t)t->total, sizeof(double));
    t->norm_hist = calloc((size_t)t->total, sizeof(double));
    if (!t->perm || !t->step_idx || !t->targets || !t->dlogits || !t->loss_hist || !t->lr_hist ||
        !t->norm_hist)
        goto nomem;

    /* what is trained */
    int nt = ks_model_tensor_count(m);
    if (o->lora_rank > 0) {
        t->lora = calloc((size_t)c->n_layers * 4, sizeof *t->lora);
        t->tr = calloc((size_t)c->n_layers * 8, sizeof *t->tr);
        if (!t->lora || !t->tr) goto nomem;
        t->lora_scale = (float)(o->lora_alpha / o->lora_rank);
        ks_rng r;
        rng_seed(&r, o->seed, STREAM_LORA);
        static const char *const proj[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        for (int l = 0; l < c->n_layers; l++)
            for (int k = 0; k < 4; k++) {
                char name[96];
                snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", l, proj[k]);
                if ((st = add_lora(t, name, &r, err))) goto fail;
            }
    } else {
        t->tr = calloc((size_t)nt, sizeof *t->tr);
        if (!t->tr) goto nomem;
        for (int i = 0; i < nt; i++) {
            trainable *x = &t->tr[t->n_tr];
            ks_model_tensor_info(m, i, x->name, sizeof x->name, x->shape, &x->ndim);
            x->p = ks_model_param_mut(m, x->name, &x->n);
            if (!x->p) {
                st = ks_error_set(err, KS_ERR_ARG, "parameter %s is not writable: open the model with "
                                  "no_mmap and f32_weights", x->name);
                goto fail;
            }
            x->g = ks_grad_param(t->g, x->name, NULL);
            if (!x->g) {
                st = ks_error_set(err, KS_ERR_NOMEM, "out of host memory for the gradient of %s",
                                  x->name);
                goto fail;
            }
            x->decay = x->ndim == 2;
            t->n_tr++;
        }
    }
    size_t total = 0;
    for (int i = 0; i < t->n_tr; i++) total += t->tr[i].n;
    t->adam_buf = calloc(2 * total, sizeof(float));
    if (!t->adam_buf) goto nomem;
    float *p = t->adam_buf;
    for (int i = 0; i < t->n_tr; i++) {
        t->tr[i].st.m = p;
        p += t->tr[i].n;
        t->tr[i].st.v = p;
        p += t->tr[i].n;
    }
    if (t->n_lora) ks_trainer_lora_merge(t);
    if ((st = ks_grad_weights_changed(t->g, err))) return st; /* a device's copies */
    *out = t;
    return KS_OK;
nomem:
    st = ks_error_set(err, KS_ERR_NOMEM, "trainer: out of memory");
fail:
    ks_trainer_free(t);
    return st;
}

void ks_trainer_free(ks_trainer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_seqs; i++) ks_train_seq_free(&t->seqs[i]);
    free(t->seqs);
    ks_grad_free(t->g);
    for (int i = 0; i < t->n_lora; i++) {
        lora_slot *L = &t->lora[i];
        free(L->w0);
        free(L->a);
        free(L->b);
        free(L->ga);
        free(L->gb);
    }
    free(t->lora);
    free(t->tr);
    free(t->adam_buf);
    free(t->perm);
    free(t->step_idx);
    free(t->targets);
    free(t->dlogits);
    free(t->loss_hist);
    free(t->lr_hist);
    free(t->norm_hist);
    free(t);
}

int ks_trainer_total_steps(const ks_trainer *t) { return t->total; }
int ks_trainer_steps_per_epoch(const ks_trainer *t) { return t->spe; }
int ks_trainer_step_index(const ks_trainer *t) { return t->step; }
const char *ks_trainer_fingerprint(const ks_trainer *t) { return t->fingerprint; }

const double *ks_trainer_losses(const ks_trainer *t, int *n) {
    if (n) *n = t->step;
    return t->loss_hist;
}
const double *ks_trainer_lrs(const ks_trainer *t, int *n) {
    if (n) *n = t->step;
    return t->lr_hist;
}
const double *ks_trainer_grad_norms(const ks_trainer *t, int *n) {
    if (n) *n = t->step;
    return t->norm_hist;
}

double ks_trainer_lr_at(const ks_trainer *t, int step) {
    const ks_train_options *o = &t->o;
    if (step < o->warmup_steps) return o->lr * ((double)step / (double)(o->warmup_steps > 1 ? o->warmup_steps : 1));
    int span = t->total - o->warmup_steps;
    double progress = (double)(step - o->warmup_steps) / (double)(span > 1 ? span : 1);
    double rate = o->min_lr / o->lr;
    double f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
    f = f * (1.0 - rate) + rate;
    return o->lr * (f > 0 ? f : 0.0);
}

/* ------------------------------------------------------------------ the step */

/* torch.optim.AdamW's single-tensor update of one tensor, with its gradient times coef. */
static void adamw(trainable *x, float coef, double lr, const ks_train_options *o, int step) {
    const float decay = (float)(1.0 - lr * (x->decay ? o->weight_decay : 0.0));
    const float b1 = (float)o->beta1, b2 = (float)o->beta2;
    const float c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
    const double bc1 = 1.0 - pow(o->beta1, step), bc2 = 1.0 - pow(o->beta2, step);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), eps = (float)o->eps;
    float *p = x->p, *m = x->st.m, *v = x->st.v;
    const float *g = x->g;
    for (size_t i = 0; i < x->n; i++) {
        float gi = g[i] * coef;
        p[i] *= decay;
        m[i] = m[i] * b1 + gi * c1;
        v[i] = v[i] * b2 + c2 * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] += -step_size * (m[i] / denom);
    }
}

ks_status ks_trainer_step(ks_trainer *t, ks_train_step_info *info, ks_error *err) {
    if (t->step >= t->total)
        return ks_error_set(err, KS_ERR_RANGE, "training is done (%d steps)", t->total);
    const ks_config *c = ks_model_config(t->m);
    const int V = c->vocab_size;
    int ns;
    const int *idx = ks_trainer_step_seqs(t, t->step, &ns);
    int64_t n_targets = 0, n_tokens = 0;
    for (int i = 0; i < ns; i++) {
        const ks_train_seq *s = &t->seqs[idx[i]];
        for (int k = 1; k < s->n; k++) n_targets += s->mask[k] != 0;
        n_tokens += s->n;
    }
    ks_grad_zero(t->g);
    double sum_lp = 0.0;
    ks_status st;
    for (int i = 0; i < ns; i++) {
        const ks_train_seq *s = &t->seqs[idx[i]];
        if ((st = ks_grad_forward(t->g, s->ids, s->n, err))) return st;
        for (int k = 0; k + 1 < s->n; k++) t->targets[k] = s->mask[k + 1] ? s->ids[k + 1] : -1;
        t->targets[s->n - 1] = -1;
        int T = 0;
        const float *logits = ks_grad_logits(t->g, &T, NULL);
        sum_lp += ks_objective_logprob(logits, T, V, t->targets, t->dlogits);
        /* d loss / d logits = −(d Σ log p) / N */
        const float scale = n_targets > 0 ? (float)(-1.0 / (double)n_targets) : 0.0f;
        for (size_t k = 0; k < (size_t)T * V; k++) t->dlogits[k] *= scale;
        if ((st = ks_grad_backward(t->g, t->dlogits, err))) return st;
    }
    double loss = n_targets > 0 ? -sum_lp / (double)n_targets : NAN;
    /* a device backend's gradients, into the host copy x->g reads */
    if ((st = ks_grad_sync_params(t->g, err))) return st;

    /* LoRA: the factors' gradients from the merged matrix's */
    const int R = t->o.lora_rank;
    for (int i = 0; i < t->n_lora; i++) {
        lora_slot *L = &t->lora[i];
        const float *dW = ks_grad_param(t->g, L->name, NULL);
        /* dA (R, in) = s Bᵀ dW;  dB (out, R) = s dW Aᵀ */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, L->in, L->out, t->lora_scale, L->b, R,
                    dW, L->in, 0.0f, L->ga, L->in);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L->out, R, L->in, t->lora_scale, dW,
                    L->in, L->a, L->in, 0.0f, L->gb, R);
    }

    /* global norm over the trainable gradients (f64 sums of squares per tensor, as torch
     * takes the 2-norm of the per-tensor 2-norms) */
    double total_sq = 0.0;
    for (int i = 0; i < t->n_tr; i++) {
        const trainable *x = &t->tr[i];
        double sq = 0.0;
        for (size_t k = 0; k < x->n; k++) sq += (double)x->g[k] * x->g[k];
        total_sq += sq;
    }
    double norm = sqrt(total_sq);
    float coef = 1.0f;
    if (t->o.clip > 0) {
        float cc = (float)(t->o.clip / (norm + 1e-6));
        coef = cc < 1.0f ? cc : 1.0f;
    }
    double lr = ks_trainer_lr_at(t, t->step);
    for (int i = 0; i < t->n_tr; i++) adamw(&t->tr[i], coef, lr, &t->o, t->step + 1);
    if (t->n_lora) ks_trainer_lora_merge(t);
    if ((st = ks_grad_weights_changed(t->g, err))) return st; /* a device's copies */

    t->loss_hist[t->step] = loss;
    t->lr_hist[t->step] = lr;
    t->norm_hist[t->step] = norm;
    if (info)
        *info = (ks_train_step_info){.step = t->step + 1, .epoch = t->step / t->spe, .loss = loss,
                                     .lr = lr, .grad_norm = norm, .tokens = n_tokens,
                                     .targets = n_targets, .n_seqs = ns};
    t->step++;
    return KS_OK;
}
