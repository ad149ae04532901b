/* test_diff.c — probes/ks_diff.h and the findings of experiments/ks_diff_results.h.
 *
 *  1. identical models (the head_dim fixture opened twice; stories260K opened twice, SKIP without
 *     the shared data) give exactly CKA 1, cosine 1, JS 0, TV 0, lens and final KL 0, top-1
 *     agreement 1 and ΔW 0 — compared with ==, no tolerance — also with prefill in chunks of 4
 *     tokens (hooks handed rows at pos0 > 0);
 *  2. the oracle of tests/reference/make_diff_fixtures.py (HF transformers + NumPy, f64 from the
 *     f32 tensors HF computes): head_dim against head_dim_l1 (its layer 1 perturbed). Tolerances,
 *     absolute: CKA and mean cosine 1e-6 (we agree to ~4e-9: f32 forwards on both sides), JS and
 *     TV 1e-6 (values ~1e-3; we agree to 3e-8), lens and final KL 1e-6 with 1e-4 relative (KL
 *     ~4e-3), top-1 agreement exact (no near-ties in these 35 tokens), weight norms 1e-9 relative;
 *     and the findings: the largest weight change is layer 1, layer 0's resid_post is bit-equal
 *     (CKA exactly 1) and the first changed layer is 1;
 *  3. models of different architectures are refused naming the config field;
 *  4. Spearman's ρ on hand-computed cases (with ties). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ks_diff.h"
#include "ks_diff_results.h"
#include "tap.h"

#define MAXP 8

typedef struct {
    int n;
    int ids[64];
} prompt;

static int load_prompts(const char *path, prompt *p) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int k = 0;
    while (k < MAXP && fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, NULL), *t = json_object_get(j, "tokens");
        p[k].n = 0;
        for (size_t i = 0; i < json_array_size(t) && i < 64; i++)
            p[k].ids[p[k].n++] = (int)json_integer_value(json_array_get(t, i));
        json_decref(j);
        k++;
    }
    fclose(f);
    return k;
}

/* every prompt through both models; summary into s */
static ks_status run_all(const ks_model *a, const ks_model *b, const prompt *p, int np, int max_batch,
                         ks_diff_summary *s, bool *per_prompt_exact, ks_error *e) {
    ks_diff *d = NULL;
    ks_session *sa = NULL, *sb = NULL;
    ks_session_options so = {.max_batch = max_batch, .n_threads = 2, .max_seq_len = 64};
    ks_status st = ks_diff_create(a, b, NULL, &d, e);
    if (!st) st = ks_session_create(a, &so, &sa, e);
    if (!st) st = ks_session_create(b, &so, &sb, e);
    if (per_prompt_exact) *per_prompt_exact = true;
    for (int i = 0; i < np && !st; i++) {
        ks_diff_prompt pr;
        st = ks_diff_run(d, sa, sb, p[i].ids, p[i].n, &pr, e);
        if (st || !per_prompt_exact) continue;
        for (int k = 0; k < 3 * pr.n_layers * pr.n; k++) *per_prompt_exact &= pr.cos[k] == 1.0f;
        for (int k = 0; k < pr.n_layers * pr.n; k++)
            *per_prompt_exact &= pr.lens_kl[k] == 0.0f && pr.lens_top1[k] == 1;
        for (int k = 0; k < pr.n; k++) *per_prompt_exact &= pr.final_kl[k] == 0.0f && pr.final_top1[k] == 1;
        for (int k = 0; k < pr.n_layers * pr.n_heads; k++)
            *per_prompt_exact &= pr.head_js[k] == 0.0f && pr.head_tv[k] == 0.0f;
    }
    if (!st) st = ks_diff_summarize(d, s, e);
    ks_session_free(sa);
    ks_session_free(sb);
    ks_diff_free(d);
    return st;
}

