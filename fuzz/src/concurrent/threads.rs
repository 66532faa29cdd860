//! The concurrent run, for one layout (this file is compiled once per layout, see
//! `concurrent.rs`: `super::Map` is `EpochMap` or `FlatEpochMap`): two or three threads apply
//! their own operation sequences to one map, then the run checks global invariants.
//!
//! Values are [`Counted`]: each knows the key it was written for and counts its drops. During the
//! run every thread checks what it reads (a value belongs to the key it was found under; a `Ref`
//! it holds keeps reading the same value while others overwrite, remove and clear). Afterwards:
//! every `memory_stats` figure is in bounds while reclamation may still be running, `len` matches the iterated contents, every value present was written for its key, no value was
//! dropped twice and none present was dropped; then after `clear` and `wait_for_reclamation` every
//! value ever created has been dropped exactly once and nothing is pending.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use epochmap::ReclaimMode;

use super::{new_builder, Map};
use crate::{Counted, FuzzHasher, Ledger};

/// Operations per thread, at most.
const MAX_OPS: usize = 48;

#[derive(Debug, Arbitrary)]
struct Config {
    /// Threads: 2 or 3.
    three_threads: bool,
    /// Shards: `1 << (shards_log % 3)`, so 1 to 4.
    shards_log: u8,
    hasher: FuzzHasher,
    inline: bool,
    /// Keys are `raw & ((1 << (1 + key_bits % 6)) - 1)`: 2 to 64 distinct keys, so threads meet.
    key_bits: u8,
    /// Backpressure: 0 (every clear helps reclaim) or the default.
    eager_backpressure: bool,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Insert(u16, u32),
    InsertRange {
        start: u16,
        count: u8,
    },
    Get(u16),
    Remove(u16),
    RemoveIf(u16, bool),
    GetOrInsertWith(u16, u32),
    Update(u16, u32),
    RetainKeys {
        modulus: u8,
        residue: u8,
    },
    Clear,
    ClearKeepCapacity,
    Reserve(u8),
    ShrinkToFit,
    Iter,
    PinnedBatch(u16, u8),
    /// Holds a `Ref` to the key (at most one per thread) and checks it at every later step.
    Hold(u16),
    Release,
    Yield,
}

/// Runs one input on this layout's map: see the module docs.
pub(crate) fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return;
    };
    let threads = if config.three_threads { 3 } else { 2 };
    let mut programs: Vec<Vec<Op>> = (0..threads).map(|_| Vec::new()).collect();
    // Interleave the decoding so every thread gets operations from a short input.
    'decode: for _ in 0..MAX_OPS {
        for program in programs.iter_mut() {
            // `arbitrary` pads an exhausted input with zeros: stop when the bytes run out.
            if u.is_empty() {
                break 'decode;
            }
            match Op::arbitrary(&mut u) {
                Ok(op) => program.push(op),
                Err(_) => break 'decode,
            }
        }
    }
    let map: Map = new_builder()
        .shards(1 << (config.shards_log % 3))
        .hasher(config.hasher)
        .reclaim_mode(if config.inline {
            ReclaimMode::Inline
        } else {
            ReclaimMode::Background
        })
        .backpressure_bytes(if config.eager_backpressure {
            0
        } else {
            epochmap::DEFAULT_BACKPRESSURE_BYTES
        })
        .build();
    let mask = (1u16 << (1 + config.key_bits % 6)) - 1;
    let ledger = Ledger::new();
    let start = Barrier::new(threads);

    std::thread::scope(|s| {
        for (t, program) in programs.into_iter().enumerate() {
            let (map, ledger, start) = (&map, &ledger, &start);
            s.spawn(move || {
                start.wait();
                run_thread(map, ledger, t as u32, program, mask);
            });
        }
    });

    // The threads are done, but reclamation may still be running (on the reclaimer thread): a
    // snapshot now mixes moments, and each figure must still be sane. A byte counter that a
    // decrement reached before its increment read ~2^64 here (`regressions/concurrent/
    // concurrent-memory-stats-overflow`); with `-a` epochmap's own debug assertion catches that.
    assert_sane(&map.memory_stats(), usize::from(mask) + 1);

    // Quiescent now (apart from reclamation): the map's contents and `len` are exact.
    let mut live = HashSet::new();
    let mut keys = HashSet::new();
    for r in map.iter() {
        let (k, v) = r.pair();
        assert_eq!(
            v.key, **k,
            "value {} written for key {} found under {k}",
            v.id, v.key
        );
        assert!((v.id as usize) < ledger.created(), "value from nowhere");
        assert!(
            keys.insert(**k),
            "key {k} iterated twice in a quiescent map"
        );
        assert!(live.insert(v.id), "value {} present twice", v.id);
        assert_eq!(
            ledger.drops_of(v.id),
            0,
            "value {} present but dropped",
            v.id
        );
    }
    assert_eq!(map.len(), keys.len(), "len matches the contents");
    assert_eq!(map.memory_stats().len, keys.len());
    for k in &keys {
        assert!(map.contains_key(k), "iterated key {k} not found by get");
    }
    ledger.assert_no_double_drop();
    assert_eq!(map.memory_stats().drop_panics, 0);

    map.clear();
    assert!(map.is_empty());
    assert!(
        map.wait_for_reclamation(Duration::from_secs(30)),
        "reclamation did not finish with no Ref held: {:?}",
        map.memory_stats()
    );
    let stats = map.memory_stats();
    assert_sane(&stats, 0);
    assert_eq!(stats.pending_bytes, 0);
    assert_eq!(stats.tables_retired, stats.tables_reclaimed, "{stats:?}");
    ledger.assert_exactly(&HashSet::new());
}

