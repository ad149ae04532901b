/* ks_labels.h — labels for probes, from a file the user writes: what is true of which prompt
 * (and optionally which token of it). probes/labels.c; the format is docs/PROBES.md.
 *
 * JSONL (.jsonl, .json): one object per line,
 *   {"prompt": 3, "label": "animal"}                  prompt by index in the dump
 *   {"prompt": "q17", "label": 0.25, "position": -1}  by its id (/prompt_ids), one token
 *   {"prompt": 5, "label": "noun", "token": "^▁[A-Z]"} tokens whose piece matches a regex
 * CSV (.csv): a header naming the columns prompt,label[,position][,token] in any order
 * (RFC 4180 quoting, read with libcsv); a prompt cell of digits is an index, anything else
 * an id; "position" empty means none.
 * Every line is validated: an unknown field, a wrong type, an empty label, a bad regex or a
 * malformed line is KS_ERR_FORMAT naming the file, the line and the field. */
#ifndef KS_LABELS_H
#define KS_LABELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ks_status.h"

typedef struct {
    int64_t prompt_index; /* ≥ 0 when keyed by index, else -1 */
    char *prompt_id;      /* when keyed by id, else NULL */
    bool has_position;
    int64_t position;     /* token position in the prompt; negative counts from the end of
                             the prompt's input tokens (-1: the last input token) */
    char *token_regex;    /* POSIX extended regex on token pieces, or NULL */
    char *label;          /* the label as text (JSON numbers as written) */
    double value;         /* the label as a number; NaN when it is not one */
    int64_t line;         /* 1-based line of the file */
} ks_label;

typedef struct {
    ks_label *v;
    size_t n;
    bool all_numeric;     /* every label is a number */
} ks_labels;

/* Whether a token regex keeps to the budget that bounds regcomp's memory (labels.c says why):
 * at most KS_LABELS_REGEX_MAX bytes, groups nested 8 deep, no repetition operator applied to
 * another, interval bounds ≤ 32 multiplying to ≤ 256. why gets the reason when false. */
#define KS_LABELS_REGEX_MAX 256
bool ks_labels_regex_ok(const char *re, char *why, size_t cap);

/* Load path (format from its extension: .jsonl/.json or .csv). */
ks_status ks_labels_load(const char *path, ks_labels *out, ks_error *err);
/* The same from memory (source names the file in errors); csv selects the CSV reader. */
ks_status ks_labels_parse(const char *data, size_t len, bool csv, const char *source,
                          ks_labels *out, ks_error *err);
void ks_labels_free(ks_labels *l);

#endif
