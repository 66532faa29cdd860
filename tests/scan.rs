//! `Pinned::scan` and `ScanCursor`: a full scan returns every entry (exactly once when nothing
//! changes), every entry present throughout is returned across growth, shrink and arbitrary writes
//! between calls, defined results for `budget = 0`, foreign cursors and empty maps, colliding
//! keys, removal while pinned, `clear` during a scan, and the cursor's `u64` form.

mod common;

use std::collections::{HashMap, HashSet};

use common::{Rng, TestHasher, Tracked, Tracker};
use epochmap::{ReclaimMode, ScanCursor};

for_each_map! {
    /// Runs a scan to completion with `budget`, calling `between` after each call that returns a
    /// cursor; returns how often each key was returned and how many calls it took.
    fn full_scan<S: std::hash::BuildHasher>(
        map: &TestMap<u64, u64, S>,
        budget: usize,
        mut between: impl FnMut(usize),
    ) -> (HashMap<u64, usize>, usize) {
        let mut seen = HashMap::new();
        let mut cursor = ScanCursor::default();
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(calls < 10_000_000, "the scan does not end");
            let pinned = map.pin();
            let (found, next) = pinned.scan(cursor, budget);
            for (k, v) in found {
                assert_eq!(
                    *v,
                    value_of(*k),
                    "key {k} returned with a value never written for it"
                );
                *seen.entry(*k).or_insert(0) += 1;
            }
            drop(pinned);
            match next {
                Some(next) => cursor = next,
                None => return (seen, calls),
            }
            between(calls);
        }
    }

    fn value_of(k: u64) -> u64 {
        k ^ 0xabcd
    }

    #[test]
    fn a_full_scan_returns_every_entry_exactly_once_when_nothing_changes() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let len = config.scale(2000) as u64;
            for k in 0..len {
                map.insert(k, value_of(k));
            }
            for budget in [1, 3, 64, usize::MAX] {
                let (seen, _) = full_scan(&map, budget, |_| {});
                assert_eq!(seen.len() as u64, len, "{config} budget {budget}");
                assert!(
                    seen.values().all(|&c| c == 1),
                    "{config} budget {budget}: a key came twice"
                );
            }
        });
    }

    #[test]
    fn the_budget_counts_home_buckets_so_budget_one_takes_one_call_per_bucket() {
        for shards in [1, 4] {
            let map: TestMap<u64, u64> = TestMap::builder().shards(shards).build();
            for k in 0..5000 {
                map.insert(k, value_of(k));
            }
            let buckets = map.memory_stats().buckets;
            let (seen, calls) = full_scan(&map, 1, |_| {});
            assert_eq!(seen.len(), 5000);
            assert_eq!(calls, buckets, "{shards} shards");
            let (_, calls) = full_scan(&map, 10, |_| {});
            assert!(
                calls <= buckets / 10 + shards,
                "{shards} shards: {calls} calls"
            );
        }
    }

    #[test]
    fn budget_zero_visits_nothing_and_returns_the_cursor_unchanged() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            for k in 0..100 {
                map.insert(k, value_of(k));
            }
            let pinned = map.pin();
            assert_eq!(
                pinned.scan(ScanCursor::default(), 0),
                (vec![], Some(ScanCursor::default())),
                "{config}"
            );
            let (_, mid) = pinned.scan(ScanCursor::default(), 1);
            let mid = mid.expect("100 entries take more than one bucket");
            assert_eq!(pinned.scan(mid, 0), (vec![], Some(mid)), "{config}");
            let past = ScanCursor::from_u64((config.shards as u64) << 48);
            assert_eq!(pinned.scan(past, 0), (vec![], None), "{config}");
        });
    }

    #[test]
    fn a_cursor_for_a_shard_this_map_does_not_have_ends_the_scan() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            for k in 0..100 {
                map.insert(k, value_of(k));
            }
            let pinned = map.pin();
            for shard in [config.shards as u64, 65535] {
                for position in [0, 1 << 47, (1 << 48) - 1] {
                    let foreign = ScanCursor::from_u64(shard << 48 | position);
                    assert_eq!(pinned.scan(foreign, 100), (vec![], None), "{config}");
                }
            }
            // A cursor from another map with a shard index this map has is a position in it.
            let other: TestMap<u64, u64> = TestMap::builder().shards(1).build();
            for k in 0..1000 {
                other.insert(k, k);
            }
            let (_, from_other) = other.pin().scan(ScanCursor::default(), 7);
            let (found, next) = pinned.scan(from_other.unwrap(), usize::MAX);
            assert_eq!(
                next, None,
                "an unlimited budget finishes the scan, {config}"
            );
            let mut keys: Vec<u64> = found
                .iter()
                .map(|&(k, v)| {
                    assert_eq!(*v, value_of(*k), "an entry of this map, whole, {config}");
                    *k
                })
                .collect();
            keys.sort_unstable();
            let returned = keys.len();
            keys.dedup();
            assert_eq!(keys.len(), returned, "no entry twice, {config}");
            assert!(
                keys.iter().all(|&k| k < 100),
                "only this map's keys, {config}"
            );
        });
    }

    #[test]
    fn an_empty_map_finishes_in_one_call_whatever_its_shards() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            assert_eq!(
                map.pin().scan(ScanCursor::default(), 1),
                (vec![], None),
                "{config}"
            );
            // Grown, then emptied: the tables are big, but empty shards are skipped at no cost.
            for k in 0..config.scale(1000) as u64 {
                map.insert(k, k);
            }
            map.retain(|_, _| false);
            assert_eq!(
                map.pin().scan(ScanCursor::default(), 1),
                (vec![], None),
                "{config}"
            );
            map.insert(5, value_of(5));
            let (seen, _) = full_scan(&map, 1, |_| {});
            assert_eq!(seen, HashMap::from([(5, 1)]), "{config}");
        });
    }

    #[test]
    fn entries_present_throughout_are_returned_across_growth_between_calls() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let stable = config.scale(300) as u64;
            for k in 0..stable {
                map.insert(k, value_of(k));
            }
            let mut next_key = 1_000_000;
            let last_key = next_key + 8 * stable;
            let (seen, _) = full_scan(&map, 2, |call| {
                // Grow by inserts (up to 8x the stable keys, so the scan can finish), and by
                // `reserve` now and then.
                for _ in 0..config.scale(40) {
                    if next_key < last_key {
                        map.insert(next_key, value_of(next_key));
                        next_key += 1;
                    }
                }
                if call % 5 == 0 {
                    map.reserve(map.len() * 2);
                }
            });
            for k in 0..stable {
                assert!(
                    seen.contains_key(&k),
                    "{config}: key {k} present throughout was missed"
                );
            }
        });
    }

    #[test]
    fn entries_present_throughout_are_returned_across_shrink_between_calls() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let len = config.scale(4000) as u64;
            for k in 0..len {
                map.insert(k, value_of(k));
            }
            let mut doomed: Vec<u64> = (0..len).filter(|k| k % 16 != 0).collect();
            let (seen, _) = full_scan(&map, 3, |call| {
                for _ in 0..config.scale(400) {
                    if let Some(k) = doomed.pop() {
                        map.remove(&k);
                    }
                }
                if call % 2 == 0 {
                    map.shrink_to_fit();
                }
            });
            for k in (0..len).filter(|k| k % 16 == 0) {
                assert!(
                    seen.contains_key(&k),
                    "{config}: key {k} present throughout was missed"
                );
            }
        });
    }

    #[test]
    fn random_writes_between_calls_never_hide_an_entry_present_throughout() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let mut rng = Rng::new(config.seed(common::rng::seed(0x5ca9)));
            let keys = config.scale(2000) as u64;
            let stable: HashSet<u64> = (0..keys).filter(|k| k % 7 == 0).collect();
            for k in 0..keys {
                map.insert(k, value_of(k));
            }
            let (seen, _) = full_scan(&map, 1 + rng.below(8) as usize, |_| {
                for _ in 0..rng.below(40) {
                    let k = rng.below(keys * 2);
                    if stable.contains(&k) {
                        continue;
                    }
                    match rng.below(10) {
                        0..=4 => {
                            map.insert(k, value_of(k));
                        }
                        5..=7 => {
                            map.remove(&k);
                        }
                        8 => map.shrink_to_fit(),
                        _ => map.reserve(rng.below(keys) as usize),
                    }
                }
            });
            for k in &stable {
                assert!(
                    seen.contains_key(k),
                    "{config}: key {k} present throughout was missed"
                );
            }
        });
    }

    #[test]
    fn a_cursor_stored_as_u64_resumes_after_the_table_changed_size() {
        let map: TestMap<u64, u64> = TestMap::builder().shards(2).build();
        for k in 0..3000 {
            map.insert(k, value_of(k));
        }
        let mut seen = HashSet::new();
        let mut stored: u64 = ScanCursor::default().into();
        let mut round = 0u64;
        loop {
            round += 1;
            let pinned = map.pin();
            let (found, next) = pinned.scan(ScanCursor::from(stored), 5);
            seen.extend(found.iter().map(|(k, _)| **k));
            drop(pinned);
            let Some(next) = next else { break };
            assert_eq!(
                ScanCursor::from_u64(next.to_u64()),
                next,
                "exact for small tables"
            );
            stored = next.to_u64();
            // Alternate between a much larger and a shrunk table.
            if round % 2 == 0 {
                map.reserve(50_000);
            } else {
                map.shrink_to_fit();
            }
        }
        assert!((0..3000).all(|k| seen.contains(&k)));
    }

    #[test]
    fn keys_that_all_collide_terminate_and_come_back_exactly_once() {
        for shards in [1, 8] {
            let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
                .shards(shards)
                .hasher(TestHasher::colliding(0x1234_5678_9abc_def0))
                .build();
            for k in 0..400 {
                map.insert(k, value_of(k));
            }
            for budget in [1, 5, usize::MAX] {
                let (seen, _) = full_scan(&map, budget, |_| {});
                assert_eq!(seen.len(), 400, "{shards} shards, budget {budget}");
                assert!(seen.values().all(|&c| c == 1));
            }
        }
    }

    #[test]
    fn entries_that_overflowed_into_the_next_bucket_are_returned_once_with_their_home() {
        // Identity hash, one shard: a key's low bits are its home bucket. Eight keys home in bucket
        // 0 (one overflows into bucket 1), bucket 1 has two keys of its own, bucket 2 one.
        let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
            .shards(1)
            .hasher(TestHasher::Identity)
            .capacity(40)
            .build();
        let buckets = map.memory_stats().buckets as u64;
        assert!(buckets >= 8);
        let mut keys: Vec<u64> = (0..8).map(|i| i * buckets).collect();
        keys.extend([1, 1 + buckets, 2]);
        for &k in &keys {
            map.insert(k, value_of(k));
        }
        assert_eq!(map.memory_stats().buckets as u64, buckets, "no growth");
        for budget in [1, 2, 100] {
            let (seen, _) = full_scan(&map, budget, |_| {});
            assert_eq!(seen.len(), keys.len(), "budget {budget}");
            assert!(seen.values().all(|&c| c == 1), "budget {budget}: {seen:?}");
        }
        // Each home bucket's visit returns exactly its keys: scan home by home (budget 1, one shard;
        // the visit order is the reverse-binary order 0, buckets/2, ..., 1, ...).
        let mut cursor = ScanCursor::default();
        let mut per_visit = Vec::new();
        loop {
            let pinned = map.pin();
            let (found, next) = pinned.scan(cursor, 1);
            let mut found: Vec<u64> = found.iter().map(|(k, _)| **k).collect();
            found.sort_unstable();
            per_visit.push(found);
            drop(pinned);
            match next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(per_visit.len() as u64, buckets);
        assert_eq!(
            per_visit[0],
            (0..8).map(|i| i * buckets).collect::<Vec<_>>()
        );
        let home_one = (buckets / 2) as usize; // bucket 1 is visited at this position
        assert_eq!(per_visit[home_one], vec![1, 1 + buckets]);
    }

    #[test]
    fn removing_scanned_entries_while_pinned_keeps_their_references_readable() {
        let tracker = Tracker::new();
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let map: TestMap<u64, Tracked> = TestMap::builder().shards(4).reclaim_mode(mode).build();
            for k in 0..300 {
                map.insert(k, tracker.value(k));
            }
            let mut cursor = ScanCursor::default();
            let mut removed = 0;
            loop {
                let pinned = map.pin();
                let (found, next) = pinned.scan(cursor, 4);
                for (k, v) in &found {
                    if *k % 3 == 0 {
                        assert!(map
                            .remove_if(*k, |_, current| std::ptr::eq(current, *v))
                            .is_some());
                        removed += 1;
                    }
                }
                // Removed entries are not freed while `pinned` lives: their references still read.
                for (k, v) in &found {
                    assert_eq!(v.id(), **k);
                }
                drop(pinned);
                match next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            assert_eq!(removed, 100);
            assert_eq!(map.len(), 200);
            assert!((0..300).all(|k| map.contains_key(&k) == (k % 3 != 0)));
            map.clear();
            assert!(map.wait_for_reclamation(common::RECLAIM_TIMEOUT));
        }
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn a_clear_during_a_scan_breaks_nothing() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            for k in 0..config.scale(1000) as u64 {
                map.insert(k, value_of(k));
            }
            let late = 1_000_000..1_000_000 + config.scale(500) as u64;
            let (seen, _) = full_scan(&map, 4, |call| {
                if call == 3 {
                    map.clear();
                    for k in late.clone() {
                        map.insert(k, value_of(k));
                    }
                }
            });
            // Whatever it returned was in the map, with its value (checked by `full_scan`), and the
            // scan ended; a second scan sees exactly the new contents.
            assert!(!seen.is_empty(), "{config}");
            let (again, _) = full_scan(&map, 4, |_| {});
            assert_eq!(
                again.keys().copied().collect::<HashSet<_>>(),
                late.collect(),
                "{config}"
            );
        });
    }

    #[test]
    fn scan_cursor_is_a_plain_copyable_hashable_value() {
        fn plain<T: Copy + Clone + std::fmt::Debug + Default + Eq + std::hash::Hash + Send + Sync>() {}
        plain::<ScanCursor>();
        assert_eq!(ScanCursor::default().to_u64(), 0);
        assert_eq!(u64::from(ScanCursor::default()), 0);
        for v in [0, 1, 0xffff, 1 << 48, (7 << 48) | 12345, u64::MAX] {
            assert_eq!(ScanCursor::from_u64(v).to_u64(), v);
            assert_eq!(u64::from(ScanCursor::from(v)), v);
        }
        let set: HashSet<ScanCursor> = [1u64, 2, 1].into_iter().map(ScanCursor::from).collect();
        assert_eq!(set.len(), 2);
        assert!(format!("{:?}", ScanCursor::from_u64(3 << 48)).contains("shard: 3"));
    }
}
