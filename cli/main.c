/* main.c — `koalascope <command>`: the one program every user-facing path goes through.
 *
 * Only cli/ (and gui/) talk to the user: results on stdout, diagnostics and progress on
 * stderr, errors with a non-zero exit status (1: bad usage or input, 2: internal). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "ks_model.h"
#include "ks_steer.h"

static const char *prog = "koalascope";

static int fail(const char *cmd, const ks_error *err) {
    fprintf(stderr, "%s %s: error: %s\n", prog, cmd, err->msg[0] ? err->msg : ks_status_str(err->code));
    return EXIT_USAGE;
}

static int cli_report(const char *cmd, bool try_help, const char *fmt, va_list ap) {
    fprintf(stderr, "%s %s: error: ", prog, cmd);
    vfprintf(stderr, fmt, ap);
    if (try_help) fprintf(stderr, "\nTry '%s %s --help'.", prog, cmd);
    fputc('\n', stderr);
    return EXIT_USAGE;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_report(cmd, true, fmt, ap);
    va_end(ap);
    return rc;
}

int cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = cli_report(cmd, false, fmt, ap);
    va_end(ap);
    return rc;
}

char *cli_slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&b, &n);
    char buf[8192];
    size_t r;
    while (m && (r = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, r, m);
    fclose(f);
    if (m) fclose(m);
    return b;
}

#define usage_error cli_usage

/* ------------------------------------------------------------------ common options */

typedef struct {
    const char *model;
    const char *tokenizer;
    const char *prompt;
    const char *prompt_file;
    const char *template_name;
    const char *system;
    int threads;
    int ctx;
    int max_tokens;
    bool no_bos;
    bool pieces;
    bool json;
    bool f32_weights;
    const char *backend;
    ks_sampler_params sp;
    const char *stops[17];
    int n_stops;
    const char *steers[8];
    int n_steers;
} opts;

enum {
    OPT_TOKENIZER = 256, OPT_PROMPT, OPT_FILE, OPT_TEMPLATE, OPT_SYSTEM, OPT_THREADS, OPT_CTX,
    OPT_MAX_TOKENS, OPT_NO_BOS, OPT_PIECES, OPT_TEMP, OPT_TOPK, OPT_TOPP, OPT_SEED, OPT_STOP,
    OPT_JSON, OPT_HELP, OPT_F32, OPT_BACKEND, OPT_STEER,
};

static const struct option long_opts[] = {
    {"model", required_argument, 0, 'm'},
    {"tokenizer", required_argument, 0, OPT_TOKENIZER},
    {"prompt", required_argument, 0, OPT_PROMPT},
    {"text", required_argument, 0, OPT_PROMPT},
    {"file", required_argument, 0, OPT_FILE},
    {"template", required_argument, 0, OPT_TEMPLATE},
    {"system", required_argument, 0, OPT_SYSTEM},
    {"threads", required_argument, 0, OPT_THREADS},
    {"ctx", required_argument, 0, OPT_CTX},
    {"max-tokens", required_argument, 0, OPT_MAX_TOKENS},
    {"no-bos", no_argument, 0, OPT_NO_BOS},
    {"pieces", no_argument, 0, OPT_PIECES},
    {"temperature", required_argument, 0, OPT_TEMP},
    {"top-k", required_argument, 0, OPT_TOPK},
    {"top-p", required_argument, 0, OPT_TOPP},
    {"seed", required_argument, 0, OPT_SEED},
    {"stop", required_argument, 0, OPT_STOP},
    {"json", no_argument, 0, OPT_JSON},
    {"f32-weights", no_argument, 0, OPT_F32},
    {"backend", required_argument, 0, OPT_BACKEND},
    {"steer", required_argument, 0, OPT_STEER},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0},
};

