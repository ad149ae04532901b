/* render.c — koalascope render: any view of the viewer drawn into a PNG, SVG or PDF with no
 * display, by the same gui/ functions the viewer's window uses (gui/ks_views.h). One view per
 * call; errors name the flag, the file or the `record --hooks` that would provide what is
 * missing, and leave no output file. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ks_dump.h"
#include "ks_views.h"

static const char *help_render =
    "Usage: koalascope render FILE --view VIEW [options] -o OUT.png|svg|pdf\n"
    "Draw one view of the viewer (koalascope view) into a file, with no display.\n"
    "FILE is a dump, an attribution file, probe results (koalascope probe -o) or audit\n"
    "results (results.h5 or its directory). Views:\n"
    "  token           the prompt's tokens coloured by log p(token) (dump with /logits)\n"
    "  attention-grid  every recorded layer x head map of the prompt, small\n"
    "  head            one head zoomed, token labels on both axes (--layer, --head)\n"
    "  attention       as head; with --from-token T / --to-token T: that row / column as bars\n"
    "  residual        per-layer norms of the residual stream\n"
    "  lens            the logit lens table (layers x positions; needs the model)\n"
    "  attribution     an attribution result: bars per token, or a [layer, x] map\n"
    "  probe           probe metric per layer with CI bands and controls\n"
    "  audit           an audit's metric per category with CIs\n"
    "  audit-items     an audit's items as a table\n"
    "  compare         FILE against --other DUMP2: one head side by side with A - B (with\n"
    "                  --layer/--head), else the residual norms per layer and A - B\n"
    "Options:\n"
    "  --prompt P            prompt of the dump (default 0)\n"
    "  --layer L, --head H   the head (default 0, 0)\n"
    "  --from-token T | --to-token T   attention from / to token T\n"
    "  --rows A:B --cols A:B the window of a map in tokens (default: all)\n"
    "  --position P          residual: the position drawn as a line (default: last)\n"
    "  --other DUMP2         the second dump of compare\n"
    "  --model MODEL         lens: the model (default: the dump's model_path); --tokenizer FILE\n"
    "  --name NAME           attribution: which /attributions result (default: the first)\n"
    "  --audit NAME, --metric M   audit: which audit and metric (default: first, headline);\n"
    "                        probe: --metric accuracy|auroc|r2\n"
    "  --width W --height H  size in pixels / points (default 900 x 700)\n"
    "  --scale S             PNG pixels per unit (default 1)\n"
    "  -o, --output OUT      .png, .svg or .pdf\n";

enum {
    R_VIEW = 600, R_PROMPT, R_LAYER, R_HEAD, R_FROM, R_TO, R_ROWS, R_COLS, R_OTHER, R_WIDTH, R_HEIGHT,
    R_MODEL, R_TOK, R_NAME, R_AUDIT, R_METRIC, R_POS, R_SCALE, R_HELP
};

#define usage(...) cli_usage("render", __VA_ARGS__)

static int fail(const ks_error *e) {
    fprintf(stderr, "koalascope render: error: %s\n", e->msg);
    return EXIT_USAGE;
}

static bool parse_range(const char *s, double *a, double *b) {
    char *e;
    long x = strtol(s, &e, 10);
    if (e == s || *e != ':' || x < 0) return false;
    const char *t = e + 1;
    long y = strtol(t, &e, 10);
    if (e == t || *e || y <= x) return false;
    *a = (double)x;
    *b = (double)y;
    return true;
}

/* adapters from the draw functions with extra arguments to ks_view_draw_fn */
typedef struct {
    const ks_heatmap *map;
    const char *const *tokens;
    int layer, head;
    ks_attn_direction dir;
    int64_t t;
} token_attn;

static ks_status draw_token_attn(cairo_t *cr, const void *v, double w, double h, ks_view_geom *g, ks_error *e) {
    const token_attn *a = v;
    return ks_attention_token_draw(cr, a->map, a->tokens, a->layer, a->head, a->dir, a->t, 0, 0, w, h, g, e);
}
#define ADAPT(fn, T)                                                                                        \
    static ks_status fn##_v(cairo_t *cr, const void *v, double w, double h, ks_view_geom *g, ks_error *e) { \
        return fn(cr, (const T *)v, w, h, g, e);                                                            \
    }
