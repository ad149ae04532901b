#!/usr/bin/python3
"""test_koala_mini.py — koala-mini (models/koala-mini), the embedded default model, against the
ground truth planted in the corpus it was trained on (docs/KOALA_MINI.md, planted.json).

Usage (meson passes these): test_koala_mini.py KOALASCOPE     (TAP on standard output)

  1. The shipped folder: the files, ≤ 8 MB in all; `koalascope info` opens it (the shape of
     config.json, the Koala template guessed).
  2. Its tokenizer: `koalascope tokenize` gives SentencePiece's ids on the committed sample
     (tests/reference/fixtures/koala_mini/tokenizer.jsonl, written by
     tests/reference/make_koala_mini_fixtures.py, which also checked that HF's LlamaTokenizer
     gives the same ids); the fixture was made from this very tokenizer.model (SHA-256).
  3. The planted pronoun rates. For every occupation and every context of planted.json,
     `koalascope score` gives log P(" she") and log P(" he") as the next token after the
     context; the measure is r = P(she) / (P(she) + P(he)), averaged over the contexts.
     - Oracle: the same log-probabilities from HF transformers (fixture), within 1e-4 (the
       weights are bf16, both sides compute in f32; the audit oracle saw 3.4e-5 at most).
     - Ground truth: r lies in the 99% Wilson interval of the planted rate given the corpus
       count: the corpus shows the model k " she" out of n pronouns after that occupation
       (k = P(she)·n exactly, n = 400); the interval holds the rates that 99% of binomial
       samples of size n with that proportion would not reject. A model that learned the
       corpus's rate lands inside; one that learned another (or none: 0.5 for every
       occupation, or a pull towards the mean of all occupations) lands outside for the rates
       far from 0.5 (half-widths 0.03 at 0.05, 0.06 at 0.45 for n = 400).
  4. The planted feature (the class, warm or cool, of the colour the user named): `koalascope
     record` of hook_embed and every blocks.L.hook_resid_post at the probe position (" is" of
     "GPT: Your kite is", the last token) of the 200 held-out probe prompts, then `koalascope
     probe` with the planted labels:
     - the model's own readout there (the next token, a linear map after RMSNorm) names a
       colour of the right class on ≥ 95% of these prompts (from the recorded logits): the
       model learned the task, which an untrained model of the same shape does not;
     - at hook_embed (the same token in every prompt) the probe is at chance: its accuracy CI
       reaches down to 0.5 and it does not beat its controls;
     - at the layers of planted.json's present_at (every block's output: attention from
       block 0 on can bring the colour there) it is decodable: accuracy ≥ 0.9 with the CI low
       above 0.8, beating its controls. Why 0.9: the readout above gets ≥ 95%, a linear probe
       cross-validated on 160 prompts per fold should come close (the 95% CI of an accuracy
       of 0.95 on 200 prompts is ± 0.03), and 0.9 leaves room for the probe's own error;
     - the shuffled-label control stays at chance at every layer (its CI covers 0.5).
  5. The bias audit measures the planted rates (check_audit).
     (An untrained model also carries the colour after block 0 — attention mixes every token
     in — so these probe points check the tool on a feature known to be where it is, and the
     first point checks the model; docs/KOALA_MINI.md.)
     And `record --template koala` encodes a multi-turn conversation as HF's
     apply_chat_template does with the shipped tokenizer_config.json (fixture), so the chat
     template HF users get is the one the model was trained on.
  5. It answers in the Koala template: greedy `generate --template koala` on in-domain
     questions gives the corpus's answers (the colour and class of the object asked about, a
     fact, its name).

Environment: KS_SOURCE_ROOT (the source tree). h5py/NumPy (for the recorded logits) are
needed by point 4 only: without them it SKIPs, and fails under CI=true.
"""
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile

from ks_tap import diag, must, ok, plan, run, skip

CI = os.environ.get("CI") == "true"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("KS_SOURCE_ROOT") or os.path.dirname(HERE)
MODEL = os.path.join(ROOT, "models", "koala-mini")
FIX = os.path.join(ROOT, "tests", "reference", "fixtures", "koala_mini")
SHIPPED = ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
           "generation_config.json", "MODEL_CARD.md", "planted.json", "probe_prompts.jsonl",
           "probe_labels.jsonl", "pronouns.json", "audit.json"]
