#!/usr/bin/env bash
# tests/gpu/run.sh — the one prepared script a GPU machine runs (tests/gpu/README.md): the CUDA
# backend's tests (test_cuda: every CUDA op against its CPU twin, under KS_REQUIRE_GPU=1) and the
# GPU benchmarks (bench_cuda on a random-initialised LLaMA-7B, bf16), then a short report.
# Needs no network; fits in under 6 minutes on one H100 (each step runs under a timeout that
# the overall budget shrinks, so the report is always printed).
#
# Binaries: prebuilt ones in .gpu/bin (with their shared libraries in .gpu/lib and the shared
# data in .gpu/data) when that directory exists, else built here in build-gpu/.
# Logs, the benchmark JSON and report.txt go to $OUT when it is set, else build-gpu/report/.
#
# Exit status: 0 all tests passed and the benchmark ran; 1 a test failed (or test_cuda could not
# run); 2 the tests passed but the benchmark did not run to its end. Benchmark targets that are
# not met do not fail the run: they are figures to read.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/gpu/run.sh [--quick] [--shape SHAPE] [--skip-tests] [--skip-bench]
  --quick        bench_cuda --quick on the tiny shape (a smoke run of a few seconds)
  --shape SHAPE  bench_cuda --random-init SHAPE (default 7b; 13b, tiny, D:H:L:HEADS:KV:V)
  --skip-tests   do not run test_cuda
  --skip-bench   do not run bench_cuda
Environment: OUT (report folder), KS_GPU_BUDGET (seconds for the whole script, default 340)
EOF
}

QUICK=0
SHAPE=7b
RUN_TESTS=1
RUN_BENCH=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; SHAPE=tiny ;;
        --shape) [ $# -ge 2 ] || { usage >&2; exit 64; }; SHAPE="$2"; shift ;;
        --skip-tests) RUN_TESTS=0 ;;
        --skip-bench) RUN_BENCH=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option '$1'" >&2; usage >&2; exit 64 ;;
    esac
    shift
done

START=$SECONDS
BUDGET=${KS_GPU_BUDGET:-340}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
REPORT=${OUT:-$ROOT/build-gpu/report}
mkdir -p "$REPORT"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/ks-gpu.XXXXXX") # the recorder's dumps: never into $OUT
trap 'rm -rf "$SCRATCH"' EXIT

log() { printf '%s\n' "$*" | tee -a "$REPORT/run.log"; }
elapsed() { echo $((SECONDS - START)); }
left() { echo $((BUDGET - (SECONDS - START))); }
# line-buffered stdout where stdbuf exists, so a killed program leaves its last lines in the log
LINEBUF=()
if command -v stdbuf >/dev/null 2>&1; then LINEBUF=(stdbuf -oL -eL); fi

: >"$REPORT/run.log"
log "== koalascope GPU run: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -n), budget ${BUDGET} s =="
log "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'unknown (no git)')"

# ---------------------------------------------------------------- the GPU
GPU_LINE="(nvidia-smi not found)"
if command -v nvidia-smi >/dev/null 2>&1; then
    { nvidia-smi -L || true; } 2>&1 | tee -a "$REPORT/run.log"
    GPU_LINE=$(nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm \
                   --format=csv,noheader 2>/dev/null | head -n 1 || true)
    DRIVER=$(nvidia-smi 2>/dev/null | grep -m1 'Driver Version' | tr -s ' ' || true)
    log "driver: ${DRIVER:-(no driver line from nvidia-smi)}"
    log "gpu: ${GPU_LINE:-(nvidia-smi gave no query output)}"
    nvidia-smi >"$REPORT/nvidia-smi.txt" 2>&1 || true
else
    log "nvidia-smi: not found (the tests below say whether the CUDA runtime sees a device)"
fi
log "cpu: $(nproc 2>/dev/null || echo '?') cores; memory: $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo 2>/dev/null || echo '?')"

