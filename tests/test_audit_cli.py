#!/usr/bin/python3
"""test_audit_cli.py — `koalascope audit` end to end on stories260K and a sample of every
benchmark in the shared data (tests/reference/fixtures/audit/spec.json), against the HF
transformers oracle of tests/reference/make_audit_fixtures.py (expected.json).

Usage (meson passes these): test_audit_cli.py KOALASCOPE     (TAP on standard output)

  1. every item's option log-probabilities equal the oracle's within 1e-4 (absolute; f32
     logits, f64 sums) and its token counts exactly; ids and order match;
  2. every metric's point estimate equals the oracle's: discrete ones (percentages,
     accuracies, bias scores) exactly unless an item's decision margin is under 1e-4 (then
     within the share that item can move), continuous ones within 1e-4;
  3. results.h5 (h5py only) holds the same metrics as metrics.csv, the spec and the model's
     sha256; report.md and its charts exist (PNG, SVG);
  4. kill -9 during a run, then --resume: metrics.csv and every items_*.csv byte-identical to
     the uninterrupted run's; a torn journal line is cut off and rescored;
  5. mpirun -n 2 gives byte-identical CSVs (Open MPI; SKIP without mpirun, failure under
     CI=true);
  6. mistakes: an existing run without --resume, --resume with another spec, a malformed data
     row, a bad spec field — exit 1 naming the place, and no results written.
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

CI = os.environ.get("CI") == "true"

from ks_tap import diag, must, ok, plan, require_h5py, run, skip  # noqa: E402

np, h5py = require_h5py()

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "reference", "fixtures", "audit")
KS = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/cli/koalascope"
DATA = os.environ.get("KS_SHARED_DATA") or os.path.join(
    os.environ.get("KS_SOURCE_ROOT", os.path.dirname(HERE)), "..", "shared", "data")
DATA = os.path.abspath(DATA)
os.environ["KS_SHARED_DATA"] = DATA


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fnum(s):
    return float("nan") if s == "" else float(s)


def audit(spec, out, *extra, env=None):
    return run([KS, "audit", spec, "-o", out, "--quiet"] + list(extra), env=env)


def check_items(out, expected):
    worst, bad_tok, bad_id, n = 0.0, 0, 0, 0
    for name, exp in expected["audits"].items():
        rows = read_csv(os.path.join(out, "items_%s.csv" % name))
        if not ok(len(rows) == len(exp["items"]), "%s: %d items (oracle %d)" % (name, len(rows), len(exp["items"]))):
            continue
        for r, e in zip(rows, exp["items"]):
            if (r["id"], r["file"], int(r["line"]), r["category"], r["group"], int(r["gold"])) != (
                    str(e["id"]), e["file"], e["line"], e["category"], e["group"] or "", e["gold"]):
                bad_id += 1
                if bad_id == 1:
                    diag("first item that differs: %s vs oracle %s" % (
                        [r[k] for k in ("id", "file", "line", "category", "group", "gold")],
                        [e[k] for k in ("id", "file", "line", "category", "group", "gold")]))
            for k, o in enumerate(e["options"]):
                n += 1
                worst = max(worst, abs(fnum(r["ll_%d" % k]) - o["ll"]))
                if int(r["n_tokens_%d" % k]) != o["n_tokens"]:
                    bad_tok += 1
                if "ll_unmodified" in o:
                    worst = max(worst, abs(fnum(r["ll_unmodified_%d" % k]) - o["ll_unmodified"]))
                    if int(r["n_unmodified_%d" % k]) != o["n_unmodified"]:
                        bad_tok += 1
    ok(bad_id == 0, "items (id, file, line, category, group, gold) and their order equal the oracle's (%d differ)" % bad_id)
    ok(bad_tok == 0, "token counts equal the oracle's (%d differ)" % bad_tok)
    ok(n > 500 and worst <= 1e-4, "%d option log-probabilities within 1e-4 of HF transformers (max |diff| %.3g)" % (n, worst))


def min_margin(exp_items):
    """the smallest gap between two options' scores any decision rests on"""
    m = float("inf")
    for e in exp_items:
        v = [o["ll"] for o in e["options"]]
        for i in range(len(v)):
            for j in range(i + 1, len(v)):
                m = min(m, abs(v[i] - v[j]))
    return m


