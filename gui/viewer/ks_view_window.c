/* ks_view_window.c — the viewer's main window (layout in ks_view_window.ui).
 *
 * The window owns the navigation state (ks_view_nav) that every page reads; controls write
 * it and ask the visible page to redraw. Pages are drawn only when shown, so switching pages
 * loads only what the new page needs. Errors never go to a terminal: opening, running,
 * exporting and drawing failures become toasts. */
#include "ks_view_window.h"

#include <math.h>
#include <string.h>

struct _KsViewWindow {
    AdwApplicationWindow parent_instance;

    /* template children */
    AdwToastOverlay *toasts;
    AdwWindowTitle *title;
    GtkToggleButton *search_button;
    GtkSearchBar *search_bar;
    GtkSearchEntry *search_entry;
    GtkRevealer *live_revealer;
    GtkEntry *prompt_entry;
    GtkDropDown *template_drop;
    GtkSpinButton *generate_spin;
    GtkButton *run_button, *cancel_button;
    GtkProgressBar *progress;
    GtkAdjustment *prompt_adj, *layer_adj, *head_adj;
    GtkToggleButton *to_button;
    GtkWidget *nav_box;
    GtkLabel *token_label;
    GtkStack *stack;
    GtkLabel *status;

    KsViewDocument *doc;
    ks_view_nav nav;
    KsViewCanvas *canvas[KS_N_PAGES];
    GCancellable *run_cancel;
    GCancellable *open_cancel;
    gboolean syncing; /* controls being set from nav: ignore their signals */
    char *last_error; /* the last drawing error toasted (not repeated at every frame) */
};

G_DEFINE_FINAL_TYPE(KsViewWindow, ks_view_window, ADW_TYPE_APPLICATION_WINDOW)

enum { SIG_OPENED, SIG_RUN_FINISHED, SIG_DRILLED, N_SIGNALS };
static guint signals[N_SIGNALS];

static const char *template_names[] = {"none", "plain", "koala", "vicuna", "alpaca", "llama2"};

/* ---------------------------------------------------------------- remembered state */

static char *state_path(void) {
    return g_build_filename(g_get_user_config_dir(), "koalascope", "viewer.ini", NULL);
}

static void state_load(KsViewWindow *self, char **page) {
    g_autofree char *path = state_path();
    g_autoptr(GKeyFile) kf = g_key_file_new();
    if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, NULL)) return;
    int w = g_key_file_get_integer(kf, "window", "width", NULL);
    int h = g_key_file_get_integer(kf, "window", "height", NULL);
    if (w >= 400 && h >= 300 && w <= 16384 && h <= 16384)
        gtk_window_set_default_size(GTK_WINDOW(self), w, h);
    if (g_key_file_get_boolean(kf, "window", "maximized", NULL))
        gtk_window_maximize(GTK_WINDOW(self));
    *page = g_key_file_get_string(kf, "window", "page", NULL);
}

static void state_save(KsViewWindow *self) {
    g_autofree char *path = state_path();
    g_autofree char *dir = g_path_get_dirname(path);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    int w = 0, h = 0;
    gtk_window_get_default_size(GTK_WINDOW(self), &w, &h);
    g_key_file_set_integer(kf, "window", "width", w);
    g_key_file_set_integer(kf, "window", "height", h);
    g_key_file_set_boolean(kf, "window", "maximized", gtk_window_is_maximized(GTK_WINDOW(self)));
    const ks_view_page_info *pi = ks_view_page_info_get(ks_view_window_current_page(self));
    g_key_file_set_string(kf, "window", "page", pi ? pi->id : "tokens");
    g_autoptr(GError) err = NULL;
    if (g_mkdir_with_parents(dir, 0700) != 0 || !g_key_file_save_to_file(kf, path, &err))
        g_debug("cannot save the window state to %s: %s", path, err ? err->message : "mkdir");
}

/* ---------------------------------------------------------------- helpers */

void ks_view_window_toast(KsViewWindow *self, const char *message) {
    AdwToast *t = adw_toast_new(message);
    adw_toast_set_timeout(t, 6);
    adw_toast_overlay_add_toast(self->toasts, t);
}

