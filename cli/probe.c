/* probe.c — koalascope probe: linear probes on a dump's hooks, layer by layer, with controls
 * (probes/ks_probe.h), labels from a file (probes/ks_labels.h); results as HDF5 + CSV + a
 * chart (activations/ks_results.h, gui/ks_plot.h). Reads one hook at a time and only the
 * labelled rows of it, so memory is bounded by the selection, not by the dump. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ks_dump.h"
#include "ks_labels.h"
#include "ks_plot.h"
#include "ks_probe.h"
#include "ks_results.h"

#define CMD "probe"
#define usage(...) cli_usage(CMD, __VA_ARGS__)

static const char *help_probe =
    "Usage: koalascope probe DUMP.h5 --labels FILE [options] -o RESULTS.h5\n"
    "Linear probes on recorded activations, one per hook (a sweep over layers), each\n"
    "cross-validated with prompt-level folds and run against its controls: the majority\n"
    "class, shuffled labels and a control task (Hewitt & Liang 2019). Writes RESULTS.h5 (every\n"
    "metric with its confidence interval, the probe weights and the difference-of-means\n"
    "direction; docs/PROBES.md), RESULTS.csv and a chart RESULTS.png (and .svg).\n"
    "  --labels FILE      .jsonl or .csv: prompt (index or id), label, optional position or\n"
    "                     token regex (docs/PROBES.md)\n"
    "  --hook SEL         hooks to probe: globs and layer ranges, comma-separated\n"
    "                     (default 'blocks.*.hook_resid_post')\n"
    "  --position P       rows of a labelled prompt without its own position or token:\n"
    "                     last (default: the last input token), all (every recorded row of\n"
    "                     the input), an index (negative from the end), or re:REGEX (tokens\n"
    "                     whose piece matches the POSIX extended regex)\n"
    "  --task T           logistic (default: class labels) or ridge (numeric labels)\n"
    "  --C X              logistic inverse regularisation, as scikit-learn (default 1)\n"
    "  --alpha X          ridge regularisation, as scikit-learn (default 1)\n"
    "  --folds K          cross-validation folds over prompts (default 5)\n"
    "  --bootstrap N      bootstrap resamples for confidence intervals (default 1000)\n"
    "  --ci LEVEL         confidence level (default 0.95)\n"
    "  --shuffles N       shuffled-label repetitions (default 5; 0: none)\n"
    "  --no-standardize   fit on raw activations (default: standardised per fold)\n"
    "  --seed S           folds, shuffles, bootstrap, control task (default 0)\n"
    "  --max-iter N       L-BFGS iterations (default 1000)\n"
    "  --chart FMT        png (default), svg, pdf, or none; png also writes an svg\n"
    "  -o, --output FILE  the results file (.h5; the CSV and chart go beside it)\n"
    "  --overwrite        replace existing results\n"
    "  -q, --quiet        no progress on stderr\n"
    "  -h, --help         this help\n"
    "A probe is marked 'beats controls' when its metric's CI lies above the majority baseline\n"
    "and above the shuffled-label baseline's upper bound.\n";

enum { O_LABELS = 600, O_HOOK, O_POS, O_TASK, O_C, O_ALPHA, O_FOLDS, O_BOOT, O_CI, O_SHUF,
       O_NOSTD, O_SEED, O_MAXIT, O_CHART, O_OVER };

typedef struct {
    int32_t prompt;
    int32_t row;    /* row inside the prompt */
    int32_t token;  /* token id there */
    int32_t cls;    /* class id (logistic) */
    double target;  /* ridge */
    int64_t line;   /* labels line */
} sel_row;

typedef struct {
    const char *dump_path, *labels_path, *hooks, *position, *task, *out, *chart;
    ks_probe_options po;
    bool overwrite, quiet;
} args;

static bool parse_double(const char *s, double *v) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return !errno && end != s && !*end && isfinite(*v);
}

