/* export_notebook.c — `koalascope export notebook DUMP.h5 -o analysis.ipynb`: write a Jupyter
 * notebook (nbformat 4.5, JSON through jansson) that loads the dump with h5py by a path relative
 * to the notebook, explains what the dump holds in Markdown and plots it with matplotlib.
 *
 * What the dump holds is read here in C (ks_dump_*, ks_attribution_list) so the Markdown can say
 * it and so a kind whose data is missing is refused before anything is written. The Python in
 * the cells follows docs/FORMAT.md only (h5py, NumPy, matplotlib; torch / TransformerLens are
 * optional) and reads everything again from the file, so the notebook still works when the dump
 * is moved together with it. Each kind prints one "KS_CHECK <name> <value>" line computed in the
 * notebook, which tests/test_notebook.py compares with its own reading of the dump
 * (docs/NOTEBOOKS.md says which value each name is). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "ks_dump.h"
#include "ks_audit_results.h"
#include "ks_results.h"

#define CMD "export notebook"

static const char *help_notebook =
    "Usage: koalascope export notebook DUMP.h5 -o NOTEBOOK.ipynb [--kind KIND] [--prompt N]\n"
    "Write a Jupyter notebook (nbformat 4) that loads DUMP.h5 with h5py, by its path relative\n"
    "to the notebook's folder, explains what the dump holds and plots it with matplotlib.\n"
    "It needs h5py, NumPy and matplotlib only (one optional cell shows torch/TransformerLens).\n"
    "  -o FILE        the notebook to write (its folder must exist; an existing file is\n"
    "                 replaced, only once the new one is complete)\n"
    "  --kind KIND    overview (default): residual-stream norm per layer, top-k next tokens\n"
    "                 attention: heatmaps of the recorded attn.hook_pattern layers and heads\n"
    "                 attribution: the results under /attributions, over positions or as\n"
    "                 layer x head / layer x position maps\n"
    "                 probe: a results file of `koalascope probe` (not a dump): the metric\n"
    "                 by layer with its confidence band and controls, the directions\n"
    "                 compared across layers\n"
    "                 (audit notebooks come with a later issue: not available yet)\n"
    "  --prompt N     the prompt shown by overview and attention (default 0)\n"
    "  -h, --help     this help\n"
    "Each notebook prints one 'KS_CHECK <name> <value>' line (docs/NOTEBOOKS.md).\n";

typedef enum { KIND_OVERVIEW, KIND_ATTENTION, KIND_ATTRIBUTION, KIND_PROBE, KIND_AUDIT } nb_kind;

#define fail_msg(msg) cli_error(CMD, "%s", (msg))
#define usage(...) cli_usage(CMD, __VA_ARGS__)

/* ---------------------------------------------------------------- growing text buffer */

typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->oom = true;
        return;
    }
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static void sb_puts(sbuf *b, const char *s) { sb_printf(b, "%s", s); }

/* s as inline Markdown code: backticks become quotes, control characters spaces, '|' escaped
 * (the text may sit in a table). */
static void sb_md_code(sbuf *b, const char *s) {
    sb_puts(b, "`");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '`') sb_puts(b, "'");
        else if (*p == '|') sb_puts(b, "\\|");
        else if (*p < 0x20 || *p == 0x7f) sb_puts(b, " ");
        else sb_printf(b, "%c", *p);
    }
    sb_puts(b, "`");
}

/* s as a Python string literal: a JSON string (ASCII, \uXXXX escapes) is one. false when s is
 * not valid UTF-8. */
static bool sb_py_str(sbuf *b, const char *s) {
    json_t *j = json_string(s);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (!t) return false;
    sb_puts(b, t);
    free(t);
    return true;
}

/* ---------------------------------------------------------------- notebook cells */

typedef struct {
    json_t *cells;
    int next_id;
    bool bad; /* a cell's text was not valid UTF-8, or out of memory */
} notebook;

/* Append the text of b as a cell and empty b. */
static void nb_cell(notebook *nb, const char *type, sbuf *b) {
    char id[32];
    snprintf(id, sizeof id, "ks-cell-%d", nb->next_id++);
    json_t *src = b->oom ? NULL : json_string(b->s ? b->s : "");
    json_t *c = src ? json_pack("{s:s, s:s, s:{}, s:o}", "cell_type", type, "id", id, "metadata",
                                "source", src)
                    : NULL;
    if (c && !strcmp(type, "code")) {
        json_object_set_new(c, "execution_count", json_null());
        json_object_set_new(c, "outputs", json_array());
    }
    if (!c || json_array_append_new(nb->cells, c)) nb->bad = true;
    b->n = 0;
    if (b->s) b->s[0] = '\0';
    b->oom = false;
}

/* ---------------------------------------------------------------- paths */

/* Split an absolute, canonical path into its components (in place). */
static int split_path(char *p, char **comp, int max) {
    int n = 0;
    for (char *t = strtok(p, "/"); t && n < max; t = strtok(NULL, "/")) comp[n++] = t;
    return n;
}

/* The dump's path as the notebook should open it: relative to the notebook's folder (the
 * working directory Jupyter gives its kernel), or absolute when the two share no folder below
 * the root (another mount, another tree: a relative path there would only break when one of
 * them moves). Both are canonical (realpath). *out is malloc'd. */
static int dump_path_for_notebook(const char *dump, const char *out_path, char **out,
                                  char *abs_dump, size_t abs_cap) {
    char dabs[PATH_MAX], odir[PATH_MAX], tmp[PATH_MAX];
    if (!realpath(dump, dabs)) return usage("cannot resolve '%s'", dump);
    snprintf(abs_dump, abs_cap, "%s", dabs);
    snprintf(tmp, sizeof tmp, "%s", out_path);
    char *slash = strrchr(tmp, '/');
    const char *dir = ".";
    if (slash == tmp) dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = tmp;
    }
    if (!realpath(dir, odir)) return usage("the folder of the output '%s' does not exist", out_path);
    char dcopy[PATH_MAX], ocopy[PATH_MAX];
    snprintf(dcopy, sizeof dcopy, "%s", dabs);
    snprintf(ocopy, sizeof ocopy, "%s", odir);
    char *dc[PATH_MAX / 2], *oc[PATH_MAX / 2];
    int nd = split_path(dcopy, dc, PATH_MAX / 2), no = split_path(ocopy, oc, PATH_MAX / 2);
    int common = 0;
    while (common < nd - 1 && common < no && !strcmp(dc[common], oc[common])) common++;
    sbuf b = {0};
    if (common == 0) {
        sb_puts(&b, dabs);
    } else {
        for (int i = common; i < no; i++) sb_puts(&b, "../");
        for (int i = common; i < nd; i++) sb_printf(&b, "%s%s", dc[i], i + 1 < nd ? "/" : "");
    }
    if (b.oom) {
        free(b.s);
        return fail_msg("out of memory");
    }
    *out = b.s;
    return 0;
}

