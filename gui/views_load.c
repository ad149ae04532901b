/* views_load.c — filling the view structs from files, lazily: a dump through the dump reader
 * (one prompt, one head at a time), attribution / probe / audit results through HDF5 directly
 * (their layouts: docs/FORMAT.md "/attributions", docs/PROBES.md "The results file",
 * docs/AUDITS.md "Results"). Every file is untrusted: shapes, ranks and types are checked
 * before a read, and a failure names the file and the object. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dump_private.h"
#include "ks_lens.h"
#include "views_private.h"

/* ================================================================ HDF5 helpers */

/* a string attribute of loc (fixed or variable length) into buf; false when absent/not text */
static bool attr_str(hid_t loc, const char *name, char *buf, size_t cap) {
    buf[0] = 0;
    if (H5Aexists(loc, name) <= 0) return false;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), t = a < 0 ? -1 : H5Aget_type(a), sp = a < 0 ? -1 : H5Aget_space(a);
    bool ok = false;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING && sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(t));
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(buf, cap, "%s", s);
                ok = true;
            }
            if (s) H5free_memory(s);
            H5Tclose(mt);
        } else {
            size_t n = H5Tget_size(t);
            char *s = n > 0 && n < (1 << 20) ? calloc(1, n + 1) : NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, n);
            H5Tset_strpad(mt, H5T_STR_NULLPAD); /* NULLTERM would keep only n - 1 bytes */
            H5Tset_cset(mt, H5Tget_cset(t));
            if (s && H5Aread(a, mt, s) >= 0) {
                snprintf(buf, cap, "%s", s);
                ok = true;
            }
            free(s);
            H5Tclose(mt);
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return ok;
}

static bool attr_f64(hid_t loc, const char *name, double *v) {
    if (H5Aexists(loc, name) <= 0) return false;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), sp = a < 0 ? -1 : H5Aget_space(a), t = a < 0 ? -1 : H5Aget_type(a);
    bool ok = sp >= 0 && t >= 0 && H5Sget_simple_extent_npoints(sp) == 1 &&
              ks_h5_plain_number(t) && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0;
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    return ok;
}

/* open a dataset of rank `rank` (and class cls) under loc; dims filled; -1 with err set */
static hid_t open_ds(const char *path, hid_t loc, const char *name, int rank, H5T_class_t cls, hsize_t *dims,
                     ks_error *err) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) {
        ks_error_set(err, KS_ERR_FORMAT, "%s: /%s is missing", path, name);
        return -1;
    }
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        ks_error_set(err, KS_ERR_FORMAT, "%s: /%s is not a dataset", path, name);
        return -1;
    }
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    int r = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    bool ok = r == rank && t >= 0 && H5Tget_class(t) == cls && (cls == H5T_STRING || ks_h5_plain_number(t));
    if (ok) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (!ok) {
        H5Dclose(d);
        ks_error_set(err, KS_ERR_FORMAT, "%s: /%s is not a rank-%d %s dataset", path, name, rank,
                     cls == H5T_STRING ? "string" : cls == H5T_FLOAT ? "float (2, 4 or 8 bytes)" : "integer (1 to 8 bytes)");
        return -1;
    }
    return d;
}

/* a numeric dataset [d0] or [d0, d1] read as `mt` into a malloc'd buffer; shape must match
 * want0 (>= 0) and want1 (rank 2: columns; -1 for rank 1) */
static ks_status read_num(const char *path, hid_t loc, const char *name, int64_t want0, int64_t want1, hid_t mt,
                          size_t esz, void **out, int64_t *n0, ks_error *err) {
    *out = NULL;
    int rank = want1 >= 0 ? 2 : 1;
    hsize_t dims[2] = {0, 0};
    hid_t d = open_ds(path, loc, name, rank, H5T_FLOAT, dims, NULL);
    if (d < 0) d = open_ds(path, loc, name, rank, H5T_INTEGER, dims, err);
    if (d < 0) return err ? err->code : KS_ERR_FORMAT;
    if ((want0 >= 0 && dims[0] != (hsize_t)want0) || (rank == 2 && dims[1] != (hsize_t)want1) || dims[0] > (1u << 28)) {
        H5Dclose(d);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: /%s has shape [%llu%s%llu], expected [%lld%s%lld]", path, name,
                            (unsigned long long)dims[0], rank == 2 ? ", " : "", rank == 2 ? (unsigned long long)dims[1] : 0ULL,
                            (long long)want0, rank == 2 ? ", " : "", (long long)(rank == 2 ? want1 : 0));
    }
    size_t n = (size_t)dims[0] * (rank == 2 ? (size_t)dims[1] : 1);
    void *buf = malloc((n ? n : 1) * esz);
    if (!buf) {
        H5Dclose(d);
        return ks_error_set(err, KS_ERR_NOMEM, "%s: /%s: out of memory", path, name);
    }
    if (n && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        H5Dclose(d);
        return ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot read /%s", path, name);
    }
    H5Dclose(d);
    *out = buf;
    if (n0) *n0 = (int64_t)dims[0];
    return KS_OK;
}

/* a 1-D string dataset (fixed or variable length) as n malloc'd strings */
static ks_status read_strs(const char *path, hid_t loc, const char *name, int64_t want, char ***out, int64_t *n_out,
                           ks_error *err) {
    *out = NULL;
    hsize_t dims[1];
    hid_t d = open_ds(path, loc, name, 1, H5T_STRING, dims, err);
    if (d < 0) return err ? err->code : KS_ERR_FORMAT;
    ks_status s = KS_OK;
    hid_t t = H5Dget_type(d), mt = -1;
    size_t n = (size_t)dims[0];
    char **v = NULL;
    if ((want >= 0 && dims[0] != (hsize_t)want) || dims[0] > (1u << 26)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s has %llu strings, expected %lld", path, name,
                         (unsigned long long)dims[0], (long long)want);
        goto out;
    }
    v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: /%s: out of memory", path, name);
        goto out;
    }
    if (H5Tis_variable_str(t) > 0) {
        char **raw = calloc(n ? n : 1, sizeof *raw);
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(t));
        if (!raw || (n && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)) {
            free(raw);
            s = ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot read /%s", path, name);
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            v[i] = strdup(raw[i] ? raw[i] : "");
            if (raw[i]) H5free_memory(raw[i]);
        }
        free(raw);
    } else {
        size_t w = H5Tget_size(t);
        char *raw = w > 0 && w < (1 << 16) ? malloc(n * w + 1) : NULL;
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w ? w : 1);
        H5Tset_strpad(mt, H5T_STR_NULLPAD); /* a full-width NULLTERM string would lose a byte */
        H5Tset_cset(mt, H5Tget_cset(t));
        if (!raw || (n && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)) {
            free(raw);
            s = ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot read /%s", path, name);
            goto out;
        }
        for (size_t i = 0; i < n; i++) v[i] = strndup(raw + i * w, w);
        free(raw);
    }
    for (size_t i = 0; i < n; i++)
        if (!v[i]) {
            s = ks_error_set(err, KS_ERR_NOMEM, "%s: /%s: out of memory", path, name);
            goto out;
        }
