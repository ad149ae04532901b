/* dump_info.c — `koalascope dump-info DUMP.h5`: what a dump holds (prompts, tokens, the model
 * it came from, the recorded hook points with their shapes and sizes on disk) and whether it
 * is complete; --repair makes an interrupted dump open in plain HDF5 readers. All reading
 * goes through ks_dump_*; this file only formats. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli.h"
#include "ks_dump.h"

#define CMD "dump-info"
#define TEXT_CHARS 60

static const char *help_dump_info =
    "Usage: koalascope dump-info DUMP.h5 [--json] [--prompts] [--repair]\n"
    "What a dump written by `koalascope record` holds: prompts, tokens, the model it came\n"
    "from, the recorded hook points with their shapes and sizes on disk, and whether it is\n"
    "complete.\n"
    "  --prompts   list every committed prompt: index, tokens, id, its first 60 characters\n"
    "              (--json: the whole text)\n"
    "  --json      print the same as one JSON object\n"
    "  --repair    for an interrupted dump: clear HDF5's \"open for writing\" flag and cut\n"
    "              every dataset back to the committed prompts (changes the file), so that\n"
    "              plain HDF5 readers (h5py.File(path)) open it; then show it. Only\n"
    "              when no `koalascope record` is still writing the dump\n"
    "  -h, --help  this help\n";

#define fail_msg(msg) cli_error(CMD, "%s", (msg))
#define usage(...) cli_usage(CMD, __VA_ARGS__)

static const char *attr_or(const ks_dump *d, const char *name, const char *def) {
    const char *v = ks_dump_attr(d, name);
    return v ? v : def;
}

/* At most max_chars UTF-8 characters of s on one line (control characters shown as spaces),
 * "…" when cut. */
static void put_trunc(FILE *f, const char *s, size_t max_chars) {
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p & 0xC0) != 0x80) { /* a character starts here */
            if (chars == max_chars) {
                fputs("…", f);
                return;
            }
            chars++;
        }
        fputc(*p < 0x20 || *p == 0x7f ? ' ' : *p, f);
    }
}

static const char *kind_name(ks_dump_kind k) { return k == KS_DUMP_KIND_TOKEN ? "token" : "attention"; }

/* Keys on the attention axis of the committed prompts (attn_offsets[P]). */
static ks_status total_keys(const ks_dump *d, int64_t *k, ks_error *err) {
    ks_dump_prompt pi;
    int64_t p = ks_dump_n_prompts(d);
    *k = 0;
    if (p == 0) return KS_OK;
    ks_status s = ks_dump_prompt_info(d, p - 1, &pi, err);
    if (s == KS_OK) *k = pi.attn_begin + pi.n_attn;
    return s;
}

/* Shape of hook h with the row (or key) axis as the committed count: [R, d...] or [H, K]. */
static int shape_text(const ks_dump_hook *h, int64_t rows, int64_t keys, char *buf, size_t cap) {
    if (h->kind == KS_DUMP_KIND_ATTENTION)
        return snprintf(buf, cap, "[%lld, %lld]", (long long)h->dims[0], (long long)keys);
    if (h->ndim == 2)
        return snprintf(buf, cap, "[%lld, %lld, %lld]", (long long)rows, (long long)h->dims[0],
                        (long long)h->dims[1]);
    return snprintf(buf, cap, "[%lld, %lld]", (long long)rows, (long long)h->dims[0]);
}

static const char *state_text(const ks_dump *d) {
    if (ks_dump_complete(d)) return "complete";
    if (ks_dump_interrupted(d)) return "interrupted";
    return "incomplete";
}

/* A float as the shortest decimal that reads back as the same float (1e-05, not
 * 9.9999997473787516e-06). */
static double short_float(float f) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static json_t *config_json(const ks_config *c) {
    return json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:i, s:i}", "dim",
                     c->dim, "hidden_dim", c->hidden_dim, "n_layers", c->n_layers, "n_heads",
                     c->n_heads, "n_kv_heads", c->n_kv_heads, "head_dim", c->head_dim,
                     "vocab_size", c->vocab_size, "max_seq_len", c->max_seq_len, "rms_eps",
                     short_float(c->rms_eps), "rope_theta", short_float(c->rope_theta), "tie_embeddings",
                     c->tie_embeddings, "bos_id", c->bos_id, "eos_id", c->eos_id);
}

