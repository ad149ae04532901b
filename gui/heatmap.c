/* heatmap.c — maps of T × T floats (attention, differences) that stay cheap at any T: a mip
 * pyramid of pooled levels built once, a draw that reads only the visible window of the level
 * whose cells are about a device pixel, and token labels thinned so they never overlap
 * (ks_views.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_private.h"
#include "views_private.h"

struct ks_heatmap {
    ks_pool pool;
    int n_levels;
    int64_t rows[40], cols[40];
    float *level[40]; /* level k: [rows[k], cols[k]] */
};

static float pool4(ks_pool p, const float *v, const float *w, int n) {
    /* v: up to 4 values, w: their weights (finite cells under each, MEAN only) */
    float best = NAN;
    double sum = 0, cnt = 0;
    for (int i = 0; i < n; i++) {
        float x = v[i];
        if (isnan(x)) continue;
        if (p == KS_POOL_MEAN) {
            sum += (double)x * w[i];
            cnt += w[i];
        } else if (isnan(best) || (p == KS_POOL_MAX ? x > best : fabsf(x) > fabsf(best))) {
            best = x;
        }
    }
    if (p == KS_POOL_MEAN) return cnt > 0 ? (float)(sum / cnt) : NAN;
    return best;
}

ks_status ks_heatmap_create(const float *v, int64_t rows, int64_t cols, ks_pool pool, ks_heatmap **out,
                            ks_error *err) {
    *out = NULL;
    if (rows < 1 || cols < 1 || !v || rows > (1LL << 31) || cols > (1LL << 31) || rows * cols > (1LL << 34))
        return ks_error_set(err, KS_ERR_ARG, "heatmap: shape %lld x %lld is empty or too large",
                            (long long)rows, (long long)cols);
    if (pool != KS_POOL_MAX && pool != KS_POOL_MEAN && pool != KS_POOL_MAXABS)
        return ks_error_set(err, KS_ERR_ARG, "heatmap: unknown pooling %d", (int)pool);
    ks_heatmap *h = calloc(1, sizeof *h);
    if (!h) return ks_error_set(err, KS_ERR_NOMEM, "heatmap: out of memory");
    h->pool = pool;
    h->rows[0] = rows;
    h->cols[0] = cols;
    h->level[0] = malloc((size_t)(rows * cols) * sizeof(float));
    float *cnt = NULL, *ncnt = NULL; /* MEAN: finite cells under each cell of the level */
    if (!h->level[0]) goto nomem;
    memcpy(h->level[0], v, (size_t)(rows * cols) * sizeof(float));
    if (pool == KS_POOL_MEAN) {
        cnt = malloc((size_t)(rows * cols) * sizeof(float));
        if (!cnt) goto nomem;
        for (int64_t i = 0; i < rows * cols; i++) cnt[i] = isnan(v[i]) ? 0 : 1;
    }
    h->n_levels = 1;
    while (h->rows[h->n_levels - 1] > 1 || h->cols[h->n_levels - 1] > 1) {
        int k = h->n_levels;
        int64_t pr = h->rows[k - 1], pc = h->cols[k - 1], r = (pr + 1) / 2, c = (pc + 1) / 2;
        float *L = malloc((size_t)(r * c) * sizeof(float)), *P = h->level[k - 1];
        if (!L) goto nomem;
        h->level[k] = L;
        h->rows[k] = r;
        h->cols[k] = c;
        h->n_levels++;
        if (cnt) {
            ncnt = malloc((size_t)(r * c) * sizeof(float));
            if (!ncnt) goto nomem;
        }
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++) {
                float vv[4], ww[4] = {1, 1, 1, 1};
                int n = 0;
                for (int64_t a = 2 * i; a < 2 * i + 2 && a < pr; a++)
                    for (int64_t b = 2 * j; b < 2 * j + 2 && b < pc; b++) {
                        if (cnt) ww[n] = cnt[a * pc + b];
                        vv[n++] = P[a * pc + b];
                    }
                L[i * c + j] = pool4(pool, vv, ww, n);
                if (ncnt) ncnt[i * c + j] = ww[0] + (n > 1 ? ww[1] : 0) + (n > 2 ? ww[2] : 0) + (n > 3 ? ww[3] : 0);
            }
        if (cnt) {
            free(cnt);
            cnt = ncnt;
            ncnt = NULL;
        }
    }
    free(cnt);
    *out = h;
    return KS_OK;
