/* data_load.c — the bias benchmarks' shipped files as ks_audit_item records (ks_audit.h;
 * what each item's texts are: docs/AUDITS.md). Every row is validated; a malformed one is an
 * error naming file, line and field, never skipped. Inputs are bounded: a line or record of
 * at most MAX_LINE bytes, at most MAX_ITEMS items, MAX_FILE bytes per file. */
#include <ctype.h>
#include <csv.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ks_audit.h"

#define MAX_LINE (1 << 20)
#define MAX_FILE ((size_t)1 << 30)
#define MAX_ITEMS (1 << 22)
#define MAX_OCCUPATIONS 4096

static const char *const kind_names[KS_AUDIT_N_KINDS] = {"crows_pairs", "stereoset", "bbq",
                                                         "winobias", "winogender"};

const char *ks_audit_kind_name(ks_audit_kind k) {
    return (unsigned)k < KS_AUDIT_N_KINDS ? kind_names[k] : "unknown";
}

bool ks_audit_kind_parse(const char *name, ks_audit_kind *out) {
    for (int k = 0; k < KS_AUDIT_N_KINDS; k++)
        if (name && strcmp(name, kind_names[k]) == 0) {
            *out = (ks_audit_kind)k;
            return true;
        }
    return false;
}

/* ------------------------------------------------------------------ helpers */

typedef struct {
    ks_audit_items *out;
    int cap;
    const ks_audit_load_options *o;
    int kept_in_file; /* items of the current file kept so far */
    bool file_full;   /* limit_per_file reached for the current file */
} sink;

