/* record.c — the recorder: a hook on the forward converts the selected rows of the selected
 * hook points to the storage dtype straight into the chunk of its dataset that it is filling
 * (one pass over the tensor); full chunks, and the per-prompt data, go as messages to a
 * writer thread, which writes each chunk as it is (H5Dwrite_chunk) into the HDF5 dump of
 * docs/FORMAT.md. The queue between the two is bounded in bytes, so memory does not grow
 * with the number of prompts, and computing overlaps writing.
 *
 * Crash safety: the file is in HDF5's SWMR mode while recording, so whatever HDF5 has put on
 * disk is a consistent file at every instant. Which prompts count is decided by
 * /prompt_offsets alone, and it is extended only at a commit, after every other dataset has
 * been flushed (and fsync'd), so a dump killed at any moment holds exactly the prompts of the
 * last commit. Data past the committed offsets is garbage that readers never look at and
 * --resume cuts away.
 *
 * Threads: the caller's thread runs the forward and the hook and only enqueues; every HDF5
 * call after creation happens on the writer thread; create/resume/finish run HDF5 while the
 * writer is not running. A chunk the hook is still filling is shared: at a commit the writer
 * reads the rows of the prompts it has been told of (MSG_PROMPT), the hook only writes rows
 * after them; a full chunk belongs to its message. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "dump_private.h"
#include "model_private.h"

/* ------------------------------------------------------------------ messages */

typedef enum {
    MSG_ROWS,   /* rows of /logits/full */
    MSG_CHUNK,  /* one chunk of an activation dataset, as the hook filled it */
    MSG_PROMPT, /* everything per prompt, then maybe a commit */
    MSG_COMMIT, /* commit now (end of run) */
} msg_kind;

/* An activation dataset's open chunk (the one the hook is filling) as it stood when a prompt
 * ended: rows (attention: key columns) [lo, hi) of the chunk that begins at c0 are in buf. */
typedef struct {
    void *buf; /* NULL: no open chunk, or an empty one */
    int64_t c0, lo, hi;
} chunk_view;

typedef struct msg {
    struct msg *next;
    msg_kind kind;
    size_t bytes; /* counted against the buffer budget */
    /* MSG_ROWS (/logits/full) and MSG_CHUNK */
    int ds;         /* MSG_CHUNK: the activation dataset */
    int64_t start;  /* MSG_ROWS: first row; MSG_CHUNK: the chunk's first row or column (c0) */
    int64_t count;  /* MSG_ROWS: rows */
    int64_t lo, hi; /* MSG_CHUNK: rows or columns [lo, hi) of the chunk are filled */
    void *data;     /* storage dtype. MSG_ROWS: [count, vocab]; MSG_CHUNK: the chunk, [chunk_n,
                     * row_elems] or [heads, chunk_n], a chunk buffer of data_bytes */
    size_t data_bytes;
    /* MSG_PROMPT */
    char *text, *id, *gen;
    int n_tok, n_prompt, n_rows;
    int32_t *tokens;      /* [n_tok] */
    char **tok_str;       /* [n_tok] */
    int32_t *row_pos;     /* [n_rows] */
    int64_t *attn_start;  /* [n_rows] */
    int32_t *topk_ids;    /* [n_rows, k] */
    float *topk_lp;       /* [n_rows, k] */
    float *next_lp;       /* [n_rows] */
    chunk_view *views;    /* [n_ds]: the open chunks once this prompt's rows are in */
    int64_t end_tok, end_row, end_attn; /* cumulative offsets after this prompt */
} msg;

/* One activation dataset. */
typedef struct {
    char name[96];
    ks_hook_point point;
    int layer;
    ks_dump_kind kind;
    int ndim;          /* dims after the row axis (token kind) */
    int64_t dims[2];   /* token kind: row dims; attention: {heads} */
    int64_t row_elems; /* floats per row (token) or heads (attention) */
    bool head_axis;    /* has a query-head axis that the head selection filters */
    int src_heads;     /* heads in the hook tensor (query heads) */
    hid_t d;
    int64_t chunk_n;   /* chunk length along the growing axis (read before the writer starts) */
    /* The hook's side: the open chunk, rows (columns) [p_lo, p_hi) of the chunk beginning at
     * p_c0 filled, in the storage dtype and the chunk's own layout. Handed to the writer
     * (MSG_CHUNK) when full, which writes it as it is: the rows are copied once, by the hook. */
    void *p_buf;
    int64_t p_c0, p_lo, p_hi;
    /* The writer's side: the size of the growing axis, and its view of the open chunk from the
     * last MSG_PROMPT (the rows of whole prompts), of which [w.lo, w_done) were written at a
     * commit. The hook only adds rows past w.hi, so the writer reads the buffer below w.hi
     * while the hook writes above it. */
    int64_t extent;
    chunk_view w;
    int64_t w_done;
} rec_ds;

struct ks_recorder {
    char *path;
    ks_hook_fn tap;    /* ks_recorder_set_tap: a read-only hook beside the recorder's own */
    void *tap_user;
    const ks_model *m;
    ks_config cfg;
    ks_record_options o;
    char *positions, *heads_spec;
    hid_t file;
    hid_t t_store;     /* file float type */
    size_t w_text, w_id, w_gen, w_tok; /* widths of the fixed-length string datasets */
    int n_ds;
    rec_ds *ds;
    int *slot;         /* [KS_HOOK_COUNT * (n_layers + 1)] -> dataset index or -1 */
    int *heads;        /* selected query heads */
    int n_heads;
    /* the other datasets */
    hid_t d_poff, d_roff, d_aoff, d_prompts, d_ids, d_plen, d_gen, d_tokens, d_tokstr, d_rowpos,
        d_astart, d_topk_ids, d_topk_lp, d_next, d_full;
    int64_t full_extent;
    /* producer state: totals including what is queued */
    int64_t n_prompts, n_tok, n_rows, n_attn;
    int64_t run_prompts, run_tokens;
    /* current prompt, during the forward */
    int cur_n;
    int *row_of;        /* [cur_n]: row index inside the prompt or -1 */
    int64_t *cur_astart; /* [n_rows_cur] absolute */
    int cur_rows;
    bool hook_failed;
    ks_error hook_err;
    float *logits;
    size_t logits_cap;
    /* queue */
    pthread_mutex_t mu;
    pthread_cond_t cv_space, cv_work, cv_idle;
    msg *head, *tail;
    size_t queued, budget, peak;
    bool stop, writer_busy, writer_running;
    pthread_t writer;
    /* writer state */
    bool failed;
    ks_error werr;
    int64_t committed; /* prompts committed in the file */
    int64_t w_prompts; /* prompts written (maybe not committed) */
    int64_t pend_cap, pend_n;
    int64_t *pend;     /* [pend_n][3]: end tok, row, attn of written, uncommitted prompts */
    double last_commit;
    void *conv;        /* strings of a prompt */
    size_t conv_cap;
    void *scratch;     /* one chunk: a partial chunk written at a commit */
    size_t scratch_cap;
    /* Chunk buffers (under mu), mapped from the kernel (mmap) and given back whole: chunk_mem
     * bytes exist (open, queued or spare), at most chunk_cap = one chunk per dataset +
     * chunk_extra (the largest chunk); the hook waits for the writer beyond that. A written
     * one is kept on the spare list (at most chunk_extra bytes) for the hook to fill again.
     * (Measured, docs/PERFORMANCE.md: malloc'd chunks freed on the other thread fragmented
     * glibc's heap, and more chunks in flight only raised the peak RSS.) */
    struct spare *spare;
    size_t spare_bytes, chunk_mem, chunk_cap, chunk_extra;
    double hook_wait_s; /* the hook's waits for the writer (queue or chunk memory) */
    _Atomic int64_t bytes_written;
    _Atomic int64_t committed_pub;
    void (*progress)(const ks_record_progress *, void *);
    void *progress_user;
    int trace_fd; /* KS_RECORD_TRACE=FILE: one line per commit, written right after it */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

static void msg_free(msg *q) {
    if (!q) return;
    if (q->kind == MSG_CHUNK && q->data) munmap(q->data, q->data_bytes); /* a chunk buffer (chunk_alloc) */
    else free(q->data);
    free(q->text);
    free(q->id);
    free(q->gen);
    free(q->tokens);
    if (q->tok_str)
        for (int i = 0; i < q->n_tok; i++) free(q->tok_str[i]);
    free(q->tok_str);
    free(q->row_pos);
    free(q->attn_start);
    free(q->topk_ids);
    free(q->topk_lp);
    free(q->next_lp);
    free(q->views);
    free(q);
}

/* A chunk buffer on the spare list (the list lives in the buffers themselves). */
typedef struct spare {
    struct spare *next;
    size_t size;
} spare;

/* ------------------------------------------------------------------ sha256 */

ks_status ks_sha256_file(const char *path, char hex[65], ks_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ks_error_set(err, KS_ERR_IO, "%s: cannot read to hash it: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    ks_status st = KS_OK;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = ks_error_set(err, KS_ERR_NOMEM, "sha256: out of memory");
        goto out;
    }
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
    if (ferror(f)) {
        st = ks_error_set(err, KS_ERR_IO, "%s: read error while hashing", path);
        goto out;
    }
    unsigned char md[32];
    unsigned mdlen = 0;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return st;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* What identifies the model: the single weights file, or the index of a sharded HF
 * checkpoint (which names the shards; hashing 26 GB of shards at every run would cost
 * a minute). Directories with one safetensors file hash that file. */
ks_status ks_model_identity(const char *path, char hex[65], const char **of, char *tokfile,
                            size_t tokcap, ks_error *err) {
    struct stat st;
    tokfile[0] = 0;
    if (stat(path, &st) != 0) return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        *of = "weights";
        snprintf(tokfile, tokcap, "%s", path);
        return ks_sha256_file(path, hex, err);
    }
    char p[4096];
    static const char *toks[] = {"tokenizer.model", "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", path, toks[i]);
        if (is_file(p)) {
            snprintf(tokfile, tokcap, "%s", p);
            break;
        }
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
    if (is_file(p)) {
        *of = "index";
        return ks_sha256_file(p, hex, err);
    }
    snprintf(p, sizeof p, "%s/model.safetensors", path);
    *of = "weights";
    return ks_sha256_file(p, hex, err);
}

/* ------------------------------------------------------------------ HDF5 helpers */

#define KS_H5_TRY(call, ...)                                                                  \
    do {                                                                                    \
        if ((call) < 0) {                                                                   \
            st = ks_h5_error(err, KS_ERR_IO, __VA_ARGS__);                                  \
            goto out;                                                                       \
        }                                                                                   \
    } while (0)

static ks_status attr_write(hid_t loc, const char *name, hid_t type, const void *val,
                            const char *path, ks_error *err) {
    ks_status st = KS_OK;
    hid_t sp = -1, a = -1;
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    KS_H5_TRY(sp = H5Screate(H5S_SCALAR), "%s: attribute %s", path, name);
    KS_H5_TRY(a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT), "%s: cannot create attribute %s", path, name);
    KS_H5_TRY(H5Awrite(a, type, val), "%s: cannot write attribute %s", path, name);
out:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return st;
}


static ks_status attr_str(hid_t loc, const char *name, const char *v, const char *path, ks_error *err) {
    const char *s = v ? v : "";
    hid_t t = ks_h5_fixed_str_type(strlen(s) + 1, H5T_STR_NULLTERM);
    if (t < 0) return ks_h5_error(err, KS_ERR_INTERNAL, "%s: string type for %s", path, name);
    ks_status st = attr_write(loc, name, t, s, path, err);
    H5Tclose(t);
    return st;
}

/* Attributes are written from an int64 through HDF5's conversion: memory type native
 * int64, file type as asked. */
static ks_status attr_num(hid_t loc, const char *name, hid_t ftype, int64_t v, const char *path,
                          ks_error *err) {
    ks_status st = KS_OK;
    hid_t sp = -1, a = -1;
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    KS_H5_TRY(sp = H5Screate(H5S_SCALAR), "%s: attribute %s", path, name);
    KS_H5_TRY(a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT), "%s: cannot create attribute %s", path, name);
    KS_H5_TRY(H5Awrite(a, H5T_NATIVE_INT64, &v), "%s: cannot write attribute %s", path, name);
out:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return st;
}

/* Read a string attribute (malloc'd) or NULL. */
static char *attr_read_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a);
    char *res = NULL;
    size_t w = ft >= 0 ? H5Tget_size(ft) : 0;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) == 0 && w > 0 &&
        w < (16u << 20)) {
        hid_t t = ks_h5_fixed_str_type(w + 1, H5T_STR_NULLTERM);
        char *s = calloc(1, w + 1);
        if (t >= 0 && s && H5Aread(a, t, s) >= 0) res = s;
        else free(s);
        if (t >= 0) H5Tclose(t);
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return res;
}

static bool attr_read_i64(hid_t loc, const char *name, int64_t *v) {
    if (H5Aexists(loc, name) <= 0) return false;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return false;
    hid_t ft = H5Aget_type(a);
    bool ok = ft >= 0 && H5Tget_class(ft) == H5T_INTEGER && ks_h5_plain_number(ft) &&
              H5Aread(a, H5T_NATIVE_INT64, v) >= 0;
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return ok;
}

