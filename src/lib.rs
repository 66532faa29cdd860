//! # epochmap
//!
//! A concurrent, sharded hash map with lock-free reads, an O(1) `clear`, and epoch-based memory
//! reclamation that hands memory back to the allocator, measurably.
//!
//! ```
//! use epochmap::EpochMap;
//!
//! let map = EpochMap::new();
//! map.insert("apple", 3);
//! map.insert("pear", 5);
//! assert_eq!(*map.get("apple").unwrap(), 3);
//!
//! // A `Ref` holds no lock: writing while holding one cannot deadlock.
//! let pear = map.get("pear").unwrap();
//! map.insert("pear", 6);
//! assert_eq!(*pear, 5); // it keeps reading the entry it found
//!
//! map.clear(); // O(shards); the old tables are freed in the background
//! assert!(map.is_empty());
//! ```
//!
//! ## Reads: `get` or `pin`
//!
//! * [`EpochMap::get`] pins an epoch guard, probes, and returns a [`Ref`] that owns the guard.
//!   It takes no lock and writes no shared map memory, so readers scale with cores and never wait
//!   for writers. The `Ref` keeps the entry alive (not locked) until dropped.
//! * [`EpochMap::pin`] returns a [`Pinned`] handle: one guard for many operations, whose `get`
//!   returns a plain `&V`. Use it for batches; drop it between batches, because a pinned guard keeps
//!   memory retired after it from being freed.
//! * In async code use [`EpochMap::get_cloned`] or [`EpochMap::with`]: they hold no guard once
//!   they return. `Ref` and `Pinned` are `!Send`, so the compiler stops you from holding them across
//!   an `.await` on a multi-threaded runtime.
//!
//! ## Writes
//!
//! Writers lock only their key's shard. Entries are immutable: `insert` over an existing key and
//! [`EpochMap::update`] publish a new entry and retire the old one, so readers never see a torn
//! value. Closures given to [`EpochMap::get_or_insert_with`], [`EpochMap::update`],
//! [`EpochMap::remove_if`] and [`EpochMap::retain`] run under the shard lock: they must not write to
//! the same map. If they do, the call panics with an explanation instead of deadlocking.
//!
//! ## Memory: what `clear` does and when it comes back
//!
//! [`EpochMap::clear`] swaps a fresh minimal table into every shard and retires the old tables
//! whole. The caller's cost is O(shards), whatever the map held. Once every reader that might still
//! see an old table has unpinned (the epoch grace period), a background thread
//! (`epochmap-reclaim`) drops the old entries and frees the arrays, skipping buckets whose "known
//! empty" mark bit is set, so a sparse table costs what it holds, not its size.
//! [`EpochMap::clear_keep_capacity`] keeps the table sizes instead (Go's `clear`, without the
//! O(n) walk). [`EpochMap::memory_stats`] says where the bytes are: live tables, live entries, and
//! retired-but-pending; [`EpochMap::wait_for_reclamation`] blocks until the pending bytes are gone.
//!
//! ```
//! use epochmap::EpochMap;
//! use std::time::Duration;
//!
//! let map: EpochMap<u64, [u8; 64]> = (0..50_000).map(|i| (i, [0; 64])).collect();
//! let before = map.memory_stats();
//! map.clear();
//! assert!(map.wait_for_reclamation(Duration::from_secs(10)));
//! let after = map.memory_stats();
//! assert_eq!(after.pending_bytes, 0);
//! assert!(after.total_bytes() < before.total_bytes() / 100);
//! ```
//!
//! ## Cost model
//!
//! | operation | cost |
//! |---|---|
//! | `get`, `contains_key` | one epoch pin, one hash, usually one bucket (cache line) and one entry |
//! | `insert`, `remove` | as `get`, plus the shard lock and one allocation or retirement |
//! | growth | O(shard entries) by the writer that crosses the load factor; readers unaffected |
//! | `clear` | O(shards) for the caller; O(entries) later on the reclaimer thread |
//! | `iter`, `retain` | O(capacity) for iteration, O(occupied buckets) for `retain` |
//!
//! ## Consistency
//!
//! Each operation on one key is linearizable. Operations across keys (`len`, `iter`, `clear`,
//! `retain`) are per-shard atomic and weakly consistent across shards.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]

mod array;
mod bucket;
mod builder;
mod entry;
mod impls;
mod iter;
mod map;
mod pinned;
mod reclaim;
mod reentrancy;
mod refs;
mod shard;
mod stats;
mod sync;
mod table;

pub use builder::{BuildError, Builder, DEFAULT_BACKPRESSURE_BYTES, MAX_SHARDS};
pub use iter::{IntoIter, Iter, Keys, PinnedIter, Values};
pub use map::EpochMap;
pub use pinned::Pinned;
pub use reclaim::ReclaimMode;
pub use refs::{KeyRef, Ref};
pub use stats::MemoryStats;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
