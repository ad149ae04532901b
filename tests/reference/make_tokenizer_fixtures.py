#!/usr/bin/env python3
"""make_tokenizer_fixtures.py — oracle fixtures for tests/test_tokenizer.c.

What it writes (tests/reference/fixtures/tokenizer/):
  llama_corpus.jsonl  one JSON object per line: {"t": text, "ids": [...]} and, when
                      DecodeIds(ids) != text, "d": DecodeIds(ids). Ids are SentencePiece's
                      EncodeAsIds (no BOS) with the LLaMA tokenizer.model from the shared data.
  llama_decode.jsonl  {"ids": [...], "d": DecodeIds(ids)} for random id sequences (control
                      tokens, <unk>, byte pieces that form invalid UTF-8, plain pieces).
  tiny.model          a tiny SentencePiece BPE model (byte_fallback, identity normalizer,
                      two user-defined pieces) trained here on a synthetic corpus.
  tiny.json           the same model converted to a Hugging Face tokenizer.json by
                      transformers' LlamaConverter (legacy normalizer: Prepend + Replace).
  tiny_corpus.jsonl   {"t": text, "sp": SentencePiece ids, "hf": HF tokenizers ids} (both
                      without BOS) for corpus strings without special-token look-alikes
                      (HF matches "<s>" etc. in text, SentencePiece does not).

Every string is generated here from word lists and generators written for this script;
nothing is copied from the shared data sets. The generator is seeded, so a rerun gives the
same corpus.

Oracle versions (checked at start):
  sentencepiece 0.1.97 (Debian python3-sentencepiece), tokenizers 0.20.3,
  transformers 4.46.3, protobuf 3.20.3.
Regenerate, from the repository root:
  /usr/bin/python3 -m venv --system-site-packages .venv-ref
  .venv-ref/bin/pip install tokenizers==0.20.3 transformers==4.46.3 protobuf==3.20.3
  .venv-ref/bin/python tests/reference/make_tokenizer_fixtures.py
The shared data is found at $KS_SHARED_DATA (default ../shared/data from the repository root).
"""
import io
import json
import os
import random
import sys

import sentencepiece as spm

PINNED = {"sentencepiece": "0.1.97", "tokenizers": "0.20.3", "transformers": "4.46.3",
          "protobuf": "3.20.3"}

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "fixtures", "tokenizer")
SHARED = os.environ.get("KS_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")

# ------------------------------------------------------------------ word lists (written here)
LATIN = """the a of and to in is was for on that with as by at from it this be are or an
have not but had his her they you we she he were which their been has more one all would
there when who will no if out so what up about into than them can only other new some
could time these two may then do first any my now such like our over man me even most
made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still
own see men work long get here between both life being under never day same another know
while last might us great old year off come since against go came right used take three
koala eucalyptus marsupial branch sleepy leaf forest ranger tokenizer sentence piece byte
merge score vocabulary decode encode stream prompt model weight tensor layer attention
""".split()
ACCENTED = """café naïve résumé façade jalapeño über straße Müller Ærø smörgåsbord déjà vu
crème brûlée señor año niño Ångström Łódź Škoda Dvořák Øresund Þór Ğazi İstanbul şeker
ağaç fiancée coöperate piñata Zürich Köln Bräunlich émigré élève garçon ça où là""".split()
CYRILLIC = "привет мир коала дерево лист сон медведь язык слово текст Москва Ёлка щука".split()
GREEK = "γεια σου κόσμε αλφάβητο λέξη δέντρο Ωμέγα ψυχή φιλοσοφία".split()
ARABIC = "مرحبا بالعالم شجرة كلمة لغة الكوالا نص عربي".split()
HEBREW = "שלום עולם עץ מילה שפה".split()
HINDI = "नमस्ते दुनिया पेड़ शब्द भाषा कोआला".split()
THAI = "สวัสดี ชาวโลก ต้นไม้ คำ ภาษา".split()
KHMER = "សួស្តី ពិភពលោក ដើមឈើ ពាក្យ ភាសា ខ្មែរ".split()
CJK = "你好 世界 树叶 考拉 睡觉 语言 模型 日本語 こんにちは カタカナ ひらがな 안녕하세요 세계 한국어 漢字".split()
VIET = "Xin chào thế giới cây lá ngôn ngữ Việt Nam tiếng".split()
EMOJI = ["😀", "🐨", "🌿", "🔥", "👍", "🎉", "❤️", "🚀", "🇦🇺", "🇯🇵", "✨", "🤖", "🧪", "☕", "⭐"]
SKIN = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
ZWJ = ["👩\u200d💻", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "👩🏽\u200d🔬", "🧑\u200d🤝\u200d🧑",
       "🐻\u200d❄️", "👁️\u200d🗨️"]
