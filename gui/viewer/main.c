/* main.c — koalascope-view, the GTK4 viewer that `koalascope view` starts (it is a program
 * of its own so that no other koalascope command links GTK).
 *
 * Every warning and critical that GLib, GTK or we log is counted on its way to the default
 * writer: the self-test fails on any (CI runs it with G_DEBUG=fatal-criticals as well). */
#include <locale.h>

#include "ks_view_app.h"
#include "ks_view_selftest.h"

static guint problems;

guint ks_view_log_problems(void) { return g_atomic_int_get(&problems); }

static GLogWriterOutput count_writer(GLogLevelFlags level, const GLogField *fields,
                                     gsize n_fields, gpointer data) {
    (void)data;
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
        g_atomic_int_inc(&problems);
    return g_log_writer_default(level, fields, n_fields, NULL);
}

int main(int argc, char **argv) {
    ks_view_start_us = g_get_monotonic_time();
    setlocale(LC_ALL, "");
    g_log_set_writer_func(count_writer, NULL, NULL);
    g_autoptr(KsViewApp) app = ks_view_app_new();
    int rc = g_application_run(G_APPLICATION(app), argc, argv);
    return rc ? rc : ks_view_app_exit_status(app);
}