static int parse_args(int argc, char **argv, args *a) {
    static const struct option opts[] = {
        {"labels", required_argument, 0, O_LABELS}, {"hook", required_argument, 0, O_HOOK},
        {"position", required_argument, 0, O_POS},  {"task", required_argument, 0, O_TASK},
        {"C", required_argument, 0, O_C},           {"alpha", required_argument, 0, O_ALPHA},
        {"folds", required_argument, 0, O_FOLDS},   {"bootstrap", required_argument, 0, O_BOOT},
        {"ci", required_argument, 0, O_CI},         {"shuffles", required_argument, 0, O_SHUF},
        {"no-standardize", no_argument, 0, O_NOSTD}, {"seed", required_argument, 0, O_SEED},
        {"max-iter", required_argument, 0, O_MAXIT}, {"chart", required_argument, 0, O_CHART},
        {"output", required_argument, 0, 'o'},      {"overwrite", no_argument, 0, O_OVER},
        {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->hooks = "blocks.*.hook_resid_post";
    a->position = "last";
    a->task = "logistic";
    a->chart = "png";
    ks_probe_options_default(&a->po);
    a->po.seed = 0;
    optind = 1;
    opterr = 0;
    int c;
    long v;
    double x;
    while ((c = getopt_long(argc, argv, "o:qh", opts, NULL)) != -1) {
        switch (c) {
        case O_LABELS: a->labels_path = optarg; break;
        case O_HOOK: a->hooks = optarg; break;
        case O_POS: a->position = optarg; break;
        case O_TASK:
            if (strcmp(optarg, "logistic") && strcmp(optarg, "ridge"))
                return usage("--task: '%s' is not logistic or ridge", optarg);
            a->task = optarg;
            break;
        case O_C:
            if (!parse_double(optarg, &x) || x <= 0) return usage("--C: '%s' is not a number > 0", optarg);
            a->po.C = x;
            break;
        case O_ALPHA:
            if (!parse_double(optarg, &x) || x < 0) return usage("--alpha: '%s' is not a number >= 0", optarg);
            a->po.alpha = x;
            break;
        case O_FOLDS:
            if (!cli_parse_int(optarg, 2, 1000, &v)) return usage("--folds: '%s' is not a count 2..1000", optarg);
            a->po.folds = (int)v;
            break;
        case O_BOOT:
            if (!cli_parse_int(optarg, 0, 1000000, &v)) return usage("--bootstrap: '%s' is not a count", optarg);
            a->po.n_bootstrap = (int)v;
            break;
        case O_CI:
            if (!parse_double(optarg, &x) || x <= 0 || x >= 1) return usage("--ci: '%s' is not in (0, 1)", optarg);
            a->po.ci_level = x;
            break;
        case O_SHUF:
            if (!cli_parse_int(optarg, 0, 10000, &v)) return usage("--shuffles: '%s' is not a count", optarg);
            a->po.n_shuffles = (int)v;
            break;
        case O_NOSTD: a->po.standardize = false; break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return usage("--seed: '%s' is not an unsigned integer", optarg);
            a->po.seed = s;
            break;
        }
        case O_MAXIT:
            if (!cli_parse_int(optarg, 1, 10000000, &v)) return usage("--max-iter: '%s' is not a count", optarg);
            a->po.max_iter = (int)v;
            break;
        case O_CHART:
            if (strcmp(optarg, "png") && strcmp(optarg, "svg") && strcmp(optarg, "pdf") && strcmp(optarg, "none"))
                return usage("--chart: '%s' is not png, svg, pdf or none", optarg);
            a->chart = optarg;
            break;
        case 'o': a->out = optarg; break;
        case O_OVER: a->overwrite = true; break;
        case 'q': a->quiet = true; break;
        case 'h': fputs(help_probe, stdout); return 0;
        default:
            if (optopt) {
                char s[2] = {(char)optopt, 0};
                return usage("unknown or incomplete option '-%s'", s);
            }
            return usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) a->dump_path = argv[optind++];
    if (optind < argc) return usage("unexpected argument '%s'", argv[optind]);
    if (!a->dump_path) return usage("%s", "no DUMP.h5 given");
    if (!a->labels_path) return usage("%s", "--labels FILE is required");
    if (!a->out) return usage("%s", "-o RESULTS.h5 is required");
    a->po.kind = strcmp(a->task, "ridge") ? KS_PROBE_LOGISTIC : KS_PROBE_RIDGE;
    return -1;
}

static int fail(const ks_error *e) {
    fprintf(stderr, "koalascope " CMD ": error: %s\n", e->msg[0] ? e->msg : ks_status_str(e->code));
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------ label → rows */

typedef struct {
    sel_row *v;
    size_t n, cap;
} rows_t;

static bool rows_push(rows_t *r, sel_row s) {
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 256;
        sel_row *nv = realloc(r->v, nc * sizeof *nv);
        if (!nv) return false;
        r->v = nv;
        r->cap = nc;
    }
    r->v[r->n++] = s;
    return true;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_row(const void *a, const void *b) {
    const sel_row *x = a, *y = b;
    if (x->prompt != y->prompt) return x->prompt < y->prompt ? -1 : 1;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return (x->line > y->line) - (x->line < y->line);
}

typedef struct {
    char **names;   /* class names, sorted */
    int n;
    bool numeric;
} classes_t;

static int cmp_num(const void *a, const void *b) {
    double x = strtod(*(const char *const *)a, NULL), y = strtod(*(const char *const *)b, NULL);
    return (x > y) - (x < y);
}

/* Distinct label texts, sorted (numerically when all are numbers). */
static int make_classes(const ks_labels *L, classes_t *c) {
    char **all = malloc(sizeof(char *) * L->n);
    if (!all) return usage("%s", "out of memory");
    for (size_t i = 0; i < L->n; i++) all[i] = L->v[i].label;
    qsort(all, L->n, sizeof *all, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < L->n; i++)
        if (!k || strcmp(all[k - 1], all[i])) all[k++] = all[i];
    c->numeric = L->all_numeric;
    if (c->numeric) qsort(all, k, sizeof *all, cmp_num);
    c->names = all;
    c->n = (int)k;
    return -1;
}

static int class_of(const classes_t *c, const char *label) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->names[i], label)) return i;
    return -1;
}

