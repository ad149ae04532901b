#!/usr/bin/python3
"""train_tokenizer.py — koala-mini's SentencePiece BPE tokenizer, trained on the generated corpus.

Usage: train_tokenizer.py TEXT OUT.model [--vocab N]

Needs Debian's python3-sentencepiece (0.1.97; `apt-get install python3-sentencepiece`): a
regeneration tool, not needed to build or test koalascope. The settings make the result a
function of the text alone: one thread, the whole text used (no sampling, no shuffling), a
BPE trainer, which draws no random numbers. The model is LLaMA's layout (<unk> 0, <s> 1,
</s> 2, byte fallback on: any text encodes, outside the corpus's alphabet as <0xNN> bytes),
so model/tokenizer_load.c and Hugging Face's LlamaTokenizer both read it.
"""
import argparse
import io
import sys

import sentencepiece as spm

PINNED = "0.1.97"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("text")
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=1024)
    a = ap.parse_args()
    if spm.__version__ != PINNED:
        print("train_tokenizer.py: warning: sentencepiece %s, the shipped model was made with %s"
              % (spm.__version__, PINNED), file=sys.stderr)
    buf = io.BytesIO()
    with open(a.text, encoding="utf-8") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(f.read().splitlines()), model_writer=buf, model_type="bpe",
            vocab_size=a.vocab, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=True, split_digits=True, num_threads=1,
            input_sentence_size=0, shuffle_input_sentence=False, hard_vocab_limit=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    with open(a.out, "wb") as f:
        f.write(buf.getvalue())


if __name__ == "__main__":
    main()
