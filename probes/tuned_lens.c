/* tuned_lens.c — the tuned lens (ks_tuned_lens.h): per-layer affine translators before the
 * logit lens, their training data (resid_post of every layer), the training (Adam on the mean
 * KL(final ‖ lens) with a dedicated backward through the final RMSNorm and the unembedding),
 * the evaluation, and the safetensors file.
 *
 * Contract of the backward (as model/backward.c): activations are written (=), parameter
 * gradients are written (=) per call too, since each step computes them afresh from one batch.
 *
 * Shapes: D = d_model, V = vocab, L = n_layers, n = rows of a batch. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ks_lens.h"
#include "ks_tuned_lens.h"
#include "ks_dump.h"
#include "model_private.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tuned_lens.c writes and reads safetensors (little-endian) with memcpy"
#endif

#define TL_FORMAT "koalascope-tuned-lens"
#define TL_VERSION "1"
#define TL_MAX_DIM 65536
#define TL_MAX_LAYERS 4096

struct ks_tuned_lens {
    ks_tuned_lens_identity id;
    float *w; /* (L, D, D): A_l row-major (out, in) */
    float *b; /* (L, D) */
};

struct ks_lens_data {
    int L, D;
    int64_t rows;
    float *resid; /* (L, rows, D) */
};

/* ------------------------------------------------------------------ identity */

/* The recorder's rule (ks_model_identity), so that a lens's model_sha256 equals a dump's. */
ks_status ks_tuned_lens_model_identity(const ks_model *m, ks_tuned_lens_identity *out,
                                       ks_error *err) {
    memset(out, 0, sizeof *out);
    out->d_model = m->cfg.dim;
    out->n_layers = m->cfg.n_layers;
    out->vocab_size = m->cfg.vocab_size;
    if (!m->path) return KS_OK; /* a model from memory: no identity to compare */
    const char *of = "weights";
    char tokfile[8];
    ks_status st = ks_model_identity(m->path, out->model_sha256, &of, tokfile, sizeof tokfile, err);
    snprintf(out->model_sha256_of, sizeof out->model_sha256_of, "%s", of);
    return st;
}

/* ------------------------------------------------------------------ the lens */

static ks_status check_shape(int D, int L, int V, const char *what, ks_error *err) {
    if (D < 1 || D > TL_MAX_DIM || L < 1 || L > TL_MAX_LAYERS || V < 1 || V > KS_TOKENIZER_MAX_VOCAB)
        return ks_error_set(err, KS_ERR_ARG, "%s: d_model %d, n_layers %d, vocab_size %d out of range",
                            what, D, L, V);
    return KS_OK;
}

ks_status ks_tuned_lens_create(const ks_tuned_lens_identity *id, ks_tuned_lens **out,
                               ks_error *err) {
    *out = NULL;
    ks_status st = check_shape(id->d_model, id->n_layers, id->vocab_size, "tuned lens", err);
    if (st) return st;
    ks_tuned_lens *tl = calloc(1, sizeof *tl);
    size_t D = (size_t)id->d_model, L = (size_t)id->n_layers;
    if (tl) {
        tl->id = *id;
        tl->id.model_sha256[64] = 0;
        tl->id.model_sha256_of[15] = 0;
        tl->w = calloc(L * D * D, sizeof(float));
        tl->b = calloc(L * D, sizeof(float));
    }
    if (!tl || !tl->w || !tl->b) {
        ks_tuned_lens_free(tl);
        return ks_error_set(err, KS_ERR_NOMEM, "tuned lens: out of memory (%zu layers of %zu x %zu)",
                            L, D, D);
    }
    *out = tl;
    return KS_OK;
}

void ks_tuned_lens_free(ks_tuned_lens *tl) {
    if (!tl) return;
    free(tl->w);
    free(tl->b);
    free(tl);
}

const ks_tuned_lens_identity *ks_tuned_lens_id(const ks_tuned_lens *tl) { return &tl->id; }

float *ks_tuned_lens_weight(ks_tuned_lens *tl, int layer) {
    if (layer < 0 || layer >= tl->id.n_layers) return NULL;
    return tl->w + (size_t)layer * tl->id.d_model * tl->id.d_model;
}

float *ks_tuned_lens_bias(ks_tuned_lens *tl, int layer) {
    if (layer < 0 || layer >= tl->id.n_layers) return NULL;
    return tl->b + (size_t)layer * tl->id.d_model;
}

/* y (n, D) = x + x Aᵀ + b */
static void translate(const float *A, const float *b, int D, const float *x, int n, float *y) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, D, D, 1.0f, x, D, A, D, 0.0f, y, D);
    for (size_t i = 0; i < (size_t)n; i++)
        for (int d = 0; d < D; d++) y[i * D + d] = x[i * D + d] + (y[i * D + d] + b[d]);
}

ks_status ks_tuned_lens_translate(const ks_tuned_lens *tl, int layer, const float *x, int n,
                                  float *y, ks_error *err) {
    if (layer < 0 || layer >= tl->id.n_layers || n < 0)
        return ks_error_set(err, KS_ERR_ARG, "tuned lens: layer %d of %d", layer, tl->id.n_layers);
    if (n == 0) return KS_OK;
    int D = tl->id.d_model;
    translate(tl->w + (size_t)layer * D * D, tl->b + (size_t)layer * D, D, x, n, y);
    return KS_OK;
}

