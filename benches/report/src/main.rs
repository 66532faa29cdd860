//! Turns one run of epochmap's benchmark suite into `docs/benchmarks.md` and SVG plots.
//!
//! Reads criterion's `*/new/benchmark.json` + `estimates.json` under `<results>/criterion`, the
//! memory bench's `<results>/memory.tsv` and the churn bench's `<results>/churn.csv`; writes the
//! markdown report (tables with ops/s and ratio to epochmap per workload, the targets of issues 7, 11 and 20
//! with met / not met, machine, command, date) and plots with `plotters`. Run by `benches/report.sh`; see `benches/README.md`.
//!
//! `epochmap-bench-report scaling ...` renders the scaling run instead (`scaling.rs`, run by
//! `benches/scaling.sh`); the full report re-renders the published one (`--scaling DIR`).
//!
//! Every figure is the fastest of criterion's samples (time per iteration; see `fastest_sample`);
//! one iteration is one operation, so ops/s = 1e9 / ns.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

mod plot;
mod scaling;
use plot::{Line, ThreadAxis};

/// One criterion benchmark: `group/function/param`, median ns per iteration, elements per iteration.
#[derive(Debug, Clone)]
struct Rec {
    group: String,
    func: String,
    param: String,
    ns: f64,
    elems: f64,
}

impl Rec {
    /// Elements (operations) per second.
    fn ops(&self) -> f64 {
        self.elems * 1e9 / self.ns
    }
}

struct Args {
    results: PathBuf,
    out: PathBuf,
    img: PathBuf,
    analysis: Option<PathBuf>,
    command: String,
    date: String,
    commit: String,
    rustc: String,
    runtime: String,
    mode: String,
    /// A published scaling run (`docs/data/scaling/`) to render as the "Scaling" section.
    scaling: Option<PathBuf>,
    scaling_analysis: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        results: "target/bench-results".into(),
        out: "docs/benchmarks.md".into(),
        img: "docs/img".into(),
        analysis: None,
        command: "benches/report.sh".into(),
        date: String::new(),
        commit: String::new(),
        rustc: String::new(),
        runtime: String::new(),
        mode: "full".into(),
        scaling: None,
        scaling_analysis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--results" => a.results = val().into(),
            "--out" => a.out = val().into(),
            "--img" => a.img = val().into(),
            "--analysis" => a.analysis = Some(val().into()),
            "--command" => a.command = val(),
            "--date" => a.date = val(),
            "--commit" => a.commit = val(),
            "--rustc" => a.rustc = val(),
            "--runtime" => a.runtime = val(),
            "--mode" => a.mode = val(),
            "--scaling" => a.scaling = Some(val().into()),
            "--scaling-analysis" => a.scaling_analysis = Some(val().into()),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn load(dir: &Path, out: &mut Vec<Rec>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                if let Some(r) = read_rec(&p) {
                    out.push(r);
                }
            } else {
                load(&p, out);
            }
        }
    }
}

fn read_rec(dir: &Path) -> Option<Rec> {
    let bench: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json")).ok()?).ok()?;
    let elems = bench["throughput"]["Elements"].as_f64().unwrap_or(1.0);
    let median = est["median"]["point_estimate"].as_f64()?;
    Some(Rec {
        group: bench["group_id"].as_str()?.to_string(),
        func: bench["function_id"].as_str()?.to_string(),
        param: bench["value_str"].as_str().unwrap_or("").to_string(),
        ns: fastest_sample(dir).unwrap_or(median),
        elems,
    })
}

/// The fastest sample's time per iteration. On a machine shared with other work, interference
/// only ever slows a sample down, so the fastest of criterion's samples is the least disturbed
/// estimate of what the code costs (criterion's median is kept in its own reports).
fn fastest_sample(dir: &Path) -> Option<f64> {
    let sample: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sample.json")).ok()?).ok()?;
    let iters = sample["iters"].as_array()?;
    let times = sample["times"].as_array()?;
    iters
        .iter()
        .zip(times)
        .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
        .filter(|x| x.is_finite() && *x > 0.0)
        .min_by(f64::total_cmp)
}

struct MemRow {
    map: String,
    entries: f64,
    live: f64,
    peak: f64,
    foot: f64,
}

fn load_memory(path: &Path) -> Vec<MemRow> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some(MemRow {
                map: f.first()?.to_string(),
                entries: f.get(1)?.parse().ok()?,
                live: f.get(2)?.parse().ok()?,
                peak: f.get(3)?.parse().ok()?,
                foot: f.get(4).and_then(|x| x.parse().ok()).unwrap_or(f64::NAN),
            })
        })
        .collect()
}

/// One case of one round of the churn bench (`churn.csv`, written by `benches/peers/churn.rs`).
struct ChurnRow {
    round: u32,
    map: String,
    writers: u32,
    first_half: f64,
    peak: f64,
    end: f64,
    mops: f64,
}

fn load_churn(path: &Path) -> Vec<ChurnRow> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(ChurnRow {
                round: f.first()?.parse().ok()?,
                map: f.get(1)?.to_string(),
                writers: f.get(2)?.parse().ok()?,
                first_half: f.get(3)?.parse().ok()?,
                peak: f.get(4)?.parse().ok()?,
                end: f.get(5)?.parse().ok()?,
                mops: f.get(6)?.parse().ok()?,
            })
        })
        .collect()
}

/// Seconds per case, from the header line the churn bench prints first
/// (`churn: 100000 keys, 512-byte values, 8 s per case, 3 round(s)`), when its log is there.
fn churn_secs(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.starts_with("churn: "))?;
    let secs = line
        .split(", ")
        .find_map(|p| p.strip_suffix(" s per case"))?;
    Some(format!("{secs} s"))
}

/// The median (the mean of the middle two for an even count); NaN when empty.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Issue 18's bound on growth under churn: the whole run's peak ÷ the first half's.
const CHURN_GROWTH_BOUND: f64 = 1.25;

