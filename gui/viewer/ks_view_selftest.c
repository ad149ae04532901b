/* ks_view_selftest.c — the automation entry of the viewer (see ks_view_selftest.h).
 *
 * Screenshots go through GTK's own rendering: the widget's paintable is snapshotted into a
 * render node and rendered by the window's GskRenderer to a GdkTexture, saved as PNG, so a
 * screenshot is what the window shows (not a second drawing through cairo). A page counts as
 * drawn once its canvas has produced a frame after being shown and nothing is still being
 * read for it by a worker (the attention grid).
 *
 * An audit directory: the items are activated one after the other, as a click does, until one
 * has internals in the audit's drill-down dump (each one without prints the toast it showed);
 * the pages are then those of the audit and of that item's prompts. With --self-test-keys
 * the items are reached by the keyboard instead: each key of the script is pressed through
 * the display server (ks_view_keys.c) once the window is active and the items page has the
 * focus, and the next one only once this one did what it does (a selection, an item's
 * internals or a toast), so each key's effect is printed and one without any is a failure.
 *
 * The main loop's longest stall during each page (a 10 ms timer's largest lateness) is
 * printed with it: a page that reads on the main thread shows there. */
#include "ks_view_selftest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_view_keys.h"

gint64 ks_view_start_us;

typedef struct {
    KsViewWindow *win; /* borrowed: the window owns this struct */
    KsViewApp *app;
    char *dir, *prompt, *compare;
    char *keys_text;      /* --self-test-keys as given, NULL when not */
    int pages[KS_N_PAGES + 4];
    const char *names[KS_N_PAGES + 4];
    int n_steps, step;
    guint frames_before;
    gint64 step_started;
    guint tick_id;
    int failures;
    gboolean first_frame_reported;
    gint64 opened_us;
    int64_t drill_item;   /* the audit item being tried */
    guint stall_id;       /* the 10 ms timer measuring main-loop stalls */
    gint64 stall_last, stall_max;
    /* --self-test-keys */
    guint *keys;          /* the keyvals to type, n_keys of them; key: the next one */
    int n_keys, key;
    enum { KEYS_IDLE, KEYS_FOCUS, KEYS_EFFECT } keys_state; /* what is being waited for */
    guint keys_wait_id;   /* the timer polling for the focus, or timing the key's effect */
    gint64 keys_since;
    gboolean keys_opened; /* the last Return opened its item's internals */
} selftest;

/* extra steps after the pages: a zoomed head, attention to a token */
enum { STEP_HEAD_ZOOMED = 100, STEP_ATTENTION_TO = 101 };

static gboolean stall_tick(gpointer data) {
    selftest *t = data;
    gint64 now = g_get_monotonic_time();
    if (t->stall_last && now - t->stall_last > t->stall_max) t->stall_max = now - t->stall_last;
    t->stall_last = now;
    return G_SOURCE_CONTINUE;
}

static void selftest_free(selftest *t) {
    if (t->stall_id) g_source_remove(t->stall_id);
    if (t->keys_wait_id) g_source_remove(t->keys_wait_id);
    g_free(t->keys);
    g_free(t->keys_text);
    g_free(t->dir);
    g_free(t->prompt);
    g_free(t->compare);
    g_free(t);
}

/* 1 saved, 0 failed, -1 nothing to render yet (the widget is between frames: try at the
 * next one) */
static int save_widget_png(GtkWidget *w, const char *path) {
    int width = gtk_widget_get_width(w), height = gtk_widget_get_height(w);
    if (width <= 0 || height <= 0) {
        fprintf(stderr, "self-test: %s: the widget has no size (%d x %d)\n", path, width, height);
        return 0;
    }
    g_autoptr(GdkPaintable) paintable = gtk_widget_paintable_new(w);
    GtkSnapshot *snap = gtk_snapshot_new();
    gdk_paintable_snapshot(paintable, snap, width, height);
    g_autoptr(GskRenderNode) node = gtk_snapshot_free_to_node(snap);
    if (!node) return -1;
    GskRenderer *r = gtk_native_get_renderer(gtk_widget_get_native(w));
    g_autoptr(GdkTexture) tex =
        gsk_renderer_render_texture(r, node, &GRAPHENE_RECT_INIT(0, 0, width, height));
    return tex && gdk_texture_save_to_png(tex, path) ? 1 : 0;
}

