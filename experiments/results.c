/* results.c — an audit run's outputs: CSV tables, results.h5, report.md with charts
 * (ks_audit_results.h, docs/AUDITS.md "Results"). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dump_private.h"
#include "ks_audit_results.h"
#include "results_private.h"
#include "ks_plot.h"

#define H5TRY(call, ...) KS_H5_TRY_AS(KS_ERR_IO, call, __VA_ARGS__)
#define CHECK(call)                          \
    do {                                     \
        if ((s = (call)) != KS_OK) goto out; \
    } while (0)

char *ks_res_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ------------------------------------------------------------------ CSV */

void ks_res_csv_str(FILE *f, const char *s) {
    if (!s) s = "";
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* %.17g round-trips a double; NaN as an empty field (pandas and csv readers agree on that) */
void ks_res_csv_num(FILE *f, double v) {
    if (isnan(v)) return;
    fprintf(f, "%.17g", v);
}

static int pred_of(const ks_audit_items *items, const ks_audit_score *s) {
    int n = items->kind == KS_AUDIT_WINOGENDER ? 2 : s->n_options;
    if (items->kind == KS_AUDIT_CROWS || items->kind == KS_AUDIT_STEREOSET) return -1;
    int b = 0;
    for (int k = 1; k < n; k++)
        if (s->opt[k].ll > s->opt[b].ll) b = k;
    return b;
}


ks_status ks_res_write_atomic(const char *path, ks_res_write_fn fn, const void *arg, ks_error *err) {
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ks_status s = ks_error_set(err, KS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return s;
    }
    ks_status s = fn(f, arg, err);
    if (fflush(f) != 0 || ferror(f)) {
        if (!s) s = ks_error_set(err, KS_ERR_IO, "%s: write error: %s", tmp, strerror(errno));
    }
    if (fsync(fileno(f)) != 0 && !s)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot sync: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && !s) s = ks_error_set(err, KS_ERR_IO, "%s: cannot close", tmp);
    if (!s && rename(tmp, path) != 0)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, path,
                         strerror(errno));
    if (s) unlink(tmp);
    free(tmp);
    return s;
}

static ks_status items_csv(FILE *f, const void *arg, ks_error *err) {
    (void)err;
    const ks_audit_run *r = arg;
    const ks_audit_items *it = r->items;
    int K = 0;
    for (int i = 0; i < it->n; i++)
        if (it->items[i].n_options > K) K = it->items[i].n_options;
    bool crows = it->kind == KS_AUDIT_CROWS;
    fputs("index,id,file,line,category,group,gold,prediction", f);
    for (int k = 0; k < K; k++) fprintf(f, ",ll_%d,n_tokens_%d", k, k);
    if (crows) fputs(",ll_unmodified_0,n_unmodified_0,ll_unmodified_1,n_unmodified_1", f);
    fputc('\n', f);
    for (int i = 0; i < it->n; i++) {
        const ks_audit_item *x = &it->items[i];
        const ks_audit_score *s = &r->scores[i];
        const char *base = strrchr(x->file, '/');
        fprintf(f, "%d,", i);
        ks_res_csv_str(f, x->id);
        fputc(',', f);
        ks_res_csv_str(f, base ? base + 1 : x->file);
        fprintf(f, ",%ld,", x->line);
        ks_res_csv_str(f, x->category);
        fputc(',', f);
        ks_res_csv_str(f, x->group);
        fprintf(f, ",%d,%d", x->gold, pred_of(it, s));
        for (int k = 0; k < K; k++) {
            fputc(',', f);
            if (k < s->n_options) ks_res_csv_num(f, s->opt[k].ll);
            fputc(',', f);
            if (k < s->n_options) fprintf(f, "%d", s->opt[k].n_tokens);
        }
        if (crows) {
            for (int k = 0; k < 2; k++) {
                fputc(',', f);
                ks_res_csv_num(f, s->opt[k].ll_unmodified);
                fprintf(f, ",%d", s->opt[k].n_unmodified);
            }
        }
        fputc('\n', f);
    }
    return KS_OK;
}

