/* datasets.c — the bias benchmarks' shipped files read into ks_audit_item records (ks_audit.h;
 * which texts an item holds is defined in docs/AUDITS.md). No model is involved.
 *
 * One reader per format: CrowS-Pairs (CSV through libcsv), StereoSet intrasentence (one JSON
 * array, jansson), BBQ (JSONL), WinoBias (numbered lines with bracketed spans, plus the
 * occupation lists beside them), Winogender (TSV, plus occupations-stats.tsv beside it).
 *
 * Every row of every file is validated, whether or not the filters keep it: a malformed row is
 * KS_ERR_FORMAT with "FILE:LINE: field 'NAME' ..." in the message, never skipped. Inputs are
 * bounded so that a hostile file costs linear time and bounded memory: a file of at most
 * MAX_FILE_BYTES, a line (a CSV record, a JSONL row) of at most MAX_LINE_BYTES, at most
 * MAX_ITEMS items kept, MAX_FILES files, MAX_OCCUPATIONS occupations of MAX_OCCUPATION_BYTES.
 *
 * Keeping: the category filter, then limit_per_file, then limit. Pair indices (WinoBias,
 * Winogender) are resolved once the last file is read, so they point into the final list. */
#include <csv.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ks_audit.h"

#define MAX_FILE_BYTES ((size_t)256 << 20)
#define MAX_LINE_BYTES ((size_t)1 << 20)
#define MAX_ITEMS (1 << 22)
#define MAX_FILES 1024
#define MAX_CSV_COLUMNS 64
#define MAX_OCCUPATIONS 1024
#define MAX_OCCUPATION_BYTES 64

/* The tab-separated fields of a line (pointers into it); more than MAX_CSV_COLUMNS gives
 * MAX_CSV_COLUMNS + 1, which callers report. */
static int split_tabs(const char *s, size_t n, const char **f, size_t *fl) {
    int nf = 0;
    for (size_t a = 0;;) {
        const char *tab = memchr(s + a, '\t', n - a);
        size_t e = tab ? (size_t)(tab - s) : n;
        if (nf == MAX_CSV_COLUMNS) return nf + 1;
        f[nf] = s + a;
        fl[nf++] = e - a;
        if (!tab) return nf;
        a = e + 1;
    }
}

static const char *const kind_names[KS_AUDIT_N_KINDS] = {"crows_pairs", "stereoset", "bbq",
                                                         "winobias", "winogender",
                                                         "counterfactual", "bold"};

const char *ks_audit_kind_name(ks_audit_kind k) {
    return (unsigned)k < KS_AUDIT_N_KINDS ? kind_names[k] : "unknown";
}

bool ks_audit_kind_parse(const char *name, ks_audit_kind *out) {
    if (!name) return false;
    for (int k = 0; k < KS_AUDIT_N_KINDS; k++)
        if (!strcmp(name, kind_names[k])) {
            if (out) *out = (ks_audit_kind)k;
            return true;
        }
    return false;
}

/* ================================================================== small helpers */

/* "FILE:LINE: <message>" as KS_ERR_FORMAT. */
__attribute__((format(printf, 4, 5))) static ks_status row_error(ks_error *err, const char *file,
                                                                 long line, const char *fmt, ...) {
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ks_error_set(err, KS_ERR_FORMAT, "%s:%ld: %s", file, line, msg);
}

static ks_status nomem(ks_error *err) {
    return ks_error_set(err, KS_ERR_NOMEM, "out of memory reading audit data");
}

/* Valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF) without NUL
 * bytes: every string an item holds is a C string that tokenizes as text. */
static bool utf8_ok(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    while (p < e) {
        unsigned c = *p++;
        if (c == 0) return false;
        if (c < 0x80) continue;
        int more;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            more = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (e - p < more) return false;
        if (p[0] < lo || p[0] > hi) return false;
        for (int k = 1; k < more; k++)
            if ((p[k] & 0xC0) != 0x80) return false;
        p += more;
    }
    return true;
}

/* A value quoted in a message: at most 40 bytes, cut at a character boundary, control
 * characters shown as '?'. */
static const char *shown(const char *s, size_t n, char buf[48]) {
    size_t k = 0;
    for (size_t i = 0; i < n && k < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) { /* copy a whole UTF-8 sequence or stop */
            size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (i + len > n || k + len > 40) break;
            memcpy(buf + k, s + i, len);
            k += len;
            i += len - 1;
            continue;
        }
        buf[k++] = c < 0x20 || c == 0x7F ? '?' : (char)c;
    }
    if (k == 40 && n > 40) {
        buf[k++] = '.';
        buf[k++] = '.';
    }
    buf[k] = 0;
    return buf;
}

static char *str_dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static char *str_dup(const char *s) { return s ? str_dupn(s, strlen(s)) : NULL; }

/* The concatenation of the n strings in parts (NULL on allocation failure). */
static char *concat(const char *const *parts, int n) {
    size_t len = 0;
    for (int i = 0; i < n; i++) len += strlen(parts[i]);
    char *d = malloc(len + 1), *p = d;
    if (!d) return NULL;
    for (int i = 0; i < n; i++) {
        size_t k = strlen(parts[i]);
        memcpy(p, parts[i], k);
        p += k;
    }
    *p = 0;
    return d;
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* The directory part of path ("." when there is none); caller frees. */
static char *dir_name(const char *path) {
    const char *b = strrchr(path, '/');
    if (!b) return str_dup(".");
    if (b == path) return str_dup("/");
    return str_dupn(path, (size_t)(b - path));
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir);
    const char *parts[3] = {dir, n && dir[n - 1] == '/' ? "" : "/", name};
    return concat(parts, 3);
}

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static bool ieq(const char *a, size_t n, const char *b) { /* ASCII case-insensitive, a[0..n) == b */
    size_t m = strlen(b);
    if (n != m) return false;
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

/* ------------------------------------------------------------------ string map */

/* Open addressing, owning its keys: ids seen in a file (a repeated id is an error) and the
 * Winogender templates of a load. */
typedef struct {
    char *key;
    uint64_t hash;
    long line; /* where the key was first seen */
    int value;
} smap_slot;

typedef struct {
    smap_slot *slot;
    size_t cap, n; /* cap: a power of two, at least twice n */
} smap;

static void smap_free(smap *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->slot[i].key);
    free(m->slot);
    memset(m, 0, sizeof *m);
}

static smap_slot *smap_find(const smap *m, const char *key, uint64_t h) {
    if (!m->cap) return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        smap_slot *s = &m->slot[i];
        if (!s->key) return s;
        if (s->hash == h && !strcmp(s->key, key)) return s;
    }
}

/* Find key, or insert it with (line, value). *found: the slot (its line and value those of the
 * first insertion); *fresh: whether this call inserted it. */
static ks_status smap_put(smap *m, const char *key, long line, int value, smap_slot **found,
                          bool *fresh, ks_error *err) {
    uint64_t h = fnv1a(key, strlen(key));
    if (2 * (m->n + 1) > m->cap) {
        size_t nc = m->cap ? 2 * m->cap : 64;
        smap_slot *ns = calloc(nc, sizeof *ns);
        if (!ns) return nomem(err);
        smap old = *m;
        m->slot = ns;
        m->cap = nc;
        for (size_t i = 0; i < old.cap; i++)
            if (old.slot[i].key) *smap_find(m, old.slot[i].key, old.slot[i].hash) = old.slot[i];
        free(old.slot);
    }
    smap_slot *s = smap_find(m, key, h);
    *fresh = !s->key;
    if (!s->key) {
        s->key = str_dup(key);
        if (!s->key) return nomem(err);
        s->hash = h;
        s->line = line;
        s->value = value;
        m->n++;
    }
    *found = s;
    return KS_OK;
}

/* ------------------------------------------------------------------ reading files */

/* The whole file, NUL-terminated, a leading UTF-8 byte order mark dropped (*skip its length). */
static ks_status read_whole(const char *path, char **out, size_t *len, size_t *skip,
                            ks_error *err) {
    *out = NULL;
    *len = *skip = 0;
    struct stat st;
    if (stat(path, &st) != 0) return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return ks_error_set(err, KS_ERR_ARG, "%s: is a directory, not a data file", path);
    if (!S_ISREG(st.st_mode)) /* a FIFO or a device would block or never end */
        return ks_error_set(err, KS_ERR_IO, "%s: not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    ks_status rc = buf ? KS_OK : nomem(err);
    while (!rc) {
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) {
                rc = ks_error_set(err, KS_ERR_FORMAT,
                                  "%s: larger than %zu MiB, the limit for an audit data file", path,
                                  MAX_FILE_BYTES >> 20);
                break;
            }
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                rc = nomem(err);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) rc = ks_error_set(err, KS_ERR_IO, "%s: read error", path);
            break;
        }
    }
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    if (n >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) *skip = 3;
    return KS_OK;
}

/* Line iteration over text[*pos..len): the line without its '\n' (and a '\r' before it).
 * Lines longer than MAX_LINE_BYTES are an error. */
static ks_status next_line(const char *file, const char *text, size_t len, size_t *pos, long *no,
                           const char **s, size_t *n, ks_error *err) {
    const char *nl = memchr(text + *pos, '\n', len - *pos);
    size_t end = nl ? (size_t)(nl - text) : len;
    *s = text + *pos;
    *n = end - *pos;
    *pos = nl ? end + 1 : len;
    ++*no;
    if (*n > MAX_LINE_BYTES)
        return row_error(err, file, *no, "line longer than %zu MiB, the limit for a row",
                         MAX_LINE_BYTES >> 20);
    if (*n && (*s)[*n - 1] == '\r') --*n;
    return KS_OK;
}

static bool blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* ================================================================== the loader */

typedef struct {
    int key; /* WinoBias: the pair stem (file pair); Winogender: the template */
    int gender; /* 0 male, 1 female, 2 neutral */
} aux_t;

typedef struct {
    ks_audit_kind kind;
    const ks_audit_load_options *o;
    ks_audit_items *out;
    aux_t *aux; /* parallel to out->items */
    int cap;
    const char *file; /* the file being read, as given (or as expanded from a directory) */
    int file_index;
    int kept_in_file;
    smap ids; /* ids of the current file */
    smap templates; /* Winogender: "<file index>:<occupation>.<participant>.<answer>" -> flag */
    char **stems; /* WinoBias: directory + basename without its pro_/anti_ prefix */
    int n_stems;
} loader;

static void item_init(ks_audit_item *x, const char *file, long line) {
    memset(x, 0, sizeof *x);
    x->file = str_dup(file);
    x->line = line;
    x->gold = x->biased = x->unknown = x->pair = -1;
    x->value = NAN;
}

static void item_clear(ks_audit_item *x) {
    free(x->id);
    free(x->category);
    free(x->group);
    free(x->file);
    free(x->context);
    for (int k = 0; k < KS_AUDIT_MAX_OPTIONS; k++) {
        free(x->options[k].prompt);
        free(x->options[k].text);
    }
    memset(x, 0, sizeof *x);
}

/* Every string the item must hold is there (else an allocation failed). */
static bool item_complete(const ks_audit_item *x, bool prompts) {
    if (!x->id || !x->category || !x->group || !x->file) return false;
    for (int k = 0; k < x->n_options; k++)
        if (!x->options[k].text || (prompts && !x->options[k].prompt)) return false;
    return true;
}

