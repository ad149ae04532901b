#!/usr/bin/python3
"""test_attributions.py — attribution results (/attributions, docs/FORMAT.md) read the way a
user reads them: with h5py and NumPy only, following FORMAT.md (no koalascope code imported).
The C side, tests/test_attr_write.c, writes the files through ks_attribution_write; this test
runs it, then reads what it left.

Usage (meson passes these): test_attributions.py TEST_ATTR_WRITE KOALASCOPE   (TAP on stdout)

Environment: KS_SOURCE_ROOT (the source tree), KS_SHARED_DATA (default
$KS_SOURCE_ROOT/../shared/data, as tests/tap.h), CI ("true": missing h5py or shared data fail
instead of being skipped).

What is checked (oracle: the values test_attr_write.c writes, rebuilt below; exact, bit for
bit, since f32 goes to f32 and back):
  1. the standalone file (attr.h5): root attributes; each result's values (dtype, shape, every
     bit: NaN, -0.0, -inf included), tokens, token_strings decoded with .asstr() as the dump's
     are, attributes (method, objective, axes, objective_value, baseline_value,
     completeness_error, steps, params, created); an overwritten result holds the new values
     and nothing else is left in /attributions; pieces that were not UTF-8 decode, spelled
     <0xNN>; no variable-length type anywhere;
  2. tests/dumps/cases/valid.h5 with two results added (dump.h5): plain h5py.File opens it, every
     object and attribute of the original is there with the same type, shape and bytes, the
     only new objects are under /attributions; `koalascope dump-info` reads it;
  3. with the shared data: a dump that `koalascope record` made from stories260K, a result added
     (test_attr_write --add): the same as 2, and `koalascope record --resume` still continues it
     and keeps the result.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

CI = os.environ.get("CI") == "true"

from ks_tap import diag, ok, plan, require_h5py, skip  # noqa: E402

np, h5py = require_h5py()

# ---------------------------------------------------------------------------------------------
# TAP




# ---------------------------------------------------------------------------------------------
# what test_attr_write.c writes (keep in step with it)

TOKENS = [1, 450, 7483, 310, 3444, 338]
TOKEN_STRINGS = ["<s>", " The", " café", "", "日本語", ' "q"']


def expected():
    pos = np.array([0.25 * i - 0.5 for i in range(6)], np.float32)
    heads = np.array([[10 * l + h + 0.5 for h in range(4)] for l in range(2)], np.float32)
    heads[1, 2] = np.nan
    patch = np.array([[[np.float32(l) - np.float32(p) / 8 + np.float32(c) / 16 for c in range(2)]
                       for p in range(6)] for l in range(2)], np.float32)
    patch[0, 0, 0] = -0.0
    ig = np.array([i / 4 - 0.125 for i in range(6)], np.float32)
    ig[5] = -np.inf
    res = {
        "saliency_pos": dict(values=pos, axes="position", method="saliency",
                             objective="log p(' Paris' | prompt)", objective_value=-1.25,
                             baseline_value=None, completeness_error=None, steps=0, params=None,
                             token_strings=TOKEN_STRINGS),
        "heads": dict(values=heads, axes="layer,head", method="head_attribution",
                      objective="logit(' he') - logit(' she')", objective_value=3.5,
                      baseline_value=-0.75, completeness_error=0.001, steps=0,
                      params={"heads": "all", "n": 2}, token_strings=None),
        "patch3d": dict(values=patch, axes="layer,position,component", method="activation_patching",
                        objective="logit diff", objective_value=2.0, baseline_value=-2.0,
                        completeness_error=None, steps=0, params=None, token_strings=None),
        "ig": dict(values=ig, axes="position", method="integrated_gradients",
                   objective="log p(' Paris' | prompt)", objective_value=-1.25, baseline_value=-9.5,
                   completeness_error=0.0125, steps=64,
                   params={"baseline": "unk", "quadrature": "gauss-legendre"},
                   token_strings=TOKEN_STRINGS),
    }
    # pieces that are not UTF-8, stored with <0xNN> for each stray byte (as the dump's byte tokens)
    res["bytes"] = dict(res["saliency_pos"], objective="log p('<0xE9>t<0xE9>')",
                        token_strings=["<s>", "<0xE2><0x96>", "caf<0xC3>", "<0xED><0xA0><0x80>",
                                       "ok \u2581", "<0xC0><0x80><0xF5>"])
    return res


# ---------------------------------------------------------------------------------------------
# helpers


def same_bits(a, b):
    """Bit-for-bit equality of two arrays (NaN payloads and -0.0 included)."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def astr(v):
    """A FORMAT.md string attribute: fixed-length, which h5py gives as numpy.bytes_."""
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else None