/* Which rows of prompt p a label selects (positions pos[0..n_rows), input tokens n_in). */
typedef struct {
    ks_dump *d;
    int64_t p;
    ks_dump_prompt info;
    int32_t *pos, *ids;
    char **strs;   /* token strings, read on demand */
} prompt_ctx;

static void prompt_ctx_free(prompt_ctx *pc) {
    free(pc->pos);
    free(pc->ids);
    if (pc->strs) ks_dump_strings_free(pc->strs, pc->info.n_tokens);
    memset(pc, 0, sizeof *pc);
}

static ks_status prompt_ctx_load(ks_dump *d, int64_t p, prompt_ctx *pc, ks_error *err) {
    prompt_ctx_free(pc);
    pc->d = d;
    pc->p = p;
    ks_status st = ks_dump_prompt_info(d, p, &pc->info, err);
    if (st) return st;
    pc->pos = malloc(sizeof(int32_t) * (size_t)(pc->info.n_rows + 1));
    pc->ids = malloc(sizeof(int32_t) * (size_t)(pc->info.n_tokens + 1));
    if (!pc->pos || !pc->ids) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    st = ks_dump_read_positions(d, p, pc->pos, (size_t)pc->info.n_rows, err);
    if (!st) st = ks_dump_read_tokens(d, p, pc->ids, (size_t)pc->info.n_tokens, err);
    return st;
}

static int row_at(const prompt_ctx *pc, int64_t position) {
    for (int64_t r = 0; r < pc->info.n_rows; r++)
        if (pc->pos[r] == position) return (int)r;
    return -1;
}

/* Add the rows a label (or the default --position) selects; returns rows added, or -1 with
 * an error printed. */
static long select_rows(prompt_ctx *pc, const ks_label *lab, const char *defpos, const regex_t *defre,
                        const char *labels_path, sel_row proto, rows_t *out) {
    ks_error err = {0};
    int64_t n_in = pc->info.n_prompt_tokens;
    long added = 0;
    regex_t own;
    const regex_t *re = NULL;
    bool has_pos = lab->has_position;
    int64_t position = lab->position;
    if (lab->token_regex) {
        if (regcomp(&own, lab->token_regex, REG_EXTENDED | REG_NOSUB)) return -1; /* checked at load */
        re = &own;
    } else if (!has_pos) {
        if (!strcmp(defpos, "last")) has_pos = true, position = -1;
        else if (defre) re = defre;
        else if (strcmp(defpos, "all")) has_pos = true, position = strtoll(defpos, NULL, 10);
    }
    if (has_pos) {
        int64_t q = position < 0 ? n_in + position : position;
        int r = q >= 0 ? row_at(pc, q) : -1;
        if (r < 0) {
            fprintf(stderr, "koalascope " CMD ": error: %s: line %lld: prompt %lld has no recorded row "
                    "at position %lld (%lld input tokens, %lld rows recorded; record with "
                    "--positions all or last)\n", labels_path, (long long)lab->line, (long long)pc->p,
                    (long long)q, (long long)n_in, (long long)pc->info.n_rows);
            return -1;
        }
        proto.row = r;
        proto.token = pc->ids[pc->pos[r]];
        return rows_push(out, proto) ? 1 : -1;
    }
    if (re && !pc->strs && ks_dump_read_token_strings(pc->d, pc->p, &pc->strs, &err)) {
        if (lab->token_regex) regfree(&own);
        fprintf(stderr, "koalascope " CMD ": error: %s\n", err.msg);
        return -1;
    }
    for (int64_t r = 0; r < pc->info.n_rows; r++) {
        int32_t q = pc->pos[r];
        if (q >= n_in) continue; /* generated tokens are not labelled by prompt */
        if (re && regexec(re, pc->strs[q], 0, NULL, 0) != 0) continue;
        proto.row = (int32_t)r;
        proto.token = pc->ids[q];
        if (!rows_push(out, proto)) {
            added = -1;
            break;
        }
        added++;
    }
    if (lab->token_regex) regfree(&own);
    return added;
}