COMBINING = ["\u0301", "\u0300", "\u0308", "\u0327", "\u030a", "\u0323", "\u0331", "\u20dd",
             "\u0489", "\u0336"]
PUNCT = list(".,;:!?-—–'\"()[]{}<>/\\|@#$%^&*_+=~`…«»‹›„“”‘’¡¿§¶•·")
LOOKALIKES = ["<s>", "</s>", "<unk>", "<pad>", "<0x41>", "<0x0A>", "<0xFF>", "<0x00>", "▁",
              "▁▁", "<s", "s>", "</", "<|endoftext|>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",
              "⁇", "\ufffd"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \t ", "\u00a0", "\u3000", "\u2009",
          "\u200b", "\f", "\v"]
CODE = [
    "int main(void) {{ return {n}; }}",
    "for (i = 0; i < {n}; i++) {{\n    sum += a[i];\n}}",
    "def {w}(x, y={n}):\n    return x ** 2 + y",
    "if ({w} != NULL && {w}->len > {n}) {{ free({w}); }}",
    "SELECT {w}, COUNT(*) FROM t WHERE id = {n} GROUP BY {w};",
    "const {w} = () => {{ console.log(`{w}: ${{{n}}}`); }};",
    "<div class=\"{w}\">{n}</div>",
    "#include <stdio.h>\n#define N {n}\n",
    "{{\"{w}\": [{n}, true, null, \"x\\ny\"]}}",
    "$ ls -la ./{w} | grep -v '^d' | wc -l",
    "fn {w}(&mut self) -> Result<u{n}, Error> {{ Ok(0) }}",
    "    \t{w} := make([]int, {n})",
    "x = re.sub(r'\\s+', ' ', {w})  # {n}",
]
ALL_WORDS = (LATIN, ACCENTED, CYRILLIC, GREEK, ARABIC, HEBREW, HINDI, THAI, KHMER, CJK, VIET)


def rand_codepoint(r):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1780, 0x17FF), (0x2000, 0x206F),
              (0x2190, 0x23FF), (0x2500, 0x27BF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0xFB00, 0xFB4F), (0xFE00, 0xFE0F),
              (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x10000, 0x1007F), (0x20000, 0x2A6DF),
              (0xE0000, 0xE007F), (0x10FF00, 0x10FFFF), (0x0, 0x1F)]
    lo, hi = r.choice(ranges)
    return chr(r.randint(lo, hi))


def word(r):
    lst = r.choice(ALL_WORDS)
    w = r.choice(lst)
    k = r.random()
    if k < 0.1:
        w = w.capitalize()
    elif k < 0.15:
        w = w.upper()
    elif k < 0.2:
        w = w + r.choice(COMBINING)
    return w


def sentence(r, n=None):
    n = n or r.randint(1, 14)
    parts = []
    for _ in range(n):
        parts.append(word(r))
        parts.append(r.choice([" "] * 8 + [", ", ". ", " - ", "  ", "\t", "\n"]))
    s = "".join(parts)
    return s.rstrip() if r.random() < 0.7 else s


def gen_whitespace(r):
    bits = [r.choice(SPACES) * r.randint(1, 4) for _ in range(r.randint(1, 5))]
    if r.random() < 0.6:
        bits.insert(r.randint(0, len(bits)), word(r))
    return "".join(bits)


def gen_lead_trail(r):
    return r.choice(SPACES) * r.randint(0, 3) + sentence(r, r.randint(1, 4)) + \
        r.choice(SPACES) * r.randint(0, 3)


