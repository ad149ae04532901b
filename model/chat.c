/* chat.c — chat templates: how each model family expects a conversation to be written.
 *
 * A template renders a conversation into segments: text, or a control token (BOS/EOS) that
 * the template itself writes. Only control tokens written by the template become BOS/EOS
 * ids; "</s>" typed by a user stays text. The formats are those the models were trained on:
 *  - Koala v1: "BEGINNING OF CONVERSATION: USER: {u} GPT: {a}</s>USER: {u} GPT:"
 *    (Koala's release; FastChat's conversation template "koala_v1").
 *  - Vicuna v1.1: "{system} USER: {u} ASSISTANT: {a}</s>USER: {u} ASSISTANT:" with Vicuna's
 *    standard system prompt unless one is given (FastChat "vicuna_v1.1").
 *  - Alpaca: the Stanford Alpaca instruction format (prompt_no_input: preamble, then
 *    "\n\n### Instruction:\n{u}\n\n### Response:"), turns repeated for multi-turn.
 *  - Llama-2-chat: "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{u} [/INST] {a} </s><s>[INST] …"
 *    (Meta's llama chat_completion format).
 *  - plain: the messages' contents joined by newlines. */
#include <stdlib.h>
#include <string.h>

#include "model_private.h"

/* Published prompt-format constants of the model families (facts of their interfaces). */
#define VICUNA_SYSTEM                                                                        \
    "A chat between a curious user and an artificial intelligence assistant. The assistant " \
    "gives helpful, detailed, and polite answers to the user's questions."
#define ALPACA_PREAMBLE                                                                      \
    "Below is an instruction that describes a task. Write a response that appropriately "    \
    "completes the request."

enum { SEG_TEXT, SEG_BOS, SEG_EOS };

typedef struct {
    int kind;
    size_t off, len; /* text segments: bytes of render.text */
} seg;

typedef struct {
    ks_strbuf text; /* the bytes of every text segment */
    seg *segs;
    int n, cap_s;
    bool oom;
} render;

static void r_seg(render *r, int kind, size_t off, size_t len) {
    if (r->oom) return;
    if (kind == SEG_TEXT && r->n > 0 && r->segs[r->n - 1].kind == SEG_TEXT) {
        r->segs[r->n - 1].len += len; /* text runs merge */
        return;
    }
    if (r->n == r->cap_s) {
        int cap = r->cap_s ? r->cap_s * 2 : 16;
        seg *p = realloc(r->segs, (size_t)cap * sizeof *p);
        if (!p) {
            r->oom = true;
            return;
        }
        r->segs = p;
        r->cap_s = cap;
    }
    r->segs[r->n++] = (seg){kind, off, len};
}

static void r_text(render *r, const char *s) {
    size_t n = strlen(s), at = r->text.len;
    if (r->oom || n == 0) return;
    if (!ks_strbuf_append(&r->text, s, n)) {
        r->oom = true;
        return;
    }
    r_seg(r, SEG_TEXT, at, n);
}

static void r_special(render *r, int kind) { r_seg(r, kind, 0, 0); }

static bool is_role(const ks_chat_message *m, const char *role) {
    return m->role && strcmp(m->role, role) == 0;
}

/* cue: end with the cue for the assistant's next turn (prompts); false for a finished
 * conversation that is trained on (ks_chat_encode_train). */
