/* test_views.c — the viewer's cairo views (gui/ks_views.h) drawn headless onto image surfaces,
 * and `koalascope render` end to end.
 *
 * Oracles: colours are computed here from the colormap anchors that ks_views.h documents (the
 * table below is typed from that comment, not taken from the code), and compared with pixels
 * read back from the surface, tolerance ±1 per 8-bit channel (cairo's own rounding of the
 * source colour); pooled levels against sums done by hand; label non-overlap from the
 * returned label rectangles, pairwise.
 *
 * Usage: test_views KOALASCOPE   (meson passes the CLI; the stories260K dump is recorded here,
 * skipping visibly without the shared data, failing under CI=true) */
#include <cairo.h>
#include <hdf5.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ks_results.h"
#include "ks_views.h"
#include "tap.h"

/* ks_views.h: anchors at t = 0, 1/4, 2/4, 3/4, 1 */
static const int SEQ[5][3] = {{255, 255, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
static const int DIV[5][3] = {{33, 102, 172}, {146, 197, 222}, {255, 255, 255}, {244, 165, 130}, {178, 24, 43}};

static void expect_rgb(const int a[5][3], double t, int out[3]) {
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    int k = t >= 1 ? 3 : (int)(t * 4);
    double f = t * 4 - k;
    for (int j = 0; j < 3; j++) out[j] = (int)lround(a[k][j] + (a[k + 1][j] - a[k][j]) * f);
}

static void pixel(cairo_surface_t *s, double x, double y, int out[3]) {
    cairo_surface_flush(s);
    const unsigned char *d = cairo_image_surface_get_data(s);
    int stride = cairo_image_surface_get_stride(s);
    uint32_t p = *(const uint32_t *)(d + (size_t)(int)y * stride + 4 * (size_t)(int)x);
    out[0] = (p >> 16) & 255, out[1] = (p >> 8) & 255, out[2] = p & 255;
}

static bool near(const int a[3], const int b[3], int tol) {
    for (int j = 0; j < 3; j++)
        if (abs(a[j] - b[j]) > tol) return false;
    return true;
}

/* the pixel at the centre of cell (r, c) of a drawn heatmap */
static void cell_pixel(cairo_surface_t *s, const ks_view_geom *g, double r, double c, int out[3]) {
    double x = g->plot.x + (c + 0.5 - g->col0) / (g->col1 - g->col0) * g->plot.w;
    double y = g->plot.y + (r + 0.5 - g->row0) / (g->row1 - g->row0) * g->plot.h;
    pixel(s, x, y, out);
}

static void test_colours(void) {
    /* a known 4 x 4 attention matrix (causal: NaN above the diagonal) */
    const float A[16] = {1, NAN, NAN, NAN, 0.5f, 0.5f, NAN, NAN, 0.25f, 0.125f, 0.625f, NAN, 0.1f, 0.2f, 0.3f, 0.4f};
    ks_heatmap *h = NULL;
    ks_error e = {0};
    tap_ok(ks_heatmap_create(A, 4, 4, KS_POOL_MAX, &h, &e) == KS_OK, "heatmap of a 4 x 4 map");
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 400, 400);
    cairo_t *cr = cairo_create(s);
    ks_view_geom g;
    ks_view_geom_init(&g);
    ks_heatmap_view v = {.map = h, .cmap = KS_CMAP_SEQUENTIAL, .vmin = 0, .vmax = 1, .mark_row = -1, .mark_col = -1};
    ks_status st = ks_heatmap_view_draw(cr, &v, 400, 400, &g, &e);
    tap_ok(st == KS_OK && g.plot.w > 100 && g.pool_level == 0, "4 x 4 map drawn at level 0 (%s)", e.msg);
    int bad = 0, got[3], want[3];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            cell_pixel(s, &g, r, c, got);
            float x = A[r * 4 + c];
            if (isnan(x)) want[0] = want[1] = want[2] = 230; /* KS_VIEW_NODATA_RGB 0xe6e6e6 */
            else expect_rgb(SEQ, x, want);
            if (!near(got, want, 1)) {
                bad++;
                tap_diag("cell (%d,%d) = %g: pixel %d,%d,%d, expected %d,%d,%d", r, c, x, got[0], got[1], got[2],
                         want[0], want[1], want[2]);
            }
        }
    tap_ok(bad == 0, "every cell of the known attention matrix has the colour computed from the documented "
                     "sequential anchors (masked cells 230,230,230), ±1 per channel");
    /* 0.625 lies between anchors 2 and 3: (107 + (33-107)/2, ...) = (70, 143.5, 197.5) */
    cell_pixel(s, &g, 2, 2, got);
    const int mid[3] = {70, 144, 198};
    tap_ok(near(got, mid, 1), "0.625 -> (70,144,198) by hand: got %d,%d,%d", got[0], got[1], got[2]);
    /* a window: rows 2..4, cols 0..2 only */
    v.row0 = 2, v.row1 = 4, v.col0 = 0, v.col1 = 2;
    st = ks_heatmap_view_draw(cr, &v, 400, 400, &g, &e);
    cell_pixel(s, &g, 3, 1, got);
    expect_rgb(SEQ, 0.2, want);
    tap_ok(st == KS_OK && g.row0 == 2 && g.col1 == 2 && near(got, want, 1),
           "a window rows 2:4 cols 0:2 shows cell (3,1) where the geometry says");
    /* a window outside the map is refused */
    v.row0 = 5, v.row1 = 9;
    tap_ok(ks_heatmap_view_draw(cr, &v, 400, 400, &g, &e) == KS_ERR_ARG && strstr(e.msg, "outside"),
           "a window outside the map is KS_ERR_ARG: %s", e.msg);
    ks_heatmap_free(h);

    /* diverging, symmetric range: −1 blue end, 0 white, 0.5 anchor 3, 1 red end */
    const float D[4] = {-1, 0, 0.5f, 1};
    tap_ok(ks_heatmap_create(D, 1, 4, KS_POOL_MAXABS, &h, &e) == KS_OK, "1 x 4 signed map");
    ks_heatmap_view dv = {.map = h, .cmap = KS_CMAP_DIVERGING, .vmin = NAN, .vmax = NAN, .mark_row = -1, .mark_col = -1};
    st = ks_heatmap_view_draw(cr, &dv, 400, 400, &g, &e);
    bad = 0;
    for (int c = 0; c < 4; c++) {
        cell_pixel(s, &g, 0, c, got);
        expect_rgb(DIV, (D[c] + 1) / 2, want); /* auto range: ±max|v| = ±1 */
        if (!near(got, want, 1)) bad++, tap_diag("diverging %g: %d,%d,%d vs %d,%d,%d", D[c], got[0], got[1], got[2], want[0], want[1], want[2]);
    }
    tap_ok(st == KS_OK && bad == 0, "diverging map on the symmetric automatic range: −1, 0, 0.5, 1 as the anchors say");
    ks_heatmap_free(h);
    ks_view_geom_free(&g);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

static void test_pyramid(void) {
    /* 3 x 3 -> level 1 is 2 x 2: blocks {0,1}x{0,1}, {0,1}x{2}, {2}x{0,1}, {2}x{2} */
    const float v[9] = {1, -5, 2, 3, NAN, 4, -7, 0.5f, NAN};
    ks_heatmap *h;
    int64_t r, c;
    ks_error e;
    ks_heatmap_create(v, 3, 3, KS_POOL_MAX, &h, &e);
    const float *L = ks_heatmap_level(h, 1, &r, &c);
    tap_ok(r == 2 && c == 2 && L[0] == 3 && L[1] == 4 && L[2] == 0.5f && isnan(L[3]) && ks_heatmap_levels(h) == 3,
           "max-pooling: level 1 = [3 4; 0.5 NaN] (NaN ignored, all-NaN block NaN), 3 levels");
    ks_heatmap_free(h);
    ks_heatmap_create(v, 3, 3, KS_POOL_MEAN, &h, &e);
    L = ks_heatmap_level(h, 1, &r, &c);
    const float *L2 = ks_heatmap_level(h, 2, &r, &c);
    /* level 2 = mean of the 7 finite cells = (1-5+2+3+4-7+0.5)/7 */
    tap_ok(fabsf(L[0] - (-1.0f / 3)) < 1e-6 && L[1] == 3 && fabsf(L[2] + 3.25f) < 1e-6 &&
               fabsf(L2[0] - (-1.5f / 7)) < 1e-6,
           "mean-pooling weights by finite cells: level 1 [−1/3 3; −3.25 NaN], level 2 −1.5/7 (got %g)", L2[0]);
    ks_heatmap_free(h);
    ks_heatmap_create(v, 3, 3, KS_POOL_MAXABS, &h, &e);
    L = ks_heatmap_level(h, 1, &r, &c);
    tap_ok(L[0] == -5 && L[1] == 4 && L[2] == -7, "maxabs-pooling keeps the sign: [−5 4; −7 …]");
    ks_heatmap_free(h);
}

/* a hot cell in a 2,048² map of zeros must stay visible zoomed out (max-pooling) */
static void test_hot_cell(void) {
    const int64_t T = 2048, hr = 1234, hc = 567;
    float *m = calloc((size_t)(T * T), sizeof *m);
    m[hr * T + hc] = 1;
    ks_heatmap *hmax, *hmean;
    ks_error e;
    ks_heatmap_create(m, T, T, KS_POOL_MAX, &hmax, &e);
    ks_heatmap_create(m, T, T, KS_POOL_MEAN, &hmean, &e);
    free(m);
    int dark[3];
    expect_rgb(SEQ, 1, dark);
    int hits[2] = {0, 0}, levels[2];
    for (int k = 0; k < 2; k++) {
        cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 300, 300);
        cairo_t *cr = cairo_create(s);
        ks_view_geom g;
        ks_view_geom_init(&g);
        ks_heatmap_view v = {.map = k ? hmean : hmax, .cmap = KS_CMAP_SEQUENTIAL, .vmin = 0, .vmax = 1,
                             .mark_row = -1, .mark_col = -1};
        ks_heatmap_view_draw(cr, &v, 300, 300, &g, &e);
        levels[k] = g.pool_level;
        double x = g.plot.x + (hc + 0.5) / T * g.plot.w, y = g.plot.y + (hr + 0.5) / T * g.plot.h;
        for (int dy = -3; dy <= 3; dy++)
            for (int dx = -3; dx <= 3; dx++) {
                int p[3];
                pixel(s, x + dx, y + dy, p);
                if (near(p, dark, 1)) hits[k]++;
            }
        ks_view_geom_free(&g);
        cairo_destroy(cr);
        cairo_surface_destroy(s);
    }
    tap_ok(levels[0] >= 3 && hits[0] >= 1,
           "max-pooling: one hot cell of a 2,048² map drawn in ~250 px (level %d) shows as %d full-colour pixel(s)",
           levels[0], hits[0]);
    tap_ok(hits[1] == 0, "mean-pooling (the control) washes it out: %d full-colour pixels", hits[1]);
    ks_heatmap_free(hmax);
    ks_heatmap_free(hmean);
}