/// "Memory under churn": one table per writer count, medians over the rounds.
fn write_churn(
    md: &mut String,
    rows: &[ChurnRow],
    secs: Option<String>,
    cores: usize,
) -> std::fmt::Result {
    writeln!(md, "## Memory under churn\n")?;
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(0);
    let secs = secs.unwrap_or_else(|| "the run's duration".to_string());
    let rounds_text = if rounds == 1 {
        "One round ran every case once, in a shuffled order.".to_string()
    } else {
        format!("Each of the {rounds} rounds ran every case once, in a shuffled order.")
    };
    writeln!(
        md,
        "What a long-running cache sees when its writers replace and remove heap-owning values \
         as fast as they can (`benches/peers/churn.rs`, issue 18). The map is prefilled with 100K \
         keys, each holding a 512-byte `Vec<u8>`; then 2 or 8 writer threads (on this machine's \
         {cores} cores) each pick a random key and replace its value (half the time) or remove \
         it (the other half), for {secs}. Each (map, writers) case runs in a process of its \
         own, so memory one map freed but the allocator kept cannot count against another; a \
         sampler reads the process's resident memory (`VmRSS`) every 20 ms. {rounds_text} \
         **Peak** is the whole run's highest RSS (median of the rounds, and the lowest–highest), \
         **first half** the highest over the run's first half, **growth** = peak ÷ first half \
         (median of the rounds' ratios, and the worst round's): memory that keeps growing under \
         steady churn shows here, and issue 18 asks for ≤ {CHURN_GROWTH_BOUND:.2} (the bound \
         column checks the worst round). **End** is RSS after the writers stopped; throughput is \
         the writers' puts and removes per second, all threads together (median of the rounds). \
         The process's RSS includes the prefilled values (100K × 512 bytes ≈ 49 MiB) and \
         whatever the allocator keeps of freed memory.\n"
    )?;
    let writers: BTreeSet<u32> = rows.iter().map(|r| r.writers).collect();
    let mut maps: Vec<&str> = Vec::new();
    for o in ORDER {
        if rows.iter().any(|r| r.map == *o) {
            maps.push(o);
        }
    }
    for r in rows {
        if !maps.contains(&r.map.as_str()) {
            maps.push(&r.map);
        }
    }
    for w in writers {
        writeln!(md, "### {w} writers\n")?;
        writeln!(
            md,
            "| map | peak RSS (median) | peak, min–max | first-half peak | growth (median, worst) | \
             growth ≤ {CHURN_GROWTH_BOUND:.2} | end RSS | M ops/s (median) |\n|---|---:|---:|---:|---:|---|---:|---:|"
        )?;
        let mut peaks: Vec<(&str, f64)> = Vec::new();
        for &m in &maps {
            let case: Vec<&ChurnRow> = rows
                .iter()
                .filter(|r| r.map == m && r.writers == w)
                .collect();
            if case.is_empty() {
                continue;
            }
            let col = |f: fn(&ChurnRow) -> f64| case.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let peak = median(col(|r| r.peak));
            let (lo, hi) = col(|r| r.peak)
                .into_iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
            let growths = col(|r| r.peak / r.first_half);
            let worst = growths.iter().cloned().fold(f64::MIN, f64::max);
            let met = if worst <= CHURN_GROWTH_BOUND {
                "yes"
            } else {
                "**no**"
            };
            writeln!(
                md,
                "| {m} | {peak:.1} MiB | {lo:.1}–{hi:.1} MiB | {:.1} MiB | {:.3}x, {worst:.3}x | {met} | {:.1} MiB | {:.2} |",
                median(col(|r| r.first_half)),
                median(growths),
                median(col(|r| r.end)),
                median(col(|r| r.mops)),
            )?;
            peaks.push((m, peak));
        }
        let peak_of = |name: &str| peaks.iter().find(|(m, _)| *m == name).map(|&(_, p)| p);
        if let Some(e) = peak_of("epochmap") {
            let vs: Vec<String> = ["papaya", "dashmap"]
                .iter()
                .filter_map(|p| Some(format!("{} {p}'s", ratio(e / peak_of(p)?))))
                .collect();
            if !vs.is_empty() {
                writeln!(
                    md,
                    "\nepochmap's peak (median) = {} at {w} writers.",
                    vs.join(", ")
                )?;
            }
        }
        writeln!(md)?;
    }
    Ok(())
}

/// All results, indexed by (group, function, param).
struct Db {
    recs: Vec<Rec>,
}

impl Db {
    fn get(&self, group: &str, func: &str, param: &str) -> Option<&Rec> {
        self.recs
            .iter()
            .find(|r| r.group == group && r.func == func && r.param == param)
    }
    fn groups(&self, prefix: &str) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .recs
            .iter()
            .map(|r| &r.group)
            .filter(|g| g.starts_with(prefix))
            .collect();
        set.into_iter().cloned().collect()
    }
    /// Functions of a group in a fixed order: the `order` list first, then the rest sorted.
    fn funcs(&self, group: &str) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .recs
            .iter()
            .filter(|r| r.group == group)
            .map(|r| &r.func)
            .collect();
        let mut out: Vec<String> = ORDER
            .iter()
            .filter(|o| set.iter().any(|s| s == *o))
            .map(|s| s.to_string())
            .collect();
        for s in set {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
    /// Params of a group, numerically sorted.
    fn params(&self, group: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .recs
            .iter()
            .filter(|r| r.group == group)
            .map(|r| r.param.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        v.sort_by_key(|p| p.parse::<u64>().unwrap_or(u64::MAX));
        v
    }
}

const ORDER: &[&str] = &[
    "epochmap",
    "flat-epochmap",
    "epochmap-pinned",
    "flat-epochmap-pinned",
    "epochmap-retain",
    "flat-epochmap-retain",
    "epochmap-inline",
    "papaya",
    "papaya-pinned",
    "dashmap",
    "dashmap-retain",
    "scc",
    "scc-index",
    "rwlock-std",
    "floor-inline",
    "floor-pool",
    "floor-epoch",
    "floor-flat",
    "floor-flat-epoch",
    "floor-flat-pinned",
    "hashbrown",
    "hashbrown+pin",
    "std",
    "epochmap drain",
    "flat-epochmap drain",
    "epochmap drain+collect",
    "flat-epochmap drain+collect",
];

/// Whether a row is one of this crate's maps (`EpochMap` or `FlatEpochMap`, in any form): drawn
/// bold in the plots, and checked against the crate's own targets rather than listed as a peer.
fn is_ours(name: &str) -> bool {
    name.starts_with("epochmap") || name.starts_with("flat-epochmap")
}

fn mops(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.1} M", ops / 1e6)
    } else if ops >= 1e3 {
        format!("{:.1} K", ops / 1e3)
    } else {
        format!("{ops:.0}")
    }
}

