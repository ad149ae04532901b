#!/usr/bin/python3
"""test_export.py — `koalascope export safetensors|npz|csv` (docs/EXPORT.md), checked the way a
user reads the files: safetensors with a small NumPy-only reader written here, .npz with
numpy.load, CSV with the csv module; the oracle is the dump itself read with h5py
(docs/FORMAT.md). No koalascope code is imported.

Usage (meson passes these): test_export.py KOALASCOPE      (TAP on standard output)

What is checked (every value comparison is exact, bit for bit: an export copies, it computes
nothing; bf16/f16 are compared as the float32 bit patterns they widen to, which is injective):
  1. gqa_untied recorded in f32 and bf16 (resid_post, hook_q [R, heads, d_head], hook_pattern):
     per-prompt safetensors keys, dtypes, shapes, values (attention rebuilt to [heads, T, T]
     as FORMAT.md's recipe does), tokens, __metadata__;
  2. --layout packed with --prompts and --hooks: the dump's datasets sliced to the selection,
     offsets re-based;
  3. npz: numpy.load equals the safetensors export; the zip's CRCs check; --f32 widens bf16;
  4. two exports of one dump are byte-identical;
  5. csv of /attributions results written by `koalascope attribute -o` (stories260K shared
     data; skipped where missing unless CI=true);
  6. bad input exits 1 naming the file / flag / hook, and leaves no output (nor OUT.tmp).
  7. import safetensors: importing an export and re-exporting it gives the same tensors, bit for
     bit (f32, bf16); a cache whose values were replaced by random bits (written here) comes
     back with those bits, so the values are imported, not recomputed; bad caches exit 1.
"""
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import traceback
import zipfile

CI = os.environ.get("CI") == "true"

from ks_tap import diag, must, ok, plan, require_h5py, run, skip, write_safetensors  # noqa: E402

np, h5py = require_h5py()

HOOKS = "blocks.*.hook_resid_post,blocks.*.attn.hook_pattern,blocks.*.attn.hook_q"
PROMPTS = [[1, 5, 9, 13, 2, 77, 31], [1, 7, 3], [1, 200, 100, 50, 25]]


def read_safetensors(path):
    """(header, {key: ndarray}) with NumPy only: u64 LE header length, JSON header, data.
    BF16 comes back as its raw uint16 bits."""
    with open(path, "rb") as fh:
        buf = fh.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    base = 8 + n
    kinds = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "I64": "<i8"}
    out = {}
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert a == end, "%s: data starts at %d, previous ended at %d" % (key, a, end)
        end = b
        out[key] = np.frombuffer(buf[base + a:base + b], kinds[info["dtype"]]).reshape(info["shape"])
    assert base + end == len(buf), "data ends at %d, file is %d bytes" % (base + end, len(buf))
    return header, out


def bits(a, dtype=None):
    """float32 bit pattern of an array: raw bf16 bits (uint16) widen by << 16."""
    a = np.asarray(a)
    if dtype == "BF16" or a.dtype == np.uint16:
        return a.astype(np.uint32) << 16
    if a.dtype.kind == "f":
        return a.astype(np.float32).view(np.uint32)
    return a


class Dump:
    def __init__(self, path):
        self.f = h5py.File(path, "r")
        f = self.f
        self.P = len(f["prompt_offsets"]) - 1
        self.po = f["prompt_offsets"][...]
        self.ro = f["row_offsets"][...]
        self.ao = f["attn_offsets"][...]
        self.pos = f["row_positions"][...]
        self.starts = f["attn_row_starts"][...]
        self.tokens = f["tokens"][...]
        self.hooks = list(f["activations"])

    def act(self, hook):
        return self.f["activations/" + hook].astype("f4")[...]

    def kind(self, hook):
        return self.f["activations/" + hook].attrs["kind"].decode()

    def per_prompt(self, hook, p):
        """As docs/EXPORT.md says the per-prompt export holds it (f32 values)."""
        a = self.act(hook)
        r0, r1 = self.ro[p:p + 2]
        if self.kind(hook) == "token":
            return a[r0:r1]
        n = self.po[p + 1] - self.po[p]
        sq = np.zeros((a.shape[0], n, n), np.float32)
        for r in range(r0, r1):
            q = self.pos[r]
            sq[:, q, :q + 1] = a[:, self.starts[r]:self.starts[r] + q + 1]
        return sq


