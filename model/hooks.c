/* hooks.c — names of the hook points (TransformerLens spelling) and their parsing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_model.h"

static const char *const hook_suffix[KS_HOOK_COUNT] = {
#define KS_X(e, s, l) [e] = s,
    KS_HOOK_LIST(KS_X)
#undef KS_X
};

static const bool hook_per_layer[KS_HOOK_COUNT] = {
#define KS_X(e, s, l) [e] = l,
    KS_HOOK_LIST(KS_X)
#undef KS_X
};

int ks_hook_name(ks_hook_point p, int layer, char *buf, size_t cap) {
    if ((int)p < 0 || p >= KS_HOOK_COUNT) return snprintf(buf, cap, "?");
    if (hook_per_layer[p]) return snprintf(buf, cap, "blocks.%d.%s", layer, hook_suffix[p]);
    return snprintf(buf, cap, "%s", hook_suffix[p]);
}

ks_status ks_hook_parse(const char *name, ks_hook_point *p, int *layer) {
    if (!name) return KS_ERR_ARG;
    int l = -1;
    const char *rest = name;
    if (strncmp(name, "blocks.", 7) == 0) {
        char *end = NULL;
        long v = strtol(name + 7, &end, 10);
        if (end == name + 7 || *end != '.' || v < 0 || v > 1000000) return KS_ERR_NOT_FOUND;
        l = (int)v;
        rest = end + 1;
    }
    for (int i = 0; i < KS_HOOK_COUNT; i++) {
        if (hook_per_layer[i] != (l >= 0)) continue;
        if (strcmp(rest, hook_suffix[i]) == 0) {
            if (p) *p = (ks_hook_point)i;
            if (layer) *layer = l;
            return KS_OK;
        }
    }
    return KS_ERR_NOT_FOUND;
}

int64_t ks_hook_row_size(const ks_config *c, ks_hook_point p) {
    switch (p) {
    case KS_HOOK_ATTN_Q:
    case KS_HOOK_ATTN_ROT_Q:
    case KS_HOOK_ATTN_Z: return (int64_t)c->n_heads * c->head_dim;
    case KS_HOOK_ATTN_K:
    case KS_HOOK_ATTN_V:
    case KS_HOOK_ATTN_ROT_K: return (int64_t)c->n_kv_heads * c->head_dim;
    case KS_HOOK_ATTN_SCORES:
    case KS_HOOK_ATTN_PATTERN: return 0;
    case KS_HOOK_MLP_PRE:
    case KS_HOOK_MLP_PRE_LINEAR:
    case KS_HOOK_MLP_POST: return c->hidden_dim;
    case KS_HOOK_LOGITS: return c->vocab_size;
    default: return c->dim;
    }
}
