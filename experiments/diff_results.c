/* diff_results.c — the outputs of koalascope diff (ks_diff_results.h, docs/DIFF.md): the
 * findings (weight deltas by layer and module, where activations changed, their rank
 * correlation), results.h5, CSV tables, report.md with cairo charts, and the streamed diff.h5
 * of per-token measures that the viewer's compare mode reads beside the two dumps. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dump_private.h"
#include "ks_diff_results.h"
#include "ks_plot.h"
#include "results_private.h"

#define H5TRY(call, ...) KS_H5_TRY_AS(KS_ERR_IO, call, __VA_ARGS__)
#define CHECK(call)                          \
    do {                                     \
        if ((s = (call)) != KS_OK) goto out; \
    } while (0)

static const char *or_empty(const char *s) { return s ? s : ""; }

/* ------------------------------------------------------------------ findings */

ks_status ks_diff_findings_compute(const ks_diff_summary *s, const ks_diff_tensor *t, int n_t,
                                   ks_diff_findings *f, ks_error *err) {
    memset(f, 0, sizeof *f);
    const int L = s->n_layers, H = s->n_heads;
    f->n_layers = L;
    f->n_heads = H;
    f->layer_delta = calloc((size_t)L + 1, sizeof(double));
    f->layer_rel = calloc((size_t)L + 1, sizeof(double));
    f->change = calloc((size_t)L + 1, sizeof(double));
    f->increment = calloc((size_t)L + 1, sizeof(double));
    double *lb = calloc((size_t)L + 1, sizeof(double));
    double md[KS_DIFF_N_MODULES] = {0}, mb[KS_DIFF_N_MODULES] = {0};
    bool mhas[KS_DIFF_N_MODULES] = {0};
    if (!f->layer_delta || !f->layer_rel || !f->change || !f->increment || !lb) {
        free(lb);
        ks_diff_findings_clear(f);
        return ks_error_set(err, KS_ERR_NOMEM, "diff findings: out of memory");
    }
    f->weight_tensor = -1;
    double best_t = 0;
    for (int i = 0; i < n_t; i++) {
        if (t[i].layer >= 0 && t[i].layer < L) {
            f->layer_delta[t[i].layer] += t[i].delta_sq;
            lb[t[i].layer] += t[i].base_sq;
        }
        md[t[i].module] += t[i].delta_sq;
        mb[t[i].module] += t[i].base_sq;
        mhas[t[i].module] = true;
        double rel = t[i].base_sq > 0 ? sqrt(t[i].delta_sq / t[i].base_sq) : t[i].delta_sq > 0 ? INFINITY : 0;
        if (rel > best_t) best_t = rel, f->weight_tensor = i;
    }
    f->weight_layer = -1;
    for (int l = 0; l < L; l++) {
        double d = f->layer_delta[l];
        f->layer_delta[l] = sqrt(d);
        f->layer_rel[l] = lb[l] > 0 ? sqrt(d / lb[l]) : NAN;
        if (d > 0 && (f->weight_layer < 0 || f->layer_rel[l] > f->layer_rel[f->weight_layer]))
            f->weight_layer = l;
    }
    free(lb);
    f->weight_module = -1;
    for (int m = 0; m < KS_DIFF_N_MODULES; m++) {
        f->module_delta[m] = mhas[m] ? sqrt(md[m]) : NAN;
        f->module_rel[m] = mhas[m] && mb[m] > 0 ? sqrt(md[m] / mb[m]) : NAN;
        if (mhas[m] && md[m] > 0 && (f->weight_module < 0 || f->module_rel[m] > f->module_rel[f->weight_module]))
            f->weight_module = m;
    }
    f->first_changed = -1;
    f->activation_layer = -1;
    double prev = 0;
    for (int l = 0; l < L; l++) {
        double cka = s->cka[KS_DIFF_RESID * L + l], cs = s->cos[KS_DIFF_RESID * L + l];
        f->change[l] = isnan(cka) ? 1.0 - cs : 1.0 - cka;
        f->increment[l] = f->change[l] - prev;
        prev = f->change[l];
        if (f->first_changed < 0 && cs < 1.0) f->first_changed = l;
        if (f->change[l] > 0 &&
            (f->activation_layer < 0 || f->increment[l] > f->increment[f->activation_layer]))
            f->activation_layer = l;
    }
    f->head_layer = f->head = -1;
    double bj = 0;
    for (int k = 0; k < L * H; k++)
        if (s->head_js[k] > bj) bj = s->head_js[k], f->head_layer = k / H, f->head = k % H;
    f->spearman_increment = ks_diff_spearman(f->layer_rel, f->increment, L);
    f->spearman_change = ks_diff_spearman(f->layer_rel, f->change, L);
    return KS_OK;
}

void ks_diff_findings_clear(ks_diff_findings *f) {
    if (!f) return;
    free(f->layer_delta);
    free(f->layer_rel);
    free(f->change);
    free(f->increment);
    memset(f, 0, sizeof *f);
}

