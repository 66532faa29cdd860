#!/usr/bin/env bash
# CI step: replay every committed fuzz input (fuzz/corpus/*/ and fuzz/regressions/*/) through the
# fuzz targets' own logic, on stable Rust, without cargo-fuzz, libFuzzer or a sanitizer. Any input
# that ever crashed a target lives in fuzz/regressions/, so this keeps those bugs fixed.
# Also keeps the fuzz crate (outside the workspace) formatted and clippy-clean.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
cargo test --manifest-path fuzz/Cargo.toml --release --locked