ADAPT(ks_token_strip_draw, ks_token_strip)
ADAPT(ks_attention_grid_draw, ks_attention_grid)
ADAPT(ks_attention_head_draw, ks_attention_head)
ADAPT(ks_heatmap_view_draw, ks_heatmap_view)
ADAPT(ks_token_bars_draw, ks_token_bars)
ADAPT(ks_residual_norms_draw, ks_residual_norms)
ADAPT(ks_lens_table_draw, ks_lens_table)
ADAPT(ks_probe_curves_draw, ks_probe_curves)
ADAPT(ks_audit_scores_draw, ks_forest)
ADAPT(ks_table_draw, ks_table)
ADAPT(ks_compare_maps_draw, ks_compare_maps)
ADAPT(ks_compare_curves_draw, ks_compare_curves)

static const char *const views[] = {"token", "attention-grid", "head", "attention", "residual", "lens",
                                    "attribution", "probe", "audit", "audit-items", "compare"};

/* which file kind a view needs */
static ks_view_file_kind needs(const char *view) {
    if (!strcmp(view, "attribution")) return KS_VIEW_FILE_ATTRIBUTIONS;
    if (!strcmp(view, "probe")) return KS_VIEW_FILE_PROBE;
    if (!strcmp(view, "audit") || !strcmp(view, "audit-items")) return KS_VIEW_FILE_AUDIT;
    return KS_VIEW_FILE_DUMP;
}

