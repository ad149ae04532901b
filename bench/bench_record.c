/* bench_record.c — the recorder (activations/) against limits measured in the same run:
 *
 *   memory: peak RSS of recording 2,000 prompts over that of recording 20 (each run in its
 *           own child process, which builds the model itself, so the parent's memory is not
 *           counted). Hooks blocks.*.hook_resid_post,blocks.*.attn.hook_pattern, top-k 10.
 *           Target <= 1.10.
 *   speed:  time per token of recording every layer's residual stream (hook_resid_post, top-k
 *           0) over that of the plain forward (ks_session_forward, KS_LOGITS_NONE, no hook) on
 *           the same prompts, interleaved repetitions. Target <= 1.25. Top-k 10 and attention
 *           patterns are shown as well (informative).
 *   write:  bytes of the dump file per second over the disk's own sequential write speed
 *           (a file of the same size, large write() calls, fsync, same directory), on a
 *           workload bound by writing: a tiny model with every hook point ('*'). Target >= 0.7.
 *           Every compression and dtype f32/f16 is shown, with the size against uncompressed.
 * Nothing here is asserted; the figures go to docs/PERFORMANCE.md.
 *
 * Models are random-initialised at real shapes (as bench_forward), or --model PATH for a real
 * checkpoint (used by every part). Prompts are synthetic token ids with a fixed seed. Dumps are
 * written to --dir (default $TMPDIR or /tmp) and removed afterwards.
 *
 *   writer: the same file/disk ratio with the writer alone: hook tensors captured once from the
 *           model and replayed into the recorder (no forward while recording), so the figure
 *           is the writer's and not the model's.
 * Usage: bench_record [--quick] [--part memory|speed|write|writer|all] [--dir DIR] [--model PATH]
 *                     [--tokenizer PATH] [--threads N] [--buffer-mb N] [--reps N]
 *                     [--mem-prompts A,B] [--speed-prompts N] [--write-mb N]
 *                     [--write-only COMPRESSION/DTYPE] [--write-len LO-HI] [--mem-run N,EXPECT]
 * --write-only runs one write configuration (e.g. none/f32), for profiling. --mem-run runs one
 * memory run of N prompts (chunk shapes for EXPECT) in this process, for heap profilers that do
 * not follow fork (heaptrack build/bench/bench_record --mem-run 2000,2000). */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ks_dump.h"
#include "bench_model.h"
#include "model_private.h"
#include "dump_private.h"

typedef struct {
    const char *name, *what;
    int dim, hidden, layers, heads, kv_heads, vocab;
} shape;

/* llama2.c stories110M; the stories15M body with the 512-token vocabulary of stories260K's
 * tokenizer (a cheap top-k, so the memory runs are about the recorder); stories260K itself */
static const shape SH_110M = {"110m", "stories110M", 768, 2048, 12, 12, 12, 32000};
static const shape SH_15M = {"15m-v512", "stories15M body, 512-token vocab", 288, 768, 6, 6, 6, 512};
static const shape SH_260K = {"260k", "stories260K", 64, 172, 5, 8, 4, 512};

typedef struct {
    bool quick;
    const char *dir, *model, *tokenizer;
    int threads, reps;
    size_t buffer_bytes;
    int mem_n[2];
    int speed_n, speed_len;
    double write_mb;
    int write_lo, write_hi; /* prompt lengths of the write part */
    /* model_path for the dumps: --model, or a small file in --dir describing the random model
     * (the recorder hashes model_path; with none it reads an uninitialised tokenizer path) */
    char ident[4096];
    const char *write_only; /* "comp/dtype": run that write configuration alone */
} bench_opts;

static bench_opts O;

/* vsnprintf, so that messages cut to the result's fixed buffers are not warnings */
__attribute__((format(printf, 3, 4))) static void set_err(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* ------------------------------------------------------------------ models */



/* --model when given, else a random model of shape sh */
static ks_model *get_model(const shape *sh, const char **label) {
    if (O.model) {
        ks_model *m = NULL;
        ks_error err = {0};
        ks_model_options mo = {.tokenizer_path = O.tokenizer};
        if (ks_model_open(O.model, &mo, &m, &err)) {
            fprintf(stderr, "bench_record: %s\n", err.msg);
            return NULL;
        }
        *label = O.model;
        return m;
    }
    *label = sh->name;
    return bench_random_model(sh->dim, sh->hidden, sh->layers, sh->heads, sh->kv_heads, sh->vocab);
}

/* ------------------------------------------------------------------ prompts */

typedef struct {
    int n;
    int *len;
    int *ids; /* prompt i at ids + i * maxlen */
    int maxlen;
    int64_t tokens, attn;
} prompt_set;

/* n prompts of lengths lo..hi (uniform), token ids 1..vocab-1, fixed seed: the first k prompts
 * of a set of n are the same as those of a set of k. */
static bool make_prompts(prompt_set *ps, int n, int lo, int hi, int vocab, int ctx) {
    if (hi > ctx) hi = ctx;
    if (lo > hi) lo = hi;
    ps->n = n;
    ps->maxlen = hi;
    ps->len = malloc(sizeof(int) * (size_t)n);
    ps->ids = malloc(sizeof(int) * (size_t)n * (size_t)hi);
    if (!ps->len || !ps->ids) return false;
    uint64_t s = 0x2545f4914f6cdd1dULL;
    ps->tokens = ps->attn = 0;
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int L = lo + (int)(s % (uint64_t)(hi - lo + 1));
        ps->len[i] = L;
        ps->tokens += L;
        ps->attn += (int64_t)L * (L + 1) / 2;
        for (int j = 0; j < L; j++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ps->ids[(size_t)i * hi + j] = 1 + (int)(s % (uint64_t)(vocab - 1));
        }
    }
    return true;
}

static void free_prompts(prompt_set *ps) {
    free(ps->len);
    free(ps->ids);
}

static const int *prompt_ids(const prompt_set *ps, int i) { return ps->ids + (size_t)i * ps->maxlen; }

/* sums over the first n prompts, as `koalascope record` passes them (expected_tokens/_attn) */
static void prompt_sums(const prompt_set *ps, int n, int64_t *tok, int64_t *attn) {
    *tok = *attn = 0;
    for (int i = 0; i < n; i++) {
        *tok += ps->len[i];
        *attn += (int64_t)ps->len[i] * (ps->len[i] + 1) / 2;
    }
}

