/* ks_view_pages.c — each page of the viewer: what it loads through the gui/ks_views.h
 * loaders (lazily: one prompt, one head, one window of lens positions), cached in the nav
 * until the document or the navigation changes, and which ks_views.h function draws it.
 * Nothing here draws data itself: a page without data draws a one-paragraph reason.
 *
 * Cost: every draw of a cached page is the view function's cost (O(pixels) for heatmaps,
 * from their pooled levels); a load happens once per (prompt, layer, head) and reads that
 * head only, so browsing a dump of any size keeps one prompt's data in memory.
 *
 * The attention grid reads every head of a prompt (336 MB of the file for 40 heads of 2,048
 * tokens, seconds of work): it is read by a worker (GTask) through a second ks_dump handle of
 * the same file (a handle is used by one thread at a time; libhdf5 serialises the calls), and
 * the page draws a placeholder until the worker hands the pooled thumbnails back and
 * nav->ready asks for a redraw. A job whose cache was dropped meanwhile (another prompt or
 * document, the window closed) is detached and its result freed when it comes back. */
#include "ks_view_pages.h"

#include <glib.h>
#include <math.h>
#include <string.h>

#include "ks_dump.h"
#include "ks_model.h"

static const ks_view_page_info pages[KS_N_PAGES] = {
    [KS_PAGE_TOKENS] = {"tokens", "Tokens"},
    [KS_PAGE_GRID] = {"attention-grid", "Attention grid"},
    [KS_PAGE_HEAD] = {"head", "Attention head"},
    [KS_PAGE_FROM_TO] = {"attention", "From / to token"},
    [KS_PAGE_RESIDUAL] = {"residual", "Residual norms"},
    [KS_PAGE_LENS] = {"lens", "Logit lens"},
    [KS_PAGE_ATTRIBUTION] = {"attribution", "Attribution"},
    [KS_PAGE_PROBE] = {"probe", "Probes"},
    [KS_PAGE_AUDIT] = {"audit", "Audit scores"},
    [KS_PAGE_ITEMS] = {"items", "Audit items"},
    [KS_PAGE_COMPARE] = {"compare", "Compare"},
};

const ks_view_page_info *ks_view_page_info_get(KsViewPage p) {
    return p < KS_N_PAGES ? &pages[p] : NULL;
}

int ks_view_page_from_id(const char *id) {
    for (int i = 0; id && i < KS_N_PAGES; i++)
        if (strcmp(pages[i].id, id) == 0) return i;
    return -1;
}

/* ---------------------------------------------------------------- caches */

/* One cached load: valid for the key it was made with; a failure is cached too, so a
 * missing hook is reported once per key instead of re-read at every frame. */
typedef struct {
    bool valid;
    int64_t key[4];
    ks_status st;
    ks_error err;
} slot;

/* A grid load in flight; nav is NULL once the cache that started it let it go. */
typedef struct {
    ks_view_nav *nav;
    char *path;
    int64_t prompt;
    ks_attention_grid grid;
    ks_status st;
    ks_error err;
} grid_job;

struct ks_view_cache {
    const ks_dump *dump; /* what the caches below were read from */
    grid_job *grid_job;  /* the grid being read by a worker, NULL when none */
    char *attr_key;      /* the attribution name s_attr was loaded for ("" the first) */
    slot s_prompt, s_grid, s_head, s_resid, s_lens, s_attr, s_probe, s_audit, s_cmp, s_model;
    ks_view_prompt prompt;
    ks_attention_grid grid;
    ks_heatmap *head;
    ks_residual_norms resid;
    ks_lens_table lens;
    ks_view_attribution attr;
    ks_probe_curves probe;
    ks_view_audit audit;
    ks_heatmap *cmp_b, *cmp_diff;
    ks_view_prompt cmp_prompt;
    ks_model *model; /* opened from the dump's model_path for the lens and top-k pieces */
};

static bool slot_hit(slot *s, int64_t a, int64_t b, int64_t c, int64_t d) {
    return s->valid && s->key[0] == a && s->key[1] == b && s->key[2] == c && s->key[3] == d;
}

static void slot_set(slot *s, int64_t a, int64_t b, int64_t c, int64_t d) {
    s->valid = true;
    s->key[0] = a;
    s->key[1] = b;
    s->key[2] = c;
    s->key[3] = d;
    s->st = KS_OK;
    ks_error_clear(&s->err);
}

static void cache_drop(ks_view_cache *c, bool keep_model) {
    if (c->grid_job) c->grid_job->nav = NULL; /* its result is freed when it comes back */
    if (c->s_prompt.valid) ks_view_prompt_free(&c->prompt);
    if (c->s_grid.valid && !c->s_grid.st) ks_view_attention_grid_free(&c->grid);
    ks_heatmap_free(c->head);
    if (c->s_resid.valid && !c->s_resid.st) ks_view_residual_free(&c->resid);
    if (c->s_lens.valid && !c->s_lens.st) ks_view_lens_free(&c->lens);
    if (c->s_attr.valid && !c->s_attr.st) ks_view_attribution_free(&c->attr);
    g_free(c->attr_key);
    if (c->s_probe.valid && !c->s_probe.st) ks_view_probe_free(&c->probe);
    if (c->s_audit.valid && !c->s_audit.st) ks_view_audit_free(&c->audit);
    ks_heatmap_free(c->cmp_b);
    ks_heatmap_free(c->cmp_diff);
    ks_view_prompt_free(&c->cmp_prompt);
    ks_model *m = c->model;
    slot sm = c->s_model;
    memset(c, 0, sizeof *c);
    if (keep_model) {
        c->model = m;
        c->s_model = sm;
    } else {
        ks_model_close(m);
    }
}

void ks_view_nav_init(ks_view_nav *nav, KsViewDocument *doc) {
    memset(nav, 0, sizeof *nav);
    nav->doc = doc;
    nav->token = -1;
    nav->zoom = 1;
    nav->search_hit = -1;
    nav->audit_row = -1;
    nav->item = -1;
    nav->cache = g_new0(ks_view_cache, 1);
}

void ks_view_nav_clear(ks_view_nav *nav) {
    if (nav->cache) cache_drop(nav->cache, false);
    g_clear_pointer(&nav->cache, g_free);
    g_clear_pointer(&nav->search, g_free);
    g_clear_pointer(&nav->attr_name, g_free);
}

