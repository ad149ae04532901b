/* residual.c — the residual stream of one prompt: per-layer norms (a line chart through
 * ks_plot) and the logit-lens table (layers × positions, each cell the lens's top next token
 * shaded by its probability). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

ks_status ks_residual_norms_draw(cairo_t *cr, const ks_residual_norms *v, double W, double H, ks_view_geom *geom,
                                 ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n < 1 || !v->x || (!v->at_pos && !v->mean))
        return ks_error_set(err, KS_ERR_ARG, "residual norms: no points");
    ks_plot_series s[2];
    int ns = 0;
    char lab[64];
    if (v->mean) {
        s[ns] = (ks_plot_series){.label = v->lo ? "mean over positions (band: min–max)" : "mean over positions",
                                 .x = v->x, .y = v->mean, .lo = v->lo, .hi = v->hi, .n = v->n, .markers = true};
        ks_plot_color(5, s[ns].rgb);
        ns++;
    }
    if (v->at_pos) {
        snprintf(lab, sizeof lab, "position %lld", (long long)v->position);
        s[ns] = (ks_plot_series){.label = lab, .x = v->x, .y = v->at_pos, .n = v->n, .markers = true};
        ks_plot_color(6, s[ns].rgb);
        ns++;
    }
    ks_plot p = {.title = v->title ? v->title : "residual stream norm",
                 .subtitle = v->subtitle,
                 .xlabel = "layer (0: embedding; L + 1: after block L)",
                 .ylabel = "‖x‖₂",
                 .ymin = 0,
                 .ymax = NAN,
                 .integer_x = true,
                 .series = s,
                 .n_series = ns};
    ks_plot_frame f;
    ks_plot_draw(cr, &p, W, H, &f);
    if (geom) geom->plot = (ks_rect){f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0};
    return KS_OK;
}

static bool dark(const double rgb[3]) { return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] < 0.45; }

ks_status ks_lens_table_draw(cairo_t *cr, const ks_lens_table *v, double W, double H, ks_view_geom *geom,
                             ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n_layers < 1 || v->n_pos < 1 || !v->top_text || !v->top_prob)
        return ks_error_set(err, KS_ERR_ARG, "lens table: no cells");
    if (v->first < 0 || v->first >= v->n_pos || v->count < 0)
        return ks_error_set(err, KS_ERR_ARG, "lens table: window first %lld is outside 0..%lld",
                            (long long)v->first, (long long)v->n_pos - 1);
    cairo_save(cr);
    double fs = ks_view_fs(W, H, 45), top = ks_view_begin(cr, W, H, v->title, fs);
    double left = fs * 3.5, legend_w = fs * 5.5, head_h = fs * 1.8;
    double cw_min = fs * 4.6;
    int64_t fit = (int64_t)((W - left - legend_w - fs) / cw_min);
    if (fit < 1) fit = 1;
    int64_t count = v->count > 0 ? v->count : v->n_pos - v->first;
    if (count > v->n_pos - v->first) count = v->n_pos - v->first;
    if (count > fit) count = fit;
    double cw = (W - left - legend_w - fs) / (double)count;
    if (cw > fs * 9) cw = fs * 9;
    double ch = fmin(fs * 2.6, (H - top - head_h - fs) / v->n_layers);
    if (ch < fs * 1.2) {
        cairo_restore(cr);
        return ks_error_set(err, KS_ERR_ARG, "lens table: %gx%g is too small for %d layers", W, H, v->n_layers);
    }
    double y0 = top + head_h;
    char tb[256], nb[32];
    /* position headers: the token at that position */
    ks_view_font(cr, fs * 0.85);
    for (int64_t k = 0; k < count; k++) {
        int64_t p = v->first + k;
        double x = left + k * cw;
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        ks_view_token_label(v->pos_labels ? v->pos_labels[p] : "", tb, sizeof tb);
        ks_view_text(cr, tb, x + cw / 2, top + head_h * 0.3, 0.5, 0.5, cw - fs * 0.3);
        snprintf(nb, sizeof nb, "%lld", (long long)p);
        cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
        ks_view_text(cr, nb, x + cw / 2, top + head_h * 0.8, 0.5, 0.5, cw - fs * 0.3);
        ks_view_geom_add(geom, KS_VIEW_ITEM_COL_LABEL, x, top, cw, head_h, p, 0);
    }
    for (int l = 0; l < v->n_layers; l++) {
        double y = y0 + l * ch;
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        ks_view_font(cr, fs * 0.85);
        ks_view_text(cr, v->layer_labels ? v->layer_labels[l] : "", left - fs * 0.4, y + ch / 2, 1, 0.5, left - fs * 0.6);
        ks_view_geom_add(geom, KS_VIEW_ITEM_ROW_LABEL, 0, y, left, ch, l, 0);
        for (int64_t k = 0; k < count; k++) {
            int64_t p = v->first + k;
            size_t i = (size_t)l * (size_t)v->n_pos + (size_t)p;
            double x = left + k * cw, pr = v->top_prob[i], rgb[3];
            ks_colormap_rgb(KS_CMAP_SEQUENTIAL, isnan(pr) ? NAN : ks_colormap_t(KS_CMAP_SEQUENTIAL, pr, 0, 1), rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, x, y, cw, ch);
            cairo_fill_preserve(cr);
            cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
            cairo_set_line_width(cr, 0.5);
            cairo_stroke(cr);
            if (!isnan(pr)) {
                bool d = dark(rgb);
                cairo_set_source_rgb(cr, d ? 1 : 0.05, d ? 1 : 0.05, d ? 1 : 0.05);
                ks_view_font(cr, fs * 0.9);
                ks_view_token_label(v->top_text[i], tb, sizeof tb);
                ks_view_text(cr, tb, x + cw / 2, y + ch * 0.36, 0.5, 0.5, cw - fs * 0.3);
                ks_view_font(cr, fs * 0.7);
                snprintf(nb, sizeof nb, "%.2f", pr);
                ks_view_text(cr, nb, x + cw / 2, y + ch * 0.75, 0.5, 0.5, cw - fs * 0.3);
            }
            ks_view_geom_add(geom, KS_VIEW_ITEM_CELL, x, y, cw, ch, l, p);
        }
    }
    double lx = left + count * cw + fs * 0.6, lh = fmax(fs * 6, fmin(fs * 14, v->n_layers * ch));
    ks_view_font(cr, fs * 0.9);
    ks_colormap_draw_legend(cr, KS_CMAP_SEQUENTIAL, 0, 1, "probability", lx, y0, legend_w - fs * 0.5, lh);
    ks_view_geom_add(geom, KS_VIEW_ITEM_LEGEND, lx, y0, legend_w - fs * 0.5, lh, 0, 0);
    cairo_restore(cr);
    if (geom) {
        geom->plot = (ks_rect){left, y0, count * cw, v->n_layers * ch};
        geom->rows_shown = count;
    }
    return KS_OK;
}