bool cli_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* Returns -1 to continue, else an exit status (0 after --help). */
static int parse_opts(const char *cmd, const char *help, int argc, char **argv, opts *o) {
    memset(o, 0, sizeof *o);
    o->max_tokens = 256;
    o->sp.temperature = 0.0f;
    o->sp.top_p = 1.0f;
    o->sp.seed = 42;
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "m:p:t:n:s:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_TOKENIZER: o->tokenizer = optarg; break;
        case 'p':
        case OPT_PROMPT: o->prompt = optarg; break;
        case OPT_FILE: o->prompt_file = optarg; break;
        case OPT_TEMPLATE: o->template_name = strcmp(optarg, "none") == 0 ? NULL : optarg; break;
        case OPT_SYSTEM: o->system = optarg; break;
        case OPT_THREADS:
            if (!cli_parse_int(optarg, 1, 1024, &v)) return usage_error(cmd, "--threads: '%s' is not a count 1..1024", optarg);
            o->threads = (int)v;
            break;
        case OPT_CTX:
            if (!cli_parse_int(optarg, 1, 1 << 24, &v)) return usage_error(cmd, "--ctx: '%s' is not a positive length", optarg);
            o->ctx = (int)v;
            break;
        case 'n':
        case OPT_MAX_TOKENS:
            if (!cli_parse_int(optarg, 0, 1 << 24, &v)) return usage_error(cmd, "--max-tokens: '%s' is not a count", optarg);
            o->max_tokens = (int)v;
            break;
        case OPT_NO_BOS: o->no_bos = true; break;
        case OPT_PIECES: o->pieces = true; break;
        case 't':
        case OPT_TEMP:
            if (!parse_float(optarg, &o->sp.temperature) || o->sp.temperature < 0)
                return usage_error(cmd, "--temperature: '%s' is not a number >= 0", optarg);
            break;
        case OPT_TOPK:
            if (!cli_parse_int(optarg, 0, 1 << 24, &v)) return usage_error(cmd, "--top-k: '%s' is not a count", optarg);
            o->sp.top_k = (int)v;
            break;
        case OPT_TOPP:
            if (!parse_float(optarg, &o->sp.top_p) || o->sp.top_p <= 0 || o->sp.top_p > 1)
                return usage_error(cmd, "--top-p: '%s' is not in (0, 1]", optarg);
            break;
        case 's':
        case OPT_SEED: {
            char *end;
            errno = 0;
            unsigned long long sv = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end) return usage_error(cmd, "--seed: '%s' is not an unsigned integer", optarg);
            o->sp.seed = sv;
            break;
        }
        case OPT_STOP:
            if (o->n_stops == 16) return usage_error(cmd, "--stop: at most 16 stop strings (got '%s')", optarg);
            o->stops[o->n_stops++] = optarg;
            break;
        case OPT_STEER:
            if (o->n_steers == 8) return usage_error(cmd, "--steer: at most 8 (got '%s')", optarg);
            o->steers[o->n_steers++] = optarg;
            break;
        case OPT_JSON: o->json = true; break;
        case OPT_F32: o->f32_weights = true; break;
        case OPT_BACKEND:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda"))
                return usage_error(cmd, "--backend: '%s' is not a backend (cpu or cuda)", optarg);
            o->backend = optarg;
            break;
        case 'h':
        case OPT_HELP: fputs(help, stdout); return 0;
        case '?':
        default:
            if (optopt) {
                char s[2] = {(char)optopt, 0};
                return usage_error(cmd, "unknown or incomplete option '-%s'", s);
            }
            return usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc && !o->model) o->model = argv[optind++];
    if (optind < argc) return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return -1;
}

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The input text: --prompt, else --file, else stdin. Caller frees. */
static char *input_text(const char *cmd, const opts *o, size_t *len) {
    if (o->prompt) {
        *len = strlen(o->prompt);
        return strdup(o->prompt);
    }
    FILE *f = stdin;
    if (o->prompt_file && !(f = fopen(o->prompt_file, "rb"))) {
        fprintf(stderr, "%s %s: error: --file %s: %s\n", prog, cmd, o->prompt_file, strerror(errno));
        return NULL;
    }
    if (!o->prompt_file && isatty(0)) fprintf(stderr, "(reading text from standard input; end with Ctrl-D)\n");
    char *t = read_stream(f, len);
    if (f != stdin) fclose(f);
    if (!t) fprintf(stderr, "%s %s: error: out of memory reading the input\n", prog, cmd);
    return t;
}

static bool is_tokenizer_file(const char *path) {
    size_t n = strlen(path);
    struct stat st;
    if (stat(path, &st) != 0 || S_ISDIR(st.st_mode)) return false;
    return (n >= 6 && strcmp(path + n - 6, ".model") == 0) || (n >= 5 && strcmp(path + n - 5, ".json") == 0);
}

