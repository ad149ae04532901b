#!/usr/bin/env python3
"""make_hf_fixtures.py — build the oracle fixtures of tests/test_reference.c.

Small random LLaMA models are saved as HF checkpoints (config.json + safetensors) and as
GGUF files, and HF transformers' LlamaForCausalLM (eager attention, f32, CPU) is run on a few
token prompts to record what the C engine must reproduce: logits, hidden states and attention
patterns. See tests/reference/README.md for the list of models and the file layout.

Regenerate (from the repository root; .venv* is git-ignored):

    /usr/bin/python3 -m venv --system-site-packages .venv-ref
    .venv-ref/bin/pip install transformers==4.46.3 gguf==0.19.0 safetensors==0.8.0
    .venv-ref/bin/python tests/reference/make_hf_fixtures.py

torch (1.13) and numpy come from Debian (python3-torch, python3-numpy), which is why the venv
sees the system site-packages and why transformers is pinned to a release that still runs on
torch 1.13 and already has rope_type "llama3" and config.head_dim. The versions are checked
at start; the script refuses to run on others (pass --any-version to try anyway: the
fixtures will then differ in the last bits, and the C tolerances decide whether that matters).

Everything is seeded and single-threaded, so a rerun with the pinned versions rewrites the
same bytes.

What expected.safetensors holds, per prompt p (0 .. n_prompts-1; n_prompts is in the
header's __metadata__):
  tokens.p         I32 [T]
  logits.p         F32 [T, V]
  hidden_states.p  F32 [L+1, T, D]  HF's output_hidden_states: index 0 is the embeddings,
                   index i (1 <= i < L) the output of layer i-1; so hidden_states[i] for i < L
                   is TransformerLens blocks.i.hook_resid_pre. The LAST entry, index L, is the
                   output of the final RMSNorm (HF appends it after model.norm), i.e.
                   ln_final.hook_normalized — not blocks.(L-1).hook_resid_post.
  attentions.p     F32 [L, H, T, T]  softmax pattern = blocks.l.attn.hook_pattern.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PINNED = {
    "transformers": "4.46.3",
    "torch": "1.13.",  # Debian's python3-torch (1.13.0a0+gitunknown): prefix match
    "numpy": "1.24.",  # Debian's python3-numpy: prefix match
    "safetensors": "0.8.0",
    "gguf": "0.19.0",
}

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")

# ------------------------------------------------------------------ the models
#
# initializer_range is well above HF's 0.02 so that activations are O(1) and attention
# patterns are far from uniform; RMSNorm weights are randomised (HF starts them at 1) so that
# a loader that swaps attn_norm/ffn_norm, or drops the final norm, shows.
BASE = dict(num_hidden_layers=2, initializer_range=0.15, rms_norm_eps=1e-5, rope_theta=10000.0,
            attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
            tie_word_embeddings=False, max_position_embeddings=256)

MODELS = [
    # (a) multi-head attention, tied input/output embeddings
    dict(name="mha_tied", hidden_size=32, intermediate_size=80, num_attention_heads=4,
         num_key_value_heads=4, vocab_size=300, tie_word_embeddings=True, rms_norm_eps=1e-6,
         max_position_embeddings=128),
    # (b) grouped-query attention (8 query heads over 2 KV heads), untied, Llama-3 theta
    dict(name="gqa_untied", hidden_size=64, intermediate_size=160, num_attention_heads=8,
         num_key_value_heads=2, vocab_size=320, rope_theta=500000.0),
    # (c) linear rope scaling (old-style "type" key; HF adds "rope_type" beside it)
    dict(name="rope_linear", hidden_size=32, intermediate_size=96, num_attention_heads=4,
         num_key_value_heads=2, vocab_size=272, max_position_embeddings=512,
         rope_scaling={"type": "linear", "factor": 4.0}),
    # (d) llama3 rope scaling; head_dim 16 gives wavelengths 6.3 (< 64/4: kept), 19.9 and
    #     62.8 (between 16 and 64: smoothed) and 199.. (> 64: divided by factor)
    dict(name="rope_llama3", hidden_size=64, intermediate_size=128, num_attention_heads=4,
         num_key_value_heads=2, vocab_size=96, max_position_embeddings=512, rope_theta=10000.0,
         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    # (e) dynamic NTK; max_position_embeddings 16 < prompt lengths 17 and 23, so the base
    #     grows, differently for each of those prompts (HF uses seq_len = last position + 1)
    dict(name="rope_dynamic", hidden_size=32, intermediate_size=64, num_attention_heads=4,
         num_key_value_heads=4, vocab_size=80, max_position_embeddings=16,
         rope_scaling={"type": "dynamic", "factor": 2.0}, prompt_lens=(6, 17, 23)),
    # (f) weights stored as F16 (the oracle runs in f32 on the upcast stored values)
    dict(name="f16_gqa", hidden_size=32, intermediate_size=96, num_attention_heads=4,
         num_key_value_heads=2, vocab_size=128, dtype="float16"),
    # (g) weights stored as BF16
    dict(name="bf16_mha", hidden_size=32, intermediate_size=80, num_attention_heads=4,
         num_key_value_heads=4, vocab_size=128, dtype="bfloat16"),
    # (h) sharded checkpoint: model.safetensors.index.json + several shards
    dict(name="sharded", hidden_size=48, intermediate_size=128, num_attention_heads=6,
         num_key_value_heads=3, vocab_size=128, max_shard_size="40KB"),
    # (i) head_dim (16) != hidden_size / num_attention_heads (8): q_proj is (64, 32)
    dict(name="head_dim", hidden_size=32, intermediate_size=96, num_attention_heads=4,
         num_key_value_heads=2, head_dim=16, vocab_size=112),
]

# GGUF exports: (model, storage). "f32" reuses the HF expected.safetensors (same math);
# the others get their own expected file computed from the weights as the GGUF stores them.
# Skipped: rope_llama3 (llama.cpp bakes llama3 scaling into a rope_freqs tensor, a different
# mechanism) and rope_dynamic (llama.cpp has no dynamic NTK).
GGUFS = [
    ("gqa_untied", "f32"),
    ("mha_tied", "f16"),
    ("gqa_untied", "q8_0"),
    ("rope_linear", "f32"),
    ("gqa_untied", "q4_0"),
    ("gqa_256", "q4_k"),
    ("gqa_256", "q4_k_m"),
]

# Models exported to GGUF only: their HF checkpoint is built in a temporary directory and not
# kept (it would be megabytes of f32), only the GGUF and its expected outputs are.
# (j) Q4_K needs rows of whole 256-element super-blocks, so d_model and d_mlp are multiples
#     of 256; initializer_range is halved (0.075) so that, at 4x gqa_untied's width, the
#     activations stay O(1) as in the other models.
GGUF_ONLY_MODELS = [
    dict(name="gqa_256", hidden_size=256, intermediate_size=512, num_attention_heads=8,
         num_key_value_heads=2, vocab_size=272, initializer_range=0.075),
]

# What each GGUF storage does with the 2-D tensors (1-D norms are always F32, as llama.cpp
# stores them): one GGML type for every matrix, or "q4_k", llama.cpp's Q4_K_S/Q4_K_M idea of
# Q4_K everywhere (token_embd included) but a wider type for output.weight (llama.cpp uses
# Q6_K there; Q8_0 stands in), or "q4_k_m", shaped like the Q4_K_M files people download:
# Q4_K everywhere (token_embd included) except attn_v, ffn_down and output.weight, Q6_K.
STORAGE_FTYPE = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0",
                 "q4_0": "MOSTLY_Q4_0", "q4_k": "MOSTLY_Q4_K_S", "q4_k_m": "MOSTLY_Q4_K_M"}

# The q4_k_m tensors kept at Q6_K (by GGUF name, without the blk.N. prefix). llama.cpp's
# Q4_K_M picks attn_v and ffn_down layers by a use_more_bits rule; here every layer's are Q6_K.
Q4_K_M_Q6_K = ("attn_v.weight", "ffn_down.weight", "output.weight")

DEFAULT_PROMPT_LENS = (5, 11, 19)


def check_versions(any_version, pinned=None):
    """The installed versions of the pinned packages (PINNED, or the caller's own table: the
    other fixture scripts share this check); exits on a mismatch unless any_version."""
    import importlib.metadata as md

    import numpy
    import torch

    pinned = PINNED if pinned is None else pinned
    have = {"torch": torch.__version__, "numpy": numpy.__version__}
    for k in pinned:
        if k not in have:
            have[k] = md.version(k)
    bad = []
    for k, want in pinned.items():
        ok = have[k].startswith(want) if want.endswith(".") else have[k] == want
        if not ok:
            bad.append(f"{k} {have[k]} (pinned {want})")
    if bad:
        msg = "version mismatch: " + ", ".join(bad)
        if not any_version:
            sys.exit(msg + "\nsee the docstring for the setup, or pass --any-version")
        print("warning: " + msg, file=sys.stderr)
    return have


# ------------------------------------------------------------------ HF side

def make_config(spec):
    from transformers import LlamaConfig

    kw = dict(BASE)
    for k, v in spec.items():
        if k in ("name", "dtype", "max_shard_size", "prompt_lens"):
            continue
        kw[k] = v
    cfg = LlamaConfig(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def build_and_save(spec, out_dir):
    import torch
    from transformers import LlamaForCausalLM

    cfg = make_config(spec)
    torch.manual_seed(SEED + sum(map(ord, spec["name"])))
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    dtype = spec.get("dtype", "float32")
    model = model.to(getattr(torch, dtype))
    model.config.torch_dtype = getattr(torch, dtype)

    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True,
                          max_shard_size=spec.get("max_shard_size", "1GB"))
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)


def load_oracle(model_dir):
    """The saved checkpoint, upcast to f32 (exact for f16/bf16 storage), eager attention."""
    import torch
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                         attn_implementation="eager")
    return m.float().eval()


def make_prompts(spec):
    import numpy as np

    rng = np.random.default_rng(SEED + 7 * sum(map(ord, spec["name"])))
    lens = spec.get("prompt_lens", DEFAULT_PROMPT_LENS)
    return [rng.integers(0, spec["vocab_size"], size=n).astype(np.int32) for n in lens]


def run_oracle(model_factory, prompts):
    """Each prompt alone (batch 1, no padding). model_factory() gives a fresh model per prompt,
    because HF's dynamic-NTK rotary embedding keeps state (max_seq_len_cached) between calls."""
    import numpy as np
    import torch

    out = {}
    for p, ids in enumerate(prompts):
        model = model_factory()
        with torch.no_grad():
            r = model(torch.tensor(ids, dtype=torch.long)[None, :], use_cache=False,
                      output_hidden_states=True, output_attentions=True, return_dict=True)
        out[f"tokens.{p}"] = ids.astype(np.int32)
        out[f"logits.{p}"] = r.logits[0].float().numpy().astype(np.float32)
        out[f"hidden_states.{p}"] = torch.stack([h[0] for h in r.hidden_states]).numpy()
        out[f"attentions.{p}"] = torch.stack([a[0] for a in r.attentions]).numpy()
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def write_expected(path, tensors, n_prompts, oracle, versions):
    from safetensors.numpy import save_file

    meta = {
        "n_prompts": str(n_prompts),
        "oracle": oracle,
        "layout": "hidden_states[i<L] = blocks.i.hook_resid_pre; hidden_states[L] = "
                  "ln_final.hook_normalized; attentions[l] = blocks.l.attn.hook_pattern",
        "versions": json.dumps(versions, sort_keys=True),
    }
    save_file(tensors, path, metadata=meta)
    sort_metadata(path)


