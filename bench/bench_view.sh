#!/usr/bin/env bash
# bench_view.sh — the viewer on a dump of about 4 GB: time to the first frame and peak
# resident memory while its --self-test browses every page of the first prompt (token strip,
# attention grid of 40 heads, a 2,048-token head whole and zoomed, from/to bars, residual
# norms, logit lens, compare against itself), and the longest stall of the main loop while the
# grid is read (on a worker: the window stays responsive). The baseline, in the same invocation, is the
# same self-test on a small dump of the same model shape (2 prompts of 64 tokens), so the
# ratios say what the dump's size costs. Nothing is asserted; docs/PERFORMANCE.md keeps the
# figures.
#
# Usage: bench/bench_view.sh [BUILD_DIR] [RUNS]   (default build, 3; medians are printed)
# Needs xvfb-run, dbus-run-session and GNU time; writes the dumps under $TMPDIR (4.1 GB).
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-3}
VIEW=$BUILD/gui/viewer/koalascope-view
GEN=$BUILD/bench/bench_view_dump
[ -x "$VIEW" ] || { echo "bench_view: no $VIEW (meson option gui)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "writing the dumps ..." >&2
t0=$(date +%s.%N)
"$GEN" "$TMP/big.h5" 12 2048 2>/dev/null
t1=$(date +%s.%N)
"$GEN" "$TMP/small.h5" 2 64 2>/dev/null
printf 'big dump: %.2f GB (12 prompts x 2048 tokens, written in %.0f s); small: %.1f MB\n' \
  "$(echo "$(stat -c %s "$TMP/big.h5")/1000000000" | bc -l)" "$(echo "$t1 - $t0" | bc -l)" \
  "$(echo "$(stat -c %s "$TMP/small.h5")/1000000" | bc -l)"

export GSK_RENDERER=cairo GTK_A11Y=none NO_AT_BRIDGE=1 XDG_CONFIG_HOME=$TMP/config
run() { # DUMP -> "first_frame_ms peak_rss_mb grid_ms head_ms grid_stall_ms"
  rm -rf "$TMP/shots"
  out=$(dbus-run-session -- xvfb-run -a -s "-screen 0 1400x1000x24" /usr/bin/time -f 'maxrss %M' \
        "$VIEW" --self-test "$TMP/shots" "$1" --compare "$1" 2>&1)
  grep -q 'self-test: ok' <<<"$out" || { echo "$out" >&2; echo "bench_view: self-test failed" >&2; exit 1; }
  ff=$(sed -n 's/.*first-frame-ms \([0-9.]*\) (process start).*/\1/p' <<<"$out")
  rss=$(sed -n 's/^maxrss \([0-9]*\)/\1/p' <<<"$out")
  grid=$(sed -n 's/.*page attention-grid saved (\([0-9]*\) ms.*/\1/p' <<<"$out")
  head=$(sed -n 's/.*page head saved (\([0-9]*\) ms.*/\1/p' <<<"$out")
  stall=$(sed -n 's/.*page attention-grid saved .*stalled at most \([0-9]*\) ms.*/\1/p' <<<"$out")
  echo "$ff $((rss / 1024)) $grid $head $stall"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
declare -A col
for which in small big; do
  for ((i = 0; i < RUNS; i++)); do run "$TMP/$which.h5"; done > "$TMP/$which.txt"
  for k in 1 2 3 4 5; do col[$which$k]=$(cut -d' ' -f$k "$TMP/$which.txt" | median); done
done
printf '%-36s %10s %10s %8s\n' "median of $RUNS runs" small big ratio
for k in 1 2 3 4 5; do
  name=("" "first frame (ms)" "peak RSS (MB)" "attention grid page (ms)" "2,048-token head page (ms)"
        "grid: longest main-loop stall (ms)")
  if [ "${col[small$k]}" = 0 ]; then ratio=-; else
    ratio=$(printf '%.2f' "$(echo "${col[big$k]} / ${col[small$k]}" | bc -l)"); fi
  printf '%-36s %10s %10s %8s\n' "${name[$k]}" "${col[small$k]}" "${col[big$k]}" "$ratio"
done
