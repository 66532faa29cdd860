//! [`Drain`], what [`EpochMap::drain`](crate::EpochMap::drain) returns: take everything out in
//! O(shards), hand it over owned, writers never wait.
//!
//! `drain` does what `clear` does to each shard — under the shard lock, swap a fresh minimal table
//! in with one `Release` store — but instead of retiring the old tables to the reclaimer it keeps
//! them in the returned [`Drain`]. The protocol:
//!
//! 1. **Swap** (the caller, O(shards)): per shard, lock, swap in an empty table, set `len` to 0,
//!    retire the shard's pending batch of removed entries as usual (they were removed before the
//!    drain, so they are not its to yield), unlock. An entry in the old table at the swap is the
//!    drain's; a write that reached the shard earlier replaced or removed its entry itself (and
//!    returned it); a write that comes later lands in the fresh table and stays in the map.
//! 2. **Grace** (one deferred function for all shards): after the last swap, a function deferred
//!    through the epoch sets a flag. Readers pinned before a swap may still be reading the old
//!    table and its entries; the function runs only once every one of them has unpinned.
//! 3. **Move out** (the iterator): the first `next` waits for the flag — driving collection and
//!    sleeping on a condition variable, see `reclaim::Grace` — and from then on the drain owns the
//!    tables exclusively: each entry is moved out of its slab slot (the slot goes back to the slab)
//!    and each emptied table is freed.
//! 4. **Drop early**: what is left is retired whole to the reclaimer, as `clear` would have done.

use std::fmt;
use std::iter::FusedIterator;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::layout::{Layout, Stable};
use crate::prefetch::prefetch;
use crate::reclaim::{self, Grace, ReclaimMode, Retire};
use crate::shard::{Ctx, Shard, Taken};
use crate::slab::{EntrySlab, OwnedReleaser};
use crate::stats::{Counters, DrainHeld};
use crate::sync::{epoch, Arc, Ordering};
use crate::table::Table;

/// How many buckets ahead of the cursor `Drain` prefetches entries: about 4 entries per bucket
/// at the load factor, so 8-16 misses in flight.
const PREFETCH_BUCKETS: usize = 3;

/// Starts loading the entries of the buckets a few ahead of `cursor` (up to the end of the
/// table), from the bucket after `*prefetched` on. The walk reads the table in order (the hardware
/// prefetcher follows it), but each entry is a random slot of the slab: without this every entry is
/// a cache miss paid in turn; with it, several are in flight at once (see docs/design.md).
fn prefetch_ahead<K, V, L: Layout<K, V>>(
    table: &Table<K, V, L>,
    cursor: usize,
    prefetched: &mut usize,
) {
    let last = (cursor + PREFETCH_BUCKETS).min(table.bucket_count() - 1);
    while *prefetched < last {
        *prefetched += 1;
        for (_, entry) in table.entries_in(*prefetched) {
            prefetch(entry);
        }
    }
}

/// A taken table while the drain holds it.
struct Held<K, V, L: Layout<K, V>> {
    table: *mut Table<K, V, L>,
    /// Entries not yet moved out.
    entries: usize,
    bytes: usize,
    /// Returns the slots of moved-out entries to the shard's slab (and keeps the slab alive).
    releaser: OwnedReleaser<K, V>,
}

/// How a dropped `Drain` retires what is left: `reclaim::retire_table` for this `K` and `V`. Kept
/// as a function pointer so that `Drain` itself needs no `Send + 'static` bounds (a `Drop` impl
/// cannot add bounds the type does not have); `drain` creates it where the bounds hold.
type RetireFn<K, V, L> = unsafe fn(
    &epoch::Guard,
    *mut Table<K, V, L>,
    Retire,
    usize,
    ReclaimMode,
    &Arc<Counters>,
    &Arc<EntrySlab<K, V>>,
);

