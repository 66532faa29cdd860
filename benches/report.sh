#!/usr/bin/env bash
# Runs the whole benchmark suite in one go and writes the report, so every ratio in it comes from
# the same run on the same machine. See benches/README.md.
#
#   benches/report.sh           full run (~10 min of benches on 2 cores, + build): writes docs/benchmarks.md + docs/img/
#   benches/report.sh --quick   smoke run (seconds once built): tiny sizes, report under
#                               target/bench-results/quick/ (docs/ untouched); what CI runs
#   benches/report.sh --render  re-render docs/benchmarks.md from the last full run's results
#                               (e.g. after editing benches/report/analysis.md); runs nothing
#
# The "Scaling" section is not run here (benches/scaling.sh, ~12 min on 2 cores): every mode
# re-renders it from the run published in docs/data/scaling/, so regenerating keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=full
render_only=false
if [[ ${1:-} == --quick ]]; then
    mode=quick
elif [[ ${1:-} == --render ]]; then
    render_only=true
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--quick | --render]" >&2
    exit 2
fi

target=${CARGO_TARGET_DIR:-$root/target}
results=$target/bench-results/$mode
if ! $render_only; then
    rm -rf "$results"
fi
mkdir -p "$results"
export EPOCHMAP_BENCH_OUT=$results
export CRITERION_HOME=$results/criterion
if [[ $mode == quick ]]; then
    export EPOCHMAP_BENCH_QUICK=1
    out=$results/benchmarks.md
    img=$results/img
    command="benches/report.sh --quick"
else
    unset EPOCHMAP_BENCH_QUICK
    out=$root/docs/benchmarks.md
    img=$root/docs/img
    command="benches/report.sh"
fi

echo "=== building benches and the report tool ($(date -u +%H:%M:%S))"
cargo bench -p epochmap-benches --no-run --benches
cargo bench -p epochmap-benches --no-run --bench mixes --features mimalloc
CARGO_TARGET_DIR=$target cargo build --release --manifest-path benches/report/Cargo.toml

if $render_only; then
    # Keep the header of the run being re-rendered.
    secs=$(cat "$results/runtime-secs")
    date=$(cat "$results/date")
    commit=$(cat "$results/commit")
else
    start=$(date +%s)
    date=$(date -u '+%Y-%m-%d %H:%M')
    commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if ! git diff --quiet HEAD -- src benches Cargo.toml 2>/dev/null; then
        commit="$commit (+ uncommitted changes)"
    fi
    # memory first: its counting allocator wants a quiet process, and it is the cheapest.
    for bench in memory single_thread mixes clear drain iter; do
        echo "=== $bench ($(date -u +%H:%M:%S))"
        if ! cargo bench -p epochmap-benches --bench "$bench" >"$results/$bench.log" 2>&1; then
            tail -n 40 "$results/$bench.log" >&2
            echo "bench $bench failed; full log: $results/$bench.log" >&2
            exit 1
        fi
    done
    # The mixes again on mimalloc (its groups are named mix-mimalloc/...): see mixes.rs.
    echo "=== mixes on mimalloc ($(date -u +%H:%M:%S))"
    if ! cargo bench -p epochmap-benches --bench mixes --features mimalloc \
        >"$results/mixes-mimalloc.log" 2>&1; then
        tail -n 40 "$results/mixes-mimalloc.log" >&2
        echo "bench mixes (mimalloc) failed; full log: $results/mixes-mimalloc.log" >&2
        exit 1
    fi
    # Memory under churn (issue 18): every (map, writers) case in a child process of its own,
    # RSS sampled while writers replace and remove 512-byte values. Full: 8 s per case, 3 shuffled
    # rounds (the report quotes medians and ranges); quick: one round of 0.2 s per case.
    if [[ $mode == quick ]]; then
        churn_args=(--secs 0.2 --rounds 1)
    else
        churn_args=(--secs 8 --rounds 3)
    fi
    echo "=== churn ($(date -u +%H:%M:%S))"
    if ! cargo bench -p epochmap-benches --bench churn -- "${churn_args[@]}" \
        >"$results/churn.log" 2>&1; then
        tail -n 40 "$results/churn.log" >&2
        echo "bench churn failed; full log: $results/churn.log" >&2
        exit 1
    fi
    secs=$(($(date +%s) - start))
    echo "$secs" >"$results/runtime-secs"
    echo "$date" >"$results/date"
    echo "$commit" >"$results/commit"
fi

rm -rf "$img"
"$target/release/epochmap-bench-report" \
    --results "$results" --out "$out" --img "$img" \
    --analysis "$root/benches/report/analysis.md" \
    --scaling "$root/docs/data/scaling" \
    --scaling-analysis "$root/benches/report/scaling-analysis.md" \
    --mode "$mode" --command "$command" \
    --date "$date" --commit "$commit" \
    --rustc "$(rustc -V)" \
    --runtime "$((secs / 60)) min $((secs % 60)) s (benchmarks only, after the build)"
echo "=== done in ${secs}s: $out"
