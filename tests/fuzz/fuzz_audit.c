/* fuzz_audit.c — libFuzzer target for the audit inputs from the outside world: the benchmark
 * loaders (experiments/data_load.c) and spec files (experiments/spec.c). The first byte picks
 * what the rest is: 0 CrowS-Pairs CSV, 1 StereoSet JSON, 2 BBQ JSONL, 3 a WinoBias file (beside
 * fixed occupation lists), 4 Winogender all_sentences.tsv (beside a fixed statistics file),
 * 5 Winogender's occupations-stats.tsv (beside fixed sentences), 6 a spec file. A load either
 * fails with a message naming the file, or gives items that keep ks_audit.h's promises. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ks_audit.h"
#include "ks_spec.h"

static void check(bool ok) {
    if (!ok) abort();
}

static char dir[64];

static void put(const char *name, const void *data, size_t n) {
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void setup(void) {
    if (dir[0]) return;
    strcpy(dir, "/tmp/ks_fuzz_audit_XXXXXX");
    if (!mkdtemp(dir)) abort();
    const char *male = "driver\nsupervisor\nconstruction worker\n";
    const char *female = "nurse\nclerk\nhousekeeper\n";
    put("male_occupations.txt", male, strlen(male));
    put("female_occupations.txt", female, strlen(female));
}

static void check_items(const ks_audit_items *it) {
    for (int i = 0; i < it->n; i++) {
        const ks_audit_item *x = &it->items[i];
        check(x->id && x->category && x->group && x->file && x->line >= 1);
        check(x->n_options >= 1 && x->n_options <= KS_AUDIT_MAX_OPTIONS);
        for (int k = 0; k < x->n_options; k++) check(x->options[k].text != NULL);
        check(x->gold >= -1 && x->gold < x->n_options);
        check(x->pair >= -1 && x->pair < it->n);
        if (x->pair >= 0) check(it->items[x->pair].pair == i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    setup();
    int mode = data[0] % 7;
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    ks_error err = {0};
    if (mode == 6) {
        ks_spec s;
        ks_status st = ks_spec_parse(body, n, "fuzz/spec.json", &s, &err);
        if (st) {
            check(strstr(err.msg, "fuzz/spec.json") != NULL || st == KS_ERR_NOMEM);
            return 0;
        }
        check(s.model && s.n_audits >= 1 && s.canonical);
        for (int i = 0; i < s.n_audits; i++) check(s.audits[i].name && s.audits[i].n_data >= 1);
        ks_spec_free(&s);
        return 0;
    }
    static const char *const names[6] = {"pairs.csv", "items.json", "Cat.jsonl",
                                         "pro_stereotyped_type1.txt.test", "all_sentences.tsv",
                                         "occupations-stats.tsv"};
    static const ks_audit_kind kinds[6] = {KS_AUDIT_CROWS, KS_AUDIT_STEREOSET, KS_AUDIT_BBQ,
                                           KS_AUDIT_WINOBIAS, KS_AUDIT_WINOGENDER,
                                           KS_AUDIT_WINOGENDER};
    if (mode == 4) {
        const char *stats = "occupation\tbls_pct_female\ntechnician\t40.3\n";
        put("occupations-stats.tsv", stats, strlen(stats));
    } else if (mode == 5) {
        const char *sent = "sentid\tsentence\ntechnician.customer.1.male.txt\tThe technician "
                           "told the customer that he could pay.\n";
        put("all_sentences.tsv", sent, strlen(sent));
    }
    put(names[mode], body, n);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, mode == 5 ? "all_sentences.tsv" : names[mode]);
    const char *paths[1] = {path};
    ks_audit_items it;
    ks_audit_load_options o = {.limit_per_file = (data[0] >> 4) & 3};
    ks_status st = ks_audit_load(kinds[mode], paths, 1, &o, &it, &err);
    if (st) {
        check(strstr(err.msg, dir) != NULL || st == KS_ERR_NOMEM);
        check(it.n == 0 && it.items == NULL);
        return 0;
    }
    check_items(&it);
    ks_audit_items_free(&it);
    return 0;
}