/* A chunked dataset growing along axis `grow` (0 or 1) from size 0. */
static hid_t make_ds(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *fixed,
                     int grow, const hsize_t *chunk, ks_dump_compression comp, size_t chunk_bytes) {
    hsize_t dims[3], maxd[3];
    for (int i = 0; i < rank; i++) {
        dims[i] = i == grow ? 0 : fixed[i];
        maxd[i] = i == grow ? H5S_UNLIMITED : fixed[i];
    }
    hid_t sp = H5Screate_simple(rank, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t d = -1;
    if (sp < 0 || dcpl < 0 || dapl < 0 || lcpl < 0) goto out;
    H5Pset_create_intermediate_group(lcpl, 1);
    if (H5Pset_chunk(dcpl, rank, chunk) < 0) goto out;
    if (comp == KS_DUMP_COMPRESS_DEFLATE) {
        if (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, 1) < 0) goto out;
    } else if (comp == KS_DUMP_COMPRESS_LZ4) {
        if (H5Pset_filter(dcpl, KS_H5Z_FILTER_LZ4, H5Z_FLAG_MANDATORY, 0, NULL) < 0) goto out;
    }
    /* room for one chunk per dataset: datasets only grow, so when a prompt's rows straddle a
     * chunk boundary the chunk evicted is complete and never read back. (Holds until the file
     * goes SWMR; from then on HDF5 uses the file default, set to match by rdcc_bytes.) chunk_bytes 0: no
     * chunk cache, for the activation datasets, whose chunks the hook fills and the writer
     * writes whole (a cache would only keep copies of the last chunks of every hook). */
    size_t cache = chunk_bytes ? chunk_bytes + (1 << 16) : 0;
    H5Pset_chunk_cache(dapl, 521, cache, 1.0);
    d = H5Dcreate2(loc, name, type, sp, lcpl, dcpl, dapl);
out:
    if (sp >= 0) H5Sclose(sp);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (dapl >= 0) H5Pclose(dapl);
    if (lcpl >= 0) H5Pclose(lcpl);
    return d;
}

/* Reopen a dataset of a resumed dump with the chunk cache make_ds gave it: one chunk (read
 * from the file), or none (cached false: the activation datasets, written a chunk at a time). */
static hid_t open_ds(hid_t f, const char *name, bool cached) {
    size_t chunk_bytes = 0;
    if (cached) {
        hid_t d0 = H5Dopen2(f, name, H5P_DEFAULT);
        if (d0 < 0) return -1;
        hid_t pl = H5Dget_create_plist(d0), t = H5Dget_type(d0);
        hsize_t ch[3] = {0, 0, 0};
        int rank = pl >= 0 ? H5Pget_chunk(pl, 3, ch) : -1;
        if (rank >= 1 && t >= 0) {
            chunk_bytes = H5Tget_size(t);
            for (int i = 0; i < rank; i++) chunk_bytes *= (size_t)ch[i];
        }
        if (pl >= 0) H5Pclose(pl);
        if (t >= 0) H5Tclose(t);
        H5Dclose(d0);
        if (chunk_bytes == 0) chunk_bytes = 1 << 16;
    }
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 521, chunk_bytes ? chunk_bytes + (1 << 16) : 0, 1.0); /* as make_ds */
    hid_t d = H5Dopen2(f, name, dapl);
    H5Pclose(dapl);
    return d;
}

static size_t elem_size(ks_dump_dtype t) { return t == KS_DUMP_F32 ? 4 : 2; }

/* Rows per chunk that fill about 1 MiB, fewer when the whole run is expected to need fewer
 * (HDF5 allocates whole chunks, so a 10-token dump would otherwise take 1 MiB per hook). */
static hsize_t chunk_rows_cap(size_t row_bytes, int64_t expect, size_t cap_bytes) {
    size_t r = cap_bytes / (row_bytes ? row_bytes : 1);
    if (r < 1) r = 1;
    if (r > 65536) r = 65536;
    if (expect > 0) {
        size_t want = 16;
        while (want < (size_t)expect && want < r) want *= 2;
        if (want < r) r = want;
    }
    return r;
}
static hsize_t chunk_rows_for(size_t row_bytes, int64_t expect) { return chunk_rows_cap(row_bytes, expect, 1u << 20); }

/* Rows per chunk of /logits/full (one row is the vocabulary in the storage dtype). */
static hsize_t full_logits_chunk_rows(const ks_recorder *r) {
    return chunk_rows_for((size_t)r->cfg.vocab_size * elem_size(r->o.dtype), r->o.expected_tokens);
}

/* The per-token index and top-k datasets: written a prompt at a time through HDF5's chunk
 * cache (one chunk each), read whole or a prompt at a time. Small chunks keep that cache, and
 * its difference between a short and a long run, small (docs/PERFORMANCE.md, memory). */
#define SMALL_CHUNK_BYTES (64u << 10)

#define ATTN_CHUNK_MAX 262144
static hsize_t attn_chunk(int64_t expect) {
    hsize_t c = 1024;
    while (expect > 0 && c < (hsize_t)expect && c < ATTN_CHUNK_MAX) c *= 2;
    return expect > 0 ? c : ATTN_CHUNK_MAX;
}

/* Close dataspaces without losing the error stack of a failed call before them (every
 * successful HDF5 call clears the stack, and the stack says why: "No space left on device"). */
static void keep_error_close(herr_t rc, hid_t ms, hid_t fs) {
    hid_t es = rc < 0 ? H5Eget_current_stack() : -1;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (es >= 0) H5Eset_current_stack(es);
}

/* Write `count` elements (of a 1-D or row-major N-D dataset along axis 0) at start. The
 * dataset is extended first when needed. mtype describes buf. */
static herr_t write_rows(hid_t d, hid_t mtype, int64_t start, int64_t count, const void *buf) {
    if (count <= 0) return 0;
    hid_t fs = H5Dget_space(d);
    if (fs < 0) return -1;
    int rank = H5Sget_simple_extent_ndims(fs);
    hsize_t dims[3], st[3] = {0, 0, 0}, cnt[3];
    H5Sget_simple_extent_dims(fs, dims, NULL);
    herr_t rc = -1;
    hid_t ms = -1;
    if ((hsize_t)(start + count) > dims[0]) {
        H5Sclose(fs);
        dims[0] = (hsize_t)(start + count);
        if (H5Dset_extent(d, dims) < 0) return -1;
        fs = H5Dget_space(d);
        if (fs < 0) return -1;
    }
    for (int i = 0; i < rank; i++) cnt[i] = dims[i];
    st[0] = (hsize_t)start;
    cnt[0] = (hsize_t)count;
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, st, NULL, cnt, NULL) < 0) goto out;
    ms = H5Screate_simple(rank, cnt, NULL);
    if (ms < 0) goto out;
    rc = H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf);
out:
    keep_error_close(rc, ms, fs);
    return rc;
}


/* ------------------------------------------------------------------ selection -> datasets */

/* Shape of a hook point's rows in the model (token kind) or its head count (attention). */
static void hook_shape(const ks_config *c, ks_hook_point p, rec_ds *s) {
    s->kind = KS_DUMP_KIND_TOKEN;
    s->ndim = 1;
    s->head_axis = false;
    switch (p) {
    case KS_HOOK_ATTN_Q:
    case KS_HOOK_ATTN_ROT_Q:
    case KS_HOOK_ATTN_Z:
        s->ndim = 2;
        s->dims[0] = c->n_heads;
        s->dims[1] = c->head_dim;
        s->head_axis = true;
        s->src_heads = c->n_heads;
        break;
    case KS_HOOK_ATTN_K:
    case KS_HOOK_ATTN_V:
    case KS_HOOK_ATTN_ROT_K:
        s->ndim = 2;
        s->dims[0] = c->n_kv_heads;
        s->dims[1] = c->head_dim;
        break;
    case KS_HOOK_ATTN_SCORES:
    case KS_HOOK_ATTN_PATTERN:
        s->kind = KS_DUMP_KIND_ATTENTION;
        s->dims[0] = c->n_heads;
        s->head_axis = true;
        s->src_heads = c->n_heads;
        break;
    case KS_HOOK_MLP_PRE:
    case KS_HOOK_MLP_PRE_LINEAR:
    case KS_HOOK_MLP_POST:
        s->dims[0] = c->hidden_dim;
        break;
    case KS_HOOK_LOGITS:
        s->dims[0] = c->vocab_size;
        break;
    default:
        s->dims[0] = c->dim;
        break;
    }
}

static const char *axes_of(const rec_ds *s) {
    if (s->kind == KS_DUMP_KIND_ATTENTION) return "head,key";
    switch (s->point) {
    case KS_HOOK_ATTN_Q:
    case KS_HOOK_ATTN_ROT_Q:
    case KS_HOOK_ATTN_Z: return "row,head,d_head";
    case KS_HOOK_ATTN_K:
    case KS_HOOK_ATTN_V:
    case KS_HOOK_ATTN_ROT_K: return "row,kv_head,d_head";
    case KS_HOOK_MLP_PRE:
    case KS_HOOK_MLP_PRE_LINEAR:
    case KS_HOOK_MLP_POST: return "row,d_mlp";
    case KS_HOOK_LOGITS: return "row,vocab";
    default: return "row,d_model";
    }
}

static ks_status build_selection(ks_recorder *r, ks_error *err) {
    const ks_config *c = &r->cfg;
    size_t nslot = (size_t)KS_HOOK_COUNT * (size_t)(c->n_layers + 1);
    bool *sel = calloc(nslot, 1);
    r->slot = malloc(nslot * sizeof *r->slot);
    r->heads = malloc((size_t)c->n_heads * sizeof *r->heads);
    if (!sel || !r->slot || !r->heads) {
        free(sel);
        return ks_error_set(err, KS_ERR_NOMEM, "selection: out of memory");
    }
    ks_status st = ks_select_hooks(r->o.hooks, c, sel, err);
    if (!st) st = ks_select_heads(r->heads_spec, c->n_heads, r->heads, &r->n_heads, err);
    if (st) {
        free(sel);
        return st;
    }
    int n = 0;
    for (size_t i = 0; i < nslot; i++) n += sel[i];
    r->ds = calloc((size_t)n, sizeof *r->ds);
    if (!r->ds) {
        free(sel);
        return ks_error_set(err, KS_ERR_NOMEM, "selection: out of memory");
    }
    /* forward order: embed, then block by block in the order of KS_HOOK_LIST, then final */
    for (size_t i = 0; i < nslot; i++) r->slot[i] = -1;
    for (int pass = 0; pass < 3; pass++)
        for (int l = (pass == 1 ? 0 : -1); l <= (pass == 1 ? c->n_layers - 1 : -1); l++)
            for (int h = 0; h < KS_HOOK_COUNT; h++) {
                size_t idx = (size_t)h * (size_t)(c->n_layers + 1) + (size_t)(l + 1);
                if (!sel[idx]) continue;
                bool final_pt = h == KS_HOOK_LN_FINAL_NORMALIZED || h == KS_HOOK_LOGITS;
                if (pass == 0 && (l != -1 || final_pt)) continue;
                if (pass == 2 && !final_pt) continue;
                rec_ds *s = &r->ds[r->n_ds];
                s->point = (ks_hook_point)h;
                s->layer = l;
                s->d = -1;
                ks_hook_name(s->point, l, s->name, sizeof s->name);
                hook_shape(c, s->point, s);
                if (s->head_axis) s->dims[0] = r->n_heads;
                s->row_elems = s->ndim == 2 ? s->dims[0] * s->dims[1] : s->dims[0];
                r->slot[idx] = r->n_ds++;
            }
    free(sel);
    return KS_OK;
}

/* ------------------------------------------------------------------ root attributes */

static char *config_json(const ks_config *c) {
    static const char *styles[] = {"interleaved", "half"};
    static const char *scal[] = {"none", "linear", "dynamic", "llama3"};
    json_t *j = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:s,s:f,s:b,s:i,s:i}",
                          "dim", c->dim, "hidden_dim", c->hidden_dim, "n_layers", c->n_layers,
                          "n_heads", c->n_heads, "n_kv_heads", c->n_kv_heads, "head_dim",
                          c->head_dim, "vocab_size", c->vocab_size, "max_seq_len", c->max_seq_len,
                          "rms_eps", (double)c->rms_eps, "rope_theta", (double)c->rope_theta,
                          "rope_style", styles[c->rope_style & 1], "rope_scaling",
                          scal[c->rope_scaling & 3], "rope_factor", (double)c->rope_factor,
                          "tie_embeddings", c->tie_embeddings, "bos_id", c->bos_id, "eos_id",
                          c->eos_id);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

