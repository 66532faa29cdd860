#!/usr/bin/env bash
# Runs one fuzz target under libFuzzer with AddressSanitizer, on stable Rust.
#
#   fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
#
# TARGET is one of: ops concurrent reclaim builder. New inputs go to a fresh directory, and at the
# end the ones that add coverage are merged into fuzz/corpus/TARGET/ (commit those you want to
# keep). Crashes land in fuzz/artifacts/TARGET/: minimise with `cargo fuzz tmin`, copy the input
# to fuzz/regressions/TARGET/, fix the bug, and the replay (`.ci/fuzz-replay.sh`) keeps it fixed.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# `cargo fuzz` needs nightly-only flags (-Zsanitizer, sanitizer coverage passes). RUSTC_BOOTSTRAP
# lets the stable toolchain accept them, so no nightly toolchain has to be installed.
export RUSTC_BOOTSTRAP=1
# -a: keep debug assertions (the crate's internal invariants) on in the optimised build.
# -s address: AddressSanitizer (cargo fuzz's default, spelled out).
fuzz_flags=(-s address -a)

corpus=fuzz/corpus/$target
mkdir -p "$corpus"
fresh=$(mktemp -d "${TMPDIR:-/tmp}/epochmap-fuzz-$target.XXXXXX")
trap 'rm -rf "$fresh"' EXIT

cargo fuzz build "${fuzz_flags[@]}" "$target"
# Fresh directory first: libFuzzer writes new inputs to the first corpus directory.
# -detect_leaks=0: epoch-deferred frees make nearly every run's malloc and free counts differ, and
# libFuzzer then runs a full LeakSanitizer scan after each such run, which cost three quarters of
# the throughput. Leaked values are caught by the targets' drop-count ledgers instead; pass
# -detect_leaks=1 as an extra flag to turn the scan back on.
cargo fuzz run "${fuzz_flags[@]}" "$target" "$fresh" "$corpus" -- \
    -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -max_len=4096 \
    -print_final_stats=1 -detect_leaks=0 "$@"
# Keep only the new inputs that add coverage to the committed corpus.
cargo fuzz run "${fuzz_flags[@]}" "$target" "$corpus" "$fresh" -- -merge=1
echo "corpus $corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh --apparent-size "$corpus" | cut -f1)"