/* A repeated id within a file is an error (ids key --resume's journal). */
static ks_status check_id(loader *L, const char *id, long line, const char *item, const char *field,
                          ks_error *err) {
    smap_slot *s;
    bool fresh;
    ks_status rc = smap_put(&L->ids, id, line, 0, &s, &fresh, err);
    if (rc) return rc;
    if (!fresh) {
        char b[48];
        return row_error(err, L->file, line, "%sfield '%s': '%s' repeats the id of line %ld", item,
                         field, shown(id, strlen(id), b), s->line);
    }
    return KS_OK;
}

static bool category_wanted(const ks_audit_load_options *o, const char *cat) {
    if (!o->categories) return true;
    for (int i = 0; i < o->n_categories; i++)
        if (!strcmp(o->categories[i], cat)) return true;
    return false;
}

/* Takes ownership of *x (cleared either way): appends it when the filters keep it. */
static ks_status offer(loader *L, ks_audit_item *x, aux_t a, ks_error *err) {
    const ks_audit_load_options *o = L->o;
    bool keep = category_wanted(o, x->category) &&
                (o->limit_per_file <= 0 || L->kept_in_file < o->limit_per_file) &&
                (o->limit <= 0 || L->out->n < o->limit);
    if (!keep) {
        item_clear(x);
        return KS_OK;
    }
    if (L->out->n >= MAX_ITEMS) {
        long line = x->line;
        item_clear(x);
        return row_error(err, L->file, line, "more than %d items in one load, the limit",
                         MAX_ITEMS);
    }
    if (L->out->n == L->cap) {
        int nc = L->cap ? 2 * L->cap : 256;
        ks_audit_item *ni = realloc(L->out->items, (size_t)nc * sizeof *ni);
        if (ni) L->out->items = ni;
        aux_t *na = ni ? realloc(L->aux, (size_t)nc * sizeof *na) : NULL;
        if (na) L->aux = na;
        if (!ni || !na) {
            item_clear(x);
            return nomem(err);
        }
        L->cap = nc;
    }
    L->out->items[L->out->n] = *x;
    L->aux[L->out->n] = a;
    L->out->n++;
    L->kept_in_file++;
    memset(x, 0, sizeof *x);
    return KS_OK;
}

/* ================================================================== CrowS-Pairs (CSV) */

enum { CR_ID, CR_MORE, CR_LESS, CR_SA, CR_BT, CR_N };
static const char *const crows_cols[CR_N] = {"id", "sent_more", "sent_less", "stereo_antistereo",
                                             "bias_type"};

typedef struct {
    loader *L;
    ks_error *err;
    ks_status st;
    long line; /* the physical line being fed to the parser */
    long rec_line; /* the first line of the current record */
    long row; /* records completed (the header is record 0) */
    int col; /* fields of the current record so far */
    int n_header;
    int colidx[CR_N]; /* column of each needed field */
    char *header[MAX_CSV_COLUMNS];
    char *cell[MAX_CSV_COLUMNS];
    size_t cell_len[MAX_CSV_COLUMNS];
} crows_state;

static const char *crows_col_name(const crows_state *c, int col, char buf[32]) {
    if (col == 0) return "id";
    if (c->row > 0 && col < c->n_header && c->header[col][0]) return c->header[col];
    snprintf(buf, 32, "column %d", col + 1);
    return buf;
}

static void crows_field(void *data, size_t len, void *user) {
    crows_state *c = user;
    if (c->st) return;
    const char *f = data ? data : "";
    if (c->col == 0) { /* a record's first field ends on this line; count back over its newlines */
        long nl = 0;
        for (size_t i = 0; i < len; i++) nl += f[i] == '\n';
        c->rec_line = c->line - nl;
    }
    char b[32];
    if (c->col >= MAX_CSV_COLUMNS) {
        c->st = row_error(c->err, c->L->file, c->rec_line, "more than %d fields", MAX_CSV_COLUMNS);
        return;
    }
    const char *name = crows_col_name(c, c->col, b);
    if (len > MAX_LINE_BYTES) {
        c->st = row_error(c->err, c->L->file, c->rec_line, "field '%s' is longer than %zu MiB",
                          name, MAX_LINE_BYTES >> 20);
        return;
    }
    if (!utf8_ok(f, len)) {
        c->st = row_error(c->err, c->L->file, c->rec_line, "field '%s' is not valid UTF-8 text%s",
                          name, memchr(f, 0, len) ? " (it holds a NUL byte)" : "");
        return;
    }
    c->cell[c->col] = str_dupn(f, len);
    c->cell_len[c->col] = len;
    if (!c->cell[c->col]) {
        c->st = nomem(c->err);
        return;
    }
    c->col++;
}

static void crows_header(crows_state *c) {
    const char *file = c->L->file;
    c->n_header = c->col;
    for (int i = 0; i < c->col; i++) {
        c->header[i] = c->cell[i];
        c->cell[i] = NULL;
    }
    for (int k = 0; k < CR_N; k++) c->colidx[k] = -1;
    c->colidx[CR_ID] = 0;
    char b[48];
    if (c->header[0][0]) {
        c->st = row_error(c->err, file, c->rec_line,
                          "field 'id': the header's first column is '%s', expected the unnamed id "
                          "column",
                          shown(c->header[0], strlen(c->header[0]), b));
        return;
    }
    for (int i = 1; i < c->n_header; i++)
        for (int k = 1; k < CR_N; k++)
            if (!strcmp(c->header[i], crows_cols[k])) {
                if (c->colidx[k] >= 0) {
                    c->st = row_error(c->err, file, c->rec_line,
                                      "field '%s': the header names it twice", crows_cols[k]);
                    return;
                }
                c->colidx[k] = i;
            }
    for (int k = 1; k < CR_N; k++)
        if (c->colidx[k] < 0) {
            c->st = row_error(c->err, file, c->rec_line, "field '%s': missing from the header",
                              crows_cols[k]);
            return;
        }
}

static void crows_record(crows_state *c) {
    loader *L = c->L;
    const char *file = L->file;
    long ln = c->rec_line;
    char b[48];
    if (c->col != c->n_header) {
        c->st = row_error(c->err, file, ln, "field '%s': the row has %d fields, the header %d",
                          c->col < c->n_header ? crows_col_name(c, c->col, b) : "(extra)", c->col,
                          c->n_header);
        return;
    }
    const char *v[CR_N];
    size_t n[CR_N];
    for (int k = 0; k < CR_N; k++) {
        v[k] = c->cell[c->colidx[k]];
        n[k] = c->cell_len[c->colidx[k]];
        if (!n[k]) {
            c->st = row_error(c->err, file, ln, "field '%s' is empty", crows_cols[k]);
            return;
        }
    }
    if (n[CR_ID] > 18 || strspn(v[CR_ID], "0123456789") != n[CR_ID]) {
        c->st = row_error(c->err, file, ln, "field 'id': '%s' is not a row index",
                          shown(v[CR_ID], n[CR_ID], b));
        return;
    }
    bool stereo = !strcmp(v[CR_SA], "stereo");
    if (!stereo && strcmp(v[CR_SA], "antistereo")) {
        c->st = row_error(c->err, file, ln,
                          "field 'stereo_antistereo': '%s' is neither 'stereo' nor 'antistereo'",
                          shown(v[CR_SA], n[CR_SA], b));
        return;
    }
    if ((c->st = check_id(L, v[CR_ID], ln, "", "id", c->err))) return;
    ks_audit_item x;
    item_init(&x, file, ln);
    x.id = str_dup(v[CR_ID]);
    x.category = str_dup(v[CR_BT]);
    x.group = str_dup(v[CR_SA]);
    x.n_options = 2;
    x.options[0].text = str_dup(v[CR_MORE]);
    x.options[1].text = str_dup(v[CR_LESS]);
    x.flag = stereo ? 1 : 0;
    if (!item_complete(&x, false)) {
        item_clear(&x);
        c->st = nomem(c->err);
        return;
    }
    c->st = offer(L, &x, (aux_t){0, 0}, c->err);
}

static void crows_row(int term, void *user) {
    (void)term;
    crows_state *c = user;
    if (!c->st) {
        if (c->row == 0)
            crows_header(c);
        else
            crows_record(c);
    }
    for (int i = 0; i < MAX_CSV_COLUMNS; i++) {
        free(c->cell[i]);
        c->cell[i] = NULL;
    }
    c->col = 0;
    c->row++;
}

/* Python's csv module keeps spaces around unquoted fields; so does the parser here. */
static int csv_no_space(unsigned char ch) {
    (void)ch;
    return 0;
}

static ks_status load_crows(loader *L, ks_error *err) {
    char *text;
    size_t len, pos;
    ks_status rc = read_whole(L->file, &text, &len, &pos, err);
    if (rc) return rc;
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL)) {
        free(text);
        return nomem(err);
    }
    csv_set_space_func(&p, csv_no_space);
    crows_state *c = calloc(1, sizeof *c);
    if (!c) {
        csv_free(&p);
        free(text);
        return nomem(err);
    }
    c->L = L;
    c->err = err;
    /* Fed one physical line at a time, so that a field's callback knows its line. A record may
     * span lines (quoted newlines) but not more than MAX_LINE_BYTES. */
    size_t pending = 0; /* bytes fed since the last completed record */
    long pending_from = 1;
    while (pos < len && !c->st) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) + 1 : len, n = end - pos;
        c->line++;
        if (n > MAX_LINE_BYTES + 1) {
            c->st =
                row_error(err, L->file, c->line, "line longer than %zu MiB, the limit for a row",
                          MAX_LINE_BYTES >> 20);
            break;
        }
        long rows = c->row;
        if (csv_parse(&p, text + pos, n, crows_field, crows_row, c) != n && !c->st)
            c->st =
                row_error(err, L->file, c->line, "malformed CSV: %s", csv_strerror(csv_error(&p)));
        pos = end;
        if (c->row != rows) {
            pending = 0;
        } else {
            if (!pending) pending_from = c->line;
            pending += n;
            if (pending > MAX_LINE_BYTES && !c->st)
                c->st = row_error(err, L->file, pending_from,
                                  "a record longer than %zu MiB, the limit for a row (an unclosed "
                                  "quote?)",
                                  MAX_LINE_BYTES >> 20);
        }
    }
    if (!c->st && csv_fini(&p, crows_field, crows_row, c) != 0 && !c->st)
        c->st = row_error(err, L->file, pending ? pending_from : c->line, "malformed CSV: %s",
                          csv_error(&p) == CSV_EPARSE ? "a quoted field is not closed"
                                                      : csv_strerror(csv_error(&p)));
    if (!c->st && c->row == 0)
        c->st = row_error(err, L->file, 1, "empty file (no header)");
    else if (!c->st && c->row == 1)
        c->st = row_error(err, L->file, 2, "no rows after the header");
    rc = c->st;
    for (int i = 0; i < MAX_CSV_COLUMNS; i++) {
        free(c->cell[i]);
        free(c->header[i]);
    }
    free(c);
    csv_free(&p);
    free(text);
    return rc;
}

/* ================================================================== JSON helpers */

/* obj[key] as a string; *out borrowed from obj. where: the field's path for messages. */
static ks_status json_text(const char *file, long line, const char *item, json_t *obj,
                           const char *key, const char *where, bool nonempty, const char **out,
                           ks_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v) return row_error(err, file, line, "%sfield '%s' is missing", item, where);
    if (!json_is_string(v))
        return row_error(err, file, line, "%sfield '%s' is not a string", item, where);
    if (nonempty && json_string_length(v) == 0)
        return row_error(err, file, line, "%sfield '%s' is empty", item, where);
    *out = json_string_value(v);
    return KS_OK;
}

