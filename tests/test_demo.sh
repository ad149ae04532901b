#!/usr/bin/env bash
# test_demo.sh — `koalascope demo --no-view` on the embedded koala-mini (TAP): each step exits 0,
# the outputs exist and REPORT.md links them; a second run replaces the first; an existing
# directory that is not a demo's is refused.
# Usage: test_demo.sh KOALASCOPE
set -uo pipefail
KS=$(realpath "$1")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
n=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }
cd "$T"
"$KS" demo --no-view -o out > stdout.txt 2> stderr.txt
rc=$?
ok $rc "koalascope demo --no-view exits 0 ($(tail -c 300 stderr.txt | tr '\n' ' '))"
for f in REPORT.md chat.txt probe.h5 probe_results.csv probe_results.png audit/metrics.csv \
         audit/report.md audit/charts/pronouns.png audit/drilldown/pronouns.h5; do
  [ -s "out/$f" ]; ok $? "out/$f written"
done
grep -q "the report is out/REPORT.md" stdout.txt; ok $? "the report's path is printed"
grep -q "(probe_results.png)" out/REPORT.md && grep -q "(audit/report.md)" out/REPORT.md
ok $? "REPORT.md links the probe chart and the audit report"
[ -n "$(sed -n 's/^GPT: *//p' out/REPORT.md)" ]; ok $? "REPORT.md holds koala-mini's answer"
grep -q "^pronouns,share_term,farmer," out/audit/metrics.csv; ok $? "the audit measured the planted rates"
"$KS" demo --no-view -o out > /dev/null 2>&1; ok $? "a second demo into the same directory replaces it"
mkdir mine && touch mine/notes.txt
"$KS" demo --no-view -o mine > /dev/null 2> err.txt
[ $? -eq 1 ] && grep -q "not a koalascope demo's output" err.txt && [ -f mine/notes.txt ]
ok $? "a directory that is not a demo's is refused and left as it was"
echo "1..$n"