out:
    if (mt >= 0) H5Tclose(mt);
    H5Tclose(t);
    H5Dclose(d);
    if (s) {
        ks_dump_strings_free(v, (int64_t)n);
        return s;
    }
    *out = v;
    if (n_out) *n_out = (int64_t)n;
    return KS_OK;
}

static hid_t open_file(const char *path, ks_error *err) {
    ks_h5_init();
    struct stat st;
    if (stat(path, &st) != 0) {
        ks_error_set(err, KS_ERR_IO, "%s: cannot open: no such file", path);
        return -1;
    }
    if (H5Fis_hdf5(path) <= 0) {
        ks_error_set(err, KS_ERR_FORMAT, "%s: not an HDF5 file (expected a dump, attribution, probe or audit results)",
                     path);
        return -1;
    }
    if (ks_h5_check_superblock(path, err)) return -1;
    /* SWMR, so that a dump still being written (or interrupted) opens; with the dump reader's
     * bound on metadata re-reads, or a corrupted block retries for years (dump_private.h) */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_metadata_read_attempts(fapl, KS_H5_SWMR_READ_ATTEMPTS);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (f < 0) f = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (fapl >= 0) H5Pclose(fapl);
    if (f < 0) ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot open as HDF5", path);
    return f;
}

/* ================================================================ file kinds */

const char *ks_view_file_kind_name(ks_view_file_kind k) {
    switch (k) {
    case KS_VIEW_FILE_DUMP: return "dump";
    case KS_VIEW_FILE_ATTRIBUTIONS: return "attributions";
    case KS_VIEW_FILE_PROBE: return "probe results";
    case KS_VIEW_FILE_AUDIT: return "audit results";
    }
    return "?";
}

ks_status ks_view_file_kind_detect(const char *path, ks_view_file_kind *kind, char **resolved, ks_error *err) {
    if (resolved) *resolved = NULL;
    struct stat st;
    char *file = NULL;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t n = strlen(path) + 16;
        file = malloc(n);
        if (!file) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        snprintf(file, n, "%s/results.h5", path);
        if (stat(file, &st) != 0) {
            free(file);
            return ks_error_set(err, KS_ERR_FORMAT, "%s: a directory without results.h5 (not an audit run)", path);
        }
    } else {
        file = strdup(path);
        if (!file) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    hid_t f = open_file(file, err);
    if (f < 0) {
        free(file);
        return err ? err->code : KS_ERR_FORMAT;
    }
    char fmt[64];
    bool has = attr_str(f, "format", fmt, sizeof fmt);
    H5Fclose(f);
    ks_status s = KS_OK;
    if (has && !strcmp(fmt, KS_DUMP_FORMAT)) *kind = KS_VIEW_FILE_DUMP;
    else if (has && !strcmp(fmt, KS_ATTRIBUTIONS_FORMAT)) *kind = KS_VIEW_FILE_ATTRIBUTIONS;
    else if (has && !strcmp(fmt, "koalascope-probe")) *kind = KS_VIEW_FILE_PROBE;
    else if (has && !strcmp(fmt, "koalascope-audit")) *kind = KS_VIEW_FILE_AUDIT;
    else
        s = ks_error_set(err, KS_ERR_FORMAT,
                         "%s: root attribute format is %s%s%s, not a koalascope dump, attribution, probe or audit file",
                         file, has ? "'" : "absent", has ? fmt : "", has ? "'" : "");
    if (!s && resolved) *resolved = file;
    else free(file);
    return s;
}

/* ================================================================ dumps */

static ks_status check_prompt(const ks_dump *d, int64_t p, ks_error *err) {
    if (p < 0 || p >= ks_dump_n_prompts(d))
        return ks_error_set(err, KS_ERR_RANGE, "--prompt %lld: %s holds %lld prompts (0..%lld)", (long long)p,
                            ks_dump_path(d), (long long)ks_dump_n_prompts(d), (long long)ks_dump_n_prompts(d) - 1);
    return KS_OK;
}

void ks_view_prompt_free(ks_view_prompt *v) {
    if (!v) return;
    free(v->ids);
    ks_dump_strings_free(v->pieces, v->n);
    free(v->logprob);
    free(v->topk_ids);
    free(v->topk_logprobs);
    free(v->text);
    memset(v, 0, sizeof *v);
}

ks_status ks_view_prompt_load(const ks_dump *d, int64_t p, ks_view_prompt *out, ks_error *err) {
    memset(out, 0, sizeof *out);
    ks_status s = check_prompt(d, p, err);
    if (s) return s;
    ks_dump_prompt info;
    if ((s = ks_dump_prompt_info(d, p, &info, err))) return s;
    out->index = p;
    out->n = info.n_tokens;
    out->n_prompt_tokens = info.n_prompt_tokens;
    int64_t T = info.n_tokens, R = info.n_rows;
    int k = ks_dump_logits_topk(d);
    int32_t *pos = malloc((size_t)(R ? R : 1) * sizeof *pos);
    float *next = NULL;
    out->ids = malloc((size_t)(T ? T : 1) * sizeof *out->ids);
    out->logprob = malloc((size_t)(T ? T : 1) * sizeof *out->logprob);
    if (!pos || !out->ids || !out->logprob) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: prompt %lld: out of memory", ks_dump_path(d), (long long)p);
        goto out;
    }
    for (int64_t t = 0; t < T; t++) out->logprob[t] = NAN;
    if ((s = ks_dump_read_tokens(d, p, out->ids, (size_t)T, err))) goto out;
    if ((s = ks_dump_read_token_strings(d, p, &out->pieces, err))) goto out;
    if ((s = ks_dump_prompt_text(d, p, &out->text, err))) goto out;
    if ((s = ks_dump_read_positions(d, p, pos, (size_t)R, err))) goto out;
    if (k > 0 && T > 0) {
        out->topk = k;
        out->topk_ids = malloc((size_t)T * k * sizeof *out->topk_ids);
        out->topk_logprobs = malloc((size_t)T * k * sizeof *out->topk_logprobs);
        int32_t *ri = malloc((size_t)(R ? R : 1) * k * sizeof *ri);
        float *rl = malloc((size_t)(R ? R : 1) * k * sizeof *rl);
        next = malloc((size_t)(R ? R : 1) * sizeof *next);
        if (!out->topk_ids || !out->topk_logprobs || !ri || !rl || !next) {
            free(ri), free(rl);
            s = ks_error_set(err, KS_ERR_NOMEM, "%s: prompt %lld: out of memory", ks_dump_path(d), (long long)p);
            goto out;
        }
        for (int64_t i = 0; i < T * k; i++) out->topk_ids[i] = -1, out->topk_logprobs[i] = NAN;
        s = ks_dump_read_topk(d, p, ri, rl, next, (size_t)R, err);
        if (!s)
            for (int64_t r = 0; r < R; r++) {
                int32_t q = pos[r];
                if (q < 0 || q >= T) continue;
                memcpy(out->topk_ids + (size_t)q * k, ri + (size_t)r * k, (size_t)k * sizeof *ri);
                memcpy(out->topk_logprobs + (size_t)q * k, rl + (size_t)r * k, (size_t)k * sizeof *rl);
                if (q + 1 < T) out->logprob[q + 1] = next[r]; /* log p(token q+1 | ≤ q) */
            }
        free(ri), free(rl);
    }