/* ================================================================== StereoSet */

static const char *const ss_labels[3] = {"stereotype", "anti-stereotype", "unrelated"};

static int ss_label(const char *s) {
    for (int k = 0; k < 3; k++)
        if (!strcmp(s, ss_labels[k])) return k;
    return -1;
}

/* The 1-based line of each top-level element of a JSON array that jansson has already parsed
 * (so the text is valid JSON: strings hold no raw newlines). */
static long *element_lines(const char *t, size_t n, size_t count) {
    long *lines = calloc(count + 1, sizeof *lines);
    if (!lines) return NULL;
    long line = 1;
    int depth = 0;
    bool in_str = false, esc = false, expect = false;
    size_t k = 0;
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
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (depth == 1 && expect && c != ']') {
            if (k < count) lines[k] = line;
            k++;
            expect = false;
        }
        if (c == '"')
            in_str = true;
        else if (c == '[' || c == '{')
            expect = ++depth == 1;
        else if (c == ']' || c == '}')
            depth--;
        else if (c == ',' && depth == 1)
            expect = true;
    }
    if (k != count) {
        free(lines);
        return NULL;
    }
    return lines;
}

static ks_status ss_item(loader *L, json_t *x, size_t e, long ln, ks_error *err) {
    const char *file = L->file;
    char item[48];
    snprintf(item, sizeof item, "item %zu: ", e + 1);
    if (!json_is_object(x)) return row_error(err, file, ln, "%snot a JSON object", item);
    const char *id, *target, *bias, *context;
    ks_status rc;
    if ((rc = json_text(file, ln, item, x, "id", "id", true, &id, err)) ||
        (rc = json_text(file, ln, item, x, "target", "target", true, &target, err)) ||
        (rc = json_text(file, ln, item, x, "bias_type", "bias_type", true, &bias, err)) ||
        (rc = json_text(file, ln, item, x, "context", "context", false, &context, err)))
        return rc;
    const char *sent[3] = {NULL, NULL, NULL};
    json_t *ss = json_object_get(x, "sentences"), *data = json_object_get(x, "data");
    if (!ss && !data)
        return row_error(err, file, ln, "%sfield 'sentences' (or 'data') is missing", item);
    char where[64], b[48];
    if (ss) {
        if (!json_is_array(ss))
            return row_error(err, file, ln, "%sfield 'sentences' is not an array", item);
        for (size_t j = 0; j < json_array_size(ss); j++) {
            json_t *s = json_array_get(ss, j);
            snprintf(where, sizeof where, "sentences[%zu]", j);
            if (!json_is_object(s))
                return row_error(err, file, ln, "%sfield '%s' is not an object", item, where);
            const char *label, *text;
            snprintf(where, sizeof where, "sentences[%zu].gold_label", j);
            if ((rc = json_text(file, ln, item, s, "gold_label", where, true, &label, err)))
                return rc;
            int k = ss_label(label);
            if (k < 0)
                return row_error(err, file, ln,
                                 "%sfield '%s': '%s' is not stereotype, "
                                 "anti-stereotype or unrelated",
                                 item, where, shown(label, strlen(label), b));
            if (sent[k])
                return row_error(err, file, ln, "%sfield '%s': a second '%s' sentence", item, where,
                                 ss_labels[k]);
            snprintf(where, sizeof where, "sentences[%zu].sentence", j);
            if ((rc = json_text(file, ln, item, s, "sentence", where, true, &text, err))) return rc;
            sent[k] = text;
        }
        for (int k = 0; k < 3; k++)
            if (!sent[k])
                return row_error(err, file, ln, "%sfield 'sentences': no '%s' sentence", item,
                                 ss_labels[k]);
    }
    if (data) {
        if (!json_is_object(data))
            return row_error(err, file, ln, "%sfield 'data' is not an object", item);
        const char *key;
        json_t *v;
        json_object_foreach(data, key, v) {
            if (ss_label(key) < 0)
                return row_error(err, file, ln,
                                 "%sfield 'data.%s': not stereotype, anti-stereotype or "
                                 "unrelated",
                                 item, shown(key, strlen(key), b));
        }
        for (int k = 0; k < 3; k++) {
            json_t *d = json_object_get(data, ss_labels[k]);
            snprintf(where, sizeof where, "data.%s", ss_labels[k]);
            if (!d) return row_error(err, file, ln, "%sfield '%s' is missing", item, where);
            if (!json_is_object(d))
                return row_error(err, file, ln, "%sfield '%s' is not an object", item, where);
            const char *text;
            snprintf(where, sizeof where, "data.%s.sentence", ss_labels[k]);
            if ((rc = json_text(file, ln, item, d, "sentence", where, true, &text, err))) return rc;
            if (sent[k] && strcmp(sent[k], text))
                return row_error(err, file, ln,
                                 "%sfield '%s' disagrees with the '%s' sentence of "
                                 "'sentences'",
                                 item, where, ss_labels[k]);
            sent[k] = text;
        }
    }
    if ((rc = check_id(L, id, ln, item, "id", err))) return rc;
    ks_audit_item it;
    item_init(&it, file, ln);
    it.id = str_dup(id);
    it.category = str_dup(bias);
    it.group = str_dup(target);
    it.n_options = 3;
    for (int k = 0; k < 3; k++) it.options[k].text = str_dup(sent[k]);
    if (!item_complete(&it, false)) {
        item_clear(&it);
        return nomem(err);
    }
    return offer(L, &it, (aux_t){0, 0}, err);
}

static ks_status load_stereoset(loader *L, ks_error *err) {
    char *text;
    size_t len, skip;
    ks_status rc = read_whole(L->file, &text, &len, &skip, err);
    if (rc) return rc;
    json_error_t je;
    json_t *root = json_loadb(text + skip, len - skip, JSON_REJECT_DUPLICATES, &je);
    long *lines = NULL;
    if (!root) {
        rc = row_error(err, L->file, je.line > 0 ? je.line : 1, "not JSON: %s (column %d)", je.text,
                       je.column);
    } else if (!json_is_array(root)) {
        rc = row_error(err, L->file, 1, "not a JSON array of StereoSet items");
    } else if (json_array_size(root) == 0) {
        rc = row_error(err, L->file, 1, "no items (an empty array)");
    } else if (!(lines = element_lines(text + skip, len - skip, json_array_size(root)))) {
        rc = nomem(err);
    }
    for (size_t e = 0; !rc && e < json_array_size(root); e++)
        rc = ss_item(L, json_array_get(root, e), e, lines[e], err);
    free(lines);
    json_decref(root);
    free(text);
    return rc;
}

/* ================================================================== BBQ */

static ks_status bbq_row(loader *L, json_t *r, long ln, ks_error *err) {
    const char *file = L->file;
    if (!json_is_object(r)) return row_error(err, file, ln, "not a JSON object");
    ks_status rc;
    char b[48];
    json_t *v = json_object_get(r, "example_id");
    if (!v) return row_error(err, file, ln, "field 'example_id' is missing");
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return row_error(err, file, ln, "field 'example_id' is not an integer >= 0");
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)json_integer_value(v));
    const char *pol, *cond, *cat, *context, *question, *ans[3];
    if ((rc = json_text(file, ln, "", r, "question_polarity", "question_polarity", true, &pol,
                        err)) ||
        (rc = json_text(file, ln, "", r, "context_condition", "context_condition", true, &cond,
                        err)) ||
        (rc = json_text(file, ln, "", r, "category", "category", true, &cat, err)) ||
        (rc = json_text(file, ln, "", r, "context", "context", true, &context, err)) ||
        (rc = json_text(file, ln, "", r, "question", "question", true, &question, err)))
        return rc;
    bool neg = !strcmp(pol, "neg");
    if (!neg && strcmp(pol, "nonneg"))
        return row_error(err, file, ln,
                         "field 'question_polarity': '%s' is neither 'neg' nor 'nonneg'",
                         shown(pol, strlen(pol), b));
    bool ambig = !strcmp(cond, "ambig");
    if (!ambig && strcmp(cond, "disambig"))
        return row_error(err, file, ln,
                         "field 'context_condition': '%s' is neither 'ambig' nor 'disambig'",
                         shown(cond, strlen(cond), b));
    static const char *const ans_keys[3] = {"ans0", "ans1", "ans2"};
    for (int k = 0; k < 3; k++)
        if ((rc = json_text(file, ln, "", r, ans_keys[k], ans_keys[k], true, &ans[k], err)))
            return rc;
    v = json_object_get(r, "label");
    if (!v) return row_error(err, file, ln, "field 'label' is missing");
    if (!json_is_integer(v)) return row_error(err, file, ln, "field 'label' is not an integer");
    if (json_integer_value(v) < 0 || json_integer_value(v) > 2)
        return row_error(err, file, ln, "field 'label': %lld is not 0, 1 or 2",
                         (long long)json_integer_value(v));
    int label = (int)json_integer_value(v);
    /* stereotyped groups */
    json_t *meta = json_object_get(r, "additional_metadata");
    if (!meta) return row_error(err, file, ln, "field 'additional_metadata' is missing");
    if (!json_is_object(meta))
        return row_error(err, file, ln, "field 'additional_metadata' is not an object");
    json_t *groups = json_object_get(meta, "stereotyped_groups");
    if (!groups)
        return row_error(err, file, ln,
                         "field 'additional_metadata.stereotyped_groups' is missing");
    if (!json_is_array(groups))
        return row_error(err, file, ln,
                         "field 'additional_metadata.stereotyped_groups' is not an array");
    for (size_t g = 0; g < json_array_size(groups); g++)
        if (!json_is_string(json_array_get(groups, g)))
            return row_error(err, file, ln,
                             "field 'additional_metadata.stereotyped_groups[%zu]' is not a string",
                             g);
    /* answer_info: which answer is the target, which the unknown */
    json_t *info = json_object_get(r, "answer_info");
    if (!info) return row_error(err, file, ln, "field 'answer_info' is missing");
    if (!json_is_object(info))
        return row_error(err, file, ln, "field 'answer_info' is not an object");
    bool target[3], unknown[3];
    int n_target = 0, n_unknown = 0;
    for (int k = 0; k < 3; k++) {
        json_t *a = json_object_get(info, ans_keys[k]);
        if (!a) return row_error(err, file, ln, "field 'answer_info.%s' is missing", ans_keys[k]);
        /* [name, group] as BBQ ships them; exactly two keeps the match against the groups
         * linear in the row */
        if (!json_is_array(a) || json_array_size(a) != 2)
            return row_error(err, file, ln, "field 'answer_info.%s' is not an array of two strings",
                             ans_keys[k]);
        target[k] = unknown[k] = false;
        for (size_t j = 0; j < json_array_size(a); j++) {
            json_t *s = json_array_get(a, j);
            if (!json_is_string(s))
                return row_error(err, file, ln, "field 'answer_info.%s[%zu]' is not a string",
                                 ans_keys[k], j);
            const char *sv = json_string_value(s);
            if (j == 1 && !strcmp(sv, "unknown")) unknown[k] = true;
            for (size_t g = 0; g < json_array_size(groups) && !target[k]; g++)
                if (ieq(sv, json_string_length(s), json_string_value(json_array_get(groups, g))))
                    target[k] = true;
        }
        n_target += target[k];
        n_unknown += unknown[k];
    }
    int t = -1, u = -1, other = -1;
    for (int k = 0; k < 3; k++) {
        if (target[k]) t = k;
        if (unknown[k]) u = k;
    }
    if (n_target != 1)
        return row_error(err, file, ln,
                         "field 'answer_info': %d answers match "
                         "additional_metadata.stereotyped_groups, expected exactly one",
                         n_target);
    if (n_unknown != 1)
        return row_error(err, file, ln,
                         "field 'answer_info': %d answers are 'unknown', expected "
                         "exactly one",
                         n_unknown);
    if (t == u)
        return row_error(err, file, ln,
                         "field 'answer_info': the 'unknown' answer (%s) also matches "
                         "additional_metadata.stereotyped_groups",
                         ans_keys[u]);
    other = 3 - t - u;
    if ((rc = check_id(L, id, ln, "", "example_id", err))) return rc;
    ks_audit_item x;
    item_init(&x, file, ln);
    x.id = str_dup(id);
    x.category = str_dup(cat);
    x.group = str_dup(cond);
    x.n_options = 3;
    const char *pp[4] = {context, "\n", question, "\nAnswer:"};
    for (int k = 0; k < 3; k++) {
        const char *tp[2] = {" ", ans[k]};
        x.options[k].prompt = concat(pp, 4);
        x.options[k].text = concat(tp, 2);
    }
    x.gold = label;
    x.biased = neg ? t : other;
    x.unknown = u;
    x.flag = ambig ? 1 : 0;
    if (!item_complete(&x, true)) {
        item_clear(&x);
        return nomem(err);
    }
    return offer(L, &x, (aux_t){0, 0}, err);
}