static ks_status check_model(const ks_tuned_lens_identity *id, const ks_model *m, ks_error *err) {
    const ks_config *c = &m->cfg;
    if (c->dim != id->d_model || c->n_layers != id->n_layers || c->vocab_size != id->vocab_size)
        return ks_error_set(err, KS_ERR_ARG, "tuned lens for d_model %d, %d layers, vocab %d used "
                            "with a model of %d, %d, %d", id->d_model, id->n_layers, id->vocab_size,
                            c->dim, c->n_layers, c->vocab_size);
    return KS_OK;
}

ks_status ks_tuned_lens_apply(const ks_tuned_lens *tl, const ks_model *m, int layer,
                              const float *x, int n, float *logits, ks_error *err) {
    ks_status st = check_model(&tl->id, m, err);
    if (st) return st;
    if (n <= 0) return n < 0 ? ks_error_set(err, KS_ERR_ARG, "tuned lens: %d rows", n) : KS_OK;
    float *y = malloc((size_t)n * tl->id.d_model * sizeof(float));
    if (!y) return ks_error_set(err, KS_ERR_NOMEM, "tuned lens: out of memory");
    st = ks_tuned_lens_translate(tl, layer, x, n, y, err);
    if (!st) st = ks_logit_lens(m, y, n, logits, err);
    free(y);
    return st;
}

/* ------------------------------------------------------------------ training data */

typedef struct {
    ks_lens_data *d;
    int64_t base; /* first row of the sequence */
    int n;        /* rows kept of it */
    int64_t *seen;
} collect_ctx;

static bool collect_hook(const ks_hook_tensor *t, bool ask, void *user) {
    collect_ctx *c = user;
    if (ask) return t->point == KS_HOOK_RESID_POST;
    int D = c->d->D;
    for (int64_t i = 0; i < t->shape[0]; i++) {
        int64_t r = t->pos0 + i;
        if (r < 0 || r >= c->n) continue;
        memcpy(c->d->resid + ((size_t)t->layer * c->d->rows + c->base + r) * D,
               t->data + (size_t)i * D, (size_t)D * sizeof(float));
        c->seen[t->layer]++;
    }
    return false;
}

ks_status ks_lens_data_collect(const ks_model *m, const int *const *seqs, const int *lens,
                               int n_seqs, int64_t max_rows, const ks_session_options *so,
                               ks_lens_data **out, ks_error *err) {
    *out = NULL;
    ks_session *s = NULL;
    ks_status st = ks_session_create(m, so, &s, err);
    if (st) return st;
    const int L = m->cfg.n_layers, D = m->cfg.dim, ctx = ks_session_max_seq(s);
    int64_t rows = 0;
    int *take = calloc((size_t)(n_seqs > 0 ? n_seqs : 1), sizeof *take);
    int64_t *seen = calloc((size_t)L, sizeof *seen);
    ks_lens_data *d = calloc(1, sizeof *d);
    if (!take || !seen || !d) {
        st = ks_error_set(err, KS_ERR_NOMEM, "lens data: out of memory");
        goto out;
    }
    for (int i = 0; i < n_seqs; i++) {
        int k = lens[i] < ctx ? lens[i] : ctx;
        if (k < 0) k = 0;
        if (max_rows > 0 && rows + k > max_rows) k = (int)(max_rows - rows);
        take[i] = k;
        rows += k;
    }
    if (rows == 0) {
        st = ks_error_set(err, KS_ERR_ARG, "lens data: no tokens to run");
        goto out;
    }
    d->L = L;
    d->D = D;
    d->rows = rows;
    d->resid = malloc((size_t)L * rows * D * sizeof(float));
    if (!d->resid) {
        st = ks_error_set(err, KS_ERR_NOMEM, "lens data: out of memory for %lld rows x %d layers x %d",
                          (long long)rows, L, D);
        goto out;
    }
    collect_ctx c = {.d = d, .seen = seen};
    ks_session_set_hook(s, collect_hook, &c);
    ks_session_set_hook_read_only(s, true);
    for (int i = 0; i < n_seqs && !st; i++) {
        if (take[i] == 0) continue;
        for (int j = 0; j < take[i]; j++)
            if (seqs[i][j] < 0 || seqs[i][j] >= m->cfg.vocab_size) {
                st = ks_error_set(err, KS_ERR_RANGE, "lens data: sequence %d: token %d at %d is not "
                                  "an id of this model", i, seqs[i][j], j);
                goto out;
            }
        c.n = take[i];
        ks_session_reset(s);
        st = ks_session_forward(s, seqs[i], take[i], KS_LOGITS_NONE, NULL, err);
        c.base += take[i];
    }
    for (int l = 0; l < L && !st; l++)
        if (seen[l] != rows)
            st = ks_error_set(err, KS_ERR_INTERNAL, "lens data: blocks.%d.hook_resid_post gave %lld "
                              "of %lld rows", l, (long long)seen[l], (long long)rows);
out:
    ks_session_free(s);
    free(take);
    free(seen);
    if (st) ks_lens_data_free(d);
    else *out = d;
    return st;
}