static ks_status do_render(ks_chat_template t, const ks_chat_message *msgs, int n, bool cue,
                           render *r, ks_error *err) {
    if (n < 0 || (n > 0 && !msgs)) return ks_error_set(err, KS_ERR_ARG, "chat: no messages");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].content || !msgs[i].role)
            return ks_error_set(err, KS_ERR_ARG, "chat: message %d has no role or content", i);
        if (!is_role(&msgs[i], "system") && !is_role(&msgs[i], "user") &&
            !is_role(&msgs[i], "assistant"))
            return ks_error_set(err, KS_ERR_ARG,
                                "chat: message %d: role '%s' (expected system, user or "
                                "assistant)",
                                i, msgs[i].role);
        if (is_role(&msgs[i], "system") && i != 0)
            return ks_error_set(err, KS_ERR_ARG, "chat: message %d: a system message must come "
                                                 "first", i);
    }
    const char *system = n > 0 && is_role(&msgs[0], "system") ? msgs[0].content : NULL;
    int first = system ? 1 : 0;
    r_special(r, SEG_BOS);
    switch (t) {
    case KS_CHAT_KOALA:
    case KS_CHAT_VICUNA: {
        const char *user = "USER";
        const char *bot = t == KS_CHAT_KOALA ? "GPT" : "ASSISTANT";
        if (t == KS_CHAT_KOALA)
            r_text(r, system ? system : "BEGINNING OF CONVERSATION:");
        else
            r_text(r, system ? system : VICUNA_SYSTEM);
        for (int i = first; i < n; i++) {
            bool u = is_role(&msgs[i], "user");
            r_text(r, " ");
            r_text(r, u ? user : bot);
            r_text(r, ": ");
            r_text(r, msgs[i].content);
            if (!u) {
                r_special(r, SEG_EOS);
                /* FastChat's separator after "</s>" is nothing: the next role follows. We
                 * drop the " " we would add before it. */
            }
        }
        if (cue) {
            r_text(r, " ");
            r_text(r, bot);
            r_text(r, ":");
        }
        break;
    }
    case KS_CHAT_ALPACA: {
        /* Stanford Alpaca's prompt_no_input; the response follows "### Response:" directly */
        r_text(r, system ? system : ALPACA_PREAMBLE);
        for (int i = first; i < n; i++) {
            if (is_role(&msgs[i], "user")) {
                r_text(r, "\n\n### Instruction:\n");
                r_text(r, msgs[i].content);
            } else {
                r_text(r, "\n\n### Response:");
                r_text(r, msgs[i].content);
                r_special(r, SEG_EOS);
            }
        }
        if (cue) r_text(r, "\n\n### Response:");
        break;
    }
    case KS_CHAT_LLAMA2: {
        bool open_inst = false;
        for (int i = first; i < n; i++) {
            if (is_role(&msgs[i], "user")) {
                if (i > first) r_special(r, SEG_BOS);
                r_text(r, "[INST] ");
                if (system && i == first) {
                    r_text(r, "<<SYS>>\n");
                    r_text(r, system);
                    r_text(r, "\n<</SYS>>\n\n");
                }
                r_text(r, msgs[i].content);
                r_text(r, " [/INST]");
                open_inst = true;
            } else {
                r_text(r, " ");
                r_text(r, msgs[i].content);
                r_text(r, " ");
                r_special(r, SEG_EOS);
                open_inst = false;
            }
        }
        (void)open_inst;
        break;
    }
    case KS_CHAT_PLAIN:
    default:
        for (int i = 0; i < n; i++) {
            if (i) r_text(r, "\n");
            r_text(r, msgs[i].content);
        }
        break;
    }
    if (r->oom) return ks_error_set(err, KS_ERR_NOMEM, "chat: out of memory");
    return KS_OK;
}

/* Koala and Vicuna: after "</s>" comes the next role directly ("</s>USER:"). do_render wrote
 * " USER" after every EOS; drop that space here so rendering stays one simple loop. */
static void fix_after_eos(render *r) {
    for (int i = 1; i < r->n; i++)
        if (r->segs[i - 1].kind == SEG_EOS && r->segs[i].kind == SEG_TEXT && r->segs[i].len > 0 &&
            r->text.p[r->segs[i].off] == ' ') {
            r->segs[i].off++;
            r->segs[i].len--;
        }
}

ks_status ks_chat_template_parse(const char *name, ks_chat_template *out, ks_error *err) {
    static const struct {
        const char *name;
        ks_chat_template t;
    } names[] = {{"plain", KS_CHAT_PLAIN},   {"koala", KS_CHAT_KOALA},   {"koala_v1", KS_CHAT_KOALA},
                 {"vicuna", KS_CHAT_VICUNA}, {"vicuna_v1.1", KS_CHAT_VICUNA},
                 {"alpaca", KS_CHAT_ALPACA}, {"llama2", KS_CHAT_LLAMA2}, {"llama-2", KS_CHAT_LLAMA2},
                 {"llama2-chat", KS_CHAT_LLAMA2}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].t;
            return KS_OK;
        }
    return ks_error_set(err, KS_ERR_ARG,
                        "unknown chat template '%s' (expected koala, vicuna, alpaca, llama2 or "
                        "plain)",
                        name ? name : "(null)");
}

const char *ks_chat_template_name(ks_chat_template t) {
    switch (t) {
    case KS_CHAT_KOALA: return "koala";
    case KS_CHAT_VICUNA: return "vicuna";
    case KS_CHAT_ALPACA: return "alpaca";
    case KS_CHAT_LLAMA2: return "llama2";
    case KS_CHAT_PLAIN: return "plain";
    }
    return "plain";
}

ks_status ks_chat_render(ks_chat_template t, const ks_chat_message *msgs, int n_msgs, char **out,
                         ks_error *err) {
    render r = {0};
    ks_status st = do_render(t, msgs, n_msgs, true, &r, err);
    if (st == KS_OK) {
        fix_after_eos(&r);
        size_t total = 0;
        for (int i = 0; i < r.n; i++) total += r.segs[i].kind == SEG_TEXT ? r.segs[i].len : 4;
        char *s = malloc(total + 1), *p = s;
        if (!s) {
            st = ks_error_set(err, KS_ERR_NOMEM, "chat: out of memory");
        } else {
            for (int i = 0; i < r.n; i++) {
                if (r.segs[i].kind == SEG_TEXT) {
                    memcpy(p, r.text.p + r.segs[i].off, r.segs[i].len);
                    p += r.segs[i].len;
                } else {
                    const char *tag = r.segs[i].kind == SEG_BOS ? "<s>" : "</s>";
                    memcpy(p, tag, strlen(tag));
                    p += strlen(tag);
                }
            }
            *p = '\0';
            *out = s;
        }
    }
    free(r.text.p);
    free(r.segs);
    return st;
}

