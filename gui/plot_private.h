/* plot_private.h — what the chart files of gui/ share (plot.c defines them). */
#ifndef KS_PLOT_PRIVATE_H
#define KS_PLOT_PRIVATE_H

#include <stddef.h>

#include "ks_plot.h"

/* s drawn with its anchor (ax, ay) in [0, 1]² of its ink box at (x, y) */
void ks_chart_text_at(cairo_t *cr, const char *s, double x, double y, double ax, double ay);
/* a "nice" tick step (1, 2 or 5 × 10^k) giving about want ticks over span */
double ks_chart_nice_step(double span, int want);
/* tick label of v for ticks step apart */
void ks_chart_fmt_tick(char *buf, size_t n, double v, double step);
/* s as valid UTF-8 in out (an invalid byte becomes '?', a character is never split): cairo
 * refuses to draw anything after invalid text (forest.c) */
void ks_chart_clean_utf8(const char *s, char *out, size_t cap);
/* s cut (with "…") to fit max_w, cleaned as above (forest.c) */
void ks_chart_fit(cairo_t *cr, const char *s, double max_w, char *out, size_t cap);
/* Write a chart to path (.png at 2× scale, .svg, .pdf by extension): draw(cr, arg, w, h). */
typedef void (*ks_chart_draw_fn)(cairo_t *cr, const void *arg, double width, double height);
ks_status ks_chart_save(const char *path, int width, int height, ks_chart_draw_fn draw,
                        const void *arg, ks_error *err);

#endif