char *ks_diff_findings_sentence(const ks_diff_findings *f, const ks_diff_summary *s,
                                const ks_diff_tensor *t) {
    char buf[2048];
    size_t o = 0;
#define ADD(...) o += (size_t)snprintf(buf + o, o < sizeof buf ? sizeof buf - o : 0, __VA_ARGS__)
    if (f->weight_layer < 0 && f->weight_module < 0 && f->first_changed < 0 && f->head < 0) {
        ADD("The two models are identical here: no weight differs and no activation, attention "
            "pattern or lens distribution changed on these %lld tokens.", (long long)s->n_tokens);
    } else {
        if (f->weight_layer >= 0)
            ADD("The weights changed most in layer %d (‖ΔW‖/‖W‖ = %.3g)", f->weight_layer,
                f->layer_rel[f->weight_layer]);
        else
            ADD("No block's weights changed");
        if (f->weight_module >= 0)
            ADD(", and by module most in %s (%.3g)", ks_diff_module_name((ks_diff_module)f->weight_module),
                f->module_rel[f->weight_module]);
        if (f->weight_tensor >= 0) ADD("; the tensor with the largest relative change is %s", t[f->weight_tensor].name);
        ADD(". ");
        if (f->first_changed >= 0)
            ADD("The residual stream first differs after layer %d; the largest rise in its change "
                "(1 − CKA) is at layer %d (+%.3g; %.3g after the last layer). ", f->first_changed,
                f->activation_layer, f->activation_layer >= 0 ? f->increment[f->activation_layer] : NAN,
                f->change[f->n_layers - 1]);
        else
            ADD("The residual stream did not change on these tokens. ");
        if (f->head >= 0)
            ADD("The attention head that changed most is %d.%d (mean JS %.3g bits). ", f->head_layer,
                f->head, s->head_js[f->head_layer * f->n_heads + f->head]);
        ADD("Rank correlation (Spearman) across layers between the weight change and the rise in "
            "activation change: %.3g (with the activation change itself: %.3g).",
            f->spearman_increment, f->spearman_change);
    }
#undef ADD
    return strdup(buf);
}

/* ------------------------------------------------------------------ CSV */

typedef struct {
    const ks_diff_summary *s;
    const ks_diff_tensor *t;
    int n_t;
    const ks_diff_findings *f;
    const ks_diff_meta *meta;
    const char *charts[5];
    const char *sentence;
} out_arg;

static ks_status layers_csv(FILE *fp, const void *arg, ks_error *err) {
    (void)err;
    const out_arg *a = arg;
    const int L = a->s->n_layers;
    fputs("layer", fp);
    for (int st = 0; st < KS_DIFF_N_STREAMS; st++)
        fprintf(fp, ",cka_%s,cos_%s", ks_diff_stream_name(st), ks_diff_stream_name(st));
    fputs(",change,change_increment,lens_kl,lens_top1,weight_delta,weight_rel\n", fp);
    for (int l = 0; l < L; l++) {
        fprintf(fp, "%d", l);
        for (int st = 0; st < KS_DIFF_N_STREAMS; st++) {
            fputc(',', fp);
            ks_res_csv_num(fp, a->s->cka[st * L + l]);
            fputc(',', fp);
            ks_res_csv_num(fp, a->s->cos[st * L + l]);
        }
        const double v[6] = {a->f->change[l], a->f->increment[l], a->s->lens_kl[l], a->s->lens_top1[l],
                             a->f->layer_delta[l], a->f->layer_rel[l]};
        for (int k = 0; k < 6; k++) {
            fputc(',', fp);
            ks_res_csv_num(fp, v[k]);
        }
        fputc('\n', fp);
    }
    return KS_OK;
}

static ks_status heads_csv(FILE *fp, const void *arg, ks_error *err) {
    (void)err;
    const out_arg *a = arg;
    fputs("layer,head,js_bits,tv\n", fp);
    for (int l = 0; l < a->s->n_layers; l++)
        for (int h = 0; h < a->s->n_heads; h++) {
            fprintf(fp, "%d,%d,", l, h);
            ks_res_csv_num(fp, a->s->head_js[l * a->s->n_heads + h]);
            fputc(',', fp);
            ks_res_csv_num(fp, a->s->head_tv[l * a->s->n_heads + h]);
            fputc('\n', fp);
        }
    return KS_OK;
}

static double rel_of(const ks_diff_tensor *t) {
    return t->base_sq > 0 ? sqrt(t->delta_sq / t->base_sq) : NAN;
}

static ks_status weights_csv(FILE *fp, const void *arg, ks_error *err) {
    (void)err;
    const out_arg *a = arg;
    fputs("name,module,layer,n_elems,delta,base_norm,rel,max_abs\n", fp);
    for (int i = 0; i < a->n_t; i++) {
        const ks_diff_tensor *t = &a->t[i];
        fprintf(fp, "%s,%s,%d,%lld,", t->name, ks_diff_module_name(t->module), t->layer,
                (long long)t->n_elems);
        ks_res_csv_num(fp, sqrt(t->delta_sq));
        fputc(',', fp);
        ks_res_csv_num(fp, sqrt(t->base_sq));
        fputc(',', fp);
        ks_res_csv_num(fp, rel_of(t));
        fputc(',', fp);
        ks_res_csv_num(fp, t->max_abs);
        fputc('\n', fp);
    }
    return KS_OK;
}