int cmd_render(int argc, char **argv) {
    static const struct option opts[] = {
        {"view", required_argument, 0, R_VIEW},     {"prompt", required_argument, 0, R_PROMPT},
        {"layer", required_argument, 0, R_LAYER},   {"head", required_argument, 0, R_HEAD},
        {"from-token", required_argument, 0, R_FROM}, {"to-token", required_argument, 0, R_TO},
        {"rows", required_argument, 0, R_ROWS},     {"cols", required_argument, 0, R_COLS},
        {"other", required_argument, 0, R_OTHER},   {"width", required_argument, 0, R_WIDTH},
        {"height", required_argument, 0, R_HEIGHT}, {"model", required_argument, 0, R_MODEL},
        {"tokenizer", required_argument, 0, R_TOK}, {"name", required_argument, 0, R_NAME},
        {"audit", required_argument, 0, R_AUDIT},   {"metric", required_argument, 0, R_METRIC},
        {"position", required_argument, 0, R_POS},  {"scale", required_argument, 0, R_SCALE},
        {"output", required_argument, 0, 'o'},      {"help", no_argument, 0, R_HELP},
        {0, 0, 0, 0}};
    const char *view = NULL, *other = NULL, *out = NULL, *model = NULL, *tokp = NULL, *name = NULL, *audit = NULL,
               *metric = NULL;
    long prompt = 0, layer = 0, head = 0, from = -1, to = -1, width = 900, height = 700, pos = -1, scale = 1;
    double r0 = 0, r1 = 0, c0 = 0, c1 = 0;
    bool have_lh = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case R_VIEW: view = optarg; break;
        case R_PROMPT:
            if (!cli_parse_int(optarg, 0, 1L << 40, &prompt)) return usage("--prompt: '%s' is not an index", optarg);
            break;
        case R_LAYER:
            if (!cli_parse_int(optarg, 0, 1 << 20, &layer)) return usage("--layer: '%s' is not an index", optarg);
            have_lh = true;
            break;
        case R_HEAD:
            if (!cli_parse_int(optarg, 0, 1 << 20, &head)) return usage("--head: '%s' is not an index", optarg);
            have_lh = true;
            break;
        case R_FROM:
            if (!cli_parse_int(optarg, 0, 1L << 40, &from)) return usage("--from-token: '%s' is not an index", optarg);
            break;
        case R_TO:
            if (!cli_parse_int(optarg, 0, 1L << 40, &to)) return usage("--to-token: '%s' is not an index", optarg);
            break;
        case R_ROWS:
            if (!parse_range(optarg, &r0, &r1)) return usage("--rows: '%s' is not A:B with 0 <= A < B", optarg);
            break;
        case R_COLS:
            if (!parse_range(optarg, &c0, &c1)) return usage("--cols: '%s' is not A:B with 0 <= A < B", optarg);
            break;
        case R_OTHER: other = optarg; break;
        case R_WIDTH:
            if (!cli_parse_int(optarg, 50, 16384, &width)) return usage("--width: '%s' is not 50..16384", optarg);
            break;
        case R_HEIGHT:
            if (!cli_parse_int(optarg, 50, 16384, &height)) return usage("--height: '%s' is not 50..16384", optarg);
            break;
        case R_SCALE:
            if (!cli_parse_int(optarg, 1, 4, &scale)) return usage("--scale: '%s' is not 1..4", optarg);
            break;
        case R_POS:
            if (!cli_parse_int(optarg, 0, 1L << 40, &pos)) return usage("--position: '%s' is not an index", optarg);
            break;
        case R_MODEL: model = optarg; break;
        case R_TOK: tokp = optarg; break;
        case R_NAME: name = optarg; break;
        case R_AUDIT: audit = optarg; break;
        case R_METRIC: metric = optarg; break;
        case 'o': out = optarg; break;
        case R_HELP: fputs(help_render, stdout); return 0;
        default: return usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage("%s", "no FILE given (a dump, attribution, probe or audit results)");
    const char *path = argv[optind++];
    if (optind < argc) return usage("unexpected argument '%s'", argv[optind]);
    if (!view) return usage("%s", "no --view (token, attention-grid, head, attention, residual, lens, attribution, "
                                  "probe, audit, audit-items, compare)");
    bool known = false;
    for (size_t i = 0; i < sizeof views / sizeof *views; i++) known |= !strcmp(view, views[i]);
    if (!known)
        return usage("--view: unknown view '%s' (token, attention-grid, head, attention, residual, lens, attribution, "
                     "probe, audit, audit-items, compare)", view);
    if (!out) return usage("%s", "no -o OUT.png|svg|pdf");
    size_t ol = strlen(out);
    if (ol < 4 || (strcmp(out + ol - 4, ".png") && strcmp(out + ol - 4, ".svg") && strcmp(out + ol - 4, ".pdf")))
        return usage("-o: '%s' must end in .png, .svg or .pdf", out);
    if (from >= 0 && to >= 0) return usage("%s", "--from-token and --to-token exclude each other");
    if ((from >= 0 || to >= 0) && strcmp(view, "attention"))
        return usage("--%s-token goes with --view attention", from >= 0 ? "from" : "to");
    if (!strcmp(view, "compare") && !other) return usage("%s", "--view compare needs --other DUMP2");

    ks_error e = {0};
    ks_view_file_kind kind;
    char *file = NULL;
    if (ks_view_file_kind_detect(path, &kind, &file, &e)) return fail(&e);
    ks_view_file_kind want = needs(view);
    /* a dump may hold /attributions too */
    if (kind != want && !(want == KS_VIEW_FILE_ATTRIBUTIONS && kind == KS_VIEW_FILE_DUMP)) {
        fprintf(stderr, "koalascope render: error: %s is %s; --view %s needs %s%s\n", path, ks_view_file_kind_name(kind),
                view, want == KS_VIEW_FILE_DUMP ? "a dump (koalascope record)" : ks_view_file_kind_name(want),
                want == KS_VIEW_FILE_PROBE ? " (koalascope probe -o)" : want == KS_VIEW_FILE_AUDIT ? " (koalascope audit)" : "");
        free(file);
        return EXIT_USAGE;
    }
    int rc = EXIT_USAGE;
    ks_dump *d = NULL, *d2 = NULL;
    ks_model *m = NULL;
    ks_heatmap *map = NULL, *map2 = NULL, *diff = NULL;
    ks_view_prompt vp = {0};
    ks_attention_grid grid = {0};
    ks_residual_norms rn = {0}, rn2 = {0};
    ks_lens_table lt = {0};
    ks_view_attribution va = {0};
    ks_probe_curves pc = {0};
    ks_view_audit au = {0};
    char title[512];
    ks_status st = KS_OK;
    if (kind == KS_VIEW_FILE_DUMP && (st = ks_dump_open(file, &d, &e))) goto done;
    if (want == KS_VIEW_FILE_DUMP && (!strcmp(view, "token") || !strcmp(view, "head") || !strcmp(view, "attention") ||
                                      !strcmp(view, "compare") || !strcmp(view, "lens")))
        if ((st = ks_view_prompt_load(d, prompt, &vp, &e))) goto done;
    const char *const *toks = (const char *const *)vp.pieces;

    if (!strcmp(view, "token")) {
        /* surprisal, so that the tokens the model did not expect stand out dark */
        float *sur = malloc((size_t)(vp.n ? vp.n : 1) * sizeof *sur);
        if (!sur) {
            st = ks_error_set(&e, KS_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int64_t i = 0; i < vp.n; i++) sur[i] = -vp.logprob[i];
        ks_token_strip ts = {.pieces = toks, .values = vp.topk ? sur : NULL, .n = vp.n,
                             .cmap = KS_CMAP_SEQUENTIAL, .vmin = 0, .vmax = NAN, .highlight = -1};
        snprintf(title, sizeof title, "prompt %ld of %s: %lld tokens%s", prompt, path, (long long)vp.n,
                 vp.topk ? "" : " (no /logits recorded: uncoloured; record with --topk K)");
        ts.title = title;
        ts.value_label = vp.topk ? "surprisal −log p(token) (nats)" : NULL;
        st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_token_strip_draw_v, &ts, &e);
        free(sur);
    } else if (!strcmp(view, "attention-grid")) {
        if ((st = ks_view_attention_grid_load(d, prompt, 64, &grid, &e))) goto done;
        snprintf(title, sizeof title, "attention of prompt %ld of %s: layers x heads (rows: query, columns: key)",
                 prompt, path);
        grid.title = title;
        st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_attention_grid_draw_v, &grid, &e);
    } else if (!strcmp(view, "head") || !strcmp(view, "attention")) {
        if ((st = ks_view_attention_load(d, prompt, (int)layer, (int)head, &map, &e))) goto done;
        if (from >= 0 || to >= 0) {
            int64_t t = from >= 0 ? from : to;
            if (t >= vp.n) {
                st = ks_error_set(&e, KS_ERR_RANGE, "--%s-token %lld is outside the prompt's 0..%lld",
                                  from >= 0 ? "from" : "to", (long long)t, (long long)vp.n - 1);
                goto done;
            }
            token_attn ta = {map, toks, (int)layer, (int)head, from >= 0 ? KS_ATTN_FROM : KS_ATTN_TO, t};
            st = ks_view_save(out, (int)width, (int)height, (double)scale, draw_token_attn, &ta, &e);
        } else {
            ks_attention_head ah = {.map = map, .tokens = toks, .layer = (int)layer, .head = (int)head,
                                    .row0 = r0, .row1 = r1, .col0 = c0, .col1 = c1, .mark_row = -1, .mark_col = -1};
            st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_attention_head_draw_v, &ah, &e);
        }
    } else if (!strcmp(view, "residual")) {
        if ((st = ks_view_residual_load(d, prompt, pos, &rn, &e))) goto done;
        snprintf(title, sizeof title, "prompt %ld of %s", prompt, path);
        rn.subtitle = title;
        st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_residual_norms_draw_v, &rn, &e);
    } else if (!strcmp(view, "lens")) {
        const char *mp = model ? model : ks_dump_attr(d, "model_path");
        if (!mp || !*mp) {
            st = ks_error_set(&e, KS_ERR_ARG, "%s names no model: give --model MODEL (the lens needs its output matrix)",
                              path);
            goto done;
        }
        ks_model_options mo = {.tokenizer_path = tokp ? tokp : ks_dump_attr(d, "tokenizer_path")};
        if (mo.tokenizer_path && !*mo.tokenizer_path) mo.tokenizer_path = NULL;
        if ((st = ks_model_open(mp, &mo, &m, &e))) goto done;
        int64_t first = c1 > c0 ? (int64_t)c0 : 0, count = c1 > c0 ? (int64_t)(c1 - c0) : 0;
        if ((st = ks_view_lens_load(d, m, prompt, first, count, &lt, &e))) goto done;
        snprintf(title, sizeof title, "logit lens of prompt %ld of %s: top next token per layer and position", prompt,
                 path);
        lt.title = title;
        st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_lens_table_draw_v, &lt, &e);
    } else if (!strcmp(view, "attribution")) {
        if ((st = ks_view_attribution_load(file, name, &va, &e))) goto done;
        if (va.ndim == 1) {
            st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_token_bars_draw_v, &va.bars, &e);
        } else {
            snprintf(title, sizeof title, "%.120s (%.60s): %.300s", va.name, va.method, va.objective);
            ks_heatmap_view hv = {.map = va.map, .row_labels = (const char *const *)va.row_labels,
                                  .col_labels = (const char *const *)va.col_labels, .row0 = r0, .row1 = r1,
                                  .col0 = c0, .col1 = c1, .cmap = KS_CMAP_DIVERGING, .vmin = NAN, .vmax = NAN,
                                  .title = title, .value_label = va.method, .mark_row = -1, .mark_col = -1};
            st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_heatmap_view_draw_v, &hv, &e);
        }
    } else if (!strcmp(view, "probe")) {
        if ((st = ks_view_probe_load(file, metric, &pc, &e))) goto done;
        snprintf(title, sizeof title, "%s", path);
        pc.subtitle = title;
        st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_probe_curves_draw_v, &pc, &e);
    } else if (!strcmp(view, "audit") || !strcmp(view, "audit-items")) {
        if ((st = ks_view_audit_load(path, audit, metric, &au, &e))) goto done;
        if (!strcmp(view, "audit"))
            st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_audit_scores_draw_v, &au.forest, &e);
        else st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_table_draw_v, &au.items, &e);
    } else if (!strcmp(view, "compare")) {
        ks_view_file_kind k2;
        char *f2 = NULL;
        if ((st = ks_view_file_kind_detect(other, &k2, &f2, &e))) goto done;
        if (k2 != KS_VIEW_FILE_DUMP) {
            st = ks_error_set(&e, KS_ERR_FORMAT, "--other %s is %s, not a dump", other, ks_view_file_kind_name(k2));
            free(f2);
            goto done;
        }
        st = ks_dump_open(f2, &d2, &e);
        free(f2);
        if (st) goto done;
        if (have_lh) {
            if ((st = ks_view_attention_load(d, prompt, (int)layer, (int)head, &map, &e))) goto done;
            if ((st = ks_view_attention_load(d2, prompt, (int)layer, (int)head, &map2, &e))) goto done;
            if ((st = ks_heatmap_diff(map, map2, &diff, &e))) {
                snprintf(e.msg, sizeof e.msg, "--other %s: prompt %ld has %lld tokens there, %lld in %s: the maps "
                         "do not line up", other, prompt, (long long)ks_heatmap_rows(map2),
                         (long long)ks_heatmap_rows(map), path);
                goto done;
            }
            snprintf(title, sizeof title, "layer %ld, head %ld, prompt %ld", layer, head, prompt);
            ks_compare_maps cm = {.a = map, .b = map2, .diff = diff, .name_a = path, .name_b = other,
                                  .row_labels = toks, .col_labels = toks, .row0 = r0, .row1 = r1, .col0 = c0,
                                  .col1 = c1, .title = title};
            st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_compare_maps_draw_v, &cm, &e);
        } else {
            if ((st = ks_view_residual_load(d, prompt, pos, &rn, &e))) goto done;
            if ((st = ks_view_residual_load(d2, prompt, pos, &rn2, &e))) goto done;
            /* the points both dumps recorded (one may lack hook_embed or some layers) */
            double cx[4096], ca[4096], cb[4096];
            int n = 0;
            for (int i = 0; i < rn.n; i++)
                for (int j = 0; j < rn2.n && n < 4096; j++)
                    if (rn.x[i] == rn2.x[j]) cx[n] = rn.x[i], ca[n] = rn.mean[i], cb[n++] = rn2.mean[j];
            if (!n) {
                st = ks_error_set(&e, KS_ERR_ARG, "--other %s and %s recorded no residual point in common", other, path);
                goto done;
            }
            snprintf(title, sizeof title, "residual stream norm (mean over positions), prompt %ld", prompt);
            ks_compare_curves cc = {.n = n, .x = cx, .a = ca, .b = cb, .name_a = path,
                                    .name_b = other, .ylabel = "mean ‖x‖₂", .title = title};
            st = ks_view_save(out, (int)width, (int)height, (double)scale, ks_compare_curves_draw_v, &cc, &e);
        }
    }
done:
    if (st) fail(&e);
    else rc = 0;
    ks_heatmap_free(map), ks_heatmap_free(map2), ks_heatmap_free(diff);
    ks_view_prompt_free(&vp);
    ks_view_attention_grid_free(&grid);
    ks_view_residual_free(&rn), ks_view_residual_free(&rn2);
    ks_view_lens_free(&lt);
    ks_view_attribution_free(&va);
    ks_view_probe_free(&pc);
    ks_view_audit_free(&au);
    ks_model_close(m);
    ks_dump_close(d), ks_dump_close(d2);
    free(file);
    return rc;
}