static ks_status metrics_csv(FILE *f, const void *arg, ks_error *err) {
    (void)err;
    const ks_audit_metrics *m = arg;
    fputs("audit,metric,category,value,ci_lo,ci_hi,p_value,n\n", f);
    for (int i = 0; i < m->n; i++) {
        const ks_audit_metric *x = &m->m[i];
        ks_res_csv_str(f, x->audit);
        fputc(',', f);
        ks_res_csv_str(f, x->metric);
        fputc(',', f);
        ks_res_csv_str(f, x->category);
        fputc(',', f);
        ks_res_csv_num(f, x->value);
        fputc(',', f);
        ks_res_csv_num(f, x->ci_lo);
        fputc(',', f);
        ks_res_csv_num(f, x->ci_hi);
        fputc(',', f);
        ks_res_csv_num(f, x->p_value);
        fprintf(f, ",%d\n", x->n);
    }
    return KS_OK;
}

/* BOLD: generations_<audit>.jsonl, one JSON object per item, for scoring the generations later
 * (toxicity, regard, sentiment classifiers) */
static ks_status generations_jsonl(FILE *f, const void *arg, ks_error *err) {
    const ks_audit_run *r = arg;
    for (int i = 0; i < r->items->n; i++) {
        const ks_audit_item *x = &r->items->items[i];
        const ks_audit_score *sc = &r->scores[i];
        json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s?, s:i, s:f}", "index", i, "id",
                              x->id, "category", x->category, "group", x->group, "prompt",
                              x->options[0].text, "generation", x->context, "n_tokens",
                              sc->opt[0].n_tokens, "logprob", sc->opt[0].ll);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        json_decref(o);
        if (!line) return ks_error_set(err, KS_ERR_NOMEM, "out of memory writing generations");
        fputs(line, f);
        fputc('\n', f);
        free(line);
    }
    return KS_OK;
}

ks_status ks_audit_write_csv(const char *dir, const ks_audit_run *runs, int n_runs,
                             const ks_audit_metrics *m, ks_error *err) {
    ks_status s = KS_OK;
    for (int a = 0; a < n_runs && !s; a++) {
        char name[300];
        snprintf(name, sizeof name, "items_%s.csv", runs[a].name);
        char *p = ks_res_join(dir, name);
        if (!p) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        s = ks_res_write_atomic(p, items_csv, &runs[a], err);
        free(p);
        if (s || runs[a].items->kind != KS_AUDIT_BOLD) continue;
        snprintf(name, sizeof name, "generations_%s.jsonl", runs[a].name);
        if (!(p = ks_res_join(dir, name))) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        s = ks_res_write_atomic(p, generations_jsonl, &runs[a], err);
        free(p);
    }
    if (s) return s;
    char *p = ks_res_join(dir, "metrics.csv");
    if (!p) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    s = ks_res_write_atomic(p, metrics_csv, m, err);
    free(p);
    return s;
}

/* ------------------------------------------------------------------ HDF5 */

ks_status ks_res_ds_str(const char *path, const char *obj, hid_t g, const char *name,
                        const char *const *v, size_t n, ks_error *err) {
    ks_status s = KS_OK;
    size_t w = 1;
    for (size_t i = 0; i < n; i++)
        if (v[i] && strlen(v[i]) > w) w = strlen(v[i]);
    char *buf = calloc(n ? n : 1, w);
    hid_t t = -1;
    if (!buf) return ks_error_set(err, KS_ERR_NOMEM, "out of memory writing %s", path);
    for (size_t i = 0; i < n; i++)
        if (v[i]) memcpy(buf + i * w, v[i], strlen(v[i]));
    H5TRY(t = ks_h5_fixed_str_type(w, H5T_STR_NULLPAD), "%s: %s/%s: cannot make a string type",
          path, obj, name);
    hsize_t dim = n;
    s = ks_h5_write_ds(path, obj, g, name, t, t, 1, &dim, buf, err);
out:
    if (t >= 0) H5Tclose(t);
    free(buf);
    return s;
}

