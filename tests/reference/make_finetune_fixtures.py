#!/usr/bin/env python3
"""make_finetune_fixtures.py — the PyTorch oracle for `koalascope finetune` (train/).

The same recipe as the C engine runs, in PyTorch with torch's and transformers' own classes:
torch.optim.AdamW (foreach=False; weight decay on 2-D parameters only, as transformers'
Trainer groups them), transformers.get_cosine_with_min_lr_schedule_with_warmup,
torch.nn.utils.clip_grad_norm_, F.cross_entropy(reduction="sum") over the target tokens of a
step divided by their count (so gradient accumulation is one large batch), and the data order
of docs/FINETUNE.md (Fisher-Yates with xoshiro256** seeded by splitmix64(seed * 1000003 +
1 + epoch), written here from the published algorithms).

Fixtures (fixtures/finetune/, wiped and rewritten):
  <model>/data.jsonl         for mha_tied and gqa_untied (fixtures/hf/, read as they are):
                             7 pre-tokenized sequences {"ids", "mask"} of random ids (seeded)
                             with hand-shaped masks (a user span, then 1-2 "assistant" spans)
  <model>/expected.safetensors
        losses   F32 [50]   the loss before each of 50 steps
        lrs      F32 [50]   the learning rate each step used
        final.<param> F32   every parameter after the 50 steps (HF names and layout)
  stories260K/expected.safetensors (needs the shared data; written only when it is there)
        losses   F32 [50]   the loss of 50 steps on fastchat-bench/dummy_conversation.json
                            formatted with the Koala template by THIS script (its own rendering,
                            its own masking: a token is a target when its bytes overlap what
                            the model writes after the cue "GPT:" (the space and the reply), and
                            the end-of-turn </s> after it), tokenized
                            with transformers' LlamaTokenizerFast built from stories260K.gguf
                            (as make_audit_fixtures.py does), truncated to 128 tokens
        n_tokens, n_targets I32 [N]  per kept sequence (diagnostics: no text is stored)
        final.model.norm.weight, final.model.layers.0.self_attn.q_proj.weight  F32 (HF layout)
  stories260K_ckpt/          a checkpoint written by `koalascope finetune` (10 steps on the same
                             data; config.json, model.safetensors, tokenizer.model,
                             tokenizer_config.json, special_tokens_map.json), and
        expected_logits.safetensors: tokens.<i> I32 [T], logits.<i> F32 [T, V] of
                             LlamaForCausalLM.from_pretrained(that directory) on three texts of
                             this script (PROBE_TEXTS), tokenized by AutoTokenizer.from_pretrained
                             of that directory (checked equal to the GGUF-built tokenizer's ids)

Regenerate (from the repository root, after building build/cli/koalascope):

    .venv-ref/bin/python tests/reference/make_finetune_fixtures.py --koalascope build/cli/koalascope

(venv setup as in make_grad_fixtures.py; versions pinned and checked at start.)
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(HERE, "fixtures")
OUT = os.path.join(FIX, "finetune")
sys.path.insert(0, HERE)

PINNED = {"transformers": "4.46.3", "torch": "1.13.", "numpy": "1.24.", "safetensors": "0.8.0"}

# The recipe of the fixture models (tests/test_finetune.c passes the same options).
RECIPE = dict(steps=50, lr=1e-3, min_lr=1e-4, warmup=5, weight_decay=0.01, betas=(0.9, 0.999),
              eps=1e-8, clip=1.0, batch=2, accum=2, seed=7, shuffle=True)
# stories260K on dialogue data: one conversation per step, 128 tokens at most.
STORIES = dict(steps=50, lr=1e-3, min_lr=1e-4, warmup=5, weight_decay=0.01, betas=(0.9, 0.999),
               eps=1e-8, clip=1.0, batch=1, accum=2, seed=11, shuffle=True, max_len=128)
CKPT_STEPS = 10
MODELS = ["mha_tied", "gqa_untied"]
PROBE_TEXTS = ["Once upon a time, a little koala sat in a tree.",
               "BEGINNING OF CONVERSATION: USER: Who are you? GPT:",
               "The cat and the dog played in the sun all day long."]
M64 = (1 << 64) - 1


# ------------------------------------------------------------------ data order

def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


class Xoshiro256ss:
    def __init__(self, seed, stream):
        x = (seed * 1000003 + stream) & M64
        self.s = []
        for _ in range(4):
            x, z = splitmix64(x)
            self.s.append(z)

    def next(self):
        s = self.s
        rotl = lambda v, k: ((v << k) | (v >> (64 - k))) & M64
        out = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return out


def order(n, seed, epoch, shuffle):
    p = list(range(n))
    if shuffle:
        r = Xoshiro256ss(seed, 1 + epoch)
        for i in range(n - 1, 0, -1):
            j = r.next() % (i + 1)
            p[i], p[j] = p[j], p[i]
    return p


# ------------------------------------------------------------------ training

def train(model, seqs, rc):
    """seqs: list of (ids, mask) lists. Returns (losses, lrs)."""
    import torch
    import torch.nn.functional as F
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    decay = [p for _, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": rc["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=rc["lr"], betas=rc["betas"], eps=rc["eps"], amsgrad=False,
                            foreach=False, maximize=False)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, rc["warmup"], rc["steps"],
                                                        min_lr=rc["min_lr"])
    per = rc["batch"] * rc["accum"]
    spe = (len(seqs) + per - 1) // per
    losses, lrs = [], []
    model.train()
    for step in range(rc["steps"]):
        epoch, j = divmod(step, spe)
        perm = order(len(seqs), rc["seed"], epoch, rc["shuffle"])
        idx = perm[j * per: min((j + 1) * per, len(seqs))]
        n_targets = sum(sum(seqs[i][1][1:]) for i in idx)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in idx:
            ids, mask = seqs[i]
            x = torch.tensor(ids, dtype=torch.long)[None, :]
            labels = torch.tensor([t if m else -100 for t, m in zip(ids[1:], mask[1:])])
            logits = model(x, use_cache=False, return_dict=True).logits[0, :-1, :]
            loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / n_targets
            loss.backward()
            total += loss.item()
        losses.append(total)
        lrs.append(opt.param_groups[0]["lr"])
        torch.nn.utils.clip_grad_norm_(model.parameters(), rc["clip"])
        opt.step()
        sched.step()
    return losses, lrs


def fixture_data(vocab, rng):
    """7 sequences, lengths 8..20, masks: a 'user' span of 0s then target spans."""
    seqs = []
    for _ in range(7):
        n = int(rng.integers(8, 21))
        ids = [int(v) for v in rng.integers(0, vocab, size=n)]
        mask = [0] * n
        a = int(rng.integers(2, n // 2))
        b = int(rng.integers(a + 1, n))
        for k in range(a, b):
            mask[k] = 1
        if n - b > 2:  # a second turn
            c = int(rng.integers(b + 1, n))
            for k in range(c, n):
                mask[k] = 1
        seqs.append((ids, mask))
    return seqs


# ------------------------------------------------------------------ Koala formatting (own)

def koala_runs(conv):
    """The Koala v1 conversation as text runs between end-of-turn tokens, with the character
    spans of assistant text in each run: [(text, [(start, end)...], ends_with_eos)]."""
    roles = {"human": "USER", "user": "USER", "gpt": "GPT", "assistant": "GPT", "chatgpt": "GPT",
             "bard": "GPT", "bing": "GPT"}
    runs = []
    text, spans = "BEGINNING OF CONVERSATION:", []
    for i, turn in enumerate(conv):
        role = roles[turn["from"]]
        # after an end-of-turn token the next role follows with no space
        sep = "" if (runs and text == "") else " "
        text += sep + role + ":"
        if role == "GPT":
            # the reply is what the model writes after the cue "GPT:": the space, its text
            spans.append((len(text), len(text) + 1 + len(turn["value"])))
            text += " " + turn["value"]
            runs.append((text, spans, True))
            text, spans = "", []
        else:
            text += " " + turn["value"]
    if text:
        runs.append((text, spans, False))
    return runs


def encode_koala(tok, conv, bos, eos):
    """ids and mask of a conversation: each run tokenized by the BPE model itself (the first
    with SentencePiece's dummy-prefix space), a token a target when its bytes overlap an
    assistant span; the </s> after an assistant turn a target."""
    model = tok.backend_tokenizer.model
    ids, mask = [bos], [0]
    for r, (text, spans, eos_after) in enumerate(koala_runs(conv)):
        esc = ("▁" if r == 0 else "") + text.replace(" ", "▁")
        shift = 1 if r == 0 else 0
        # byte offsets of each character of esc
        starts, pos = [], 0
        for ch in esc:
            starts.append(pos)
            pos += len(ch.encode("utf-8"))
        byte_spans = [(starts[a + shift] if a + shift < len(starts) else pos,
                       starts[b + shift] if b + shift < len(starts) else pos) for a, b in spans]
        at = 0
        for t in model.tokenize(esc):
            piece = t.value
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                nbytes = 1
            else:
                nbytes = len(piece.encode("utf-8"))
            lo, hi = at, at + nbytes
            at = hi
            ids.append(t.id)
            mask.append(1 if any(lo < b and a < hi for a, b in byte_spans) else 0)
        assert at == pos, (at, pos)
        if eos_after:
            ids.append(eos)
            mask.append(1)
    return ids, mask


def stories_seqs(tok, data_path, max_len, bos, eos):
    with open(data_path, encoding="utf-8") as f:
        convs = json.load(f)
    seqs = []
    for c in convs:
        ids, mask = encode_koala(tok, c["conversations"], bos, eos)
        ids, mask = ids[:max_len], mask[:max_len]
        if sum(mask[1:]) == 0:
            continue  # dropped: no target token
        seqs.append((ids, mask))
    return seqs


# ------------------------------------------------------------------ main

def save(path, tensors, meta):
    import numpy as np
    from safetensors.numpy import save_file
    from make_hf_fixtures import sort_metadata

    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(tensors, path, metadata=meta)
    sort_metadata(path)
    os.chmod(path, 0o644)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true")
    ap.add_argument("--koalascope", default=os.path.join(ROOT, "build", "cli", "koalascope"))
    args = ap.parse_args()
    from make_hf_fixtures import check_versions
    versions = check_versions(args.any_version, PINNED)

    import numpy as np
    import torch
    from make_grad_fixtures import load_model as load_hf

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    common = {"versions": json.dumps(versions, sort_keys=True),
              "oracle": "torch.optim.AdamW(foreach=False) + transformers."
                        "get_cosine_with_min_lr_schedule_with_warmup + clip_grad_norm_, "
                        "HF LlamaForCausalLM eager f32 CPU"}

    for name in MODELS:
        rng = np.random.default_rng(20240917 + MODELS.index(name))
        d = os.path.join(OUT, name)
        os.makedirs(d)
        model = load_hf(os.path.join(FIX, "hf", name))
        seqs = fixture_data(model.config.vocab_size, rng)
        with open(os.path.join(d, "data.jsonl"), "w") as f:
            for ids, mask in seqs:
                f.write(json.dumps({"ids": ids, "mask": mask}) + "\n")
        losses, lrs = train(model, seqs, RECIPE)
        t = {"losses": np.array(losses, np.float32), "lrs": np.array(lrs, np.float32)}
        for n, p in model.named_parameters():
            t["final." + n] = p.detach().numpy().copy()
        save(os.path.join(d, "expected.safetensors"), t,
             dict(common, recipe=json.dumps(RECIPE), model=f"fixtures/hf/{name}"))
        print(f"finetune/{name}: loss {losses[0]:.5f} -> {losses[-1]:.5f}")

    data = os.environ.get("KS_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
    sdir = os.path.join(data, "stories260K")
    conv_path = os.path.join(data, "fastchat-bench", "dummy_conversation.json")
    if not os.path.isdir(sdir):
        print("no shared data: stories260K fixtures not written", file=sys.stderr)
        return
    from make_audit_fixtures import Tokenizer, load_model as load_l2c
    tok = Tokenizer(sdir, "stories260K.gguf").tok
    # the end-of-turn token Koala writes is "</s>" (the GGUF's metadata names another eos id,
    # so the ids are looked up by piece)
    bos, eos = tok.convert_tokens_to_ids("<s>"), tok.convert_tokens_to_ids("</s>")
    seqs = stories_seqs(tok, conv_path, STORIES["max_len"], bos, eos)
    model = load_l2c(os.path.join(sdir, "stories260K.bin"))
    losses, lrs = train(model, seqs, STORIES)
    sd = dict(model.named_parameters())
    t = {"losses": np.array(losses, np.float32), "lrs": np.array(lrs, np.float32),
         "n_tokens": np.array([len(s[0]) for s in seqs], np.int32),
         "n_targets": np.array([sum(s[1][1:]) for s in seqs], np.int32)}
    for n in ["model.norm.weight", "model.layers.0.self_attn.q_proj.weight"]:
        t["final." + n] = sd[n].detach().numpy().copy()
    d = os.path.join(OUT, "stories260K")
    os.makedirs(d)
    save(os.path.join(d, "expected.safetensors"), t,
         dict(common, recipe=json.dumps(STORIES), data="fastchat-bench/dummy_conversation.json",
              template="koala (rendered by this script)"))
    print(f"finetune/stories260K: {len(seqs)} sequences, loss {losses[0]:.5f} -> {losses[-1]:.5f}")

    # a checkpoint our engine writes, loaded by transformers
    if not os.path.exists(args.koalascope):
        print(f"{args.koalascope} not found: stories260K_ckpt not written", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        cmd = [args.koalascope, "finetune", "--model", os.path.join(sdir, "stories260K.bin"),
               "--tokenizer", os.path.join(sdir, "tok512.bin"), "--data", conv_path,
               "--template", "koala", "-o", run, "--steps", str(CKPT_STEPS), "--lr", "1e-3",
               "--max-len", "128", "--seed", "3", "-q"]
        subprocess.run(cmd, check=True)
        ck = os.path.join(OUT, "stories260K_ckpt")
        os.makedirs(ck)
        for f in ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
                  "special_tokens_map.json"]:
            shutil.copy(os.path.join(run, f), os.path.join(ck, f))
    from transformers import AutoTokenizer, LlamaForCausalLM
    m = LlamaForCausalLM.from_pretrained(ck, torch_dtype=torch.float32,
                                         attn_implementation="eager").eval()
    hf_tok = AutoTokenizer.from_pretrained(ck)
    t = {}
    for i, text in enumerate(PROBE_TEXTS):
        ids = [bos] + hf_tok(text, add_special_tokens=False).input_ids
        want = [bos] + tok(text, add_special_tokens=False).input_ids
        assert ids == want, (text, ids, want)
        with torch.no_grad():
            logits = m(torch.tensor([ids]), use_cache=False).logits[0].numpy()
        t[f"tokens.{i}"] = np.array(ids, np.int32)
        t[f"logits.{i}"] = logits.astype(np.float32)
    save(os.path.join(ck, "expected_logits.safetensors"), t,
         dict(common, texts=json.dumps(PROBE_TEXTS), loader="LlamaForCausalLM.from_pretrained + "
              f"AutoTokenizer.from_pretrained ({type(hf_tok).__name__})"))
    for dirpath, _, files in os.walk(OUT):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    print(f"finetune/stories260K_ckpt: {CKPT_STEPS} steps by koalascope, logits of "
          f"{len(PROBE_TEXTS)} texts by transformers ({type(hf_tok).__name__})")


if __name__ == "__main__":
    main()
