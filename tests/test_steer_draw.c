/* test_steer_draw.c — the probe results file (activations/probe_results.c) written and its
 * directions read back; steering (probes/steer.c) adds exactly α·v at its hook and hands the
 * steered tensor to the next hook; the chart code (gui/plot.c) puts known values at known
 * pixels; the labels reader (probes/labels.c) on hand-written files.
 * Oracles: values written here; exact float arithmetic (x + α·v computed here in the same
 * order); pixel colours sampled from cairo image surfaces. */
#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ks_labels.h"
#include "ks_plot.h"
#include "ks_results.h"
#include "ks_steer.h"
#include "tap.h"

static char tmpdir[256];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

/* a results file with one binary probe on blocks.1.hook_resid_post (d = 8) */
static void write_results(const char *path, double *dm, double *coef) {
    double icpt = 0.25, mean[8] = {0}, scale[8];
    for (int i = 0; i < 8; i++) {
        dm[i] = (i - 3.5) / 7.0 + 1e-9 * i; /* not representable in f32: the read rounds */
        coef[i] = 0.5 - 0.1 * i;
        scale[i] = 1;
    }
    ks_probe_record rec = {.hook = "blocks.1.hook_resid_post", .layer = 1, .n_rows = 10, .n_groups = 10,
                           .folds = 5, .accuracy = {0.9, 0.8, 1.0}, .auroc = {NAN, NAN, NAN},
                           .r2 = {NAN, NAN, NAN}, .majority = {0.5, 0.5, 0.5}, .shuffled = {0.5, 0.4, 0.6},
                           .control = {0.6, 0.5, 0.7}, .selectivity = 0.3, .beats_controls = true,
                           .d = 8, .n_out = 1, .coef = coef, .intercept = &icpt, .mean = mean,
                           .scale = scale, .diff_means = dm, .iterations = 7, .converged = true};
    const char *classes[2] = {"no", "yes"};
    ks_probe_results r = {.task = "logistic", .dump_path = "d.h5", .labels_path = "l.jsonl",
                          .labels_sha256 = "00", .position = "last", .command_line = "test",
                          .n_classes = 2, .classes = classes, .C = 1, .alpha = 1, .ci_level = 0.95,
                          .folds = 5, .n_bootstrap = 10, .n_shuffles = 1, .seed = 3,
                          .standardize = true, .hooks = &rec, .n_hooks = 1};
    ks_error err = {0};
    ks_status st = ks_probe_results_write(path, &r, false, &err);
    tap_ok(st == KS_OK, "results file written (%s)", err.msg);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    tap_ok(access(tmp, F_OK) != 0, "no .tmp left behind");
    st = ks_probe_results_write(path, &r, false, &err);
    tap_ok(st == KS_ERR_ARG && strstr(err.msg, "exists"), "an existing file is refused without overwrite");
    st = ks_probe_results_write(path, &r, true, &err);
    tap_ok(st == KS_OK, "and replaced with overwrite");
}

