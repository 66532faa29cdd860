//! The "Scaling" section: throughput vs threads from one run of `benches/scaling.sh`
//! (`benches/peers/scaling.rs`), past the machine's cores, and issue 19's check that
//! oversubscription costs no mix more than half its rate.
//!
//! It reads a run's `scaling-summary.csv` and `scaling-run.txt` and renders the section between
//! [`BEGIN`] and [`END`] markers, with one SVG per mix. Three callers: `scaling` mode writes it
//! as a file of its own (`target/bench-results/scaling/scaling.md`) or splices it into
//! `docs/benchmarks.md` (`benches/scaling.sh --docs`), and the full report re-renders it from the
//! published copy in `docs/data/scaling/`, so regenerating `docs/benchmarks.md` keeps it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plot::{self, Line, ThreadAxis};
use crate::{is_ours, ratio, relative_img, ORDER};

/// The line that opens the generated section (the rest of the comment says where it comes from).
pub const BEGIN: &str = "<!-- scaling:begin";
/// The line that closes it.
pub const END: &str = "<!-- scaling:end -->";

/// Issue 19: oversubscribed, no mix below half its rate at the cores.
const OVERSUBSCRIBED_BOUND: f64 = 0.5;

/// The mixes in the order the issue lists them.
const MIXES: [&str; 4] = ["read-heavy", "read-heavy-miss", "exchange", "rapid-grow"];

/// One (mix, dist, map, threads) over the run's rounds, M ops/s.
struct Row {
    mix: String,
    dist: String,
    map: String,
    threads: usize,
    runs: usize,
    best: f64,
    median: f64,
}

/// One run: its header (`scaling-run.txt`) and its summary rows.
pub struct Run {
    info: BTreeMap<String, String>,
    rows: Vec<Row>,
    dir: PathBuf,
}

impl Run {
    /// The run in `dir`, or `None` when there is none (no `scaling-summary.csv`).
    pub fn load(dir: &Path) -> Result<Option<Run>, Box<dyn std::error::Error>> {
        let Ok(summary) = std::fs::read_to_string(dir.join("scaling-summary.csv")) else {
            return Ok(None);
        };
        let info = std::fs::read_to_string(dir.join("scaling-run.txt"))?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut rows = Vec::new();
        for l in summary.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            let bad = || format!("bad row in {}: {l}", dir.display());
            let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).ok_or_else(bad);
            rows.push(Row {
                mix: f.first().ok_or_else(bad)?.to_string(),
                dist: f.get(1).ok_or_else(bad)?.to_string(),
                map: f.get(2).ok_or_else(bad)?.to_string(),
                threads: num(3)? as usize,
                runs: num(4)? as usize,
                best: num(5)?,
                median: num(6)?,
            });
        }
        Ok(Some(Run {
            info,
            rows,
            dir: dir.to_path_buf(),
        }))
    }

    fn info(&self, key: &str) -> &str {
        self.info.get(key).map_or("?", String::as_str)
    }

    fn get(&self, table: &(String, String), map: &str, threads: usize) -> Option<&Row> {
        self.rows.iter().find(|r| {
            (&r.mix, &r.dist) == (&table.0, &table.1) && r.map == map && r.threads == threads
        })
    }

    /// (mix, dist) pairs, in the order of mixes, then by distribution.
    fn tables(&self) -> Vec<(String, String)> {
        let mut t: Vec<(String, String)> = self
            .rows
            .iter()
            .map(|r| (r.mix.clone(), r.dist.clone()))
            .collect();
        t.sort_by_key(|(m, d)| (MIXES.iter().position(|x| x == m), d.clone()));
        t.dedup();
        t
    }

    /// Maps in the report's order.
    fn maps(&self) -> Vec<String> {
        let mut maps: Vec<String> = Vec::new();
        for m in ORDER
            .iter()
            .map(|s| s.to_string())
            .chain(self.rows.iter().map(|r| r.map.clone()))
        {
            if self.rows.iter().any(|r| r.map == m) && !maps.contains(&m) {
                maps.push(m);
            }
        }
        maps
    }

    fn threads(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.rows.iter().map(|r| r.threads).collect();
        t.sort_unstable();
        t.dedup();
        t
    }
}

