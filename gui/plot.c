/* plot.c — line charts with bands on cairo (ks_plot.h). */
#include "plot_private.h"

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void ks_plot_color(int i, double rgb[3]) {
    /* Okabe & Ito, "Color Universal Design" (2008): black, orange, sky blue, bluish green,
     * yellow, blue, vermillion, reddish purple */
    static const unsigned char c[8][3] = {{0, 0, 0},     {230, 159, 0}, {86, 180, 233},
                                          {0, 158, 115}, {240, 228, 66}, {0, 114, 178},
                                          {213, 94, 0},  {204, 121, 167}};
    const unsigned char *k = c[((i % 8) + 8) % 8];
    for (int j = 0; j < 3; j++) rgb[j] = k[j] / 255.0;
}

double ks_plot_x(const ks_plot_frame *f, double x) {
    double span = f->xmax - f->xmin;
    return f->x0 + (span > 0 ? (x - f->xmin) / span : 0.5) * (f->x1 - f->x0);
}

double ks_plot_y(const ks_plot_frame *f, double y) {
    double span = f->ymax - f->ymin;
    return f->y1 - (span > 0 ? (y - f->ymin) / span : 0.5) * (f->y1 - f->y0);
}

/* A "nice" tick step (1, 2 or 5 × 10^k) giving about `want` ticks over span. */
double ks_chart_nice_step(double span, int want) {
    if (!(span > 0)) return 1;
    double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void ranges(const ks_plot *p, ks_plot_frame *f) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < p->n_series; s++) {
        const ks_plot_series *se = &p->series[s];
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i])) continue;
            xmin = fmin(xmin, se->x[i]);
            xmax = fmax(xmax, se->x[i]);
            const double *v[3] = {se->y, se->lo, se->hi};
            for (int k = 0; k < 3; k++)
                if (v[k] && isfinite(v[k][i])) {
                    ymin = fmin(ymin, v[k][i]);
                    ymax = fmax(ymax, v[k][i]);
                }
        }
    }
    if (!isfinite(xmin)) xmin = 0, xmax = 1;
    if (!isfinite(ymin)) ymin = 0, ymax = 1;
    if (xmax == xmin) xmin -= 0.5, xmax += 0.5;
    else if (p->integer_x) xmin -= 0.25, xmax += 0.25; /* markers at the ends stay whole */
    double pad = (ymax - ymin) * 0.05;
    if (!(pad > 0)) pad = fabs(ymax) > 0 ? fabs(ymax) * 0.05 : 0.5;
    ymin -= pad;
    ymax += pad;
    if (!isnan(p->ymin)) ymin = p->ymin;
    if (!isnan(p->ymax)) ymax = p->ymax;
    if (ymax <= ymin) ymax = ymin + 1;
    f->xmin = xmin;
    f->xmax = xmax;
    f->ymin = ymin;
    f->ymax = ymax;
}

void ks_chart_text_at(cairo_t *cr, const char *s, double x, double y, double ax, double ay) {
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    cairo_move_to(cr, x - e.x_bearing - ax * e.width, y - e.y_bearing - ay * e.height);
    cairo_show_text(cr, s);
}

void ks_chart_fmt_tick(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(buf, n, "%.*f", dec, v);
}

