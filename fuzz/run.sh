#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 60), one after the other,
# starting from the seeds, and prints per target how many inputs it executed and
# whether it crashed. Exits 1 if any target crashed (or timed out, or ran out of
# memory), 2 if the tools are missing. See FUZZING.md.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs a nightly Rust toolchain (libFuzzer's sanitizer instrumentation is
# nightly-only) and cargo-fuzz, which this script installs if it is missing.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
ALL_TARGETS=(sip_decode digest config engine)
if [[ $# -gt 0 ]]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [[ "$SECONDS_PER_TARGET" -eq 0 ]]; then
    echo "usage: fuzz/run.sh [SECONDS] [TARGET...]  (SECONDS: a positive integer)" >&2
    exit 2
fi

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
cd "$ROOT"

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
    cat >&2 <<'EOF'
fuzz/run.sh: no nightly Rust toolchain. cargo-fuzz needs one (libFuzzer and the
sanitizers use nightly-only compiler flags). Install it with:
    rustup toolchain install nightly
EOF
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Per-input limits: a slow input (-timeout, seconds) or a memory blow-up
# (-rss_limit_mb) is reported like a crash.
max_len() {
    case "$1" in
        digest) echo 2048 ;;
        engine) echo 16384 ;;
        *) echo 8192 ;;
    esac
}
seed_dirs() {
    case "$1" in
        sip_decode | engine) echo "$FUZZ_DIR/seeds/sip_decode $ROOT/tests/data/rfc4475" ;;
        *) echo "$FUZZ_DIR/seeds/$1" ;;
    esac
}

echo "== building fuzz targets (cargo +nightly fuzz build)"
cargo +nightly fuzz build

LOG_DIR="$FUZZ_DIR/target/logs"
mkdir -p "$LOG_DIR"
declare -A EXECS RESULT
failed=0
for target in "${TARGETS[@]}"; do
    corpus="$FUZZ_DIR/corpus/$target"
    mkdir -p "$corpus"
    for dir in $(seed_dirs "$target"); do
        for seed in "$dir"/*; do
            # Only files (tests/data/rfc4475 also holds a README), and never over
            # a corpus entry.
            if [[ -f "$seed" && "$(basename "$seed")" != README.md && ! -e "$corpus/$(basename "$seed")" ]]; then
                cp "$seed" "$corpus/"
            fi
        done
    done
    log="$LOG_DIR/$target.log"
    echo "== $target: ${SECONDS_PER_TARGET}s, corpus $corpus, log $log"
    set +e
    cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
        -max_len="$(max_len "$target")" -timeout=20 -rss_limit_mb=2048 \
        >"$log" 2>&1
    status=$?
    set -e
    EXECS[$target]="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
    EXECS[$target]="${EXECS[$target]:-?}"
    if [[ $status -eq 0 ]]; then
        RESULT[$target]="no crash"
    else
        failed=1
        artifact="$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //' || true)"
        RESULT[$target]="CRASHED (exit $status) ${artifact:-see $log}"
        grep -m1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" >&2 || true
    fi
    echo "   $target: ${EXECS[$target]} executions, ${RESULT[$target]}"
done

echo
printf '%-12s %8s %14s  %s\n' target seconds executions result
for target in "${TARGETS[@]}"; do
    printf '%-12s %8s %14s  %s\n' "$target" "$SECONDS_PER_TARGET" "${EXECS[$target]}" "${RESULT[$target]}"
done
exit "$failed"
