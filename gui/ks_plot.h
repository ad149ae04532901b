/* ks_plot.h — line charts with confidence bands, drawn by cairo onto any cairo_t: the same
 * function draws into the viewer's widgets, into PNG/SVG/PDF files and into headless tests.
 * gui/plot.c; it needs cairo only (no GTK). */
#ifndef KS_PLOT_H
#define KS_PLOT_H

#include <cairo.h>
#include <stdbool.h>

#include "ks_status.h"

/* One line: points (x[i], y[i]); lo/hi (either NULL: no band) shade a band around it.
 * NaN values leave a gap. */
typedef struct {
    const char *label;   /* legend text; NULL: not in the legend */
    const double *x, *y, *lo, *hi;
    int n;
    double rgb[3];
    bool dashed;
    bool markers;
} ks_plot_series;

typedef struct {
    const char *title, *subtitle, *xlabel, *ylabel;
    double ymin, ymax;   /* NaN: from the data (with a margin) */
    bool integer_x;      /* x ticks at integers only (layers) */
    const ks_plot_series *series;
    int n_series;
} ks_plot;

/* The data area, in cairo units, where ks_plot_draw put it (for hit tests and tests). */
typedef struct {
    double x0, y0, x1, y1;     /* plot rectangle */
    double xmin, xmax, ymin, ymax;
} ks_plot_frame;

/* Draw p into the rectangle (0, 0, width, height) of cr. frame (may be NULL) receives the
 * data area and ranges. */
void ks_plot_draw(cairo_t *cr, const ks_plot *p, double width, double height,
                  ks_plot_frame *frame);

/* Map data coordinates to the device, by frame. */
double ks_plot_x(const ks_plot_frame *f, double x);
double ks_plot_y(const ks_plot_frame *f, double y);

/* Write p to path; the format follows the extension: .png (width × height pixels at 2×
 * scale), .svg or .pdf (points). KS_ERR_ARG for another extension, KS_ERR_IO when cairo
 * cannot write the file. */
ks_status ks_plot_save(const ks_plot *p, const char *path, int width, int height, ks_error *err);

/* A palette of distinguishable colours (Okabe & Ito 2008), index modulo 8. */
void ks_plot_color(int i, double rgb[3]);

/* ---------------------------------------------------------------- interval charts (forest.c) */

/* One row: a point estimate and its interval (lo/hi NaN: no whisker; value NaN: "n/a"). */
typedef struct {
    const char *label;  /* left of the axis, cut with "…" when too long */
    double value, lo, hi;
    int color;          /* palette index (ks_plot_color) */
    const char *note;   /* right of the row, e.g. "n=120, p=0.003"; NULL: none */
} ks_forest_row;

typedef struct {
    const char *title, *subtitle, *xlabel;
    double xmin, xmax;  /* NaN: from the data with a margin */
    double reference;   /* dashed vertical line (a metric's null); NaN: none */
    const ks_forest_row *rows;
    int n_rows;
    bool bars;          /* draw each value as a bar from the reference (0 when NaN) instead of
                           a point; lo/hi still add whiskers */
} ks_forest;

/* Rows top to bottom in the given order; frame (may be NULL) receives the data area, with
 * ymin 0 and ymax n_rows (row i is centred at ks_forest_row_y). */
void ks_forest_draw(cairo_t *cr, const ks_forest *f, double width, double height,
                    ks_plot_frame *frame);
double ks_forest_row_y(const ks_plot_frame *frame, int n_rows, int i);
/* The height (points) that gives each row room at this width. */
double ks_forest_height(const ks_forest *f, int width);
/* As ks_plot_save; height 0: ks_forest_height. */
ks_status ks_forest_save(const ks_forest *f, const char *path, int width, int height,
                         ks_error *err);

/* ---------------------------------------------------------------- matrix charts (matrix.c) */

/* A matrix of values as coloured cells (rows top to bottom, e.g. layers × heads) on a
 * sequential scale from white (vmin) to dark blue (vmax), with a colour bar. NaN cells are
 * hatched grey. */
typedef struct {
    const char *title, *subtitle, *xlabel, *ylabel, *scale_label;
    const double *values; /* [rows][cols], row-major */
    int rows, cols;
    double vmin, vmax;    /* NaN: from the data (vmin 0 when every value is >= 0) */
} ks_matrix_chart;

/* frame (may be NULL) receives the cell area: x from 0 to cols, y from 0 to rows. */
void ks_matrix_draw(cairo_t *cr, const ks_matrix_chart *h, double width, double height,
                     ks_plot_frame *frame);
/* Colour of value v on h's scale (vmin/vmax resolved as the drawing does). */
void ks_matrix_color(const ks_matrix_chart *h, double v, double rgb[3]);
ks_status ks_matrix_save(const ks_matrix_chart *h, const char *path, int width, int height,
                          ks_error *err);

#endif
