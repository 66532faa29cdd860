//! Single-thread `get` (hit and miss), `insert` and `remove` on maps holding 1K / 100K / 1M
//! `u64 -> u64` entries: epochmap (`get` per call, and `pin()` per batch), `FlatEpochMap`
//! (`flat-epochmap`: entries inline in the table, `get` per call; and `flat-epochmap-pinned`,
//! gets only, `pin()` per batch), papaya (one call, and pinned), dashmap, scc (`HashMap`, and `HashIndex`: the peer whose reads are lock-free too),
//! and the single-thread limits `hashbrown::HashMap` and std's `HashMap`.
//! `hashbrown+pin` (gets only) is hashbrown with a crossbeam-epoch pin around every lookup: the
//! floor for any map whose one-call `get` pins crossbeam, whatever its table looks like.
//!
//! - get hit / miss: random present / absent keys (a shuffled order, so no map gets a sequential
//!   access pattern); the pinned forms pin once per batch of 1024 lookups.
//! - insert: a batch of 256 absent keys is inserted (timed), then removed again (untimed), so the
//!   map stays at its size however many iterations criterion asks for.
//! - remove: a batch of 256 present keys is removed (timed), then inserted again (untimed).

use std::cell::RefCell;
use std::collections::HashMap as StdHashMap;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use epochmap::{EpochMap, FlatEpochMap};

mod common;
use common::{hasher, key, Hasher, Rng};

const GET_BATCH: usize = 1024;
const WRITE_BATCH: usize = 256;

/// A map driven one batch at a time. Single-threaded maps take `&mut self` for writes.
trait StMap {
    fn get_batch(&self, keys: &[u64]) -> u64;
    fn insert_batch(&mut self, keys: &[u64]);
    fn remove_batch(&mut self, keys: &[u64]);
}

struct Epoch(EpochMap<u64, u64, Hasher>);
struct Flat(FlatEpochMap<u64, u64, Hasher>);
struct EpochPinned(EpochMap<u64, u64, Hasher>);
struct FlatPinned(FlatEpochMap<u64, u64, Hasher>);
struct Papaya(papaya::HashMap<u64, u64, Hasher>);
struct PapayaPinned(papaya::HashMap<u64, u64, Hasher>);
struct Dash(dashmap::DashMap<u64, u64, Hasher>);
struct Scc(scc::HashMap<u64, u64, Hasher>);
struct SccIndex(scc::HashIndex<u64, u64, Hasher>);
struct Brown(hashbrown::HashMap<u64, u64, Hasher>);
struct BrownPin(Brown);
struct Std(StdHashMap<u64, u64, Hasher>);

/// `EpochMap` and `FlatEpochMap` share one API (both are `epochmap::Map`), so one impl serves both.
macro_rules! epoch_st_map {
    ($($map:ty),*) => {$(
        impl StMap for $map {
            fn get_batch(&self, keys: &[u64]) -> u64 {
                keys.iter()
                    .map(|k| self.0.get(k).map_or(0, |v| *v))
                    .fold(0, u64::wrapping_add)
            }
            fn insert_batch(&mut self, keys: &[u64]) {
                for &k in keys {
                    self.0.insert(k, k);
                }
            }
            fn remove_batch(&mut self, keys: &[u64]) {
                for k in keys {
                    self.0.remove(k);
                }
            }
        }
    )*};
}

epoch_st_map!(Epoch, Flat);

/// The same maps through `pin()`: one pin per batch of operations.
macro_rules! epoch_pinned_st_map {
    ($($map:ty),*) => {$(
        impl StMap for $map {
            fn get_batch(&self, keys: &[u64]) -> u64 {
                let p = self.0.pin();
                keys.iter()
                    .map(|k| p.get(k).copied().unwrap_or(0))
                    .fold(0, u64::wrapping_add)
            }
            fn insert_batch(&mut self, keys: &[u64]) {
                let p = self.0.pin();
                for &k in keys {
                    p.insert(k, k);
                }
            }
            fn remove_batch(&mut self, keys: &[u64]) {
                let p = self.0.pin();
                for k in keys {
                    p.remove(k);
                }
            }
        }
    )*};
}

epoch_pinned_st_map!(EpochPinned, FlatPinned);

impl StMap for Papaya {
    fn get_batch(&self, keys: &[u64]) -> u64 {
        keys.iter()
            .map(|k| self.0.pin().get(k).copied().unwrap_or(0))
            .fold(0, u64::wrapping_add)
    }
    fn insert_batch(&mut self, keys: &[u64]) {
        for &k in keys {
            self.0.pin().insert(k, k);
        }
    }
    fn remove_batch(&mut self, keys: &[u64]) {
        for k in keys {
            self.0.pin().remove(k);
        }
    }
}

