//! Memory per map: bytes allocated per entry at 1M `u64 -> u64` entries, and the peak bytes while
//! growing from empty to 1M, measured with a counting global allocator (which is why this is its
//! own binary: the allocator is process-wide). Not a criterion bench; it prints a table and writes
//! `memory.tsv` into `$EPOCHMAP_BENCH_OUT` (default `target/bench-results`) for the report.
//!
//! The maps: epochmap, `FlatEpochMap` (`flat-epochmap`, entries inline in the table), papaya,
//! dashmap, scc, `RwLock<std HashMap>` and hashbrown. For each map: record the live bytes, build the map with its default capacity, insert `key(i) ->
//! i` for i in 0..n one by one (the peak is tracked on every allocation), then let deferred frees
//! run (epochmap: `wait_for_reclamation`; papaya and scc free retired arrays through their own
//! epochs, which a few pinned no-op operations drive) and record the live bytes again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap as StdHashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use epochmap::{EpochMap, FlatEpochMap};

mod common;
use common::{hasher, key, pick};

/// Counts live heap bytes and their high-water mark, twice: the bytes the program *requested*
/// (`LIVE`/`PEAK`), and the bytes the allocator really sets aside for them (`FOOT`: glibc's usable
/// size plus its 8-byte chunk header), which matters for maps that make one small allocation per
/// entry (a 16-byte request occupies a 32-byte chunk). `Relaxed` is enough: the counters are read
/// by the thread that did the work and need no ordering with other memory.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static FOOT: AtomicUsize = AtomicUsize::new(0);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn footprint(ptr: *mut u8, requested: usize) -> usize {
    extern "C" {
        fn malloc_usable_size(ptr: *mut std::ffi::c_void) -> usize;
    }
    if requested >= 64 * 1024 {
        // Large blocks are their own mappings; an over-aligned one may map more address space
        // than it uses, but pages never touched cost no memory, so count what was asked for.
        return requested.next_multiple_of(4096);
    }
    // SAFETY: `ptr` is a live allocation from glibc's malloc family (System on linux-gnu).
    unsafe { malloc_usable_size(ptr.cast()) + 8 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn footprint(_ptr: *mut u8, requested: usize) -> usize {
    requested
}

fn grew(ptr: *mut u8, bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
    FOOT.fetch_add(footprint(ptr, bytes), Ordering::Relaxed);
}

fn shrank(ptr: *mut u8, bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
    FOOT.fetch_sub(footprint(ptr, bytes), Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's layout unchanged, so `System`'s
// guarantees hold; the counters only ask the allocator about live pointers.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(p, layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(p, layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(ptr, layout.size());
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_foot = footprint(ptr, layout.size());
        // SAFETY: `ptr` came from `System` with `layout`; `new_size` is the caller's valid size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            FOOT.fetch_sub(old_foot, Ordering::Relaxed);
            grew(p, new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Row {
    map: &'static str,
    live: usize,
    peak: usize,
    foot: usize,
}

/// Measures one map: `build` creates and fills it, `settle` lets deferred frees run.
fn measure<M>(
    name: &'static str,
    n: u64,
    build: impl FnOnce(u64) -> M,
    settle: impl Fn(&M),
) -> Row {
    let base = LIVE.load(Ordering::Relaxed);
    let base_foot = FOOT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let map = build(n);
    settle(&map);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    let foot = FOOT.load(Ordering::Relaxed).saturating_sub(base_foot);
    drop(map);
    Row {
        map: name,
        live,
        peak,
        foot,
    }
}

fn main() {
    let n: u64 = pick(1_000_000, 50_000);
    let mut rows = Vec::new();

    rows.push(measure(
        "epochmap",
        n,
        |n| {
            let m = EpochMap::with_hasher(hasher());
            for i in 0..n {
                m.insert(key(i), i);
            }
            m
        },
        |m| {
            assert!(m.wait_for_reclamation(Duration::from_secs(30)));
        },
    ));
    rows.push(measure(
        "flat-epochmap",
        n,
        |n| {
            let m = FlatEpochMap::with_hasher(hasher());
            for i in 0..n {
                m.insert(key(i), i);
            }
            m
        },
        |m| {
            assert!(m.wait_for_reclamation(Duration::from_secs(30)));
        },
    ));
    rows.push(measure(
        "papaya",
        n,
        |n| {
            let m = papaya::HashMap::with_hasher(hasher());
            for i in 0..n {
                m.pin().insert(key(i), i);
            }
            m
        },
        |m| {
            // seize frees retired tables in batches as threads pin and unpin.
            for _ in 0..10_000 {
                m.pin().get(&0);
            }
            std::thread::sleep(Duration::from_millis(50));
        },
    ));
    rows.push(measure(
        "dashmap",
        n,
        |n| {
            let m = dashmap::DashMap::with_hasher(hasher());
            for i in 0..n {
                m.insert(key(i), i);
            }
            m
        },
        |_| {},
    ));
    rows.push(measure(
        "scc",
        n,
        |n| {
            let m = scc::HashMap::with_hasher(hasher());
            for i in 0..n {
                let _ = m.insert(key(i), i);
            }
            m
        },
        |m| {
            // sdd frees retired arrays as threads enter and leave its epochs.
            for _ in 0..10_000 {
                m.read(&0, |_, v| *v);
            }
            std::thread::sleep(Duration::from_millis(50));
        },
    ));
    rows.push(measure(
        "rwlock-std",
        n,
        |n| {
            let mut m = StdHashMap::with_hasher(hasher());
            for i in 0..n {
                m.insert(key(i), i);
            }
            RwLock::new(m)
        },
        |_| {},
    ));
    rows.push(measure(
        "hashbrown",
        n,
        |n| {
            let mut m = hashbrown::HashMap::with_hasher(hasher());
            for i in 0..n {
                m.insert(key(i), i);
            }
            m
        },
        |_| {},
    ));

    let dir = std::env::var_os("EPOCHMAP_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "target/bench-results".into());
    std::fs::create_dir_all(&dir).expect("create the results directory");
    let mut out = std::fs::File::create(dir.join("memory.tsv")).expect("create memory.tsv");
    writeln!(out, "map\tentries\tlive_bytes\tpeak_bytes\tfootprint_bytes").unwrap();
    println!(
        "{:<13} {:>10} {:>14} {:>10} {:>14} {:>14}",
        "map", "entries", "live bytes", "B/entry", "peak bytes", "footprint"
    );
    for r in &rows {
        writeln!(out, "{}\t{}\t{}\t{}\t{}", r.map, n, r.live, r.peak, r.foot).unwrap();
        println!(
            "{:<13} {:>10} {:>14} {:>10.1} {:>14} {:>14}",
            r.map,
            n,
            r.live,
            r.live as f64 / n as f64,
            r.peak,
            r.foot
        );
    }
}