KsViewPage ks_view_window_current_page(KsViewWindow *self) {
    GtkWidget *w = gtk_stack_get_visible_child(self->stack);
    return w ? ks_view_canvas_page(KS_VIEW_CANVAS(w)) : KS_PAGE_TOKENS;
}

KsViewCanvas *ks_view_window_canvas(KsViewWindow *self, KsViewPage page) {
    return page < KS_N_PAGES ? self->canvas[page] : NULL;
}

KsViewDocument *ks_view_window_document(KsViewWindow *self) { return self->doc; }
ks_view_nav *ks_view_window_nav(KsViewWindow *self) { return &self->nav; }

void ks_view_window_show_page(KsViewWindow *self, KsViewPage page) {
    if (page < KS_N_PAGES) gtk_stack_set_visible_child(self->stack, GTK_WIDGET(self->canvas[page]));
}

static void redraw(KsViewWindow *self) {
    GtkWidget *w = gtk_stack_get_visible_child(self->stack);
    if (w) ks_view_canvas_refresh(KS_VIEW_CANVAS(w));
}

static void update_token_label(KsViewWindow *self) {
    int64_t n = ks_view_nav_n_tokens(&self->nav);
    g_autofree char *s = NULL;
    if (n > 0) {
        int64_t t = self->nav.token >= 0 && self->nav.token < n ? self->nav.token : n - 1;
        s = g_strdup_printf("%s token %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT,
                            self->nav.to_token ? "attention to" : "attention from", t, n);
    }
    gtk_label_set_text(self->token_label, s ? s : "");
}

/* Controls from nav and the document's shape; page visibility from what is open. */
void ks_view_window_sync(KsViewWindow *self) {
    self->syncing = TRUE;
    int64_t np = ks_view_nav_n_prompts(&self->nav);
    int nl = ks_view_nav_n_layers(&self->nav), nh = ks_view_nav_n_heads(&self->nav);
    gtk_adjustment_configure(self->prompt_adj, (double)self->nav.prompt, 0, np > 0 ? np - 1 : 0, 1,
                             10, 0);
    gtk_adjustment_configure(self->layer_adj, self->nav.layer, 0, nl > 0 ? nl - 1 : 0, 1, 4, 0);
    gtk_adjustment_configure(self->head_adj, self->nav.head, 0, nh > 0 ? nh - 1 : 0, 1, 4, 0);
    gtk_toggle_button_set_active(self->to_button, self->nav.to_token);
    for (int p = 0; p < KS_N_PAGES; p++) {
        GtkStackPage *sp = gtk_stack_get_page(self->stack, GTK_WIDGET(self->canvas[p]));
        gtk_stack_page_set_visible(sp, ks_view_page_available(&self->nav, p));
    }
    /* prompt / layer / head mean something only for a dump (or a live run) */
    gtk_widget_set_visible(self->nav_box, ks_view_document_dump(self->doc) != NULL);
    gboolean live = ks_view_document_source(self->doc) == KS_VIEW_SOURCE_MODEL;
    gtk_revealer_set_reveal_child(self->live_revealer, live);
    gboolean running = ks_view_document_running(self->doc);
    GAction *a = g_action_map_lookup_action(G_ACTION_MAP(self), "run");
    g_simple_action_set_enabled(G_SIMPLE_ACTION(a), live && !running);
    a = g_action_map_lookup_action(G_ACTION_MAP(self), "cancel");
    g_simple_action_set_enabled(G_SIMPLE_ACTION(a), running);
    a = g_action_map_lookup_action(G_ACTION_MAP(self), "save-run");
    g_simple_action_set_enabled(G_SIMPLE_ACTION(a), live && ks_view_document_dump(self->doc));
    update_token_label(self);
    self->syncing = FALSE;
    redraw(self);
}