static ks_status modules_csv(FILE *fp, const void *arg, ks_error *err) {
    (void)err;
    const out_arg *a = arg;
    fputs("module,delta,rel\n", fp);
    for (int m = 0; m < KS_DIFF_N_MODULES; m++) {
        if (isnan(a->f->module_delta[m])) continue;
        fprintf(fp, "%s,", ks_diff_module_name((ks_diff_module)m));
        ks_res_csv_num(fp, a->f->module_delta[m]);
        fputc(',', fp);
        ks_res_csv_num(fp, a->f->module_rel[m]);
        fputc('\n', fp);
    }
    return KS_OK;
}

/* ------------------------------------------------------------------ results.h5 */

static ks_status root_attrs(const char *path, hid_t f, const char *format, const ks_diff_meta *m,
                            ks_error *err) {
    ks_status s = KS_OK;
    char when[64];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    CHECK(ks_h5_attr_str(path, "/", f, "format", format, err));
    CHECK(ks_h5_attr_i32(path, "/", f, "format_version", KS_DIFF_FORMAT_VERSION, err));
    CHECK(ks_h5_attr_str(path, "/", f, "koalascope_version", ks_version(), err));
    CHECK(ks_h5_attr_str(path, "/", f, "created", when, err));
    CHECK(ks_h5_attr_str(path, "/", f, "base_model", or_empty(m ? m->base_model : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "tuned_model", or_empty(m ? m->tuned_model : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "prompts_source", or_empty(m ? m->prompts_source : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "prompts_sha256", or_empty(m ? m->prompts_sha256 : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "chat_template", m && m->template_name ? m->template_name : "none", err));
    CHECK(ks_h5_attr_str(path, "/", f, "command_line", or_empty(m ? m->command_line : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "base_dump", or_empty(m ? m->base_dump : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "tuned_dump", or_empty(m ? m->tuned_dump : NULL), err));
    CHECK(ks_h5_attr_str(path, "/", f, "streams", "resid_post,attn_out,mlp_out", err));
    CHECK(ks_h5_attr_i32(path, "/", f, "js_log_base", 2, err));
    CHECK(ks_h5_attr_str(path, "/", f, "kl", "KL(tuned || base) in nats", err));
out:
    return s;
}

static hid_t group(hid_t f, const char *name) {
    return H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
}

static ks_status write_h5(const char *dir, const out_arg *a, ks_error *err) {
    ks_h5_init();
    char *path = ks_res_join(dir, "results.h5"), *tmp = ks_res_join(dir, "results.h5.tmp");
    const ks_diff_summary *S = a->s;
    const ks_diff_findings *F = a->f;
    const int L = S->n_layers, H = S->n_heads, N = a->n_t;
    ks_status s = KS_OK;
    hid_t f = -1, fapl = -1, g[6] = {-1, -1, -1, -1, -1, -1};
    const char **names = calloc((size_t)N + KS_DIFF_N_MODULES + 1, sizeof(char *));
    double *v = calloc((size_t)N + KS_DIFF_N_MODULES + 1, sizeof(double));
    int *iv = calloc((size_t)N + 1, sizeof(int));
    if (!path || !tmp || !names || !v || !iv) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory writing results.h5");
        goto out;
    }
    H5TRY(fapl = ks_h5_latest_fapl(), "%s: cannot make a file access list", tmp);
    H5TRY(f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "%s: cannot create", tmp);
    CHECK(root_attrs(tmp, f, KS_DIFF_RESULTS_FORMAT, a->meta, err));
    CHECK(ks_h5_attr_i32(tmp, "/", f, "n_prompts", (int)S->n_prompts, err));
    CHECK(ks_h5_attr_i32(tmp, "/", f, "n_tokens", (int)S->n_tokens, err));
    CHECK(ks_h5_attr_i32(tmp, "/", f, "n_layers", L, err));
    CHECK(ks_h5_attr_i32(tmp, "/", f, "n_heads", H, err));
    hsize_t d3l[2] = {3, (hsize_t)L}, dl = (hsize_t)L, dlh[2] = {(hsize_t)L, (hsize_t)H};
    H5TRY(g[0] = group(f, "/layers"), "%s: cannot create /layers", tmp);
    CHECK(ks_res_ds_f64(tmp, "/layers", g[0], "cka", 2, d3l, S->cka, err));
    CHECK(ks_res_ds_f64(tmp, "/layers", g[0], "cos", 2, d3l, S->cos, err));
    CHECK(ks_res_ds_f64(tmp, "/layers", g[0], "change", 1, &dl, F->change, err));
    CHECK(ks_res_ds_f64(tmp, "/layers", g[0], "change_increment", 1, &dl, F->increment, err));
    H5TRY(g[1] = group(f, "/heads"), "%s: cannot create /heads", tmp);
    CHECK(ks_res_ds_f64(tmp, "/heads", g[1], "js", 2, dlh, S->head_js, err));
    CHECK(ks_res_ds_f64(tmp, "/heads", g[1], "tv", 2, dlh, S->head_tv, err));
    H5TRY(g[2] = group(f, "/lens"), "%s: cannot create /lens", tmp);
    CHECK(ks_res_ds_f64(tmp, "/lens", g[2], "kl", 1, &dl, S->lens_kl, err));
    CHECK(ks_res_ds_f64(tmp, "/lens", g[2], "top1", 1, &dl, S->lens_top1, err));
    CHECK(ks_h5_attr_f64(tmp, "/lens", g[2], "final_kl", S->final_kl, err));
    CHECK(ks_h5_attr_f64(tmp, "/lens", g[2], "final_top1", S->final_top1, err));
    H5TRY(g[3] = group(f, "/weights"), "%s: cannot create /weights", tmp);
    hsize_t dn = (hsize_t)N;
    for (int i = 0; i < N; i++) names[i] = a->t[i].name;
    CHECK(ks_res_ds_str(tmp, "/weights", g[3], "name", names, (size_t)N, err));
    for (int i = 0; i < N; i++) names[i] = ks_diff_module_name(a->t[i].module);
    CHECK(ks_res_ds_str(tmp, "/weights", g[3], "module", names, (size_t)N, err));
    for (int i = 0; i < N; i++) iv[i] = a->t[i].layer;
    CHECK(ks_res_ds_i32(tmp, "/weights", g[3], "layer", 1, &dn, iv, err));
    for (int i = 0; i < N; i++) v[i] = (double)a->t[i].n_elems;
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "n_elems", 1, &dn, v, err));
    for (int i = 0; i < N; i++) v[i] = sqrt(a->t[i].delta_sq);
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "delta", 1, &dn, v, err));
    for (int i = 0; i < N; i++) v[i] = sqrt(a->t[i].base_sq);
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "base_norm", 1, &dn, v, err));
    for (int i = 0; i < N; i++) v[i] = rel_of(&a->t[i]);
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "rel", 1, &dn, v, err));
    for (int i = 0; i < N; i++) v[i] = a->t[i].max_abs;
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "max_abs", 1, &dn, v, err));
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "layer_delta", 1, &dl, F->layer_delta, err));
    CHECK(ks_res_ds_f64(tmp, "/weights", g[3], "layer_rel", 1, &dl, F->layer_rel, err));
    int nm = 0;
    for (int m = 0; m < KS_DIFF_N_MODULES; m++)
        if (!isnan(F->module_delta[m])) names[nm++] = ks_diff_module_name((ks_diff_module)m);
    hsize_t dm = (hsize_t)nm;
    H5TRY(g[4] = group(f, "/weights/modules"), "%s: cannot create /weights/modules", tmp);
    CHECK(ks_res_ds_str(tmp, "/weights/modules", g[4], "name", names, (size_t)nm, err));
    nm = 0;
    for (int m = 0; m < KS_DIFF_N_MODULES; m++)
        if (!isnan(F->module_delta[m])) v[nm++] = F->module_delta[m];
    CHECK(ks_res_ds_f64(tmp, "/weights/modules", g[4], "delta", 1, &dm, v, err));
    nm = 0;
    for (int m = 0; m < KS_DIFF_N_MODULES; m++)
        if (!isnan(F->module_delta[m])) v[nm++] = F->module_rel[m];
    CHECK(ks_res_ds_f64(tmp, "/weights/modules", g[4], "rel", 1, &dm, v, err));
    H5TRY(g[5] = group(f, "/findings"), "%s: cannot create /findings", tmp);
    CHECK(ks_h5_attr_i32(tmp, "/findings", g[5], "weight_layer", F->weight_layer, err));
    CHECK(ks_h5_attr_str(tmp, "/findings", g[5], "weight_module",
                         F->weight_module >= 0 ? ks_diff_module_name((ks_diff_module)F->weight_module) : "", err));
    CHECK(ks_h5_attr_str(tmp, "/findings", g[5], "weight_tensor",
                         F->weight_tensor >= 0 ? a->t[F->weight_tensor].name : "", err));
    CHECK(ks_h5_attr_i32(tmp, "/findings", g[5], "first_changed_layer", F->first_changed, err));
    CHECK(ks_h5_attr_i32(tmp, "/findings", g[5], "activation_layer", F->activation_layer, err));
    CHECK(ks_h5_attr_i32(tmp, "/findings", g[5], "head_layer", F->head_layer, err));
    CHECK(ks_h5_attr_i32(tmp, "/findings", g[5], "head", F->head, err));
    CHECK(ks_h5_attr_f64(tmp, "/findings", g[5], "spearman_increment", F->spearman_increment, err));
    CHECK(ks_h5_attr_f64(tmp, "/findings", g[5], "spearman_change", F->spearman_change, err));
    CHECK(ks_h5_attr_str(tmp, "/findings", g[5], "sentence", a->sentence, err));