def sort_metadata(path):
    """safetensors writes __metadata__ in hash-map order, which changes from run to run;
    rewrite the header with the keys sorted (same length, so the data offsets stand) so that
    regenerating gives the same bytes."""
    import struct

    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        head["__metadata__"] = dict(sorted(head["__metadata__"].items()))
        text = json.dumps(head, separators=(",", ":")).encode()
        if len(text) > n:
            raise RuntimeError(f"{path}: re-serialised header is longer than the original")
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


# ------------------------------------------------------------------ GGUF side

def hf_to_interleaved(w, n_head, head_dim):
    """HF q_proj/k_proj rows hold each head as (all first halves of the rotary pairs, then
    all second halves): pair j is rows (j, j + head_dim/2). GGUF (like Meta's checkpoints)
    stores pair j as rows (2j, 2j+1). Returns the rows in GGUF order."""
    import numpy as np

    half = head_dim // 2
    order = np.empty(n_head * head_dim, dtype=np.int64)
    for h in range(n_head):
        for j in range(half):
            order[h * head_dim + 2 * j] = h * head_dim + j
            order[h * head_dim + 2 * j + 1] = h * head_dim + half + j
    return w[order], order


def gguf_tokenizer(vocab_size):
    """A minimal SentencePiece-style llama vocabulary: <unk>, <s>, </s>, the 256 byte
    pieces, then filler pieces (distinct strings) up to vocab_size."""
    import gguf

    if vocab_size < 3 + 256:
        raise ValueError("a GGUF llama vocabulary needs at least 259 entries")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    fill = [c for c in letters] + ["\u2581" + c for c in letters]
    fill += ["\u2581" + a + b for a in letters for b in letters]
    n_fill = vocab_size - len(tokens)
    tokens += fill[:n_fill]
    types += [gguf.TokenType.NORMAL] * n_fill
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(n_fill)]
    return tokens, scores, [int(t) for t in types]


