/* ks_view_window.h — the viewer's main window: a sidebar of pages (one ks_view_canvas per
 * view), navigation controls (prompt, layer, head, from/to), the live-run bar when a model is
 * open, token search, exports, and errors as toasts. Its size and last page are remembered
 * in $XDG_CONFIG_HOME/koalascope/viewer.ini. */
#ifndef KS_VIEW_WINDOW_H
#define KS_VIEW_WINDOW_H

#include <adwaita.h>

#include "ks_view_canvas.h"
#include "ks_view_document.h"

G_BEGIN_DECLS

#define KS_VIEW_TYPE_WINDOW (ks_view_window_get_type())
G_DECLARE_FINAL_TYPE(KsViewWindow, ks_view_window, KS, VIEW_WINDOW, AdwApplicationWindow)

KsViewWindow *ks_view_window_new(GtkApplication *app);

/* Open path in this window (worker thread); errors become toasts. Signals:
 *   "opened" (gboolean ok, string message): the open finished;
 *   "run-finished" (gboolean ok, string message): a live run finished;
 *   "drilled" (gboolean ok, string message): an audit item's internals opened (or not: the
 *   message is the toast shown). */
void ks_view_window_open(KsViewWindow *self, const char *path, const char *tokenizer);
/* Start a live run as the Run button does (the model must be open). */
void ks_view_window_run(KsViewWindow *self, const char *prompt, const char *template_name,
                        int generate);
void ks_view_window_toast(KsViewWindow *self, const char *message);
/* Open the internals of the audit item selected on the items page (nav->item), as a click
 * or Enter does: its prompts of the audit's drill-down dump, on a worker. */
void ks_view_window_activate_item(KsViewWindow *self);

/* For the self-test and the shortcuts: pages and their widgets. */
KsViewDocument *ks_view_window_document(KsViewWindow *self);
ks_view_nav *ks_view_window_nav(KsViewWindow *self);
KsViewCanvas *ks_view_window_canvas(KsViewWindow *self, KsViewPage page);
void ks_view_window_show_page(KsViewWindow *self, KsViewPage page);
KsViewPage ks_view_window_current_page(KsViewWindow *self);
/* Write the current page to path (.png, .svg, .pdf) at the canvas's size. */
gboolean ks_view_window_export(KsViewWindow *self, const char *path, GError **error);
/* Navigation changed from outside (self-test): update the controls and redraw. */
void ks_view_window_sync(KsViewWindow *self);

G_END_DECLS

#endif
