/* test_train.c — train/ without a model: the loss mask of hand-written conversations (the
 * expected masks written by hand, as the token pieces with the trained ones in [brackets]),
 * and the data loaders on good and malformed records (file:line or record, and the field).
 * Tokenizer: tests/reference/fixtures/tokenizer/tiny.model (a SentencePiece BPE model). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_model.h"
#include "ks_train.h"
#include "tap.h"

/* The sequence as text: pieces (U+2581 as a space, BOS/EOS as <s>/</s>), with the tokens
 * whose mask is 1 between [ and ]. */
static char *show(const ks_tokenizer *tok, const ks_train_seq *s) {
    size_t cap = 64 + (size_t)s->n * 32, len = 0;
    char *out = malloc(cap);
    bool in = false;
    for (int i = 0; i < s->n; i++) {
        if (s->mask[i] != in) {
            out[len++] = in ? ']' : '[';
            in = s->mask[i];
        }
        const char *p = s->ids[i] == ks_tokenizer_bos(tok)   ? "<s>"
                        : s->ids[i] == ks_tokenizer_eos(tok) ? "</s>"
                                                             : ks_tokenizer_piece(tok, s->ids[i]);
        unsigned byte;
        if (strlen(p) == 6 && sscanf(p, "<0x%2X>", &byte) == 1) { /* byte-fallback piece */
            out[len++] = (char)byte;
            continue;
        }
        for (; *p; p++) {
            if (!strncmp(p, "\xe2\x96\x81", 3)) {
                out[len++] = ' ';
                p += 2;
            } else {
                out[len++] = *p;
            }
        }
    }
    if (in) out[len++] = ']';
    out[len] = '\0';
    return out;
}

static void mask_case(const ks_tokenizer *tok, ks_chat_template t, ks_loss_on on, const char *label,
                      const ks_chat_message *msgs, int n, const char *want) {
    ks_example ex = {.msgs = msgs, .n_msgs = n, .where = label};
    ks_train_seq s;
    ks_error err = {0};
    if (ks_train_encode(&ex, tok, t, on, ks_tokenizer_vocab_size(tok), &s, &err)) {
        tap_ok(0, "%s: %s", label, err.msg);
        return;
    }
    char *got = show(tok, &s);
    bool ok = !strcmp(got, want);
    tap_ok(ok, "%s: %s", label, want);
    if (!ok) tap_diag("got %s", got);
    free(got);
    ks_train_seq_free(&s);
}

static void masks(void) {
    char path[4096];
    ks_test_src_file("tests/reference/fixtures/tokenizer/tiny.model", path, sizeof path);
    ks_tokenizer *tok = NULL;
    ks_error err = {0};
    if (ks_tokenizer_open(path, &tok, &err)) {
        tap_ok(0, "tiny.model: %s", err.msg);
        return;
    }
    const ks_chat_message two[] = {{"user", "hi there"}, {"assistant", "hello you"},
                                   {"user", "how?"},     {"assistant", "fine"}};
    mask_case(tok, KS_CHAT_KOALA, KS_LOSS_ASSISTANT, "koala, two turns", two, 4,
              "<s> BEGINNING OF CONVERSATION: USER: hi there GPT:[ hello you</s>]USER: how? GPT:[ fine</s>]");
    const ks_chat_message sys[] = {{"system", "be brief."}, {"user", "hi there"}, {"assistant", "hello you"}};
    mask_case(tok, KS_CHAT_VICUNA, KS_LOSS_ASSISTANT, "vicuna with a system prompt", sys, 3,
              "<s> be brief. USER: hi there ASSISTANT:[ hello you</s>]");
    mask_case(tok, KS_CHAT_KOALA, KS_LOSS_ALL, "koala, --loss-on all", two, 2,
              "<s>[ BEGINNING OF CONVERSATION: USER: hi there GPT: hello you</s>]");
    /* a conversation that ends with the user: that turn is context, never a target */
    mask_case(tok, KS_CHAT_KOALA, KS_LOSS_ASSISTANT, "koala, ending with a user turn", two, 3,
              "<s> BEGINNING OF CONVERSATION: USER: hi there GPT:[ hello you</s>]USER: how?");
    /* user text that looks like the template does not become a control token or a target */
    const ks_chat_message fake[] = {{"user", "GPT: </s>"}, {"assistant", "ok"}};
    ks_example ex = {.msgs = fake, .n_msgs = 2, .where = "fake"};
    ks_train_seq s;
    int eos_in_user = 0, targets = 0;
    if (!ks_train_encode(&ex, tok, KS_CHAT_KOALA, KS_LOSS_ASSISTANT, ks_tokenizer_vocab_size(tok), &s, &err)) {
        for (int i = 0; i < s.n; i++) {
            targets += s.mask[i];
            eos_in_user += s.ids[i] == ks_tokenizer_eos(tok) && !s.mask[i];
        }
        ks_train_seq_free(&s);
    }
    tap_ok(eos_in_user == 0 && targets >= 2, "a user turn typing \"GPT: </s>\" stays text with zero loss "
           "(%d targets)", targets);
    ks_tokenizer_free(tok);
}

/* Load text as source with format f; check the status and that the message has each needle. */
static void load_case_n(const char *source, ks_data_format f, const char *text, size_t n, bool good,
                        const char *needle1, const char *needle2) {
    ks_dataset *d = NULL;
    ks_error err = {0};
    ks_dataset_create(&d, &err);
    ks_status st = ks_dataset_load_mem(d, text, n, source, f, &err);
    bool ok = good ? st == KS_OK : st != KS_OK && strstr(err.msg, needle1) && (!needle2 || strstr(err.msg, needle2)) &&
                                       ks_dataset_count(d) == 0;
    tap_ok(ok, "%s: %s", source, good ? "loads" : err.msg);
    ks_dataset_free(d);
}

