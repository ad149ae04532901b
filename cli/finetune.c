/* finetune.c — `koalascope finetune`: fine-tune a model on dialogue data the way Koala was
 * trained (loss on the model's turns, AdamW, warmup + cosine, 2 epochs), on the CPU engine's
 * backward pass, writing HF checkpoints that transformers and koalascope both open.
 *
 * OUT_DIR holds checkpoint-NNNNNN/ directories (each complete, with optimizer state, written
 * atomically), the latest model itself (config.json, model.safetensors, tokenizer files:
 * `koalascope generate OUT_DIR` opens it), losses.csv, loss.png and loss.svg, and with
 * --record-hooks a dump per checkpoint under dumps/. --resume OUT_DIR continues the run from
 * its last checkpoint with the options it was started with (docs/FINETUNE.md). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ks_dump.h"
#include "ks_model.h"
#include "ks_plot.h"
#include "ks_train.h"

#ifdef KS_HAVE_OPENBLAS
void openblas_set_num_threads(int n);
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *CMD = "finetune";

/* snprintf for paths: check_args keeps -o short enough that nothing is cut (and vsnprintf
 * keeps GCC's truncation warning, meant for fixed strings, out of it). */
__attribute__((format(printf, 3, 4))) static void pathf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static const char *help =
    "Usage: koalascope finetune --model M --data FILE... -o OUT_DIR [options]\n"
    "       koalascope finetune --resume OUT_DIR [--threads N]\n"
    "Fine-tune a model on dialogue data (the Koala recipe) on the CPU. The loss is on the\n"
    "model's turns only; OUT_DIR gets HF checkpoints (checkpoint-NNNNNN/), the latest model\n"
    "itself, losses.csv and loss.png/.svg. See docs/FINETUNE.md.\n"
    "  --model M          HF directory, .gguf or llama2.c .bin (with --tokenizer FILE)\n"
    "  --random-init      M is an HF directory with config.json and tokenizer files only:\n"
    "                     initialise as HF does (normal(0, initializer_range), norms 1) from --seed\n"
    "  --data FILE        training data (repeatable; further FILEs may follow): ShareGPT .json,\n"
    "                     Alpaca .json, Anthropic HH .jsonl(.gz), .txt, pre-tokenized .jsonl\n"
    "  --data-format F    auto (default), sharegpt, alpaca, hh, text, tokens\n"
    "  --template NAME    koala (default), vicuna, alpaca, llama2, plain\n"
    "  --loss-on WHAT     assistant (default: the model's turns and their end token) or all\n"
    "  -o, --output DIR   where checkpoints go\n"
    "  --epochs E         passes over the data (default 2, as Koala)\n"
    "  --steps N          optimizer steps instead of epochs\n"
    "  --lr X             peak learning rate (default 2e-5)\n"
    "  --min-lr X         floor of the cosine decay (default 0)\n"
    "  --warmup-steps N   linear warmup from 0 (default 0)\n"
    "  --weight-decay X   AdamW's decoupled decay on matrices (default 0)\n"
    "  --batch B          sequences per micro-batch (default 1)\n"
    "  --grad-accum K     micro-batches per step (default 1)\n"
    "  --clip C           clip the global gradient norm to C (default 1; 0 = off)\n"
    "  --max-len L        truncate sequences to L tokens (default: the model's context)\n"
    "  --seed S           order of the data, random init, LoRA init (default 0)\n"
    "  --no-shuffle       keep the data's order in every epoch\n"
    "  --save-every N     checkpoint every N steps (default: only at the end)\n"
    "  --keep N           checkpoints kept (default 2; 0 = all)\n"
    "  --save-dtype T     f32 (default) or bf16 for model.safetensors\n"
    "  --lora-rank R      LoRA of rank R on q/k/v/o (base weights frozen; merged on save)\n"
    "  --lora-alpha A     LoRA scale A/R (default 16)\n"
    "  --record-hooks SEL record these hooks on --probe-prompts at every checkpoint\n"
    "  --probe-prompts F  prompts, one per line (or JSONL with \"prompt\"), as user turns\n"
    "  --resume DIR       continue the run in DIR from its last checkpoint\n"
    "  --threads N        worker threads\n"
    "  --tokenizer FILE   tokenizer for a llama2.c checkpoint\n"
    "  --backend NAME     cpu (default) or cuda: where the forward and backward run (the\n"
    "                     optimizer runs on the host)\n"
    "  -q, --quiet        no progress line\n";

