#!/usr/bin/env bash
# bench_probe_memory.sh — what reads a whole dump must stream it: `koalascope probe` reads one
# hook at a time and only the labelled rows of it, `koalascope export` copies chunk by chunk.
# This records a dump far larger than what those keep (every per-token hook and the attention
# maps of stories260K), probes it at the last token and at every token, exports it whole to
# safetensors and to .npz, and prints each run's peak resident memory as a ratio to the dump's
# size on disk (docs/PERFORMANCE.md records the figures).
#
# Usage: bench/bench_probe_memory.sh [BUILD_DIR] [PROMPTS] [TOKENS]   (default build 600 256)
# Needs the stories260K shared data (KS_SHARED_DATA, default ../shared/data) and GNU time.
set -euo pipefail
BUILD=${1:-build}
P=${2:-600}
T=${3:-256}
KS=$BUILD/cli/koalascope
DATA=${KS_SHARED_DATA:-$(dirname "$0")/../../shared/data}
MODEL=$DATA/stories260K/stories260K.bin
TOK=$DATA/stories260K/tok512.bin
[ -f "$MODEL" ] || { echo "bench_probe_memory: no $MODEL (set KS_SHARED_DATA)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
/usr/bin/python3 - "$P" "$T" "$TMP" <<'PY'
import json, random, sys
P, T, tmp = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(7)
with open(tmp + "/prompts.jsonl", "w") as f, open(tmp + "/labels.jsonl", "w") as g:
    for p in range(P):
        toks = [1] + [rnd.randrange(3, 512) for _ in range(T - 1)]
        f.write(json.dumps({"id": "p%d" % p, "tokens": toks}) + "\n")
        g.write(json.dumps({"prompt": p, "label": "odd" if toks[-1] % 2 else "even"}) + "\n")
PY
echo "recording $P prompts x $T tokens, every per-token hook and the attention maps ..." >&2
t0=$(date +%s.%N)
"$KS" record "$MODEL" --tokenizer "$TOK" --prompts "$TMP/prompts.jsonl" \
  --hooks 'blocks.*.hook_*,blocks.*.attn.hook_*,blocks.*.mlp.hook_*' -q -o "$TMP/big.h5"
t1=$(date +%s.%N)
bytes=$(stat -c %s "$TMP/big.h5")
printf 'dump: %.2f GB on disk, recorded in %.1f s\n' "$(echo "$bytes/1000000000" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
# what the process costs before it reads anything (the shared libraries: with CUDA built in,
# cuBLAS's relocations alone are ~200 MB resident)
/usr/bin/time -f '%M' -o "$TMP/time" "$KS" --help > /dev/null
read -r base_kb < "$TMP/time"
printf 'baseline (koalascope --help): peak RSS %.1f MB; figures below are peak RSS and peak RSS - baseline\n' \
  "$(echo "$base_kb/1024" | bc -l)"
for pos in last all; do
  /usr/bin/time -f '%M %e' -o "$TMP/time" "$KS" probe "$TMP/big.h5" --labels "$TMP/labels.jsonl" \
    --hook 'blocks.*.hook_resid_post' --position $pos --bootstrap 200 --shuffles 1 --chart none -q \
    -o "$TMP/res_$pos.h5" > /dev/null
  read -r kb secs < "$TMP/time"
  printf 'probe --position %-4s: peak RSS %7.1f MB (+%6.1f MB), %6.1f s; dump / peak RSS = %.1f\n' "$pos" \
    "$(echo "$kb/1024" | bc -l)" "$(echo "($kb - $base_kb)/1024" | bc -l)" "$secs" "$(echo "$bytes/($kb*1024)" | bc -l)"
done
# The same with the memory the process may use capped at a tenth of the dump (a cgroup-v1 memory
# limit, page cache included: where we may create one, i.e. as root): the dump is then 10x the
# memory available, and the run must still complete.
CGROOT=/sys/fs/cgroup/memory
if [ -w "$CGROOT" ] && mkdir "$CGROOT/ks_bench_$$" 2>/dev/null; then
  CG=$CGROOT/ks_bench_$$
  limit=$((bytes / 10))
  echo "$limit" > "$CG/memory.limit_in_bytes"
  [ -e "$CG/memory.memsw.limit_in_bytes" ] && echo "$limit" > "$CG/memory.memsw.limit_in_bytes"
  for pos in last all; do
    echo 0 > "$CG/memory.max_usage_in_bytes" 2>/dev/null || true
    set +e
    sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$CG" "$KS" probe "$TMP/big.h5" \
      --labels "$TMP/labels.jsonl" --hook 'blocks.*.hook_resid_post' --position $pos --bootstrap 200 \
      --shuffles 1 --chart none -q --overwrite -o "$TMP/res_cg_$pos.h5" > /dev/null 2> "$TMP/cg_err"
    rc=$?
    set -e
    same=$(cmp -s <(h5dump -d accuracy "$TMP/res_$pos.h5" | tail -n +3) <(h5dump -d accuracy "$TMP/res_cg_$pos.h5" | tail -n +3) \
           && echo "identical to the unlimited run" || echo "DIFFERENT from the unlimited run")
    printf 'probe --position %-4s under a %.0f MB memory cap (dump / cap = 10): exit %d, cgroup peak %.1f MB, %s\n' \
      "$pos" "$(echo "$limit/1048576" | bc -l)" "$rc" "$(echo "$(cat "$CG/memory.max_usage_in_bytes")/1048576" | bc -l)" "$same"
  done
  rmdir "$CG"
else
  echo "no writable cgroup-v1 memory controller (not root?): the capped runs are skipped"
fi
for fmt in safetensors npz; do
  /usr/bin/time -f '%M %e' -o "$TMP/time" "$KS" export $fmt "$TMP/big.h5" -o "$TMP/big.$fmt" > /dev/null
  read -r kb secs < "$TMP/time"
  out=$(stat -c %s "$TMP/big.$fmt")
  printf 'export %-11s: %.2f GB written, peak RSS %7.1f MB (+%6.1f MB), %6.1f s; dump / peak RSS = %.1f\n' "$fmt" \
    "$(echo "$out/1000000000" | bc -l)" "$(echo "$kb/1024" | bc -l)" "$(echo "($kb - $base_kb)/1024" | bc -l)" "$secs" \
    "$(echo "$bytes/($kb*1024)" | bc -l)"
  if [ "$fmt" = npz ]; then  # a real zip64 archive when it is 4 GiB or more: read it back whole
    /usr/bin/python3 -c 'import sys, zipfile, numpy as np
z = zipfile.ZipFile(sys.argv[1]); bad = z.testzip(); n = len(z.infolist())
a = np.load(sys.argv[1]); k = a.files[-1]; v = a[k]
print("npz check: %d members, CRCs %s, zip64 %s, last array %s %s" % (n, "ok" if bad is None else "BAD " + bad,
      "yes" if open(sys.argv[1], "rb").read(0) == b"" and z.fp.seek(0, 2) >= 2**32 else "no", k, v.shape))' "$TMP/big.npz"
  fi
  rm -f "$TMP/big.$fmt"
done