out:
    for (int i = 5; i >= 0; i--)
        if (g[i] >= 0) H5Gclose(g[i]);
    if (f >= 0 && H5Fclose(f) < 0 && !s) s = ks_error_set(err, KS_ERR_IO, "%s: cannot close", tmp);
    if (fapl >= 0) H5Pclose(fapl);
    if (!s && rename(tmp, path) != 0)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (s && tmp) unlink(tmp);
    free(path);
    free(tmp);
    free(names);
    free(v);
    free(iv);
    return s;
}

/* ------------------------------------------------------------------ charts and report */

static ks_status save_both(const char *dir, const char *stem, ks_status (*save)(const void *, const char *, ks_error *),
                           const void *chart, ks_error *err) {
    static const char *const ext[2] = {"png", "svg"};
    for (int k = 0; k < 2; k++) {
        char rel[128];
        snprintf(rel, sizeof rel, "charts/%s.%s", stem, ext[k]);
        char *p = ks_res_join(dir, rel);
        if (!p) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        ks_status s = save(chart, p, err);
        free(p);
        if (s) return s;
    }
    return KS_OK;
}

static ks_status save_plot(const void *c, const char *p, ks_error *e) { return ks_plot_save(c, p, 900, 500, e); }
static ks_status save_forest(const void *c, const char *p, ks_error *e) { return ks_forest_save(c, p, 900, 0, e); }
static ks_status save_heat(const void *c, const char *p, ks_error *e) { return ks_matrix_save(c, p, 900, 560, e); }

