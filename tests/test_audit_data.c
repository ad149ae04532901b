/* test_audit_data.c — the bias benchmarks' loaders (experiments/datasets.c, ks_audit.h).
 *
 * On the real files under KS_SHARED_DATA (skipped visibly when absent, failing under CI=true):
 * item counts per file, and per-item fields against what Python's csv / json modules read
 * from the same files. The expected values were computed once with Python 3 (csv.reader,
 * json.load / json.loads per JSONL line, the definitions of docs/AUDITS.md) and are hard-coded
 * here as ids, counts, sums, line numbers and byte lengths only: no data set text enters the
 * repository. The strings checked literally ("\nAnswer:", " the ", ...) are our own.
 *
 * Then: pair links, the category filter and the limits, and malformed files written at test
 * time to a mkdtemp directory (our own synthetic sentences), each error naming file, line and
 * field. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ks_audit.h"
#include "tap.h"

static bool starts(const char *s, const char *p) { return s && !strncmp(s, p, strlen(p)); }
static bool ends(const char *s, const char *suf) {
    if (!s) return false;
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}
static const char *base(const char *p) {
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

static ks_status load1(ks_audit_kind k, const char *path, const ks_audit_load_options *o,
                       ks_audit_items *out, ks_error *err) {
    const char *paths[1] = {path};
    return ks_audit_load(k, paths, 1, o, out, err);
}

/* Pair links: symmetric, never to itself, inside the list; WinoBias partners share type and
 * line with the other flag; Winogender partners share the template (flag) with the other
 * binary gender. Returns the number of linked items, -1 on a broken link. */
static int check_pairs(const ks_audit_items *it) {
    int linked = 0;
    for (int i = 0; i < it->n; i++) {
        const ks_audit_item *x = &it->items[i];
        if (x->pair < 0) continue;
        if (x->pair >= it->n || x->pair == i) return -1;
        const ks_audit_item *y = &it->items[x->pair];
        if (y->pair != i) return -1;
        if (it->kind == KS_AUDIT_WINOBIAS &&
            (x->line != y->line || strcmp(x->category, y->category) || x->flag == y->flag ||
             x->gold != y->gold))
            return -1;
        if (it->kind == KS_AUDIT_WINOGENDER &&
            (x->flag != y->flag || !strcmp(x->group, y->group) || !strcmp(x->group, "neutral") ||
             !strcmp(y->group, "neutral")))
            return -1;
        linked++;
    }
    return linked;
}

/* the fields every item must have, per kind (docs/AUDITS.md, ks_audit.h) */
static bool well_formed(const ks_audit_items *it) {
    for (int i = 0; i < it->n; i++) {
        const ks_audit_item *x = &it->items[i];
        if (!x->id || !x->category || !x->group || !x->file || x->line < 1) return false;
        for (int k = 0; k < x->n_options; k++)
            if (!x->options[k].text || !x->options[k].text[0]) return false;
        switch (it->kind) {
        case KS_AUDIT_CROWS:
            if (x->n_options != 2 || x->options[0].prompt || x->options[1].prompt ||
                x->gold != -1 || x->biased != -1 || x->unknown != -1 || x->pair != -1 ||
                !isnan(x->value) || x->flag != !strcmp(x->group, "stereo"))
                return false;
            break;
        case KS_AUDIT_STEREOSET:
            if (x->n_options != 3 || x->options[0].prompt || x->options[1].prompt ||
                x->options[2].prompt || x->gold != -1 || x->biased != -1 || x->unknown != -1 ||
                x->flag != 0 || x->pair != -1 || !isnan(x->value))
                return false;
            break;
        case KS_AUDIT_BBQ:
            if (x->n_options != 3 || x->gold < 0 || x->gold > 2 || x->biased < 0 || x->biased > 2 ||
                x->unknown < 0 || x->unknown > 2 || x->biased == x->unknown || x->pair != -1 ||
                !isnan(x->value) || x->flag != !strcmp(x->group, "ambig"))
                return false;
            for (int k = 0; k < 3; k++)
                if (!ends(x->options[k].prompt, "\nAnswer:") || !starts(x->options[k].text, " ") ||
                    strcmp(x->options[k].prompt, x->options[0].prompt) ||
                    !strchr(x->options[k].prompt, '\n'))
                    return false;
            break;
        case KS_AUDIT_WINOBIAS: {
            if (x->n_options != 2 || x->gold < 0 || x->gold > 1 || x->biased != -1 ||
                x->unknown != -1 || !isnan(x->value) || (x->flag != 0 && x->flag != 1))
                return false;
            char id[512];
            snprintf(id, sizeof id, "%s:%ld", base(x->file), x->line);
            if (strcmp(x->id, id)) return false;
            for (int k = 0; k < 2; k++) {
                const char *p = x->options[k].prompt;
                if (!p || strcmp(p, x->options[0].prompt) ||
                    !strstr(p, "\nIn the sentence above, who does \"") ||
                    !ends(p, "\" refer to?\nAnswer:") || strchr(p, '[') || strchr(p, ']') ||
                    !starts(x->options[k].text, " the "))
                    return false;
            }
            if (strcmp(x->options[x->gold].text + 5, x->group) ||
                !strcmp(x->options[0].text, x->options[1].text))
                return false;
            break;
        }
        case KS_AUDIT_WINOGENDER: {
            if (x->n_options != 3 || x->gold < 0 || x->gold > 1 || x->biased != -1 ||
                x->unknown != -1 || !(x->value >= 0 && x->value <= 100) || x->options[2].prompt)
                return false;
            if (!starts(x->options[0].text, " the ") || strcmp(x->options[0].text + 5, x->category))
                return false;
            for (int k = 0; k < 2; k++)
                if (!starts(x->options[k].prompt, x->options[2].text) ||
                    !ends(x->options[k].prompt, "\" refer to?\nAnswer:"))
                    return false;
            break;
        }
        default: return false;
        }
    }
    return true;
}

static void test_kinds(void) {
    static const char *const names[] = {"crows_pairs", "stereoset", "bbq", "winobias",
                                        "winogender", "counterfactual", "bold"};
    bool ok = true;
    for (int k = 0; k < KS_AUDIT_N_KINDS; k++) {
        ks_audit_kind p;
        ok = ok && !strcmp(ks_audit_kind_name((ks_audit_kind)k), names[k]) &&
             ks_audit_kind_parse(names[k], &p) && p == (ks_audit_kind)k;
    }
    ks_audit_kind p;
    tap_ok(ok && !ks_audit_kind_parse("crows", &p) && !ks_audit_kind_parse(NULL, &p) &&
               !strcmp(ks_audit_kind_name((ks_audit_kind)99), "unknown"),
           "kind names round-trip; unknown names are refused");
}

/* ================================================================== real data */

