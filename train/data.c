/* data.c — dialogue data sets read into examples: ShareGPT JSON (Koala's and Vicuna's
 * format), Alpaca JSON, Anthropic HH-RLHF JSONL (the "chosen" dialogue split into turns),
 * plain text and pre-tokenized JSONL. Files may be gzip-compressed (.gz, through zlib).
 *
 * These are files from outside: every record is checked (types, roles, order) and the first
 * problem fails the file with its place (file:line for line-based files, "record N" for JSON
 * lists, whose elements have no line of their own in jansson) and the field, e.g.
 * "data.json: record 3: conversations[2].from: unknown role 'robot'". */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ks_train.h"

#define MAX_FILE_BYTES ((size_t)4 << 30)

typedef struct {
    ks_chat_message *msgs;
    int n_msgs;
    char *text;
    int *ids;
    uint8_t *mask;
    int n_ids;
    char *where;
} example;

struct ks_dataset {
    example *v;
    int n, cap;
};

static const struct {
    ks_data_format f;
    const char *name;
} format_names[] = {{KS_DATA_AUTO, "auto"},   {KS_DATA_SHAREGPT, "sharegpt"}, {KS_DATA_ALPACA, "alpaca"},
                    {KS_DATA_HH, "hh"},       {KS_DATA_TEXT, "text"},         {KS_DATA_TOKENS, "tokens"}};

ks_status ks_data_format_parse(const char *name, ks_data_format *out, ks_error *err) {
    for (size_t i = 0; name && i < sizeof format_names / sizeof format_names[0]; i++)
        if (!strcmp(name, format_names[i].name)) {
            *out = format_names[i].f;
            return KS_OK;
        }
    return ks_error_set(err, KS_ERR_ARG, "unknown data format '%s' (expected auto, sharegpt, "
                        "alpaca, hh, text or tokens)", name ? name : "(null)");
}

const char *ks_data_format_name(ks_data_format f) {
    for (size_t i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
        if (format_names[i].f == f) return format_names[i].name;
    return "?";
}

static void example_clear(example *e) {
    for (int i = 0; i < e->n_msgs; i++) {
        free((char *)e->msgs[i].content);
    }
    free(e->msgs);
    free(e->text);
    free(e->ids);
    free(e->mask);
    free(e->where);
    memset(e, 0, sizeof *e);
}

ks_status ks_dataset_create(ks_dataset **out, ks_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? KS_OK : ks_error_set(err, KS_ERR_NOMEM, "out of memory");
}

void ks_dataset_free(ks_dataset *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) example_clear(&d->v[i]);
    free(d->v);
    free(d);
}

int ks_dataset_count(const ks_dataset *d) { return d ? d->n : 0; }

ks_status ks_dataset_get(const ks_dataset *d, int i, ks_example *ex, ks_error *err) {
    if (!d || i < 0 || i >= d->n)
        return ks_error_set(err, KS_ERR_RANGE, "example %d out of range", i);
    const example *e = &d->v[i];
    *ex = (ks_example){e->msgs, e->n_msgs, e->text, e->ids, e->mask, e->n_ids, e->where};
    return KS_OK;
}

/* ------------------------------------------------------------------ building examples */

typedef struct {
    ks_dataset *d;
    int first; /* examples of this file start here (dropped on failure) */
    const char *src;
    ks_error *err;
} loader;