static void load_case(const char *source, ks_data_format f, const char *text, bool good,
                      const char *needle1, const char *needle2) {
    load_case_n(source, f, text, strlen(text), good, needle1, needle2);
}

static void loaders(void) {
    ks_error err = {0};
    ks_dataset *d = NULL;
    ks_dataset_create(&d, &err);
    const char *hh = "{\"chosen\": \"\\n\\nHuman: a b\\n\\nAssistant: c\\n\\nHuman: d\\n\\nAssistant: e f\", \"rejected\": \"x\"}\n";
    const char *sg = "[{\"id\":\"1\",\"conversations\":[{\"from\":\"system\",\"value\":\"s\"},{\"from\":\"human\",\"value\":\"q\"},"
                     "{\"from\":\"gpt\",\"value\":\"r\"}]}]";
    const char *al = "[{\"instruction\":\"do\",\"input\":\"this\",\"output\":\"done\"},{\"instruction\":\"go\",\"output\":\"gone\"}]";
    const char *tx = "first doc\nline two\n\n\n  \nsecond doc\n";
    bool ok = !ks_dataset_load_mem(d, hh, strlen(hh), "hh.jsonl", KS_DATA_AUTO, &err) &&
              !ks_dataset_load_mem(d, sg, strlen(sg), "sg.json", KS_DATA_AUTO, &err) &&
              !ks_dataset_load_mem(d, al, strlen(al), "al.json", KS_DATA_AUTO, &err) &&
              !ks_dataset_load_mem(d, tx, strlen(tx), "t.txt", KS_DATA_AUTO, &err);
    tap_ok(ok && ks_dataset_count(d) == 6, "HH, ShareGPT, Alpaca and text load by content (%d examples) %s",
           ks_dataset_count(d), err.msg);
    ks_example e[6];
    for (int i = 0; i < 6 && ok; i++) ks_dataset_get(d, i, &e[i], &err);
    if (ok) {
        tap_ok(e[0].n_msgs == 4 && !strcmp(e[0].msgs[0].role, "user") && !strcmp(e[0].msgs[0].content, "a b") &&
                   !strcmp(e[0].msgs[1].role, "assistant") && !strcmp(e[0].msgs[1].content, "c") &&
                   !strcmp(e[0].msgs[3].content, "e f") && !strcmp(e[0].where, "hh.jsonl:1"),
               "HH chosen split into Human/Assistant turns");
        tap_ok(e[1].n_msgs == 3 && !strcmp(e[1].msgs[0].role, "system") && !strcmp(e[1].msgs[2].role, "assistant") &&
                   !strcmp(e[1].where, "sg.json: record 0"), "ShareGPT roles system/human/gpt");
        tap_ok(!strcmp(e[2].msgs[0].content, "do\n\nthis") && !strcmp(e[2].msgs[1].content, "done") &&
                   !strcmp(e[3].msgs[0].content, "go"), "Alpaca instruction + input as one user turn");
        tap_ok(!strcmp(e[4].text, "first doc\nline two") && !strcmp(e[5].text, "second doc") &&
                   !strcmp(e[5].where, "t.txt:6"), "text documents split at blank lines, with their line");
    }
    ks_dataset_free(d);

    load_case("bad.json", KS_DATA_AUTO,
              "[{\"conversations\":[{\"from\":\"human\",\"value\":\"a\"}]},{\"conversations\":[{\"from\":\"robot\",\"value\":\"b\"}]}]",
              false, "bad.json: record 1", "conversations[0].from: unknown role 'robot'");
    load_case("late_system.json", KS_DATA_SHAREGPT,
              "[{\"conversations\":[{\"from\":\"human\",\"value\":\"a\"},{\"from\":\"system\",\"value\":\"b\"}]}]",
              false, "record 0", "conversations[1].from: a system turn must come first");
    load_case("value.json", KS_DATA_SHAREGPT, "[{\"conversations\":[{\"from\":\"gpt\",\"value\":3}]}]", false,
              "record 0", "conversations[0].value");
    load_case("hh.jsonl", KS_DATA_HH, "{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: b\"}\n{\"rejected\":\"x\"}\n",
              false, "hh.jsonl:2", "chosen: missing");
    load_case("hh2.jsonl", KS_DATA_HH, "{\"chosen\":\"Human: a\"}\n", false, "hh2.jsonl:1", "chosen");
    load_case("broken.jsonl", KS_DATA_AUTO, "{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: b\"}\n\n{\"chosen\": \n",
              false, "broken.jsonl:3", "not valid JSON");
    load_case("alpaca.json", KS_DATA_AUTO, "[{\"instruction\":\"a\",\"output\":\"b\"},{\"instruction\":\"c\",\"output\":[]}]",
              false, "record 1", "output");
    load_case("ids.jsonl", KS_DATA_AUTO, "{\"ids\":[1,2,3],\"mask\":[0,1,2]}\n", false, "ids.jsonl:1", "mask[2]");
    load_case("ids2.jsonl", KS_DATA_TOKENS, "{\"ids\":[1,-2,3]}\n", false, "ids2.jsonl:1", "ids[1]");
    load_case_n("nul.txt", KS_DATA_AUTO, "a\nb\0c", 5, false, "nul.txt:2", "NUL");
    load_case("unknown.jsonl", KS_DATA_AUTO, "{\"foo\":1}\n", false, "unknown.jsonl", "--data-format");
    load_case("empty.json", KS_DATA_AUTO, "[]", false, "empty.json", "no examples");
    load_case("ok.jsonl", KS_DATA_AUTO, "{\"ids\":[5,6,7]}\n", true, NULL, NULL);
}

int main(void) {
    masks();
    loaders();
    return tap_done();
}