out:
    free(pos);
    free(next);
    if (s) ks_view_prompt_free(out);
    return s;
}

/* the pattern hook of a layer and the slot of a head, with the errors the CLI shows */
static ks_status find_head(const ks_dump *d, int layer, int head, const ks_dump_hook **hk, int *slot, ks_error *err) {
    const ks_config *c = ks_dump_config(d);
    if (c && (layer < 0 || layer >= c->n_layers))
        return ks_error_set(err, KS_ERR_RANGE, "--layer %d is outside 0..%d (the model has %d layers)", layer,
                            c->n_layers - 1, c->n_layers);
    if (c && (head < 0 || head >= c->n_heads))
        return ks_error_set(err, KS_ERR_RANGE, "--head %d is outside 0..%d (the model has %d heads)", head,
                            c->n_heads - 1, c->n_heads);
    char name[64];
    snprintf(name, sizeof name, "blocks.%d.attn.hook_pattern", layer);
    *hk = ks_dump_find_hook(d, name);
    if (!*hk)
        return ks_error_set(err, KS_ERR_NOT_FOUND,
                            "%s did not record %s: record the dump with --hooks 'blocks.%d.attn.hook_pattern' "
                            "(or 'blocks.*.attn.hook_pattern')",
                            ks_dump_path(d), name, layer);
    *slot = -1;
    for (int i = 0; i < (*hk)->n_heads; i++)
        if ((*hk)->heads[i] == head) *slot = i;
    if (*slot < 0)
        return ks_error_set(err, KS_ERR_NOT_FOUND, "%s recorded %s without head %d: record with --heads all (or one "
                            "that includes %d)", ks_dump_path(d), name, head, head);
    return KS_OK;
}

/* one head of prompt p as a dense T × T buffer with NaN where nothing is defined */
static ks_status read_head(const ks_dump *d, const ks_dump_hook *hk, int slot, int64_t p, const ks_dump_prompt *pi,
                           float *sq, int32_t *pos, bool *has_row, ks_error *err) {
    int64_t T = pi->n_tokens;
    ks_status s = ks_dump_read_attention_square(d, hk, p, slot, sq, (size_t)(T * T), err);
    if (s) return s;
    if ((s = ks_dump_read_positions(d, p, pos, (size_t)pi->n_rows, err))) return s;
    for (int64_t r = 0; r < T; r++) has_row[r] = false;
    for (int64_t r = 0; r < pi->n_rows; r++)
        if (pos[r] >= 0 && pos[r] < T) has_row[pos[r]] = true;
    for (int64_t r = 0; r < T; r++)
        for (int64_t c = 0; c < T; c++)
            if (c > r || !has_row[r]) sq[r * T + c] = NAN;
    return KS_OK;
}

ks_status ks_view_attention_load(const ks_dump *d, int64_t p, int layer, int head, ks_heatmap **out, ks_error *err) {
    *out = NULL;
    const ks_dump_hook *hk = NULL;
    int slot = -1;
    ks_status s = check_prompt(d, p, err);
    if (!s) s = find_head(d, layer, head, &hk, &slot, err);
    if (s) return s;
    ks_dump_prompt pi;
    if ((s = ks_dump_prompt_info(d, p, &pi, err))) return s;
    int64_t T = pi.n_tokens;
    if (T < 1 || T > 65536)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: prompt %lld has %lld tokens (a map needs 1..65536)",
                            ks_dump_path(d), (long long)p, (long long)T);
    float *sq = malloc((size_t)(T * T) * sizeof *sq);
    int32_t *pos = malloc((size_t)(pi.n_rows ? pi.n_rows : 1) * sizeof *pos);
    bool *has = malloc((size_t)T * sizeof *has);
    if (!sq || !pos || !has) s = ks_error_set(err, KS_ERR_NOMEM, "%s: a %lld² map: out of memory", ks_dump_path(d), (long long)T);
    if (!s) s = read_head(d, hk, slot, p, &pi, sq, pos, has, err);
    if (!s) s = ks_heatmap_create(sq, T, T, KS_POOL_MAX, out, err);
    free(sq), free(pos), free(has);
    return s;
}

void ks_view_attention_grid_free(ks_attention_grid *g) {
    if (!g) return;
    if (g->maps)
        for (int i = 0; i < g->n_layers * g->n_heads; i++) ks_heatmap_free((ks_heatmap *)g->maps[i]);
    free((void *)g->maps);
    free((void *)g->layer_ids);
    free((void *)g->head_ids);
    memset(g, 0, sizeof *g);
}