static example *new_example(loader *L, const char *where) {
    ks_dataset *d = L->d;
    if (d->n == d->cap) {
        int cap = d->cap ? d->cap * 2 : 64;
        example *p = realloc(d->v, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        d->v = p;
        d->cap = cap;
    }
    example *e = &d->v[d->n];
    memset(e, 0, sizeof *e);
    if (!(e->where = strdup(where))) return NULL;
    d->n++;
    return e;
}

static bool add_msg(example *e, const char *role, const char *text, size_t len) {
    ks_chat_message *p = realloc(e->msgs, (size_t)(e->n_msgs + 1) * sizeof *p);
    if (!p) return false;
    e->msgs = p;
    char *c = malloc(len + 1);
    if (!c) return false;
    memcpy(c, text, len);
    c[len] = '\0';
    e->msgs[e->n_msgs++] = (ks_chat_message){role, c};
    return true;
}

static ks_status nomem(loader *L) { return ks_error_set(L->err, KS_ERR_NOMEM, "%s: out of memory", L->src); }

/* Role names of ShareGPT "from" fields. */
static const char *sharegpt_role(const char *from) {
    static const struct {
        const char *from, *role;
    } map[] = {{"human", "user"},      {"user", "user"},           {"gpt", "assistant"},
               {"assistant", "assistant"}, {"chatgpt", "assistant"}, {"bard", "assistant"},
               {"bing", "assistant"},  {"system", "system"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(from, map[i].from)) return map[i].role;
    return NULL;
}

static ks_status parse_sharegpt(loader *L, json_t *rec, const char *where) {
    if (!json_is_object(rec)) return ks_error_set(L->err, KS_ERR_FORMAT, "%s: not a JSON object", where);
    json_t *conv = json_object_get(rec, "conversations");
    if (!json_is_array(conv))
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations: missing or not a list", where);
    if (json_array_size(conv) == 0)
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations: empty", where);
    example *e = new_example(L, where);
    if (!e) return nomem(L);
    size_t i;
    json_t *turn;
    json_array_foreach(conv, i, turn) {
        json_t *from = json_object_get(turn, "from"), *value = json_object_get(turn, "value");
        if (!json_is_object(turn))
            return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations[%zu]: not an object", where, i);
        if (!json_is_string(from))
            return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations[%zu].from: missing or not a string",
                                where, i);
        if (!json_is_string(value))
            return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations[%zu].value: missing or not a string",
                                where, i);
        const char *role = sharegpt_role(json_string_value(from));
        if (!role)
            return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations[%zu].from: unknown role '%.40s' "
                                "(expected human, gpt or system)", where, i, json_string_value(from));
        if (!strcmp(role, "system") && i != 0)
            return ks_error_set(L->err, KS_ERR_FORMAT, "%s: conversations[%zu].from: a system turn must "
                                "come first", where, i);
        if (!add_msg(e, role, json_string_value(value), json_string_length(value))) return nomem(L);
    }
    return KS_OK;
}

static ks_status parse_alpaca(loader *L, json_t *rec, const char *where) {
    if (!json_is_object(rec)) return ks_error_set(L->err, KS_ERR_FORMAT, "%s: not a JSON object", where);
    json_t *ins = json_object_get(rec, "instruction"), *inp = json_object_get(rec, "input"),
           *out = json_object_get(rec, "output");
    if (!json_is_string(ins))
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: instruction: missing or not a string", where);
    if (inp && !json_is_string(inp) && !json_is_null(inp))
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: input: not a string", where);
    if (!json_is_string(out))
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: output: missing or not a string", where);
    example *e = new_example(L, where);
    if (!e) return nomem(L);
    /* the instruction, then the input as a paragraph of the same user turn */
    size_t a = json_string_length(ins), b = json_is_string(inp) ? json_string_length(inp) : 0;
    char *u = malloc(a + 2 + b + 1);
    if (!u) return nomem(L);
    memcpy(u, json_string_value(ins), a);
    size_t n = a;
    if (b) {
        memcpy(u + n, "\n\n", 2);
        memcpy(u + n + 2, json_string_value(inp), b);
        n += 2 + b;
    }
    bool ok = add_msg(e, "user", u, n) && add_msg(e, "assistant", json_string_value(out),
                                                   json_string_length(out));
    free(u);
    return ok ? KS_OK : nomem(L);
}

/* "\n\nHuman: …\n\nAssistant: …" into turns. */
static ks_status parse_hh(loader *L, json_t *rec, const char *where) {
    if (!json_is_object(rec)) return ks_error_set(L->err, KS_ERR_FORMAT, "%s: not a JSON object", where);
    json_t *ch = json_object_get(rec, "chosen");
    if (!json_is_string(ch))
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: chosen: missing or not a string", where);
    const char *s = json_string_value(ch), *end = s + json_string_length(ch);
    static const char H[] = "\n\nHuman:", A[] = "\n\nAssistant:";
    if (strncmp(s, H, strlen(H)) != 0)
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: chosen: does not start with \"\\n\\nHuman:\"", where);
    example *e = new_example(L, where);
    if (!e) return nomem(L);
    const char *p = s;
    bool human = true, any_assistant = false;
    while (p < end) {
        p += strlen(human ? H : A);
        if (p < end && *p == ' ') p++;
        /* the turn runs to the next marker of either kind */
        const char *nh = strstr(p, H), *na = strstr(p, A), *q = end;
        bool next_human = true;
        if (nh && (!na || nh < na)) q = nh;
        else if (na) {
            q = na;
            next_human = false;
        }
        if (!add_msg(e, human ? "user" : "assistant", p, (size_t)(q - p))) return nomem(L);
        any_assistant |= !human;
        p = q;
        human = next_human;
    }
    if (!any_assistant)
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: chosen: no \"\\n\\nAssistant:\" turn", where);
    return KS_OK;
}