def check_per_prompt(ks, d, path, dt, tmp):
    out = os.path.join(tmp, "pp_%s.safetensors" % dt)
    if not must([ks, "export", "safetensors", path, "-o", out], "%s: export safetensors" % dt):
        return None
    hdr, t = read_safetensors(out)
    want = {"tokens.%d" % p for p in range(d.P)} | {"%s.%d" % (h, p) for h in d.hooks for p in range(d.P)}
    if dt == "pos":  # a position selection: each prompt's row positions too
        want |= {"positions.%d" % p for p in range(d.P)}
    ok(set(t) == want, "%s: per-prompt keys are '<hook>.<p>' and 'tokens.<p>' (%d keys)%s" % (
        dt, len(want), "" if set(t) == want else ": extra %s missing %s" % (
            sorted(set(t) - want)[:4], sorted(want - set(t))[:4])))
    st = {"f32": "F32", "bf16": "BF16", "f16": "F16", "pos": "F32"}[dt]
    bad = []
    for p in range(d.P):
        if not np.array_equal(t.get("tokens.%d" % p), d.tokens[d.po[p]:d.po[p + 1]]) or \
                hdr["tokens.%d" % p]["dtype"] != "I32":
            bad.append("tokens.%d" % p)
        if dt == "pos" and not np.array_equal(t.get("positions.%d" % p), d.pos[d.ro[p]:d.ro[p + 1]]):
            bad.append("positions.%d" % p)
        for h in d.hooks:
            k = "%s.%d" % (h, p)
            if k not in t:
                continue
            exp = d.per_prompt(h, p)
            if hdr[k]["dtype"] != st or list(t[k].shape) != list(exp.shape) or \
                    not np.array_equal(bits(t[k], st), bits(exp)):
                bad.append("%s (%s %s vs %s)" % (k, hdr[k]["dtype"], t[k].shape, exp.shape))
    ok(not bad, "%s: every tensor has the stored dtype %s, the ActivationCache shape ([rows, ...]; "
       "attention [heads, T, T]) and the dump's values bit for bit%s" % (dt, st, ": " + ", ".join(bad[:5]) if bad else ""))
    m = hdr.get("__metadata__", {})
    okm = (m.get("layout") == "per-prompt" and m.get("dump_storage_dtype") == d.f.attrs["storage_dtype"].decode() and
           m.get("dump_model_sha256") == d.f.attrs["model_sha256"].decode() and
           m.get("dump_model_path") == d.f.attrs["model_path"].decode() and
           set(m.get("exported_hooks", "").split(",")) == set(d.hooks) and
           all(isinstance(v, str) for v in m.values()))
    ok(okm, "%s: __metadata__ (strings) has layout, storage dtype, model path and sha, hooks: %s" % (
        dt, json.dumps(m)[:300] if not okm else "ok"))
    return out, t