nomem:
    free(cnt);
    free(ncnt);
    ks_heatmap_free(h);
    return ks_error_set(err, KS_ERR_NOMEM, "heatmap: out of memory for %lld x %lld", (long long)rows,
                        (long long)cols);
}

void ks_heatmap_free(ks_heatmap *h) {
    if (!h) return;
    for (int k = 0; k < 40; k++) free(h->level[k]);
    free(h);
}

int64_t ks_heatmap_rows(const ks_heatmap *h) { return h->rows[0]; }
int64_t ks_heatmap_cols(const ks_heatmap *h) { return h->cols[0]; }
ks_pool ks_heatmap_pool(const ks_heatmap *h) { return h->pool; }
int ks_heatmap_levels(const ks_heatmap *h) { return h->n_levels; }

float ks_heatmap_at(const ks_heatmap *h, int64_t r, int64_t c) {
    if (r < 0 || c < 0 || r >= h->rows[0] || c >= h->cols[0]) return NAN;
    return h->level[0][r * h->cols[0] + c];
}

void ks_heatmap_row(const ks_heatmap *h, int64_t r, float *out) {
    for (int64_t c = 0; c < h->cols[0]; c++) out[c] = ks_heatmap_at(h, r, c);
}

void ks_heatmap_col(const ks_heatmap *h, int64_t c, float *out) {
    for (int64_t r = 0; r < h->rows[0]; r++) out[r] = ks_heatmap_at(h, r, c);
}

void ks_heatmap_range(const ks_heatmap *h, double *lo, double *hi) {
    double a = INFINITY, b = -INFINITY;
    const float *v = h->level[0];
    for (int64_t i = 0; i < h->rows[0] * h->cols[0]; i++)
        if (isfinite(v[i])) a = fmin(a, v[i]), b = fmax(b, v[i]);
    *lo = a <= b ? a : NAN;
    *hi = a <= b ? b : NAN;
}

const float *ks_heatmap_level(const ks_heatmap *h, int k, int64_t *rows, int64_t *cols) {
    if (k < 0 || k >= h->n_levels) {
        *rows = *cols = 0;
        return NULL;
    }
    *rows = h->rows[k];
    *cols = h->cols[k];
    return h->level[k];
}

ks_status ks_heatmap_diff(const ks_heatmap *a, const ks_heatmap *b, ks_heatmap **out, ks_error *err) {
    *out = NULL;
    if (a->rows[0] != b->rows[0] || a->cols[0] != b->cols[0])
        return ks_error_set(err, KS_ERR_ARG, "difference of maps of different shapes: %lld x %lld and %lld x %lld",
                            (long long)a->rows[0], (long long)a->cols[0], (long long)b->rows[0],
                            (long long)b->cols[0]);
    int64_t n = a->rows[0] * a->cols[0];
    float *d = malloc((size_t)n * sizeof *d);
    if (!d) return ks_error_set(err, KS_ERR_NOMEM, "difference map: out of memory");
    for (int64_t i = 0; i < n; i++) d[i] = a->level[0][i] - b->level[0][i]; /* NaN propagates */
    ks_status st = ks_heatmap_create(d, a->rows[0], a->cols[0], KS_POOL_MAXABS, out, err);
    free(d);
    return st;
}

/* ---------------------------------------------------------------- labels */

static const double *sort_pri;
static int cmp_pri(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    if (sort_pri[a] != sort_pri[b]) return sort_pri[a] > sort_pri[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

int64_t ks_view_labels_thin(const double *centre, const double *extent, const double *priority, int64_t n,
                            double gap, bool *keep) {
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) keep[i] = false;
    if (!priority) {
        double end = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            double lo = centre[i] - extent[i] / 2, hi = centre[i] + extent[i] / 2;
            if (lo >= end + gap) {
                keep[i] = true;
                end = hi;
                kept++;
            }
        }
        return kept;
    }
    /* most important first; the kept labels are held sorted by centre so that a candidate is
     * checked against its two neighbours only */
    int64_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order),
            *set = malloc((size_t)(n > 0 ? n : 1) * sizeof *set);
    if (!order || !set) {
        free(order);
        free(set);
        return ks_view_labels_thin(centre, extent, NULL, n, gap, keep);
    }
    for (int64_t i = 0; i < n; i++) order[i] = i;
    sort_pri = priority; /* qsort has no user pointer in C11; one caller at a time here */
    qsort(order, (size_t)n, sizeof *order, cmp_pri);
    for (int64_t o = 0; o < n; o++) {
        int64_t i = order[o];
        int64_t lo = 0, hi = kept; /* first kept with centre > centre[i] */
        while (lo < hi) {
            int64_t m = (lo + hi) / 2;
            if (centre[set[m]] > centre[i] || (centre[set[m]] == centre[i] && set[m] > i)) hi = m;
            else lo = m + 1;
        }
        bool ok = true;
        if (lo > 0) {
            int64_t p = set[lo - 1];
            if (centre[p] + extent[p] / 2 + gap > centre[i] - extent[i] / 2) ok = false;
        }
        if (ok && lo < kept) {
            int64_t q = set[lo];
            if (centre[i] + extent[i] / 2 + gap > centre[q] - extent[q] / 2) ok = false;
        }
        if (!ok) continue;
        memmove(set + lo + 1, set + lo, (size_t)(kept - lo) * sizeof *set);
        set[lo] = i;
        kept++;
        keep[i] = true;
    }
    free(order);
    free(set);
    return kept;
}

