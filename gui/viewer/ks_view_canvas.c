/* ks_view_canvas.c — a GtkWidget whose snapshot is one page drawn by cairo.
 *
 * The page's own geometry (ks_view_geom, filled at each draw) answers hit tests, so hover,
 * click and zoom need no knowledge of how a view lays itself out. Heatmaps draw from a pooled
 * level chosen for the widget's pixel size and only their visible window, so scrolling a
 * 2,048-token map costs the pixels shown. */
#include "ks_view_canvas.h"

#include <math.h>

struct _KsViewCanvas {
    GtkWidget parent_instance;
    KsViewPage page;
    ks_view_nav *nav;
    ks_view_geom geom;
    char *hover;
    guint frames;
    double drag_row0, drag_col0;
};

G_DEFINE_FINAL_TYPE(KsViewCanvas, ks_view_canvas, GTK_TYPE_WIDGET)

enum { SIG_NAVIGATE, SIG_CHANGED, SIG_ACTIVATE_ITEM, SIG_FAILED, N_SIGNALS };
static guint signals[N_SIGNALS];

static void ks_view_canvas_snapshot(GtkWidget *widget, GtkSnapshot *snapshot) {
    KsViewCanvas *self = KS_VIEW_CANVAS(widget);
    int w = gtk_widget_get_width(widget), h = gtk_widget_get_height(widget);
    if (w <= 0 || h <= 0 || !self->nav) return;
    cairo_t *cr = gtk_snapshot_append_cairo(snapshot, &GRAPHENE_RECT_INIT(0, 0, w, h));
    ks_error err = {0};
    ks_status st = ks_view_page_draw(self->page, self->nav, cr, w, h, &self->geom, &err);
    cairo_destroy(cr);
    self->frames++;
    if (st && st != KS_ERR_UNSUPPORTED)
        g_signal_emit(self, signals[SIG_FAILED], 0, err.msg[0] ? err.msg : ks_status_str(st));
}

static gboolean on_query_tooltip(GtkWidget *widget, int x, int y, gboolean keyboard,
                                 GtkTooltip *tooltip, gpointer data) {
    (void)data;
    (void)keyboard;
    KsViewCanvas *self = KS_VIEW_CANVAS(widget);
    g_autofree char *text = ks_view_page_hover(self->page, self->nav, &self->geom, x, y);
    if (!text) return FALSE;
    gtk_tooltip_set_text(tooltip, text);
    return TRUE;
}

static void on_motion(GtkEventControllerMotion *c, double x, double y, gpointer data) {
    (void)c;
    KsViewCanvas *self = data;
    g_autofree char *text = ks_view_page_hover(self->page, self->nav, &self->geom, x, y);
    if (g_strcmp0(text, self->hover)) {
        g_free(self->hover);
        self->hover = g_steal_pointer(&text);
        /* re-query the tooltip for the new item */
        gtk_widget_trigger_tooltip_query(GTK_WIDGET(self));
    }
}

static void clicked(KsViewCanvas *self, ks_view_click what, KsViewPage to) {
    switch (what) {
    case KS_CLICK_NONE: break;
    case KS_CLICK_REDRAW:
        gtk_widget_queue_draw(GTK_WIDGET(self));
        g_signal_emit(self, signals[SIG_CHANGED], 0);
        break;
    case KS_CLICK_GOTO:
        g_signal_emit(self, signals[SIG_CHANGED], 0);
        g_signal_emit(self, signals[SIG_NAVIGATE], 0, (int)to);
        break;
    case KS_CLICK_ITEM:
        gtk_widget_queue_draw(GTK_WIDGET(self));
        g_signal_emit(self, signals[SIG_ACTIVATE_ITEM], 0);
        break;
    }
}

static void on_pressed(GtkGestureClick *g, int n_press, double x, double y, gpointer data) {
    (void)g;
    (void)n_press;
    KsViewCanvas *self = data;
    KsViewPage to = self->page;
    gtk_widget_grab_focus(GTK_WIDGET(self));
    clicked(self, ks_view_page_click(self->page, self->nav, &self->geom, x, y, &to), to);
}

