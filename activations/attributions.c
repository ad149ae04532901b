/* attributions.c — ks_attribution_write: one attribution result (saliency, integrated
 * gradients, head attribution, patching, ...) stored as the group /attributions/<name> of a
 * koalascope dump, or of a file of its own (docs/FORMAT.md, "/attributions").
 *
 * All or nothing: the group is created anonymous (H5Gcreate_anon), filled, and linked under
 * its name (H5Olink) as the very last step. An anonymous object that was never linked is freed
 * when its handle closes, so a failure at any earlier step leaves nothing of the result in the
 * file. This is the usual "build under a temporary name, then rename" without the temporary
 * name: nothing to clean up after a failure, nothing for a crash to strand in /attributions.
 * Replacing a result (overwrite) moves the old one aside first, and back if the new link fails.
 * A file this call created is removed again when the call fails.
 *
 * The format's rules hold here too: strings are fixed-length UTF-8, never variable-length
 * (dump_read.c refuses those; fuzzing showed why), integers and floats little-endian. A dump is
 * opened with ks_dump_open before anything is written into it, so a damaged, interrupted or
 * still-recording dump is refused rather than written to; the reader ignores /attributions.
 *
 * Every HDF5 call is checked through H5TRY (house rule 5): one exit path closes every handle. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dump_private.h"

#define ATTR_GROUP "attributions"
#define ATTR_MAX_NAME 255
/* The product of the shape stays below this (elements). */
#define ATTR_MAX_VALUES ((int64_t)1 << 31)
/* The "axes" attribute: names joined by ',' (checked up front, so that a write never fails
 * half-way for it). */
#define ATTR_MAX_AXES_BYTES 1024
/* Widest root `format` attribute read to compare it: ours are 23 bytes. */
#define ATTR_MAX_FORMAT_BYTES 256
/* Suffix of a replaced result while its successor is being linked: '~' is outside the name
 * alphabet, so it never collides with a result. */
#define ATTR_ASIDE_SUFFIX "~replaced"

#define H5TRY(call, ...) KS_H5_TRY_AS(KS_ERR_IO, call, __VA_ARGS__)
#define attr_str ks_h5_attr_str
#define attr_i32 ks_h5_attr_i32
#define attr_f64 ks_h5_attr_f64
#define write_ds ks_h5_write_ds
#define latest_fapl ks_h5_latest_fapl

#define CHECK(call)                          \
    do {                                     \
        if ((s = (call)) != KS_OK) goto out; \
    } while (0)

/* ================================================================ validation */

/* Length of the well-formed UTF-8 sequence at s (n bytes left), 0 when there is none: RFC 3629,
 * so no overlong forms, surrogates or code points past U+10FFFF, which strict decoders (Python's,
 * h5py's .asstr()) refuse. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t k = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!k || k > n) return 0;
    unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c == 0xe0) lo = 0xa0;
    else if (c == 0xed) hi = 0x9f;
    else if (c == 0xf0) lo = 0x90;
    else if (c == 0xf4) hi = 0x8f;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t j = 2; j < k; j++)
        if ((s[j] & 0xc0) != 0x80) return 0;
    return k;
}

static bool valid_utf8(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_seq(s + i, n - i))) return false;
    return true;
}

/* Free text (objective, token strings) is stored as valid UTF-8: each byte that is not part of
 * a well-formed sequence is spelled "<0xNN>", as the dump spells a byte token (a byte piece's
 * text on its own is one such byte). Writes the result to out (when not NULL, room for the
 * length returned plus a NUL) and returns its length. */
static size_t utf8_spell(const char *str, char *out) {
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str), len = 0;
    for (size_t i = 0, k; i < n; i += k) {
        if ((k = utf8_seq(s + i, n - i))) {
            if (out) memcpy(out + len, s + i, k);
            len += k;
        } else {
            k = 1;
            if (out) snprintf(out + len, 7, "<0x%02X>", s[i]);
            len += 6;
        }
    }
    if (out) out[len] = '\0';
    return len;
}

/* A malloc'd copy of str spelled by utf8_spell (NULL str: ""); NULL when out of memory. */
static char *utf8_spelled(const char *str) {
    const char *s = str ? str : "";
    char *out = malloc(utf8_spell(s, NULL) + 1);
    if (out) utf8_spell(s, out);
    return out;
}

