//! The limits and defaults of a map's settings, and [`BuildError`], the error of a configuration
//! outside them: what both the map's constructors and the [`Builder`](crate::Builder) (which sits
//! above the map) use.

use std::fmt;

use crate::reclaim::Backpressure;

/// The most shards a map may have. The shard index comes from the hash's top sixteen bits, and the
/// tag that filters probes uses seven bits just below them, so more shards would make them overlap.
pub const MAX_SHARDS: usize = 1 << 16;

/// Retired bytes a map may have pending before its writers help reclaim (see
/// [`Builder::backpressure_bytes`](crate::Builder::backpressure_bytes)).
pub const DEFAULT_BACKPRESSURE_BYTES: usize = 64 << 20;

/// Removed or replaced entries a map may have waiting for their grace period before its writers
/// help free them (see
/// [`Builder::backpressure_entries`](crate::Builder::backpressure_entries)).
pub const DEFAULT_BACKPRESSURE_ENTRIES: usize = 4096;

/// Both default bounds, for every map not built with other ones.
pub(crate) const DEFAULT_BACKPRESSURE: Backpressure = Backpressure {
    bytes: DEFAULT_BACKPRESSURE_BYTES,
    entries: DEFAULT_BACKPRESSURE_ENTRIES,
};

/// Why a [`Builder`](crate::Builder) could not build a map.
///
/// ```
/// use epochmap::{BuildError, EpochMap};
///
/// let err = EpochMap::builder().shards(0).try_build::<u64, u64>().unwrap_err();
/// assert_eq!(err, BuildError::ZeroShards);
/// assert!(err.to_string().contains("at least 1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// `shards(0)` was requested; a map needs at least one shard.
    ZeroShards,
    /// More than [`MAX_SHARDS`] shards were requested (after rounding up to a power of two).
    TooManyShards {
        /// The shard count asked for.
        requested: usize,
    },
    /// The initial capacity needs more memory than the address space can hold.
    CapacityOverflow {
        /// The capacity asked for.
        requested: usize,
    },
    /// The initial tables fit in the address space, but the allocator could not provide them.
    AllocationFailed {
        /// Bytes the initial tables of all shards need.
        bytes: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroShards => {
                write!(f, "shard count 0 is invalid: a map needs at least 1 shard (it is rounded up to a power of two)")
            }
            BuildError::TooManyShards { requested } => write!(
                f,
                "shard count {requested} is too large: at most {MAX_SHARDS} shards are allowed"
            ),
            BuildError::CapacityOverflow { requested } => write!(
                f,
                "capacity {requested} is too large: its tables would not fit in the address space"
            ),
            BuildError::AllocationFailed { bytes } => write!(
                f,
                "the allocator could not provide the {bytes} bytes the initial tables need; ask \
                 for a smaller capacity"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// The default shard count: four per available core, rounded up to a power of two, at least 4.
/// Under loom, 2, to keep models small.
pub(crate) fn default_shards() -> usize {
    if cfg!(epochmap_loom) {
        return 2;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).next_power_of_two().clamp(4, 1024)
}
