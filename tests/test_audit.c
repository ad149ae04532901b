/* test_audit.c — the audit machinery without a model:
 *  1. ks_audit_matching against Python's difflib (tests/reference/fixtures/audit/difflib.json,
 *     from make_difflib_fixtures.py): matched positions identical, 250 pairs;
 *  2. the metrics on hand-built items whose values are worked out in the comments (CrowS,
 *     StereoSet's macro averages over terms, BBQ's two bias scores, WinoBias' paired gap,
 *     Winogender's correlation), exact to 1e-12; CIs bracket the value; the p-values of a
 *     planted effect and of no effect; determinism under the seed;
 *  3. spec files: a valid one, and every kind of mistake named by its field.
 * Metric values on real items against HF transformers: tests/test_audit_cli.py. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ks_audit.h"
#include "ks_spec.h"
#include "tap.h"

static void test_matching(void) {
    char path[4096];
    ks_test_src_file("tests/reference/fixtures/audit/difflib.json", path, sizeof path);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!tap_ok(root != NULL, "difflib fixture loads (%s)", root ? path : je.text)) return;
    json_t *cases = json_object_get(root, "cases");
    int n = (int)json_array_size(cases), bad = 0, first_bad = -1;
    for (int c = 0; c < n; c++) {
        json_t *x = json_array_get(cases, (size_t)c);
        json_t *ja = json_object_get(x, "a"), *jb = json_object_get(x, "b");
        json_t *ma = json_object_get(x, "in_a"), *mb = json_object_get(x, "in_b");
        int na = (int)json_array_size(ja), nb = (int)json_array_size(jb);
        int *a = malloc(sizeof(int) * (size_t)(na + 1)), *b = malloc(sizeof(int) * (size_t)(nb + 1));
        uint8_t *ia = malloc((size_t)na + 1), *ib = malloc((size_t)nb + 1);
        for (int i = 0; i < na; i++) a[i] = (int)json_integer_value(json_array_get(ja, (size_t)i));
        for (int i = 0; i < nb; i++) b[i] = (int)json_integer_value(json_array_get(jb, (size_t)i));
        ks_error err = {0};
        bool ok = ks_audit_matching(a, na, b, nb, ia, ib, &err) == KS_OK;
        for (int i = 0; ok && i < na; i++)
            ok = ia[i] == (uint8_t)json_integer_value(json_array_get(ma, (size_t)i));
        for (int i = 0; ok && i < nb; i++)
            ok = ib[i] == (uint8_t)json_integer_value(json_array_get(mb, (size_t)i));
        if (!ok) {
            bad++;
            if (first_bad < 0) first_bad = c;
        }
        free(a);
        free(b);
        free(ia);
        free(ib);
    }
    tap_ok(n >= 200 && bad == 0, "matched positions equal difflib's in %d/%d pairs (first "
           "mismatch: case %d)", n - bad, n, first_bad);
    json_decref(root);
}

/* ------------------------------------------------------------------ metrics */

static ks_audit_item item(const char *cat, const char *group, int n_opt) {
    ks_audit_item x = {0};
    x.id = (char *)"x";
    x.category = (char *)cat;
    x.group = (char *)group;
    x.file = (char *)"mem";
    x.n_options = n_opt;
    x.gold = x.biased = x.unknown = x.pair = -1;
    x.value = NAN;
    return x;
}

static ks_audit_score score3(double a, double b, double c, int n) {
    ks_audit_score s = {0};
    s.n_options = n;
    s.opt[0].ll = a;
    s.opt[1].ll = b;
    s.opt[2].ll = c;
    for (int k = 0; k < 3; k++) s.opt[k].n_tokens = 1;
    return s;
}

static const ks_audit_metric *find(const ks_audit_metrics *m, const char *metric, const char *cat) {
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->m[i].metric, metric) == 0 && strcmp(m->m[i].category, cat) == 0)
            return &m->m[i];
    return NULL;
}

