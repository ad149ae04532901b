/* attribute.c — koalascope attribute (which input tokens or heads drive an objective) and
 * koalascope patch (activation patching, exact or by attribution patching), on the backward
 * pass (probes/ks_attr.h), on the CPU or a GPU (--backend). Results on stdout as ranked TSV tables; -o adds them to an
 * HDF5 file under /attributions (docs/FORMAT.md). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ks_attr.h"
#include "ks_dump.h"

static const char *help_attribute =
    "Usage: koalascope attribute MODEL --prompt TEXT --target TEXT [--vs TEXT] [options]\n"
    "Attribute an objective to the prompt's tokens (or to every attention head) with the\n"
    "backward pass and print a ranked table (TSV) on stdout.\n"
    "Objective\n"
    "  --target TEXT     the continuation: f = log p(TEXT | prompt), summed over its tokens\n"
    "  --vs TEXT         with --target: f = logit(first token of TARGET) − logit(first token of\n"
    "                    TEXT) at the prompt's last position (e.g. --target ' he' --vs ' she')\n"
    "Method\n"
    "  --method M        ig (integrated gradients, default), saliency, grad_x_input, heads\n"
    "  --steps N         ig: Gauss–Legendre nodes (default 64)\n"
    "  --baseline B      ig: unk (the embedding of token 0, default), zero, or a token id\n"
    "Output\n"
    "  --top N           rows of the table (default: all)\n"
    "  -o FILE           also write the result to FILE under /attributions/NAME (a dump,\n"
    "                    a file written before, or a new file)\n"
    "  --name NAME       the group name (default: the method)\n"
    "  --overwrite       replace a result of that name\n"
    "  --backend NAME    cpu (default) or cuda (an NVIDIA GPU)\n"
    "  --tokenizer FILE, --no-bos, -q\n"
    "On the CPU the model is converted to f32 at load; on a GPU its weights stay as stored\n"
    "(16-bit GEMMs on tensor cores, f32 activations). Integrated gradients report their\n"
    "completeness: Σ attributions against f(input) − f(baseline).\n";

static const char *help_patch =
    "Usage: koalascope patch MODEL --clean TEXT --corrupt TEXT --target TEXT [--vs TEXT] [options]\n"
    "Activation patching: run the corrupt prompt with one activation of the clean run patched\n"
    "in, for every (layer, position) of the residual stream or every (layer, head) output, and\n"
    "print f(patched) − f(corrupt) as a table (TSV, one row per layer) on stdout.\n"
    "The two prompts must tokenize to the same length.\n"
    "  --target, --vs    the objective, as in koalascope attribute\n"
    "  --site S          resid (blocks.L.hook_resid_pre per position, default) or heads\n"
    "                    (blocks.L.attn.hook_z per head, all positions)\n"
    "  --approx          attribution patching: the first-order estimate from one backward\n"
    "                    pass, (a_clean − a_corrupt) · ∂f/∂a, instead of one forward per cell\n"
    "  --compare         both, and the Pearson r of the estimate against the exact effect per\n"
    "                    layer (stderr)\n"
    "  -o FILE, --name NAME, --overwrite, --backend NAME, --tokenizer FILE, -q\n"
    "                    as in koalascope attribute\n";

enum { A_PROMPT = 400, A_TARGET, A_VS, A_METHOD, A_STEPS, A_BASELINE, A_TOP, A_NAME, A_OVERWRITE,
       A_TOKENIZER, A_NOBOS, A_CLEAN, A_CORRUPT, A_SITE, A_APPROX, A_COMPARE, A_BACKEND, A_HELP };

static const struct option attr_opts[] = {
    {"prompt", required_argument, 0, A_PROMPT},   {"target", required_argument, 0, A_TARGET},
    {"vs", required_argument, 0, A_VS},           {"method", required_argument, 0, A_METHOD},
    {"steps", required_argument, 0, A_STEPS},     {"baseline", required_argument, 0, A_BASELINE},
    {"top", required_argument, 0, A_TOP},         {"output", required_argument, 0, 'o'},
    {"name", required_argument, 0, A_NAME},       {"overwrite", no_argument, 0, A_OVERWRITE},
    {"tokenizer", required_argument, 0, A_TOKENIZER}, {"no-bos", no_argument, 0, A_NOBOS},
    {"clean", required_argument, 0, A_CLEAN},     {"corrupt", required_argument, 0, A_CORRUPT},
    {"site", required_argument, 0, A_SITE},       {"approx", no_argument, 0, A_APPROX},
    {"compare", no_argument, 0, A_COMPARE},       {"quiet", no_argument, 0, 'q'},
    {"backend", required_argument, 0, A_BACKEND},
    {"help", no_argument, 0, A_HELP},             {0, 0, 0, 0},
};

typedef struct {
    const char *cmd, *model, *prompt, *target, *vs, *output, *name, *tokenizer, *clean, *corrupt;
    const char *method_s, *site_s, *backend;
    int steps, baseline, top;
    bool overwrite, no_bos, approx, compare, quiet, baseline_zero;
} aargs;

#define usage cli_usage

static int fail(const char *cmd, const ks_error *e) {
    fprintf(stderr, "koalascope %s: error: %s\n", cmd, e->msg);
    return EXIT_USAGE;
}

static int parse(const char *cmd, int argc, char **argv, aargs *a) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->method_s = "ig";
    a->site_s = "resid";
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "o:q", attr_opts, NULL)) != -1) {
        switch (c) {
        case A_PROMPT: a->prompt = optarg; break;
        case A_TARGET: a->target = optarg; break;
        case A_VS: a->vs = optarg; break;
        case A_METHOD: a->method_s = optarg; break;
        case A_STEPS:
            if (!cli_parse_int(optarg, 1, 256, &v)) return usage(cmd, "--steps: '%s' is not a count 1..256", optarg);
            a->steps = (int)v;
            break;
        case A_BASELINE:
            if (!strcmp(optarg, "zero")) a->baseline_zero = true;
            else if (!strcmp(optarg, "unk")) a->baseline = 0;
            else if (cli_parse_int(optarg, 0, 1 << 24, &v)) a->baseline = (int)v;
            else return usage(cmd, "--baseline: '%s' is not unk, zero or a token id", optarg);
            break;
        case A_TOP:
            if (!cli_parse_int(optarg, 1, 1 << 24, &v)) return usage(cmd, "--top: '%s' is not a count", optarg);
            a->top = (int)v;
            break;
        case 'o': a->output = optarg; break;
        case A_NAME: a->name = optarg; break;
        case A_OVERWRITE: a->overwrite = true; break;
        case A_TOKENIZER: a->tokenizer = optarg; break;
        case A_BACKEND:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda"))
                return usage(a->cmd, "--backend: '%s' is not a backend (cpu or cuda)", optarg);
            a->backend = optarg;
            break;
        case A_NOBOS: a->no_bos = true; break;
        case A_CLEAN: a->clean = optarg; break;
        case A_CORRUPT: a->corrupt = optarg; break;
        case A_SITE: a->site_s = optarg; break;
        case A_APPROX: a->approx = true; break;
        case A_COMPARE: a->compare = true; break;
        case 'q': a->quiet = true; break;
        case A_HELP:
            fputs(strcmp(cmd, "patch") ? help_attribute : help_patch, stdout);
            return 0;
        default:
            return usage(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) a->model = argv[optind++];
    if (optind < argc) return usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (!a->model) return usage(cmd, "%s", "no MODEL given");
    if (!a->target) return usage(cmd, "%s", "no --target TEXT: what should be attributed?");
    return -1;
}

static void progress(int done, int total, void *user) {
    const char *what = user;
    fprintf(stderr, "\r%s: %d/%d", what, done, total);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* The model and its tokenizer; NULL after printing why. On the CPU the weights are converted
 * to f32 at load (the backward runs fastest on them); on a GPU they stay as stored (a 16-bit
 * model runs its GEMMs on tensor cores). */
