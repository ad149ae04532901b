/* safetensors.c — the safetensors container: uint64 little-endian header length N, N bytes
 * of JSON {"name": {"dtype": "F32", "shape": [out, in], "data_offsets": [begin, end]}, …,
 * optional "__metadata__": {string: string}}, then the data; offsets are relative to the
 * first byte after the header. Shapes are row-major (outermost first).
 *
 * Validated before anything is used: the header length against the file, the JSON
 * (duplicate keys rejected), each entry's fields and types, dtype, shape × dtype = the byte
 * range, begin ≤ end, ranges inside the data section, and no two tensors overlapping. */
#include "model_private.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A header larger than this is not a checkpoint we can use (real ones are < 1 MiB per
 * thousand tensors). */
#define ST_MAX_HEADER (UINT64_C(256) << 20)

static int st_dtype(const char *s) {
    if (!strcmp(s, "F32")) return KS_DTYPE_F32;
    if (!strcmp(s, "F16")) return KS_DTYPE_F16;
    if (!strcmp(s, "BF16")) return KS_DTYPE_BF16;
    return -1;
}

static ks_status parse_entry(const char *source, const char *name, json_t *e, uint64_t data_base,
                             uint64_t data_len, const uint8_t *data, ks_tensor_table *tab,
                             ks_error *err) {
    if (!json_is_object(e))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': header entry is not an object",
                            source, name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"),
           *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'dtype' is missing or not "
                            "a string", source, name);
    int dt = st_dtype(json_string_value(jd));
    if (dt < 0)
        return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: tensor '%s': dtype '%.32s' is not "
                            "supported (F32, F16, BF16)", source, name, json_string_value(jd));
    if (!json_is_array(js))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape' is missing or not "
                            "an array", source, name);
    size_t nd = json_array_size(js);
    if (nd > 4)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape' has %zu dimensions "
                            "(at most 4)", source, name, nd);
    ks_tensor_info ti = {0};
    ti.dtype = (ks_dtype)dt;
    ti.n_dims = (int)nd;
    uint64_t n = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape'[%zu] is not a "
                                "non-negative integer", source, name, i);
        ti.dims[i] = (uint64_t)json_integer_value(d);
        if (__builtin_mul_overflow(n, ti.dims[i], &n))
            return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape' element count "
                                "overflows", source, name);
    }
    ti.n_elems = n;
    ks_error e2;
    if (ks_dtype_nbytes(ti.dtype, n, &ti.nbytes, &e2))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'shape': %s", source, name,
                            e2.msg);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_is_integer(json_array_get(jo, 0)) || !json_is_integer(json_array_get(jo, 1)))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': field 'data_offsets' is not two "
                            "integers", source, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)),
               en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] are "
                            "negative", source, name, (long long)b, (long long)en);
    if (en < b)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] out of "
                            "order", source, name, (long long)b, (long long)en);
    if ((uint64_t)en > data_len)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] past the "
                            "end of the data (%llu bytes)", source, name, (long long)b, (long long)en,
                            (unsigned long long)data_len);
    if ((uint64_t)(en - b) != ti.nbytes)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld] span "
                            "%lld bytes but shape × dtype %s is %llu bytes", source, name,
                            (long long)b, (long long)en, (long long)(en - b),
                            ks_dtype_name(ti.dtype), (unsigned long long)ti.nbytes);
    ti.offset = data_base + (uint64_t)b;
    ti.data = data + ti.offset;
    ti.source = source;
    ti.name = strdup(name);
    if (!ti.name) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    return ks_tensor_table_push(tab, &ti, err);
}

ks_status ks_safetensors_parse(const uint8_t *data, size_t len, const char *source,
                               ks_tensor_table *tab, ks_error *err) {
    ks_reader r = {data, len, 0};
    uint64_t hlen;
    if (!ks_reader_u64(&r, &hlen))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: safetensors header length truncated (file has "
                            "%zu bytes)", source, len);
    if (hlen > len - 8 || hlen > ST_MAX_HEADER)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: safetensors header length %llu exceeds the %zu "
                            "bytes left in the file", source, (unsigned long long)hlen, len - 8);
    if (hlen < 2)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: safetensors header length %llu is too small for "
                            "a JSON object", source, (unsigned long long)hlen);
    json_error_t je;
    json_t *root = json_loadb((const char *)data + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: safetensors header is not valid JSON: %s (at "
                            "header byte %d)", source, je.text, je.position);
    ks_status s = KS_OK;
    if (!json_is_object(root)) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: safetensors header is not a JSON object", source);
        goto out;
    }
    size_t from = tab->n;
    uint64_t base = 8 + hlen, data_len = (uint64_t)len - base;
    const char *name;
    json_t *e;
    json_object_foreach(root, name, e) {
        if (!strcmp(name, "__metadata__")) {
            if (!json_is_object(e)) {
                s = ks_error_set(err, KS_ERR_FORMAT, "%s: header field '__metadata__' is not an "
                                 "object", source);
                goto out;
            }
            continue;
        }
        if (!*name) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: a tensor has an empty name", source);
            goto out;
        }
        if ((s = parse_entry(source, name, e, base, data_len, data, tab, err))) goto out;
    }
    s = ks_tensor_table_check_layout(tab, from, len, source, err);
out:
    json_decref(root);
    return s;
}
