/* ks_view_document.c — what the viewer has open, and the live runs of a model.
 *
 * The kind of a path is decided by what opens it, in this order: a directory with
 * results.h5 (an audit run), a directory with config.json (an HF checkpoint), a directory
 * holding one probe results file; a file that ks_dump_open accepts (a dump), a probe results
 * file, an audit results.h5, an attributions file; .gguf and .bin files are checkpoints.
 * Each reader checks its file as untrusted input, so the first error that names the file is
 * the one shown when nothing accepts it.
 *
 * Live runs are recorded into a temporary dump (activations/' recorder, the same code as
 * `koalascope record`) rather than captured in memory: every view then reads a run exactly
 * as it reads a dump from disk (one code path, already tested against h5py), memory stays
 * bounded on long generations (the recorder streams), and the run can be saved as a dump.
 * The cost is a write of a few MB per run on a small model. */
#include "ks_view_document.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>

#include "ks_audit_results.h"
#include "ks_model.h"
#include "ks_results.h"

G_DEFINE_QUARK(ks-view-error-quark, ks_view_error)

struct _KsViewDocument {
    GObject parent_instance;

    KsViewSource source;
    char *path;
    ks_dump *dump;
    ks_dump *other;
    char *probe_path, *audit_path, *audit_dir, *attr_path;

    /* live: the model and its session are used by one worker at a time (running) */
    ks_model *model;
    ks_session *session;
    char *tmp_dump; /* the temporary dump of the last run */
    gboolean running;
};

G_DEFINE_FINAL_TYPE(KsViewDocument, ks_view_document, G_TYPE_OBJECT)

enum { SIG_CHANGED, N_SIGNALS };
static guint signals[N_SIGNALS];

/* What a worker built, handed to the main thread, which swaps it into the document. */
typedef struct {
    KsViewSource source;
    char *path;
    ks_dump *dump;
    char *probe_path, *audit_path, *audit_dir, *attr_path;
    ks_model *model;
    ks_session *session;
    char *tmp_dump;
} opened;

static void tmp_remove(char *path) {
    if (path) g_unlink(path);
    g_free(path);
}

static void opened_free(opened *o) {
    if (!o) return;
    g_free(o->path);
    ks_dump_close(o->dump);
    g_free(o->probe_path);
    g_free(o->audit_path);
    g_free(o->audit_dir);
    g_free(o->attr_path);
    ks_session_free(o->session);
    ks_model_close(o->model);
    tmp_remove(o->tmp_dump);
    g_free(o);
}

static void document_clear(KsViewDocument *self) {
    g_clear_pointer(&self->dump, ks_dump_close);
    g_clear_pointer(&self->path, g_free);
    g_clear_pointer(&self->probe_path, g_free);
    g_clear_pointer(&self->audit_path, g_free);
    g_clear_pointer(&self->audit_dir, g_free);
    g_clear_pointer(&self->attr_path, g_free);
    g_clear_pointer(&self->session, ks_session_free);
    g_clear_pointer(&self->model, ks_model_close);
    g_clear_pointer(&self->tmp_dump, tmp_remove);
    self->source = KS_VIEW_SOURCE_NONE;
}

static void ks_view_document_dispose(GObject *object) {
    KsViewDocument *self = KS_VIEW_DOCUMENT(object);
    /* a run in flight holds a reference through its GTask, so dispose never races it */
    document_clear(self);
    g_clear_pointer(&self->other, ks_dump_close);
    G_OBJECT_CLASS(ks_view_document_parent_class)->dispose(object);
}

