#!/usr/bin/env bash
# Soak: the chaos harness (scripts/chaos.sh, examples/chaos.rs) with no fault, MINUTES
# (default 10) of constant load with tokens created and revoked twice a second. Samples each
# instance's resident memory and open file descriptors and the p50/p99 latency every minute,
# and fails when memory or descriptors grow by 5 % or more from the end of the warm-up (the
# first two minutes) to the end, or p99 more than doubles. Not run in CI.
#
#   bash scripts/soak.sh
#   MINUTES=30 RATE=200 bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=soak exec bash scripts/chaos.sh
