//! A first look at epochmap: one workload run on an `EpochMap` and, in the same process, on the
//! usual alternative, `std::sync::RwLock<std::collections::HashMap>`.
//!
//! The workload: fill 1M `u64 -> u64` keys from one thread; then every available thread runs
//! 2M operations from its own random stream, 90% `get`, 5% `insert`, 5% `remove`, on keys drawn
//! uniformly from that 1M range; then `clear` the map. Both maps use std's default hasher. Three
//! rounds alternate the two maps and each figure is the best of its three.
//!
//! Run with `cargo run --release --example demo`. The numbers depend on the machine and on what
//! else runs on it; a shared or busy machine slows both maps down.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use epochmap::EpochMap;

const KEYS: u64 = 1_000_000;
const OPS_PER_THREAD: u64 = 2_000_000;
const ROUNDS: usize = 3;

/// What one map must offer to run the workload.
trait Workload: Send + Sync + 'static {
    fn insert(&self, key: u64, value: u64);
    fn remove(&self, key: u64);
    fn contains(&self, key: u64) -> bool;
    fn clear(&self);
}

impl Workload for EpochMap<u64, u64> {
    fn insert(&self, key: u64, value: u64) {
        EpochMap::insert(self, key, value);
    }
    fn remove(&self, key: u64) {
        EpochMap::remove(self, &key);
    }
    fn contains(&self, key: u64) -> bool {
        self.get(&key).is_some()
    }
    fn clear(&self) {
        EpochMap::clear(self);
    }
}

impl Workload for RwLock<HashMap<u64, u64>> {
    fn insert(&self, key: u64, value: u64) {
        self.write().unwrap().insert(key, value);
    }
    fn remove(&self, key: u64) {
        self.write().unwrap().remove(&key);
    }
    fn contains(&self, key: u64) -> bool {
        self.read().unwrap().contains_key(&key)
    }
    fn clear(&self) {
        self.write().unwrap().clear();
    }
}

/// What one run measured.
struct Run {
    fill: Duration,
    mops: f64,
    hits: u64,
    clear: Duration,
}

fn run<M: Workload>(map: Arc<M>, threads: usize) -> Run {
    let start = Instant::now();
    for k in 0..KEYS {
        map.insert(k, k);
    }
    let fill = start.elapsed();

    let start = Instant::now();
    let workers: Vec<_> = (0..threads as u64)
        .map(|t| {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                // xorshift64: a cheap random stream per thread, the same for both maps.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                let mut hits = 0u64;
                for _ in 0..OPS_PER_THREAD {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Key and operation from different bits, so that every key sees every
                    // kind of operation.
                    let key = x % KEYS;
                    match (x >> 40) % 20 {
                        0 => map.insert(key, x),
                        1 => map.remove(key),
                        _ => hits += u64::from(map.contains(key)),
                    }
                }
                hits
            })
        })
        .collect();
    let hits = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let mops = (threads as u64 * OPS_PER_THREAD) as f64 / start.elapsed().as_secs_f64() / 1e6;

    let start = Instant::now();
    map.clear();
    Run {
        fill,
        mops,
        hits,
        clear: start.elapsed(),
    }
}

/// The better of two runs, figure by figure (the hit count is the latest run's).
fn best(old: Option<Run>, new: Run) -> Run {
    let Some(old) = old else { return new };
    Run {
        fill: old.fill.min(new.fill),
        mops: old.mops.max(new.mops),
        hits: new.hits,
        clear: old.clear.min(new.clear),
    }
}