static ks_status parse_tokens(loader *L, json_t *rec, const char *where) {
    if (!json_is_object(rec)) return ks_error_set(L->err, KS_ERR_FORMAT, "%s: not a JSON object", where);
    json_t *ids = json_object_get(rec, "ids"), *mask = json_object_get(rec, "mask");
    if (!json_is_array(ids) || json_array_size(ids) < 2)
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: ids: missing or not a list of at least 2 token ids",
                            where);
    size_t n = json_array_size(ids);
    if (n > (1u << 24)) return ks_error_set(L->err, KS_ERR_FORMAT, "%s: ids: more than 2^24 tokens", where);
    if (mask && (!json_is_array(mask) || json_array_size(mask) != n))
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s: mask: not a list as long as ids (%zu)", where, n);
    example *e = new_example(L, where);
    if (!e) return nomem(L);
    e->ids = malloc(n * sizeof(int));
    e->mask = mask ? malloc(n) : NULL;
    if (!e->ids || (mask && !e->mask)) return nomem(L);
    e->n_ids = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 30))
            return ks_error_set(L->err, KS_ERR_FORMAT, "%s: ids[%zu]: not a token id", where, i);
        e->ids[i] = (int)json_integer_value(v);
        if (mask) {
            json_t *k = json_array_get(mask, i);
            if (!json_is_integer(k) || (json_integer_value(k) != 0 && json_integer_value(k) != 1))
                return ks_error_set(L->err, KS_ERR_FORMAT, "%s: mask[%zu]: not 0 or 1", where, i);
            e->mask[i] = (uint8_t)json_integer_value(k);
        }
    }
    return KS_OK;
}

typedef ks_status (*record_fn)(loader *, json_t *, const char *);

static record_fn parser_of(ks_data_format f) {
    switch (f) {
    case KS_DATA_SHAREGPT: return parse_sharegpt;
    case KS_DATA_ALPACA: return parse_alpaca;
    case KS_DATA_HH: return parse_hh;
    case KS_DATA_TOKENS: return parse_tokens;
    default: return NULL;
    }
}

/* The format a record looks like (AUTO when it tells nothing). */
static ks_data_format sniff(json_t *rec) {
    if (!json_is_object(rec)) return KS_DATA_AUTO;
    if (json_object_get(rec, "conversations")) return KS_DATA_SHAREGPT;
    if (json_object_get(rec, "instruction")) return KS_DATA_ALPACA;
    if (json_object_get(rec, "chosen")) return KS_DATA_HH;
    if (json_object_get(rec, "ids")) return KS_DATA_TOKENS;
    return KS_DATA_AUTO;
}

static ks_status no_format(loader *L) {
    return ks_error_set(L->err, KS_ERR_FORMAT, "%s: cannot tell the data format from the first record "
                        "(expected conversations, instruction, chosen or ids); name it with "
                        "--data-format", L->src);
}

/* ------------------------------------------------------------------ file kinds */

static ks_status load_json_list(loader *L, const char *data, size_t len, ks_data_format f) {
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s:%d: not valid JSON: %s", L->src, je.line, je.text);
    ks_status st = KS_OK;
    if (!json_is_array(root)) {
        st = ks_error_set(L->err, KS_ERR_FORMAT, "%s: not a JSON list of records", L->src);
        goto out;
    }
    if (f == KS_DATA_AUTO && json_array_size(root) > 0) f = sniff(json_array_get(root, 0));
    if (f == KS_DATA_AUTO && json_array_size(root) > 0) {
        st = no_format(L);
        goto out;
    }
    record_fn fn = parser_of(f);
    size_t i;
    json_t *rec;
    json_array_foreach(root, i, rec) {
        char where[512];
        snprintf(where, sizeof where, "%s: record %zu", L->src, i);
        if (!fn) {
            st = ks_error_set(L->err, KS_ERR_ARG, "%s: format %s is not a JSON list", L->src,
                              ks_data_format_name(f));
            break;
        }
        if ((st = fn(L, rec, where))) break;
    }
out:
    json_decref(root);
    return st;
}

static ks_status load_jsonl(loader *L, const char *data, size_t len, ks_data_format f) {
    size_t pos = 0;
    int line = 0;
    ks_status st = KS_OK;
    while (pos < len && st == KS_OK) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (data + pos)) : len - pos;
        const char *s = data + pos;
        pos += n + (nl ? 1 : 0);
        line++;
        size_t k = 0;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
        if (k == n) continue; /* blank line */
        char where[512];
        snprintf(where, sizeof where, "%s:%d", L->src, line);
        json_error_t je;
        json_t *rec = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
        if (!rec) return ks_error_set(L->err, KS_ERR_FORMAT, "%s: not valid JSON: %s", where, je.text);
        if (f == KS_DATA_AUTO && (f = sniff(rec)) == KS_DATA_AUTO) {
            json_decref(rec);
            return no_format(L);
        }
        record_fn fn = parser_of(f);
        st = fn ? fn(L, rec, where)
                : ks_error_set(L->err, KS_ERR_ARG, "%s: format %s is not JSON lines", L->src,
                               ks_data_format_name(f));
        json_decref(rec);
    }
    return st;
}

