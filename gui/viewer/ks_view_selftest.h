/* ks_view_selftest.h — the viewer's automation entry (koalascope-view --self-test DIR): once
 * the window has opened its file (and, for a model, run a prompt), show every page that has
 * something to show, save a screenshot of each into DIR (DIR/<page>.png the view, and
 * DIR/<page>-window.png the whole window), export one view as PNG/SVG/PDF, print one line per
 * page and the time to the first frame and the peak RSS on stdout, and quit with status 0
 * only when every page drew and nothing logged a warning or a critical. */
#ifndef KS_VIEW_SELFTEST_H
#define KS_VIEW_SELFTEST_H

#include "ks_view_app.h"
#include "ks_view_window.h"

/* Drive win once it has opened its file. prompt: for a model, what to run (NULL: a default);
 * compare: a second dump for the compare page (may be NULL); keys: for an audit directory,
 * GDK key names separated by commas ("Down,Down,Return") typed as real key presses
 * (ks_view_keys.h) into the focused items page, all items shown and none selected at the
 * start, instead of activating the items in turn (NULL: that). Each key must have an effect
 * within 20 s: Up/Down a new selection (printed: "key Down: item N selected"), Return the
 * item's internals opened or a toast saying why not (printed as for a click); a key without
 * one, or a key left after an item opened, fails the self-test. */
void ks_view_selftest_attach(KsViewWindow *win, KsViewApp *app, const char *dir,
                             const char *prompt, const char *compare, const char *keys);
/* No file was given: screenshot the empty window and quit. */
void ks_view_selftest_start_empty(KsViewWindow *win);

/* Monotonic time (µs) when main() started, for the time to the first frame. */
extern gint64 ks_view_start_us;

#endif