static ks_status load_bbq(loader *L, ks_error *err) {
    char *text;
    size_t len, pos;
    ks_status rc = read_whole(L->file, &text, &len, &pos, err);
    if (rc) return rc;
    long no = 0, rows = 0;
    while (!rc && pos < len) {
        const char *s;
        size_t n;
        if ((rc = next_line(L->file, text, len, &pos, &no, &s, &n, err))) break;
        if (blank(s, n)) continue;
        rows++;
        json_error_t je;
        json_t *r = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
        if (!r) {
            rc = row_error(err, L->file, no, "not JSON: %s (column %d)", je.text, je.column);
            break;
        }
        rc = bbq_row(L, r, no, err);
        json_decref(r);
    }
    if (!rc && !rows) rc = row_error(err, L->file, 1, "no rows (an empty file)");
    free(text);
    return rc;
}

/* ================================================================== WinoBias */

/* The occupations of male_occupations.txt and female_occupations.txt, hashed by their bytes;
 * at most MAX_OCCUPATIONS of at most MAX_OCCUPATION_BYTES each. */
typedef struct {
    char **name;
    size_t *len;
    uint64_t *hash;
    int n;
    int *slot; /* index + 1, 0 empty; 4 * MAX_OCCUPATIONS slots */
} occupations;

#define OCC_SLOTS (4 * MAX_OCCUPATIONS)

static void occ_free(occupations *o) {
    for (int i = 0; i < o->n; i++) free(o->name[i]);
    free(o->name);
    free(o->len);
    free(o->hash);
    free(o->slot);
    memset(o, 0, sizeof *o);
}

static int occ_lookup(const occupations *o, const char *s, size_t n, uint64_t h) {
    for (size_t i = h & (OCC_SLOTS - 1);; i = (i + 1) & (OCC_SLOTS - 1)) {
        int k = o->slot[i] - 1;
        if (k < 0) return -1;
        if (o->hash[k] == h && o->len[k] == n && !memcmp(o->name[k], s, n)) return k;
    }
}

static ks_status occ_load_file(occupations *o, const char *path, ks_error *err) {
    char *text;
    size_t len, pos;
    ks_status rc = read_whole(path, &text, &len, &pos, err);
    if (rc) return rc;
    long no = 0;
    while (!rc && pos < len) {
        const char *s;
        size_t n;
        if ((rc = next_line(path, text, len, &pos, &no, &s, &n, err))) break;
        while (n && (*s == ' ' || *s == '\t')) s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
        if (!n) continue;
        char b[48];
        if (n > MAX_OCCUPATION_BYTES) {
            rc = row_error(err, path, no, "field 'occupation' is longer than %d bytes",
                           MAX_OCCUPATION_BYTES);
            break;
        }
        if (!utf8_ok(s, n) || memchr(s, '[', n) || memchr(s, ']', n)) {
            rc = row_error(err, path, no,
                           "field 'occupation': '%s' is not UTF-8 text without "
                           "brackets",
                           shown(s, n, b));
            break;
        }
        uint64_t h = fnv1a(s, n);
        if (occ_lookup(o, s, n, h) >= 0) continue; /* the union of the two lists */
        if (o->n == MAX_OCCUPATIONS) {
            rc = row_error(err, path, no, "more than %d occupations, the limit", MAX_OCCUPATIONS);
            break;
        }
        o->name[o->n] = str_dupn(s, n);
        if (!o->name[o->n]) {
            rc = nomem(err);
            break;
        }
        o->len[o->n] = n;
        o->hash[o->n] = h;
        size_t i = h & (OCC_SLOTS - 1);
        while (o->slot[i]) i = (i + 1) & (OCC_SLOTS - 1);
        o->slot[i] = ++o->n;
    }
    free(text);
    return rc;
}

static ks_status occ_load(occupations *o, const char *dir, ks_error *err) {
    memset(o, 0, sizeof *o);
    o->name = calloc(MAX_OCCUPATIONS, sizeof *o->name);
    o->len = calloc(MAX_OCCUPATIONS, sizeof *o->len);
    o->hash = calloc(MAX_OCCUPATIONS, sizeof *o->hash);
    o->slot = calloc(OCC_SLOTS, sizeof *o->slot);
    if (!o->name || !o->len || !o->hash || !o->slot) return nomem(err);
    static const char *const lists[2] = {"male_occupations.txt", "female_occupations.txt"};
    for (int i = 0; i < 2; i++) {
        char *p = path_join(dir, lists[i]);
        if (!p) return nomem(err);
        ks_status rc = occ_load_file(o, p, err);
        free(p);
        if (rc) return rc;
    }
    if (o->n < 2)
        return ks_error_set(err, KS_ERR_FORMAT,
                            "%s: male_occupations.txt and female_occupations.txt "
                            "name %d occupation(s), expected at least two",
                            dir, o->n);
    return KS_OK;
}

static bool word_byte(char c) {
    unsigned char u = (unsigned char)c;
    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '_' ||
           u >= 0x80;
}

/* 0 male, 1 female, -1 not a gendered pronoun */
static int pronoun_gender(const char *s, size_t n) {
    static const char *const male[] = {"he", "him", "his", "himself"};
    static const char *const female[] = {"she", "her", "hers", "herself"};
    for (int i = 0; i < 4; i++) {
        if (ieq(s, n, male[i])) return 0;
        if (ieq(s, n, female[i])) return 1;
    }
    return -1;
}

typedef struct {
    size_t det, start, end; /* the determiner's start, the occupation's [start, end) */
    int occ;
} mention;

#define MAX_BRACKETS 16

static const char *const mc_question = "\nIn the sentence above, who does \"";
static const char *const mc_question_end = "\" refer to?\nAnswer:";

/* One line "N sentence": the sentence shown without the brackets, its referent (first bracket:
 * the/a/an + a known occupation, the determiner inside or just before the bracket), its pronoun
 * (second bracket; later brackets are further mentions of the same pronoun) and its candidates:
 * the distinct known occupations after the/a/an before the pronoun, exactly two. */
static ks_status wb_line(loader *L, const occupations *o, const char *s, size_t n, long ln,
                         const char *category, bool pro, const char *base, int stem,
                         ks_error *err) {
    const char *file = L->file;
    char b[48];
    size_t digits = 0;
    while (digits < n && s[digits] >= '0' && s[digits] <= '9') digits++;
    if (digits == 0 || digits > 9 || digits >= n || s[digits] != ' ')
        return row_error(err, file, ln,
                         "field 'number': the line does not start with a number and a "
                         "space ('%s')",
                         shown(s, n, b));
    s += digits + 1;
    n -= digits + 1;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (!utf8_ok(s, n)) return row_error(err, file, ln, "field 'sentence' is not valid UTF-8 text");
    char *plain = malloc(n + 1);
    mention *m = NULL;
    if (!plain) return nomem(err);
    size_t bs[MAX_BRACKETS], be[MAX_BRACKETS]; /* bracket spans in plain */
    int nb = 0;
    bool open = false;
    size_t k = 0;
    ks_status rc = KS_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        if (s[i] == '[') {
            if (open)
                rc = row_error(err, file, ln, "field 'brackets': '[' inside a bracketed span");
            else if (nb == MAX_BRACKETS)
                rc = row_error(err, file, ln, "field 'brackets': more than %d bracketed spans",
                               MAX_BRACKETS);
            else
                bs[nb] = k, open = true;
        } else if (s[i] == ']') {
            if (!open)
                rc = row_error(err, file, ln, "field 'brackets': ']' without '['");
            else
                be[nb++] = k, open = false;
        } else {
            plain[k++] = s[i];
        }
    }
    plain[k] = 0;
    if (!rc && open) rc = row_error(err, file, ln, "field 'brackets': '[' is not closed");
    if (!rc && nb < 2)
        rc = row_error(err, file, ln,
                       "field 'brackets': %d bracketed span(s), expected the referent "
                       "and the pronoun",
                       nb);
    if (!rc && !k) rc = row_error(err, file, ln, "field 'sentence' is empty");
    int gender = -1;
    for (int j = 1; j < nb && !rc; j++) {
        int g = pronoun_gender(plain + bs[j], be[j] - bs[j]);
        if (g < 0)
            rc = row_error(err, file, ln,
                           "field '%s': '[%s]' is not he/him/his/himself or "
                           "she/her/hers/herself",
                           j == 1 ? "pronoun" : "brackets", shown(plain + bs[j], be[j] - bs[j], b));
        else if (j == 1)
            gender = g;
        else if (g != gender)
            rc = row_error(err, file, ln, "field 'brackets': '[%s]' is not of the pronoun's gender",
                           shown(plain + bs[j], be[j] - bs[j], b));
    }
    /* occupation mentions: a determiner word, spaces, a known occupation ending a word; matched
     * left to right, longest occupation first, without overlaps */
    int nm = 0, mcap = 0;
    for (size_t i = 0; i < k && !rc;) {
        if (!word_byte(plain[i])) {
            i++;
            continue;
        }
        size_t w = i;
        while (w < k && word_byte(plain[w])) w++;
        size_t p = w;
        while (p < k && plain[p] == ' ') p++;
        int best = -1;
        size_t best_len = 0;
        if (p > w && (ieq(plain + i, w - i, "the") || ieq(plain + i, w - i, "a") ||
                      ieq(plain + i, w - i, "an"))) {
            uint64_t h = 1469598103934665603ULL;
            for (size_t q = 1; q <= MAX_OCCUPATION_BYTES && p + q <= k; q++) {
                h = (h ^ (unsigned char)plain[p + q - 1]) * 1099511628211ULL;
                if (p + q < k && word_byte(plain[p + q])) continue;
                int oc = occ_lookup(o, plain + p, q, h);
                if (oc >= 0) best = oc, best_len = q;
            }
        }
        if (best < 0) {
            i = w;
            continue;
        }
        if (nm == mcap) {
            mcap = mcap ? 2 * mcap : 8;
            mention *nmv = realloc(m, (size_t)mcap * sizeof *nmv);
            if (!nmv) {
                rc = nomem(err);
                break;
            }
            m = nmv;
        }
        m[nm++] = (mention){i, p, p + best_len, best};
        i = p + best_len;
    }
    int ref = -1, cand[2] = {-1, -1}, n_cand = 0;
    if (!rc) {
        size_t rs = bs[0], re = be[0]; /* spaces just inside the brackets do not count */
        while (rs < re && plain[rs] == ' ') rs++;
        while (re > rs && plain[re - 1] == ' ') re--;
        for (int j = 0; j < nm; j++)
            if (m[j].end == re && (m[j].start == rs || m[j].det == rs)) ref = m[j].occ;
        if (ref < 0)
            rc = row_error(err, file, ln,
                           "field 'referent': '[%s]' is not the/a/an and a known "
                           "occupation",
                           shown(plain + bs[0], be[0] - bs[0], b));
    }
    for (int j = 0; j < nm && !rc && m[j].end <= bs[1]; j++) {
        if (m[j].occ == cand[0] || m[j].occ == cand[1]) continue;
        if (n_cand == 2) {
            rc = row_error(err, file, ln,
                           "field 'occupations': more than two known occupations "
                           "before the pronoun ('%s' is the third)",
                           o->name[m[j].occ]);
            break;
        }
        cand[n_cand++] = m[j].occ;
    }
    if (!rc && n_cand != 2)
        rc = row_error(err, file, ln,
                       "field 'occupations': %d known occupation(s) before the "
                       "pronoun, expected two",
                       n_cand);
    if (rc) {
        free(plain);
        free(m);
        return rc;
    }
    ks_audit_item x;
    item_init(&x, file, ln);
    char lnbuf[32];
    snprintf(lnbuf, sizeof lnbuf, ":%ld", ln);
    const char *idp[2] = {base, lnbuf};
    x.id = concat(idp, 2);
    x.category = str_dup(category);
    x.group = str_dup(o->name[ref]);
    x.n_options = 2;
    char *pron = str_dupn(plain + bs[1], be[1] - bs[1]);
    if (pron) {
        const char *pp[4] = {plain, mc_question, pron, mc_question_end};
        for (int j = 0; j < 2; j++) {
            const char *tp[2] = {" the ", o->name[cand[j]]};
            x.options[j].prompt = concat(pp, 4);
            x.options[j].text = concat(tp, 2);
        }
    }
    x.gold = cand[0] == ref ? 0 : 1;
    x.flag = pro ? 1 : 0;
    free(pron);
    free(plain);
    free(m);
    if (!item_complete(&x, true)) {
        item_clear(&x);
        return nomem(err);
    }
    return offer(L, &x, (aux_t){stem, gender}, err);
}