ks_status ks_view_attention_grid_load(const ks_dump *d, int64_t p, int thumb, ks_attention_grid *g, ks_error *err) {
    memset(g, 0, sizeof *g);
    g->vmin = g->vmax = NAN;
    g->sel_layer = g->sel_head = -1;
    if (thumb <= 0) thumb = 64;
    ks_status s = check_prompt(d, p, err);
    if (s) return s;
    const ks_config *c = ks_dump_config(d);
    int nl = 0, nh = c ? c->n_heads : 0;
    int *layers = calloc(c && c->n_layers > 0 ? (size_t)c->n_layers : 1, sizeof *layers);
    const ks_dump_hook **hooks = calloc(c && c->n_layers > 0 ? (size_t)c->n_layers : 1, sizeof *hooks);
    if (!layers || !hooks) {
        free(layers), free((void *)hooks);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < ks_dump_n_hooks(d) && c; i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        if (h->point == KS_HOOK_ATTN_PATTERN && h->layer >= 0 && h->layer < c->n_layers && nl < c->n_layers) {
            layers[nl] = h->layer;
            hooks[nl++] = h;
        }
    }
    if (nl == 0 || nh <= 0) {
        free(layers), free((void *)hooks);
        return ks_error_set(err, KS_ERR_NOT_FOUND,
                            "%s recorded no attention pattern: record the dump with --hooks 'blocks.*.attn.hook_pattern'",
                            ks_dump_path(d));
    }
    ks_dump_prompt pi;
    if ((s = ks_dump_prompt_info(d, p, &pi, err))) {
        free(layers), free((void *)hooks);
        return s;
    }
    int64_t T = pi.n_tokens;
    int *heads = malloc((size_t)nh * sizeof *heads);
    ks_heatmap **maps = calloc((size_t)nl * nh, sizeof *maps);
    float *sq = T >= 1 && T <= 65536 ? malloc((size_t)(T * T) * sizeof *sq) : NULL;
    int32_t *pos = malloc((size_t)(pi.n_rows ? pi.n_rows : 1) * sizeof *pos);
    bool *has = malloc((size_t)(T ? T : 1) * sizeof *has);
    g->n_layers = nl, g->n_heads = nh, g->layer_ids = layers, g->head_ids = heads, g->maps = (const ks_heatmap *const *)maps;
    if (!heads || !maps || !sq || !pos || !has) {
        s = ks_error_set(err, T > 65536 ? KS_ERR_UNSUPPORTED : KS_ERR_NOMEM, "%s: prompt %lld (%lld tokens): out of memory",
                         ks_dump_path(d), (long long)p, (long long)T);
        goto out;
    }
    for (int h = 0; h < nh; h++) heads[h] = h;
    for (int l = 0; l < nl && !s; l++)
        for (int slot = 0; slot < hooks[l]->n_heads && !s; slot++) {
            int head = hooks[l]->heads[slot];
            if (head < 0 || head >= nh) continue;
            ks_heatmap *full = NULL;
            s = read_head(d, hooks[l], slot, p, &pi, sq, pos, has, err);
            if (!s) s = ks_heatmap_create(sq, T, T, KS_POOL_MAX, &full, err);
            if (s) break;
            /* keep only the first level small enough for a thumbnail */
            int k = 0;
            int64_t r, cc;
            const float *lv = ks_heatmap_level(full, 0, &r, &cc);
            while ((r > thumb || cc > thumb) && k + 1 < ks_heatmap_levels(full)) lv = ks_heatmap_level(full, ++k, &r, &cc);
            s = ks_heatmap_create(lv, r, cc, KS_POOL_MAX, &maps[(size_t)l * nh + head], err);
            ks_heatmap_free(full);
        }
out:
    free((void *)hooks);
    free(sq), free(pos), free(has);
    if (s) ks_view_attention_grid_free(g);
    return s;
}

void ks_view_residual_free(ks_residual_norms *v) {
    if (!v) return;
    free((void *)v->x);
    free((void *)v->at_pos);
    free((void *)v->mean);
    free((void *)v->lo);
    free((void *)v->hi);
    memset(v, 0, sizeof *v);
}

ks_status ks_view_residual_load(const ks_dump *d, int64_t p, int64_t pos, ks_residual_norms *v, ks_error *err) {
    memset(v, 0, sizeof *v);
    ks_status s = check_prompt(d, p, err);
    if (s) return s;
    const ks_config *c = ks_dump_config(d);
    int L = c ? c->n_layers : 0;
    /* x = 0 .. L: the stream entering layer x (embed / resid_pre x) or leaving x - 1 */
    const ks_dump_hook **at = calloc((size_t)L + 1, sizeof *at);
    if (!at) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        if (h->kind != KS_DUMP_KIND_TOKEN || (c && h->row_elems != c->dim)) continue;
        if (h->point == KS_HOOK_RESID_POST && h->layer >= 0 && h->layer < L) at[h->layer + 1] = h;
        else if (h->point == KS_HOOK_RESID_PRE && h->layer >= 0 && h->layer <= L && !at[h->layer]) at[h->layer] = h;
        else if (h->point == KS_HOOK_EMBED && !at[0]) at[0] = h;
    }
    int n = 0;
    for (int x = 0; x <= L; x++) n += at[x] != NULL;
    if (!n) {
        free((void *)at);
        return ks_error_set(err, KS_ERR_NOT_FOUND,
                            "%s recorded no residual stream: record the dump with --hooks 'blocks.*.hook_resid_post' "
                            "(and hook_embed for layer 0)",
                            ks_dump_path(d));
    }
    ks_dump_prompt pi;
    if ((s = ks_dump_prompt_info(d, p, &pi, err))) {
        free((void *)at);
        return s;
    }
    int64_t R = pi.n_rows, D = c->dim;
    double *x = malloc((size_t)n * sizeof *x), *ap = malloc((size_t)n * sizeof *ap),
           *mean = malloc((size_t)n * sizeof *mean), *lo = malloc((size_t)n * sizeof *lo),
           *hi = malloc((size_t)n * sizeof *hi);
    float *rows = malloc((size_t)(R ? R : 1) * D * sizeof *rows);
    int32_t *ps = malloc((size_t)(R ? R : 1) * sizeof *ps);
    v->x = x, v->at_pos = ap, v->mean = mean, v->lo = lo, v->hi = hi, v->n = n;
    if (!x || !ap || !mean || !lo || !hi || !rows || !ps) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((s = ks_dump_read_positions(d, p, ps, (size_t)R, err))) goto out;
    int64_t prow = R - 1;
    if (pos >= 0) {
        prow = -1;
        for (int64_t r = 0; r < R; r++)
            if (ps[r] == pos) prow = r;
        if (prow < 0) {
            s = ks_error_set(err, KS_ERR_RANGE, "--position %lld was not recorded for prompt %lld of %s (%lld tokens)",
                             (long long)pos, (long long)p, ks_dump_path(d), (long long)pi.n_tokens);
            goto out;
        }
    }
    v->position = R > 0 ? ps[prow] : -1;
    int k = 0;
    for (int xi = 0; xi <= L; xi++) {
        if (!at[xi]) continue;
        if ((s = ks_dump_read_rows(d, at[xi], p, p + 1, rows, (size_t)(R * D), err))) goto out;
        double sum = 0, mn = INFINITY, mx = -INFINITY;
        for (int64_t r = 0; r < R; r++) {
            double q = 0;
            for (int64_t j = 0; j < D; j++) q += (double)rows[r * D + j] * rows[r * D + j];
            q = sqrt(q);
            sum += q, mn = fmin(mn, q), mx = fmax(mx, q);
            if (r == prow) ap[k] = q;
        }
        x[k] = xi;
        mean[k] = R ? sum / R : NAN;
        lo[k] = R ? mn : NAN;
        hi[k] = R ? mx : NAN;
        if (R == 0) ap[k] = NAN;
        k++;
    }
