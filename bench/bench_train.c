/* bench_train.c — training throughput of train/ (one optimizer step = forward + backward +
 * clip + AdamW over batch sequences) against the plain forward's throughput in the same run,
 * on stories260K (the shared data) and on a random f32 model at the 110M shape
 * (bench_model.c). Tokens/s = tokens run through the model per second.
 *
 * Usage: bench_train [--tokens T] [--steps N] [--stories PATH/stories260K.bin TOK.bin]
 *                    [--no-110m] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_model.h"
#include "ks_train.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Forward tokens/s (second of two runs) and training tokens/s over `steps` steps of one
 * T-token sequence each. */
static int measure(const char *label, ks_model *m, int T, int steps) {
    const ks_config *c = ks_model_config(m);
    ks_error err = {0};
    int *tok = malloc((size_t)T * sizeof(int));
    uint8_t *mask = malloc((size_t)T);
    float *lg = malloc((size_t)T * c->vocab_size * sizeof(float));
    if (!tok || !mask || !lg) return 2;
    for (int t = 0; t < T; t++) {
        tok[t] = 3 + (t * 7919) % (c->vocab_size - 3);
        mask[t] = t > 0;
    }
    ks_session *s = NULL;
    ks_session_options so = {.max_seq_len = T, .max_batch = T};
    if (ks_session_create(m, &so, &s, &err)) return fprintf(stderr, "%s\n", err.msg), 3;
    double fwd = 0;
    for (int r = 0; r < 2; r++) {
        ks_session_reset(s);
        double t0 = now();
        if (ks_session_forward(s, tok, T, KS_LOGITS_ALL, lg, &err)) return 3;
        fwd = now() - t0;
    }
    ks_session_free(s);
    ks_train_seq seq = {tok, mask, T};
    ks_train_options o;
    ks_train_options_default(&o);
    o.steps = steps + 1, o.lr = 1e-5;
    ks_trainer *tr = NULL;
    if (ks_trainer_create(m, &o, &seq, 1, &tr, &err)) return fprintf(stderr, "%s\n", err.msg), 3;
    ks_train_step_info info;
    if (ks_trainer_step(tr, &info, &err)) return 3; /* warm-up step */
    double t0 = now();
    for (int i = 0; i < steps; i++)
        if (ks_trainer_step(tr, &info, &err)) return fprintf(stderr, "%s\n", err.msg), 3;
    double train = (now() - t0) / steps;
    ks_trainer_free(tr);
    printf("%-12s %6d tokens  forward %9.0f tokens/s  training %9.0f tokens/s  ratio %.3f "
           "(%.1f ms per step)\n", label, T, T / fwd, T / train, fwd / train, train * 1e3);
    free(tok);
    free(mask);
    free(lg);
    return 0;
}

int main(int argc, char **argv) {
    int T = 256, steps = 5;
    const char *bin = NULL, *tokp = NULL;
    int do_110m = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--stories") && i + 2 < argc) bin = argv[++i], tokp = argv[++i];
        else if (!strcmp(argv[i], "--no-110m")) do_110m = 0;
        else {
            fprintf(stderr, "usage: %s [--tokens T] [--steps N] [--stories BIN TOK] [--no-110m]\n", argv[0]);
            return 1;
        }
    }
    if (T < 2 || steps < 1) return 1;
    printf("bench_train: f32 on the CPU, batch 1, one sequence of %d tokens per step, %d timed steps\n", T, steps);
    if (bin) {
        ks_model *m = NULL;
        ks_error err = {0};
        ks_model_options mo = {.tokenizer_path = tokp, .no_mmap = true, .f32_weights = true};
        if (ks_model_open(bin, &mo, &m, &err)) return fprintf(stderr, "%s\n", err.msg), 2;
        int rc = measure("stories260K", m, T, steps);
        ks_model_close(m);
        if (rc) return rc;
    }
    if (do_110m) {
        ks_model *m = bench_random_model(768, 2048, 12, 12, 12, 32000);
        if (!m) return 2;
        int rc = measure("110m random", m, T, steps);
        ks_model_close(m);
        if (rc) return rc;
    }
    return 0;
}
