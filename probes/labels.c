/* labels.c — probe labels from JSONL (jansson) or CSV (libcsv); see ks_labels.h. */
#include "ks_labels.h"

#include <csv.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LABELS_MAX_BYTES ((size_t)1 << 30)
#define LABELS_MAX_FIELD 4096

void ks_labels_free(ks_labels *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].prompt_id);
        free(l->v[i].token_regex);
        free(l->v[i].label);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static ks_status push(ks_labels *l, size_t *cap, ks_label *e, ks_error *err) {
    if (l->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        ks_label *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return ks_error_set(err, KS_ERR_NOMEM, "out of memory reading labels");
        l->v = nv;
        *cap = nc;
    }
    l->v[l->n++] = *e;
    return KS_OK;
}

static void label_clear(ks_label *e) {
    free(e->prompt_id);
    free(e->token_regex);
    free(e->label);
    memset(e, 0, sizeof *e);
}

/* glibc's regcomp builds automata whose size multiplies under stacked repetition: "a" followed
 * by 40 '+' or 40 nested "(…)+" each take over 20 GB, "((a{1,100}){1,100}){1,10}" 120 MB (the
 * fuzzer found the first). Token pieces are short, so token regexes are held to a budget that
 * keeps every pattern cheap: at most KS_LABELS_REGEX_MAX bytes, groups nested 8 deep, no
 * repetition operator applied straight to another, interval bounds of 32 at most whose
 * product over the pattern is at most 256. Brackets and escapes are skipped as literals. */
bool ks_labels_regex_ok(const char *re, char *why, size_t cap) {
    size_t n = strlen(re);
    if (n > KS_LABELS_REGEX_MAX) {
        snprintf(why, cap, "longer than %d bytes", KS_LABELS_REGEX_MAX);
        return false;
    }
    int depth = 0;
    long product = 1;
    bool after_rep = false; /* the previous token was a repetition operator */
    for (size_t i = 0; i < n; i++) {
        char c = re[i];
        if (c == '\\') {
            i++;
            after_rep = false;
            continue;
        }
        if (c == '[') { /* a bracket expression: ']' first is literal, [:class:] inside */
            size_t j = i + 1;
            if (j < n && re[j] == '^') j++;
            if (j < n && re[j] == ']') j++;
            while (j < n && re[j] != ']') {
                if (re[j] == '[' && j + 1 < n && (re[j + 1] == ':' || re[j + 1] == '.' || re[j + 1] == '=')) {
                    char close = re[j + 1];
                    j += 2;
                    while (j + 1 < n && !(re[j] == close && re[j + 1] == ']')) j++;
                    j += 2;
                } else {
                    j++;
                }
            }
            i = j; /* regcomp reports an unclosed bracket */
            after_rep = false;
            continue;
        }
        bool rep = c == '*' || c == '+' || c == '?' || c == '{';
        if (rep && after_rep) {
            snprintf(why, cap, "a repetition operator follows another at byte %zu", i + 1);
            return false;
        }
        if (c == '{') {
            char *end;
            long lo = strtol(re + i + 1, &end, 10), hi = lo;
            if (*end == ',') hi = end[1] == '}' ? lo + 1 : strtol(end + 1, &end, 10);
            else if (end == re + i + 1) hi = 1;
            if (lo > 32 || hi > 32) {
                snprintf(why, cap, "an interval bound above 32 at byte %zu", i + 1);
                return false;
            }
            product *= hi > 1 ? hi : 1;
            if (product > 256) {
                snprintf(why, cap, "intervals whose bounds multiply past 256");
                return false;
            }
            const char *close = strchr(re + i, '}');
            i = close ? (size_t)(close - re) : n;
        } else if (c == '(' && ++depth > 8) {
            snprintf(why, cap, "groups nested more than 8 deep");
            return false;
        } else if (c == ')' && depth > 0) {
            depth--;
        }
        after_rep = rep;
    }
    return true;
}

/* A regex must compile (so a typo is reported with its line, not at match time). */
static ks_status check_regex(const char *re, const char *source, const char *unit, int64_t line,
                             ks_error *err) {
    char why[96];
    if (!ks_labels_regex_ok(re, why, sizeof why))
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %s %lld: field 'token': regex '%.80s' refused: %s "
                            "(token regexes are held to a small budget, docs/PROBES.md)",
                            source, unit, (long long)line, re, why);
    regex_t rx;
    int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
    if (rc) {
        char msg[160];
        regerror(rc, &rx, msg, sizeof msg);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %s %lld: field 'token': bad regex '%.80s': %s",
                            source, unit, (long long)line, re, msg);
    }
    regfree(&rx);
    return KS_OK;
}