/// The section for `run`, markers included, written to be read from `out`, with its plots
/// written into `img`; `analysis` (hand-written prose about the published run) goes after the
/// oversubscription check when the file is there.
pub fn section(
    run: &Run,
    out: &Path,
    img: &Path,
    analysis: Option<&Path>,
) -> Result<String, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(img)?;
    let img_rel = relative_img(out, img);
    let data_rel = match relative_img(out, &run.dir) {
        same if same.is_empty() => ".".to_string(),
        rel => rel,
    };
    let cores: usize = run.info("cores").parse().unwrap_or(0);
    let threads = run.threads();
    let maps = run.maps();
    let tables = run.tables();
    let runs = run.rows.iter().map(|r| r.runs).max().unwrap_or(0);
    let rounds_text = if runs == 1 {
        "one round".to_string()
    } else {
        format!("{runs} rounds, each in a new shuffled order")
    };
    let best_text = if runs == 1 {
        "the one round's figure".to_string()
    } else {
        format!("the best of the {runs} rounds")
    };
    let mut md = String::new();
    writeln!(
        md,
        "{BEGIN}: generated from {data_rel}/ by benches/scaling.sh --docs, kept by \
         benches/report.sh; edit the report tool or benches/report/scaling-analysis.md instead -->\n"
    )?;
    writeln!(md, "## Scaling: throughput vs threads\n")?;
    let threads_text: Vec<String> = threads.iter().map(usize::to_string).collect();
    writeln!(
        md,
        "What `benches/scaling.sh` gives (`benches/peers/scaling.rs`): the mixed workloads with \
         the same maps, operation streams and worker-timed run loop as the mixes' criterion bench \
         (`mixes.rs`), at {} threads on this run's {cores} cores. Past {cores} threads the machine is oversubscribed: threads are preempted, lock \
         holders included, which is what a map pays when it runs on a busy machine (run it on \
         a machine with many cores for the curve up to them). Each case (mix, map, threads) ran \
         once per round, {rounds_text}, each time {} s of \
         timed work in samples of about {} ms (a fixed number of operations split evenly over \
         the threads, timed from the first worker's start to the last one's finish); its figure \
         is operations ÷ the summed sample times. **Each cell is {best_text}, the median in \
         parentheses**, in M ops/s, all threads together: on a shared machine \
         interference only slows a run down. The raw rounds are in \
         [`{data_rel}/scaling.csv`]({data_rel}/scaling.csv).\n",
        threads_text.join(", "),
        run.info("secs_per_case"),
        run.info("sample_ms"),
    )?;
    writeln!(md, "| | |\n|---|---|")?;
    for (key, name, code) in [
        ("date", "date (UTC)", false),
        ("command", "command", true),
        ("commit", "commit", true),
        ("rustc", "toolchain", true),
    ] {
        if let Some(v) = run.info.get(key) {
            let v = if code { format!("`{v}`") } else { v.clone() };
            writeln!(md, "| {name} | {v} |")?;
        }
        if key == "date" {
            writeln!(
                md,
                "| machine | {cores} cores, {} (shared with other work: expect noise) |",
                run.info("cpu")
            )?;
        }
    }
    if let Ok(secs) = run.info("runtime_secs").parse::<u64>() {
        writeln!(
            md,
            "| runtime | {} min {} s (after the build) |",
            secs / 60,
            secs % 60
        )?;
    }
    writeln!(md)?;

    // Oversubscription: the most threads run against the most that fit the cores.
    let fits = threads.iter().rev().find(|&&t| t <= cores.max(1)).copied();
    let most = threads.last().copied();
    if let (Some(fits), Some(most)) = (fits, most.filter(|&m| m > cores)) {
        writeln!(
            md,
            "### Oversubscribed: {most} threads on {cores} cores against {fits}\n\n\
             The rate at {most} threads ÷ the rate at {fits} threads: best ÷ best (median ÷ \
             median). Issue 19 asks that no mix fall below {OVERSUBSCRIBED_BOUND} (bold where one \
             does).\n"
        )?;
        write!(md, "| map |")?;
        for t in &tables {
            write!(md, " {} |", label(t))?;
        }
        writeln!(md, "\n|---|{}", "---:|".repeat(tables.len()))?;
        let mut below: Vec<(String, Vec<String>)> = Vec::new();
        for m in &maps {
            write!(md, "| {m} |")?;
            let mut under = Vec::new();
            for t in &tables {
                match (run.get(t, m, most), run.get(t, m, fits)) {
                    (Some(o), Some(f)) => {
                        let (best, med) = (o.best / f.best, o.median / f.median);
                        if best < OVERSUBSCRIBED_BOUND {
                            write!(md, " **{}** ({}) |", ratio(best), ratio(med))?;
                            under.push(format!("{} ({})", label(t), ratio(best)));
                        } else {
                            write!(md, " {} ({}) |", ratio(best), ratio(med))?;
                        }
                    }
                    _ => write!(md, " – |")?,
                }
            }
            writeln!(md)?;
            below.push((m.clone(), under));
        }
        writeln!(md)?;
        for (m, under) in &below {
            if !is_ours(m) {
                continue;
            }
            if under.is_empty() {
                writeln!(
                    md,
                    "- **{m}**: at or above {OVERSUBSCRIBED_BOUND} of its {fits}-thread rate at \
                     {most} threads in every mix: met."
                )?;
            } else {
                writeln!(
                    md,
                    "- **{m}**: below {OVERSUBSCRIBED_BOUND} of its {fits}-thread rate at {most} \
                     threads in {}: **not met**.",
                    under.join(", ")
                )?;
            }
        }
        let peers: Vec<String> = below
            .iter()
            .filter(|(m, u)| !is_ours(m) && !u.is_empty())
            .map(|(m, u)| format!("{m} in {}", u.join(", ")))
            .collect();
        if peers.is_empty() {
            writeln!(md, "- Peers: none falls below {OVERSUBSCRIBED_BOUND}.")?;
        } else {
            writeln!(
                md,
                "- Peers below {OVERSUBSCRIBED_BOUND}: {}.",
                peers.join("; ")
            )?;
        }
        writeln!(md)?;
    }
    if let Some(text) = analysis.and_then(|a| std::fs::read_to_string(a).ok()) {
        md.push_str(text.trim_end());
        md.push_str("\n\n");
    }

    for t in &tables {
        writeln!(md, "### {}\n", label(t))?;
        write!(md, "| map |")?;
        for th in &threads {
            write!(md, " {th} thr |")?;
        }
        writeln!(md, "\n|---|{}", "---:|".repeat(threads.len()))?;
        let mut lines = Vec::new();
        for m in &maps {
            write!(md, "| {m} |")?;
            let mut points = Vec::new();
            for &th in &threads {
                match run.get(t, m, th) {
                    Some(r) => {
                        write!(md, " {:.1} ({:.1}) |", r.best, r.median)?;
                        points.push((th as f64, r.best));
                    }
                    None => write!(md, " – |")?,
                }
            }
            writeln!(md)?;
            lines.push(Line {
                name: m.clone(),
                points,
            });
        }
        let file = format!("scaling-{}-{}.svg", t.0, t.1);
        plot::throughput_vs_threads(
            &format!(
                "{}: M ops/s vs threads on {cores} cores (best of {runs})",
                label(t)
            ),
            &lines,
            ThreadAxis::Log2 { cores },
            &img.join(&file),
        )?;
        writeln!(md, "\n![scaling {}]({img_rel}/{file})\n", label(t))?;
    }
    writeln!(md, "{END}")?;
    Ok(md)
}