static bool valid_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > ATTR_MAX_NAME || !strcmp(name, ".") || !strcmp(name, "..")) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

/* Everything about r that can be checked without the file. *tok_w gets the width of the
 * token_strings dataset (the longest piece, at least 1 byte). */
static ks_status check_result(const char *path, const ks_attribution *r, size_t *tok_w,
                              ks_error *err) {
    const char *nm = r->name;
    if (!nm || !valid_name(nm))
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution name '%.80s' is not valid (1 to %d "
                            "of A-Z a-z 0-9 _ . -, not '.' or '..')", path, nm ? nm : "(null)",
                            ATTR_MAX_NAME);
    if (!r->method || !*r->method || !valid_utf8(r->method))
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': the method is %s", path, nm,
                            !r->method || !*r->method ? "missing" : "not valid UTF-8");
    if (!r->tokens || r->n_tokens < 1)
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': no tokens (%s)", path, nm,
                            !r->tokens ? "tokens is NULL" : "n_tokens < 1");
    for (int i = 0; i < r->n_tokens; i++)
        if (r->tokens[i] < 0)
            return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': token %d has the id %d",
                                path, nm, i, r->tokens[i]);
    *tok_w = 1;
    if (r->token_strings)
        for (int i = 0; i < r->n_tokens; i++) {
            const char *t = r->token_strings[i];
            if (!t)
                return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': token string %d is "
                                    "NULL", path, nm, i);
            size_t len = utf8_spell(t, NULL);
            if (len > *tok_w) *tok_w = len;
        }
    if (r->ndim < 1 || r->ndim > 3)
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': %d dimensions (1 to 3)", path,
                            nm, r->ndim);
    if (!r->values || !r->shape || !r->axes)
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': %s is NULL", path, nm,
                            !r->values ? "values" : !r->shape ? "shape" : "axes");
    int64_t total = 1;
    size_t axes_len = 0;
    for (int k = 0; k < r->ndim; k++) {
        const char *a = r->axes[k];
        if (r->shape[k] < 1 || r->shape[k] >= ATTR_MAX_VALUES)
            return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': axis %d has %lld entries",
                                path, nm, k, (long long)r->shape[k]);
        total *= r->shape[k]; /* both factors < 2^31: no overflow before the check below */
        if (total >= ATTR_MAX_VALUES)
            return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': the shape holds %lld "
                                "values or more, above the limit of 2^31 - 1", path, nm,
                                (long long)total);
        if (!a || !*a || strchr(a, ',') || !valid_utf8(a))
            return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': axis name %d %s", path,
                                nm, k, !a || !*a ? "is missing" : strchr(a, ',') ? "contains a ','"
                                                                                 : "is not valid UTF-8");
        axes_len += strlen(a) + 1;
    }
    if (axes_len > ATTR_MAX_AXES_BYTES)
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': the axis names take %zu bytes "
                            "(at most %d)", path, nm, axes_len, ATTR_MAX_AXES_BYTES);
    if (r->steps < 0)
        return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': steps = %d", path, nm,
                            r->steps);
    if (r->extra_json) {
        json_error_t je;
        json_t *j = json_loads(r->extra_json, JSON_REJECT_DUPLICATES, &je);
        bool parsed = j != NULL, obj = j && json_is_object(j);
        json_decref(j);
        if (!obj)
            return ks_error_set(err, KS_ERR_ARG, "%s: attribution '%s': extra_json is not a JSON "
                                "object (%s)", path, nm, parsed ? "another JSON value" : je.text);
    }
    return KS_OK;
}

/* ================================================================ attributes */

/* Root attribute `name` of f when it is a fixed-length string of fewer than cap bytes: into
 * buf, *found true. A variable-length one is not read at all (its bytes would come from the
 * unchecksummed global heap, see dump_read.c); it and any other type leave *found false. */
