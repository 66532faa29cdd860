#!/usr/bin/env bash
# Feature flags, docs and MSRV: what `.ci/run`'s default-feature steps do not cover.
#
# * clippy and the whole test suite (unit, integration, doc tests) with every feature on
#   (`rayon`, `serde`); the no-feature run is `.ci/run`'s own `cargo test --workspace`
#   (no feature is on by default);
# * the docs build with warnings as errors, with and without features, and the docs.rs build
#   (`--cfg docsrs` on nightly) when a nightly toolchain is installed;
# * the MSRV floor (`rust-version` in Cargo.toml): clippy's `incompatible_msrv` lint (part of the
#   clippy step) rejects std APIs newer than it; a grep rejects language features newer than 1.80
#   that the lint cannot see.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== features: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
start=$(date +%s)

step "clippy, all features"
cargo clippy --all-targets --all-features -- -D warnings

step "tests, all features"
cargo test --all-features

step "docs, warnings are errors (all features, then none)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

step "docs.rs build (nightly, --cfg docsrs)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    RUSTDOCFLAGS="--cfg docsrs -D warnings" cargo +nightly doc --no-deps --all-features \
        --target-dir target/docsrs
else
    echo "no nightly toolchain on this machine: docs.rs build skipped (the stable docs build above ran)"
fi

step "MSRV: no language feature newer than rust-version"
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
# Stabilised after 1.80: #[expect] (1.81), &raw const/mut, precise capturing `use<..>`,
# `unsafe extern`, #[unsafe(..)] attributes (1.82), async closures (1.85).
if [ "$msrv" = "1.80" ]; then
    if grep -rnE '#!?\[expect\(|&raw (const|mut) |\+ use<|unsafe extern|#\[unsafe\(|async (move )?\|' \
        --include='*.rs' src tests examples; then
        echo "the lines above use language features newer than rust-version $msrv" >&2
        exit 1
    fi
    echo "none found"
else
    echo "rust-version is $msrv: update this step's list of newer language features" >&2
    exit 1
fi

step "features done in $(( $(date +%s) - start )) s"
