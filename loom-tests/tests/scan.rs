//! `Pinned::scan` racing a writer that resizes the shard's table: the reverse-binary cursor and
//! the overflow-chain walk return every entry present throughout.
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Map, Tracked};

use epochmap::ScanCursor;

/// Scans `map` to the end with a budget of one bucket per call, a fresh pin per call (as a CLOCK
/// hand would), and returns the ids of every value returned, checking each one is readable.
fn scan_one_bucket_per_call(map: &Map) -> Vec<usize> {
    let mut seen = Vec::new();
    let mut cursor = ScanCursor::default();
    loop {
        let pinned = map.pin();
        let (found, next) = pinned.scan(cursor, 1);
        seen.extend(found.iter().map(|(_, v)| v.check()));
        drop(pinned);
        match next {
            Some(next) => cursor = next,
            None => return seen,
        }
    }
}

/// The race both models check: a writer grows `map`'s two-bucket table to four (`reserve`,
/// publish, retire the old array) while this thread scans it one bucket per call. Returns the ids
/// the scan saw, each once, in order.
fn scan_while_growing_to_four_buckets(map: &Arc<Map>) -> Vec<usize> {
    let writer = {
        let map = Arc::clone(map);
        thread::spawn(move || {
            map.reserve(5);
            assert_eq!(map.memory_stats().buckets, 4);
            let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
        })
    };
    let mut seen = scan_one_bucket_per_call(map);
    writer.join().unwrap();
    seen.sort_unstable();
    seen.dedup();
    seen
}

/// scan ∥ growth by `reserve`. Keys 0..4 in a two-bucket table: 0 and 2 home in bucket 0, 1 and 3
/// in bucket 1; in the four-bucket table each key has its own bucket. The interleaving: the
/// scanner visits one home bucket per call (a fresh pin and table load each time) while the
/// writer rebuilds the table at twice the size, publishes it and retires the old array. Whether
/// a call sees the old or the new table, the cursor after "bucket 0 of two" is "bucket 1 of four",
/// so keys 1 and 3 are still ahead of it: every key is returned at least once.
#[test]
fn a_scan_racing_growth_returns_every_entry_present_throughout() {
    model(|| {
        let drops = Drops::new(4);
        let map = Arc::new(one_shard_map(3));
        assert_eq!(map.memory_stats().buckets, 2);
        for k in 0..4 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }

        let seen = scan_while_growing_to_four_buckets(&map);
        assert_eq!(
            seen,
            [0, 1, 2, 3],
            "a key present throughout was not returned"
        );
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// scan ∥ growth, with an overflow chain. Eight keys home in bucket 0 of a two-bucket table
/// (0, 2, .., 14): seven fill it and the eighth sits in bucket 1, next to key 1, with bucket 0's
/// overflow count at 1. The interleaving: the scanner's visit of bucket 0 in the old table must
/// follow the count into bucket 1 (and keep only the key whose home is 0), its visit of bucket 1
/// must hash what it finds there (bucket 0 overflowed) and keep only key 1, while the writer
/// rebuilds everything into a four-bucket table with no overflow. Every key is returned.
#[test]
fn a_scan_racing_growth_follows_the_overflow_chain_of_the_old_table() {
    model(|| {
        let drops = Drops::new(9);
        let map = Arc::new(one_shard_map(3));
        let keys = [0u64, 2, 4, 6, 8, 10, 12, 14, 1];
        for (id, &k) in keys.iter().enumerate() {
            map.insert(k, Tracked::new(id, &drops));
        }
        assert_eq!(map.memory_stats().buckets, 2);

        let seen = scan_while_growing_to_four_buckets(&map);
        assert_eq!(
            seen,
            (0..9).collect::<Vec<_>>(),
            "a key present throughout was not returned"
        );
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}
