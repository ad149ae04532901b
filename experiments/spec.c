/* spec.c — audit spec files: JSON (jansson), validated field by field; every error names the
 * file and the field's JSON path. Unknown fields are errors (a typo must not silently fall
 * back to a default). Paths may use ${VAR} (environment) and resolve relative to the spec. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_spec.h"

#define MAX_SPEC_BYTES (16 << 20)
#define MAX_AUDITS 256
#define MAX_PATHS 4096

static ks_status bad(ks_error *err, const char *path, const char *field, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ks_error_set(err, KS_ERR_FORMAT, "%s: %s: %s", path, field, msg);
}

static bool allowed(const char *key, const char *const *keys) {
    for (; *keys; keys++)
        if (strcmp(key, *keys) == 0) return true;
    return false;
}

static ks_status check_keys(json_t *obj, const char *const *keys, const char *path,
                            const char *where, ks_error *err) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        (void)v;
        if (!allowed(k, keys)) {
            char f[200];
            snprintf(f, sizeof f, "%s%s%s", where, *where ? "." : "", k);
            return bad(err, path, f, "unknown field (see docs/AUDITS.md#spec-files)");
        }
    }
    return KS_OK;
}

/* ${VAR} from the environment; KS_SHARED_DATA defaults to ../shared/data as the tests do. */
static ks_status expand_path(const char *in, const char *dir, const char *path, const char *field,
                             char **out, ks_error *err) {
    size_t cap = strlen(in) + 1, n = 0;
    char *s = malloc(cap);
    if (!s) return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
    for (const char *p = in; *p;) {
        const char *add = p;
        size_t len = 1;
        char name[128];
        if (p[0] == '$' && p[1] == '{') {
            const char *e = strchr(p + 2, '}');
            if (!e || (size_t)(e - p - 2) >= sizeof name || e == p + 2) {
                free(s);
                return bad(err, path, field, "malformed ${VAR} in \"%s\"", in);
            }
            memcpy(name, p + 2, (size_t)(e - p - 2));
            name[e - p - 2] = 0;
            const char *v = getenv(name);
            if (!v && strcmp(name, "KS_SHARED_DATA") == 0) v = "../shared/data";
            if (!v) {
                free(s);
                return bad(err, path, field, "environment variable %s is not set", name);
            }
            add = v;
            len = strlen(v);
            p = e + 1;
        } else {
            p++;
        }
        if (n + len + 1 > cap) {
            while (n + len + 1 > cap) cap *= 2;
            char *t = realloc(s, cap);
            if (!t) {
                free(s);
                return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
            }
            s = t;
        }
        memcpy(s + n, add, len);
        n += len;
    }
    s[n] = 0;
    /* a path that starts with ${VAR} is taken as the variable gives it (relative: to the
     * working directory, as the variable means it); others relative to the spec */
    bool from_env = in[0] == '$' && in[1] == '{';
    if (s[0] != '/' && !from_env && dir && *dir) {
        size_t dl = strlen(dir);
        char *t = malloc(dl + 1 + n + 1);
        if (!t) {
            free(s);
            return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
        }
        memcpy(t, dir, dl);
        t[dl] = '/';
        memcpy(t + dl + 1, s, n + 1);
        free(s);
        s = t;
    }
    *out = s;
    return KS_OK;
}

