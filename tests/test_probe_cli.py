#!/usr/bin/python3
"""test_probe_cli.py — `koalascope probe` end to end on a dump with a planted feature, and
`--steer` with the directions it finds (docs/PROBES.md). The oracle is NumPy on the data this
script planted; the results file is read with h5py only.

Usage (meson passes these): test_probe_cli.py KOALASCOPE     (TAP on standard output)

The dump: a TransformerLens-style cache for stories260K (5 layers, d_model 64) written here —
random tokens, every blocks.L.hook_resid_post drawn i.i.d. N(0, 1) — with a binary label per
prompt planted at layer 3 only (the last token's residual moves by ±1.5 along a unit vector u),
and a numeric target planted at layer 1 (t·u). `koalascope import safetensors` turns it into a
dump. Then:
  1. the sweep's best layer is 3 and its CI lies above 0.75; at every other layer the
     accuracy CI covers chance (0.5) and the probe is not marked as beating its controls; the
     shuffled-label control at layer 3 covers 0.5 and the majority baseline is ≤ 0.6;
  2. /probes/.../diff_means equals NumPy's difference of class means on the same rows
     (max abs error ≤ 1e-5; f32 data, f64 sums), coef has shape [1, 64], classes are sorted;
  3. the CSV equals the HDF5 (9 significant digits), the chart is a PNG and an SVG;
  4. CSV labels give the same results as JSONL labels; ridge finds layer 1 (R² CI > 0.5, all
     others < 0.2); a token regex and --position all select the rows NumPy counts;
  5. steering: alpha 0 leaves `score` byte-identical; alpha 8 changes it; bad --steer specs
     exit 1 naming the problem;
  6. bad labels / flags exit 1 naming the file, line and field, and leave no results file.
"""
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import traceback

CI = os.environ.get("CI") == "true"

from ks_tap import diag, must, ok, plan, require_h5py, run, skip, write_safetensors  # noqa: E402

np, h5py = require_h5py()

P, T, D, L = 120, 8, 64, 5
PLANT_LAYER, RIDGE_LAYER = 3, 1


