/* views_stub.c — TEMPORARY: the views not written yet answer KS_ERR_UNSUPPORTED so the API
 * links; each moves to its own file as it is implemented. */
#include <string.h>

#include "views_private.h"

#define STUB(what) return ks_error_set(err, KS_ERR_UNSUPPORTED, "%s: not implemented yet", what)

int64_t ks_view_labels_thin(const double *c, const double *e, const double *p, int64_t n, double gap,
                            bool *keep) {
    (void)c, (void)e, (void)p, (void)gap;
    for (int64_t i = 0; i < n; i++) keep[i] = false;
    return 0;
}
ks_status ks_heatmap_create(const float *v, int64_t r, int64_t c, ks_pool pool, ks_heatmap **out,
                            ks_error *err) {
    (void)v, (void)r, (void)c, (void)pool, (void)out;
    STUB("heatmap");
}
void ks_heatmap_free(ks_heatmap *h) { (void)h; }
int64_t ks_heatmap_rows(const ks_heatmap *h) { return (void)h, 0; }
int64_t ks_heatmap_cols(const ks_heatmap *h) { return (void)h, 0; }
ks_pool ks_heatmap_pool(const ks_heatmap *h) { return (void)h, KS_POOL_MAX; }
int ks_heatmap_levels(const ks_heatmap *h) { return (void)h, 0; }
float ks_heatmap_at(const ks_heatmap *h, int64_t r, int64_t c) { return (void)h, (void)r, (void)c, 0.0f; }
void ks_heatmap_row(const ks_heatmap *h, int64_t r, float *out) { (void)h, (void)r, (void)out; }
void ks_heatmap_col(const ks_heatmap *h, int64_t c, float *out) { (void)h, (void)c, (void)out; }
void ks_heatmap_range(const ks_heatmap *h, double *lo, double *hi) { (void)h, *lo = 0, *hi = 0; }
const float *ks_heatmap_level(const ks_heatmap *h, int k, int64_t *r, int64_t *c) {
    return (void)h, (void)k, *r = 0, *c = 0, NULL;
}
ks_status ks_heatmap_diff(const ks_heatmap *a, const ks_heatmap *b, ks_heatmap **out, ks_error *err) {
    (void)a, (void)b, (void)out;
    STUB("heatmap diff");
}
#define DRAW_STUB(fn, T, what)                                                                          \
    ks_status fn(cairo_t *cr, const T *v, double w, double h, ks_view_geom *g, ks_error *err) {         \
        (void)cr, (void)v, (void)w, (void)h, (void)g;                                                   \
        STUB(what);                                                                                     \
    }
DRAW_STUB(ks_heatmap_view_draw, ks_heatmap_view, "heatmap view")
DRAW_STUB(ks_token_strip_draw, ks_token_strip, "token strip")
DRAW_STUB(ks_token_bars_draw, ks_token_bars, "token bars")
DRAW_STUB(ks_attention_grid_draw, ks_attention_grid, "attention grid")
DRAW_STUB(ks_attention_head_draw, ks_attention_head, "attention head")
DRAW_STUB(ks_residual_norms_draw, ks_residual_norms, "residual norms")
DRAW_STUB(ks_lens_table_draw, ks_lens_table, "lens table")
DRAW_STUB(ks_probe_curves_draw, ks_probe_curves, "probe curves")
DRAW_STUB(ks_audit_scores_draw, ks_forest, "audit scores")
DRAW_STUB(ks_table_draw, ks_table, "table")
DRAW_STUB(ks_compare_maps_draw, ks_compare_maps, "compare maps")
DRAW_STUB(ks_compare_curves_draw, ks_compare_curves, "compare curves")
ks_status ks_attention_token_draw(cairo_t *cr, const ks_heatmap *map, const char *const *tokens, int layer,
                                  int head, ks_attn_direction dir, int64_t t, int64_t first, int64_t count,
                                  double w, double h, ks_view_geom *g, ks_error *err) {
    (void)cr, (void)map, (void)tokens, (void)layer, (void)head, (void)dir, (void)t, (void)first;
    (void)count, (void)w, (void)h, (void)g;
    STUB("attention from/to token");
}
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
