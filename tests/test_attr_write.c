/* test_attr_write.c — ks_attribution_write (activations/attributions.c): attribution results
 * as /attributions/<name> in a file of their own and in a dump (docs/FORMAT.md, "/attributions").
 *
 *   test_attr_write [OUTDIR]           TAP. Works in a fresh temporary directory, removed at the
 *                                      end; with OUTDIR, works there and leaves its files for
 *                                      tests/test_attributions.py to read with h5py:
 *                                        OUTDIR/attr.h5  standalone: saliency_pos (1-D, token
 *                                                        strings), heads (2-D, a NaN), patch3d
 *                                                        (3-D), over (written, then overwritten),
 *                                                        bytes (pieces that are not UTF-8)
 *                                        OUTDIR/dump.h5  tests/dumps/cases/valid.h5 with
 *                                                        /attributions/ig and /attributions/heads
 *   test_attr_write --add DUMP NAME    add the "ig" result under NAME to DUMP and exit (0 on
 *                                      success; the error on stderr otherwise): how the Python
 *                                      test adds a result to a dump that `koalascope record` made.
 *
 * What is checked (oracle: the values below, written and read back with plain HDF5, exactly;
 * f32 round trips are bit for bit):
 *  - a new file gets the root attributes; a second result goes into the same file; every
 *    dataset and attribute reads back as written;
 *  - overwrite replaces a result and leaves nothing else behind; without it a duplicate name
 *    is refused;
 *  - token strings and an objective that are not UTF-8 are stored with <0xNN> for each stray
 *    byte (as the dump spells byte tokens);
 *  - refusals, each KS_ERR_* with a message naming the file, and the file left byte for byte
 *    as it was (or not created): bad names, bad shapes, NULL fields, bad JSON, a method or axis
 *    name that is not UTF-8, a plain HDF5 file, a non-HDF5 file, a directory, a newer
 *    format_version, /attributions that is not a group, an interrupted dump, a dump the reader
 *    refuses;
 *  - a complete dump with results added still opens with ks_dump_open, with the same prompts,
 *    hooks and values as the original, and ks_dump_repair still accepts it;
 *  - a write that fails half-way (EFBIG under a file size limit) removes the file it created,
 *    and leaves a dump without the result, still readable, still writable. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "tap.h"

#include "ks_dump.h"

static char cases_dir[4096];

/* ------------------------------------------------------------------ the results written */

/* Both the standalone file and the dumps hold these; tests/test_attributions.py rebuilds the
 * same values and must be kept in step with them. */
static const int TOKENS[6] = {1, 450, 7483, 310, 3444, 338};
static const char *const TOKEN_STRINGS[6] = {"<s>", " The", " café", "", "日本語", " \"q\""};

static float v_pos[6];        /* 0.25 i - 0.5 */
static float v_heads[2 * 4];  /* 10 layer + head + 0.5, NaN at [1][2] */
static float v_patch[2 * 6 * 2]; /* layer - position / 8 + component / 16, -0.0 at [0][0][0] */
static float v_ig[6];         /* i / 4 - 1 / 8 for i < 6, -inf at [5] */

static void fill_values(void) {
    for (int i = 0; i < 6; i++) v_pos[i] = 0.25f * (float)i - 0.5f;
    for (int l = 0; l < 2; l++)
        for (int h = 0; h < 4; h++) v_heads[l * 4 + h] = 10.0f * (float)l + (float)h + 0.5f;
    v_heads[1 * 4 + 2] = NAN;
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < 6; p++)
            for (int c = 0; c < 2; c++)
                v_patch[(l * 6 + p) * 2 + c] = (float)l - (float)p / 8.0f + (float)c / 16.0f;
    v_patch[0] = -0.0f;
    for (int i = 0; i < 6; i++) v_ig[i] = (float)i / 4.0f - 0.125f;
    v_ig[5] = -INFINITY;
}

static const int64_t SHAPE_POS[1] = {6}, SHAPE_HEADS[2] = {2, 4}, SHAPE_PATCH[3] = {2, 6, 2};
static const char *const AXES_POS[1] = {"position"};
static const char *const AXES_HEADS[2] = {"layer", "head"};
static const char *const AXES_PATCH[3] = {"layer", "position", "component"};

static ks_attribution r_pos(void) {
    return (ks_attribution){.name = "saliency_pos", .method = "saliency",
                            .objective = "log p(' Paris' | prompt)", .tokens = TOKENS, .n_tokens = 6,
                            .token_strings = TOKEN_STRINGS, .values = v_pos, .ndim = 1,
                            .shape = SHAPE_POS, .axes = AXES_POS, .objective_value = -1.25,
                            .baseline_value = NAN, .completeness_error = NAN, .steps = 0};
}