static ks_model *open_model(const aargs *a) {
    ks_model *m = NULL;
    ks_error e = {0};
    bool cpu = !a->backend || !strcmp(a->backend, "cpu");
    ks_model_options o = {.tokenizer_path = a->tokenizer, .f32_weights = cpu};
    if (ks_model_open(a->model, &o, &m, &e)) {
        fail(a->cmd, &e);
        return NULL;
    }
    if (!ks_model_tokenizer(m)) {
        usage(a->cmd, "%s", "the model has no tokenizer; give --tokenizer FILE");
        ks_model_close(m);
        return NULL;
    }
    return m;
}

/* ids of text (BOS first when bos; a continuation gets no dummy-prefix space) */
static int encode(const ks_model *m, const char *text, bool bos, int **ids, ks_error *e) {
    int n = 0;
    if (ks_tokenizer_encode_ex(ks_model_tokenizer(m), text, strlen(text), bos, bos, ids, &n, e))
        return -1;
    return n;
}

/* prompt + continuation tokens and the objective; returns T or -1 after printing why */
static int build(const aargs *a, const ks_model *m, const char *prompt, int **tok,
                 ks_objective *obj) {
    ks_error e = {0};
    int *p = NULL, *t = NULL, *w = NULL;
    int np = encode(m, prompt, !a->no_bos, &p, &e);
    int nt = np >= 0 ? encode(m, a->target, false, &t, &e) : -1;
    int nw = a->vs && nt >= 0 ? encode(m, a->vs, false, &w, &e) : 0;
    int T = -1;
    if (np < 0 || nt < 0 || nw < 0) {
        fail(a->cmd, &e);
    } else if (np == 0 || nt == 0 || (a->vs && nw == 0)) {
        usage(a->cmd, "%s", "the prompt, --target and --vs must each give at least one token");
    } else if (a->vs) {
        *obj = (ks_objective){.kind = KS_OBJ_LOGIT_DIFF, .n_prompt = np, .a = t[0], .b = w[0]};
        *tok = p;
        p = NULL;
        T = np;
    } else {
        *tok = malloc((size_t)(np + nt) * sizeof(int));
        if (*tok) {
            memcpy(*tok, p, (size_t)np * sizeof(int));
            memcpy(*tok + np, t, (size_t)nt * sizeof(int));
            *obj = (ks_objective){.kind = KS_OBJ_LOGPROB, .n_prompt = np};
            T = np + nt;
        }
    }
    free(p);
    free(t);
    free(w);
    return T;
}

