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
//! epoch reclamation cost by themselves. `floor-flat`, `floor-flat-epoch` and `floor-flat-pinned`
//! are the flat layout's (issue 20): entries inline, but never overwritten in place nor reused
//! before they are reclaimed; then with a pin per operation (or per batch of 64) and reclamation
//! after the epoch's grace period.

//!
//! The maps, workloads, streams and the run loop are in `mixmaps.rs`, shared with the scaling run
//! (`scaling.rs`); this file is the criterion side and the floor models.

use std::sync::OnceLock;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

mod common;
mod flat_proto;
mod floor;
mod mixmaps;
use common::{pick, Zipf};
use mixmaps::{each_map, universe, Case, MapVisitor, MixMap, Workload, WORKLOADS};

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
        let mut case = None;
        let id = BenchmarkId::new(name, threads);
        group.bench_function(id, |b| {
            let case = case.get_or_insert_with(|| {
                let z = zipf.map(|z| z.get_or_init(|| Zipf::new(universe(w), 0.99)));
                Case::new(w, z, threads, stream_len(), &make)
            });
            b.iter_custom(|iters| case.sample(iters));
        });
    }
    group.finish();
}

/// Registers every map of [`each_map`] for one (workload, key distribution).
struct Register<'a, 'z> {
    c: &'a mut Criterion,
    w: Workload,
    dist: &'static str,
    zipf: Option<&'z OnceLock<Zipf>>,
}

impl MapVisitor for Register<'_, '_> {
    fn visit<M: MixMap>(&mut self, name: &str, make: impl Fn() -> M) {
        bench_map(self.c, self.w, self.dist, self.zipf, name, make);
    }
}

/// Operations in each thread's stream (a thread wraps around to the start of its stream when it
/// runs out).
fn stream_len() -> usize {
    pick(1 << 20, 1 << 14)
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
            each_map(&mut Register {
                c,
                w,
                dist,
                zipf: z,
            });
            if !w.name.starts_with("read-heavy") {
                floor::each_floor(&mut Register {
                    c,
                    w,
                    dist,
                    zipf: z,
                });
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
