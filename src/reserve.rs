//! [`EpochMap::try_reserve`] and its error, [`TryReserveError`]: growing the tables ahead of
//! time without aborting the process when the memory is not there.

use std::alloc::Layout;
use std::error::Error;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::map::per_shard_share;
use crate::sync::epoch;
use crate::EpochMap;

/// Why [`EpochMap::try_reserve`] could not make room: the same two cases as
/// `std::collections::TryReserveError`.
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

impl<K, V, S> EpochMap<K, V, S>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    /// Grows the tables so that about `additional` more entries fit without further growth, like
    /// [`reserve`](EpochMap::reserve), but returns an error instead of panicking when the size
    /// overflows the address space or the allocator refuses a table.
    ///
    /// Shards grow one after another, each under its own lock; on an error, shards grown before
    /// the failing one keep their larger tables (the map is correct either way, just roomier).
    ///
    /// ```
    /// use epochmap::{EpochMap, TryReserveError};
    ///
    /// let map: EpochMap<u64, u64> = EpochMap::new();
    /// map.try_reserve(10_000).expect("10k entries fit");
    /// assert!(map.capacity() >= 10_000);
    /// // Far more than any machine has: an error, not an abort.
    /// assert!(map.try_reserve(1 << 60).is_err());
    /// ```
    pub fn try_reserve(&self, additional: usize) -> Result<(), TryReserveError> {
        let share = per_shard_share(additional, self.shards.len())
            .ok_or(TryReserveError::CapacityOverflow)?;
        let guard = epoch::pin();
        let ctx = self.ctx();
        for shard in self.shards.iter() {
            let target = shard
                .len()
                .checked_add(share)
                .ok_or(TryReserveError::CapacityOverflow)?;
            shard.fit(&ctx, &guard, &|k| self.hash(k), target, true, false)?;
        }
        Ok(())
    }
}
