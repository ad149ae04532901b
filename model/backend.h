/* backend.h — the small interface the forward pass is written against (private to model/).
 *
 * A backend owns the memory of activations and of the KV cache and runs the ops of a LLaMA
 * block on it. forward.c is written once against this vtable, so the hook points, chunking
 * and KV-cache bookkeeping are shared by every backend; backend_cpu.c is the reference every
 * other backend is tested against, op by op (STYLE.md: every kernel has a CPU twin).
 *
 * Conventions: outputs first; every float pointer is backend memory except where a comment
 * says host; weights are the model's ks_weight (a device backend keeps its own copies, keyed
 * by them); outputs are overwritten (`=`) except add (`+=`) and kv_store (writes its slots).
 * Shapes are row-major, as in forward.c's comments. Slots marked optional may be NULL. */
#ifndef KS_BACKEND_H
#define KS_BACKEND_H

#include "model_private.h"

typedef struct ks_backend ks_backend;

typedef struct {
    const char *name;
    void (*destroy)(ks_backend *b);

    /* memory: zeroed; NULL when out of memory */
    void *(*alloc)(ks_backend *b, size_t bytes);
    void (*release)(ks_backend *b, void *p);
    /* optional: n floats to and from host memory (hooks, logits, tables). NULL when backend
     * memory is host memory, and then hooks are handed backend memory itself. */
    void (*to_host)(ks_backend *b, float *host, const float *src, size_t n);
    void (*from_host)(ks_backend *b, float *dst, const float *host, size_t n);

    /* x (B, dim) = rows ids[0..B) (host) of emb (vocab, dim) */
    void (*embed)(ks_backend *b, float *x, const ks_weight *emb, const int *ids, int B, int dim);
    /* out (B, dim) = w * x / rms(x) */
    void (*rmsnorm)(ks_backend *b, float *out, const float *x, const float *w, int B, int dim,
                    float eps);
    /* ys[i] (B, outs[i]) = x (B, in) · ws[i]^T for i < n: products of one input, fused */
    void (*matmul)(ks_backend *b, int n, float *const *ys, const ks_weight *const *ws,
                   const int *outs, const float *x, int B, int in);
    /* rotate v (B, heads, hd) in place; cosv, sinv (B, hd/2) */
    void (*rope)(ks_backend *b, float *v, int B, int heads, int hd, ks_rope_style style,
                 const float *cosv, const float *sinv);
    /* cache (n_kv, max_seq, hd) slots pos0..pos0+B = src (B, n_kv * hd) */
    void (*kv_store)(ks_backend *b, float *cache, const float *src, int B, int n_kv, int hd,
                     int max_seq, int pos0);
    /* att (H, B, L = pos0 + B) = scale * q (B, H * hd) · K^T, causal mask at -inf; kc is one
     * layer's key cache (n_kv, max_seq, hd); query head h reads kv head h / kv_mul */
    void (*attn_scores)(ks_backend *b, float *att, const float *q, const float *kc, int B,
                        int pos0, int H, int kv_mul, int hd, int max_seq, float scale);
    /* softmax of each of the rows (rows, L) in place; a row all -inf becomes all 0 */
    void (*softmax)(ks_backend *b, float *att, int rows, int L);
    /* z (B, H * hd) = att (H, B, L) · V, vc one layer's value cache (n_kv, max_seq, hd) */
    void (*attn_values)(ks_backend *b, float *z, const float *att, const float *vc, int B,
                        int pos0, int H, int kv_mul, int hd, int max_seq);
    /* up (n) = silu(gate) * up */
    void (*swiglu)(ks_backend *b, float *up, const float *gate, size_t n);
    /* x (n) += y */
    void (*add)(ks_backend *b, float *x, const float *y, size_t n);
} ks_backend_i;

/* Every backend's handle starts with this. */
struct ks_backend {
    const ks_backend_i *i;
};

/* The CPU reference backend: OpenBLAS GEMMs and OpenMP threads. max_in is the longest row of
 * any weight matrix (scratch for streaming non-f32 weights). staged: present its memory as
 * device memory (to_host/from_host copy), which tests the forward's device path. */
ks_status ks_backend_cpu_create(size_t max_in, bool staged, ks_backend **out, ks_error *err);

#endif