/* ---------------------------------------------------------------- drawing */

void ks_view_token_label(const char *piece, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = piece ? piece : ""; *p && o + 4 < cap; p++) {
        if (*p == '\n') memcpy(out + o, "\xe2\x8f\x8e", 3), o += 3; /* ⏎ */
        else if (*p == '\t') memcpy(out + o, "\xe2\x86\x92", 3), o += 3; /* → */
        else if ((unsigned char)*p < 0x20) out[o++] = '?';
        else out[o++] = *p;
    }
    out[o] = 0;
}

/* Paint the window [r0, r1) × [c0, c1) of h into (px, py, pw, ph) from the right level. */
int ks_view_paint_map(cairo_t *cr, const ks_heatmap *h, double r0, double r1, double c0, double c1, double px,
                      double py, double pw, double ph, ks_colormap cmap, double vmin, double vmax) {
    double sx = 1, sy = 0, tx = 0, ty = 1;
    cairo_user_to_device_distance(cr, &sx, &sy);
    cairo_user_to_device_distance(cr, &tx, &ty);
    double dev_w = pw * hypot(sx, sy), dev_h = ph * hypot(tx, ty);
    double cpp = fmax((c1 - c0) / fmax(dev_w, 1e-9), (r1 - r0) / fmax(dev_h, 1e-9));
    int k = 0;
    while (k + 1 < h->n_levels && (double)(1LL << k) < cpp * (1 - 1e-9)) k++;
    double s = (double)(1LL << k);
    int64_t kr0 = (int64_t)floor(r0 / s), kr1 = (int64_t)ceil(r1 / s);
    int64_t kc0 = (int64_t)floor(c0 / s), kc1 = (int64_t)ceil(c1 / s);
    if (kr1 > h->rows[k]) kr1 = h->rows[k];
    if (kc1 > h->cols[k]) kc1 = h->cols[k];
    if (kr0 < 0) kr0 = 0;
    if (kc0 < 0) kc0 = 0;
    int iw = (int)(kc1 - kc0), ih = (int)(kr1 - kr0);
    if (iw < 1 || ih < 1) return k;
    cairo_surface_t *img = cairo_image_surface_create(CAIRO_FORMAT_RGB24, iw, ih);
    if (cairo_surface_status(img)) {
        cairo_surface_destroy(img);
        return k;
    }
    cairo_surface_flush(img);
    unsigned char *px8 = cairo_image_surface_get_data(img);
    int stride = cairo_image_surface_get_stride(img);
    const float *L = h->level[k];
    for (int i = 0; i < ih; i++) {
        uint32_t *row = (uint32_t *)(px8 + (size_t)i * stride);
        const float *src = L + (kr0 + i) * h->cols[k] + kc0;
        for (int j = 0; j < iw; j++) {
            double rgb[3];
            ks_colormap_rgb(cmap, ks_colormap_t(cmap, src[j], vmin, vmax), rgb);
            row[j] = (uint32_t)lround(rgb[0] * 255) << 16 | (uint32_t)lround(rgb[1] * 255) << 8 |
                     (uint32_t)lround(rgb[2] * 255);
        }
    }
    cairo_surface_mark_dirty(img);
    cairo_save(cr);
    cairo_rectangle(cr, px, py, pw, ph);
    cairo_clip(cr);
    cairo_translate(cr, px, py);
    cairo_scale(cr, pw / (c1 - c0) * s, ph / (r1 - r0) * s);
    cairo_translate(cr, kc0 - c0 / s, kr0 - r0 / s);
    cairo_set_source_surface(cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(cr), CAIRO_FILTER_NEAREST);
    cairo_paint(cr);
    cairo_restore(cr);
    cairo_surface_destroy(img);
    return k;
}

