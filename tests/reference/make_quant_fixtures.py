#!/usr/bin/env python3
"""make_quant_fixtures.py — oracle fixtures for tests/test_quants.c (GGML block dequantisation).

For each GGML block type koalascope decodes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
Q5_K, Q6_K) this writes random but valid blocks and what gguf-py's own reference decoder,
gguf.quants.dequantize(bytes, GGMLQuantizationType.X), makes of them. The C test decodes the
same bytes with ks_dtype_to_f32 and compares bit for bit.

Blocks: every byte is random (quants, packed scales, mins, high-bit masks), except the f16
fields (d, dmin, m), which are set to finite values: mostly a random sign times a magnitude
log-uniform in [2^-12, 2^-2] (what real checkpoints hold), plus a few zeros, f16 subnormals and
values near 1 so that f16 -> f32 conversion is exercised at its edges. No NaN or inf, so every
expected float is finite.

Regenerate (from the repository root; see tests/reference/README.md for the venv):

    .venv-ref/bin/python tests/reference/make_quant_fixtures.py

Deterministic: numpy's PCG64 with a fixed seed, one generator per type (seeded from the type
id), so a rerun rewrites the same bytes and adding a type leaves the others unchanged.

File layout, tests/reference/fixtures/quants/<type>.bin, all little-endian:
  offset  0  char[4]  magic "KSQF"
          4  u32      version (1)
          8  u32      GGML type id (GGMLQuantizationType value, as in GGUF tensor infos)
         12  u32      block elements
         16  u32      block bytes
         20  u32      n_blocks
         24  u8[n_blocks * block bytes]      the blocks, back to back
             f32[n_blocks * block elements]  gguf-py's dequantisation of them, in order
"""
import argparse
import os
import struct
import sys

PINNED = {
    "numpy": "1.24.",  # Debian's python3-numpy: prefix match
    "gguf": "0.19.0",
}

SEED = 20250305
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "quants")

# name -> (byte offsets of the f16 fields in the block, number of blocks written).
# The 32-element types get more blocks than the 256-element ones (each K block carries 16
# sub-block scales and 1 KiB of expected floats); the total stays under 300 KB.
TYPES = {
    "Q4_0": ([0], 160),
    "Q4_1": ([0, 2], 160),
    "Q5_0": ([0], 160),
    "Q5_1": ([0, 2], 160),
    "Q8_0": ([0], 160),
    "Q2_K": ([80, 82], 28),
    "Q3_K": ([108], 28),
    "Q4_K": ([0, 2], 28),
    "Q5_K": ([0, 2], 28),
    "Q6_K": ([208], 28),
}


def check_versions(any_version):
    import numpy
    import importlib.metadata as md
    have = {"numpy": numpy.__version__, "gguf": md.version("gguf")}
    bad = [f"{k} {have[k]} (want {v})" for k, v in PINNED.items() if not have[k].startswith(v)]
    if bad and not any_version:
        sys.exit("make_quant_fixtures.py: wrong versions: " + ", ".join(bad) +
                 " (pass --any-version to try anyway)")


def f16_fields(rng, n):
    """n finite f16 values of realistic magnitude, with a few edge cases mixed in."""
    import numpy as np
    mag = np.exp2(rng.uniform(-12.0, -2.0, size=n))
    sign = np.where(rng.integers(0, 2, size=n) == 1, -1.0, 1.0)
    v = (sign * mag).astype(np.float16)
    kind = rng.integers(0, 32, size=n)
    sub = (rng.integers(1, 1024, size=n).astype(np.uint16)
           | (rng.integers(0, 2, size=n).astype(np.uint16) << 15)).view(np.float16)
    v = np.where(kind == 0, np.float16(0.0), v)         # zero scale
    v = np.where(kind == 1, sub, v)                      # f16 subnormal
    v = np.where(kind == 2, np.float16(1.0) + v, v)      # near 1
    assert np.all(np.isfinite(v))
    return v


def make(name, f16_offsets, n_blocks):
    import numpy as np
    from gguf import GGMLQuantizationType, GGML_QUANT_SIZES
    from gguf.quants import dequantize
    qt = GGMLQuantizationType[name]
    be, bb = GGML_QUANT_SIZES[qt]
    rng = np.random.default_rng([SEED, int(qt)])
    blocks = rng.integers(0, 256, size=(n_blocks, bb), dtype=np.uint8)
    for off in f16_offsets:
        blocks[:, off:off + 2] = f16_fields(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    want = dequantize(blocks.reshape(-1), qt).astype(np.float32).reshape(-1)
    assert want.size == n_blocks * be and np.all(np.isfinite(want)), name
    head = b"KSQF" + struct.pack("<5I", 1, int(qt), be, bb, n_blocks)
    data = head + blocks.tobytes() + want.astype("<f4").tobytes()
    path = os.path.join(OUT, name.lower() + ".bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true", help="skip the version check")
    args = ap.parse_args()
    check_versions(args.any_version)
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for name, (offs, n) in TYPES.items():
        path, size = make(name, offs, n)
        total += size
        print(f"{os.path.relpath(path, HERE)}: {size} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