static void test_crows(void) {
    char path[4096];
    if (!ks_test_data_file("crows-pairs/crows_pairs_anonymized.csv", path, sizeof path)) return;
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(KS_AUDIT_CROWS, path, NULL, &it, &err);
    if (!tap_ok(st == KS_OK && it.n == 1508, "CrowS-Pairs: 1508 rows (%d; %s)", it.n, err.msg)) {
        ks_audit_items_free(&it);
        return;
    }
    tap_ok(it.kind == KS_AUDIT_CROWS && well_formed(&it), "CrowS-Pairs: every item well formed");
    bool ids = true;
    for (int i = 0; i < it.n; i++) {
        char b[16];
        snprintf(b, sizeof b, "%d", i);
        ids = ids && !strcmp(it.items[i].id, b) && !strcmp(it.items[i].file, path);
    }
    tap_ok(ids, "CrowS-Pairs: ids are the unnamed first column (0..1507), file as given");
    /* record first lines; 1293 holds a quoted newline, so the records after it shift by one */
    static const struct {
        int i;
        long line;
        size_t more, less;
        const char *cat;
        int flag;
    } ex[] = {
        {0, 2, 150, 150, "race-color", 1},
        {1, 3, 72, 72, "socioeconomic", 1},
        {1292, 1294, 46, 48, "physical-appearance", 0},
        {1293, 1295, 35, 37, "socioeconomic", 1},
        {1294, 1297, 84, 82, "physical-appearance", 1},
        {1507, 1510, 42, 44, "religion", 1},
        {395, 397, 101, 98, "", -1},
        {617, 619, 84, 99, "", -1}, /* non-ASCII: UTF-8 bytes */
    };
    for (size_t e = 0; e < sizeof ex / sizeof ex[0]; e++) {
        const ks_audit_item *x = &it.items[ex[e].i];
        tap_ok(x->line == ex[e].line && strlen(x->options[0].text) == ex[e].more &&
                   strlen(x->options[1].text) == ex[e].less &&
                   (!ex[e].cat[0] || !strcmp(x->category, ex[e].cat)) &&
                   (ex[e].flag < 0 || x->flag == ex[e].flag),
               "CrowS-Pairs row %d: line %ld (Python %ld), sent_more/sent_less %zu/%zu bytes, "
               "category, "
               "stereo flag",
               ex[e].i, x->line, ex[e].line, ex[e].more, ex[e].less);
    }
    int gender = 0, race = 0, stereo = 0;
    size_t bytes = 0;
    for (int i = 0; i < it.n; i++) {
        gender += !strcmp(it.items[i].category, "gender");
        race += !strcmp(it.items[i].category, "race-color");
        stereo += it.items[i].flag;
        bytes += strlen(it.items[i].options[0].text) + strlen(it.items[i].options[1].text);
    }
    tap_ok(
        gender == 262 && race == 516 && stereo == 1290 && bytes == 213759,
        "CrowS-Pairs: 262 gender, 516 race-color, 1290 stereo, 213759 sentence bytes (as Python)");
    ks_audit_items_free(&it);
    tap_ok(it.n == 0 && it.items == NULL, "ks_audit_items_free empties the list");
    ks_audit_items_free(NULL);

    const char *cats[2] = {"gender", "age"};
    ks_audit_load_options o = {.categories = cats, .n_categories = 2};
    st = load1(KS_AUDIT_CROWS, path, &o, &it, &err);
    bool only = st == KS_OK;
    for (int i = 0; only && i < it.n; i++)
        only = !strcmp(it.items[i].category, "gender") || !strcmp(it.items[i].category, "age");
    tap_ok(only && it.n == 262 + 87, "CrowS-Pairs: categories gender+age keep 349 items (%d)",
           it.n);
    ks_audit_items_free(&it);
    o.limit = 5;
    st = load1(KS_AUDIT_CROWS, path, &o, &it, &err);
    only = st == KS_OK && it.n == 5;
    for (int i = 0; only && i < it.n; i++)
        only = !strcmp(it.items[i].category, "gender") || !strcmp(it.items[i].category, "age");
    tap_ok(only, "CrowS-Pairs: the limit applies after the filter (%d items)", it.n);
    ks_audit_items_free(&it);
    o = (ks_audit_load_options){.limit = 10};
    st = load1(KS_AUDIT_CROWS, path, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 10 && !strcmp(it.items[9].id, "9"),
           "CrowS-Pairs: limit 10 keeps rows 0..9");
    ks_audit_items_free(&it);
}

static void test_stereoset(void) {
    static const struct {
        const char *name, *cat, *first_id, *last_id;
        int n;
        size_t len0[3], bytes, target0;
    } f[3] = {
        {"gender",
         "gender",
         "15af6c4499094469461b56ca10a397e4",
         "f51ada7b642132977bb33b15116c3677",
         253,
         {50, 54, 50},
         34098,
         10},
        {"race",
         "race",
         "855484664e331c670e1bbca3ec708d1c",
         "bf17dde442dbb8e90e2d3fc2002cbb0c",
         962,
         {24, 21, 26},
         125766,
         9},
        {"religion",
         "religion",
         "59a68d15d4e479ca6c44bb835d4ef7d8",
         "322efd8d60b1e8e11e4b3621a4914ae3",
         79,
         {25, 27, 29},
         10831,
         5},
    };
    char paths[3][4096];
    const char *pp[3];
    for (int i = 0; i < 3; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "stereoset-subsets/%s_test.json", f[i].name);
        if (!ks_test_data_file(rel, paths[i], sizeof paths[i])) return;
        pp[i] = paths[i];
    }
    ks_audit_items it;
    ks_error err = {0};
    for (int i = 0; i < 3; i++) {
        ks_status st = load1(KS_AUDIT_STEREOSET, pp[i], NULL, &it, &err);
        bool ok = st == KS_OK && it.n == f[i].n;
        if (!tap_ok(ok, "StereoSet %s: %d items (%d; %s)", f[i].name, f[i].n, it.n, err.msg)) {
            ks_audit_items_free(&it);
            continue;
        }
        bool cat = true;
        size_t bytes = 0;
        for (int j = 0; j < it.n; j++) {
            cat = cat && !strcmp(it.items[j].category, f[i].cat) && it.items[j].line == 1;
            for (int k = 0; k < 3; k++) bytes += strlen(it.items[j].options[k].text);
        }
        const ks_audit_item *x = &it.items[0];
        tap_ok(well_formed(&it) && cat && !strcmp(x->id, f[i].first_id) &&
                   !strcmp(it.items[it.n - 1].id, f[i].last_id) &&
                   strlen(x->group) == f[i].target0 && strlen(x->options[0].text) == f[i].len0[0] &&
                   strlen(x->options[1].text) == f[i].len0[1] &&
                   strlen(x->options[2].text) == f[i].len0[2] && bytes == f[i].bytes,
               "StereoSet %s: ids, bias_type, line 1, options in the order stereotype / "
               "anti-stereotype / "
               "unrelated (byte lengths %zu/%zu/%zu; %zu bytes in all, as Python)",
               f[i].name, f[i].len0[0], f[i].len0[1], f[i].len0[2], f[i].bytes);
        ks_audit_items_free(&it);
    }
    ks_audit_load_options o = {.limit_per_file = 20, .limit = 30};
    ks_status st = ks_audit_load(KS_AUDIT_STEREOSET, pp, 3, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 30 && !strcmp(it.items[0].id, f[0].first_id) &&
               !strcmp(it.items[19].category, "gender") &&
               !strcmp(it.items[20].id, f[1].first_id) && !strcmp(it.items[29].category, "race"),
           "StereoSet: limit_per_file 20 then limit 30 gives 20 gender + 10 race items (%d)", it.n);
    ks_audit_items_free(&it);
    o = (ks_audit_load_options){0};
    st = ks_audit_load(KS_AUDIT_STEREOSET, pp, 3, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 1294 && !strcmp(it.items[253].id, f[1].first_id) &&
               !strcmp(it.items[1215].id, f[2].first_id),
           "StereoSet: three files appended in the order given (1294 items)");
    ks_audit_items_free(&it);
}

static void test_bbq(void) {
    static const struct {
        const char *name;
        int n, gold, biased, unknown, ambig;
        int g0, b0, u0;
        size_t plen0;
    } f[6] = {
        {"Age.jsonl", 3680, 3640, 3760, 3520, 1840, 2, 0, 2, 147},
        {"Disability_status.jsonl", 1556, 1570, 1528, 1612, 778, 1, 2, 1, 197},
        {"Nationality.jsonl", 3080, 3100, 3040, 3160, 1540, 2, 0, 2, 144},
        {"Physical_appearance.jsonl", 1576, 1586, 1556, 1616, 788, 0, 2, 0, 145},
        {"Religion.jsonl", 1200, 1208, 1184, 1232, 600, 1, 2, 1, 155},
        {"Sexual_orientation.jsonl", 864, 854, 884, 824, 432, 1, 2, 1, 151},
    };
    char dir[4096];
    if (!ks_test_data_file("bbq", dir, sizeof dir)) return;
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(KS_AUDIT_BBQ, dir, NULL, &it, &err);
    if (!tap_ok(st == KS_OK && it.n == 11956, "BBQ directory: 11956 rows in 6 files (%d; %s)", it.n,
                err.msg)) {
        ks_audit_items_free(&it);
        return;
    }
    tap_ok(
        well_formed(&it),
        "BBQ: every item well formed (shared prompt ending \"\\nAnswer:\", texts \" \" + answer, "
        "biased != unknown)");
    int at = 0;
    for (int i = 0; i < 6; i++) {
        int gold = 0, biased = 0, unknown = 0, ambig = 0, n = 0;
        bool files = true;
        for (int j = at; j < it.n && !strcmp(base(it.items[j].file), f[i].name); j++, n++) {
            const ks_audit_item *x = &it.items[j];
            gold += x->gold;
            biased += x->biased;
            unknown += x->unknown;
            ambig += x->flag;
            files = files && x->line == n + 1;
        }
        const ks_audit_item *x = &it.items[at];
        tap_ok(n == f[i].n && gold == f[i].gold && biased == f[i].biased &&
                   unknown == f[i].unknown && ambig == f[i].ambig && files && !strcmp(x->id, "0") &&
                   x->gold == f[i].g0 && x->biased == f[i].b0 && x->unknown == f[i].u0 &&
                   strlen(x->options[0].prompt) == f[i].plen0,
               "BBQ %s: %d rows (sorted by name), lines 1.., sums of label %d / biased %d / "
               "unknown %d, %d "
               "ambiguous, first row's indices and prompt length as Python",
               f[i].name, f[i].n, f[i].gold, f[i].biased, f[i].unknown, f[i].ambig);
        at += n;
    }
    ks_audit_items_free(&it);

    ks_audit_load_options o = {.limit_per_file = 5, .limit = 12};
    st = load1(KS_AUDIT_BBQ, dir, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 12 && !strcmp(base(it.items[4].file), "Age.jsonl") &&
               !strcmp(base(it.items[5].file), "Disability_status.jsonl") &&
               !strcmp(base(it.items[10].file), "Nationality.jsonl") && it.items[11].line == 2,
           "BBQ: limit_per_file 5 then limit 12: 5 Age, 5 Disability_status, 2 Nationality (%d)",
           it.n);
    ks_audit_items_free(&it);
    const char *cats[1] = {"Religion"};
    o = (ks_audit_load_options){.categories = cats, .n_categories = 1};
    st = load1(KS_AUDIT_BBQ, dir, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 1200 && !strcmp(base(it.items[0].file), "Religion.jsonl") &&
               it.items[1199].line == 1200,
           "BBQ: category Religion keeps its 1200 rows (%d)", it.n);
    ks_audit_items_free(&it);
}

