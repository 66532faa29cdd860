//! Lock-free readers racing single-key writers: insert, replace, remove, get_or_insert_with.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// insert ∥ get of the same key. The interleaving: the reader probes while the writer stores the
/// slot pointer and then the control word. The reader must see no entry or the whole value (its
/// payload load would fail the model if the entry's construction were not ordered before it).
///
/// Writers in these models build their values after pinning (`map.pin().insert(..)`): under loom,
/// crossbeam's pin contains a `SeqCst` fence (its stand-in for a compiler fence), which would make
/// even a `Relaxed` publication carry a value built before the pin. Building after the pin is also
/// what the real entry is: `insert` boxes it after pinning (and before taking the lock).
#[test]
fn get_sees_nothing_or_the_whole_inserted_value() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                assert!(map.pin().insert(1, Tracked::new(0, &drops)).is_none());
            })
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 0);
        }
        writer.join().unwrap();

        assert_eq!(map.get(&1).map(|r| r.check()), Some(0));
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// insert over an existing key ∥ get. The interleaving: the reader takes a `Ref` to the old entry,
/// then the writer swaps in the new one, retires the old one and drives reclamation while the `Ref`
/// is still held. The reader sees the old or the new value, and the old one is freed only after the
/// reader drops its `Ref`.
#[test]
fn replaced_value_is_freed_only_after_the_readers_ref_is_dropped() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                {
                    let pinned = map.pin();
                    let old = pinned.insert(1, Tracked::new(1, &drops));
                    assert_eq!(old.expect("key was present").check(), 0);
                }
                // Reclamation racing the reader: it may only free the old value once the reader
                // has unpinned, so under loom it may well return `false` here.
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let seen = {
            let found = map.get(&1).expect("the key is always present");
            let id = found.check();
            thread::yield_now();
            // Still alive and whole after the writer had a chance to reclaim.
            assert_eq!(found.check(), id);
            id
        };
        assert!(seen == 0 || seen == 1);
        writer.join().unwrap();

        reclaim_all(&map);
        assert_eq!(
            drops.dropped(0),
            1,
            "the replaced value is freed after the grace period"
        );
        assert_eq!(drops.dropped(1), 0, "the live value is not");
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// remove ∥ get of the same key. The interleaving: the reader finds the entry, the writer unlinks
/// it and retires it while the reader's `Ref` is live. The reader sees the value whole or nothing.
#[test]
fn removed_value_stays_readable_under_a_ref_and_is_freed_once() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let removed = map.remove(&1).expect("only this thread removes");
                assert_eq!(removed.check(), 0);
                drop(removed);
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 0);
            thread::yield_now();
            assert_eq!(found.check(), 0);
        }
        writer.join().unwrap();

        assert!(map.get(&1).is_none());
        reclaim_all(&map);
        drops.assert_all_dropped_once();
    });
}

/// remove ∥ insert of the same key. The two writers serialise on the shard lock; whichever order
/// they take, their return values and the final map agree on it, and every value is dropped once.
#[test]
fn remove_and_insert_of_one_key_agree_on_their_order() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let remover = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.remove(&1).map(|r| r.check()))
        };
        let replaced = map
            .pin()
            .insert(1, Tracked::new(1, &drops))
            .map(|v| v.check());
        let removed = remover.join().unwrap();

        match (removed, replaced) {
            // remove first: it took the old value; the insert found the key absent.
            (Some(0), None) => assert_eq!(map.get(&1).map(|r| r.check()), Some(1)),
            // insert first: it replaced the old value; the remove took the new one.
            (Some(1), Some(0)) => assert!(map.get(&1).is_none()),
            other => panic!("impossible outcome (removed, replaced) = {other:?}"),
        }
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// get_or_insert_with from two threads. The interleaving: both miss on the lock-free probe, then
/// serialise on the shard lock. Exactly one closure runs and its value wins for both callers; the
/// loser's closure never runs, so it makes no value that would need dropping.
#[test]
fn get_or_insert_with_runs_exactly_one_closure() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));

        let other = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                map.get_or_insert_with(1, || Tracked::new(1, &drops))
                    .check()
            })
        };
        let mine = map
            .get_or_insert_with(1, || Tracked::new(0, &drops))
            .check();
        let theirs = other.join().unwrap();

        assert_eq!(mine, theirs, "both callers see the one value that won");
        assert_eq!(drops.made(0) + drops.made(1), 1, "exactly one closure ran");
        assert_eq!(drops.dropped(mine), 0);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// `compute` from two threads on one key, each replacing the value it sees. The interleavings:
/// the two closures serialise on the shard lock; each caller's `Compute::Updated` holds the old
/// entry (under the operation's own guard) and the new one (under a nested pin) while the other
/// thread replaces the new one again and drives reclamation. No update is lost (exactly one
/// closure saw the initial value, the other saw the first one's value), every `Ref` stays readable,
/// and each replaced value is freed exactly once.
#[test]
fn compute_from_two_threads_loses_no_update_and_frees_nothing_under_its_refs() {
    use epochmap::{Compute, Operation};

    fn bump(map: &loom_tests::Map, id: usize, drops: &std::sync::Arc<Drops>) -> (usize, usize) {
        match map.compute(1, |current| {
            assert!(current.is_some(), "the key is never removed");
            Operation::Insert(Tracked::new(id, drops))
        }) {
            Compute::Updated { old, new } => {
                let seen = (old.check(), new.check());
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
                assert_eq!((old.check(), new.check()), seen, "freed under a live Ref");
                seen
            }
            other => panic!("expected an update, got {other:?}"),
        }
    }

    model(|| {
        let drops = Drops::new(3);
        let map = Arc::new(one_shard_map(0));
        map.insert(1, Tracked::new(0, &drops));

        let other = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || bump(&map, 2, &drops))
        };
        let mine = bump(&map, 1, &drops);
        let theirs = other.join().unwrap();

        // The later closure saw the earlier one's value: (0 -> a) then (a -> b).
        let (first, second) = if mine.0 == 0 {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        assert_eq!(first.0, 0);
        assert_eq!(second.0, first.1, "an update was lost");
        assert_eq!(map.get(&1).map(|r| r.check()), Some(second.1));
        reclaim_all(&map);
        assert_eq!(drops.dropped(0) + drops.dropped(first.1), 2);
        drop(map);
        drops.assert_all_dropped_once();
    });
}
