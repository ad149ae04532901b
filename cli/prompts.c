/* prompts.c — what the commands that run prompt files through a model share (record, diff):
 * the prompt iterator over --prompt TEXT or a --prompts FILE (.jsonl objects or one prompt per
 * line), tokenized with an optional chat template; the file's sha256 for provenance; and the
 * shell-quoted command line. Moved out of record.c unchanged when `koalascope diff` needed it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "cli_prompts.h"

/* The command line, shell-quoted, for the dump's provenance. */
char *cli_join_argv(const char *cmd, int argc, char **argv) {
    size_t cap = 64 + strlen(cmd);
    for (int i = 0; i < argc; i++) cap += 4 * strlen(argv[i]) + 3;
    char *s = malloc(cap), *p = s;
    if (!s) return NULL;
    p += sprintf(p, "koalascope %s", cmd);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool plain = *a != 0;
        for (const char *c = a; *c; c++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%", *c))
                plain = false;
        *p++ = ' ';
        if (plain) {
            p += sprintf(p, "%s", a);
            continue;
        }
        *p++ = '\'';
        for (const char *c = a; *c; c++) {
            if (*c == '\'') p += sprintf(p, "'\\''");
            else *p++ = *c;
        }
        *p++ = '\'';
    }
    *p = 0;
    return s;
}