void ks_view_nav_invalidate(ks_view_nav *nav) {
    cache_drop(nav->cache, false);
    nav->prompt = 0;
    nav->token = -1;
    nav->search_hit = -1;
    nav->zoom = 1;
    nav->row0 = nav->col0 = nav->scroll = 0;
    nav->audit_row = -1;
    nav->item = -1;
    g_clear_pointer(&nav->attr_name, g_free);
    ks_dump *d = ks_view_document_dump(nav->doc);
    if (d) {
        const ks_config *c = ks_dump_config(d);
        if (nav->layer >= c->n_layers) nav->layer = 0;
        if (nav->head >= c->n_heads) nav->head = 0;
    }
}

static ks_dump *dump_of(ks_view_nav *nav) {
    ks_dump *d = ks_view_document_dump(nav->doc);
    if (nav->cache->dump != d) {
        cache_drop(nav->cache, false);
        nav->cache->dump = d;
    }
    return d;
}

int64_t ks_view_nav_n_prompts(ks_view_nav *nav) {
    ks_dump *d = dump_of(nav);
    return d ? ks_dump_n_prompts(d) : 0;
}

int ks_view_nav_n_layers(ks_view_nav *nav) {
    ks_dump *d = dump_of(nav);
    return d ? ks_dump_config(d)->n_layers : 0;
}

int ks_view_nav_n_heads(ks_view_nav *nav) {
    ks_dump *d = dump_of(nav);
    return d ? ks_dump_config(d)->n_heads : 0;
}

/* The current prompt (NULL with err filled when it cannot be read). */
static const ks_view_prompt *prompt_of(ks_view_nav *nav, ks_error *err) {
    ks_dump *d = dump_of(nav);
    ks_view_cache *c = nav->cache;
    if (!d) {
        ks_error_set(err, KS_ERR_NOT_FOUND, "no dump is open");
        return NULL;
    }
    if (!slot_hit(&c->s_prompt, nav->prompt, 0, 0, 0)) {
        if (c->s_prompt.valid) ks_view_prompt_free(&c->prompt);
        slot_set(&c->s_prompt, nav->prompt, 0, 0, 0);
        c->s_prompt.st = ks_view_prompt_load(d, nav->prompt, &c->prompt, &c->s_prompt.err);
    }
    if (c->s_prompt.st) {
        *err = c->s_prompt.err;
        return NULL;
    }
    return &c->prompt;
}

int64_t ks_view_nav_n_tokens(ks_view_nav *nav) {
    ks_error e = {0};
    const ks_view_prompt *p = prompt_of(nav, &e);
    return p ? p->n : 0;
}

static int64_t current_token(ks_view_nav *nav, int64_t n) {
    if (n <= 0) return -1;
    if (nav->token < 0 || nav->token >= n) return n - 1;
    return nav->token;
}

/* The model for the lens and the pieces of top-k ids: the live document's, or the one the
 * dump names in model_path (opened once; a failure says why the lens is empty). */
static ks_model *model_of(ks_view_nav *nav, ks_error *err) {
    ks_view_cache *c = nav->cache;
    ks_model *live = ks_view_document_model(nav->doc);
    if (live) return live;
    ks_dump *d = dump_of(nav);
    if (!d) return ks_error_set(err, KS_ERR_NOT_FOUND, "no dump is open"), NULL;
    if (!c->s_model.valid) {
        slot_set(&c->s_model, 0, 0, 0, 0);
        const char *path = ks_dump_attr(d, "model_path");
        const char *tok = ks_dump_attr(d, "tokenizer_source");
        ks_model_options mo = {.tokenizer_path = tok && strcmp(tok, "model") ? tok : NULL};
        if (!path || !path[0])
            c->s_model.st = ks_error_set(&c->s_model.err, KS_ERR_NOT_FOUND,
                                         "the dump does not name its model (model_path)");
        else
            c->s_model.st = ks_model_open(path, &mo, &c->model, &c->s_model.err);
    }
    if (c->s_model.st) {
        *err = c->s_model.err;
        return NULL;
    }
    return c->model;
}

bool ks_view_page_available(ks_view_nav *nav, KsViewPage p) {
    KsViewSource s = ks_view_document_source(nav->doc);
    bool dump = ks_view_document_dump(nav->doc) != NULL;
    switch (p) {
    case KS_PAGE_TOKENS: /* also says what to open when nothing is */
        return s == KS_VIEW_SOURCE_NONE || dump || s == KS_VIEW_SOURCE_MODEL;
    case KS_PAGE_ATTRIBUTION: return ks_view_document_attributions_path(nav->doc) != NULL;
    case KS_PAGE_PROBE: return s == KS_VIEW_SOURCE_PROBE;
    case KS_PAGE_AUDIT:
    case KS_PAGE_ITEMS: return s == KS_VIEW_SOURCE_AUDIT;
    case KS_PAGE_COMPARE: return dump;
    default: return dump || s == KS_VIEW_SOURCE_MODEL;
    }
}

/* ---------------------------------------------------------------- drawing helpers */

/* A page with nothing to show: its reason, centred, wrapped at the width. This is a
 * message, not a view; cairo's toy text API is enough for it. */
static void draw_message(cairo_t *cr, double w, double h, const char *title, const char *detail) {
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, 0, 0, w, h);
    cairo_fill(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    cairo_set_font_size(cr, 16);
    cairo_set_source_rgb(cr, 0.25, 0.25, 0.25);
    cairo_text_extents_t te;
    cairo_text_extents(cr, title, &te);
    double y = h / 2 - 20;
    cairo_move_to(cr, (w - te.width) / 2, y);
    cairo_show_text(cr, title);
    if (detail && *detail) {
        cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
        cairo_set_font_size(cr, 12);
        cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
        /* wrap on spaces at 90% of the width */
        g_auto(GStrv) words = g_strsplit(detail, " ", -1);
        GString *line = g_string_new(NULL);
        y += 26;
        for (int i = 0; words[i]; i++) {
            g_autofree char *probe = line->len ? g_strconcat(line->str, " ", words[i], NULL)
                                               : g_strdup(words[i]);
            cairo_text_extents(cr, probe, &te);
            if (te.x_advance > w * 0.9 && line->len) {
                cairo_text_extents(cr, line->str, &te);
                cairo_move_to(cr, (w - te.x_advance) / 2, y);
                cairo_show_text(cr, line->str);
                y += 17;
                g_string_assign(line, words[i]);
            } else {
                g_string_assign(line, probe);
            }
        }
        if (line->len) {
            cairo_text_extents(cr, line->str, &te);
            cairo_move_to(cr, (w - te.x_advance) / 2, y);
            cairo_show_text(cr, line->str);
        }
        g_string_free(line, TRUE);
    }
    cairo_restore(cr);
}

