//! Atomic read-modify-write: `compute`, `try_insert`, `get_or_try_insert_with`.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{drive_reclamation_until, Tracker};
use epochmap::{Compute, Operation};

for_each_map! {
    /// Shard counts to run each property under: one shard (every key contends) and many.
    fn maps<K: Clone, V: Clone>() -> Vec<TestMap<K, V>> {
        vec![
            TestMap::builder().shards(1).build(),
            TestMap::builder().shards(16).build(),
        ]
    }

    #[test]
    fn compute_inserts_when_absent_and_replaces_when_present() {
        for map in maps::<u32, &str>() {
            let seen = std::cell::Cell::new(None);
            match map.compute(1, |e| {
                seen.set(Some(e.is_some()));
                Operation::Insert("a")
            }) {
                Compute::Inserted(new) => assert_eq!((*new.key(), *new), (1, "a")),
                other => panic!("expected Inserted, got {other:?}"),
            }
            assert_eq!(seen.get(), Some(false));
            match map.compute(1, |e| {
                assert_eq!(e, Some((&1, &"a")));
                Operation::Insert("b")
            }) {
                Compute::Updated { old, new } => assert_eq!((*old, *new), ("a", "b")),
                other => panic!("expected Updated, got {other:?}"),
            }
            assert_eq!(map.get_cloned(&1), Some("b"));
            assert_eq!(map.len(), 1);
        }
    }

    #[test]
    fn compute_remove_returns_removed_entry_and_is_a_no_op_when_absent() {
        for map in maps::<u32, u32>() {
            map.insert(1, 10);
            let done = map.compute(1, |_| Operation::Remove);
            assert!(matches!(done, Compute::Removed(ref old) if **old == 10));
            assert_eq!(done.previous().map(|r| **r), Some(10));
            assert!(done.current().is_none());
            assert!(map.get(&1).is_none());
            assert_eq!(map.len(), 0);

            let done = map.compute(1, |e| {
                assert!(e.is_none());
                Operation::Remove
            });
            assert!(matches!(done, Compute::Unchanged(None)));
            assert_eq!(map.len(), 0);
        }
    }

    #[test]
    fn compute_abort_leaves_the_entry_and_reports_it() {
        for map in maps::<u32, u32>() {
            map.insert(1, 10);
            let done = map.compute(1, |_| Operation::Abort);
            assert!(matches!(done, Compute::Unchanged(Some(ref cur)) if **cur == 10));
            assert_eq!(done.current().map(|r| **r), Some(10));
            assert_eq!(done.previous().map(|r| **r), Some(10));
            assert!(matches!(
                map.compute(2, |_| Operation::Abort),
                Compute::Unchanged(None)
            ));
            assert!(!map.contains_key(&2));
        }
    }

    #[test]
    fn compute_increments_are_never_lost_under_contention() {
        const THREADS: usize = 4;
        const ROUNDS: u64 = 2_000;
        const KEYS: u64 = 8;
        for map in maps::<u64, u64>() {
            let map = Arc::new(map);
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let map = Arc::clone(&map);
                    std::thread::spawn(move || {
                        for i in 0..ROUNDS {
                            map.compute(i % KEYS, |e| Operation::Insert(e.map_or(1, |(_, n)| n + 1)));
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            let total: u64 = (0..KEYS).map(|k| map.get_cloned(&k).unwrap()).sum();
            assert_eq!(total, THREADS as u64 * ROUNDS);
        }
    }

    #[test]
    fn compute_closure_panic_changes_nothing_and_releases_the_lock() {
        for map in maps::<u32, u32>() {
            map.insert(1, 10);
            let result = catch_unwind(AssertUnwindSafe(|| {
                map.compute(1, |_| -> Operation<u32> { panic!("boom") });
            }));
            assert!(result.is_err());
            assert_eq!(map.get_cloned(&1), Some(10));
            // The lock was released: a write to the same shard proceeds.
            map.insert(1, 11);
            assert_eq!(map.get_cloned(&1), Some(11));
        }
    }

    #[test]
    fn compute_drops_every_value_exactly_once() {
        // Tracked values count every instance, so copies the flat map makes are accounted for too.
        let tracker = Tracker::new();
        {
            let map: TestMap<u32, common::Tracked> = TestMap::new();
            let c = |v| tracker.value(v);
            map.compute(1, |_| Operation::Insert(c(1))); // inserted
            map.compute(1, |_| Operation::Insert(c(2))); // replaces 1
            map.compute(2, |_| Operation::Insert(c(3)));
            map.compute(2, |_| Operation::Remove); // removes 3
            let rejected = c(4);
            map.compute(3, move |_| {
                drop(rejected); // an unused value dropped inside the closure
                Operation::Abort
            });
            assert_eq!(map.get(&1).unwrap().id, 2);
            map.clear();
            assert!(map.wait_for_reclamation(Duration::from_secs(10)));
        }
        assert!(drive_reclamation_until(|| tracker.live() == 0));
        tracker.assert_all_dropped_once();
    }

    #[test]
    fn compute_may_read_the_map_inside_its_closure() {
        let map = TestMap::new();
        map.insert("a", 1);
        map.compute("b", |_| Operation::Insert(map.get_cloned("a").unwrap() + 1));
        map.compute("a", |cur| {
            // Reading the key being computed sees the current entry: reads take no lock.
            assert_eq!(map.get_cloned("a"), cur.map(|(_, v)| *v));
            Operation::Abort
        });
        assert_eq!(map.get_cloned("b"), Some(2));
    }

    #[test]
    #[should_panic(expected = "re-entrant write")]
    fn compute_closure_writing_the_same_key_panics_instead_of_deadlocking() {
        let map = TestMap::new();
        map.compute(1, |_| {
            map.insert(1, 2);
            Operation::Insert(1)
        });
    }

    #[test]
    #[should_panic(expected = "re-entrant write")]
    fn compute_closure_writing_another_key_panics_instead_of_deadlocking() {
        let map: TestMap<u32, u32> = TestMap::builder().shards(4).build();
        map.compute(1, |_| {
            // Another key may live in another shard: locking it from here could deadlock against a
            // thread doing the reverse, so any write to the same map is refused.
            map.try_insert(2, 2).ok();
            Operation::Insert(1)
        });
    }

    #[test]
    #[should_panic(expected = "re-entrant write")]
    fn get_or_try_insert_with_loader_writing_the_map_panics_instead_of_deadlocking() {
        let map = TestMap::new();
        let _ = map.get_or_try_insert_with(1, || -> Result<u32, ()> {
            map.compute(2, |_| Operation::Insert(2));
            Ok(1)
        });
    }

    #[test]
    fn the_map_is_usable_after_a_reentrant_write_panicked() {
        let map = TestMap::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            map.compute(1, |_| {
                map.insert(1, 0);
                Operation::Insert(1)
            });
        }));
        let message = result.unwrap_err();
        let message = message
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| message.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(message.contains("re-entrant write"), "{message}");
        assert!(map.get(&1).is_none());
        map.insert(1, 5);
        assert_eq!(map.get_cloned(&1), Some(5));
    }

    #[test]
    fn try_insert_inserts_when_absent_and_hands_back_the_value_when_present() {
        for map in maps::<String, Vec<u8>>() {
            let new = map.try_insert("k".to_string(), vec![1]).unwrap();
            assert_eq!(
                (new.key().as_str(), new.value().as_slice()),
                ("k", &[1][..])
            );
            let err = map.try_insert("k".to_string(), vec![2]).unwrap_err();
            assert_eq!(*err.entry, vec![1]);
            assert_eq!(err.value, vec![2]);
            assert!(format!("{err:?}").contains("new_value: [2]"));
            let _: &dyn std::error::Error = &err;
            assert_eq!(map.get_cloned("k"), Some(vec![1]));
            assert_eq!(map.len(), 1);
        }
    }

    #[test]
    fn try_insert_has_exactly_one_winner_under_contention() {
        const THREADS: usize = 4;
        for map in maps::<u32, usize>() {
            let map = Arc::new(map);
            for key in 0..200 {
                let barrier = Arc::new(Barrier::new(THREADS));
                let results: Vec<Result<usize, (usize, usize)>> = (0..THREADS)
                    .map(|t| {
                        let (map, barrier) = (Arc::clone(&map), Arc::clone(&barrier));
                        std::thread::spawn(move || {
                            barrier.wait();
                            match map.try_insert(key, t) {
                                Ok(new) => Ok(*new),
                                Err(err) => Err((*err.entry, err.value)),
                            }
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect();
                let winners: Vec<usize> = results.iter().filter_map(|r| r.ok()).collect();
                assert_eq!(winners.len(), 1, "key {key}: {results:?}");
                let winner = winners[0];
                for (t, r) in results.iter().enumerate() {
                    if let Err((existing, rejected)) = r {
                        assert_eq!(*existing, winner);
                        assert_eq!(*rejected, t);
                    }
                }
                assert_eq!(map.get_cloned(&key), Some(winner));
            }
        }
    }

    #[test]
    fn get_or_try_insert_with_error_inserts_nothing() {
        for map in maps::<&str, u32>() {
            let err = map
                .get_or_try_insert_with("k", || Err::<u32, _>("no"))
                .unwrap_err();
            assert_eq!(err, "no");
            assert!(map.get("k").is_none());
            assert_eq!(map.len(), 0);
            assert_eq!(
                *map.get_or_try_insert_with("k", || Ok::<_, ()>(3)).unwrap(),
                3
            );
            // Present: the loader does not run.
            let r = map.get_or_try_insert_with("k", || -> Result<u32, ()> { unreachable!() });
            assert_eq!(*r.unwrap(), 3);
        }
    }

    #[test]
    fn get_or_try_insert_with_runs_the_loader_once_per_key_under_contention() {
        const THREADS: usize = 4;
        const KEYS: u32 = 500;
        for map in maps::<u32, u32>() {
            let map = Arc::new(map);
            let calls = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(Barrier::new(THREADS));
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (map, calls, barrier) =
                        (Arc::clone(&map), Arc::clone(&calls), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        for k in 0..KEYS {
                            let v = map
                                .get_or_try_insert_with(k, || {
                                    calls.fetch_add(1, Ordering::SeqCst);
                                    Ok::<_, ()>(k * 2)
                                })
                                .unwrap();
                            assert_eq!(*v, k * 2);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            assert_eq!(calls.load(Ordering::SeqCst), KEYS as usize);
        }
    }
}