static ks_attribution r_heads(void) {
    return (ks_attribution){.name = "heads", .method = "head_attribution",
                            .objective = "logit(' he') - logit(' she')", .tokens = TOKENS,
                            .n_tokens = 6, .values = v_heads, .ndim = 2, .shape = SHAPE_HEADS,
                            .axes = AXES_HEADS, .objective_value = 3.5, .baseline_value = -0.75,
                            .completeness_error = 0.001, .steps = 0,
                            .extra_json = "{\"heads\": \"all\", \"n\": 2}"};
}

static ks_attribution r_patch(void) {
    return (ks_attribution){.name = "patch3d", .method = "activation_patching",
                            .objective = "logit diff", .tokens = TOKENS, .n_tokens = 6,
                            .values = v_patch, .ndim = 3, .shape = SHAPE_PATCH, .axes = AXES_PATCH,
                            .objective_value = 2.0, .baseline_value = -2.0,
                            .completeness_error = NAN, .steps = 0};
}

static ks_attribution r_ig(void) {
    return (ks_attribution){.name = "ig", .method = "integrated_gradients",
                            .objective = "log p(' Paris' | prompt)", .tokens = TOKENS, .n_tokens = 6,
                            .token_strings = TOKEN_STRINGS, .values = v_ig, .ndim = 1,
                            .shape = SHAPE_POS, .axes = AXES_POS, .objective_value = -1.25,
                            .baseline_value = -9.5, .completeness_error = 0.0125, .steps = 64,
                            .extra_json = "{\"baseline\": \"unk\", \"quadrature\": \"gauss-legendre\"}"};
}

/* ------------------------------------------------------------------ file helpers */


static bool exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* ------------------------------------------------------------------ reading back (plain HDF5) */

/* String attribute of obj (fixed-length only; UTF-8 when utf8) into buf; false when absent or
 * of another type. HDF5 converts no character set into another: the memory type takes the
 * file's. */
static bool read_attr_str_cs(hid_t obj, const char *name, char *buf, size_t cap, bool utf8) {
    buf[0] = '\0';
    if (H5Aexists(obj, name) <= 0) return false;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
    bool ok = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0 &&
              H5Tget_size(t) < cap && (!utf8 || H5Tget_cset(t) == H5T_CSET_UTF8);
    if (ok) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5Tget_size(t) + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(t));
        ok = H5Aread(a, mt, buf) >= 0;
        H5Tclose(mt);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return ok;
}

/* What the writer must produce: fixed-length UTF-8. */
static bool read_attr_str(hid_t obj, const char *name, char *buf, size_t cap) {
    return read_attr_str_cs(obj, name, buf, cap, true);
}

static bool read_attr_num(hid_t obj, const char *name, H5T_class_t cls, size_t size, double *v) {
    if (H5Aexists(obj, name) <= 0) return false;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
    bool ok = t >= 0 && H5Tget_class(t) == cls && H5Tget_size(t) == size &&
              H5Tget_order(t) == H5T_ORDER_LE && H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0;
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return ok;
}