/* ------------------------------------------------------------------ output */

static const char *metric_name(const args *a, int n_classes) {
    (void)n_classes;
    return a->po.kind == KS_PROBE_RIDGE ? "R²" : "accuracy";
}

static int write_csv(const char *path, const args *a, const ks_probe_record *rec, int n, int n_classes) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "koalascope " CMD ": error: %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    (void)a;
    (void)n_classes;
    fputs("hook,layer,n_rows,n_groups,folds,accuracy,accuracy_lo,accuracy_hi,auroc,auroc_lo,auroc_hi,"
          "r2,r2_lo,r2_hi,majority,majority_lo,majority_hi,shuffled,shuffled_lo,shuffled_hi,control,"
          "control_lo,control_hi,selectivity,beats_controls\n", f);
    for (int h = 0; h < n; h++) {
        const ks_probe_record *r = &rec[h];
        fprintf(f, "%s,%d,%lld,%lld,%d", r->hook, r->layer, (long long)r->n_rows, (long long)r->n_groups,
                r->folds);
        const ks_ci *m[6] = {&r->accuracy, &r->auroc, &r->r2, &r->majority, &r->shuffled, &r->control};
        for (int k = 0; k < 6; k++) {
            double v[3] = {m[k]->value, m[k]->lo, m[k]->hi};
            for (int j = 0; j < 3; j++) {
                if (isnan(v[j])) fputs(",", f);
                else fprintf(f, ",%.9g", v[j]);
            }
        }
        if (isnan(r->selectivity)) fputs(",", f);
        else fprintf(f, ",%.9g", r->selectivity);
        fprintf(f, ",%d\n", r->beats_controls);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "koalascope " CMD ": error: %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    return -1;
}

static int write_chart(const char *path, const args *a, const ks_probe_record *rec, int n,
                       int n_classes) {
    double *x = malloc(sizeof(double) * (size_t)n * 12);
    if (!x) return usage("%s", "out of memory");
    double *y = x + n, *lo = y + n, *hi = lo + n, *mj = hi + n, *sh = mj + n, *shl = sh + n,
           *shh = shl + n, *ct = shh + n, *ctl = ct + n, *cth = ctl + n;
    bool layers = true;
    for (int h = 0; h < n; h++)
        if (rec[h].layer < 0) layers = false;
    bool ridge = a->po.kind == KS_PROBE_RIDGE;
    bool any_control = false;
    for (int h = 0; h < n; h++) {
        const ks_probe_record *r = &rec[h];
        const ks_ci *m = ridge ? &r->r2 : &r->accuracy;
        x[h] = layers ? r->layer : h;
        y[h] = m->value;
        lo[h] = m->lo;
        hi[h] = m->hi;
        mj[h] = r->majority.value;
        sh[h] = r->shuffled.value;
        shl[h] = r->shuffled.lo;
        shh[h] = r->shuffled.hi;
        ct[h] = r->control.value;
        ctl[h] = r->control.lo;
        cth[h] = r->control.hi;
        if (!isnan(ct[h])) any_control = true;
    }
    ks_plot_series s[4] = {
        {.label = ridge ? "probe R²" : "probe accuracy", .x = x, .y = y, .lo = lo, .hi = hi, .n = n, .markers = true},
        {.label = ridge ? "mean baseline" : "majority class", .x = x, .y = mj, .n = n, .dashed = true},
        {.label = "shuffled labels", .x = x, .y = sh, .lo = shl, .hi = shh, .n = n, .dashed = true},
        {.label = "control task", .x = x, .y = ct, .lo = ctl, .hi = cth, .n = n, .dashed = true},
    };
    ks_plot_color(5, s[0].rgb);
    s[1].rgb[0] = s[1].rgb[1] = s[1].rgb[2] = 0.45;
    ks_plot_color(1, s[2].rgb);
    ks_plot_color(3, s[3].rgb);
    char title[256], sub[512];
    const char *base = strrchr(a->labels_path, '/');
    snprintf(title, sizeof title, "Linear probe: %s by %s", metric_name(a, n_classes), layers ? "layer" : "hook");
    snprintf(sub, sizeof sub, "labels %s, %s, %d-fold CV over prompts, %g%% CIs", base ? base + 1 : a->labels_path,
             a->hooks, rec[0].folds, a->po.ci_level * 100);
    ks_plot p = {.title = title, .subtitle = sub, .xlabel = layers ? "layer" : "hook (index)",
                 .ylabel = metric_name(a, n_classes), .ymin = ridge ? NAN : 0, .ymax = ridge ? NAN : 1.0,
                 .integer_x = true, .series = s, .n_series = any_control ? 4 : 3};
    ks_error err = {0};
    ks_status st = ks_plot_save(&p, path, 720, 420, &err);
    free(x);
    return st ? fail(&err) : -1;
}

