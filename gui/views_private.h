/* views_private.h — what the view files of gui/ share: text helpers, geometry recording and
 * ranges. Not installed; ks_views.h is the interface. */
#ifndef KS_VIEWS_PRIVATE_H
#define KS_VIEWS_PRIVATE_H

#include <stddef.h>

#include "ks_views.h"

/* 0xRRGGBB to r, g, b in [0, 1] */
void ks_view_hex_rgb(unsigned hex, double rgb[3]);
/* vmin/vmax from the finite data range [lo, hi] (lo > hi: none) as ks_colormap_auto_range */
void ks_view_range_finish(ks_colormap m, double lo, double hi, double *vmin, double *vmax);
/* cr's current font size */
double ks_view_font_size(cairo_t *cr);
/* s made valid UTF-8 and cut with "…" to max_w (max_w <= 0: not cut), drawn with its ink box
 * anchored at (ax, ay) ∈ [0,1]² at (x, y); returns the width drawn */
double ks_view_text(cairo_t *cr, const char *s, double x, double y, double ax, double ay,
                    double max_w);
/* the base font of every view: sans-serif at size */
void ks_view_font(cairo_t *cr, double size);
/* the base font size of a view of w x h (8..12, min(w, h) / div) */
double ks_view_fs(double w, double h, double div);
/* clear (0, 0, w, h), draw the title (NULL: none) at the top left, leave the base font set
 * and black selected; returns where the content starts (y) */
double ks_view_begin(cairo_t *cr, double w, double h, const char *title, double fs);
/* white background over (0, 0, w, h) */
void ks_view_clear(cairo_t *cr, double w, double h);

/* a token piece for a label: newline as ⏎, tab as →, other control bytes as '?' */
void ks_view_token_label(const char *piece, char *out, size_t cap);
/* clamp a heatmap window (all-empty axis: the whole axis); KS_ERR_ARG when outside */
ks_status ks_view_window(const ks_heatmap *h, double *r0, double *r1, double *c0, double *c1,
                         ks_error *err);
/* paint the window of h into the rectangle from the right pooled level; returns the level */
int ks_view_paint_map(cairo_t *cr, const ks_heatmap *h, double r0, double r1, double c0,
                      double c1, double px, double py, double pw, double ph, ks_colormap cmap,
                      double vmin, double vmax);

/* geometry */
void ks_view_geom_reset(ks_view_geom *g);
/* append an item (an allocation failure drops it: geometry is advisory to the caller) */
void ks_view_geom_add(ks_view_geom *g, ks_view_item_kind kind, double x, double y, double w,
                      double h, int64_t a, int64_t b);

#endif
