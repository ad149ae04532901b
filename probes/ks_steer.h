/* ks_steer.h — steering: add α·v to a hook point's tensor at every position during the
 * forward (Turner et al. 2023, "Activation Addition"; Rimsky et al. 2024), with v a direction
 * found by a probe (difference of means or probe weights, ks_results.h). probes/steer.c. */
#ifndef KS_STEER_H
#define KS_STEER_H

#include "ks_model.h"

typedef struct {
    char hook[128];   /* full hook name, e.g. "blocks.3.hook_resid_post" */
    float alpha;
    float *v;         /* [d], owned */
    int d;
} ks_steer_vec;

typedef struct {
    ks_steer_vec *v;
    int n;
    /* a hook to call after steering (recording, probing), or NULL */
    ks_hook_fn next;
    void *next_user;
} ks_steer_set;

/* Parse "FILE:HOOK[/KIND]:ALPHA" (KIND diff_means, the default, or probe; the path may hold
 * colons: HOOK and ALPHA are the last two fields), read the direction and check its length
 * against the hook's row size in model m. Appends to set. Errors name the spec. */
ks_status ks_steer_add(ks_steer_set *set, const ks_model *m, const char *spec, ks_error *err);
void ks_steer_free(ks_steer_set *set);

/* The hook to install with ks_session_set_hook(s, ks_steer_hook, set). */
bool ks_steer_hook(const ks_hook_tensor *t, bool ask, void *user);

#endif
