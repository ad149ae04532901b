"""ks_tap.py — TAP output for the Python tests (tests/test_*.py import it from their folder):
numbered ok / not ok lines, SKIPs and diagnostics, flushed as they are printed; and the small
helpers several of them share (running koalascope, writing a safetensors file with NumPy)."""
import json
import os
import struct
import subprocess
import sys

_n = 0
_failed = 0


def ok(cond, desc):
    """One test point; returns cond as a bool."""
    global _n, _failed
    _n += 1
    cond = bool(cond)
    # one line per test point: a message quoted in desc (a tool's stderr) may hold newlines
    desc = " ".join(str(desc).split("\n"))
    print("%s %d - %s" % ("ok" if cond else "not ok", _n, desc), flush=True)
    if not cond:
        _failed += 1
    return cond


def skip(desc):
    global _n
    _n += 1
    print("ok %d # SKIP %s" % (_n, desc), flush=True)


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line, flush=True)


def plan():
    """Print the plan line for the points printed so far."""
    print("1..%d" % _n, flush=True)


def require_h5py():
    """(numpy, h5py), or exit: a visible SKIP where they are missing, a failure under CI=true
    (CI must have them: scripts/install-deps installs python3-h5py)."""
    try:
        import h5py
        import numpy
    except ImportError as exc:  # depends on the machine
        if os.environ.get("CI") == "true":
            print("1..1")
            print("not ok 1 - h5py/numpy not importable (%s); CI=true requires them" % exc)
            sys.exit(1)
        print("1..0 # SKIP h5py not installed (%s)" % exc)
        sys.exit(0)
    return numpy, h5py


def run(args, env=None):
    """Run a command, capturing text stdout and stderr."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def must(args, what):
    """Run a command; a non-zero exit is one failed test point. The CompletedProcess, or None."""
    p = run(args)
    if p.returncode != 0:
        ok(False, "%s: exit %d: %s" % (what, p.returncode, p.stderr.strip()[-600:]))
        return None
    return p


def write_safetensors(path, tensors, metadata=None):
    """A safetensors file with NumPy only (imported here, so the TAP part needs no NumPy);
    BF16 given as ('BF16', uint16 array)."""
    import numpy as np
    names = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64"}
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for k, v in tensors.items():
        dt, a = v if isinstance(v, tuple) else (names[v.dtype], v)
        raw = np.ascontiguousarray(a).tobytes()
        header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