static void on_document_changed(KsViewDocument *doc, KsViewWindow *self) {
    (void)doc;
    ks_view_nav_invalidate(&self->nav);
    g_autofree char *title = ks_view_document_title(self->doc);
    adw_window_title_set_title(self->title, title);
    /* the shape of what is open (the full path is in the tooltip) */
    g_autofree char *sub = NULL;
    if (ks_view_document_dump(self->doc))
        sub = g_strdup_printf("%" G_GINT64_FORMAT " prompt%s · %d layers × %d heads",
                              ks_view_nav_n_prompts(&self->nav),
                              ks_view_nav_n_prompts(&self->nav) == 1 ? "" : "s",
                              ks_view_nav_n_layers(&self->nav), ks_view_nav_n_heads(&self->nav));
    else if (ks_view_document_source(self->doc) == KS_VIEW_SOURCE_MODEL)
        sub = g_strdup("type a prompt and run it");
    adw_window_title_set_subtitle(self->title, sub ? sub : "");
    gtk_widget_set_tooltip_text(GTK_WIDGET(self->title), ks_view_document_path(self->doc));
    ks_view_window_sync(self);
    /* a page that has nothing for this document gives way to one that has */
    if (!ks_view_page_available(&self->nav, ks_view_window_current_page(self)))
        for (int p = 0; p < KS_N_PAGES; p++)
            if (ks_view_page_available(&self->nav, p)) {
                ks_view_window_show_page(self, p);
                break;
            }
}

/* ---------------------------------------------------------------- opening */

static void open_done(GObject *source, GAsyncResult *res, gpointer data) {
    KsViewWindow *self = data;
    g_autoptr(GError) err = NULL;
    gboolean ok = ks_view_document_open_finish(KS_VIEW_DOCUMENT(source), res, &err);
    if (!ok) ks_view_window_toast(self, err->message);
    const char *hint = ks_view_document_template_hint(self->doc);
    for (guint i = 0; ok && hint && i < G_N_ELEMENTS(template_names); i++)
        if (strcmp(hint, template_names[i]) == 0 && strcmp(hint, "plain"))
            gtk_drop_down_set_selected(self->template_drop, i);
    g_signal_emit(self, signals[SIG_OPENED], 0, ok, ok ? "" : err->message);
    g_object_unref(self);
}

void ks_view_window_open(KsViewWindow *self, const char *path, const char *tokenizer) {
    gtk_label_set_text(self->status, "opening…");
    ks_view_document_open_async(self->doc, path, tokenizer, NULL, open_done, g_object_ref(self));
}

/* A file chooser whose accepted path goes to fn (ext, may be NULL: appended when the name
 * lacks it). */
typedef void (*path_fn)(KsViewWindow *self, const char *path);

static void on_chooser_response(GtkNativeDialog *dialog, int response, gpointer data) {
    KsViewWindow *self = data;
    path_fn fn = g_object_get_data(G_OBJECT(dialog), "ks-fn");
    const char *ext = g_object_get_data(G_OBJECT(dialog), "ks-ext");
    if (response == GTK_RESPONSE_ACCEPT) {
        g_autoptr(GFile) f = gtk_file_chooser_get_file(GTK_FILE_CHOOSER(dialog));
        g_autofree char *path = f ? g_file_get_path(f) : NULL;
        if (path && ext && !g_str_has_suffix(path, ext)) {
            char *p2 = g_strconcat(path, ext, NULL);
            g_free(path);
            path = p2;
        }
        if (path) fn(self, path);
    }
    g_object_unref(dialog);
}

static void choose_file(KsViewWindow *self, const char *title, GtkFileChooserAction action,
                        const char *accept, const char *name, const char *ext, path_fn fn) {
    GtkFileChooserNative *fc =
        gtk_file_chooser_native_new(title, GTK_WINDOW(self), action, accept, "_Cancel");
    if (name) gtk_file_chooser_set_current_name(GTK_FILE_CHOOSER(fc), name);
    g_object_set_data(G_OBJECT(fc), "ks-fn", (gpointer)fn);
    g_object_set_data_full(G_OBJECT(fc), "ks-ext", g_strdup(ext), g_free);
    g_signal_connect(fc, "response", G_CALLBACK(on_chooser_response), self);
    gtk_native_dialog_show(GTK_NATIVE_DIALOG(fc));
}