void ks_lens_data_free(ks_lens_data *d) {
    if (!d) return;
    free(d->resid);
    free(d);
}

int64_t ks_lens_data_rows(const ks_lens_data *d) { return d->rows; }

const float *ks_lens_data_resid(const ks_lens_data *d, int layer) {
    if (layer < 0 || layer >= d->L) return NULL;
    return d->resid + (size_t)layer * d->rows * d->D;
}

/* ------------------------------------------------------------------ head: norm + unembed */

/* The final RMSNorm and the output matrix in f32, for GEMMs over a batch. */
typedef struct {
    int D, V;
    float eps;
    const float *g; /* (D) final norm */
    const float *W; /* (V, D) */
    float *W_owned; /* when the output is stored in another dtype */
} lens_head;

static ks_status head_open(const ks_model *m, lens_head *h, ks_error *err) {
    memset(h, 0, sizeof *h);
    h->D = m->cfg.dim;
    h->V = m->cfg.vocab_size;
    h->eps = m->cfg.rms_eps;
    h->g = m->final_norm;
    if (m->output.dtype == KS_DTYPE_F32 && ((uintptr_t)m->output.data & 3) == 0) {
        h->W = m->output.data;
        return KS_OK;
    }
    h->W_owned = malloc((size_t)h->V * h->D * sizeof(float));
    if (!h->W_owned) return ks_error_set(err, KS_ERR_NOMEM, "tuned lens: out of memory for the "
                                         "f32 output matrix (%d x %d)", h->V, h->D);
    size_t rb = ks_dtype_row_bytes(m->output.dtype, (size_t)h->D);
    for (int v = 0; v < h->V; v++)
        ks_dtype_to_f32(m->output.dtype, (const unsigned char *)m->output.data + (size_t)v * rb,
                        h->W_owned + (size_t)v * h->D, (size_t)h->D);
    h->W = h->W_owned;
    return KS_OK;
}

static void head_close(lens_head *h) { free(h->W_owned); }

/* Rows [i0, i1) of this thread when n rows are shared by the OpenMP team (one chunk each, in
 * thread order: the same thread count gives the same partition, hence the same bytes). */
static void my_rows(int n, int *i0, int *i1) {
#ifdef _OPENMP
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    int t = 0, nt = 1;
#endif
    *i0 = (int)((int64_t)n * t / nt);
    *i1 = (int)((int64_t)n * (t + 1) / nt);
}

/* Rows [i0, i1): yn = RMSNorm(y) as forward.c and lens.c compute it, r its 1/rms, z = yn Wᵀ. */
static void head_rows(const lens_head *h, const float *y, int i0, int i1, float *yn, float *r,
                      float *z) {
    const int D = h->D;
    if (i1 <= i0) return;
    for (int i = i0; i < i1; i++) {
        const float *yi = y + (size_t)i * D;
        double ss = 0.0;
        for (int d = 0; d < D; d++) ss += (double)yi[d] * yi[d];
        float ri = 1.0f / sqrtf((float)(ss / D) + h->eps);
        r[i] = ri;
        for (int d = 0; d < D; d++) yn[(size_t)i * D + d] = h->g[d] * (yi[d] * ri);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i1 - i0, h->V, D, 1.0f,
                yn + (size_t)i0 * D, D, h->W, D, 0.0f, z + (size_t)i0 * h->V, h->V);
}

/* Rows [i0, i1) of reference logits z -> log p and p. */
static void ref_rows(const float *z0, int i0, int i1, int V, float *lp, float *p) {
    for (int i = i0; i < i1; i++) {
        const float *z = z0 + (size_t)i * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        double s = 0.0;
        for (int v = 0; v < V; v++) {
            float e = expf(z[v] - mx);
            p[(size_t)i * V + v] = e;
            s += e;
        }
        float ls = (float)log(s), inv = (float)(1.0 / s);
        for (int v = 0; v < V; v++) {
            lp[(size_t)i * V + v] = (z[v] - mx) - ls;
            p[(size_t)i * V + v] *= inv;
        }
    }
}

/* Rows [i0, i1): kl_i = KL(p_i ‖ softmax(z_i)) = Σ p lp − Σ p (z − mx) + log Σ e^(z − mx) (Σ p = 1
 * up to rounding, kept exact by multiplying); with scale > 0, z becomes dJ/dz = scale (q − p). */
static void kl_rows(float *z0, const float *lp0, const float *p0, int i0, int i1, int V,
                    float scale, double *kl) {
    for (int i = i0; i < i1; i++) {
        float *z = z0 + (size_t)i * V;
        const float *lp = lp0 + (size_t)i * V, *p = p0 + (size_t)i * V;
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        double s = 0.0, plp = 0.0, pz = 0.0, ps = 0.0;
        for (int v = 0; v < V; v++) {
            float zc = z[v] - mx;
            plp += (double)p[v] * lp[v];
            pz += (double)p[v] * zc;
            ps += p[v];
            float e = expf(zc);
            s += e;
            if (scale > 0.0f) z[v] = e;
        }
        double k = plp - pz + log(s) * ps;
        kl[i] = k > 0.0 ? k : 0.0;
        if (scale > 0.0f) {
            float inv = (float)(1.0 / s);
            for (int v = 0; v < V; v++) z[v] = scale * (z[v] * inv - p[v]);
        }
    }
}

