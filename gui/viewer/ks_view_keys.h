/* ks_view_keys.h — real key presses for the self-test (--self-test-keys): a key typed here
 * goes out to the display server and comes back to the viewer as any keyboard's does, so
 * GDK, GTK's event propagation and the focused widget's key controllers all run.
 *
 * GTK 4 has no public way to make a GdkEvent (gdk_event_new and gtk_test_widget_send_key
 * are gone; gtk_widget_activate_action skips the key handling that is under test), so the
 * route is the X server's XTEST extension (Xvfb has it): X11 displays only, and only in a
 * viewer built with gtk4-x11 and libXtst (KS_VIEW_HAVE_XTEST). */
#ifndef KS_VIEW_KEYS_H
#define KS_VIEW_KEYS_H

#include <gtk/gtk.h>

/* Whether keys can be typed into the display of widget; when not, *why says why (a static
 * string). */
gboolean ks_view_keys_available(GtkWidget *widget, const char **why);

/* Press and release keyval (a GDK keyval, e.g. GDK_KEY_Down) on the display of widget, as
 * a keyboard would. The key goes to the window that has the display's input focus; the
 * events arrive later, through the main loop. FALSE with error set when the display cannot
 * type it. */
gboolean ks_view_keys_type(GtkWidget *widget, guint keyval, GError **error);

#endif
