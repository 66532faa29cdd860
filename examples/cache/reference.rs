//! Yardsticks for the example cache: a Zipf key generator, an exact LRU and the unbounded bound,
//! and the workload both example programs load (`compute`).
//!
//! Shared by `examples/cache.rs`, `examples/cache_async.rs` and `tests/cache.rs`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What the example caches hold: a small value behind an `Arc`, cheap to clone out.
pub type Value = Arc<[u64; 4]>;

/// The "expensive" computation the caches save: a few hundred rounds of mixing.
pub fn compute(key: u64) -> Value {
    let mut x = key ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    Arc::new([key, x, x.rotate_left(17), !x])
}

/// Bytes in MiB, for the programs' memory reports.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// xorshift64*: a small, fast, deterministic generator.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x1234_5678_9abc_def1
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf-distributed keys: key `k` in `0..n` has probability proportional to `1 / (k + 1)^s`.
/// Sampled by binary search in the cumulative distribution (8 bytes per key).
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` keys with exponent `s` (0.99 is the YCSB default).
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 0..n {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Zipf { cdf }
    }

    /// One key.
    pub fn key(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1) as u64
    }

    /// `len` keys from `seed`.
    pub fn trace(&self, seed: u64, len: usize) -> Vec<u64> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| self.key(&mut rng)).collect()
    }
}

/// An exact LRU (hash map + ordered recency index): the like-for-like reference for the hit ratio.
pub struct ExactLru {
    capacity: usize,
    stamp_of: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
    clock: u64,
}

impl ExactLru {
    /// An empty LRU holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        ExactLru {
            capacity,
            stamp_of: HashMap::new(),
            by_stamp: BTreeMap::new(),
            clock: 0,
        }
    }

    /// One access; true if it hit.
    pub fn access(&mut self, key: u64) -> bool {
        self.clock += 1;
        let hit = match self.stamp_of.insert(key, self.clock) {
            Some(old) => {
                self.by_stamp.remove(&old);
                true
            }
            None => false,
        };
        self.by_stamp.insert(self.clock, key);
        if self.stamp_of.len() > self.capacity {
            let (_, oldest) = self
                .by_stamp
                .pop_first()
                .expect("over capacity, so not empty");
            self.stamp_of.remove(&oldest);
        }
        hit
    }
}

/// Hit ratio of an exact LRU of `capacity` on `trace`.
pub fn lru_hit_ratio(trace: &[u64], capacity: usize) -> f64 {
    let mut lru = ExactLru::new(capacity);
    let hits = trace.iter().filter(|&&k| lru.access(k)).count();
    hits as f64 / trace.len() as f64
}

/// Hit ratio of an unbounded cache on `trace` (every key misses once): the upper bound.
pub fn unbounded_hit_ratio(trace: &[u64]) -> f64 {
    let distinct = trace.iter().collect::<HashSet<_>>().len();
    1.0 - distinct as f64 / trace.len() as f64
}
