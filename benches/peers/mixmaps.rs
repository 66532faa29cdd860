//! What the mix benches share: the maps under test behind one trait ([`MixMap`]), the workloads
//! ([`WORKLOADS`]), their pregenerated per-thread operation streams and the worker-timed run loop
//! ([`Case`]). `mixes.rs` (criterion, 1..=cores threads) and `scaling.rs` (its own thread list,
//! past the cores) both include this module, so a figure from one means the same as one from the
//! other. See `mixes.rs` for the workloads and `benches/README.md` for the method.

use std::collections::HashMap as StdHashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, RwLock};
use std::time::{Duration, Instant};

use epochmap::{EpochMap, FlatEpochMap, ReclaimMode};

use super::common::{hasher, key, pick, Hasher, Rng, Zipf};
use super::flat_proto::{Flat, GROW4, NOPIN, WRES};

/// Operations one pinned handle covers (epochmap `pin()`, papaya `pin()`).
pub const BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Insert,
    Remove,
    Update,
}

/// One map under test, driven through a batch of operations; returns a checksum so the optimiser
/// cannot drop the reads.
pub trait MixMap: Send + Sync {
    fn run(&self, ops: &[(Op, u64)]) -> u64;
    fn prefill(&self, keys: impl Iterator<Item = u64>);
}

struct EpochOneCall(EpochMap<u64, u64, Hasher>);
struct FlatOneCall(FlatEpochMap<u64, u64, Hasher>);
struct EpochPinned(EpochMap<u64, u64, Hasher>);
struct PapayaOneCall(papaya::HashMap<u64, u64, Hasher>);
struct PapayaPinned(papaya::HashMap<u64, u64, Hasher>);
struct Dash(dashmap::DashMap<u64, u64, Hasher>);
struct Scc(scc::HashMap<u64, u64, Hasher>);
struct SccIndex(scc::HashIndex<u64, u64, Hasher>);
struct RwStd(RwLock<StdHashMap<u64, u64, Hasher>>);

/// `EpochMap` and `FlatEpochMap` share their API (both are `epochmap::Map`, over a layout the crate
/// does not export as a bound), so one call per operation is one impl, written for each.
macro_rules! one_call_mix_map {
    ($($map:ty),*) => {$(
        impl MixMap for $map {
            fn run(&self, ops: &[(Op, u64)]) -> u64 {
                let m = &self.0;
                let mut sum = 0u64;
                for &(op, k) in ops {
                    match op {
                        Op::Get => {
                            if let Some(v) = m.get(&k) {
                                sum = sum.wrapping_add(*v);
                            }
                        }
                        Op::Insert => {
                            m.insert(k, k);
                        }
                        Op::Remove => {
                            m.remove(&k);
                        }
                        Op::Update => {
                            m.update(&k, |v| v.wrapping_add(1));
                        }
                    }
                }
                sum
            }
            fn prefill(&self, keys: impl Iterator<Item = u64>) {
                for k in keys {
                    self.0.insert(k, k);
                }
            }
        }
    )*};
}

one_call_mix_map!(EpochOneCall, FlatOneCall);

