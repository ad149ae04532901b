/* lens.c — koalascope lens: the logit lens over a dump's residual stream, layer by layer
 * (probes/ks_lens.h). Results on stdout as TSV; the check against the dump's own logits on
 * stderr. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ks_dump.h"
#include "ks_lens.h"
#include "ks_tuned_lens.h"

static const char *help_lens =
    "Usage: koalascope lens DUMP.h5 --model MODEL [options]\n"
    "The logit lens: each layer's recorded residual stream read through the model's final\n"
    "norm and output matrix, as if the model stopped there. One row per (layer, position):\n"
    "layer, position, the token there, the top-k next tokens with probabilities, the target's\n"
    "log-probability and rank (with --target), and KL(final ‖ layer) in nats.\n"
    "Needs blocks.*.hook_resid_post (or --hook resid_pre) recorded for every layer.\n"
    "  --model MODEL     the model the dump was recorded with (its final norm and output)\n"
    "  --tokenizer FILE  tokenizer for a llama2.c checkpoint\n"
    "  --prompt N        which prompt of the dump (default 0)\n"
    "  --position P      last (default), all, or a position index\n"
    "  --target TEXT     a continuation: report its first token's log-probability and rank\n"
    "  --topk K          tokens listed per row (default 5)\n"
    "  --hook H          resid_post (default) or resid_pre\n"
    "  --tuned LENS      the tuned lens: each layer's translator (koalascope tuned-lens) applied\n"
    "                    before the lens; adds a last column lens = tuned (resid_post only)\n"
    "At the last layer the lens is the model's own output: where the dump holds /logits/full,\n"
    "the largest difference is printed on stderr as a check.\n";

enum { L_MODEL = 500, L_TOK, L_PROMPT, L_POS, L_TARGET, L_TOPK, L_HOOK, L_TUNED, L_HELP };

#define usage(...) cli_usage("lens", __VA_ARGS__)

static int fail(const ks_error *e) {
    fprintf(stderr, "koalascope lens: error: %s\n", e->msg);
    return EXIT_USAGE;
}

int cmd_lens(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, L_MODEL}, {"tokenizer", required_argument, 0, L_TOK},
        {"prompt", required_argument, 0, L_PROMPT}, {"position", required_argument, 0, L_POS},
        {"target", required_argument, 0, L_TARGET}, {"topk", required_argument, 0, L_TOPK},
        {"hook", required_argument, 0, L_HOOK},   {"help", no_argument, 0, L_HELP},
        {"tuned", required_argument, 0, L_TUNED},
        {0, 0, 0, 0}};
    const char *model = NULL, *tokp = NULL, *target_s = NULL, *pos_s = "last", *hook_s = "resid_post",
               *tuned_s = NULL;
    long prompt = 0, topk = 5, v;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case L_MODEL: model = optarg; break;
        case L_TOK: tokp = optarg; break;
        case L_PROMPT:
            if (!cli_parse_int(optarg, 0, 1L << 40, &prompt)) return usage("--prompt: '%s' is not an index", optarg);
            break;
        case L_POS: pos_s = optarg; break;
        case L_TARGET: target_s = optarg; break;
        case L_TOPK:
            if (!cli_parse_int(optarg, 1, 100, &topk)) return usage("--topk: '%s' is not a count 1..100", optarg);
            break;
        case L_HOOK: hook_s = optarg; break;
        case L_TUNED: tuned_s = optarg; break;
        case L_HELP: fputs(help_lens, stdout); return 0;
        default: return usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage("%s", "no DUMP given");
    const char *path = argv[optind++];
    if (optind < argc) return usage("unexpected argument '%s'", argv[optind]);
    if (!model) return usage("%s", "no --model MODEL (the lens needs its final norm and output matrix)");
    if (strcmp(hook_s, "resid_post") && strcmp(hook_s, "resid_pre"))
        return usage("--hook: '%s' is not resid_post or resid_pre", hook_s);
    if (tuned_s && strcmp(hook_s, "resid_post"))
        return usage("%s", "--tuned: the translators read resid_post (drop --hook resid_pre)");

    ks_dump *d = NULL;
    ks_model *m = NULL;
    ks_tuned_lens *tl = NULL;
    ks_error e = {0};
    float *rows = NULL, *lg = NULL, *ref = NULL;
    int32_t *tok = NULL, *pos = NULL;
    int *tgt = NULL;
    char **strs = NULL;
    int rc = EXIT_USAGE;
    ks_dump_prompt pi = {0};
    if (ks_dump_open(path, &d, &e)) return fail(&e);
    ks_model_options mo = {.tokenizer_path = tokp};
    if (ks_model_open(model, &mo, &m, &e)) {
        rc = fail(&e);
        goto out;
    }
    const ks_config *mc = ks_model_config(m), *dc = ks_dump_config(d);
    if (tuned_s) { /* refuses a lens of another model, naming the field */
        ks_tuned_lens_identity tid;
        if (ks_tuned_lens_model_identity(m, &tid, &e) || ks_tuned_lens_load(tuned_s, &tid, &tl, &e)) {
            rc = fail(&e);
            goto out;
        }
    }
    if (dc && (dc->dim != mc->dim || dc->n_layers != mc->n_layers || dc->vocab_size != mc->vocab_size)) {
        fprintf(stderr, "koalascope lens: error: %s was recorded with another model (d_model %d, "
                "%d layers, vocab %d; %s has %d, %d, %d)\n", path, dc->dim, dc->n_layers,
                dc->vocab_size, model, mc->dim, mc->n_layers, mc->vocab_size);
        goto out;
    }
    if (prompt >= ks_dump_n_prompts(d)) {
        fprintf(stderr, "koalascope lens: error: --prompt %ld: %s holds %lld prompts\n", prompt,
                path, (long long)ks_dump_n_prompts(d));
        goto out;
    }
    if (ks_dump_prompt_info(d, prompt, &pi, &e)) {
        rc = fail(&e);
        goto out;
    }
    const int L = mc->n_layers, D = mc->dim, V = mc->vocab_size;
    const int64_t R = pi.n_rows;
    const ks_dump_hook **hk = calloc((size_t)L, sizeof *hk);
    if (!hk) goto out;
    for (int l = 0; l < L; l++) {
        char name[96];
        snprintf(name, sizeof name, "blocks.%d.hook_%s", l, hook_s);
        hk[l] = ks_dump_find_hook(d, name);
        if (!hk[l] || hk[l]->row_elems != D) {
            fprintf(stderr, "koalascope lens: error: %s did not record %s (record with --hooks "
                    "'blocks.*.hook_%s')\n", path, name, hook_s);
            free(hk);
            goto out;
        }
    }
    tok = malloc((size_t)pi.n_tokens * sizeof *tok);
    pos = malloc((size_t)(R ? R : 1) * sizeof *pos);
    rows = malloc((size_t)L * (R ? R : 1) * D * sizeof(float));
    lg = malloc((size_t)(R ? R : 1) * V * sizeof(float));
    ref = malloc((size_t)(R ? R : 1) * V * sizeof(float));
    if (!tok || !pos || !rows || !lg || !ref) {
        free(hk);
        rc = usage("%s", "out of memory");
        goto out;
    }
    if (ks_dump_read_tokens(d, prompt, tok, (size_t)pi.n_tokens, &e) ||
        ks_dump_read_positions(d, prompt, pos, (size_t)R, &e) ||
        ks_dump_read_token_strings(d, prompt, &strs, &e)) {
        free(hk);
        rc = fail(&e);
        goto out;
    }
    for (int l = 0; l < L; l++)
        if (ks_dump_read_rows(d, hk[l], prompt, prompt + 1, rows + (size_t)l * R * D,
                              (size_t)R * D, &e)) {
            free(hk);
            rc = fail(&e);
            goto out;
        }
    free(hk);
    /* which rows */
    int64_t r0 = 0, r1 = R;
    if (!strcmp(pos_s, "last")) {
        r0 = R - 1;
    } else if (strcmp(pos_s, "all")) {
        if (!cli_parse_int(pos_s, 0, 1L << 30, &v)) {
            rc = usage("--position: '%s' is not last, all or an index", pos_s);
            goto out;
        }
        r0 = -1;
        for (int64_t r = 0; r < R; r++)
            if (pos[r] == v) r0 = r;
        if (r0 < 0) {
            fprintf(stderr, "koalascope lens: error: --position %ld: not recorded in prompt %ld\n",
                    v, prompt);
            goto out;
        }
        r1 = r0 + 1;
    }
    int target = -1;
    if (target_s) {
        int n = 0;
        if (!ks_model_tokenizer(m)) {
            rc = usage("%s", "--target needs the model's tokenizer (--tokenizer FILE)");
            goto out;
        }
        if (ks_tokenizer_encode_ex(ks_model_tokenizer(m), target_s, strlen(target_s), false, false,
                                   &tgt, &n, &e)) {
            rc = fail(&e);
            goto out;
        }
        if (n < 1) {
            rc = usage("%s", "--target gives no token");
            goto out;
        }
        target = tgt[0];
    }
    /* the final layer's distribution is the reference of every layer's KL */
    int64_t nr = r1 - r0;
    if (ks_logit_lens(m, rows + ((size_t)(L - 1) * R + r0) * D, (int)nr, ref, &e)) {
        rc = fail(&e);
        goto out;
    }
    printf("layer\tposition\ttoken");
    for (int k = 0; k < topk; k++) printf("\ttop%d\tp%d", k + 1, k + 1);
    printf("%s\tkl_to_final%s\n", target >= 0 ? "\ttarget_logprob\ttarget_rank" : "",
           tl ? "\tlens" : "");
    int *idx = malloc((size_t)topk * sizeof *idx);
    if (!idx) goto out;
    for (int l = 0; l < L; l++) {
        if (tl ? ks_tuned_lens_apply(tl, m, l, rows + ((size_t)l * R + r0) * D, (int)nr, lg, &e)
               : ks_logit_lens(m, rows + ((size_t)l * R + r0) * D, (int)nr, lg, &e)) {
            free(idx);
            rc = fail(&e);
            goto out;
        }
        for (int64_t i = 0; i < nr; i++) {
            const float *z = lg + (size_t)i * V;
            ks_lens_stats st;
            ks_lens_row_stats(z, ref + (size_t)i * V, V, target, &st);
            double mx = -INFINITY, s = 0.0;
            for (int t = 0; t < V; t++) mx = fmax(mx, z[t]);
            for (int t = 0; t < V; t++) s += exp(z[t] - mx);
            for (int k = 0; k < topk; k++) { /* top-k by selection: k is small */
                idx[k] = -1;
                for (int t = 0; t < V; t++) {
                    bool taken = false;
                    for (int j = 0; j < k; j++) taken |= idx[j] == t;
                    if (!taken && (idx[k] < 0 || z[t] > z[idx[k]])) idx[k] = t;
                }
            }
            int p = pos[r0 + i];
            printf("%d\t%d\t%s", l, p, strs && p < pi.n_tokens ? strs[p] : "");
            for (int k = 0; k < topk && k < V; k++) {
                char piece[96];
                size_t n = ks_model_tokenizer(m) ? ks_tokenizer_token_text(ks_model_tokenizer(m), -1, idx[k], piece, sizeof piece) : 0;
                piece[n] = 0;
                for (char *q = piece; *q; q++)
                    if (*q == '\t' || *q == '\n') *q = ' ';
                printf("\t%s\t%.6f", n ? piece : "?", exp(z[idx[k]] - mx) / s);
            }
            if (target >= 0) printf("\t%.6f\t%d", st.target_logprob, st.target_rank);
            printf("\t%.6g%s\n", st.kl_to_ref, tl ? "\ttuned" : "");
        }
    }
    free(idx);
    /* the check: the last layer's lens is the model's output, whose top-k the dump holds */
    int K = ks_dump_logits_topk(d);
    if (K > 0 && !strcmp(hook_s, "resid_post")) {
        int32_t *ids = malloc((size_t)R * K * sizeof *ids);
        float *lp = malloc((size_t)R * K * sizeof *lp);
        if (ids && lp && ks_dump_read_topk(d, prompt, ids, lp, NULL, (size_t)R, &e) == KS_OK) {
            double md = 0.0;
            for (int64_t i = 0; i < nr; i++) {
                const float *z = ref + (size_t)i * V;
                double mx = -INFINITY, s2 = 0.0;
                for (int t = 0; t < V; t++) mx = fmax(mx, z[t]);
                for (int t = 0; t < V; t++) s2 += exp(z[t] - mx);
                double lse = mx + log(s2);
                for (int k = 0; k < K; k++) {
                    int id = ids[(size_t)(r0 + i) * K + k];
                    if (id >= 0 && id < V)
                        md = fmax(md, fabs(z[id] - lse - lp[(size_t)(r0 + i) * K + k]));
                }
            }
            fprintf(stderr, "check: at the last layer the lens reproduces the dump's top-%d "
                    "log-probabilities: max |diff| %.3g\n", K, md);
        }
        free(ids);
        free(lp);
    }
    rc = 0;
out:
    if (strs) ks_dump_strings_free(strs, pi.n_tokens);
    free(tgt);
    free(tok);
    free(pos);
    free(rows);
    free(lg);
    free(ref);
    ks_tuned_lens_free(tl);
    ks_model_close(m);
    ks_dump_close(d);
    return rc;
}
