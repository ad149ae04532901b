#!/usr/bin/env bash
# test_cli.sh — the koalascope program end to end, as a user runs it: --help everywhere,
# results on stdout only, errors naming the flag or file with a non-zero exit.
# Usage (meson passes these): test_cli.sh KOALASCOPE   (TAP output)
set -u
KS="$1"
DATA="${KS_SHARED_DATA:-${KS_SOURCE_ROOT:-.}/../shared/data}"
n=0; failed=0
ok() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }
skip() { n=$((n+1)); echo "ok $n # SKIP $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

for c in info tokenize generate score chat record dump-info attribute patch lens export import probe tuned-lens; do
  "$KS" $c --help >"$tmp/out" 2>"$tmp/err"; rc=$?
  grep -q "Usage: koalascope $c" "$tmp/out"; ok $(( rc != 0 || $? != 0 )) "$c --help prints usage and exits 0"
done
"$KS" frobnicate >/dev/null 2>"$tmp/err"; rc=$?
grep -q "unknown command 'frobnicate'" "$tmp/err"; ok $(( rc == 0 || $? != 0 )) "unknown command is named, exit $rc"
"$KS" info --bogus x >/dev/null 2>"$tmp/err"; rc=$?
grep -q -- "--bogus" "$tmp/err"; ok $(( rc == 0 || $? != 0 )) "unknown flag is named, exit $rc"
"$KS" info "$tmp/nope.gguf" >/dev/null 2>"$tmp/err"; rc=$?
grep -q "nope.gguf" "$tmp/err"; ok $(( rc == 0 || $? != 0 )) "missing model file is named: $(head -1 "$tmp/err" | cut -c1-140)"
printf '\x80\x02}q\x00.' > "$tmp/pytorch_model.bin"
"$KS" info "$tmp/pytorch_model.bin" >/dev/null 2>"$tmp/err"; rc=$?
grep -qi "safetensors" "$tmp/err"; ok $(( rc == 0 || $? != 0 )) "a pickle is refused with how to convert: $(head -1 "$tmp/err" | cut -c1-140)"

BIN="$DATA/stories260K/stories260K.bin"; TOK="$DATA/stories260K/tok512.bin"; DOC="$DATA/stories260K/stories260K.llama2c-doc.md"
if [ ! -f "$BIN" ]; then
  if [ "${CI:-}" = true ]; then ok 1 "shared data missing at $DATA (CI=true requires it)"; else skip "shared data missing at $DATA; set KS_SHARED_DATA"; fi
else
  "$KS" generate "$BIN" --tokenizer "$TOK" -n 256 >"$tmp/gen" 2>"$tmp/err"; rc=$?
  expected=$(awk '/temperature 0.0/{f=1} f&&/^\$ \.\/run/{g=1;next} g&&/^```/{exit} g{print}' "$DOC")
  [ "$(cat "$tmp/gen")" = "$expected" ]; ok $(( rc != 0 || $? != 0 )) "generate prints exactly the published greedy sample on stdout"
  grep -q "tokens/s" "$tmp/err"; ok $? "generate reports speed on stderr"
  "$KS" tokenize "$BIN" --tokenizer "$TOK" --prompt "Once upon a time" >"$tmp/tok" 2>/dev/null
  grep -Eq '^1( [0-9]+)+$' "$tmp/tok"; ok $? "tokenize prints ids on one line, BOS first: $(cat "$tmp/tok")"
  "$KS" tokenize "$BIN" --tokenizer "$TOK" --no-bos --pieces --prompt "Once upon" >"$tmp/tok" 2>/dev/null
  [ "$(cat "$tmp/tok")" = "▁Once ▁upon" ]; ok $? "tokenize --pieces --no-bos prints SentencePiece pieces: '$(cat "$tmp/tok")'"
  "$KS" score "$BIN" --tokenizer "$TOK" --prompt "Once upon a time, there was a little girl." >"$tmp/score" 2>/dev/null; rc=$?
  head -1 "$tmp/score" | grep -q $'^position\tid\tpiece\tlogprob$'; ok $(( rc != 0 || $? != 0 )) "score prints a TSV header"
  tail -1 "$tmp/score" | grep -Eq $'^total\t[0-9]+\t\t-[0-9.]+$'; ok $? "score ends with the total: $(tail -1 "$tmp/score")"
  sum=$(awk -F'\t' 'NR>1 && $1!="total"{s+=$4} END{printf "%.3f", s}' "$tmp/score")
  tot=$(tail -1 "$tmp/score" | awk -F'\t' '{printf "%.3f", $4}')
  [ "$sum" = "$tot" ]; ok $? "the total is the sum of the rows ($sum)"
  "$KS" generate "$BIN" --tokenizer "$TOK" -n 40 -t 1 --top-p 0.9 -s 7 >"$tmp/a" 2>/dev/null
  "$KS" generate "$BIN" --tokenizer "$TOK" -n 40 -t 1 --top-p 0.9 -s 7 >"$tmp/b" 2>/dev/null
  cmp -s "$tmp/a" "$tmp/b"; ok $? "sampling with a seed is reproducible"
  "$KS" generate "$BIN" --tokenizer "$TOK" -n 256 --stop "park" >"$tmp/stop" 2>/dev/null
  [ "$(cat "$tmp/stop")" = "Once upon a time, there was a little girl named Lily. She loved to play outside in the " ]; ok $? "--stop ends before the stop string: '$(cat "$tmp/stop")'"
  "$KS" generate "$BIN" --tokenizer "$TOK" --top-p 2 >/dev/null 2>"$tmp/err"; rc=$?
  grep -q -- "--top-p" "$tmp/err"; ok $(( rc == 0 || $? != 0 )) "bad --top-p is named: $(head -1 "$tmp/err" | cut -c1-140)"
  printf 'Hello\n/quit\n' | "$KS" chat "$BIN" --tokenizer "$TOK" --template plain -n 8 >"$tmp/chat" 2>"$tmp/err"; rc=$?
  ok $rc "chat answers a line and quits on /quit"
  # the second turn reuses the cached prefix of the first: its reply must equal a fresh
  # generation from the whole conversation rendered as the plain template does
  printf 'Once upon a time\nThe end\n/quit\n' | "$KS" chat "$BIN" --tokenizer "$TOK" --template plain -n 12 >"$tmp/chat" 2>/dev/null
  r1=$(sed -n 1p "$tmp/chat" | sed 's/^ *//'); r2=$(sed -n 2p "$tmp/chat")
  g=$("$KS" generate "$BIN" --tokenizer "$TOK" -n 12 --prompt "$(printf 'Once upon a time\n%s\nThe end' "$r1")" 2>/dev/null)
  [ -n "$r2" ] && [ "$r2" = "$g" ]; ok $? "chat's second turn (cached prefix reused) equals a fresh generation: '$r2'"
  "$KS" generate "$BIN" --tokenizer "$TOK" -n 4 --backend tpu >/dev/null 2>"$tmp/err"; rc=$?
  grep -q -- "--backend: 'tpu'" "$tmp/err"; ok $(( rc == 0 || $? != 0 )) "an unknown --backend is named: $(head -1 "$tmp/err" | cut -c1-140)"
  if "$KS" version | grep -q "device 0:"; then
    # a GPU: greedy decoding of the f32 model on it must give the published sample too
    "$KS" generate "$BIN" --tokenizer "$TOK" -n 256 --backend cuda >"$tmp/gen" 2>"$tmp/err"; rc=$?
    [ "$(cat "$tmp/gen")" = "$expected" ]; ok $(( rc != 0 || $? != 0 )) "generate --backend cuda prints the published greedy sample: $(head -1 "$tmp/err" | cut -c1-100)"
  else
    "$KS" generate "$BIN" --tokenizer "$TOK" -n 4 --backend cuda >"$tmp/out" 2>"$tmp/err"; rc=$?
    grep -qi "cuda" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "--backend cuda with no GPU: exit $rc and $(head -1 "$tmp/err" | cut -c1-150)"
    [ ! -s "$tmp/out" ]; ok $? "--backend cuda with no GPU prints nothing on stdout"
  fi
  # attribution and patching (probes/ on the backward pass)
  "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once upon a time, there was a little girl named" --target " Lily" -o "$tmp/attr.h5" >"$tmp/attr" 2>"$tmp/err"; rc=$?
  head -1 "$tmp/attr" | grep -q $'^rank\tposition\ttoken\tpiece\tattribution$'; ok $(( rc != 0 || $? != 0 )) "attribute prints a ranked token table (ig)"
  [ "$(tail -n +2 "$tmp/attr" | wc -l)" -eq 14 ] && grep -q "completeness error" "$tmp/err"; ok $? "attribute ranks all 14 prompt tokens (BOS included) and reports completeness: $(grep completeness "$tmp/err" | cut -c1-120)"
  if "$KS" version | grep -q "device 0:"; then
    # the same attribution on the GPU: every token's value within 1e-3 of the largest |value|
    # (f32 model: the GPU's gradients are f32 too; the 64 integration nodes add up rounding)
    "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once upon a time, there was a little girl named" --target " Lily" --backend cuda >"$tmp/attr_gpu" 2>"$tmp/err"; rc=$?
    awk -F'\t' 'NR == FNR { if (FNR > 1) { c[$2] = $5; if ($5 > m || -$5 > m) m = ($5 < 0 ? -$5 : $5) } next }
                 FNR > 1 { n++; d = $5 - c[$2]; if (d < 0) d = -d; if (d > w) w = d }
                 END { printf "%d tokens, max |diff| %g of max |value| %g\n", n, w, m; exit !(n == 14 && w <= 1e-3 * m) }' \
      "$tmp/attr" "$tmp/attr_gpu" >"$tmp/cmp"; cmp_rc=$?
    ok $(( rc != 0 || cmp_rc != 0 )) "attribute --backend cuda equals the CPU's: $(cat "$tmp/cmp") $(head -1 "$tmp/err" | cut -c1-100)"
  else
    "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once" --target " upon" --backend cuda >"$tmp/out" 2>"$tmp/err"; rc=$?
    grep -qi "cuda" "$tmp/err" && [ ! -s "$tmp/out" ]; ok $(( rc == 0 || $? != 0 )) "attribute --backend cuda with no GPU: exit $rc, nothing on stdout, $(head -1 "$tmp/err" | cut -c1-150)"
  fi
  "$KS" patch "$BIN" --tokenizer "$TOK" --clean "Lily went to the park. Then" --corrupt "Tim went to the park. Then" --target " she" --vs " he" -o "$tmp/attr.h5" >"$tmp/patch" 2>"$tmp/err"; rc=$?
  [ $rc -eq 0 ] && [ "$(wc -l <"$tmp/patch")" -eq 6 ] && head -1 "$tmp/patch" | grep -q "^layer"; ok $? "patch prints one row per layer under a header (exit $rc)"
  grep -q "wrote /attributions/activation_patching" "$tmp/err"; ok $? "patch -o adds its result to the attribution file"
  "$KS" patch "$BIN" --tokenizer "$TOK" --clean "Lily went" --corrupt "Sue went" --target " she" >/dev/null 2>"$tmp/err"; rc=$?
  grep -q "same length" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "patch refuses prompts of different lengths: $(head -1 "$tmp/err" | cut -c1-140)"
  "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once" >/dev/null 2>"$tmp/err"; rc=$?
  grep -q -- "--target" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "attribute without --target is refused by name"
  "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once" --target " upon" --method magic >/dev/null 2>"$tmp/err"; rc=$?
  grep -q -- "--method: 'magic'" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "an unknown --method is named"
  "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once" --target " upon" --method saliency -o "$tmp/attr.h5" >/dev/null 2>"$tmp/err"
  "$KS" attribute "$BIN" --tokenizer "$TOK" --prompt "Once" --target " upon" --method saliency -o "$tmp/attr.h5" >/dev/null 2>"$tmp/err"; rc=$?
  grep -q "/attributions/saliency exists" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "a second result of the same name is refused without --overwrite: $(grep error "$tmp/err" | cut -c1-140)"
  # the logit lens: at the last layer it is the model's own output (the dump's top-k log-probs)
  printf '{"prompt":"Once upon a time, there was a little girl named Lily."}\n' >"$tmp/lens.jsonl"
  "$KS" record "$BIN" --tokenizer "$TOK" --prompts "$tmp/lens.jsonl" --hooks 'blocks.*.hook_resid_post' -q -o "$tmp/lens.h5" 2>/dev/null
  "$KS" lens "$tmp/lens.h5" --model "$BIN" --tokenizer "$TOK" --position all --target " She" >"$tmp/lens" 2>"$tmp/err"; rc=$?
  md=$(sed -n 's/.*max |diff| \([0-9.e+-]*\).*/\1/p' "$tmp/err")
  [ $rc -eq 0 ] && [ -n "$md" ] && awk -v m="$md" 'BEGIN{exit !(m <= 1e-4)}'; ok $? "lens: the last layer reproduces the dump's top-10 log-probabilities within 1e-4 (max |diff| ${md:-none})"
  [ "$(awk -F'\t' 'NR>1 && $1==4 && $NF!=0' "$tmp/lens" | wc -l)" -eq 0 ] && [ "$(awk 'NR>1' "$tmp/lens" | wc -l)" -eq 80 ]; ok $? "lens: 5 layers x 16 positions, KL to the final layer exactly 0 at the last layer"
  "$KS" lens "$tmp/lens.h5" --model "$BIN" --tokenizer "$TOK" --hook resid_pre >/dev/null 2>"$tmp/err"; rc=$?
  grep -q "did not record blocks.0.hook_resid_pre" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "lens names the hook a dump lacks: $(head -1 "$tmp/err" | cut -c1-140)"
  # the tuned lens: trained on the model's own samples, read back by lens --tuned; the tuned
  # lens is closer to the final layer than the logit lens at every layer but the last (0 both)
  OMP_WAIT_POLICY=PASSIVE "$KS" tuned-lens "$BIN" --tokenizer "$TOK" --generate 24 --steps 60 --seed 3 \
    -o "$tmp/tl.safetensors" >"$tmp/tl" 2>&1; rc=$?
  awk -F'\t' '$1 ~ /^[0-3]$/ && !($3 < $2) {bad=1} $1 == 4 && ($2 != 0 || $3 != 0) {bad=1} END {exit bad}' "$tmp/tl" \
    && [ "$(grep -c '^[0-4]'$'\t' "$tmp/tl")" -eq 5 ]
  ok $(( rc != 0 || $? != 0 )) "tuned-lens: held-out KL below the logit lens at layers 0-3, 0 at the last: $(grep '^0'$'\t' "$tmp/tl")"
  "$KS" lens "$tmp/lens.h5" --model "$BIN" --tokenizer "$TOK" --position all --tuned "$tmp/tl.safetensors" >"$tmp/tlens" 2>"$tmp/err"; rc=$?
  tuned0=$(awk -F'\t' 'NR>1 && $1==0 {s+=$(NF-1); n++} END {print s/n}' "$tmp/tlens")
  logit0=$(awk -F'\t' 'NR>1 && $1==0 {s+=$NF; n++} END {print s/n}' "$tmp/lens")
  [ $rc -eq 0 ] && [ "$(awk -F'\t' 'NR>1 && $NF=="tuned"' "$tmp/tlens" | wc -l)" -eq 80 ] && awk -v t="$tuned0" -v l="$logit0" 'BEGIN{exit !(t < l)}'
  ok $? "lens --tuned: 80 rows marked tuned, layer-0 mean KL ${tuned0:-?} below the logit lens's ${logit0:-?}"
  "$KS" lens "$tmp/lens.h5" --model "$DATA/stories260K/stories260K.gguf" --tuned "$tmp/tl.safetensors" >/dev/null 2>"$tmp/err"; rc=$?
  grep -q "model_sha256" "$tmp/err"; ok $(( rc != 1 || $? != 0 )) "lens --tuned refuses a lens of another model file: $(head -1 "$tmp/err" | cut -c1-140)"
  "$KS" info "$DATA/stories260K/stories260K.gguf" >"$tmp/info" 2>&1; rc=$?
  grep -q "8 query heads, 4 key/value heads" "$tmp/info"; ok $(( rc != 0 || $? != 0 )) "info on the GGUF shows GQA"
fi
echo "1..$n"
exit $(( failed > 0 ))
