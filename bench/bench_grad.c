/* bench_grad.c — memory and time of the backward pass (model/backward.c) against the
 * forward alone, on a random f32 model at a real shape (bench_model.c).
 *
 * Each mode runs in its own child process, so its peak resident set (ru_maxrss, from wait4) is
 * its own: the model's weights plus what the mode allocates.
 *   forward   ks_session_forward over T tokens (the engine's inference path)
 *   attr      ks_grad forward + backward, parameter gradients off (attribution)
 *   train     ks_grad forward + backward, parameter gradients on
 * Printed: peak RSS, RSS above the forward-only run, time of one pass, ratios to forward.
 *
 * Usage: bench_grad [--shape 110m|1b] [--tokens T] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_model.h"
#include "model_private.h"

static const bench_shape shapes[] = {
    {"110m", 768, 2048, 12, 12, 12, 32000},
    {"1b", 2048, 5632, 22, 32, 4, 32000},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* the child: build the model, run the mode twice (the second timed), write seconds to fd */
static int child(const bench_shape *sh, int mode, int T, int fd) {
    ks_model *m = bench_random_model(sh->dim, sh->hidden, sh->layers, sh->heads, sh->kv_heads,
                                     sh->vocab);
    if (!m) return 2;
    int *tok = malloc((size_t)T * sizeof(int));
    float *lg = malloc((size_t)T * sh->vocab * sizeof(float));
    if (!tok || !lg) return 2;
    for (int t = 0; t < T; t++) tok[t] = 1 + (t * 7919) % (sh->vocab - 1);
    ks_error err = {0};
    double sec = -1.0;
    if (mode == 0) {
        ks_session *s = NULL;
        ks_session_options o = {.max_seq_len = T, .max_batch = T};
        if (ks_session_create(m, &o, &s, &err)) return 3;
        for (int r = 0; r < 2; r++) {
            ks_session_reset(s);
            double t0 = now();
            if (ks_session_forward(s, tok, T, KS_LOGITS_ALL, lg, &err)) return 3;
            sec = now() - t0;
        }
        ks_session_free(s);
    } else {
        ks_grad *g = NULL;
        ks_grad_options o = {.param_grads = mode == 2};
        if (ks_grad_create(m, &o, &g, &err)) return 3;
        for (int r = 0; r < 2; r++) {
            double t0 = now();
            if (ks_grad_forward(g, tok, T, &err)) return 3;
            int V = 0;
            const float *l = ks_grad_logits(g, NULL, &V);
            int *tg = malloc((size_t)T * sizeof(int));
            if (!tg) return 2;
            for (int t = 0; t < T; t++) tg[t] = t + 1 < T ? tok[t + 1] : -1;
            ks_objective_logprob(l, T, V, tg, lg);
            free(tg);
            if (ks_grad_backward(g, lg, &err)) return 3;
            sec = now() - t0;
        }
        ks_grad_free(g);
    }
    if (write(fd, &sec, sizeof sec) != sizeof sec) return 4;
    return 0;
}

int main(int argc, char **argv) {
    const char *which = "110m";
    int T = 256;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--shape 110m|1b] [--tokens T]\n", argv[0]);
            return 2;
        }
    }
    const bench_shape *sh = NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(shapes[i].name, which)) sh = &shapes[i];
    if (!sh || T < 2) {
        fprintf(stderr, "bench_grad: unknown shape '%s' or tokens < 2\n", which);
        return 2;
    }
    static const char *const names[3] = {"forward", "attr (no param grads)", "train (param grads)"};
    double rss[3] = {0}, sec[3] = {0};
    printf("bench_grad: shape %s (d_model %d, %d layers, d_mlp %d, vocab %d), f32, %d tokens\n",
           sh->name, sh->dim, sh->layers, sh->hidden, sh->vocab, T);
    for (int mode = 0; mode < 3; mode++) {
        int p[2];
        if (pipe(p)) return 2;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            _exit(child(sh, mode, T, p[1]));
        }
        close(p[1]);
        int status = 0;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) ||
            read(p[0], &sec[mode], sizeof sec[mode]) != sizeof sec[mode]) {
            fprintf(stderr, "bench_grad: mode %s failed (status %d)\n", names[mode], status);
            return 1;
        }
        close(p[0]);
        rss[mode] = ru.ru_maxrss / 1024.0; /* KiB -> MiB */
        printf("%-24s peak RSS %8.1f MiB (+%7.1f over forward)  one pass %8.3f s  x%.2f time, "
               "x%.2f memory\n", names[mode], rss[mode], rss[mode] - rss[0], sec[mode],
               sec[mode] / sec[0], rss[mode] / rss[0]);
    }
    return 0;
}
