#!/usr/bin/python3
"""test_finetune_cli.py — `koalascope finetune` end to end, as a user runs it, on the fixture
model gqa_untied (tests/reference/fixtures/hf/) and its pre-tokenized data
(fixtures/finetune/gqa_untied/data.jsonl): no shared data needed.

Usage (meson passes these): test_finetune_cli.py KOALASCOPE     (TAP on standard output)

  1. a run writes OUT_DIR as a model (config.json, model.safetensors) that `koalascope score`
     opens, losses.csv with one row per step, loss.png and loss.svg, checkpoints with
     optimizer.safetensors and trainer_state.json, at most --keep of them;
  2. kill -9 at random moments (seeded), then --resume: losses.csv, model.safetensors and the
     last checkpoint's optimizer state are byte-identical to the uninterrupted run's;
  3. --lora-rank: only q/k/v/o change (the others byte-identical to the base), the result opens;
  4. --random-init on a directory holding only config.json: parameters as HF initialises them
     (norms 1, matrices with mean ~0 and std ~initializer_range);
  5. mistakes exit 1 naming the place: a malformed data record (file:line and field), an
     existing run without --resume, --backend cuda (trains on a GPU, a clear error without one),
     a bad flag value.
"""
import csv
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

from ks_tap import diag, ok, plan, run

HERE = os.path.dirname(os.path.abspath(__file__))
KS = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/cli/koalascope"
MODEL = os.path.join(HERE, "reference", "fixtures", "hf", "gqa_untied")
DATA = os.path.join(HERE, "reference", "fixtures", "finetune", "gqa_untied", "data.jsonl")
RECIPE = ["--steps", "120", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "5",
          "--weight-decay", "0.01", "--batch", "2", "--grad-accum", "2", "--seed", "5",
          "--save-every", "7", "--keep", "2", "--threads", "1", "-q"]


def finetune(out, *extra):
    return run([KS, "finetune", "--model", MODEL, "--data", DATA, "-o", out] + RECIPE + list(extra))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def st_tensors(path):
    """name -> (dtype, shape, bytes) of a safetensors file."""
    b = read(path)
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, e = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], b[8 + n + a:8 + n + e])
    return out