static ks_status encode_chat(const ks_tokenizer *tok, ks_chat_template t, const ks_chat_message *msgs,
                             int n_msgs, const char *reply, bool cue, int **ids, int *n_ids,
                             ks_error *err) {
    render r = {0};
    int *all = NULL, n = 0, cap = 0;
    ks_status st = do_render(t, msgs, n_msgs, cue, &r, err);
    if (st) goto out;
    if (reply) {
        r_text(&r, reply); /* merges into the cue's text run: encoded as one text */
        if (r.oom) {
            st = ks_error_set(err, KS_ERR_NOMEM, "chat: out of memory");
            goto out;
        }
    }
    fix_after_eos(&r);
    int bos = ks_tokenizer_bos(tok), eos = ks_tokenizer_eos(tok);
    for (int i = 0; i < r.n; i++) {
        int *piece = NULL, np = 0;
        int one;
        if (r.segs[i].kind == SEG_TEXT) {
            if (r.segs[i].len == 0) continue;
            /* the dummy-prefix space belongs to the start of the text only, as when the
             * whole prompt is encoded at once */
            bool start = i == 0 || (i == 1 && r.segs[0].kind == SEG_BOS);
            if ((st = ks_tokenizer_encode_ex(tok, r.text.p + r.segs[i].off, r.segs[i].len, false,
                                             start, &piece, &np, err)))
                goto out;
        } else {
            one = r.segs[i].kind == SEG_BOS ? bos : eos;
            if (one < 0) continue; /* tokenizer has no such token */
            piece = &one;
            np = 1;
        }
        if (n + np > cap) {
            int nc = cap ? cap : 64;
            while (nc < n + np) nc *= 2;
            int *p = realloc(all, (size_t)nc * sizeof(int));
            if (!p) {
                if (piece != &one) free(piece);
                st = ks_error_set(err, KS_ERR_NOMEM, "chat: out of memory");
                goto out;
            }
            all = p;
            cap = nc;
        }
        memcpy(all + n, piece, (size_t)np * sizeof(int));
        n += np;
        if (piece != &one) free(piece);
    }
    *ids = all;
    *n_ids = n;
    all = NULL;
out:
    free(all);
    free(r.text.p);
    free(r.segs);
    return st;
}

ks_status ks_chat_encode(const ks_tokenizer *tok, ks_chat_template t, const ks_chat_message *msgs,
                         int n_msgs, int **ids, int *n_ids, ks_error *err) {
    return encode_chat(tok, t, msgs, n_msgs, NULL, true, ids, n_ids, err);
}

ks_status ks_chat_encode_reply(const ks_tokenizer *tok, ks_chat_template t,
                               const ks_chat_message *msgs, int n_msgs, const char *reply,
                               int **ids, int *n_ids, ks_error *err) {
    if (!reply) return ks_error_set(err, KS_ERR_ARG, "chat: no reply text");
    return encode_chat(tok, t, msgs, n_msgs, reply, true, ids, n_ids, err);
}

static int common_prefix(const int *a, int na, const int *b, int nb) {
    int k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

ks_status ks_chat_encode_train(const ks_tokenizer *tok, ks_chat_template t,
                               const ks_chat_message *msgs, int n_msgs, int **ids,
                               uint8_t **mask, int *n_ids, ks_error *err) {
    if (!tok || !ids || !mask || !n_ids) return ks_error_set(err, KS_ERR_ARG, "chat: NULL argument");
    int *all = NULL, n = 0;
    ks_status st = encode_chat(tok, t, msgs, n_msgs, NULL, false, &all, &n, err);
    if (st) return st;
    uint8_t *mk = calloc((size_t)n + 1, 1);
    if (!mk) {
        free(all);
        return ks_error_set(err, KS_ERR_NOMEM, "chat: out of memory");
    }
    /* Each assistant turn: from where the encoding leaves the prompt the model would have been
     * given, to where it leaves the conversation closed after that turn. Both are prefixes of
     * the whole encoding except where a token straddles the boundary; the common prefix then
     * gives the straddling token to the turn (the model produces it at inference). */
    for (int i = 0; i < n_msgs && st == KS_OK; i++) {
        if (!msgs[i].role || strcmp(msgs[i].role, "assistant") != 0) continue;
        int *p = NULL, np = 0, *q = NULL, nq = 0;
        if ((st = encode_chat(tok, t, msgs, i, NULL, true, &p, &np, err)) ||
            (st = encode_chat(tok, t, msgs, i + 1, NULL, false, &q, &nq, err))) {
            free(p);
            break;
        }
        int a = common_prefix(all, n, p, np), b = common_prefix(all, n, q, nq);
        for (int k = a; k < b; k++) mk[k] = 1;
        free(p);
        free(q);
    }
    if (st) {
        free(all);
        free(mk);
        return st;
    }
    *ids = all;
    *mask = mk;
    *n_ids = n;
    return KS_OK;
}
