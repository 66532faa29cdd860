//! Iteration throughput: visiting every entry of a 1M-entry `u64 -> u64` map once, summing the
//! values, one thread. epochmap `iter()` and `pin().iter()` (and the same, with `retain`, for
//! `FlatEpochMap` as `flat-epochmap`), papaya's pinned `iter()`, dashmap
//! `iter()`, scc `scan`, `RwLock<std HashMap>` under one read lock, and hashbrown / std as the
//! single-thread limit; a full `Pinned::scan` at 1024 buckets per call in the same group, and the
//! latency of `Pinned::sample(16, seed)` in its own. The `-retain` rows visit every entry through
//! `retain` (keeping them all): a locked walk with no per-entry handle, the yardstick issue 12 sets
//! `iter()` against (within 2x of epochmap's `retain`).

use std::collections::HashMap as StdHashMap;
use std::sync::RwLock;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use epochmap::{EpochMap, FlatEpochMap, ScanCursor};

mod common;
use common::{hasher, key, pick};

fn iter(c: &mut Criterion) {
    let n: u64 = pick(1_000_000, 10_000);
    let entries = || (0..n).map(|i| (key(i), i));
    let mut g = c.benchmark_group("iter/sum-values");
    g.throughput(Throughput::Elements(n));

    let epoch = EpochMap::with_hasher(hasher());
    entries().for_each(|(k, v)| {
        epoch.insert(k, v);
    });
    g.bench_function(BenchmarkId::new("epochmap", n), |b| {
        b.iter(|| {
            epoch
                .iter()
                .map(|r| *r.value())
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function(BenchmarkId::new("epochmap-pinned", n), |b| {
        b.iter(|| {
            epoch
                .pin()
                .iter()
                .map(|(_, v)| *v)
                .fold(0u64, u64::wrapping_add)
        })
    });
    // A full `Pinned::scan` at 1024 home buckets per call, a fresh pin per call (as a CLOCK hand
    // or an expiry sweep would run it): the same visit of every entry, resumable.
    g.bench_function(BenchmarkId::new("epochmap-scan-1024", n), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            let mut cursor = ScanCursor::default();
            loop {
                let pinned = epoch.pin();
                let (found, next) = pinned.scan(cursor, 1024);
                sum = found.iter().fold(sum, |s, (_, v)| s.wrapping_add(**v));
                match next {
                    Some(next) => cursor = next,
                    None => return sum,
                }
            }
        })
    });
    g.bench_function(BenchmarkId::new("epochmap-retain", n), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            epoch.retain(|_, v| {
                sum = sum.wrapping_add(*v);
                true
            });
            sum
        })
    });
    drop(epoch);

    let flat = FlatEpochMap::with_hasher(hasher());
    entries().for_each(|(k, v)| {
        flat.insert(k, v);
    });
    g.bench_function(BenchmarkId::new("flat-epochmap", n), |b| {
        b.iter(|| {
            flat.iter()
                .map(|r| *r.value())
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function(BenchmarkId::new("flat-epochmap-pinned", n), |b| {
        b.iter(|| {
            flat.pin()
                .iter()
                .map(|(_, v)| *v)
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function(BenchmarkId::new("flat-epochmap-retain", n), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            flat.retain(|_, v| {
                sum = sum.wrapping_add(*v);
                true
            });
            sum
        })
    });
    drop(flat);

    let papaya = papaya::HashMap::with_hasher(hasher());
    entries().for_each(|(k, v)| {
        papaya.pin().insert(k, v);
    });
    g.bench_function(BenchmarkId::new("papaya-pinned", n), |b| {
        b.iter(|| {
            papaya
                .pin()
                .iter()
                .map(|(_, v)| *v)
                .fold(0u64, u64::wrapping_add)
        })
    });
    drop(papaya);

    let dash = dashmap::DashMap::with_hasher(hasher());
    entries().for_each(|(k, v)| {
        dash.insert(k, v);
    });
    g.bench_function(BenchmarkId::new("dashmap", n), |b| {
        b.iter(|| {
            dash.iter()
                .map(|r| *r.value())
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function(BenchmarkId::new("dashmap-retain", n), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            dash.retain(|_, v| {
                sum = sum.wrapping_add(*v);
                true
            });
            sum
        })
    });
    drop(dash);

    let scc = scc::HashMap::with_hasher(hasher());
    entries().for_each(|(k, v)| {
        let _ = scc.insert(k, v);
    });
    g.bench_function(BenchmarkId::new("scc", n), |b| {
        b.iter(|| {
            let mut sum = 0u64;
            scc.scan(|_, v| sum = sum.wrapping_add(*v));
            sum
        })
    });
    drop(scc);

    let mut locked = StdHashMap::with_hasher(hasher());
    locked.extend(entries());
    let rw = RwLock::new(locked);
    g.bench_function(BenchmarkId::new("rwlock-std", n), |b| {
        b.iter(|| {
            rw.read()
                .unwrap()
                .values()
                .copied()
                .fold(0u64, u64::wrapping_add)
        })
    });
    drop(rw);

    let mut brown = hashbrown::HashMap::with_hasher(hasher());
    brown.extend(entries());
    g.bench_function(BenchmarkId::new("hashbrown", n), |b| {
        b.iter(|| brown.values().copied().fold(0u64, u64::wrapping_add))
    });
    drop(brown);

    let mut std_map = StdHashMap::with_hasher(hasher());
    std_map.extend(entries());
    g.bench_function(BenchmarkId::new("std", n), |b| {
        b.iter(|| std_map.values().copied().fold(0u64, u64::wrapping_add))
    });
    g.finish();
}

/// `Pinned::sample(16, seed)` on the 1M-entry map: the latency of one sampled-eviction round
/// (pin, 16 distinct random entries, unpin), a new seed each call.
fn sample(c: &mut Criterion) {
    let n: u64 = pick(1_000_000, 10_000);
    let epoch = EpochMap::with_hasher(hasher());
    (0..n).for_each(|i| {
        epoch.insert(key(i), i);
    });
    let mut g = c.benchmark_group("sample/16-distinct");
    g.throughput(Throughput::Elements(1));
    let mut seed = 0u64;
    g.bench_function(BenchmarkId::new("epochmap", n), |b| {
        b.iter(|| {
            seed = seed.wrapping_add(1);
            let pinned = epoch.pin();
            let picked = pinned.sample(16, seed);
            picked.iter().fold(0u64, |s, (_, v)| s.wrapping_add(**v))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion(0.3, 1.0, 10);
    targets = iter, sample
}
criterion_main!(benches);
