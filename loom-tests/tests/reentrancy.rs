//! Re-entrancy detection under concurrency: the record of held shard locks is per thread, so a
//! closure running under one thread's lock never trips over another thread's writes.
//!
//! The panicking path (a closure that writes to its own map) cannot be modelled: loom's `Mutex`
//! wraps a `std::sync::Mutex` and unwraps its poison, so unwinding through a loom lock guard fails
//! the next `lock()`. The normal test suite covers that path with real threads.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// Two threads each run a closure under the same shard's lock, and each closure reads the map.
/// The interleavings: either thread takes the lock first while the other blocks on it, or one
/// thread's lock-free probe runs while the other holds the lock. The detector never fires (each
/// thread only sees its own held locks), neither thread deadlocks, exactly one closure's value
/// wins, and the closure's reads see either the other thread's key or nothing.
#[test]
fn reentrancy_detection_is_per_thread_and_never_fires_for_another_threads_lock() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));

        let other = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                map.get_or_insert_with(1, || {
                    assert!(
                        map.get(&1).is_none(),
                        "the closure runs only while 1 is absent"
                    );
                    Tracked::new(1, &drops)
                })
                .check()
            })
        };
        let mine = map
            .get_or_insert_with(1, || {
                assert!(
                    map.get(&1).is_none(),
                    "the closure runs only while 1 is absent"
                );
                Tracked::new(0, &drops)
            })
            .check();
        assert_eq!(other.join().unwrap(), mine);
        assert_eq!(drops.made(0) + drops.made(1), 1);
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}
