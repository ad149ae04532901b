#!/usr/bin/python3
"""test_notebook.py — `koalascope export notebook`: the notebooks it writes are valid nbformat 4,
run top to bottom under nbclient (a python3 kernel) with no cell error, open the dump by a path
relative to the notebook (the folder holding both is renamed before they run, so an absolute
path would fail), draw figures, and print KS_CHECK values equal to what this test reads from
the dump directly with h5py (docs/NOTEBOOKS.md says which value each name is; the test's own
reading follows docs/FORMAT.md, not the notebook's code). Also the refusals: a kind whose data
the dump lacks, a dump given to --kind probe, audit, a prompt out of range: exit 1, no file left
behind. The probe kind runs on the results of `koalascope probe` over the test's dump; its
KS_CHECK is the sweep's best accuracy, read from the results file with h5py. The audit kind runs
on the results.h5 of a small `koalascope audit` (10 CrowS-Pairs pairs, 12 Winogender sentences);
its KS_CHECK is the first metric with a value, read from the run's metrics.csv.

Usage (meson passes it): test_notebook.py KOALASCOPE      (TAP on standard output)

Environment: KS_SOURCE_ROOT, KS_SHARED_DATA (default $KS_SOURCE_ROOT/../shared/data), CI
("true": missing nbclient/ipykernel/matplotlib/nbformat or shared data fail instead of being
skipped; scripts/install-deps installs them).

Tolerance: KS_CHECK values 1e-6 absolute. Both sides read the same float32 values from the same
file; the notebook prints repr(float) (exact), and norms are summed in float64 on both sides,
so only summation order differs (~1e-15 relative).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

CI = os.environ.get("CI") == "true"
TOL = 1e-6
CELL_TIMEOUT = 120

from ks_tap import diag, ok, plan, require_h5py, skip  # noqa: E402

np, h5py = require_h5py()

PROMPTS = ["Once upon a time, there was a little girl.",
           "Tom and Lily went to the park. They saw a big dog!"]
HOOKS = "blocks.*.hook_resid_post,blocks.0-1.attn.hook_pattern"


def require_jupyter():
    """(nbformat, nbclient), or exit like ks_tap.require_h5py: SKIP, or a failure under CI."""
    try:
        import ipykernel  # noqa: F401  (the kernel nbclient starts)
        import matplotlib  # noqa: F401
        import nbclient
        import nbformat
    except ImportError as exc:
        if CI:
            print("1..1")
            print("not ok 1 - nbformat/nbclient/ipykernel/matplotlib not importable (%s); CI=true "
                  "requires them (scripts/install-deps)" % exc)
            sys.exit(1)
        print("1..0 # SKIP nbclient, ipykernel, matplotlib or nbformat not installed (%s)" % exc)
        sys.exit(0)
    return nbformat, nbclient


nbformat, nbclient = require_jupyter()


def run(args, what):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        ok(False, "%s: exit %d: %s" % (what, p.returncode, p.stderr.strip()[-400:]))
        diag("command: " + " ".join(args))
        return None
    return p


def refuses(args, what, needles, out):
    """The command exits 1 naming each of needles on stderr, and out is not created."""
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    missing = [n for n in needles if n not in p.stderr]
    ok(p.returncode == 1 and not missing and not os.path.exists(out),
       "%s: exit 1 naming %s, no notebook written (exit %d, stderr %r)"
       % (what, needles, p.returncode, p.stderr.strip()[-300:]))


def execute(path):
    """Run the notebook in its own folder; (notebook, error text or None, seconds)."""
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.dirname(path)}})
    try:
        client.execute()
        err = None
    except Exception as exc:  # CellExecutionError and kernel failures: report, do not crash
        err = "%s: %s" % (type(exc).__name__, str(exc)[-600:])
    return nb, err, time.time() - t


def outputs(nb):
    """(KS_CHECK name -> value, number of image/png outputs, error outputs)"""
    checks, pngs, errors = {}, 0, []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                for line in o.get("text", "").splitlines():
                    w = line.split()
                    if len(w) == 3 and w[0] == "KS_CHECK":
                        checks[w[1]] = float(w[2])
            elif o.get("output_type") == "error":
                errors.append("%s: %s" % (o.get("ename"), o.get("evalue")))
            if "image/png" in o.get("data", {}):
                pngs += 1
    return checks, pngs, errors


def dump_path_literal(path):
    """The DUMP_PATH the notebook's setup cell opens."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for line in cell.source.splitlines():
            for var in ("DUMP_PATH = ", "RESULTS_PATH = "):
                if line.startswith(var):
                    return json.JSONDecoder().raw_decode(line, len(var))[0]
    return None


# ------------------------------------------------------------------ the values, read directly

def expect_resid_norm(f, p):
    """L2 norm of blocks.0.hook_resid_post at position 0 of prompt p (float64)."""
    r0, r1 = (int(x) for x in f["row_offsets"][p:p + 2])
    pos = f["row_positions"][r0:r1]
    i = int(np.flatnonzero(pos == 0)[0])
    row = f["activations/blocks.0.hook_resid_post"][r0 + i].astype(np.float64)
    return float(np.sqrt(np.sum(row * row)))


