/* ks_views.h — every view of the viewer as cairo drawing code, with no GTK: the same
 * functions draw into the GTK window, into PNG/SVG/PDF files (`koalascope render`) and into
 * headless tests. docs/VIEWER.md shows each view.
 *
 * Two halves:
 *  - DRAWING (gui/colormap.c, heatmap.c, tokens.c, attention.c, residual.c, bars.c,
 *    results.c, compare.c; cairo only): every draw function takes a plain data struct that
 *    the caller owns, a cairo_t and a size, draws into the rectangle (0, 0, width, height)
 *    of cr's user space (the caller translates/scales/clips), and fills a ks_view_geom with
 *    where things landed (cell, token, label and panel rectangles) for hit tests and tests.
 *    Draw functions read their struct and never keep a pointer to it.
 *  - LOADING (gui/views_load.c; HDF5 through activations/): functions that fill the view
 *    structs from a dump, an attribution file, probe results or audit results. They are lazy:
 *    each reads only what one view shows (one prompt; one layer's one head; one audit).
 *    Files are untrusted input: a malformed file is KS_ERR_FORMAT naming the file and object.
 *
 * Sizes are in cairo user units (pixels on an image surface at scale 1, points in SVG/PDF).
 * Errors: KS_ERR_ARG for an inconsistent struct (n < 0, NULL arrays with n > 0, a window
 * outside the data), KS_ERR_NOMEM; detail in err, which may be NULL. Nothing prints.
 *
 * Threading: draw functions keep no global state; a ks_heatmap may be drawn from several
 * threads at once (it is read-only after creation). Loaders use a ks_dump handle, which is
 * one thread's at a time (activations/ks_dump.h). */
#ifndef KS_VIEWS_H
#define KS_VIEWS_H

#include <cairo.h>
#include <stdbool.h>
#include <stdint.h>

#include "ks_dump.h"
#include "ks_model.h"
#include "ks_plot.h"
#include "ks_status.h"

/* ================================================================ colormaps (colormap.c) */

/* Each colormap is a piecewise-linear ramp through 5 anchor colours, in 8-bit sRGB,
 * at t = 0, 1/4, 2/4, 3/4, 1. For t in [k/4, (k+1)/4]: c = a[k] + (a[k+1] − a[k]) · (4t − k),
 * per channel, in 0..255, handed to cairo as c / 255 (the tests compute colours from these
 * anchors, so they are the definition; change them and the tests together):
 *
 *   KS_CMAP_SEQUENTIAL ("blues", for probabilities, attention, norms):
 *     #ffffff (255,255,255) #c6dbef (198,219,239) #6baed6 (107,174,214)
 *     #2171b5 (33,113,181)  #08306b (8,48,107)
 *   KS_CMAP_DIVERGING (blue-white-red, for signed values: attributions, differences):
 *     #2166ac (33,102,172)  #92c5de (146,197,222) #ffffff (255,255,255)
 *     #f4a582 (244,165,130) #b2182b (178,24,43)
 *
 * A value v in the range [vmin, vmax] maps to t = (v − vmin) / (vmax − vmin), clamped to
 * [0, 1] (vmax <= vmin: t = 0.5 for the diverging map, 1 for the sequential one where v > 0
 * else 0). A diverging range is symmetric: vmin = −vmax, so 0 is white. NaN (no data: the
 * masked upper triangle of an attention map, a position not recorded) is KS_VIEW_NODATA_RGB. */
typedef enum {
    KS_CMAP_SEQUENTIAL = 0,
    KS_CMAP_DIVERGING = 1,
} ks_colormap;

#define KS_VIEW_NODATA_RGB 0xe6e6e6 /* (230,230,230): cells with no data */

/* The colour of t in [0, 1] (clamped; NaN: KS_VIEW_NODATA_RGB) as r, g, b in [0, 1]. */
void ks_colormap_rgb(ks_colormap m, double t, double rgb[3]);
/* t of value v in [vmin, vmax], as documented above (NaN stays NaN). */
double ks_colormap_t(ks_colormap m, double v, double vmin, double vmax);
/* "sequential" / "diverging"; parse: KS_ERR_ARG for anything else. */
const char *ks_colormap_name(ks_colormap m);
ks_status ks_colormap_parse(const char *s, ks_colormap *out, ks_error *err);
/* The range a view uses when its vmin/vmax are NaN: sequential [min(0, lo), hi] of the
 * finite values, diverging [−m, m] with m = max |v|; no finite value: [0, 1]. */