static void ks_view_document_class_init(KsViewDocumentClass *klass) {
    GObjectClass *object_class = G_OBJECT_CLASS(klass);
    object_class->dispose = ks_view_document_dispose;
    /* emitted on the main thread whenever what the views read has changed */
    signals[SIG_CHANGED] = g_signal_new("changed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0,
                                        NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void ks_view_document_init(KsViewDocument *self) { (void)self; }

KsViewDocument *ks_view_document_new(void) { return g_object_new(KS_VIEW_TYPE_DOCUMENT, NULL); }

static void set_error(GError **error, const ks_error *e, const char *fallback) {
    g_set_error(error, KS_VIEW_ERROR, e->code ? (int)e->code : 1, "%s",
                e->msg[0] ? e->msg : fallback);
}

static gboolean has_suffix(const char *s, const char *suf) { return g_str_has_suffix(s, suf); }

/* The one probe results file in dir (koalascope probe -o DIR/x.h5), or NULL. */
static char *find_probe_file(const char *dir) {
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    if (!d) return NULL;
    const char *name;
    while ((name = g_dir_read_name(d))) {
        if (!has_suffix(name, ".h5")) continue;
        g_autofree char *p = g_build_filename(dir, name, NULL);
        ks_probe_results_info info;
        ks_error e = {0};
        if (ks_probe_results_info_read(p, &info, &e) == KS_OK) return g_steal_pointer(&p);
    }
    return NULL;
}

static ks_status open_model(opened *o, const char *path, const char *tokenizer, ks_error *e) {
    ks_model_options mo = {.tokenizer_path = tokenizer};
    /* a llama2.c checkpoint has no tokenizer of its own: take tokenizer.bin or tok*.bin
     * beside it when there is exactly one, as the llama2.c distributions ship them */
    g_autofree char *guess = NULL;
    if (!tokenizer && has_suffix(path, ".bin")) {
        g_autofree char *dir = g_path_get_dirname(path);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;
        int found = 0;
        while (d && (name = g_dir_read_name(d))) {
            g_autofree char *full = g_build_filename(dir, name, NULL);
            if (has_suffix(name, ".bin") && g_str_has_prefix(name, "tok") && strcmp(full, path)) {
                found++;
                g_free(guess);
                guess = g_steal_pointer(&full);
            }
        }
        if (found == 1) mo.tokenizer_path = guess;
    }
    ks_status st = ks_model_open(path, &mo, &o->model, e);
    if (st) return st;
    if (!ks_model_tokenizer(o->model))
        return ks_error_set(e, KS_ERR_ARG, "%s: the checkpoint has no tokenizer; give one with "
                            "koalascope view MODEL --tokenizer FILE", path);
    ks_session_options so = {0};
    st = ks_session_create(o->model, &so, &o->session, e);
    if (st) return st;
    o->source = KS_VIEW_SOURCE_MODEL;
    return KS_OK;
}

static ks_status open_path(opened *o, const char *path, const char *tokenizer, ks_error *e) {
    o->path = g_strdup(path);
    if (!g_file_test(path, G_FILE_TEST_EXISTS))
        return ks_error_set(e, KS_ERR_IO, "%s: no such file or directory", path);
    if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
        g_autofree char *res = g_build_filename(path, "results.h5", NULL);
        g_autofree char *cfg = g_build_filename(path, "config.json", NULL);
        if (g_file_test(res, G_FILE_TEST_EXISTS)) {
            int n = 0;
            ks_status st = ks_audit_results_check(res, &n, e);
            if (st) return st;
            o->source = KS_VIEW_SOURCE_AUDIT;
            o->audit_path = g_steal_pointer(&res);
            o->audit_dir = g_strdup(path);
            return KS_OK;
        }
        if (g_file_test(cfg, G_FILE_TEST_EXISTS)) return open_model(o, path, tokenizer, e);
        char *probe = find_probe_file(path);
        if (probe) {
            o->source = KS_VIEW_SOURCE_PROBE;
            o->probe_path = probe;
            return KS_OK;
        }
        return ks_error_set(e, KS_ERR_FORMAT, "%s: not a results directory (no results.h5 of "
                            "koalascope audit, no probe results .h5) nor a checkpoint (no "
                            "config.json)", path);
    }
    if (has_suffix(path, ".gguf") || has_suffix(path, ".bin") || has_suffix(path, ".safetensors"))
        return open_model(o, path, tokenizer, e);
    ks_error first = {0};
    if (ks_dump_open(path, &o->dump, &first) == KS_OK) {
        o->source = KS_VIEW_SOURCE_DUMP;
        ks_attribution_info *info = NULL;
        int n = 0;
        ks_error ea = {0};
        if (ks_attribution_list(path, &info, &n, &ea) == KS_OK && n > 0) o->attr_path = g_strdup(path);
        free(info);
        return KS_OK;
    }
    ks_probe_results_info pi;
    ks_error ignored = {0};
    if (ks_probe_results_info_read(path, &pi, &ignored) == KS_OK) {
        o->source = KS_VIEW_SOURCE_PROBE;
        o->probe_path = g_strdup(path);
        return KS_OK;
    }
    int n_metrics = 0;
    if (ks_audit_results_check(path, &n_metrics, &ignored) == KS_OK) {
        o->source = KS_VIEW_SOURCE_AUDIT;
        o->audit_path = g_strdup(path);
        o->audit_dir = g_path_get_dirname(path);
        return KS_OK;
    }
    ks_attribution_info *info = NULL;
    int n = 0;
    if (ks_attribution_list(path, &info, &n, &ignored) == KS_OK && n > 0) {
        free(info);
        o->source = KS_VIEW_SOURCE_ATTRIBUTIONS;
        o->attr_path = g_strdup(path);
        return KS_OK;
    }
    free(info);
    /* the dump reader's message says best what is wrong with an .h5 that is none of these */
    *e = first;
    return e->code ? e->code : KS_ERR_FORMAT;
}

typedef struct {
    char *path, *tokenizer;
} open_args;

static void open_args_free(open_args *a) {
    g_free(a->path);
    g_free(a->tokenizer);
    g_free(a);
}

static void open_thread(GTask *task, gpointer source, gpointer data, GCancellable *c) {
    (void)source;
    (void)c;
    open_args *a = data;
    opened *o = g_new0(opened, 1);
    ks_error e = {0};
    if (open_path(o, a->path, a->tokenizer, &e)) {
        GError *err = NULL;
        set_error(&err, &e, "cannot open");
        opened_free(o);
        g_task_return_error(task, err);
        return;
    }
    g_task_return_pointer(task, o, (GDestroyNotify)opened_free);
}

void ks_view_document_open_async(KsViewDocument *self, const char *path, const char *tokenizer,
                                 GCancellable *cancellable, GAsyncReadyCallback cb,
                                 gpointer user_data) {
    g_autoptr(GTask) task = g_task_new(self, cancellable, cb, user_data);
    g_task_set_source_tag(task, ks_view_document_open_async);
    open_args *a = g_new0(open_args, 1);
    a->path = g_strdup(path);
    a->tokenizer = g_strdup(tokenizer);
    g_task_set_task_data(task, a, (GDestroyNotify)open_args_free);
    g_task_run_in_thread(task, open_thread);
}

/* Move what a worker opened into the document (main thread). */
static void adopt(KsViewDocument *self, opened *o) {
    document_clear(self);
    self->source = o->source;
    self->path = g_steal_pointer(&o->path);
    self->dump = g_steal_pointer(&o->dump);
    self->probe_path = g_steal_pointer(&o->probe_path);
    self->audit_path = g_steal_pointer(&o->audit_path);
    self->audit_dir = g_steal_pointer(&o->audit_dir);
    self->attr_path = g_steal_pointer(&o->attr_path);
    self->model = g_steal_pointer(&o->model);
    self->session = g_steal_pointer(&o->session);
    self->tmp_dump = g_steal_pointer(&o->tmp_dump);
    opened_free(o);
    g_signal_emit(self, signals[SIG_CHANGED], 0);
}

gboolean ks_view_document_open_finish(KsViewDocument *self, GAsyncResult *res, GError **error) {
    g_return_val_if_fail(g_task_is_valid(res, self), FALSE);
    if (self->running) {
        g_set_error(error, KS_VIEW_ERROR, 1, "a live run is in progress; cancel it first");
        return FALSE;
    }
    opened *o = g_task_propagate_pointer(G_TASK(res), error);
    if (!o) return FALSE;
    adopt(self, o);
    return TRUE;
}

gboolean ks_view_document_open_other(KsViewDocument *self, const char *path, GError **error) {
    ks_dump *d = NULL;
    ks_error e = {0};
    if (ks_dump_open(path, &d, &e)) {
        set_error(error, &e, "cannot open the dump to compare");
        return FALSE;
    }
    g_clear_pointer(&self->other, ks_dump_close);
    self->other = d;
    g_signal_emit(self, signals[SIG_CHANGED], 0);
    return TRUE;
}

KsViewSource ks_view_document_source(KsViewDocument *self) { return self->source; }
const char *ks_view_document_path(KsViewDocument *self) { return self->path; }
ks_dump *ks_view_document_dump(KsViewDocument *self) { return self->dump; }
ks_dump *ks_view_document_other(KsViewDocument *self) { return self->other; }
const char *ks_view_document_probe_path(KsViewDocument *self) { return self->probe_path; }
const char *ks_view_document_audit_path(KsViewDocument *self) { return self->audit_path; }
const char *ks_view_document_audit_dir(KsViewDocument *self) { return self->audit_dir; }
const char *ks_view_document_attributions_path(KsViewDocument *self) { return self->attr_path; }
gboolean ks_view_document_running(KsViewDocument *self) { return self->running; }

ks_model *ks_view_document_model(KsViewDocument *self) {
    return self->running ? NULL : self->model;
}

const char *ks_view_document_template_hint(KsViewDocument *self) {
    return self->model ? ks_model_template_hint(self->model) : NULL;
}

char *ks_view_document_title(KsViewDocument *self) {
    if (!self->path) return g_strdup("koalascope");
    g_autofree char *base = g_path_get_basename(self->path);
    static const char *what[] = {"", "dump", "probe results", "audit results", "attributions",
                                 "model"};
    return g_strdup_printf("%s — %s", base, what[self->source]);
}

/* ---------------------------------------------------------------- audit drill-down */

typedef struct {
    char *audit, *item_id, *path, *audit_dir;
    int64_t index;
    /* results (worker) */
    ks_dump *dump;
    char *attr_path;
    KsViewDrill drill;
} drill_args;

static void drill_args_free(drill_args *a) {
    g_free(a->audit);
    g_free(a->item_id);
    g_free(a->path);
    g_free(a->audit_dir);
    ks_dump_close(a->dump);
    g_free(a->attr_path);
    g_free(a->drill.attr_name);
    g_free(a);
}

static void no_drilldown(GTask *task, const drill_args *a, const char *why) {
    g_task_return_new_error(task, KS_VIEW_ERROR, KS_VIEW_ERROR_NO_DRILLDOWN,
                            "item %s has no internals recorded (%s): add \"record\": {\"hooks\": "
                            "\"blocks.*.hook_resid_post,blocks.*.attn.hook_pattern\", \"items\": N} "
                            "to audit '%s' in the spec and run koalascope audit again (docs/AUDITS.md, "
                            "\"Drill-down\")", a->item_id, why, a->audit);
}

static void drill_thread(GTask *task, gpointer source, gpointer data, GCancellable *c) {
    (void)source;
    (void)c;
    drill_args *a = data;
    if (!g_file_test(a->path, G_FILE_TEST_EXISTS)) {
        g_autofree char *what = g_strdup_printf("no drilldown/%s.h5 beside results.h5", a->audit);
        no_drilldown(task, a, what);
        return;
    }
    ks_error e = {0};
    if (ks_dump_open(a->path, &a->dump, &e)) {
        GError *err = NULL;
        set_error(&err, &e, "cannot open the drill-down dump");
        g_task_return_error(task, err);
        return;
    }
    /* the item's prompts: ids "<item id>#<option>", recorded one after the other */
    g_autofree char *prefix = g_strdup_printf("%s#", a->item_id);
    a->drill.prompt = -1;
    int64_t n = ks_dump_n_prompts(a->dump);
    for (int64_t p = 0; p < n; p++) {
        char *id = NULL;
        if (ks_dump_prompt_id(a->dump, p, &id, &e)) {
            GError *err = NULL;
            set_error(&err, &e, "cannot read the drill-down dump's prompt ids");
            g_task_return_error(task, err);
            return;
        }
        if (g_str_has_prefix(id, prefix)) {
            if (a->drill.prompt < 0) a->drill.prompt = p;
            a->drill.n_prompts++;
        }
        free(id);
    }
    if (a->drill.prompt < 0) {
        g_autofree char *what = g_strdup_printf(
            "drilldown/%s.h5 holds the %" G_GINT64_FORMAT " prompts of the items with the "
            "largest contrast, not this one; raise \"items\"", a->audit, n);
        no_drilldown(task, a, what);
        return;
    }
    /* its attribution: the contrast of the tokens, else option a's, else the heads' */
    ks_attribution_info *info = NULL;
    int ni = 0;
    if (ks_attribution_list(a->path, &info, &ni, &e) == KS_OK && ni > 0) {
        a->attr_path = g_strdup(a->path);
        const char *want[] = {"contrast.tokens", "o0.tokens", "contrast.heads", "o0.heads"};
        for (size_t w = 0; w < G_N_ELEMENTS(want) && !a->drill.attr_name; w++) {
            g_autofree char *name = g_strdup_printf("i%" G_GINT64_FORMAT ".%s", a->index, want[w]);
            for (int i = 0; i < ni && !a->drill.attr_name; i++)
                if (strcmp(info[i].name, name) == 0) a->drill.attr_name = g_strdup(name);
        }
    }
    free(info);
    g_task_return_boolean(task, TRUE);
}

void ks_view_document_drill_async(KsViewDocument *self, const char *audit, const char *item_id,
                                  int64_t item_index, GAsyncReadyCallback cb, gpointer user_data) {
    g_autoptr(GTask) task = g_task_new(self, NULL, cb, user_data);
    g_task_set_source_tag(task, ks_view_document_drill_async);
    if (self->source != KS_VIEW_SOURCE_AUDIT || !self->audit_dir) {
        g_task_return_new_error(task, KS_VIEW_ERROR, 1, "no audit results are open");
        return;
    }
    drill_args *a = g_new0(drill_args, 1);
    a->audit = g_strdup(audit);
    a->item_id = g_strdup(item_id);
    a->index = item_index;
    a->audit_dir = g_strdup(self->audit_dir);
    g_autofree char *file = g_strdup_printf("%s.h5", audit);
    a->path = g_build_filename(self->audit_dir, "drilldown", file, NULL);
    g_task_set_task_data(task, a, (GDestroyNotify)drill_args_free);
    g_task_run_in_thread(task, drill_thread);
}

gboolean ks_view_document_drill_finish(KsViewDocument *self, GAsyncResult *res, KsViewDrill *out,
                                       GError **error) {
    g_return_val_if_fail(g_task_is_valid(res, self), FALSE);
    memset(out, 0, sizeof *out);
    if (!g_task_propagate_boolean(G_TASK(res), error)) return FALSE;
    drill_args *a = g_task_get_task_data(G_TASK(res));
    if (self->source != KS_VIEW_SOURCE_AUDIT || g_strcmp0(a->audit_dir, self->audit_dir)) {
        g_set_error(error, KS_VIEW_ERROR, 1, "the audit results were closed meanwhile");
        return FALSE;
    }
    g_clear_pointer(&self->dump, ks_dump_close);
    self->dump = g_steal_pointer(&a->dump);
    g_free(self->attr_path);
    self->attr_path = g_steal_pointer(&a->attr_path);
    *out = a->drill;
    a->drill.attr_name = NULL;
    g_signal_emit(self, signals[SIG_CHANGED], 0);
    return TRUE;
}

/* ---------------------------------------------------------------- live runs */

typedef struct {
    char *prompt, *template_name;
    int generate;
    KsViewDocument *self; /* the GTask's source object holds the reference */
    ks_model *model;      /* borrowed from self for the run (running keeps them alive) */
    ks_session *session;
    GCancellable *cancellable;
    KsViewProgressFunc progress;
    gpointer progress_data;
    GMainContext *context;
    /* progress bookkeeping (worker thread) */
    double base, span;
    int generated;
} run_args;

static void run_args_free(run_args *a) {
    g_free(a->prompt);
    g_free(a->template_name);
    g_clear_object(&a->cancellable);
    g_main_context_unref(a->context);
    g_free(a);
}

typedef struct {
    KsViewProgressFunc fn;
    gpointer data;
    double fraction;
    char *what;
} progress_msg;

static gboolean progress_idle(gpointer p) {
    progress_msg *m = p;
    m->fn(m->fraction, m->what, m->data);
    g_free(m->what);
    g_free(m);
    return G_SOURCE_REMOVE;
}

static void report(run_args *a, double fraction, const char *what) {
    if (!a->progress) return;
    progress_msg *m = g_new0(progress_msg, 1);
    m->fn = a->progress;
    m->data = a->progress_data;
    m->fraction = fraction;
    m->what = g_strdup(what);
    g_main_context_invoke(a->context, progress_idle, m);
}

static bool on_token(const char *piece, size_t len, int token, void *user) {
    (void)piece;
    (void)len;
    (void)token;
    run_args *a = user;
    a->generated++;
    char what[64];
    g_snprintf(what, sizeof what, "generating: %d of %d tokens", a->generated, a->generate);
    report(a, a->base + a->span * a->generated / (a->generate > 0 ? a->generate : 1), what);
    return !g_cancellable_is_cancelled(a->cancellable);
}

static void on_chunk(int done, int total, void *user) {
    run_args *a = user;
    report(a, a->base + a->span * done / (total > 0 ? total : 1), "recording");
}

static ks_status encode_prompt(const ks_tokenizer *tok, const run_args *a, int **ids, int *n,
                               ks_error *e) {
    if (!a->template_name || strcmp(a->template_name, "none") == 0)
        return ks_tokenizer_encode(tok, a->prompt, strlen(a->prompt), true, ids, n, e);
    ks_chat_template t;
    ks_status st = ks_chat_template_parse(a->template_name, &t, e);
    if (st) return st;
    ks_chat_message m = {"user", a->prompt};
    return ks_chat_encode(tok, t, &m, 1, ids, n, e);
}

static void run_thread(GTask *task, gpointer source, gpointer data, GCancellable *c) {
    (void)source;
    run_args *a = data;
    ks_error e = {0};
    int *ids = NULL, n = 0, *gen = NULL, n_gen = 0;
    char *gen_text = NULL;
    ks_recorder *rec = NULL;
    opened *o = NULL;
    const ks_tokenizer *tok = ks_model_tokenizer(a->model);
    int ctx = ks_session_max_seq(a->session);

    if (encode_prompt(tok, a, &ids, &n, &e)) goto fail;
    if (n == 0) {
        ks_error_set(&e, KS_ERR_ARG, "the prompt is empty");
        goto fail;
    }
    if (n + a->generate > ctx) {
        ks_error_set(&e, KS_ERR_ARG, "the prompt (%d tokens) and %d generated tokens exceed "
                     "the model's context of %d", n, a->generate, ctx);
        goto fail;
    }
    if (a->generate > 0) {
        a->base = 0;
        a->span = 0.5;
        report(a, 0, "generating");
        ks_session_reset(a->session);
        ks_generate_params gp = {.max_new_tokens = a->generate, .stop_at_eos = true};
        gp.sampling.top_p = 1.0f; /* greedy: temperature 0 */
        if (ks_generate(a->session, ids, n, &gp, on_token, a, &gen, &n_gen, &gen_text, &e))
            goto fail;
        if (g_cancellable_is_cancelled(c)) goto cancelled;
        int *all = g_realloc_n(ids, (gsize)(n + n_gen), sizeof *all);
        memcpy(all + n, gen, (size_t)n_gen * sizeof *all);
        ids = all;
    }

    o = g_new0(opened, 1);
    int fd = g_file_open_tmp("koalascope-view-XXXXXX.h5", &o->tmp_dump, NULL);
    if (fd < 0) {
        ks_error_set(&e, KS_ERR_IO, "cannot create a temporary dump in %s", g_get_tmp_dir());
        goto fail;
    }
    close(fd);
    ks_record_options ro = {
        .hooks = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern",
        .logits_topk = 10,
        .flush_seconds = 0,
        .no_fsync = true,
        .expected_tokens = n + n_gen,
        .expected_attn = (int64_t)(n + n_gen) * (n + n_gen + 1) / 2,
        .max_text_bytes = (int64_t)strlen(a->prompt) + 1,
        .chat_template = a->template_name,
        .backend = "cpu",
        .command_line = "koalascope view (live run)",
        .n_prompts_planned = 1,
        .generate_max_tokens = a->generate,
    };
    ro.sampling.top_p = 1.0f;
    if (ks_recorder_create(o->tmp_dump, a->model, &ro, true, &rec, &e)) goto fail;
    a->base = a->generate > 0 ? 0.5 : 0;
    a->span = 1 - a->base;
    ks_session_set_progress(a->session, on_chunk, a);
    report(a, a->base, "recording");
    ks_status st = ks_recorder_record(rec, a->session, ids, n + n_gen, n, a->prompt, "live",
                                      gen_text, &e);
    ks_session_set_progress(a->session, NULL, NULL);
    if (st) goto fail;
    if (g_cancellable_is_cancelled(c)) goto cancelled;
    st = ks_recorder_finish(rec, &e);
    ks_recorder_free(rec); /* finish closes the file; the handle is still ours */
    rec = NULL;
    if (st) goto fail;
    if (ks_dump_open(o->tmp_dump, &o->dump, &e)) goto fail;
    o->source = KS_VIEW_SOURCE_MODEL;
    free(ids);
    free(gen);
    free(gen_text);
    g_task_return_pointer(task, o, (GDestroyNotify)opened_free);
    return;
cancelled:
    ks_recorder_free(rec);
    opened_free(o);
    free(ids);
    free(gen);
    free(gen_text);
    g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "run cancelled");
    return;
fail:
    ks_recorder_free(rec);
    opened_free(o);
    free(ids);
    free(gen);
    free(gen_text);
    GError *err = NULL;
    set_error(&err, &e, "the run failed");
    g_task_return_error(task, err);
}