/* Draw a load failure: "not recorded" kinds are a message (KS_OK), the rest an error. */
static ks_status draw_failure(cairo_t *cr, double w, double h, const char *what, const ks_error *e,
                              ks_error *err) {
    bool missing = e->code == KS_ERR_NOT_FOUND;
    draw_message(cr, w, h, what, e->msg[0] ? e->msg : ks_status_str(e->code));
    if (missing) return KS_OK;
    *err = *e;
    return e->code ? e->code : KS_ERR_INTERNAL;
}

/* The head/compare window from zoom and the top-left cell, clamped to the map. */
static void window_of(ks_view_nav *nav, int64_t n, double *r0, double *r1, double *c0,
                      double *c1) {
    if (nav->zoom < 1) nav->zoom = 1;
    double span = n / nav->zoom;
    if (span < 1) span = 1;
    nav->row0 = fmin(fmax(nav->row0, 0), n - span);
    nav->col0 = fmin(fmax(nav->col0, 0), n - span);
    *r0 = nav->row0;
    *r1 = nav->row0 + span;
    *c0 = nav->col0;
    *c1 = nav->col0 + span;
}

static const ks_heatmap *head_of(ks_view_nav *nav, ks_error *err) {
    ks_dump *d = dump_of(nav);
    ks_view_cache *c = nav->cache;
    if (!d) return ks_error_set(err, KS_ERR_NOT_FOUND, "no dump is open"), NULL;
    if (!slot_hit(&c->s_head, nav->prompt, nav->layer, nav->head, 0)) {
        g_clear_pointer(&c->head, ks_heatmap_free);
        slot_set(&c->s_head, nav->prompt, nav->layer, nav->head, 0);
        c->s_head.st = ks_view_attention_load(d, nav->prompt, nav->layer, nav->head, &c->head,
                                              &c->s_head.err);
    }
    if (c->s_head.st) {
        *err = c->s_head.err;
        return NULL;
    }
    return c->head;
}

/* ---------------------------------------------------------------- pages */

/* The current prompt and head for the head-like pages; false (with the reason drawn and its
 * status in *st) when either cannot be read. */
static bool prompt_and_head(ks_view_nav *nav, cairo_t *cr, double w, double h,
                            const ks_view_prompt **p, const ks_heatmap **map, ks_status *st,
                            ks_error *err) {
    ks_error e = {0};
    *map = NULL;
    *p = prompt_of(nav, &e);
    if (*p) *map = head_of(nav, &e);
    if (*map) return true;
    *st = draw_failure(cr, w, h, *p ? "Head not recorded" : "No tokens", &e, err);
    return false;
}

static ks_status draw_tokens(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                             ks_error *err) {
    ks_error e = {0};
    const ks_view_prompt *p = prompt_of(nav, &e);
    if (!p) return draw_failure(cr, w, h, "No tokens", &e, err);
    g_autofree char *title = g_strdup_printf("prompt %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT
                                             ": %" G_GINT64_FORMAT " tokens (%d input)",
                                             nav->prompt, ks_view_nav_n_prompts(nav), p->n,
                                             p->n_prompt_tokens);
    ks_token_strip s = {
        .pieces = (const char *const *)p->pieces,
        .values = p->logprob,
        .n = p->n,
        .cmap = KS_CMAP_SEQUENTIAL,
        .vmin = NAN,
        .vmax = NAN,
        .title = title,
        .value_label = "log p(token)",
        .highlight = nav->search_hit >= 0 ? nav->search_hit : nav->token,
        .scroll_y = nav->scroll,
    };
    return ks_token_strip_draw(cr, &s, w, h, g, err);
}

static void grid_job_thread(GTask *task, gpointer source, gpointer data, GCancellable *c) {
    (void)source;
    (void)c;
    grid_job *j = data;
    ks_dump *d = NULL;
    j->st = ks_dump_open(j->path, &d, &j->err);
    if (!j->st) j->st = ks_view_attention_grid_load(d, j->prompt, 0, &j->grid, &j->err);
    ks_dump_close(d);
    g_task_return_boolean(task, TRUE);
}

static void grid_job_free(grid_job *j) {
    if (!j->st) ks_view_attention_grid_free(&j->grid);
    g_free(j->path);
    g_free(j);
}

/* Main thread: the worker finished; adopt its grid unless the cache let the job go. */
static void grid_job_done(GObject *source, GAsyncResult *res, gpointer data) {
    (void)source;
    (void)res;
    grid_job *j = data;
    ks_view_nav *nav = j->nav;
    if (!nav) {
        grid_job_free(j);
        return;
    }
    ks_view_cache *c = nav->cache;
    c->grid_job = NULL;
    if (c->s_grid.valid && !c->s_grid.st) ks_view_attention_grid_free(&c->grid);
    slot_set(&c->s_grid, j->prompt, 0, 0, 0);
    c->s_grid.st = j->st;
    c->s_grid.err = j->err;
    c->grid = j->grid;
    j->st = KS_ERR_NOT_FOUND; /* the grid belongs to the cache now */
    grid_job_free(j);
    if (nav->ready) nav->ready(nav->ready_data);
}

/* The grid of the current prompt: read now (sync_loads), or started on a worker. False while
 * it is being read. */
