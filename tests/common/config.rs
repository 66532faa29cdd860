//! Running one test body against every map configuration, like papaya's `tests/common.rs`.
//!
//! ```ignore
//! with_map::<u64, u64>(|config, make| {
//!     let map = make();
//!     map.insert(1, 2);
//!     assert_eq!(map.get_cloned(&1), Some(2), "{config}");
//! });
//! ```

use std::fmt;

use epochmap::{EpochMap, ReclaimMode};

use super::hashers::TestHasher;
use super::maps::BuildFromConfig;

/// Which hasher a configuration uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HasherKind {
    /// std's `RandomState`.
    Random,
    /// Every key hashes to the same value ([`TestHasher::Colliding`]): operations are O(len), so
    /// tests scale their sizes down with [`Config::scale`].
    Colliding,
}

/// One map configuration: shard count, reclamation mode and hasher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub shards: usize,
    pub mode: ReclaimMode,
    pub hasher: HasherKind,
}

impl Config {
    /// `shards` shards in reclaim mode `mode`, with std's `RandomState`.
    pub fn random(shards: usize, mode: ReclaimMode) -> Config {
        Config {
            shards,
            mode,
            hasher: HasherKind::Random,
        }
    }

    /// A fresh hasher of this configuration's kind.
    pub fn hasher(&self) -> TestHasher {
        match self.hasher {
            HasherKind::Random => TestHasher::random(),
            // Bits set in every field the map derives from the hash (shard, tag, home bucket), so
            // no path is tested only with zeros.
            HasherKind::Colliding => TestHasher::colliding(0xdead_beef_cafe_f00d),
        }
    }

    /// An empty map (`EpochMap` or `FlatEpochMap`) with this configuration.
    pub fn build<M: BuildFromConfig>(&self) -> M {
        self.build_with_capacity(0)
    }

    /// An empty map with this configuration, sized for `capacity` entries.
    pub fn build_with_capacity<M: BuildFromConfig>(&self, capacity: usize) -> M {
        M::build_from(self, capacity)
    }

    /// `n` for a well-mixed hasher, less for the colliding one, where every operation scans the
    /// whole chain: keeps the O(n²) configurations as fast as the others.
    pub fn scale(&self, n: usize) -> usize {
        match self.hasher {
            HasherKind::Random => n,
            HasherKind::Colliding => (n / 8).max(64),
        }
    }

    /// A seed that differs per configuration but is fixed for a given test seed.
    pub fn seed(&self, base: u64) -> u64 {
        let mode = match self.mode {
            ReclaimMode::Inline => 1,
            _ => 2,
        };
        let hasher = match self.hasher {
            HasherKind::Random => 10,
            HasherKind::Colliding => 20,
        };
        base ^ ((self.shards as u64) << 32) ^ ((mode + hasher) << 48)
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config(shards={}, mode={:?}, hasher={:?})",
            self.shards, self.mode, self.hasher
        )
    }
}

/// Every configuration: shard counts 1, 4 and 64 × reclaim modes `Inline` and `Background` ×
/// the default and the colliding hasher (12 in all).
pub fn configs() -> Vec<Config> {
    let mut all = Vec::new();
    for hasher in [HasherKind::Random, HasherKind::Colliding] {
        for shards in [1, 4, 64] {
            for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
                all.push(Config {
                    shards,
                    mode,
                    hasher,
                });
            }
        }
    }
    all
}

/// Runs `test` once per configuration of [`configs`], handing it the configuration (print it in
/// assertion messages, or rely on the line this prints when a run panics) and a constructor for
/// empty maps of that configuration.
pub fn with_map<K, V>(test: impl FnMut(Config, &dyn Fn() -> EpochMap<K, V, TestHasher>)) {
    with_map_of(test)
}

/// [`with_map`] for any map the configurations can build (`EpochMap` or `FlatEpochMap`); a
/// [`for_each_map!`](crate::for_each_map) module's own `with_map` calls it with its `TestMap`.
pub fn with_map_of<M: BuildFromConfig>(mut test: impl FnMut(Config, &dyn Fn() -> M)) {
    for config in configs() {
        let _report = ReportOnPanic(config, std::any::type_name::<M>());
        test(config, &|| config.build());
    }
}

/// Prints which configuration (and which map type) was running if the test body panics.
struct ReportOnPanic(Config, &'static str);

impl Drop for ReportOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed under {} of {}", self.0, self.1);
        }
    }
}