/* ---------------------------------------------------------------- what the dump holds */

typedef struct {
    ks_dump *d;
    const char *path_lit_src; /* the dump's path as the notebook opens it */
    const char *abs_path;
    int64_t prompt;
    nb_kind kind;
    const ks_dump_hook *token_hooks[512];
    int n_token;
    const ks_dump_hook *resid_hooks[512]; /* blocks.L.hook_resid_{pre,mid,post}, forward order */
    int n_resid;
    const ks_dump_hook *patterns[512]; /* attn.hook_pattern, forward order */
    int n_patterns;
    ks_attribution_info *attrs;
    int n_attrs;
} nb_input;

static const char *attr_or(const ks_dump *d, const char *name, const char *def) {
    const char *v = ks_dump_attr(d, name);
    return v ? v : def;
}

static const char *kind_label(nb_kind k) {
    return k == KIND_OVERVIEW ? "overview" : k == KIND_ATTENTION ? "attention"
                                   : k == KIND_ATTRIBUTION ? "attribution" : "probe";
}

static void md_dump_summary(sbuf *b, const nb_input *in) {
    const ks_dump *d = in->d;
    const ks_config *c = ks_dump_config(d);
    sb_printf(b, "# koalascope dump: %s\n\n", kind_label(in->kind));
    sb_puts(b, "Written by `koalascope export notebook` from ");
    sb_md_code(b, in->abs_path);
    sb_puts(b, ". The notebook opens the dump with h5py by the path ");
    sb_md_code(b, in->path_lit_src);
    sb_puts(b, ", relative to the notebook's folder (Jupyter's working directory), so the two can "
               "move together. Only h5py, NumPy and matplotlib are needed; the layout is "
               "docs/FORMAT.md (format version 1).\n\n");
    sb_puts(b, "## What the dump holds\n\n- model: ");
    sb_md_code(b, attr_or(d, "model_path", "?"));
    sb_puts(b, " (");
    sb_md_code(b, attr_or(d, "model_format", "?"));
    sb_puts(b, ", weights ");
    sb_md_code(b, attr_or(d, "model_weight_dtype", "?"));
    sb_printf(b, "): %d layers, d_model %d, %d heads (%d key/value heads), vocabulary %d\n",
              c->n_layers, c->dim, c->n_heads, c->n_kv_heads, c->vocab_size);
    sb_printf(b, "- prompts: %lld committed (%s planned), %lld tokens, %lld recorded rows; %s\n",
              (long long)ks_dump_n_prompts(d), attr_or(d, "n_prompts_planned", "?"),
              (long long)ks_dump_n_tokens(d), (long long)ks_dump_n_rows(d),
              ks_dump_complete(d) ? "complete"
              : ks_dump_interrupted(d) ? "interrupted (opened with swmr=True)"
                                      : "incomplete");
    sb_puts(b, "- chat template: ");
    sb_md_code(b, attr_or(d, "chat_template", "none"));
    sb_puts(b, "; positions: ");
    sb_md_code(b, attr_or(d, "positions", "all"));
    sb_puts(b, "; heads: ");
    sb_md_code(b, attr_or(d, "heads", "all"));
    sb_puts(b, "\n- hooks selected: ");
    sb_md_code(b, attr_or(d, "hooks", "?"));
    sb_puts(b, "\n- storage dtype: ");
    sb_md_code(b, attr_or(d, "storage_dtype", "?"));
    sb_puts(b, " (read with `ds.astype(\"f4\")[...]`, which also converts bf16); compute dtype ");
    sb_md_code(b, attr_or(d, "compute_dtype", "?"));
    sb_puts(b, " on ");
    sb_md_code(b, attr_or(d, "backend", "?"));
    sb_puts(b, "; compression ");
    sb_md_code(b, attr_or(d, "compression", "none"));
    int k = ks_dump_logits_topk(d);
    if (k > 0)
        sb_printf(b, "\n- logits: top-%d next tokens per row (`/logits/topk_ids`, "
                     "`/logits/topk_logprobs`), `/logits/next_logprob`%s\n",
                  k, ks_dump_has_full_logits(d) ? ", and every logit (`/logits/full`)" : "");
    else
        sb_puts(b, "\n- logits: none recorded\n");
    if (in->n_attrs > 0)
        sb_printf(b, "- attribution results under `/attributions`: %d\n", in->n_attrs);
    sb_puts(b, "\n| hook (`/activations/...`) | kind | shape |\n| --- | --- | --- |\n");
    int nh = ks_dump_n_hooks(d);
    for (int i = 0; i < nh; i++) {
        const ks_dump_hook *h = ks_dump_hook_at(d, i);
        sb_printf(b, "| `%s` | %s | ", h->name,
                  h->kind == KS_DUMP_KIND_TOKEN ? "token" : "attention");
        if (h->kind == KS_DUMP_KIND_ATTENTION)
            sb_printf(b, "[heads %lld, packed causal keys] |\n", (long long)h->dims[0]);
        else if (h->ndim == 2)
            sb_printf(b, "[rows, %lld, %lld] |\n", (long long)h->dims[0], (long long)h->dims[1]);
        else
            sb_printf(b, "[rows, %lld] |\n", (long long)h->dims[0]);
    }
    sb_puts(b, "\nPrompt `p` owns tokens `prompt_offsets[p]:prompt_offsets[p+1]` of `/tokens` and "
               "`/token_strings`, and rows `row_offsets[p]:row_offsets[p+1]` of every per-token "
               "activation and of `/logits`; `/row_positions` gives each row's position in its "
               "prompt. `len(prompt_offsets) - 1` is the number of committed prompts, the only "
               "count to trust.\n");
}

/* The first code cell: imports, the file, helpers every kind uses. */
static void code_setup(sbuf *b, const nb_input *in) {
    sb_puts(b, "%matplotlib inline\n"
               "import json\n"
               "import h5py\n"
               "import numpy as np\n"
               "import matplotlib.pyplot as plt\n\n"
               "DUMP_PATH = ");
    sb_py_str(b, in->path_lit_src);
    sb_puts(b, in->path_lit_src[0] == '/'
                   ? "   # absolute: the notebook and the dump share no folder below the root\n"
                   : "   # relative to this notebook's folder (Jupyter's working directory)\n");
    sb_printf(b, "f = h5py.File(DUMP_PATH, \"r\"%s)\n",
              ks_dump_interrupted(in->d) ? ", swmr=True" : "");
    sb_puts(b, "assert f.attrs[\"format\"].decode() == \"koalascope-dump\", \"not a koalascope dump\"\n"
               "P = len(f[\"prompt_offsets\"]) - 1   # committed prompts: the only count to trust\n"
               "config = json.loads(f.attrs[\"model_config\"])\n\n\n"
               "def label(s):\n"
               "    \"\"\"A token's text as a plot label: visible whitespace, no mathtext.\"\"\"\n"
               "    return s.replace(\"$\", r\"\\$\").replace(\"\\n\", \"\\\\n\").replace(\" \", "
               "\"\\u2423\")\n\n\n"
               "print(\"model:\", f.attrs[\"model_path\"].decode(), \"| prompts:\", P,\n"
               "      \"| storage dtype:\", f.attrs[\"storage_dtype\"].decode())\n"
               "print(\"hooks:\", list(f[\"activations\"]) if \"activations\" in f else [])\n\n");
}

