//! A bounded, multi-threaded loading cache on `EpochMap`, measured.
//!
//! Run with `cargo run --release --example cache`.
//!
//! The cache itself (`BoundedCache`, in `examples/cache/bounded.rs`, shared with `tests/cache.rs`)
//! loads misses single-flight with the loader off every lock (`get_or_load_ref`), evicts by
//! sampled LRU (`Pinned::sample`, then `remove_if` of the sampled entry if it is still the same),
//! expires TTLs with an incremental hand over `Pinned::scan`, and invalidates everything in
//! O(shards) with `drain`. This program:
//!
//! 1. replays one Zipf trace, single-threaded, through the cache (1, 8 and 16 samples per
//!    eviction) and through an exact LRU of the same capacity and an unbounded map, the
//!    references for the hit ratio;
//! 2. runs every core against one cache and prints the hit ratio, throughput, how many loads ran
//!    for how many misses, and the largest occupancy a watcher saw;
//! 3. lets a full cache's TTL pass and times the expiry hand removing it, step by step;
//! 4. times lookups and loads of other keys while a 300 ms load runs in the same shard;
//! 5. holds an epoch guard while misses evict entries, and shows the retired memory waiting for
//!    it in `memory_stats()` and coming back once it drops;
//! 6. invalidates, waits for reclamation, and shows `memory_stats()` at each step.

#[path = "cache/bounded.rs"]
#[allow(dead_code)] // each program and test uses a part of the cache
mod bounded;
#[path = "cache/reference.rs"]
mod reference;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bounded::{BoundedCache, CacheConfig};
use epochmap::MemoryStats;
use reference::{compute, lru_hit_ratio, mib, unbounded_hit_ratio, Rng, Value, Zipf};

const CAPACITY: usize = 50_000;
const KEYS: usize = 1_000_000;
const ZIPF_S: f64 = 0.99;
const TRACE_OPS: usize = 2_000_000;
const OPS_PER_THREAD: usize = 2_000_000;

/// The cache's loader: the shared workload's computation.
fn load(key: &u64) -> Value {
    compute(*key)
}

fn show(label: &str, s: &MemoryStats) {
    println!(
        "  {label:<28} len {:>6}  tables {:>5.2} MiB  entries {:>5.2} MiB  pending {:>5.2} MiB  \
         drain {:>5.2} MiB  allocated {:>5.2} MiB",
        s.len,
        mib(s.table_bytes),
        mib(s.entry_bytes),
        mib(s.pending_bytes),
        mib(s.drain_bytes),
        mib(s.allocated_bytes),
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[at].as_secs_f64() * 1e3
}

fn single_thread(zipf: &Zipf) {
    let trace = zipf.trace(0x1234_5678_9abc_def1, TRACE_OPS);
    println!(
        "1. one thread, {TRACE_OPS} lookups, Zipf({ZIPF_S}) over {KEYS} keys, capacity {CAPACITY}:"
    );
    println!(
        "  exact LRU {:.2}%   unbounded (upper bound) {:.2}%",
        100.0 * lru_hit_ratio(&trace, CAPACITY),
        100.0 * unbounded_hit_ratio(&trace)
    );
    for samples in [1, 8, 16] {
        let cache = BoundedCache::with_config(CacheConfig::new(CAPACITY).samples(samples));
        let start = Instant::now();
        for key in &trace {
            cache.get_or_load(key, load);
        }
        let secs = start.elapsed().as_secs_f64();
        let s = cache.stats();
        println!(
            "  sampled LRU, {samples:>2} samples: hit ratio {:.2}%   {:.2} Mop/s (loads included)   \
             {} evictions, len {} <= {CAPACITY}",
            100.0 * s.hit_ratio(),
            TRACE_OPS as f64 / secs / 1e6,
            s.evictions,
            cache.len()
        );
    }
}

fn every_core(zipf: &Arc<Zipf>) -> Arc<BoundedCache<u64, Value>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cache = Arc::new(BoundedCache::new(CAPACITY));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (cache, done) = (Arc::clone(&cache), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut max = 0;
            while !done.load(Ordering::Relaxed) {
                max = max.max(cache.occupancy()).max(cache.len());
                std::thread::sleep(Duration::from_micros(200));
            }
            max
        })
    };
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (cache, zipf, barrier) =
                (Arc::clone(&cache), Arc::clone(zipf), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // Pre-drawn so the timing is the cache's, not the generator's.
                let trace = zipf.trace(0xdead_beef ^ (t << 32), OPS_PER_THREAD);
                barrier.wait();
                let start = Instant::now();
                for key in trace {
                    let value = cache.get_or_load(&key, load);
                    assert_eq!(value[0], key, "a hit returns the value loaded for its key");
                }
                start.elapsed()
            })
        })
        .collect();
    let busiest = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .max()
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let max_seen = watcher.join().unwrap();
    let s = cache.stats();
    let ops = threads * OPS_PER_THREAD;
    println!(
        "\n2. {threads} threads, {ops} get_or_load calls on one cache (Zipf({ZIPF_S}), capacity {CAPACITY}):"
    );
    println!(
        "  throughput {:.2} Mop/s   hit ratio {:.2}%   loads {} for {} misses ({} waited for another's load)",
        ops as f64 / busiest.as_secs_f64() / 1e6,
        100.0 * s.hit_ratio(),
        s.loads,
        s.misses,
        s.misses - s.loads
    );
    println!(
        "  evictions {}   largest len/occupancy a watcher saw: {max_seen} (capacity {CAPACITY})",
        s.evictions
    );
    show("memory after the run", &cache.memory_stats());
    cache
}

