/* diff.c — `koalascope diff BASE TUNED --prompts FILE -o OUT_DIR`: where fine-tuning changed a
 * model. Each prompt is tokenized once (with the base model's tokenizer) and run through both
 * models; the base run is recorded into OUT_DIR/base.h5 and the tuned run into tuned.h5 by the
 * ordinary recorder, and the measures of probes/ks_diff.h read the same forwards through the
 * recorder's tap, so nothing runs twice. Weight deltas, results.h5, CSV tables, report.md with
 * charts and the per-token diff.h5 follow (experiments/ks_diff_results.h, docs/DIFF.md).
 *
 * Like record, the prompt file is read twice: a first pass checks every prompt (and counts
 * them) before anything is written. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "cli.h"
#include "cli_prompts.h"
#include "ks_diff.h"
#include "ks_diff_results.h"
#include "ks_dump.h"
#include "ks_model.h"

static const char *help_diff =
    "Usage: koalascope diff BASE TUNED --prompts FILE -o OUT_DIR [options]\n"
    "Where fine-tuning changed a model: BASE and TUNED (same architecture and tokenizer) run on\n"
    "the same tokens; per-layer residual similarity (linear CKA, cosine) of resid_post, attn_out\n"
    "and mlp_out, per-head attention distance (Jensen-Shannon in bits, total variation), logit-lens\n"
    "KL and top-1 agreement per layer, and weight deltas per tensor, layer and module.\n"
    "OUT_DIR gets results.h5, layers.csv, heads.csv, weights.csv, modules.csv, report.md with\n"
    "charts/, the dumps base.h5 and tuned.h5, and diff.h5 for the viewer's compare mode\n"
    "(docs/DIFF.md).\n\n"
    "Input\n"
    "  --prompts FILE        .jsonl: one object per line with \"prompt\" (or \"text\"), \"tokens\"\n"
    "                        (token ids) or \"messages\" (needs --template); other files: one\n"
    "                        prompt per line\n"
    "  -p, --prompt TEXT     one prompt instead of a file\n"
    "  --template NAME       wrap each prompt as a user turn: koala, vicuna, alpaca, llama2, plain\n"
    "  --system TEXT         system prompt for the template\n"
    "  --no-bos              do not prepend BOS to raw text\n"
    "  --max-prompts N       only the first N prompts\n"
    "  --skip-long           skip prompts longer than the context (default: stop with an error)\n"
    "  --tokenizer FILE      tokenizer for BASE (llama2.c checkpoints need one); also TUNED's\n"
    "                        when it has none of its own\n"
    "  --tuned-tokenizer FILE  tokenizer for TUNED\n"
    "What to keep\n"
    "  --hooks SEL           hook points the two dumps record (default\n"
    "                        'blocks.*.hook_resid_post,blocks.*.attn.hook_pattern')\n"
    "  --no-dumps            no base.h5/tuned.h5 (the measures and diff.h5 are still written)\n"
    "  --cka WHICH           all (default), resid (resid_post only) or none: CKA keeps 3 d_model^2\n"
    "                        doubles per layer and stream (the cosine is always computed)\n"
    "Output and engine\n"
    "  -o, --output DIR      output directory (created; an existing non-empty one needs --overwrite)\n"
    "  --overwrite           write into an existing directory, replacing its files\n"
    "  --threads N           worker threads (default: all cores)\n"
    "  --f32-weights         convert weights to f32 at load\n"
    "  -q, --quiet           no progress lines\n";

enum {
    O_PROMPTS = 300, O_TEMPLATE, O_SYSTEM, O_NOBOS, O_MAXP, O_TOK, O_TTOK, O_HOOKS, O_NODUMPS,
    O_CKA, O_OVERWRITE, O_THREADS, O_F32, O_HELP, O_SKIPLONG,
};

static const struct option diff_opts[] = {
    {"prompts", required_argument, 0, O_PROMPTS},
    {"prompt", required_argument, 0, 'p'},
    {"template", required_argument, 0, O_TEMPLATE},
    {"system", required_argument, 0, O_SYSTEM},
    {"no-bos", no_argument, 0, O_NOBOS},
    {"max-prompts", required_argument, 0, O_MAXP},
    {"skip-long", no_argument, 0, O_SKIPLONG},
    {"tokenizer", required_argument, 0, O_TOK},
    {"tuned-tokenizer", required_argument, 0, O_TTOK},
    {"hooks", required_argument, 0, O_HOOKS},
    {"no-dumps", no_argument, 0, O_NODUMPS},
    {"cka", required_argument, 0, O_CKA},
    {"output", required_argument, 0, 'o'},
    {"overwrite", no_argument, 0, O_OVERWRITE},
    {"threads", required_argument, 0, O_THREADS},
    {"f32-weights", no_argument, 0, O_F32},
    {"quiet", no_argument, 0, 'q'},
    {"help", no_argument, 0, O_HELP},
    {0, 0, 0, 0},
};

typedef struct {
    const char *base, *tuned, *output, *tokenizer, *tuned_tokenizer, *hooks;
    cli_prompt_source src;
    long max_prompts;
    int threads;
    bool no_dumps, overwrite, f32, quiet, skip_long;
    ks_diff_options dopt;
} diff_args;

#define err_usage(...) cli_usage("diff", __VA_ARGS__)

static int parse_args(int argc, char **argv, diff_args *a) {
    memset(a, 0, sizeof *a);
    a->hooks = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern";
    optind = 1;
    opterr = 0;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "p:o:q", diff_opts, NULL)) != -1) {
        switch (c) {
        case O_PROMPTS: a->src.prompts = optarg; break;
        case 'p': a->src.prompt = optarg; break;
        case O_TEMPLATE: a->src.template_name = strcmp(optarg, "none") == 0 ? NULL : optarg; break;
        case O_SYSTEM: a->src.system = optarg; break;
        case O_NOBOS: a->src.no_bos = true; break;
        case O_MAXP:
            if (!cli_parse_int(optarg, 1, 1L << 40, &v)) return err_usage("--max-prompts: '%s' is not a positive count", optarg);
            a->max_prompts = v;
            break;
        case O_TOK: a->tokenizer = optarg; break;
        case O_TTOK: a->tuned_tokenizer = optarg; break;
        case O_HOOKS: a->hooks = optarg; break;
        case O_NODUMPS: a->no_dumps = true; break;
        case O_SKIPLONG: a->skip_long = true; break;
        case O_CKA:
            if (strcmp(optarg, "all") == 0) break;
            if (strcmp(optarg, "resid") == 0) {
                a->dopt.cka_off[KS_DIFF_ATTN] = a->dopt.cka_off[KS_DIFF_MLP] = true;
            } else if (strcmp(optarg, "none") == 0) {
                for (int s = 0; s < KS_DIFF_N_STREAMS; s++) a->dopt.cka_off[s] = true;
            } else {
                return err_usage("--cka: '%s' is not one of all, resid, none", optarg);
            }
            break;
        case 'o': a->output = optarg; break;
        case O_OVERWRITE: a->overwrite = true; break;
        case O_THREADS:
            if (!cli_parse_int(optarg, 1, 1024, &v)) return err_usage("--threads: '%s' is not a count 1..1024", optarg);
            a->threads = (int)v;
            break;
        case O_F32: a->f32 = true; break;
        case 'q': a->quiet = true; break;
        case O_HELP: fputs(help_diff, stdout); return 0;
        default:
            if (optopt) {
                char s[2] = {(char)optopt, 0};
                return err_usage("unknown or incomplete option '-%s'", s);
            }
            return err_usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) a->base = argv[optind++];
    if (optind < argc) a->tuned = argv[optind++];
    if (optind < argc) return err_usage("unexpected argument '%s'", argv[optind]);
    if (!a->base || !a->tuned) return err_usage("%s", "give two models: BASE TUNED");
    if (!a->src.prompt == !a->src.prompts) return err_usage("%s", "give exactly one of --prompts FILE and --prompt TEXT");
    if (a->src.prompts && strcmp(a->src.prompts, "-") == 0)
        return err_usage("%s", "--prompts -: standard input cannot be read twice; give a file");
    if (!a->output) return err_usage("%s", "no output directory given (-o OUT_DIR)");
    return -1;
}

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* OUT_DIR: created, or an existing directory that is empty (or --overwrite) */
static ks_status prepare_dir(const char *dir, bool overwrite, ks_error *e) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT) return ks_error_set(e, KS_ERR_IO, "-o %s: %s", dir, strerror(errno));
        if (mkdir(dir, 0777) != 0) return ks_error_set(e, KS_ERR_IO, "-o %s: cannot create: %s", dir, strerror(errno));
        return KS_OK;
    }
    if (!S_ISDIR(st.st_mode)) return ks_error_set(e, KS_ERR_ARG, "-o %s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return ks_error_set(e, KS_ERR_IO, "-o %s: %s", dir, strerror(errno));
    bool empty = true;
    for (struct dirent *x; (x = readdir(d));)
        if (strcmp(x->d_name, ".") && strcmp(x->d_name, "..")) empty = false;
    closedir(d);
    if (!empty && !overwrite)
        return ks_error_set(e, KS_ERR_ARG, "-o %s: the directory exists and is not empty (--overwrite "
                            "to replace its files)", dir);
    return KS_OK;
}

