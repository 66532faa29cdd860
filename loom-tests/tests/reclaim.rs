//! Reclamation itself: retired tables, the per-shard batch of removed entries, and backpressure.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, IdHash, Map, Tracked};

use epochmap::{EpochMap, ReclaimMode};

/// Reclaiming a retired table ∥ a reader pinned before the retire that also writes to the table
/// being retired. The interleavings: the reader thread pins (a `Pinned` guard), borrows a value of
/// the old table and inserts a key that lands before or after the clear; the main thread clears
/// and drives reclamation while the reader is still pinned. Nothing is freed under the reader, and
/// the reclaimer, which trusts the retired table's summary and mark bits and never reads the
/// buckets they call empty, sees the bits of an insert made by another thread (a stale bit would
/// leak the entry, which the drop ledger reports).
#[test]
fn retired_table_is_not_freed_under_a_reader_pinned_before_the_retire() {
    model(|| {
        let drops = Drops::new(2);
        // Capacity 3 gives a two-bucket table: key 0 homes in bucket 0, key 1 in bucket 1.
        let map = Arc::new(one_shard_map(3));
        assert_eq!(map.memory_stats().buckets, 2);
        map.insert(0, Tracked::new(0, &drops));

        let reader = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                let pinned = map.pin();
                let held = pinned.get(&0);
                if let Some(value) = held {
                    assert_eq!(value.check(), 0);
                }
                assert!(pinned.insert(1, Tracked::new(1, &drops)).is_none());
                if let Some(value) = held {
                    // The table it came from may be cleared and retired by now: still alive.
                    assert_eq!(
                        value.check(),
                        0,
                        "freed under a reader pinned before the retire"
                    );
                }
                if let Some(value) = pinned.get(&1) {
                    assert_eq!(value.check(), 1);
                }
            })
        };
        map.clear_keep_capacity();
        let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
        reader.join().unwrap();

        reclaim_all(&map);
        assert_eq!(drops.dropped(0), 1);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// The per-shard batch of removed entries. The interleaving: `retain` removes two entries under
/// the lock, which fills the batch (two entries under loom) and hands it to the epoch, while a
/// reader holds a `Ref` to one of them. Nothing in the batch is freed under the reader; after the
/// grace period exactly the removed entries are freed, once each.
#[test]
fn a_full_batch_of_removed_entries_is_freed_only_after_the_grace_period() {
    model(|| {
        let drops = Drops::new(3);
        let map = Arc::new(one_shard_map(0));
        for k in 0..3 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.retain(|&k, _| k == 2);
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 1);
            thread::yield_now();
            assert_eq!(found.check(), 1);
        }
        writer.join().unwrap();

        reclaim_all(&map);
        assert_eq!(
            (drops.dropped(0), drops.dropped(1), drops.dropped(2)),
            (1, 1, 0)
        );
        assert_eq!(map.memory_stats().entries_reclaimed, 2);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// Two removers sharing one shard's batch. The interleaving: each remove pushes its entry into
/// the batch under the shard lock; whichever comes second fills the batch and retires it. Each
/// removed entry is freed exactly once, never lost between the two threads.
#[test]
fn removes_from_two_threads_share_one_batch_and_free_each_entry_once() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));
        map.insert(0, Tracked::new(0, &drops));
        map.insert(1, Tracked::new(1, &drops));

        let other = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.remove(&0).map(|r| r.check()))
        };
        assert_eq!(map.remove(&1).map(|r| r.check()), Some(1));
        assert_eq!(other.join().unwrap(), Some(0));

        assert!(map.is_empty());
        reclaim_all(&map);
        assert_eq!(map.memory_stats().entries_reclaimed, 2);
        drops.assert_all_dropped_once();
    });
}

fn eager_map() -> Map {
    EpochMap::builder()
        .shards(1)
        .hasher(IdHash)
        .reclaim_mode(ReclaimMode::Inline)
        .backpressure_bytes(0)
        .build()
}

/// Backpressure (`relieve`) ∥ a pinned reader. The interleaving: with a bound of 0 bytes every
/// `clear` tries to free what it retired before returning, while a reader that pinned before the
/// clear holds a `Ref`. The writer helps for a bounded number of rounds and returns (it never waits
/// for the reader), and frees nothing under it.
#[test]
fn backpressure_never_frees_under_a_pinned_reader_and_never_waits_for_it() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(eager_map());
        map.insert(1, Tracked::new(0, &drops));

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.clear())
        };
        if let Some(found) = map.get(&1) {
            assert_eq!(found.check(), 0);
            thread::yield_now();
            assert_eq!(found.check(), 0);
        }
        writer.join().unwrap();

        reclaim_all(&map);
        drops.assert_all_dropped_once();
    });
}

