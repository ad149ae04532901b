/* test_steer_draw.c — the probe results file (activations/probe_results.c) written and its
 * directions read back; steering (probes/steer.c) adds exactly α·v at its hook and hands the
 * steered tensor to the next hook; the chart code (gui/plot.c, and gui/forest.c's interval
 * charts) puts known values at known pixels; the labels reader (probes/labels.c) on
 * hand-written files.
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

/* ------------------------------------------------------------------ interval (forest) charts */

/* Pixels at whole coordinates; outside the surface reads as white. */
static void pixel_at(cairo_surface_t *s, int x, int y, int rgb[3]) {
    if (x < 0 || y < 0 || x >= cairo_image_surface_get_width(s) || y >= cairo_image_surface_get_height(s)) {
        rgb[0] = rgb[1] = rgb[2] = 255;
        return;
    }
    pixel(s, x, y, 1, rgb);
}

/* "this pixel is the row's colour": an anti-aliased edge pixel that is at least about half
 * the colour passes, one that is mostly white or grey does not */
static bool is_rgb(cairo_surface_t *s, int x, int y, const double rgb[3]) {
    int c[3];
    pixel_at(s, x, y, c);
    int d = 0;
    for (int k = 0; k < 3; k++) d += abs(c[k] - (int)lround(rgb[k] * 255));
    return d <= 90;
}

/* The run of the colour through (x, y), horizontally or vertically: its centre in cairo
 * units (pixel p covers [p, p + 1]) and its length; NaN when (x, y) is not of that colour. */
static double run_of(cairo_surface_t *s, int x, int y, const double rgb[3], bool vertical, int *len) {
    *len = 0;
    if (!is_rgb(s, x, y, rgb)) return NAN;
    int dx = !vertical, dy = vertical, a = 0, b = 0;
    while (a < 4000 && is_rgb(s, x - (a + 1) * dx, y - (a + 1) * dy, rgb)) a++;
    while (b < 4000 && is_rgb(s, x + (b + 1) * dx, y + (b + 1) * dy, rgb)) b++;
    *len = a + b + 1;
    return (vertical ? y : x) + (b - a + 1) / 2.0;
}

static bool is_dark_grey(cairo_surface_t *s, int x, int y, int below) {
    int c[3];
    pixel_at(s, x, y, c);
    return c[0] < below && abs(c[0] - c[1]) <= 12 && abs(c[1] - c[2]) <= 12;
}

/* Where a row's point and whisker ends landed (NaN where not found): the point's centre
 * (x, y) and height, the centres of the left and right caps (the end columns of the run
 * through the point along the row's centre line, when they stand taller than the line and
 * away from the point), and that run's length. */
typedef struct {
    double px, py, lo_x, hi_x;
    int marker_h, line_w;
} row_hit;

static row_hit find_row(cairo_surface_t *s, const ks_plot_frame *fr, int n_rows, int i, const ks_forest_row *r) {
    row_hit h = {NAN, NAN, NAN, NAN, 0, 0};
    double rgb[3];
    ks_plot_color(r->color, rgb);
    int x = (int)floor(ks_plot_x(fr, r->value)), y = (int)floor(ks_forest_row_y(fr, n_rows, i)), len;
    /* the marker: its vertical extent through x, then its width a quarter of the way down, where
     * the whisker (a thin horizontal line) is not */
    h.py = run_of(s, x, y, rgb, true, &h.marker_h);
    if (isnan(h.py) || h.marker_h < 4) return h;
    int yq = (int)floor(h.py - h.marker_h / 4.0);
    h.px = run_of(s, x, yq, rgb, false, &len);
    /* the whisker along the centre line, then each cap: its height, then its width a quarter
     * of the way down */
    double c = run_of(s, x, y, rgb, false, &h.line_w);
    if (isnan(c)) return h;
    int left = (int)floor(c - h.line_w / 2.0), right = left + h.line_w - 1;
    for (int side = 0; side < 2; side++) {
        int cx = side ? right : left, cap_h;
        if (fabs(cx + 0.5 - h.px) <= h.marker_h) continue; /* the end is the marker's own edge */
        double cy = run_of(s, cx, y, rgb, true, &cap_h);
        if (isnan(cy) || cap_h < 4) continue;
        double w = run_of(s, cx, (int)floor(cy - cap_h / 4.0), rgb, false, &len);
        if (side) h.hi_x = w;
        else h.lo_x = w;
    }
    return h;
}