static char *sampling_json(const ks_sampler_params *p) {
    json_t *j = json_pack("{s:f,s:i,s:f,s:I}", "temperature", (double)p->temperature, "top_k",
                          p->top_k, "top_p", (double)p->top_p, "seed", (json_int_t)p->seed);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

/* The attributes that must agree for --resume to continue a dump, with their values now. */
typedef struct {
    const char *name;
    char *value;
} ident;
#define N_IDENT 16

static ks_status identity(ks_recorder *r, ident *id, ks_error *err) {
    char hex[65] = {0}, tokhex[65] = {0}, tokfile[4096] = "";
    const char *of = "weights";
    ks_status st = KS_OK;
    if (r->o.model_path) st = ks_model_identity(r->o.model_path, hex, &of, tokfile, sizeof tokfile, err);
    if (st) return st;
    if (r->o.tokenizer_path) st = ks_sha256_file(r->o.tokenizer_path, tokhex, err);
    else if (tokfile[0] && strcmp(tokfile, r->o.model_path ? r->o.model_path : "") != 0)
        st = ks_sha256_file(tokfile, tokhex, err);
    else
        memcpy(tokhex, hex, sizeof hex);
    if (st) return st;
    char num[64];
    int i = 0;
    id[i++] = (ident){"model_sha256", strdup(hex)};
    id[i++] = (ident){"model_sha256_of", strdup(of)};
    id[i++] = (ident){"model_config", config_json(&r->cfg)};
    id[i++] = (ident){"tokenizer_sha256", strdup(tokhex)};
    id[i++] = (ident){"chat_template", strdup(r->o.chat_template ? r->o.chat_template : "none")};
    id[i++] = (ident){"system_prompt", dup_or_empty(r->o.system_prompt)};
    id[i++] = (ident){"storage_dtype", strdup(ks_dump_dtype_name(r->o.dtype))};
    id[i++] = (ident){"compression", strdup(ks_dump_compression_name(r->o.compression))};
    id[i++] = (ident){"hooks", dup_or_empty(r->o.hooks)};
    id[i++] = (ident){"positions", strdup(r->positions)};
    id[i++] = (ident){"heads", strdup(r->heads_spec)};
    snprintf(num, sizeof num, "%d", r->o.logits_topk);
    id[i++] = (ident){"logits_topk", strdup(num)};
    id[i++] = (ident){"prompts_sha256", dup_or_empty(r->o.prompts_sha256)};
    snprintf(num, sizeof num, "%d", r->o.generate_max_tokens);
    id[i++] = (ident){"generate_max_tokens", strdup(num)};
    id[i++] = (ident){"sampling", sampling_json(&r->o.sampling)};
    id[i++] = (ident){"backend", strdup(r->o.backend ? r->o.backend : "cpu")};
    for (int k = 0; k < i; k++)
        if (!id[k].value) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    return KS_OK;
}

static void ident_free(ident *id) {
    for (int k = 0; k < N_IDENT; k++) free(id[k].value);
}

static bool ident_is_int(const char *name) {
    return strcmp(name, "logits_topk") == 0 || strcmp(name, "generate_max_tokens") == 0;
}

static ks_status write_root_attrs(ks_recorder *r, ident *id, ks_error *err) {
    hid_t f = r->file;
    const char *P = r->path;
    char created[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    ks_status st;
#define A_STR(n, v) if ((st = attr_str(f, n, v, P, err))) return st
#define A_NUM(n, ty, v) if ((st = attr_num(f, n, ty, v, P, err))) return st
    A_STR("format", KS_DUMP_FORMAT);
    A_NUM("format_version", H5T_STD_I32LE, KS_DUMP_FORMAT_VERSION);
    A_STR("koalascope_version", ks_version());
    A_STR("created", created);
    A_STR("command_line", r->o.command_line);
    A_NUM("complete", H5T_STD_I8LE, 0);
    A_NUM("n_prompts_planned", H5T_STD_I64LE, r->o.n_prompts_planned);
    A_NUM("resume_count", H5T_STD_I32LE, 0);
    A_STR("model_path", r->o.model_path);
    A_STR("model_format", ks_model_format(r->m));
    A_STR("model_weight_dtype", ks_model_weight_dtype(r->m));
    A_STR("tokenizer_source", r->o.tokenizer_path ? r->o.tokenizer_path : "model");
    const ks_tokenizer *tok = ks_model_tokenizer(r->m);
    A_NUM("tokenizer_vocab_size", H5T_STD_I32LE, tok ? ks_tokenizer_vocab_size(tok) : 0);
    /* the CUDA backend runs 16-bit checkpoints' GEMMs on tensor cores (see model/backend.h) */
    const char *wdt = ks_model_weight_dtype(r->m);
    bool gpu16 = r->o.backend && strcmp(r->o.backend, "cuda") == 0 && strcmp(wdt, "f32") != 0;
    A_STR("compute_dtype", !gpu16 ? "f32"
                           : strcmp(wdt, "bf16") == 0 ? "bf16-gemm-f32-accumulate"
                                                      : "f16-gemm-f32-accumulate");
    A_NUM("logits_full", H5T_STD_I8LE, r->o.logits_full);
    A_STR("prompts_source", r->o.prompts_source);
    for (int k = 0; k < N_IDENT; k++) {
        if (ident_is_int(id[k].name)) {
            A_NUM(id[k].name, H5T_STD_I32LE, strtoll(id[k].value, NULL, 10));
        } else {
            A_STR(id[k].name, id[k].value);
        }
    }
#undef A_STR
#undef A_NUM
    return KS_OK;
}

/* ------------------------------------------------------------------ datasets */

/* Entries per chunk of a fixed-length string dataset: about 256 KiB, at most 1,024. */
static hsize_t str_chunk(size_t width) {
    size_t c = (256u << 10) / (width ? width : 1);
    return c < 1 ? 1 : c > 1024 ? 1024 : c;
}

static ks_status create_datasets(ks_recorder *r, ks_error *err) {
    ks_status st = KS_OK;
    hid_t ty_text = -1, ty_id = -1, ty_gen = -1, ty_tok = -1;
    hid_t f = r->file;
    const char *P = r->path;
    hsize_t none[1] = {0}, c1024[1] = {1024};
    hsize_t c_i32[1] = {chunk_rows_cap(4, r->o.expected_tokens, SMALL_CHUNK_BYTES)};
    hsize_t c_i64[1] = {chunk_rows_cap(8, r->o.expected_tokens, SMALL_CHUNK_BYTES)};
#define MK1(var, name, type, chunk)                                                           \
    KS_H5_TRY(var = make_ds(f, name, type, 1, none, 0, chunk, KS_DUMP_COMPRESS_NONE,          \
                            (size_t)chunk[0] * H5Tget_size(type)),                            \
            "%s: cannot create dataset %s", P, name)
    MK1(r->d_poff, KS_DS_PROMPT_OFFSETS, H5T_STD_I64LE, c1024);
    MK1(r->d_roff, KS_DS_ROW_OFFSETS, H5T_STD_I64LE, c1024);
    MK1(r->d_aoff, KS_DS_ATTN_OFFSETS, H5T_STD_I64LE, c1024);
    ty_text = ks_h5_fixed_str_type(r->w_text, H5T_STR_NULLPAD);
    ty_id = ks_h5_fixed_str_type(r->w_id, H5T_STR_NULLPAD);
    ty_gen = ks_h5_fixed_str_type(r->w_gen, H5T_STR_NULLPAD);
    ty_tok = ks_h5_fixed_str_type(r->w_tok, H5T_STR_NULLPAD);
    hsize_t c_text[1] = {str_chunk(r->w_text)}, c_gen[1] = {str_chunk(r->w_gen)}, c_tok[1] = {str_chunk(r->w_tok)};
    if (ty_text < 0 || ty_id < 0 || ty_gen < 0 || ty_tok < 0) {
        st = ks_h5_error(err, KS_ERR_INTERNAL, "%s: string types", P);
        goto out;
    }
    /* prompts and generations are mostly padding: deflate (zlib) squeezes it out */
    KS_H5_TRY(r->d_prompts = make_ds(f, KS_DS_PROMPTS, ty_text, 1, none, 0, c_text, KS_DUMP_COMPRESS_DEFLATE, c_text[0] * r->w_text),
              "%s: cannot create dataset %s", P, KS_DS_PROMPTS);
    MK1(r->d_ids, KS_DS_PROMPT_IDS, ty_id, c1024);
    MK1(r->d_plen, KS_DS_PROMPT_LENGTHS, H5T_STD_I32LE, c1024);
    KS_H5_TRY(r->d_gen = make_ds(f, KS_DS_GENERATIONS, ty_gen, 1, none, 0, c_gen, KS_DUMP_COMPRESS_DEFLATE, c_gen[0] * r->w_gen),
              "%s: cannot create dataset %s", P, KS_DS_GENERATIONS);
    MK1(r->d_tokens, KS_DS_TOKENS, H5T_STD_I32LE, c_i32);
    KS_H5_TRY(r->d_tokstr = make_ds(f, KS_DS_TOKEN_STRINGS, ty_tok, 1, none, 0, c_tok, KS_DUMP_COMPRESS_NONE, c_tok[0] * r->w_tok),
              "%s: cannot create dataset %s", P, KS_DS_TOKEN_STRINGS);
    MK1(r->d_rowpos, KS_DS_ROW_POSITIONS, H5T_STD_I32LE, c_i32);
    MK1(r->d_astart, KS_DS_ATTN_ROW_STARTS, H5T_STD_I64LE, c_i64);
#undef MK1
    /* offsets start as [0] */
    int64_t zero = 0;
    KS_H5_TRY(write_rows(r->d_poff, H5T_NATIVE_INT64, 0, 1, &zero), "%s: %s", P, KS_DS_PROMPT_OFFSETS);
    KS_H5_TRY(write_rows(r->d_roff, H5T_NATIVE_INT64, 0, 1, &zero), "%s: %s", P, KS_DS_ROW_OFFSETS);
    KS_H5_TRY(write_rows(r->d_aoff, H5T_NATIVE_INT64, 0, 1, &zero), "%s: %s", P, KS_DS_ATTN_OFFSETS);
    size_t es = elem_size(r->o.dtype);
    const hsize_t ACH = attn_chunk(r->o.expected_attn);
    if (r->o.logits_topk > 0) {
        hsize_t fixed[2] = {0, (hsize_t)r->o.logits_topk};
        size_t kb = (size_t)r->o.logits_topk * 4;
        hsize_t ch[2] = {chunk_rows_cap(kb, r->o.expected_tokens, 2 * SMALL_CHUNK_BYTES), (hsize_t)r->o.logits_topk};
        KS_H5_TRY(r->d_topk_ids = make_ds(f, KS_DS_TOPK_IDS, H5T_STD_I32LE, 2, fixed, 0, ch, KS_DUMP_COMPRESS_NONE, ch[0] * kb),
                "%s: cannot create %s", P, KS_DS_TOPK_IDS);
        KS_H5_TRY(r->d_topk_lp = make_ds(f, KS_DS_TOPK_LOGPROBS, H5T_IEEE_F32LE, 2, fixed, 0, ch, KS_DUMP_COMPRESS_NONE, ch[0] * kb),
                "%s: cannot create %s", P, KS_DS_TOPK_LOGPROBS);
        KS_H5_TRY(r->d_next = make_ds(f, KS_DS_NEXT_LOGPROB, H5T_IEEE_F32LE, 1, fixed, 0, c_i32, KS_DUMP_COMPRESS_NONE, c_i32[0] * 4),
                "%s: cannot create %s", P, KS_DS_NEXT_LOGPROB);
    }
    if (r->o.logits_full) {
        hsize_t fixed[2] = {0, (hsize_t)r->cfg.vocab_size};
        hsize_t ch[2] = {full_logits_chunk_rows(r), (hsize_t)r->cfg.vocab_size};
        KS_H5_TRY(r->d_full = make_ds(f, KS_DS_FULL_LOGITS, r->t_store, 2, fixed, 0, ch, r->o.compression,
                                    ch[0] * ch[1] * es),
                "%s: cannot create %s", P, KS_DS_FULL_LOGITS);
    }
    for (int i = 0; i < r->n_ds; i++) {
        rec_ds *s = &r->ds[i];
        char path[128];
        snprintf(path, sizeof path, "%s/%s", KS_GROUP_ACTIVATIONS, s->name);
        if (s->kind == KS_DUMP_KIND_ATTENTION) {
            hsize_t ach = ACH; /* heads x chunk <= 2 MiB: the hook fills one such chunk per dataset */
            while (ach > 1024 && (size_t)s->dims[0] * ach * es > ((size_t)2 << 20)) ach /= 2;
            hsize_t fixed[2] = {(hsize_t)s->dims[0], 0}, ch[2] = {1, ach};
            KS_H5_TRY(s->d = make_ds(f, path, r->t_store, 2, fixed, 1, ch, r->o.compression, 0),
                    "%s: cannot create dataset %s", P, path);
        } else {
            hsize_t fixed[3] = {0, (hsize_t)s->dims[0], (hsize_t)s->dims[1]};
            hsize_t ch[3] = {chunk_rows_for((size_t)s->row_elems * es, r->o.expected_tokens), fixed[1], fixed[2]};
            KS_H5_TRY(s->d = make_ds(f, path, r->t_store, 1 + s->ndim, fixed, 0, ch, r->o.compression, 0),
                    "%s: cannot create dataset %s", P, path);
        }
        if ((st = attr_str(s->d, "hook", s->name, P, err))) goto out;
        if ((st = attr_num(s->d, "layer", H5T_STD_I32LE, s->layer, P, err))) goto out;
        if ((st = attr_str(s->d, "kind", s->kind == KS_DUMP_KIND_ATTENTION ? "attention" : "token", P, err)))
            goto out;
        if ((st = attr_str(s->d, "axes", axes_of(s), P, err))) goto out;
        if (s->head_axis) {
            hsize_t nh = (hsize_t)r->n_heads;
            hid_t sp = H5Screate_simple(1, &nh, NULL), a = -1;
            if (sp >= 0) a = H5Acreate2(s->d, "heads", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
            herr_t wr = a >= 0 ? H5Awrite(a, H5T_NATIVE_INT, r->heads) : -1;
            if (a >= 0) H5Aclose(a);
            if (sp >= 0) H5Sclose(sp);
            KS_H5_TRY(wr, "%s: %s: cannot write attribute heads", P, path);
        }
    }
out:
    if (ty_text >= 0) H5Tclose(ty_text);
    if (ty_id >= 0) H5Tclose(ty_id);
    if (ty_gen >= 0) H5Tclose(ty_gen);
    if (ty_tok >= 0) H5Tclose(ty_tok);
    return st;
}

/* Reopen every dataset of a dump being resumed, checking that the activation datasets are
 * exactly the ones the selection asks for. */
static ks_status open_datasets(ks_recorder *r, ks_error *err) {
    ks_status st = KS_OK;
    hid_t f = r->file;
    const char *P = r->path;
#define OP(var, name, cb)                                                                    \
    KS_H5_TRY(var = open_ds(f, name, cb), "%s: cannot open dataset %s (is it a koalascope dump?)", P, name)
    OP(r->d_poff, KS_DS_PROMPT_OFFSETS, true);
    OP(r->d_roff, KS_DS_ROW_OFFSETS, true);
    OP(r->d_aoff, KS_DS_ATTN_OFFSETS, true);
    OP(r->d_prompts, KS_DS_PROMPTS, true);
    OP(r->d_ids, KS_DS_PROMPT_IDS, true);
    OP(r->d_plen, KS_DS_PROMPT_LENGTHS, true);
    OP(r->d_gen, KS_DS_GENERATIONS, true);
    OP(r->d_tokens, KS_DS_TOKENS, true);
    OP(r->d_tokstr, KS_DS_TOKEN_STRINGS, true);
    OP(r->d_rowpos, KS_DS_ROW_POSITIONS, true);
    OP(r->d_astart, KS_DS_ATTN_ROW_STARTS, true);
    if (r->o.logits_topk > 0) {
        OP(r->d_topk_ids, KS_DS_TOPK_IDS, true);
        OP(r->d_topk_lp, KS_DS_TOPK_LOGPROBS, true);
        OP(r->d_next, KS_DS_NEXT_LOGPROB, true);
    }
    if (r->o.logits_full) OP(r->d_full, KS_DS_FULL_LOGITS, true);
    hsize_t n_links = 0;
    hid_t g = H5Gopen2(f, KS_GROUP_ACTIVATIONS, H5P_DEFAULT);
    if (g >= 0) {
        H5G_info_t gi;
        if (H5Gget_info(g, &gi) >= 0) n_links = gi.nlinks;
        H5Gclose(g);
    }
    if (n_links != (hsize_t)r->n_ds)
        return ks_error_set(err, KS_ERR_ARG, "%s: holds %llu activation datasets, the selection asks for %d",
                            P, (unsigned long long)n_links, r->n_ds);
    for (int i = 0; i < r->n_ds; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", KS_GROUP_ACTIVATIONS, r->ds[i].name);
        OP(r->ds[i].d, path, false); /* written a chunk at a time: no chunk cache (make_ds) */
    }
#undef OP
out:
    return st;
}

static void close_datasets(ks_recorder *r) {
    hid_t *all[] = {&r->d_poff,   &r->d_roff,   &r->d_aoff,  &r->d_prompts,  &r->d_ids,
                    &r->d_plen,   &r->d_gen,    &r->d_tokens, &r->d_tokstr,  &r->d_rowpos,
                    &r->d_astart, &r->d_topk_ids, &r->d_topk_lp, &r->d_next, &r->d_full};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i] >= 0) H5Dclose(*all[i]);
        *all[i] = -1;
    }
    for (int i = 0; i < r->n_ds; i++) {
        if (r->ds[i].d >= 0) H5Dclose(r->ds[i].d);
        r->ds[i].d = -1;
    }
}