static char *piece(const ks_model *m, int prev, int id) {
    static char buf[8][96];
    static int k;
    char *b = buf[k++ % 8];
    size_t n = ks_tokenizer_token_text(ks_model_tokenizer(m), prev, id, b, sizeof buf[0]);
    b[n] = 0;
    for (char *q = b; *q; q++)
        if (*q == '\t' || *q == '\n') *q = ' ';
    return b;
}

typedef struct {
    int i;
    float v;
} ranked;

static int by_value(const void *x, const void *y) {
    float a = ((const ranked *)x)->v, b = ((const ranked *)y)->v;
    return (a < b) - (a > b);
}

static char cmdline[4096];

static void join_cmdline(int argc, char **argv) {
    size_t u = 0;
    cmdline[0] = 0;
    for (int i = 0; i < argc && u + 2 < sizeof cmdline; i++)
        u += (size_t)snprintf(cmdline + u, sizeof cmdline - u, "%s%s", i ? " " : "koalascope ",
                              argv[i]);
}

static int write_out(const aargs *a, const ks_model *m, const char *method, const char *objective,
                     const int *tok, int T, const float *vals, int ndim, const int64_t *shape,
                     const char *const *axes, double fx, double fb, double comp, int steps) {
    if (!a->output) return 0;
    const char **pieces = malloc((size_t)T * sizeof *pieces);
    if (!pieces) return usage(a->cmd, "%s", "out of memory");
    for (int t = 0; t < T; t++) pieces[t] = strdup(piece(m, t ? tok[t - 1] : -1, tok[t]));
    ks_attribution r = {.name = a->name ? a->name : method, .method = method,
                        .objective = objective, .tokens = tok, .n_tokens = T,
                        .token_strings = pieces, .values = vals, .ndim = ndim, .shape = shape,
                        .axes = axes, .objective_value = fx, .baseline_value = fb,
                        .completeness_error = comp, .steps = steps};
    ks_error e = {0};
    ks_status st = ks_attribution_write(a->output, &r, a->model, cmdline, a->overwrite, &e);
    for (int t = 0; t < T; t++) free((void *)pieces[t]);
    free(pieces);
    if (st) return fail(a->cmd, &e);
    if (!a->quiet) fprintf(stderr, "wrote /attributions/%s to %s\n", r.name, a->output);
    return 0;
}

static void describe(const aargs *a, char *buf, size_t cap) {
    if (a->vs)
        snprintf(buf, cap, "logit('%s') - logit('%s') at the last prompt position", a->target, a->vs);
    else
        snprintf(buf, cap, "log p('%s' | prompt)", a->target);
}