MAX_BYTES = 8_000_000
Z99 = 2.5758293035489004  # two-sided 99% normal quantile
LP_TOL = 1e-4             # our log-probabilities against HF transformers'


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def wilson(k, n, z=Z99):
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def check_files(ks):
    missing = [f for f in SHIPPED if not os.path.isfile(os.path.join(MODEL, f))]
    if not ok(not missing, "models/koala-mini has %s" % ", ".join(SHIPPED) +
              (" (missing: %s)" % ", ".join(missing) if missing else "")):
        return None
    total = sum(os.path.getsize(os.path.join(MODEL, f)) for f in os.listdir(MODEL))
    ok(total <= MAX_BYTES, "the folder holds %d bytes in all (≤ %d)" % (total, MAX_BYTES))
    with open(os.path.join(MODEL, "config.json")) as f:
        cfg = json.load(f)
    p = must([ks, "info", MODEL], "koalascope info models/koala-mini")
    if p:
        want = ["layers       %d, d_model %d" % (cfg["num_hidden_layers"], cfg["hidden_size"]),
                "vocab        %d" % cfg["vocab_size"], "template     koala"]
        ok(all(w in p.stdout for w in want), "info: %s" % "; ".join(want))
    return cfg


def check_tokenizer(ks):
    path = os.path.join(FIX, "tokenizer.jsonl")
    with open(path) as f:
        head = json.loads(f.readline())
        rows = [json.loads(line) for line in f]
    ok(head["tokenizer_sha256"] == sha256(os.path.join(MODEL, "tokenizer.model")),
       "the tokenizer fixture was made from the shipped tokenizer.model (SHA-256)")
    bad = []
    for r in rows:
        p = run([ks, "tokenize", MODEL, "--no-bos", "--prompt=" + r["t"]])
        got = [int(x) for x in p.stdout.split()] if p.returncode == 0 else None
        if got != r["ids"]:
            bad.append((r["t"], got, r["ids"]))
    for t, got, want in bad[:3]:
        diag("%r: koalascope %s, sentencepiece %s" % (t, got, want))
    ok(rows and not bad, "koalascope tokenize = sentencepiece on %d texts (%d differ)" % (len(rows), len(bad)))


def score_last(ks, text):
    """(piece, log-prob) of the last token of text (BOS first), from `koalascope score`."""
    p = run([ks, "score", MODEL, "--prompt=" + text])
    if p.returncode != 0:
        return None, p.stderr.strip()
    rows = [ln.split("\t") for ln in p.stdout.splitlines() if ln and not ln.startswith("total")]
    return rows[-1][2], float(rows[-1][3])


def check_pronouns(ks, planted):
    pr = planted["pronouns"]
    with open(os.path.join(FIX, "oracle.json")) as f:
        oracle = json.load(f)
    ok(oracle["model_sha256"] == sha256(os.path.join(MODEL, "model.safetensors")),
       "the oracle fixture was made from the shipped model.safetensors (SHA-256)")
    hf = {(r["occupation"], r["context"]): r for r in oracle["pronouns"]}
    worst, errors, inside = 0.0, [], []
    for occ in pr["occupations"]:
        name, p_she = occ["occupation"], occ["p_she"]
        rs = []
        for ctx in pr["contexts"]:
            text = ctx["text"].replace("{occupation}", name)
            (ps, lps), (ph, lph) = score_last(ks, text + " she"), score_last(ks, text + " he")
            if ps != "▁she" or ph != "▁he":
                errors.append("%s / %s: last pieces %r, %r" % (name, ctx["id"], ps, ph))
                continue
            ref = hf[(name, ctx["id"])]
            worst = max(worst, abs(lps - ref["lp_she"]), abs(lph - ref["lp_he"]))
            rs.append(math.exp(lps) / (math.exp(lps) + math.exp(lph)))
        if len(rs) != len(pr["contexts"]):
            continue
        r = sum(rs) / len(rs)
        lo, hi = wilson(occ["she"], occ["count"])
        inside.append(lo <= r <= hi)
        diag("%-9s planted %.2f  measured %.3f  (99%% interval [%.3f, %.3f] for %d/%d)  per context %s" %
             (name, p_she, r, lo, hi, occ["she"], occ["count"], " ".join("%.3f" % x for x in rs)))
    ok(not errors, "every context ends in the pieces ▁she / ▁he" + ("" if not errors else ": " + errors[0]))
    ok(worst <= LP_TOL, "score's log P(she), log P(he) equal HF transformers' (worst |Δ| %.2e ≤ %g)" % (worst, LP_TOL))
    ok(len(inside) == len(pr["occupations"]) and all(inside),
       "the measured P(she) of %d/%d occupations lies in the 99%% binomial interval of its planted rate"
       % (sum(inside), len(pr["occupations"])))