/* ------------------------------------------------------------------ writer thread */

static void *conv_buf(ks_recorder *r, size_t bytes) {
    if (bytes > r->conv_cap) {
        void *p = realloc(r->conv, bytes);
        if (!p) return NULL;
        r->conv = p;
        r->conv_cap = bytes;
    }
    return r->conv;
}

/* Bytes of one row (token kind) or of one key column of one head (attention) in a chunk, and
 * of a whole chunk ([chunk_n, row_elems] or [heads, chunk_n]). */
static size_t unit_bytes(const ks_recorder *r, const rec_ds *s) {
    return elem_size(r->o.dtype) * (size_t)(s->kind == KS_DUMP_KIND_ATTENTION ? 1 : s->row_elems);
}
static size_t chunk_bytes(const ks_recorder *r, const rec_ds *s) {
    size_t heads = s->kind == KS_DUMP_KIND_ATTENTION ? (size_t)s->dims[0] : 1;
    return heads * (size_t)s->chunk_n * unit_bytes(r, s);
}

/* Largest chunk a resumed dump may declare (what create_datasets makes is <= 2 MiB). */
#define MAX_CHUNK_BYTES ((size_t)64 << 20)

/* Chunk length along the growing axis and the current extent, read once while no writer runs
 * (the hook needs the chunk length; HDF5 is called from the writer thread only after this).
 * A resumed dump is a file from outside: its shape and chunk shape must be the ones this
 * selection writes (the hook fills chunks of exactly that layout, H5Dwrite_chunk writes them). */
static ks_status read_layout(ks_recorder *r, rec_ds *s, ks_error *err) {
    bool attn = s->kind == KS_DUMP_KIND_ATTENTION;
    hid_t pl = H5Dget_create_plist(s->d), fs = H5Dget_space(s->d), ty = H5Dget_type(s->d);
    hsize_t ch[3] = {0, 0, 0}, dims[3] = {0, 0, 0};
    int rank = fs >= 0 ? H5Sget_simple_extent_ndims(fs) : -1;
    bool ok = pl >= 0 && fs >= 0 && rank >= 2 && rank <= 3 && H5Pget_layout(pl) == H5D_CHUNKED &&
              H5Pget_chunk(pl, 3, ch) == rank && H5Sget_simple_extent_dims(fs, dims, NULL) == rank;
    bool same_type = ty >= 0 && H5Tequal(ty, r->t_store) > 0;
    /* the filters make_ds sets: none, the LZ4 filter, or shuffle + deflate */
    int want_filters = r->o.compression == KS_DUMP_COMPRESS_NONE ? 0 : r->o.compression == KS_DUMP_COMPRESS_LZ4 ? 1 : 2;
    ok = ok && H5Pget_nfilters(pl) == want_filters;
    if (pl >= 0) H5Pclose(pl);
    if (fs >= 0) H5Sclose(fs);
    if (ty >= 0) H5Tclose(ty);
    if (!ok)
        return ks_h5_error(err, KS_ERR_FORMAT, "%s: %s: its layout is not one koalascope writes for this selection "
                           "(a chunked dataset with the filters of --compression %s)", r->path, s->name,
                           ks_dump_compression_name(r->o.compression));
    if (!same_type)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: %s is not stored as %s, this run's --dtype", r->path, s->name,
                            ks_dump_dtype_name(r->o.dtype));
    if (attn) /* [heads, keys], chunks [1, C] */
        ok = rank == 2 && dims[0] == (hsize_t)s->dims[0] && ch[0] == 1;
    else /* [rows, dims...], chunks [C, dims...] */
        ok = rank == 1 + s->ndim && dims[1] == (hsize_t)s->dims[0] && ch[1] == dims[1] &&
             (s->ndim < 2 || (dims[2] == (hsize_t)s->dims[1] && ch[2] == dims[2]));
    hsize_t c = attn ? ch[1] : ch[0];
    size_t per = (attn ? (size_t)s->dims[0] : 1) * unit_bytes(r, s);
    if (!ok || c < 1 || c > MAX_CHUNK_BYTES / per)
        return ks_error_set(err, KS_ERR_FORMAT,
                            "%s: %s: its shape or chunk shape is not one koalascope writes for this selection "
                            "(chunks of %llu along the growing axis)", r->path, s->name, (unsigned long long)c);
    s->chunk_n = (int64_t)c;
    s->extent = (int64_t)(attn ? dims[1] : dims[0]);
    return KS_OK;
}

static int fd_of(hid_t f) {
    void *h = NULL;
    if (H5Fget_vfd_handle(f, H5P_DEFAULT, &h) < 0 || !h) return -1;
    return *(int *)h;
}

/* Extend the growing axis to at least `to`. */
static ks_status grow_to(ks_recorder *r, rec_ds *s, int64_t to, ks_error *err) {
    if (to <= s->extent) return KS_OK;
    bool attn = s->kind == KS_DUMP_KIND_ATTENTION;
    hsize_t dims[3] = {(hsize_t)to, (hsize_t)s->dims[0], (hsize_t)s->dims[1]};
    if (attn) {
        dims[0] = (hsize_t)s->dims[0];
        dims[1] = (hsize_t)to;
    }
    if (H5Dset_extent(s->d, dims) < 0) return ks_h5_error(err, KS_ERR_IO, "%s: cannot extend %s", r->path, s->name);
    s->extent = to;
    return KS_OK;
}

/* The chunk beginning at c0, whole, from buf (its own layout) with direct chunk writes
 * (H5Dwrite_chunk): no chunk buffer, copy or read-back inside HDF5. Attention chunks are
 * [1, chunk_n], one per head: the buffer's head rows are those chunks. Uncompressed only. */
static herr_t write_whole(ks_recorder *r, rec_ds *s, const void *buf, int64_t c0) {
    bool attn = s->kind == KS_DUMP_KIND_ATTENTION;
    int64_t H = attn ? s->dims[0] : 1;
    size_t cb = (size_t)s->chunk_n * unit_bytes(r, s);
    herr_t rc = 0;
    for (int64_t h = 0; h < H && rc >= 0; h++) {
        hsize_t offset[3] = {(hsize_t)c0, 0, 0};
        if (attn) {
            offset[0] = (hsize_t)h;
            offset[1] = (hsize_t)c0;
        }
        rc = H5Dwrite_chunk(s->d, H5P_DEFAULT, 0, offset, cb, (const char *)buf + (size_t)h * cb);
    }
    return rc;
}

/* Rows (columns) [from, to) of the chunk beginning at c0 held in buf, through HDF5 (a filter,
 * or a chunk whose first rows are not in buf: the first chunk of a resumed dump). */
static herr_t write_span(ks_recorder *r, rec_ds *s, const void *buf, int64_t c0, int64_t from, int64_t to) {
    hid_t mt = r->o.dtype == KS_DUMP_F32 ? H5T_NATIVE_FLOAT : r->t_store;
    if (s->kind != KS_DUMP_KIND_ATTENTION)
        return write_rows(s->d, mt, from, to - from, (const char *)buf + (size_t)(from - c0) * unit_bytes(r, s));
    /* buf is [heads, chunk_n]: columns [from - c0, to - c0) of every head row */
    hsize_t H = (hsize_t)s->dims[0];
    hsize_t fst[2] = {0, (hsize_t)from}, cnt[2] = {H, (hsize_t)(to - from)};
    hsize_t mdim[2] = {H, (hsize_t)s->chunk_n}, mst[2] = {0, (hsize_t)(from - c0)};
    hid_t fs = H5Dget_space(s->d), ms = H5Screate_simple(2, mdim, NULL);
    herr_t rc = -1;
    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, fst, NULL, cnt, NULL) >= 0 &&
        H5Sselect_hyperslab(ms, H5S_SELECT_SET, mst, NULL, cnt, NULL) >= 0)
        rc = H5Dwrite(s->d, mt, ms, fs, H5P_DEFAULT, buf);
    keep_error_close(rc, ms, fs);
    return rc;
}

/* Rows (columns) [from, to) of the chunk at c0 whose rows [lo, to) are in buf, to the file.
 * Uncompressed chunks that buf holds from their first row go out whole (write_whole) from
 * `whole`, a buffer of the chunk's size: buf itself, or scratch when the hook is still filling
 * buf (then the rows below `to` are copied and the rest zeroed, as HDF5's fill value). */