static ks_status root_str(const char *path, hid_t f, const char *name, char *buf, size_t cap,
                          bool *found, ks_error *err) {
    ks_status s = KS_OK;
    hid_t a = -1, t = -1, mt = -1;
    htri_t ex, vl;
    size_t w;
    *found = false;
    buf[0] = '\0';
    H5TRY(ex = H5Aexists(f, name), "%s: cannot look up root attribute '%s'", path, name);
    if (!ex) goto out;
    H5TRY(a = H5Aopen(f, name, H5P_DEFAULT), "%s: cannot open root attribute '%s'", path, name);
    H5TRY(t = H5Aget_type(a), "%s: root attribute '%s': cannot read the type", path, name);
    if (H5Tget_class(t) != H5T_STRING) goto out;
    H5TRY(vl = H5Tis_variable_str(t), "%s: root attribute '%s': cannot read the type", path, name);
    w = H5Tget_size(t);
    if (vl || w == 0 || w >= cap) goto out;
    /* HDF5 converts no character set into another: read in the file's (ASCII from other
     * writers, UTF-8 from ours) */
    H5TRY(mt = ks_h5_fixed_str_type(w + 1, H5T_STR_NULLTERM),
          "%s: root attribute '%s': cannot make a string type", path, name);
    H5TRY(H5Tset_cset(mt, H5Tget_cset(t)), "%s: root attribute '%s': cannot make a string type",
          path, name);
    H5TRY(H5Aread(a, mt, buf), "%s: cannot read root attribute '%s'", path, name);
    buf[w] = '\0';
    *found = true;
out:
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return s;
}

/* Root attribute format_version as an integer; *found false when absent or not an integer. */
static ks_status root_version(const char *path, hid_t f, long long *v, bool *found,
                              ks_error *err) {
    ks_status s = KS_OK;
    hid_t a = -1, t = -1, sp = -1;
    htri_t ex;
    *found = false;
    H5TRY(ex = H5Aexists(f, "format_version"), "%s: cannot look up root attribute "
          "'format_version'", path);
    if (!ex) goto out;
    H5TRY(a = H5Aopen(f, "format_version", H5P_DEFAULT), "%s: cannot open root attribute "
          "'format_version'", path);
    H5TRY(t = H5Aget_type(a), "%s: root attribute 'format_version': cannot read the type", path);
    H5TRY(sp = H5Aget_space(a), "%s: root attribute 'format_version': cannot read the dataspace",
          path);
    if (!ks_h5_plain_number(t) || H5Tget_class(t) != H5T_INTEGER ||
        H5Sget_simple_extent_npoints(sp) != 1)
        goto out;
    H5TRY(H5Aread(a, H5T_NATIVE_LLONG, v), "%s: cannot read root attribute 'format_version'", path);
    *found = true;
out:
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return s;
}

/* ================================================================ the file */

typedef enum {
    FILE_NEW,          /* path does not exist */
    FILE_DUMP,         /* a complete or stopped (not interrupted) koalascope dump */
    FILE_ATTRIBUTIONS, /* a file of attribution results */
} file_kind;

/* format and format_version of the open file f: which of ours it is, else KS_ERR_FORMAT. */
static ks_status file_format(const char *path, hid_t f, file_kind *kind, ks_error *err) {
    ks_status s = KS_OK;
    char fmt[ATTR_MAX_FORMAT_BYTES];
    bool has_fmt, has_ver;
    long long ver = 0;
    CHECK(root_str(path, f, "format", fmt, sizeof fmt, &has_fmt, err));
    if (has_fmt && !strcmp(fmt, KS_DUMP_FORMAT)) *kind = FILE_DUMP;
    else if (has_fmt && !strcmp(fmt, KS_ATTRIBUTIONS_FORMAT)) *kind = FILE_ATTRIBUTIONS;
    else if (has_fmt)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: neither a koalascope dump nor a koalascope "
                            "attributions file (root attribute 'format' is '%.60s'); refusing to "
                            "write into it", path, fmt);
    else
        return ks_error_set(err, KS_ERR_FORMAT, "%s: neither a koalascope dump nor a koalascope "
                            "attributions file (no root attribute 'format'); refusing to write "
                            "into it", path);
    CHECK(root_version(path, f, &ver, &has_ver, err));
    int ours = *kind == FILE_DUMP ? KS_DUMP_FORMAT_VERSION : KS_ATTRIBUTIONS_FORMAT_VERSION;
    if (!has_ver || ver < 1)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'format_version' is %s", path,
                            has_ver ? "not a positive integer" : "missing or not an integer");
    if (ver > ours)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: format_version %lld is newer than this "
                            "writer (%d): use a newer koalascope", path, ver, ours);