# ---------------------------------------------------------------- binaries
TEST_CUDA=""
BENCH_CUDA=""
BUILD_NOTE=""
if [ -d "$ROOT/.gpu/bin" ]; then
    TEST_CUDA=$ROOT/.gpu/bin/test_cuda
    BENCH_CUDA=$ROOT/.gpu/bin/bench_cuda
    export LD_LIBRARY_PATH="$ROOT/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    [ -d "$ROOT/.gpu/data" ] && export KS_SHARED_DATA="${KS_SHARED_DATA:-$ROOT/.gpu/data}"
    BUILD_NOTE="prebuilt binaries from .gpu/bin"
    log "binaries: $BUILD_NOTE (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
else
    export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    export PATH="$PATH:/usr/local/cuda/bin"
    log "binaries: building build-gpu/ (-Dcuda=enabled, release); log: $REPORT/build.log"
    t0=$SECONDS
    set +e
    {
        if [ -f build-gpu/build.ninja ]; then
            echo "build-gpu/ is configured already: ninja reconfigures it if needed"
            meson configure build-gpu -Dcuda=enabled --buildtype=release
        else
            meson setup build-gpu -Dcuda=enabled --buildtype=release
        fi &&
            ninja -C build-gpu tests/test_cuda bench/bench_cuda cli/koalascope
    } >"$REPORT/build.log" 2>&1
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        log "build FAILED (exit $rc) after $((SECONDS - t0)) s; the end of build.log:"
        tail -n 40 "$REPORT/build.log" | tee -a "$REPORT/run.log"
        BUILD_NOTE="build failed"
    else
        log "built in $((SECONDS - t0)) s"
        BUILD_NOTE="built in build-gpu/"
    fi
    TEST_CUDA=$ROOT/build-gpu/tests/test_cuda
    BENCH_CUDA=$ROOT/build-gpu/bench/bench_cuda
fi
if [ -z "${KS_SHARED_DATA:-}" ]; then
    for d in "$ROOT/.gpu/data" "$ROOT/../shared/data" "$ROOT/shared/data"; do
        if [ -d "$d" ]; then export KS_SHARED_DATA="$d"; break; fi
    done
fi
log "shared data: ${KS_SHARED_DATA:-(none found: tests that need checkpoints skip)}"
export KS_SOURCE_ROOT="$ROOT"

# ---------------------------------------------------------------- tests
T_OK=0
T_FAIL=0
T_PLAN="?"
T_RC="not run"
T_NOTE=""
if [ $RUN_TESTS -eq 1 ]; then
    if [ ! -x "$TEST_CUDA" ]; then
        T_FAIL=1
        T_NOTE="test_cuda not found at $TEST_CUDA"
        log "test_cuda: NOT FOUND ($TEST_CUDA)"
    else
        TLIM=150
        room=$(( $(left) - (RUN_BENCH == 1 ? 250 : 100) )) # keep room for the rest
        [ $room -lt $TLIM ] && TLIM=$room
        [ $TLIM -lt 30 ] && TLIM=30
        log ""
        log "== test_cuda (KS_REQUIRE_GPU=1, timeout ${TLIM} s) =="
        t0=$SECONDS
        set +e
        KS_REQUIRE_GPU=1 timeout -k 10 "$TLIM" ${LINEBUF[@]+"${LINEBUF[@]}"} "$TEST_CUDA" 2>&1 | tee "$REPORT/test_cuda.log"
        rc=${PIPESTATUS[0]}
        set -e
        T_RC=$rc
        TLOG="$REPORT/test_cuda.log"
        T_OK=$(grep -cE '^ok([[:space:]]|$)' "$TLOG" || true)
        nok=$(grep -cE '^not ok([[:space:]]|$)' "$TLOG" || true)
        todo=$(grep -ciE '^not ok.*#[[:space:]]*todo' "$TLOG" || true)
        T_FAIL=$((nok - todo))
        T_PLAN=$(grep -m1 -oE '^1\.\.[0-9]+' "$TLOG" | cut -c4- || true)
        [ -n "$T_PLAN" ] || T_PLAN="?"
        if [ "$T_PLAN" != "?" ] && [ $((T_OK + nok)) -lt "$T_PLAN" ]; then
            missing=$((T_PLAN - T_OK - nok))
            T_FAIL=$((T_FAIL + missing))
            T_NOTE="$missing planned tests did not report"
        fi
        if grep -q '^Bail out!' "$TLOG"; then T_NOTE="${T_NOTE:+$T_NOTE; }bailed out"; [ $T_FAIL -eq 0 ] && T_FAIL=1; fi
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            T_NOTE="${T_NOTE:+$T_NOTE; }timed out after ${TLIM} s"
            [ $T_FAIL -eq 0 ] && T_FAIL=1
        elif [ "$rc" -ne 0 ] && [ $T_FAIL -eq 0 ]; then
            T_NOTE="${T_NOTE:+$T_NOTE; }exit status $rc"
            T_FAIL=1
        fi
        log "test_cuda: $T_OK ok, $T_FAIL failed (plan 1..$T_PLAN), exit $rc, $((SECONDS - t0)) s${T_NOTE:+ ($T_NOTE)}"
    fi
