/* probe_results.c — the probe results file (ks_results.h, docs/PROBES.md). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dump_private.h"
#include "ks_results.h"

#define H5TRY(call, ...) KS_H5_TRY_AS(KS_ERR_IO, call, __VA_ARGS__)
#define CHECK(call)                          \
    do {                                     \
        if ((s = (call)) != KS_OK) goto out; \
    } while (0)

/* A 1-D dataset of n doubles. */
static ks_status ds_f64(const char *path, const char *obj, hid_t g, const char *name,
                        const double *v, hsize_t n, ks_error *err) {
    return ks_h5_write_ds(path, obj, g, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &n, v, err);
}

/* A 1-D dataset of n strings (fixed width, NUL-padded, as the dump's string datasets). */
static ks_status ds_str(const char *path, const char *obj, hid_t g, const char *name,
                        const char *const *v, size_t n, ks_error *err) {
    ks_status s = KS_OK;
    size_t w = 1;
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) > w) w = strlen(v[i]);
    char *buf = calloc(n ? n : 1, w);
    hid_t t = -1;
    if (!buf) return ks_error_set(err, KS_ERR_NOMEM, "out of memory writing %s", path);
    for (size_t i = 0; i < n; i++) memcpy(buf + i * w, v[i], strlen(v[i]));
    H5TRY(t = ks_h5_fixed_str_type(w, H5T_STR_NULLPAD), "%s: %s/%s: cannot make a string type",
          path, obj, name);
    hsize_t dim = n;
    s = ks_h5_write_ds(path, obj, g, name, t, t, 1, &dim, buf, err);
out:
    if (t >= 0) H5Tclose(t);
    free(buf);
    return s;
}

/* [H, 3] (value, lo, hi) of one metric over the hooks. */
static ks_status ds_ci(const char *path, hid_t f, const char *name, const ks_probe_results *r,
                       size_t off, ks_error *err) {
    double *v = malloc(sizeof(double) * 3 * (size_t)r->n_hooks);
    if (!v) return ks_error_set(err, KS_ERR_NOMEM, "out of memory writing %s", path);
    for (int h = 0; h < r->n_hooks; h++) {
        const ks_ci *c = (const ks_ci *)((const char *)&r->hooks[h] + off);
        v[3 * h] = c->value;
        v[3 * h + 1] = c->lo;
        v[3 * h + 2] = c->hi;
    }
    hsize_t dims[2] = {(hsize_t)r->n_hooks, 3};
    ks_status s = ks_h5_write_ds(path, "/", f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, v, err);
    free(v);
    return s;
}