static ks_status load_winobias(loader *L, ks_error *err) {
    const char *base = base_name(L->file);
    bool pro = !strncmp(base, "pro_stereotyped_type", 20);
    bool anti = !strncmp(base, "anti_stereotyped_type", 21);
    const char *t = base + (pro ? 20 : anti ? 21 : 0);
    if ((!pro && !anti) || (t[0] != '1' && t[0] != '2') || strncmp(t + 1, ".txt.", 5) || !t[6])
        return ks_error_set(
            err, KS_ERR_ARG,
            "%s: a WinoBias file is named {pro,anti}_stereotyped_type{1,2}.txt.SPLIT "
            "(the name says its type and whether it is pro- or anti-stereotyped)",
            L->file);
    const char *category = t[0] == '1' ? "type1" : "type2";
    /* the pair stem: the same path with pro_/anti_ taken off, so a pro file and its anti file
     * (same directory, type and split) share it */
    char *stem;
    {
        const char *rest = pro ? base + 4 : base + 5;
        char *dir = dir_name(L->file);
        stem = dir ? path_join(dir, rest) : NULL;
        free(dir);
        if (!stem) return nomem(err);
    }
    int si = -1;
    for (int i = 0; i < L->n_stems; i++)
        if (!strcmp(L->stems[i], stem)) si = i;
    if (si < 0) {
        char **ns = realloc(L->stems, (size_t)(L->n_stems + 1) * sizeof *ns);
        if (!ns) {
            free(stem);
            return nomem(err);
        }
        L->stems = ns;
        si = L->n_stems;
        L->stems[L->n_stems++] = stem;
    } else {
        free(stem);
    }
    occupations o = {0};
    char *dir = dir_name(L->file);
    ks_status rc = dir ? occ_load(&o, dir, err) : nomem(err);
    free(dir);
    char *text = NULL;
    size_t len = 0, pos = 0;
    if (!rc) rc = read_whole(L->file, &text, &len, &pos, err);
    long no = 0, rows = 0;
    while (!rc && pos < len) {
        const char *s;
        size_t n;
        if ((rc = next_line(L->file, text, len, &pos, &no, &s, &n, err))) break;
        if (blank(s, n)) continue;
        rows++;
        rc = wb_line(L, &o, s, n, no, category, pro, base, si, err);
    }
    if (!rc && !rows) rc = row_error(err, L->file, 1, "no sentences (an empty file)");
    free(text);
    occ_free(&o);
    return rc;
}

/* (pro, anti) items of the same file pair and line are the same sentence with the pronoun's
 * gender swapped when their candidates, their gold and nothing but the pronoun's gender
 * differ: only then are they linked. */
typedef struct {
    int stem;
    long line;
    int flag;
    int index;
} wb_key;

static int wb_cmp(const void *a, const void *b) {
    const wb_key *x = a, *y = b;
    if (x->stem != y->stem) return x->stem < y->stem ? -1 : 1;
    if (x->line != y->line) return x->line < y->line ? -1 : 1;
    if (x->flag != y->flag) return x->flag < y->flag ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static ks_status wb_link(loader *L, ks_error *err) {
    ks_audit_items *out = L->out;
    if (out->n == 0) return KS_OK;
    wb_key *k = malloc((size_t)out->n * sizeof *k);
    if (!k) return nomem(err);
    for (int i = 0; i < out->n; i++)
        k[i] = (wb_key){L->aux[i].key, out->items[i].line, out->items[i].flag, i};
    qsort(k, (size_t)out->n, sizeof *k, wb_cmp);
    for (int i = 0; i + 1 < out->n; i++) {
        const wb_key *a = &k[i], *p = &k[i + 1]; /* anti (flag 0) sorts before pro (flag 1) */
        if (a->stem != p->stem || a->line != p->line || a->flag != 0 || p->flag != 1) continue;
        ks_audit_item *x = &out->items[a->index], *y = &out->items[p->index];
        bool same = x->gold == y->gold && x->n_options == y->n_options &&
                    L->aux[a->index].gender != L->aux[p->index].gender;
        for (int j = 0; same && j < x->n_options; j++)
            same = !strcmp(x->options[j].text, y->options[j].text);
        if (same) {
            x->pair = p->index;
            y->pair = a->index;
        }
    }
    free(k);
    return KS_OK;
}

/* ================================================================== Winogender */

/* occupations-stats.tsv: occupation -> bls_pct_female (value), in a string map */
static ks_status wg_stats(const char *path, smap *occ, double **pct, ks_error *err) {
    char *text;
    size_t len, pos;
    ks_status rc = read_whole(path, &text, &len, &pos, err);
    if (rc) return rc;
    long no = 0;
    int c_occ = -1, c_pct = -1, n_cols = 0, n = 0, cap = 0;
    while (!rc && pos < len) {
        const char *s;
        size_t sn;
        if ((rc = next_line(path, text, len, &pos, &no, &s, &sn, err))) break;
        if (no > 1 && blank(s, sn)) continue;
        if (!utf8_ok(s, sn)) {
            rc = row_error(err, path, no, "field 'occupation': the line is not valid UTF-8 text");
            break;
        }
        /* split on tabs */
        const char *f[MAX_CSV_COLUMNS];
        size_t fl[MAX_CSV_COLUMNS];
        int nf = 0;
        nf = split_tabs(s, sn, f, fl);
        if (nf > MAX_CSV_COLUMNS) {
            rc = row_error(err, path, no, "more than %d fields", MAX_CSV_COLUMNS);
            break;
        }
        if (no == 1) {
            n_cols = nf;
            for (int i = 0; i < nf; i++) {
                if (fl[i] == 10 && !memcmp(f[i], "occupation", 10)) c_occ = i;
                if (fl[i] == 14 && !memcmp(f[i], "bls_pct_female", 14)) c_pct = i;
            }
            if (c_occ < 0 || c_pct < 0) {
                rc = row_error(err, path, no, "field '%s': missing from the header",
                               c_occ < 0 ? "occupation" : "bls_pct_female");
                break;
            }
            continue;
        }
        if (nf != n_cols) {
            rc = row_error(err, path, no, "field '%s': the row has %d fields, the header %d",
                           nf < n_cols ? "bls_pct_female" : "(extra)", nf, n_cols);
            break;
        }
        if (!fl[c_occ]) {
            rc = row_error(err, path, no, "field 'occupation' is empty");
            break;
        }
        char num[64], b[48];
        double v = NAN;
        char *end = NULL;
        if (fl[c_pct] > 0 && fl[c_pct] < sizeof num) {
            memcpy(num, f[c_pct], fl[c_pct]);
            num[fl[c_pct]] = 0;
            errno = 0;
            v = strtod(num, &end);
            if (errno || *end || num[0] == ' ') v = NAN;
        }
        if (!(v >= 0 && v <= 100)) {
            rc = row_error(err, path, no, "field 'bls_pct_female': '%s' is not a percentage",
                           shown(f[c_pct], fl[c_pct], b));
            break;
        }
        char *key = str_dupn(f[c_occ], fl[c_occ]);
        if (!key) {
            rc = nomem(err);
            break;
        }
        smap_slot *slot;
        bool fresh;
        rc = smap_put(occ, key, no, n, &slot, &fresh, err);
        if (!rc && !fresh)
            rc = row_error(err, path, no, "field 'occupation': '%s' repeats line %ld",
                           shown(key, strlen(key), b), slot->line);
        free(key);
        if (rc) break;
        if (n == MAX_OCCUPATIONS) {
            rc = row_error(err, path, no, "more than %d occupations, the limit", MAX_OCCUPATIONS);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            double *np = realloc(*pct, (size_t)cap * sizeof *np);
            if (!np) {
                rc = nomem(err);
                break;
            }
            *pct = np;
        }
        (*pct)[n++] = v;
    }
    if (!rc && no == 0)
        rc = row_error(err, path, 1, "empty file (no header)");
    else if (!rc && n == 0)
        rc = row_error(err, path, 2, "no occupations after the header");
    free(text);
    return rc;
}

static const char *const wg_genders[3] = {"male", "female", "neutral"};

static int wg_pronoun(const char *w, size_t n) {
    static const char *const p[10] = {"he",   "his",  "him",   "she",  "her",
                                      "hers", "they", "their", "them", "theirs"};
    static const int g[10] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 2};
    for (int i = 0; i < 10; i++)
        if (ieq(w, n, p[i])) return g[i];
    return -1;
}