static void open_path(KsViewWindow *self, const char *path) { ks_view_window_open(self, path, NULL); }

static void action_open(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    choose_file(data, "Open a dump, results or model", GTK_FILE_CHOOSER_ACTION_OPEN, "_Open", NULL,
                NULL, open_path);
}

static void compare_path(KsViewWindow *self, const char *path) {
    g_autoptr(GError) err = NULL;
    if (!ks_view_document_open_other(self->doc, path, &err)) ks_view_window_toast(self, err->message);
    else ks_view_window_show_page(self, KS_PAGE_COMPARE);
}

static void action_compare(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    choose_file(data, "A second dump to compare", GTK_FILE_CHOOSER_ACTION_OPEN, "_Compare", NULL,
                NULL, compare_path);
}

/* ---------------------------------------------------------------- export */

static ks_status draw_canvas(cairo_t *cr, const void *view, double w, double h, ks_view_geom *g,
                             ks_error *err) {
    (void)g;
    return ks_view_canvas_draw_to(KS_VIEW_CANVAS((gpointer)view), cr, w, h, err);
}

gboolean ks_view_window_export(KsViewWindow *self, const char *path, GError **error) {
    KsViewCanvas *c = self->canvas[ks_view_window_current_page(self)];
    int w = gtk_widget_get_width(GTK_WIDGET(c)), h = gtk_widget_get_height(GTK_WIDGET(c));
    if (w <= 0 || h <= 0) {
        w = 1000;
        h = 700;
    }
    ks_error e = {0};
    if (ks_view_save(path, w, h, 2, draw_canvas, c, &e)) {
        g_set_error(error, KS_VIEW_ERROR, e.code, "%s", e.msg[0] ? e.msg : ks_status_str(e.code));
        return FALSE;
    }
    return TRUE;
}

static void export_path(KsViewWindow *self, const char *path) {
    g_autoptr(GError) err = NULL;
    g_autofree char *msg = NULL;
    if (!ks_view_window_export(self, path, &err)) ks_view_window_toast(self, err->message);
    else ks_view_window_toast(self, (msg = g_strdup_printf("saved %s", path)));
}

static void action_export(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    KsViewWindow *self = data;
    const char *fmt = g_variant_get_string(p, NULL);
    const ks_view_page_info *pi = ks_view_page_info_get(ks_view_window_current_page(self));
    g_autofree char *name = g_strdup_printf("%s.%s", pi->id, fmt);
    g_autofree char *ext = g_strconcat(".", fmt, NULL);
    choose_file(self, "Export this view", GTK_FILE_CHOOSER_ACTION_SAVE, "_Export", name, ext,
                export_path);
}

static void save_run_path(KsViewWindow *self, const char *path) {
    g_autoptr(GError) err = NULL;
    if (!ks_view_document_save_dump(self->doc, path, &err)) ks_view_window_toast(self, err->message);
}

static void action_save_run(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    choose_file(data, "Save the run as a dump", GTK_FILE_CHOOSER_ACTION_SAVE, "_Save", "run.h5",
                ".h5", save_run_path);
}

/* ---------------------------------------------------------------- live runs */

static void on_progress(double fraction, const char *what, gpointer data) {
    KsViewWindow *self = data;
    gtk_progress_bar_set_fraction(self->progress, fraction);
    gtk_progress_bar_set_text(self->progress, what);
}

static void run_done(GObject *source, GAsyncResult *res, gpointer data) {
    KsViewWindow *self = data;
    g_autoptr(GError) err = NULL;
    gboolean ok = ks_view_document_run_finish(KS_VIEW_DOCUMENT(source), res, &err);
    gtk_widget_set_visible(GTK_WIDGET(self->progress), FALSE);
    g_clear_object(&self->run_cancel);
    if (!ok) ks_view_window_toast(self, err->message);
    ks_view_window_sync(self);
    g_signal_emit(self, signals[SIG_RUN_FINISHED], 0, ok, ok ? "" : err->message);
    g_object_unref(self);
}

