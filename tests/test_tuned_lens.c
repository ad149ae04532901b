/* test_tuned_lens.c — the tuned lens (probes/tuned_lens.c) on stories260K, with text the model
 * samples itself (no third-party text).
 *
 * Oracles and tolerances:
 *  1. A zero lens is the logit lens: ks_tuned_lens_apply equals ks_logit_lens bit for bit, and
 *     the evaluation gives the same KL to the last bit.
 *  2. The dedicated backward (ks_tuned_lens_layer_grad) against the engine's own backward: a
 *     ks_grad forward whose hook puts the translated rows at blocks.{L-1}.hook_resid_post (so
 *     the model's logits are the lens's), the same objective's dlogits computed here in double,
 *     and dJ/dy read by the backward hook there. J within 1e-5 relative; dy, dA = Σ dyᵀ x and
 *     db = Σ dy within 1e-4 of the largest |gradient| (both sides f32, summed in other orders).
 *  3. The same gradient against central finite differences of J computed here in double
 *     precision (h = 1e-4 on a double J: truncation ~1e-8, rounding ~1e-12): 40 coordinates of
 *     A and b, |fd − g| <= 2e-3 |g| + 1e-4 max |g|.
 *  4. Training: the held-out KL of the tuned lens is below the logit lens's at every layer but
 *     the last (where both are the model's output: KL < 1e-6, translator left at zero); the same
 *     seed gives the same bytes.
 *  5. Files: save → load → the same floats bit for bit, a second save the same bytes; a lens of
 *     another model (stories260K.gguf: another file, so another model_sha256; or another
 *     d_model) is refused with KS_ERR_ARG naming the file and the field; malformed files give
 *     KS_ERR_FORMAT naming the file and the field. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ks_lens.h"
#include "ks_tuned_lens.h"
#include "model_private.h"
#include "tap.h"

#define N_SEQ 40
#define N_TRAIN 32
#define SEQ_LEN 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t rng_state = 12345;
static double urand(void) { /* [0, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* ------------------------------------------------------------------ the engine's gradient */

typedef struct {
    int L, D, T;
    const float *y; /* (T, D) rows to substitute */
    float *dy;      /* (T, D) captured */
    int seen;
} sub_ctx;

static bool fwd_sub(const ks_hook_tensor *t, bool ask, void *user) {
    sub_ctx *c = user;
    bool mine = t->point == KS_HOOK_RESID_POST && t->layer == c->L - 1;
    if (ask) return mine;
    if (mine) memcpy(t->data, c->y, (size_t)c->T * c->D * sizeof(float));
    return false;
}

static bool bwd_read(const ks_hook_tensor *t, bool ask, void *user) {
    sub_ctx *c = user;
    bool mine = t->point == KS_HOOK_RESID_POST && t->layer == c->L - 1;
    if (ask) return mine;
    if (mine) {
        memcpy(c->dy, t->data, (size_t)c->T * c->D * sizeof(float));
        c->seen++;
    }
    return false;
}

/* J = mean KL(softmax(ref) ‖ softmax(z)) in double; dz = dJ/dz when not NULL */
static double kl_objective(const float *ref, const float *z, int T, int V, float *dz) {
    double J = 0.0;
    for (int t = 0; t < T; t++) {
        const float *a = ref + (size_t)t * V, *b = z + (size_t)t * V;
        double ma = -INFINITY, mb = -INFINITY, sa = 0, sb = 0;
        for (int v = 0; v < V; v++) ma = fmax(ma, a[v]), mb = fmax(mb, b[v]);
        for (int v = 0; v < V; v++) sa += exp(a[v] - ma), sb += exp(b[v] - mb);
        for (int v = 0; v < V; v++) {
            double lp = a[v] - ma - log(sa), lq = b[v] - mb - log(sb);
            J += exp(lp) * (lp - lq) / T;
            if (dz) dz[(size_t)t * V + v] = (float)((exp(lq) - exp(lp)) / T);
        }
    }
    return J;
}