fn expiry() {
    const TTL: Duration = Duration::from_millis(50);
    const BUDGET: usize = 256;
    // No expiry work on admissions: here the hand moves only when `expire` is called.
    let cache = BoundedCache::with_config(CacheConfig::new(CAPACITY).ttl(TTL).expiry_budget(0));
    for key in 0..CAPACITY as u64 {
        cache.get_or_load(&key, load);
    }
    std::thread::sleep(TTL + Duration::from_millis(10));
    let (mut calls, mut expired, mut slowest) = (0, 0, Duration::ZERO);
    let mut passes = 0;
    let start = Instant::now();
    while passes < 2 {
        let step_start = Instant::now();
        let step = cache.expire(BUDGET);
        slowest = slowest.max(step_start.elapsed());
        calls += 1;
        expired += step.expired;
        passes += usize::from(step.pass_complete);
    }
    let total = start.elapsed();
    println!(
        "\n3. TTL {} ms passed for {CAPACITY} entries; expiry hand, {BUDGET} buckets per call:",
        TTL.as_millis()
    );
    println!(
        "  {calls} calls over two passes removed {expired}; {:.1} us per call on average, slowest {:.1} us; len now {}",
        total.as_secs_f64() * 1e6 / calls as f64,
        slowest.as_secs_f64() * 1e6,
        cache.len()
    );
}

fn slow_load() {
    const SLOW: Duration = Duration::from_millis(300);
    // One shard: every key shares the slow load's writer lock, the case a lock-held loader stalls.
    let cache: Arc<BoundedCache<u64, Value>> = Arc::new(BoundedCache::with_config(
        CacheConfig::new(10_000).shards(1),
    ));
    for key in 1..1_000 {
        cache.get_or_load(&key, load);
    }
    let started = Arc::new(Barrier::new(2));
    let slow = {
        let (cache, started) = (Arc::clone(&cache), Arc::clone(&started));
        std::thread::spawn(move || {
            cache.get_or_load(&0, |key| {
                started.wait();
                std::thread::sleep(SLOW);
                load(key)
            })
        })
    };
    started.wait();
    let load_start = Instant::now();
    let (mut hits, mut misses) = (Vec::new(), Vec::new());
    let mut rng = Rng::new(7);
    let mut fresh = 1_000_000u64;
    while load_start.elapsed() < SLOW - Duration::from_millis(50) {
        let hit = 1 + rng.next_u64() % 998;
        let start = Instant::now();
        cache.get(&hit);
        hits.push(start.elapsed());
        let start = Instant::now();
        cache.get_or_load(&fresh, load);
        misses.push(start.elapsed());
        fresh += 1;
    }
    slow.join().unwrap();
    println!(
        "\n4. during a {} ms load of one key (1 shard), calls for other keys on another thread:",
        SLOW.as_millis()
    );
    for (what, times) in [("get", &mut hits), ("get_or_load miss", &mut misses)] {
        times.sort();
        println!(
            "  {} x {what:<16}: median {:.4} ms, p99 {:.4} ms, max {:.3} ms",
            times.len(),
            percentile(times, 0.5),
            percentile(times, 0.99),
            percentile(times, 1.0)
        );
    }
}

fn held_guard(cache: &BoundedCache<u64, Value>) {
    const CHURN: u64 = 200_000;
    // Epoch guards are process-wide: a `Pinned` of any map (here an unrelated one) holds back
    // the reclamation of everything retired after it, in every map.
    let other: epochmap::EpochMap<u64, u64> = epochmap::EpochMap::new();
    assert!(cache.wait_for_reclamation(Duration::from_secs(30)));
    let before = cache.memory_stats();
    let held = other.pin();
    // Fresh keys: each one loads and evicts one entry, which is retired and waits for `held`.
    for key in 0..CHURN {
        cache.get_or_load(&(u64::MAX / 2 + key), load);
    }
    let during = cache.memory_stats();
    drop(held);
    let start = Instant::now();
    let reclaimed = cache.wait_for_reclamation(Duration::from_secs(30));
    let waited = start.elapsed();
    println!("\n5. a guard held while {CHURN} misses evicted as many entries:");
    show("before", &before);
    show("with the guard held", &during);
    show("after it dropped", &cache.memory_stats());
    println!(
        "  reclaimed {reclaimed} {:.1} ms after the guard dropped (the values' own heap, an Arc of \
         32 bytes each here, was held back too and is not in these counts)",
        waited.as_secs_f64() * 1e3
    );
}

fn invalidation(cache: &BoundedCache<u64, Value>) {
    println!("\n6. invalidate_all on the cache of step 2:");
    show("before", &cache.memory_stats());
    let start = Instant::now();
    cache.invalidate_all();
    let took = start.elapsed();
    assert!(cache.is_empty());
    show("right after invalidate_all", &cache.memory_stats());
    let start = Instant::now();
    let reclaimed = cache.wait_for_reclamation(Duration::from_secs(30));
    let waited = start.elapsed();
    let stats = cache.memory_stats();
    show("after reclamation", &stats);
    println!(
        "  invalidate_all returned in {:.0} us; reclaimed {reclaimed} {:.1} ms later; entries dropped \
         by reclamation so far: {}",
        took.as_secs_f64() * 1e6,
        waited.as_secs_f64() * 1e3,
        stats.entries_reclaimed
    );
}

fn main() {
    let zipf = Arc::new(Zipf::new(KEYS, ZIPF_S));
    single_thread(&zipf);
    let cache = every_core(&zipf);
    expiry();
    slow_load();
    held_guard(&cache);
    invalidation(&cache);
}