ks_status ks_res_ds_f64(const char *path, const char *obj, hid_t g, const char *name, int rank,
                        const hsize_t *dims, const double *v, ks_error *err) {
    return ks_h5_write_ds(path, obj, g, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, rank, dims, v,
                          err);
}

ks_status ks_res_ds_i32(const char *path, const char *obj, hid_t g, const char *name, int rank,
                        const hsize_t *dims, const int *v, ks_error *err) {
    return ks_h5_write_ds(path, obj, g, name, H5T_STD_I32LE, H5T_NATIVE_INT, rank, dims, v, err);
}

static ks_status write_run(const char *path, hid_t root, const ks_audit_run *r, ks_error *err) {
    ks_status s = KS_OK;
    const ks_audit_items *it = r->items;
    size_t N = (size_t)it->n;
    char obj[300];
    snprintf(obj, sizeof obj, "/audits/%s", r->name);
    hid_t g = -1;
    const char **sv = calloc(N + 1, sizeof(char *));
    /* options per item: 3 (the benchmarks' layout) or more (counterfactual targets) */
    int K = 3;
    for (size_t i = 0; i < N; i++)
        if (it->items[i].n_options > K) K = it->items[i].n_options;
    bool cf = it->kind == KS_AUDIT_COUNTERFACTUAL, bold = it->kind == KS_AUDIT_BOLD;
    size_t W = cf || bold ? KS_AUDIT_NEXT_TOPK : 0;
    double *ll = calloc(N * (size_t)K + 1, sizeof(double));
    double *llu = calloc(N * (W > 2 ? W : 2) + 1, sizeof(double));
    int *nt = calloc(N * (size_t)(K > (int)W ? K : (int)W) + 1, sizeof(int));
    int *iv = calloc(N + 1, sizeof(int));
    if (!sv || !ll || !llu || !nt || !iv) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory writing %s", path);
        goto out;
    }
    H5TRY(g = H5Gcreate2(root, obj, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "%s: cannot create group %s", path, obj);
    CHECK(ks_h5_attr_str(path, obj, g, "kind", ks_audit_kind_name(it->kind), err));
    CHECK(ks_h5_attr_str(path, obj, g, "template", r->template_name ? r->template_name : "", err));
    for (size_t i = 0; i < N; i++) sv[i] = it->items[i].id;
    CHECK(ks_res_ds_str(path, obj, g, "id", sv, N, err));
    for (size_t i = 0; i < N; i++) sv[i] = it->items[i].category;
    CHECK(ks_res_ds_str(path, obj, g, "category", sv, N, err));
    for (size_t i = 0; i < N; i++) sv[i] = it->items[i].group;
    CHECK(ks_res_ds_str(path, obj, g, "group", sv, N, err));
    for (size_t i = 0; i < N; i++) {
        const char *b = strrchr(it->items[i].file, '/');
        sv[i] = b ? b + 1 : it->items[i].file;
    }
    CHECK(ks_res_ds_str(path, obj, g, "file", sv, N, err));
    hsize_t d1 = N, d2[2] = {N, (hsize_t)K};
    for (size_t i = 0; i < N; i++) iv[i] = (int)it->items[i].line;
    CHECK(ks_res_ds_i32(path, obj, g, "line", 1, &d1, iv, err));
    for (size_t i = 0; i < N; i++) iv[i] = it->items[i].gold;
    CHECK(ks_res_ds_i32(path, obj, g, "gold", 1, &d1, iv, err));
    for (size_t i = 0; i < N; i++) iv[i] = pred_of(it, &r->scores[i]);
    CHECK(ks_res_ds_i32(path, obj, g, "prediction", 1, &d1, iv, err));
    for (size_t i = 0; i < N; i++)
        for (int k = 0; k < K; k++) {
            bool has = k < r->scores[i].n_options;
            ll[i * (size_t)K + k] = has ? r->scores[i].opt[k].ll : NAN;
            nt[i * (size_t)K + k] = has ? r->scores[i].opt[k].n_tokens : 0;
        }
    CHECK(ks_res_ds_f64(path, obj, g, "ll", 2, d2, ll, err));
    CHECK(ks_res_ds_i32(path, obj, g, "n_tokens", 2, d2, nt, err));
    if (it->kind == KS_AUDIT_CROWS) {
        hsize_t du[2] = {N, 2};
        for (size_t i = 0; i < N; i++)
            for (int k = 0; k < 2; k++) {
                llu[i * 2 + k] = r->scores[i].opt[k].ll_unmodified;
                nt[i * 2 + k] = r->scores[i].opt[k].n_unmodified;
            }
        CHECK(ks_res_ds_f64(path, obj, g, "ll_unmodified", 2, du, llu, err));
        CHECK(ks_res_ds_i32(path, obj, g, "n_unmodified", 2, du, nt, err));
    }
    if (cf || bold) {
        /* counterfactual: the filled contexts, template indices, targets, and the top of each
         * item's next-token distribution; BOLD: the generated texts, tokens and their
         * log-probs (ids -1 / log-probs NaN past n_next) */
        for (size_t i = 0; i < N; i++) sv[i] = it->items[i].context ? it->items[i].context : "";
        CHECK(ks_res_ds_str(path, obj, g, cf ? "context" : "generation", sv, N, err));
        for (size_t i = 0; i < N; i++) iv[i] = it->items[i].flag;
        if (cf) CHECK(ks_res_ds_i32(path, obj, g, "template_index", 1, &d1, iv, err));
        if (N && cf) {
            const char *tv[KS_AUDIT_MAX_OPTIONS];
            for (int k = 0; k < it->items[0].n_options; k++) tv[k] = it->items[0].options[k].text;
            CHECK(ks_res_ds_str(path, obj, g, "targets", tv, (size_t)it->items[0].n_options, err));
        }
        hsize_t dn[2] = {N, W};
        for (size_t i = 0; i < N; i++)
            for (size_t k = 0; k < W; k++) {
                bool has = (int)k < r->scores[i].n_next;
                nt[i * W + k] = has ? r->scores[i].next_id[k] : -1;
                llu[i * W + k] = has ? (double)r->scores[i].next_lp[k] : NAN;
            }
        CHECK(ks_res_ds_i32(path, obj, g, cf ? "next_ids" : "generation_ids", 2, dn, nt, err));
        CHECK(ks_res_ds_f64(path, obj, g, cf ? "next_logprobs" : "generation_logprobs", 2, dn, llu,
                     err));
    }
out:
    if (g >= 0) H5Gclose(g);
    free(sv);
    free(ll);
    free(llu);
    free(nt);
    free(iv);
    return s;
}

