//! Running one test module against both maps: [`EpochMap`] (entries behind pointers, values never
//! move) and [`FlatEpochMap`] (entries inline in the table, copied by `Clone` when a table is
//! rebuilt). Both are `Map<K, V, S, L>` with a crate-private layout trait, so a test cannot be
//! generic over the layout; [`for_each_map!`] instantiates the test items once per map instead.
//!
//! ```ignore
//! for_each_map! {
//!     #[test]
//!     fn insert_returns_previous_value() {
//!         let map: TestMap<u64, u64> = TestMap::new();
//!         assert_eq!(map.insert(1, 1), None);
//!         assert_eq!(map.insert(1, 2), Some(1));
//!     }
//! }
//! ```
//!
//! expands to `mod epoch_map { ... }` and `mod flat_map { ... }` (so the test above runs as
//! `epoch_map::insert_returns_previous_value` and `flat_map::insert_returns_previous_value`).
//! Inside each module:
//!
//! | name | what it is |
//! |---|---|
//! | `TestMap<K, V, S = RandomState>` | `EpochMap` or `FlatEpochMap` |
//! | `FLAT` | whether `TestMap` is the flat map: for the few expectations that depend on the layout |
//! | `MODULE` | `"epoch_map"` or `"flat_map"`: the prefix of the test names the harness knows |
//! | `with_map::<K, V>` | [`with_map`](super::with_map) for `TestMap` |
//!
//! Everything the file imports above the macro is visible inside (`use super::*`). Values used
//! with the flat map must be `Clone`; a test that needs a non-`Clone` value or a value that
//! stays put stays outside the macro, with a comment saying why.

use epochmap::{EpochMap, FlatEpochMap};

use super::config::Config;
use super::hashers::TestHasher;

/// A map the shared helpers can build for a [`Config`]: both maps, with the test hasher.
pub trait BuildFromConfig: Sized {
    /// An empty map with `config`'s shards, reclaim mode and hasher, sized for `capacity`.
    fn build_from(config: &Config, capacity: usize) -> Self;
}

impl<K, V> BuildFromConfig for EpochMap<K, V, TestHasher> {
    fn build_from(config: &Config, capacity: usize) -> Self {
        EpochMap::builder()
            .shards(config.shards)
            .reclaim_mode(config.mode)
            .hasher(config.hasher())
            .capacity(capacity)
            .build()
    }
}

impl<K: Clone, V: Clone> BuildFromConfig for FlatEpochMap<K, V, TestHasher> {
    fn build_from(config: &Config, capacity: usize) -> Self {
        FlatEpochMap::builder()
            .shards(config.shards)
            .reclaim_mode(config.mode)
            .hasher(config.hasher())
            .capacity(capacity)
            .build()
    }
}

/// Instantiates the test items it is given once per map: in `mod epoch_map` with `TestMap` =
/// `EpochMap` and in `mod flat_map` with `TestMap` = `FlatEpochMap`. See the module docs.
#[macro_export]
macro_rules! for_each_map {
    ($($body:tt)*) => {
        /// The tests of this file against `EpochMap`.
        mod epoch_map {
            #![allow(unused_imports, dead_code)]
            use super::*;
            use epochmap::EpochMap as TestMap;
            const FLAT: bool = false;
            const MODULE: &str = "epoch_map";
            fn with_map<K, V>(
                test: impl FnMut(
                    $crate::common::Config,
                    &dyn Fn() -> TestMap<K, V, $crate::common::TestHasher>,
                ),
            ) {
                $crate::common::config::with_map_of(test)
            }
            $($body)*
        }

        /// The tests of this file against `FlatEpochMap`.
        mod flat_map {
            #![allow(unused_imports, dead_code)]
            use super::*;
            use epochmap::FlatEpochMap as TestMap;
            const FLAT: bool = true;
            const MODULE: &str = "flat_map";
            fn with_map<K: Clone, V: Clone>(
                test: impl FnMut(
                    $crate::common::Config,
                    &dyn Fn() -> TestMap<K, V, $crate::common::TestHasher>,
                ),
            ) {
                $crate::common::config::with_map_of(test)
            }
            $($body)*
        }
    };
}
