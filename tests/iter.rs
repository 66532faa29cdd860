//! Iteration edges the bucket-at-a-time walk (`RawIter`: a whole bucket read into a buffer,
//! prefetching on large maps) must get right: every fill level of a bucket and holes left by
//! removals, iterators dropped in the middle of a bucket with their `Ref`s still held, and maps
//! large enough that the walk prefetches.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Rng, TestHasher, Tracked, Tracker, RECLAIM_TIMEOUT};
use epochmap::ReclaimMode;

for_each_map! {
    /// One shard, keys hashed to themselves: key `i * buckets + b` lives in bucket `b` (tag bits
    /// clear below 2^40, so small keys stay in shard 0 with one tag).
    fn placed<V: Clone>(capacity: usize) -> (TestMap<u64, V, TestHasher>, u64) {
        let map = TestMap::builder()
            .shards(1)
            .capacity(capacity)
            .reclaim_mode(ReclaimMode::Inline)
            .hasher(TestHasher::Identity)
            .build();
        let buckets = map.memory_stats().buckets as u64;
        (map, buckets)
    }

    fn sorted(mut keys: Vec<u64>) -> Vec<u64> {
        keys.sort_unstable();
        keys
    }

    #[test]
    fn buckets_at_every_fill_level_and_with_holes_are_walked_exactly() {
        let (map, buckets) = placed::<u64>(400);
        assert!(buckets >= 64, "{buckets} buckets");
        let mut model = HashMap::new();
        // Bucket b holds b % 8 keys (at most 7, so none overflows into its neighbour): every fill
        // level from empty to full, in every position of the table.
        for b in 0..buckets {
            for i in 0..(b % 8).min(7) {
                let k = i * buckets + b;
                map.insert(k, k * 3);
                model.insert(k, k * 3);
            }
        }
        let check = |model: &HashMap<u64, u64>, when: &str| {
            let want = sorted(model.keys().copied().collect());
            let refs: Vec<(u64, u64)> = map.iter().map(|r| (*r.key(), *r)).collect();
            assert_eq!(
                sorted(refs.iter().map(|p| p.0).collect()),
                want,
                "iter() {when}"
            );
            assert!(
                refs.iter().all(|&(k, v)| v == k * 3),
                "iter() values {when}"
            );
            let pinned = map.pin();
            let pairs: Vec<(u64, u64)> = pinned.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(
                sorted(pairs.iter().map(|p| p.0).collect()),
                want,
                "pin().iter() {when}"
            );
            assert!(
                pairs.iter().all(|&(k, v)| v == k * 3),
                "pin().iter() values {when}"
            );
            assert_eq!(
                sorted(map.keys().map(|k| *k).collect()),
                want,
                "keys() {when}"
            );
            assert_eq!(map.values().count(), want.len(), "values() {when}");
        };
        check(&model, "after filling");
        // Holes: remove every other key of each bucket, so full slots are no longer a prefix.
        for b in 0..buckets {
            for i in (0..(b % 8).min(7)).step_by(2) {
                let k = i * buckets + b;
                assert_eq!(map.remove(&k).map(|r| *r), Some(k * 3));
                model.remove(&k);
            }
        }
        check(&model, "after removing every other key of each bucket");
        // Refill some holes: new keys take the lowest free slots, between survivors.
        for b in (0..buckets).step_by(3) {
            let k = 7 * buckets + b;
            map.insert(k, k * 3);
            model.insert(k, k * 3);
        }
        check(&model, "after refilling holes");
    }

    #[test]
    fn refs_from_an_iterator_dropped_mid_bucket_stay_valid_and_hold_back_reclamation() {
        let tracker = Tracker::new();
        let (map, buckets) = placed::<Tracked>(20);
        // A full bucket 0 (seven keys) and a second bucket, so the iterator stops inside bucket 0
        // with entries still in its buffer.
        let keys: Vec<u64> = (0..7).map(|i| i * buckets).chain([1]).collect();
        for &k in &keys {
            map.insert(k, tracker.value(k));
        }
        let mut iter = map.iter();
        let held: Vec<_> = iter.by_ref().take(3).collect();
        drop(iter);
        let held_keys: Vec<u64> = held.iter().map(|r| *r.key()).collect();
        assert!(
            held_keys.iter().all(|k| k % buckets == 0),
            "the first three come from bucket 0: {held_keys:?}"
        );
        // Remove and replace everything, including the entries the `Ref`s point to.
        for &k in &keys {
            assert!(map.remove(&k).is_some());
        }
        for &k in &held_keys {
            map.insert(k, tracker.value(k + 1000));
        }
        // This thread is pinned by the `Ref`s, so nothing removed since can be freed yet.
        assert!(!map.wait_for_reclamation(Duration::from_millis(50)));
        assert_eq!(tracker.live(), keys.len() + held_keys.len());
        for (r, &k) in held.iter().zip(&held_keys) {
            assert_eq!(
                *r.key(),
                k,
                "a held Ref's key changed: its entry was freed and reused"
            );
            assert_eq!(r.id, k, "a held Ref's value changed");
        }
        drop(held);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
        assert_eq!(tracker.live(), held_keys.len());
        drop(map);
        assert!(common::drive_reclamation_until(|| tracker.live() == 0));
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn an_iterator_dropped_after_its_last_entry_or_before_its_first_leaks_nothing() {
        let tracker = Tracker::new();
        let (map, _) = placed::<Tracked>(100);
        for k in 0..50 {
            map.insert(k, tracker.value(k));
        }
        drop(map.iter());
        let mut iter = map.iter();
        assert_eq!(iter.by_ref().count(), 50);
        // Fused: an exhausted walk stays exhausted, also after new inserts.
        map.insert(50, tracker.value(50));
        assert!(iter.next().is_none());
        drop(iter);
        assert_eq!(map.len(), 51);
        drop(map);
        assert!(common::drive_reclamation_until(|| tracker.live() == 0));
        tracker.assert_all_dropped_once();
    }

    /// A map of at least 2^18 buckets in all, where the walk prefetches each next bucket's entries and
    /// lines ahead: one shard of 2^18 buckets, and 4 shards of 2^16, with entries spread thinly and in
    /// the last buckets (where the prefetch distance runs past the end of the table).
    #[test]
    fn a_map_large_enough_to_prefetch_yields_every_entry_exactly_once() {
        for shards in [1, 4] {
            let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
                .shards(shards)
                .capacity(1_000_000)
                .hasher(TestHasher::random())
                .build();
            let total = map.memory_stats().buckets;
            assert!(total >= 1 << 18, "{shards} shards: {total} buckets");
            let mut rng = Rng::new(common::rng::seed(0x17e2));
            let mut model = HashMap::new();
            while model.len() < 30_000 {
                let k = rng.next_u64();
                map.insert(k, k ^ 1);
                model.insert(k, k ^ 1);
            }
            let mut seen: Vec<u64> = map.iter().map(|r| *r.key()).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(
                seen.len(),
                model.len(),
                "{shards} shards: iter() missed or repeated"
            );
            let pinned = map.pin();
            let mut n = 0;
            for (k, v) in pinned.iter() {
                assert_eq!(model.get(k), Some(v), "{shards} shards");
                n += 1;
            }
            assert_eq!(n, model.len(), "{shards} shards: pin().iter()");
        }
        // The last buckets of a one-shard table: keys hashed to themselves, eight of them homed in
        // the last bucket, so the eighth wraps around into bucket 0.
        let (map, buckets) = placed::<u64>(1_000_000);
        assert_eq!(buckets, 1 << 18);
        let keys: Vec<u64> = (0..8)
            .map(|i| i * buckets + buckets - 1)
            .chain([3])
            .collect();
        for &k in &keys {
            map.insert(k, k);
        }
        assert_eq!(
            sorted(map.iter().map(|r| *r).collect()),
            sorted(keys.clone())
        );
        assert_eq!(
            sorted(map.pin().iter().map(|(k, _)| *k).collect()),
            sorted(keys)
        );
    }

    /// A key that is only ever replaced (never removed) is never missed by a walk racing the
    /// replaces. `EpochMap` replaces in the slot, so it yields the key exactly once; a flat
    /// replace may publish the new entry in a later bucket in walk order (never an earlier one),
    /// so the walk yields it at least once, and again each time a replace moved it past the walk,
    /// each time with one of its values.
    #[test]
    fn a_walk_racing_replaces_yields_every_key_at_least_once() {
        let most = if FLAT { u32::MAX } else { 1 };
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        const KEYS: u64 = 1_000;
        let map: Arc<TestMap<u64, u64>> = Arc::new(TestMap::builder().shards(1).build());
        for k in 0..KEYS {
            map.insert(k, k);
        }
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (map, done) = (Arc::clone(&map), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x5e11);
                while !done.load(Ordering::Relaxed) {
                    let k = rng.below(KEYS);
                    map.insert(k, k + KEYS * rng.below(1_000));
                }
            })
        };
        let start = std::time::Instant::now();
        let mut walks = 0;
        while walks < 20 || start.elapsed() < Duration::from_millis(500) {
            walks += 1;
            let mut seen = vec![0u32; KEYS as usize];
            for r in map.iter() {
                assert_eq!(*r % KEYS, *r.key(), "a value of another key");
                seen[*r.key() as usize] += 1;
            }
            let wrong: Vec<(usize, u32)> = seen
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == 0 || **n > most)
                .map(|(k, n)| (k, *n))
                .collect();
            assert!(wrong.is_empty(), "walk {walks}: (key, times yielded) {wrong:?}");
        }
        done.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
