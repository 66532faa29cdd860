//! Differential test: the same seeded random operation sequence is applied to an `EpochMap` and to
//! `std::collections::HashMap`, and every result is compared after every operation, under every
//! configuration of `common::with_map` (shards 1/4/64, inline/background reclamation, default and
//! colliding hasher). The key space and operation count are chosen so that every shard grows
//! several times, and `clear`, `shrink_to_fit` and `retain` shrink it back now and then.

mod common;

use std::collections::HashMap;

use common::{assert_matches_model, rng, Config, Rng, TestHasher};
use epochmap::Operation;

for_each_map! {
    type Map = TestMap<u64, u64, TestHasher>;

    /// Applies `ops` random operations to a fresh map of `config` and to a std `HashMap`.
    fn run_differential(config: Config, make: &dyn Fn() -> Map, ops: usize, keys: u64, seed: u64) {
        let mut rng = Rng::new(config.seed(seed));
        let mut map = make();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut max_len = 0;
        let mut growths = 0;
        let mut last_capacity = map.capacity();

        for step in 0..ops {
            let ctx = format!("{config}, seed {seed}, step {step}");
            let key = rng.below(keys);
            let value = rng.next_u64();
            // Whole-map removals are rare (about once per `6 * keys` operations each), so the map
            // fills up between them.
            if rng.chance(1, keys * 6) {
                let salt = rng.below(7) + 2;
                map.retain(|k, v| (k ^ v) % salt != 0);
                model.retain(|k, v| (k ^ *v) % salt != 0);
                assert_eq!(map.len(), model.len(), "retain, {ctx}");
                continue;
            }
            if rng.chance(1, keys * 6) {
                if rng.chance(1, 2) {
                    map.clear_keep_capacity();
                } else {
                    map.clear();
                }
                model.clear();
                assert!(map.is_empty(), "clear, {ctx}");
                assert_eq!(map.get(&key).map(|r| *r), None, "get after clear, {ctx}");
                continue;
            }
            // Mostly inserts and lookups, so the map fills up and grows; the rest exercise every
            // other operation. O(n) operations (checks, clone, into_iter) are rare.
            match rng.below(10_000) {
                0..=2999 => {
                    let old = if rng.chance(1, 4) {
                        map.pin().insert(key, value).copied()
                    } else {
                        map.insert(key, value).map(|r| *r)
                    };
                    assert_eq!(old, model.insert(key, value), "insert, {ctx}");
                }
                3000..=4999 | 9100..=9119 | 9400.. => {
                    let got = if rng.chance(1, 4) {
                        map.pin().get(&key).copied()
                    } else {
                        map.get(&key).map(|r| {
                            assert_eq!(*r.key(), key, "Ref::key, {ctx}");
                            *r
                        })
                    };
                    assert_eq!(got, model.get(&key).copied(), "get, {ctx}");
                }
                5000..=5599 => {
                    let got = if rng.chance(1, 4) {
                        map.pin().remove(&key).copied()
                    } else {
                        map.remove(&key).map(|r| *r)
                    };
                    assert_eq!(got, model.remove(&key), "remove, {ctx}");
                }
                5600..=5999 => {
                    // Removes only odd values.
                    let got = map.remove_if(&key, |k, v| {
                        assert_eq!(*k, key);
                        v % 2 == 1
                    });
                    let expected = match model.get(&key) {
                        Some(v) if v % 2 == 1 => model.remove(&key),
                        _ => None,
                    };
                    assert_eq!(got.map(|r| *r), expected, "remove_if, {ctx}");
                }
                6000..=6799 => {
                    let mut ran = false;
                    let got = *map.get_or_insert_with(key, || {
                        ran = true;
                        value
                    });
                    let absent = !model.contains_key(&key);
                    assert_eq!(ran, absent, "get_or_insert_with ran its closure, {ctx}");
                    assert_eq!(
                        got,
                        *model.entry(key).or_insert(value),
                        "get_or_insert_with, {ctx}"
                    );
                }
                6800..=7399 => {
                    let got = map.update(&key, |v| v.wrapping_mul(3).wrapping_add(1));
                    let expected = model.get_mut(&key).map(|v| {
                        *v = v.wrapping_mul(3).wrapping_add(1);
                        *v
                    });
                    assert_eq!(got.map(|r| *r), expected, "update, {ctx}");
                }
                7400..=7999 => {
                    assert_eq!(
                        map.contains_key(&key),
                        model.contains_key(&key),
                        "contains_key, {ctx}"
                    );
                }
                8000..=8149 => {
                    // compute: insert, replace, remove or leave, decided from the current value.
                    let decide = |current: Option<u64>| match current {
                        None if value % 3 == 0 => Operation::Abort,
                        None => Operation::Insert(value),
                        Some(v) if v % 3 == 0 => Operation::Remove,
                        Some(v) if v % 3 == 1 => Operation::Insert(v.wrapping_add(value)),
                        Some(_) => Operation::Abort,
                    };
                    let before = model.get(&key).copied();
                    let done = map.compute(key, |entry| {
                        assert_eq!(entry.map(|(k, v)| (*k, *v)), before.map(|v| (key, v)));
                        decide(entry.map(|(_, v)| *v))
                    });
                    assert_eq!(
                        done.previous().map(|r| **r),
                        before,
                        "compute previous, {ctx}"
                    );
                    match decide(before) {
                        Operation::Insert(v) => drop(model.insert(key, v)),
                        Operation::Remove => drop(model.remove(&key)),
                        Operation::Abort => {}
                    }
                    let after = model.get(&key).copied();
                    assert_eq!(done.current().map(|r| **r), after, "compute current, {ctx}");
                }
                8150..=8249 => {
                    let got = map
                        .try_insert(key, value)
                        .map(|r| *r)
                        .map_err(|e| (*e.entry, e.value));
                    let expected = match model.get(&key) {
                        Some(&v) => Err((v, value)),
                        None => Ok(*model.entry(key).or_insert(value)),
                    };
                    assert_eq!(got, expected, "try_insert, {ctx}");
                }
                8250..=8399 => {
                    let fail = value % 2 == 0;
                    let got = map
                        .get_or_try_insert_with(key, || if fail { Err(value) } else { Ok(value) })
                        .map(|r| *r);
                    let expected = match model.get(&key) {
                        Some(&v) => Ok(v),
                        None if fail => Err(value),
                        None => Ok(*model.entry(key).or_insert(value)),
                    };
                    assert_eq!(got, expected, "get_or_try_insert_with, {ctx}");
                }
                8400..=9099 => {
                    assert_eq!(map.len(), model.len(), "len, {ctx}");
                    assert_eq!(map.is_empty(), model.is_empty(), "is_empty, {ctx}");
                }
                9120..=9199 => {
                    let additional = rng.below(keys) as usize;
                    map.reserve(additional);
                    assert!(
                        map.capacity() >= model.len() + additional / 2,
                        "reserve({additional}) left capacity {}, {ctx}",
                        map.capacity()
                    );
                }
                9200..=9239 => {
                    map.shrink_to_fit();
                    assert!(map.capacity() >= model.len(), "shrink_to_fit, {ctx}");
                }
                9240..=9339 => assert_matches_model(&map, &model, &ctx),
                9340..=9369 => {
                    // Clone and compare, then replace the map by its clone half the time.
                    let clone = map.clone();
                    assert!(clone == map, "clone == map, {ctx}");
                    assert_matches_model(&clone, &model, &ctx);
                    if rng.chance(1, 2) {
                        map = clone;
                    }
                }
                9370..=9399 => {
                    // Drain the map by value (fully or partly) and rebuild it with `Extend`.
                    let full = std::mem::replace(&mut map, make());
                    let mut iter = full.into_iter();
                    assert_eq!(iter.len(), model.len(), "IntoIter::len, {ctx}");
                    let take = if rng.chance(1, 2) {
                        model.len()
                    } else {
                        rng.below(model.len() as u64 + 1) as usize
                    };
                    let drained: Vec<(u64, u64)> = iter.by_ref().take(take).collect();
                    assert_eq!(
                        iter.len(),
                        model.len() - take,
                        "IntoIter::len after {take}, {ctx}"
                    );
                    let rest: Vec<(u64, u64)> = iter.collect();
                    let all: HashMap<u64, u64> = drained.iter().chain(&rest).copied().collect();
                    assert_eq!(
                        all.len(),
                        model.len(),
                        "into_iter yields each entry once, {ctx}"
                    );
                    assert_eq!(all, model, "into_iter contents, {ctx}");
                    map.extend(drained);
                    map.extend(rest);
                }
            }
            max_len = max_len.max(model.len());
            let capacity = map.capacity();
            if capacity > last_capacity {
                growths += 1;
            }
            last_capacity = capacity;
        }
        assert_matches_model(&map, &model, &format!("{config}, seed {seed}, end"));
        assert!(
            growths >= 3,
            "the sequence should cross several growths (saw {growths}), {config}"
        );
        assert!(
            max_len as u64 > keys / 2,
            "the map should fill up, {config}"
        );
        assert!(
            map.wait_for_reclamation(common::RECLAIM_TIMEOUT),
            "{config}"
        );
    }

    #[test]
    fn random_operations_agree_with_std_hashmap_in_every_configuration() {
        let seed = rng::seed(0x5eed_0001);
        with_map::<u64, u64>(|config, make| {
            let ops = config.scale(30_000);
            let keys = config.scale(2_000) as u64;
            run_differential(config, make, ops, keys, seed);
        });
    }

    #[test]
    fn random_operations_agree_with_std_hashmap_on_a_second_seed() {
        let seed = rng::seed(0x5eed_0002);
        with_map::<u64, u64>(|config, make| {
            let ops = config.scale(20_000);
            let keys = config.scale(600) as u64;
            run_differential(config, make, ops, keys, seed);
        });
    }

    /// A long run with many seeds; `.ci/stress.sh` runs it in release.
    #[test]
    #[ignore = "long; run by .ci/stress.sh in release"]
    fn random_operations_agree_with_std_hashmap_over_many_seeds() {
        // Half of `EPOCHMAP_STRESS_SECS`: this runs once per map, and .ci/stress.sh keeps its time.
        let budget = common::stress_budget() / 2;
        let start = std::time::Instant::now();
        let mut seed = rng::seed(0x5eed_1000);
        let mut runs = 0;
        while start.elapsed() < budget {
            with_map::<u64, u64>(|config, make| {
                // The budget is checked per configuration, but the first pass covers all of them.
                if runs < 12 || start.elapsed() < budget {
                    let ops = config.scale(100_000);
                    let keys = config.scale(10_000) as u64;
                    run_differential(config, make, ops, keys, seed);
                    runs += 1;
                }
            });
            seed += 1;
        }
        println!("{runs} runs in {:?}", start.elapsed());
    }

    /// String keys looked up by `&str`, with values that own heap memory, under the same model.
    #[test]
    fn string_keys_agree_with_std_hashmap() {
        with_map::<String, Vec<u8>>(|config, make| {
            let map = make();
            let mut model: HashMap<String, Vec<u8>> = HashMap::new();
            let mut rng = Rng::new(config.seed(7));
            for step in 0..config.scale(4_000) {
                let key = format!("key-{}", rng.below(config.scale(500) as u64));
                match rng.below(4) {
                    0 | 1 => {
                        let value = vec![step as u8; (step % 17) + 1];
                        assert_eq!(
                            map.insert(key.clone(), value.clone())
                                .map(|r| r.value().clone()),
                            model.insert(key, value)
                        );
                    }
                    2 => assert_eq!(map.get(key.as_str()).as_deref(), model.get(&key)),
                    _ => assert_eq!(
                        map.remove(key.as_str()).map(|r| r.value().clone()),
                        model.remove(&key)
                    ),
                }
            }
            assert_matches_model(&map, &model, &config.to_string());
        });
    }
}
