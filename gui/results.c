/* results.c — views of analysis results: probe metric curves per layer with their bands and
 * controls (ks_plot), an audit's per-category scores with CIs (ks_forest), and a plain text
 * table (an audit's items, or any list) that scrolls by rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

ks_status ks_probe_curves_draw(cairo_t *cr, const ks_probe_curves *v, double W, double H, ks_view_geom *geom,
                               ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n < 1 || !v->x || !v->value) return ks_error_set(err, KS_ERR_ARG, "probe curves: no points");
    ks_plot_series s[4];
    int ns = 0;
    char lab[96];
    snprintf(lab, sizeof lab, "%s (CI band)", v->metric ? v->metric : "metric");
    s[ns] = (ks_plot_series){.label = lab, .x = v->x, .y = v->value, .lo = v->lo, .hi = v->hi, .n = v->n,
                             .markers = true};
    ks_plot_color(5, s[ns++].rgb);
    if (v->shuffled) {
        s[ns] = (ks_plot_series){.label = "shuffled labels", .x = v->x, .y = v->shuffled, .lo = v->shuffled_lo,
                                 .hi = v->shuffled_hi, .n = v->n, .dashed = true};
        ks_plot_color(0, s[ns].rgb);
        for (int j = 0; j < 3; j++) s[ns].rgb[j] = 0.45;
        ns++;
    }
    if (v->majority) {
        s[ns] = (ks_plot_series){.label = "majority class", .x = v->x, .y = v->majority, .n = v->n, .dashed = true};
        ks_plot_color(1, s[ns++].rgb);
    }
    if (v->control) {
        s[ns] = (ks_plot_series){.label = "control task", .x = v->x, .y = v->control, .n = v->n, .dashed = true};
        ks_plot_color(3, s[ns++].rgb);
    }
    ks_plot p = {.title = v->title ? v->title : "probe by layer",
                 .subtitle = v->subtitle,
                 .xlabel = "layer",
                 .ylabel = v->metric,
                 .ymin = NAN,
                 .ymax = NAN,
                 .integer_x = true,
                 .series = s,
                 .n_series = ns};
    ks_plot_frame f;
    ks_plot_draw(cr, &p, W, H, &f);
    if (geom) geom->plot = (ks_rect){f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0};
    return KS_OK;
}

ks_status ks_audit_scores_draw(cairo_t *cr, const ks_forest *fo, double W, double H, ks_view_geom *geom,
                               ks_error *err) {
    ks_view_geom_reset(geom);
    if (!fo || fo->n_rows < 1 || !fo->rows) return ks_error_set(err, KS_ERR_ARG, "audit scores: no rows");
    ks_plot_frame f;
    ks_forest_draw(cr, fo, W, H, &f);
    for (int i = 0; i < fo->n_rows; i++) {
        double y = ks_forest_row_y(&f, fo->n_rows, i), rh = (f.y1 - f.y0) / fo->n_rows;
        ks_view_geom_add(geom, KS_VIEW_ITEM_ROW_LABEL, 0, y - rh / 2, f.x0, rh, i, 0);
    }
    if (geom) geom->plot = (ks_rect){f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0};
    return KS_OK;
}

ks_status ks_table_draw(cairo_t *cr, const ks_table *v, double W, double H, ks_view_geom *geom, ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n_cols < 1 || v->n_rows < 0 || (v->n_rows > 0 && !v->cells))
        return ks_error_set(err, KS_ERR_ARG, "table: no columns or cells");
    if (v->first < 0 || (v->n_rows > 0 && v->first >= v->n_rows))
        return ks_error_set(err, KS_ERR_ARG, "table: first row %lld is outside 0..%lld", (long long)v->first,
                            (long long)v->n_rows - 1);
    cairo_save(cr);
    double fs = ks_view_fs(W, H, 45), top = ks_view_begin(cr, W, H, v->title, fs);
    double tw = 0, x0 = fs * 0.6, avail = W - 2 * x0;
    for (int c = 0; c < v->n_cols; c++) tw += v->col_weight ? fmax(0, v->col_weight[c]) : 1;
    if (!(tw > 0)) tw = v->n_cols;
    double *cx = malloc((size_t)(v->n_cols + 1) * sizeof *cx);
    if (!cx) {
        cairo_restore(cr);
        return ks_error_set(err, KS_ERR_NOMEM, "table: out of memory");
    }
    cx[0] = x0;
    for (int c = 0; c < v->n_cols; c++) cx[c + 1] = cx[c] + avail * (v->col_weight ? fmax(0, v->col_weight[c]) : 1) / tw;
    double rh = fs * 1.6;
    /* header */
    ks_view_font(cr, fs);
    cairo_set_source_rgb(cr, 0.93, 0.93, 0.93);
    cairo_rectangle(cr, x0, top, avail, rh);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    for (int c = 0; c < v->n_cols; c++)
        ks_view_text(cr, v->headers ? v->headers[c] : "", cx[c] + fs * 0.3, top + rh / 2, 0, 0.5,
                     cx[c + 1] - cx[c] - fs * 0.5);
    ks_view_font(cr, fs);
    int64_t fit = (int64_t)((H - top - rh) / rh), shown = 0;
    double vmin = v->vmin, vmax = v->vmax;
    if (v->shade && (isnan(vmin) || isnan(vmax))) {
        double a, b;
        ks_colormap_auto_range(v->cmap, v->shade, v->n_rows, &a, &b);
        if (isnan(vmin)) vmin = a;
        if (isnan(vmax)) vmax = b;
    }
    for (int64_t r = v->first; r < v->n_rows && shown < fit; r++, shown++) {
        double y = top + rh * (1 + shown);
        if (r == v->selected) {
            cairo_set_source_rgb(cr, 1, 0.93, 0.75);
            cairo_rectangle(cr, x0, y, avail, rh);
            cairo_fill(cr);
        } else if (shown % 2) {
            cairo_set_source_rgb(cr, 0.975, 0.975, 0.975);
            cairo_rectangle(cr, x0, y, avail, rh);
            cairo_fill(cr);
        }
        for (int c = 0; c < v->n_cols; c++) {
            bool shaded = v->shade && c == v->shade_col && !isnan(v->shade[r]);
            if (shaded) {
                double rgb[3];
                ks_colormap_rgb(v->cmap, ks_colormap_t(v->cmap, v->shade[r], vmin, vmax), rgb);
                cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
                cairo_rectangle(cr, cx[c], y, cx[c + 1] - cx[c], rh);
                cairo_fill(cr);
            }
            const char *s = v->cells[(size_t)r * (size_t)v->n_cols + (size_t)c];
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
            if (s) ks_view_text(cr, s, cx[c] + fs * 0.3, y + rh / 2, 0, 0.5, cx[c + 1] - cx[c] - fs * 0.5);
            ks_view_geom_add(geom, KS_VIEW_ITEM_CELL, cx[c], y, cx[c + 1] - cx[c], rh, r, c);
        }
    }
    cairo_set_source_rgb(cr, 0.7, 0.7, 0.7);
    cairo_set_line_width(cr, 0.5);
    cairo_rectangle(cr, x0, top, avail, rh * (1 + shown));
    cairo_stroke(cr);
    cairo_restore(cr);
    if (geom) {
        geom->plot = (ks_rect){x0, top + rh, avail, rh * shown};
        geom->rows_shown = shown;
        geom->content_height = top + rh * (1 + v->n_rows) + fs;
    }
    free(cx);
    return KS_OK;
}
