/* ks_view_document.h — what the viewer has open: a dump, a probe results file, an audit
 * results directory, an attributions file, or a model for live exploration (whose runs are
 * recorded into a temporary dump, so every view reads a dump whatever was opened). Opening
 * and live runs happen on worker threads (GTask); the document is otherwise used from the
 * main thread only. */
#ifndef KS_VIEW_DOCUMENT_H
#define KS_VIEW_DOCUMENT_H

#include <gio/gio.h>

#include "ks_dump.h"

G_BEGIN_DECLS

typedef enum {
    KS_VIEW_SOURCE_NONE = 0,
    KS_VIEW_SOURCE_DUMP,          /* koalascope record -o DUMP.h5 */
    KS_VIEW_SOURCE_PROBE,         /* koalascope probe -o X.h5 (or a directory holding one) */
    KS_VIEW_SOURCE_AUDIT,         /* koalascope audit -o DIR (DIR/results.h5) */
    KS_VIEW_SOURCE_ATTRIBUTIONS,  /* koalascope attribute/patch -o X.h5 without a dump */
    KS_VIEW_SOURCE_MODEL,         /* a checkpoint: live runs */
} KsViewSource;

#define KS_VIEW_TYPE_DOCUMENT (ks_view_document_get_type())
G_DECLARE_FINAL_TYPE(KsViewDocument, ks_view_document, KS, VIEW_DOCUMENT, GObject)

#define KS_VIEW_ERROR (ks_view_error_quark())
GQuark ks_view_error_quark(void);

KsViewDocument *ks_view_document_new(void);

/* Open path (kind guessed from the file: see ks_view_document.c) on a worker thread.
 * tokenizer (may be NULL) is for llama2.c checkpoints. On success the document holds it and
 * emits "changed"; on failure it keeps what it had and the error names the path. */
void ks_view_document_open_async(KsViewDocument *self, const char *path, const char *tokenizer,
                                 GCancellable *cancellable, GAsyncReadyCallback cb,
                                 gpointer user_data);
gboolean ks_view_document_open_finish(KsViewDocument *self, GAsyncResult *res, GError **error);

/* The second dump of the compare view (opened on the calling thread: opening is lazy). */
gboolean ks_view_document_open_other(KsViewDocument *self, const char *path, GError **error);

KsViewSource ks_view_document_source(KsViewDocument *self);
/* What was opened (NULL: nothing), and a short title for the header bar. */
const char *ks_view_document_path(KsViewDocument *self);
char *ks_view_document_title(KsViewDocument *self);
/* The dump the views read (a live model's last run), NULL when none; and the compare
 * dump. Owned by the document; valid until the next "changed". */
ks_dump *ks_view_document_dump(KsViewDocument *self);
ks_dump *ks_view_document_other(KsViewDocument *self);
/* Path of the probe results file, the audit results.h5, or the attributions file (the dump
 * itself when it holds /attributions); NULL when none. */
const char *ks_view_document_probe_path(KsViewDocument *self);
const char *ks_view_document_audit_path(KsViewDocument *self);
const char *ks_view_document_attributions_path(KsViewDocument *self);
/* The audit directory (where the items CSV files are). */
const char *ks_view_document_audit_dir(KsViewDocument *self);

/* ---------------------------------------------------------------- audit drill-down */

/* The internals of one audit item (an audit directory open): open, on a worker,
 * AUDIT_DIR/drilldown/<audit>.h5 (written by koalascope audit with a "record" object in the
 * spec) and find the item's prompts there (ids "<item_id>#<option>"). On success that file
 * becomes the document's dump (and its attributions file) beside the audit results, and
 * "changed" is emitted. KS_VIEW_ERROR_NO_DRILLDOWN when the audit has no drill-down or the
 * item is not in it: the message says how to record one. */
enum { KS_VIEW_ERROR_NO_DRILLDOWN = 1000 };
typedef struct {
    int64_t prompt, n_prompts; /* the item's first prompt in the dump and how many */
    char *attr_name;           /* the item's attribution to show (g_free; NULL: none) */
} KsViewDrill;
void ks_view_document_drill_async(KsViewDocument *self, const char *audit, const char *item_id,
                                  int64_t item_index, GAsyncReadyCallback cb, gpointer user_data);
gboolean ks_view_document_drill_finish(KsViewDocument *self, GAsyncResult *res, KsViewDrill *out,
                                       GError **error);

/* ---------------------------------------------------------------- live runs (a model open) */

typedef struct {
    const char *prompt;
    const char *template_name; /* "none", "plain", "koala", "vicuna", "alpaca", "llama2" */
    int generate;              /* tokens to generate after the prompt (0: none) */
} KsViewRunParams;

/* Run params through the open model on a worker thread: tokenize (with the template),
 * generate, and record prompt + generation (every layer's residual stream and attention
 * pattern, top-10 next tokens) into a temporary dump, which becomes the document's dump.
 * progress (main thread, may be NULL) receives a fraction in [0, 1] and a phrase.
 * Cancelling stops at the next token (generation) or chunk boundary (recording) and leaves
 * the previous run in place (G_IO_ERROR_CANCELLED). One run at a time. */
typedef void (*KsViewProgressFunc)(double fraction, const char *what, gpointer user_data);
void ks_view_document_run_async(KsViewDocument *self, const KsViewRunParams *params,
                                GCancellable *cancellable, KsViewProgressFunc progress,
                                gpointer progress_data, GAsyncReadyCallback cb,
                                gpointer user_data);
gboolean ks_view_document_run_finish(KsViewDocument *self, GAsyncResult *res, GError **error);
gboolean ks_view_document_running(KsViewDocument *self);
/* Copy the live run's temporary dump to path. */
gboolean ks_view_document_save_dump(KsViewDocument *self, const char *path, GError **error);
/* The open model (live exploration), NULL when none. Owned by the document; used by the
 * main thread only while no run is in flight (a run uses it on its worker). */
ks_model *ks_view_document_model(KsViewDocument *self);
/* The chat template the checkpoint suggests ("plain" when none, NULL when no model). */
const char *ks_view_document_template_hint(KsViewDocument *self);

G_END_DECLS

#endif
