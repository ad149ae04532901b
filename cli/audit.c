/* audit.c — koalascope audit SPEC.json: runs a spec's bias audits (docs/AUDITS.md).
 *
 * Work is the concatenation of every audit's items; item g goes to rank g mod K (K MPI
 * processes; 1 without mpirun). Each scored item is appended at once to the rank's journal
 * (OUT/journal/rank-R.jsonl, one JSON line, flushed to the kernel), so kill -9 loses at most the
 * item in flight and --resume rescores only what no journal holds. Every rank reads every
 * journal it can see on --resume; rank 0 gathers all scores over MPI (no shared filesystem
 * needed), computes the metrics, which depend only on the scores and the seed, and writes the
 * results. Scores depend only on the item (ks_audit_score_item resets the session), so K ranks
 * give the same results as one. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef KS_HAVE_MPI
#include <mpi.h>
#endif

#include "cli.h"
#include "ks_audit.h"
#include "ks_audit_results.h"
#include "ks_drill.h"
#include "ks_dump.h"
#include "ks_model.h"
#include "ks_spec.h"

static const char *help_audit =
    "Usage: koalascope audit SPEC.json [-o DIR] [--resume] [--threads N] [--quiet]\n"
    "       mpirun -n K koalascope audit SPEC.json -o DIR [--resume]\n"
    "Run the bias audits a spec file names (CrowS-Pairs, StereoSet, BBQ, WinoBias, Winogender),\n"
    "scoring every answer by the model's log-probabilities, and write into DIR:\n"
    "  metrics.csv           every metric per category: value, bootstrap CI, permutation p, n\n"
    "  items_<audit>.csv     every item's log-probabilities and prediction\n"
    "  results.h5            both, with the spec, model identity and command line (h5py)\n"
    "  report.md, charts/    the metrics as tables and interval charts\n"
    "  journal/              the scored items, for --resume\n"
    "Spec format and metric definitions: docs/AUDITS.md.\n"
    "  -o, --output DIR  output directory (default: the spec's \"output\")\n"
    "  --resume          continue an interrupted run in DIR (the spec must be unchanged)\n"
    "  --threads N       CPU threads per process (default: the spec's, else all cores\n"
    "                    divided among the processes of this machine)\n"
    "  --quiet           no progress on stderr\n"
    "Under mpirun, items are shared among the processes and rank 0 writes the results,\n"
    "identical to a single-process run's.\n";

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ------------------------------------------------------------------ MPI (optional) */

typedef struct {
    int rank, size, local_size, local_rank;
    bool mpi;
} world;

static bool launched_by_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

static void world_init(world *w, int *argc, char ***argv) {
    *w = (world){0, 1, 1, 0, false};
#ifdef KS_HAVE_MPI
    if (launched_by_mpirun()) {
        MPI_Init(argc, argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &w->size);
        MPI_Comm local;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
        MPI_Comm_size(local, &w->local_size);
        MPI_Comm_rank(local, &w->local_rank);
        MPI_Comm_free(&local);
        w->mpi = true;
    }
#else
    (void)argc, (void)argv;
#endif
}

static void world_end(world *w) {
#ifdef KS_HAVE_MPI
    if (w->mpi) MPI_Finalize();
#else
    (void)w;
#endif
}