static bool grid_of(ks_view_nav *nav, ks_dump *d) {
    ks_view_cache *c = nav->cache;
    if (slot_hit(&c->s_grid, nav->prompt, 0, 0, 0)) return true;
    if (c->grid_job && c->grid_job->prompt == nav->prompt && !nav->sync_loads) return false;
    if (c->grid_job) {
        c->grid_job->nav = NULL; /* another prompt: let the old job go */
        c->grid_job = NULL;
    }
    if (c->s_grid.valid && !c->s_grid.st) ks_view_attention_grid_free(&c->grid);
    memset(&c->grid, 0, sizeof c->grid);
    c->s_grid.valid = false;
    if (nav->sync_loads) {
        slot_set(&c->s_grid, nav->prompt, 0, 0, 0);
        c->s_grid.st = ks_view_attention_grid_load(d, nav->prompt, 0, &c->grid, &c->s_grid.err);
        return true;
    }
    grid_job *j = g_new0(grid_job, 1);
    j->nav = nav;
    j->path = g_strdup(ks_dump_path(d));
    j->prompt = nav->prompt;
    c->grid_job = j;
    g_autoptr(GTask) task = g_task_new(NULL, NULL, grid_job_done, j);
    g_task_set_task_data(task, j, NULL);
    g_task_run_in_thread(task, grid_job_thread);
    return false;
}

bool ks_view_page_pending(ks_view_nav *nav, KsViewPage p) {
    return p == KS_PAGE_GRID && nav->cache->grid_job != NULL;
}

static ks_status draw_grid(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                           ks_error *err) {
    ks_dump *d = dump_of(nav);
    ks_view_cache *c = nav->cache;
    if (!d) return draw_message(cr, w, h, "No dump", "open a dump or run a prompt"), KS_OK;
    if (!grid_of(nav, d)) {
        g_autofree char *what = g_strdup_printf(
            "every head of prompt %" G_GINT64_FORMAT " (%d layers × %d heads) is being read "
            "and pooled in the background; the window stays usable meanwhile", nav->prompt,
            ks_dump_config(d)->n_layers, ks_dump_config(d)->n_heads);
        draw_message(cr, w, h, "Reading the attention grid…", what);
        return KS_OK;
    }
    if (c->s_grid.st) return draw_failure(cr, w, h, "No attention patterns", &c->s_grid.err, err);
    ks_attention_grid v = c->grid;
    v.sel_layer = v.sel_head = -1;
    for (int i = 0; i < v.n_layers; i++)
        if (v.layer_ids[i] == nav->layer) v.sel_layer = i;
    for (int i = 0; i < v.n_heads; i++)
        if (v.head_ids[i] == nav->head) v.sel_head = i;
    return ks_attention_grid_draw(cr, &v, w, h, g, err);
}

static ks_status draw_head(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                           ks_error *err) {
    const ks_view_prompt *p;
    const ks_heatmap *map;
    ks_status st;
    if (!prompt_and_head(nav, cr, w, h, &p, &map, &st, err)) return st;
    int64_t t = current_token(nav, p->n);
    ks_attention_head v = {
        .map = map,
        .tokens = (const char *const *)p->pieces,
        .layer = nav->layer,
        .head = nav->head,
        .mark_row = nav->token >= 0 && !nav->to_token ? t : -1,
        .mark_col = nav->token >= 0 && nav->to_token ? t : -1,
    };
    window_of(nav, ks_heatmap_rows(map), &v.row0, &v.row1, &v.col0, &v.col1);
    return ks_attention_head_draw(cr, &v, w, h, g, err);
}

static ks_status draw_from_to(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                              ks_error *err) {
    const ks_view_prompt *p;
    const ks_heatmap *map;
    ks_status st;
    if (!prompt_and_head(nav, cr, w, h, &p, &map, &st, err)) return st;
    int64_t t = current_token(nav, p->n);
    int64_t first = (int64_t)fmax(0, nav->scroll);
    if (first >= p->n) first = p->n - 1;
    return ks_attention_token_draw(cr, map, (const char *const *)p->pieces, nav->layer, nav->head,
                                   nav->to_token ? KS_ATTN_TO : KS_ATTN_FROM, t, first, 0, w, h,
                                   g, err);
}

static ks_status draw_residual(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                               ks_error *err) {
    ks_dump *d = dump_of(nav);
    ks_view_cache *c = nav->cache;
    if (!d) return draw_message(cr, w, h, "No dump", "open a dump or run a prompt"), KS_OK;
    if (!slot_hit(&c->s_resid, nav->prompt, nav->token, 0, 0)) {
        if (c->s_resid.valid && !c->s_resid.st) ks_view_residual_free(&c->resid);
        memset(&c->resid, 0, sizeof c->resid);
        slot_set(&c->s_resid, nav->prompt, nav->token, 0, 0);
        c->s_resid.st = ks_view_residual_load(d, nav->prompt, nav->token, &c->resid,
                                              &c->s_resid.err);
    }
    if (c->s_resid.st) return draw_failure(cr, w, h, "No residual stream", &c->s_resid.err, err);
    return ks_residual_norms_draw(cr, &c->resid, w, h, g, err);
}

/* Lens positions shown at once: the lens runs the unembedding per cell, so it is computed
 * for a window around the selected token rather than for a whole long prompt. */
#define LENS_WINDOW 16

static ks_status draw_lens(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                           ks_error *err) {
    ks_error e = {0};
    const ks_view_prompt *p = prompt_of(nav, &e);
    if (!p) return draw_failure(cr, w, h, "No tokens", &e, err);
    ks_model *m = model_of(nav, &e);
    if (!m) {
        e.code = KS_ERR_NOT_FOUND; /* a message: the other pages work without the model */
        return draw_failure(cr, w, h, "The logit lens needs the model", &e, err);
    }
    ks_view_cache *c = nav->cache;
    int64_t t = current_token(nav, p->n);
    int64_t first = t - LENS_WINDOW / 2;
    if (first + LENS_WINDOW > p->n) first = p->n - LENS_WINDOW;
    if (first < 0) first = 0;
    int64_t count = p->n - first < LENS_WINDOW ? p->n - first : LENS_WINDOW;
    if (!slot_hit(&c->s_lens, nav->prompt, first, count, 0)) {
        if (c->s_lens.valid && !c->s_lens.st) ks_view_lens_free(&c->lens);
        memset(&c->lens, 0, sizeof c->lens);
        slot_set(&c->s_lens, nav->prompt, first, count, 0);
        c->s_lens.st = ks_view_lens_load(dump_of(nav), m, nav->prompt, first, count, &c->lens,
                                         &c->s_lens.err);
    }
    if (c->s_lens.st) return draw_failure(cr, w, h, "No logit lens", &c->s_lens.err, err);
    return ks_lens_table_draw(cr, &c->lens, w, h, g, err);
}