static void test_results_and_steer(void) {
    char path[512];
    path_in(path, sizeof path, "res.h5");
    double dm[8], coef[8];
    write_results(path, dm, coef);
    float *v = NULL;
    int d = 0;
    ks_error err = {0};
    ks_status st = ks_probe_direction_read(path, "blocks.1.hook_resid_post", "diff_means", &v, &d, &err);
    bool same = st == KS_OK && d == 8;
    for (int i = 0; same && i < 8; i++) same = v[i] == (float)dm[i];
    tap_ok(same, "diff_means read back, rounded to f32 exactly as (float)");
    free(v);
    st = ks_probe_direction_read(path, "blocks.1.hook_resid_post", "probe", &v, &d, &err);
    same = st == KS_OK && d == 8;
    for (int i = 0; same && i < 8; i++) same = v[i] == (float)coef[i];
    tap_ok(same, "the probe's weights read back");
    free(v);
    st = ks_probe_direction_read(path, "blocks.2.hook_resid_post", "probe", &v, &d, &err);
    tap_ok(st == KS_ERR_NOT_FOUND && strstr(err.msg, path) && v == NULL, "a hook not probed: not found, naming the file");
    char other[512];
    path_in(other, sizeof other, "junk.h5");
    FILE *f = fopen(other, "wb");
    fputs("not hdf5 at all", f);
    fclose(f);
    st = ks_probe_direction_read(other, "blocks.1.hook_resid_post", "probe", &v, &d, &err);
    tap_ok(st != KS_OK && strstr(err.msg, other) && v == NULL, "a file that is not HDF5 is refused, naming it");

    /* the hook: x + α·v on every row, then the next hook sees the steered tensor */
    ks_steer_vec sv = {.alpha = 2.5f, .d = 8};
    snprintf(sv.hook, sizeof sv.hook, "blocks.1.hook_resid_post");
    sv.v = malloc(8 * sizeof(float));
    for (int i = 0; i < 8; i++) sv.v[i] = (float)dm[i];
    float data[3 * 8], want[3 * 8];
    for (int i = 0; i < 24; i++) data[i] = (float)(i * 0.37 - 4);
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 8; j++) want[r * 8 + j] = data[r * 8 + j] + sv.alpha * sv.v[j];
    ks_steer_set set = {.v = &sv, .n = 1};
    ks_hook_tensor t = {.name = "blocks.1.hook_resid_post", .point = KS_HOOK_RESID_POST, .layer = 1,
                        .data = NULL, .ndim = 2, .shape = {3, 8}};
    tap_ok(ks_steer_hook(&t, true, &set), "the steering hook asks for its hook point");
    ks_hook_tensor t2 = t;
    t2.name = "blocks.0.hook_resid_post";
    tap_ok(!ks_steer_hook(&t2, true, &set), "and not for another");
    t.data = data;
    ks_steer_hook(&t, false, &set);
    tap_ok(!memcmp(data, want, sizeof data), "it adds alpha * v to every row, exactly");
    free(sv.v);
}

/* ------------------------------------------------------------------ drawing */

static void pixel(cairo_surface_t *s, double x, double y, double scale, int rgb[3]) {
    cairo_surface_flush(s);
    unsigned char *d = cairo_image_surface_get_data(s);
    int stride = cairo_image_surface_get_stride(s);
    int px = (int)floor(x * scale), py = (int)floor(y * scale);
    uint32_t v = *(uint32_t *)(d + py * stride + px * 4);
    rgb[0] = (v >> 16) & 255;
    rgb[1] = (v >> 8) & 255;
    rgb[2] = v & 255;
}