def quantize_q4_k(a):
    """Q4_K blocks for the rows of a (rows, cols), cols a multiple of 256: gguf-py 0.19.0 can
    dequantise Q4_K but not quantise it, so this is a small, plain quantiser of our own. It
    only has to produce valid blocks, not llama.cpp's (error-minimising) choice of them: the
    oracle runs on gguf.quants.dequantize() of the bytes returned here, so gguf-py's decoder,
    not ours, defines the expected values.

    A block is 256 elements, 8 sub-blocks of 32, in 144 bytes:
      d, dmin  f16 each (4 bytes)
      scales   12 bytes: 6-bit scale sc_j and 6-bit min m_j of sub-block j; for j < 4,
               byte j = sc_j | (sc_{j+4} >> 4) << 6, byte j+4 = m_j | (m_{j+4} >> 4) << 6,
               byte j+8 = (sc_{j+4} & 15) | (m_{j+4} & 15) << 4
      qs       128 bytes: sub-blocks 2p and 2p+1 share bytes 32p..32p+31, element l of 2p is
               the low nibble of byte 32p+l, element l of 2p+1 its high nibble
    and decodes as x = d*sc_j * q - dmin*m_j.
    The choice: sub-block j spans [lo_j, hi_j] with lo_j = min(0, min x), hi_j = max x; its
    step is (hi_j - lo_j)/15 and its offset -lo_j >= 0; d and dmin are the largest step and
    offset over the block / 63, rounded to f16; sc_j, m_j = step, offset / d, dmin rounded to
    nearest (clipped to 0..63); q = (x + dmin*m_j) / (d*sc_j) rounded to nearest, clipped to
    0..15. The largest scale and min of every block are thus ~63, so the top two bits of the
    6-bit fields, packed apart from the low four for sub-blocks 4..7, are exercised."""
    import numpy as np

    rows, cols = a.shape
    if cols % 256:
        raise ValueError(f"Q4_K rows must be whole 256-element blocks, not {cols}")
    x = a.astype(np.float32).reshape(-1, 8, 32)
    nb = x.shape[0]
    lo = np.minimum(x.min(axis=-1), np.float32(0))
    step = (x.max(axis=-1) - lo) / np.float32(15)
    off = -lo
    d = (step.max(axis=-1) / np.float32(63)).astype("<f2")
    dmin = (off.max(axis=-1) / np.float32(63)).astype("<f2")
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(step / d32), 0).clip(0, 63).astype(np.uint8)
        mn = np.where(dmin32 > 0, np.rint(off / dmin32), 0).clip(0, 63).astype(np.uint8)
        dl = (d32 * sc.astype(np.float32))[..., None]  # as the decoder forms them
        ml = (dmin32 * mn.astype(np.float32))[..., None]
        q = np.where(dl > 0, np.rint((x + ml) / dl), 0).clip(0, 15).astype(np.uint8)
    scales = np.empty((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(nb, 128)
    blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2),
                             scales, qs], axis=1)
    assert blocks.shape == (nb, 144)

    # Sanity, with gguf-py as the decoder: the bytes decode to the input within half a step
    # plus what rounding sc and m costs (a mis-packed field would be off by about the size of
    # the weights), and
    # the fields the C decoder has to get right are all exercised.
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    back = dequantize(blocks, GGMLQuantizationType.Q4_K).reshape(nb, 8, 32)
    bound = dl / 2 + 8 * d32[..., None] + dmin32[..., None]
    if not (np.abs(back - x) <= bound).all():
        raise AssertionError("Q4_K: gguf-py decodes our blocks far from the input")
    if not ((sc[:, 4:] >= 16).any() and (mn[:, 4:] >= 16).any() and (sc[:, :4] >= 16).any()
            and (mn[:, :4] >= 16).any() and (q == 0).any() and (q == 15).any()):
        raise AssertionError("Q4_K: the blocks do not exercise every bit of the packing")
    return blocks.reshape(rows, cols // 256 * 144)


def quantize_q6_k(a):
    """Q6_K blocks for the rows of a (rows, cols), cols a multiple of 256: gguf-py 0.19.0 can
    dequantise Q6_K but not quantise it, so this is a small, plain quantiser of our own (not
    llama.cpp's error-minimising search). As for Q4_K, only the bytes matter: the oracle runs
    on gguf.quants.dequantize() of the bytes returned here.

    A block is 256 elements, 16 sub-blocks of 16, in 210 bytes:
      ql      128 bytes: the low 4 bits of the 6-bit q; element e = 128h + 64s + i (h, s in
              0..1, i in 0..63) is nibble s (0 low, 1 high) of byte 64h + i
      qh      64 bytes: the high 2 bits; element e = 128h + 32k + i (k in 0..3, i in 0..31) is
              bits 2k..2k+1 of byte 32h + i
      scales  16 int8: scale sc_j of sub-block j (elements 16j..16j+15), signed
      d       f16
    and decodes as x = d * sc_j * (q - 32), q in 0..63.
    The choice: m_j is the element of sub-block j with the largest magnitude and its signed
    step is -m_j / 32, so that m_j lands on q - 32 = -32 (the negative end, whatever its
    sign: sub-blocks led by a positive value get a negative scale); d is the block's largest
    |step| / 127 rounded UP to f16 (at these weights' size often an f16 subnormal);
    sc_j = sign(step_j) * ceil(|step_j| / d), clipped to -127..127, so |d*sc_j| >= |step_j|
    and nothing but the +32 end clips; q = x / (d*sc_j) rounded to nearest, + 32, clipped to
    0..63. Scales of both signs and of magnitude 127, q = 0 and q = 63 thus all occur."""
    import numpy as np

    rows, cols = a.shape
    if cols % 256:
        raise ValueError(f"Q6_K rows must be whole 256-element blocks, not {cols}")
    x = a.astype(np.float32).reshape(-1, 16, 16)
    nb = x.shape[0]
    lead = np.take_along_axis(x, np.abs(x).argmax(axis=-1)[..., None], axis=-1)[..., 0]
    step = -lead / np.float32(32)
    dwant = np.abs(step).max(axis=-1) / np.float32(127)
    d = dwant.astype("<f2")
    # round up, not to nearest: with weights ~0.3, d ~ 4e-5 is an f16 subnormal (spacing
    # 6e-8), and a d rounded down would push |step| / d past 127
    d = np.where(d.astype(np.float32) < dwant, np.nextafter(d, np.float16(np.inf)), d)
    d = d.astype("<f2")
    d32 = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(d32 > 0, np.ceil(np.abs(step) / d32), 0).clip(0, 127)
        sc = (np.sign(step) * mag).astype(np.int8)
        dl = (d32 * sc.astype(np.float32))[..., None]  # as the decoder forms them
        q = (np.where(dl != 0, np.rint(x / dl), 0) + 32).clip(0, 63).astype(np.uint8)
    qf = q.reshape(nb, 256)
    lo4, hi2 = qf & 15, qf >> 4
    lo4 = lo4.reshape(nb, 2, 2, 64)  # [h, s, i]
    ql = (lo4[:, :, 0, :] | (lo4[:, :, 1, :] << 4)).reshape(nb, 128)
    hi2 = hi2.reshape(nb, 2, 4, 32)  # [h, k, i]
    qh = (hi2[:, :, 0, :] | (hi2[:, :, 1, :] << 2) | (hi2[:, :, 2, :] << 4)
          | (hi2[:, :, 3, :] << 6)).reshape(nb, 64)
    blocks = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(nb, 2)],
                            axis=1)
    assert blocks.shape == (nb, 210)

    # Sanity, with gguf-py as the decoder: the bytes decode to the input within one step of
    # the sub-block (half a step from rounding, a whole one only where +32 clips to +31); a
    # mis-packed nibble or 2-bit pair would be off by several steps, a wrong scale sign by up
    # to 64. And the fields the C decoder has to get right are all exercised: both scale
    # signs, |scale| 127, q 0 and 63, every value of the 2-bit high parts.
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    back = dequantize(blocks, GGMLQuantizationType.Q6_K).reshape(nb, 16, 16)
    bound = np.abs(dl) * np.float32(1.001) + np.float32(1e-30)
    if not (np.abs(back - x) <= bound).all():
        raise AssertionError("Q6_K: gguf-py decodes our blocks far from the input")
    if not ((sc < 0).any() and (sc > 0).any() and (np.abs(sc.astype(int)) == 127).any()
            and (q == 0).any() and (q == 63).any()
            and all((hi2 == v).any() for v in range(4))):
        raise AssertionError("Q6_K: the blocks do not exercise every bit of the packing")
    return blocks.reshape(rows, cols // 256 * 210)

def write_gguf(path, model_dir, name, storage):
    """Write the HF checkpoint at model_dir as a llama GGUF, laid out as llama.cpp's
    convert_hf_to_gguf lays out a llama model. Returns {hf tensor name: f32 array as stored
    (dequantised, back in HF row order)} for building the oracle."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    sd = {}
    for f in sorted(os.listdir(model_dir)):
        if f.endswith(".safetensors") and f != "expected.safetensors":
            # via torch: numpy has no bfloat16
            for k, v in load_file(os.path.join(model_dir, f)).items():
                sd[k] = v.float().numpy()

    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    hd = cfg.get("head_dim") or D // H
    L, V = cfg["num_hidden_layers"], cfg["vocab_size"]
    Q = gguf.GGMLQuantizationType
    ftype = gguf.LlamaFileType[STORAGE_FTYPE[storage]]

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_vocab_size(V)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(hd)
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    if hd != D // H:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    rs = cfg.get("rope_scaling")
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "linear":
            raise ValueError(f"{name}: rope scaling {kind} is not exported to GGUF")
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rs["factor"])
    w.add_file_type(int(ftype))
    tokens, scores, types = gguf_tokenizer(V)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    stored = {}

    def put(gname, hf_name, perm_heads=None):
        a = sd[hf_name].astype(np.float32)
        order = None
        if perm_heads is not None:
            a, order = hf_to_interleaved(a, perm_heads, hd)
        # llama.cpp: 1-D tensors (norms) stay F32 whatever the file type
        if a.ndim == 1 or storage == "f32":
            data, back = a, a
        elif storage == "f16":
            data = a.astype(np.float16)
            back = data.astype(np.float32)
        else:
            qt = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_k": Q.Q4_K, "q4_k_m": Q.Q4_K}[storage]
            if storage == "q4_k" and gname == "output.weight":
                qt = Q.Q8_0  # llama.cpp keeps the output wider (Q6_K) in its Q4_K files
            base = gname.split(".", 2)[2] if gname.startswith("blk.") else gname
            if storage == "q4_k_m" and base in Q4_K_M_Q6_K:
                qt = Q.Q6_K
            if qt == Q.Q4_K:
                data = quantize_q4_k(a)
            elif qt == Q.Q6_K:
                data = quantize_q6_k(a)
            else:
                data = quantize(a, qt)
            back = dequantize(data, qt).astype(np.float32).reshape(a.shape)
        w.add_tensor(gname, np.ascontiguousarray(data),
                     raw_dtype=qt if data.dtype == np.uint8 else None)
        if order is not None:
            unperm = np.empty_like(back)
            unperm[order] = back
            back = unperm
        stored[hf_name] = back

    put("token_embd.weight", "model.embed_tokens.weight")
    put("output_norm.weight", "model.norm.weight")
    if "lm_head.weight" in sd:  # tied checkpoints have none; llama.cpp then reuses token_embd
        put("output.weight", "lm_head.weight")
    for i in range(L):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight")
        put(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", perm_heads=H)
        put(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", perm_heads=Hkv)
        put(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight")
        put(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight")
        put(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight")
        put(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight")
        put(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight")
        put(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight")

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def oracle_from_stored(model_dir, stored):
    """The HF model of model_dir with every weight replaced by the GGUF's stored values."""
    import torch

    m = load_oracle(model_dir)
    sd = m.state_dict()
    with torch.no_grad():
        for k, v in stored.items():
            sd[k].copy_(torch.from_numpy(v))
        if m.config.tie_word_embeddings:
            assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    return m


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()
    versions = check_versions(args.any_version)

    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    hf_root = os.path.join(FIX, "hf")
    gguf_root = os.path.join(FIX, "gguf")
    for d in (hf_root, gguf_root):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)

    oracle_hf = ("HF transformers LlamaForCausalLM, attn_implementation=eager, float32 on CPU, "
                 "weights as stored in the checkpoint upcast to f32")
    prompts = {}
    for spec in MODELS:
        d = os.path.join(hf_root, spec["name"])
        build_and_save(spec, d)
        prompts[spec["name"]] = make_prompts(spec)
        exp = run_oracle(lambda: load_oracle(d), prompts[spec["name"]])
        write_expected(os.path.join(d, "expected.safetensors"), exp, len(prompts[spec["name"]]),
                       oracle_hf, versions)
        print(f"hf/{spec['name']}: {len(prompts[spec['name']])} prompts")

    # GGUF-only models: HF checkpoints in a temporary directory, dropped at the end
    tmp = tempfile.TemporaryDirectory(prefix="ks-fixtures-")
    model_dirs = {spec["name"]: os.path.join(hf_root, spec["name"]) for spec in MODELS}
    for spec in GGUF_ONLY_MODELS:
        d = os.path.join(tmp.name, spec["name"])
        build_and_save(spec, d)
        model_dirs[spec["name"]] = d
        prompts[spec["name"]] = make_prompts(spec)

    for name, storage in GGUFS:
        d = model_dirs[name]
        gpath = os.path.join(gguf_root, f"{name}.{storage}.gguf")
        stored = write_gguf(gpath, d, name, storage)
        if storage == "f32":
            print(f"gguf/{name}.{storage}.gguf (expected: hf/{name}/expected.safetensors)")
            continue
        what = {"f16": "every 2-D weight rounded to f16 as stored",
                "q8_0": "every 2-D weight replaced by gguf.quants dequantize(quantize(w, Q8_0)), "
                        "as stored",
                "q4_0": "every 2-D weight replaced by gguf.quants dequantize(quantize(w, Q4_0)), "
                        "as stored",
                "q4_k": "token_embd and every layer matrix replaced by gguf.quants "
                        "dequantize(w_q, Q4_K) of the Q4_K blocks stored (made by "
                        "make_hf_fixtures.quantize_q4_k), output.weight by gguf.quants "
                        "dequantize(quantize(w, Q8_0))",
                "q4_k_m": "attn_v, ffn_down and output.weight replaced by gguf.quants "
                          "dequantize(w_q, Q6_K) of the Q6_K blocks stored (made by "
                          "make_hf_fixtures.quantize_q6_k), token_embd and every other layer "
                          "matrix by gguf.quants dequantize(w_q, Q4_K) of the Q4_K blocks "
                          "stored (made by make_hf_fixtures.quantize_q4_k)"}[storage]
        exp = run_oracle(lambda: oracle_from_stored(d, stored), prompts[name])
        write_expected(os.path.join(gguf_root, f"{name}.{storage}.expected.safetensors"), exp,
                       len(prompts[name]),
                       "HF transformers LlamaForCausalLM, eager, float32 on CPU, with " + what +
                       "; 1-D norms f32", versions)
        print(f"gguf/{name}.{storage}.gguf (+ expected)")
    tmp.cleanup()

    # safetensors writes 0600 files; make them plain readable data like the rest of the tree
    for root in (hf_root, gguf_root):
        for dirpath, _, files in os.walk(root):
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)


if __name__ == "__main__":
    main()
