/* views_stub.c — TEMPORARY: the views not written yet answer KS_ERR_UNSUPPORTED so the API
 * links; each moves to its own file as it is implemented. */
#include <string.h>

#include "views_private.h"

#define STUB(what) return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: not implemented yet", what)

ks_status ks_view_file_kind_detect(const char *path, ks_view_file_kind *kind, char **resolved, ks_error *err) {
    (void)path, (void)kind, (void)resolved;
    STUB("file kind");
}
const char *ks_view_file_kind_name(ks_view_file_kind k) { return (void)k, "?"; }
ks_status ks_view_prompt_load(const ks_dump *d, int64_t p, ks_view_prompt *out, ks_error *err) {
    (void)d, (void)p, (void)out;
    STUB("prompt load");
}
void ks_view_prompt_free(ks_view_prompt *v) { (void)v; }
ks_status ks_view_attention_load(const ks_dump *d, int64_t p, int l, int h, ks_heatmap **out, ks_error *err) {
    (void)d, (void)p, (void)l, (void)h, (void)out;
    STUB("attention load");
}
ks_status ks_view_attention_grid_load(const ks_dump *d, int64_t p, int thumb, ks_attention_grid *g,
                                      ks_error *err) {
    (void)d, (void)p, (void)thumb, (void)g;
    STUB("attention grid load");
}
void ks_view_attention_grid_free(ks_attention_grid *g) { (void)g; }
ks_status ks_view_residual_load(const ks_dump *d, int64_t p, int64_t pos, ks_residual_norms *v, ks_error *err) {
    (void)d, (void)p, (void)pos, (void)v;
    STUB("residual load");
}
void ks_view_residual_free(ks_residual_norms *v) { (void)v; }
ks_status ks_view_lens_load(const ks_dump *d, const ks_model *m, int64_t p, int64_t first, int64_t count,
                            ks_lens_table *v, ks_error *err) {
    (void)d, (void)m, (void)p, (void)first, (void)count, (void)v;
    STUB("lens load");
}
void ks_view_lens_free(ks_lens_table *v) { (void)v; }
ks_status ks_view_attribution_load(const char *path, const char *name, ks_view_attribution *out,
                                   ks_error *err) {
    (void)path, (void)name, (void)out;
    STUB("attribution load");
}
void ks_view_attribution_free(ks_view_attribution *v) { (void)v; }
ks_status ks_view_probe_load(const char *path, const char *metric, ks_probe_curves *out, ks_error *err) {
    (void)path, (void)metric, (void)out;
    STUB("probe load");
}
void ks_view_probe_free(ks_probe_curves *v) { (void)v; }
ks_status ks_view_audit_load(const char *path, const char *audit, const char *metric, ks_view_audit *out,
                             ks_error *err) {
    (void)path, (void)audit, (void)metric, (void)out;
    STUB("audit load");
}
void ks_view_audit_free(ks_view_audit *v) { (void)v; }