def vlen_problems(f):
    """No variable-length data anywhere; string attributes fixed NULLTERM UTF-8 of len + 1
    bytes, string datasets fixed NULLPAD UTF-8 that .asstr() decodes (FORMAT.md, Strings).
    Only for what the attribution writer made: under /attributions, and the root of a
    standalone file."""
    bad = []
    objs = [("/", f)]
    f.visititems(lambda n, o: objs.append(("/" + n, o)))

    def vlen_type(t):
        return isinstance(t, h5py.h5t.TypeVlenID) or (
            isinstance(t, h5py.h5t.TypeStringID) and t.is_variable_str())

    for path, o in objs:
        if path != "/" and not path.startswith("/attributions"):
            continue
        if path == "/" and astr(f.attrs.get("format")) != "koalascope-attributions":
            continue
        for an in o.attrs:
            t = o.attrs.get_id(an).get_type()
            if vlen_type(t):
                bad.append("%s attribute %s is variable-length" % (path, an))
            elif isinstance(t, h5py.h5t.TypeStringID):
                v = o.attrs[an]
                if (not isinstance(v, np.bytes_) or t.get_strpad() != h5py.h5t.STR_NULLTERM
                        or t.get_cset() != h5py.h5t.CSET_UTF8 or t.get_size() != len(v) + 1):
                    bad.append("%s attribute %s: strpad %d cset %d size %d" % (
                        path, an, t.get_strpad(), t.get_cset(), t.get_size()))
        if not isinstance(o, h5py.Dataset):
            continue
        t = o.id.get_type()
        if vlen_type(t) or o.dtype.kind == "O":
            bad.append("%s is variable-length (%s)" % (path, o.dtype))
        elif isinstance(t, h5py.h5t.TypeStringID):
            info = h5py.check_string_dtype(o.dtype)
            if (info is None or info.length is None or info.encoding != "utf-8"
                    or t.get_strpad() != h5py.h5t.STR_NULLPAD):
                bad.append("%s: string dtype %r strpad %d" % (path, info, t.get_strpad()))
    return bad


def check_result(f, name, want, label):
    """/attributions/<name> of the open file f against want (see expected())."""
    g = f.get("attributions/" + name)
    if not ok(isinstance(g, h5py.Group), "%s: /attributions/%s is a group" % (label, name)):
        return
    v = g["values"]
    vals = f["attributions/%s/values" % name][...]      # FORMAT.md's recipe
    ok(v.dtype == np.dtype("<f4") and v.shape == want["values"].shape and v.chunks is None
       and same_bits(vals, want["values"]),
       "%s: values float32 %s, contiguous, every bit as written (%s)" % (
           label, want["values"].shape, vals.ravel()[:6].tolist()))
    t = g["tokens"]
    ok(t.dtype == np.dtype("<i4") and t[...].tolist() == TOKENS,
       "%s: tokens int32 %s" % (label, t[...].tolist()))
    if want["token_strings"] is None:
        ok("token_strings" not in g, "%s: no token_strings (none were given)" % label)
    else:
        ts = g["token_strings"]
        got = ts.asstr()[...].tolist()                                # as the dump's are read
        width = max(1, max(len(s.encode()) for s in want["token_strings"]))
        ok(got == want["token_strings"] and ts.dtype.itemsize == width,
           "%s: token_strings .asstr() gives %r, fixed width %d" % (label, got, ts.dtype.itemsize))
    a = g.attrs
    problems = []
    for k in ("method", "objective", "axes"):
        if astr(a.get(k)) != want[k]:
            problems.append("%s = %r" % (k, a.get(k)))
    for k in ("objective_value", "baseline_value", "completeness_error"):
        x = a.get(k)
        w = want[k]
        if not isinstance(x, np.float64) or not (np.isnan(x) if w is None else x == w):
            problems.append("%s = %r (want %r)" % (k, x, w))
    if not isinstance(a.get("steps"), np.int32) or a["steps"] != want["steps"]:
        problems.append("steps = %r" % a.get("steps"))
    if want["params"] is None:
        if "params" in a:
            problems.append("params present")
    elif json.loads(astr(a.get("params")) or "null") != want["params"]:
        problems.append("params = %r" % a.get("params"))
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", astr(a.get("created")) or ""):
        problems.append("created = %r" % a.get("created"))
    if astr(a.get("axes")) and len(astr(a["axes"]).split(",")) != v.ndim:
        problems.append("axes names %d axes, values has %d" % (len(astr(a["axes"]).split(",")),
                                                             v.ndim))
    ok(not problems, "%s: attributes method, objective, axes, objective_value, baseline_value, "
       "completeness_error, steps, params, created%s" % (
           label, (": " + "; ".join(problems)) if problems else ""))


