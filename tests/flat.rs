//! What only `FlatEpochMap` promises, beyond the contract both maps share (the other test files
//! run that against both): its entries live in the table and are copied by `Clone` whenever a
//! table is rebuilt, so
//!
//! * a reader's `Ref` or `&V` is a snapshot that stays valid (and unchanged) until it is dropped,
//!   whatever the writers do meanwhile;
//! * a value that shares its state through `Clone` (an `Arc`) loses no update made through a
//!   snapshot, and every copy is dropped exactly once;
//! * a multi-word value is never read torn while writers replace, remove, grow and clear;
//! * removed entries, which keep their slots until their grace period, never make an insert fail,
//!   and the memory they hold comes back once readers unpin.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, Weak};
use std::thread;
use std::time::Duration;

use common::{drive_reclamation_until, in_child_process, Rng, RECLAIM_TIMEOUT};
use epochmap::{FlatEpochMap, ReclaimMode};

type Shared = Arc<Mutex<Vec<u8>>>;

/// The soundness test of the flat map: values are `Arc<Mutex<Vec<u8>>>`, so a copy made by a
/// rebuild shares its `Vec` with the original. A writer inserts keys (the tables double several
/// times) while readers find values, some through `get` (a `Ref`) and some through a `Pinned`
/// held across many lookups, and push a byte through the value they found. Every push must be
/// visible through the map's current value at the end, and once the readers are gone and
/// reclamation has run, each `Arc` is held by the map alone; after the map is dropped, by nobody.
#[test]
fn updates_through_a_shared_value_survive_growth_and_every_copy_is_dropped_once() {
    for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
        const KEYS: u64 = 20_000;
        const READERS: u64 = 3;
        let map: Arc<FlatEpochMap<u64, Shared>> =
            Arc::new(FlatEpochMap::builder().shards(2).reclaim_mode(mode).build());
        let inserted = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(READERS as usize + 1));
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (map, inserted, done, start) = (
                    Arc::clone(&map),
                    Arc::clone(&inserted),
                    Arc::clone(&done),
                    Arc::clone(&start),
                );
                thread::spawn(move || {
                    let mut rng = Rng::new(0xf1a7 + r);
                    let mut pushes: HashMap<u64, usize> = HashMap::new();
                    start.wait();
                    let mut round = 0u64;
                    while !done.load(Ordering::SeqCst) || round < 100 {
                        round += 1;
                        let upto = inserted.load(Ordering::SeqCst);
                        if upto == 0 {
                            continue;
                        }
                        if round % 2 == 0 {
                            // A `Ref`, held while pushing.
                            let k = rng.below(upto);
                            let found = map.get(&k).expect("an inserted key is present");
                            found.lock().unwrap().push(r as u8);
                            *pushes.entry(k).or_default() += 1;
                        } else {
                            // One pin held across many lookups, and so across growth.
                            let pinned = map.pin();
                            for _ in 0..50 {
                                let k = rng.below(upto);
                                let found = pinned.get(&k).expect("an inserted key is present");
                                found.lock().unwrap().push(r as u8);
                                *pushes.entry(k).or_default() += 1;
                            }
                        }
                    }
                    pushes
                })
            })
            .collect();
        start.wait();
        let mut weak: Vec<Weak<Mutex<Vec<u8>>>> = Vec::with_capacity(KEYS as usize);
        for k in 0..KEYS {
            let value: Shared = Arc::default();
            weak.push(Arc::downgrade(&value));
            map.insert(k, value);
            inserted.store(k + 1, Ordering::SeqCst);
        }
        assert!(
            map.memory_stats().tables_retired >= 8,
            "the tables grew several times"
        );
        done.store(true, Ordering::SeqCst);
        let mut pushes: HashMap<u64, usize> = HashMap::new();
        for reader in readers {
            for (k, n) in reader.join().unwrap() {
                *pushes.entry(k).or_default() += n;
            }
        }
        assert!(
            pushes.len() > 1_000,
            "the readers pushed to many keys, {mode:?}"
        );
        for k in 0..KEYS {
            let value = map.get(&k).expect("present");
            let len = value.lock().unwrap().len();
            assert_eq!(
                len,
                pushes.get(&k).copied().unwrap_or(0),
                "a push to key {k} was lost, {mode:?}"
            );
        }
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        for k in 0..KEYS {
            let value = map.get(&k).expect("present");
            assert_eq!(
                Arc::strong_count(&value),
                1,
                "key {k}: a copy outlived its grace period, {mode:?}"
            );
        }
        drop(Arc::try_unwrap(map).unwrap_or_else(|_| panic!("the readers are gone")));
        assert!(
            drive_reclamation_until(|| weak.iter().all(|w| w.strong_count() == 0)),
            "some value was never dropped, {mode:?}"
        );
    }
}