static ks_status charts(const char *dir, const out_arg *a, ks_error *err) {
    const ks_diff_summary *S = a->s;
    const ks_diff_findings *F = a->f;
    const int L = S->n_layers, H = S->n_heads;
    ks_status s = KS_OK;
    double *x = malloc(((size_t)L + 1) * sizeof(double));
    ks_forest_row *rows = calloc((size_t)L + KS_DIFF_N_MODULES + 1, sizeof *rows);
    char (*labels)[32] = calloc((size_t)L + KS_DIFF_N_MODULES + 1, sizeof *labels);
    if (!x || !rows || !labels) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory drawing charts");
        goto out;
    }
    for (int l = 0; l < L; l++) x[l] = l;
    /* similarity per layer: CKA solid, cosine dashed, one colour per stream */
    ks_plot_series se[6];
    static const char *const lab[6] = {"CKA resid_post", "cos resid_post", "CKA attn_out",
                                       "cos attn_out", "CKA mlp_out", "cos mlp_out"};
    for (int st = 0; st < 3; st++)
        for (int k = 0; k < 2; k++) {
            ks_plot_series *p = &se[st * 2 + k];
            memset(p, 0, sizeof *p);
            p->label = lab[st * 2 + k];
            p->x = x;
            p->y = (k ? S->cos : S->cka) + st * L;
            p->n = L;
            ks_plot_color(st == 0 ? 5 : st == 1 ? 1 : 3, p->rgb);
            p->dashed = k == 1;
            p->markers = true;
        }
    char sub[200];
    snprintf(sub, sizeof sub, "tuned against base, %lld prompts, %lld tokens; 1 = unchanged",
             (long long)S->n_prompts, (long long)S->n_tokens);
    ks_plot sim = {.title = "Representation similarity per layer", .subtitle = sub, .xlabel = "layer",
                   .ylabel = "similarity", .ymin = NAN, .ymax = NAN, .integer_x = true, .series = se,
                   .n_series = 6};
    if ((s = save_both(dir, "similarity", save_plot, &sim, err))) goto out;
    /* lens KL per layer */
    ks_plot_series ks_ = {.label = "lens KL(tuned || base)", .x = x, .y = S->lens_kl, .n = L, .markers = true};
    ks_plot_color(6, ks_.rgb);
    char sub2[200];
    snprintf(sub2, sizeof sub2, "each model's own final norm and unembedding; final output KL %.3g nats",
             S->final_kl);
    ks_plot lk = {.title = "Logit lens: KL per layer", .subtitle = sub2, .xlabel = "layer",
                  .ylabel = "nats", .ymin = 0, .ymax = NAN, .integer_x = true, .series = &ks_, .n_series = 1};
    if ((s = save_both(dir, "lens_kl", save_plot, &lk, err))) goto out;
    /* per-head JS heatmap */
    ks_matrix_chart hm = {.title = "Attention change per head", .subtitle = "mean Jensen-Shannon divergence "
                     "over query rows (bits)", .xlabel = "head", .ylabel = "layer", .scale_label = "JS",
                     .values = S->head_js, .rows = L, .cols = H, .vmin = NAN, .vmax = NAN};
    if ((s = save_both(dir, "heads_js", save_heat, &hm, err))) goto out;
    /* weight deltas per layer and per module */
    for (int l = 0; l < L; l++) {
        snprintf(labels[l], sizeof labels[l], "layer %d", l);
        rows[l] = (ks_forest_row){.label = labels[l], .value = F->layer_rel[l], .lo = NAN, .hi = NAN,
                                  .color = l == F->weight_layer ? 6 : 5};
    }
    ks_forest fw = {.title = "Weight change per layer", .subtitle = "||W_tuned - W_base||_F / "
                    "||W_base||_F over the layer's tensors", .xlabel = "relative change",
                    .xmin = NAN, .xmax = NAN, .reference = 0, .rows = rows, .n_rows = L, .bars = true};
    if ((s = save_both(dir, "weights_layer", save_forest, &fw, err))) goto out;
    int nm = 0;
    for (int m = 0; m < KS_DIFF_N_MODULES; m++) {
        if (isnan(F->module_delta[m])) continue;
        rows[nm] = (ks_forest_row){.label = ks_diff_module_name((ks_diff_module)m), .value = F->module_rel[m],
                                   .lo = NAN, .hi = NAN, .color = m == F->weight_module ? 6 : 5};
        nm++;
    }
    ks_forest fm = {.title = "Weight change per module", .subtitle = "all layers together",
                    .xlabel = "relative change", .xmin = NAN, .xmax = NAN, .reference = 0, .rows = rows,
                    .n_rows = nm, .bars = true};
    s = save_both(dir, "weights_module", save_forest, &fm, err);