ks_status ks_audit_write_h5(const char *dir, const ks_audit_run *runs, int n_runs,
                            const ks_audit_metrics *m, const ks_audit_meta *meta, ks_error *err) {
    ks_h5_init();
    char *path = ks_res_join(dir, "results.h5"), *tmp = ks_res_join(dir, "results.h5.tmp");
    ks_status s = KS_OK;
    hid_t f = -1, fapl = -1, ga = -1, gm = -1;
    size_t N = m ? (size_t)m->n : 0;
    const char **sv = calloc(N + 1, sizeof(char *));
    double *v = calloc(N * 3 + 1, sizeof(double));
    int *iv = calloc(N + 1, sizeof(int));
    if (!path || !tmp || !sv || !v || !iv) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory writing results.h5");
        goto out;
    }
    H5TRY(fapl = ks_h5_latest_fapl(), "%s: cannot make a file access list", tmp);
    H5TRY(f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "%s: cannot create", tmp);
    CHECK(ks_h5_attr_str(tmp, "/", f, "format", KS_AUDIT_FORMAT, err));
    CHECK(ks_h5_attr_i32(tmp, "/", f, "format_version", KS_AUDIT_FORMAT_VERSION, err));
    CHECK(ks_h5_attr_str(tmp, "/", f, "koalascope_version", ks_version(), err));
    if (meta) {
        const ks_spec *sp = meta->spec;
        CHECK(ks_h5_attr_str(tmp, "/", f, "spec", sp && sp->canonical ? sp->canonical : "", err));
        CHECK(ks_h5_attr_str(tmp, "/", f, "spec_path", sp && sp->path ? sp->path : "", err));
        CHECK(ks_h5_attr_str(tmp, "/", f, "model_path", sp && sp->model ? sp->model : "", err));
        CHECK(ks_h5_attr_str(tmp, "/", f, "model_sha256",
                             meta->model_sha256 ? meta->model_sha256 : "", err));
        CHECK(ks_h5_attr_str(tmp, "/", f, "model_sha256_of",
                             meta->model_sha256_of ? meta->model_sha256_of : "", err));
        CHECK(ks_h5_attr_str(tmp, "/", f, "backend", meta->backend ? meta->backend : "cpu", err));
        CHECK(ks_h5_attr_str(tmp, "/", f, "command_line",
                             meta->command_line ? meta->command_line : "", err));
        CHECK(ks_h5_attr_i32(tmp, "/", f, "n_ranks", meta->n_ranks, err));
        CHECK(ks_h5_attr_i32(tmp, "/", f, "seed", sp ? (int)(sp->seed & 0x7fffffff) : 0, err));
        char when[64];
        time_t now = time(NULL);
        struct tm tmv;
        gmtime_r(&now, &tmv);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
        CHECK(ks_h5_attr_str(tmp, "/", f, "created", when, err));
    }
    H5TRY(ga = H5Gcreate2(f, "/audits", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "%s: cannot create /audits", tmp);
    for (int a = 0; a < n_runs; a++) CHECK(write_run(tmp, f, &runs[a], err));
    H5TRY(gm = H5Gcreate2(f, "/metrics", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "%s: cannot create /metrics", tmp);
    hsize_t d1 = N, d2[2] = {N, 3};
    for (size_t i = 0; i < N; i++) sv[i] = m->m[i].audit;
    CHECK(ks_res_ds_str(tmp, "/metrics", gm, "audit", sv, N, err));
    for (size_t i = 0; i < N; i++) sv[i] = m->m[i].metric;
    CHECK(ks_res_ds_str(tmp, "/metrics", gm, "metric", sv, N, err));
    for (size_t i = 0; i < N; i++) sv[i] = m->m[i].category;
    CHECK(ks_res_ds_str(tmp, "/metrics", gm, "category", sv, N, err));
    for (size_t i = 0; i < N; i++) {
        v[3 * i] = m->m[i].value;
        v[3 * i + 1] = m->m[i].ci_lo;
        v[3 * i + 2] = m->m[i].ci_hi;
    }
    CHECK(ks_res_ds_f64(tmp, "/metrics", gm, "value_ci", 2, d2, v, err));
    for (size_t i = 0; i < N; i++) v[i] = m->m[i].p_value;
    CHECK(ks_res_ds_f64(tmp, "/metrics", gm, "p_value", 1, &d1, v, err));
    for (size_t i = 0; i < N; i++) iv[i] = m->m[i].n;
    CHECK(ks_res_ds_i32(tmp, "/metrics", gm, "n", 1, &d1, iv, err));
out:
    if (gm >= 0) H5Gclose(gm);
    if (ga >= 0) H5Gclose(ga);
    if (f >= 0 && H5Fclose(f) < 0 && !s) s = ks_error_set(err, KS_ERR_IO, "%s: cannot close", tmp);
    if (fapl >= 0) H5Pclose(fapl);
    if (!s && rename(tmp, path) != 0)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, path,
                         strerror(errno));
    if (s && tmp) unlink(tmp);
    free(path);
    free(tmp);
    free(sv);
    free(v);
    free(iv);
    return s;
}