static ks_status draw_attribution(ks_view_nav *nav, cairo_t *cr, double w, double h,
                                  ks_view_geom *g, ks_error *err) {
    const char *path = ks_view_document_attributions_path(nav->doc);
    ks_view_cache *c = nav->cache;
    if (!path)
        return draw_message(cr, w, h, "No attributions",
                            "this file holds no /attributions: add one with koalascope attribute "
                            "MODEL --prompt TEXT --target PIECE -o DUMP.h5"), KS_OK;
    const char *name = nav->attr_name ? nav->attr_name : "";
    if (!c->s_attr.valid || g_strcmp0(c->attr_key, name)) {
        if (c->s_attr.valid && !c->s_attr.st) ks_view_attribution_free(&c->attr);
        memset(&c->attr, 0, sizeof c->attr);
        g_free(c->attr_key);
        c->attr_key = g_strdup(name);
        slot_set(&c->s_attr, 0, 0, 0, 0);
        c->s_attr.st = ks_view_attribution_load(path, nav->attr_name, &c->attr, &c->s_attr.err);
    }
    if (c->s_attr.st) return draw_failure(cr, w, h, "No attributions", &c->s_attr.err, err);
    if (c->attr.ndim == 1) return ks_token_bars_draw(cr, &c->attr.bars, w, h, g, err);
    ks_heatmap_view v = {
        .map = c->attr.map,
        .row_labels = (const char *const *)c->attr.row_labels,
        .col_labels = (const char *const *)c->attr.col_labels,
        .cmap = KS_CMAP_DIVERGING,
        .vmin = NAN,
        .vmax = NAN,
        .title = c->attr.name,
        .value_label = c->attr.method,
        .mark_row = -1,
        .mark_col = -1,
    };
    return ks_heatmap_view_draw(cr, &v, w, h, g, err);
}

static ks_status draw_probe(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                            ks_error *err) {
    const char *path = ks_view_document_probe_path(nav->doc);
    ks_view_cache *c = nav->cache;
    if (!path)
        return draw_message(cr, w, h, "No probe results",
                            "open the results of koalascope probe DUMP --labels FILE -o X.h5"),
               KS_OK;
    if (!slot_hit(&c->s_probe, 0, 0, 0, 0)) {
        slot_set(&c->s_probe, 0, 0, 0, 0);
        c->s_probe.st = ks_view_probe_load(path, NULL, &c->probe, &c->s_probe.err);
    }
    if (c->s_probe.st) return draw_failure(cr, w, h, "No probe results", &c->s_probe.err, err);
    return ks_probe_curves_draw(cr, &c->probe, w, h, g, err);
}

static const ks_view_audit *audit_of(ks_view_nav *nav, ks_error *err) {
    const char *path = ks_view_document_audit_path(nav->doc);
    ks_view_cache *c = nav->cache;
    if (!path) {
        ks_error_set(err, KS_ERR_NOT_FOUND, "open the directory of koalascope audit SPEC -o DIR");
        return NULL;
    }
    if (!slot_hit(&c->s_audit, 0, 0, 0, 0)) {
        slot_set(&c->s_audit, 0, 0, 0, 0);
        c->s_audit.st = ks_view_audit_load(path, NULL, NULL, &c->audit, &c->s_audit.err);
    }
    if (c->s_audit.st) {
        *err = c->s_audit.err;
        return NULL;
    }
    return &c->audit;
}

static ks_status draw_audit(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                            ks_error *err) {
    ks_error e = {0};
    const ks_view_audit *a = audit_of(nav, &e);
    if (!a) return draw_failure(cr, w, h, "No audit results", &e, err);
    return ks_audit_scores_draw(cr, &a->forest, w, h, g, err);
}

/* The column of the items table named name, -1 when none. */
static int table_col(const ks_table *t, const char *name) {
    for (int i = 0; i < t->n_cols; i++)
        if (t->headers[i] && g_ascii_strcasecmp(t->headers[i], name) == 0) return i;
    return -1;
}

/* Rows of the items table in the category of the clicked audit row (all: -1). *rows is
 * g_malloc'd (the row indices), the count returned. */
static int64_t items_rows(ks_view_nav *nav, const ks_view_audit *a, int64_t **rows) {
    const ks_table *t = &a->items;
    int cat = table_col(t, "category");
    const char *want = NULL;
    if (nav->audit_row >= 0 && nav->audit_row < a->forest.n_rows && cat >= 0)
        want = a->forest.rows[nav->audit_row].label;
    *rows = g_new(int64_t, t->n_rows > 0 ? t->n_rows : 1);
    int64_t n = 0;
    for (int64_t r = 0; r < t->n_rows; r++) {
        const char *v = t->cells[r * t->n_cols + cat];
        /* a forest label may carry more than the category (e.g. "race-color (n=12)") */
        if (!want || (v && g_str_has_prefix(want, v))) (*rows)[n++] = r;
    }
    return n;
}

static ks_status draw_items(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                            ks_error *err) {
    ks_error e = {0};
    const ks_view_audit *a = audit_of(nav, &e);
    if (!a) return draw_failure(cr, w, h, "No audit results", &e, err);
    g_autofree int64_t *rows = NULL;
    int64_t n = items_rows(nav, a, &rows);
    const ks_table *src = &a->items;
    g_autofree const char **cells = g_new0(const char *, (n > 0 ? n : 1) * src->n_cols);
    g_autofree float *shade = src->shade ? g_new(float, n > 0 ? n : 1) : NULL;
    for (int64_t i = 0; i < n; i++) {
        memcpy(cells + i * src->n_cols, src->cells + rows[i] * src->n_cols,
               sizeof *cells * (size_t)src->n_cols);
        if (shade) shade[i] = src->shade[rows[i]];
    }
    g_autofree char *title = g_strdup_printf(
        "%s items%s%s (%" G_GINT64_FORMAT ")", a->audit,
        nav->audit_row >= 0 && nav->audit_row < a->forest.n_rows ? ": " : "",
        nav->audit_row >= 0 && nav->audit_row < a->forest.n_rows
            ? a->forest.rows[nav->audit_row].label : "", n);
    ks_table t = *src;
    t.cells = cells;
    t.n_rows = n;
    t.shade = shade;
    t.first = (int64_t)fmax(0, fmin(nav->scroll, n > 0 ? n - 1 : 0));
    t.selected = nav->item;
    t.title = title;
    return ks_table_draw(cr, &t, w, h, g, err);
}

