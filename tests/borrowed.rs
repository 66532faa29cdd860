//! Borrowed keys for write-like calls (`compute_ref`, `try_insert_ref`, `get_or_load_ref`): the
//! owned key is allocated exactly when an entry is published (or a load registered to publish
//! one), never for a hit, an abort, a removal or a rejected insert. Keys here are `String`s whose
//! clones are counted, so "allocates" is measured, not assumed.

mod common;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use epochmap::{Compute, Operation};

for_each_map! {
    /// A `String` key that counts its clones (`to_owned` of a `&Key` is a clone).
    #[derive(Debug)]
    struct Key {
        name: String,
        clones: Arc<AtomicUsize>,
    }

    impl Key {
        fn new(name: &str, clones: &Arc<AtomicUsize>) -> Self {
            Key {
                name: name.to_string(),
                clones: Arc::clone(clones),
            }
        }
    }

    impl Clone for Key {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Key {
                name: self.name.clone(),
                clones: Arc::clone(&self.clones),
            }
        }
    }

    impl PartialEq for Key {
        fn eq(&self, other: &Self) -> bool {
            self.name == other.name
        }
    }

    impl Eq for Key {}

    impl Hash for Key {
        fn hash<H: Hasher>(&self, state: &mut H) {
            self.name.hash(state);
        }
    }

    fn counter() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(0))
    }

    #[test]
    fn compute_ref_allocates_only_when_it_publishes_an_entry() {
        with_map::<Key, u32>(|config, make| {
            let map = make();
            let clones = counter();
            let k = Key::new("k", &clones);
            let n = |c: &AtomicUsize| c.load(Ordering::SeqCst);

            assert!(matches!(
                map.compute_ref(&k, |_| Operation::Abort),
                Compute::Unchanged(None)
            ));
            assert!(matches!(
                map.compute_ref(&k, |_| Operation::Remove),
                Compute::Unchanged(None)
            ));
            assert_eq!(n(&clones), 0, "{config}: absent, nothing published");

            assert!(matches!(
                map.compute_ref(&k, |_| Operation::Insert(1)),
                Compute::Inserted(_)
            ));
            assert_eq!(n(&clones), 1, "{config}: one key for the inserted entry");

            let seen = map.compute_ref(&k, |e| {
                assert_eq!(e.map(|(_, v)| *v), Some(1));
                Operation::Abort
            });
            assert_eq!(seen.current().map(|r| **r), Some(1));
            drop(seen);
            assert_eq!(
                n(&clones),
                1,
                "{config}: an abort on a present key allocates nothing"
            );

            match map.compute_ref(&k, |e| Operation::Insert(e.unwrap().1 + 1)) {
                Compute::Updated { old, new } => assert_eq!((*old, *new), (1, 2)),
                other => panic!("{config}: {other:?}"),
            }
            assert_eq!(
                n(&clones),
                2,
                "{config}: a replacement is a new entry with its own key"
            );

            assert!(
                matches!(map.compute_ref(&k, |_| Operation::Remove), Compute::Removed(ref r) if **r == 2)
            );
            assert_eq!(n(&clones), 2, "{config}: removal allocates nothing");
            assert!(map.is_empty());
        });
    }

    #[test]
    fn try_insert_ref_allocates_only_when_it_inserts() {
        with_map::<Key, u32>(|config, make| {
            let map = make();
            let clones = counter();
            let k = Key::new("k", &clones);
            assert_eq!(*map.try_insert_ref(&k, 1).unwrap(), 1);
            assert_eq!(clones.load(Ordering::SeqCst), 1, "{config}");
            for v in 2..10 {
                let err = map.try_insert_ref(&k, v).unwrap_err();
                assert_eq!((*err.entry, err.value), (1, v), "{config}");
            }
            assert_eq!(
                clones.load(Ordering::SeqCst),
                1,
                "{config}: rejections allocate nothing"
            );
            assert_eq!(map.get(&k).map(|r| *r), Some(1));
        });
    }

    #[test]
    fn get_or_load_ref_allocates_once_per_load_and_never_for_hits_or_waiters() {
        let map: Arc<TestMap<Key, u32>> = Arc::new(TestMap::builder().shards(1).build());
        let clones = counter();
        let k = Arc::new(Key::new("k", &clones));
        let start = Arc::new(Barrier::new(8));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (map, k, start) = (map.clone(), k.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    *map.get_or_load_ref(&*k, || {
                        thread::sleep(Duration::from_millis(100));
                        7
                    })
                })
            })
            .collect();
        for c in callers {
            assert_eq!(c.join().unwrap(), 7);
        }
        assert_eq!(clones.load(Ordering::SeqCst), 1, "one load, one key");
        for _ in 0..100 {
            assert_eq!(*map.get_or_load_ref(&*k, || unreachable!()), 7);
        }
        assert_eq!(clones.load(Ordering::SeqCst), 1, "hits allocate nothing");
        // Another key's load allocates that key, once.
        let other = Key::new("other", &clones);
        assert_eq!(*map.get_or_load_ref(&other, || 1), 1);
        assert_eq!(clones.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn str_keys_work_for_string_maps() {
        let map: TestMap<String, usize> = TestMap::new();
        assert_eq!(*map.try_insert_ref("a", 1).unwrap(), 1);
        assert_eq!(*map.get_or_load_ref("b", || 2), 2);
        map.compute_ref("c", |_| Operation::Insert(3));
        map.compute_ref("a", |e| Operation::Insert(e.unwrap().1 * 10));
        let mut all: Vec<(String, usize)> = map.iter().map(|r| (r.key().clone(), *r)).collect();
        all.sort();
        assert_eq!(all, [("a".into(), 10), ("b".into(), 2), ("c".into(), 3)]);
    }

    /// Threads race `try_insert_ref` and `compute_ref` on shared keys: one insert wins per key, and
    /// clones equal the entries published.
    #[test]
    fn racing_borrowed_writes_allocate_exactly_the_published_keys() {
        // The flat map clones every key when it rebuilds a table, and its removed entries hold
        // their slots until their grace period, so churn alone can trigger a rebuild. Room for
        // every write keeps its clone count to the published entries; growth's clones are the
        // subject of tests/drops.rs and tests/flat.rs.
        let capacity = if FLAT { 4_096 } else { 0 };
        let map: Arc<TestMap<Key, u64>> =
            Arc::new(TestMap::builder().shards(4).capacity(capacity).build());
        let clones = counter();
        let keys: Arc<Vec<Key>> = Arc::new(
            (0..64)
                .map(|i| Key::new(&format!("k{i}"), &clones))
                .collect(),
        );
        let published = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (map, keys, published) = (map.clone(), keys.clone(), published.clone());
                thread::spawn(move || {
                    for round in 0..200u64 {
                        let k = &keys[((round * 13 + t * 7) % 64) as usize];
                        if (round + t) % 2 == 0 {
                            if map.try_insert_ref(k, t).is_ok() {
                                published.fetch_add(1, Ordering::SeqCst);
                            }
                        } else {
                            let done = map.compute_ref(k, |e| match e {
                                Some((_, &v)) if v % 3 == 0 => Operation::Remove,
                                Some(_) => Operation::Abort,
                                None if round % 4 == 1 => Operation::Insert(round),
                                None => Operation::Abort,
                            });
                            if matches!(done, Compute::Inserted(_) | Compute::Updated { .. }) {
                                published.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            clones.load(Ordering::SeqCst),
            published.load(Ordering::SeqCst),
            "one key clone per published entry, none for hits, aborts, removals or rejections"
        );
    }
}