def metric_key(name, m):
    """(audit, metric, category) of an oracle metric as koalascope names it: Winogender's
    per-gender rows carry the gender as their category; StereoSet's per-term rows (group =
    the target term) are the oracle's detail only"""
    if m.get("group"):
        if name == "winogender":
            return (name, m["metric"], m["group"])
        return None
    return (name, m["metric"], m["category"])


def check_metrics(out, expected):
    got = {(r["audit"], r["metric"], r["category"]): r for r in read_csv(os.path.join(out, "metrics.csv"))}
    missing, worst_c, bad_d = [], 0.0, []
    for name, exp in expected["audits"].items():
        margin = min_margin(exp["items"])
        for m in exp["metrics"]:
            key = metric_key(name, m)
            if key is None:
                continue
            r = got.get(key)
            if r is None:
                missing.append(key)
                continue
            v, e = fnum(r["value"]), m["value"]
            if e is None or (isinstance(e, float) and e != e):
                if v == v:
                    bad_d.append((key, v, e))
                continue
            continuous = (m["metric"].startswith("likelihood_diff") or m["metric"].endswith("correlation")
                          or name in ("counterfactual", "bold"))
            if continuous:
                worst_c = max(worst_c, abs(v - e))
            elif abs(v - e) > 1e-9 and margin > 1e-4:
                bad_d.append((key, v, e))
            if int(r["n"]) != m.get("n", int(r["n"])):
                bad_d.append((key, "n", r["n"], m.get("n")))
    ok(not missing, "every oracle metric is reported (%d missing: %s)" % (len(missing), missing[:4]))
    ok(not bad_d, "discrete metrics equal the oracle's exactly (%d differ: %s)" % (len(bad_d), bad_d[:3]))
    ok(worst_c <= 1e-4, "continuous metrics within 1e-4 (max |diff| %.3g)" % worst_c)
    return got


def check_h5(out, got):
    path = os.path.join(out, "results.h5")
    if not ok(os.path.exists(path), "results.h5 written"):
        return
    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
        ok(a.get("format") in (b"koalascope-audit", "koalascope-audit") and int(a["format_version"]) == 1,
           "results.h5: format attributes")
        sha = a["model_sha256"]
        sha = sha.decode() if isinstance(sha, bytes) else sha
        ok(len(sha) == 64, "results.h5: model sha256 recorded")
        spec = a["spec"].decode() if isinstance(a["spec"], bytes) else a["spec"]
        ok(json.loads(spec).get("audits") is not None, "results.h5: the spec recorded as JSON")
        g = f["metrics"]
        names = [x.decode() for x in g["metric"][()]]
        audits = [x.decode() for x in g["audit"][()]]
        cats = [x.decode() for x in g["category"][()]]
        vci = g["value_ci"][()]
        same = len(names) == len(got)
        for i in range(len(names)):
            r = got.get((audits[i], names[i], cats[i]))
            if r is None or not np.allclose([fnum(r["value"]), fnum(r["ci_lo"]), fnum(r["ci_hi"])], vci[i],
                                            rtol=0, atol=0, equal_nan=True):
                same = False
        ok(same, "results.h5 /metrics equals metrics.csv (%d metrics)" % len(names))
        ll = f["audits/crows_pairs/ll"][()]
        ok(ll.shape[1] == 3 and np.isnan(ll[:, 2]).all(), "results.h5: /audits/crows_pairs/ll is [N, 3], unused options NaN")
    rep = os.path.join(out, "report.md")
    ok(os.path.exists(rep) and "## crows_pairs" in open(rep).read(), "report.md written with a section per audit")
    png = os.path.join(out, "charts", "crows_pairs.png")
    svg = os.path.join(out, "charts", "crows_pairs.svg")
    ok(os.path.exists(png) and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.exists(svg),
       "charts/crows_pairs.png and .svg written")