def check_packed(ks, d, path, dt, tmp):
    out = os.path.join(tmp, "packed_%s.safetensors" % dt)
    sel = [0, 2]
    hooks = "blocks.1.*"
    if not must([ks, "export", "safetensors", path, "-o", out, "--layout", "packed", "--prompts", "0,2-2",
                 "--hooks", hooks], "%s: export --layout packed" % dt):
        return
    hdr, t = read_safetensors(out)
    hs = [h for h in d.hooks if h.startswith("blocks.1.")]
    want = {"prompt_offsets", "row_offsets", "tokens", "row_positions", "attn_offsets", "attn_row_starts"} | set(hs)
    ok(set(t) == want and hdr["__metadata__"]["layout"] == "packed" and hdr["__metadata__"]["prompts"] == "0,2",
       "%s: packed keys: one per hook (glob %s) plus the bookkeeping: %s" % (dt, hooks, sorted(t)))
    rows = np.concatenate([np.arange(d.ro[p], d.ro[p + 1]) for p in sel])
    toks = np.concatenate([d.tokens[d.po[p]:d.po[p + 1]] for p in sel])
    keys = np.concatenate([np.arange(d.ao[p], d.ao[p + 1]) for p in sel])
    bad = []
    exp_off = {
        "prompt_offsets": np.cumsum([0] + [d.po[p + 1] - d.po[p] for p in sel]),
        "row_offsets": np.cumsum([0] + [d.ro[p + 1] - d.ro[p] for p in sel]),
        "attn_offsets": np.cumsum([0] + [d.ao[p + 1] - d.ao[p] for p in sel]),
    }
    for k, v in exp_off.items():
        if not np.array_equal(t.get(k), v) or hdr[k]["dtype"] != "I64":
            bad.append(k)
    if not np.array_equal(t.get("tokens"), toks):
        bad.append("tokens")
    if not np.array_equal(t.get("row_positions"), d.pos[rows]):
        bad.append("row_positions")
    # the re-based starts address the same keys in the packed attention as the dump's do
    rs = t.get("attn_row_starts")
    for h in hs:
        a = d.act(h)
        if d.kind(h) == "token":
            exp = a[rows]
        else:
            exp = a[:, keys]
            for i, r in enumerate(rows):
                q = d.pos[r]
                if not np.array_equal(bits(t[h][:, rs[i]:rs[i] + q + 1], hdr[h]["dtype"]),
                                      bits(a[:, d.starts[r]:d.starts[r] + q + 1])):
                    bad.append("%s row %d via attn_row_starts" % (h, i))
                    break
        if h not in t or list(t[h].shape) != list(exp.shape) or not np.array_equal(bits(t[h], hdr[h]["dtype"]), bits(exp)):
            bad.append(h)
    ok(not bad, "%s: packed tensors are the dump's datasets restricted to prompts %s, offsets re-based, "
       "bit for bit%s" % (dt, sel, ": " + ", ".join(bad) if bad else ""))


