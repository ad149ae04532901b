/* dump_read.c — the reading half of ks_dump.h: open a koalascope dump (docs/FORMAT.md), check
 * it, and hand back prompts, tokens and hook tensors as f32; plus ks_dump_repair, which makes
 * an interrupted dump open in plain HDF5 readers again.
 *
 * Everything in the file is untrusted input. At open we check the root attributes, the model
 * config, the type, rank and length of every dataset against the committed counts
 * (P = len(/prompt_offsets) - 1, N, R, K), and the shape of every hook against the config.
 * What is per prompt (offsets between neighbours, row positions, attention row starts) is
 * checked when that prompt is read, so that opening stays O(hooks) however many prompts the
 * dump holds, and a dump larger than memory reads one hyperslab at a time.
 *
 * Strings (root and dataset attributes, /prompts, /prompt_ids, /generations, /token_strings)
 * are fixed-length only: a variable-length type anywhere is refused before it is read, since
 * its bytes would come from HDF5's global heap, which carries no checksum and which libhdf5
 * 1.10 decodes unchecked (fuzz_dump crashed it there). See fixed_str_type.
 *
 * Every HDF5 call is checked through H5TRY (netCDF-C style): one exit path per function
 * (`out:`) closes every handle it opened. HDF5 converts f16/bf16 to f32 exactly on read. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "dump_private.h"

/* Plausibility limits for the model config of a dump (those of model/model.c). */
#define DUMP_MAX_DIM (1 << 20)
#define DUMP_MAX_LAYERS (1 << 12)
#define DUMP_MAX_VOCAB (1 << 24)
#define DUMP_MAX_SEQ (1 << 26)
/* A dimension above this is a corrupted dataspace, not data (keeps products in int64). */
#define DUMP_MAX_EXTENT ((hsize_t)1 << 48)
#define DUMP_MAX_ATTRS 4096
#define DUMP_MAX_HOOKS 65536
/* Widest fixed-length string (bytes) we accept; reads of many strings go in blocks of about
 * DUMP_STR_BLOCK_BYTES, and one read hands back at most DUMP_MAX_STR_TOTAL bytes of text. */
#define DUMP_MAX_FIXED_STR (1 << 24)
#define DUMP_STR_BLOCK_BYTES (1 << 20)
#define DUMP_MAX_STR_TOTAL (1 << 26)
#define DUMP_SWMR_READ_ATTEMPTS KS_H5_SWMR_READ_ATTEMPTS

typedef struct {
    ks_dump_hook pub; /* first: the public view handed out */
    char *name;
    int *heads;       /* pub.n_heads entries */
    hid_t ds;
    int64_t extent;   /* rows (token kind) or keys (attention kind) the dataset holds */
    int order;        /* forward-order sort key */
} dump_hook;

typedef struct {
    char *name;
    char *value;
} dump_attr;

struct ks_dump {
    char *path;
    hid_t file;
    hid_t prompt_offsets, row_offsets, attn_offsets;
    hid_t prompts, prompt_ids, prompt_lengths, generations;
    hid_t tokens, token_strings, row_positions, attn_row_starts;
    hid_t topk_ids, topk_logprobs, next_logprob, full_logits; /* -1 when absent */
    int64_t P, N, R, K; /* committed prompts, tokens, rows, keys */
    bool complete, interrupted;
    ks_config cfg;
    int topk;
    int n_attrs;
    dump_attr *attrs;
    int n_hooks;
    dump_hook *hooks;
};

#define H5TRY(call, ...) KS_H5_TRY_AS(KS_ERR_FORMAT, call, __VA_ARGS__)

/* A check on the file's content failed: KS_ERR_FORMAT with the message, then out. */
#define BAD(...)                                           \
    do {                                                   \
        s = ks_error_set(err, KS_ERR_FORMAT, __VA_ARGS__); \
        goto out;                                          \
    } while (0)

/* A helper failed (detail already in err): pass its status on. */
#define CHECK(call)                          \
    do {                                     \
        if ((s = (call)) != KS_OK) goto out; \
    } while (0)

static void close_ds(hid_t *h) {
    if (*h >= 0) H5Dclose(*h);
    *h = -1;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *c = malloc(n + 1);
    if (c) memcpy(c, s, n + 1);
    return c;
}

/* ================================================================ low-level reads */

/* Shape of a dataset: rank in [1, max_rank], dims of each axis. */
static ks_status ds_shape(const ks_dump *d, hid_t ds, const char *name, int max_rank, int *rank,
                          hsize_t *dims, ks_error *err) {
    ks_status s = KS_OK;
    hid_t sp = -1;
    int r;
    H5TRY(sp = H5Dget_space(ds), "%s: %s: cannot read the dataspace", d->path, name);
    if (H5Sget_simple_extent_type(sp) != H5S_SIMPLE)
        BAD("%s: %s: not a simple (array) dataspace", d->path, name);
    H5TRY(r = H5Sget_simple_extent_ndims(sp), "%s: %s: cannot read the rank", d->path, name);
    if (r < 1 || r > max_rank)
        BAD("%s: %s: rank %d, expected %s%d", d->path, name, r, max_rank > 1 ? "1 to " : "", max_rank);
    H5TRY(H5Sget_simple_extent_dims(sp, dims, NULL), "%s: %s: cannot read the dims", d->path, name);
    for (int i = 0; i < r; i++)
        if (dims[i] > DUMP_MAX_EXTENT)
            BAD("%s: %s: axis %d has %llu entries, which is not plausible", d->path, name, i,
                (unsigned long long)dims[i]);
    *rank = r;
out:
    if (sp >= 0) H5Sclose(sp);
    return s;
}

/* Class of a dataset's type (H5T_INTEGER, H5T_FLOAT, H5T_STRING, ...). */
static ks_status ds_class(const ks_dump *d, hid_t ds, const char *name, H5T_class_t *cls,
                          ks_error *err) {
    ks_status s = KS_OK;
    hid_t t = -1;
    H5TRY(t = H5Dget_type(ds), "%s: %s: cannot read the datatype", d->path, name);
    H5TRY(*cls = H5Tget_class(t), "%s: %s: cannot read the type class", d->path, name);
    if ((*cls == H5T_INTEGER || *cls == H5T_FLOAT) && !ks_h5_plain_number(t))
        BAD("%s: %s: a %zu-byte %s is not a type of the dump format", d->path, name, H5Tget_size(t),
            *cls == H5T_INTEGER ? "integer" : "float");
out:
    if (t >= 0) H5Tclose(t);
    return s;
}

/* Read count[] elements starting at start[] of a rank-`rank` dataset into buf (memory type
 * mt, packed row-major). Never more than that hyperslab. */
static ks_status read_slab(const ks_dump *d, hid_t ds, const char *name, int rank,
                           const hsize_t *start, const hsize_t *count, hid_t mt, void *buf,
                           ks_error *err) {
    ks_status s = KS_OK;
    hid_t fs = -1, ms = -1;
    for (int i = 0; i < rank; i++)
        if (count[i] == 0) return KS_OK;
    H5TRY(fs = H5Dget_space(ds), "%s: %s: cannot read the dataspace", d->path, name);
    H5TRY(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL),
          "%s: %s: cannot select [%llu, +%llu)", d->path, name, (unsigned long long)start[0],
          (unsigned long long)count[0]);
    H5TRY(ms = H5Screate_simple(rank, count, NULL), "%s: %s: cannot make a memory space",
          d->path, name);
    H5TRY(H5Dread(ds, mt, ms, fs, H5P_DEFAULT, buf), "%s: %s: cannot read [%llu, +%llu)",
          d->path, name, (unsigned long long)start[0], (unsigned long long)count[0]);
out:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return s;
}

static ks_status read_i64(const ks_dump *d, hid_t ds, const char *name, int64_t i, int64_t n,
                          int64_t *out, ks_error *err) {
    hsize_t st = (hsize_t)i, ct = (hsize_t)n;
    return read_slab(d, ds, name, 1, &st, &ct, H5T_NATIVE_INT64, out, err);
}

static ks_status read_i32(const ks_dump *d, hid_t ds, const char *name, int64_t i, int64_t n,
                          int32_t *out, ks_error *err) {
    hsize_t st = (hsize_t)i, ct = (hsize_t)n;
    return read_slab(d, ds, name, 1, &st, &ct, H5T_NATIVE_INT32, out, err);
}

/* A string type of the file (dataset or attribute `what`, already prefixed "file: ") checked
 * as the format wants it: fixed-length, 1..DUMP_MAX_FIXED_STR bytes. Variable-length strings
 * (and vlen sequences) live in HDF5's global heap, which has no checksum and whose decoder
 * libhdf5 1.10 trusts blindly (fuzzing crashed it); we refuse them before any read touches
 * the heap. *mt gets a memory type that reads the bytes as stored (same width, padding and
 * character set, so HDF5 converts nothing); caller closes it. *width gets the width. */
static ks_status fixed_str_type(hid_t ft, const char *what, hid_t *mt, size_t *width,
                                ks_error *err) {
    ks_status s = KS_OK;
    H5T_class_t cls;
    htri_t is_vl;
    H5T_str_t pad;
    H5T_cset_t cset;
    size_t w;
    *mt = -1;
    H5TRY(cls = H5Tget_class(ft), "%s: cannot read the type class", what);
    if (cls == H5T_VLEN)
        BAD("%s: variable-length data is not part of the koalascope dump format", what);
    if (cls != H5T_STRING) BAD("%s: type is not a string", what);
    H5TRY(is_vl = H5Tis_variable_str(ft), "%s: cannot read the string type", what);
    if (is_vl)
        BAD("%s: variable-length strings are not part of the koalascope dump format", what);
    w = H5Tget_size(ft);
    if (w == 0 || w > DUMP_MAX_FIXED_STR)
        BAD("%s: fixed-length strings of %zu bytes (the format allows 1..%d)", what, w,
            DUMP_MAX_FIXED_STR);
    H5TRY(pad = H5Tget_strpad(ft), "%s: cannot read the string padding", what);
    H5TRY(cset = H5Tget_cset(ft), "%s: cannot read the character set", what);
    H5TRY(*mt = H5Tcopy(H5T_C_S1), "%s: cannot make a string type", what);
    H5TRY(H5Tset_size(*mt, w), "%s: cannot make a string type", what);
    H5TRY(H5Tset_strpad(*mt, pad), "%s: cannot make a string type", what);
    H5TRY(H5Tset_cset(*mt, cset), "%s: cannot make a string type", what);
    *width = w;
out:
    if (s != KS_OK && *mt >= 0) {
        H5Tclose(*mt);
        *mt = -1;
    }
    return s;
}

