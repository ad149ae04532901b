/* lens.c — the logit lens (ks_lens.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ks_lens.h"
#include "model_private.h"

ks_status ks_logit_lens(const ks_model *m, const float *x, int n, float *logits, ks_error *err) {
    const ks_config *c = &m->cfg;
    const int D = c->dim, V = c->vocab_size;
    float *xn = malloc((size_t)n * D * sizeof(float)), *row = malloc((size_t)D * sizeof(float));
    if (!xn || !row) {
        free(xn);
        free(row);
        return ks_error_set(err, KS_ERR_NOMEM, "logit lens: out of memory");
    }
    for (int i = 0; i < n; i++) { /* the final RMSNorm, as forward.c computes it */
        const float *xi = x + (size_t)i * D;
        double ss = 0.0;
        for (int d = 0; d < D; d++) ss += (double)xi[d] * xi[d];
        float r = 1.0f / sqrtf((float)(ss / D) + c->rms_eps);
        for (int d = 0; d < D; d++) xn[(size_t)i * D + d] = m->final_norm[d] * (xi[d] * r);
    }
    size_t rb = ks_dtype_row_bytes(m->output.dtype, (size_t)D);
    for (int v = 0; v < V; v++) {
        ks_dtype_to_f32(m->output.dtype, (const unsigned char *)m->output.data + (size_t)v * rb,
                        row, (size_t)D);
        for (int i = 0; i < n; i++) {
            const float *a = xn + (size_t)i * D;
            float s = 0.0f;
            for (int d = 0; d < D; d++) s += a[d] * row[d];
            logits[(size_t)i * V + v] = s;
        }
    }
    free(xn);
    free(row);
    return KS_OK;
}

static double log_sum_exp(const float *z, int V) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (z[i] > mx) mx = z[i];
    double s = 0.0;
    for (int i = 0; i < V; i++) s += exp((double)z[i] - mx);
    return mx + log(s);
}

void ks_lens_row_stats(const float *logits, const float *ref, int V, int target,
                       ks_lens_stats *out) {
    double lse = log_sum_exp(logits, V);
    out->target_logprob = NAN;
    out->target_rank = -1;
    out->kl_to_ref = NAN;
    if (target >= 0 && target < V) {
        out->target_logprob = logits[target] - lse;
        int rank = 0;
        for (int i = 0; i < V; i++) rank += logits[i] > logits[target];
        out->target_rank = rank;
    }
    if (ref) {
        double lr = log_sum_exp(ref, V), kl = 0.0;
        for (int i = 0; i < V; i++) {
            double lp = ref[i] - lr, lq = logits[i] - lse;
            kl += exp(lp) * (lp - lq);
        }
        out->kl_to_ref = kl > 0.0 ? kl : 0.0;
    }
}
