/* ks_view_canvas.h — the widget that shows one page of the viewer: it draws the page with
 * cairo through ks_view_pages.c (which calls gui/ks_views.h), and turns pointer motion,
 * clicks and scrolling into hover text, navigation and zoom. */
#ifndef KS_VIEW_CANVAS_H
#define KS_VIEW_CANVAS_H

#include <gtk/gtk.h>

#include "ks_view_pages.h"

G_BEGIN_DECLS

#define KS_VIEW_TYPE_CANVAS (ks_view_canvas_get_type())
G_DECLARE_FINAL_TYPE(KsViewCanvas, ks_view_canvas, KS, VIEW_CANVAS, GtkWidget)

/* nav is the window's and outlives the canvas. Signals:
 *   "navigate" (int page): a click asks to show another page (nav already updated);
 *   "changed": a click or scroll changed nav (other pages and controls may follow);
 *   "activate-item": an audit item was clicked or Enter pressed on it (nav->item): show its
 *   internals;
 *   "failed" (string): drawing the page failed (the message is drawn too). */
KsViewCanvas *ks_view_canvas_new(KsViewPage page, ks_view_nav *nav);
KsViewPage ks_view_canvas_page(KsViewCanvas *self);
/* Redraw (nav or the document changed). */
void ks_view_canvas_refresh(KsViewCanvas *self);
/* Zoom the head-like pages about the window's centre (factor > 1: in). */
void ks_view_canvas_zoom(KsViewCanvas *self, double factor);
/* Draw the page into any cairo_t (exports), at the canvas's current size or w × h. */
ks_status ks_view_canvas_draw_to(KsViewCanvas *self, cairo_t *cr, double w, double h,
                                 ks_error *err);
/* Frames drawn so far (the self-test waits for one after switching pages). */
guint ks_view_canvas_frames(KsViewCanvas *self);

G_END_DECLS

#endif