/// Every figure of a snapshot is in bounds: at most `keys` entries, and no byte count anywhere
/// near what a counter wrapped below zero would read (these maps hold a few MiB at most).
fn assert_sane(stats: &epochmap::MemoryStats, keys: usize) {
    const SANE_BYTES: usize = 1 << 32;
    assert!(stats.len <= keys, "{stats:?}");
    for bytes in [
        stats.table_bytes,
        stats.entry_bytes,
        stats.slab_bytes,
        stats.pending_bytes,
        stats.drain_bytes,
        stats.allocated_bytes,
        stats.total_bytes(),
    ] {
        assert!(bytes < SANE_BYTES, "{stats:?}");
    }
}

fn run_thread(map: &Map, ledger: &Arc<Ledger>, t: u32, program: Vec<Op>, mask: u16) {
    let mut held = None;
    let check = |k: &u16, v: &Counted| {
        assert_eq!(
            v.key, *k,
            "value {} written for key {} read under {k}",
            v.id, v.key
        );
    };
    for op in program {
        match op {
            Op::Insert(k, p) => {
                let k = k & mask;
                if let Some(old) = map.insert(Box::new(k), ledger.make(k, p ^ t)) {
                    check(old.key(), &old);
                    assert_eq!(**old.key(), k);
                }
            }
            Op::InsertRange { start, count } => {
                for i in 0..u16::from(count % 32) {
                    let k = start.wrapping_add(i) & mask;
                    map.insert(Box::new(k), ledger.make(k, t));
                }
            }
            Op::Get(k) => {
                let k = k & mask;
                if let Some(r) = map.get(&k) {
                    check(r.key(), &r);
                    assert_eq!(**r.key(), k);
                }
            }
            Op::Remove(k) => {
                let k = k & mask;
                if let Some(r) = map.remove(&k) {
                    check(r.key(), &r);
                }
            }
            Op::RemoveIf(k, odd) => {
                let k = k & mask;
                let removed = map.remove_if(&k, |key, v| {
                    check(key, v);
                    (*v.payload % 2 == 1) == odd
                });
                if let Some(r) = removed {
                    check(r.key(), &r);
                    assert_eq!((*r.payload % 2 == 1), odd, "remove_if removed a non-match");
                }
            }
            Op::GetOrInsertWith(k, p) => {
                let k = k & mask;
                let r = map.get_or_insert_with(Box::new(k), || ledger.make(k, p));
                check(r.key(), &r);
            }
            Op::Update(k, delta) => {
                let k = k & mask;
                let new = map.update(&k, |v| {
                    assert_eq!(v.key, k);
                    ledger.make(k, v.payload.wrapping_add(delta))
                });
                if let Some(r) = new {
                    check(r.key(), &r);
                }
            }
            Op::RetainKeys { modulus, residue } => {
                let m = u16::from(modulus % 8) + 1;
                let r = u16::from(residue) % m;
                map.retain(|k, v| {
                    check(k, v);
                    **k % m != r
                });
            }
            Op::Clear => map.clear(),
            Op::ClearKeepCapacity => map.clear_keep_capacity(),
            Op::Reserve(n) => map.reserve(usize::from(n)),
            Op::ShrinkToFit => map.shrink_to_fit(),
            Op::Iter => {
                for r in map.iter() {
                    check(r.key(), &r);
                }
            }
            Op::PinnedBatch(start, count) => {
                let pinned = map.pin();
                for i in 0..u16::from(count % 16) {
                    let k = start.wrapping_add(i) & mask;
                    if let Some((key, v)) = pinned.get_key_value(&k) {
                        check(key, v);
                    }
                    if i % 3 == 0 {
                        pinned.insert(Box::new(k), ledger.make(k, t));
                    } else if i % 3 == 1 {
                        pinned.remove(&k);
                    }
                }
            }
            Op::Hold(k) => {
                let k = k & mask;
                if held.is_none() {
                    held = map.get(&k).map(|r| {
                        let seen = (r.id, *r.payload);
                        (r, seen)
                    });
                }
            }
            Op::Release => held = None,
            Op::Yield => std::thread::yield_now(),
        }
        if let Some((r, (id, payload))) = &held {
            check(r.key(), r);
            assert_eq!((r.id, *r.payload), (*id, *payload), "a held Ref changed");
            assert_eq!(
                ledger.drops_of(*id),
                0,
                "value {id} dropped while a Ref holds it"
            );
        }
    }
}