def gen_script(r):
    lst = r.choice(ALL_WORDS)
    return " ".join(r.choice(lst) for _ in range(r.randint(1, 10)))


def gen_emoji(r):
    out = []
    for _ in range(r.randint(1, 6)):
        k = r.random()
        if k < 0.3:
            out.append(r.choice(EMOJI))
        elif k < 0.5:
            out.append(r.choice(["👍", "👋", "🙌", "👩", "🧑"]) + r.choice(SKIN))
        elif k < 0.75:
            out.append(r.choice(ZWJ))
        else:
            out.append(word(r))
        out.append(r.choice(["", " ", "  ", "\n"]))
    return "".join(out)


def gen_digits(r):
    k = r.random()
    if k < 0.4:
        return "".join(r.choice("0123456789") for _ in range(r.randint(1, 24)))
    if k < 0.7:
        return f"{r.randint(0, 10**6)}.{r.randint(0, 999):03d} {word(r)} {r.randint(-50, 50)}%"
    return " ".join(str(r.randint(0, 10 ** r.randint(1, 12))) for _ in range(r.randint(1, 6)))


def gen_code(r):
    t = r.choice(CODE)
    return t.format(w=r.choice(["buf", "koala", "x1", "tokens", "_tmp", "Node"]),
                    n=r.randint(0, 4096))


def gen_punct(r):
    return "".join(r.choice(PUNCT + [" ", word(r)]) for _ in range(r.randint(1, 20)))


def gen_lookalike(r):
    parts = []
    for _ in range(r.randint(1, 6)):
        parts.append(r.choice(LOOKALIKES) if r.random() < 0.5 else word(r))
        parts.append(r.choice(["", " ", "\n"]))
    return "".join(parts)


def gen_long_word(r):
    k = r.random()
    if k < 0.3:
        return r.choice("abcxyzé语▁ ") * r.randint(20, 400)
    if k < 0.6:
        return "".join(r.choice(r.choice(ALL_WORDS)) for _ in range(r.randint(5, 30)))
    return "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(30, 200)))


def gen_random_cp(r):
    return "".join(rand_codepoint(r) for _ in range(r.randint(1, 24)))


def gen_combining(r):
    base = r.choice("aeiouAEIOUnczsyαβ")
    return "".join(base + "".join(r.choice(COMBINING) for _ in range(r.randint(0, 4)))
                   for _ in range(r.randint(1, 8)))


def gen_mixed(r):
    gens = [gen_whitespace, gen_script, gen_emoji, gen_digits, gen_code, gen_punct,
            gen_lookalike, gen_random_cp, gen_combining, sentence]
    return r.choice(["", " ", "\n", "  "]).join(r.choice(gens)(r) for _ in range(r.randint(2, 5)))


def gen_long(r):
    return "\n".join(gen_mixed(r) for _ in range(r.randint(15, 30)))


GENERATORS = [(gen_whitespace, 200), (gen_lead_trail, 200), (gen_script, 300), (gen_emoji, 150),
              (gen_digits, 150), (gen_code, 120), (gen_punct, 120), (gen_lookalike, 200),
              (gen_long_word, 80), (gen_random_cp, 200), (gen_combining, 100), (sentence, 200),
              (gen_mixed, 300), (gen_long, 4)]

FIXED = ["", " ", "  ", "\t", "\n", "a", "▁", "▁▁▁", " ▁ ", "<s>", "</s>", "<unk>", "<0x41>",
         "<s>hello</s>", " <s> ", "hello world", " hello world", "hello  world", "hello world ",
         "\u00e9", "e\u0301", "\ud55c\uad6d\uc5b4", "\u200d", "👨\u200d👩\u200d👧", "\U0010ffff",
         "\x00", "\x00\x01\x7f", "\r", "\ufffd", "\ufeff", "x" * 1000]


def corpus(seed=20240601):
    r = random.Random(seed)
    out = list(FIXED)
    for g, n in GENERATORS:
        out.extend(g(r) for _ in range(n))
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def dump_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def check_versions(need_hf):
    import importlib
    mods = ["sentencepiece"] + (["tokenizers", "transformers", "google.protobuf"] if need_hf else [])
    for m in mods:
        v = importlib.import_module(m).__version__
        key = "protobuf" if m == "google.protobuf" else m
        if v != PINNED[key]:
            sys.exit(f"{m} {v} found, fixtures are pinned to {PINNED[key]}")


