//! The example cache's async form (`BoundedCache::get_or_load_async`, over the map's
//! `get_or_load_async`) on a multi-threaded tokio runtime: one load per key across tasks,
//! cancelled leaders and waiters strand nobody, the bound holds, and the future is `Send`.
//!
//! `EpochMap` only: the example cache is built on `EpochMap` (it lives in `examples/`), and its
//! `Slot` keeps an `AtomicU64` recency stamp that readers bump through the `&V` of a hit. In a
//! `FlatEpochMap` a value is copied when its table is rebuilt, so such a bump can land in the old
//! copy and be lost; the cache's map-level operations (`compute`, loads) run against both maps in
//! `cache_compute.rs`, `api.rs` and the other shared tests.

#[path = "../examples/cache/bounded.rs"]
#[allow(dead_code)] // each program and test uses a part of the cache
mod bounded;
#[path = "../examples/cache/reference.rs"]
mod reference;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bounded::{BoundedCache, CacheConfig};
use reference::Zipf;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn value_of(key: u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabcd
}

/// Compile-time: the cache's async load can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn the_future_is_send(cache: &'static BoundedCache<String, Arc<str>>) {
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    spawnable(cache.get_or_load_async("k".to_string(), async { Arc::from("v") }));
}

#[test]
fn tasks_asking_for_the_same_keys_load_each_once() {
    const TASKS: u64 = 64;
    const KEYS: u64 = 40;
    let cache = Arc::new(BoundedCache::with_config(
        CacheConfig::new(KEYS as usize).shards(1),
    ));
    let loads: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    runtime().block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
                tokio::spawn(async move {
                    for i in 0..KEYS {
                        let key = (i + t * 7) % KEYS;
                        let loads = Arc::clone(&loads);
                        let value = cache
                            .get_or_load_async(key, async move {
                                *loads.lock().unwrap().entry(key).or_default() += 1;
                                // Long enough that other tasks ask for the key meanwhile.
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                value_of(key)
                            })
                            .await;
                        assert_eq!(value, value_of(key));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let loads = loads.lock().unwrap();
    assert_eq!(loads.len(), KEYS as usize);
    assert!(
        loads.values().all(|&n| n == 1),
        "a key loaded twice: {loads:?}"
    );
    let s = cache.stats();
    assert_eq!((s.loads, s.evictions), (KEYS, 0));
    assert_eq!(s.hits + s.misses, TASKS * KEYS);
    assert!(
        s.misses > KEYS,
        "no task ever waited for another's load: {s:?}"
    );
    assert_eq!(
        (cache.len(), cache.occupancy()),
        (KEYS as usize, KEYS as usize)
    );
}

#[test]
fn a_cancelled_leader_hands_the_load_to_a_waiter() {
    let cache = Arc::new(BoundedCache::new(10));
    runtime().block_on(async {
        let started = Arc::new(AtomicBool::new(false));
        let leader = {
            let (cache, started) = (Arc::clone(&cache), Arc::clone(&started));
            tokio::spawn(async move {
                cache
                    .get_or_load_async(1, async move {
                        started.store(true, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        unreachable!("the leader is cancelled long before")
                    })
                    .await
            })
        };
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let waiters: Vec<_> = (0..8u64)
            .map(|w| {
                let cache = Arc::clone(&cache);
                tokio::spawn(
                    async move { cache.get_or_load_async(1, async move { 100 + w }).await },
                )
            })
            .collect();
        // Let every waiter register with the leader's load, then cancel the leader.
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        let mut got = Vec::new();
        for waiter in waiters {
            got.push(
                tokio::time::timeout(Duration::from_secs(10), waiter)
                    .await
                    .expect("a waiter was stranded by the cancelled leader")
                    .unwrap(),
            );
        }
        // One waiter took the load over; everyone got its value.
        assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
        assert!((100..108).contains(&got[0]));
    });
    let s = cache.stats();
    assert_eq!(
        s.loads, 1,
        "the cancelled load is not counted, its successor is"
    );
    assert_eq!((cache.len(), cache.occupancy()), (1, 1));
}

#[test]
fn cancelled_waiters_leave_the_load_to_finish() {
    let cache = Arc::new(BoundedCache::new(10));
    let loads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicBool::new(false));
    runtime().block_on(async {
        let leader = {
            let (cache, loads, release) =
                (Arc::clone(&cache), Arc::clone(&loads), Arc::clone(&release));
            tokio::spawn(async move {
                cache
                    .get_or_load_async(7, async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        // Runs until every waiter below has given up.
                        while !release.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        70
                    })
                    .await
            })
        };
        while loads.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Waiters that give up after 10 ms: their futures are dropped mid-wait.
        for _ in 0..16 {
            let gave_up = tokio::time::timeout(
                Duration::from_millis(10),
                cache.get_or_load_async(7, async { unreachable!("a waiter never loads here") }),
            )
            .await;
            assert!(gave_up.is_err());
        }
        release.store(true, Ordering::SeqCst);
        assert_eq!(leader.await.unwrap(), 70);
        // Cached now: a new caller hits without loading.
        assert_eq!(
            cache
                .get_or_load_async(7, async { unreachable!("cached") })
                .await,
            70
        );
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loads, 1);
}

#[test]
fn bound_holds_under_concurrent_async_loads_and_invalidations() {
    const CAPACITY: usize = 64;
    let cache = Arc::new(BoundedCache::with_config(
        CacheConfig::new(CAPACITY).shards(2),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (cache, done) = (Arc::clone(&cache), Arc::clone(&done));
        std::thread::spawn(move || {
            // The count, not `len()`: on two shards `len()` sums the shards' counts one after
            // another, so a look racing an eviction from shard 0 and an admission into shard 1
            // counts both entries (it is exact at rest, checked below). The map never holds
            // more entries than the count, which the one-shard test in tests/cache.rs and the
            // loom models check at every step.
            while !done.load(Ordering::Relaxed) {
                assert!(cache.occupancy() <= CAPACITY);
                std::thread::yield_now();
            }
        })
    };
    let zipf = Arc::new(Zipf::new(1_000, 0.8));
    runtime().block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|t| {
                let (cache, zipf) = (Arc::clone(&cache), Arc::clone(&zipf));
                tokio::spawn(async move {
                    let mut rng = reference::Rng::new(t + 1);
                    for i in 0..1_000 {
                        if t == 0 && i % 100 == 0 {
                            cache.invalidate_all();
                        }
                        let key = zipf.key(&mut rng);
                        let value = cache
                            .get_or_load_async(key, async move {
                                tokio::task::yield_now().await;
                                value_of(key)
                            })
                            .await;
                        assert_eq!(value, value_of(key));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(cache.occupancy(), cache.len());
    assert!(cache.len() <= CAPACITY);
    let s = cache.stats();
    assert!(s.evictions > 0 && s.invalidations == 10, "{s:?}");
}
