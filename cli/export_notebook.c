/* export_notebook.c — placeholder until the notebook export lands (replaced by its author). */
#include <stdio.h>

#include "cli.h"

int cmd_export_notebook(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "koalascope export notebook: not built yet\n");
    return EXIT_USAGE;
}