/* A root attribute as a JSON value: integers as numbers, the rest as strings, null if absent. */
static json_t *attr_json(const ks_dump *d, const char *name, bool integer) {
    const char *v = ks_dump_attr(d, name);
    if (!v) return json_null();
    if (integer) {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (*v && !*end) return json_integer(x);
    }
    return json_string(v);
}

static int print_json(const ks_dump *d, bool prompts, int64_t keys, long long file_size,
                      bool repaired) {
    ks_error err = {0};
    json_t *j = json_object(), *hooks = json_array();
    json_object_set_new(j, "path", json_string(ks_dump_path(d)));
    json_object_set_new(j, "format_version", attr_json(d, "format_version", true));
    json_object_set_new(j, "koalascope_version", attr_json(d, "koalascope_version", false));
    json_object_set_new(j, "state", json_string(state_text(d)));
    json_object_set_new(j, "complete", json_boolean(ks_dump_complete(d)));
    json_object_set_new(j, "interrupted", json_boolean(ks_dump_interrupted(d)));
    json_object_set_new(j, "repaired", json_boolean(repaired));
    json_object_set_new(j, "prompts_committed", json_integer(ks_dump_n_prompts(d)));
    json_object_set_new(j, "prompts_planned", attr_json(d, "n_prompts_planned", true));
    json_object_set_new(j, "resume_count", attr_json(d, "resume_count", true));
    json_object_set_new(j, "tokens", json_integer(ks_dump_n_tokens(d)));
    json_object_set_new(j, "rows", json_integer(ks_dump_n_rows(d)));
    json_object_set_new(j, "attention_keys", json_integer(keys));
    json_t *m = json_object();
    json_object_set_new(m, "path", attr_json(d, "model_path", false));
    json_object_set_new(m, "format", attr_json(d, "model_format", false));
    json_object_set_new(m, "sha256", attr_json(d, "model_sha256", false));
    json_object_set_new(m, "sha256_of", attr_json(d, "model_sha256_of", false));
    json_object_set_new(m, "weight_dtype", attr_json(d, "model_weight_dtype", false));
    json_object_set_new(m, "config", config_json(ks_dump_config(d)));
    json_object_set_new(j, "model", m);
    json_object_set_new(j, "storage_dtype", attr_json(d, "storage_dtype", false));
    json_object_set_new(j, "compression", attr_json(d, "compression", false));
    json_object_set_new(j, "hooks_selection", attr_json(d, "hooks", false));
    json_object_set_new(j, "positions", attr_json(d, "positions", false));
    json_object_set_new(j, "heads", attr_json(d, "heads", false));
    json_object_set_new(j, "logits_topk", json_integer(ks_dump_logits_topk(d)));
    json_object_set_new(j, "logits_full", json_boolean(ks_dump_has_full_logits(d)));
    json_object_set_new(j, "created", attr_json(d, "created", false));
    json_object_set_new(j, "command_line", attr_json(d, "command_line", false));
    json_object_set_new(j, "file_size", json_integer(file_size));
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        json_t *shape = json_array(), *heads = json_array();
        if (h->kind == KS_DUMP_KIND_ATTENTION) {
            json_array_append_new(shape, json_integer(h->dims[0]));
            json_array_append_new(shape, json_integer(keys));
        } else {
            json_array_append_new(shape, json_integer(ks_dump_n_rows(d)));
            for (int k = 0; k < h->ndim; k++) json_array_append_new(shape, json_integer(h->dims[k]));
        }
        for (int k = 0; k < h->n_heads; k++) json_array_append_new(heads, json_integer(h->heads[k]));
        json_array_append_new(hooks, json_pack("{s:s, s:s, s:i, s:o, s:s, s:o, s:I}", "name",
                                               h->name, "kind", kind_name(h->kind), "layer",
                                               h->layer, "shape", shape, "dtype",
                                               ks_dump_dtype_name(h->dtype), "heads", heads,
                                               "bytes_on_disk",
                                               (json_int_t)ks_dump_hook_storage_bytes(d, h)));
    }
    json_object_set_new(j, "hooks", hooks);
    int rc = 0;
    {
        ks_attribution_info *ai = NULL;
        int na = 0;
        ks_error e2 = {0};
        if (ks_attribution_list(ks_dump_path(d), &ai, &na, &e2)) rc = fail_msg(e2.msg);
        json_t *al = json_array();
        for (int k = 0; k < na; k++) {
            json_t *shape = json_array();
            for (int i = 0; i < ai[k].ndim; i++) json_array_append_new(shape, json_integer(ai[k].shape[i]));
            json_array_append_new(al, json_pack("{s:s, s:s, s:s, s:o}", "name", ai[k].name,
                                                "method", ai[k].method, "axes", ai[k].axes,
                                                "shape", shape));
        }
        json_object_set_new(j, "attributions", al);
        free(ai);
    }
    if (prompts) {
        json_t *list = json_array();
        for (int64_t p = 0; p < ks_dump_n_prompts(d) && rc == 0; p++) {
            ks_dump_prompt pi;
            char *id = NULL, *text = NULL;
            if (ks_dump_prompt_info(d, p, &pi, &err) || ks_dump_prompt_id(d, p, &id, &err) ||
                ks_dump_prompt_text(d, p, &text, &err)) {
                rc = fail_msg(err.msg);
            } else {
                json_array_append_new(list, json_pack("{s:I, s:s, s:I, s:i, s:I, s:s}", "index",
                                                      (json_int_t)p, "id", id, "tokens",
                                                      (json_int_t)pi.n_tokens, "prompt_tokens",
                                                      pi.n_prompt_tokens, "rows",
                                                      (json_int_t)pi.n_rows, "text", text));
            }
            free(id);
            free(text);
        }
        json_object_set_new(j, "prompts", list);
    }
    if (rc == 0) {
        char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
        if (txt) puts(txt);
        else rc = fail_msg("cannot format the JSON output (a string that is not UTF-8?)");
        free(txt);
    }
    json_decref(j);
    return rc;
}

