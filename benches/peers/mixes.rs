//! The standard concurrent-map mixes (bustle / conc-map-bench): read-heavy 98/1/1, exchange
//! 10/40/40/10 and rapid-grow 5/80/5/10, on `u64 -> u64`, at 1..=cores threads (at least 1 and 2),
//! with uniform and Zipf(0.99) keys, against dashmap, papaya, scc (`HashMap` and `HashIndex`) and
//! `RwLock<std HashMap>`.
//!
//! Built with `--features mimalloc`, the binary runs on mimalloc and names its groups
//! `mix-mimalloc/...` instead of `mix/...`, so `benches/report.sh` can run both and report them side
//! by side from one criterion directory.
//!
//! Shape of one measurement (`iter_custom`): the map is built and prefilled outside the timing;
//! `threads` workers are started and meet at a barrier, then each runs `iters / threads`
//! operations from its own pregenerated stream; the time is from the first worker's start to the
//! last worker's finish, read by the workers themselves. One criterion "iteration" is one
//! operation, so criterion's time per iteration is the inverse of aggregate throughput (the report
//! turns it into ops/s).
//!
//! - read-heavy and exchange: the map is prefilled with 75% of the key universe once per
//!   (workload, map, threads) and then keeps running across samples (a steady state: inserts and
//!   removes hit random keys of the universe).
//! - read-heavy-miss: read-heavy with every other key of a universe twice the prefill present, so
//!   half the gets miss under either distribution (the Zipf head alternates present and absent
//!   keys) and the map holds as many entries as read-heavy's.
//! - rapid-grow: every sample starts from an empty map (conc-map-bench's 0% prefill); the old map is
//!   dropped outside the timing.
//!
//! Operations: `get` reads the value; `insert` inserts or replaces (std semantics; scc's `upsert`);
//! `remove` removes; `update` adds 1 to the value if present. Forms: one call per operation for every
//! map, and for epochmap and papaya also one pinned handle per batch of 64 operations.
//! `epochmap-inline` is epochmap built with `ReclaimMode::Inline` (no background reclaimer), to
//! show what the hand-off to the reclaimer thread costs.
//!
//! `floor-inline`, `floor-pool` and `floor-epoch` (exchange and rapid-grow only) are not maps
//! anyone should use but the write path's floors (issue 11), described in `floor.rs`: dashmap's
//! structure with entries inline, behind a pointer into a per-shard pool, and behind a pointer with
//! an epoch pin per operation and batched retirement. Their ratios are what stable addresses and
//! epoch reclamation cost by themselves.

use std::collections::HashMap as StdHashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, OnceLock, RwLock};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use epochmap::{EpochMap, ReclaimMode};

mod common;
mod floor;
use common::{hasher, key, pick, Hasher, Rng, Zipf};

/// Operations one pinned handle covers (epochmap `pin()`, papaya `pin()`).
const BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Insert,
    Remove,
    Update,
}

/// One map under test, driven through a batch of operations; returns a checksum so the optimiser
/// cannot drop the reads.
trait MixMap: Send + Sync {
    fn run(&self, ops: &[(Op, u64)]) -> u64;
    fn prefill(&self, keys: impl Iterator<Item = u64>);
}

struct EpochOneCall(EpochMap<u64, u64, Hasher>);
struct EpochPinned(EpochMap<u64, u64, Hasher>);
struct PapayaOneCall(papaya::HashMap<u64, u64, Hasher>);
struct PapayaPinned(papaya::HashMap<u64, u64, Hasher>);
struct Dash(dashmap::DashMap<u64, u64, Hasher>);
struct Scc(scc::HashMap<u64, u64, Hasher>);
struct SccIndex(scc::HashIndex<u64, u64, Hasher>);
struct RwStd(RwLock<StdHashMap<u64, u64, Hasher>>);

impl MixMap for EpochOneCall {
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

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    /// Percent get / insert / remove / update.
    mix: [u32; 4],
    prefill: Prefill,
}

/// Which keys are in the map when the timing starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefill {
    /// None: every sample starts from an empty map.
    Empty,
    /// The first three quarters of the universe (conc-map-bench's 75%): a quarter of gets miss.
    ThreeQuarters,
    /// Every other key of the universe: half the gets miss.
    EveryOther,
}