/* width of the widest label among [i0, i1) (capped at cap) */
static double labels_width(cairo_t *cr, const char *const *labels, int64_t i0, int64_t i1, double cap) {
    double w = 0;
    char buf[256], tb[256];
    for (int64_t i = i0; i < i1 && w < cap; i++) {
        if (labels) ks_view_token_label(labels[i], tb, sizeof tb);
        else snprintf(tb, sizeof tb, "%lld", (long long)i);
        ks_chart_clean_utf8(tb, buf, sizeof buf);
        cairo_text_extents_t e;
        cairo_text_extents(cr, buf, &e);
        w = fmax(w, e.x_advance);
    }
    return fmin(w, cap);
}

/* Draw the labels of the visible rows (vertical: along y, text left of x_or_y) or columns
 * (along x, rotated text under x_or_y), thinned; record items. */
static ks_status draw_axis_labels(cairo_t *cr, const char *const *labels, double w0, double w1, double origin,
                                  double cell, double pos0, double room, double lfs, bool rows, double at,
                                  double span_lo, double span_hi, ks_view_geom *geom, ks_error *err) {
    int64_t i0 = (int64_t)floor(w0), i1 = (int64_t)ceil(w1);
    int64_t n = i1 - i0;
    if (n <= 0) return KS_OK;
    double *cen = calloc((size_t)n, sizeof *cen), *ext = calloc((size_t)n, sizeof *ext);
    bool *keep = malloc((size_t)n * sizeof *keep);
    if (!cen || !ext || !keep) {
        free(cen), free(ext), free(keep);
        return ks_error_set(err, KS_ERR_NOMEM, "labels: out of memory");
    }
    int64_t m = 0;
    for (int64_t i = i0; i < i1; i++) {
        double c = origin + (i + 0.5 - pos0) * cell;
        if (c < span_lo || c > span_hi) continue;
        cen[m] = c;
        ext[m] = lfs * 1.15; /* the text's height across the axis it is stacked along */
        m++;
    }
    ks_view_labels_thin(cen, ext, NULL, m, lfs * 0.15, keep);
    char tb[256];
    m = 0;
    for (int64_t i = i0; i < i1; i++) {
        double c = origin + (i + 0.5 - pos0) * cell;
        if (c < span_lo || c > span_hi) continue;
        if (!keep[m++]) continue;
        if (labels) ks_view_token_label(labels[i], tb, sizeof tb);
        else snprintf(tb, sizeof tb, "%lld", (long long)i);
        if (rows) {
            double w = ks_view_text(cr, tb, at, c, 1, 0.5, room);
            ks_view_geom_add(geom, KS_VIEW_ITEM_ROW_LABEL, at - w, c - ext[m - 1] / 2, w, ext[m - 1], i, 0);
        } else {
            cairo_save(cr);
            cairo_translate(cr, c, at);
            cairo_rotate(cr, -M_PI / 2);
            double w = ks_view_text(cr, tb, 0, 0, 1, 0.5, room);
            cairo_restore(cr);
            ks_view_geom_add(geom, KS_VIEW_ITEM_COL_LABEL, c - ext[m - 1] / 2, at, ext[m - 1], w, i, 0);
        }
    }
    free(cen), free(ext), free(keep);
    return KS_OK;
}

ks_status ks_view_window(const ks_heatmap *h, double *r0, double *r1, double *c0, double *c1, ks_error *err) {
    int64_t R = h->rows[0], C = h->cols[0];
    if (!(*r1 > *r0)) *r0 = 0, *r1 = (double)R;
    if (!(*c1 > *c0)) *c0 = 0, *c1 = (double)C;
    if (!(*r0 >= 0) || !(*c0 >= 0) || *r0 >= R || *c0 >= C || !isfinite(*r1) || !isfinite(*c1))
        return ks_error_set(err, KS_ERR_ARG, "window rows %g:%g, cols %g:%g is outside the %lld x %lld map", *r0,
                            *r1, *c0, *c1, (long long)R, (long long)C);
    if (*r1 > R) *r1 = (double)R;
    if (*c1 > C) *c1 = (double)C;
    return KS_OK;
}

