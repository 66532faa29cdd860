//! The `ops` fuzz target: see `epochmap_fuzz::ops`. Under `cargo fuzz` (`--cfg fuzzing`) this is a
//! libFuzzer binary; in a plain build it replays the files or directories given as arguments.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| epochmap_fuzz::ops::run(data));

#[cfg(not(fuzzing))]
fn main() {
    epochmap_fuzz::replay_main(epochmap_fuzz::ops::run);
}