fn label(t: &(String, String)) -> String {
    format!("{}/{}", t.0, t.1)
}

/// `doc` with its scaling section replaced by `section`; a document without one gets it before
/// the single-thread section (where the full report puts it), else before "Reproduce", else at
/// the end.
fn splice(doc: &str, section: &str) -> String {
    if let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) {
        if b < e {
            let rest = doc[e + END.len()..].trim_start_matches('\n');
            return format!("{}{section}\n{rest}", &doc[..b]);
        }
    }
    for heading in ["\n## Single-thread operations", "\n## Reproduce"] {
        if let Some(at) = doc.find(heading) {
            return format!("{}{section}\n{}", &doc[..at + 1], &doc[at + 1..]);
        }
    }
    format!("{doc}\n{section}")
}

/// `epochmap-bench-report scaling --data DIR --img DIR (--out FILE | --splice FILE)
/// [--analysis FILE]`: renders a run's section as a file of its own (`--out`) or into an existing
/// document (`--splice`).
pub fn main(args: impl Iterator<Item = String>) -> Result<(), Box<dyn std::error::Error>> {
    let (mut data, mut img, mut out, mut splice_into, mut analysis) =
        (None, None, None, None, None);
    let mut it = args;
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(val)),
            "--img" => img = Some(PathBuf::from(val)),
            "--out" => out = Some(PathBuf::from(val)),
            "--splice" => splice_into = Some(PathBuf::from(val)),
            "--analysis" => analysis = Some(PathBuf::from(val)),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let data = data.ok_or("--data DIR is required")?;
    let img = img.ok_or("--img DIR is required")?;
    let run =
        Run::load(&data)?.ok_or_else(|| format!("no scaling-summary.csv in {}", data.display()))?;
    match (out, splice_into) {
        (Some(out), None) => {
            let md = section(&run, &out, &img, analysis.as_deref())?;
            std::fs::write(&out, format!("# epochmap scaling\n\n{md}"))?;
            eprintln!("wrote {}", out.display());
        }
        (None, Some(doc)) => {
            let md = section(&run, &doc, &img, analysis.as_deref())?;
            let text = std::fs::read_to_string(&doc)?;
            std::fs::write(&doc, splice(&text, &md))?;
            eprintln!("spliced the scaling section into {}", doc.display());
        }
        _ => return Err("give one of --out FILE and --splice FILE".into()),
    }
    Ok(())
}
