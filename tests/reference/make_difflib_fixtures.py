#!/usr/bin/env python3
"""Oracle for koalascope's token alignment (ks_audit_matching, CrowS-Pairs' unmodified tokens):
Python's own difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks().

Writes fixtures/audit/difflib.json: pairs of token-id lists (random, with planted shared runs,
repeats and edits so that ties between equally long matches occur) and, for each, the matched
positions of a and of b. Standard library only; deterministic (seeded).
    python3 tests/reference/make_difflib_fixtures.py
"""
import difflib
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "audit", "difflib.json")


def case(rng):
    vocab = rng.choice([3, 5, 20, 500])
    n = rng.randint(0, 40)
    a = [rng.randrange(vocab) for _ in range(n)]
    b = list(a)
    for _ in range(rng.randint(0, 6)):  # edits: substitute, insert, delete, swap blocks
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(vocab)
        elif op == 1:
            b.insert(rng.randint(0, len(b)), rng.randrange(vocab))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        elif op == 3 and len(b) > 4:
            i = rng.randrange(len(b) - 2)
            b = b[i:] + b[:i]
    if rng.random() < 0.2:
        b = [rng.randrange(vocab) for _ in range(rng.randint(0, 40))]
    return a, b


def main():
    rng = random.Random(20261128)
    cases = []
    for _ in range(250):
        a, b = case(rng)
        m = difflib.SequenceMatcher(None, a, b, autojunk=False)
        in_a, in_b = [0] * len(a), [0] * len(b)
        for i, j, k in m.get_matching_blocks():
            for t in range(k):
                in_a[i + t] = 1
                in_b[j + t] = 1
        cases.append({"a": a, "b": b, "in_a": in_a, "in_b": in_b})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"oracle": "difflib.SequenceMatcher(None, a, b, autojunk=False)", "cases": cases},
                  f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