/* Strings [start, start + n) of a 1-D dataset of fixed-length strings, each malloc'd and
 * NUL-terminated (the bytes as stored, up to the first NUL or the full width). out has room
 * for n. Reads at most DUMP_STR_BLOCK_BYTES (or one string) at a time, and refuses to hand
 * back more than DUMP_MAX_STR_TOTAL bytes: a compressed dataset of wide strings could
 * otherwise make n x width bytes out of a small file. */
static ks_status read_strings(const ks_dump *d, hid_t ds, const char *name, int64_t start,
                              int64_t n, char **out, ks_error *err) {
    ks_status s = KS_OK;
    hid_t ft = -1, mt = -1, fs = -1, ms = -1;
    char *buf = NULL;
    size_t w = 0, total = 0;
    char what[400];
    for (int64_t i = 0; i < n; i++) out[i] = NULL;
    if (n == 0) return KS_OK;
    snprintf(what, sizeof what, "%s: %s", d->path, name);
    H5TRY(ft = H5Dget_type(ds), "%s: cannot read the datatype", what);
    CHECK(fixed_str_type(ft, what, &mt, &w, err));
    hsize_t per = DUMP_STR_BLOCK_BYTES / w ? DUMP_STR_BLOCK_BYTES / w : 1;
    if ((int64_t)per > n) per = (hsize_t)n;
    if (!(buf = malloc((size_t)per * w))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory for %llu strings of %zu bytes",
                         what, (unsigned long long)per, w);
        goto out;
    }
    H5TRY(fs = H5Dget_space(ds), "%s: cannot read the dataspace", what);
    for (int64_t i0 = 0; i0 < n; i0 += (int64_t)per) {
        hsize_t st = (hsize_t)(start + i0);
        hsize_t ct = (hsize_t)(n - i0) < per ? (hsize_t)(n - i0) : per;
        H5TRY(H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &ct, NULL),
              "%s: cannot select [%llu, +%llu)", what, (unsigned long long)st,
              (unsigned long long)ct);
        if (ms >= 0) H5Sclose(ms);
        H5TRY(ms = H5Screate_simple(1, &ct, NULL), "%s: cannot make a memory space", what);
        H5TRY(H5Dread(ds, mt, ms, fs, H5P_DEFAULT, buf), "%s: cannot read [%llu, +%llu)", what,
              (unsigned long long)st, (unsigned long long)ct);
        for (hsize_t j = 0; j < ct; j++) {
            const char *p = buf + (size_t)j * w;
            size_t len = strnlen(p, w);
            if ((total += len + 1) > DUMP_MAX_STR_TOTAL)
                BAD("%s: [%lld, +%lld) holds more than %d bytes of text", what, (long long)start,
                    (long long)n, DUMP_MAX_STR_TOTAL);
            char **o = &out[i0 + (int64_t)j];
            if (!(*o = malloc(len + 1))) {
                s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", what);
                goto out;
            }
            memcpy(*o, p, len);
            (*o)[len] = '\0';
        }
    }
out:
    if (s != KS_OK)
        for (int64_t i = 0; i < n; i++) {
            free(out[i]);
            out[i] = NULL;
        }
    free(buf);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    return s;
}

/* ================================================================ attributes */

/* One attribute (scalar or a single element) of obj as text: strings as stored (fixed-length
 * only, up to the first NUL), integers in decimal, floats with %.17g. *out NULL (and KS_OK)
 * for a type we do not render. A variable-length string or vlen attribute is refused
 * (KS_ERR_FORMAT) whatever its shape, before anything is read: see fixed_str_type. */
static ks_status attr_text(const char *path, hid_t obj, const char *objname, const char *name,
                           char **out, ks_error *err) {
    ks_status s = KS_OK;
    hid_t a = -1, t = -1, sp = -1, mt = -1;
    H5T_class_t cls = H5T_NO_CLASS;
    hssize_t npts;
    char num[64], what[1400];
    *out = NULL;
    snprintf(what, sizeof what, "%s: %sattribute '%s'", path, objname, name);
    H5TRY(a = H5Aopen(obj, name, H5P_DEFAULT), "%s: cannot open", what);
    H5TRY(t = H5Aget_type(a), "%s: cannot read the type", what);
    H5TRY(cls = H5Tget_class(t), "%s: cannot read the type", what);
    if (cls == H5T_VLEN)
        BAD("%s: variable-length data is not part of the koalascope dump format", what);
    if (cls == H5T_STRING) {
        htri_t is_vl;
        H5TRY(is_vl = H5Tis_variable_str(t), "%s: cannot read the type", what);
        if (is_vl)
            BAD("%s: variable-length strings are not part of the koalascope dump format", what);
    }
    H5TRY(sp = H5Aget_space(a), "%s: cannot read the dataspace", what);
    H5TRY(npts = H5Sget_simple_extent_npoints(sp), "%s: cannot read the size", what);
    if (npts != 1) goto out; /* not a scalar: not ours to render */
    if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && !ks_h5_plain_number(t))
        BAD("%s: a %zu-byte number is not a type of the dump format", what, H5Tget_size(t));
    if (cls == H5T_STRING) {
        size_t w;
        CHECK(fixed_str_type(t, what, &mt, &w, err));
        if (!(*out = calloc(1, w + 1))) goto nomem;
        H5TRY(H5Aread(a, mt, *out), "%s: cannot read", what);
    } else if (cls == H5T_INTEGER) {
        long long v;
        H5TRY(H5Aread(a, H5T_NATIVE_LLONG, &v), "%s: cannot read", what);
        snprintf(num, sizeof num, "%lld", v);
        if (!(*out = dup_str(num))) goto nomem;
    } else if (cls == H5T_FLOAT) {
        double v;
        H5TRY(H5Aread(a, H5T_NATIVE_DOUBLE, &v), "%s: cannot read", what);
        snprintf(num, sizeof num, "%.17g", v);
        if (!(*out = dup_str(num))) goto nomem;
    }
    goto out;
nomem:
    s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", what);
out:
    if (s != KS_OK) {
        free(*out);
        *out = NULL;
    }
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return s;
}

/* Attribute of a dataset as text, NULL (KS_OK) when absent. */
static ks_status ds_attr_text(const ks_dump *d, hid_t ds, const char *dsname, const char *name,
                              char **out, ks_error *err) {
    ks_status s = KS_OK;
    htri_t ex;
    char objname[320];
    *out = NULL;
    snprintf(objname, sizeof objname, "%s: ", dsname);
    H5TRY(ex = H5Aexists(ds, name), "%s: %s: cannot look up attribute '%s'", d->path, dsname, name);
    if (ex) s = attr_text(d->path, ds, objname, name, out, err);
out:
    return s;
}

/* Every root attribute into d->attrs. */
static ks_status load_root_attrs(ks_dump *d, ks_error *err) {
    ks_status s = KS_OK;
    H5O_info_t info;
    char name[1024];
    H5TRY(H5Oget_info2(d->file, &info, H5O_INFO_NUM_ATTRS), "%s: cannot read the root group",
          d->path);
    if (info.num_attrs > DUMP_MAX_ATTRS)
        BAD("%s: the root group has %llu attributes, more than a dump has", d->path,
            (unsigned long long)info.num_attrs);
    if (!(d->attrs = calloc(info.num_attrs ? info.num_attrs : 1, sizeof *d->attrs))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", d->path);
        goto out;
    }
    for (hsize_t i = 0; i < info.num_attrs; i++) {
        ssize_t n;
        H5TRY(n = H5Aget_name_by_idx(d->file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name,
                                     sizeof name, H5P_DEFAULT),
              "%s: cannot read the name of root attribute %llu", d->path, (unsigned long long)i);
        if ((size_t)n >= sizeof name) continue; /* longer than any name of ours */
        char *v = NULL;
        CHECK(attr_text(d->path, d->file, "root ", name, &v, err));
        if (!v) continue;
        dump_attr *a = &d->attrs[d->n_attrs];
        if (!(a->name = dup_str(name))) {
            free(v);
            s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", d->path);
            goto out;
        }
        a->value = v;
        d->n_attrs++;
    }
out:
    return s;
}

const char *ks_dump_attr(const ks_dump *d, const char *name) {
    if (!d || !name) return NULL;
    for (int i = 0; i < d->n_attrs; i++)
        if (strcmp(d->attrs[i].name, name) == 0) return d->attrs[i].value;
    return NULL;
}

static bool parse_ll(const char *s, long long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

/* ================================================================ model config */

static ks_status cfg_int(const ks_dump *d, json_t *root, const char *key, bool required, int def,
                         long lo, long hi, int *out, ks_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'model_config': field "
                                "'%s' is missing", d->path, key);
        *out = def;
        return KS_OK;
    }
    if (!json_is_integer(v))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'model_config': field '%s' is "
                            "not an integer", d->path, key);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'model_config': field '%s' = "
                            "%lld is out of range (%ld..%ld)", d->path, key, (long long)i, lo, hi);
    *out = (int)i;
    return KS_OK;
}

static ks_status cfg_float(const ks_dump *d, json_t *root, const char *key, float def, float *out,
                           ks_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return KS_OK;
    }
    if (!json_is_number(v))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'model_config': field '%s' is "
                            "not a number", d->path, key);
    *out = (float)json_number_value(v);
    return KS_OK;
}

/* An enum field written either as its name or as its number (docs/FORMAT.md does not say
 * which; the reader takes both). */
static ks_status cfg_enum(const ks_dump *d, json_t *root, const char *key,
                          const char *const *names, int n, int *out, ks_error *err) {
    json_t *v = json_object_get(root, key);
    *out = 0;
    if (!v || json_is_null(v)) return KS_OK;
    if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < n) {
        *out = (int)json_integer_value(v);
        return KS_OK;
    }
    if (json_is_string(v))
        for (int i = 0; i < n; i++)
            if (strcmp(json_string_value(v), names[i]) == 0) {
                *out = i;
                return KS_OK;
            }
    return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'model_config': field '%s' is "
                        "not one of the known values", d->path, key);
}

