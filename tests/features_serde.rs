//! The `serde` feature: maps round-trip through serde_json.
#![cfg(feature = "serde")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use common::TestHasher;
use epochmap::EpochMap;

fn sorted<K: Ord + Clone, V: Clone>(map: &EpochMap<K, V, impl Sized>) -> BTreeMap<K, V> {
    map.pin()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn string_keyed_map_round_trips_through_json() {
    let map: EpochMap<String, Vec<u32>> = (0..1_000)
        .map(|i| (format!("key{i}"), vec![i, i + 1]))
        .collect();
    let json = serde_json::to_string(&map).unwrap();
    let back: EpochMap<String, Vec<u32>> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
    assert_eq!(sorted(&back), sorted(&map));
}

#[test]
fn integer_keyed_map_round_trips_through_json() {
    let map: EpochMap<u64, Option<String>> = (0..500)
        .map(|i| (i, (i % 2 == 0).then(|| i.to_string())))
        .collect();
    let json = serde_json::to_string(&map).unwrap();
    let back: EpochMap<u64, Option<String>> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, map);
}

#[test]
fn json_matches_what_a_hashmap_serializes() {
    let map: EpochMap<String, u32> = [("a".to_string(), 1), ("b".to_string(), 2)]
        .into_iter()
        .collect();
    let value = serde_json::to_value(&map).unwrap();
    let std_map: HashMap<String, u32> = [("a".to_string(), 1), ("b".to_string(), 2)]
        .into_iter()
        .collect();
    assert_eq!(value, serde_json::to_value(&std_map).unwrap());
}

#[test]
fn empty_map_round_trips() {
    let map: EpochMap<String, u32> = EpochMap::new();
    let json = serde_json::to_string(&map).unwrap();
    assert_eq!(json, "{}");
    let back: EpochMap<String, u32> = serde_json::from_str(&json).unwrap();
    assert!(back.is_empty());
}

#[test]
fn duplicate_keys_keep_the_last_value() {
    let map: EpochMap<String, u32> = serde_json::from_str(r#"{"a": 1, "a": 2}"#).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map.get_cloned("a"), Some(2));
}

#[test]
fn deserializes_with_a_custom_default_hasher() {
    type Hasher = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;
    let map: EpochMap<String, u32, Hasher> = serde_json::from_str(r#"{"x": 7}"#).unwrap();
    assert_eq!(map.get_cloned("x"), Some(7));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    assert!(serde_json::from_str::<EpochMap<String, u32>>("[1, 2]").is_err());
    assert!(serde_json::from_str::<EpochMap<String, u32>>(r#"{"a": "x"}"#).is_err());
}

/// Serializing while another thread removes keys behind the walk and re-inserts them ahead of it
/// (bucket 0 of each table kept full, so a re-inserted key overflows into bucket 1): every JSON
/// object written has each key at most once and exactly as many entries as it announced.
/// (`src/serde.rs` has the deterministic version of the interleaving.)
#[test]
fn serializing_during_remove_and_reinsert_writes_each_key_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let map: Arc<EpochMap<u64, u64, TestHasher>> = Arc::new(
        EpochMap::builder()
            .shards(1)
            .capacity(100)
            .hasher(TestHasher::Identity)
            .build(),
    );
    let buckets = map.memory_stats().buckets as u64;
    for i in 0..7 {
        map.insert(i * buckets, i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (map, stop) = (Arc::clone(&map), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Key 0 leaves bucket 0, a filler takes its slot, key 0 comes back in bucket 1;
                // then the filler leaves and key 0 moves home again.
                map.remove(&0);
                map.insert(7 * buckets, round);
                map.insert(0, round);
                map.remove(&(7 * buckets));
                map.remove(&0);
                map.insert(0, round);
                round += 1;
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut runs = 0;
    while std::time::Instant::now() < deadline {
        let json = serde_json::to_string(&*map).unwrap();
        let zeros = json.matches("\"0\":").count();
        assert!(
            zeros <= 1,
            "run {runs}: key 0 written {zeros} times: {json}"
        );
        let back: HashMap<u64, u64> = serde_json::from_str(&json).unwrap();
        assert!(back.len() >= 6, "{json}");
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(runs > 0);
}