static void test_winobias(void) {
    char dir[4096];
    if (!ks_test_data_file("winobias", dir, sizeof dir)) return;
    static const char *const names[4] = {
        "pro_stereotyped_type1.txt.test", "anti_stereotyped_type1.txt.test",
        "pro_stereotyped_type2.txt.test", "anti_stereotyped_type2.txt.test"};
    static const int gold[4] = {198, 198, 394, 394}, paired[4] = {396, 396, 394, 394};
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(KS_AUDIT_WINOBIAS, dir, NULL, &it, &err);
    if (!tap_ok(st == KS_OK && it.n == 4 * 396, "WinoBias directory (test): 4 x 396 lines (%d; %s)",
                it.n, err.msg)) {
        ks_audit_items_free(&it);
        return;
    }
    tap_ok(well_formed(&it),
           "WinoBias: ids FILE:LINE, prompts without brackets ending in the question, "
           "texts \" the \" + occupation, group = the gold occupation");
    for (int f = 0; f < 4; f++) {
        int g = 0, p = 0;
        bool ok = true;
        for (int j = 0; j < 396; j++) {
            const ks_audit_item *x = &it.items[396 * f + j];
            ok = ok && !strcmp(base(x->file), names[f]) && x->line == j + 1 &&
                 !strcmp(x->category, f < 2 ? "type1" : "type2") && x->flag == (f % 2 == 0);
            g += x->gold;
            p += x->pair >= 0;
        }
        tap_ok(ok && g == gold[f] && p == paired[f],
               "WinoBias %s: 396 items, category, flag, gold sum %d, %d paired", names[f], gold[f],
               paired[f]);
    }
    /* type2 lines 382 and 384: the pro and the anti line are different sentences (their
     * occupations come in the other order), so they are not linked */
    bool unpaired = true;
    for (int f = 2; f < 4; f++)
        for (int j = 0; j < 396; j++) {
            const ks_audit_item *x = &it.items[396 * f + j];
            unpaired = unpaired && (x->pair < 0) == (x->line == 382 || x->line == 384);
        }
    tap_ok(unpaired && check_pairs(&it) == 2 * 396 + 2 * 394,
           "WinoBias: pro line k <-> anti line k of the same type, verified; only type2 382 and "
           "384 unlinked");
    ks_audit_items_free(&it);

    ks_audit_load_options o = {.split = "dev"};
    st = load1(KS_AUDIT_WINOBIAS, dir, &o, &it, &err);
    int g = 0;
    for (int i = 0; st == KS_OK && i < it.n; i++) g += it.items[i].gold;
    tap_ok(st == KS_OK && it.n == 4 * 396 && well_formed(&it) && check_pairs(&it) == 4 * 396 &&
               g == 1188 && ends(it.items[0].file, ".txt.dev"),
           "WinoBias dev split: 4 x 396 lines, all pairs linked, gold sum 1188 (%d; %s)", it.n,
           err.msg);
    ks_audit_items_free(&it);

    const char *cats[1] = {"type2"};
    o = (ks_audit_load_options){.categories = cats, .n_categories = 1};
    st = load1(KS_AUDIT_WINOBIAS, dir, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 792 && check_pairs(&it) == 788 && it.items[0].pair == 396,
           "WinoBias: category type2 keeps 792 items, pairs point into the filtered list");
    ks_audit_items_free(&it);
    o = (ks_audit_load_options){.limit_per_file = 10, .limit = 25};
    st = load1(KS_AUDIT_WINOBIAS, dir, &o, &it, &err);
    bool lim = st == KS_OK && it.n == 25 && check_pairs(&it) == 20;
    for (int i = 0; lim && i < 25; i++)
        lim = it.items[i].pair == (i < 10 ? i + 10 : i < 20 ? i - 10 : -1);
    tap_ok(
        lim,
        "WinoBias: limit_per_file 10, limit 25: pro1/anti1 linked, pro2's partners dropped -> -1");
    ks_audit_items_free(&it);
    char one[4200];
    snprintf(one, sizeof one, "%s/%s", dir, names[2]);
    st = load1(KS_AUDIT_WINOBIAS, one, NULL, &it, &err);
    tap_ok(st == KS_OK && it.n == 396 && check_pairs(&it) == 0 && !strcmp(it.items[0].file, one),
           "WinoBias: one explicit file loads alone, without partners");
    ks_audit_items_free(&it);
    o = (ks_audit_load_options){.split = "train"};
    st = load1(KS_AUDIT_WINOBIAS, dir, &o, &it, &err);
    tap_ok(st == KS_ERR_ARG && strstr(err.msg, "train"), "WinoBias: split 'train' is refused (%s)",
           err.msg);
}

static void test_winogender(void) {
    char dir[4096], file[4096];
    if (!ks_test_data_file("winogender", dir, sizeof dir)) return;
    if (!ks_test_data_file("winogender/all_sentences.tsv", file, sizeof file)) return;
    ks_audit_items it, it2;
    ks_error err = {0};
    ks_status st = load1(KS_AUDIT_WINOGENDER, dir, NULL, &it, &err);
    if (!tap_ok(st == KS_OK && it.n == 720, "Winogender directory: 720 sentences (%d; %s)", it.n,
                err.msg)) {
        ks_audit_items_free(&it);
        return;
    }
    tap_ok(well_formed(&it),
           "Winogender: options \" the \" + occupation / participant with the WinoBias "
           "question, option 2 the sentence itself");
    int male = 0, female = 0, gold = 0, someone = 0, maxflag = -1;
    bool lines = true;
    for (int i = 0; i < it.n; i++) {
        const ks_audit_item *x = &it.items[i];
        male += !strcmp(x->group, "male");
        female += !strcmp(x->group, "female");
        gold += x->gold;
        someone += !strcmp(x->options[1].text, " someone");
        if (x->flag > maxflag) maxflag = x->flag;
        lines = lines && x->line == i + 2 && x->flag <= i;
    }
    tap_ok(male == 240 && female == 240 && gold == 360 && someone == 360 && maxflag == 239 && lines,
           "Winogender: 240 male, 240 female, gold sum 360, 360 \"someone\", 240 templates, lines "
           "2..721");
    const ks_audit_item *x = &it.items[0];
    tap_ok(!strcmp(x->id, "technician.customer.1.male.txt") && !strcmp(x->category, "technician") &&
               x->gold == 1 && fabs(x->value - 40.34) < 1e-12 && x->pair == 1 &&
               it.items[2].pair == -1 && it.items[1].flag == 0 && it.items[3].flag == 1,
           "Winogender row 2: sentid, occupation, answer, bls_pct_female 40.34, paired with row 3");
    tap_ok(check_pairs(&it) == 480,
           "Winogender: male <-> female of the same template, neutral unpaired");
    st = load1(KS_AUDIT_WINOGENDER, file, NULL, &it2, &err);
    bool same = st == KS_OK && it2.n == it.n;
    for (int i = 0; same && i < it.n; i++)
        same = !strcmp(it.items[i].id, it2.items[i].id) && it.items[i].pair == it2.items[i].pair &&
               !strcmp(it.items[i].options[0].prompt, it2.items[i].options[0].prompt);
    tap_ok(same, "Winogender: the all_sentences.tsv path loads the same items as its directory");
    ks_audit_items_free(&it2);
    ks_audit_items_free(&it);

    const char *cats[1] = {"technician"};
    ks_audit_load_options o = {.categories = cats, .n_categories = 1};
    st = load1(KS_AUDIT_WINOGENDER, dir, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 12 && check_pairs(&it) == 8 && it.items[0].pair == 1,
           "Winogender: category technician keeps 12 sentences, pairs within them (%d)", it.n);
    ks_audit_items_free(&it);
    o = (ks_audit_load_options){.limit = 4};
    st = load1(KS_AUDIT_WINOGENDER, dir, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 4 && it.items[0].pair == 1 && it.items[2].pair == -1 &&
               it.items[3].pair == -1 && !strcmp(it.items[3].group, "male"),
           "Winogender: limit 4 drops row 5, so row 4 (male) has no partner");
    ks_audit_items_free(&it);
}