/* valid UTF-8 without NUL bytes (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) */
static bool utf8_ok(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    while (p < e) {
        unsigned c = *p;
        if (c == 0) return false;
        if (c < 0x80) {
            p++;
            continue;
        }
        int k = (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (k < 0 || e - p < k + 1) return false;
        unsigned v = k == 1 ? c & 0x1f : k == 2 ? c & 0x0f : c & 0x07;
        for (int i = 1; i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
            v = (v << 6) | (p[i] & 0x3f);
        }
        if ((k == 1 && v < 0x80) || (k == 2 && v < 0x800) || (k == 3 && v < 0x10000) ||
            v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            return false;
        p += k + 1;
    }
    return true;
}

static char *cat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

static void item_clear(ks_audit_item *x) {
    free(x->id);
    free(x->category);
    free(x->group);
    free(x->file);
    for (int k = 0; k < KS_AUDIT_MAX_OPTIONS; k++) {
        free(x->options[k].prompt);
        free(x->options[k].text);
    }
    memset(x, 0, sizeof *x);
}

static bool category_wanted(const ks_audit_load_options *o, const char *cat) {
    if (!o || !o->categories || o->n_categories <= 0) return true;
    for (int i = 0; i < o->n_categories; i++)
        if (o->categories[i] && strcmp(o->categories[i], cat ? cat : "") == 0) return true;
    return false;
}

/* Takes ownership of *x (cleared either way). Applies the category filter and the per-file
 * limit. */
static ks_status keep(sink *s, ks_audit_item *x, ks_error *err) {
    if (!x->id || !x->category || !x->group || !x->file) {
        item_clear(x);
        return ks_error_set(err, KS_ERR_NOMEM, "audit data: out of memory");
    }
    for (int k = 0; k < x->n_options; k++)
        if (!x->options[k].text) {
            item_clear(x);
            return ks_error_set(err, KS_ERR_NOMEM, "audit data: out of memory");
        }
    if (!category_wanted(s->o, x->category) || s->file_full) {
        item_clear(x);
        return KS_OK;
    }
    if (s->out->n >= MAX_ITEMS) {
        ks_status st = ks_error_set(err, KS_ERR_FORMAT, "%s: more than %d items", x->file,
                                    MAX_ITEMS);
        item_clear(x);
        return st;
    }
    if (s->out->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 256;
        ks_audit_item *p = realloc(s->out->items, (size_t)cap * sizeof *p);
        if (!p) {
            item_clear(x);
            return ks_error_set(err, KS_ERR_NOMEM, "audit data: out of memory");
        }
        s->out->items = p;
        s->cap = cap;
    }
    s->out->items[s->out->n++] = *x;
    memset(x, 0, sizeof *x);
    s->kept_in_file++;
    if (s->o && s->o->limit_per_file > 0 && s->kept_in_file >= s->o->limit_per_file)
        s->file_full = true;
    return KS_OK;
}

static ks_audit_item new_item(const char *file, long line) {
    ks_audit_item x = {0};
    x.file = strdup(file);
    x.line = line;
    x.gold = x.biased = x.unknown = x.pair = -1;
    x.value = NAN;
    return x;
}

static ks_status read_file(const char *path, char **out, size_t *len, ks_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ks_error_set(err, KS_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size > MAX_FILE) {
        fclose(f);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %lld bytes, more than an audit data file "
                            "may have (%zu)", path, (long long)st.st_size, MAX_FILE);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t r = fread(b, 1, n, f);
    fclose(f);
    if (r != n) {
        free(b);
        return ks_error_set(err, KS_ERR_IO, "%s: read error", path);
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return KS_OK;
}

static ks_status bad(ks_error *err, const char *file, long line, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ks_error_set(err, KS_ERR_FORMAT, "%s:%ld: %s", file, line, msg);
}

/* A JSON string member, non-empty, valid UTF-8 (jansson checks UTF-8 and rejects NUL by
 * default); *out borrowed. */
static ks_status jstr(json_t *o, const char *key, const char *file, long line, const char **out,
                      ks_error *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return bad(err, file, line, "field '%s' is missing", key);
    if (!json_is_string(v)) return bad(err, file, line, "field '%s' is not a string", key);
    if (json_string_length(v) == 0) return bad(err, file, line, "field '%s' is empty", key);
    *out = json_string_value(v);
    return KS_OK;
}

/* Lines of a text (split on \n, \r stripped), calling fn(line, len, lineno) for each. */
typedef ks_status (*line_fn)(const char *s, size_t n, long lineno, void *user, ks_error *err);

static ks_status each_line(const char *path, const char *text, size_t len, line_fn fn, void *user,
                           ks_error *err) {
    long ln = 0;
    for (size_t i = 0; i <= len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - text) : len;
        ln++;
        size_t n = e - i;
        if (n > MAX_LINE) return bad(err, path, ln, "line longer than %d bytes", MAX_LINE);
        while (n && (text[i + n - 1] == '\r')) n--;
        ks_status st = fn(text + i, n, ln, user, err);
        if (st) return st;
        if (!nl) break;
        i = e + 1;
    }
    return KS_OK;
}

/* ------------------------------------------------------------------ CrowS-Pairs (CSV) */

enum { CP_ID, CP_MORE, CP_LESS, CP_DIR, CP_TYPE, CP_N };
static const char *const cp_names[CP_N] = {"", "sent_more", "sent_less", "stereo_antistereo",
                                           "bias_type"};

typedef struct {
    const char *path;
    sink *s;
    long line;        /* line being fed */
    long rec_line;    /* line where the current record began */
    int row;          /* 0 = header */
    int col, n_header;
    int map[64];      /* header column -> CP_* or -1 */
    char *cell[CP_N];
    bool seen[CP_N];
    ks_status st;
    ks_error *err;
} crows_state;

static void cp_field(void *data, size_t len, void *user) {
    crows_state *c = user;
    if (c->st) return;
    if (c->col == 0) c->rec_line = c->line;
    const char *f = data ? data : "";
    if (len > MAX_LINE) {
        c->st = bad(c->err, c->path, c->rec_line, "field %d longer than %d bytes", c->col + 1,
                    MAX_LINE);
        return;
    }
    if (!utf8_ok(f, len)) {
        c->st = bad(c->err, c->path, c->rec_line, "field %d is not valid UTF-8 (or holds a NUL)",
                    c->col + 1);
        return;
    }
    if (c->col >= 64) {
        c->st = bad(c->err, c->path, c->rec_line, "more than 64 fields");
        return;
    }
    if (c->row == 0) {
        int k = -1;
        for (int i = 0; i < CP_N; i++)
            if (len == strlen(cp_names[i]) && memcmp(f, cp_names[i], len) == 0) k = i;
        if (k >= 0 && c->seen[k]) {
            c->st = bad(c->err, c->path, 1, "column '%s' appears twice", cp_names[k]);
            return;
        }
        if (k >= 0) c->seen[k] = true;
        c->map[c->col++] = k;
        return;
    }
    if (c->col >= c->n_header) {
        c->st = bad(c->err, c->path, c->rec_line, "more fields than the header's %d", c->n_header);
        return;
    }
    int k = c->map[c->col++];
    if (k < 0) return;
    free(c->cell[k]);
    c->cell[k] = strndup(f, len);
    if (!c->cell[k]) c->st = ks_error_set(c->err, KS_ERR_NOMEM, "audit data: out of memory");
}

static void cp_row(int term, void *user) {
    (void)term;
    crows_state *c = user;
    if (c->st) return;
    if (c->row == 0) {
        c->n_header = c->col;
        for (int k = 0; k < CP_N; k++)
            if (!c->seen[k]) {
                c->st = bad(c->err, c->path, 1, "the header has no column '%s' (expected the "
                            "CrowS-Pairs columns: an unnamed id, sent_more, sent_less, "
                            "stereo_antistereo, bias_type, ...)", cp_names[k]);
                return;
            }
        c->row++;
        c->col = 0;
        return;
    }
    long ln = c->rec_line;
    if (c->col != c->n_header) {
        c->st = bad(c->err, c->path, ln, "%d fields, the header has %d", c->col, c->n_header);
        goto done;
    }
    for (int k = 0; k < CP_N; k++)
        if (!c->cell[k] || !*c->cell[k]) {
            c->st = bad(c->err, c->path, ln, "field '%s' is empty", k == CP_ID ? "(id)" : cp_names[k]);
            goto done;
        }
    const char *dir = c->cell[CP_DIR];
    if (strcmp(dir, "stereo") && strcmp(dir, "antistereo")) {
        c->st = bad(c->err, c->path, ln, "field 'stereo_antistereo' is '%.40s' (expected stereo "
                    "or antistereo)", dir);
        goto done;
    }
    ks_audit_item x = new_item(c->path, ln);
    x.id = c->cell[CP_ID];
    x.category = c->cell[CP_TYPE];
    x.group = strdup(dir);
    x.flag = strcmp(dir, "stereo") == 0;
    x.n_options = 2;
    x.options[0].text = c->cell[CP_MORE];
    x.options[1].text = c->cell[CP_LESS];
    c->cell[CP_ID] = c->cell[CP_TYPE] = c->cell[CP_MORE] = c->cell[CP_LESS] = NULL;
    c->st = keep(c->s, &x, c->err);
done:
    for (int k = 0; k < CP_N; k++) {
        free(c->cell[k]);
        c->cell[k] = NULL;
    }
    c->row++;
    c->col = 0;
}

static ks_status load_crows(const char *path, sink *s, ks_error *err) {
    char *text = NULL;
    size_t len = 0;
    ks_status st = read_file(path, &text, &len, err);
    if (st) return st;
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL)) {
        free(text);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    csv_set_blk_size(&p, 4096);
    crows_state c = {.path = path, .s = s, .err = err, .line = 1, .rec_line = 1};
    size_t i = 0;
    /* feed line by line so that a record's first line is known */
    while (i < len && !c.st && !s->file_full) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - text) + 1 : len;
        if (csv_parse(&p, text + i, e - i, cp_field, cp_row, &c) != e - i && !c.st)
            c.st = bad(err, path, c.line, "malformed CSV: %s", csv_strerror(csv_error(&p)));
        i = e;
        c.line++;
        if (c.rec_line + 10000 < c.line && !c.st && c.col > 0)
            c.st = bad(err, path, c.rec_line, "a record longer than 10000 lines (an unclosed "
                       "quote?)");
    }
    if (!c.st && !s->file_full && csv_fini(&p, cp_field, cp_row, &c) != 0 && !c.st)
        c.st = bad(err, path, c.rec_line, "malformed CSV at the end: %s (an unclosed quote?)",
                   csv_strerror(csv_error(&p)));
    if (!c.st && c.row == 0) c.st = bad(err, path, 1, "empty file (no header)");
    for (int k = 0; k < CP_N; k++) free(c.cell[k]);
    csv_free(&p);
    free(text);
    return c.st;
}