out:
    free((void *)at);
    free(rows), free(ps);
    if (s) ks_view_residual_free(v);
    return s;
}

void ks_view_lens_free(ks_lens_table *v) {
    if (!v) return;
    if (v->layer_labels) ks_dump_strings_free((char **)v->layer_labels, v->n_layers);
    if (v->pos_labels) ks_dump_strings_free((char **)v->pos_labels, v->n_pos);
    if (v->top_text) ks_dump_strings_free((char **)v->top_text, (int64_t)v->n_layers * v->n_pos);
    free((void *)v->top_prob);
    memset(v, 0, sizeof *v);
}

ks_status ks_view_lens_load(const ks_dump *d, const ks_model *m, int64_t p, int64_t first, int64_t count,
                            ks_lens_table *v, ks_error *err) {
    memset(v, 0, sizeof *v);
    ks_status s = check_prompt(d, p, err);
    if (s) return s;
    const ks_config *dc = ks_dump_config(d), *mc = ks_model_config(m);
    if (!dc || dc->dim != mc->dim || dc->n_layers != mc->n_layers || dc->vocab_size != mc->vocab_size)
        return ks_error_set(err, KS_ERR_ARG,
                            "%s was recorded with another model (d_model %d, %d layers, vocab %d; the model has %d, %d, %d)",
                            ks_dump_path(d), dc ? dc->dim : -1, dc ? dc->n_layers : -1, dc ? dc->vocab_size : -1, mc->dim,
                            mc->n_layers, mc->vocab_size);
    int L = mc->n_layers, D = mc->dim, V = mc->vocab_size, nl = 0;
    const ks_dump_hook **hk = calloc((size_t)L, sizeof *hk);
    int *lid = calloc((size_t)L, sizeof *lid);
    if (!hk || !lid) {
        free((void *)hk), free(lid);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    for (int l = 0; l < L; l++) {
        char name[64];
        snprintf(name, sizeof name, "blocks.%d.hook_resid_post", l);
        const ks_dump_hook *h = ks_dump_find_hook(d, name);
        if (h && h->row_elems == D) lid[nl] = l, hk[nl++] = h;
    }
    ks_dump_prompt pi;
    float *rows = NULL, *xs = NULL, *logits = NULL;
    int32_t *ps = NULL;
    int64_t *rowof = NULL;
    if (!nl) {
        s = ks_error_set(err, KS_ERR_NOT_FOUND,
                         "%s recorded no blocks.*.hook_resid_post: record the dump with --hooks 'blocks.*.hook_resid_post'",
                         ks_dump_path(d));
        goto out;
    }
    if ((s = ks_dump_prompt_info(d, p, &pi, err))) goto out;
    int64_t T = pi.n_tokens, R = pi.n_rows;
    if (first < 0 || first >= T) {
        s = ks_error_set(err, KS_ERR_RANGE, "first position %lld is outside the prompt's 0..%lld", (long long)first,
                         (long long)T - 1);
        goto out;
    }
    if (count <= 0 || count > T - first) count = T - first;
    v->n_layers = nl, v->n_pos = count, v->first = 0, v->count = 0;
    char **ll = calloc((size_t)nl, sizeof *ll), **pl = calloc((size_t)count, sizeof *pl),
         **tt = calloc((size_t)nl * count, sizeof *tt);
    float *pr = malloc((size_t)nl * count * sizeof *pr);
    v->layer_labels = (const char *const *)ll, v->pos_labels = (const char *const *)pl;
    v->top_text = (const char *const *)tt, v->top_prob = pr;
    rows = malloc((size_t)(R ? R : 1) * D * sizeof *rows);
    xs = malloc((size_t)count * D * sizeof *xs);
    logits = malloc((size_t)count * V * sizeof *logits);
    ps = malloc((size_t)(R ? R : 1) * sizeof *ps);
    rowof = malloc((size_t)count * sizeof *rowof);
    if (!ll || !pl || !tt || !pr || !rows || !xs || !logits || !ps || !rowof) {
        s = ks_error_set(err, KS_ERR_NOMEM, "lens: out of memory");
        goto out;
    }
    char **pieces = NULL;
    if ((s = ks_dump_read_token_strings(d, p, &pieces, err))) goto out;
    for (int64_t k = 0; k < count; k++) pl[k] = strdup(pieces[first + k] ? pieces[first + k] : "");
    ks_dump_strings_free(pieces, T);
    if ((s = ks_dump_read_positions(d, p, ps, (size_t)R, err))) goto out;
    for (int64_t k = 0; k < count; k++) rowof[k] = -1;
    for (int64_t r = 0; r < R; r++)
        if (ps[r] >= first && ps[r] < first + count) rowof[ps[r] - first] = r;
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    for (int l = 0; l < nl; l++) {
        char lab[16];
        snprintf(lab, sizeof lab, "L%d", lid[l]);
        ll[l] = strdup(lab);
        if ((s = ks_dump_read_rows(d, hk[l], p, p + 1, rows, (size_t)(R * D), err))) goto out;
        int n = 0;
        for (int64_t k = 0; k < count; k++)
            if (rowof[k] >= 0) memcpy(xs + (size_t)n++ * D, rows + rowof[k] * D, (size_t)D * sizeof *xs);
        if (n && (s = ks_logit_lens(m, xs, n, logits, err))) goto out;
        n = 0;
        for (int64_t k = 0; k < count; k++) {
            size_t cell = (size_t)l * count + k;
            pr[cell] = NAN;
            if (rowof[k] < 0) {
                tt[cell] = strdup("");
                continue;
            }
            const float *z = logits + (size_t)n++ * V;
            int best = 0;
            for (int i = 1; i < V; i++)
                if (z[i] > z[best]) best = i;
            double sum = 0;
            for (int i = 0; i < V; i++) sum += exp((double)z[i] - z[best]);
            pr[cell] = (float)(1 / sum);
            char piece[96];
            size_t w = tok ? ks_tokenizer_token_text(tok, -1, best, piece, sizeof piece) : 0;
            if (!w) snprintf(piece, sizeof piece, "#%d", best);
            else piece[w] = 0;
            tt[cell] = strdup(piece);
        }
    }
    for (int64_t i = 0; i < (int64_t)nl * count; i++)
        if (!tt[i]) s = ks_error_set(err, KS_ERR_NOMEM, "lens: out of memory");
    for (int l = 0; l < nl; l++)
        if (!ll[l]) s = ks_error_set(err, KS_ERR_NOMEM, "lens: out of memory");
    for (int64_t k = 0; k < count; k++)
        if (!pl[k]) s = ks_error_set(err, KS_ERR_NOMEM, "lens: out of memory");
out:
    free((void *)hk), free(lid), free(rows), free(xs), free(logits), free(ps), free(rowof);
    if (s) ks_view_lens_free(v);
    return s;
}

/* ================================================================ attributions */

void ks_view_attribution_free(ks_view_attribution *v) {
    if (!v) return;
    free(v->values);
    ks_dump_strings_free(v->tokens, v->n_tokens);
    if (v->ndim == 2) {
        ks_dump_strings_free(v->row_labels, v->shape[0]);
        ks_dump_strings_free(v->col_labels, v->shape[1]);
    }
    ks_heatmap_free(v->map);
    memset(v, 0, sizeof *v);
}

typedef struct {
    char name[256];
} first_name;

static herr_t first_group(hid_t g, const char *name, const H5L_info_t *info, void *user) {
    (void)g, (void)info;
    snprintf(((first_name *)user)->name, sizeof((first_name *)user)->name, "%s", name);
    return 1; /* stop at the first */
}

/* labels of one axis of a 2-D result */
static char **axis_labels(const char *axis, int64_t n, char **tokens, int64_t n_tokens) {
    char **out = calloc((size_t)n, sizeof *out);
    if (!out) return NULL;
    for (int64_t i = 0; i < n; i++) {
        char b[48];
        if (!strcmp(axis, "position") && tokens && i < n_tokens) out[i] = strdup(tokens[i]);
        else {
            snprintf(b, sizeof b, "%s%lld", !strcmp(axis, "layer") ? "L" : !strcmp(axis, "head") ? "H" : "", (long long)i);
            out[i] = strdup(b);
        }
        if (!out[i]) {
            ks_dump_strings_free(out, n);
            return NULL;
        }
    }
    return out;
}

ks_status ks_view_attribution_load(const char *path, const char *name, ks_view_attribution *v, ks_error *err) {
    memset(v, 0, sizeof *v);
    v->completeness_error = NAN;
    hid_t f = open_file(path, err), g = -1, ds = -1;
    if (f < 0) return err ? err->code : KS_ERR_FORMAT;
    ks_status s = KS_OK;
    if (H5Lexists(f, "attributions", H5P_DEFAULT) <= 0) {
        s = ks_error_set(err, KS_ERR_NOT_FOUND,
                         "%s holds no /attributions: add one with koalascope attribute ... -o %s (or patch)", path, path);
        goto out;
    }
    first_name fn = {{0}};
    if (!name) {
        hid_t a = H5Gopen2(f, "attributions", H5P_DEFAULT);
        if (a >= 0) {
            H5Literate(a, H5_INDEX_NAME, H5_ITER_INC, NULL, first_group, &fn);
            H5Gclose(a);
        }
        if (!fn.name[0]) {
            s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s: /attributions is empty", path);
            goto out;
        }
        name = fn.name;
    }
    if (strlen(name) > 255 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..")) {
        s = ks_error_set(err, KS_ERR_ARG, "attribution name '%s' is not a result name", name);
        goto out;
    }
    char gp[300];
    snprintf(gp, sizeof gp, "attributions/%s", name);
    if (H5Lexists(f, gp, H5P_DEFAULT) <= 0 || (g = H5Gopen2(f, gp, H5P_DEFAULT)) < 0) {
        s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s has no /attributions/%s", path, name);
        goto out;
    }
    snprintf(v->name, sizeof v->name, "%s", name);
    attr_str(g, "method", v->method, sizeof v->method);
    attr_str(g, "objective", v->objective, sizeof v->objective);
    if (!attr_str(g, "axes", v->axes, sizeof v->axes)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s has no axes attribute", path, gp);
        goto out;
    }
    attr_f64(g, "completeness_error", &v->completeness_error);
    if (H5Lexists(g, "values", H5P_DEFAULT) <= 0 || (ds = H5Dopen2(g, "values", H5P_DEFAULT)) < 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s/values is missing", path, gp);
        goto out;
    }
    hid_t sp = H5Dget_space(ds), ty = H5Dget_type(ds);
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[3] = {0, 0, 0};
    bool okt = ty >= 0 && H5Tget_class(ty) == H5T_FLOAT && ks_h5_plain_number(ty);
    if (nd >= 1 && nd <= 3) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    if (ty >= 0) H5Tclose(ty);
    hsize_t total = 1;
    for (int i = 0; i < nd && nd <= 3; i++) total *= dims[i];
    if (nd < 1 || nd > 3 || !okt || total == 0 || total > (1u << 28)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s/values is not a float array of 1 to 3 non-empty axes", path, gp);
        goto out;
    }
    v->ndim = nd;
    for (int i = 0; i < nd; i++) v->shape[i] = (int64_t)dims[i];
    v->values = malloc((size_t)total * sizeof *v->values);
    if (!v->values) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: /%s/values: out of memory", path, gp);
        goto out;
    }
    if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v->values) < 0) {
        s = ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot read /%s/values", path, gp);
        goto out;
    }
    /* token text: token_strings when present, else the ids */
    if (H5Lexists(g, "token_strings", H5P_DEFAULT) > 0) {
        if ((s = read_strs(path, g, "token_strings", -1, &v->tokens, &v->n_tokens, err))) goto out;
    } else {
        int32_t *ids = NULL;
        int64_t n = 0;
        if ((s = read_num(path, g, "tokens", -1, -1, H5T_NATIVE_INT32, sizeof(int32_t), (void **)&ids, &n, err))) goto out;
        v->tokens = calloc((size_t)(n ? n : 1), sizeof *v->tokens);
        for (int64_t i = 0; v->tokens && i < n; i++) {
            char b[24];
            snprintf(b, sizeof b, "#%d", ids[i]);
            v->tokens[i] = strdup(b);
        }
        v->n_tokens = v->tokens ? n : 0;
        free(ids);
    }
    if (nd == 1) {
        v->bars = (ks_token_bars){.labels = v->shape[0] == v->n_tokens ? (const char *const *)v->tokens : NULL,
                                  .values = v->values,
                                  .n = v->shape[0],
                                  .focus = -1,
                                  .vmin = NAN,
                                  .vmax = NAN,
                                  .title = v->name,
                                  .subtitle = v->objective[0] ? v->objective : NULL,
                                  .value_label = v->method[0] ? v->method : "attribution"};
    } else if (nd == 2) {
        char a0[128] = "", a1[128] = "";
        const char *comma = strchr(v->axes, ',');
        if (comma) {
            snprintf(a0, sizeof a0, "%.*s", (int)(comma - v->axes), v->axes);
            snprintf(a1, sizeof a1, "%s", comma + 1);
        }
        v->row_labels = axis_labels(a0, v->shape[0], v->tokens, v->n_tokens);
        v->col_labels = axis_labels(a1, v->shape[1], v->tokens, v->n_tokens);
        if (!v->row_labels || !v->col_labels) {
            s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            goto out;
        }
        s = ks_heatmap_create(v->values, v->shape[0], v->shape[1], KS_POOL_MAXABS, &v->map, err);
    } else {
        s = ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: /%s has 3 axes (%s): no view draws those", path, gp, v->axes);
    }