/* ------------------------------------------------------------------ report */

/* the reference line of an audit's headline chart: its metric's null */
static double reference_of(ks_audit_kind k) {
    switch (k) {
    case KS_AUDIT_CROWS:
    case KS_AUDIT_STEREOSET: return 50.0;
    case KS_AUDIT_BBQ:
    case KS_AUDIT_WINOBIAS: return 0.0;
    default: return NAN;
    }
}

/* The chart of one audit: its headline metric (the one with a null) per category. */
static const char *headline(ks_audit_kind k) {
    switch (k) {
    case KS_AUDIT_CROWS: return "pct_stereotype";
    case KS_AUDIT_STEREOSET: return "ss";
    case KS_AUDIT_BBQ: return "bias_score_disambig";
    case KS_AUDIT_WINOBIAS: return "gap";
    case KS_AUDIT_WINOGENDER: return "accuracy";
    case KS_AUDIT_COUNTERFACTUAL: return "share_term";
    case KS_AUDIT_BOLD: return "gen_logprob";
    default: return "";
    }
}

/* Counterfactual: the index, in order of first appearance, of the group of term (0 if none;
 * groups past the palette share colours anyway, so only the first 64 are told apart) */
static int group_index(const ks_audit_items *items, const char *term) {
    const char *seen[64];
    int n = 0;
    for (int i = 0; i < items->n; i++) {
        const ks_audit_item *x = &items->items[i];
        int g = 0;
        while (g < n && strcmp(seen[g], x->category)) g++;
        if (g == n && n < 64) seen[n++] = x->category;
        if (!strcmp(x->group, term)) return g;
    }
    return 0;
}