/* J of translator (A, b) on rows x, all in double (the finite-difference oracle) */
static double j_double(const ks_model *m, const double *A, const double *b, const float *x,
                       const float *ref, int T) {
    const int D = m->cfg.dim, V = m->cfg.vocab_size;
    const float *W = m->output.data;
    double *y = malloc(sizeof(double) * D), *z = malloc(sizeof(double) * V), J = 0.0;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        double ss = 0;
        for (int i = 0; i < D; i++) {
            double s = xt[i] + b[i];
            for (int j = 0; j < D; j++) s += A[(size_t)i * D + j] * xt[j];
            y[i] = s;
            ss += s * s;
        }
        double r = 1.0 / sqrt(ss / D + m->cfg.rms_eps);
        for (int i = 0; i < D; i++) y[i] *= r * m->final_norm[i];
        double mz = -INFINITY, sz = 0, ma = -INFINITY, sa = 0;
        const float *a = ref + (size_t)t * V;
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int i = 0; i < D; i++) s += y[i] * W[(size_t)v * D + i];
            z[v] = s;
            mz = fmax(mz, s);
            ma = fmax(ma, a[v]);
        }
        for (int v = 0; v < V; v++) sz += exp(z[v] - mz), sa += exp(a[v] - ma);
        for (int v = 0; v < V; v++) {
            double lp = a[v] - ma - log(sa), lq = z[v] - mz - log(sz);
            J += exp(lp) * (lp - lq) / T;
        }
    }
    free(y);
    free(z);
    return J;
}

static double max_abs(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s = fmax(s, fabs(a[i]));
    return s;
}