/* The prompt's slices (overview, attention). */
static void code_prompt(sbuf *b, const nb_input *in) {
    sb_printf(b, "PROMPT = %lld   # koalascope export notebook --prompt N\n", (long long)in->prompt);
    sb_puts(b, "t0, t1 = (int(x) for x in f[\"prompt_offsets\"][PROMPT:PROMPT + 2])   # its tokens\n"
               "r0, r1 = (int(x) for x in f[\"row_offsets\"][PROMPT:PROMPT + 2])      # its rows\n"
               "tokens = f[\"tokens\"][t0:t1]\n"
               "token_strings = f[\"token_strings\"].asstr()[t0:t1].tolist()\n"
               "positions = f[\"row_positions\"][r0:r1]   # position of each row in the prompt\n"
               "row_labels = [label(token_strings[q]) for q in positions]\n"
               "print(\"prompt %d of %d, id %r: %d tokens, %d recorded rows\" % (PROMPT, P,\n"
               "      f[\"prompt_ids\"].asstr()[PROMPT], t1 - t0, r1 - r0))\n"
               "print(repr(f[\"prompts\"].asstr()[PROMPT]))\n"
               "\n\n"
               "def rows(hook):\n"
               "    \"\"\"This prompt's rows of a per-token hook as float32 [rows, ...].\"\"\"\n"
               "    return f[\"activations/\" + hook].astype(\"f4\")[r0:r1]\n");
}

static void sb_hook_list(sbuf *b, const ks_dump_hook *const *h, int n) {
    sb_puts(b, "[");
    for (int i = 0; i < n; i++) sb_printf(b, "%s\"%s\"", i ? ", " : "", h[i]->name);
    sb_puts(b, "]");
}

static void cells_overview(notebook *nb, sbuf *b, const nb_input *in) {
    if (in->n_resid > 0) {
        sb_puts(b, "## Residual-stream norm per layer\n\n"
                   "The L2 norm of each recorded residual-stream hook (`hook_resid_pre`, "
                   "`hook_resid_mid`, `hook_resid_post`) per layer: at the prompt's last "
                   "recorded position (solid) and averaged over its recorded positions (dashed); "
                   "then the norm of every layer at every position. The printed `KS_CHECK "
                   "resid_norm` is the norm at position 0 (the first recorded row when position 0 "
                   "is not recorded) of ");
        sb_printf(b, "`%s`, computed in float64.\n", in->token_hooks[0]->name);
        nb_cell(nb, "markdown", b);
        sb_puts(b, "RESID_HOOKS = ");
        sb_hook_list(b, in->resid_hooks, in->n_resid);
        sb_puts(b,
                "\nnorms = {}   # kind -> ([layers], [layers, rows])\n"
                "for h in RESID_HOOKS:\n"
                "    layer, kind = int(h.split(\".\")[1]), h.split(\".\")[-1]\n"
                "    n = np.linalg.norm(rows(h).astype(np.float64), axis=-1)\n"
                "    norms.setdefault(kind, ([], []))\n"
                "    norms[kind][0].append(layer)\n"
                "    norms[kind][1].append(n)\n\n"
                "fig, ax = plt.subplots(figsize=(7, 4))\n"
                "for kind, (layers, n) in norms.items():\n"
                "    n = np.array(n)\n"
                "    line, = ax.plot(layers, n[:, -1], \"o-\", label=kind + \" (last position)\")\n"
                "    ax.plot(layers, n.mean(axis=1), \"--\", color=line.get_color(), "
                "label=kind + \" (mean)\")\n"
                "ax.set_xlabel(\"layer\")\n"
                "ax.set_ylabel(\"L2 norm\")\n"
                "ax.set_title(\"residual stream, prompt %d\" % PROMPT)\n"
                "ax.legend()\n"
                "plt.show()\n\n"
                "kind, (layers, n) = next(iter(norms.items()))\n"
                "fig, ax = plt.subplots(figsize=(min(16, 2 + 0.4 * len(positions)), 3))\n"
                "im = ax.imshow(np.array(n), aspect=\"auto\", cmap=\"viridis\")\n"
                "ax.set_yticks(range(len(layers)), layers)\n"
                "ax.set_ylabel(\"layer\")\n"
                "ax.set_xticks(range(len(positions)), row_labels, rotation=90)\n"
                "ax.set_title(\"L2 norm of \" + kind)\n"
                "fig.colorbar(im)\n"
                "plt.show()\n\n");
    } else {
        sb_printf(b, "## Per-token activations\n\nNo residual-stream hook was recorded. The printed "
                     "`KS_CHECK resid_norm` is the L2 norm at position 0 (the first recorded row "
                     "when position 0 is not recorded) of `%s`, computed in float64.\n",
                  in->token_hooks[0]->name);
        nb_cell(nb, "markdown", b);
    }
    sb_printf(b, "CHECK_HOOK = \"%s\"\n", in->token_hooks[0]->name);
    sb_puts(b, "i0 = int(np.flatnonzero(positions == 0)[0]) if (positions == 0).any() else 0\n"
               "v = np.linalg.norm(rows(CHECK_HOOK)[i0].astype(np.float64).ravel())\n"
               "print(\"KS_CHECK resid_norm\", repr(float(v)))\n");
    nb_cell(nb, "code", b);

    if (ks_dump_logits_topk(in->d) > 0) {
        sb_puts(b, "## Top-k next tokens (`/logits`)\n\n"
                   "For every recorded row: the token there, the log-probability of the token "
                   "that actually follows (`/logits/next_logprob`, NaN at the last token), and "
                   "the k most likely next tokens with their log-probabilities. Token ids are "
                   "decoded from the dump's own `/tokens` + `/token_strings` (the dump holds no "
                   "vocabulary, so an id that never occurs in it is shown as `#id`).\n");
        nb_cell(nb, "markdown", b);
        sb_puts(b,
                "N = int(f[\"prompt_offsets\"][P])\n"
                "piece = dict(zip(f[\"tokens\"][:N].tolist(), f[\"token_strings\"].asstr()[:N]))\n"
                "top_ids = f[\"logits/topk_ids\"][r0:r1]            # [rows, k]\n"
                "top_lp = f[\"logits/topk_logprobs\"][r0:r1]        # [rows, k]\n"
                "next_lp = f[\"logits/next_logprob\"][r0:r1]        # [rows]\n"
                "print(\"%4s  %-14s %9s   %s\" % (\"pos\", \"token\", \"next lp\", "
                "\"top-%d next tokens (log-prob)\" % top_ids.shape[1]))\n"
                "for i, q in enumerate(positions):\n"
                "    cands = \"  \".join(\"%r %.3f\" % (piece.get(int(t), \"#%d\" % t), lp)\n"
                "                      for t, lp in zip(top_ids[i], top_lp[i]))\n"
                "    print(\"%4d  %-14r %9.3f   %s\" % (q, token_strings[q], next_lp[i], cands))\n\n"
                "fig, ax = plt.subplots(figsize=(min(16, 2 + 0.4 * len(positions)), 3))\n"
                "ax.bar(range(len(positions)), next_lp)\n"
                "ax.set_xticks(range(len(positions)), row_labels, rotation=90)\n"
                "ax.set_ylabel(\"log p(next token)\")\n"
                "ax.set_title(\"log-probability of the token that follows\")\n"
                "plt.show()\n");
        nb_cell(nb, "code", b);
    }
}