/* true on every rank when ok on every rank */
static bool all_ok(const world *w, bool ok) {
#ifdef KS_HAVE_MPI
    if (w->mpi) {
        int v = ok ? 1 : 0, r = 0;
        MPI_Allreduce(&v, &r, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        return r == 1;
    }
#else
    (void)w;
#endif
    return ok;
}

/* ------------------------------------------------------------------ journal */

typedef struct {
    const char *name;
    ks_audit_items items;
    ks_audit_score *scores;
    uint8_t *done;
    ks_chat_template template;
    const char *template_name;
    int first; /* global index of item 0 */
} audit_state;

static int find_audit(audit_state *A, int n, const char *name) {
    for (int a = 0; a < n; a++)
        if (strcmp(A[a].name, name) == 0) return a;
    return -1;
}

/* One journal line: {"a": audit, "i": index, "id": id, "s": [[ll, n, llu, nu], ...]} */
static char *journal_line(const audit_state *a, int i) {
    const ks_audit_score *s = &a->scores[i];
    json_t *o = json_object(), *arr = json_array();
    if (!o || !arr) {
        json_decref(o);
        json_decref(arr);
        return NULL;
    }
    json_object_set_new(o, "a", json_string(a->name));
    json_object_set_new(o, "i", json_integer(i));
    json_object_set_new(o, "id", json_string(a->items.items[i].id));
    for (int k = 0; k < s->n_options; k++) {
        json_t *e = json_array();
        json_array_append_new(e, json_real(s->opt[k].ll));
        json_array_append_new(e, json_integer(s->opt[k].n_tokens));
        json_array_append_new(e, json_real(s->opt[k].ll_unmodified));
        json_array_append_new(e, json_integer(s->opt[k].n_unmodified));
        json_array_append_new(arr, e);
    }
    json_object_set_new(o, "s", arr);
    if (s->n_next > 0) { /* counterfactual items: the top of the next-token distribution */
        json_t *nx = json_array();
        for (int k = 0; nx && k < s->n_next; k++) {
            json_t *e = json_array();
            json_array_append_new(e, json_integer(s->next_id[k]));
            json_array_append_new(e, json_real(s->next_lp[k]));
            json_array_append_new(nx, e);
        }
        json_object_set_new(o, "n", nx);
    }
    char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(o);
    return line;
}

/* Read one journal file into the audits' scores. A last line without its newline is the item
 * a kill interrupted: ignored (and cut off when the file is ours, trunc_own). */
static int read_journal(const char *path, audit_state *A, int n_audits, bool trunc_own,
                        long *n_read) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 0;
        return cli_error("audit", "%s: cannot open: %s", path, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0, good_end = 0, pos = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        pos += len;
        if (line[len - 1] != '\n') break; /* torn last line */
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        json_t *ja = o ? json_object_get(o, "a") : NULL, *ji = o ? json_object_get(o, "i") : NULL;
        json_t *jid = o ? json_object_get(o, "id") : NULL, *js = o ? json_object_get(o, "s") : NULL;
        int a = json_is_string(ja) ? find_audit(A, n_audits, json_string_value(ja)) : -1;
        long i = json_is_integer(ji) ? (long)json_integer_value(ji) : -1;
        if (!o || a < 0 || i < 0 || i >= A[a].items.n || !json_is_string(jid) ||
            !json_is_array(js)) {
            json_decref(o);
            rc = cli_error("audit", "%s:%ld: not a journal line of this spec's audits (was the "
                           "spec or the data changed? start a fresh output directory)", path,
                           lineno);
            break;
        }
        const ks_audit_item *it = &A[a].items.items[i];
        if (strcmp(json_string_value(jid), it->id) != 0 ||
            (int)json_array_size(js) != it->n_options) {
            json_decref(o);
            rc = cli_error("audit", "%s:%ld: item %ld of audit '%s' is '%s' in the journal but "
                           "'%s' in the data now (the data changed since the run started; "
                           "start a fresh output directory)", path, lineno, i, A[a].name,
                           json_string_value(jid), it->id);
            break;
        }
        ks_audit_score sc = {.n_options = it->n_options};
        bool ok = true;
        for (int k = 0; k < it->n_options; k++) {
            json_t *e = json_array_get(js, (size_t)k);
            if (!json_is_array(e) || json_array_size(e) != 4 ||
                !json_is_number(json_array_get(e, 0)) || !json_is_integer(json_array_get(e, 1)) ||
                !json_is_number(json_array_get(e, 2)) || !json_is_integer(json_array_get(e, 3))) {
                ok = false;
                break;
            }
            sc.opt[k].ll = json_number_value(json_array_get(e, 0));
            sc.opt[k].n_tokens = (int)json_integer_value(json_array_get(e, 1));
            sc.opt[k].ll_unmodified = json_number_value(json_array_get(e, 2));
            sc.opt[k].n_unmodified = (int)json_integer_value(json_array_get(e, 3));
        }
        json_t *jn = json_object_get(o, "n");
        if (ok && jn) {
            ok = json_is_array(jn) && json_array_size(jn) <= KS_AUDIT_NEXT_TOPK;
            for (size_t k = 0; ok && k < json_array_size(jn); k++) {
                json_t *e = json_array_get(jn, k);
                ok = json_is_array(e) && json_array_size(e) == 2 &&
                     json_is_integer(json_array_get(e, 0)) &&
                     json_integer_value(json_array_get(e, 0)) >= 0 &&
                     json_integer_value(json_array_get(e, 0)) <= INT32_MAX &&
                     json_is_number(json_array_get(e, 1));
                if (!ok) break;
                sc.next_id[k] = (int32_t)json_integer_value(json_array_get(e, 0));
                sc.next_lp[k] = (float)json_number_value(json_array_get(e, 1));
                sc.n_next = (int)k + 1;
            }
        }
        json_decref(o);
        if (!ok) {
            rc = cli_error("audit", "%s:%ld: malformed scores", path, lineno);
            break;
        }
        A[a].scores[i] = sc;
        if (!A[a].done[i]) (*n_read)++;
        A[a].done[i] = 1;
        good_end = pos;
    }
    free(line);
    fclose(f);
    if (!rc && trunc_own && pos != good_end && truncate(path, good_end) != 0)
        rc = cli_error("audit", "%s: cannot cut off the interrupted last line: %s", path,
                       strerror(errno));
    return rc;
}