fi

# ---------------------------------------------------------------- end to end on the GPU
# The koalascope program with --backend cuda: recording checked by h5py against the HF
# transformers oracle (test_dump_h5py.py, KS_TEST_BACKEND=cuda), the CLI test, whose GPU
# branches ask greedy decoding on the GPU for the published stories260K sample and an
# attribution equal to the CPU's, and the fine-tuning CLI test (finetune --backend cuda trains).
KS_BIN=""
for k in "$ROOT/.gpu/bin/koalascope" "$ROOT/build-gpu/cli/koalascope"; do
    if [ -x "$k" ]; then KS_BIN=$k; break; fi
done
E_OK=0
E_FAIL=0
if [ $RUN_TESTS -eq 1 ]; then
    if [ -z "$KS_BIN" ]; then
        E_FAIL=1
        log "end to end: koalascope binary not found"
    else
        for t in "test_dump_h5py:python3 $ROOT/tests/test_dump_h5py.py" "test_cli:bash $ROOT/tests/test_cli.sh" \
                 "test_finetune_cli:python3 $ROOT/tests/test_finetune_cli.py"; do
            name=${t%%:*}
            cmd=${t#*:}
            elim=$(( $(left) - (RUN_BENCH == 1 ? 150 : 10) )) # the benchmark keeps its share
            [ $elim -gt 90 ] && elim=90
            if [ $elim -lt 15 ]; then
                log "$name: skipped (${elim} s of the budget left for it)"
                E_FAIL=$((E_FAIL + 1))
                continue
            fi
            log ""
            log "== $name with --backend cuda (timeout $elim s) =="
            set +e
            # shellcheck disable=SC2086
            CI=true KS_TEST_BACKEND=cuda timeout -k 5 $elim $cmd "$KS_BIN" >"$REPORT/$name.log" 2>&1
            rc=$?
            set -e
            o=$(grep -cE '^ok([[:space:]]|$)' "$REPORT/$name.log" || true)
            f=$(grep -cE '^not ok([[:space:]]|$)' "$REPORT/$name.log" || true)
            [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
            E_OK=$((E_OK + o))
            E_FAIL=$((E_FAIL + f))
            grep -E '^not ok|SKIP' "$REPORT/$name.log" | head -n 12 | tee -a "$REPORT/run.log" || true
            log "$name: $o ok, $f failed, exit $rc"
        done
    fi
    T_OK=$((T_OK + E_OK))
    T_FAIL=$((T_FAIL + E_FAIL))
fi

# ---------------------------------------------------------------- benchmarks
B_RC="not run"
B_NOTE=""
JSON="$REPORT/bench_cuda.json"
if [ $RUN_BENCH -eq 1 ]; then
    if [ ! -x "$BENCH_CUDA" ]; then
        B_RC="missing"
        B_NOTE="bench_cuda not found at $BENCH_CUDA"
        log "bench_cuda: NOT FOUND ($BENCH_CUDA)"
    else
        BLIM=240
        room=$(( $(left) - 5 ))
        [ $room -lt $BLIM ] && BLIM=$room
        if [ $BLIM -lt 30 ]; then
            B_RC="skipped"
            B_NOTE="only ${room} s of the budget left"
            log "bench_cuda: skipped ($B_NOTE)"
        else
            BARGS=(--random-init "$SHAPE" --json "$JSON" --out-dir "$SCRATCH" --budget $((BLIM - 10)))
            [ $QUICK -eq 1 ] && BARGS+=(--quick)
            log ""
            log "== bench_cuda ${BARGS[*]} (timeout ${BLIM} s) =="
            t0=$SECONDS
            set +e
            timeout -k 10 "$BLIM" ${LINEBUF[@]+"${LINEBUF[@]}"} "$BENCH_CUDA" "${BARGS[@]}" 2>&1 | tee "$REPORT/bench_cuda.log"
            rc=${PIPESTATUS[0]}
            set -e
            B_RC=$rc
            case $rc in
                0) B_NOTE="every part ran" ;;
                1) B_NOTE="a part failed (see bench_cuda.log)" ;;
                3) B_NOTE="its time budget ran out: the figures above are partial" ;;
                77) B_NOTE="no CUDA device: skipped" ;;
                124|137) B_NOTE="killed by the timeout: the figures above are partial" ;;
                *) B_NOTE="exit status $rc (crashed?)" ;;
            esac
            log "bench_cuda: exit $rc, $((SECONDS - t0)) s: $B_NOTE"
        fi
    fi