static void cells_attention(notebook *nb, sbuf *b, const nb_input *in) {
    sb_puts(b, "## Attention patterns\n\n"
               "`attn.hook_pattern` is stored head-major, `[heads, K]`, keeping only the causal "
               "part: the row at position `q` holds its `q + 1` keys at "
               "`[:, attn_row_starts[r] : attn_row_starts[r] + q + 1]`. `pattern_square` "
               "rebuilds one head's `[T, T]` map exactly as docs/FORMAT.md's recipe says (rows "
               "not recorded stay zero). The dataset's `heads` attribute names the model head "
               "held at each slot.\n\n"
               "The printed `KS_CHECK attn` is the weight, in the first recorded pattern hook ");
    sb_printf(b, "(`%s`), head slot 0, from the prompt's last recorded row (query position `q`) "
                 "to key `q // 2`.\n",
              in->patterns[0]->name);
    nb_cell(nb, "markdown", b);
    sb_puts(b, "PATTERN_HOOKS = ");
    sb_hook_list(b, in->patterns, in->n_patterns);
    sb_puts(b,
            "\nstarts = f[\"attn_row_starts\"][r0:r1]\n"
            "n = t1 - t0\n\n\n"
            "def pattern_square(hook, slot):\n"
            "    \"\"\"One head slot of this prompt as a dense [n, n] map (docs/FORMAT.md).\"\"\"\n"
            "    pat = f[\"activations/\" + hook]\n"
            "    sq = np.zeros((n, n), np.float32)\n"
            "    for r in range(r1 - r0):\n"
            "        q = int(positions[r])\n"
            "        a = int(starts[r])\n"
            "        sq[q, :q + 1] = pat.astype(\"f4\")[slot, a:a + q + 1]\n"
            "    return sq\n\n\n"
            "q = int(positions[-1])\n"
            "v = pattern_square(PATTERN_HOOKS[0], 0)[q, q // 2]\n"
            "print(\"KS_CHECK attn\", repr(float(v)))\n");
    nb_cell(nb, "code", b);
    sb_puts(b,
            "labels = [label(s) for s in token_strings]\n"
            "for hook in PATTERN_HOOKS:\n"
            "    heads = f[\"activations/\" + hook].attrs[\"heads\"]\n"
            "    cols = min(4, len(heads))\n"
            "    nrows = (len(heads) + cols - 1) // cols\n"
            "    size = min(4.0, 1.5 + 0.15 * n)\n"
            "    fig, axs = plt.subplots(nrows, cols, figsize=(size * cols, size * nrows), "
            "squeeze=False)\n"
            "    for slot, head in enumerate(heads):\n"
            "        ax = axs[slot // cols][slot % cols]\n"
            "        ax.imshow(pattern_square(hook, slot), vmin=0, vmax=1, cmap=\"Blues\")\n"
            "        ax.set_title(\"head %d\" % head, fontsize=9)\n"
            "        if n <= 40:\n"
            "            ax.set_xticks(range(n), labels, rotation=90, fontsize=6)\n"
            "            ax.set_yticks(range(n), labels, fontsize=6)\n"
            "    for ax in axs.ravel()[len(heads):]:\n"
            "        ax.axis(\"off\")\n"
            "    fig.suptitle(\"%s, prompt %d (rows: queries, columns: keys)\" % (hook, PROMPT))\n"
            "    fig.tight_layout()\n"
            "    plt.show()\n");
    nb_cell(nb, "code", b);
}