/* ------------------------------------------------------------------ the command */

int cmd_probe(int argc, char **argv) {
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    ks_error err = {0};
    ks_labels L = {0};
    ks_dump *d = NULL;
    classes_t cls = {0};
    rows_t rows = {0};
    prompt_ctx pc = {0};
    regex_t defre;
    bool have_defre = false;
    char *sha = NULL, *stem = NULL, *csv_path = NULL, *chart_path = NULL, *svg_path = NULL, *cmdline = NULL;
    bool *sel = NULL;
    float *X = NULL, *buf = NULL;
    int32_t *y = NULL, *grp = NULL, *tok = NULL;
    double *tgt = NULL;
    ks_probe_record *rec = NULL;
    ks_probe_result *res = NULL;
    double **dms = NULL;
    int n_rec = 0;
    rc = EXIT_USAGE;

    /* the default position */
    if (!strncmp(a.position, "re:", 3)) {
        char why[96];
        if (!ks_labels_regex_ok(a.position + 3, why, sizeof why))
            return usage("--position: regex '%s' refused: %s", a.position + 3, why);
        int e = regcomp(&defre, a.position + 3, REG_EXTENDED | REG_NOSUB);
        if (e) {
            char m[160];
            regerror(e, &defre, m, sizeof m);
            return usage("--position: bad regex '%s': %s", a.position + 3, m);
        }
        have_defre = true;
    } else if (strcmp(a.position, "last") && strcmp(a.position, "all")) {
        long v;
        if (!cli_parse_int(a.position, -(1L << 30), 1L << 30, &v))
            return usage("--position: '%s' is not last, all, an index or re:REGEX", a.position);
    }
    if (access(a.out, F_OK) == 0 && !a.overwrite) {
        usage("%s exists (--overwrite to replace it)", a.out);
        goto done;
    }
    if (ks_labels_load(a.labels_path, &L, &err)) {
        fail(&err);
        goto done;
    }
    if (ks_dump_open(a.dump_path, &d, &err)) {
        fail(&err);
        goto done;
    }
    if (!ks_dump_complete(d) && !a.quiet)
        fprintf(stderr, "koalascope " CMD ": warning: %s is not complete; probing its %lld committed prompts\n",
                a.dump_path, (long long)ks_dump_n_prompts(d));
    bool ridge = a.po.kind == KS_PROBE_RIDGE;
    if (ridge && !L.all_numeric) {
        for (size_t i = 0; i < L.n; i++)
            if (isnan(L.v[i].value)) {
                fprintf(stderr, "koalascope " CMD ": error: %s: line %lld: field 'label': '%s' is not a "
                        "number (--task ridge needs numeric labels)\n", a.labels_path,
                        (long long)L.v[i].line, L.v[i].label);
                goto done;
            }
    }
    if (!ridge && (rc = make_classes(&L, &cls)) >= 0) goto done;
    rc = EXIT_USAGE;
    if (!ridge && cls.n < 2) {
        fprintf(stderr, "koalascope " CMD ": error: %s: every label is '%s': a probe needs two classes "
                "at least\n", a.labels_path, cls.n ? cls.names[0] : "");
        goto done;
    }
    if (!ridge && cls.n > 1000) {
        fprintf(stderr, "koalascope " CMD ": error: %s: %d distinct labels; for numeric targets use "
                "--task ridge\n", a.labels_path, cls.n);
        goto done;
    }

    /* resolve prompts: index or id */
    int64_t P = ks_dump_n_prompts(d);
    char **ids = NULL;
    bool need_ids = false;
    for (size_t i = 0; i < L.n; i++) need_ids |= L.v[i].prompt_id != NULL;
    int32_t *lab_prompt = malloc(sizeof(int32_t) * L.n);
    if (!lab_prompt) goto done;
    if (need_ids) {
        ids = calloc((size_t)(P ? P : 1), sizeof(char *));
        for (int64_t p = 0; ids && p < P; p++)
            if (ks_dump_prompt_id(d, p, &ids[p], &err)) {
                fail(&err);
                break;
            }
    }
    bool bad = need_ids && (!ids || err.code);
    for (size_t i = 0; i < L.n && !bad; i++) {
        const ks_label *l = &L.v[i];
        int64_t p = l->prompt_index;
        if (l->prompt_id) {
            p = -1;
            for (int64_t q = 0; q < P; q++)
                if (ids[q] && !strcmp(ids[q], l->prompt_id)) {
                    p = q;
                    break;
                }
            if (p < 0) {
                fprintf(stderr, "koalascope " CMD ": error: %s: line %lld: no prompt with id '%s' in %s\n",
                        a.labels_path, (long long)l->line, l->prompt_id, a.dump_path);
                bad = true;
            }
        } else if (p >= P) {
            fprintf(stderr, "koalascope " CMD ": error: %s: line %lld: prompt %lld, but %s holds %lld prompts\n",
                    a.labels_path, (long long)l->line, (long long)p, a.dump_path, (long long)P);
            bad = true;
        }
        lab_prompt[i] = (int32_t)p;
    }
    if (ids)
        for (int64_t p = 0; p < P; p++) free(ids[p]);
    free(ids);
    if (bad) {
        free(lab_prompt);
        goto done;
    }
    /* labels → rows, prompt by prompt */
    size_t *order = malloc(sizeof(size_t) * L.n);
    for (size_t i = 0; order && i < L.n; i++) order[i] = i;
    for (size_t i = 1; order && i < L.n; i++) { /* insertion sort by prompt, stable */
        size_t k = order[i], j = i;
        while (j > 0 && lab_prompt[order[j - 1]] > lab_prompt[k]) order[j] = order[j - 1], j--;
        order[j] = k;
    }
    long n_empty = 0;
    for (size_t oi = 0; order && oi < L.n && !bad; oi++) {
        size_t i = order[oi];
        const ks_label *l = &L.v[i];
        if (pc.p != lab_prompt[i] || !pc.pos) {
            if (prompt_ctx_load(d, lab_prompt[i], &pc, &err)) {
                fail(&err);
                bad = true;
                break;
            }
        }
        sel_row proto = {.prompt = lab_prompt[i], .line = l->line, .target = l->value,
                         .cls = ridge ? 0 : class_of(&cls, l->label)};
        long k = select_rows(&pc, l, a.position, have_defre ? &defre : NULL, a.labels_path, proto, &rows);
        if (k < 0) bad = true;
        else if (k == 0) n_empty++;
    }
    free(order);
    free(lab_prompt);
    prompt_ctx_free(&pc);
    if (bad) goto done;
    if (n_empty && !a.quiet)
        fprintf(stderr, "koalascope " CMD ": warning: %ld label lines selected no row (no token matched)\n", n_empty);
    /* duplicates: the same row labelled twice */
    qsort(rows.v, rows.n, sizeof *rows.v, cmp_row);
    size_t w = 0;
    for (size_t i = 0; i < rows.n; i++) {
        if (w && rows.v[w - 1].prompt == rows.v[i].prompt && rows.v[w - 1].row == rows.v[i].row) {
            bool same = ridge ? rows.v[w - 1].target == rows.v[i].target : rows.v[w - 1].cls == rows.v[i].cls;
            if (!same) {
                fprintf(stderr, "koalascope " CMD ": error: %s: lines %lld and %lld give different labels "
                        "to the same token (prompt %d, row %d)\n", a.labels_path,
                        (long long)rows.v[w - 1].line, (long long)rows.v[i].line, rows.v[i].prompt,
                        rows.v[i].row);
                goto done;
            }
            continue;
        }
        rows.v[w++] = rows.v[i];
    }
    rows.n = w;
    if (rows.n < 2) {
        fprintf(stderr, "koalascope " CMD ": error: the labels select %zu row(s) of %s: nothing to probe\n",
                rows.n, a.dump_path);
        goto done;
    }

    /* hooks */
    const ks_config *cfg = ks_dump_config(d);
    size_t nslot = (size_t)KS_HOOK_COUNT * (size_t)(cfg->n_layers + 1);
    sel = calloc(nslot, 1);
    if (!sel) goto done;
    if (ks_select_hooks(a.hooks, cfg, sel, &err)) {
        fprintf(stderr, "koalascope " CMD ": error: --hook: %s\n", err.msg);
        goto done;
    }
    int H = 0;
    const ks_dump_hook **hk = malloc(sizeof(*hk) * (size_t)(ks_dump_n_hooks(d) + 1));
    if (!hk) goto done;
    for (int i = 0; i < ks_dump_n_hooks(d); i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        size_t idx = (size_t)h->point * (size_t)(cfg->n_layers + 1) + (size_t)(h->layer + 1);
        if (h->kind == KS_DUMP_KIND_TOKEN && sel[idx]) hk[H++] = h;
    }
    if (!H) {
        fprintf(stderr, "koalascope " CMD ": error: --hook '%s' matches no per-token hook recorded in %s "
                "(see koalascope dump-info)\n", a.hooks, a.dump_path);
        free(hk);
        goto done;
    }

    /* data arrays shared by every hook */
    int64_t n = (int64_t)rows.n;
    y = malloc(sizeof(int32_t) * rows.n);
    grp = malloc(sizeof(int32_t) * rows.n);
    tok = malloc(sizeof(int32_t) * rows.n);
    tgt = malloc(sizeof(double) * rows.n);
    rec = calloc((size_t)H, sizeof *rec);
    res = calloc((size_t)H, sizeof *res);
    dms = calloc((size_t)H, sizeof *dms);
    if (!y || !grp || !tok || !tgt || !rec || !res || !dms) {
        free(hk);
        goto done;
    }
    int64_t n_groups = 0;
    for (size_t i = 0; i < rows.n; i++) {
        y[i] = rows.v[i].cls;
        grp[i] = rows.v[i].prompt;
        tok[i] = rows.v[i].token;
        tgt[i] = rows.v[i].target;
        if (!i || rows.v[i].prompt != rows.v[i - 1].prompt) n_groups++;
    }
    if (!a.quiet)
        fprintf(stderr, "probe: %lld rows from %lld prompts, %d hooks, %s%s\n", (long long)n,
                (long long)n_groups, H, ridge ? "ridge regression" : "logistic regression, classes:",
                ridge ? "" : "");
    if (!a.quiet && !ridge) {
        for (int k = 0; k < cls.n && k < 12; k++) {
            long cnt = 0;
            for (size_t i = 0; i < rows.n; i++) cnt += y[i] == k;
            fprintf(stderr, "  %s (%ld)\n", cls.names[k], cnt);
        }
        if (cls.n > 12) fprintf(stderr, "  … %d more\n", cls.n - 12);
    }
    bool binary = !ridge && cls.n == 2;
    printf("hook\tlayer\tn\t%s\tlo\thi\tmajority\tshuffled\tcontrol\tselectivity\tbeats_controls\n",
           ridge ? "r2" : "accuracy");
    for (int h = 0; h < H; h++) {
        const ks_dump_hook *hp = hk[h];
        int64_t D = hp->row_elems;
        float *nx = realloc(X, sizeof(float) * (size_t)(n * D));
        if (!nx) {
            fprintf(stderr, "koalascope " CMD ": error: out of memory for %lld × %lld activations of %s\n",
                    (long long)n, (long long)D, hp->name);
            free(hk);
            goto done;
        }
        X = nx;
        /* read prompt by prompt, keep the selected rows */
        size_t i = 0;
        while (i < rows.n) {
            int32_t p = rows.v[i].prompt;
            ks_dump_prompt info;
            if (ks_dump_prompt_info(d, p, &info, &err)) {
                fail(&err);
                free(hk);
                goto done;
            }
            float *nb = realloc(buf, sizeof(float) * (size_t)(info.n_rows * D + 1));
            if (!nb) {
                free(hk);
                goto done;
            }
            buf = nb;
            if (ks_dump_read_rows(d, hp, p, p + 1, buf, (size_t)(info.n_rows * D), &err)) {
                fail(&err);
                free(hk);
                goto done;
            }
            for (; i < rows.n && rows.v[i].prompt == p; i++)
                memcpy(X + (size_t)i * (size_t)D, buf + (size_t)rows.v[i].row * (size_t)D, sizeof(float) * (size_t)D);
        }
        ks_probe_data pd = {.X = X, .n = n, .d = (int)D, .y = ridge ? NULL : y, .target = ridge ? tgt : NULL,
                            .n_classes = ridge ? 0 : cls.n, .group = grp, .token = tok};
        if (ks_probe_run(&pd, &a.po, &res[h], &err)) {
            fprintf(stderr, "koalascope " CMD ": error: %s: %s\n", hp->name, err.msg);
            free(hk);
            goto done;
        }
        n_rec = h + 1;
        if (binary) {
            dms[h] = malloc(sizeof(double) * (size_t)D);
            if (!dms[h] || ks_probe_diff_means(&pd, dms[h], &err)) {
                fprintf(stderr, "koalascope " CMD ": error: %s: %s\n", hp->name, err.msg[0] ? err.msg : "out of memory");
                free(hk);
                goto done;
            }
        }
        const ks_probe_result *r = &res[h];
        ks_probe_record *o = &rec[h];
        *o = (ks_probe_record){.hook = hp->name, .layer = hp->layer, .n_rows = n, .n_groups = n_groups,
                               .folds = r->folds_used, .selectivity = r->selectivity,
                               .beats_controls = r->beats_controls, .d = r->full.d, .n_out = r->full.n_out,
                               .coef = r->full.coef, .intercept = r->full.intercept, .mean = r->full.mean,
                               .scale = r->full.scale, .diff_means = dms[h], .iterations = r->full.iterations,
                               .converged = r->full.converged};
        const ks_probe_metric *src[6] = {&r->accuracy, &r->auroc, &r->r2, &r->majority, &r->shuffled, &r->control};
        ks_ci *dst[6] = {&o->accuracy, &o->auroc, &o->r2, &o->majority, &o->shuffled, &o->control};
        for (int k = 0; k < 6; k++) *dst[k] = (ks_ci){src[k]->value, src[k]->lo, src[k]->hi};
        const ks_ci *m = ridge ? &o->r2 : &o->accuracy;
        printf("%s\t%d\t%lld\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\t%.4f\t%s\n", hp->name, hp->layer, (long long)n,
               m->value, m->lo, m->hi, o->majority.value, o->shuffled.value, o->control.value, o->selectivity,
               o->beats_controls ? "yes" : "no");
        fflush(stdout);
        if (!a.quiet) {
            fprintf(stderr, "[probe %d/%d] %s: %s %.3f [%.3f, %.3f]%s%s\n", h + 1, H, hp->name,
                    ridge ? "R²" : "accuracy", m->value, m->lo, m->hi, o->beats_controls ? "" : "  (does not beat its controls)",
                    r->full.converged ? "" : "  (L-BFGS did not converge: raise --max-iter)");
        }
    }
    free(hk);

    /* outputs */
    size_t ol = strlen(a.out);
    stem = strdup(a.out);
    if (!stem) goto done;
    if (ol > 3 && !strcmp(a.out + ol - 3, ".h5")) stem[ol - 3] = 0;
    else if (ol > 5 && !strcmp(a.out + ol - 5, ".hdf5")) stem[ol - 5] = 0;
    size_t sl = strlen(stem) + 8;
    csv_path = malloc(sl);
    chart_path = malloc(sl);
    svg_path = malloc(sl);
    if (!csv_path || !chart_path || !svg_path) goto done;
    snprintf(csv_path, sl, "%s.csv", stem);
    snprintf(chart_path, sl, "%s.%s", stem, a.chart);
    snprintf(svg_path, sl, "%s.svg", stem);
    {
        char hex[65];
        ks_error e2 = {0};
        sha = ks_sha256_file(a.labels_path, hex, &e2) ? NULL : strdup(hex);
    }
    {
        size_t cl = 1;
        for (int i = 0; i < argc; i++) cl += strlen(argv[i]) + 1;
        cmdline = malloc(cl + 16);
        if (cmdline) {
            strcpy(cmdline, "koalascope");
            for (int i = 0; i < argc; i++) strcat(strcat(cmdline, " "), argv[i]);
        }
    }
    ks_probe_results out = {.task = a.task, .dump_path = a.dump_path, .labels_path = a.labels_path,
                            .labels_sha256 = sha, .position = a.position, .command_line = cmdline,
                            .model_fingerprint = ks_dump_attr(d, "model_sha256"),
                            .n_classes = ridge ? 0 : cls.n, .classes = (const char *const *)cls.names,
                            .C = a.po.C, .alpha = a.po.alpha, .ci_level = a.po.ci_level, .folds = a.po.folds,
                            .n_bootstrap = a.po.n_bootstrap, .n_shuffles = a.po.n_shuffles, .seed = a.po.seed,
                            .standardize = a.po.standardize, .hooks = rec, .n_hooks = n_rec};
    if (ks_probe_results_write(a.out, &out, a.overwrite, &err)) {
        fail(&err);
        goto done;
    }
    if ((rc = write_csv(csv_path, &a, rec, n_rec, cls.n)) >= 0) goto done;
    if (strcmp(a.chart, "none")) {
        if ((rc = write_chart(chart_path, &a, rec, n_rec, cls.n)) >= 0) goto done;
        if (!strcmp(a.chart, "png") && (rc = write_chart(svg_path, &a, rec, n_rec, cls.n)) >= 0) goto done;
    }
    if (!a.quiet)
        fprintf(stderr, "probe: wrote %s, %s%s%s\n", a.out, csv_path, strcmp(a.chart, "none") ? ", " : "",
                strcmp(a.chart, "none") ? chart_path : "");
    rc = 0;
done:
    if (have_defre) regfree(&defre);
    for (int h = 0; res && h < n_rec; h++) ks_probe_result_free(&res[h]);
    for (int h = 0; dms && h < n_rec; h++) free(dms[h]);
    free(dms);
    free(res);
    free(rec);
    free(X);
    free(buf);
    free(y);
    free(grp);
    free(tok);
    free(tgt);
    free(sel);
    free(rows.v);
    free(cls.names);
    free(sha);
    free(stem);
    free(csv_path);
    free(chart_path);
    free(svg_path);
    free(cmdline);
    ks_dump_close(d);
    ks_labels_free(&L);
    return rc;
}