static ks_status parse_config(ks_dump *d, ks_error *err) {
    static const char *const styles[] = {"interleaved", "half"};
    static const char *const scalings[] = {"none", "linear", "dynamic", "llama3"};
    ks_status s = KS_OK;
    ks_config *c = &d->cfg;
    json_error_t je;
    json_t *root = NULL, *v;
    int e;
    const char *text = ks_dump_attr(d, "model_config");
    if (!text) BAD("%s: root attribute 'model_config' is missing", d->path);
    if (!(root = json_loads(text, JSON_REJECT_DUPLICATES, &je)))
        BAD("%s: root attribute 'model_config' is not JSON (%s, column %d)", d->path, je.text,
            je.column);
    if (!json_is_object(root)) BAD("%s: root attribute 'model_config' is not a JSON object", d->path);
    CHECK(cfg_int(d, root, "dim", true, 0, 1, DUMP_MAX_DIM, &c->dim, err));
    CHECK(cfg_int(d, root, "hidden_dim", true, 0, 1, 4L * DUMP_MAX_DIM, &c->hidden_dim, err));
    CHECK(cfg_int(d, root, "n_layers", true, 0, 1, DUMP_MAX_LAYERS, &c->n_layers, err));
    CHECK(cfg_int(d, root, "n_heads", true, 0, 1, DUMP_MAX_DIM, &c->n_heads, err));
    CHECK(cfg_int(d, root, "n_kv_heads", true, 0, 1, c->n_heads, &c->n_kv_heads, err));
    CHECK(cfg_int(d, root, "head_dim", true, 0, 1, DUMP_MAX_DIM, &c->head_dim, err));
    CHECK(cfg_int(d, root, "vocab_size", true, 0, 1, DUMP_MAX_VOCAB, &c->vocab_size, err));
    CHECK(cfg_int(d, root, "max_seq_len", true, 0, 1, DUMP_MAX_SEQ, &c->max_seq_len, err));
    CHECK(cfg_int(d, root, "bos_id", false, -1, -1, c->vocab_size - 1, &c->bos_id, err));
    CHECK(cfg_int(d, root, "eos_id", false, -1, -1, c->vocab_size - 1, &c->eos_id, err));
    CHECK(cfg_int(d, root, "rope_orig_max_pos", false, 0, 0, DUMP_MAX_SEQ, &c->rope_orig_max_pos,
                  err));
    CHECK(cfg_float(d, root, "rms_eps", 1e-5f, &c->rms_eps, err));
    CHECK(cfg_float(d, root, "rope_theta", 10000.0f, &c->rope_theta, err));
    CHECK(cfg_float(d, root, "rope_factor", 1.0f, &c->rope_factor, err));
    CHECK(cfg_float(d, root, "rope_low_freq_factor", 0.0f, &c->rope_low_freq_factor, err));
    CHECK(cfg_float(d, root, "rope_high_freq_factor", 0.0f, &c->rope_high_freq_factor, err));
    CHECK(cfg_enum(d, root, "rope_style", styles, 2, &e, err));
    c->rope_style = (ks_rope_style)e;
    CHECK(cfg_enum(d, root, "rope_scaling", scalings, 4, &e, err));
    c->rope_scaling = (ks_rope_scaling)e;
    v = json_object_get(root, "tie_embeddings");
    c->tie_embeddings = v && (json_is_true(v) || (json_is_integer(v) && json_integer_value(v) != 0));
out:
    json_decref(root);
    return s;
}

/* ================================================================ datasets */

/* Open root dataset `name` (a path such as "logits/topk_ids"); *ds = -1 when it is absent and
 * not required. */
static ks_status open_ds(ks_dump *d, const char *name, bool required, hid_t *ds, ks_error *err) {
    ks_status s = KS_OK;
    htri_t ex = 1;
    H5O_info_t info;
    const char *slash = strchr(name, '/');
    *ds = -1;
    if (slash) { /* H5Lexists needs each parent to exist */
        char parent[64];
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - name), name);
        H5TRY(ex = H5Lexists(d->file, parent, H5P_DEFAULT), "%s: cannot look up /%s", d->path,
              parent);
    }
    if (ex > 0)
        H5TRY(ex = H5Lexists(d->file, name, H5P_DEFAULT), "%s: cannot look up /%s", d->path, name);
    if (ex <= 0) {
        if (required) BAD("%s: dataset /%s is missing", d->path, name);
        goto out;
    }
    H5TRY(H5Oget_info_by_name2(d->file, name, &info, H5O_INFO_BASIC, H5P_DEFAULT),
          "%s: cannot look up /%s", d->path, name);
    if (info.type != H5O_TYPE_DATASET) BAD("%s: /%s is not a dataset", d->path, name);
    H5TRY(*ds = H5Dopen2(d->file, name, H5P_DEFAULT), "%s: cannot open dataset /%s", d->path, name);
out:
    return s;
}

/* A 1-D dataset of class cls holding at least min_len entries; *len gets its length. */
static ks_status check_1d(ks_dump *d, hid_t ds, const char *label, H5T_class_t want,
                          int64_t min_len, const char *why, int64_t *len, ks_error *err) {
    ks_status s = KS_OK;
    H5T_class_t cls = H5T_NO_CLASS;
    hid_t t = -1, mt = -1;
    hsize_t dims[1];
    int rank;
    if (want == H5T_STRING) {
        /* fixed-length only, refused at open so that no read of it ever reaches the heap */
        char what[400];
        size_t w;
        snprintf(what, sizeof what, "%s: %s", d->path, label);
        H5TRY(t = H5Dget_type(ds), "%s: cannot read the datatype", what);
        CHECK(fixed_str_type(t, what, &mt, &w, err));
    } else {
        CHECK(ds_class(d, ds, label, &cls, err));
    }
    if (want != H5T_STRING && cls != want)
        BAD("%s: %s: type is not %s", d->path, label,
            want == H5T_INTEGER ? "an integer" : want == H5T_STRING ? "a string" : "a float");
    CHECK(ds_shape(d, ds, label, 1, &rank, dims, err));
    if ((int64_t)dims[0] < min_len)
        BAD("%s: %s has %lld entries, fewer than %s (%lld)", d->path, label, (long long)dims[0],
            why, (long long)min_len);
    if (len) *len = (int64_t)dims[0];
out:
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    return s;
}

/* Offsets dataset: 1-D integer, at least P+1 entries (exactly when complete), [0] == 0; *last
 * gets entry [P]. */
static ks_status check_offsets(ks_dump *d, hid_t ds, const char *label, int64_t *last,
                               ks_error *err) {
    ks_status s = KS_OK;
    int64_t len, first;
    CHECK(check_1d(d, ds, label, H5T_INTEGER, 1, "one", &len, err));
    if (ds == d->prompt_offsets) d->P = len - 1;
    if (len < d->P + 1)
        BAD("%s: %s has %lld entries, fewer than /prompt_offsets (%lld)", d->path, label,
            (long long)len, (long long)(d->P + 1));
    /* an interrupted commit may have extended the other offsets, never in a complete dump */
    if (d->complete && len != d->P + 1)
        BAD("%s: %s has %lld entries, /prompt_offsets %lld, in a complete dump", d->path, label,
            (long long)len, (long long)(d->P + 1));
    CHECK(read_i64(d, ds, label, 0, 1, &first, err));
    if (first != 0) BAD("%s: %s[0] = %lld, expected 0", d->path, label, (long long)first);
    CHECK(read_i64(d, ds, label, d->P, 1, last, err));
    if (*last < 0)
        BAD("%s: %s[%lld] = %lld is negative", d->path, label, (long long)d->P, (long long)*last);
out:
    return s;
}

typedef enum { W_DMODEL, W_DMLP, W_QHEADS, W_KVHEADS, W_VOCAB, W_ATTN } hook_width;

static hook_width width_of(ks_hook_point p) {
    switch (p) {
    case KS_HOOK_MLP_PRE:
    case KS_HOOK_MLP_PRE_LINEAR:
    case KS_HOOK_MLP_POST: return W_DMLP;
    case KS_HOOK_ATTN_Q:
    case KS_HOOK_ATTN_ROT_Q:
    case KS_HOOK_ATTN_Z: return W_QHEADS;
    case KS_HOOK_ATTN_K:
    case KS_HOOK_ATTN_V:
    case KS_HOOK_ATTN_ROT_K: return W_KVHEADS;
    case KS_HOOK_ATTN_SCORES:
    case KS_HOOK_ATTN_PATTERN: return W_ATTN;
    case KS_HOOK_LOGITS: return W_VOCAB;
    default: return W_DMODEL;
    }
}

/* The `heads` attribute of a dataset with a query-head axis of n entries: present, it must
 * hold n distinct heads of the model; absent, the axis must hold every head in order. */
static ks_status load_heads(ks_dump *d, dump_hook *h, const char *label, int64_t n,
                            ks_error *err) {
    ks_status s = KS_OK;
    hid_t a = -1, t = -1, sp = -1;
    htri_t ex;
    bool *seen = NULL;
    int nh = d->cfg.n_heads;
    if (n < 1 || n > nh)
        BAD("%s: %s: head axis of %lld, the model has %d query heads", d->path, label,
            (long long)n, nh);
    if (!(h->heads = malloc((size_t)n * sizeof *h->heads)) || !(seen = calloc((size_t)nh, 1))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", d->path);
        goto out;
    }
    h->pub.n_heads = (int)n;
    h->pub.heads = h->heads;
    H5TRY(ex = H5Aexists(h->ds, "heads"), "%s: %s: cannot look up attribute 'heads'", d->path,
          label);
    if (!ex) {
        if (n != nh)
            BAD("%s: %s: head axis of %lld without a 'heads' attribute (the model has %d)",
                d->path, label, (long long)n, nh);
        for (int i = 0; i < nh; i++) h->heads[i] = i;
        goto out;
    }
    hsize_t dims[1];
    H5TRY(a = H5Aopen(h->ds, "heads", H5P_DEFAULT), "%s: %s: cannot open attribute 'heads'",
          d->path, label);
    H5TRY(t = H5Aget_type(a), "%s: %s: attribute 'heads': cannot read the type", d->path, label);
    if (H5Tget_class(t) != H5T_INTEGER || !ks_h5_plain_number(t))
        BAD("%s: %s: attribute 'heads' is not an integer of 1 to 8 bytes", d->path, label);
    H5TRY(sp = H5Aget_space(a), "%s: %s: attribute 'heads': cannot read the dataspace", d->path,
          label);
    if (H5Sget_simple_extent_ndims(sp) != 1)
        BAD("%s: %s: attribute 'heads' is not a 1-D array", d->path, label);
    H5TRY(H5Sget_simple_extent_dims(sp, dims, NULL), "%s: %s: attribute 'heads': cannot read "
          "the dims", d->path, label);
    if ((int64_t)dims[0] != n)
        BAD("%s: %s: attribute 'heads' has %llu entries, the head axis %lld", d->path, label,
            (unsigned long long)dims[0], (long long)n);
    H5TRY(H5Aread(a, H5T_NATIVE_INT, h->heads), "%s: %s: cannot read attribute 'heads'", d->path,
          label);
    for (int64_t i = 0; i < n; i++) {
        if (h->heads[i] < 0 || h->heads[i] >= nh)
            BAD("%s: %s: attribute 'heads' holds %d, outside 0..%d", d->path, label, h->heads[i],
                nh - 1);
        if (seen[h->heads[i]])
            BAD("%s: %s: attribute 'heads' holds %d twice", d->path, label, h->heads[i]);
        seen[h->heads[i]] = true;
    }
out:
    free(seen);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return s;
}

