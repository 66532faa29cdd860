//! The example cache's occupancy count (`examples/cache/bounded.rs`): admissions reserve a unit
//! with a compare-and-swap below the capacity, evictions give one back after their `remove_if`,
//! and `invalidate_all` gives back exactly what its `drain` took, with no lock against loads in
//! flight. Each model checks `len() <= capacity` at every step a thread can see and, once the
//! threads are joined, that the count equals the entries (nothing lost, nothing counted twice).
#![cfg(epochmap_loom)]

#[path = "../../examples/cache/bounded.rs"]
#[allow(dead_code)]
mod bounded;

use bounded::{BoundedCache, CacheConfig};
use epochmap::ReclaimMode;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, IdHash};

fn cache(capacity: usize) -> BoundedCache<u64, u64, IdHash> {
    BoundedCache::with_config_and_hasher(
        CacheConfig::new(capacity)
            .shards(1)
            .samples(1)
            .reclaim_mode(ReclaimMode::Inline),
        IdHash,
    )
}

/// Two loads of different keys into a full cache of one entry. Each loader must evict before
/// it inserts; the interleavings: both sample the one entry and race to remove it (one
/// `remove_if` wins, the loser finds nothing, yields and retries), or one reserves the freed unit
/// before the other looks. The compare-and-swap lets exactly one of them take the unit; the other
/// evicts its entry in turn.
#[test]
fn two_loads_into_a_full_cache_never_exceed_its_capacity() {
    model(|| {
        let cache = Arc::new(cache(1));
        cache.insert(0, 0);
        let other = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                assert_eq!(cache.get_or_load(&1, |_| 10), 10);
                assert!(cache.len() <= 1, "len {} over the capacity", cache.len());
            })
        };
        assert_eq!(cache.get_or_load(&2, |_| 20), 20);
        assert!(cache.len() <= 1, "len {} over the capacity", cache.len());
        other.join().unwrap();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.occupancy(), 1, "the count lost or doubled a unit");
    });
}

/// `invalidate_all` ∥ a load. The load reserves its unit after its loader returns and inserts
/// right after; the drain may take the shard before the insert (the new entry stays, and its
/// unit with it) or after it (the drain takes the entry and gives its unit back). Either way the
/// count ends equal to the entries.
#[test]
fn invalidate_all_racing_a_load_keeps_the_count_exact() {
    model(|| {
        let cache = Arc::new(cache(2));
        cache.insert(0, 0);
        let other = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || assert_eq!(cache.get_or_load(&1, |_| 10), 10))
        };
        cache.invalidate_all();
        other.join().unwrap();
        assert!(
            cache.len() <= 1,
            "the pre-filled entry survived the invalidation"
        );
        assert_eq!(
            cache.occupancy(),
            cache.len(),
            "the count does not match the entries"
        );
    });
}