def llama_fixtures(texts):
    model = os.path.join(SHARED, "llama-tokenizer", "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    rows = []
    for t in texts:
        ids = sp.encode_as_ids(t)
        row = {"t": t, "ids": ids}
        d = sp.decode_ids(ids)
        if d != t:
            row["d"] = d
        rows.append(row)
    dump_jsonl(os.path.join(OUT, "llama_corpus.jsonl"), rows)

    r = random.Random(7)
    drows = []
    n = sp.get_piece_size()
    for i in range(400):
        ids = []
        for _ in range(r.randint(0, 16)):
            k = r.random()
            if k < 0.15:
                ids.append(r.choice([0, 1, 2]))
            elif k < 0.55:
                ids.append(3 + r.choice([0x20, 0x41, 0x0A, 0xE4, 0xB8, 0xAD, 0xF0, 0x9F, 0x90,
                                         0xA8, 0x80, 0xC3, 0xA9, 0xFF, 0xC0, 0xED, 0x00]))
            elif k < 0.7:
                ids.append(r.choice([259, 29871, 268, 1678]))  # ▁▁ ▁ ▁▁▁▁ ▁▁▁
            else:
                ids.append(r.randrange(259, n))
        drows.append({"ids": ids, "d": sp.decode_ids(ids)})
    dump_jsonl(os.path.join(OUT, "llama_decode.jsonl"), drows)
    return len(rows), len(drows)


def tiny_fixtures(texts):
    from tokenizers import Tokenizer
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    r = random.Random(99)
    train = [" ".join(r.choice(LATIN + ACCENTED[:10]) for _ in range(r.randint(3, 15)))
             for _ in range(3000)]
    train += ["<tool> koala @@ leaf", "x <tool> y"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train), model_writer=buf, model_type="bpe", vocab_size=420,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=True, allow_whitespace_only_pieces=True,
        split_digits=True, user_defined_symbols=["<tool>", "@@"], num_threads=1,
        minloglevel=2)
    model_path = os.path.join(OUT, "tiny.model")
    with open(model_path, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_file=model_path)

    slow = LlamaTokenizer(vocab_file=model_path, legacy=True)
    fast = convert_slow_tokenizer(slow)
    json_path = os.path.join(OUT, "tiny.json")
    fast.save(json_path)
    hf = Tokenizer.from_file(json_path)

    # HF matches added tokens in the raw text and normalizes the text between them one
    # segment at a time (Prepend "▁" to each), so it differs from SentencePiece wherever an
    # added token occurs; those strings carry only the SentencePiece oracle.
    extra = ["<tool>", "x <tool> y", "a@@b", " @@ ", "x<tool>y  <tool>", "@@@", "<tool<tool>>",
             "koala <tool>\n@@ leaf", "<to ol>", "@ @"]
    rows = []
    for t in extra + [t for t in texts if len(t) <= 1500][:450]:
        row = {"t": t, "sp": sp.encode_as_ids(t)}
        if not any(s in t for s in ("<s>", "</s>", "<unk>", "<tool>", "@@")):
            row["hf"] = hf.encode(t, add_special_tokens=False).ids
        rows.append(row)
    dump_jsonl(os.path.join(OUT, "tiny_corpus.jsonl"), rows)
    with_hf = [row for row in rows if "hf" in row]
    agree = sum(row["sp"] == row["hf"] for row in with_hf)
    return len(rows), len(with_hf), agree


def main():
    need_hf = "--llama-only" not in sys.argv
    check_versions(need_hf)
    os.makedirs(OUT, exist_ok=True)
    texts = corpus()
    n, nd = llama_fixtures(texts)
    print(f"llama: {n} corpus strings, {nd} decode sequences")
    if need_hf:
        n, nhf, agree = tiny_fixtures(texts)
        print(f"tiny: {n} strings; {nhf} with an HF oracle, on which sentencepiece and HF "
              f"tokenizers agree for {agree}")


if __name__ == "__main__":
    main()