impl StMap for PapayaPinned {
    fn get_batch(&self, keys: &[u64]) -> u64 {
        let m = self.0.pin();
        keys.iter()
            .map(|k| m.get(k).copied().unwrap_or(0))
            .fold(0, u64::wrapping_add)
    }
    fn insert_batch(&mut self, keys: &[u64]) {
        let m = self.0.pin();
        for &k in keys {
            m.insert(k, k);
        }
    }
    fn remove_batch(&mut self, keys: &[u64]) {
        let m = self.0.pin();
        for k in keys {
            m.remove(k);
        }
    }
}

impl StMap for Dash {
    fn get_batch(&self, keys: &[u64]) -> u64 {
        keys.iter()
            .map(|k| self.0.get(k).map_or(0, |v| *v))
            .fold(0, u64::wrapping_add)
    }
    fn insert_batch(&mut self, keys: &[u64]) {
        for &k in keys {
            self.0.insert(k, k);
        }
    }
    fn remove_batch(&mut self, keys: &[u64]) {
        for k in keys {
            self.0.remove(k);
        }
    }
}

impl StMap for Scc {
    fn get_batch(&self, keys: &[u64]) -> u64 {
        keys.iter()
            .map(|k| self.0.read(k, |_, v| *v).unwrap_or(0))
            .fold(0, u64::wrapping_add)
    }
    fn insert_batch(&mut self, keys: &[u64]) {
        for &k in keys {
            self.0.upsert(k, k);
        }
    }
    fn remove_batch(&mut self, keys: &[u64]) {
        for k in keys {
            self.0.remove(k);
        }
    }
}

/// `HashIndex` has no upsert: insert-or-replace goes through its entry API (a replace writes a new
/// copy and marks the old one removed, which is what `HashIndex` does for every update).
fn scc_index_upsert(m: &scc::HashIndex<u64, u64, Hasher>, k: u64, v: u64) {
    match m.entry(k) {
        scc::hash_index::Entry::Occupied(o) => o.update(v),
        scc::hash_index::Entry::Vacant(e) => {
            e.insert_entry(v);
        }
    }
}

impl StMap for SccIndex {
    fn get_batch(&self, keys: &[u64]) -> u64 {
        keys.iter()
            .map(|k| self.0.peek_with(k, |_, v| *v).unwrap_or(0))
            .fold(0, u64::wrapping_add)
    }
    fn insert_batch(&mut self, keys: &[u64]) {
        for &k in keys {
            scc_index_upsert(&self.0, k, k);
        }
    }
    fn remove_batch(&mut self, keys: &[u64]) {
        for k in keys {
            self.0.remove(k);
        }
    }
}

/// hashbrown and std share one API (`get`/`insert`/`remove` through `&mut`), so one impl serves both.
macro_rules! std_like_st_map {
    ($($map:ty),*) => {$(
        impl StMap for $map {
            fn get_batch(&self, keys: &[u64]) -> u64 {
                keys.iter()
                    .map(|k| self.0.get(k).copied().unwrap_or(0))
                    .fold(0, u64::wrapping_add)
            }
            fn insert_batch(&mut self, keys: &[u64]) {
                for &k in keys {
                    self.0.insert(k, k);
                }
            }
            fn remove_batch(&mut self, keys: &[u64]) {
                for k in keys {
                    self.0.remove(k);
                }
            }
        }
    )*};
}

std_like_st_map!(Brown, Std);

impl StMap for BrownPin {
    fn get_batch(&self, keys: &[u64]) -> u64 {
        let BrownPin(Brown(map)) = self;
        keys.iter()
            .map(|k| {
                // What `EpochMap::get` pays besides its probe: pin, and unpin when the guard drops.
                let _guard = crossbeam_epoch::pin();
                map.get(k).copied().unwrap_or(0)
            })
            .fold(0, u64::wrapping_add)
    }
    fn insert_batch(&mut self, keys: &[u64]) {
        self.0.insert_batch(keys);
    }
    fn remove_batch(&mut self, keys: &[u64]) {
        self.0.remove_batch(keys);
    }
}

/// The key streams for one map size `n`: present keys are `key(0..n)`, absent ones `key(n..)`.
struct Keys {
    hits: Vec<u64>,
    misses: Vec<u64>,
    fresh: Vec<u64>,
}

impl Keys {
    fn new(n: u64) -> Self {
        let mut rng = Rng::new(n);
        let len = n.min(1 << 20) as usize;
        let mut idx: Vec<u64> = (0..n).collect();
        rng.shuffle(&mut idx);
        let hits = idx[..len].iter().map(|&i| key(i)).collect();
        let misses = (0..len).map(|_| key(n + rng.below(n))).collect();
        // Absent keys for the insert bench, never overlapping the misses' range.
        let fresh = (0..(n as usize).clamp(WRITE_BATCH, 1 << 16))
            .map(|i| key(3 * n + i as u64))
            .collect();
        Keys {
            hits,
            misses,
            fresh,
        }
    }
}