out:
    free(x);
    free(rows);
    free(labels);
    return s;
}

static void fmt(char *b, size_t n, double v) {
    if (isnan(v)) snprintf(b, n, "n/a");
    else snprintf(b, n, "%.4g", v);
}

static ks_status report_md(FILE *fp, const void *arg, ks_error *err) {
    (void)err;
    const out_arg *a = arg;
    const ks_diff_summary *S = a->s;
    const ks_diff_findings *F = a->f;
    const ks_diff_meta *m = a->meta;
    const int L = S->n_layers;
    fprintf(fp, "# Where fine-tuning changed the model\n\n");
    fprintf(fp, "- base: `%s`\n- tuned: `%s`\n- prompts: `%s` (%lld prompts, %lld tokens; sha256 "
                "`%s`), template %s\n- koalascope %s%s%s\n\n",
            or_empty(m ? m->base_model : NULL), or_empty(m ? m->tuned_model : NULL),
            or_empty(m ? m->prompts_source : NULL), (long long)S->n_prompts, (long long)S->n_tokens,
            or_empty(m ? m->prompts_sha256 : NULL), m && m->template_name ? m->template_name : "none",
            ks_version(), m && m->base_dump ? "; dumps: " : "",
            m && m->base_dump ? "`base.h5`, `tuned.h5` (compare mode: `diff.h5`)" : "");
    fprintf(fp, "**%s**\n\n", a->sentence);
    fprintf(fp, "Definitions (docs/DIFF.md): linear CKA over every token pooled (centred), mean "
                "cosine per token, Jensen-Shannon divergence in bits (log base 2) and total "
                "variation per attention row, lens KL(tuned || base) in nats, relative weight "
                "change ||ΔW||_F / ||W_base||_F.\n\n");
    fprintf(fp, "![similarity](%s)\n\n", "charts/similarity.png");
    fprintf(fp, "| layer | CKA resid | cos resid | CKA attn | CKA mlp | lens KL | top-1 agree | weight rel |\n"
                "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int l = 0; l < L; l++) {
        char c[6][32];
        fmt(c[0], 32, S->cka[l]);
        fmt(c[1], 32, S->cos[l]);
        fmt(c[2], 32, S->cka[L + l]);
        fmt(c[3], 32, S->cka[2 * L + l]);
        fmt(c[4], 32, S->lens_kl[l]);
        fmt(c[5], 32, F->layer_rel[l]);
        fprintf(fp, "| %d | %s | %s | %s | %s | %s | %.3f | %s |\n", l, c[0], c[1], c[2], c[3], c[4],
                S->lens_top1[l], c[5]);
    }
    fprintf(fp, "\nFinal output: KL(tuned || base) %.4g nats, top-1 agreement %.3f.\n\n", S->final_kl,
            S->final_top1);
    fprintf(fp, "![lens KL](charts/lens_kl.png)\n\n![heads](charts/heads_js.png)\n\n"
                "![weights per layer](charts/weights_layer.png)\n\n![weights per module](charts/weights_module.png)\n\n");
    fprintf(fp, "Tables: `layers.csv`, `heads.csv`, `weights.csv`, `modules.csv`; everything in "
                "`results.h5`.\n");
    return KS_OK;
}

ks_status ks_diff_write_results(const char *dir, const ks_diff_meta *meta,
                                const ks_diff_summary *S, const ks_diff_tensor *t, int n_t,
                                const ks_diff_findings *F, ks_error *err) {
    char *sentence = ks_diff_findings_sentence(F, S, t);
    char *cdir = ks_res_join(dir, "charts");
    ks_status s = KS_OK;
    if (!sentence || !cdir) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    out_arg a = {.s = S, .t = t, .n_t = n_t, .f = F, .meta = meta, .sentence = sentence};
    static const struct {
        const char *name;
        ks_res_write_fn fn;
    } csvs[] = {{"layers.csv", layers_csv}, {"heads.csv", heads_csv}, {"weights.csv", weights_csv},
                {"modules.csv", modules_csv}};
    for (size_t i = 0; i < sizeof csvs / sizeof csvs[0] && !s; i++) {
        char *p = ks_res_join(dir, csvs[i].name);
        s = p ? ks_res_write_atomic(p, csvs[i].fn, &a, err) : ks_error_set(err, KS_ERR_NOMEM, "oom");
        free(p);
    }
    if (!s) s = write_h5(dir, &a, err);
    if (!s && mkdir(cdir, 0777) != 0 && errno != EEXIST)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot create: %s", cdir, strerror(errno));
    if (!s) s = charts(dir, &a, err);
    if (!s) {
        char *p = ks_res_join(dir, "report.md");
        s = p ? ks_res_write_atomic(p, report_md, &a, err) : ks_error_set(err, KS_ERR_NOMEM, "oom");
        free(p);
    }
out:
    free(sentence);
    free(cdir);
    return s;
}

/* ------------------------------------------------------------------ diff.h5 (streamed) */