static int open_model(const char *cmd, const opts *o, ks_model **m) {
    ks_error err = {0};
    if (!o->model) return usage_error(cmd, "%s", "no MODEL given (an HF directory, a .gguf file or a llama2.c .bin)");
    ks_model_options mo = {.tokenizer_path = o->tokenizer, .f32_weights = o->f32_weights};
    if (ks_model_open(o->model, &mo, m, &err)) return fail(cmd, &err);
    return -1;
}

/* open_model, and require a tokenizer (every command but info needs one) */
static int open_model_tok(const char *cmd, const opts *o, ks_model **m, const ks_tokenizer **tok) {
    int rc = open_model(cmd, o, m);
    if (rc >= 0) return rc;
    *tok = ks_model_tokenizer(*m);
    if (!*tok) {
        ks_model_close(*m);
        *m = NULL;
        return usage_error(cmd, "%s", "the model has no tokenizer; give --tokenizer FILE");
    }
    return -1;
}

/* Prefill progress on a terminal: long prompts on big models take minutes on a CPU. */
static void show_progress(int done, int total, void *user) {
    (void)user;
    fprintf(stderr, "\r[prefill %d/%d tokens]", done, total);
    if (done == total) fputs("\r\033[K", stderr);
    fflush(stderr);
}

/* Steering vectors of --steer (held until exit: reachable, freed with the process). */
static ks_steer_set g_steer;

static double steer_norm(const ks_steer_vec *v) {
    double ss = 0;
    for (int i = 0; i < v->d; i++) ss += (double)v->v[i] * v->v[i];
    return sqrt(ss);
}

static int make_session(const char *cmd, const ks_model *m, const opts *o, int need, ks_session **s) {
    ks_error err = {0};
    const ks_config *c = ks_model_config(m);
    int ctx = o->ctx ? o->ctx : need;
    if (ctx > c->max_seq_len && !o->ctx) ctx = c->max_seq_len;
    if (ctx < 1) ctx = 1;
    ks_session_options so = {.max_seq_len = ctx, .n_threads = o->threads, .backend = o->backend};
    for (int i = 0; i < o->n_steers; i++)
        if (ks_steer_add(&g_steer, m, o->steers[i], &err)) return fail(cmd, &err);
    if (ks_session_create(m, &so, s, &err)) return fail(cmd, &err);
    if (g_steer.n) {
        ks_session_set_hook(*s, ks_steer_hook, &g_steer);
        for (int i = 0; i < g_steer.n; i++)
            fprintf(stderr, "[steering %s by %g × a direction of norm %.4g]\n", g_steer.v[i].hook,
                    (double)g_steer.v[i].alpha, steer_norm(&g_steer.v[i]));
    }
    if (isatty(2)) ks_session_set_progress(*s, show_progress, NULL);
    return -1;
}

/* ------------------------------------------------------------------ info */

static const char *help_info =
    "Usage: koalascope info MODEL [--tokenizer FILE] [--json]\n"
    "Print a model's architecture, storage and tokenizer.\n"
    "MODEL is an HF directory (config.json + safetensors), a .gguf file or a llama2.c .bin.\n"
    "  --tokenizer FILE   tokenizer.model, tokenizer.json or llama2.c tokenizer .bin\n"
    "  --json             machine-readable output\n"
    "  --f32-weights      convert f16/bf16/quantised weights to f32 at load\n";

static const char *scaling_name(ks_rope_scaling s) {
    switch (s) {
    case KS_ROPE_SCALING_LINEAR: return "linear";
    case KS_ROPE_SCALING_DYNAMIC: return "dynamic";
    case KS_ROPE_SCALING_LLAMA3: return "llama3";
    default: return "none";
    }
}