static ks_status write_hook(const char *path, hid_t parent, const ks_probe_record *p,
                            ks_error *err) {
    ks_status s = KS_OK;
    hid_t g = -1;
    char obj[512];
    snprintf(obj, sizeof obj, "/probes/%s", p->hook);
    H5TRY(g = H5Gcreate2(parent, p->hook, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "%s: cannot create %s", path, obj);
    hsize_t dims[2] = {(hsize_t)p->n_out, (hsize_t)p->d};
    CHECK(ks_h5_write_ds(path, obj, g, "coef", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, p->coef, err));
    CHECK(ds_f64(path, obj, g, "intercept", p->intercept, (hsize_t)p->n_out, err));
    CHECK(ds_f64(path, obj, g, "mean", p->mean, (hsize_t)p->d, err));
    CHECK(ds_f64(path, obj, g, "scale", p->scale, (hsize_t)p->d, err));
    if (p->diff_means) CHECK(ds_f64(path, obj, g, "diff_means", p->diff_means, (hsize_t)p->d, err));
    CHECK(ks_h5_attr_i32(path, obj, g, "layer", p->layer, err));
    CHECK(ks_h5_attr_i32(path, obj, g, "iterations", p->iterations, err));
    CHECK(ks_h5_attr_i32(path, obj, g, "converged", p->converged, err));
out:
    if (g >= 0) H5Gclose(g);
    return s;
}

static ks_status write_file(const char *tmp, const char *path, const ks_probe_results *r,
                            ks_error *err) {
    ks_status s = KS_OK;
    hid_t fapl = -1, f = -1, g = -1;
    int H = r->n_hooks;
    const char **names = malloc(sizeof(char *) * (size_t)(H ? H : 1));
    double *col = malloc(sizeof(double) * (size_t)(H ? H : 1) * 4);
    if (!names || !col) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory writing %s", path);
        goto out;
    }
    H5TRY(fapl = ks_h5_latest_fapl(), "%s: cannot make a file access list", path);
    H5TRY(f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "%s: cannot create", tmp);
    CHECK(ks_h5_attr_str(path, "/", f, "format", KS_PROBE_FORMAT, err));
    CHECK(ks_h5_attr_i32(path, "/", f, "format_version", KS_PROBE_FORMAT_VERSION, err));
    CHECK(ks_h5_attr_str(path, "/", f, "task", r->task, err));
    CHECK(ks_h5_attr_str(path, "/", f, "dump", r->dump_path, err));
    CHECK(ks_h5_attr_str(path, "/", f, "labels", r->labels_path, err));
    CHECK(ks_h5_attr_str(path, "/", f, "labels_sha256", r->labels_sha256, err));
    CHECK(ks_h5_attr_str(path, "/", f, "position", r->position, err));
    CHECK(ks_h5_attr_str(path, "/", f, "command_line", r->command_line, err));
    CHECK(ks_h5_attr_str(path, "/", f, "model_sha256", r->model_fingerprint, err));
    CHECK(ks_h5_attr_str(path, "/", f, "koalascope_version", KS_VERSION, err));
    CHECK(ks_h5_attr_f64(path, "/", f, "C", r->C, err));
    CHECK(ks_h5_attr_f64(path, "/", f, "alpha", r->alpha, err));
    CHECK(ks_h5_attr_f64(path, "/", f, "ci_level", r->ci_level, err));
    CHECK(ks_h5_attr_i32(path, "/", f, "folds", r->folds, err));
    CHECK(ks_h5_attr_i32(path, "/", f, "n_bootstrap", r->n_bootstrap, err));
    CHECK(ks_h5_attr_i32(path, "/", f, "n_shuffles", r->n_shuffles, err));
    CHECK(ks_h5_attr_i32(path, "/", f, "standardize", r->standardize, err));
    {
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->seed);
        CHECK(ks_h5_attr_str(path, "/", f, "seed", seed, err));
    }
    if (r->n_classes > 0) CHECK(ds_str(path, "/", f, "classes", r->classes, (size_t)r->n_classes, err));
    for (int h = 0; h < H; h++) names[h] = r->hooks[h].hook;
    CHECK(ds_str(path, "/", f, "hooks", names, (size_t)H, err));
    hsize_t nh = (hsize_t)H;
    for (int h = 0; h < H; h++) col[h] = r->hooks[h].layer;
    CHECK(ks_h5_write_ds(path, "/", f, "layer", H5T_STD_I32LE, H5T_NATIVE_DOUBLE, 1, &nh, col, err));
    for (int h = 0; h < H; h++) col[h] = (double)r->hooks[h].n_rows;
    CHECK(ks_h5_write_ds(path, "/", f, "n_rows", H5T_STD_I64LE, H5T_NATIVE_DOUBLE, 1, &nh, col, err));
    for (int h = 0; h < H; h++) col[h] = (double)r->hooks[h].n_groups;
    CHECK(ks_h5_write_ds(path, "/", f, "n_groups", H5T_STD_I64LE, H5T_NATIVE_DOUBLE, 1, &nh, col, err));
    for (int h = 0; h < H; h++) col[h] = r->hooks[h].selectivity;
    CHECK(ds_f64(path, "/", f, "selectivity", col, nh, err));
    for (int h = 0; h < H; h++) col[h] = r->hooks[h].beats_controls;
    CHECK(ks_h5_write_ds(path, "/", f, "beats_controls", H5T_STD_I8LE, H5T_NATIVE_DOUBLE, 1, &nh, col, err));
    CHECK(ds_ci(path, f, "accuracy", r, offsetof(ks_probe_record, accuracy), err));
    CHECK(ds_ci(path, f, "auroc", r, offsetof(ks_probe_record, auroc), err));
    CHECK(ds_ci(path, f, "r2", r, offsetof(ks_probe_record, r2), err));
    CHECK(ds_ci(path, f, "majority", r, offsetof(ks_probe_record, majority), err));
    CHECK(ds_ci(path, f, "shuffled", r, offsetof(ks_probe_record, shuffled), err));
    CHECK(ds_ci(path, f, "control", r, offsetof(ks_probe_record, control), err));
    H5TRY(g = H5Gcreate2(f, "probes", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "%s: cannot create /probes", path);
    for (int h = 0; h < H; h++) CHECK(write_hook(path, g, &r->hooks[h], err));
out:
    if (g >= 0) H5Gclose(g);
    if (f >= 0 && H5Fclose(f) < 0 && !s) s = ks_h5_error(err, KS_ERR_IO, "%s: cannot close", tmp);
    if (fapl >= 0) H5Pclose(fapl);
    free(names);
    free(col);
    return s;
}