void ks_view_window_run(KsViewWindow *self, const char *prompt, const char *template_name,
                        int generate) {
    if (ks_view_document_running(self->doc)) return;
    KsViewRunParams rp = {.prompt = prompt, .template_name = template_name, .generate = generate};
    self->run_cancel = g_cancellable_new();
    gtk_progress_bar_set_fraction(self->progress, 0);
    gtk_progress_bar_set_text(self->progress, "starting");
    gtk_widget_set_visible(GTK_WIDGET(self->progress), TRUE);
    ks_view_document_run_async(self->doc, &rp, self->run_cancel, on_progress, self, run_done,
                               g_object_ref(self));
    ks_view_window_sync(self);
}

static void action_run(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    KsViewWindow *self = data;
    const char *text = gtk_editable_get_text(GTK_EDITABLE(self->prompt_entry));
    guint t = gtk_drop_down_get_selected(self->template_drop);
    ks_view_window_run(self, text, t < G_N_ELEMENTS(template_names) ? template_names[t] : "none",
                       gtk_spin_button_get_value_as_int(self->generate_spin));
}

static void action_cancel(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    KsViewWindow *self = data;
    if (self->run_cancel) g_cancellable_cancel(self->run_cancel);
}

/* ---------------------------------------------------------------- navigation */

static void step_adj(GtkAdjustment *adj, int by) {
    double v = gtk_adjustment_get_value(adj) + by;
    gtk_adjustment_set_value(adj, fmin(fmax(v, gtk_adjustment_get_lower(adj)),
                                       gtk_adjustment_get_upper(adj)));
}

static void action_step(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)p;
    KsViewWindow *self = data;
    const char *name = g_action_get_name(G_ACTION(a));
    if (!strcmp(name, "next-layer")) step_adj(self->layer_adj, 1);
    else if (!strcmp(name, "prev-layer")) step_adj(self->layer_adj, -1);
    else if (!strcmp(name, "next-head")) step_adj(self->head_adj, 1);
    else if (!strcmp(name, "prev-head")) step_adj(self->head_adj, -1);
    else if (!strcmp(name, "next-prompt")) step_adj(self->prompt_adj, 1);
    else if (!strcmp(name, "prev-prompt")) step_adj(self->prompt_adj, -1);
}

static void action_zoom(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)p;
    KsViewWindow *self = data;
    const char *name = g_action_get_name(G_ACTION(a));
    KsViewCanvas *c = self->canvas[ks_view_window_current_page(self)];
    if (!strcmp(name, "zoom-in")) ks_view_canvas_zoom(c, 2);
    else if (!strcmp(name, "zoom-out")) ks_view_canvas_zoom(c, 0.5);
    else {
        self->nav.zoom = 1;
        self->nav.row0 = self->nav.col0 = 0;
        redraw(self);
    }
}

static void action_view_step(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)p;
    KsViewWindow *self = data;
    int dir = strcmp(g_action_get_name(G_ACTION(a)), "next-view") == 0 ? 1 : -1;
    int cur = ks_view_window_current_page(self);
    for (int k = 1; k < KS_N_PAGES; k++) {
        int p2 = ((cur + dir * k) % KS_N_PAGES + KS_N_PAGES) % KS_N_PAGES;
        if (ks_view_page_available(&self->nav, p2)) {
            ks_view_window_show_page(self, p2);
            return;
        }
    }
}

static void action_search(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    KsViewWindow *self = data;
    gtk_search_bar_set_search_mode(self->search_bar, TRUE);
    gtk_widget_grab_focus(GTK_WIDGET(self->search_entry));
}

static void action_direction(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    KsViewWindow *self = data;
    gtk_toggle_button_set_active(self->to_button, !gtk_toggle_button_get_active(self->to_button));
}

static void on_nav_value(GtkAdjustment *adj, KsViewWindow *self) {
    if (self->syncing) return;
    int v = (int)gtk_adjustment_get_value(adj);
    if (adj == self->prompt_adj) {
        if (self->nav.prompt != v) {
            self->nav.prompt = v;
            self->nav.token = -1;
            self->nav.search_hit = -1;
            self->nav.zoom = 1;
            self->nav.row0 = self->nav.col0 = self->nav.scroll = 0;
        }
    } else if (adj == self->layer_adj) {
        self->nav.layer = v;
    } else {
        self->nav.head = v;
    }
    update_token_label(self);
    redraw(self);
}

