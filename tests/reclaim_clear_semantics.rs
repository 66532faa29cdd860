//! What a concurrent reader may observe around `clear` (moka#155 was a lazy clear whose entries
//! stayed visible after it returned; ours swaps tables, so that must never happen).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use epochmap::EpochMap;

#[test]
fn a_read_that_starts_after_clear_returns_never_sees_an_old_entry() {
    for round in 0..20u64 {
        let map: Arc<EpochMap<u64, u64>> = Arc::new(EpochMap::builder().shards(8).build());
        for k in 0..2_000 {
            map.insert(k, round);
        }
        let cleared = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(3));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (map, cleared, start) =
                    (Arc::clone(&map), Arc::clone(&cleared), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    // Spin until the clearing thread says clear() has returned (Acquire pairs
                    // with its Release store), then every read must miss.
                    while !cleared.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    (0..2_000u64).filter(|k| map.get(k).is_some()).count()
                })
            })
            .collect();
        start.wait();
        map.clear();
        cleared.store(true, Ordering::Release);
        for reader in readers {
            assert_eq!(
                reader.join().unwrap(),
                0,
                "round {round}: an old entry was visible"
            );
        }
    }
}

#[test]
fn readers_overlapping_a_clear_see_each_shard_whole_or_empty_never_torn_values() {
    // Values are (key, key * 3) pairs; a reader that overlaps clear may see an entry or not, but an
    // entry it sees is always one that was written whole.
    let map: Arc<EpochMap<u64, (u64, u64)>> = Arc::new(EpochMap::builder().shards(4).build());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (map, stop, seen) = (Arc::clone(&map), Arc::clone(&stop), Arc::clone(&seen));
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = map.get(&(k % 1_000)) {
                    assert_eq!(*v, (k % 1_000, (k % 1_000) * 3));
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                k += 1;
            }
        })
    };
    for _ in 0..200 {
        for k in 0..1_000 {
            map.insert(k, (k, k * 3));
        }
        map.clear();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(map.is_empty());
}
