//! `FlatEpochMap`: lock-free readers racing a shard whose entries are *copied* when it is rebuilt.
//!
//! The flat layout stores each entry in its table, so growth (and the rebuild that frees retired
//! slots) clones every entry into the new table; readers pinned before the swap may still read
//! the old copies, which are dropped with the old table after the grace period. These models
//! check that a reader never sees an old copy dropped under it, nor a key missing, and that every
//! copy is dropped exactly once. The entry cells are loom `UnsafeCell`s (`sync::SlotCell`), so a
//! drop not ordered after a reader's read fails the model as a data race.
#![cfg(epochmap_loom)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use epochmap::{FlatEpochMap, ReclaimMode};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, IdHash};

/// How many copies of each value are alive: `new` and `clone` count one up, `drop` one down, so
/// a copy dropped twice or never shows as a count below or above what the map holds.
#[derive(Debug)]
struct Copies(Vec<AtomicUsize>);

impl Copies {
    fn new(n: usize) -> std::sync::Arc<Copies> {
        std::sync::Arc::new(Copies((0..n).map(|_| AtomicUsize::new(0)).collect()))
    }

    fn alive(&self, id: usize) -> usize {
        self.0[id].load(SeqCst)
    }
}

/// A value that counts its live copies and checks, when read, that the copy is whole and alive.
#[derive(Debug)]
#[repr(C)]
struct Copy_ {
    canary: usize,
    id: usize,
    copies: std::sync::Arc<Copies>,
}

const ALIVE: usize = 0xA11CE;
const DEAD: usize = 0xDEAD;

impl Copy_ {
    fn new(id: usize, copies: &std::sync::Arc<Copies>) -> Copy_ {
        copies.0[id].fetch_add(1, SeqCst);
        Copy_ {
            canary: ALIVE,
            id,
            copies: std::sync::Arc::clone(copies),
        }
    }

    /// The value's id, after checking that this copy has not been dropped.
    fn check(&self) -> usize {
        // SAFETY: a live reference as far as the map's contract goes; volatile so the read is
        // not assumed unchanged.
        let canary = unsafe { std::ptr::read_volatile(&self.canary) };
        assert_eq!(canary, ALIVE, "a copy was dropped while a reader held it");
        self.id
    }
}

impl Clone for Copy_ {
    fn clone(&self) -> Self {
        Copy_::new(self.check(), &self.copies)
    }
}

impl Drop for Copy_ {
    fn drop(&mut self) {
        self.copies.0[self.id].fetch_sub(1, SeqCst);
        // SAFETY: writing our own field; volatile so the store is not elided as dead.
        unsafe { std::ptr::write_volatile(&mut self.canary, DEAD) };
    }
}

type Flat = FlatEpochMap<u64, Copy_, IdHash>;

/// One shard, inline reclamation: see [`one_shard_flat_in`].
fn one_shard_flat() -> Flat {
    one_shard_flat_in(ReclaimMode::Inline)
}

/// One shard in reclaim mode `mode`: under loom a fresh table is one bucket of seven slots,
/// whose load threshold is five entries.
fn one_shard_flat_in(mode: ReclaimMode) -> Flat {
    FlatEpochMap::builder()
        .shards(1)
        .hasher(IdHash)
        .reclaim_mode(mode)
        .build()
}

/// Keys 0, 1 and 2, then 1 and 2 removed: their two slots are retired, a full batch under loom
/// (which points into the table and holds it).
fn with_two_retired_slots(map: &Flat, copies: &std::sync::Arc<Copies>) {
    for k in 0..3 {
        map.insert(k, Copy_::new(k as usize, copies));
    }
    map.remove(&1);
    map.remove(&2);
}

fn reclaim_all(map: &Flat) {
    assert!(
        map.wait_for_reclamation(std::time::Duration::from_secs(1)),
        "everything retired is freed once no thread is pinned: {:?}",
        map.memory_stats()
    );
}