/* Open and check /activations/<name>. */
static ks_status load_hook(ks_dump *d, hid_t group, const char *name, dump_hook *h,
                           ks_error *err) {
    ks_status s = KS_OK;
    hid_t t = -1;
    char label[300], *kind = NULL, *attr = NULL;
    ks_hook_point pt;
    int layer, rank;
    hsize_t dims[3];
    H5O_info_t info;
    const ks_config *c = &d->cfg;
    snprintf(label, sizeof label, "/activations/%s", name);
    if (!(h->name = dup_str(name))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", d->path);
        goto out;
    }
    h->pub.name = h->name;
    if (ks_hook_parse(name, &pt, &layer) != KS_OK)
        BAD("%s: %s is not a hook point name", d->path, label);
    if (layer >= c->n_layers)
        BAD("%s: %s: layer %d is out of range (the model has %d layers)", d->path, label, layer,
            c->n_layers);
    h->pub.point = pt;
    h->pub.layer = layer;
    h->pub.kind = width_of(pt) == W_ATTN ? KS_DUMP_KIND_ATTENTION : KS_DUMP_KIND_TOKEN;
    h->order = (layer >= 0 ? layer + 1 : pt == KS_HOOK_EMBED ? 0 : c->n_layers + 1) * KS_HOOK_COUNT +
               (int)pt;
    H5TRY(H5Oget_info_by_name2(group, name, &info, H5O_INFO_BASIC, H5P_DEFAULT),
          "%s: cannot look up %s", d->path, label);
    if (info.type != H5O_TYPE_DATASET) BAD("%s: %s is not a dataset", d->path, label);
    H5TRY(h->ds = H5Dopen2(group, name, H5P_DEFAULT), "%s: cannot open dataset %s", d->path, label);
    H5TRY(t = H5Dget_type(h->ds), "%s: %s: cannot read the datatype", d->path, label);
    if (!ks_h5_float_type_kind(t, &h->pub.dtype)) {
        H5Eclear2(H5E_DEFAULT);
        BAD("%s: %s: type is not f32, f16 or bf16", d->path, label);
    }
    /* attributes: kind is required and must agree with the hook point; hook and layer, when
     * present, with the name */
    CHECK(ds_attr_text(d, h->ds, label, "kind", &kind, err));
    if (!kind) BAD("%s: %s: attribute 'kind' is missing", d->path, label);
    if (strcmp(kind, h->pub.kind == KS_DUMP_KIND_TOKEN ? "token" : "attention") != 0)
        BAD("%s: %s: attribute 'kind' is '%.40s', but this hook point is of kind '%s'", d->path,
            label, kind, h->pub.kind == KS_DUMP_KIND_TOKEN ? "token" : "attention");
    CHECK(ds_attr_text(d, h->ds, label, "hook", &attr, err));
    if (attr && strcmp(attr, name) != 0)
        BAD("%s: %s: attribute 'hook' is '%.80s'", d->path, label, attr);
    free(attr);
    attr = NULL;
    CHECK(ds_attr_text(d, h->ds, label, "layer", &attr, err));
    long long la;
    if (attr && (!parse_ll(attr, &la) || la != layer))
        BAD("%s: %s: attribute 'layer' is %.40s, the name says %d", d->path, label, attr, layer);

    CHECK(ds_shape(d, h->ds, label, 3, &rank, dims, err));
    hook_width w = width_of(pt);
    int want_rank = (w == W_QHEADS || w == W_KVHEADS) ? 3 : 2;
    if (rank != want_rank)
        BAD("%s: %s: rank %d, expected %d (%s)", d->path, label, rank, want_rank,
            w == W_ATTN ? "[head, key]" : want_rank == 3 ? "[row, head, d_head]" : "[row, width]");
    /* the growing axis (1 for attention, 0 otherwise) is empty before the first prompt */
    for (int i = 1; i < rank; i++)
        if (dims[i] == 0 && !(w == W_ATTN && i == 1)) BAD("%s: %s: axis %d is empty", d->path, label, i);
    if (w == W_ATTN) {
        if (dims[0] == 0) BAD("%s: %s: the head axis is empty", d->path, label);
        h->extent = (int64_t)dims[1];
        h->pub.ndim = 1;
        h->pub.dims[0] = (int64_t)dims[0];
        h->pub.row_elems = (int64_t)dims[0];
        CHECK(load_heads(d, h, label, (int64_t)dims[0], err));
        if (h->extent < d->K)
            BAD("%s: %s: key axis of %lld is shorter than /attn_offsets[P] = %lld", d->path,
                label, (long long)h->extent, (long long)d->K);
        goto out;
    }
    h->extent = (int64_t)dims[0];
    h->pub.ndim = rank - 1;
    h->pub.dims[0] = (int64_t)dims[1];
    h->pub.dims[1] = rank == 3 ? (int64_t)dims[2] : 0;
    /* dims are below 2^48 each (ds_shape), their product need not be */
    if (rank == 3 && dims[1] > (hsize_t)(INT64_MAX / (int64_t)dims[2]))
        BAD("%s: %s: row of %llu x %llu values overflows", d->path, label,
            (unsigned long long)dims[1], (unsigned long long)dims[2]);
    h->pub.row_elems = (int64_t)dims[1] * (rank == 3 ? (int64_t)dims[2] : 1);
    switch (w) {
    case W_DMODEL:
        if (dims[1] != (hsize_t)c->dim)
            BAD("%s: %s: rows of %llu values, expected d_model = %d", d->path, label,
                (unsigned long long)dims[1], c->dim);
        break;
    case W_DMLP:
        if (dims[1] != (hsize_t)c->hidden_dim)
            BAD("%s: %s: rows of %llu values, expected d_mlp = %d", d->path, label,
                (unsigned long long)dims[1], c->hidden_dim);
        break;
    case W_VOCAB:
        if (dims[1] != (hsize_t)c->vocab_size)
            BAD("%s: %s: rows of %llu values, expected vocab_size = %d", d->path, label,
                (unsigned long long)dims[1], c->vocab_size);
        break;
    case W_KVHEADS:
        if (dims[1] != (hsize_t)c->n_kv_heads || dims[2] != (hsize_t)c->head_dim)
            BAD("%s: %s: rows of [%llu, %llu], expected [n_kv_heads, head_dim] = [%d, %d]",
                d->path, label, (unsigned long long)dims[1], (unsigned long long)dims[2],
                c->n_kv_heads, c->head_dim);
        break;
    case W_QHEADS:
        if (dims[2] != (hsize_t)c->head_dim)
            BAD("%s: %s: rows of [%llu, %llu], expected [heads, head_dim = %d]", d->path, label,
                (unsigned long long)dims[1], (unsigned long long)dims[2], c->head_dim);
        CHECK(load_heads(d, h, label, (int64_t)dims[1], err));
        break;
    case W_ATTN: break;
    }
    if (h->extent < d->R)
        BAD("%s: %s: %lld rows, fewer than the %lld committed (/row_offsets[P])", d->path, label,
            (long long)h->extent, (long long)d->R);
out:
    free(kind);
    free(attr);
    if (t >= 0) H5Tclose(t);
    return s;
}

static int hook_cmp(const void *a, const void *b) {
    const dump_hook *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

static ks_status load_hooks(ks_dump *d, ks_error *err) {
    ks_status s = KS_OK;
    hid_t g = -1;
    htri_t ex;
    H5G_info_t gi;
    H5O_info_t oi;
    char name[256];
    H5TRY(ex = H5Lexists(d->file, KS_GROUP_ACTIVATIONS, H5P_DEFAULT),
          "%s: cannot look up /activations", d->path);
    if (!ex) goto out; /* a dump of logits only */
    H5TRY(H5Oget_info_by_name2(d->file, KS_GROUP_ACTIVATIONS, &oi, H5O_INFO_BASIC, H5P_DEFAULT),
          "%s: cannot look up /activations", d->path);
    if (oi.type != H5O_TYPE_GROUP) BAD("%s: /activations is not a group", d->path);
    H5TRY(g = H5Gopen2(d->file, KS_GROUP_ACTIVATIONS, H5P_DEFAULT), "%s: cannot open /activations",
          d->path);
    H5TRY(H5Gget_info(g, &gi), "%s: cannot read /activations", d->path);
    if (gi.nlinks > DUMP_MAX_HOOKS)
        BAD("%s: /activations holds %llu objects, more than a dump has", d->path,
            (unsigned long long)gi.nlinks);
    if (!(d->hooks = calloc(gi.nlinks ? gi.nlinks : 1, sizeof *d->hooks))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", d->path);
        goto out;
    }
    for (hsize_t i = 0; i < gi.nlinks; i++) {
        ssize_t n;
        H5TRY(n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                     H5P_DEFAULT),
              "%s: cannot read the name of /activations entry %llu", d->path, (unsigned long long)i);
        if ((size_t)n >= sizeof name)
            BAD("%s: /activations/%.60s...: name too long for a hook point", d->path, name);
        dump_hook *h = &d->hooks[d->n_hooks++];
        h->ds = -1;
        CHECK(load_hook(d, g, name, h, err));
    }
    qsort(d->hooks, (size_t)d->n_hooks, sizeof *d->hooks, hook_cmp);
    for (int i = 0; i < d->n_hooks; i++) d->hooks[i].pub.heads = d->hooks[i].heads;
out:
    if (g >= 0) H5Gclose(g);
    return s;
}

/* /logits: top-k ids and log-probabilities [>= R, k], next-token log-probability [>= R], full
 * logits [>= R, vocab]; each optional, top-k ids and log-probabilities together. */