/* A whole-string number (finite); false otherwise. */
static bool parse_number(const char *s, double *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_int64(const char *s, int64_t *out) {
    if (!*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

/* ------------------------------------------------------------------ JSONL */

static ks_status parse_jsonl(const char *data, size_t len, const char *source, ks_labels *out,
                             ks_error *err) {
    size_t cap = 0;
    int64_t line = 0;
    size_t pos = 0;
    ks_status st = KS_OK;
    while (pos < len && !st) {
        line++;
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t a = pos, b = end;
        pos = end + 1;
        while (a < b && (data[a] == ' ' || data[a] == '\t' || data[a] == '\r')) a++;
        while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\t' || data[b - 1] == '\r')) b--;
        if (a == b) continue; /* blank lines are allowed */
        json_error_t je;
        json_t *j = json_loadb(data + a, b - a, JSON_REJECT_DUPLICATES, &je);
        if (!j) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: line %lld: not JSON: %s", source,
                              (long long)line, je.text);
            break;
        }
        ks_label e = {.prompt_index = -1, .value = NAN, .line = line};
        if (!json_is_object(j)) {
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: line %lld: not a JSON object", source,
                              (long long)line);
            goto next;
        }
        const char *key;
        json_t *v;
        json_object_foreach(j, key, v) {
            if (!strcmp(key, "prompt")) {
                if (json_is_integer(v) && json_integer_value(v) >= 0) {
                    e.prompt_index = json_integer_value(v);
                } else if (json_is_string(v) && json_string_length(v) > 0 &&
                           json_string_length(v) <= LABELS_MAX_FIELD) {
                    e.prompt_id = strdup(json_string_value(v));
                    if (!e.prompt_id) st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
                } else {
                    st = ks_error_set(err, KS_ERR_FORMAT,
                                      "%s: line %lld: field 'prompt': not a prompt index (integer "
                                      ">= 0) or a prompt id (non-empty string)",
                                      source, (long long)line);
                }
            } else if (!strcmp(key, "label")) {
                char buf[64];
                if (json_is_string(v) && json_string_length(v) > 0 &&
                    json_string_length(v) <= LABELS_MAX_FIELD &&
                    strlen(json_string_value(v)) == json_string_length(v)) {
                    e.label = strdup(json_string_value(v));
                } else if (json_is_integer(v)) {
                    snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
                    e.label = strdup(buf);
                    e.value = (double)json_integer_value(v);
                } else if (json_is_real(v) && isfinite(json_real_value(v))) {
                    snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
                    e.label = strdup(buf);
                    e.value = json_real_value(v);
                } else if (json_is_boolean(v)) {
                    e.label = strdup(json_is_true(v) ? "true" : "false");
                } else {
                    st = ks_error_set(err, KS_ERR_FORMAT,
                                      "%s: line %lld: field 'label': not a non-empty string, a "
                                      "number or a boolean", source, (long long)line);
                }
                if (!st && !e.label) st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            } else if (!strcmp(key, "position")) {
                if (!json_is_integer(v)) {
                    st = ks_error_set(err, KS_ERR_FORMAT,
                                      "%s: line %lld: field 'position': not an integer", source,
                                      (long long)line);
                } else {
                    e.has_position = true;
                    e.position = json_integer_value(v);
                }
            } else if (!strcmp(key, "token")) {
                if (!json_is_string(v) || json_string_length(v) == 0 ||
                    json_string_length(v) > LABELS_MAX_FIELD ||
                    strlen(json_string_value(v)) != json_string_length(v)) {
                    st = ks_error_set(err, KS_ERR_FORMAT,
                                      "%s: line %lld: field 'token': not a non-empty regex string",
                                      source, (long long)line);
                } else if (!(st = check_regex(json_string_value(v), source, "line", line, err))) {
                    e.token_regex = strdup(json_string_value(v));
                    if (!e.token_regex) st = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
                }
            } else {
                st = ks_error_set(err, KS_ERR_FORMAT,
                                  "%s: line %lld: unknown field '%.64s' (prompt, label, position, "
                                  "token)", source, (long long)line, key);
            }
            if (st) break;
        }
        if (!st && e.prompt_index < 0 && !e.prompt_id)
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: line %lld: field 'prompt' is missing",
                              source, (long long)line);
        if (!st && !e.label)
            st = ks_error_set(err, KS_ERR_FORMAT, "%s: line %lld: field 'label' is missing",
                              source, (long long)line);
        if (!st && e.has_position && e.token_regex)
            st = ks_error_set(err, KS_ERR_FORMAT,
                              "%s: line %lld: fields 'position' and 'token' exclude each other",
                              source, (long long)line);
        if (!st) st = push(out, &cap, &e, err);
    next:
        if (st) label_clear(&e);
        json_decref(j);
    }
    return st;
}

