/* fuzz_views_load.c — libFuzzer target for the viewer's loaders (gui/views_load.c): the input
 * is a whole file (a dump, attribution, probe or audit results, or anything). Every loader
 * that the file's kind allows runs on it; each must fail with a message naming the file, or
 * give a struct that the matching view then draws without error onto a small surface. No
 * HDF5 object may stay open afterwards. HDF5 opens files by path only: the bytes go to a temp
 * file first (/dev/shm when writable). Leak checking is off for libhdf5's free lists, as in
 * fuzz_dump.c (which says why). libhdf5 is not instrumented: a crash inside it is upstream's. */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ks_views.h"

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:H5FL_blk_malloc\n"; }
const char *__asan_default_options(void);
/* libhdf5 sizes some metadata allocations from the file itself (32 GB from a flipped byte):
 * such a malloc gets NULL, which HDF5 turns into an error, instead of stopping the run */
const char *__asan_default_options(void) { return "detect_leaks=0:allocator_may_return_null=1"; }

static char path[512];
static void remove_temp(void) { unlink(path); }
static void check(bool ok) {
    if (!ok) abort();
}
/* a failure must say something, naming the file when it reached the file */
static void failed(ks_status s, const ks_error *e) { check(s != KS_OK && e->msg[0] != 0); }

static cairo_t *cr;
static void drew(ks_status s, const ks_error *e) {
    if (s) failed(s, e);
    check(cairo_status(cr) == CAIRO_STATUS_SUCCESS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/ks_fuzz_views_%d.h5", dir && *dir ? dir : "/tmp", (int)getpid());
        atexit(remove_temp);
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    cairo_surface_t *sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 160, 120);
    cr = cairo_create(sf);
    ks_view_geom g;
    ks_view_geom_init(&g);
    ks_error e = {0};
    ks_view_file_kind kind;
    char *file = NULL;
    ks_status s = ks_view_file_kind_detect(path, &kind, &file, &e);
    if (s) {
        failed(s, &e);
        check(strstr(e.msg, path) != NULL);
    } else if (kind == KS_VIEW_FILE_DUMP) {
        ks_dump *d = NULL;
        if ((s = ks_dump_open(file, &d, &e))) failed(s, &e);
        else {
            ks_view_prompt vp;
            if ((s = ks_view_prompt_load(d, 0, &vp, &e))) failed(s, &e);
            else {
                ks_token_strip ts = {.pieces = (const char *const *)vp.pieces, .values = vp.logprob, .n = vp.n,
                                     .vmin = NAN, .vmax = NAN, .value_label = "x", .highlight = -1};
                drew(ks_token_strip_draw(cr, &ts, 160, 120, &g, &e), &e);
                ks_view_prompt_free(&vp);
            }
            ks_attention_grid grid;
            if ((s = ks_view_attention_grid_load(d, 0, 8, &grid, &e))) failed(s, &e);
            else {
                drew(ks_attention_grid_draw(cr, &grid, 160, 120, &g, &e), &e);
                ks_view_attention_grid_free(&grid);
            }
            ks_heatmap *h = NULL;
            if ((s = ks_view_attention_load(d, 0, 0, 0, &h, &e))) failed(s, &e);
            else {
                ks_attention_head ah = {.map = h, .mark_row = -1, .mark_col = -1};
                drew(ks_attention_head_draw(cr, &ah, 160, 120, &g, &e), &e);
                ks_heatmap_free(h);
            }
            ks_residual_norms rn;
            if ((s = ks_view_residual_load(d, 0, -1, &rn, &e))) failed(s, &e);
            else {
                drew(ks_residual_norms_draw(cr, &rn, 160, 120, &g, &e), &e);
                ks_view_residual_free(&rn);
            }
            ks_dump_close(d);
        }
    }
    if (!s && (kind == KS_VIEW_FILE_DUMP || kind == KS_VIEW_FILE_ATTRIBUTIONS)) {
        ks_view_attribution va;
        ks_status s2 = ks_view_attribution_load(file, NULL, &va, &e);
        if (s2) failed(s2, &e);
        else {
            if (va.ndim == 1) drew(ks_token_bars_draw(cr, &va.bars, 160, 120, &g, &e), &e);
            ks_view_attribution_free(&va);
        }
    }
    if (!s && kind == KS_VIEW_FILE_PROBE) {
        ks_probe_curves pc;
        ks_status s2 = ks_view_probe_load(file, NULL, &pc, &e);
        if (s2) failed(s2, &e);
        else {
            drew(ks_probe_curves_draw(cr, &pc, 160, 120, &g, &e), &e);
            ks_view_probe_free(&pc);
        }
    }
    if (!s && kind == KS_VIEW_FILE_AUDIT) {
        ks_view_audit au;
        ks_status s2 = ks_view_audit_load(file, NULL, NULL, &au, &e);
        if (s2) failed(s2, &e);
        else {
            drew(ks_audit_scores_draw(cr, &au.forest, 160, 120, &g, &e), &e);
            drew(ks_table_draw(cr, &au.items, 160, 120, &g, &e), &e);
            ks_view_audit_free(&au);
        }
    }
    free(file);
    ks_view_geom_free(&g);
    cairo_destroy(cr);
    cairo_surface_destroy(sf);
    check(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);
    return 0;
}