/* ------------------------------------------------------------------ child processes */

/* What a child reports back through its pipe. */
typedef struct {
    int ok;
    char err[512];
    /* memory */
    long base_kb, hwm_kb, end_kb, curve_kb[3];
    size_t peak_buffer;
    double seconds;
    int64_t file_bytes, tokens;
    /* speed: best seconds per token of each config over the repetitions, and per rep ratios */
    int n_cfg, reps;
    double spt[4], ratio_lo[4], ratio_hi[4];
    double base_tps;
    /* write */
    int n_w;
    struct {
        int comp, dtype, ok;
        char err[160];
        double rec_s, disk_s, disk_mbs;
        double ratio_lo, ratio_hi; /* writer part: per repetition (record, then disk) */
        int64_t file_bytes;
        size_t peak_buffer;
        double wait_s; /* the recording thread's waits for the writer (median rep in the writer part) */
    } w[6];
    double fwd_only_s;
    int64_t payload_f32;
    int64_t w_tokens;
    int w_prompts;
    char model_label[160];
    size_t params;
} child_result;

/* the 1-minute load average: other processes on a small VM move every figure here */
static double loadavg(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static long proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Run fn in a child; its result comes back through a pipe; *maxrss_kb gets the child's own
 * peak RSS from wait4 (not the maximum over all children, as RUSAGE_CHILDREN would be). */
static bool in_child(void (*fn)(const void *, child_result *), const void *arg, child_result *res,
                     long *maxrss_kb) {
    int fd[2];
    fflush(stdout);
    fflush(stderr);
    if (pipe(fd)) return false;
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        close(fd[0]);
        child_result *r = calloc(1, sizeof *r);
        if (r) {
            fn(arg, r);
            const char *p = (const char *)r;
            size_t left = sizeof *r;
            while (left) {
                ssize_t w = write(fd[1], p, left);
                if (w <= 0) break;
                p += w;
                left -= (size_t)w;
            }
        }
        fflush(stdout);
        _exit(0);
    }
    close(fd[1]);
    memset(res, 0, sizeof *res);
    char *p = (char *)res;
    size_t got = 0;
    while (got < sizeof *res) {
        ssize_t n = read(fd[0], p + got, sizeof *res - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd[0]);
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {}
    if (maxrss_kb) *maxrss_kb = ru.ru_maxrss;
    if (got != sizeof *res) {
        res->ok = 0;
        set_err(res->err, sizeof res->err, "child exited (status %d) without a result", status);
    }
    return got == sizeof *res;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void dump_path(char *buf, size_t cap, const char *tag) {
    snprintf(buf, cap, "%s/bench_record_%ld_%s.h5", O.dir, (long)getpid(), tag);
}

/* ------------------------------------------------------------------ memory */

typedef struct {
    int n;        /* prompts recorded */
    int expect_n; /* prompts whose sizes are passed as expected_tokens/_attn (chunk shapes) */
} mem_arg;

/* The model of a child process, its label and size recorded in res; NULL (with res->err) when
 * it cannot be built. */
static ks_model *child_model(const shape *sh, child_result *res) {
    const char *label;
    ks_model *m = get_model(sh, &label);
    if (!m) {
        set_err(res->err, sizeof res->err, "cannot build the model (out of memory?)");
        return NULL;
    }
    snprintf(res->model_label, sizeof res->model_label, "%s", label);
    res->params = ks_model_param_count(m);
    return m;
}

static void mem_child(const void *argp, child_result *res) {
    const mem_arg *a = argp;
    ks_error err = {0};
    ks_model *m = child_model(&SH_15M, res);
    if (!m) return;
    const ks_config *c = ks_model_config(m);
    int np = a->n > a->expect_n ? a->n : a->expect_n;
    prompt_set ps;
    if (!make_prompts(&ps, np, 16, 128, c->vocab_size, c->max_seq_len)) {
        set_err(res->err, sizeof res->err, "out of memory");
        return;
    }
    ks_session *s = NULL;
    ks_session_options so = {.max_seq_len = ps.maxlen, .n_threads = O.threads};
    if (ks_session_create(m, &so, &s, &err)) {
        set_err(res->err, sizeof res->err, "%s", err.msg);
        return;
    }
    /* one forward so the session's buffers are touched, then the baseline */
    ks_session_forward(s, prompt_ids(&ps, 0), ps.len[0], KS_LOGITS_NONE, NULL, &err);
    res->base_kb = proc_status_kb("VmRSS");
    char path[4096];
    dump_path(path, sizeof path, "mem");
    ks_record_options ro = {.hooks = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
                            .logits_topk = 10,
                            .flush_seconds = 2.0,
                            .buffer_bytes = O.buffer_bytes,
                            .model_path = O.ident,
                            .command_line = "bench_record",
                            .prompts_source = "synthetic",
                            .n_prompts_planned = a->n};
    prompt_sums(&ps, a->expect_n, &ro.expected_tokens, &ro.expected_attn);
    ks_recorder *r = NULL;
    double t0 = now();
    if (ks_recorder_create(path, m, &ro, true, &r, &err)) {
        set_err(res->err, sizeof res->err, "%s", err.msg);
        return;
    }
    for (int i = 0; i < a->n; i++) {
        if (ks_recorder_record(r, s, prompt_ids(&ps, i), ps.len[i], ps.len[i], NULL, NULL, NULL, &err)) {
            set_err(res->err, sizeof res->err, "prompt %d: %s", i, err.msg);
            ks_recorder_free(r);
            unlink(path);
            return;
        }
        /* VmHWM after 1%, 10%, 50% of the prompts (and after finishing, below) */
        for (int k = 0; k < 3; k++) {
            static const int pct[3] = {1, 10, 50};
            if (i + 1 == (a->n * pct[k] + 99) / 100) res->curve_kb[k] = proc_status_kb("VmHWM");
        }
    }
    res->peak_buffer = ks_recorder_peak_buffer(r);
    if (ks_recorder_finish(r, &err)) {
        set_err(res->err, sizeof res->err, "%s", err.msg);
        ks_recorder_free(r);
        unlink(path);
        return;
    }
    ks_recorder_free(r);
    res->seconds = now() - t0;
    res->hwm_kb = proc_status_kb("VmHWM");
    res->end_kb = proc_status_kb("VmRSS");
    res->file_bytes = file_size(path);
    prompt_sums(&ps, a->n, &res->tokens, &ro.expected_attn);
    unlink(path);
    ks_session_free(s);
    ks_model_close(m);
    free_prompts(&ps);
    res->ok = 1;
}

static bool part_memory(double *ratio) {
    printf("== memory: peak RSS of recording many prompts vs few ==\n");
    printf("hooks blocks.*.hook_resid_post,blocks.*.attn.hook_pattern, top-k 10, f32, no compression,\n"
           "prompt lengths 16-128 (seeded), buffer %s, fsync every 2 s, each run in its own process\n",
           O.buffer_bytes ? "as --buffer-mb" : "256 MiB (default)");
    const int A = O.mem_n[0], B = O.mem_n[1];
    /* as the CLI does, each run passes its own expected sizes, which choose the chunk shapes;
     * the middle run records A prompts with B's chunk shapes, to tell the two effects apart */
    const mem_arg runs[3] = {{A, A}, {A, B}, {B, B}};
    child_result res[3];
    long maxrss[3];
    for (int k = 0; k < 3; k++) {
        if (!in_child(mem_child, &runs[k], &res[k], &maxrss[k]) || !res[k].ok) {
            fprintf(stderr, "bench_record: memory run of %d prompts: %s\n", runs[k].n, res[k].err);
            return false;
        }
    }
    printf("model: %s (%s), %.1fM params = %.0f MB of f32 weights\n", res[0].model_label,
           O.model ? "checkpoint" : SH_15M.what, res[0].params / 1e6, res[0].params * 4.0 / 1e6);
    printf("%8s %8s %8s %9s %8s %10s %10s %10s %9s  %s\n", "prompts", "chunks", "tokens", "dump MB",
           "seconds", "RSS before", "peak RSS", "ru_maxrss", "peak buf", "peak RSS after 1%/10%/50%");
    for (int k = 0; k < 3; k++)
        printf("%8d %8s %8lld %9.1f %8.1f %7.1f MB %7.1f MB %7.1f MB %6.1f MB  %.1f / %.1f / %.1f MB\n",
               runs[k].n, runs[k].expect_n == A ? "small" : "large", (long long)res[k].tokens,
               res[k].file_bytes / 1e6, res[k].seconds, res[k].base_kb / 1024.0, res[k].hwm_kb / 1024.0,
               maxrss[k] / 1024.0, res[k].peak_buffer / 1048576.0, res[k].curve_kb[0] / 1024.0,
               res[k].curve_kb[1] / 1024.0, res[k].curve_kb[2] / 1024.0);
    printf("(chunks: the expected sizes passed to the recorder, as `koalascope record` passes them, are\n"
           " those of %d (small) or %d (large) prompts; RSS before: model, session and libraries after\n"
           " one forward; peak RSS: VmHWM after finishing; ru_maxrss: the same from wait4; peak buf: most\n"
           " bytes queued between the forward and the writer)\n", A, B);
    for (int k = 0; k < 3; k++)
        printf("recorder's own peak (peak - before), %d prompts, %s chunks: %.1f MB\n", runs[k].n,
               runs[k].expect_n == A ? "small" : "large", (res[k].hwm_kb - res[k].base_kb) / 1024.0);
    printf("peak RSS %d / %d prompts at the same (large) chunk shapes: %.3f\n\n", B, A,
           (double)maxrss[2] / (double)maxrss[1]);
    *ratio = (double)maxrss[2] / (double)maxrss[0];
    return true;
}

/* ------------------------------------------------------------------ speed */

typedef struct {
    const char *label, *hooks;
    int topk;
} speed_cfg;

static const speed_cfg speed_cfgs[4] = {
    {"forward (no hook, no logits)", NULL, 0},
    {"record resid_post, top-k 0", "blocks.*.hook_resid_post", 0},
    {"record resid_post, top-k 10", "blocks.*.hook_resid_post", 10},
    {"record resid_post + pattern, top-k 10", "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern", 10},
};

static double run_speed_cfg(const speed_cfg *sc, ks_model *m, ks_session *s, const prompt_set *ps,
                            int64_t *bytes, char *errbuf, size_t errcap) {
    ks_error err = {0};
    double t0 = now();
    if (!sc->hooks) {
        for (int i = 0; i < ps->n; i++) {
            ks_session_reset(s);
            if (ks_session_forward(s, prompt_ids(ps, i), ps->len[i], KS_LOGITS_NONE, NULL, &err)) {
                set_err(errbuf, errcap, "%s", err.msg);
                return -1;
            }
        }
        return now() - t0;
    }
    char path[4096];
    dump_path(path, sizeof path, "speed");
    ks_record_options ro = {.hooks = sc->hooks,
                            .logits_topk = sc->topk,
                            .flush_seconds = 2.0,
                            .buffer_bytes = O.buffer_bytes,
                            .model_path = O.ident,
                            .command_line = "bench_record",
                            .prompts_source = "synthetic",
                            .n_prompts_planned = ps->n,
                            .expected_tokens = ps->tokens,
                            .expected_attn = ps->attn};
    ks_recorder *r = NULL;
    if (ks_recorder_create(path, m, &ro, true, &r, &err)) {
        set_err(errbuf, errcap, "%s", err.msg);
        return -1;
    }
    for (int i = 0; i < ps->n; i++)
        if (ks_recorder_record(r, s, prompt_ids(ps, i), ps->len[i], ps->len[i], NULL, NULL, NULL, &err)) {
            set_err(errbuf, errcap, "%s", err.msg);
            ks_recorder_free(r);
            unlink(path);
            return -1;
        }
    if (ks_recorder_finish(r, &err)) {
        set_err(errbuf, errcap, "%s", err.msg);
        ks_recorder_free(r);
        unlink(path);
        return -1;
    }
    ks_recorder_free(r);
    double t = now() - t0;
    *bytes = file_size(path);
    unlink(path);
    return t;
}

static void speed_child(const void *argp, child_result *res) {
    (void)argp;
    ks_error err = {0};
    ks_model *m = child_model(&SH_110M, res);
    if (!m) return;
    const ks_config *c = ks_model_config(m);
    prompt_set ps;
    if (!make_prompts(&ps, O.speed_n, O.speed_len, O.speed_len, c->vocab_size, c->max_seq_len)) {
        set_err(res->err, sizeof res->err, "out of memory");
        return;
    }
    ks_session *s = NULL;
    ks_session_options so = {.max_seq_len = ps.maxlen, .n_threads = O.threads};
    if (ks_session_create(m, &so, &s, &err)) {
        set_err(res->err, sizeof res->err, "%s", err.msg);
        return;
    }
    /* warm-up: touch every weight */
    ks_session_forward(s, prompt_ids(&ps, 0), ps.len[0], KS_LOGITS_NONE, NULL, &err);
    res->n_cfg = 4;
    res->reps = O.reps;
    res->tokens = ps.tokens;
    for (int k = 0; k < 4; k++) {
        res->spt[k] = 1e30;
        res->ratio_lo[k] = 1e30;
        res->ratio_hi[k] = 0;
    }
    for (int rep = 0; rep < O.reps; rep++) {
        double t[4];
        for (int k = 0; k < 4; k++) {
            int64_t bytes = 0;
            t[k] = run_speed_cfg(&speed_cfgs[k], m, s, &ps, &bytes, res->err, sizeof res->err);
            if (t[k] < 0) return;
            double spt = t[k] / (double)ps.tokens;
            if (spt < res->spt[k]) res->spt[k] = spt;
            if (rep == 0 && k > 0) res->w[k].file_bytes = bytes;
        }
        for (int k = 0; k < 4; k++) {
            double q = t[k] / t[0];
            if (q < res->ratio_lo[k]) res->ratio_lo[k] = q;
            if (q > res->ratio_hi[k]) res->ratio_hi[k] = q;
        }
    }
    res->base_tps = 1.0 / res->spt[0];
    ks_session_free(s);
    ks_model_close(m);
    free_prompts(&ps);
    res->ok = 1;
}

static bool part_speed(double *ratio) {
    printf("== speed: recording vs the plain forward ==\n");
    child_result *res = calloc(1, sizeof *res);
    if (!res) return false;
    if (!in_child(speed_child, NULL, res, NULL) || !res->ok) {
        fprintf(stderr, "bench_record: speed: %s\n", res->err);
        free(res);
        return false;
    }
    printf("model: %s (%s), %.0fM params; %d prompts of %d tokens; %d interleaved repetitions;\n"
           "best time of each; f32 storage, no compression, fsync every 2 s\n",
           res->model_label, O.model ? "checkpoint" : SH_110M.what, res->params / 1e6, O.speed_n,
           O.speed_len, res->reps);
    printf("%-40s %10s %9s %8s %15s %9s\n", "", "ms/token", "tok/s", "ratio", "ratio per rep", "dump MB");
    for (int k = 0; k < 4; k++) {
        char dm[32] = "-";
        if (k > 0) snprintf(dm, sizeof dm, "%.1f", res->w[k].file_bytes / 1e6);
        printf("%-40s %10.3f %9.1f %8.3f %7.3f-%-7.3f %9s\n", speed_cfgs[k].label, res->spt[k] * 1e3,
               1.0 / res->spt[k], res->spt[k] / res->spt[0], res->ratio_lo[k], res->ratio_hi[k], dm);
    }
    printf("\n");
    *ratio = res->spt[1] / res->spt[0];
    free(res);
    return true;
}

/* ------------------------------------------------------------------ write */

static const ks_dump_compression w_comp[3] = {KS_DUMP_COMPRESS_NONE, KS_DUMP_COMPRESS_LZ4,
                                              KS_DUMP_COMPRESS_DEFLATE};
static const ks_dump_dtype w_dtype[2] = {KS_DUMP_F32, KS_DUMP_F16};

/* Floats the '*' selection hands the recorder for one prompt of n tokens. */
static int64_t star_floats(const ks_config *c, int64_t n) {
    int64_t d = c->dim, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t per_layer_tok = 8 * d + 4 * q + 3 * kv + 3 * (int64_t)c->hidden_dim;
    return n * ((int64_t)c->n_layers * per_layer_tok + 2 * d + c->vocab_size) +
           (int64_t)c->n_layers * 2 * c->n_heads * (n * (n + 1) / 2);
}

/* Sequential write of `bytes` in 8 MiB write() calls, then fsync: seconds, or -1. */
static double disk_write(const char *path, int64_t bytes, char *errbuf, size_t errcap) {
    const size_t B = 8u << 20;
    uint64_t *buf = malloc(B);
    if (!buf) return -1;
    uint64_t s = 88172645463325252ULL;
    for (size_t i = 0; i < B / 8; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        buf[i] = s;
    }
    double t0 = now();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        set_err(errbuf, errcap, "%s: %s", path, strerror(errno));
        free(buf);
        return -1;
    }
    int64_t left = bytes;
    while (left > 0) {
        size_t n = left < (int64_t)B ? (size_t)left : B;
        ssize_t w = write(fd, buf, n);
        if (w <= 0) {
            set_err(errbuf, errcap, "%s: write: %s", path, strerror(errno));
            close(fd);
            unlink(path);
            free(buf);
            return -1;
        }
        left -= w;
    }
    fsync(fd);
    close(fd);
    double t = now() - t0;
    unlink(path);
    free(buf);
    return t;
}

/* The disk, right after a dump of res->w[k].file_bytes: a file of the same size in the same
 * directory, best of 2; sets w[k].ok when measured. */
static void disk_rate(child_result *res, int k, const char *dpath) {
    res->w[k].disk_s = disk_write(dpath, res->w[k].file_bytes, res->w[k].err, sizeof res->w[k].err);
    if (res->w[k].disk_s <= 0) return;
    double again = disk_write(dpath, res->w[k].file_bytes, res->w[k].err, sizeof res->w[k].err);
    if (again > 0 && again < res->w[k].disk_s) res->w[k].disk_s = again;
    res->w[k].disk_mbs = res->w[k].file_bytes / 1e6 / res->w[k].disk_s;
    res->w[k].ok = 1;
}

/* A hook that takes every tensor it is offered and does nothing with it. */
static bool take_all(const ks_hook_tensor *t, bool ask, void *user) {
    (void)t;
    (void)ask;
    (void)user;
    return true;
}

static void write_child(const void *argp, child_result *res) {
    (void)argp;
    ks_error err = {0};
    ks_model *m = child_model(&SH_260K, res);
    if (!m) return;
    const ks_config *c = ks_model_config(m);
    /* enough prompts (lengths 16-128) for about --write-mb MB of f32 payload */
    prompt_set probe;
    if (!make_prompts(&probe, 100000, O.write_lo, O.write_hi, c->vocab_size, c->max_seq_len)) {
        set_err(res->err, sizeof res->err, "out of memory");
        return;
    }
    int n = 0;
    int64_t payload = 0;
    while (n < probe.n && payload < (int64_t)(O.write_mb * 1e6)) payload += 4 * star_floats(c, probe.len[n++]);
    free_prompts(&probe);
    prompt_set ps;
    if (!make_prompts(&ps, n, O.write_lo, O.write_hi, c->vocab_size, c->max_seq_len)) {
        set_err(res->err, sizeof res->err, "out of memory");
        return;
    }
    res->payload_f32 = payload;
    res->w_prompts = n;
    res->w_tokens = ps.tokens;
    ks_session *s = NULL;
    ks_session_options so = {.max_seq_len = ps.maxlen, .n_threads = O.threads};
    if (ks_session_create(m, &so, &s, &err)) {
        set_err(res->err, sizeof res->err, "%s", err.msg);
        return;
    }
    /* the forward alone, handing out every hook tensor: what recording cannot go below */
    ks_session_set_hook(s, take_all, NULL);
    double t0 = now();
    for (int i = 0; i < ps.n; i++) {
        ks_session_reset(s);
        ks_session_forward(s, prompt_ids(&ps, i), ps.len[i], KS_LOGITS_NONE, NULL, &err);
    }
    res->fwd_only_s = now() - t0;
    ks_session_set_hook(s, NULL, NULL);
    char path[4096], dpath[4096];
    dump_path(path, sizeof path, "write");
    dump_path(dpath, sizeof dpath, "disk");
    for (int di = 0; di < 2; di++)
        for (int ci = 0; ci < 3; ci++) {
            if (O.write_only) {
                char nm[64];
                snprintf(nm, sizeof nm, "%s/%s", ks_dump_compression_name(w_comp[ci]), ks_dump_dtype_name(w_dtype[di]));
                if (strcmp(nm, O.write_only)) continue;
            }
            int k = res->n_w++;
            res->w[k].comp = (int)w_comp[ci];
            res->w[k].dtype = (int)w_dtype[di];
            ks_record_options ro = {.hooks = "*",
                                    .dtype = w_dtype[di],
                                    .compression = w_comp[ci],
                                    .flush_seconds = 2.0,
                                    .buffer_bytes = O.buffer_bytes,
                                    .model_path = O.ident,
                            .command_line = "bench_record",
                                    .prompts_source = "synthetic",
                                    .n_prompts_planned = ps.n,
                                    .expected_tokens = ps.tokens,
                                    .expected_attn = ps.attn};
            ks_recorder *r = NULL;
            t0 = now();
            if (ks_recorder_create(path, m, &ro, true, &r, &err)) {
                set_err(res->w[k].err, sizeof res->w[k].err, "%s", err.msg);
                continue;
            }
            bool ok = true;
            for (int i = 0; ok && i < ps.n; i++)
                ok = !ks_recorder_record(r, s, prompt_ids(&ps, i), ps.len[i], ps.len[i], NULL, NULL, NULL, &err);
            res->w[k].peak_buffer = ks_recorder_peak_buffer(r);
            res->w[k].wait_s = ks_recorder_hook_wait_seconds(r);
            if (ok) ok = !ks_recorder_finish(r, &err);
            ks_recorder_free(r);
            res->w[k].rec_s = now() - t0;
            res->w[k].file_bytes = file_size(path);
            unlink(path);
            if (!ok) {
                set_err(res->w[k].err, sizeof res->w[k].err, "%s", err.msg);
                continue;
            }
            disk_rate(res, k, dpath);
        }
    ks_session_free(s);
    ks_model_close(m);
    free_prompts(&ps);
    res->ok = 1;
}

static bool part_write(double *ratio, char *fastest, size_t cap) {
    printf("== write: the writer's throughput vs the disk's sequential write ==\n");
    child_result *res = calloc(1, sizeof *res);
    if (!res) return false;
    if (!in_child(write_child, NULL, res, NULL) || !res->ok) {
        fprintf(stderr, "bench_record: write: %s\n", res->err);
        free(res);
        return false;
    }
    printf("model: %s (%s), %.2fM params; hooks '*' (every hook point), top-k 0; %d prompts of\n"
           "%d-%d tokens (%lld tokens), %.1f MB of activations as f32; fsync every 2 s; dir %s\n",
           res->model_label, O.model ? "checkpoint" : SH_260K.what, res->params / 1e6, res->w_prompts,
           O.write_lo, O.write_hi, (long long)res->w_tokens, res->payload_f32 / 1e6, O.dir);
    int base_k = -1;
    for (int k = 0; k < res->n_w; k++)
        if (res->w[k].ok && res->w[k].comp == KS_DUMP_COMPRESS_NONE && res->w[k].dtype == KS_DUMP_F32) base_k = k;
    printf("forward alone (every hook tensor handed out, nothing kept): %.2f s", res->fwd_only_s);
    if (base_k >= 0) printf(" = %.0f%% of recording none/f32", 100.0 * res->fwd_only_s / res->w[base_k].rec_s);
    printf("\n");
    printf("%-8s %-5s %9s %8s %8s %10s %11s %10s %9s %9s %s\n", "compr", "dtype", "file MB", "size", "record s",
           "file MB/s", "payload MB/s", "disk MB/s", "file/disk", "peak buf", "waited");
    double best_rate = 0;
    ratio[0] = ratio[1] = -1;
    for (int k = 0; k < res->n_w; k++) {
        const char *cn = ks_dump_compression_name((ks_dump_compression)res->w[k].comp);
        const char *dn = ks_dump_dtype_name((ks_dump_dtype)res->w[k].dtype);
        if (!res->w[k].ok) {
            printf("%-8s %-5s unavailable: %s\n", cn, dn, res->w[k].err);
            continue;
        }
        /* size against the uncompressed dump of the same dtype */
        double none_bytes = 0;
        for (int j = 0; j < res->n_w; j++)
            if (res->w[j].ok && res->w[j].comp == KS_DUMP_COMPRESS_NONE && res->w[j].dtype == res->w[k].dtype)
                none_bytes = (double)res->w[j].file_bytes;
        double fmbs = res->w[k].file_bytes / 1e6 / res->w[k].rec_s;
        double pmbs = res->payload_f32 / 1e6 / res->w[k].rec_s;
        char sz[16] = "-";
        if (none_bytes > 0) snprintf(sz, sizeof sz, "%.3f", res->w[k].file_bytes / none_bytes);
        printf("%-8s %-5s %9.1f %8s %8.2f %10.1f %11.1f %10.1f %9.2f %6.1f MB %4.0f%%\n", cn, dn,
               res->w[k].file_bytes / 1e6, sz, res->w[k].rec_s, fmbs, pmbs, res->w[k].disk_mbs,
               fmbs / res->w[k].disk_mbs, res->w[k].peak_buffer / 1048576.0, 100.0 * res->w[k].wait_s / res->w[k].rec_s);
        if (res->w[k].comp == KS_DUMP_COMPRESS_NONE) ratio[res->w[k].dtype == KS_DUMP_F32 ? 0 : 1] = fmbs / res->w[k].disk_mbs;
        if (pmbs > best_rate) {
            best_rate = pmbs;
            snprintf(fastest, cap, "%s/%s (%.0f MB/s of f32 activations recorded)", cn, dn, pmbs);
        }
    }
    printf("(size: file over the uncompressed dump of the same dtype; payload MB/s: activations as\n"
           " f32 recorded per second, comparable across rows; waited: share of the recording time the\n"
           " forward spent waiting for the writer (a full queue or chunk memory), i.e. how far the run\n"
           " was bound by the writer; disk MB/s: a file of the same size written right after with\n"
           " 8 MiB write() calls + fsync, best of 2)\n\n");
    free(res);
    return true;
}

/* ------------------------------------------------------------------ writer alone */

/* One prompt's hook tensors, deep-copied from a real forward, and its logits. */
typedef struct {
    int n;
    int *ids;
    ks_hook_tensor *t;
    int n_t, cap_t;
    float *logits;
} captured;

static bool capture_hook(const ks_hook_tensor *t, bool ask, void *user) {
    if (ask) return true;
    captured *c = user;
    if (c->n_t == c->cap_t) {
        int nc = c->cap_t ? 2 * c->cap_t : 64;
        ks_hook_tensor *nt = realloc(c->t, (size_t)nc * sizeof *nt);
        if (!nt) return false;
        c->t = nt;
        c->cap_t = nc;
    }
    ks_hook_tensor *d = &c->t[c->n_t];
    *d = *t;
    size_t e = 1;
    for (int k = 0; k < t->ndim; k++) e *= (size_t)t->shape[k];
    d->name = strdup(t->name);
    d->data = malloc(e * sizeof(float));
    if (!d->name || !d->data) return false;
    memcpy(d->data, t->data, e * sizeof(float));
    c->n_t++;
    return false;
}

/* The writer alone: every hook tensor of 8 distinct prompts is captured once from the model,
 * then replayed into the recorder (ks_recorder_record_replay: the recorder's own hook converts
 * the rows into its chunks, the writer thread writes them) until --write-mb MB of f32 payload
 * went by. No forward runs while recording, so what bounds it is the writer or the hook's own
 * pass over the tensors ("waited" says which); the disk is measured after each repetition with
 * a file of the dump's size. */
static void writer_child(const void *argp, child_result *res) {
    (void)argp;
    ks_error err = {0};
    ks_model *m = child_model(&SH_260K, res);
    if (!m) return;
    const ks_config *c = ks_model_config(m);
    enum { NCAP = 8 };
    prompt_set ps;
    if (!make_prompts(&ps, NCAP, O.write_lo, O.write_hi, c->vocab_size, c->max_seq_len)) {
        set_err(res->err, sizeof res->err, "out of memory");
        return;
    }
    ks_session *s = NULL;
    ks_session_options so = {.max_seq_len = ps.maxlen, .n_threads = O.threads};
    if (ks_session_create(m, &so, &s, &err)) {
        set_err(res->err, sizeof res->err, "%s", err.msg);
        return;
    }
    captured cap[NCAP];
    memset(cap, 0, sizeof cap);
    int64_t per_cycle = 0, tok_cycle = 0;
    for (int i = 0; i < NCAP; i++) {
        cap[i].n = ps.len[i];
        cap[i].ids = (int *)prompt_ids(&ps, i);
        cap[i].logits = malloc((size_t)ps.len[i] * (size_t)c->vocab_size * sizeof(float));
        if (!cap[i].logits) {
            set_err(res->err, sizeof res->err, "out of memory");
            return;
        }
        ks_session_reset(s);
        ks_session_set_hook(s, capture_hook, &cap[i]);
        if (ks_session_forward(s, cap[i].ids, cap[i].n, KS_LOGITS_ALL, cap[i].logits, &err)) {
            set_err(res->err, sizeof res->err, "%s", err.msg);
            return;
        }
        ks_session_set_hook(s, NULL, NULL);
        per_cycle += 4 * star_floats(c, cap[i].n);
        tok_cycle += cap[i].n;
    }
    int cycles = (int)((O.write_mb * 1e6 + (double)per_cycle - 1) / (double)per_cycle);
    if (cycles < 1) cycles = 1;
    res->payload_f32 = per_cycle * cycles;
    res->w_prompts = NCAP * cycles;
    res->w_tokens = tok_cycle * cycles;
    int64_t exp_tok = tok_cycle * cycles, exp_attn = 0;
    for (int i = 0; i < NCAP; i++) exp_attn += (int64_t)cap[i].n * (cap[i].n + 1) / 2 * cycles;
    char path[4096], dpath[4096];
    dump_path(path, sizeof path, "writer");
    dump_path(dpath, sizeof dpath, "disk");
    static const int cfg[3][2] = {{KS_DUMP_COMPRESS_NONE, KS_DUMP_F32}, {KS_DUMP_COMPRESS_NONE, KS_DUMP_F16},
                                  {KS_DUMP_COMPRESS_LZ4, KS_DUMP_F32}};
    for (int ci = 0; ci < 3; ci++) {
        if (O.write_only) {
            char nm[64];
            snprintf(nm, sizeof nm, "%s/%s", ks_dump_compression_name((ks_dump_compression)cfg[ci][0]),
                     ks_dump_dtype_name((ks_dump_dtype)cfg[ci][1]));
            if (strcmp(nm, O.write_only)) continue;
        }
        int k = res->n_w++;
        res->w[k].comp = cfg[ci][0];
        res->w[k].dtype = cfg[ci][1];
        ks_record_options ro = {.hooks = "*",
                                .dtype = (ks_dump_dtype)cfg[ci][1],
                                .compression = (ks_dump_compression)cfg[ci][0],
                                .flush_seconds = 2.0,
                                .buffer_bytes = O.buffer_bytes,
                                .model_path = O.ident,
                                .command_line = "bench_record",
                                .prompts_source = "synthetic",
                                .n_prompts_planned = NCAP * cycles,
                                .expected_tokens = exp_tok,
                                .expected_attn = exp_attn};
        /* repetitions of (record, then the disk with a file of the dump's size): medians of
         * each, and the per-repetition ratios, since this machine's disk moves between runs */
        double rec[16], disk[16], wait[16];
        int reps = O.reps < 16 ? O.reps : 16, done = 0;
        res->w[k].ratio_lo = 1e30;
        res->w[k].ratio_hi = 0;
        for (int rep = 0; rep < reps; rep++) {
            ks_recorder *r = NULL;
            double t0 = now();
            if (ks_recorder_create(path, m, &ro, true, &r, &err)) {
                set_err(res->w[k].err, sizeof res->w[k].err, "%s", err.msg);
                break;
            }
            bool ok = true;
            for (int y = 0; ok && y < cycles; y++)
                for (int i = 0; ok && i < NCAP; i++)
                    ok = !ks_recorder_record_replay(r, cap[i].ids, cap[i].n, cap[i].t, cap[i].n_t, cap[i].logits,
                                                    &err);
            size_t pb = ks_recorder_peak_buffer(r);
            if (pb > res->w[k].peak_buffer) res->w[k].peak_buffer = pb;
            wait[rep] = ks_recorder_hook_wait_seconds(r);
            if (ok) ok = !ks_recorder_finish(r, &err);
            ks_recorder_free(r);
            rec[rep] = now() - t0;
            res->w[k].file_bytes = file_size(path);
            unlink(path);
            if (!ok) {
                set_err(res->w[k].err, sizeof res->w[k].err, "%s", err.msg);
                break;
            }
            disk[rep] = disk_write(dpath, res->w[k].file_bytes, res->w[k].err, sizeof res->w[k].err);
            if (disk[rep] <= 0) break;
            double ratio = disk[rep] / rec[rep];
            if (ratio < res->w[k].ratio_lo) res->w[k].ratio_lo = ratio;
            if (ratio > res->w[k].ratio_hi) res->w[k].ratio_hi = ratio;
            done++;
        }
        if (done < reps) continue;
        res->w[k].rec_s = bench_median(rec, reps);
        res->w[k].wait_s = bench_median(wait, reps);
        res->w[k].disk_s = bench_median(disk, reps);
        res->w[k].disk_mbs = res->w[k].file_bytes / 1e6 / res->w[k].disk_s;
        res->w[k].ok = 1;
    }
    for (int i = 0; i < NCAP; i++) {
        for (int j = 0; j < cap[i].n_t; j++) {
            free((void *)cap[i].t[j].name);
            free(cap[i].t[j].data);
        }
        free(cap[i].t);
        free(cap[i].logits);
    }
    ks_session_free(s);
    ks_model_close(m);
    free_prompts(&ps);
    res->ok = 1;
}

static bool part_writer(double *ratio) {
    printf("== writer: the writer alone (captured hook tensors replayed, no forward) vs the disk ==\n");
    child_result *res = calloc(1, sizeof *res);
    if (!res) return false;
    if (!in_child(writer_child, NULL, res, NULL) || !res->ok) {
        fprintf(stderr, "bench_record: writer: %s\n", res->err);
        free(res);
        return false;
    }
    printf("model: %s, hooks '*', top-k 0; 8 prompts of %d-%d tokens captured once and replayed %d times\n"
           "(%lld tokens, %.1f MB of activations as f32); fsync every 2 s; dir %s; %d repetitions of\n"
           "(record, then the disk): medians, and the ratio of each repetition\n",
           res->model_label, O.write_lo, O.write_hi, res->w_prompts / 8, (long long)res->w_tokens,
           res->payload_f32 / 1e6, O.dir, O.reps);
    printf("%-8s %-5s %9s %8s %10s %10s %9s %11s %9s %s\n", "compr", "dtype", "file MB", "record s", "file MB/s",
           "disk MB/s", "file/disk", "per rep", "peak buf", "waited");
    ratio[0] = ratio[1] = -1;
    for (int k = 0; k < res->n_w; k++) {
        const char *cn = ks_dump_compression_name((ks_dump_compression)res->w[k].comp);
        const char *dn = ks_dump_dtype_name((ks_dump_dtype)res->w[k].dtype);
        if (!res->w[k].ok) {
            printf("%-8s %-5s unavailable: %s\n", cn, dn, res->w[k].err);
            continue;
        }
        double fmbs = res->w[k].file_bytes / 1e6 / res->w[k].rec_s;
        char per[32];
        snprintf(per, sizeof per, "%.2f-%.2f", res->w[k].ratio_lo, res->w[k].ratio_hi);
        printf("%-8s %-5s %9.1f %8.2f %10.1f %10.1f %9.2f %11s %6.1f MB %4.0f%%\n", cn, dn, res->w[k].file_bytes / 1e6,
               res->w[k].rec_s, fmbs, res->w[k].disk_mbs, fmbs / res->w[k].disk_mbs, per,
               res->w[k].peak_buffer / 1048576.0, 100.0 * res->w[k].wait_s / res->w[k].rec_s);
        if (res->w[k].comp == KS_DUMP_COMPRESS_NONE) ratio[res->w[k].dtype == KS_DUMP_F32 ? 0 : 1] = fmbs / res->w[k].disk_mbs;
    }
    printf("(record s: create to finish, including the final commit's fsync; waited: share of it the\n"
           " replay spent waiting for the writer (a full queue or chunk memory): near 100%% the figure\n"
           " is the writer's, near 0%% the replay's own copy and conversion into the chunks bound it)\n\n");
    free(res);
    return true;
}

/* ------------------------------------------------------------------ main */

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--quick] [--part memory|speed|write|writer|all] [--dir DIR] [--model PATH]\n"
            "          [--tokenizer PATH] [--threads N] [--buffer-mb N] [--reps N]\n"
            "          [--mem-prompts A,B] [--speed-prompts N] [--write-mb N]\n"
            "          [--write-only none|lz4|deflate/f32|f16] [--write-len LO-HI] [--mem-run N,EXPECT]\n",
            argv0);
    return 1;
}