/// An owning iterator over the entries [`EpochMap::drain`](crate::EpochMap::drain) took out of the
/// map, as `(K, V)`.
///
/// **It waits before the first entry.** Readers that were pinned when `drain` swapped a shard's
/// table may still be reading its entries, so moving one out earlier would pull a value from under
/// a live `&V`. The first call to [`next`](Iterator::next) therefore waits for that grace period:
/// until every thread pinned at the swap has unpinned. With short-lived reads that is microseconds
/// (the wait drives the epoch itself, and sleeps between rounds rather than spinning); a thread
/// that holds a [`Ref`](crate::Ref), [`Pinned`](crate::Pinned) or iterator of *any* map for long
/// makes the drain wait as long. Writers and readers never wait for the drain.
///
/// To avoid blocking, check [`is_ready`](Drain::is_ready), or use [`try_next`](Drain::try_next)
/// (never waits) or [`next_timeout`](Drain::next_timeout) (waits at most a given time). Once the
/// grace period has passed, every call is a plain move.
///
/// **Dropping it early** hands the entries not yet yielded to the reclaimer, exactly as
/// [`clear`](crate::EpochMap::clear) would have; nothing leaks and nothing is dropped twice. A
/// `Drain` may outlive its map (it keeps the memory its entries live in alive).
///
/// **Memory**: [`MemoryStats::drain_bytes`](crate::MemoryStats::drain_bytes) counts the tables and
/// not-yet-yielded entries it holds, until they are yielded, freed or handed to the reclaimer.
/// They are not `pending_bytes`: nothing waits for the reclaimer, so
/// [`wait_for_reclamation`](crate::EpochMap::wait_for_reclamation) does not wait for a `Drain` you
/// hold.
///
/// **Threads**: `Drain` is `Send` when `K` and `V` are (it owns them and holds no epoch guard), so
/// it can be handed to another thread to consume. It is `Sync` when `K` and `V` are: through
/// `&Drain` only [`is_ready`](Drain::is_ready), `len` and `Debug` are reachable, none of which
/// touches an entry, but the bound keeps that true should a `&self` method ever read one.
///
/// ```
/// use epochmap::EpochMap;
///
/// let map: EpochMap<u32, String> = (0..4).map(|i| (i, i.to_string())).collect();
/// let drain = map.drain();
/// map.insert(9, "after".to_string()); // lands in the fresh tables, not in the drain
/// let mut taken: Vec<(u32, String)> = drain.collect();
/// taken.sort();
/// assert_eq!(taken.len(), 4);
/// assert_eq!(taken[2], (2, "2".to_string()));
/// assert_eq!(map.len(), 1);
/// ```
pub struct Drain<K, V, L: Layout<K, V> = Stable> {
    tables: Vec<Held<K, V, L>>,
    /// The table entries are taken from; tables before it are freed.
    current: usize,
    /// Where the current table's walk resumes (`Table::take_next`).
    cursor: usize,
    /// The last bucket of the current table whose entries were prefetched.
    prefetched: usize,
    /// Entries not yet yielded, over all tables.
    remaining: usize,
    grace: Arc<Grace>,
    /// Cached `grace.passed()`, so the moves after the first need no atomic load.
    ready: bool,
    /// What this drain holds (tables and entries not yet yielded), in bytes, and of that its
    /// tables: the owner's copies of `held_bytes`, which `memory_stats` reads.
    bytes: usize,
    table_bytes: usize,
    held_bytes: Arc<DrainHeld>,
    counters: Arc<Counters>,
    mode: ReclaimMode,
    retire: RetireFn<K, V, L>,
}

// SAFETY: a `Drain` owns its tables and entries (they were swapped out of their shards, and no
// writer can reach them) and holds no epoch guard; the grace-period wait works from any thread.
// Moving it to another thread moves the `K`s and `V`s, which needs exactly `K: Send, V: Send`.
unsafe impl<K: Send, V: Send, L: Layout<K, V>> Send for Drain<K, V, L> {}

// SAFETY: `&Drain` reaches only the counts and the grace flag (atomics), never an entry; requiring
// `K: Sync, V: Sync` anyway keeps this sound for any future `&self` accessor of the entries.
unsafe impl<K: Sync, V: Sync, L: Layout<K, V>> Sync for Drain<K, V, L> {}

/// The error of [`Drain::try_next`] and [`Drain::next_timeout`]: the next entry cannot be moved
/// out yet, because a reader that was pinned when the drain swapped the tables is still pinned.
///
/// ```
/// use epochmap::{EpochMap, WouldBlock};
///
/// let map: EpochMap<u8, u8> = (0..3).map(|i| (i, i)).collect();
/// let held = map.get(&1).unwrap(); // a reader pinned across the drain's swap
/// let mut drain = map.drain();
/// assert_eq!(drain.try_next(), Err(WouldBlock));
/// assert_eq!(WouldBlock.to_string(), "a reader pinned before the drain still holds the epoch");
/// drop(held);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WouldBlock;

impl fmt::Display for WouldBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reader pinned before the drain still holds the epoch")
    }
}

impl std::error::Error for WouldBlock {}

