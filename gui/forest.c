/* forest.c — interval ("forest") charts: one row per estimate, a point with its confidence
 * interval and a dashed reference line (ks_plot.h). Bias-audit reports draw one per audit. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "plot_private.h"

void ks_chart_clean_utf8(const char *s, char *out, size_t cap) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned c = *p;
        int k = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        bool ok = k >= 0;
        unsigned v = k == 0 ? c : k == 1 ? c & 0x1f : k == 2 ? c & 0x0f : c & 0x07;
        for (int i = 1; ok && i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80) ok = false;
            else v = (v << 6) | (p[i] & 0x3f);
        }
        if (ok && ((k == 1 && v < 0x80) || (k == 2 && v < 0x800) || (k == 3 && v < 0x10000) ||
                   v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)))
            ok = false;
        size_t len = ok ? (size_t)k + 1 : 1;
        if (o + len + 1 > cap) break;
        if (ok) memcpy(out + o, p, len);
        else out[o] = '?';
        o += len;
        p += len;
    }
    out[o] = 0;
}

void ks_chart_fit(cairo_t *cr, const char *s, double max_w, char *out, size_t cap) {
    ks_chart_clean_utf8(s, out, cap > 4 ? cap - 3 : cap);
    cairo_text_extents_t e;
    cairo_text_extents(cr, out, &e);
    size_t n = strlen(out);
    while (e.x_advance > max_w && n > 1) {
        n--;
        while (n > 1 && ((unsigned char)out[n] & 0xc0) == 0x80) n--; /* whole UTF-8 characters */
        if (n + 4 > cap) continue;
        memcpy(out + n, "\xe2\x80\xa6", 4);
        cairo_text_extents(cr, out, &e);
    }
}

static void x_range(const ks_forest *f, double *lo, double *hi) {
    double a = INFINITY, b = -INFINITY;
    for (int i = 0; i < f->n_rows; i++) {
        const double v[3] = {f->rows[i].value, f->rows[i].lo, f->rows[i].hi};
        for (int k = 0; k < 3; k++)
            if (isfinite(v[k])) a = fmin(a, v[k]), b = fmax(b, v[k]);
    }
    if (isfinite(f->reference)) a = fmin(a, f->reference), b = fmax(b, f->reference);
    if (!isfinite(a)) a = 0, b = 1;
    double pad = (b - a) * 0.06;
    if (!(pad > 0)) pad = fabs(a) > 0 ? fabs(a) * 0.1 : 0.5;
    a -= pad;
    b += pad;
    if (!isnan(f->xmin)) a = f->xmin;
    if (!isnan(f->xmax)) b = f->xmax;
    if (b <= a) b = a + 1;
    *lo = a;
    *hi = b;
}

double ks_forest_height(const ks_forest *f, int width) {
    double fs = fmax(9, fmin(width, 900) / 60.0);
    double top = fs * (f->title ? 2.2 : 1) + (f->subtitle ? fs * 1.3 : 0);
    int rows = f->n_rows > 0 ? f->n_rows : 1;
    return top + rows * fs * 1.9 + fs * 4;
}