/* Up/Down select an audit item, Enter activates it (the items page). */
static gboolean on_key(GtkEventControllerKey *k, guint keyval, guint keycode,
                       GdkModifierType mods, gpointer data) {
    (void)k;
    (void)keycode;
    KsViewCanvas *self = data;
    if (mods & (GDK_CONTROL_MASK | GDK_ALT_MASK)) return FALSE;
    int move = keyval == GDK_KEY_Down ? 1 : keyval == GDK_KEY_Up ? -1 : 0;
    bool enter = keyval == GDK_KEY_Return || keyval == GDK_KEY_KP_Enter;
    if (!move && !enter) return FALSE;
    ks_view_click what = ks_view_page_key(self->page, self->nav, move, enter);
    clicked(self, what, self->page);
    return what != KS_CLICK_NONE;
}

static bool zoomable(KsViewPage p) { return p == KS_PAGE_HEAD || p == KS_PAGE_COMPARE; }

static gboolean on_scroll(GtkEventControllerScroll *c, double dx, double dy, gpointer data) {
    KsViewCanvas *self = data;
    GdkModifierType mods = gtk_event_controller_get_current_event_state(GTK_EVENT_CONTROLLER(c));
    bool changed = false;
    if (zoomable(self->page)) {
        const ks_rect *pl = &self->geom.plot;
        double span = self->geom.row1 - self->geom.row0;
        if (mods & GDK_CONTROL_MASK) {
            /* zoom about the pointer */
            double px = 0.5, py = 0.5;
            GtkEventController *ec = GTK_EVENT_CONTROLLER(c);
            (void)ec;
            changed = ks_view_nav_zoom(self->nav, dy < 0 ? 1.25 : 0.8, px, py);
        } else if (pl->h > 0 && span > 0) {
            /* one notch moves a tenth of the window */
            double step = span / 10;
            if (mods & GDK_SHIFT_MASK) changed = ks_view_nav_pan(self->nav, 0, (dy + dx) * step);
            else changed = ks_view_nav_pan(self->nav, dy * step, dx * step);
        }
    } else {
        /* lists and strips: rows or pixels */
        double unit = self->page == KS_PAGE_TOKENS ? 40 : 3;
        double before = self->nav->scroll;
        self->nav->scroll = fmax(0, self->nav->scroll + dy * unit);
        if (self->page == KS_PAGE_TOKENS && self->geom.content_height > 0)
            self->nav->scroll = fmin(self->nav->scroll,
                                     fmax(0, self->geom.content_height - gtk_widget_get_height(GTK_WIDGET(self)) / 2.0));
        changed = self->nav->scroll != before;
    }
    if (changed) gtk_widget_queue_draw(GTK_WIDGET(self));
    return TRUE;
}

static void on_drag_begin(GtkGestureDrag *g, double x, double y, gpointer data) {
    (void)g;
    (void)x;
    (void)y;
    KsViewCanvas *self = data;
    self->drag_row0 = self->nav->row0;
    self->drag_col0 = self->nav->col0;
}

static void on_drag_update(GtkGestureDrag *g, double dx, double dy, gpointer data) {
    (void)g;
    KsViewCanvas *self = data;
    if (!zoomable(self->page) || self->nav->zoom <= 1) return;
    const ks_rect *pl = &self->geom.plot;
    if (pl->w <= 0 || pl->h <= 0) return;
    double rows_per_px = (self->geom.row1 - self->geom.row0) / pl->h;
    double cols_per_px = (self->geom.col1 - self->geom.col0) / pl->w;
    self->nav->row0 = self->drag_row0 - dy * rows_per_px;
    self->nav->col0 = self->drag_col0 - dx * cols_per_px;
    gtk_widget_queue_draw(GTK_WIDGET(self));
}

static void ks_view_canvas_dispose(GObject *object) {
    KsViewCanvas *self = KS_VIEW_CANVAS(object);
    ks_view_geom_free(&self->geom);
    g_clear_pointer(&self->hover, g_free);
    G_OBJECT_CLASS(ks_view_canvas_parent_class)->dispose(object);
}