static int read_journals(const char *jdir, const char *own, audit_state *A, int n_audits,
                         long *n_read) {
    DIR *d = opendir(jdir);
    if (!d) return errno == ENOENT ? 0 : cli_error("audit", "%s: %s", jdir, strerror(errno));
    struct dirent *e;
    char **names = NULL;
    int n = 0, cap = 0, rc = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 7 || strcmp(e->d_name + l - 6, ".jsonl") != 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **t = realloc(names, (size_t)cap * sizeof *t);
            if (!t) break;
            names = t;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (int i = 0; i < n && !rc; i++) {
        if (!names[i]) continue;
        char p[8400];
        snprintf(p, sizeof p, "%s/%s", jdir, names[i]);
        rc = read_journal(p, A, n_audits, strcmp(p, own) == 0, n_read);
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* ------------------------------------------------------------------ progress */

typedef struct {
    bool on, tty;
    double t0, last;
    long done, total;
    int rank, size;
} progress;

static void show(progress *p, const char *audit, bool final) {
    if (!p->on) return;
    double now = mono();
    if (!final && now - p->last < (p->tty ? 0.2 : 10.0)) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : NAN;
    char who[32] = "";
    if (p->size > 1) snprintf(who, sizeof who, " rank %d/%d", p->rank, p->size);
    fprintf(stderr, "%s[audit%s] %s %ld/%ld items (%.1f%%)  %.1f items/s  ETA %s%.0fs%s",
            p->tty ? "\r\033[K" : "", who, audit, p->done, p->total,
            p->total ? 100.0 * p->done / p->total : 100.0, rate, isnan(eta) ? "?" : "",
            isnan(eta) ? 0 : eta, p->tty && !final ? "" : "\n");
    fflush(stderr);
}

/* ------------------------------------------------------------------ helpers */

static int mkdir_p(const char *path) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return -1;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Several ranks on a machine with several GPUs: each rank its own GPU (local rank modulo the
 * GPUs the NVIDIA driver lists), unless CUDA_VISIBLE_DEVICES already says. Before any CUDA
 * call: the runtime reads the variable when it starts. */
static void pick_gpu(const world *w) {
    if (w->local_size < 2 || getenv("CUDA_VISIBLE_DEVICES")) return;
    DIR *d = opendir("/proc/driver/nvidia/gpus");
    if (!d) return;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    if (n < 2) return;
    char v[16];
    snprintf(v, sizeof v, "%d", w->local_rank % n);
    setenv("CUDA_VISIBLE_DEVICES", v, 1);
}

/* CPUs of this machine shared among its ranks (getconf's count / local ranks, at least 1) */
static int default_threads(const world *w) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    long t = n / (w->local_size > 0 ? w->local_size : 1);
    return t < 1 ? 1 : (int)t;
}

static char *command_line(int argc, char **argv) {
    char *b = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&b, &n);
    if (!m) return NULL;
    fputs("koalascope", m);
    for (int i = 0; i < argc; i++) fprintf(m, " %s", argv[i]);
    fclose(m);
    return b;
}