static void check_identical(const char *what, const ks_model *a, const ks_model *b, const prompt *p,
                            int np) {
    for (int mb = 0; mb < 2; mb++) {
        int batch = mb ? 4 : 512;
        ks_diff_summary s;
        ks_error e = {0};
        bool exact = false;
        if (!tap_ok(run_all(a, b, p, np, batch, &s, &exact, &e) == KS_OK, "%s: diff runs (prefill chunk %d): %s",
                    what, batch ? batch : 512, e.msg))
            continue;
        const int L = s.n_layers, H = s.n_heads;
        bool cka = true, cs = true, js = true, kl = true;
        for (int k = 0; k < 3 * L; k++) cka &= s.cka[k] == 1.0, cs &= s.cos[k] == 1.0;
        for (int k = 0; k < L * H; k++) js &= s.head_js[k] == 0.0 && s.head_tv[k] == 0.0;
        for (int l = 0; l < L; l++) kl &= s.lens_kl[l] == 0.0 && s.lens_top1[l] == 1.0;
        tap_ok(cka, "%s (chunk %d): CKA exactly 1 for every stream and layer", what, batch);
        tap_ok(cs, "%s (chunk %d): mean cosine exactly 1", what, batch);
        tap_ok(js, "%s (chunk %d): JS and TV exactly 0 for every head", what, batch);
        tap_ok(kl, "%s (chunk %d): lens KL exactly 0, top-1 agreement 1", what, batch);
        tap_ok(s.final_kl == 0.0 && s.final_top1 == 1.0, "%s (chunk %d): final KL exactly 0 (%g)", what,
               batch, s.final_kl);
        tap_ok(exact, "%s (chunk %d): every per-token and per-prompt value exact too", what, batch);
        ks_diff_summary_clear(&s);
    }
    ks_diff_tensor *t = NULL;
    int n = 0;
    ks_error e = {0};
    ks_status ws = ks_diff_weights(a, b, &t, &n, &e);
    if (tap_ok(ws == KS_OK && n > 0, "%s: weight deltas (%d tensors)", what, n)) {
        bool zero = true;
        for (int i = 0; i < n; i++) zero &= t[i].delta_sq == 0.0 && t[i].max_abs == 0.0 && t[i].base_sq > 0;
        tap_ok(zero, "%s: every ΔW exactly 0", what);
    }
    free(t);
}

