#!/usr/bin/env python3
"""make_grad_fixtures.py — build the gradient oracle for the C engine's backward pass.

For the f32 HF checkpoints that make_hf_fixtures.py wrote (fixtures/hf/<name>/, read as they
are, not regenerated), HF transformers' LlamaForCausalLM (eager attention, f32, CPU) is run on
one prompt of that model's expected.safetensors (tokens.0; tokens.1 for rope_dynamic, so the
dynamic-NTK base grows) and autograd records the
gradients the C engine's backward must reproduce: of every parameter, of the logits and of
every hidden state, for two scalar objectives; and, for gqa_untied only, the losses of a
50-step AdamW training run. Output: fixtures/grad/<name>/expected_grad.safetensors (the
folder is wiped and rewritten; no model files are copied there, the C test reads the model
from fixtures/hf/<name>/). See tests/reference/README.md for the layout.

Regenerate (from the repository root; .venv* is git-ignored):

    /usr/bin/python3 -m venv --system-site-packages .venv-ref
    .venv-ref/bin/pip install transformers==4.46.3 gguf==0.19.0 safetensors==0.8.0
    .venv-ref/bin/python tests/reference/make_grad_fixtures.py

(make_hf_fixtures.py must have been run first: the models and prompts come from fixtures/hf/.)
torch (1.13) and numpy come from Debian (python3-torch, python3-numpy), as for
make_hf_fixtures.py. The versions are checked at start; the script refuses to run on others
(pass --any-version to try anyway: the fixtures will then differ in the last bits).

Everything is seeded and single-threaded (deterministic algorithms), and the safetensors
metadata is written in sorted order, so a rerun with the pinned versions rewrites the same
bytes.

Objectives, with tokens = that prompt of hf/<name>/expected.safetensors (T tokens) and
logits = the model's [T, V] logits on them:
  J  = sum_{t=0}^{T-2} log_softmax(logits[t])[tokens[t+1]]  (log-probability of the prompt's
       own continuation)
  J2 = logits[T-1][A] - logits[T-1][B], A = 5, B = 7  (a logit difference; separate backward)

What expected_grad.safetensors holds:
  tokens            I32 [T]
  objective         F32 [1]          J
  dlogits           F32 [T, V]       dJ/dlogits (row T-1 is zero: J does not read it)
  grad.<param>      F32 [...]        dJ/dparam, named as model.named_parameters() names them
                                     (model.embed_tokens.weight, model.layers.{l}.self_attn.
                                     q_proj.weight, ..., model.norm.weight, lm_head.weight when
                                     untied), same shape as the parameter (HF layout, [out, in]
                                     for linear weights)
  dhidden           F32 [L+1, T, D]  dJ/dhidden_states[i], HF's output_hidden_states: index 0 the
                                     embeddings, index i (1 <= i < L) the input of layer i,
                                     index L the output of the final RMSNorm
  objective2        F32 [1]          J2
  dhidden2          F32 [L+1, T, D]  dJ2/dhidden_states[i]
  adamw_losses      F32 [50]         gqa_untied only: the loss before each of 50 AdamW steps
                                     (see ADAMW below) from the checkpoint's weights
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PINNED = {
    "transformers": "4.46.3",
    "torch": "1.13.",  # Debian's python3-torch (1.13.0a0+gitunknown): prefix match
    "numpy": "1.24.",  # Debian's python3-numpy: prefix match
    "safetensors": "0.8.0",
}

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")

# The f32 checkpoints of make_hf_fixtures.py (f16_gqa, bf16_mha and sharded are left out:
# their math is that of the others, only the storage differs).
MODELS = ["mha_tied", "gqa_untied", "head_dim", "rope_linear", "rope_llama3", "rope_dynamic"]

# J2 = logits[T-1][LOGIT_A] - logits[T-1][LOGIT_B]
LOGIT_A, LOGIT_B = 5, 7

# Training smoke oracle (gqa_untied only): loss = mean cross-entropy of tokens[t+1] from
# position t, t = 0..T-2 (= -J / (T-1)); the loss is recorded before each step.
ADAMW_MODEL = "gqa_untied"
ADAMW = dict(steps=50, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def check_versions(any_version):
    from make_hf_fixtures import check_versions as shared_check

    return shared_check(any_version, PINNED)


def load_model(model_dir):
    """The saved f32 checkpoint, eager attention, eval mode (no dropout anyway: the
    configs have attention_dropout 0). A fresh model per pass: HF's dynamic-NTK rotary
    embedding keeps state between calls."""
    import torch
    from transformers import LlamaForCausalLM

    m = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                         attn_implementation="eager")
    m = m.float().eval()
    for p in m.parameters():
        assert p.dtype == torch.float32
    return m


# The prompt of each model's expected.safetensors that the gradients are taken on: the first,
# except for rope_dynamic, whose second prompt (17 tokens) runs past max_position_embeddings
# (16), so that dynamic NTK actually grows the rotary base in the differentiated forward.
PROMPT_KEY = {"rope_dynamic": "tokens.1"}


def first_prompt(model_dir, key="tokens.0"):
    from safetensors.numpy import load_file

    ids = load_file(os.path.join(model_dir, "expected.safetensors"))[key]
    assert ids.ndim == 1 and str(ids.dtype) == "int32", (ids.dtype, ids.shape)
    return ids


def forward(model, ids):
    """Logits [T, V] and the L+1 hidden states [T, D], all with retain_grad() (the
    hidden_states HF returns are the very tensors of the graph in 4.46: checked below)."""
    import torch

    r = model(torch.tensor(ids, dtype=torch.long)[None, :], use_cache=False,
              output_hidden_states=True, return_dict=True)
    hs = list(r.hidden_states)
    assert len(hs) == model.config.num_hidden_layers + 1
    for h in hs:
        assert h.requires_grad and h.grad_fn is not None
        h.retain_grad()
    r.logits.retain_grad()
    return r.logits, hs


def objective_logprob(logits, ids):
    """J = sum_{t<T-1} log_softmax(logits[t])[ids[t+1]]."""
    import torch

    lp = torch.log_softmax(logits[0, :-1, :], dim=-1)
    tgt = torch.tensor(ids[1:], dtype=torch.long)
    return lp.gather(1, tgt[:, None]).sum()


def grads_J(model_dir, ids):
    import numpy as np
    import torch

    model = load_model(model_dir)
    model.zero_grad(set_to_none=True)
    logits, hs = forward(model, ids)
    J = objective_logprob(logits, ids)
    J.backward()

    out = {"objective": np.array([J.item()], dtype=np.float32),
           "dlogits": logits.grad[0].numpy().copy()}
    names = []
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert p.grad.shape == p.shape
        out[f"grad.{name}"] = p.grad.numpy().copy()
        names.append(name)
    for i, h in enumerate(hs):
        assert h.grad is not None, f"hidden_states[{i}].grad is None: retain_grad did not work"
    out["dhidden"] = torch.stack([h.grad[0] for h in hs]).numpy().copy()

    # hidden_states[0] is the embedding output used by the graph: the embedding gradient is
    # its gradient scattered by token id (plus, when tied, the lm_head contribution
    # dlogits^T @ hidden_states[L]). In float64 to keep the check's own rounding small.
    emb = model.model.embed_tokens.weight.grad.double()
    want = torch.zeros_like(emb)
    want.index_add_(0, torch.tensor(ids, dtype=torch.long), hs[0].grad[0].double())
    if model.config.tie_word_embeddings:
        assert "lm_head.weight" not in names
        want += logits.grad[0].double().t() @ hs[-1].detach()[0].double()
    else:
        assert "lm_head.weight" in names
        # untied: lm_head's gradient is dlogits^T @ hidden_states[L] too
        lm = model.lm_head.weight.grad.double()
        lm_want = logits.grad[0].double().t() @ hs[-1].detach()[0].double()
        err = (lm - lm_want).abs().max().item()
        assert err <= 1e-5 * max(1.0, lm_want.abs().max().item()), f"lm_head grad check: {err}"
    err = (emb - want).abs().max().item()
    scale = max(1.0, want.abs().max().item())
    assert err <= 1e-5 * scale, f"embedding grad != scattered hidden_states[0].grad: {err}"
    # and hidden_states[L] is the final norm's output: its grad is dlogits @ lm_head.weight
    want = logits.grad[0].double() @ model.lm_head.weight.detach().double()
    err = (hs[-1].grad[0].double() - want).abs().max().item()
    assert err <= 1e-5 * max(1.0, want.abs().max().item()), f"hidden_states[L] grad check: {err}"
    return out, names, model.config


def grads_J2(model_dir, ids):
    import numpy as np
    import torch

    model = load_model(model_dir)
    logits, hs = forward(model, ids)
    J2 = logits[0, -1, LOGIT_A] - logits[0, -1, LOGIT_B]
    J2.backward()
    for i, h in enumerate(hs):
        assert h.grad is not None, f"hidden_states[{i}].grad is None"
    return {"objective2": np.array([J2.item()], dtype=np.float32),
            "dhidden2": torch.stack([h.grad[0] for h in hs]).numpy().copy()}


def adamw_losses(model_dir, ids):
    import numpy as np
    import torch
    import torch.nn.functional as F

    model = load_model(model_dir)
    model.train()  # attention_dropout is 0: same math as eval
    opt = torch.optim.AdamW(model.parameters(), lr=ADAMW["lr"], betas=ADAMW["betas"],
                            eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"],
                            amsgrad=False, foreach=False, maximize=False)
    x = torch.tensor(ids, dtype=torch.long)[None, :]
    tgt = torch.tensor(ids[1:], dtype=torch.long)
    losses = []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad(set_to_none=True)
        logits = model(x, use_cache=False, return_dict=True).logits
        loss = F.cross_entropy(logits[0, :-1, :], tgt, reduction="mean")
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return np.array(losses, dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()
    versions = check_versions(args.any_version)

    import numpy as np
    import torch
    from safetensors.numpy import save_file

    sys.path.insert(0, HERE)
    from make_hf_fixtures import sort_metadata

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)

    hf_root = os.path.join(FIX, "hf")
    grad_root = os.path.join(FIX, "grad")
    if os.path.isdir(grad_root):
        shutil.rmtree(grad_root)
    os.makedirs(grad_root)

    oracle = ("HF transformers LlamaForCausalLM, attn_implementation=eager, float32 on CPU, "
              "torch autograd; weights of fixtures/hf/<model>/ as stored (f32)")
    for name in MODELS:
        src = os.path.join(hf_root, name)
        key = PROMPT_KEY.get(name, "tokens.0")
        ids = first_prompt(src, key)
        T = int(ids.shape[0])
        gJ, names, cfg = grads_J(src, ids)
        gJ2 = grads_J2(src, ids)
        tensors = {"tokens": ids.astype(np.int32)}
        tensors.update(gJ)
        tensors.update(gJ2)
        meta = {
            "model": name,
            "model_dir": f"fixtures/hf/{name}",
            "prompt": key + " of fixtures/hf/" + name + "/expected.safetensors",
            "oracle": oracle,
            "objective": "J = sum_{t=0}^{T-2} log_softmax(logits[t])[tokens[t+1]]",
            "objective2": f"J2 = logits[T-1][a] - logits[T-1][b], a = {LOGIT_A}, b = {LOGIT_B}",
            "objective2_a": str(LOGIT_A),
            "objective2_b": str(LOGIT_B),
            "dhidden_layout": "HF output_hidden_states: index 0 = embeddings output, index i "
                              "(1 <= i < L) = input of layer i, index L = output of the final "
                              "RMSNorm",
            "n_layers": str(cfg.num_hidden_layers),
            "T": str(T),
            "vocab_size": str(cfg.vocab_size),
            "hidden_size": str(cfg.hidden_size),
            "tie_word_embeddings": str(bool(cfg.tie_word_embeddings)).lower(),
            "params": json.dumps(names),
            "versions": json.dumps(versions, sort_keys=True),
            "torch_version": versions["torch"],
            "transformers_version": versions["transformers"],
        }
        if name == ADAMW_MODEL:
            tensors["adamw_losses"] = adamw_losses(src, ids)
            meta.update({
                "adamw": "torch.optim.AdamW(lr, betas, eps, weight_decay; amsgrad=False, "
                         "foreach=False), from the checkpoint's weights; loss = mean "
                         "cross-entropy of tokens[t+1] from logits[t], t = 0..T-2 (= -J/(T-1)); "
                         "adamw_losses[k] = the loss before step k",
                "adamw_steps": str(ADAMW["steps"]),
                "adamw_lr": repr(ADAMW["lr"]),
                "adamw_betas": json.dumps(list(ADAMW["betas"])),
                "adamw_eps": repr(ADAMW["eps"]),
                "adamw_weight_decay": repr(ADAMW["weight_decay"]),
            })
        tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
        for k, v in tensors.items():
            if k != "tokens":
                assert v.dtype == np.float32 and np.all(np.isfinite(v)), k
        d = os.path.join(grad_root, name)
        os.makedirs(d)
        path = os.path.join(d, "expected_grad.safetensors")
        save_file(tensors, path, metadata=meta)
        sort_metadata(path)
        extra = ""
        if name == ADAMW_MODEL:
            a = tensors["adamw_losses"]
            extra = f", adamw loss {a[0]:.6f} -> {a[-1]:.6f}"
        print(f"grad/{name}: T={T} V={cfg.vocab_size} J={gJ['objective'][0]:.6f} "
              f"J2={gJ2['objective2'][0]:.6f}, {len(names)} params{extra}")

    # safetensors writes 0600 files; make them plain readable data like the rest of the tree
    for dirpath, _, files in os.walk(grad_root):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


if __name__ == "__main__":
    main()
