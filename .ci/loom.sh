#!/usr/bin/env bash
# Loom model checks: every model in loom-tests/ under a fixed preemption bound, in release, in a
# target dir of its own (the loom cfgs change every crate's build, so sharing target/ would throw
# away the normal build). See docs/testing.md, "Loom models". On the shared 2-core machine: 45-65 s
# with the build warm, 82-157 s from a cold target dir depending on load; 240 s (39 s build) with
# the scan and example-cache models (33 in all), at load average 4.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg epochmap_loom --cfg crossbeam_loom"
# 3 is the smallest bound at which every ordering experiment in docs/testing.md is caught.
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"

start=$(date +%s)
# Exactly one loom in the graph (ours and crossbeam's): `cargo tree -i` fails if there are two.
cargo tree -i loom -e normal --workspace > /dev/null
cargo build --release --tests -p loom-tests --target-dir target/loom
built=$(date +%s)
# --nocapture shows how many executions loom explored per model.
timeout 900 cargo test --release -p loom-tests --target-dir target/loom -- --nocapture --test-threads 2
# Models of the crate's internals (they need `pub(crate)` items: src/stats.rs, `loom_models`).
timeout 300 cargo test --release -p epochmap --lib --target-dir target/loom loom_models -- --nocapture
end=$(date +%s)
echo "loom: build $((built - start))s, models $((end - built))s (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