out:
    return s;
}

/* What path is, before anything is written to it. A dump is opened with the dump reader and
 * must pass it: attributions are not added to a dump that the reader would refuse, nor to one
 * whose writer was killed or is still running (HDF5 would refuse to open it for writing, and
 * a live recorder's file must not be touched). */
static ks_status classify(const char *path, file_kind *kind, ks_error *err) {
    ks_status s = KS_OK;
    struct stat st;
    hid_t f = -1;
    ks_error first = {0};
    ks_dump *d = NULL;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) {
            *kind = FILE_NEW;
            return KS_OK;
        }
        return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) return ks_error_set(err, KS_ERR_IO, "%s: is a directory", path);
    FILE *fp = fopen(path, "rb");
    if (!fp) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(fp);
    htri_t is = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    if (is <= 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not an HDF5 file; refusing to write "
                            "attribution results into it", path);
    if ((s = ks_h5_check_superblock(path, err))) return s;
    if ((f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
        /* an interrupted (or live) SWMR writer leaves the "open for writing" flag: a SWMR
         * reader still opens it, enough to tell the user what it is */
        ks_h5_error(&first, KS_ERR_IO, "%s: cannot open", path);
        f = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT);
        H5Eclear2(H5E_DEFAULT);
        if (f >= 0 && file_format(path, f, kind, err) == KS_OK && *kind == FILE_DUMP)
            s = ks_error_set(err, KS_ERR_ARG, "%s: an interrupted dump, or one still being "
                             "recorded: finish it (`koalascope record ... --resume`) or repair it "
                             "(`koalascope dump-info --repair`) before adding attributions", path);
        else
            s = ks_error_set(err, first.code, "%s", first.msg);
        goto out;
    }
    CHECK(file_format(path, f, kind, err));
    H5Fclose(f);
    f = -1;
    if (*kind == FILE_DUMP) {
        ks_error e = {0};
        ks_status ds = ks_dump_open(path, &d, &e);
        if (ds != KS_OK) {
            s = ks_error_set(err, ds, "%s (refusing to add attributions to it)", e.msg);
            goto out;
        }
        if (ks_dump_interrupted(d)) { /* plain HDF5 opened it above; kept for safety */
            s = ks_error_set(err, KS_ERR_ARG, "%s: an interrupted dump: resume or repair it "
                             "before adding attributions", path);
            goto out;
        }
    }
out:
    ks_dump_close(d);
    if (f >= 0) H5Fclose(f);
    return s;
}