static ks_status put_rows(ks_recorder *r, rec_ds *s, void *buf, int64_t c0, int64_t lo, int64_t from, int64_t to,
                          bool shared, ks_error *err) {
    if (to <= from) return KS_OK;
    ks_status st = grow_to(r, s, to, err);
    if (st) return st;
    herr_t rc;
    if (r->o.compression == KS_DUMP_COMPRESS_NONE && lo == c0) {
        bool attn = s->kind == KS_DUMP_KIND_ATTENTION;
        int64_t H = attn ? s->dims[0] : 1, C = s->chunk_n;
        size_t ub = unit_bytes(r, s), cb = (size_t)C * ub, used = (size_t)(to - c0) * ub;
        char *whole = buf;
        if (shared) {
            if ((size_t)H * cb > r->scratch_cap) {
                void *p = realloc(r->scratch, (size_t)H * cb);
                if (!p) return ks_error_set(err, KS_ERR_NOMEM, "writer: out of memory");
                r->scratch = p;
                r->scratch_cap = (size_t)H * cb;
            }
            whole = r->scratch;
            for (int64_t h = 0; h < H; h++) memcpy(whole + (size_t)h * cb, (const char *)buf + (size_t)h * cb, used);
        }
        if (shared || used < cb)
            for (int64_t h = 0; h < H; h++) memset(whole + (size_t)h * cb + used, 0, cb - used);
        rc = write_whole(r, s, whole, c0);
    } else {
        rc = write_span(r, s, buf, c0, from, to);
    }
    if (rc < 0) return ks_h5_error(err, KS_ERR_IO, "%s: cannot write %s", r->path, s->name);
    /* start the kernel writing back now, so that the fsync of the next commit has little
     * left to do and the writer (and the queue behind it) waits less there */
    if (!r->o.no_fsync) {
        int fd = fd_of(r->file);
        if (fd >= 0) sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    int64_t heads = s->kind == KS_DUMP_KIND_ATTENTION ? s->dims[0] : 1;
    atomic_fetch_add(&r->bytes_written, (int64_t)((size_t)(to - from) * (size_t)heads * unit_bytes(r, s)));
    return KS_OK;
}

/* Bytes of the buffer that holds a chunk of s (room for the spare list's header). */
static size_t chunk_size(const ks_recorder *r, const rec_ds *s) {
    size_t b = chunk_bytes(r, s);
    return b < sizeof(spare) ? sizeof(spare) : b;
}

/* A buffer for a chunk of `size` bytes: a spare one of that size, else a new one once the
 * chunk memory has room (spares of other sizes are freed to make it; otherwise the hook waits
 * for the writer to finish a chunk). NULL: out of memory. */
static void *chunk_alloc(ks_recorder *r, size_t size) {
    pthread_mutex_lock(&r->mu);
    for (;;) {
        spare **pp = &r->spare;
        while (*pp && (*pp)->size != size) pp = &(*pp)->next;
        spare *b = *pp;
        if (b) {
            *pp = b->next;
            r->spare_bytes -= size;
            pthread_mutex_unlock(&r->mu);
            return b;
        }
        if (r->chunk_mem + size <= r->chunk_cap || r->failed) break;
        if (r->spare) {
            b = r->spare;
            r->spare = b->next;
            r->spare_bytes -= b->size;
            r->chunk_mem -= b->size;
            munmap(b, b->size);
            continue;
        }
        double t0 = now_s();
        pthread_cond_wait(&r->cv_space, &r->mu);
        r->hook_wait_s += now_s() - t0;
    }
    r->chunk_mem += size;
    pthread_mutex_unlock(&r->mu);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = NULL;
    if (!p) {
        pthread_mutex_lock(&r->mu);
        r->chunk_mem -= size;
        pthread_mutex_unlock(&r->mu);
    }
    return p;
}

/* Done with a chunk buffer (either thread): kept for reuse while the spare list has room. */
static void chunk_release(ks_recorder *r, void *buf, size_t size) {
    if (!buf) return;
    pthread_mutex_lock(&r->mu);
    bool keep = r->spare_bytes + size <= r->chunk_extra;
    if (keep) {
        spare *b = buf;
        b->size = size;
        b->next = r->spare;
        r->spare = b;
        r->spare_bytes += size;
    } else {
        r->chunk_mem -= size;
    }
    pthread_cond_broadcast(&r->cv_space);
    pthread_mutex_unlock(&r->mu);
    if (!keep) munmap(buf, size);
}

/* A chunk the hook filled (MSG_CHUNK): written from its own buffer, which the message owns. */
static ks_status chunk_done(ks_recorder *r, msg *q, ks_error *err) {
    rec_ds *s = &r->ds[q->ds];
    int64_t from = q->lo;
    if (s->w.buf == q->data && s->w.c0 == q->start && s->w.lo == q->lo) {
        from = s->w_done; /* rows a commit wrote from this buffer are not counted again */
        s->w.buf = NULL;  /* the view is superseded: the whole chunk goes now */
    }
    return put_rows(r, s, q->data, q->start, q->lo, from, q->hi, false, err);
}

/* A commit: the rows of the open chunks that whole prompts filled and are not on disk yet. */
static ks_status flush_views(ks_recorder *r, ks_error *err) {
    for (int i = 0; i < r->n_ds; i++) {
        rec_ds *s = &r->ds[i];
        if (!s->w.buf || s->w.hi <= s->w_done) continue;
        ks_status st = put_rows(r, s, s->w.buf, s->w.c0, s->w.lo, s->w_done, s->w.hi, true, err);
        if (st) return st;
        s->w_done = s->w.hi;
    }
    return KS_OK;
}

/* MSG_PROMPT: the writer's views become the hook's open chunks as the prompt left them. */
static void take_views(ks_recorder *r, const chunk_view *v) {
    for (int i = 0; i < r->n_ds; i++) {
        rec_ds *s = &r->ds[i];
        bool same = s->w.buf && v[i].buf == s->w.buf && v[i].c0 == s->w.c0 && v[i].lo == s->w.lo;
        if (!same) s->w_done = v[i].lo;
        s->w = v[i];
    }
}

/* Flush every dataset, then extend the offsets: the commit point (see the top comment). */
static ks_status commit(ks_recorder *r, ks_error *err) {
    ks_status st = KS_OK;
    if (r->pend_n == 0) return KS_OK;
    const char *P = r->path;
    if ((st = flush_views(r, err))) goto out;
    KS_H5_TRY(H5Fflush(r->file, H5F_SCOPE_LOCAL), "%s: cannot flush", P);
    int fd = fd_of(r->file);
    if (!r->o.no_fsync && fd >= 0 && fsync(fd) != 0) {
        st = ks_error_set(err, KS_ERR_IO, "%s: fsync: %s", P, strerror(errno));
        goto out;
    }
    int64_t *buf = malloc((size_t)r->pend_n * sizeof *buf);
    if (!buf) {
        st = ks_error_set(err, KS_ERR_NOMEM, "commit: out of memory");
        goto out;
    }
    hid_t ds[3] = {r->d_roff, r->d_aoff, r->d_poff}; /* prompt_offsets last */
    int col[3] = {1, 2, 0};
    for (int k = 0; k < 3; k++) {
        for (int64_t i = 0; i < r->pend_n; i++) buf[i] = r->pend[3 * i + col[k]];
        if (write_rows(ds[k], H5T_NATIVE_INT64, r->committed + 1, r->pend_n, buf) < 0 ||
            H5Dflush(ds[k]) < 0) {
            free(buf);
            st = ks_h5_error(err, KS_ERR_IO, "%s: cannot write the offsets", P);
            goto out;
        }
    }
    free(buf);
    if (!r->o.no_fsync && fd >= 0 && fsync(fd) != 0) {
        st = ks_error_set(err, KS_ERR_IO, "%s: fsync: %s", P, strerror(errno));
        goto out;
    }
    r->committed += r->pend_n;
    r->pend_n = 0;
    atomic_store(&r->committed_pub, r->committed);
    if (r->trace_fd >= 0) { /* for the crash test: what was committed when the kill came */
        char line[48];
        int len = snprintf(line, sizeof line, "commit %lld\n", (long long)r->committed);
        if (write(r->trace_fd, line, (size_t)len) != len) { /* a test aid; nothing to do */
        }
    }
    r->last_commit = now_s();
out:
    return st;
}

/* n strings into a fixed-width dataset; the memory type is the dataset's own. A string longer
 * than the width is an internal error (the widths are computed to fit, see recorder_new). */
static ks_status write_strs(ks_recorder *r, hid_t d, int64_t start, int64_t n, const char *const *s,
                            ks_error *err) {
    hid_t t = H5Dget_type(d);
    size_t w = t >= 0 ? H5Tget_size(t) : 0;
    ks_status st = KS_OK;
    char *buf = w ? conv_buf(r, (size_t)n * w) : NULL;
    if (!buf) {
        st = ks_error_set(err, KS_ERR_NOMEM, "%s: string buffer: out of memory", r->path);
        goto out;
    }
    memset(buf, 0, (size_t)n * w);
    for (int64_t i = 0; i < n; i++) {
        size_t len = strlen(s[i]);
        if (len > w) {
            st = ks_error_set(err, KS_ERR_INTERNAL, "%s: a string of %zu bytes does not fit its dataset's %zu",
                              r->path, len, w);
            goto out;
        }
        memcpy(buf + (size_t)i * w, s[i], len);
    }
    if (write_rows(d, t, start, n, buf) < 0) st = ks_h5_error(err, KS_ERR_IO, "%s: cannot write strings", r->path);
out:
    if (t >= 0) H5Tclose(t);
    return st;
}

static ks_status handle(ks_recorder *r, msg *q, ks_error *err) {
    ks_status st = KS_OK;
    const char *P = r->path;
    if (q->kind == MSG_CHUNK) return chunk_done(r, q, err);
    if (q->kind == MSG_ROWS) { /* /logits/full */
        hid_t mt = r->o.dtype == KS_DUMP_F32 ? H5T_NATIVE_FLOAT : r->t_store;
        KS_H5_TRY(write_rows(r->d_full, mt, q->start, q->count, q->data), "%s: cannot write %s", P, KS_DS_FULL_LOGITS);
        atomic_fetch_add(&r->bytes_written,
                         q->count * (int64_t)r->cfg.vocab_size * (int64_t)elem_size(r->o.dtype));
        return KS_OK;
    }
    if (q->kind == MSG_COMMIT) return commit(r, err);
    take_views(r, q->views);
    /* MSG_PROMPT */
    int64_t p = r->w_prompts;
    int64_t t0 = q->end_tok - q->n_tok, r0 = q->end_row - q->n_rows;
    const char *s3[3] = {q->text, q->id, q->gen};
    int32_t plen = q->n_prompt;
    if ((st = write_strs(r, r->d_prompts, p, 1, &s3[0], err)) || (st = write_strs(r, r->d_ids, p, 1, &s3[1], err)) ||
        (st = write_strs(r, r->d_gen, p, 1, &s3[2], err)) ||
        (st = write_strs(r, r->d_tokstr, t0, q->n_tok, (const char *const *)q->tok_str, err)))
        goto out;
    if (write_rows(r->d_plen, H5T_NATIVE_INT32, p, 1, &plen) < 0 ||
        write_rows(r->d_tokens, H5T_NATIVE_INT32, t0, q->n_tok, q->tokens) < 0 ||
        write_rows(r->d_rowpos, H5T_NATIVE_INT32, r0, q->n_rows, q->row_pos) < 0 ||
        write_rows(r->d_astart, H5T_NATIVE_INT64, r0, q->n_rows, q->attn_start) < 0) {
        st = ks_h5_error(err, KS_ERR_IO, "%s: cannot write prompt %lld", P, (long long)p);
        goto out;
    }
    if (r->o.logits_topk > 0 &&
        (write_rows(r->d_topk_ids, H5T_NATIVE_INT32, r0, q->n_rows, q->topk_ids) < 0 ||
         write_rows(r->d_topk_lp, H5T_NATIVE_FLOAT, r0, q->n_rows, q->topk_lp) < 0 ||
         write_rows(r->d_next, H5T_NATIVE_FLOAT, r0, q->n_rows, q->next_lp) < 0)) {
        st = ks_h5_error(err, KS_ERR_IO, "%s: cannot write the logits of prompt %lld", P, (long long)p);
        goto out;
    }
    if (r->pend_n == r->pend_cap) {
        int64_t nc = r->pend_cap ? 2 * r->pend_cap : 64;
        int64_t *np = realloc(r->pend, (size_t)nc * 3 * sizeof *np);
        if (!np) return ks_error_set(err, KS_ERR_NOMEM, "writer: out of memory");
        r->pend = np;
        r->pend_cap = nc;
    }
    r->pend[3 * r->pend_n] = q->end_tok;
    r->pend[3 * r->pend_n + 1] = q->end_row;
    r->pend[3 * r->pend_n + 2] = q->end_attn;
    r->pend_n++;
    r->w_prompts++;
    if (now_s() - r->last_commit >= r->o.flush_seconds) st = commit(r, err);
out:
    return st;
}

static void *writer_main(void *arg) {
    ks_recorder *r = arg;
    ks_h5_init();
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->head && !r->stop) pthread_cond_wait(&r->cv_work, &r->mu);
        if (!r->head && r->stop) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        msg *q = r->head;
        r->head = q->next;
        if (!r->head) r->tail = NULL;
        r->writer_busy = true;
        bool failed = r->failed;
        pthread_mutex_unlock(&r->mu);

        ks_error e = {0};
        ks_status st = failed ? KS_OK : handle(r, q, &e);
        size_t bytes = q->bytes;
        if (q->kind == MSG_CHUNK) {
            chunk_release(r, q->data, q->data_bytes);
            q->data = NULL;
        }
        msg_free(q);

        pthread_mutex_lock(&r->mu);
        r->queued -= bytes;
        r->writer_busy = false;
        if (st && !r->failed) {
            r->failed = true;
            r->werr = e;
        }
        pthread_cond_broadcast(&r->cv_space);
        if (!r->head) pthread_cond_broadcast(&r->cv_idle);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

/* Hand a message to the writer, waiting while the buffer is over budget (a message larger
 * than the whole budget still goes through once the queue is empty, so nothing deadlocks). */
static ks_status enqueue(ks_recorder *r, msg *q, ks_error *err) {
    pthread_mutex_lock(&r->mu);
    while (!r->failed && r->queued > 0 && r->queued + q->bytes > r->budget) {
        double t0 = now_s();
        pthread_cond_wait(&r->cv_space, &r->mu);
        r->hook_wait_s += now_s() - t0;
    }
    if (r->failed) {
        ks_error e = r->werr;
        pthread_mutex_unlock(&r->mu);
        msg_free(q);
        if (err) *err = e;
        return e.code ? e.code : KS_ERR_IO;
    }
    q->next = NULL;
    if (r->tail) r->tail->next = q;
    else r->head = q;
    r->tail = q;
    r->queued += q->bytes;
    if (r->queued > r->peak) r->peak = r->queued;
    pthread_cond_signal(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
    return KS_OK;
}

/* Wait until the writer has drained the queue; report its error if it failed. */
static ks_status drain(ks_recorder *r, ks_error *err) {
    pthread_mutex_lock(&r->mu);
    while ((r->head || r->writer_busy) && !r->failed) pthread_cond_wait(&r->cv_idle, &r->mu);
    ks_status st = KS_OK;
    if (r->failed) {
        if (err) *err = r->werr;
        st = r->werr.code ? r->werr.code : KS_ERR_IO;
    }
    pthread_mutex_unlock(&r->mu);
    return st;
}

static ks_status start_writer(ks_recorder *r, ks_error *err) {
    if (pthread_create(&r->writer, NULL, writer_main, r) != 0)
        return ks_error_set(err, KS_ERR_INTERNAL, "cannot start the writer thread");
    r->writer_running = true;
    return KS_OK;
}

static void stop_writer(ks_recorder *r) {
    if (!r->writer_running) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->writer, NULL);
    r->writer_running = false;
}

/* ------------------------------------------------------------------ create / resume */

static ks_status recorder_new(const char *path, const ks_model *m, const ks_record_options *o,
                              ks_recorder **out, ks_error *err) {
    ks_h5_init();
    *out = NULL;
    if (!path || !m || !o) return ks_error_set(err, KS_ERR_ARG, "ks_recorder: invalid arguments");
    if (o->logits_topk < 0 || o->logits_topk > ks_model_config(m)->vocab_size)
        return ks_error_set(err, KS_ERR_ARG, "--topk %d: must be 0..%d (the vocabulary)", o->logits_topk,
                            ks_model_config(m)->vocab_size);
    ks_recorder *r = calloc(1, sizeof *r);
    if (!r) return ks_error_set(err, KS_ERR_NOMEM, "recorder: out of memory");
    r->file = r->t_store = -1;
    r->d_poff = r->d_roff = r->d_aoff = r->d_prompts = r->d_ids = r->d_plen = r->d_gen = r->d_tokens =
        r->d_tokstr = r->d_rowpos = r->d_astart = r->d_topk_ids = r->d_topk_lp = r->d_next = r->d_full = -1;
    r->m = m;
    r->cfg = *ks_model_config(m);
    const char *trace = getenv("KS_RECORD_TRACE");
    r->trace_fd = trace && *trace ? open(trace, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    r->o = *o;
    r->path = strdup(path);
    r->positions = strdup(o->positions ? o->positions : "all");
    r->heads_spec = strdup(o->heads ? o->heads : "all");
    r->budget = o->buffer_bytes ? o->buffer_bytes : (size_t)256 << 20;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv_space, NULL);
    pthread_cond_init(&r->cv_work, NULL);
    pthread_cond_init(&r->cv_idle, NULL);
    *out = r;
    if (!r->path || !r->positions || !r->heads_spec) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    /* the position selection is checked once here on a long prompt; per prompt later */
    if (strcmp(r->positions, "all") && strcmp(r->positions, "last") && strcmp(r->positions, "first")) {
        bool keep[64];
        int nk;
        ks_status st = ks_select_positions(r->positions, 64, keep, &nk, err);
        if (st && st != KS_ERR_RANGE) return st;
    }
    ks_status st = build_selection(r, err);
    if (st) return st;
    r->t_store = ks_h5_float_type(o->dtype);
    if (r->t_store < 0) return ks_h5_error(err, KS_ERR_INTERNAL, "HDF5 types");
    /* string widths: the longest token text (a piece's bytes bound its text, +1 for the
     * space a dummy prefix may add), prompt ids of 63 bytes, and what the caller says of the
     * prompts; generations are at most max_new_tokens such tokens */
    const ks_tokenizer *tok = ks_model_tokenizer(m);
    r->w_tok = 12;
    for (int i = 0; tok && i < ks_tokenizer_vocab_size(tok); i++) {
        const char *pc = ks_tokenizer_piece(tok, i);
        size_t len = pc ? strlen(pc) + 1 : 0;
        if (len > r->w_tok) r->w_tok = len;
    }
    r->w_id = 64;
    r->w_text = o->max_text_bytes > 0 ? (size_t)o->max_text_bytes : 4096;
    r->w_gen = o->generate_max_tokens > 0 ? (size_t)o->generate_max_tokens * r->w_tok : 1;
    if (o->compression == KS_DUMP_COMPRESS_LZ4 && H5Zfilter_avail(KS_H5Z_FILTER_LZ4) <= 0)
        return ks_error_set(err, KS_ERR_UNSUPPORTED,
                            "--compression lz4: HDF5's LZ4 filter (32004) is not installed "
                            "(Debian: apt-get install hdf5-filter-plugin)");
    return KS_OK;
}

/* The file's default chunk cache, which is what every dataset gets once the file is in SWMR
 * mode (HDF5 1.10.8 does not keep the per-dataset sizes make_ds and open_ds ask for across
 * H5Fstart_swmr_write; measured: the default 1 MiB per dataset, filled chunk by chunk, was
 * most of the recorder's growth over a long run). Big enough for the largest chunk written
 * through the cache (the string datasets' 256 KiB, a /logits/full chunk, compressed activation
 * chunks); uncompressed activation datasets get direct chunk writes and never use it. */
static size_t rdcc_bytes(const ks_recorder *r) {
    size_t b = 256u << 10;
    /* compressed activation datasets go through HDF5 (the filter): one whole chunk each, so a
     * chunk is compressed and placed once, not again at every commit (chunks are <= 1 MiB) */
    if (r && r->o.compression != KS_DUMP_COMPRESS_NONE) b = 1u << 20;
    if (r && r->o.logits_full) {
        size_t full = full_logits_chunk_rows(r) * (size_t)r->cfg.vocab_size * elem_size(r->o.dtype);
        if (full > b) b = full;
    }
    return b + (64u << 10);
}

static hid_t latest_fapl(const ks_recorder *r) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    if (fapl >= 0) H5Pset_cache(fapl, 0, 521, rdcc_bytes(r), 1.0);
    return fapl;
}