def check_npz(ks, d, path, dt, st_tensors, tmp):
    out = os.path.join(tmp, "pp_%s.npz" % dt)
    if not must([ks, "export", "npz", path, "-o", out], "%s: export npz" % dt):
        return
    with zipfile.ZipFile(out) as z:
        bad_crc = z.testzip()
        stored = all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    ok(bad_crc is None and stored, "%s: the .npz is a valid zip, every member STORED, CRCs check" % dt)
    z = np.load(out)
    bad = [k for k in st_tensors if k not in z.files or z[k].dtype != st_tensors[k].dtype or
           not np.array_equal(z[k].view(np.uint8), st_tensors[k].view(np.uint8))]
    ok(not bad and set(z.files) == set(st_tensors),
       "%s: numpy.load gives the safetensors export's arrays (keys, dtypes%s, bytes)%s" % (
           dt, ", bf16 as <u2 raw bits" if dt == "bf16" else "", ": " + ", ".join(bad[:5]) if bad else ""))
    if dt == "bf16":
        out32 = os.path.join(tmp, "pp_bf16_f32.npz")
        if must([ks, "export", "npz", path, "-o", out32, "--f32"], "bf16: export npz --f32"):
            z2 = np.load(out32)
            bad = []
            for p in range(d.P):
                for h in d.hooks:
                    k = "%s.%d" % (h, p)
                    if z2[k].dtype != np.float32 or not np.array_equal(bits(z2[k]), bits(d.per_prompt(h, p))):
                        bad.append(k)
            ok(not bad, "bf16: npz --f32 stores float32 equal to the dump's bf16 exactly%s" % (
                ": " + ", ".join(bad[:4]) if bad else ""))
    # zip64: forced on every entry and the end record (KS_ZIP64_THRESHOLD, a test knob), the
    # archive must read back through zipfile's zip64 paths with the same arrays
    if dt == "f32":
        out64 = os.path.join(tmp, "pp_f32_zip64.npz")
        env = dict(os.environ, KS_ZIP64_THRESHOLD="1")
        p = subprocess.run([ks, "export", "npz", path, "-o", out64], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode == 0:
            raw = open(out64, "rb").read()
            with zipfile.ZipFile(out64) as z:
                good = z.testzip() is None and all(i.extract_version == 45 for i in z.infolist())
            z64 = np.load(out64)
            same = set(z64.files) == set(st_tensors) and all(
                np.array_equal(z64[k].view(np.uint8), st_tensors[k].view(np.uint8)) for k in st_tensors)
            ok(good and same and b"PK\x06\x06" in raw and b"PK\x06\x07" in raw,
               "f32: a zip64 .npz (every size, offset and the end record in zip64 fields) reads back through "
               "zipfile and numpy.load with the same arrays, CRCs checking")
        else:
            ok(False, "f32: zip64 export: exit %d: %s" % (p.returncode, p.stderr.strip()[-300:]))
    # packed npz: same bytes as packed safetensors
    outp = os.path.join(tmp, "packed_%s.npz" % dt)
    if must([ks, "export", "npz", path, "-o", outp, "--layout", "packed"], "%s: export npz packed" % dt):
        zp = np.load(outp)
        ro = zp["row_offsets"]
        ok(np.array_equal(ro, d.ro) and all(np.array_equal(bits(zp[h]), bits(d.act(h))) for h in d.hooks),
           "%s: packed npz of every prompt equals the dump's datasets and row_offsets" % dt)


def check_deterministic(ks, path, tmp):
    a, b = os.path.join(tmp, "a.npz"), os.path.join(tmp, "b.npz")
    c, e = os.path.join(tmp, "a.st"), os.path.join(tmp, "b.st")
    if all(must([ks, "export", fmt, path, "-o", o], "export %s" % fmt)
           for fmt, o in (("npz", a), ("npz", b), ("safetensors", c), ("safetensors", e))):
        same = open(a, "rb").read() == open(b, "rb").read() and open(c, "rb").read() == open(e, "rb").read()
        ok(same, "two exports of one dump are byte-identical (npz and safetensors)")


def check_bad_input(ks, d_path, tmp):
    out = os.path.join(tmp, "bad_out.safetensors")
    plain = os.path.join(tmp, "plain.h5")
    with h5py.File(plain, "w", libver="latest") as f:
        f["x"] = np.arange(3)
    old = os.path.join(tmp, "old_format.h5")
    with h5py.File(old, "w") as f:  # HDF5's default: superblock 0, refused by every reader
        f["x"] = np.arange(3)
    cases = [
        ("missing dump file", ["export", "safetensors", os.path.join(tmp, "nope.h5"), "-o", out], "nope.h5"),
        ("an HDF5 file that is not a dump", ["export", "npz", plain, "-o", out], "plain.h5"),
        ("an HDF5 file of superblock 0", ["export", "npz", old, "-o", out], "superblock version 0"),
        ("csv of an HDF5 file of superblock 0", ["export", "csv", old, "-o", out], "superblock version 0"),
        ("an unknown hook", ["export", "safetensors", d_path, "-o", out, "--hooks", "blocks.9.hook_nope"],
         "blocks.9.hook_nope"),
        ("--prompts out of range", ["export", "safetensors", d_path, "-o", out, "--prompts", "0,7"], "--prompts"),
        ("--prompts not a list", ["export", "npz", d_path, "-o", out, "--prompts", "x-"], "--prompts"),
        ("a bad --layout", ["export", "npz", d_path, "-o", out, "--layout", "ragged"], "--layout"),
        ("no -o", ["export", "safetensors", d_path], "-o"),
        ("an unknown flag", ["export", "safetensors", d_path, "-o", out, "--bogus"], "--bogus"),
        ("csv of a dump without /attributions", ["export", "csv", d_path, "-o", out], "attributions"),
        ("csv of a missing file", ["export", "csv", os.path.join(tmp, "gone.h5"), "-o", out], "gone.h5"),
    ]
    for what, args, needle in cases:
        p = run([ks] + args)
        clean = not os.path.exists(out) and not os.path.exists(out + ".tmp")
        ok(p.returncode == 1 and needle in p.stderr and clean,
           "%s: exit %d, message names %r, no output left: %s" % (what, p.returncode, needle,
                                                                   p.stderr.strip().splitlines()[0][:160] if p.stderr.strip() else "(no message)"))
    # a failure after the data was written (rename onto a directory) removes OUT.tmp
    outdir = os.path.join(tmp, "is_a_dir.npz")
    os.mkdir(outdir)
    p = run([ks, "export", "npz", d_path, "-o", outdir])
    ok(p.returncode == 1 and "is_a_dir.npz" in p.stderr and os.path.isdir(outdir) and
       not os.path.exists(outdir + ".tmp") and not os.listdir(outdir),
       "a failed export (rename onto a directory) exits 1, names it, leaves no partial file: %s" %
       p.stderr.strip()[:160])
    for c in ("safetensors", "npz", "csv"):
        p = run([ks, "export", c, "--help"])
        ok(p.returncode == 0 and ("Usage: koalascope export " + c) in p.stdout, "export %s --help" % c)
    p = run([ks, "export", "csv", "--help"])
    ok("probe" in p.stdout, "export csv --help says probe/audit results do not exist yet")


def check_csv(ks, tmp):
    data = os.environ.get("KS_SHARED_DATA") or os.path.join(os.environ.get("KS_SOURCE_ROOT", "."), "..", "shared", "data")
    model = os.path.join(data, "stories260K", "stories260K.bin")
    tok = os.path.join(data, "stories260K", "tok512.bin")
    if not (os.path.isfile(model) and os.path.isfile(tok)):
        (ok(False, "shared data missing at %s (CI=true requires it)" % data) if CI
         else skip("csv: shared data %s is missing; set KS_SHARED_DATA" % model))
        return
    jl = os.path.join(tmp, "s.jsonl")
    with open(jl, "w") as fh:
        fh.write(json.dumps({"id": "s0", "prompt": "Once upon a time, \"there\", was"}) + "\n")
    dump = os.path.join(tmp, "stories.h5")
    if not must([ks, "record", model, "--tokenizer", tok, "--prompts", jl, "--hooks",
                 "blocks.*.hook_resid_post", "-q", "-o", dump], "csv: record stories260K"):
        return
    base = [ks, "attribute", model, "--tokenizer", tok, "--prompt", "Once upon a time, \"there\", was",
            "--target", " a", "-q", "-o", dump]
    if not (must(base + ["--method", "saliency", "--name", "sal"], "attribute saliency") and
            must(base + ["--method", "heads", "--name", "hd"], "attribute heads")):
        return
    f = h5py.File(dump, "r")
    out = os.path.join(tmp, "sal.csv")
    if must([ks, "export", "csv", dump, "-o", out, "--name", "sal"], "export csv --name sal"):
        g = f["attributions/sal"]
        vals = g["values"][...]
        toks = g["tokens"][...]
        pieces = g["token_strings"].asstr()[...]
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        head = rows[0]
        body = rows[1:]
        good = head == ["position", "token", "piece", "value"] and len(body) == vals.size and all(
            int(r[0]) == i and int(r[1]) == toks[i] and r[2] == pieces[i] and
            np.float32(float(r[3])).view(np.uint32) == vals[i].view(np.uint32)
            for i, r in enumerate(body))
        ok(good, "csv --name sal: header %s, one row per position with token id, piece (quoted "
           "where needed) and the float32 value exactly (%d rows)" % (head, len(body)))
    out = os.path.join(tmp, "all.csv")
    if must([ks, "export", "csv", dump, "-o", out], "export csv (all results)"):
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        bad = []
        for name in f["attributions"]:
            g = f["attributions/" + name]
            axes = g.attrs["axes"].decode().split(",")
            vals = g["values"][...]
            mine = [r for r in rows if r["name"] == name]
            if len(mine) != vals.size:
                bad.append("%s: %d rows for %d cells" % (name, len(mine), vals.size))
                continue
            for r in mine:
                idx = tuple(int(r[a]) for a in axes)
                if np.float32(float(r["value"])).view(np.uint32) != vals[idx].view(np.uint32):
                    bad.append("%s%s" % (name, idx))
                    break
        ok(not bad and set(r["name"] for r in rows) == set(f["attributions"]),
           "csv (all): a name column, the union of the axes as columns, every cell of every result "
           "exactly%s" % (": " + ", ".join(bad) if bad else ""))
    # a file of attribution results of its own (format koalascope-attributions), to stdout
    own = os.path.join(tmp, "attr_only.h5")
    if must(base[:-1] + [own, "--method", "saliency", "--name", "sal"], "attribute -o a new file"):
        p = run([ks, "export", "csv", own, "-o", "-", "--name", "sal"])
        want = open(os.path.join(tmp, "sal.csv"), encoding="utf-8").read() if os.path.exists(
            os.path.join(tmp, "sal.csv")) else None
        ok(p.returncode == 0 and want is not None and p.stdout == want,
           "csv of an attribution file of its own, -o - (stdout): the same rows as from the dump")
    p = run([ks, "export", "csv", dump, "-o", out + "2", "--name", "nope"])
    ok(p.returncode == 1 and "nope" in p.stderr and not os.path.exists(out + "2"),
       "csv --name of a missing result exits 1 naming it: %s" % p.stderr.strip()[:160])


def check_import(ks, mdir, path, dt, tmp):
    first = os.path.join(tmp, "imp_%s.safetensors" % dt)
    dump = os.path.join(tmp, "imp_%s.h5" % dt)
    again = os.path.join(tmp, "imp_%s_again.safetensors" % dt)
    if not (must([ks, "export", "safetensors", path, "-o", first], "import %s: export" % dt) and
            must([ks, "import", "safetensors", first, "-o", dump, "--model", mdir, "--threads", "2"],
                 "import %s: import" % dt) and
            must([ks, "export", "safetensors", dump, "-o", again], "import %s: re-export" % dt)):
        return
    h1, t1 = read_safetensors(first)
    h2, t2 = read_safetensors(again)
    m1, m2 = h1.pop("__metadata__"), h2.pop("__metadata__")
    ok(h1 == h2 and all(t1[k].tobytes() == t2[k].tobytes() for k in t1) and
       m2["dump_storage_dtype"] == m1["dump_storage_dtype"],
       "import %s: import then re-export gives the first export's tensors bit for bit (keys, dtypes, "
       "shapes, offsets, bytes)" % dt)
    f = h5py.File(dump, "r")
    ok(f.attrs["format"] == b"koalascope-dump" and f.attrs["complete"] == 1 and
       f.attrs["storage_dtype"].decode() == dt, "import %s: the dump is a complete koalascope-dump, "
       "storage_dtype %s" % (dt, dt))
    f.close()
    # random bits in place of every activation: the import must carry them, not recompute
    rng = np.random.default_rng(7)
    fake = {}
    for k, hdr in h1.items():
        a = t1[k]
        if k.startswith("tokens."):
            fake[k] = a.copy()
            continue
        if hdr["dtype"] == "BF16":
            v = (rng.integers(0, 1 << 16, a.shape, dtype=np.uint32) & 0x7F7F).astype(np.uint16)
        else:
            v = rng.standard_normal(a.shape).astype(np.float32)
        if ".attn.hook_pattern." in k:  # only the causal part is stored; above it comes back +0
            v = np.where(np.tril(np.ones(a.shape[1:], bool)), v, np.zeros((), v.dtype))
        fake[k] = (hdr["dtype"], v) if hdr["dtype"] == "BF16" else v
    src = os.path.join(tmp, "fake_%s.safetensors" % dt)
    write_safetensors(src, fake, {"layout": "per-prompt"})
    dump2 = os.path.join(tmp, "fake_%s.h5" % dt)
    out2 = os.path.join(tmp, "fake_%s_again.safetensors" % dt)
    if must([ks, "import", "safetensors", src, "-o", dump2, "--model", mdir, "--threads", "2"],
            "import %s: random cache" % dt) and must([ks, "export", "safetensors", dump2, "-o", out2],
                                                      "import %s: re-export of the random cache" % dt):
        _, t3 = read_safetensors(out2)
        exp = {k: (v[1] if isinstance(v, tuple) else v) for k, v in fake.items()}
        bad = [k for k in exp if k not in t3 or t3[k].tobytes() != exp[k].tobytes()]
        ok(not bad, "import %s: a cache of random values comes back bit for bit (imported, not "
           "recomputed)%s" % (dt, ": " + ", ".join(bad[:4]) if bad else ""))
    if dt != "f32":
        return
    bad_cases = []
    wrong = dict(fake)
    k0 = [k for k in wrong if k.startswith("blocks.0.hook_resid_post.")][0]
    wrong[k0] = np.zeros((3, 5), np.float32)
    write_safetensors(os.path.join(tmp, "wrong_shape.safetensors"), wrong)
    bad_cases.append(("a tensor of the wrong shape", "wrong_shape.safetensors", k0))
    missing = {k: v for k, v in fake.items() if k != k0}
    write_safetensors(os.path.join(tmp, "missing.safetensors"), missing)
    bad_cases.append(("a prompt without one of the hooks", "missing.safetensors", "missing.safetensors"))
    with open(os.path.join(tmp, "garbage.safetensors"), "wb") as fh:
        fh.write(b"\xff" * 64)
    bad_cases.append(("not a safetensors file", "garbage.safetensors", "garbage.safetensors"))
    for what, name, needle in bad_cases:
        out = os.path.join(tmp, "bad_import.h5")
        p = run([ks, "import", "safetensors", os.path.join(tmp, name), "-o", out, "--model", mdir])
        ok(p.returncode == 1 and needle in p.stderr and not os.path.exists(out) and
           not os.path.exists(out + ".tmp"), "import of %s: exit 1 naming %s, no dump left: %s" % (
               what, needle, p.stderr.strip()[:200]))
    p = run([ks, "import", "safetensors", first, "-o", os.path.join(tmp, "x.h5")])
    ok(p.returncode == 1 and "--model" in p.stderr, "import without --model names it")
    p = run([ks, "import", "--help"])
    ok(p.returncode == 0 and "Usage: koalascope import" in p.stdout, "import --help")


def main():
    if len(sys.argv) < 2:
        print("usage: test_export.py KOALASCOPE", file=sys.stderr)
        return 2
    ks = os.path.abspath(sys.argv[1])
    root = os.environ.get("KS_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), ".."))
    mdir = os.path.join(root, "tests", "reference", "fixtures", "hf", "gqa_untied")
    with tempfile.TemporaryDirectory() as tmp:
        jl = os.path.join(tmp, "p.jsonl")
        with open(jl, "w") as fh:
            for i, t in enumerate(PROMPTS):
                fh.write(json.dumps({"id": "p%d" % i, "tokens": t}) + "\n")
        dumps = {}
        # label: record options; "pos" records positions 0 and -1 only (rows < tokens)
        variants = {"f32": ["--dtype", "f32"], "bf16": ["--dtype", "bf16"], "f16": ["--dtype", "f16"],
                    "pos": ["--dtype", "f32", "--positions", "0,-1"]}
        for dt, extra in variants.items():
            path = os.path.join(tmp, "d_%s.h5" % dt)
            if must([ks, "record", mdir, "--prompts", jl, "--hooks", HOOKS, "--threads", "2",
                     "-q", "-o", path] + extra, "record gqa_untied %s" % " ".join(extra)):
                dumps[dt] = path
        for dt, path in dumps.items():
            try:
                d = Dump(path)
                r = check_per_prompt(ks, d, path, dt, tmp)
                check_packed(ks, d, path, dt, tmp)
                if r:
                    check_npz(ks, d, path, dt, r[1], tmp)
            except Exception:  # a crash in one part is a failure, the others still run
                ok(False, "%s: %s" % (dt, traceback.format_exc().strip().splitlines()[-1]))
                diag(traceback.format_exc())
        if "f32" in dumps:
            check_deterministic(ks, dumps["f32"], tmp)
            check_bad_input(ks, dumps["f32"], tmp)
        try:
            check_csv(ks, tmp)
        except Exception:
            ok(False, "csv: %s" % traceback.format_exc().strip().splitlines()[-1])
            diag(traceback.format_exc())
        for dt in ("f32", "bf16"):
            if dt in dumps:
                try:
                    check_import(ks, mdir, dumps[dt], dt, tmp)
                except Exception:
                    ok(False, "import %s: %s" % (dt, traceback.format_exc().strip().splitlines()[-1]))
                    diag(traceback.format_exc())
    plan()
    return 0


if __name__ == "__main__":
    sys.exit(main())