ks_status ks_probe_results_write(const char *path, const ks_probe_results *r, bool overwrite,
                                 ks_error *err) {
    if (!path || !r) return ks_error_set(err, KS_ERR_ARG, "ks_probe_results_write: NULL argument");
    for (int h = 0; h < r->n_hooks; h++) {
        const char *n = r->hooks[h].hook;
        if (!n || !*n || strchr(n, '/') || !strcmp(n, ".") || !strcmp(n, ".."))
            return ks_error_set(err, KS_ERR_ARG, "%s: hook name '%s' cannot name a group", path, n ? n : "");
    }
    if (!overwrite && access(path, F_OK) == 0)
        return ks_error_set(err, KS_ERR_ARG, "%s exists (remove it or overwrite)", path);
    ks_h5_init();
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    ks_status s = write_file(tmp, path, r, err);
    if (!s && rename(tmp, path) != 0)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
    if (s) unlink(tmp);
    free(tmp);
    return s;
}

/* ================================================================ reading */

/* A fixed-length string attribute of loc into buf (cap bytes), "" when absent or of another
 * type (a variable-length string is not read: its bytes live in an unchecksummed heap). */
static void read_str_attr(hid_t loc, const char *name, char *buf, size_t cap) {
    buf[0] = 0;
    if (H5Aexists(loc, name) <= 0) return;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0 && H5Tget_size(t) < cap) {
        size_t n = H5Tget_size(t);
        if (H5Aread(a, t, buf) < 0) n = 0;
        buf[n] = 0;
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
}

static ks_status check_format(const char *path, hid_t f, ks_error *err) {
    char fmt[64];
    read_str_attr(f, "format", fmt, sizeof fmt);
    if (strcmp(fmt, KS_PROBE_FORMAT))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a koalascope probe results file (root "
                            "attribute 'format' is not '" KS_PROBE_FORMAT "')", path);
    return KS_OK;
}

ks_status ks_probe_results_info_read(const char *path, ks_probe_results_info *out, ks_error *err) {
    memset(out, 0, sizeof *out);
    ks_h5_init();
    ks_status s = KS_OK;
    hid_t f = -1, ds = -1, sp = -1;
    CHECK(ks_h5_check_superblock(path, err));
    H5TRY(f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), "%s: cannot open as HDF5", path);
    CHECK(check_format(path, f, err));
    read_str_attr(f, "task", out->task, sizeof out->task);
    if (strcmp(out->task, "logistic") && strcmp(out->task, "ridge")) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'task' is not logistic or ridge", path);
        goto out;
    }
    if (H5Lexists(f, "hooks", H5P_DEFAULT) <= 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: no /hooks", path);
        goto out;
    }
    H5TRY(ds = H5Dopen2(f, "hooks", H5P_DEFAULT), "%s: cannot open /hooks", path);
    H5TRY(sp = H5Dget_space(ds), "%s: /hooks: no dataspace", path);
    hsize_t n = 0;
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, &n, NULL) < 0 || n == 0 ||
        n > 1000000) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /hooks is not a non-empty list", path);
        goto out;
    }
    out->n_hooks = (int)n;