/* ------------------------------------------------------------------ StereoSet (JSON) */

static const char *const ss_labels[3] = {"stereotype", "anti-stereotype", "unrelated"};

static int ss_label(const char *l) {
    for (int k = 0; k < 3; k++)
        if (strcmp(l, ss_labels[k]) == 0) return k;
    return -1;
}

/* 1-based lines of the top-level array's elements (their first character) */
static long *element_lines(const char *t, size_t n, size_t *count) {
    size_t cap = 256, k = 0;
    long *v = malloc(cap * sizeof(long));
    if (!v) return NULL;
    long line = 1;
    int depth = 0;
    bool in_str = false, esc = false, want = false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (c == '\n') line++;
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (want && depth == 1 && !isspace((unsigned char)c) && c != ',' && c != ']') {
            if (k == cap) {
                cap *= 2;
                long *p = realloc(v, cap * sizeof(long));
                if (!p) {
                    free(v);
                    return NULL;
                }
                v = p;
            }
            v[k++] = line;
            want = false;
        }
        if (c == '"') in_str = true;
        else if (c == '[' || c == '{') {
            depth++;
            if (depth == 1) want = true;
        } else if (c == ']' || c == '}')
            depth--;
        else if (c == ',' && depth == 1)
            want = true;
    }
    *count = k;
    return v;
}

static ks_status load_stereoset(const char *path, sink *s, ks_error *err) {
    char *text = NULL;
    size_t len = 0;
    ks_status st = read_file(path, &text, &len, err);
    if (st) return st;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    size_t n_lines = 0;
    long *lines = root ? element_lines(text, len, &n_lines) : NULL;
    free(text);
    if (!root) return bad(err, path, je.line, "not valid JSON: %s", je.text);
    if (!json_is_array(root)) {
        json_decref(root);
        free(lines);
        return bad(err, path, 1, "expected a JSON array of StereoSet items");
    }
    if (!lines || n_lines != json_array_size(root)) {
        json_decref(root);
        free(lines);
        return ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t e = 0; e < json_array_size(root) && !st && !s->file_full; e++) {
        json_t *it = json_array_get(root, e);
        long ln = lines[e];
        if (!json_is_object(it)) {
            st = bad(err, path, ln, "item %zu is not an object", e);
            break;
        }
        const char *id, *target, *btype, *context;
        if ((st = jstr(it, "id", path, ln, &id, err)) ||
            (st = jstr(it, "target", path, ln, &target, err)) ||
            (st = jstr(it, "bias_type", path, ln, &btype, err)) ||
            (st = jstr(it, "context", path, ln, &context, err)))
            break;
        const char *sent[3] = {0};
        json_t *ss = json_object_get(it, "sentences"), *dd = json_object_get(it, "data");
        if (!ss && !dd) {
            st = bad(err, path, ln, "item %s: neither 'sentences' nor 'data'", id);
            break;
        }
        if (ss) {
            if (!json_is_array(ss) || json_array_size(ss) != 3) {
                st = bad(err, path, ln, "item %s: field 'sentences' is not a list of 3", id);
                break;
            }
            for (size_t j = 0; j < 3 && !st; j++) {
                json_t *x = json_array_get(ss, j);
                const char *sen, *lab;
                if (!json_is_object(x)) {
                    st = bad(err, path, ln, "item %s: sentences[%zu] is not an object", id, j);
                    break;
                }
                if ((st = jstr(x, "sentence", path, ln, &sen, err)) ||
                    (st = jstr(x, "gold_label", path, ln, &lab, err)))
                    break;
                int k = ss_label(lab);
                if (k < 0 || sent[k]) {
                    st = bad(err, path, ln, "item %s: sentences[%zu].gold_label '%.40s' (each of "
                             "stereotype, anti-stereotype, unrelated exactly once)", id, j, lab);
                    break;
                }
                sent[k] = sen;
            }
            if (st) break;
        }
        if (dd) {
            if (!json_is_object(dd) || json_object_size(dd) != 3) {
                st = bad(err, path, ln, "item %s: field 'data' is not an object of 3 labels", id);
                break;
            }
            for (int k = 0; k < 3 && !st; k++) {
                json_t *x = json_object_get(dd, ss_labels[k]);
                const char *sen;
                if (!json_is_object(x)) {
                    st = bad(err, path, ln, "item %s: data.%s is missing or not an object", id,
                             ss_labels[k]);
                    break;
                }
                if ((st = jstr(x, "sentence", path, ln, &sen, err))) break;
                if (sent[k] && ss && strcmp(sent[k], sen) != 0) {
                    st = bad(err, path, ln, "item %s: data.%s.sentence differs from the %s "
                             "sentence of 'sentences'", id, ss_labels[k], ss_labels[k]);
                    break;
                }
                sent[k] = sen;
            }
            if (st) break;
        }
        ks_audit_item x = new_item(path, ln);
        x.id = strdup(id);
        x.category = strdup(btype);
        x.group = strdup(target);
        x.n_options = 3;
        for (int k = 0; k < 3; k++) x.options[k].text = strdup(sent[k]);
        st = keep(s, &x, err);
    }
    free(lines);
    json_decref(root);
    return st;
}

/* ------------------------------------------------------------------ BBQ (JSONL) */

static bool in_groups(json_t *groups, const char *v) {
    for (size_t i = 0; i < json_array_size(groups); i++) {
        const char *g = json_string_value(json_array_get(groups, i));
        if (g && strcasecmp(g, v) == 0) return true;
    }
    return false;
}

typedef struct {
    const char *path;
    sink *s;
} bbq_state;

