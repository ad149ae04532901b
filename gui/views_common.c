/* views_common.c — what every view uses: text that never breaks cairo (invalid UTF-8 cleaned,
 * long text cut), the geometry record that draws return for hit tests, and writing a view to
 * PNG/SVG/PDF. */
#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plot_private.h"
#include "views_private.h"

double ks_view_font_size(cairo_t *cr) {
    cairo_matrix_t m;
    cairo_get_font_matrix(cr, &m);
    return m.yy;
}

void ks_view_font(cairo_t *cr, double size) {
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

void ks_view_clear(cairo_t *cr, double w, double h) {
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, w, h);
    cairo_fill(cr);
    cairo_restore(cr);
}

double ks_view_fs(double w, double h, double div) { return fmax(8, fmin(12, fmin(w, h) / div)); }

double ks_view_begin(cairo_t *cr, double w, double h, const char *title, double fs) {
    ks_view_clear(cr, w, h);
    cairo_set_source_rgb(cr, 0, 0, 0);
    ks_view_font(cr, fs);
    if (!title) return fs * 0.6;
    ks_view_font(cr, fs * 1.15);
    ks_view_text(cr, title, fs * 0.6, fs * 0.5, 0, 0, w - fs);
    ks_view_font(cr, fs);
    return fs * 2.3;
}

double ks_view_text(cairo_t *cr, const char *s, double x, double y, double ax, double ay, double max_w) {
    char buf[1024];
    if (max_w > 0) ks_chart_fit(cr, s ? s : "", max_w, buf, sizeof buf);
    else ks_chart_clean_utf8(s, buf, sizeof buf);
    cairo_text_extents_t e;
    cairo_text_extents(cr, buf, &e);
    ks_chart_text_at(cr, buf, x, y, ax, ay);
    return e.x_advance;
}

void ks_view_geom_init(ks_view_geom *g) {
    if (g) memset(g, 0, sizeof *g);
}

void ks_view_geom_free(ks_view_geom *g) {
    if (!g) return;
    free(g->items);
    memset(g, 0, sizeof *g);
}

void ks_view_geom_reset(ks_view_geom *g) {
    if (!g) return;
    ks_view_item *items = g->items;
    int cap = g->cap_items;
    memset(g, 0, sizeof *g);
    g->items = items;
    g->cap_items = cap;
}

void ks_view_geom_add(ks_view_geom *g, ks_view_item_kind kind, double x, double y, double w, double h,
                      int64_t a, int64_t b) {
    if (!g) return;
    if (g->n_items == g->cap_items) {
        int cap = g->cap_items ? g->cap_items * 2 : 64;
        ks_view_item *it = realloc(g->items, (size_t)cap * sizeof *it);
        if (!it) return;
        g->items = it;
        g->cap_items = cap;
    }
    g->items[g->n_items++] = (ks_view_item){kind, {x, y, w, h}, a, b};
}

int ks_view_geom_hit(const ks_view_geom *g, double x, double y, int kind) {
    if (!g) return -1;
    for (int i = g->n_items - 1; i >= 0; i--) {
        const ks_view_item *it = &g->items[i];
        if (kind >= 0 && (int)it->kind != kind) continue;
        if (x >= it->rect.x && x < it->rect.x + it->rect.w && y >= it->rect.y && y < it->rect.y + it->rect.h)
            return i;
    }
    return -1;
}

bool ks_view_geom_cell(const ks_view_geom *g, double x, double y, int64_t *row, int64_t *col) {
    if (!g || !(g->plot.w > 0) || !(g->plot.h > 0)) return false;
    double fx = (x - g->plot.x) / g->plot.w, fy = (y - g->plot.y) / g->plot.h;
    if (fx < 0 || fx >= 1 || fy < 0 || fy >= 1) return false;
    *col = (int64_t)floor(g->col0 + fx * (g->col1 - g->col0));
    *row = (int64_t)floor(g->row0 + fy * (g->row1 - g->row0));
    return true;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

ks_status ks_view_save(const char *path, int width, int height, double scale, ks_view_draw_fn draw,
                       const void *view, ks_error *err) {
    if (!(scale > 0)) scale = 1;
    if (width < 1 || height < 1 || width > 32768 || height > 32768 || width * scale > 32767 ||
        height * scale > 32767)
        return ks_error_set(err, KS_ERR_ARG, "%s: size %dx%d (scale %g) is outside 1..32767 pixels", path,
                            width, height, scale);
    bool png = ends_with(path, ".png");
    cairo_surface_t *sf;
    if (png)
        sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)lround(width * scale),
                                        (int)lround(height * scale));
    else if (ends_with(path, ".svg")) sf = cairo_svg_surface_create(path, width, height);
    else if (ends_with(path, ".pdf")) sf = cairo_pdf_surface_create(path, width, height);
    else return ks_error_set(err, KS_ERR_ARG, "%s: a view is written as .png, .svg or .pdf", path);
    cairo_status_t cs = cairo_surface_status(sf);
    if (cs) {
        cairo_surface_destroy(sf);
        return ks_error_set(err, KS_ERR_IO, "%s: cannot create: %s", path, cairo_status_to_string(cs));
    }
    cairo_t *cr = cairo_create(sf);
    if (png) cairo_scale(cr, scale, scale);
    ks_view_geom geom;
    ks_view_geom_init(&geom);
    ks_status st = draw(cr, view, width, height, &geom, err);
    ks_view_geom_free(&geom);
    cs = cairo_status(cr);
    cairo_destroy(cr);
    if (!st && !cs && png) cs = cairo_surface_write_to_png(sf, path);
    cairo_surface_finish(sf); /* vector surfaces write their file here */
    if (!cs) cs = cairo_surface_status(sf);
    cairo_surface_destroy(sf);
    if (!st && cs) st = ks_error_set(err, KS_ERR_IO, "%s: cannot write: %s", path, cairo_status_to_string(cs));
    if (st && !png) unlink(path); /* no partial vector file passed off as the picture */
    if (st && png && cs) unlink(path);
    return st;
}