static void test_forest(void) {
    char longest[200];
    snprintf(longest, sizeof longest, "%s", "crows_pairs — sexual-orientation (a category name long enough to be cut short)");
    ks_forest_row rows[5] = {
        {.label = "pct_stereotype — race-color", .value = 61.2, .lo = 55.0, .hi = 67.1, .color = 5,
         .note = "n=120, p=0.003"},
        {.label = "gender", .value = 48.0, .lo = 44.0, .hi = 52.5, .color = 6, .note = "n=80, p=0.41"},
        {.label = "religion", .value = NAN, .lo = NAN, .hi = NAN, .color = 5, .note = "n=0"},
        {.label = longest, .value = 58.0, .lo = 56.5, .hi = 59.5, .color = 3},
        {.label = "no interval", .value = 64.0, .lo = NAN, .hi = NAN, .color = 6},
    };
    ks_forest f = {.title = "crows_pairs: pct_stereotype by category", .subtitle = "1508 pairs; 95% bootstrap CI",
                   .xlabel = "pct_stereotype", .xmin = NAN, .xmax = NAN, .reference = 50, .rows = rows, .n_rows = 5};
    const int W = 800, H = 420;
    cairo_surface_t *sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(sf);
    ks_plot_frame fr;
    ks_forest_draw(cr, &f, W, H, &fr);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS, "forest: drawn without a cairo error");
    tap_ok(fr.x0 > 0 && fr.x0 < fr.x1 && fr.x1 < W && fr.y0 > 0 && fr.y0 < fr.y1 && fr.y1 < H && fr.ymin == 0 &&
           fr.ymax == 5, "forest: the frame lies inside the surface, ymin 0 and ymax n_rows");
    tap_ok(fr.xmin < 44.0 && fr.xmax > 67.1 && fr.xmin > 30 && fr.xmax < 80,
           "forest: the x range holds every value, whisker and the reference, with a margin (%g .. %g)", fr.xmin,
           fr.xmax);
    bool pitch = true;
    for (int i = 0; i < 5; i++)
        pitch = pitch && fabs(ks_forest_row_y(&fr, 5, i) - (fr.y0 + (i + 0.5) * (fr.y1 - fr.y0) / 5)) < 1e-9;
    tap_ok(pitch, "forest: row i is centred at y0 + (i + 1/2) * (y1 - y0) / n_rows, top to bottom");

    /* points, whiskers and caps, by pixel; oracle: ks_plot_x / ks_forest_row_y; tolerance 1 px
     * on the centre of each drawn stroke */
    int order[4] = {0, 1, 3, 4};
    double prev_y = -1;
    bool in_order = true;
    for (int k = 0; k < 4; k++) {
        int i = order[k];
        const ks_forest_row *r = &rows[i];
        row_hit h = find_row(sf, &fr, 5, i, r);
        double want_x = ks_plot_x(&fr, r->value), want_y = ks_forest_row_y(&fr, 5, i);
        tap_ok(fabs(h.px - want_x) <= 1 && fabs(h.py - want_y) <= 1,
               "forest row %d: the point is at (x(%g), row_y) = (%.1f, %.1f), drawn at (%.1f, %.1f)", i, r->value,
               want_x, want_y, h.px, h.py);
        in_order = in_order && h.py > prev_y;
        prev_y = h.py;
        if (isfinite(r->lo)) {
            double wl = ks_plot_x(&fr, r->lo), wh = ks_plot_x(&fr, r->hi);
            tap_ok(fabs(h.lo_x - wl) <= 1 && fabs(h.hi_x - wh) <= 1,
                   "forest row %d: whisker caps at x(%g) = %.1f and x(%g) = %.1f, drawn at %.1f and %.1f", i, r->lo,
                   wl, r->hi, wh, h.lo_x, h.hi_x);
        } else {
            tap_ok(h.line_w <= h.marker_h + 2 && isnan(h.lo_x) && isnan(h.hi_x),
                   "forest row %d: lo/hi NaN: the point alone, no whisker (%d px wide, marker %d px)", i, h.line_w,
                   h.marker_h);
        }
    }
    tap_ok(in_order, "forest: the rows' points go down the chart in the order given");

    /* the reference line: the column inside the frame with the most dark grey pixels */
    double ref_x = ks_plot_x(&fr, 50);
    int best = -1, best_n = 0;
    for (int x = (int)ref_x - 6; x <= (int)ref_x + 6; x++) {
        int n = 0;
        for (int y = (int)fr.y0 + 2; y < (int)fr.y1 - 1; y++) n += is_dark_grey(sf, x, y, 150);
        if (n > best_n) best = x, best_n = n;
    }
    tap_ok(best >= 0 && fabs(best + 0.5 - ref_x) <= 1 && best_n > (fr.y1 - fr.y0) * 0.3,
           "forest: a dashed reference line at x(50) = %.1f (column %d, %d of %d px dark)", ref_x, best, best_n,
           (int)(fr.y1 - fr.y0));

    /* the NaN row: nothing of its colour, and "n/a" written in it */
    double blue[3];
    ks_plot_color(5, blue);
    int y2 = (int)floor(ks_forest_row_y(&fr, 5, 2)), coloured = 0, text = 0;
    double band = (fr.y1 - fr.y0) / 5 * 0.4;
    for (int x = (int)fr.x0 + 2; x < (int)fr.x1 - 1; x++)
        for (int y = y2 - (int)band; y <= y2 + (int)band; y++) {
            coloured += is_rgb(sf, x, y, blue);
            if (fabs(x + 0.5 - ref_x) > 3) text += is_dark_grey(sf, x, y, 200);
        }
    tap_ok(coloured == 0 && text > 5, "forest: a NaN value leaves its row empty but for \"n/a\" (%d coloured px, %d text px)",
           coloured, text);

    /* the long label: cut to the label column, not run off the left edge or into the frame */
    int y3 = (int)floor(ks_forest_row_y(&fr, 5, 3)), ink = 0, spill = 0;
    for (int y = y3 - 6; y <= y3 + 6; y++) {
        for (int x = 0; x < 4; x++) spill += is_dark_grey(sf, x, y, 160);
        for (int x = 4; x < (int)fr.x0 - 2; x++) ink += is_dark_grey(sf, x, y, 160);
    }
    tap_ok(fr.x0 < W * 0.4 && ink > 20 && spill == 0,
           "forest: a label too long is cut to its column (frame from x = %.0f; %d px of text, %d at the edge)", fr.x0,
           ink, spill);
    cairo_destroy(cr);

    /* an explicit range is kept */
    f.xmin = 0;
    f.xmax = 100;
    cr = cairo_create(sf);
    ks_forest_draw(cr, &f, W, H, &fr);
    row_hit h = find_row(sf, &fr, 5, 0, &rows[0]);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS && fr.xmin == 0 && fr.xmax == 100 &&
           fabs(h.px - ks_plot_x(&fr, 61.2)) <= 1 && fabs(h.lo_x - ks_plot_x(&fr, 55)) <= 1,
           "forest: xmin/xmax given are the range, and the points follow them");
    cairo_destroy(cr);
    f.xmin = f.xmax = NAN;

    /* NaN in every field, and one side missing: drawn, no cairo error */
    ks_forest_row odd[4] = {{.label = NULL, .value = NAN, .lo = 1, .hi = 2},
                            {.label = "half", .value = 1.5, .lo = NAN, .hi = 3},
                            {.label = "inf", .value = INFINITY, .lo = -INFINITY, .hi = INFINITY, .color = -3},
                            {.label = "", .value = NAN, .lo = NAN, .hi = NAN}};
    ks_forest g = {.xmin = NAN, .xmax = NAN, .reference = NAN, .rows = odd, .n_rows = 4};
    cr = cairo_create(sf);
    ks_forest_draw(cr, &g, W, H, &fr);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS && isfinite(fr.xmin) && isfinite(fr.xmax) && fr.xmin < fr.xmax,
           "forest: NaN and infinite values, a NULL label, a negative colour: drawn, with a finite range");
    cairo_destroy(cr);
    for (int k = 0; k < 4; k++) odd[k].value = odd[k].lo = odd[k].hi = NAN;
    cr = cairo_create(sf);
    ks_forest_draw(cr, &g, W, H, &fr);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS && fr.xmin < fr.xmax, "forest: every value NaN: drawn (%g .. %g)",
           fr.xmin, fr.xmax);
    cairo_destroy(cr);

    /* no rows: the frame and "no data" in its middle */
    ks_forest none = {.title = "empty", .xmin = NAN, .xmax = NAN, .reference = 0, .rows = NULL, .n_rows = 0};
    cr = cairo_create(sf);
    ks_forest_draw(cr, &none, W, H, &fr);
    int note = 0;
    for (int y = (int)((fr.y0 + fr.y1) / 2) - 8; y <= (int)((fr.y0 + fr.y1) / 2) + 8; y++)
        for (int x = (int)((fr.x0 + fr.x1) / 2) - 60; x <= (int)((fr.x0 + fr.x1) / 2) + 60; x++)
            if (fabs(x + 0.5 - ks_plot_x(&fr, 0)) > 3) note += is_dark_grey(sf, x, y, 200);
    int border = 0;
    for (int y = (int)fr.y0 + 5; y < (int)fr.y1 - 5; y++) border += is_dark_grey(sf, (int)floor(fr.x0), y, 100);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS && fr.x0 < fr.x1 && fr.y0 < fr.y1 && note > 10 &&
           border > (fr.y1 - fr.y0) * 0.8,
           "forest: no rows: the frame (%d px of its left side) and a \"no data\" note (%d px)", border, note);
    cairo_destroy(cr);

    /* one row: in the middle of the frame */
    none.rows = rows;
    none.n_rows = 1;
    cr = cairo_create(sf);
    ks_forest_draw(cr, &none, W, H, &fr);
    h = find_row(sf, &fr, 1, 0, &rows[0]);
    tap_ok(cairo_status(cr) == CAIRO_STATUS_SUCCESS && fabs(h.py - (fr.y0 + fr.y1) / 2) <= 1 &&
           fabs(h.px - ks_plot_x(&fr, 61.2)) <= 1, "forest: one row sits mid-frame at its value");
    cairo_destroy(cr);
    cairo_surface_destroy(sf);

    /* 200 rows: the natural height grows with them and every row keeps its place */
    enum { MANY = 200 };
    static ks_forest_row many[MANY];
    static char labels[MANY][24];
    for (int i = 0; i < MANY; i++) {
        snprintf(labels[i], sizeof labels[i], "category %d", i);
        double v = 20 + 60.0 * i / (MANY - 1);
        many[i] = (ks_forest_row){.label = labels[i], .value = v, .lo = v - 5, .hi = v + 5, .color = i % 8,
                                  .note = i % 7 ? NULL : "n=10"};
    }
    ks_forest big = {.title = "many", .xmin = NAN, .xmax = NAN, .reference = 50, .rows = many, .n_rows = MANY};
    ks_forest one = big;
    one.n_rows = 1;
    double hb = ks_forest_height(&big, 640), h1 = ks_forest_height(&one, 640);
    tap_ok(hb > h1 && (hb - h1) / (MANY - 1) >= 12,
           "forest: the natural height grows with the rows (%.0f for 1, %.0f for %d: %.1f per row)", h1, hb, MANY,
           (hb - h1) / (MANY - 1));
    sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 640, (int)ceil(hb));
    cr = cairo_create(sf);
    ks_forest_draw(cr, &big, 640, ceil(hb), &fr);
    bool placed = cairo_status(cr) == CAIRO_STATUS_SUCCESS;
    for (int i = 0; placed && i < MANY; i += 37) {
        double c[3];
        ks_plot_color(many[i].color, c);
        if (many[i].color == 4) continue; /* yellow on white is too faint to find reliably */
        h = find_row(sf, &fr, MANY, i, &many[i]);
        placed = fabs(h.px - ks_plot_x(&fr, many[i].value)) <= 1 && fabs(h.py - ks_forest_row_y(&fr, MANY, i)) <= 1;
        if (!placed) tap_diag("row %d: point at (%.1f, %.1f)", i, h.px, h.py);
    }
    tap_ok(placed && (fr.y1 - fr.y0) / MANY >= 12, "forest: %d rows at the natural height, points in place", MANY);
    cairo_destroy(cr);
    cairo_surface_destroy(sf);

    /* files */
    const char *ext[3] = {"png", "svg", "pdf"};
    const char *magic[3] = {"\x89PNG", "<?xml", "%PDF"};
    for (int i = 0; i < 3; i++) {
        char path[512], name[32], head[8] = {0};
        snprintf(name, sizeof name, "forest.%s", ext[i]);
        path_in(path, sizeof path, name);
        ks_error err = {0};
        ks_status st = ks_forest_save(&f, path, 640, 0, &err);
        FILE *fp = fopen(path, "rb");
        size_t n = fp ? fread(head, 1, 5, fp) : 0;
        if (fp) fclose(fp);
        tap_ok(st == KS_OK && n >= 4 && !memcmp(head, magic[i], strlen(magic[i])), "ks_forest_save writes a %s (%s)",
               ext[i], err.msg);
    }
    /* the PNG's size: 2× the points, the height from the rows when 0 is asked */
    char path[512];
    path_in(path, sizeof path, "forest_many.png");
    ks_error err = {0};
    ks_status st = ks_forest_save(&big, path, 640, 0, &err);
    unsigned char ihdr[24] = {0};
    FILE *fp = fopen(path, "rb");
    size_t n = fp ? fread(ihdr, 1, sizeof ihdr, fp) : 0;
    if (fp) fclose(fp);
    long pw = (long)ihdr[16] << 24 | ihdr[17] << 16 | ihdr[18] << 8 | ihdr[19];
    long ph = (long)ihdr[20] << 24 | ihdr[21] << 16 | ihdr[22] << 8 | ihdr[23];
    tap_ok(st == KS_OK && n == sizeof ihdr && pw == 1280 && ph == 2 * (long)ceil(hb),
           "ks_forest_save, height 0: a %ld x %ld PNG for %d rows (want 1280 x %ld)", pw, ph, MANY, 2 * (long)ceil(hb));
    path_in(path, sizeof path, "forest.bmp");
    tap_ok(ks_forest_save(&f, path, 640, 0, &err) == KS_ERR_ARG && strstr(err.msg, "forest.bmp"),
           "ks_forest_save: another extension is refused, naming the file (%s)", err.msg);
    tap_ok(ks_forest_save(&f, "/nonexistent-dir/forest.png", 640, 0, &err) == KS_ERR_IO &&
               strstr(err.msg, "/nonexistent-dir/forest.png"),
           "ks_forest_save: an unwritable path is an I/O error naming it (%s)", err.msg);
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
    test_forest();
    test_labels();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) tap_diag("could not remove %s", tmpdir);
    return tap_done();
}
