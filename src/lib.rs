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
//! ## Atomic operations
//!
//! Three methods decide and write in one step, under the key's shard writer lock, so no other
//! writer can change the key in between (readers are never blocked):
//!
//! * [`EpochMap::compute`]: the closure sees the current entry and returns an [`Operation`]
//!   (`Insert(v)`, `Remove`, `Abort`); the call returns a [`Compute`] saying what happened, with
//!   the old and new entries.
//! * [`EpochMap::try_insert`]: insert only if absent; otherwise an [`OccupiedError`] with the entry
//!   that is there and the value handed back.
//! * [`EpochMap::get_or_try_insert_with`]: a fallible loader; an error inserts nothing.
//!
//! ```
//! use epochmap::{EpochMap, Operation};
//!
//! let stock = EpochMap::new();
//! stock.insert("apple", 2u32);
//! // Take one apple if there is one; remove the entry when the last one goes.
//! let take = || {
//!     stock
//!         .compute("apple", |entry| match entry {
//!             Some((_, &1)) => Operation::Remove,
//!             Some((_, &n)) => Operation::Insert(n - 1),
//!             None => Operation::Abort,
//!         })
//!         .previous()
//!         .is_some()
//! };
//! assert!(take() && take());
//! assert!(!take()); // none left
//! assert!(stock.get("apple").is_none());
//! ```
//!
//! **Closures that run under a shard lock** — those given to `compute`, `get_or_insert_with`,
//! `get_or_try_insert_with`, `update`, `remove_if`, `retain` and `par_retain`, and the key's
//! `Hash`/`Eq` — make other writers to that shard wait, so keep them short (a slow one belongs in
//! a `get_or_load` loader, which runs with no lock held). They may read the map,
//! but must not write to it: that would wait for a lock the thread already holds. Such a call
//! panics with an explanation instead of deadlocking.
//!
//! Writing from such a closure to a *second* map is allowed, but two threads that do it in
//! opposite directions can deadlock, and this is **not detected**: thread 1 runs a closure under a
//! lock of map A that writes to map B while thread 2 runs a closure under a lock of map B that
//! writes to map A; each waits for the lock the other holds. Give your maps an order and only ever write from a closure of one map to a later one, or collect
//! what to write and do it after the closure returns. Detecting it would take a process-wide
//! lock-order graph of maps checked on every nested write, which this crate does not keep.
//!
//! ## Loading: single-flight, off the lock
//!
//! [`EpochMap::get_or_load`] returns a key's entry, running the loader if it is absent: **with no
//! map lock held**, and once per key however many threads ask at the same time (the others wait,
//! parked, and get its value). A failing or panicking loader inserts nothing; a waiter then loads.
//! Forms: [`EpochMap::try_get_or_load`] (fallible), [`EpochMap::get_or_load_async`] (a future as
//! the loader, runtime-agnostic), [`EpochMap::get_or_load_ref`] (a borrowed key, allocated only
//! to insert) and [`EpochMap::get_or_load_with_hash`] (a hash from [`EpochMap::hash_key`]).
//! `docs/caching.md` has the full rules, and what runs under which lock for every call.
//!
//! ```
//! use epochmap::EpochMap;
//!
//! let users: EpochMap<u64, String> = EpochMap::new();
//! let name = users.get_or_load(7, || format!("user {}", 7)); // a slow fetch, no lock held
//! assert_eq!(*name, "user 7");
//! assert_eq!(*users.get_or_load(7, || unreachable!()), "user 7"); // a hit: lock-free
//! ```
//!
//! ## Async code
//!
//! A [`Ref`] or a [`Pinned`] owns a crossbeam-epoch guard. A guard belongs to the thread that
//! pinned it (it points into that thread's epoch record), so both types are `!Send`. That is also
//! what you want across an `.await`: a guard held by a suspended task would keep every entry
//! retired since from being freed, for as long as the task sleeps. In async code, use
//! [`EpochMap::get_cloned`] (clone the value out), [`EpochMap::with`] (run a closure on it) or
//! [`EpochMap::get_or_load_async`] (load on a miss): they hold no guard once they return, so the
//! future stays `Send`.
//!
//! ```
//! use epochmap::EpochMap;
//! use std::sync::Arc;
//!
//! fn spawnable<F: std::future::Future + Send>(future: F) -> F {
//!     future
//! }
//!
//! let map = Arc::new(EpochMap::new());
//! map.insert("config", Arc::new(String::from("v1")));
//! let task = spawnable(async move {
//!     let config = map.get_cloned("config"); // no guard held after this line
//!     std::future::ready(()).await;
//!     let len = map.with("config", |v| v.len()); // nor after this one
//!     (config, len)
//! });
//! # drop(task);
//! ```
//!
//! Holding a `Ref` across an `.await` makes the future `!Send`, so the compiler rejects it for a
//! multi-threaded runtime:
//!
//! ```compile_fail,E0277
//! # use epochmap::EpochMap;
//! # use std::sync::Arc;
//! # fn spawnable<F: std::future::Future + Send>(future: F) -> F { future }
//! let map = Arc::new(EpochMap::new());
//! map.insert("config", 1);
//! spawnable(async move {
//!     let config = map.get("config"); // a `Ref`: owns an epoch guard
//!     std::future::ready(()).await; // error: the future is not `Send`
//!     drop(config);
//! });
//! ```
//!
//! And a `Ref` cannot be sent to another thread:
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>(_: T) {}
//! let map = epochmap::EpochMap::new();
//! map.insert(1, 1);
//! assert_send(map.get(&1).unwrap()); // error: `Ref` is not `Send`
//! ```
//!
//! ## Memory: what `clear` does and when it comes back
//!
//! [`EpochMap::clear`] swaps a fresh minimal table into every shard and retires the old tables
//! whole. The caller's cost is O(shards), whatever the map held. Once every reader that might still
//! see an old table has unpinned (the epoch grace period), a background thread
//! (`epochmap-reclaim`) drops the old entries and frees the arrays, skipping buckets whose "known
//! empty" mark bit is set, so a sparse table costs what it holds, not its size.
//! [`EpochMap::clear_keep_capacity`] keeps the table sizes instead (Go's `clear`, without the
//! O(n) walk).
//!
//! Without `clear`, memory follows `len()` down by itself: a removal that leaves a shard's table
//! under an eighth of its capacity rebuilds it at two to four times what is left (never below 8
//! buckets per shard, nor below the capacity the map was built with), so a map emptied by `remove`
//! in a loop, Go's case, gives its tables back; entries live in 4 KiB slab chunks that go back as
//! they empty (an entry never moves, so each survivor keeps its chunk).
//! [`EpochMap::shrink_to_fit`] trims the remaining headroom. [`EpochMap::memory_stats`] says
//! where the bytes are: live tables, live entries, retired-but-pending, and in all
//! (`allocated_bytes`) what the map holds from the allocator;
//! [`EpochMap::wait_for_reclamation`] blocks until the pending bytes are gone.
//!
//! Under churn (writers replacing and removing as fast as they can), retired entries wait for
//! their grace period; once more than the builder's
//! [`backpressure_entries`](Builder::backpressure_entries) (4,096 by default) are waiting, the
//! writers that retire more help free them, off every lock, so the backlog stays bounded however
//! many writers outrun the background thread. A reader that stays pinned holds back everything
//! retired after it pinned: keep `Ref`s and `Pinned` handles short-lived, and watch
//! `memory_stats().pending_entries`.
//! The map pins on an epoch collector of its own, not on crossbeam-epoch's default one: only
//! epochmap's guards hold back its reclamation, and its calls never run what other crates deferred
//! through crossbeam-epoch.
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
//! assert!(after.allocated_bytes < before.allocated_bytes / 100);
//! ```
//!
//! ## Taking everything out: `drain`
//!
//! [`EpochMap::drain`] swaps the tables out exactly as `clear` does (O(shards) for the caller,
//! writers and readers never wait) and returns the old contents as an owning [`Drain`] iterator of
//! `(K, V)`: every entry present before the call comes out exactly once (or was returned by a
//! write that replaced or removed it first), every entry inserted after it stays in the map. The
//! `Drain` moves an entry out only after every reader pinned at the swap has unpinned, so its first
//! `next` may wait for a `Ref` some thread holds; [`Drain::try_next`] and [`Drain::is_ready`] never
//! wait. The pattern it is for: counters collected for an interval, then exported and reset in one
//! step while other threads keep counting (see `examples/metrics.rs`).
//!
//! ```
//! use epochmap::EpochMap;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! let hits: Arc<EpochMap<u32, AtomicU64>> = Arc::new(EpochMap::new());
//! let worker = {
//!     let hits = Arc::clone(&hits);
//!     std::thread::spawn(move || {
//!         for i in 0..10_000u32 {
//!             hits.get_or_insert_with(i % 10, || AtomicU64::new(0))
//!                 .fetch_add(1, Ordering::Relaxed);
//!         }
//!     })
//! };
//! let mut exported = 0;
//! while !worker.is_finished() {
//!     exported += hits.drain().map(|(_, n)| n.into_inner()).sum::<u64>();
//! }
//! worker.join().unwrap();
//! exported += hits.drain().map(|(_, n)| n.into_inner()).sum::<u64>();
//! assert_eq!(exported, 10_000); // no increment lost or counted twice
//! ```
//!
//! ## Cost model
//!
//! | operation | cost |
//! |---|---|
//! | `get`, `contains_key` | one epoch pin, one hash, usually one bucket (cache line) and one entry |
//! | `insert`, `remove` | as `get`, plus the shard lock and one allocation or retirement |
//! | growth | O(shard entries) by the writer that crosses the load factor; readers unaffected |
//! | automatic shrink | O(shard entries) by the removal that leaves a table under 1/8 full; O(1) amortised per removal |
//! | `clear` | O(shards) for the caller; O(entries) later on the reclaimer thread |
//! | `drain` | O(shards) for the caller; O(entries) for whoever consumes the [`Drain`], after one grace period |
//! | `iter`, `retain` | O(capacity) for iteration, O(occupied buckets) for `retain` |
//!
//! ## Consistency
//!
//! Each operation on one key is linearizable. Operations across keys (`len`, `iter`, `clear`,
//! `drain`, `retain`) are per-shard atomic and weakly consistent across shards.
//!
//! ## Feature flags
//!
//! No feature is on by default.
//!
//! * **`rayon`**: parallel iteration and bulk operations, one rayon task per shard.
//!   `EpochMap::par_iter`, `par_keys` and `par_values` yield owned clones (`(K, V)`, `K`, `V`):
//!   a reference loaded by a rayon worker is protected only by that worker's epoch pin, which ends
//!   when its task does, while parallel items routinely outlive the task that produced them
//!   (`collect`, `reduce`, `find_any`). Also `EpochMap::par_retain`, `ParallelExtend` (for the map
//!   and for `&EpochMap`), `FromParallelIterator`, and `IntoParallelIterator` for an owned map
//!   (which drains each shard without guards or locks).
//! * **`serde`**: `Serialize` (as a map, with an exact length even under concurrent writes) and
//!   `Deserialize` (last duplicate wins) for `EpochMap<K, V, S>` with `S: BuildHasher + Default`.
//!
//! ## Minimum supported Rust version
//!
//! `rust-version` in `Cargo.toml` is 1.80: what the dependencies require with every feature on
//! (rayon 1.12 needs 1.80). CI builds with the machine's toolchain (1.95) and enforces the 1.80
//! floor for standard-library APIs through clippy's `incompatible_msrv` lint, which reads
//! `rust-version`; language features are checked by review only (no 1.80 toolchain is available
//! to CI).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
// `Map` and its iterators are generic over a layout bounded by the crate-private `Layout` trait:
// the two layouts are public marker types, the trait is sealed by being private, so no user
// layout can exist and no user can call its methods.
#![allow(private_bounds)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]

