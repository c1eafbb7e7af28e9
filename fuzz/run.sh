#!/usr/bin/env bash
# Builds every fuzz target once, then fuzzes each for SECONDS (default 30) on
# stable Rust (`--sanitizer none`), starting from a scratch copy of the
# committed seeds so the repository's corpus never grows.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Exits non-zero if any target crashes, times out or runs out of memory; the
# input that did it is in fuzz/artifacts/<target>/. Prints each target's
# executions and executions per second at the end. Works from any directory,
# needs no terminal (CI=true is fine).
set -euo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]   (SECONDS: a positive integer)" >&2
    exit 2
fi
shift || true

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# The default profile is already optimised (like --release) and keeps debug
# assertions and overflow checks on; `-O` would turn those off, so no flag.
echo "== building ${#targets[@]} targets"
cargo fuzz build --sanitizer none

scratch="$(mktemp -d "${TMPDIR:-/tmp}/redial-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# libFuzzer flags: stop after $seconds, report stats, cap memory, and treat
# one input running for 10 s as a hang (a failure, like a crash).
libfuzzer_flags=(
    "-max_total_time=$seconds"
    -print_final_stats=1
    -rss_limit_mb=2048
    -timeout=10
)

stat() { # stat NAME LOGFILE -> the value of libFuzzer's final `stat::NAME:`
    sed -n "s/^stat::$1:[[:space:]]*//p" "$2" | tail -n 1
}

# One target per core at a time: each target still gets its full $seconds of
# one core, and a 2-core CI machine finishes the smoke in half the time.
jobs_max="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
fuzz_one() { # fuzz_one TARGET: fuzzes it, leaves its log and exit code in $scratch
    local target="$1" corpus="$scratch/corpus/$1" rc=0
    cargo fuzz run --sanitizer none "$target" "$corpus" -- "${libfuzzer_flags[@]}" \
        </dev/null >"$scratch/$target.log" 2>&1 || rc=$?
    echo "$rc" >"$scratch/$target.rc"
}
for target in "${targets[@]}"; do
    corpus="$scratch/corpus/$target"
    mkdir -p "$corpus"
    if [ -d "corpus/$target" ]; then
        find "corpus/$target" -maxdepth 1 -type f -name 'seed-*' -exec cp {} "$corpus/" \;
    fi
    seeds="$(find "$corpus" -type f | wc -l | tr -d ' ')"
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
    echo "== fuzzing $target for ${seconds}s ($seeds seeds)"
    fuzz_one "$target" &
done
wait

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$scratch/corpus/$target"
    log="$scratch/$target.log"
    rc="$(cat "$scratch/$target.rc" 2>/dev/null || echo missing)"
    runs="$(stat number_of_executed_units "$log")"
    per_sec="$(stat average_exec_per_sec "$log")"
    rss="$(stat peak_rss_mb "$log")"
    units="$(find "$corpus" -type f | wc -l | tr -d ' ')"
    if [ "$rc" != 0 ]; then
        failed+=("$target")
        echo "!! $target FAILED (exit $rc)"
        grep -E -A3 "panicked at|^==[0-9]+== ERROR|deadly signal|out-of-memory|Test unit written" "$log" | sed 's/^/   | /' || true
        echo "   last lines of its output:"
        tail -n 40 "$log" | sed 's/^/   | /' || true
        echo "   artifacts: $fuzz_dir/artifacts/$target/"
        summary+=("$(printf '%-16s %12s %10s %8s %8s  %s' "$target" "${runs:--}" "${per_sec:--}" "$units" "${rss:--}" "FAILED")")
    else
        echo "$target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)"
        summary+=("$(printf '%-16s %12s %10s %8s %8s  %s' "$target" "${runs:--}" "${per_sec:--}" "$units" "${rss:--}" "ok")")
    fi
done

echo
echo "== summary (${seconds}s per target, ${jobs_max} at a time, --sanitizer none, $(nproc 2>/dev/null || echo '?') cores)"
printf '%-16s %12s %10s %8s %8s  %s\n' target execs execs/s corpus rss_mb result
printf '%s\n' "${summary[@]}"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (reproduce: cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>)" >&2
    exit 1
fi