enum { W_COS0, W_COS1, W_COS2, W_KL, W_TOP1, W_FKL, W_FTOP1, W_JS, W_TV, W_OFFSETS, W_COUNT };

struct ks_diff_writer {
    char *path;
    hid_t f;
    hid_t ds[W_COUNT];
    int L, H;
    int64_t rows, prompts;
    float *buf;
    size_t cap;
};

/* an extendible dataset [0, tail...] chunked along its first axis */
static hid_t ext_create(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *tail,
                        hsize_t chunk_rows) {
    hsize_t dims[3] = {0, 0, 0}, maxd[3] = {H5S_UNLIMITED, 0, 0}, ch[3] = {chunk_rows, 1, 1};
    for (int i = 1; i < rank; i++) dims[i] = maxd[i] = ch[i] = tail[i - 1];
    hid_t sp = H5Screate_simple(rank, dims, maxd), pl = H5Pcreate(H5P_DATASET_CREATE), d = -1;
    if (sp >= 0 && pl >= 0 && H5Pset_chunk(pl, rank, ch) >= 0)
        d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    if (pl >= 0) H5Pclose(pl);
    if (sp >= 0) H5Sclose(sp);
    return d;
}

static herr_t ext_append(hid_t d, hid_t mt, int rank, hsize_t at, hsize_t n, const void *buf) {
    hsize_t dims[3], cnt[3], start[3] = {at, 0, 0};
    hid_t sp = H5Dget_space(d);
    if (sp < 0) return -1;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    dims[0] = at + n;
    if (H5Dset_extent(d, dims) < 0) return -1;
    for (int i = 0; i < rank; i++) cnt[i] = dims[i];
    cnt[0] = n;
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(rank, cnt, NULL);
    herr_t r = -1;
    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) >= 0)
        r = H5Dwrite(d, mt, ms, fs, H5P_DEFAULT, buf);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return r;
}

ks_status ks_diff_writer_create(const char *path, const ks_diff_meta *meta, int L, int H,
                                ks_diff_writer **out, ks_error *err) {
    ks_h5_init();
    *out = NULL;
    ks_status s = KS_OK;
    ks_diff_writer *w = calloc(1, sizeof *w);
    hid_t fapl = -1, gt = -1, gp = -1;
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    w->L = L;
    w->H = H;
    w->f = -1;
    for (int i = 0; i < W_COUNT; i++) w->ds[i] = -1;
    H5TRY(fapl = ks_h5_latest_fapl(), "%s: cannot make a file access list", path);
    H5TRY(w->f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "%s: cannot create", path);
    CHECK(root_attrs(path, w->f, KS_DIFF_FORMAT, meta, err));
    CHECK(ks_h5_attr_i32(path, "/", w->f, "n_layers", L, err));
    CHECK(ks_h5_attr_i32(path, "/", w->f, "n_heads", H, err));
    CHECK(ks_h5_attr_i32(path, "/", w->f, "complete", 0, err));
    H5TRY(gt = group(w->f, "/tokens"), "%s: cannot create /tokens", path);
    H5TRY(gp = group(w->f, "/prompts"), "%s: cannot create /prompts", path);
    hsize_t tl[1] = {(hsize_t)L}, tlh[2] = {(hsize_t)L, (hsize_t)H};
    static const char *const cosn[3] = {"cos_resid_post", "cos_attn_out", "cos_mlp_out"};
    for (int k = 0; k < 3; k++)
        H5TRY(w->ds[W_COS0 + k] = ext_create(gt, cosn[k], H5T_IEEE_F32LE, 2, tl, 256),
              "%s: cannot create /tokens/%s", path, cosn[k]);
    H5TRY(w->ds[W_KL] = ext_create(gt, "lens_kl", H5T_IEEE_F32LE, 2, tl, 256), "%s: /tokens/lens_kl", path);
    H5TRY(w->ds[W_TOP1] = ext_create(gt, "lens_top1", H5T_STD_U8LE, 2, tl, 256), "%s: /tokens/lens_top1", path);
    H5TRY(w->ds[W_FKL] = ext_create(gt, "final_kl", H5T_IEEE_F32LE, 1, NULL, 1024), "%s: /tokens/final_kl", path);
    H5TRY(w->ds[W_FTOP1] = ext_create(gt, "final_top1", H5T_STD_U8LE, 1, NULL, 1024), "%s: /tokens/final_top1", path);
    H5TRY(w->ds[W_JS] = ext_create(gp, "head_js", H5T_IEEE_F32LE, 3, tlh, 16), "%s: /prompts/head_js", path);
    H5TRY(w->ds[W_TV] = ext_create(gp, "head_tv", H5T_IEEE_F32LE, 3, tlh, 16), "%s: /prompts/head_tv", path);
    H5TRY(w->ds[W_OFFSETS] = ext_create(w->f, "prompt_offsets", H5T_STD_I64LE, 1, NULL, 1024),
          "%s: /prompt_offsets", path);
    int64_t zero = 0;
    H5TRY(ext_append(w->ds[W_OFFSETS], H5T_NATIVE_INT64, 1, 0, 1, &zero), "%s: /prompt_offsets", path);
out:
    if (gt >= 0) H5Gclose(gt);
    if (gp >= 0) H5Gclose(gp);
    if (fapl >= 0) H5Pclose(fapl);
    if (s) {
        ks_diff_writer_free(w);
        return s;
    }
    *out = w;
    return KS_OK;
}

