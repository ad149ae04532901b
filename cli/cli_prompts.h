/* cli_prompts.h — prompt files for the commands that run prompts through a model (record,
 * diff): cli/prompts.c. Only cli/ includes it. */
#ifndef KS_CLI_PROMPTS_H
#define KS_CLI_PROMPTS_H

#include <stdbool.h>
#include <stdio.h>

#include "ks_model.h"

/* Where prompts come from and how they are tokenized (the caller's strings, borrowed). */
typedef struct {
    const char *prompt;        /* --prompt TEXT (exactly one of prompt and prompts) */
    const char *prompts;       /* --prompts FILE: .jsonl/.json objects, else one prompt a line */
    const char *template_name; /* NULL: raw text with BOS */
    const char *system;        /* system prompt for the template (NULL: none) */
    bool no_bos;               /* raw text without BOS */
} cli_prompt_source;

typedef struct {
    FILE *f;
    const char *path;
    const char *single; /* --prompt */
    bool jsonl, done;
    long line;
    long index;
    char *buf;
    size_t cap;
    const cli_prompt_source *src;
} cli_prompt_iter;

typedef struct {
    char *text;            /* stored as /prompts */
    char id[64];
    int *tokens;           /* encoded input */
    int n;
} cli_prompt;

/* Open the source (a is borrowed for the iterator's life); -1 with the file named in e. */
int cli_prompts_open(cli_prompt_iter *it, const cli_prompt_source *a, ks_error *e);
/* Next prompt into out (cleared first): 1, 0 at the end, -1 on error (message in e, naming
 * file and line). Token ids of a .jsonl "tokens" field are checked against vocab. */
int cli_prompts_next(cli_prompt_iter *it, const ks_tokenizer *tok, int vocab, cli_prompt *out,
                     ks_error *e);
void cli_prompts_close(cli_prompt_iter *it);
void cli_prompt_clear(cli_prompt *it);
/* Hex sha256 of the prompt file (or of the --prompt text). */
ks_status cli_prompts_sha256(const cli_prompt_source *a, char hex[65], ks_error *e);
/* "koalascope CMD ARGS..." with arguments shell-quoted where needed (argv[0] is skipped);
 * malloc'd, NULL when out of memory. */
char *cli_join_argv(const char *cmd, int argc, char **argv);

#endif
