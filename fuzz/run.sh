#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60). Self-contained: installs
# cargo-fuzz when missing, writes seed corpora when missing, exits non-zero on any crash,
# timeout, leak or out-of-memory (the input is left in fuzz/artifacts/<target>/).
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 is set for these commands only (cargo-fuzz
# needs -Zsanitizer). See docs/decisions/0005-serialization.md and 0011-fuzzing-on-stable.md.
#
# Environment:
#   CARGO_TARGET_DIR      build directory (default: <repo>/target/fuzz)
#   FUZZ_SANITIZER        address (default) | none  (none: no ASan, about 2x faster)
#   FUZZ_TARGETS          space-separated subset of targets (default: all)
#   FUZZ_SEEDS=0          do not write seed corpora (fuzz/tools/seeds.rs) into missing corpus dirs
#   FUZZ_JOBS             parallel libFuzzer jobs per target (default: one in-process run;
#                         with jobs, libFuzzer writes fuzz-<n>.log into fuzz/)
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/fuzz}"
SANITIZER="${FUZZ_SANITIZER:-address}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
cd "$HERE"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz/run.sh: a C++ compiler is needed to build libFuzzer (apt-get install build-essential)" >&2
    exit 2
fi

# -O: release with debug assertions (cargo-fuzz's default adds them).
RUSTC_BOOTSTRAP=1 cargo fuzz build -O --sanitizer "$SANITIZER"

# Fuzz targets are fuzz_targets/*.rs; the other bins (seeds, format_example) are tools.
targets="${FUZZ_TARGETS:-$(cd fuzz_targets && ls *.rs | sed 's/\.rs$//')}"
bin_dir="$CARGO_TARGET_DIR/$TRIPLE/release"

if [ "${FUZZ_SEEDS:-1}" != 0 ]; then
    missing=0
    for t in $targets; do [ -d "corpus/$t" ] || missing=1; done
    if [ "$missing" = 1 ]; then
        "$bin_dir/seeds" corpus
    fi
fi

failed=()
printf '%-16s %12s %10s %8s %s\n' target runs exec/s cov status >&2
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/last.log"
    echo "== $t (${SECONDS_PER_TARGET}s)" >&2
    status=ok
    # -rss_limit_mb: the decoders must not need more than 2 GiB for any input.
    # -timeout: one input may take at most 10 s (Argon2 in key_file is capped by the target).
    if ! "$bin_dir/$t" "corpus/$t" \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -timeout=10 ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS} \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        status=FAILED
        failed+=("$t")
        tail -n 40 "$log" >&2
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
    secs=${secs:-$SECONDS_PER_TARGET}
    [ "$secs" -gt 0 ] 2>/dev/null || secs=$SECONDS_PER_TARGET
    printf '%-16s %12s %10s %8s %s\n' "$t" "${runs:-?}" "$(( ${runs:-0} / secs ))" "${cov:-?}" "$status" \
        | tee "artifacts/$t/summary.txt" >&2
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz/run.sh: failures in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/run.sh: all targets ran ${SECONDS_PER_TARGET}s without failure" >&2
