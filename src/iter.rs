//! Lock-free iteration over all shards.
//!
//! Iteration is weakly consistent: it walks shard by shard, taking each shard's table as it is when
//! the walk reaches it. An entry present for the whole iteration is yielded exactly once (a table
//! loaded by the iterator is frozen once a writer replaces it, and entries never move within a live
//! table); an entry inserted or removed during the iteration may or may not be seen; a removed entry
//! is never freed while the iterator can still yield it. A key replaced during the iteration is
//! yielded once by `EpochMap` (it replaces in the slot); `FlatEpochMap` may publish the new entry
//! in a later bucket in walk order, never an earlier one, so it yields the key at least once and
//! again for each replace that moved it past the walk, never not at all (`Table::walk_len`).
//!
//! Within a table the walk reads one bucket at a time, whole: its entries are loaded together when
//! the walk reaches the bucket and then yielded from a small buffer (so an entry removed after
//! that is still yielded, and stays alive under the iterator's guard; one inserted after is not).
//! On large maps it prefetches ahead of the bucket it reads. See "Iteration" in docs/design.md
//! for the measurements behind both.

use std::iter::FusedIterator;

use crate::bucket::SLOTS;
use crate::entry::Entry;
use crate::layout::{Layout, Stable};
use crate::refs::{KeyRef, Ref};
use crate::shard::Shard;
use crate::sync::epoch::{self, Guard};
use crate::table::Table;
use crossbeam_utils::CachePadded as Padded;

/// How far ahead of the bucket it reads a large walk prefetches: the entries of the next bucket
/// (each one a random slot of the shard's slab, so a miss), and the slot line this many further
/// on (buckets are read in order, but the hardware prefetcher alone kept up with neither). Both
/// distances are the fastest of those measured (see "Iteration" in docs/design.md): prefetching
/// entries two or more buckets ahead was slower.
const LINES_AHEAD: usize = 16;

/// Walks over maps of fewer buckets than this (all shards together) do not prefetch: their tables
/// and entries mostly stay in the caches between walks, and the prefetches only cost instructions
/// (measured up to 500K `u64 -> u64` entries, 2^17 buckets; from 1M entries, 2^18 buckets, they
/// pay off). A walk over one shard (a `par_iter` task) counts that shard's buckets alone.
const PREFETCH_MIN_BUCKETS: usize = 1 << 18;

/// The walk itself, without a guard of its own: the caller passes the same pinned guard each time.
///
/// It reads a whole bucket at once (one control-word load, one load per full slot) into a small
/// buffer and yields from there, so the common `next` is a buffer read and the bucket's slot line is
/// touched once. On large maps, entering a bucket also starts loading the next bucket's entries
/// and a slot line further on.
pub(crate) struct RawIter<'m, K, V, L: Layout<K, V> = Stable> {
    shards: &'m [Padded<Shard<K, V, L>>],
    next_shard: usize,
    /// The table being walked, or null between shards.
    table: *const Table<K, V, L>,
    /// The next bucket of `table` to read.
    bucket: usize,
    /// Whether the walk of `table` prefetches.
    prefetch: bool,
    /// Entries of the last bucket read; `buf[pos..len]` are still to be yielded.
    buf: [*const Entry<K, V>; SLOTS],
    pos: usize,
    len: usize,
}

impl<'m, K, V, L: Layout<K, V>> RawIter<'m, K, V, L> {
    pub(crate) fn new(shards: &'m [Padded<Shard<K, V, L>>]) -> Self {
        RawIter {
            shards,
            next_shard: 0,
            table: std::ptr::null(),
            bucket: 0,
            prefetch: false,
            buf: [std::ptr::null(); SLOTS],
            pos: 0,
            len: 0,
        }
    }

    /// The next entry.
    ///
    /// # Safety
    /// Every call on one `RawIter` passes a guard of the same thread, and some guard of that thread
    /// stays pinned from the first call until the last use of any returned reference.
    #[inline]
    pub(crate) unsafe fn next<'g>(&mut self, guard: &'g Guard) -> Option<&'g Entry<K, V>> {
        if self.pos < self.len {
            // SAFETY: `pos < len <= SLOTS`.
            let entry = unsafe { *self.buf.get_unchecked(self.pos) };
            self.pos += 1;
            // `buf[..len]` holds entries `load_bucket` read from a table loaded under a guard of
            // this thread that is still pinned (this function's contract).
            // SAFETY: so the entry is alive for 'g.
            let entry = unsafe { &*entry };
            return Some(entry);
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { self.next_bucket(guard) }
    }

    /// Refills the buffer from the next non-empty bucket (moving on to the next shard at the end
    /// of a table) and yields its first entry.
    ///
    /// # Safety
    /// As for [`RawIter::next`].
    #[inline(never)]
    unsafe fn next_bucket<'g>(&mut self, guard: &'g Guard) -> Option<&'g Entry<K, V>> {
        loop {
            if self.table.is_null() {
                let shard = self.shards.get(self.next_shard)?;
                self.next_shard += 1;
                let table = shard.current(guard);
                self.prefetch =
                    table.bucket_count().saturating_mul(self.shards.len()) >= PREFETCH_MIN_BUCKETS;
                if self.prefetch {
                    for ahead in 0..LINES_AHEAD {
                        table.prefetch_bucket(ahead);
                    }
                }
                self.table = table;
                self.bucket = 0;
            }
            // SAFETY: the table was loaded under a guard of this thread that is still pinned
            // (this function's contract), so it and its entries are alive.
            let table = unsafe { &*self.table };
            // SAFETY: as above; the entries stored in `buf` live as long as that guard.
            match unsafe { table.load_bucket(self.bucket, &mut self.buf) } {
                Some(len) => {
                    if self.prefetch {
                        table.prefetch_entries(self.bucket + 1);
                        table.prefetch_bucket(self.bucket + LINES_AHEAD);
                    }
                    self.bucket += 1;
                    if len > 0 {
                        self.pos = 1;
                        self.len = len;
                        // SAFETY: as above, and `len > 0`.
                        return Some(unsafe { &*self.buf[0] });
                    }
                }
                None => self.table = std::ptr::null(),
            }
        }
    }
}