static void ks_view_canvas_class_init(KsViewCanvasClass *klass) {
    GObjectClass *object_class = G_OBJECT_CLASS(klass);
    GtkWidgetClass *widget_class = GTK_WIDGET_CLASS(klass);
    object_class->dispose = ks_view_canvas_dispose;
    widget_class->snapshot = ks_view_canvas_snapshot;
    gtk_widget_class_set_css_name(widget_class, "ksviewcanvas");
    signals[SIG_NAVIGATE] = g_signal_new("navigate", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST,
                                         0, NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_INT);
    signals[SIG_CHANGED] = g_signal_new("changed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST,
                                        0, NULL, NULL, NULL, G_TYPE_NONE, 0);
    signals[SIG_ACTIVATE_ITEM] = g_signal_new("activate-item", G_TYPE_FROM_CLASS(klass),
                                              G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL, G_TYPE_NONE,
                                              0);
    signals[SIG_FAILED] = g_signal_new("failed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0,
                                       NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
}

static void ks_view_canvas_init(KsViewCanvas *self) {
    GtkWidget *w = GTK_WIDGET(self);
    ks_view_geom_init(&self->geom);
    gtk_widget_set_hexpand(w, TRUE);
    gtk_widget_set_vexpand(w, TRUE);
    gtk_widget_set_focusable(w, TRUE);
    gtk_widget_set_has_tooltip(w, TRUE);
    g_signal_connect(w, "query-tooltip", G_CALLBACK(on_query_tooltip), NULL);

    GtkEventController *motion = gtk_event_controller_motion_new();
    g_signal_connect(motion, "motion", G_CALLBACK(on_motion), self);
    gtk_widget_add_controller(w, motion);

    GtkGesture *click = gtk_gesture_click_new();
    g_signal_connect(click, "pressed", G_CALLBACK(on_pressed), self);
    gtk_widget_add_controller(w, GTK_EVENT_CONTROLLER(click));

    GtkEventController *key = gtk_event_controller_key_new();
    g_signal_connect(key, "key-pressed", G_CALLBACK(on_key), self);
    gtk_widget_add_controller(w, key);

    GtkEventController *scroll =
        gtk_event_controller_scroll_new(GTK_EVENT_CONTROLLER_SCROLL_BOTH_AXES);
    g_signal_connect(scroll, "scroll", G_CALLBACK(on_scroll), self);
    gtk_widget_add_controller(w, scroll);

    GtkGesture *drag = gtk_gesture_drag_new();
    g_signal_connect(drag, "drag-begin", G_CALLBACK(on_drag_begin), self);
    g_signal_connect(drag, "drag-update", G_CALLBACK(on_drag_update), self);
    gtk_widget_add_controller(w, GTK_EVENT_CONTROLLER(drag));
}

KsViewCanvas *ks_view_canvas_new(KsViewPage page, ks_view_nav *nav) {
    KsViewCanvas *self = g_object_new(KS_VIEW_TYPE_CANVAS, NULL);
    self->page = page;
    self->nav = nav;
    return self;
}

KsViewPage ks_view_canvas_page(KsViewCanvas *self) { return self->page; }

void ks_view_canvas_refresh(KsViewCanvas *self) { gtk_widget_queue_draw(GTK_WIDGET(self)); }

void ks_view_canvas_zoom(KsViewCanvas *self, double factor) {
    if (zoomable(self->page) && ks_view_nav_zoom(self->nav, factor, 0.5, 0.5))
        gtk_widget_queue_draw(GTK_WIDGET(self));
}

ks_status ks_view_canvas_draw_to(KsViewCanvas *self, cairo_t *cr, double w, double h,
                                 ks_error *err) {
    ks_view_geom g;
    ks_view_geom_init(&g);
    /* an export draws the page complete: a page read by a worker is read here instead */
    bool sync = self->nav->sync_loads;
    self->nav->sync_loads = true;
    ks_status st = ks_view_page_draw(self->page, self->nav, cr, w, h, &g, err);
    self->nav->sync_loads = sync;
    ks_view_geom_free(&g);
    return st;
}

guint ks_view_canvas_frames(KsViewCanvas *self) { return self->frames; }