impl<K: Send + 'static, V: Send + 'static, L: Layout<K, V>> Drain<K, V, L> {
    /// What [`EpochMap::drain`](crate::EpochMap::drain) does, given the map's shards and the
    /// context of its writes: swap every shard's table out and hold the tables until their grace
    /// period has passed (steps 1 and 2 of the protocol above).
    pub(crate) fn take_from(shards: &[CachePadded<Shard<K, V, L>>], ctx: &Ctx<'_>) -> Self {
        // A drain from code running under one of this map's locks is a re-entrant write. Checked
        // here, before anything else: the per-lock check would find it too (at the first shard),
        // but only after this drain's byte counters were registered, and they would never be
        // unregistered.
        crate::reentrancy::Held::assert_not_holding(ctx.map_id);
        let held_bytes = ctx.counters.register_drain();
        let (tables, grace) = {
            let guard = epoch::pin();
            let tables: Vec<Taken<K, V, L>> = shards
                .iter()
                .filter_map(|shard| shard.take_table(ctx, &guard, &held_bytes))
                .collect();
            // One deferred function after the last swap covers every table: each was unlinked
            // before it was deferred.
            let grace = if tables.is_empty() {
                Grace::passed_already()
            } else {
                Grace::start(&guard)
            };
            guard.flush();
            (tables, grace)
        };
        // No guard held here, or our own pin would hold the epoch back.
        reclaim::relieve(ctx.counters, ctx.backpressure);
        let remaining = tables.iter().map(|t| t.entries).sum();
        Drain {
            tables: tables
                .into_iter()
                .map(|t| Held {
                    table: t.table,
                    entries: t.entries,
                    bytes: t.bytes,
                    releaser: OwnedReleaser::new(t.slab),
                })
                .collect(),
            current: 0,
            cursor: 0,
            prefetched: 0,
            remaining,
            ready: grace.passed(),
            grace,
            // Relaxed: the shards' additions were made on this thread.
            bytes: held_bytes.total.load(Ordering::Relaxed),
            table_bytes: held_bytes.tables.load(Ordering::Relaxed),
            held_bytes,
            counters: Arc::clone(ctx.counters),
            mode: ctx.mode,
            retire: reclaim::retire_table::<K, V, L>,
        }
    }
}

impl<K, V, L: Layout<K, V>> Drain<K, V, L> {
    /// Whether the next entry can be moved out without waiting: the grace period of the drained
    /// tables has passed (or nothing is left). It only looks; [`try_next`](Drain::try_next) also
    /// advances the epoch.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = (0..3).map(|i| (i, i)).collect();
    /// let held = map.get(&0).unwrap();
    /// let drain = map.drain();
    /// assert!(!drain.is_ready()); // `held` was pinned before the swap
    /// drop(held);
    /// let mut all: Vec<_> = drain.collect(); // waits (briefly) for the epoch, then moves
    /// all.sort();
    /// assert_eq!(all, [(0, 0), (1, 1), (2, 2)]);
    /// ```
    pub fn is_ready(&self) -> bool {
        self.ready || self.remaining == 0 || self.grace.passed()
    }