static void on_to_toggled(GtkToggleButton *b, KsViewWindow *self) {
    if (self->syncing) return;
    self->nav.to_token = gtk_toggle_button_get_active(b);
    update_token_label(self);
    redraw(self);
}

static void on_search_changed(GtkSearchEntry *e, KsViewWindow *self) {
    self->nav.search_hit = -1;
    const char *text = gtk_editable_get_text(GTK_EDITABLE(e));
    if (ks_view_nav_search(&self->nav, text)) {
        g_autofree char *s = g_strdup_printf("“%s” at token %" G_GINT64_FORMAT " (Enter: next)",
                                             text, self->nav.search_hit);
        gtk_label_set_text(self->status, s);
    } else if (text && *text) {
        g_autofree char *s = g_strdup_printf("no token of prompt %" G_GINT64_FORMAT " contains “%s”",
                                             self->nav.prompt, text);
        gtk_label_set_text(self->status, s);
    }
    update_token_label(self);
    redraw(self);
}

static void on_search_next(GtkSearchEntry *e, KsViewWindow *self) {
    const char *text = gtk_editable_get_text(GTK_EDITABLE(e));
    if (ks_view_nav_search(&self->nav, text)) {
        g_autofree char *s = g_strdup_printf("“%s” at token %" G_GINT64_FORMAT, text,
                                             self->nav.search_hit);
        gtk_label_set_text(self->status, s);
    }
    update_token_label(self);
    redraw(self);
}

static void on_canvas_changed(KsViewCanvas *c, KsViewWindow *self) {
    (void)c;
    update_token_label(self);
}

static void on_canvas_navigate(KsViewCanvas *c, int page, KsViewWindow *self) {
    (void)c;
    ks_view_window_sync(self);
    ks_view_window_show_page(self, page);
}

static void on_canvas_failed(KsViewCanvas *c, const char *msg, KsViewWindow *self) {
    (void)c;
    if (g_strcmp0(msg, self->last_error) == 0) return;
    g_free(self->last_error);
    self->last_error = g_strdup(msg);
    ks_view_window_toast(self, msg);
}

/* An audit item's internals: its prompts of the drill-down dump on the token page, its
 * attribution on the attribution page; the audit pages keep their selection. */
static void drill_done(GObject *source, GAsyncResult *res, gpointer data) {
    KsViewWindow *self = data;
    g_autoptr(GError) err = NULL;
    KsViewDrill d;
    int64_t row = self->nav.audit_row, item = self->nav.item;
    double scroll = self->nav.scroll;
    gboolean ok = ks_view_document_drill_finish(KS_VIEW_DOCUMENT(source), res, &d, &err);
    gtk_label_set_text(self->status, "");
    if (ok) {
        /* "changed" reset the navigation: back to this item, at its first prompt */
        self->nav.audit_row = row;
        self->nav.item = item;
        self->nav.scroll = scroll;
        self->nav.prompt = d.prompt;
        g_free(self->nav.attr_name);
        self->nav.attr_name = d.attr_name;
        ks_view_window_sync(self);
        ks_view_window_show_page(self, KS_PAGE_TOKENS);
        g_autofree char *msg = g_strdup_printf(
            "the item's %" G_GINT64_FORMAT " recorded option%s: prompts %" G_GINT64_FORMAT "–%"
            G_GINT64_FORMAT " of the drill-down dump", d.n_prompts, d.n_prompts == 1 ? "" : "s",
            d.prompt, d.prompt + d.n_prompts - 1);
        ks_view_window_toast(self, msg);
    } else {
        ks_view_window_toast(self, err->message);
    }
    g_signal_emit(self, signals[SIG_DRILLED], 0, ok, ok ? "" : err->message);
    g_object_unref(self);
}

