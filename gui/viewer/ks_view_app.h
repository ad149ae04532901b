/* ks_view_app.h — the viewer application (`koalascope view`): an AdwApplication that opens
 * each file of its command line in a window, sets the keyboard shortcuts, and runs the
 * hidden --self-test that CI uses (ks_view_selftest.c). */
#ifndef KS_VIEW_APP_H
#define KS_VIEW_APP_H

#include <adwaita.h>

G_BEGIN_DECLS

#define KS_VIEW_TYPE_APP (ks_view_app_get_type())
G_DECLARE_FINAL_TYPE(KsViewApp, ks_view_app, KS, VIEW_APP, AdwApplication)

KsViewApp *ks_view_app_new(void);
/* The exit status g_application_run returns (the self-test's verdict). */
void ks_view_app_set_exit_status(KsViewApp *self, int status);
int ks_view_app_exit_status(KsViewApp *self);

/* Warnings and criticals logged so far (counted by main.c's log writer). */
guint ks_view_log_problems(void);

G_END_DECLS

#endif