static ks_status get_str(json_t *o, const char *key, const char *path, const char *where,
                         char **out, ks_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return KS_OK;
    char f[200];
    snprintf(f, sizeof f, "%s%s%s", where, *where ? "." : "", key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return bad(err, path, f, "expected a non-empty string");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return bad(err, path, f, "contains a NUL character");
    *out = strdup(json_string_value(v));
    return *out ? KS_OK : ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
}

static ks_status get_int(json_t *o, const char *key, const char *path, const char *where,
                         long long lo, long long hi, long long *out, ks_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return KS_OK;
    char f[200];
    snprintf(f, sizeof f, "%s%s%s", where, *where ? "." : "", key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad(err, path, f, "expected an integer in [%lld, %lld]", lo, hi);
    *out = json_integer_value(v);
    return KS_OK;
}

static ks_status get_str_list(json_t *o, const char *key, const char *path, const char *where,
                              const char *dir, bool as_path, char ***out, int *n_out,
                              ks_error *err) {
    json_t *v = json_object_get(o, key);
    char f[200];
    snprintf(f, sizeof f, "%s.%s", where, key);
    if (!v) return KS_OK;
    if (json_is_string(v)) {
        /* one path or name may be given without the list */
        json_t *a = json_array();
        if (!a || json_array_append(a, v)) {
            json_decref(a);
            return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
        }
        json_t *tmp = json_object();
        json_object_set_new(tmp, key, a);
        ks_status st = get_str_list(tmp, key, path, where, dir, as_path, out, n_out, err);
        json_decref(tmp);
        return st;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > MAX_PATHS)
        return bad(err, path, f, "expected a non-empty list of strings (at most %d)", MAX_PATHS);
    int n = (int)json_array_size(v);
    char **l = calloc((size_t)n, sizeof(char *));
    if (!l) return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
    *out = l;
    *n_out = n;
    for (int i = 0; i < n; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        char fi[240];
        snprintf(fi, sizeof fi, "%s[%d]", f, i);
        if (!json_is_string(e) || json_string_length(e) == 0 ||
            strlen(json_string_value(e)) != json_string_length(e))
            return bad(err, path, fi, "expected a non-empty string");
        if (as_path) {
            ks_status st = expand_path(json_string_value(e), dir, path, fi, &l[i], err);
            if (st) return st;
        } else if (!(l[i] = strdup(json_string_value(e)))) {
            return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
        }
    }
    return KS_OK;
}

static char *dirname_of(const char *path) {
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (!slash) return strdup("");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 2);
    if (!d) return NULL;
    if (n == 0) {
        strcpy(d, "/");
        return d;
    }
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

/* audits[i].record: the drill-down (docs/AUDITS.md#drill-down) */
static ks_status parse_record(json_t *a, const char *path, const char *where, ks_spec_audit *out,
                              ks_error *err) {
    static const char *const keys[] = {"hooks", "items", "select", "attribution", "ig_steps",
                                       "dtype", NULL};
    json_t *r = json_object_get(a, "record");
    if (!r) return KS_OK;
    char w[96];
    snprintf(w, sizeof w, "%s.record", where);
    if (!json_is_object(r)) return bad(err, path, w, "expected an object");
    ks_status st = check_keys(r, keys, path, w, err);
    if (st) return st;
    out->record = true;
    out->record_items = 10;
    out->record_attribution = true;
    out->record_ig_steps = 32;
    long long v = 10;
    if ((st = get_str(r, "hooks", path, w, &out->record_hooks, err))) return st;
    if ((st = get_int(r, "items", path, w, 1, 100000, &v, err))) return st;
    out->record_items = (int)v;
    v = 32;
    if ((st = get_int(r, "ig_steps", path, w, 1, 1024, &v, err))) return st;
    out->record_ig_steps = (int)v;
    char *sel = NULL, f[128];
    if ((st = get_str(r, "select", path, w, &sel, err))) return st;
    if (sel && strcmp(sel, "largest") && strcmp(sel, "first")) {
        free(sel);
        snprintf(f, sizeof f, "%s.select", w);
        return bad(err, path, f, "expected \"largest\" or \"first\"");
    }
    out->record_first = sel && !strcmp(sel, "first");
    free(sel);
    json_t *at = json_object_get(r, "attribution");
    if (at && !json_is_boolean(at)) {
        snprintf(f, sizeof f, "%s.attribution", w);
        return bad(err, path, f, "expected true or false");
    }
    if (at) out->record_attribution = json_is_true(at);
    if ((st = get_str(r, "dtype", path, w, &out->record_dtype, err))) return st;
    if (out->record_dtype && strcmp(out->record_dtype, "f32") && strcmp(out->record_dtype, "f16") &&
        strcmp(out->record_dtype, "bf16")) {
        snprintf(f, sizeof f, "%s.dtype", w);
        return bad(err, path, f, "expected \"f32\", \"f16\" or \"bf16\"");
    }
    if (!out->record_hooks && !out->record_attribution)
        return bad(err, path, w, "records nothing: give \"hooks\" or keep \"attribution\"");
    return KS_OK;
}

static ks_status parse_audit(json_t *a, int idx, const char *path, const char *dir,
                             ks_spec_audit *out, ks_error *err) {
    static const char *const keys[] = {"name", "kind", "data", "categories", "limit",
                                       "limit_per_file", "split", "template", "record",
                                       "max_new_tokens", NULL};
    char where[64];
    snprintf(where, sizeof where, "audits[%d]", idx);
    if (!json_is_object(a)) return bad(err, path, where, "expected an object");
    ks_status st = check_keys(a, keys, path, where, err);
    if (st) return st;
    char *kind = NULL;
    if ((st = get_str(a, "kind", path, where, &kind, err))) return st;
    if (!kind) return bad(err, path, where, "missing field \"kind\"");
    bool ok = ks_audit_kind_parse(kind, &out->kind);
    free(kind);
    if (!ok) {
        char f[80];
        snprintf(f, sizeof f, "%s.kind", where);
        return bad(err, path, f, "unknown audit kind (crows_pairs, stereoset, bbq, winobias, "
                                 "winogender, counterfactual, bold)");
    }
    if ((st = get_str(a, "name", path, where, &out->name, err))) return st;
    if (!out->name && !(out->name = strdup(ks_audit_kind_name(out->kind))))
        return ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
    for (const char *p = out->name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.')) {
            char f[80];
            snprintf(f, sizeof f, "%s.name", where);
            return bad(err, path, f, "\"%s\": use letters, digits, '_', '-' and '.' only (it "
                                     "names files and HDF5 groups)", out->name);
        }
    if ((st = get_str_list(a, "data", path, where, dir, true, &out->data, &out->n_data, err)))
        return st;
    if (!out->data) return bad(err, path, where, "missing field \"data\" (the benchmark's files)");
    if ((st = get_str_list(a, "categories", path, where, dir, false, &out->categories,
                           &out->n_categories, err)))
        return st;
    long long v = 0;
    if ((st = get_int(a, "limit", path, where, 0, 1 << 30, &v, err))) return st;
    out->limit = (int)v;
    v = 0;
    if ((st = get_int(a, "limit_per_file", path, where, 0, 1 << 30, &v, err))) return st;
    out->limit_per_file = (int)v;
    if ((st = get_str(a, "split", path, where, &out->split, err))) return st;
    if (out->split && strcmp(out->split, "test") && strcmp(out->split, "dev")) {
        char f[80];
        snprintf(f, sizeof f, "%s.split", where);
        return bad(err, path, f, "expected \"test\" or \"dev\"");
    }
    if ((st = get_str(a, "template", path, where, &out->template_name, err))) return st;
    if (out->template_name) {
        ks_chat_template t;
        ks_error e2 = {0};
        if (ks_chat_template_parse(out->template_name, &t, &e2)) {
            char f[80];
            snprintf(f, sizeof f, "%s.template", where);
            return bad(err, path, f, "%s", e2.msg);
        }
    }
    long long mnt = 32;
    if ((st = get_int(a, "max_new_tokens", path, where, 1, KS_AUDIT_NEXT_TOPK, &mnt, err)))
        return st;
    out->max_new_tokens = (int)mnt;
    return parse_record(a, path, where, out, err);
}

/* jansson's compact dump with sorted keys: a canonical form to compare specs by */
static char *canonical(json_t *root) {
    return json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
}

ks_status ks_spec_parse(const char *text, size_t len, const char *path, ks_spec *out,
                        ks_error *err) {
    static const char *const keys[] = {"$schema", "description", "model", "tokenizer", "backend",
                                       "template", "output", "seed", "n_bootstrap",
                                       "n_permutations", "ci", "threads", "ctx", "audits", NULL};
    memset(out, 0, sizeof *out);
    if (!path) path = "<spec>";
    if (len > MAX_SPEC_BYTES)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %zu bytes, more than a spec may have (%d)",
                            path, len, MAX_SPEC_BYTES);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ks_error_set(err, KS_ERR_FORMAT, "%s:%d:%d: not valid JSON: %s", path, je.line,
                            je.column, je.text);
    ks_status st = KS_OK;
    char *dir = dirname_of(path);
    out->path = strdup(path);
    out->ci = 0.95;
    out->n_bootstrap = 1000;
    out->n_permutations = 10000;
    if (!dir || !out->path) {
        st = ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
        goto done;
    }
    if (!json_is_object(root)) {
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: expected a JSON object at the top", path);
        goto done;
    }
    if ((st = check_keys(root, keys, path, "", err))) goto done;
    char *model = NULL;
    if ((st = get_str(root, "model", path, "", &model, err))) goto done;
    if (!model) {
        st = bad(err, path, "model", "missing (the model to audit)");
        goto done;
    }
    st = expand_path(model, dir, path, "model", &out->model, err);
    free(model);
    if (st) goto done;
    char *tok = NULL;
    if ((st = get_str(root, "tokenizer", path, "", &tok, err))) goto done;
    if (tok) {
        st = expand_path(tok, dir, path, "tokenizer", &out->tokenizer, err);
        free(tok);
        if (st) goto done;
    }
    if ((st = get_str(root, "backend", path, "", &out->backend, err))) goto done;
    if (out->backend && strcmp(out->backend, "cpu") && strcmp(out->backend, "cuda")) {
        st = bad(err, path, "backend", "expected \"cpu\" or \"cuda\"");
        goto done;
    }
    if ((st = get_str(root, "template", path, "", &out->template_name, err))) goto done;
    if (out->template_name) {
        ks_chat_template t;
        ks_error e2 = {0};
        if (ks_chat_template_parse(out->template_name, &t, &e2)) {
            st = bad(err, path, "template", "%s", e2.msg);
            goto done;
        }
    }
    char *output = NULL;
    if ((st = get_str(root, "output", path, "", &output, err))) goto done;
    if (output) {
        st = expand_path(output, dir, path, "output", &out->output, err);
        free(output);
        if (st) goto done;
    }
    long long v = 0;
    if ((st = get_int(root, "seed", path, "", 0, INT64_MAX, &v, err))) goto done;
    out->seed = (uint64_t)v;
    v = out->n_bootstrap;
    if ((st = get_int(root, "n_bootstrap", path, "", 0, 1000000, &v, err))) goto done;
    out->n_bootstrap = (int)v;
    v = out->n_permutations;
    if ((st = get_int(root, "n_permutations", path, "", 0, 10000000, &v, err))) goto done;
    out->n_permutations = (int)v;
    json_t *ci = json_object_get(root, "ci");
    if (ci) {
        if (!json_is_number(ci) || json_number_value(ci) <= 0 || json_number_value(ci) >= 1) {
            st = bad(err, path, "ci", "expected a number in (0, 1), e.g. 0.95");
            goto done;
        }
        out->ci = json_number_value(ci);
    }
    v = 0;
    if ((st = get_int(root, "threads", path, "", 0, 4096, &v, err))) goto done;
    out->threads = (int)v;
    v = 0;
    if ((st = get_int(root, "ctx", path, "", 0, 1 << 20, &v, err))) goto done;
    out->ctx = (int)v;
    json_t *audits = json_object_get(root, "audits");
    if (!audits) {
        st = bad(err, path, "audits", "missing (the list of audits to run)");
        goto done;
    }
    if (!json_is_array(audits) || json_array_size(audits) == 0 ||
        json_array_size(audits) > MAX_AUDITS) {
        st = bad(err, path, "audits", "expected a non-empty list of audit objects (at most %d)",
                 MAX_AUDITS);
        goto done;
    }
    out->n_audits = (int)json_array_size(audits);
    out->audits = calloc((size_t)out->n_audits, sizeof *out->audits);
    if (!out->audits) {
        out->n_audits = 0;
        st = ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
        goto done;
    }
    for (int i = 0; i < out->n_audits && !st; i++)
        st = parse_audit(json_array_get(audits, (size_t)i), i, path, dir, &out->audits[i], err);
    for (int i = 0; i < out->n_audits && !st; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(out->audits[i].name, out->audits[j].name) == 0) {
                char f[64];
                snprintf(f, sizeof f, "audits[%d].name", i);
                st = bad(err, path, f, "\"%s\" is also the name of audits[%d] (names must be "
                                       "unique)", out->audits[i].name, j);
                break;
            }
    if (!st && !(out->canonical = canonical(root)))
        st = ks_error_set(err, KS_ERR_NOMEM, "spec: out of memory");
done:
    free(dir);
    json_decref(root);
    if (st) ks_spec_free(out);
    return st;
}

ks_status ks_spec_load(const char *path, ks_spec *out, ks_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    ks_status st = KS_OK;
    while (buf) {
        if (n == cap) {
            if (cap > MAX_SPEC_BYTES) break;
            char *t = realloc(buf, cap * 2);
            if (!t) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = t;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (!buf)
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    else if (ferror(f))
        st = ks_error_set(err, KS_ERR_IO, "%s: read error", path);
    fclose(f);
    if (!st) st = ks_spec_parse(buf, n, path, out, err);
    free(buf);
    return st;
}

static void free_list(char **l, int n) {
    if (!l) return;
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

void ks_spec_free(ks_spec *s) {
    if (!s) return;
    for (int i = 0; i < s->n_audits; i++) {
        ks_spec_audit *a = &s->audits[i];
        free(a->name);
        free_list(a->data, a->n_data);
        free_list(a->categories, a->n_categories);
        free(a->split);
        free(a->record_hooks);
        free(a->record_dtype);
        free(a->template_name);
    }
    free(s->audits);
    free(s->path);
    free(s->model);
    free(s->tokenizer);
    free(s->backend);
    free(s->template_name);
    free(s->output);
    free(s->canonical);
    memset(s, 0, sizeof *s);
}
