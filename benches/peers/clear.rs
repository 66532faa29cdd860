//! What emptying a map costs the caller, at 1K / 100K / 1M `u64 -> u64` entries, and how long
//! until the memory is back.
//!
//! `clear/latency` (the caller's cost of one call; the map is filled outside the timing and
//! dropped outside it afterwards):
//! - epochmap `clear()` and `clear_keep_capacity()` (O(shards): swap tables, retire the old ones);
//!   every epochmap row is repeated as `flat-epochmap` (`FlatEpochMap`, the same map with its
//!   entries stored inline in the table), here and in `clear/memory-back`;
//! - dashmap `clear()` (a `retain(|_, _| false)` over every shard), papaya `clear()`, scc `clear()`;
//! - a remove loop over every key (epochmap and dashmap);
//! - dropping the map and creating a new one (epochmap and dashmap).
//!
//! `clear/memory-back` (from the call until the memory is back with the allocator):
//! - epochmap `clear()` followed by `wait_for_reclamation` (the background reclaimer frees the
//!   retired tables and entries);
//! - dashmap `clear()` followed by `shrink_to_fit()` (dashmap keeps its capacity after `clear`);
//! - epochmap drop + re-create (drop frees inline).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

mod common;
use common::{
    dash_filled, epoch_filled, flat_filled, hasher, key, strategy, Dash, Epoch, FlatEpoch, Hasher,
};

fn papaya_filled(n: u64) -> papaya::HashMap<u64, u64, Hasher> {
    let m = papaya::HashMap::with_hasher(hasher());
    {
        let p = m.pin();
        for i in 0..n {
            p.insert(key(i), i);
        }
    }
    m
}

fn scc_filled(n: u64) -> scc::HashMap<u64, u64, Hasher> {
    let m = scc::HashMap::with_hasher(hasher());
    for i in 0..n {
        m.upsert(key(i), i);
    }
    m
}

fn clear(c: &mut Criterion) {
    let sizes: &[u64] = if common::quick() {
        &[1_000, 10_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };

    let mut g = c.benchmark_group("clear/latency");
    g.sampling_mode(SamplingMode::Flat);
    for &n in sizes {
        strategy(
            &mut g,
            "epochmap clear",
            n,
            || epoch_filled(n),
            |m| {
                m.clear();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "epochmap clear_keep_capacity",
            n,
            || epoch_filled(n),
            |m| {
                m.clear_keep_capacity();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "epochmap remove loop",
            n,
            || epoch_filled(n),
            |m| {
                for i in 0..n {
                    m.remove(&key(i));
                }
                (m, ())
            },
        );
        strategy(
            &mut g,
            "epochmap drop+new",
            n,
            || epoch_filled(n),
            |m| {
                drop(m);
                (Epoch::with_hasher(hasher()), ())
            },
        );
        strategy(
            &mut g,
            "flat-epochmap clear",
            n,
            || flat_filled(n),
            |m| {
                m.clear();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "flat-epochmap clear_keep_capacity",
            n,
            || flat_filled(n),
            |m| {
                m.clear_keep_capacity();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "flat-epochmap remove loop",
            n,
            || flat_filled(n),
            |m| {
                for i in 0..n {
                    m.remove(&key(i));
                }
                (m, ())
            },
        );
        strategy(
            &mut g,
            "flat-epochmap drop+new",
            n,
            || flat_filled(n),
            |m| {
                drop(m);
                (FlatEpoch::with_hasher(hasher()), ())
            },
        );
        strategy(
            &mut g,
            "dashmap clear",
            n,
            || dash_filled(n),
            |m| {
                m.clear();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "dashmap remove loop",
            n,
            || dash_filled(n),
            |m| {
                for i in 0..n {
                    m.remove(&key(i));
                }
                (m, ())
            },
        );
        strategy(
            &mut g,
            "dashmap drop+new",
            n,
            || dash_filled(n),
            |m| {
                drop(m);
                (Dash::with_hasher(hasher()), ())
            },
        );
        strategy(
            &mut g,
            "papaya clear",
            n,
            || papaya_filled(n),
            |m| {
                m.pin().clear();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "scc clear",
            n,
            || scc_filled(n),
            |m| {
                m.clear();
                (m, ())
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("clear/memory-back");
    g.sampling_mode(SamplingMode::Flat);
    for &n in sizes {
        strategy(
            &mut g,
            "epochmap clear+reclaimed",
            n,
            || epoch_filled(n),
            |m| {
                m.clear();
                let done = m.wait_for_reclamation(Duration::from_secs(30));
                assert!(done, "reclamation did not finish within 30 s");
                (m, ())
            },
        );
        strategy(
            &mut g,
            "epochmap drop+new",
            n,
            || epoch_filled(n),
            |m| {
                drop(m);
                (Epoch::with_hasher(hasher()), ())
            },
        );
        strategy(
            &mut g,
            "flat-epochmap clear+reclaimed",
            n,
            || flat_filled(n),
            |m| {
                m.clear();
                let done = m.wait_for_reclamation(Duration::from_secs(30));
                assert!(done, "reclamation did not finish within 30 s");
                (m, ())
            },
        );
        strategy(
            &mut g,
            "flat-epochmap drop+new",
            n,
            || flat_filled(n),
            |m| {
                drop(m);
                (FlatEpoch::with_hasher(hasher()), ())
            },
        );
        strategy(
            &mut g,
            "dashmap clear+shrink_to_fit",
            n,
            || dash_filled(n),
            |m| {
                m.clear();
                m.shrink_to_fit();
                (m, ())
            },
        );
        strategy(
            &mut g,
            "dashmap drop+new",
            n,
            || dash_filled(n),
            |m| {
                drop(m);
                (Dash::with_hasher(hasher()), ())
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // Flat sampling, 10 samples, (almost) no warm-up: every timed call needs a fresh fill, see
    // `time_op`.
    config = common::criterion(1e-6, 0.5, 10);
    targets = clear
}
criterion_main!(benches);
