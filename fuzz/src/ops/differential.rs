//! The differential run, for one layout (this file is compiled once per layout, see `ops.rs`:
//! `super::Map` is `EpochMap` or `FlatEpochMap`): one thread applies an operation sequence
//! (including single-flight loads, `_with_hash` calls with right and wrong hashes, and
//! borrowed-key writes) to the map and to `std::collections::HashMap`, comparing every result,
//! and at the end the whole contents. `drain` is compared with taking the model's contents.
//!
//! Keys are boxed `u16`s and values boxed `u32`s, so AddressSanitizer catches a read of a freed
//! key or value. Tiny shard counts, a weak-hasher variant and a small key space (from the input)
//! reach collisions, overflow chains across buckets, growth, shrinking and clears of full tables.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use arbitrary::{Arbitrary, Unstructured};
use epochmap::{Compute, Operation, ReclaimMode, Ref, ScanCursor, WouldBlock};

use super::{new_builder, Map};
use crate::FuzzHasher;

/// Most `Ref`s held at once (each pins the epoch; holding them exercises retirement under a pin).
const MAX_HELD: usize = 8;

/// How a run builds its map.
#[derive(Debug, Arbitrary)]
struct Config {
    /// Shards: `1 << (shards_log % 4)`, so 1 to 8.
    shards_log: u8,
    /// Initial capacity: `capacity % 64`.
    capacity: u8,
    hasher: FuzzHasher,
    inline: bool,
    /// Keys are `raw & ((1 << (3 + key_bits % 10)) - 1)`: 8 to 4096 distinct keys.
    key_bits: u8,
}

/// How a read is performed.
#[derive(Debug, Arbitrary, Clone, Copy)]
enum ReadVia {
    Get,
    GetCloned,
    With,
    ContainsKey,
    Pinned,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Insert(u16, u32),
    /// Inserts keys `start..start + count` with value `value + i`.
    InsertRange {
        start: u16,
        count: u8,
        value: u32,
    },
    PinnedInsert(u16, u32),
    Get(u16, ReadVia),
    Remove(u16),
    PinnedRemove(u16),
    /// Removes the key if its value is even (`parity == false`) or odd.
    RemoveIf(u16, bool),
    GetOrInsertWith(u16, u32),
    PinnedGetOrInsertWith(u16, u32),
    Update(u16, u32),
    /// Keeps keys with `key % (modulus + 1) != residue`.
    RetainKeys {
        modulus: u8,
        residue: u8,
    },
    /// Keeps values below `bound`.
    RetainValues(u32),
    Clear,
    ClearKeepCapacity,
    Reserve(u8),
    ShrinkToFit,
    Iter,
    Len,
    CloneAndCompare,
    /// Looks the key up and keeps the `Ref` (checked after every later operation).
    Hold(u16),
    /// Drops the oldest held `Ref`.
    Release,
    /// `get_or_load` (or `try_get_or_load` failing when `fail`): the loader runs iff absent.
    GetOrLoad(u16, u32, bool),
    /// `get_or_load_async`, run to completion on this thread.
    GetOrLoadAsync(u16, u32),
    /// An async load polled once and dropped (cancelled): it inserts nothing, leaves the key
    /// loadable, and a following `get_or_load` still runs its loader iff the key is absent.
    CancelledLoad(u16, u32),
    /// A `_with_hash` call, with the key's `hash_key` or a wrong hash (`right ^ wrong`, 0 = right).
    WithHash(u16, u32, HashOp, u64),
    /// `compute_ref` with a borrowed key.
    ComputeRef(u16, u32, ComputeChoice),
    /// `try_insert_ref` with a borrowed key.
    TryInsertRef(u16, u32),
    /// `drain`, then takes `take` entries (all for `None`) and drops the rest; with `Ref`s held
    /// (this thread pinned before the swap) only checks that the drain says it would wait.
    Drain {
        take: Option<u8>,
    },
    /// `Pinned::sample(n, seed)`: `min(n, len)` distinct entries of the model, with its values.
    Sample(u8, u64),
    /// One call of a scan kept across operations (started if none is running), with budget
    /// `1 + budget % 16` and the cursor stored as a `u64` in between; when it completes, every
    /// key present since it started must have been returned.
    ScanStep(u8),
    /// A whole scan at budget `budget` (0 first checks that budget 0 returns the cursor): every
    /// key of the model exactly once, with its value.
    FullScan(u8),
}

