#!/usr/bin/python3
"""test_diff_cli.py — `koalascope diff` end to end on stories260K (docs/DIFF.md).

Usage (meson passes these): test_diff_cli.py KOALASCOPE     (TAP on standard output)

  1. stories260K against a copy written here whose layer 2 (every tensor of it) has seeded noise
     added: exit 0 and every output present (results.h5, the four CSVs, report.md, charts as PNG
     and SVG, base.h5, tuned.h5, diff.h5); results.h5 (h5py) names layer 2 as the layer whose
     weights changed most and as the first whose residual stream changed; report.md says so;
     layers 0 and 1 have CKA and cosine exactly 1;
  2. NumPy on the two dumps (h5py only) as the oracle of the activation measures: per-layer CKA
     (N x N Gram form) and mean cosine of resid_post, per-head JS (bits) and TV of hook_pattern,
     within 1e-6 absolute (f32 dumps, f64 on both sides); both dumps hold the same tokens;
     diff.h5's per-token cosines equal NumPy's per token within 1e-6, and its prompt_offsets the
     dumps' row_offsets;
  3. the same model stored as an HF checkpoint (q/k rows permuted to HF's rotate-half layout, as
     conversion scripts and koalascope finetune write them): every weight delta is exactly 0 (the
     layout is undone before comparing) and the activations agree (cosine > 1 - 1e-5);
  4. mistakes exit 1 naming the cause and write no outputs: models of different architectures
     (the config field), a tokenizer with one piece changed, a missing prompts file, an empty
     prompt set, an existing non-empty output directory without --overwrite.
Needs the stories260K shared data (SKIP without it; failure under CI=true) and h5py.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

from ks_tap import diag, ok, plan, require_h5py, run, skip, write_safetensors

np, h5py = require_h5py()
CI = os.environ.get("CI") == "true"
HERE = os.path.dirname(os.path.abspath(__file__))
PERTURBED = 2

PROMPTS = ["Once upon a time there was a little girl named Lily.",
           "The dog ran to the park and",
           "Tom saw a big red ball. He wanted to play with it, so he",
           "One day, the sun was hot and the bird sang a song."]


def read_llama2c(path):
    raw = open(path, "rb").read()
    hdr = struct.unpack("<7i", raw[:28])
    return hdr, np.frombuffer(raw, dtype="<f4", offset=28).copy()


def layout(hdr):
    """(name, shape) in the llama2.c order (stories260K: shared classifier)."""
    dim, hidden, L, H, KV, vocab, seq = hdr
    vocab = abs(vocab)
    hs = dim // H
    return [("emb", (vocab, dim)), ("rms_att", (L, dim)), ("wq", (L, dim, dim)),
            ("wk", (L, KV * hs, dim)), ("wv", (L, KV * hs, dim)), ("wo", (L, dim, dim)),
            ("rms_ffn", (L, dim)), ("w1", (L, hidden, dim)), ("w2", (L, dim, hidden)),
            ("w3", (L, hidden, dim)), ("rms_final", (dim,)), ("fcr", (seq, hs // 2)),
            ("fci", (seq, hs // 2))]


def split(hdr, data):
    out, pos = {}, 0
    for name, shape in layout(hdr):
        n = int(np.prod(shape))
        out[name] = data[pos:pos + n].reshape(shape)
        pos += n
    assert pos == data.size, "unexpected llama2.c layout"
    return out


def perturbed_copy(model, dst):
    hdr, data = read_llama2c(model)
    t = split(hdr, data.copy())
    rng = np.random.default_rng(20261010)
    for name, a in t.items():
        if a.ndim >= 2 and a.shape[0] == hdr[2] and name not in ("fcr", "fci", "emb"):
            w = a[PERTURBED]
            w += (0.1 * np.sqrt((w * w).mean()) * rng.standard_normal(w.shape)).astype("<f4")
    with open(dst, "wb") as f:
        f.write(struct.pack("<7i", *hdr))
        for name, _ in layout(hdr):
            f.write(np.ascontiguousarray(t[name], dtype="<f4").tobytes())


def hf_copy(model, dst):
    """stories260K as an HF checkpoint: q/k rows permuted from interleaved to rotate-half."""
    hdr, data = read_llama2c(model)
    t = split(hdr, data)
    dim, hidden, L, H, KV, vocab, seq = hdr

    def permute(w, heads):
        d1, d2 = w.shape
        return w.reshape(heads, d1 // heads // 2, 2, d2).transpose(0, 2, 1, 3).reshape(d1, d2)

    st = {"model.embed_tokens.weight": t["emb"], "model.norm.weight": t["rms_final"]}
    for l in range(L):
        p = "model.layers.%d." % l
        st[p + "input_layernorm.weight"] = t["rms_att"][l]
        st[p + "self_attn.q_proj.weight"] = permute(t["wq"][l], H)
        st[p + "self_attn.k_proj.weight"] = permute(t["wk"][l], KV)
        st[p + "self_attn.v_proj.weight"] = t["wv"][l]
        st[p + "self_attn.o_proj.weight"] = t["wo"][l]
        st[p + "post_attention_layernorm.weight"] = t["rms_ffn"][l]
        st[p + "mlp.gate_proj.weight"] = t["w1"][l]
        st[p + "mlp.down_proj.weight"] = t["w2"][l]
        st[p + "mlp.up_proj.weight"] = t["w3"][l]
    os.makedirs(dst)
    write_safetensors(os.path.join(dst, "model.safetensors"),
                      {k: np.ascontiguousarray(v, dtype="<f4") for k, v in st.items()})
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
           "intermediate_size": hidden, "num_hidden_layers": L, "num_attention_heads": H,
           "num_key_value_heads": KV, "vocab_size": abs(vocab), "max_position_embeddings": seq,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
           "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "float32"}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)


def changed_tokenizer(tok, dst):
    """tok512.bin with one piece's text changed (same length, same count)."""
    raw = bytearray(open(tok, "rb").read())
    pos, i = 4, 0
    while pos < len(raw):
        n = struct.unpack_from("<i", raw, pos + 4)[0]
        if i == 300:
            raw[pos + 8] = ord("Q") if raw[pos + 8] != ord("Q") else ord("R")
            break
        pos += 8 + n
        i += 1
    open(dst, "wb").write(bytes(raw))