static ks_status draw_compare(ks_view_nav *nav, cairo_t *cr, double w, double h, ks_view_geom *g,
                              ks_error *err) {
    ks_dump *other = ks_view_document_other(nav->doc);
    if (!other)
        return draw_message(cr, w, h, "Nothing to compare yet",
                            "choose a second dump (Compare with… in the menu, Ctrl+Shift+O): the "
                            "current head of both dumps and their difference appear here"), KS_OK;
    const ks_view_prompt *p;
    const ks_heatmap *a;
    ks_status st;
    if (!prompt_and_head(nav, cr, w, h, &p, &a, &st, err)) return st;
    ks_view_cache *c = nav->cache;
    if (!slot_hit(&c->s_cmp, nav->prompt, nav->layer, nav->head, (int64_t)(intptr_t)other)) {
        g_clear_pointer(&c->cmp_b, ks_heatmap_free);
        g_clear_pointer(&c->cmp_diff, ks_heatmap_free);
        slot_set(&c->s_cmp, nav->prompt, nav->layer, nav->head, (int64_t)(intptr_t)other);
        c->s_cmp.st = ks_view_attention_load(other, nav->prompt, nav->layer, nav->head,
                                             &c->cmp_b, &c->s_cmp.err);
        if (!c->s_cmp.st && (ks_heatmap_rows(c->cmp_b) != ks_heatmap_rows(a) ||
                             ks_heatmap_cols(c->cmp_b) != ks_heatmap_cols(a)))
            c->s_cmp.st = ks_error_set(&c->s_cmp.err, KS_ERR_NOT_FOUND,
                                       "prompt %" G_GINT64_FORMAT " has %" G_GINT64_FORMAT
                                       " tokens here and %" G_GINT64_FORMAT " in %s: the "
                                       "maps cannot be compared cell by cell", nav->prompt,
                                       ks_heatmap_rows(a), ks_heatmap_rows(c->cmp_b),
                                       ks_dump_path(other));
        if (!c->s_cmp.st) c->s_cmp.st = ks_heatmap_diff(a, c->cmp_b, &c->cmp_diff, &c->s_cmp.err);
    }
    if (c->s_cmp.st) return draw_failure(cr, w, h, "Cannot compare", &c->s_cmp.err, err);
    g_autofree char *na = g_path_get_basename(ks_dump_path(dump_of(nav)));
    g_autofree char *nb = g_path_get_basename(ks_dump_path(other));
    g_autofree char *title = g_strdup_printf("layer %d head %d, prompt %" G_GINT64_FORMAT,
                                             nav->layer, nav->head, nav->prompt);
    ks_compare_maps v = {
        .a = a,
        .b = c->cmp_b,
        .diff = c->cmp_diff,
        .name_a = na,
        .name_b = nb,
        .row_labels = (const char *const *)p->pieces,
        .col_labels = (const char *const *)p->pieces,
        .title = title,
    };
    window_of(nav, ks_heatmap_rows(a), &v.row0, &v.row1, &v.col0, &v.col1);
    return ks_compare_maps_draw(cr, &v, w, h, g, err);
}

ks_status ks_view_page_draw(KsViewPage p, ks_view_nav *nav, cairo_t *cr, double w, double h,
                            ks_view_geom *geom, ks_error *err) {
    ks_error local = {0};
    if (!err) err = &local;
    /* a white page under every view: exports and screenshots look like the window */
    cairo_save(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_restore(cr);
    geom->n_items = 0;
    if (ks_view_document_source(nav->doc) == KS_VIEW_SOURCE_NONE) {
        draw_message(cr, w, h, "Nothing open",
                     "open a dump, a results directory or a model (Ctrl+O), or run koalascope "
                     "view FILE");
        return KS_OK;
    }
    if (ks_view_document_source(nav->doc) == KS_VIEW_SOURCE_MODEL && !ks_view_document_dump(nav->doc)
        && p != KS_PAGE_COMPARE) {
        draw_message(cr, w, h, "Run a prompt",
                     "type a prompt above, choose a chat template, and press Run (Ctrl+Return): "
                     "every view shows the run");
        return KS_OK;
    }
    typedef ks_status (*draw_fn)(ks_view_nav *, cairo_t *, double, double, ks_view_geom *,
                                 ks_error *);
    static const draw_fn fns[KS_N_PAGES] = {
        [KS_PAGE_TOKENS] = draw_tokens,     [KS_PAGE_GRID] = draw_grid,
        [KS_PAGE_HEAD] = draw_head,         [KS_PAGE_FROM_TO] = draw_from_to,
        [KS_PAGE_RESIDUAL] = draw_residual, [KS_PAGE_LENS] = draw_lens,
        [KS_PAGE_ATTRIBUTION] = draw_attribution, [KS_PAGE_PROBE] = draw_probe,
        [KS_PAGE_AUDIT] = draw_audit,       [KS_PAGE_ITEMS] = draw_items,
        [KS_PAGE_COMPARE] = draw_compare,
    };
    if (p >= KS_N_PAGES) return ks_error_set(err, KS_ERR_ARG, "no page %d", (int)p);
    cairo_save(cr);
    ks_status st = fns[p](nav, cr, w, h, geom, err);
    cairo_restore(cr);
    if (st && st != KS_ERR_NOT_FOUND) {
        /* draw_failure drew load errors already; a view's own error is shown here */
        if (st == KS_ERR_UNSUPPORTED)
            draw_message(cr, w, h, "This view is not drawn yet", err->msg);
    }
    return st;
}

/* ---------------------------------------------------------------- hover and clicks */

static char *piece_text(const char *s) {
    /* pieces are shown quoted, with the whitespace a label would hide spelled out */
    GString *o = g_string_new("“");
    for (const char *c = s; c && *c; c++) {
        if (*c == '\n') g_string_append(o, "\\n");
        else if (*c == '\t') g_string_append(o, "\\t");
        else g_string_append_c(o, *c);
    }
    g_string_append(o, "”");
    return g_string_free(o, FALSE);
}

static char *token_hover(ks_view_nav *nav, const ks_view_prompt *p, int64_t t) {
    if (t < 0 || t >= p->n) return NULL;
    g_autofree char *piece = piece_text(p->pieces[t]);
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "token %" G_GINT64_FORMAT ": id %d %s", t, p->ids[t], piece);
    if (p->logprob && isfinite(p->logprob[t]))
        g_string_append_printf(s, "\nlog p = %.3f (p = %.3f)", p->logprob[t], exp(p->logprob[t]));
    if (p->topk > 0) {
        ks_error e = {0};
        ks_model *m = model_of(nav, &e);
        const ks_tokenizer *tok = m ? ks_model_tokenizer(m) : NULL;
        g_string_append(s, "\nnext:");
        for (int k = 0; k < p->topk && k < 5; k++) {
            int32_t id = p->topk_ids[t * p->topk + k];
            if (id < 0) break;
            float lp = p->topk_logprobs[t * p->topk + k];
            const char *pc = tok && id < ks_tokenizer_vocab_size(tok) ? ks_tokenizer_piece(tok, id) : NULL;
            g_autofree char *q = pc ? piece_text(pc) : g_strdup_printf("#%d", id);
            g_string_append_printf(s, "  %s %.2f", q, exp(lp));
        }
    }
    return g_string_free(s, FALSE);
}