/* ------------------------------------------------------------------ CSV */

enum { COL_PROMPT, COL_LABEL, COL_POSITION, COL_TOKEN, N_COLS };
static const char *const col_names[N_COLS] = {"prompt", "label", "position", "token"};

typedef struct {
    const char *source;
    ks_labels *out;
    size_t cap;
    int64_t row;         /* 1-based record number; the header is 1 */
    int col;             /* field index inside the record */
    int map[16];         /* field index -> COL_*, -1 ignored never: unknown is an error */
    int n_header;
    char *cell[N_COLS];
    bool seen[N_COLS];
    ks_status st;
    ks_error *err;
} csv_state;

static void csv_field(void *s, size_t len, void *user) {
    csv_state *c = user;
    if (c->st) return;
    const char *f = s ? s : "";
    if (len > LABELS_MAX_FIELD) {
        c->st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: field %d is longer than %d bytes",
                             c->source, (long long)c->row, c->col + 1, LABELS_MAX_FIELD);
        return;
    }
    if (memchr(f, 0, len)) {
        c->st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: field %d holds a NUL byte",
                             c->source, (long long)c->row, c->col + 1);
        return;
    }
    if (c->row == 1) {
        if (c->col >= 16) {
            c->st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row 1: more than 16 header columns",
                                 c->source);
            return;
        }
        int k = -1;
        for (int i = 0; i < N_COLS; i++)
            if (len == strlen(col_names[i]) && !memcmp(f, col_names[i], len)) k = i;
        if (k < 0) {
            c->st = ks_error_set(c->err, KS_ERR_FORMAT,
                                 "%s: row 1: unknown column '%.*s' (prompt, label, position, token)",
                                 c->source, (int)(len > 64 ? 64 : len), f);
            return;
        }
        if (c->seen[k]) {
            c->st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row 1: column '%s' appears twice",
                                 c->source, col_names[k]);
            return;
        }
        c->seen[k] = true;
        c->map[c->col++] = k;
        return;
    }
    if (c->col >= c->n_header) {
        c->st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: more fields than the header's %d",
                             c->source, (long long)c->row, c->n_header);
        return;
    }
    int k = c->map[c->col++];
    c->cell[k] = strndup(f, len);
    if (!c->cell[k]) c->st = ks_error_set(c->err, KS_ERR_NOMEM, "out of memory");
}

