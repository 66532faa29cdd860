//! `wait_for_reclamation`'s promise: once it returns `true`, the `Drop`s of what it waited for have
//! happened *for the caller*, whichever thread ran them.
#![cfg(epochmap_loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, IdHash};

use epochmap::{EpochMap, ReclaimMode};

/// A value whose `Drop` bumps a shared counter, the way a program counts its drops (or watches an
/// `Arc`'s strong count). The counter is a loom atomic used `Relaxed`, so loom lets a thread that
/// is not ordered after the `Drop` read the old count.
struct Noted(Arc<AtomicUsize>);

impl Drop for Noted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A one-shard map whose reclamation runs in the deferred functions (under loom, `Background`
/// would behave the same), shared between the model's threads.
fn one_shard_inline<V>() -> Arc<EpochMap<u64, V, IdHash>> {
    Arc::new(
        EpochMap::builder()
            .shards(1)
            .hasher(IdHash)
            .reclaim_mode(ReclaimMode::Inline)
            .build(),
    )
}

/// The interleaving: the remover thread removes two entries (a full batch under loom), says so
/// through `removed` (`Release`), and drives reclamation itself, so it may run the values' `Drop`s
/// and take their bytes off `pending_bytes`. The main thread, once it has seen `removed`
/// (`Acquire`), waits for reclamation; whenever that returns `true` (because this thread freed the
/// batch, or because it read the remover's decrement to 0), both drops must be visible to it. With
/// a `Relaxed` decrement or poll, loom finds an execution in which the main thread reads 0 from
/// the remover's decrement and still reads a drop count below 2.
#[test]
fn a_wait_that_returns_true_sees_the_drops_it_waited_for() {
    model(|| {
        let dropped = Arc::new(AtomicUsize::new(0));
        let removed = Arc::new(AtomicBool::new(false));
        let map: Arc<EpochMap<u64, Noted, IdHash>> = one_shard_inline();
        map.insert(0, Noted(Arc::clone(&dropped)));
        map.insert(1, Noted(Arc::clone(&dropped)));

        let remover = {
            let (map, removed) = (Arc::clone(&map), Arc::clone(&removed));
            thread::spawn(move || {
                drop(map.remove(&0));
                drop(map.remove(&1));
                removed.store(true, Ordering::Release);
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        if removed.load(Ordering::Acquire)
            && map.wait_for_reclamation(std::time::Duration::from_secs(1))
        {
            assert_eq!(
                dropped.load(Ordering::Relaxed),
                2,
                "wait_for_reclamation returned true before the drops it waited for were visible"
            );
        }
        remover.join().unwrap();
        assert!(map.wait_for_reclamation(std::time::Duration::from_secs(1)));
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
    });
}

/// The same promise for the map's own counters: once `wait_for_reclamation` returns `true`, the
/// statistics of what it waited for are final. The interleaving: the clearer thread clears a
/// table holding two entries (a full retire), says so through `cleared` (`Release`) and drives
/// reclamation itself, so it may be the thread that frees the table. If the job counted the table
/// as reclaimed only after taking its bytes off `pending_bytes` (as it once did), the main thread
/// could read pending 0, return `true`, and still see one table retired and none reclaimed.
#[test]
fn a_wait_that_returns_true_sees_the_counts_of_what_it_waited_for() {
    model(|| {
        let cleared = Arc::new(AtomicBool::new(false));
        let map: Arc<EpochMap<u64, u64, IdHash>> = one_shard_inline();
        map.insert(0, 0);
        map.insert(1, 1);

        let clearer = {
            let (map, cleared) = (Arc::clone(&map), Arc::clone(&cleared));
            thread::spawn(move || {
                map.clear();
                cleared.store(true, Ordering::Release);
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        if cleared.load(Ordering::Acquire)
            && map.wait_for_reclamation(std::time::Duration::from_secs(1))
        {
            let stats = map.memory_stats();
            assert_eq!(stats.tables_retired, stats.tables_reclaimed, "{stats:?}");
            assert_eq!(stats.entries_reclaimed, 2, "{stats:?}");
        }
        clearer.join().unwrap();
        assert!(map.wait_for_reclamation(std::time::Duration::from_secs(1)));
        let stats = map.memory_stats();
        assert_eq!(stats.tables_retired, stats.tables_reclaimed, "{stats:?}");
    });
}