static bool same_double(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

/* Bit-for-bit comparison of n floats (NaN payloads and -0.0 included). */
static bool same_floats(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* Check /attributions/<r->name> of the file at path against r. */
static void check_group(const char *path, const ks_attribution *r, const char *label) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    char gname[300], s[1024];
    snprintf(gname, sizeof gname, "/attributions/%s", r->name);
    hid_t g = f >= 0 ? H5Gopen2(f, gname, H5P_DEFAULT) : -1;
    if (!tap_ok(g >= 0, "%s: %s opens with plain HDF5", label, gname)) {
        if (f >= 0) H5Fclose(f);
        return;
    }
    /* values: f32 LE, the shape as given, bit for bit */
    hid_t d = H5Dopen2(g, "values", H5P_DEFAULT), t = d >= 0 ? H5Dget_type(d) : -1;
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1, pl = d >= 0 ? H5Dget_create_plist(d) : -1;
    hsize_t dims[4] = {0};
    int rank = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
    size_t n = 1;
    bool shape_ok = rank == r->ndim;
    for (int k = 0; shape_ok && k < rank; k++) {
        shape_ok = dims[k] == (hsize_t)r->shape[k];
        n *= (size_t)dims[k];
    }
    bool type_ok = t >= 0 && H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4 &&
                   H5Tget_order(t) == H5T_ORDER_LE;
    float *vals = calloc(n, sizeof *vals);
    bool vals_ok = shape_ok && vals && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals) >= 0 &&
                   same_floats(vals, r->values, n);
    tap_ok(type_ok && shape_ok && vals_ok && pl >= 0 && H5Pget_layout(pl) == H5D_CONTIGUOUS,
           "%s: values: f32, contiguous, rank %d, every value bit for bit", label, r->ndim);
    free(vals);
    if (pl >= 0) H5Pclose(pl);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);

    /* tokens: int32 LE [n_tokens] */
    d = H5Dopen2(g, "tokens", H5P_DEFAULT);
    t = d >= 0 ? H5Dget_type(d) : -1;
    sp = d >= 0 ? H5Dget_space(d) : -1;
    int32_t ids[16] = {0};
    bool tok_ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 4 &&
                  H5Tget_sign(t) == H5T_SGN_2 && sp >= 0 &&
                  H5Sget_simple_extent_npoints(sp) == r->n_tokens && r->n_tokens <= 16 &&
                  H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, ids) >= 0;
    for (int i = 0; tok_ok && i < r->n_tokens; i++) tok_ok = ids[i] == r->tokens[i];
    tap_ok(tok_ok, "%s: tokens: int32 [%d], as given", label, r->n_tokens);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);

    /* token_strings: fixed-length, NUL-padded UTF-8 as wide as the longest piece */
    htri_t has_ts = H5Lexists(g, "token_strings", H5P_DEFAULT);
    if (!r->token_strings) {
        tap_ok(has_ts == 0, "%s: no token_strings dataset when none were given", label);
    } else {
        size_t w = 1;
        for (int i = 0; i < r->n_tokens; i++)
            if (strlen(r->token_strings[i]) > w) w = strlen(r->token_strings[i]);
        d = has_ts > 0 ? H5Dopen2(g, "token_strings", H5P_DEFAULT) : -1;
        t = d >= 0 ? H5Dget_type(d) : -1;
        bool ts_ok = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0 &&
                     H5Tget_size(t) == w && H5Tget_strpad(t) == H5T_STR_NULLPAD &&
                     H5Tget_cset(t) == H5T_CSET_UTF8;
        char *buf = calloc((size_t)r->n_tokens, w);
        ts_ok = ts_ok && buf && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
        for (int i = 0; ts_ok && i < r->n_tokens; i++) {
            const char *p = buf + (size_t)i * w;
            size_t len = strnlen(p, w);
            ts_ok = len == strlen(r->token_strings[i]) && !memcmp(p, r->token_strings[i], len);
        }
        tap_ok(ts_ok, "%s: token_strings: fixed-length NUL-padded UTF-8 of %zu bytes, as given",
               label, w);
        free(buf);
        if (t >= 0) H5Tclose(t);
        if (d >= 0) H5Dclose(d);
    }

    /* attributes */
    char axes[512] = "";
    for (int k = 0; k < r->ndim; k++) {
        strcat(axes, k ? "," : "");
        strcat(axes, r->axes[k]);
    }
    double ov = 0, bv = 0, ce = 0, st = -1;
    bool ok = read_attr_str(g, "method", s, sizeof s) && !strcmp(s, r->method);
    ok = ok && read_attr_str(g, "objective", s, sizeof s) && !strcmp(s, r->objective ? r->objective : "");
    ok = ok && read_attr_str(g, "axes", s, sizeof s) && !strcmp(s, axes);
    ok = ok && read_attr_num(g, "objective_value", H5T_FLOAT, 8, &ov) && same_double(ov, r->objective_value);
    ok = ok && read_attr_num(g, "baseline_value", H5T_FLOAT, 8, &bv) && same_double(bv, r->baseline_value);
    ok = ok && read_attr_num(g, "completeness_error", H5T_FLOAT, 8, &ce) &&
         same_double(ce, r->completeness_error);
    ok = ok && read_attr_num(g, "steps", H5T_INTEGER, 4, &st) && st == r->steps;
    ok = ok && read_attr_str(g, "created", s, sizeof s) && strlen(s) == 20 && s[10] == 'T' && s[19] == 'Z';
    ok = ok && read_attr_str(g, "model_path", s, sizeof s) && !strcmp(s, "tiny.gguf");
    bool params_ok = r->extra_json ? read_attr_str(g, "params", s, sizeof s) && !strcmp(s, r->extra_json)
                                   : H5Aexists(g, "params") == 0;
    tap_ok(ok && params_ok, "%s: attributes method, objective, axes '%s', objective_value, "
           "baseline_value, completeness_error, steps, created, model_path, params%s", label, axes,
           r->extra_json ? "" : " (absent)");
    H5Gclose(g);
    H5Fclose(f);
}