out:
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (f >= 0) H5Fclose(f);
    return s;
}

ks_status ks_probe_direction_read(const char *path, const char *hook, const char *kind,
                                  float **out, int *d, ks_error *err) {
    *out = NULL;
    *d = 0;
    bool dm = !strcmp(kind, "diff_means");
    if (!dm && strcmp(kind, "probe"))
        return ks_error_set(err, KS_ERR_ARG, "direction kind '%s' is not diff_means or probe", kind);
    if (strchr(hook, '/') || !*hook)
        return ks_error_set(err, KS_ERR_ARG, "'%s' is not a hook name", hook);
    ks_h5_init();
    ks_status s = KS_OK;
    hid_t fapl = -1, f = -1, a = -1, t = -1, ds = -1, sp = -1;
    double *buf = NULL;
    char obj[600];
    snprintf(obj, sizeof obj, "probes/%s/%s", hook, dm ? "diff_means" : "coef");
    H5TRY(fapl = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot make a file access list", path);
    CHECK(ks_h5_check_superblock(path, err));
    H5TRY(f = H5Fopen(path, H5F_ACC_RDONLY, fapl), "%s: cannot open as HDF5", path);
    CHECK(check_format(path, f, err));
    {
        htri_t ex = H5Lexists(f, "probes", H5P_DEFAULT);
        if (ex > 0) {
            char sub[520];
            snprintf(sub, sizeof sub, "probes/%s", hook);
            ex = H5Lexists(f, sub, H5P_DEFAULT);
        }
        if (ex > 0) ex = H5Lexists(f, obj, H5P_DEFAULT);
        if (ex <= 0) {
            s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s: no /%s (was %s probed, and%s?)", path, obj, hook,
                             dm ? " with binary labels" : "");
            goto out;
        }
    }
    H5TRY(ds = H5Dopen2(f, obj, H5P_DEFAULT), "%s: cannot open /%s", path, obj);
    H5TRY(sp = H5Dget_space(ds), "%s: /%s: no dataspace", path, obj);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[2] = {0, 0};
    if (rank < 1 || rank > 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s: not a vector or matrix", path, obj);
        goto out;
    }
    hsize_t n = dims[rank - 1];
    if (rank == 2 && dims[0] != 1) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s has %llu rows: a probe direction needs a binary "
                         "task (one weight vector)", path, obj, (unsigned long long)dims[0]);
        goto out;
    }
    if (n == 0 || n > (1u << 24)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s: length %llu out of range", path, obj,
                         (unsigned long long)n);
        goto out;
    }
    if (t >= 0) H5Tclose(t);
    t = -1;
    H5TRY(t = H5Dget_type(ds), "%s: /%s: no type", path, obj);
    if (H5Tget_class(t) != H5T_FLOAT || !ks_h5_plain_number(t)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s is not a float dataset (2, 4 or 8 bytes)", path, obj);
        goto out;
    }
    buf = malloc(sizeof(double) * n);
    *out = malloc(sizeof(float) * n);
    if (!buf || !*out) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory reading %s", path);
        goto out;
    }
    H5TRY(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), "%s: cannot read /%s",
          path, obj);
    for (hsize_t i = 0; i < n; i++) {
        if (!isfinite(buf[i]) || fabs(buf[i]) > FLT_MAX) { /* finite, but not as a float */
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s[%llu] = %g is not a finite float32", path, obj,
                             (unsigned long long)i, buf[i]);
            goto out;
        }
        (*out)[i] = (float)buf[i];
    }
    *d = (int)n;
out:
    if (s) {
        free(*out);
        *out = NULL;
    }
    free(buf);
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    if (f >= 0) H5Fclose(f);
    if (fapl >= 0) H5Pclose(fapl);
    return s;
}