static void cells_attribution(notebook *nb, sbuf *b, const nb_input *in) {
    sb_puts(b, "## Attribution results (`/attributions`)\n\n"
               "One group per result (docs/FORMAT.md, \"/attributions\"): `values` (float32, its "
               "axes named by the `axes` attribute), the input's `tokens` and `token_strings`, "
               "and attributes `method`, `objective`, `objective_value`, `baseline_value`, "
               "`completeness_error`.\n\n| result | method | axes | shape |\n| --- | --- | --- "
               "| --- |\n");
    for (int i = 0; i < in->n_attrs; i++) {
        const ks_attribution_info *a = &in->attrs[i];
        sb_puts(b, "| ");
        sb_md_code(b, a->name);
        sb_puts(b, " | ");
        sb_md_code(b, a->method);
        sb_puts(b, " | ");
        sb_md_code(b, a->axes);
        sb_puts(b, " | [");
        for (int k = 0; k < a->ndim; k++) sb_printf(b, "%s%lld", k ? ", " : "", (long long)a->shape[k]);
        sb_puts(b, "] |\n");
    }
    sb_puts(b, "\nOne axis: a bar per position, labelled with the input's tokens. Two axes: a "
               "heatmap (e.g. layer x head, layer x position), colours centred on 0. Three axes: "
               "one heatmap per index of the first axis. The printed `KS_CHECK attribution` is "
               "the finite value of largest magnitude (the first one in C order on a tie) of the "
               "first result by name.\n");
    nb_cell(nb, "markdown", b);
    sb_puts(b,
            "NAMES = sorted(n for n in f[\"attributions\"] if \"~\" not in n)   # '~': a replaced "
            "result\n"
            "for name in NAMES:\n"
            "    g = f[\"attributions\"][name]\n"
            "    print(\"%s: %s, %s = %.6g (baseline %.6g, completeness error %.3g), values %s\" % (\n"
            "        name, g.attrs[\"method\"].decode(), g.attrs[\"objective\"].decode(),\n"
            "        g.attrs[\"objective_value\"], g.attrs[\"baseline_value\"],\n"
            "        g.attrs[\"completeness_error\"], g[\"values\"].shape))\n\n"
            "vals = f[\"attributions\"][NAMES[0]][\"values\"][...].ravel().astype(np.float64)\n"
            "mag = np.where(np.isfinite(vals), np.abs(vals), -1.0)\n"
            "print(\"KS_CHECK attribution\", repr(float(vals[int(np.argmax(mag))])))\n");
    nb_cell(nb, "code", b);
    sb_puts(b,
            "def axis_ticks(ax, which, axis_name, size, toks):\n"
            "    if axis_name == \"position\" and size == len(toks) and size <= 60:\n"
            "        getattr(ax, \"set_%sticks\" % which)(range(size), [label(t) for t in toks],\n"
            "                                           rotation=90 if which == \"x\" else 0)\n"
            "    getattr(ax, \"set_%slabel\" % which)(axis_name)\n\n\n"
            "def heatmap(ax, v, axes, toks, title):\n"
            "    fin = np.abs(v[np.isfinite(v)])\n"
            "    lim = float(fin.max()) if fin.size and fin.max() > 0 else 1.0\n"
            "    im = ax.imshow(v, aspect=\"auto\", cmap=\"RdBu_r\", vmin=-lim, vmax=lim)\n"
            "    axis_ticks(ax, \"y\", axes[0], v.shape[0], toks)\n"
            "    axis_ticks(ax, \"x\", axes[1], v.shape[1], toks)\n"
            "    ax.set_title(title, fontsize=9)\n"
            "    return im\n\n\n"
            "for name in NAMES:\n"
            "    g = f[\"attributions\"][name]\n"
            "    v = g[\"values\"][...]\n"
            "    axes = g.attrs[\"axes\"].decode().split(\",\")\n"
            "    toks = (g[\"token_strings\"].asstr()[...].tolist() if \"token_strings\" in g\n"
            "            else [\"#%d\" % t for t in g[\"tokens\"][...]])\n"
            "    title = \"%s: %s\\n%s\" % (name, g.attrs[\"method\"].decode(), "
            "g.attrs[\"objective\"].decode())\n"
            "    if v.ndim == 1:\n"
            "        fig, ax = plt.subplots(figsize=(min(16, 2 + 0.4 * len(v)), 3.5))\n"
            "        ax.bar(range(len(v)), v, color=[\"tab:red\" if x < 0 else \"tab:blue\" for x in "
            "v])\n"
            "        axis_ticks(ax, \"x\", axes[0], len(v), toks)\n"
            "        ax.axhline(0, color=\"black\", linewidth=0.5)\n"
            "        ax.set_ylabel(\"attribution\")\n"
            "        ax.set_title(title, fontsize=9)\n"
            "    elif v.ndim == 2:\n"
            "        fig, ax = plt.subplots(figsize=(min(16, 3 + 0.4 * v.shape[1]), "
            "min(12, 2 + 0.4 * v.shape[0])))\n"
            "        fig.colorbar(heatmap(ax, v, axes, toks, title))\n"
            "    else:\n"
            "        k = min(v.shape[0], 8)\n"
            "        fig, axs = plt.subplots(1, k, figsize=(4 * k, 4), squeeze=False)\n"
            "        for i in range(k):\n"
            "            heatmap(axs[0][i], v[i], axes[1:], toks, \"%s = %d\" % (axes[0], i))\n"
            "        fig.suptitle(title, fontsize=9)\n"
            "    fig.tight_layout()\n"
            "    plt.show()\n");
    nb_cell(nb, "code", b);
}

/* Optional: the same tensors as torch tensors / a TransformerLens ActivationCache. */
static void cells_torch(notebook *nb, sbuf *b, const nb_input *in) {
    sb_puts(b, "## Optional: torch and TransformerLens\n\n"
               "The prompt's per-token hooks as `[1, rows, ...]` torch tensors (and attention "
               "patterns rebuilt as `[1, heads, T, T]`), wrapped in a TransformerLens "
               "`ActivationCache` when it is installed. Skipped without them.\n");
    nb_cell(nb, "markdown", b);
    sb_puts(b, "TOKEN_HOOKS = ");
    sb_hook_list(b, in->token_hooks, in->n_token);
    sb_puts(b, "\ntry:\n"
               "    import torch\n"
               "except ImportError:\n"
               "    print(\"torch is not installed: skipped (pip install torch transformer_lens)\")\n"
               "else:\n"
               "    tensors = {h: torch.from_numpy(rows(h)).unsqueeze(0) for h in TOKEN_HOOKS}\n");
    if (in->kind == KIND_ATTENTION)
        sb_puts(b, "    for h in PATTERN_HOOKS:   # TransformerLens: [batch, head, query, key]\n"
                   "        tensors[h] = torch.from_numpy(np.stack([pattern_square(h, s) for s in\n"
                   "            range(len(f[\"activations/\" + h].attrs[\"heads\"]))])).unsqueeze(0)\n");
    sb_puts(b, "    try:\n"
               "        from transformer_lens import ActivationCache\n"
               "        cache = ActivationCache(tensors, model=None)\n"
               "    except ImportError:\n"
               "        cache = tensors\n"
               "        print(\"transformer_lens is not installed: a dict of tensors instead\")\n"
               "    for k, t in cache.items():\n"
               "        print(k, tuple(t.shape))\n");
    nb_cell(nb, "code", b);
}

/* ---------------------------------------------------------------- writing */

/* Write the notebook JSON to a temporary file beside out and rename it over out. */
/* ---------------------------------------------------------------- --kind probe */