    /// The next entry if it can be had without waiting, `Err(WouldBlock)` if a reader pinned
    /// before the drain is still pinned. Each call advances the epoch once if it can, so polling
    /// `try_next` eventually succeeds once those readers are gone.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = (0..3).map(|i| (i, i)).collect();
    /// let mut drain = map.drain();
    /// let mut got = Vec::new();
    /// loop {
    ///     match drain.try_next() {
    ///         Ok(Some(pair)) => got.push(pair),
    ///         Ok(None) => break,
    ///         Err(epochmap::WouldBlock) => std::thread::yield_now(), // or do other work
    ///     }
    /// }
    /// assert_eq!(got.len(), 3);
    /// ```
    pub fn try_next(&mut self) -> Result<Option<(K, V)>, WouldBlock> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if !self.ready {
            self.ready = self.grace.drive();
            if !self.ready {
                return Err(WouldBlock);
            }
        }
        Ok(self.take())
    }

    /// The next entry, waiting at most `timeout` for the grace period; `Err(WouldBlock)` if it
    /// did not pass in time (the drain keeps everything; call again later). A `timeout` too long
    /// to add to the current [`Instant`] (such as `Duration::MAX`) means no deadline: the call is
    /// [`next`](Iterator::next), and panics as it does if this thread is pinned itself.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map: epochmap::EpochMap<u8, u8> = (0..3).map(|i| (i, i)).collect();
    /// let mut drain = map.drain();
    /// let first = drain.next_timeout(Duration::from_secs(10)).unwrap();
    /// assert!(first.is_some());
    /// assert_eq!(drain.len(), 2);
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<(K, V)>, WouldBlock> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if !self.ready {
            // A deadline past what `Instant` can hold (`Duration::MAX`) is no deadline: that is
            // `next`, with its check that this thread is not pinned (the wait would never end).
            let Some(deadline) = Instant::now().checked_add(timeout) else {
                return Ok(self.next());
            };
            self.ready = self.grace.wait(Some(deadline));
            if !self.ready {
                return Err(WouldBlock);
            }
        }
        Ok(self.take())
    }

    /// Moves the next entry out. The caller has seen the grace period pass.
    fn take(&mut self) -> Option<(K, V)> {
        while let Some(held) = self.tables.get_mut(self.current) {
            // The grace period of the swap has passed (the caller saw `grace.passed()`, whose
            // Acquire orders every earlier reader's accesses before this) and no writer can reach
            // a swapped-out table; it is freed only below, after `current` has moved past it.
            // SAFETY: so the drain owns this table exclusively and it is live.
            let table = unsafe { &*held.table };
            let next = if held.entries > 0 {
                table.take_next(&mut self.cursor)
            } else {
                None
            };
            if let Some(ptr) = next {
                prefetch_ahead(table, self.cursor, &mut self.prefetched);
                held.entries -= 1;
                self.remaining -= 1;
                // SAFETY: `take_next` unlinked the entry from a table we own exclusively, so we
                // own the entry; it lives in this table's shard's slab.
                let entry = unsafe { L::move_out(ptr, &mut held.releaser) };
                let emptied = held.entries == 0;
                self.hold(L::ENTRY_BYTES_OUTSIDE);
                if emptied {
                    self.free_current();
                }
                return Some((entry.key, entry.value));
            }
            // Only reached if the count and the table disagree, which the shard lock rules out.
            debug_assert_eq!(
                held.entries, 0,
                "a drained table held fewer entries than counted"
            );
            self.remaining -= held.entries;
            let lost = held.entries * L::ENTRY_BYTES_OUTSIDE;
            held.entries = 0;
            self.hold(lost);
            self.free_current();
        }
        None
    }

    /// Takes `gone` bytes off what this drain holds. Only the drain writes its counter, so a
    /// plain `Relaxed` store does (no read-modify-write on the per-entry path); `Relaxed`: a
    /// statistic that publishes nothing.
    fn hold(&mut self, gone: usize) {
        self.bytes -= gone;
        self.held_bytes.total.store(self.bytes, Ordering::Relaxed);
    }

    /// Frees the current table (emptied, past its grace period) and moves on to the next.
    fn free_current(&mut self) {
        let held = &mut self.tables[self.current];
        held.releaser.finish();
        if L::INLINE {
            // Batches of retired slots retired before the drain may still hold the table (their
            // jobs run on any thread, later): whichever of us lets go last frees it, counted as
            // a retired table until then.
            // SAFETY: the drain owns the table (see `take`) and holds it once; `current` moves
            // past it right after.
            unsafe {
                reclaim::count_as_retired(&*held.table, &self.counters);
                reclaim::unhold_table(held.table, &self.counters, 0);
            }
        } else {
            // SAFETY: the drain owns the table exclusively (see `take`), it was allocated as a
            // crossbeam `Owned`, and it is freed once: `current` moves past it right after.
            drop(unsafe { epoch::Shared::from(held.table as *const Table<K, V, L>).into_owned() });
        }
        let bytes = held.bytes;
        self.table_bytes -= bytes;
        // Relaxed: as in `hold`.
        self.held_bytes
            .tables
            .store(self.table_bytes, Ordering::Relaxed);
        self.hold(bytes);
        self.current += 1;
        self.cursor = 0;
        self.prefetched = 0;
    }
}

impl<K, V, L: Layout<K, V>> Iterator for Drain<K, V, L> {
    type Item = (K, V);

