/* ks_view_keys.c — key presses through the X server's XTEST extension (see ks_view_keys.h).
 *
 * XTestFakeKeyEvent makes the server generate the key as if from its keyboard device: it
 * reaches GDK as an XInput2 key event of the core keyboard (GTK 4 reads only XInput2 input,
 * so XSendEvent's synthetic core events would never arrive), with the server's current
 * modifier state. The X11 headers stay in this file: their macros (None, Status, Bool)
 * clash with other code. */
#include "ks_view_keys.h"

#ifdef KS_VIEW_HAVE_XTEST
#include <X11/extensions/XTest.h>
#include <gdk/x11/gdkx.h>

static Display *xdisplay_of(GtkWidget *widget, const char **why) {
    GdkDisplay *d = gtk_widget_get_display(widget);
    if (!GDK_IS_X11_DISPLAY(d)) {
        *why = "the display is not X11 (run under xvfb-run with GDK_BACKEND=x11)";
        return NULL;
    }
    Display *x = gdk_x11_display_get_xdisplay(d);
    int ev, er, major, minor;
    if (!XTestQueryExtension(x, &ev, &er, &major, &minor)) {
        *why = "the X server has no XTEST extension";
        return NULL;
    }
    return x;
}

gboolean ks_view_keys_available(GtkWidget *widget, const char **why) {
    return xdisplay_of(widget, why) != NULL;
}

gboolean ks_view_keys_type(GtkWidget *widget, guint keyval, GError **error) {
    const char *why = NULL;
    Display *x = xdisplay_of(widget, &why);
    if (!x) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "%s", why);
        return FALSE;
    }
    /* GDK keyvals are X keysyms */
    KeyCode code = XKeysymToKeycode(x, (KeySym)keyval);
    if (code == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no key of the X keymap gives %s",
                    gdk_keyval_name(keyval));
        return FALSE;
    }
    XTestFakeKeyEvent(x, code, True, CurrentTime);
    XTestFakeKeyEvent(x, code, False, CurrentTime);
    XFlush(x);
    return TRUE;
}

#else

gboolean ks_view_keys_available(GtkWidget *widget, const char **why) {
    (void)widget;
    *why = "the viewer was built without gtk4-x11 and libXtst (scripts/install-deps)";
    return FALSE;
}

gboolean ks_view_keys_type(GtkWidget *widget, guint keyval, GError **error) {
    (void)widget;
    (void)keyval;
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "the viewer was built without gtk4-x11 and libXtst (scripts/install-deps)");
    return FALSE;
}

#endif
