"""ks_tap.py — TAP output for the Python tests (tests/test_*.py import it from their folder):
numbered ok / not ok lines, SKIPs and diagnostics, flushed as they are printed."""
import os
import sys

_n = 0
_failed = 0


def ok(cond, desc):
    """One test point; returns cond as a bool."""
    global _n, _failed
    _n += 1
    cond = bool(cond)
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