static int print_text(const ks_dump *d, const char *path, bool prompts, int64_t keys,
                      long long file_size, bool repaired) {
    ks_error err = {0};
    const ks_config *c = ks_dump_config(d);
    const char *planned = attr_or(d, "n_prompts_planned", "-1");
    printf("dump         %s\n", ks_dump_path(d));
    printf("format       koalascope-dump version %s (written by koalascope %s)\n",
           attr_or(d, "format_version", "?"), attr_or(d, "koalascope_version", "?"));
    if (repaired) printf("repaired     every dataset cut back to the committed prompts\n");
    if (ks_dump_complete(d)) {
        printf("state        complete\n");
    } else if (ks_dump_interrupted(d)) {
        printf("state        interrupted (the writer did not close the file): continue it with\n"
               "             `koalascope record ... --resume`, or `koalascope dump-info --repair "
               "%s`\n             to make it open in plain HDF5 readers\n", path);
    } else {
        printf("state        incomplete (closed before every planned prompt was recorded); "
               "`koalascope record ... --resume` continues it\n");
    }
    printf("prompts      %lld committed", (long long)ks_dump_n_prompts(d));
    if (strcmp(planned, "-1") != 0) printf(" of %s planned", planned);
    const char *resumes = ks_dump_attr(d, "resume_count");
    if (resumes && strcmp(resumes, "0") != 0) printf(" (resumed %s times)", resumes);
    printf("\n");
    printf("tokens       %lld, rows %lld (positions %s)\n", (long long)ks_dump_n_tokens(d),
           (long long)ks_dump_n_rows(d), attr_or(d, "positions", "?"));
    const char *sha = attr_or(d, "model_sha256", "");
    printf("model        %s (%s, weights %s, sha256 %.12s%s of %s)\n", attr_or(d, "model_path", "?"),
           attr_or(d, "model_format", "?"), attr_or(d, "model_weight_dtype", "?"), sha,
           strlen(sha) > 12 ? "…" : "", attr_or(d, "model_sha256_of", "?"));
    printf("config       %d layers, d_model %d, d_mlp %d, %d heads (%d kv), head_dim %d, vocab %d\n",
           c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->head_dim,
           c->vocab_size);
    printf("storage      %s, compression %s\n", attr_or(d, "storage_dtype", "?"),
           attr_or(d, "compression", "?"));
    printf("selection    hooks %s; heads %s\n", attr_or(d, "hooks", "?"), attr_or(d, "heads", "all"));
    if (ks_dump_logits_topk(d) > 0 || ks_dump_has_full_logits(d))
        printf("logits       top-%d%s\n", ks_dump_logits_topk(d),
               ks_dump_has_full_logits(d) ? ", full logits" : "");
    else
        printf("logits       none\n");
    printf("created      %s\n", attr_or(d, "created", "?"));
    printf("command      %s\n", attr_or(d, "command_line", "?"));
    printf("file size    %.1f MB (%lld bytes)\n", file_size / 1e6, file_size);

    int w = 4;
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        int n = (int)strlen(ks_dump_hook_at(d, i)->name);
        if (n > w) w = n;
    }
    printf("\n%-*s  %-9s  %-20s  %-5s  %10s\n", w, "hook", "kind", "shape", "dtype", "MB on disk");
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        char shape[96];
        shape_text(h, ks_dump_n_rows(d), keys, shape, sizeof shape);
        int64_t bytes = ks_dump_hook_storage_bytes(d, h);
        printf("%-*s  %-9s  %-20s  %-5s  %10.2f\n", w, h->name, kind_name(h->kind), shape,
               ks_dump_dtype_name(h->dtype), bytes < 0 ? 0.0 : bytes / 1e6);
    }
    if (ks_dump_n_hooks(d) == 0) printf("(no hook points recorded)\n");

    {
        ks_attribution_info *ai = NULL;
        int na = 0;
        if (ks_attribution_list(path, &ai, &na, &err)) {
            fflush(stdout);
            return fail_msg(err.msg);
        }
        if (na) printf("attributions (/attributions, %d):\n", na);
        for (int k = 0; k < na; k++) {
            printf("  %-24s %-22s [", ai[k].name, ai[k].method);
            for (int i = 0; i < ai[k].ndim; i++)
                printf("%s%lld", i ? ", " : "", (long long)ai[k].shape[i]);
            printf("] (%s)\n", ai[k].axes);
        }
        free(ai);
    }
    if (prompts) {
        printf("\n%6s  %6s  %-24s  %s\n", "prompt", "tokens", "id", "text");
        for (int64_t p = 0; p < ks_dump_n_prompts(d); p++) {
            ks_dump_prompt pi;
            char *id = NULL, *text = NULL;
            if (ks_dump_prompt_info(d, p, &pi, &err) || ks_dump_prompt_id(d, p, &id, &err) ||
                ks_dump_prompt_text(d, p, &text, &err)) {
                free(id);
                free(text);
                fflush(stdout);
                return fail_msg(err.msg);
            }
            printf("%6lld  %6lld  ", (long long)p, (long long)pi.n_tokens);
            put_trunc(stdout, id, 24);
            /* pad the id column by characters, not bytes */
            size_t chars = 0;
            for (const char *q = id; *q && chars < 25; q++) chars += ((unsigned char)*q & 0xC0) != 0x80;
            for (size_t k = chars; k < 24; k++) putchar(' ');
            printf("  ");
            put_trunc(stdout, text, TEXT_CHARS);
            printf("\n");
            free(id);
            free(text);
        }
    }
    return 0;
}

