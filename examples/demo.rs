//! Threads hammer one map, then it is cleared and its memory comes back.
//!
//! Run with `cargo run --release --example demo`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use epochmap::{EpochMap, MemoryStats};

const KEYS: u64 = 1_000_000;
const OPS_PER_THREAD: u64 = 2_000_000;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn show(label: &str, s: &MemoryStats) {
    println!(
        "{label:<28} len {:>9}  tables {:>8.2} MiB  entries {:>8.2} MiB  pending {:>8.2} MiB",
        s.len,
        mib(s.table_bytes),
        mib(s.entry_bytes),
        mib(s.pending_bytes)
    );
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let map: Arc<EpochMap<u64, u64>> = Arc::new(EpochMap::new());

    let start = Instant::now();
    (0..KEYS).for_each(|k| {
        map.insert(k, k);
    });
    println!(
        "filled {KEYS} keys in {:.0} ms ({} shards)",
        start.elapsed().as_secs_f64() * 1e3,
        map.shard_count()
    );
    show("after fill", &map.memory_stats());

    // A read-heavy mix: 90% get, 5% insert, 5% remove, each thread on its own key stream.
    let start = Instant::now();
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                let mut hits = 0u64;
                for _ in 0..OPS_PER_THREAD {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = x % KEYS;
                    match x % 20 {
                        0 => {
                            map.insert(key, x);
                        }
                        1 => {
                            map.remove(&key);
                        }
                        _ => hits += u64::from(map.get(&key).is_some()),
                    }
                }
                hits
            })
        })
        .collect();
    let hits: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    let ops = threads as u64 * OPS_PER_THREAD;
    println!(
        "{threads} threads, {ops} ops (90% get / 5% insert / 5% remove): {:.1} Mop/s, {hits} hits",
        ops as f64 / secs / 1e6
    );
    show("after mixed load", &map.memory_stats());

    let start = Instant::now();
    map.clear();
    let clear_us = start.elapsed().as_secs_f64() * 1e6;
    show("right after clear", &map.memory_stats());
    println!("clear() returned in {clear_us:.0} us");

    let start = Instant::now();
    let done = map.wait_for_reclamation(Duration::from_secs(30));
    let stats = map.memory_stats();
    show("after reclamation", &stats);
    println!(
        "reclaimed: {done} in {:.0} ms; tables reclaimed {}, buckets skipped as known-empty {}, entries dropped {}",
        start.elapsed().as_secs_f64() * 1e3,
        stats.tables_reclaimed,
        stats.buckets_skipped,
        stats.entries_reclaimed
    );
}