/* Switch the file to SWMR writing and start the writer thread. From here on the file is
 * crash-consistent (and no new HDF5 object may be created). */
static ks_status go_live(ks_recorder *r, ks_error *err) {
    for (int i = 0; i < r->n_ds; i++) {
        ks_status st = read_layout(r, &r->ds[i], err);
        if (st) return st;
        size_t cb = chunk_size(r, &r->ds[i]);
        r->chunk_cap += cb;
        if (cb > r->chunk_extra) r->chunk_extra = cb; /* one chunk in flight */
    }
    r->chunk_cap += r->chunk_extra;
    if (H5Fstart_swmr_write(r->file) < 0) return ks_h5_error(err, KS_ERR_IO, "%s: cannot start SWMR writing", r->path);
    r->last_commit = now_s();
    return start_writer(r, err);
}

/* The common end of create and resume: release what opening used, hand out the recorder or
 * free it on failure. */
static ks_status finish_open(ks_recorder *r, ks_status st, hid_t fapl, ident *id, ks_recorder **out) {
    if (fapl >= 0) H5Pclose(fapl);
    ident_free(id);
    if (st) {
        ks_recorder_free(r);
        r = NULL;
    }
    *out = r;
    return st;
}

ks_status ks_recorder_create(const char *path, const ks_model *m, const ks_record_options *o,
                             bool overwrite, ks_recorder **out, ks_error *err) {
    ks_recorder *r = NULL;
    ks_status st = recorder_new(path, m, o, &r, err);
    ident id[N_IDENT] = {{0}};
    hid_t fapl = -1;
    if (st) goto out;
    if (!overwrite && access(path, F_OK) == 0) {
        st = ks_error_set(err, KS_ERR_ARG, "%s exists; give --resume to continue it or --overwrite to replace it", path);
        goto out;
    }
    if ((st = identity(r, id, err))) goto out;
    fapl = latest_fapl(r);
    KS_H5_TRY(r->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "%s: cannot create the dump", path);
    if ((st = write_root_attrs(r, id, err))) goto out;
    if ((st = create_datasets(r, err))) goto out;
    st = go_live(r, err);
out:
    return finish_open(r, st, fapl, id, out);
}

static bool read_last_i64(hid_t d, int64_t len, int64_t *v) {
    if (len < 1) return false;
    hid_t fs = H5Dget_space(d);
    hsize_t st = (hsize_t)(len - 1), c = 1;
    hid_t ms = H5Screate_simple(1, &c, NULL);
    bool ok = fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &c, NULL) >= 0 &&
              H5Dread(d, H5T_NATIVE_INT64, ms, fs, H5P_DEFAULT, v) >= 0;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return ok;
}

ks_status ks_recorder_resume(const char *path, const ks_model *m, const ks_record_options *o,
                             ks_recorder **out, int64_t *n_committed, ks_error *err) {
    ks_recorder *r = NULL;
    ident id[N_IDENT] = {{0}};
    hid_t fapl = -1;
    int64_t P = 0;
    ks_status st = recorder_new(path, m, o, &r, err);
    if (st) goto out;
    /* make it a cleanly closed file cut to its committed prompts, then reopen for writing */
    if ((st = ks_dump_repair(path, &P, err))) goto out;
    if ((st = identity(r, id, err))) goto out;
    fapl = latest_fapl(r);
    KS_H5_TRY(r->file = H5Fopen(path, H5F_ACC_RDWR, fapl), "%s: cannot open the dump for writing", path);
    for (int k = 0; k < N_IDENT; k++) {
        char *have = NULL;
        char num[32];
        int64_t v;
        if (ident_is_int(id[k].name)) {
            if (attr_read_i64(r->file, id[k].name, &v)) {
                snprintf(num, sizeof num, "%lld", (long long)v);
                have = strdup(num);
            }
        } else {
            have = attr_read_str(r->file, id[k].name);
        }
        bool same = have && strcmp(have, id[k].value) == 0;
        if (!same) {
            st = ks_error_set(err, KS_ERR_ARG,
                              "%s: cannot resume: its %s is '%.200s' but this run's is '%.200s' "
                              "(resume with the same model, prompts and options)",
                              path, id[k].name, have ? have : "(missing)", id[k].value);
            free(have);
            goto out;
        }
        free(have);
    }
    if ((st = open_datasets(r, err))) goto out;
    int64_t v = 0;
    if (!read_last_i64(r->d_poff, P + 1, &v)) {
        st = ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot read %s", path, KS_DS_PROMPT_OFFSETS);
        goto out;
    }
    r->n_tok = v;
    if (!read_last_i64(r->d_roff, P + 1, &r->n_rows) || !read_last_i64(r->d_aoff, P + 1, &r->n_attn)) {
        st = ks_h5_error(err, KS_ERR_FORMAT, "%s: cannot read the offsets", path);
        goto out;
    }
    r->n_prompts = r->w_prompts = r->committed = P;
    atomic_store(&r->committed_pub, P);
    int64_t rc = 0;
    attr_read_i64(r->file, "resume_count", &rc);
    if ((st = attr_num(r->file, "resume_count", H5T_STD_I32LE, rc + 1, path, err))) goto out;
    if ((st = attr_num(r->file, "complete", H5T_STD_I8LE, 0, path, err))) goto out;
    st = go_live(r, err);
out:
    finish_open(r, st, fapl, id, out);
    if (n_committed) *n_committed = st ? 0 : P;
    return st;
}

