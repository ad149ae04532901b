/* test_chat.c — chat templates against FastChat's own templates (oracle: fschat 0.2.36,
 * fixtures made by tests/reference/make_chat_fixtures.py), and chat tokenization: only
 * control tokens the template writes become BOS/EOS ids. Comparisons are exact. */
#include <jansson.h>

#include "ks_model.h"
#include "tap.h"

static void test_render(void) {
    char path[4096];
    json_error_t jerr;
    json_t *root = json_load_file(ks_test_src_file("tests/reference/fixtures/chat/templates.json", path, sizeof path), 0, &jerr);
    if (!tap_ok(root != NULL, "load %s (%s)", path, root ? "ok" : jerr.text)) return;
    json_t *cases = json_object_get(root, "cases");
    size_t i;
    json_t *c;
    int match = 0, total = 0;
    json_array_foreach(cases, i, c) {
        const char *tname = json_string_value(json_object_get(c, "template"));
        const char *expected = json_string_value(json_object_get(c, "expected"));
        json_t *msgs = json_object_get(c, "messages");
        ks_chat_message m[16];
        size_t n = json_array_size(msgs), j;
        json_t *mj;
        json_array_foreach(msgs, j, mj) {
            m[j].role = json_string_value(json_object_get(mj, "role"));
            m[j].content = json_string_value(json_object_get(mj, "content"));
        }
        ks_chat_template t;
        ks_error err = {0};
        char *out = NULL;
        total++;
        if (ks_chat_template_parse(tname, &t, &err) || ks_chat_render(t, m, (int)n, &out, &err)) {
            tap_ok(0, "case %zu (%s): %s", i, tname, err.msg);
            continue;
        }
        /* FastChat leaves the leading BOS to the tokenizer; we write it */
        int ok = strncmp(out, "<s>", 3) == 0 && strcmp(out + 3, expected) == 0;
        if (!ok) tap_diag("case %zu (%s)\n#   got      '%s'\n#   expected '<s>%s'", i, tname, out, expected);
        match += ok;
        free(out);
    }
    tap_ok(match == total && total >= 20, "%d/%d templated prompts equal FastChat's", match, total);
    json_decref(root);
}

static void test_errors(void) {
    ks_error err = {0};
    ks_chat_template t;
    tap_ok(ks_chat_template_parse("klingon", &t, &err) == KS_ERR_ARG && strstr(err.msg, "klingon"),
           "unknown template is refused by name: %s", err.msg);
    ks_chat_message bad[] = {{"user", "hi"}, {"system", "late"}};
    char *out = NULL;
    tap_ok(ks_chat_render(KS_CHAT_KOALA, bad, 2, &out, &err) == KS_ERR_ARG && strstr(err.msg, "system"),
           "a system message after the first is refused: %s", err.msg);
    ks_chat_message bad2[] = {{"robot", "hi"}};
    tap_ok(ks_chat_render(KS_CHAT_KOALA, bad2, 1, &out, &err) == KS_ERR_ARG && strstr(err.msg, "robot"),
           "an unknown role is refused: %s", err.msg);
}

static void test_encode(void) {
    char path[4096];
    if (!ks_test_data_file("llama-tokenizer/tokenizer.model", path, sizeof path)) return;
    ks_tokenizer *tok = NULL;
    ks_error err = {0};
    if (!tap_ok(ks_tokenizer_open(path, &tok, &err) == KS_OK, "open LLaMA tokenizer: %s", err.msg)) return;
    ks_chat_message m[] = {{"user", "Say </s> please"}, {"assistant", "Sure"}, {"user", "Again"}};
    int *ids = NULL, n = 0;
    ks_status st = ks_chat_encode(tok, KS_CHAT_KOALA, m, 3, &ids, &n, &err);
    tap_ok(st == KS_OK && n > 10, "Koala prompt encodes (%d tokens)", n);
    int bos = 0, eos = 0;
    for (int i = 0; i < n; i++) {
        bos += ids[i] == 1;
        eos += ids[i] == 2;
    }
    tap_ok(n > 0 && ids[0] == 1 && bos == 1, "exactly one BOS, first");
    tap_ok(eos == 1, "one EOS: the template's, not the user's typed \"</s>\" (%d found)", eos);
    /* the text after the template's EOS continues without a dummy-prefix space: the ids
     * equal those of encoding that text alone without the prefix */
    int k = 0;
    while (k < n && ids[k] != 2) k++;
    int *tail = NULL, nt = 0;
    ks_tokenizer_encode_ex(tok, "USER: Again GPT:", 16, false, false, &tail, &nt, &err);
    tap_ok(k + 1 + nt == n && memcmp(ids + k + 1, tail, (size_t)nt * sizeof(int)) == 0,
           "text after EOS is encoded without a dummy prefix");
    free(tail);
    free(ids);
    ks_tokenizer_free(tok);
}

int main(void) {
    test_render();
    test_errors();
    test_encode();
    return tap_done();
}