static ks_status wg_row(loader *L, const smap *occ, const double *pct, const char *sid, size_t sidn,
                        const char *sent, size_t sn, long ln, ks_error *err) {
    const char *file = L->file;
    char b[48];
    if (!sidn) return row_error(err, file, ln, "field 'sentid' is empty");
    if (!sn) return row_error(err, file, ln, "field 'sentence' is empty");
    if (!utf8_ok(sid, sidn))
        return row_error(err, file, ln, "field 'sentid' is not valid UTF-8 text");
    if (!utf8_ok(sent, sn))
        return row_error(err, file, ln, "field 'sentence' is not valid UTF-8 text");
    /* occupation.participant.answer.gender.txt */
    const char *part[6];
    size_t pl[6];
    int np = 0;
    for (size_t a = 0;;) {
        const char *dot = memchr(sid + a, '.', sidn - a);
        size_t e = dot ? (size_t)(dot - sid) : sidn;
        if (np == 5) {
            np++;
            break;
        }
        part[np] = sid + a;
        pl[np++] = e - a;
        if (!dot) break;
        a = e + 1;
    }
    if (np != 5)
        return row_error(err, file, ln,
                         "field 'sentid': '%s' is not occupation.participant.answer."
                         "gender.txt (%s than 5 dot-separated parts)",
                         shown(sid, sidn, b), np < 5 ? "fewer" : "more");
    for (int i = 0; i < 5; i++)
        if (!pl[i])
            return row_error(err, file, ln, "field 'sentid': '%s' has an empty part",
                             shown(sid, sidn, b));
    if (pl[4] != 3 || memcmp(part[4], "txt", 3))
        return row_error(err, file, ln, "field 'sentid': '%s' does not end in .txt",
                         shown(sid, sidn, b));
    if (pl[2] != 1 || (part[2][0] != '0' && part[2][0] != '1'))
        return row_error(err, file, ln, "field 'sentid': the answer part of '%s' is not 0 or 1",
                         shown(sid, sidn, b));
    int gender = -1;
    for (int g = 0; g < 3; g++)
        if (pl[3] == strlen(wg_genders[g]) && !memcmp(part[3], wg_genders[g], pl[3])) gender = g;
    if (gender < 0)
        return row_error(err, file, ln,
                         "field 'sentid': the gender part of '%s' is not male, female "
                         "or neutral",
                         shown(sid, sidn, b));
    char *occname = str_dupn(part[0], pl[0]), *partname = str_dupn(part[1], pl[1]);
    char *id = str_dupn(sid, sidn), *sentence = str_dupn(sent, sn);
    char *tkey = NULL, *pron = NULL;
    ks_status rc = KS_OK;
    if (!occname || !partname || !id || !sentence) rc = nomem(err);
    smap_slot *os = NULL;
    if (!rc) {
        os = smap_find(occ, occname, fnv1a(occname, pl[0]));
        if (!os || !os->key)
            rc = row_error(err, file, ln,
                           "field 'sentid': occupation '%s' is not in "
                           "occupations-stats.tsv",
                           shown(occname, pl[0], b));
    }
    /* the pronoun: the first whitespace-separated word that, kept to its ASCII letters, is one */
    if (!rc) {
        char w[16];
        for (size_t i = 0; i < sn && !pron;) {
            while (i < sn && (sent[i] == ' ' || sent[i] == '\t')) i++;
            size_t j = i, wn = 0;
            bool fits = true;
            while (j < sn && sent[j] != ' ' && sent[j] != '\t') {
                char c = sent[j++];
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
                    if (wn < sizeof w - 1)
                        w[wn++] = c;
                    else
                        fits = false;
                }
            }
            if (j > i && fits) {
                int g = wg_pronoun(w, wn);
                if (g >= 0) {
                    if (g != gender)
                        rc = row_error(err, file, ln,
                                       "field 'sentence': its pronoun '%.*s' is not "
                                       "%s, as the sentid says",
                                       (int)wn, w, wg_genders[gender]);
                    else if (!(pron = str_dupn(w, wn)))
                        rc = nomem(err);
                    break;
                }
            }
            i = j;
        }
        if (!rc && !pron)
            rc = row_error(err, file, ln,
                           "field 'sentence': no pronoun (he/his/him, she/her/hers, "
                           "they/their/them/theirs)");
    }
    if (!rc) rc = check_id(L, id, ln, "", "sentid", err);
    /* the template: flag, counted over the whole load in order of first appearance */
    int flag = 0;
    if (!rc) {
        char fi[24];
        snprintf(fi, sizeof fi, "%d:", L->file_index);
        const char *kp[6] = {fi, occname, ".", partname, ".", part[2][0] == '0' ? "0" : "1"};
        tkey = concat(kp, 6);
        smap_slot *ts;
        bool fresh;
        if (!tkey)
            rc = nomem(err);
        else
            rc = smap_put(&L->templates, tkey, ln, (int)L->templates.n, &ts, &fresh, err);
        if (!rc) flag = ts->value;
    }
    if (rc) {
        free(occname);
        free(partname);
        free(id);
        free(sentence);
        free(tkey);
        free(pron);
        return rc;
    }
    ks_audit_item x;
    item_init(&x, file, ln);
    x.id = id;
    x.category = str_dup(occname);
    x.group = str_dup(wg_genders[gender]);
    x.n_options = 3;
    const char *pp[4] = {sentence, mc_question, pron, mc_question_end};
    const char *t0[2] = {" the ", occname};
    const char *t1[2] = {" the ", partname};
    x.options[0].prompt = concat(pp, 4);
    x.options[0].text = concat(t0, 2);
    x.options[1].prompt = concat(pp, 4);
    x.options[1].text = strcmp(partname, "someone") ? concat(t1, 2) : str_dup(" someone");
    x.options[2].prompt = NULL;
    x.options[2].text = sentence;
    x.gold = part[2][0] - '0';
    x.flag = flag;
    x.value = pct[os->value];
    free(occname);
    free(partname);
    free(tkey);
    free(pron);
    bool ok = x.id && x.category && x.group && x.file && x.options[0].prompt &&
              x.options[1].prompt && x.options[0].text && x.options[1].text && x.options[2].text;
    if (!ok) {
        item_clear(&x);
        return nomem(err);
    }
    return offer(L, &x, (aux_t){flag, gender}, err);
}

static ks_status load_winogender(loader *L, ks_error *err) {
    smap occ = {0};
    double *pct = NULL;
    char *dir = dir_name(L->file), *stats = dir ? path_join(dir, "occupations-stats.tsv") : NULL;
    ks_status rc = stats ? wg_stats(stats, &occ, &pct, err) : nomem(err);
    free(dir);
    free(stats);
    char *text = NULL;
    size_t len = 0, pos = 0;
    if (!rc) rc = read_whole(L->file, &text, &len, &pos, err);
    long no = 0, rows = 0;
    int c_id = -1, c_sent = -1, n_cols = 0;
    while (!rc && pos < len) {
        const char *s;
        size_t n;
        if ((rc = next_line(L->file, text, len, &pos, &no, &s, &n, err))) break;
        if (no > 1 && blank(s, n)) continue;
        const char *f[MAX_CSV_COLUMNS];
        size_t fl[MAX_CSV_COLUMNS];
        int nf = 0;
        nf = split_tabs(s, n, f, fl);
        if (nf > MAX_CSV_COLUMNS) {
            rc = row_error(err, L->file, no, "more than %d fields", MAX_CSV_COLUMNS);
            break;
        }
        if (no == 1) {
            n_cols = nf;
            for (int i = 0; i < nf; i++) {
                if (fl[i] == 6 && !memcmp(f[i], "sentid", 6)) c_id = i;
                if (fl[i] == 8 && !memcmp(f[i], "sentence", 8)) c_sent = i;
            }
            if (c_id < 0 || c_sent < 0)
                rc = row_error(err, L->file, no, "field '%s': missing from the header",
                               c_id < 0 ? "sentid" : "sentence");
            continue;
        }
        rows++;
        if (nf != n_cols) {
            rc = row_error(err, L->file, no, "field '%s': the row has %d fields, the header %d",
                           nf < n_cols ? "sentence" : "(extra)", nf, n_cols);
            break;
        }
        rc = wg_row(L, &occ, pct, f[c_id], fl[c_id], f[c_sent], fl[c_sent], no, err);
    }
    if (!rc && no == 0)
        rc = row_error(err, L->file, 1, "empty file (no header)");
    else if (!rc && rows == 0)
        rc = row_error(err, L->file, 2, "no sentences after the header");
    free(text);
    free(pct);
    smap_free(&occ);
    return rc;
}

/* male <-> female of the same template (flag), within the final list */
static ks_status wg_link(loader *L, ks_error *err) {
    ks_audit_items *out = L->out;
    size_t nt = L->templates.n;
    if (!out->n || !nt) return KS_OK;
    int *who = malloc(2 * nt * sizeof *who);
    if (!who) return nomem(err);
    for (size_t i = 0; i < 2 * nt; i++) who[i] = -1;
    for (int i = 0; i < out->n; i++) {
        int g = L->aux[i].gender;
        if (g < 2) who[2 * (size_t)L->aux[i].key + (size_t)g] = i;
    }
    for (size_t t = 0; t < nt; t++)
        if (who[2 * t] >= 0 && who[2 * t + 1] >= 0) {
            out->items[who[2 * t]].pair = who[2 * t + 1];
            out->items[who[2 * t + 1]].pair = who[2 * t];
        }
    free(who);
    return KS_OK;
}


/* ================================================================== counterfactual templates */

/* Our own format (docs/AUDITS.md#counterfactual): templates with "{term}" slots, terms in
 * groups (inline, or HolisticBias descriptors read from the audit's second data file), and
 * target continuations. Errors name the file and the JSON path of the field. */

#define CF_MAX_TEMPLATES 100000
#define CF_MAX_TERMS 100000
#define CF_SLOT "{term}"

__attribute__((format(printf, 4, 5))) static ks_status cf_error(ks_error *err, const char *file,
                                                                const char *field,
                                                                const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ks_error_set(err, KS_ERR_FORMAT, "%s: %s: %s", file, field, msg);
}

/* every "{term}" of t replaced by term; NULL when out of memory */
static char *cf_fill(const char *t, const char *term) {
    size_t tl = strlen(term), n = 0, slots = 0, sl = strlen(CF_SLOT);
    for (const char *p = strstr(t, CF_SLOT); p; p = strstr(p + sl, CF_SLOT)) slots++;
    size_t len = strlen(t) - slots * sl + slots * tl;
    char *o = malloc(len + 1);
    if (!o) return NULL;
    for (const char *p = t; *p;) {
        if (!strncmp(p, CF_SLOT, sl)) {
            memcpy(o + n, term, tl);
            n += tl;
            p += sl;
        } else {
            o[n++] = *p++;
        }
    }
    o[n] = 0;
    return o;
}

static ks_status cf_string(const char *file, const char *field, json_t *v, bool nonempty,
                           const char **out, ks_error *err) {
    if (!json_is_string(v)) return cf_error(err, file, field, "expected a string");
    if (nonempty && json_string_length(v) == 0) return cf_error(err, file, field, "is empty");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return cf_error(err, file, field, "contains a NUL character");
    *out = json_string_value(v);
    return KS_OK;
}