fn mib(bytes: usize) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} us", d.as_micros())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// What a std `HashMap<u64, u64>` of this capacity holds from the allocator: hashbrown's
/// buckets (a power of two, at most 7/8 full) of 16 bytes plus one control byte each. An
/// estimate from the layout, not a measurement.
fn std_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (16 + 1) + 16
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "Workload: fill {KEYS} u64 -> u64 keys from one thread; then {threads} threads run \
         {OPS_PER_THREAD} operations each (90% get, 5% insert, 5% remove, keys uniform over the \
         same range); then clear. The same workload runs on std RwLock<HashMap> for comparison, \
         {ROUNDS} rounds alternating the two; each timing is the best of its {ROUNDS}.\n"
    );

    // Three rounds, alternating the maps, each figure the best of its three: on a busy machine
    // interference only ever slows a round down, and it then hurts both maps alike.
    let mut e: Option<Run> = None;
    let mut s: Option<Run> = None;
    let (mut epoch, mut std_map) = (Arc::new(EpochMap::new()), Arc::new(RwLock::default()));
    let (mut right_after_clear, mut back_after, mut reclaimed) = Default::default();
    for _ in 0..ROUNDS {
        epoch = Arc::new(EpochMap::<u64, u64>::new());
        e = Some(best(e, run(Arc::clone(&epoch), threads)));
        // `run` returned right after `clear`: the old tables are retired, not yet freed.
        right_after_clear = epoch.memory_stats();
        let start = Instant::now();
        reclaimed = epoch.wait_for_reclamation(Duration::from_secs(30));
        back_after = start.elapsed();

        std_map = Arc::new(RwLock::new(HashMap::new()));
        s = Some(best(s, run(Arc::clone(&std_map), threads)));
    }
    let (e, s) = (e.unwrap(), s.unwrap());
    let after = epoch.memory_stats();
    let std_after_clear = std_bytes(std_map.read().unwrap().capacity());
    // The bytes held while full: fill once more (outside any timing) and read them.
    for k in 0..KEYS {
        epoch.insert(k, k);
    }
    let full = epoch.memory_stats();

    println!(
        "{:<26}{:>14}{:>18}   what it is",
        "", "epochmap", "RwLock<HashMap>"
    );
    let row = |label: &str, a: String, b: String, what: &str| {
        println!("{label:<26}{a:>14}{b:>18}   {what}");
    };
    row(
        "fill",
        ms(e.fill),
        ms(s.fill),
        "time to insert the keys one by one, one thread",
    );
    row(
        "mixed load",
        format!("{:.1} Mop/s", e.mops),
        format!("{:.1} Mop/s", s.mops),
        "million operations per second, all threads together (higher is better)",
    );
    row(
        "gets that hit",
        e.hits.to_string(),
        s.hits.to_string(),
        "gets that found their key (of about 3.6M gets; removes make some miss)",
    );
    row(
        "clear()",
        ms(e.clear),
        ms(s.clear),
        "time until clear() returned to the caller",
    );
    row(
        "memory held, full",
        mib(full.allocated_bytes),
        format!("~{}", mib(std_bytes(KEYS as usize))),
        "bytes held from the allocator at 1M keys (epochmap: allocated_bytes, tables + entry slab; std: estimated)",
    );
    row(
        "memory held after clear",
        mib(after.allocated_bytes),
        format!("~{}", mib(std_after_clear)),
        "after clear, once its memory is back (std's clear keeps the capacity)",
    );

    println!("\nepochmap's clear, step by step:");
    println!(
        "  right after clear(): {} still held, {} of it retired and waiting to be freed \
         (pending_bytes), on a background thread after the epoch's grace period",
        mib(right_after_clear.allocated_bytes),
        mib(right_after_clear.pending_bytes)
    );
    println!(
        "  back at the allocator after {} (wait_for_reclamation: {reclaimed})",
        ms(back_after)
    );
    println!(
        "  tables reclaimed {}: retired tables freed (by growth along the way, and by clear)",
        after.tables_reclaimed
    );
    println!(
        "  buckets skipped {}: buckets of retired tables never read, because their mark said empty",
        after.buckets_skipped
    );
    println!(
        "  entries dropped {}: keys and values the reclaimer dropped (removed and replaced ones \
         during the mix, and the cleared ones)",
        after.entries_reclaimed
    );
    println!(
        "  with 1M keys: tables {}, entry slab {} (of which live entries {})",
        mib(full.table_bytes),
        mib(full.slab_bytes),
        mib(full.entry_bytes)
    );
}
