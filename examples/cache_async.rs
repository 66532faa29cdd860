//! The example cache from async code: tokio tasks sharing one `BoundedCache` through
//! `get_or_load_async` (the map's runtime-agnostic single-flight load), measured.
//!
//! Run with `cargo run --release --example cache_async`.
//!
//! 1. Many tasks replay Zipf traces through one cache whose loader is async (it yields to the
//!    runtime before computing, as an I/O-bound loader would): throughput, hit ratio against an
//!    exact LRU of the same capacity on the same keys, loads against misses.
//! 2. A 300 ms async load of one key with 1,000 tasks waiting for it, while other tasks keep
//!    using other keys: how many loads ran, and how long the other keys' calls took.
//! 3. The leader of a slow load is cancelled (`tokio::time::timeout`) while tasks wait for it:
//!    one of the waiters takes the load over, nobody is stranded.
//! 4. `memory_stats()` before and after `invalidate_all`.

#[path = "cache/bounded.rs"]
#[allow(dead_code)] // each program and test uses a part of the cache
mod bounded;
#[path = "cache/reference.rs"]
mod reference;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bounded::{BoundedCache, CacheConfig};
use epochmap::MemoryStats;
use reference::{compute, lru_hit_ratio, mib, Value, Zipf};

const CAPACITY: usize = 50_000;
const KEYS: usize = 1_000_000;
const TASKS: usize = 256;
const OPS_PER_TASK: usize = 10_000;

/// An async loader: gives the runtime a turn (as a loader waiting on I/O would), then computes.
async fn load(key: u64) -> Value {
    tokio::task::yield_now().await;
    compute(key)
}

fn show(label: &str, s: &MemoryStats) {
    println!(
        "  {label:<28} len {:>6}  tables {:>5.2} MiB  entries {:>5.2} MiB  pending {:>5.2} MiB  \
         allocated {:>5.2} MiB",
        s.len,
        mib(s.table_bytes),
        mib(s.entry_bytes),
        mib(s.pending_bytes),
        mib(s.allocated_bytes),
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[at].as_secs_f64() * 1e3
}

async fn zipf_tasks(cache: &Arc<BoundedCache<u64, Value>>) {
    let zipf = Zipf::new(KEYS, 0.99);
    let traces: Vec<Vec<u64>> = (0..TASKS)
        .map(|t| zipf.trace(0xa5a5 ^ (t as u64) << 20, OPS_PER_TASK))
        .collect();
    // The reference sees the tasks' keys interleaved round-robin: the order is the runtime's, so
    // this is the like-for-like reference only approximately.
    let interleaved: Vec<u64> = (0..OPS_PER_TASK)
        .flat_map(|i| traces.iter().map(move |trace| trace[i]))
        .collect();
    let lru = lru_hit_ratio(&interleaved, CAPACITY);
    let start = Instant::now();
    let tasks: Vec<_> = traces
        .into_iter()
        .map(|trace| {
            let cache = Arc::clone(cache);
            tokio::spawn(async move {
                for key in trace {
                    let value = cache.get_or_load_async(key, load(key)).await;
                    assert_eq!(value[0], key);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let s = cache.stats();
    let ops = TASKS * OPS_PER_TASK;
    println!(
        "1. {TASKS} tasks, {ops} get_or_load_async calls, Zipf(0.99) over {KEYS} keys, capacity {CAPACITY}:"
    );
    println!(
        "  throughput {:.2} Mop/s   hit ratio {:.2}% (exact LRU on the interleaved keys {:.2}%)",
        ops as f64 / secs / 1e6,
        100.0 * s.hit_ratio(),
        100.0 * lru
    );
    println!(
        "  loads {} for {} misses ({} waited for another task's load)   evictions {}   len {}",
        s.loads,
        s.misses,
        s.misses - s.loads,
        s.evictions,
        cache.len()
    );
}

async fn slow_load(cache: &Arc<BoundedCache<u64, Value>>) {
    const SLOW: Duration = Duration::from_millis(300);
    const WAITERS: usize = 1_000;
    const HOT: u64 = u64::MAX;
    let loads = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let hot = |cache: Arc<BoundedCache<u64, Value>>, loads: Arc<AtomicUsize>| async move {
        cache
            .get_or_load_async(HOT, async move {
                loads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(SLOW).await;
                compute(HOT)
            })
            .await
    };
    let waiting: Vec<_> = (0..WAITERS)
        .map(|_| tokio::spawn(hot(Arc::clone(cache), Arc::clone(&loads))))
        .collect();
    // Meanwhile, tasks using other keys (hits and loads), timed call by call.
    let others: Vec<_> = (0..8u64)
        .map(|t| {
            let cache = Arc::clone(cache);
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut key = 10_000_000 * (t + 1);
                while start.elapsed() < SLOW - Duration::from_millis(50) {
                    for k in [t, key] {
                        let call = Instant::now();
                        cache.get_or_load_async(k, load(k)).await;
                        times.push(call.elapsed());
                    }
                    key += 1;
                }
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in others {
        times.extend(task.await.unwrap());
    }
    for task in waiting {
        assert_eq!(task.await.unwrap()[0], HOT);
    }
    let took = start.elapsed();
    times.sort();
    println!(
        "\n2. {WAITERS} tasks asked for one key with a {} ms async loader: {} load(s) ran, all served after {:.0} ms",
        SLOW.as_millis(),
        loads.load(Ordering::Relaxed),
        took.as_secs_f64() * 1e3
    );
    println!(
        "  meanwhile {} calls for other keys: median {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
}

async fn cancelled_leader(cache: &Arc<BoundedCache<u64, Value>>) {
    const KEY: u64 = u64::MAX - 1;
    let loads = Arc::new(AtomicUsize::new(0));
    let attempt = |cache: Arc<BoundedCache<u64, Value>>, loads: Arc<AtomicUsize>| async move {
        cache
            .get_or_load_async(KEY, async move {
                loads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                compute(KEY)
            })
            .await
    };
    let start = Instant::now();
    let leader = tokio::spawn(tokio::time::timeout(
        Duration::from_millis(30),
        attempt(Arc::clone(cache), Arc::clone(&loads)),
    ));
    while loads.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    let waiters: Vec<_> = (0..100)
        .map(|_| tokio::spawn(attempt(Arc::clone(cache), Arc::clone(&loads))))
        .collect();
    assert!(
        leader.await.unwrap().is_err(),
        "the leader should have timed out"
    );
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap()[0], KEY);
    }
    println!(
        "\n3. the leader of a 100 ms load timed out after 30 ms with 100 tasks waiting: they all got \
         the value {:.0} ms after it started; loads started: {} (the cancelled one and its successor)",
        start.elapsed().as_secs_f64() * 1e3,
        loads.load(Ordering::Relaxed)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let cache = Arc::new(BoundedCache::with_config(CacheConfig::new(CAPACITY)));
    runtime.block_on(async {
        zipf_tasks(&cache).await;
        slow_load(&cache).await;
        cancelled_leader(&cache).await;
    });
    println!("\n4. invalidate_all:");
    show("before", &cache.memory_stats());
    cache.invalidate_all();
    show("right after", &cache.memory_stats());
    assert!(cache.wait_for_reclamation(Duration::from_secs(30)));
    show("after reclamation", &cache.memory_stats());
}