static void cells_probe(notebook *nb, sbuf *b, const char *rel, const char *abs_path,
                        const ks_probe_results_info *pi) {
    sb_puts(b, "# Probe results\n\nResults file: ");
    sb_md_code(b, abs_path);
    sb_printf(b, "\n\nA sweep of %d linear probes (%s regression), one per hook, written by "
                 "`koalascope probe`. Layout (docs/PROBES.md, \"The results file\"): `/hooks`, "
                 "`/layer`, and per hook a metric with its confidence interval as `[value, low, "
                 "high]` rows of `/accuracy`, `/auroc`, `/r2`, `/majority`, `/shuffled`, "
                 "`/control`; the probe weights and the difference-of-means direction under "
                 "`/probes/<hook>/`.\n\nThe printed `KS_CHECK probe` is the best value of the "
                 "sweep's metric (accuracy for logistic probes, R\u00b2 for ridge).\n",
              pi->n_hooks, pi->task);
    nb_cell(nb, "markdown", b);
    sb_puts(b, "%matplotlib inline\nimport h5py\nimport numpy as np\nimport matplotlib.pyplot as plt\n\n"
               "RESULTS_PATH = ");
    sb_py_str(b, rel);
    sb_puts(b, rel[0] == '/' ? "   # absolute: the notebook and the results share no folder below the root\n"
                             : "   # relative to this notebook's folder (Jupyter's working directory)\n");
    sb_puts(b, "r = h5py.File(RESULTS_PATH, \"r\")\n"
               "assert r.attrs[\"format\"].decode() == \"koalascope-probe\", \"not a probe results file\"\n"
               "task = r.attrs[\"task\"].decode()\n"
               "hooks = r[\"hooks\"].asstr()[...].tolist()\n"
               "layer = r[\"layer\"][...]\n"
               "metric = \"r2\" if task == \"ridge\" else \"accuracy\"\n"
               "m = r[metric][...]   # [hooks, 3]: value, CI low, CI high\n"
               "majority, shuffled, control = r[\"majority\"][...], r[\"shuffled\"][...], r[\"control\"][...]\n"
               "beats = r[\"beats_controls\"][...].astype(bool)\n"
               "print(\"task:\", task, \"| labels:\", r.attrs[\"labels\"].decode(), \"| dump:\", r.attrs[\"dump\"].decode())\n"
               "if \"classes\" in r:\n"
               "    print(\"classes:\", r[\"classes\"].asstr()[...].tolist())\n"
               "print(\"%-32s %6s %8s %19s %9s %9s %9s %s\" % (\"hook\", \"layer\", metric, \"CI\", \"majority\",\n"
               "                                            \"shuffled\", \"control\", \"beats controls\"))\n"
               "for i, h in enumerate(hooks):\n"
               "    print(\"%-32s %6d %8.4f [%7.4f, %7.4f] %9.4f %9.4f %9.4f %s\" % (h, layer[i], m[i, 0], m[i, 1],\n"
               "          m[i, 2], majority[i, 0], shuffled[i, 0], control[i, 0], \"yes\" if beats[i] else \"no\"))\n"
               "best = int(np.nanargmax(m[:, 0]))\n"
               "print(\"best:\", hooks[best])\n"
               "print(\"KS_CHECK probe\", repr(float(m[best, 0])))\n");
    nb_cell(nb, "code", b);
    sb_puts(b, "## The sweep\n\nThe metric by layer with its confidence band, against the majority "
               "baseline, the shuffled-label baseline (its band: the spread of the shuffles) and the "
               "control task (Hewitt & Liang 2019: each token type gets a random label, so a probe "
               "that memorises tokens scores high on it too). A probe is trustworthy where its band "
               "clears the controls.\n");
    nb_cell(nb, "markdown", b);
    sb_puts(b, "x = layer if (layer >= 0).all() else np.arange(len(hooks))\n"
               "fig, ax = plt.subplots(figsize=(8, 4.5))\n"
               "ax.plot(x, m[:, 0], \"o-\", color=\"tab:blue\", label=\"probe \" + metric)\n"
               "ax.fill_between(x, m[:, 1], m[:, 2], color=\"tab:blue\", alpha=0.2)\n"
               "ax.plot(x, majority[:, 0], \"--\", color=\"gray\", label=\"majority / mean baseline\")\n"
               "ax.plot(x, shuffled[:, 0], \"--\", color=\"tab:orange\", label=\"shuffled labels\")\n"
               "ax.fill_between(x, shuffled[:, 1], shuffled[:, 2], color=\"tab:orange\", alpha=0.15)\n"
               "if np.isfinite(control[:, 0]).any():\n"
               "    ax.plot(x, control[:, 0], \"--\", color=\"tab:green\", label=\"control task\")\n"
               "    ax.fill_between(x, control[:, 1], control[:, 2], color=\"tab:green\", alpha=0.15)\n"
               "ax.set_xlabel(\"layer\" if (layer >= 0).all() else \"hook\")\n"
               "ax.set_ylabel(metric)\n"
               "if task != \"ridge\":\n"
               "    ax.set_ylim(0, 1)\n"
               "ax.legend(loc=\"best\", fontsize=8)\n"
               "ax.set_title(\"%s probes, %g%% confidence intervals\" % (task, 100 * r.attrs[\"ci_level\"]))\n"
               "plt.show()\n");
    nb_cell(nb, "code", b);
    sb_puts(b, "## Directions across layers\n\nCosine similarity, in NumPy, between the probes' "
               "weight vectors (first output) of every pair of hooks of one width: a block of high "
               "similarity is a direction the residual stream carries from layer to layer.\n");
    nb_cell(nb, "markdown", b);
    sb_puts(b, "W = [r[\"probes\"][h][\"coef\"][0] for h in hooks]\n"
               "same = [i for i in range(len(W)) if W[i].shape == W[0].shape]\n"
               "V = np.stack([W[i] / (np.linalg.norm(W[i]) or 1.0) for i in same])\n"
               "C = V @ V.T\n"
               "fig, ax = plt.subplots(figsize=(5.5, 4.5))\n"
               "im = ax.imshow(C, cmap=\"RdBu_r\", vmin=-1, vmax=1)\n"
               "ax.set_xticks(range(len(same)), [str(layer[i]) for i in same])\n"
               "ax.set_yticks(range(len(same)), [str(layer[i]) for i in same])\n"
               "ax.set_xlabel(\"layer\")\n"
               "ax.set_ylabel(\"layer\")\n"
               "fig.colorbar(im)\n"
               "ax.set_title(\"cosine similarity of probe weights\")\n"
               "plt.show()\n"
               "r.close()\n");
    nb_cell(nb, "code", b);
}

/* ---------------------------------------------------------------- --kind audit */