static ks_status cf_check_keys(const char *file, const char *where, json_t *obj,
                               const char *const *keys, ks_error *err) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool known = false;
        for (int i = 0; keys[i] && !known; i++) known = !strcmp(k, keys[i]);
        if (!known) {
            char f[160];
            snprintf(f, sizeof f, "%s%s%.60s", where, *where ? "." : "", k);
            return cf_error(err, file, f, "unknown field");
        }
    }
    return KS_OK;
}

typedef struct {
    const char **term, **group; /* borrowed from the JSON documents */
    int n, cap;
} cf_terms;

/* A term belongs to one group, except that a HolisticBias descriptor listed under several
 * axes (e.g. in gender_and_sex and sexual_orientation) is a term of each (across_groups). */
static ks_status cf_add_term(cf_terms *T, const char *file, const char *field, const char *term,
                             const char *group, bool across_groups, ks_error *err) {
    for (int i = 0; i < T->n; i++)
        if (!strcmp(T->term[i], term) && (!across_groups || !strcmp(T->group[i], group)))
            return cf_error(err, file, field, "term '%.60s' is already in group '%.60s' (a term "
                            "belongs to one group)", term, T->group[i]);
    if (T->n >= CF_MAX_TERMS)
        return cf_error(err, file, field, "more than %d terms, the limit", CF_MAX_TERMS);
    if (T->n == T->cap) {
        int nc = T->cap ? 2 * T->cap : 64;
        const char **a = realloc(T->term, (size_t)nc * sizeof *a);
        if (a) T->term = a;
        const char **b = a ? realloc(T->group, (size_t)nc * sizeof *b) : NULL;
        if (b) T->group = b;
        if (!a || !b) return nomem(err);
        T->cap = nc;
    }
    T->term[T->n] = term;
    T->group[T->n] = group;
    T->n++;
    return KS_OK;
}

static ks_status cf_groups(const char *file, json_t *g, cf_terms *T, ks_error *err) {
    if (!json_is_object(g) || json_object_size(g) == 0)
        return cf_error(err, file, "groups", "expected an object of group name -> [terms]");
    const char *name;
    json_t *list;
    json_object_foreach(g, name, list) {
        char f[200];
        snprintf(f, sizeof f, "groups.%.60s", name);
        if (!name[0]) return cf_error(err, file, "groups", "a group name is empty");
        if (!json_is_array(list) || json_array_size(list) == 0)
            return cf_error(err, file, f, "expected a non-empty array of terms");
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v) {
            snprintf(f, sizeof f, "groups.%.60s[%zu]", name, i);
            const char *t;
            ks_status rc = cf_string(file, f, v, true, &t, err);
            if (!rc) rc = cf_add_term(T, file, f, t, name, false, err);
            if (rc) return rc;
        }
    }
    return KS_OK;
}

static bool in_string_array(json_t *a, const char *s) {
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) if (json_is_string(v) && !strcmp(json_string_value(v), s)) return true;
    return false;
}

static ks_status cf_string_array(const char *file, const char *field, json_t *a, ks_error *err) {
    if (!a) return KS_OK;
    if (!json_is_array(a) || json_array_size(a) == 0)
        return cf_error(err, file, field, "expected a non-empty array of strings");
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        char f[160];
        snprintf(f, sizeof f, "%s[%zu]", field, i);
        const char *s;
        ks_status rc = cf_string(file, f, v, true, &s, err);
        if (rc) return rc;
    }
    return KS_OK;
}

/* HolisticBias descriptors.json: {axis: {bucket: [descriptor | {"descriptor": …}, …]}} */
static ks_status cf_holisticbias(const char *file, json_t *hb, const char *dfile, json_t *desc,
                                 cf_terms *T, ks_error *err) {
    static const char *const keys[] = {"axes", "buckets", "exclude_preference", "group_by",
                                       "max_per_bucket", NULL};
    if (!json_is_object(hb)) return cf_error(err, file, "holisticbias", "expected an object");
    ks_status rc = cf_check_keys(file, "holisticbias", hb, keys, err);
    json_t *axes = json_object_get(hb, "axes"), *buckets = json_object_get(hb, "buckets");
    json_t *excl = json_object_get(hb, "exclude_preference");
    json_t *gb = json_object_get(hb, "group_by"), *mpb = json_object_get(hb, "max_per_bucket");
    if (!rc && !axes) rc = cf_error(err, file, "holisticbias.axes", "missing (which axes to use)");
    if (!rc) rc = cf_string_array(file, "holisticbias.axes", axes, err);
    if (!rc) rc = cf_string_array(file, "holisticbias.buckets", buckets, err);
    if (!rc) rc = cf_string_array(file, "holisticbias.exclude_preference", excl, err);
    bool by_axis = false;
    if (!rc && gb) {
        const char *g = NULL;
        rc = cf_string(file, "holisticbias.group_by", gb, true, &g, err);
        if (!rc && strcmp(g, "bucket") && strcmp(g, "axis"))
            rc = cf_error(err, file, "holisticbias.group_by", "expected \"bucket\" or \"axis\"");
        if (!rc) by_axis = !strcmp(g, "axis");
    }
    long long max_per = 0;
    if (!rc && mpb) {
        if (!json_is_integer(mpb) || json_integer_value(mpb) < 1)
            rc = cf_error(err, file, "holisticbias.max_per_bucket", "expected a positive integer");
        else
            max_per = json_integer_value(mpb);
    }
    if (rc) return rc;
    if (!desc)
        return cf_error(err, file, "holisticbias", "needs HolisticBias' descriptors.json as the "
                        "audit's second data file");
    if (!json_is_object(desc))
        return cf_error(err, dfile, "(top level)", "expected an object of axis -> buckets");
    size_t ai;
    json_t *av;
    json_array_foreach(axes, ai, av) {
        const char *axis = json_string_value(av);
        json_t *bk = json_object_get(desc, axis);
        char f[200];
        snprintf(f, sizeof f, "holisticbias.axes[%zu]", ai);
        if (!bk) return cf_error(err, file, f, "axis '%.60s' is not in %s", axis, dfile);
        if (!json_is_object(bk))
            return cf_error(err, dfile, axis, "expected an object of bucket -> descriptors");
        const char *bname;
        json_t *entries;
        json_object_foreach(bk, bname, entries) {
            if (buckets && !in_string_array(buckets, bname)) continue;
            snprintf(f, sizeof f, "%.60s.%.60s", axis, bname);
            if (!json_is_array(entries)) return cf_error(err, dfile, f, "expected an array");
            size_t i;
            json_t *e;
            long long kept = 0;
            json_array_foreach(entries, i, e) {
                snprintf(f, sizeof f, "%.60s.%.60s[%zu]", axis, bname, i);
                const char *term = NULL, *pref = NULL;
                if (json_is_object(e)) {
                    rc = cf_string(dfile, f, json_object_get(e, "descriptor"), true, &term, err);
                    json_t *p = json_object_get(e, "preference");
                    if (!rc && p) rc = cf_string(dfile, f, p, false, &pref, err);
                } else {
                    rc = cf_string(dfile, f, e, true, &term, err);
                }
                if (rc) return rc;
                if (pref && excl && in_string_array(excl, pref)) continue;
                if (max_per && kept >= max_per) break;
                if ((rc = cf_add_term(T, dfile, f, term, by_axis ? axis : bname, true, err)))
                    return rc;
                kept++;
            }
        }
    }
    if (T->n == 0) return cf_error(err, file, "holisticbias", "selects no descriptor");
    return KS_OK;
}

static json_t *cf_read_json(const char *path, ks_error *err) {
    char *text = NULL;
    size_t len = 0, skip = 0;
    if (read_whole(path, &text, &len, &skip, err)) return NULL;
    json_error_t je;
    json_t *j = json_loadb(text + skip, len - skip, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!j) row_error(err, path, je.line, "not valid JSON: %s", je.text);
    return j;
}

static ks_status load_counterfactual(loader *L, char *const *files, int n_files, ks_error *err) {
    static const char *const keys[] = {"description", "templates", "targets", "groups",
                                       "holisticbias", NULL};
    const char *file = files[0];
    if (n_files > 2)
        return ks_error_set(err, KS_ERR_ARG, "%s: counterfactual audits take one templates file "
                            "and, with \"holisticbias\", its descriptors.json (%d files given)",
                            file, n_files);
    json_t *j = cf_read_json(file, err), *desc = NULL;
    if (!j) return KS_ERR_FORMAT;
    cf_terms T = {0};
    ks_status rc = json_is_object(j) ? cf_check_keys(file, "", j, keys, err)
                                     : cf_error(err, file, "(top level)", "expected an object");
    json_t *tm = json_object_get(j, "templates"), *tg = json_object_get(j, "targets");
    json_t *gr = json_object_get(j, "groups"), *hb = json_object_get(j, "holisticbias");
    if (!rc && (!json_is_array(tm) || json_array_size(tm) == 0))
        rc = cf_error(err, file, "templates", tm ? "expected a non-empty array" : "missing");
    if (!rc && json_array_size(tm) > CF_MAX_TEMPLATES)
        rc = cf_error(err, file, "templates", "more than %d templates, the limit",
                      CF_MAX_TEMPLATES);
    if (!rc && (!json_is_array(tg) || json_array_size(tg) == 0 ||
                json_array_size(tg) > KS_AUDIT_MAX_OPTIONS))
        rc = cf_error(err, file, "targets", tg ? "expected an array of 1 to %d continuations"
                                               : "missing (1 to %d continuations)",
                      KS_AUDIT_MAX_OPTIONS);
    size_t i, n_targets = json_array_size(tg);
    json_t *v;
    if (!rc) json_array_foreach(tg, i, v) {
        char f[64];
        snprintf(f, sizeof f, "targets[%zu]", i);
        const char *t;
        if ((rc = cf_string(file, f, v, true, &t, err))) break;
        for (size_t k = 0; k < i && !rc; k++)
            if (!strcmp(json_string_value(json_array_get(tg, k)), t))
                rc = cf_error(err, file, f, "repeats targets[%zu]", k);
        if (rc) break;
    }
    if (!rc && !gr == !hb)
        rc = cf_error(err, file, "groups", "give exactly one of \"groups\" and \"holisticbias\"");
    if (!rc && n_files == 2 && !hb)
        rc = cf_error(err, file, "holisticbias", "missing, but a second data file (%s) was given",
                      files[1]);
    if (!rc && hb && n_files == 2 && !(desc = cf_read_json(files[1], err))) rc = KS_ERR_FORMAT;
    if (!rc) rc = gr ? cf_groups(file, gr, &T, err)
                     : cf_holisticbias(file, hb, n_files == 2 ? files[1] : "", desc, &T, err);
    /* templates: validated first, so an error never depends on the filters */
    if (!rc) json_array_foreach(tm, i, v) {
        char f[64];
        snprintf(f, sizeof f, "templates[%zu]", i);
        const char *user = NULL, *text = NULL;
        if (json_is_object(v)) {
            static const char *const tkeys[] = {"user", "text", NULL};
            if ((rc = cf_check_keys(file, f, v, tkeys, err))) break;
            json_t *u = json_object_get(v, "user"), *t = json_object_get(v, "text");
            char ff[80];
            snprintf(ff, sizeof ff, "%s.user", f);
            if (u && (rc = cf_string(file, ff, u, true, &user, err))) break;
            snprintf(ff, sizeof ff, "%s.text", f);
            if (t)
                rc = cf_string(file, ff, t, !user, &text, err);
            else if (!user)
                rc = cf_error(err, file, ff, "missing (a template without \"user\" needs a text)");
            else
                text = "";
            if (rc) break;
        } else if ((rc = cf_string(file, f, v, true, &text, err))) {
            break;
        }
        if (!strstr(text, CF_SLOT) && !(user && strstr(user, CF_SLOT))) {
            rc = cf_error(err, file, f, "has no %s slot", CF_SLOT);
            break;
        }
    }
    for (i = 0; !rc && i < json_array_size(tm); i++) {
        json_t *t = json_array_get(tm, i);
        const char *user = json_is_object(t) ? json_string_value(json_object_get(t, "user")) : NULL;
        const char *text = json_is_object(t) ? json_string_value(json_object_get(t, "text"))
                                             : json_string_value(t);
        if (!text) text = "";
        for (int k = 0; k < T.n && !rc; k++) {
            ks_audit_item x;
            item_init(&x, file, 1);
            char id[64];
            snprintf(id, sizeof id, "t%zu/", i);
            bool shared = false; /* the term is in another group too: the id names the group */
            for (int q = 0; q < T.n && !shared; q++)
                shared = q != k && !strcmp(T.term[q], T.term[k]);
            const char *parts[4] = {id, T.group[k], "/", T.term[k]};
            const char *plain[2] = {id, T.term[k]};
            x.id = shared ? concat(parts, 4) : concat(plain, 2);
            x.category = str_dup(T.group[k]);
            x.group = str_dup(T.term[k]);
            x.context = cf_fill(text, T.term[k]);
            x.flag = (int)i;
            x.n_options = (int)n_targets;
            bool ok = x.id && x.category && x.group && x.context;
            for (int o = 0; o < x.n_options && ok; o++) {
                x.options[o].text = str_dup(json_string_value(json_array_get(tg, (size_t)o)));
                if (user) x.options[o].prompt = cf_fill(user, T.term[k]);
                ok = x.options[o].text && (!user || x.options[o].prompt);
            }
            if (!ok) {
                item_clear(&x);
                rc = nomem(err);
                break;
            }
            rc = offer(L, &x, (aux_t){0, 0}, err);
        }
    }
    free(T.term);
    free(T.group);
    json_decref(desc);
    json_decref(j);
    return rc;
}


