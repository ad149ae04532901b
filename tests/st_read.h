/* st_read.h — a small safetensors reader for the tests' oracle fixtures (8-byte header
 * length, JSON header, raw little-endian data). Header-only; needs jansson. */
#ifndef KS_TEST_ST_READ_H
#define KS_TEST_ST_READ_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct {
    uint8_t *buf; /* whole file */
    size_t len;
    size_t data_off; /* start of the data section */
    json_t *head;
} st_file;

static inline void st_close(st_file *f) {
    if (!f) return;
    json_decref(f->head);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

/* 0 on success; on failure writes why into why. */
static inline int st_open(const char *path, st_file *f, char *why, size_t cap) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(why, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fseek(fp, 0, SEEK_END) != 0) goto io;
    long n = ftell(fp);
    if (n < 8 || fseek(fp, 0, SEEK_SET) != 0) goto io;
    f->len = (size_t)n;
    f->buf = malloc(f->len);
    if (!f->buf || fread(f->buf, 1, f->len, fp) != f->len) goto io;
    fclose(fp);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | f->buf[i];
    if (hl > f->len - 8) {
        snprintf(why, cap, "%s: header length %llu past the end", path, (unsigned long long)hl);
        st_close(f);
        return -1;
    }
    json_error_t je;
    f->head = json_loadb((const char *)f->buf + 8, (size_t)hl, 0, &je);
    if (!f->head || !json_is_object(f->head)) {
        snprintf(why, cap, "%s: bad JSON header: %s", path, je.text);
        st_close(f);
        return -1;
    }
    f->data_off = 8 + (size_t)hl;
    return 0;
io:
    snprintf(why, cap, "%s: read error", path);
    fclose(fp);
    free(f->buf);
    f->buf = NULL;
    return -1;
}

/* A tensor of dtype ("F32", "I32") and rank ndim; shape into shape[]. NULL when absent or
 * malformed (why says which). The data may be unaligned: read it with memcpy. */
static inline const uint8_t *st_get(const st_file *f, const char *name, const char *dtype, int ndim,
                             int64_t *shape, char *why, size_t cap) {
    json_t *t = json_object_get(f->head, name);
    if (!t) {
        snprintf(why, cap, "tensor %s missing", name);
        return NULL;
    }
    const char *dt = json_string_value(json_object_get(t, "dtype"));
    json_t *sh = json_object_get(t, "shape"), *off = json_object_get(t, "data_offsets");
    if (!dt || strcmp(dt, dtype) != 0 || !json_is_array(sh) || (int)json_array_size(sh) != ndim ||
        !json_is_array(off) || json_array_size(off) != 2) {
        snprintf(why, cap, "tensor %s: expected %s of rank %d", name, dtype, ndim);
        return NULL;
    }
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        json_int_t d = json_integer_value(json_array_get(sh, i));
        if (d <= 0 || d > (1 << 24)) {
            snprintf(why, cap, "tensor %s: bad shape", name);
            return NULL;
        }
        shape[i] = d;
        n *= (uint64_t)d;
    }
    json_int_t b = json_integer_value(json_array_get(off, 0));
    json_int_t e = json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < b || (uint64_t)(e - b) != n * 4 || (size_t)e > f->len - f->data_off) {
        snprintf(why, cap, "tensor %s: bad data offsets", name);
        return NULL;
    }
    return f->buf + f->data_off + b;
}

#endif