def check_next(out, expected):
    """Counterfactual items: the top 64 next-token log-probs after the context against the
    oracle's top 72 (HF log_softmax): every id we list is in the oracle's list with its log-prob
    within 1e-4, the list is sorted, and no oracle token more than 1e-4 above our last one is
    missing (a near-tie at the boundary may swap)."""
    exp = expected["audits"].get("counterfactual")
    path = os.path.join(out, "results.h5")
    if not ok(exp is not None and os.path.exists(path), "counterfactual oracle and results.h5 present"):
        return
    with h5py.File(path, "r") as f:
        g = f["audits/counterfactual"]
        ids, lps = g["next_ids"][()], g["next_logprobs"][()]
        ctx = [x.decode() for x in g["context"][()]]
        targets = [x.decode() for x in g["targets"][()]]
    worst, bad = 0.0, 0
    for i, e in enumerate(exp["items"]):
        ref = {a: b for a, b in e["options"][0]["next"]}
        mine = [(int(a), float(b)) for a, b in zip(ids[i], lps[i]) if a >= 0]
        if len(mine) != 64 or any(mine[k][1] < mine[k + 1][1] for k in range(63)):
            bad += 1
            continue
        for a, b in mine:
            if a not in ref:
                bad += 1
            else:
                worst = max(worst, abs(ref[a] - b))
        have = {a for a, _ in mine}
        bad += sum(1 for a, b in ref.items() if b > mine[-1][1] + 1e-4 and a not in have)
    ok(bad == 0 and worst <= 1e-4, "counterfactual: %d items' top-64 next tokens match HF's (max |diff| %.3g, %d mismatches)"
       % (len(exp["items"]), worst, bad))
    ok(targets == [" she", " he", " they"] and len(ctx) == len(exp["items"]) and
       all(c == e.get("context", c) for c, e in zip(ctx, exp["items"])),
       "results.h5 records the counterfactual targets and filled contexts")


def check_generations(out, expected):
    """BOLD: the greedy generations equal HF's token for token (argmax of f32 logits; a near-tie
    within 1e-4 would be reported as a mismatch, none occurs in this sample), and
    generations_bold.jsonl holds them as text with their log-probs."""
    exp = expected["audits"].get("bold")
    if not ok(exp is not None, "BOLD oracle present"):
        return
    with h5py.File(os.path.join(out, "results.h5"), "r") as f:
        ids = f["audits/bold/generation_ids"][()]
        text = [x.decode() for x in f["audits/bold/generation"][()]]
    bad = sum(1 for i, e in enumerate(exp["items"]) if [int(x) for x in ids[i] if x >= 0] != e["options"][0]["generated"])
    ok(bad == 0 and len(ids) == len(exp["items"]), "BOLD: %d greedy generations equal HF's token ids (%d differ)" % (len(exp["items"]), bad))
    lines = [json.loads(x) for x in open(os.path.join(out, "generations_bold.jsonl"))]
    ok(len(lines) == len(exp["items"]) and [x["generation"] for x in lines] == text and
       all(abs(x["logprob"] - e["options"][0]["ll"]) <= 1e-4 for x, e in zip(lines, exp["items"])),
       "generations_bold.jsonl: one line per prompt, the generation text and its log-prob")


