/* bench_view_dump.c — writes the large dump that bench/bench_view.sh opens in the viewer: a
 * random-initialised model at the stories260K shape (5 layers, 8 heads, d_model 64, vocab
 * 512) with a 2,048-token context, and N prompts of 2,048 synthetic token ids, recording
 * every layer's attention pattern and residual stream with the top-10 next tokens. One
 * prompt's patterns are 5 × 8 × 2,048 · 2,049 / 2 floats (336 MB), so 12 prompts make a
 * dump of about 4 GB.
 *
 * Usage: bench_view_dump OUT.h5 [PROMPTS] [TOKENS]   (default 12 prompts of 2048 tokens) */
#include <stdio.h>
#include <stdlib.h>

#include "bench_model.h"
#include "ks_dump.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_view_dump OUT.h5 [PROMPTS] [TOKENS]\n");
        return 1;
    }
    int n_prompts = argc > 2 ? atoi(argv[2]) : 12;
    int n_tok = argc > 3 ? atoi(argv[3]) : 2048;
    if (n_prompts < 1 || n_tok < 2 || n_tok > 2048) {
        fprintf(stderr, "bench_view_dump: PROMPTS >= 1 and TOKENS in 2..2048\n");
        return 1;
    }
    ks_model *m = bench_random_model(64, 172, 5, 8, 4, 512);
    if (!m) {
        fprintf(stderr, "bench_view_dump: out of memory\n");
        return 1;
    }
    ks_error err = {0};
    ks_session *s = NULL;
    ks_session_options so = {.max_seq_len = n_tok};
    if (ks_session_create(m, &so, &s, &err)) {
        fprintf(stderr, "bench_view_dump: %s\n", err.msg);
        return 1;
    }
    ks_record_options ro = {.hooks = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
                            .logits_topk = 10,
                            .flush_seconds = 5.0,
                            .no_fsync = true,
                            .command_line = "bench_view_dump",
                            .prompts_source = "synthetic",
                            .n_prompts_planned = n_prompts,
                            .expected_tokens = (int64_t)n_prompts * n_tok,
                            .expected_attn = (int64_t)n_prompts * n_tok * (n_tok + 1) / 2};
    ks_recorder *r = NULL;
    if (ks_recorder_create(argv[1], m, &ro, true, &r, &err)) {
        fprintf(stderr, "bench_view_dump: %s\n", err.msg);
        return 1;
    }
    int *ids = malloc(sizeof *ids * (size_t)n_tok);
    uint64_t x = 88172645463325252ull;
    for (int p = 0; p < n_prompts; p++) {
        ids[0] = 1;
        for (int t = 1; t < n_tok; t++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64: fixed synthetic ids */
            ids[t] = 3 + (int)(x % 509);
        }
        if (ks_recorder_record(r, s, ids, n_tok, n_tok, NULL, NULL, NULL, &err)) {
            fprintf(stderr, "bench_view_dump: prompt %d: %s\n", p, err.msg);
            ks_recorder_free(r);
            return 1;
        }
        fprintf(stderr, "\rbench_view_dump: %d/%d prompts", p + 1, n_prompts);
    }
    fputc('\n', stderr);
    ks_status st = ks_recorder_finish(r, &err);
    ks_recorder_free(r);
    if (st) {
        fprintf(stderr, "bench_view_dump: %s\n", err.msg);
        return 1;
    }
    free(ids);
    ks_session_free(s);
    ks_model_close(m);
    return 0;
}