static ks_status load_logits(ks_dump *d, ks_error *err) {
    ks_status s = KS_OK;
    hid_t t = -1;
    H5T_class_t cls = H5T_NO_CLASS;
    hsize_t dims[2], dims2[2];
    int rank;
    ks_dump_dtype dt;
    long long k_attr;
    CHECK(open_ds(d, KS_DS_TOPK_IDS, false, &d->topk_ids, err));
    CHECK(open_ds(d, KS_DS_TOPK_LOGPROBS, d->topk_ids >= 0, &d->topk_logprobs, err));
    CHECK(open_ds(d, KS_DS_NEXT_LOGPROB, false, &d->next_logprob, err));
    CHECK(open_ds(d, KS_DS_FULL_LOGITS, false, &d->full_logits, err));
    if (d->topk_ids < 0 && d->topk_logprobs >= 0)
        BAD("%s: /logits/topk_logprobs without /logits/topk_ids", d->path);
    if (d->topk_ids >= 0) {
        CHECK(ds_class(d, d->topk_ids, "/logits/topk_ids", &cls, err));
        if (cls != H5T_INTEGER) BAD("%s: /logits/topk_ids: type is not an integer", d->path);
        CHECK(ds_shape(d, d->topk_ids, "/logits/topk_ids", 2, &rank, dims, err));
        if (rank != 2 || dims[1] < 1 || dims[1] > (hsize_t)d->cfg.vocab_size || (int64_t)dims[0] < d->R)
            BAD("%s: /logits/topk_ids: shape [%llu, %llu], expected [>= %lld, 1..%d]", d->path,
                (unsigned long long)dims[0], rank == 2 ? (unsigned long long)dims[1] : 0ULL,
                (long long)d->R, d->cfg.vocab_size);
        d->topk = (int)dims[1];
        CHECK(ds_class(d, d->topk_logprobs, "/logits/topk_logprobs", &cls, err));
        if (cls != H5T_FLOAT) BAD("%s: /logits/topk_logprobs: type is not a float", d->path);
        CHECK(ds_shape(d, d->topk_logprobs, "/logits/topk_logprobs", 2, &rank, dims2, err));
        if (rank != 2 || dims2[1] != dims[1] || (int64_t)dims2[0] < d->R)
            BAD("%s: /logits/topk_logprobs: shape [%llu, %llu], expected [>= %lld, %d] like "
                "/logits/topk_ids", d->path, (unsigned long long)dims2[0],
                rank == 2 ? (unsigned long long)dims2[1] : 0ULL, (long long)d->R, d->topk);
    }
    if (parse_ll(ks_dump_attr(d, "logits_topk"), &k_attr) && k_attr != d->topk)
        BAD("%s: root attribute 'logits_topk' = %lld, but /logits/topk_ids has %d", d->path,
            k_attr, d->topk);
    if (d->next_logprob >= 0)
        CHECK(check_1d(d, d->next_logprob, "/logits/next_logprob", H5T_FLOAT, d->R,
                       "the committed rows", NULL, err));
    if (d->full_logits >= 0) {
        H5TRY(t = H5Dget_type(d->full_logits), "%s: /logits/full: cannot read the datatype", d->path);
        if (!ks_h5_float_type_kind(t, &dt)) {
            H5Eclear2(H5E_DEFAULT);
            BAD("%s: /logits/full: type is not f32, f16 or bf16", d->path);
        }
        CHECK(ds_shape(d, d->full_logits, "/logits/full", 2, &rank, dims, err));
        if (rank != 2 || dims[1] != (hsize_t)d->cfg.vocab_size || (int64_t)dims[0] < d->R)
            BAD("%s: /logits/full: shape [%llu, %llu], expected [>= %lld, %d]", d->path,
                (unsigned long long)dims[0], rank == 2 ? (unsigned long long)dims[1] : 0ULL,
                (long long)d->R, d->cfg.vocab_size);
    }
out:
    if (t >= 0) H5Tclose(t);
    return s;
}

/* ================================================================ open / close */

static ks_dump *dump_alloc(void) {
    ks_dump *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->file = -1;
    hid_t *h[] = {&d->prompt_offsets, &d->row_offsets, &d->attn_offsets, &d->prompts,
                  &d->prompt_ids, &d->prompt_lengths, &d->generations, &d->tokens,
                  &d->token_strings, &d->row_positions, &d->attn_row_starts, &d->topk_ids,
                  &d->topk_logprobs, &d->next_logprob, &d->full_logits};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) *h[i] = -1;
    return d;
}

void ks_dump_close(ks_dump *d) {
    if (!d) return;
    hid_t *h[] = {&d->prompt_offsets, &d->row_offsets, &d->attn_offsets, &d->prompts,
                  &d->prompt_ids, &d->prompt_lengths, &d->generations, &d->tokens,
                  &d->token_strings, &d->row_positions, &d->attn_row_starts, &d->topk_ids,
                  &d->topk_logprobs, &d->next_logprob, &d->full_logits};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) close_ds(h[i]);
    for (int i = 0; i < d->n_hooks; i++) {
        close_ds(&d->hooks[i].ds);
        free(d->hooks[i].name);
        free(d->hooks[i].heads);
    }
    free(d->hooks);
    for (int i = 0; i < d->n_attrs; i++) {
        free(d->attrs[i].name);
        free(d->attrs[i].value);
    }
    free(d->attrs);
    if (d->file >= 0) H5Fclose(d->file);
    free(d->path);
    free(d);
}

/* The file exists and is readable (KS_ERR_IO otherwise), and is HDF5 (KS_ERR_FORMAT). */
static ks_status check_file(const char *path, ks_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: is a directory", path);
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(f);
    htri_t is = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    if (is <= 0) return ks_error_set(err, KS_ERR_FORMAT, "%s: not an HDF5 file", path);
    return KS_OK;
}

/* Root attributes format (must be koalascope-dump) and format_version (at most ours). */
static ks_status check_format(const char *path, const char *fmt, const char *ver, ks_error *err) {
    long long v;
    if (!fmt)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a koalascope dump (no 'format' attribute "
                            "'%s' on the root group)", path, KS_DUMP_FORMAT);
    if (strcmp(fmt, KS_DUMP_FORMAT) != 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a koalascope dump (root attribute "
                            "'format' is '%.60s', expected '%s')", path, fmt, KS_DUMP_FORMAT);
    if (!parse_ll(ver, &v) || v < 1)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: root attribute 'format_version' is %s", path,
                            ver ? "not a positive integer" : "missing");
    if (v > KS_DUMP_FORMAT_VERSION)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: format_version %lld is newer than this "
                            "reader (%d): use a newer koalascope", path, v, KS_DUMP_FORMAT_VERSION);
    return KS_OK;
}

/* check_format on the root attributes format and format_version of the open file f, read on
 * their own: a file that is not a dump is told so before any other attribute of it is read
 * (and perhaps refused for its type). */
static ks_status check_format_attrs(const char *path, hid_t f, ks_error *err) {
    ks_status s = KS_OK;
    char *fmt = NULL, *ver = NULL;
    htri_t ex;
    H5TRY(ex = H5Aexists(f, "format"), "%s: cannot look up root attribute 'format'", path);
    if (ex) CHECK(attr_text(path, f, "root ", "format", &fmt, err));
    H5TRY(ex = H5Aexists(f, "format_version"), "%s: cannot look up root attribute "
          "'format_version'", path);
    if (ex) CHECK(attr_text(path, f, "root ", "format_version", &ver, err));
    s = check_format(path, fmt, ver, err);
out:
    free(fmt);
    free(ver);
    return s;
}