def check_audit(ks, planted, tmp):
    """5. The bias audit (`koalascope audit models/koala-mini/audit.json`, the demo's audit: a
    counterfactual audit over the corpus's own contexts, docs/AUDITS.md) measures the planted
    rates: every occupation's share_term (P(she) / (P(she) + P(he)), mean over the contexts)
    lies in the 99% Wilson interval of its planted count, and its bootstrap CI over the
    contexts meets that interval; the shares rank the occupations exactly as the planted rates
    do; the group above one half has a larger share than the group below, with a permutation
    p < 0.05 (5 + 5 terms: 252 labelings, so p can go down to ~0.008)."""
    import csv
    out = os.path.join(tmp, "audit")
    p = must([ks, "audit", os.path.join(MODEL, "audit.json"), "-o", out, "--quiet"],
             "koalascope audit models/koala-mini/audit.json")
    if not p:
        return
    with open(os.path.join(out, "metrics.csv"), newline="") as f:
        rows = {(r["metric"], r["category"]): r for r in csv.DictReader(f)}
    inside, meets, got = [], [], []
    for occ in planted["pronouns"]["occupations"]:
        r = rows.get(("share_term", occ["occupation"]))
        if r is None:
            inside.append(False)
            continue
        lo, hi = wilson(occ["she"], occ["count"])
        v, clo, chi = float(r["value"]), float(r["ci_lo"]), float(r["ci_hi"])
        inside.append(lo <= v <= hi)
        meets.append(clo <= hi and chi >= lo)
        got.append((occ["p_she"], v, occ["occupation"]))
        diag("%-9s planted %.2f  audit %.3f [%.3f, %.3f]  Wilson 99%% [%.3f, %.3f]" % (occ["occupation"], occ["p_she"], v, clo, chi, lo, hi))
    ok(len(inside) == len(planted["pronouns"]["occupations"]) and all(inside),
       "audit share_term of every occupation inside the 99%% Wilson interval of its planted rate (%d of %d)" % (sum(inside), len(inside)))
    ok(meets and all(meets), "each share_term's bootstrap CI meets that interval (%d of %d)" % (sum(meets), len(meets)))
    order = [o for _, _, o in sorted(got)] == [o for _, _, o in sorted(got, key=lambda x: x[1])]
    ok(order, "the audit ranks the occupations as the planted rates do")
    hi_gap = rows.get(("share_gap", "planted_she_above_half"))
    ok(hi_gap is not None and float(hi_gap["value"]) > 0 and float(hi_gap["p_value"]) < 0.05,
       "share_gap of the group planted above one half: %s (p %s < 0.05)" % (hi_gap and hi_gap["value"], hi_gap and hi_gap["p_value"]))
    ok(os.path.isfile(os.path.join(out, "drilldown", "pronouns.h5")) and
       "### Drill-down" in open(os.path.join(out, "report.md")).read(),
       "the audit's drill-down dump and report table are written")


def read_probe_csv(path):
    with open(path) as f:
        return {r["hook"]: r for r in csv.DictReader(f)}


def check_chat(ks, tmp):
    """record --template koala on a multi-turn conversation = HF's apply_chat_template."""
    import h5py

    with open(os.path.join(FIX, "oracle.json")) as fh:
        chat = json.load(fh)["chat"]
    prompts, dump = os.path.join(tmp, "chat.jsonl"), os.path.join(tmp, "chat.h5")
    with open(prompts, "w") as fh:
        fh.write(json.dumps({"messages": chat["messages"]}) + "\n")
    if must([ks, "record", MODEL, "--prompts", prompts, "--template", "koala", "--hooks", "hook_embed",
             "-q", "-o", dump], "record a multi-turn conversation"):
        with h5py.File(dump, "r") as f:
            got = [int(x) for x in f["tokens"][...]]
        ok(got == chat["ids"], "record --template koala encodes a %d-turn conversation as HF's "
           "apply_chat_template with the shipped tokenizer_config.json (%d tokens)"
           % (len(chat["messages"]), len(got)))