static void utc_now(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* File access as the recorder's: the latest format, so that objects added to a dump are of
 * the kind the rest of it has (and dense attribute storage lifts the 64 KiB limit on
 * attributes: params and objective are free text). */
static ks_status write_root_attrs(const char *path, hid_t f, const char *model_path,
                                  const char *command_line, ks_error *err) {
    ks_status s = KS_OK;
    char created[32];
    utc_now(created, sizeof created);
    CHECK(attr_str(path, "root", f, "format", KS_ATTRIBUTIONS_FORMAT, err));
    CHECK(attr_i32(path, "root", f, "format_version", KS_ATTRIBUTIONS_FORMAT_VERSION, err));
    CHECK(attr_str(path, "root", f, "koalascope_version", ks_version(), err));
    CHECK(attr_str(path, "root", f, "created", created, err));
    CHECK(attr_str(path, "root", f, "model_path", model_path, err));
    CHECK(attr_str(path, "root", f, "command_line", command_line, err));
out:
    return s;
}

/* ================================================================ the group */

/* Build the result as an anonymous group of f: *out is linked nowhere yet. */
static ks_status build_group(const char *path, hid_t f, const ks_attribution *r, size_t tok_w,
                             const char *model_path, const char *command_line, hid_t *out,
                             ks_error *err) {
    ks_status s = KS_OK;
    hid_t g = -1, ts = -1;
    char obj[300], axes[ATTR_MAX_AXES_BYTES + 1], created[32];
    char *strs = NULL, *objective = NULL;
    hsize_t dims[3], n = (hsize_t)r->n_tokens;
    size_t used = 0;
    *out = -1;
    snprintf(obj, sizeof obj, "/" ATTR_GROUP "/%s", r->name);
    H5TRY(g = H5Gcreate_anon(f, H5P_DEFAULT, H5P_DEFAULT), "%s: cannot create the group for %s",
          path, obj);
    for (int k = 0; k < r->ndim; k++) dims[k] = (hsize_t)r->shape[k];
    CHECK(write_ds(path, obj, g, "values", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, r->ndim, dims,
                   r->values, err));
    CHECK(write_ds(path, obj, g, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT, 1, &n, r->tokens, err));
    if (r->token_strings) {
        /* NUL-padded to the longest piece, as the dump's /token_strings */
        if (!(strs = calloc((size_t)n, tok_w))) {
            s = ks_error_set(err, KS_ERR_NOMEM, "%s: %s: out of memory for %d token strings", path,
                             obj, r->n_tokens);
            goto out;
        }
        for (int i = 0; i < r->n_tokens; i++) {
            /* spelled in place of the caller's text: its length fits tok_w (check_result) */
            char *piece = utf8_spelled(r->token_strings[i]);
            if (!piece) {
                s = ks_error_set(err, KS_ERR_NOMEM, "%s: %s: out of memory", path, obj);
                goto out;
            }
            memcpy(strs + (size_t)i * tok_w, piece, strlen(piece));
            free(piece);
        }
        H5TRY(ts = ks_h5_fixed_str_type(tok_w, H5T_STR_NULLPAD), "%s: %s: cannot make a string type",
              path, obj);
        CHECK(write_ds(path, obj, g, "token_strings", ts, ts, 1, &n, strs, err));
    }
    axes[0] = '\0';
    for (int k = 0; k < r->ndim; k++) {
        int len = snprintf(axes + used, sizeof axes - used, "%s%s", k ? "," : "", r->axes[k]);
        if (len < 0 || (size_t)len >= sizeof axes - used) { /* check_result prevents it */
            s = ks_error_set(err, KS_ERR_INTERNAL, "%s: %s: the axis names are longer than %zu "
                             "bytes", path, obj, sizeof axes - 1);
            goto out;
        }
        used += (size_t)len;
    }
    utc_now(created, sizeof created);
    CHECK(attr_str(path, obj, g, "method", r->method, err));
    if (!(objective = utf8_spelled(r->objective))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: %s: out of memory", path, obj);
        goto out;
    }
    CHECK(attr_str(path, obj, g, "objective", objective, err));
    CHECK(attr_str(path, obj, g, "axes", axes, err));
    CHECK(attr_f64(path, obj, g, "objective_value", r->objective_value, err));
    CHECK(attr_f64(path, obj, g, "baseline_value", r->baseline_value, err));
    CHECK(attr_f64(path, obj, g, "completeness_error", r->completeness_error, err));
    CHECK(attr_i32(path, obj, g, "steps", r->steps, err));
    if (r->extra_json) CHECK(attr_str(path, obj, g, "params", r->extra_json, err));
    CHECK(attr_str(path, obj, g, "created", created, err));
    /* the run that made this result: a dump's own root attributes describe the recording */
    CHECK(attr_str(path, obj, g, "model_path", model_path, err));
    CHECK(attr_str(path, obj, g, "command_line", command_line, err));
    *out = g;
    g = -1;
out:
    free(strs);
    free(objective);
    if (ts >= 0) H5Tclose(ts);
    if (g >= 0) H5Gclose(g); /* never linked: HDF5 frees it */
    return s;
}

/* Link the built group g as parent/name; an existing result of that name (overwrite) is moved
 * aside first and dropped once g is in place, or moved back if linking g fails. */
static ks_status publish(const char *path, hid_t parent, hid_t g, const char *name, bool replace,
                         ks_error *err) {
    ks_status s = KS_OK;
    char aside[ATTR_MAX_NAME + sizeof ATTR_ASIDE_SUFFIX];
    htri_t ex;
    if (!replace) {
        H5TRY(H5Olink(g, parent, name, H5P_DEFAULT, H5P_DEFAULT),
              "%s: cannot link /" ATTR_GROUP "/%s", path, name);
        goto out;
    }
    snprintf(aside, sizeof aside, "%s" ATTR_ASIDE_SUFFIX, name);
    H5TRY(ex = H5Lexists(parent, aside, H5P_DEFAULT), "%s: cannot look up /" ATTR_GROUP "/%s",
          path, aside);
    if (ex) /* left by a replace that was killed half-way: the old result, no longer wanted */
        H5TRY(H5Ldelete(parent, aside, H5P_DEFAULT), "%s: cannot delete /" ATTR_GROUP "/%s", path,
              aside);
    H5TRY(H5Lmove(parent, name, parent, aside, H5P_DEFAULT, H5P_DEFAULT),
          "%s: cannot move the old /" ATTR_GROUP "/%s aside", path, name);
    if (H5Olink(g, parent, name, H5P_DEFAULT, H5P_DEFAULT) < 0) {
        s = ks_h5_fail(err, KS_ERR_IO, __FILE__, __LINE__, "%s: cannot link /" ATTR_GROUP "/%s", path, name);
        if (H5Lmove(parent, aside, parent, name, H5P_DEFAULT, H5P_DEFAULT) < 0)
            H5Eclear2(H5E_DEFAULT); /* the error above is the one to report */
        goto out;
    }
    if (H5Ldelete(parent, aside, H5P_DEFAULT) < 0)
        s = ks_h5_fail(err, KS_ERR_IO, __FILE__, __LINE__, "%s: /" ATTR_GROUP "/%s is written, but the result it replaced "
                    "is left as /" ATTR_GROUP "/%s", path, name, aside);
out:
    return s;
}

ks_status ks_attribution_write(const char *path, const ks_attribution *r, const char *model_path,
                               const char *command_line, bool overwrite, ks_error *err) {
    ks_status s = KS_OK;
    file_kind kind = FILE_NEW;
    hid_t fapl = -1, f = -1, parent = -1, g = -1;
    bool made_file = false, made_parent = false;
    size_t tok_w = 1;
    htri_t ex;
    H5O_info_t info;
    if (!path || !r)
        return ks_error_set(err, KS_ERR_ARG, "ks_attribution_write: NULL %s", path ? "result" : "path");
    CHECK(check_result(path, r, &tok_w, err));
    ks_h5_init();
    CHECK(classify(path, &kind, err));
    H5TRY(fapl = latest_fapl(), "%s: cannot make a file access list", path);
    if (kind == FILE_NEW) {
        /* EXCL: a file that appeared since classify is not overwritten */
        H5TRY(f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, fapl), "%s: cannot create", path);
        made_file = true;
        CHECK(write_root_attrs(path, f, model_path, command_line, err));
    } else {
        H5TRY(f = H5Fopen(path, H5F_ACC_RDWR, fapl), "%s: cannot open for writing", path);
    }
    H5TRY(ex = H5Lexists(f, ATTR_GROUP, H5P_DEFAULT), "%s: cannot look up /" ATTR_GROUP, path);
    if (ex) {
        H5TRY(H5Oget_info_by_name2(f, ATTR_GROUP, &info, H5O_INFO_BASIC, H5P_DEFAULT),
              "%s: cannot look up /" ATTR_GROUP, path);
        if (info.type != H5O_TYPE_GROUP) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: /" ATTR_GROUP " is not a group", path);
            goto out;
        }
        H5TRY(parent = H5Gopen2(f, ATTR_GROUP, H5P_DEFAULT), "%s: cannot open /" ATTR_GROUP, path);
    } else {
        H5TRY(parent = H5Gcreate2(f, ATTR_GROUP, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              "%s: cannot create /" ATTR_GROUP, path);
        made_parent = true;
    }
    H5TRY(ex = H5Lexists(parent, r->name, H5P_DEFAULT), "%s: cannot look up /" ATTR_GROUP "/%s",
          path, r->name);
    if (ex && !overwrite) {
        s = ks_error_set(err, KS_ERR_ARG, "%s: /" ATTR_GROUP "/%s exists (choose another name, or "
                         "overwrite it)", path, r->name);
        goto out;
    }
    CHECK(build_group(path, f, r, tok_w, model_path, command_line, &g, err));
    CHECK(publish(path, parent, g, r->name, ex > 0, err));
out:
    if (g >= 0) H5Gclose(g);
    if (s != KS_OK && made_parent && parent >= 0) {
        H5Gclose(parent);
        parent = -1;
        if (H5Ldelete(f, ATTR_GROUP, H5P_DEFAULT) < 0) H5Eclear2(H5E_DEFAULT);
    }
    if (parent >= 0) H5Gclose(parent);
    if (f >= 0 && H5Fclose(f) < 0 && s == KS_OK)
        s = ks_h5_fail(err, KS_ERR_IO, __FILE__, __LINE__, "%s: cannot close", path);
    if (fapl >= 0) H5Pclose(fapl);
    if (s != KS_OK && made_file) unlink(path);
    return s;
}