void ks_forest_draw(cairo_t *cr, const ks_forest *f, double W, double H, ks_plot_frame *frame) {
    ks_plot_frame fr;
    x_range(f, &fr.xmin, &fr.xmax);
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, W, H);
    cairo_fill(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    double fs = fmax(9, fmin(W, 900) / 60.0);
    cairo_set_font_size(cr, fs);
    /* columns: labels | plot | notes */
    double label_w = 0, note_w = 0;
    for (int i = 0; i < f->n_rows; i++) {
        cairo_text_extents_t e;
        char cb[256];
        ks_chart_clean_utf8(f->rows[i].label, cb, sizeof cb);
        cairo_text_extents(cr, cb, &e);
        label_w = fmax(label_w, e.x_advance);
        if (f->rows[i].note) {
            ks_chart_clean_utf8(f->rows[i].note, cb, sizeof cb);
            cairo_text_extents(cr, cb, &e);
            note_w = fmax(note_w, e.x_advance);
        }
    }
    label_w = fmin(label_w + fs, W * 0.3);
    note_w = fmin(note_w + fs, W * 0.25);
    double top = fs * (f->title ? 2.2 : 1) + (f->subtitle ? fs * 1.3 : 0);
    fr.x0 = fs + label_w;
    fr.x1 = W - fs - note_w;
    fr.y0 = top;
    fr.y1 = H - fs * 3.2;
    fr.ymin = 0;
    fr.ymax = f->n_rows > 0 ? f->n_rows : 1;
    if (fr.x1 <= fr.x0 + 10) fr.x1 = fr.x0 + 10;
    if (fr.y1 <= fr.y0 + 10) fr.y1 = fr.y0 + 10;

    cairo_set_source_rgb(cr, 0, 0, 0);
    char tb[512];
    if (f->title) {
        cairo_set_font_size(cr, fs * 1.25);
        ks_chart_clean_utf8(f->title, tb, sizeof tb);
        ks_chart_text_at(cr, tb, W / 2, fs * 0.5, 0.5, 0);
        cairo_set_font_size(cr, fs);
    }
    if (f->subtitle) {
        cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
        ks_chart_clean_utf8(f->subtitle, tb, sizeof tb);
        ks_chart_text_at(cr, tb, W / 2, fs * (f->title ? 2.0 : 0.5), 0.5, 0);
    }
    /* grid and x ticks */
    double step = ks_chart_nice_step(fr.xmax - fr.xmin, 6);
    char buf[64];
    for (double t = ceil(fr.xmin / step) * step; t <= fr.xmax + step * 1e-9; t += step) {
        double x = ks_plot_x(&fr, t);
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_set_line_width(cr, 1);
        cairo_move_to(cr, x, fr.y0);
        cairo_line_to(cr, x, fr.y1);
        cairo_stroke(cr);
        ks_chart_fmt_tick(buf, sizeof buf, t, step);
        cairo_set_source_rgb(cr, 0, 0, 0);
        ks_chart_text_at(cr, buf, x, fr.y1 + fs * 0.4, 0.5, 0);
    }
    if (f->xlabel) {
        ks_chart_clean_utf8(f->xlabel, tb, sizeof tb);
        ks_chart_text_at(cr, tb, (fr.x0 + fr.x1) / 2, H - fs * 1.4, 0.5, 0);
    }
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, fr.x0, fr.y0, fr.x1 - fr.x0, fr.y1 - fr.y0);
    cairo_stroke(cr);
    /* the reference line */
    if (isfinite(f->reference) && f->reference >= fr.xmin && f->reference <= fr.xmax) {
        double x = ks_plot_x(&fr, f->reference);
        double dash[2] = {4, 3};
        cairo_set_dash(cr, dash, 2, 0);
        cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
        cairo_move_to(cr, x, fr.y0);
        cairo_line_to(cr, x, fr.y1);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
    }
    if (f->n_rows == 0) {
        cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
        ks_chart_text_at(cr, "no data", (fr.x0 + fr.x1) / 2, (fr.y0 + fr.y1) / 2, 0.5, 0.5);
    }
    double rh = (fr.y1 - fr.y0) / (f->n_rows > 0 ? f->n_rows : 1);
    for (int i = 0; i < f->n_rows; i++) {
        const ks_forest_row *r = &f->rows[i];
        double y = ks_forest_row_y(&fr, f->n_rows, i);
        char lab[256];
        cairo_set_source_rgb(cr, 0, 0, 0);
        ks_chart_fit(cr, r->label, label_w - fs * 0.5, lab, sizeof lab);
        ks_chart_text_at(cr, lab, fr.x0 - fs * 0.5, y, 1, 0.5);
        if (r->note) {
            ks_chart_fit(cr, r->note, note_w - fs * 0.5, lab, sizeof lab);
            ks_chart_text_at(cr, lab, fr.x1 + fs * 0.5, y, 0, 0.5);
        }
        double rgb[3];
        ks_plot_color(r->color, rgb);
        cairo_save(cr);
        cairo_rectangle(cr, fr.x0, fr.y0, fr.x1 - fr.x0, fr.y1 - fr.y0);
        cairo_clip(cr); /* a value outside a given xmin/xmax stays inside the frame */
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_set_line_width(cr, fmax(1.5, fs / 6));
        if (isfinite(r->value) && isfinite(r->lo) && isfinite(r->hi)) {
            double a = ks_plot_x(&fr, fmax(r->lo, fr.xmin)), b = ks_plot_x(&fr, fmin(r->hi, fr.xmax));
            double cap = fmin(rh * 0.25, fs * 0.45);
            cairo_move_to(cr, a, y);
            cairo_line_to(cr, b, y);
            if (r->lo >= fr.xmin) cairo_move_to(cr, a, y - cap), cairo_line_to(cr, a, y + cap);
            if (r->hi <= fr.xmax) cairo_move_to(cr, b, y - cap), cairo_line_to(cr, b, y + cap);
            cairo_stroke(cr);
        }
        if (isfinite(r->value) && f->bars) {
            double z = isfinite(f->reference) ? f->reference : 0.0;
            double a = ks_plot_x(&fr, fmin(fmax(z, fr.xmin), fr.xmax)), b = ks_plot_x(&fr, r->value);
            double bh = fmin(rh * 0.7, fs * 1.2);
            cairo_rectangle(cr, fmin(a, b), y - bh / 2, fabs(b - a), bh);
            cairo_fill(cr);
        } else if (isfinite(r->value)) {
            double x = ks_plot_x(&fr, r->value);
            cairo_arc(cr, x, y, fmin(rh * 0.3, fs * 0.4), 0, 2 * M_PI);
            cairo_fill(cr);
        }
        cairo_restore(cr);
        if (!isfinite(r->value)) {
            cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
            ks_chart_text_at(cr, "n/a", (fr.x0 + fr.x1) / 2, y, 0.5, 0.5);
        }
    }
    cairo_restore(cr);
    if (frame) *frame = fr;
}

double ks_forest_row_y(const ks_plot_frame *fr, int n_rows, int i) {
    double rh = (fr->y1 - fr->y0) / (n_rows > 0 ? n_rows : 1);
    return fr->y0 + rh * (i + 0.5);
}

static bool ends_with_png(const char *s) {
    size_t n = strlen(s);
    return n >= 4 && strcmp(s + n - 4, ".png") == 0;
}

static void draw_forest(cairo_t *cr, const void *arg, double w, double h) {
    ks_forest_draw(cr, arg, w, h, NULL);
}

ks_status ks_forest_save(const ks_forest *f, const char *path, int width, int height,
                         ks_error *err) {
    if (height <= 0) height = (int)ceil(ks_forest_height(f, width));
    if (ends_with_png(path) && (height > 16000 || width > 16000)) /* drawn at 2x; cairo's limit is 32767 px */
        return ks_error_set(err, KS_ERR_ARG, "%s: a %d x %d chart (%d rows) is too large for a "
                            "PNG; write it as .svg or .pdf", path, width, height, f->n_rows);
    return ks_chart_save(path, width, height, draw_forest, f, err);
}
