#!/usr/bin/env bash
# Long stress and differential runs: the `#[ignore]`d tests of tests/stress.rs and
# tests/differential.rs, in release, one at a time (the machine may have only 2 cores), each for
# EPOCHMAP_STRESS_SECS seconds (default here: 20), under an overall time limit.
#
# Run from the repository root: `.ci/stress.sh`. Replay a failure with `EPOCHMAP_TEST_SEED=<seed>`.
set -euo pipefail
cd "$(dirname "$0")/.."

export EPOCHMAP_STRESS_SECS="${EPOCHMAP_STRESS_SECS:-20}"
budget_secs="${EPOCHMAP_STRESS_BUDGET_SECS:-600}" # includes the release build

start=$(date +%s)
timeout --signal=INT --kill-after=30 "$budget_secs" \
    cargo test --release --no-fail-fast --test stress --test differential -- --ignored --test-threads=1
echo "stress: finished in $(($(date +%s) - start)) s (EPOCHMAP_STRESS_SECS=$EPOCHMAP_STRESS_SECS)"
