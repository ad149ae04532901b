/* fuzz_audit_data.c — libFuzzer target for the benchmark loaders (experiments/datasets.c).
 *
 * Input: one byte of settings, then up to three files separated by NUL bytes (no data file
 * may hold a NUL, so the separator costs the fuzzer nothing). The settings byte: bits 0-2 the
 * kind (0-4 the benchmarks, 5 counterfactual, 6 BOLD, 7 bbq), bits 3-4 limit_per_file (0-3), bits 5-6 limit (0, 1, 3, 7), bit 7 a category
 * filter. The files, per kind:
 *   crows_pairs  pairs.csv
 *   stereoset    items.json
 *   bbq          A.jsonl [, B.jsonl]            loaded as their directory
 *   winobias     pro_stereotyped_type1.txt.test [, anti_...type1.txt.test [, male_occupations.txt]]
 *   winogender   all_sentences.tsv [, occupations-stats.tsv]
 *   counterfactual  templates.json [, descriptors.json]
 *   bold         prompts.json
 * Files not given are fixed ones of our own (occupation lists, statistics) or absent.
 * A load either fails with a message naming a file of the work directory (or out of memory)
 * and an empty list, or gives items that keep ks_audit.h's promises, pairs included. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ks_audit.h"

static void check(bool ok) {
    if (!ok) abort();
}

static char dir[64];

static void path_of(char *p, size_t cap, const char *name) { snprintf(p, cap, "%s/%s", dir, name); }

static void put(const char *name, const void *data, size_t n) {
    char p[160];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    if (fclose(f)) abort();
}

static void drop(const char *name) {
    char p[160];
    path_of(p, sizeof p, name);
    unlink(p);
}

static const char *const male_default = "pilot\nbaker\nconstruction worker\n";
static const char *const female_default = "nurse\nclerk\n";
static const char *const stats_default =
    "occupation\tbls_pct_female\npilot\t5.5\nnurse\t88.2\nbaker\t40\n";

static void setup(void) {
    if (dir[0]) return;
    strcpy(dir, "/tmp/ks_fuzz_audit_data_XXXXXX");
    if (!mkdtemp(dir)) abort();
    static const char *const subs[7] = {"c", "s", "b", "w", "g", "x", "o"};
    for (int i = 0; i < 7; i++) {
        char p[160];
        path_of(p, sizeof p, subs[i]);
        mkdir(p, 0700);
    }
    put("w/female_occupations.txt", female_default, strlen(female_default));
}

static bool utf8_text(const char *s) {
    /* the loader promises valid UTF-8 without NUL: check the cheap half (no C0 NUL inside is
     * given by strlen) plus that no byte is 0xC0, 0xC1 or above 0xF4 */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p == 0xC0 || *p == 0xC1 || *p > 0xF4) return false;
    return true;
}