static long peak_rss_kb(void) {
    g_autofree char *status = NULL;
    if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL)) return -1;
    const char *p = strstr(status, "VmHWM:");
    return p ? strtol(p + 6, NULL, 10) : -1;
}

static gboolean quit_idle(gpointer data) {
    KsViewApp *app = data;
    g_application_quit(G_APPLICATION(app));
    return G_SOURCE_REMOVE;
}

static void finish(selftest *t) {
    guint problems = ks_view_log_problems();
    printf("self-test: peak-rss-kb %ld\n", peak_rss_kb());
    printf("self-test: log warnings/criticals %u\n", problems);
    printf("self-test: %s (%d page failures)\n", t->failures || problems ? "FAILED" : "ok",
           t->failures);
    fflush(stdout);
    ks_view_app_set_exit_status(t->app, t->failures || problems ? 1 : 0);
    KsViewApp *app = t->app;
    /* closing the window saves its state (tested); quitting then ends the main loop */
    gtk_window_close(GTK_WINDOW(t->win));
    g_idle_add(quit_idle, app);
}

static void on_page_failed(KsViewCanvas *c, const char *msg, selftest *t) {
    const ks_view_page_info *pi = ks_view_page_info_get(ks_view_canvas_page(c));
    fprintf(stderr, "self-test: page %s failed to draw: %s\n", pi->id, msg);
    t->failures++;
}

static void begin_step(selftest *t);

static gboolean on_tick(GtkWidget *w, GdkFrameClock *clock, gpointer data) {
    (void)w;
    (void)clock;
    selftest *t = data;
    KsViewPage page = ks_view_window_current_page(t->win);
    KsViewCanvas *c = ks_view_window_canvas(t->win, page);
    gint64 now = g_get_monotonic_time();
    if (ks_view_page_pending(ks_view_window_nav(t->win), page) &&
        now - t->step_started < 20 * G_USEC_PER_SEC) {
        t->frames_before = ks_view_canvas_frames(c); /* the placeholder does not count */
        return G_SOURCE_CONTINUE;
    }
    if (ks_view_canvas_frames(c) <= t->frames_before) {
        if (now - t->step_started > 20 * G_USEC_PER_SEC) {
            fprintf(stderr, "self-test: page %s: no frame within 20 s\n", t->names[t->step]);
            t->failures++;
        } else {
            return G_SOURCE_CONTINUE;
        }
    } else {
        if (!t->first_frame_reported) {
            t->first_frame_reported = TRUE;
            printf("self-test: first-frame-ms %.1f (process start), %.1f (file opened)\n",
                   (now - ks_view_start_us) / 1000.0, (now - t->opened_us) / 1000.0);
        }
        g_autofree char *png = g_strdup_printf("%s/%s.png", t->dir, t->names[t->step]);
        g_autofree char *wpng = g_strdup_printf("%s/%s-window.png", t->dir, t->names[t->step]);
        int ok = save_widget_png(GTK_WIDGET(c), png);
        if (ok == 1) ok = save_widget_png(GTK_WIDGET(t->win), wpng);
        if (ok < 0 && now - t->step_started < 20 * G_USEC_PER_SEC) return G_SOURCE_CONTINUE;
        if (ok != 1) t->failures++;
        printf("self-test: page %s %s (%.0f ms; main loop stalled at most %.0f ms)\n",
               t->names[t->step], ok == 1 ? "saved" : "NOT SAVED",
               (now - t->step_started) / 1000.0, t->stall_max / 1000.0);
        fflush(stdout);
    }
    t->tick_id = 0;
    t->step++;
    begin_step(t);
    return G_SOURCE_REMOVE;
}