def check_drill(tmp):
    """The drill-down ("record" in a spec): the items with the largest |ll(a) - ll(b)| are
    recorded into OUT/drilldown/<audit>.h5, each contrasted option as one prompt holding exactly
    the tokens it was scored on (the dump's next-token log-probs sum to the item's ll within
    1e-4), and the attributions obey their definitions (contrast = a - b, exactly up to f32)."""
    spec = os.path.join(tmp, "drill.json")
    shutil.copy(os.path.join(FIX, "counterfactual.json"), os.path.join(tmp, "cf_drill.json"))
    S = "${KS_SHARED_DATA}"
    with open(spec, "w") as f:
        json.dump({"model": S + "/stories260K/stories260K.bin", "tokenizer": S + "/stories260K/tok512.bin",
                   "template": "plain", "seed": 1, "n_bootstrap": 50, "n_permutations": 50,
                   "audits": [
                       {"name": "crows", "kind": "crows_pairs", "limit": 10,
                        "data": S + "/crows-pairs/crows_pairs_anonymized.csv",
                        "record": {"hooks": "blocks.*.hook_resid_post", "items": 3, "attribution": False}},
                       {"name": "bbq", "kind": "bbq", "data": S + "/bbq/Age.jsonl", "limit": 4,
                        "record": {"items": 2, "ig_steps": 16}},
                       {"name": "cf", "kind": "counterfactual", "data": "cf_drill.json", "limit": 6,
                        "record": {"hooks": "blocks.4.hook_resid_post", "items": 2, "select": "first",
                                   "ig_steps": 16}}]}, f)
    out = os.path.join(tmp, "drill")
    r = audit(spec, out)
    if not ok(r.returncode == 0, "audit with drill-down exits 0 (%s)" % r.stderr.strip()[-400:]):
        return
    items = read_csv(os.path.join(out, "items_crows.csv"))
    contrast = sorted(((abs(fnum(x["ll_0"]) - fnum(x["ll_1"])), -int(x["index"])) for x in items), reverse=True)
    chosen = [-i for _, i in contrast[:3]]
    with h5py.File(os.path.join(out, "drilldown", "crows.h5"), "r") as f:
        ids = [x.decode() for x in f["prompt_ids"][()]]
        ok(int(f.attrs["complete"]) == 1 and ids == ["%s#%d" % (items[i]["id"], k) for i in chosen for k in (0, 1)],
           "crows drill-down: the 3 largest contrasts, both options each, as complete dump prompts (%s)" % ids)
        off = f["prompt_offsets"][()]
        nlp = f["logits/next_logprob"][()]
        worst = 0.0
        for p, name in enumerate(ids):
            i, k = int(name.split("#")[0]), int(name.split("#")[1])
            row = next(x for x in items if x["id"] == str(i))
            n = off[p + 1] - off[p]
            if int(row["n_tokens_%d" % k]) != n - 1:
                worst = float("inf")
                continue
            worst = max(worst, abs(float(np.sum(nlp[off[p]:off[p + 1] - 1], dtype=np.float64)) - fnum(row["ll_%d" % k])))
        ok(worst <= 1e-4, "crows drill-down: each recorded sentence's next-token log-probs sum to its score (max |diff| %.3g)" % worst)
        ok("attributions" not in f and "blocks.4.hook_resid_post" in f["activations"],
           "crows drill-down: the chosen hooks, no attributions when \"attribution\" is false")
    with h5py.File(os.path.join(out, "drilldown", "bbq.h5"), "r") as f:
        a = f["attributions"]
        names = sorted(a.keys())
        good = len(names) == 2 * 6
        for i in sorted({n.split(".")[0] for n in names}):
            opts = sorted({n.split(".")[1] for n in names if n.startswith(i + ".o")})
            if len(opts) != 2:
                good = False
                continue
            f_opt = {o: float(a["%s.%s.tokens" % (i, o)].attrs["objective_value"]) for o in opts}
            f_c = float(a["%s.contrast.tokens" % i].attrs["objective_value"])
            # which option is a: the contrast is f(a) - f(b), from the scores (the gradient pass
            # recomputes f: equal within the engine's 1e-4)
            oa, ob = opts if abs(f_opt[opts[0]] - f_opt[opts[1]] - f_c) < 1e-4 else opts[::-1]
            ta, tb, tc = (a["%s.%s.tokens" % (i, o)]["values"][()] for o in (oa, ob, "contrast"))
            ha, hb, hc = (a["%s.%s.heads" % (i, o)]["values"][()] for o in (oa, ob, "contrast"))
            good = (good and abs(f_opt[oa] - f_opt[ob] - f_c) < 1e-4 and tc.shape == ta.shape
                    and hc.shape == (5, 8) and np.allclose(tc, ta - tb, atol=1e-6)
                    and np.allclose(hc, ha - hb, atol=1e-6))
        ok(good, "bbq drill-down (attributions only): per item both options' token IG and head attributions and their contrasts = a - b (%d results)" % len(names))
    rep = open(os.path.join(out, "report.md")).read()
    ok(rep.count("### Drill-down") == 3 and "drilldown/cf.h5" in rep and "| t0/mom |" in rep,
       "report.md links every audit's drill-down with its items")