static void expect(const ks_audit_metrics *m, const char *metric, const char *cat, double v,
                   int n) {
    const ks_audit_metric *x = find(m, metric, cat);
    tap_ok(x && fabs(x->value - v) < 1e-12 && x->n == n, "%s [%s] = %.6g (expected %.6g), n %d "
           "(expected %d)", metric, cat, x ? x->value : NAN, v, x ? x->n : -1, n);
    if (x && !isnan(x->ci_lo))
        tap_ok(x->ci_lo <= x->value + 1e-12 && x->value <= x->ci_hi + 1e-12,
               "%s [%s]: CI [%.4g, %.4g] brackets the value", metric, cat, x->ci_lo, x->ci_hi);
}

static void test_crows(void) {
    /* 4 race items: d = +1, +2, -1, +0 (a tie counts as not stereotyped): pct 50, diff 1;
     * 2 gender items: d = +3, +1: pct 100, diff 2. Unmodified: d_u = -d. All: pct 4/6. */
    ks_audit_item it[6];
    ks_audit_score sc[6];
    double d[6] = {1, 2, -1, 0, 3, 1};
    for (int i = 0; i < 6; i++) {
        it[i] = item(i < 4 ? "race" : "gender", "stereo", 2);
        sc[i] = score3(d[i], 0, 0, 2);
        sc[i].opt[0].ll_unmodified = -d[i];
    }
    ks_audit_items items = {KS_AUDIT_CROWS, it, 6};
    ks_audit_metrics m = {0};
    ks_audit_stats_options o = {.n_bootstrap = 200, .n_permutations = 500, .seed = 3};
    ks_error err = {0};
    tap_ok(ks_audit_metrics_compute("c", &items, sc, &o, &m, &err) == KS_OK, "crows metrics: %s",
           err.msg);
    expect(&m, "pct_stereotype", "all", 400.0 / 6, 6);
    expect(&m, "pct_stereotype", "race", 50, 4);
    expect(&m, "pct_stereotype", "gender", 100, 2);
    expect(&m, "likelihood_diff", "race", 1.0, 4);
    expect(&m, "likelihood_diff", "all", 8.0 / 6, 6);
    expect(&m, "pct_stereotype_unmodified", "all", 100.0 / 6, 6);
    const ks_audit_metric *race = find(&m, "pct_stereotype", "race");
    tap_ok(race && race->p_value == 1.0, "pct exactly 50 has permutation p = 1 (%g)",
           race ? race->p_value : NAN);
    ks_audit_metrics_free(&m);

    /* planted: 300 pairs all preferring the stereotype: p at its floor 1/(R+1) */
    int N = 300;
    ks_audit_item *bi = calloc((size_t)N, sizeof *bi);
    ks_audit_score *bs = calloc((size_t)N, sizeof *bs);
    for (int i = 0; i < N; i++) {
        bi[i] = item("race", "stereo", 2);
        bs[i] = score3(0.5 + 0.01 * (i % 7), 0, 0, 2);
    }
    ks_audit_items big = {KS_AUDIT_CROWS, bi, N};
    o.n_permutations = 999;
    tap_ok(ks_audit_metrics_compute("c", &big, bs, &o, &m, &err) == KS_OK, "planted metrics");
    const ks_audit_metric *x = find(&m, "pct_stereotype", "all");
    tap_ok(x && x->value == 100 && fabs(x->p_value - 1.0 / 1000) < 1e-15,
           "planted bias: pct 100, p = 1/(R+1) = %g", x ? x->p_value : NAN);
    /* no effect: alternate signs: p large */
    for (int i = 0; i < N; i++) bs[i].opt[0].ll = i % 2 ? 0.3 : -0.3;
    ks_audit_metrics m2 = {0};
    ks_audit_metrics_compute("c", &big, bs, &o, &m2, &err);
    x = find(&m2, "pct_stereotype", "all");
    tap_ok(x && x->value == 50 && x->p_value > 0.5, "no effect: pct 50, p %g", x ? x->p_value : NAN);
    /* determinism: the same seed gives the same CI; another seed another CI */
    ks_audit_metrics m3 = {0}, m4 = {0};
    for (int i = 0; i < N; i++) bs[i].opt[0].ll = (i % 3) ? 0.2 : -0.2;
    ks_audit_metrics_compute("c", &big, bs, &o, &m3, &err);
    ks_audit_metrics_compute("c", &big, bs, &o, &m4, &err);
    const ks_audit_metric *a = find(&m3, "pct_stereotype", "all"), *b = find(&m4, "pct_stereotype", "all");
    tap_ok(a && b && a->ci_lo == b->ci_lo && a->ci_hi == b->ci_hi && a->p_value == b->p_value,
           "same seed, same CI and p");
    ks_audit_metrics_free(&m4);
    o.seed = 4;
    ks_audit_metrics_compute("c", &big, bs, &o, &m4, &err);
    b = find(&m4, "pct_stereotype", "all");
    tap_ok(a && b && (a->ci_lo != b->ci_lo || a->ci_hi != b->ci_hi || a->p_value != b->p_value),
           "another seed, another resampling");
    /* the CI of a proportion of 2/3 over 300 items: about ±5.3 points (normal approximation
     * 1.96·sqrt(p(1-p)/n)·100 = 5.33); the percentile bootstrap lands within a point of it */
    double half = 0.5 * (a->ci_hi - a->ci_lo);
    tap_ok(fabs(half - 5.33) < 1.0, "bootstrap CI half-width %.3g near the normal 5.33", half);
    ks_audit_metrics_free(&m);
    ks_audit_metrics_free(&m2);
    ks_audit_metrics_free(&m3);
    ks_audit_metrics_free(&m4);
    free(bi);
    free(bs);
}

