//! Replays every committed input (`corpus/<target>/` and `regressions/<target>/`) through the same
//! target logic the fuzz binaries run, on stable Rust, without libFuzzer or a sanitizer. Run it in
//! release: `cargo test --manifest-path fuzz/Cargo.toml --release`.

use std::panic::{catch_unwind, AssertUnwindSafe};

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = epochmap_fuzz::committed_inputs(target);
    assert!(!inputs.is_empty(), "no committed inputs for {target}");
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
    eprintln!("{target}: replayed {} inputs", inputs.len());
}

#[test]
fn every_committed_ops_input_passes() {
    replay("ops", epochmap_fuzz::ops::run);
}

#[test]
fn every_committed_concurrent_input_passes() {
    replay("concurrent", epochmap_fuzz::concurrent::run);
}

#[test]
fn every_committed_reclaim_input_passes() {
    replay("reclaim", epochmap_fuzz::reclaim::run);
}

#[test]
fn every_committed_builder_input_passes() {
    replay("builder", epochmap_fuzz::builder::run);
}