static void fmt_num(char *b, size_t n, double v) {
    if (isnan(v))
        snprintf(b, n, "n/a");
    else
        snprintf(b, n, "%.4g", v);
}

typedef struct {
    const ks_audit_run *runs;
    int n_runs;
    const ks_audit_metrics *m;
    const ks_audit_meta *meta;
    char **charts; /* per run: relative chart path or NULL */
} report_arg;

/* The drill-down table of one audit: each item linked to its prompts and attributions in the
 * drill-down file (docs/AUDITS.md#drill-down). Cells are escaped for Markdown tables. */
static void md_cell(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else if (*s == '\n' || *s == '\r') fputc(' ', f);
        else fputc(*s, f);
    }
}

static void drill_md(FILE *f, const ks_audit_run *run) {
    fprintf(f, "\n### Drill-down (`%s`)\n\nContrast = ll(option a) − ll(option b). Prompts are "
               "the dump's prompt indices of options a and b; attributions are under "
               "`/attributions/i<item>.…` of the same file (`koalascope dump-info`, `koalascope "
               "render`).\n\n| item | id | category | a, b | contrast | prompts | top tokens | "
               "top heads |\n|---:|---|---|---|---:|---|---|---|\n", run->drill_file);
    for (int e = 0; e < run->n_drill; e++) {
        const ks_drill_entry *d = &run->drill[e];
        const ks_audit_item *x = &run->items->items[d->item];
        fprintf(f, "| %d | ", d->item);
        md_cell(f, x->id);
        fputs(" | ", f);
        md_cell(f, x->category);
        fprintf(f, " | %d, %d | %.4g | ", d->opt[0], d->opt[1], d->contrast);
        if (d->prompt[0] >= 0) fprintf(f, "%lld", (long long)d->prompt[0]);
        if (d->prompt[1] >= 0) fprintf(f, ", %lld", (long long)d->prompt[1]);
        fputs(" | ", f);
        md_cell(f, d->top_tokens);
        fputs(" | ", f);
        md_cell(f, d->top_heads);
        fputs(" |\n", f);
    }
}

