//! The flat prototype (`flat_proto.rs`) by itself: a multithreaded sanity check (`--check`, which
//! also checks the floor models of `floor.rs` against std's `HashMap`), then single-thread insert /
//! remove / get-hit / get-miss at 1K, 100K and 1M entries against epochmap, dashmap and hashbrown
//! (the single_thread bench's method, timed with `Instant`: batches of 256 writes, each undone
//! untimed; batches of 1024 random gets), interleaved over the maps, best and median of `--rounds`
//! (5), and bytes per entry at 1M. The floor models are rows too (`floor-inline`, `floor-flat`,
//! `floor-flat-epoch`, ..., one call per operation).
//!
//! `cargo bench -p epochmap-benches --bench flat_st -- [--check] [--rounds 5] [--ms 40]
//! [--maps floor-inline,floor-flat,dashmap] [--sizes 1000,1000000]`

use std::hint::black_box;
use std::time::{Duration, Instant};

mod common;
mod flat_proto;
mod floor;
// The mixes' maps come along with the floor models' `MixMap` side; only the latter is used here.
#[allow(dead_code)]
mod mixmaps;
use common::{arg, hasher, key, Hasher, Rng};
use flat_proto::{Flat, GROW4, NOPIN, WRES};
use mixmaps::{MapVisitor, MixMap, Op};

type FlatP = Flat<u64, u64, Hasher, false>;
type FlatE = Flat<u64, u64, Hasher, true>;

trait St {
    fn get(&self, k: u64) -> u64;
    fn insert(&mut self, k: u64);
    fn remove(&mut self, k: u64);
    /// The gets of one timed batch; a map with a batch handle (`pin()`) takes it once here.
    fn get_batch(&self, keys: &[u64]) -> u64 {
        keys.iter().fold(0, |sum, &k| sum.wrapping_add(self.get(k)))
    }
}

impl<const E: bool, const W: u8> St for Flat<u64, u64, Hasher, E, W> {
    fn get(&self, k: u64) -> u64 {
        Flat::get(self, &k).unwrap_or(0)
    }
    fn insert(&mut self, k: u64) {
        Flat::insert(self, k, k);
    }
    fn remove(&mut self, k: u64) {
        Flat::remove(self, &k);
    }
}
impl St for dashmap::DashMap<u64, u64, Hasher> {
    fn get(&self, k: u64) -> u64 {
        dashmap::DashMap::get(self, &k).map_or(0, |v| *v)
    }
    fn insert(&mut self, k: u64) {
        dashmap::DashMap::insert(self, k, k);
    }
    fn remove(&mut self, k: u64) {
        dashmap::DashMap::remove(self, &k);
    }
}
impl St for hashbrown::HashMap<u64, u64, Hasher> {
    fn get(&self, k: u64) -> u64 {
        hashbrown::HashMap::get(self, &k).map_or(0, |v| *v)
    }
    fn insert(&mut self, k: u64) {
        hashbrown::HashMap::insert(self, k, k);
    }
    fn remove(&mut self, k: u64) {
        hashbrown::HashMap::remove(self, &k);
    }
}

/// A floor model (`floor.rs`), one call per operation: what the mixes run, one operation at a time.
struct FloorSt<M>(M);
impl<M: MixMap> St for FloorSt<M> {
    fn get(&self, k: u64) -> u64 {
        self.0.run(&[(Op::Get, k)])
    }
    fn insert(&mut self, k: u64) {
        self.0.run(&[(Op::Insert, k)]);
    }
    fn remove(&mut self, k: u64) {
        self.0.run(&[(Op::Remove, k)]);
    }
}

/// hashbrown with a crossbeam pin around each get: the floor of a one-call get that pins.
struct BrownPin(hashbrown::HashMap<u64, u64, Hasher>);
impl St for BrownPin {
    fn get(&self, k: u64) -> u64 {
        let _g = crossbeam_epoch::pin();
        self.0.get(&k).map_or(0, |v| *v)
    }
    fn insert(&mut self, k: u64) {
        self.0.insert(k, k);
    }
    fn remove(&mut self, k: u64) {
        self.0.remove(&k);
    }
}

/// The flat prototype read through one guard per batch of gets, as the real map's `pin()`.
struct FlatPinned(FlatP);
impl St for FlatPinned {
    fn get(&self, k: u64) -> u64 {
        self.0.get(&k).unwrap_or(0)
    }
    fn insert(&mut self, k: u64) {
        self.0.insert(k, k);
    }
    fn remove(&mut self, k: u64) {
        self.0.remove(&k);
    }
    fn get_batch(&self, keys: &[u64]) -> u64 {
        let guard = crossbeam_epoch::pin();
        keys.iter().fold(0, |sum, &k| {
            sum.wrapping_add(self.0.get_pinned(&guard, &k).unwrap_or(0))
        })
    }
}