static void cells_audit(notebook *nb, sbuf *b, const char *rel, const char *abs_path, int n_metrics) {
    sb_puts(b, "# Bias audit results\n\nResults file: ");
    sb_md_code(b, abs_path);
    sb_printf(b, "\n\n%d metrics written by `koalascope audit` (definitions: docs/AUDITS.md). "
                 "Layout (docs/AUDITS.md, \"Results\"): `/metrics/` holds `audit`, `metric`, "
                 "`category`, `value_ci` (`[value, CI low, CI high]` rows), `p_value` and `n`; "
                 "`/audits/<name>/` every item's id, category, gold answer, prediction and the "
                 "log-probability `ll` of each option. The spec and the model's sha256 are root "
                 "attributes.\n\nThe printed `KS_CHECK audit` is the first metric of the file "
                 "that has a value.\n", n_metrics);
    nb_cell(nb, "markdown", b);
    sb_puts(b, "%matplotlib inline\nimport json\nimport h5py\nimport numpy as np\n"
               "import matplotlib.pyplot as plt\n\nRESULTS_PATH = ");
    sb_py_str(b, rel);
    sb_puts(b, rel[0] == '/' ? "   # absolute: the notebook and the results share no folder below the root\n"
                             : "   # relative to this notebook's folder (Jupyter's working directory)\n");
    sb_puts(b, "r = h5py.File(RESULTS_PATH, \"r\")\n"
               "assert r.attrs[\"format\"].decode() == \"koalascope-audit\", \"not an audit results file\"\n"
               "spec = json.loads(r.attrs[\"spec\"].decode())\n"
               "print(\"model:\", r.attrs[\"model_path\"].decode(), \"| sha256:\", r.attrs[\"model_sha256\"].decode()[:16], \"...\")\n"
               "g = r[\"metrics\"]\n"
               "audit = g[\"audit\"].asstr()[...].tolist()\n"
               "metric = g[\"metric\"].asstr()[...].tolist()\n"
               "category = g[\"category\"].asstr()[...].tolist()\n"
               "vci, p, n = g[\"value_ci\"][...], g[\"p_value\"][...], g[\"n\"][...]\n"
               "print(\"%-14s %-28s %-22s %10s %23s %8s %6s\" % (\"audit\", \"metric\", \"category\", \"value\", \"CI\", \"p\", \"n\"))\n"
               "for i in range(len(metric)):\n"
               "    print(\"%-14s %-28s %-22s %10.4g [%9.4g, %9.4g] %8.3g %6d\" % (audit[i], metric[i], category[i],\n"
               "          vci[i, 0], vci[i, 1], vci[i, 2], p[i], n[i]))\n"
               "first = next(i for i in range(len(metric)) if np.isfinite(vci[i, 0]))\n"
               "print(\"KS_CHECK audit\", repr(float(vci[first, 0])))\n");
    nb_cell(nb, "code", b);
    sb_puts(b, "## Scores by category\n\nFor each audit, its first metric (CrowS-Pairs "
               "`pct_stereotype`, StereoSet `ss`, BBQ `accuracy`, WinoBias `accuracy_pro`, "
               "Winogender `accuracy`) per category with its bootstrap confidence interval; the "
               "dashed line is 50 where the metric's null is 50.\n");
    nb_cell(nb, "markdown", b);
    sb_puts(b, "for a in dict.fromkeys(audit):\n"
               "    first_metric = metric[audit.index(a)]\n"
               "    rows = [i for i in range(len(metric)) if audit[i] == a and metric[i] == first_metric]\n"
               "    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))\n"
               "    y = np.arange(len(rows))[::-1]\n"
               "    v = vci[rows]\n"
               "    ax.errorbar(v[:, 0], y, xerr=[v[:, 0] - v[:, 1], v[:, 2] - v[:, 0]], fmt=\"o\", capsize=3)\n"
               "    ax.set_yticks(y, [category[i] for i in rows])\n"
               "    if first_metric in (\"pct_stereotype\", \"ss\"):\n"
               "        ax.axvline(50, ls=\"--\", color=\"gray\")\n"
               "    ax.set_xlabel(first_metric)\n"
               "    ax.set_title(a)\n"
               "    plt.show()\n");
    nb_cell(nb, "code", b);
    sb_puts(b, "## Items\n\nThe first items of each audit: their options' log-probabilities "
               "(NaN where an item has fewer options) and, for the multiple-choice audits, the "
               "prediction against the gold answer.\n");
    nb_cell(nb, "markdown", b);
    sb_puts(b, "for a in r[\"audits\"]:\n"
               "    it = r[\"audits\"][a]\n"
               "    ids, ll = it[\"id\"].asstr()[...], it[\"ll\"][...]\n"
               "    gold, pred = it[\"gold\"][...], it[\"prediction\"][...]\n"
               "    print(a, \"-\", len(ids), \"items; kind\", it.attrs[\"kind\"].decode())\n"
               "    for i in range(min(5, len(ids))):\n"
               "        print(\"   %-40s ll %s gold %d prediction %d\" % (ids[i][:40], np.round(ll[i], 3), gold[i], pred[i]))\n"
               "r.close()\n");
    nb_cell(nb, "code", b);
}

static int write_notebook(json_t *root, const char *out) {
    size_t len = strlen(out);
    char *tmp = malloc(len + 16);
    if (!tmp) return fail_msg("out of memory");
    snprintf(tmp, len + 16, "%s.tmp.XXXXXX", out);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        fprintf(stderr, "koalascope " CMD ": error: cannot create a file beside '%s': %s\n", out,
                strerror(e));
        return EXIT_USAGE;
    }
    FILE *fp = fdopen(fd, "w");
    bool okw = fp && json_dumpf(root, fp, JSON_INDENT(1)) == 0 && fputc('\n', fp) != EOF &&
               fflush(fp) == 0 && fsync(fd) == 0;
    int e = errno;
    if (fp) {
        if (fclose(fp) != 0 && okw) {
            okw = false;
            e = errno;
        }
    } else {
        close(fd);
    }
    if (okw && rename(tmp, out) != 0) {
        okw = false;
        e = errno;
    }
    if (!okw) {
        unlink(tmp);
        free(tmp);
        fprintf(stderr, "koalascope " CMD ": error: cannot write '%s': %s\n", out, strerror(e));
        return EXIT_USAGE;
    }
    free(tmp);
    return 0;
}

static bool is_resid(const char *name) {
    const char *p = strrchr(name, '.');
    return !strncmp(name, "blocks.", 7) && p &&
           (!strcmp(p, ".hook_resid_pre") || !strcmp(p, ".hook_resid_mid") ||
            !strcmp(p, ".hook_resid_post"));
}

static json_t *notebook_root(notebook *nb) {
    json_t *root = json_pack("{s:o, s:{s:{s:s, s:s, s:s}, s:{s:s}}, s:i, s:i}", "cells", nb->cells,
                             "metadata", "kernelspec", "display_name", "Python 3", "language", "python",
                             "name", "python3", "language_info", "name", "python", "nbformat", 4,
                             "nbformat_minor", 5);
    nb->cells = NULL; /* owned by root now (or freed by a failed json_pack) */
    return root;
}

/* A notebook over a results file (not a dump): cells() writes its cells given the file's path
 * as the notebook will open it (rel) and as shown (abs_path). */
typedef void (*results_cells_fn)(notebook *nb, sbuf *b, const char *rel, const char *abs_path,
                                 const void *info);

static int export_results_notebook(const char *path, const char *out, const char *kind,
                                   results_cells_fn cells, const void *info) {
    char *rel = NULL, abs_path[PATH_MAX];
    if (dump_path_for_notebook(path, out, &rel, abs_path, sizeof abs_path)) return EXIT_USAGE;
    notebook nb = {0};
    sbuf b = {0};
    nb.cells = json_array();
    cells(&nb, &b, rel, abs_path, info);
    int rc = EXIT_USAGE;
    json_t *root = NULL;
    if (nb.bad) {
        rc = fail_msg("a path is not valid UTF-8, or out of memory");
    } else if (!(root = notebook_root(&nb))) {
        rc = fail_msg("out of memory");
    } else if ((rc = write_notebook(root, out)) == 0) {
        fprintf(stderr, "koalascope " CMD ": wrote %s (%s, results at %s)\n", out, kind, rel);
    }
    json_decref(root);
    json_decref(nb.cells);
    free(b.s);
    free(rel);
    return rc;
}

static void audit_cells(notebook *nb, sbuf *b, const char *rel, const char *abs_path,
                        const void *info) {
    cells_audit(nb, b, rel, abs_path, *(const int *)info);
}

static void probe_cells(notebook *nb, sbuf *b, const char *rel, const char *abs_path,
                        const void *info) {
    cells_probe(nb, b, rel, abs_path, info);
}

/* --kind audit: the input is the results.h5 of `koalascope audit`. */
static int export_audit_notebook(const char *path, const char *out) {
    int n_metrics = 0;
    ks_error err = {0};
    if (ks_audit_results_check(path, &n_metrics, &err))
        return cli_error(CMD, "%s (--kind audit takes the results.h5 of `koalascope audit`)", err.msg);
    return export_results_notebook(path, out, "audit", audit_cells, &n_metrics);
}

