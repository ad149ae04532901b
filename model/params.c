/* params.c — a model's parameters by their HF names: listing, read-only f32 views, and
 * writable views where the model owns an f32 copy (what a trainer updates in place).
 *
 * The weights of a mapped file stay read-only: ks_model_param_mut refuses them, so nothing
 * ever writes into a checkpoint the user opened. Training opens its model with no_mmap and
 * f32_weights (every tensor then lives in heap memory the model owns) or no_weights. */
#include <stdio.h>
#include <string.h>

#include "model_private.h"

/* Per-layer tensors, in the order ks_model_tensor_info lists them. */
static const char *const layer_suffix[] = {
    "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",   "mlp.up_proj.weight",      "mlp.down_proj.weight",
};
#define N_LAYER_TENSORS 9

static bool tied(const ks_model *m) { return m->output.data == m->tok_embeddings.data; }

int ks_model_tensor_count(const ks_model *m) {
    if (!m) return 0;
    return 2 + N_LAYER_TENSORS * m->cfg.n_layers + (tied(m) ? 0 : 1);
}

typedef struct {
    const void *data; /* storage (NULL when unknown) */
    ks_dtype dtype;   /* matrices: as stored; vectors are always f32 */
    int64_t shape[2];
    int ndim;
} slot;

/* Find a tensor by name; false when no such tensor. */
static bool lookup(const ks_model *m, const char *name, slot *s) {
    const ks_config *c = &m->cfg;
    int64_t D = c->dim, hid = c->hidden_dim, V = c->vocab_size;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    memset(s, 0, sizeof *s);
    if (!strcmp(name, "model.embed_tokens.weight")) {
        *s = (slot){m->tok_embeddings.data, m->tok_embeddings.dtype, {V, D}, 2};
        return true;
    }
    if (!strcmp(name, "lm_head.weight")) {
        if (tied(m)) return false;
        *s = (slot){m->output.data, m->output.dtype, {V, D}, 2};
        return true;
    }
    if (!strcmp(name, "model.norm.weight")) {
        *s = (slot){m->final_norm, KS_DTYPE_F32, {D, 0}, 1};
        return true;
    }
    int l = -1, used = 0;
    char rest[64];
    if (sscanf(name, "model.layers.%d.%63s%n", &l, rest, &used) != 2 || (size_t)used != strlen(name) ||
        l < 0 || l >= c->n_layers)
        return false;
    const ks_layer_weights *w = &m->layers[l];
    const ks_weight *mat[N_LAYER_TENSORS] = {NULL, &w->wq, &w->wk, &w->wv, &w->wo, NULL,
                                             &w->w_gate, &w->w_up, &w->w_down};
    const int64_t rows[N_LAYER_TENSORS] = {D, q, kv, kv, D, D, hid, hid, D};
    const int64_t cols[N_LAYER_TENSORS] = {0, D, D, D, q, 0, D, D, hid};
    for (int k = 0; k < N_LAYER_TENSORS; k++) {
        if (strcmp(rest, layer_suffix[k]) != 0) continue;
        if (!mat[k])
            *s = (slot){k == 0 ? w->attn_norm : w->ffn_norm, KS_DTYPE_F32, {rows[k], 0}, 1};
        else
            *s = (slot){mat[k]->data, mat[k]->dtype, {rows[k], cols[k]}, 2};
        return true;
    }
    return false;
}

ks_status ks_model_tensor_info(const ks_model *m, int i, char *name, size_t cap, int64_t shape[2],
                               int *ndim) {
    int n = ks_model_tensor_count(m);
    if (!m || i < 0 || i >= n)
        return ks_error_set(NULL, KS_ERR_RANGE, "tensor %d out of range", i);
    char buf[96];
    if (i == 0)
        snprintf(buf, sizeof buf, "model.embed_tokens.weight");
    else if (i <= N_LAYER_TENSORS * m->cfg.n_layers)
        snprintf(buf, sizeof buf, "model.layers.%d.%s", (i - 1) / N_LAYER_TENSORS,
                 layer_suffix[(i - 1) % N_LAYER_TENSORS]);
    else if (i == N_LAYER_TENSORS * m->cfg.n_layers + 1)
        snprintf(buf, sizeof buf, "model.norm.weight");
    else
        snprintf(buf, sizeof buf, "lm_head.weight");
    slot s;
    lookup(m, buf, &s);
    if (name && cap) snprintf(name, cap, "%s", buf);
    if (shape) {
        shape[0] = s.shape[0];
        shape[1] = s.shape[1];
    }
    if (ndim) *ndim = s.ndim;
    return KS_OK;
}

const float *ks_model_param(const ks_model *m, const char *hf_name, size_t *n) {
    slot s;
    if (!m || !hf_name || !lookup(m, hf_name, &s) || !s.data || s.dtype != KS_DTYPE_F32) return NULL;
    if (n) *n = (size_t)s.shape[0] * (size_t)(s.ndim == 2 ? s.shape[1] : 1);
    return s.data;
}

float *ks_model_param_mut(ks_model *m, const char *hf_name, size_t *n) {
    size_t cnt = 0;
    const float *p = ks_model_param(m, hf_name, &cnt);
    if (!p || ks_model_in_mapping(m, p, cnt * sizeof(float))) return NULL;
    if (n) *n = cnt;
    /* the model owns this buffer (converted at load, read with no_mmap, or allocated by
     * no_weights): the const of the weight structs only protects mapped files */
    return (float *)p;
}
