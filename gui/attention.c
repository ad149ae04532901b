/* attention.c — the attention views: the layers × heads grid of small maps of one prompt,
 * a zoomed head with token labels on both axes, and "attention from / to token t" (one row
 * or column of a head as bars over tokens). Probabilities are shown on a fixed 0..1 range so
 * that maps compare across heads and prompts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

ks_status ks_attention_grid_draw(cairo_t *cr, const ks_attention_grid *v, double W, double H, ks_view_geom *geom,
                                 ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n_layers < 1 || v->n_heads < 1 || !v->maps)
        return ks_error_set(err, KS_ERR_ARG, "attention grid: no maps");
    double vmin = isnan(v->vmin) ? 0 : v->vmin, vmax = isnan(v->vmax) ? 1 : v->vmax;
    cairo_save(cr);
    double fs = ks_view_fs(W, H, 45), top = ks_view_begin(cr, W, H, v->title, fs);
    double left = fs * 3, legend_w = fs * 5.5, head_h = fs * 1.4;
    double aw = W - left - legend_w - fs, ah = H - top - head_h - fs * 0.5;
    double gap = fmax(1, fmin(6, fs * 0.35));
    double cell = fmin((aw + gap) / v->n_heads, (ah + gap) / v->n_layers) - gap;
    if (cell < 2) {
        cairo_restore(cr);
        return ks_error_set(err, KS_ERR_ARG, "attention grid: %gx%g is too small for %d x %d maps", W, H,
                            v->n_layers, v->n_heads);
    }
    double gy = top + head_h;
    char buf[32];
    ks_view_font(cr, fs * 0.85);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    /* head numbers over the columns, thinned when panels are narrow */
    double last = -INFINITY;
    for (int h = 0; h < v->n_heads; h++) {
        double cx = left + h * (cell + gap) + cell / 2;
        snprintf(buf, sizeof buf, "H%d", v->head_ids ? v->head_ids[h] : h);
        cairo_text_extents_t e;
        cairo_text_extents(cr, buf, &e);
        if (cx - e.x_advance / 2 < last + fs * 0.3) continue;
        ks_chart_text_at(cr, buf, cx, top + head_h / 2, 0.5, 0.5);
        ks_view_geom_add(geom, KS_VIEW_ITEM_COL_LABEL, cx - e.x_advance / 2, top, e.x_advance, head_h, h, 0);
        last = cx + e.x_advance / 2;
    }
    last = -INFINITY;
    for (int l = 0; l < v->n_layers; l++) {
        double cy = gy + l * (cell + gap) + cell / 2;
        if (cy - fs * 0.6 < last) continue;
        snprintf(buf, sizeof buf, "L%d", v->layer_ids ? v->layer_ids[l] : l);
        ks_chart_text_at(cr, buf, left - fs * 0.4, cy, 1, 0.5);
        ks_view_geom_add(geom, KS_VIEW_ITEM_ROW_LABEL, 0, cy - fs * 0.6, left - fs * 0.4, fs * 1.2, l, 0);
        last = cy + fs * 0.6;
    }
    for (int l = 0; l < v->n_layers; l++)
        for (int h = 0; h < v->n_heads; h++) {
            double x = left + h * (cell + gap), y = gy + l * (cell + gap);
            const ks_heatmap *m = v->maps[(size_t)l * v->n_heads + h];
            if (m) {
                ks_view_paint_map(cr, m, 0, (double)ks_heatmap_rows(m), 0, (double)ks_heatmap_cols(m), x, y, cell,
                                  cell, KS_CMAP_SEQUENTIAL, vmin, vmax);
            } else { /* not recorded: crossed out */
                double rgb[3];
                ks_view_hex_rgb(KS_VIEW_NODATA_RGB, rgb);
                cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
                cairo_rectangle(cr, x, y, cell, cell);
                cairo_fill(cr);
                cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
                cairo_set_line_width(cr, 0.7);
                cairo_move_to(cr, x, y), cairo_line_to(cr, x + cell, y + cell);
                cairo_move_to(cr, x + cell, y), cairo_line_to(cr, x, y + cell);
                cairo_stroke(cr);
            }
            bool sel = l == v->sel_layer && h == v->sel_head;
            cairo_set_source_rgb(cr, sel ? 0.9 : 0.6, sel ? 0.4 : 0.6, sel ? 0 : 0.6);
            cairo_set_line_width(cr, sel ? 2.5 : 0.5);
            cairo_rectangle(cr, x, y, cell, cell);
            cairo_stroke(cr);
            ks_view_geom_add(geom, KS_VIEW_ITEM_PANEL, x, y, cell, cell, l, h);
        }
    double lx = left + v->n_heads * (cell + gap) + fs * 0.5, lh = fmin(fs * 14, fmax(fs * 6, v->n_layers * (cell + gap)));
    ks_view_font(cr, fs * 0.9);
    ks_colormap_draw_legend(cr, KS_CMAP_SEQUENTIAL, vmin, vmax, "attention", lx, gy, legend_w - fs * 0.5, lh);
    ks_view_geom_add(geom, KS_VIEW_ITEM_LEGEND, lx, gy, legend_w - fs * 0.5, lh, 0, 0);
    cairo_restore(cr);
    if (geom) geom->plot = (ks_rect){left, gy, v->n_heads * (cell + gap) - gap, v->n_layers * (cell + gap) - gap};
    return KS_OK;
}

