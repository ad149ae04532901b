/* h5util.c — HDF5 plumbing shared by the dump writer and reader: one place that silences
 * HDF5's error printing and turns its error stack into our messages (netCDF-C style), the
 * float types of the format, and the f32 → f16/bf16 rounding the writer uses. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dump_private.h"

static pthread_once_t h5_once = PTHREAD_ONCE_INIT;

static void h5_init_once(void) {
    /* No flush at exit: a dump whose writer failed (disk full) is deliberately left unclosed,
     * in its last consistent SWMR state; closing it at exit would write metadata that points
     * past what reached the disk (and HDF5 1.10 crashes closing such a file). */
    H5dont_atexit();
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void ks_h5_init(void) {
    pthread_once(&h5_once, h5_init_once);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the error stack is per thread */
}

/* The innermost (deepest) entry of the error stack says what actually failed: the errno text
 * of a write, "truncated file", "bad object header version"... */
typedef struct {
    char msg[256];
} h5_walk;

static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *user) {
    h5_walk *w = user;
    if (n != 0 || !e->desc) return 0;
    /* the file drivers put the errno text inside a long line: keep just that */
    const char *em = strstr(e->desc, "error message = '");
    if (em) {
        em += strlen("error message = '");
        const char *end = strchr(em, '\'');
        int len = end ? (int)(end - em) : (int)strlen(em);
        snprintf(w->msg, sizeof w->msg, "%.*s", len, em);
    } else {
        snprintf(w->msg, sizeof w->msg, "%s", e->desc);
    }
    return 0;
}

ks_status ks_h5_error(ks_error *err, ks_status code, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    h5_walk w = {{0}};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &w);
    H5Eclear2(H5E_DEFAULT);
    if (w.msg[0]) return ks_error_set(err, code, "%s: %s", what, w.msg);
    return ks_error_set(err, code, "%s", what);
}

hid_t ks_h5_float_type(ks_dump_dtype t) {
    hid_t ty = H5Tcopy(H5T_IEEE_F32LE);
    if (ty < 0) return ty;
    if (t == KS_DUMP_F32) return ty;
    /* shrink a copy of IEEE single: fields first (they must fit the precision being set), then
     * precision and size; the order matters to HDF5's checks */
    int ok;
    if (t == KS_DUMP_F16)
        ok = H5Tset_fields(ty, 15, 10, 5, 0, 10) >= 0 && H5Tset_precision(ty, 16) >= 0 &&
             H5Tset_size(ty, 2) >= 0 && H5Tset_ebias(ty, 15) >= 0;
    else
        ok = H5Tset_fields(ty, 15, 7, 8, 0, 7) >= 0 && H5Tset_precision(ty, 16) >= 0 &&
             H5Tset_size(ty, 2) >= 0 && H5Tset_ebias(ty, 127) >= 0;
    if (!ok) {
        H5Tclose(ty);
        return -1;
    }
    return ty;
}

bool ks_h5_float_type_kind(hid_t type, ks_dump_dtype *out) {
    if (H5Tget_class(type) != H5T_FLOAT || H5Tget_order(type) != H5T_ORDER_LE) return false;
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
    size_t size = H5Tget_size(type);
    size_t bias = H5Tget_ebias(type);
    if (size == 4 && spos == 31 && epos == 23 && esize == 8 && mpos == 0 && msize == 23 && bias == 127)
        *out = KS_DUMP_F32;
    else if (size == 2 && spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && bias == 15)
        *out = KS_DUMP_F16;
    else if (size == 2 && spos == 15 && epos == 7 && esize == 8 && mpos == 0 && msize == 7 && bias == 127)
        *out = KS_DUMP_BF16;
    else
        return false;
    return true;
}

bool ks_h5_plain_number(hid_t type) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    if (cls == H5T_INTEGER) return size == 1 || size == 2 || size == 4 || size == 8;
    if (cls != H5T_FLOAT || !(size == 2 || size == 4 || size == 8)) return false;
    size_t spos, epos, esize, mpos, msize;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
    size_t bits = 8 * size;
    return spos < bits && epos + esize <= bits && mpos + msize <= bits && esize > 0 && esize < 32 &&
           H5Tget_offset(type) >= 0 && (size_t)H5Tget_offset(type) + H5Tget_precision(type) <= bits;
}

hid_t ks_h5_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Fixed-length UTF-8 string type of `width` bytes. The format has no variable-length data at
 * all (docs/FORMAT.md): it lives in HDF5's global heap, which has no checksum, and libhdf5 1.10
 * crashes on a corrupted heap (found by fuzzing the reader); fixed-length strings sit in
 * checksummed object headers (attributes) or in plain chunks (datasets). */
hid_t ks_h5_fixed_str_type(size_t width, H5T_str_t pad) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, width ? width : 1) < 0 || H5Tset_strpad(t, pad) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

const char *ks_dump_dtype_name(ks_dump_dtype t) {
    switch (t) {
    case KS_DUMP_F32: return "f32";
    case KS_DUMP_F16: return "f16";
    case KS_DUMP_BF16: return "bf16";
    }
    return "?";
}