static ks_status bbq_line(const char *t, size_t n, long ln, void *user, ks_error *err) {
    bbq_state *b = user;
    const char *path = b->path;
    if (b->s->file_full) return KS_OK;
    size_t k0 = 0;
    while (k0 < n && isspace((unsigned char)t[k0])) k0++;
    if (k0 == n) return KS_OK;
    json_error_t je;
    json_t *r = json_loadb(t, n, JSON_REJECT_DUPLICATES, &je);
    if (!r) return bad(err, path, ln, "not valid JSON: %s", je.text);
    ks_status st = KS_OK;
    ks_audit_item x = {0};
    const char *pol, *cond, *cat, *context, *question, *ans[3];
    if (!json_is_object(r)) {
        st = bad(err, path, ln, "not a JSON object");
        goto out;
    }
    json_t *eid = json_object_get(r, "example_id");
    if (!json_is_integer(eid)) {
        st = bad(err, path, ln, "field 'example_id' is %s", eid ? "not an integer" : "missing");
        goto out;
    }
    if ((st = jstr(r, "question_polarity", path, ln, &pol, err)) ||
        (st = jstr(r, "context_condition", path, ln, &cond, err)) ||
        (st = jstr(r, "category", path, ln, &cat, err)) ||
        (st = jstr(r, "context", path, ln, &context, err)) ||
        (st = jstr(r, "question", path, ln, &question, err)) ||
        (st = jstr(r, "ans0", path, ln, &ans[0], err)) ||
        (st = jstr(r, "ans1", path, ln, &ans[1], err)) ||
        (st = jstr(r, "ans2", path, ln, &ans[2], err)))
        goto out;
    if (strcmp(pol, "neg") && strcmp(pol, "nonneg")) {
        st = bad(err, path, ln, "field 'question_polarity' is '%.40s' (expected neg or nonneg)", pol);
        goto out;
    }
    if (strcmp(cond, "ambig") && strcmp(cond, "disambig")) {
        st = bad(err, path, ln, "field 'context_condition' is '%.40s' (expected ambig or "
                 "disambig)", cond);
        goto out;
    }
    json_t *label = json_object_get(r, "label");
    if (!json_is_integer(label) || json_integer_value(label) < 0 || json_integer_value(label) > 2) {
        st = bad(err, path, ln, "field 'label' is not 0, 1 or 2");
        goto out;
    }
    json_t *meta = json_object_get(r, "additional_metadata");
    json_t *groups = json_is_object(meta) ? json_object_get(meta, "stereotyped_groups") : NULL;
    if (!json_is_array(groups) || json_array_size(groups) == 0) {
        st = bad(err, path, ln, "field 'additional_metadata.stereotyped_groups' is missing or "
                 "not a non-empty list");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(groups); i++)
        if (!json_is_string(json_array_get(groups, i))) {
            st = bad(err, path, ln, "field 'additional_metadata.stereotyped_groups[%zu]' is not a "
                     "string", i);
            goto out;
        }
    json_t *info = json_object_get(r, "answer_info");
    if (!json_is_object(info)) {
        st = bad(err, path, ln, "field 'answer_info' is missing or not an object");
        goto out;
    }
    int target = -1, unknown = -1, other = -1, n_t = 0, n_u = 0, n_o = 0;
    for (int k = 0; k < 3; k++) {
        char key[8];
        snprintf(key, sizeof key, "ans%d", k);
        json_t *a = json_object_get(info, key);
        if (!json_is_array(a) || json_array_size(a) < 2) {
            st = bad(err, path, ln, "field 'answer_info.%s' is not a list of at least 2 strings",
                     key);
            goto out;
        }
        bool is_t = false;
        for (size_t i = 0; i < json_array_size(a); i++) {
            const char *v = json_string_value(json_array_get(a, i));
            if (!v) {
                st = bad(err, path, ln, "field 'answer_info.%s[%zu]' is not a string", key, i);
                goto out;
            }
            if (in_groups(groups, v)) is_t = true;
        }
        bool is_u = strcmp(json_string_value(json_array_get(a, 1)), "unknown") == 0;
        if (is_u) unknown = k, n_u++;
        else if (is_t) target = k, n_t++;
        else other = k, n_o++;
    }
    if (n_t != 1 || n_u != 1 || n_o != 1) {
        st = bad(err, path, ln, "field 'answer_info': %d answers of a stereotyped group, %d "
                 "unknown, %d other (expected one of each)", n_t, n_u, n_o);
        goto out;
    }
    x = new_item(path, ln);
    char idb[32];
    snprintf(idb, sizeof idb, "%lld", (long long)json_integer_value(eid));
    x.id = strdup(idb);
    x.category = strdup(cat);
    x.group = strdup(cond);
    x.gold = (int)json_integer_value(label);
    x.unknown = unknown;
    x.biased = strcmp(pol, "neg") == 0 ? target : other;
    x.flag = strcmp(cond, "ambig") == 0;
    x.n_options = 3;
    char *prompt = cat3(context, "\n", question);
    char *p2 = prompt ? cat3(prompt, "\nAnswer:", "") : NULL;
    free(prompt);
    for (int k = 0; k < 3; k++) {
        x.options[k].prompt = p2 ? strdup(p2) : NULL;
        x.options[k].text = cat3(" ", ans[k], "");
        if (!x.options[k].prompt) x.options[k].text = (free(x.options[k].text), NULL);
    }
    free(p2);
    st = keep(b->s, &x, err);
out:
    item_clear(&x);
    json_decref(r);
    return st;
}

static ks_status load_bbq(const char *path, sink *s, ks_error *err) {
    char *text = NULL;
    size_t len = 0;
    ks_status st = read_file(path, &text, &len, err);
    if (st) return st;
    bbq_state b = {path, s};
    st = each_line(path, text, len, bbq_line, &b, err);
    free(text);
    return st;
}

/* ------------------------------------------------------------------ WinoBias */

typedef struct {
    char **occ; /* longest first */
    int n;
} occupations;

static void occ_free(occupations *o) {
    for (int i = 0; i < o->n; i++) free(o->occ[i]);
    free(o->occ);
    memset(o, 0, sizeof *o);
}

static int cmp_occ(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    size_t lx = strlen(x), ly = strlen(y);
    if (lx != ly) return lx > ly ? -1 : 1;
    return strcmp(x, y);
}

