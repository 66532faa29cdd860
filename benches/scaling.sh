#!/usr/bin/env bash
# Throughput vs threads for epochmap and every peer, in one command (issue 19): builds and runs
# the scaling bench (benches/peers/scaling.rs: the mixes at 1, 2, 4, ... threads, up to the cores
# and past them), then plots it with the report tool. See benches/README.md.
#
#   benches/scaling.sh                 full run (every map, the four mixes, uniform keys, 1 s per
#                                      case, 3 interleaved rounds): CSV + SVGs + scaling.md in
#                                      target/bench-results/scaling/
#   benches/scaling.sh --docs          the same, then publishes it: docs/data/scaling/ (the CSVs),
#                                      docs/img/scaling-*.svg and the "Scaling" section of
#                                      docs/benchmarks.md (benches/report.sh keeps that section)
#   benches/scaling.sh --quick         smoke run (seconds once built), what CI runs; its numbers
#                                      mean nothing: target/bench-results/scaling-quick/
#   benches/scaling.sh --render [--docs]
#                                      runs nothing: re-renders the last full run (and publishes it)
#   benches/scaling.sh [--docs] -- --threads 1,2,4,8,16,32,64 --secs 2 --maps epochmap,dashmap
#                                      options after `--` go to the bench (see scaling.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    echo "usage: $0 [--quick | --docs | --render [--docs]] [-- bench options]" >&2
}

mode=full
docs=false
render_only=false
bench_args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) mode=quick ;;
        --docs) docs=true ;;
        --render) render_only=true ;;
        --)
            shift
            bench_args=("$@")
            break
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage
            exit 2
            ;;
    esac
    shift
done
if [[ $mode == quick ]] && ($docs || $render_only); then
    echo "--quick neither publishes nor re-renders (its numbers mean nothing)" >&2
    exit 2
fi

target=${CARGO_TARGET_DIR:-$root/target}
export CARGO_TARGET_DIR=$target
if [[ $mode == quick ]]; then
    results=$target/bench-results/scaling-quick
    export EPOCHMAP_BENCH_QUICK=1
else
    results=$target/bench-results/scaling
    unset EPOCHMAP_BENCH_QUICK
fi
report=$target/release/epochmap-bench-report

echo "=== building the scaling bench and the report tool ($(date -u +%H:%M:%S))"
if ! $render_only; then
    cargo bench -p epochmap-benches --no-run --bench scaling
fi
cargo build --release --manifest-path benches/report/Cargo.toml

if $render_only; then
    if [[ ! -f $results/scaling-summary.csv ]]; then
        echo "no run to re-render in $results; run $0 first" >&2
        exit 1
    fi
else
    rm -rf "$results"
    mkdir -p "$results"
    commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if ! git diff --quiet HEAD -- src benches Cargo.toml 2>/dev/null; then
        commit="$commit (+ uncommitted changes)"
    fi
    echo "=== scaling ($(date -u +%H:%M:%S)); log: $results/scaling.log"
    start=$(date +%s)
    if ! cargo bench -p epochmap-benches --bench scaling -- --out "$results" "${bench_args[@]}" \
        2>&1 | tee "$results/scaling.log"; then
        echo "the scaling bench failed; log: $results/scaling.log" >&2
        exit 1
    fi
    secs=$(($(date +%s) - start))
    # The rest of the run's header, for the report (the bench wrote the machine and the options).
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M')"
        echo "commit=$commit"
        echo "rustc=$(rustc -V)"
        echo "command=benches/scaling.sh${bench_args[*]:+ -- ${bench_args[*]}}"
        echo "runtime_secs=$secs"
    } >>"$results/scaling-run.txt"
fi

rm -rf "$results/img"
"$report" scaling --data "$results" --out "$results/scaling.md" --img "$results/img" \
    --analysis "$root/benches/report/scaling-analysis.md"
echo "=== results: $results (scaling.csv, scaling-summary.csv, scaling.md, img/scaling-*.svg)"

if $docs; then
    data=$root/docs/data/scaling
    rm -rf "$data"
    mkdir -p "$data" "$root/docs/img"
    cp "$results"/scaling.csv "$results"/scaling-summary.csv "$results"/scaling-run.txt "$data/"
    rm -f "$root"/docs/img/scaling-*.svg
    "$report" scaling --data "$data" --splice "$root/docs/benchmarks.md" --img "$root/docs/img" \
        --analysis "$root/benches/report/scaling-analysis.md"
    echo "=== published: docs/data/scaling/, docs/img/scaling-*.svg, docs/benchmarks.md (section Scaling)"
fi
