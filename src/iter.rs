//! Lock-free iteration over all shards.
//!
//! Iteration is weakly consistent: it walks shard by shard, taking each shard's table as it is when
//! the walk reaches it. An entry present for the whole iteration is yielded exactly once (a table
//! loaded by the iterator is frozen once a writer replaces it, and entries never move within a live
//! table); an entry inserted or removed during the iteration may or may not be seen; a removed entry
//! is never freed while the iterator can still yield it.

use std::iter::FusedIterator;

use crate::entry::Entry;
use crate::refs::{KeyRef, Ref};
use crate::shard::Shard;
use crate::sync::epoch::{self, Guard};
use crate::table::Table;
use crossbeam_utils::CachePadded as Padded;

/// The walk itself, without a guard of its own: the caller passes the same pinned guard each time.
pub(crate) struct RawIter<'m, K, V> {
    shards: &'m [Padded<Shard<K, V>>],
    next_shard: usize,
    table: Option<*const Table<K, V>>,
    bucket: usize,
    full: u8,
}

impl<'m, K, V> RawIter<'m, K, V> {
    pub(crate) fn new(shards: &'m [Padded<Shard<K, V>>]) -> Self {
        RawIter {
            shards,
            next_shard: 0,
            table: None,
            bucket: 0,
            full: 0,
        }
    }

    /// The next entry.
    ///
    /// # Safety
    /// Every call on one `RawIter` passes a guard of the same thread, and some guard of that thread
    /// stays pinned from the first call until the last use of any returned reference.
    pub(crate) unsafe fn next<'g>(&mut self, guard: &'g Guard) -> Option<&'g Entry<K, V>> {
        loop {
            let table = match self.table {
                Some(table) => table,
                None => {
                    let shard = self.shards.get(self.next_shard)?;
                    self.next_shard += 1;
                    let table = shard.current(guard);
                    self.bucket = 0;
                    self.full = table.load_full(0).unwrap_or(0);
                    let table: *const Table<K, V> = table;
                    self.table = Some(table);
                    table
                }
            };
            // SAFETY: the table was loaded under a guard of this thread that is still pinned
            // (this function's contract), so it and its entries are alive.
            let table = unsafe { &*table };
            while self.full != 0 {
                let slot = self.full.trailing_zeros() as usize;
                self.full &= self.full - 1;
                // SAFETY: as above.
                if let Some(entry) = unsafe { table.load_entry(self.bucket, slot) } {
                    return Some(entry);
                }
            }
            self.bucket += 1;
            match table.load_full(self.bucket) {
                Some(full) => self.full = full,
                None => self.table = None,
            }
        }
    }
}

/// Iterator over a map's entries as [`Ref`]s, from [`EpochMap::iter`](crate::EpochMap::iter).
///
/// It holds one epoch guard for the whole walk (each yielded `Ref` adds a cheap nested one), so a
/// long iteration delays memory reclamation until it is dropped. See the module docs for what it
/// sees of concurrent writes.
pub struct Iter<'a, K, V> {
    raw: RawIter<'a, K, V>,
    guard: Guard,
}

impl<'a, K, V> Iter<'a, K, V> {
    pub(crate) fn new(shards: &'a [Padded<Shard<K, V>>]) -> Self {
        Iter {
            raw: RawIter::new(shards),
            guard: epoch::pin(),
        }
    }
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = Ref<'a, K, V>;

    fn next(&mut self) -> Option<Ref<'a, K, V>> {
        // SAFETY: the iterator always passes its own guard, which stays pinned while it lives.
        let entry = unsafe { self.raw.next(&self.guard) }?;
        // SAFETY: the nested pin happens while `self.guard` is pinned, so the entry (loaded under
        // it) stays alive for as long as the new guard does.
        Some(unsafe { Ref::new(epoch::pin(), entry) })
    }
}

impl<K, V> FusedIterator for Iter<'_, K, V> {}

impl<K, V> std::fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

/// Iterator over a map's keys, from [`EpochMap::keys`](crate::EpochMap::keys).
#[derive(Debug)]
pub struct Keys<'a, K, V>(pub(crate) Iter<'a, K, V>);

impl<'a, K, V> Iterator for Keys<'a, K, V> {
    type Item = KeyRef<'a, K, V>;

    fn next(&mut self) -> Option<KeyRef<'a, K, V>> {
        self.0.next().map(KeyRef)
    }
}

impl<K, V> FusedIterator for Keys<'_, K, V> {}

/// Iterator over a map's values (as [`Ref`]s), from [`EpochMap::values`](crate::EpochMap::values).
#[derive(Debug)]
pub struct Values<'a, K, V>(pub(crate) Iter<'a, K, V>);

impl<'a, K, V> Iterator for Values<'a, K, V> {
    type Item = Ref<'a, K, V>;

    fn next(&mut self) -> Option<Ref<'a, K, V>> {
        self.0.next()
    }
}

impl<K, V> FusedIterator for Values<'_, K, V> {}

/// Iterator over `(&K, &V)` under a [`Pinned`](crate::Pinned) guard, from
/// [`Pinned::iter`](crate::Pinned::iter).
pub struct PinnedIter<'p, K, V> {
    pub(crate) raw: RawIter<'p, K, V>,
    pub(crate) guard: &'p Guard,
}

impl<'p, K, V> Iterator for PinnedIter<'p, K, V> {
    type Item = (&'p K, &'p V);

    fn next(&mut self) -> Option<(&'p K, &'p V)> {
        // SAFETY: always the `Pinned`'s guard, which outlives 'p.
        let entry = unsafe { self.raw.next(self.guard) }?;
        Some((&entry.key, &entry.value))
    }
}

impl<K, V> FusedIterator for PinnedIter<'_, K, V> {}

impl<K, V> std::fmt::Debug for PinnedIter<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedIter").finish_non_exhaustive()
    }
}

/// Owning iterator over `(K, V)`, from `IntoIterator for EpochMap`.
pub struct IntoIter<K, V, S> {
    pub(crate) map: crate::EpochMap<K, V, S>,
    pub(crate) shard: usize,
    pub(crate) cursor: usize,
}

impl<K, V, S> Iterator for IntoIter<K, V, S> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            let shard = self.map.shards.get_mut(self.shard)?;
            if let Some(pair) = shard.take_next(&mut self.cursor) {
                return Some(pair);
            }
            self.shard += 1;
            self.cursor = 0;
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.map.len();
        (len, Some(len))
    }
}

impl<K, V, S> ExactSizeIterator for IntoIter<K, V, S> {}
impl<K, V, S> FusedIterator for IntoIter<K, V, S> {}

impl<K, V, S> std::fmt::Debug for IntoIter<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoIter")
            .field("remaining", &self.map.len())
            .finish()
    }
}
