/* export_arrays.c — `koalascope export safetensors|npz|csv` and `koalascope import
 * safetensors` (docs/EXPORT.md): a dump's activations as files that NumPy, PyTorch and
 * safetensors load without h5py, and /attributions results as CSV.
 *
 * The exports stream. The whole layout (every tensor's key, dtype, shape and byte size) is
 * planned first from the dump's offsets, so the safetensors header and the zip local headers
 * are written before any data; then each tensor is copied from HDF5 in slabs of at most
 * CHUNK_BYTES. Memory stays bounded by that whatever the dump's size.
 *
 * Values are copied bit for bit: each slab is read in the dataset's own (little-endian) float
 * type, so HDF5 converts nothing, f16 and bf16 included. The ks_dump reader gives offsets,
 * hooks and tokens (and validates the file); the raw slabs are read through a second,
 * read-only HDF5 handle, because the reader's row functions convert to f32.
 *
 * Output goes to OUT.tmp and is renamed to OUT only when everything was written; any failure
 * removes the temporary file, so a failed export leaves no OUT behind. */
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>
#include <jansson.h>
#include <zlib.h>

#include "cli.h"
#include "dump_private.h"
#include "ks_dump.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "export_arrays.c writes native integers as the little-endian data of .npy/safetensors"
#endif

/* Largest slab read from HDF5 at once (and the size of the one copy buffer). */
#define CHUNK_BYTES ((size_t)64 << 20)
/* Zip (PKWARE APPNOTE 6.3): sizes and offsets of 2^32 - 1 or more, and more than 65,535
 * entries, go to zip64 fields (APPNOTE 4.5.3, 4.3.14-15); smaller archives are plain zip. */
#define ZIP_LIMIT 0xFFFFFFFFull
#define ZIP_MAX_ENTRIES 65535

/* ================================================================ help */

static const char *help_safetensors =
    "Usage: koalascope export safetensors DUMP.h5 -o OUT.safetensors [options]\n"
    "Write a dump's activations as one safetensors file (docs/EXPORT.md).\n"
    "  -o, --output FILE   the file to write (written as FILE.tmp, renamed at the end)\n"
    "  --hooks GLOB,...    hooks to export, shell globs on the recorded TransformerLens names\n"
    "                      ('blocks.*.hook_resid_post,blocks.0.attn.*'); default: all\n"
    "  --prompts LIST      prompt indices, e.g. 0,2-5; default: every committed prompt\n"
    "  --layout L          per-prompt (default): one tensor '<hook>.<prompt>' per hook and\n"
    "                      prompt, [rows, ...] like an ActivationCache, attention patterns\n"
    "                      and scores rebuilt to [heads, T, T] (zero above the diagonal), and\n"
    "                      'tokens.<prompt>' (I32);\n"
    "                      packed: one tensor per hook as the dump stores it ([R, ...] or\n"
    "                      [heads, K]) with prompt_offsets, row_offsets, tokens, row_positions\n"
    "                      (and attn_offsets, attn_row_starts) re-based to the selection\n"
    "  --f32               store f16/bf16 activations as F32 (exact); default: as stored\n"
    "  -h, --help          this help\n"
    "dtype: as stored in the dump (F32, F16, BF16). __metadata__ holds the dump's provenance\n"
    "and \"layout\". Load with: from safetensors.numpy import load_file\n";

static const char *help_npz =
    "Usage: koalascope export npz DUMP.h5 -o OUT.npz [options]\n"
    "Write a dump's activations as a NumPy .npz (an uncompressed zip of .npy files, streamed;\n"
    "docs/EXPORT.md). Keys and shapes are those of `export safetensors`.\n"
    "  -o, --output FILE   the file to write (written as FILE.tmp, renamed at the end)\n"
    "  --hooks GLOB,...    hooks to export (shell globs on the recorded names); default: all\n"
    "  --prompts LIST      prompt indices, e.g. 0,2-5; default: every committed prompt\n"
    "  --layout L          per-prompt (default) or packed, as for safetensors\n"
    "  --f32               store f16/bf16 as float32 (exact). Without it bf16, which NumPy\n"
    "                      has no dtype for, is stored as '<u2' raw bits: x.astype(np.uint32)\n"
    "                      << 16 viewed as float32 gives the values\n"
    "  -h, --help          this help\n"
    "An .npz of 4 GiB or more, or of more than 65,535 arrays, is written as zip64 (which\n"
    "NumPy reads).\n"
    "written; select fewer hooks or prompts, or use safetensors. Load with np.load(OUT).\n";

static const char *help_csv =
    "Usage: koalascope export csv FILE.h5 -o OUT.csv [--name NAME]\n"
    "Write attribution results (/attributions of a dump or of a file of attribution results,\n"
    "docs/FORMAT.md) as CSV, one row per cell (docs/EXPORT.md): one column per axis named by\n"
    "the result's `axes` (its index), then `token` and `piece` (id and text of the token at\n"
    "that position) when an axis is `position`, then `value` (9 significant digits: the\n"
    "float32 exactly; nan, inf, -inf as such).\n"
    "  -o, --output FILE   the file to write ('-': standard output)\n"
    "  --name NAME         only the result /attributions/NAME; without it every result, with\n"
    "                      a first column `name` (the union of their axes as columns, empty\n"
    "                      where a result has no such axis)\n"
    "  -h, --help          this help\n"
    "Only attribution and patching results exist: probe and audit results are not in the\n"
    "format yet, so there is nothing to export for them.\n";

static const char *help_import =
    "Usage: koalascope import safetensors CACHE.safetensors -o DUMP.h5 --model MODEL [options]\n"
    "Build a dump (docs/FORMAT.md) from a TransformerLens-style cache in the per-prompt layout\n"
    "of `koalascope export safetensors` (docs/EXPORT.md): keys 'tokens.<p>' (I32) and\n"
    "'<hook>.<p>' ([T, ...], attention [heads, T, T]), one dtype (F32, F16 or BF16) for all.\n"
    "The dump is laid out by the recorder for MODEL (same hooks, the cache's tokens, storage\n"
    "dtype of the cache); then every activation is replaced by the cache's values, bit for\n"
    "bit (attention: the causal part; the rest of a square map is dropped). Prompts are\n"
    "numbered 0.. in the order of their indices in the cache.\n"
    "  -o, --output FILE   the dump to write (as FILE.tmp, renamed at the end)\n"
    "  --model MODEL       the model the cache belongs to (its shapes must match)\n"
    "  --tokenizer FILE    the model's tokenizer where it has none inside (llama2.c)\n"
    "  --threads N         threads for the recorder's forward (default: all cores)\n"
    "  --overwrite         replace an existing DUMP\n"
    "  -h, --help          this help\n"
    "Not supported: caches of a position selection ('positions.<p>' keys), the packed layout.\n";

/* ================================================================ messages */

#define usage cli_usage
#define fail_msg(cmd, msg) cli_error((cmd), "%s", (msg))

/* HDF5 prints its own error stack unless told not to; every failure here is reported with
 * the file and object instead. */
static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* Open read-only; a dump whose writer was killed keeps HDF5's "open for writing" flag and
 * opens only as a SWMR reader (as the ks_dump reader does). */
static hid_t h5_open_ro(const char *path, ks_error *err) {
    if (ks_h5_check_superblock(path, err)) return -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) f = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT);
    return f;
}

/* ================================================================ the plan */

typedef enum { DT_F32, DT_F16, DT_BF16, DT_I32, DT_I64 } out_dtype;
static const char *const st_dtype_name[] = {"F32", "F16", "BF16", "I32", "I64"};
/* bf16 has no NumPy dtype: its raw bits as uint16 (docs/EXPORT.md) */
static const char *const npy_descr[] = {"<f4", "<f2", "<u2", "<i4", "<i8"};
static const size_t dtype_size[] = {4, 2, 2, 4, 8};

typedef enum {
    T_TOKENS,         /* per prompt: /tokens of the prompt [T] */
    T_POSITIONS,      /* per prompt: /row_positions of the prompt [rows] */
    T_ROWS,           /* token hook: rows of one prompt, or of every selected prompt (packed) */
    T_SQUARE,         /* attention hook, per prompt: [heads, T, T] */
    T_KEYS,           /* attention hook, packed: [heads, K of the selection] */
    T_PROMPT_OFFSETS, /* packed bookkeeping, re-based to the selection */
    T_ROW_OFFSETS,
    T_ATTN_OFFSETS,
    T_ALL_TOKENS,
    T_ROW_POSITIONS,
    T_ATTN_ROW_STARTS,
} tensor_kind;

typedef struct {
    char *key;
    tensor_kind kind;
    out_dtype dtype;
    int ndim;
    int64_t shape[4];
    uint64_t bytes;
    int hook;       /* index into the dump's hooks (T_ROWS, T_SQUARE, T_KEYS) */
    int64_t sel;    /* index into the selected prompts (per-prompt tensors) */
} tensor;

typedef struct {
    const char *cmd;      /* "export safetensors", for messages */
    const char *dump_path;
    const char *tmp_path; /* what is being written */
    ks_dump *d;
    hid_t file;
    hid_t *ds;            /* per dump hook, opened on first use */
    int64_t n_sel;
    int64_t *prompts;     /* [n_sel] selected prompt indices, ascending */
    ks_dump_prompt *pi;   /* [n_sel] */
    bool *hook_on;        /* [n_hooks] */
    bool packed, f32;
    tensor *t;
    int nt, cap_t;
    unsigned char *buf;   /* CHUNK_BYTES */
    unsigned char *row;   /* one square-map row, T elements */
    ks_error err;
} exporter;

/* Where the bytes go: the temporary file, with a running CRC-32 (npz) and count. */
typedef struct {
    FILE *f;
    uLong crc;
    uint64_t n;
} sink;

static ks_status sink_write(exporter *x, sink *k, const void *p, size_t n) {
    if (n == 0) return KS_OK;
    if (fwrite(p, 1, n, k->f) != n)
        return ks_error_set(&x->err, KS_ERR_IO, "%s: write failed: %s", x->tmp_path, strerror(errno));
    /* zlib's crc32 takes uInt lengths: feed it in pieces below 4 GiB */
    for (size_t off = 0; off < n;) {
        size_t m = n - off > (1u << 30) ? (1u << 30) : n - off;
        k->crc = crc32(k->crc, (const Bytef *)p + off, (uInt)m);
        off += m;
    }
    k->n += n;
    return KS_OK;
}