int cmd_attribute(int argc, char **argv) {
    aargs a;
    int rc = parse("attribute", argc, argv, &a);
    if (rc >= 0) return rc;
    join_cmdline(argc, argv);
    if (!a.prompt) return usage("attribute", "%s", "no --prompt TEXT");
    ks_attr_method meth;
    bool heads = false;
    if (!strcmp(a.method_s, "ig") || !strcmp(a.method_s, "integrated_gradients"))
        meth = KS_ATTR_INTEGRATED_GRADIENTS;
    else if (!strcmp(a.method_s, "saliency"))
        meth = KS_ATTR_SALIENCY;
    else if (!strcmp(a.method_s, "grad_x_input"))
        meth = KS_ATTR_GRAD_X_INPUT;
    else if (!strcmp(a.method_s, "heads"))
        heads = true, meth = KS_ATTR_SALIENCY;
    else
        return usage("attribute", "--method: '%s' is not ig, saliency, grad_x_input or heads", a.method_s);
    ks_model *m = open_model(&a);
    if (!m) return EXIT_USAGE;
    int *tok = NULL;
    ks_objective obj;
    ks_grad *g = NULL;
    ks_error e = {0};
    float *hv = NULL;
    rc = EXIT_USAGE;
    int T = build(&a, m, a.prompt, &tok, &obj);
    if (T < 0) goto out;
    ks_grad_options go = {.param_grads = false, .backend = a.backend};
    if (ks_grad_create(m, &go, &g, &e)) {
        rc = fail("attribute", &e);
        goto out;
    }
    char objective[512];
    describe(&a, objective, sizeof objective);
    const ks_config *c = ks_model_config(m);
    if (heads) {
        int L = c->n_layers, H = c->n_heads;
        double fx = NAN;
        hv = malloc((size_t)L * H * sizeof(float));
        ranked *r = malloc((size_t)L * H * sizeof *r);
        if (!hv || !r || ks_attribute_heads(g, tok, T, &obj, hv, &fx, &e)) {
            free(r);
            rc = hv && r ? fail("attribute", &e) : usage("attribute", "%s", "out of memory");
            goto out;
        }
        for (int i = 0; i < L * H; i++) r[i] = (ranked){i, hv[i]};
        qsort(r, (size_t)L * H, sizeof *r, by_value);
        printf("rank\tlayer\thead\tattribution\n");
        int n = a.top && a.top < L * H ? a.top : L * H;
        for (int k = 0; k < n; k++)
            printf("%d\t%d\t%d\t%.6g\n", k + 1, r[k].i / H, r[k].i % H, r[k].v);
        free(r);
        if (!a.quiet) fprintf(stderr, "f = %s = %.6f\n", objective, fx);
        int64_t shape[2] = {L, H};
        const char *axes[2] = {"layer", "head"};
        rc = write_out(&a, m, "head_attribution", objective, tok, T, hv, 2, shape, axes, fx, NAN,
                       NAN, 0);
        goto out;
    }
    ks_attr_result res;
    if (ks_attribute_tokens(g, tok, T, &obj, meth, a.steps, a.baseline_zero ? -1 : a.baseline,
                            !a.quiet && isatty(2) ? progress : NULL, "integrated gradients", &res,
                            &e)) {
        rc = fail("attribute", &e);
        goto out;
    }
    int np = obj.n_prompt;
    ranked *r = malloc((size_t)np * sizeof *r);
    if (!r) {
        free(res.values);
        rc = usage("attribute", "%s", "out of memory");
        goto out;
    }
    for (int t = 0; t < np; t++) r[t] = (ranked){t, res.values[t]};
    qsort(r, (size_t)np, sizeof *r, by_value);
    printf("rank\tposition\ttoken\tpiece\tattribution\n");
    int n = a.top && a.top < np ? a.top : np;
    for (int k = 0; k < n; k++)
        printf("%d\t%d\t%d\t%s\t%.6g\n", k + 1, r[k].i, tok[r[k].i],
               piece(m, r[k].i ? tok[r[k].i - 1] : -1, tok[r[k].i]), r[k].v);
    free(r);
    if (!a.quiet) {
        fprintf(stderr, "f = %s = %.6f\n", objective, res.f_x);
        if (meth == KS_ATTR_INTEGRATED_GRADIENTS)
            fprintf(stderr, "integrated gradients, %d nodes, baseline %s: f(baseline) = %.6f; "
                    "completeness error %.3g%%%s\n", res.steps,
                    a.baseline_zero ? "zero" : "token embedding", res.f_baseline,
                    100.0 * res.completeness_error,
                    res.completeness_error > 0.01 ? " (over 1%: raise --steps)" : "");
    }
    int64_t shape[1] = {np};
    const char *axes[1] = {"position"};
    rc = write_out(&a, m, ks_attr_method_name(meth), objective, tok, np, res.values, 1, shape,
                   axes, res.f_x, res.f_baseline, res.completeness_error, res.steps);
    free(res.values);
out:
    free(hv);
    free(tok);
    ks_grad_free(g);
    ks_model_close(m);
    return rc;
}

