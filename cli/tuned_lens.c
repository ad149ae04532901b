/* tuned_lens.c — koalascope tuned-lens: train the tuned lens (probes/ks_tuned_lens.h) of a model
 * on prompts from a file or on text the model samples itself, write it as safetensors, and
 * report held-out KL(final ‖ logit lens) against KL(final ‖ tuned lens) per layer (stdout).
 * Progress on stderr. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <jansson.h>

#include "cli.h"
#include "ks_model.h"
#include "ks_tuned_lens.h"

static const char *help_tuned_lens =
    "Usage: koalascope tuned-lens MODEL (--prompts FILE | --generate N) -o LENS.safetensors [options]\n"
    "Train the tuned lens (Belrose et al. 2023): for each layer an affine translator\n"
    "h -> h + A h + b applied to blocks.L.hook_resid_post before the logit lens, fitted so the\n"
    "lens's next-token distribution matches the model's own output (mean KL(final || lens)).\n"
    "Starts at the logit lens (A = 0, b = 0); the last layer's translator stays zero. Prints\n"
    "progress on stderr and, at the end, held-out KL per layer: logit lens vs tuned lens.\n"
    "Use the lens with: koalascope lens DUMP --model MODEL --tuned LENS.safetensors\n\n"
    "Training text\n"
    "  --prompts FILE      as `koalascope record --prompts`: .jsonl with \"prompt\" or \"text\"\n"
    "                      (a string) or \"tokens\" (ids) per line; any other file: one prompt\n"
    "                      per line (BOS prepended unless --no-bos)\n"
    "  --generate N        instead: N sequences sampled from the model itself from BOS\n"
    "                      (temperature 1, sequence i with seed S + i)\n"
    "  --gen-len N         tokens per generated sequence (default 128)\n"
    "  --max-tokens T      use at most T tokens in all, training + held out (default 65536)\n"
    "  --holdout FRAC      fraction of the sequences held out for the report (default 0.1)\n"
    "  --no-bos            do not prepend BOS to text prompts\n"
    "Optimiser (Adam, linear warm-up over 10% of the steps, then linear decay to 0)\n"
    "  --steps N           steps (default 250)\n"
    "  --lr X              peak learning rate (default 0.002)\n"
    "  --batch N           tokens per step (default 256)\n"
    "  --seed S            generation, held-out split and minibatch order (default 1)\n"
    "Output and engine\n"
    "  -o, --output FILE   the lens (safetensors: layers.{l}.weight [D,D], layers.{l}.bias [D])\n"
    "  --tokenizer FILE    tokenizer for a llama2.c checkpoint\n"
    "  --threads N         worker threads (default: all cores)\n"
    "  --ctx N             longest sequence used (default: the model's context)\n";

enum { T_PROMPTS = 600, T_GEN, T_GENLEN, T_MAXTOK, T_HOLD, T_NOBOS, T_STEPS, T_LR, T_BATCH, T_SEED,
       T_TOK, T_THREADS, T_CTX, T_HELP };

#define usage(...) cli_usage("tuned-lens", __VA_ARGS__)
#define error(...) cli_error("tuned-lens", __VA_ARGS__)

typedef struct {
    int **seq;
    int *len;
    int n, cap;
} seq_list;

static void seqs_free(seq_list *s) {
    for (int i = 0; i < s->n; i++) free(s->seq[i]);
    free(s->seq);
    free(s->len);
    memset(s, 0, sizeof *s);
}

static bool seqs_push(seq_list *s, int *ids, int n) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        int **a = realloc(s->seq, (size_t)cap * sizeof *a);
        if (a) s->seq = a;
        int *b = realloc(s->len, (size_t)cap * sizeof *b);
        if (b) s->len = b;
        if (!a || !b) return false;
        s->cap = cap;
    }
    s->seq[s->n] = ids;
    s->len[s->n++] = n;
    return true;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

/* The prompts file, as cli/record.c reads it (without "messages": a lens is trained on text). */
static int read_prompts(const char *path, const ks_model *m, bool bos, int64_t max_tokens,
                        seq_list *out) {
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    const int vocab = ks_model_config(m)->vocab_size;
    bool jsonl = ends_with(path, ".jsonl") || ends_with(path, ".json");
    FILE *f = fopen(path, "rb");
    if (!f) return error("--prompts %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0;
    long line = 0;
    int64_t total = 0;
    int rc = 0;
    ks_error e = {0};
    ssize_t len;
    while (total < max_tokens && (len = getline(&buf, &cap, f)) >= 0) {
        line++;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = 0;
        if (strspn(buf, " \t") == (size_t)len) continue;
        if (memchr(buf, 0, (size_t)len)) {
            rc = error("%s line %ld: contains a NUL byte", path, line);
            break;
        }
        const char *text = buf;
        json_t *j = NULL;
        int *ids = NULL, n = 0;
        if (jsonl) {
            json_error_t je;
            j = json_loadb(buf, (size_t)len, JSON_REJECT_DUPLICATES, &je);
            json_t *jp = json_is_object(j) ? json_object_get(j, "prompt") : NULL;
            if (!jp && json_is_object(j)) jp = json_object_get(j, "text");
            json_t *jt = json_is_object(j) ? json_object_get(j, "tokens") : NULL;
            if (!json_is_object(j) || (jp != NULL) + (jt != NULL) != 1) {
                bool msgs = json_is_object(j) && json_object_get(j, "messages");
                json_decref(j);
                rc = error("%s line %ld: needs a JSON object with exactly one of \"prompt\" (or "
                           "\"text\") and \"tokens\"%s", path, line,
                           msgs ? " (\"messages\" are not supported by tuned-lens)" : "");
                break;
            }
            if (jt) {
                size_t k = json_is_array(jt) ? json_array_size(jt) : 0;
                ids = k ? malloc(k * sizeof *ids) : NULL;
                for (size_t i = 0; ids && i < k; i++) {
                    json_t *x = json_array_get(jt, i);
                    json_int_t id = json_is_integer(x) ? json_integer_value(x) : -1;
                    if (id < 0 || id >= vocab) {
                        free(ids);
                        ids = NULL;
                        rc = error("%s line %ld: \"tokens\"[%zu] is not a token id of this model "
                                   "(0..%d)", path, line, i, vocab - 1);
                        break;
                    }
                    ids[i] = (int)id;
                }
                if (!ids && !rc) rc = error("%s line %ld: \"tokens\" must be a non-empty array of "
                                            "token ids", path, line);
                json_decref(j);
                if (rc) break;
                n = (int)k;
                text = NULL;
            } else if (!json_is_string(jp)) {
                json_decref(j);
                rc = error("%s line %ld: \"prompt\" must be a string", path, line);
                break;
            } else {
                text = json_string_value(jp);
            }
        }
        if (text) {
            if (!tok) {
                json_decref(j);
                rc = error("%s: text prompts need a tokenizer (give --tokenizer FILE)", path);
                break;
            }
            if (ks_tokenizer_encode(tok, text, strlen(text), bos, &ids, &n, &e)) {
                json_decref(j);
                rc = error("%s line %ld: %s", path, line, e.msg);
                break;
            }
            json_decref(j);
        }
        if (n < 1) {
            free(ids);
            continue;
        }
        if (!seqs_push(out, ids, n)) {
            free(ids);
            rc = error("%s", "out of memory");
            break;
        }
        total += n;
    }
    if (!rc && ferror(f)) rc = error("%s: read error", path);
    free(buf);
    fclose(f);
    return rc;
}

static int generate(const ks_model *m, int n_seq, int gen_len, uint64_t seed, int threads,
                    int ctx, seq_list *out) {
    const ks_config *c = ks_model_config(m);
    if (c->bos_id < 0) return error("%s", "--generate: the model has no BOS token to start from");
    ks_error e = {0};
    ks_session *s = NULL;
    ks_session_options so = {.n_threads = threads, .max_seq_len = ctx};
    if (ks_session_create(m, &so, &s, &e)) return error("%s", e.msg);
    if (gen_len > ks_session_max_seq(s) - 1) gen_len = ks_session_max_seq(s) - 1;
    int rc = 0, bos = c->bos_id;
    for (int i = 0; i < n_seq && !rc; i++) {
        ks_generate_params gp = {.max_new_tokens = gen_len,
                                 .sampling = {.temperature = 1.0f, .top_p = 1.0f, .seed = seed + i},
                                 .stop_at_eos = true};
        int *ids = NULL, n = 0;
        ks_session_reset(s);
        if (ks_generate(s, &bos, 1, &gp, NULL, NULL, &ids, &n, NULL, &e)) {
            rc = error("--generate: %s", e.msg);
            break;
        }
        int *seq = malloc((size_t)(n + 1) * sizeof *seq);
        if (!seq || !seqs_push(out, seq, n + 1)) {
            free(seq);
            free(ids);
            rc = error("%s", "out of memory");
            break;
        }
        seq[0] = bos;
        if (n) memcpy(seq + 1, ids, (size_t)n * sizeof *ids);
        free(ids);
        if ((i + 1) % 16 == 0 || i + 1 == n_seq)
            fprintf(stderr, "[tuned-lens] generated %d/%d sequences\n", i + 1, n_seq);
    }
    ks_session_free(s);
    return rc;
}

static void progress(int step, int steps, double kl, void *user) {
    (void)user;
    if (step % 50 == 0 || step == steps || step == 10)
        fprintf(stderr, "[tuned-lens] step %d/%d  train KL (mean over layers) %.4f nats\n", step,
                steps, kl);
}

static bool parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

int cmd_tuned_lens(int argc, char **argv) {
    static const struct option opts[] = {
        {"prompts", required_argument, 0, T_PROMPTS}, {"generate", required_argument, 0, T_GEN},
        {"gen-len", required_argument, 0, T_GENLEN},  {"max-tokens", required_argument, 0, T_MAXTOK},
        {"holdout", required_argument, 0, T_HOLD},    {"no-bos", no_argument, 0, T_NOBOS},
        {"steps", required_argument, 0, T_STEPS},     {"lr", required_argument, 0, T_LR},
        {"batch", required_argument, 0, T_BATCH},     {"seed", required_argument, 0, T_SEED},
        {"output", required_argument, 0, 'o'},        {"tokenizer", required_argument, 0, T_TOK},
        {"threads", required_argument, 0, T_THREADS}, {"ctx", required_argument, 0, T_CTX},
        {"help", no_argument, 0, T_HELP},             {0, 0, 0, 0}};
    const char *prompts = NULL, *output = NULL, *tokp = NULL;
    long n_gen = 0, gen_len = 128, max_tokens = 65536, steps = 250, batch = 256, threads = 0,
         ctx = 0;
    double holdout = 0.1, lr = 2e-3;
    unsigned long long seed = 1;
    bool bos = true;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case T_PROMPTS: prompts = optarg; break;
        case T_GEN:
            if (!cli_parse_int(optarg, 1, 1 << 20, &n_gen)) return usage("--generate: '%s' is not a count 1..%d", optarg, 1 << 20);
            break;
        case T_GENLEN:
            if (!cli_parse_int(optarg, 1, 1 << 20, &gen_len)) return usage("--gen-len: '%s' is not a count", optarg);
            break;
        case T_MAXTOK:
            if (!cli_parse_int(optarg, 2, 1L << 40, &max_tokens)) return usage("--max-tokens: '%s' is not a count >= 2", optarg);
            break;
        case T_HOLD:
            if (!parse_double(optarg, 0.0, 0.9, &holdout)) return usage("--holdout: '%s' is not a fraction in [0, 0.9]", optarg);
            break;
        case T_NOBOS: bos = false; break;
        case T_STEPS:
            if (!cli_parse_int(optarg, 1, 1 << 24, &steps)) return usage("--steps: '%s' is not a count", optarg);
            break;
        case T_LR:
            if (!parse_double(optarg, 1e-12, 10.0, &lr)) return usage("--lr: '%s' is not a learning rate in (0, 10]", optarg);
            break;
        case T_BATCH:
            if (!cli_parse_int(optarg, 1, 1 << 16, &batch)) return usage("--batch: '%s' is not a count 1..65536", optarg);
            break;
        case T_SEED: {
            char *end;
            errno = 0;
            seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || *optarg == '-') return usage("--seed: '%s' is not an unsigned integer", optarg);
            break;
        }
        case 'o': output = optarg; break;
        case T_TOK: tokp = optarg; break;
        case T_THREADS:
            if (!cli_parse_int(optarg, 1, 1024, &threads)) return usage("--threads: '%s' is not a count 1..1024", optarg);
            break;
        case T_CTX:
            if (!cli_parse_int(optarg, 2, 1 << 24, &ctx)) return usage("--ctx: '%s' is not a length", optarg);
            break;
        case T_HELP: fputs(help_tuned_lens, stdout); return 0;
        default: return usage("unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage("%s", "no MODEL given");
    const char *model = argv[optind++];
    if (optind < argc) return usage("unexpected argument '%s'", argv[optind]);
    if (!prompts == !n_gen) return usage("%s", "give exactly one of --prompts FILE and --generate N");
    if (!output) return usage("%s", "no -o LENS.safetensors given");

    ks_model *m = NULL;
    ks_tuned_lens *tl = NULL;
    ks_lens_data *dtr = NULL, *dho = NULL;
    seq_list seqs = {0};
    const int **tr = NULL, **ho = NULL;
    int *trl = NULL, *hol = NULL;
    double *kl0 = NULL, *kl1 = NULL;
    ks_error e = {0};
    int rc = EXIT_USAGE;
    ks_model_options mo = {.tokenizer_path = tokp};
    if (ks_model_open(model, &mo, &m, &e)) {
        error("%s", e.msg);
        goto out;
    }
    const ks_config *mc = ks_model_config(m);
    const int L = mc->n_layers;
    ks_tuned_lens_identity id;
    if (ks_tuned_lens_model_identity(m, &id, &e) || ks_tuned_lens_create(&id, &tl, &e)) {
        error("%s", e.msg);
        goto out;
    }
    if (prompts ? read_prompts(prompts, m, bos, max_tokens, &seqs)
                : generate(m, (int)n_gen, (int)gen_len, seed, (int)threads, (int)ctx, &seqs))
        goto out;
    if (seqs.n < (holdout > 0 ? 2 : 1)) {
        error("%s: %d sequence%s: need at least %d (one to train on%s)", prompts ? prompts : "--generate",
              seqs.n, seqs.n == 1 ? "" : "s", holdout > 0 ? 2 : 1, holdout > 0 ? ", one held out" : "");
        goto out;
    }
    /* the held-out sequences: a seeded draw, at least one when --holdout > 0 */
    int n_ho = holdout > 0 ? (int)lround(holdout * seqs.n) : 0;
    if (holdout > 0 && n_ho < 1) n_ho = 1;
    if (n_ho >= seqs.n) n_ho = seqs.n - 1;
    char *is_ho = calloc((size_t)seqs.n, 1);
    tr = malloc((size_t)seqs.n * sizeof *tr);
    ho = malloc((size_t)seqs.n * sizeof *ho);
    trl = malloc((size_t)seqs.n * sizeof *trl);
    hol = malloc((size_t)seqs.n * sizeof *hol);
    kl0 = calloc((size_t)L, sizeof *kl0);
    kl1 = calloc((size_t)L, sizeof *kl1);
    if (!is_ho || !tr || !ho || !trl || !hol || !kl0 || !kl1) {
        free(is_ho);
        error("%s", "out of memory");
        goto out;
    }
    uint64_t r = seed ^ 0x5DEECE66Dull;
    for (int k = 0; k < n_ho;) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int i = (int)((r >> 33) % (uint64_t)seqs.n);
        if (!is_ho[i]) is_ho[i] = 1, k++;
    }
    int ntr = 0, nho = 0;
    for (int i = 0; i < seqs.n; i++) {
        if (is_ho[i]) ho[nho] = seqs.seq[i], hol[nho++] = seqs.len[i];
        else tr[ntr] = seqs.seq[i], trl[ntr++] = seqs.len[i];
    }
    free(is_ho);
    ks_session_options so = {.n_threads = (int)threads, .max_seq_len = (int)ctx};
    /* --max-tokens counts both: the held-out rows first, the training rows take the rest */
    if ((nho && ks_lens_data_collect(m, ho, hol, nho, max_tokens - 1, &so, &dho, &e)) ||
        ks_lens_data_collect(m, tr, trl, ntr, max_tokens - (dho ? ks_lens_data_rows(dho) : 0), &so,
                             &dtr, &e)) {
        error("%s", e.msg);
        goto out;
    }
    fprintf(stderr, "[tuned-lens] %s: %d layers, d_model %d, vocab %d; training on %d sequences "
            "(%lld tokens), %d held out (%lld tokens)\n", model, L, mc->dim, mc->vocab_size, ntr,
            (long long)ks_lens_data_rows(dtr), nho, dho ? (long long)ks_lens_data_rows(dho) : 0LL);
    ks_tuned_lens_train_options to = {.steps = (int)steps, .lr = (float)lr, .batch_rows = (int)batch,
                                      .seed = seed, .progress = progress};
    if (ks_tuned_lens_train(tl, m, dtr, &to, &e)) {
        error("%s", e.msg);
        goto out;
    }
    char src[600];
    if (prompts) snprintf(src, sizeof src, "prompts %s", prompts);
    else snprintf(src, sizeof src, "generated %ld sequences of up to %ld tokens, temperature 1, "
                  "seed %llu", n_gen, gen_len, seed);
    ks_tuned_lens_provenance pv = {.steps = (int)steps, .lr = (float)lr, .seed = seed,
                                   .train_rows = ks_lens_data_rows(dtr), .data_source = src};
    if (ks_tuned_lens_save(tl, &pv, output, &e)) {
        error("%s", e.msg);
        goto out;
    }
    fprintf(stderr, "[tuned-lens] wrote %s\n", output);
    const ks_lens_data *ev = dho ? dho : dtr;
    if (ks_tuned_lens_eval(tl, m, ev, kl0, kl1, &e)) {
        error("%s", e.msg);
        goto out;
    }
    printf("# KL(final || lens) in nats, mean over %lld %s tokens\n",
           (long long)ks_lens_data_rows(ev), dho ? "held-out" : "training (no --holdout)");
    printf("layer\tkl_logit_lens\tkl_tuned_lens\n");
    for (int l = 0; l < L; l++) printf("%d\t%.4f\t%.4f\n", l, kl0[l], kl1[l]);
    rc = 0;
out:
    free(tr);
    free(ho);
    free(trl);
    free(hol);
    free(kl0);
    free(kl1);
    ks_lens_data_free(dtr);
    ks_lens_data_free(dho);
    seqs_free(&seqs);
    ks_tuned_lens_free(tl);
    ks_model_close(m);
    return rc;
}