/* ================================================================== BOLD prompts */

/* {group: {name: [prompt, …]}}: one item per prompt, id "<group>/<name>#<j>". The shipped files
 * are one line each, so errors name the JSON path of the field. */
static ks_status load_bold(loader *L, ks_error *err) {
    json_t *root = cf_read_json(L->file, err);
    if (!root) return KS_ERR_FORMAT;
    ks_status rc = KS_OK;
    if (!json_is_object(root) || json_object_size(root) == 0)
        rc = cf_error(err, L->file, "(top level)", "expected a non-empty object of group -> "
                      "{name -> [prompts]}");
    const char *g, *name;
    json_t *names, *list;
    if (!rc) json_object_foreach(root, g, names) {
        char f[200];
        snprintf(f, sizeof f, "%.80s", g);
        if (!g[0] || !utf8_ok(g, strlen(g))) {
            rc = cf_error(err, L->file, "(top level)", "a group name is empty or not UTF-8");
            break;
        }
        if (!json_is_object(names) || json_object_size(names) == 0) {
            rc = cf_error(err, L->file, f, "expected a non-empty object of name -> [prompts]");
            break;
        }
        json_object_foreach(names, name, list) {
            snprintf(f, sizeof f, "%.80s.%.80s", g, name);
            if (!name[0]) {
                rc = cf_error(err, L->file, g, "a name is empty");
                break;
            }
            if (!json_is_array(list) || json_array_size(list) == 0) {
                rc = cf_error(err, L->file, f, "expected a non-empty array of prompts");
                break;
            }
            size_t j;
            json_t *v;
            json_array_foreach(list, j, v) {
                char fj[240];
                snprintf(fj, sizeof fj, "%.200s[%zu]", f, j);
                const char *prompt = NULL;
                /* empty prompts occur in the shipped files (5 of 23,679): kept as they are,
                 * continued from BOS alone (docs/AUDITS.md) */
                if ((rc = cf_string(L->file, fj, v, false, &prompt, err))) break;
                ks_audit_item x;
                item_init(&x, L->file, 1);
                char idx[32];
                snprintf(idx, sizeof idx, "#%zu", j);
                const char *parts[4] = {g, "/", name, idx};
                x.id = concat(parts, 4);
                x.category = str_dup(g);
                x.group = str_dup(name);
                x.n_options = 1;
                x.options[0].text = str_dup(prompt);
                if (!item_complete(&x, false)) {
                    item_clear(&x);
                    rc = nomem(err);
                    break;
                }
                if ((rc = check_id(L, x.id, 1, "", "id", err))) {
                    item_clear(&x);
                    break;
                }
                if ((rc = offer(L, &x, (aux_t){0, 0}, err))) break;
            }
            if (rc) break;
        }
        if (rc) break;
    }
    json_decref(root);
    return rc;
}

/* ================================================================== files and directories */

typedef struct {
    char **v;
    int n, cap;
} strlist;

static void strlist_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Takes ownership of s. */
static ks_status strlist_push(strlist *l, char *s, ks_error *err) {
    if (!s) return nomem(err);
    if (l->n == MAX_FILES) {
        free(s);
        return ks_error_set(err, KS_ERR_ARG, "more than %d data files in one audit, the limit",
                            MAX_FILES);
    }
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 8;
        char **nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) {
            free(s);
            return nomem(err);
        }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = s;
    return KS_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The files a path stands for (docs/AUDITS.md): a file is itself; a directory is, for BBQ,
 * every *.jsonl in it sorted by name; for WinoBias, the four files of the split; for
 * Winogender, its all_sentences.tsv. */
static ks_status expand(ks_audit_kind kind, const char *path, const char *split, strlist *files,
                        ks_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return strlist_push(files, str_dup(path), err);
    ks_status rc = KS_OK;
    if (kind == KS_AUDIT_BBQ) {
        DIR *d = opendir(path);
        if (!d) return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
        int first = files->n;
        struct dirent *e;
        while (!rc && (e = readdir(d))) {
            if (e->d_name[0] == '.' || !ends_with(e->d_name, ".jsonl")) continue;
            char *p = path_join(path, e->d_name);
            struct stat fs;
            if (p && (stat(p, &fs) != 0 || !S_ISREG(fs.st_mode))) {
                free(p);
                continue;
            }
            rc = strlist_push(files, p, err);
        }
        closedir(d);
        if (!rc && files->n == first)
            rc = ks_error_set(err, KS_ERR_IO, "%s: no *.jsonl files (BBQ's one file per category)",
                              path);
        if (!rc) qsort(files->v + first, (size_t)(files->n - first), sizeof *files->v, cmp_str);
        return rc;
    }
    if (kind == KS_AUDIT_WINOBIAS) {
        static const char *const names[4] = {"pro_stereotyped_type1", "anti_stereotyped_type1",
                                             "pro_stereotyped_type2", "anti_stereotyped_type2"};
        for (int i = 0; i < 4 && !rc; i++) {
            char name[64];
            snprintf(name, sizeof name, "%s.txt.%s", names[i], split);
            rc = strlist_push(files, path_join(path, name), err);
        }
        return rc;
    }
    if (kind == KS_AUDIT_WINOGENDER)
        return strlist_push(files, path_join(path, "all_sentences.tsv"), err);
    return ks_error_set(err, KS_ERR_ARG, "%s: is a directory; %s reads one file per path", path,
                        ks_audit_kind_name(kind));
}

ks_status ks_audit_load(ks_audit_kind kind, const char *const *paths, int n_paths,
                        const ks_audit_load_options *opts, ks_audit_items *out, ks_error *err) {
    if (!out) return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: no output");
    memset(out, 0, sizeof *out);
    out->kind = kind;
    ks_audit_load_options none = {0};
    const ks_audit_load_options *o = opts ? opts : &none;
    if ((unsigned)kind >= KS_AUDIT_N_KINDS)
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: unknown audit kind %d", (int)kind);
    if (!paths || n_paths <= 0)
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: no data paths");
    for (int i = 0; i < n_paths; i++)
        if (!paths[i] || !paths[i][0])
            return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: data path %d is empty", i);
    if (o->limit < 0 || o->limit_per_file < 0 || o->n_categories < 0 ||
        (o->n_categories > 0 && !o->categories))
        return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: negative limit or missing categories");
    for (int i = 0; o->categories && i < o->n_categories; i++)
        if (!o->categories[i])
            return ks_error_set(err, KS_ERR_ARG, "ks_audit_load: category %d is NULL", i);
    const char *split = o->split ? o->split : "test";
    if (kind == KS_AUDIT_WINOBIAS && strcmp(split, "test") && strcmp(split, "dev"))
        return ks_error_set(err, KS_ERR_ARG, "WinoBias split '%.40s': expected 'test' or 'dev'",
                            split);

    strlist files = {0};
    ks_status rc = KS_OK;
    for (int i = 0; i < n_paths && !rc; i++) rc = expand(kind, paths[i], split, &files, err);
    for (int i = 0; i < files.n && !rc; i++)
        for (int j = 0; j < i && !rc; j++)
            if (!strcmp(files.v[i], files.v[j]))
                rc = ks_error_set(err, KS_ERR_ARG, "%s: given twice", files.v[i]);

    loader L = {.kind = kind, .o = o, .out = out};
    if (!rc && kind == KS_AUDIT_COUNTERFACTUAL) {
        L.file = files.v[0];
        rc = load_counterfactual(&L, files.v, files.n, err);
    }
    for (int i = 0; i < files.n && !rc && kind != KS_AUDIT_COUNTERFACTUAL; i++) {
        L.file = files.v[i];
        L.file_index = i;
        L.kept_in_file = 0;
        smap_free(&L.ids);
        switch (kind) {
        case KS_AUDIT_CROWS: rc = load_crows(&L, err); break;
        case KS_AUDIT_STEREOSET: rc = load_stereoset(&L, err); break;
        case KS_AUDIT_BBQ: rc = load_bbq(&L, err); break;
        case KS_AUDIT_WINOBIAS: rc = load_winobias(&L, err); break;
        case KS_AUDIT_WINOGENDER: rc = load_winogender(&L, err); break;
        case KS_AUDIT_BOLD: rc = load_bold(&L, err); break;
        default: rc = ks_error_set(err, KS_ERR_INTERNAL, "unreachable kind"); break;
        }
    }
    if (!rc && kind == KS_AUDIT_WINOBIAS) rc = wb_link(&L, err);
    if (!rc && kind == KS_AUDIT_WINOGENDER) rc = wg_link(&L, err);
    smap_free(&L.ids);
    smap_free(&L.templates);
    for (int i = 0; i < L.n_stems; i++) free(L.stems[i]);
    free(L.stems);
    free(L.aux);
    strlist_free(&files);
    if (rc) ks_audit_items_free(out);
    out->kind = kind;
    return rc;
}

void ks_audit_items_free(ks_audit_items *items) {
    if (!items) return;
    for (int i = 0; i < items->n; i++) item_clear(&items->items[i]);
    free(items->items);
    ks_audit_kind k = items->kind;
    memset(items, 0, sizeof *items);
    items->kind = k;
}