mod array;
mod bucket;
mod builder;
mod collector;
mod compute;
mod config;
mod drain;
mod entry;
mod flight;
mod hashed;
mod impls;
// The flat layout of issue 20, tested at the table level; the map that uses it is being built.
#[cfg_attr(not(test), allow(dead_code))]
mod inline;
mod iter;
mod key;
mod layout;
mod load;
mod map;
mod owed;
mod pinned;
mod prefetch;
#[cfg(feature = "rayon")]
mod rayon;
mod reclaim;
mod reentrancy;
mod refs;
mod reserve;
mod sample;
mod scan;
#[cfg(feature = "serde")]
mod serde;
mod shard;
mod slab;
mod stats;
mod sync;
mod table;

#[cfg(feature = "rayon")]
pub use crate::rayon::{IntoParIter, ParIter, ParKeys, ParValues};
pub use builder::Builder;

/// How a map stores its entries: the one thing [`EpochMap`] and [`FlatEpochMap`] differ in.
///
/// Both are [`Map`]; the layout is its last type parameter. [`Stable`](layouts::Stable) keeps
/// each entry where it was inserted (values never move); [`Inline`](layouts::Inline) stores
/// entries in the table (reads touch one line fewer; values are copied on growth).
pub mod layouts {
    pub use crate::inline::Inline;
    pub use crate::layout::Stable;
}
pub use compute::{Compute, OccupiedError, Operation};
pub use config::{
    BuildError, DEFAULT_BACKPRESSURE_BYTES, DEFAULT_BACKPRESSURE_ENTRIES, MAX_SHARDS,
};
pub use drain::{Drain, WouldBlock};
pub use impls::IntoIter;
pub use iter::{Iter, Keys, PinnedIter, Values};
pub use map::{EpochMap, FlatEpochMap, Map};
pub use pinned::Pinned;
pub use reclaim::ReclaimMode;
pub use refs::{KeyRef, Ref};
pub use reserve::TryReserveError;
pub use scan::ScanCursor;
pub use stats::MemoryStats;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