static ks_status occ_line(const char *t, size_t n, long ln, void *user, ks_error *err) {
    occupations *o = user;
    (void)ln;
    while (n && isspace((unsigned char)*t)) t++, n--;
    while (n && isspace((unsigned char)t[n - 1])) n--;
    if (!n) return KS_OK;
    if (o->n >= MAX_OCCUPATIONS)
        return ks_error_set(err, KS_ERR_FORMAT, "more than %d occupations", MAX_OCCUPATIONS);
    char *w = strndup(t, n);
    char **p = realloc(o->occ, (size_t)(o->n + 1) * sizeof *p);
    if (!w || !p) {
        free(w);
        if (p) o->occ = p;
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    o->occ = p;
    o->occ[o->n++] = w;
    return KS_OK;
}

static ks_status load_occupations(const char *dir, occupations *o, ks_error *err) {
    static const char *const names[2] = {"male_occupations.txt", "female_occupations.txt"};
    for (int i = 0; i < 2; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        char *text = NULL;
        size_t len = 0;
        ks_status st = read_file(p, &text, &len, err);
        if (st) return st;
        st = each_line(p, text, len, occ_line, o, err);
        free(text);
        if (st) return st;
    }
    if (o->n == 0)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: the occupation lists are empty", dir);
    qsort(o->occ, (size_t)o->n, sizeof(char *), cmp_occ);
    int k = 0; /* unique */
    for (int i = 0; i < o->n; i++) {
        if (k > 0 && strcmp(o->occ[k - 1], o->occ[i]) == 0) {
            free(o->occ[i]);
            continue;
        }
        o->occ[k++] = o->occ[i];
    }
    o->n = k;
    return KS_OK;
}

static bool word_char(char c) { return isalnum((unsigned char)c) || c == '_' || (c & 0x80); }

/* "[Tt]he <occupation>" starting at s[i] with a word boundary before it and after the
 * occupation (longest first); the occupation index, -1 when none. */
static int occ_at(const occupations *o, const char *s, size_t i, size_t n, size_t *end) {
    if (i > 0 && word_char(s[i - 1])) return -1;
    if (n - i < 4 || (s[i] != 't' && s[i] != 'T') || strncmp(s + i + 1, "he ", 3) != 0) return -1;
    size_t j = i + 4;
    for (int k = 0; k < o->n; k++) {
        size_t l = strlen(o->occ[k]);
        if (n - j >= l && memcmp(s + j, o->occ[k], l) == 0 && (j + l == n || !word_char(s[j + l]))) {
            *end = j + l;
            return k;
        }
    }
    return -1;
}

typedef struct {
    const char *path, *base;
    sink *s;
    const occupations *occ;
    int pro;
    const char *type;
} wb_state;

static ks_status wb_line(const char *t, size_t n, long ln, void *user, ks_error *err) {
    wb_state *w = user;
    const char *path = w->path;
    if (w->s->file_full) return KS_OK;
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\r' || t[n - 1] == '\n')) n--;
    if (!n) return KS_OK;
    if (!utf8_ok(t, n)) return bad(err, path, ln, "not valid UTF-8 (or holds a NUL)");
    size_t d = 0;
    while (d < n && isdigit((unsigned char)t[d])) d++;
    if (d == 0 || d >= n || t[d] != ' ')
        return bad(err, path, ln, "does not start with a line number and a space");
    const char *b = t + d + 1;
    size_t bn = n - d - 1;
    /* the two bracketed spans */
    size_t sp[2][2];
    int ns = 0;
    for (size_t i = 0; i < bn; i++) {
        if (b[i] == '[') {
            const char *e = memchr(b + i + 1, ']', bn - i - 1);
            if (!e) return bad(err, path, ln, "a '[' without its ']'");
            if (ns < 2) {
                sp[ns][0] = i + 1;
                sp[ns][1] = (size_t)(e - b);
            }
            ns++;
            i = (size_t)(e - b);
        } else if (b[i] == ']') {
            return bad(err, path, ln, "a ']' without its '['");
        }
    }
    if (ns != 2) return bad(err, path, ln, "%d bracketed spans (expected the referent and the "
                            "pronoun)", ns);
    size_t end = 0;
    int ref = occ_at(w->occ, b, sp[0][0], sp[0][1], &end);
    if (ref < 0 || end != sp[0][1])
        return bad(err, path, ln, "the first bracketed span '%.*s' is not \"the <occupation>\" of "
                   "the occupation lists", (int)(sp[0][1] - sp[0][0] > 60 ? 60 : sp[0][1] - sp[0][0]),
                   b + sp[0][0]);
    if (sp[1][1] == sp[1][0]) return bad(err, path, ln, "the pronoun span is empty");
    char *pron = strndup(b + sp[1][0], sp[1][1] - sp[1][0]);
    char *sent = malloc(bn + 1);
    if (!pron || !sent) {
        free(pron);
        free(sent);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < bn; i++)
        if (b[i] != '[' && b[i] != ']') sent[m++] = b[i];
    sent[m] = 0;
    int cand[2], nc = 0;
    for (size_t i = 0; i < m;) {
        size_t e2;
        int k = occ_at(w->occ, sent, i, m, &e2);
        if (k >= 0) {
            bool seen = false;
            for (int c = 0; c < nc; c++) seen |= cand[c] == k;
            if (!seen) {
                if (nc == 2) {
                    nc = 3;
                    break;
                }
                cand[nc++] = k;
            }
            i = e2;
        } else {
            i++;
        }
    }
    if (nc != 2) {
        free(pron);
        free(sent);
        return bad(err, path, ln, "%d occupations of the lists in the sentence (expected 2)", nc);
    }
    ks_audit_item x = new_item(path, ln);
    char idb[600];
    snprintf(idb, sizeof idb, "%s:%ld", w->base, ln);
    x.id = strdup(idb);
    x.category = strdup(w->type);
    x.group = strdup(w->occ->occ[ref]);
    x.flag = w->pro;
    x.gold = cand[0] == ref ? 0 : cand[1] == ref ? 1 : -1;
    x.n_options = 2;
    char *q = cat3(sent, "\nIn the sentence above, who does \"", pron);
    char *prompt = q ? cat3(q, "\" refer to?\nAnswer:", "") : NULL;
    free(q);
    for (int k = 0; k < 2; k++) {
        x.options[k].prompt = prompt ? strdup(prompt) : NULL;
        x.options[k].text = x.options[k].prompt ? cat3(" the ", w->occ->occ[cand[k]], "") : NULL;
    }
    free(prompt);
    free(pron);
    free(sent);
    if (x.gold < 0) {
        item_clear(&x);
        return bad(err, path, ln, "the referent is not one of the sentence's occupations");
    }
    return keep(w->s, &x, err);
}

static char *dir_of(const char *path) {
    const char *sl = strrchr(path, '/');
    if (!sl) return strdup(".");
    if (sl == path) return strdup("/");
    return strndup(path, (size_t)(sl - path));
}

static ks_status load_winobias_file(const char *path, sink *s, ks_error *err) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int pro;
    char type[8];
    if (strncmp(base, "pro_stereotyped_", 16) == 0)
        pro = 1;
    else if (strncmp(base, "anti_stereotyped_", 17) == 0)
        pro = 0;
    else
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a WinoBias file name "
                            "({pro,anti}_stereotyped_type{1,2}.txt.{test,dev})", path);
    const char *tp = base + (pro ? 16 : 17);
    if (strncmp(tp, "type1.txt.", 10) && strncmp(tp, "type2.txt.", 10))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: not a WinoBias file name "
                            "({pro,anti}_stereotyped_type{1,2}.txt.{test,dev})", path);
    snprintf(type, sizeof type, "type%c", tp[4]);
    char *dir = dir_of(path);
    occupations occ = {0};
    ks_status st = dir ? load_occupations(dir, &occ, err)
                       : ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    free(dir);
    char *text = NULL;
    size_t len = 0;
    if (!st) st = read_file(path, &text, &len, err);
    if (!st) {
        wb_state w = {path, base, s, &occ, pro, type};
        st = each_line(path, text, len, wb_line, &w, err);
    }
    free(text);
    occ_free(&occ);
    return st;
}