static int cmd_info(int argc, char **argv) {
    opts o;
    int rc = parse_opts("info", help_info, argc, argv, &o);
    if (rc >= 0) return rc;
    ks_model *m = NULL;
    if ((rc = open_model("info", &o, &m)) >= 0) return rc;
    const ks_config *c = ks_model_config(m);
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    size_t np = ks_model_param_count(m);
    if (o.json) {
        json_t *j = json_pack(
            "{s:s, s:s, s:s, s:I, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:s, "
            "s:f, s:b, s:i, s:i, s:i, s:s, s:s}",
            "path", o.model, "format", ks_model_format(m), "dtype", ks_model_weight_dtype(m),
            "params", (json_int_t)np, "mapped_bytes", (json_int_t)ks_model_mapped_bytes(m), "dim",
            c->dim, "hidden_dim", c->hidden_dim, "n_layers", c->n_layers, "n_heads", c->n_heads,
            "n_kv_heads", c->n_kv_heads, "head_dim", c->head_dim, "vocab_size", c->vocab_size,
            "max_seq_len", c->max_seq_len, "rms_eps", (double)c->rms_eps, "rope_theta",
            (double)c->rope_theta, "rope_scaling", scaling_name(c->rope_scaling), "rope_factor",
            (double)c->rope_factor, "tie_embeddings", c->tie_embeddings, "bos_id", c->bos_id,
            "eos_id", c->eos_id, "tokenizer_vocab", tok ? ks_tokenizer_vocab_size(tok) : 0,
            "template", ks_model_template_hint(m), "rope_pairs",
            c->rope_style == KS_ROPE_STYLE_HALF ? "half" : "interleaved");
        char *txt = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (txt) puts(txt);
        free(txt);
        json_decref(j);
    } else {
        printf("model        %s\n", o.model);
        printf("format       %s, weights %s (%zu parameters, %.1f MB mapped from disk)\n",
               ks_model_format(m), ks_model_weight_dtype(m), np, ks_model_mapped_bytes(m) / 1e6);
        printf("layers       %d, d_model %d, d_mlp %d\n", c->n_layers, c->dim, c->hidden_dim);
        printf("attention    %d query heads, %d key/value heads, head_dim %d\n", c->n_heads,
               c->n_kv_heads, c->head_dim);
        printf("rope         theta %g, scaling %s", (double)c->rope_theta, scaling_name(c->rope_scaling));
        if (c->rope_scaling != KS_ROPE_SCALING_NONE) printf(" (factor %g)", (double)c->rope_factor);
        printf(", %s pairs\n", c->rope_style == KS_ROPE_STYLE_HALF ? "half-split" : "interleaved");
        printf("norm eps     %g\n", (double)c->rms_eps);
        printf("vocab        %d, embeddings %s\n", c->vocab_size, c->tie_embeddings ? "tied" : "untied");
        printf("context      %d\n", c->max_seq_len);
        if (tok)
            printf("tokenizer    %d pieces, bos %d, eos %d\n", ks_tokenizer_vocab_size(tok),
                   ks_tokenizer_bos(tok), ks_tokenizer_eos(tok));
        else
            printf("tokenizer    none (give --tokenizer)\n");
        printf("template     %s\n", ks_model_template_hint(m));
    }
    ks_model_close(m);
    return 0;
}

/* ------------------------------------------------------------------ tokenize */

static const char *help_tokenize =
    "Usage: koalascope tokenize MODEL|TOKENIZER [--prompt TEXT | --file FILE] [--pieces] [--no-bos]\n"
    "Print the token ids of a text (from --prompt, --file or standard input) on one line,\n"
    "space-separated. TOKENIZER may be tokenizer.model or tokenizer.json.\n"
    "  --pieces     print the pieces instead of the ids\n"
    "  --no-bos     do not prepend the BOS token\n"
    "  --tokenizer FILE  tokenizer for a llama2.c checkpoint\n";

static void print_piece(const char *p) {
    /* pieces may hold spaces, tabs or newlines: show them escaped */
    for (; *p; p++) {
        if (*p == '\n') fputs("\\n", stdout);
        else if (*p == '\t') fputs("\\t", stdout);
        else if (*p == '\\') fputs("\\\\", stdout);
        else putchar(*p);
    }
}

static int cmd_tokenize(int argc, char **argv) {
    opts o;
    int rc = parse_opts("tokenize", help_tokenize, argc, argv, &o);
    if (rc >= 0) return rc;
    ks_error err = {0};
    ks_model *m = NULL;
    ks_tokenizer *own = NULL;
    const ks_tokenizer *tok;
    if (o.model && is_tokenizer_file(o.model)) {
        if (ks_tokenizer_open(o.model, &own, &err)) return fail("tokenize", &err);
        tok = own;
    } else {
        if ((rc = open_model_tok("tokenize", &o, &m, &tok)) >= 0) return rc;
    }
    size_t len;
    char *text = input_text("tokenize", &o, &len);
    int *ids = NULL, n = 0;
    rc = 0;
    if (!text) rc = EXIT_USAGE;
    else if (ks_tokenizer_encode(tok, text, len, !o.no_bos, &ids, &n, &err)) rc = fail("tokenize", &err);
    else {
        for (int i = 0; i < n; i++) {
            if (i) putchar(' ');
            if (o.pieces) print_piece(ks_tokenizer_piece(tok, ids[i]));
            else printf("%d", ids[i]);
        }
        putchar('\n');
    }
    free(ids);
    free(text);
    ks_tokenizer_free(own);
    ks_model_close(m);
    return rc;
}