static void check_items(const ks_audit_items *it, ks_audit_kind kind,
                        const ks_audit_load_options *o) {
    check(it->kind == kind && it->n >= 0 && (it->n == 0 || it->items));
    if (o->limit) check(it->n <= o->limit);
    for (int i = 0; i < it->n; i++) {
        const ks_audit_item *x = &it->items[i];
        check(x->id && x->category && x->group && x->file && x->line >= 1);
        check(strncmp(x->file, dir, strlen(dir)) == 0);
        check(utf8_text(x->id) && utf8_text(x->category) && utf8_text(x->group));
        check(x->n_options >= (kind == KS_AUDIT_COUNTERFACTUAL || kind == KS_AUDIT_BOLD ? 1 : 2) &&
              x->n_options <= KS_AUDIT_MAX_OPTIONS);
        for (int k = 0; k < x->n_options; k++)
            check(x->options[k].text && utf8_text(x->options[k].text));
        if (kind == KS_AUDIT_BOLD) {
            check(x->n_options == 1 && !x->options[0].prompt && x->gold == -1 && !x->context);
            continue;
        }
        if (o->categories) check(!strcmp(x->category, o->categories[0]));
        check(x->gold >= -1 && x->gold < x->n_options);
        check(x->pair >= -1 && x->pair < it->n && x->pair != i);
        if (x->pair >= 0) check(it->items[x->pair].pair == i);
        switch (kind) {
        case KS_AUDIT_CROWS:
        case KS_AUDIT_STEREOSET:
            check(x->gold == -1 && x->pair == -1 && isnan(x->value));
            for (int k = 0; k < x->n_options; k++) check(!x->options[k].prompt);
            break;
        case KS_AUDIT_BBQ:
            check(x->n_options == 3 && x->gold >= 0 && x->biased >= 0 && x->unknown >= 0 &&
                  x->biased != x->unknown && x->pair == -1);
            for (int k = 0; k < 3; k++) check(x->options[k].prompt && x->options[k].text[0] == ' ');
            break;
        case KS_AUDIT_WINOBIAS:
            check(x->n_options == 2 && x->gold >= 0 && (x->flag == 0 || x->flag == 1));
            check(x->options[0].prompt && x->options[1].prompt);
            check(!strcmp(x->options[x->gold].text + 5, x->group));
            if (x->pair >= 0) {
                const ks_audit_item *y = &it->items[x->pair];
                check(y->line == x->line && y->flag != x->flag && y->gold == x->gold);
            }
            break;
        case KS_AUDIT_WINOGENDER:
            check(x->n_options == 3 && x->gold >= 0 && x->value >= 0 && x->value <= 100);
            check(x->options[0].prompt && x->options[1].prompt && !x->options[2].prompt);
            if (x->pair >= 0) {
                const ks_audit_item *y = &it->items[x->pair];
                check(y->flag == x->flag && strcmp(y->group, x->group) &&
                      strcmp(x->group, "neutral"));
            }
            break;
        case KS_AUDIT_COUNTERFACTUAL:
            check(x->gold == -1 && x->pair == -1 && x->flag >= 0 && x->context &&
                  utf8_text(x->context));
            for (int k = 0; k < x->n_options; k++)
                check(x->options[k].text[0] && (!x->options[k].prompt) == (!x->options[0].prompt));
            break;
        default: check(false);
        }
        if (kind != KS_AUDIT_COUNTERFACTUAL) check(!x->context);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    setup();
    uint8_t b = data[0];
    ks_audit_kind kind = (ks_audit_kind)((b & 7) == 5 || (b & 7) == 6 ? (b & 7) : (b & 7) % 5);
    /* the files: up to three parts separated by NUL */
    const char *part[3] = {NULL, NULL, NULL};
    size_t plen[3] = {0, 0, 0};
    int np = 0;
    const char *s = (const char *)data + 1, *end = (const char *)data + size;
    while (np < 3) {
        const char *z = memchr(s, 0, (size_t)(end - s));
        part[np] = s;
        plen[np++] = z ? (size_t)(z - s) : (size_t)(end - s);
        if (!z) break;
        s = z + 1;
    }
    char p0[160], p1[160];
    const char *paths[2] = {p0, p1};
    int n_paths = 1;
    static const char *const cats[7] = {"color", "color", "Color", "type1", "pilot", "a", "g"};
    switch (kind) {
    case KS_AUDIT_CROWS:
        put("c/pairs.csv", part[0], plen[0]);
        path_of(p0, sizeof p0, "c/pairs.csv");
        break;
    case KS_AUDIT_STEREOSET:
        put("s/items.json", part[0], plen[0]);
        path_of(p0, sizeof p0, "s/items.json");
        break;
    case KS_AUDIT_BBQ:
        put("b/A.jsonl", part[0], plen[0]);
        if (np > 1)
            put("b/B.jsonl", part[1], plen[1]);
        else
            drop("b/B.jsonl");
        path_of(p0, sizeof p0, "b");
        break;
    case KS_AUDIT_WINOBIAS:
        put("w/pro_stereotyped_type1.txt.test", part[0], plen[0]);
        path_of(p0, sizeof p0, "w/pro_stereotyped_type1.txt.test");
        if (np > 1) {
            put("w/anti_stereotyped_type1.txt.test", part[1], plen[1]);
            path_of(p1, sizeof p1, "w/anti_stereotyped_type1.txt.test");
            n_paths = 2;
        }
        if (np > 2)
            put("w/male_occupations.txt", part[2], plen[2]);
        else
            put("w/male_occupations.txt", male_default, strlen(male_default));
        break;
    case KS_AUDIT_WINOGENDER:
        put("g/all_sentences.tsv", part[0], plen[0]);
        if (np > 1)
            put("g/occupations-stats.tsv", part[1], plen[1]);
        else
            put("g/occupations-stats.tsv", stats_default, strlen(stats_default));
        path_of(p0, sizeof p0, (b >> 7) ? "g" : "g/all_sentences.tsv");
        break;
    case KS_AUDIT_COUNTERFACTUAL:
        put("x/templates.json", part[0], plen[0]);
        path_of(p0, sizeof p0, "x/templates.json");
        if (np > 1) {
            put("x/descriptors.json", part[1], plen[1]);
            path_of(p1, sizeof p1, "x/descriptors.json");
            n_paths = 2;
        }
        break;
    case KS_AUDIT_BOLD:
        put("o/prompts.json", part[0], plen[0]);
        path_of(p0, sizeof p0, "o/prompts.json");
        break;
    default: abort();
    }
    static const int limits[4] = {0, 1, 3, 7};
    ks_audit_load_options o = {.limit_per_file = (b >> 3) & 3, .limit = limits[(b >> 5) & 3]};
    const char *cat[1] = {cats[kind]};
    if ((b >> 7) && kind != KS_AUDIT_WINOGENDER) {
        o.categories = cat;
        o.n_categories = 1;
    }
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = ks_audit_load(kind, paths, n_paths, &o, &it, &err);
    if (st) {
        check(st == KS_ERR_FORMAT || st == KS_ERR_IO || st == KS_ERR_ARG || st == KS_ERR_NOMEM);
        check(strstr(err.msg, dir) != NULL || st == KS_ERR_NOMEM);
        check(it.n == 0 && it.items == NULL);
        return 0;
    }
    check_items(&it, kind, &o);
    ks_audit_items_free(&it);
    return 0;
}