/* Work buffers of one batch of n rows. */
typedef struct {
    int n;
    float *y, *yn, *dn, *dy; /* (n, D) */
    float *r;                /* (n) */
    float *z, *lp, *p;       /* (n, V) */
    double *kl;              /* (n) */
} batch_ws;

static void ws_free(batch_ws *w) {
    free(w->y);
    free(w->yn);
    free(w->dn);
    free(w->dy);
    free(w->r);
    free(w->z);
    free(w->lp);
    free(w->p);
    free(w->kl);
    memset(w, 0, sizeof *w);
}

static ks_status ws_alloc(batch_ws *w, int n, int D, int V, ks_error *err) {
    memset(w, 0, sizeof *w);
    w->n = n;
    size_t nd = (size_t)n * D * sizeof(float), nv = (size_t)n * V * sizeof(float);
    w->y = malloc(nd);
    w->yn = malloc(nd);
    w->dn = malloc(nd);
    w->dy = malloc(nd);
    w->r = malloc((size_t)n * sizeof(float));
    w->z = malloc(nv);
    w->lp = malloc(nv);
    w->p = malloc(nv);
    w->kl = malloc((size_t)n * sizeof(double));
    if (!w->y || !w->yn || !w->dn || !w->dy || !w->r || !w->z || !w->lp || !w->p || !w->kl) {
        ws_free(w);
        return ks_error_set(err, KS_ERR_NOMEM, "tuned lens: out of memory for a batch of %d rows "
                            "(%d x %d logits)", n, n, V);
    }
    return KS_OK;
}

/* Worth a team of threads? (A parallel region costs microseconds.) */
#define TL_PAR(n, h) ((size_t)(n) * (h)->V * (h)->D > 262144)

/* The reference of n rows x of the last layer into w->lp, w->p. */
static void reference(const lens_head *h, const float *x, int n, batch_ws *w) {
#pragma omp parallel if (TL_PAR(n, h))
    {
        int i0, i1;
        my_rows(n, &i0, &i1);
        head_rows(h, x, i0, i1, w->yn, w->r, w->z);
        ref_rows(w->z, i0, i1, h->V, w->lp, w->p);
    }
}

/* The objective of one layer on n rows x, against w->lp/w->p (already set), and its gradient:
 * returns J = mean KL; with grad, w->dy (n, D) = dJ/dy, and dA (D, D), db (D) when not NULL.
 * Each thread takes a block of rows forward and back; then a block of dA's rows. */
static double layer_objective(const lens_head *h, const float *A, const float *b, const float *x,
                              int n, batch_ws *w, bool grad, float *dA, float *db) {
    const int D = h->D, V = h->V;
#pragma omp parallel if (TL_PAR(n, h))
    {
        int i0, i1;
        my_rows(n, &i0, &i1);
        if (i1 > i0) translate(A, b, D, x + (size_t)i0 * D, i1 - i0, w->y + (size_t)i0 * D);
        head_rows(h, w->y, i0, i1, w->yn, w->r, w->z);
        kl_rows(w->z, w->lp, w->p, i0, i1, V, grad ? 1.0f / n : 0.0f, w->kl);
        if (grad && i1 > i0) {
            /* dn = dz · W: back through the unembedding */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, D, V, 1.0f,
                        w->z + (size_t)i0 * V, V, h->W, D, 0.0f, w->dn + (size_t)i0 * D, D);
            /* back through yn = g ⊙ y r, r = (mean(y²) + eps)^(-1/2): dr/dy_j = −r³ y_j / D */
            for (int i = i0; i < i1; i++) {
                const float *yi = w->y + (size_t)i * D, *dni = w->dn + (size_t)i * D;
                float *dyi = w->dy + (size_t)i * D;
                double s = 0.0;
                for (int d = 0; d < D; d++) s += (double)h->g[d] * dni[d] * yi[d];
                double ri = w->r[i], c = ri * ri * ri * s / D;
                for (int d = 0; d < D; d++) dyi[d] = (float)(ri * h->g[d] * dni[d] - c * yi[d]);
            }
        }
        if (grad && (dA || db)) {
#pragma omp barrier
            int d0, d1;
            my_rows(D, &d0, &d1);
            if (dA && d1 > d0) /* dA[d0..d1) = dy[:, d0..d1)ᵀ x */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d1 - d0, D, n, 1.0f, w->dy + d0,
                            D, x, D, 0.0f, dA + (size_t)d0 * D, D);
            if (db)
                for (int d = d0; d < d1; d++) {
                    double s = 0.0;
                    for (int i = 0; i < n; i++) s += w->dy[(size_t)i * D + d];
                    db[d] = (float)s;
                }
        }
    }
    double J = 0.0;
    for (int i = 0; i < n; i++) J += w->kl[i]; /* in order: deterministic */
    return J / n;
}