out:
    if (ds >= 0) H5Dclose(ds);
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    if (s) ks_view_attribution_free(v);
    return s;
}

/* ================================================================ probe results */

void ks_view_probe_free(ks_probe_curves *v) {
    if (!v) return;
    free((void *)v->x), free((void *)v->value), free((void *)v->lo), free((void *)v->hi);
    free((void *)v->majority), free((void *)v->shuffled), free((void *)v->shuffled_lo);
    free((void *)v->shuffled_hi), free((void *)v->control);
    memset(v, 0, sizeof *v);
}

ks_status ks_view_probe_load(const char *path, const char *metric, ks_probe_curves *v, ks_error *err) {
    memset(v, 0, sizeof *v);
    hid_t f = open_file(path, err);
    if (f < 0) return err ? err->code : KS_ERR_FORMAT;
    ks_status s = KS_OK;
    char fmt[64], task[32];
    double *m = NULL, *maj = NULL, *shu = NULL, *ctl = NULL;
    int32_t *layer = NULL;
    int64_t H = 0;
    if (!attr_str(f, "format", fmt, sizeof fmt) || strcmp(fmt, "koalascope-probe")) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: not probe results (root attribute format is not koalascope-probe)", path);
        goto out;
    }
    attr_str(f, "task", task, sizeof task);
    if (!metric) metric = !strcmp(task, "ridge") ? "r2" : "accuracy";
    if (strcmp(metric, "accuracy") && strcmp(metric, "auroc") && strcmp(metric, "r2")) {
        s = ks_error_set(err, KS_ERR_ARG, "metric '%s' is not accuracy, auroc or r2", metric);
        goto out;
    }
    if ((s = read_num(path, f, "layer", -1, -1, H5T_NATIVE_INT32, sizeof(int32_t), (void **)&layer, &H, err))) goto out;
    if (H < 1) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /layer is empty", path);
        goto out;
    }
    if ((s = read_num(path, f, metric, H, 3, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&m, NULL, err))) goto out;
    bool cls = strcmp(metric, "r2") != 0;
    if (cls) {
        if ((s = read_num(path, f, "majority", H, 3, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&maj, NULL, err))) goto out;
        if ((s = read_num(path, f, "shuffled", H, 3, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&shu, NULL, err))) goto out;
        if (!strcmp(metric, "accuracy") &&
            (s = read_num(path, f, "control", H, 3, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&ctl, NULL, err)))
            goto out;
    }
    double *x = malloc((size_t)H * sizeof *x), *val = malloc((size_t)H * sizeof *x), *lo = malloc((size_t)H * sizeof *x),
           *hi = malloc((size_t)H * sizeof *x);
    double *mj = maj ? malloc((size_t)H * sizeof *x) : NULL, *sh = shu ? malloc((size_t)H * sizeof *x) : NULL,
           *shl = shu ? malloc((size_t)H * sizeof *x) : NULL, *shh = shu ? malloc((size_t)H * sizeof *x) : NULL,
           *ct = ctl ? malloc((size_t)H * sizeof *x) : NULL;
    v->x = x, v->value = val, v->lo = lo, v->hi = hi, v->majority = mj, v->shuffled = sh, v->shuffled_lo = shl,
    v->shuffled_hi = shh, v->control = ct, v->n = (int)H;
    if (!x || !val || !lo || !hi || (maj && !mj) || (shu && (!sh || !shl || !shh)) || (ctl && !ct)) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < H; i++) {
        x[i] = layer[i];
        val[i] = m[3 * i], lo[i] = m[3 * i + 1], hi[i] = m[3 * i + 2];
        if (mj) mj[i] = maj[3 * i];
        if (sh) sh[i] = shu[3 * i], shl[i] = shu[3 * i + 1], shh[i] = shu[3 * i + 2];
        if (ct) ct[i] = ctl[3 * i];
    }
    v->metric = !strcmp(metric, "accuracy") ? "accuracy" : !strcmp(metric, "auroc") ? "AUROC" : "R²";
