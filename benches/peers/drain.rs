//! Taking every entry out of a shared map, owned, at 1K / 100K / 1M `u64 -> u64` entries: epochmap's
//! `drain` against dashmap's best equivalents through `&DashMap` (`mem::take` needs `&mut`, which
//! a map shared between threads does not have).
//!
//! `drain/latency` — what the calling thread pays before it can go on (the map is filled outside
//! the timing; what the call returns is consumed and dropped outside it):
//! - epochmap `drain()`: O(shards), swaps the tables out; the entries are moved out later, by
//!   whoever consumes the returned `Drain`;
//! - dashmap `iter+remove`: collect the keys, then `remove` each (the owned pairs come back one
//!   lock round-trip at a time; exactly once even under concurrent writers);
//! - dashmap `iter().collect()+clear`: copy everything out, then `clear` (needs `Clone`, and an
//!   insert between the two steps is lost: not exactly-once under concurrent writers);
//! - dashmap `retain(collect)`: one `retain(|k, v| { out.push(..); false })` pass, each shard under
//!   its write lock (needs `Clone`; exactly once).
//!
//! Every epochmap row is repeated as `flat-epochmap` (`FlatEpochMap`: the same map with entries
//! stored inline in the table).
//!
//! `drain/to-last-item` — from the call until the caller holds the last pair: epochmap
//! `drain().collect()` (the swap, the grace-period wait and the moves), against the same dashmap
//! strategies (which do all their work in the call).
//!
//! Self-contained apart from `common/` (the helpers every bench here shares).

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};

mod common;
use common::{dash_filled, epoch_filled, flat_filled, strategy, Dash};

/// A `Drain` (of either layout) that is consumed, not dropped, when the harness drops it outside
/// the timing, so the entries are moved out as a user would and nothing is left for the reclaimer
/// to do meanwhile.
struct Consume<D: Iterator<Item = (u64, u64)>>(D);

impl<D: Iterator<Item = (u64, u64)>> Drop for Consume<D> {
    fn drop(&mut self) {
        let sum: u64 = self.0.by_ref().map(|(k, v)| k ^ v).sum();
        black_box(sum);
    }
}

fn dash_iter_remove(m: &Dash) -> Vec<(u64, u64)> {
    let keys: Vec<u64> = m.iter().map(|e| *e.key()).collect();
    keys.into_iter().filter_map(|k| m.remove(&k)).collect()
}

fn dash_collect_clear(m: &Dash) -> Vec<(u64, u64)> {
    let out: Vec<(u64, u64)> = m.iter().map(|e| (*e.key(), *e.value())).collect();
    m.clear();
    out
}

fn dash_retain_collect(m: &Dash) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(m.len());
    m.retain(|k, v| {
        out.push((*k, *v));
        false
    });
    out
}

/// The dashmap strategies, registered in `g` for size `n`.
fn dashmap_strategies(g: &mut BenchmarkGroup<'_, WallTime>, n: u64) {
    strategy(
        g,
        "dashmap iter+remove",
        n,
        || dash_filled(n),
        |m| {
            let out = dash_iter_remove(&m);
            (m, out)
        },
    );
    strategy(
        g,
        "dashmap iter().collect()+clear",
        n,
        || dash_filled(n),
        |m| {
            let out = dash_collect_clear(&m);
            (m, out)
        },
    );
    strategy(
        g,
        "dashmap retain(collect)",
        n,
        || dash_filled(n),
        |m| {
            let out = dash_retain_collect(&m);
            (m, out)
        },
    );
}

fn drain(c: &mut Criterion) {
    let sizes: &[u64] = if common::quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };

    let mut g = c.benchmark_group("drain/latency");
    g.sampling_mode(SamplingMode::Flat);
    for &n in sizes {
        strategy(
            &mut g,
            "epochmap drain",
            n,
            || epoch_filled(n),
            |m| {
                let d = Consume(m.drain());
                (m, d)
            },
        );
        strategy(
            &mut g,
            "flat-epochmap drain",
            n,
            || flat_filled(n),
            |m| {
                let d = Consume(m.drain());
                (m, d)
            },
        );
        dashmap_strategies(&mut g, n);
    }
    g.finish();

    let mut g = c.benchmark_group("drain/to-last-item");
    g.sampling_mode(SamplingMode::Flat);
    for &n in sizes {
        strategy(
            &mut g,
            "epochmap drain+collect",
            n,
            || epoch_filled(n),
            |m| {
                let out: Vec<(u64, u64)> = m.drain().collect();
                assert_eq!(out.len() as u64, n);
                (m, out)
            },
        );
        strategy(
            &mut g,
            "flat-epochmap drain+collect",
            n,
            || flat_filled(n),
            |m| {
                let out: Vec<(u64, u64)> = m.drain().collect();
                assert_eq!(out.len() as u64, n);
                (m, out)
            },
        );
        dashmap_strategies(&mut g, n);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Flat sampling, 10 samples, (almost) no warm-up: every timed call needs a fresh fill.
    config = common::criterion(1e-6, 0.5, 10);
    targets = drain
}
criterion_main!(benches);