/* Names in /attributions of the file at path, comma-separated, into buf. */
static void list_results(const char *path, char *buf, size_t cap) {
    buf[0] = '\0';
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = f >= 0 ? H5Gopen2(f, "attributions", H5P_DEFAULT) : -1;
    H5G_info_t gi;
    if (g >= 0 && H5Gget_info(g, &gi) >= 0)
        for (hsize_t i = 0; i < gi.nlinks; i++) {
            char name[300];
            if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                   H5P_DEFAULT) < 0)
                continue;
            size_t used = strlen(buf);
            snprintf(buf + used, cap - used, "%s%s", used ? "," : "", name);
        }
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
}

/* ------------------------------------------------------------------ the tests */

static const char *MODEL = "tiny.gguf", *CMDLINE = "koalascope attribute tiny.gguf --prompt 'x'";

/* Free text that is not UTF-8 (a byte token's text is one raw byte): stored with each byte
 * outside a well-formed sequence spelled <0xNN>, as the dump spells byte tokens, so that every
 * string decodes. The result "bytes", kept in attr.h5 for test_attributions.py. */
static const char *const RAW_PIECES[6] = {"<s>", "\xe2\x96", "caf\xc3", "\xed\xa0\x80", "ok \xe2\x96\x81",
                                          "\xc0\x80\xf5"};
static const char *const RAW_SPELLED[6] = {"<s>", "<0xE2><0x96>", "caf<0xC3>", "<0xED><0xA0><0x80>",
                                           "ok \xe2\x96\x81", "<0xC0><0x80><0xF5>"};

static void raw_bytes(const char *path) {
    ks_attribution r = r_pos(), want = r_pos();
    r.name = want.name = "bytes";
    r.token_strings = RAW_PIECES;
    r.objective = "log p('\xe9t\xe9')";
    want.token_strings = RAW_SPELLED;
    want.objective = "log p('<0xE9>t<0xE9>')";
    ks_error e = {0};
    ks_status st = ks_attribution_write(path, &r, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "token strings and an objective that are not UTF-8 are written %s", e.msg);
    check_group(path, &want, "bytes (stored <0xNN>)");
}

static void standalone(const char *dir) {
    char path[4096], s[1024];
    ks_error e = {0};
    snprintf(path, sizeof path, "%s/attr.h5", dir);
    unlink(path);
    ks_attribution a = r_pos(), b = r_heads(), c = r_patch();
    ks_status st = ks_attribution_write(path, &a, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "a new file with saliency_pos (1-D, token strings) %s", e.msg);
    st = ks_attribution_write(path, &b, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "heads (2-D layer x head, a NaN) added to it %s", e.msg);
    st = ks_attribution_write(path, &c, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "patch3d (3-D, -0.0) added to it %s", e.msg);

    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    double ver = 0;
    bool ok = f >= 0 && read_attr_str(f, "format", s, sizeof s) && !strcmp(s, KS_ATTRIBUTIONS_FORMAT);
    ok = ok && read_attr_num(f, "format_version", H5T_INTEGER, 4, &ver) && ver == 1;
    ok = ok && read_attr_str(f, "koalascope_version", s, sizeof s) && !strcmp(s, ks_version());
    ok = ok && read_attr_str(f, "created", s, sizeof s) && strlen(s) == 20;
    ok = ok && read_attr_str(f, "model_path", s, sizeof s) && !strcmp(s, MODEL);
    ok = ok && read_attr_str(f, "command_line", s, sizeof s) && !strcmp(s, CMDLINE);
    tap_ok(ok, "root attributes: format %s, format_version 1, koalascope_version, created, "
           "model_path, command_line", KS_ATTRIBUTIONS_FORMAT);
    if (f >= 0) H5Fclose(f);
    check_group(path, &a, "standalone saliency_pos");
    check_group(path, &b, "standalone heads");
    check_group(path, &c, "standalone patch3d");

    /* duplicate name: refused, file untouched */
    char copy[4200];
    snprintf(copy, sizeof copy, "%s/attr_before.h5", dir);
    ks_test_copy_file(path, copy);
    ks_error_clear(&e);
    st = ks_attribution_write(path, &a, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_ERR_ARG && strstr(e.msg, path) && strstr(e.msg, "/attributions/saliency_pos exists"),
           "the same name again without overwrite: KS_ERR_ARG (%s)", e.msg);
    tap_ok(ks_test_same_bytes(path, copy), "and the file is byte for byte as it was");

    /* overwrite: "over" written, then replaced; nothing else left behind */
    ks_attribution o = r_pos();
    o.name = "over";
    o.method = "grad_x_input";
    ks_error_clear(&e);
    st = ks_attribution_write(path, &o, MODEL, CMDLINE, false, &e);
    ks_attribution o2 = r_ig();
    o2.name = "over";
    ks_error_clear(&e);
    if (st == KS_OK) st = ks_attribution_write(path, &o2, MODEL, CMDLINE, true, &e);
    tap_ok(st == KS_OK, "overwrite replaces a result %s", e.msg);
    check_group(path, &o2, "overwritten over");
    list_results(path, s, sizeof s);
    tap_ok(!strcmp(s, "heads,over,patch3d,saliency_pos"),
           "/attributions holds heads, over, patch3d, saliency_pos and nothing else (%s)", s);
    unlink(copy);
    raw_bytes(path);
}