typedef struct {
    const char *model, *tokenizer, *output, *resume, *template_name, *loss_on, *data_format;
    const char *save_dtype, *hooks, *probe_prompts, *backend;
    const char **data;
    int n_data;
    ks_train_options to;
    int max_len, save_every, keep, threads;
    bool random_init, quiet;
} args;

enum {
    O_MODEL = 256, O_DATA, O_DATA_FORMAT, O_TEMPLATE, O_LOSS_ON, O_EPOCHS, O_STEPS, O_LR, O_MIN_LR,
    O_WARMUP, O_WD, O_BATCH, O_ACCUM, O_CLIP, O_MAX_LEN, O_SEED, O_NO_SHUFFLE, O_SAVE_EVERY, O_KEEP,
    O_SAVE_DTYPE, O_LORA_RANK, O_LORA_ALPHA, O_RECORD, O_PROBES, O_RESUME, O_THREADS, O_TOKENIZER,
    O_BACKEND, O_RANDOM_INIT, O_HELP
};

static const struct option long_opts[] = {
    {"model", required_argument, 0, O_MODEL},          {"data", required_argument, 0, O_DATA},
    {"data-format", required_argument, 0, O_DATA_FORMAT}, {"template", required_argument, 0, O_TEMPLATE},
    {"loss-on", required_argument, 0, O_LOSS_ON},      {"output", required_argument, 0, 'o'},
    {"epochs", required_argument, 0, O_EPOCHS},        {"steps", required_argument, 0, O_STEPS},
    {"lr", required_argument, 0, O_LR},                {"min-lr", required_argument, 0, O_MIN_LR},
    {"warmup-steps", required_argument, 0, O_WARMUP},  {"weight-decay", required_argument, 0, O_WD},
    {"batch", required_argument, 0, O_BATCH},          {"grad-accum", required_argument, 0, O_ACCUM},
    {"clip", required_argument, 0, O_CLIP},            {"max-len", required_argument, 0, O_MAX_LEN},
    {"seed", required_argument, 0, O_SEED},            {"no-shuffle", no_argument, 0, O_NO_SHUFFLE},
    {"save-every", required_argument, 0, O_SAVE_EVERY}, {"keep", required_argument, 0, O_KEEP},
    {"save-dtype", required_argument, 0, O_SAVE_DTYPE}, {"lora-rank", required_argument, 0, O_LORA_RANK},
    {"lora-alpha", required_argument, 0, O_LORA_ALPHA}, {"record-hooks", required_argument, 0, O_RECORD},
    {"probe-prompts", required_argument, 0, O_PROBES}, {"resume", required_argument, 0, O_RESUME},
    {"threads", required_argument, 0, O_THREADS},      {"tokenizer", required_argument, 0, O_TOKENIZER},
    {"backend", required_argument, 0, O_BACKEND},      {"random-init", no_argument, 0, O_RANDOM_INIT},
    {"quiet", no_argument, 0, 'q'},                    {"help", no_argument, 0, O_HELP},
    {0, 0, 0, 0}};

