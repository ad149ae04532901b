/* matrix.c — a small matrix as coloured cells with a colour bar (ks_plot.h): koalascope diff draws
 * its per-head attention distances (layers × heads) with it, and any other
 * layer × head or layer × position table can be drawn the same way. (Large T × T maps that must
 * stay cheap at any size are heatmap.c's pyramids, ks_views.h.) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot_private.h"

static void value_range(const ks_matrix_chart *h, double *lo, double *hi) {
    double a = INFINITY, b = -INFINITY;
    for (int i = 0; i < h->rows * h->cols; i++)
        if (isfinite(h->values[i])) a = fmin(a, h->values[i]), b = fmax(b, h->values[i]);
    if (!isfinite(a)) a = 0, b = 1;
    if (a >= 0) a = 0; /* distances and divergences: 0 is white */
    if (!isnan(h->vmin)) a = h->vmin;
    if (!isnan(h->vmax)) b = h->vmax;
    if (!(b > a)) b = a + (a != 0 ? fabs(a) : 1.0);
    *lo = a;
    *hi = b;
}

/* white → dark blue, through light blue: an ordered single-hue scale that prints in grey */
static void ramp(double t, double rgb[3]) {
    static const double stops[3][3] = {{1, 1, 1}, {0.42, 0.68, 0.84}, {0.03, 0.19, 0.42}};
    t = fmin(1, fmax(0, t));
    int k = t < 0.5 ? 0 : 1;
    double u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
    for (int j = 0; j < 3; j++) rgb[j] = stops[k][j] + u * (stops[k + 1][j] - stops[k][j]);
}

void ks_matrix_color(const ks_matrix_chart *h, double v, double rgb[3]) {
    double lo, hi;
    value_range(h, &lo, &hi);
    ramp((v - lo) / (hi - lo), rgb);
}

void ks_matrix_draw(cairo_t *cr, const ks_matrix_chart *h, double W, double H, ks_plot_frame *frame) {
    double lo, hi;
    value_range(h, &lo, &hi);
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, W, H);
    cairo_fill(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    double fs = fmax(9, fmin(W, 900) / 60.0);
    cairo_set_font_size(cr, fs);
    double top = fs * (h->title ? 2.2 : 1) + (h->subtitle ? fs * 1.3 : 0);
    ks_plot_frame f = {.x0 = fs * 5, .x1 = W - fs * 8, .y0 = top + fs * 0.5, .y1 = H - fs * 3.5,
                       .xmin = 0, .xmax = h->cols > 0 ? h->cols : 1, .ymin = 0,
                       .ymax = h->rows > 0 ? h->rows : 1};
    if (f.x1 <= f.x0 + 10) f.x1 = f.x0 + 10;
    if (f.y1 <= f.y0 + 10) f.y1 = f.y0 + 10;
    cairo_set_source_rgb(cr, 0, 0, 0);
    if (h->title) {
        cairo_set_font_size(cr, fs * 1.25);
        ks_chart_text_at(cr, h->title, W / 2, fs * 0.5, 0.5, 0);
        cairo_set_font_size(cr, fs);
    }
    if (h->subtitle) {
        cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
        ks_chart_text_at(cr, h->subtitle, W / 2, fs * (h->title ? 2.0 : 0.5), 0.5, 0);
    }
    double cw = (f.x1 - f.x0) / f.xmax, ch = (f.y1 - f.y0) / f.ymax;
    for (int r = 0; r < h->rows; r++)
        for (int c = 0; c < h->cols; c++) {
            double v = h->values[(size_t)r * h->cols + c], rgb[3];
            double x = f.x0 + c * cw, y = f.y0 + r * ch;
            if (isfinite(v)) {
                ramp((v - lo) / (hi - lo), rgb);
                cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
                cairo_rectangle(cr, x, y, cw, ch);
                cairo_fill(cr);
            } else {
                cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
                cairo_rectangle(cr, x, y, cw, ch);
                cairo_fill(cr);
                cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
                cairo_set_line_width(cr, 0.5);
                cairo_move_to(cr, x, y + ch);
                cairo_line_to(cr, x + cw, y);
                cairo_stroke(cr);
            }
        }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
    cairo_stroke(cr);
    /* ticks: every cell when they fit, else a nice step */
    char buf[64];
    int xs = (int)fmax(1, ks_chart_nice_step(f.xmax, (int)fmax(2, (f.x1 - f.x0) / (fs * 2.5))));
    for (int c = 0; c < h->cols; c += xs) {
        snprintf(buf, sizeof buf, "%d", c);
        ks_chart_text_at(cr, buf, f.x0 + (c + 0.5) * cw, f.y1 + fs * 0.4, 0.5, 0);
    }
    int ys = (int)fmax(1, ks_chart_nice_step(f.ymax, (int)fmax(2, (f.y1 - f.y0) / (fs * 1.6))));
    for (int r = 0; r < h->rows; r += ys) {
        snprintf(buf, sizeof buf, "%d", r);
        ks_chart_text_at(cr, buf, f.x0 - fs * 0.4, f.y0 + (r + 0.5) * ch, 1, 0.5);
    }
    if (h->xlabel) ks_chart_text_at(cr, h->xlabel, (f.x0 + f.x1) / 2, H - fs * 1.5, 0.5, 0);
    if (h->ylabel) {
        cairo_save(cr);
        cairo_translate(cr, fs * 1.2, (f.y0 + f.y1) / 2);
        cairo_rotate(cr, -M_PI / 2);
        ks_chart_text_at(cr, h->ylabel, 0, 0, 0.5, 0.5);
        cairo_restore(cr);
    }
    /* colour bar */
    double bx = f.x1 + fs * 1.2, bw = fs * 1.2;
    int steps = 64;
    for (int i = 0; i < steps; i++) {
        double rgb[3];
        ramp(1.0 - (i + 0.5) / steps, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, bx, f.y0 + i * (f.y1 - f.y0) / steps, bw, (f.y1 - f.y0) / steps + 0.5);
        cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_rectangle(cr, bx, f.y0, bw, f.y1 - f.y0);
    cairo_stroke(cr);
    double step = ks_chart_nice_step(hi - lo, 4);
    for (double t = ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
        double y = f.y1 - (t - lo) / (hi - lo) * (f.y1 - f.y0);
        ks_chart_fmt_tick(buf, sizeof buf, t, step);
        ks_chart_text_at(cr, buf, bx + bw + fs * 0.3, y, 0, 0.5);
    }
    if (h->scale_label) ks_chart_text_at(cr, h->scale_label, bx + bw / 2, f.y0 - fs * 0.3, 0.5, 1);
    cairo_restore(cr);
    if (frame) *frame = f;
}

static void draw_heatmap(cairo_t *cr, const void *arg, double w, double h) {
    ks_matrix_draw(cr, arg, w, h, NULL);
}

ks_status ks_matrix_save(const ks_matrix_chart *h, const char *path, int width, int height,
                          ks_error *err) {
    if (h->rows < 0 || h->cols < 0 || (h->rows * h->cols > 0 && !h->values))
        return ks_error_set(err, KS_ERR_ARG, "%s: a heatmap needs rows x cols values", path);
    return ks_chart_save(path, width, height, draw_heatmap, h, err);
}
