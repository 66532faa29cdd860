//! `clear` (a full retire of the shard's table with its entries) racing readers and writers.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// clear ∥ get holding a `Ref`. The interleaving: the reader finds the entry in the old table,
/// the writer swaps in an empty table, retires the old one with its entries and drives
/// reclamation while the `Ref` is held. The value stays readable and is dropped exactly once, only
/// after the `Ref` is gone.
#[test]
fn clear_never_frees_a_value_under_a_live_ref() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.clear();
                assert!(
                    map.get(&1).is_none(),
                    "a read after clear returns sees nothing"
                );
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 0);
            thread::yield_now();
            assert_eq!(found.check(), 0);
        }
        writer.join().unwrap();

        reclaim_all(&map);
        assert_eq!(
            drops.dropped(0),
            1,
            "the cleared value is freed after the grace period"
        );
        let stats = map.memory_stats();
        assert_eq!((stats.tables_retired, stats.tables_reclaimed), (1, 1));
        assert_eq!(stats.entries_reclaimed, 1);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// clear ∥ insert of a key the map already holds. The two serialise on the shard lock: either the
/// insert replaces the old value (which waits in the shard's batch) and the clear then removes both,
/// or the clear empties the shard and the insert adds the key afresh. After both, the map holds
/// nothing or exactly the inserted key, and every value is dropped exactly once.
#[test]
fn clear_and_insert_leave_nothing_or_exactly_the_inserted_key() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let clearer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.clear())
        };
        let replaced = map
            .pin()
            .insert(1, Tracked::new(1, &drops))
            .map(|v| v.check());
        clearer.join().unwrap();

        match replaced {
            // insert, then clear: nothing left.
            Some(0) => {
                assert!(map.is_empty());
                assert!(map.get(&1).is_none());
            }
            // clear, then insert: exactly the inserted key.
            None => {
                assert_eq!(map.len(), 1);
                assert_eq!(map.get(&1).map(|r| r.check()), Some(1));
            }
            other => panic!("impossible: insert returned {other:?}"),
        }
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// A read ordered after `clear` returned never sees a cleared entry (moka#155: entries stayed
/// visible after `invalidate_all`). The interleaving: the clearing thread publishes "clear
/// returned" with a `Release` store; a reader on another thread that observes it (`Acquire`) and
/// then probes must load the fresh table, not the retired one, whatever else it has seen.
#[test]
fn a_read_ordered_after_clear_returned_never_sees_a_cleared_entry() {
    use loom::sync::atomic::{AtomicBool, Ordering};

    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));
        let cleared = Arc::new(AtomicBool::new(false));

        let clearer = {
            let (map, cleared) = (Arc::clone(&map), Arc::clone(&cleared));
            thread::spawn(move || {
                map.clear();
                cleared.store(true, Ordering::Release);
            })
        };
        let before = map.get(&1).map(|r| r.check());
        if cleared.load(Ordering::Acquire) {
            assert!(
                map.get(&1).is_none(),
                "saw a cleared entry after clear returned"
            );
        }
        assert!(before.is_none() || before == Some(0));
        clearer.join().unwrap();

        reclaim_all(&map);
        drops.assert_all_dropped_once();
    });
}