static bool parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Parse argv into a (whose data array is malloc'd). Returns -1 to go on, else an exit code. */
static int parse(int argc, char **argv, args *a) {
    memset(a, 0, sizeof *a);
    ks_train_options_default(&a->to);
    a->template_name = "koala";
    a->loss_on = "assistant";
    a->data_format = "auto";
    a->save_dtype = "f32";
    a->backend = "cpu";
    a->keep = 2;
    a->data = calloc((size_t)argc + 1, sizeof *a->data);
    if (!a->data) return cli_error(CMD, "out of memory");
    optind = 1;
    int c;
    long l;
    double d;
#define INT_OPT(field, lo, hi, name)                                                           \
    if (!cli_parse_int(optarg, lo, hi, &l)) return cli_usage(CMD, name ": expected an integer in [%ld, %ld], got '%s'", (long)(lo), (long)(hi), optarg); \
    field = (int)l;
#define DBL_OPT(field, lo, hi, name)                                                           \
    if (!parse_double(optarg, lo, hi, &d)) return cli_usage(CMD, name ": expected a number in [%g, %g], got '%s'", (double)(lo), (double)(hi), optarg); \
    field = d;
    while ((c = getopt_long(argc, argv, "o:q", long_opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: a->model = optarg; break;
        case O_DATA: a->data[a->n_data++] = optarg; break;
        case O_DATA_FORMAT: a->data_format = optarg; break;
        case O_TEMPLATE: a->template_name = optarg; break;
        case O_LOSS_ON: a->loss_on = optarg; break;
        case 'o': a->output = optarg; break;
        case O_EPOCHS: INT_OPT(a->to.epochs, 1, 1000000, "--epochs") break;
        case O_STEPS: INT_OPT(a->to.steps, 1, 100000000, "--steps") break;
        case O_LR: DBL_OPT(a->to.lr, 1e-12, 10, "--lr") break;
        case O_MIN_LR: DBL_OPT(a->to.min_lr, 0, 10, "--min-lr") break;
        case O_WARMUP: INT_OPT(a->to.warmup_steps, 0, 100000000, "--warmup-steps") break;
        case O_WD: DBL_OPT(a->to.weight_decay, 0, 10, "--weight-decay") break;
        case O_BATCH: INT_OPT(a->to.batch, 1, 1000000, "--batch") break;
        case O_ACCUM: INT_OPT(a->to.grad_accum, 1, 1000000, "--grad-accum") break;
        case O_CLIP: DBL_OPT(a->to.clip, 0, 1e30, "--clip") break;
        case O_MAX_LEN: INT_OPT(a->max_len, 2, 1 << 24, "--max-len") break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                return cli_usage(CMD, "--seed: expected a non-negative integer, got '%s'", optarg);
            a->to.seed = s;
            break;
        }
        case O_NO_SHUFFLE: a->to.shuffle = false; break;
        case O_SAVE_EVERY: INT_OPT(a->save_every, 1, 100000000, "--save-every") break;
        case O_KEEP: INT_OPT(a->keep, 0, 1000000, "--keep") break;
        case O_SAVE_DTYPE: a->save_dtype = optarg; break;
        case O_LORA_RANK: INT_OPT(a->to.lora_rank, 1, 65536, "--lora-rank") break;
        case O_LORA_ALPHA: DBL_OPT(a->to.lora_alpha, 1e-9, 1e9, "--lora-alpha") break;
        case O_RECORD: a->hooks = optarg; break;
        case O_PROBES: a->probe_prompts = optarg; break;
        case O_RESUME: a->resume = optarg; break;
        case O_THREADS: INT_OPT(a->threads, 1, 4096, "--threads") break;
        case O_TOKENIZER: a->tokenizer = optarg; break;
        case O_BACKEND: a->backend = optarg; break;
        case O_RANDOM_INIT: a->random_init = true; break;
        case 'q': a->quiet = true; break;
        case O_HELP: fputs(help, stdout); return 0;
        default: return cli_usage(CMD, "unknown option");
        }
    }
#undef INT_OPT
#undef DBL_OPT
    for (int i = optind; i < argc; i++) a->data[a->n_data++] = argv[i];
    return -1;
}

static int check_args(const args *a) {
    if (strcmp(a->backend, "cpu") != 0 && strcmp(a->backend, "cuda") != 0)
        return cli_usage(CMD, "--backend: unknown backend '%s' (cpu or cuda)", a->backend);
    if (!a->model) return cli_usage(CMD, "--model is required");
    if (!a->output) return cli_usage(CMD, "-o OUT_DIR is required");
    if (strlen(a->output) > 3000) return cli_usage(CMD, "-o: the path is too long");
    if (a->n_data == 0) return cli_usage(CMD, "--data FILE is required");
    if (strcmp(a->loss_on, "assistant") != 0 && strcmp(a->loss_on, "all") != 0)
        return cli_usage(CMD, "--loss-on: expected assistant or all, got '%s'", a->loss_on);
    if (strcmp(a->save_dtype, "f32") != 0 && strcmp(a->save_dtype, "bf16") != 0)
        return cli_usage(CMD, "--save-dtype: expected f32 or bf16, got '%s'", a->save_dtype);
    if (!a->hooks != !a->probe_prompts)
        return cli_usage(CMD, "--record-hooks and --probe-prompts go together");
    if (a->to.min_lr > a->to.lr)
        return cli_usage(CMD, "--min-lr (%g) is above --lr (%g)", a->to.min_lr, a->to.lr);
    return -1;
}

/* ------------------------------------------------------------------ the run's record */

/* The options of a run as JSON (stored in every checkpoint; --resume re-reads them). */
static char *run_json(const args *a) {
    json_t *data = json_array();
    for (int i = 0; i < a->n_data; i++) json_array_append_new(data, json_string(a->data[i]));
    json_t *j = json_pack("{s:s,s:s?,s:o,s:s,s:s,s:s,s:s,s:s?,s:s?,s:b}", "model", a->model,
                          "tokenizer", a->tokenizer, "data", data, "data_format", a->data_format,
                          "template", a->template_name, "loss_on", a->loss_on, "save_dtype",
                          a->save_dtype, "record_hooks", a->hooks, "probe_prompts", a->probe_prompts,
                          "random_init", a->random_init);
    json_object_set_new(j, "epochs", json_integer(a->to.epochs));
    json_object_set_new(j, "steps", json_integer(a->to.steps));
    json_object_set_new(j, "lr", json_real(a->to.lr));
    json_object_set_new(j, "min_lr", json_real(a->to.min_lr));
    json_object_set_new(j, "warmup_steps", json_integer(a->to.warmup_steps));
    json_object_set_new(j, "weight_decay", json_real(a->to.weight_decay));
    json_object_set_new(j, "batch", json_integer(a->to.batch));
    json_object_set_new(j, "grad_accum", json_integer(a->to.grad_accum));
    json_object_set_new(j, "clip", json_real(a->to.clip));
    json_object_set_new(j, "max_len", json_integer(a->max_len));
    json_object_set_new(j, "seed", json_integer((json_int_t)a->to.seed));
    json_object_set_new(j, "shuffle", json_boolean(a->to.shuffle));
    json_object_set_new(j, "save_every", json_integer(a->save_every));
    json_object_set_new(j, "keep", json_integer(a->keep));
    json_object_set_new(j, "lora_rank", json_integer(a->to.lora_rank));
    json_object_set_new(j, "lora_alpha", json_real(a->to.lora_alpha));
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(j);
    return s;
}

/* Strings of a resumed run live in this JSON object (kept until exit). */
static json_t *resumed_run;

static const char *jstr(json_t *j, const char *k) {
    json_t *v = json_object_get(j, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
static double jnum(json_t *j, const char *k, double def) {
    json_t *v = json_object_get(j, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

static int from_run(const char *text, const char *dir, args *a) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    json_t *data = j ? json_object_get(j, "data") : NULL;
    if (!j || !jstr(j, "model") || !json_is_array(data))
        return cli_error(CMD, "%s: the checkpoint's run options are incomplete (model, data)", dir);
    resumed_run = j;
    a->model = jstr(j, "model");
    a->tokenizer = jstr(j, "tokenizer");
    a->n_data = 0;
    free(a->data);
    a->data = calloc(json_array_size(data) + 1, sizeof *a->data);
    if (!a->data) return cli_error(CMD, "out of memory");
    for (size_t i = 0; i < json_array_size(data); i++)
        if (json_is_string(json_array_get(data, i))) a->data[a->n_data++] = json_string_value(json_array_get(data, i));
#define S(f, k) if (jstr(j, k)) a->f = jstr(j, k);
    S(data_format, "data_format") S(template_name, "template") S(loss_on, "loss_on")
    S(save_dtype, "save_dtype")
#undef S
    a->hooks = jstr(j, "record_hooks");
    a->probe_prompts = jstr(j, "probe_prompts");
    a->random_init = json_is_true(json_object_get(j, "random_init"));
    a->to.epochs = (int)jnum(j, "epochs", 2);
    a->to.steps = (int)jnum(j, "steps", 0);
    a->to.lr = jnum(j, "lr", a->to.lr);
    a->to.min_lr = jnum(j, "min_lr", 0);
    a->to.warmup_steps = (int)jnum(j, "warmup_steps", 0);
    a->to.weight_decay = jnum(j, "weight_decay", 0);
    a->to.batch = (int)jnum(j, "batch", 1);
    a->to.grad_accum = (int)jnum(j, "grad_accum", 1);
    a->to.clip = jnum(j, "clip", 1);
    a->max_len = (int)jnum(j, "max_len", 0);
    a->to.seed = (uint64_t)jnum(j, "seed", 0);
    a->to.shuffle = json_is_true(json_object_get(j, "shuffle"));
    a->save_every = (int)jnum(j, "save_every", 0);
    a->keep = (int)jnum(j, "keep", 2);
    a->to.lora_rank = (int)jnum(j, "lora_rank", 0);
    a->to.lora_alpha = jnum(j, "lora_alpha", 16);
    a->output = dir;
    return -1;
}

/* ------------------------------------------------------------------ OUT_DIR */

/* The highest N of a complete OUT/checkpoint-N (-1: none); stale temporaries are removed. */
static int last_checkpoint(const char *out) {
    DIR *d = opendir(out);
    if (!d) return -1;
    int best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int n = -1, used = 0;
        if (sscanf(e->d_name, "checkpoint-%d%n", &n, &used) == 1 && (size_t)used == strlen(e->d_name) &&
            n > best) {
            char p[4096];
            pathf(p, sizeof p, "%s/%s/trainer_state.json", out, e->d_name);
            struct stat st;
            if (stat(p, &st) == 0) best = n;
        }
    }
    closedir(d);
    return best;
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4096];
        pathf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_dir(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Leftovers of a killed run: "*.tmp-PID" and "*.old-PID" directories. */
static void remove_stale(const char *out) {
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strstr(e->d_name, ".tmp-") || strstr(e->d_name, ".old-")) {
            char p[4096];
            pathf(p, sizeof p, "%s/%s", out, e->d_name);
            remove_dir(p);
        }
    }
    closedir(d);
}

/* Keep the newest `keep` checkpoints (0: all). */
static void prune(const char *out, int keep, int newest) {
    if (keep <= 0) return;
    DIR *d = opendir(out);
    if (!d) return;
    int *steps = NULL, n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int s = -1, used = 0;
        if (sscanf(e->d_name, "checkpoint-%d%n", &s, &used) == 1 && (size_t)used == strlen(e->d_name)) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                int *p = realloc(steps, (size_t)cap * sizeof *p);
                if (!p) break;
                steps = p;
            }
            steps[n++] = s;
        }
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int k = 0; k < n; k++) newer += steps[k] > steps[i];
        if (newer >= keep && steps[i] != newest) {
            char p[4096];
            snprintf(p, sizeof p, "%s/checkpoint-%06d", out, steps[i]);
            remove_dir(p);
        }
    }
    free(steps);
}

