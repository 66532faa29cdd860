//! Lock-free readers racing a shard that grows (a shell retire of the old bucket array).
#![cfg(epochmap_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, reclaim_all, Drops, Tracked};

/// growth ∥ get. The interleaving: the writer's sixth insert builds a two-bucket table, publishes
/// it and retires the one-bucket array while the reader probes (old table or new) and holds a `Ref`
/// across the swap and the writer's reclamation. Every key present before growth is found, the
/// held value survives, and reclaiming the shell frees no entry.
#[test]
fn keys_present_before_growth_are_found_while_the_shard_grows() {
    model(|| {
        let drops = Drops::new(6);
        let map = Arc::new(one_shard_map(0));
        for k in 0..5 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }
        assert_eq!(
            map.memory_stats().buckets,
            1,
            "five entries fit the first table"
        );

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                map.pin().insert(5, Tracked::new(5, &drops));
                assert_eq!(
                    map.memory_stats().buckets,
                    2,
                    "the sixth entry grew the table"
                );
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        // Key 1 homes in bucket 1 of the grown table, key 4 in bucket 0.
        let held = map.get(&1).expect("present before growth");
        assert_eq!(held.check(), 1);
        assert_eq!(map.get(&4).map(|r| r.check()), Some(4));
        thread::yield_now();
        assert_eq!(held.check(), 1, "a shell retire never frees the entries");
        drop(held);
        writer.join().unwrap();

        reclaim_all(&map);
        let stats = map.memory_stats();
        assert_eq!((stats.tables_retired, stats.tables_reclaimed), (1, 1));
        for id in 0..6 {
            assert_eq!(
                drops.dropped(id),
                0,
                "reclaiming the old array dropped entry {id}"
            );
        }
        for k in 0..6 {
            assert_eq!(map.get(&k).map(|r| r.check()), Some(k as usize));
        }
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// iteration ∥ growth. The interleaving: the iterator walks the table it loaded while the writer
/// publishes the grown table and retires the old array. The old array is frozen once replaced and
/// stays alive under the iterator's guard, so every key present for the whole walk is yielded
/// exactly once.
#[test]
fn iteration_across_growth_yields_each_present_key_exactly_once() {
    model(|| {
        let drops = Drops::new(6);
        let map = Arc::new(one_shard_map(0));
        for k in 0..5 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }

        let writer = {
            let (map, drops) = (Arc::clone(&map), drops.clone());
            thread::spawn(move || {
                map.pin().insert(5, Tracked::new(5, &drops));
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let mut seen: Vec<usize> = map.iter().map(|r| r.check()).collect();
        writer.join().unwrap();

        seen.sort_unstable();
        seen.retain(|&id| id != 5); // inserted during the walk: may or may not be seen
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        reclaim_all(&map);
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// shrink ∥ get. The interleaving: `shrink_to_fit` rebuilds a two-bucket table as a one-bucket
/// table under the lock, publishes it and retires the larger array as a shell while the reader
/// probes either table and holds a `Ref` across the swap. Every key is found and no entry is freed.
#[test]
fn keys_are_found_while_the_shard_shrinks() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(3));
        assert_eq!(map.memory_stats().buckets, 2);
        map.insert(0, Tracked::new(0, &drops));
        map.insert(1, Tracked::new(1, &drops));

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.shrink_to_fit();
                assert_eq!(map.memory_stats().buckets, 1);
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let held = map.get(&1).expect("never removed");
        assert_eq!(map.get(&0).map(|r| r.check()), Some(0));
        thread::yield_now();
        assert_eq!(held.check(), 1);
        drop(held);
        writer.join().unwrap();

        reclaim_all(&map);
        assert_eq!((drops.dropped(0), drops.dropped(1)), (0, 0));
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// remove ∥ get, where the remove shrinks the table on its own (issue 18). The interleaving: the
/// writer's removal leaves one entry in a four-bucket table, so under the same lock it rebuilds a
/// one-bucket table, publishes it and retires the larger array as a shell, while the removed
/// entry waits in the shard's batch; the reader probes either table and holds a `Ref` to the
/// surviving key across the swap. The survivor is found, the removed key is seen whole or not at
/// all, and nothing is freed twice or under the `Ref`.
#[test]
fn a_remove_that_shrinks_the_table_loses_no_other_key() {
    // Twenty writes before the threads start take more than loom's default 1000 branches in
    // one execution; the bound is about runaway spinning, which the set-up cannot do.
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 20_000;
    builder.check(|| {
        let drops = Drops::new(11);
        let map = Arc::new(one_shard_map(0));
        for k in 0..11 {
            map.insert(k, Tracked::new(k as usize, &drops));
        }
        for k in 2..11 {
            map.remove(&k);
        }
        assert_eq!(
            map.memory_stats().buckets,
            4,
            "two entries keep the grown table"
        );

        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.remove(&0);
                assert_eq!(
                    map.memory_stats().buckets,
                    1,
                    "one entry left: the table shrank"
                );
                let _ = map.wait_for_reclamation(std::time::Duration::from_secs(1));
            })
        };
        let held = map.get(&1).expect("never removed");
        if let Some(gone) = map.get(&0) {
            assert_eq!(gone.check(), 0);
        }
        thread::yield_now();
        assert_eq!(held.check(), 1);
        drop(held);
        writer.join().unwrap();

        reclaim_all(&map);
        assert_eq!(drops.dropped(1), 0);
        drop(map);
        drops.assert_all_dropped_once();
    });
}
