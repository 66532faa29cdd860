//! [`EpochMap`], the public face: construction, lock-free reads, per-shard writes, clear and memory.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::config::{default_shards, BuildError, DEFAULT_BACKPRESSURE};
use crate::drain::Drain;
use crate::entry::Entry;
use crate::inline::Inline;
use crate::iter::{Iter, Keys, RawIter, Values};
use crate::layout::{Layout, Stable};
use crate::reclaim::{self, Backpressure, ReclaimMode};
use crate::refs::Ref;
use crate::reserve::{per_shard_share, TryReserveError};
use crate::shard::{Ctx, Shard};
use crate::stats::{self, sum, Counters, MemoryStats};
use crate::sync::{epoch, Arc};
use crate::table::Table;

/// The one implementation behind [`EpochMap`] and [`FlatEpochMap`]: a concurrent hash map with
/// lock-free reads, O(1) `clear` and memory that comes back, generic over how its tables store
/// their entries (the [`layouts`](crate::layouts)).
///
/// Use it through the two aliases, which fix the layout; every method documented here is
/// theirs, and the two differ only where [`FlatEpochMap`] says so.
///
/// ```
/// use epochmap::{EpochMap, FlatEpochMap};
///
/// let stable: EpochMap<u64, String> = EpochMap::new();
/// let flat: FlatEpochMap<u64, String> = FlatEpochMap::new();
/// stable.insert(1, "one".to_string());
/// flat.insert(1, "one".to_string());
/// assert_eq!(*stable.get(&1).unwrap(), *flat.get(&1).unwrap());
/// ```
pub struct Map<K, V, S = RandomState, L: Layout<K, V> = Stable> {
    pub(crate) shards: Box<[CachePadded<Shard<K, V, L>>]>,
    /// `(hash >> 48) & shard_mask` is the shard index: the shard count (at most 2^16) minus one.
    shard_mask: usize,
    hasher: S,
    counters: Arc<Counters>,
    pub(crate) mode: ReclaimMode,
    pub(crate) backpressure: Backpressure,
}

/// A concurrent hash map with lock-free reads, O(1) `clear`, and memory that comes back.
///
/// Keys are spread over shards by the top bits of their hash. Each shard holds an epoch-protected
/// pointer to a table of cache-line buckets and a writer lock. Reads pin a crossbeam-epoch guard,
/// load the table and probe: no lock, no write to shared map memory. Writers are serialised per
/// shard. Replaced and removed entries, grown-out-of tables and cleared tables are retired through
/// the epoch and freed only after every reader that could see them has unpinned.
///
/// See the [crate documentation](crate) for the guide: when to use `get` or `pin`, what `clear`
/// does with memory, and the cost model.
///
/// ```
/// use epochmap::EpochMap;
/// use std::sync::Arc;
///
/// let map = Arc::new(EpochMap::new());
/// let writers: Vec<_> = (0..4u64)
///     .map(|t| {
///         let map = Arc::clone(&map);
///         std::thread::spawn(move || {
///             for i in 0..1000 {
///                 map.insert(t * 1000 + i, i);
///             }
///         })
///     })
///     .collect();
/// for w in writers {
///     w.join().unwrap();
/// }
/// assert_eq!(map.len(), 4000);
/// assert_eq!(*map.get(&2500).unwrap(), 500);
/// ```
pub type EpochMap<K, V, S = RandomState> = Map<K, V, S, Stable>;