fn dur(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn ratio(x: f64) -> String {
    format!("{x:.2}x")
}

fn size_label(p: &str) -> String {
    match p.parse::<u64>() {
        Ok(n) if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        Ok(n) if n >= 1_000 && n % 1_000 == 0 => format!("{}K", n / 1_000),
        _ => p.to_string(),
    }
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

/// Throughput vs threads, one line per map.
fn plot_threads(db: &Db, group: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let params = db.params(group);
    let lines: Vec<Line> = db
        .funcs(group)
        .into_iter()
        .map(|f| Line {
            points: params
                .iter()
                .filter_map(|p| Some((p.parse().ok()?, db.get(group, &f, p)?.ops() / 1e6)))
                .collect(),
            name: f,
        })
        .collect();
    plot::throughput_vs_threads(
        &format!("{group}: throughput vs threads"),
        &lines,
        ThreadAxis::Linear,
        path,
    )
}

/// Latency vs entries on log-log axes, one line per strategy.
fn plot_clear(db: &Db, group: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let funcs = db.funcs(group);
    let params = db.params(group);
    let xs: Vec<f64> = params.iter().filter_map(|p| p.parse().ok()).collect();
    let (xmin, xmax) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(1.0, f64::max),
    );
    let ys: Vec<f64> = db
        .recs
        .iter()
        .filter(|r| r.group == group)
        .map(|r| r.ns / 1e3)
        .collect();
    let (ymin, ymax) = (
        ys.iter().cloned().fold(f64::MAX, f64::min),
        ys.iter().cloned().fold(0.0, f64::max),
    );
    let root = SVGBackend::new(path, (760, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{group} vs entries (log-log)"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (xmin * 0.8..xmax * 1.25).log_scale(),
            (ymin * 0.5..ymax * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("entries")
        .y_desc("µs per call")
        .x_label_formatter(&|x| size_label(&format!("{x:.0}")))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()?;
    let lines: Vec<Line> = funcs
        .into_iter()
        .map(|f| Line {
            points: params
                .iter()
                .filter_map(|p| Some((p.parse().ok()?, db.get(group, &f, p)?.ns / 1e3)))
                .collect(),
            name: f,
        })
        .collect();
    plot::draw_lines(&mut chart, &lines, |f| {
        f.starts_with("epochmap clear")
            || f.starts_with("epochmap drain")
            || f.starts_with("flat-epochmap clear")
            || f.starts_with("flat-epochmap drain")
    })?;
    root.present()?;
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A target line: description, measured text, met.
struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

fn best_peer<'a>(db: &'a Db, group: &str, param: &str, peers: &[&str]) -> Option<&'a Rec> {
    peers
        .iter()
        .filter_map(|p| db.get(group, p, param))
        .max_by(|a, b| a.ops().total_cmp(&b.ops()))
}

fn targets(db: &Db, mem: &[MemRow]) -> Vec<Target> {
    let mut t = Vec::new();
    // One call per operation on both sides; the pinned forms are compared with each other below.
    let peers = ["papaya", "dashmap", "scc", "scc-index"];
    let rh = "mix/read-heavy/uniform";
    let two = "2";
    // 1. read-heavy, 2 threads, one call per op: >= 1.2x best of dashmap, papaya, scc.
    if let (Some(e), Some(b)) = (db.get(rh, "epochmap", two), best_peer(db, rh, two, &peers)) {
        let r = e.ops() / b.ops();
        t.push(Target {
            what: "read-heavy, 2 threads, one call per op (`map.get`): ≥ 1.2x the best of dashmap, papaya, scc, scc-index (one call per op)".into(),
            measured: format!(
                "{} (epochmap {} ops/s vs best peer {} {} ops/s)",
                ratio(r),
                mops(e.ops()),
                b.func,
                mops(b.ops())
            ),
            met: Some(r >= 1.2),
        });
    }
    // 1b. read-heavy with half the gets missing, 2 threads, one call per op: >= 1.0x
    // scc::HashIndex (issue 19), and beside it the best peer.
    let rhm = "mix/read-heavy-miss/uniform";
    if let (Some(e), Some(i)) = (db.get(rhm, "epochmap", two), db.get(rhm, "scc-index", two)) {
        let r = e.ops() / i.ops();
        let best = best_peer(db, rhm, two, &peers)
            .map(|b| format!("; best peer {} {} ops/s", b.func, mops(b.ops())))
            .unwrap_or_default();
        t.push(Target {
            what:
                "read-heavy-miss (half the gets miss), 2 threads, one call per op: ≥ 1.0x scc-index"
                    .into(),
            measured: format!(
                "{} (epochmap {} vs scc-index {} ops/s{best})",
                ratio(r),
                mops(e.ops()),
                mops(i.ops()),
            ),
            met: Some(r >= 1.0),
        });
    }
    // 2. read-heavy, 2 threads, pinned: >= 1.5x dashmap and >= 60% of the hashbrown ceiling.
    let ceiling = db
        .get("single/get-hit", "hashbrown", "1000000")
        .map(|h| 2.0 * 1e9 / h.ns);
    if let (Some(e), Some(d)) = (
        db.get(rh, "epochmap-pinned", two),
        db.get(rh, "dashmap", two),
    ) {
        let r = e.ops() / d.ops();
        t.push(Target {
            what: "read-heavy, 2 threads, `pin()` per batch: ≥ 1.5x dashmap".into(),
            measured: format!(
                "{} ({} vs {} ops/s)",
                ratio(r),
                mops(e.ops()),
                mops(d.ops())
            ),
            met: Some(r >= 1.5),
        });
        if let Some(c) = ceiling {
            let f = e.ops() / c;
            t.push(Target {
                what: "read-heavy, 2 threads, `pin()` per batch: ≥ 60% of the hashbrown ceiling (2 / hashbrown get-hit time at 1M)".into(),
                measured: format!(
                    "{:.0}% ({} of {} ops/s)",
                    f * 100.0,
                    mops(e.ops()),
                    mops(c)
                ),
                met: Some(f >= 0.6),
            });
        }
    }
    if let (Some(e), Some(p)) = (
        db.get(rh, "epochmap-pinned", two),
        db.get(rh, "papaya-pinned", two),
    ) {
        t.push(Target {
            what: "(context) read-heavy, 2 threads, pinned per batch: epochmap vs papaya".into(),
            measured: format!(
                "{} ({} vs {} ops/s)",
                ratio(e.ops() / p.ops()),
                mops(e.ops()),
                mops(p.ops())
            ),
            met: None,
        });
    }
    // 3. exchange and rapid-grow, 2 threads: >= dashmap and within 10% of the best peer.
    for w in ["exchange", "rapid-grow"] {
        for dist in ["uniform", "zipf"] {
            let g = format!("mix/{w}/{dist}");
            let (Some(e), Some(d), Some(b)) = (
                db.get(&g, "epochmap", two),
                db.get(&g, "dashmap", two),
                best_peer(db, &g, two, &peers),
            ) else {
                continue;
            };
            let rd = e.ops() / d.ops();
            let rb = e.ops() / b.ops();
            t.push(Target {
                what: format!(
                    "{w} ({dist} keys), 2 threads, one call per op: ≥ dashmap and ≥ 0.9x the best peer"
                ),
                measured: format!(
                    "{} of dashmap, {} of best peer ({})",
                    ratio(rd),
                    ratio(rb),
                    b.func
                ),
                met: Some(rd >= 1.0 && rb >= 0.9),
            });
        }
    }
    // 4. single-thread get hit at 1M: within 1.5x of hashbrown (issue 7); issue 2: within 2x of
    // hashbrown and 1.5x of papaya.
    let gh = "single/get-hit";
    let m = "1000000";
    if let (Some(e), Some(h)) = (db.get(gh, "epochmap", m), db.get(gh, "hashbrown", m)) {
        let r = e.ns / h.ns;
        t.push(Target {
            what: "single-thread get hit, 1M entries: time ≤ 1.5x hashbrown's (issue 7)".into(),
            measured: format!("{} ({} vs {})", ratio(r), dur(e.ns), dur(h.ns)),
            met: Some(r <= 1.5),
        });
        t.push(Target {
            what: "single-thread get hit, 1M entries: time ≤ 2x hashbrown's (issue 2)".into(),
            measured: ratio(r),
            met: Some(r <= 2.0),
        });
        if let Some(p) = db.get(gh, "papaya", m) {
            let rp = e.ns / p.ns;
            t.push(Target {
                what: "single-thread get hit, 1M entries: time ≤ 1.5x papaya's (issue 2)".into(),
                measured: format!("{} ({} vs papaya {})", ratio(rp), dur(e.ns), dur(p.ns)),
                met: Some(rp <= 1.5),
            });
        }
    }
    if let (Some(e), Some(h)) = (db.get(gh, "epochmap-pinned", m), db.get(gh, "hashbrown", m)) {
        t.push(Target {
            what: "(context) single-thread get hit with `pin()`, 1M entries, vs hashbrown".into(),
            measured: format!("{} ({} vs {})", ratio(e.ns / h.ns), dur(e.ns), dur(h.ns)),
            met: None,
        });
    }
    if let (Some(f), Some(h)) = (db.get(gh, "hashbrown+pin", m), db.get(gh, "hashbrown", m)) {
        t.push(Target {
            what:
                "(context) the floor for a one-call get that pins crossbeam: hashbrown with a pin \
                   around each lookup, 1M entries, vs hashbrown"
                    .into(),
            measured: format!("{} ({} vs {})", ratio(f.ns / h.ns), dur(f.ns), dur(h.ns)),
            met: None,
        });
    }
    // 5. clear at 1M: >= 100x faster than dashmap's clear.
    let cl = "clear/latency";
    if let (Some(e), Some(d)) = (
        db.get(cl, "epochmap clear", m),
        db.get(cl, "dashmap clear", m),
    ) {
        let r = d.ns / e.ns;
        t.push(Target {
            what: "clear at 1M entries: caller latency ≥ 100x faster than dashmap's `clear`".into(),
            measured: format!("{} ({} vs {})", ratio(r), dur(e.ns), dur(d.ns)),
            met: Some(r >= 100.0),
        });
    }
    // 6. memory per entry at 1M <= dashmap.
    let find = |name: &str| mem.iter().find(|r| r.map == name);
    if let (Some(e), Some(d)) = (find("epochmap"), find("dashmap")) {
        let (be, bd) = (e.live / e.entries, d.live / d.entries);
        t.push(Target {
            what: format!(
                "memory per entry at {} `u64 → u64`: ≤ dashmap's",
                size_label(&format!("{}", e.entries))
            ),
            measured: format!("{be:.1} vs {bd:.1} bytes/entry ({})", ratio(be / bd)),
            met: Some(be <= bd),
        });
        if e.foot.is_finite() && d.foot.is_finite() {
            let (fe, fd) = (e.foot / e.entries, d.foot / d.entries);
            t.push(Target {
                what: "(context) the same including the allocator's per-block overhead (glibc)"
                    .into(),
                measured: format!("{fe:.1} vs {fd:.1} bytes/entry ({})", ratio(fe / fd)),
                met: None,
            });
        }
    }
    t
}

/// Issue 11's "done when": the write path against dashmap and `scc::HashIndex` (the peer whose
/// reads are lock-free too), with no regression of the read-side targets.
fn write_path_targets(db: &Db) -> Vec<Target> {
    let mut t = Vec::new();
    let two = "2";
    for (prefix, alloc) in [("mix", ""), ("mix-mimalloc", " (mimalloc, context)")] {
        for w in ["exchange", "rapid-grow"] {
            for dist in ["uniform", "zipf"] {
                let g = format!("{prefix}/{w}/{dist}");
                let (Some(e), Some(d), Some(i)) = (
                    db.get(&g, "epochmap", two),
                    db.get(&g, "dashmap", two),
                    db.get(&g, "scc-index", two),
                ) else {
                    continue;
                };
                let (rd, ri) = (e.ops() / d.ops(), e.ops() / i.ops());
                t.push(Target {
                    what: format!(
                        "{w} ({dist} keys), 2 threads, one call per op{alloc}: ≥ 0.8x dashmap and \
                         ≥ 1.0x scc-index"
                    ),
                    measured: format!(
                        "{} of dashmap, {} of scc-index ({} vs {} / {} ops/s)",
                        ratio(rd),
                        ratio(ri),
                        mops(e.ops()),
                        mops(d.ops()),
                        mops(i.ops())
                    ),
                    met: alloc.is_empty().then_some(rd >= 0.8 && ri >= 1.0),
                });
                if let (Some(fi), Some(fp), Some(fe)) = (
                    db.get(&g, "floor-inline", two),
                    db.get(&g, "floor-pool", two),
                    db.get(&g, "floor-epoch", two),
                ) {
                    t.push(Target {
                        what: format!(
                            "(floor) {w} ({dist}), 2 threads{alloc}: dashmap's structure with \
                             entries behind a pointer, retired through the epoch (floor-epoch) \
                             ÷ the same with entries inline (floor-inline)"
                        ),
                        measured: format!(
                            "{} ({} vs {} ops/s; the pointer alone, floor-pool: {}); dashmap = {} \
                             of floor-inline, epochmap = {} of floor-epoch",
                            ratio(fe.ops() / fi.ops()),
                            mops(fe.ops()),
                            mops(fi.ops()),
                            ratio(fp.ops() / fi.ops()),
                            ratio(d.ops() / fi.ops()),
                            ratio(e.ops() / fe.ops())
                        ),
                        met: None,
                    });
                }
            }
        }
    }
    for (op, sizes) in [
        ("insert", [("1000", 2.0), ("100000", 1.5), ("1000000", 1.5)]),
        ("remove", [("1000", 2.0), ("100000", 1.5), ("1000000", 1.5)]),
    ] {
        let g = format!("single/{op}");
        for (n, bound) in sizes {
            if let (Some(e), Some(d)) = (db.get(&g, "epochmap", n), db.get(&g, "dashmap", n)) {
                let r = e.ns / d.ns;
                t.push(Target {
                    what: format!(
                        "single-thread {op}, {} entries: time ≤ {bound}x dashmap's",
                        size_label(n)
                    ),
                    measured: format!("{} ({} vs {})", ratio(r), dur(e.ns), dur(d.ns)),
                    met: Some(r <= bound),
                });
            }
        }
    }
    // (what, group, ours, theirs, bound, faster): our time ÷ theirs at most `bound`, or with
    // `faster`, their time ÷ ours at least `bound`.
    let m = "1000000";
    let rows: [(&str, &str, &str, &str, f64, bool); 3] = [
        (
            "single-thread get miss, 1M entries: time ≤ 1.2x dashmap's",
            "single/get-miss",
            "epochmap",
            "dashmap",
            1.2,
            false,
        ),
        (
            "no read regression: single-thread get hit with `pin()`, 1M entries: time ≤ 1.7x hashbrown's",
            "single/get-hit",
            "epochmap-pinned",
            "hashbrown",
            1.7,
            false,
        ),
        (
            "no regression: clear at 1M entries ≥ 500x faster than dashmap's `clear`",
            "clear/latency",
            "epochmap clear",
            "dashmap clear",
            500.0,
            true,
        ),
    ];
    for (what, group, ours, theirs, bound, faster) in rows {
        if let (Some(e), Some(d)) = (db.get(group, ours, m), db.get(group, theirs, m)) {
            let r = if faster { d.ns / e.ns } else { e.ns / d.ns };
            t.push(Target {
                what: what.into(),
                measured: format!("{} ({} vs {})", ratio(r), dur(e.ns), dur(d.ns)),
                met: Some(if faster { r >= bound } else { r <= bound }),
            });
        }
    }
    // The read-heavy and bytes-per-entry targets are the earlier ones' (their own table), unchanged.
    t
}

/// Issue 20's "done when": `FlatEpochMap` (`flat-epochmap`, entries inline) on the write path, the
/// read path, single-thread operations, memory, clear and memory under churn, each from this run.
fn flat_targets(db: &Db, mem: &[MemRow], churn: &[ChurnRow]) -> Vec<Target> {
    let mut t = Vec::new();
    let two = "2";
    let flat = "flat-epochmap";
    // 1. exchange and rapid-grow, 2 threads, one call per op: >= 1.0x dashmap and >= 1.2x
    // scc-index.
    for w in ["exchange", "rapid-grow"] {
        for dist in ["uniform", "zipf"] {
            let g = format!("mix/{w}/{dist}");
            let (Some(f), Some(d), Some(i)) = (
                db.get(&g, flat, two),
                db.get(&g, "dashmap", two),
                db.get(&g, "scc-index", two),
            ) else {
                continue;
            };
            let (rd, ri) = (f.ops() / d.ops(), f.ops() / i.ops());
            t.push(Target {
                what: format!(
                    "{w} ({dist} keys), 2 threads, one call per op: ≥ 1.0x dashmap and ≥ 1.2x \
                     scc-index"
                ),
                measured: format!(
                    "{} of dashmap, {} of scc-index ({} vs {} / {} ops/s)",
                    ratio(rd),
                    ratio(ri),
                    mops(f.ops()),
                    mops(d.ops()),
                    mops(i.ops())
                ),
                met: Some(rd >= 1.0 && ri >= 1.2),
            });
            if let (Some(fi), Some(ff), Some(fe), Some(fp)) = (
                db.get(&g, "floor-inline", two),
                db.get(&g, "floor-flat", two),
                db.get(&g, "floor-flat-epoch", two),
                db.get(&g, "floor-flat-pinned", two),
            ) {
                t.push(Target {
                    what: format!(
                        "(floor) {w} ({dist}), 2 threads: dashmap's structure with the flat \
                         map's obligations (floor-flat-epoch) ÷ dashmap, the ceiling of such a \
                         design"
                    ),
                    measured: format!(
                        "{} ({} vs {} ops/s); of floor-inline: floor-flat (no overwrite in \
                         place, no reuse before reclamation) {}, floor-flat-epoch {}, pinned \
                         per batch (floor-flat-pinned) {}; flat-epochmap = {} of \
                         floor-flat-epoch",
                        ratio(fe.ops() / d.ops()),
                        mops(fe.ops()),
                        mops(d.ops()),
                        ratio(ff.ops() / fi.ops()),
                        ratio(fe.ops() / fi.ops()),
                        ratio(fp.ops() / fi.ops()),
                        ratio(f.ops() / fe.ops())
                    ),
                    met: None,
                });
            }
        }
    }
    // 2. read-heavy, 2 threads, one call per op: >= 1.2x the best peer.
    let peers = ["dashmap", "papaya", "scc", "scc-index"];
    for dist in ["uniform", "zipf"] {
        let g = format!("mix/read-heavy/{dist}");
        let (Some(f), Some(b)) = (db.get(&g, flat, two), best_peer(db, &g, two, &peers)) else {
            continue;
        };
        let r = f.ops() / b.ops();
        t.push(Target {
            what: format!(
                "read-heavy ({dist} keys), 2 threads, one call per op: ≥ 1.2x the best of \
                 dashmap, papaya, scc, scc-index"
            ),
            measured: format!(
                "{} (flat-epochmap {} ops/s vs best peer {} {} ops/s)",
                ratio(r),
                mops(f.ops()),
                b.func,
                mops(b.ops())
            ),
            met: Some(r >= 1.2),
        });
    }
    // 3. single thread at 1K, 100K and 1M: insert, remove and get-miss time <= 1.2x dashmap's;
    // get-hit with `pin()` per batch <= 1.3x hashbrown's.
    for n in ["1000", "100000", "1000000"] {
        let rows = [
            ("insert", flat, "dashmap", 1.2),
            ("remove", flat, "dashmap", 1.2),
            ("get-miss", flat, "dashmap", 1.2),
            ("get-hit", "flat-epochmap-pinned", "hashbrown", 1.3),
        ];
        for (op, ours, theirs, bound) in rows {
            let g = format!("single/{op}");
            let (Some(f), Some(o)) = (db.get(&g, ours, n), db.get(&g, theirs, n)) else {
                continue;
            };
            let r = f.ns / o.ns;
            let how = if ours == flat {
                ""
            } else {
                " with `pin()` per batch"
            };
            t.push(Target {
                what: format!(
                    "single-thread {op}{how}, {} entries: time ≤ {bound}x {theirs}'s",
                    size_label(n)
                ),
                measured: format!("{} ({} vs {})", ratio(r), dur(f.ns), dur(o.ns)),
                met: Some(r <= bound),
            });
        }
    }
    // 4. bytes per entry (the memory bench's size: 1M in a full run) <= dashmap's.
    let find = |name: &str| mem.iter().find(|r| r.map == name);
    if let (Some(f), Some(d)) = (find(flat), find("dashmap")) {
        let (bf, bd) = (f.live / f.entries, d.live / d.entries);
        t.push(Target {
            what: format!(
                "memory per entry at {} `u64 → u64`: ≤ dashmap's",
                size_label(&format!("{}", f.entries))
            ),
            measured: format!("{bf:.1} vs {bd:.1} bytes/entry ({})", ratio(bf / bd)),
            met: Some(bf <= bd),
        });
        if f.foot.is_finite() && d.foot.is_finite() {
            let (ff, fd) = (f.foot / f.entries, d.foot / d.entries);
            t.push(Target {
                what: "(context) the same including the allocator's per-block overhead (glibc)"
                    .into(),
                measured: format!("{ff:.1} vs {fd:.1} bytes/entry ({})", ratio(ff / fd)),
                met: None,
            });
        }
    }
    // 5. clear at 1M: caller latency >= 500x faster than dashmap's `clear`. (The other
    // clear target, memory back within 5% of an empty map after the grace period, has no figure
    // in this suite: `clear/memory-back` is a time.)
    let cl = "clear/latency";
    let m = "1000000";
    if let (Some(f), Some(d)) = (
        db.get(cl, "flat-epochmap clear", m),
        db.get(cl, "dashmap clear", m),
    ) {
        let r = d.ns / f.ns;
        t.push(Target {
            what: "clear at 1M entries: caller latency ≥ 500x faster than dashmap's `clear`".into(),
            measured: format!("{} ({} vs {})", ratio(r), dur(f.ns), dur(d.ns)),
            met: Some(r >= 500.0),
        });
    }
    // 6. peak RSS under churn (median of the rounds) <= papaya's, at each writer count run.
    let writers: BTreeSet<u32> = churn.iter().map(|r| r.writers).collect();
    for w in writers {
        let peak = |name: &str| {
            let v: Vec<f64> = churn
                .iter()
                .filter(|r| r.map == name && r.writers == w)
                .map(|r| r.peak)
                .collect();
            (!v.is_empty()).then(|| median(v))
        };
        let (Some(f), Some(p)) = (peak(flat), peak("papaya")) else {
            continue;
        };
        t.push(Target {
            what: format!("peak RSS under churn, {w} writers (median of the rounds): ≤ papaya's"),
            measured: format!("{f:.1} vs {p:.1} MiB ({})", ratio(f / p)),
            met: Some(f <= p),
        });
    }
    t
}

/// Issue 12's iteration target at each size of `group`: `iter()` and `pin().iter()` at least as
/// fast as dashmap's `iter()`, and taking at most twice the time of epochmap's `retain` visiting
/// every entry.
fn iteration_targets(db: &Db, group: &str) -> Vec<Target> {
    let mut t = Vec::new();
    for p in db.params(group) {
        let (Some(retain), Some(dash)) = (
            db.get(group, "epochmap-retain", &p),
            db.get(group, "dashmap", &p),
        ) else {
            continue;
        };
        for f in ["epochmap", "epochmap-pinned"] {
            let Some(e) = db.get(group, f, &p) else {
                continue;
            };
            let (vs_dash, vs_retain) = (e.ops() / dash.ops(), e.ns / retain.ns);
            t.push(Target {
                what: format!(
                    "{f}, {} entries: ≥ 1.0x dashmap `iter()`, time ≤ 2x epochmap `retain`",
                    size_label(&p)
                ),
                measured: format!(
                    "{} of dashmap, {} of retain's time ({} vs {} / {})",
                    ratio(vs_dash),
                    ratio(vs_retain),
                    dur(e.ns),
                    dur(dash.ns),
                    dur(retain.ns)
                ),
                met: Some(vs_dash >= 1.0 && vs_retain <= 2.0),
            });
        }
    }
    t
}

fn write_targets(md: &mut String, title: &str, targets: Vec<Target>) -> std::fmt::Result {
    writeln!(md, "## {title}\n")?;
    writeln!(md, "| target | measured | met |\n|---|---|---|")?;
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        writeln!(md, "| {} | {} | {} |", t.what, t.measured, met)?;
    }
    writeln!(md)
}

/// One table and plot per mix group under `prefix` (`mix` for the system allocator,
/// `mix-mimalloc` for the run on mimalloc).
fn write_mixes(
    md: &mut String,
    db: &Db,
    prefix: &str,
    img: &Path,
    img_rel: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut mix_groups = db.groups(&format!("{prefix}/"));
    // Workloads in the order the issue lists them, then by key distribution.
    let rank = |g: &str| {
        ["read-heavy", "read-heavy-miss", "exchange", "rapid-grow"]
            .iter()
            .position(|w| g.starts_with(&format!("{prefix}/{w}/")))
            .unwrap_or(usize::MAX)
    };
    mix_groups.sort_by_key(|g| (rank(g), g.clone()));
    for g in mix_groups {
        let params = db.params(&g);
        writeln!(md, "### {}\n", g.trim_start_matches("mix/"))?;
        let file = format!("{}.svg", g.replace('/', "-"));
        plot_threads(db, &g, &img.join(&file))?;
        write!(md, "| map |")?;
        for p in &params {
            write!(md, " {p} thr ops/s | ratio |")?;
        }
        write!(md, "\n|---|")?;
        for _ in &params {
            write!(md, "---:|---:|")?;
        }
        writeln!(md)?;
        for f in db.funcs(&g) {
            write!(md, "| {f} |")?;
            for p in &params {
                match (db.get(&g, &f, p), db.get(&g, "epochmap", p)) {
                    (Some(r), Some(e)) => {
                        write!(md, " {} | {} |", mops(r.ops()), ratio(r.ops() / e.ops()))?
                    }
                    (Some(r), None) => write!(md, " {} | – |", mops(r.ops()))?,
                    _ => write!(md, " – | – |")?,
                }
            }
            writeln!(md)?;
        }
        writeln!(md, "\n![{g}]({img_rel}/{file})\n")?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("scaling") {
        return scaling::main(std::env::args().skip(2));
    }
    let args = parse_args();
    let mut recs = Vec::new();
    load(&args.results.join("criterion"), &mut recs);
    if recs.is_empty() {
        return Err(format!(
            "no criterion results under {}",
            args.results.join("criterion").display()
        )
        .into());
    }
    let db = Db { recs };
    let mem = load_memory(&args.results.join("memory.tsv"));
    let churn = load_churn(&args.results.join("churn.csv"));
    std::fs::create_dir_all(&args.img)?;
    let img_rel = relative_img(&args.out, &args.img);

    let mut md = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(md, "# epochmap benchmarks\n")?;
    writeln!(
        md,
        "<!-- Generated by benches/report.sh ({} mode); edit benches/report/analysis.md or the \
         report tool instead of this file. -->\n",
        args.mode
    )?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| date (UTC) | {} |", args.date)?;
    writeln!(
        md,
        "| machine | {} cores, {} (shared with other work: expect noise) |",
        cores,
        cpu_model()
    )?;
    writeln!(md, "| command | `{}` |", args.command)?;
    writeln!(md, "| commit | `{}` |", args.commit)?;
    writeln!(md, "| toolchain | `{}` |", args.rustc)?;
    writeln!(md, "| suite runtime | {} |", args.runtime)?;
    writeln!(md, "| hasher | foldhash `fast::FixedState` for every map |")?;
    writeln!(md)?;
    writeln!(
        md,
        "All numbers come from this one run. Each figure is the fastest of criterion's samples \
         (10, or 20 for the mixes): on a shared machine interference only slows samples down, so \
         the fastest is the least disturbed (criterion's own medians are in the logs under \
         `target/bench-results/`). **Ratio to \
         epochmap** = this map's throughput ÷ epochmap's (one call per op), so below 1.00x \
         epochmap is faster; for times (clear) the ratio column says how many times longer than \
         epochmap's `clear` the strategy took. `-pinned` rows hold one pinned guard per batch of 64 \
         operations (1024 lookups in the single-thread gets); the others make one call per \
         operation. `epochmap-inline` is epochmap with `ReclaimMode::Inline` (no background \
         reclaimer thread).\n"
    )?;

    write_targets(
        &mut md,
        "Targets (issue 11: the write path)",
        write_path_targets(&db),
    )?;
    write_targets(
        &mut md,
        "Targets (issue 20: FlatEpochMap)",
        flat_targets(&db, &mem, &churn),
    )?;
    write_targets(
        &mut md,
        "Earlier targets (issue 7, and issue 2's single-thread get)",
        targets(&db, &mem),
    )?;

    if let Some(a) = &args.analysis {
        md.push_str(&std::fs::read_to_string(a)?);
        md.push('\n');
    }

    // Mixes.
    writeln!(md, "## Mixed workloads (u64 → u64)\n")?;
    writeln!(
        md,
        "Read-heavy 98/1/1, exchange 10/40/40/10 (get/insert/remove/update), rapid-grow 5/80/5/10. \
         Read-heavy and exchange run on a map prefilled with 75% of the key universe (1M keys \
         present of 1.33M); rapid-grow starts every sample from an empty map. Keys are drawn \
         uniformly or Zipf(0.99) from the universe; every map replays the same per-thread \
         operation streams. Throughput is total operations per second over all threads.\n"
    )?;
    write_mixes(&mut md, &db, "mix", &args.img, &img_rel)?;
    if !db.groups("mix-mimalloc/").is_empty() {
        writeln!(md, "## Mixed workloads on mimalloc\n")?;
        writeln!(
            md,
            "The same mixes, the same streams, with mimalloc as the global allocator \
             (`--features mimalloc`): papaya's published write numbers use it, and a map that \
             allocates per entry benchmarks its allocator too. Ratios are to epochmap on mimalloc.\n"
        )?;
        write_mixes(&mut md, &db, "mix-mimalloc", &args.img, &img_rel)?;
    }

    // Scaling: re-rendered from the published run, so regenerating this file keeps it.
    if let Some(run) = args
        .scaling
        .as_deref()
        .map(scaling::Run::load)
        .transpose()?
        .flatten()
    {
        let section =
            scaling::section(&run, &args.out, &args.img, args.scaling_analysis.as_deref())?;
        md.push_str(&section);
        md.push('\n');
    }

    // Single thread.
    writeln!(md, "## Single-thread operations (u64 → u64)\n")?;
    writeln!(
        md,
        "Time per operation on a map holding N entries; random key order. Inserts add absent keys \
         (removed again outside the timing), removes take present keys (re-inserted outside the \
         timing).\n"
    )?;
    for g in db.groups("single/") {
        let params = db.params(&g);
        writeln!(md, "### {}\n", g.trim_start_matches("single/"))?;
        write!(md, "| map |")?;
        for p in &params {
            write!(md, " {} | ratio |", size_label(p))?;
        }
        write!(md, "\n|---|")?;
        for _ in &params {
            write!(md, "---:|---:|")?;
        }
        writeln!(md)?;
        for f in db.funcs(&g) {
            write!(md, "| {f} |")?;
            for p in &params {
                match (db.get(&g, &f, p), db.get(&g, "epochmap", p)) {
                    (Some(r), Some(e)) => {
                        write!(md, " {} | {} |", dur(r.ns), ratio(r.ops() / e.ops()))?
                    }
                    (Some(r), None) => write!(md, " {} | – |", dur(r.ns))?,
                    _ => write!(md, " – | – |")?,
                }
            }
            writeln!(md)?;
        }
        writeln!(md)?;
    }

    // Clear.
    writeln!(md, "## Clear\n")?;
    latency_groups(
        &mut md,
        &db,
        &args.img,
        &img_rel,
        "clear/",
        &[
            (
                "clear/latency",
                "epochmap clear",
                "Caller latency of one call on a map filled with N entries (filled outside the \
                 timing).",
            ),
            (
                "clear/memory-back",
                "epochmap clear+reclaimed",
                "From the call until the memory is back with the allocator: epochmap `clear()` + \
                 `wait_for_reclamation`, dashmap `clear()` + `shrink_to_fit()` (its `clear` keeps \
                 the capacity), and drop + re-create.",
            ),
        ],
    )?;

    // Drain.
    if !db.groups("drain/").is_empty() {
        writeln!(md, "## Drain\n")?;
        writeln!(
            md,
            "Taking every entry out of a shared map, owned (`benches/peers/drain.rs`); the map is \
             filled outside the timing. dashmap has no `drain` through `&DashMap`: its best \
             equivalents are collecting the keys and removing each (`iter+remove`), copying \
             everything out and then `clear` (`iter().collect()+clear`: needs `Clone`, and loses \
             an insert that lands between the two steps) and a `retain` that copies each entry \
             out and returns false (`retain(collect)`: needs `Clone`).\n"
        )?;
    }
    latency_groups(
        &mut md,
        &db,
        &args.img,
        &img_rel,
        "drain/",
        &[
            (
                "drain/latency",
                "epochmap drain",
                "What the calling thread pays before it can go on: epochmap's `drain()` swaps the \
                 tables out and returns (the entries are moved out later, by whoever consumes the \
                 `Drain`); dashmap's strategies do all their work in the call.",
            ),
            (
                "drain/to-last-item",
                "epochmap drain+collect",
                "From the call until the caller holds the last pair: epochmap `drain().collect()` \
                 (swap, grace-period wait, moves), and the same dashmap strategies.",
            ),
        ],
    )?;

    // Iteration.
    for g in db.groups("iter/") {
        writeln!(md, "## Iteration\n")?;
        writeln!(
            md,
            "One thread visits every entry once and sums the values. The `-retain` rows visit \
             them through `retain(|_, v| {{ sum += v; true }})`, which keeps every entry: a walk \
             under each shard's lock that hands out no per-entry handle.\n"
        )?;
        writeln!(
            md,
            "| map | entries | entries/s | time per pass | ratio |\n|---|---:|---:|---:|---:|"
        )?;
        for p in db.params(&g) {
            let base = db.get(&g, "epochmap", &p);
            for f in db.funcs(&g) {
                if let Some(r) = db.get(&g, &f, &p) {
                    let rat = base.map_or("–".into(), |e| ratio(r.ops() / e.ops()));
                    writeln!(
                        md,
                        "| {f} | {} | {} | {} | {rat} |",
                        size_label(&p),
                        mops(r.ops()),
                        dur(r.ns)
                    )?;
                }
            }
        }
        writeln!(md)?;
        let targets = iteration_targets(&db, &g);
        if !targets.is_empty() {
            writeln!(md, "| target (issue 12) | measured | met |\n|---|---|---|")?;
            for t in targets {
                let met = if t.met == Some(true) { "yes" } else { "**no**" };
                writeln!(md, "| {} | {} | {} |", t.what, t.measured, met)?;
            }
            writeln!(md)?;
        }
    }

    // Memory.
    if !mem.is_empty() {
        writeln!(md, "## Memory\n")?;
        writeln!(
            md,
            "Counting global allocator (`benches/peers/memory.rs`): live heap bytes the map requested \
             after inserting N `u64 → u64` entries one by one into a map created with default \
             capacity (after deferred frees ran), and the peak while growing from empty. Ratio = \
             this ÷ epochmap. The last column adds what the allocator (glibc) sets aside per \
             small block (usable size + 8-byte header): a map that allocates one block per entry \
             pays it once per entry.\n"
        )?;
        writeln!(md, "| map | entries | live (requested) | bytes/entry | ratio | peak while growing | peak bytes/entry | bytes/entry incl. allocator overhead |\n|---|---:|---:|---:|---:|---:|---:|---:|")?;
        let base = mem.iter().find(|r| r.map == "epochmap");
        for r in &mem {
            let rat = base.map_or("–".into(), |e| ratio(r.live / e.live));
            writeln!(
                md,
                "| {} | {} | {} | {:.1} | {rat} | {} | {:.1} | {:.1} |",
                r.map,
                size_label(&format!("{}", r.entries)),
                mib(r.live),
                r.live / r.entries,
                mib(r.peak),
                r.peak / r.entries,
                r.foot / r.entries
            )?;
        }
        writeln!(md)?;
    }

    // Memory under churn.
    if !churn.is_empty() {
        write_churn(
            &mut md,
            &churn,
            churn_secs(&args.results.join("churn.log")),
            cores,
        )?;
    }

    writeln!(md, "## Reproduce\n")?;
    writeln!(
        md,
        "`benches/report.sh` (full: about 10 minutes of benchmarks plus the build on 2 cores) regenerates this file and `docs/img/`; \
         `benches/report.sh --quick` is the seconds-long smoke run CI uses. \
         `benches/scaling.sh --docs` (about 12 minutes on 2 cores) reruns the scaling section, \
         which `benches/report.sh` only re-renders from `docs/data/scaling/`. See \
         `benches/README.md`.\n"
    )?;

    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, md)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// One table (and a log-log plot) per group of "time per call vs entries" results, each with a
/// ratio column against the group's `base` strategy; groups without results are skipped.
fn latency_groups(
    md: &mut String,
    db: &Db,
    img: &Path,
    img_rel: &str,
    prefix: &str,
    groups: &[(&str, &str, &str)],
) -> Result<(), Box<dyn std::error::Error>> {
    for &(g, base, text) in groups {
        if db.funcs(g).is_empty() {
            continue;
        }
        let params = db.params(g);
        writeln!(md, "### {}\n\n{text}\n", g.trim_start_matches(prefix))?;
        write!(md, "| strategy |")?;
        for p in &params {
            write!(md, " {} | ÷ {base} |", size_label(p))?;
        }
        write!(md, "\n|---|")?;
        for _ in &params {
            write!(md, "---:|---:|")?;
        }
        writeln!(md)?;
        for f in db.funcs(g) {
            write!(md, "| {f} |")?;
            for p in &params {
                match (db.get(g, &f, p), db.get(g, base, p)) {
                    (Some(r), Some(e)) => write!(md, " {} | {} |", dur(r.ns), ratio(r.ns / e.ns))?,
                    (Some(r), None) => write!(md, " {} | – |", dur(r.ns))?,
                    _ => write!(md, " – | – |")?,
                }
            }
            writeln!(md)?;
        }
        let file = format!("{}.svg", g.replace('/', "-"));
        plot_clear(db, g, &img.join(&file))?;
        writeln!(md, "\n![{g}]({img_rel}/{file})\n")?;
    }
    Ok(())
}

/// The image directory as the markdown file should link it (relative when under the same parent).
fn relative_img(out: &Path, img: &Path) -> String {
    match (
        out.parent(),
        img.strip_prefix(out.parent().unwrap_or(Path::new(""))),
    ) {
        (Some(_), Ok(rel)) => rel.display().to_string(),
        _ => img.display().to_string(),
    }
}