/* --kind probe: the input is a results file of `koalascope probe`, not a dump. */
static int export_probe_notebook(const char *path, const char *out) {
    ks_probe_results_info pi;
    ks_error err = {0};
    if (ks_probe_results_info_read(path, &pi, &err))
        return cli_error(CMD, "%s (--kind probe takes the results file of `koalascope probe -o`)", err.msg);
    return export_results_notebook(path, out, "probe", probe_cells, &pi);
}

int cmd_export_notebook(int argc, char **argv) {
    static const struct option opts[] = {
        {"kind", required_argument, NULL, 'k'},
        {"prompt", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    const char *out = NULL, *kind_s = "overview";
    long prompt = 0;
    optind = 1;
    opterr = 0;
    int c;
    /* GNU getopt permutes: options may come before or after DUMP */
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'k': kind_s = optarg; break;
        case 'p':
            if (!cli_parse_int(optarg, 0, INT32_MAX, &prompt))
                return usage("--prompt wants a prompt index >= 0, not '%s'", optarg);
            break;
        case 'h': fputs(help_notebook, stdout); return 0;
        default:
            return usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind > 1) return usage("unexpected argument '%s' (one DUMP)", argv[optind + 1]);
    const char *dump_path = optind < argc ? argv[optind] : NULL;
    if (!dump_path) return usage("%s", "missing DUMP.h5");
    if (!out) return usage("%s", "missing -o NOTEBOOK.ipynb");
    nb_input in = {0};
    if (!strcmp(kind_s, "overview")) in.kind = KIND_OVERVIEW;
    else if (!strcmp(kind_s, "attention")) in.kind = KIND_ATTENTION;
    else if (!strcmp(kind_s, "attribution")) in.kind = KIND_ATTRIBUTION;
    else if (!strcmp(kind_s, "probe")) in.kind = KIND_PROBE;
    else if (!strcmp(kind_s, "audit")) in.kind = KIND_AUDIT;
    else return usage("unknown --kind '%s' (overview, attention, attribution, probe, audit)", kind_s);

    ks_error err = {0};
    if (in.kind == KIND_PROBE) return export_probe_notebook(dump_path, out);
    if (in.kind == KIND_AUDIT) return export_audit_notebook(dump_path, out);
    if (ks_dump_open(dump_path, &in.d, &err) != KS_OK) return fail_msg(err.msg);
    int rc = EXIT_USAGE;
    char *rel = NULL;
    char abs_dump[PATH_MAX];
    json_t *root = NULL;
    sbuf b = {0};
    notebook nb = {0};

    int nh = ks_dump_n_hooks(in.d);
    for (int i = 0; i < nh; i++) {
        const ks_dump_hook *h = ks_dump_hook_at(in.d, i);
        if (h->kind == KS_DUMP_KIND_TOKEN) {
            if (in.n_token < 512) in.token_hooks[in.n_token++] = h;
            if (is_resid(h->name) && in.n_resid < 512) in.resid_hooks[in.n_resid++] = h;
        } else if (strstr(h->name, "attn.hook_pattern") && in.n_patterns < 512) {
            in.patterns[in.n_patterns++] = h;
        }
    }
    /* the overview's check prefers a residual-stream hook */
    if (in.n_resid > 0) {
        for (int i = 0; i < in.n_token; i++)
            if (in.token_hooks[i] == in.resid_hooks[0]) {
                in.token_hooks[i] = in.token_hooks[0];
                in.token_hooks[0] = in.resid_hooks[0];
                break;
            }
    }
    if (ks_attribution_list(dump_path, &in.attrs, &in.n_attrs, &err) != KS_OK) {
        rc = fail_msg(err.msg);
        goto out;
    }
    int64_t np_ = ks_dump_n_prompts(in.d);
    if (in.kind == KIND_ATTRIBUTION) {
        int usable = 0;
        for (int i = 0; i < in.n_attrs; i++) usable += strchr(in.attrs[i].name, '~') == NULL;
        if (!usable) {
            fprintf(stderr, "koalascope " CMD ": error: '%s' has no attribution results "
                    "(/attributions is missing or empty): add one with `koalascope attribute "
                    "MODEL --prompt ... --target ... -o %s`\n", dump_path, dump_path);
            goto out;
        }
    } else {
        if (prompt >= np_) {
            fprintf(stderr, "koalascope " CMD ": error: --prompt %ld: '%s' has %lld committed "
                    "prompts\n", prompt, dump_path, (long long)np_);
            goto out;
        }
        in.prompt = prompt;
        if (in.kind == KIND_ATTENTION && in.n_patterns == 0) {
            fprintf(stderr, "koalascope " CMD ": error: '%s' has no attention patterns (no "
                    "blocks.*.attn.hook_pattern recorded; record with --hooks "
                    "'blocks.*.attn.hook_pattern')\n", dump_path);
            goto out;
        }
        if (in.kind == KIND_OVERVIEW && in.n_token == 0) {
            fprintf(stderr, "koalascope " CMD ": error: '%s' has no per-token activations (no "
                    "residual-stream or other per-token hook recorded; record with --hooks "
                    "'blocks.*.hook_resid_post', or use --kind attention)\n", dump_path);
            goto out;
        }
    }
    if (dump_path_for_notebook(dump_path, out, &rel, abs_dump, sizeof abs_dump)) goto out;
    in.path_lit_src = rel;
    in.abs_path = abs_dump;

    nb.cells = json_array();
    md_dump_summary(&b, &in);
    nb_cell(&nb, "markdown", &b);
    code_setup(&b, &in);
    if (in.kind != KIND_ATTRIBUTION) code_prompt(&b, &in);
    nb_cell(&nb, "code", &b);
    if (in.kind == KIND_OVERVIEW) cells_overview(&nb, &b, &in);
    else if (in.kind == KIND_ATTENTION) cells_attention(&nb, &b, &in);
    else cells_attribution(&nb, &b, &in);
    if (in.kind != KIND_ATTRIBUTION && in.n_token + in.n_patterns > 0) cells_torch(&nb, &b, &in);
    sb_puts(&b, "f.close()\n");
    nb_cell(&nb, "code", &b);
    if (nb.bad) {
        rc = fail_msg("a text of the dump (path, model, attribute) is not valid UTF-8, or out of "
                      "memory");
        goto out;
    }
    root = notebook_root(&nb);
    if (!root) {
        rc = fail_msg("out of memory");
        goto out;
    }
    rc = write_notebook(root, out);
    if (rc == 0)
        fprintf(stderr, "koalascope " CMD ": wrote %s (%s, dump at %s)\n", out, kind_label(in.kind),
                rel);
out:
    json_decref(root);
    json_decref(nb.cells);
    free(b.s);
    free(rel);
    free(in.attrs);
    ks_dump_close(in.d);
    return rc;
}
