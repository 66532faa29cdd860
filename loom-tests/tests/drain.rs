//! `drain` (swap the shard's table out, wait for its grace period, move the entries out) racing
//! writers and readers of the same shard.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// drain ∥ insert over a key the shard holds. The two serialise on the shard lock: either the
/// insert replaces the old value first (and returns it), and the drain yields the new one and
/// leaves the map empty; or the drain takes the old value, and the insert lands in the fresh table
/// and stays. Every value is handed out exactly once (by the insert, the drain or the map), each is
/// read whole by whoever ends up with it (the drain thread reading the writer's value needs the
/// lock's and the epoch's orderings), and each is dropped exactly once.
#[test]
fn drain_and_insert_into_one_shard_hand_out_every_value_exactly_once() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                map.pin()
                    .insert(1, Tracked::new(1, &drops))
                    .map(|old| old.check())
            })
        };
        let drained: Vec<usize> = map
            .drain()
            .map(|(k, v)| {
                assert_eq!(k, 1);
                v.check()
            })
            .collect();
        let replaced = writer.join().unwrap();

        match replaced {
            // insert, then drain: the drain took the new value; nothing is left.
            Some(0) => {
                assert_eq!(drained, [1]);
                assert!(map.is_empty());
            }
            // drain, then insert: the drain took the old value; the new one stays.
            None => {
                assert_eq!(drained, [0]);
                assert_eq!(map.get(&1).map(|r| r.check()), Some(1));
            }
            other => panic!("impossible: insert returned {other:?}"),
        }
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// drain ∥ get holding a `Ref`. The interleaving: the reader finds the entry in the old table and
/// holds it across the swap; the drain thread then asks for the entry, which must wait for the
/// grace period (driving the epoch and yielding meanwhile) and so cannot move the value out, and
/// drop it, until the reader has let go. With the wait skipped, the drain drops the value while
/// the reader still reads it and the model fails (see docs/testing.md, planted bugs).
#[test]
fn drain_never_moves_a_value_out_from_under_a_live_ref() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let drainer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let mut drained = 0;
                for (k, v) in map.drain() {
                    assert_eq!((k, v.check()), (1, 0));
                    drop(v); // dropped at once, so a premature move-out is seen by the reader
                    drained += 1;
                }
                assert!(map.get(&1).is_none(), "a read after drain sees nothing");
                drained
            })
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 0);
            thread::yield_now();
            assert_eq!(found.check(), 0, "moved out from under a live Ref");
        }
        assert_eq!(drainer.join().unwrap(), 1);
        assert_eq!(drops.dropped(0), 1);

        reclaim_all(&map);
        let stats = map.memory_stats();
        assert_eq!((stats.drain_bytes, stats.pending_bytes), (0, 0));
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// A `Drain` dropped without being consumed ∥ a reader holding a `Ref`: the rest goes to the
/// reclaimer as a full retire, which frees the value only after the reader's grace period, once.
#[test]
fn a_dropped_drain_frees_its_entries_only_after_the_readers_ref_is_gone() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let drainer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                drop(map.drain());
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 0);
            thread::yield_now();
            assert_eq!(found.check(), 0);
        }
        drainer.join().unwrap();

        reclaim_all(&map);
        assert_eq!(drops.dropped(0), 1);
        let stats = map.memory_stats();
        assert_eq!((stats.drain_bytes, stats.entries_reclaimed), (0, 1));
        drop(map);
        drops.assert_all_dropped_once();
    });
}