static ks_status add_tensor(exporter *x, const char *key, tensor_kind kind, out_dtype dt, int ndim,
                            const int64_t *shape, int hook, int64_t sel) {
    if (x->nt == x->cap_t) {
        int cap = x->cap_t ? 2 * x->cap_t : 64;
        tensor *t = realloc(x->t, (size_t)cap * sizeof *t);
        if (!t) return ks_error_set(&x->err, KS_ERR_NOMEM, "out of memory planning the export");
        x->t = t;
        x->cap_t = cap;
    }
    tensor *t = &x->t[x->nt];
    memset(t, 0, sizeof *t);
    if (!(t->key = strdup(key))) return ks_error_set(&x->err, KS_ERR_NOMEM, "out of memory");
    x->nt++;
    t->kind = kind;
    t->dtype = dt;
    t->ndim = ndim;
    uint64_t elems = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        if (shape[i] < 0 || (shape[i] && elems > UINT64_MAX / 16 / (uint64_t)shape[i]))
            return ks_error_set(&x->err, KS_ERR_FORMAT, "%s: tensor %s: shape overflows",
                                x->dump_path, key);
        elems *= (uint64_t)shape[i];
    }
    t->bytes = elems * dtype_size[dt];
    t->hook = hook;
    t->sel = sel;
    return KS_OK;
}

static out_dtype hook_dtype(const exporter *x, const ks_dump_hook *h) {
    if (x->f32) return DT_F32;
    return h->dtype == KS_DUMP_F16 ? DT_F16 : h->dtype == KS_DUMP_BF16 ? DT_BF16 : DT_F32;
}

static bool positions_all(const exporter *x) {
    const char *p = ks_dump_attr(x->d, "positions");
    return !p || !strcmp(p, "all");
}

/* Every tensor of the export, in file order (docs/EXPORT.md). */
static ks_status plan(exporter *x) {
    ks_status s;
    char key[512];
    int nh = ks_dump_n_hooks(x->d);
    if (!x->packed) {
        bool with_pos = !positions_all(x);
        for (int64_t i = 0; i < x->n_sel; i++) {
            const ks_dump_prompt *pi = &x->pi[i];
            int64_t p = x->prompts[i];
            snprintf(key, sizeof key, "tokens.%lld", (long long)p);
            if ((s = add_tensor(x, key, T_TOKENS, DT_I32, 1, &pi->n_tokens, -1, i))) return s;
            if (with_pos) {
                snprintf(key, sizeof key, "positions.%lld", (long long)p);
                if ((s = add_tensor(x, key, T_POSITIONS, DT_I32, 1, &pi->n_rows, -1, i))) return s;
            }
            for (int hi = 0; hi < nh; hi++) {
                if (!x->hook_on[hi]) continue;
                const ks_dump_hook *h = ks_dump_hook_at(x->d, hi);
                snprintf(key, sizeof key, "%s.%lld", h->name, (long long)p);
                if (h->kind == KS_DUMP_KIND_TOKEN) {
                    int64_t shape[3] = {pi->n_rows, h->dims[0], h->dims[1]};
                    s = add_tensor(x, key, T_ROWS, hook_dtype(x, h), 1 + h->ndim, shape, hi, i);
                } else {
                    int64_t shape[3] = {h->dims[0], pi->n_tokens, pi->n_tokens};
                    s = add_tensor(x, key, T_SQUARE, hook_dtype(x, h), 3, shape, hi, i);
                }
                if (s) return s;
            }
        }
        return KS_OK;
    }
    int64_t N = 0, R = 0, K = 0, P1 = x->n_sel + 1;
    bool any_attn = false;
    for (int64_t i = 0; i < x->n_sel; i++) {
        N += x->pi[i].n_tokens;
        R += x->pi[i].n_rows;
        K += x->pi[i].n_attn;
    }
    for (int hi = 0; hi < nh; hi++)
        if (x->hook_on[hi] && ks_dump_hook_at(x->d, hi)->kind == KS_DUMP_KIND_ATTENTION) any_attn = true;
    if ((s = add_tensor(x, "prompt_offsets", T_PROMPT_OFFSETS, DT_I64, 1, &P1, -1, -1)) ||
        (s = add_tensor(x, "row_offsets", T_ROW_OFFSETS, DT_I64, 1, &P1, -1, -1)) ||
        (s = add_tensor(x, "tokens", T_ALL_TOKENS, DT_I32, 1, &N, -1, -1)) ||
        (s = add_tensor(x, "row_positions", T_ROW_POSITIONS, DT_I32, 1, &R, -1, -1)))
        return s;
    if (any_attn && ((s = add_tensor(x, "attn_offsets", T_ATTN_OFFSETS, DT_I64, 1, &P1, -1, -1)) ||
                     (s = add_tensor(x, "attn_row_starts", T_ATTN_ROW_STARTS, DT_I64, 1, &R, -1, -1))))
        return s;
    for (int hi = 0; hi < nh; hi++) {
        if (!x->hook_on[hi]) continue;
        const ks_dump_hook *h = ks_dump_hook_at(x->d, hi);
        if (h->kind == KS_DUMP_KIND_TOKEN) {
            int64_t shape[3] = {R, h->dims[0], h->dims[1]};
            s = add_tensor(x, h->name, T_ROWS, hook_dtype(x, h), 1 + h->ndim, shape, hi, -1);
        } else {
            int64_t shape[2] = {h->dims[0], K};
            s = add_tensor(x, h->name, T_KEYS, hook_dtype(x, h), 2, shape, hi, -1);
        }
        if (s) return s;
    }
    return KS_OK;
}

/* ================================================================ copying data */

static ks_status hook_ds(exporter *x, int hi, hid_t *out) {
    if (x->ds[hi] < 0) {
        char path[512];
        snprintf(path, sizeof path, "activations/%s", ks_dump_hook_at(x->d, hi)->name);
        if ((x->ds[hi] = H5Dopen2(x->file, path, H5P_DEFAULT)) < 0)
            return ks_error_set(&x->err, KS_ERR_FORMAT, "%s: cannot open /%s", x->dump_path, path);
    }
    *out = x->ds[hi];
    return KS_OK;
}

/* A slab of hook hi into out, in the dataset's own float type made little-endian (so no
 * conversion: the stored bits), or as float32 when to_f32. */
static ks_status read_slab(exporter *x, int hi, int rank, const hsize_t *start, const hsize_t *count,
                           bool to_f32, void *out) {
    ks_status s = KS_OK;
    hid_t ds, fspace = -1, mspace = -1, ftype = -1, mtype = -1;
    const char *name = ks_dump_hook_at(x->d, hi)->name;
    if ((s = hook_ds(x, hi, &ds))) return s;
    if ((fspace = H5Dget_space(ds)) < 0 || H5Sget_simple_extent_ndims(fspace) != rank ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        (mspace = H5Screate_simple(rank, count, NULL)) < 0) {
        s = ks_error_set(&x->err, KS_ERR_FORMAT, "%s: /activations/%s: cannot select [%llu + %llu] "
                         "(a rank-%d dataset expected)", x->dump_path, name,
                         (unsigned long long)start[0], (unsigned long long)count[0], rank);
        goto out;
    }
    if (to_f32) {
        mtype = H5Tcopy(H5T_NATIVE_FLOAT);
    } else if ((ftype = H5Dget_type(ds)) >= 0 && (mtype = H5Tcopy(ftype)) >= 0) {
        H5Tset_order(mtype, H5T_ORDER_LE);
    }
    if (mtype < 0 || H5Dread(ds, mtype, mspace, fspace, H5P_DEFAULT, out) < 0)
        s = ks_error_set(&x->err, KS_ERR_IO, "%s: /activations/%s: cannot read %s %llu..%llu",
                         x->dump_path, name, rank == 2 ? "keys" : "rows",
                         (unsigned long long)start[rank == 2 ? 1 : 0],
                         (unsigned long long)(start[rank == 2 ? 1 : 0] + count[rank == 2 ? 1 : 0]));
out:
    if (mtype >= 0) H5Tclose(mtype);
    if (ftype >= 0) H5Tclose(ftype);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return s;
}

/* Rows [r0, r0 + n) of token hook hi, CHUNK_BYTES at a time. */
static ks_status copy_rows(exporter *x, sink *k, const tensor *t, int64_t r0, int64_t n) {
    const ks_dump_hook *h = ks_dump_hook_at(x->d, t->hook);
    size_t row_bytes = (size_t)h->row_elems * dtype_size[t->dtype];
    int64_t step = row_bytes ? (int64_t)(CHUNK_BYTES / row_bytes) : n;
    if (step < 1) step = 1; /* a row over 64 MiB: would need a bigger buffer */
    if ((size_t)step * row_bytes > CHUNK_BYTES)
        return ks_error_set(&x->err, KS_ERR_UNSUPPORTED, "%s: /activations/%s: one row is %zu bytes, "
                            "more than the %zu-byte copy buffer", x->dump_path, h->name, row_bytes,
                            CHUNK_BYTES);
    for (int64_t i = 0; i < n; i += step) {
        int64_t m = n - i < step ? n - i : step;
        hsize_t start[3] = {(hsize_t)(r0 + i), 0, 0};
        hsize_t count[3] = {(hsize_t)m, (hsize_t)h->dims[0], (hsize_t)h->dims[1]};
        ks_status s = read_slab(x, t->hook, 1 + h->ndim, start, count, t->dtype == DT_F32 && h->dtype != KS_DUMP_F32, x->buf);
        if (!s) s = sink_write(x, k, x->buf, (size_t)m * row_bytes);
        if (s) return s;
    }
    return KS_OK;
}