void ks_colormap_auto_range(ks_colormap m, const float *v, int64_t n, double *vmin,
                            double *vmax);
/* A colour bar with its tick labels in rect (x, y, w, h): horizontal when w > h. */
void ks_colormap_draw_legend(cairo_t *cr, ks_colormap m, double vmin, double vmax,
                             const char *caption, double x, double y, double w, double h);

/* ================================================================ geometry of a drawn view */

typedef struct {
    double x, y, w, h;
} ks_rect;

typedef enum {
    KS_VIEW_ITEM_TOKEN = 0,     /* a token's box in a strip or a bar row: a = token index */
    KS_VIEW_ITEM_ROW_LABEL = 1, /* a label left of a heatmap/table/bar chart: a = row index */
    KS_VIEW_ITEM_COL_LABEL = 2, /* a label under/over a heatmap/table: a = column index */
    KS_VIEW_ITEM_PANEL = 3,     /* a small map of a grid: a = layer slot, b = head slot;
                                   a compare panel: a = 0 (A), 1 (B), 2 (difference) */
    KS_VIEW_ITEM_BAR = 4,       /* a bar: a = token / row index */
    KS_VIEW_ITEM_CELL = 5,      /* a table cell (lens, items): a = row, b = column */
    KS_VIEW_ITEM_LEGEND = 6,    /* the colour bar */
} ks_view_item_kind;

typedef struct {
    ks_view_item_kind kind;
    ks_rect rect;
    int64_t a, b;
} ks_view_item;

/* Where a view put its parts. Fill with ks_view_geom_init (or = {0}), pass to any number of
 * draws (each resets it), release with ks_view_geom_free. Heatmap cells are not items (a
 * 2,048² map would make 4 M of them): `plot` and the window map a point to a cell
 * (ks_view_geom_cell). */
typedef struct {
    ks_rect plot;                   /* the data area: heatmap, chart frame, table body */
    double row0, row1, col0, col1;  /* heatmap views: the window of cells shown in plot
                                       (rows top to bottom, columns left to right) */
    int pool_level;                 /* heatmap views: cells were pooled 2^level × 2^level */
    int64_t rows_shown;             /* token strip / bars / tables: rows that fit */
    double content_height;          /* the height the view would need to show everything
                                       at this width (strip, tables: scroll extent) */
    ks_view_item *items;            /* malloc'd, n_items of them, in drawing order */
    int n_items, cap_items;
} ks_view_geom;

void ks_view_geom_init(ks_view_geom *g);
void ks_view_geom_free(ks_view_geom *g); /* NULL-safe; g can be reused after init */
/* The topmost item of a kind (kind < 0: any kind) containing (x, y); -1 when none. */
int ks_view_geom_hit(const ks_view_geom *g, double x, double y, int kind);
/* The heatmap cell under (x, y): true with *row, *col when inside plot. */
bool ks_view_geom_cell(const ks_view_geom *g, double x, double y, int64_t *row, int64_t *col);

/* ================================================================ labels (heatmap.c) */

/* Which of n labels, centred at centre[i] along an axis (ascending), fit without overlap
 * when each takes extent[i] along the axis plus gap: chosen greedily, most important first
 * (priority[i] higher first, ties by index; NULL: every label equal, in order), each kept
 * only when it overlaps none kept so far. keep[i] receives the choice. Returns the count
 * kept. Cost O(n) without priorities, O(n log n + n · kept) with. This is what thins the
 * token labels of a 2,048-token map. */
int64_t ks_view_labels_thin(const double *centre, const double *extent, const double *priority,
                            int64_t n, double gap, bool *keep);

/* ================================================================ heatmaps (heatmap.c) */

/* How a block of cells becomes one pixel when a map is shown smaller than its cells. */
typedef enum {
    KS_POOL_MAX = 0,    /* largest value: a single hot cell stays visible (attention) */
    KS_POOL_MEAN = 1,   /* mean of the finite values */
    KS_POOL_MAXABS = 2, /* the value of largest magnitude, sign kept (differences) */
} ks_pool;