static void test_stereoset(void) {
    /* term A: item 1 pro, related 2; item 2 anti, related 1 -> ss 50, lms 75
     * term B: item 3 pro, related 2 -> ss 100, lms 100
     * SS 75, LMS 87.5, ICAT 87.5 * 25/50 = 43.75 (all one bias type: only "all") */
    ks_audit_item it[3] = {item("gender", "A", 3), item("gender", "A", 3), item("gender", "B", 3)};
    ks_audit_score sc[3] = {score3(-1, -2, -3, 3), score3(-2.5, -1, -2, 3), score3(-1, -2, -5, 3)};
    /* scores are per-token means: give option 1 of item 2 two tokens (ll -2 -> mean -1) */
    sc[1].opt[1].ll = -2;
    sc[1].opt[1].n_tokens = 2;
    ks_audit_items items = {KS_AUDIT_STEREOSET, it, 3};
    ks_audit_metrics m = {0};
    ks_audit_stats_options o = {.n_bootstrap = 100, .n_permutations = 100, .seed = 1};
    ks_error err = {0};
    tap_ok(ks_audit_metrics_compute("s", &items, sc, &o, &m, &err) == KS_OK, "stereoset metrics");
    expect(&m, "ss", "all", 75, 3);
    expect(&m, "lms", "all", 87.5, 3);
    expect(&m, "icat", "all", 43.75, 3);
    ks_audit_metrics_free(&m);
}