def objects(f):
    """{path: h5py object} of everything in f, the root included."""
    out = {"/": f}
    f.visititems(lambda n, o: out.__setitem__("/" + n, o))
    return out


def same_attrs(a, b):
    if sorted(a.attrs) != sorted(b.attrs):
        return False
    for k in a.attrs:
        x, y = a.attrs[k], b.attrs[k]
        if a.attrs.get_id(k).get_type().dtype != b.attrs.get_id(k).get_type().dtype:
            return False
        if not same_bits(np.asarray(x), np.asarray(y)):
            return False
    return True


def dump_intact(orig_path, path, label, new_results):
    """Every object of the original dump is in the other with the same type, shape, bytes and
    attributes; the only additions are /attributions and the results in it."""
    with h5py.File(orig_path, "r") as a, h5py.File(path, "r") as b:    # plain open: not SWMR
        oa, ob = objects(a), objects(b)
        missing = [p for p in oa if p not in ob]
        added = sorted(p for p in ob if p not in oa)
        changed = []
        for p, x in oa.items():
            y = ob.get(p)
            if y is None:
                continue
            if type(x) is not type(y) or not same_attrs(x, y):
                changed.append(p)
            elif isinstance(x, h5py.Dataset):
                if x.dtype != y.dtype or x.shape != y.shape or x.chunks != y.chunks or \
                        x[...].tobytes() != y[...].tobytes():
                    changed.append(p)
        ok(not missing and not changed,
           "%s: the dump's %d objects (root attributes included) are all there, same types, "
           "shapes, bytes and attributes%s" % (label, len(oa), (": missing %s changed %s" % (
               missing[:5], changed[:5])) if missing or changed else ""))
        top = sorted({p.split("/")[1] for p in added})
        results = sorted(b["attributions"]) if "attributions" in b else []
        ok(top == ["attributions"] and results == sorted(new_results),
           "%s: what is new is /attributions with %s (%s)" % (label, sorted(new_results), results))


def run(args, what):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        ok(False, "%s: exit %d: %s" % (what, p.returncode, (p.stderr or p.stdout).strip()[-600:]))
        diag("command: " + " ".join(args))
        return None
    return p.stdout


def dump_info(ks, path, label, prompts):
    out = run([ks, "dump-info", path], label + ": koalascope dump-info")
    if out is not None:
        ok("complete" in out and ("prompts      %d committed" % prompts) in out,
           "%s: koalascope dump-info reads it (complete, %d prompts)" % (label, prompts))
    out = run([ks, "dump-info", "--json", path], label + ": koalascope dump-info --json")
    if out is not None:
        try:
            j = json.loads(out)
            good = isinstance(j, dict)
        except ValueError:
            good = False
        ok(good, "%s: koalascope dump-info --json gives a JSON object" % label)


# ---------------------------------------------------------------------------------------------


def check_standalone(tmp, want):
    path = os.path.join(tmp, "attr.h5")
    with h5py.File(path, "r") as f:
        a = f.attrs
        ok(astr(a.get("format")) == "koalascope-attributions" and
           isinstance(a.get("format_version"), np.int32) and a["format_version"] == 1 and
           astr(a.get("koalascope_version")) and astr(a.get("model_path")) == "tiny.gguf" and
           (astr(a.get("command_line")) or "").startswith("koalascope attribute") and
           re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", astr(a.get("created")) or ""),
           "attr.h5: root attributes format koalascope-attributions, format_version 1 (int32), "
           "koalascope_version, model_path, command_line, created")
        names = sorted(f["attributions"])
        ok(names == ["bytes", "heads", "over", "patch3d", "saliency_pos"],
           "attr.h5: /attributions holds %s (an overwrite leaves nothing behind)" % names)
        for n in ("saliency_pos", "heads", "patch3d", "bytes"):
            check_result(f, n, want[n], "attr.h5 " + n)
        check_result(f, "over", want["ig"], "attr.h5 over (overwritten with ig's values)")
        bad = vlen_problems(f)
        ok(not bad, "attr.h5: no variable-length type; string attributes fixed NULLTERM UTF-8 "
           "of len + 1 bytes, string datasets fixed NULLPAD UTF-8%s" % (
               (": " + "; ".join(bad[:5])) if bad else ""))


