//! Helpers shared by the integration tests. Each test file includes them with `mod common;`.
//!
//! | module | what it gives |
//! |---|---|
//! | [`drops`] | [`Tracker`]/[`Tracked`]: values that count their drops per instance and catch double drops |
//! | [`keys`] | [`PanicKey`]: a key whose `Hash`, `Eq` or `Clone` panics on demand (and counts its own drops) |
//! | [`hashers`] | [`TestHasher`]: default, colliding (one hash for every key), weak (few bits), identity |
//! | [`rng`] | [`Rng`]: a tiny seeded PRNG (SplitMix64), so tests are deterministic without `rand` |
//! | [`config`] | [`with_map`]: runs a test body once per map configuration (shards, reclaim mode, hasher) |
//! | [`maps`] | [`for_each_map!`]: instantiates a file's tests once per map (`EpochMap`, `FlatEpochMap`) |
//! | [`panics`] | [`expect_panic`], [`quiet_expected_panics`], [`completes_within`], [`in_child_process`] (for code that aborts when broken), [`assert_not_impl!`] |
//! | [`check`] | [`assert_matches_model`]: a map agrees with a `std::collections::HashMap` in every way |
//! | [`executor`] | [`block_on`], [`Manual`] (poll by hand, drop to cancel), [`Delay`]: async with std wakers only |
//! | [`alloc`] | [`alloc::Counting`]: a counting global allocator, for a binary that declares it as its own |
//!
//! Not every test file uses every helper, hence the `dead_code` allowance.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod alloc;
pub mod check;
pub mod config;
pub mod drops;
pub mod executor;
pub mod hashers;
pub mod keys;
pub mod maps;
pub mod panics;
pub mod rng;

pub use check::assert_matches_model;
pub use config::{configs, with_map, Config, HasherKind};
pub use drops::{Tracked, Tracker};
pub use executor::{block_on, Delay, Manual};
pub use hashers::TestHasher;
pub use keys::{PanicKey, PanicSwitch};
pub use maps::BuildFromConfig;
pub use panics::{
    completes_within, expect_panic, in_child_process, quiet_expected_panics, EXPECTED_PANIC,
};
pub use rng::Rng;

/// How long tests wait for reclamation before declaring it stuck. Generous: a test binary runs its
/// tests in parallel, and any other test's pinned guard delays the epoch for everyone.
pub const RECLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long each `#[ignore]`d stress test runs: `EPOCHMAP_STRESS_SECS` seconds (default 20).
/// `.ci/stress.sh` sets it so that the whole stress run fits its time budget.
pub fn stress_budget() -> std::time::Duration {
    let secs = std::env::var("EPOCHMAP_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    std::time::Duration::from_secs(secs)
}

/// Drives epoch reclamation (process-wide) until `done()` holds or [`RECLAIM_TIMEOUT`] passes;
/// returns whether `done()` held. For checks after a map is dropped, when its own
/// `wait_for_reclamation` is gone: a scratch map retires something and waits for it, which
/// advances the global epoch and runs queued reclamation work (FIFO, so older garbage first).
pub fn drive_reclamation_until(done: impl Fn() -> bool) -> bool {
    let scratch: epochmap::EpochMap<u64, u64> = epochmap::EpochMap::builder()
        .shards(1)
        .reclaim_mode(epochmap::ReclaimMode::Inline)
        .build();
    let deadline = std::time::Instant::now() + RECLAIM_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        scratch.insert(0, 0);
        scratch.remove(&0);
        scratch.wait_for_reclamation(std::time::Duration::from_millis(100));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    done()
}