/// A `Ref` (and a `&V` from a `Pinned`) reads the value it found, unchanged, while the map
/// grows, replaces and removes that key and is cleared: a snapshot, valid until dropped.
#[test]
fn a_ref_keeps_reading_the_value_it_found_across_growth_replace_remove_and_clear() {
    for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
        let map: FlatEpochMap<u64, String> =
            FlatEpochMap::builder().shards(1).reclaim_mode(mode).build();
        map.insert(1, "one".to_string());
        map.insert(2, "two".to_string());
        let one = map.get(&1).unwrap();
        let pinned = map.pin();
        let two = pinned.get(&2).unwrap();
        let buckets = map.memory_stats().buckets;
        for k in 3..5_000 {
            map.insert(k, k.to_string());
        }
        assert!(map.memory_stats().buckets > buckets, "the table grew");
        assert_eq!((one.as_str(), two.as_str()), ("one", "two"), "after growth");
        let replaced = map.insert(1, "uno".to_string()).unwrap();
        map.insert(2, "dos".to_string());
        assert_eq!(
            (one.as_str(), two.as_str()),
            ("one", "two"),
            "after replace"
        );
        assert_eq!(replaced.as_str(), "one");
        assert_eq!(map.get(&1).unwrap().as_str(), "uno");
        let removed = map.remove(&1).unwrap();
        assert_eq!(
            (one.as_str(), removed.as_str()),
            ("one", "uno"),
            "after remove"
        );
        map.reserve(50_000);
        map.shrink_to_fit();
        map.clear();
        assert!(map.is_empty());
        assert_eq!(
            (
                one.as_str(),
                two.as_str(),
                replaced.as_str(),
                removed.as_str()
            ),
            ("one", "two", "one", "uno"),
            "after reserve, shrink and clear"
        );
        assert_eq!(one.key(), &1);
        drop((one, replaced, removed));
        drop(pinned);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
    }
}

/// A value of eight words, each naming its key and version: a torn read (words of two versions,
/// or of another key) would show as unequal words.
fn value(key: u64, version: u64) -> [u64; 8] {
    [key << 32 | (version & 0xffff_ffff); 8]
}

#[track_caller]
fn assert_whole(key: u64, v: &[u64; 8]) {
    assert!(
        v.iter().all(|w| *w == v[0]),
        "torn value of key {key}: {v:x?}"
    );
    assert_eq!(
        v[0] >> 32,
        key,
        "key {key} read another key's value: {v:x?}"
    );
}