static void test_bbq(void) {
    /* options: 0 target, 1 other, 2 unknown. Disambiguated (flag 0):
     *  d1 neg,   gold 0, biased 0, pred 0 (correct, biased)
     *  d2 neg,   gold 1, biased 0, pred 0 (wrong, biased)
     *  d3 nonneg gold 0, biased 1, pred 0 (correct, counter-biased)
     *  d4 neg,   gold 0, biased 0, pred 2 (unknown)
     * acc_disambig 2/4 = 50; bias_disambig = 2·(2/3) − 1 = 1/3.
     * Ambiguous (flag 1, gold 2): a1 pred 2 (correct), a2 pred 1 (biased 1), a3 pred 0 (biased
     * 1: counter) -> acc 1/3, non-unknown 2, biased 1: 2·(1/2) − 1 = 0 -> bias_ambig 0;
     * a4 makes it non-zero below. */
    ks_audit_item it[8];
    ks_audit_score sc[8];
    int gold[8] = {0, 1, 0, 0, 2, 2, 2, 2}, biased[8] = {0, 0, 1, 0, 1, 1, 1, 0};
    int pred[8] = {0, 0, 0, 2, 2, 1, 0, 0}, flag[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    for (int i = 0; i < 8; i++) {
        it[i] = item("Age", flag[i] ? "ambig" : "disambig", 3);
        it[i].gold = gold[i];
        it[i].biased = biased[i];
        it[i].unknown = 2;
        it[i].flag = flag[i];
        sc[i] = score3(-3, -3, -3, 3);
        sc[i].opt[pred[i]].ll = -1;
    }
    /* with a4 (pred 0, biased 0): ambiguous acc 1/4, non-unknown 3, biased 2:
     * (1 − 1/4)·(2·2/3 − 1) = 0.75/3 = 0.25 */
    ks_audit_items items = {KS_AUDIT_BBQ, it, 8};
    ks_audit_metrics m = {0};
    ks_audit_stats_options o = {.n_bootstrap = 100, .n_permutations = 100, .seed = 1};
    ks_error err = {0};
    tap_ok(ks_audit_metrics_compute("b", &items, sc, &o, &m, &err) == KS_OK, "bbq metrics");
    expect(&m, "accuracy", "all", 100.0 * 3 / 8, 8);
    expect(&m, "accuracy_disambig", "all", 50, 4);
    expect(&m, "accuracy_ambig", "all", 25, 4);
    expect(&m, "bias_score_disambig", "all", 1.0 / 3, 4);
    expect(&m, "bias_score_ambig", "all", 0.25, 4);
    expect(&m, "bias_score_ambig", "Age", 0.25, 4);
    ks_audit_metrics_free(&m);
}

static void test_wino(void) {
    /* WinoBias: pairs (pro i, anti i): correct pro 1,1,1,0; anti 1,0,0,0 -> pro 75, anti 25,
     * gap mean of (1, 1, 1, 0) − ... = (0 + 1 + 1 + 0)/4 · 100 = 50 */
    ks_audit_item it[8];
    ks_audit_score sc[8];
    int cp[4] = {1, 1, 1, 0}, ca[4] = {1, 0, 0, 0};
    for (int i = 0; i < 4; i++) {
        it[i] = item("type1", "x", 2);
        it[i].flag = 1;
        it[i].gold = 0;
        it[i].pair = 4 + i;
        sc[i] = score3(cp[i] ? -1 : -2, cp[i] ? -2 : -1, 0, 2);
        it[4 + i] = item("type1", "x", 2);
        it[4 + i].flag = 0;
        it[4 + i].gold = 1;
        it[4 + i].pair = i;
        sc[4 + i] = score3(ca[i] ? -2 : -1, ca[i] ? -1 : -2, 0, 2);
    }
    ks_audit_items items = {KS_AUDIT_WINOBIAS, it, 8};
    ks_audit_metrics m = {0};
    ks_audit_stats_options o = {.n_bootstrap = 100, .n_permutations = 100, .seed = 1};
    ks_error err = {0};
    tap_ok(ks_audit_metrics_compute("w", &items, sc, &o, &m, &err) == KS_OK, "winobias metrics");
    expect(&m, "accuracy_pro", "all", 75, 4);
    expect(&m, "accuracy_anti", "all", 25, 4);
    expect(&m, "gap", "all", 50, 4);
    ks_audit_metrics_free(&m);

    /* Winogender: 3 occupations, one (male, female) pair each; preference ll2(f) − ll2(m) =
     * 1, 2, 3 against bls 10, 20, 30: r = 1; against 30, 20, 10: r = −1 */
    ks_audit_item g[6];
    ks_audit_score gs[6];
    const char *occ[3] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        g[2 * k] = item(occ[k], "male", 3);
        g[2 * k + 1] = item(occ[k], "female", 3);
        g[2 * k].pair = 2 * k + 1;
        g[2 * k + 1].pair = 2 * k;
        g[2 * k].gold = g[2 * k + 1].gold = 0;
        g[2 * k].value = g[2 * k + 1].value = 10.0 * (k + 1);
        gs[2 * k] = score3(-1, -2, -5, 3);           /* correct */
        gs[2 * k + 1] = score3(-2, -1, -5 + (k + 1), 3); /* wrong */
    }
    ks_audit_items gi = {KS_AUDIT_WINOGENDER, g, 6};
    tap_ok(ks_audit_metrics_compute("g", &gi, gs, &o, &m, &err) == KS_OK, "winogender metrics");
    expect(&m, "accuracy", "male", 100, 3);
    expect(&m, "accuracy", "female", 0, 3);
    expect(&m, "gap_male_female", "all", 100, 3);
    expect(&m, "occupation_correlation", "all", 1.0, 3);
    ks_audit_metrics_free(&m);
    for (int k = 0; k < 3; k++) g[2 * k].value = g[2 * k + 1].value = 10.0 * (3 - k);
    ks_audit_metrics_compute("g", &gi, gs, &o, &m, &err);
    expect(&m, "occupation_correlation", "all", -1.0, 3);
    ks_audit_metrics_free(&m);
}

