//! `EpochMap::drain`: every entry present before the call comes out exactly once, later inserts stay,
//! the iterator waits for the grace period (and says so instead of hanging), early drops go through
//! the reclaimer, memory statistics follow what the `Drain` holds. The concurrent stress test is
//! in `stress.rs`; the loom models in `loom-tests/tests/drain.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    completes_within, drive_reclamation_until, expect_panic, quiet_expected_panics, Config,
    TestHasher, Tracked, Tracker, EXPECTED_PANIC, RECLAIM_TIMEOUT,
};
use epochmap::{EpochMap, ReclaimMode, WouldBlock};

for_each_map! {
    type Map = TestMap<Tracked, Tracked, TestHasher>;

    fn n(config: Config) -> u64 {
        config.scale(2_000) as u64
    }

    fn fill(map: &Map, tracker: &Tracker, range: std::ops::Range<u64>) {
        for i in range {
            assert!(map
                .insert(tracker.value(i), tracker.value(i * 10))
                .is_none());
        }
    }

    /// The ids of what a drain yields, sorted, after checking each value belongs to its key.
    fn ids(drain: impl Iterator<Item = (Tracked, Tracked)>) -> Vec<u64> {
        let mut ids: Vec<u64> = drain
            .map(|(k, v)| {
                assert_eq!(v.id, k.id * 10, "a value came out with another key");
                k.id
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn drain_yields_every_entry_exactly_once_and_empties_the_map() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map: Map = make();
            fill(&map, &tracker, 0..n(config));
            let drain = map.drain();
            assert!(map.is_empty(), "{config}");
            assert_eq!(map.len(), 0, "{config}");
            assert_eq!(drain.len(), n(config) as usize, "{config}");
            assert_eq!(ids(drain), (0..n(config)).collect::<Vec<_>>(), "{config}");
            assert!(map.get(&tracker.value(1)).is_none(), "{config}");
            // The yielded pairs were dropped by `ids`; only the probe key above was made since.
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
            assert_eq!(tracker.live(), 0, "{config}");
            drop(map);
            tracker.assert_all_dropped_once();
        });
    }

    #[test]
    fn entries_inserted_after_the_drain_stay_in_the_map() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map: Map = make();
            let n = n(config);
            fill(&map, &tracker, 0..n);
            let drain = map.drain();
            // Before and while the drain is consumed: new keys, and keys the drain holds.
            fill(&map, &tracker, n..n + 10);
            for i in 0..5 {
                assert!(
                    map.insert(tracker.value(i), tracker.value(i * 10))
                        .is_none(),
                    "a drained key is absent from the map, {config}"
                );
            }
            assert_eq!(ids(drain), (0..n).collect::<Vec<_>>(), "{config}");
            let mut left: Vec<u64> = map.iter().map(|r| r.key().id).collect();
            left.sort_unstable();
            let expected: Vec<u64> = (0..5).chain(n..n + 10).collect();
            assert_eq!(left, expected, "{config}");
            drop(map);
            assert!(drive_reclamation_until(|| tracker.live() == 0));
            tracker.assert_all_dropped_once();
        });
    }

    #[test]
    fn removed_and_replaced_entries_waiting_in_the_batch_are_not_drained() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map: Map = make();
            fill(&map, &tracker, 0..100);
            // Fewer than a batch per shard, so they wait in the shards' batches at the drain.
            for i in 0..10 {
                assert_eq!(map.remove(&tracker.value(i)).map(|r| r.id), Some(i * 10));
            }
            for i in 10..20 {
                let old = map.insert(tracker.value(i), tracker.value(i * 10)).unwrap();
                assert_eq!(old.id, i * 10);
            }
            assert_eq!(ids(map.drain()), (10..100).collect::<Vec<_>>(), "{config}");
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
            let stats = map.memory_stats();
            assert_eq!((stats.pending_bytes, stats.drain_bytes), (0, 0), "{config}");
            assert_eq!(tracker.live(), 0, "{config}");
            drop(map);
            tracker.assert_all_dropped_once();
        });
    }

    #[test]
    fn the_drain_waits_for_a_ref_held_across_the_swap_and_says_so() {
        let map: TestMap<u64, String> = (0..100).map(|i| (i, i.to_string())).collect();
        let held = map.get(&7).unwrap();
        let mut drain = map.drain();
        assert!(
            !drain.is_ready(),
            "a reader pinned before the swap holds it"
        );
        assert_eq!(drain.try_next(), Err(WouldBlock));
        assert_eq!(
            drain.next_timeout(Duration::from_millis(20)),
            Err(WouldBlock)
        );
        assert_eq!(drain.len(), 100, "nothing was taken while blocked");
        assert_eq!(*held, "7", "the held value is untouched");
        drop(held);
        let first = drain
            .next_timeout(RECLAIM_TIMEOUT)
            .expect("no reader is left")
            .expect("an entry");
        assert!(drain.is_ready());
        let mut all: HashMap<u64, String> = drain.collect();
        all.insert(first.0, first.1);
        assert_eq!(all.len(), 100);
        assert!((0..100).all(|i| all[&i] == i.to_string()));
    }

    #[test]
    fn a_reader_on_another_thread_delays_the_drain_until_it_unpins() {
        let map = Arc::new(TestMap::<u64, u64>::new());
        map.insert(1, 10);
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let reader = {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                let r = map.get(&1).unwrap();
                pinned_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                *r
            })
        };
        pinned_rx.recv().unwrap();
        let drain = map.drain();
        assert!(!drain.is_ready());
        // Consumed on a third thread (a `Drain` is `Send`); it blocks until the reader lets go.
        let consumer = std::thread::spawn(move || drain.collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!consumer.is_finished(), "moved out from under a live Ref");
        release_tx.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), 10);
        let drained = completes_within(
            RECLAIM_TIMEOUT,
            "the drain after the reader left",
            move || consumer.join().unwrap(),
        );
        assert_eq!(drained, [(1, 10)]);
    }

    #[test]
    fn next_panics_instead_of_hanging_when_this_thread_is_pinned() {
        let map: TestMap<u64, u64> = (0..10).map(|i| (i, i)).collect();
        let held = map.get(&3).unwrap();
        let mut drain = map.drain();
        let message = expect_panic(|| drain.next());
        assert!(message.contains("this thread is pinned"), "{message}");
        drop(held);
        assert_eq!(drain.count(), 10, "the drain still works after the panic");
    }

    #[test]
    fn a_drain_of_an_empty_map_is_ready_at_once_and_shrinks_grown_tables() {
        let map: TestMap<u64, u64> = TestMap::builder().shards(4).build();
        let held = map.pin(); // would block any wait
        let mut drain = map.drain();
        assert!(drain.is_ready());
        assert_eq!(drain.next(), None);
        drop(held);

        for i in 0..10_000 {
            map.insert(i, i);
        }
        // Emptied without removals, which would shrink the tables themselves.
        map.clear_keep_capacity();
        let grown = map.memory_stats().table_bytes;
        assert_eq!(map.drain().count(), 0);
        let after = map.memory_stats();
        assert!(after.table_bytes < grown / 50, "{after:?}");
        assert_eq!(after.drain_bytes, 0);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
    }

    #[test]
    fn dropping_a_partly_consumed_drain_drops_the_rest_exactly_once() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map: Map = make();
            fill(&map, &tracker, 0..n(config));
            let mut drain = map.drain();
            let taken: Vec<_> = drain.by_ref().take(n(config) as usize / 3).collect();
            let retired_before = map.memory_stats().tables_retired;
            drop(drain);
            let stats = map.memory_stats();
            assert_eq!(stats.drain_bytes, 0, "{config}");
            assert!(
                stats.pending_bytes > 0,
                "the rest went to the reclaimer, {config}"
            );
            assert!(stats.tables_retired > retired_before, "{config}");
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
            // Only the pairs held in `taken` are alive.
            assert_eq!(tracker.live(), 2 * taken.len(), "{config}");
            drop(taken);
            drop(map);
            tracker.assert_all_dropped_once();
        });
    }

    #[test]
    fn a_drain_dropped_before_its_grace_period_frees_nothing_under_a_ref() {
        let tracker = Tracker::new();
        let map: TestMap<u64, Tracked> = TestMap::builder()
            .reclaim_mode(ReclaimMode::Inline)
            .build();
        for i in 0..50 {
            map.insert(i, tracker.value(i));
        }
        // The flat map's growth left old copies for the reclaimer: gone first, so that only the
        // map's values are alive below.
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
        let held = map.get(&5).unwrap();
        drop(map.drain());
        // The reclaimer may run now, but not for what `held` can see.
        assert!(!map.wait_for_reclamation(Duration::from_millis(50)));
        assert_eq!(held.id, 5);
        assert_eq!(tracker.live(), 50);
        drop(held);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
        assert_eq!(tracker.live(), 0);
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn a_panicking_drop_of_a_value_left_in_a_dropped_drain_is_counted() {
        quiet_expected_panics();
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let tracker = Tracker::new();
            // One shard, identity hash and room to spare: key k sits in bucket k, so the drain
            // yields keys in order and the panicking value (the last key) stays in the drain.
            let map: TestMap<u64, Tracked, TestHasher> = TestMap::builder()
                .shards(1)
                .capacity(1_000)
                .hasher(TestHasher::Identity)
                .reclaim_mode(mode)
                .build();
            for i in 0..20 {
                map.insert(i, tracker.value(i));
            }
            map.insert(20, tracker.panicking_value(20));
            let mut drain = map.drain();
            let kept: Vec<Tracked> = drain.by_ref().take(5).map(|(_, v)| v).collect();
            assert_eq!(
                kept.iter().map(|v| v.id).collect::<Vec<_>>(),
                [0, 1, 2, 3, 4]
            );
            let panics_before = map.memory_stats().drop_panics;
            drop(drain);
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
            let stats = map.memory_stats();
            assert_eq!(stats.drop_panics, panics_before + 1, "{mode:?}");
            assert_eq!(tracker.live(), kept.len(), "{mode:?}");
            drop(kept);
            tracker.assert_all_dropped_once();
        }
    }

    #[test]
    fn a_panicking_drop_of_a_yielded_value_unwinds_and_the_rest_is_reclaimed() {
        quiet_expected_panics();
        let tracker = Tracker::new();
        let map: TestMap<u64, Tracked> = TestMap::builder().shards(4).build();
        for i in 0..200 {
            let value = if i == 77 {
                tracker.panicking_value(i)
            } else {
                tracker.value(i)
            };
            map.insert(i, value);
        }
        let drain = map.drain();
        let message = expect_panic(|| {
            for (_, value) in drain {
                drop(value); // the panic unwinds through the loop and drops the drain
            }
        });
        assert!(message.contains(EXPECTED_PANIC), "{message}");
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
        assert_eq!(map.memory_stats().drain_bytes, 0);
        assert_eq!(tracker.live(), 0);
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn memory_stats_count_what_the_drain_holds_until_it_is_consumed() {
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let map: TestMap<u64, u64> = TestMap::builder().shards(8).reclaim_mode(mode).build();
            for i in 0..10_000 {
                map.insert(i, i);
            }
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
            let full = map.memory_stats();
            let mut drain = map.drain();
            let drained = map.memory_stats();
            // Bytes an entry holds outside the tables: none in the flat map, whose entries are
            // counted in the tables' bytes (so a yielded entry frees nothing until the drain ends).
            let entry = if FLAT {
                0
            } else {
                std::mem::size_of::<(u64, u64)>()
            };
            assert_eq!(drained.len, 0);
            assert_eq!(
                drained.drain_bytes,
                full.table_bytes + 10_000 * entry,
                "the old tables and their entries moved from the map's count to the drain's, {mode:?}"
            );
            assert_eq!(drained.pending_bytes, 0, "{mode:?}");
            assert_eq!(
                drained.total_bytes(),
                full.total_bytes() + drained.table_bytes,
                "the fresh tables are all that was added, {mode:?}"
            );
            drain.next().unwrap();
            assert_eq!(
                map.memory_stats().drain_bytes,
                drained.drain_bytes - entry,
                "{mode:?}"
            );
            assert_eq!(drain.by_ref().count(), 9_999);
            let done = map.memory_stats();
            assert_eq!((done.drain_bytes, done.pending_bytes), (0, 0), "{mode:?}");
            assert_eq!(
                done.slab_bytes, 0,
                "every slot went back to the slabs, {mode:?}"
            );
            // The flat map counts each drained table as retired once the drain lets go of it
            // (batches of retired slots may still hold it, and the last holder frees it:
            // `Drain::free_current`), so one per shard; nothing is left unfreed.
            let drained_tables = if FLAT { 8 } else { 0 };
            assert_eq!(
                done.tables_retired,
                full.tables_retired + drained_tables,
                "{mode:?}"
            );
            assert_eq!(done.tables_reclaimed, done.tables_retired, "{mode:?}");
            drop(drain);
            assert_eq!(
                map.memory_stats().tables_retired,
                full.tables_retired + drained_tables
            );
        }
    }

    #[test]
    fn a_drain_may_outlive_its_map_and_move_to_another_thread() {
        let tracker = Tracker::new();
        let map: TestMap<u64, Tracked> = TestMap::builder().shards(4).build();
        for i in 0..1_000 {
            map.insert(i, tracker.value(i));
        }
        let drain = map.drain();
        drop(map);
        let ids = std::thread::spawn(move || {
            let mut ids: Vec<u64> = drain
                .map(|(k, v)| {
                    assert_eq!(k, v.id);
                    k
                })
                .collect();
            ids.sort_unstable();
            ids
        })
        .join()
        .unwrap();
        assert_eq!(ids, (0..1_000).collect::<Vec<_>>());
        // The flat map's growth copied the values; the old copies go with their retired tables,
        // after their grace period, on the reclaimer's time (a CI run asserted at once and found
        // 504 of 2,320 copies not yet dropped).
        assert!(drive_reclamation_until(|| tracker.live() == 0));
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn a_partly_consumed_drain_that_outlives_its_map_still_frees_the_rest() {
        let tracker = Tracker::new();
        let map: TestMap<u64, Tracked> = TestMap::new();
        for i in 0..500 {
            map.insert(i, tracker.value(i));
        }
        let mut drain = map.drain();
        drop(map);
        assert_eq!(drain.by_ref().take(100).count(), 100);
        drop(drain);
        assert!(drive_reclamation_until(|| tracker.live() == 0));
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn big_and_zero_sized_entries_drain_too() {
        // Over 4 KiB: each entry is its own allocation rather than a slab slot.
        let big: TestMap<u64, [u8; 5000]> = (0..50).map(|i| (i, [i as u8; 5000])).collect();
        let mut out: Vec<(u64, [u8; 5000])> = big.drain().collect();
        out.sort_by_key(|(k, _)| *k);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, (k, v))| *k == i as u64 && v[4999] == i as u8));

        let units: TestMap<(), ()> = TestMap::new();
        units.insert((), ());
        assert_eq!(units.drain().collect::<Vec<_>>(), [((), ())]);
        assert_eq!(units.memory_stats().drain_bytes, 0);
    }

    /// `drain` from code that runs under one of the map's locks is a re-entrant write: it panics, and
    /// no shard's table has been swapped out by then, whichever shard's lock is held, so every entry
    /// stays in the map and a later drain takes them all.
    #[test]
    fn a_drain_from_under_a_lock_panics_before_taking_any_shard() {
        common::quiet_expected_panics();
        let map: TestMap<u64, u64> = TestMap::builder().shards(8).build();
        for k in 0..1000 {
            map.insert(k, k);
        }
        // Under the lock of keys spread over all 8 shards, not only the first one a drain visits.
        for held in 0..32 {
            let msg = common::expect_panic(|| {
                map.compute(held, |_| {
                    drop(map.drain());
                    epochmap::Operation::Abort
                })
            });
            assert!(msg.contains("re-entrant write"), "{msg}");
            assert_eq!(map.len(), 1000, "no shard was drained (lock of key {held})");
        }
        assert!((0..1000).all(|k| map.get(&k).map(|v| *v) == Some(k)));
        let drained: Vec<(u64, u64)> = map.drain().collect();
        assert_eq!(drained.len(), 1000);
    }

    /// `Duration::MAX` means "no deadline": `next_timeout` then waits for a reader on another thread
    /// as `next` would, and yields, instead of overflowing the deadline's `Instant`.
    #[test]
    fn next_timeout_of_duration_max_waits_without_a_deadline() {
        let map = Arc::new(TestMap::<u64, u64>::new());
        map.insert(1, 10);
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let reader = {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                let r = map.get(&1).unwrap();
                pinned_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                *r
            })
        };
        pinned_rx.recv().unwrap();
        let mut drain = map.drain();
        let first = completes_within(RECLAIM_TIMEOUT, "next_timeout(Duration::MAX)", move || {
            drain.next_timeout(Duration::MAX)
        });
        assert_eq!(first, Ok(Some((1, 10))), "no deadline, so never WouldBlock");
        assert_eq!(reader.join().unwrap(), 10);
    }

    /// With no deadline the wait could never end on a pinned thread: `next_timeout(Duration::MAX)`
    /// panics there as `next` does, instead of hanging.
    #[test]
    fn next_timeout_of_duration_max_panics_like_next_when_this_thread_is_pinned() {
        let map: TestMap<u64, u64> = (0..10).map(|i| (i, i)).collect();
        let held = map.get(&3).unwrap();
        let mut drain = map.drain();
        let message = expect_panic(|| drain.next_timeout(Duration::MAX));
        assert!(message.contains("this thread is pinned"), "{message}");
        drop(held);
        assert_eq!(drain.count(), 10);
    }
}

// EpochMap only: the values are atomics bumped through the `&V` that `get_or_insert_with`
// returns. In a FlatEpochMap a value moves (is cloned) when its table is rebuilt, and an increment
// made through the old copy is lost; and `AtomicU64` is not `Clone`.
#[test]
fn repeated_drains_under_concurrent_counting_lose_no_increment() {
    // The metrics pattern (examples/metrics.rs) in small: atomics in the values, bumped through
    // `get_or_insert_with` while another thread exports by `drain`.
    let map = Arc::new(EpochMap::<u64, AtomicU64>::with_capacity(64));
    let threads = 2;
    let per_thread = 20_000u64;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    map.get_or_insert_with((i * 7 + t) % 32, || AtomicU64::new(0))
                        .fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut exported = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        exported += map.drain().map(|(_, v)| v.into_inner()).sum::<u64>();
    }
    for w in workers {
        w.join().unwrap();
    }
    exported += map.drain().map(|(_, v)| v.into_inner()).sum::<u64>();
    assert_eq!(exported, threads * per_thread);
}
