/* bench_diff.c — koalascope diff's cost per prompt against its baseline measured in the same run:
 * two plain forwards (base and tuned, ks_session_forward with every row's logits, no hook) of
 * the same prompts. Three ways of diffing are timed, interleaved with the baseline in each
 * repetition:
 *   measures:  ks_diff_run (CKA on all three streams, cosines, JS/TV, lens, final KL);
 *   resid CKA: the same with CKA on resid_post only (--cka resid);
 *   + dumps:   what `koalascope diff` does: both forwards recorded into base.h5/tuned.h5
 *              (blocks.*.hook_resid_post,blocks.*.attn.hook_pattern, top-k 10) with the measures
 *              reading the same forwards through the recorder's tap.
 * Models are random-initialised at real shapes (bench_model.c); prompts are token ids with a
 * fixed seed. Nothing is asserted; the ratios go to docs/PERFORMANCE.md.
 *
 * Usage: bench_diff [--quick] [--threads N] [--reps N] [--prompts N] [--len T] [--dir DIR] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_model.h"
#include "ks_diff.h"
#include "ks_dump.h"

typedef struct {
    const char *name;
    int dim, hidden, layers, heads, kv, vocab;
} shape;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const ks_error *e) {
    fprintf(stderr, "bench_diff: %s: %s\n", what, e->msg);
    exit(1);
}

int main(int argc, char **argv) {
    int threads = 2, reps = 3, n_prompts = 8, len = 64;
    bool quick = false;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--prompts") && i + 1 < argc) n_prompts = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--len") && i + 1 < argc) len = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_diff [--quick] [--threads N] [--reps N] [--prompts N] [--len T] [--dir DIR]\n");
            return 1;
        }
    }
    static const shape shapes[] = {
        {"stories260K", 64, 172, 5, 8, 4, 512},
        {"stories15M body, vocab 512", 288, 768, 6, 6, 6, 512},
        {"stories110M", 768, 2048, 12, 12, 12, 32000},
    };
    int n_shapes = quick ? 2 : 3;
    printf("bench_diff: %d prompts x %d tokens, %d threads, best of %d; per prompt, ratio to two plain forwards\n",
           n_prompts, len, threads, reps);
    printf("%-28s %12s %12s %8s %12s %8s %12s %8s\n", "model", "2 fwd ms", "measures ms", "ratio",
           "resid-CKA ms", "ratio", "+dumps ms", "ratio");
    for (int si = 0; si < n_shapes; si++) {
        const shape *sh = &shapes[si];
        ks_model *a = bench_random_model(sh->dim, sh->hidden, sh->layers, sh->heads, sh->kv, sh->vocab);
        ks_model *b = bench_random_model(sh->dim, sh->hidden, sh->layers, sh->heads, sh->kv, sh->vocab);
        if (!a || !b) {
            fprintf(stderr, "bench_diff: out of memory building %s\n", sh->name);
            return 1;
        }
        ks_error e = {0};
        ks_session *sa = NULL, *sb = NULL;
        ks_session_options so = {.n_threads = threads, .max_seq_len = len};
        if (ks_session_create(a, &so, &sa, &e) || ks_session_create(b, &so, &sb, &e)) die("session", &e);
        int *tok = malloc((size_t)n_prompts * len * sizeof(int));
        float *logits = malloc((size_t)len * sh->vocab * sizeof(float));
        uint64_t x = 88172645463325252ull;
        for (int i = 0; i < n_prompts * len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            tok[i] = (int)(x % (uint64_t)sh->vocab);
        }
        ks_diff_options resid = {.cka_off = {false, true, true}};
        double best[4] = {1e30, 1e30, 1e30, 1e30};
        for (int r = 0; r < reps; r++) {
            /* baseline */
            double t0 = now();
            for (int p = 0; p < n_prompts; p++) {
                ks_session_reset(sa);
                ks_session_reset(sb);
                if (ks_session_forward(sa, tok + p * len, len, KS_LOGITS_ALL, logits, &e) ||
                    ks_session_forward(sb, tok + p * len, len, KS_LOGITS_ALL, logits, &e))
                    die("forward", &e);
            }
            double t = (now() - t0) / n_prompts;
            if (t < best[0]) best[0] = t;
            for (int k = 0; k < 2; k++) {
                ks_diff *d = NULL;
                if (ks_diff_create(a, b, k ? &resid : NULL, &d, &e)) die("diff", &e);
                t0 = now();
                for (int p = 0; p < n_prompts; p++)
                    if (ks_diff_run(d, sa, sb, tok + p * len, len, NULL, &e)) die("diff run", &e);
                t = (now() - t0) / n_prompts;
                if (t < best[1 + k]) best[1 + k] = t;
                ks_diff_free(d);
            }
            /* with the two dumps, as the command does */
            char pa[4096], pb[4096];
            snprintf(pa, sizeof pa, "%s/bench_diff_base_%d.h5", dir, (int)getpid());
            snprintf(pb, sizeof pb, "%s/bench_diff_tuned_%d.h5", dir, (int)getpid());
            ks_record_options ro = {.hooks = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
                                    .logits_topk = 10, .flush_seconds = 2.0, .n_prompts_planned = n_prompts,
                                    .expected_tokens = (int64_t)n_prompts * len,
                                    .expected_attn = (int64_t)n_prompts * len * (len + 1) / 2,
                                    .sampling = {.top_p = 1.0f}};
            ks_recorder *ra = NULL, *rb = NULL;
            ks_diff *d = NULL;
            if (ks_diff_create(a, b, NULL, &d, &e) || ks_recorder_create(pa, a, &ro, true, &ra, &e) ||
                ks_recorder_create(pb, b, &ro, true, &rb, &e))
                die("recorders", &e);
            ks_recorder_set_tap(ra, ks_diff_hook_base, d);
            ks_recorder_set_tap(rb, ks_diff_hook_tuned, d);
            t0 = now();
            for (int p = 0; p < n_prompts; p++)
                if (ks_diff_begin(d, len, &e) ||
                    ks_recorder_record(ra, sa, tok + p * len, len, len, NULL, NULL, NULL, &e) ||
                    ks_recorder_record(rb, sb, tok + p * len, len, len, NULL, NULL, NULL, &e) ||
                    ks_diff_end(d, NULL, &e))
                    die("record", &e);
            if (ks_recorder_finish(ra, &e) || ks_recorder_finish(rb, &e)) die("finish", &e);
            t = (now() - t0) / n_prompts;
            if (t < best[3]) best[3] = t;
            ks_recorder_free(ra);
            ks_recorder_free(rb);
            ks_diff_free(d);
            unlink(pa);
            unlink(pb);
        }
        printf("%-28s %12.2f %12.2f %8.2f %12.2f %8.2f %12.2f %8.2f\n", sh->name, best[0] * 1e3,
               best[1] * 1e3, best[1] / best[0], best[2] * 1e3, best[2] / best[0], best[3] * 1e3,
               best[3] / best[0]);
        fflush(stdout);
        free(tok);
        free(logits);
        ks_session_free(sa);
        ks_session_free(sb);
        ks_model_close(a);
        ks_model_close(b);
    }
    return 0;
}
