//! Panic safety: user code that panics in the middle of a map operation (a key's `Hash` or `Eq`,
//! a closure, a value's `Drop`) leaves the map usable and consistent, releases the shard lock, and
//! neither leaks nor double-drops anything. Runs in every configuration of `common::with_map`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    completes_within, drive_reclamation_until, expect_panic, in_child_process,
    quiet_expected_panics, with_map, Config, HasherKind, PanicKey, PanicSwitch, TestHasher,
    Tracked, Tracker, EXPECTED_PANIC, RECLAIM_TIMEOUT,
};
use epochmap::{EpochMap, ReclaimMode};

for_each_map! {
    type Map = TestMap<PanicKey, Tracked, TestHasher>;

    /// A map under test, the keys' switch and tracker, and a model of what it must hold (key id →
    /// value id).
    struct Harness {
        map: Arc<Map>,
        switch: PanicSwitch,
        tracker: Tracker,
        model: HashMap<u64, u64>,
        config: Config,
    }

    impl Harness {
        fn new(config: Config, make: &dyn Fn() -> Map) -> Self {
            quiet_expected_panics();
            Harness {
                map: Arc::new(make()),
                switch: PanicSwitch::new(),
                tracker: Tracker::new(),
                model: HashMap::new(),
                config,
            }
        }

        fn key(&self, id: u64) -> PanicKey {
            self.switch.key(&self.tracker, id)
        }

        fn insert(&mut self, id: u64, value: u64) {
            self.map.insert(self.key(id), self.tracker.value(value));
            self.model.insert(id, value);
        }

        fn fill(&mut self, ids: std::ops::Range<u64>) {
            for id in ids {
                self.insert(id, id);
            }
        }

        /// After a panic: disarms the switch and checks that the map matches the model, that its
        /// shard locks are free (a write from this thread and one from another thread both complete),
        /// and that only the map's own keys and values are alive once reclamation has run.
        #[track_caller]
        fn assert_consistent(&mut self, context: &str) {
            self.switch.disarm();
            let ctx = format!("{context}, {}", self.config);
            assert_eq!(self.map.len(), self.model.len(), "len, {ctx}");
            for (&id, &value) in &self.model {
                let got = self.map.get(&self.key(id)).map(|r| r.id);
                assert_eq!(got, Some(value), "key {id}, {ctx}");
            }
            let mut seen: Vec<u64> = self.map.iter().map(|r| r.key().id()).collect();
            seen.sort_unstable();
            let mut expected: Vec<u64> = self.model.keys().copied().collect();
            expected.sort_unstable();
            assert_eq!(seen, expected, "iteration, {ctx}");

            // The lock of every shard a model key lives in is free, for this thread and another one.
            let probe = u64::MAX - 1;
            for &id in self.model.keys().take(64) {
                self.map.update(&self.key(id), |v| self.tracker.value(v.id));
            }
            let (map, key, value) = (
                Arc::clone(&self.map),
                self.key(probe),
                self.tracker.value(probe),
            );
            let ids: Vec<PanicKey> = self.model.keys().take(64).map(|&id| self.key(id)).collect();
            let tracker = self.tracker.clone();
            completes_within(
                Duration::from_secs(20),
                "a write from another thread",
                move || {
                    map.insert(key.clone(), value);
                    for k in &ids {
                        map.update(k, |v| tracker.value(v.id));
                    }
                    map.remove(&key);
                },
            );

            assert!(
                self.map.wait_for_reclamation(RECLAIM_TIMEOUT),
                "reclamation, {ctx}"
            );
            self.tracker.assert_no_double_drop();
            assert_eq!(
                self.tracker.live(),
                2 * self.map.len(),
                "live keys+values, {ctx}"
            );
        }

        /// Drops the map and checks every key and value was dropped exactly once.
        #[track_caller]
        fn finish(self) {
            let Harness { map, tracker, .. } = self;
            drop(Arc::try_unwrap(map).unwrap_or_else(|_| panic!("no other owner")));
            tracker.assert_all_dropped_once();
        }
    }

    fn n(config: Config) -> u64 {
        config.scale(800) as u64
    }

    #[test]
    fn a_panicking_hash_during_insert_changes_nothing() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            h.fill(0..n(config));
            h.switch.panic_on_hash(5);
            let msg = expect_panic(|| h.map.insert(h.key(5), h.tracker.value(99)));
            assert!(msg.contains("Hash of key 5"));
            h.switch.panic_on_hash(7_000);
            expect_panic(|| h.map.insert(h.key(7_000), h.tracker.value(99)));
            expect_panic(|| h.map.get_or_insert_with(h.key(7_000), || unreachable!()));
            h.assert_consistent("hash panic during insert");
            h.insert(7_000, 1);
            h.assert_consistent("after re-inserting");
            h.finish();
        });
    }

    #[test]
    fn a_panicking_hash_of_another_key_during_growth_changes_nothing() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            h.fill(0..40);
            // Key 3's hash now panics: the first insert that grows key 3's shard must fail cleanly.
            h.switch.panic_on_hash(3);
            let mut next = 1_000;
            let mut panicked = false;
            while next < 1_000 + 100_000 {
                let (key, value) = (h.key(next), h.tracker.value(next));
                let map = Arc::clone(&h.map);
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.insert(key, value)));
                match result {
                    Ok(_) => {
                        h.model.insert(next, next);
                    }
                    Err(_) => {
                        panicked = true;
                        break;
                    }
                }
                next += 1;
            }
            assert!(panicked, "some insert grows key 3's shard, {config}");
            h.assert_consistent("hash panic during growth");
            assert!(
                h.map.get(&h.key(next)).is_none(),
                "the failed insert left nothing behind"
            );
            // Disarmed: the same insert now grows the shard and succeeds.
            h.insert(next, next);
            h.fill(next + 1..next + 200);
            h.assert_consistent("after growth succeeded");

            // The same through shrink_to_fit and reserve. A resize hashes a key only when the bits
            // kept beside its slot cannot place it (`Placement`, src/bucket.rs): a shrink only keys
            // sitting seven or more buckets from home (every key under the colliding hasher), so it
            // may or may not reach key 3; a reserve of more than four doublings always does.
            for id in 1_000..next + 200 {
                h.map.remove(&h.key(id));
                h.model.remove(&id);
            }
            h.switch.panic_on_hash(3);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.map.shrink_to_fit()));
            h.assert_consistent("hash panic during shrink_to_fit");
            h.map.shrink_to_fit();
            h.assert_consistent("after shrink_to_fit succeeded");
            // Each shard's share is at least 64 times its length: five doublings or more.
            let more = 64 * h.map.shard_count() * (h.map.len() + 8);
            h.switch.panic_on_hash(3);
            expect_panic(|| h.map.reserve(more));
            h.assert_consistent("hash panic during reserve");
            h.map.reserve(more);
            h.assert_consistent("after reserve succeeded");
            h.finish();
        });
    }

    /// A removal that leaves its table under an eighth full shrinks it, and the shrink may hash keys:
    /// under the colliding hasher every key past the seventh bucket from home has a placement that
    /// cannot say where it goes. If that `Hash` panics, the removal itself stands (the key is gone
    /// and its entry retired once), the table is left as it was, the lock is released, and once the
    /// hash stops panicking the next removal shrinks the table.
    #[test]
    fn a_panicking_hash_during_an_automatic_shrink_keeps_the_removal_and_the_table() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            let n = n(config);
            h.fill(0..n);
            // The last key inserted sits furthest from home under the colliding hasher.
            let far = n - 1;
            h.switch.panic_on_hash(far);
            let mut panicked = 0;
            for id in 0..far {
                let (map, key) = (Arc::clone(&h.map), h.key(id));
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.remove(&key)));
                h.model.remove(&id);
                match result {
                    Ok(removed) => assert!(removed.is_some(), "key {id}, {config}"),
                    Err(_) => panicked += 1,
                }
                assert!(
                    h.map.get(&h.key(id)).is_none(),
                    "key {id} is gone, {config}"
                );
            }
            let sparse = h.map.memory_stats().buckets;
            if config.hasher == HasherKind::Colliding {
                assert!(panicked > 0, "a shrink hashed key {far}, {config}");
            }
            // Disarms the switch; its probe write ends with a removal, which shrinks the table.
            h.assert_consistent("hash panic during an automatic shrink");
            if config.hasher == HasherKind::Colliding {
                // One shard holds every key, the probe's too.
                assert!(
                    h.map.memory_stats().buckets < sparse,
                    "the next removal shrank the table, {config}"
                );
            }
            h.finish();
        });
    }

    #[test]
    fn a_panicking_eq_leaves_the_map_consistent_and_unlocked() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            h.fill(0..n(config));
            // Lock-free lookups.
            h.switch.panic_on_eq(9);
            expect_panic(|| h.map.get(&h.key(9)).map(|r| r.id));
            expect_panic(|| h.map.contains_key(&h.key(9)));
            // Under the lock: replacing insert, update.
            expect_panic(|| h.map.insert(h.key(9), h.tracker.value(1)));
            h.assert_consistent("eq panic in insert");
            h.switch.panic_on_eq(9);
            expect_panic(|| h.map.update(&h.key(9), |v| h.tracker.value(v.id + 1)));
            h.assert_consistent("eq panic in update");
            // remove and remove_if look up lock-free first; skip that comparison to panic under the lock.
            for op in 0..2 {
                h.switch.panic_on_eq_after(9, 1);
                if op == 0 {
                    expect_panic(|| h.map.remove(&h.key(9)).map(|r| r.id));
                } else {
                    expect_panic(|| h.map.remove_if(&h.key(9), |_, _| true).map(|r| r.id));
                }
                h.assert_consistent("eq panic in remove under the lock");
            }
            h.finish();
        });
    }

    #[test]
    fn panicking_closures_change_nothing_they_did_not_finish() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            h.fill(0..n(config));

            let msg = expect_panic(|| {
                h.map
                    .get_or_insert_with(h.key(5_000), || panic!("{EXPECTED_PANIC} make"))
            });
            assert!(msg.contains("make"));
            h.assert_consistent("get_or_insert_with closure panic");
            assert!(!h.map.contains_key(&h.key(5_000)));

            expect_panic(|| {
                h.map
                    .update(&h.key(3), |_| panic!("{EXPECTED_PANIC} update"))
            });
            h.assert_consistent("update closure panic");

            expect_panic(|| {
                h.map
                    .remove_if(&h.key(3), |_, _| panic!("{EXPECTED_PANIC} remove_if"))
            });
            h.assert_consistent("remove_if closure panic");

            for id in [3, 6_000] {
                expect_panic(|| {
                    h.map
                        .compute(h.key(id), |_| -> epochmap::Operation<Tracked> {
                            panic!("{EXPECTED_PANIC} compute")
                        })
                });
                h.assert_consistent("compute closure panic");
            }
            expect_panic(|| {
                h.map
                    .get_or_try_insert_with(h.key(6_001), || -> Result<Tracked, ()> {
                        panic!("{EXPECTED_PANIC} get_or_try_insert_with")
                    })
            });
            h.assert_consistent("get_or_try_insert_with closure panic");

            // retain: entries the closure rejected before the panic are gone, the rest stay.
            let mut visited = Vec::new();
            let stop_at = n(config) / 2;
            expect_panic(|| {
                h.map.retain(|k, _| {
                    if visited.len() as u64 == stop_at {
                        panic!("{EXPECTED_PANIC} retain");
                    }
                    visited.push(k.id());
                    k.id() % 2 == 0
                })
            });
            assert_eq!(visited.len() as u64, stop_at);
            for id in visited.iter().filter(|&&id| id % 2 == 1) {
                h.model.remove(id);
            }
            h.assert_consistent("retain closure panic");

            // retain again, with the hasher of a rejected key panicking (retain rehashes what it removes).
            h.switch.panic_on_hash(0);
            expect_panic(|| h.map.retain(|k, _| k.id() != 0));
            h.switch.disarm();
            h.assert_consistent("hash panic inside retain");
            h.map.retain(|k, _| k.id() != 0);
            h.model.remove(&0);
            h.assert_consistent("retain after the panic");
            h.finish();
        });
    }

    /// After a map's drop: every instance dropped exactly once. The flat map's growth left old
    /// copies in retired tables, which the reclaimer drops after their grace period, not the map's
    /// drop: those are waited for first.
    #[track_caller]
    fn settled_after_drop(tracker: &Tracker) {
        if FLAT {
            assert!(drive_reclamation_until(|| tracker.live() == 0));
        }
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn a_panicking_drop_during_map_drop_still_drops_the_rest_and_resumes_the_first_panic() {
        quiet_expected_panics();
        with_map::<u64, Tracked>(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            for i in 0..200 {
                let value = if i % 50 == 7 {
                    tracker.panicking_value(i)
                } else {
                    tracker.value(i)
                };
                map.insert(i, value);
            }
            // A panicking value also waits in the removal batch.
            map.insert(1_000, tracker.panicking_value(1_000));
            map.remove(&1_000);
            let msg = expect_panic(move || drop(map));
            assert!(
                msg.contains(EXPECTED_PANIC) && msg.contains("panicked in Drop"),
                "{msg}, {config}"
            );
            settled_after_drop(&tracker);

            // The same when a partly consumed `into_iter` is dropped.
            let tracker = Tracker::new();
            let map = make();
            for i in 0..100 {
                let value = if i % 10 == 3 {
                    tracker.panicking_value(i)
                } else {
                    tracker.value(i)
                };
                map.insert(i, value);
            }
            let mut iter = map.into_iter();
            let first = iter.next().expect("non-empty");
            expect_panic(move || drop(iter));
            if first.1.id % 10 == 3 {
                expect_panic(move || drop(first));
            } else {
                drop(first);
            }
            settled_after_drop(&tracker);
        });
    }

    #[test]
    fn a_panicking_drop_during_reclamation_is_counted_and_the_rest_is_freed() {
        quiet_expected_panics();
        with_map::<u64, Tracked>(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            let mut expected_panics = 0;
            for i in 0..300 {
                let panics = i % 20 == 0;
                expected_panics += u64::from(panics);
                let value = if panics {
                    tracker.panicking_value(i)
                } else {
                    tracker.value(i)
                };
                map.insert(i, value);
            }
            // Out by replacement, removal, retain and clear: every way into reclamation.
            for i in (0..300).step_by(40) {
                map.insert(i, tracker.value(i));
            }
            for i in (20..300).step_by(80) {
                map.remove(&i);
            }
            map.retain(|k, _| k % 60 != 40);
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
            let before_clear = map.memory_stats().drop_panics;
            map.clear();
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
            let stats = map.memory_stats();
            // Every panicking instance was dropped by reclamation: the test's, and for the flat
            // map also the copies its rebuilds made of them (each copy panics in `Drop` too).
            let made = expected_panics;
            let expected_panics = tracker.panicking_created() as u64;
            if !FLAT {
                assert_eq!(expected_panics, made, "EpochMap copied a value, {config}");
            }
            assert_eq!(stats.drop_panics, expected_panics, "{config}");
            assert!(
                before_clear > 0 && before_clear < expected_panics,
                "{config}"
            );
            assert_eq!(tracker.live(), 0, "{config}");
            tracker.assert_all_dropped_once();
            // Still usable afterwards.
            map.insert(1, tracker.value(1));
            assert_eq!(map.get(&1).unwrap().id, 1);
            drop(map);
            tracker.assert_all_dropped_once();
        });
    }

    /// A key and a value whose `Drop`s both panic, on every way an entry is freed: the removal batch
    /// and a cleared table (reclamation, both modes), and the map's own drop. Dropping the pair in one
    /// `drop_in_place` ran the value's `Drop` while the key's panic unwound, which aborted the process;
    /// now each is dropped under its own `catch_unwind` and both panics count. In a child process,
    /// because the broken behaviour is an abort.
    #[test]
    fn a_key_and_a_value_whose_drops_both_panic_are_counted_twice_and_never_abort() {
        in_child_process(
            &format!("{MODULE}::a_key_and_a_value_whose_drops_both_panic_are_counted_twice_and_never_abort"),
            || {
                for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
                    let tracker = Tracker::new();
                    let map: TestMap<Tracked, Tracked> =
                        TestMap::builder().shards(1).reclaim_mode(mode).build();
                    let bomb = |id| {
                        (
                            tracker.always_panicking_value(id),
                            tracker.always_panicking_value(id),
                        )
                    };
                    let (k, v) = bomb(1);
                    map.insert(k, v);
                    let (k, v) = bomb(2);
                    map.insert(k, v);
                    // Removal: the entry waits in the shard's batch, which `wait_for_reclamation`
                    // hands to the epoch.
                    let removed = map.remove(&tracker.value(1)).expect("present");
                    drop(removed);
                    assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
                    assert_eq!(map.memory_stats().drop_panics, 2, "{mode:?}: removed entry");
                    // Clear: the entry goes with the retired table.
                    map.clear();
                    assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
                    let stats = map.memory_stats();
                    assert_eq!(stats.drop_panics, 4, "{mode:?}: cleared entry");
                    assert_eq!(stats.entries_reclaimed, 2, "{mode:?}");
                    // The map's drop: the first panic is resumed after everything was dropped.
                    let (k, v) = bomb(3);
                    map.insert(k, v);
                    let msg = expect_panic(move || drop(map));
                    assert!(msg.contains("panicked in Drop"), "{mode:?}: {msg}");
                    tracker.assert_all_dropped_once();
                }
            },
        );
    }


    // ---------------------------------------------------------------------------------------------
    // `Clone` panics during a rebuild. Only the flat map clones entries when its table grows, shrinks
    // or is rebuilt; `TestMap` moves pointers and never runs `Clone` there, so for it these tests
    // check that no write panics.

    /// Inserts `ids` through `h`, counting inserts that panic (a growth whose `Clone` panicked): a
    /// panicking insert must leave the map as it was, so its key stays out of the model.
    fn insert_counting_panics(h: &mut Harness, ids: std::ops::Range<u64>) -> usize {
        let mut panics = 0;
        for id in ids {
            let (key, value) = (h.key(id), h.tracker.value(id));
            let map = Arc::clone(&h.map);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                drop(map.insert(key, value));
            })) {
                Ok(()) => {
                    h.model.insert(id, id);
                }
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_default();
                    assert!(msg.contains("Clone of key"), "unexpected panic: {msg}");
                    panics += 1;
                }
            }
        }
        panics
    }

    /// A key whose `Clone` panics while the table grows: the growth is abandoned, the write that
    /// triggered it panics and inserts nothing, the map keeps every entry and stays writable, and
    /// every key and value, copies included, is dropped exactly once.
    #[test]
    fn a_panicking_clone_during_growth_leaves_the_map_whole_and_drops_every_copy_once() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            let n = n(config);
            h.fill(0..n);
            h.switch.panic_on_clone(3);
            // Enough inserts to double every shard's table at least once more.
            let panics = insert_counting_panics(&mut h, n..4 * n);
            if FLAT {
                assert!(panics > 0, "no growth cloned key 3, {config}");
            } else {
                assert_eq!(panics, 0, "TestMap ran Clone while growing, {config}");
            }
            h.assert_consistent("after clone panics during growth");
            // Disarmed, the same writes go through and grow the map.
            let n4 = 4 * n;
            assert_eq!(insert_counting_panics(&mut h, n4..n4 + n), 0);
            h.assert_consistent("growth after the clone panics");
            h.finish();
        });
    }

    /// The same for the rebuilds that do not grow: `shrink_to_fit` and `reserve` with a key whose
    /// `Clone` panics leave the map as it was.
    #[test]
    fn a_panicking_clone_during_shrink_or_reserve_changes_nothing() {
        with_map(|config, make| {
            let mut h = Harness::new(config, make);
            let n = n(config);
            h.fill(0..n);
            for id in 10..n {
                h.map.remove(&h.key(id));
                h.model.remove(&id);
            }
            h.switch.panic_on_clone(3);
            let shrink = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.map.shrink_to_fit()));
            assert_eq!(shrink.is_err(), FLAT, "shrink_to_fit, {config}");
            h.assert_consistent("clone panic in shrink_to_fit");
            h.switch.panic_on_clone(3);
            let reserve = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                h.map.reserve(64 * h.map.capacity())
            }));
            assert_eq!(reserve.is_err(), FLAT, "reserve, {config}");
            h.assert_consistent("clone panic in reserve");
            h.finish();
        });
    }

    /// A `Clone` panic during growth while the values' `Drop`s panic even during unwinding: nothing
    /// the abandoned rebuild made (its copies) may be dropped by the unwinding, which would abort the
    /// process. In a child process, because the broken behaviour is an abort.
    #[test]
    fn a_panicking_clone_during_growth_with_panicking_drops_never_aborts() {
        in_child_process(
            &format!("{MODULE}::a_panicking_clone_during_growth_with_panicking_drops_never_aborts"),
            || {
                for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
                    let tracker = Tracker::new();
                    let switch = PanicSwitch::new();
                    let map: TestMap<PanicKey, Tracked> =
                        TestMap::builder().shards(1).reclaim_mode(mode).build();
                    for id in 0..200 {
                        map.insert(switch.key(&tracker, id), tracker.always_panicking_value(id));
                    }
                    switch.panic_on_clone(150);
                    let mut panics = 0;
                    for id in 200..2_000 {
                        let (key, value) = (switch.key(&tracker, id), tracker.value(id));
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            drop(map.insert(key, value));
                        }))
                        .is_err()
                        {
                            panics += 1;
                        }
                    }
                    assert_eq!(panics > 0, FLAT, "{mode:?}");
                    switch.disarm();
                    assert_eq!(map.len(), 2_000 - panics, "{mode:?}");
                    for id in 0..200 {
                        assert_eq!(map.get(&switch.key(&tracker, id)).map(|v| v.id), Some(id));
                    }
                    // The abandoned copies of the panicking values were dropped by the reclaimer,
                    // which counts their panics.
                    assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
                    let expect_drop_panics = if FLAT { 1 } else { 0 };
                    assert!(
                        (map.memory_stats().drop_panics >= expect_drop_panics),
                        "{mode:?}: {:?}",
                        map.memory_stats()
                    );
                    let msg = expect_panic(move || drop(map));
                    assert!(msg.contains("panicked in Drop"), "{mode:?}: {msg}");
                    tracker.assert_no_double_drop();
                }
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// EpochMap only: values whose `Drop` writes back to their map. A `WritesBack` is not `Clone`, and
// a clone (which the flat map makes of every entry when it rebuilds a table) would write back
// again when the old copy is dropped, so these tests would count different writes; the flat map's
// `Clone` panics under the lock are covered by the flat-only tests above.

