#!/usr/bin/env python3
"""make_half_fixtures.py — oracle fixtures for tests/test_quants.c (f32 -> f16 / bf16).

The recorder stores activations as IEEE half (f16) or bfloat16 when asked (--dtype), and the
trainer writes bf16 checkpoints; both round f32 with ks_f32_to_f16 / ks_f32_to_bf16
(model/dtype.c). This writes f32 inputs chosen to sit on every rounding edge and what the
oracles make of them:
  f16:  numpy's float32 -> float16 cast (x.astype(np.float16)), IEEE round to nearest even;
  bf16: PyTorch's float32 -> bfloat16 cast (tensor.to(torch.bfloat16)), round to nearest even.

Inputs (about 12k), for both signs and every f32 exponent 0..255: three random high mantissa
parts, each with low bits set to the values that decide rounding — for f16 the 13 dropped bits
(0, 1, 0x0fff, 0x1000 = the tie, 0x1001, 0x1fff), for bf16 the 16 dropped bits (0x7fff,
0x8000 = the tie, 0x8001, 0xffff) — so ties to even and odd, overflow to inf near 65520 and
2^128, the half subnormal range (2^-24 .. 2^-14) and underflow to zero are all covered; plus
named special values. NaN inputs are included; the oracles' NaN bits differ from ours (numpy
keeps a signalling NaN signalling, torch returns 0x7fc0 for every NaN), so the C test checks
only that a NaN input gives a NaN there (torch drops the sign), and checks our documented NaN bits
(model_private.h) itself.

Regenerate (from the repository root; see tests/reference/README.md for the venv):

    .venv-ref/bin/python tests/reference/make_half_fixtures.py

Deterministic: numpy's PCG64 with a fixed seed.

File layout, tests/reference/fixtures/half/cases.bin, little-endian:
  offset  0  char[4]  magic "KSHF"
          4  u32      version (1)
          8  u32      n
         12  u32[n]   the f32 inputs as bits
             u16[n]   numpy's float16 of each, as bits
             u16[n]   torch's bfloat16 of each, as bits
"""
import argparse
import os
import struct
import sys

PINNED = {
    "numpy": "1.24.",  # Debian's python3-numpy: prefix match
    "torch": "1.13.",  # Debian's python3-torch (CPU)
}
SEED = 20261129
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "half")

F16_LOW = [0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF]  # the 13 bits f16 drops
BF16_LOW = [0x7FFF, 0x8000, 0x8001, 0xFFFF]                 # the 16 bits bf16 drops
SPECIAL = [
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0xFF7FFFFF,
    0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0x7FFFFFFF, 0x7FA00000,  # NaNs
    0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,  # 65504 .. 65536
    0x38800000, 0x387FFFFF, 0x387FE000, 0x387FF000,              # 2^-14 and just below
    0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF, 0x33C00000,  # 2^-24, 2^-25 (tie), ...
    0x00000001, 0x007FFFFF, 0x00800000, 0x3F800000, 0x3F808000, 0x3F818000,
]


def check_versions(any_version):
    import numpy
    import torch
    have = {"numpy": numpy.__version__, "torch": torch.__version__}
    bad = [f"{k} {have[k]} (want {v})" for k, v in PINNED.items() if not have[k].startswith(v)]
    if bad and not any_version:
        sys.exit("make_half_fixtures.py: wrong versions: " + ", ".join(bad) +
                 " (pass --any-version to try anyway)")


def inputs():
    import numpy as np
    rng = np.random.default_rng(SEED)
    out = list(SPECIAL)
    for sign in (0, 1):
        for exp in range(256):
            for _ in range(3):
                hi = int(rng.integers(0, 1 << 10))  # mantissa bits 13..22
                for lo in F16_LOW:
                    out.append((sign << 31) | (exp << 23) | (hi << 13) | lo)
                hi7 = int(rng.integers(0, 1 << 7))  # mantissa bits 16..22
                for lo in BF16_LOW:
                    out.append((sign << 31) | (exp << 23) | (hi7 << 16) | lo)
    return np.array(out, dtype=np.uint32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--any-version", action="store_true", help="skip the version check")
    args = ap.parse_args()
    check_versions(args.any_version)
    import numpy as np
    import torch
    bits = inputs()
    x = bits.view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        f16 = x.astype(np.float16).view(np.uint16)
    bf16 = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "cases.bin")
    data = (b"KSHF" + struct.pack("<2I", 1, bits.size) + bits.astype("<u4").tobytes() +
            f16.astype("<u2").tobytes() + bf16.astype("<u2").tobytes())
    with open(path, "wb") as f:
        f.write(data)
    print(f"{os.path.relpath(path, HERE)}: {bits.size} inputs, {len(data)} bytes")


if __name__ == "__main__":
    main()