static void test_gradient(const ks_model *m, const ks_lens_data *d, const int *seq, int T) {
    const int L = m->cfg.n_layers, D = m->cfg.dim, V = m->cfg.vocab_size, layer = 1;
    ks_error err = {0};
    ks_tuned_lens_identity id;
    ks_tuned_lens *tl = NULL;
    ks_grad *g = NULL;
    ks_tuned_lens_model_identity(m, &id, &err);
    if (ks_tuned_lens_create(&id, &tl, &err)) {
        tap_ok(0, "create: %s", err.msg);
        return;
    }
    float *A = ks_tuned_lens_weight(tl, layer), *bb = ks_tuned_lens_bias(tl, layer);
    for (int i = 0; i < D * D; i++) A[i] = (float)(0.04 * urand() - 0.02);
    for (int i = 0; i < D; i++) bb[i] = (float)(0.1 * urand() - 0.05);
    const float *x = ks_lens_data_resid(d, layer); /* sequence 0 is rows 0..T */
    float *ref = malloc(sizeof(float) * T * V), *y = malloc(sizeof(float) * T * D),
          *dy = malloc(sizeof(float) * T * D), *dye = calloc((size_t)T * D, sizeof(float)),
          *dA = malloc(sizeof(float) * D * D), *db = malloc(sizeof(float) * D),
          *dlog = malloc(sizeof(float) * T * V);
    double J = NAN;
    bool ok = !ks_logit_lens(m, ks_lens_data_resid(d, L - 1), T, ref, &err) &&
              !ks_tuned_lens_layer_grad(tl, m, layer, x, ref, T, &J, dy, dA, db, &err) &&
              !ks_tuned_lens_translate(tl, layer, x, T, y, &err);
    tap_ok(ok && J > 0.01, "dedicated backward runs: J = %.6f at layer %d, %d rows (%s)", J, layer,
           T, err.msg);

    /* 2. the engine's backward */
    ks_grad_options go = {.param_grads = false};
    sub_ctx c = {.L = L, .D = D, .T = T, .y = y, .dy = dye};
    double Je = NAN;
    if (ok && !ks_grad_create(m, &go, &g, &err)) {
        ks_grad_set_hooks(g, fwd_sub, bwd_read, &c);
        int Tg = 0, Vg = 0;
        if (!ks_grad_forward(g, seq, T, &err)) {
            const float *lg = ks_grad_logits(g, &Tg, &Vg);
            Je = kl_objective(ref, lg, T, V, dlog);
            ks_grad_backward(g, dlog, &err);
        }
    }
    tap_ok(fabs(J - Je) <= 1e-5 * fabs(Je), "J = %.7f, through the engine's forward %.7f (rel tol "
           "1e-5) %s", J, Je, err.msg);
    double s = max_abs(dye, (size_t)T * D), e = 0;
    for (int i = 0; i < T * D; i++) e = fmax(e, fabs(dy[i] - dye[i]));
    tap_ok(c.seen == 1 && s > 0 && e <= 1e-4 * s, "dJ/dy at blocks.%d.hook_resid_post: dedicated vs "
           "ks_grad backward max |diff| %.3g, max |dy| %.3g (tol 1e-4 relative)", L - 1, e, s);
    double *dAe = calloc((size_t)D * D, sizeof(double)), *dbe = calloc((size_t)D, sizeof(double));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) {
            dbe[i] += dye[(size_t)t * D + i];
            for (int j = 0; j < D; j++) dAe[(size_t)i * D + j] += (double)dye[(size_t)t * D + i] * x[(size_t)t * D + j];
        }
    double sA = 0, eA = 0, sb = 0, eb = 0;
    for (int i = 0; i < D * D; i++) sA = fmax(sA, fabs(dAe[i])), eA = fmax(eA, fabs(dA[i] - dAe[i]));
    for (int i = 0; i < D; i++) sb = fmax(sb, fabs(dbe[i])), eb = fmax(eb, fabs(db[i] - dbe[i]));
    tap_ok(sA > 0 && eA <= 1e-4 * sA && eb <= 1e-4 * sb, "dJ/dA, dJ/db: dedicated vs ks_grad's dy "
           "chained (dyᵀ x, Σ dy): max |diff| %.3g of %.3g, %.3g of %.3g (tol 1e-4 relative)", eA,
           sA, eb, sb);

    /* 3. finite differences of a double-precision J */
    double *Ad = malloc(sizeof(double) * D * D), *bd = malloc(sizeof(double) * D);
    for (int i = 0; i < D * D; i++) Ad[i] = A[i];
    for (int i = 0; i < D; i++) bd[i] = bb[i];
    double Jd = j_double(m, Ad, bd, x, ref, T);
    tap_ok(fabs(Jd - J) <= 1e-5 * Jd, "J in double %.8f vs dedicated (f32) %.8f (rel tol 1e-5)", Jd, J);
    double gmax = fmax(max_abs(dA, (size_t)D * D), max_abs(db, D)), worst = 0;
    int n_checked = 0, bad = 0;
    const double h = 1e-4;
    for (int k = 0; k < 4000 && n_checked < 40; k++) {
        bool isb = n_checked % 4 == 3;
        int i = (int)(urand() * (isb ? D : D * D));
        double *p = isb ? &bd[i] : &Ad[i], gk = isb ? db[i] : dA[i];
        if (fabs(gk) < 0.1 * gmax && k < 3000) continue;
        double p0 = *p;
        *p = p0 + h;
        double jp = j_double(m, Ad, bd, x, ref, T);
        *p = p0 - h;
        double jm = j_double(m, Ad, bd, x, ref, T);
        *p = p0;
        double fd = (jp - jm) / (2 * h), dev = fabs(fd - gk);
        worst = fmax(worst, dev / (2e-3 * fabs(gk) + 1e-4 * gmax));
        if (dev > 2e-3 * fabs(gk) + 1e-4 * gmax) {
            bad++;
            tap_diag("%s[%d]: fd %.6g, dedicated %.6g", isb ? "b" : "A", i, fd, gk);
        }
        n_checked++;
    }
    tap_ok(n_checked == 40 && !bad, "dJ/dA, dJ/db at %d coordinates vs central differences of J in "
           "double (h 1e-4; |fd - g| <= 2e-3 |g| + 1e-4 max|g|; worst %.2f of the tolerance)",
           n_checked, worst);
    free(Ad);
    free(bd);
    free(dAe);
    free(dbe);
    free(ref);
    free(y);
    free(dy);
    free(dye);
    free(dA);
    free(db);
    free(dlog);
    ks_grad_free(g);
    ks_tuned_lens_free(tl);
}