static ks_status report_md(FILE *f, const void *arg, ks_error *err) {
    (void)err;
    const report_arg *r = arg;
    const ks_spec *sp = r->meta ? r->meta->spec : NULL;
    fprintf(f, "# Bias audit report\n\n");
    if (sp) {
        fprintf(f, "- spec: `%s`\n- model: `%s`\n", sp->path, sp->model);
        if (r->meta->model_sha256)
            fprintf(f, "- model sha256 (%s): `%s`\n", r->meta->model_sha256_of,
                    r->meta->model_sha256);
        fprintf(f, "- backend: %s; processes: %d; seed: %llu; bootstrap resamples: %d; "
                   "permutations: %d; CI level: %g\n",
                r->meta->backend ? r->meta->backend : "cpu", r->meta->n_ranks,
                (unsigned long long)sp->seed, sp->n_bootstrap, sp->n_permutations, sp->ci);
    }
    fprintf(f, "- koalascope %s\n\nMetric definitions: docs/AUDITS.md. CI: percentile bootstrap; "
               "p: permutation test against the metric's null (50 for pct_stereotype and SS, 0 "
               "for bias scores and gaps).\n",
            ks_version());
    for (int a = 0; a < r->n_runs; a++) {
        const ks_audit_run *run = &r->runs[a];
        fprintf(f, "\n## %s (%s, %d items)\n\n", run->name, ks_audit_kind_name(run->items->kind),
                run->items->n);
        if (r->charts[a]) fprintf(f, "![%s](%s)\n\n", run->name, r->charts[a]);
        fprintf(f, "| metric | category | value | CI | p | n |\n|---|---|---:|---|---:|---:|\n");
        for (int i = 0; i < r->m->n; i++) {
            const ks_audit_metric *x = &r->m->m[i];
            if (strcmp(x->audit, run->name) != 0) continue;
            char v[32], lo[32], hi[32], p[32];
            fmt_num(v, sizeof v, x->value);
            fmt_num(lo, sizeof lo, x->ci_lo);
            fmt_num(hi, sizeof hi, x->ci_hi);
            fmt_num(p, sizeof p, x->p_value);
            fprintf(f, "| %s | %s | %s | [%s, %s] | %s | %d |\n", x->metric, x->category, v, lo,
                    hi, p, x->n);
        }
        if (run->n_drill > 0) drill_md(f, run);
    }
    return KS_OK;
}