static double jnum(json_t *o, const char *k, int i, int j) {
    json_t *v = json_object_get(o, k);
    if (i >= 0) v = json_array_get(v, (size_t)i);
    if (j >= 0) v = json_array_get(v, (size_t)j);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void check_oracle(const char *root) {
    char p_base[1024], p_tuned[1024], p_exp[1024], p_pr[1024];
    snprintf(p_base, sizeof p_base, "%s/tests/reference/fixtures/hf/head_dim", root);
    snprintf(p_tuned, sizeof p_tuned, "%s/tests/reference/fixtures/diff/head_dim_l1", root);
    snprintf(p_exp, sizeof p_exp, "%s/tests/reference/fixtures/diff/expected.json", root);
    snprintf(p_pr, sizeof p_pr, "%s/tests/reference/fixtures/diff/prompts.jsonl", root);
    ks_model *a = NULL, *b = NULL, *a2 = NULL;
    ks_error e = {0};
    prompt p[MAXP];
    int np = load_prompts(p_pr, p);
    json_t *x = json_load_file(p_exp, 0, NULL);
    if (!tap_ok(np == 3 && x && ks_model_open(p_base, NULL, &a, &e) == KS_OK &&
                    ks_model_open(p_tuned, NULL, &b, &e) == KS_OK && ks_model_open(p_base, NULL, &a2, &e) == KS_OK,
                "fixtures load (%d prompts): %s", np, e.msg))
        goto out;
    check_identical("head_dim vs itself", a, a2, p, np);

    ks_diff_summary s;
    if (!tap_ok(run_all(a, b, p, np, 0, &s, NULL, &e) == KS_OK, "head_dim vs head_dim_l1: %s", e.msg)) goto out;
    const int L = s.n_layers, H = s.n_heads;
    tap_ok(s.n_tokens == (int64_t)jnum(x, "n_tokens", -1, -1), "token count %lld", (long long)s.n_tokens);
    double w_cka = 0, w_cos = 0, w_js = 0, w_tv = 0, w_kl = 0;
    bool top1 = true;
    for (int st = 0; st < 3; st++)
        for (int l = 0; l < L; l++) {
            w_cka = fmax(w_cka, fabs(s.cka[st * L + l] - jnum(x, "cka", st, l)));
            w_cos = fmax(w_cos, fabs(s.cos[st * L + l] - jnum(x, "cos", st, l)));
        }
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++) {
            w_js = fmax(w_js, fabs(s.head_js[l * H + h] - jnum(x, "head_js", l, h)));
            w_tv = fmax(w_tv, fabs(s.head_tv[l * H + h] - jnum(x, "head_tv", l, h)));
        }
    for (int l = 0; l < L; l++) {
        double ek = jnum(x, "lens_kl", l, -1);
        w_kl = fmax(w_kl, fabs(s.lens_kl[l] - ek) / (1e-6 + 1e-4 * ek) * 1e-6);
        top1 &= s.lens_top1[l] == jnum(x, "lens_top1", l, -1);
    }
    double ef = jnum(x, "final_kl", -1, -1);
    tap_ok(w_cka <= 1e-6, "CKA of resid_post, attn_out, mlp_out per layer against the oracle: max |Δ| %.2g <= 1e-6", w_cka);
    tap_ok(w_cos <= 1e-6, "mean cosine against the oracle: max |Δ| %.2g <= 1e-6", w_cos);
    tap_ok(w_js <= 1e-6, "per-head JS (bits) against the oracle: max |Δ| %.2g <= 1e-6", w_js);
    tap_ok(w_tv <= 1e-6, "per-head TV against the oracle: max |Δ| %.2g <= 1e-6", w_tv);
    tap_ok(w_kl <= 1e-6, "lens KL per layer against the oracle within 1e-6 + 1e-4 relative (%.2g)", w_kl);
    tap_ok(top1, "lens top-1 agreement per layer equals the oracle's");
    tap_ok(fabs(s.final_kl - ef) <= 1e-6 + 1e-4 * ef && s.final_top1 == jnum(x, "final_top1", -1, -1),
           "final KL %.6g (oracle %.6g) and top-1 %.4f", s.final_kl, ef, s.final_top1);
    tap_ok(s.cka[0] == 1.0 && s.cos[0] == 1.0 && s.lens_kl[0] == 0.0,
           "layer 0 (unperturbed) resid_post: CKA and cosine exactly 1, lens KL 0");
    ks_diff_tensor *t = NULL;
    int n = 0;
    if (tap_ok(ks_diff_weights(a, b, &t, &n, &e) == KS_OK, "weight deltas: %s", e.msg)) {
        json_t *ws = json_object_get(x, "weights");
        double worst = 0;
        int found = 0;
        for (int i = 0; i < n; i++) {
            json_t *o = json_object_get(ws, t[i].name);
            if (!o) continue;
            found++;
            double ed = json_number_value(json_object_get(o, "delta")), eb = json_number_value(json_object_get(o, "base_norm"));
            worst = fmax(worst, fabs(sqrt(t[i].delta_sq) - ed) / fmax(eb, 1e-30));
            worst = fmax(worst, fabs(sqrt(t[i].base_sq) - eb) / fmax(eb, 1e-30));
        }
        tap_ok(found == n && (size_t)n == json_object_size(ws),
               "every parameter tensor named as HF names it (%d of %zu)", found, json_object_size(ws));
        tap_ok(worst <= 1e-9, "‖ΔW‖_F and ‖W_base‖_F per tensor against NumPy: %.2g <= 1e-9 relative", worst);
        ks_diff_findings f;
        if (tap_ok(ks_diff_findings_compute(&s, t, n, &f, &e) == KS_OK, "findings")) {
            tap_ok(f.weight_layer == 1, "the perturbed layer 1 has the largest weight change (found %d)", f.weight_layer);
            tap_ok(f.layer_rel[0] == 0.0 && f.layer_delta[0] == 0.0, "layer 0's weights: ΔW exactly 0");
            tap_ok(f.first_changed == 1 && f.activation_layer == 1,
                   "activations first change at layer 1 (first %d, largest rise %d)", f.first_changed,
                   f.activation_layer);
            tap_ok(f.head_layer == 1, "the most changed head is in layer 1 (%d.%d)", f.head_layer, f.head);
            char *sen = ks_diff_findings_sentence(&f, &s, t);
            tap_ok(sen && strstr(sen, "changed most in layer 1"), "the sentence names layer 1: %s", sen ? sen : "");
            free(sen);
            ks_diff_findings_clear(&f);
        }
    }
    free(t);
    ks_diff_summary_clear(&s);
out:
    json_decref(x);
    ks_model_close(a);
    ks_model_close(a2);
    ks_model_close(b);
}