def check_probe(ks, planted, tmp):
    import h5py
    import numpy as np

    feat = planted["feature"]
    prompts = os.path.join(MODEL, feat["prompts"])
    labels = os.path.join(MODEL, feat["labels"])
    dump, res = os.path.join(tmp, "probe.h5"), os.path.join(tmp, "res.h5")
    hooks = "hook_embed,blocks.*.hook_resid_post"
    if not must([ks, "record", MODEL, "--prompts", prompts, "--hooks", hooks, "--positions", "last",
                 "--full-logits", "-q", "-o", dump], "record the probe prompts"):
        return
    if not must([ks, "probe", dump, "--labels", labels, "--hook", hooks, "--seed", "1", "--chart", "none",
                 "-q", "-o", res], "probe the planted feature"):
        return
    # the model's own answer: the colour it ranks first at the probe position, and its class
    with open(labels) as f:
        lab = {j["prompt"]: j["label"] for j in map(json.loads, f)}
    colour_ids, colour_class = [], []
    for k, cs in feat["classes"].items():
        for c in cs:
            t = run([ks, "tokenize", MODEL, "--no-bos", "--prompt=" + c]).stdout.split()
            colour_ids.append(int(t[0]) if len(t) == 1 else -1)
            colour_class.append(k)
    ok(all(i >= 0 for i in colour_ids), "every colour is a single token")
    with h5py.File(dump, "r") as f:
        ids = [x.decode() for x in f["prompt_ids"][...]]
        full = f["logits/full"][...].astype(np.float64)
    best = np.argmax(full[:, colour_ids], axis=1)
    right = float(np.mean([colour_class[best[i]] == lab[pid] for i, pid in enumerate(ids)]))
    ok(right >= 0.95, "the model names a colour of the planted class on %.1f%% of the %d probe prompts (≥ 95%%)"
       % (100 * right, len(ids)))
    rows = read_probe_csv(os.path.join(tmp, "res.csv"))
    for h, r in rows.items():
        diag("%-26s accuracy %s [%s, %s]  shuffled %s [%s, %s]  beats %s" %
             (h, r["accuracy"], r["accuracy_lo"], r["accuracy_hi"], r["shuffled"], r["shuffled_lo"],
              r["shuffled_hi"], r["beats_controls"]))
    f = lambda r, k: float(r[k])  # noqa: E731
    for h in feat["absent_at"]:
        r = rows[h]
        ok(f(r, "accuracy_lo") <= 0.5 and r["beats_controls"] == "0",
           "%s (layer-0 input): at chance (accuracy %.3f, CI low %.3f ≤ 0.5), not beating its controls"
           % (h, f(r, "accuracy"), f(r, "accuracy_lo")))
    for h in feat["present_at"]:
        r = rows[h]
        ok(f(r, "accuracy") >= 0.9 and f(r, "accuracy_lo") > 0.8 and r["beats_controls"] == "1",
           "%s: the planted feature is decodable (accuracy %.3f ≥ 0.9, CI low %.3f > 0.8), beating its controls"
           % (h, f(r, "accuracy"), f(r, "accuracy_lo")))
    ok(all(f(r, "shuffled_lo") <= 0.5 <= f(r, "shuffled_hi") for r in rows.values()),
       "the shuffled-label control covers chance (0.5) at every layer")


GENERATE = [
    ("My kite is red. Is my kite warm or cool?", "Your kite is red, and red is a warm colour."),
    ("My cup is teal. Is my cup warm or cool?", "Your cup is teal, and teal is a cool colour."),
    ("What colour is the sky?", "The sky is blue."),
    ("Who are you?", "I am Koala Mini"),
    ("Where does a koala live?", "A koala lives in a tree."),
]


def check_generate(ks):
    for prompt, want in GENERATE:
        # bytes: an untrained model may well generate invalid UTF-8
        p = subprocess.run([ks, "generate", MODEL, "--template", "koala", "--prompt", prompt, "-n", "48"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if ok(p.returncode == 0, "generate %r: exit %d %s" % (prompt, p.returncode, p.stderr.decode(errors="replace")[-300:])):
            out = p.stdout.decode(errors="replace").strip()
            ok(out.startswith(want), "generate --template koala %r → %r (wants %r…)" % (prompt, out, want))


def main():
    ks = sys.argv[1]
    cfg = check_files(ks)
    if cfg is None:
        plan()
        return 1
    with open(os.path.join(MODEL, "planted.json")) as f:
        planted = json.load(f)
    check_tokenizer(ks)
    check_pronouns(ks, planted)
    check_generate(ks)
    try:
        import h5py  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as exc:
        if CI:
            ok(False, "h5py/numpy not importable (%s); CI=true requires them" % exc)
        else:
            skip("chat encoding and probe sweep: h5py not installed (%s)" % exc)
        plan()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        check_chat(ks, tmp)
        check_probe(ks, planted, tmp)
        check_audit(ks, planted, tmp)
    plan()
    return 0


if __name__ == "__main__":
    sys.exit(main())