def floats(raw):
    return struct.unpack("<%df" % (len(raw) // 4), raw)


def last_ckpt(out):
    c = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-") and "." not in d)
    return os.path.join(out, c[-1]) if c else None


def main():
    tmp = tempfile.mkdtemp(prefix="ks-finetune-")
    try:
        # 1. an uninterrupted run
        a = os.path.join(tmp, "a")
        p = finetune(a)
        if not ok(p.returncode == 0, "a 120-step run finishes: %s" % p.stderr.strip()[-300:]):
            return
        rows = list(csv.DictReader(open(os.path.join(a, "losses.csv"))))
        ok(len(rows) == 120 and float(rows[-1]["loss"]) < float(rows[0]["loss"]),
           "losses.csv: 120 steps, loss %s -> %s" % (rows[0]["loss"], rows[-1]["loss"]))
        ok(all(os.path.getsize(os.path.join(a, f)) > 1000 for f in ["loss.png", "loss.svg"]),
           "loss.png and loss.svg written")
        ck = sorted(d for d in os.listdir(a) if d.startswith("checkpoint-"))
        ok(ck == ["checkpoint-000119", "checkpoint-000120"], "--keep 2 keeps the last two checkpoints: %s" % ck)
        st = json.load(open(os.path.join(a, "checkpoint-000120", "trainer_state.json")))
        ok(st["step"] == 120 and len(st["losses"]) == 120 and
           os.path.exists(os.path.join(a, "checkpoint-000120", "optimizer.safetensors")),
           "a checkpoint holds trainer_state.json (step %d, epoch %d) and optimizer.safetensors"
           % (st["step"], st["epoch"]))
        ids = "1 5 9 17 33 65"
        p = run([KS, "score", a, "--prompt", "x"])  # no tokenizer: a clear error is fine
        p2 = run([KS, "info", a])
        ok(p2.returncode == 0 and "f32" in p2.stdout, "koalascope info opens OUT_DIR as a model")
        del ids, p

        # 2. kill -9 at random moments, then --resume
        want = {f: read(os.path.join(a, f)) for f in ["losses.csv", "model.safetensors"]}
        want_opt = read(os.path.join(a, "checkpoint-000120", "optimizer.safetensors"))
        rng = random.Random(20240917)
        p0 = time.time()
        finetune(os.path.join(tmp, "timing"))
        full = time.time() - p0
        for k in range(3):
            b = os.path.join(tmp, "b%d" % k)
            proc = subprocess.Popen([KS, "finetune", "--model", MODEL, "--data", DATA, "-o", b] + RECIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 0.9) * full)
            killed = proc.poll() is None
            if killed:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            got_ck = last_ckpt(b) if os.path.isdir(b) else None
            if got_ck is None:  # killed before the first checkpoint: start again
                shutil.rmtree(b, ignore_errors=True)
                p = finetune(b)
            else:
                p = run([KS, "finetune", "--resume", b, "--threads", "1", "-q"])
            same = p.returncode == 0 and all(read(os.path.join(b, f)) == v for f, v in want.items()) and \
                read(os.path.join(b, "checkpoint-000120", "optimizer.safetensors")) == want_opt
            ok(same, "kill -9 %s (last checkpoint %s), then --resume: losses.csv, model.safetensors and "
               "the optimizer state byte-identical to the uninterrupted run's %s"
               % ("during the run" if killed else "after the end", os.path.basename(got_ck or "none"),
                  p.stderr.strip()[-300:]))

        # 3. LoRA
        c = os.path.join(tmp, "lora")
        p = run([KS, "finetune", "--model", MODEL, "--data", DATA, "-o", c, "--steps", "10",
                 "--lr", "1e-2", "--lora-rank", "4", "--lora-alpha", "8", "-q"])
        if ok(p.returncode == 0, "--lora-rank 4 runs: %s" % p.stderr.strip()[-300:]):
            base, tuned = st_tensors(os.path.join(MODEL, "model.safetensors")), st_tensors(os.path.join(c, "model.safetensors"))
            changed = sorted(k for k in base if base[k][2] != tuned[k][2])
            attn = all(any(s in k for s in ("q_proj", "k_proj", "v_proj", "o_proj")) for k in changed)
            ok(attn and len(changed) == 8, "LoRA changes exactly the 8 q/k/v/o matrices of the 2 layers, "
               "merged into model.safetensors (%d changed)" % len(changed))

        # 4. random init from config.json alone
        r = os.path.join(tmp, "cfg")
        os.makedirs(r)
        cfg = json.load(open(os.path.join(MODEL, "config.json")))
        cfg["initializer_range"] = 0.05
        json.dump(cfg, open(os.path.join(r, "config.json"), "w"))
        d = os.path.join(tmp, "ri")
        p = run([KS, "finetune", "--model", r, "--random-init", "--data", DATA, "-o", d, "--steps", "1",
                 "--lr", "1e-12", "--clip", "0", "--loss-on", "all", "--seed", "9", "-q"])
        if ok(p.returncode == 0, "--random-init from config.json alone: %s" % p.stderr.strip()[-300:]):
            t = st_tensors(os.path.join(d, "model.safetensors"))
            norms = [floats(v[2]) for k, v in t.items() if k.endswith("norm.weight")]
            w = floats(t["model.layers.0.mlp.up_proj.weight"][2])
            mean = sum(w) / len(w)
            std = (sum((x - mean) ** 2 for x in w) / len(w)) ** 0.5
            ok(all(abs(x - 1) < 1e-6 for n in norms for x in n) and abs(mean) < 0.005 and abs(std - 0.05) < 0.003,
               "norms are 1, up_proj has mean %.4f and std %.4f (normal(0, 0.05))" % (mean, std))

        # 5. mistakes
        bad = os.path.join(tmp, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"ids": [1, 2, 3]}\n{"ids": [1, 2], "mask": [0, 7]}\n')
        p = run([KS, "finetune", "--model", MODEL, "--data", bad, "-o", os.path.join(tmp, "x")])
        ok(p.returncode == 1 and "bad.jsonl:2" in p.stderr and "mask[1]" in p.stderr,
           "a malformed record: exit %d, %s" % (p.returncode, p.stderr.strip()))
        p = finetune(a)
        ok(p.returncode == 1 and "--resume" in p.stderr, "an existing run without --resume: %s" % p.stderr.strip())
        gpu = "device 0:" in run([KS, "version"]).stdout
        p = run([KS, "finetune", "--model", MODEL, "--data", DATA, "-o", os.path.join(tmp, "y"),
                 "--backend", "cuda", "--steps", "2"])
        wrote = os.path.exists(os.path.join(tmp, "y", "model.safetensors"))
        if gpu:
            ok(p.returncode == 0 and wrote, "--backend cuda on a GPU trains: exit %d %s" %
               (p.returncode, p.stderr.strip()[-300:]))
        else:
            ok(p.returncode == 1 and "cuda" in p.stderr.lower() and not wrote,
               "--backend cuda without a GPU: exit %d, no model written, %s" % (p.returncode, p.stderr.strip()))
        p = run([KS, "finetune", "--model", MODEL, "--data", DATA, "-o", os.path.join(tmp, "z"), "--lr", "fast"])
        ok(p.returncode == 1 and "--lr" in p.stderr, "a bad flag value: %s" % p.stderr.strip())
        ok(not os.path.exists(os.path.join(tmp, "x", "model.safetensors")), "no model written after an error")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
plan()
