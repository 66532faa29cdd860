//! Per-key counters bumped by many threads, exported every interval by `drain`.
//!
//! Worker threads count "requests" per route in an `EpochMap<u32, AtomicU64>`: a lock-free `get`
//! and a `fetch_add` through the returned `Ref` (or `get_or_insert_with` for a route not seen since
//! the last export). Every interval an exporter takes the whole map with `drain`, which costs it
//! O(shards) and makes no worker wait, and adds the counts to its running totals. At the end the
//! exported totals are compared with what the workers know they counted: not one increment may be
//! lost or exported twice.
//!
//! Why nothing is lost: a worker that bumps a counter the drain has just taken still holds the
//! `Ref` it found the counter through, and the drain does not move a value out before every such
//! reader has let go (its grace period), so the increment is in the value the exporter reads. A
//! worker that comes after the swap finds no counter and starts a fresh one in the new table,
//! which the next export takes.
//!
//! Run with `cargo run --release --example metrics` (optionally `-- SECONDS`, default 2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use epochmap::EpochMap;

const ROUTES: u32 = 1_000;
const INTERVAL: Duration = Duration::from_millis(100);

/// A tiny xorshift generator, so the example needs no dependency.
fn next_route(state: &mut u64) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    // Skewed towards low routes, like real traffic.
    let r = (*state % u64::from(ROUTES)) as u32;
    r * r / ROUTES
}

fn bump(map: &EpochMap<u32, AtomicU64>, route: u32) {
    // Relaxed: the count is all that matters; the drain's grace period orders every increment
    // made through a `Ref` before the exporter reads the value.
    match map.get(&route) {
        Some(counter) => counter.fetch_add(1, Ordering::Relaxed),
        None => map
            .get_or_insert_with(route, || AtomicU64::new(0))
            .fetch_add(1, Ordering::Relaxed),
    };
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let map: Arc<EpochMap<u32, AtomicU64>> = Arc::new(EpochMap::new());
    let stop = Arc::new(AtomicBool::new(false));

    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (map, stop) = (Arc::clone(&map), Arc::clone(&stop));
            std::thread::spawn(move || {
                // What this worker counted, per route: the ground truth for the final check.
                let mut counted = vec![0u64; ROUTES as usize];
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1_000 {
                        let route = next_route(&mut rng);
                        bump(&map, route);
                        counted[route as usize] += 1;
                    }
                }
                counted
            })
        })
        .collect();

    println!("{workers} workers counting over {ROUTES} routes; exporting every {INTERVAL:?}");
    println!("export  routes  increments  drain() call  moved out in");
    let mut exported: HashMap<u32, u64> = HashMap::new();
    let mut export = |label: &str| {
        let start = Instant::now();
        let drain = map.drain();
        let called = start.elapsed();
        let (mut routes, mut increments) = (0, 0);
        for (route, counter) in drain {
            let n = counter.into_inner();
            *exported.entry(route).or_default() += n;
            routes += 1;
            increments += n;
        }
        println!(
            "{label:>6}  {routes:>6}  {increments:>10}  {:>9.1} µs  {:>9.1} µs",
            called.as_secs_f64() * 1e6,
            (start.elapsed() - called).as_secs_f64() * 1e6
        );
    };

    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut round = 0;
    while Instant::now() < deadline {
        std::thread::sleep(INTERVAL);
        round += 1;
        export(&round.to_string());
    }
    stop.store(true, Ordering::Relaxed);
    let mut truth = vec![0u64; ROUTES as usize];
    for handle in handles {
        for (route, n) in handle.join().unwrap().into_iter().enumerate() {
            truth[route] += n;
        }
    }
    export("final");

    let total: u64 = truth.iter().sum();
    let exported_total: u64 = exported.values().sum();
    for (route, &n) in truth.iter().enumerate() {
        let got = exported.get(&(route as u32)).copied().unwrap_or(0);
        assert_eq!(
            got, n,
            "route {route}: exported {got} increments, workers counted {n}"
        );
    }
    assert_eq!(exported_total, total);
    assert!(map.is_empty());
    println!(
        "checked: {total} increments counted, {exported_total} exported over {} exports; none lost, \
         none counted twice",
        round + 1
    );
}