const WORKLOADS: [Workload; 4] = [
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
fn universe(w: Workload) -> u64 {
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

/// Per-thread operation streams, generated before any timing.
fn streams(w: Workload, zipf: Option<&Zipf>, threads: usize) -> Vec<Vec<(Op, u64)>> {
    let len = pick(1 << 20, 1 << 14);
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

/// Per-benchmark state: per-thread op streams, their cursors, and the prefilled map (if any).
type Setup<M> = (Vec<Vec<(Op, u64)>>, Vec<AtomicUsize>, Option<M>);

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The prefix of every group name: which allocator the maps ran on.
const GROUP: &str = if cfg!(feature = "mimalloc") {
    "mix-mimalloc"
} else {
    "mix"
};

fn bench_map<M: MixMap>(
    c: &mut Criterion,
    w: Workload,
    dist: &str,
    zipf: Option<&OnceLock<Zipf>>,
    name: &str,
    make: impl Fn() -> M,
) {
    let mut group = c.benchmark_group(format!("{GROUP}/{}/{}", w.name, dist));
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    for threads in thread_counts() {
        // Built on first use: criterion calls the closure once per sample, and not at all when
        // a filter on the command line skips this benchmark.
        let mut setup: Option<Setup<M>> = None;
        let id = BenchmarkId::new(name, threads);
        group.bench_function(id, |b| {
            let (streams, cursors, map) = setup.get_or_insert_with(|| {
                let z = zipf.map(|z| z.get_or_init(|| Zipf::new(universe(w), 0.99)));
                let streams = streams(w, z, threads);
                let cursors = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                let map = (w.prefill != Prefill::Empty).then(|| {
                    let map = make();
                    map.prefill(prefill_ranks(w).map(key));
                    map
                });
                (streams, cursors, map)
            });
            match map {
                Some(map) => b.iter_custom(|iters| run_threads(map, streams, cursors, iters)),
                None => b.iter_custom(|iters| {
                    let map = make();
                    let took = run_threads(&map, streams, cursors, iters);
                    drop(map);
                    took
                }),
            }
        });
    }
    group.finish();
}

/// 1 and 2 threads, and every count up to the machine's cores beyond that.
fn thread_counts() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let max = if common::quick() { 2 } else { cores.max(2) };
    (1..=max).collect()
}

fn mixes(c: &mut Criterion) {
    for w in WORKLOADS {
        // One Zipf table per workload: read-heavy-miss draws from a larger universe.
        let zipf = OnceLock::new();
        for (dist, z) in [("uniform", None), ("zipf", Some(&zipf))] {
            bench_map(c, w, dist, z, "epochmap", || {
                EpochOneCall(EpochMap::with_hasher(hasher()))
            });
            // Same map, entries freed by whichever thread runs the deferred function instead of
            // the background reclaimer: isolates the cost of the reclaimer hand-off (wake-ups,
            // cross-thread frees) on 2 cores.
            bench_map(c, w, dist, z, "epochmap-inline", || {
                EpochOneCall(
                    EpochMap::builder()
                        .hasher(hasher())
                        .reclaim_mode(ReclaimMode::Inline)
                        .build(),
                )
            });
            bench_map(c, w, dist, z, "epochmap-pinned", || {
                EpochPinned(EpochMap::with_hasher(hasher()))
            });
            bench_map(c, w, dist, z, "papaya", || {
                PapayaOneCall(papaya::HashMap::with_hasher(hasher()))
            });
            bench_map(c, w, dist, z, "papaya-pinned", || {
                PapayaPinned(papaya::HashMap::with_hasher(hasher()))
            });
            bench_map(c, w, dist, z, "dashmap", || {
                Dash(dashmap::DashMap::with_hasher(hasher()))
            });
            bench_map(c, w, dist, z, "scc", || {
                Scc(scc::HashMap::with_hasher(hasher()))
            });
            bench_map(c, w, dist, z, "scc-index", || {
                SccIndex(scc::HashIndex::with_hasher(hasher()))
            });
            bench_map(c, w, dist, z, "rwlock-std", || {
                RwStd(RwLock::new(StdHashMap::with_hasher(hasher())))
            });
            if !w.name.starts_with("read-heavy") {
                bench_map(c, w, dist, z, "floor-inline", floor::Inline::new);
                bench_map(c, w, dist, z, "floor-pool", floor::Pooled::new);
                bench_map(c, w, dist, z, "floor-epoch", floor::Epoch::new);
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = common::criterion(0.3, 1.0, 20);
    targets = mixes
}
criterion_main!(benches);