def make_data(rng):
    u = rng.standard_normal(D)
    u /= np.linalg.norm(u)
    labels = np.array([0, 1] * (P // 2))
    rng.shuffle(labels)
    target = rng.standard_normal(P)
    tokens = rng.integers(3, 512, size=(P, T)).astype(np.int32)
    tokens[:, 0] = 1
    resid = rng.standard_normal((P, L, T, D)).astype(np.float32)
    resid[:, PLANT_LAYER, -1, :] += ((labels * 2 - 1)[:, None] * 1.5 * u).astype(np.float32)
    resid[:, RIDGE_LAYER, -1, :] += (target[:, None] * 2.0 * u).astype(np.float32)
    return u, labels, target, tokens, resid


def results(path):
    f = h5py.File(path, "r")
    r = {k: f[k][...] for k in ("accuracy", "auroc", "r2", "majority", "shuffled", "control",
                                 "selectivity", "beats_controls", "layer", "n_rows", "n_groups")}
    r["hooks"] = [h.decode() for h in f["hooks"][...]]
    r["file"] = f
    return r


def check_planted(ks, dump, labels, resid, tmp, jl):
    out = os.path.join(tmp, "res.h5")
    p = must([ks, "probe", dump, "--labels", jl, "-o", out, "--bootstrap", "300", "--shuffles", "3",
              "--seed", "1", "-q"], "probe planted feature")
    if not p:
        return None
    r = results(out)
    acc = r["accuracy"]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("blocks.")]
    ok(len(lines) == L and r["hooks"] == ["blocks.%d.hook_resid_post" % i for i in range(L)],
       "one probe per layer, in layer order (stdout table and /hooks)")
    best = int(np.argmax(acc[:, 0]))
    diag("accuracy by layer: " + ", ".join("%d: %.3f [%.3f, %.3f]" % (i, *acc[i]) for i in range(L)))
    ok(best == PLANT_LAYER and acc[best, 1] > 0.75,
       "the sweep finds the planted layer %d (accuracy %.3f, CI low %.3f > 0.75)" % (best, acc[best, 0], acc[best, 1]))
    others = [i for i in range(L) if i != PLANT_LAYER]
    ok(all(acc[i, 1] <= 0.5 <= acc[i, 2] for i in others),
       "at the other layers the accuracy CI covers chance")
    ok(bool(r["beats_controls"][PLANT_LAYER]) and not any(r["beats_controls"][i] for i in others),
       "only the planted layer beats its controls")
    sh = r["shuffled"][PLANT_LAYER]
    ok(sh[1] <= 0.5 <= sh[2] or abs(sh[0] - 0.5) < 0.1,
       "shuffled labels stay at chance at layer 3 (%.3f [%.3f, %.3f])" % tuple(sh))
    ok(r["majority"][PLANT_LAYER, 0] <= 0.6, "majority baseline %.3f ≤ 0.6" % r["majority"][PLANT_LAYER, 0])
    ok(np.all(r["n_rows"] == P) and np.all(r["n_groups"] == P), "one row per prompt (position last)")
    f = r["file"]
    ok([c.decode() for c in f["classes"][...]] == ["no", "yes"], "classes sorted: no, yes")
    g = f["probes/blocks.%d.hook_resid_post" % PLANT_LAYER]
    X = resid[:, PLANT_LAYER, -1, :].astype(np.float64)
    dm = X[labels == 1].mean(0) - X[labels == 0].mean(0)
    err = np.abs(g["diff_means"][...] - dm).max()
    ok(err <= 1e-5, "diff_means equals NumPy's difference of class means (max error %.2e ≤ 1e-5)" % err)
    ok(g["coef"].shape == (1, D) and g["intercept"].shape == (1,) and g["mean"].shape == (D,),
       "coef [1, 64], intercept [1], mean [64]")
    cos = float(np.dot(g["coef"][0], dm) / np.linalg.norm(g["coef"][0]) / np.linalg.norm(dm))
    ok(cos > 0.5, "the probe's weights point along the planted direction (cosine with diff_means %.3f)" % cos)
    ok(f.attrs["format"] == b"koalascope-probe" and f.attrs["format_version"] == 1 and
       f.attrs["task"] == b"logistic", "root attributes: format, version, task")
    # CSV against the HDF5
    with open(os.path.join(tmp, "res.csv")) as fh:
        rows = list(csv.DictReader(fh))
    good = len(rows) == L
    for i, row in enumerate(rows):
        for k in ("accuracy", "majority", "shuffled", "control"):
            for j, suf in enumerate(("", "_lo", "_hi")):
                v = r[k][i, j]
                if np.isnan(v):
                    good &= row[k + suf] == ""
                else:
                    good &= abs(float(row[k + suf]) - v) <= 1e-8 * max(1, abs(v))
        good &= row["hook"] == r["hooks"][i] and int(row["beats_controls"]) == int(r["beats_controls"][i])
    ok(good, "the CSV holds the HDF5's values (9 significant digits)")
    with open(os.path.join(tmp, "res.png"), "rb") as fh:
        ok(fh.read(8) == b"\x89PNG\r\n\x1a\n", "the chart is a PNG")
    with open(os.path.join(tmp, "res.svg")) as fh:
        ok("<svg" in fh.read(400), "and an SVG")
    f.close()
    return out


def check_variants(ks, dump, labels, target, tmp, ref):
    # CSV labels = JSONL labels
    cl = os.path.join(tmp, "labels.csv")
    with open(cl, "w") as fh:
        fh.write("label,prompt\n")
        for i in range(P):
            fh.write("%s,%d\n" % ("yes" if labels[i] else "no", i))
    out = os.path.join(tmp, "res_csv.h5")
    if must([ks, "probe", dump, "--labels", cl, "-o", out, "--bootstrap", "300", "--shuffles", "3",
             "--seed", "1", "-q", "--chart", "none"], "probe with CSV labels"):
        a, b = results(ref), results(out)
        ok(all(np.array_equal(a[k], b[k], equal_nan=True) for k in ("accuracy", "shuffled", "control")),
           "CSV labels give the same results as JSONL labels (bit for bit)")
        ok(not os.path.exists(os.path.join(tmp, "res_csv.png")), "--chart none writes no chart")
    # ridge
    rl = os.path.join(tmp, "ridge.jsonl")
    with open(rl, "w") as fh:
        for i in range(P):
            fh.write(json.dumps({"prompt": i, "label": float(target[i])}) + "\n")
    out = os.path.join(tmp, "res_ridge.h5")
    if must([ks, "probe", dump, "--labels", rl, "--task", "ridge", "--alpha", "100", "-o", out, "--bootstrap", "200",
             "--shuffles", "2", "-q"], "probe ridge"):
        r2 = results(out)["r2"]
        diag("ridge R² by layer: " + ", ".join("%.3f" % v for v in r2[:, 0]))
        ok(int(np.argmax(r2[:, 0])) == RIDGE_LAYER and r2[RIDGE_LAYER, 1] > 0.5 and
           all(r2[i, 0] < 0.2 for i in range(L) if i != RIDGE_LAYER),
           "ridge (alpha 100) finds the target planted at layer %d (R² %.3f, CI low %.3f > 0.5)" % (RIDGE_LAYER, r2[RIDGE_LAYER, 0], r2[RIDGE_LAYER, 1]))
    # token regex and --position all: row counts against NumPy on the dump's own tokens
    f = h5py.File(dump, "r")
    strs = f["token_strings"].asstr()[...]
    po = f["prompt_offsets"][...]
    f.close()
    pat = "^[a-m]"
    import re
    want = sum(1 for p in range(P) for t in range(po[p], po[p + 1]) if re.search(pat, strs[t]))
    tl = os.path.join(tmp, "tok.jsonl")
    with open(tl, "w") as fh:
        for i in range(P):
            fh.write(json.dumps({"prompt": i, "label": "yes" if labels[i] else "no", "token": pat}) + "\n")
    out = os.path.join(tmp, "res_tok.h5")
    p = run([ks, "probe", dump, "--labels", tl, "-o", out, "--bootstrap", "50", "--shuffles", "1", "-q",
             "--chart", "none", "--hook", "blocks.0.hook_resid_post"])
    ok(p.returncode == 0 and int(results(out)["n_rows"][0]) == want,
       "a token regex selects the %d rows whose piece matches (NumPy count)" % want)
    out = os.path.join(tmp, "res_all.h5")
    p = run([ks, "probe", dump, "--labels", os.path.join(tmp, "labels.jsonl"), "--position", "all", "-o", out,
             "--bootstrap", "50", "--shuffles", "1", "-q", "--chart", "none", "--hook", "blocks.0-1.hook_resid_post"])
    ok(p.returncode == 0 and list(results(out)["n_rows"]) == [P * T, P * T],
       "--position all selects every input row, --hook blocks.0-1 two layers")


def check_steer(ks, res, data, tmp):
    model = os.path.join(data, "stories260K", "stories260K.bin")
    tok = os.path.join(data, "stories260K", "tok512.bin")
    base = [ks, "score", model, "--tokenizer", tok, "--prompt", "Once upon a time there was a"]
    p0 = run(base)
    hook = "blocks.%d.hook_resid_post" % PLANT_LAYER
    p1 = run(base + ["--steer", "%s:%s:0" % (res, hook)])
    ok(p0.returncode == 0 and p1.returncode == 0 and p0.stdout == p1.stdout,
       "--steer with alpha 0 leaves the scores byte-identical")
    p2 = run(base + ["--steer", "%s:%s:8" % (res, hook)])
    ok(p2.returncode == 0 and p2.stdout != p0.stdout and "steering" in p2.stderr,
       "alpha 8 changes them, and says so on stderr")
    p3 = run(base + ["--steer", "%s:%s/probe:4" % (res, hook)])
    ok(p3.returncode == 0 and p3.stdout != p0.stdout, "the probe-weight direction steers too")
    g = run([ks, "generate", model, "--tokenizer", tok, "--prompt", "Once", "-n", "8",
             "--steer", "%s:%s:3" % (res, hook)])
    ok(g.returncode == 0 and g.stdout.strip() != "", "generate --steer runs")
    for spec, want, what in [
            ("%s:blocks.9.hook_resid_post:1" % res, "layers", "a layer the model lacks"),
            ("%s:%s:x" % (res, hook), "ALPHA", "a non-numeric alpha"),
            ("%s:%s/weird:1" % (res, hook), "kind", "an unknown kind"),
            ("%s:blocks.0.hook_mlp_out:1" % res, "no /probes", "a hook that was not probed"),
            ("%s:%s:1" % (model, hook), model, "a file that is not a results file"),
            ("%s:%s:1" % (os.path.join(tmp, "none.h5"), hook), "none.h5", "a missing file"),
            ("nocolon", "FILE:HOOK", "no colons")]:
        p = run(base + ["--steer", spec])
        ok(p.returncode == 1 and want in p.stderr and p.stdout == "",
           "--steer %s: exit 1 naming it" % what)
        if not (p.returncode == 1 and want in p.stderr):
            diag(p.stderr.strip())


def check_bad(ks, dump, tmp):
    def bad(lines, want, what, ext="jsonl", extra=()):
        path = os.path.join(tmp, "bad." + ext)
        with open(path, "w") as fh:
            fh.write(lines)
        out = os.path.join(tmp, "bad_out.h5")
        p = run([ks, "probe", dump, "--labels", path, "-o", out, "-q"] + list(extra))
        good = p.returncode == 1 and all(w in p.stderr for w in want) and not os.path.exists(out)
        ok(good, "bad input (%s): exit 1 naming %s, no results file" % (what, ", ".join(want)))
        if not good:
            diag("exit %d: %s" % (p.returncode, p.stderr.strip()))
    good = '{"prompt": 0, "label": "a"}\n{"prompt": 1, "label": "b"}\n'
    bad(good + '{"prompt": 2}\n', ["bad.jsonl", "line 3", "'label'"], "missing label")
    bad(good + '{"prompt": 2, "label": "a", "colour": 1}\n', ["line 3", "colour"], "unknown field")
    bad(good + '{"prompt": 2, "label": [1]}\n', ["line 3", "'label'"], "label of a wrong type")
    bad(good + '{"prompt": 9999, "label": "a"}\n', ["line 3", "9999"], "prompt out of range")
    bad(good + '{"prompt": "nope", "label": "a"}\n', ["line 3", "nope"], "unknown prompt id")
    bad(good + '{"prompt": 2, "label": "a", "token": "("}\n', ["line 3", "regex"], "bad regex")
    bad(good + 'not json\n', ["line 3", "JSON"], "not JSON")
    bad('{"prompt": 0, "label": "a"}\n{"prompt": 1, "label": "a"}\n', ["two classes"], "one class")
    bad(good, ["--task ridge", "number"], "ridge with class labels", extra=["--task", "ridge"])
    bad(good + '{"prompt": 0, "label": "b"}\n', ["lines 1 and 3", "different labels"], "contradicting labels")
    bad(good + '{"prompt": 2, "label": "a", "position": 99}\n', ["line 3", "position 99"], "unrecorded position")
    bad(good, ["--hook", "matches no"], "hook matching nothing", extra=["--hook", "blocks.*.hook_mlp_out"])
    bad(good, ["--folds"], "bad folds", extra=["--folds", "1"])
    bad("prompt,label\n0,a\n1,b\n2\n", ["bad.csv", "row 4", "fields"], "short CSV row", ext="csv")
    bad("prompt,mood\n0,a\n", ["bad.csv", "row 1", "mood"], "unknown CSV column", ext="csv")
    bad("prompt,label\n0,\"a\n", ["bad.csv"], "unterminated CSV quote", ext="csv")
    bad(good, ["labels file", ".jsonl"], "unknown extension", ext="txt")
    path = os.path.join(tmp, "exists.h5")
    with open(path, "w") as fh:
        fh.write("x")
    lab = os.path.join(tmp, "ok.jsonl")
    with open(lab, "w") as fh:
        fh.write(good)
    p = run([ks, "probe", dump, "--labels", lab, "-o", path, "-q"])
    ok(p.returncode == 1 and "exists" in p.stderr and open(path).read() == "x",
       "an existing results file is not overwritten without --overwrite")


def main():
    if len(sys.argv) < 2:
        print("usage: test_probe_cli.py KOALASCOPE", file=sys.stderr)
        return 2
    ks = os.path.abspath(sys.argv[1])
    data = os.environ.get("KS_SHARED_DATA") or os.path.join(
        os.environ.get("KS_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..")), "..", "shared", "data")
    model = os.path.join(data, "stories260K", "stories260K.bin")
    tok = os.path.join(data, "stories260K", "tok512.bin")
    if not (os.path.isfile(model) and os.path.isfile(tok)):
        if CI:
            ok(False, "shared data missing at %s (CI=true requires it)" % data)
        else:
            skip("stories260K missing at %s; set KS_SHARED_DATA" % data)
        plan()
        return 0
    rng = np.random.default_rng(20261128)
    u, labels, target, tokens, resid = make_data(rng)
    with tempfile.TemporaryDirectory() as tmp:
        cache = {}
        for p in range(P):
            cache["tokens.%d" % p] = tokens[p]
            for layer in range(L):
                cache["blocks.%d.hook_resid_post.%d" % (layer, p)] = resid[p, layer]
        st = os.path.join(tmp, "cache.safetensors")
        write_safetensors(st, cache)
        dump = os.path.join(tmp, "planted.h5")
        if not must([ks, "import", "safetensors", st, "-o", dump, "--model", model, "--tokenizer", tok,
                     "--threads", "2"], "import the planted cache"):
            plan()
            return 0
        jl = os.path.join(tmp, "labels.jsonl")
        with open(jl, "w") as fh:
            for i in range(P):
                fh.write(json.dumps({"prompt": i, "label": "yes" if labels[i] else "no"}) + "\n")
        for part in (lambda: check_planted(ks, dump, labels, resid, tmp, jl),):
            try:
                res = part()
            except Exception:
                res = None
                ok(False, "planted: %s" % traceback.format_exc().strip().splitlines()[-1])
                diag(traceback.format_exc())
        for name, fn in [("variants", lambda: check_variants(ks, dump, labels, target, tmp, res)),
                         ("steer", lambda: check_steer(ks, res, data, tmp)),
                         ("bad", lambda: check_bad(ks, dump, tmp))]:
            if res is None and name != "bad":
                ok(False, "%s: no results from the planted probe" % name)
                continue
            try:
                fn()
            except Exception:
                ok(False, "%s: %s" % (name, traceback.format_exc().strip().splitlines()[-1]))
                diag(traceback.format_exc())
    plan()
    return 0


if __name__ == "__main__":
    sys.exit(main())