static bool overlap(const ks_rect *a, const ks_rect *b) {
    return a->x < b->x + b->w && b->x < a->x + a->w && a->y < b->y + b->h && b->y < a->y + a->h;
}

/* how many pairs of items of a kind overlap (sorted sweep would do; n is small enough for n²) */
static int overlaps(const ks_view_geom *g, ks_view_item_kind kind, int *count) {
    int bad = 0;
    *count = 0;
    for (int i = 0; i < g->n_items; i++) {
        if (g->items[i].kind != kind) continue;
        (*count)++;
        for (int j = i + 1; j < g->n_items; j++)
            if (g->items[j].kind == kind && overlap(&g->items[i].rect, &g->items[j].rect)) bad++;
    }
    return bad;
}

static void test_labels(void) {
    const int64_t T = 2048;
    float *m = malloc((size_t)(T * T) * sizeof *m);
    char **lab = malloc((size_t)T * sizeof *lab);
    uint64_t x = 88172645463325252ULL;
    for (int64_t i = 0; i < T * T; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        m[i] = (i % T) <= (i / T) ? (float)(x % 1000) / 1000 : NAN;
    }
    for (int64_t i = 0; i < T; i++) {
        lab[i] = malloc(16);
        snprintf(lab[i], 16, i % 3 ? "tok%lld" : " a%lld", (long long)i);
    }
    ks_heatmap *h;
    ks_error e;
    ks_heatmap_create(m, T, T, KS_POOL_MAX, &h, &e);
    free(m);
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1000, 1000);
    cairo_t *cr = cairo_create(s);
    ks_view_geom g;
    ks_view_geom_init(&g);
    ks_heatmap_view v = {.map = h, .row_labels = (const char *const *)lab, .col_labels = (const char *const *)lab,
                         .cmap = KS_CMAP_SEQUENTIAL, .vmin = 0, .vmax = 1, .title = "2,048 tokens",
                         .value_label = "attention", .mark_row = -1, .mark_col = -1};
    ks_status st = ks_heatmap_view_draw(cr, &v, 1000, 1000, &g, &e);
    int nr, nc;
    int br = overlaps(&g, KS_VIEW_ITEM_ROW_LABEL, &nr), bc = overlaps(&g, KS_VIEW_ITEM_COL_LABEL, &nc);
    tap_ok(st == KS_OK && br == 0 && bc == 0 && nr > 10 && nr < T && nc > 10 && nc < T,
           "2,048 tokens zoomed out: %d row and %d column labels kept, none overlapping (%d, %d overlapping pairs)",
           nr, nc, br, bc);
    /* zoomed in: 64 rows in ~900 px leave room for every label */
    v.row0 = 1000, v.row1 = 1064, v.col0 = 1000, v.col1 = 1064;
    st = ks_heatmap_view_draw(cr, &v, 1000, 1000, &g, &e);
    br = overlaps(&g, KS_VIEW_ITEM_ROW_LABEL, &nr), bc = overlaps(&g, KS_VIEW_ITEM_COL_LABEL, &nc);
    tap_ok(st == KS_OK && br == 0 && bc == 0 && nr == 64 && nc == 64 && g.pool_level == 0,
           "zoomed to 64 x 64 of them: all %d + %d labels, level 0, no overlap", nr, nc);
    int64_t row, col;
    bool in = ks_view_geom_cell(&g, g.plot.x + g.plot.w * 0.51, g.plot.y + 1, &row, &col);
    tap_ok(in && row == 1000 && col == 1032,
           "ks_view_geom_cell maps a point back to its cell (%lld, %lld)", (long long)row, (long long)col);
    /* the thinning function with priorities, on random extents */
    double cen[500], ext[500], pri[500];
    bool keep[500];
    for (int i = 0; i < 500; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        cen[i] = i * 3.0, ext[i] = 2 + (double)(x % 20), pri[i] = (double)(x % 7);
    }
    int64_t kept = ks_view_labels_thin(cen, ext, pri, 500, 0.5, keep);
    int bad = 0;
    for (int i = 0; i < 500; i++)
        for (int j = i + 1; j < 500 && keep[i]; j++)
            if (keep[j] && fabs(cen[i] - cen[j]) < (ext[i] + ext[j]) / 2 + 0.5) bad++;
    tap_ok(bad == 0 && kept > 20, "labels_thin with priorities: %lld kept, none overlapping", (long long)kept);
    ks_view_geom_free(&g);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
    ks_heatmap_free(h);
    for (int64_t i = 0; i < T; i++) free(lab[i]);
    free(lab);
}

