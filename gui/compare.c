/* compare.c — two runs side by side (two dumps, or base vs fine-tuned): two maps on one
 * shared range with their difference on a diverging, symmetric range; two per-layer curves
 * with their difference underneath. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

/* draw one panel into (x, 0, w, h) and append its items, shifted, to geom */
static ks_status panel(cairo_t *cr, const ks_heatmap_view *hv, double x, double w, double h, int idx,
                       ks_view_geom *geom, ks_view_geom *first, ks_error *err) {
    ks_view_geom sub;
    ks_view_geom_init(&sub);
    cairo_save(cr);
    cairo_translate(cr, x, 0);
    cairo_rectangle(cr, 0, 0, w, h);
    cairo_clip(cr);
    ks_status st = ks_heatmap_view_draw(cr, hv, w, h, &sub, err);
    cairo_restore(cr);
    ks_view_geom_add(geom, KS_VIEW_ITEM_PANEL, x, 0, w, h, idx, 0);
    for (int i = 0; i < sub.n_items; i++) {
        const ks_view_item *it = &sub.items[i];
        ks_view_geom_add(geom, it->kind, it->rect.x + x, it->rect.y, it->rect.w, it->rect.h, it->a, it->b);
    }
    if (first) {
        *first = sub;
        first->items = NULL, first->n_items = first->cap_items = 0;
        first->plot.x += x;
    }
    ks_view_geom_free(&sub);
    return st;
}

ks_status ks_compare_maps_draw(cairo_t *cr, const ks_compare_maps *v, double W, double H, ks_view_geom *geom,
                               ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || !v->a || !v->b || !v->diff) return ks_error_set(err, KS_ERR_ARG, "compare maps: a map is missing");
    if (ks_heatmap_rows(v->a) != ks_heatmap_rows(v->b) || ks_heatmap_cols(v->a) != ks_heatmap_cols(v->b) ||
        ks_heatmap_rows(v->a) != ks_heatmap_rows(v->diff) || ks_heatmap_cols(v->a) != ks_heatmap_cols(v->diff))
        return ks_error_set(err, KS_ERR_ARG, "compare maps: A is %lld x %lld, B %lld x %lld: they must match",
                            (long long)ks_heatmap_rows(v->a), (long long)ks_heatmap_cols(v->a),
                            (long long)ks_heatmap_rows(v->b), (long long)ks_heatmap_cols(v->b));
    double la, ha, lb, hb, ld, hd, vmin, vmax, dmin, dmax;
    ks_heatmap_range(v->a, &la, &ha);
    ks_heatmap_range(v->b, &lb, &hb);
    ks_heatmap_range(v->diff, &ld, &hd);
    double lo = fmin(isnan(la) ? INFINITY : la, isnan(lb) ? INFINITY : lb);
    double hi = fmax(isnan(ha) ? -INFINITY : ha, isnan(hb) ? -INFINITY : hb);
    ks_view_range_finish(KS_CMAP_SEQUENTIAL, lo, hi, &vmin, &vmax);
    ks_view_range_finish(KS_CMAP_DIVERGING, isnan(ld) ? 1 : ld, isnan(ld) ? 0 : hd, &dmin, &dmax);
    cairo_save(cr);
    ks_view_clear(cr, W, H);
    double fs = fmax(8, fmin(12, fmin(W, H) / 45)), top = 0;
    if (v->title) {
        cairo_set_source_rgb(cr, 0, 0, 0);
        ks_view_font(cr, fs * 1.15);
        ks_view_text(cr, v->title, fs * 0.6, fs * 0.5, 0, 0, W - fs);
        top = fs * 2.2;
    }
    cairo_translate(cr, 0, top);
    double pw = W / 3, ph = H - top;
    char ta[160], tb[160], td[200];
    snprintf(ta, sizeof ta, "A: %s", v->name_a ? v->name_a : "A");
    snprintf(tb, sizeof tb, "B: %s", v->name_b ? v->name_b : "B");
    snprintf(td, sizeof td, "A − B");
    ks_heatmap_view hv = {.map = v->a, .row_labels = v->row_labels, .col_labels = v->col_labels,
                          .row0 = v->row0, .row1 = v->row1, .col0 = v->col0, .col1 = v->col1,
                          .cmap = KS_CMAP_SEQUENTIAL, .vmin = vmin, .vmax = vmax, .title = ta,
                          .value_label = "value", .mark_row = -1, .mark_col = -1};
    ks_view_geom first;
    ks_view_geom_init(&first);
    ks_status st = panel(cr, &hv, 0, pw, ph, 0, geom, &first, err);
    hv.map = v->b, hv.title = tb;
    if (!st) st = panel(cr, &hv, pw, pw, ph, 1, geom, NULL, err);
    hv.map = v->diff, hv.title = td, hv.cmap = KS_CMAP_DIVERGING, hv.vmin = dmin, hv.vmax = dmax,
    hv.value_label = "difference";
    if (!st) st = panel(cr, &hv, 2 * pw, pw, ph, 2, geom, NULL, err);
    cairo_restore(cr);
    if (geom) {
        for (int i = 0; i < geom->n_items; i++) geom->items[i].rect.y += top;
        geom->plot = first.plot;
        geom->plot.y += top;
        geom->row0 = first.row0, geom->row1 = first.row1, geom->col0 = first.col0, geom->col1 = first.col1;
        geom->pool_level = first.pool_level;
    }
    return st;
}

ks_status ks_compare_curves_draw(cairo_t *cr, const ks_compare_curves *v, double W, double H, ks_view_geom *geom,
                                 ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n < 1 || !v->x || !v->a || !v->b) return ks_error_set(err, KS_ERR_ARG, "compare curves: no points");
    double d[4096];
    if (v->n > 4096) return ks_error_set(err, KS_ERR_ARG, "compare curves: %d points (at most 4096)", v->n);
    for (int i = 0; i < v->n; i++) d[i] = v->a[i] - v->b[i];
    ks_plot_series s[2] = {{.label = v->name_a ? v->name_a : "A", .x = v->x, .y = v->a, .n = v->n, .markers = true},
                           {.label = v->name_b ? v->name_b : "B", .x = v->x, .y = v->b, .n = v->n, .markers = true,
                            .dashed = true}};
    ks_plot_color(5, s[0].rgb);
    ks_plot_color(6, s[1].rgb);
    ks_plot top = {.title = v->title, .ylabel = v->ylabel, .ymin = NAN, .ymax = NAN, .integer_x = true,
                   .series = s, .n_series = 2};
    ks_plot_series ds = {.label = "A − B", .x = v->x, .y = d, .n = v->n, .markers = true};
    ks_plot_color(0, ds.rgb);
    ks_plot bot = {.xlabel = "layer", .ylabel = "A − B", .ymin = NAN, .ymax = NAN, .integer_x = true,
                   .series = &ds, .n_series = 1};
    double h1 = H * 0.6;
    ks_plot_frame f1, f2;
    cairo_save(cr);
    ks_plot_draw(cr, &top, W, h1, &f1);
    cairo_translate(cr, 0, h1);
    ks_plot_draw(cr, &bot, W, H - h1, &f2);
    cairo_restore(cr);
    ks_view_geom_add(geom, KS_VIEW_ITEM_PANEL, 0, 0, W, h1, 0, 0);
    ks_view_geom_add(geom, KS_VIEW_ITEM_PANEL, 0, h1, W, H - h1, 1, 0);
    if (geom) geom->plot = (ks_rect){f1.x0, f1.y0, f1.x1 - f1.x0, f1.y1 - f1.y0};
    return KS_OK;
}