/* A rows × cols map of floats with its pooled levels (a mip pyramid): level k holds
 * ceil(rows / 2^k) × ceil(cols / 2^k) cells, each the pool of a 2^k × 2^k block of level 0
 * (NaN cells ignored; a block of NaN only is NaN). Built once (O(rows · cols) time, 4/3 of
 * the map's memory); drawing then picks the level whose cells are about one pixel and reads
 * only the visible window of it, so a draw costs O(pixels shown), not O(rows · cols). */
typedef struct ks_heatmap ks_heatmap;

/* Copy v [rows, cols] (row-major; NaN = no data) and build the levels. */
ks_status ks_heatmap_create(const float *v, int64_t rows, int64_t cols, ks_pool pool,
                            ks_heatmap **out, ks_error *err);
void ks_heatmap_free(ks_heatmap *h);
int64_t ks_heatmap_rows(const ks_heatmap *h);
int64_t ks_heatmap_cols(const ks_heatmap *h);
ks_pool ks_heatmap_pool(const ks_heatmap *h);
int ks_heatmap_levels(const ks_heatmap *h);
/* Level-0 value (NaN outside). */
float ks_heatmap_at(const ks_heatmap *h, int64_t r, int64_t c);
/* Level-0 row r [cols] or column c [rows] into out (attention from / to a token). */
void ks_heatmap_row(const ks_heatmap *h, int64_t r, float *out);
void ks_heatmap_col(const ks_heatmap *h, int64_t c, float *out);
/* Finite min and max of level 0 (NaN, NaN when none). */
void ks_heatmap_range(const ks_heatmap *h, double *lo, double *hi);
/* Level k (0 <= k < levels): *data [*rows, *cols], owned by h. */
const float *ks_heatmap_level(const ks_heatmap *h, int k, int64_t *rows, int64_t *cols);
/* a − b cell by cell (same shape; NaN where either is NaN), pooled with KS_POOL_MAXABS. */
ks_status ks_heatmap_diff(const ks_heatmap *a, const ks_heatmap *b, ks_heatmap **out,
                          ks_error *err);

/* A heatmap with token labels on both axes: a zoomed attention head, a difference map. */
typedef struct {
    const ks_heatmap *map;           /* required */
    const char *const *row_labels;   /* [rows] or NULL: row numbers */
    const char *const *col_labels;   /* [cols] or NULL: column numbers */
    double row0, row1, col0, col1;   /* the visible window in cells, fractional allowed;
                                        row1 <= row0 (e.g. all 0): all rows; same for cols */
    ks_colormap cmap;
    double vmin, vmax;               /* NaN: ks_colormap_auto_range of the map */
    const char *title;               /* NULL: none */
    const char *value_label;         /* caption of the colour bar; NULL: no colour bar */
    int64_t mark_row, mark_col;      /* a row / column outlined (from/to token); -1 none */
} ks_heatmap_view;

/* Labels are thinned with ks_view_labels_thin so none overlap (rows: labels left of the map;
 * columns: rotated labels under it); items: ROW_LABEL / COL_LABEL for each label drawn,
 * LEGEND. Cells stay square (the plot shrinks to the window's aspect). The map is drawn from
 * the pooled level k whose cells are the smallest that still cover at least one device pixel
 * on both axes (2^k >= cells per pixel), so with max-pooling nothing hot disappears when
 * zoomed out, and the level window read has about as many cells as the plot has pixels; it
 * is scaled with nearest-neighbour filtering. geom->pool_level says which level. */
ks_status ks_heatmap_view_draw(cairo_t *cr, const ks_heatmap_view *v, double width,
                               double height, ks_view_geom *geom, ks_error *err);

/* ================================================================ token strip (tokens.c) */

typedef struct {
    const char *const *pieces; /* [n] token text (UTF-8; invalid bytes drawn as '?'; "\n"
                                  drawn as ⏎, leading space as a light ␣-free gap) */
    const float *values;       /* [n] colour of each token; NULL or NaN: uncoloured */
    int64_t n;
    ks_colormap cmap;
    double vmin, vmax;         /* NaN: auto */
    const char *title;         /* NULL: none */
    const char *value_label;   /* legend caption ("log p(token)", "attribution"); NULL: no
                                  legend */
    int64_t highlight;         /* token outlined (hover, search hit); -1 none */
    double scroll_y;           /* the strip scrolled up by this much (long prompts) */
} ks_token_strip;