def check_committed_dump(tmp, ks, root, want):
    path = os.path.join(tmp, "dump.h5")
    orig = os.path.join(root, "tests", "dumps", "cases", "valid.h5")
    with h5py.File(path, "r") as f:
        check_result(f, "ig", want["ig"], "dump.h5 ig")
        check_result(f, "heads", want["heads"], "dump.h5 heads")
        bad = vlen_problems(f)
        ok(not bad, "dump.h5: no variable-length type under /attributions%s" % (
            (": " + "; ".join(bad[:5])) if bad else ""))
        r0, r1 = f["row_offsets"][0:2]
        ok(f["activations/hook_embed"][r0:r1].shape[0] == r1 - r0,
           "dump.h5: FORMAT.md's recipe still reads prompt 0's rows")
    dump_intact(orig, path, "dump.h5 (valid.h5 + 2 results)", ["heads", "ig"])
    dump_info(ks, path, "dump.h5", 3)


def check_recorded_dump(tmp, ks, writer):
    data = os.environ.get("KS_SHARED_DATA") or os.path.join(
        os.environ.get("KS_SOURCE_ROOT", "."), "..", "shared", "data")
    model = os.path.join(data, "stories260K", "stories260K.gguf")
    if not os.path.isfile(model):
        if CI:
            ok(False, "shared data missing (%s); CI=true requires it" % model)
        else:
            skip("shared data missing (%s): no `koalascope record` dump; set KS_SHARED_DATA" % model)
        return
    prompts = os.path.join(tmp, "prompts.txt")
    with open(prompts, "w") as fh:
        fh.write("Once upon a time\nThe little cat sat on the mat\n")
    rec = os.path.join(tmp, "rec.h5")
    orig = os.path.join(tmp, "rec_orig.h5")
    args = [ks, "record", model, "--prompts", prompts, "--hooks",
            "blocks.*.hook_resid_post,blocks.1.attn.hook_pattern,blocks.0.attn.hook_z",
            "--topk", "5", "-q", "-o", rec]
    if run(args, "stories260K: koalascope record") is None:
        return
    shutil.copyfile(rec, orig)
    if run([writer, "--add", rec, "ig_story"], "stories260K: test_attr_write --add") is None:
        return
    with h5py.File(rec, "r") as f:
        check_result(f, "ig_story", expected()["ig"], "recorded dump ig_story")
    dump_intact(orig, rec, "recorded dump + 1 result", ["ig_story"])
    dump_info(ks, rec, "recorded dump", 2)
    p = subprocess.run([writer, "--add", rec, "ig_story"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    ok(p.returncode == 1 and "ig_story exists" in p.stderr and rec in p.stderr,
       "recorded dump: adding ig_story again is refused (%s)" % p.stderr.strip())
    # --resume (repair, reopen for SWMR writing) still works on a dump holding results
    if run(args + ["--resume"], "recorded dump: koalascope record --resume") is not None:
        with h5py.File(rec, "r") as f:
            ok(f.attrs["complete"] == 1 and f.attrs["resume_count"] == 1 and
               "ig_story" in f["attributions"],
               "recorded dump: --resume continues it (resume_count 1, complete) and keeps "
               "/attributions/ig_story")
            check_result(f, "ig_story", expected()["ig"], "recorded dump after --resume")


def main():
    if len(sys.argv) < 3:
        print("usage: test_attributions.py TEST_ATTR_WRITE KOALASCOPE", file=sys.stderr)
        return 2
    writer, ks = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    root = os.environ.get("KS_SOURCE_ROOT") or os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "..")
    os.environ.setdefault("KS_SOURCE_ROOT", root)
    diag("h5py %s, HDF5 %s, numpy %s" % (h5py.__version__, h5py.version.hdf5_version,
                                         np.__version__))
    want = expected()
    with tempfile.TemporaryDirectory(prefix="ks_attributions_") as tmp:
        p = subprocess.run([writer, tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        failed = [l for l in p.stdout.splitlines() if l.startswith("not ok")]
        if not ok(p.returncode == 0 and not failed and
                  os.path.isfile(os.path.join(tmp, "attr.h5")) and
                  os.path.isfile(os.path.join(tmp, "dump.h5")),
                  "test_attr_write %s: exit %d, %d failed checks" % (tmp, p.returncode,
                                                                      len(failed))):
            diag("\n".join(failed[:10]) + p.stderr[-600:])
            plan()
            return 1
        check_standalone(tmp, want)
        check_committed_dump(tmp, ks, root, want)
        check_recorded_dump(tmp, ks, writer)
    plan()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        print("Bail out! unexpected exception (see the traceback on standard error)")
        sys.exit(1)
