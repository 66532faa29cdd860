//! Memory under churn: what a long-running cache sees when its writers replace and remove
//! heap-owning values as fast as they can (issue 18).
//!
//! Each (map, writer count) runs in a process of its own, so one map's freed-but-kept heap cannot
//! count against another's peak: the parent re-runs this binary with `--child MAP WRITERS` and
//! reads one line back. A child prefills `KEYS` keys with `VALUE_BYTES`-byte `Vec<u8>` values, then
//! runs `WRITERS` threads for the run's duration, each picking a random key and replacing it
//! (half the time) or removing it (the other half). A sampler thread reads the process's resident
//! memory (`VmRSS`) every 20 ms. The child reports the peak over the first half of the run, the
//! peak over the whole run, the resident memory at the end and the writers' throughput.
//!
//! `cargo bench -p epochmap-benches --bench churn` runs every map at 2 and 8 writers for 8 s and
//! writes `churn.csv` (into `$EPOCHMAP_BENCH_OUT` when set). Arguments after `--`:
//! `--secs S`, `--writers 2,8`, `--maps epochmap,flat-epochmap,epochmap-inline,papaya,dashmap`, `--rounds R`
//! (each round runs every case once, in a shuffled order; the table shows every round),
//! `--entries N` (the epochmap and flat-epochmap rows' `backpressure_entries`, for trying bounds).

use std::hash::BuildHasher;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use epochmap::{EpochMap, FlatEpochMap, ReclaimMode};

mod common;
use common::{arg, hasher, key, pick, Hasher, Rng};

/// Keys the map holds at the start; the writers pick among them.
const KEYS: u64 = 100_000;
/// Bytes each value owns on the heap.
const VALUE_BYTES: usize = 512;
/// Every map the run knows, in table order.
const MAPS: [&str; 5] = [
    "epochmap",
    "flat-epochmap",
    "epochmap-inline",
    "papaya",
    "dashmap",
];

/// What every map under test offers the writers.
trait ChurnMap: Send + Sync + 'static {
    fn put(&self, k: u64, v: Vec<u8>);
    fn del(&self, k: u64);
}

impl<S: BuildHasher + Send + Sync + 'static> ChurnMap for EpochMap<u64, Vec<u8>, S> {
    fn put(&self, k: u64, v: Vec<u8>) {
        self.insert(k, v);
    }
    fn del(&self, k: u64) {
        self.remove(&k);
    }
}

impl<S: BuildHasher + Send + Sync + 'static> ChurnMap for FlatEpochMap<u64, Vec<u8>, S> {
    fn put(&self, k: u64, v: Vec<u8>) {
        self.insert(k, v);
    }
    fn del(&self, k: u64) {
        self.remove(&k);
    }
}

impl ChurnMap for papaya::HashMap<u64, Vec<u8>, Hasher> {
    fn put(&self, k: u64, v: Vec<u8>) {
        self.pin().insert(k, v);
    }
    fn del(&self, k: u64) {
        self.pin().remove(&k);
    }
}

impl ChurnMap for dashmap::DashMap<u64, Vec<u8>, Hasher> {
    fn put(&self, k: u64, v: Vec<u8>) {
        self.insert(k, v);
    }
    fn del(&self, k: u64) {
        self.remove(&k);
    }
}

/// `entries`: the epochmap rows' `backpressure_entries`, when the run sets one (`--entries N`,
/// for trying bounds; the report runs the default).
fn build(name: &str, entries: Option<usize>) -> Arc<dyn ChurnMap> {
    let epochmap = |mode| {
        let builder = EpochMap::builder().hasher(hasher()).reclaim_mode(mode);
        match entries {
            Some(n) => builder.backpressure_entries(n),
            None => builder,
        }
        .build::<u64, Vec<u8>>()
    };
    match name {
        "epochmap" => Arc::new(epochmap(ReclaimMode::Background)),
        "epochmap-inline" => Arc::new(epochmap(ReclaimMode::Inline)),
        // Built as the `epochmap` row is: the default (background) reclaim mode, the same hasher
        // and `--entries` bound. Its values are cloned when its tables grow (the prefill).
        "flat-epochmap" => {
            let builder = FlatEpochMap::builder().hasher(hasher());
            Arc::new(
                match entries {
                    Some(n) => builder.backpressure_entries(n),
                    None => builder,
                }
                .build::<u64, Vec<u8>>(),
            )
        }
        "papaya" => Arc::new(papaya::HashMap::with_hasher(hasher())),
        "dashmap" => Arc::new(dashmap::DashMap::with_hasher(hasher())),
        other => panic!("unknown map {other}; known: {MAPS:?}"),
    }
}

