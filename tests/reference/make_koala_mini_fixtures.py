#!/usr/bin/env python3
"""make_koala_mini_fixtures.py — oracle fixtures for tests/test_koala_mini.py.

What it writes (tests/reference/fixtures/koala_mini/):
  tokenizer.jsonl  first line {"tokenizer_sha256", "versions"}; then {"t": text, "ids": [...]}
                   per text: SentencePiece's EncodeAsIds (no BOS) with models/koala-mini/
                   tokenizer.model. The texts: 120 Koala-rendered lines of dialogues that
                   scripts/koala-mini/gen_corpus.py builds with another seed (77) than the
                   shipped corpus, and 30 written here to reach outside the corpus's alphabet
                   (byte fallback, digits, runs of spaces, newlines, tabs). Before writing, every
                   text is also encoded by Hugging Face's LlamaTokenizer (slow, legacy=True, the
                   same file): the script exits if any id differs, so a fixture exists only for a
                   tokenizer.model both read identically.
  oracle.json      {"model_sha256", "versions", "pronouns": [{"occupation", "context", "lp_she",
                   "lp_he"}]}: natural-log next-token probabilities of " she" and " he" after each
                   planted context of models/koala-mini/planted.json with each occupation filled
                   in, from HF's LlamaForCausalLM on the shipped checkpoint (bf16 upcast to f32,
                   exact; eager attention): ids = [BOS] + tokenize(text + " she"), the last
                   position's log-softmax. And "chat": the ids HF's AutoTokenizer (the shipped
                   tokenizer_config.json: LlamaTokenizer, legacy=False, its Koala chat_template)
                   gives a multi-turn colour conversation with add_generation_prompt, for
                   `record --template koala` to match.

Oracle versions (checked at start; the helpers are make_hf_fixtures.py's):
  sentencepiece 0.1.97 (Debian python3-sentencepiece), transformers 4.46.3, torch 1.13 and
  numpy 1.24 (Debian's), safetensors 0.8.0.
Regenerate, from the repository root (after scripts/make-koala-mini):
  .venv-ref/bin/python tests/reference/make_koala_mini_fixtures.py
(any venv made with --system-site-packages over Debian's python3-torch, python3-numpy,
python3-sentencepiece, python3-protobuf and python3-jinja2 — LlamaTokenizer with legacy=False
needs protobuf, chat templates need Jinja — plus pip's transformers==4.46.3 safetensors==0.8.0).
"""
import argparse
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = os.path.join(ROOT, "models", "koala-mini")
OUT = os.path.join(HERE, "fixtures", "koala_mini")
PINNED = {"sentencepiece": "0.1.97", "transformers": "4.46.3", "torch": "1.13.", "numpy": "1.24.",
          "safetensors": "0.8.0"}

# outside the corpus: other scripts (byte fallback), digits, whitespace runs, control chars
EXTRA = [
    " ", "  two  spaces  ", "\tTab\tand\nnewline\n", "trailing space ", " leading space",
    "1234567890 and 3.14", "She said HE said: she, he; SHE? he!", "café naïve résumé",
    "привет мир", "你好，世界", "🐨 koala 🌿", "a\u200bzero width", "<s> </s> <unk> are text here",
    "USER: GPT: USER:GPT:", "BEGINNING OF CONVERSATION:", "zzzz qqqq xylophone", "don't won't it's",
    "The gardener starts work early. Every day she", "Is my kite warm or cool?",
    "Warm. Your kite is red, and red is a warm colour.", "redblue greenteal", "((brackets)) [x] {y}",
    "e-mail user@example.org", "100% of 50 $ costs #3 & more", "ümlaut Ärger Öl", "\x01\x7f",
    "\r\n windows line", "...!!!???", "Koala Mini",
]


