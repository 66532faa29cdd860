//! A bounded, multi-threaded loading cache on `EpochMap`, measured.
//!
//! Run with `cargo run --release --example cache`.
//!
//! The cache itself (`BoundedCache`, in `examples/cache/bounded.rs`, shared with `tests/cache.rs`)
//! uses batched LRU eviction, coalesces concurrent loads of a key into one (`get_or_load_ref`:
//! single-flight, the loader runs with no map lock held), and invalidates everything in O(shards)
//! with `clear()`. This program:
//!
//! 1. replays one skewed trace, single-threaded, through `BoundedCache` and through an exact LRU,
//!    to show what batching the LRU costs in hit ratio;
//! 2. runs every core against one cache with a periodic full invalidation, and prints the hit
//!    ratio, throughput, how many loads ran and `memory_stats()`;
//! 3. invalidates, waits for reclamation, and shows the memory coming back.

#[path = "cache/bounded.rs"]
mod bounded;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bounded::BoundedCache;
use epochmap::MemoryStats;

const CAPACITY: usize = 50_000;
const KEY_SPACE: u64 = 1_000_000;
const TRACE_OPS: usize = 1_000_000;
const OPS_PER_THREAD: u64 = 1_000_000;
const INVALIDATE_EVERY: Duration = Duration::from_millis(250);

/// xorshift64*: a small, fast, deterministic generator for the traces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A skewed key: `P(key < x) = (x / KEY_SPACE)^(1/12)`, so a small head of keys takes most
    /// of the traffic (the hottest 5% of keys get about 78% of lookups) over a long tail, as in
    /// real cache workloads.
    fn key(&mut self) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (KEY_SPACE as f64 * u.powi(12)) as u64
    }
}

/// The "expensive" computation the cache saves: a few hundred rounds of mixing.
fn load(key: &u64) -> Arc<[u64; 4]> {
    let mut x = *key ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    Arc::new([*key, x, x.rotate_left(17), !x])
}

/// An exact LRU (hash map + ordered recency index), the yardstick for the hit ratio.
struct ExactLru {
    capacity: usize,
    stamp_of: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
    clock: u64,
}

impl ExactLru {
    fn access(&mut self, key: u64) -> bool {
        self.clock += 1;
        let hit = match self.stamp_of.insert(key, self.clock) {
            Some(old) => {
                self.by_stamp.remove(&old);
                true
            }
            None => false,
        };
        self.by_stamp.insert(self.clock, key);
        if self.stamp_of.len() > self.capacity {
            let (_, oldest) = self.by_stamp.pop_first().unwrap();
            self.stamp_of.remove(&oldest);
        }
        hit
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn show(label: &str, s: &MemoryStats) {
    println!(
        "  {label:<26} len {:>7}  tables {:>6.2} MiB  entries {:>6.2} MiB  pending {:>6.2} MiB",
        s.len,
        mib(s.table_bytes),
        mib(s.entry_bytes),
        mib(s.pending_bytes)
    );
}

fn main() {
    // 1. Batched LRU against exact LRU on the same trace.
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let trace: Vec<u64> = (0..TRACE_OPS).map(|_| rng.key()).collect();
    let mut exact = ExactLru {
        capacity: CAPACITY,
        stamp_of: HashMap::new(),
        by_stamp: BTreeMap::new(),
        clock: 0,
    };
    let exact_hits = trace.iter().filter(|&&k| exact.access(k)).count();
    let cache = BoundedCache::new(CAPACITY);
    let start = Instant::now();
    for &k in &trace {
        cache.get_or_load(k, load);
    }
    let single_secs = start.elapsed().as_secs_f64();
    let s = cache.stats();
    println!(
        "single thread, {TRACE_OPS} lookups over {KEY_SPACE} skewed keys, capacity {CAPACITY}:"
    );
    println!(
        "  hit ratio: batched LRU {:.2}%  vs exact LRU {:.2}%  ({} evictions, len {} <= {})",
        100.0 * s.hit_ratio(),
        100.0 * exact_hits as f64 / TRACE_OPS as f64,
        s.evictions,
        cache.len(),
        cache.capacity()
    );
    println!(
        "  throughput {:.2} Mop/s (loads included)",
        TRACE_OPS as f64 / single_secs / 1e6
    );
    drop(cache);

    // 2. Every core on one cache, with a periodic full invalidation.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cache = Arc::new(BoundedCache::new(CAPACITY));
    let done = Arc::new(AtomicBool::new(false));
    let invalidator = {
        let (cache, done) = (Arc::clone(&cache), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut max_len = 0;
            loop {
                std::thread::sleep(INVALIDATE_EVERY);
                if done.load(Ordering::Relaxed) {
                    break;
                }
                max_len = max_len.max(cache.occupancy());
                cache.invalidate_all();
            }
            max_len
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                let mut rng = Rng(0xdead_beef_0000_0001 ^ (t << 32));
                for _ in 0..OPS_PER_THREAD {
                    let key = rng.key();
                    let value = cache.get_or_load(key, load);
                    assert_eq!(
                        value[0], key,
                        "a hit must return the value loaded for its key"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let looked_up = cache.get(&0).is_some(); // the hottest key, unless just invalidated
    let max_occupancy = invalidator.join().unwrap();
    let s = cache.stats();
    let ops = threads as u64 * OPS_PER_THREAD;
    println!(
        "\n{threads} threads, {ops} get_or_load calls, full invalidation every {} ms:",
        INVALIDATE_EVERY.as_millis()
    );
    println!(
        "  throughput {:.2} Mop/s   hit ratio {:.2}%   loads {} for {} misses ({} coalesced)",
        ops as f64 / secs / 1e6,
        100.0 * s.hit_ratio(),
        s.loads,
        s.misses,
        s.misses - s.loads
    );
    println!(
        "  evictions {}   invalidations {}   max occupancy seen {} (capacity {CAPACITY})",
        s.evictions, s.invalidations, max_occupancy
    );
    show("memory after the run", &cache.memory_stats());
    println!("  hottest key cached at the end: {looked_up}");

    // 3. Invalidate and watch the memory come back.
    let start = Instant::now();
    cache.invalidate_all();
    let clear_us = start.elapsed().as_secs_f64() * 1e6;
    assert!(cache.is_empty());
    show("right after invalidate_all", &cache.memory_stats());
    let reclaimed = cache.wait_for_reclamation(Duration::from_secs(30));
    let stats = cache.memory_stats();
    show("after reclamation", &stats);
    println!(
        "  invalidate_all returned in {clear_us:.0} us; reclaimed: {reclaimed}; entries dropped in the background so far: {}",
        stats.entries_reclaimed
    );
}