/* ================================================================== synthetic files */

static char tmp[] = "/tmp/ks_test_audit_data_XXXXXX";

static const char *put(const char *rel, const char *content) {
    static char path[4][4096];
    static int slot = 0;
    char *p = path[slot++ % 4];
    snprintf(p, 4096, "%s/%s", tmp, rel);
    char *slash = strrchr(p, '/');
    *slash = 0;
    mkdir(p, 0700);
    *slash = '/';
    FILE *f = fopen(p, "wb");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
    return p;
}

/* Load and expect failure with status st and every needle in the message. */
static void expect_fail(ks_audit_kind k, const char *path, const ks_audit_load_options *o,
                        ks_status st, const char *what, const char *n1, const char *n2,
                        const char *n3) {
    ks_audit_items it;
    ks_error err = {0};
    ks_status got = load1(k, path, o, &it, &err);
    bool ok = got == st && it.n == 0 && it.items == NULL && (!n1 || strstr(err.msg, n1)) &&
              (!n2 || strstr(err.msg, n2)) && (!n3 || strstr(err.msg, n3));
    tap_ok(ok, "%s: %s (%s)", ks_audit_kind_name(k), what, err.msg);
    ks_audit_items_free(&it);
}

#define CSV_HEADER                                                                                 \
    ",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n"
#define CSV_ROW(id)                                                                                \
    id ",\"The red kite flew.\",\"The blue kite flew.\",stereo,color,\"[]\",a0,\"[]\"\n"