/// A concurrent hash map like [`EpochMap`] with each entry stored inline in its table: a read
/// touches one cache line fewer, and a write allocates nothing. Every promise of `EpochMap`
/// holds except one: **a value's address**.
///
/// **Values are snapshots.** An entry is copied, by `Clone`, whenever its table is rebuilt
/// (growth, shrink, [`reserve`](Map::reserve), [`shrink_to_fit`](Map::shrink_to_fit), and an
/// insert or replace that finds the table full of entries removed but still in their grace
/// period). A [`Ref`] or `&V` keeps reading the copy it found, which stays valid until it is
/// dropped; the map goes on with the new copy. So an update made through `&V` (an atomic or a
/// cell inside `V`) can be lost when the value moves. For values that must stay put, use
/// [`EpochMap`], or store `Arc<V>` here (cloning an `Arc` shares the value).
///
/// **Where `Clone` runs:** on the writing thread, under the lock of the shard being rebuilt,
/// like the map's `Hash` during growth. If a `Clone` panics, the rebuild is abandoned and the
/// map is as it was; the copies already made are dropped later by the reclaimer, never under
/// the lock. Copies the map no longer uses are dropped after their grace period, like removed
/// values.
///
/// A removed or replaced entry keeps its slot until every reader that could see it has
/// unpinned; those slots count against the table's capacity until then.
///
/// ```
/// use epochmap::FlatEpochMap;
/// use std::sync::Arc;
///
/// let map = Arc::new(FlatEpochMap::new());
/// let writers: Vec<_> = (0..4u64)
///     .map(|t| {
///         let map = Arc::clone(&map);
///         std::thread::spawn(move || {
///             for i in 0..1000 {
///                 map.insert(t * 1000 + i, i.to_string());
///             }
///         })
///     })
///     .collect();
/// for w in writers {
///     w.join().unwrap();
/// }
/// assert_eq!(map.len(), 4000);
/// assert_eq!(*map.get(&2500).unwrap(), "500");
/// ```
pub type FlatEpochMap<K, V, S = RandomState> = Map<K, V, S, Inline>;

// SAFETY: the map owns its entries (K, V) and its hasher; moving it to another thread moves them,
// which needs exactly `K: Send, V: Send, S: Send`.
unsafe impl<K: Send, V: Send, S: Send, L: Layout<K, V>> Send for Map<K, V, S, L> {}

// SAFETY: through `&Map`, other threads read `&K`/`&V` (needs `Sync`), insert keys and values
// that are later dropped on whichever thread reclaims them (needs `Send`), and use the hasher
// concurrently (needs `S: Sync`). The shards' internal mutability is atomics and a mutex.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync, L: Layout<K, V>> Sync for Map<K, V, S, L> {}