int main(int argc, char **argv) {
    const char *part = "all";
    int mem_a = 0, mem_b = 0, speed_n = 0, reps = 0;
    mem_arg mem_run = {0, 0};
    double write_mb = 0;
    O.dir = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) O.quick = true;
        else if (!strcmp(argv[i], "--part") && i + 1 < argc) part = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) O.dir = argv[++i];
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) O.model = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) O.tokenizer = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) O.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--buffer-mb") && i + 1 < argc) O.buffer_bytes = (size_t)atol(argv[++i]) << 20;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mem-prompts") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d", &mem_a, &mem_b) != 2 || mem_a < 1 || mem_b < 1) return usage(argv[0]);
        } else if (!strcmp(argv[i], "--speed-prompts") && i + 1 < argc) speed_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--write-mb") && i + 1 < argc) write_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--write-only") && i + 1 < argc) O.write_only = argv[++i];
        else if (!strcmp(argv[i], "--mem-run") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d", &mem_run.n, &mem_run.expect_n) != 2 || mem_run.n < 1 || mem_run.expect_n < 1)
                return usage(argv[0]);
            part = "memory";
        } else if (!strcmp(argv[i], "--write-len") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d-%d", &O.write_lo, &O.write_hi) != 2 || O.write_lo < 1 || O.write_hi < O.write_lo)
                return usage(argv[0]);
        }
        else return usage(argv[0]);
    }
    bool p_mem = !strcmp(part, "all") || !strcmp(part, "memory");
    bool p_speed = !strcmp(part, "all") || !strcmp(part, "speed");
    bool p_write = !strcmp(part, "all") || !strcmp(part, "write");
    bool p_writer = !strcmp(part, "all") || !strcmp(part, "writer");
    if (!p_mem && !p_speed && !p_write && !p_writer) return usage(argv[0]);
    O.mem_n[0] = mem_a ? mem_a : 20;
    O.mem_n[1] = mem_b ? mem_b : (O.quick ? 100 : 2000);
    O.speed_n = speed_n > 0 ? speed_n : (O.quick ? 2 : 16);
    O.speed_len = O.quick ? 64 : 128;
    O.reps = reps > 0 ? reps : (O.quick ? 1 : 3);
    if (!O.write_lo) O.write_lo = 16, O.write_hi = 128;
    O.write_mb = write_mb > 0 ? write_mb : (O.quick ? 20 : 500);
    int nthreads = O.threads;
