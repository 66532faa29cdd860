//! Shared pieces of the benchmark binaries: the one hasher every map uses, deterministic key
//! streams (uniform and Zipf), the quick/full switch, the criterion settings and the argument
//! helper of the benches that parse their own options.
//!
//! Each bench binary includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;

/// The hasher for every map in every benchmark: foldhash's fast variant with a fixed seed, so all
/// maps hash the same keys with the same function and no map wins or loses on hashing.
pub type Hasher = foldhash::fast::FixedState;

/// A fresh instance of [`Hasher`].
pub fn hasher() -> Hasher {
    foldhash::fast::FixedState::with_seed(0x5eed_cafe_f00d_d00d)
}

/// True when `EPOCHMAP_BENCH_QUICK` is set: the CI smoke mode, small sizes and tiny measurement
/// windows, which proves the benches build and run, not how fast anything is.
pub fn quick() -> bool {
    std::env::var_os("EPOCHMAP_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Picks the full-mode or the quick-mode value.
pub fn pick<T>(full: T, quick_value: T) -> T {
    if quick() {
        quick_value
    } else {
        full
    }
}

/// Criterion configured for one bench binary: `warm_up` and `measure` (seconds) in full mode, a
/// few milliseconds in quick mode. Plots are off (the report tool draws its own); results land in
/// `$CRITERION_HOME` (set by `benches/report.sh`) or `target/criterion`.
pub fn criterion(warm_up: f64, measure: f64, samples: usize) -> Criterion {
    let (warm_up, measure, samples) = if quick() {
        (0.01, 0.03, 10)
    } else {
        (warm_up, measure, samples)
    };
    Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs_f64(warm_up))
        .measurement_time(Duration::from_secs_f64(measure))
        .sample_size(samples)
        .configure_from_args()
}

/// The value after `--name` among a bench binary's own arguments (the ones after `--` on cargo's
/// command line), if it is there.
pub fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// SplitMix64: a bijection on `u64` with good avalanche, so `key(i)` gives distinct, well spread
/// keys for distinct `i` (present keys are `key(0..n)`, absent ones `key(n..)`).
#[inline]
pub fn key(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator (SplitMix64 stream) for building key and operation streams
/// before timing starts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        key(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Zipf-distributed ranks in `0..n` with exponent `s` (rank 0 is the most popular), sampled by
/// inverting a precomputed CDF. Building it costs O(n); it is only used while generating the
/// operation streams, never inside a timed loop.
#[derive(Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `0..n` with exponent `s` (YCSB uses 0.99).
    pub fn new(n: u64, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// epochmap, its inline-entry layout (`FlatEpochMap`) and dashmap over [`Hasher`], as the clear
/// and drain benches compare them.
pub type Epoch = epochmap::EpochMap<u64, u64, Hasher>;
pub type FlatEpoch = epochmap::FlatEpochMap<u64, u64, Hasher>;
pub type Dash = dashmap::DashMap<u64, u64, Hasher>;

/// An epochmap holding `key(0..n)`, with nothing pending from the fill's growth, so a measurement
/// starts with no reclamation work left over.
pub fn epoch_filled(n: u64) -> Epoch {
    let m = Epoch::with_hasher(hasher());
    for i in 0..n {
        m.insert(key(i), i);
    }
    m.wait_for_reclamation(Duration::from_secs(10));
    m
}

/// A `FlatEpochMap` holding `key(0..n)`, filled and settled as [`epoch_filled`] does.
pub fn flat_filled(n: u64) -> FlatEpoch {
    let m = FlatEpoch::with_hasher(hasher());
    for i in 0..n {
        m.insert(key(i), i);
    }
    m.wait_for_reclamation(Duration::from_secs(10));
    m
}

/// A dashmap holding `key(0..n)`.
pub fn dash_filled(n: u64) -> Dash {
    let m = Dash::with_hasher(hasher());
    for i in 0..n {
        m.insert(key(i), i);
    }
    m
}

/// Times one emptying operation. Criterion sizes `iters` from the *timed* part only, so for a
/// cheap call on a big map it would ask for thousands of 1M-entry fills; instead each call runs
/// `min(iters, rounds(n))` rounds of: `fill` (untimed), `op` (timed), drop of what `op` returns
/// (untimed), and scales the measured mean to `iters`. Every sample still consists of real,
/// whole calls; only their number is capped.
pub fn time_op<M, R>(
    iters: u64,
    n: u64,
    fill: impl Fn() -> M,
    op: impl Fn(M) -> (M, R),
) -> Duration {
    let rounds = iters.min((300_000 / n).clamp(1, 64));
    let mut took = Duration::ZERO;
    for _ in 0..rounds {
        let map = fill();
        let start = std::time::Instant::now();
        let out = std::hint::black_box(op(map));
        took += start.elapsed();
        drop(out);
    }
    took.mul_f64(iters as f64 / rounds as f64)
}

/// Registers one emptying strategy under `name`: `fill` builds the map (untimed), `op` empties it
/// (timed), through [`time_op`].
pub fn strategy<M, R>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: u64,
    fill: impl Fn() -> M,
    op: impl Fn(M) -> (M, R),
) {
    g.bench_function(criterion::BenchmarkId::new(name, n), |b| {
        b.iter_custom(|it| time_op(it, n, &fill, &op))
    });
}
