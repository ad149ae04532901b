/* bench_views.c — what a 2,048-token attention map costs to draw (gui/heatmap.c): the whole
 * map zoomed out, a 64-token window zoomed in, and, as the baseline in the same run, the same
 * zoomed-out picture drawn the naive way (one cairo rectangle per cell, cost ∝ T²). Ratios
 * are what to compare across machines (docs/PERFORMANCE.md).
 * Usage: bench_views [T] [reps]   (default 2048, 20) */
#include <cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ks_views.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int64_t T = argc > 1 ? atoll(argv[1]) : 2048;
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    if (T < 64 || T > 16384 || reps < 1) {
        fprintf(stderr, "usage: bench_views [T 64..16384] [reps]\n");
        return 1;
    }
    float *m = malloc((size_t)(T * T) * sizeof *m);
    if (!m) return 1;
    uint64_t x = 88172645463325252ULL;
    for (int64_t i = 0; i < T * T; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        m[i] = (i % T) <= (i / T) ? (float)(x % 1000) / 1000 / (1 + i / T) : NAN;
    }
    ks_error e;
    ks_heatmap *h;
    double t0 = now();
    if (ks_heatmap_create(m, T, T, KS_POOL_MAX, &h, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    double t_build = now() - t0;
    const int W = 900, H = 900;
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
    cairo_t *cr = cairo_create(s);
    ks_view_geom g;
    ks_view_geom_init(&g);
    ks_heatmap_view v = {.map = h, .cmap = KS_CMAP_SEQUENTIAL, .vmin = 0, .vmax = 1, .mark_row = -1, .mark_col = -1};
    /* warm-up, then the two views */
    ks_heatmap_view_draw(cr, &v, W, H, &g, &e);
    t0 = now();
    for (int r = 0; r < reps; r++) ks_heatmap_view_draw(cr, &v, W, H, &g, &e);
    double t_out = (now() - t0) / reps;
    int lvl_out = g.pool_level;
    v.row0 = T / 2, v.row1 = T / 2 + 64, v.col0 = T / 2 - 64, v.col1 = T / 2;
    t0 = now();
    for (int r = 0; r < reps; r++) ks_heatmap_view_draw(cr, &v, W, H, &g, &e);
    double t_in = (now() - t0) / reps;
    /* baseline: every cell a rectangle into the same 900 px plot */
    double cell = (double)W / T;
    t0 = now();
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j <= i; j++) {
            double rgb[3];
            ks_colormap_rgb(KS_CMAP_SEQUENTIAL, m[i * T + j], rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, j * cell, i * cell, cell, cell);
            cairo_fill(cr);
        }
    double t_naive = now() - t0;
    printf("T %lld, %dx%d surface, %d reps\n", (long long)T, W, H, reps);
    printf("pyramid build (once per map)   %8.2f ms\n", t_build * 1e3);
    printf("zoomed out (whole map, level %d) %8.2f ms\n", lvl_out, t_out * 1e3);
    printf("zoomed in (64 x 64 window)      %8.2f ms\n", t_in * 1e3);
    printf("naive: a rectangle per cell     %8.2f ms\n", t_naive * 1e3);
    printf("ratio zoomed out / zoomed in    %8.2f\n", t_out / t_in);
    printf("ratio naive / zoomed out        %8.1f\n", t_naive / t_out);
    ks_view_geom_free(&g);
    cairo_destroy(cr);
    cairo_surface_destroy(s);
    ks_heatmap_free(h);
    free(m);
    return 0;
}