def expect_attn(f, p):
    """blocks.0.attn.hook_pattern, head slot 0, prompt p's last row (query q), key q // 2: read
    straight from the packed causal row (docs/FORMAT.md), no square map rebuilt."""
    r0, r1 = (int(x) for x in f["row_offsets"][p:p + 2])
    r = r1 - 1
    q = int(f["row_positions"][r])
    start = int(f["attn_row_starts"][r])
    a0 = int(f["attn_offsets"][p])
    if start != a0 + q * (q + 1) // 2:  # every position recorded: FORMAT.md's closed form
        return float("nan")
    return float(f["activations/blocks.0.attn.hook_pattern"][0, start + q // 2])


def expect_attribution(f):
    """The first result by name: its finite value of largest magnitude."""
    names = sorted(n for n in f["attributions"] if "~" not in n)
    v = f["attributions"][names[0]]["values"][...].ravel().astype(np.float64)
    fin = np.isfinite(v)
    return float(v[int(np.argmax(np.where(fin, np.abs(v), -1.0)))])


def main():
    if len(sys.argv) < 2:
        print("usage: test_notebook.py KOALASCOPE", file=sys.stderr)
        return 2
    ks = os.path.abspath(sys.argv[1])
    root = os.environ.get("KS_SOURCE_ROOT") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..")
    data = os.environ.get("KS_SHARED_DATA") or os.path.join(root, "..", "shared", "data")
    model = os.path.join(data, "stories260K", "stories260K.bin")
    tok = os.path.join(data, "stories260K", "tok512.bin")
    import matplotlib
    diag("nbformat %s, nbclient %s, matplotlib %s, h5py %s" % (
        nbformat.__version__, nbclient.__version__, matplotlib.__version__, h5py.__version__))

    p = subprocess.run([ks, "export", "notebook", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    ok(p.returncode == 0 and "--kind" in p.stdout and "probe" in p.stdout and "audit" in p.stdout,
       "export notebook --help: exit 0, names --kind (probe and audit among them)")

    if not (os.path.isfile(model) and os.path.isfile(tok)):
        if CI:
            ok(False, "shared data %s is missing (CI=true requires KS_SHARED_DATA)" % model)
        else:
            skip("shared data %s is missing; set KS_SHARED_DATA" % model)
        plan()
        return 0

    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="ks_notebook_") as tmp:
        work = os.path.join(tmp, "a")
        nbdir = os.path.join(work, "notebooks")
        os.makedirs(nbdir)
        jl = os.path.join(work, "prompts.jsonl")
        with open(jl, "w", encoding="utf-8") as fh:
            for i, s in enumerate(PROMPTS):
                fh.write(json.dumps({"id": "s%d" % i, "prompt": s}) + "\n")
        dump = os.path.join(work, "dump.h5")
        if run([ks, "record", model, "--tokenizer", tok, "--prompts", jl, "--hooks", HOOKS,
                "--topk", "5", "--threads", "2", "-q", "-o", dump], "record") is None:
            plan()
            return 0
        bare = os.path.join(work, "bare.h5")  # no patterns, no /attributions
        run([ks, "record", model, "--tokenizer", tok, "--prompts", jl, "--hooks",
             "blocks.*.hook_resid_post", "--threads", "2", "-q", "-o", bare], "record (bare)")
        attr_ok = True
        for method in ("ig", "heads"):
            attr_ok &= run([ks, "attribute", model, "--tokenizer", tok, "--prompt",
                            "Once upon a time, there was a little", "--target", " girl",
                            "--method", method, "--steps", "16", "-q", "-o", dump],
                           "attribute --method %s -o dump" % method) is not None

        # refusals
        x = os.path.join(nbdir, "refused.ipynb")
        refuses([ks, "export", "notebook", bare, "--kind", "attention", "-o", x],
                "--kind attention on a dump without patterns", ["hook_pattern"], x)
        refuses([ks, "export", "notebook", bare, "--kind", "attribution", "-o", x],
                "--kind attribution on a dump without /attributions", ["/attributions"], x)
        refuses([ks, "export", "notebook", dump, "--kind", "probe", "-o", x],
                "--kind probe on a dump (not a probe results file)", ["not a koalascope probe results file"], x)
        refuses([ks, "export", "notebook", dump, "--kind", "audit", "-o", x],
                "--kind audit on a dump (not audit results)", ["not a koalascope audit results file"], x)
        # a small audit: 10 CrowS-Pairs pairs and 12 Winogender sentences
        spec = os.path.join(work, "audit.json")
        with open(spec, "w") as fh:
            json.dump({"model": model, "tokenizer": tok, "seed": 1, "n_bootstrap": 50, "n_permutations": 50,
                       "template": "plain",
                       "audits": [{"kind": "crows_pairs", "data": os.path.join(data, "crows-pairs", "crows_pairs_anonymized.csv"), "limit": 10},
                                  {"kind": "winogender", "data": os.path.join(data, "winogender"), "limit": 12}]}, fh)
        audit_ok = run([ks, "audit", spec, "-o", os.path.join(work, "audit"), "--quiet"], "audit") is not None
        # a probe sweep over the dump's two prompts: each token labelled by its piece's first letter
        labels = os.path.join(work, "labels.jsonl")
        with open(labels, "w") as fh:
            for p_ in range(len(PROMPTS)):
                fh.write(json.dumps({"prompt": p_, "label": "a-m", "token": "^[a-m]"}) + "\n")
                fh.write(json.dumps({"prompt": p_, "label": "other", "token": "^[^a-m]"}) + "\n")
        probe_res = os.path.join(work, "probe.h5")
        probe_ok = run([ks, "probe", dump, "--labels", labels, "--folds", "2", "--bootstrap", "100",
                        "--shuffles", "1", "--chart", "none", "-q", "-o", probe_res], "probe") is not None
        refuses([ks, "export", "notebook", dump, "--prompt", "2", "-o", x],
                "--prompt 2 of 2 prompts", ["--prompt 2", "2 committed"], x)
        refuses([ks, "export", "notebook", dump, "--kind", "overview"],
                "no -o", ["-o"], x)

        kinds = [("overview", ["--prompt", "0"], "resid_norm"), ("attention", ["--prompt", "1"], "attn")]
        if attr_ok:
            kinds.append(("attribution", [], "attribution"))
        if probe_ok:
            kinds.append(("probe", [], "probe"))
        if audit_ok:
            kinds.append(("audit", [], "audit"))
        paths = {}
        for kind, extra, _ in kinds:
            path = os.path.join(nbdir, kind + ".ipynb")
            src = {"probe": probe_res, "audit": os.path.join(work, "audit", "results.h5")}.get(kind, dump)
            if run([ks, "export", "notebook", src, "--kind", kind, "-o", path] + extra,
                   "export notebook --kind %s" % kind) is not None:
                paths[kind] = path
        if "overview" in paths:  # written again over itself: replaced whole
            run([ks, "export", "notebook", "-o", paths["overview"], dump],
                "export notebook over an existing notebook (options after DUMP too)")
        left = [n for n in os.listdir(nbdir) if ".tmp." in n or n == "refused.ipynb"]
        ok(not left, "no temporary or refused files left in the notebook folder (%s)" % left)
        for kind, path in paths.items():
            lit = dump_path_literal(path)
            want_lit = {"probe": "../probe.h5", "audit": "../audit/results.h5"}.get(kind, "../dump.h5")
            ok(lit == want_lit, "%s: the input's path is relative to the notebook: %r" % (kind, lit))
            try:
                nbformat.validate(nbformat.read(path, as_version=4))
                ok(True, "%s: nbformat.validate" % kind)
            except Exception as exc:
                ok(False, "%s: nbformat.validate: %s" % (kind, str(exc)[-400:]))

        # move the whole folder: only a relative path still finds the dump
        moved = os.path.join(tmp, "b")
        os.rename(work, moved)
        dump = os.path.join(moved, "dump.h5")
        with h5py.File(dump, "r") as f:
            expected = {"resid_norm": expect_resid_norm(f, 0), "attn": expect_attn(f, 1)}
            if attr_ok:
                expected["attribution"] = expect_attribution(f)
        if probe_ok:
            with h5py.File(os.path.join(moved, "probe.h5"), "r") as f:
                expected["probe"] = float(np.nanmax(f["accuracy"][:, 0]))
        if audit_ok:
            with open(os.path.join(moved, "audit", "metrics.csv"), newline="") as fh:
                import csv
                first = next(r for r in csv.DictReader(fh) if r["value"] != "")
                expected["audit"] = float(first["value"])
        for kind, _, check in kinds:
            if kind not in paths:
                continue
            path = os.path.join(moved, "notebooks", kind + ".ipynb")
            nb, err, secs = execute(path)
            checks, pngs, errors = outputs(nb)
            ok(err is None and not errors, "%s: runs under nbclient (python3 kernel, %d s per "
               "cell) with no cell error, after the folder moved (%.1f s)%s"
               % (kind, CELL_TIMEOUT, secs, (": %s %s" % (err, errors)) if err or errors else ""))
            ok(pngs > 0, "%s: %d figure(s) (image/png outputs)" % (kind, pngs))
            got, want = checks.get(check), expected[check]
            ok(got is not None and abs(got - want) <= TOL,
               "%s: KS_CHECK %s %r == %r read from the file with h5py (tol %g)"
               % (kind, check, got, want, TOL))
    diag("test time %.1f s" % (time.time() - t_start))
    plan()
    return 0


if __name__ == "__main__":
    # the kernel's debugger warns on stderr about frozen modules: quiet, harmless
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        print("Bail out! unexpected exception (see the traceback on standard error)")
        sys.exit(1)