char *ks_view_page_hover(KsViewPage p, ks_view_nav *nav, const ks_view_geom *g, double x,
                         double y) {
    ks_error e = {0};
    const ks_view_prompt *pr = ks_view_document_dump(nav->doc) ? prompt_of(nav, &e) : NULL;
    int i;
    int64_t r, c;
    switch (p) {
    case KS_PAGE_TOKENS:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_TOKEN)) >= 0 && pr)
            return token_hover(nav, pr, g->items[i].a);
        return NULL;
    case KS_PAGE_GRID:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_PANEL)) >= 0 && nav->cache->s_grid.valid &&
            !nav->cache->s_grid.st) {
            const ks_attention_grid *gr = &nav->cache->grid;
            int64_t a = g->items[i].a, b = g->items[i].b;
            if (a < gr->n_layers && b < gr->n_heads)
                return g_strdup_printf("layer %d head %d (click to zoom)", gr->layer_ids[a],
                                       gr->head_ids[b]);
        }
        return NULL;
    case KS_PAGE_HEAD:
    case KS_PAGE_COMPARE:
        if (pr && nav->cache->head && ks_view_geom_cell(g, x, y, &r, &c) && r < pr->n && c < pr->n) {
            g_autofree char *q = piece_text(pr->pieces[r]);
            g_autofree char *k = piece_text(pr->pieces[c]);
            float v = ks_heatmap_at(nav->cache->head, r, c);
            GString *s = g_string_new(NULL);
            g_string_append_printf(s, "query %" G_GINT64_FORMAT " %s → key %" G_GINT64_FORMAT
                                   " %s: ", r, q, c, k);
            if (isnan(v)) g_string_append(s, "masked (a key after the query)");
            else g_string_append_printf(s, "%.4f", v);
            if (p == KS_PAGE_COMPARE && nav->cache->cmp_b)
                g_string_append_printf(s, "; other dump %.4f", ks_heatmap_at(nav->cache->cmp_b, r, c));
            return g_string_free(s, FALSE);
        }
        return NULL;
    case KS_PAGE_FROM_TO:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_BAR)) >= 0 && pr && nav->cache->head) {
            int64_t j = g->items[i].a, t = current_token(nav, pr->n);
            if (j >= pr->n) return NULL;
            g_autofree char *q = piece_text(pr->pieces[j]);
            float v = nav->to_token ? ks_heatmap_at(nav->cache->head, j, t)
                                    : ks_heatmap_at(nav->cache->head, t, j);
            return g_strdup_printf("token %" G_GINT64_FORMAT " %s: %s %.4f", j, q,
                                   nav->to_token ? "looks at the token with" : "gets",
                                   (double)v);
        }
        return NULL;
    case KS_PAGE_LENS:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_CELL)) >= 0 && nav->cache->s_lens.valid &&
            !nav->cache->s_lens.st) {
            const ks_lens_table *l = &nav->cache->lens;
            int64_t a = g->items[i].a, b = g->items[i].b;
            if (a < l->n_layers && b < l->n_pos) {
                int64_t k = a * l->n_pos + b;
                g_autofree char *q = piece_text(l->top_text[k]);
                return g_strdup_printf("layer %s, position %s: top %s p = %.3f", l->layer_labels[a],
                                       l->pos_labels[b], q, (double)l->top_prob[k]);
            }
        }
        return NULL;
    case KS_PAGE_ITEMS:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_CELL)) >= 0 && nav->cache->s_audit.valid &&
            !nav->cache->s_audit.st) {
            const ks_view_audit *a = &nav->cache->audit;
            g_autofree int64_t *rows = NULL;
            int64_t n = items_rows(nav, a, &rows), row = g->items[i].a;
            if (row < 0 || row >= n) return NULL;
            GString *s = g_string_new(NULL);
            for (int cc = 0; cc < a->items.n_cols; cc++) {
                const char *v = a->items.cells[rows[row] * a->items.n_cols + cc];
                g_string_append_printf(s, "%s%s: %s", cc ? "\n" : "", a->items.headers[cc],
                                       v ? v : "");
            }
            return g_string_free(s, FALSE);
        }
        return NULL;
    default:
        return NULL;
    }
}