/* Write text to path through a temporary file and a rename. */
static bool write_atomic(const char *path, const char *text, size_t len) {
    char tmp[4096];
    pathf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return false;
    bool ok = fwrite(text, 1, len, f) == len;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return false;
    }
    return true;
}

static int write_losses(const char *out, const ks_trainer *t) {
    int n;
    const double *loss = ks_trainer_losses(t, &n), *lr = ks_trainer_lrs(t, NULL),
                 *gn = ks_trainer_grad_norms(t, NULL);
    size_t cap = 64 + (size_t)n * 96, len = 0;
    char *buf = malloc(cap);
    if (!buf) return cli_error(CMD, "out of memory");
    len += (size_t)snprintf(buf, cap, "step,epoch,loss,lr,grad_norm\n");
    int spe = ks_trainer_steps_per_epoch(t);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%d,%d,%.9g,%.9g,%.9g\n", i + 1, i / spe, loss[i],
                                lr[i], gn[i]);
    char path[4096];
    snprintf(path, sizeof path, "%s/losses.csv", out);
    bool ok = write_atomic(path, buf, len);
    free(buf);
    if (!ok) return cli_error(CMD, "%s: cannot write: %s", path, strerror(errno));
    /* the chart */
    double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (!x) return cli_error(CMD, "out of memory");
    for (int i = 0; i < n; i++) x[i] = i + 1;
    ks_plot_series s = {.label = "training loss", .x = x, .y = loss, .n = n, .markers = n <= 60};
    ks_plot_color(0, s.rgb);
    char sub[128];
    snprintf(sub, sizeof sub, "%d of %d steps, %d per epoch", n, ks_trainer_total_steps(t), spe);
    ks_plot p = {.title = "Fine-tuning loss", .subtitle = sub, .xlabel = "step",
                 .ylabel = "cross-entropy (nats / target token)", .ymin = NAN, .ymax = NAN,
                 .integer_x = true, .series = &s, .n_series = 1};
    static const char *const ext[] = {"png", "svg"};
    int rc = -1;
    for (int k = 0; k < 2 && n > 0; k++) {
        char tmp[4096];
        snprintf(path, sizeof path, "%s/loss.%s", out, ext[k]);
        snprintf(tmp, sizeof tmp, "%s/.loss-tmp-%ld.%s", out, (long)getpid(), ext[k]);
        ks_error err = {0};
        if (ks_plot_save(&p, tmp, 720, 420, &err) || rename(tmp, path) != 0) {
            unlink(tmp);
            rc = cli_error(CMD, "%s: %s", path, err.msg[0] ? err.msg : strerror(errno));
            break;
        }
    }
    free(x);
    return rc;
}