/// Iterator over a map's entries as [`Ref`]s, from [`EpochMap::iter`](crate::EpochMap::iter).
///
/// It holds one epoch guard for the whole walk (each yielded `Ref` adds a cheap nested one), so a
/// long iteration delays memory reclamation until it is dropped. See the module docs for what it
/// sees of concurrent writes.
pub struct Iter<'a, K, V, L: Layout<K, V> = Stable> {
    raw: RawIter<'a, K, V, L>,
    guard: Guard,
}

impl<'a, K, V, L: Layout<K, V>> Iter<'a, K, V, L> {
    pub(crate) fn new(shards: &'a [Padded<Shard<K, V, L>>]) -> Self {
        Iter {
            raw: RawIter::new(shards),
            guard: epoch::pin(),
        }
    }
}

impl<'a, K, V, L: Layout<K, V>> Iterator for Iter<'a, K, V, L> {
    type Item = Ref<'a, K, V>;

    #[inline]
    fn next(&mut self) -> Option<Ref<'a, K, V>> {
        // SAFETY: the iterator always passes its own guard, which stays pinned while it lives.
        let entry = unsafe { self.raw.next(&self.guard) }?;
        // SAFETY: the nested pin happens while `self.guard` is pinned, so the entry (loaded under
        // it) stays alive for as long as the new guard does.
        Some(unsafe { Ref::new(epoch::pin(), entry) })
    }
}

impl<K, V, L: Layout<K, V>> FusedIterator for Iter<'_, K, V, L> {}

impl<K, V, L: Layout<K, V>> std::fmt::Debug for Iter<'_, K, V, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

/// Iterator over a map's keys, from [`EpochMap::keys`](crate::EpochMap::keys).
#[derive(Debug)]
pub struct Keys<'a, K, V, L: Layout<K, V> = Stable>(pub(crate) Iter<'a, K, V, L>);

impl<'a, K, V, L: Layout<K, V>> Iterator for Keys<'a, K, V, L> {
    type Item = KeyRef<'a, K, V>;

    fn next(&mut self) -> Option<KeyRef<'a, K, V>> {
        self.0.next().map(KeyRef)
    }
}

impl<K, V, L: Layout<K, V>> FusedIterator for Keys<'_, K, V, L> {}

/// Iterator over a map's values (as [`Ref`]s), from [`EpochMap::values`](crate::EpochMap::values).
#[derive(Debug)]
pub struct Values<'a, K, V, L: Layout<K, V> = Stable>(pub(crate) Iter<'a, K, V, L>);

impl<'a, K, V, L: Layout<K, V>> Iterator for Values<'a, K, V, L> {
    type Item = Ref<'a, K, V>;

    fn next(&mut self) -> Option<Ref<'a, K, V>> {
        self.0.next()
    }
}

impl<K, V, L: Layout<K, V>> FusedIterator for Values<'_, K, V, L> {}

/// Iterator over `(&K, &V)` under a [`Pinned`](crate::Pinned) guard, from
/// [`Pinned::iter`](crate::Pinned::iter).
pub struct PinnedIter<'p, K, V, L: Layout<K, V> = Stable> {
    pub(crate) raw: RawIter<'p, K, V, L>,
    pub(crate) guard: &'p Guard,
}

impl<'p, K, V, L: Layout<K, V>> Iterator for PinnedIter<'p, K, V, L> {
    type Item = (&'p K, &'p V);

    #[inline]
    fn next(&mut self) -> Option<(&'p K, &'p V)> {
        // SAFETY: always the `Pinned`'s guard, which outlives 'p.
        let entry = unsafe { self.raw.next(self.guard) }?;
        Some((&entry.key, &entry.value))
    }
}

impl<K, V, L: Layout<K, V>> FusedIterator for PinnedIter<'_, K, V, L> {}

impl<K, V, L: Layout<K, V>> std::fmt::Debug for PinnedIter<'_, K, V, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedIter").finish_non_exhaustive()
    }
}
