//! Sizing for growth ahead of time: [`TryReserveError`], the error of
//! [`EpochMap::try_reserve`](crate::EpochMap::try_reserve) (growing the tables without aborting the
//! process when the memory is not there), and [`per_shard_share`], how much room each shard makes.
//!
//! A shard's `fit` returns the error; the map's `try_reserve` and construction call it, and sit
//! above (see "Module layering" in docs/design.md).

use std::alloc::Layout;
use std::error::Error;
use std::fmt;

/// Why [`EpochMap::try_reserve`](crate::EpochMap::try_reserve) could not make room: the same two
/// cases as `std::collections::TryReserveError`.
///
/// ```
/// use epochmap::{EpochMap, TryReserveError};
///
/// let map: EpochMap<u64, u64> = EpochMap::new();
/// assert_eq!(map.try_reserve(usize::MAX), Err(TryReserveError::CapacityOverflow));
/// assert!(map.try_reserve(1_000).is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryReserveError {
    /// The requested capacity does not fit in the address space: a table for it would be larger
    /// than `isize::MAX` bytes, or the count itself overflows.
    CapacityOverflow,
    /// The allocator refused a table of `layout`: the memory is not available.
    AllocError {
        /// The layout of the allocation that failed.
        layout: Layout,
    },
}

impl fmt::Display for TryReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryReserveError::CapacityOverflow => f.write_str(
                "capacity overflow: a table of the requested capacity does not fit in the \
                 address space",
            ),
            TryReserveError::AllocError { layout } => write!(
                f,
                "memory allocation of {} bytes for a table failed",
                layout.size()
            ),
        }
    }
}

impl Error for TryReserveError {}

/// How many of `entries` one of `shards` shards should make room for: an even share plus three
/// standard deviations, since well-hashed keys spread over shards binomially. `None` on overflow.
pub(crate) fn per_shard_share(entries: usize, shards: usize) -> Option<usize> {
    let even = entries.div_ceil(shards);
    even.checked_add(3 * (even as f64).sqrt() as usize)
}