void ks_view_window_activate_item(KsViewWindow *self) {
    g_autofree char *audit = NULL, *id = NULL;
    int64_t index = -1;
    if (!ks_view_nav_audit_item(&self->nav, &audit, &id, &index)) return;
    gtk_label_set_text(self->status, "opening the item's internals…");
    ks_view_document_drill_async(self->doc, audit, id, index, drill_done, g_object_ref(self));
}

static void on_canvas_activate_item(KsViewCanvas *c, KsViewWindow *self) {
    (void)c;
    ks_view_window_activate_item(self);
}

/* A page's worker load finished (nav->ready): redraw what is shown. */
static void on_page_ready(void *data) { redraw(data); }

static void on_page_switched(GObject *stack, GParamSpec *ps, KsViewWindow *self) {
    (void)stack;
    (void)ps;
    const ks_view_page_info *pi = ks_view_page_info_get(ks_view_window_current_page(self));
    gtk_label_set_text(self->status, pi ? pi->title : "");
}

static gboolean on_close_request(GtkWindow *w, gpointer data) {
    (void)data;
    KsViewWindow *self = KS_VIEW_WINDOW(w);
    state_save(self);
    if (self->run_cancel) g_cancellable_cancel(self->run_cancel);
    return FALSE;
}

/* ---------------------------------------------------------------- class */

static void ks_view_window_dispose(GObject *object) {
    KsViewWindow *self = KS_VIEW_WINDOW(object);
    if (self->run_cancel) g_cancellable_cancel(self->run_cancel);
    g_clear_object(&self->run_cancel);
    g_clear_object(&self->open_cancel);
    if (self->doc) {
        g_signal_handlers_disconnect_by_data(self->doc, self);
        ks_view_nav_clear(&self->nav);
    }
    g_clear_object(&self->doc);
    g_clear_pointer(&self->last_error, g_free);
    gtk_widget_dispose_template(GTK_WIDGET(self), KS_VIEW_TYPE_WINDOW);
    G_OBJECT_CLASS(ks_view_window_parent_class)->dispose(object);
}

static void ks_view_window_class_init(KsViewWindowClass *klass) {
    GObjectClass *object_class = G_OBJECT_CLASS(klass);
    GtkWidgetClass *widget_class = GTK_WIDGET_CLASS(klass);
    object_class->dispose = ks_view_window_dispose;
    gtk_widget_class_set_template_from_resource(widget_class,
                                                "/org/koalascope/View/ks_view_window.ui");
#define CHILD(name) gtk_widget_class_bind_template_child(widget_class, KsViewWindow, name)
    CHILD(toasts);
    CHILD(title);
    CHILD(search_button);
    CHILD(search_bar);
    CHILD(search_entry);
    CHILD(live_revealer);
    CHILD(prompt_entry);
    CHILD(template_drop);
    CHILD(generate_spin);
    CHILD(run_button);
    CHILD(cancel_button);
    CHILD(progress);
    CHILD(prompt_adj);
    CHILD(layer_adj);
    CHILD(head_adj);
    CHILD(to_button);
    CHILD(nav_box);
    CHILD(token_label);
    CHILD(stack);
    CHILD(status);
#undef CHILD
    signals[SIG_OPENED] = g_signal_new("opened", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0,
                                       NULL, NULL, NULL, G_TYPE_NONE, 2, G_TYPE_BOOLEAN,
                                       G_TYPE_STRING);
    signals[SIG_RUN_FINISHED] = g_signal_new("run-finished", G_TYPE_FROM_CLASS(klass),
                                             G_SIGNAL_RUN_LAST, 0, NULL, NULL, NULL, G_TYPE_NONE,
                                             2, G_TYPE_BOOLEAN, G_TYPE_STRING);
    signals[SIG_DRILLED] = g_signal_new("drilled", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0,
                                        NULL, NULL, NULL, G_TYPE_NONE, 2, G_TYPE_BOOLEAN,
                                        G_TYPE_STRING);
}