ks_status ks_attention_head_draw(cairo_t *cr, const ks_attention_head *v, double W, double H, ks_view_geom *geom,
                                 ks_error *err) {
    if (!v || !v->map) {
        ks_view_geom_reset(geom);
        return ks_error_set(err, KS_ERR_ARG, "attention head: no map");
    }
    char title[160];
    snprintf(title, sizeof title, "layer %d, head %d — rows: query token, columns: key token", v->layer, v->head);
    ks_heatmap_view hv = {.map = v->map,
                          .row_labels = v->tokens,
                          .col_labels = v->tokens,
                          .row0 = v->row0,
                          .row1 = v->row1,
                          .col0 = v->col0,
                          .col1 = v->col1,
                          .cmap = KS_CMAP_SEQUENTIAL,
                          .vmin = 0,
                          .vmax = 1,
                          .title = title,
                          .value_label = "attention",
                          .mark_row = v->mark_row,
                          .mark_col = v->mark_col};
    return ks_heatmap_view_draw(cr, &hv, W, H, geom, err);
}

ks_status ks_attention_token_draw(cairo_t *cr, const ks_heatmap *map, const char *const *tokens, int layer, int head,
                                  ks_attn_direction dir, int64_t t, int64_t first, int64_t count, double W, double H,
                                  ks_view_geom *geom, ks_error *err) {
    ks_view_geom_reset(geom);
    if (!map) return ks_error_set(err, KS_ERR_ARG, "attention from/to token: no map");
    int64_t T = ks_heatmap_rows(map);
    if (ks_heatmap_cols(map) != T)
        return ks_error_set(err, KS_ERR_ARG, "attention from/to token: the map is not square");
    if (t < 0 || t >= T)
        return ks_error_set(err, KS_ERR_RANGE, "token %lld is outside the prompt's 0..%lld", (long long)t,
                            (long long)T - 1);
    float *vals = malloc((size_t)T * sizeof *vals);
    if (!vals) return ks_error_set(err, KS_ERR_NOMEM, "attention from/to token: out of memory");
    if (dir == KS_ATTN_FROM) ks_heatmap_row(map, t, vals);
    else ks_heatmap_col(map, t, vals);
    char piece[96], title[256], sub[160];
    ks_view_token_label(tokens ? tokens[t] : "", piece, sizeof piece);
    snprintf(title, sizeof title, "attention %s token %lld '%s'", dir == KS_ATTN_FROM ? "from" : "to",
             (long long)t, piece);
    snprintf(sub, sizeof sub, "layer %d, head %d — %s", layer, head,
             dir == KS_ATTN_FROM ? "how much token t reads each earlier token (its row)"
                                 : "how much each later token reads token t (its column)");
    ks_token_bars b = {.labels = tokens,
                       .values = vals,
                       .n = T,
                       .first = first,
                       .count = count,
                       .focus = t,
                       .vmin = 0,
                       .vmax = 1,
                       .title = title,
                       .subtitle = sub,
                       .value_label = "attention probability"};
    ks_colormap_rgb(KS_CMAP_SEQUENTIAL, 0.8, b.pos_rgb);
    ks_colormap_rgb(KS_CMAP_SEQUENTIAL, 0.8, b.neg_rgb);
    ks_status st = ks_token_bars_draw(cr, &b, W, H, geom, err);
    free(vals);
    return st;
}
