/* ks_view_app.c — the viewer application.
 *
 * Command line: koalascope-view [--tokenizer FILE] [--compare DUMP2] [FILE...], where FILE is
 * a dump, a results directory or file, or a model. Each FILE opens in a window of its own
 * (GApplication's open); none opens an empty window. The instance is not unique: every
 * invocation is its own process, so a test or a second user never hands its files to a
 * window of another process (and no session bus is needed).
 *
 * --self-test DIR (hidden) drives every view of the first window, saves a screenshot of
 * each to DIR and exits 0 only when all were drawn and nothing logged a warning;
 * --self-test-keys KEYS (hidden) has it type KEYS into an audit's items page first (see
 * ks_view_selftest.h). */
#include "ks_view_app.h"

#include "ks_view_selftest.h"
#include "ks_view_window.h"

struct _KsViewApp {
    AdwApplication parent_instance;
    char *tokenizer;
    char *compare;
    char *self_test_dir;
    char *self_test_prompt;
    char *self_test_keys;
    int exit_status;
};

G_DEFINE_FINAL_TYPE(KsViewApp, ks_view_app, ADW_TYPE_APPLICATION)

static KsViewWindow *new_window(KsViewApp *self) {
    KsViewWindow *win = ks_view_window_new(GTK_APPLICATION(self));
    if (self->self_test_dir)
        ks_view_selftest_attach(win, self, self->self_test_dir, self->self_test_prompt,
                                self->compare, self->self_test_keys);
    return win;
}

static void ks_view_app_activate(GApplication *app) {
    KsViewApp *self = KS_VIEW_APP(app);
    GtkWindow *win = gtk_application_get_active_window(GTK_APPLICATION(app));
    if (!win) win = GTK_WINDOW(new_window(self));
    gtk_window_present(win);
    if (self->self_test_dir) {
        /* nothing to open: the self-test of an empty window is one screenshot */
        ks_view_selftest_start_empty(KS_VIEW_WINDOW(win));
    }
}

static void ks_view_app_open(GApplication *app, GFile **files, int n_files, const char *hint) {
    (void)hint;
    KsViewApp *self = KS_VIEW_APP(app);
    for (int i = 0; i < n_files; i++) {
        g_autofree char *path = g_file_get_path(files[i]);
        KsViewWindow *win = new_window(self);
        gtk_window_present(GTK_WINDOW(win));
        if (!path) {
            g_autofree char *uri = g_file_get_uri(files[i]);
            g_autofree char *msg = g_strdup_printf("%s: only local files can be opened", uri);
            ks_view_window_toast(win, msg);
            continue;
        }
        ks_view_window_open(win, path, self->tokenizer);
        if (self->compare && !self->self_test_dir) {
            g_autoptr(GError) err = NULL;
            if (!ks_view_document_open_other(ks_view_window_document(win), self->compare, &err))
                ks_view_window_toast(win, err->message);
        }
        if (self->self_test_dir) break; /* the self-test drives one window */
    }
}

static void action_about(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    GtkApplication *app = data;
    GtkWindow *parent = gtk_application_get_active_window(app);
    AdwAboutWindow *about = ADW_ABOUT_WINDOW(adw_about_window_new());
    adw_about_window_set_application_name(about, "koalascope");
    adw_about_window_set_version(about, KS_VERSION);
    adw_about_window_set_comments(about, "Looking inside LLaMA-family chat models: attention, "
                                         "residual stream, lenses, attributions, probes, audits.");
    adw_about_window_set_license_type(about, GTK_LICENSE_MIT_X11);
    if (parent) gtk_window_set_transient_for(GTK_WINDOW(about), parent);
    gtk_window_present(GTK_WINDOW(about));
}

static void action_quit(GSimpleAction *a, GVariant *p, gpointer data) {
    (void)a;
    (void)p;
    GtkApplication *app = data;
    /* close every window, so each saves its state */
    GList *wins = gtk_application_get_windows(app);
    for (GList *l = wins; l; l = l->next) gtk_window_close(l->data);
}