static const GActionEntry win_actions[] = {
    {"open", action_open, NULL, NULL, NULL, {0}},
    {"compare", action_compare, NULL, NULL, NULL, {0}},
    {"save-run", action_save_run, NULL, NULL, NULL, {0}},
    {"export", action_export, "s", NULL, NULL, {0}},
    {"run", action_run, NULL, NULL, NULL, {0}},
    {"cancel", action_cancel, NULL, NULL, NULL, {0}},
    {"next-layer", action_step, NULL, NULL, NULL, {0}},
    {"prev-layer", action_step, NULL, NULL, NULL, {0}},
    {"next-head", action_step, NULL, NULL, NULL, {0}},
    {"prev-head", action_step, NULL, NULL, NULL, {0}},
    {"next-prompt", action_step, NULL, NULL, NULL, {0}},
    {"prev-prompt", action_step, NULL, NULL, NULL, {0}},
    {"zoom-in", action_zoom, NULL, NULL, NULL, {0}},
    {"zoom-out", action_zoom, NULL, NULL, NULL, {0}},
    {"zoom-reset", action_zoom, NULL, NULL, NULL, {0}},
    {"next-view", action_view_step, NULL, NULL, NULL, {0}},
    {"prev-view", action_view_step, NULL, NULL, NULL, {0}},
    {"search", action_search, NULL, NULL, NULL, {0}},
    {"direction", action_direction, NULL, NULL, NULL, {0}},
};

static void ks_view_window_init(KsViewWindow *self) {
    gtk_widget_init_template(GTK_WIDGET(self));
    self->doc = ks_view_document_new();
    ks_view_nav_init(&self->nav, self->doc);
    self->nav.ready = on_page_ready;
    self->nav.ready_data = self;
    g_signal_connect(self->doc, "changed", G_CALLBACK(on_document_changed), self);
    g_action_map_add_action_entries(G_ACTION_MAP(self), win_actions, G_N_ELEMENTS(win_actions),
                                    self);

    for (int p = 0; p < KS_N_PAGES; p++) {
        const ks_view_page_info *pi = ks_view_page_info_get(p);
        self->canvas[p] = ks_view_canvas_new(p, &self->nav);
        gtk_stack_add_titled(self->stack, GTK_WIDGET(self->canvas[p]), pi->id, pi->title);
        g_signal_connect(self->canvas[p], "changed", G_CALLBACK(on_canvas_changed), self);
        g_signal_connect(self->canvas[p], "navigate", G_CALLBACK(on_canvas_navigate), self);
        g_signal_connect(self->canvas[p], "failed", G_CALLBACK(on_canvas_failed), self);
        g_signal_connect(self->canvas[p], "activate-item", G_CALLBACK(on_canvas_activate_item),
                         self);
    }
    g_signal_connect(self->stack, "notify::visible-child", G_CALLBACK(on_page_switched), self);
    g_signal_connect(self->prompt_adj, "value-changed", G_CALLBACK(on_nav_value), self);
    g_signal_connect(self->layer_adj, "value-changed", G_CALLBACK(on_nav_value), self);
    g_signal_connect(self->head_adj, "value-changed", G_CALLBACK(on_nav_value), self);
    g_signal_connect(self->to_button, "toggled", G_CALLBACK(on_to_toggled), self);
    g_signal_connect(self->search_entry, "search-changed", G_CALLBACK(on_search_changed), self);
    g_signal_connect(self->search_entry, "activate", G_CALLBACK(on_search_next), self);
    g_signal_connect(self->search_entry, "next-match", G_CALLBACK(on_search_next), self);
    g_object_bind_property(self->search_button, "active", self->search_bar, "search-mode-enabled",
                           G_BINDING_BIDIRECTIONAL);
    gtk_search_bar_connect_entry(self->search_bar, GTK_EDITABLE(self->search_entry));
    g_signal_connect(self, "close-request", G_CALLBACK(on_close_request), NULL);

    g_autofree char *page = NULL;
    state_load(self, &page);
    int pg = ks_view_page_from_id(page);
    ks_view_window_sync(self);
    if (pg >= 0) ks_view_window_show_page(self, pg);
}

KsViewWindow *ks_view_window_new(GtkApplication *app) {
    return g_object_new(KS_VIEW_TYPE_WINDOW, "application", app, NULL);
}