ks_status ks_tuned_lens_layer_grad(const ks_tuned_lens *tl, const ks_model *m, int layer,
                                   const float *x, const float *ref, int n, double *J, float *dy,
                                   float *dA, float *db, ks_error *err) {
    ks_status st = check_model(&tl->id, m, err);
    if (st) return st;
    if (layer < 0 || layer >= tl->id.n_layers || n < 1)
        return ks_error_set(err, KS_ERR_ARG, "tuned lens: layer %d of %d, %d rows", layer,
                            tl->id.n_layers, n);
    lens_head h;
    batch_ws w = {0};
    if ((st = head_open(m, &h, err))) return st;
    if ((st = ws_alloc(&w, n, h.D, h.V, err))) goto out;
    const int D = h.D;
    ref_rows(ref, 0, n, h.V, w.lp, w.p);
    bool grad = dy || dA || db;
    *J = layer_objective(&h, tl->w + (size_t)layer * D * D, tl->b + (size_t)layer * D, x, n, &w,
                         grad, dA, db);
    if (dy) memcpy(dy, w.dy, (size_t)n * D * sizeof(float));
out:
    ws_free(&w);
    head_close(&h);
    return st;
}

/* ------------------------------------------------------------------ training */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void shuffle(int64_t *perm, int64_t n, uint64_t *rng) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64(rng) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

ks_status ks_tuned_lens_train(ks_tuned_lens *tl, const ks_model *m, const ks_lens_data *d,
                              const ks_tuned_lens_train_options *o, ks_error *err) {
    ks_status st = check_model(&tl->id, m, err);
    if (st) return st;
    if (d->L != tl->id.n_layers || d->D != tl->id.d_model)
        return ks_error_set(err, KS_ERR_ARG, "tuned lens: data of %d layers x %d for a lens of %d x %d",
                            d->L, d->D, tl->id.n_layers, tl->id.d_model);
    ks_tuned_lens_train_options def = {0};
    if (!o) o = &def;
    const int steps = o->steps > 0 ? o->steps : 250;
    const float lr = o->lr > 0 ? o->lr : 2e-3f;
    int B = o->batch_rows > 0 ? o->batch_rows : 256;
    if (B > d->rows) B = (int)d->rows;
    const int L = d->L, D = d->D;
    const size_t P = (size_t)D * D + D; /* parameters of one translator */
    const float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
    lens_head h;
    batch_ws w = {0};
    float *adam = NULL, *grad = NULL, *xb = NULL;
    int64_t *perm = NULL;
    if ((st = head_open(m, &h, err))) return st;
    if ((st = ws_alloc(&w, B, D, h.V, err))) goto out;
    adam = calloc(2 * (size_t)L * P, sizeof(float)); /* (L, P) first moments, then second */
    grad = malloc(P * sizeof(float));
    xb = malloc((size_t)L * B * D * sizeof(float));
    perm = malloc((size_t)d->rows * sizeof *perm);
    if (!adam || !grad || !xb || !perm) {
        st = ks_error_set(err, KS_ERR_NOMEM, "tuned lens: out of memory for the optimiser state");
        goto out;
    }
    uint64_t rng = o->seed;
    for (int64_t i = 0; i < d->rows; i++) perm[i] = i;
    shuffle(perm, d->rows, &rng);
    int64_t cursor = 0;
    const int warm = steps / 10 > 0 ? steps / 10 : 1;
    for (int t = 0; t < steps; t++) {
        /* the next B rows of a shuffled epoch */
        for (int i = 0; i < B; i++) {
            if (cursor == d->rows) {
                shuffle(perm, d->rows, &rng);
                cursor = 0;
            }
            int64_t r = perm[cursor++];
            for (int l = 0; l < L; l++)
                memcpy(xb + ((size_t)l * B + i) * D, d->resid + ((size_t)l * d->rows + r) * D,
                       (size_t)D * sizeof(float));
        }
        /* the reference: the last layer's lens is the model's output */
        reference(&h, xb + (size_t)(L - 1) * B * D, B, &w);
        float lr_t = t < warm ? lr * (float)(t + 1) / warm
                              : lr * (float)(steps - t) / (float)(steps - warm + 1);
        double bc1 = 1.0 - pow(beta1, t + 1), bc2 = 1.0 - pow(beta2, t + 1), Jsum = 0.0;
        for (int l = 0; l + 1 < L; l++) { /* the last layer's translator stays zero */
            float *A = tl->w + (size_t)l * D * D, *b = tl->b + (size_t)l * D;
            Jsum += layer_objective(&h, A, b, xb + (size_t)l * B * D, B, &w, true, grad,
                                    grad + (size_t)D * D);
            float *mo = adam + (size_t)l * P, *ve = adam + ((size_t)L + l) * P;
            for (size_t k = 0; k < P; k++) {
                mo[k] = beta1 * mo[k] + (1 - beta1) * grad[k];
                ve[k] = beta2 * ve[k] + (1 - beta2) * grad[k] * grad[k];
                float step = (float)(lr_t * (mo[k] / bc1) / (sqrt(ve[k] / bc2) + adam_eps));
                if (k < (size_t)D * D) A[k] -= step;
                else b[k - (size_t)D * D] -= step;
            }
        }
        if (o->progress && ((t + 1) % 10 == 0 || t + 1 == steps))
            o->progress(t + 1, steps, L > 1 ? Jsum / (L - 1) : 0.0, o->user);
    }
out:
    free(adam);
    free(grad);
    free(xb);
    free(perm);
    ws_free(&w);
    head_close(&h);
    return st;
}