static void begin_step(selftest *t) {
    if (t->step >= t->n_steps) {
        /* one view through the export path too, in each format */
        static const char *ext[] = {"png", "svg", "pdf"};
        for (int i = 0; i < 3; i++) {
            g_autofree char *path = g_strdup_printf("%s/export.%s", t->dir, ext[i]);
            g_autoptr(GError) err = NULL;
            if (!ks_view_window_export(t->win, path, &err)) {
                fprintf(stderr, "self-test: export %s: %s\n", path, err->message);
                t->failures++;
            }
        }
        finish(t);
        return;
    }
    ks_view_nav *nav = ks_view_window_nav(t->win);
    int p = t->pages[t->step];
    if (p == STEP_HEAD_ZOOMED) {
        ks_view_window_show_page(t->win, KS_PAGE_HEAD);
        nav->zoom = 4;
        nav->row0 = nav->col0 = 0;
        p = KS_PAGE_HEAD;
    } else if (p == STEP_ATTENTION_TO) {
        nav->zoom = 1;
        nav->token = 1;
        nav->to_token = true;
        p = KS_PAGE_FROM_TO;
    }
    ks_view_window_sync(t->win);
    ks_view_window_show_page(t->win, p);
    KsViewCanvas *c = ks_view_window_canvas(t->win, p);
    ks_view_canvas_refresh(c);
    t->frames_before = ks_view_canvas_frames(c);
    t->step_started = g_get_monotonic_time();
    t->stall_last = 0;
    t->stall_max = 0;
    if (!t->stall_id) t->stall_id = g_timeout_add(10, stall_tick, t);
    t->tick_id = gtk_widget_add_tick_callback(GTK_WIDGET(t->win), on_tick, t, NULL);
}

static void start_pages(selftest *t) {
    ks_view_nav *nav = ks_view_window_nav(t->win);
    t->n_steps = 0;
    for (int p = 0; p < KS_N_PAGES; p++)
        if (ks_view_page_available(nav, p)) {
            t->pages[t->n_steps] = p;
            t->names[t->n_steps++] = ks_view_page_info_get(p)->id;
        }
    if (ks_view_page_available(nav, KS_PAGE_HEAD) && ks_view_document_dump(ks_view_window_document(t->win))) {
        t->pages[t->n_steps] = STEP_HEAD_ZOOMED;
        t->names[t->n_steps++] = "head-zoomed";
        t->pages[t->n_steps] = STEP_ATTENTION_TO;
        t->names[t->n_steps++] = "attention-to";
    }
    for (int p = 0; p < KS_N_PAGES; p++)
        g_signal_connect(ks_view_window_canvas(t->win, p), "failed", G_CALLBACK(on_page_failed), t);
    printf("self-test: %d pages\n", t->n_steps);
    t->step = 0;
    begin_step(t);
}

static void on_run_finished(KsViewWindow *win, gboolean ok, const char *msg, selftest *t) {
    (void)win;
    if (!ok) {
        fprintf(stderr, "self-test: the live run failed: %s\n", msg);
        t->failures++;
        finish(t);
        return;
    }
    printf("self-test: live run done\n");
    start_pages(t);
}

/* Activate audit items in turn until one opens its internals; then the pages. */
static void try_next_item(selftest *t) {
    ks_view_nav *nav = ks_view_window_nav(t->win);
    nav->audit_row = -1;
    nav->item = t->drill_item;
    g_autofree char *audit = NULL, *id = NULL;
    int64_t index;
    if (!ks_view_nav_audit_item(nav, &audit, &id, &index)) {
        printf("self-test: no audit item has internals\n");
        nav->item = -1;
        start_pages(t);
        return;
    }
    ks_view_window_activate_item(t->win);
}

static void on_drilled(KsViewWindow *win, gboolean ok, const char *msg, selftest *t) {
    (void)win;
    if (ok) {
        printf("self-test: item %" G_GINT64_FORMAT ": internals opened at prompt %" G_GINT64_FORMAT
               "\n", t->drill_item, ks_view_window_nav(t->win)->prompt);
        start_pages(t);
        return;
    }
    printf("self-test: item %" G_GINT64_FORMAT ": toast: %s\n", t->drill_item, msg);
    t->drill_item++;
    try_next_item(t);
}

/* ---------------------------------------------------------------- --self-test-keys */

static void keys_on_changed(KsViewCanvas *c, selftest *t);
static void keys_on_drilled(KsViewWindow *win, gboolean ok, const char *msg, selftest *t);

static KsViewCanvas *items_canvas(selftest *t) {
    return ks_view_window_canvas(t->win, KS_PAGE_ITEMS);
}

/* The script ended (or failed): the pages, those of the item opened if one was. */
static void keys_end(selftest *t) {
    if (t->keys_wait_id) g_source_remove(t->keys_wait_id);
    t->keys_wait_id = 0;
    t->keys_state = KEYS_IDLE;
    g_signal_handlers_disconnect_by_func(items_canvas(t), keys_on_changed, t);
    g_signal_handlers_disconnect_by_func(t->win, keys_on_drilled, t);
    if (!t->keys_opened) {
        printf("self-test: the keys opened no item's internals\n");
        ks_view_window_nav(t->win)->item = -1; /* as the click path leaves it */
    }
    start_pages(t);
}