/* ------------------------------------------------------------------ Winogender */

typedef struct {
    char **occ;
    double *pct;
    int n;
} stats;

typedef struct {
    const char *path;
    stats *st;
    int col_occ, col_pct;
} stats_state;

static ks_status split_tabs(const char *t, size_t n, char **f, int max, int *nf) {
    int k = 0;
    size_t s = 0;
    for (size_t i = 0; i <= n; i++)
        if (i == n || t[i] == '\t') {
            if (k == max) {
                for (int j = 0; j < k; j++) free(f[j]);
                *nf = 0;
                return KS_ERR_FORMAT;
            }
            f[k] = strndup(t + s, i - s);
            if (!f[k]) {
                for (int j = 0; j < k; j++) free(f[j]);
                *nf = 0;
                return KS_ERR_NOMEM;
            }
            k++;
            s = i + 1;
        }
    *nf = k;
    return KS_OK;
}

static ks_status stats_line(const char *t, size_t n, long ln, void *user, ks_error *err) {
    stats_state *s = user;
    if (!n && ln > 1) return KS_OK;
    char *f[16];
    int nf = 0;
    ks_status st = split_tabs(t, n, f, 16, &nf);
    if (st) return bad(err, s->path, ln, "more than 16 columns");
    if (ln == 1) {
        for (int i = 0; i < nf; i++) {
            if (strcmp(f[i], "occupation") == 0) s->col_occ = i;
            if (strcmp(f[i], "bls_pct_female") == 0) s->col_pct = i;
        }
        if (s->col_occ < 0 || s->col_pct < 0)
            st = bad(err, s->path, 1, "the header has no 'occupation' or no 'bls_pct_female'");
    } else if (nf <= s->col_occ || nf <= s->col_pct) {
        st = bad(err, s->path, ln, "%d fields: no 'occupation' or 'bls_pct_female'", nf);
    } else {
        char *e = NULL;
        double v = strtod(f[s->col_pct], &e);
        if (!*f[s->col_occ] || e == f[s->col_pct] || *e || !isfinite(v))
            st = bad(err, s->path, ln, "field 'bls_pct_female' is '%.30s' (expected a number)",
                     f[s->col_pct]);
        else if (s->st->n >= MAX_OCCUPATIONS)
            st = bad(err, s->path, ln, "more than %d occupations", MAX_OCCUPATIONS);
        else {
            char **o = realloc(s->st->occ, (size_t)(s->st->n + 1) * sizeof *o);
            if (o) s->st->occ = o;
            double *p = realloc(s->st->pct, (size_t)(s->st->n + 1) * sizeof *p);
            if (p) s->st->pct = p;
            if (!o || !p) {
                st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            } else {
                s->st->occ[s->st->n] = f[s->col_occ];
                f[s->col_occ] = NULL;
                s->st->pct[s->st->n++] = v;
            }
        }
    }
    for (int i = 0; i < nf; i++) free(f[i]);
    return st;
}

static const struct {
    const char *w, *g;
} pronouns[] = {{"he", "male"},      {"his", "male"},       {"him", "male"},
                {"she", "female"},   {"her", "female"},     {"hers", "female"},
                {"they", "neutral"}, {"their", "neutral"},  {"them", "neutral"},
                {"theirs", "neutral"}};

typedef struct {
    const char *path, *base;
    sink *s;
    const stats *st;
} wg_state;