/* Tokens left to right, wrapping lines at width; items: TOKEN (a = index) per token drawn,
 * LEGEND; geom->content_height = the height that shows every line. */
ks_status ks_token_strip_draw(cairo_t *cr, const ks_token_strip *v, double width, double height,
                              ks_view_geom *geom, ks_error *err);

/* ================================================================ bars over tokens (bars.c) */

/* One bar per token, tokens top to bottom (label left, bar from the zero line): attention
 * from / to a token, attribution per token. Positive bars take pos_rgb, negative neg_rgb. */
typedef struct {
    const char *const *labels; /* [n] token pieces (NULL: indices) */
    const float *values;       /* [n] (NaN: no bar, "n/a") */
    int64_t n;
    int64_t first, count;      /* the window of rows shown (count 0: all that fit from first) */
    int64_t focus;             /* a row drawn emphasised (the token t of from/to); -1 none */
    double vmin, vmax;         /* NaN: from the data, always including 0 */
    double pos_rgb[3], neg_rgb[3]; /* all 0: diverging map's ends (red +, blue −) */
    const char *title, *subtitle, *value_label; /* NULL: none */
} ks_token_bars;

/* items: ROW_LABEL per label drawn (thinned when rows are thinner than the text), BAR per
 * row shown; geom->plot is the bar area, rows_shown the rows that fit. */
ks_status ks_token_bars_draw(cairo_t *cr, const ks_token_bars *v, double width, double height,
                             ks_view_geom *geom, ks_error *err);

/* ================================================================ attention (attention.c) */

/* The layers × heads grid of small maps of one prompt. */
typedef struct {
    int n_layers, n_heads;            /* grid shape */
    const int *layer_ids;             /* [n_layers] model layer of each grid row */
    const int *head_ids;              /* [n_heads] model head of each grid column */
    const ks_heatmap *const *maps;    /* [n_layers * n_heads] (row-major); NULL: not recorded
                                         (drawn as a crossed-out cell) */
    double vmin, vmax;                /* NaN: 0 and 1 (attention probabilities) */
    const char *title;
    int sel_layer, sel_head;          /* slot outlined; -1 none */
} ks_attention_grid;

/* items: PANEL (a = layer slot, b = head slot) per map, ROW_LABEL (layers), COL_LABEL
 * (heads), LEGEND. Each panel draws at its pixel size from its map's pyramid. */
ks_status ks_attention_grid_draw(cairo_t *cr, const ks_attention_grid *v, double width,
                                 double height, ks_view_geom *geom, ks_error *err);

/* A zoomed head: the T × T pattern with token labels (ks_heatmap_view with the attention
 * conventions: sequential map, 0..1, rows = queries, columns = keys). */
typedef struct {
    const ks_heatmap *map;            /* [T, T]; NaN above the diagonal */
    const char *const *tokens;        /* [T] pieces */
    int layer, head;                  /* for the title */
    double row0, row1, col0, col1;    /* window as ks_heatmap_view */
    int64_t mark_row, mark_col;       /* -1 none */
} ks_attention_head;

ks_status ks_attention_head_draw(cairo_t *cr, const ks_attention_head *v, double width,
                                 double height, ks_view_geom *geom, ks_error *err);

typedef enum {
    KS_ATTN_FROM = 0, /* row t: where token t looks (keys 0..t) */
    KS_ATTN_TO = 1,   /* column t: which later tokens look at t */
} ks_attn_direction;

/* "Attention from / to token t": the row or column of map as bars over tokens (ks_token_bars
 * with first/count as the window). */
ks_status ks_attention_token_draw(cairo_t *cr, const ks_heatmap *map, const char *const *tokens,
                                  int layer, int head, ks_attn_direction dir, int64_t t,
                                  int64_t first, int64_t count, double width, double height,
                                  ks_view_geom *geom, ks_error *err);

/* ================================================================ residual stream (residual.c) */