void ks_plot_draw(cairo_t *cr, const ks_plot *p, double W, double H, ks_plot_frame *frame) {
    ks_plot_frame f;
    ranges(p, &f);
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, W, H);
    cairo_fill(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    double fs = fmax(9, fmin(W, H) / 40);
    cairo_set_font_size(cr, fs);

    /* legend entries go right of the plot when there are any */
    double legend_w = 0;
    for (int s = 0; s < p->n_series; s++) {
        if (!p->series[s].label) continue;
        cairo_text_extents_t e;
        cairo_text_extents(cr, p->series[s].label, &e);
        legend_w = fmax(legend_w, e.x_advance + 3 * fs);
    }
    legend_w = fmin(legend_w, W * 0.35);
    double top = fs * (p->title ? 2.2 : 1) + (p->subtitle ? fs * 1.3 : 0);
    f.x0 = fs * 5.5;
    f.x1 = W - fs - legend_w;
    f.y0 = top;
    f.y1 = H - fs * 3.5;

    cairo_set_source_rgb(cr, 0, 0, 0);
    if (p->title) {
        cairo_set_font_size(cr, fs * 1.2);
        ks_chart_text_at(cr, p->title, W / 2, fs * 0.5, 0.5, 0);
        cairo_set_font_size(cr, fs);
    }
    if (p->subtitle) {
        cairo_set_font_size(cr, fs * 0.85);
        cairo_set_source_rgb(cr, 0.3, 0.3, 0.3);
        ks_chart_text_at(cr, p->subtitle, W / 2, fs * (p->title ? 2.0 : 0.5), 0.5, 0);
        cairo_set_font_size(cr, fs);
    }

    /* grid and ticks */
    cairo_set_line_width(cr, 1);
    double ys = ks_chart_nice_step(f.ymax - f.ymin, 6);
    char buf[32];
    for (double v = ceil(f.ymin / ys) * ys; v <= f.ymax + ys * 1e-9; v += ys) {
        double y = ks_plot_y(&f, v);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, f.x0, y);
        cairo_line_to(cr, f.x1, y);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        ks_chart_fmt_tick(buf, sizeof buf, v, ys);
        ks_chart_text_at(cr, buf, f.x0 - fs * 0.4, y, 1, 0.5);
    }
    double xs = ks_chart_nice_step(f.xmax - f.xmin, 8);
    if (p->integer_x && xs < 1) xs = 1;
    for (double v = ceil(f.xmin / xs) * xs; v <= f.xmax + xs * 1e-9; v += xs) {
        double x = ks_plot_x(&f, v);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, x, f.y0);
        cairo_line_to(cr, x, f.y1);
        cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
        ks_chart_fmt_tick(buf, sizeof buf, v, xs);
        ks_chart_text_at(cr, buf, x, f.y1 + fs * 0.4, 0.5, 0);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_rectangle(cr, f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
    cairo_stroke(cr);
    if (p->xlabel) ks_chart_text_at(cr, p->xlabel, (f.x0 + f.x1) / 2, H - fs * 1.6, 0.5, 0);
    if (p->ylabel) {
        cairo_save(cr);
        cairo_translate(cr, fs * 0.4, (f.y0 + f.y1) / 2);
        cairo_rotate(cr, -M_PI / 2);
        ks_chart_text_at(cr, p->ylabel, 0, 0, 0.5, 0);
        cairo_restore(cr);
    }

    /* bands, then lines on top */
    cairo_save(cr);
    cairo_rectangle(cr, f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
    cairo_clip(cr);
    for (int s = 0; s < p->n_series; s++) {
        const ks_plot_series *se = &p->series[s];
        if (!se->lo || !se->hi) continue;
        int i = 0;
        while (i < se->n) {
            /* one polygon per run of finite points */
            int a = i;
            while (a < se->n && !(isfinite(se->lo[a]) && isfinite(se->hi[a]) && isfinite(se->x[a]))) a++;
            int b = a;
            while (b < se->n && isfinite(se->lo[b]) && isfinite(se->hi[b]) && isfinite(se->x[b])) b++;
            if (b > a) {
                cairo_new_path(cr);
                for (int k = a; k < b; k++) cairo_line_to(cr, ks_plot_x(&f, se->x[k]), ks_plot_y(&f, se->hi[k]));
                for (int k = b - 1; k >= a; k--) cairo_line_to(cr, ks_plot_x(&f, se->x[k]), ks_plot_y(&f, se->lo[k]));
                cairo_close_path(cr);
                cairo_set_source_rgba(cr, se->rgb[0], se->rgb[1], se->rgb[2], 0.18);
                cairo_fill(cr);
            }
            i = b > a ? b : se->n;
        }
    }
    for (int s = 0; s < p->n_series; s++) {
        const ks_plot_series *se = &p->series[s];
        cairo_set_source_rgb(cr, se->rgb[0], se->rgb[1], se->rgb[2]);
        cairo_set_line_width(cr, fs * 0.18);
        double dash[2] = {fs * 0.5, fs * 0.35};
        cairo_set_dash(cr, dash, se->dashed ? 2 : 0, 0);
        bool pen = false;
        cairo_new_path(cr);
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                pen = false;
                continue;
            }
            double x = ks_plot_x(&f, se->x[i]), y = ks_plot_y(&f, se->y[i]);
            if (pen) cairo_line_to(cr, x, y);
            else cairo_move_to(cr, x, y);
            pen = true;
        }
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        if (se->markers)
            for (int i = 0; i < se->n; i++) {
                if (!isfinite(se->x[i]) || !isfinite(se->y[i])) continue;
                cairo_arc(cr, ks_plot_x(&f, se->x[i]), ks_plot_y(&f, se->y[i]), fs * 0.28, 0, 2 * M_PI);
                cairo_fill(cr);
            }
    }
    cairo_restore(cr);

    /* legend */
    double ly = f.y0 + fs * 0.5;
    for (int s = 0; s < p->n_series; s++) {
        const ks_plot_series *se = &p->series[s];
        if (!se->label) continue;
        double lx = f.x1 + fs * 0.6;
        cairo_set_source_rgb(cr, se->rgb[0], se->rgb[1], se->rgb[2]);
        cairo_set_line_width(cr, fs * 0.18);
        double dash[2] = {fs * 0.3, fs * 0.2};
        cairo_set_dash(cr, dash, se->dashed ? 2 : 0, 0);
        cairo_move_to(cr, lx, ly + fs * 0.5);
        cairo_line_to(cr, lx + fs * 1.6, ly + fs * 0.5);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_set_source_rgb(cr, 0, 0, 0);
        ks_chart_text_at(cr, se->label, lx + fs * 2.1, ly + fs * 0.5, 0, 0.5);
        ly += fs * 1.5;
    }
    cairo_restore(cr);
    if (frame) *frame = f;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