/* ------------------------------------------------------------------ on a recorded dump */

static char tmpdir[256], ks_bin[1024];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static bool file_starts(const char *path, const char *magic, size_t n) {
    char buf[16] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    return got == n && !memcmp(buf, magic, n);
}

static bool file_has(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

/* fraction of pixels that are not white: the view drew something */
static double inked(cairo_surface_t *s) {
    cairo_surface_flush(s);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s), n = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int p[3];
            pixel(s, x, y, p);
            n += p[0] < 250 || p[1] < 250 || p[2] < 250;
        }
    return (double)n / (w * h);
}

typedef ks_status (*draw_fn)(cairo_t *, const void *, double, double, ks_view_geom *, ks_error *);

static void draws(const char *what, draw_fn fn, const void *v) {
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 800, 600);
    cairo_t *cr = cairo_create(s);
    ks_view_geom g;
    ks_view_geom_init(&g);
    ks_error e = {0};
    ks_status st = fn(cr, v, 800, 600, &g, &e);
    double ink = inked(s);
    tap_ok(st == KS_OK && cairo_status(cr) == CAIRO_STATUS_SUCCESS && ink > 0.01,
           "%s draws on the stories260K dump (%.1f%% inked, %d items) %s", what, ink * 100, g.n_items, e.msg);
    ks_view_geom_free(&g);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

