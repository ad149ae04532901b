/* view.c — `koalascope view [MODEL | DUMP.h5 | RESULTS_DIR]`: start the GTK4 viewer.
 *
 * The viewer is a program of its own (gui/viewer/, koalascope-view) so that this binary,
 * and every other command, never links GTK. It is looked for beside this program (an
 * installed tree), then in the build tree (build/cli/../gui/viewer/), or where KS_VIEWER
 * says; without it the command says how to build it. Paths given on the command line are
 * checked here, so a mistyped file is an error on the terminal that typed it; everything
 * after that (a file that does not open, a failed run) is shown in the window. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *help_view =
    "Usage: koalascope view [MODEL | DUMP.h5 | RESULTS_DIR] [options]\n"
    "Open the desktop viewer (GTK4): attention grid and heads, token strip, residual norms,\n"
    "logit lens, attributions, probe curves, audit scores and items, and a compare view.\n"
    "  DUMP.h5       a dump of koalascope record (opens at once, whatever its size)\n"
    "  RESULTS_DIR   the directory of koalascope audit (results.h5) or of a probe run;\n"
    "                a probe or attributions .h5 file opens too\n"
    "  MODEL         a checkpoint: type a prompt, choose a chat template, run it live\n"
    "Options\n"
    "  --tokenizer FILE   tokenizer of a llama2.c checkpoint (default: tok*.bin beside it)\n"
    "  --compare DUMP2    a second dump for the compare view\n"
    "Keyboard shortcuts: Ctrl+? in the window (docs/VIEWER.md). The window's size and last\n"
    "view are kept in $XDG_CONFIG_HOME/koalascope/viewer.ini.\n"
    "The viewer is the program koalascope-view, built where GTK4 and libadwaita are found\n"
    "(meson option -Dgui); KS_VIEWER=PATH names another.\n";

static bool is_exec(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

/* The viewer program into buf; false (with the places looked at in tried) when absent. */
static bool find_viewer(char *buf, size_t cap, char *tried, size_t tcap) {
    const char *env = getenv("KS_VIEWER");
    if (env && *env) {
        snprintf(tried, tcap, "%s (KS_VIEWER)", env);
        if (!is_exec(env)) return false;
        snprintf(buf, cap, "%s", env);
        return true;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(tried, tcap, "(cannot read /proc/self/exe)");
        return false;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    static const char *places[] = {"%s/koalascope-view", "%s/../gui/viewer/koalascope-view"};
    tried[0] = 0;
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof p, places[i], self);
        size_t used = strlen(tried);
        snprintf(tried + used, tcap - used, "%s%s", used ? ", " : "", p);
        if (is_exec(p)) {
            snprintf(buf, cap, "%s", p);
            return true;
        }
    }
    return false;
}

int cmd_view(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(help_view, stdout);
            return 0;
        }
    }
    /* check what the viewer will open: the options taking a file, and the free arguments;
     * other options (the viewer's hidden --self-test DIR, --self-test-prompt TEXT and
     * --self-test-keys KEYS, GTK's own) pass through, and the viewer names any it does not
     * know */
    int files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *path = a;
        if (strcmp(a, "--tokenizer") == 0 || strcmp(a, "--compare") == 0) {
            if (i + 1 >= argc) return cli_usage("view", "%s needs a file", a);
            path = argv[++i];
        } else if (strncmp(a, "--tokenizer=", 12) == 0 || strncmp(a, "--compare=", 10) == 0) {
            path = strchr(a, '=') + 1;
        } else if (strcmp(a, "--self-test") == 0 || strcmp(a, "--self-test-prompt") == 0 ||
                   strcmp(a, "--self-test-keys") == 0) {
            i++;
            continue;
        } else if (a[0] == '-') {
            continue;
        } else {
            files++;
        }
        struct stat st;
        if (stat(path, &st) != 0)
            return cli_error("view", "%s: %s", path, strerror(errno));
    }
    if (files > 1) return cli_usage("view", "%s", "give one MODEL, DUMP.h5 or RESULTS_DIR");
    char viewer[PATH_MAX + 64], tried[3 * PATH_MAX];
    if (!find_viewer(viewer, sizeof viewer, tried, sizeof tried))
        return cli_error("view", "the viewer (koalascope-view) was not built: it needs GTK4 >= 4.8 "
                         "and libadwaita-1 >= 1.2 (scripts/install-deps installs them), then "
                         "meson setup --reconfigure -Dgui=enabled; looked for %s", tried);
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) return cli_error("view", "%s", "out of memory");
    args[0] = viewer;
    for (int i = 1; i < argc; i++) args[i] = argv[i];
    execv(viewer, args);
    int e = errno;
    free(args);
    return cli_error("view", "cannot start %s: %s", viewer, strerror(e));
}