ks_status ks_dump_open(const char *path, ks_dump **out, ks_error *err) {
    ks_status s = KS_OK;
    ks_dump *d = NULL;
    hid_t fapl = -1;
    ks_error first = {0};
    long long complete;
    int64_t len;
    if (out) *out = NULL;
    if (!path || !out) return ks_error_set(err, KS_ERR_ARG, "ks_dump_open: NULL argument");
    ks_h5_init();
    CHECK(check_file(path, err));
    if (!(d = dump_alloc()) || !(d->path = dup_str(path))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    H5TRY(fapl = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot make a file access list", path);
    /* A SWMR reader re-reads metadata whose checksum fails (a live writer may be mid-flush),
     * sleeping 1, 2, 4, ... ns between tries; HDF5's default of 100 tries turns one corrupted
     * block into a hang of years. 20 tries is about 1 ms of waiting in all. */
    H5TRY(H5Pset_metadata_read_attempts(fapl, DUMP_SWMR_READ_ATTEMPTS),
          "%s: cannot set the metadata read attempts", path);
    CHECK(ks_h5_check_superblock(path, err));
    if ((d->file = H5Fopen(path, H5F_ACC_RDONLY, fapl)) < 0) {
        /* An interrupted SWMR writer leaves the "open for writing" flag: a SWMR reader may
         * still open it. Report the first failure if that does not work either. */
        ks_h5_error(&first, KS_ERR_FORMAT, "%s: cannot open", path);
        d->file = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
        if (d->file < 0) {
            H5Eclear2(H5E_DEFAULT);
            s = ks_error_set(err, KS_ERR_FORMAT, "%s", first.msg);
            goto out;
        }
        /* No check of the file size against the superblock's end of allocation here, as
         * HDF5 does for plain opens: a dump whose writer hit a full disk has allocated past
         * the end it could write, and still holds its committed prompts. */
        d->interrupted = true;
    }
    CHECK(check_format_attrs(path, d->file, err));
    CHECK(load_root_attrs(d, err));
    d->complete = parse_ll(ks_dump_attr(d, "complete"), &complete) && complete == 1;
    CHECK(parse_config(d, err));

    /* offsets first: they give the committed counts every other dataset is checked against */
    CHECK(open_ds(d, KS_DS_PROMPT_OFFSETS, true, &d->prompt_offsets, err));
    CHECK(open_ds(d, KS_DS_ROW_OFFSETS, true, &d->row_offsets, err));
    CHECK(open_ds(d, KS_DS_ATTN_OFFSETS, true, &d->attn_offsets, err));
    CHECK(check_offsets(d, d->prompt_offsets, "/prompt_offsets", &d->N, err));
    CHECK(check_offsets(d, d->row_offsets, "/row_offsets", &d->R, err));
    CHECK(check_offsets(d, d->attn_offsets, "/attn_offsets", &d->K, err));
    if (d->R > d->N)
        BAD("%s: /row_offsets[P] = %lld: more rows than tokens (%lld)", path, (long long)d->R,
            (long long)d->N);
    if (d->K < d->R)
        BAD("%s: /attn_offsets[P] = %lld: fewer keys than rows (%lld)", path, (long long)d->K,
            (long long)d->R);

    CHECK(open_ds(d, KS_DS_TOKENS, true, &d->tokens, err));
    CHECK(check_1d(d, d->tokens, "/tokens", H5T_INTEGER, 0, "", &len, err));
    if (len < d->N)
        BAD("%s: /prompt_offsets[P] = %lld is beyond /tokens (%lld entries)", path,
            (long long)d->N, (long long)len);
    CHECK(open_ds(d, KS_DS_TOKEN_STRINGS, true, &d->token_strings, err));
    CHECK(check_1d(d, d->token_strings, "/token_strings", H5T_STRING, d->N, "/prompt_offsets[P]",
                   NULL, err));
    CHECK(open_ds(d, KS_DS_ROW_POSITIONS, true, &d->row_positions, err));
    CHECK(check_1d(d, d->row_positions, "/row_positions", H5T_INTEGER, d->R, "/row_offsets[P]",
                   NULL, err));
    CHECK(open_ds(d, KS_DS_ATTN_ROW_STARTS, true, &d->attn_row_starts, err));
    CHECK(check_1d(d, d->attn_row_starts, "/attn_row_starts", H5T_INTEGER, d->R,
                   "/row_offsets[P]", NULL, err));
    CHECK(open_ds(d, KS_DS_PROMPTS, true, &d->prompts, err));
    CHECK(check_1d(d, d->prompts, "/prompts", H5T_STRING, d->P, "the committed prompts", NULL, err));
    CHECK(open_ds(d, KS_DS_PROMPT_IDS, true, &d->prompt_ids, err));
    CHECK(check_1d(d, d->prompt_ids, "/prompt_ids", H5T_STRING, d->P, "the committed prompts",
                   NULL, err));
    CHECK(open_ds(d, KS_DS_GENERATIONS, true, &d->generations, err));
    CHECK(check_1d(d, d->generations, "/generations", H5T_STRING, d->P, "the committed prompts",
                   NULL, err));
    CHECK(open_ds(d, KS_DS_PROMPT_LENGTHS, true, &d->prompt_lengths, err));
    CHECK(check_1d(d, d->prompt_lengths, "/prompt_lengths", H5T_INTEGER, d->P,
                   "the committed prompts", NULL, err));
    CHECK(load_hooks(d, err));
    CHECK(load_logits(d, err));
out:
    if (fapl >= 0) H5Pclose(fapl);
    if (s != KS_OK) {
        ks_dump_close(d);
        return s;
    }
    *out = d;
    return KS_OK;
}

/* ================================================================ accessors */

const char *ks_dump_path(const ks_dump *d) { return d ? d->path : NULL; }
int64_t ks_dump_n_prompts(const ks_dump *d) { return d ? d->P : 0; }
int64_t ks_dump_n_tokens(const ks_dump *d) { return d ? d->N : 0; }
int64_t ks_dump_n_rows(const ks_dump *d) { return d ? d->R : 0; }
bool ks_dump_complete(const ks_dump *d) { return d && d->complete; }
bool ks_dump_interrupted(const ks_dump *d) { return d && d->interrupted; }
const ks_config *ks_dump_config(const ks_dump *d) { return d ? &d->cfg : NULL; }
int ks_dump_logits_topk(const ks_dump *d) { return d ? d->topk : 0; }
bool ks_dump_has_full_logits(const ks_dump *d) { return d && d->full_logits >= 0; }
int ks_dump_n_hooks(const ks_dump *d) { return d ? d->n_hooks : 0; }

const ks_dump_hook *ks_dump_hook_at(const ks_dump *d, int i) {
    if (!d || i < 0 || i >= d->n_hooks) return NULL;
    return &d->hooks[i].pub;
}

const ks_dump_hook *ks_dump_find_hook(const ks_dump *d, const char *name) {
    if (!d || !name) return NULL;
    for (int i = 0; i < d->n_hooks; i++)
        if (strcmp(d->hooks[i].name, name) == 0) return &d->hooks[i].pub;
    return NULL;
}

/* The dump's own record of a hook handed out by ks_dump_hook_at / ks_dump_find_hook. */
static const dump_hook *own_hook(const ks_dump *d, const ks_dump_hook *h) {
    for (int i = 0; i < d->n_hooks; i++)
        if (&d->hooks[i].pub == h) return &d->hooks[i];
    return NULL;
}

int64_t ks_dump_hook_storage_bytes(const ks_dump *d, const ks_dump_hook *hook) {
    const dump_hook *h = d && hook ? own_hook(d, hook) : NULL;
    if (!h) return -1;
    /* 0 is also HDF5's failure value; an empty dataset has no chunks either way */
    hsize_t n = H5Dget_storage_size(h->ds);
    H5Eclear2(H5E_DEFAULT);
    return n > (hsize_t)INT64_MAX ? -1 : (int64_t)n;
}

/* ================================================================ per prompt */

/* Entries [p] and [p+1] of an offsets dataset, checked: 0 <= a <= b <= total. */
static ks_status prompt_span(const ks_dump *d, hid_t ds, const char *label, int64_t p,
                             int64_t total, int64_t *a, int64_t *b, ks_error *err) {
    ks_status s = KS_OK;
    int64_t v[2];
    CHECK(read_i64(d, ds, label, p, 2, v, err));
    if (v[0] < 0 || v[0] > v[1])
        BAD("%s: prompt %lld: %s is decreasing (%lld > %lld)", d->path, (long long)p, label,
            (long long)v[0], (long long)v[1]);
    if (v[1] > total)
        BAD("%s: prompt %lld: %s[%lld] = %lld is beyond %s[P] = %lld", d->path, (long long)p,
            label, (long long)(p + 1), (long long)v[1], label, (long long)total);
    *a = v[0];
    *b = v[1];
out:
    return s;
}

ks_status ks_dump_prompt_info(const ks_dump *d, int64_t p, ks_dump_prompt *o, ks_error *err) {
    ks_status s = KS_OK;
    int64_t t1, r1, a1;
    int32_t plen;
    if (!d || !o) return ks_error_set(err, KS_ERR_ARG, "ks_dump_prompt_info: NULL argument");
    if (p < 0 || p >= d->P)
        return ks_error_set(err, KS_ERR_RANGE, "%s: prompt %lld is out of range (%lld prompts)",
                            d->path, (long long)p, (long long)d->P);
    memset(o, 0, sizeof *o);
    CHECK(prompt_span(d, d->prompt_offsets, "/prompt_offsets", p, d->N, &o->tok_begin, &t1, err));
    CHECK(prompt_span(d, d->row_offsets, "/row_offsets", p, d->R, &o->row_begin, &r1, err));
    CHECK(prompt_span(d, d->attn_offsets, "/attn_offsets", p, d->K, &o->attn_begin, &a1, err));
    o->n_tokens = t1 - o->tok_begin;
    o->n_rows = r1 - o->row_begin;
    o->n_attn = a1 - o->attn_begin;
    if (o->n_rows > o->n_tokens)
        BAD("%s: prompt %lld has more rows (%lld, /row_offsets) than tokens (%lld)", d->path,
            (long long)p, (long long)o->n_rows, (long long)o->n_tokens);
    /* every row has between 1 and n_tokens keys: n_rows <= n_attn <= n(n+1)/2 */
    int64_t n = o->n_tokens;
    int64_t most = n <= 3037000499LL ? n * (n + 1) / 2 : INT64_MAX;
    if (o->n_attn < o->n_rows || o->n_attn > most)
        BAD("%s: prompt %lld: /attn_offsets gives %lld keys, outside %lld..%lld for %lld rows of "
            "%lld tokens", d->path, (long long)p, (long long)o->n_attn, (long long)o->n_rows,
            (long long)most, (long long)o->n_rows, (long long)n);
    CHECK(read_i32(d, d->prompt_lengths, "/prompt_lengths", p, 1, &plen, err));
    if (plen < 0 || plen > n)
        BAD("%s: prompt %lld: /prompt_lengths = %d is outside 0..%lld", d->path, (long long)p,
            (int)plen, (long long)n);
    o->n_prompt_tokens = plen;
out:
    return s;
}

static ks_status one_string(const ks_dump *d, hid_t ds, const char *label, int64_t p, char **out,
                            ks_error *err) {
    if (!d || !out) return ks_error_set(err, KS_ERR_ARG, "ks_dump: NULL argument");
    *out = NULL;
    if (p < 0 || p >= d->P)
        return ks_error_set(err, KS_ERR_RANGE, "%s: prompt %lld is out of range (%lld prompts)",
                            d->path, (long long)p, (long long)d->P);
    return read_strings(d, ds, label, p, 1, out, err);
}

ks_status ks_dump_prompt_text(const ks_dump *d, int64_t p, char **out, ks_error *err) {
    return one_string(d, d ? d->prompts : -1, "/prompts", p, out, err);
}

ks_status ks_dump_prompt_id(const ks_dump *d, int64_t p, char **out, ks_error *err) {
    return one_string(d, d ? d->prompt_ids : -1, "/prompt_ids", p, out, err);
}

ks_status ks_dump_generation(const ks_dump *d, int64_t p, char **out, ks_error *err) {
    return one_string(d, d ? d->generations : -1, "/generations", p, out, err);
}

ks_status ks_dump_read_tokens(const ks_dump *d, int64_t p, int32_t *ids, size_t cap,
                              ks_error *err) {
    ks_status s = KS_OK;
    ks_dump_prompt pi;
    if (!d || (!ids && cap)) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_tokens: NULL argument");
    CHECK(ks_dump_prompt_info(d, p, &pi, err));
    if ((uint64_t)pi.n_tokens > cap)
        return ks_error_set(err, KS_ERR_RANGE, "%s: prompt %lld has %lld tokens, room for %zu",
                            d->path, (long long)p, (long long)pi.n_tokens, cap);
    CHECK(read_i32(d, d->tokens, "/tokens", pi.tok_begin, pi.n_tokens, ids, err));
    for (int64_t i = 0; i < pi.n_tokens; i++)
        if (ids[i] < 0 || ids[i] >= d->cfg.vocab_size)
            BAD("%s: prompt %lld: /tokens[%lld] = %d is outside the vocabulary (%d)", d->path,
                (long long)p, (long long)(pi.tok_begin + i), (int)ids[i], d->cfg.vocab_size);
out:
    return s;
}

void ks_dump_strings_free(char **s, int64_t n) {
    if (!s) return;
    for (int64_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

ks_status ks_dump_read_token_strings(const ks_dump *d, int64_t p, char ***out, ks_error *err) {
    ks_status s = KS_OK;
    ks_dump_prompt pi;
    char **v = NULL;
    if (!d || !out) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_token_strings: NULL argument");
    *out = NULL;
    CHECK(ks_dump_prompt_info(d, p, &pi, err));
    if ((uint64_t)pi.n_tokens > SIZE_MAX / sizeof *v - 1 ||
        !(v = calloc((size_t)pi.n_tokens + 1, sizeof *v))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: prompt %lld: out of memory for %lld strings",
                         d->path, (long long)p, (long long)pi.n_tokens);
        goto out;
    }
    CHECK(read_strings(d, d->token_strings, "/token_strings", pi.tok_begin, pi.n_tokens, v, err));
    *out = v;
    v = NULL;
out:
    free(v); /* read_strings freed the strings it had made */
    return s;
}

/* Positions (and optionally attention row starts) of prompt p's rows, checked: positions
 * strictly increasing in [0, n_tokens), starts packed from attn_begin with (position + 1) keys
 * per row, filling exactly n_attn. pos has room for pi->n_rows. */
static ks_status load_rows_meta(const ks_dump *d, int64_t p, const ks_dump_prompt *pi,
                                int32_t *pos, int64_t **starts_out, ks_error *err) {
    ks_status s = KS_OK;
    int64_t *st = NULL;
    int64_t n = pi->n_rows, acc = pi->attn_begin;
    if (n > 0 && !(st = malloc((size_t)n * sizeof *st))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: prompt %lld: out of memory", d->path, (long long)p);
        goto out;
    }
    CHECK(read_i32(d, d->row_positions, "/row_positions", pi->row_begin, n, pos, err));
    CHECK(read_i64(d, d->attn_row_starts, "/attn_row_starts", pi->row_begin, n, st, err));
    for (int64_t r = 0; r < n; r++) {
        int64_t row = pi->row_begin + r;
        if (pos[r] < 0 || pos[r] >= pi->n_tokens)
            BAD("%s: prompt %lld: /row_positions[%lld] = %d is outside 0..%lld", d->path,
                (long long)p, (long long)row, (int)pos[r], (long long)(pi->n_tokens - 1));
        if (r > 0 && pos[r] <= pos[r - 1])
            BAD("%s: prompt %lld: /row_positions is not increasing at [%lld] (%d after %d)",
                d->path, (long long)p, (long long)row, (int)pos[r], (int)pos[r - 1]);
        if (st[r] != acc)
            BAD("%s: prompt %lld: /attn_row_starts[%lld] = %lld, expected %lld (rows packed from "
                "/attn_offsets)", d->path, (long long)p, (long long)row, (long long)st[r],
                (long long)acc);
        acc += (int64_t)pos[r] + 1;
    }
    if (acc != pi->attn_begin + pi->n_attn)
        BAD("%s: prompt %lld: its rows hold %lld keys, /attn_offsets says %lld", d->path,
            (long long)p, (long long)(acc - pi->attn_begin), (long long)pi->n_attn);
    if (starts_out) {
        *starts_out = st;
        st = NULL;
    }
out:
    free(st);
    return s;
}

ks_status ks_dump_read_positions(const ks_dump *d, int64_t p, int32_t *pos, size_t cap,
                                 ks_error *err) {
    ks_status s = KS_OK;
    ks_dump_prompt pi;
    if (!d || (!pos && cap)) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_positions: NULL argument");
    CHECK(ks_dump_prompt_info(d, p, &pi, err));
    if ((uint64_t)pi.n_rows > cap)
        return ks_error_set(err, KS_ERR_RANGE, "%s: prompt %lld has %lld rows, room for %zu",
                            d->path, (long long)p, (long long)pi.n_rows, cap);
    CHECK(load_rows_meta(d, p, &pi, pos, NULL, err));
out:
    return s;
}

ks_status ks_dump_read_rows(const ks_dump *d, const ks_dump_hook *hook, int64_t p0, int64_t p1,
                            float *out, size_t cap, ks_error *err) {
    ks_status s = KS_OK;
    int64_t r0, r1;
    const dump_hook *h = NULL;
    if (!d || !hook || (!out && cap)) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_rows: NULL argument");
    if (!(h = own_hook(d, hook)))
        return ks_error_set(err, KS_ERR_ARG, "%s: hook %s is not one of this dump's", d->path,
                            hook->name ? hook->name : "?");
    if (h->pub.kind != KS_DUMP_KIND_TOKEN)
        return ks_error_set(err, KS_ERR_ARG, "%s: %s is an attention hook: read it with "
                            "ks_dump_read_attention", d->path, h->name);
    if (p0 < 0 || p1 < p0 || p1 > d->P)
        return ks_error_set(err, KS_ERR_RANGE, "%s: prompts [%lld, %lld) are out of range (%lld "
                            "prompts)", d->path, (long long)p0, (long long)p1, (long long)d->P);
    if (p0 == p1) return KS_OK;
    CHECK(read_i64(d, d->row_offsets, "/row_offsets", p0, 1, &r0, err));
    CHECK(read_i64(d, d->row_offsets, "/row_offsets", p1, 1, &r1, err));
    if (r0 < 0 || r0 > r1 || r1 > d->R)
        BAD("%s: /row_offsets[%lld..%lld] = %lld..%lld is not a range inside 0..%lld", d->path,
            (long long)p0, (long long)p1, (long long)r0, (long long)r1, (long long)d->R);
    int64_t rows = r1 - r0;
    if (rows > 0 && h->pub.row_elems > INT64_MAX / rows)
        BAD("%s: /activations/%s: %lld rows of %lld values overflow", d->path, h->name,
            (long long)rows, (long long)h->pub.row_elems);
    if ((uint64_t)(rows * h->pub.row_elems) > cap)
        return ks_error_set(err, KS_ERR_RANGE, "%s: /activations/%s: %lld rows of %lld values, "
                            "room for %zu floats", d->path, h->name, (long long)rows,
                            (long long)h->pub.row_elems, cap);
    hsize_t start[3] = {(hsize_t)r0, 0, 0};
    hsize_t count[3] = {(hsize_t)rows, (hsize_t)h->pub.dims[0], (hsize_t)h->pub.dims[1]};
    char label[300];
    snprintf(label, sizeof label, "/activations/%s", h->name);
    CHECK(read_slab(d, h->ds, label, h->pub.ndim + 1, start, count, H5T_NATIVE_FLOAT, out, err));
out:
    return s;
}

/* Checks shared by the attention reads; *h gets the dump's record of hook. */
static ks_status attention_args(const ks_dump *d, const ks_dump_hook *hook, int64_t p,
                                int head_slot, bool all_ok, const dump_hook **h,
                                ks_dump_prompt *pi, ks_error *err) {
    if (!d || !hook) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_attention: NULL argument");
    if (!(*h = own_hook(d, hook)))
        return ks_error_set(err, KS_ERR_ARG, "%s: hook %s is not one of this dump's", d->path,
                            hook->name ? hook->name : "?");
    if ((*h)->pub.kind != KS_DUMP_KIND_ATTENTION)
        return ks_error_set(err, KS_ERR_ARG, "%s: %s is not an attention hook: read it with "
                            "ks_dump_read_rows", d->path, (*h)->name);
    if (head_slot < (all_ok ? -1 : 0) || head_slot >= (*h)->pub.n_heads)
        return ks_error_set(err, KS_ERR_RANGE, "%s: /activations/%s: head slot %d is out of range "
                            "(%d recorded)", d->path, (*h)->name, head_slot, (*h)->pub.n_heads);
    return ks_dump_prompt_info(d, p, pi, err);
}

ks_status ks_dump_read_attention(const ks_dump *d, const ks_dump_hook *hook, int64_t p,
                                 int head_slot, float *out, size_t cap, ks_error *err) {
    ks_status s = KS_OK;
    const dump_hook *h = NULL;
    ks_dump_prompt pi;
    char label[300];
    if (!out && cap) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_attention: NULL argument");
    CHECK(attention_args(d, hook, p, head_slot, true, &h, &pi, err));
    int64_t heads = head_slot < 0 ? h->pub.n_heads : 1;
    if (pi.n_attn > INT64_MAX / heads || (uint64_t)(heads * pi.n_attn) > cap)
        return ks_error_set(err, KS_ERR_RANGE, "%s: /activations/%s: prompt %lld needs %lld x "
                            "%lld floats, room for %zu", d->path, h->name, (long long)p,
                            (long long)heads, (long long)pi.n_attn, cap);
    hsize_t start[2] = {head_slot < 0 ? 0 : (hsize_t)head_slot, (hsize_t)pi.attn_begin};
    hsize_t count[2] = {(hsize_t)heads, (hsize_t)pi.n_attn};
    snprintf(label, sizeof label, "/activations/%s", h->name);
    CHECK(read_slab(d, h->ds, label, 2, start, count, H5T_NATIVE_FLOAT, out, err));
out:
    return s;
}

ks_status ks_dump_read_attention_square(const ks_dump *d, const ks_dump_hook *hook, int64_t p,
                                        int head_slot, float *out, size_t cap, ks_error *err) {
    ks_status s = KS_OK;
    const dump_hook *h = NULL;
    ks_dump_prompt pi;
    int32_t *pos = NULL;
    int64_t *starts = NULL;
    float *keys = NULL;
    if (!out && cap) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_attention_square: NULL argument");
    CHECK(attention_args(d, hook, p, head_slot, false, &h, &pi, err));
    int64_t n = pi.n_tokens;
    if ((n > 0 && n > INT64_MAX / n) || (uint64_t)(n * n) > cap)
        return ks_error_set(err, KS_ERR_RANGE, "%s: /activations/%s: prompt %lld needs %lld x "
                            "%lld floats, room for %zu", d->path, h->name, (long long)p,
                            (long long)n, (long long)n, cap);
    /* n_attn <= n(n+1)/2 and n_rows <= n (prompt_info): both fit what the caller gave */
    if ((pi.n_rows && !(pos = malloc((size_t)pi.n_rows * sizeof *pos))) ||
        (pi.n_attn && !(keys = malloc((size_t)pi.n_attn * sizeof *keys)))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "%s: prompt %lld: out of memory", d->path, (long long)p);
        goto out;
    }
    CHECK(load_rows_meta(d, p, &pi, pos, &starts, err));
    CHECK(ks_dump_read_attention(d, hook, p, head_slot, keys, (size_t)pi.n_attn, err));
    memset(out, 0, (size_t)(n * n) * sizeof *out);
    for (int64_t r = 0; r < pi.n_rows; r++) {
        int64_t q = pos[r];
        memcpy(out + q * n, keys + (starts[r] - pi.attn_begin), (size_t)(q + 1) * sizeof *out);
    }
out:
    free(pos);
    free(starts);
    free(keys);
    return s;
}

ks_status ks_dump_read_topk(const ks_dump *d, int64_t p, int32_t *ids, float *logprobs,
                            float *next, size_t cap_rows, ks_error *err) {
    ks_status s = KS_OK;
    ks_dump_prompt pi;
    if (!d) return ks_error_set(err, KS_ERR_ARG, "ks_dump_read_topk: NULL argument");
    if ((ids || logprobs) && d->topk == 0)
        return ks_error_set(err, KS_ERR_NOT_FOUND, "%s: the dump has no top-k logits "
                            "(/logits/topk_ids)", d->path);
    if (next && d->next_logprob < 0)
        return ks_error_set(err, KS_ERR_NOT_FOUND, "%s: the dump has no /logits/next_logprob",
                            d->path);
    CHECK(ks_dump_prompt_info(d, p, &pi, err));
    if ((uint64_t)pi.n_rows > cap_rows)
        return ks_error_set(err, KS_ERR_RANGE, "%s: prompt %lld has %lld rows, room for %zu",
                            d->path, (long long)p, (long long)pi.n_rows, cap_rows);
    hsize_t start[2] = {(hsize_t)pi.row_begin, 0}, count[2] = {(hsize_t)pi.n_rows, (hsize_t)d->topk};
    if (ids) {
        CHECK(read_slab(d, d->topk_ids, "/logits/topk_ids", 2, start, count, H5T_NATIVE_INT32, ids,
                        err));
        for (int64_t i = 0; i < pi.n_rows * d->topk; i++)
            if (ids[i] < 0 || ids[i] >= d->cfg.vocab_size)
                BAD("%s: prompt %lld: /logits/topk_ids holds %d, outside the vocabulary (%d)",
                    d->path, (long long)p, (int)ids[i], d->cfg.vocab_size);
    }
    if (logprobs)
        CHECK(read_slab(d, d->topk_logprobs, "/logits/topk_logprobs", 2, start, count,
                        H5T_NATIVE_FLOAT, logprobs, err));
    if (next)
        CHECK(read_slab(d, d->next_logprob, "/logits/next_logprob", 1, start, count,
                        H5T_NATIVE_FLOAT, next, err));
out:
    return s;
}

/* ================================================================ repair */

/* Open read-only (as a SWMR reader when the writer did not close it) just to check the root
 * attributes format and format_version: repair writes to the file, so only to a dump. */
static ks_status probe_format(const char *path, ks_error *err) {
    ks_status s = KS_OK;
    hid_t fapl = -1, f = -1;
    H5TRY(fapl = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot make a file access list", path);
    H5TRY(H5Pset_metadata_read_attempts(fapl, DUMP_SWMR_READ_ATTEMPTS),
          "%s: cannot set the metadata read attempts", path);
    CHECK(ks_h5_check_superblock(path, err));
    if ((f = H5Fopen(path, H5F_ACC_RDONLY, fapl)) < 0) {
        H5Eclear2(H5E_DEFAULT);
        H5TRY(f = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl), "%s: cannot open",
              path);
    }
    s = check_format_attrs(path, f, err);
out:
    if (f >= 0) H5Fclose(f);
    if (fapl >= 0) H5Pclose(fapl);
    return s;
}

/* Cut axis `axis` of dataset `name` (when present) back to n entries. */
static ks_status cut_ds(const ks_dump *d, hid_t loc, const char *name, int axis, int64_t n,
                        ks_error *err) {
    ks_status s = KS_OK;
    hid_t ds = -1;
    htri_t ex;
    int rank;
    hsize_t dims[3];
    H5O_info_t info;
    H5TRY(ex = H5Lexists(loc, name, H5P_DEFAULT), "%s: cannot look up %s", d->path, name);
    if (!ex) goto out;
    H5TRY(H5Oget_info_by_name2(loc, name, &info, H5O_INFO_BASIC, H5P_DEFAULT),
          "%s: cannot look up %s", d->path, name);
    if (info.type != H5O_TYPE_DATASET) goto out;
    H5TRY(ds = H5Dopen2(loc, name, H5P_DEFAULT), "%s: cannot open dataset %s", d->path, name);
    CHECK(ds_shape(d, ds, name, 3, &rank, dims, err));
    if (axis >= rank) BAD("%s: %s: rank %d has no axis %d", d->path, name, rank, axis);
    if ((int64_t)dims[axis] < n)
        BAD("%s: %s: axis %d holds %llu entries, fewer than the %lld committed", d->path, name,
            axis, (unsigned long long)dims[axis], (long long)n);
    if ((int64_t)dims[axis] == n) goto out;
    dims[axis] = (hsize_t)n;
    H5TRY(H5Dset_extent(ds, dims), "%s: %s: cannot cut back to %lld entries", d->path, name,
          (long long)n);
out:
    if (ds >= 0) H5Dclose(ds);
    return s;
}

ks_status ks_dump_repair(const char *path, int64_t *n_prompts, ks_error *err) {
    ks_status s = KS_OK;
    hid_t fapl = -1, g = -1;
    ks_dump dd = {0}, *d = &dd; /* just the path and file, for the shared helpers */
    hbool_t clr = 1;
    int64_t len, N, R, K, P;
    H5G_info_t gi;
    char name[256];
    d->file = -1;
    d->path = (char *)path;
    if (n_prompts) *n_prompts = 0;
    if (!path) return ks_error_set(err, KS_ERR_ARG, "ks_dump_repair: NULL path");
    ks_h5_init();
    CHECK(check_file(path, err));
    /* the property h5clear uses to drop the "open for writing" flag; an interrupted SWMR
     * writer also left a stale end of allocation in the superblock, which
     * H5Fincrement_filesize(0) brings back in line (else set_extent fails, "addr overflow") */
    H5TRY(fapl = H5Pcreate(H5P_FILE_ACCESS), "%s: cannot make a file access list", path);
    H5TRY(H5Pset(fapl, "clear_status_flags", &clr), "%s: cannot ask to clear the status flags", path);
    /* a writer that failed on a full disk may have recorded an end of allocation past what
     * reached the disk: skip HDF5's "truncated file" check (h5clear's property too; the
     * committed prompts lie below the real end of file, and the cut below drops the rest) */
    if (H5Pexist(fapl, "skip_eof_check") > 0)
        H5TRY(H5Pset(fapl, "skip_eof_check", &clr), "%s: cannot ask to skip the end-of-file check", path);
    H5TRY(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST),
          "%s: cannot set the format bounds", path);
    CHECK(probe_format(path, err)); /* before anything writes to the file */
    H5TRY(d->file = H5Fopen(path, H5F_ACC_RDWR, fapl), "%s: cannot open for writing", path);
    H5TRY(H5Fincrement_filesize(d->file, 0), "%s: cannot reset the end of allocation", path);

    /* committed counts: P from the length of /prompt_offsets (extended last), N, R, K at [P] */
    CHECK(open_ds(d, KS_DS_PROMPT_OFFSETS, true, &d->prompt_offsets, err));
    CHECK(open_ds(d, KS_DS_ROW_OFFSETS, true, &d->row_offsets, err));
    CHECK(open_ds(d, KS_DS_ATTN_OFFSETS, true, &d->attn_offsets, err));
    CHECK(check_1d(d, d->prompt_offsets, "/prompt_offsets", H5T_INTEGER, 1, "one", &len, err));
    P = len - 1;
    CHECK(check_1d(d, d->row_offsets, "/row_offsets", H5T_INTEGER, P + 1, "/prompt_offsets", NULL, err));
    CHECK(check_1d(d, d->attn_offsets, "/attn_offsets", H5T_INTEGER, P + 1, "/prompt_offsets", NULL,
                   err));
    CHECK(read_i64(d, d->prompt_offsets, "/prompt_offsets", P, 1, &N, err));
    CHECK(read_i64(d, d->row_offsets, "/row_offsets", P, 1, &R, err));
    CHECK(read_i64(d, d->attn_offsets, "/attn_offsets", P, 1, &K, err));
    if (N < 0 || R < 0 || K < 0)
        BAD("%s: negative committed counts (/prompt_offsets, /row_offsets, /attn_offsets [%lld])",
            path, (long long)P);
    close_ds(&d->prompt_offsets);
    close_ds(&d->row_offsets);
    close_ds(&d->attn_offsets);

    CHECK(cut_ds(d, d->file, KS_DS_PROMPT_OFFSETS, 0, P + 1, err));
    CHECK(cut_ds(d, d->file, KS_DS_ROW_OFFSETS, 0, P + 1, err));
    CHECK(cut_ds(d, d->file, KS_DS_ATTN_OFFSETS, 0, P + 1, err));
    CHECK(cut_ds(d, d->file, KS_DS_PROMPTS, 0, P, err));
    CHECK(cut_ds(d, d->file, KS_DS_PROMPT_IDS, 0, P, err));
    CHECK(cut_ds(d, d->file, KS_DS_PROMPT_LENGTHS, 0, P, err));
    CHECK(cut_ds(d, d->file, KS_DS_GENERATIONS, 0, P, err));
    CHECK(cut_ds(d, d->file, KS_DS_TOKENS, 0, N, err));
    CHECK(cut_ds(d, d->file, KS_DS_TOKEN_STRINGS, 0, N, err));
    CHECK(cut_ds(d, d->file, KS_DS_ROW_POSITIONS, 0, R, err));
    CHECK(cut_ds(d, d->file, KS_DS_ATTN_ROW_STARTS, 0, R, err));
    static const char *const groups[] = {KS_GROUP_ACTIVATIONS, KS_GROUP_LOGITS};
    for (int gi_ = 0; gi_ < 2; gi_++) {
        htri_t ex;
        H5TRY(ex = H5Lexists(d->file, groups[gi_], H5P_DEFAULT), "%s: cannot look up /%s", path,
              groups[gi_]);
        if (!ex) continue;
        H5TRY(g = H5Gopen2(d->file, groups[gi_], H5P_DEFAULT), "%s: cannot open /%s", path,
              groups[gi_]);
        H5TRY(H5Gget_info(g, &gi), "%s: cannot read /%s", path, groups[gi_]);
        for (hsize_t i = 0; i < gi.nlinks; i++) {
            ssize_t n;
            ks_hook_point pt;
            int layer;
            H5TRY(n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name,
                                         sizeof name, H5P_DEFAULT),
                  "%s: cannot read the name of /%s entry %llu", path, groups[gi_],
                  (unsigned long long)i);
            if ((size_t)n >= sizeof name) continue; /* not ours */
            bool attention = gi_ == 0 && ks_hook_parse(name, &pt, &layer) == KS_OK &&
                             width_of(pt) == W_ATTN;
            CHECK(cut_ds(d, g, name, attention ? 1 : 0, attention ? K : R, err));
        }
        H5Gclose(g);
        g = -1;
    }
    if (n_prompts) *n_prompts = P;
out:
    if (g >= 0) H5Gclose(g);
    close_ds(&d->prompt_offsets);
    close_ds(&d->row_offsets);
    close_ds(&d->attn_offsets);
    if (d->file >= 0 && H5Fclose(d->file) < 0 && s == KS_OK)
        s = ks_h5_fail(err, KS_ERR_FORMAT, __FILE__, __LINE__, "%s: cannot close", path);
    if (fapl >= 0) H5Pclose(fapl);
    return s;
}