int cmd_dump_info(int argc, char **argv) {
    enum { OPT_JSON = 256, OPT_PROMPTS, OPT_REPAIR };
    static const struct option opts[] = {
        {"json", no_argument, 0, OPT_JSON},
        {"prompts", no_argument, 0, OPT_PROMPTS},
        {"repair", no_argument, 0, OPT_REPAIR},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool json = false, prompts = false, repair = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_PROMPTS: prompts = true; break;
        case OPT_REPAIR: repair = true; break;
        case 'h': fputs(help_dump_info, stdout); return 0;
        default: return usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage("%s", "no DUMP.h5 given");
    if (optind + 1 < argc) return usage("unexpected argument '%s'", argv[optind + 1]);
    const char *path = argv[optind];

    ks_error err = {0};
    bool repaired = false;
    if (repair) {
        int64_t n = 0;
        if (ks_dump_repair(path, &n, &err) != KS_OK) return fail_msg(err.msg);
        repaired = true;
        if (!json)
            fprintf(stderr, "koalascope " CMD ": repaired %s: %lld committed prompts kept\n", path,
                    (long long)n);
    }
    ks_dump *d = NULL;
    if (ks_dump_open(path, &d, &err) != KS_OK) return fail_msg(err.msg);
    int64_t keys = 0;
    if (total_keys(d, &keys, &err) != KS_OK) {
        ks_dump_close(d);
        return fail_msg(err.msg);
    }
    struct stat st;
    long long file_size = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    int rc = json ? print_json(d, prompts, keys, file_size, repaired)
                  : print_text(d, path, prompts, keys, file_size, repaired);
    ks_dump_close(d);
    return rc;
}