static void csv_row(int term, void *user) {
    (void)term;
    csv_state *c = user;
    if (c->st) return;
    if (c->row == 1) {
        c->n_header = c->col;
        if (!c->seen[COL_PROMPT] || !c->seen[COL_LABEL])
            c->st = ks_error_set(c->err, KS_ERR_FORMAT,
                                 "%s: row 1: the header must name the columns 'prompt' and 'label'",
                                 c->source);
        c->row++;
        c->col = 0;
        return;
    }
    ks_label e = {.prompt_index = -1, .value = NAN, .line = c->row};
    ks_status st = KS_OK;
    const char *src = c->source;
    long long row = (long long)c->row;
    if (c->col != c->n_header) {
        st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: %d fields, the header has %d", src,
                          row, c->col, c->n_header);
        goto done;
    }
    const char *p = c->cell[COL_PROMPT];
    int64_t idx;
    if (!p || !*p) {
        st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: field 'prompt' is empty", src, row);
        goto done;
    }
    if (strspn(p, "0123456789") == strlen(p) && parse_int64(p, &idx)) {
        e.prompt_index = idx;
    } else {
        e.prompt_id = c->cell[COL_PROMPT];
        c->cell[COL_PROMPT] = NULL;
    }
    if (!c->cell[COL_LABEL] || !*c->cell[COL_LABEL]) {
        st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: field 'label' is empty", src, row);
        goto done;
    }
    e.label = c->cell[COL_LABEL];
    c->cell[COL_LABEL] = NULL;
    double v;
    if (parse_number(e.label, &v)) e.value = v;
    const char *ps = c->cell[COL_POSITION];
    if (ps && *ps) {
        if (!parse_int64(ps, &e.position)) {
            st = ks_error_set(c->err, KS_ERR_FORMAT, "%s: row %lld: field 'position': '%.40s' is not an integer",
                              src, row, ps);
            goto done;
        }
        e.has_position = true;
    }
    const char *tr = c->cell[COL_TOKEN];
    if (tr && *tr) {
        if ((st = check_regex(tr, src, "row", c->row, c->err))) goto done;
        if (e.has_position) {
            st = ks_error_set(c->err, KS_ERR_FORMAT,
                              "%s: row %lld: fields 'position' and 'token' exclude each other", src, row);
            goto done;
        }
        e.token_regex = c->cell[COL_TOKEN];
        c->cell[COL_TOKEN] = NULL;
    }
    st = push(c->out, &c->cap, &e, c->err);
done:
    if (st) {
        label_clear(&e);
        c->st = st;
    }
    for (int i = 0; i < N_COLS; i++) {
        free(c->cell[i]);
        c->cell[i] = NULL;
    }
    c->row++;
    c->col = 0;
}

static ks_status parse_csv(const char *data, size_t len, const char *source, ks_labels *out,
                           ks_error *err) {
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL))
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    csv_state c = {.source = source, .out = out, .row = 1, .err = err};
    if (csv_parse(&p, data, len, csv_field, csv_row, &c) != len && !c.st)
        c.st = ks_error_set(err, KS_ERR_FORMAT, "%s: row %lld: %s", source, (long long)c.row,
                            csv_strerror(csv_error(&p)));
    if (!c.st && csv_fini(&p, csv_field, csv_row, &c) != 0 && !c.st)
        c.st = ks_error_set(err, KS_ERR_FORMAT, "%s: row %lld: %s", source, (long long)c.row,
                            csv_strerror(csv_error(&p)));
    csv_free(&p);
    for (int i = 0; i < N_COLS; i++) free(c.cell[i]);
    if (!c.st && c.row == 1)
        c.st = ks_error_set(err, KS_ERR_FORMAT, "%s: empty file (no header)", source);
    return c.st;
}

/* ------------------------------------------------------------------ entry points */

ks_status ks_labels_parse(const char *data, size_t len, bool csv, const char *source,
                          ks_labels *out, ks_error *err) {
    memset(out, 0, sizeof *out);
    ks_status st = csv ? parse_csv(data, len, source, out, err)
                       : parse_jsonl(data, len, source, out, err);
    if (!st && out->n == 0) st = ks_error_set(err, KS_ERR_FORMAT, "%s: no labels", source);
    if (st) {
        ks_labels_free(out);
        return st;
    }
    out->all_numeric = true;
    for (size_t i = 0; i < out->n; i++)
        if (isnan(out->v[i].value)) out->all_numeric = false;
    return KS_OK;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

ks_status ks_labels_load(const char *path, ks_labels *out, ks_error *err) {
    memset(out, 0, sizeof *out);
    bool csv;
    if (ends_with(path, ".csv")) csv = true;
    else if (ends_with(path, ".jsonl") || ends_with(path, ".json")) csv = false;
    else
        return ks_error_set(err, KS_ERR_ARG,
                            "%s: labels file must end in .jsonl, .json or .csv (its format)", path);
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    ks_status st = KS_OK;
    while (buf) {
        if (n == cap) {
            if (cap >= LABELS_MAX_BYTES) {
                st = ks_error_set(err, KS_ERR_FORMAT, "%s: larger than 1 GiB", path);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                st = ks_error_set(err, KS_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) st = ks_error_set(err, KS_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (!buf) return ks_error_set(err, KS_ERR_NOMEM, "out of memory reading %s", path);
    if (!st) st = ks_labels_parse(buf, n, csv, path, out, err);
    free(buf);
    return st;
}