ks_status ks_heatmap_view_draw(cairo_t *cr, const ks_heatmap_view *v, double W, double H, ks_view_geom *geom,
                               ks_error *err) {
    ks_view_geom_reset(geom);
    if (!v || !v->map) return ks_error_set(err, KS_ERR_ARG, "heatmap view: no map");
    double r0 = v->row0, r1 = v->row1, c0 = v->col0, c1 = v->col1;
    ks_status st = ks_view_window(v->map, &r0, &r1, &c0, &c1, err);
    if (st) return st;
    double vmin = v->vmin, vmax = v->vmax;
    if (isnan(vmin) || isnan(vmax)) {
        double lo, hi;
        ks_heatmap_range(v->map, &lo, &hi);
        double a, b;
        ks_view_range_finish(v->cmap, isnan(lo) ? 1 : lo, isnan(lo) ? 0 : hi, &a, &b);
        if (isnan(vmin)) vmin = a;
        if (isnan(vmax)) vmax = b;
    }
    cairo_save(cr);
    double fs = ks_view_fs(W, H, 45), top = ks_view_begin(cr, W, H, v->title, fs);
    double legend_w = v->value_label ? fs * 6 : 0;
    /* label size: first guess, then follow the cell size once */
    double nr = r1 - r0, nc = c1 - c0, lfs = fs * 0.85, cell = 0, left = 0, bottom = 0;
    for (int pass = 0; pass < 2; pass++) {
        ks_view_font(cr, lfs);
        left = labels_width(cr, v->row_labels, (int64_t)floor(r0), (int64_t)ceil(r1), lfs * 10) + lfs * 0.8;
        bottom = labels_width(cr, v->col_labels, (int64_t)floor(c0), (int64_t)ceil(c1), lfs * 10) + lfs * 0.8;
        double aw = W - left - legend_w - fs, ah = H - top - bottom - fs * 0.5;
        cell = fmax(1e-6, fmin(aw / nc, ah / nr));
        double want = fmax(6, fmin(fs * 0.85, cell * 0.9));
        if (fabs(want - lfs) < 0.25) break;
        lfs = want;
    }
    double pw = cell * nc, ph = cell * nr, px = left, py = top;
    if (pw < 1 || ph < 1) {
        cairo_restore(cr);
        return ks_error_set(err, KS_ERR_ARG, "heatmap view: %gx%g is too small to draw", W, H);
    }
    int k = ks_view_paint_map(cr, v->map, r0, r1, c0, c1, px, py, pw, ph, v->cmap, vmin, vmax);
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    cairo_set_line_width(cr, 0.6);
    cairo_rectangle(cr, px, py, pw, ph);
    cairo_stroke(cr);
    /* the marked row / column */
    cairo_set_source_rgb(cr, 0.9, 0.4, 0);
    cairo_set_line_width(cr, fmax(1, fmin(2, cell * 0.2)));
    if (v->mark_row >= 0 && v->mark_row + 1 > r0 && v->mark_row < r1) {
        cairo_rectangle(cr, px, py + (v->mark_row - r0) * cell, pw, cell);
        cairo_stroke(cr);
    }
    if (v->mark_col >= 0 && v->mark_col + 1 > c0 && v->mark_col < c1) {
        cairo_rectangle(cr, px + (v->mark_col - c0) * cell, py, cell, ph);
        cairo_stroke(cr);
    }
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    ks_view_font(cr, lfs);
    st = draw_axis_labels(cr, v->row_labels, r0, r1, py, cell, r0, left - lfs * 0.6, lfs, true, px - lfs * 0.4,
                          py, py + ph, geom, err);
    if (!st)
        st = draw_axis_labels(cr, v->col_labels, c0, c1, px, cell, c0, bottom - lfs * 0.6, lfs, false,
                              py + ph + lfs * 0.4, px, px + pw, geom, err);
    if (v->value_label) {
        ks_view_font(cr, fs * 0.9);
        double lx = px + pw + fs, lh = fmin(ph, fs * 14);
        if (lh < fs * 5) lh = fs * 5;
        ks_colormap_draw_legend(cr, v->cmap, vmin, vmax, v->value_label, lx, py, legend_w - fs * 0.5, lh);
        ks_view_geom_add(geom, KS_VIEW_ITEM_LEGEND, lx, py, legend_w - fs * 0.5, lh, 0, 0);
    }
    cairo_restore(cr);
    if (geom) {
        geom->plot = (ks_rect){px, py, pw, ph};
        geom->row0 = r0, geom->row1 = r1, geom->col0 = c0, geom->col1 = c1;
        geom->pool_level = k;
    }
    return st;
}