#ifdef _OPENMP
    if (nthreads <= 0) nthreads = omp_get_num_procs();
#endif
    if (nthreads <= 0) nthreads = 1;
    if (O.model) {
        snprintf(O.ident, sizeof O.ident, "%s", O.model);
    } else {
        snprintf(O.ident, sizeof O.ident, "%s/bench_record_%ld_model.txt", O.dir, (long)getpid());
        FILE *f = fopen(O.ident, "w");
        if (!f) {
            fprintf(stderr, "bench_record: %s: %s\n", O.ident, strerror(errno));
            return 1;
        }
        fprintf(f, "bench_record: random-initialised f32 model (seed 1234)\n");
        fclose(f);
    }
    if (mem_run.n) { /* one memory run in this process */
        child_result *res = calloc(1, sizeof *res);
        if (!res) return 1;
        mem_child(&mem_run, res);
        if (!O.model) unlink(O.ident);
        if (!res->ok) {
            fprintf(stderr, "bench_record: memory run of %d prompts: %s\n", mem_run.n, res->err);
            return 1;
        }
        printf("memory run: %d prompts (chunks for %d), %lld tokens, %.1f MB dump, %.1f s; RSS before %.1f MB, "
               "peak %.1f MB (after 1%%/10%%/50%%: %.1f / %.1f / %.1f MB), peak queue %.1f MB\n",
               mem_run.n, mem_run.expect_n, (long long)res->tokens, res->file_bytes / 1e6, res->seconds,
               res->base_kb / 1024.0, res->hwm_kb / 1024.0, res->curve_kb[0] / 1024.0, res->curve_kb[1] / 1024.0,
               res->curve_kb[2] / 1024.0, res->peak_buffer / 1048576.0);
        free(res);
        return 0;
    }
    printf("bench_record%s: %d threads for the forward (+ the writer thread), dumps in %s; load average %.2f\n\n",
           O.quick ? " --quick" : "", nthreads, O.dir, loadavg());
    /* The parent runs no OpenMP region and builds no model: every measurement is a child. */
    double r_mem = -1, r_speed = -1, r_write[2] = {-1, -1}, r_writer[2] = {-1, -1};
    char fastest[128] = "";
    bool ok = true;
    if (p_mem) ok &= part_memory(&r_mem);
    if (p_speed) ok &= part_speed(&r_speed);
    if (p_write) ok &= part_write(r_write, fastest, sizeof fastest);
    if (p_writer) ok &= part_writer(r_writer);
    if (!O.model) unlink(O.ident);
    printf("load average at the end: %.2f\n", loadavg());
    if (p_mem && r_mem > 0)
        printf("memory: peak RSS %d prompts / %d prompts = %.3f (target <= 1.10)\n", O.mem_n[1], O.mem_n[0], r_mem);
    if (p_speed && r_speed > 0)
        printf("speed: record resid_post (top-k 0) / plain forward, per token = %.3f (target <= 1.25)\n", r_speed);
    if (p_write && r_write[0] > 0)
        printf("write: dump MB/s / disk MB/s, none f32 = %.2f, none f16 = %.2f (target >= 0.70); "
               "fastest to record: %s\n",
               r_write[0], r_write[1], fastest);
    if (p_writer && r_writer[0] > 0)
        printf("writer alone: dump MB/s / disk MB/s, none f32 = %.2f, none f16 = %.2f (target >= 0.70)\n",
               r_writer[0], r_writer[1]);
    return ok ? 0 : 1;
}
