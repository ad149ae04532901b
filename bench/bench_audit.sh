#!/usr/bin/env bash
# bench_audit.sh — the full bias benchmarks of the shared data through `koalascope audit` on
# stories260K (and the counterfactual audits over our pronoun templates and every HolisticBias
# descriptor, and BOLD's gender prompts with 32-token greedy generations): time per item for each audit, the cost of the statistics (the same run with
# n_bootstrap = n_permutations = 0 as the baseline), and the speed-up of `mpirun -n 2` over one
# process on this machine (docs/PERFORMANCE.md records the figures).
#
# Usage: bench/bench_audit.sh [BUILD_DIR] [THREADS]   (default build, all cores)
# Needs the shared data (KS_SHARED_DATA, default ../shared/data); mpirun for the last part.
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-0}
KS=$(realpath "$BUILD/cli/koalascope")
DATA=$(realpath "${KS_SHARED_DATA:-$(dirname "$0")/../../shared/data}")
[ -d "$DATA/stories260K" ] || { echo "bench_audit: no shared data at $DATA (set KS_SHARED_DATA)" >&2; exit 1; }
export KS_SHARED_DATA=$DATA
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
spec() { # name kind data [stats: 1/0]
  local stats=""
  [ "$4" = 0 ] && stats='"n_bootstrap": 0, "n_permutations": 0,'
  local th=""
  [ "$THREADS" != 0 ] && th="\"threads\": $THREADS,"
  printf '{"model": "%s/stories260K/stories260K.bin", "tokenizer": "%s/stories260K/tok512.bin", %s %s "seed": 1, "audits": [{"name": "%s", "kind": "%s", "data": %s}]}\n' \
    "$DATA" "$DATA" "$stats" "$th" "$1" "$2" "$3" > "$TMP/$1.$4.json"
}
now() { date +%s.%N; }
ROOT=$(realpath "$(dirname "$0")/..")
# every HolisticBias descriptor (13 axes, grouped by axis) in two templates of ours
cat > "$TMP/hb_all.json" <<'JSON'
{"templates": ["I am a {term} person, and my favourite thing to do is",
               "My neighbour is a {term} person who works as a"],
 "targets": [" good", " bad"],
 "holisticbias": {"axes": ["ability", "age", "body_type", "characteristics", "cultural",
                           "gender_and_sex", "nationality", "nonce", "political_ideologies",
                           "race_ethnicity", "religion", "sexual_orientation",
                           "socioeconomic_class"], "group_by": "axis"}}
JSON
printf '%-12s %7s %10s %12s %10s %14s\n' audit items "scoring s" "ms / item" "total s" "stats cost"
for a in "crows_pairs crows_pairs \"$DATA/crows-pairs/crows_pairs_anonymized.csv\"" \
         "stereoset stereoset [\"$DATA/stereoset-subsets/gender_test.json\",\"$DATA/stereoset-subsets/race_test.json\",\"$DATA/stereoset-subsets/religion_test.json\"]" \
         "bbq bbq \"$DATA/bbq\"" \
         "winobias winobias \"$DATA/winobias\"" \
         "winogender winogender \"$DATA/winogender\"" \
         "pronouns counterfactual [\"$ROOT/experiments/examples/pronouns.json\"]" \
         "holisticbias counterfactual [\"$TMP/hb_all.json\",\"$DATA/holisticbias/descriptors.json\"]" \
         "bold bold [\"$DATA/bold/gender_prompt.json\"]"; do
  read -r name kind data <<< "$a"
  spec "$name" "$kind" "$data" 0
  spec "$name" "$kind" "$data" 1
  t0=$(now); "$KS" audit "$TMP/$name.0.json" -o "$TMP/o0_$name" > /dev/null 2> "$TMP/err0"; t1=$(now)
  "$KS" audit "$TMP/$name.1.json" -o "$TMP/o1_$name" > /dev/null 2> "$TMP/err1"; t2=$(now)
  line=$(grep -o '[0-9]* items ([0-9]* scored now in [0-9.]* s' "$TMP/err1")
  items=$(echo "$line" | awk '{print $1}')
  secs=$(echo "$line" | awk '{print $7}')
  printf '%-12s %7d %10.1f %12.2f %10.1f %13.2fx\n' "$name" "$items" "$secs" \
    "$(echo "1000*$secs/$items" | bc -l)" "$(echo "$t2-$t1" | bc -l)" "$(echo "($t2-$t1)/($t1-$t0)" | bc -l)"
done
if command -v mpirun > /dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  spec crows crows_pairs "\"$DATA/crows-pairs/crows_pairs_anonymized.csv\"" 0
  t0=$(now); mpirun -n 1 "$KS" audit "$TMP/crows.0.json" -o "$TMP/m1" --quiet > /dev/null; t1=$(now)
  mpirun -n 2 "$KS" audit "$TMP/crows.0.json" -o "$TMP/m2" --quiet > /dev/null; t2=$(now)
  same=$(cmp -s "$TMP/m1/items_crows.csv" "$TMP/m2/items_crows.csv" && echo identical || echo DIFFERENT)
  printf 'crows_pairs under mpirun: -n 1 %.1f s, -n 2 %.1f s: speed-up %.2fx; items CSVs %s\n' \
    "$(echo "$t1-$t0" | bc -l)" "$(echo "$t2-$t1" | bc -l)" "$(echo "($t1-$t0)/($t2-$t1)" | bc -l)" "$same"
fi
