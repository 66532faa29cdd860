//! The `rayon` feature: every parallel operation agrees with its serial counterpart.
#![cfg(feature = "rayon")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use epochmap::EpochMap;
use rayon::prelude::*;

fn filled(shards: usize, n: u64) -> EpochMap<u64, String> {
    let map = EpochMap::builder().shards(shards).build();
    for i in 0..n {
        map.insert(i, format!("v{i}"));
    }
    map
}

fn serial_pairs(map: &EpochMap<u64, String>) -> Vec<(u64, String)> {
    let mut pairs: Vec<_> = map.iter().map(|r| (*r.key(), r.value().clone())).collect();
    pairs.sort();
    pairs
}

const SHARDS: [usize; 3] = [1, 4, 64];

#[test]
fn par_iter_yields_what_iter_yields() {
    for shards in SHARDS {
        let map = filled(shards, 5_000);
        let mut par: Vec<(u64, String)> = map.par_iter().collect();
        par.sort();
        assert_eq!(par, serial_pairs(&map), "{shards} shards");
    }
}

#[test]
fn par_keys_and_par_values_yield_what_keys_and_values_yield() {
    for shards in SHARDS {
        let map = filled(shards, 5_000);
        let mut keys: Vec<u64> = map.par_keys().collect();
        keys.sort_unstable();
        let mut serial_keys: Vec<u64> = map.keys().map(|k| *k).collect();
        serial_keys.sort_unstable();
        assert_eq!(keys, serial_keys);

        let mut values: Vec<String> = map.par_values().collect();
        values.sort();
        let mut serial_values: Vec<String> = map.values().map(|v| v.clone()).collect();
        serial_values.sort();
        assert_eq!(values, serial_values);
    }
}

#[test]
fn par_iter_of_an_empty_map_is_empty() {
    let map: EpochMap<u64, String> = EpochMap::new();
    assert_eq!(map.par_iter().count(), 0);
}

#[test]
fn par_iter_yields_each_stable_entry_exactly_once_during_concurrent_writes() {
    // Keys below 10_000 are never touched; a writer churns keys above it.
    let map = Arc::new(filled(8, 10_000));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (map, stop) = (Arc::clone(&map), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = 10_000 + i % 5_000;
                map.insert(k, String::from("x"));
                map.remove(&(10_000 + (i + 2_500) % 5_000));
                i += 1;
            }
        })
    };
    for _ in 0..5 {
        let mut stable: Vec<u64> = map.par_keys().filter(|k| *k < 10_000).collect();
        stable.sort_unstable();
        assert_eq!(stable, (0..10_000).collect::<Vec<_>>());
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn into_par_iter_yields_every_owned_entry() {
    for shards in SHARDS {
        let map = filled(shards, 5_000);
        let expected = serial_pairs(&map);
        let mut got: Vec<(u64, String)> = map.into_par_iter().collect();
        got.sort();
        assert_eq!(got, expected);
    }
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn into_par_iter_stopped_early_drops_every_entry_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let map: EpochMap<u64, Counted> = EpochMap::builder().shards(8).build();
    for i in 0..2_000 {
        map.insert(i, Counted(Arc::clone(&drops)));
    }
    let found = map.into_par_iter().find_any(|(k, _)| *k == 1_234);
    assert!(found.is_some());
    drop(found);
    assert_eq!(drops.load(Ordering::SeqCst), 2_000);
}

#[test]
fn par_extend_matches_extend() {
    let pairs: Vec<(u64, u64)> = (0..20_000).map(|i| (i, i * 3)).collect();
    let mut par: EpochMap<u64, u64> = EpochMap::builder().shards(8).build();
    par.par_extend(pairs.par_iter().copied());
    let mut serial: EpochMap<u64, u64> = EpochMap::builder().shards(8).build();
    serial.extend(pairs.iter().copied());
    assert_eq!(par, serial);

    // Through a shared reference, from several threads at once.
    let shared: EpochMap<u64, u64> = EpochMap::new();
    std::thread::scope(|s| {
        for half in [0..10_000u64, 10_000..20_000] {
            let shared = &shared;
            s.spawn(move || {
                let mut target = shared;
                target.par_extend(half.into_par_iter().map(|i| (i, i * 3)));
            });
        }
    });
    assert_eq!(shared, serial);
}

#[test]
fn from_par_iter_matches_from_iter() {
    let par: EpochMap<u64, u64> = (0..20_000u64).into_par_iter().map(|i| (i, !i)).collect();
    let serial: EpochMap<u64, u64> = (0..20_000u64).map(|i| (i, !i)).collect();
    assert_eq!(par, serial);
    assert_eq!(par.len(), 20_000);
}

#[test]
fn par_retain_matches_retain() {
    for shards in SHARDS {
        let par = filled(shards, 10_000);
        let serial = filled(shards, 10_000);
        let keep = |k: &u64, v: &String| k % 3 == 0 || v.ends_with('7');
        par.par_retain(keep);
        serial.retain(keep);
        assert_eq!(serial_pairs(&par), serial_pairs(&serial));
        let expected: HashMap<u64, String> = (0..10_000)
            .map(|i| (i, format!("v{i}")))
            .filter(|(k, v)| keep(k, v))
            .collect();
        assert_eq!(par.len(), expected.len());
    }
}

#[test]
#[should_panic(expected = "re-entrant write")]
fn par_retain_closure_writing_the_map_panics_instead_of_deadlocking() {
    let map = filled(1, 100);
    map.par_retain(|k, _| {
        map.insert(*k + 1_000, String::new());
        true
    });
}