/// A value whose `Drop` writes to the map it was made for (while that map is alive): it puts a
/// plain value under `key`, a key the map already holds, and counts the write in `wrote`. Under a
/// shard lock that write is re-entrant and panics, and if the drop is part of an unwinding, the
/// process aborts; so these values prove that no user `Drop` runs under the lock.
struct WritesBack {
    value: Tracked,
    map: std::sync::Weak<WritesBackMap>,
    key: Option<PanicKey>,
    wrote: Arc<std::sync::atomic::AtomicUsize>,
}

type WritesBackMap = EpochMap<PanicKey, WritesBack, TestHasher>;

impl WritesBack {
    /// A value that writes nothing when dropped.
    fn inert(value: Tracked) -> Self {
        WritesBack {
            value,
            map: std::sync::Weak::new(),
            key: None,
            wrote: Arc::default(),
        }
    }
}

impl Drop for WritesBack {
    fn drop(&mut self) {
        if let (Some(map), Some(key)) = (self.map.upgrade(), self.key.take()) {
            let plain = WritesBack::inert(self.value.clone());
            drop(map.insert(key, plain));
            self.wrote.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// The map, its keys' switch and tracker, and a maker of values that write key 0 when dropped.
struct WritesBackHarness {
    map: Arc<WritesBackMap>,
    switch: PanicSwitch,
    tracker: Tracker,
    wrote: Arc<std::sync::atomic::AtomicUsize>,
}

impl WritesBackHarness {
    fn new(make: &dyn Fn() -> WritesBackMap, keys: u64) -> Self {
        let h = WritesBackHarness {
            map: Arc::new(make()),
            switch: PanicSwitch::new(),
            tracker: Tracker::new(),
            wrote: Arc::default(),
        };
        for id in 0..keys {
            h.map
                .insert(h.key(id), WritesBack::inert(h.tracker.value(id)));
        }
        h
    }

    fn key(&self, id: u64) -> PanicKey {
        self.switch.key(&self.tracker, id)
    }

    /// A value (payload `id`) whose drop writes payload `id` to key 0 of the map.
    fn writing_value(&self, id: u64) -> WritesBack {
        WritesBack {
            value: self.tracker.value(id),
            map: Arc::downgrade(&self.map),
            key: Some(self.key(0)),
            wrote: Arc::clone(&self.wrote),
        }
    }

    /// After the panic: the value's `Drop` ran once, outside the lock (its write to key 0 landed),
    /// every shard lock is free for this thread and another, and after the map's drop every key
    /// and value was dropped exactly once.
    #[track_caller]
    fn finish(self, payload: u64, config: Config) {
        self.switch.disarm();
        assert_eq!(
            self.wrote.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{config}"
        );
        assert_eq!(
            self.map.get(&self.key(0)).map(|v| v.value.id),
            Some(payload),
            "{config}"
        );
        let (map, key, value) = (
            Arc::clone(&self.map),
            self.key(u64::MAX - 1),
            WritesBack::inert(self.tracker.value(1)),
        );
        completes_within(
            Duration::from_secs(20),
            "a write from another thread",
            move || {
                map.insert(key.clone(), value);
                map.remove(&key);
                map.retain(|_, _| true);
            },
        );
        assert!(self.map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
        self.tracker.assert_no_double_drop();
        let WritesBackHarness { map, tracker, .. } = self;
        drop(Arc::try_unwrap(map).unwrap_or_else(|_| panic!("no other owner")));
        tracker.assert_all_dropped_once();
    }
}

/// `insert` (and `get_or_insert_with`, `compute`, `try_insert`, `get_or_try_insert_with`, which
/// share its growth path) owns the new key and value while growth runs `Hash` on the shard's
/// other keys. When that `Hash` panics, the key and value used to be dropped by the unwinding with
/// the lock held; a value whose `Drop` writes to its own map then aborted the process. Now they
/// are dropped after the lock is released, and the `Drop`'s write succeeds.
#[test]
fn a_value_dropped_by_a_hash_panic_during_growth_is_dropped_outside_the_lock() {
    in_child_process(
        "a_value_dropped_by_a_hash_panic_during_growth_is_dropped_outside_the_lock",
        || {
            with_map::<PanicKey, WritesBack>(|config, make| {
                let h = WritesBackHarness::new(make, config.scale(40) as u64);
                h.switch.panic_on_hash(3);
                let mut panicked = None;
                for id in 1_000..1_000 + config.scale(100_000) as u64 {
                    let (key, value) = (h.key(id), h.writing_value(id));
                    let map = Arc::clone(&h.map);
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        map.insert(key, value)
                    }));
                    if let Err(payload) = result {
                        let msg = common::panics::panic_message(&*payload);
                        assert!(msg.contains("Hash of key 3"), "{msg}, {config}");
                        panicked = Some(id);
                        break;
                    }
                }
                let id =
                    panicked.unwrap_or_else(|| panic!("some insert grows key 3's shard, {config}"));
                assert!(h.map.get(&h.key(id)).is_none(), "{config}");
                // The same through `get_or_insert_with` and `compute`.
                h.switch.panic_on_hash(3);
                let msg =
                    expect_panic(|| h.map.get_or_insert_with(h.key(id), || h.writing_value(id)));
                assert!(msg.contains("Hash of key 3"), "{msg}, {config}");
                let msg = expect_panic(|| {
                    h.map.compute(h.key(id), |_| {
                        epochmap::Operation::Insert(h.writing_value(id))
                    })
                });
                assert!(msg.contains("Hash of key 3"), "{msg}, {config}");
                assert_eq!(
                    h.wrote.load(std::sync::atomic::Ordering::SeqCst),
                    3,
                    "{config}"
                );
                h.wrote.store(1, std::sync::atomic::Ordering::SeqCst);
                h.finish(id, config);
            });
        },
    );
}

/// `update` builds the new value with the caller's closure, then clones the key for the new entry.
/// When `K::clone` panicked, the new value used to be dropped with the lock held (an abort if its
/// `Drop` writes to the map); now it is dropped after the lock is released.
#[test]
fn a_value_dropped_by_a_key_clone_panic_in_update_is_dropped_outside_the_lock() {
    in_child_process(
        "a_value_dropped_by_a_key_clone_panic_in_update_is_dropped_outside_the_lock",
        || {
            with_map::<PanicKey, WritesBack>(|config, make| {
                let h = WritesBackHarness::new(make, 10);
                h.switch.panic_on_clone(5);
                let msg = expect_panic(|| h.map.update(&h.key(5), |_| h.writing_value(500)));
                assert!(msg.contains("Clone of key 5"), "{msg}, {config}");
                assert_eq!(
                    h.map.get(&h.key(5)).map(|v| v.value.id),
                    Some(5),
                    "{config}"
                );
                h.finish(500, config);
            });
        },
    );
}

/// `compute_ref` makes the owned key (`Q::to_owned`, here `PanicKey::clone`) only when it
/// publishes the value the closure returned. When that conversion panicked, the value used to be
/// dropped with the lock held (an abort if its `Drop` writes to the map); now it is dropped after
/// the lock is released, for a replaced key and for an absent one.
#[test]
fn a_value_dropped_by_a_to_owned_panic_in_compute_ref_is_dropped_outside_the_lock() {
    in_child_process(
        "a_value_dropped_by_a_to_owned_panic_in_compute_ref_is_dropped_outside_the_lock",
        || {
            with_map::<PanicKey, WritesBack>(|config, make| {
                for (target, present) in [(5, true), (20, false)] {
                    let h = WritesBackHarness::new(make, 10);
                    h.switch.panic_on_clone(target);
                    let msg = expect_panic(|| {
                        h.map.compute_ref(&h.key(target), |_| {
                            epochmap::Operation::Insert(h.writing_value(500))
                        })
                    });
                    assert!(
                        msg.contains(&format!("Clone of key {target}")),
                        "{msg}, {config}"
                    );
                    assert_eq!(
                        h.map.get(&h.key(target)).map(|v| v.value.id),
                        present.then_some(target),
                        "{config}"
                    );
                    h.finish(500, config);
                }
            });
        },
    );
}
