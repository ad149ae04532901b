#!/usr/bin/python3
"""Compare two koalascope dumps with h5py alone (docs/FORMAT.md is the only contract used).

    dump_compare.py A.h5 REF.h5            A must equal REF: every dataset, every attribute
                                           except the run's own (created, command_line,
                                           resume_count), bit for bit
    dump_compare.py --prefix A.h5 REF.h5   A (maybe interrupted: opened with swmr=True) holds a
                                           committed prefix of REF's prompts, bit for bit;
                                           prints the number of committed prompts

Exit 0 when they agree, 1 with the first difference on stderr."""
import sys

import h5py
import numpy as np

VOLATILE = {"created", "command_line", "resume_count"}
PER_PROMPT = ["prompts", "prompt_ids", "prompt_lengths", "generations"]
OFFSETS = ["prompt_offsets", "row_offsets", "attn_offsets"]


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":  # bit for bit, NaN included
        return np.array_equal(a.view(np.uint8), b.view(np.uint8))
    return np.array_equal(a, b)


def open_dump(path):
    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", swmr=True)  # written by a writer that did not close it


def walk(f):
    out = {}
    f.visititems(lambda n, o: out.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    return out


def main():
    args = sys.argv[1:]
    prefix = args and args[0] == "--prefix"
    if prefix:
        args = args[1:]
    a, ref = open_dump(args[0]), open_dump(args[1])
    P = len(a["prompt_offsets"]) - 1
    Pr = len(ref["prompt_offsets"]) - 1
    if P > Pr:
        fail(f"{args[0]}: {P} prompts, more than the reference's {Pr}")
    if not prefix and P != Pr:
        fail(f"{args[0]}: {P} prompts, the reference has {Pr}")
    off = {k: a[k][: P + 1] for k in OFFSETS}
    for k in OFFSETS:
        if not same(off[k], ref[k][: P + 1]):
            fail(f"{k} differs")
    N, R, K = (int(off[k][-1]) for k in OFFSETS)
    da, dr = walk(a), walk(ref)
    if set(da) != set(dr):
        fail(f"datasets differ: {sorted(set(da) ^ set(dr))}")
    for name, d in da.items():
        e = dr[name]
        if name in OFFSETS:
            n = P + 1
        elif name in PER_PROMPT:
            n = P
        elif name in ("tokens", "token_strings"):
            n = N
        elif d.attrs.get("kind") in ("attention", b"attention"):
            x, y = d[:, :K], e[:, :K]
            if not prefix and d.shape != e.shape:
                fail(f"{name}: shape {d.shape} vs {e.shape}")
            if not same(x, y):
                fail(f"{name}: values differ in the committed columns")
            continue
        else:
            n = R
        if not prefix and d.shape[0] != e.shape[0]:
            fail(f"{name}: {d.shape[0]} entries, the reference has {e.shape[0]}")
        if d.shape[0] < n:
            fail(f"{name}: {d.shape[0]} entries, fewer than the committed {n}")
        if not same(d[:n], e[:n]):
            fail(f"{name}: values differ in the first {n} entries")
        for k, v in e.attrs.items():
            if not same(d.attrs.get(k), v):
                fail(f"{name}: attribute {k} differs")
    if not prefix:
        ka = set(a.attrs) - VOLATILE
        kr = set(ref.attrs) - VOLATILE
        if ka != kr:
            fail(f"root attributes differ: {sorted(ka ^ kr)}")
        for k in ka:
            if not same(a.attrs[k], ref.attrs[k]):
                fail(f"root attribute {k}: {a.attrs[k]!r} vs {ref.attrs[k]!r}")
    print(P)


if __name__ == "__main__":
    main()