static ks_status wg_line(const char *t, size_t n, long ln, void *user, ks_error *err) {
    wg_state *w = user;
    const char *path = w->path;
    if (ln == 1) {
        if (!(n == 15 && memcmp(t, "sentid\tsentence", 15) == 0))
            return bad(err, path, 1, "the header is not 'sentid<TAB>sentence'");
        return KS_OK;
    }
    if (!n || w->s->file_full) return KS_OK;
    if (!utf8_ok(t, n)) return bad(err, path, ln, "not valid UTF-8 (or holds a NUL)");
    char *f[3];
    int nf = 0;
    if (split_tabs(t, n, f, 2, &nf) || nf != 2) {
        for (int i = 0; i < nf && i < 2; i++) free(f[i]);
        return bad(err, path, ln, "expected 2 tab-separated fields (sentid, sentence)");
    }
    ks_status st = KS_OK;
    char *parts[5] = {0};
    int np = 0, dots = 0;
    for (const char *p = f[0]; *p; p++) dots += *p == '.';
    if (dots == 4)
        for (const char *p = f[0]; np < 5; np++) {
            const char *q = strchr(p, '.');
            size_t l = q ? (size_t)(q - p) : strlen(p);
            if (!(parts[np] = strndup(p, l))) break;
            p = q ? q + 1 : p + l;
        }
    if (np != 5 || strcmp(parts[4], "txt") || (strcmp(parts[2], "0") && strcmp(parts[2], "1")) ||
        (strcmp(parts[3], "male") && strcmp(parts[3], "female") && strcmp(parts[3], "neutral")) ||
        !*parts[0] || !*parts[1]) {
        st = bad(err, path, ln, "field 'sentid' '%.80s' is not occupation.participant.{0,1}."
                 "{male,female,neutral}.txt", f[0]);
        goto out;
    }
    double pct = NAN;
    for (int i = 0; i < w->st->n; i++)
        if (strcmp(w->st->occ[i], parts[0]) == 0) pct = w->st->pct[i];
    if (isnan(pct)) {
        st = bad(err, path, ln, "field 'sentid': occupation '%.60s' is not in "
                 "occupations-stats.tsv", parts[0]);
        goto out;
    }
    /* the pronoun: the first word that, letters only, is one (compared case-insensitively) */
    char pron[32] = "";
    const char *gender = NULL;
    for (const char *p = f[1]; *p && !gender;) {
        while (*p && isspace((unsigned char)*p)) p++;
        const char *e = p;
        while (*e && !isspace((unsigned char)*e)) e++;
        char wbuf[32];
        size_t k = 0;
        bool too_long = false;
        for (const char *c = p; c < e; c++)
            if (isalpha((unsigned char)*c) && !(*c & 0x80)) {
                if (k + 1 >= sizeof wbuf) {
                    too_long = true;
                    break;
                }
                wbuf[k++] = *c;
            }
        wbuf[k] = 0;
        if (!too_long)
            for (size_t i = 0; i < sizeof pronouns / sizeof pronouns[0]; i++)
                if (strcasecmp(wbuf, pronouns[i].w) == 0) {
                    gender = pronouns[i].g;
                    memcpy(pron, wbuf, k + 1);
                    break;
                }
        p = e;
    }
    if (!gender || strcmp(gender, parts[3]) != 0) {
        st = bad(err, path, ln, gender ? "field 'sentence': its first pronoun is %s, the sentid "
                                         "says %s"
                                       : "field 'sentence': no pronoun (%s) for the sentid's %s",
                 gender ? gender : "he/she/they...", parts[3]);
        goto out;
    }
    ks_audit_item x = new_item(path, ln);
    x.id = strdup(f[0]);
    x.category = strdup(parts[0]);
    x.group = strdup(parts[3]);
    x.gold = parts[2][0] - '0';
    x.value = pct;
    x.n_options = 3;
    char *q = cat3(f[1], "\nIn the sentence above, who does \"", pron);
    char *prompt = q ? cat3(q, "\" refer to?\nAnswer:", "") : NULL;
    free(q);
    x.options[0].prompt = prompt ? strdup(prompt) : NULL;
    x.options[1].prompt = prompt ? strdup(prompt) : NULL;
    x.options[0].text = x.options[0].prompt ? cat3(" the ", parts[0], "") : NULL;
    x.options[1].text = !x.options[1].prompt           ? NULL
                        : strcmp(parts[1], "someone") == 0 ? strdup(" someone")
                                                           : cat3(" the ", parts[1], "");
    x.options[2].text = strdup(f[1]);
    free(prompt);
    st = keep(w->s, &x, err);
out:
    for (int i = 0; i < 5; i++) free(parts[i]);
    free(f[0]);
    free(f[1]);
    return st;
}

static ks_status load_winogender_file(const char *path, sink *s, ks_error *err) {
    char *dir = dir_of(path);
    if (!dir) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    char sp[4096];
    snprintf(sp, sizeof sp, "%s/occupations-stats.tsv", dir);
    free(dir);
    stats stt = {0};
    char *text = NULL;
    size_t len = 0;
    ks_status st = read_file(sp, &text, &len, err);
    if (!st) {
        stats_state ss = {sp, &stt, -1, -1};
        st = each_line(sp, text, len, stats_line, &ss, err);
    }
    free(text);
    text = NULL;
    if (!st) st = read_file(path, &text, &len, err);
    if (!st) {
        const char *base = strrchr(path, '/');
        wg_state w = {path, base ? base + 1 : path, s, &stt};
        st = each_line(path, text, len, wg_line, &w, err);
    }
    free(text);
    for (int i = 0; i < stt.n; i++) free(stt.occ[i]);
    free(stt.occ);
    free(stt.pct);
    return st;
}

/* ------------------------------------------------------------------ pairs */

/* WinoBias: (type, line, pro) <-> (type, line, anti); Winogender: the male/female items of one
 * occupation.participant.answer. Quadratic in the worst case only over items of equal key
 * (a sort by key keeps it n log n). */
typedef struct {
    const char *k1;
    long k2;
    int side, idx;
} pkey;

