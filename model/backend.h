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

#include <stdlib.h>

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

    /* optional: called once by ks_session_create before any op; a device backend uploads the
     * model's weights here (weights it has not seen are uploaded on first use) */
    ks_status (*prepare)(ks_backend *b, const ks_model *m, ks_error *err);
    /* optional: z (B, H * hd) = softmax(scale q K^T, causal) V without materialising the scores
     * (the fast path, used when no hook reads or edits the scores or the pattern of the layer).
     * Returns false when it does not handle this shape; forward.c then runs the three ops. */
    bool (*attn_fused)(ks_backend *b, float *z, const float *q, const float *kc, const float *vc,
                       int B, int pos0, int H, int kv_mul, int hd, int max_seq, float scale);
    /* optional: the first error the backend met since it was created (device backends run
     * asynchronously, so a failed kernel is seen later); KS_OK when none. forward.c asks after
     * every chunk. */
    ks_status (*check)(ks_backend *b, ks_error *err);
    /* optional: host memory the device copies to and from fastest (pinned), for the staging
     * of hooked tensors; host_free releases it */
    void *(*host_alloc)(ks_backend *b, size_t bytes);
    void (*host_free)(ks_backend *b, void *p);
    /* optional, together: n floats of src into host (memory from host_alloc) without waiting:
     * src may be overwritten by the next op as soon as this returns (the backend takes a copy
     * in stream order first); host holds the values once copies_wait has returned. forward.c
     * delivers read-only hooks this way, so the copies overlap the layers after them. */
    void (*to_host_async)(ks_backend *b, float *host, const float *src, size_t n);
    void (*copies_wait)(ks_backend *b);

    /* ---- the backward pass (backward.c). Optional as a group: a backend without gemm cannot
     * run ks_grad. Activation gradients are `=`, parameter gradients `+=` (as backward.c). */
    /* C[i] (M, N) = alpha op(A[i]) op(B[i]) + beta C[i] for i < batch, f32, row-major; op(X) is
     * X^T when its flag is set (A then stored (K, M), B (N, K)); lda/ldb/ldc are row strides
     * and sa/sb/sc the strides between batch items, in floats. fast: the backend may round A
     * and B to bf16 and accumulate in f32 (tensor cores; set for 16-bit models, as their
     * forward attention does); the CPU ignores it. beta 0 ignores C's old contents. */
    void (*gemm)(ks_backend *b, bool ta, bool tb, int M, int N, int K, float alpha,
                 const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                 float beta, float *C, int ldc, long long sc, int batch, bool fast);
    /* dx (B, in) = dy (B, out) · W (out, in) + beta dx: the backward of matmul to its input,
     * W the model's weight in its own dtype (computed as matmul computes with it) */
    void (*matmul_t)(ks_backend *b, float *dx, const ks_weight *w, const float *dy, int B,
                     int in, int out, float beta);
    /* dW (out, in) += dy (B, out)^T · x (B, in), dW f32 backend memory; fast as gemm's, taken
     * by a device backend only where w's dtype is 16-bit */
    void (*matmul_dw)(ks_backend *b, float *dW, const ks_weight *w, const float *dy,
                      const float *x, int B, int in, int out);
    /* backward of rmsnorm (out = w x r, r = 1/sqrt(mean x² + eps)), per row:
     * dx += r (w ⊙ dy) − x r³ Σ(w ⊙ dy ⊙ x) / dim; dw (optional) += Σ_rows dy ⊙ x r.
     * w is the model's norm weight (host pointer, as for rmsnorm); dw backend memory */
    void (*rmsnorm_bwd)(ks_backend *b, float *dx, float *dw, const float *dy, const float *x,
                        const float *w, int B, int dim, float eps);
    /* att (H, B, L): -inf where key > pos0 + query (the mask of attn_scores, on its own) */
    void (*causal_mask)(ks_backend *b, float *att, int H, int B, int L, int pos0);
    /* softmax backward in place over rows (rows, L): d = P ⊙ (d − Σ_u P d) */
    void (*softmax_bwd)(ks_backend *b, float *d, const float *P, int rows, int L);
    /* a = silu(gate) ⊙ up backward: dup = da ⊙ silu(gate); dgate = da ⊙ up ⊙ silu'(gate).
     * dgate may be da (read before written); dup is distinct from all inputs */
    void (*swiglu_bwd)(ks_backend *b, float *dgate, float *dup, const float *da,
                       const float *gate, const float *up, size_t n);
    /* demb (vocab, dim) row ids[i] (host) += dx row i, i < B (repeated ids add up) */
    void (*embed_bwd)(ks_backend *b, float *demb, const float *dx, const int *ids, int B,
                      int dim);
    /* dst (n) = src; p (n) = 0 */
    void (*copy)(ks_backend *b, float *dst, const float *src, size_t n);
    void (*zero)(ks_backend *b, float *p, size_t n);
    /* optional: the model's weights changed in host memory (an optimizer step): copy every
     * weight the backend keeps a copy of again. NULL where weights are used in place. */
    ks_status (*reload)(ks_backend *b, ks_error *err);
} ks_backend_i;