/* Per-layer norms of the residual stream of one prompt. */
typedef struct {
    int n;                   /* points, one per residual hook */
    const double *x;         /* [n] layer coordinate: the stream entering layer L (hook_embed,
                                resid_pre L) at L, leaving it (resid_post L) at L + 1 */
    const double *at_pos;    /* [n] ‖x‖₂ at the chosen position; NULL: not drawn */
    const double *mean, *lo, *hi; /* [n] mean over positions and its min/max band (NULL: none) */
    int64_t position;        /* for the legend; -1 when at_pos is NULL */
    const char *title, *subtitle;
} ks_residual_norms;

/* A ks_plot (line chart) of the norms; geom->plot is the chart frame. */
ks_status ks_residual_norms_draw(cairo_t *cr, const ks_residual_norms *v, double width,
                                 double height, ks_view_geom *geom, ks_error *err);

/* The logit lens table: layers top to bottom × positions left to right; each cell the lens's
 * top token and its probability, shaded by the probability (sequential map, 0..1). */
typedef struct {
    int n_layers;
    int64_t n_pos;
    const char *const *layer_labels; /* [n_layers] ("0", "1", …, "out") */
    const char *const *pos_labels;   /* [n_pos] the token at each position */
    const char *const *top_text;     /* [n_layers * n_pos] top next-token piece */
    const float *top_prob;           /* [n_layers * n_pos] its probability (NaN: empty cell) */
    int64_t first, count;            /* window of positions shown (count 0: all that fit) */
    const char *title;
} ks_lens_table;

/* items: CELL (a = layer, b = position) per cell drawn, ROW_LABEL, COL_LABEL, LEGEND. Cell
 * text is cut with "…" to the cell width. */
ks_status ks_lens_table_draw(cairo_t *cr, const ks_lens_table *v, double width, double height,
                             ks_view_geom *geom, ks_error *err);

/* ================================================================ probes and audits (results.c) */

/* Per-layer probe metrics with confidence bands and the controls. */
typedef struct {
    int n;                      /* hooks, in sweep order */
    const double *x;            /* [n] layer of each hook */
    const char *metric;         /* "accuracy", "AUROC" or "R²" (legend) */
    const double *value, *lo, *hi;            /* [n] the metric and its CI */
    const double *majority;                   /* [n] or NULL: majority-class baseline */
    const double *shuffled, *shuffled_lo, *shuffled_hi; /* [n] or NULL: shuffled-label probe */
    const double *control;                    /* [n] or NULL: control task */
    const char *title, *subtitle;
} ks_probe_curves;

ks_status ks_probe_curves_draw(cairo_t *cr, const ks_probe_curves *v, double width,
                               double height, ks_view_geom *geom, ks_error *err);

/* An audit's per-category metric with CIs: a ks_forest (gui/ks_plot.h) is the data struct;
 * items: ROW_LABEL per row (click through to the category's items). */
ks_status ks_audit_scores_draw(cairo_t *cr, const ks_forest *f, double width, double height,
                               ks_view_geom *geom, ks_error *err);

/* A table of text: the audit items, or any list. */
typedef struct {
    int n_cols;
    const char *const *headers;  /* [n_cols] */
    const double *col_weight;    /* [n_cols] relative widths; NULL: equal */
    int64_t n_rows;
    const char *const *cells;    /* [n_rows * n_cols] (NULL cell: empty) */
    const float *shade;          /* [n_rows] optional row value shaded in column shade_col
                                    with cmap over [vmin, vmax]; NULL: none */
    int shade_col;
    ks_colormap cmap;
    double vmin, vmax;
    int64_t first;               /* first row shown (scrolling) */
    int64_t selected;            /* row highlighted; -1 none */
    const char *title;
} ks_table;

/* items: CELL (a = row, b = column) per cell drawn; rows_shown the rows that fit. */
ks_status ks_table_draw(cairo_t *cr, const ks_table *v, double width, double height,
                        ks_view_geom *geom, ks_error *err);

/* ================================================================ compare (compare.c) */

/* Two maps side by side (A, B: one shared sequential range) and A − B (diverging, symmetric
 * range ±max|A − B|). a, b and diff have one shape; window and labels as ks_heatmap_view. */