/// Iteration ∥ removal and reclamation. The interleaving: the iterator walks the shard's live table
/// (its `Ref`s each pin a nested guard) while the writer removes two entries, which fills the batch
/// and retires it, and then drives reclamation. Every yielded `Ref` stays readable after the
/// writer's reclamation had its chance; the key never removed is yielded exactly once; no key is
/// yielded twice.
#[test]
fn iteration_never_yields_a_freed_entry_while_another_thread_removes() {
    model(|| {
        let drops = Drops::new(3);
        let map = Arc::new(one_shard_map(0));
        for k in 0..3 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                assert!(map.remove(&1).is_some());
                assert!(map.remove(&2).is_some());
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let refs: Vec<_> = map.iter().collect();
        thread::yield_now();
        let mut seen: Vec<usize> = refs.iter().map(|r| r.check()).collect();
        drop(refs);
        writer.join().unwrap();

        seen.sort_unstable();
        let before = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), before, "no entry is yielded twice");
        assert!(seen.contains(&0), "the entry present throughout is yielded");
        reclaim_all(&map);
        assert_eq!(
            (drops.dropped(0), drops.dropped(1), drops.dropped(2)),
            (0, 1, 1)
        );
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// A value of its map whose `Drop` writes back to that map (through a `Weak`, so the map and its
/// values form no cycle): run on a thread that holds the map's lock, the write is re-entrant and
/// panics, which reclamation counts in `drop_panics` (the write is lost).
struct WritesBack {
    id: u64,
    map: std::sync::Weak<EpochMap<u64, WritesBack, IdHash>>,
}

impl Drop for WritesBack {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            map.insert(
                100 + self.id,
                WritesBack {
                    id: self.id,
                    map: std::sync::Weak::new(),
                },
            );
        }
    }
}

/// Reclamation ∥ code running under a shard lock. The interleaving: a remover thread fills A's
/// batch (two entries under loom) and retires it while the main thread writes to map B (both pin,
/// flush and advance the epoch); then the main thread, inside a closure that runs under A's lock,
/// waits for B's reclamation, which advances the epoch and runs every deferred free that is ready,
/// A's batch among them. A's drops must not run under A's lock (each writes to A: there it would
/// panic as a re-entrant write): they are owed and run when the main thread releases the lock, so
/// both write-backs land and nothing panics. The remover is joined before the closure: a retire
/// still under way would expire only after the closure's own pin, and loom would never see the
/// hazard (a third thread, a reader, made the model too large to finish in ten minutes). Planted
/// bug, caught: `run_or_owe` running jobs under a lock ("a drop ran under the lock", 2 panics).
#[test]
fn reclamation_never_drops_a_value_under_a_shard_lock() {
    model(|| {
        let a: std::sync::Arc<EpochMap<u64, WritesBack, IdHash>> = std::sync::Arc::new(
            EpochMap::builder()
                .shards(1)
                .hasher(IdHash)
                .reclaim_mode(ReclaimMode::Inline)
                .build(),
        );
        let b = one_shard_map(0);
        for id in 0..2 {
            let map = std::sync::Arc::downgrade(&a);
            a.insert(id, WritesBack { id, map });
        }

        let remover = {
            let a = std::sync::Arc::clone(&a);
            thread::spawn(move || {
                assert!(a.remove(&0).is_some());
                assert!(a.remove(&1).is_some());
            })
        };
        b.insert(1, Tracked::new(0, &Drops::new(1)));
        b.remove(&1);
        remover.join().unwrap();
        a.get_or_insert_with(10, || {
            let _ = b.wait_for_reclamation(std::time::Duration::from_secs(1));
            WritesBack {
                id: 10,
                map: std::sync::Weak::new(),
            }
        });

        assert!(a.wait_for_reclamation(std::time::Duration::from_secs(1)));
        reclaim_all(&b);
        assert_eq!(a.memory_stats().drop_panics, 0, "a drop ran under the lock");
        assert!(
            a.contains_key(&100) && a.contains_key(&101),
            "a write-back was lost"
        );
    });
}
