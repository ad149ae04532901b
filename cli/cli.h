/* cli.h — what the command files of cli/ share with main.c. Only cli/ talks to the user:
 * results on stdout, diagnostics and progress on stderr, exit 1 on bad usage or input. */
#ifndef KS_CLI_H
#define KS_CLI_H

#include <stdbool.h>

#define EXIT_USAGE 1

/* "koalascope CMD: error: …" on stderr, then (cli_usage only) "Try 'koalascope CMD --help'.";
 * both return EXIT_USAGE (cli/main.c). */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A whole file as a NUL-terminated string (malloc'd); NULL when it cannot be read. */
char *cli_slurp(const char *path);

/* An integer in [lo, hi], the whole string (cli/main.c). */
bool cli_parse_int(const char *s, long lo, long hi, long *out);

/* koalascope record … (cli/record.c) */
int cmd_record(int argc, char **argv);
/* koalascope dump-info … (cli/dump_info.c) */
int cmd_dump_info(int argc, char **argv);
/* koalascope attribute … and koalascope patch … (cli/attribute.c) */
int cmd_attribute(int argc, char **argv);
int cmd_patch(int argc, char **argv);
/* koalascope lens … (cli/lens.c) */
int cmd_lens(int argc, char **argv);
/* koalascope tuned-lens … (cli/tuned_lens.c) */
int cmd_tuned_lens(int argc, char **argv);
/* koalascope probe … (cli/probe.c) */
int cmd_probe(int argc, char **argv);
/* koalascope export FORMAT … (cli/export.c dispatches to the two below) */
int cmd_export(int argc, char **argv);
/* koalascope export npz|safetensors|csv … (cli/export_arrays.c); argv[0] is the format */
int cmd_export_arrays(const char *format, int argc, char **argv);
/* koalascope export notebook … (cli/export_notebook.c); argv[0] is "notebook" */
int cmd_export_notebook(int argc, char **argv);
/* koalascope audit SPEC.json … (cli/audit.c) */
int cmd_audit(int argc, char **argv);
/* koalascope render FILE --view VIEW … (cli/render.c) */
int cmd_render(int argc, char **argv);
/* koalascope view … (cli/view.c): starts the GTK viewer, a program of its own */
int cmd_view(int argc, char **argv);
/* koalascope diff BASE TUNED … (cli/diff.c) */
int cmd_diff(int argc, char **argv);
/* koalascope finetune … (cli/finetune.c) */
int cmd_finetune(int argc, char **argv);
/* koalascope demo … (cli/demo.c): the main job on koala-mini */
int cmd_demo(int argc, char **argv);
/* koalascope import safetensors … (cli/export_arrays.c) */
int cmd_import(int argc, char **argv);

#endif