static void ks_view_app_startup(GApplication *app) {
    G_APPLICATION_CLASS(ks_view_app_parent_class)->startup(app);
    static const GActionEntry app_actions[] = {
        {"about", action_about, NULL, NULL, NULL, {0}},
        {"quit", action_quit, NULL, NULL, NULL, {0}},
    };
    g_action_map_add_action_entries(G_ACTION_MAP(app), app_actions, G_N_ELEMENTS(app_actions), app);
    static const struct {
        const char *action;
        const char *accels[3];
    } keys[] = {
        {"app.quit", {"<Control>q", NULL}},
        {"win.open", {"<Control>o", NULL}},
        {"win.compare", {"<Control><Shift>o", NULL}},
        {"win.export::png", {"<Control>e", NULL}},
        {"win.export::svg", {"<Control><Shift>e", NULL}},
        {"win.export::pdf", {"<Control>p", NULL}},
        {"win.run", {"<Control>Return", NULL}},
        {"win.cancel", {"<Control>period", NULL}},
        {"win.next-layer", {"<Alt>Down", NULL}},
        {"win.prev-layer", {"<Alt>Up", NULL}},
        {"win.next-head", {"<Alt>Right", NULL}},
        {"win.prev-head", {"<Alt>Left", NULL}},
        {"win.next-prompt", {"<Alt>Page_Down", NULL}},
        {"win.prev-prompt", {"<Alt>Page_Up", NULL}},
        {"win.zoom-in", {"<Control>plus", "<Control>equal", NULL}},
        {"win.zoom-out", {"<Control>minus", NULL}},
        {"win.zoom-reset", {"<Control>0", NULL}},
        {"win.next-view", {"<Control>Page_Down", NULL}},
        {"win.prev-view", {"<Control>Page_Up", NULL}},
        {"win.search", {"<Control>f", NULL}},
        {"win.direction", {"<Control>t", NULL}},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(keys); i++)
        gtk_application_set_accels_for_action(GTK_APPLICATION(app), keys[i].action, keys[i].accels);
}

static int ks_view_app_handle_local_options(GApplication *app, GVariantDict *options) {
    KsViewApp *self = KS_VIEW_APP(app);
    g_variant_dict_lookup(options, "tokenizer", "^ay", &self->tokenizer);
    g_variant_dict_lookup(options, "compare", "^ay", &self->compare);
    g_variant_dict_lookup(options, "self-test", "^ay", &self->self_test_dir);
    g_variant_dict_lookup(options, "self-test-prompt", "s", &self->self_test_prompt);
    g_variant_dict_lookup(options, "self-test-keys", "s", &self->self_test_keys);
    if (g_variant_dict_contains(options, "version")) {
        g_print("koalascope-view %s\n", KS_VERSION);
        return 0;
    }
    return -1;
}

static void ks_view_app_dispose(GObject *object) {
    KsViewApp *self = KS_VIEW_APP(object);
    g_clear_pointer(&self->tokenizer, g_free);
    g_clear_pointer(&self->compare, g_free);
    g_clear_pointer(&self->self_test_dir, g_free);
    g_clear_pointer(&self->self_test_prompt, g_free);
    g_clear_pointer(&self->self_test_keys, g_free);
    G_OBJECT_CLASS(ks_view_app_parent_class)->dispose(object);
}

static void ks_view_app_class_init(KsViewAppClass *klass) {
    GObjectClass *object_class = G_OBJECT_CLASS(klass);
    GApplicationClass *app_class = G_APPLICATION_CLASS(klass);
    object_class->dispose = ks_view_app_dispose;
    app_class->startup = ks_view_app_startup;
    app_class->activate = ks_view_app_activate;
    app_class->open = ks_view_app_open;
    app_class->handle_local_options = ks_view_app_handle_local_options;
}

static void ks_view_app_init(KsViewApp *self) {
    static const GOptionEntry entries[] = {
        {"tokenizer", 0, 0, G_OPTION_ARG_FILENAME, NULL,
         "Tokenizer file for a llama2.c checkpoint", "FILE"},
        {"compare", 0, 0, G_OPTION_ARG_FILENAME, NULL,
         "A second dump for the compare view", "DUMP"},
        {"version", 0, 0, G_OPTION_ARG_NONE, NULL, "Print the version", NULL},
        {"self-test", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_FILENAME, NULL,
         "Drive every view, save screenshots into DIR, exit", "DIR"},
        {"self-test-prompt", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING, NULL,
         "With a model: the prompt the self-test runs", "TEXT"},
        {"self-test-keys", 0, G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_STRING, NULL,
         "With an audit: keys the self-test types into the items page (Down,Return,…)", "KEYS"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    g_application_add_main_option_entries(G_APPLICATION(self), entries);
    g_application_set_option_context_parameter_string(G_APPLICATION(self),
                                                      "[MODEL | DUMP.h5 | RESULTS_DIR]");
    g_application_set_option_context_summary(
        G_APPLICATION(self), "The koalascope viewer: attention, residual stream, logit lens, "
                             "attributions, probes and audits of a dump, results, or a model "
                             "run live. Shortcuts: Ctrl+? in the window.");
}

KsViewApp *ks_view_app_new(void) {
    return g_object_new(KS_VIEW_TYPE_APP, "application-id", "org.koalascope.View", "flags",
                        G_APPLICATION_HANDLES_OPEN | G_APPLICATION_NON_UNIQUE,
                        "resource-base-path", "/org/koalascope/View", NULL);
}

void ks_view_app_set_exit_status(KsViewApp *self, int status) { self->exit_status = status; }
int ks_view_app_exit_status(KsViewApp *self) { return self->exit_status; }
