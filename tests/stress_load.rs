//! Stress for single-flight loading: blocking and async loads (some failing, some panicking,
//! some cancelled half-way) racing inserts, removes, `clear` and growth on a small key range.
//!
//! Checked throughout: two loaders of one key never run at the same time (a per-key "loading"
//! flag), every value a caller gets belongs to its key, no caller waits forever (each thread's
//! work is bounded by `completes_within`); at the end every value ever made is dropped exactly
//! once. Against both maps (`for_each_map!`). The `#[ignore]`d `_long` variant runs for half of
//! `EPOCHMAP_STRESS_SECS` per map in release (`.ci/stress.sh`).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    completes_within, rng, stress_budget, Config, Delay, Manual, Rng, TestHasher, Tracked, Tracker,
    EXPECTED_PANIC, RECLAIM_TIMEOUT,
};
use epochmap::ReclaimMode;

fn check(key: u64, value: &Tracked) {
    assert_eq!(value.id() >> 32, key, "a caller got another key's value");
}

for_each_map! {
    struct Shared {
        map: TestMap<u64, Tracked, TestHasher>,
        tracker: Tracker,
        /// Per key: a loader of it is running.
        loading: Vec<AtomicBool>,
        loads: AtomicU64,
        hits: AtomicU64,
        failures: AtomicU64,
    }

    impl Shared {
        /// The loader body: checks no other loader of `key` runs, builds the value for `key`.
        fn load(&self, key: u64, seq: u64, rng: &mut Rng) -> Result<Tracked, ()> {
            let flag = &self.loading[key as usize];
            assert!(
                !flag.swap(true, Ordering::SeqCst),
                "two loaders of key {key} ran at once"
            );
            self.loads.fetch_add(1, Ordering::Relaxed);
            if rng.chance(1, 4) {
                thread::sleep(Duration::from_micros(rng.below(500)));
            }
            let outcome = rng.below(16);
            flag.store(false, Ordering::SeqCst);
            match outcome {
                0 => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    Err(())
                }
                1 => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    panic!("{EXPECTED_PANIC} stress loader panics");
                }
                _ => Ok(self.tracker.value((key << 32) | (seq & 0xffff_ffff))),
            }
        }
    }

    fn run(config: Config, keys: u64, budget: Duration, seed: u64) {
        common::quiet_expected_panics();
        let shared = Arc::new(Shared {
            map: config.build(),
            tracker: Tracker::new(),
            loading: (0..keys).map(|_| AtomicBool::new(false)).collect(),
            loads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let deadline = Instant::now() + budget;
        let root = Rng::new(seed);
        let mut workers = Vec::new();
        // Blocking loaders.
        for t in 0..2 {
            let (shared, mut rng) = (Arc::clone(&shared), root.fork(t));
            workers.push(thread::spawn(move || {
                let mut seq = 0;
                while Instant::now() < deadline {
                    seq += 1;
                    let key = rng.below(keys);
                    let mut loader_rng = rng.fork(seq);
                    let got = catch_unwind(AssertUnwindSafe(|| {
                        shared
                            .map
                            .try_get_or_load(key, || shared.load(key, seq, &mut loader_rng))
                            .map(|r| check(key, &r))
                    }));
                    if let Ok(Ok(())) = got {
                        shared.hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        // Async loaders: polled by hand, some dropped (cancelled) before they finish.
        {
            let (shared, mut rng) = (Arc::clone(&shared), root.fork(10));
            workers.push(thread::spawn(move || {
                let mut seq = 1 << 31;
                while Instant::now() < deadline {
                    seq += 1;
                    let key = rng.below(keys);
                    let mut loader_rng = rng.fork(seq);
                    let sleepy = rng.chance(1, 2);
                    let shared2 = Arc::clone(&shared);
                    let mut future = Manual::new(shared.map.get_or_load_async(key, async move {
                        if sleepy {
                            Delay::new(Duration::from_micros(300)).await;
                        }
                        // An `Err` becomes a load that never finishes: it ends when the future is
                        // dropped (cancelled). A panic propagates out of `poll`.
                        match shared2.load(key, seq, &mut loader_rng) {
                            Ok(v) => v,
                            Err(()) => std::future::pending().await,
                        }
                    }));
                    for _ in 0..rng.below(4) {
                        match catch_unwind(AssertUnwindSafe(|| future.poll())) {
                            Ok(Poll::Ready(v)) => {
                                check(key, &v);
                                break;
                            }
                            Ok(Poll::Pending) => thread::sleep(Duration::from_micros(200)),
                            // Its loader panicked; like a runtime, drop the task (below).
                            Err(_) => break,
                        }
                    }
                    // If not ready, the future is dropped here: cancelled (a load it led is handed
                    // on to its waiters).
                }
            }));
        }
        // Writers: insert, remove, clear; enough keys that shards grow and shrink.
        {
            let (shared, mut rng) = (Arc::clone(&shared), root.fork(20));
            workers.push(thread::spawn(move || {
                let mut seq = 1 << 30;
                while Instant::now() < deadline {
                    seq += 1;
                    let key = rng.below(keys);
                    match rng.below(100) {
                        0 => shared.map.clear(),
                        1 => shared.map.shrink_to_fit(),
                        2..=40 => drop(shared.map.remove(&key)),
                        _ => {
                            let value = shared.tracker.value((key << 32) | (seq & 0xffff_ffff));
                            drop(shared.map.insert(key, value));
                        }
                    }
                    if rng.chance(1, 8) {
                        thread::yield_now();
                    }
                }
            }));
        }
        completes_within(
            budget + Duration::from_secs(60),
            "stress workers",
            move || {
                for w in workers {
                    w.join().expect("a worker failed");
                }
            },
        );
        for entry in shared.map.iter() {
            check(*entry.key(), &entry);
        }
        println!(
            "{MODULE}, {config}: {} loads ({} failed or panicked), {} successful blocking calls",
            shared.loads.load(Ordering::Relaxed),
            shared.failures.load(Ordering::Relaxed),
            shared.hits.load(Ordering::Relaxed)
        );
        assert!(shared.loads.load(Ordering::Relaxed) > 0);
        let shared = Arc::try_unwrap(shared).ok().expect("workers are done");
        shared.map.clear();
        assert!(shared.map.wait_for_reclamation(RECLAIM_TIMEOUT));
        drop(shared.map);
        assert!(common::drive_reclamation_until(
            || shared.tracker.live() == 0
        ));
        shared.tracker.assert_all_dropped_once();
    }

    #[test]
    fn loads_racing_writes_clear_growth_failures_and_cancellation_stay_single_flight() {
        let seed = rng::seed(0x10ad);
        for (shards, mode) in [(1, ReclaimMode::Inline), (4, ReclaimMode::Background)] {
            run(
                Config::random(shards, mode),
                256,
                Duration::from_millis(700),
                seed ^ shards as u64,
            );
        }
    }

    /// Half of `EPOCHMAP_STRESS_SECS` per map (a quarter per configuration), as it runs once per
    /// map, so that `.ci/stress.sh` keeps its total time.
    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn loads_racing_writes_clear_growth_failures_and_cancellation_stay_single_flight_long() {
        let seed = rng::seed(0x10ad_1046);
        let budget = stress_budget() / 4;
        run(Config::random(1, ReclaimMode::Background), 64, budget, seed);
        run(Config::random(8, ReclaimMode::Inline), 2048, budget, seed ^ 8);
    }
}
