#!/usr/bin/env bash
# Builds and runs Kiln's fuzz targets (fuzz/README.md).
#
#   fuzz/run.sh build                       build every target
#   fuzz/run.sh run [-runs N | -max_total_time S] [TARGET…]
#                                           fuzz each target (all by default) from its seeds,
#                                           print a report: target, executions, findings
#   fuzz/run.sh check                       CI: build, then replay every seed and fuzz each
#                                           target for a few seconds
#
# The build is libFuzzer through libfuzzer-sys with the flags `cargo fuzz build -s none` uses
# (SanitizerCoverage: inline 8-bit counters, PC table, compare tracing; `--cfg fuzzing`), on
# the stable toolchain: the targets are safe Rust calling Kiln's readers, where the findings
# are panics, overflows, hangs and runaway allocations, which libFuzzer sees without a
# sanitizer. With an explicit --target the flags skip build scripts and proc macros, and the
# artifacts live apart from the main build's in the shared target dir.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"
work="${KILN_FUZZ_WORK:-$CARGO_TARGET_DIR/fuzz-work}"
targets=(safetensors inspect lora embedding png_metadata prompt caption model_config api_request)

build() {
    RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
        cargo build --release --locked --target "$triple" --bins
}

# The seed corpus of $1 in $work/seeds/$1: the committed seeds (fuzz/seeds/, regressions
# included) and the test fixtures, each prefixed with the selector byte the target reads.
seeds() {
    local t="$1" out="$work/seeds/$1" f
    rm -rf "$out"
    mkdir -p "$out"
    [ -d "seeds/$t" ] && cp seeds/"$t"/* "$out"/ 2>/dev/null || true
    prefixed() { # prefixed BYTE FILE…
        local b="$1" f
        shift
        for f in "$@"; do
            { printf "\\x$b"; cat "$f"; } >"$out/$b-$(basename "$(dirname "$f")")-$(basename "$f")"
        done
    }
    local fx=../tests/fixtures
    case "$t" in
        safetensors) cp "$fx"/adapters/*.safetensors "$out"/ ;;
        inspect)
            prefixed 00 "$fx"/adapters/*.safetensors
            prefixed 02 "$fx"/adapters/*.pt
            prefixed 03 "$fx"/adapters/*.bin ;;
        lora)
            prefixed 00 "$fx"/adapters/*.safetensors
            prefixed 01 "$fx"/adapters/*/adapter_config.json ;;
        embedding)
            prefixed 00 "$fx"/adapters/*.pt
            prefixed 01 "$fx"/adapters/*.bin
            prefixed 02 "$fx"/adapters/ti_*.safetensors ;;
        png_metadata) cp "$fx"/ref/*.png "$out"/ ;;
        model_config) prefixed 01 "$fx"/tiny-a/*/*config.json "$fx"/tiny-b/*/*config.json ;;
        *) ;;
    esac
}

report_header() { printf '%-14s %12s %10s %9s  %s\n' target executions exec/s findings result; }

# Runs target $1 with libFuzzer options $2…; prints its report line.
fuzz_one() {
    local t="$1" log
    shift
    seeds "$t"
    # Findings are the last run's: a fixed one lives on as a seed (README.md).
    rm -rf "$work/findings/$t"
    mkdir -p "$work/corpus/$t" "$work/findings/$t"
    log="$work/$t.log"
    set +e
    "$bin_dir/$t" "$work/corpus/$t" "$work/seeds/$t" -artifact_prefix="$work/findings/$t/" \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 "$@" >"$log" 2>&1
    local rc=$?
    set -e
    local runs rate found
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    found="$(find "$work/findings/$t" -type f | wc -l)"
    printf '%-14s %12s %10s %9s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "$found" \
        "$([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc, $log)")"
    [ "$rc" = 0 ]
}

cmd="${1:-}"
shift || true
case "$cmd" in
    build) build ;;
    run)
        opts=()
        while [ $# -gt 0 ] && [[ "$1" == -* ]]; do opts+=("$1"); shift; done
        [ ${#opts[@]} -gt 0 ] || opts=(-runs=1000000)
        chosen=("$@")
        [ ${#chosen[@]} -gt 0 ] || chosen=("${targets[@]}")
        build
        report_header
        failed=0
        for t in "${chosen[@]}"; do fuzz_one "$t" "${opts[@]}" || failed=1; done
        exit "$failed"
        ;;
    check)
        build
        report_header
        failed=0
        for t in "${targets[@]}"; do
            # A fresh corpus each time: the seeds replay, then a few seconds of fuzzing.
            rm -rf "$work/corpus/$t"
            fuzz_one "$t" -max_total_time="${KILN_FUZZ_SECONDS:-5}" || failed=1
        done
        exit "$failed"
        ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
esac