/// growth ∥ get. The writer's sixth insert clones the five entries into a two-bucket table,
/// publishes it and retires the old one with its copies, then reclaims; the reader holds a `Ref`
/// to key 1's old copy across all of it. The held copy stays alive until the `Ref` goes, every
/// key is found (in the old table or the new), and in the end each value has exactly the one
/// copy the map holds, then none.
#[test]
fn growth_copies_entries_while_readers_read_the_old_copies() {
    model(|| {
        let copies = Copies::new(6);
        let map = Arc::new(one_shard_flat());
        for k in 0..5 {
            map.insert(k, Copy_::new(k as usize, &copies));
        }
        let writer = {
            let (map, copies) = (Arc::clone(&map), copies.clone());
            thread::spawn(move || {
                map.insert(5, Copy_::new(5, &copies));
                assert_eq!(
                    map.memory_stats().buckets,
                    2,
                    "the sixth entry grew the table"
                );
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let held = map.get(&1).expect("present before growth");
        assert_eq!(held.check(), 1);
        assert_eq!(map.get(&4).map(|r| r.check()), Some(4));
        thread::yield_now();
        assert_eq!(held.check(), 1, "the old copy lives while its reader does");
        drop(held);
        writer.join().unwrap();

        reclaim_all(&map);
        for k in 0..6 {
            assert_eq!(map.get(&k).map(|r| r.check()), Some(k as usize));
            assert_eq!(
                copies.alive(k as usize),
                1,
                "value {k}: one copy, the map's"
            );
        }
        drop(map);
        for id in 0..6 {
            assert_eq!(copies.alive(id), 0, "value {id}: every copy dropped once");
        }
    });
}

/// rebuild at the same size ∥ get. Four removed entries stay reserved while this thread is
/// pinned; with one live entry the table is then at its threshold, so replacing that entry first
/// rebuilds the table at its size (which starts with no slot reserved), finds the key again there
/// and replaces it, while the reader looks the key up and holds what it found. The key is never
/// absent, the reader's copy outlives the rebuild and the replace, and every copy is dropped once.
#[test]
fn a_replace_into_a_table_full_of_retired_slots_rebuilds_it_first() {
    model(|| {
        let copies = Copies::new(6);
        let map = Arc::new(one_shard_flat());
        map.insert(0, Copy_::new(0, &copies));
        let pinned = map.pin();
        for k in 1..5 {
            map.insert(k, Copy_::new(k as usize, &copies));
            map.remove(&k);
        }
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let held = map.get(&0).expect("key 0 is never absent");
                let id = held.check();
                assert!(id == 0 || id == 5, "key 0 read value {id}");
                thread::yield_now();
                assert_eq!(held.check(), id);
            })
        };
        drop(map.insert(0, Copy_::new(5, &copies)));
        let stats = map.memory_stats();
        assert_eq!(stats.tables_retired, 1, "the replace rebuilt the table");
        assert_eq!(
            stats.buckets, 1,
            "at its size: retired slots do not grow it"
        );
        drop(pinned);
        reader.join().unwrap();
        reclaim_all(&map);
        assert_eq!(map.get(&0).map(|r| r.check()), Some(5));
        assert_eq!(map.len(), 1);
        drop(map);
        for id in 0..6 {
            assert_eq!(copies.alive(id), 0, "value {id}: every copy dropped once");
        }
    });
}

/// clear ∥ get, with a batch of retired slots outstanding. The two removes fill a batch (two
/// under loom) of retired slots, which points into the table and holds it; the clear then
/// retires the table itself while the reader looks key 0 up (and its pin may run ready jobs).
/// The table's copies are dropped by its job, the retired slots' by theirs, and whichever lets
/// go of the table last frees it.
#[test]
fn a_batch_of_retired_slots_holds_its_table_past_a_clear() {
    model(|| {
        let copies = Copies::new(3);
        let map = Arc::new(one_shard_flat());
        with_two_retired_slots(&map, &copies);
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                if let Some(held) = map.get(&0) {
                    assert_eq!(held.check(), 0);
                }
            })
        };
        map.clear();
        reader.join().unwrap();
        reclaim_all(&map);
        let stats = map.memory_stats();
        assert_eq!((stats.tables_retired, stats.tables_reclaimed), (1, 1));
        for id in 0..3 {
            assert_eq!(copies.alive(id), 0, "value {id}: every copy dropped once");
        }
    });
}

/// remove ∥ (get, then collect) ∥ insert, in `Background` mode, where a batch of retired slots
/// is freed by whichever thread collects it (under loom the reclaimer's part, the drops, runs
/// there too). The two removes hand a batch of two slots to the epoch; the reader looks key 0 up
/// and then drives reclamation, which may free the slots, moving their entries out, while the
/// writer inserts two keys that may take the same slots. A writer's entry is never written over
/// one still being moved out (the slot cells would race), every key is found, and every copy is
/// dropped once.
#[test]
fn a_batch_freed_by_the_collecting_thread_hands_its_slots_to_a_racing_writer() {
    model(|| {
        let copies = Copies::new(5);
        let map = Arc::new(one_shard_flat_in(ReclaimMode::Background));
        with_two_retired_slots(&map, &copies);
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                assert_eq!(map.get(&0).map(|r| r.check()), Some(0));
                reclaim_all(&map);
            })
        };
        for k in 3..5 {
            map.insert(k, Copy_::new(k as usize, &copies));
        }
        reader.join().unwrap();
        reclaim_all(&map);
        for k in [0, 3, 4] {
            assert_eq!(map.get(&k).map(|r| r.check()), Some(k as usize));
        }
        drop(map);
        for id in 0..5 {
            assert_eq!(copies.alive(id), 0, "value {id}: every copy dropped once");
        }
    });
}