void ks_view_document_run_async(KsViewDocument *self, const KsViewRunParams *params,
                                GCancellable *cancellable, KsViewProgressFunc progress,
                                gpointer progress_data, GAsyncReadyCallback cb,
                                gpointer user_data) {
    g_autoptr(GTask) task = g_task_new(self, cancellable, cb, user_data);
    g_task_set_source_tag(task, ks_view_document_run_async);
    if (!self->model) {
        g_task_return_new_error(task, KS_VIEW_ERROR, 1, "no model is open: open a checkpoint "
                                "(HF directory, .gguf or llama2.c .bin) to run prompts");
        return;
    }
    if (self->running) {
        g_task_return_new_error(task, KS_VIEW_ERROR, 1, "a run is already in progress");
        return;
    }
    run_args *a = g_new0(run_args, 1);
    a->prompt = g_strdup(params->prompt ? params->prompt : "");
    a->template_name = g_strdup(params->template_name);
    a->generate = params->generate > 0 ? params->generate : 0;
    a->self = self;
    a->model = self->model;
    a->session = self->session;
    a->cancellable = cancellable ? g_object_ref(cancellable) : g_cancellable_new();
    a->progress = progress;
    a->progress_data = progress_data;
    a->context = g_main_context_ref_thread_default();
    self->running = TRUE;
    g_task_set_task_data(task, a, (GDestroyNotify)run_args_free);
    g_task_set_return_on_cancel(task, FALSE);
    g_task_run_in_thread(task, run_thread);
}

