/* export_arrays.c — placeholder until the array exports land (replaced by their author). */
#include <stdio.h>

#include "cli.h"

int cmd_export_arrays(const char *format, int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "koalascope export %s: not built yet\n", format);
    return EXIT_USAGE;
}

int cmd_import(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "koalascope import: not built yet\n");
    return EXIT_USAGE;
}