/* ------------------------------------------------------------------ listing */

typedef struct {
    const char *path;
    ks_attribution_info *v;
    int n, cap;
    ks_status s;
    ks_error *err;
} list_ctx;

static herr_t list_one(hid_t g, const char *name, const H5L_info_t *info, void *user) {
    (void)info;
    list_ctx *c = user;
    ks_error *err = c->err;
    ks_status s = KS_OK;
    hid_t r = -1, d = -1, sp = -1;
    bool found;
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        ks_attribution_info *v = realloc(c->v, (size_t)cap * sizeof *v);
        if (!v) {
            c->s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory listing results", c->path);
            return -1;
        }
        c->v = v;
        c->cap = cap;
    }
    ks_attribution_info *a = &c->v[c->n];
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    H5TRY(r = H5Gopen2(g, name, H5P_DEFAULT), "%s: cannot open /" ATTR_GROUP "/%s", c->path, name);
    if ((s = root_str(c->path, r, "method", a->method, sizeof a->method, &found, err)) ||
        (s = root_str(c->path, r, "axes", a->axes, sizeof a->axes, &found, err)))
        goto out;
    H5TRY(d = H5Dopen2(r, "values", H5P_DEFAULT), "%s: /" ATTR_GROUP "/%s has no values", c->path, name);
    H5TRY(sp = H5Dget_space(d), "%s: /" ATTR_GROUP "/%s/values: no dataspace", c->path, name);
    hsize_t dims[3] = {0, 0, 0};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd < 1 || nd > 3) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /" ATTR_GROUP "/%s/values has rank %d (1..3)",
                         c->path, name, nd);
        goto out;
    }
    H5TRY(H5Sget_simple_extent_dims(sp, dims, NULL), "%s: /" ATTR_GROUP "/%s/values: no shape",
          c->path, name);
    a->ndim = nd;
    for (int i = 0; i < nd; i++) a->shape[i] = (int64_t)dims[i];
    c->n++;