typedef struct {
    const ks_heatmap *a, *b, *diff;  /* diff: ks_heatmap_diff(a, b) */
    const char *name_a, *name_b;     /* panel titles ("base", "fine-tuned", file names) */
    const char *const *row_labels, *const *col_labels;
    double row0, row1, col0, col1;
    const char *title;
} ks_compare_maps;

/* items: PANEL (a = 0, 1, 2) per panel and what each panel's ks_heatmap_view_draw adds;
 * geom->plot and the window are those of panel A. */
ks_status ks_compare_maps_draw(cairo_t *cr, const ks_compare_maps *v, double width,
                               double height, ks_view_geom *geom, ks_error *err);

/* Two per-layer curves (same x) and their difference A − B in a chart underneath. */
typedef struct {
    int n;
    const double *x, *a, *b;   /* [n] */
    const char *name_a, *name_b, *ylabel, *title;
} ks_compare_curves;

/* items: PANEL a = 0 (the curves), a = 1 (the difference); geom->plot is the top frame. */
ks_status ks_compare_curves_draw(cairo_t *cr, const ks_compare_curves *v, double width,
                                 double height, ks_view_geom *geom, ks_error *err);

/* ================================================================ files */

/* Draw any view into path: .png (width × height pixels × scale; scale 0 means 1), .svg or
 * .pdf (points), by extension. draw is called once with a cairo_t in user units of width ×
 * height; its status is returned. KS_ERR_ARG for another extension, KS_ERR_IO when cairo
 * cannot write (nothing is left at path on failure for PNG). */
typedef ks_status (*ks_view_draw_fn)(cairo_t *cr, const void *view, double width, double height,
                                     ks_view_geom *geom, ks_error *err);
ks_status ks_view_save(const char *path, int width, int height, double scale, ks_view_draw_fn draw,
                       const void *view, ks_error *err);

/* ================================================================ loading (views_load.c) */

/* What a file is, by its root attribute `format` (or, for a directory, its results.h5). */
typedef enum {
    KS_VIEW_FILE_DUMP = 0,         /* koalascope-dump (may hold /attributions too) */
    KS_VIEW_FILE_ATTRIBUTIONS = 1, /* koalascope-attributions */
    KS_VIEW_FILE_PROBE = 2,        /* koalascope-probe */
    KS_VIEW_FILE_AUDIT = 3,        /* koalascope-audit (results.h5, or its directory) */
} ks_view_file_kind;

/* KS_ERR_FORMAT naming path when it is none of the four; *resolved (may be NULL) receives
 * the file to open (DIR/results.h5 for an audit directory), malloc'd. */
ks_status ks_view_file_kind_detect(const char *path, ks_view_file_kind *kind, char **resolved,
                                   ks_error *err);
const char *ks_view_file_kind_name(ks_view_file_kind k); /* "dump", "attributions", ... */

/* One prompt's tokens and what the strip colours them by. All arrays malloc'd; free with
 * ks_view_prompt_free. */
typedef struct {
    int64_t index;          /* the prompt */
    int64_t n;              /* tokens (input + generated) */
    int n_prompt_tokens;
    int32_t *ids;           /* [n] */
    char **pieces;          /* [n] */
    float *logprob;         /* [n] log p(token t | tokens < t) from /logits; NaN at t = 0,
                               where the row before t was not recorded, or no /logits */
    int topk;               /* 0 when the dump has no /logits */
    int32_t *topk_ids;      /* [n, topk] top next tokens after token t (hover); -1 padding */
    float *topk_logprobs;   /* [n, topk] */
    char *text;             /* the prompt's text */
} ks_view_prompt;

/* Range: KS_ERR_RANGE naming --prompt and the count. */
ks_status ks_view_prompt_load(const ks_dump *d, int64_t p, ks_view_prompt *out, ks_error *err);
void ks_view_prompt_free(ks_view_prompt *v); /* NULL-safe; fields zeroed */

/* One head of one prompt as a T × T map (NaN above the diagonal and in rows not recorded),
 * max-pooled. Reads blocks.<layer>.attn.hook_pattern's one head slot for prompt p only.
 * KS_ERR_NOT_FOUND when the dump did not record that hook, with the `record --hooks`
 * selection that would ('blocks.L.attn.hook_pattern'), or that head (`--heads`);
 * KS_ERR_RANGE for a layer/head/prompt out of the model's range, naming the flag. */