/// A scan in progress across operations ([`Op::ScanStep`]).
struct ScanState {
    cursor: u64,
    seen: HashSet<u16>,
    /// Keys present at every step since the scan started.
    present: HashSet<u16>,
}

/// Which `_with_hash` call [`Op::WithHash`] makes.
#[derive(Debug, Arbitrary, Clone, Copy)]
enum HashOp {
    Get,
    Insert,
    Remove,
    GetOrLoad,
}

/// What the [`Op::ComputeRef`] closure returns.
#[derive(Debug, Arbitrary, Clone, Copy)]
enum ComputeChoice {
    Insert,
    Remove,
    Abort,
}

/// A held `Ref` with the key and value it read when taken.
type Held<'m> = (Ref<'m, Box<u16>, Box<u32>>, u16, u32);

/// Runs one input on this layout's map: see the module docs.
pub(crate) fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return;
    };
    let mode = if config.inline {
        ReclaimMode::Inline
    } else {
        ReclaimMode::Background
    };
    let map: Map = new_builder()
        .shards(1 << (config.shards_log % 4))
        .capacity(usize::from(config.capacity % 64))
        .hasher(config.hasher)
        .reclaim_mode(mode)
        .build();
    let mask = (1u16 << (3 + config.key_bits % 10)) - 1;
    let mut model: HashMap<u16, u32> = HashMap::new();
    let mut held: Vec<Held<'_>> = Vec::new();
    let mut scan: Option<ScanState> = None;

    // `arbitrary` pads an exhausted input with zeros, so stop when the bytes run out.
    while let (false, Ok(op)) = (u.is_empty(), Op::arbitrary(&mut u)) {
        if let Op::ScanStep(budget) = op {
            scan_step(&map, &model, &mut scan, budget);
        } else {
            apply(&map, &mut model, &mut held, op, mask);
        }
        if let Some(state) = &mut scan {
            state.present.retain(|k| model.contains_key(k));
        }
        assert_eq!(map.len(), model.len(), "len");
        assert_eq!(map.is_empty(), model.is_empty(), "is_empty");
        for (r, k, v) in &held {
            assert_eq!((**r.key(), **r.value()), (*k, *v), "a held Ref changed");
        }
    }

    assert_same_contents(&map, &model);
    drop(held);
    let mut drained: Vec<(u16, u32)> = map.into_iter().map(|(k, v)| (*k, *v)).collect();
    drained.sort_unstable();
    let mut expected: Vec<(u16, u32)> = model.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(drained, expected, "into_iter");
}