/// Times `iters` lookups cycling through `keys` in batches.
fn time_gets<M: StMap>(map: &M, keys: &[u64], iters: u64) -> Duration {
    let mut left = iters as usize;
    let mut at = 0;
    let mut sum = 0u64;
    let start = Instant::now();
    while left > 0 {
        let n = left.min(GET_BATCH).min(keys.len() - at);
        sum = sum.wrapping_add(map.get_batch(&keys[at..at + n]));
        left -= n;
        at = (at + n) % keys.len();
    }
    let took = start.elapsed();
    black_box(sum);
    took
}

/// Times `iters` writes of `timed` in batches, undoing each batch with `undo` outside the timing.
fn time_writes<M: StMap>(
    map: &mut M,
    keys: &[u64],
    iters: u64,
    timed: fn(&mut M, &[u64]),
    undo: fn(&mut M, &[u64]),
) -> Duration {
    let mut left = iters as usize;
    let mut at = 0;
    let mut took = Duration::ZERO;
    while left > 0 {
        let n = left.min(WRITE_BATCH).min(keys.len() - at);
        let batch = &keys[at..at + n];
        let start = Instant::now();
        timed(map, batch);
        took += start.elapsed();
        undo(map, batch);
        left -= n;
        at = (at + n) % keys.len();
    }
    took
}

/// Which operations a map is benchmarked on.
#[derive(Clone, Copy, PartialEq)]
enum Ops {
    All,
    /// Lookups only: for reference rows whose writes would just repeat another row's.
    Gets,
}

fn bench_map<M: StMap>(
    c: &mut Criterion,
    n: u64,
    keys: &OnceLock<Keys>,
    name: &str,
    ops: Ops,
    make: impl Fn() -> M,
) {
    // Built on first use: criterion calls a bench closure once per sample, and not at all when
    // a filter on the command line skips the benchmark.
    let state: RefCell<Option<M>> = RefCell::new(None);
    let with_map = |f: &mut dyn FnMut(&mut M, &Keys)| {
        let keys = keys.get_or_init(|| Keys::new(n));
        let mut st = state.borrow_mut();
        let map = st.get_or_insert_with(|| {
            let mut m = make();
            let present: Vec<u64> = (0..n).map(key).collect();
            m.insert_batch(&present);
            m
        });
        f(map, keys)
    };

    let id = BenchmarkId::new(name, n);
    let mut g = c.benchmark_group("single/get-hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function(id.clone(), |b| {
        with_map(&mut |map, keys| b.iter_custom(|iters| time_gets(map, &keys.hits, iters)))
    });
    g.finish();

    let mut g = c.benchmark_group("single/get-miss");
    g.throughput(Throughput::Elements(1));
    g.bench_function(id.clone(), |b| {
        with_map(&mut |map, keys| b.iter_custom(|iters| time_gets(map, &keys.misses, iters)))
    });
    g.finish();
    if ops == Ops::Gets {
        return;
    }

    let mut g = c.benchmark_group("single/insert");
    g.throughput(Throughput::Elements(1));
    g.bench_function(id.clone(), |b| {
        with_map(&mut |map, keys| {
            b.iter_custom(|iters| {
                time_writes(map, &keys.fresh, iters, M::insert_batch, M::remove_batch)
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("single/remove");
    g.throughput(Throughput::Elements(1));
    g.bench_function(id, |b| {
        with_map(&mut |map, keys| {
            b.iter_custom(|iters| {
                time_writes(map, &keys.hits, iters, M::remove_batch, M::insert_batch)
            })
        })
    });
    g.finish();
}

fn single_thread(c: &mut Criterion) {
    let sizes: &[u64] = if common::quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    for &n in sizes {
        let keys = OnceLock::new();
        let keys = &keys;
        bench_map(c, n, keys, "epochmap", Ops::All, || {
            Epoch(EpochMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "flat-epochmap", Ops::All, || {
            Flat(FlatEpochMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "epochmap-pinned", Ops::All, || {
            EpochPinned(EpochMap::with_hasher(hasher()))
        });
        // Gets only: its writes through `pin()` would repeat flat-epochmap's one-call rows.
        bench_map(c, n, keys, "flat-epochmap-pinned", Ops::Gets, || {
            FlatPinned(FlatEpochMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "papaya", Ops::All, || {
            Papaya(papaya::HashMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "papaya-pinned", Ops::All, || {
            PapayaPinned(papaya::HashMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "dashmap", Ops::All, || {
            Dash(dashmap::DashMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "scc", Ops::All, || {
            Scc(scc::HashMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "scc-index", Ops::All, || {
            SccIndex(scc::HashIndex::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "hashbrown", Ops::All, || {
            Brown(hashbrown::HashMap::with_hasher(hasher()))
        });
        bench_map(c, n, keys, "hashbrown+pin", Ops::Gets, || {
            BrownPin(Brown(hashbrown::HashMap::with_hasher(hasher())))
        });
        bench_map(c, n, keys, "std", Ops::All, || {
            Std(StdHashMap::with_hasher(hasher()))
        });
    }
}

criterion_group! {
    name = benches;
    config = common::criterion(0.2, 0.6, 10);
    targets = single_thread
}
criterion_main!(benches);