ks_status ks_chart_save(const char *path, int width, int height, ks_chart_draw_fn draw,
                        const void *arg, ks_error *err) {
    cairo_surface_t *sf;
    bool png = ends_with(path, ".png");
    if (png) sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width * 2, height * 2);
    else if (ends_with(path, ".svg")) sf = cairo_svg_surface_create(path, width, height);
    else if (ends_with(path, ".pdf")) sf = cairo_pdf_surface_create(path, width, height);
    else return ks_error_set(err, KS_ERR_ARG, "%s: a chart is written as .png, .svg or .pdf", path);
    cairo_status_t cs = cairo_surface_status(sf);
    if (cs) {
        cairo_surface_destroy(sf);
        return ks_error_set(err, KS_ERR_IO, "%s: cannot create: %s", path, cairo_status_to_string(cs));
    }
    cairo_t *cr = cairo_create(sf);
    if (png) cairo_scale(cr, 2, 2);
    draw(cr, arg, width, height);
    cs = cairo_status(cr);
    cairo_destroy(cr);
    if (!cs && png) cs = cairo_surface_write_to_png(sf, path);
    cairo_surface_finish(sf); /* vector surfaces write their file here */
    if (!cs) cs = cairo_surface_status(sf);
    cairo_surface_destroy(sf);
    if (cs) return ks_error_set(err, KS_ERR_IO, "%s: cannot write: %s", path, cairo_status_to_string(cs));
    return KS_OK;
}

static void draw_plot(cairo_t *cr, const void *arg, double w, double h) {
    ks_plot_draw(cr, arg, w, h, NULL);
}

ks_status ks_plot_save(const ks_plot *p, const char *path, int width, int height, ks_error *err) {
    return ks_chart_save(path, width, height, draw_plot, p, err);
}
