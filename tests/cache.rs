//! The example cache (`examples/cache/bounded.rs`): bound, hits, loads, invalidation, eviction order.

#[path = "../examples/cache/bounded.rs"]
mod bounded;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use bounded::BoundedCache;

fn value_of(key: &u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xabcd
}

#[test]
fn bound_is_respected_after_every_operation() {
    let cache = BoundedCache::new(100);
    assert!(cache.is_empty());
    for i in 0..10_000u64 {
        let key = (i * 7919) % 3_000;
        assert_eq!(cache.get_or_load(key, value_of), value_of(&key));
        assert!(cache.len() <= 100, "len {} after {i} ops", cache.len());
        // Single-threaded there are no reservations in flight: the count is exact.
        assert_eq!(cache.occupancy(), cache.len());
    }
    assert!(cache.stats().evictions > 0);
}

#[test]
fn bound_is_respected_under_contention() {
    const THREADS: u64 = 4;
    let cache = Arc::new(BoundedCache::new(256));
    for round in 0..5u64 {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    let mut x = (round << 32) ^ ((t + 1) * 0x2545_f491_4f6c_dd1d);
                    for _ in 0..5_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let key = x % 2_000;
                        assert_eq!(cache.get_or_load(key, value_of), value_of(&key));
                        assert!(cache.occupancy() <= cache.capacity());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        // Quiescent: nothing in flight, so the count equals the entries, which respect the bound.
        assert!(cache.len() <= 256, "round {round}: len {}", cache.len());
        assert_eq!(cache.occupancy(), cache.len(), "round {round}");
    }
}

#[test]
fn hits_return_the_loaded_value_and_do_not_load_again() {
    let cache = BoundedCache::new(1_000);
    assert_eq!(cache.get(&5), None);
    assert_eq!(cache.get_or_load(5, value_of), value_of(&5));
    assert_eq!(cache.get(&5), Some(value_of(&5)));
    assert_eq!(
        cache.get_or_load(5, |_| -> u64 { panic!("a hit must not load") }),
        value_of(&5)
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.loads), (2, 2, 1));
    assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
}

#[test]
fn loader_runs_once_per_key_under_contention() {
    const THREADS: usize = 4;
    const KEYS: u64 = 2_000;
    // Room for every key plus one reservation per thread (a miss reserves before it learns that
    // another thread inserted the key), so nothing is evicted and each key must load once.
    let cache = Arc::new(BoundedCache::new(KEYS as usize + THREADS));
    let loads: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, loads, barrier) =
                (Arc::clone(&cache), Arc::clone(&loads), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..KEYS {
                    // Each thread walks the keys from a different place, so they collide often.
                    let key = (i + t as u64 * 17) % KEYS;
                    let value = cache.get_or_load(key, |k| {
                        *loads.lock().unwrap().entry(*k).or_default() += 1;
                        std::thread::yield_now(); // widen the window for a second load
                        value_of(k)
                    });
                    assert_eq!(value, value_of(&key));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let loads = loads.lock().unwrap();
    assert_eq!(loads.len(), KEYS as usize);
    assert!(loads.values().all(|&n| n == 1), "a key was loaded twice");
    assert_eq!(cache.stats().loads, KEYS);
    assert_eq!(cache.stats().evictions, 0);
}

#[test]
fn eviction_removes_the_least_recently_used_entries() {
    let cache = BoundedCache::new(100);
    for key in 0..100 {
        cache.get_or_load(key, value_of);
    }
    // Use the first half again: the second half is now the least recently used.
    for key in 0..50 {
        assert_eq!(cache.get(&key), Some(value_of(&key)));
    }
    for key in 100..150 {
        cache.get_or_load(key, value_of);
    }
    assert_eq!(cache.stats().evictions, 50);
    for key in 0..50 {
        assert!(
            cache.get(&key).is_some(),
            "recently used key {key} was evicted"
        );
    }
    for key in 50..100 {
        assert!(cache.get(&key).is_none(), "stale key {key} survived");
    }
    for key in 100..150 {
        assert!(cache.get(&key).is_some(), "new key {key} was evicted");
    }
}

#[test]
fn invalidate_all_empties_the_cache_and_the_next_lookup_reloads() {
    let cache = BoundedCache::new(1_000);
    for key in 0..500 {
        cache.get_or_load(key, value_of);
    }
    cache.invalidate_all();
    assert!(cache.is_empty());
    assert_eq!(cache.occupancy(), 0);
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get_or_load(1, value_of), value_of(&1));
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.invalidations), (501, 1));
    assert!(cache.wait_for_reclamation(Duration::from_secs(10)));
    assert_eq!(cache.memory_stats().pending_bytes, 0);
    assert_eq!(cache.memory_stats().len, 1);
}

#[test]
fn invalidation_racing_with_loads_keeps_the_count_exact() {
    const THREADS: u64 = 3;
    let cache = Arc::new(BoundedCache::new(128));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let key = (i * 31 + t * 7) % 1_000;
                    assert_eq!(cache.get_or_load(key, value_of), value_of(&key));
                }
            })
        })
        .collect();
    for _ in 0..50 {
        cache.invalidate_all();
        std::thread::yield_now();
    }
    for w in workers {
        w.join().unwrap();
    }
    assert!(cache.len() <= 128);
    assert_eq!(cache.occupancy(), cache.len());
}

#[test]
fn a_panicking_loader_inserts_no_value_and_the_next_caller_loads() {
    let cache = BoundedCache::new(10);
    let calls = AtomicUsize::new(0);
    let result = catch_unwind(AssertUnwindSafe(|| {
        cache.get_or_load(1, |_| -> u64 {
            calls.fetch_add(1, Ordering::SeqCst);
            panic!("backend down")
        })
    }));
    assert!(result.is_err());
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get_or_load(1, value_of), value_of(&1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.occupancy(), cache.len());
}