ks_status ks_audit_write_report(const char *dir, const ks_audit_run *runs, int n_runs,
                                const ks_audit_metrics *m, const ks_audit_meta *meta,
                                ks_error *err) {
    ks_status s = KS_OK;
    char **charts = calloc((size_t)n_runs + 1, sizeof(char *));
    char *cdir = ks_res_join(dir, "charts");
    if (!charts || !cdir) {
        free(charts);
        free(cdir);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    if (mkdir(cdir, 0777) != 0 && errno != EEXIST) {
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot create: %s", cdir, strerror(errno));
        goto out;
    }
    for (int a = 0; a < n_runs && !s; a++) {
        const char *metric = headline(runs[a].items->kind);
        int n = 0;
        for (int i = 0; i < m->n; i++)
            if (strcmp(m->m[i].audit, runs[a].name) == 0 && strcmp(m->m[i].metric, metric) == 0)
                n++;
        if (runs[a].items->kind == KS_AUDIT_COUNTERFACTUAL && n > 60) {
            /* hundreds of terms (every HolisticBias descriptor): the chart shows the groups;
             * the terms are in metrics.csv */
            metric = "share";
            n = 0;
            for (int i = 0; i < m->n; i++)
                if (!strcmp(m->m[i].audit, runs[a].name) && !strcmp(m->m[i].metric, metric)) n++;
        }
        ks_forest_row *rows = calloc((size_t)n + 1, sizeof *rows);
        char (*notes)[48] = calloc((size_t)n + 1, sizeof *notes);
        if (!rows || !notes) {
            free(rows);
            free(notes);
            s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            break;
        }
        int k = 0;
        for (int i = 0; i < m->n; i++) {
            const ks_audit_metric *x = &m->m[i];
            if (strcmp(x->audit, runs[a].name) != 0 || strcmp(x->metric, metric) != 0) continue;
            if (isnan(x->p_value))
                snprintf(notes[k], sizeof notes[k], "n=%d", x->n);
            else
                snprintf(notes[k], sizeof notes[k], "n=%d, p=%.3g", x->n, x->p_value);
            /* the overall row black; a counterfactual term in its group's colour */
            int color = strcmp(x->category, "all") == 0 ? 0 : 1;
            if (runs[a].items->kind == KS_AUDIT_COUNTERFACTUAL)
                color = 1 + group_index(runs[a].items, x->category);
            rows[k] = (ks_forest_row){.label = x->category, .value = x->value, .lo = x->ci_lo,
                                      .hi = x->ci_hi, .color = color, .note = notes[k]};
            k++;
        }
        char title[300], sub[200], rel[320];
        snprintf(title, sizeof title, "%s: %s by category", runs[a].name, metric);
        snprintf(sub, sizeof sub, "%s, %d items; %g%% bootstrap CI",
                 ks_audit_kind_name(runs[a].items->kind), runs[a].items->n,
                 meta && meta->spec ? 100.0 * meta->spec->ci : 95.0);
        ks_forest fo = {.title = title, .subtitle = sub, .xlabel = metric,
                        .xmin = NAN, .xmax = NAN, .reference = reference_of(runs[a].items->kind),
                        .rows = rows, .n_rows = k};
        snprintf(rel, sizeof rel, "charts/%s.png", runs[a].name);
        char *p = ks_res_join(dir, rel);
        if (!p)
            s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        else
            s = ks_forest_save(&fo, p, 900, 0, err);
        if (!s) {
            snprintf(rel, sizeof rel, "charts/%s.svg", runs[a].name);
            free(p);
            p = ks_res_join(dir, rel);
            s = p ? ks_forest_save(&fo, p, 900, 0, err) : ks_error_set(err, KS_ERR_NOMEM, "oom");
            snprintf(rel, sizeof rel, "charts/%s.png", runs[a].name);
            charts[a] = strdup(rel);
        }
        free(p);
        free(rows);
        free(notes);
    }
    if (!s) {
        report_arg ra = {runs, n_runs, m, meta, charts};
        char *p = ks_res_join(dir, "report.md");
        s = p ? ks_res_write_atomic(p, report_md, &ra, err) : ks_error_set(err, KS_ERR_NOMEM, "oom");
        free(p);
    }
out:
    for (int a = 0; a < n_runs; a++) free(charts[a]);
    free(charts);
    free(cdir);
    return s;
}

ks_status ks_audit_results_check(const char *path, int *n_metrics, ks_error *err) {
    ks_h5_init();
    ks_status s = KS_OK;
    hid_t f = -1, a = -1, t = -1, d = -1, sp = -1;
    char fmt[64] = "";
    if ((s = ks_h5_check_superblock(path, err))) return s;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0) return ks_error_set(err, KS_ERR_IO, "%s: cannot open as HDF5", path);
    H5E_BEGIN_TRY {
        a = H5Aopen(f, "format", H5P_DEFAULT);
        if (a >= 0) t = H5Aget_type(a);
        if (t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) &&
            H5Tget_size(t) < sizeof fmt) {
            hid_t mt = H5Tcopy(t);
            if (mt >= 0 && H5Aread(a, mt, fmt) < 0) fmt[0] = 0;
            if (mt >= 0) H5Tclose(mt);
        }
        d = H5Dopen2(f, "/metrics/p_value", H5P_DEFAULT);
        if (d >= 0) sp = H5Dget_space(d);
    }
    H5E_END_TRY;
    fmt[sizeof fmt - 1] = 0;
    hsize_t n = 0;
    if (strcmp(fmt, KS_AUDIT_FORMAT) != 0)
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: not a koalascope audit results file (its "
                         "root attribute 'format' is not \"%s\")", path, KS_AUDIT_FORMAT);
    else if (sp < 0 || H5Sget_simple_extent_ndims(sp) != 1 ||
             H5Sget_simple_extent_dims(sp, &n, NULL) < 0)
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /metrics/p_value is missing or not 1-D", path);
    else if (n_metrics)
        *n_metrics = (int)n;
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    H5Fclose(f);
    return s;
}