static char *path_in(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int cmd_diff(int argc, char **argv) {
    diff_args a;
    char *cmdline = cli_join_argv("diff", argc, argv);
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        free(cmdline);
        return rc;
    }
    rc = EXIT_USAGE;
    ks_error e = {0};
    ks_model *mb = NULL, *mt = NULL;
    ks_session *sb = NULL, *stu = NULL;
    ks_recorder *rb = NULL, *rt = NULL;
    ks_diff *d = NULL;
    ks_diff_writer *w = NULL;
    ks_diff_tensor *tens = NULL;
    int n_tens = 0;
    ks_diff_summary sum = {0};
    ks_diff_findings fnd = {0};
    cli_prompt_iter it = {0};
    cli_prompt item = {0};
    char *p_base = NULL, *p_tuned = NULL, *p_diff = NULL;
    double t0 = mono();

    ks_model_options ob = {.tokenizer_path = a.tokenizer, .f32_weights = a.f32};
    if (ks_model_open(a.base, &ob, &mb, &e)) goto fail;
    ks_model_options ot = {.tokenizer_path = a.tuned_tokenizer, .f32_weights = a.f32};
    if (ks_model_open(a.tuned, &ot, &mt, &e)) goto fail;
    if (!a.tuned_tokenizer && a.tokenizer && !ks_model_tokenizer(mt)) {
        /* a llama2.c tuned model takes the base's tokenizer file; where it does not fit (another
         * vocabulary), the tuned model stays without one and the check below names the cause */
        ks_model *m2 = NULL;
        ks_error e2 = {0};
        ot.tokenizer_path = a.tokenizer;
        if (ks_model_open(a.tuned, &ot, &m2, &e2) == KS_OK) {
            ks_model_close(mt);
            mt = m2;
        }
    }
    if (ks_diff_check_models(mb, mt, &e)) {
        fprintf(stderr, "koalascope diff: error: %s vs %s: %s\n", a.base, a.tuned, e.msg);
        goto out;
    }
    const ks_config *c = ks_model_config(mb);
    const ks_tokenizer *tok = ks_model_tokenizer(mb) ? ks_model_tokenizer(mb) : ks_model_tokenizer(mt);
    if (a.src.template_name) {
        ks_chat_template t;
        if (ks_chat_template_parse(a.src.template_name, &t, &e)) goto fail;
    }
    int ctx = c->max_seq_len < ks_model_config(mt)->max_seq_len ? c->max_seq_len : ks_model_config(mt)->max_seq_len;

    /* pass 1 */
    int64_t n_prompts = 0, n_tokens = 0, attn = 0, text_bytes = 1, n_skipped = 0;
    int longest = 0;
    if (cli_prompts_open(&it, &a.src, &e)) goto fail;
    for (;;) {
        if (a.max_prompts && n_prompts >= a.max_prompts) break;
        int k = cli_prompts_next(&it, tok, c->vocab_size, &item, &e);
        if (k < 0) goto fail;
        if (k == 0) break;
        if (item.n > ctx && a.skip_long) {
            n_skipped++;
            continue;
        }
        if (item.n > ctx) {
            ks_error_set(&e, KS_ERR_RANGE, "%s, prompt id %s: %d tokens exceed the context length %d "
                         "(or --skip-long)", a.src.prompts ? a.src.prompts : "--prompt", item.id, item.n, ctx);
            goto fail;
        }
        n_prompts++;
        n_tokens += item.n;
        attn += (int64_t)item.n * (item.n + 1) / 2;
        if (item.n > longest) longest = item.n;
        if ((int64_t)strlen(item.text) > text_bytes) text_bytes = (int64_t)strlen(item.text);
    }
    cli_prompts_close(&it);
    if (n_prompts == 0) {
        ks_error_set(&e, KS_ERR_ARG, "%s: no prompts %s", a.src.prompts ? a.src.prompts : "--prompt",
                     n_skipped ? "fit the context (all were skipped by --skip-long)"
                               : "in the file (an empty prompt set)");
        goto fail;
    }
    char sha[65];
    if (cli_prompts_sha256(&a.src, sha, &e)) goto fail;
    if (prepare_dir(a.output, a.overwrite, &e)) goto fail;

    /* weights first: cheap, and a clear answer even if the activations take long */
    if (ks_diff_weights(mb, mt, &tens, &n_tens, &e)) goto fail;
    if (ks_diff_create(mb, mt, &a.dopt, &d, &e)) goto fail;
    ks_session_options so = {.max_seq_len = longest, .n_threads = a.threads};
    if (ks_session_create(mb, &so, &sb, &e) || ks_session_create(mt, &so, &stu, &e)) goto fail;

    ks_diff_meta meta = {.base_model = a.base, .tuned_model = a.tuned,
                         .prompts_source = a.src.prompts ? a.src.prompts : "--prompt",
                         .prompts_sha256 = sha, .template_name = a.src.template_name,
                         .command_line = cmdline, .base_dump = a.no_dumps ? NULL : "base.h5",
                         .tuned_dump = a.no_dumps ? NULL : "tuned.h5"};
    p_base = path_in(a.output, "base.h5");
    p_tuned = path_in(a.output, "tuned.h5");
    p_diff = path_in(a.output, "diff.h5");
    if (!p_base || !p_tuned || !p_diff) {
        ks_error_set(&e, KS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!a.no_dumps) {
        ks_record_options ro = {.hooks = a.hooks, .logits_topk = 10, .flush_seconds = 2.0,
                                .expected_tokens = n_tokens, .expected_attn = attn,
                                .max_text_bytes = text_bytes, .chat_template = a.src.template_name,
                                .system_prompt = a.src.system, .backend = "cpu",
                                .command_line = cmdline, .prompts_source = meta.prompts_source,
                                .prompts_sha256 = sha, .n_prompts_planned = n_prompts,
                                .sampling = {.top_p = 1.0f}};
        ro.model_path = a.base;
        ro.tokenizer_path = a.tokenizer;
        if (ks_recorder_create(p_base, mb, &ro, true, &rb, &e)) goto fail;
        ro.model_path = a.tuned;
        ro.tokenizer_path = a.tuned_tokenizer ? a.tuned_tokenizer : ks_model_tokenizer(mt) == NULL ? NULL : a.tokenizer;
        if (ks_recorder_create(p_tuned, mt, &ro, true, &rt, &e)) goto fail;
        ks_recorder_set_tap(rb, ks_diff_hook_base, d);
        ks_recorder_set_tap(rt, ks_diff_hook_tuned, d);
    }
    if (ks_diff_writer_create(p_diff, &meta, c->n_layers, c->n_heads, &w, &e)) goto fail;
    if (!a.quiet)
        fprintf(stderr, "[diff] %lld prompts (%lld longer than the context skipped), %lld tokens; weights compared (%d tensors); CKA "
                "accumulators %.1f MB\n", (long long)n_prompts, (long long)n_skipped, (long long)n_tokens, n_tens,
                (double)ks_diff_accumulator_bytes(d) / 1e6);

    /* pass 2 */
    if (cli_prompts_open(&it, &a.src, &e)) goto fail;
    double last = 0, t1 = mono();
    int64_t done = 0, toks = 0;
    bool tty = isatty(2);
    while (done < n_prompts) {
        int k = cli_prompts_next(&it, tok, c->vocab_size, &item, &e);
        if (k < 0) goto fail;
        if (k == 0) break;
        if (item.n > ctx) continue; /* only with --skip-long (pass 1) */
        ks_diff_prompt pr;
        if (a.no_dumps) {
            if (ks_diff_run(d, sb, stu, item.tokens, item.n, &pr, &e)) goto fail;
        } else {
            if (ks_diff_begin(d, item.n, &e) ||
                ks_recorder_record(rb, sb, item.tokens, item.n, item.n, item.text, item.id, NULL, &e) ||
                ks_recorder_record(rt, stu, item.tokens, item.n, item.n, item.text, item.id, NULL, &e) ||
                ks_diff_end(d, &pr, &e))
                goto fail;
        }
        if (ks_diff_writer_add(w, &pr, &e)) goto fail;
        done++;
        toks += item.n;
        double t = mono();
        if (!a.quiet && (done == n_prompts || t - last > (tty ? 0.2 : 10.0))) {
            last = t;
            double el = t - t1 > 1e-9 ? t - t1 : 1e-9;
            fprintf(stderr, "%s[diff] %lld/%lld prompts  %.0f tok/s  ETA %.0fs%s", tty ? "\r\033[K" : "",
                    (long long)done, (long long)n_prompts, (double)toks / el,
                    (double)(n_prompts - done) * el / (double)done, tty ? "" : "\n");
            fflush(stderr);
        }
    }
    cli_prompts_close(&it);
    if (!a.quiet && tty) fputs("\n", stderr);
    if ((rb && ks_recorder_finish(rb, &e)) || (rt && ks_recorder_finish(rt, &e))) goto fail;
    if (ks_diff_summarize(d, &sum, &e)) goto fail;
    if (ks_diff_findings_compute(&sum, tens, n_tens, &fnd, &e)) goto fail;
    if (ks_diff_writer_finish(w, &sum, &fnd, &e)) goto fail;
    meta.seconds = mono() - t0;
    if (ks_diff_write_results(a.output, &meta, &sum, tens, n_tens, &fnd, &e)) goto fail;
    char *sentence = ks_diff_findings_sentence(&fnd, &sum, tens);
    if (sentence) printf("%s\n", sentence);
    free(sentence);
    if (!a.quiet) fprintf(stderr, "[diff] %s/report.md written in %.1f s\n", a.output, mono() - t0);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "koalascope diff: error: %s\n", e.msg[0] ? e.msg : ks_status_str(e.code));
out:
    ks_recorder_free(rb);
    ks_recorder_free(rt);
    ks_diff_writer_free(w);
    ks_diff_free(d);
    ks_diff_summary_clear(&sum);
    ks_diff_findings_clear(&fnd);
    free(tens);
    cli_prompts_close(&it);
    cli_prompt_clear(&item);
    ks_session_free(sb);
    ks_session_free(stu);
    ks_model_close(mb);
    ks_model_close(mt);
    free(p_base);
    free(p_tuned);
    free(p_diff);
    free(cmdline);
    return rc;
}
