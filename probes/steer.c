/* steer.c — add α·v at a hook point (ks_steer.h). */
#include "ks_steer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_results.h"

void ks_steer_free(ks_steer_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n; i++) free(set->v[i].v);
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

ks_status ks_steer_add(ks_steer_set *set, const ks_model *m, const char *spec, ks_error *err) {
    const char *c2 = strrchr(spec, ':');
    const char *c1 = NULL;
    for (const char *p = spec; c2 && p < c2; p++)
        if (*p == ':') c1 = p;
    if (!c1 || c1 == spec)
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': expected FILE:HOOK[/KIND]:ALPHA", spec);
    char path[4096], hook[128], kind[32] = "diff_means";
    size_t pl = (size_t)(c1 - spec), hl = (size_t)(c2 - c1 - 1);
    if (pl >= sizeof path || hl == 0 || hl >= sizeof hook)
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': file or hook name too long or empty", spec);
    memcpy(path, spec, pl);
    path[pl] = 0;
    memcpy(hook, c1 + 1, hl);
    hook[hl] = 0;
    char *slash = strchr(hook, '/');
    if (slash) {
        if (strlen(slash + 1) >= sizeof kind)
            return ks_error_set(err, KS_ERR_ARG, "--steer '%s': unknown direction kind", spec);
        strcpy(kind, slash + 1);
        *slash = 0;
    }
    char *end;
    errno = 0;
    double alpha = strtod(c2 + 1, &end);
    if (errno || end == c2 + 1 || *end || !isfinite(alpha))
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': ALPHA '%s' is not a number", spec, c2 + 1);
    if (strcmp(kind, "diff_means") && strcmp(kind, "probe"))
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': kind '%s' is not diff_means or probe",
                            spec, kind);
    ks_hook_point pt;
    int layer;
    if (ks_hook_parse(hook, &pt, &layer))
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': '%s' is not a hook point", spec, hook);
    const ks_config *cfg = ks_model_config(m);
    int64_t row = ks_hook_row_size(cfg, pt);
    if (row == 0 || pt == KS_HOOK_LOGITS)
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': %s is not a per-token activation that "
                            "can be steered", spec, hook);
    if (layer >= cfg->n_layers)
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': the model has %d layers", spec, cfg->n_layers);
    ks_steer_vec v = {.alpha = (float)alpha};
    snprintf(v.hook, sizeof v.hook, "%s", hook);
    ks_status st = ks_probe_direction_read(path, hook, kind, &v.v, &v.d, err);
    if (st) return st;
    if (v.d != row) {
        free(v.v);
        return ks_error_set(err, KS_ERR_ARG, "--steer '%s': the direction has %d values, %s has %lld "
                            "per token in this model (a results file of another model?)",
                            spec, v.d, hook, (long long)row);
    }
    ks_steer_vec *nv = realloc(set->v, sizeof *nv * (size_t)(set->n + 1));
    if (!nv) {
        free(v.v);
        return ks_error_set(err, KS_ERR_NOMEM, "out of memory");
    }
    set->v = nv;
    set->v[set->n++] = v;
    return KS_OK;
}

bool ks_steer_hook(const ks_hook_tensor *t, bool ask, void *user) {
    ks_steer_set *set = user;
    bool mine = false;
    for (int i = 0; i < set->n; i++)
        if (!strcmp(set->v[i].hook, t->name)) mine = true;
    if (ask) return mine || (set->next && set->next(t, true, set->next_user));
    if (mine) {
        int64_t rows = t->shape[0], per = 1;
        for (int k = 1; k < t->ndim; k++) per *= t->shape[k];
        for (int i = 0; i < set->n; i++) {
            const ks_steer_vec *v = &set->v[i];
            if (strcmp(v->hook, t->name) || per != v->d) continue;
            for (int64_t r = 0; r < rows; r++) {
                float *x = t->data + r * per;
                for (int j = 0; j < v->d; j++) x[j] += v->alpha * v->v[j];
            }
        }
    }
    /* the next hook (a recorder) sees the steered tensor */
    if (set->next && (!mine || set->next(t, true, set->next_user))) set->next(t, false, set->next_user);
    return false;
}