impl MixMap for EpochPinned {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let mut sum = 0u64;
        for batch in ops.chunks(BATCH) {
            let p = self.0.pin();
            for &(op, k) in batch {
                match op {
                    Op::Get => {
                        if let Some(v) = p.get(&k) {
                            sum = sum.wrapping_add(*v);
                        }
                    }
                    Op::Insert => {
                        p.insert(k, k);
                    }
                    Op::Remove => {
                        p.remove(&k);
                    }
                    // `Pinned` has no `update`; the map's own pins nested inside ours are cheap.
                    Op::Update => {
                        self.0.update(&k, |v| v.wrapping_add(1));
                    }
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        for k in keys {
            self.0.insert(k, k);
        }
    }
}

impl MixMap for PapayaOneCall {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let m = &self.0;
        let mut sum = 0u64;
        for &(op, k) in ops {
            match op {
                Op::Get => {
                    if let Some(v) = m.pin().get(&k) {
                        sum = sum.wrapping_add(*v);
                    }
                }
                Op::Insert => {
                    m.pin().insert(k, k);
                }
                Op::Remove => {
                    m.pin().remove(&k);
                }
                Op::Update => {
                    m.pin().update(k, |v| v.wrapping_add(1));
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        let m = self.0.pin();
        for k in keys {
            m.insert(k, k);
        }
    }
}

impl MixMap for PapayaPinned {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let mut sum = 0u64;
        for batch in ops.chunks(BATCH) {
            let m = self.0.pin();
            for &(op, k) in batch {
                match op {
                    Op::Get => {
                        if let Some(v) = m.get(&k) {
                            sum = sum.wrapping_add(*v);
                        }
                    }
                    Op::Insert => {
                        m.insert(k, k);
                    }
                    Op::Remove => {
                        m.remove(&k);
                    }
                    Op::Update => {
                        m.update(k, |v| v.wrapping_add(1));
                    }
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        let m = self.0.pin();
        for k in keys {
            m.insert(k, k);
        }
    }
}

impl MixMap for Dash {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let m = &self.0;
        let mut sum = 0u64;
        for &(op, k) in ops {
            match op {
                Op::Get => {
                    if let Some(v) = m.get(&k) {
                        sum = sum.wrapping_add(*v);
                    }
                }
                Op::Insert => {
                    m.insert(k, k);
                }
                Op::Remove => {
                    m.remove(&k);
                }
                Op::Update => {
                    if let Some(mut v) = m.get_mut(&k) {
                        *v = v.wrapping_add(1);
                    }
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        for k in keys {
            self.0.insert(k, k);
        }
    }
}

impl MixMap for Scc {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let m = &self.0;
        let mut sum = 0u64;
        for &(op, k) in ops {
            match op {
                Op::Get => {
                    if let Some(v) = m.read(&k, |_, v| *v) {
                        sum = sum.wrapping_add(v);
                    }
                }
                Op::Insert => {
                    m.upsert(k, k);
                }
                Op::Remove => {
                    m.remove(&k);
                }
                Op::Update => {
                    m.update(&k, |_, v| *v = v.wrapping_add(1));
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        for k in keys {
            self.0.upsert(k, k);
        }
    }
}

impl MixMap for SccIndex {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let m = &self.0;
        let mut sum = 0u64;
        for &(op, k) in ops {
            match op {
                Op::Get => {
                    if let Some(v) = m.peek_with(&k, |_, v| *v) {
                        sum = sum.wrapping_add(v);
                    }
                }
                // No upsert in `HashIndex`: its entry API replaces by writing a new copy.
                Op::Insert => match m.entry(k) {
                    scc::hash_index::Entry::Occupied(o) => o.update(k),
                    scc::hash_index::Entry::Vacant(e) => {
                        e.insert_entry(k);
                    }
                },
                Op::Remove => {
                    m.remove(&k);
                }
                Op::Update => {
                    if let Some(o) = m.get(&k) {
                        let v = o.get().wrapping_add(1);
                        o.update(v);
                    }
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        for k in keys {
            let _ = self.0.insert(k, k);
        }
    }
}

impl MixMap for RwStd {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let m = &self.0;
        let mut sum = 0u64;
        for &(op, k) in ops {
            match op {
                Op::Get => {
                    if let Some(v) = m.read().unwrap().get(&k) {
                        sum = sum.wrapping_add(*v);
                    }
                }
                Op::Insert => {
                    m.write().unwrap().insert(k, k);
                }
                Op::Remove => {
                    m.write().unwrap().remove(&k);
                }
                Op::Update => {
                    if let Some(v) = m.write().unwrap().get_mut(&k) {
                        *v = v.wrapping_add(1);
                    }
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        let mut m = self.0.write().unwrap();
        for k in keys {
            m.insert(k, k);
        }
    }
}

/// The inline-entry prototype (`flat_proto.rs`), one call per operation.
impl<const E: bool, const W: u8> MixMap for Flat<u64, u64, Hasher, E, W> {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let mut sum = 0u64;
        for &(op, k) in ops {
            match op {
                Op::Get => {
                    if let Some(v) = self.get(&k) {
                        sum = sum.wrapping_add(v);
                    }
                }
                Op::Insert => {
                    self.insert(k, k);
                }
                Op::Remove => {
                    self.remove(&k);
                }
                Op::Update => {
                    self.update(&k, |v| v.wrapping_add(1));
                }
            }
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        for k in keys {
            self.insert(k, k);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    /// Percent get / insert / remove / update.
    pub mix: [u32; 4],
    pub prefill: Prefill,
}

/// Which keys are in the map when the timing starts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Prefill {
    /// None: every sample starts from an empty map.
    Empty,
    /// The first three quarters of the universe (conc-map-bench's 75%): a quarter of gets miss.
    ThreeQuarters,
    /// Every other key of the universe: half the gets miss.
    EveryOther,
}

pub const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "read-heavy",
        mix: [98, 1, 1, 0],
        prefill: Prefill::ThreeQuarters,
    },
    Workload {
        name: "read-heavy-miss",
        mix: [98, 1, 1, 0],
        prefill: Prefill::EveryOther,
    },
    Workload {
        name: "exchange",
        mix: [10, 40, 40, 10],
        prefill: Prefill::ThreeQuarters,
    },
    Workload {
        name: "rapid-grow",
        mix: [5, 80, 5, 10],
        prefill: Prefill::Empty,
    },
];

/// How many keys a prefilled map starts with, in every workload that prefills.
fn prefilled() -> u64 {
    pick(1 << 20, 1 << 12)
}

/// The universe the operations draw keys from, `key(0..universe)`: the prefill is 75% of it
/// (conc-map-bench's share), or half of it for read-heavy-miss.
pub fn universe(w: Workload) -> u64 {
    match w.prefill {
        Prefill::EveryOther => prefilled() * 2,
        Prefill::Empty | Prefill::ThreeQuarters => prefilled() * 4 / 3,
    }
}

/// The ranks (`key(rank)`) a prefilled map starts with.
fn prefill_ranks(w: Workload) -> impl Iterator<Item = u64> {
    let step = if w.prefill == Prefill::EveryOther {
        2
    } else {
        1
    };
    (0..prefilled()).map(move |i| i * step)
}

/// Per-thread operation streams of `len` operations each, generated before any timing.
fn streams(w: Workload, zipf: Option<&Zipf>, threads: usize, len: usize) -> Vec<Vec<(Op, u64)>> {
    let universe = universe(w);
    (0..threads)
        .map(|t| {
            let mut rng = Rng::new(0xb0b0 + t as u64 * 7919);
            (0..len)
                .map(|_| {
                    let roll = rng.below(100) as u32;
                    let op = if roll < w.mix[0] {
                        Op::Get
                    } else if roll < w.mix[0] + w.mix[1] {
                        Op::Insert
                    } else if roll < w.mix[0] + w.mix[1] + w.mix[2] {
                        Op::Remove
                    } else {
                        Op::Update
                    };
                    let rank = match zipf {
                        Some(z) => z.sample(&mut rng),
                        None => rng.below(universe),
                    };
                    (op, key(rank))
                })
                .collect()
        })
        .collect()
}

/// Runs `iters` operations split over `streams.len()` threads against `map` and returns the wall
/// time from the first worker's start to the last worker's finish. Each worker reads the clock
/// itself right after the start barrier and right after its last operation (the spawning thread
/// may be descheduled on a busy machine, so its clock would miss part of the work). `cursors` keep
/// each thread's position in its stream across samples so consecutive samples do not replay the
/// same prefix.
fn run_threads<M: MixMap>(
    map: &M,
    streams: &[Vec<(Op, u64)>],
    cursors: &[AtomicUsize],
    iters: u64,
) -> Duration {
    let threads = streams.len();
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = streams
            .iter()
            .zip(cursors)
            .map(|(stream, cursor)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut todo = (iters as usize).div_ceil(threads);
                    let mut at = cursor.load(Ordering::Relaxed);
                    barrier.wait();
                    let start = Instant::now();
                    let mut sum = 0;
                    while todo > 0 {
                        let n = todo.min(stream.len() - at);
                        sum ^= map.run(&stream[at..at + n]);
                        todo -= n;
                        at = (at + n) % stream.len();
                    }
                    let end = Instant::now();
                    cursor.store(at, Ordering::Relaxed);
                    black_box(sum);
                    (start, end)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let first = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let last = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    last - first
}

/// One (workload, map, threads) measurement: the per-thread operation streams, each thread's
/// position in its stream (kept across samples so consecutive samples do not replay the same
/// prefix) and, for a workload that prefills, the prefilled map, which then keeps running across
/// samples (a steady state: inserts and removes hit random keys of the universe). All of it is
/// built outside any timing.
pub struct Case<M, F> {
    streams: Vec<Vec<(Op, u64)>>,
    cursors: Vec<AtomicUsize>,
    map: Option<M>,
    make: F,
}

impl<M: MixMap, F: Fn() -> M> Case<M, F> {
    /// `threads` streams of `len` operations of workload `w` (keys uniform, or drawn from `zipf`)
    /// and, unless `w` starts empty, a map from `make` prefilled as `w` says.
    pub fn new(w: Workload, zipf: Option<&Zipf>, threads: usize, len: usize, make: F) -> Self {
        let streams = streams(w, zipf, threads, len);
        let cursors = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        let map = (w.prefill != Prefill::Empty).then(|| {
            let map = make();
            map.prefill(prefill_ranks(w).map(key));
            map
        });
        Case {
            streams,
            cursors,
            map,
            make,
        }
    }

    /// One sample: `iters` operations split evenly over the threads (each runs
    /// `iters.div_ceil(threads)`), timed by the workers themselves ([`run_threads`]). A workload
    /// that starts empty gets a fresh map per sample, built and dropped outside the timing.
    pub fn sample(&self, iters: u64) -> Duration {
        match &self.map {
            Some(map) => run_threads(map, &self.streams, &self.cursors, iters),
            None => {
                let map = (self.make)();
                let took = run_threads(&map, &self.streams, &self.cursors, iters);
                drop(map);
                took
            }
        }
    }
}

/// Is handed every map under test by [`each_map`]: its name and how to build an empty one.
pub trait MapVisitor {
    fn visit<M: MixMap>(&mut self, name: &str, make: impl Fn() -> M);
}

/// Every real map of the mixes, in the report's order: epochmap one call per operation,
/// `FlatEpochMap` (entries inline) one call per operation, epochmap with `ReclaimMode::Inline`
/// and pinned per batch; papaya one call and pinned; dashmap; scc's
/// `HashMap` and `HashIndex`; `RwLock<std HashMap>`. (The floor models are `mixes.rs`'s own.)
pub fn each_map(v: &mut impl MapVisitor) {
    v.visit("epochmap", || EpochOneCall(EpochMap::with_hasher(hasher())));
    // The same map with entries stored inline in the table (`FlatEpochMap`), built the same way.
    v.visit("flat-epochmap", || {
        FlatOneCall(FlatEpochMap::with_hasher(hasher()))
    });
    // Same map, entries freed by whichever thread runs the deferred function instead of the
    // background reclaimer: isolates the cost of the reclaimer hand-off (wake-ups, cross-thread
    // frees).
    v.visit("epochmap-inline", || {
        EpochOneCall(
            EpochMap::builder()
                .hasher(hasher())
                .reclaim_mode(ReclaimMode::Inline)
                .build(),
        )
    });
    v.visit("epochmap-pinned", || {
        EpochPinned(EpochMap::with_hasher(hasher()))
    });
    v.visit("papaya", || {
        PapayaOneCall(papaya::HashMap::with_hasher(hasher()))
    });
    v.visit("papaya-pinned", || {
        PapayaPinned(papaya::HashMap::with_hasher(hasher()))
    });
    v.visit("dashmap", || Dash(dashmap::DashMap::with_hasher(hasher())));
    v.visit("scc", || Scc(scc::HashMap::with_hasher(hasher())));
    v.visit("scc-index", || {
        SccIndex(scc::HashIndex::with_hasher(hasher()))
    });
    v.visit("rwlock-std", || {
        RwStd(RwLock::new(StdHashMap::with_hasher(hasher())))
    });
}

/// The layout prototypes (`flat_proto.rs`, issue 20): not maps anyone should use, so not in
/// [`each_map`] (the report and a default `scaling.sh` run leave them out); `scaling.sh -- --maps
/// flat-proto,...` runs them side by side with the maps.
#[allow(dead_code)] // `mixes.rs`, the report's criterion side, shares this file and leaves them out
pub fn each_prototype(v: &mut impl MapVisitor) {
    v.visit("flat-proto", || {
        Flat::<u64, u64, Hasher, false>::with_hasher(hasher())
    });
    v.visit("flat-embed", || {
        Flat::<u64, u64, Hasher, true>::with_hasher(hasher())
    });
    // Write-path variants (knobs in `flat_proto.rs`): no pin per write, writer-side reserved
    // bits, both, and both with 4x growth of small tables.
    v.visit("flat-nopin", || {
        Flat::<u64, u64, Hasher, false, NOPIN>::with_hasher(hasher())
    });
    v.visit("flat-wres", || {
        Flat::<u64, u64, Hasher, false, WRES>::with_hasher(hasher())
    });
    v.visit("flat-both", || {
        Flat::<u64, u64, Hasher, false, { NOPIN | WRES }>::with_hasher(hasher())
    });
    v.visit("flat-grow4", || {
        Flat::<u64, u64, Hasher, false, { NOPIN | WRES | GROW4 }>::with_hasher(hasher())
    });
}