#define DRAW(fn, T) \
    static ks_status fn##_v(cairo_t *cr, const void *v, double w, double h, ks_view_geom *g, ks_error *e) { return fn(cr, (const T *)v, w, h, g, e); }
DRAW(ks_token_strip_draw, ks_token_strip)
DRAW(ks_attention_grid_draw, ks_attention_grid)
DRAW(ks_attention_head_draw, ks_attention_head)
DRAW(ks_token_bars_draw, ks_token_bars)
DRAW(ks_residual_norms_draw, ks_residual_norms)
DRAW(ks_lens_table_draw, ks_lens_table)
DRAW(ks_probe_curves_draw, ks_probe_curves)
DRAW(ks_audit_scores_draw, ks_forest)
DRAW(ks_table_draw, ks_table)
DRAW(ks_compare_maps_draw, ks_compare_maps)
DRAW(ks_compare_curves_draw, ks_compare_curves)

/* a minimal audit results.h5 as docs/AUDITS.md lays it out (strings fixed-length UTF-8) */
static void h5_strs(hid_t g, const char *name, const char *const *v, int n) {
    /* exactly as wide as the longest, NUL-padded: as the audit writer does (docs/FORMAT.md
     * "Strings"), which a reader converting to a NUL-terminated type of that width cuts short */
    size_t w = 1;
    for (int i = 0; i < n; i++) w = strlen(v[i]) > w ? strlen(v[i]) : w;
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, w);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    H5Tset_cset(t, H5T_CSET_UTF8);
    char buf[8 * 32] = {0};
    for (int i = 0; i < n; i++) memcpy(buf + i * w, v[i], strlen(v[i]));
    hsize_t d = (hsize_t)n;
    hid_t sp = H5Screate_simple(1, &d, NULL), ds = H5Dcreate2(g, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Dclose(ds), H5Sclose(sp), H5Tclose(t);
}
static void h5_num(hid_t g, const char *name, hid_t t, int rank, const hsize_t *d, const void *v) {
    hid_t sp = H5Screate_simple(rank, d, NULL), ds = H5Dcreate2(g, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds), H5Sclose(sp);
}
static void write_audit_wide(const char *path, bool wide_prediction) {
    /* HDF5's latest format, as koalascope writes it: readers refuse superblocks 0 and 1 */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 17);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "koalascope-audit");
    H5Aclose(a), H5Sclose(sp), H5Tclose(t);
    hid_t m = H5Gcreate2(f, "metrics", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char *au[3] = {"crows", "crows", "crows"}, *me[3] = {"pct_stereotype", "pct_stereotype", "n_pairs"},
               *ca[3] = {"gender", "race", "all"};
    h5_strs(m, "audit", au, 3), h5_strs(m, "metric", me, 3), h5_strs(m, "category", ca, 3);
    double vci[9] = {0.6, 0.5, 0.7, 0.55, 0.45, 0.65, 10, 10, 10}, pv[3] = {0.01, 0.2, NAN};
    hsize_t d2[2] = {3, 3}, d1 = 3;
    h5_num(m, "value_ci", H5T_NATIVE_DOUBLE, 2, d2, vci);
    h5_num(m, "p_value", H5T_NATIVE_DOUBLE, 1, &d1, pv);
    H5Gclose(m);
    hid_t g0 = H5Gcreate2(f, "audits", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = H5Gcreate2(g0, "crows", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char *id[2] = {"1", "2"}, *cat[2] = {"gender", "race"};
    h5_strs(g, "id", id, 2), h5_strs(g, "category", cat, 2);
    int32_t gold[2] = {0, 1}, pred[2] = {0, 0};
    double ll[6] = {-10, -11, NAN, -9, -8.5, NAN};
    hsize_t n2 = 2, l2[2] = {2, 3};
    h5_num(g, "gold", H5T_NATIVE_INT32, 1, &n2, gold);
    if (wide_prediction) {
        /* a 16-byte integer: libhdf5 would convert it (a fuzzed file declared 1.7 GB per value) */
        hid_t w = H5Tcopy(H5T_STD_I64LE);
        H5Tset_precision(w, 64), H5Tset_size(w, 16);
        int32_t wide[8] = {0};
        h5_num(g, "prediction", w, 1, &n2, wide);
        H5Tclose(w);
    } else {
        h5_num(g, "prediction", H5T_NATIVE_INT32, 1, &n2, pred);
    }
    h5_num(g, "ll", H5T_NATIVE_DOUBLE, 2, l2, ll);
    H5Gclose(g), H5Gclose(g0), H5Fclose(f);
}
static void write_audit(const char *path) { write_audit_wide(path, false); }

static void write_probe(const char *path) {
    ks_probe_record rec[3];
    memset(rec, 0, sizeof rec);
    const char *hooks[3] = {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"};
    double coef[2] = {1, 2}, icpt = 0, mean[2] = {0, 0}, scale[2] = {1, 1};
    for (int i = 0; i < 3; i++) {
        rec[i] = (ks_probe_record){.hook = hooks[i], .layer = i, .n_rows = 10, .n_groups = 10, .folds = 5,
                                   .accuracy = {0.5 + 0.1 * i, 0.45 + 0.1 * i, 0.55 + 0.1 * i},
                                   .auroc = {0.6, 0.5, 0.7}, .r2 = {NAN, NAN, NAN}, .majority = {0.5, NAN, NAN},
                                   .shuffled = {0.5, 0.4, 0.6}, .control = {0.55, NAN, NAN}, .d = 2, .n_out = 1,
                                   .coef = coef, .intercept = &icpt, .mean = mean, .scale = scale, .converged = true};
    }
    const char *cls[2] = {"a", "b"};
    ks_probe_results r = {.task = "logistic", .dump_path = "x", .labels_path = "y", .labels_sha256 = "0",
                          .position = "last", .command_line = "test", .n_classes = 2, .classes = cls, .C = 1,
                          .ci_level = 0.95, .folds = 5, .hooks = rec, .n_hooks = 3};
    ks_error e;
    if (ks_probe_results_write(path, &r, true, &e)) tap_diag("probe results: %s", e.msg);
}

static void test_dump(void) {
    char mb[1024], tb[1024];
    const char *model = ks_test_data_file("stories260K/stories260K.bin", mb, sizeof mb);
    const char *tok = model ? ks_test_data_file("stories260K/tok512.bin", tb, sizeof tb) : NULL;
    if (!model || !tok) return;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ks_views_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        tap_ok(0, "mkdtemp");
        return;
    }
    char dump[512], dump2[512], noattn[512];
    snprintf(dump, sizeof dump, "%s/d.h5", tmpdir);
    snprintf(dump2, sizeof dump2, "%s/d2.h5", tmpdir);
    snprintf(noattn, sizeof noattn, "%s/noattn.h5", tmpdir);
    FILE *f = fopen("/dev/null", "r");
    if (f) fclose(f);
    sh("printf '%%s\\n' '{\"prompt\": \"Once upon a time there was a little girl named Lily.\"}' "
       "'{\"prompt\": \"The cat sat on the mat\"}' > %s/p.jsonl", tmpdir);
    int rc = sh("'%s' record '%s' --tokenizer '%s' --prompts %s/p.jsonl --hooks "
                "'hook_embed,blocks.*.hook_resid_post,blocks.*.attn.hook_pattern' --generate 6 -q --threads 1 -o %s",
                ks_bin, model, tok, tmpdir, dump);
    rc |= sh("'%s' record '%s' --tokenizer '%s' --prompts %s/p.jsonl --hooks 'blocks.*.hook_resid_post,"
             "blocks.1.attn.hook_pattern' --heads 0,1 --generate 6 --temperature 1 --seed 3 -q --threads 1 -o %s",
             ks_bin, model, tok, tmpdir, dump2);
    rc |= sh("'%s' record '%s' --tokenizer '%s' --prompts %s/p.jsonl --hooks 'blocks.*.hook_resid_post' --topk 0 -q "
             "--threads 1 -o %s", ks_bin, model, tok, tmpdir, noattn);
    rc |= sh("'%s' attribute '%s' --tokenizer '%s' --prompt 'Once upon a time' --target ' there' --method "
             "integrated_gradients -o %s > /dev/null", ks_bin, model, tok, dump);
    rc |= sh("'%s' attribute '%s' --tokenizer '%s' --prompt 'Once upon a time' --target ' there' --method heads "
             "-o %s > /dev/null", ks_bin, model, tok, dump);
    if (!tap_ok(rc == 0, "recorded three stories260K dumps and two attributions with %s", ks_bin)) return;

    /* ---- every view through the API */
    ks_dump *d = NULL, *d2 = NULL, *dn = NULL;
    ks_model *m = NULL;
    ks_error e = {0};
    ks_model_options mo = {.tokenizer_path = tok};
    if (!tap_ok(!ks_dump_open(dump, &d, &e) && !ks_dump_open(dump2, &d2, &e) && !ks_dump_open(noattn, &dn, &e) &&
                    !ks_model_open(model, &mo, &m, &e),
                "dumps and model open %s", e.msg))
        return;
    ks_view_prompt vp;
    ks_status pst = ks_view_prompt_load(d, 0, &vp, &e);
    tap_ok(pst == KS_OK && vp.n > 10 && vp.topk == 10 && isnan(vp.logprob[0]) &&
               isfinite(vp.logprob[1]) && vp.logprob[1] <= 0,
           "prompt 0: %lld tokens, top-10, log p(token 1) = %g %s", (long long)vp.n, vp.n > 1 ? vp.logprob[1] : 0, e.msg);
    ks_token_strip ts = {.pieces = (const char *const *)vp.pieces, .values = vp.logprob, .n = vp.n,
                         .cmap = KS_CMAP_SEQUENTIAL, .vmin = NAN, .vmax = NAN, .title = "tokens",
                         .value_label = "log p", .highlight = 3};
    draws("token strip", ks_token_strip_draw_v, &ts);
    {
        cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 800, 600);
        cairo_t *cr = cairo_create(s);
        ks_view_geom g;
        ks_view_geom_init(&g);
        ks_token_strip_draw(cr, &ts, 800, 600, &g, &e);
        int ntok, bad = overlaps(&g, KS_VIEW_ITEM_TOKEN, &ntok);
        int hit = ntok ? ks_view_geom_hit(&g, g.items[1].rect.x + 2, g.items[1].rect.y + 2, KS_VIEW_ITEM_TOKEN) : -1;
        tap_ok(ntok == vp.n && bad == 0 && hit >= 0 && g.items[hit].a == g.items[1].a,
               "token strip geometry: a box per token (%d), none overlapping, hit test finds token %lld", ntok,
               hit >= 0 ? (long long)g.items[hit].a : -1LL);
        ks_view_geom_free(&g);
        cairo_destroy(cr);
        cairo_surface_destroy(s);
    }
    ks_attention_grid grid;
    tap_ok(ks_view_attention_grid_load(d, 0, 32, &grid, &e) == KS_OK && grid.n_layers == 5 && grid.n_heads == 8,
           "attention grid: 5 x 8 maps %s", e.msg);
    draws("attention grid", ks_attention_grid_draw_v, &grid);
    ks_view_attention_grid_free(&grid);
    ks_heatmap *hm = NULL;
    tap_ok(ks_view_attention_load(d, 0, 1, 2, &hm, &e) == KS_OK && ks_heatmap_rows(hm) == vp.n, "head 1.2 loads %s",
           e.msg);
    if (hm) {
        /* each recorded attention row sums to 1 (softmax), masked cells NaN */
        float *row = malloc((size_t)vp.n * sizeof *row);
        double worst = 0;
        for (int64_t r = 0; r < vp.n; r++) {
            ks_heatmap_row(hm, r, row);
            double sum = 0;
            for (int64_t c = 0; c <= r; c++) sum += row[c];
            worst = fmax(worst, fabs(sum - 1));
        }
        tap_ok(worst < 1e-5 && isnan(ks_heatmap_at(hm, 0, 1)), "loaded rows sum to 1 within 1e-5 (%.2g), upper triangle NaN",
               worst);
        free(row);
        ks_attention_head ah = {.map = hm, .tokens = (const char *const *)vp.pieces, .layer = 1, .head = 2,
                                .mark_row = 4, .mark_col = -1};
        draws("attention head", ks_attention_head_draw_v, &ah);
        ks_token_bars tb2 = {.labels = (const char *const *)vp.pieces, .values = vp.logprob, .n = vp.n, .focus = 2,
                             .vmin = NAN, .vmax = NAN, .title = "bars"};
        draws("token bars", ks_token_bars_draw_v, &tb2);
        cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 800, 600);
        cairo_t *cr = cairo_create(s);
        ks_view_geom g;
        ks_view_geom_init(&g);
        ks_status st = ks_attention_token_draw(cr, hm, (const char *const *)vp.pieces, 1, 2, KS_ATTN_TO, 3, 0, 0, 800,
                                               600, &g, &e);
        int nb;
        overlaps(&g, KS_VIEW_ITEM_BAR, &nb);
        tap_ok(st == KS_OK && nb == vp.n - 3, "attention to token 3: one bar per later token (%d of %lld)", nb,
               (long long)vp.n - 3);
        tap_ok(ks_attention_token_draw(cr, hm, NULL, 1, 2, KS_ATTN_FROM, vp.n, 0, 0, 800, 600, &g, &e) == KS_ERR_RANGE,
               "a token past the end is KS_ERR_RANGE: %s", e.msg);
        ks_view_geom_free(&g);
        cairo_destroy(cr);
        cairo_surface_destroy(s);
    }
    ks_residual_norms rn;
    tap_ok(ks_view_residual_load(d, 0, -1, &rn, &e) == KS_OK && rn.n == 6 && rn.x[0] == 0 && rn.x[5] == 5,
           "residual: embedding + 5 resid_post points %s", e.msg);
    draws("residual norms", ks_residual_norms_draw_v, &rn);
    ks_residual_norms rn2;
    ks_view_residual_load(d2, 0, -1, &rn2, &e);
    if (rn2.n == 5 && rn.n == 6) {
        ks_compare_curves cc = {.n = 5, .x = rn.x + 1, .a = rn.mean + 1, .b = rn2.mean, .name_a = "A", .name_b = "B"};
        draws("compare curves", ks_compare_curves_draw_v, &cc);
    } else tap_ok(0, "second dump's residual (%d points) %s", rn2.n, e.msg);
    ks_view_residual_free(&rn2);
    ks_view_residual_free(&rn);
    ks_lens_table lt;
    tap_ok(ks_view_lens_load(d, m, 0, 0, 0, &lt, &e) == KS_OK && lt.n_layers == 5 && lt.n_pos == vp.n,
           "lens table: 5 layers x %lld positions %s", (long long)vp.n, e.msg);
    if (lt.n_layers) {
        /* at the last layer the lens is the model's own output: its top token is the dump's top-1 */
        int agree = 0;
        for (int64_t p = 0; p < lt.n_pos; p++) {
            float lp = vp.topk_logprobs[p * vp.topk];
            agree += fabs(exp(lp) - lt.top_prob[4 * lt.n_pos + p]) < 1e-4;
        }
        tap_ok(agree == lt.n_pos, "lens at the last layer: top probability = exp(dump's top-1 log-prob) within 1e-4 "
                                  "at %d of %lld positions", agree, (long long)lt.n_pos);
        draws("lens table", ks_lens_table_draw_v, &lt);
    }
    ks_view_lens_free(&lt);
    ks_heatmap *hb = NULL, *hd = NULL;
    if (hm && ks_view_attention_load(d2, 0, 1, 1, &hb, &e) == KS_OK && ks_heatmap_rows(hb) == ks_heatmap_rows(hm) &&
        ks_heatmap_diff(hm, hb, &hd, &e) == KS_OK) {
        ks_compare_maps cm = {.a = hm, .b = hb, .diff = hd, .name_a = "A", .name_b = "B",
                              .row_labels = (const char *const *)vp.pieces, .col_labels = (const char *const *)vp.pieces};
        draws("compare maps", ks_compare_maps_draw_v, &cm);
        tap_ok(fabsf(ks_heatmap_at(hd, 5, 2) - (ks_heatmap_at(hm, 5, 2) - ks_heatmap_at(hb, 5, 2))) < 1e-7 &&
                   isnan(ks_heatmap_at(hd, 2, 5)),
               "difference map = A − B cell by cell, NaN where masked");
    } else tap_ok(0, "compare maps: %s", e.msg);
    ks_heatmap_free(hb), ks_heatmap_free(hd), ks_heatmap_free(hm);
    ks_view_attribution va;
    tap_ok(ks_view_attribution_load(dump, "integrated_gradients", &va, &e) == KS_OK && va.ndim == 1 &&
               va.bars.labels != NULL,
           "attribution (1-D, labelled by token) %s", e.msg);
    if (va.ndim == 1) draws("attribution bars", ks_token_bars_draw_v, &va.bars);
    ks_view_attribution_free(&va);
    tap_ok(ks_view_attribution_load(dump, "head_attribution", &va, &e) == KS_OK && va.ndim == 2 && va.shape[0] == 5 &&
               va.shape[1] == 8 && !strcmp(va.row_labels[3], "L3") && !strcmp(va.col_labels[7], "H7"),
           "attribution (2-D layer x head) %s", e.msg);
    ks_view_attribution_free(&va);
    char probe[512], audit[512];
    snprintf(probe, sizeof probe, "%s/probe.h5", tmpdir);
    snprintf(audit, sizeof audit, "%s/results.h5", tmpdir);
    write_probe(probe);
    write_audit(audit);
    ks_probe_curves pc;
    tap_ok(ks_view_probe_load(probe, NULL, &pc, &e) == KS_OK && pc.n == 3 && fabs(pc.value[2] - 0.7) < 1e-12 &&
               pc.control && pc.shuffled_lo,
           "probe results: 3 layers of accuracy with controls %s", e.msg);
    draws("probe curves", ks_probe_curves_draw_v, &pc);
    ks_view_probe_free(&pc);
    ks_view_audit au;
    tap_ok(ks_view_audit_load(tmpdir, NULL, NULL, &au, &e) == KS_OK && au.forest.n_rows == 2 &&
               !strcmp(au.metric, "pct_stereotype") && au.items.n_rows == 2 && !strcmp(au.items.cells[2], "0") &&
               !strcmp(au.forest.rows[1].label, "race") && !strcmp(au.items.cells[1], "gender"),
           "audit results from the run directory: the headline metric's 2 categories, 2 items %s", e.msg);
    draws("audit scores", ks_audit_scores_draw_v, &au.forest);
    draws("audit items", ks_table_draw_v, &au.items);
    ks_view_audit_free(&au);
    {
        char wdir[512], wpath[600];
        snprintf(wdir, sizeof wdir, "%s/wide", tmpdir);
        mkdir(wdir, 0755);
        snprintf(wpath, sizeof wpath, "%s/results.h5", wdir);
        write_audit_wide(wpath, true);
        ks_view_audit wa;
        tap_ok(ks_view_audit_load(wdir, NULL, NULL, &wa, &e) != KS_OK && strstr(e.msg, "prediction") &&
                   strstr(e.msg, "integer (1 to 8 bytes)"),
               "an audit whose /prediction is a 16-byte integer is refused by name: %s", e.msg);
    }

    /* named errors of the loaders */
    tap_ok(ks_view_attention_load(dn, 0, 1, 0, &hm, &e) == KS_ERR_NOT_FOUND &&
               strstr(e.msg, "--hooks 'blocks.1.attn.hook_pattern'"),
           "a missing pattern hook names the --hooks to record: %s", e.msg);
    tap_ok(ks_view_attention_load(d2, 0, 1, 5, &hm, &e) == KS_ERR_NOT_FOUND && strstr(e.msg, "--heads"),
           "a head not recorded names --heads: %s", e.msg);
    tap_ok(ks_view_attention_load(d, 0, 7, 0, &hm, &e) == KS_ERR_RANGE && strstr(e.msg, "--layer 7"),
           "layer out of range: %s", e.msg);
    tap_ok(ks_view_attention_load(d, 2, 0, 0, &hm, &e) == KS_ERR_RANGE && strstr(e.msg, "--prompt 2"),
           "prompt out of range: %s", e.msg);
    ks_view_prompt vpn;
    tap_ok(ks_view_prompt_load(dn, 0, &vpn, &e) == KS_OK && vpn.topk == 0 && isnan(vpn.logprob[1]),
           "a dump without /logits loads with NaN log-probs");
    ks_view_prompt_free(&vpn);
    ks_view_prompt_free(&vp);
    ks_dump_close(d), ks_dump_close(d2), ks_dump_close(dn);
    ks_model_close(m);

    /* ---- koalascope render: PNG/SVG/PDF and the named errors */
    const char *fmts[3] = {"png", "svg", "pdf"}, *magic[3] = {"\x89PNG", "<?xml", "%PDF"};
    const char *vargs[] = {"--view token", "--view attention-grid", "--view head --layer 1 --head 2 --rows 2:10 --cols 0:8",
                           "--view attention --layer 1 --head 2 --from-token 5", "--view residual",
                           "--view lens --model MODEL --tokenizer TOK", "--view attribution",
                           "--view attribution --name head_attribution", "--view compare --other DUMP2 --layer 1 --head 1",
                           "--view compare --other DUMP2"};
    for (size_t i = 0; i < sizeof vargs / sizeof *vargs; i++) {
        char a[1024] = "", *o = a;
        /* expand the placeholders */
        for (const char *p = vargs[i]; *p;) {
            if (!strncmp(p, "MODEL", 5)) o += sprintf(o, "'%s'", model), p += 5;
            else if (!strncmp(p, "TOK", 3)) o += sprintf(o, "'%s'", tok), p += 3;
            else if (!strncmp(p, "DUMP2", 5)) o += sprintf(o, "%s", dump2), p += 5;
            else *o++ = *p++;
        }
        *o = 0;
        const char *fm = fmts[i % 3];
        char out[512];
        snprintf(out, sizeof out, "%s/v%zu.%s", tmpdir, i, fm);
        rc = sh("'%s' render %s %s -o %s 2> %s/err", ks_bin, dump, a, out, tmpdir);
        tap_ok(rc == 0 && file_starts(out, magic[i % 3], strlen(magic[i % 3])), "render %s -> .%s", vargs[i], fm);
    }
    char out[512];
    snprintf(out, sizeof out, "%s/probe.png", tmpdir);
    rc = sh("'%s' render %s --view probe -o %s", ks_bin, probe, out);
    tap_ok(rc == 0 && file_starts(out, "\x89PNG", 4), "render --view probe");
    snprintf(out, sizeof out, "%s/audit.pdf", tmpdir);
    rc = sh("'%s' render %s --view audit -o %s && '%s' render %s --view audit-items -o %s/items.svg", ks_bin, tmpdir,
            out, ks_bin, audit, tmpdir);
    tap_ok(rc == 0 && file_starts(out, "%PDF", 4), "render --view audit (a run directory) and audit-items");

    char err[512];
    snprintf(err, sizeof err, "%s/err", tmpdir);
    snprintf(out, sizeof out, "%s/bad.png", tmpdir);
    struct {
        const char *file, *args, *needle;
    } bad[] = {
        {dump, "--view nope", "unknown view 'nope'"},
        {noattn, "--view head --layer 1 --head 0", "--hooks 'blocks.1.attn.hook_pattern'"},
        {noattn, "--view attention-grid", "--hooks 'blocks.*.attn.hook_pattern'"},
        {dump, "--view head --layer 9 --head 0", "--layer 9 is outside 0..4"},
        {dump, "--view head --layer 0 --head 8", "--head 8 is outside 0..7"},
        {dump, "--view token --prompt 5", "--prompt 5"},
        {dump, "--view attention --from-token 999", "--from-token 999"},
        {dump, "--view probe", "needs probe results"},
        {probe, "--view head", "needs a dump"},
        {dump, "--view compare", "--other"},
        {dump, "--view head --rows 5:2", "--rows"},
        {tok, "--view token", "not an HDF5 file"},
        {noattn, "--view residual --position 99", "--position 99"},
        {dump, "--view attribution --name nope", "no /attributions/nope"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unlink(out);
        rc = sh("'%s' render '%s' %s -o %s 2> %s", ks_bin, bad[i].file, bad[i].args, out, err);
        tap_ok(rc == 1 && file_has(err, bad[i].needle) && !exists(out), "render %s: exit 1 naming '%s', no output",
               bad[i].args, bad[i].needle);
    }
    rc = sh("'%s' render %s --view token -o %s/x.gif 2> %s", ks_bin, dump, tmpdir, err);
    tap_ok(rc == 1 && file_has(err, ".png, .svg or .pdf"), "an output that is not .png/.svg/.pdf is refused");
    sh("rm -rf %s", tmpdir);
}

int main(int argc, char **argv) {
    snprintf(ks_bin, sizeof ks_bin, "%s", argc > 1 ? argv[1] : "build/cli/koalascope");
    test_colours();
    test_pyramid();
    test_hot_cell();
    test_labels();
    test_dump();
    return tap_done();
}