/// Readers never see a torn multi-word value while writers replace, remove, insert (growing the
/// tables), reserve, shrink and clear. Five threads on a two-core machine, so readers are
/// preempted in the middle of reads.
#[test]
fn a_multi_word_value_is_never_read_torn_while_writers_replace_remove_grow_and_clear() {
    let budget = Duration::from_millis(1_500);
    for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
        let map: Arc<FlatEpochMap<u64, [u64; 8]>> =
            Arc::new(FlatEpochMap::builder().shards(2).reclaim_mode(mode).build());
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..3u64)
            .map(|r| {
                let (map, done, reads) = (Arc::clone(&map), Arc::clone(&done), Arc::clone(&reads));
                thread::spawn(move || {
                    let mut rng = Rng::new(0x7042 + r);
                    while !done.load(Ordering::SeqCst) {
                        let k = rng.below(2_000);
                        if let Some(v) = map.get(&k) {
                            assert_whole(k, &v);
                        }
                        if rng.below(500) == 0 {
                            for entry in map.iter().take(200) {
                                assert_whole(*entry.key(), entry.value());
                            }
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (map, done) = (Arc::clone(&map), Arc::clone(&done));
                thread::spawn(move || {
                    let mut rng = Rng::new(0x3417 + w);
                    let mut version = 0u64;
                    while !done.load(Ordering::SeqCst) {
                        version += 1;
                        let k = rng.below(2_000);
                        match rng.below(1_000) {
                            0 if w == 0 => map.clear(),
                            1 if w == 0 => map.shrink_to_fit(),
                            2 if w == 0 => map.reserve(4_000),
                            0..=299 => drop(map.remove(&k)),
                            _ => drop(map.insert(k, value(k, version))),
                        }
                    }
                })
            })
            .collect();
        thread::sleep(budget);
        done.store(true, Ordering::SeqCst);
        for t in writers.into_iter().chain(readers) {
            t.join().unwrap();
        }
        assert!(reads.load(Ordering::Relaxed) > 1_000, "{mode:?}");
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        for entry in map.iter() {
            assert_whole(*entry.key(), entry.value());
        }
    }
}

/// Removed entries keep their slots until their grace period, so a reader pinned for a long
/// time keeps every slot freed meanwhile reserved. A long churn of inserts and removals on a few
/// keys under such a pin must still succeed every time (the table makes room: a rebuild, or
/// growth), and once the pin is gone and reclamation has run, nothing is pending and the memory
/// is bounded: a shrink brings the table back to the size its few keys need.
#[test]
fn retired_slots_never_make_an_insert_fail_and_their_memory_comes_back_after_the_pin() {
    for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
        const KEYS: u64 = 16;
        let map: Arc<FlatEpochMap<u64, u64>> =
            Arc::new(FlatEpochMap::builder().shards(1).reclaim_mode(mode).build());
        for k in 0..KEYS {
            map.insert(k, k);
        }
        let fresh = map.memory_stats().table_bytes;
        let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let pinned = map.pin();
                let found = pinned.get(&0).unwrap();
                pinned_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                // What the pin found reads the same after all the churn.
                assert_eq!(*found, 0);
            })
        };
        pinned_rx.recv().unwrap();
        let churn = |rounds: u64, offset: u64| {
            for i in 0..rounds {
                let k = i % KEYS;
                assert!(map.remove(&k).is_some(), "key {k} vanished");
                assert!(
                    map.insert(k, offset + i).is_none(),
                    "key {k} was there twice"
                );
            }
            assert_eq!(map.len(), KEYS as usize);
        };
        churn(20_000, 0);
        let pinned_stats = map.memory_stats();
        assert!(
            pinned_stats.pending_entries > 0 || pinned_stats.pending_bytes > 0,
            "the pin held back what the churn retired: {pinned_stats:?}"
        );
        release_tx.send(()).unwrap();
        reader.join().unwrap();
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        let after = map.memory_stats();
        assert_eq!(
            (after.pending_bytes, after.pending_entries),
            (0, 0),
            "{mode:?}"
        );
        // Without a pin, the same churn runs in bounded memory: no more than the pinned peak.
        churn(20_000, 1 << 32);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        let unpinned = map.memory_stats();
        assert!(
            unpinned.table_bytes <= after.table_bytes.max(pinned_stats.table_bytes),
            "{mode:?}: churn without a pin grew the table: {unpinned:?} after {after:?}"
        );
        map.shrink_to_fit();
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        let shrunk = map.memory_stats();
        assert!(
            shrunk.table_bytes <= 2 * fresh,
            "{mode:?}: {shrunk:?}, fresh table {fresh} bytes"
        );
        assert_eq!(shrunk.pending_bytes, 0, "{mode:?}");
        for k in 0..KEYS {
            assert!(map.contains_key(&k));
        }
    }
}