/* Move the model files of checkpoint dir ck up into out (each file replaced by a rename). */
static int publish_model(const char *out, const ks_trainer *t, const ks_checkpoint_options *co) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/.model.tmp-%ld", out, (long)getpid());
    ks_checkpoint_options o = *co;
    o.with_state = false;
    ks_error err = {0};
    if (ks_trainer_save(t, tmp, &o, &err)) return cli_error(CMD, "%s", err.msg);
    DIR *d = opendir(tmp);
    if (!d) return cli_error(CMD, "%s: %s", tmp, strerror(errno));
    struct dirent *e;
    int rc = -1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char from[4096], to[4096];
        pathf(from, sizeof from, "%s/%s", tmp, e->d_name);
        pathf(to, sizeof to, "%s/%s", out, e->d_name);
        if (rename(from, to) != 0) {
            rc = cli_error(CMD, "%s: cannot rename to %s: %s", from, to, strerror(errno));
            break;
        }
    }
    closedir(d);
    remove_dir(tmp);
    return rc;
}

/* ------------------------------------------------------------------ probe recording */

/* Prompts of --probe-prompts: one per non-blank line; a line starting with '{' is JSON with
 * "prompt" (or "text"). */
static int read_prompts(const char *path, char ***out, int *n_out) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_error(CMD, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t r;
    char **v = NULL;
    int n = 0, lineno = 0, rc = -1;
    while ((r = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (r > 0 && (line[r - 1] == '\n' || line[r - 1] == '\r')) line[--r] = '\0';
        if (r == 0) continue;
        char *text = NULL;
        if (line[0] == '{') {
            json_error_t je;
            json_t *j = json_loads(line, 0, &je);
            json_t *p = j ? json_object_get(j, "prompt") : NULL;
            if (!p && j) p = json_object_get(j, "text");
            if (!json_is_string(p)) {
                json_decref(j);
                rc = cli_error(CMD, "%s:%d: prompt: %s", path, lineno, j ? "missing or not a string" : je.text);
                break;
            }
            text = strdup(json_string_value(p));
            json_decref(j);
        } else {
            text = strdup(line);
        }
        char **nv = realloc(v, (size_t)(n + 1) * sizeof *v);
        if (!text || !nv) {
            free(text);
            rc = cli_error(CMD, "out of memory");
            break;
        }
        v = nv;
        v[n++] = text;
    }
    free(line);
    fclose(f);
    if (rc < 0 && n == 0) rc = cli_error(CMD, "%s: no prompts", path);
    if (rc >= 0) {
        for (int i = 0; i < n; i++) free(v[i]);
        free(v);
        return rc;
    }
    *out = v;
    *n_out = n;
    return -1;
}

static int record_probes(const args *a, ks_model *m, ks_chat_template tmpl, char **prompts, int n,
                         int step) {
    char dir[4096], path[4096];
    snprintf(dir, sizeof dir, "%s/dumps", a->output);
    mkdir(dir, 0755);
    pathf(path, sizeof path, "%s/step-%06d.h5", dir, step);
    ks_error err = {0};
    ks_session *s = NULL;
    ks_recorder *r = NULL;
    ks_session_options so = {.n_threads = a->threads};
    ks_record_options ro = {.hooks = a->hooks, .dtype = KS_DUMP_F32, .model_path = a->model,
                            .chat_template = a->template_name, .backend = "cpu",
                            .command_line = "koalascope finetune --record-hooks",
                            .prompts_source = a->probe_prompts, .n_prompts_planned = n};
    int rc = -1;
    if (ks_session_create(m, &so, &s, &err) || ks_recorder_create(path, m, &ro, true, &r, &err)) {
        rc = cli_error(CMD, "recording probes at step %d: %s", step, err.msg);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        int *ids = NULL, nid = 0;
        ks_chat_message msg = {"user", prompts[i]};
        if (ks_chat_encode(ks_model_tokenizer(m), tmpl, &msg, 1, &ids, &nid, &err) ||
            ks_recorder_record(r, s, ids, nid, nid, prompts[i], NULL, NULL, &err)) {
            free(ids);
            rc = cli_error(CMD, "recording probe prompt %d at step %d: %s", i + 1, step, err.msg);
            goto out;
        }
        free(ids);
    }
    if (ks_recorder_finish(r, &err)) rc = cli_error(CMD, "%s: %s", path, err.msg);
    r = NULL;
out:
    ks_recorder_free(r);
    ks_session_free(s);
    return rc;
}

/* ------------------------------------------------------------------ main */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_eta(double s, char *buf, size_t cap) {
    if (!isfinite(s) || s < 0) snprintf(buf, cap, "?");
    else if (s < 3600) snprintf(buf, cap, "%d:%02d", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%d:%02d:%02d", (int)s / 3600, ((int)s / 60) % 60, (int)s % 60);
}

static bool has_tokenizer_files(const char *dir) {
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    if (stat(p, &st) == 0) return true;
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    return stat(p, &st) == 0;
}

/* initializer_range of an HF config.json (HF's default 0.02 when absent). */
static double init_range(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_t *j = json_load_file(p, 0, NULL);
    double r = jnum(j, "initializer_range", 0.02);
    json_decref(j);
    return r;
}

int cmd_finetune(int argc, char **argv) {
    args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0) {
        free(a.data);
        return rc;
    }
    ks_model *m = NULL;
    ks_dataset *ds = NULL;
    ks_train_seq *seqs = NULL;
    int n_seqs = 0;
    ks_trainer *t = NULL;
    char *run = NULL;
    char **prompts = NULL;
    int n_prompts = 0;
    ks_error err = {0};
    int resume_step = -1;
    if (a.resume) {
        if (a.model || a.n_data || a.output) {
            rc = cli_usage(CMD, "--resume DIR takes the run's options from its checkpoint: give only "
                           "--threads and --quiet with it");
            goto out;
        }
        resume_step = last_checkpoint(a.resume);
        if (resume_step < 0) {
            rc = cli_error(CMD, "%s: no complete checkpoint to resume from (checkpoint-N/ with "
                           "trainer_state.json)", a.resume);
            goto out;
        }
        char ck[4096];
        snprintf(ck, sizeof ck, "%s/checkpoint-%06d", a.resume, resume_step);
        char *rj = NULL;
        if (ks_checkpoint_read_run(ck, &rj, NULL, &err)) {
            rc = cli_error(CMD, "%s", err.msg);
            goto out;
        }
        int threads = a.threads;
        bool quiet = a.quiet;
        rc = from_run(rj, a.resume, &a);
        free(rj);
        a.threads = threads;
        a.quiet = quiet;
        if (rc >= 0) goto out;
    }
    if ((rc = check_args(&a)) >= 0) goto out;
#ifdef _OPENMP
    if (a.threads > 0) omp_set_num_threads(a.threads);
#endif
#ifdef KS_HAVE_OPENBLAS
    if (a.threads > 0) openblas_set_num_threads(a.threads);
#endif
    ks_chat_template tmpl;
    ks_loss_on loss_on = !strcmp(a.loss_on, "all") ? KS_LOSS_ALL : KS_LOSS_ASSISTANT;
    ks_data_format fmt;
    if (ks_chat_template_parse(a.template_name, &tmpl, &err) || ks_data_format_parse(a.data_format, &fmt, &err)) {
        rc = cli_usage(CMD, "%s", err.msg);
        goto out;
    }
    if (a.probe_prompts && (rc = read_prompts(a.probe_prompts, &prompts, &n_prompts)) >= 0) goto out;

    /* the model, in f32 in memory: its parameters are updated in place */
    ks_model_options mo = {.tokenizer_path = a.tokenizer, .no_mmap = true, .f32_weights = true,
                           .no_weights = a.random_init};
    if (ks_model_open(a.model, &mo, &m, &err)) {
        rc = cli_error(CMD, "%s", err.msg);
        goto out;
    }
    if (a.random_init && ks_train_init_random(m, init_range(a.model), a.to.seed, &err)) {
        rc = cli_error(CMD, "%s", err.msg);
        goto out;
    }
    const ks_config *cfg = ks_model_config(m);
    if (a.max_len == 0) a.max_len = cfg->max_seq_len;

    /* the data */
    if (ks_dataset_create(&ds, &err)) {
        rc = cli_error(CMD, "%s", err.msg);
        goto out;
    }
    for (int i = 0; i < a.n_data; i++)
        if (ks_dataset_load(ds, a.data[i], fmt, &err)) {
            rc = cli_error(CMD, "%s", err.msg);
            goto out;
        }
    ks_train_data_stats ds_stats;
    if (ks_train_prepare(ds, ks_model_tokenizer(m), tmpl, loss_on, cfg->vocab_size, a.max_len, &seqs,
                         &n_seqs, &ds_stats, &err)) {
        rc = cli_error(CMD, "%s", err.msg);
        goto out;
    }
    int n_ex = ds_stats.examples, truncated = ds_stats.truncated, empty = ds_stats.dropped;
    int64_t n_tok = ds_stats.tokens, n_tgt = ds_stats.targets;
    if (n_seqs == 0) {
        rc = cli_error(CMD, "no sequence has a target token (%d examples; %d without an assistant "
                       "turn inside --max-len %d)", n_ex, empty, a.max_len);
        goto out;
    }
    if (!a.quiet) {
        fprintf(stderr, "data: %d sequences (%lld tokens, %lld targets) from %d file(s)", n_seqs,
                (long long)n_tok, (long long)n_tgt, a.n_data);
        if (truncated) fprintf(stderr, "; warning: %d truncated to --max-len %d", truncated, a.max_len);
        if (empty) fprintf(stderr, "; %d dropped: no target token", empty);
        fputc('\n', stderr);
    }
    a.to.backend = a.backend;
    if (ks_trainer_create(m, &a.to, seqs, n_seqs, &t, &err)) {
        rc = cli_error(CMD, "%s", err.msg);
        goto out;
    }
    if (mkdir(a.output, 0755) != 0 && errno != EEXIST) {
        rc = cli_error(CMD, "%s: cannot create: %s", a.output, strerror(errno));
        goto out;
    }
    remove_stale(a.output);
    if (!a.resume && last_checkpoint(a.output) >= 0) {
        rc = cli_error(CMD, "%s already holds checkpoints: continue with --resume %s, or choose "
                       "another -o", a.output, a.output);
        goto out;
    }
    if (a.resume) {
        char ck[4096];
        snprintf(ck, sizeof ck, "%s/checkpoint-%06d", a.output, resume_step);
        if (ks_trainer_restore(t, ck, &err)) {
            rc = cli_error(CMD, "%s", err.msg);
            goto out;
        }
        if (!a.quiet) fprintf(stderr, "resumed from %s (step %d of %d)\n", ck, resume_step, ks_trainer_total_steps(t));
    }
    run = run_json(&a);
    bool from_hf = false;
    {
        struct stat st;
        from_hf = stat(a.model, &st) == 0 && S_ISDIR(st.st_mode) && has_tokenizer_files(a.model);
    }
    ks_checkpoint_options co = {.bf16 = !strcmp(a.save_dtype, "bf16"),
                                .tokenizer_dir = from_hf ? a.model : NULL,
                                .template_name = ks_chat_template_name(tmpl), .run_json = run,
                                .with_state = true};
    int total = ks_trainer_total_steps(t);
    if (!a.quiet)
        fprintf(stderr, "training %s: %d steps (%d per epoch), %s, lr %g\n", a.model, total,
                ks_trainer_steps_per_epoch(t), a.to.lora_rank ? "LoRA" : "all parameters", a.to.lr);
    double t0 = now_s();
    int64_t tokens_run = 0;
    int first = ks_trainer_step_index(t);
    while (ks_trainer_step_index(t) < total) {
        ks_train_step_info info;
        if (ks_trainer_step(t, &info, &err)) {
            rc = cli_error(CMD, "step %d: %s", ks_trainer_step_index(t) + 1, err.msg);
            goto out;
        }
        tokens_run += info.tokens;
        double dt = now_s() - t0;
        int done = info.step - first;
        if (!a.quiet) {
            char eta[32];
            fmt_eta(dt / done * (total - info.step), eta, sizeof eta);
            fprintf(stderr, "\rstep %d/%d  loss %.4f  lr %.3g  |g| %.3g  %.0f tokens/s  ETA %s   ",
                    info.step, total, info.loss, info.lr, info.grad_norm,
                    dt > 0 ? tokens_run / dt : 0.0, eta);
            if (info.step == total) fputc('\n', stderr);
        }
        bool save = info.step == total || (a.save_every > 0 && info.step % a.save_every == 0);
        if (!save) continue;
        char ck[4096];
        snprintf(ck, sizeof ck, "%s/checkpoint-%06d", a.output, info.step);
        if (ks_trainer_save(t, ck, &co, &err)) {
            rc = cli_error(CMD, "%s", err.msg);
            goto out;
        }
        prune(a.output, a.keep, info.step);
        if ((rc = publish_model(a.output, t, &co)) >= 0 || (rc = write_losses(a.output, t)) >= 0) goto out;
        if (a.hooks && (rc = record_probes(&a, m, tmpl, prompts, n_prompts, info.step)) >= 0) goto out;
    }
    if (!a.quiet) {
        int n;
        const double *l = ks_trainer_losses(t, &n);
        fprintf(stderr, "done: loss %.4f -> %.4f; model in %s\n", n ? l[0] : NAN, n ? l[n - 1] : NAN, a.output);
    }
    rc = 0;
out:
    ks_train_seqs_free(seqs, n_seqs);
    for (int i = 0; i < n_prompts; i++) free(prompts[i]);
    free(prompts);
    free(run);
    ks_trainer_free(t);
    ks_dataset_free(ds);
    ks_model_close(m);
    free(a.data);
    json_decref(resumed_run);
    resumed_run = NULL;
    return rc < 0 ? 0 : rc;
}