static void test_plot(void) {
    double x[5] = {0, 1, 2, 3, 4}, y[5] = {0.5, 0.5, 0.9, 0.5, 0.5}, lo[5], hi[5], flat[5];
    for (int i = 0; i < 5; i++) {
        lo[i] = y[i] - 0.1;
        hi[i] = y[i] + 0.1;
        flat[i] = 0.2;
    }
    ks_plot_series s[2] = {{.label = "probe", .x = x, .y = y, .lo = lo, .hi = hi, .n = 5, .markers = true},
                           {.label = "baseline", .x = x, .y = flat, .n = 5}};
    ks_plot_color(5, s[0].rgb);
    s[1].rgb[0] = 1, s[1].rgb[1] = 0, s[1].rgb[2] = 0;
    ks_plot p = {.title = "t", .xlabel = "layer", .ylabel = "accuracy", .ymin = 0, .ymax = 1,
                 .integer_x = true, .series = s, .n_series = 2};
    cairo_surface_t *sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 800, 500);
    cairo_t *cr = cairo_create(sf);
    ks_plot_frame fr;
    ks_plot_draw(cr, &p, 800, 500, &fr);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS, "drawn without a cairo error");
    tap_ok(fr.x0 < fr.x1 && fr.y0 < fr.y1 && fr.x1 <= 800 && fr.y1 <= 500 && fr.xmin == -0.25 && fr.xmax == 4.25 &&
           fr.ymin == 0 && fr.ymax == 1, "the frame lies inside the surface, with the ranges asked for (x padded by 0.25 for whole end markers)");
    tap_ok(fabs(ks_plot_x(&fr, -0.25) - fr.x0) < 1e-9 && fabs(ks_plot_x(&fr, 4.25) - fr.x1) < 1e-9 &&
           fabs(ks_plot_y(&fr, 0) - fr.y1) < 1e-9 && fabs(ks_plot_y(&fr, 1) - fr.y0) < 1e-9,
           "data corners map to the frame's corners");
    int c[3];
    pixel(sf, ks_plot_x(&fr, 2), ks_plot_y(&fr, 0.9), 1, c);
    int want[3] = {(int)lround(s[0].rgb[0] * 255), (int)lround(s[0].rgb[1] * 255), (int)lround(s[0].rgb[2] * 255)};
    tap_ok(abs(c[0] - want[0]) <= 2 && abs(c[1] - want[1]) <= 2 && abs(c[2] - want[2]) <= 2,
           "the marker at (2, 0.9) has the series colour (%d,%d,%d vs %d,%d,%d)", c[0], c[1], c[2], want[0],
           want[1], want[2]);
    pixel(sf, ks_plot_x(&fr, 1.5), ks_plot_y(&fr, 0.2), 1, c);
    tap_ok(c[0] >= 250 && c[1] <= 30 && c[2] <= 30, "the flat red line sits at y = 0.2 (%d,%d,%d)", c[0], c[1], c[2]);
    /* inside the band, away from the line: tinted, neither white nor the full colour */
    pixel(sf, ks_plot_x(&fr, 0.5), ks_plot_y(&fr, 0.56), 1, c);
    bool tinted = c[2] < 250 && c[2] > want[2] + 20;
    tap_ok(tinted, "the confidence band is shaded (%d,%d,%d)", c[0], c[1], c[2]);
    pixel(sf, ks_plot_x(&fr, 0.5), ks_plot_y(&fr, 0.7), 1, c);
    tap_ok(c[0] == 255 && c[1] == 255 && c[2] == 255, "outside the band the plot is white");
    cairo_destroy(cr);
    cairo_surface_destroy(sf);

    const char *ext[3] = {"png", "svg", "pdf"};
    const char *magic[3] = {"\x89PNG", "<?xml", "%PDF"};
    for (int i = 0; i < 3; i++) {
        char path[512], name[32], head[8] = {0};
        snprintf(name, sizeof name, "chart.%s", ext[i]);
        path_in(path, sizeof path, name);
        ks_error err = {0};
        ks_status st = ks_plot_save(&p, path, 640, 400, &err);
        FILE *f = fopen(path, "rb");
        size_t n = f ? fread(head, 1, 5, f) : 0;
        if (f) fclose(f);
        tap_ok(st == KS_OK && n >= 4 && !memcmp(head, magic[i], strlen(magic[i])), "ks_plot_save writes a %s", ext[i]);
    }
    char path[512];
    path_in(path, sizeof path, "chart.bmp");
    ks_error err = {0};
    tap_ok(ks_plot_save(&p, path, 640, 400, &err) == KS_ERR_ARG && strstr(err.msg, "chart.bmp"),
           "another extension is refused, naming the file");
    tap_ok(ks_plot_save(&p, "/nonexistent-dir/x.png", 640, 400, &err) == KS_ERR_IO, "an unwritable path is an I/O error");
}

/* ------------------------------------------------------------------ labels */