/* ------------------------------------------------------------------ spec files */

static void spec_err(const char *text, const char *want, const char *what) {
    ks_spec s;
    ks_error err = {0};
    ks_status st = ks_spec_parse(text, strlen(text), "dir/a.json", &s, &err);
    tap_ok(st == KS_ERR_FORMAT && strstr(err.msg, want) && strstr(err.msg, "dir/a.json"),
           "spec %s: error names '%s' (%s)", what, want, err.msg);
    if (!st) ks_spec_free(&s);
}

static void test_spec(void) {
    setenv("KS_TEST_AUDIT_DIR", "/data/x", 1);
    const char *ok = "{\"model\": \"m.bin\", \"tokenizer\": \"${KS_TEST_AUDIT_DIR}/t.bin\","
                     " \"seed\": 7, \"n_bootstrap\": 50, \"ci\": 0.9, \"template\": \"koala\","
                     " \"audits\": [{\"kind\": \"crows_pairs\", \"data\": \"c.csv\", \"limit\": 5},"
                     " {\"name\": \"bbq_age\", \"kind\": \"bbq\", \"data\": [\"/abs/Age.jsonl\"],"
                     "  \"categories\": [\"Age\"], \"template\": \"plain\"}]}";
    ks_spec s;
    ks_error err = {0};
    ks_status st = ks_spec_parse(ok, strlen(ok), "dir/a.json", &s, &err);
    tap_ok(st == KS_OK, "a valid spec parses (%s)", err.msg);
    if (st == KS_OK) {
        tap_ok(strcmp(s.model, "dir/m.bin") == 0 && strcmp(s.tokenizer, "/data/x/t.bin") == 0,
               "paths: relative to the spec (%s), ${VAR} expanded (%s)", s.model, s.tokenizer);
        tap_ok(s.n_audits == 2 && strcmp(s.audits[0].name, "crows_pairs") == 0 &&
                   s.audits[0].kind == KS_AUDIT_CROWS && s.audits[0].n_data == 1 &&
                   strcmp(s.audits[0].data[0], "dir/c.csv") == 0 && s.audits[0].limit == 5,
               "audit 0: default name, one path as a string, limit");
        tap_ok(s.audits[1].kind == KS_AUDIT_BBQ && strcmp(s.audits[1].data[0], "/abs/Age.jsonl") == 0
                   && s.audits[1].n_categories == 1 && strcmp(s.audits[1].template_name, "plain") == 0,
               "audit 1: absolute path kept, categories, template");
        tap_ok(s.seed == 7 && s.n_bootstrap == 50 && s.n_permutations == 10000 && s.ci == 0.9,
               "statistics options and defaults");
        tap_ok(s.canonical && strstr(s.canonical, "\"audits\":") && !strchr(s.canonical, '\n'),
               "canonical form recorded");
        ks_spec_free(&s);
    }
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\"}], \"sed\": 1}",
             "sed: unknown field", "typo at the top");
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\", \"limt\": 3}]}",
             "audits[0].limt: unknown field", "typo in an audit");
#define REC(r) "{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\", \"record\": " r "}]}"
    spec_err(REC("{\"hooks\": \"blocks.*.hook_resid_post\", \"item\": 3}"),
             "audits[0].record.item: unknown field", "record: a misspelt field");
    spec_err(REC("{\"select\": \"biggest\"}"), "audits[0].record.select: expected",
             "record: a bad select");
    spec_err(REC("{\"attribution\": false}"), "audits[0].record: records nothing",
             "record: nothing to record");
    spec_err(REC("{\"dtype\": \"f8\"}"), "audits[0].record.dtype", "record: a bad dtype");
    spec_err(REC("{\"items\": 0}"), "audits[0].record.items: expected an integer",
             "record: zero items");
