//! Adversarial hashes: every key hashing to one value, hashes with only a few live bits, and keys
//! placed by hand so that probe chains merge. The map must stay correct (only slower): inserts,
//! lookups, removals in the middle of a chain followed by lookups of keys further along it,
//! growth, shrink and clear.

mod common;

use std::collections::HashMap;

use common::{assert_matches_model, Rng, TestHasher};
use epochmap::ReclaimMode;

for_each_map! {
    type Map = TestMap<u64, u64, TestHasher>;

    fn map_with(hasher: TestHasher, shards: usize) -> Map {
        TestMap::builder()
            .shards(shards)
            .reclaim_mode(ReclaimMode::Inline)
            .hasher(hasher)
            .build()
    }

    /// Inserts `keys` in order, removes every third one from the middle of the chain, checks that the
    /// keys after each hole are still found, refills the holes, and shrinks and clears.
    fn chain_scenario(map: &Map, keys: &[u64], context: &str) {
        let mut model = HashMap::new();
        for &k in keys {
            assert!(map.insert(k, !k).is_none(), "{context}: insert {k}");
            model.insert(k, !k);
        }
        assert_matches_model(map, &model, context);

        // Holes in the middle of the chain; every key after a hole must still be reachable.
        let middle = &keys[keys.len() / 4..keys.len() * 3 / 4];
        for (i, &k) in middle.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            assert_eq!(
                map.remove(&k).map(|r| *r),
                Some(!k),
                "{context}: remove {k}"
            );
            model.remove(&k);
            if i % 30 == 0 {
                for &later in keys.iter().rev().take(20) {
                    assert_eq!(
                        map.get_cloned(&later),
                        Some(!later),
                        "{context}: {later} after hole {k}"
                    );
                }
            }
        }
        for &k in keys {
            assert_eq!(
                map.get_cloned(&k),
                model.get(&k).copied(),
                "{context}: lookup {k}"
            );
        }
        assert_matches_model(map, &model, context);

        // Absent keys: a miss must walk the whole chain and come back empty.
        for k in keys.iter().map(|k| k ^ (1 << 63)).take(50) {
            assert!(!map.contains_key(&k), "{context}: phantom {k}");
        }

        // Refill the holes (the new entries land in the freed slots), replace some, update some.
        for (i, &k) in middle.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            map.insert(k, k);
            model.insert(k, k);
            if i % 2 == 0 {
                let later = keys[keys.len() - 1 - i];
                map.update(&later, |v| v.wrapping_add(1));
                *model.get_mut(&later).unwrap() = model[&later].wrapping_add(1);
            }
        }
        assert_matches_model(map, &model, context);

        // Remove most, shrink, and everything left is still found.
        for &k in keys.iter().step_by(2) {
            map.remove(&k);
            model.remove(&k);
        }
        map.shrink_to_fit();
        assert_matches_model(map, &model, context);
        map.retain(|k, _| k % 3 != 0);
        model.retain(|k, _| k % 3 != 0);
        assert_matches_model(map, &model, context);
        map.clear();
        assert!(
            keys.iter().all(|k| !map.contains_key(k)),
            "{context}: after clear"
        );
        for &k in keys.iter().rev().take(100) {
            map.insert(k, 1);
        }
        assert_eq!(
            map.len(),
            keys.len().min(100),
            "{context}: refill after clear"
        );
        assert!(map.wait_for_reclamation(common::RECLAIM_TIMEOUT));
    }

    #[test]
    fn thousands_of_keys_with_one_hash_are_all_found_inserted_and_removed() {
        // Constants with every field the map derives from a hash at its extremes.
        for hash in [0, u64::MAX, 0xdead_beef_cafe_f00d] {
            for shards in [1, 16] {
                let map = map_with(TestHasher::colliding(hash), shards);
                let keys: Vec<u64> = (0..2_000).map(|i| i * 7 + 1).collect();
                chain_scenario(
                    &map,
                    &keys,
                    &format!("colliding {hash:#x}, {shards} shards"),
                );
            }
        }
    }

    #[test]
    fn hashes_with_few_live_bits_still_work() {
        let masks = [
            // Low bits only: one shard, one tag, a few home buckets.
            0xff,
            // Shard bits only: every key homes in bucket 0 with one tag, spread over shards.
            0xffff_0000_0000_0000,
            // Tag bits only: one home bucket, one shard, but tags tell keys apart.
            0x7f << 40,
            // A single bit.
            1 << 20,
        ];
        let mut rng = Rng::new(17);
        for mask in masks {
            for shards in [1, 64] {
                let map = map_with(TestHasher::weak(mask), shards);
                let keys: Vec<u64> = (0..1_500)
                    .map(|_| rng.next_u64() >> 1)
                    .collect::<std::collections::HashSet<_>>()
                    .into_iter()
                    .collect();
                chain_scenario(&map, &keys, &format!("weak {mask:#x}, {shards} shards"));
            }
        }
    }

    /// With the identity hasher a `u64` key is its own hash. Keys homing in consecutive buckets fill
    /// them and overflow into each other, so chains merge; removing from the first chain must not cut
    /// off keys of the second.
    #[test]
    fn merged_probe_chains_survive_removals_from_either_chain() {
        let map = map_with(TestHasher::Identity, 1);
        map.reserve(500); // a fixed table size, so the home buckets below stay put
        let buckets = map.memory_stats().buckets as u64;
        let tag = 5u64 << 40;
        let mut keys = Vec::new();
        // 20 keys home in bucket 3, then 20 in bucket 4, with one tag: 40 keys over 6+ buckets.
        for home in [3u64, 4] {
            for i in 0..20u64 {
                keys.push(tag | (i * buckets) << 8 | home);
            }
        }
        // Identity keys must keep their home: the multiple of `buckets` lives above the index bits.
        for &k in &keys {
            assert!(k % buckets == 3 || k % buckets == 4);
        }
        let mut model = HashMap::new();
        for &k in &keys {
            map.insert(k, k);
            model.insert(k, k);
        }
        assert_eq!(
            map.memory_stats().buckets as u64,
            buckets,
            "no growth in this test"
        );
        for step in 0..keys.len() {
            // Alternate between the chains, front and back.
            let k = if step % 2 == 0 {
                keys[step / 2]
            } else {
                keys[keys.len() - 1 - step / 2]
            };
            assert_eq!(map.remove(&k).map(|r| *r), Some(k));
            model.remove(&k);
            for (&other, &v) in &model {
                assert_eq!(
                    map.get_cloned(&other),
                    Some(v),
                    "key {other:#x} lost after removing {k:#x}"
                );
            }
            if step % 5 == 0 {
                // Reinsert something to fill a hole in the other chain.
                let back = keys[(step * 7) % keys.len()];
                map.insert(back, back);
                model.insert(back, back);
            }
        }
        assert_matches_model(&map, &model, "identity hasher chains");
    }

    /// Random operations with the colliding hasher against a std model, at a size where the
    /// single chain spans hundreds of buckets and its overflow counts saturate.
    #[test]
    fn a_saturated_collision_chain_agrees_with_std_under_random_operations() {
        let map = map_with(TestHasher::colliding(42), 4);
        let mut model = HashMap::new();
        let mut rng = Rng::new(4242);
        for step in 0..12_000 {
            let key = rng.below(2_500);
            match rng.below(10) {
                0..=5 => assert_eq!(map.insert(key, step).map(|r| *r), model.insert(key, step)),
                6..=7 => assert_eq!(map.remove(&key).map(|r| *r), model.remove(&key)),
                _ => assert_eq!(map.get_cloned(&key), model.get(&key).copied()),
            }
        }
        assert!(model.len() > 1_000, "the chain is long: {}", model.len());
        assert_matches_model(&map, &model, "colliding random ops");
    }
}