/* ------------------------------------------------------------------ generate */

static const char *help_generate =
    "Usage: koalascope generate MODEL [--prompt TEXT | --file FILE] [options]\n"
    "Generate a continuation; only the generated text goes to standard output, streamed.\n"
    "With no prompt text, generation starts from BOS alone.\n"
    "  --template NAME     wrap the prompt as a user turn: koala, vicuna, alpaca, llama2, plain\n"
    "  --system TEXT       system prompt for the template\n"
    "  -n, --max-tokens N  tokens to generate (default 256)\n"
    "  -t, --temperature T 0 = greedy (default 0)\n"
    "  --top-k K           sample among the K most likely tokens (0 = off)\n"
    "  --top-p P           nucleus sampling (1 = off)\n"
    "  -s, --seed S        random seed (default 42)\n"
    "  --stop STR          stop when STR is generated (repeatable, up to 16)\n"
    "  --no-bos            do not prepend BOS to a raw prompt\n"
    "  --ctx N             context length (default: prompt + max tokens, capped by the model)\n"
    "  --threads N         worker threads (default: all cores)\n"
    "  --tokenizer FILE    tokenizer for a llama2.c checkpoint\n"
    "  --f32-weights       convert f16/bf16/quantised weights to f32 at load\n"
    "  --backend NAME      cpu (default) or cuda (an NVIDIA GPU)\n"
    "  --steer FILE:HOOK[/KIND]:ALPHA  add ALPHA × a direction found by koalascope probe\n"
    "                      (FILE its results; KIND diff_means or probe) to HOOK at every\n"
    "                      position (repeatable, docs/PROBES.md)\n";

