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

#endif
