//! Drop accounting: every key and value the map takes is dropped exactly once, whatever the path
//! out of the map (replace, remove, growth, shrink, retain, clear, into_iter, map drop), in every
//! configuration of `common::with_map`. Keys and values are both `Tracked`, from one tracker.

mod common;

use common::{drive_reclamation_until, Config, TestHasher, Tracked, Tracker, RECLAIM_TIMEOUT};

for_each_map! {
    type Map = TestMap<Tracked, Tracked, TestHasher>;

    /// Inserts keys `range` with values of the same id.
    fn fill(map: &Map, tracker: &Tracker, range: std::ops::Range<u64>) {
        for i in range {
            assert!(map.insert(tracker.value(i), tracker.value(i)).is_none());
        }
    }

    /// Waits for reclamation, then checks that exactly the map's keys and values are alive (every
    /// retired one is dropped, nothing twice).
    #[track_caller]
    fn assert_settled(map: &Map, tracker: &Tracker, config: Config) {
        assert!(
            map.wait_for_reclamation(RECLAIM_TIMEOUT),
            "reclamation stuck, {config}"
        );
        tracker.assert_no_double_drop();
        assert_eq!(
            tracker.live(),
            2 * map.len(),
            "live keys+values vs len, {config}"
        );
        assert_eq!(map.memory_stats().pending_bytes, 0, "{config}");
    }

    /// Drops the map and checks every key and value ever created was dropped exactly once.
    #[track_caller]
    fn assert_all_dropped_after(map: Map, tracker: &Tracker) {
        drop(map);
        tracker.assert_all_dropped_once();
    }

    fn n(config: Config) -> u64 {
        config.scale(3_000) as u64
    }

    #[test]
    fn replaced_keys_and_values_are_dropped_exactly_once() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            for i in 0..n(config) {
                let old = map
                    .insert(tracker.value(i), tracker.value(i + 1))
                    .expect("present");
                assert_eq!((old.key().id, old.id), (i, i));
            }
            assert_settled(&map, &tracker, config);
            for i in 0..n(config) {
                assert_eq!(map.get(&tracker.value(i)).unwrap().id, i + 1);
            }
            assert_all_dropped_after(map, &tracker);
        });
    }

    #[test]
    fn removed_entries_are_dropped_exactly_once() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            for i in (0..n(config)).step_by(2) {
                assert_eq!(map.remove(&tracker.value(i)).unwrap().id, i);
                assert!(map.remove(&tracker.value(i)).is_none());
            }
            for i in (1..n(config)).step_by(4) {
                assert!(map
                    .remove_if(&tracker.value(i), |_, v| v.id % 4 == 1)
                    .is_some());
            }
            assert_settled(&map, &tracker, config);
            assert_all_dropped_after(map, &tracker);
        });
    }

    #[test]
    fn growth_moves_entries_without_dropping_or_copying_them() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            assert!(
                map.memory_stats().tables_retired >= 3,
                "the map grew, {config}"
            );
            if FLAT {
                // The flat map copies every entry into the grown table and drops the old copies
                // after their grace period: copies were made (checked to be dropped exactly once by
                // `assert_settled` and `assert_all_dropped_after`), and no entry left the map.
                assert!(tracker.created() > 2 * n(config) as usize, "{config}");
                assert_eq!(map.len(), n(config) as usize, "{config}");
            } else {
                // Growth retires shells only: not a single key or value was dropped, even before
                // reclamation ran.
                assert_eq!(tracker.dropped(), 0, "{config}");
            }
            assert_settled(&map, &tracker, config);
            assert_all_dropped_after(map, &tracker);
        });
    }

    #[test]
    fn shrink_to_fit_keeps_entries_and_drops_nothing() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            for i in 10..n(config) {
                map.remove(&tracker.value(i));
            }
            assert_settled(&map, &tracker, config);
            let dropped = tracker.dropped();
            let bytes = map.memory_stats().table_bytes;
            map.shrink_to_fit();
            assert!(map.memory_stats().table_bytes < bytes, "{config}");
            // The flat map copies the entries into the smaller table, and the reclaimer may drop the
            // old copies at any time after: for it, `assert_settled` (exactly the map's entries
            // alive) and `assert_all_dropped_after` (each copy dropped once) are the check.
            if !FLAT {
                assert_eq!(
                    tracker.dropped(),
                    dropped,
                    "shrinking drops nothing, {config}"
                );
            }
            assert_settled(&map, &tracker, config);
            for i in 0..10 {
                assert_eq!(map.get(&tracker.value(i)).unwrap().id, i);
            }
            assert_all_dropped_after(map, &tracker);
        });
    }

    #[test]
    fn retain_drops_exactly_the_rejected_entries() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            let mut calls = 0;
            map.retain(|k, v| {
                calls += 1;
                assert_eq!(k.id, v.id);
                k.id % 3 == 0
            });
            assert_eq!(calls, n(config), "retain visits every entry once, {config}");
            assert_eq!(map.len() as u64, n(config).div_ceil(3), "{config}");
            assert_settled(&map, &tracker, config);
            assert_all_dropped_after(map, &tracker);
        });
    }

    #[test]
    fn clear_and_clear_keep_capacity_drop_every_entry_once() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            for round in 0..4 {
                fill(&map, &tracker, 0..n(config));
                // Some entries also sit in the removal batch when the table is cleared.
                for i in 0..5 {
                    map.remove(&tracker.value(i));
                }
                if round % 2 == 0 {
                    map.clear();
                } else {
                    map.clear_keep_capacity();
                }
                assert!(map.is_empty(), "{config}");
                assert_settled(&map, &tracker, config);
                assert_eq!(tracker.live(), 0, "{config}");
            }
            assert_all_dropped_after(map, &tracker);
        });
    }

    #[test]
    fn into_iter_hands_out_every_entry_once_and_drops_the_rest() {
        with_map(|config, make| {
            // Fully consumed: the iterator yields every pair; the test drops them.
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            map.remove(&tracker.value(0)); // one entry in the removal batch, never yielded
            let mut ids: Vec<u64> = map
                .into_iter()
                .map(|(k, v)| {
                    assert_eq!(k.id, v.id);
                    k.id
                })
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, (1..n(config)).collect::<Vec<_>>(), "{config}");
            assert!(drive_reclamation_until(|| tracker.live() == 0), "{config}");
            tracker.assert_all_dropped_once();

            // Partly consumed: the rest is dropped with the iterator.
            for take in [0, 1, n(config) as usize / 2] {
                let tracker = Tracker::new();
                let map = make();
                fill(&map, &tracker, 0..n(config));
                // The flat map's growth left the old copies in retired tables, dropped by the
                // reclaimer after their grace period, not with the map: let it finish first, so that
                // what is alive below is exactly what the iterator held or handed out.
                assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
                let mut iter = map.into_iter();
                let taken: Vec<_> = iter.by_ref().take(take).collect();
                assert_eq!(taken.len(), take);
                assert_eq!(iter.len(), n(config) as usize - take, "{config}");
                drop(iter);
                assert_eq!(tracker.live(), 2 * take, "{config}");
                drop(taken);
                tracker.assert_all_dropped_once();
            }
        });
    }

    #[test]
    fn dropping_the_map_drops_live_batched_and_retired_entries_once() {
        with_map(|config, make| {
            let tracker = Tracker::new();
            let map = make();
            fill(&map, &tracker, 0..n(config));
            // Removed entries: some handed to the epoch in full batches, some still in a batch.
            for i in 0..(n(config) / 3) {
                map.remove(&tracker.value(i));
            }
            map.insert(tracker.value(0), tracker.value(0));
            drop(map);
            // Live and batched entries die with the map; retired ones when the epoch allows.
            assert!(
                drive_reclamation_until(|| tracker.live() == 0),
                "{config}: {} live",
                tracker.live()
            );
            tracker.assert_all_dropped_once();
        });
    }

    #[test]
    fn a_map_of_heap_values_frees_everything_it_held() {
        // Strings and vectors under Miri-less conditions: at least the drop glue of real heap types
        // runs through every path once.
        with_map::<String, Vec<String>>(|config, make| {
            let map = make();
            for i in 0..config.scale(2_000) {
                map.insert(i.to_string(), vec![i.to_string(); i % 5]);
            }
            map.retain(|k, _| k.len() % 2 == 0);
            map.clear_keep_capacity();
            for i in 0..config.scale(500) {
                map.insert(i.to_string(), vec![i.to_string()]);
            }
            map.shrink_to_fit();
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
            assert_eq!(map.memory_stats().pending_bytes, 0, "{config}");
        });
    }

    /// Zero-sized keys and values with a `Drop` that has side effects. `M` keeps each test's counts
    /// apart.
    #[derive(PartialEq, Eq, Hash, Debug)]
    struct Zst<const M: usize>;

    /// A clone is one more instance to drop.
    impl<const M: usize> Clone for Zst<M> {
        fn clone(&self) -> Self {
            Self::new()
        }
    }

    static ZST_CREATED: [std::sync::atomic::AtomicUsize; 2] =
        [const { std::sync::atomic::AtomicUsize::new(0) }; 2];
    static ZST_DROPPED: [std::sync::atomic::AtomicUsize; 2] =
        [const { std::sync::atomic::AtomicUsize::new(0) }; 2];

    impl<const M: usize> Zst<M> {
        fn new() -> Self {
            ZST_CREATED[M].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Zst
        }

        fn live() -> usize {
            use std::sync::atomic::Ordering::SeqCst;
            ZST_CREATED[M].load(SeqCst) - ZST_DROPPED[M].load(SeqCst)
        }
    }

    impl<const M: usize> Drop for Zst<M> {
        fn drop(&mut self) {
            ZST_DROPPED[M].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn zero_sized_entries_are_waited_for<const M: usize>(mode: epochmap::ReclaimMode) {
        let map: TestMap<Zst<M>, Zst<M>> = TestMap::builder().reclaim_mode(mode).build();
        assert!(map.insert(Zst::new(), Zst::new()).is_none());
        assert!(map.insert(Zst::new(), Zst::new()).is_some());
        assert!(map.remove(&Zst::new()).is_some());
        map.insert(Zst::new(), Zst::new());
        // The replaced and the removed entry are retired: `wait_for_reclamation` must not report
        // success before their (side-effecting) drops ran, although they occupy no bytes.
        assert!(map.memory_stats().pending_bytes > 0, "{mode:?}");
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        assert_eq!(
            Zst::<M>::live(),
            2,
            "{mode:?}: only the live key and value remain"
        );
        drop(map);
        assert_eq!(Zst::<M>::live(), 0, "{mode:?}");
    }

    #[test]
    fn zero_sized_keys_and_values_with_drop_are_reclaimed_before_wait_returns() {
        zero_sized_entries_are_waited_for::<0>(epochmap::ReclaimMode::Inline);
        zero_sized_entries_are_waited_for::<1>(epochmap::ReclaimMode::Background);
    }

    /// Entries too big for the slab's chunks (over 4 KiB) are boxed one by one behind the same
    /// interface: every path out of the map still drops each key and value once and frees it.
    #[test]
    fn entries_too_large_for_the_slab_are_dropped_exactly_once_on_every_path() {
        type Big = (Tracked, [u8; 5000]);
        with_map(
            |config, make: &dyn Fn() -> TestMap<Tracked, Big, TestHasher>| {
                let tracker = Tracker::new();
                let big = |i: u64| (tracker.value(i), [i as u8; 5000]);
                let map = make();
                for i in 0..64 {
                    map.insert(tracker.value(i), big(i));
                }
                for i in 0..16 {
                    map.insert(tracker.value(i), big(i)); // replace
                }
                for i in 16..32 {
                    map.remove(&tracker.value(i));
                }
                assert!(map.get(&tracker.value(40)).is_some_and(|v| v.1[4999] == 40));
                map.clear();
                assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{config}");
                for i in 0..8 {
                    map.insert(tracker.value(i), big(i));
                }
                let taken: Vec<_> = map.into_iter().take(3).collect();
                assert_eq!(taken.len(), 3);
                drop(taken);
                assert!(drive_reclamation_until(|| tracker.live() == 0), "{config}");
                tracker.assert_all_dropped_once();
            },
        );
    }
}
