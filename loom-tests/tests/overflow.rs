//! The overflow-count protocol: a key that overflowed past its full home bucket stays findable
//! while the home bucket's slots and counts change.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// Keys 0, 4, ..., 24 fill bucket 0 of a four-bucket table (the identity hasher puts key `k` in
/// bucket `k % 4`); key 28 overflows into bucket 1 and raises bucket 0's overflow count to 1. The
/// interleaving: while the reader probes for 28 (bucket 0: no match, count > 0, go on to bucket 1),
/// the writer overflows a second key past bucket 0 (count 2), removes it (count back to 1), and
/// removes key 0 from bucket 0 (a free slot in the home bucket). The reader finds 28 whatever it
/// sees of those stores; the key that came and went is found whole or not at all.
#[test]
fn an_overflowed_key_is_found_while_its_home_bucket_changes() {
    model(|| {
        let drops = Drops::new(9);
        let map = Arc::new(one_shard_map(6));
        assert_eq!(map.memory_stats().buckets, 4);
        for (id, k) in (0..=28).step_by(4).enumerate() {
            map.insert(k, Tracked::new(id, &drops));
        }

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                map.pin().insert(36, Tracked::new(8, &drops));
                assert_eq!(map.remove(&36).map(|r| r.check()), Some(8));
                assert_eq!(map.remove(&0).map(|r| r.check()), Some(0));
            })
        };
        assert_eq!(map.get(&28).map(|r| r.check()), Some(7));
        if let Some(found) = map.get(&36) {
            assert_eq!(found.check(), 8);
        }
        writer.join().unwrap();

        assert_eq!(map.get(&28).map(|r| r.check()), Some(7));
        assert!(map.get(&36).is_none() && map.get(&0).is_none());
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}
