#!/usr/bin/env bash
# Long stress and differential runs: the `#[ignore]`d tests of tests/stress.rs, tests/stress_load.rs,
# tests/stress_scan.rs, tests/differential.rs, tests/cache.rs, tests/memory_churn.rs and
# tests/features_rayon.rs (built with `--features rayon`), in release, one at a time (the machine may
# have only 2 cores), each for EPOCHMAP_STRESS_SECS seconds (default 20; a test that runs against
# both maps gives each map half of that, and the churn test, which runs both reclaim modes, takes
# twice that in all): 15 long tests' worth, about 6 minutes of running, plus the release build.
# The run (not the build) is killed after EPOCHMAP_STRESS_BUDGET_SECS (default 600) seconds: 16 x 20 s
# plus room for a loaded machine.
#
# Run from the repository root: `.ci/stress.sh`. Replay a failure with `EPOCHMAP_TEST_SEED=<seed>`.
set -euo pipefail
cd "$(dirname "$0")/.."

export EPOCHMAP_STRESS_SECS="${EPOCHMAP_STRESS_SECS:-20}"
budget_secs="${EPOCHMAP_STRESS_BUDGET_SECS:-600}"
# The rayon feature adds the `par_retain` stress test of tests/features_rayon.rs.
tests=(--features rayon --test stress --test stress_load --test stress_scan --test differential --test cache --test features_rayon --test memory_churn)

start=$(date +%s)
cargo test --release "${tests[@]}" --no-run
built=$(date +%s)
timeout --signal=INT --kill-after=30 "$budget_secs" \
    cargo test --release --no-fail-fast "${tests[@]}" -- --ignored --test-threads=1
echo "stress: build $((built - start)) s, run $(($(date +%s) - built)) s (EPOCHMAP_STRESS_SECS=$EPOCHMAP_STRESS_SECS)"

# FlatEpochMap's soundness tests (tests/flat.rs: shared Arc<Mutex<Vec<u8>>> values pushed to across
# growth, Refs across growth/replace/remove/clear, torn-value and retired-slot runs) under
# AddressSanitizer, which turns a use-after-free or double free of a copied value into a failure
# (issue 20). `RUSTC_BOOTSTRAP=1` enables `-Zsanitizer` on the stable toolchain; the explicit
# target keeps the sanitizer flags off build scripts and proc macros.
asan_start=$(date +%s)
host=$(rustc -vV | sed -n 's/^host: //p')
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" \
    timeout --signal=INT --kill-after=30 600 \
    cargo test --release --target "$host" --target-dir target/asan --test flat -- --test-threads=1
echo "stress: flat soundness under ASAN $(($(date +%s) - asan_start)) s"