fn apply<'m>(
    map: &'m Map,
    model: &mut HashMap<u16, u32>,
    held: &mut Vec<Held<'m>>,
    op: Op,
    mask: u16,
) {
    match op {
        Op::Insert(k, v) => {
            let k = k & mask;
            let old = map.insert(Box::new(k), Box::new(v));
            let old = old.map(|r| {
                assert_eq!(**r.key(), k, "insert returned another key's entry");
                **r
            });
            assert_eq!(old, model.insert(k, v), "insert({k}, {v})");
        }
        Op::InsertRange {
            start,
            count,
            value,
        } => {
            for i in 0..u16::from(count) {
                let k = start.wrapping_add(i) & mask;
                let v = value.wrapping_add(u32::from(i));
                let old = map.insert(Box::new(k), Box::new(v)).map(|r| **r);
                assert_eq!(old, model.insert(k, v), "insert({k}, {v}) in a range");
            }
        }
        Op::PinnedInsert(k, v) => {
            let k = k & mask;
            let pinned = map.pin();
            let old = pinned.insert(Box::new(k), Box::new(v)).map(|v| **v);
            assert_eq!(old, model.insert(k, v), "Pinned::insert({k}, {v})");
            assert_eq!(
                pinned.get(&k).map(|v| **v),
                Some(v),
                "Pinned::get after insert"
            );
        }
        Op::Get(k, via) => {
            let k = k & mask;
            let want = model.get(&k).copied();
            let got = match via {
                ReadVia::Get => map.get(&k).map(|r| {
                    assert_eq!(**r.key(), k, "get returned another key's entry");
                    **r
                }),
                ReadVia::GetCloned => map.get_cloned(&k).map(|v| *v),
                ReadVia::With => map.with(&k, |v| **v),
                // Presence only: the value the model has, if the map says the key is there.
                ReadVia::ContainsKey => map.contains_key(&k).then_some(want.unwrap_or(u32::MAX)),
                ReadVia::Pinned => {
                    let pinned = map.pin();
                    let kv = pinned.get_key_value(&k).map(|(k, v)| (**k, **v));
                    assert_eq!(pinned.get(&k).map(|v| **v), kv.map(|(_, v)| v));
                    assert_eq!(pinned.contains_key(&k), kv.is_some());
                    kv.map(|(key, v)| {
                        assert_eq!(key, k, "Pinned::get_key_value returned another key");
                        v
                    })
                }
            };
            assert_eq!(got, want, "read of {k} via {via:?}");
        }
        Op::Remove(k) => {
            let k = k & mask;
            let got = map.remove(&k).map(|r| {
                assert_eq!(**r.key(), k, "remove returned another key's entry");
                **r
            });
            assert_eq!(got, model.remove(&k), "remove({k})");
        }
        Op::PinnedRemove(k) => {
            let k = k & mask;
            let pinned = map.pin();
            let got = pinned.remove(&k).map(|v| **v);
            assert_eq!(got, model.remove(&k), "Pinned::remove({k})");
        }
        Op::RemoveIf(k, odd) => {
            let k = k & mask;
            let mut calls = 0;
            let got = map
                .remove_if(&k, |key, v| {
                    calls += 1;
                    assert_eq!(**key, k, "remove_if condition saw another key");
                    (**v % 2 == 1) == odd
                })
                .map(|r| **r);
            let want = match model.get(&k) {
                Some(&v) if (v % 2 == 1) == odd => model.remove(&k),
                _ => None,
            };
            assert_eq!(got, want, "remove_if({k}, odd={odd})");
            assert_eq!(calls, usize::from(model.contains_key(&k) || want.is_some()));
        }
        Op::GetOrInsertWith(k, v) => {
            let k = k & mask;
            let mut made = false;
            let got = **map.get_or_insert_with(Box::new(k), || {
                made = true;
                Box::new(v)
            });
            let absent = !model.contains_key(&k);
            assert_eq!(made, absent, "get_or_insert_with ran make iff absent");
            assert_eq!(got, *model.entry(k).or_insert(v), "get_or_insert_with({k})");
        }
        Op::PinnedGetOrInsertWith(k, v) => {
            let k = k & mask;
            let pinned = map.pin();
            let got = **pinned.get_or_insert_with(Box::new(k), || Box::new(v));
            assert_eq!(
                got,
                *model.entry(k).or_insert(v),
                "Pinned::get_or_insert_with"
            );
        }
        Op::Update(k, delta) => {
            let k = k & mask;
            let got = map
                .update(&k, |v| Box::new(v.wrapping_add(delta)))
                .map(|r| {
                    assert_eq!(**r.key(), k, "update returned another key's entry");
                    **r
                });
            let want = model.get_mut(&k).map(|v| {
                *v = v.wrapping_add(delta);
                *v
            });
            assert_eq!(got, want, "update({k}, +{delta})");
        }
        Op::RetainKeys { modulus, residue } => {
            let m = u16::from(modulus) + 1;
            let r = u16::from(residue) % m;
            map.retain(|k, _| **k % m != r);
            model.retain(|k, _| *k % m != r);
        }
        Op::RetainValues(bound) => {
            let mut seen = 0;
            map.retain(|_, v| {
                seen += 1;
                **v < bound
            });
            assert_eq!(seen, model.len(), "retain visits every entry once");
            model.retain(|_, v| *v < bound);
        }
        Op::Clear => {
            map.clear();
            model.clear();
        }
        Op::ClearKeepCapacity => {
            let capacity = map.capacity();
            map.clear_keep_capacity();
            assert_eq!(
                map.capacity(),
                capacity,
                "clear_keep_capacity kept capacity"
            );
            model.clear();
        }
        Op::Reserve(n) => {
            let n = usize::from(n) * 4;
            map.reserve(n);
            assert!(
                map.capacity() >= model.len() + n / 2,
                "reserve({n}) left capacity {} for {} entries",
                map.capacity(),
                model.len()
            );
        }
        Op::ShrinkToFit => map.shrink_to_fit(),
        Op::Iter => assert_same_contents(map, model),
        Op::Len => {
            assert_eq!(map.memory_stats().len, model.len(), "memory_stats().len");
            assert_eq!(map.pin().len(), model.len(), "Pinned::len");
            assert!(map.capacity() >= model.len() * 3 / 4, "capacity below len");
        }
        Op::CloneAndCompare => {
            let clone = map.clone();
            assert!(clone == *map, "a clone equals its source");
            assert_same_contents(&clone, model);
            assert_eq!(clone.shard_count(), map.shard_count());
        }
        Op::Hold(k) => {
            let k = k & mask;
            if held.len() < MAX_HELD {
                if let Some(r) = map.get(&k) {
                    let v = **r;
                    held.push((r, k, v));
                }
            }
        }
        Op::Release => {
            if !held.is_empty() {
                held.remove(0);
            }
        }
        Op::GetOrLoad(k, v, fail) => {
            let k = k & mask;
            let absent = !model.contains_key(&k);
            let mut ran = false;
            let got = map
                .try_get_or_load(Box::new(k), || {
                    ran = true;
                    if fail {
                        Err(())
                    } else {
                        Ok(Box::new(v))
                    }
                })
                .map(|r| **r);
            assert_eq!(ran, absent, "get_or_load ran its loader iff absent");
            let want = if absent && fail {
                Err(())
            } else {
                Ok(*model.entry(k).or_insert(v))
            };
            assert_eq!(got, want, "try_get_or_load({k}, fail={fail})");
        }
        Op::GetOrLoadAsync(k, v) => {
            let k = k & mask;
            let got = *poll_once(map.get_or_load_async(Box::new(k), async move { Box::new(v) }))
                .expect("a single-threaded async load completes in one poll");
            assert_eq!(got, *model.entry(k).or_insert(v), "get_or_load_async({k})");
        }
        Op::CancelledLoad(k, v) => {
            let k = k & mask;
            let cancelled =
                poll_once(map.get_or_load_async(Box::new(k), std::future::pending::<Box<u32>>()));
            match (cancelled, model.get(&k)) {
                (Some(got), Some(&want)) => assert_eq!(*got, want, "a present key is returned"),
                (None, None) => {}
                (got, want) => panic!("cancelled load of {k}: got {got:?}, model {want:?}"),
            }
            let mut ran = false;
            let got = **map.get_or_load(Box::new(k), || {
                ran = true;
                Box::new(v)
            });
            assert_eq!(
                ran,
                !model.contains_key(&k),
                "the cancelled load left nothing behind"
            );
            assert_eq!(got, *model.entry(k).or_insert(v));
        }
        Op::WithHash(k, v, op, wrong) => {
            let k = k & mask;
            let right = map.hash_key(&k);
            let hash = right ^ wrong;
            let boxed = Box::new(k);
            match op {
                HashOp::Get => {
                    let got = map.get_with_hash(&boxed, hash).map(|r| **r);
                    if wrong == 0 {
                        assert_eq!(got, model.get(&k).copied(), "get_with_hash({k})");
                    } else {
                        assert!(got.is_none() || got == model.get(&k).copied(), "wrong hash");
                    }
                }
                HashOp::Insert => {
                    let old = map.insert_with_hash(boxed, hash, Box::new(v)).map(|r| **r);
                    assert_eq!(
                        old,
                        model.insert(k, v),
                        "insert_with_hash({k}, ^{wrong:#x})"
                    );
                }
                HashOp::Remove => match map.remove_with_hash(&boxed, hash).map(|r| **r) {
                    Some(old) => assert_eq!(Some(old), model.remove(&k), "remove_with_hash"),
                    None => assert!(wrong != 0 || !model.contains_key(&k), "right hash missed"),
                },
                HashOp::GetOrLoad => {
                    let got = **map.get_or_load_with_hash(boxed, hash, || Box::new(v));
                    assert_eq!(got, *model.entry(k).or_insert(v), "get_or_load_with_hash");
                }
            }
        }
        Op::ComputeRef(k, v, choice) => {
            let k = k & mask;
            let done = map.compute_ref(&Box::new(k), |entry| {
                assert_eq!(entry.map(|(_, v)| **v), model.get(&k).copied());
                match choice {
                    ComputeChoice::Insert => Operation::Insert(Box::new(v)),
                    ComputeChoice::Remove => Operation::Remove,
                    ComputeChoice::Abort => Operation::Abort,
                }
            });
            let before = model.get(&k).copied();
            match (choice, &done) {
                (ComputeChoice::Insert, Compute::Inserted(_) | Compute::Updated { .. }) => {
                    model.insert(k, v);
                }
                (ComputeChoice::Remove, Compute::Removed(_)) => {
                    model.remove(&k);
                }
                (ComputeChoice::Remove, Compute::Unchanged(None)) => assert!(before.is_none()),
                (ComputeChoice::Abort, Compute::Unchanged(_)) => {}
                _ => panic!("compute_ref({k}, {choice:?}) did {done:?}"),
            }
            assert_eq!(
                done.previous().map(|r| ***r),
                before,
                "compute_ref previous"
            );
        }
        Op::TryInsertRef(k, v) => {
            let k = k & mask;
            match map.try_insert_ref(&Box::new(k), Box::new(v)) {
                Ok(new) => {
                    assert_eq!(**new, v);
                    assert!(
                        model.insert(k, v).is_none(),
                        "try_insert_ref of a present key"
                    );
                }
                Err(err) => assert_eq!(Some(**err.entry), model.get(&k).copied()),
            }
        }
        Op::Drain { take } => {
            let mut drain = map.drain();
            assert_eq!(drain.len(), model.len(), "drain len");
            assert!(map.is_empty(), "drain leaves the map empty");
            let mut got: Vec<(u16, u32)> = Vec::new();
            if held.is_empty() || model.is_empty() {
                let limit = take.map_or(usize::MAX, usize::from);
                got.extend(drain.by_ref().take(limit).map(|(k, v)| (*k, *v)));
            } else {
                // The held `Ref`s pinned this thread before the swap: moving out must wait (an
                // empty drain has nothing to wait for, hence the check above).
                assert!(
                    !drain.is_ready(),
                    "ready under a Ref pinned before the drain"
                );
                assert!(
                    matches!(drain.try_next(), Err(WouldBlock)),
                    "try_next under a Ref pinned before the drain"
                );
            }
            let complete = drain.len() == 0;
            drop(drain);
            assert_eq!(
                map.memory_stats().drain_bytes,
                0,
                "a dropped drain holds nothing"
            );
            got.sort_unstable();
            assert!(
                got.windows(2).all(|w| w[0].0 != w[1].0),
                "drained a key twice"
            );
            for (k, v) in &got {
                assert_eq!(model.get(k), Some(v), "drained ({k}, {v})");
            }
            if complete {
                assert_eq!(got.len(), model.len(), "a consumed drain yields everything");
            }
            model.clear();
        }
        Op::Sample(n, seed) => {
            let pinned = map.pin();
            let picked = pinned.sample(usize::from(n), seed);
            assert_eq!(picked.len(), usize::from(n).min(model.len()), "sample size");
            let keys: HashSet<u16> = picked.iter().map(|(k, _)| ***k).collect();
            assert_eq!(keys.len(), picked.len(), "a sample held a key twice");
            for (k, v) in picked {
                assert_eq!(model.get(&**k), Some(&**v), "sampled ({k}, {v})");
            }
        }
        Op::FullScan(budget) => {
            let pinned = map.pin();
            let mut cursor = ScanCursor::default();
            if budget == 0 {
                assert_eq!(pinned.scan(cursor, 0), (vec![], Some(cursor)), "budget 0");
            }
            let budget = usize::from(budget).max(1);
            let mut got: Vec<(u16, u32)> = Vec::new();
            loop {
                let (found, next) = pinned.scan(cursor, budget);
                got.extend(found.iter().map(|(k, v)| (***k, ***v)));
                match next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            got.sort_unstable();
            let mut expected: Vec<(u16, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            expected.sort_unstable();
            assert_eq!(
                got, expected,
                "a full scan with no writes returns each entry once"
            );
        }
        Op::ScanStep(_) => unreachable!("handled by scan_step"),
    }
}

/// [`Op::ScanStep`]: one call of the scan in progress (starting one if none is).
fn scan_step(map: &Map, model: &HashMap<u16, u32>, scan: &mut Option<ScanState>, budget: u8) {
    let state = scan.get_or_insert_with(|| ScanState {
        cursor: ScanCursor::default().to_u64(),
        seen: HashSet::new(),
        present: model.keys().copied().collect(),
    });
    let pinned = map.pin();
    let (found, next) = pinned.scan(
        ScanCursor::from_u64(state.cursor),
        1 + usize::from(budget % 16),
    );
    for (k, v) in found {
        assert_eq!(model.get(&**k), Some(&**v), "scanned ({k}, {v})");
        state.seen.insert(**k);
    }
    match next {
        Some(next) => state.cursor = next.to_u64(),
        None => {
            let missed: Vec<&u16> = state.present.difference(&state.seen).collect();
            assert!(
                missed.is_empty(),
                "keys present throughout the scan were missed: {missed:?}"
            );
            *scan = None;
        }
    }
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// Polls `future` once; `None` if it is not ready (it is then dropped: cancelled).
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let waker: Waker = Arc::new(NoopWake).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Compares the map's contents, through every iteration API, with the model.
fn assert_same_contents(map: &Map, model: &HashMap<u16, u32>) {
    let mut expected: Vec<(u16, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
    expected.sort_unstable();

    let mut pairs: Vec<(u16, u32)> = map.iter().map(|r| (**r.key(), **r.value())).collect();
    pairs.sort_unstable();
    assert_eq!(pairs, expected, "iter");

    let pinned = map.pin();
    let mut pinned_pairs: Vec<(u16, u32)> = pinned.iter().map(|(k, v)| (**k, **v)).collect();
    pinned_pairs.sort_unstable();
    assert_eq!(pinned_pairs, expected, "Pinned::iter");

    let mut keys: Vec<u16> = map.keys().map(|k| **k).collect();
    keys.sort_unstable();
    let want_keys: Vec<u16> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, want_keys, "keys");

    let mut values: Vec<u32> = map.values().map(|v| **v).collect();
    values.sort_unstable();
    let mut want_values: Vec<u32> = expected.iter().map(|(_, v)| *v).collect();
    want_values.sort_unstable();
    assert_eq!(values, want_values, "values");

    for (k, v) in &expected {
        assert_eq!(
            pinned.get(k).map(|v| **v),
            Some(*v),
            "get({k}) of an iterated key"
        );
    }
}