static int cmp_pkey(const void *a, const void *b) {
    const pkey *x = a, *y = b;
    int c = strcmp(x->k1, y->k1);
    if (c) return c;
    if (x->k2 != y->k2) return x->k2 < y->k2 ? -1 : 1;
    if (x->side != y->side) return x->side < y->side ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static ks_status link_pairs(ks_audit_items *items, ks_error *err) {
    int n = items->n;
    for (int i = 0; i < n; i++) items->items[i].pair = -1;
    if (items->kind != KS_AUDIT_WINOBIAS && items->kind != KS_AUDIT_WINOGENDER) return KS_OK;
    pkey *v = malloc(((size_t)n + 1) * sizeof *v);
    char **keys = calloc((size_t)n + 1, sizeof(char *));
    if (!v || !keys) {
        free(v);
        free(keys);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        ks_audit_item *x = &items->items[i];
        if (items->kind == KS_AUDIT_WINOBIAS) {
            v[m++] = (pkey){x->category, x->line, x->flag, i};
        } else {
            int side = strcmp(x->group, "male") == 0 ? 0 : strcmp(x->group, "female") == 0 ? 1 : -1;
            if (side < 0) continue;
            /* key: the sentid without its gender part */
            const char *g = strstr(x->id, side ? ".female." : ".male.");
            if (!g) continue;
            keys[i] = strndup(x->id, (size_t)(g - x->id) + 1);
            if (!keys[i]) continue;
            v[m++] = (pkey){keys[i], 0, side, i};
        }
    }
    qsort(v, (size_t)m, sizeof *v, cmp_pkey);
    for (int a = 0; a < m;) {
        int b = a;
        while (b < m && strcmp(v[b].k1, v[a].k1) == 0 && v[b].k2 == v[a].k2) b++;
        /* exactly one of each side: linked; otherwise left unpaired */
        if (b - a == 2 && v[a].side != v[a + 1].side) {
            items->items[v[a].idx].pair = v[a + 1].idx;
            items->items[v[a + 1].idx].pair = v[a].idx;
        }
        a = b;
    }
    for (int i = 0; i < n; i++) free(keys[i]);
    free(keys);
    free(v);
    return KS_OK;
}

/* ------------------------------------------------------------------ entry */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* the files a directory stands for, per kind */
static ks_status expand_dir(ks_audit_kind kind, const char *dir, const char *split, char ***out,
                            int *n_out, ks_error *err) {
    char **l = NULL;
    int n = 0;
    if (kind == KS_AUDIT_WINOBIAS) {
        static const char *const f[4] = {"pro_stereotyped_type1", "anti_stereotyped_type1",
                                         "pro_stereotyped_type2", "anti_stereotyped_type2"};
        l = calloc(4, sizeof(char *));
        if (!l) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        for (int i = 0; i < 4; i++) {
            size_t len = strlen(dir) + strlen(f[i]) + strlen(split) + 8;
            l[i] = malloc(len);
            if (!l[i]) break;
            snprintf(l[i], len, "%s/%s.txt.%s", dir, f[i], split);
            n++;
        }
    } else if (kind == KS_AUDIT_WINOGENDER) {
        l = calloc(1, sizeof(char *));
        if (l && (l[0] = cat3(dir, "/", "all_sentences.tsv"))) n = 1;
    } else if (kind == KS_AUDIT_BBQ) {
        DIR *d = opendir(dir);
        if (!d) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t len = strlen(e->d_name);
            if (len < 7 || strcmp(e->d_name + len - 6, ".jsonl") != 0) continue;
            char **p = realloc(l, (size_t)(n + 1) * sizeof *p);
            if (!p) break;
            l = p;
            if (!(l[n] = cat3(dir, "/", e->d_name))) break;
            n++;
        }
        closedir(d);
        if (n == 0) {
            free(l);
            return ks_error_set(err, KS_ERR_FORMAT, "%s: no *.jsonl file (BBQ ships one per "
                                "category)", dir);
        }
        qsort(l, (size_t)n, sizeof(char *), cmp_str);
    } else {
        return ks_error_set(err, KS_ERR_ARG, "%s: is a directory; give the %s file(s)", dir,
                            ks_audit_kind_name(kind));
    }
    *out = l;
    *n_out = n;
    return KS_OK;
}

static ks_status load_one(ks_audit_kind kind, const char *path, sink *s, ks_error *err) {
    switch (kind) {
    case KS_AUDIT_CROWS: return load_crows(path, s, err);
    case KS_AUDIT_STEREOSET: return load_stereoset(path, s, err);
    case KS_AUDIT_BBQ: return load_bbq(path, s, err);
    case KS_AUDIT_WINOBIAS: return load_winobias_file(path, s, err);
    case KS_AUDIT_WINOGENDER: return load_winogender_file(path, s, err);
    default: return ks_error_set(err, KS_ERR_ARG, "unknown audit kind %d", (int)kind);
    }
}

ks_status ks_audit_load(ks_audit_kind kind, const char *const *paths, int n_paths,
                        const ks_audit_load_options *opts, ks_audit_items *out, ks_error *err) {
    if (!out || (unsigned)kind >= KS_AUDIT_N_KINDS || n_paths < 0 || (n_paths && !paths))
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: invalid arguments");
    memset(out, 0, sizeof *out);
    out->kind = kind;
    const char *split = opts && opts->split ? opts->split : "test";
    if (strcmp(split, "test") && strcmp(split, "dev"))
        return ks_error_set(err, KS_ERR_ARG, "split '%s' (expected test or dev)", split);
    sink s = {.out = out, .o = opts};
    ks_status st = KS_OK;
    for (int p = 0; p < n_paths && !st; p++) {
        struct stat sb;
        if (!paths[p] || stat(paths[p], &sb) != 0) {
            st = ks_error_set(err, KS_ERR_IO, "%s: %s", paths[p] ? paths[p] : "(null)",
                              strerror(errno));
            break;
        }
        char **files = NULL;
        int nf = 0;
        if (S_ISDIR(sb.st_mode)) {
            if ((st = expand_dir(kind, paths[p], split, &files, &nf, err))) break;
        }
        for (int f = 0; f < (files ? nf : 1) && !st; f++) {
            s.kept_in_file = 0;
            s.file_full = false;
            st = load_one(kind, files ? files[f] : paths[p], &s, err);
        }
        for (int f = 0; f < nf; f++) free(files[f]);
        free(files);
    }
    if (!st && opts && opts->limit > 0 && out->n > opts->limit) {
        for (int i = opts->limit; i < out->n; i++) item_clear(&out->items[i]);
        out->n = opts->limit;
    }
    if (!st) st = link_pairs(out, err);
    if (st) ks_audit_items_free(out);
    return st;
}

void ks_audit_items_free(ks_audit_items *items) {
    if (!items) return;
    for (int i = 0; i < items->n; i++) item_clear(&items->items[i]);
    free(items->items);
    items->items = NULL;
    items->n = 0;
}