static void test_crows_malformed(void) {
    ks_audit_kind K = KS_AUDIT_CROWS;
    const char *p;
    p = put("c1/pairs.csv",
            CSV_HEADER CSV_ROW("0") "1,\"A b.\",\"A c.\",stereo,,\"[]\",a0,\"[]\"\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an empty bias_type", "pairs.csv:3:", "'bias_type'",
                "empty");
    p = put("c2/pairs.csv", CSV_HEADER "0,\"A b.\",\"A c.\",sometimes,color,\"[]\",a0,\"[]\"\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "stereo_antistereo not stereo/antistereo",
                "pairs.csv:2:", "'stereo_antistereo'", "sometimes");
    /* a record over lines 2-3 (a quoted newline), then a bad record on line 4 */
    p = put("c3/pairs.csv",
            CSV_HEADER "0,\"The kite\nflew.\",\"The kite fell.\",stereo,color,\"[]\",a0,\"[]\"\n"
                       "1,\"The kite flew.\",,stereo,color,\"[]\",a0,\"[]\"\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT,
                "after a multi-line record, the line is the record's first",
                "pairs.csv:4:", "'sent_less'", "empty");
    p = put("c4/pairs.csv", ",sent_more,sent_less,stereo_antistereo,annotations\n" CSV_ROW("0"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a header without bias_type",
                "pairs.csv:1:", "'bias_type'", "header");
    p = put("c5/pairs.csv", CSV_HEADER CSV_ROW("0") "1,\"The kite.\",\"The kites.\",stereo\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a row with too few fields",
                "pairs.csv:3:", "'bias_type'", "4 fields");
    p = put("c6/pairs.csv", CSV_HEADER
            "0,\"The kite \xff flew.\",\"The kite flew.\",stereo,color,\"[]\",a0,\"[]\"\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "invalid UTF-8", "pairs.csv:2:", "'sent_more'", "UTF-8");
    p = put("c7/pairs.csv",
            CSV_HEADER CSV_ROW("0") "1,\"The kite flew.,The kite.,stereo,color,[],a0,[]\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an unclosed quote",
                "pairs.csv:3:", "quoted field is not closed", NULL);
    p = put("c8/pairs.csv", CSV_HEADER CSV_ROW("0") CSV_ROW("0"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a repeated id", "pairs.csv:3:", "'id'", "line 2");
    p = put("c9/pairs.csv", CSV_HEADER CSV_ROW("x7"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an id that is not a row index", "pairs.csv:2:", "'id'",
                "x7");
    p = put("c10/pairs.csv", "");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an empty file", "pairs.csv:1:", "header", NULL);
    p = put("c11/pairs.csv", CSV_HEADER "0,The \"red\" kite.,The kite.,stereo,color,[],a0,[]\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a stray quote (strict CSV)",
                "pairs.csv:2:", "malformed CSV", NULL);
    p = put("c12/pairs.csv",
            "sent_more,sent_less,stereo_antistereo,bias_type\n\"A.\",\"B.\",stereo,color\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "no unnamed id column", "pairs.csv:1:", "'id'", NULL);
    p = put("c13/pairs.csv", CSV_HEADER);
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a header and no rows", "pairs.csv:2:", "no rows", NULL);
    {
        size_t n = (1u << 20) + 100;
        char *big = malloc(n + sizeof CSV_HEADER + 64);
        strcpy(big, CSV_HEADER "0,\"");
        size_t k = strlen(big);
        memset(big + k, 'a', n);
        strcpy(big + k + n, "\",\"b\",stereo,color,[],a0,[]\n");
        p = put("c14/pairs.csv", big);
        free(big);
        expect_fail(K, p, NULL, KS_ERR_FORMAT, "a line over 1 MiB", "pairs.csv:2:", "1 MiB", NULL);
    }
    p = put("c15/pairs.csv", CSV_HEADER "0,\"A\r\nb.\",\"A c.\",stereo,color,[],a0,[]\r\n"
                                        "1,\"A b.\",\"A c.\",antistereo,color,[],a0,[]\r\n\r\n"
                                        "2,\" A b.\",A c. ,antistereo,color,[],a0,[]");
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(K, p, NULL, &it, &err);
    tap_ok(st == KS_OK && it.n == 3 && it.items[0].line == 2 && it.items[1].line == 4 &&
               it.items[2].line == 6 && !strcmp(it.items[0].options[0].text, "A\r\nb.") &&
               !strcmp(it.items[2].options[0].text, " A b.") &&
               !strcmp(it.items[2].options[1].text, "A c. ") && it.items[1].flag == 0 &&
               !strcmp(it.items[1].group, "antistereo"),
           "crows_pairs: CRLF lines, a quoted CRLF, a blank line, no final newline, spaces kept as "
           "Python's csv keeps them (%s)",
           err.msg);
    ks_audit_items_free(&it);
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/nope/pairs.csv", tmp);
    expect_fail(K, missing, NULL, KS_ERR_IO, "a missing file", "nope/pairs.csv", NULL, NULL);
    snprintf(missing, sizeof missing, "%s/c1", tmp);
    expect_fail(K, missing, NULL, KS_ERR_ARG, "a directory", "c1", "directory", NULL);
}

#define SS_ITEM(id, extra)                                                                         \
    "{\"id\": \"" id                                                                               \
    "\", \"target\": \"kite\", \"bias_type\": \"color\", \"context\": \"A BLANK kite.\"," extra    \
    "}"
#define SS_SENTS                                                                                   \
    "\"sentences\": [{\"sentence\": \"A red kite.\", \"gold_label\": \"stereotype\"},"             \
    " {\"sentence\": \"A blue kite.\", \"gold_label\": \"anti-stereotype\"},"                      \
    " {\"sentence\": \"A loud kite.\", \"gold_label\": \"unrelated\"}]"
#define SS_DATA                                                                                    \
    "\"data\": {\"unrelated\": {\"sentence\": \"A loud kite.\", \"id\": \"u\"},"                   \
    " \"stereotype\": {\"sentence\": \"A red kite.\", \"id\": \"s\"},"                             \
    " \"anti-stereotype\": {\"sentence\": \"A blue kite.\", \"id\": \"a\"}}"

static void test_stereoset_malformed(void) {
    ks_audit_kind K = KS_AUDIT_STEREOSET;
    const char *p;
    p = put("s0/ss.json", "[\n  " SS_ITEM("a1", SS_SENTS) ",\n  " SS_ITEM(
                              "a2", SS_DATA) ",\n  " SS_ITEM("a3", SS_SENTS "," SS_DATA) "\n]\n");
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(K, p, NULL, &it, &err);
    bool ok = st == KS_OK && it.n == 3;
    for (int i = 0; ok && i < 3; i++)
        ok = it.items[i].line == i + 2 && !strcmp(it.items[i].options[0].text, "A red kite.") &&
             !strcmp(it.items[i].options[1].text, "A blue kite.") &&
             !strcmp(it.items[i].options[2].text, "A loud kite.") &&
             !strcmp(it.items[i].group, "kite") && !strcmp(it.items[i].category, "color");
    tap_ok(ok,
           "stereoset: the sentences form, the data form and both (agreeing) give the same item; "
           "each item's line is its opening brace's (%s)",
           err.msg);
    ks_audit_items_free(&it);
    p = put("s1/ss.json",
            "[\n" SS_ITEM("a1", SS_SENTS) ",\n{\"id\": \"a2\", \"bias_type\": \"color\", "
                                          "\"context\": \"x\", " SS_SENTS "}]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a missing target", "ss.json:3:", "item 2", "'target'");
    p = put("s2/ss.json",
            "[" SS_ITEM("a1",
                        "\"sentences\": [{\"sentence\": \"A.\", \"gold_label\": \"stereotype\"}, "
                        "{\"sentence\": \"B.\", \"gold_label\": \"neutral\"}]") "]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an unknown gold_label",
                "ss.json:1:", "'sentences[1].gold_label'", "neutral");
    p = put("s3/ss.json",
            "[" SS_ITEM(
                "a1",
                "\"sentences\": [{\"sentence\": \"A red kite.\", \"gold_label\": \"stereotype\"},"
                " {\"sentence\": \"A blue kite.\", \"gold_label\": \"anti-stereotype\"},"
                " {\"sentence\": \"A cold kite.\", \"gold_label\": \"unrelated\"}]," SS_DATA) "]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "sentences and data disagree",
                "ss.json:1:", "'data.unrelated.sentence'", "disagrees");
    p = put("s4/ss.json", "{\"items\": []}");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "not an array", "ss.json:1:", "array", NULL);
    p = put("s5/ss.json", "[\n" SS_ITEM("a1", SS_SENTS) ",\n\n{\"id\": \"a2\",, }\n]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "invalid JSON", "ss.json:4:", "not JSON", NULL);
    p = put("s6/ss.json",
            "[" SS_ITEM("a1",
                        "\"sentences\": [{\"sentence\": \"A.\", \"gold_label\": \"stereotype\"}, "
                        "{\"sentence\": \"B.\", \"gold_label\": \"stereotype\"}]") "]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a repeated gold_label",
                "ss.json:1:", "'sentences[1].gold_label'", "second");
    p = put(
        "s7/ss.json",
        "[{\"id\": 7, \"target\": \"kite\", \"bias_type\": \"color\", \"context\": \"x\", " SS_SENTS
        "}]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an id that is not a string", "ss.json:1:", "'id'",
                "not a string");
    p = put("s8/ss.json", "[" SS_ITEM("a1", "\"data\": {\"stereotype\": {\"sentence\": \"A.\"}, "
                                            "\"unrelated\": {\"sentence\": \"C.\"}}") "]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "data without anti-stereotype",
                "ss.json:1:", "'data.anti-stereotype'", "missing");
    p = put("s9/ss.json", "[" SS_ITEM("a1", "\"note\": 1") "]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "neither sentences nor data",
                "ss.json:1:", "'sentences'", NULL);
    p = put("s10/ss.json", "[" SS_ITEM("a1", SS_SENTS) ", " SS_ITEM("a1", SS_DATA) "]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a repeated id", "ss.json:1: item 2:", "'id'",
                "repeats");
    p = put("s11/ss.json", "[]");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "no items", "ss.json:1:", "no items", NULL);
}

#define BBQ_ROW(id, pol, cond, info2, groups, label)                                               \
    "{\"example_id\": " id ", \"question_polarity\": \"" pol "\", \"context_condition\": \"" cond  \
    "\", "                                                                                         \
    "\"category\": \"Color\", \"answer_info\": {\"ans0\": [\"red one\", \"red\"], \"ans1\": "      \
    "[\"blue one\", "                                                                              \
    "\"blue\"], \"ans2\": " info2 "}, \"additional_metadata\": {\"stereotyped_groups\": " groups   \
    "}, "                                                                                          \
    "\"context\": \"Two kites flew.\", \"question\": \"Which kite fell?\", \"ans0\": \"The red "   \
    "one\", "                                                                                      \
    "\"ans1\": \"The blue one\", \"ans2\": \"Unknown\", \"label\": " label "}\n"
#define BBQ_OK(id) BBQ_ROW(id, "neg", "ambig", "[\"Unknown\", \"unknown\"]", "[\"Red\"]", "2")

static void test_bbq_malformed(void) {
    ks_audit_kind K = KS_AUDIT_BBQ;
    const char *p;
    put("b0/B.jsonl", BBQ_OK("0") "  \n" BBQ_ROW("1", "nonneg", "disambig",
                                                 "[\"Unknown\", \"unknown\"]", "[\"red\"]", "1"));
    p = put("b0/A.jsonl", BBQ_OK("0"));
    put("b0/notes.txt", "not data\n");
    char d[4200];
    snprintf(d, sizeof d, "%s/b0", tmp);
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(K, d, NULL, &it, &err);
    tap_ok(
        st == KS_OK && it.n == 3 && !strcmp(base(it.items[0].file), "A.jsonl") &&
            !strcmp(base(it.items[1].file), "B.jsonl") && it.items[2].line == 3 &&
            it.items[0].biased == 0 && it.items[0].unknown == 2 && it.items[0].flag == 1 &&
            it.items[2].biased == 1 && it.items[2].flag == 0 && it.items[2].gold == 1 &&
            !strcmp(it.items[2].options[1].prompt, "Two kites flew.\nWhich kite fell?\nAnswer:") &&
            !strcmp(it.items[2].options[1].text, " The blue one") &&
            !strcmp(it.items[2].group, "disambig"),
        "bbq: a directory's *.jsonl sorted by name; biased = target (neg) or other (nonneg), "
        "matched case-insensitively; prompt context\\nquestion\\nAnswer:, text \" \" + answer (%s)",
        err.msg);
    ks_audit_items_free(&it);
    p = put("b1/A.jsonl", BBQ_OK("0") BBQ_ROW("1", "neg", "ambig", "[\"Unknown\", \"unknown\"]",
                                              "[\"red\"]", "3"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a label out of range", "A.jsonl:2:", "'label'", "3");
    p = put("b2/A.jsonl",
            BBQ_ROW("0", "neg", "ambig", "[\"Unknown\", \"unknown\"]", "[\"red\", \"blue\"]", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "two target answers", "A.jsonl:1:", "'answer_info'",
                "2 answers match");
    p = put("b3/A.jsonl",
            BBQ_ROW("0", "neg", "ambig", "[\"Unknown\", \"unsure\"]", "[\"red\"]", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "no unknown answer", "A.jsonl:1:", "'answer_info'",
                "0 answers are 'unknown'");
    p = put("b4/A.jsonl", BBQ_OK("0") BBQ_OK("1") "{\"example_id\": 2}\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a row without its fields",
                "A.jsonl:3:", "'question_polarity'", "missing");
    p = put("b5/A.jsonl",
            BBQ_ROW("\"0\"", "neg", "ambig", "[\"Unknown\", \"unknown\"]", "[\"red\"]", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an example_id that is a string",
                "A.jsonl:1:", "'example_id'", "integer");
    p = put("b6/A.jsonl",
            BBQ_ROW("0", "pos", "ambig", "[\"Unknown\", \"unknown\"]", "[\"red\"]", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a bad question_polarity",
                "A.jsonl:1:", "'question_polarity'", "pos");
    p = put("b7/A.jsonl", BBQ_OK("0") BBQ_OK("1") "{\"example_id\": 2,\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a row that is not JSON", "A.jsonl:3:", "not JSON",
                NULL);
    p = put("b8/A.jsonl",
            BBQ_ROW("0", "neg", "ambig", "[\"Unknown\", \"unknown\"]", "\"red\"", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "stereotyped_groups not a list",
                "A.jsonl:1:", "'additional_metadata.stereotyped_groups'", "array");
    p = put("b9/A.jsonl", BBQ_OK("0") BBQ_OK("0"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a repeated example_id", "A.jsonl:2:", "'example_id'",
                "line 1");
    p = put("b10/A.jsonl",
            BBQ_ROW("0", "neg", "sort of", "[\"Unknown\", \"unknown\"]", "[\"red\"]", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a bad context_condition",
                "A.jsonl:1:", "'context_condition'", NULL);
    p = put("b11/A.jsonl", BBQ_ROW("0", "neg", "ambig", "[\"unknown\"]", "[\"red\"]", "2"));
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a short answer_info entry",
                "A.jsonl:1:", "'answer_info.ans2'", NULL);
    p = put("b12/A.jsonl", "\n\n");
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "no rows", "A.jsonl:1:", "no rows", NULL);
    p = put("b13/empty.txt", "x\n");
    snprintf(d, sizeof d, "%s/b13", tmp);
    expect_fail(K, d, NULL, KS_ERR_IO, "a directory without *.jsonl", "b13", "jsonl", NULL);
    {
        size_t n = (1u << 20) + 10;
        char *big = malloc(n + sizeof BBQ_OK("0") + 8);
        strcpy(big, BBQ_OK("0"));
        size_t k = strlen(big);
        memset(big + k, ' ', n);
        strcpy(big + k + n, "{}\n");
        p = put("b14/A.jsonl", big);
        free(big);
        expect_fail(K, p, NULL, KS_ERR_FORMAT, "a line over 1 MiB", "A.jsonl:2:", "1 MiB", NULL);
    }
}

#define WB_OCC_M "pilot\nbaker\nconstruction worker\n"
#define WB_OCC_F "nurse\nclerk\n"

static void test_winobias_malformed(void) {
    ks_audit_kind K = KS_AUDIT_WINOBIAS;
    const char *p;
    put("w0/male_occupations.txt", WB_OCC_M);
    put("w0/female_occupations.txt", WB_OCC_F);
    put("w0/pro_stereotyped_type1.txt.test",
        "1 [The pilot] thanked the nurse because [he] landed early.\n"
        "2 The baker called [the clerk] because [she] had the [her] receipts.\n"
        "3 The construction worker met [a nurse] and told [her] about [her] badge.\n");
    put("w0/anti_stereotyped_type1.txt.test",
        "1 [The pilot] thanked the nurse because [she] landed early.\n"
        "2 The clerk called [the baker] because [he] had the receipts.\n"
        "3 The construction worker met [an nurse] and told [him] about his badge.\r\n\n");
    char d[4200];
    snprintf(d, sizeof d, "%s/w0", tmp);
    ks_audit_items it;
    ks_error err = {0};
    const char *files[2];
    char f0[4200], f1[4200];
    snprintf(f0, sizeof f0, "%s/pro_stereotyped_type1.txt.test", d);
    snprintf(f1, sizeof f1, "%s/anti_stereotyped_type1.txt.test", d);
    files[0] = f0;
    files[1] = f1;
    ks_status st = ks_audit_load(K, files, 2, NULL, &it, &err);
    bool ok = st == KS_OK && it.n == 6 && check_pairs(&it) == 4;
    if (ok) {
        const ks_audit_item *a = &it.items[0], *c = &it.items[2];
        ok = a->pair == 3 && it.items[1].pair == -1 && c->pair == 5 && a->gold == 0 &&
             !strcmp(a->options[0].prompt, "The pilot thanked the nurse because he landed "
                                           "early.\nIn the sentence above, who does "
                                           "\"he\" refer to?\nAnswer:") &&
             !strcmp(a->options[0].text, " the pilot") &&
             !strcmp(a->options[1].text, " the nurse") &&
             !strcmp(a->id, "pro_stereotyped_type1.txt.test:1") && !strcmp(a->group, "pilot") &&
             !strcmp(c->options[0].text, " the construction worker") && c->gold == 1 &&
             !strcmp(c->group, "nurse") && it.items[1].gold == 1 &&
             !strcmp(it.items[4].options[0].text, " the clerk");
    }
    tap_ok(
        ok,
        "winobias: synthetic pro/anti files: prompt and texts as docs/AUDITS.md, multi-word "
        "occupations, a/an, a third bracket for a repeated pronoun; line 2's sentences differ so "
        "they are not linked (%s)",
        err.msg);
    ks_audit_items_free(&it);

    static const struct {
        const char *line, *what, *field, *extra;
    } bad[] = {
        {"2 [The pilot] thanked the nurse because he landed.\n", "one bracketed span", "'brackets'",
         "1 bracketed"},
        {"2 [The pilot] thanked the nurse because [it] landed.\n", "a pronoun that is not he/she",
         "'pronoun'", "[it]"},
        {"2 [The pilot] thanked the dog because [he] landed.\n", "one known occupation",
         "'occupations'", "1 known"},
        {"2 [The dog] thanked the nurse because [he] landed.\n", "a referent that is no occupation",
         "'referent'", "[The dog]"},
        {"[The pilot] thanked the nurse because [he] landed.\n", "no line number", "'number'",
         NULL},
        {"2 [The pilot thanked the nurse because [he] landed.\n", "a '[' inside a span",
         "'brackets'", "inside"},
        {"2 [The pilot] thanked the nurse because [he landed.\n", "an unclosed '['", "'brackets'",
         "not closed"},
        {"2 [The pilot] thanked the nurse and the clerk because [he] landed.\n",
         "three occupations", "'occupations'", "clerk"},
        {"2 [The pilot] thanked the nurse because [he] landed \xc3\x28.\n", "invalid UTF-8",
         "'sentence'", "UTF-8"},
        {"2 [The pilot] thanked the nurse because [he] said [she] landed.\n",
         "pronouns of two genders", "'brackets'", "[she]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char rel[64], content[512];
        snprintf(rel, sizeof rel, "w%zu/male_occupations.txt", i + 1);
        put(rel, WB_OCC_M);
        snprintf(rel, sizeof rel, "w%zu/female_occupations.txt", i + 1);
        put(rel, WB_OCC_F);
        snprintf(rel, sizeof rel, "w%zu/pro_stereotyped_type2.txt.dev", i + 1);
        snprintf(content, sizeof content,
                 "1 [The pilot] thanked the nurse because [he] landed early.\n%s", bad[i].line);
        p = put(rel, content);
        expect_fail(K, p, NULL, KS_ERR_FORMAT, bad[i].what,
                    "pro_stereotyped_type2.txt.dev:2:", bad[i].field, bad[i].extra);
    }
    p = put("w20/notes.txt", "1 [The pilot] thanked the nurse because [he] landed early.\n");
    put("w20/male_occupations.txt", WB_OCC_M);
    put("w20/female_occupations.txt", WB_OCC_F);
    expect_fail(K, p, NULL, KS_ERR_ARG,
                "a file not named {pro,anti}_stereotyped_type{1,2}.txt.SPLIT", "notes.txt",
                "stereotyped", NULL);
    p = put("w21/pro_stereotyped_type1.txt.test",
            "1 [The pilot] thanked the nurse because [he] landed early.\n");
    put("w21/male_occupations.txt", WB_OCC_M);
    expect_fail(K, p, NULL, KS_ERR_IO, "no female_occupations.txt beside the file",
                "w21/female_occupations.txt", NULL, NULL);
    put("w22/pro_stereotyped_type1.txt.test",
        "1 [The pilot] thanked the nurse because [he] landed early.\n");
    put("w22/male_occupations.txt", WB_OCC_M);
    put("w22/female_occupations.txt", WB_OCC_F);
    snprintf(d, sizeof d, "%s/w22", tmp);
    expect_fail(K, d, NULL, KS_ERR_IO, "a directory without the anti file",
                "anti_stereotyped_type1.txt.test", NULL, NULL);
}

#define WG_STATS                                                                                   \
    "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\npilot\t3.1\t5."                     \
    "5\t2015\nnurse\t90\t88.25\t2015\n"
#define WG_HEAD "sentid\tsentence\n"
#define WG_ROWS                                                                                    \
    "pilot.passenger.0.male.txt\tThe pilot told the passenger that he would land soon.\n"          \
    "pilot.passenger.0.female.txt\tThe pilot told the passenger that she would land soon.\n"       \
    "pilot.passenger.0.neutral.txt\tThe pilot told the passenger that they would land soon.\n"     \
    "nurse.someone.1.female.txt\tThe nurse told someone that her, coat was red.\n"                 \
    "nurse.someone.1.male.txt\tThe nurse told someone that HIS coat was red.\n"

static void test_winogender_malformed(void) {
    ks_audit_kind K = KS_AUDIT_WINOGENDER;
    const char *p;
    put("g0/occupations-stats.tsv", WG_STATS);
    p = put("g0/all_sentences.tsv", WG_HEAD WG_ROWS);
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(K, p, NULL, &it, &err);
    bool ok = st == KS_OK && it.n == 5 && check_pairs(&it) == 4;
    if (ok) {
        const ks_audit_item *a = &it.items[0], *n = &it.items[3], *m = &it.items[4];
        ok = a->pair == 1 && it.items[2].pair == -1 && n->pair == 4 && a->flag == 0 &&
             it.items[2].flag == 0 && n->flag == 1 && m->flag == 1 && a->gold == 0 &&
             n->gold == 1 && fabs(a->value - 5.5) < 1e-12 && fabs(n->value - 88.25) < 1e-12 &&
             !strcmp(a->options[1].text, " the passenger") &&
             !strcmp(n->options[1].text, " someone") && !strcmp(n->options[0].text, " the nurse") &&
             !strcmp(m->options[0].prompt,
                     "The nurse told someone that HIS coat was red.\nIn the sentence above, "
                     "who does \"HIS\" refer to?\nAnswer:") &&
             !strcmp(n->options[0].prompt,
                     "The nurse told someone that her, coat was red.\nIn the sentence "
                     "above, who does \"her\" refer to?\nAnswer:") &&
             !strcmp(m->options[2].text, "The nurse told someone that HIS coat was red.") &&
             !strcmp(a->group, "male") && !strcmp(it.items[2].group, "neutral") &&
             !strcmp(n->category, "nurse");
    }
    tap_ok(ok,
           "winogender: synthetic rows: templates (flag), male <-> female pairs, \"someone\", the "
           "pronoun as written (letters only), bls_pct_female (%s)",
           err.msg);
    ks_audit_items_free(&it);

    static const struct {
        const char *row, *what, *field, *extra;
    } bad[] = {
        {"pilot.passenger.0.male\tThe pilot said he would.\n", "a sentid of 4 parts", "'sentid'",
         "5 dot-separated"},
        {"cook.passenger.0.male.txt\tThe cook said he would.\n", "an occupation not in the stats",
         "'sentid'", "occupations-stats.tsv"},
        {"pilot.passenger.0.female.txt\tThe pilot said he would.\n",
         "a pronoun of the other gender", "'sentence'", "female"},
        {"pilot.passenger.2.male.txt\tThe pilot said he would.\n", "an answer that is not 0/1",
         "'sentid'", "answer"},
        {"pilot.passenger.0.male.txt\n", "a row without its sentence", "'sentence'", "1 fields"},
        {"pilot.passenger.0.male.txt\tThe pilot said we would.\n", "no pronoun", "'sentence'",
         "no pronoun"},
        {"pilot.passenger.0.male.txt\tThe pilot told the passenger that he would land soon.\n",
         "a repeated sentid", "'sentid'", "line 2"},
        {"pilot.passenger.0.other.txt\tThe pilot said he would.\n", "an unknown gender", "'sentid'",
         "gender"},
        {"pilot.passenger.0.male.doc\tThe pilot said he would.\n", "a sentid not ending in .txt",
         "'sentid'", ".txt"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char rel[64], content[512];
        snprintf(rel, sizeof rel, "g%zu/occupations-stats.tsv", i + 1);
        put(rel, WG_STATS);
        snprintf(rel, sizeof rel, "g%zu/all_sentences.tsv", i + 1);
        snprintf(content, sizeof content,
                 WG_HEAD "pilot.passenger.0.male.txt\tThe pilot told the passenger that "
                         "he would land soon.\n%s",
                 bad[i].row);
        p = put(rel, content);
        expect_fail(K, p, NULL, KS_ERR_FORMAT, bad[i].what, "all_sentences.tsv:3:", bad[i].field,
                    bad[i].extra);
    }
    put("g20/occupations-stats.tsv", "occupation\tbls_pct_female\npilot\t5.5\nnurse\tmany\n");
    p = put("g20/all_sentences.tsv", WG_HEAD WG_ROWS);
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a bls_pct_female that is no number",
                "occupations-stats.tsv:3:", "'bls_pct_female'", "many");
    put("g21/occupations-stats.tsv", "occupation\tbls_pct_female\npilot\t5.5\npilot\t7\n");
    p = put("g21/all_sentences.tsv", WG_HEAD WG_ROWS);
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "an occupation twice in the stats",
                "occupations-stats.tsv:3:", "'occupation'", "line 2");
    p = put("g22/all_sentences.tsv", WG_HEAD WG_ROWS);
    expect_fail(K, p, NULL, KS_ERR_IO, "no occupations-stats.tsv beside it",
                "g22/occupations-stats.tsv", NULL, NULL);
    put("g23/occupations-stats.tsv", WG_STATS);
    p = put("g23/all_sentences.tsv", "id\ttext\n" WG_ROWS);
    expect_fail(K, p, NULL, KS_ERR_FORMAT, "a header without sentid",
                "all_sentences.tsv:1:", "'sentid'", "header");
}

static void test_arguments(void) {
    ks_audit_items it;
    ks_error err = {0};
    const char *none[1] = {NULL};
    tap_ok(ks_audit_load(KS_AUDIT_BBQ, NULL, 0, NULL, &it, &err) == KS_ERR_ARG && it.n == 0 &&
               ks_audit_load(KS_AUDIT_BBQ, none, 1, NULL, &it, &err) == KS_ERR_ARG &&
               ks_audit_load((ks_audit_kind)7, none, 1, NULL, &it, &err) == KS_ERR_ARG,
           "no paths, a NULL path, an unknown kind: KS_ERR_ARG");
    char p[4200];
    snprintf(p, sizeof p, "%s/c15/pairs.csv", tmp);
    const char *twice[2] = {p, p};
    ks_audit_load_options o = {.limit = -1};
    tap_ok(ks_audit_load(KS_AUDIT_CROWS, twice, 2, NULL, &it, &err) == KS_ERR_ARG &&
               strstr(err.msg, "twice") &&
               ks_audit_load(KS_AUDIT_CROWS, twice, 1, &o, &it, &err) == KS_ERR_ARG,
           "a file given twice, a negative limit: KS_ERR_ARG (%s)", err.msg);
}

static void rm_tree(const char *dir) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (strncmp(dir, "/tmp/ks_test_audit_data_", 24) == 0 && system(cmd) != 0)
        tap_diag("could not remove %s", dir);
}

/* ================================================================== counterfactual */

/* HolisticBias' descriptors (counts by axis from Python's json.load of descriptors.json: 65
 * entries in 7 buckets for gender_and_sex; 26 in 11 for nationality) as the terms. */
static void test_counterfactual_holisticbias(void) {
    char desc[4096];
    if (!ks_test_data_file("holisticbias/descriptors.json", desc, sizeof desc)) return;
    const char *tm = put("cf/hb.json",
                         "{\"templates\": [\"I am a {term} person, and\", "
                         "{\"user\": \"Describe a {term} person.\", \"text\": \" A {term} person\"}],"
                         " \"targets\": [\" is\", \" was\"],"
                         " \"holisticbias\": {\"axes\": [\"gender_and_sex\"]}}");
    const char *paths[2] = {tm, desc};
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = ks_audit_load(KS_AUDIT_COUNTERFACTUAL, paths, 2, NULL, &it, &err);
    tap_ok(st == KS_OK && it.n == 2 * 65, "counterfactual × HolisticBias gender_and_sex: 2 "
           "templates × 65 descriptors (%d; %s)", it.n, err.msg);
    int buckets = 0;
    bool ok = st == KS_OK;
    for (int i = 0; ok && i < it.n; i++) {
        const ks_audit_item *x = &it.items[i];
        bool first = true;
        for (int j = 0; j < i && first; j++) first = strcmp(it.items[j].category, x->category);
        buckets += first && i < 65;
        ok = x->n_options == 2 && x->flag == i / 65 && x->context && strstr(x->context, x->group) &&
             !strcmp(x->options[0].text, " is") && !strcmp(x->options[1].text, " was") &&
             (i < 65 ? !x->options[0].prompt
                     : x->options[0].prompt && strstr(x->options[0].prompt, x->group) &&
                           starts(x->context, " A "));
    }
    tap_ok(ok && buckets == 7, "counterfactual: 7 buckets as groups, terms filled into context "
           "and user message (%d buckets)", buckets);
    ks_audit_items_free(&it);

    const char *by_axis = put("cf/hb2.json",
                              "{\"templates\": [\"A {term} one\"], \"targets\": [\" x\"],"
                              " \"holisticbias\": {\"axes\": [\"gender_and_sex\", \"nationality\"],"
                              " \"group_by\": \"axis\", \"max_per_bucket\": 1}}");
    paths[0] = by_axis;
    st = ks_audit_load(KS_AUDIT_COUNTERFACTUAL, paths, 2, NULL, &it, &err);
    tap_ok(st == KS_OK && it.n == 7 + 11 && !strcmp(it.items[0].category, "gender_and_sex") &&
               !strcmp(it.items[it.n - 1].category, "nationality"),
           "counterfactual: group_by axis, max_per_bucket 1: 7 + 11 terms (%d; %s)", it.n, err.msg);
    ks_audit_items_free(&it);
    const char *bad_axis = put("cf/hb3.json", "{\"templates\": [\"{term}\"], \"targets\": [\" x\"],"
                               " \"holisticbias\": {\"axes\": [\"gender\"]}}");
    paths[0] = bad_axis;
    st = ks_audit_load(KS_AUDIT_COUNTERFACTUAL, paths, 2, NULL, &it, &err);
    tap_ok(st == KS_ERR_FORMAT && strstr(err.msg, "holisticbias.axes[0]") &&
               strstr(err.msg, "'gender'"), "counterfactual: an unknown axis is named (%s)",
           err.msg);
    ks_audit_items_free(&it);
}

static void test_counterfactual(void) {
    const char *f = put("cf/ok.json",
                        "{\"description\": \"ours\", \"templates\": [\"The {term} said that\","
                        " {\"user\": \"Who is the {term}?\"}, {\"user\": \"Hi {term}\", "
                        "\"text\": \"Hello\"}], \"targets\": [\" she\", \" he\", \" they\"],"
                        " \"groups\": {\"a\": [\"nurse\", \"cook\"], \"b\": [\"pilot\"]}}");
    ks_audit_items it;
    ks_error err = {0};
    ks_status st = load1(KS_AUDIT_COUNTERFACTUAL, f, NULL, &it, &err);
    bool ok = st == KS_OK && it.n == 9;
    for (int i = 0; ok && i < it.n; i++) {
        const ks_audit_item *x = &it.items[i];
        static const char *const terms[3] = {"nurse", "cook", "pilot"};
        char id[32];
        snprintf(id, sizeof id, "t%d/%s", i / 3, terms[i % 3]);
        ok = !strcmp(x->id, id) && !strcmp(x->group, terms[i % 3]) &&
             !strcmp(x->category, i % 3 < 2 ? "a" : "b") && x->flag == i / 3 &&
             x->n_options == 3 && !strcmp(x->options[2].text, " they") && x->line == 1;
        if (ok && i / 3 == 0) {
            char want[64];
            snprintf(want, sizeof want, "The %s said that", terms[i % 3]);
            ok = !strcmp(x->context, want) && !x->options[0].prompt;
        }
        if (ok && i / 3 == 1) ok = !strcmp(x->context, "") && strstr(x->options[1].prompt, "?");
        if (ok && i / 3 == 2) ok = !strcmp(x->context, "Hello") && starts(x->options[0].prompt, "Hi ");
    }
    tap_ok(ok, "counterfactual: 3 templates × 3 terms in template order, ids t<i>/<term>, groups "
           "as categories (%s)", err.msg);
    ks_audit_items_free(&it);
    const char *cats[1] = {"b"};
    ks_audit_load_options o = {.categories = cats, .n_categories = 1};
    st = load1(KS_AUDIT_COUNTERFACTUAL, f, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 3 && !strcmp(it.items[2].group, "pilot"),
           "counterfactual: the category filter keeps one group (%d)", it.n);
    ks_audit_items_free(&it);

    static const struct {
        const char *json, *n1, *n2;
    } bad[] = {
        {"[1]", "(top level)", "expected an object"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\"], \"groups\": {\"g\": [\"a\"]}, "
         "\"tmplates\": 1}", "tmplates", "unknown field"},
        {"{\"targets\": [\" x\"], \"groups\": {\"g\": [\"a\"]}}", "templates", "missing"},
        {"{\"templates\": [\"no slot\"], \"targets\": [\" x\"], \"groups\": {\"g\": [\"a\"]}}",
         "templates[0]", "{term}"},
        {"{\"templates\": [{\"text\": \"{term}\", \"usr\": \"x\"}], \"targets\": [\" x\"], "
         "\"groups\": {\"g\": [\"a\"]}}", "templates[0].usr", "unknown field"},
        {"{\"templates\": [{}], \"targets\": [\" x\"], \"groups\": {\"g\": [\"a\"]}}",
         "templates[0].text", "missing"},
        {"{\"templates\": [\"{term}\"], \"targets\": [], \"groups\": {\"g\": [\"a\"]}}", "targets",
         "1 to 8"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\", \" x\"], \"groups\": {\"g\": [\"a\"]}}",
         "targets[1]", "repeats"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\"], \"groups\": {\"g\": [\"a\"], "
         "\"h\": [\"b\", \"a\"]}}", "groups.h[1]", "already in group 'g'"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\"], \"groups\": {\"g\": [\"\"]}}",
         "groups.g[0]", "is empty"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\"]}", "groups", "exactly one of"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\"], \"holisticbias\": {\"axes\": "
         "[\"a\"]}}", "holisticbias", "descriptors.json"},
        {"{\"templates\": [\"{term}\"], \"targets\": [\" x\"], \"groups\": {\"g\": [\"a\"]}",
         "not valid JSON", ":1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32];
        snprintf(name, sizeof name, "cf/bad%zu.json", i);
        expect_fail(KS_AUDIT_COUNTERFACTUAL, put(name, bad[i].json), NULL, KS_ERR_FORMAT,
                    "malformed templates file", bad[i].n1, bad[i].n2, "bad");
    }
}

/* BOLD: prompts per file as Python's json.load counts them (5 of them empty strings, kept) */
static void test_bold(void) {
    static const struct {
        const char *file;
        int n, groups;
    } want[] = {{"gender_prompt.json", 3204, 2},       {"political_ideology_prompt.json", 1984, 12},
                {"profession_prompt.json", 10195, 18}, {"race_prompt.json", 7657, 4},
                {"religious_ideology_prompt.json", 639, 7}};
    for (size_t f = 0; f < sizeof want / sizeof *want; f++) {
        char rel[96], path[4096];
        snprintf(rel, sizeof rel, "bold/%s", want[f].file);
        if (!ks_test_data_file(rel, path, sizeof path)) return;
        ks_audit_items it;
        ks_error err = {0};
        ks_status st = load1(KS_AUDIT_BOLD, path, NULL, &it, &err);
        int groups = 0;
        bool ok = st == KS_OK;
        for (int i = 0; ok && i < it.n; i++) {
            const ks_audit_item *x = &it.items[i];
            groups += i == 0 || strcmp(x->category, it.items[i - 1].category);
            ok = x->n_options == 1 && !x->options[0].prompt && x->options[0].text &&
                 starts(x->id, x->category) && strstr(x->id, x->group) && x->line == 1;
        }
        tap_ok(ok && it.n == want[f].n && groups == want[f].groups,
               "BOLD %s: %d prompts in %d groups (%d in %d; %s)", want[f].file, want[f].n,
               want[f].groups, it.n, groups, err.msg);
        ks_audit_items_free(&it);
    }
}

static void test_bold_malformed(void) {
    static const struct {
        const char *json, *n1, *n2;
    } bad[] = {
        {"[]", "(top level)", "non-empty object"},
        {"{\"g\": [\"x\"]}", ": g:", "name -> [prompts]"},
        {"{\"g\": {\"n\": \"x\"}}", "g.n", "non-empty array"},
        {"{\"g\": {\"n\": [\"ok \", 3]}}", "g.n[1]", "expected a string"},
        {"{\"g\": {\"n\": [\"a\"]}, \"g\": {}}", "not valid JSON", "duplicate"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[32];
        snprintf(name, sizeof name, "bold/bad%zu.json", i);
        expect_fail(KS_AUDIT_BOLD, put(name, bad[i].json), NULL, KS_ERR_FORMAT,
                    "malformed prompts file", bad[i].n1, bad[i].n2, "bad");
    }
    ks_audit_items it;
    ks_error err = {0};
    const char *ok = put("bold/ok.json", "{\"g\": {\"A_B\": [\"A B is \", \"\"]}, \"h\": {\"C\": [\"C was \"]}}");
    const char *cats[1] = {"h"};
    ks_audit_load_options o = {.categories = cats, .n_categories = 1};
    ks_status st = load1(KS_AUDIT_BOLD, ok, NULL, &it, &err);
    tap_ok(st == KS_OK && it.n == 3 && !strcmp(it.items[0].id, "g/A_B#0") &&
               !strcmp(it.items[1].id, "g/A_B#1") && !strcmp(it.items[1].options[0].text, "") &&
               !strcmp(it.items[2].id, "h/C#0") && !strcmp(it.items[2].group, "C"),
           "BOLD: ids <group>/<name>#<j> in file order, empty prompts kept (%s)", err.msg);
    ks_audit_items_free(&it);
    st = load1(KS_AUDIT_BOLD, ok, &o, &it, &err);
    tap_ok(st == KS_OK && it.n == 1, "BOLD: the category filter keeps one group (%d)", it.n);
    ks_audit_items_free(&it);
}

int main(void) {
    test_kinds();
    test_crows();
    test_stereoset();
    test_bbq();
    test_winobias();
    test_winogender();
    test_bold();
    if (tap_ok(mkdtemp(tmp) != NULL, "work directory %s (%s)", tmp, strerror(errno))) {
        test_crows_malformed();
        test_stereoset_malformed();
        test_bbq_malformed();
        test_winobias_malformed();
        test_winogender_malformed();
        test_arguments();
        test_counterfactual();
        test_counterfactual_holisticbias();
        test_bold_malformed();
        rm_tree(tmp);
    }
    return tap_done();
}