def text(v):
    """An HDF5 string attribute as h5py hands it (bytes for fixed-length strings) as str."""
    return v.decode() if isinstance(v, bytes) else str(v)


def centred_cka(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    KX, KY = X @ X.T, Y @ Y.T
    return float((KX * KY).sum() / (np.linalg.norm(KX) * np.linalg.norm(KY)))


def js_tv(p, q):
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        b = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return 0.5 * (a + b), 0.5 * np.abs(p - q).sum()


def check_perturbed(ks, model, tok, tmp, prompts):
    tuned = os.path.join(tmp, "tuned.bin")
    perturbed_copy(model, tuned)
    out = os.path.join(tmp, "out")
    p = run([ks, "diff", model, tuned, "--tokenizer", tok, "--prompts", prompts, "-o", out,
             "--threads", "2"])
    if not ok(p.returncode == 0, "diff stories260K vs its layer-%d-perturbed copy: exit %d %s" % (
            PERTURBED, p.returncode, p.stderr.strip()[-400:])):
        return
    files = ["results.h5", "layers.csv", "heads.csv", "weights.csv", "modules.csv", "report.md",
             "base.h5", "tuned.h5", "diff.h5"] + ["charts/%s.%s" % (c, e) for c in (
                 "similarity", "lens_kl", "heads_js", "weights_layer", "weights_module") for e in ("png", "svg")]
    missing = [f for f in files if not os.path.isfile(os.path.join(out, f)) or os.path.getsize(os.path.join(out, f)) == 0]
    ok(not missing, "every output present and non-empty (missing: %s)" % missing)
    r = h5py.File(os.path.join(out, "results.h5"), "r")
    fd = r["findings"].attrs
    ok(text(r.attrs["format"]) == "koalascope-diff-results", "results.h5 format attribute")
    ok(int(fd["weight_layer"]) == PERTURBED, "results.h5: the largest weight change is layer %d (%s)" % (
        PERTURBED, fd["weight_layer"]))
    ok(int(fd["first_changed_layer"]) == PERTURBED, "results.h5: resid_post first changes at layer %d (%s)" % (
        PERTURBED, fd["first_changed_layer"]))
    lrel = r["weights/layer_rel"][:]
    ok(all(lrel[l] == 0 for l in range(len(lrel)) if l != PERTURBED) and lrel[PERTURBED] > 0.05,
       "weight change only in layer %d: %s" % (PERTURBED, np.round(lrel, 4).tolist()))
    cka, cos = r["layers/cka"][:], r["layers/cos"][:]
    ok((cka[:, :PERTURBED] == 1).all() and (cos[:, :PERTURBED] == 1).all(),
       "layers before %d: CKA and cosine exactly 1 for all three streams" % PERTURBED)
    report = open(os.path.join(out, "report.md")).read()
    ok("changed most in layer %d" % PERTURBED in report and "first differs after layer %d" % PERTURBED in report,
       "report.md names layer %d for the weights and the activations" % PERTURBED)
    ok(p.stdout.strip() == text(fd["sentence"]), "the sentence is printed on stdout and stored in results.h5")
    # NumPy on the dumps as the oracle
    b = h5py.File(os.path.join(out, "base.h5"), "r")
    t = h5py.File(os.path.join(out, "tuned.h5"), "r")
    ok(np.array_equal(b["tokens"][:], t["tokens"][:]) and len(b["row_offsets"]) == len(PROMPTS) + 1,
       "both dumps hold the same %d prompts and tokens" % len(PROMPTS))
    L = int(r.attrs["n_layers"])
    w_cka = w_cos = 0.0
    cos_tok = []
    for l in range(L):
        X = b["activations/blocks.%d.hook_resid_post" % l][:].astype(np.float64)
        Y = t["activations/blocks.%d.hook_resid_post" % l][:].astype(np.float64)
        c = (X * Y).sum(1) / np.sqrt((X * X).sum(1) * (Y * Y).sum(1))
        cos_tok.append(c)
        w_cka = max(w_cka, abs(centred_cka(X, Y) - cka[0, l]))
        w_cos = max(w_cos, abs(c.mean() - cos[0, l]))
    ok(w_cka <= 1e-6, "CKA of resid_post per layer against NumPy on the dumps: max |d| %.2g <= 1e-6" % w_cka)
    ok(w_cos <= 1e-6, "mean cosine against NumPy on the dumps: max |d| %.2g <= 1e-6" % w_cos)
    H = int(r.attrs["n_heads"])
    js = np.zeros((L, H))
    tv = np.zeros((L, H))
    ro, starts = b["row_offsets"][:], b["attn_row_starts"][:]
    pos = b["row_positions"][:]
    for l in range(L):
        pb = b["activations/blocks.%d.attn.hook_pattern" % l][:].astype(np.float64)
        pt = t["activations/blocks.%d.attn.hook_pattern" % l][:].astype(np.float64)
        for rr in range(ro[-1]):
            s, q = starts[rr], pos[rr]
            for h in range(H):
                j, v = js_tv(pb[h, s:s + q + 1], pt[h, s:s + q + 1])
                js[l, h] += j
                tv[l, h] += v
    n = ro[-1]
    wj = np.abs(js / n - r["heads/js"][:]).max()
    wt = np.abs(tv / n - r["heads/tv"][:]).max()
    ok(wj <= 1e-6 and wt <= 1e-6, "per-head JS and TV against NumPy on the dumps: %.2g, %.2g <= 1e-6" % (wj, wt))
    d = h5py.File(os.path.join(out, "diff.h5"), "r")
    ok(text(d.attrs["format"]) == "koalascope-diff" and int(d.attrs["complete"]) == 1 and
       text(d.attrs["base_dump"]) == "base.h5" and text(d.attrs["tuned_dump"]) == "tuned.h5",
       "diff.h5: format, complete, the dumps it belongs to")
    ok(np.array_equal(d["prompt_offsets"][:], ro), "diff.h5 prompt_offsets == the dumps' row_offsets")
    ct = d["tokens/cos_resid_post"][:]
    wc = np.abs(ct - np.stack(cos_tok, 1)).max() if ct.shape == (n, L) else 1.0
    ok(ct.shape == (n, L) and wc <= 1e-6, "diff.h5 per-token cosines %s against NumPy: %.2g <= 1e-6" % (ct.shape, wc))
    ok(d["prompts/head_js"].shape == (len(PROMPTS), L, H) and d["tokens/lens_kl"].shape == (n, L) and
       (d["tokens/lens_kl"][:, :PERTURBED] == 0).all() and (d["tokens/lens_kl"][:, PERTURBED:] >= 0).all(),
       "diff.h5 per-prompt head JS and per-token lens KL (0 before layer %d)" % PERTURBED)


def check_hf_layout(ks, model, tok, tmp, prompts):
    hf = os.path.join(tmp, "hf")
    hf_copy(model, hf)
    out = os.path.join(tmp, "out_hf")
    p = run([ks, "diff", model, hf, "--tokenizer", tok, "--prompts", prompts, "-o", out, "--no-dumps",
             "-q"])
    if not ok(p.returncode == 0, "diff llama2.c vs its HF-layout copy: exit %d %s" % (p.returncode, p.stderr[-300:])):
        return
    r = h5py.File(os.path.join(out, "results.h5"), "r")
    ok((r["weights/delta"][:] == 0).all() and len(r["weights/delta"]) > 0,
       "every weight delta exactly 0 across the rotary layouts (%d tensors)" % len(r["weights/delta"]))
    ok(r["layers/cos"][:].min() > 1 - 1e-5, "activations agree: min cosine %.9f" % r["layers/cos"][:].min())
    ok(not os.path.exists(os.path.join(out, "base.h5")), "--no-dumps writes no dumps")


def check_bad(ks, model, tok, tmp, prompts):
    fixture = os.path.join(HERE, "reference", "fixtures", "hf", "head_dim")

    def bad(args, want, what):
        out = os.path.join(tmp, "bad_out")
        shutil.rmtree(out, ignore_errors=True)
        p = run([ks, "diff"] + args + ["-o", out, "-q"])
        ok(p.returncode == 1 and want in p.stderr and not os.path.exists(out) and "Traceback" not in p.stderr,
           "%s: exit %d, says '%s': %s" % (what, p.returncode, want, p.stderr.strip()[-300:]))

    bad([model, fixture, "--tokenizer", tok, "--prompts", prompts], "config field dim", "different architectures")
    tok2 = os.path.join(tmp, "tok_changed.bin")
    changed_tokenizer(tok, tok2)
    bad([model, model, "--tokenizer", tok, "--tuned-tokenizer", tok2, "--prompts", prompts],
        "different tokenizers: token 300", "a tokenizer with one piece changed")
    bad([model, model, "--tokenizer", tok, "--prompts", os.path.join(tmp, "nope.txt")],
        "nope.txt", "a missing prompts file")
    empty = os.path.join(tmp, "empty.jsonl")
    open(empty, "w").write("\n  \n")
    bad([model, model, "--tokenizer", tok, "--prompts", empty], "no prompts", "an empty prompt set")
    bad([model, model, "--tokenizer", tok], "--prompts", "no prompts option")
    full = os.path.join(tmp, "full")
    os.makedirs(full, exist_ok=True)
    open(os.path.join(full, "x"), "w").write("x")
    p = run([ks, "diff", model, model, "--tokenizer", tok, "--prompts", prompts, "-o", full, "-q"])
    ok(p.returncode == 1 and "not empty" in p.stderr and os.listdir(full) == ["x"],
       "an existing non-empty output directory is refused and left alone: %s" % p.stderr.strip())


def main():
    ks = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/cli/koalascope"
    data = os.environ.get("KS_SHARED_DATA") or os.path.join(
        os.environ.get("KS_SOURCE_ROOT", os.path.join(HERE, "..")), "..", "shared", "data")
    model = os.path.join(data, "stories260K", "stories260K.bin")
    tok = os.path.join(data, "stories260K", "tok512.bin")
    if not (os.path.isfile(model) and os.path.isfile(tok)):
        if CI:
            ok(False, "shared data missing at %s (CI=true requires it)" % data)
        else:
            skip("stories260K missing at %s; set KS_SHARED_DATA" % data)
        plan()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        prompts = os.path.join(tmp, "prompts.txt")
        open(prompts, "w").write("\n".join(PROMPTS) + "\n")
        for name, fn in [("perturbed", check_perturbed), ("hf layout", check_hf_layout), ("bad", check_bad)]:
            try:
                fn(ks, model, tok, tmp, prompts)
            except Exception:
                ok(False, "%s: %s" % (name, traceback.format_exc().strip().splitlines()[-1]))
                diag(traceback.format_exc())
    plan()
    return 0


if __name__ == "__main__":
    sys.exit(main())