/* Keys [a0, a0 + n) of one head slot of attention hook hi. */
static ks_status copy_keys(exporter *x, sink *k, const tensor *t, int head, int64_t a0, int64_t n) {
    const ks_dump_hook *h = ks_dump_hook_at(x->d, t->hook);
    size_t es = dtype_size[t->dtype];
    int64_t step = (int64_t)(CHUNK_BYTES / es);
    for (int64_t i = 0; i < n; i += step) {
        int64_t m = n - i < step ? n - i : step;
        hsize_t start[2] = {(hsize_t)head, (hsize_t)(a0 + i)};
        hsize_t count[2] = {1, (hsize_t)m};
        ks_status s = read_slab(x, t->hook, 2, start, count, t->dtype == DT_F32 && h->dtype != KS_DUMP_F32, x->buf);
        if (!s) s = sink_write(x, k, x->buf, (size_t)m * es);
        if (s) return s;
    }
    return KS_OK;
}

/* Attention hook hi of one prompt as [heads, T, T]: row q holds keys 0..q of the row recorded
 * at position q (docs/FORMAT.md's recipe), zeros above the diagonal and in rows that were not
 * recorded. The keys are read in windows of at most CHUNK_BYTES holding whole rows. */
static ks_status copy_square(exporter *x, sink *k, const tensor *t) {
    ks_status s = KS_OK;
    const ks_dump_prompt *pi = &x->pi[t->sel];
    const ks_dump_hook *h = ks_dump_hook_at(x->d, t->hook);
    int64_t T = pi->n_tokens;
    size_t es = dtype_size[t->dtype];
    int64_t win_cap = (int64_t)(CHUNK_BYTES / es);
    int32_t *pos = NULL;
    bool to_f32 = t->dtype == DT_F32 && h->dtype != KS_DUMP_F32;
    if (T == 0) return KS_OK;
    if (T > win_cap) /* a row must fit one window */
        return ks_error_set(&x->err, KS_ERR_UNSUPPORTED, "%s: prompt %lld has %lld tokens: too long "
                            "for a square attention map", x->dump_path, (long long)x->prompts[t->sel],
                            (long long)T);
    free(x->row);
    if (!(x->row = malloc((size_t)T * es)) ||
        (pi->n_rows && !(pos = malloc((size_t)pi->n_rows * sizeof *pos)))) {
        s = ks_error_set(&x->err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((s = ks_dump_read_positions(x->d, x->prompts[t->sel], pos, (size_t)pi->n_rows, &x->err)))
        goto out;
    for (int head = 0; head < h->dims[0]; head++) {
        int64_t r = 0, off = 0, wbeg = 0, wlen = 0;
        for (int64_t q = 0; q < T; q++) {
            memset(x->row, 0, (size_t)T * es);
            if (r < pi->n_rows && pos[r] == q) {
                int64_t len = q + 1;
                if (off + len > pi->n_attn) {
                    s = ks_error_set(&x->err, KS_ERR_FORMAT, "%s: /activations/%s: prompt %lld: "
                                     "row at position %lld runs past the prompt's %lld keys",
                                     x->dump_path, h->name, (long long)x->prompts[t->sel],
                                     (long long)q, (long long)pi->n_attn);
                    goto out;
                }
                if (off < wbeg || off + len > wbeg + wlen) {
                    wbeg = off;
                    wlen = pi->n_attn - off < win_cap ? pi->n_attn - off : win_cap;
                    hsize_t start[2] = {(hsize_t)head, (hsize_t)(pi->attn_begin + wbeg)};
                    hsize_t count[2] = {1, (hsize_t)wlen};
                    if ((s = read_slab(x, t->hook, 2, start, count, to_f32, x->buf))) goto out;
                }
                memcpy(x->row, x->buf + (size_t)(off - wbeg) * es, (size_t)len * es);
                off += len;
                r++;
            }
            if ((s = sink_write(x, k, x->row, (size_t)T * es))) goto out;
        }
    }
out:
    free(pos);
    return s;
}

/* Tokens or positions of one prompt, or the packed bookkeeping of the selection. */
static ks_status copy_ints(exporter *x, sink *k, const tensor *t) {
    ks_status s = KS_OK;
    if (t->kind == T_TOKENS || t->kind == T_POSITIONS) {
        const ks_dump_prompt *pi = &x->pi[t->sel];
        int64_t n = t->kind == T_TOKENS ? pi->n_tokens : pi->n_rows;
        int32_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
        if (!v) return ks_error_set(&x->err, KS_ERR_NOMEM, "out of memory");
        s = t->kind == T_TOKENS ? ks_dump_read_tokens(x->d, x->prompts[t->sel], v, (size_t)n, &x->err)
                                : ks_dump_read_positions(x->d, x->prompts[t->sel], v, (size_t)n, &x->err);
        if (!s) s = sink_write(x, k, v, (size_t)n * sizeof *v);
        free(v);
        return s;
    }
    if (t->kind == T_PROMPT_OFFSETS || t->kind == T_ROW_OFFSETS || t->kind == T_ATTN_OFFSETS) {
        int64_t acc = 0;
        if ((s = sink_write(x, k, &acc, sizeof acc))) return s;
        for (int64_t i = 0; i < x->n_sel; i++) {
            acc += t->kind == T_PROMPT_OFFSETS ? x->pi[i].n_tokens
                   : t->kind == T_ROW_OFFSETS  ? x->pi[i].n_rows
                                               : x->pi[i].n_attn;
            if ((s = sink_write(x, k, &acc, sizeof acc))) return s;
        }
        return KS_OK;
    }
    /* per-prompt lists, concatenated; attn_row_starts re-based: rows follow each other with no
     * gaps on the key axis (docs/FORMAT.md), so the starts are running sums of position + 1 */
    int64_t base = 0;
    for (int64_t i = 0; i < x->n_sel && !s; i++) {
        const ks_dump_prompt *pi = &x->pi[i];
        int64_t n = t->kind == T_ALL_TOKENS ? pi->n_tokens : pi->n_rows;
        int32_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
        if (!v) return ks_error_set(&x->err, KS_ERR_NOMEM, "out of memory");
        s = t->kind == T_ALL_TOKENS ? ks_dump_read_tokens(x->d, x->prompts[i], v, (size_t)n, &x->err)
                                    : ks_dump_read_positions(x->d, x->prompts[i], v, (size_t)n, &x->err);
        if (!s && t->kind == T_ATTN_ROW_STARTS) {
            for (int64_t r = 0; r < n && !s; r++) {
                s = sink_write(x, k, &base, sizeof base);
                base += (int64_t)v[r] + 1;
            }
        } else if (!s) {
            s = sink_write(x, k, v, (size_t)n * sizeof *v);
        }
        free(v);
    }
    return s;
}

static ks_status copy_tensor(exporter *x, sink *k, const tensor *t) {
    uint64_t before = k->n;
    ks_status s = KS_OK;
    switch (t->kind) {
    case T_ROWS:
        if (t->sel >= 0) {
            s = copy_rows(x, k, t, x->pi[t->sel].row_begin, x->pi[t->sel].n_rows);
        } else {
            for (int64_t i = 0; i < x->n_sel && !s; i++)
                s = copy_rows(x, k, t, x->pi[i].row_begin, x->pi[i].n_rows);
        }
        break;
    case T_SQUARE: s = copy_square(x, k, t); break;
    case T_KEYS:
        for (int head = 0; head < t->shape[0] && !s; head++)
            for (int64_t i = 0; i < x->n_sel && !s; i++)
                s = copy_keys(x, k, t, head, x->pi[i].attn_begin, x->pi[i].n_attn);
        break;
    default: s = copy_ints(x, k, t); break;
    }
    if (!s && k->n - before != t->bytes) /* the plan and the copy disagree: a bug, not input */
        s = ks_error_set(&x->err, KS_ERR_INTERNAL, "%s: tensor %s: wrote %llu bytes, planned %llu",
                         x->tmp_path, t->key, (unsigned long long)(k->n - before),
                         (unsigned long long)t->bytes);
    return s;
}

/* ================================================================ safetensors */

static json_t *metadata(exporter *x, const char *format) {
    json_t *m = json_object();
    static const char *const attrs[] = {"format", "format_version", "koalascope_version", "model_path",
                                        "model_format", "model_sha256", "model_sha256_of",
                                        "model_config", "storage_dtype", "hooks", "positions",
                                        "heads", "prompts_sha256", "chat_template", "created"};
    json_object_set_new(m, "layout", json_string(x->packed ? "packed" : "per-prompt"));
    json_object_set_new(m, "exporter", json_string("koalascope export " KS_VERSION));
    json_object_set_new(m, "export_format", json_string(format));
    json_object_set_new(m, "source", json_string(x->dump_path));
    for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++) {
        const char *v = ks_dump_attr(x->d, attrs[i]);
        char key[64];
        /* the dump's own "format"/"hooks" (its recording selection) keep a prefix: the
         * exported hooks are listed in "exported_hooks" */
        snprintf(key, sizeof key, "dump_%s", attrs[i]);
        json_t *js = v ? json_string(v) : NULL; /* NULL too for text that is not UTF-8 */
        if (js) json_object_set_new(m, key, js);
    }
    size_t len = 0;
    for (int hi = 0; hi < ks_dump_n_hooks(x->d); hi++)
        if (x->hook_on[hi]) len += strlen(ks_dump_hook_at(x->d, hi)->name) + 1;
    char *hooks = calloc(len + 1, 1), *pr = NULL;
    for (int hi = 0; hooks && hi < ks_dump_n_hooks(x->d); hi++) {
        if (!x->hook_on[hi]) continue;
        if (*hooks) strcat(hooks, ",");
        strcat(hooks, ks_dump_hook_at(x->d, hi)->name);
    }
    json_object_set_new(m, "exported_hooks", json_string(hooks ? hooks : ""));
    if ((pr = calloc((size_t)x->n_sel * 21 + 1, 1))) {
        size_t o = 0;
        for (int64_t i = 0; i < x->n_sel; i++)
            o += (size_t)sprintf(pr + o, "%s%lld", i ? "," : "", (long long)x->prompts[i]);
    }
    json_object_set_new(m, "prompts", json_string(pr ? pr : ""));
    free(hooks);
    free(pr);
    return m;
}

static ks_status write_safetensors(exporter *x, FILE *f) {
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", metadata(x, "safetensors"));
    uint64_t off = 0;
    for (int i = 0; i < x->nt; i++) {
        tensor *t = &x->t[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_object_set_new(root, t->key,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_name[t->dtype],
                                      "shape", shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + t->bytes)));
        off += t->bytes;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!hdr) return ks_error_set(&x->err, KS_ERR_NOMEM, "%s: cannot build the header", x->tmp_path);
    /* pad the header with spaces so the data starts 8-byte aligned (as the Python writer does) */
    size_t n = strlen(hdr), padded = (n + 7) / 8 * 8;
    uint64_t n64 = padded;
    sink k = {f, 0, 0};
    ks_status s = sink_write(x, &k, &n64, 8);
    if (!s) s = sink_write(x, &k, hdr, n);
    for (size_t i = n; i < padded && !s; i++) s = sink_write(x, &k, " ", 1);
    free(hdr);
    for (int i = 0; i < x->nt && !s; i++) s = copy_tensor(x, &k, &x->t[i]);
    return s;
}