int cmd_patch(int argc, char **argv) {
    aargs a;
    int rc = parse("patch", argc, argv, &a);
    if (rc >= 0) return rc;
    join_cmdline(argc, argv);
    if (!a.clean || !a.corrupt) return usage("patch", "%s", "give both --clean TEXT and --corrupt TEXT");
    ks_patch_site site;
    if (!strcmp(a.site_s, "resid"))
        site = KS_PATCH_RESID_PRE;
    else if (!strcmp(a.site_s, "heads"))
        site = KS_PATCH_HEAD_Z;
    else
        return usage("patch", "--site: '%s' is not resid or heads", a.site_s);
    ks_model *m = open_model(&a);
    if (!m) return EXIT_USAGE;
    int *cl = NULL, *co = NULL;
    ks_objective obj, obj2;
    ks_grad *g = NULL;
    ks_error e = {0};
    float *ex = NULL, *ap = NULL;
    rc = EXIT_USAGE;
    int T = build(&a, m, a.clean, &cl, &obj);
    int T2 = T > 0 ? build(&a, m, a.corrupt, &co, &obj2) : -1;
    if (T < 0 || T2 < 0) goto out;
    if (T != T2 || obj.n_prompt != obj2.n_prompt) {
        fprintf(stderr, "koalascope patch: error: --clean and --corrupt give %d and %d prompt "
                "tokens; patching needs the same length (choose words of the same token "
                "count: koalascope tokenize --pieces shows them)\n", obj.n_prompt, obj2.n_prompt);
        goto out;
    }
    ks_grad_options go = {.param_grads = false, .backend = a.backend};
    if (ks_grad_create(m, &go, &g, &e)) {
        rc = fail("patch", &e);
        goto out;
    }
    const ks_config *c = ks_model_config(m);
    int L = c->n_layers, cells = site == KS_PATCH_HEAD_Z ? c->n_heads : T;
    ex = malloc((size_t)L * cells * sizeof(float));
    ap = malloc((size_t)L * cells * sizeof(float));
    if (!ex || !ap) {
        rc = usage("patch", "%s", "out of memory");
        goto out;
    }
    double fc = NAN, fx = NAN;
    bool want_exact = !a.approx || a.compare, want_ap = a.approx || a.compare;
    if (want_exact && ks_patch(g, cl, co, T, &obj, site, true, !a.quiet && isatty(2) ? progress : NULL,
                               "activation patching", ex, &fc, &fx, &e)) {
        rc = fail("patch", &e);
        goto out;
    }
    if (want_ap && ks_patch(g, cl, co, T, &obj, site, false, NULL, NULL, ap, &fc, &fx, &e)) {
        rc = fail("patch", &e);
        goto out;
    }
    const float *shown = want_exact ? ex : ap;
    printf("layer");
    for (int k = 0; k < cells; k++) {
        if (site == KS_PATCH_HEAD_Z)
            printf("\thead %d", k);
        else
            printf("\t%d:%s", k, piece(m, k ? cl[k - 1] : -1, cl[k]));
    }
    printf("\n");
    for (int l = 0; l < L; l++) {
        printf("%d", l);
        for (int k = 0; k < cells; k++) printf("\t%.6g", shown[(size_t)l * cells + k]);
        printf("\n");
    }
    char objective[512];
    describe(&a, objective, sizeof objective);
    if (!a.quiet) {
        fprintf(stderr, "f = %s: clean %.6f, corrupt %.6f; cells show %s f(patched) − f(corrupt)\n",
                objective, fc, fx, want_exact ? "exact" : "estimated (attribution patching)");
        if (a.compare)
            for (int l = 0; l < L; l++)
                fprintf(stderr, "layer %d: Pearson r (attribution patching vs exact) = %.4f\n", l,
                        ks_pearson(ap + (size_t)l * cells, ex + (size_t)l * cells, cells));
    }
    int64_t shape[2] = {L, cells};
    const char *axes[2] = {"layer", site == KS_PATCH_HEAD_Z ? "head" : "position"};
    rc = write_out(&a, m, want_exact ? "activation_patching" : "attribution_patching", objective,
                   co, T, shown, 2, shape, axes, fc, fx, NAN, 0);
out:
    free(ex);
    free(ap);
    free(cl);
    free(co);
    ks_grad_free(g);
    ks_model_close(m);
    return rc;
}
