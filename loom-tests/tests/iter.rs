//! The iterator's bucket-at-a-time walk (`Table::load_bucket` into `RawIter`'s buffer) racing
//! writers of the bucket it reads.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// iteration ∥ replace + insert + remove in the one bucket being walked. The interleaving: the
/// iterator reads the bucket's control word and then its slots into its buffer while the writer
/// replaces key 1 (a new entry published by its slot pointer alone: the control word does not
/// change), inserts key 3 into a free slot and removes key 2 (which fills the shard's batch and
/// retires both unlinked entries), then drives reclamation. The `Ref`s are collected, the iterator
/// dropped, and only then are the values read: each read must be ordered after the value's
/// construction (the slot's `Acquire` load is what orders a replacement, since the control word
/// carries nothing new), nothing may be freed under a `Ref` that outlived its iterator, key 1
/// (present throughout) is yielded exactly once, as its old or its new value, and no key twice.
#[test]
fn a_walked_bucket_yields_whole_values_once_and_its_refs_outlive_the_iterator() {
    model(|| {
        let drops = Drops::new(4);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));
        map.insert(2, Tracked::new(1, &drops));

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                {
                    let pinned = map.pin();
                    assert!(pinned.insert(1, Tracked::new(2, &drops)).is_some());
                    assert!(pinned.insert(3, Tracked::new(3, &drops)).is_none());
                }
                assert!(map.remove(&2).is_some());
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let refs: Vec<_> = map.iter().collect();
        thread::yield_now();
        let mut keys: Vec<u64> = refs.iter().map(|r| *r.key()).collect();
        let ids: Vec<usize> = refs.iter().map(|r| r.check()).collect();
        drop(refs);
        writer.join().unwrap();

        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), before, "no key is yielded twice: {ids:?}");
        assert_eq!(
            ids.iter().filter(|&&id| id == 0 || id == 2).count(),
            1,
            "key 1, present throughout, is yielded exactly once: {ids:?}"
        );
        reclaim_all(&map);
        assert_eq!((drops.dropped(0), drops.dropped(1)), (1, 1));
        drop(map);
        drops.assert_all_dropped_once();
    });
}