/* ================================================================ npz */

static void put16(unsigned char *p, unsigned v) { p[0] = v & 0xff; p[1] = (v >> 8) & 0xff; }
static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (v >> (8 * i)) & 0xff;
}

/* The .npy header (format 1.0): magic, version, u16 length, the dict, padded with spaces and a
 * newline so that the data starts at a multiple of 64. */
static size_t npy_header(const tensor *t, char *out, size_t cap) {
    char dict[512], shape[256] = "(";
    size_t o = 1;
    for (int d = 0; d < t->ndim; d++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%lld,%s", (long long)t->shape[d],
                              d + 1 < t->ndim ? " " : "");
    if (t->ndim > 1) o--; /* "(3, 4)" but "(3,)" */
    snprintf(shape + o, sizeof shape - o, ")");
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     npy_descr[t->dtype], shape);
    size_t total = (10 + (size_t)n + 1 + 63) / 64 * 64;
    if (total > cap) return 0;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    put16((unsigned char *)out + 8, (unsigned)(total - 10));
    memcpy(out + 10, dict, (size_t)n);
    memset(out + 10 + n, ' ', total - 10 - (size_t)n - 1);
    out[total - 1] = '\n';
    return total;
}

#define DOS_DATE 0x21 /* 1980-01-01: fixed, so that two exports of one dump are identical */

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (v >> (8 * i)) & 0xff;
}

/* Where zip64 starts: 2^32 - 1, or (for tests only) KS_ZIP64_THRESHOLD bytes, so that the
 * zip64 paths are exercised without writing 4 GiB: the fields are exact either way. */
static uint64_t zip_limit(void) {
    const char *e = getenv("KS_ZIP64_THRESHOLD");
    char *end;
    unsigned long long v = e ? strtoull(e, &end, 10) : 0;
    return e && *e && !*end && v > 0 && v < ZIP_LIMIT ? v : ZIP_LIMIT;
}

static ks_status write_npz(exporter *x, FILE *f) {
    ks_status s = KS_OK;
    const uint64_t LIM = zip_limit();
    char hdr[1024];
    uint32_t *crc = calloc((size_t)x->nt + 1, sizeof *crc);
    uint64_t *lho = calloc((size_t)x->nt + 1, sizeof *lho);
    if (!crc || !lho) {
        s = ks_error_set(&x->err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    sink k = {f, 0, 0};
    for (int i = 0; i < x->nt && !s; i++) {
        const tensor *t = &x->t[i];
        size_t hn = npy_header(t, hdr, sizeof hdr), nn = strlen(t->key) + 4;
        uint64_t size = hn + t->bytes;
        bool big = size >= LIM;
        /* local header, with a zip64 extra field (both sizes) when the entry is 4 GiB or more */
        unsigned char lh[30 + 20] = {0};
        put32(lh, 0x04034b50);
        put16(lh + 4, big ? 45 : 20);
        put16(lh + 12, DOS_DATE);
        put32(lh + 18, big ? 0xFFFFFFFFu : (uint32_t)size);
        put32(lh + 22, big ? 0xFFFFFFFFu : (uint32_t)size);
        put16(lh + 26, (unsigned)nn);
        put16(lh + 28, big ? 20 : 0);
        lho[i] = k.n;
        if ((s = sink_write(x, &k, lh, 30)) || (s = sink_write(x, &k, t->key, nn - 4)) ||
            (s = sink_write(x, &k, ".npy", 4)))
            break;
        if (big) {
            unsigned char ex[20];
            put16(ex, 0x0001);
            put16(ex + 2, 16);
            put64(ex + 4, size);
            put64(ex + 12, size);
            if ((s = sink_write(x, &k, ex, 20))) break;
        }
        k.crc = crc32(0, NULL, 0);
        if ((s = sink_write(x, &k, hdr, hn)) || (s = copy_tensor(x, &k, t))) break;
        crc[i] = (uint32_t)k.crc;
        /* the CRC is known only now: patch it into the local header (the file is seekable) */
        unsigned char c[4];
        put32(c, crc[i]);
        if (fseeko(f, (off_t)lho[i] + 14, SEEK_SET) || fwrite(c, 1, 4, f) != 4 ||
            fseeko(f, 0, SEEK_END)) {
            s = ks_error_set(&x->err, KS_ERR_IO, "%s: cannot patch the CRC of %s.npy: %s",
                             x->tmp_path, t->key, strerror(errno));
            break;
        }
    }
    uint64_t cd = k.n;
    for (int i = 0; i < x->nt && !s; i++) {
        const tensor *t = &x->t[i];
        size_t hn = npy_header(t, hdr, sizeof hdr), nn = strlen(t->key) + 4;
        uint64_t size = hn + t->bytes;
        bool big = size >= LIM, far = lho[i] >= LIM;
        /* the central record's zip64 extra holds, in this order, only the fields that overflow */
        unsigned char ex[4 + 24];
        unsigned exn = 4;
        if (big) {
            put64(ex + exn, size);
            put64(ex + exn + 8, size);
            exn += 16;
        }
        if (far) {
            put64(ex + exn, lho[i]);
            exn += 8;
        }
        put16(ex, 0x0001);
        put16(ex + 2, exn - 4);
        bool z64 = big || far;
        unsigned char ch[46] = {0};
        put32(ch, 0x02014b50);
        put16(ch + 4, z64 ? 45 : 20);
        put16(ch + 6, z64 ? 45 : 20);
        put16(ch + 14, DOS_DATE);
        put32(ch + 16, crc[i]);
        put32(ch + 20, big ? 0xFFFFFFFFu : (uint32_t)size);
        put32(ch + 24, big ? 0xFFFFFFFFu : (uint32_t)size);
        put16(ch + 28, (unsigned)nn);
        put16(ch + 30, z64 ? exn : 0);
        put32(ch + 42, far ? 0xFFFFFFFFu : (uint32_t)lho[i]);
        if ((s = sink_write(x, &k, ch, 46)) || (s = sink_write(x, &k, t->key, nn - 4)) ||
            (s = sink_write(x, &k, ".npy", 4)))
            break;
        if (z64 && (s = sink_write(x, &k, ex, exn))) break;
    }
    if (!s) {
        uint64_t cd_size = k.n - cd, z64_at = k.n;
        bool z64 = x->nt > ZIP_MAX_ENTRIES || cd >= LIM || cd_size >= LIM;
        if (z64) {
            unsigned char r[56 + 20] = {0};
            put32(r, 0x06064b50); /* zip64 end of central directory record */
            put64(r + 4, 44);
            put16(r + 12, 45);
            put16(r + 14, 45);
            put64(r + 24, (uint64_t)x->nt);
            put64(r + 32, (uint64_t)x->nt);
            put64(r + 40, cd_size);
            put64(r + 48, cd);
            put32(r + 56, 0x07064b50); /* its locator */
            put64(r + 64, z64_at);
            put32(r + 72, 1);
            s = sink_write(x, &k, r, sizeof r);
        }
        unsigned char e[22] = {0};
        put32(e, 0x06054b50);
        put16(e + 8, z64 && x->nt > ZIP_MAX_ENTRIES ? 0xFFFF : (unsigned)x->nt);
        put16(e + 10, z64 && x->nt > ZIP_MAX_ENTRIES ? 0xFFFF : (unsigned)x->nt);
        put32(e + 12, z64 && cd_size >= LIM ? 0xFFFFFFFFu : (uint32_t)cd_size);
        put32(e + 16, z64 && cd >= LIM ? 0xFFFFFFFFu : (uint32_t)cd);
        if (!s) s = sink_write(x, &k, e, 22);
    }
out:
    free(crc);
    free(lho);
    return s;
}

/* ================================================================ selections */

/* "0,2-5" against P prompts into x->prompts (ascending, no duplicates). */
static int parse_prompts(exporter *x, const char *cmd, const char *sel) {
    int64_t P = ks_dump_n_prompts(x->d);
    bool *on = calloc((size_t)(P ? P : 1), 1);
    char *copy = strdup(sel), *save = NULL;
    int rc = 0;
    if (!on || !copy) {
        rc = fail_msg(cmd, "out of memory");
        goto out;
    }
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long a, b;
        char *dash = strchr(tok + 1, '-'); /* a leading '-' is a (bad) negative index */
        if (dash) *dash = 0;
        bool okp = cli_parse_int(tok, 0, LONG_MAX, &a) &&
                   (!dash || cli_parse_int(dash + 1, 0, LONG_MAX, &b));
        if (!dash) b = a;
        if (dash) *dash = '-';
        if (!okp || b < a) {
            rc = usage(cmd, "--prompts: '%s' is not an index or a range A-B (as in 0,2-5)", tok);
            goto out;
        }
        if (b >= P) {
            rc = usage(cmd, "--prompts: '%s' is out of range: %s has %lld committed prompts "
                       "(0..%lld)", tok, x->dump_path, (long long)P, (long long)P - 1);
            goto out;
        }
        for (long i = a; i <= b; i++) on[i] = true;
    }
    x->n_sel = 0;
    for (int64_t p = 0; p < P; p++) x->n_sel += on[p];
    if (x->n_sel == 0) {
        rc = usage(cmd, "--prompts: '%s' selects no prompt", sel);
        goto out;
    }
    if (!(x->prompts = malloc((size_t)x->n_sel * sizeof *x->prompts))) {
        rc = fail_msg(cmd, "out of memory");
        goto out;
    }
    x->n_sel = 0;
    for (int64_t p = 0; p < P; p++)
        if (on[p]) x->prompts[x->n_sel++] = p;
out:
    free(on);
    free(copy);
    return rc;
}

/* "blocks.*.hook_resid_post,..." on the recorded names; a glob matching nothing is an error. */
static int parse_hooks(exporter *x, const char *cmd, const char *sel) {
    int nh = ks_dump_n_hooks(x->d), rc = 0;
    char *copy = strdup(sel), *save = NULL;
    if (!copy) return fail_msg(cmd, "out of memory");
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        bool any = false;
        for (int hi = 0; hi < nh; hi++)
            if (!fnmatch(tok, ks_dump_hook_at(x->d, hi)->name, 0)) any = x->hook_on[hi] = true;
        if (!any) {
            fprintf(stderr, "koalascope %s: error: --hooks: '%s' matches no hook recorded in %s "
                    "(recorded:", cmd, tok, x->dump_path);
            for (int hi = 0; hi < nh; hi++)
                fprintf(stderr, "%s %s", hi ? "," : "", ks_dump_hook_at(x->d, hi)->name);
            fprintf(stderr, ")\n");
            rc = EXIT_USAGE;
            break;
        }
    }
    free(copy);
    return rc;
}