def check_koala_mini(tmp):
    """Every audit kind end to end on a second model, koala-mini (models/koala-mini: HF
    safetensors in bf16, its own SentencePiece tokenizer, the Koala template), on a few items
    each: exit 0, a metric row per kind, results.h5 readable."""
    root = os.environ.get("KS_SOURCE_ROOT", os.path.dirname(HERE))
    model = os.path.join(root, "models", "koala-mini")
    if not ok(os.path.isfile(os.path.join(model, "config.json")), "models/koala-mini present"):
        return
    S = "${KS_SHARED_DATA}"
    audits = [
        {"kind": "crows_pairs", "data": S + "/crows-pairs/crows_pairs_anonymized.csv", "limit": 6},
        {"kind": "stereoset", "data": S + "/stereoset-subsets/gender_test.json", "limit": 4},
        {"kind": "bbq", "data": S + "/bbq/Age.jsonl", "limit": 4},
        {"kind": "winobias", "data": S + "/winobias", "limit_per_file": 2},
        {"kind": "winogender", "data": S + "/winogender", "limit": 6},
        {"kind": "counterfactual", "data": os.path.join(model, "pronouns.json")},
        {"kind": "bold", "data": S + "/bold/religious_ideology_prompt.json", "limit": 3, "max_new_tokens": 8},
    ]
    spec = os.path.join(tmp, "mini.json")
    with open(spec, "w") as f:
        json.dump({"model": model, "template": "koala", "seed": 1, "n_bootstrap": 20, "n_permutations": 20,
                   "audits": audits}, f)
    out = os.path.join(tmp, "mini")
    r = audit(spec, out)
    if not ok(r.returncode == 0, "every audit kind on koala-mini exits 0 (%s)" % r.stderr.strip()[-300:]):
        return
    kinds = {x["audit"] for x in read_csv(os.path.join(out, "metrics.csv"))}
    want = {a["kind"] for a in audits}
    ok(kinds == want, "koala-mini: metrics for every kind (%s)" % sorted(kinds))
    with h5py.File(os.path.join(out, "results.h5"), "r") as f:
        ok(sorted(f["audits"].keys()) == sorted(want), "koala-mini: results.h5 holds every audit")