ks_status ks_diff_writer_add(ks_diff_writer *w, const ks_diff_prompt *p, ks_error *err) {
    ks_status s = KS_OK;
    const size_t n = (size_t)p->n, L = (size_t)w->L;
    if (p->n_layers != w->L || p->n_heads != w->H)
        return ks_error_set(err, KS_ERR_ARG, "%s: a prompt of another shape", w->path);
    if (n * L > w->cap) {
        float *b = realloc(w->buf, n * L * sizeof(float));
        if (!b) return ks_error_set(err, KS_ERR_NOMEM, "out of memory writing %s", w->path);
        w->buf = b;
        w->cap = n * L;
    }
    /* [layer][token] -> [token][layer] */
    for (int k = 0; k < 4; k++) {
        const float *src = k < 3 ? p->cos + (size_t)k * L * n : p->lens_kl;
        for (size_t l = 0; l < L; l++)
            for (size_t i = 0; i < n; i++) w->buf[i * L + l] = src[l * n + i];
        H5TRY(ext_append(w->ds[k < 3 ? W_COS0 + k : W_KL], H5T_NATIVE_FLOAT, 2, (hsize_t)w->rows, n, w->buf),
              "%s: cannot append to /tokens", w->path);
    }
    uint8_t *u = (uint8_t *)w->buf;
    for (size_t l = 0; l < L; l++)
        for (size_t i = 0; i < n; i++) u[i * L + l] = p->lens_top1[l * n + i];
    H5TRY(ext_append(w->ds[W_TOP1], H5T_NATIVE_UINT8, 2, (hsize_t)w->rows, n, u), "%s: /tokens/lens_top1", w->path);
    H5TRY(ext_append(w->ds[W_FKL], H5T_NATIVE_FLOAT, 1, (hsize_t)w->rows, n, p->final_kl), "%s: /tokens/final_kl", w->path);
    H5TRY(ext_append(w->ds[W_FTOP1], H5T_NATIVE_UINT8, 1, (hsize_t)w->rows, n, p->final_top1),
          "%s: /tokens/final_top1", w->path);
    H5TRY(ext_append(w->ds[W_JS], H5T_NATIVE_FLOAT, 3, (hsize_t)w->prompts, 1, p->head_js), "%s: /prompts/head_js", w->path);
    H5TRY(ext_append(w->ds[W_TV], H5T_NATIVE_FLOAT, 3, (hsize_t)w->prompts, 1, p->head_tv), "%s: /prompts/head_tv", w->path);
    w->rows += (int64_t)n;
    w->prompts++;
    H5TRY(ext_append(w->ds[W_OFFSETS], H5T_NATIVE_INT64, 1, (hsize_t)w->prompts, 1, &w->rows),
          "%s: /prompt_offsets", w->path);
out:
    return s;
}

ks_status ks_diff_writer_finish(ks_diff_writer *w, const ks_diff_summary *S,
                                const ks_diff_findings *F, ks_error *err) {
    ks_status s = KS_OK;
    hid_t g = -1, a = -1;
    const int L = w->L, H = w->H;
    hsize_t d3l[2] = {3, (hsize_t)L}, dl = (hsize_t)L, dlh[2] = {(hsize_t)L, (hsize_t)H};
    H5TRY(g = group(w->f, "/summary"), "%s: cannot create /summary", w->path);
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "cka", 2, d3l, S->cka, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "cos", 2, d3l, S->cos, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "head_js", 2, dlh, S->head_js, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "head_tv", 2, dlh, S->head_tv, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "lens_kl", 1, &dl, S->lens_kl, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "lens_top1", 1, &dl, S->lens_top1, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "weight_rel", 1, &dl, F->layer_rel, err));
    CHECK(ks_res_ds_f64(w->path, "/summary", g, "weight_delta", 1, &dl, F->layer_delta, err));
    CHECK(ks_h5_attr_f64(w->path, "/summary", g, "final_kl", S->final_kl, err));
    CHECK(ks_h5_attr_f64(w->path, "/summary", g, "final_top1", S->final_top1, err));
    H5TRY(a = H5Aopen(w->f, "complete", H5P_DEFAULT), "%s: cannot open attribute complete", w->path);
    int one = 1;
    H5TRY(H5Awrite(a, H5T_NATIVE_INT, &one), "%s: cannot write attribute complete", w->path);
out:
    if (a >= 0) H5Aclose(a);
    if (g >= 0) H5Gclose(g);
    for (int i = 0; i < W_COUNT; i++)
        if (w->ds[i] >= 0) H5Dclose(w->ds[i]), w->ds[i] = -1;
    if (w->f >= 0 && H5Fclose(w->f) < 0 && !s) s = ks_error_set(err, KS_ERR_IO, "%s: cannot close", w->path);
    w->f = -1;
    return s;
}

void ks_diff_writer_free(ks_diff_writer *w) {
    if (!w) return;
    for (int i = 0; i < W_COUNT; i++)
        if (w->ds[i] >= 0) H5Dclose(w->ds[i]);
    if (w->f >= 0) H5Fclose(w->f);
    free(w->buf);
    free(w->path);
    free(w);
}
