/* dump_private.h — what the writer (record.c) and the reader (dump_read.c) of activations/
 * share: HDF5 error mapping, the float types, dataset names. Not installed, not public. */
#ifndef KS_DUMP_PRIVATE_H
#define KS_DUMP_PRIVATE_H

#include <hdf5.h>

#include "ks_dump.h"

/* Dataset paths (docs/FORMAT.md). */
#define KS_DS_PROMPT_OFFSETS "prompt_offsets"
#define KS_DS_ROW_OFFSETS "row_offsets"
#define KS_DS_ATTN_OFFSETS "attn_offsets"
#define KS_DS_PROMPTS "prompts"
#define KS_DS_PROMPT_IDS "prompt_ids"
#define KS_DS_PROMPT_LENGTHS "prompt_lengths"
#define KS_DS_GENERATIONS "generations"
#define KS_DS_TOKENS "tokens"
#define KS_DS_TOKEN_STRINGS "token_strings"
#define KS_DS_ROW_POSITIONS "row_positions"
#define KS_DS_ATTN_ROW_STARTS "attn_row_starts"
#define KS_GROUP_ACTIVATIONS "activations"
#define KS_GROUP_LOGITS "logits"
#define KS_DS_TOPK_IDS "logits/topk_ids"
#define KS_DS_TOPK_LOGPROBS "logits/topk_logprobs"
#define KS_DS_NEXT_LOGPROB "logits/next_logprob"
#define KS_DS_FULL_LOGITS "logits/full"

/* HDF5 filter id of LZ4 (registered with The HDF Group; hdf5-filter-plugin provides it). */
#define KS_H5Z_FILTER_LZ4 32004

/* Silence HDF5's own error printing for the whole process (once); errors are read from the
 * stack by ks_h5_error instead. */
void ks_h5_init(void);

/* Record an HDF5 failure in err: what we were doing (printf-style, should name the file and
 * object) followed by the innermost message of HDF5's error stack, e.g. the errno text of a
 * failed write ("No space left on device"). Returns code. */
ks_status ks_h5_error(ks_error *err, ks_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Metadata read attempts of a SWMR reader: each failed checksum is re-read after a sleep that
 * doubles; HDF5's default of 100 turns one corrupted block into a hang of years, 20 is about
 * 1 ms in all (dump_read.c, attributions.c). */
#define KS_H5_SWMR_READ_ATTEMPTS 20

/* An HDF5 call failed at line of file (a source file name): our context, HDF5's innermost
 * message and where, as ks_h5_error. For H5TRY below. */
ks_status ks_h5_fail(ks_error *err, ks_status code, const char *file, int line, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));

/* Run an HDF5 call; on failure set `s` with code and the message, and go to `out`. */
#define KS_H5_TRY_AS(code, call, ...)                                     \
    do {                                                                  \
        if ((call) < 0) {                                                 \
            s = ks_h5_fail(err, code, __FILE__, __LINE__, __VA_ARGS__);   \
            goto out;                                                     \
        }                                                                 \
    } while (0)

/* File float type of a storage dtype (caller closes with H5Tclose). f16 is IEEE half, bf16 a
 * custom 1-8-7 float with bias 127, f32 IEEE single. */
hid_t ks_h5_float_type(ks_dump_dtype t);
/* Which storage dtype an HDF5 float type is; false when it is none of the three. */
bool ks_h5_float_type_kind(hid_t type, ks_dump_dtype *out);
/* True when an HDF5 type is a number a reader may convert: an integer of 1, 2, 4 or 8 bytes or
 * a float of 2, 4 or 8 bytes whose fields fit in it. Readers check this before H5Dread/H5Aread
 * into a native type: libhdf5 converts whatever size the file declares, and a flipped byte that
 * makes an integer 1.7 GB wide costs gigabytes of conversion buffers before it fails. */
bool ks_h5_plain_number(hid_t type);
/* Refuse an HDF5 file whose superblock is version 0 or 1 (what HDF5 writes by default, h5py
 * too, unless told libver='latest'), before libhdf5 opens it. Those versions carry no checksums
 * on object headers, and libhdf5 1.10.8 reads out of bounds decoding a corrupted attribute
 * message of such a header (docs/FUZZING.md, "Known upstream crash"): no check of ours after
 * H5Fopen can prevent it. Every file koalascope writes is superblock 3. KS_OK also when the
 * file has no HDF5 signature at all (H5Fopen then says it is not HDF5) or cannot be read
 * (H5Fopen says why). */
ks_status ks_h5_check_superblock(const char *path, ks_error *err);

/* ks_recorder_record without a model run: the recorder's hook is handed `tensors` (as a
 * forward of `tokens` would hand them, in that order) and, when it wants logits, `logits`
 * [n, vocab]. For bench/bench_record's writer-only measurement, which replays tensors captured
 * once from a real forward so that the writer, not the model, is the bottleneck. */
ks_status ks_recorder_record_replay(ks_recorder *r, const int *tokens, int n, const ks_hook_tensor *tensors,
                                    int n_tensors, const float *logits, ks_error *err);
/* Seconds the recording thread has waited for the writer so far (a full queue, or the chunk
 * memory: see record.c): 0 when writing kept up. For bench/bench_record. */
double ks_recorder_hook_wait_seconds(ks_recorder *r);
/* Variable-length UTF-8 string type (caller closes). */
hid_t ks_h5_str_type(void);
/* Fixed-length UTF-8 string type of `width` bytes (0 is taken as 1) with the given padding:
 * H5T_STR_NULLTERM for attributes sized to their value, H5T_STR_NULLPAD for string datasets
 * (docs/FORMAT.md, "Strings"). Caller closes; -1 on failure. */
hid_t ks_h5_fixed_str_type(size_t width, H5T_str_t pad);

/* Small writers shared by attributions.c and probe_results.c. Errors name path and obj (the
 * object written into). String attributes are fixed-length UTF-8, NUL-terminated, sized to
 * their value; datasets are contiguous and written whole from buf (memory type mt). */
ks_status ks_h5_attr_str(const char *path, const char *obj, hid_t loc, const char *name,
                         const char *v, ks_error *err);
ks_status ks_h5_attr_i32(const char *path, const char *obj, hid_t loc, const char *name, int v,
                         ks_error *err);
ks_status ks_h5_attr_f64(const char *path, const char *obj, hid_t loc, const char *name,
                         double v, ks_error *err);
ks_status ks_h5_write_ds(const char *path, const char *obj, hid_t g, const char *name, hid_t ft,
                         hid_t mt, int rank, const hsize_t *dims, const void *buf, ks_error *err);
/* A file access list with the latest library format (caller closes); -1 on failure. */
hid_t ks_h5_latest_fapl(void);

#endif