static void test_labels(void) {
    const char *jl = "{\"prompt\": 0, \"label\": \"a\"}\n\n{\"prompt\": \"q7\", \"label\": 2, \"position\": -1}\n"
                     "{\"prompt\": 3, \"label\": 0.5, \"token\": \"^x\"}\n";
    ks_labels L;
    ks_error err = {0};
    ks_status st = ks_labels_parse(jl, strlen(jl), false, "l.jsonl", &L, &err);
    tap_ok(st == KS_OK && L.n == 3 && !L.all_numeric, "JSONL: three labels, a blank line skipped");
    if (st == KS_OK && L.n == 3) {
        tap_ok(L.v[0].prompt_index == 0 && !strcmp(L.v[0].label, "a") && isnan(L.v[0].value) && L.v[0].line == 1,
               "line 1: index 0, label a");
        tap_ok(L.v[1].prompt_index == -1 && !strcmp(L.v[1].prompt_id, "q7") && L.v[1].has_position &&
               L.v[1].position == -1 && L.v[1].value == 2 && !strcmp(L.v[1].label, "2") && L.v[1].line == 3,
               "line 3: id q7, position -1, numeric label 2");
        tap_ok(!strcmp(L.v[2].token_regex, "^x") && L.v[2].value == 0.5, "line 4: token regex, label 0.5");
    }
    ks_labels_free(&L);
    char why[96];
    tap_ok(ks_labels_regex_ok("^[a-z]+(ing|ed)$", why, sizeof why) && ks_labels_regex_ok("[+*]{2,3}x\\+?", why, sizeof why) &&
           ks_labels_regex_ok("(a|b)?(c|d)*[[:upper:]]{1,8}", why, sizeof why),
           "ordinary token regexes keep to the budget (operators inside brackets and escaped are literals)");
    const char *cs = "label,prompt,token\n\"x,y\",0,\n7,q1,^a\n";
    st = ks_labels_parse(cs, strlen(cs), true, "l.csv", &L, &err);
    tap_ok(st == KS_OK && L.n == 2 && !strcmp(L.v[0].label, "x,y") && L.v[0].prompt_index == 0 &&
           !L.v[0].token_regex && !strcmp(L.v[1].prompt_id, "q1") && L.v[1].value == 7 &&
           !strcmp(L.v[1].token_regex, "^a"), "CSV: quoted commas, columns in any order, an empty token cell");
    ks_labels_free(&L);
    struct {
        const char *text;
        bool csv;
        const char *want;
    } bad[] = {
        {"{\"prompt\": 0}\n", false, "line 1: field 'label' is missing"},
        {"{\"prompt\": -1, \"label\": 1}\n", false, "field 'prompt'"},
        {"{\"prompt\": 0, \"label\": \"a\", \"position\": 1, \"token\": \"a\"}\n", false, "exclude"},
        {"{\"prompt\": 0, \"label\": \"\"}\n", false, "field 'label'"},
        {"[1]\n", false, "not a JSON object"},
        {"", false, "no labels"},
        {"prompt,label\n0,a,b\n", true, "row 2"},
        {"prompt,label,prompt\n", true, "twice"},
        {"prompt\n0\n", true, "'label'"},
        {"prompt,label,position\n0,a,x\n", true, "'position'"},
        {"prompt,label\n,a\n", true, "'prompt' is empty"},
        /* regexes whose regcomp would take gigabytes (found by fuzz_labels) are refused first */
        {"{\"prompt\": 0, \"label\": \"a\", \"token\": \"a++++++++++++++++++++++++++++++++++++++++\"}\n", false,
         "follows another"},
        {"{\"prompt\": 0, \"label\": \"a\", \"token\": \"((((((((((a)+)+)+)+)+)+)+)+)+)+\"}\n", false, "nested"},
        {"{\"prompt\": 0, \"label\": \"a\", \"token\": \"((a{1,30}){1,30})\"}\n", false, "multiply"},
        {"prompt,label,token\n0,a,\"x{1,100}\"\n", true, "above 32"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st = ks_labels_parse(bad[i].text, strlen(bad[i].text), bad[i].csv, "src.x", &L, &err);
        tap_ok(st == KS_ERR_FORMAT && strstr(err.msg, "src.x") && strstr(err.msg, bad[i].want) && L.n == 0,
               "bad labels %zu: '%s' (%s)", i, bad[i].want, err.msg);
    }
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/ks_steer_draw_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        printf("1..0 # SKIP no temporary directory\n");
        return 0;
    }
    test_results_and_steer();
    test_plot();
    test_labels();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) tap_diag("could not remove %s", tmpdir);
    return tap_done();
}
