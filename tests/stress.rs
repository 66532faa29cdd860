//! Multi-threaded stress tests with deterministic seeds, bounded in time.
//!
//! The default variants run in a few seconds in debug builds; the `#[ignore]`d `_long` variants
//! run for `EPOCHMAP_STRESS_SECS` seconds each in release, from `.ci/stress.sh`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{rng, Config, HasherKind, Rng, TestHasher, Tracked, Tracker, RECLAIM_TIMEOUT};
use epochmap::{EpochMap, ReclaimMode};

const THREADS: u64 = 4;

/// How long each `#[ignore]`d stress test runs for one map: half of `EPOCHMAP_STRESS_SECS`, as
/// every one runs once per map, so that `.ci/stress.sh` keeps its total time.
fn stress_share() -> Duration {
    common::stress_budget() / 2
}

for_each_map! {
    /// A value that says who wrote it: `key` in the high 32 bits, writer in bits 24..32, sequence
    /// number in the low 24 bits. A reader can check it belongs to the key it looked up and was
    /// written by an existing writer.
    fn encode(key: u64, writer: u64, seq: u64) -> u64 {
        (key << 32) | (writer << 24) | (seq & 0xff_ffff)
    }

    /// Writers overwrite and remove overlapping keys; readers check that every value they see was
    /// written for that key by some writer. Runs until `ops` operations per writer or `budget`.
    fn writers_and_readers(config: Config, keys: u64, ops: u64, budget: Duration, seed: u64) {
        let map: Arc<TestMap<u64, u64, TestHasher>> = Arc::new(config.build());
        let deadline = Instant::now() + budget;
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let root = Rng::new(seed);
        let writers: Vec<_> = (0..THREADS / 2)
            .map(|w| {
                let (map, mut rng) = (Arc::clone(&map), root.fork(w));
                thread::spawn(move || {
                    for seq in 0..ops {
                        if seq % 256 == 0 && Instant::now() > deadline {
                            break;
                        }
                        let key = rng.below(keys);
                        match rng.below(10) {
                            0 => drop(map.remove(&key)),
                            1 => drop(map.update(&key, |v| encode(key, w, (v & 0xff_ffff) + 1))),
                            2 => drop(map.get_or_insert_with(key, || encode(key, w, seq))),
                            _ => drop(map.insert(key, encode(key, w, seq))),
                        }
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..THREADS / 2)
            .map(|r| {
                let (map, done, reads) = (Arc::clone(&map), Arc::clone(&done), Arc::clone(&reads));
                let mut rng = root.fork(100 + r);
                thread::spawn(move || {
                    let mut n = 0;
                    while !done.load(Ordering::Relaxed) {
                        let key = rng.below(keys);
                        let check = |k: u64, v: u64| {
                            assert_eq!(
                                v >> 32,
                                k,
                                "value {v:#x} read for key {k} was written for another key"
                            );
                            assert!((v >> 24) & 0xff < THREADS / 2, "value {v:#x} has no writer");
                        };
                        match n % 3 {
                            0 => {
                                if let Some(r) = map.get(&key) {
                                    assert_eq!(*r.key(), key);
                                    check(key, *r);
                                }
                            }
                            1 => {
                                let pinned = map.pin();
                                for k in key..key + 8 {
                                    if let Some(v) = pinned.get(&k) {
                                        check(k, *v);
                                    }
                                }
                            }
                            _ => {
                                if n % 300 == 2 {
                                    for r in map.iter().take(64) {
                                        check(*r.key(), *r);
                                    }
                                } else if let Some(v) = map.get_cloned(&key) {
                                    check(key, v);
                                }
                            }
                        }
                        n += 1;
                    }
                    reads.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert!(reads.load(Ordering::Relaxed) > 0);
        for k in 0..keys {
            if let Some(v) = map.get_cloned(&k) {
                assert_eq!(v >> 32, k);
            }
        }
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
    }

    #[test]
    fn readers_only_see_values_some_writer_wrote_for_that_key() {
        let seed = rng::seed(0x57_0001);
        for (shards, mode) in [
            (1, ReclaimMode::Inline),
            (4, ReclaimMode::Background),
            (64, ReclaimMode::Inline),
        ] {
            writers_and_readers(
                Config::random(shards, mode),
                512,
                60_000,
                Duration::from_secs(3),
                seed,
            );
        }
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn readers_only_see_values_some_writer_wrote_for_that_key_long() {
        let budget = stress_share() / 3;
        let seed = rng::seed(0x57_1001);
        for (shards, mode) in [
            (1, ReclaimMode::Inline),
            (8, ReclaimMode::Background),
            (64, ReclaimMode::Background),
        ] {
            writers_and_readers(Config::random(shards, mode), 100_000, u64::MAX, budget, seed);
        }
    }

    /// Readers repeatedly look up keys inserted before any growth began while writers insert enough
    /// new keys to grow every shard many times (and remove some of the new ones, shrink and reserve):
    /// no stable key may ever be missing or carry a wrong value.
    fn no_key_lost_across_growth(config: Config, stable: u64, fresh: u64, budget: Duration) {
        let map: Arc<TestMap<u64, u64, TestHasher>> = Arc::new(config.build());
        for k in 0..stable {
            map.insert(k, k * 7);
        }
        let buckets_before = map.memory_stats().buckets;
        let done = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + budget;
        let checks = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let map = Arc::clone(&map);
                thread::spawn(move || {
                    let mut k = stable + w;
                    while k < stable + fresh {
                        map.insert(k, k * 7);
                        if k % 5 == 0 && k >= stable + 10 {
                            map.remove(&(k - 10));
                        }
                        // Writer 0 also rebuilds tables on demand: shrinking and reserving move every
                        // entry to a new table, like growth, while the readers look.
                        if w == 0 && k % 4096 == 0 {
                            map.shrink_to_fit();
                        } else if w == 0 && k % 4096 == 2048 {
                            map.reserve(1024);
                        }
                        k += 2;
                        if k % 1024 == 0 && Instant::now() > deadline {
                            break;
                        }
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let (map, done, checks) = (Arc::clone(&map), Arc::clone(&done), Arc::clone(&checks));
                thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !done.load(Ordering::Relaxed) || rounds == 0 {
                        let pinned = map.pin();
                        for k in (r..stable).step_by(2) {
                            assert_eq!(
                                pinned.get(&k),
                                Some(&(k * 7)),
                                "stable key {k} lost during growth"
                            );
                        }
                        drop(pinned);
                        for k in ((1 - r)..stable).step_by(97) {
                            assert_eq!(
                                map.get_cloned(&k),
                                Some(k * 7),
                                "stable key {k} lost during growth"
                            );
                        }
                        rounds += 1;
                    }
                    checks.fetch_add(rounds, Ordering::Relaxed);
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let stats = map.memory_stats();
        assert!(
            stats.buckets >= buckets_before * 4,
            "the tables should have grown several times ({} -> {} buckets)",
            buckets_before,
            stats.buckets
        );
        assert!(stats.tables_retired >= config.shards as u64 * 2);
        for k in 0..stable {
            assert_eq!(map.get_cloned(&k), Some(k * 7));
        }
        assert!(checks.load(Ordering::Relaxed) >= 2);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
    }

    #[test]
    fn no_key_present_before_growth_is_ever_missed_during_growth() {
        for (shards, mode) in [(1, ReclaimMode::Inline), (4, ReclaimMode::Background)] {
            no_key_lost_across_growth(Config::random(shards, mode), 2_000, 60_000, Duration::from_secs(4));
        }
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn no_key_present_before_growth_is_ever_missed_during_growth_long() {
        let budget = stress_share() / 2;
        for (shards, mode) in [(1, ReclaimMode::Background), (16, ReclaimMode::Inline)] {
            no_key_lost_across_growth(Config::random(shards, mode), 50_000, 5_000_000, budget);
        }
    }

    /// Threads race `get_or_insert_with` on the same keys, released together by a barrier each round:
    /// per key the closure must run exactly once, and every caller must get the winner's value.
    fn get_or_insert_with_contention(config: Config, rounds: u64, keys_per_round: u64) {
        let map: Arc<TestMap<u64, (u64, u64), TestHasher>> = Arc::new(config.build());
        let runs: Arc<Vec<AtomicUsize>> = Arc::new(
            (0..rounds * keys_per_round)
                .map(|_| AtomicUsize::new(0))
                .collect(),
        );
        let barrier = Arc::new(Barrier::new(THREADS as usize));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (map, runs, barrier) = (Arc::clone(&map), Arc::clone(&runs), Arc::clone(&barrier));
                thread::spawn(move || {
                    let mut seen = Vec::with_capacity((rounds * keys_per_round) as usize);
                    for round in 0..rounds {
                        barrier.wait();
                        for i in 0..keys_per_round {
                            // Half the threads walk the keys backwards, so they meet in the middle.
                            let i = if t % 2 == 0 {
                                i
                            } else {
                                keys_per_round - 1 - i
                            };
                            let key = round * keys_per_round + i;
                            let got = map.get_or_insert_with(key, || {
                                runs[key as usize].fetch_add(1, Ordering::SeqCst);
                                (t, key)
                            });
                            assert_eq!(got.value().1, key);
                            seen.push((key, *got));
                        }
                    }
                    seen
                })
            })
            .collect();
        let all: Vec<Vec<(u64, (u64, u64))>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (key, count) in runs.iter().enumerate() {
            assert_eq!(
                count.load(Ordering::SeqCst),
                1,
                "closure for key {key} ran more or less than once"
            );
        }
        let winners: HashMap<u64, (u64, u64)> = all[0].iter().copied().collect();
        for seen in &all {
            for (key, value) in seen {
                assert_eq!(
                    winners[key], *value,
                    "callers disagree on the value of key {key}"
                );
                assert_eq!(map.get_cloned(key), Some(*value));
            }
        }
        assert_eq!(map.len() as u64, rounds * keys_per_round);
    }

    #[test]
    fn get_or_insert_with_runs_one_closure_per_key_and_all_callers_agree() {
        get_or_insert_with_contention(Config::random(1, ReclaimMode::Inline), 200, 64);
        get_or_insert_with_contention(Config::random(8, ReclaimMode::Background), 200, 64);
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn get_or_insert_with_runs_one_closure_per_key_and_all_callers_agree_long() {
        let start = Instant::now();
        let budget = stress_share();
        while start.elapsed() < budget {
            get_or_insert_with_contention(Config::random(1, ReclaimMode::Background), 2_000, 256);
            get_or_insert_with_contention(Config::random(16, ReclaimMode::Inline), 2_000, 256);
        }
    }

    /// Threads insert, replace, remove, update, retain and clear drop-counted values concurrently;
    /// afterwards, once reclamation has caught up and the map is dropped, every value ever created
    /// must have been dropped exactly once.
    fn churn_with_drop_counters(config: Config, keys: u64, ops: u64, budget: Duration, seed: u64) {
        let tracker = Tracker::new();
        let map: Arc<TestMap<u64, Tracked, TestHasher>> = Arc::new(config.build());
        let deadline = Instant::now() + budget;
        let root = Rng::new(seed);
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (map, tracker, mut rng) = (Arc::clone(&map), tracker.clone(), root.fork(t));
                thread::spawn(move || {
                    for i in 0..ops {
                        if i % 256 == 0 && Instant::now() > deadline {
                            break;
                        }
                        let key = rng.below(keys);
                        match rng.below(1000) {
                            0..=449 => drop(map.insert(key, tracker.value(key))),
                            450..=649 => drop(map.remove(&key)),
                            650..=749 => drop(map.get_or_insert_with(key, || tracker.value(key))),
                            750..=849 => drop(map.update(&key, |v| tracker.value(v.id))),
                            850..=899 => drop(map.remove_if(&key, |_, v| v.id % 2 == 0)),
                            900..=949 => {
                                if let Some(r) = map.get(&key) {
                                    assert_eq!(r.id, key);
                                }
                            }
                            950..=989 => {
                                // A `Pinned` batch: the references stay valid while writers retire.
                                let pinned = map.pin();
                                let v = pinned.insert(key, tracker.value(key));
                                let got = pinned.get(&key).map(|v| v.id);
                                if let Some(v) = v {
                                    assert_eq!(v.id, key);
                                }
                                assert!(got.is_none() || got == Some(key));
                            }
                            990..=996 => {
                                let salt = rng.below(5) + 2;
                                map.retain(|k, _| k % salt != 0);
                            }
                            997 => map.clear_keep_capacity(),
                            998 => map.shrink_to_fit(),
                            _ => map.clear(),
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let map = Arc::try_unwrap(map).unwrap_or_else(|_| panic!("all threads joined"));
        assert!(
            map.wait_for_reclamation(RECLAIM_TIMEOUT),
            "reclamation stuck"
        );
        tracker.assert_no_double_drop();
        assert_eq!(
            tracker.live(),
            map.len(),
            "after reclamation only the map's values are alive"
        );
        drop(map);
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn concurrent_churn_drops_every_value_exactly_once() {
        let seed = rng::seed(0x57_0004);
        for (shards, mode) in [
            (1, ReclaimMode::Inline),
            (4, ReclaimMode::Background),
            (64, ReclaimMode::Background),
        ] {
            churn_with_drop_counters(
                Config::random(shards, mode),
                1_000,
                40_000,
                Duration::from_secs(3),
                seed,
            );
        }
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn concurrent_churn_drops_every_value_exactly_once_long() {
        let budget = stress_share() / 4;
        let seed = rng::seed(0x57_1004);
        for (shards, mode) in [
            (1, ReclaimMode::Inline),
            (1, ReclaimMode::Background),
            (16, ReclaimMode::Inline),
            (64, ReclaimMode::Background),
        ] {
            churn_with_drop_counters(Config::random(shards, mode), 50_000, u64::MAX, budget, seed);
        }
    }

    /// One thread iterates while another inserts and removes keys outside the stable set: each
    /// iteration must yield every stable key exactly once, with its value, and never a key that was
    /// never inserted.
    fn weakly_consistent_iteration(config: Config, stable: u64, iterations: usize) {
        let map: Arc<TestMap<u64, u64, TestHasher>> = Arc::new(config.build());
        for k in 0..stable {
            map.insert(k, k + 1);
        }
        let done = Arc::new(AtomicBool::new(false));
        let churn = {
            let (map, done) = (Arc::clone(&map), Arc::clone(&done));
            thread::spawn(move || {
                let mut rng = Rng::new(config.seed(99));
                while !done.load(Ordering::Relaxed) {
                    // Volatile keys live above the stable range; enough of them to grow shards.
                    let key = stable + rng.below(stable * 4);
                    if rng.chance(1, 2) {
                        map.insert(key, key + 1);
                    } else {
                        map.remove(&key);
                    }
                }
            })
        };
        for i in 0..iterations {
            let mut seen = vec![0u8; stable as usize];
            let mut check = |k: u64, v: u64| {
                assert_eq!(v, k + 1, "iteration {i} yielded a wrong value for {k}");
                assert!(
                    k < stable * 5,
                    "iteration {i} yielded a key nobody inserted: {k}"
                );
                if k < stable {
                    seen[k as usize] += 1;
                }
            };
            if i % 2 == 0 {
                for r in map.iter() {
                    check(*r.key(), *r);
                }
            } else {
                for (k, v) in map.pin().iter() {
                    check(*k, *v);
                }
            }
            for (k, &n) in seen.iter().enumerate() {
                assert_eq!(n, 1, "iteration {i} yielded stable key {k} {n} times");
            }
        }
        done.store(true, Ordering::Relaxed);
        churn.join().unwrap();
    }

    #[test]
    fn iteration_yields_every_stable_entry_exactly_once_under_concurrent_writes() {
        weakly_consistent_iteration(Config::random(1, ReclaimMode::Inline), 2_000, 60);
        weakly_consistent_iteration(Config::random(16, ReclaimMode::Background), 2_000, 60);
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn iteration_yields_every_stable_entry_exactly_once_under_concurrent_writes_long() {
        let start = Instant::now();
        while start.elapsed() < stress_share() {
            weakly_consistent_iteration(Config::random(1, ReclaimMode::Background), 50_000, 50);
            weakly_consistent_iteration(Config::random(64, ReclaimMode::Inline), 50_000, 50);
        }
    }

    /// One thread iterates (alternating `iter()` and `pin().iter()`) while another grows shards from
    /// empty, replaces values and clears, over and over. The writer never removes a key from a live
    /// table (only `clear` swaps whole tables), so within one walk a key can sit in only one slot of
    /// the one table the walk loads per shard: each key is yielded at most once, with a value that
    /// belongs to it. (That is `EpochMap`, which replaces in the slot; a flat replace may move the
    /// key to a later slot in walk order, so there a replaced key may be yielded again, each time
    /// with a value that belongs to it.) The `Ref`s of each `iter()` walk are kept until after the next walk, across
    /// more clears and growths: their entries must not be freed (a freed slab slot is soon reused by
    /// another key, which the recorded key and value would expose).
    /// Runs `walks` walks, and more until the writer has cleared `clears_min` times.
    fn iteration_racing_growth_and_clear(config: Config, keys: u64, walks: usize, clears_min: u64) {
        // A flat replace may publish the new entry in a later bucket (in walk order) than the old
        // one, so a walk racing it may yield a replaced key again after its old value.
        let most = if FLAT { u32::MAX } else { 1 };
        let map: Arc<TestMap<u64, u64, TestHasher>> = Arc::new(config.build());
        let done = Arc::new(AtomicBool::new(false));
        let clears = Arc::new(AtomicU64::new(0));
        let writer = {
            let (map, done, clears) = (Arc::clone(&map), Arc::clone(&done), Arc::clone(&clears));
            thread::spawn(move || {
                let mut rng = Rng::new(config.seed(0x17e7));
                let mut round = 0u64;
                while !done.load(Ordering::Relaxed) {
                    // Fill from empty (every shard grows several times), replacing some values.
                    let fill = keys / 2 + rng.below(keys / 2);
                    for k in 0..fill {
                        map.insert(k, (k << 16) | (round & 0xffff));
                        if rng.chance(1, 8) {
                            let k = rng.below(k + 1);
                            map.insert(k, (k << 16) | (round & 0xffff));
                        }
                    }
                    if rng.chance(1, 2) {
                        map.clear();
                    } else {
                        map.clear_keep_capacity();
                    }
                    clears.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
            })
        };
        let mut held: Vec<(epochmap::Ref<'_, u64, u64>, u64, u64)> = Vec::new();
        let check_held = |held: &[(epochmap::Ref<'_, u64, u64>, u64, u64)]| {
            for (r, k, v) in held {
                assert_eq!(
                    (*r.key(), **r),
                    (*k, *v),
                    "a held Ref's entry changed under it"
                );
            }
        };
        let mut walk = 0;
        while walk < walks || clears.load(Ordering::Relaxed) < clears_min {
            walk += 1;
            let mut seen = vec![0u32; keys as usize];
            let mut check = |k: u64, v: u64| {
                assert!(k < keys, "walk {walk} yielded a key nobody inserted: {k}");
                assert_eq!(v >> 16, k, "walk {walk} yielded value {v:#x} for key {k}");
                seen[k as usize] += 1;
                assert!(
                    seen[k as usize] <= most,
                    "walk {walk} yielded key {k} {} times",
                    seen[k as usize]
                );
            };
            if walk % 2 == 0 {
                let mut fresh = Vec::new();
                for r in map.iter() {
                    let (k, v) = (*r.key(), *r);
                    check(k, v);
                    if fresh.len() < 256 {
                        fresh.push((r, k, v));
                    }
                }
                check_held(&held);
                held = fresh;
            } else {
                for (k, v) in map.pin().iter() {
                    check(*k, *v);
                }
                check_held(&held);
            }
        }
        check_held(&held);
        drop(held);
        done.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
    }

    #[test]
    fn iteration_racing_growth_and_clear_yields_each_key_at_most_once_and_keeps_refs_valid() {
        iteration_racing_growth_and_clear(Config::random(1, ReclaimMode::Inline), 4_000, 100, 10);
        iteration_racing_growth_and_clear(Config::random(8, ReclaimMode::Background), 4_000, 100, 10);
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn iteration_racing_growth_and_clear_yields_each_key_at_most_once_and_keeps_refs_valid_long() {
        let start = Instant::now();
        while start.elapsed() < stress_share() {
            // 2^18+ buckets at the peak, so the walk prefetches, with 1 and 64 shards.
            iteration_racing_growth_and_clear(Config::random(1, ReclaimMode::Background), 1_200_000, 20, 3);
            iteration_racing_growth_and_clear(Config::random(64, ReclaimMode::Inline), 1_200_000, 20, 3);
            iteration_racing_growth_and_clear(Config::random(4, ReclaimMode::Inline), 20_000, 400, 100);
        }
    }

    /// The colliding hasher under concurrency: every operation scans one long chain while writers
    /// change it.
    #[test]
    fn colliding_hasher_survives_concurrent_readers_and_writers() {
        let config = Config {
            shards: 4,
            mode: ReclaimMode::Background,
            hasher: HasherKind::Colliding,
        };
        writers_and_readers(
            config,
            300,
            3_000,
            Duration::from_secs(3),
            rng::seed(0x57_0005),
        );
        churn_with_drop_counters(
            config,
            200,
            2_000,
            Duration::from_secs(3),
            rng::seed(0x57_0006),
        );
    }

    /// Threads increment shared counters through `update`, `compute` and `remove_if` + re-insert
    /// races: read-modify-writes under the shard lock must never lose an increment.
    fn increments_are_never_lost(config: Config, counters: u64, per_thread: u64) {
        let map: Arc<TestMap<u64, u64, TestHasher>> = Arc::new(config.build());
        for k in 0..counters {
            map.insert(k, 0);
        }
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let map = Arc::clone(&map);
                thread::spawn(move || {
                    let mut rng = Rng::new(config.seed(t));
                    for _ in 0..per_thread {
                        let key = rng.below(counters);
                        if rng.chance(1, 2) {
                            map.update(&key, |v| v + 1)
                                .expect("counters are never removed");
                        } else {
                            map.compute(key, |entry| {
                                epochmap::Operation::Insert(entry.expect("present").1 + 1)
                            });
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total: u64 = (0..counters).map(|k| map.get_cloned(&k).unwrap()).sum();
        assert_eq!(total, THREADS * per_thread, "lost increments, {config}");
    }

    #[test]
    fn update_and_compute_never_lose_an_increment() {
        increments_are_never_lost(Config::random(1, ReclaimMode::Inline), 8, 5_000);
        increments_are_never_lost(Config::random(16, ReclaimMode::Background), 64, 5_000);
    }

    /// `wait_for_reclamation` returning `true` means the drops it waited for are visible to the
    /// caller, whichever thread ran them. Each round, removers take every key out (in batches that
    /// they then help reclaim themselves, so the `Drop`s often run on their threads or the
    /// reclaimer's) and meet the waiter at a barrier; the waiter's successful wait must then see every
    /// value dropped. On x86 this mostly exercises the accounting (a `pending_bytes` that reaches 0
    /// early fails it on any CPU); the ordering itself is proved by the loom model
    /// `a_wait_that_returns_true_sees_the_drops_it_waited_for` (`loom-tests/tests/wait.rs`).
    fn waits_see_the_drops_they_waited_for(config: Config, keys: u64, budget: Duration) {
        let deadline = Instant::now() + budget;
        let mut rounds = 0;
        while rounds < 3 || Instant::now() < deadline {
            rounds += 1;
            let tracker = Tracker::new();
            let map: Arc<TestMap<u64, Tracked, TestHasher>> = Arc::new(config.build());
            for k in 0..keys {
                map.insert(k, tracker.value(k));
            }
            let removed = Arc::new(Barrier::new(3));
            let removers: Vec<_> = (0..2)
                .map(|t| {
                    let (map, removed) = (Arc::clone(&map), Arc::clone(&removed));
                    thread::spawn(move || {
                        for k in (t..keys).step_by(2) {
                            drop(map.remove(&k));
                        }
                        removed.wait();
                        let _ = map.wait_for_reclamation(RECLAIM_TIMEOUT);
                    })
                })
                .collect();
            removed.wait();
            if map.wait_for_reclamation(RECLAIM_TIMEOUT) {
                assert_eq!(
                    tracker.live(),
                    0,
                    "round {rounds}: the wait returned true before every removed value was dropped"
                );
            }
            for r in removers {
                r.join().unwrap();
            }
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
            tracker.assert_all_dropped_once();
        }
    }

    #[test]
    fn a_successful_wait_for_reclamation_sees_every_drop_it_waited_for() {
        for (shards, mode) in [(1, ReclaimMode::Inline), (4, ReclaimMode::Background)] {
            waits_see_the_drops_they_waited_for(Config::random(shards, mode), 2_000, Duration::from_secs(1));
        }
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn a_successful_wait_for_reclamation_sees_every_drop_it_waited_for_long() {
        let budget = stress_share() / 2;
        for (shards, mode) in [(1, ReclaimMode::Inline), (16, ReclaimMode::Background)] {
            waits_see_the_drops_they_waited_for(Config::random(shards, mode), 20_000, budget);
        }
    }

    /// What one run of [`drain_while_writing`] accounted for.
    #[derive(Debug, Default)]
    struct DrainAccounting {
        /// Values the writers published (each a unique token).
        written: usize,
        /// Values a writer got back by replacing or removing them.
        replaced: usize,
        /// Values the drains yielded, and how many drains ran (and yielded something).
        drained: usize,
        drains: usize,
        nonempty_drains: usize,
        /// Values left in the map at the end.
        left: usize,
    }

    /// The key a [`drain_while_writing`] token was written for: its low 20 bits.
    const TOKEN_KEY: u64 = (1 << 20) - 1;

    /// Writers insert, update, remove and get-or-insert unique tokens while one thread drains the
    /// map in a loop (alternating `next` and polling `try_next`) and another reads. Every token
    /// written must be accounted for exactly once: returned to the writer that replaced or removed
    /// it, yielded by exactly one drain, or left in the map at the end.
    fn drain_while_writing(config: Config, keys: u64, ops: u64, budget: Duration, seed: u64) {
        assert!(keys <= TOKEN_KEY);
        let map: Arc<TestMap<u64, u64, TestHasher>> = Arc::new(config.build());
        let deadline = Instant::now() + budget;
        let done = Arc::new(AtomicBool::new(false));
        let root = Rng::new(seed);
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (map, mut rng) = (Arc::clone(&map), root.fork(w));
                thread::spawn(move || {
                    let (mut written, mut replaced) = (Vec::new(), Vec::new());
                    for seq in 0..ops {
                        if seq % 256 == 0 && Instant::now() > deadline {
                            break;
                        }
                        let key = rng.below(keys);
                        let token = (w << 56) | (seq << 20) | key;
                        match rng.below(20) {
                            0..=13 => {
                                written.push(token);
                                if let Some(old) = map.insert(key, token) {
                                    replaced.push(*old);
                                }
                            }
                            14..=16 => {
                                let mut old_seen = None;
                                map.update(&key, |old| {
                                    old_seen = Some(*old);
                                    token
                                });
                                if let Some(old) = old_seen {
                                    replaced.push(old);
                                    written.push(token);
                                }
                            }
                            17..=18 => {
                                if let Some(old) = map.remove(&key) {
                                    replaced.push(*old);
                                }
                            }
                            _ => {
                                let mut made = false;
                                map.get_or_insert_with(key, || {
                                    made = true;
                                    token
                                });
                                if made {
                                    written.push(token);
                                }
                            }
                        }
                    }
                    (written, replaced)
                })
            })
            .collect();
        let reader = {
            let (map, done, mut rng) = (Arc::clone(&map), Arc::clone(&done), root.fork(99));
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let key = rng.below(keys);
                    if let Some(v) = map.get(&key) {
                        assert_eq!(*v & TOKEN_KEY, key, "a value under the wrong key");
                    }
                }
            })
        };
        let drainer = {
            let (map, done) = (Arc::clone(&map), Arc::clone(&done));
            thread::spawn(move || {
                let (mut drained, mut drains, mut nonempty) = (Vec::new(), 0, 0);
                while !done.load(Ordering::Relaxed) {
                    let mut drain = map.drain();
                    let before = drained.len();
                    let expected = drain.len();
                    if drains % 2 == 0 {
                        drained.extend(drain.by_ref().map(|(k, v)| {
                            assert_eq!(v & TOKEN_KEY, k, "drained a value under the wrong key");
                            v
                        }));
                    } else {
                        loop {
                            match drain.try_next() {
                                Ok(Some((k, v))) => {
                                    assert_eq!(v & TOKEN_KEY, k);
                                    drained.push(v);
                                }
                                Ok(None) => break,
                                Err(epochmap::WouldBlock) => thread::yield_now(),
                            }
                        }
                    }
                    assert_eq!(
                        drained.len() - before,
                        expected,
                        "the drain's len was exact"
                    );
                    drains += 1;
                    nonempty += usize::from(expected > 0);
                    if expected == 0 {
                        // Let the writers run (the machine may have two cores for four threads).
                        thread::yield_now();
                    }
                }
                (drained, drains, nonempty)
            })
        };
        let (mut written, mut accounted) = (Vec::new(), Vec::new());
        let mut acc = DrainAccounting::default();
        for w in writers {
            let (wrote, replaced) = w.join().unwrap();
            acc.written += wrote.len();
            acc.replaced += replaced.len();
            written.extend(wrote);
            accounted.extend(replaced);
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let (drained, drains, nonempty) = drainer.join().unwrap();
        (acc.drained, acc.drains, acc.nonempty_drains) = (drained.len(), drains, nonempty);
        accounted.extend(drained);
        let map = Arc::try_unwrap(map).unwrap_or_else(|_| panic!("all threads joined"));
        let left: Vec<u64> = map.into_iter().map(|(_, v)| v).collect();
        acc.left = left.len();
        accounted.extend(left);
        written.sort_unstable();
        accounted.sort_unstable();
        let dup = accounted.windows(2).find(|w| w[0] == w[1]);
        assert!(
            dup.is_none(),
            "a value was accounted for twice: {dup:?}, {acc:?}"
        );
        assert_eq!(
            accounted.len(),
            written.len(),
            "lost or invented values: {acc:?}"
        );
        assert!(
            accounted == written,
            "accounted values differ from written ones: {acc:?}"
        );
        assert!(acc.drains > 0);
        eprintln!("drain_while_writing {config}: {acc:?}");
    }

    #[test]
    fn drains_racing_writers_account_for_every_value_exactly_once() {
        let seed = rng::seed(0x57_0007);
        for (shards, mode) in [
            (1, ReclaimMode::Inline),
            (4, ReclaimMode::Background),
            (64, ReclaimMode::Inline),
        ] {
            // Bounded by time rather than operations, so that release and debug builds both see
            // many drains overlap the writes.
            drain_while_writing(
                Config::random(shards, mode),
                512,
                u64::MAX,
                Duration::from_millis(400),
                seed,
            );
        }
    }

    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn drains_racing_writers_account_for_every_value_exactly_once_long() {
        let budget = stress_share() / 3;
        let seed = rng::seed(0x57_1007);
        for (shards, mode) in [
            (1, ReclaimMode::Background),
            (8, ReclaimMode::Inline),
            (64, ReclaimMode::Background),
        ] {
            drain_while_writing(Config::random(shards, mode), 100_000, u64::MAX, budget, seed);
        }
    }
}

// EpochMap only: values that never move. The counters are `AtomicU64`s bumped through the `&V`
// that `get` returns; a FlatEpochMap copies its values when it rebuilds a table, so an increment
// through the old copy is lost (by design: its `&V` is a snapshot), and `AtomicU64` is not
// `Clone`. tests/flat.rs checks the flat map's version of this: shared (`Arc`) values.
/// Values never move: counters live in `AtomicU64` values and are bumped through `&V` from `get`
/// and `pin().get`, while other threads make the tables grow (a flood of fresh keys), shrink
/// (removing them and `shrink_to_fit`) and `reserve`, for `rounds` rounds each (or until
/// `budget`). An increment through a reference to a copy the map had moved would be lost, so the
/// final sum must equal the number of increments, and each counter's address must be the one it
/// had when it was inserted.
fn values_never_move(config: Config, counters: u64, rounds: u64, budget: Duration) {
    let map: Arc<EpochMap<u64, AtomicU64, TestHasher>> = Arc::new(config.build());
    for k in 0..counters {
        map.insert(k, AtomicU64::new(0));
    }
    let addresses: Vec<usize> = (0..counters)
        .map(|k| &*map.get(&k).unwrap() as *const AtomicU64 as usize)
        .collect();
    let deadline = Instant::now() + budget;
    let stop = Arc::new(AtomicBool::new(false));
    let bumpers: Vec<_> = (0..THREADS / 2)
        .map(|t| {
            let (map, stop) = (Arc::clone(&map), Arc::clone(&stop));
            thread::spawn(move || {
                let mut rng = Rng::new(config.seed(t));
                let mut bumped = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.below(counters);
                    if bumped % 2 == 0 {
                        let v = map.get(&key).expect("counters are never removed");
                        v.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let pinned = map.pin();
                        let v = pinned.get(&key).expect("counters are never removed");
                        v.fetch_add(1, Ordering::Relaxed);
                    }
                    bumped += 1;
                }
                bumped
            })
        })
        .collect();
    let resizers: Vec<_> = (0..THREADS / 2)
        .map(|t| {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let base = counters + 1_000_000 * (t + 1);
                let mut round = 0u64;
                while round < rounds && Instant::now() < deadline {
                    let flood = 2_000 + 500 * (round % 4);
                    if round % 3 == 0 {
                        map.reserve(flood as usize * 4);
                    }
                    for k in base..base + flood {
                        map.insert(k, AtomicU64::new(0));
                    }
                    for k in base..base + flood {
                        map.remove(&k);
                    }
                    map.shrink_to_fit();
                    round += 1;
                }
                round
            })
        })
        .collect();
    let resized: u64 = resizers.into_iter().map(|r| r.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    let bumped: u64 = bumpers.into_iter().map(|b| b.join().unwrap()).sum();
    assert!(resized > 0, "the resizers never ran a round, {config}");
    for (k, &address) in addresses.iter().enumerate() {
        let now = &*map.get(&(k as u64)).unwrap() as *const AtomicU64 as usize;
        assert_eq!(now, address, "counter {k} moved, {config}");
    }
    let total: u64 = (0..counters)
        .map(|k| map.get(&k).unwrap().load(Ordering::Relaxed))
        .sum();
    assert_eq!(
        total, bumped,
        "increments lost through references to moved values ({resized} resize rounds), {config}"
    );
}

#[test]
fn atomics_in_values_lose_no_increment_across_growth_shrink_and_reserve() {
    values_never_move(
        Config::random(1, ReclaimMode::Inline),
        16,
        6,
        Duration::from_secs(10),
    );
    values_never_move(
        Config::random(8, ReclaimMode::Background),
        64,
        6,
        Duration::from_secs(10),
    );
}

#[test]
#[ignore = "long stress run; .ci/stress.sh runs it in release"]
fn atomics_in_values_lose_no_increment_across_growth_shrink_and_reserve_long() {
    let budget = common::stress_budget();
    values_never_move(
        Config::random(4, ReclaimMode::Background),
        256,
        u64::MAX,
        budget,
    );
}
