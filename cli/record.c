/* record.c — `koalascope record`: run prompts through a model and stream the selected hook
 * points into an HDF5 dump (activations/, docs/FORMAT.md), with a progress line, Ctrl-C that
 * stops cleanly at a prompt boundary, and --resume.
 *
 * The prompt file is read twice and never held in memory: a first pass checks every prompt
 * (JSON, tokenization, length against the context, position selection) so that a bad line
 * fails before anything is written; the second pass records. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_prompts.h"
#include "ks_dump.h"
#include "ks_model.h"

static const char *help_record =
    "Usage: koalascope record MODEL (--prompt TEXT | --prompts FILE) --hooks SEL -o DUMP.h5 [options]\n"
    "Run prompts through MODEL and stream the chosen hook points into an HDF5 dump\n"
    "(layout: docs/FORMAT.md; read it with h5py, or `koalascope dump-info`).\n\n"
    "Input\n"
    "  -m, --model MODEL     HF directory, .gguf or llama2.c .bin (or the first argument)\n"
    "  -p, --prompt TEXT     one prompt\n"
    "  --prompts FILE        .jsonl: one object per line with \"prompt\" or \"text\" (a string),\n"
    "                        or \"tokens\" (token ids), or \"messages\" ([{role, content}], needs\n"
    "                        --template); optional \"id\". Any other file: one prompt per line.\n"
    "  --template NAME       wrap each prompt as a user turn: koala, vicuna, alpaca, llama2, plain\n"
    "                        (none, the default: raw text with BOS)\n"
    "  --system TEXT         system prompt for the template\n"
    "  --no-bos              do not prepend BOS to raw text\n"
    "  --skip-long           skip prompts longer than the context (default: stop with an error)\n"
    "  --generate N          generate N tokens after each prompt and record prompt + generation\n"
    "  -t, --temperature T, --top-k K, --top-p P, -s, --seed S   sampling for --generate\n"
    "                        (default greedy; prompt i is sampled with seed S + i)\n"
    "What to record\n"
    "  --hooks SEL           comma-separated hook names or globs, layers as * or A-B:\n"
    "                        'blocks.*.hook_resid_post,blocks.0-3.attn.hook_pattern'\n"
    "  --positions SEL       all (default), last, first, or indices/slices: '0,-1', '5:10', '-4:'\n"
    "  --heads SEL           query heads for attention/q/z: all (default) or '0,3,5-7'\n"
    "  --topk K              store the top-K next tokens and log-probs per row (default 10, 0 off)\n"
    "  --full-logits         also store every logit (vocab floats per row)\n"
    "Output\n"
    "  -o, --output DUMP     the HDF5 file to write\n"
    "  --dtype T             storage dtype: f32 (default), f16, bf16\n"
    "  --compression C       none (default), lz4, deflate\n"
    "  --resume              continue an interrupted DUMP (same model, prompts and options)\n"
    "  --overwrite           replace DUMP if it exists\n"
    "  --flush-seconds S     commit to disk at most every S seconds (default 2; 0: every prompt)\n"
    "  --no-fsync            do not fsync at commits (faster; safe against crashes, not power loss)\n"
    "  --buffer-mb N         per-prompt data (tokens, logits) queued for the writer (default\n"
    "                        256); activations take one chunk per hook plus one in flight\n"
    "Engine\n"
    "  --ctx N               longest prompt + --generate allowed (default: the model's context)\n"
    "  --threads N           worker threads (default: all cores)\n"
    "  --tokenizer FILE      tokenizer (needed by llama2.c checkpoints)\n"
    "  --f32-weights         convert weights to f32 at load\n"
    "  --backend NAME        cpu (default) or cuda (an NVIDIA GPU)\n"
    "  -q, --quiet           no progress line\n\n"
    "Ctrl-C stops at the end of the current prompt, commits, and says how to resume.\n";

enum {
    O_PROMPTS = 300, O_HOOKS, O_POSITIONS, O_HEADS, O_TOPK, O_FULL, O_DTYPE, O_COMP, O_RESUME,
    O_OVERWRITE, O_FLUSH, O_NOFSYNC, O_BUFFER, O_CTX, O_THREADS, O_TOKENIZER, O_F32, O_TEMPLATE,
    O_SYSTEM, O_NOBOS, O_SKIPLONG, O_GENERATE, O_TOPK_S, O_TOPP, O_HELP, O_BACKEND,
};

static const struct option rec_opts[] = {
    {"model", required_argument, 0, 'm'},
    {"prompt", required_argument, 0, 'p'},
    {"prompts", required_argument, 0, O_PROMPTS},
    {"hooks", required_argument, 0, O_HOOKS},
    {"positions", required_argument, 0, O_POSITIONS},
    {"heads", required_argument, 0, O_HEADS},
    {"topk", required_argument, 0, O_TOPK},
    {"full-logits", no_argument, 0, O_FULL},
    {"output", required_argument, 0, 'o'},
    {"dtype", required_argument, 0, O_DTYPE},
    {"compression", required_argument, 0, O_COMP},
    {"resume", no_argument, 0, O_RESUME},
    {"overwrite", no_argument, 0, O_OVERWRITE},
    {"flush-seconds", required_argument, 0, O_FLUSH},
    {"no-fsync", no_argument, 0, O_NOFSYNC},
    {"buffer-mb", required_argument, 0, O_BUFFER},
    {"ctx", required_argument, 0, O_CTX},
    {"threads", required_argument, 0, O_THREADS},
    {"tokenizer", required_argument, 0, O_TOKENIZER},
    {"f32-weights", no_argument, 0, O_F32},
    {"backend", required_argument, 0, O_BACKEND},
    {"template", required_argument, 0, O_TEMPLATE},
    {"system", required_argument, 0, O_SYSTEM},
    {"no-bos", no_argument, 0, O_NOBOS},
    {"skip-long", no_argument, 0, O_SKIPLONG},
    {"generate", required_argument, 0, O_GENERATE},
    {"temperature", required_argument, 0, 't'},
    {"top-k", required_argument, 0, O_TOPK_S},
    {"top-p", required_argument, 0, O_TOPP},
    {"seed", required_argument, 0, 's'},
    {"quiet", no_argument, 0, 'q'},
    {"help", no_argument, 0, O_HELP},
    {0, 0, 0, 0},
};

typedef struct {
    const char *model, *prompt, *prompts, *output, *tokenizer, *template_name, *system;
    const char *backend;
    ks_record_options ro;
    bool resume, overwrite, f32, no_bos, quiet, skip_long;
    int ctx, threads, generate;
} rec_args;

#define err_usage(...) cli_usage("record", __VA_ARGS__)

static int err_msg(const ks_error *e) {
    fprintf(stderr, "koalascope record: error: %s\n", e->msg[0] ? e->msg : ks_status_str(e->code));
    return EXIT_USAGE;
}


static bool to_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, rec_args *a) {
    memset(a, 0, sizeof *a);
    a->ro.logits_topk = 10;
    a->ro.flush_seconds = 2.0;
    a->ro.sampling.top_p = 1.0f;
    a->ro.sampling.seed = 42;
    a->ro.n_prompts_planned = -1;
    optind = 1;
    opterr = 0;
    int c;
    long v;
    double d;
    ks_error e = {0};
    while ((c = getopt_long(argc, argv, "m:p:o:t:s:q", rec_opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'p': a->prompt = optarg; break;
        case O_PROMPTS: a->prompts = optarg; break;
        case O_HOOKS: a->ro.hooks = optarg; break;
        case O_POSITIONS: a->ro.positions = optarg; break;
        case O_HEADS: a->ro.heads = optarg; break;
        case O_TOPK:
            if (!cli_parse_int(optarg, 0, 1 << 20, &v)) return err_usage("--topk: '%s' is not a count", optarg);
            a->ro.logits_topk = (int)v;
            break;
        case O_FULL: a->ro.logits_full = true; break;
        case 'o': a->output = optarg; break;
        case O_DTYPE:
            if (ks_dump_dtype_parse(optarg, &a->ro.dtype, &e)) return err_usage("--dtype: %s", e.msg);
            break;
        case O_COMP:
            if (ks_dump_compression_parse(optarg, &a->ro.compression, &e)) return err_usage("--compression: %s", e.msg);
            break;
        case O_RESUME: a->resume = true; break;
        case O_OVERWRITE: a->overwrite = true; break;
        case O_FLUSH:
            if (!to_double(optarg, 0, 86400, &d)) return err_usage("--flush-seconds: '%s' is not a number of seconds", optarg);
            a->ro.flush_seconds = d;
            break;
        case O_NOFSYNC: a->ro.no_fsync = true; break;
        case O_BUFFER:
            if (!cli_parse_int(optarg, 1, 1 << 20, &v)) return err_usage("--buffer-mb: '%s' is not a size in MB (1..)", optarg);
            a->ro.buffer_bytes = (size_t)v << 20;
            break;
        case O_CTX:
            if (!cli_parse_int(optarg, 1, 1 << 24, &v)) return err_usage("--ctx: '%s' is not a positive length", optarg);
            a->ctx = (int)v;
            break;
        case O_THREADS:
            if (!cli_parse_int(optarg, 1, 1024, &v)) return err_usage("--threads: '%s' is not a count 1..1024", optarg);
            a->threads = (int)v;
            break;
        case O_TOKENIZER: a->tokenizer = optarg; break;
        case O_F32: a->f32 = true; break;
        case O_BACKEND:
            if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda"))
                return err_usage("--backend: '%s' is not a backend (cpu or cuda)", optarg);
            a->backend = optarg;
            break;
        case O_TEMPLATE: a->template_name = strcmp(optarg, "none") == 0 ? NULL : optarg; break;
        case O_SYSTEM: a->system = optarg; break;
        case O_NOBOS: a->no_bos = true; break;
        case O_SKIPLONG: a->skip_long = true; break;
        case O_GENERATE:
            if (!cli_parse_int(optarg, 0, 1 << 20, &v)) return err_usage("--generate: '%s' is not a token count", optarg);
            a->generate = (int)v;
            break;
        case 't':
            if (!to_double(optarg, 0, 1e6, &d)) return err_usage("--temperature: '%s' is not a number >= 0", optarg);
            a->ro.sampling.temperature = (float)d;
            break;
        case O_TOPK_S:
            if (!cli_parse_int(optarg, 0, 1 << 24, &v)) return err_usage("--top-k: '%s' is not a count", optarg);
            a->ro.sampling.top_k = (int)v;
            break;
        case O_TOPP:
            if (!to_double(optarg, 1e-9, 1, &d)) return err_usage("--top-p: '%s' is not in (0, 1]", optarg);
            a->ro.sampling.top_p = (float)d;
            break;
        case 's': {
            char *end;
            errno = 0;
            unsigned long long sv = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end) return err_usage("--seed: '%s' is not an unsigned integer", optarg);
            a->ro.sampling.seed = sv;
            break;
        }
        case 'q': a->quiet = true; break;
        case O_HELP: fputs(help_record, stdout); return 0;
        default:
            if (optopt) {
                char s[2] = {(char)optopt, 0};
                return err_usage("unknown or incomplete option '-%s'", s);
            }
            return err_usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc && !a->model) a->model = argv[optind++];
    if (optind < argc) return err_usage("unexpected argument '%s'", argv[optind]);
    if (!a->model) return err_usage("%s", "no MODEL given (an HF directory, a .gguf file or a llama2.c .bin)");
    if (!a->prompt == !a->prompts) return err_usage("%s", "give exactly one of --prompt TEXT and --prompts FILE");
    if (!a->ro.hooks) return err_usage("%s", "no --hooks selection given (e.g. 'blocks.*.hook_resid_post')");
    if (!a->output) return err_usage("%s", "no output given (-o DUMP.h5)");
    if (a->resume && a->overwrite) return err_usage("%s", "--resume and --overwrite contradict each other");
    if (a->prompts && strcmp(a->prompts, "-") == 0)
        return err_usage("%s", "--prompts -: standard input cannot be read twice; give a file");
    a->ro.generate_max_tokens = a->generate;
    return -1;
}

/* ------------------------------------------------------------------ progress, signals */

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C kills: the dump keeps its last commit */
}

