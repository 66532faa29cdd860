//! The public API contract: `Borrow` lookups, builder errors, re-entrancy detection, auto traits,
//! std trait implementations, and what `Ref`s returned by writes keep showing.

mod common;

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use common::{
    completes_within, expect_panic, in_child_process, TestHasher, Tracker, RECLAIM_TIMEOUT,
};
use epochmap::{
    BuildError, Builder, Drain, EpochMap, FlatEpochMap, IntoIter, Iter, KeyRef, Keys, MemoryStats,
    Pinned, PinnedIter, ReclaimMode, Ref, TryReserveError, Values, WouldBlock, MAX_SHARDS,
};

// ---------------------------------------------------------------------------------------------
// Auto traits, checked at compile time.

// A map is Send + Sync exactly when its keys and values are.
assert_impl!(EpochMap<u64, String>: Send, Sync);
assert_impl!(EpochMap<Arc<str>, Vec<u8>, TestHasher>: Send, Sync);
assert_not_impl!(EpochMap<Rc<u8>, u8>: Send);
assert_not_impl!(EpochMap<Rc<u8>, u8>: Sync);
assert_not_impl!(EpochMap<u8, Rc<u8>>: Send);
assert_not_impl!(EpochMap<u8, Rc<u8>>: Sync);
// Cell is Send but not Sync: the map can move to another thread but not be shared, like std's.
assert_impl!(EpochMap<Cell<u8>, u8>: Send);
assert_not_impl!(EpochMap<Cell<u8>, u8>: Sync);
assert_impl!(EpochMap<u8, Cell<u8>>: Send);
assert_not_impl!(EpochMap<u8, Cell<u8>>: Sync);
// Sync but not Send keys (a lock guard) make the map neither: values inserted through `&map`
// may be dropped on the reclaimer thread.
assert_not_impl!(EpochMap<std::sync::MutexGuard<'static, u8>, u8>: Send);
assert_not_impl!(EpochMap<std::sync::MutexGuard<'static, u8>, u8>: Sync);
// Guards and everything holding one stay on their thread (never across an `.await`).
assert_not_impl!(Ref<'static, u64, u64>: Send);
assert_not_impl!(Ref<'static, u64, u64>: Sync);
assert_not_impl!(KeyRef<'static, u64, u64>: Send);
assert_not_impl!(Pinned<'static, u64, u64, RandomState>: Send);
assert_not_impl!(Pinned<'static, u64, u64, RandomState>: Sync);
assert_not_impl!(Iter<'static, u64, u64>: Send);
assert_not_impl!(Keys<'static, u64, u64>: Send);
assert_not_impl!(Values<'static, u64, u64>: Send);
// An owning iterator is just a map being drained.
assert_impl!(IntoIter<u64, String, RandomState>: Send, Sync);
// A `Drain` owns its entries and holds no guard: `Send` when they are, `Sync` when they are.
assert_impl!(Drain<u64, String>: Send, Sync, std::fmt::Debug, ExactSizeIterator);
assert_impl!(Drain<u8, Cell<u8>>: Send);
assert_not_impl!(Drain<u8, Cell<u8>>: Sync);
assert_not_impl!(Drain<Rc<u8>, u8>: Send);
assert_not_impl!(Drain<Rc<u8>, u8>: Sync);
assert_not_impl!(Drain<u8, Rc<u8>>: Send);
assert_impl!(WouldBlock: std::error::Error, Send, Sync, Copy, PartialEq);
assert_impl!(BuildError: std::error::Error, Send, Sync, Clone, PartialEq);
assert_impl!(Builder<RandomState>: Send, Sync, Clone, std::fmt::Debug);
assert_impl!(MemoryStats: Send, Sync, Copy, std::fmt::Debug, Default);
assert_impl!(EpochMap<u64, u64>: std::fmt::Debug, Clone, PartialEq, Eq, Default);
assert_impl!(PinnedIter<'static, u64, u64>: std::fmt::Debug);
// The flat map's auto traits are the same as `EpochMap`'s: it owns its entries the same way.
assert_impl!(FlatEpochMap<u64, String>: Send, Sync);
assert_not_impl!(FlatEpochMap<Rc<u8>, u8>: Send);
assert_not_impl!(FlatEpochMap<u8, Rc<u8>>: Sync);
assert_impl!(FlatEpochMap<Cell<u8>, u8>: Send);
assert_not_impl!(FlatEpochMap<u8, Cell<u8>>: Sync);
assert_impl!(FlatEpochMap<u64, u64>: std::fmt::Debug, Clone, PartialEq, Eq, Default);

for_each_map! {
    // ---------------------------------------------------------------------------------------------
    // Borrow lookups.

    #[test]
    fn string_keys_are_looked_up_by_str() {
        let map: TestMap<String, u32> = TestMap::new();
        map.insert("apple".to_string(), 1);
        map.insert("pear".to_string(), 2);
        assert_eq!(*map.get("apple").unwrap(), 1);
        assert_eq!(map.get("apple").unwrap().key(), "apple");
        assert!(map.contains_key("pear"));
        assert!(!map.contains_key("plum"));
        assert_eq!(map.get_cloned("pear"), Some(2));
        assert_eq!(map.with("pear", |v| v * 10), Some(20));
        assert_eq!(*map.update("pear", |v| v + 1).unwrap(), 3);
        assert!(map.remove_if("pear", |_, v| *v == 100).is_none());
        assert_eq!(*map.remove_if("pear", |k, _| k == "pear").unwrap(), 3);
        let pinned = map.pin();
        assert_eq!(pinned.get("apple"), Some(&1));
        assert_eq!(
            pinned.get_key_value("apple").map(|(k, v)| (k.as_str(), *v)),
            Some(("apple", 1))
        );
        assert!(pinned.contains_key("apple"));
        assert_eq!(pinned.remove("apple"), Some(&1));
        drop(pinned);
        assert!(map.remove("apple").is_none());
        assert!(map.is_empty());

        // Vec<u8> keys by &[u8], boxed slices, paths.
        let bytes: TestMap<Vec<u8>, ()> = TestMap::new();
        bytes.insert(b"abc".to_vec(), ());
        assert!(bytes.contains_key(&b"abc"[..]));
        let paths: TestMap<std::path::PathBuf, u8> = TestMap::new();
        paths.insert("/tmp/x".into(), 1);
        assert!(paths.contains_key(std::path::Path::new("/tmp/x")));
    }

    // ---------------------------------------------------------------------------------------------
    // Builder.

    #[test]
    fn builder_rejects_zero_shards_with_a_useful_message() {
        let err = TestMap::builder()
            .shards(0)
            .try_build::<u64, u64>()
            .unwrap_err();
        assert_eq!(err, BuildError::ZeroShards);
        let msg = err.to_string();
        assert!(
            msg.contains("shard count 0") && msg.contains("at least 1"),
            "{msg}"
        );
        let panic = expect_panic(|| TestMap::builder().shards(0).build::<u64, u64>());
        assert!(
            panic.contains("epochmap") && panic.contains(&msg),
            "{panic}"
        );
    }

    #[test]
    fn builder_rejects_too_many_shards_with_a_useful_message() {
        for requested in [MAX_SHARDS + 1, usize::MAX / 2, usize::MAX] {
            let err = TestMap::builder()
                .shards(requested)
                .try_build::<u8, u8>()
                .unwrap_err();
            assert_eq!(err, BuildError::TooManyShards { requested });
            let msg = err.to_string();
            assert!(
                msg.contains(&requested.to_string()) && msg.contains(&MAX_SHARDS.to_string()),
                "{msg}"
            );
            let panic = expect_panic(|| TestMap::builder().shards(requested).build::<u8, u8>());
            assert!(panic.contains(&msg), "{panic}");
        }
    }

    #[test]
    fn builder_rounds_shards_up_to_a_power_of_two_up_to_the_maximum() {
        for (asked, got) in [(1, 1), (2, 2), (3, 4), (5, 8), (64, 64), (1000, 1024)] {
            let map = TestMap::builder().shards(asked).build::<u8, u8>();
            assert_eq!(map.shard_count(), got);
        }
        let map = TestMap::builder()
            .shards(MAX_SHARDS / 2 + 1)
            .build::<u64, u64>();
        assert_eq!(map.shard_count(), MAX_SHARDS);
        for i in 0..10_000 {
            map.insert(i, i);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get_cloned(&1234), Some(1234));
        let default = TestMap::<u8, u8>::new();
        assert!(default.shard_count() >= 4 && default.shard_count().is_power_of_two());
    }

    #[test]
    fn builder_reports_a_refused_allocation_instead_of_aborting() {
        // 2^50 entries fit in the address space (about 2^54 bytes of tables) but in no machine's memory:
        // the allocator refuses, and `try_build` must say so rather than abort the process.
        let err = TestMap::builder()
            .shards(1)
            .capacity(1 << 50)
            .try_build::<u64, u64>()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::AllocationFailed { bytes } if bytes > 1 << 50),
            "{err:?}"
        );
        assert!(err.to_string().contains("could not provide"), "{err}");
        // The same with many shards: the error, not an abort, whatever shard the refusal hits.
        let err = TestMap::builder()
            .shards(64)
            .capacity(1 << 56)
            .try_build::<u64, u64>()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::AllocationFailed { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn builder_reports_capacity_overflow_instead_of_allocating() {
        for capacity in [
            usize::MAX,
            usize::MAX / 2,
            usize::MAX / 3,
            isize::MAX as usize,
        ] {
            let err = TestMap::builder()
                .capacity(capacity)
                .try_build::<u64, u64>()
                .unwrap_err();
            assert_eq!(
                err,
                BuildError::CapacityOverflow {
                    requested: capacity
                }
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&capacity.to_string()) && msg.contains("too large"),
                "{msg}"
            );
            let panic = expect_panic(|| TestMap::builder().capacity(capacity).build::<u64, u64>());
            assert!(panic.contains(&msg), "{panic}");
            let panic = expect_panic(|| TestMap::<u64, u64>::with_capacity(capacity));
            assert!(panic.contains("too large"), "{panic}");
        }
        // Errors are proper `std::error::Error`s.
        let err: Box<dyn std::error::Error + Send + Sync> = Box::new(
            TestMap::builder()
                .shards(0)
                .try_build::<u8, u8>()
                .unwrap_err(),
        );
        assert!(err.to_string().contains("shard"));
    }

    #[test]
    fn builder_settings_take_effect() {
        let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
            .shards(16)
            .capacity(10_000)
            .hasher(TestHasher::colliding(1))
            .reclaim_mode(ReclaimMode::Inline)
            .backpressure_bytes(0)
            .build();
        assert_eq!(map.shard_count(), 16);
        assert!(map.capacity() >= 10_000);
        assert!(matches!(map.hasher(), TestHasher::Colliding(1)));
        let map: TestMap<u64, u64> = TestMap::with_capacity(5_000);
        assert!(map.capacity() >= 5_000);
        let map: TestMap<u64, u64> = TestMap::with_capacity_and_hasher(100, RandomState::new());
        assert!(map.capacity() >= 100);
    }

    #[test]
    fn reserve_overflow_panics_with_a_message_and_leaves_the_map_usable() {
        let map: TestMap<u64, u64> = TestMap::builder().shards(4).build();
        map.insert(1, 1);
        let msg = expect_panic(|| map.reserve(usize::MAX));
        assert!(msg.contains("capacity overflow"), "{msg}");
        map.insert(2, 2);
        assert_eq!(map.len(), 2);
        map.reserve(1_000);
        assert!(map.capacity() >= 1_002);
    }

    // ---------------------------------------------------------------------------------------------
    // Re-entrant writes from closures that run under a shard lock.

    /// With the identity hasher and four shards, the shard is the key's top two bits.
    fn reentrancy_map() -> Arc<TestMap<u64, u64, TestHasher>> {
        let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
            .shards(4)
            .hasher(TestHasher::Identity)
            .build();
        Arc::new(map)
    }

    const SAME_SHARD: u64 = 7;
    const OTHER_SHARD: u64 = 1 << 62 | 7;

    #[track_caller]
    fn assert_reentrancy_panic(msg: &str) {
        assert!(
            msg.contains("re-entrant write") && msg.contains("deadlock"),
            "the panic should explain the re-entrant write: {msg}"
        );
    }

    /// After a re-entrancy panic no lock is left held: this thread and another one can write to
    /// every shard.
    #[track_caller]
    fn assert_unlocked(map: &Arc<TestMap<u64, u64, TestHasher>>) {
        map.insert(SAME_SHARD, 1);
        map.insert(OTHER_SHARD, 1);
        let other = Arc::clone(map);
        completes_within(
            Duration::from_secs(20),
            "a write after a re-entrancy panic",
            move || {
                other.insert(SAME_SHARD, 2);
                other.insert(OTHER_SHARD, 2);
                other.retain(|_, _| true);
            },
        );
    }

    #[test]
    fn writes_from_inside_closures_panic_instead_of_deadlocking() {
        let map = reentrancy_map();
        map.insert(0, 0);
        for target in [SAME_SHARD, OTHER_SHARD, 0] {
            let msg = expect_panic(|| {
                map.get_or_insert_with(1, || *map.insert(target, 9).as_deref().unwrap_or(&0))
            });
            assert_reentrancy_panic(&msg);
            assert_unlocked(&map);
            // An absent key, so get_or_insert_with has to lock (for a present key it is a read).
            let msg =
                expect_panic(|| map.update(&0, |_| *map.get_or_insert_with(target ^ 0x100, || 5)));
            assert_reentrancy_panic(&msg);
            assert_unlocked(&map);
            let msg = expect_panic(|| map.remove_if(&0, |_, _| map.remove(&target).is_some()));
            assert_reentrancy_panic(&msg);
            assert_unlocked(&map);
            let msg = expect_panic(|| {
                map.retain(|_, _| {
                    map.update(&target, |v| v + 1);
                    true
                })
            });
            assert_reentrancy_panic(&msg);
            assert_unlocked(&map);
        }
        // Whole-map writes from inside a closure are re-entrant too.
        assert_reentrancy_panic(&expect_panic(|| {
            map.update(&0, |_| {
                map.clear();
                0
            })
        }));
        assert_reentrancy_panic(&expect_panic(|| {
            map.update(&0, |_| {
                map.clear_keep_capacity();
                0
            })
        }));
        assert_reentrancy_panic(&expect_panic(|| {
            map.update(&0, |_| {
                map.shrink_to_fit();
                0
            })
        }));
        assert_reentrancy_panic(&expect_panic(|| {
            map.update(&0, |_| {
                map.reserve(10);
                0
            })
        }));
        assert_reentrancy_panic(&expect_panic(|| {
            map.update(&0, |_| {
                map.pin().insert(OTHER_SHARD, 0);
                0
            })
        }));
        assert_unlocked(&map);
        assert_eq!(
            map.get_cloned(&0),
            Some(0),
            "no failed closure changed the value"
        );
    }

    #[test]
    fn reads_and_writes_to_other_maps_inside_closures_are_allowed() {
        let map = reentrancy_map();
        let other: TestMap<u64, u64> = TestMap::new();
        map.insert(SAME_SHARD, 1);
        map.insert(OTHER_SHARD, 2);
        let v = map.get_or_insert_with(3, || {
            // Reads take no lock.
            let a = *map.get(&SAME_SHARD).unwrap();
            let b = map.get_cloned(&OTHER_SHARD).unwrap();
            let n = map.iter().count() as u64 + map.len() as u64;
            other.insert(1, a + b);
            a + b + n
        });
        assert_eq!(*v, 3 + 4);
        assert_eq!(other.get_cloned(&1), Some(3));
        map.retain(|k, _| {
            other.insert(*k, 0);
            map.contains_key(k)
        });
        assert_eq!(map.len(), 3);
        assert_eq!(other.len(), 4);
    }

    #[test]
    fn holding_a_ref_never_blocks_writers() {
        let map = reentrancy_map();
        map.insert(SAME_SHARD, 1);
        let held = map.get(&SAME_SHARD).unwrap();
        let pinned = map.pin();
        // Same thread, same shard: no deadlock, because neither a Ref nor a Pinned holds a lock.
        map.insert(SAME_SHARD, 2);
        map.remove(&SAME_SHARD);
        map.clear();
        let other = Arc::clone(&map);
        completes_within(
            Duration::from_secs(20),
            "a write from another thread",
            move || {
                other.insert(SAME_SHARD, 3);
            },
        );
        assert_eq!(*held, 1);
        assert_eq!(pinned.get(&SAME_SHARD), Some(&3));
    }

    // ---------------------------------------------------------------------------------------------
    // Refs returned by writes.

    #[test]
    fn insert_returns_the_previous_value_which_stays_readable_after_further_writes() {
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let tracker = Tracker::new();
            let map: TestMap<u64, common::Tracked> =
                TestMap::builder().shards(2).reclaim_mode(mode).build();
            assert!(map.insert(1, tracker.value(10)).is_none());
            let old = map
                .insert(1, tracker.value(11))
                .expect("the previous value");
            assert_eq!((*old.key(), old.id), (1, 10));
            let removed = map.remove(&1).expect("present");
            assert_eq!(removed.id, 11);
            // Many more writes: replacements, growth, removal batches filling up, clear, and
            // attempts to reclaim (which must not free what `old` and `removed` point to).
            for i in 0..20_000 {
                map.insert(i, tracker.value(i));
                map.insert(i, tracker.value(i + 1));
                if i % 3 == 0 {
                    map.remove(&i);
                }
            }
            map.clear();
            map.shrink_to_fit();
            assert!(
                !map.wait_for_reclamation(Duration::from_millis(50)),
                "our Refs hold the epoch"
            );
            assert_eq!((*old.key(), old.id, old.value().id), (1, 10, 10));
            assert_eq!(old.pair().1.id, 10);
            assert_eq!(removed.id, 11);
            assert!(format!("{old:?}").contains("key: 1"));
            drop(old);
            drop(removed);
            assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
            assert_eq!(tracker.live(), 0);
            drop(map);
            tracker.assert_all_dropped_once();
        }
    }

    #[test]
    fn get_or_insert_with_update_and_pinned_writes_return_the_right_entries() {
        let map: TestMap<&str, u32> = TestMap::new();
        let mut calls = 0;
        assert_eq!(
            *map.get_or_insert_with("a", || {
                calls += 1;
                1
            }),
            1
        );
        assert_eq!(
            *map.get_or_insert_with("a", || {
                calls += 1;
                2
            }),
            1
        );
        assert_eq!(calls, 1);
        let before = map.get("a").unwrap();
        let after = map.update("a", |v| v * 10).unwrap();
        assert_eq!((*before, *after), (1, 10));
        assert_eq!(*after.key(), "a");
        let pinned = map.pin();
        assert_eq!(pinned.insert("b", 2), None);
        assert_eq!(pinned.insert("b", 3), Some(&2));
        assert_eq!(pinned.get_or_insert_with("c", || 4), &4);
        assert_eq!(pinned.get_or_insert_with("c", || 5), &4);
        assert_eq!(pinned.remove("b"), Some(&3));
        assert_eq!(pinned.remove("b"), None);
        assert_eq!(pinned.len(), 2);
        assert!(!pinned.is_empty());
        let mut keys: Vec<&str> = pinned.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["a", "c"]);
        assert_eq!(pinned.values().sum::<u32>(), 14);
        assert!(format!("{pinned:?}").contains("Pinned"));
    }

    #[test]
    fn keys_values_and_key_refs() {
        let map: TestMap<u32, &str> = [(1, "one"), (2, "two")].into_iter().collect();
        let mut keys: Vec<u32> = map.keys().map(|k| *k).collect();
        keys.sort_unstable();
        assert_eq!(keys, [1, 2]);
        let mut values: Vec<&str> = map.values().map(|v| *v).collect();
        values.sort_unstable();
        assert_eq!(values, ["one", "two"]);
        let key = map.keys().find(|k| **k == 2).unwrap();
        assert!(format!("{key:?}").contains('2'));
        assert_eq!(*key.into_ref(), "two");
        let mut refs: Vec<(u32, &str)> = (&map).into_iter().map(|r| (*r.key(), *r)).collect();
        refs.sort_unstable();
        assert_eq!(refs, [(1, "one"), (2, "two")]);
    }

    // ---------------------------------------------------------------------------------------------
    // std traits.

    #[test]
    fn debug_prints_like_a_std_map() {
        let map: TestMap<u32, &str> = TestMap::new();
        assert_eq!(format!("{map:?}"), "{}");
        map.insert(1, "a");
        assert_eq!(format!("{map:?}"), r#"{1: "a"}"#);
        map.insert(2, "b");
        let s = format!("{map:?}");
        assert!(
            s == r#"{1: "a", 2: "b"}"# || s == r#"{2: "b", 1: "a"}"#,
            "{s}"
        );
        assert!(format!("{:?}", map.iter()).contains("Iter"));
        assert!(format!("{:?}", map.pin().iter()).contains("PinnedIter"));
        assert!(format!("{:?}", map.clone().into_iter()).contains("remaining: 2"));
    }

    #[test]
    fn clone_is_an_equal_independent_map_with_the_same_settings() {
        let map: TestMap<u64, String> = TestMap::builder().shards(8).build();
        for i in 0..1_000 {
            map.insert(i, i.to_string());
        }
        let clone = map.clone();
        assert_eq!(clone.shard_count(), 8);
        assert_eq!(clone, map);
        clone.insert(5, "changed".into());
        clone.remove(&6);
        assert_eq!(map.get_cloned(&5).as_deref(), Some("5"));
        assert!(map.contains_key(&6));
        assert_ne!(clone, map);
        let empty: TestMap<u64, String> = TestMap::new();
        assert_eq!(empty.clone(), empty);
    }

    #[test]
    fn partial_eq_compares_contents_not_layout() {
        let a: TestMap<u32, u32> = TestMap::builder().shards(1).build();
        let b: TestMap<u32, u32> = TestMap::builder().shards(64).capacity(10_000).build();
        assert_eq!(a, b);
        for i in 0..100 {
            a.insert(i, i);
            b.insert(99 - i, 99 - i);
        }
        assert_eq!(a, b);
        b.insert(5, 6);
        assert_ne!(a, b, "a different value");
        b.insert(5, 5);
        b.remove(&7);
        b.insert(1_000, 7);
        assert_ne!(a, b, "same length, different keys");
        b.remove(&1_000);
        assert_ne!(a, b, "different lengths");
    }

    #[test]
    fn from_iterator_extend_default_and_into_iterator_behave_like_std() {
        let pairs = [(1, "a"), (2, "b"), (1, "c")];
        let map: TestMap<u32, &str> = pairs.into_iter().collect();
        let std: HashMap<u32, &str> = pairs.into_iter().collect();
        assert_eq!(map.len(), std.len());
        assert_eq!(
            map.get_cloned(&1),
            Some("c"),
            "the last duplicate wins, as in std"
        );

        let mut map: TestMap<u32, &str> = TestMap::default();
        assert!(map.is_empty());
        map.extend([(1, "x"), (2, "y")]);
        (&map).extend([(3, "z")]);
        let mut shared = &map;
        shared.extend((4..2_000).map(|i| (i, "many")));
        assert_eq!(map.len(), 1_999);

        let mut owned: Vec<(u32, &str)> = map.into_iter().collect();
        owned.sort_unstable();
        assert_eq!(owned.len(), 1_999);
        assert_eq!(&owned[..3], &[(1, "x"), (2, "y"), (3, "z")]);

        let with_hasher: TestMap<u32, u32, TestHasher> = (0..100).map(|i| (i, i)).collect();
        assert_eq!(with_hasher.len(), 100);
    }

    #[test]
    fn default_works_for_any_hasher_builder_with_a_default() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{BuildHasher, BuildHasherDefault};

        type Fixed = BuildHasherDefault<DefaultHasher>;
        let map: TestMap<String, u32, Fixed> = TestMap::default();
        assert!(map.is_empty());
        assert_eq!(map.shard_count(), TestMap::<u8, u8>::new().shard_count());
        map.insert("a".to_string(), 1);
        assert_eq!(map.get_cloned("a"), Some(1));
        // The hasher is `S::default()`: hashes agree with a fresh one.
        assert_eq!(
            map.hasher().hash_one("key"),
            Fixed::default().hash_one("key")
        );

        // As in std, a struct holding maps with custom hashers can derive `Default`.
        #[derive(Default)]
        struct Caches {
            by_name: TestMap<String, u64, Fixed>,
            by_id: TestMap<u64, String, TestHasher>,
        }
        let caches = Caches::default();
        assert!(caches.by_name.is_empty() && caches.by_id.is_empty());
        let std_default: HashMap<u8, u8, Fixed> = HashMap::default();
        assert!(std_default.is_empty());
    }

    #[test]
    fn extend_from_borrowed_copy_pairs_behaves_like_std() {
        let source: HashMap<u32, u64> = (0..1_000).map(|i| (i, u64::from(i) * 3)).collect();
        let mut map: TestMap<u32, u64> = TestMap::new();
        map.insert(5, 0);
        map.insert(5_000, 1);
        map.extend(source.iter());
        let mut std_map: HashMap<u32, u64> = [(5, 0), (5_000, 1)].into_iter().collect();
        std_map.extend(source.iter());
        assert_eq!(map.len(), std_map.len());
        for (k, v) in &std_map {
            assert_eq!(map.get_cloned(k), Some(*v), "key {k}");
        }
        assert_eq!(
            map.get_cloned(&5),
            Some(15),
            "a borrowed pair replaces, as in std"
        );

        // Also from a slice of references and from another epochmap's pinned iterator.
        let a = 7u32;
        let b = 70u64;
        map.extend([(&a, &b)]);
        assert_eq!(map.get_cloned(&7), Some(70));
        let other: TestMap<u32, u64> = (2_000..2_010).map(|i| (i, 1)).collect();
        map.extend(other.pin().iter());
        assert_eq!(map.len(), 1_011);
    }

    #[test]
    fn size_queries_and_memory_stats_are_consistent() {
        let map: TestMap<u64, u64> = TestMap::builder()
            .shards(4)
            .reclaim_mode(ReclaimMode::Inline)
            .build();
        assert_eq!((map.len(), map.is_empty()), (0, true));
        let empty = map.memory_stats();
        assert_eq!(empty.len, 0);
        assert_eq!(empty.entry_bytes, 0);
        assert!(empty.table_bytes > 0);
        for i in 0..10_000 {
            map.insert(i, i);
        }
        let full = map.memory_stats();
        assert_eq!(full.len, 10_000);
        assert!(map.capacity() >= 10_000);
        assert!(full.buckets * 7 >= 10_000);
        if FLAT {
            // The flat map keeps its entries in its tables: they are counted in `table_bytes`.
            assert_eq!(full.entry_bytes, 0);
            assert!(full.table_bytes >= 10_000 * 16);
        } else {
            assert!(full.entry_bytes >= 10_000 * 16);
        }
        assert!(full.tables_retired > 0, "growth retired tables");
        assert_eq!(
            full.total_bytes(),
            full.table_bytes + full.entry_bytes + full.pending_bytes
        );
        map.clear();
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
        let cleared = map.memory_stats();
        assert_eq!(cleared.pending_bytes, 0);
        assert_eq!(cleared.tables_retired, cleared.tables_reclaimed);
        assert!(cleared.entries_reclaimed >= 10_000);
        assert_eq!(cleared.drop_panics, 0);
    }

    // ---------------------------------------------------------------------------------------------
    // Reserving more than the machine has: an error or a panic, never an abort.

    assert_impl!(TryReserveError: std::error::Error, std::fmt::Display, std::fmt::Debug, Clone, PartialEq, Eq, Send, Sync);

    /// 2^40 `u64` pairs need tables of about 1.6 TiB: more than this machine's memory, so the
    /// allocator refuses them (the kernel's default overcommit heuristic rejects a single mapping
    /// larger than RAM plus swap). Used in a child process only, so that a regression aborts a child.
    const MORE_THAN_THE_MACHINE_HAS: usize = 1 << 40;

    /// `try_reserve` tells the two failures apart, changes nothing when it fails, and the map keeps
    /// working. `reserve(1 << 40)` used to abort the process ("memory allocation of ... failed"),
    /// hence the child process.
    #[test]
    fn try_reserve_reports_capacity_overflow_and_allocation_failure_and_changes_nothing() {
        in_child_process(
            &format!(
                "{MODULE}::try_reserve_reports_capacity_overflow_and_allocation_failure_and_changes_nothing"
            ),
            || {
                let map: TestMap<u64, u64> = TestMap::builder().shards(4).build();
                map.insert(1, 1);
                let before = map.memory_stats();

                assert_eq!(
                    map.try_reserve(usize::MAX),
                    Err(TryReserveError::CapacityOverflow)
                );
                let err = map.try_reserve(MORE_THAN_THE_MACHINE_HAS).unwrap_err();
                let TryReserveError::AllocError { layout } = err.clone() else {
                    panic!("expected an allocation failure, got {err:?}");
                };
                // A shard's share of 2^40 entries needs at least one bucket per 7 of them, and the
                // table's first array (8-byte control words) is already more than the machine has.
                assert!(
                    layout.size() >= (MORE_THAN_THE_MACHINE_HAS / 4 / 7) * 8,
                    "{layout:?}"
                );
                assert_eq!(err.clone(), err);
                assert_ne!(err, TryReserveError::CapacityOverflow);
                let text = err.to_string();
                assert!(
                    text.contains("memory allocation") && text.contains(&layout.size().to_string()),
                    "{text}"
                );
                assert!(TryReserveError::CapacityOverflow
                    .to_string()
                    .contains("capacity overflow"));
                let _: &dyn std::error::Error = &err;

                // Nothing changed, and the map works.
                assert_eq!(map.memory_stats().table_bytes, before.table_bytes);
                assert_eq!(map.memory_stats().buckets, before.buckets);
                map.try_reserve(10_000).unwrap();
                assert!(map.capacity() >= 10_000);
                for i in 0..1_000 {
                    map.insert(i, i);
                }
                assert_eq!(map.len(), 1_000);
                assert_eq!(*map.get(&999).unwrap(), 999);
            },
        );
    }

    /// `reserve` panics with the error's message where it used to abort, and leaves the map usable.
    #[test]
    fn reserve_of_more_memory_than_the_machine_has_panics_instead_of_aborting() {
        in_child_process(
            &format!("{MODULE}::reserve_of_more_memory_than_the_machine_has_panics_instead_of_aborting"),
            || {
                let map: TestMap<u64, u64> = TestMap::new();
                map.insert(7, 7);
                let msg = expect_panic(|| map.reserve(MORE_THAN_THE_MACHINE_HAS));
                assert!(
                    msg.contains("reserving 1099511627776 more entries failed")
                        && msg.contains("memory allocation of"),
                    "{msg}"
                );
                let msg = expect_panic(|| map.reserve(usize::MAX));
                assert!(msg.contains("capacity overflow"), "{msg}");
                // No lock left held, nothing lost.
                map.insert(8, 8);
                assert_eq!(map.len(), 2);
                assert_eq!(*map.get(&7).unwrap(), 7);
                map.reserve(1_000);
                assert!(map.capacity() >= 1_000);
            },
        );
    }

    /// `Duration::MAX` means "no deadline": `wait_for_reclamation` then drives reclamation until
    /// everything pending is freed and returns `true`, instead of overflowing the deadline's `Instant`.
    #[test]
    fn wait_for_reclamation_of_duration_max_waits_without_a_deadline() {
        let tracker = Tracker::new();
        let map: TestMap<u64, _> = TestMap::new();
        for i in 0..1_000 {
            map.insert(i, tracker.value(i));
        }
        map.clear();
        assert!(map.wait_for_reclamation(Duration::MAX));
        assert_eq!(map.memory_stats().pending_bytes, 0);
        assert_eq!(tracker.live(), 0);
    }

}
// ---------------------------------------------------------------------------------------------
// User `Drop` runs outside the map's locks.

/// A value whose `Drop` writes to the map it lived in (say, a cache entry that leaves a tombstone
/// behind). Values are dropped by reclamation, which must not run them under a shard lock: there a
/// write is re-entrant (it panicked, was caught, and the write was lost), and a write to another
/// map could deadlock against a thread doing the opposite.
///
/// `EpochMap` only: a `WritesOnDrop` is not `Clone`, and a clone of one (which the flat map makes
/// of every value when it rebuilds a table) would write a tombstone of its own when dropped.
struct WritesOnDrop {
    id: u64,
    map: &'static EpochMap<u64, WritesOnDrop>,
}

impl Drop for WritesOnDrop {
    fn drop(&mut self) {
        if self.id < 1_000_000 {
            let tombstone = WritesOnDrop {
                id: 1_000_000 + self.id,
                map: self.map,
            };
            self.map.insert(tombstone.id, tombstone);
        }
    }
}

#[test]
fn a_value_drop_may_write_to_its_own_map_in_every_mode() {
    for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
        let map: &'static EpochMap<u64, WritesOnDrop> = Box::leak(Box::new(
            EpochMap::builder().shards(1).reclaim_mode(mode).build(),
        ));
        // Replacements and removals fill the removal batch many times over, and growth rebuilds
        // the table, so reclamation runs during writes.
        for id in 0..5_000u64 {
            map.insert(id % 200, WritesOnDrop { id, map });
            if id % 7 == 0 {
                map.remove(&(id % 200));
            }
        }
        map.retain(|k, _| *k >= 1_000_000 || k % 3 != 0);
        assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT), "{mode:?}");
        let stats = map.memory_stats();
        assert_eq!(
            stats.drop_panics, 0,
            "{mode:?}: a Drop ran under a shard lock"
        );
        // Every value that left the map wrote its tombstone (tombstones are replaced, not dropped
        // again with a write, so this ends).
        let dropped = stats.entries_reclaimed as usize;
        assert!(dropped > 4_000, "{mode:?}: {dropped}");
        for id in [1u64, 2, 4, 4_000] {
            assert!(
                map.contains_key(&(1_000_000 + id)),
                "{mode:?}: tombstone of {id}"
            );
        }
    }
}
