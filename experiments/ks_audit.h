/* ks_audit.h — bias audits: the items of the standard benchmarks, read from their shipped files,
 * scored by the model's log-probabilities, and their published metrics with statistics.
 * docs/AUDITS.md defines every text the model sees and every metric.
 *
 * Layers: datasets.c turns a benchmark file into ks_audit_item records (no model involved);
 * score.c scores one item's options with a session; metrics.c turns per-item scores into
 * metrics with bootstrap CIs and permutation p-values; spec.c reads a spec file; runner.c
 * (cli/audit.c) schedules items, journals them for --resume and shards them over MPI ranks. */
#ifndef KS_AUDIT_H
#define KS_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "ks_model.h"
#include "ks_status.h"

typedef enum {
    KS_AUDIT_CROWS = 0,      /* CrowS-Pairs (crows_pairs_anonymized.csv) */
    KS_AUDIT_STEREOSET = 1,  /* StereoSet intrasentence (JSON list of items) */
    KS_AUDIT_BBQ = 2,        /* BBQ (one JSONL file per category) */
    KS_AUDIT_WINOBIAS = 3,   /* WinoBias ({pro,anti}_stereotyped_type{1,2}.txt.{dev,test}) */
    KS_AUDIT_WINOGENDER = 4, /* Winogender (all_sentences.tsv + occupations-stats.tsv) */
    KS_AUDIT_COUNTERFACTUAL = 5, /* our JSON of templates × terms (or HolisticBias descriptors)
                                  * × target continuations (docs/AUDITS.md) */
    KS_AUDIT_BOLD = 6,           /* BOLD prompts ({group: {name: [prompt, …]}}): greedy
                                  * generations, stored for later scoring */
    KS_AUDIT_N_KINDS = 7,
} ks_audit_kind;

const char *ks_audit_kind_name(ks_audit_kind k); /* "crows_pairs", "stereoset", "bbq", ... */
/* Parse a kind name; false when unknown. */
bool ks_audit_kind_parse(const char *name, ks_audit_kind *out);

#define KS_AUDIT_MAX_OPTIONS 8
/* Counterfactual items keep the top of the next-token distribution after their context. */
#define KS_AUDIT_NEXT_TOPK 64

/* One scored text. prompt NULL: a sentence, scored as log p(text) after BOS (every token of
 * the text counts). prompt non-NULL: multiple choice, the prompt is the user message rendered
 * through the audit's chat template and text the start of the assistant's reply; only the
 * reply's tokens count (split as lm-evaluation-harness splits a context/continuation pair:
 * see docs/AUDITS.md). */
typedef struct {
    char *prompt;
    char *text;
} ks_audit_option;

/* What an option index means, per kind:
 *   CROWS       0 = sent_more (the more stereotypical sentence), 1 = sent_less
 *   STEREOSET   0 = stereotype, 1 = anti-stereotype, 2 = unrelated
 *   BBQ         0..2 = ans0..ans2 (prompt: context, question, "Answer:")
 *   WINOBIAS    0, 1 = the two occupations of the sentence as candidate referents of the
 *               pronoun (order of appearance in the sentence); gold = the bracketed one
 *   WINOGENDER  0 = the occupation, 1 = the participant (candidate referents),
 *               2 = the sentence itself (sentence option, for the gender-preference
 *               correlation)
 *   COUNTERFACTUAL  k = the data file's target k, a continuation of the item's context (text:
 *               the target; prompt: the filled user message, or NULL for raw text)
 *   BOLD        0 = the prompt (a sentence prefix, raw text after BOS), to be continued */
typedef struct {
    char *id;          /* the data set's own id: CSV row index, StereoSet id, BBQ example_id,
                        * "<file>:<line>" for WinoBias, Winogender sentid */
    char *category;    /* CrowS bias_type; StereoSet bias_type; BBQ category; WinoBias
                        * "type1"/"type2"; Winogender occupation */
    char *group;       /* StereoSet target term; BBQ context_condition ("ambig"/"disambig");
                        * WinoBias occupation referred to; Winogender "male"/"female"/"neutral";
                        * CrowS stereo_antistereo ("stereo"/"antistereo") */
    char *file;        /* the file the item came from (as given to the loader) */
    long line;         /* its 1-based line (CSV: the record's first line) */
    int n_options;
    ks_audit_option options[KS_AUDIT_MAX_OPTIONS];
    int gold;          /* BBQ label; WinoBias/Winogender index of the true referent; else -1 */
    int biased;        /* BBQ: index of the biased answer (docs/AUDITS.md); else -1 */
    int unknown;       /* BBQ: index of the "unknown" answer; else -1 */
    int flag;          /* WinoBias: 1 pro-stereotyped, 0 anti-stereotyped; BBQ: 1 ambiguous
                        * context; CrowS: 1 stereo, 0 antistereo; Winogender: the template's
                        * pairing key (see pair below); else 0 */
    int pair;          /* WinoBias: the index (within the loaded list) of the matching
                        * anti/pro item with the same line number and type, -1 if absent;
                        * Winogender: index of the item from the same template with the other
                        * binary gender (male<->female), -1 for neutral; else -1 */
    double value;      /* Winogender: the occupation's bls_pct_female; else NaN */
    char *context;     /* Counterfactual: the filled template text the targets continue (the
                        * start of the assistant's reply when the options have a prompt);
                        * flag = the template's index, group = the term, category = the term's
                        * group. BOLD: after scoring, the generated text (set by the runner
                        * from the score's tokens, ks_audit_generation_text). Else NULL. */
} ks_audit_item;