/* ================================================================ output files */

/* The temp file being written, removed by a SIGINT/SIGTERM/SIGHUP before the process dies
 * with that signal (unlink is async-signal-safe). */
static char *volatile g_tmp_out;

static void on_fatal_signal(int sig) {
    char *t = g_tmp_out;
    if (t) unlink(t);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void guard_tmp(char *tmp) {
    g_tmp_out = tmp;
    if (tmp) {
        signal(SIGINT, on_fatal_signal);
        signal(SIGTERM, on_fatal_signal);
        signal(SIGHUP, on_fatal_signal);
    } else {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
    }
}

/* OUT.tmp, written by fn, renamed to OUT; removed on any failure, and on Ctrl-C. */
static int write_atomically(exporter *x, const char *cmd, const char *out,
                            ks_status (*fn)(exporter *, FILE *)) {
    size_t n = strlen(out) + 5;
    char *tmp = malloc(n);
    if (!tmp) return fail_msg(cmd, "out of memory");
    snprintf(tmp, n, "%s.tmp", out);
    x->tmp_path = tmp;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        fprintf(stderr, "koalascope %s: error: %s: cannot create: %s\n", cmd, tmp, strerror(errno));
        free(tmp);
        return EXIT_USAGE;
    }
    guard_tmp(tmp);
    ks_status s = fn(x, f);
    if (!s && fflush(f)) s = ks_error_set(&x->err, KS_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (fclose(f) && !s) s = ks_error_set(&x->err, KS_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (!s && rename(tmp, out))
        s = ks_error_set(&x->err, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, out, strerror(errno));
    if (s) {
        unlink(tmp);
        fprintf(stderr, "koalascope %s: error: %s (nothing written to %s)\n", cmd, x->err.msg, out);
    }
    guard_tmp(NULL);
    free(tmp);
    x->tmp_path = NULL;
    return s ? EXIT_USAGE : 0;
}

/* The output must not be the input (the rename would replace the dump being read). */
static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ================================================================ export safetensors | npz */

static int export_tensors(const char *cmd, bool npz, const char *dump_path, const char *out,
                          const char *hooks, const char *prompts, bool packed, bool f32) {
    exporter x = {0};
    int rc = 0;
    x.cmd = cmd;
    x.dump_path = dump_path;
    x.file = -1;
    x.packed = packed;
    x.f32 = f32;
    h5_quiet();
    if (ks_dump_open(dump_path, &x.d, &x.err) != KS_OK) return fail_msg(cmd, x.err.msg);
    int nh = ks_dump_n_hooks(x.d);
    if (!(x.hook_on = calloc((size_t)nh + 1, sizeof *x.hook_on)) ||
        !(x.ds = malloc(((size_t)nh + 1) * sizeof *x.ds)) || !(x.buf = malloc(CHUNK_BYTES))) {
        rc = fail_msg(cmd, "out of memory");
        goto out;
    }
    for (int hi = 0; hi < nh; hi++) x.ds[hi] = -1;
    if (hooks) {
        if ((rc = parse_hooks(&x, cmd, hooks))) goto out;
    } else {
        for (int hi = 0; hi < nh; hi++) x.hook_on[hi] = true;
    }
    if (prompts) {
        if ((rc = parse_prompts(&x, cmd, prompts))) goto out;
    } else {
        x.n_sel = ks_dump_n_prompts(x.d);
        if (!(x.prompts = malloc((size_t)(x.n_sel ? x.n_sel : 1) * sizeof *x.prompts))) {
            rc = fail_msg(cmd, "out of memory");
            goto out;
        }
        for (int64_t p = 0; p < x.n_sel; p++) x.prompts[p] = p;
    }
    if (!(x.pi = malloc((size_t)(x.n_sel ? x.n_sel : 1) * sizeof *x.pi))) {
        rc = fail_msg(cmd, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < x.n_sel; i++)
        if (ks_dump_prompt_info(x.d, x.prompts[i], &x.pi[i], &x.err) != KS_OK) {
            rc = fail_msg(cmd, x.err.msg);
            goto out;
        }
    if (plan(&x) != KS_OK) {
        rc = fail_msg(cmd, x.err.msg);
        goto out;
    }
    if ((x.file = h5_open_ro(dump_path, NULL)) < 0) {
        rc = fail_msg(cmd, "cannot open the dump for reading");
        goto out;
    }
    rc = write_atomically(&x, cmd, out, npz ? write_npz : write_safetensors);
out:
    for (int hi = 0; x.ds && hi < nh; hi++)
        if (x.ds[hi] >= 0) H5Dclose(x.ds[hi]);
    if (x.file >= 0) H5Fclose(x.file);
    for (int i = 0; i < x.nt; i++) free(x.t[i].key);
    free(x.t);
    free(x.ds);
    free(x.hook_on);
    free(x.prompts);
    free(x.pi);
    free(x.buf);
    free(x.row);
    ks_dump_close(x.d);
    return rc;
}

/* ================================================================ export csv */

typedef struct {
    ks_attribution_info *ai;
    int n;
    hid_t file;
    const char *path;
    char **cols; /* union of axis names, in order of first appearance */
    int ncols;
    bool pieces; /* some result has a "position" axis */
    bool with_name;
} csv_job;

static void csv_field(FILE *f, const char *s) {
    /* RFC 4180: quote when the field has a comma, quote, CR or LF; double the quotes */
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void csv_value(FILE *f, float v) {
    if (v != v) fputs("nan", f);
    else if (v == (float)INFINITY) fputs("inf", f);
    else if (v == -(float)INFINITY) fputs("-inf", f);
    else fprintf(f, "%.9g", (double)v);
}

/* Fixed-length string dataset ds ([n]) as n malloc'd strings. */
static ks_status read_strings(hid_t file, const char *path, const char *what, int64_t n,
                              char ***out, ks_error *err) {
    ks_status s = KS_OK;
    hid_t ds = -1, type = -1;
    char *raw = NULL;
    *out = NULL;
    if ((ds = H5Dopen2(file, what, H5P_DEFAULT)) < 0 || (type = H5Dget_type(ds)) < 0 ||
        H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) != 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s: not a fixed-length string dataset", path, what);
        goto out;
    }
    size_t w = H5Tget_size(type);
    hid_t sp = H5Dget_space(ds);
    hssize_t have = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (have != n || w == 0) {
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s: %lld strings, %lld tokens", path, what,
                         (long long)have, (long long)n);
        goto out;
    }
    if (!(raw = malloc((size_t)n * w + 1)) || !(*out = calloc((size_t)n + 1, sizeof **out))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (n && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) {
        s = ks_error_set(err, KS_ERR_IO, "%s: /%s: cannot read", path, what);
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        if (!((*out)[i] = strndup(raw + (size_t)i * w, w))) {
            s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            goto out;
        }
out:
    if (s && *out) {
        for (int64_t i = 0; i < n; i++) free((*out)[i]);
        free(*out);
        *out = NULL;
    }
    free(raw);
    if (type >= 0) H5Tclose(type);
    if (ds >= 0) H5Dclose(ds);
    return s;
}

/* Read a whole numeric dataset (a result's values or tokens) of n elements as mtype. */
static ks_status read_all(hid_t file, const char *path, const char *what, hid_t mtype, int64_t n,
                          void *out, ks_error *err) {
    hid_t ds = H5Dopen2(file, what, H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hssize_t have = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    hid_t ft = ds >= 0 ? H5Dget_type(ds) : -1;
    ks_status s = KS_OK;
    if (ds < 0 || have != n)
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s: missing, or not %lld values", path, what,
                         (long long)n);
    else if (ft < 0 || !ks_h5_plain_number(ft))
        s = ks_error_set(err, KS_ERR_FORMAT, "%s: /%s: not a number type of 1 to 8 bytes", path, what);
    else if (n && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        s = ks_error_set(err, KS_ERR_IO, "%s: /%s: cannot read", path, what);
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return s;
}

static int64_t dataset_len(hid_t file, const char *what) {
    hid_t ds = H5Dopen2(file, what, H5P_DEFAULT), sp = ds >= 0 ? H5Dget_space(ds) : -1;
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return n;
}

/* One result's rows. Values are read whole: a result is at most 2^31 float32 by FORMAT.md,
 * and in practice [layers, heads] or [layers, positions]. */
static ks_status csv_result(csv_job *j, FILE *f, const ks_attribution_info *ai, ks_error *err) {
    ks_status s = KS_OK;
    char what[600];
    float *vals = NULL;
    int32_t *toks = NULL;
    char **pieces = NULL;
    int64_t n = 1, ntok = 0;
    int col_of[3] = {-1, -1, -1}, pos_axis = -1;
    char axes[256];
    snprintf(axes, sizeof axes, "%s", ai->axes);
    char *save = NULL, *a = strtok_r(axes, ",", &save);
    for (int d = 0; d < ai->ndim; d++, a = strtok_r(NULL, ",", &save)) {
        for (int c = 0; a && c < j->ncols; c++)
            if (!strcmp(j->cols[c], a)) col_of[d] = c;
        if (a && !strcmp(a, "position")) pos_axis = d;
        n *= ai->shape[d];
    }
    snprintf(what, sizeof what, "attributions/%s/tokens", ai->name);
    ntok = dataset_len(j->file, what);
    if (ntok < 0) return ks_error_set(err, KS_ERR_FORMAT, "%s: /%s is missing", j->path, what);
    if (!(vals = malloc((size_t)(n ? n : 1) * sizeof *vals)) ||
        !(toks = malloc((size_t)(ntok ? ntok : 1) * sizeof *toks))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((s = read_all(j->file, j->path, what, H5T_NATIVE_INT32, ntok, toks, err))) goto out;
    snprintf(what, sizeof what, "attributions/%s/values", ai->name);
    if ((s = read_all(j->file, j->path, what, H5T_NATIVE_FLOAT, n, vals, err))) goto out;
    snprintf(what, sizeof what, "attributions/%s/token_strings", ai->name);
    if (pos_axis >= 0 && H5Lexists(j->file, what, H5P_DEFAULT) > 0 &&
        (s = read_strings(j->file, j->path, what, ntok, &pieces, err)))
        goto out;
    for (int64_t cell = 0; cell < n; cell++) {
        int64_t idx[3] = {0, 0, 0}, rem = cell;
        for (int d = ai->ndim - 1; d >= 0; d--) {
            idx[d] = rem % ai->shape[d];
            rem /= ai->shape[d];
        }
        if (j->with_name) {
            fputs(ai->name, f);
            fputc(',', f);
        }
        for (int c = 0; c < j->ncols; c++) {
            for (int d = 0; d < ai->ndim; d++)
                if (col_of[d] == c) fprintf(f, "%lld", (long long)idx[d]);
            fputc(',', f);
        }
        if (j->pieces) {
            if (pos_axis >= 0 && idx[pos_axis] < ntok) {
                fprintf(f, "%d,", toks[idx[pos_axis]]);
                if (pieces) csv_field(f, pieces[idx[pos_axis]]);
            } else {
                fputc(',', f);
            }
            fputc(',', f);
        }
        csv_value(f, vals[cell]);
        fputc('\n', f);
    }
out:
    if (pieces) {
        for (int64_t i = 0; i < ntok; i++) free(pieces[i]);
        free(pieces);
    }
    free(vals);
    free(toks);
    return s;
}

static csv_job *g_csv; /* the job of write_csv (write_atomically's callback has one argument) */

static ks_status write_csv(exporter *x, FILE *f) {
    csv_job *j = g_csv;
    if (j->with_name) fputs("name,", f);
    for (int c = 0; c < j->ncols; c++) {
        csv_field(f, j->cols[c]);
        fputc(',', f);
    }
    if (j->pieces) fputs("token,piece,", f);
    fputs("value\n", f);
    for (int i = 0; i < j->n; i++) {
        ks_status s = csv_result(j, f, &j->ai[i], &x->err);
        if (s) return s;
        if (ferror(f))
            return ks_error_set(&x->err, KS_ERR_IO, "%s: write failed: %s",
                                x->tmp_path ? x->tmp_path : "stdout", strerror(errno));
    }
    return KS_OK;
}

static int export_csv(const char *cmd, const char *path, const char *out, const char *name) {
    csv_job j = {0};
    exporter x = {0};
    int rc = 0;
    ks_attribution_info *all = NULL;
    int n_all = 0;
    j.file = -1;
    j.path = path;
    h5_quiet();
    if (ks_attribution_list(path, &all, &n_all, &x.err) != KS_OK) return fail_msg(cmd, x.err.msg);
    if (name) {
        for (int i = 0; i < n_all; i++)
            if (!strcmp(all[i].name, name)) {
                j.ai = &all[i];
                j.n = 1;
            }
        if (!j.n) {
            fprintf(stderr, "koalascope %s: error: --name: %s has no result /attributions/%s "
                    "(results:", cmd, path, name);
            for (int i = 0; i < n_all; i++) fprintf(stderr, "%s %s", i ? "," : "", all[i].name);
            fprintf(stderr, "%s)\n", n_all ? "" : " none");
            rc = EXIT_USAGE;
            goto out;
        }
    } else {
        j.ai = all;
        j.n = n_all;
        j.with_name = true;
        if (!n_all) {
            rc = fail_msg(cmd, "the file has no /attributions results");
            fprintf(stderr, "  (%s: write some with `koalascope attribute ... -o FILE`)\n", path);
            goto out;
        }
    }
    if (!(j.cols = calloc(3 * (size_t)j.n + 1, sizeof *j.cols))) {
        rc = fail_msg(cmd, "out of memory");
        goto out;
    }
    for (int i = 0; i < j.n; i++) {
        char axes[256], *save = NULL;
        snprintf(axes, sizeof axes, "%s", j.ai[i].axes);
        for (char *a = strtok_r(axes, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
            bool have = false;
            for (int c = 0; c < j.ncols; c++) have |= !strcmp(j.cols[c], a);
            if (!strcmp(a, "position")) j.pieces = true;
            if (!have && j.ncols < 3 * j.n && !(j.cols[j.ncols++] = strdup(a))) {
                rc = fail_msg(cmd, "out of memory");
                goto out;
            }
        }
    }
    ks_error oerr = {0};
    if ((j.file = h5_open_ro(path, &oerr)) < 0) {
        if (oerr.msg[0]) fprintf(stderr, "koalascope %s: error: %s\n", cmd, oerr.msg);
        else fprintf(stderr, "koalascope %s: error: %s: cannot open\n", cmd, path);
        rc = EXIT_USAGE;
        goto out;
    }
    g_csv = &j;
    if (!strcmp(out, "-")) {
        if (write_csv(&x, stdout) != KS_OK || fflush(stdout)) rc = fail_msg(cmd, x.err.msg);
    } else {
        rc = write_atomically(&x, cmd, out, write_csv);
    }
out:
    if (j.file >= 0) H5Fclose(j.file);
    for (int c = 0; j.cols && c < j.ncols; c++) free(j.cols[c]);
    free(j.cols);
    free(all);
    return rc;
}

/* ================================================================ command lines */

int cmd_export_arrays(const char *format, int argc, char **argv) {
    enum { OPT_HOOKS = 256, OPT_PROMPTS, OPT_LAYOUT, OPT_F32, OPT_NAME };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"hooks", required_argument, 0, OPT_HOOKS},
        {"prompts", required_argument, 0, OPT_PROMPTS}, {"layout", required_argument, 0, OPT_LAYOUT},
        {"f32", no_argument, 0, OPT_F32}, {"name", required_argument, 0, OPT_NAME},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    bool csv = !strcmp(format, "csv"), npz = !strcmp(format, "npz");
    char cmd[64];
    snprintf(cmd, sizeof cmd, "export %s", format);
    const char *out = NULL, *hooks = NULL, *prompts = NULL, *layout = NULL, *name = NULL;
    bool f32 = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_HOOKS: hooks = optarg; break;
        case OPT_PROMPTS: prompts = optarg; break;
        case OPT_LAYOUT: layout = optarg; break;
        case OPT_F32: f32 = true; break;
        case OPT_NAME: name = optarg; break;
        case 'h':
            fputs(csv ? help_csv : npz ? help_npz : help_safetensors, stdout);
            return 0;
        case ':': return usage(cmd, "option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt && optopt < 256 && optopt != '?')
                return usage(cmd, "option '-%c' needs a value or is unknown", optopt);
            return usage(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return usage(cmd, "no %s given", csv ? "FILE.h5" : "DUMP.h5");
    if (optind + 1 < argc) return usage(cmd, "unexpected argument '%s'", argv[optind + 1]);
    const char *in = argv[optind];
    if (!out) return usage(cmd, "-o OUT is required");
    if (csv && (hooks || prompts || layout || f32))
        return usage(cmd, "%s", hooks ? "--hooks is not an option of export csv"
                                : prompts ? "--prompts is not an option of export csv"
                                : layout ? "--layout is not an option of export csv"
                                         : "--f32 is not an option of export csv");
    if (!csv && name) return usage(cmd, "--name is an option of export csv only");
    if (layout && strcmp(layout, "per-prompt") && strcmp(layout, "packed"))
        return usage(cmd, "--layout: '%s' is not per-prompt or packed", layout);
    if (access(in, R_OK) != 0) {
        fprintf(stderr, "koalascope %s: error: %s: %s\n", cmd, in, strerror(errno));
        return EXIT_USAGE;
    }
    if (same_file(in, out)) return usage(cmd, "-o %s is the input file", out);
    if (csv) return export_csv(cmd, in, out, name);
    return export_tensors(cmd, npz, in, out, hooks, prompts, layout && !strcmp(layout, "packed"), f32);
}

/* ================================================================ import safetensors */

/* One tensor of the cache: where its bytes are in the file. */
typedef struct {
    char *key;
    out_dtype dtype;
    int ndim;
    int64_t shape[4];
    uint64_t begin, bytes; /* absolute file offset */
} st_tensor;

typedef struct {
    const char *path;
    FILE *f;
    st_tensor *t;
    int nt;
    char *heads;       /* __metadata__ dump_heads, when present */
} st_file;

static void st_free(st_file *sf) {
    for (int i = 0; i < sf->nt; i++) free(sf->t[i].key);
    free(sf->t);
    free(sf->heads);
    if (sf->f) fclose(sf->f);
}

static const st_tensor *st_find(const st_file *sf, const char *key) {
    for (int i = 0; i < sf->nt; i++)
        if (!strcmp(sf->t[i].key, key)) return &sf->t[i];
    return NULL;
}

/* Parse and check the header: every tensor's dtype, shape and byte range inside the file. */
static ks_status st_open(st_file *sf, const char *path, ks_error *err) {
    unsigned char n8[8];
    struct stat st;
    memset(sf, 0, sizeof *sf);
    sf->path = path;
    if (!(sf->f = fopen(path, "rb")) || fstat(fileno(sf->f), &st))
        return ks_error_set(err, KS_ERR_IO, "%s: %s", path, strerror(errno));
    if (fread(n8, 1, 8, sf->f) != 8)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: shorter than a safetensors header", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | n8[i];
    if (n < 2 || n > (100u << 20) || n > (uint64_t)st.st_size - 8)
        return ks_error_set(err, KS_ERR_FORMAT, "%s: header length %llu does not fit the file (%lld "
                            "bytes)", path, (unsigned long long)n, (long long)st.st_size);
    char *h = malloc(n + 1);
    if (!h) return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    if (fread(h, 1, n, sf->f) != n) {
        free(h);
        return ks_error_set(err, KS_ERR_IO, "%s: cannot read the header", path);
    }
    json_error_t je;
    json_t *root = json_loadb(h, n, 0, &je);
    free(h);
    if (!json_is_object(root)) {
        json_decref(root);
        return ks_error_set(err, KS_ERR_FORMAT, "%s: the header is not a JSON object (%s)", path, je.text);
    }
    ks_status s = KS_OK;
    uint64_t data = 8 + n, size = (uint64_t)st.st_size - data;
    size_t cap = json_object_size(root);
    const char *key;
    json_t *v;
    if (!(sf->t = calloc(cap + 1, sizeof *sf->t))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            const char *hd = json_string_value(json_object_get(v, "dump_heads"));
            if (hd && !(sf->heads = strdup(hd))) s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            continue;
        }
        st_tensor *t = &sf->t[sf->nt];
        const char *dt = json_string_value(json_object_get(v, "dtype"));
        json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
        int d = -1;
        for (int i = 0; dt && i < 5; i++)
            if (!strcmp(dt, st_dtype_name[i])) d = i;
        if (d < 0 || !json_is_array(shape) || json_array_size(shape) > 4 || !json_is_array(offs) ||
            json_array_size(offs) != 2) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor %s: dtype (%s), shape or data_offsets "
                             "missing or not supported", path, key, dt ? dt : "none");
            goto out;
        }
        if (!(t->key = strdup(key))) {
            s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            goto out;
        }
        sf->nt++;
        t->dtype = (out_dtype)d;
        t->ndim = (int)json_array_size(shape);
        uint64_t elems = 1;
        for (int i = 0; i < t->ndim; i++) {
            json_int_t e = json_integer_value(json_array_get(shape, i));
            if (!json_is_integer(json_array_get(shape, i)) || e < 0 || e > (json_int_t)1 << 40 ||
                (e && elems > UINT64_MAX / 16 / (uint64_t)e)) {
                s = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor %s: bad shape", path, key);
                goto out;
            }
            t->shape[i] = e;
            elems *= (uint64_t)e;
        }
        json_int_t a = json_integer_value(json_array_get(offs, 0)), b = json_integer_value(json_array_get(offs, 1));
        if (a < 0 || b < a || (uint64_t)b > size || (uint64_t)(b - a) != elems * dtype_size[d]) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor %s: data_offsets [%lld, %lld] do not hold "
                             "its shape, or run past the file", path, key, (long long)a, (long long)b);
            goto out;
        }
        t->begin = data + (uint64_t)a;
        t->bytes = (uint64_t)(b - a);
    }
out:
    json_decref(root);
    return s;
}

static ks_status st_read(const st_file *sf, const st_tensor *t, uint64_t off, void *out, size_t n,
                         ks_error *err) {
    if (fseeko(sf->f, (off_t)(t->begin + off), SEEK_SET) || fread(out, 1, n, sf->f) != n)
        return ks_error_set(err, KS_ERR_IO, "%s: tensor %s: cannot read %zu bytes at %llu", sf->path,
                            t->key, n, (unsigned long long)off);
    return KS_OK;
}

/* Write n elements (raw bits of dtype) at start/count of the dataset, no conversion. */
static ks_status h5_write_raw(hid_t ds, const char *what, int rank, const hsize_t *start,
                              const hsize_t *count, const void *buf, ks_error *err) {
    ks_status s = KS_OK;
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(rank, count, NULL), ft = H5Dget_type(ds), mt = -1;
    if (ft >= 0 && (mt = H5Tcopy(ft)) >= 0) H5Tset_order(mt, H5T_ORDER_LE);
    if (fs < 0 || ms < 0 || mt < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(ds, mt, ms, fs, H5P_DEFAULT, buf) < 0)
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot write", what);
    if (mt >= 0) H5Tclose(mt);
    if (ft >= 0) H5Tclose(ft);
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return s;
}

/* Replace every activation of the recorded dump at path with the cache's values. */
static ks_status import_values(const st_file *sf, const char *path, int64_t P, const int64_t *pidx,
                               ks_error *err) {
    ks_status s = KS_OK;
    ks_dump *d = NULL;
    hid_t f = -1, ds = -1;
    ks_dump_prompt *pi = NULL;
    unsigned char *buf = NULL;
    char key[512], what[600];
    if ((s = ks_dump_open(path, &d, err))) return s;
    int nh = ks_dump_n_hooks(d);
    ks_dump_hook *hooks = calloc((size_t)nh + 1, sizeof *hooks);
    char **names = calloc((size_t)nh + 1, sizeof *names);
    if (!hooks || !names || !(pi = malloc((size_t)P * sizeof *pi)) || !(buf = malloc(CHUNK_BYTES))) {
        s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int hi = 0; hi < nh; hi++) {
        hooks[hi] = *ks_dump_hook_at(d, hi);
        if (!(names[hi] = strdup(hooks[hi].name))) {
            s = ks_error_set(err, KS_ERR_NOMEM, "out of memory");
            goto out;
        }
        hooks[hi].name = names[hi];
    }
    for (int64_t p = 0; p < P && !s; p++) s = ks_dump_prompt_info(d, p, &pi[p], err);
    ks_dump_close(d); /* HDF5 opens one file once: the read-only handle goes before the writer's */
    d = NULL;
    if (s) goto out;
    if ((f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT)) < 0) {
        s = ks_error_set(err, KS_ERR_IO, "%s: cannot reopen to write the values", path);
        goto out;
    }
    for (int hi = 0; hi < nh && !s; hi++) {
        const ks_dump_hook *h = &hooks[hi];
        snprintf(what, sizeof what, "%s: /activations/%s", path, h->name);
        snprintf(key, sizeof key, "activations/%s", h->name);
        if ((ds = H5Dopen2(f, key, H5P_DEFAULT)) < 0) {
            s = ks_error_set(err, KS_ERR_FORMAT, "%s: cannot open", what);
            break;
        }
        for (int64_t p = 0; p < P && !s; p++) {
            snprintf(key, sizeof key, "%s.%lld", h->name, (long long)pidx[p]);
            const st_tensor *t = st_find(sf, key);
            int64_t T = pi[p].n_tokens;
            size_t es = dtype_size[t->dtype];
            if (h->kind == KS_DUMP_KIND_TOKEN) {
                size_t row = (size_t)h->row_elems * es;
                int64_t step = row ? (int64_t)(CHUNK_BYTES / row) : T;
                if (step < 1 || t->bytes != (uint64_t)T * row || pi[p].n_rows != T) {
                    s = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor %s: %llu bytes, the model's %s "
                                     "takes %lld rows of %zu bytes", sf->path, key,
                                     (unsigned long long)t->bytes, h->name, (long long)T, row);
                    break;
                }
                for (int64_t r = 0; r < T && !s; r += step) {
                    int64_t m = T - r < step ? T - r : step;
                    hsize_t start[3] = {(hsize_t)(pi[p].row_begin + r), 0, 0};
                    hsize_t count[3] = {(hsize_t)m, (hsize_t)h->dims[0], (hsize_t)h->dims[1]};
                    if (!(s = st_read(sf, t, (uint64_t)r * row, buf, (size_t)m * row, err)))
                        s = h5_write_raw(ds, what, 1 + h->ndim, start, count, buf, err);
                }
            } else {
                /* [heads, T, T] -> the causal keys [heads, n_attn]: row q, keys 0..q, rows
                 * following each other (every position recorded) */
                int64_t H = h->dims[0], cap = (int64_t)(CHUNK_BYTES / es);
                if (t->ndim != 3 || t->shape[0] != H || t->shape[1] != T || t->shape[2] != T || T > cap) {
                    s = ks_error_set(err, KS_ERR_FORMAT, "%s: tensor %s: shape is not [%lld, %lld, %lld] "
                                     "(heads, T, T)", sf->path, key, (long long)H, (long long)T, (long long)T);
                    break;
                }
                for (int64_t head = 0; head < H && !s; head++) {
                    int64_t fill = 0, flushed = 0;
                    for (int64_t q = 0; q <= T && !s; q++) {
                        if (q == T || fill + q + 1 > cap) { /* flush the buffered keys */
                            hsize_t start[2] = {(hsize_t)head, (hsize_t)(pi[p].attn_begin + flushed)};
                            hsize_t count[2] = {1, (hsize_t)fill};
                            if (fill) s = h5_write_raw(ds, what, 2, start, count, buf, err);
                            flushed += fill;
                            fill = 0;
                            if (q == T || s) break;
                        }
                        s = st_read(sf, t, (uint64_t)((head * T + q) * T) * es, buf + (size_t)fill * es,
                                    (size_t)(q + 1) * es, err);
                        fill += q + 1;
                    }
                    if (!s && flushed != pi[p].n_attn)
                        s = ks_error_set(err, KS_ERR_INTERNAL, "%s: prompt %lld: %lld keys written, %lld "
                                         "recorded", what, (long long)p, (long long)flushed,
                                         (long long)pi[p].n_attn);
                }
            }
        }
        H5Dclose(ds);
        ds = -1;
    }
out:
    if (f >= 0 && H5Fclose(f) < 0 && !s) s = ks_error_set(err, KS_ERR_IO, "%s: cannot close", path);
    for (int hi = 0; names && hi < nh; hi++) free(names[hi]);
    free(names);
    free(hooks);
    free(pi);
    free(buf);
    ks_dump_close(d);
    return s;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int cmd_import(int argc, char **argv) {
    enum { OPT_MODEL = 256, OPT_TOKENIZER, OPT_THREADS, OPT_OVERWRITE };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"model", required_argument, 0, OPT_MODEL},
        {"tokenizer", required_argument, 0, OPT_TOKENIZER}, {"threads", required_argument, 0, OPT_THREADS},
        {"overwrite", no_argument, 0, OPT_OVERWRITE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *cmd = "import";
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(help_import, stdout);
            return 0;
        }
    if (argc < 2) return usage(cmd, "no format given (safetensors)");
    if (strcmp(argv[1], "safetensors")) return usage(cmd, "unknown format '%s' (safetensors)", argv[1]);
    const char *out = NULL, *model = NULL, *tokenizer = NULL;
    long threads = 0;
    bool overwrite = false;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc - 1, argv + 1, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case OPT_MODEL: model = optarg; break;
        case OPT_TOKENIZER: tokenizer = optarg; break;
        case OPT_THREADS:
            if (!cli_parse_int(optarg, 1, 1024, &threads))
                return usage(cmd, "--threads: '%s' is not a count 1..1024", optarg);
            break;
        case OPT_OVERWRITE: overwrite = true; break;
        default: return usage(cmd, "unknown option or missing value '%s'", argv[optind]);
        }
    }
    argc--, argv++;
    if (optind >= argc) return usage(cmd, "no CACHE.safetensors given");
    if (optind + 1 < argc) return usage(cmd, "unexpected argument '%s'", argv[optind + 1]);
    const char *in = argv[optind];
    if (!out) return usage(cmd, "-o DUMP.h5 is required");
    if (!model) return usage(cmd, "--model MODEL is required (the model the cache belongs to)");
    if (!overwrite && access(out, F_OK) == 0)
        return usage(cmd, "-o %s exists (--overwrite replaces it)", out);
    h5_quiet();

    int rc = EXIT_USAGE;
    ks_error e = {0};
    st_file sf;
    ks_model *m = NULL;
    ks_session *ses = NULL;
    ks_recorder *r = NULL;
    int64_t *pidx = NULL, P = 0;
    char *hooks = NULL, *tmp = NULL, *cmdline = NULL;
    int32_t *toks = NULL;
    int *ids = NULL;
    bool made_tmp = false;
    if (st_open(&sf, in, &e)) goto fail;
    /* prompts: tokens.<p>; hooks: the other keys of prompt pidx[0] */
    if (!(pidx = malloc(((size_t)sf.nt + 1) * sizeof *pidx))) goto nomem;
    for (int i = 0; i < sf.nt; i++) {
        const char *k = sf.t[i].key;
        long v;
        if (!strncmp(k, "positions.", 10)) {
            ks_error_set(&e, KS_ERR_UNSUPPORTED, "%s: tensor %s: caches of a position selection are not "
                         "supported", in, k);
            goto fail;
        }
        if (!strncmp(k, "tokens.", 7)) {
            if (!cli_parse_int(k + 7, 0, LONG_MAX, &v) || sf.t[i].dtype != DT_I32 || sf.t[i].ndim != 1 ||
                sf.t[i].shape[0] < 1) {
                ks_error_set(&e, KS_ERR_FORMAT, "%s: tensor %s: expected tokens.<prompt> as I32 [T], T > 0",
                             in, k);
                goto fail;
            }
            pidx[P++] = v;
        }
    }
    if (!P) {
        ks_error_set(&e, KS_ERR_FORMAT, "%s: no 'tokens.<p>' tensor: not a per-prompt cache of `koalascope "
                     "export safetensors` (--layout packed is not importable)", in);
        goto fail;
    }
    qsort(pidx, (size_t)P, sizeof *pidx, cmp_i64);
    size_t hl = 1;
    for (int i = 0; i < sf.nt; i++) hl += strlen(sf.t[i].key) + 1;
    if (!(hooks = calloc(hl, 1))) goto nomem;
    int n_hooks = 0, dtype = -1;
    char suffix[32];
    snprintf(suffix, sizeof suffix, ".%lld", (long long)pidx[0]);
    for (int i = 0; i < sf.nt; i++) {
        const st_tensor *t = &sf.t[i];
        size_t kl = strlen(t->key), sl = strlen(suffix);
        if (!strncmp(t->key, "tokens.", 7)) continue;
        const char *dot = strrchr(t->key, '.');
        long v;
        if (!dot || !cli_parse_int(dot + 1, 0, LONG_MAX, &v) || t->dtype > DT_BF16) {
            ks_error_set(&e, KS_ERR_FORMAT, "%s: tensor %s: expected '<hook>.<prompt>' of F32, F16 or BF16",
                         in, t->key);
            goto fail;
        }
        if (dtype >= 0 && (int)t->dtype != dtype) {
            ks_error_set(&e, KS_ERR_FORMAT, "%s: tensor %s is %s, others %s: a dump has one storage dtype",
                         in, t->key, st_dtype_name[t->dtype], st_dtype_name[dtype]);
            goto fail;
        }
        dtype = (int)t->dtype;
        if (kl > sl && !strcmp(t->key + kl - sl, suffix)) {
            if (n_hooks++) strcat(hooks, ",");
            strncat(hooks, t->key, kl - sl);
        }
    }
    if (!n_hooks) {
        ks_error_set(&e, KS_ERR_FORMAT, "%s: prompt %lld has no '<hook>.%lld' tensor", in,
                     (long long)pidx[0], (long long)pidx[0]);
        goto fail;
    }
    /* every prompt has every hook, and nothing else is there */
    if ((int64_t)n_hooks * P + P != sf.nt) {
        ks_error_set(&e, KS_ERR_FORMAT, "%s: %d tensors, expected %lld prompts x (%d hooks + tokens): every "
                     "prompt must have the same hooks", in, sf.nt, (long long)P, n_hooks);
        goto fail;
    }
    {
        char key[600], *save = NULL, *copy = strdup(hooks);
        if (!copy) goto nomem;
        for (char *h = strtok_r(copy, ",", &save); h; h = strtok_r(NULL, ",", &save))
            for (int64_t p = 0; p < P; p++) {
                snprintf(key, sizeof key, "%s.%lld", h, (long long)pidx[p]);
                if (!st_find(&sf, key)) {
                    ks_error_set(&e, KS_ERR_FORMAT, "%s: tensor %s is missing", in, key);
                    free(copy);
                    goto fail;
                }
            }
        free(copy);
    }
    ks_model_options mo = {.tokenizer_path = tokenizer};
    if (ks_model_open(model, &mo, &m, &e)) goto fail;
    int64_t longest = 0, total = 0, attn = 0;
    for (int64_t p = 0; p < P; p++) {
        char key[64];
        snprintf(key, sizeof key, "tokens.%lld", (long long)pidx[p]);
        int64_t T = st_find(&sf, key)->shape[0];
        if (T > longest) longest = T;
        total += T;
        attn += T * (T + 1) / 2;
    }
    if (longest > INT32_MAX / 2) goto nomem;
    size_t cl = 64 + strlen(in) + strlen(out) + strlen(model);
    if (!(tmp = malloc(strlen(out) + 5)) || !(cmdline = malloc(cl)) ||
        !(toks = malloc((size_t)longest * sizeof *toks)) || !(ids = malloc((size_t)longest * sizeof *ids)))
        goto nomem;
    sprintf(tmp, "%s.tmp", out);
    snprintf(cmdline, cl, "koalascope import safetensors %s -o %s --model %s", in, out, model);
    ks_record_options ro = {
        .hooks = hooks, .heads = sf.heads,
        .dtype = dtype == DT_F16 ? KS_DUMP_F16 : dtype == DT_BF16 ? KS_DUMP_BF16 : KS_DUMP_F32,
        .compression = KS_DUMP_COMPRESS_NONE, .flush_seconds = 1e9, .no_fsync = true,
        .expected_tokens = total, .expected_attn = attn, .max_text_bytes = 1, .model_path = model,
        .tokenizer_path = tokenizer, .chat_template = "none", .backend = "cpu",
        .command_line = cmdline, .prompts_source = in, .n_prompts_planned = P,
    };
    ks_session_options so = {.max_seq_len = (int)longest, .n_threads = (int)threads, .backend = "cpu"};
    if (ks_session_create(m, &so, &ses, &e)) goto fail;
    unlink(tmp);
    made_tmp = true;
    guard_tmp(tmp);
    if (ks_recorder_create(tmp, m, &ro, true, &r, &e)) goto fail;
    /* the recorder lays the dump out (every dataset and attribute of FORMAT.md) from a forward
     * over the cache's tokens; import_values then puts the cache's values in place of it */
    for (int64_t p = 0; p < P; p++) {
        char key[64], id[32];
        snprintf(key, sizeof key, "tokens.%lld", (long long)pidx[p]);
        const st_tensor *t = st_find(&sf, key);
        if (st_read(&sf, t, 0, toks, (size_t)t->bytes, &e)) goto fail;
        for (int64_t i = 0; i < t->shape[0]; i++) ids[i] = toks[i];
        snprintf(id, sizeof id, "%lld", (long long)pidx[p]);
        if (ks_recorder_record(r, ses, ids, (int)t->shape[0], (int)t->shape[0], NULL, id, NULL, &e)) goto fail;
    }
    ks_status fs = ks_recorder_finish(r, &e); /* finish closes the file; free releases r */
    ks_recorder_free(r);
    r = NULL;
    if (fs) goto fail;
    if (import_values(&sf, tmp, P, pidx, &e)) goto fail;
    if (rename(tmp, out)) {
        ks_error_set(&e, KS_ERR_IO, "%s: cannot rename to %s: %s", tmp, out, strerror(errno));
        goto fail;
    }
    made_tmp = false;
    rc = 0;
    goto done;
nomem:
    ks_error_set(&e, KS_ERR_NOMEM, "out of memory");
fail:
    fprintf(stderr, "koalascope import safetensors: error: %s%s%s%s\n", e.msg,
            made_tmp ? " (nothing written to " : "", made_tmp ? out : "", made_tmp ? ")" : "");
done:
    ks_recorder_free(r);
    if (made_tmp) unlink(tmp);
    guard_tmp(NULL);
    ks_session_free(ses);
    ks_model_close(m);
    st_free(&sf);
    free(pidx);
    free(hooks);
    free(tmp);
    free(cmdline);
    free(toks);
    free(ids);
    return rc;
}