ks_status ks_tuned_lens_eval(const ks_tuned_lens *tl, const ks_model *m, const ks_lens_data *d,
                             double *kl_logit, double *kl_tuned, ks_error *err) {
    ks_status st = check_model(&tl->id, m, err);
    if (st) return st;
    if (d->L != tl->id.n_layers || d->D != tl->id.d_model)
        return ks_error_set(err, KS_ERR_ARG, "tuned lens: data of %d layers x %d for a lens of %d x %d",
                            d->L, d->D, tl->id.n_layers, tl->id.d_model);
    const int L = d->L, D = d->D, B0 = 256;
    lens_head h;
    batch_ws w = {0};
    double *sl = calloc((size_t)L, sizeof(double)), *stn = calloc((size_t)L, sizeof(double));
    if ((st = head_open(m, &h, err))) goto out;
    if (!sl || !stn) {
        st = ks_error_set(err, KS_ERR_NOMEM, "tuned lens: out of memory");
        goto out;
    }
    if ((st = ws_alloc(&w, B0, D, h.V, err))) goto out;
    for (int64_t r0 = 0; r0 < d->rows; r0 += B0) {
        int n = (int)(d->rows - r0 < B0 ? d->rows - r0 : B0);
        reference(&h, d->resid + ((size_t)(L - 1) * d->rows + r0) * D, n, &w);
        for (int l = 0; l < L; l++) {
            const float *x = d->resid + ((size_t)l * d->rows + r0) * D;
#pragma omp parallel if (TL_PAR(n, &h))
            {
                int i0, i1;
                my_rows(n, &i0, &i1);
                head_rows(&h, x, i0, i1, w.yn, w.r, w.z);
                kl_rows(w.z, w.lp, w.p, i0, i1, h.V, 0.0f, w.kl);
            }
            for (int i = 0; i < n; i++) sl[l] += w.kl[i];
            layer_objective(&h, tl->w + (size_t)l * D * D, tl->b + (size_t)l * D, x, n, &w, false,
                            NULL, NULL);
            for (int i = 0; i < n; i++) stn[l] += w.kl[i]; /* summed as the logit lens's above */
        }
    }
    for (int l = 0; l < L; l++) {
        if (kl_logit) kl_logit[l] = sl[l] / (double)d->rows;
        if (kl_tuned) kl_tuned[l] = stn[l] / (double)d->rows;
    }
out:
    free(sl);
    free(stn);
    ws_free(&w);
    head_close(&h);
    return st;
}

/* ------------------------------------------------------------------ files */

static json_t *meta_int(long long v) {
    char s[32];
    snprintf(s, sizeof s, "%lld", v);
    return json_string(s);
}