ks_status ks_dump_dtype_parse(const char *s, ks_dump_dtype *out, ks_error *err) {
    if (s && strcmp(s, "f32") == 0) *out = KS_DUMP_F32;
    else if (s && strcmp(s, "f16") == 0) *out = KS_DUMP_F16;
    else if (s && strcmp(s, "bf16") == 0) *out = KS_DUMP_BF16;
    else return ks_error_set(err, KS_ERR_ARG, "unknown storage dtype '%s' (f32, f16 or bf16)", s ? s : "");
    return KS_OK;
}

const char *ks_dump_compression_name(ks_dump_compression c) {
    switch (c) {
    case KS_DUMP_COMPRESS_NONE: return "none";
    case KS_DUMP_COMPRESS_DEFLATE: return "deflate";
    case KS_DUMP_COMPRESS_LZ4: return "lz4";
    }
    return "?";
}

ks_status ks_dump_compression_parse(const char *s, ks_dump_compression *out, ks_error *err) {
    if (s && strcmp(s, "none") == 0) *out = KS_DUMP_COMPRESS_NONE;
    else if (s && strcmp(s, "deflate") == 0) *out = KS_DUMP_COMPRESS_DEFLATE;
    else if (s && strcmp(s, "lz4") == 0) *out = KS_DUMP_COMPRESS_LZ4;
    else return ks_error_set(err, KS_ERR_ARG, "unknown compression '%s' (none, deflate or lz4)", s ? s : "");
    return KS_OK;
}

ks_status ks_h5_fail(ks_error *err, ks_status code, const char *file, int line, const char *fmt,
                     ...) {
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    return ks_h5_error(err, code, "%s (%s:%d)", what, base ? base + 1 : file, line);
}

/* ================================================================ small writers (attributions.c, probe_results.c) */

#define H5TRY(call, ...) KS_H5_TRY_AS(KS_ERR_IO, call, __VA_ARGS__)

static ks_status attr_write(const char *path, const char *obj, hid_t loc, const char *name,
                            hid_t ftype, hid_t mtype, const void *val, ks_error *err) {
    ks_status s = KS_OK;
    hid_t sp = -1, a = -1;
    H5TRY(sp = H5Screate(H5S_SCALAR), "%s: %s: attribute '%s': cannot make a dataspace", path,
          obj, name);
    H5TRY(a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT),
          "%s: %s: cannot create attribute '%s'", path, obj, name);
    H5TRY(H5Awrite(a, mtype, val), "%s: %s: cannot write attribute '%s'", path, obj, name);
out:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return s;
}

/* A string attribute as the format writes them: fixed-length UTF-8, NUL-terminated, sized to
 * its value. */
ks_status ks_h5_attr_str(const char *path, const char *obj, hid_t loc, const char *name,
                          const char *v, ks_error *err) {
    ks_status s = KS_OK;
    const char *str = v ? v : "";
    hid_t t = -1;
    H5TRY(t = ks_h5_fixed_str_type(strlen(str) + 1, H5T_STR_NULLTERM),
          "%s: %s: attribute '%s': cannot make a string type", path, obj, name);
    s = attr_write(path, obj, loc, name, t, t, str, err);
out:
    if (t >= 0) H5Tclose(t);
    return s;
}

ks_status ks_h5_attr_i32(const char *path, const char *obj, hid_t loc, const char *name, int v,
                          ks_error *err) {
    return attr_write(path, obj, loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v, err);
}

ks_status ks_h5_attr_f64(const char *path, const char *obj, hid_t loc, const char *name,
                          double v, ks_error *err) {
    return attr_write(path, obj, loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, err);
}

/* One dataset of g, contiguous, written whole from buf (memory type mt). */
ks_status ks_h5_write_ds(const char *path, const char *obj, hid_t g, const char *name, hid_t ft,
                          hid_t mt, int rank, const hsize_t *dims, const void *buf, ks_error *err) {
    ks_status s = KS_OK;
    hid_t sp = -1, d = -1;
    H5TRY(sp = H5Screate_simple(rank, dims, NULL), "%s: %s/%s: cannot make a dataspace", path, obj,
          name);
    H5TRY(d = H5Dcreate2(g, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          "%s: cannot create %s/%s", path, obj, name);
    H5TRY(H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), "%s: cannot write %s/%s", path, obj,
          name);
out:
    if (d >= 0) H5Dclose(d);
    if (sp >= 0) H5Sclose(sp);
    return s;
}

ks_status ks_h5_check_superblock(const char *path, ks_error *err) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    FILE *f = fopen(path, "rb");
    if (!f) return KS_OK;
    int version = -1;
    /* the signature sits at 0, 512, 1024, 2048, ... (a user block before it) */
    for (long at = 0; at >= 0 && at < (1L << 40); at = at ? at * 2 : 512) {
        unsigned char b[9];
        if (fseek(f, at, SEEK_SET) != 0 || fread(b, 1, 9, f) != 9) break;
        if (!memcmp(b, sig, 8)) {
            version = b[8];
            break;
        }
    }
    fclose(f);
    if (version == 0 || version == 1)
        return ks_error_set(err, KS_ERR_FORMAT,
                            "%s: HDF5 superblock version %d: koalascope reads HDF5 files of superblock 2 or "
                            "3 only (HDF5 1.10's latest format, whose headers are checksummed; koalascope "
                            "writes them so; from h5py, create the file with libver='latest')",
                            path, version);
    return KS_OK;
}

hid_t ks_h5_latest_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

