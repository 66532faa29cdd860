//! Hash once: `hash_key` and the `_with_hash` calls. With the right hash they behave exactly like
//! the plain calls. With a wrong hash they may miss (a read or removal that finds nothing) but
//! never return another key's entry, and never leave the table in a state where a *later* call
//! with the right hash misses a present key or duplicates one: differential runs mixing wrong
//! hashes with correct operations, growth, shrink and clear, checked against `std`'s `HashMap`.

mod common;

use std::collections::HashMap;

use common::{assert_matches_model, rng, Rng, TestHasher};
use epochmap::ReclaimMode;

for_each_map! {
    /// A hash that is wrong for `right` in one of the ways that matter: a neighbouring home bucket
    /// with the same tag (the case that could skew overflow counts), another tag, another shard, or
    /// anything at all.
    fn wrong(rng: &mut Rng, right: u64) -> u64 {
        let h = match rng.below(6) {
            0 => right.wrapping_add(1 + rng.below(3)),
            1 => right.wrapping_sub(1 + rng.below(3)),
            2 => right ^ (1 << rng.below(12)),
            3 => right ^ (1 << (40 + rng.below(7))),
            4 => right ^ (1 << (48 + rng.below(16))),
            _ => rng.next_u64(),
        };
        if h == right {
            !right
        } else {
            h
        }
    }

    fn differential(
        map: &TestMap<u64, u64, TestHasher>,
        steps: usize,
        keys: u64,
        seed: u64,
        ctx: &str,
    ) {
        let mut rng = Rng::new(seed);
        let mut model: HashMap<u64, u64> = HashMap::new();
        for step in 0..steps {
            let k = rng.below(keys);
            let right = map.hash_key(&k);
            let bad = wrong(&mut rng, right);
            let v = rng.next_u64() >> 8;
            let at = format!("{ctx}, step {step}, key {k}");
            match rng.below(20) {
                // Wrong hashes.
                0..=2 => {
                    let got = map.get_with_hash(&k, bad).map(|r| *r);
                    assert!(
                        got.is_none() || got == model.get(&k).copied(),
                        "{at}: {got:?}"
                    );
                }
                // A miss leaves the key (if present) in place: the reads below check it is found.
                3..=5 => {
                    if let Some(old) = map.remove_with_hash(&k, bad) {
                        assert_eq!(
                            Some(*old),
                            model.remove(&k),
                            "{at}: removed another's entry"
                        );
                    }
                }
                6 => {
                    let old = map.insert_with_hash(k, bad, v).map(|r| *r);
                    assert_eq!(old, model.insert(k, v), "{at}: insert_with_hash(wrong)");
                }
                7 => {
                    let got = *map.get_or_load_with_hash(k, bad, || v);
                    assert_eq!(
                        got,
                        *model.entry(k).or_insert(v),
                        "{at}: get_or_load_with_hash(wrong)"
                    );
                }
                // Right hashes.
                8 => {
                    let old = map.insert_with_hash(k, right, v).map(|r| *r);
                    assert_eq!(old, model.insert(k, v), "{at}: insert_with_hash");
                }
                9 => {
                    let old = map.remove_with_hash(&k, right).map(|r| *r);
                    assert_eq!(old, model.remove(&k), "{at}: remove_with_hash");
                }
                10 => {
                    let got = map.get_with_hash(&k, right).map(|r| *r);
                    assert_eq!(got, model.get(&k).copied(), "{at}: get_with_hash");
                }
                11 => {
                    let got = *map.get_or_load_with_hash(k, right, || v);
                    assert_eq!(
                        got,
                        *model.entry(k).or_insert(v),
                        "{at}: get_or_load_with_hash"
                    );
                }
                // Plain calls, and the calls that rebuild or walk tables with the real hasher.
                12 | 13 => assert_eq!(map.insert(k, v).map(|r| *r), model.insert(k, v), "{at}"),
                14 => assert_eq!(map.remove(&k).map(|r| *r), model.remove(&k), "{at}"),
                15 => {
                    let parity = rng.below(2);
                    map.retain(|key, _| key % 2 != parity || key % 7 == 0);
                    model.retain(|key, _| key % 2 != parity || key % 7 == 0);
                }
                16 => map.shrink_to_fit(),
                17 => map.reserve(rng.below(keys) as usize),
                18 if rng.chance(1, 8) => {
                    map.clear();
                    model.clear();
                }
                _ => {}
            }
            // Every correct read agrees after every step: a wrong hash broke nothing later calls use.
            let probe = rng.below(keys);
            assert_eq!(
                map.get(&probe).map(|r| *r),
                model.get(&probe).copied(),
                "{at}: get({probe}) after the step"
            );
            if step % 256 == 255 {
                assert_matches_model(map, &model, &at);
            }
        }
        assert_matches_model(map, &model, ctx);
        // Drain by correct removals: each present key is found and the map ends empty.
        let mut keys_left: Vec<u64> = model.keys().copied().collect();
        keys_left.sort();
        for k in keys_left {
            assert_eq!(
                map.remove(&k).map(|r| *r),
                model.remove(&k),
                "{ctx}: final remove({k})"
            );
        }
        assert!(
            map.is_empty(),
            "{ctx}: empty after removing every model key"
        );
    }

    #[test]
    fn wrong_hashes_never_break_later_correct_operations() {
        let seed = rng::seed(0x4a5e_11ed);
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let steps = config.scale(6000);
            differential(
                &map,
                steps,
                400,
                config.seed(seed),
                &format!("{config}, seed {seed}"),
            );
        });
    }

    /// Few hash bits: every key is in one shard with one tag, and homes collide, so overflow chains
    /// are long and a wrong hash one bucket off finds real entries. This is where a removal that
    /// walked the wrong path would lower counts other keys need.
    #[test]
    fn wrong_hashes_with_dense_overflow_chains_never_hide_a_key() {
        let seed = rng::seed(0x0c4a_1175);
        for mask in [0x7, 0x1f, 0xff] {
            for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
                let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
                    .shards(1)
                    .reclaim_mode(mode)
                    .hasher(TestHasher::weak(mask))
                    .build();
                let ctx = format!("weak mask {mask:#x}, {mode:?}, seed {seed}");
                differential(&map, 6000, 300, seed ^ mask, &ctx);
            }
        }
    }

    #[test]
    fn hash_key_is_the_maps_own_hash_and_agrees_across_borrowed_forms() {
        let map: TestMap<String, u32> = TestMap::new();
        let hash = map.hash_key("apple");
        assert_eq!(hash, map.hash_key(&String::from("apple")));
        assert_ne!(hash, map.hash_key("pear"));
        map.insert("apple".into(), 1);
        assert_eq!(map.get_with_hash("apple", hash).map(|r| *r), Some(1));
        assert_eq!(map.remove_with_hash("apple", hash).map(|r| *r), Some(1));
        // Another map has another hasher (random keys): its hash is wrong here.
        let other: TestMap<String, u32> = TestMap::new();
        assert_ne!(other.hash_key("apple"), hash);
    }

    #[test]
    fn insert_with_hash_replaces_without_hashing_and_places_new_keys_by_the_real_hash() {
        use std::hash::BuildHasher;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        /// Counts the hashers built (one per hashed key).
        #[derive(Clone, Default)]
        struct Counting(Arc<AtomicUsize>);
        impl BuildHasher for Counting {
            type Hasher = std::collections::hash_map::DefaultHasher;
            fn build_hasher(&self) -> Self::Hasher {
                self.0.fetch_add(1, Ordering::SeqCst);
                std::collections::hash_map::DefaultHasher::new()
            }
        }
        let count = Counting::default();
        let map: TestMap<u64, u64, Counting> = TestMap::with_hasher(count.clone());
        let hashes = || count.0.load(Ordering::SeqCst);
        let h = map.hash_key(&5);
        let before = hashes();
        map.insert_with_hash(5, h, 1);
        assert_eq!(
            hashes() - before,
            1,
            "a new key is hashed once, to place it"
        );
        let before = hashes();
        for v in 2..10 {
            map.insert_with_hash(5, h, v);
            assert_eq!(*map.get_with_hash(&5, h).unwrap(), v);
            assert!(map.remove_with_hash(&6, map.hash_key(&6)).is_none());
        }
        // Only the eight `hash_key(&6)` calls hashed: replacing, reading and missing did not.
        // The flat map's replace publishes the new entry in a free slot, possibly of a rebuilt
        // table, so it takes the key's real hash: one per replace (`replace_trusting` in
        // src/shard.rs).
        let replaces = if FLAT { 8 } else { 0 };
        assert_eq!(hashes() - before, 8 + replaces);
        assert_eq!(*map.get_or_load_with_hash(5, h, || unreachable!()), 9);
        assert_eq!(
            hashes() - before,
            8 + replaces,
            "a hit of get_or_load_with_hash does not hash"
        );
    }

    /// The overflow-count case, placed by hand (identity hasher: a key is its own hash; bits 0..=2
    /// pick one of 8 buckets, bits 40..=46 the tag, all zero here so every key has one tag).
    ///
    /// Bucket 1 is full of keys homed there and `e` (home 1) overflowed into bucket 2: bucket 1's
    /// count is 1, for `e` alone. Bucket 2 is then filled and `k` (home 2) overflows into bucket 3.
    /// `remove_with_hash(k, k - 1)` names home 1 with `k`'s tag: its probe walks 1 → 2 → 3 and finds
    /// `k`. Lowering the counts along *that* path would zero bucket 1's count, and `e` (past bucket 1)
    /// would no longer be found. The removal must lower only `k`'s own path (bucket 2).
    #[test]
    fn a_wrong_hash_on_remove_never_lowers_another_keys_probe_count() {
        let map: TestMap<u64, u64, TestHasher> = TestMap::builder()
            .shards(1)
            .hasher(TestHasher::Identity)
            .capacity(20)
            .build();
        assert_eq!(
            map.memory_stats().buckets,
            8,
            "the test places keys in an 8-bucket table"
        );
        let key = |home: u64, n: u64| (n << 20) | home;
        for n in 0..7 {
            map.insert(key(1, n), n);
        }
        let e = key(1, 100);
        map.insert(e, 100);
        for n in 10..16 {
            map.insert(key(2, n), n);
        }
        let k = key(2, 200);
        map.insert(k, 200);
        assert_eq!(map.memory_stats().buckets, 8, "no growth");
        let bad = k - 1;
        assert_eq!(
            map.remove_with_hash(&k, bad).map(|r| *r),
            Some(200),
            "found through the wrong home"
        );
        assert_eq!(
            map.get(&e).map(|r| *r),
            Some(100),
            "a key past the wrong home is still found"
        );
        for n in (0..7).chain(10..16) {
            let home = if n < 7 { 1 } else { 2 };
            assert_eq!(map.get(&key(home, n)).map(|r| *r), Some(n));
        }
        assert_eq!(map.len(), 14);
    }
}