void cli_prompt_clear(cli_prompt *it) {
    free(it->text);
    free(it->tokens);
    memset(it, 0, sizeof *it);
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

int cli_prompts_open(cli_prompt_iter *it, const cli_prompt_source *a, ks_error *e) {
    memset(it, 0, sizeof *it);
    it->src = a;
    if (a->prompt) {
        it->single = a->prompt;
        return 0;
    }
    it->path = a->prompts;
    it->jsonl = ends_with(a->prompts, ".jsonl") || ends_with(a->prompts, ".json");
    it->f = fopen(a->prompts, "rb");
    if (!it->f) {
        ks_error_set(e, KS_ERR_IO, "--prompts %s: %s", a->prompts, strerror(errno));
        return -1;
    }
    return 0;
}

void cli_prompts_close(cli_prompt_iter *it) {
    if (it->f) fclose(it->f);
    free(it->buf);
    memset(it, 0, sizeof *it);
}

/* Tokenize one prompt as the options say. */
static ks_status encode(const ks_tokenizer *tok, const cli_prompt_source *a, const char *where,
                        const ks_chat_message *msgs, int n_msgs, const char *text, int **ids,
                        int *n, ks_error *e) {
    if (!tok)
        return ks_error_set(e, KS_ERR_ARG, "%s: text prompts need a tokenizer; the model has none "
                            "(give --tokenizer FILE, or token ids in a .jsonl \"tokens\" field)", where);
    if (a->template_name || msgs) {
        ks_chat_template t;
        if (!a->template_name)
            return ks_error_set(e, KS_ERR_ARG, "%s: \"messages\" need --template", where);
        ks_status st = ks_chat_template_parse(a->template_name, &t, e);
        if (st) return st;
        ks_chat_message m[66];
        int k = 0;
        if (a->system) m[k++] = (ks_chat_message){"system", a->system};
        if (msgs) {
            if (n_msgs > 64) return ks_error_set(e, KS_ERR_ARG, "%s: more than 64 messages", where);
            for (int i = 0; i < n_msgs; i++) m[k++] = msgs[i];
        } else {
            m[k++] = (ks_chat_message){"user", text};
        }
        return ks_chat_encode(tok, t, m, k, ids, n, e);
    }
    ks_status st = ks_tokenizer_encode(tok, text, strlen(text), !a->no_bos, ids, n, e);
    if (!st && *n == 0) return ks_error_set(e, KS_ERR_ARG, "%s: the prompt is empty (and --no-bos leaves no token)", where);
    return st;
}

/* Next prompt: 1, 0 at the end, -1 on error (message in e, naming file and line). */
int cli_prompts_next(cli_prompt_iter *it, const ks_tokenizer *tok, int vocab, cli_prompt *out,
                     ks_error *e) {
    const cli_prompt_source *a = it->src;
    cli_prompt_clear(out);
    char where[512];
    if (it->single) {
        if (it->done) return 0;
        it->done = true;
        snprintf(out->id, sizeof out->id, "0");
        out->text = strdup(it->single);
        snprintf(where, sizeof where, "--prompt");
        if (!out->text) return ks_error_set(e, KS_ERR_NOMEM, "out of memory"), -1;
        return encode(tok, a, where, NULL, 0, out->text, &out->tokens, &out->n, e) ? -1 : 1;
    }
    for (;;) {
        ssize_t len = getline(&it->buf, &it->cap, it->f);
        if (len < 0) {
            if (ferror(it->f)) return ks_error_set(e, KS_ERR_IO, "%s: read error", it->path), -1;
            return 0;
        }
        it->line++;
        while (len > 0 && (it->buf[len - 1] == '\n' || it->buf[len - 1] == '\r')) it->buf[--len] = 0;
        bool blank = true;
        for (ssize_t i = 0; i < len; i++)
            if (!strchr(" \t", it->buf[i])) blank = false;
        if (blank) continue;
        snprintf(where, sizeof where, "%s line %ld", it->path, it->line);
        if (memchr(it->buf, 0, (size_t)len))
            return ks_error_set(e, KS_ERR_FORMAT, "%s: contains a NUL byte", where), -1;
        if (!it->jsonl) {
            snprintf(out->id, sizeof out->id, "%ld", it->index++);
            out->text = strdup(it->buf);
            if (!out->text) return ks_error_set(e, KS_ERR_NOMEM, "out of memory"), -1;
            return encode(tok, a, where, NULL, 0, out->text, &out->tokens, &out->n, e) ? -1 : 1;
        }
        json_error_t je;
        json_t *j = json_loadb(it->buf, (size_t)len, JSON_REJECT_DUPLICATES, &je);
        if (!j || !json_is_object(j)) {
            json_decref(j);
            return ks_error_set(e, KS_ERR_FORMAT, "%s: not a JSON object (%s)", where, j ? "other JSON value" : je.text), -1;
        }
        int rc = 1;
        json_t *jid = json_object_get(j, "id");
        if (json_is_string(jid) && strlen(json_string_value(jid)) >= sizeof out->id)
            rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: \"id\" is longer than %zu bytes", where, sizeof out->id - 1), -1);
        else if (json_is_string(jid)) snprintf(out->id, sizeof out->id, "%s", json_string_value(jid));
        else if (json_is_integer(jid)) snprintf(out->id, sizeof out->id, "%lld", (long long)json_integer_value(jid));
        else if (jid) rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: \"id\" must be a string or an integer", where), -1);
        else snprintf(out->id, sizeof out->id, "%ld", it->index);
        it->index++;
        json_t *jp = json_object_get(j, "prompt");
        if (!jp) jp = json_object_get(j, "text");
        json_t *jt = json_object_get(j, "tokens"), *jm = json_object_get(j, "messages");
        int kinds = (jp != NULL) + (jt != NULL) + (jm != NULL);
        if (rc > 0 && kinds != 1)
            rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: needs exactly one of \"prompt\" (or \"text\"), \"tokens\", \"messages\"", where), -1);
        if (rc > 0 && jp) {
            if (!json_is_string(jp)) rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: \"prompt\" must be a string", where), -1);
            else if (!(out->text = strdup(json_string_value(jp)))) rc = (ks_error_set(e, KS_ERR_NOMEM, "out of memory"), -1);
            else if (encode(tok, a, where, NULL, 0, out->text, &out->tokens, &out->n, e)) rc = -1;
        } else if (rc > 0 && jt) {
            size_t n = json_is_array(jt) ? json_array_size(jt) : 0;
            if (n == 0) rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: \"tokens\" must be a non-empty array of token ids", where), -1);
            else if (!(out->tokens = malloc(n * sizeof(int))) || !(out->text = strdup("")))
                rc = (ks_error_set(e, KS_ERR_NOMEM, "out of memory"), -1);
            for (size_t i = 0; rc > 0 && i < n; i++) {
                json_t *x = json_array_get(jt, i);
                json_int_t id = json_is_integer(x) ? json_integer_value(x) : -1;
                if (id < 0 || id >= vocab)
                    rc = (ks_error_set(e, KS_ERR_RANGE, "%s: \"tokens\"[%zu] is not a token id of this model (0..%d)", where, i, vocab - 1), -1);
                else out->tokens[i] = (int)id;
            }
            out->n = (int)n;
        } else if (rc > 0 && jm) {
            size_t n = json_is_array(jm) ? json_array_size(jm) : 0;
            ks_chat_message msgs[64];
            if (n == 0 || n > 64) rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: \"messages\" must be an array of 1..64 {role, content}", where), -1);
            for (size_t i = 0; rc > 0 && i < n; i++) {
                json_t *x = json_array_get(jm, i);
                json_t *ro = json_object_get(x, "role"), *co = json_object_get(x, "content");
                if (!json_is_string(ro) || !json_is_string(co))
                    rc = (ks_error_set(e, KS_ERR_FORMAT, "%s: \"messages\"[%zu] needs string \"role\" and \"content\"", where, i), -1);
                else msgs[i] = (ks_chat_message){json_string_value(ro), json_string_value(co)};
            }
            /* /prompts holds the last user turn */
            const char *last_user = "";
            for (size_t i = 0; rc > 0 && i < n; i++)
                if (strcmp(msgs[i].role, "user") == 0) last_user = msgs[i].content;
            if (rc > 0 && !(out->text = strdup(last_user))) rc = (ks_error_set(e, KS_ERR_NOMEM, "out of memory"), -1);
            if (rc > 0 && encode(tok, a, where, msgs, (int)n, NULL, &out->tokens, &out->n, e)) rc = -1;
        }
        json_decref(j);
        return rc;
    }
}

ks_status cli_prompts_sha256(const cli_prompt_source *a, char hex[65], ks_error *e) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return ks_error_set(e, KS_ERR_NOMEM, "sha256: out of memory");
    }
    ks_status st = KS_OK;
    if (a->prompt) {
        EVP_DigestUpdate(ctx, a->prompt, strlen(a->prompt));
    } else {
        FILE *f = fopen(a->prompts, "rb");
        if (!f) {
            EVP_MD_CTX_free(ctx);
            return ks_error_set(e, KS_ERR_IO, "--prompts %s: %s", a->prompts, strerror(errno));
        }
        unsigned char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, n);
        if (ferror(f)) st = ks_error_set(e, KS_ERR_IO, "--prompts %s: read error", a->prompts);
        fclose(f);
    }
    unsigned char md[32];
    unsigned ml = 0;
    EVP_DigestFinal_ex(ctx, md, &ml);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return st;
}
