#!/usr/bin/env bash
# Builds kith's fuzz targets (fuzz/) and runs each one for a short time: a smoke test that
# fails on any crash, panic, leak or hang, and prints the input that caused it.
#
#   scripts/fuzz-smoke.sh            # every target, FUZZ_SECONDS (default 20) each
#   scripts/fuzz-smoke.sh jid sasl   # only these targets
#
# The targets are built unoptimized (cargo fuzz --dev) unless FUZZ_RELEASE=1: from scratch
# that took 217 CPU-seconds (6m45s on a busy 2-core machine, against 9m41s for the optimized
# build), which is what a smoke run in CI can afford; inputs run slower, but panics, hangs
# and debug assertions are found the same way. Long campaigns use optimized builds
# (fuzz/README.md).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Only a stable toolchain is
# installed here and cargo-fuzz passes nightly flags (-Zsanitizer), so RUSTC_BOOTSTRAP=1
# lets stable accept them. Long campaigns: see fuzz/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-20}"
profile=(--dev)
if [ "${FUZZ_RELEASE:-0}" = 1 ]; then profile=(); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

cargo fuzz build "${profile[@]}"
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

failed=()
for t in "${targets[@]}"; do
    # The working corpus (fuzz/corpus, not committed) starts from the committed seeds and
    # keeps what earlier runs found; new finds are written to the first directory.
    mkdir -p "corpus/$t" "seeds/$t"
    echo "fuzz-smoke: $t for ${seconds}s"
    log="target/fuzz-smoke-$t.log"
    # -timeout: one input taking this long is a hang; -rss_limit_mb: memory blow-up.
    if cargo fuzz run "${profile[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -max_len=8192 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | tr '\n' ' ' || true
        echo
    else
        failed+=("$t")
        tail -n 60 "$log"
        # libFuzzer names the input it saved: "Test unit written to ./artifacts/…".
        input=$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' | tail -n 1)
        echo "fuzz-smoke: $t FAILED; input: ${input}" >&2
        echo "fuzz-smoke: replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${profile[*]} $t ${input}" >&2
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, no crash"