gboolean ks_view_document_run_finish(KsViewDocument *self, GAsyncResult *res, GError **error) {
    g_return_val_if_fail(g_task_is_valid(res, self), FALSE);
    if (g_task_get_source_tag(G_TASK(res)) == ks_view_document_run_async &&
        g_task_get_task_data(G_TASK(res)))
        self->running = FALSE;
    opened *o = g_task_propagate_pointer(G_TASK(res), error);
    if (!o) return FALSE;
    /* keep the model and session; replace the dump of the previous run */
    g_clear_pointer(&self->dump, ks_dump_close);
    g_clear_pointer(&self->tmp_dump, tmp_remove);
    self->dump = g_steal_pointer(&o->dump);
    self->tmp_dump = g_steal_pointer(&o->tmp_dump);
    opened_free(o);
    g_signal_emit(self, signals[SIG_CHANGED], 0);
    return TRUE;
}

gboolean ks_view_document_save_dump(KsViewDocument *self, const char *path, GError **error) {
    const char *src = self->tmp_dump ? self->tmp_dump : NULL;
    if (!src) {
        g_set_error(error, KS_VIEW_ERROR, 1, "no live run to save: run a prompt first");
        return FALSE;
    }
    g_autoptr(GFile) from = g_file_new_for_path(src);
    g_autoptr(GFile) to = g_file_new_for_path(path);
    return g_file_copy(from, to, G_FILE_COPY_OVERWRITE, NULL, NULL, NULL, error);
}