/* Documents separated by blank lines; a document keeps its inner newlines. */
static ks_status load_text(loader *L, const char *data, size_t len) {
    if (memchr(data, '\0', len)) {
        const char *z = memchr(data, '\0', len);
        int line = 1;
        for (const char *p = data; p < z; p++) line += *p == '\n';
        return ks_error_set(L->err, KS_ERR_FORMAT, "%s:%d: a NUL byte (not a text file)", L->src, line);
    }
    size_t pos = 0, doc_start = 0;
    int line = 0, doc_line = 0;
    bool in_doc = false;
    while (pos <= len) {
        const char *nl = pos < len ? memchr(data + pos, '\n', len - pos) : NULL;
        size_t n = pos < len ? (nl ? (size_t)(nl - (data + pos)) : len - pos) : 0;
        bool blank = true;
        for (size_t k = 0; k < n; k++)
            if (data[pos + k] != ' ' && data[pos + k] != '\t' && data[pos + k] != '\r') blank = false;
        line++;
        if (!blank && !in_doc) {
            in_doc = true;
            doc_start = pos;
            doc_line = line;
        }
        if ((blank || pos >= len || !nl) && in_doc) {
            size_t end = blank ? pos : pos + n;
            while (end > doc_start && (data[end - 1] == '\n' || data[end - 1] == '\r')) end--;
            char where[512];
            snprintf(where, sizeof where, "%s:%d", L->src, doc_line);
            example *e = new_example(L, where);
            if (!e || !(e->text = malloc(end - doc_start + 1))) return nomem(L);
            memcpy(e->text, data + doc_start, end - doc_start);
            e->text[end - doc_start] = '\0';
            in_doc = false;
        }
        if (pos >= len || !nl) break;
        pos += n + 1;
    }
    return KS_OK;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

ks_status ks_dataset_load_mem(ks_dataset *d, const char *data, size_t len, const char *source,
                              ks_data_format f, ks_error *err) {
    if (!d || (!data && len)) return ks_error_set(err, KS_ERR_ARG, "ks_dataset_load_mem: NULL argument");
    const char *src = source ? source : "(memory)";
    loader L = {d, d->n, src, err};
    char base[512];
    snprintf(base, sizeof base, "%s", src);
    if (ends_with(base, ".gz")) base[strlen(base) - 3] = '\0';
    ks_status st;
    if (f == KS_DATA_TEXT || (f == KS_DATA_AUTO && ends_with(base, ".txt"))) {
        st = load_text(&L, data ? data : "", len);
    } else {
        /* a JSON list starts with '[' (after blanks); anything else is JSON lines */
        size_t k = 0;
        while (k < len && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r' || data[k] == '\n')) k++;
        if (k < len && data[k] == '[')
            st = load_json_list(&L, data, len, f);
        else
            st = load_jsonl(&L, data ? data : "", len, f);
    }
    if (st == KS_OK && d->n == L.first)
        st = ks_error_set(err, KS_ERR_FORMAT, "%s: no examples in the file", src);
    if (st) {
        for (int i = L.first; i < d->n; i++) example_clear(&d->v[i]);
        d->n = L.first;
    }
    return st;
}

/* The whole file, decompressed when it is gzip (magic 1f 8b). */
static ks_status read_file(const char *path, char **out, size_t *len, ks_error *err) {
    gzFile g = gzopen(path, "rb"); /* reads plain files as they are too */
    if (!g) return ks_error_set(err, KS_ERR_IO, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    ks_status st = KS_OK;
    for (;;) {
        if (!buf) {
            st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) {
                st = ks_error_set(err, KS_ERR_RANGE, "%s: larger than %zu bytes", path, MAX_FILE_BYTES);
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                st = ks_error_set(err, KS_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = p;
            cap *= 2;
        }
        int r = gzread(g, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (r < 0) {
            int code;
            const char *m = gzerror(g, &code);
            st = ks_error_set(err, code == Z_ERRNO ? KS_ERR_IO : KS_ERR_FORMAT, "%s: %s", path,
                              code == Z_ERRNO ? strerror(errno) : m);
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(g);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return KS_OK;
}

ks_status ks_dataset_load(ks_dataset *d, const char *path, ks_data_format f, ks_error *err) {
    if (!d || !path) return ks_error_set(err, KS_ERR_ARG, "ks_dataset_load: NULL argument");
    char *data = NULL;
    size_t len = 0;
    ks_status st = read_file(path, &data, &len, err);
    if (st) return st;
    st = ks_dataset_load_mem(d, data, len, path, f, err);
    free(data);
    return st;
}