static void check_mismatch(const char *root) {
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/tests/reference/fixtures/hf/head_dim", root);
    snprintf(p2, sizeof p2, "%s/tests/reference/fixtures/hf/mha_tied", root);
    ks_model *a = NULL, *b = NULL;
    ks_error e = {0};
    ks_diff *d = NULL;
    if (ks_model_open(p1, NULL, &a, &e) || ks_model_open(p2, NULL, &b, &e)) {
        tap_ok(0, "open fixtures: %s", e.msg);
    } else {
        ks_status st = ks_diff_create(a, b, NULL, &d, &e);
        tap_ok(st == KS_ERR_ARG && d == NULL && strstr(e.msg, "config field hidden_dim") &&
                   strstr(e.msg, "96") && strstr(e.msg, "80"),
               "different architectures refused naming the field: %s", e.msg);
        ks_diff_tensor *t = NULL;
        int n = 0;
        tap_ok(ks_diff_weights(a, b, &t, &n, &e) == KS_ERR_ARG && !t, "weight deltas refused too");
    }
    ks_model_close(a);
    ks_model_close(b);
}

static void check_spearman(void) {
    const double x[4] = {1, 2, 3, 4}, y[4] = {1, 3, 2, 4};
    /* ranks differ by 1 at two places: 1 - 6·2 / (4·15) = 0.8 */
    tap_ok(fabs(ks_diff_spearman(x, y, 4) - 0.8) < 1e-15, "Spearman 0.8 on a hand-computed case");
    const double a[5] = {0, 0, 0, 0.5, 0}, b[5] = {0, 0, 0, 0.3, 0.3};
    /* mean ranks by hand: a's four zeros share 2.5, 0.5 is 5; b's three zeros share 2, the two
     * 0.3 share 4.5; ρ is the Pearson correlation of those ranks */
    double ra[5] = {2.5, 2.5, 2.5, 5, 2.5}, rb[5] = {2, 2, 2, 4.5, 4.5}, ma = 3, mb = 3, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < 5; i++)
        sab += (ra[i] - ma) * (rb[i] - mb), saa += (ra[i] - ma) * (ra[i] - ma), sbb += (rb[i] - mb) * (rb[i] - mb);
    tap_ok(fabs(ks_diff_spearman(a, b, 5) - sab / sqrt(saa * sbb)) < 1e-15,
           "Spearman with ties (mean ranks): %.6f", ks_diff_spearman(a, b, 5));
    const double c[3] = {1, 1, 1};
    tap_ok(isnan(ks_diff_spearman(c, x, 3)), "Spearman of a constant side is NaN");
}

int main(void) {
    const char *root = getenv("KS_SOURCE_ROOT");
    if (!root) root = ".";
    check_spearman();
    check_mismatch(root);
    check_oracle(root);
    char b1[4096], b2[4096];
    const char *bin = ks_test_data_file("stories260K/stories260K.bin", b1, sizeof b1);
    const char *tokf = bin ? ks_test_data_file("stories260K/tok512.bin", b2, sizeof b2) : NULL;
    if (bin && tokf) {
        ks_model_options o = {.tokenizer_path = tokf};
        ks_model *a = NULL, *b = NULL;
        ks_error e = {0};
        if (tap_ok(ks_model_open(bin, &o, &a, &e) == KS_OK && ks_model_open(bin, &o, &b, &e) == KS_OK,
                   "stories260K opens twice: %s", e.msg)) {
            static const char *const texts[3] = {"Once upon a time, there was a little dog.",
                                                 "The sun was warm and the birds sang",
                                                 "Tom had a red ball. He"};
            prompt p[3];
            for (int i = 0; i < 3; i++) {
                int *ids = NULL;
                ks_tokenizer_encode(ks_model_tokenizer(a), texts[i], strlen(texts[i]), true, &ids, &p[i].n, &e);
                if (p[i].n > 64) p[i].n = 64;
                memcpy(p[i].ids, ids, (size_t)p[i].n * sizeof(int));
                free(ids);
            }
            check_identical("stories260K vs itself", a, b, p, 3);
        }
        ks_model_close(a);
        ks_model_close(b);
    }
    return tap_done();
}