ks_status ks_tuned_lens_save(const ks_tuned_lens *tl, const ks_tuned_lens_provenance *prov,
                             const char *path, ks_error *err) {
    const int L = tl->id.n_layers, D = tl->id.d_model;
    const size_t wbytes = (size_t)D * D * sizeof(float), bbytes = (size_t)D * sizeof(float);
    ks_status st = KS_OK;
    char *hdr = NULL, *tmp = NULL;
    FILE *f = NULL;
    json_t *root = json_object(), *meta = json_object();
    if (!root || !meta) {
        json_decref(meta);
        st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_object_set_new(root, "__metadata__", meta);
    json_object_set_new(meta, "format", json_string(TL_FORMAT));
    json_object_set_new(meta, "version", json_string(TL_VERSION));
    json_object_set_new(meta, "d_model", meta_int(D));
    json_object_set_new(meta, "n_layers", meta_int(L));
    json_object_set_new(meta, "vocab_size", meta_int(tl->id.vocab_size));
    json_object_set_new(meta, "model_sha256", json_string(tl->id.model_sha256));
    json_object_set_new(meta, "model_sha256_of", json_string(tl->id.model_sha256_of));
    json_object_set_new(meta, "optimizer", json_string("adam"));
    if (prov) {
        char s[64];
        if (prov->steps) json_object_set_new(meta, "steps", meta_int(prov->steps));
        if (prov->lr > 0) {
            snprintf(s, sizeof s, "%.9g", (double)prov->lr);
            json_object_set_new(meta, "lr", json_string(s));
        }
        snprintf(s, sizeof s, "%llu", (unsigned long long)prov->seed);
        json_object_set_new(meta, "seed", json_string(s));
        if (prov->train_rows) json_object_set_new(meta, "train_tokens", meta_int(prov->train_rows));
        if (prov->data_source) json_object_set_new(meta, "data", json_string(prov->data_source));
    }
    size_t off = 0;
    for (int l = 0; l < L; l++) {
        char name[48];
        snprintf(name, sizeof name, "layers.%d.weight", l);
        json_object_set_new(root, name, json_pack("{s:s, s:[i,i], s:[I,I]}", "dtype", "F32", "shape",
                                                  D, D, "data_offsets", (json_int_t)off,
                                                  (json_int_t)(off + wbytes)));
        off += wbytes;
        snprintf(name, sizeof name, "layers.%d.bias", l);
        json_object_set_new(root, name, json_pack("{s:s, s:[i], s:[I,I]}", "dtype", "F32", "shape", D,
                                                  "data_offsets", (json_int_t)off,
                                                  (json_int_t)(off + bbytes)));
        off += bbytes;
    }
    hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!hdr) {
        st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* pad the header with spaces so the data starts 8-byte aligned (the spec allows
     * trailing whitespace in the header) */
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
    size_t tl_len = strlen(path) + 5;
    tmp = malloc(tl_len);
    if (!tmp) {
        st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(tmp, tl_len, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f) {
        st = ks_error_set(err, KS_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        goto out;
    }
    uint64_t h64 = padded;
    bool ok = fwrite(&h64, 8, 1, f) == 1 && fwrite(hdr, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int l = 0; ok && l < L; l++)
        ok = fwrite(tl->w + (size_t)l * D * D, 1, wbytes, f) == wbytes &&
             fwrite(tl->b + (size_t)l * D, 1, bbytes, f) == bbytes;
    if (ok) ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = false;
    f = NULL;
    if (!ok) {
        st = ks_error_set(err, KS_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        remove(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = ks_error_set(err, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
    }
out:
    if (f) fclose(f);
    free(tmp);
    free(hdr);
    json_decref(root);
    return st;
}

/* A metadata field that must be a decimal integer in [lo, hi]. */
static ks_status meta_get_int(json_t *meta, const char *key, long lo, long hi, const char *source,
                              int *out, ks_error *err) {
    json_t *j = json_object_get(meta, key);
    if (!json_is_string(j))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field '%s' is missing or not a "
                            "string", source, key);
    const char *s = json_string_value(j);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field '%s' is '%.32s', not an "
                            "integer in %ld..%ld", source, key, s, lo, hi);
    *out = (int)v;
    return KS_OK;
}

static ks_status meta_get_str(json_t *meta, const char *key, bool required, const char *source,
                              const char **out, ks_error *err) {
    json_t *j = json_object_get(meta, key);
    *out = "";
    if (!j && !required) return KS_OK;
    if (!json_is_string(j))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field '%s' is missing or not a "
                            "string", source, key);
    *out = json_string_value(j);
    return KS_OK;
}

/* One tensor: present, F32, the shape expected; values finite. */
static ks_status take_tensor(ks_tensor_table *tab, const char *name, int nd, const uint64_t *dims,
                             const char *source, float *dst, ks_error *err) {
    ks_tensor_info *t = ks_tensor_table_find(tab, name);
    if (!t) return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s' is missing", source, name);
    t->used = true;
    if (t->dtype != KS_DTYPE_F32)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'dtype' is %s, expected F32",
                            source, name, ks_dtype_name(t->dtype));
    bool same = t->n_dims == nd;
    for (int i = 0; same && i < nd; i++) same = t->dims[i] == dims[i];
    if (!same && nd == 2)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape' is not [%llu, %llu] "
                            "(d_model)", source, name, (unsigned long long)dims[0],
                            (unsigned long long)dims[1]);
    if (!same)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape' is not [%llu] "
                            "(d_model)", source, name, (unsigned long long)dims[0]);
    memcpy(dst, t->data, t->nbytes);
    for (uint64_t i = 0; i < t->n_elems; i++)
        if (!isfinite(dst[i]))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': element %llu is not finite",
                                source, name, (unsigned long long)i);
    return KS_OK;
}

