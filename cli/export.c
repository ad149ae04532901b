/* export.c — koalascope export FORMAT … and koalascope import …: the dispatcher. The formats
 * live in export_arrays.c (npz, safetensors, csv; import safetensors) and export_notebook.c
 * (Jupyter notebooks). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char *help_export =
    "Usage: koalascope export FORMAT DUMP [options]   (koalascope export FORMAT --help)\n"
    "Turn a dump (and its /attributions) into what Python users load.\n"
    "Formats:\n"
    "  notebook     a Jupyter notebook that loads the dump with h5py and plots it\n"
    "  npz          NumPy .npz, one array per hook (TransformerLens names)\n"
    "  safetensors  safetensors, keys are TransformerLens hook names\n"
    "  csv          attribution and patching results (/attributions) as CSV\n"
    "The reverse, a TransformerLens-style cache into a dump: koalascope import safetensors.\n";

int cmd_export(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help_export, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *fmt = argv[1];
    if (!strcmp(fmt, "notebook")) return cmd_export_notebook(argc - 1, argv + 1);
    if (!strcmp(fmt, "npz") || !strcmp(fmt, "safetensors") || !strcmp(fmt, "csv"))
        return cmd_export_arrays(fmt, argc - 1, argv + 1);
    return cli_usage("export", "unknown format '%s' (notebook, npz, safetensors, csv)", fmt);
}
