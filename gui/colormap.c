/* colormap.c — the two colour ramps every view shares (ks_views.h documents the anchors, which
 * are the definition the tests check against), value→t mapping, automatic ranges and the
 * colour bar. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

/* anchors at t = 0, 1/4, 2/4, 3/4, 1 (ks_views.h) */
static const unsigned char anchors[2][5][3] = {
    [KS_CMAP_SEQUENTIAL] = {{255, 255, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}},
    [KS_CMAP_DIVERGING] = {{33, 102, 172}, {146, 197, 222}, {255, 255, 255}, {244, 165, 130}, {178, 24, 43}},
};

void ks_colormap_rgb(ks_colormap m, double t, double rgb[3]) {
    if (isnan(t) || (m != KS_CMAP_SEQUENTIAL && m != KS_CMAP_DIVERGING)) {
        ks_view_hex_rgb(KS_VIEW_NODATA_RGB, rgb);
        return;
    }
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    int k = (int)(t * 4);
    if (k > 3) k = 3;
    double f = t * 4 - k;
    for (int j = 0; j < 3; j++) {
        double a = anchors[m][k][j], b = anchors[m][k + 1][j];
        rgb[j] = (a + (b - a) * f) / 255.0;
    }
}

double ks_colormap_t(ks_colormap m, double v, double vmin, double vmax) {
    if (isnan(v)) return NAN;
    if (!(vmax > vmin)) return m == KS_CMAP_DIVERGING ? 0.5 : v > 0 ? 1 : 0;
    double t = (v - vmin) / (vmax - vmin);
    return t < 0 ? 0 : t > 1 ? 1 : t;
}

const char *ks_colormap_name(ks_colormap m) {
    return m == KS_CMAP_DIVERGING ? "diverging" : "sequential";
}

ks_status ks_colormap_parse(const char *s, ks_colormap *out, ks_error *err) {
    if (s && !strcmp(s, "sequential")) *out = KS_CMAP_SEQUENTIAL;
    else if (s && !strcmp(s, "diverging")) *out = KS_CMAP_DIVERGING;
    else return ks_error_set(err, KS_ERR_ARG, "colormap '%s' is not sequential or diverging", s ? s : "");
    return KS_OK;
}

void ks_colormap_auto_range(ks_colormap m, const float *v, int64_t n, double *vmin, double *vmax) {
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
    ks_view_range_finish(m, lo, hi, vmin, vmax);
}

void ks_view_range_finish(ks_colormap m, double lo, double hi, double *vmin, double *vmax) {
    if (!(lo <= hi)) {
        *vmin = 0;
        *vmax = 1;
        return;
    }
    if (m == KS_CMAP_DIVERGING) {
        double a = fmax(fabs(lo), fabs(hi));
        if (!(a > 0)) a = 1;
        *vmin = -a;
        *vmax = a;
    } else {
        *vmin = fmin(0, lo);
        *vmax = hi > *vmin ? hi : *vmin + 1;
    }
}

void ks_view_hex_rgb(unsigned hex, double rgb[3]) {
    rgb[0] = ((hex >> 16) & 255) / 255.0;
    rgb[1] = ((hex >> 8) & 255) / 255.0;
    rgb[2] = (hex & 255) / 255.0;
}

void ks_colormap_draw_legend(cairo_t *cr, ks_colormap m, double vmin, double vmax, const char *caption,
                             double x, double y, double w, double h) {
    cairo_save(cr);
    bool horiz = w > h;
    double fs = ks_view_font_size(cr);
    /* the bar takes a strip of the rect; ticks and caption the rest */
    double bx = x, by = y, bw = w, bh = h;
    if (horiz) {
        bh = fmin(h * 0.35, fs * 1.0);
        if (caption) by = y + fs * 1.3;
    } else {
        bw = fmin(w * 0.3, fs * 1.0);
        if (caption) by = y + fs * 1.5, bh = h - fs * 1.5;
    }
    cairo_pattern_t *g = horiz ? cairo_pattern_create_linear(bx, 0, bx + bw, 0)
                               : cairo_pattern_create_linear(0, by + bh, 0, by);
    for (int k = 0; k <= 16; k++) {
        double rgb[3];
        ks_colormap_rgb(m, k / 16.0, rgb);
        cairo_pattern_add_color_stop_rgb(g, k / 16.0, rgb[0], rgb[1], rgb[2]);
    }
    cairo_rectangle(cr, bx, by, bw, bh);
    cairo_set_source(cr, g);
    cairo_fill_preserve(cr);
    cairo_pattern_destroy(g);
    cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
    cairo_set_line_width(cr, 0.5);
    cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    if (caption) ks_view_text(cr, caption, horiz ? x : x, y, 0, 0, horiz ? w : w);
    double span = vmax - vmin;
    if (span > 0 && isfinite(span)) {
        double step = ks_chart_nice_step(span, horiz ? 4 : 5);
        char buf[32];
        cairo_set_font_size(cr, fs * 0.85);
        for (double v = ceil(vmin / step) * step; v <= vmax + step * 1e-9; v += step) {
            double f = (v - vmin) / span;
            ks_chart_fmt_tick(buf, sizeof buf, v, step);
            if (horiz) ks_chart_text_at(cr, buf, bx + f * bw, by + bh + fs * 0.3, 0.5, 0);
            else ks_chart_text_at(cr, buf, bx + bw + fs * 0.3, by + bh - f * bh, 0, 0.5);
        }
    }
    cairo_restore(cr);
}
