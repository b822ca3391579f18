#!/usr/bin/env bash
# Repeat the benchmarks behind keygate's performance goals N times and print one row of
# ratios per run (keygate ÷ floor for a valid token at 1 k and 1 M tokens, the spread of
# keygate's four outcomes, the all-policies overhead, the 2-thread ÷ 1-thread ratios), with
# how many runs met each goal.
#
#   bash scripts/bench_repeat.sh 5
#
# Each run saves its figures as a criterion baseline named <tag>-run<i> (tag: the start time),
# so earlier runs' baselines never mix in; the table is printed again at any time with
#   python3 scripts/bench_report.py --ratios --runs '<tag>-run*'
#
# Per run: verify's floor_1000/, floor_1000000/ and layer_1000/{no_auth_baseline,
# valid_all_policies}; stores' verify_threads/ (needs PostgreSQL or SQLite for the cached
# case); policies/{no_auth,all} when benches/policies.rs exists. Short times by default
# (some 30 benchmarks of 4 s each, plus issuing 1 M tokens: a few minutes a run); the
# recorded figures come from a full run (scripts/bench_all.sh) instead.
#
# Environment: WARMUP, MEASURE (criterion's --warm-up-time and --measurement-time, seconds;
# default 1 and 3), BENCH_TIMEOUT (seconds one cargo command may take before it is stopped;
# default 1800), CARGO (default cargo), CRITERION_HOME or CARGO_TARGET_DIR (where criterion
# writes; default target/criterion). It stops by itself: every cargo command has a time
# limit, and a failed or stopped one is reported and skipped (the table then shows – where
# its figures are missing; the exit status is 1).
set -uo pipefail

usage() {
    echo "usage: $0 N   (N ≥ 1 runs; see the comment at the top of this script)" >&2
    exit 2
}
[[ $# -eq 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
runs=$1
cargo=${CARGO:-cargo}
warmup=${WARMUP:-1}
measure=${MEASURE:-3}
limit=${BENCH_TIMEOUT:-1800}
cd "$(dirname "$0")/.." || exit 1
criterion=${CRITERION_HOME:-${CARGO_TARGET_DIR:-target}/criterion}
tag="rep$(date -u +%Y%m%dT%H%M%S)"

# bench target, criterion filter (a regex over group/function[/value])
jobs=(
    "verify|^(floor_1000/|floor_1000000/|layer_1000/(no_auth_baseline|valid_all_policies)$)"
    "stores|^verify_threads/"
)
if [[ -f benches/policies.rs ]]; then
    jobs+=("policies|^policies/(no_auth|all)$")
fi

failed=0
trap 'echo "bench_repeat: interrupted" >&2; exit 130' INT TERM
for ((i = 1; i <= runs; i++)); do
    name="$tag-run$i"
    for job in "${jobs[@]}"; do
        bench=${job%%|*}
        filter=${job#*|}
        echo "bench_repeat: run $i of $runs: $bench '$filter' (baseline $name)" >&2
        timeout --kill-after=30 "$limit" "$cargo" bench --bench "$bench" -- "$filter" \
            --warm-up-time "$warmup" --measurement-time "$measure" --noplot \
            --save-baseline "$name" >&2
        status=$?
        if [[ $status -ne 0 ]]; then
            failed=1
            if [[ $status -eq 124 || $status -eq 137 ]]; then
                echo "bench_repeat: $bench stopped after ${limit}s (run $i)" >&2
            else
                echo "bench_repeat: $bench failed with status $status (run $i)" >&2
            fi
        fi
    done
done

echo "bench_repeat: $runs runs saved as criterion baselines $tag-run1..$runs" >&2
python3 scripts/bench_report.py --criterion "$criterion" --ratios --runs "$tag-run*" || failed=1
exit "$failed"