static bool is_hex64(const char *s) {
    if (strlen(s) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

ks_status ks_tuned_lens_load_mem(const uint8_t *data, size_t len, const char *source,
                                 const ks_tuned_lens_identity *expect, ks_tuned_lens **out,
                                 ks_error *err) {
    *out = NULL;
    ks_tensor_table tab = {0};
    json_t *root = NULL;
    ks_tuned_lens *tl = NULL;
    ks_status st = ks_safetensors_parse(data, len, source, &tab, err);
    if (st) {
        /* anything the container reader refuses (an unknown dtype included) is a malformed
         * lens file */
        if (st != KS_ERR_NOMEM) {
            st = KS_ERR_FORMAT;
            if (err) err->code = st;
        }
        goto out;
    }
    uint64_t hlen;
    memcpy(&hlen, data, 8); /* validated by the parse */
    root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, NULL);
    json_t *meta = root ? json_object_get(root, "__metadata__") : NULL;
    if (!json_is_object(meta)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: header field '__metadata__' is missing (not a "
                          "koalascope tuned lens)", source);
        goto out;
    }
    const char *fmt, *ver, *sha, *of;
    ks_tuned_lens_identity id = {0};
    if ((st = meta_get_str(meta, "format", true, source, &fmt, err))) goto out;
    if (strcmp(fmt, TL_FORMAT)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field 'format' is '%.40s', not '"
                          TL_FORMAT "'", source, fmt);
        goto out;
    }
    if ((st = meta_get_str(meta, "version", true, source, &ver, err))) goto out;
    if (strcmp(ver, TL_VERSION)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field 'version' is '%.16s'; this "
                          "koalascope reads version " TL_VERSION, source, ver);
        goto out;
    }
    if ((st = meta_get_int(meta, "d_model", 1, TL_MAX_DIM, source, &id.d_model, err)) ||
        (st = meta_get_int(meta, "n_layers", 1, TL_MAX_LAYERS, source, &id.n_layers, err)) ||
        (st = meta_get_int(meta, "vocab_size", 1, KS_TOKENIZER_MAX_VOCAB, source, &id.vocab_size,
                           err)) ||
        (st = meta_get_str(meta, "model_sha256", true, source, &sha, err)) ||
        (st = meta_get_str(meta, "model_sha256_of", false, source, &of, err)))
        goto out;
    if (*sha && !is_hex64(sha)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field 'model_sha256' is not 64 "
                          "lower-case hex digits (or empty)", source);
        goto out;
    }
    if (strlen(of) >= sizeof id.model_sha256_of) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ field 'model_sha256_of' is longer "
                          "than %zu bytes", source, sizeof id.model_sha256_of - 1);
        goto out;
    }
    memcpy(id.model_sha256, sha, strlen(sha) + 1);
    memcpy(id.model_sha256_of, of, strlen(of) + 1);
    /* the tensors must fit the file before anything of their size is allocated */
    uint64_t D = (uint64_t)id.d_model, need = (uint64_t)id.n_layers * (D * D + D) * 4;
    if (need > len) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: __metadata__ fields 'd_model' %d and 'n_layers' %d "
                          "need %llu bytes of translators; the file has %zu", source, id.d_model,
                          id.n_layers, (unsigned long long)need, len);
        goto out;
    }
    if ((st = ks_tensor_table_index(&tab, err))) {
        if (st != KS_ERR_NOMEM) {
            st = KS_ERR_FORMAT;
            if (err) err->code = st;
        }
        goto out;
    }
    if ((st = ks_tuned_lens_create(&id, &tl, err))) goto out;
    for (int l = 0; l < id.n_layers; l++) {
        char name[48];
        uint64_t wd[2] = {D, D}, bd[1] = {D};
        snprintf(name, sizeof name, "layers.%d.weight", l);
        if ((st = take_tensor(&tab, name, 2, wd, source, ks_tuned_lens_weight(tl, l), err))) goto out;
        snprintf(name, sizeof name, "layers.%d.bias", l);
        if ((st = take_tensor(&tab, name, 1, bd, source, ks_tuned_lens_bias(tl, l), err))) goto out;
    }
    for (size_t i = 0; i < tab.n; i++)
        if (!tab.v[i].used) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%.64s' is not a translator of layers "
                              "0..%d", source, tab.v[i].name, id.n_layers - 1);
            goto out;
        }
    /* the model it was trained for */
    if (expect) {
        const char *field = NULL;
        char have[72] = "", want[72] = "";
        if (id.d_model != expect->d_model) {
            field = "d_model";
            snprintf(have, sizeof have, "%d", id.d_model);
            snprintf(want, sizeof want, "%d", expect->d_model);
        } else if (id.n_layers != expect->n_layers) {
            field = "n_layers";
            snprintf(have, sizeof have, "%d", id.n_layers);
            snprintf(want, sizeof want, "%d", expect->n_layers);
        } else if (id.vocab_size != expect->vocab_size) {
            field = "vocab_size";
            snprintf(have, sizeof have, "%d", id.vocab_size);
            snprintf(want, sizeof want, "%d", expect->vocab_size);
        } else if (id.model_sha256[0] && expect->model_sha256[0] &&
                   strcmp(id.model_sha256, expect->model_sha256)) {
            field = "model_sha256";
            snprintf(have, sizeof have, "%s", id.model_sha256);
            snprintf(want, sizeof want, "%s", expect->model_sha256);
        }
        if (field) {
            st = ks_error_set(err, KS_ERR_ARG, "%s: a tuned lens of another model: __metadata__ field "
                              "'%s' is %s, the model's is %s", source, field, have, want);
            goto out;
        }
    }
out:
    json_decref(root);
    ks_tensor_table_free(&tab);
    if (st) ks_tuned_lens_free(tl);
    else *out = tl;
    return st;
}

ks_status ks_tuned_lens_load(const char *path, const ks_tuned_lens_identity *expect,
                             ks_tuned_lens **out, ks_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    ks_status st = KS_OK;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = ks_error_set(err, KS_ERR_IO, "%s: not a regular file", path);
        goto out;
    }
    size_t n = (size_t)sb.st_size;
    buf = malloc(n ? n : 1);
    if (!buf) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
        goto out;
    }
    if (fread(buf, 1, n, f) != n) {
        st = ks_error_set(err, KS_ERR_IO, "%s: read failed", path);
        goto out;
    }
    st = ks_tuned_lens_load_mem(buf, n, path, expect, out, err);
out:
    free(buf);
    fclose(f);
    return st;
}