/// Both of the crate's maps: one call per operation, and read through `pin()` once per batch of
/// gets (`$pinned`). One body for both, as the maps share their API (their layout trait is
/// private, so no generic impl can name it).
macro_rules! epochmap_st {
    ($($map:ident, $pinned:ident;)*) => {$(
        impl St for epochmap::$map<u64, u64, Hasher> {
            fn get(&self, k: u64) -> u64 {
                epochmap::$map::get(self, &k).map_or(0, |v| *v)
            }
            fn insert(&mut self, k: u64) {
                epochmap::$map::insert(self, k, k);
            }
            fn remove(&mut self, k: u64) {
                epochmap::$map::remove(self, &k);
            }
        }

        struct $pinned(epochmap::$map<u64, u64, Hasher>);
        impl St for $pinned {
            fn get(&self, k: u64) -> u64 {
                self.0.get(&k).map_or(0, |v| *v)
            }
            fn insert(&mut self, k: u64) {
                self.0.insert(k, k);
            }
            fn remove(&mut self, k: u64) {
                self.0.remove(&k);
            }
            fn get_batch(&self, keys: &[u64]) -> u64 {
                let pinned = self.0.pin();
                keys.iter().fold(0, |sum, &k| {
                    sum.wrapping_add(pinned.get(&k).map_or(0, |v| *v))
                })
            }
        }
    )*};
}

epochmap_st! {
    EpochMap, EpochPinned;
    FlatEpochMap, FlatEpochPinned;
}

const OPS: [&str; 4] = ["insert", "remove", "get-miss", "get-hit"];

/// ns per op of `op` on `m` (holding `key(0..n)`), over about `budget`.
fn measure(m: &mut dyn St, op: &str, n: u64, rng: &mut Rng, budget: Duration) -> f64 {
    let (mut ops, mut took) = (0u64, Duration::ZERO);
    let mut sum = 0u64;
    while took < budget {
        match op {
            "insert" | "remove" => {
                let base = if op == "insert" { n } else { 0 };
                let span = if op == "insert" { n * 4 } else { n };
                let mut keys: Vec<u64> = (0..256).map(|_| key(base + rng.below(span))).collect();
                keys.sort_unstable();
                keys.dedup();
                let t = Instant::now();
                for &k in &keys {
                    if op == "insert" {
                        m.insert(k);
                    } else {
                        m.remove(k);
                    }
                }
                took += t.elapsed();
                for &k in &keys {
                    if op == "insert" {
                        m.remove(k);
                    } else {
                        m.insert(k);
                    }
                }
                ops += keys.len() as u64;
            }
            _ => {
                let (base, span) = if op == "get-hit" { (0, n) } else { (n * 8, n) };
                let keys: Vec<u64> = (0..1024).map(|_| key(base + rng.below(span))).collect();
                let t = Instant::now();
                sum = sum.wrapping_add(m.get_batch(&keys));
                took += t.elapsed();
                ops += keys.len() as u64;
            }
        }
    }
    black_box(sum);
    took.as_nanos() as f64 / ops as f64
}