/* ------------------------------------------------------------------ files */

/* The header (parsed) and data section of a safetensors file. */
static json_t *read_st(const char *path, unsigned char **data, size_t *dlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint64_t hl = 0;
    json_t *j = NULL;
    if (fread(&hl, 8, 1, f) == 1 && hl < (1 << 20)) {
        char *h = malloc(hl);
        if (h && fread(h, 1, hl, f) == hl) j = json_loadb(h, hl, 0, NULL);
        free(h);
        long p = ftell(f);
        fseek(f, 0, SEEK_END);
        *dlen = (size_t)(ftell(f) - p);
        fseek(f, p, SEEK_SET);
        *data = malloc(*dlen + 1);
        if (fread(*data, 1, *dlen, f) != *dlen) *dlen = 0;
    }
    fclose(f);
    return j;
}

static void write_st(const char *path, json_t *head, const unsigned char *data, size_t dlen) {
    char *h = json_dumps(head, JSON_COMPACT);
    uint64_t hl = strlen(h);
    FILE *f = fopen(path, "wb");
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, hl, f);
    fwrite(data, 1, dlen, f);
    fclose(f);
    free(h);
}

static void write_raw(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void expect_format(const char *path, const char *field, const char *what) {
    ks_tuned_lens *tl = NULL;
    ks_error err = {0};
    ks_status st = ks_tuned_lens_load(path, NULL, &tl, &err);
    tap_ok(st == KS_ERR_FORMAT && strstr(err.msg, path) && strstr(err.msg, field) && !tl,
           "malformed (%s): KS_ERR_FORMAT naming the file and '%s': %s", what, field, err.msg);
    ks_tuned_lens_free(tl);
}

static void test_malformed(const char *dir) {
    /* a small valid lens: D 2, 2 layers, vocab 3 */
    ks_tuned_lens_identity id = {.d_model = 2, .n_layers = 2, .vocab_size = 3};
    ks_tuned_lens *tl = NULL;
    ks_error err = {0};
    char good[4200], bad[4200];
    snprintf(good, sizeof good, "%s/small.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    ks_tuned_lens_create(&id, &tl, &err);
    for (int l = 0; l < 2; l++) ks_tuned_lens_weight(tl, l)[1] = 0.5f * (l + 1);
    if (ks_tuned_lens_save(tl, NULL, good, &err)) tap_ok(0, "save small: %s", err.msg);
    ks_tuned_lens_free(tl);
    tl = NULL;
    tap_ok(!ks_tuned_lens_load(good, &id, &tl, &err) && ks_tuned_lens_weight(tl, 1)[1] == 1.0f,
           "a small lens (d_model 2, 2 layers) loads %s", err.msg);
    ks_tuned_lens_free(tl);

    unsigned char *data = NULL;
    size_t dlen = 0;
    json_t *h0 = read_st(good, &data, &dlen);
    if (!h0) {
        tap_ok(0, "read back %s", good);
        return;
    }
    /* container-level damage */
    uint64_t big = 1ull << 40;
    write_raw(bad, &big, 4);
    expect_format(bad, "header length", "4 bytes");
    unsigned char hb[16];
    memcpy(hb, &big, 8);
    memcpy(hb + 8, "{}{}{}{}", 8);
    write_raw(bad, hb, 16);
    expect_format(bad, "header length", "header length past the end");
    uint64_t six = 6;
    memcpy(hb, &six, 8);
    memcpy(hb + 8, "{\"a\":  ", 8);
    write_raw(bad, hb, 14);
    expect_format(bad, "JSON", "header not JSON");

    struct {
        const char *what, *field, *json_path, *value; /* value: JSON text, NULL deletes */
    } cases[] = {
        {"no __metadata__", "__metadata__", "__metadata__", NULL},
        {"format of another tool", "'format'", "__metadata__/format", "\"safetensors-lens\""},
        {"version 2", "'version'", "__metadata__/version", "\"2\""},
        {"d_model not a number", "'d_model'", "__metadata__/d_model", "\"two\""},
        {"d_model a JSON number", "'d_model'", "__metadata__/d_model", "2"},
        {"n_layers 0", "'n_layers'", "__metadata__/n_layers", "\"0\""},
        {"n_layers huge", "'n_layers'", "__metadata__/n_layers", "\"4000\""},
        {"vocab_size missing", "'vocab_size'", "__metadata__/vocab_size", NULL},
        {"model_sha256 not hex", "'model_sha256'", "__metadata__/model_sha256", "\"xyz\""},
        {"d_model 3 for 2x2 tensors", "'shape'", "__metadata__/d_model", "\"3\""},
        {"a bias missing", "layers.1.bias", "layers.1.bias", NULL},
        {"weight of shape [4]", "'shape'", "layers.0.weight/shape", "[4]"},
        {"weight in F16", "'dtype'", "layers.0.weight", "{\"dtype\":\"F16\",\"shape\":[2,4],\"data_offsets\":[0,16]}"},
        {"weight in I32", "dtype", "layers.0.weight/dtype", "\"I32\""},
        {"offsets past the data", "data_offsets", "layers.1.bias/data_offsets", "[40,4000]"},
        {"an extra tensor", "'extra'", "extra", "{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[48,48]}"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        json_t *h = json_deep_copy(h0), *obj = h;
        char key[128];
        snprintf(key, sizeof key, "%s", cases[k].json_path);
        char *slash = strchr(key, '/');
        if (slash) {
            *slash = 0;
            obj = json_object_get(h, key);
            memmove(key, slash + 1, strlen(slash + 1) + 1);
        }
        if (cases[k].value) json_object_set_new(obj, key, json_loads(cases[k].value, JSON_DECODE_ANY, NULL));
        else json_object_del(obj, key);
        write_st(bad, h, data, dlen);
        expect_format(bad, cases[k].field, cases[k].what);
        json_decref(h);
    }
    /* a NaN in the data */
    unsigned char *d2 = malloc(dlen);
    memcpy(d2, data, dlen);
    float nan = NAN;
    memcpy(d2 + 4, &nan, 4);
    write_st(bad, h0, d2, dlen);
    expect_format(bad, "not finite", "a NaN weight");
    free(d2);
    json_decref(h0);
    free(data);
    remove(good);
    remove(bad);
}

/* ------------------------------------------------------------------ main */

int main(void) {
    double t0 = now();
    char bin[4096], tokp[4096], gguf[4096];
    if (!ks_test_data_file("stories260K/stories260K.bin", bin, sizeof bin) ||
        !ks_test_data_file("stories260K/tok512.bin", tokp, sizeof tokp) ||
        !ks_test_data_file("stories260K/stories260K.gguf", gguf, sizeof gguf))
        return tap_done();
    char dir[] = "/tmp/ks_tuned_lens_XXXXXX";
    if (!mkdtemp(dir)) {
        tap_ok(0, "mkdtemp");
        return tap_done();
    }
    test_malformed(dir);

    ks_error err = {0};
    ks_model *m = NULL;
    ks_model_options mo = {.tokenizer_path = tokp, .no_mmap = true, .f32_weights = true};
    if (ks_model_open(bin, &mo, &m, &err)) {
        tap_ok(0, "open %s: %s", bin, err.msg);
        return tap_done();
    }
    const int L = m->cfg.n_layers, D = m->cfg.dim, V = m->cfg.vocab_size;

    /* the model's own text: N_SEQ samples from BOS, temperature 1, seed i */
    int *seqs[N_SEQ], lens[N_SEQ];
    ks_session *s = NULL;
    ks_session_create(m, NULL, &s, &err);
    int bos = m->cfg.bos_id, total = 0;
    for (int i = 0; i < N_SEQ; i++) {
        ks_generate_params gp = {.max_new_tokens = SEQ_LEN - 1,
                                 .sampling = {.temperature = 1.0f, .top_p = 1.0f, .seed = 1000 + i}};
        int *ids = NULL, n = 0;
        ks_session_reset(s);
        if (!s || ks_generate(s, &bos, 1, &gp, NULL, NULL, &ids, &n, NULL, &err)) {
            tap_ok(0, "generate: %s", err.msg);
            return tap_done();
        }
        seqs[i] = malloc(sizeof(int) * (n + 1));
        seqs[i][0] = bos;
        memcpy(seqs[i] + 1, ids, sizeof(int) * n);
        lens[i] = n + 1;
        total += n + 1;
        free(ids);
    }
    ks_session_free(s);
    ks_lens_data *dtr = NULL, *dho = NULL;
    bool ok = !ks_lens_data_collect(m, (const int *const *)seqs, lens, N_TRAIN, 0, NULL, &dtr, &err) &&
              !ks_lens_data_collect(m, (const int *const *)seqs + N_TRAIN, lens + N_TRAIN,
                                    N_SEQ - N_TRAIN, 0, NULL, &dho, &err);
    tap_ok(ok, "%d sequences sampled from stories260K (%d tokens), resid_post of %d layers collected: "
           "%lld training rows, %lld held out %s", N_SEQ, total, L, ok ? (long long)ks_lens_data_rows(dtr) : 0LL,
           ok ? (long long)ks_lens_data_rows(dho) : 0LL, err.msg);
    if (!ok) return tap_done();

    /* 1. zero lens == logit lens */
    ks_tuned_lens_identity id;
    ks_tuned_lens *tl = NULL;
    if (ks_tuned_lens_model_identity(m, &id, &err) || ks_tuned_lens_create(&id, &tl, &err)) {
        tap_ok(0, "identity/create: %s", err.msg);
        return tap_done();
    }
    tap_ok(strlen(id.model_sha256) == 64 && !strcmp(id.model_sha256_of, "weights"),
           "model identity: sha256 of the weights file, as the recorder's (%.12s…)", id.model_sha256);
    int n0 = (int)ks_lens_data_rows(dho);
    float *a = malloc(sizeof(float) * n0 * V), *b = malloc(sizeof(float) * n0 * V);
    bool same = true;
    for (int l = 0; l < L; l++) {
        ks_tuned_lens_apply(tl, m, l, ks_lens_data_resid(dho, l), n0, a, &err);
        ks_logit_lens(m, ks_lens_data_resid(dho, l), n0, b, &err);
        same &= memcmp(a, b, sizeof(float) * n0 * V) == 0;
    }
    tap_ok(same, "a zero tuned lens gives the logit lens's logits bit for bit (%d layers x %d rows)", L, n0);
    free(a);
    free(b);
    double kl0[64], kl1[64], kz0[64], kz1[64];
    ks_tuned_lens_eval(tl, m, dho, kz0, kz1, &err);
    same = true;
    for (int l = 0; l < L; l++) same &= kz0[l] == kz1[l];
    tap_ok(same && kz0[L - 1] < 1e-6, "zero lens: evaluated KL equal to the logit lens's at every "
           "layer; last layer %.2g (< 1e-6)", kz0[L - 1]);

    /* 2, 3. gradients */
    test_gradient(m, dtr, seqs[0], lens[0]);

    /* 4. training */
    double t1 = now();
    ks_tuned_lens_train_options to = {.seed = 7};
    if (ks_tuned_lens_train(tl, m, dtr, &to, &err) || ks_tuned_lens_eval(tl, m, dho, kl0, kl1, &err)) {
        tap_ok(0, "train: %s", err.msg);
        return tap_done();
    }
    double t2 = now();
    bool better = true;
    tap_diag("held-out KL(final || lens), nats, %lld tokens (training %.1f s):", (long long)n0, t2 - t1);
    tap_diag("layer  logit lens  tuned lens");
    for (int l = 0; l < L; l++) {
        tap_diag("%5d  %10.4f  %10.4f", l, kl0[l], kl1[l]);
        if (l < L - 1) better &= kl1[l] < kl0[l];
    }
    tap_ok(better, "held-out KL of the tuned lens below the logit lens's at layers 0..%d", L - 2);
    bool zero = true;
    for (int i = 0; i < D * D; i++) zero &= ks_tuned_lens_weight(tl, L - 1)[i] == 0.0f;
    for (int i = 0; i < D; i++) zero &= ks_tuned_lens_bias(tl, L - 1)[i] == 0.0f;
    tap_ok(zero && kl1[L - 1] < 1e-6 && kl0[L - 1] < 1e-6, "last layer: the model's output itself "
           "(KL %.2g, %.2g < 1e-6), translator left at zero", kl0[L - 1], kl1[L - 1]);

    ks_tuned_lens *r1 = NULL, *r2 = NULL;
    ks_tuned_lens_train_options ts = {.steps = 20, .seed = 3};
    ks_tuned_lens_create(&id, &r1, &err);
    ks_tuned_lens_create(&id, &r2, &err);
    ks_tuned_lens_train(r1, m, dtr, &ts, &err);
    ks_tuned_lens_train(r2, m, dtr, &ts, &err);
    tap_ok(!memcmp(ks_tuned_lens_weight(r1, 0), ks_tuned_lens_weight(r2, 0), sizeof(float) * L * D * D) &&
           !memcmp(ks_tuned_lens_bias(r1, 0), ks_tuned_lens_bias(r2, 0), sizeof(float) * L * D) &&
           ks_tuned_lens_weight(r1, 0)[0] != 0.0f,
           "deterministic: two trainings with one seed give the same bytes");
    ks_tuned_lens_free(r1);
    ks_tuned_lens_free(r2);

    /* 5. save / load */
    char p1[4200], p2[4200];
    snprintf(p1, sizeof p1, "%s/lens.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/lens2.safetensors", dir);
    ks_tuned_lens_provenance pv = {.steps = 250, .lr = 2e-3f, .seed = 7,
                                   .train_rows = ks_lens_data_rows(dtr), .data_source = "test"};
    ks_tuned_lens *back = NULL;
    ok = !ks_tuned_lens_save(tl, &pv, p1, &err) && !ks_tuned_lens_load(p1, &id, &back, &err);
    tap_ok(ok && !memcmp(ks_tuned_lens_weight(tl, 0), ks_tuned_lens_weight(back, 0), sizeof(float) * L * D * D) &&
           !memcmp(ks_tuned_lens_bias(tl, 0), ks_tuned_lens_bias(back, 0), sizeof(float) * L * D) &&
           !strcmp(ks_tuned_lens_id(back)->model_sha256, id.model_sha256),
           "save → load: every translator bit for bit, identity kept %s", err.msg);
    ok = ok && !ks_tuned_lens_save(back, &pv, p2, &err);
    tap_ok(ok && ks_test_same_bytes(p1, p2), "a loaded lens saved again: the same bytes");
    ks_tuned_lens_free(back);

    /* the wrong model */
    ks_model *mg = NULL;
    ks_tuned_lens_identity idg;
    ks_model_options mog = {0};
    back = NULL;
    if (!ks_model_open(gguf, &mog, &mg, &err) && !ks_tuned_lens_model_identity(mg, &idg, &err)) {
        ks_status st = ks_tuned_lens_load(p1, &idg, &back, &err);
        tap_ok(st == KS_ERR_ARG && !back && strstr(err.msg, p1) && strstr(err.msg, "model_sha256"),
               "a lens of stories260K.bin refused for stories260K.gguf: %s", err.msg);
    } else {
        tap_ok(0, "open %s: %s", gguf, err.msg);
    }
    ks_model_close(mg);
    ks_tuned_lens_identity idd = id;
    idd.d_model = 128;
    ks_status st = ks_tuned_lens_load(p1, &idd, &back, &err);
    tap_ok(st == KS_ERR_ARG && !back && strstr(err.msg, p1) && strstr(err.msg, "'d_model' is 64"),
           "a lens refused for a model of another d_model: %s", err.msg);
    remove(p1);
    remove(p2);
    rmdir(dir);

    ks_tuned_lens_free(tl);
    ks_lens_data_free(dtr);
    ks_lens_data_free(dho);
    for (int i = 0; i < N_SEQ; i++) free(seqs[i]);
    ks_model_close(m);
    tap_diag("runtime %.1f s", now() - t0);
    return tap_done();
}