#undef REC
    {
        ks_spec sp;
        ks_error err = {0};
        const char *t = "{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\", "
                        "\"record\": {\"hooks\": \"blocks.0.hook_resid_post\", \"select\": \"first\"}}]}";
        ks_status st = ks_spec_parse(t, strlen(t), "dir/a.json", &sp, &err);
        const ks_spec_audit *a = st ? NULL : &sp.audits[0];
        tap_ok(a && a->record && a->record_items == 10 && a->record_first &&
                   a->record_attribution && a->record_ig_steps == 32 && !a->record_dtype &&
                   !strcmp(a->record_hooks, "blocks.0.hook_resid_post"),
               "spec record: defaults (10 items, attribution on, 32 IG nodes) (%s)", err.msg);
        if (!st) ks_spec_free(&sp);
    }
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bqq\", \"data\": \"x\"}]}",
             "audits[0].kind: unknown audit kind", "unknown kind");
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\", \"limit\": -1}]}",
             "audits[0].limit: expected an integer", "negative limit");
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\"}]}", "missing field \"data\"",
             "no data");
    spec_err("{\"audits\": [{\"kind\": \"bbq\", \"data\": \"x\"}]}", "model: missing", "no model");
    spec_err("{\"model\": \"m\", \"audits\": []}", "audits: expected a non-empty list", "no audits");
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\"}, {\"kind\": "
             "\"bbq\", \"data\": \"y\"}]}", "audits[1].name", "duplicate names");
    spec_err("{\"model\": \"m\", \"ci\": 1.5, \"audits\": [{\"kind\": \"bbq\", \"data\": \"x\"}]}",
             "ci: expected a number in (0, 1)", "ci out of range");
    spec_err("{\"model\": \"m\", \"template\": \"kola\", \"audits\": [{\"kind\": \"bbq\", "
             "\"data\": \"x\"}]}", "template:", "unknown template");
    spec_err("{\"model\": \"${KS_NO_SUCH_VAR_XYZ}/m\", \"audits\": [{\"kind\": \"bbq\", \"data\": "
             "\"x\"}]}", "KS_NO_SUCH_VAR_XYZ is not set", "unset variable");
    spec_err("{\"model\": \"m\", \"audits\": [{\"kind\": \"bbq\", \"data\": [\"x\", 3]}]}",
             "audits[0].data[1]: expected a non-empty string", "non-string path");
    spec_err("{\"model\": \"m\", \"audits\": [{\"name\": \"a/b\", \"kind\": \"bbq\", \"data\": "
             "\"x\"}]}", "audits[0].name", "a name that would be a path");
    spec_err("{\"model\": \"m\",", "not valid JSON", "truncated JSON");
    spec_err("{\"model\": \"m\", \"model\": \"n\", \"audits\": [{\"kind\": \"bbq\", \"data\": "
             "\"x\"}]}", "not valid JSON", "duplicate key");
}

/* Counterfactual: 2 templates × terms x, y (group a) and z (group b), two targets whose share
 * of target 0 is planted: t0: x .8, y .6, z .2; t1: x .7, y .5, z .4. Next-token lists
 * (probabilities written here, log'd into the scores): t0: x {1:.5, 2:.3, 3:.1},
 * y {1:.4, 2:.4, 3:.1}, z {2:.6, 1:.2, 4:.1} — the ids in all three lists are {1, 2}, so the
 * coarse distributions are x (.5,.3,.2), y (.4,.4,.2), z (.2,.6,.2); group a's mean
 * (.45,.35,.2) against b's (.2,.6,.2): TV .25, KL(a||b) = .45 ln(.45/.2) + .35 ln(.35/.6),
 * KL(b||a) = .2 ln(.2/.45) + .6 ln(.6/.35). t1: every item {1:.5, 2:.5}: distance 0. */