/* ------------------------------------------------------------------ the command */

typedef struct {
    const char *spec_path, *out;
    bool resume, quiet;
    int threads;
} audit_args;

static int parse_args(int argc, char **argv, audit_args *a) {
    static const struct option lo[] = {{"output", required_argument, 0, 'o'},
                                       {"resume", no_argument, 0, 'r'},
                                       {"threads", required_argument, 0, 't'},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        long v;
        switch (c) {
        case 'o': a->out = optarg; break;
        case 'r': a->resume = true; break;
        case 'q': a->quiet = true; break;
        case 't':
            if (!cli_parse_int(optarg, 1, 4096, &v))
                return cli_usage("audit", "--threads: expected an integer in [1, 4096], got '%s'",
                                 optarg);
            a->threads = (int)v;
            break;
        case 'h': fputs(help_audit, stdout); return 0;
        default:
            return cli_usage("audit", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return cli_usage("audit", "%s", "no SPEC.json given");
    if (optind + 1 < argc) return cli_usage("audit", "unexpected argument '%s'", argv[optind + 1]);
    a->spec_path = argv[optind];
    return -1;
}

#define SCORE_DOUBLES (2 + 4 * KS_AUDIT_MAX_OPTIONS + 2 * KS_AUDIT_NEXT_TOPK)
#define NEXT_AT (2 + 4 * KS_AUDIT_MAX_OPTIONS)

static void pack(const ks_audit_score *s, double *d) {
    d[0] = s->n_options;
    for (int k = 0; k < KS_AUDIT_MAX_OPTIONS; k++) {
        d[1 + 4 * k] = s->opt[k].ll;
        d[2 + 4 * k] = s->opt[k].n_tokens;
        d[3 + 4 * k] = s->opt[k].ll_unmodified;
        d[4 + 4 * k] = s->opt[k].n_unmodified;
    }
    d[NEXT_AT - 1] = s->n_next;
    for (int k = 0; k < KS_AUDIT_NEXT_TOPK; k++) { /* ids < 2^31 and floats: exact in doubles */
        d[NEXT_AT + 2 * k] = k < s->n_next ? s->next_id[k] : 0;
        d[NEXT_AT + 2 * k + 1] = k < s->n_next ? s->next_lp[k] : 0;
    }
}

static void unpack(const double *d, ks_audit_score *s) {
    s->n_options = (int)d[0];
    for (int k = 0; k < KS_AUDIT_MAX_OPTIONS; k++) {
        s->opt[k].ll = d[1 + 4 * k];
        s->opt[k].n_tokens = (int)d[2 + 4 * k];
        s->opt[k].ll_unmodified = d[3 + 4 * k];
        s->opt[k].n_unmodified = (int)d[4 + 4 * k];
    }
    s->n_next = (int)d[NEXT_AT - 1];
    for (int k = 0; k < KS_AUDIT_NEXT_TOPK; k++) {
        s->next_id[k] = (int32_t)d[NEXT_AT + 2 * k];
        s->next_lp[k] = (float)d[NEXT_AT + 2 * k + 1];
    }
}

/* Rank 0 receives every other rank's items (g mod K == r, in order) over MPI. */
static bool gather_scores(const world *w, audit_state *A, int n_audits, long total) {
#ifdef KS_HAVE_MPI
    if (!w->mpi || w->size == 1) return true;
    long mine = 0;
    for (long g = w->rank; g < total; g += w->size) mine++;
    double *buf = malloc((size_t)(mine ? mine : 1) * SCORE_DOUBLES * sizeof(double));
    int ok = buf != NULL;
    if (buf) {
        long k = 0;
        for (int a = 0; a < n_audits; a++)
            for (int i = 0; i < A[a].items.n; i++) {
                long g = A[a].first + i;
                if (g % w->size == w->rank) pack(&A[a].scores[i], buf + SCORE_DOUBLES * k++);
            }
    }
    if (!all_ok(w, ok)) {
        free(buf);
        return false;
    }
    if (w->rank != 0) {
        MPI_Send(buf, (int)(mine * SCORE_DOUBLES), MPI_DOUBLE, 0, 7, MPI_COMM_WORLD);
        free(buf);
        return true;
    }
    free(buf);
    for (int r = 1; r < w->size; r++) {
        long theirs = 0;
        for (long g = r; g < total; g += w->size) theirs++;
        double *rb = malloc((size_t)(theirs ? theirs : 1) * SCORE_DOUBLES * sizeof(double));
        if (!rb) return false; /* ranks > 0 have sent and exit; rank 0 reports */
        MPI_Recv(rb, (int)(theirs * SCORE_DOUBLES), MPI_DOUBLE, r, 7, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
        long k = 0;
        for (int a = 0; a < n_audits; a++)
            for (int i = 0; i < A[a].items.n; i++) {
                long g = A[a].first + i;
                if (g % w->size == r) {
                    unpack(rb + SCORE_DOUBLES * k++, &A[a].scores[i]);
                    A[a].done[i] = 1;
                }
            }
        free(rb);
    }
#else
    (void)w, (void)A, (void)n_audits, (void)total;
#endif
    return true;
}

int cmd_audit(int argc, char **argv) {
    world w;
    world_init(&w, &argc, &argv);
    audit_args args;
    int rc = parse_args(argc, argv, &args);
    if (rc >= 0) {
        world_end(&w);
        return rc;
    }
    rc = 0;
    ks_error err = {0};
    ks_spec spec = {0};
    ks_model *model = NULL;
    ks_session *sess = NULL;
    audit_state *A = NULL;
    int n_audits = 0;
    FILE *journal = NULL;
    char *cmdline = command_line(argc, argv);
    char jdir[4096] = "", own[4200] = "", path[4200];
    bool lead = w.rank == 0;
    double t_start = mono();
    const char *out = NULL;

    /* spec and output directory (every rank reads the spec; rank 0 prepares the directory) */
    if (ks_spec_load(args.spec_path, &spec, &err)) {
        rc = lead ? cli_error("audit", "%s", err.msg) : 1;
        goto agree;
    }
    out = args.out ? args.out : spec.output;
    if (!out) {
        rc = lead ? cli_usage("audit", "no output directory: give -o DIR or \"output\" in %s",
                              args.spec_path)
                  : 1;
        goto agree;
    }
    if (strlen(out) > 4000) {
        rc = lead ? cli_usage("audit", "the output directory's path is longer than 4000 bytes") : 1;
        goto agree;
    }
    snprintf(jdir, sizeof jdir, "%s/journal", out);
    snprintf(own, sizeof own, "%s/rank-%d.jsonl", jdir, w.rank);
    if (lead) {
        snprintf(path, sizeof path, "%s/spec.json", out);
        struct stat stj;
        bool has_journal = stat(jdir, &stj) == 0;
        if (args.resume) {
            char *old = cli_slurp(path);
            if (!old) {
                rc = cli_error("audit", "--resume: %s has no audit to resume (no %s)", out, path);
            } else {
                size_t l = strlen(old);
                while (l && (old[l - 1] == '\n' || old[l - 1] == '\r')) old[--l] = 0;
                if (strcmp(old, spec.canonical) != 0)
                    rc = cli_error("audit", "--resume: %s differs from the spec the run in %s "
                                   "started with (%s); resuming would mix two experiments",
                                   args.spec_path, out, path);
                free(old);
            }
        } else if (has_journal) {
            rc = cli_error("audit", "%s already holds an audit run (%s); continue it with "
                           "--resume or choose another directory", out, jdir);
        } else if (mkdir_p(jdir) != 0) {
            rc = cli_error("audit", "%s: cannot create: %s", jdir, strerror(errno));
        } else if (write_file(path, spec.canonical) != 0) {
            rc = cli_error("audit", "%s: cannot write: %s", path, strerror(errno));
        }
    }
agree:
    if (!all_ok(&w, rc == 0)) {
        if (!rc) rc = 1;
        goto done;
    }
    if (!lead && mkdir_p(jdir) != 0) { /* another machine's filesystem */
        rc = cli_error("audit", "%s: cannot create: %s", jdir, strerror(errno));
    }

    /* model, session */
    if (!rc) {
        ks_model_options mo = {.tokenizer_path = spec.tokenizer};
        if (ks_model_open(spec.model, &mo, &model, &err))
            rc = cli_error("audit", "%s", err.msg);
        else if (!ks_model_tokenizer(model))
            rc = cli_error("audit", "%s: the model has no tokenizer; give \"tokenizer\" in %s",
                           spec.model, args.spec_path);
    }
    if (!rc) {
        int threads = args.threads ? args.threads : spec.threads ? spec.threads : 0;
        if (!threads && w.size > 1) threads = default_threads(&w);
        const char *backend = spec.backend && strcmp(spec.backend, "cuda") == 0 ? "cuda" : NULL;
        if (backend) pick_gpu(&w);
        ks_session_options so = {.max_seq_len = spec.ctx, .n_threads = threads,
                                 .backend = backend};
        if (ks_session_create(model, &so, &sess, &err)) rc = cli_error("audit", "%s", err.msg);
    }
    /* drill-down selections are checked now, not after hours of scoring */
    for (int a = 0; a < spec.n_audits && !rc; a++) {
        const char *sel = spec.audits[a].record_hooks;
        if (!sel) continue;
        const ks_config *cfg = ks_model_config(model);
        bool *hk = calloc((size_t)KS_HOOK_COUNT * (size_t)(cfg->n_layers + 1), sizeof(bool));
        if (!hk)
            rc = cli_error("audit", "%s", "out of memory");
        else if (ks_select_hooks(sel, cfg, hk, &err))
            rc = cli_error("audit", "%s: audits[%d].record.hooks: %s", args.spec_path, a, err.msg);
        free(hk);
    }
    /* data */
    long total = 0;
    if (!rc) {
        n_audits = spec.n_audits;
        A = calloc((size_t)n_audits, sizeof *A);
        if (!A) rc = cli_error("audit", "%s", "out of memory");
    }
    for (int a = 0; a < n_audits && !rc; a++) {
        const ks_spec_audit *sa = &spec.audits[a];
        A[a].name = sa->name;
        A[a].template_name = sa->template_name  ? sa->template_name
                             : spec.template_name ? spec.template_name
                                                  : ks_model_template_hint(model);
        if (ks_chat_template_parse(A[a].template_name, &A[a].template, &err)) {
            rc = cli_error("audit", "%s: audits[%d]: %s", args.spec_path, a, err.msg);
            break;
        }
        ks_audit_load_options lo = {.categories = (const char *const *)sa->categories,
                                    .n_categories = sa->n_categories,
                                    .limit = sa->limit,
                                    .limit_per_file = sa->limit_per_file,
                                    .split = sa->split};
        if (ks_audit_load(sa->kind, (const char *const *)sa->data, sa->n_data, &lo, &A[a].items,
                          &err)) {
            rc = cli_error("audit", "audit '%s': %s", sa->name, err.msg);
            break;
        }
        A[a].scores = calloc((size_t)A[a].items.n + 1, sizeof(ks_audit_score));
        A[a].done = calloc((size_t)A[a].items.n + 1, 1);
        if (!A[a].scores || !A[a].done) rc = cli_error("audit", "%s", "out of memory");
        A[a].first = (int)total;
        total += A[a].items.n;
    }
    /* what earlier runs in this directory already scored */
    long n_resumed = 0;
    if (!rc && args.resume) rc = read_journals(jdir, own, A, n_audits, &n_resumed);
    if (!rc && !(journal = fopen(own, "ab")))
        rc = cli_error("audit", "%s: cannot open for appending: %s", own, strerror(errno));
    if (!all_ok(&w, rc == 0)) {
        if (!rc) rc = 1;
        goto done;
    }
    if (lead && !args.quiet) {
        fprintf(stderr, "[audit] %s: %d audit%s, %ld items", args.spec_path, n_audits,
                n_audits == 1 ? "" : "s", total);
        if (n_resumed) fprintf(stderr, ", %ld already scored (resumed)", n_resumed);
        if (w.size > 1) fprintf(stderr, ", %d processes", w.size);
        fputc('\n', stderr);
    }

    /* score this rank's share */
    progress pg = {.on = !args.quiet && (lead || w.size == 1), .tty = isatty(2) != 0,
                   .t0 = mono(), .rank = w.rank, .size = w.size};
    for (int a = 0; a < n_audits; a++)
        for (int i = 0; i < A[a].items.n; i++)
            if ((A[a].first + i) % w.size == w.rank && !A[a].done[i]) pg.total++;
    double t_score = mono();
    ks_audit_score_options so = {0};
    for (int a = 0; a < n_audits && !rc; a++) {
        so.template = A[a].template;
        so.max_new_tokens = spec.audits[a].max_new_tokens;
        for (int i = 0; i < A[a].items.n && !rc; i++) {
            if ((A[a].first + i) % w.size != w.rank || A[a].done[i]) continue;
            if (ks_audit_score_item(sess, ks_model_tokenizer(model), A[a].items.kind,
                                    &A[a].items.items[i], &so, &A[a].scores[i], &err)) {
                rc = cli_error("audit", "audit '%s': %s", A[a].name, err.msg);
                break;
            }
            char *line = journal_line(&A[a], i);
            if (!line || fputs(line, journal) == EOF || fputc('\n', journal) == EOF ||
                fflush(journal) != 0)
                rc = cli_error("audit", "%s: cannot append: %s", own, strerror(errno));
            free(line);
            A[a].done[i] = 1;
            pg.done++;
            show(&pg, A[a].name, false);
        }
    }
    if (journal) {
        if (fclose(journal) != 0 && !rc) rc = cli_error("audit", "%s: cannot close", own);
        journal = NULL;
    }
    if (pg.on && pg.total) show(&pg, "scored", true);
    double score_s = mono() - t_score;
    if (!all_ok(&w, rc == 0)) {
        if (!rc) rc = 1;
        goto done;
    }
    if (!gather_scores(&w, A, n_audits, total)) {
        rc = lead ? cli_error("audit", "%s", "gathering the scores failed") : 1;
        goto done;
    }
    if (!lead) goto done;

    /* rank 0: metrics and results */
    {
        for (int a = 0; a < n_audits; a++)
            for (int i = 0; i < A[a].items.n; i++)
                if (!A[a].done[i]) {
                    rc = cli_error("audit", "internal error: item %d of '%s' was not scored", i,
                                   A[a].name);
                    goto done;
                }
        ks_audit_metrics M = {0};
        ks_audit_stats_options st = {.n_bootstrap = spec.n_bootstrap,
                                     .n_permutations = spec.n_permutations,
                                     .ci = spec.ci,
                                     .seed = spec.seed};
        ks_audit_run *runs = calloc((size_t)n_audits, sizeof *runs);
        if (!runs) {
            rc = cli_error("audit", "%s", "out of memory");
            goto done;
        }
        for (int a = 0; a < n_audits && !rc; a++) {
            runs[a] = (ks_audit_run){.name = A[a].name, .items = &A[a].items,
                                     .scores = A[a].scores, .template_name = A[a].template_name};
            if (ks_audit_metrics_compute(A[a].name, &A[a].items, A[a].scores, &st, &M, &err))
                rc = cli_error("audit", "%s", err.msg);
        }
        /* BOLD: the generations as text (items own it from here) */
        for (int a = 0; a < n_audits && !rc; a++)
            for (int i = 0; A[a].items.kind == KS_AUDIT_BOLD && i < A[a].items.n && !rc; i++)
                if (ks_audit_generation_text(ks_model_tokenizer(model), &A[a].scores[i],
                                             &A[a].items.items[i].context, &err))
                    rc = cli_error("audit", "audit '%s': %s", A[a].name, err.msg);
        /* drill-down of the audits that ask for it (rank 0, after every score is in) */
        ks_model *gm = NULL;
        for (int a = 0; a < n_audits && !rc; a++) {
            const ks_spec_audit *sa = &spec.audits[a];
            if (!sa->record) continue;
            if (sa->record_attribution && !gm) {
                ks_model_options mo = {.tokenizer_path = spec.tokenizer, .f32_weights = true};
                if (ks_model_open(spec.model, &mo, &gm, &err)) {
                    rc = cli_error("audit", "drill-down: %s", err.msg);
                    break;
                }
            }
            char rel[300], dpath[4400];
            snprintf(rel, sizeof rel, "drilldown/%s.h5", A[a].name);
            snprintf(dpath, sizeof dpath, "%s/drilldown", out);
            if (mkdir_p(dpath) != 0) {
                rc = cli_error("audit", "%s: cannot create: %s", dpath, strerror(errno));
                break;
            }
            snprintf(dpath, sizeof dpath, "%s/%s", out, rel);
            ks_drill_options dopt = {.hooks = sa->record_hooks, .n_items = sa->record_items,
                                     .first = sa->record_first,
                                     .attribution = sa->record_attribution,
                                     .ig_steps = sa->record_ig_steps, .model_path = spec.model,
                                     .tokenizer_path = spec.tokenizer, .command_line = cmdline,
                                     .template_name = A[a].template_name};
            if (sa->record_dtype && ks_dump_dtype_parse(sa->record_dtype, &dopt.dtype, &err)) {
                rc = cli_error("audit", "audit '%s': record.dtype: %s", A[a].name, err.msg);
                break;
            }
            if (!args.quiet)
                fprintf(stderr, "[audit] drill-down of '%s': %d items into %s\n", A[a].name,
                        sa->record_items < A[a].items.n ? sa->record_items : A[a].items.n, dpath);
            ks_audit_score_options dso = {.template = A[a].template,
                                          .max_new_tokens = sa->max_new_tokens};
            ks_drill_entry *E = NULL;
            int nE = 0;
            if (ks_audit_drill(dpath, gm, sess, &A[a].items, A[a].scores, &dso, &dopt, &E, &nE,
                               &err)) {
                rc = cli_error("audit", "audit '%s': drill-down: %s", A[a].name, err.msg);
                break;
            }
            runs[a].drill = E;
            runs[a].n_drill = nE;
            runs[a].drill_file = strdup(rel);
        }
        if (gm) ks_model_close(gm);
        char sha[65] = "", tokf[16];
        const char *of = "";
        if (!rc && ks_model_identity(spec.model, sha, &of, tokf, sizeof tokf, &err))
            rc = cli_error("audit", "%s", err.msg);
        ks_audit_meta meta = {.spec = &spec, .command_line = cmdline, .model_sha256 = sha,
                              .model_sha256_of = of, .backend = spec.backend ? spec.backend : "cpu",
                              .n_ranks = w.size, .seconds = score_s};
        if (!rc && (ks_audit_write_csv(out, runs, n_audits, &M, &err) ||
                    ks_audit_write_report(out, runs, n_audits, &M, &meta, &err) ||
                    ks_audit_write_h5(out, runs, n_audits, &M, &meta, &err)))
            rc = cli_error("audit", "%s", err.msg);
        if (!rc) {
            /* the headline table on stdout */
            printf("audit\tmetric\tcategory\tvalue\tci_lo\tci_hi\tp_value\tn\n");
            for (int i = 0; i < M.n; i++) {
                const ks_audit_metric *x = &M.m[i];
                printf("%s\t%s\t%s\t%.6g\t%.6g\t%.6g\t%.4g\t%d\n", x->audit, x->metric,
                       x->category, x->value, x->ci_lo, x->ci_hi, x->p_value, x->n);
            }
            if (!args.quiet)
                fprintf(stderr, "[audit] %ld items (%ld scored now in %.1f s, %.3f s/item); "
                                "results in %s (report.md, metrics.csv, results.h5)\n",
                        total, pg.done, score_s, pg.done ? score_s / pg.done : 0.0, out);
        }
        (void)t_start;
        for (int a = 0; a < n_audits; a++) {
            free((void *)runs[a].drill);
            free((void *)runs[a].drill_file);
        }
        free(runs);
        ks_audit_metrics_free(&M);
    }
done:
    if (journal) fclose(journal);
    for (int a = 0; a < n_audits && A; a++) {
        ks_audit_items_free(&A[a].items);
        free(A[a].scores);
        free(A[a].done);
    }
    free(A);
    if (sess) ks_session_free(sess);
    if (model) ks_model_close(model);
    ks_spec_free(&spec);
    free(cmdline);
    world_end(&w);
    return rc;
}