/// A value that counts its copies and its drops.
struct Tracked {
    copies: Arc<AtomicU64>,
    drops: Arc<AtomicU64>,
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        self.copies.fetch_add(1, Ordering::Relaxed);
        Tracked {
            copies: Arc::clone(&self.copies),
            drops: Arc::clone(&self.drops),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Holds the reclaimer thread in its `Drop` until released (or a minute has passed), so a test
/// can see what waits for the reclaimer and what does not.
struct Stall {
    stalled: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl Drop for Stall {
    fn drop(&mut self) {
        if thread::current().name() != Some("epochmap-reclaim") {
            return;
        }
        self.stalled.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.release.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// In `Background` mode a retired slot goes back to writers as soon as its grace period ends,
/// on whichever thread collects it, and only its value's drop is left to the reclaimer. While
/// the reclaimer was busy (here: stalled in a `Drop`), a small table filled with retired slots
/// and was rebuilt at its size again and again; under load in a benchmark, 463-1,046 rebuilds
/// where `Inline` mode needed 13, at twice the time per write.
///
/// In a process of its own: the epoch is process-wide, and the other tests here hold pins (one
/// on purpose, across 20,000 writes) that keep every grace period from ending.
#[test]
fn in_background_mode_retired_slots_come_back_without_waiting_for_the_reclaimer() {
    in_child_process(
        "in_background_mode_retired_slots_come_back_without_waiting_for_the_reclaimer",
        small_table_churn_while_the_reclaimer_is_busy,
    );
}

fn small_table_churn_while_the_reclaimer_is_busy() {
    const LIVE: u64 = 100;
    const ROUNDS: u64 = 200;
    let stalled = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let other: FlatEpochMap<u64, Arc<Stall>> = FlatEpochMap::new();
    other.insert(
        0,
        Arc::new(Stall {
            stalled: Arc::clone(&stalled),
            release: Arc::clone(&release),
        }),
    );
    // A cleared table goes to the reclaimer once its grace period ends (pins move the epoch
    // on); the reclaimer stalls dropping the value. (Not `wait_for_reclamation`, which may drop
    // it on this thread instead.)
    other.clear();
    let deadline = std::time::Instant::now() + RECLAIM_TIMEOUT;
    while !stalled.load(Ordering::Acquire) {
        assert!(
            std::time::Instant::now() < deadline,
            "the reclaimer never dropped the stalling value"
        );
        assert!(other.get(&0).is_none());
        thread::sleep(Duration::from_micros(100));
    }

    let original = Tracked {
        copies: Arc::new(AtomicU64::new(0)),
        drops: Arc::new(AtomicU64::new(0)),
    };
    let map: FlatEpochMap<u64, Tracked> = FlatEpochMap::builder()
        .shards(1)
        .reclaim_mode(ReclaimMode::Background)
        .build();
    for k in 0..LIVE {
        map.insert(k, original.clone());
    }
    let before = map.memory_stats();
    for round in 1..=ROUNDS {
        for k in round * LIVE..(round + 1) * LIVE {
            map.insert(k, original.clone());
        }
        for k in round * LIVE..(round + 1) * LIVE {
            assert!(map.remove(&k).is_some());
        }
    }
    let after = map.memory_stats();
    assert_eq!(after.len, LIVE as usize);
    // The loop's 20,000 removals fill the shard's table (a few hundred slots) with retired
    // slots dozens of times over. Measured: 1 rebuild when each grace period gives them back,
    // 99 when they wait for the reclaimer.
    let rebuilds = after.tables_retired - before.tables_retired;
    release.store(true, Ordering::Release);
    assert!(
        rebuilds <= 10,
        "{rebuilds} rebuilds for {} removals",
        ROUNDS * LIVE
    );
    assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
    let stats = map.memory_stats();
    assert_eq!((stats.pending_bytes, stats.pending_entries), (0, 0));
    // Every copy but the map's and `original` was dropped, once.
    let copies = original.copies.load(Ordering::Relaxed);
    assert_eq!(original.drops.load(Ordering::Relaxed), copies - LIVE);
}