static G_GNUC_PRINTF(2, 3) void keys_fail(selftest *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "self-test: keys: %s\n", msg);
    t->failures++;
    keys_end(t);
}

static gboolean keys_wait_effect(gpointer data) {
    selftest *t = data;
    if (g_get_monotonic_time() - t->keys_since < 20 * G_USEC_PER_SEC) return G_SOURCE_CONTINUE;
    t->keys_wait_id = 0;
    keys_fail(t, "key %s: no effect within 20 s (item %" G_GINT64_FORMAT " selected)",
              gdk_keyval_name(t->keys[t->key]), ks_view_window_nav(t->win)->item);
    return G_SOURCE_REMOVE;
}

/* Type the next key of the script, or end it. */
static void keys_send(selftest *t) {
    if (t->key >= t->n_keys) {
        keys_end(t);
        return;
    }
    g_autoptr(GError) err = NULL;
    if (!ks_view_keys_type(GTK_WIDGET(t->win), t->keys[t->key], &err)) {
        keys_fail(t, "key %s: %s", gdk_keyval_name(t->keys[t->key]), err->message);
        return;
    }
    t->keys_state = KEYS_EFFECT;
    t->keys_since = g_get_monotonic_time();
    t->keys_wait_id = g_timeout_add(50, keys_wait_effect, t);
}

/* The key typed did what it does: the next one. */
static void keys_next(selftest *t) {
    g_source_remove(t->keys_wait_id);
    t->keys_wait_id = 0;
    t->keys_state = KEYS_IDLE;
    t->key++;
    if (t->keys_opened && t->key < t->n_keys) {
        keys_fail(t, "%d key(s) left after the item's internals opened (the items page is "
                  "no longer shown)", t->n_keys - t->key);
        return;
    }
    keys_send(t);
}

static void keys_on_changed(KsViewCanvas *c, selftest *t) {
    (void)c;
    if (t->keys_state != KEYS_EFFECT) return;
    printf("self-test: key %s: item %" G_GINT64_FORMAT " selected\n",
           gdk_keyval_name(t->keys[t->key]), ks_view_window_nav(t->win)->item);
    keys_next(t);
}

static void keys_on_drilled(KsViewWindow *win, gboolean ok, const char *msg, selftest *t) {
    (void)win;
    int64_t item = ks_view_window_nav(t->win)->item;
    if (t->keys_state != KEYS_EFFECT) {
        keys_fail(t, "item %" G_GINT64_FORMAT " was activated with no key pressed", item);
        return;
    }
    /* the same lines as for a click (on_drilled) */
    if (ok)
        printf("self-test: item %" G_GINT64_FORMAT ": internals opened at prompt %"
               G_GINT64_FORMAT " (key %s)\n", item, ks_view_window_nav(t->win)->prompt,
               gdk_keyval_name(t->keys[t->key]));
    else
        printf("self-test: item %" G_GINT64_FORMAT ": toast: %s (key %s)\n", item, msg,
               gdk_keyval_name(t->keys[t->key]));
    t->keys_opened = ok;
    keys_next(t);
}

/* Keys go to the window that has the display's focus and, in it, to the focus widget: wait
 * until that is the items page, drawn. */
static gboolean keys_wait_focus(gpointer data) {
    selftest *t = data;
    GtkWidget *items = GTK_WIDGET(items_canvas(t));
    if (gtk_window_is_active(GTK_WINDOW(t->win)) && gtk_widget_is_focus(items) &&
        gtk_widget_get_mapped(items) && ks_view_canvas_frames(items_canvas(t)) > 0) {
        t->keys_wait_id = 0;
        printf("self-test: keys: the items page has the keyboard focus\n");
        keys_send(t);
        return G_SOURCE_REMOVE;
    }
    if (g_get_monotonic_time() - t->keys_since < 20 * G_USEC_PER_SEC) return G_SOURCE_CONTINUE;
    t->keys_wait_id = 0;
    keys_fail(t, "the items page did not get the keyboard focus within 20 s (window %s, "
              "items page %s)", gtk_window_is_active(GTK_WINDOW(t->win)) ? "active" : "not active",
              gtk_widget_is_focus(items) ? "focused" : "not focused");
    return G_SOURCE_REMOVE;
}