void ks_recorder_set_progress(ks_recorder *r, void (*fn)(const ks_record_progress *, void *),
                              void *user) {
    if (!r) return;
    r->progress = fn;
    r->progress_user = user;
}

size_t ks_recorder_peak_buffer(const ks_recorder *r) { return r ? r->peak : 0; }

double ks_recorder_hook_wait_seconds(ks_recorder *r) {
    if (!r) return 0;
    pthread_mutex_lock(&r->mu);
    double w = r->hook_wait_s;
    pthread_mutex_unlock(&r->mu);
    return w;
}

void ks_recorder_set_tap(ks_recorder *r, ks_hook_fn fn, void *user) {
    if (!r) return;
    r->tap = fn;
    r->tap_user = user;
}

int64_t ks_recorder_committed(const ks_recorder *r) { return r ? atomic_load(&r->committed_pub) : 0; }

/* ------------------------------------------------------------------ the hook */

static msg *msg_rows(int64_t start, int64_t count, size_t bytes) {
    msg *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->kind = MSG_ROWS;
    q->start = start;
    q->count = count;
    q->data = malloc(bytes ? bytes : 1);
    if (!q->data) {
        free(q);
        return NULL;
    }
    q->bytes = sizeof *q + bytes;
    return q;
}

/* n f32 values into the storage dtype at dst (the one pass over the hook's tensor). */
static void put_values(const ks_recorder *r, void *dst, const float *src, size_t n) {
    if (r->o.dtype == KS_DUMP_F32) memcpy(dst, src, n * sizeof(float));
    else if (r->o.dtype == KS_DUMP_F16) ks_f32_to_f16(src, dst, n);
    else ks_f32_to_bf16(src, dst, n);
}

/* n consecutive rows of a per-token tensor (src, src_row floats apart) into the open chunk of
 * s from row g on (the head subset where one is selected), split over the OpenMP threads when
 * there is enough to convert: a 7B model's residual rows on a GPU arrive faster than one core
 * converts them to 16 bits. */
static void convert_rows(const ks_recorder *r, rec_ds *s, int64_t g, const float *src,
                         size_t src_row, int n) {
    const size_t es = elem_size(r->o.dtype), per = (size_t)s->row_elems;
    const size_t hd = (size_t)s->dims[1];
    const bool subset = s->head_axis && r->n_heads != s->src_heads;
    char *dst = (char *)s->p_buf + (size_t)(g - s->p_c0) * per * es;
#pragma omp parallel for schedule(static) if ((size_t)n * per >= ((size_t)1 << 16) && n > 1)
    for (int i = 0; i < n; i++) {
        char *d = dst + (size_t)i * per * es;
        const float *x = src + (size_t)i * src_row;
        if (subset) {
            for (int hs = 0; hs < r->n_heads; hs++)
                put_values(r, d + (size_t)hs * hd * es, x + (size_t)r->heads[hs] * hd, hd);
        } else {
            put_values(r, d, x, per);
        }
    }
}

/* Hand the open chunk of s to the writer (the message owns the buffer from here). */
static ks_status ship(ks_recorder *r, rec_ds *s, ks_error *err) {
    msg *q = calloc(1, sizeof *q);
    if (!q) return ks_error_set(err, KS_ERR_NOMEM, "recording %s: out of memory", s->name);
    q->kind = MSG_CHUNK;
    q->ds = (int)(s - r->ds);
    q->start = s->p_c0;
    q->lo = s->p_lo;
    q->hi = s->p_hi;
    q->data = s->p_buf;
    q->data_bytes = chunk_size(r, s);
    q->bytes = sizeof *q + chunk_bytes(r, s);
    s->p_buf = NULL;
    return enqueue(r, q, err);
}

/* Make the open chunk of s the one holding row (column) g, filled up to g. Rows come in order;
 * g falls back only when a prompt is recorded after one that failed part way, whose rows are
 * then overwritten. Rows below the current prompt's first were in some prompt's view; rows from
 * it on never were, so what is dropped here the writer has not been told of. */
static ks_status open_at(ks_recorder *r, rec_ds *s, int64_t g, ks_error *err) {
    if (s->p_buf && g != s->p_hi) {
        if (g >= s->p_lo && g < s->p_hi) {
            s->p_hi = g;
        } else if (g < s->p_lo) {
            chunk_release(r, s->p_buf, chunk_size(r, s));
            s->p_buf = NULL;
        } else {
            ks_status st = ship(r, s, err); /* a gap (never in one run): what is filled goes */
            if (st) return st;
        }
    }
    if (!s->p_buf) {
        s->p_buf = chunk_alloc(r, chunk_size(r, s));
        if (!s->p_buf) return ks_error_set(err, KS_ERR_NOMEM, "recording %s: out of memory", s->name);
        s->p_c0 = g - g % s->chunk_n;
        s->p_lo = s->p_hi = g;
    }
    return KS_OK;
}

/* Rows (columns) up to `hi` are in the open chunk; a full one goes to the writer. */
static ks_status filled_to(ks_recorder *r, rec_ds *s, int64_t hi, ks_error *err) {
    s->p_hi = hi;
    return hi == s->p_c0 + s->chunk_n ? ship(r, s, err) : KS_OK;
}

static bool rec_copy(const ks_hook_tensor *t, bool ask, void *user);

/* The session's hook during ks_recorder_record: the recorder's copy, then the tap (which is
 * asked again when handed a tensor, since either of the two may have wanted it). */
static bool rec_hook(const ks_hook_tensor *t, bool ask, void *user) {
    ks_recorder *r = user;
    if (ask) {
        bool mine = rec_copy(t, true, r);
        return (r->tap && r->tap(t, true, r->tap_user)) || mine;
    }
    rec_copy(t, false, r);
    if (r->tap && r->tap(t, true, r->tap_user)) r->tap(t, false, r->tap_user);
    return false;
}

/* The selected rows (attention: the selected query rows' key columns, for the selected heads)
 * of a hook tensor, converted to the storage dtype straight into the open chunks. */
static bool rec_copy(const ks_hook_tensor *t, bool ask, void *user) {
    ks_recorder *r = user;
    size_t idx = (size_t)t->point * (size_t)(r->cfg.n_layers + 1) + (size_t)(t->layer + 1);
    int k = r->slot[idx];
    if (ask) return k >= 0 && !r->hook_failed;
    if (k < 0 || r->hook_failed) return false;
    rec_ds *s = &r->ds[k];
    ks_error e = {0};
    ks_status st = KS_OK;
    size_t es = elem_size(r->o.dtype);
    if (s->kind == KS_DUMP_KIND_ATTENTION) {
        int H = (int)t->shape[0], B = (int)t->shape[1], L = (int)t->shape[2];
        int64_t C = s->chunk_n;
        for (int i = 0; i < B && !st; i++) {
            int pos = t->pos0 + i;
            if (pos < 0 || pos >= r->cur_n || r->row_of[pos] < 0) continue;
            int64_t a = r->cur_astart[r->row_of[pos]], len = pos + 1, done = 0;
            while (done < len && !st) {
                int64_t g = a + done;
                if ((st = open_at(r, s, g, &e))) break;
                int64_t m = len - done < s->p_c0 + C - g ? len - done : s->p_c0 + C - g;
#pragma omp parallel for schedule(static) if ((size_t)m * (size_t)r->n_heads >= ((size_t)1 << 16))
                for (int hs = 0; hs < r->n_heads; hs++) {
                    int h = r->heads[hs];
                    char *dst = (char *)s->p_buf + ((size_t)hs * (size_t)C + (size_t)(g - s->p_c0)) * es;
                    if (h < H) put_values(r, dst, t->data + ((size_t)h * B + i) * (size_t)L + done, (size_t)m);
                    else memset(dst, 0, (size_t)m * es);
                }
                done += m;
                st = filled_to(r, s, g + m, &e);
            }
        }
    } else {
        int B = (int)t->shape[0];
        int64_t src_row = t->shape[1] * (t->ndim > 2 ? t->shape[2] : 1);
        /* rows going into the open chunk one after another are converted together, on the
         * OpenMP threads, before the chunk can be shipped */
        int run0 = -1, run_n = 0;
        int64_t run_g = 0;
        for (int i = 0; i <= B && !st; i++) {
            int pos = t->pos0 + i;
            bool sel = i < B && pos >= 0 && pos < r->cur_n && r->row_of[pos] >= 0;
            int64_t g = sel ? r->n_rows + r->row_of[pos] : -1;
            bool extends = sel && run_n && g == run_g + run_n && i == run0 + run_n &&
                           g < s->p_c0 + s->chunk_n;
            if (run_n && !extends) { /* convert the run, then maybe ship its chunk */
                convert_rows(r, s, run_g, t->data + (size_t)run0 * (size_t)src_row,
                             (size_t)src_row, run_n);
                st = filled_to(r, s, run_g + run_n, &e);
                run_n = 0;
            }
            if (!sel || st || extends) {
                if (extends) run_n++;
                continue;
            }
            if ((st = open_at(r, s, g, &e))) break;
            run0 = i;
            run_g = g;
            run_n = 1;
        }
    }
    if (st) {
        r->hook_failed = true;
        r->hook_err = e;
    }
    return false;
}

/* ------------------------------------------------------------------ per prompt */