static bool stream_stdout(const char *piece, size_t len, int token, void *user) {
    (void)token;
    (void)user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Encode the prompt as the command line asks: raw text (with BOS unless --no-bos), or a
 * user turn of a chat template. */
static int encode_prompt(const char *cmd, const ks_tokenizer *tok, const opts *o, const char *text,
                         size_t len, int **ids, int *n) {
    ks_error err = {0};
    if (o->template_name) {
        ks_chat_template t;
        if (ks_chat_template_parse(o->template_name, &t, &err)) return fail(cmd, &err);
        ks_chat_message msgs[2];
        int k = 0;
        if (o->system) msgs[k++] = (ks_chat_message){"system", o->system};
        msgs[k++] = (ks_chat_message){"user", text};
        if (ks_chat_encode(tok, t, msgs, k, ids, n, &err)) return fail(cmd, &err);
        return -1;
    }
    if (len == 0 && !o->no_bos) {
        *ids = malloc(sizeof(int));
        if (!*ids) return usage_error(cmd, "%s", "out of memory");
        (*ids)[0] = ks_tokenizer_bos(tok);
        *n = 1;
        return -1;
    }
    if (ks_tokenizer_encode(tok, text, len, !o->no_bos, ids, n, &err)) return fail(cmd, &err);
    if (*n == 0) return usage_error(cmd, "%s", "the prompt is empty and --no-bos leaves no token to start from");
    return -1;
}

static int cmd_generate(int argc, char **argv) {
    opts o;
    int rc = parse_opts("generate", help_generate, argc, argv, &o);
    if (rc >= 0) return rc;
    ks_model *m = NULL;
    const ks_tokenizer *tok = NULL;
    if ((rc = open_model_tok("generate", &o, &m, &tok)) >= 0) return rc;
    char *text = NULL;
    size_t len = 0;
    if (o.prompt || o.prompt_file) text = input_text("generate", &o, &len);
    else text = strdup("");
    int *ids = NULL, n = 0;
    ks_session *s = NULL;
    ks_error err = {0};
    rc = 0;
    if (!text) rc = EXIT_USAGE;
    else if ((rc = encode_prompt("generate", tok, &o, text, len, &ids, &n)) >= 0) {
    } else if ((rc = make_session("generate", m, &o, n + o.max_tokens, &s)) >= 0) {
    } else if (n > ks_session_max_seq(s)) {
        fprintf(stderr, "%s generate: error: the prompt has %d tokens, more than the context length %d\n",
                prog, n, ks_session_max_seq(s));
        rc = EXIT_USAGE;
    } else {
        const char *stops[17];
        for (int i = 0; i < o.n_stops; i++) stops[i] = o.stops[i];
        stops[o.n_stops] = NULL;
        ks_generate_params gp = {.max_new_tokens = o.max_tokens, .sampling = o.sp,
                                 .stop_strings = stops, .stop_at_eos = true};
        int n_out = 0;
        double t0 = now_s();
        if (ks_generate(s, ids, n, &gp, stream_stdout, NULL, NULL, &n_out, NULL, &err)) {
            rc = fail("generate", &err);
        } else {
            double dt = now_s() - t0;
            putchar('\n');
            fflush(stdout);
            fprintf(stderr, "[%d prompt tokens, %d generated, %.1f tokens/s]\n", n, n_out,
                    dt > 0 ? (n + n_out) / dt : 0.0);
            rc = 0;
        }
    }
    free(ids);
    free(text);
    ks_session_free(s);
    ks_model_close(m);
    return rc;
}

/* ------------------------------------------------------------------ score */

static const char *help_score =
    "Usage: koalascope score MODEL [--prompt TEXT | --file FILE] [--no-bos]\n"
    "Per-token log-probabilities (natural log) of a text under the model, as TSV on standard\n"
    "output: position, id, piece, logprob; then a line 'total' with the sum and the count.\n"
    "The first token (BOS) is context only and gets no row.\n"
    "  --template NAME  score the text as a user turn of a chat template\n"
    "  --no-bos         do not prepend BOS (then the first text token gets no row)\n"
    "  --threads N      worker threads\n"
    "  --tokenizer FILE tokenizer for a llama2.c checkpoint\n"
    "  --f32-weights    convert f16/bf16/quantised weights to f32 at load\n"
    "  --backend NAME   cpu (default) or cuda (an NVIDIA GPU)\n"
    "  --steer FILE:HOOK[/KIND]:ALPHA  add ALPHA × a direction found by koalascope probe\n"
    "                      (FILE its results; KIND diff_means or probe) to HOOK at every\n"
    "                      position (repeatable, docs/PROBES.md)\n";

static int cmd_score(int argc, char **argv) {
    opts o;
    int rc = parse_opts("score", help_score, argc, argv, &o);
    if (rc >= 0) return rc;
    ks_model *m = NULL;
    const ks_tokenizer *tok = NULL;
    if ((rc = open_model_tok("score", &o, &m, &tok)) >= 0) return rc;
    size_t len;
    char *text = input_text("score", &o, &len);
    int *ids = NULL, n = 0;
    float *lp = NULL;
    ks_session *s = NULL;
    ks_error err = {0};
    rc = 0;
    if (!text) rc = EXIT_USAGE;
    else if ((rc = encode_prompt("score", tok, &o, text, len, &ids, &n)) >= 0) {
    } else if (n < 2) {
        rc = usage_error("score", "%s", "nothing to score: the text has fewer than 2 tokens");
    } else if (n > ks_model_config(m)->max_seq_len && !o.ctx) {
        fprintf(stderr, "%s score: error: the text has %d tokens, more than the model's context %d (raise with --ctx at your own risk)\n",
                prog, n, ks_model_config(m)->max_seq_len);
        rc = EXIT_USAGE;
    } else if ((rc = make_session("score", m, &o, n, &s)) >= 0) {
    } else if (!(lp = malloc((size_t)n * sizeof(float)))) {
        rc = usage_error("score", "%s", "out of memory");
    } else if (ks_score(s, ids, n, lp, &err)) {
        rc = fail("score", &err);
    } else {
        double total = 0.0;
        printf("position\tid\tpiece\tlogprob\n");
        for (int i = 1; i < n; i++) {
            printf("%d\t%d\t", i, ids[i]);
            print_piece(ks_tokenizer_piece(tok, ids[i]));
            printf("\t%.6f\n", (double)lp[i - 1]);
            total += lp[i - 1];
        }
        printf("total\t%d\t\t%.6f\n", n - 1, total);
        rc = 0;
    }
    free(lp);
    free(ids);
    free(text);
    ks_session_free(s);
    ks_model_close(m);
    return rc;
}

/* ------------------------------------------------------------------ chat */

static const char *help_chat =
    "Usage: koalascope chat MODEL [--template NAME] [--system TEXT] [sampling options]\n"
    "Talk with a chat model. Each line you type is a user turn; the reply streams back.\n"
    "Commands: /reset forgets the conversation, /quit (or end of input) leaves.\n"
    "  --template NAME  koala, vicuna, alpaca, llama2, plain (default: the model's hint)\n"
    "  --system TEXT    system prompt\n"
    "  -n, --max-tokens N, -t, --temperature T, --top-k K, --top-p P, -s, --seed S, --stop STR\n"
    "  --ctx N, --threads N, --tokenizer FILE, --f32-weights, --backend cpu|cuda\n"
    "  --steer FILE:HOOK[/KIND]:ALPHA  steer with a probe direction (see generate --help)\n";

static int cmd_chat(int argc, char **argv) {
    opts o;
    int rc = parse_opts("chat", help_chat, argc, argv, &o);
    if (rc >= 0) return rc;
    ks_model *m = NULL;
    const ks_tokenizer *tok = NULL;
    if ((rc = open_model_tok("chat", &o, &m, &tok)) >= 0) return rc;
    ks_error err = {0};
    ks_chat_template t;
    const char *tname = o.template_name ? o.template_name : ks_model_template_hint(m);
    if (ks_chat_template_parse(tname, &t, &err)) {
        ks_model_close(m);
        return fail("chat", &err);
    }
    ks_session *s = NULL;
    if ((rc = make_session("chat", m, &o, ks_model_config(m)->max_seq_len, &s)) >= 0) {
        ks_model_close(m);
        return rc;
    }
    bool tty = isatty(0);
    fprintf(stderr, "chat template %s; /reset to start over, /quit to leave\n", ks_chat_template_name(t));
    ks_chat_message *msgs = NULL;
    int n_msgs = 0;
    int *cached = NULL, n_cached = 0; /* ids now in the KV cache */
    char *line = NULL;
    size_t cap = 0;
    rc = 0;
    if (o.system) {
        msgs = malloc(sizeof *msgs);
        msgs[n_msgs++] = (ks_chat_message){"system", strdup(o.system)};
    }
    int first_free = n_msgs;
    for (;;) {
        if (tty) fputs("\n> ", stderr);
        ssize_t r = getline(&line, &cap, stdin);
        if (r < 0) break;
        while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = '\0';
        if (strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            for (int i = first_free; i < n_msgs; i++) free((char *)msgs[i].content);
            n_msgs = first_free;
            continue;
        }
        if (r == 0) continue;
        ks_chat_message *nm = realloc(msgs, (size_t)(n_msgs + 2) * sizeof *msgs);
        if (!nm) { rc = usage_error("chat", "%s", "out of memory"); break; }
        msgs = nm;
        msgs[n_msgs++] = (ks_chat_message){"user", strdup(line)};
        int *ids = NULL, n = 0;
        if (ks_chat_encode(tok, t, msgs, n_msgs, &ids, &n, &err)) { rc = fail("chat", &err); break; }
        if (n + 1 >= ks_session_max_seq(s)) {
            fprintf(stderr, "[the conversation is longer than the context (%d tokens); /reset to start over]\n",
                    ks_session_max_seq(s));
            free(ids);
            free((char *)msgs[--n_msgs].content);
            continue;
        }
        /* reuse the cached prefix: only new tokens are run */
        int common = 0;
        while (common < n_cached && common < n - 1 && cached[common] == ids[common]) common++;
        ks_session_truncate(s, common);
        const char *stops[18];
        for (int i = 0; i < o.n_stops; i++) stops[i] = o.stops[i];
        int ns = o.n_stops;
        /* a model that forgets EOS starts the user's next turn itself: stop there */
        const char *turn = t == KS_CHAT_KOALA || t == KS_CHAT_VICUNA ? "USER:"
                           : t == KS_CHAT_ALPACA                     ? "### Instruction:"
                           : t == KS_CHAT_LLAMA2                     ? "[INST]"
                                                                     : NULL;
        if (turn) stops[ns++] = turn;
        stops[ns] = NULL;
        int max_new = o.max_tokens;
        if (max_new > ks_session_max_seq(s) - n) max_new = ks_session_max_seq(s) - n;
        ks_generate_params gp = {.max_new_tokens = max_new, .sampling = o.sp, .stop_strings = stops,
                                 .stop_at_eos = true};
        int *out_ids = NULL, n_out = 0;
        char *reply = NULL;
        ks_status st = ks_generate(s, ids + common, n - common, &gp, stream_stdout, NULL, &out_ids,
                                   &n_out, &reply, &err);
        putchar('\n');
        fflush(stdout);
        free(cached);
        cached = ids;
        n_cached = ks_session_pos(s) < n ? ks_session_pos(s) : n; /* the prompt part is reusable */
        free(out_ids);
        if (st) { free(reply); rc = fail("chat", &err); break; }
        /* trim the space a model puts after "GPT:" */
        char *rp = reply;
        while (*rp == ' ') rp++;
        msgs[n_msgs++] = (ks_chat_message){"assistant", strdup(rp)};
        free(reply);
    }
    for (int i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(msgs);
    free(cached);
    free(line);
    ks_session_free(s);
    ks_model_close(m);
    return rc;
}

/* ------------------------------------------------------------------ main */

static const char *help_main =
    "Usage: koalascope COMMAND [options]   (koalascope COMMAND --help for each)\n"
    "A workbench for looking inside LLaMA-family chat models.\n\n"
    "Commands:\n"
    "  info       architecture, storage and tokenizer of a model\n"
    "  tokenize   text to token ids or pieces\n"
    "  generate   continue a prompt (greedy or sampled), streaming the text\n"
    "  score      per-token log-probabilities of a text (TSV)\n"
    "  chat       interactive chat with a chat template\n"
    "  record     run prompts and stream chosen hook points into an HDF5 dump\n"
    "  dump-info  what a dump holds: prompts, hooks, sizes, completeness\n"
    "  attribute  which prompt tokens or heads drive an output (integrated gradients, ...)\n"
    "  patch      activation patching, clean into corrupt, per layer and position or head\n"
    "  lens       the logit lens over a dump's residual stream, layer by layer\n"
    "  tuned-lens train the tuned lens of a model (per-layer translators before the lens)\n"
    "  probe      linear probes on a dump's hooks, layer by layer, with controls\n"
    "  finetune   fine-tune on dialogue data (the Koala recipe): HF checkpoints, resume, LoRA\n"
    "  audit      bias audits (CrowS-Pairs, StereoSet, BBQ, WinoBias, Winogender, counterfactual\n"
    "             templates, BOLD) from a spec, with drill-down into the model\n"
    "  diff       where fine-tuning changed a model: two models compared on the same prompts\n"
    "  export     a dump as a Jupyter notebook, .npz, safetensors or CSV\n"
    "  render     a view of the viewer (attention, tokens, lens, ...) into PNG/SVG/PDF\n"
    "  import     a TransformerLens-style safetensors cache into a dump\n"
    "  view       the desktop viewer (GTK4) of a dump, results or a model run live\n"
    "  demo       the main job on koala-mini: chat, record, probe, audit, report (and view)\n"
    "  version    print the version\n\n"
    "MODEL is an HF directory (config.json + *.safetensors), a .gguf file, or a llama2.c .bin\n"
    "checkpoint (with --tokenizer FILE). PyTorch pickles are refused: convert them to\n"
    "safetensors first.\n\n"
    "Weights stay in their stored dtype (f16, bf16, q8_0, ...) and are converted to f32 row by\n"
    "row as they are used; --f32-weights converts them once at load (faster, more memory).\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(help_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"info", cmd_info},   {"tokenize", cmd_tokenize}, {"generate", cmd_generate},
                {"score", cmd_score}, {"chat", cmd_chat}, {"record", cmd_record},
                {"dump-info", cmd_dump_info}, {"attribute", cmd_attribute}, {"patch", cmd_patch},
                {"export", cmd_export}, {"import", cmd_import}, {"lens", cmd_lens},
                {"tuned-lens", cmd_tuned_lens}, {"finetune", cmd_finetune},
                {"probe", cmd_probe}, {"audit", cmd_audit}, {"diff", cmd_diff},
                {"render", cmd_render}, {"view", cmd_view}, {"demo", cmd_demo}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmd, cmds[i].name) == 0) return cmds[i].fn(argc - 1, argv + 1);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(help_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        char msg[256];
        int nd = ks_cuda_device_count(msg, sizeof msg);
        printf("koalascope %s\ncuda: %s\n", ks_version(), nd < 0 ? "not built" : msg);
        return 0;
    }
    fprintf(stderr, "%s: unknown command '%s'\n\n%s", prog, cmd, help_main);
    return EXIT_USAGE;
}