typedef struct {
    double t0, last;
    int64_t total, skip;
    bool tty;
} progress_state;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void show(const ks_record_progress *p, void *user) {
    progress_state *s = user;
    double t = mono();
    bool end = p->prompts_done + s->skip >= s->total;
    if (!end && t - s->last < (s->tty ? 0.2 : 10.0)) return;
    s->last = t;
    double el = t - s->t0 > 1e-9 ? t - s->t0 : 1e-9;
    double rate = (double)p->prompts_done / el;
    double eta = rate > 0 ? (double)(s->total - s->skip - p->prompts_done) / rate : 0;
    fprintf(stderr, "%s[record] %lld/%lld prompts  %.0f tok/s  %.1f MB written  buffer %.1f MB  "
            "committed %lld  ETA %.0fs%s",
            s->tty ? "\r\033[K" : "", (long long)(p->prompts_done + s->skip), (long long)s->total,
            (double)p->tokens_done / el, (double)p->bytes_written / 1e6, (double)p->buffer_bytes / 1e6,
            (long long)p->prompts_committed, eta, s->tty ? "" : "\n");
    fflush(stderr);
}

/* ------------------------------------------------------------------ the command */

int cmd_record(int argc, char **argv) {
    rec_args a;
    char *cmdline = cli_join_argv("record", argc, argv); /* before getopt permutes argv */
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        free(cmdline);
        return rc;
    }
    ks_error e = {0};
    ks_model *m = NULL;
    ks_session *s = NULL;
    ks_recorder *r = NULL;
    cli_prompt_iter it = {0};
    cli_prompt item = {0};
    int *gen_ids = NULL;
    char *gen_text = NULL;
    int *seq = NULL;
    rc = EXIT_USAGE;

    const cli_prompt_source src = {.prompt = a.prompt, .prompts = a.prompts,
                                   .template_name = a.template_name, .system = a.system,
                                   .no_bos = a.no_bos};
    ks_model_options mo = {.tokenizer_path = a.tokenizer, .f32_weights = a.f32};
    if (ks_model_open(a.model, &mo, &m, &e)) goto fail;
    const ks_config *c = ks_model_config(m);
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    if (a.template_name) {
        ks_chat_template t;
        if (ks_chat_template_parse(a.template_name, &t, &e)) goto fail;
    }

    /* pass 1: check every prompt before writing anything */
    int ctx_cap = a.ctx ? a.ctx : c->max_seq_len;
    int64_t n_prompts = 0, n_skipped = 0;
    int longest = 0;
    if (cli_prompts_open(&it, &src, &e)) goto fail;
    for (;;) {
        int k = cli_prompts_next(&it, tok, c->vocab_size, &item, &e);
        if (k < 0) goto fail;
        if (k == 0) break;
        int need = item.n + a.generate;
        if (need > ctx_cap && a.skip_long) {
            n_skipped++;
            continue;
        }
        if (need > ctx_cap) {
            ks_error_set(&e, KS_ERR_RANGE,
                         "%s%s prompt id %s: %d tokens%s exceed the context length %d%s", a.prompts ? a.prompts : "--prompt",
                         a.prompts ? "," : "", item.id, item.n, a.generate ? " + --generate" : "", ctx_cap,
                         a.ctx ? " (--ctx; or --skip-long)" : " of the model (or --skip-long)");
            goto fail;
        }
        if (a.ro.positions) {
            bool *keep = malloc((size_t)need * sizeof *keep);
            int nk;
            ks_status st = keep ? ks_select_positions(a.ro.positions, need, keep, &nk, &e)
                                : ks_error_set(&e, KS_ERR_NOMEM, "out of memory");
            free(keep);
            if (st) {
                char tmp[sizeof e.msg + 96];
                snprintf(tmp, sizeof tmp, "prompt id %s: %s", item.id, e.msg);
                memcpy(e.msg, tmp, sizeof e.msg - 1);
                e.msg[sizeof e.msg - 1] = 0;
                goto fail;
            }
        }
        if (need > longest) longest = need;
        n_prompts++;
        a.ro.expected_tokens += need;
        a.ro.expected_attn += (int64_t)need * (need + 1) / 2;
        if ((int64_t)strlen(item.text) > a.ro.max_text_bytes) a.ro.max_text_bytes = (int64_t)strlen(item.text);
    }
    cli_prompts_close(&it);
    if (n_prompts == 0) {
        ks_error_set(&e, KS_ERR_ARG, "%s: no prompts%s", a.prompts ? a.prompts : "--prompt",
                     n_skipped ? " fit the context (all were skipped by --skip-long)" : " in the file");
        goto fail;
    }
    if (n_skipped && !a.quiet)
        fprintf(stderr, "[record] --skip-long: %lld prompts longer than the context %d are skipped\n",
                (long long)n_skipped, ctx_cap);

    if (a.ro.max_text_bytes < 1) a.ro.max_text_bytes = 1; /* token-id prompts store no text */
    char sha[65];
    if (cli_prompts_sha256(&src, sha, &e)) goto fail;
    a.ro.model_path = a.model;
    a.ro.tokenizer_path = a.tokenizer;
    a.ro.chat_template = a.template_name ? a.template_name : "none";
    a.ro.system_prompt = a.system;
    a.ro.backend = a.backend ? a.backend : "cpu";
    a.ro.command_line = cmdline;
    a.ro.prompts_source = a.prompts ? a.prompts : "--prompt";
    a.ro.prompts_sha256 = sha;
    a.ro.n_prompts_planned = n_prompts;

    ks_session_options so = {.max_seq_len = a.ctx ? a.ctx : longest, .n_threads = a.threads,
                             .backend = a.ro.backend};
    if (ks_session_create(m, &so, &s, &e)) goto fail;

    int64_t done = 0;
    if (a.resume) {
        if (ks_recorder_resume(a.output, m, &a.ro, &r, &done, &e)) goto fail;
        if (!a.quiet) fprintf(stderr, "[record] resuming %s: %lld of %lld prompts already committed\n", a.output,
                              (long long)done, (long long)n_prompts);
    } else if (ks_recorder_create(a.output, m, &a.ro, a.overwrite, &r, &e)) {
        goto fail;
    }
    progress_state ps = {mono(), 0, n_prompts, done, isatty(2) != 0};
    if (!a.quiet) ks_recorder_set_progress(r, show, &ps);
    signal(SIGINT, on_sigint);

    /* pass 2: record */
    if (cli_prompts_open(&it, &src, &e)) goto fail;
    int64_t idx = 0, eligible = 0;
    seq = malloc((size_t)(longest > 0 ? longest : 1) * sizeof *seq);
    if (!seq) {
        ks_error_set(&e, KS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (;; idx++) {
        int k = cli_prompts_next(&it, tok, c->vocab_size, &item, &e);
        if (k < 0) goto fail;
        if (k == 0) break;
        if (item.n + a.generate > ctx_cap) continue; /* only with --skip-long (pass 1) */
        if (eligible++ < done) continue;
        if (interrupted) break;
        int n = item.n;
        memcpy(seq, item.tokens, (size_t)n * sizeof *seq);
        free(gen_text);
        gen_text = NULL;
        if (a.generate > 0) {
            ks_generate_params gp = {.max_new_tokens = a.generate, .sampling = a.ro.sampling, .stop_at_eos = true};
            gp.sampling.seed = a.ro.sampling.seed + (uint64_t)idx;
            int n_gen = 0;
            ks_session_reset(s);
            free(gen_ids);
            gen_ids = NULL;
            if (ks_generate(s, item.tokens, n, &gp, NULL, NULL, &gen_ids, &n_gen, &gen_text, &e)) goto fail;
            memcpy(seq + n, gen_ids, (size_t)n_gen * sizeof *seq);
            n += n_gen;
        }
        if (ks_recorder_record(r, s, seq, n, item.n, item.text, item.id, gen_text, &e)) goto fail;
    }
    cli_prompts_close(&it);
    if (interrupted) {
        /* commit what is done, leave the dump resumable */
        if (ks_recorder_finish(r, &e)) goto fail;
        if (ps.tty && !a.quiet) fputs("\n", stderr);
        fprintf(stderr, "koalascope record: interrupted after %lld of %lld prompts; they are committed in %s.\n"
                "Continue with the same command and --resume.\n", (long long)(eligible - 1), (long long)n_prompts, a.output);
        rc = 130;
        goto out;
    }
    if (ks_recorder_finish(r, &e)) goto fail;
    if (!a.quiet) {
        if (ps.tty) fputs("\n", stderr);
        fprintf(stderr, "[record] %s complete: %lld prompts in %.1f s\n", a.output, (long long)n_prompts,
                mono() - ps.t0);
    }
    rc = 0;
    goto out;
fail:
    if (isatty(2) && !a.quiet) fputs("\n", stderr);
    err_msg(&e);
    if (r)
        fprintf(stderr, "koalascope record: %s keeps the %lld prompts committed before the error; fix the "
                "cause and continue with the same command and --resume.\n", a.output,
                (long long)ks_recorder_committed(r));
out:
    ks_recorder_free(r);
    cli_prompts_close(&it);
    cli_prompt_clear(&item);
    free(seq);
    free(gen_ids);
    free(gen_text);
    ks_session_free(s);
    ks_model_close(m);
    free(cmdline);
    return rc;
}