impl<K, V, L: Layout<K, V>> Map<K, V, RandomState, L> {
    /// An empty map with the default shard count and hasher. Allocates one minimal table per shard.
    ///
    /// ```
    /// let map: epochmap::EpochMap<String, u32> = epochmap::EpochMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::with_capacity_and_hasher(0, RandomState::new())
    }

    /// An empty map sized to hold about `capacity` entries before any shard grows.
    ///
    /// # Panics
    /// If `capacity` is too large for the address space (use the builder's `try_build` to get an
    /// error instead).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, u64> = epochmap::EpochMap::with_capacity(1000);
    /// assert!(map.capacity() >= 1000);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L> {
    /// An empty map using `hasher`.
    ///
    /// ```
    /// use std::collections::hash_map::RandomState;
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::with_hasher(RandomState::new());
    /// assert!(map.is_empty());
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// An empty map using `hasher`, sized to hold about `capacity` entries before any shard grows.
    ///
    /// # Panics
    /// If `capacity` is too large for the address space.
    ///
    /// ```
    /// use std::collections::hash_map::RandomState;
    /// let map: epochmap::EpochMap<u8, u8> =
    ///     epochmap::EpochMap::with_capacity_and_hasher(64, RandomState::new());
    /// assert!(map.capacity() >= 64);
    /// ```
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        match Self::from_config(
            default_shards(),
            capacity,
            hasher,
            ReclaimMode::default(),
            DEFAULT_BACKPRESSURE,
        ) {
            Ok(map) => map,
            Err(err) => panic!("epochmap: {err}"),
        }
    }

    pub(crate) fn from_config(
        shards: usize,
        capacity: usize,
        hasher: S,
        mode: ReclaimMode,
        backpressure: Backpressure,
    ) -> Result<Self, BuildError> {
        debug_assert!(shards.is_power_of_two() && shards <= crate::MAX_SHARDS);
        let overflow = BuildError::CapacityOverflow {
            requested: capacity,
        };
        let buckets = per_shard_share(capacity, shards)
            .and_then(Table::<K, V, L>::buckets_for)
            .ok_or(overflow.clone())?;
        let total = Table::<K, V, L>::bytes_for(buckets)
            .and_then(|b| b.checked_mul(shards))
            .ok_or(overflow.clone())?;
        if total > isize::MAX as usize {
            return Err(overflow);
        }
        let counters = Arc::new(Counters::default());
        let mut built = Vec::with_capacity(shards);
        for _ in 0..shards {
            match Shard::try_new(buckets, &counters) {
                Some(shard) => built.push(CachePadded::new(shard)),
                None => {
                    // Free what was built: shards own their tables only through a map's `Drop`.
                    for shard in &mut built {
                        shard.free_all(&counters);
                    }
                    return Err(BuildError::AllocationFailed { bytes: total });
                }
            }
        }
        let shards: Box<[_]> = built.into_boxed_slice();
        Ok(Map {
            shard_mask: shards.len() - 1,
            shards,
            hasher,
            counters,
            mode,
            backpressure,
        })
    }

    /// Number of entries. Exact when no writer is active; under concurrent writes, a sum of
    /// per-shard counts read one after another, so it can count an entry removed from one shard
    /// and another inserted into a later one both, though the map never held them together.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, 1);
    /// assert_eq!(map.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// True if the map holds no entries (with the same caveat as [`len`](EpochMap::len)).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::new();
    /// assert!(map.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.len() == 0)
    }

    /// Entries the current tables hold before some shard has to grow, summed over shards. Keys
    /// spread by hash, so one shard may grow a little before the map reaches this number.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::with_capacity(100);
    /// assert!(map.capacity() >= 100);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.bucket_count() * crate::bucket::SLOTS * 3 / 4)
            .sum()
    }

    /// Number of shards (a power of two).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::builder().shards(2).build();
    /// assert_eq!(map.shard_count(), 2);
    /// ```
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The map's hasher builder.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::new();
    /// let _hasher: &std::collections::hash_map::RandomState = map.hasher();
    /// ```
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// Where the map's memory is right now: live tables and entries, and bytes retired but not
    /// yet freed. Cheap: reads counters, never walks a table.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, u64> = (0..1000).map(|i| (i, i)).collect();
    /// let stats = map.memory_stats();
    /// assert_eq!(stats.len, 1000);
    /// assert!(stats.table_bytes > 0);
    /// ```
    pub fn memory_stats(&self) -> MemoryStats {
        // Every counter is read through `stats::bytes` and every sum saturates: each figure is
        // sane at every instant, even though the counters are read at slightly different moments
        // while other threads write (see the `stats` module docs).
        let c = &self.counters;
        let len = self.len();
        let batched = sum(self.shards.iter().map(|s| s.garbage_len()));
        let table_bytes = Counters::bytes_of(&c.table_bytes);
        let entry_bytes = len.saturating_mul(L::ENTRY_BYTES_OUTSIDE);
        let slab_bytes = sum(self.shards.iter().map(|s| stats::bytes(s.slab_bytes())));
        let pending_bytes = Counters::bytes_of(&c.backlog.pending_bytes)
            .saturating_add(batched.saturating_mul(Entry::<K, V>::BYTES));
        let retired_tables = Counters::bytes_of(&c.backlog.retired_table_bytes);
        // Tables and entries live `Drain`s took out of the map (see `drain.rs`).
        let (drain_bytes, drain_tables) = c.drain_bytes();
        // Pooled entries (live, retired, held by a `Drain` or freed) are inside the slab's chunks;
        // unpooled ones are an allocation each, live, pending or held by a `Drain`.
        // `saturating_sub`: a part read a moment after its whole may exceed it.
        // Inline entries, live or retired, are inside the tables' bytes, but for retired ones
        // moved out of their slots to wait for the reclaimer's drop.
        let entries_held = if L::INLINE {
            Counters::bytes_of(&c.backlog.unslotted_bytes)
        } else if crate::slab::EntrySlab::<K, V>::POOLED {
            slab_bytes
        } else {
            sum([
                entry_bytes,
                pending_bytes.saturating_sub(retired_tables),
                drain_bytes.saturating_sub(drain_tables),
            ])
        };
        MemoryStats {
            len,
            buckets: sum(self.shards.iter().map(|s| s.bucket_count())),
            table_bytes,
            entry_bytes,
            slab_bytes,
            pending_bytes,
            pending_entries: Counters::bytes_of(&c.backlog.pending_entries).saturating_add(batched),
            drain_bytes,
            allocated_bytes: sum([
                table_bytes,
                retired_tables,
                drain_tables,
                entries_held,
                self.structure_bytes(),
            ]),
            tables_retired: Counters::get(&c.tables_retired),
            tables_reclaimed: Counters::get(&c.reclaimed.tables_reclaimed),
            buckets_scanned: Counters::get(&c.reclaimed.buckets_scanned),
            buckets_skipped: Counters::get(&c.reclaimed.buckets_skipped),
            entries_reclaimed: Counters::get(&c.reclaimed.entries_reclaimed),
            drop_panics: Counters::get(&c.reclaimed.drop_panics),
        }
    }

    /// Bytes of the map's fixed structure: the shard array, each shard's slab record (an `Arc`),
    /// and the counters (an `Arc`), for `allocated_bytes`.
    fn structure_bytes(&self) -> usize {
        // An `Arc`'s allocation: the two reference counts, then the value (std's layout).
        fn arc_bytes<T>() -> usize {
            let counts = std::alloc::Layout::new::<[usize; 2]>();
            counts
                .extend(std::alloc::Layout::new::<T>())
                .map_or(0, |(inner, _)| inner.pad_to_align().size())
        }
        self.shards.len()
            * (std::mem::size_of::<CachePadded<Shard<K, V, L>>>()
                + arc_bytes::<crate::slab::EntrySlab<K, V>>())
            + arc_bytes::<Counters>()
    }

    /// An iterator over the entries as [`Ref`]s. Lock-free and weakly consistent: every entry
    /// present for the whole iteration is yielded exactly once; entries inserted or removed
    /// meanwhile may or may not be. It holds an epoch guard while it lives.
    ///
    /// A key whose value is replaced during the iteration: an [`EpochMap`] yields it once, with
    /// its old or its new value; a [`FlatEpochMap`] yields it at least once and may yield it
    /// again with a newer value, because a replace there can publish the new entry in a later
    /// bucket (never an earlier one, so the walk cannot miss the key).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u32, u32> = (0..10).map(|i| (i, i * 2)).collect();
    /// let mut pairs: Vec<(u32, u32)> = map.iter().map(|r| (*r.key(), *r)).collect();
    /// pairs.sort();
    /// assert_eq!(pairs[3], (3, 6));
    /// ```
    pub fn iter(&self) -> Iter<'_, K, V, L> {
        Iter::new(&self.shards)
    }

    /// An iterator over the keys (as [`KeyRef`](crate::KeyRef)s, which dereference to `K`).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u32, ()> = (0..3).map(|i| (i, ())).collect();
    /// let mut keys: Vec<u32> = map.keys().map(|k| *k).collect();
    /// keys.sort();
    /// assert_eq!(keys, [0, 1, 2]);
    /// ```
    pub fn keys(&self) -> Keys<'_, K, V, L> {
        Keys(self.iter())
    }

    /// An iterator over the values (as [`Ref`]s, which dereference to `V`).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u32, u32> = (0..3).map(|i| (i, 10)).collect();
    /// assert_eq!(map.values().map(|v| *v).sum::<u32>(), 30);
    /// ```
    pub fn values(&self) -> Values<'_, K, V, L> {
        Values(self.iter())
    }

    pub(crate) fn raw_iter(&self) -> RawIter<'_, K, V, L> {
        RawIter::new(&self.shards)
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            counters: &self.counters,
            mode: self.mode,
            backpressure: self.backpressure,
            map_id: self.shards.as_ptr() as usize,
            call: crate::reentrancy::ORDINARY,
        }
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn shard(&self, hash: u64) -> &Shard<K, V, L> {
        // The top 16 bits pick the shard: the bucket index uses low bits and the tag bits 40..=46,
        // so no bit does double duty. A fixed shift and a mask keep this to two instructions.
        let index = (hash >> 48) as usize & self.shard_mask;
        // SAFETY: the shard count is a power of two, so `index <= shard_mask` is in bounds.
        unsafe { self.shards.get_unchecked(index) }
    }

    #[inline]
    pub(crate) fn find<'g, Q>(&self, key: &Q, guard: &'g epoch::Guard) -> Option<&'g Entry<K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shard(hash).find(hash, key, guard)
    }

    /// The entry for `key`, if present. Lock-free: it pins an epoch guard and probes; the returned
    /// [`Ref`] owns that guard and holds no lock, so it never blocks writers (a writer that
    /// replaces or removes the entry meanwhile leaves the `Ref` reading the entry it found).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert("apple".to_string(), 3);
    /// assert_eq!(*map.get("apple").unwrap(), 3); // `&str` lookups for `String` keys
    /// assert!(map.get("pear").is_none());
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<Ref<'_, K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        let entry: *const Entry<K, V> = self.find(key, &guard)?;
        // SAFETY: found under `guard`, which the `Ref` takes over.
        Some(unsafe { Ref::new(guard, &*entry) })
    }

    /// A clone of the value for `key`, holding no guard afterwards: the form to use in async code.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, vec![1, 2, 3]);
    /// assert_eq!(map.get_cloned(&1), Some(vec![1, 2, 3]));
    /// ```
    pub fn get_cloned<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.with(key, V::clone)
    }

    /// Runs `f` on the value for `key` under a short-lived guard and returns its result: read a
    /// field without cloning the whole value, and hold nothing afterwards (safe across `.await`).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert("k", vec![1, 2, 3]);
    /// assert_eq!(map.with("k", |v| v.len()), Some(3));
    /// ```
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        self.find(key, &guard).map(|entry| f(&entry.value))
    }

    /// True if `key` is present. Lock-free.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, ());
    /// assert!(map.contains_key(&1));
    /// assert!(!map.contains_key(&2));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        self.find(key, &guard).is_some()
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    pub(crate) fn insert_in<'g>(
        &self,
        key: K,
        value: V,
        guard: &'g epoch::Guard,
    ) -> Option<&'g Entry<K, V>> {
        let hash = self.hash(&key);
        let shard = self.shard(hash);
        // Take the probe's cache misses with a lock-free look-up before locking: the critical
        // section that other writers of this shard wait for then holds no trip to memory (and
        // the entry's slot comes from the shard's slab cache, no `malloc` either).
        let _ = shard.find(hash, &key, guard);
        self.insert_hashed(key, hash, value, guard)
    }

    /// Inserts `key → value`. Returns the previous entry for the key, if any, as a [`Ref`] that
    /// still reads the old value (it is retired, and freed only after the `Ref` and every other
    /// reader that could see it are gone).
    ///
    /// Unlike `std`, a replacing insert publishes a new entry holding the *new* key (entries are
    /// immutable so readers never need a lock); the two keys are equal by `Eq`.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// assert!(map.insert(37, "a").is_none());
    /// let old = map.insert(37, "b").unwrap();
    /// assert_eq!(*old, "a");
    /// assert_eq!(*map.get(&37).unwrap(), "b");
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<Ref<'_, K, V>> {
        let guard = epoch::pin();
        let old: *const Entry<K, V> = self.insert_in(key, value, &guard)?;
        // SAFETY: the old entry was found under `guard` and retired after it was pinned.
        Some(unsafe { Ref::new(guard, &*old) })
    }

    pub(crate) fn remove_if_in<'g, Q>(
        &self,
        key: &Q,
        guard: &'g epoch::Guard,
        condition: impl FnOnce(&K, &V) -> bool,
    ) -> Option<&'g Entry<K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let shard = self.shard(hash);
        // Lock-free miss: no lock for keys that are not there.
        shard.find(hash, key, guard)?;
        let ctx = self.ctx();
        let mut writer = shard.writer(&ctx, guard);
        let at = writer.find(hash, key)?;
        if !condition(&at.entry.key, &at.entry.value) {
            return None;
        }
        writer.remove(hash, at, &|k| self.hash(k));
        Some(at.entry)
    }

    /// Removes `key`, returning its entry as a [`Ref`] (still readable; freed after the grace
    /// period).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, "a");
    /// assert_eq!(*map.remove(&1).unwrap(), "a");
    /// assert!(map.remove(&1).is_none());
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<Ref<'_, K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_if(key, |_, _| true)
    }

    /// Removes `key` if `condition` holds for its current entry, atomically with respect to other
    /// writers. `condition` runs under the shard lock: it must not write to this map (that panics
    /// rather than deadlocks).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert("k", 5);
    /// assert!(map.remove_if("k", |_, v| *v > 10).is_none());
    /// assert_eq!(*map.remove_if("k", |_, v| *v == 5).unwrap(), 5);
    /// ```
    pub fn remove_if<Q>(
        &self,
        key: &Q,
        condition: impl FnOnce(&K, &V) -> bool,
    ) -> Option<Ref<'_, K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        let old: *const Entry<K, V> = self.remove_if_in(key, &guard, condition)?;
        // SAFETY: the entry was found under `guard` and retired after it was pinned.
        Some(unsafe { Ref::new(guard, &*old) })
    }

    pub(crate) fn get_or_insert_with_in<'g>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        guard: &'g epoch::Guard,
    ) -> &'g Entry<K, V> {
        let hash = self.hash(&key);
        let shard = self.shard(hash);
        if let Some(entry) = shard.find(hash, &key, guard) {
            return entry;
        }
        let ctx = self.ctx();
        let mut writer = shard.writer(&ctx, guard);
        if let Some(at) = writer.find(hash, &key) {
            return at.entry;
        }
        let value = make();
        writer.insert(hash, key, value, &|k| self.hash(k))
    }

    /// The entry for `key`, inserting `make()` first if the key is absent.
    ///
    /// Under contention for one key, exactly one value wins: `make` runs at most once per call, and
    /// only in the call that inserts. It runs under the shard lock (so other writers to that shard
    /// wait for it, and it must not write to this map: that panics rather than deadlocks); readers
    /// are never blocked. A panic in `make` inserts nothing.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// assert_eq!(*map.get_or_insert_with("k", || 1), 1);
    /// assert_eq!(*map.get_or_insert_with("k", || unreachable!()), 1);
    /// ```
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> Ref<'_, K, V> {
        let guard = epoch::pin();
        let entry: *const Entry<K, V> = self.get_or_insert_with_in(key, make, &guard);
        // SAFETY: found or published under `guard`.
        unsafe { Ref::new(guard, &*entry) }
    }

    /// Replaces the value for `key` with `f(&current)`, copy-on-write, atomically with respect to
    /// other writers; returns the new entry, or `None` if the key is absent. Readers see the old or
    /// the new value, never a partly updated one. `f` runs under the shard lock.
    ///
    /// The new entry needs its own copy of the key, hence `K: Clone`.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert("hits", 1);
    /// assert_eq!(*map.update("hits", |n| n + 1).unwrap(), 2);
    /// assert!(map.update("misses", |n| n + 1).is_none());
    /// ```
    pub fn update<Q>(&self, key: &Q, f: impl FnOnce(&V) -> V) -> Option<Ref<'_, K, V>>
    where
        K: Borrow<Q> + Clone,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        let new: *const Entry<K, V> = {
            let hash = self.hash(key);
            let shard = self.shard(hash);
            // Lock-free miss, as in `remove_if`: no lock for keys that are not there, and the
            // probe's cache misses are taken before the lock rather than under it.
            shard.find(hash, key, &guard)?;
            let ctx = self.ctx();
            // Declared before the writer, so that if `K::clone` panics the unwinding drops the new
            // value after the writer has released the lock: no user `Drop` under the lock.
            let value;
            let mut writer = shard.writer(&ctx, &guard);
            let at = writer.find(hash, key)?;
            value = f(&at.entry.value);
            let key = at.entry.key.clone();
            writer.replace(at, key, value, &|k| self.hash(k))
        };
        // SAFETY: published under `guard`.
        Some(unsafe { Ref::new(guard, &*new) })
    }

    /// Keeps only the entries for which `keep` returns true, shard by shard. Each shard is locked
    /// while it is filtered (readers are not blocked); `keep` must not write to this map.
    ///
    /// Consistency: each shard is filtered atomically with respect to its writers; the map as a
    /// whole is not (an entry inserted into an already-filtered shard is kept).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
    /// map.retain(|_, v| v % 2 == 0);
    /// assert_eq!(map.len(), 5);
    /// assert!(!map.contains_key(&3));
    /// ```
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let guard = epoch::pin();
        let ctx = self.ctx();
        for shard in self.shards.iter() {
            shard.retain(&ctx, &guard, &|k| self.hash(k), &mut keep);
        }
    }

    /// Removes every entry in O(shards) time for the caller, and gives the memory back.
    ///
    /// Each shard's table is swapped for a fresh minimal one under that shard's lock; the old
    /// tables, with their entries, are retired through the epoch. After the grace period (every
    /// reader that was pinned during the swap has unpinned) the background reclaimer drops the
    /// entries and frees the arrays, skipping buckets whose mark bit says they are empty.
    ///
    /// What a concurrent reader may observe: each shard switches atomically from its old table to
    /// the empty one, and shards switch one after another. A read that *starts* after `clear`
    /// returns never sees an entry the map held before the call. A read that overlaps the call may
    /// see a shard's old entries (the same snapshot it would have seen just before), and a `Ref`
    /// obtained before the clear keeps reading its value. A writer racing with `clear` is ordered
    /// with it per shard: its entry is either cleared or survives whole.
    ///
    /// If more than the builder's `backpressure_bytes` are pending, the caller then helps the
    /// reclaimer before returning, so repeated clears cannot pile up garbage.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map: epochmap::EpochMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
    /// map.clear();
    /// assert!(map.is_empty());
    /// assert!(map.wait_for_reclamation(Duration::from_secs(10)));
    /// assert_eq!(map.memory_stats().pending_bytes, 0);
    /// ```
    pub fn clear(&self) {
        self.clear_shards(false);
    }

    /// Like [`clear`](EpochMap::clear), but the fresh tables keep each shard's current capacity, so
    /// refilling the map to its old size does not regrow it: Go's `clear()` semantics without its
    /// per-entry walk. The caller pays for zeroing the fresh tables (one `memset`-speed pass over
    /// the table memory, about 10 ms at 1M `u64` entries on our machine; no per-entry work: the
    /// old entries are still dropped by the reclaimer).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
    /// let capacity = map.capacity();
    /// map.clear_keep_capacity();
    /// assert!(map.is_empty());
    /// assert_eq!(map.capacity(), capacity);
    /// ```
    pub fn clear_keep_capacity(&self) {
        self.clear_shards(true);
    }

    fn clear_shards(&self, keep_capacity: bool) {
        {
            let guard = epoch::pin();
            let ctx = self.ctx();
            for shard in self.shards.iter() {
                shard.clear(&ctx, &guard, keep_capacity);
            }
            guard.flush();
        }
        // No guard held here, or our own pin would hold the epoch back.
        reclaim::relieve(&self.counters, self.backpressure);
    }

    /// Grows the tables so that about `additional` more entries fit without further growth (spread
    /// over shards by hash, so approximately).
    ///
    /// # Panics
    /// If the new size overflows the address space, or the allocator refuses a table (with the
    /// message of the [`TryReserveError`] that
    /// [`try_reserve`](EpochMap::try_reserve) would return; the process is not aborted).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, u64> = epochmap::EpochMap::new();
    /// map.reserve(10_000);
    /// assert!(map.capacity() >= 10_000);
    /// ```
    pub fn reserve(&self, additional: usize) {
        if let Err(err) = self.try_reserve(additional) {
            panic!("epochmap: reserving {additional} more entries failed: {err}");
        }
    }

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

    /// Shrinks every shard's table to the smallest size that holds its entries, retiring the larger
    /// arrays (their memory comes back after the grace period).
    ///
    /// Removals already shrink a table once it is less than an eighth full, to two to four times
    /// what it holds (not below 8 buckets, nor below the capacity the map was built with); this
    /// trims what is left of that headroom, for a map about to be only read.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
    /// map.retain(|k, _| *k < 10);
    /// let before = map.memory_stats().table_bytes;
    /// map.shrink_to_fit();
    /// assert!(map.memory_stats().table_bytes < before);
    /// assert_eq!(map.len(), 10);
    /// ```
    pub fn shrink_to_fit(&self) {
        let guard = epoch::pin();
        let ctx = self.ctx();
        for shard in self.shards.iter() {
            // A shrink that cannot get its smaller table keeps the current one: nothing to report.
            let _ = shard.fit(&ctx, &guard, &|k| self.hash(k), 0, false, true);
        }
    }

    /// Blocks until everything this map has retired is freed, or `timeout` passes; returns whether
    /// it got there.
    ///
    /// It hands each shard's partial batch of removed entries to the epoch, then repeatedly advances
    /// the epoch and runs queued reclamation on the calling thread. A thread that stays pinned
    /// (a live [`Ref`], [`Pinned`](crate::Pinned), or iterator, on any thread) holds the epoch
    /// back and makes this return `false`, including one held by the caller. A testing and observability tool: correct
    /// programs never need to call it. A `timeout` too long to add to the current
    /// [`Instant`] (such as `Duration::MAX`) means no deadline: it waits until everything is
    /// freed, however long a pinned thread makes that (a pin held by the caller, forever).
    ///
    /// Called from code that runs under a shard lock (of any map: a closure given to `compute`,
    /// `update`, ...), it drops nothing itself, because no `Drop` runs under a shard lock: in
    /// `Background` mode it waits for the reclaimer thread; in `Inline` mode the frees it would
    /// run are put off until this thread releases its last lock, so it returns `false` at its
    /// deadline (and never returns with no deadline).
    ///
    /// When it returns `true`, the `Drop`s of the keys and values it waited for have run, on
    /// whichever thread, and their effects (a drop counter, an `Arc`'s strong count) are visible
    /// to the caller: the reclaimers' accounting publishes them with `Release`, the wait reads it
    /// with `Acquire`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, String::from("x"));
    /// map.remove(&1);
    /// assert!(map.wait_for_reclamation(Duration::from_secs(10)));
    /// assert_eq!(map.memory_stats().pending_bytes, 0);
    /// ```
    pub fn wait_for_reclamation(&self, timeout: Duration) -> bool {
        // `None` (no deadline) when the sum overflows: `Duration::MAX` means "until reclaimed",
        // not a panic.
        let deadline = Instant::now().checked_add(timeout);
        {
            let guard = epoch::pin();
            let ctx = self.ctx();
            for shard in self.shards.iter() {
                shard.retire_pending(&ctx, &guard);
            }
            guard.flush();
        }
        reclaim::drive_until_reclaimed(&self.counters, deadline)
    }
}

