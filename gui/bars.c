/* bars.c — one horizontal bar per token (label left, bar from the zero line): attention from
 * or to a token, and attribution per token, where the sign matters (positive and negative
 * bars in the diverging map's two ends). Labels thin out when rows get thinner than text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "plot_private.h"
#include "views_private.h"

ks_status ks_token_bars_draw(cairo_t *cr, const ks_token_bars *v, double W, double H, ks_view_geom *geom,
                             ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || v->n < 0 || (v->n > 0 && !v->values))
        return ks_error_set(err, KS_ERR_ARG, "token bars: %s", !v ? "no data" : "values missing or n < 0");
    if (v->first < 0 || (v->n > 0 && v->first >= v->n) || v->count < 0)
        return ks_error_set(err, KS_ERR_ARG, "token bars: window first %lld count %lld is outside 0..%lld",
                            (long long)v->first, (long long)v->count, (long long)v->n);
    double pos[3], neg[3];
    bool given = false;
    for (int j = 0; j < 3; j++) given |= v->pos_rgb[j] != 0 || v->neg_rgb[j] != 0;
    if (given) {
        for (int j = 0; j < 3; j++) pos[j] = v->pos_rgb[j], neg[j] = v->neg_rgb[j];
    } else {
        ks_colormap_rgb(KS_CMAP_DIVERGING, 1, pos);
        ks_colormap_rgb(KS_CMAP_DIVERGING, 0, neg);
    }
    cairo_save(cr);
    double fs = ks_view_fs(W, H, 40), top = ks_view_begin(cr, W, H, v->title, fs);
    if (v->subtitle) {
        ks_view_font(cr, fs * 0.85);
        cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
        ks_view_text(cr, v->subtitle, fs * 0.6, top - fs * 0.2, 0, 0, W - fs);
        top += fs * 1.3;
    }
    double bottom = H - fs * 3.2; /* axis ticks and caption */
    int64_t first = v->first, want = v->count > 0 ? v->count : v->n - first;
    if (first + want > v->n) want = v->n - first;
    double avail = bottom - top;
    double rh = want > 0 ? fmin(fs * 1.6, avail / want) : fs;
    if (rh < 2) rh = 2, want = (int64_t)(avail / rh);
    if (want < 0) want = 0;
    /* value range, always including 0 */
    double lo = 0, hi = 0;
    for (int64_t i = first; i < first + want; i++)
        if (isfinite(v->values[i])) lo = fmin(lo, v->values[i]), hi = fmax(hi, v->values[i]);
    if (!isnan(v->vmin)) lo = v->vmin;
    if (!isnan(v->vmax)) hi = v->vmax;
    if (!(hi > lo)) hi = lo + 1;
    double lfs = fmax(6, fmin(fs, rh * 0.85));
    ks_view_font(cr, lfs);
    char tb[256], nb[32];
    double lw = 0;
    for (int64_t i = first; i < first + want && lw < lfs * 12; i++) {
        if (v->labels) ks_view_token_label(v->labels[i], tb, sizeof tb);
        else snprintf(tb, sizeof tb, "%lld", (long long)i);
        char cb[256];
        ks_chart_clean_utf8(tb, cb, sizeof cb);
        cairo_text_extents_t e;
        cairo_text_extents(cr, cb, &e);
        lw = fmax(lw, e.x_advance);
    }
    lw = fmin(lw, lfs * 12) + lfs * 3.5; /* label and its index */
    double x0 = lw + fs * 0.5, x1 = W - fs * 1.5;
    if (x1 - x0 < fs * 4) x0 = W * 0.35;
#define XOF(val) (x0 + ((val) - lo) / (hi - lo) * (x1 - x0))
    /* thinned labels */
    double *cen = calloc((size_t)(want > 0 ? want : 1), sizeof *cen), *ext = calloc((size_t)(want > 0 ? want : 1), sizeof *ext);
    bool *keep = calloc((size_t)(want > 0 ? want : 1), sizeof *keep);
    if (!cen || !ext || !keep) {
        free(cen), free(ext), free(keep);
        cairo_restore(cr);
        return ks_error_set(err, KS_ERR_NOMEM, "token bars: out of memory");
    }
    for (int64_t k = 0; k < want; k++) cen[k] = top + (k + 0.5) * rh, ext[k] = lfs * 1.15;
    /* the focus row's label goes first */
    double *pri = NULL;
    if (v->focus >= first && v->focus < first + want && (pri = calloc((size_t)want, sizeof *pri)))
        pri[v->focus - first] = 1;
    ks_view_labels_thin(cen, ext, pri, want, lfs * 0.1, keep);
    free(pri);
    for (int64_t k = 0; k < want; k++) {
        int64_t i = first + k;
        double y = top + k * rh;
        if (i == v->focus) {
            cairo_set_source_rgb(cr, 1, 0.93, 0.75);
            cairo_rectangle(cr, 0, y, W, rh);
            cairo_fill(cr);
        }
        double val = v->values[i];
        if (isfinite(val)) {
            const double *c = val >= 0 ? pos : neg;
            cairo_set_source_rgb(cr, c[0], c[1], c[2]);
            double xa = XOF(fmax(lo, fmin(hi, 0))), xb = XOF(fmax(lo, fmin(hi, val)));
            double bx = fmin(xa, xb), bw = fmax(fabs(xb - xa), 0.5);
            cairo_rectangle(cr, bx, y + rh * 0.12, bw, rh * 0.76);
            cairo_fill(cr);
            ks_view_geom_add(geom, KS_VIEW_ITEM_BAR, bx, y, bw, rh, i, 0);
        }
        if (keep[k]) {
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
            if (v->labels) ks_view_token_label(v->labels[i], tb, sizeof tb);
            else snprintf(tb, sizeof tb, "%lld", (long long)i);
            snprintf(nb, sizeof nb, "%lld", (long long)i);
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
            ks_view_text(cr, nb, lfs * 0.3, cen[k], 0, 0.5, lfs * 3);
            cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
            double w = ks_view_text(cr, tb, x0 - lfs * 0.4, cen[k], 1, 0.5, lw - lfs * 3.3);
            ks_view_geom_add(geom, KS_VIEW_ITEM_ROW_LABEL, x0 - lfs * 0.4 - w, y, w, rh, i, 0);
        }
    }
    free(cen), free(ext), free(keep);
    /* zero line and the value axis */
    cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
    cairo_set_line_width(cr, 0.8);
    double xz = XOF(fmax(lo, fmin(hi, 0)));
    cairo_move_to(cr, xz, top);
    cairo_line_to(cr, xz, top + want * rh);
    cairo_stroke(cr);
    ks_view_font(cr, fs * 0.85);
    double step = ks_chart_nice_step(hi - lo, 5);
    for (double t = ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
        ks_chart_fmt_tick(tb, sizeof tb, t, step);
        cairo_move_to(cr, XOF(t), top + want * rh);
        cairo_line_to(cr, XOF(t), top + want * rh + fs * 0.3);
        cairo_stroke(cr);
        ks_chart_text_at(cr, tb, XOF(t), top + want * rh + fs * 0.5, 0.5, 0);
    }
    if (v->value_label) ks_view_text(cr, v->value_label, (x0 + x1) / 2, top + want * rh + fs * 1.9, 0.5, 0, x1 - x0);
#undef XOF
    cairo_restore(cr);
    if (geom) {
        geom->plot = (ks_rect){x0, top, x1 - x0, want * rh};
        geom->rows_shown = want;
        geom->content_height = top + (v->n - first) * fs * 1.6 + fs * 3.2;
    }
    return KS_OK;
}