/* Text of each token in context; byte pieces and anything that is not valid UTF-8 on its own
 * are shown as their piece ("<0xE2>"), so every string is valid UTF-8. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return false;
        i += k;
    }
    return true;
}

static char *token_string(const ks_tokenizer *tok, int prev, int id) {
    if (!tok) {
        char b[24];
        snprintf(b, sizeof b, "<%d>", id);
        return strdup(b);
    }
    ks_token_type ty = ks_tokenizer_type(tok, id);
    const char *piece = ks_tokenizer_piece(tok, id);
    if (ty == KS_TOKEN_BYTE || ty == KS_TOKEN_CONTROL || ty == KS_TOKEN_UNKNOWN)
        return strdup(piece ? piece : "");
    char buf[512];
    size_t n = ks_tokenizer_token_text(tok, prev, id, buf, sizeof buf);
    if (!valid_utf8((const unsigned char *)buf, n)) return strdup(piece ? piece : "");
    return strdup(buf);
}

static int cmp_desc(const void *a, const void *b, void *lg) {
    const float *l = lg;
    float x = l[*(const int *)a], y = l[*(const int *)b];
    return x < y ? 1 : x > y ? -1 : (*(const int *)a - *(const int *)b);
}

/* top-k of one row of logits: a partial selection then a sort of the k */
/* log-sum-exp of one row of logits (once per row: top-k and the next token's log-prob share it) */
static float row_lse(const float *lg, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    double sum = 0;
    for (int v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
    return mx + (float)log(sum);
}

static void topk_row(const float *lg, int V, int k, float lse, int32_t *ids, float *lp, int *scratch) {
    int n = 0;
    for (int v = 0; v < V; v++) {
        if (n < k) {
            scratch[n++] = v;
            if (n == k) qsort_r(scratch, (size_t)n, sizeof(int), cmp_desc, (void *)lg);
            continue;
        }
        if (lg[v] <= lg[scratch[k - 1]]) continue;
        int j = k - 1;
        while (j > 0 && lg[scratch[j - 1]] < lg[v]) {
            scratch[j] = scratch[j - 1];
            j--;
        }
        scratch[j] = v;
    }
    if (n < k) qsort_r(scratch, (size_t)n, sizeof(int), cmp_desc, (void *)lg);
    for (int i = 0; i < k; i++) {
        ids[i] = scratch[i];
        lp[i] = lg[scratch[i]] - lse;
    }
}


/* What runs the model for one prompt: calls the recorder's hook (rec_hook, user r) on the
 * tensors and, when want_logits, fills r->logits with [n, V] logits. */
typedef ks_status (*rec_runner)(void *ctx, ks_recorder *r, const int *tokens, int n, bool want_logits,
                                ks_error *err);
static ks_status record_one(ks_recorder *r, const int *tokens, int n, int n_prompt, const char *text,
                            const char *id, const char *generation, rec_runner run, void *run_ctx,
                            ks_error *err);

static ks_status check_prompt(const ks_recorder *r, const int *tokens, int n, int n_prompt, const char *text,
                              const char *id, const char *generation, int max_seq, ks_error *err) {
    if (!r || !tokens || n <= 0 || n_prompt < 0 || n_prompt > n)
        return ks_error_set(err, KS_ERR_ARG, "ks_recorder_record: invalid arguments");
    if (text && strlen(text) > r->w_text)
        return ks_error_set(err, KS_ERR_RANGE, "prompt %s: its text of %zu bytes is longer than the dump's "
                            "max_text_bytes %zu", id ? id : "?", strlen(text), r->w_text);
    if (id && strlen(id) >= r->w_id)
        return ks_error_set(err, KS_ERR_RANGE, "prompt id '%.80s' is longer than %zu bytes", id, r->w_id - 1);
    if (generation && strlen(generation) > r->w_gen)
        return ks_error_set(err, KS_ERR_RANGE, "prompt %s: a generation of %zu bytes is longer than "
                            "generate_max_tokens allows", id ? id : "?", strlen(generation));
    if (n > max_seq)
        return ks_error_set(err, KS_ERR_RANGE,
                            "prompt %s: %d tokens exceed the context length %d (raise --ctx up to "
                            "the model's %d, or shorten the prompt)",
                            id ? id : "?", n, max_seq, r->cfg.max_seq_len);
    return KS_OK;
}

static ks_status run_forward(void *ctx, ks_recorder *r, const int *tokens, int n, bool want_logits,
                             ks_error *err) {
    ks_session *s = ctx;
    ks_session_reset(s);
    ks_session_set_hook(s, rec_hook, r);
    ks_session_set_hook_read_only(s, true);
    ks_status st = ks_session_forward(s, tokens, n, want_logits ? KS_LOGITS_ALL : KS_LOGITS_NONE,
                                      want_logits ? r->logits : NULL, err);
    ks_session_set_hook(s, NULL, NULL);
    return st;
}

ks_status ks_recorder_record(ks_recorder *r, ks_session *s, const int *tokens, int n, int n_prompt,
                             const char *text, const char *id, const char *generation,
                             ks_error *err) {
    if (!s) return ks_error_set(err, KS_ERR_ARG, "ks_recorder_record: invalid arguments");
    ks_status st = check_prompt(r, tokens, n, n_prompt, text, id, generation, ks_session_max_seq(s), err);
    if (st) return st;
    return record_one(r, tokens, n, n_prompt, text, id, generation, run_forward, s, err);
}

typedef struct {
    const ks_hook_tensor *t;
    int n_t;
    const float *logits;
} replay_ctx;

static ks_status run_replay(void *ctx, ks_recorder *r, const int *tokens, int n, bool want_logits,
                            ks_error *err) {
    (void)tokens;
    replay_ctx *c = ctx;
    for (int i = 0; i < c->n_t; i++) {
        ks_hook_tensor ask = c->t[i];
        ask.data = NULL;
        if (rec_hook(&ask, true, r)) rec_hook(&c->t[i], false, r);
    }
    if (want_logits) {
        if (!c->logits) return ks_error_set(err, KS_ERR_ARG, "replay: the recorder wants logits");
        memcpy(r->logits, c->logits, (size_t)n * (size_t)r->cfg.vocab_size * sizeof(float));
    }
    return KS_OK;
}

ks_status ks_recorder_record_replay(ks_recorder *r, const int *tokens, int n, const ks_hook_tensor *tensors,
                                    int n_tensors, const float *logits, ks_error *err) {
    ks_status st = check_prompt(r, tokens, n, n, NULL, NULL, NULL, r ? r->cfg.max_seq_len : 0, err);
    if (st) return st;
    replay_ctx c = {tensors, n_tensors, logits};
    return record_one(r, tokens, n, n, NULL, NULL, NULL, run_replay, &c, err);
}

static ks_status record_one(ks_recorder *r, const int *tokens, int n, int n_prompt, const char *text,
                            const char *id, const char *generation, rec_runner run, void *run_ctx,
                            ks_error *err) {
    ks_status st = KS_OK;
    bool *keep = malloc((size_t)n * sizeof *keep);
    int *row_of = malloc((size_t)n * sizeof *row_of);
    int64_t *astart = malloc((size_t)n * sizeof *astart);
    msg *q = calloc(1, sizeof *q);
    const int V = r->cfg.vocab_size, K = r->o.logits_topk;
    int n_keep = 0;
    if (!keep || !row_of || !astart || !q) {
        st = ks_error_set(err, KS_ERR_NOMEM, "recording: out of memory");
        goto out;
    }
    if ((st = ks_select_positions(r->positions, n, keep, &n_keep, err))) goto out;
    int64_t k0 = r->n_attn;
    int rows = 0;
    for (int i = 0; i < n; i++) {
        row_of[i] = keep[i] ? rows : -1;
        if (keep[i]) {
            astart[rows] = k0;
            k0 += i + 1;
            rows++;
        }
    }
    r->cur_n = n;
    r->row_of = row_of;
    r->cur_astart = astart;
    r->cur_rows = rows;
    r->hook_failed = false;
    size_t lslot = (size_t)KS_HOOK_LOGITS * (size_t)(r->cfg.n_layers + 1);
    ks_hook_tensor ask_logits = {.name = "logits", .point = KS_HOOK_LOGITS, .layer = -1};
    bool want_logits = K > 0 || r->o.logits_full || r->slot[lslot] >= 0 ||
                       (r->tap && r->tap(&ask_logits, true, r->tap_user));
    if (want_logits && (size_t)n * (size_t)V > r->logits_cap) {
        float *lg = realloc(r->logits, (size_t)n * (size_t)V * sizeof(float));
        if (!lg) {
            st = ks_error_set(err, KS_ERR_NOMEM, "logits of %d tokens: out of memory", n);
            goto out;
        }
        r->logits = lg;
        r->logits_cap = (size_t)n * (size_t)V;
    }
    st = run(run_ctx, r, tokens, n, want_logits, err);
    r->row_of = NULL;
    r->cur_astart = NULL;
    if (st) goto out;
    if (r->hook_failed) {
        st = r->hook_err.code ? r->hook_err.code : KS_ERR_IO;
        if (err) *err = r->hook_err;
        goto out;
    }
    /* the per-prompt message */
    q->kind = MSG_PROMPT;
    q->n_tok = n;
    q->n_prompt = n_prompt;
    q->n_rows = rows;
    q->text = dup_or_empty(text);
    q->id = dup_or_empty(id);
    q->gen = dup_or_empty(generation);
    q->tokens = malloc((size_t)n * sizeof(int32_t));
    q->tok_str = calloc((size_t)n, sizeof(char *));
    q->row_pos = malloc((size_t)(rows ? rows : 1) * sizeof(int32_t));
    q->attn_start = malloc((size_t)(rows ? rows : 1) * sizeof(int64_t));
    if (!q->text || !q->id || !q->gen || !q->tokens || !q->tok_str || !q->row_pos || !q->attn_start) {
        st = ks_error_set(err, KS_ERR_NOMEM, "recording: out of memory");
        goto out;
    }
    size_t bytes = sizeof *q + (size_t)n * 40 + (size_t)rows * 12;
    const ks_tokenizer *tok = ks_model_tokenizer(r->m);
    for (int i = 0; i < n; i++) {
        q->tokens[i] = tokens[i];
        q->tok_str[i] = token_string(tok, i ? tokens[i - 1] : -1, tokens[i]);
        if (!q->tok_str[i]) {
            st = ks_error_set(err, KS_ERR_NOMEM, "recording: out of memory");
            goto out;
        }
    }
    for (int i = 0, j = 0; i < n; i++)
        if (keep[i]) q->row_pos[j++] = i;
    memcpy(q->attn_start, astart, (size_t)rows * sizeof(int64_t));
    if (K > 0) {
        q->topk_ids = malloc((size_t)(rows ? rows : 1) * (size_t)K * sizeof(int32_t));
        q->topk_lp = malloc((size_t)(rows ? rows : 1) * (size_t)K * sizeof(float));
        q->next_lp = malloc((size_t)(rows ? rows : 1) * sizeof(float));
        int *scratch = malloc((size_t)K * sizeof(int));
        if (!q->topk_ids || !q->topk_lp || !q->next_lp || !scratch) {
            free(scratch);
            st = ks_error_set(err, KS_ERR_NOMEM, "recording: out of memory");
            goto out;
        }
        for (int j = 0; j < rows; j++) {
            int pos = q->row_pos[j];
            const float *lg = r->logits + (size_t)pos * V;
            float lse = row_lse(lg, V);
            topk_row(lg, V, K, lse, q->topk_ids + (size_t)j * K, q->topk_lp + (size_t)j * K, scratch);
            q->next_lp[j] = pos + 1 < n ? lg[tokens[pos + 1]] - lse : NAN;
        }
        free(scratch);
        bytes += (size_t)rows * (size_t)K * 8;
    }
    if (r->o.logits_full && rows > 0) {
        size_t es = elem_size(r->o.dtype);
        msg *fq = msg_rows(r->n_rows, rows, (size_t)rows * (size_t)V * es);
        if (!fq) {
            st = ks_error_set(err, KS_ERR_NOMEM, "recording: out of memory");
            goto out;
        }
        for (int j = 0; j < rows; j++)
            put_values(r, (char *)fq->data + (size_t)j * V * es, r->logits + (size_t)q->row_pos[j] * V, (size_t)V);
        if ((st = enqueue(r, fq, err))) goto out;
    }
    /* where the open chunks stand: what a commit after this prompt writes of them */
    q->views = calloc((size_t)(r->n_ds ? r->n_ds : 1), sizeof *q->views);
    if (!q->views) {
        st = ks_error_set(err, KS_ERR_NOMEM, "recording: out of memory");
        goto out;
    }
    for (int i = 0; i < r->n_ds; i++) {
        const rec_ds *s = &r->ds[i];
        if (s->p_buf && s->p_hi > s->p_lo) q->views[i] = (chunk_view){s->p_buf, s->p_c0, s->p_lo, s->p_hi};
    }
    bytes += (size_t)r->n_ds * sizeof *q->views;
    q->end_tok = r->n_tok + n;
    q->end_row = r->n_rows + rows;
    q->end_attn = k0;
    q->bytes = bytes;
    msg *qq = q;
    q = NULL;
    if ((st = enqueue(r, qq, err))) goto out;
    r->n_tok += n;
    r->n_rows += rows;
    r->n_attn = k0;
    r->n_prompts++;
    r->run_prompts++;
    r->run_tokens += n;
    if (r->progress) {
        ks_record_progress pr = {r->run_prompts, atomic_load(&r->committed_pub), r->run_tokens,
                                 atomic_load(&r->bytes_written), 0};
        pthread_mutex_lock(&r->mu);
        pr.buffer_bytes = r->queued;
        pthread_mutex_unlock(&r->mu);
        r->progress(&pr, r->progress_user);
    }
out:
    msg_free(q);
    free(keep);
    free(row_of);
    free(astart);
    return st;
}

/* ------------------------------------------------------------------ finish */

ks_status ks_recorder_finish(ks_recorder *r, ks_error *err) {
    if (!r) return ks_error_set(err, KS_ERR_ARG, "ks_recorder_finish: NULL");
    msg *q = calloc(1, sizeof *q);
    if (!q) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    q->kind = MSG_COMMIT;
    q->bytes = sizeof *q;
    ks_status st = enqueue(r, q, err);
    if (!st) st = drain(r, err);
    stop_writer(r);
    if (st) return st;
    int64_t committed = r->committed;
    close_datasets(r);
    hid_t f = r->file;
    r->file = -1;
    if (H5Fclose(f) < 0) return ks_h5_error(err, KS_ERR_IO, "%s: cannot close", r->path);
    bool all = r->o.n_prompts_planned < 0 || committed >= r->o.n_prompts_planned;
    if (!all) return KS_OK;
    /* mark complete: a plain (non-SWMR) open, one attribute; if this is interrupted the dump
     * holds every prompt and `--resume` marks it */
    hid_t fapl = latest_fapl(r);
    f = H5Fopen(r->path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (f < 0) return ks_h5_error(err, KS_ERR_IO, "%s: cannot reopen to mark it complete", r->path);
    st = attr_num(f, "complete", H5T_STD_I8LE, 1, r->path, err);
    if (H5Fclose(f) < 0 && !st) st = ks_h5_error(err, KS_ERR_IO, "%s: cannot close", r->path);
    return st;
}

void ks_recorder_free(ks_recorder *r) {
    if (!r) return;
    stop_writer(r);
    for (msg *q = r->head; q;) {
        msg *nx = q->next;
        msg_free(q);
        q = nx;
    }
    /* After a failed write (disk full) the file is abandoned, not closed: closing would flush
     * metadata that points at data that never reached the disk, leaving a file nothing opens.
     * Unclosed, it stays as a killed writer leaves it: its last commit, readable, resumable.
     * The HDF5 handles leak until exit (ks_h5_init turns off HDF5's flush at exit). */
    if (!r->failed) {
        close_datasets(r);
        if (r->file >= 0) H5Fclose(r->file);
    }
    if (r->t_store >= 0) H5Tclose(r->t_store);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv_space);
    pthread_cond_destroy(&r->cv_work);
    pthread_cond_destroy(&r->cv_idle);
    free(r->path);
    free(r->positions);
    free(r->heads_spec);
    for (int i = 0; r->ds && i < r->n_ds; i++) /* the writer has stopped */
        if (r->ds[i].p_buf) munmap(r->ds[i].p_buf, chunk_size(r, &r->ds[i]));
    free(r->ds);
    free(r->slot);
    free(r->heads);
    free(r->logits);
    free(r->pend);
    free(r->conv);
    free(r->scratch);
    while (r->spare) {
        spare *nx = r->spare->next;
        munmap(r->spare, r->spare->size);
        r->spare = nx;
    }
    if (r->trace_fd >= 0) close(r->trace_fd);
    free(r);
}