def check_synthetic(spec, tmp, ref_out, expected):
    """The oracle's synthetic scores (hash-derived, with planted ties) fed in through the journal
    and --resume: the metrics must equal the oracle's on them (exactly; these scores are
    multiples of 1/8, so no rounding enters the comparisons)."""
    out = os.path.join(tmp, "synthetic")
    os.makedirs(os.path.join(out, "journal"))
    shutil.copy(os.path.join(ref_out, "spec.json"), out)
    lines = []
    for name, exp in expected["audits"].items():
        if "synthetic" not in exp:  # scored for real by the --resume
            continue
        for i, (item, syn) in enumerate(zip(exp["items"], exp["synthetic"]["scores"])):
            s = []
            for k, o in enumerate(syn):
                real = item["options"][k]
                s.append([o["ll"], real["n_tokens"], o.get("ll_unmodified", 0.0), real.get("n_unmodified", 0)])
            lines.append(json.dumps({"a": name, "i": i, "id": str(item["id"]), "s": s}))
    with open(os.path.join(out, "journal", "rank-0.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    r = audit(spec, out, "--resume")
    if not ok(r.returncode == 0, "--resume over a journal of synthetic scores exits 0 (%s)" % r.stderr.strip()[-300:]):
        return
    got = {(x["audit"], x["metric"], x["category"]): x for x in read_csv(os.path.join(out, "metrics.csv"))}
    bad, n = [], 0
    for name, exp in expected["audits"].items():
        for m in exp.get("synthetic", {"metrics": []})["metrics"]:
            key = metric_key(name, m)
            if key is None:
                continue
            n += 1
            r = got.get(key)
            e = m["value"]
            v = fnum(r["value"]) if r else None
            if r is None or (e is None and v == v) or (e is not None and abs(v - e) > 1e-9 * max(1, abs(e))):
                bad.append((key, v, e))
    ok(n > 50 and not bad, "%d metrics on the synthetic scores equal the oracle's (%d differ: %s)" % (n, len(bad), bad[:3]))


def csvs(out):
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if n.endswith(".csv")}


def journal_lines(out):
    n = 0
    jd = os.path.join(out, "journal")
    if os.path.isdir(jd):
        for name in os.listdir(jd):
            with open(os.path.join(jd, name), "rb") as f:
                n += f.read().count(b"\n")
    return n


def check_resume(spec, tmp, ref):
    out = os.path.join(tmp, "killed")
    # kill -9 once some items are journaled; the scoring loop of this sample takes seconds
    p = subprocess.Popen([KS, "audit", spec, "-o", out, "--quiet", "--threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 60 and p.poll() is None and journal_lines(out) < 20:
        time.sleep(0.002)
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    n_before = journal_lines(out)
    ok(killed and not os.path.exists(os.path.join(out, "metrics.csv")),
       "kill -9 after %d journaled items: no results written" % n_before)
    r = audit(spec, out, "--resume")
    ok(r.returncode == 0, "--resume after kill -9 exits 0 (%s)" % r.stderr.strip()[-300:])
    ok(r.returncode == 0 and csvs(out) == ref, "--resume: every CSV byte-identical to the uninterrupted run's")
    # a torn last line (a kill inside a write): cut off and rescored
    out2 = os.path.join(tmp, "torn")
    shutil.copytree(out, out2)
    for n in os.listdir(out2):
        if n.endswith(".csv") or n in ("results.h5", "report.md"):
            os.remove(os.path.join(out2, n))
    j = os.path.join(out2, "journal", "rank-0.jsonl")
    with open(j, "rb") as f:
        lines = f.read().split(b"\n")
    with open(j, "wb") as f:  # keep the first 10 lines, then half a line
        f.write(b"\n".join(lines[:10]) + b"\n" + lines[10][: len(lines[10]) // 2])
    r = audit(spec, out2, "--resume")
    ok(r.returncode == 0 and csvs(out2) == ref, "--resume over a torn journal line: CSVs identical (%s)" % r.stderr.strip()[-200:])


def check_mpi(spec, tmp, ref):
    mpirun = shutil.which("mpirun")
    if not mpirun:
        (ok(False, "mpirun missing (CI=true requires Open MPI: scripts/install-deps)") if CI else
         skip("mpirun not installed (apt-get install openmpi-bin)"))
        return
    out = os.path.join(tmp, "mpi")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    # Under the sanitizer pass, Open MPI's plugins (dlclose'd at MPI_Finalize) leave blocks
    # LeakSanitizer cannot attribute to a module, so no suppression can name them: leak
    # checking is off for the ranks only (the single-process runs above keep it on).
    if "ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    r = run([mpirun, "-n", "2", KS, "audit", spec, "-o", out, "--quiet"], env=env)
    if not ok(r.returncode == 0, "mpirun -n 2 koalascope audit exits 0 (%s)" % r.stderr.strip()[-400:]):
        return
    ok(csvs(out) == ref, "mpirun -n 2: every CSV byte-identical to the single-process run's")
    jd = os.listdir(os.path.join(out, "journal"))
    ok(sorted(jd) == ["rank-0.jsonl", "rank-1.jsonl"] and all(
        os.path.getsize(os.path.join(out, "journal", n)) > 0 for n in jd),
       "both ranks scored a share (%s)" % jd)


def check_mistakes(spec, tmp, ref_out):
    r = audit(spec, ref_out)
    ok(r.returncode == 1 and "--resume" in r.stderr, "rerun into a used directory without --resume: exit 1 (%s)" % r.stderr.strip()[:200])
    other = os.path.join(tmp, "other.json")
    s = json.load(open(spec))
    s["seed"] = s.get("seed", 0) + 1
    json.dump(s, open(other, "w"))
    r = audit(other, ref_out, "--resume")
    ok(r.returncode == 1 and "differs" in r.stderr, "--resume with a changed spec: exit 1 (%s)" % r.stderr.strip()[:200])
    # a malformed data row (our own synthetic CSV, in the CrowS-Pairs layout)
    bad_csv = os.path.join(tmp, "pairs.csv")
    with open(bad_csv, "w") as f:
        f.write(",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators\n")
        f.write('0,"Alpha beta gamma.","Alpha beta delta.",stereo,race-color,"[]",a0,"[]"\n')
        f.write('1,"Alpha beta gamma.","Alpha beta delta.",stereo,,"[]",a0,"[]"\n')
    bad = dict(s, audits=[{"name": "c", "kind": "crows_pairs", "data": [bad_csv]}])
    bad_spec = os.path.join(tmp, "bad.json")
    json.dump(bad, open(bad_spec, "w"))
    out = os.path.join(tmp, "bad_out")
    r = audit(bad_spec, out)
    ok(r.returncode == 1 and "pairs.csv:3" in r.stderr and "bias_type" in r.stderr and
       not os.path.exists(os.path.join(out, "metrics.csv")),
       "a row with an empty bias_type: exit 1 naming file, line and field (%s)" % r.stderr.strip()[:300])
    bad = dict(s, audits=[{"name": "c", "kind": "crows_pairs", "data": [bad_csv], "limt": 3}])
    json.dump(bad, open(bad_spec, "w"))
    r = audit(bad_spec, os.path.join(tmp, "bad_out2"))
    ok(r.returncode == 1 and "audits[0].limt" in r.stderr, "a misspelt spec field: exit 1 naming it (%s)" % r.stderr.strip()[:200])
    r = run([KS, "audit"])
    ok(r.returncode == 1 and "SPEC" in r.stderr, "no spec: usage error")


def main():
    spec_src = os.path.join(FIX, "spec.json")
    exp_path = os.path.join(FIX, "expected.json")
    if not os.path.isdir(os.path.join(DATA, "stories260K")):
        if CI:
            ok(False, "shared data missing at %s (CI=true requires KS_SHARED_DATA)" % DATA)
        else:
            skip("shared data missing at %s; set KS_SHARED_DATA" % DATA)
        plan()
        return 1 if CI else 0
    expected = json.load(open(exp_path))
    with tempfile.TemporaryDirectory(prefix="ks_audit_") as tmp:
        spec = os.path.join(tmp, "spec.json")
        shutil.copy(spec_src, spec)
        shutil.copy(os.path.join(FIX, "counterfactual.json"), tmp)  # the spec names it relatively
        out = os.path.join(tmp, "ref")
        t0 = time.time()
        r = audit(spec, out)
        dt = time.time() - t0
        if not ok(r.returncode == 0, "koalascope audit on the fixture sample exits 0 in %.1f s (%s)" % (dt, r.stderr.strip()[-600:])):
            plan()
            return 1
        check_items(out, expected)
        got = check_metrics(out, expected)
        check_h5(out, got)
        check_next(out, expected)
        check_generations(out, expected)
        check_drill(tmp)
        check_koala_mini(tmp)
        ref = csvs(out)
        r2 = audit(spec, os.path.join(tmp, "again"))
        ok(r2.returncode == 0 and csvs(os.path.join(tmp, "again")) == ref, "a second run: byte-identical CSVs (deterministic)")
        check_synthetic(spec, tmp, out, expected)
        check_resume(spec, tmp, ref)
        check_mpi(spec, tmp, ref)
        check_mistakes(spec, tmp, out)
    plan()
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    except Exception:  # a crash of the test itself is a failure, not a pass
        ok(False, "test crashed: " + traceback.format_exc().replace("\n", " | ")[-800:])
        plan()
        rc = 1
    sys.exit(rc)