    /// The next entry, waiting for the grace period first if it has not passed yet (see
    /// [`Drain`]).
    ///
    /// # Panics
    /// If it has to wait and the calling thread is itself pinned (it holds a [`Ref`](crate::Ref),
    /// [`Pinned`](crate::Pinned) or iterator of some map): the wait could then never end, so it
    /// panics with an explanation instead of hanging. A guard of another crate's crossbeam-epoch
    /// user does not count: the map pins on a collector of its own, which such a guard does not
    /// hold back. Use [`Drain::try_next`] in such code.
    fn next(&mut self) -> Option<(K, V)> {
        if self.remaining == 0 {
            return None;
        }
        if !self.ready {
            self.ready = self.grace.passed();
        }
        if !self.ready {
            assert!(
                !epoch::is_pinned(),
                "epochmap: Drain::next must wait for readers pinned before the drain, but this \
                 thread is pinned itself (it holds a Ref, Pinned or iterator), so the wait could \
                 never end; drop them first, or use Drain::try_next / Drain::next_timeout"
            );
            self.ready = self.grace.wait(None);
            debug_assert!(
                self.ready,
                "a wait without a deadline only returns once passed"
            );
        }
        self.take()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<K, V, L: Layout<K, V>> ExactSizeIterator for Drain<K, V, L> {}
impl<K, V, L: Layout<K, V>> FusedIterator for Drain<K, V, L> {}

impl<K, V, L: Layout<K, V>> Drop for Drain<K, V, L> {
    /// Hands the tables not yet emptied, with their entries, to the reclaimer as a full retire
    /// (as `clear` would have): after a grace period the entries are dropped off this thread in
    /// `Background` mode, with `Drop` panics counted in `memory_stats().drop_panics`. O(tables).
    fn drop(&mut self) {
        self.counters.unregister_drain(&self.held_bytes);
        if self.current >= self.tables.len() {
            return;
        }
        let guard = epoch::pin();
        for held in &mut self.tables[self.current..] {
            held.releaser.flush();
            // The table was swapped out of its shard before `guard` pinned (so the new grace
            // period covers every reader that could still see it, and then some), it was
            // allocated as a crossbeam `Owned`, and its `entries` are exactly the ones not moved
            // out, reachable from no other table. `retire` is `retire_table::<K, V>`, created
            // where its bounds held.
            // SAFETY: so `retire_table`'s contract holds: an unlinked table, handed over once.
            unsafe {
                (self.retire)(
                    &guard,
                    held.table,
                    Retire::Full,
                    held.entries,
                    self.mode,
                    &self.counters,
                    held.releaser.slab(),
                )
            };
        }
        self.current = self.tables.len();
        guard.flush();
    }
}

impl<K, V, L: Layout<K, V>> fmt::Debug for Drain<K, V, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("remaining", &self.remaining)
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;
    use crate::EpochMap;

    #[test]
    fn grace_passes_only_once_a_reader_pinned_at_its_start_unpins() {
        let reader = epoch::pin();
        let grace = {
            let guard = epoch::pin();
            let grace = Grace::start(&guard);
            guard.flush();
            grace
        };
        let soon = || Some(Instant::now() + Duration::from_millis(20));
        assert!(
            !grace.wait(soon()),
            "passed under a reader pinned before it"
        );
        assert!(!grace.drive());
        drop(reader);
        assert!(grace.wait(Some(Instant::now() + Duration::from_secs(30))));
        assert!(grace.passed());
    }

    #[test]
    fn each_live_drain_has_a_counter_and_leaves_the_registry_when_dropped() {
        let map: EpochMap<u64, u64> = (0..100).map(|i| (i, i)).collect();
        let counters = Arc::clone(map.ctx().counters);
        let first = map.drain();
        for i in 0..10 {
            map.insert(i, i);
        }
        let second = map.drain();
        assert_eq!(crate::sync::lock(&counters.drains).len(), 2);
        assert_eq!(
            counters.drain_bytes(),
            (
                first.bytes + second.bytes,
                first.table_bytes + second.table_bytes
            ),
            "memory_stats sums what each drain holds"
        );
        drop(first);
        assert_eq!(second.count(), 10);
        assert!(crate::sync::lock(&counters.drains).is_empty());
        assert_eq!(counters.drain_bytes(), (0, 0));
    }

    #[test]
    fn prefetching_stops_at_the_last_bucket() {
        let table = Table::<u64, u64>::new(4);
        let mut prefetched = 0;
        prefetch_ahead(&table, 0, &mut prefetched);
        assert_eq!(prefetched, PREFETCH_BUCKETS.min(3));
        prefetch_ahead(&table, 3, &mut prefetched);
        assert_eq!(prefetched, 3, "never past the table's end");
        let one = Table::<u64, u64>::new(1);
        let mut prefetched = 0;
        prefetch_ahead(&one, 0, &mut prefetched);
        assert_eq!(prefetched, 0);
    }
}