/* Every backend's handle starts with this. */
struct ks_backend {
    const ks_backend_i *i;
};

/* Host memory for staging hooked tensors: the backend's pinned memory where it has some. */
static inline void *ks_backend_host_alloc(ks_backend *b, size_t bytes) {
    return b->i->host_alloc ? b->i->host_alloc(b, bytes) : malloc(bytes);
}
static inline void ks_backend_host_free(ks_backend *b, void *p) {
    if (p && b->i->host_free)
        b->i->host_free(b, p);
    else
        free(p);
}
/* A host buffer *buf of *cap floats holding at least n: replaced by a larger one when short
 * (contents not kept). false, with *buf NULL and *cap 0, when out of memory. */
static inline bool ks_backend_host_reserve(ks_backend *b, float **buf, size_t *cap, size_t n) {
    if (n <= *cap) return true;
    ks_backend_host_free(b, *buf);
    *buf = (float *)ks_backend_host_alloc(b, n * sizeof(float));
    *cap = *buf ? n : 0;
    return *buf != NULL;
}

/* The CPU reference backend: OpenBLAS GEMMs and OpenMP threads. max_in is the longest row of
 * any weight matrix (scratch for streaming non-f32 weights). staged: present its memory as
 * device memory (to_host/from_host copy), which tests the forward's device path. */
ks_status ks_backend_cpu_create(size_t max_in, bool staged, ks_backend **out, ks_error *err);

/* The CUDA backend (backend_cuda.cu): cuBLAS GEMMs and our kernels on device 0. Weights are
 * uploaded once (prepare) and kept in their checkpoint dtype where cuBLAS takes it (f32, f16,
 * bf16: 16-bit GEMMs run on tensor cores with f32 accumulation); GGML block formats are
 * dequantised to f16. Activations and the KV cache are f32. KS_ERR_BACKEND, with the CUDA
 * runtime's words, where no device or driver is present, and in a build without CUDA.
 * Environment: KS_CUDA_ATTN=auto|flash|tc|eager picks the attention path (auto: exact f32
 * for f32 models; for 16-bit models the fused bf16 kernel, or the tensor-core one where the
 * fused kernel lacks the head size; see backend_cuda.cu); KS_CUDA_PROFILE=1 prints the device
 * time of each op when the backend is destroyed. */
ks_status ks_backend_cuda_create(size_t max_in, ks_backend **out, ks_error *err);

/* The backend named name ("cpu" or NULL, "cpu-copy", "cuda") sized for m's matrices (forward.c;
 * sessions and ks_grad open theirs with it). KS_ERR_ARG names an unknown backend. */
ks_status ks_backend_open(const ks_model *m, const char *name, ks_backend **out, ks_error *err);

#endif
