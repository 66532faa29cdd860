//! Scaling: the mixes at 1, 2, 4, … threads, up to the machine's cores and past them (issue 19),
//! for epochmap and every peer, written as CSV for `benches/report` to plot
//! (`benches/scaling.sh` runs both).
//!
//! The maps, workloads, operation streams and the worker-timed run loop are the mixes' own
//! (`mixmaps.rs`), so a figure here means what the same (workload, map, threads) means in
//! `mixes.rs`; only the driver differs. Criterion wants one thread list and one measurement per
//! benchmark; here every case (workload, key distribution, map, threads) runs once per round, the
//! rounds are interleaved (each runs every case in a new shuffled order) and every round is kept.
//!
//! One case: build the streams and, for the prefilled workloads, the prefilled map (untimed); a
//! few warm-up samples of growing size estimate the rate; then samples of about `--sample-ms`
//! each (criterion's mixes take 1 s in 20 samples, so 50 ms) until `--secs` of timed work. Each
//! sample runs a fixed number of operations split evenly over the threads, so threads beyond the
//! cores finish too (preempted ones just finish later), and its time runs from the first worker's
//! start to the last worker's finish, read by the workers themselves (`run_threads`). The case's
//! figure is its operations over the sum of its samples' times. rapid-grow starts every sample
//! from an empty map, as in the mixes.
//!
//! Options (after `--`): `--threads 1,2,4,8,16` (default: 1, 2, the powers of two up to the
//! cores, the cores, then 2x, 4x and 8x the cores), `--secs S` timed seconds per case (1),
//! `--rounds R` (3), `--sample-ms MS` (50), `--maps epochmap,dashmap` and `--mixes
//! read-heavy,exchange` filters (default: every map of `mixmaps::each_map`, every workload; the
//! prototypes of `mixmaps::each_prototype` and the floor models of `floor::each_floor` run only
//! when `--maps` names them),
//! `--dists uniform,zipf` (uniform), `--out DIR` (`$EPOCHMAP_BENCH_OUT`, else `.`).
//! `EPOCHMAP_BENCH_QUICK=1` shrinks the defaults to a smoke run of seconds.
//!
//! Writes into the output directory `scaling.csv` (one row per case and round:
//! `mix,dist,map,threads,round,ops,secs,mops`), `scaling-summary.csv` (per case over the rounds:
//! best, median and worst M ops/s) and `scaling-run.txt` (`key=value` lines: cores, CPU and the
//! options, for the report's header), and prints the best of the rounds as markdown tables.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;
mod flat_proto;
mod floor;
mod mixmaps;
use common::{arg, pick, Rng, Zipf};
use mixmaps::{each_map, each_prototype, universe, Case, MapVisitor, MixMap, Workload, WORKLOADS};

/// Operations all threads' streams hold together; each thread gets a share, between
/// `MIN_STREAM` and `MAX_STREAM` (the mixes' length at 1 and 2 threads), so 512 threads do not
/// need 8 GiB of streams. A thread wraps around to the start of its stream when it runs out.
const TOTAL_STREAMS: usize = 1 << 22;
const MIN_STREAM: usize = 1 << 14;
const MAX_STREAM: usize = 1 << 20;

/// What one case runs on.
#[derive(Clone, Copy)]
struct Timing {
    /// Timed seconds per case.
    secs: f64,
    /// Target length of one sample.
    sample: Duration,
}

/// One case: a workload with a key distribution, a map, a thread count.
#[derive(Clone)]
struct CaseId {
    w: Workload,
    dist: &'static str,
    map: String,
    threads: usize,
}

/// Runs the case whose map is `want` when [`each_map`] hands it over; the others are skipped
/// without being built.
struct RunOne<'a> {
    case: &'a CaseId,
    zipf: Option<&'a Zipf>,
    timing: Timing,
    /// Operations and timed seconds, once the case has run.
    result: Option<(u64, f64)>,
}

impl MapVisitor for RunOne<'_> {
    fn visit<M: MixMap>(&mut self, name: &str, make: impl Fn() -> M) {
        if name != self.case.map {
            return;
        }
        let threads = self.case.threads;
        let len = (TOTAL_STREAMS / threads).clamp(MIN_STREAM, MAX_STREAM);
        let case = Case::new(self.case.w, self.zipf, threads, pick(len, 1 << 12), make);
        self.result = Some(measure(&case, threads, self.timing));
    }
}

