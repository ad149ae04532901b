/* ks_view_pages.h — the viewer's pages (token strip, attention grid, zoomed head, …) as
 * plain C: for each page, what to load from the open document for the current navigation
 * state (cached until either changes) and which gui/ks_views.h function draws it. No GTK
 * here, so the same calls draw the window, the exports and the self-test screenshots; the
 * widgets (ks_view_canvas.c) only forward sizes, pointer positions and clicks. */
#ifndef KS_VIEW_PAGES_H
#define KS_VIEW_PAGES_H

#include <cairo.h>
#include <stdbool.h>
#include <stdint.h>

#include "ks_view_document.h"
#include "ks_views.h"

typedef enum {
    KS_PAGE_TOKENS = 0,   /* token strip coloured by log-prob; hover: id, piece, top-k */
    KS_PAGE_GRID,         /* layers × heads attention grid; click: zoom that head */
    KS_PAGE_HEAD,         /* one head zoomed, token labels, hover values, scroll/zoom */
    KS_PAGE_FROM_TO,      /* attention from / to the selected token, as bars */
    KS_PAGE_RESIDUAL,     /* per-layer residual norms */
    KS_PAGE_LENS,         /* logit lens table (needs the model) */
    KS_PAGE_ATTRIBUTION,  /* /attributions bars or map */
    KS_PAGE_PROBE,        /* probe curves */
    KS_PAGE_AUDIT,        /* audit scores with CIs; click a row: its items */
    KS_PAGE_ITEMS,        /* audit items; click one: its internals (the audit's drill-down dump) */
    KS_PAGE_COMPARE,      /* the head of this dump vs another dump's, and the difference */
    KS_N_PAGES
} KsViewPage;

typedef struct {
    const char *id;    /* "tokens", "attention-grid", … (key file, --self-test names) */
    const char *title; /* sidebar text */
} ks_view_page_info;

const ks_view_page_info *ks_view_page_info_get(KsViewPage p);
/* -1 when no page has that id. */
int ks_view_page_from_id(const char *id);

/* Navigation state and the caches of what the pages loaded. Owned by the window; main
 * thread only. Zero it with ks_view_nav_init; ks_view_nav_clear frees the caches. */
typedef struct ks_view_cache ks_view_cache;

typedef struct {
    KsViewDocument *doc;      /* borrowed */
    int64_t prompt;
    int layer, head;
    int64_t token;            /* the selected token (from/to, highlight); -1: the last */
    bool to_token;            /* attention to the token (a column) instead of from (a row) */
    double zoom;              /* head/compare views: 1 = whole map, 2 = half of it, … */
    double row0, col0;        /* head/compare views: top-left cell of the window */
    double scroll;            /* token strip / lists: first row or pixels scrolled */
    char *search;             /* token search text (NULL: none) */
    int64_t search_hit;       /* the token the search found, -1 none */
    int64_t audit_row;        /* the audit category row clicked, -1 all items */
    int64_t item;             /* the audit item selected (a row of the items page), -1 none */
    char *attr_name;          /* the /attributions entry shown (NULL: the first) */
    bool sync_loads;          /* load slow pages on the calling thread (exports) */
    /* called (main thread) when a page's worker load finished: redraw */
    void (*ready)(void *data);
    void *ready_data;
    ks_view_cache *cache;
} ks_view_nav;

void ks_view_nav_init(ks_view_nav *nav, KsViewDocument *doc);
void ks_view_nav_clear(ks_view_nav *nav);
/* Drop every cache (the document changed). */
void ks_view_nav_invalidate(ks_view_nav *nav);

/* The shape of what is open, for the navigation controls' ranges (0 when unknown). */
int64_t ks_view_nav_n_prompts(ks_view_nav *nav);
int ks_view_nav_n_layers(ks_view_nav *nav);
int ks_view_nav_n_heads(ks_view_nav *nav);
/* Tokens of the current prompt (loads it), 0 when none. */
int64_t ks_view_nav_n_tokens(ks_view_nav *nav);
/* Which pages have something to show for the open document. */
bool ks_view_page_available(ks_view_nav *nav, KsViewPage p);
/* Whether page p is waiting for a worker (the attention grid of the current prompt is read
 * off the main thread: the page draws a placeholder until nav->ready is called). */
bool ks_view_page_pending(ks_view_nav *nav, KsViewPage p);

/* The audit item selected on the items page (nav->item): its audit, id and index in the
 * audit's items (g_free the strings). False when none is selected. */
bool ks_view_nav_audit_item(ks_view_nav *nav, char **audit, char **item_id, int64_t *index);

/* Draw page p for nav into (0, 0, w, h) of cr. A page with nothing to show (hook not
 * recorded, no second dump, …) draws its reason as text and returns KS_OK; a load or draw
 * error returns its status with err filled (and also draws it). geom receives what the view
 * reports. */
ks_status ks_view_page_draw(KsViewPage p, ks_view_nav *nav, cairo_t *cr, double w, double h,
                            ks_view_geom *geom, ks_error *err);

/* The tooltip text for a point of the last draw (g_free'd by the caller), NULL for none. */
char *ks_view_page_hover(KsViewPage p, ks_view_nav *nav, const ks_view_geom *geom, double x,
                         double y);

/* What a click did. */
typedef enum {
    KS_CLICK_NONE = 0,   /* nothing */
    KS_CLICK_REDRAW,     /* nav changed: redraw */
    KS_CLICK_GOTO,       /* nav changed and *goto_page names the page to show */
    KS_CLICK_ITEM,       /* an audit item was activated (nav->item): open its internals */
} ks_view_click;

ks_view_click ks_view_page_click(KsViewPage p, ks_view_nav *nav, const ks_view_geom *geom,
                                 double x, double y, KsViewPage *goto_page);
/* Keyboard on page p: move the selected audit item by move rows (Up/Down), or activate it
 * (Enter). */
ks_view_click ks_view_page_key(KsViewPage p, ks_view_nav *nav, int move, bool activate);

/* Zoom the head/compare window by factor about the point (fx, fy) (fractions of the map,
 * 0..1), or pan it by (dx, dy) cells. Returns whether anything changed. */
bool ks_view_nav_zoom(ks_view_nav *nav, double factor, double fx, double fy);
bool ks_view_nav_pan(ks_view_nav *nav, double drows, double dcols);

/* Find text in the current prompt's tokens after the current hit (wrapping); sets
 * search_hit and token. Returns whether one was found. */
bool ks_view_nav_search(ks_view_nav *nav, const char *text);

#endif