out:
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if (r >= 0) H5Gclose(r);
    c->s = s;
    return s ? -1 : 0;
}

ks_status ks_attribution_list(const char *path, ks_attribution_info **out, int *n, ks_error *err) {
    *out = NULL;
    *n = 0;
    ks_h5_init();
    ks_status s = KS_OK;
    hid_t f = -1, g = -1, fapl = -1;
    htri_t ex;
    list_ctx c = {.path = path, .err = err};
    H5TRY(fapl = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot make a file access list", path);
    H5TRY(H5Pset_metadata_read_attempts(fapl, KS_H5_SWMR_READ_ATTEMPTS),
          "%s: cannot set the metadata read attempts", path);
    /* the file may be open in this process already (dump-info holds it through ks_dump_open):
     * HDF5 then wants the same access flags, SWMR or not */
    CHECK(ks_h5_check_superblock(path, err));
    f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) H5TRY(f = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl),
                     "%s: cannot open", path);
    H5TRY(ex = H5Lexists(f, ATTR_GROUP, H5P_DEFAULT), "%s: cannot look up /" ATTR_GROUP, path);
    if (!ex) goto out;
    H5TRY(g = H5Gopen2(f, ATTR_GROUP, H5P_DEFAULT), "%s: /" ATTR_GROUP " is not a group", path);
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, list_one, &c) < 0) {
        s = c.s ? c.s : ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot list /" ATTR_GROUP, path);
        goto out;
    }
    *out = c.v;
    *n = c.n;
    c.v = NULL;
out:
    free(c.v);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    if (fapl >= 0) H5Pclose(fapl);
    return s;
}