/// Warm-up, then samples of about `timing.sample` until `timing.secs` of timed work; returns the
/// operations run and the sum of the samples' times (warm-up excluded).
fn measure<M: MixMap, F: Fn() -> M>(
    case: &Case<M, F>,
    threads: usize,
    timing: Timing,
) -> (u64, f64) {
    let per_thread = |iters: u64| iters.div_ceil(threads as u64).max(1) * threads as u64;
    // Warm-up: samples of growing size until one takes a tenth of the target, which also gives
    // the first estimate of the rate.
    let mut iters = per_thread(1024 * threads as u64);
    let mut took = case.sample(iters);
    while took < timing.sample / 10 && iters < 1 << 34 {
        iters *= 4;
        took = case.sample(iters);
    }
    let (mut ops, mut secs) = (0u64, 0.0f64);
    while secs < timing.secs {
        // Follow the rate of the last sample: on a shared machine it moves.
        let rate = iters as f64 / took.as_secs_f64().max(1e-9);
        iters = per_thread((rate * timing.sample.as_secs_f64()) as u64);
        took = case.sample(iters);
        ops += iters;
        secs += took.as_secs_f64();
    }
    (ops, secs)
}

/// 1 and 2, the powers of two up to `cores`, `cores` itself, then 2x, 4x and 8x `cores`
/// (oversubscribed: more runnable threads than cores, so some are preempted, lock holders
/// included).
fn default_threads(cores: usize) -> Vec<usize> {
    let mut t: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n <= cores)
        .collect();
    t.extend([2, cores, 2 * cores, 4 * cores, 8 * cores]);
    t.sort_unstable();
    t.dedup();
    t
}

