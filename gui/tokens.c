/* tokens.c — the token strip: a prompt's tokens as boxes coloured by a value per token
 * (log-probability, attribution, probe score), wrapped into lines, with a colour bar; the
 * boxes come back as geometry so the viewer can show a token's id and top-k on hover. */
#include <math.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

/* dark fills get white text */
static bool dark(const double rgb[3]) { return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2] < 0.45; }

ks_status ks_token_strip_draw(cairo_t *cr, const ks_token_strip *v, double W, double H, ks_view_geom *geom,
                              ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n < 0 || (v->n > 0 && !v->pieces))
        return ks_error_set(err, KS_ERR_ARG, "token strip: %s", !v ? "no data" : "pieces missing or n < 0");
    double vmin = v->vmin, vmax = v->vmax;
    if (isnan(vmin) || isnan(vmax)) {
        double a = 0, b = 1;
        if (v->values) ks_colormap_auto_range(v->cmap, v->values, v->n, &a, &b);
        if (isnan(vmin)) vmin = a;
        if (isnan(vmax)) vmax = b;
    }
    cairo_save(cr);
    ks_view_clear(cr, W, H);
    double fs = fmax(9, fmin(14, W / 50));
    double top = fs * 0.6;
    cairo_set_source_rgb(cr, 0, 0, 0);
    if (v->title) {
        ks_view_font(cr, fs * 1.1);
        ks_view_text(cr, v->title, fs * 0.6, fs * 0.5, 0, 0, W - fs * 12);
        top = fs * 2.2;
    }
    if (v->value_label) {
        ks_view_font(cr, fs * 0.8);
        double lw = fmin(fs * 16, W * 0.4);
        ks_colormap_draw_legend(cr, v->cmap, vmin, vmax, v->value_label, W - lw - fs * 0.6, fs * 0.3, lw, fs * 3.4);
        ks_view_geom_add(geom, KS_VIEW_ITEM_LEGEND, W - lw - fs * 0.6, fs * 0.3, lw, fs * 3.4, 0, 0);
        top = fmax(top, fs * 4.2);
    }
    ks_view_font(cr, fs);
    double pad = fs * 0.3, lh = fs * 1.75, x0 = fs * 0.6, x = x0, y = top - v->scroll_y, right = W - fs * 0.6;
    cairo_rectangle(cr, 0, top, W, H - top);
    cairo_clip(cr);
    char tb[512], cb[512];
    for (int64_t i = 0; i < v->n; i++) {
        ks_view_token_label(v->pieces[i], tb, sizeof tb);
        ks_chart_clean_utf8(tb, cb, sizeof cb);
        cairo_text_extents_t e;
        cairo_text_extents(cr, cb, &e);
        double w = fmin(e.x_advance + 2 * pad, right - x0);
        if (x + w > right && x > x0) x = x0, y += lh;
        double rgb[3] = {1, 1, 1};
        double val = v->values ? v->values[i] : NAN;
        bool coloured = !isnan(val);
        if (coloured) ks_colormap_rgb(v->cmap, ks_colormap_t(v->cmap, val, vmin, vmax), rgb);
        if (y + lh > top && y < H) { /* visible */
            cairo_rectangle(cr, x, y + fs * 0.1, w - 1, lh - fs * 0.2);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_fill_preserve(cr);
            cairo_set_source_rgb(cr, 0.75, 0.75, 0.75);
            cairo_set_line_width(cr, 0.5);
            cairo_stroke(cr);
            if (i == v->highlight) {
                cairo_set_source_rgb(cr, 0.9, 0.4, 0);
                cairo_set_line_width(cr, 2);
                cairo_rectangle(cr, x - 1, y, w + 1, lh);
                cairo_stroke(cr);
            }
            if (coloured && dark(rgb)) cairo_set_source_rgb(cr, 1, 1, 1);
            else cairo_set_source_rgb(cr, 0.05, 0.05, 0.05);
            ks_view_text(cr, cb, x + pad, y + lh / 2, 0, 0.5, w - pad);
            ks_view_geom_add(geom, KS_VIEW_ITEM_TOKEN, x, y, w, lh, i, 0);
        }
        x += w;
        if (v->pieces[i] && strchr(v->pieces[i], '\n')) x = x0, y += lh; /* the text's own line breaks */
    }
    cairo_restore(cr);
    if (geom) {
        geom->content_height = y + lh + v->scroll_y + fs * 0.5;
        geom->plot = (ks_rect){0, top, W, H - top};
        geom->rows_shown = v->n;
    }
    return KS_OK;
}