/// Resident memory of this process, in bytes (`VmRSS` of `/proc/self/status`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One measured case, in a child process: prints `first_half_peak whole_peak end ops_per_sec`.
fn child(name: &str, writers: usize, secs: f64, entries: Option<usize>) {
    let map = build(name, entries);
    for i in 0..KEYS {
        map.put(key(i), vec![i as u8; VALUE_BYTES]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let (map, stop, ops) = (Arc::clone(&map), Arc::clone(&stop), Arc::clone(&ops));
            std::thread::spawn(move || {
                let mut rng = Rng::new(0xc4u64 << 32 | t as u64);
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let r = rng.next_u64();
                        let k = key(r % KEYS);
                        if r >> 63 == 0 {
                            map.put(k, vec![r as u8; VALUE_BYTES]);
                        } else {
                            map.del(k);
                        }
                    }
                    done += 256;
                }
                ops.fetch_add(done, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    let run = Duration::from_secs_f64(secs);
    let (mut first_half, mut whole) = (0u64, 0u64);
    while start.elapsed() < run {
        std::thread::sleep(Duration::from_millis(20));
        let rss = rss_bytes();
        whole = whole.max(rss);
        if start.elapsed() < run / 2 {
            first_half = first_half.max(rss);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    let end = rss_bytes();
    let rate = ops.load(Ordering::Relaxed) as f64 / elapsed;
    println!("{first_half} {whole} {end} {rate}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let secs = arg(&args, "--secs").map_or(8.0, |s| s.parse().unwrap());
        let entries = arg(&args, "--entries").map(|n| n.parse().unwrap());
        child(&args[i + 1], args[i + 2].parse().unwrap(), secs, entries);
        return;
    }
    let secs: f64 = arg(&args, "--secs").map_or(pick(8.0, 0.2), |s| s.parse().unwrap());
    let rounds: usize = arg(&args, "--rounds").map_or(1, |s| s.parse().unwrap());
    let writers: Vec<usize> = arg(&args, "--writers")
        .unwrap_or("2,8")
        .split(',')
        .map(|w| w.parse().unwrap())
        .collect();
    let maps: Vec<String> = arg(&args, "--maps")
        .map(|m| m.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| MAPS.iter().map(|m| m.to_string()).collect());
    let mut cases: Vec<(String, usize)> = maps
        .iter()
        .flat_map(|m| writers.iter().map(move |&w| (m.clone(), w)))
        .collect();
    let entries = arg(&args, "--entries");
    let exe = std::env::current_exe().unwrap();
    let out_dir = std::env::var("EPOCHMAP_BENCH_OUT").unwrap_or_else(|_| ".".into());
    let csv_path = std::path::Path::new(&out_dir).join("churn.csv");
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(
        csv,
        "round,map,writers,first_half_peak_mib,peak_mib,end_mib,mops_per_sec"
    )
    .unwrap();
    println!("churn: {KEYS} keys, {VALUE_BYTES}-byte values, {secs} s per case, {rounds} round(s)");
    println!(
        "| round | map | writers | peak, first half (MiB) | peak (MiB) | end (MiB) | M ops/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut rng = Rng::new(0x5eed);
    for round in 1..=rounds {
        rng.shuffle(&mut cases);
        for (map, w) in &cases {
            let mut command = Command::new(&exe);
            command.args(["--child", map, &w.to_string(), "--secs", &secs.to_string()]);
            if let Some(n) = entries {
                command.args(["--entries", n]);
            }
            let output = command.output().expect("run a churn child");
            let line = String::from_utf8_lossy(&output.stdout);
            let f: Vec<f64> = line
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if !output.status.success() || f.len() != 4 {
                panic!(
                    "churn child {map} x{w} failed: {}\n{line}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let mib = |b: f64| b / (1024.0 * 1024.0);
            let (half, peak, end, rate) = (mib(f[0]), mib(f[1]), mib(f[2]), f[3] / 1e6);
            println!("| {round} | {map} | {w} | {half:.0} | {peak:.0} | {end:.0} | {rate:.2} |");
            writeln!(
                csv,
                "{round},{map},{w},{half:.1},{peak:.1},{end:.1},{rate:.3}"
            )
            .unwrap();
        }
    }
    println!("churn: results in {}", csv_path.display());
}
