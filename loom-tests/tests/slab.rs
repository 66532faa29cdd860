//! The entry slab: slots handed out under the shard lock, returned by reclamation on other
//! threads, and a slab that outlives its map while retired entries still wait for their grace
//! period. (Under loom a shard refills its slot cache two slots at a time and releasers return
//! two at a time, so these small models cross the slab mutex many times.)
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// Removal's reclamation returning slots ∥ inserts taking slots from the same slab. The
/// interleavings: one thread removes two entries (a full batch under loom) and drives their
/// reclamation, which returns their slots under the slab mutex; the other inserts two new entries,
/// which refills the shard's slot cache under the same mutex, possibly with the slots just
/// returned. No slot is handed out twice (every live value reads back as itself), and every value
/// is dropped exactly once.
#[test]
fn slots_returned_by_reclamation_are_reused_by_concurrent_inserts_without_aliasing() {
    model(|| {
        let drops = Drops::new(6);
        let map = Arc::new(one_shard_map(0));
        for k in 0..4 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }

        let remover = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                assert_eq!(map.remove(&0).map(|old| old.check()), Some(0));
                assert_eq!(map.remove(&1).map(|old| old.check()), Some(1));
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        assert!(map.insert(4, Tracked::new(4, &drops)).is_none());
        assert!(map.insert(5, Tracked::new(5, &drops)).is_none());
        remover.join().unwrap();

        for k in 2..6 {
            assert_eq!(map.get(&k).map(|v| v.check()), Some(k as usize));
        }
        reclaim_all(&map);
        assert_eq!((drops.dropped(0), drops.dropped(1)), (1, 1));
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// A slab outlives its map. The interleavings: another thread pins (through a second map) while
/// this one removes two entries, retiring them as one batch whose job holds the slab, and then drops
/// the map. Whether the batch's grace period ends before or after the drop, the entries are
/// dropped once, after the drop if need be, and the slab is freed with the last of them (loom
/// reports a leaked `Arc` otherwise).
#[test]
fn entries_retired_before_the_map_is_dropped_are_freed_into_the_slab_afterwards() {
    model(|| {
        let drops = Drops::new(3);
        let map = one_shard_map(0);
        map.insert(0, Tracked::new(0, &drops));
        map.insert(1, Tracked::new(1, &drops));
        let other = Arc::new(one_shard_map(0));

        let pinner = {
            let other = Arc::clone(&other);
            thread::spawn(move || {
                let pinned = other.pin();
                assert!(pinned.get(&9).is_none());
            })
        };
        assert_eq!(map.remove(&0).map(|old| old.check()), Some(0));
        assert_eq!(map.remove(&1).map(|old| old.check()), Some(1));
        drop(map);
        pinner.join().unwrap();

        // Drive the epoch through the other map: retire something there too and wait for it,
        // which runs the older batch's deferred job first (or already has).
        other.insert(2, Tracked::new(2, &drops));
        other.remove(&2);
        reclaim_all(&other);
        drop(other);
        drops.assert_all_dropped_once();
    });
}
