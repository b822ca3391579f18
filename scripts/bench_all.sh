#!/usr/bin/env bash
# Every figure of BENCHMARKS.md in one command: the four bench targets one after the other,
# then the tables and the chart.
#
#   bash scripts/bench_all.sh                 # the recorded run: about 15 minutes on 2 cores
#   SHORT=1 bash scripts/bench_all.sh         # a quick check of the whole pipeline (noisy)
#
# Run it on a quiet machine (the figures are ratios within this one run). PostgreSQL and
# Redis on 127.0.0.1 as in the README for the stores bench (skipped with a message when
# unreachable). Writes into target/bench-report/ (OUT to change it):
#
#   report.md      machine.txt, the tables of python3 scripts/bench_report.py, and the
#                  memory bench's own tables
#   machine.txt    date, commit, rustc, CPU, and the load average before each bench
#   criterion/     this run's criterion output, alone (CRITERION_HOME), so no stale group
#                  from an earlier run is reported
#   <bench>.log    each bench's output (stores.log also holds cold_miss's p50/p99 lines)
#
# and the chart to docs/bench-overhead.svg (SVG to change it). Environment: BENCH_TIMEOUT
# (seconds one bench may take before it is stopped; default 3600), CARGO (default cargo).
# It stops by itself: a bench that fails or runs out of time is reported, the others go on,
# and the exit status is 1.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
cargo=${CARGO:-cargo}
limit=${BENCH_TIMEOUT:-3600}
out=${OUT:-target/bench-report}
svg=${SVG:-docs/bench-overhead.svg}
short=()
if [[ -n ${SHORT:-} ]]; then
    short=(--warm-up-time 0.5 --measurement-time 1)
fi
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
rm -rf "$out/criterion"
export CRITERION_HOME="$out/criterion"

{
    echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    modified=$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')
    echo "commit:  $(git rev-parse HEAD 2>/dev/null)$modified"
    echo "rustc:   $(rustc -V 2>/dev/null)"
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
    echo "cpu:     $(nproc) × $cpu"
    echo "memory:  $(free -g 2>/dev/null | awk '/^Mem:/ {print $2 " GiB"}')"
    if [[ -n ${SHORT:-} ]]; then
        echo "mode:    short (--warm-up-time 0.5 --measurement-time 1): a check, not figures"
    else
        echo "mode:    full (each bench's own criterion settings)"
    fi
} >"$out/machine.txt"

failed=0
trap 'echo "bench_all: interrupted" >&2; exit 130' INT TERM
run() { # name, then the command
    local name=$1 status
    shift
    echo "before $name: $(uptime)" >>"$out/machine.txt"
    echo "bench_all: $name (log: $out/$name.log)" >&2
    timeout --kill-after=30 "$limit" "$@"
    status=$?
    if [[ $status -ne 0 ]]; then
        failed=1
        if [[ $status -eq 124 || $status -eq 137 ]]; then
            echo "bench_all: $name stopped after ${limit}s" >&2
        else
            echo "bench_all: $name failed with status $status" >&2
        fi
    fi
}

run verify "$cargo" bench --bench verify -- --noplot "${short[@]}" >"$out/verify.log" 2>&1
run stores "$cargo" bench --bench stores -- --noplot "${short[@]}" >"$out/stores.log" 2>&1
if [[ -f benches/policies.rs ]]; then
    run policies "$cargo" bench --bench policies -- --noplot "${short[@]}" >"$out/policies.log" 2>&1
fi
# The memory bench prints its own markdown tables on stdout.
run memory "$cargo" bench --bench memory >"$out/memory.md" 2>"$out/memory.log"
echo "after:    $(uptime)" >>"$out/machine.txt"

{
    echo "# keygate benchmarks"
    echo
    echo '```'
    cat "$out/machine.txt"
    echo '```'
    echo
    python3 scripts/bench_report.py --criterion "$out/criterion" --svg "$svg" \
        --cold-miss-log "$out/stores.log" || failed=1
    if [[ -s $out/memory.md ]]; then
        echo
        echo "## Memory per token (cargo bench --bench memory)"
        cat "$out/memory.md"
    fi
} >"$out/report.md"
echo "bench_all: wrote $out/report.md and $svg" >&2
exit "$failed"