fn make(name: &str, n: u64) -> Box<dyn St> {
    let mut m: Box<dyn St> = match name {
        "flat-proto" => Box::new(FlatP::with_hasher(hasher())),
        "flat-embed" => Box::new(FlatE::with_hasher(hasher())),
        "flat-nopin" => Box::new(Flat::<u64, u64, Hasher, false, NOPIN>::with_hasher(hasher())),
        "flat-wres" => Box::new(Flat::<u64, u64, Hasher, false, WRES>::with_hasher(hasher())),
        "flat-both" => {
            Box::new(Flat::<u64, u64, Hasher, false, { NOPIN | WRES }>::with_hasher(hasher()))
        }
        "flat-grow4" => Box::new(
            Flat::<u64, u64, Hasher, false, { NOPIN | WRES | GROW4 }>::with_hasher(hasher()),
        ),
        "flat-pinned" => Box::new(FlatPinned(FlatP::with_hasher(hasher()))),
        "epochmap" => Box::new(epochmap::EpochMap::with_hasher(hasher())),
        "epochmap-pinned" => Box::new(EpochPinned(epochmap::EpochMap::with_hasher(hasher()))),
        "flat-epochmap" => Box::new(epochmap::FlatEpochMap::with_hasher(hasher())),
        "flat-epochmap-pinned" => Box::new(FlatEpochPinned(epochmap::FlatEpochMap::with_hasher(
            hasher(),
        ))),
        "dashmap" => Box::new(dashmap::DashMap::with_hasher(hasher())),
        "hashbrown" => Box::new(hashbrown::HashMap::with_hasher(hasher())),
        "hashbrown+pin" => Box::new(BrownPin(hashbrown::HashMap::with_hasher(hasher()))),
        "floor-inline" => Box::new(FloorSt(floor::Inline::new())),
        "floor-pool" => Box::new(FloorSt(floor::Pooled::new())),
        "floor-epoch" => Box::new(FloorSt(floor::Epoch::new())),
        "floor-flat" => Box::new(FloorSt(floor::Flat::new())),
        "floor-flat-epoch" => Box::new(FloorSt(floor::FlatEpoch::new())),
        _ => unreachable!(),
    };
    for i in 0..n {
        m.insert(key(i));
    }
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// Two writers on disjoint keys (insert, replace, update, remove, verifying their own keys) and a
/// reader checking that a stable set of keys, replaced over and over, is never seen absent.
fn check<const E: bool, const W: u8>() {
    // Small tables (4 buckets per shard) near their load limit: misses must end.
    let small = Flat::<u64, u64, Hasher, E, W>::with_hasher(hasher());
    for i in 0..400 {
        small.insert(key(i), i);
        for j in 0..=i {
            assert_eq!(small.get(&key(j)), Some(j));
        }
        for j in 0..100 {
            assert_eq!(small.get(&key(1 << 50 | j)), None);
        }
    }
    let m = Flat::<u64, u64, Hasher, E, W>::with_hasher(hasher());
    const STABLE: u64 = 10_000;
    for i in 0..STABLE {
        m.insert(key(1 << 40 | i), 0);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut rng = Rng::new(9);
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = rng.below(STABLE);
                assert!(
                    m.get(&key(1 << 40 | i)).is_some(),
                    "stable key {i} vanished"
                );
                reads += 1;
            }
            reads
        });
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let m = &m;
                s.spawn(move || {
                    let mut rng = Rng::new(t);
                    for round in 0..30u64 {
                        let n = 20_000u64;
                        let k = |i: u64| key(t << 32 | i);
                        for i in 0..n {
                            assert!(m.insert(k(i), i + round));
                        }
                        for i in 0..n {
                            assert_eq!(m.get(&k(i)), Some(i + round));
                        }
                        for i in (0..n).step_by(3) {
                            assert!(!m.insert(k(i), i * 7));
                            assert!(m.update(&k(i), |v| v + 1));
                        }
                        for _ in 0..5_000 {
                            let i = rng.below(STABLE);
                            m.insert(key(1 << 40 | i), round);
                            m.update(&key(1 << 40 | i), |v| v + 1);
                        }
                        for i in (0..n).filter(|i| i % 2 == 0) {
                            assert!(m.remove(&k(i)));
                        }
                        for i in 0..n {
                            let want = match (i % 2, i % 3) {
                                (0, _) => None,
                                (_, 0) => Some(i * 7 + 1),
                                _ => Some(i + round),
                            };
                            assert_eq!(m.get(&k(i)), want, "thread {t} round {round} key {i}");
                        }
                        for i in (0..n).filter(|i| i % 2 == 1) {
                            assert!(m.remove(&k(i)));
                            assert!(!m.remove(&k(i)));
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        println!(
            "check (embed={E}, knobs={W}): ok, reader did {} gets",
            reader.join().unwrap()
        );
    });
    assert_eq!(m.len(), STABLE as usize);
}

/// Each floor model against std's `HashMap`: one thread's random inserts, replaces, updates and
/// removes over 2,000 keys (so dead entries, their reclamation and same-size rebuilds all happen),
/// every get compared; then two threads on disjoint keys, each checking its own, so one thread's
/// batches come back from the epoch while the other writes.
fn check_floors() {
    struct Check;
    impl MapVisitor for Check {
        fn visit<M: MixMap>(&mut self, name: &str, make: impl Fn() -> M) {
            let run = |m: &M, t: u64, keys: u64, ops: usize| {
                let mut model = std::collections::HashMap::new();
                let mut rng = Rng::new(t);
                for n in 0..ops {
                    let k = key(t << 32 | rng.below(keys));
                    let op = [Op::Get, Op::Insert, Op::Remove, Op::Update][rng.below(4) as usize];
                    let got = m.run(&[(op, k)]);
                    match op {
                        Op::Get => {
                            let want = model.get(&k).copied().unwrap_or(0);
                            assert_eq!(got, want, "{name}: op {n}, thread {t}");
                        }
                        Op::Insert => drop(model.insert(k, k)),
                        Op::Remove => drop(model.remove(&k)),
                        Op::Update => {
                            if let Some(v) = model.get_mut(&k) {
                                *v = u64::wrapping_add(*v, 1);
                            }
                        }
                    }
                }
                for (&k, &v) in &model {
                    assert_eq!(m.run(&[(Op::Get, k)]), v, "{name}: thread {t} at the end");
                }
            };
            run(&make(), 0, 2_000, 400_000);
            let m = make();
            std::thread::scope(|s| {
                let (m, run) = (&m, &run);
                for t in 1..=2 {
                    s.spawn(move || run(m, t, 5_000, 400_000));
                }
            });
            println!("check {name}: ok");
        }
    }
    floor::each_floor(&mut Check);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--check") {
        check_floors();
        check::<false, 0>();
        check::<true, 0>();
        check::<false, NOPIN>();
        check::<false, WRES>();
        check::<false, { NOPIN | WRES }>();
        check::<false, { NOPIN | WRES | GROW4 }>();
        return;
    }
    if let Some(n) = arg(&args, "--prefetch") {
        flat_proto::PREFETCH_LINES.store(n.parse().unwrap(), std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(n) = arg(&args, "--load-eighths") {
        flat_proto::LOAD_EIGHTHS.store(n.parse().unwrap(), std::sync::atomic::Ordering::Relaxed);
    }
    let rounds: usize = arg(&args, "--rounds").map_or(5, |s| s.parse().unwrap());
    let budget = Duration::from_millis(arg(&args, "--ms").map_or(40, |s| s.parse().unwrap()));
    let maps: Vec<String> = arg(&args, "--maps")
        .unwrap_or("flat-proto,epochmap,dashmap,hashbrown")
        .split(',')
        .map(String::from)
        .collect();
    let mut rng = Rng::new(77);
    let sizes: Vec<u64> = arg(&args, "--sizes")
        .unwrap_or("1000,100000,1000000")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    for n in sizes {
        let mut built: Vec<Box<dyn St>> = maps.iter().map(|name| make(name, n)).collect();
        let mut res = vec![vec![Vec::new(); OPS.len()]; maps.len()];
        for _ in 0..rounds {
            for (o, op) in OPS.iter().enumerate() {
                let mut order: Vec<usize> = (0..maps.len()).collect();
                rng.shuffle(&mut order);
                for i in order {
                    res[i][o].push(measure(built[i].as_mut(), op, n, &mut rng, budget));
                }
            }
        }
        println!("\n### n = {n}: ns/op, best (median) of {rounds} interleaved rounds\n");
        println!("| map | {} |", OPS.join(" | "));
        println!("|---|{}", "---:|".repeat(OPS.len()));
        for (i, name) in maps.iter().enumerate() {
            let cells: Vec<String> = res[i]
                .iter()
                .map(|v| {
                    let best = v.iter().cloned().fold(f64::MAX, f64::min);
                    format!("{best:.1} ({:.1})", median(v.clone()))
                })
                .collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
        println!(
            "(flat resizes so far: {} doublings, {} same-size rebuilds)",
            flat_proto::GROWS.load(std::sync::atomic::Ordering::Relaxed),
            flat_proto::REBUILDS.load(std::sync::atomic::Ordering::Relaxed)
        );
        if n == 1_000_000 {
            let f = FlatP::with_hasher(hasher());
            let d = dashmap::DashMap::<u64, u64, Hasher>::with_hasher(hasher());
            let e = epochmap::EpochMap::<u64, u64, Hasher>::with_hasher(hasher());
            for i in 0..n {
                f.insert(key(i), i);
                d.insert(key(i), i);
                e.insert(key(i), i);
            }
            let fb = f.table_bytes() as f64 / f.len() as f64;
            // hashbrown: buckets = capacity * 8 / 7 (power of two), 16 B pair + 1 control byte.
            let db = (d.capacity() as f64 * 8.0 / 7.0) * 17.0 / n as f64;
            let eb = e.memory_stats().total_bytes() as f64 / n as f64;
            println!("\nbytes/entry at 1M: flat-proto {fb:.1}, dashmap ~{db:.1} (capacity*8/7*17), epochmap {eb:.1} (memory_stats)");
        }
    }
}