/* The audit is open: show all its items, none selected, give the items page the focus (as
 * a click on it does) and type the script once the window has the keyboard. */
static void keys_begin(selftest *t) {
    g_auto(GStrv) names = g_strsplit(t->keys_text, ",", -1);
    t->n_keys = (int)g_strv_length(names);
    t->keys = g_new0(guint, t->n_keys + 1);
    for (int i = 0; i < t->n_keys; i++) {
        t->keys[i] = gdk_keyval_from_name(g_strstrip(names[i]));
        if (t->keys[i] == GDK_KEY_VoidSymbol || t->keys[i] == 0) {
            fprintf(stderr, "self-test: --self-test-keys: no key is named '%s'\n", names[i]);
            t->failures++;
            finish(t);
            return;
        }
    }
    const char *why = NULL;
    if (!ks_view_keys_available(GTK_WIDGET(t->win), &why)) {
        fprintf(stderr, "self-test: --self-test-keys: cannot type keys: %s\n", why);
        t->failures++;
        finish(t);
        return;
    }
    ks_view_nav *nav = ks_view_window_nav(t->win);
    nav->audit_row = -1;
    nav->item = -1;
    nav->scroll = 0;
    ks_view_window_sync(t->win);
    ks_view_window_show_page(t->win, KS_PAGE_ITEMS);
    gtk_widget_grab_focus(GTK_WIDGET(items_canvas(t)));
    /* no window manager under Xvfb: presenting the mapped window gives it the input focus */
    gtk_window_present(GTK_WINDOW(t->win));
    g_signal_connect(items_canvas(t), "changed", G_CALLBACK(keys_on_changed), t);
    g_signal_connect(t->win, "drilled", G_CALLBACK(keys_on_drilled), t);
    t->key = 0;
    t->keys_opened = FALSE;
    t->keys_state = KEYS_FOCUS;
    t->keys_since = g_get_monotonic_time();
    t->keys_wait_id = g_timeout_add(20, keys_wait_focus, t);
}

static void on_opened(KsViewWindow *win, gboolean ok, const char *msg, selftest *t) {
    t->opened_us = g_get_monotonic_time();
    if (!ok) {
        fprintf(stderr, "self-test: cannot open: %s\n", msg);
        t->failures++;
        finish(t);
        return;
    }
    KsViewDocument *doc = ks_view_window_document(win);
    if (t->compare) {
        g_autoptr(GError) err = NULL;
        if (!ks_view_document_open_other(doc, t->compare, &err)) {
            fprintf(stderr, "self-test: --compare: %s\n", err->message);
            t->failures++;
        }
    }
    if (ks_view_document_source(doc) == KS_VIEW_SOURCE_MODEL) {
        g_signal_connect(win, "run-finished", G_CALLBACK(on_run_finished), t);
        ks_view_window_run(win, t->prompt ? t->prompt : "Once upon a time", "none", 8);
        return;
    }
    if (t->keys_text && ks_view_document_source(doc) != KS_VIEW_SOURCE_AUDIT) {
        fprintf(stderr, "self-test: --self-test-keys: only for an audit directory\n");
        t->failures++;
        finish(t);
        return;
    }
    if (t->keys_text) {
        keys_begin(t);
        return;
    }
    if (ks_view_document_source(doc) == KS_VIEW_SOURCE_AUDIT) {
        g_signal_connect(win, "drilled", G_CALLBACK(on_drilled), t);
        t->drill_item = 0;
        try_next_item(t);
        return;
    }
    start_pages(t);
}

void ks_view_selftest_attach(KsViewWindow *win, KsViewApp *app, const char *dir,
                             const char *prompt, const char *compare, const char *keys) {
    selftest *t = g_new0(selftest, 1);
    t->win = win;
    t->app = app;
    t->dir = g_strdup(dir);
    t->prompt = g_strdup(prompt);
    t->compare = g_strdup(compare);
    t->keys_text = g_strdup(keys);
    g_mkdir_with_parents(dir, 0755);
    g_object_set_data_full(G_OBJECT(win), "ks-selftest", t, (GDestroyNotify)selftest_free);
    g_signal_connect(win, "opened", G_CALLBACK(on_opened), t);
}

void ks_view_selftest_start_empty(KsViewWindow *win) {
    selftest *t = g_object_get_data(G_OBJECT(win), "ks-selftest");
    if (!t) return;
    t->opened_us = g_get_monotonic_time();
    start_pages(t);
}