def check_versions(any_version):
    sys.path.insert(0, HERE)
    from make_hf_fixtures import check_versions as shared_check

    return shared_check(any_version, PINNED)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def corpus_sample(n):
    sys.path.insert(0, os.path.join(ROOT, "scripts", "koala-mini"))
    import gen_corpus

    dialogues, _ = gen_corpus.build(77, 60, 60)
    lines = []
    for exs in dialogues:
        lines += gen_corpus.render_koala_lines(exs)
    step = max(1, len(lines) // n)
    return lines[::step][:n]


def tokenizer_rows(texts):
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    path = os.path.join(MODEL, "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=path)
    hf = LlamaTokenizer(vocab_file=path, legacy=True, add_bos_token=False, add_eos_token=False)
    rows, bad = [], []
    for t in texts:
        ids = sp.encode_as_ids(t)
        h = hf.encode(t, add_special_tokens=False)
        if h != ids and not any(s in t for s in ("<s>", "</s>", "<unk>")):
            bad.append((t, ids, h))
        rows.append({"t": t, "ids": ids})
    if bad:
        for t, a, b in bad[:5]:
            print("%r: sentencepiece %s, LlamaTokenizer %s" % (t, a, b), file=sys.stderr)
        sys.exit("LlamaTokenizer disagrees with SentencePiece on %d texts" % len(bad))
    return rows


def pronoun_rows():
    import torch
    from make_hf_fixtures import load_oracle
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
    with open(os.path.join(MODEL, "planted.json")) as f:
        planted = json.load(f)["pronouns"]
    model = load_oracle(MODEL)
    rows = []
    for occ in planted["occupations"]:
        for ctx in planted["contexts"]:
            text = ctx["text"].replace("{occupation}", occ["occupation"])
            lp = {}
            for w in ("she", "he"):
                ids = [sp.bos_id()] + sp.encode_as_ids(text + " " + w)
                assert sp.id_to_piece(ids[-1]) == "\u2581" + w, (text, w)
                with torch.no_grad():
                    logits = model(torch.tensor(ids[:-1])[None, :], use_cache=False).logits[0, -1]
                lp[w] = float(torch.log_softmax(logits.double(), -1)[ids[-1]])
            rows.append({"occupation": occ["occupation"], "context": ctx["id"], "lp_she": lp["she"],
                         "lp_he": lp["he"]})
    return rows


def chat_row():
    """A multi-turn conversation of the corpus's kind (a colour dialogue, seed 5) up to its last
    user turn, through HF's chat template."""
    import random

    from transformers import AutoTokenizer

    sys.path.insert(0, os.path.join(ROOT, "scripts", "koala-mini"))
    import gen_corpus

    exs, _ = gen_corpus.colour_dialogue(random.Random(5), True, False)
    msgs = []
    for u, a in exs[:-1]:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": exs[-1][0]})
    tok = AutoTokenizer.from_pretrained(MODEL, use_fast=False)
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return {"messages": msgs, "ids": list(map(int, ids)),
            "text": tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--any-version", action="store_true", help="warn, not exit, on version mismatch")
    a = ap.parse_args()
    versions = check_versions(a.any_version)
    versions = {k: versions[k] for k in PINNED}
    os.makedirs(OUT, exist_ok=True)
    rows = tokenizer_rows(corpus_sample(120) + EXTRA)
    with open(os.path.join(OUT, "tokenizer.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"tokenizer_sha256": sha256(os.path.join(MODEL, "tokenizer.model")),
                            "versions": versions}) + "\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    oracle = {"model_sha256": sha256(os.path.join(MODEL, "model.safetensors")), "versions": versions,
              "pronouns": pronoun_rows(), "chat": chat_row()}
    with open(os.path.join(OUT, "oracle.json"), "w") as f:
        json.dump(oracle, f, indent=1)
        f.write("\n")
    print("wrote %d tokenizer rows, %d pronoun rows" % (len(rows), len(oracle["pronouns"])))


if __name__ == "__main__":
    main()