ks_view_click ks_view_page_click(KsViewPage p, ks_view_nav *nav, const ks_view_geom *g,
                                 double x, double y, KsViewPage *goto_page) {
    int i;
    int64_t r, c;
    switch (p) {
    case KS_PAGE_TOKENS:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_TOKEN)) >= 0) {
            nav->token = g->items[i].a;
            nav->search_hit = -1;
            return KS_CLICK_REDRAW;
        }
        return KS_CLICK_NONE;
    case KS_PAGE_GRID:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_PANEL)) >= 0 && nav->cache->s_grid.valid &&
            !nav->cache->s_grid.st) {
            const ks_attention_grid *gr = &nav->cache->grid;
            int64_t a = g->items[i].a, b = g->items[i].b;
            if (a >= gr->n_layers || b >= gr->n_heads) return KS_CLICK_NONE;
            nav->layer = gr->layer_ids[a];
            nav->head = gr->head_ids[b];
            nav->zoom = 1;
            nav->row0 = nav->col0 = 0;
            *goto_page = KS_PAGE_HEAD;
            return KS_CLICK_GOTO;
        }
        return KS_CLICK_NONE;
    case KS_PAGE_HEAD:
        /* a query row: attention from that token */
        if (ks_view_geom_cell(g, x, y, &r, &c)) {
            nav->token = r;
            nav->to_token = false;
            return KS_CLICK_REDRAW;
        }
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_COL_LABEL)) >= 0) {
            nav->token = g->items[i].a;
            nav->to_token = true;
            return KS_CLICK_REDRAW;
        }
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_ROW_LABEL)) >= 0) {
            nav->token = g->items[i].a;
            nav->to_token = false;
            return KS_CLICK_REDRAW;
        }
        return KS_CLICK_NONE;
    case KS_PAGE_FROM_TO:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_BAR)) >= 0 ||
            (i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_ROW_LABEL)) >= 0) {
            nav->token = g->items[i].a;
            return KS_CLICK_REDRAW;
        }
        return KS_CLICK_NONE;
    case KS_PAGE_LENS:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_CELL)) >= 0 && nav->cache->s_lens.valid) {
            /* the column's position: centre the lens window on it */
            ks_error e = {0};
            const ks_view_prompt *pr = prompt_of(nav, &e);
            int64_t t = pr ? current_token(nav, pr->n) : 0;
            int64_t first = t - LENS_WINDOW / 2;
            if (pr && first + LENS_WINDOW > pr->n) first = pr->n - LENS_WINDOW;
            if (first < 0) first = 0;
            nav->token = first + g->items[i].b;
            return KS_CLICK_REDRAW;
        }
        return KS_CLICK_NONE;
    case KS_PAGE_AUDIT:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_ROW_LABEL)) >= 0) {
            nav->audit_row = g->items[i].a;
            nav->item = -1;
            nav->scroll = 0;
            *goto_page = KS_PAGE_ITEMS;
            return KS_CLICK_GOTO;
        }
        return KS_CLICK_NONE;
    case KS_PAGE_ITEMS:
        if ((i = ks_view_geom_hit(g, x, y, KS_VIEW_ITEM_CELL)) >= 0) {
            nav->item = g->items[i].a;
            return KS_CLICK_ITEM;
        }
        return KS_CLICK_NONE;
    default:
        return KS_CLICK_NONE;
    }
}

ks_view_click ks_view_page_key(KsViewPage p, ks_view_nav *nav, int move, bool activate) {
    if (p != KS_PAGE_ITEMS) return KS_CLICK_NONE;
    ks_error e = {0};
    const ks_view_audit *a = audit_of(nav, &e);
    if (!a) return KS_CLICK_NONE;
    g_autofree int64_t *rows = NULL;
    int64_t n = items_rows(nav, a, &rows);
    if (n == 0) return KS_CLICK_NONE;
    if (activate) return nav->item >= 0 && nav->item < n ? KS_CLICK_ITEM : KS_CLICK_NONE;
    if (move == 0) return KS_CLICK_NONE;
    int64_t to = nav->item < 0 ? (move > 0 ? 0 : n - 1) : nav->item + move;
    to = to < 0 ? 0 : to >= n ? n - 1 : to;
    if (to == nav->item) return KS_CLICK_NONE;
    nav->item = to;
    /* keep the selection in the visible rows: scroll so it is not above the first */
    if (nav->scroll > (double)to) nav->scroll = (double)to;
    return KS_CLICK_REDRAW;
}

bool ks_view_nav_audit_item(ks_view_nav *nav, char **audit, char **item_id, int64_t *index) {
    ks_error e = {0};
    const ks_view_audit *a = audit_of(nav, &e);
    if (!a || nav->item < 0) return false;
    g_autofree int64_t *rows = NULL;
    int64_t n = items_rows(nav, a, &rows);
    if (nav->item >= n) return false;
    int col = table_col(&a->items, "id");
    const char *id = col >= 0 ? a->items.cells[rows[nav->item] * a->items.n_cols + col] : NULL;
    if (!id) return false;
    *audit = g_strdup(a->audit);
    *item_id = g_strdup(id);
    *index = rows[nav->item];
    return true;
}

bool ks_view_nav_zoom(ks_view_nav *nav, double factor, double fx, double fy) {
    double old = nav->zoom;
    double z = fmin(fmax(old * factor, 1), 4096);
    if (z == old) return false;
    const ks_heatmap *m = nav->cache->head;
    double n = m ? (double)ks_heatmap_rows(m) : 0;
    /* keep the cell under (fx, fy) where it is */
    double span_old = n / old, span_new = n / z;
    nav->row0 += fy * (span_old - span_new);
    nav->col0 += fx * (span_old - span_new);
    nav->zoom = z;
    return true;
}

bool ks_view_nav_pan(ks_view_nav *nav, double drows, double dcols) {
    nav->row0 += drows;
    nav->col0 += dcols;
    return drows != 0 || dcols != 0;
}

bool ks_view_nav_search(ks_view_nav *nav, const char *text) {
    g_free(nav->search);
    nav->search = text && *text ? g_strdup(text) : NULL;
    if (!nav->search) {
        nav->search_hit = -1;
        return false;
    }
    ks_error e = {0};
    const ks_view_prompt *p = prompt_of(nav, &e);
    if (!p || p->n == 0) return false;
    g_autofree char *needle = g_utf8_casefold(text, -1);
    for (int64_t k = 1; k <= p->n; k++) {
        int64_t t = (nav->search_hit + k) % p->n;
        if (t < 0) t += p->n;
        g_autofree char *hay = g_utf8_casefold(p->pieces[t] ? p->pieces[t] : "", -1);
        if (strstr(hay, needle)) {
            nav->search_hit = t;
            nav->token = t;
            return true;
        }
    }
    nav->search_hit = -1;
    return false;
}