ks_status ks_view_attention_load(const ks_dump *d, int64_t p, int layer, int head,
                                 ks_heatmap **out, ks_error *err);

/* Every recorded (layer, head) pattern of prompt p, each max-pooled down to at most
 * thumb × thumb cells (thumb 0: 64) as it is read, one head at a time, so memory stays
 * O(layers · heads · thumb²) whatever T is. Fills a ks_attention_grid whose arrays belong to
 * grid; free with ks_view_attention_grid_free. KS_ERR_NOT_FOUND (with the --hooks to record)
 * when the dump has no attention pattern. */
ks_status ks_view_attention_grid_load(const ks_dump *d, int64_t p, int thumb,
                                      ks_attention_grid *grid, ks_error *err);
void ks_view_attention_grid_free(ks_attention_grid *grid);

/* Norms of every recorded residual hook (hook_embed / blocks.*.hook_resid_pre /
 * blocks.*.hook_resid_post; resid_post preferred) of prompt p, at position pos (-1: the last
 * recorded row). Arrays malloc'd into v; ks_view_residual_free. KS_ERR_NOT_FOUND naming
 * `--hooks 'blocks.*.hook_resid_post'` when none is recorded. */
ks_status ks_view_residual_load(const ks_dump *d, int64_t p, int64_t pos, ks_residual_norms *v,
                                ks_error *err);
void ks_view_residual_free(ks_residual_norms *v);

/* The logit lens of prompt p through model m (the model the dump was recorded with: its
 * final norm and output matrix; probes/ks_lens.h) at positions [first, first + count)
 * (count 0: all): one row per recorded blocks.L.hook_resid_post, ascending L. Reads only
 * those rows. ks_view_lens_free. KS_ERR_NOT_FOUND naming the --hooks to record; KS_ERR_ARG
 * when m's shape differs from the dump's config. */
ks_status ks_view_lens_load(const ks_dump *d, const ks_model *m, int64_t p, int64_t first,
                            int64_t count, ks_lens_table *v, ks_error *err);
void ks_view_lens_free(ks_lens_table *v);

/* An attribution result (/attributions/<name> of a dump or an attribution file; name NULL:
 * the first in the file). 1-D results over positions fill bars (labels = token strings);
 * 2-D results ([layer, position] or [layer, head]) fill map and its labels. The caller
 * frees with ks_view_attribution_free. */
typedef struct {
    char name[256], method[128], axes[256], objective[512];
    int ndim;
    int64_t shape[3];
    float *values;                /* [shape...] */
    char **tokens;                /* [n_tokens] (token_strings, or ids as text) */
    int64_t n_tokens;
    char **row_labels, **col_labels; /* 2-D: [shape[0]], [shape[1]] ("L3", "H2", tokens) */
    ks_token_bars bars;           /* 1-D: ready to draw (points into this struct) */
    ks_heatmap *map;              /* 2-D: diverging, KS_POOL_MAXABS */
    double completeness_error;    /* NaN when n/a */
} ks_view_attribution;

ks_status ks_view_attribution_load(const char *path, const char *name, ks_view_attribution *out,
                                   ks_error *err);
void ks_view_attribution_free(ks_view_attribution *v);

/* Probe results (`koalascope probe -o X.h5`): metric "accuracy", "auroc" or "r2" (NULL: r2 for
 * ridge, accuracy otherwise). ks_view_probe_free. */
ks_status ks_view_probe_load(const char *path, const char *metric, ks_probe_curves *out,
                             ks_error *err);
void ks_view_probe_free(ks_probe_curves *v);

/* Audit results (results.h5 or its directory): the headline metric's rows of one audit
 * (audit NULL: the first; metric NULL: the audit's headline, as in report.md) as a forest,
 * and the audit's items as a table (id, category, gold, prediction, ll of each option).
 * ks_view_audit_free. */
typedef struct {
    char audit[128], metric[128];
    ks_forest forest;            /* rows/labels owned here */
    ks_table items;              /* cells owned here */
} ks_view_audit;

ks_status ks_view_audit_load(const char *path, const char *audit, const char *metric,
                             ks_view_audit *out, ks_error *err);
void ks_view_audit_free(ks_view_audit *v);

#endif