/* Each call must fail with want, a message naming path (and holding needle), and leave the
 * file as it was (or absent). */
static void refused(const char *path, const ks_attribution *r, bool overwrite, ks_status want,
                    const char *needle, const char *what) {
    char copy[4200];
    bool had = exists(path);
    snprintf(copy, sizeof copy, "%s.before", path);
    if (had) ks_test_copy_file(path, copy);
    ks_error e = {0};
    ks_status st = ks_attribution_write(path, r, MODEL, CMDLINE, overwrite, &e);
    bool same = had ? ks_test_same_bytes(path, copy) : !exists(path);
    tap_ok(st == want && strstr(e.msg, path) && (!needle || strstr(e.msg, needle)) && same,
           "%s: %s, file %s (%s)", what, ks_status_str(want), had ? "unchanged" : "not created",
           e.msg);
    if (had) unlink(copy);
}

static void refusals(const char *dir) {
    char path[4096], other[4096], big[300];
    snprintf(path, sizeof path, "%s/attr.h5", dir);
    ks_attribution r = r_pos();

    /* bad arguments, into an existing file and into one that does not exist */
    snprintf(other, sizeof other, "%s/never.h5", dir);
    const char *bad_names[] = {"bad/name", "", ".", "..", "a b", "é", "x~replaced"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        char what[96];
        r.name = bad_names[i];
        snprintf(what, sizeof what, "name '%s'", bad_names[i]);
        refused(path, &r, true, KS_ERR_ARG, "not valid", what);
    }
    memset(big, 'a', 256);
    big[256] = '\0';
    r.name = big;
    refused(other, &r, false, KS_ERR_ARG, "not valid", "a name of 256 bytes");
    big[255] = '\0';
    r.name = big;
    ks_error e = {0};
    ks_status st = ks_attribution_write(other, &r, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "a name of 255 bytes is accepted %s", e.msg);
    unlink(other);

    r = r_pos();
    r.name = "fresh";
    ks_attribution b = r;
    b.ndim = 0;
    refused(path, &b, false, KS_ERR_ARG, "dimensions", "ndim 0");
    b.ndim = 4;
    refused(other, &b, false, KS_ERR_ARG, "dimensions", "ndim 4");
    int64_t zero[1] = {0}, huge[2] = {65536, 32768}, neg[1] = {-3};
    b = r;
    b.shape = zero;
    refused(path, &b, false, KS_ERR_ARG, "entries", "a shape of 0");
    b.shape = neg;
    refused(path, &b, false, KS_ERR_ARG, "entries", "a negative shape");
    const char *const axes2[2] = {"layer", "position"};
    b.ndim = 2;
    b.shape = huge;
    b.axes = axes2;
    refused(path, &b, false, KS_ERR_ARG, "2^31", "65536 x 32768 = 2^31 values");
    b = r;
    b.values = NULL;
    refused(path, &b, false, KS_ERR_ARG, "values", "values NULL");
    b = r;
    b.tokens = NULL;
    refused(path, &b, false, KS_ERR_ARG, "no tokens", "tokens NULL");
    b = r;
    b.n_tokens = 0;
    refused(path, &b, false, KS_ERR_ARG, "no tokens", "0 tokens");
    b = r;
    b.method = "";
    refused(path, &b, false, KS_ERR_ARG, "method", "an empty method");
    const char *const comma[1] = {"pos,ition"};
    b = r;
    b.axes = comma;
    refused(path, &b, false, KS_ERR_ARG, "','", "an axis name with a comma");
    b = r;
    b.method = "sal\xff" "ency";
    refused(path, &b, false, KS_ERR_ARG, "method", "a method that is not UTF-8");
    const char *const axis_bad[1] = {"\xc0\x80"};
    b = r;
    b.axes = axis_bad;
    refused(path, &b, false, KS_ERR_ARG, "UTF-8", "an axis name that is not UTF-8 (overlong NUL)");
    const char *null_piece[6] = {"<s>", NULL, "a", "b", "c", "d"};
    b = r;
    b.token_strings = null_piece;
    refused(path, &b, false, KS_ERR_ARG, "token string 1 is NULL", "a NULL token string");
    b = r;
    b.extra_json = "[1, 2]";
    refused(path, &b, false, KS_ERR_ARG, "JSON object", "extra_json a JSON array");
    b.extra_json = "{\"a\": ";
    refused(other, &b, false, KS_ERR_ARG, "JSON object", "extra_json not JSON");
    b = r;
    b.steps = -1;
    refused(path, &b, false, KS_ERR_ARG, "steps", "steps -1");
    tap_ok(ks_attribution_write(NULL, &r, NULL, NULL, false, &e) == KS_ERR_ARG &&
               ks_attribution_write(path, NULL, NULL, NULL, false, &e) == KS_ERR_ARG,
           "NULL path or result: KS_ERR_ARG");

    /* files that are not ours */
    snprintf(other, sizeof other, "%s/plain.h5", dir);
    hid_t f = H5Fcreate(other, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    refused(other, &r, false, KS_ERR_FORMAT, "HDF5 superblock version 0", "an HDF5 file in the earliest format");
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    f = H5Fcreate(other, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    H5Fclose(f);
    refused(other, &r, false, KS_ERR_FORMAT, "no root attribute 'format'", "a plain HDF5 file");
    f = H5Fopen(other, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 8);
    hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "netcdf4\0");
    H5Aclose(a);
    H5Tclose(t);
    H5Sclose(sp);
    H5Fclose(f);
    refused(other, &r, false, KS_ERR_FORMAT, "'format' is 'netcdf4'", "an HDF5 file of another format");
    unlink(other);
    snprintf(other, sizeof other, "%s/text.h5", dir);
    FILE *fp = fopen(other, "w");
    fputs("{\"not\": \"hdf5\"}\n", fp);
    fclose(fp);
    refused(other, &r, false, KS_ERR_FORMAT, "not an HDF5 file", "a text file");
    unlink(other);
    snprintf(other, sizeof other, "%s/empty.h5", dir);
    fp = fopen(other, "w");
    fclose(fp);
    refused(other, &r, false, KS_ERR_FORMAT, "not an HDF5 file", "an empty file");
    unlink(other);
    ks_error_clear(&e);
    st = ks_attribution_write(dir, &r, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_ERR_IO && strstr(e.msg, dir) && strstr(e.msg, "directory"),
           "a directory: KS_ERR_IO (%s)", e.msg);
    snprintf(other, sizeof other, "%s/no/such/dir/a.h5", dir);
    refused(other, &r, false, KS_ERR_IO, "cannot create", "a file in a missing directory");

    /* ours, but newer, or with /attributions that is not a group */
    snprintf(other, sizeof other, "%s/newer.h5", dir);
    unlink(other);
    ks_error_clear(&e);
    st = ks_attribution_write(other, &r, MODEL, CMDLINE, false, &e);
    f = H5Fopen(other, H5F_ACC_RDWR, H5P_DEFAULT);
    int two = 2;
    a = f >= 0 ? H5Aopen(f, "format_version", H5P_DEFAULT) : -1;
    if (a >= 0) H5Awrite(a, H5T_NATIVE_INT, &two);
    if (a >= 0) H5Aclose(a);
    if (f >= 0) H5Fclose(f);
    r.name = "second";
    refused(other, &r, false, KS_ERR_UNSUPPORTED, "format_version 2", "format_version 2");
    unlink(other);
    r.name = "fresh";
    ks_error_clear(&e);
    st = ks_attribution_write(other, &r, MODEL, CMDLINE, false, &e);
    f = H5Fopen(other, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f >= 0) H5Ldelete(f, "attributions", H5P_DEFAULT);
    hsize_t one = 1;
    sp = H5Screate_simple(1, &one, NULL);
    hid_t d = f >= 0 ? H5Dcreate2(f, "attributions", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                                  H5P_DEFAULT) : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    if (f >= 0) H5Fclose(f);
    refused(other, &r, false, KS_ERR_FORMAT, "not a group", "/attributions a dataset");
    unlink(other);
}

/* A dump with results added reads as before: same prompts, tokens, hooks and rows. */
static void dump_same(const char *orig, const char *path) {
    ks_dump *a = NULL, *b = NULL;
    ks_error e = {0};
    ks_status s1 = ks_dump_open(orig, &a, &e), s2 = ks_dump_open(path, &b, &e);
    if (!tap_ok(s1 == KS_OK && s2 == KS_OK, "ks_dump_open still opens the dump %s", e.msg)) {
        ks_dump_close(a);
        ks_dump_close(b);
        return;
    }
    bool ok = ks_dump_complete(b) && !ks_dump_interrupted(b) &&
              ks_dump_n_prompts(a) == ks_dump_n_prompts(b) && ks_dump_n_tokens(a) == ks_dump_n_tokens(b) &&
              ks_dump_n_rows(a) == ks_dump_n_rows(b) && ks_dump_n_hooks(a) == ks_dump_n_hooks(b) &&
              ks_dump_logits_topk(a) == ks_dump_logits_topk(b);
    tap_ok(ok, "complete, %lld prompts, %lld tokens, %d hooks, as the original",
           (long long)ks_dump_n_prompts(b), (long long)ks_dump_n_tokens(b), ks_dump_n_hooks(b));
    bool same = ok;
    for (int h = 0; same && h < ks_dump_n_hooks(a); h++) {
        const ks_dump_hook *ha = ks_dump_hook_at(a, h), *hb = ks_dump_hook_at(b, h);
        same = !strcmp(ha->name, hb->name);
        for (int64_t p = 0; same && p < ks_dump_n_prompts(a); p++) {
            ks_dump_prompt pi;
            same = ks_dump_prompt_info(a, p, &pi, &e) == KS_OK;
            size_t n = ha->kind == KS_DUMP_KIND_TOKEN ? (size_t)(pi.n_rows * ha->row_elems)
                                                      : (size_t)(pi.n_attn * ha->row_elems);
            float *x = calloc(n + 1, sizeof *x), *y = calloc(n + 1, sizeof *y);
            if (ha->kind == KS_DUMP_KIND_TOKEN)
                same = same && ks_dump_read_rows(a, ha, p, p + 1, x, n, &e) == KS_OK &&
                       ks_dump_read_rows(b, hb, p, p + 1, y, n, &e) == KS_OK;
            else
                same = same && ks_dump_read_attention(a, ha, p, -1, x, n, &e) == KS_OK &&
                       ks_dump_read_attention(b, hb, p, -1, y, n, &e) == KS_OK;
            same = same && same_floats(x, y, n);
            free(x);
            free(y);
        }
    }
    tap_ok(same, "every hook of every prompt reads the same values %s", e.msg);
    ks_dump_close(a);
    ks_dump_close(b);
}

static void dumps(const char *dir) {
    char src[8192], path[4096], s[1024];
    ks_error e = {0};
    snprintf(src, sizeof src, "%s/valid.h5", cases_dir);
    snprintf(path, sizeof path, "%s/dump.h5", dir);
    tap_ok(ks_test_copy_file(src, path), "copy tests/dumps/cases/valid.h5 (a complete dump)");
    ks_attribution ig = r_ig(), heads = r_heads();
    ks_status st = ks_attribution_write(path, &ig, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "ig added to the dump %s", e.msg);
    ks_error_clear(&e);
    st = ks_attribution_write(path, &heads, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "heads added to the dump (a second result) %s", e.msg);
    check_group(path, &ig, "dump ig");
    check_group(path, &heads, "dump heads");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    tap_ok(f >= 0 && read_attr_str_cs(f, "format", s, sizeof s, false) && !strcmp(s, KS_DUMP_FORMAT) &&
               read_attr_str_cs(f, "command_line", s, sizeof s, false) && strstr(s, "koalascope record"),
           "the dump's root attributes are its own (format %s, command_line '%s')", KS_DUMP_FORMAT, s);
    if (f >= 0) H5Fclose(f);
    dump_same(src, path);
    refused(path, &ig, false, KS_ERR_ARG, "/attributions/ig exists", "a duplicate name in a dump");

    /* ks_dump_repair (what --resume runs first) leaves the results alone */
    char rep[4200];
    snprintf(rep, sizeof rep, "%s/dump_repaired.h5", dir);
    ks_test_copy_file(path, rep);
    int64_t np = -1;
    ks_error_clear(&e);
    st = ks_dump_repair(rep, &np, &e);
    list_results(rep, s, sizeof s);
    tap_ok(st == KS_OK && np == 3 && !strcmp(s, "heads,ig"),
           "ks_dump_repair accepts it (%lld prompts) and keeps /attributions (%s) %s", (long long)np,
           s, e.msg);
    dump_same(src, rep);
    unlink(rep);

    /* dumps that must not be written to */
    char bad[4200];
    snprintf(src, sizeof src, "%s/interrupted.h5", cases_dir);
    snprintf(bad, sizeof bad, "%s/interrupted.h5", dir);
    ks_test_copy_file(src, bad);
    refused(bad, &ig, false, KS_ERR_ARG, "interrupted", "an interrupted dump");
    unlink(bad);
    snprintf(src, sizeof src, "%s/tokens_missing.h5", cases_dir);
    snprintf(bad, sizeof bad, "%s/tokens_missing.h5", dir);
    ks_test_copy_file(src, bad);
    refused(bad, &ig, false, KS_ERR_FORMAT, "/tokens", "a dump the reader refuses (no /tokens)");
    unlink(bad);
    snprintf(src, sizeof src, "%s/format_version_99.h5", cases_dir);
    snprintf(bad, sizeof bad, "%s/format_version_99.h5", dir);
    ks_test_copy_file(src, bad);
    refused(bad, &ig, false, KS_ERR_UNSUPPORTED, "format_version 99", "a dump of format_version 99");
    unlink(bad);
}

/* Writes that fail half-way, after the file is open and the group half built: the file size
 * limit (RLIMIT_FSIZE, SIGXFSZ ignored) stands in for a full disk, HDF5 gets EFBIG. A new file
 * is removed again; a dump keeps no trace of the result under its name, and still opens. */
static void failed_writes(const char *dir) {
    char src[8192], path[4096], s[1024];
    struct rlimit old;
    const int64_t n = (int64_t)1 << 20; /* 4 MiB of values: well past either limit */
    float *big = calloc((size_t)n, sizeof *big);
    const int64_t shape[1] = {n};
    ks_attribution r = r_pos();
    r.name = "big";
    r.values = big;
    r.shape = shape;
    r.token_strings = NULL;
    if (!tap_ok(big && getrlimit(RLIMIT_FSIZE, &old) == 0, "a 4 MiB result, the file size limit")) {
        free(big);
        return;
    }
    signal(SIGXFSZ, SIG_IGN);

    snprintf(path, sizeof path, "%s/full_new.h5", dir);
    struct rlimit lim = {64 << 10, old.rlim_max};
    setrlimit(RLIMIT_FSIZE, &lim);
    ks_error e = {0};
    ks_status st = ks_attribution_write(path, &r, MODEL, CMDLINE, false, &e);
    setrlimit(RLIMIT_FSIZE, &old);
    tap_ok(st == KS_ERR_IO && strstr(e.msg, path) && !exists(path),
           "a new file that cannot be written: KS_ERR_IO, and the file is removed (%s)", e.msg);

    snprintf(src, sizeof src, "%s/valid.h5", cases_dir);
    snprintf(path, sizeof path, "%s/full_dump.h5", dir);
    ks_test_copy_file(src, path);
    struct stat sb;
    stat(path, &sb);
    lim.rlim_cur = (rlim_t)sb.st_size + (16 << 10);
    setrlimit(RLIMIT_FSIZE, &lim);
    ks_error_clear(&e);
    st = ks_attribution_write(path, &r, MODEL, CMDLINE, false, &e);
    setrlimit(RLIMIT_FSIZE, &old);
    tap_ok(st == KS_ERR_IO && strstr(e.msg, path), "a dump that cannot take the result: KS_ERR_IO (%s)",
           e.msg);
    list_results(path, s, sizeof s);
    tap_ok(!strstr(s, "big"), "no /attributions/big in it (/attributions: '%s')", s);
    dump_same(src, path);
    ks_attribution small = r_ig();
    ks_error_clear(&e);
    st = ks_attribution_write(path, &small, MODEL, CMDLINE, false, &e);
    tap_ok(st == KS_OK, "and a result that fits is then added to it %s", e.msg);
    check_group(path, &small, "after a failed write: ig");
    unlink(path);
    free(big);
}

static int add_mode(const char *dump, const char *name) {
    fill_values();
    ks_attribution r = r_ig();
    r.name = name;
    ks_error e = {0};
    if (ks_attribution_write(dump, &r, MODEL, "test_attr_write --add", false, &e) != KS_OK) {
        fprintf(stderr, "test_attr_write: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static void rm_dir(const char *dir) {
    static const char *const files[] = {"attr.h5", "dump.h5"};
    char p[4200];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--add")) return add_mode(argv[2], argv[3]);
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: test_attr_write [OUTDIR] | --add DUMP NAME\n");
        return 2;
    }
    ks_test_src_file("tests/dumps/cases", cases_dir, sizeof cases_dir);
    fill_values();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char tmpl[] = "/tmp/ks_test_attr_XXXXXX";
    const char *dir = argc == 2 ? argv[1] : mkdtemp(tmpl);
    if (!tap_ok(dir != NULL, "work directory (%s)", dir ? dir : strerror(errno))) return tap_done();
    standalone(dir);
    refusals(dir);
    dumps(dir);
    failed_writes(dir);
    if (argc != 2) rm_dir(dir);
    return tap_done();
}