out:
    free(m), free(maj), free(shu), free(ctl), free(layer);
    H5Fclose(f);
    if (s) ks_view_probe_free(v);
    return s;
}

/* ================================================================ audit results */

void ks_view_audit_free(ks_view_audit *v) {
    if (!v) return;
    if (v->forest.rows) {
        for (int i = 0; i < v->forest.n_rows; i++) free((void *)v->forest.rows[i].label), free((void *)v->forest.rows[i].note);
        free((void *)v->forest.rows);
    }
    free((void *)v->forest.title);
    if (v->items.cells) ks_dump_strings_free((char **)v->items.cells, v->items.n_rows * v->items.n_cols);
    free((void *)v->items.title);
    memset(v, 0, sizeof *v);
}

static const char *const headline[] = {"pct_stereotype", "ss", "bias_score_disambig", "gap", "accuracy"};

ks_status ks_view_audit_load(const char *path, const char *audit, const char *metric, ks_view_audit *v, ks_error *err) {
    memset(v, 0, sizeof *v);
    char *file = NULL;
    ks_view_file_kind kind;
    ks_status s = ks_view_file_kind_detect(path, &kind, &file, err);
    if (s) return s;
    if (kind != KS_VIEW_FILE_AUDIT) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s is %s, not audit results (results.h5 of koalascope audit)", path,
                         ks_view_file_kind_name(kind));
        free(file);
        return s;
    }
    hid_t f = open_file(file, err), g = -1;
    char **ma = NULL, **mm = NULL, **mc = NULL, **id = NULL, **cat = NULL;
    double *vci = NULL, *pv = NULL, *ll = NULL;
    int32_t *gold = NULL, *pred = NULL;
    int64_t M = 0, N = 0;
    if (f < 0) {
        s = err ? err->code : KS_ERR_FORMAT;
        goto out;
    }
    hid_t mg = H5Lexists(f, "metrics", H5P_DEFAULT) > 0 ? H5Gopen2(f, "metrics", H5P_DEFAULT) : -1;
    if (mg < 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /metrics is missing", file);
        goto out;
    }
    s = read_strs(file, mg, "audit", -1, &ma, &M, err);
    if (!s) s = read_strs(file, mg, "metric", M, &mm, NULL, err);
    if (!s) s = read_strs(file, mg, "category", M, &mc, NULL, err);
    if (!s) s = read_num(file, mg, "value_ci", M, 3, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&vci, NULL, err);
    if (!s) s = read_num(file, mg, "p_value", M, -1, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&pv, NULL, err);
    H5Gclose(mg);
    if (s) goto out;
    if (M < 1) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /metrics is empty", file);
        goto out;
    }
    if (!audit) audit = ma[0];
    bool found = false;
    for (int64_t i = 0; i < M; i++) found |= !strcmp(ma[i], audit);
    if (!found) {
        s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s has no audit '%s' (the first is '%s')", file, audit, ma[0]);
        goto out;
    }
    snprintf(v->audit, sizeof v->audit, "%s", audit);
    if (!metric) {
        for (size_t h = 0; h < sizeof headline / sizeof *headline && !metric; h++)
            for (int64_t i = 0; i < M && !metric; i++)
                if (!strcmp(ma[i], audit) && !strcmp(mm[i], headline[h])) metric = headline[h];
        for (int64_t i = 0; i < M && !metric; i++)
            if (!strcmp(ma[i], audit)) metric = mm[i];
    }
    snprintf(v->metric, sizeof v->metric, "%s", metric);
    int nr = 0;
    for (int64_t i = 0; i < M; i++) nr += !strcmp(ma[i], audit) && !strcmp(mm[i], metric);
    if (!nr) {
        s = ks_error_set(err, KS_ERR_NOT_FOUND, "%s: audit '%s' has no metric '%s'", file, audit, metric);
        goto out;
    }
    ks_forest_row *rows = calloc((size_t)nr, sizeof *rows);
    char *title = malloc(320);
    v->forest.rows = rows, v->forest.n_rows = 0;
    v->forest.title = title;
    if (!rows || !title) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(title, 320, "%s: %s by category", audit, metric);
    v->forest.xmin = v->forest.xmax = v->forest.reference = NAN;
    v->forest.xlabel = v->metric;
    for (int64_t i = 0; i < M; i++) {
        if (strcmp(ma[i], audit) || strcmp(mm[i], metric)) continue;
        ks_forest_row *r = &rows[v->forest.n_rows++];
        char note[64];
        snprintf(note, sizeof note, "p=%.3g", pv[i]);
        r->label = strdup(mc[i]);
        r->note = strdup(note);
        r->value = vci[3 * i], r->lo = vci[3 * i + 1], r->hi = vci[3 * i + 2];
        r->color = 5;
    }
    /* the items of the audit */
    char gp[200];
    snprintf(gp, sizeof gp, "audits/%s", audit);
    if (strchr(audit, '/') || H5Lexists(f, "audits", H5P_DEFAULT) <= 0 || H5Lexists(f, gp, H5P_DEFAULT) <= 0 ||
        (g = H5Gopen2(f, gp, H5P_DEFAULT)) < 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s is missing", file, gp);
        goto out;
    }
    s = read_strs(file, g, "id", -1, &id, &N, err);
    if (!s) s = read_strs(file, g, "category", N, &cat, NULL, err);
    if (!s) s = read_num(file, g, "gold", N, -1, H5T_NATIVE_INT32, sizeof(int32_t), (void **)&gold, NULL, err);
    if (!s) s = read_num(file, g, "prediction", N, -1, H5T_NATIVE_INT32, sizeof(int32_t), (void **)&pred, NULL, err);
    if (!s) s = read_num(file, g, "ll", N, 3, H5T_NATIVE_DOUBLE, sizeof(double), (void **)&ll, NULL, err);
    if (s) goto out;
    static const char *const hdr[] = {"id", "category", "gold", "prediction", "ll A", "ll B", "ll C"};
    static const double wt[] = {2.2, 2.2, 0.8, 1.1, 1, 1, 1};
    int C = 7;
    char **cells = calloc((size_t)(N ? N : 1) * C, sizeof *cells);
    char *ititle = malloc(200);
    v->items = (ks_table){.n_cols = C, .headers = hdr, .col_weight = wt, .n_rows = N, .cells = (const char *const *)cells,
                          .vmin = NAN, .vmax = NAN, .selected = -1, .title = ititle};
    if (!cells || !ititle) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(ititle, 200, "%s: %lld items", audit, (long long)N);
    for (int64_t i = 0; i < N && !s; i++) {
        char b[5][32];
        snprintf(b[0], 32, "%d", gold[i]);
        snprintf(b[1], 32, "%d", pred[i]);
        for (int k = 0; k < 3; k++) {
            if (isnan(ll[3 * i + k])) b[2 + k][0] = 0; /* an option the item does not have */
            else snprintf(b[2 + k], 32, "%.3f", ll[3 * i + k]);
        }
        const char *src[7] = {id[i], cat[i], b[0], b[1], b[2], b[3], b[4]};
        for (int c = 0; c < C; c++)
            if (!(cells[i * C + c] = strdup(src[c]))) s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < v->forest.n_rows && !s; i++)
        if (!rows[i].label || !rows[i].note) s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
out:
    ks_dump_strings_free(ma, M), ks_dump_strings_free(mm, M), ks_dump_strings_free(mc, M);
    ks_dump_strings_free(id, N), ks_dump_strings_free(cat, N);
    free(vci), free(pv), free(ll), free(gold), free(pred);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    free(file);
    if (s) ks_view_audit_free(v);
    return s;
}
