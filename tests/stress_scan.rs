//! Stress for `Pinned::scan` and `Pinned::sample`: scanning and sampling threads racing writers
//! that churn keys, grow (`reserve`, inserts), shrink (`shrink_to_fit`, `retain`) and `clear`.
//!
//! Checked throughout: every value returned belongs to its key; every stable key (never removed
//! except by `clear`, which puts them back) is returned at least once by every full scan that no
//! `clear` overlapped; samples are distinct and belong to their keys. Against both maps
//! (`for_each_map!`). The `#[ignore]`d `_long` variant runs for half of `EPOCHMAP_STRESS_SECS` per
//! map in release (`.ci/stress.sh`).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{rng, stress_budget, Config, HasherKind, Rng, TestHasher};
use epochmap::{ReclaimMode, ScanCursor};

fn value_of(k: u64) -> u64 {
    k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabcd
}

fn config(shards: usize, mode: ReclaimMode, hasher: HasherKind) -> Config {
    Config {
        shards,
        mode,
        hasher,
    }
}

for_each_map! {
    struct Shared {
        map: TestMap<u64, u64, TestHasher>,
        /// Keys `0..stable` are never removed except by `clear`, which re-inserts them.
        stable: u64,
        /// Keys `stable..stable + volatile` come and go.
        volatile: u64,
        /// Odd while a `clear` and the re-insertion of the stable keys are in progress (a seqlock).
        clears: AtomicU64,
        stop: AtomicBool,
        full_scans_checked: AtomicU64,
        samples: AtomicU64,
    }

    impl Shared {
        fn writer(&self, mut rng: Rng, clears_too: bool) {
            let keys = self.stable + self.volatile;
            while !self.stop.load(Ordering::Relaxed) {
                let k = self.stable + rng.below(self.volatile);
                match rng.below(1000) {
                    0..=489 => {
                        self.map.insert(k, value_of(k));
                    }
                    490..=979 => {
                        self.map.remove(&k);
                    }
                    980..=984 => self.map.shrink_to_fit(),
                    985..=989 => self.map.reserve(rng.below(2 * keys) as usize),
                    990..=994 => {
                        let cut = rng.below(self.volatile);
                        let stable = self.stable;
                        self.map.retain(|&k, _| k < stable || (k - stable) < cut);
                    }
                    _ if clears_too && rng.chance(1, 4) => {
                        self.clears.fetch_add(1, Ordering::SeqCst);
                        self.map.clear();
                        for s in 0..self.stable {
                            self.map.insert(s, value_of(s));
                        }
                        self.clears.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        }

        fn scanner(&self, mut rng: Rng) {
            while !self.stop.load(Ordering::Relaxed) {
                let before = self.clears.load(Ordering::SeqCst);
                let budget = 1 + rng.below(64) as usize;
                let mut seen = HashSet::new();
                let mut cursor = ScanCursor::default();
                let mut calls = 0u64;
                loop {
                    calls += 1;
                    assert!(calls < 100_000_000, "a scan did not end");
                    let pinned = self.map.pin();
                    let (found, next) = pinned.scan(cursor, budget);
                    for (k, v) in found {
                        assert_eq!(
                            *v,
                            value_of(*k),
                            "key {k} returned with another key's value"
                        );
                        seen.insert(*k);
                    }
                    if rng.chance(1, 8) {
                        let n = rng.below(24) as usize;
                        let picked = pinned.sample(n, rng.next_u64());
                        assert!(picked.len() <= n);
                        let distinct: HashSet<*const u64> =
                            picked.iter().map(|(_, v)| *v as *const u64).collect();
                        assert_eq!(
                            distinct.len(),
                            picked.len(),
                            "a sample held one entry twice"
                        );
                        for (k, v) in picked {
                            assert_eq!(*v, value_of(*k));
                        }
                        self.samples.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(pinned);
                    match next {
                        Some(next) => cursor = next,
                        None => break,
                    }
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                // Orders the scan's reads before the second look at the seqlock.
                fence(Ordering::SeqCst);
                let after = self.clears.load(Ordering::SeqCst);
                if before % 2 == 0 && before == after {
                    for s in 0..self.stable {
                        assert!(
                            seen.contains(&s),
                            "stable key {s} missed by a full scan (budget {budget})"
                        );
                    }
                    self.full_scans_checked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn run(config: Config, stable: u64, volatile: u64, budget: Duration, seed: u64) {
        run_on(
            &config.to_string(),
            config.build(),
            stable,
            volatile,
            budget,
            seed,
        );
    }

    /// Weak hashing (64 distinct low bits per shard): long, merging overflow chains for every visit
    /// to walk.
    fn run_weak(shards: usize, stable: u64, volatile: u64, budget: Duration, seed: u64) {
        let map = TestMap::builder()
            .shards(shards)
            .hasher(TestHasher::weak(0xffff_0000_0000_003f))
            .build();
        run_on(
            &format!("weak hasher, {shards} shards"),
            map,
            stable,
            volatile,
            budget,
            seed,
        );
    }

    fn run_on(
        config: &str,
        map: TestMap<u64, u64, TestHasher>,
        stable: u64,
        volatile: u64,
        budget: Duration,
        seed: u64,
    ) {
        let shared = Arc::new(Shared {
            map,
            stable,
            volatile,
            clears: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            full_scans_checked: AtomicU64::new(0),
            samples: AtomicU64::new(0),
        });
        for k in 0..stable + volatile / 2 {
            shared.map.insert(k, value_of(k));
        }
        let root = Rng::new(seed);
        let threads: Vec<_> = (0..4u64)
            .map(|i| {
                let (shared, rng) = (Arc::clone(&shared), root.fork(i));
                thread::spawn(move || match i {
                    0 => shared.writer(rng, true),
                    1 => shared.writer(rng, false),
                    _ => shared.scanner(rng),
                })
            })
            .collect();
        let start = Instant::now();
        while start.elapsed() < budget && !threads.iter().any(|t| t.is_finished()) {
            thread::sleep(Duration::from_millis(10));
        }
        shared.stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("a stress thread failed");
        }
        let checked = shared.full_scans_checked.load(Ordering::Relaxed);
        println!(
            "{MODULE}, {config}: {checked} full scans checked, {} samples, {} clears",
            shared.samples.load(Ordering::Relaxed),
            shared.clears.load(Ordering::Relaxed) / 2
        );
        assert!(checked > 0, "{config}: no full scan was checked");
    }

    #[test]
    fn scans_racing_growth_shrink_and_clear_return_every_stable_key() {
        let seed = rng::seed(0x5ca4);
        for (shards, mode) in [(1, ReclaimMode::Inline), (8, ReclaimMode::Background)] {
            run(
                config(shards, mode, HasherKind::Random),
                200,
                2000,
                Duration::from_millis(700),
                seed ^ shards as u64,
            );
        }
        run_weak(2, 100, 400, Duration::from_millis(500), seed ^ 0x3f);
    }

    /// Half of `EPOCHMAP_STRESS_SECS` per map, as it runs once per map, so that `.ci/stress.sh`
    /// keeps its total time.
    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn scans_racing_growth_shrink_and_clear_return_every_stable_key_long() {
        let seed = rng::seed(0x5ca4_1046);
        let budget = stress_budget() / 5;
        run(
            config(1, ReclaimMode::Background, HasherKind::Random),
            500,
            5000,
            budget,
            seed,
        );
        run(
            config(16, ReclaimMode::Inline, HasherKind::Random),
            2000,
            50_000,
            budget,
            seed ^ 16,
        );
        run_weak(4, 300, 1500, budget / 2, seed ^ 0x3f);
    }
}