impl<K: Send + 'static, V: Send + 'static, S, L: Layout<K, V>> Map<K, V, S, L> {
    /// Takes every entry out of the map and returns them as an owning iterator, in O(shards) time
    /// for the caller and without making writers or readers wait.
    ///
    /// Each shard's table is swapped for a fresh minimal one under that shard's lock, exactly as
    /// [`clear`](EpochMap::clear) does, and the old tables go to the returned [`Drain`] instead of
    /// the reclaimer. Every entry present before the call is handed out exactly once: by the
    /// drain, or by a write that replaced or removed it before the swap reached its shard (that
    /// write returned it). Every entry inserted after the call stays in the map. Shards switch one
    /// after another, so a write racing the call is ordered with it per shard.
    ///
    /// The drain cannot move an entry out while a reader that was pinned at the swap may still
    /// read it, so its first `next` waits for that grace period (see [`Drain`]: a long-held
    /// [`Ref`] makes the drain wait, never the other way round). Removed entries
    /// waiting in a shard's batch are retired as usual: they were removed before, and are not the
    /// drain's. If more than the builder's `backpressure_bytes` are pending afterwards, the caller
    /// helps the reclaimer before returning, as `clear` does.
    ///
    /// # Panics
    /// If called from code that runs under one of this map's shard locks (a closure given to
    /// `compute`, `update`, `retain`, ...): that is a re-entrant write, and it panics before any
    /// shard is touched.
    ///
    /// ```
    /// use epochmap::EpochMap;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// // Per-key counters, exported and reset in one step while other threads keep counting.
    /// let hits: EpochMap<&str, AtomicU64> = EpochMap::new();
    /// hits.get_or_insert_with("/", || AtomicU64::new(0)).fetch_add(1, Ordering::Relaxed);
    /// hits.get_or_insert_with("/", || AtomicU64::new(0)).fetch_add(1, Ordering::Relaxed);
    /// let exported: Vec<(&str, u64)> = hits.drain().map(|(k, v)| (k, v.into_inner())).collect();
    /// assert_eq!(exported, [("/", 2)]);
    /// assert!(hits.is_empty());
    /// ```
    pub fn drain(&self) -> Drain<K, V, L> {
        Drain::take_from(&self.shards, &self.ctx())
    }
}

impl<K, V, S, L: Layout<K, V>> Drop for Map<K, V, S, L> {
    /// Drops every entry still in the map (O(entries), on the dropping thread; call
    /// [`clear`](EpochMap::clear) first to hand that work to the reclaimer). Retired memory still
    /// waiting for its grace period is freed later by the epoch as usual. If a key's or value's
    /// `Drop` panics, the rest are still dropped and the first panic is resumed afterwards.
    fn drop(&mut self) {
        let mut first_panic = None;
        for shard in self.shards.iter_mut() {
            if let Some(payload) = shard.free_all(&self.counters) {
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            if !std::thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }
}
