#!/usr/bin/env python3
"""make_diff_fixtures.py — the oracle of `koalascope diff` (tests/test_diff.c).

Base model: the `head_dim` fixture of make_hf_fixtures.py (fixtures/hf/head_dim: 2 layers,
d_model 32, 4 query heads over 2 KV heads of head_dim 16, untied output, vocab 112). Tuned
model: a copy whose layer 1 (every tensor of it: both norms, q, k, v, o, gate, up, down) has
seeded Gaussian noise added (0.05 x the tensor's own RMS x N(0, 1)), saved as an HF checkpoint in
fixtures/diff/head_dim_l1/. Nothing else differs, so layer 0 is bit-identical in both.

Prompts: three token-id prompts (5, 11 and 19 ids, seeded, < vocab), fixtures/diff/prompts.jsonl
({"id", "tokens"}: the models have no tokenizer).

The oracle: HF transformers LlamaForCausalLM (eager attention, f32, CPU), each prompt alone,
forward hooks on each decoder layer (its output = blocks.l.hook_resid_post), on self_attn (its
output = hook_attn_out) and on mlp (hook_mlp_out), output_attentions (hook_pattern), logits.
Measures are computed with NumPy in float64 from those f32 tensors, as docs/DIFF.md defines them:

  cka[s][l]   linear CKA of the pooled rows (every token of every prompt) of base X and tuned Y,
              both centred by their pooled mean: ||X'Y||_F^2 / (||X'X||_F ||Y'Y||_F)
              (computed here from the N x N Gram form, <K_X, K_Y> / (||K_X|| ||K_Y||), which is
              the same number, so the C side's d x d accumulation is checked against the other form)
  cos[s][l]   mean over tokens of cos(x_t, y_t)
  js[l][h]    mean over every query row of every prompt of JS(p_base, p_tuned) in bits
  tv[l][h]    mean over the same rows of 0.5 sum |p_base - p_tuned|
  lens_kl[l]  mean over tokens of KL(tuned || base) in nats of softmax(lm_head(norm(resid_post)))
              with each model's own final norm and lm_head
  lens_top1[l] share of tokens whose lens argmax agree; final_kl, final_top1 on the real logits
  weights     per parameter tensor ||W_tuned - W_base||_F and ||W_base||_F (f64 over f32)

Written to fixtures/diff/expected.json (with versions). Regenerate from the repository root:

    .venv-ref/bin/python tests/reference/make_diff_fixtures.py

(the venv of make_hf_fixtures.py: transformers 4.46.3, Debian's torch 1.13 and numpy 1.24.)
Seeded and single-threaded: a rerun rewrites the same bytes.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
BASE_DIR = os.path.join(FIX, "hf", "head_dim")
OUT = os.path.join(FIX, "diff")
TUNED_DIR = os.path.join(OUT, "head_dim_l1")
PERTURBED_LAYER = 1
SEED = 20241010
PROMPT_LENS = (5, 11, 19)

PINNED = {
    "transformers": "4.46.3",
    "torch": "1.13.",
    "numpy": "1.24.",
    "safetensors": "0.8.0",
}


def check_versions(any_version):
    sys.path.insert(0, HERE)
    from make_hf_fixtures import check_versions as shared_check

    return shared_check(any_version, PINNED)


def load(model_dir):
    sys.path.insert(0, HERE)
    from make_grad_fixtures import load_model

    return load_model(model_dir)


def make_tuned(base):
    import torch

    g = torch.Generator().manual_seed(SEED)
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    prefix = "model.layers.%d." % PERTURBED_LAYER
    for k in sorted(sd):
        if k.startswith(prefix):
            w = sd[k]
            rms = w.pow(2).mean().sqrt()
            sd[k] = w + 0.05 * rms * torch.randn(w.shape, generator=g, dtype=w.dtype)
    if os.path.isdir(TUNED_DIR):
        shutil.rmtree(TUNED_DIR)
    tuned = load(BASE_DIR)
    tuned.load_state_dict(sd)
    tuned.save_pretrained(TUNED_DIR, safe_serialization=True)
    # save_pretrained records where the base was loaded from: keep it repository-relative
    cfg_path = os.path.join(TUNED_DIR, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["_name_or_path"] = os.path.relpath(BASE_DIR, os.path.dirname(os.path.dirname(HERE)))
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    for extra in ("generation_config.json",):
        p = os.path.join(TUNED_DIR, extra)
        if os.path.exists(p):
            os.remove(p)
    return load(TUNED_DIR)


def run(model, ids):
    """resid_post, attn_out, mlp_out [L][T, D], patterns [L][H, T, T], logits [T, V] (f32)."""
    import torch

    L = model.config.num_hidden_layers
    got = {"resid": [None] * L, "attn": [None] * L, "mlp": [None] * L}
    hooks = []
    for l, layer in enumerate(model.model.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, i, o, l=l: got["resid"].__setitem__(l, o[0][0].detach().clone())))
        hooks.append(layer.self_attn.register_forward_hook(
            lambda m, i, o, l=l: got["attn"].__setitem__(l, o[0][0].detach().clone())))
        hooks.append(layer.mlp.register_forward_hook(
            lambda m, i, o, l=l: got["mlp"].__setitem__(l, o[0].detach().clone())))
    with torch.no_grad():
        r = model(torch.tensor([ids], dtype=torch.long), use_cache=False, output_attentions=True,
                  return_dict=True)
    for h in hooks:
        h.remove()
    out = {k: [t.numpy() for t in v] for k, v in got.items()}
    out["pattern"] = [a[0].numpy() for a in r.attentions]
    out["logits"] = r.logits[0].numpy()
    with torch.no_grad():  # the lens: this model's own final norm and lm_head
        out["lens"] = [model.lm_head(model.model.norm(torch.from_numpy(x))).numpy()
                       for x in out["resid"]]
    return out


def log_softmax(z):
    import numpy as np

    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def kl_rows(zt, zb):
    import numpy as np

    lt, lb = log_softmax(zt), log_softmax(zb)
    return (np.exp(lt) * (lt - lb)).sum(axis=-1)


def cka_gram(X, Y):
    import numpy as np

    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    KX, KY = X @ X.T, Y @ Y.T
    return float((KX * KY).sum() / (np.linalg.norm(KX) * np.linalg.norm(KY)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--any-version", action="store_true")
    args = ap.parse_args()
    versions = check_versions(args.any_version)
    import numpy as np
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    base = load(BASE_DIR)
    tuned = make_tuned(base)
    cfg = base.config
    L, H, V = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.vocab_size
    rng = np.random.default_rng(SEED)
    prompts = [[int(x) for x in rng.integers(3, V, size=n)] for n in PROMPT_LENS]
    with open(os.path.join(OUT, "prompts.jsonl"), "w") as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"id": "p%d" % i, "tokens": p}) + "\n")

    runs = [(run(base, p), run(tuned, p)) for p in prompts]
    exp = {"streams": ["resid_post", "attn_out", "mlp_out"], "n_layers": L, "n_heads": H,
           "n_tokens": sum(PROMPT_LENS), "perturbed_layer": PERTURBED_LAYER}
    cka, cos = [], []
    for key in ("resid", "attn", "mlp"):
        rc, rs = [], []
        for l in range(L):
            X = np.concatenate([b[key][l] for b, _ in runs]).astype(np.float64)
            Y = np.concatenate([t[key][l] for _, t in runs]).astype(np.float64)
            rc.append(cka_gram(X, Y))
            c = (X * Y).sum(1) / np.sqrt((X * X).sum(1) * (Y * Y).sum(1))
            rs.append(float(c.mean()))
        cka.append(rc)
        cos.append(rs)
    exp["cka"], exp["cos"] = cka, cos
    js = np.zeros((L, H))
    tv = np.zeros((L, H))
    rows = 0
    for b, t in runs:
        T = b["logits"].shape[0]
        rows += T
        for l in range(L):
            P = b["pattern"][l].astype(np.float64)  # [H, T, T]
            Q = t["pattern"][l].astype(np.float64)
            M = 0.5 * (P + Q)
            with np.errstate(divide="ignore", invalid="ignore"):
                tp = np.where(P > 0, P * np.log2(P / M), 0.0)
                tq = np.where(Q > 0, Q * np.log2(Q / M), 0.0)
            js[l] += (0.5 * (tp + tq).sum(-1)).sum(-1)
            tv[l] += (0.5 * np.abs(P - Q).sum(-1)).sum(-1)
    exp["head_js"] = (js / rows).tolist()
    exp["head_tv"] = (tv / rows).tolist()
    kl, top1 = [], []
    for l in range(L):
        zb = np.concatenate([b["lens"][l] for b, _ in runs])
        zt = np.concatenate([t["lens"][l] for _, t in runs])
        kl.append(float(kl_rows(zt, zb).mean()))
        top1.append(float((zb.argmax(-1) == zt.argmax(-1)).mean()))
    exp["lens_kl"], exp["lens_top1"] = kl, top1
    zb = np.concatenate([b["logits"] for b, _ in runs])
    zt = np.concatenate([t["logits"] for _, t in runs])
    exp["final_kl"] = float(kl_rows(zt, zb).mean())
    exp["final_top1"] = float((zb.argmax(-1) == zt.argmax(-1)).mean())
    sb, st = base.state_dict(), tuned.state_dict()
    exp["weights"] = {k: {"delta": float(np.linalg.norm((st[k].numpy().astype(np.float64) -
                                                         sb[k].numpy().astype(np.float64)).ravel())),
                          "base_norm": float(np.linalg.norm(sb[k].numpy().astype(np.float64).ravel()))}
                      for k in sorted(sb)}
    exp["versions"] = {k: versions[k] for k in sorted(versions)}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote %s: cka resid %s, lens kl %s, final kl %.4g" % (OUT, cka[0], kl, exp["final_kl"]))


if __name__ == "__main__":
    main()