typedef struct {
    ks_audit_kind kind;
    ks_audit_item *items;
    int n;
} ks_audit_items;

/* Load options for a data set. Paths are files or, for BBQ/WinoBias/Winogender, also a
 * directory holding the shipped files (see docs/AUDITS.md for which files are taken). */
typedef struct {
    const char *const *categories; /* keep only these categories (NULL: all) */
    int n_categories;
    int limit;                     /* keep the first limit items after filtering (0: all) */
    int limit_per_file;            /* keep the first limit_per_file items (after filtering) of
                                    * each file (0: all); applied before limit */
    const char *split;             /* WinoBias: "test" (default) or "dev" */
} ks_audit_load_options;

/* Read paths[0..n_paths) into *out (appended in the order given). Every row is validated; a
 * malformed row is an error naming file, line and field (KS_ERR_FORMAT), never skipped. */
ks_status ks_audit_load(ks_audit_kind kind, const char *const *paths, int n_paths,
                        const ks_audit_load_options *opts, ks_audit_items *out, ks_error *err);
void ks_audit_items_free(ks_audit_items *items);

/* ------------------------------------------------------------------ scoring */

/* The scores of one option: the sum and count of log-probabilities (natural log) of the
 * tokens that count, and for CROWS the unmodified-token variant (docs/AUDITS.md). */
typedef struct {
    double ll;      /* sum of log p over the counted tokens */
    int n_tokens;   /* counted tokens */
    double ll_unmodified; /* CROWS: sum over the tokens shared with the other sentence; else 0 */
    int n_unmodified;
} ks_audit_option_score;

typedef struct {
    int n_options;
    ks_audit_option_score opt[KS_AUDIT_MAX_OPTIONS];
    /* Counterfactual: the n_next most likely next tokens after the context and their log-probs
     * (natural log, full-vocabulary softmax), most likely first. BOLD: the n_next generated
     * tokens and the log-prob of each (opt[0].ll is their sum). Else n_next = 0. */
    int n_next;
    int32_t next_id[KS_AUDIT_NEXT_TOPK];
    float next_lp[KS_AUDIT_NEXT_TOPK];
} ks_audit_score;

typedef struct {
    ks_chat_template template; /* for multiple-choice options */
    bool no_bos;               /* sentence options without BOS (then the first token is not
                                * scored) */
    int max_new_tokens;        /* BOLD: greedy generation length, 1..KS_AUDIT_NEXT_TOPK (0: 32) */
} ks_audit_score_options;

/* Score one item: resets the session first, so the result depends only on the item. */
ks_status ks_audit_score_item(ks_session *s, const ks_tokenizer *tok, ks_audit_kind kind,
                              const ks_audit_item *item, const ks_audit_score_options *o,
                              ks_audit_score *out, ks_error *err);

/* The token ids option k of an item is scored on (as ks_audit_score_item encodes it): *ids
 * (malloc'd, the caller frees it) holds n tokens, the first n_ctx of them the context (BOS
 * alone for a sentence option); the scored tokens are ids[n_ctx..n). */
ks_status ks_audit_option_tokens(const ks_tokenizer *tok, ks_audit_kind kind,
                                 const ks_audit_item *item, int k, const ks_audit_score_options *o,
                                 int **ids, int *n, int *n_ctx, ks_error *err);

/* BOLD: the text of an item's generated tokens (score->next_id), malloc'd into *out. */
ks_status ks_audit_generation_text(const ks_tokenizer *tok, const ks_audit_score *score,
                                   char **out, ks_error *err);

/* Token positions a and b have in common, as difflib.SequenceMatcher(None, a, b,
 * autojunk=False).get_matching_blocks() finds them: in_a[i] / in_b[j] set to 1 for matched
 * positions. Exposed for tests. */
ks_status ks_audit_matching(const int *a, int na, const int *b, int nb, uint8_t *in_a,
                            uint8_t *in_b, ks_error *err);

/* ------------------------------------------------------------------ metrics */

typedef struct {
    char *audit;      /* the spec's audit name */
    char *metric;     /* e.g. "pct_stereotype", "ss", "lms", "icat", "accuracy", "bias_score" */
    char *category;   /* "all" or a category / subgroup */
    double value;
    double ci_lo, ci_hi; /* percentile bootstrap CI; NaN when not computed */
    double p_value;   /* permutation-test p for the metric's null (docs/AUDITS.md); NaN: none */
    int n;            /* items behind the value */
} ks_audit_metric;

typedef struct {
    ks_audit_metric *m;
    int n, cap;
} ks_audit_metrics;

typedef struct {
    int n_bootstrap;    /* default 1000; 0: no CIs */
    int n_permutations; /* default 10000; 0: no p-values */
    double ci;          /* default 0.95 */
    uint64_t seed;
} ks_audit_stats_options;

/* Append the metrics of one audit (its items and their scores, scores[i] for items[i]). */
ks_status ks_audit_metrics_compute(const char *audit_name, const ks_audit_items *items,
                                   const ks_audit_score *scores, const ks_audit_stats_options *o,
                                   ks_audit_metrics *out, ks_error *err);
void ks_audit_metrics_free(ks_audit_metrics *m);

#endif