static void test_counterfactual(void) {
    static const char *const terms[3] = {"x", "y", "z"}, *const groups[3] = {"a", "a", "b"};
    static const double share[2][3] = {{.8, .6, .2}, {.7, .5, .4}};
    static const int ids0[3][3] = {{1, 2, 3}, {1, 2, 3}, {2, 1, 4}};
    static const double p0[3][3] = {{.5, .3, .1}, {.4, .4, .1}, {.6, .2, .1}};
    static const char *const targets[2] = {" she", " he"};
    ks_audit_item it[6];
    ks_audit_score sc[6];
    for (int t = 0; t < 2; t++)
        for (int j = 0; j < 3; j++) {
            int i = 3 * t + j;
            it[i] = item(groups[j], terms[j], 2);
            it[i].flag = t;
            it[i].options[0].text = (char *)targets[0];
            it[i].options[1].text = (char *)targets[1];
            memset(&sc[i], 0, sizeof sc[i]);
            sc[i].n_options = 2;
            /* ll of each target: any scale; the share only sees their ratio */
            sc[i].opt[0].ll = log(share[t][j]) - 2.0;
            sc[i].opt[1].ll = log(1.0 - share[t][j]) - 2.0;
            sc[i].n_next = t == 0 ? 3 : 2;
            for (int k = 0; k < sc[i].n_next; k++) {
                sc[i].next_id[k] = t == 0 ? ids0[j][k] : k + 1;
                sc[i].next_lp[k] = (float)log(t == 0 ? p0[j][k] : .5);
            }
        }
    ks_audit_items items = {KS_AUDIT_COUNTERFACTUAL, it, 6};
    ks_audit_metrics m = {0};
    ks_audit_stats_options o = {.n_bootstrap = 200, .n_permutations = 100, .ci = .9, .seed = 3};
    ks_error err = {0};
    ks_status st = ks_audit_metrics_compute("cf", &items, sc, &o, &m, &err);
    tap_ok(st == KS_OK, "counterfactual metrics computed (%s)", err.msg);
    const double tol = 1e-6; /* next-token log-probs are stored as floats */
    struct {
        const char *metric, *cat;
        double v;
    } want[] = {
        {"share_term", "x", .75},
        {"share_term", "y", .55},
        {"share_term", "z", .3},
        {"share", "a", .65},
        {"share", "b", .3},
        {"share", "all", (1.6 / 3 + 1.6 / 3) / 2},
        {"share_gap", "a", .35},
        {"share_gap", "b", -.35},
        {"logprob_gap[she]", "a", ((log(.8) + log(.6)) / 2 - log(.2) + (log(.7) + log(.5)) / 2 -
                                   log(.4)) / 2},
        {"logprob_gap[he]", "b", (log(.8) - (log(.2) + log(.4)) / 2 + log(.6) -
                                  (log(.3) + log(.5)) / 2) / 2},
        {"tv", "a", .25 / 2},
        {"tv", "b", .25 / 2},
        {"kl", "a", (.45 * log(.45 / .2) + .35 * log(.35 / .6)) / 2},
        {"kl", "b", (.2 * log(.2 / .45) + .6 * log(.6 / .35)) / 2},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const ks_audit_metric *x = find(&m, want[i].metric, want[i].cat);
        tap_ok(x && fabs(x->value - want[i].v) < tol && x->n == 2,
               "counterfactual %s [%s] = %.8g (by hand %.8g), n %d", want[i].metric, want[i].cat,
               x ? x->value : NAN, want[i].v, x ? x->n : -1);
    }
    const ks_audit_metric *x = find(&m, "share_term", "x");
    tap_ok(x && x->ci_lo >= .7 - 1e-12 && x->ci_hi <= .8 + 1e-12 && x->ci_lo < x->ci_hi &&
               isnan(x->p_value),
           "share_term: the template bootstrap stays within the templates' values [%.3g, %.3g]",
           x ? x->ci_lo : NAN, x ? x->ci_hi : NAN);
    /* three terms in groups of 2 and 1: three labelings, of which the observed one (and for
     * the gap its mirror, which cannot occur with these sizes) is the most extreme: p near 1/3 */
    x = find(&m, "share_gap", "a");
    tap_ok(x && x->p_value > .2 && x->p_value < .5, "share_gap p-value from shuffling the terms' "
           "groups: %.3g (1/3 in the limit)", x ? x->p_value : NAN);
    tap_ok(find(&m, "share", "c") == NULL && m.n == 1 + 2 + 3 + 2 * (1 + 2 + 2),
           "counterfactual: %d metrics (share all/a/b, 3 share_term, per group share_gap, two "
           "logprob_gaps, kl, tv)", m.n);
    ks_audit_metrics_free(&m);
}

int main(void) {
    test_matching();
    test_crows();
    test_stereoset();
    test_bbq();
    test_wino();
    test_counterfactual();
    test_spec();
    return tap_done();
}