fi

# ---------------------------------------------------------------- report
if [ -z "$GPU_LINE" ] || [ "$GPU_LINE" = "(nvidia-smi not found)" ]; then
    d=$(grep -m1 '^device 0 of' "$REPORT/bench_cuda.log" 2>/dev/null || true)
    [ -n "$d" ] && GPU_LINE="$d"
fi
{
    echo ""
    echo "== report ($(elapsed) s) =="
    echo "gpu: ${GPU_LINE:-?}"
    echo "binaries: ${BUILD_NOTE:-?}"
    if [ $RUN_TESTS -eq 1 ]; then
        echo "tests: $T_OK passed, $T_FAIL failed (test_cuda plan 1..$T_PLAN, exit $T_RC${T_NOTE:+: $T_NOTE}; end to end $E_OK ok, $E_FAIL failed)"
        if [ -f "$REPORT/test_cuda.log" ] && [ "$T_FAIL" -gt 0 ]; then
            grep -E '^not ok' "$REPORT/test_cuda.log" | head -n 20 | sed 's/^/  /' || true
        fi
    else
        echo "tests: not run (--skip-tests)"
    fi
    if [ $RUN_BENCH -eq 1 ]; then
        echo "benchmark (bench_cuda, shape $SHAPE$([ $QUICK -eq 1 ] && echo ', --quick')): exit $B_RC${B_NOTE:+: $B_NOTE}"
        if [ -f "$REPORT/bench_cuda.log" ]; then
            grep -E '^(FIGURE|NOT MEASURED) ' "$REPORT/bench_cuda.log" | sed -e 's/^FIGURE /  /' -e 's/^NOT MEASURED /  not measured: /' || true
        fi
        [ -f "$JSON" ] && echo "JSON: $JSON"
    else
        echo "benchmark: not run (--skip-bench)"
    fi
    echo "logs: $REPORT"
} | tee "$REPORT/report.txt" | tee -a "$REPORT/run.log"

if [ $RUN_TESTS -eq 1 ] && [ "$T_FAIL" -gt 0 ]; then exit 1; fi
if [ $RUN_BENCH -eq 1 ] && [ "$B_RC" != "0" ]; then exit 2; fi
exit 0