/// The comma-separated list after `name`, or `default`.
fn list(args: &[String], name: &str, default: Vec<String>) -> Vec<String> {
    arg(args, name).map_or(default, |s| s.split(',').map(str::to_string).collect())
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// The names [`each_map`] knows, in its order, then (with `prototypes`) [`each_prototype`]'s and
/// the floor models' ([`floor::each_floor`]).
fn map_names(prototypes: bool) -> Vec<String> {
    struct Names(Vec<String>);
    impl MapVisitor for Names {
        fn visit<M: MixMap>(&mut self, name: &str, _: impl Fn() -> M) {
            self.0.push(name.to_string());
        }
    }
    let mut names = Names(Vec::new());
    each_map(&mut names);
    if prototypes {
        each_prototype(&mut names);
        floor::each_floor(&mut names);
    }
    names.0
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split(':').nth(1)?.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let num = |name: &str, default: f64| arg(&args, name).map_or(default, |s| s.parse().unwrap());
    let threads: Vec<usize> = match arg(&args, "--threads") {
        Some(s) => s.split(',').map(|t| t.parse().unwrap()).collect(),
        None if common::quick() => vec![1, 2, 4],
        None => default_threads(cores),
    };
    let timing = Timing {
        secs: num("--secs", pick(1.0, 0.05)),
        sample: Duration::from_secs_f64(num("--sample-ms", pick(50.0, 5.0)) / 1e3),
    };
    let rounds = num("--rounds", pick(3.0, 1.0)) as usize;
    // By default the maps; a prototype or a floor model runs only when `--maps` names it.
    let all_maps = map_names(true);
    let maps = list(&args, "--maps", map_names(false));
    let all_mixes = WORKLOADS.iter().map(|w| w.name.to_string()).collect();
    let mixes = list(&args, "--mixes", all_mixes);
    let dists = list(&args, "--dists", vec!["uniform".into()]);
    for m in &maps {
        assert!(all_maps.contains(m), "unknown map {m}; known: {all_maps:?}");
    }
    for m in &mixes {
        assert!(
            WORKLOADS.iter().any(|w| w.name == m),
            "unknown mix {m}; known: read-heavy, read-heavy-miss, exchange, rapid-grow"
        );
    }
    let out = arg(&args, "--out")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("EPOCHMAP_BENCH_OUT").map(PathBuf::from))
        .unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(&out).unwrap();

    let mut cases: Vec<CaseId> = Vec::new();
    for w in WORKLOADS
        .iter()
        .filter(|w| mixes.iter().any(|m| m == w.name))
    {
        for dist in ["uniform", "zipf"] {
            if !dists.iter().any(|d| d == dist) {
                continue;
            }
            for map in &maps {
                for &t in &threads {
                    cases.push(CaseId {
                        w: *w,
                        dist,
                        map: map.clone(),
                        threads: t,
                    });
                }
            }
        }
    }
    // One Zipf table per workload that needs one (read-heavy-miss draws from a larger universe).
    let zipfs: BTreeMap<&str, Zipf> = cases
        .iter()
        .filter(|c| c.dist == "zipf")
        .map(|c| (c.w.name, c.w))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(name, w)| (name, Zipf::new(universe(w), 0.99)))
        .collect();

    let threads_text = threads
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let run_info = format!(
        "cores={cores}\ncpu={}\nthreads={threads_text}\nsecs_per_case={}\nsample_ms={}\n\
         rounds={rounds}\nmaps={}\nmixes={}\ndists={}\n",
        cpu_model(),
        timing.secs,
        timing.sample.as_secs_f64() * 1e3,
        maps.join(","),
        mixes.join(","),
        dists.join(","),
    );
    std::fs::write(out.join("scaling-run.txt"), &run_info).unwrap();
    let csv_path = out.join("scaling.csv");
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(csv, "mix,dist,map,threads,round,ops,secs,mops").unwrap();
    println!(
        "scaling: {} cases x {rounds} round(s), {} s timed per case, threads {threads_text} on {cores} cores",
        cases.len(),
        timing.secs
    );

    let started = Instant::now();
    let mut results: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut rng = Rng::new(0x5ca1e);
    for round in 1..=rounds {
        rng.shuffle(&mut order);
        for (n, &i) in order.iter().enumerate() {
            let c = &cases[i];
            let mut run = RunOne {
                case: c,
                zipf: zipfs.get(c.w.name),
                timing,
                result: None,
            };
            each_map(&mut run);
            each_prototype(&mut run);
            floor::each_floor(&mut run);
            let (ops, secs) = run
                .result
                .expect("the case's map is one of each_map's, each_prototype's or each_floor's");
            let mops = ops as f64 / secs / 1e6;
            writeln!(
                csv,
                "{},{},{},{},{round},{ops},{secs:.6},{mops:.4}",
                c.w.name, c.dist, c.map, c.threads
            )
            .unwrap();
            csv.flush().unwrap();
            println!(
                "[round {round}/{rounds}, {}/{}, {:.0} s] {}/{} {} x{}: {mops:.2} M ops/s",
                n + 1,
                cases.len(),
                started.elapsed().as_secs_f64(),
                c.w.name,
                c.dist,
                c.map,
                c.threads
            );
            let t = threads.iter().position(|&t| t == c.threads).unwrap();
            results.entry((i - t, t)).or_default().push(mops);
        }
    }

    // Summary: per case over the rounds; and the best per (mix, map) row as markdown.
    let summary_path = out.join("scaling-summary.csv");
    let mut summary = std::fs::File::create(&summary_path).unwrap();
    writeln!(
        summary,
        "mix,dist,map,threads,runs,best_mops,median_mops,worst_mops"
    )
    .unwrap();
    let mut last_table = String::new();
    for (&(row, t), runs) in &results {
        let c = &cases[row + t];
        let best = runs.iter().cloned().fold(f64::MIN, f64::max);
        let worst = runs.iter().cloned().fold(f64::MAX, f64::min);
        writeln!(
            summary,
            "{},{},{},{},{},{best:.4},{:.4},{worst:.4}",
            c.w.name,
            c.dist,
            c.map,
            c.threads,
            runs.len(),
            median(runs.clone())
        )
        .unwrap();
        let table = format!("{}/{}", c.w.name, c.dist);
        if table != last_table {
            print!("\n\n### {table}: best of {rounds} round(s), M ops/s\n\n| map |");
            for t in &threads {
                print!(" {t} thr |");
            }
            print!("\n|---|{}", "---:|".repeat(threads.len()));
            last_table = table;
        }
        if t == 0 {
            print!("\n| {} |", c.map);
        }
        print!(" {best:.2} |");
    }
    println!(
        "\n\nscaling: {:.0} s; results in {}, {} and {}",
        started.elapsed().as_secs_f64(),
        csv_path.display(),
        summary_path.display(),
        out.join("scaling-run.txt").display()
    );
}
