//! Configuring a map: shard count, initial capacity, hasher, reclamation ([`Builder`], from
//! [`EpochMap::builder`]). The limits and defaults it checks against, and its error, are in
//! `config.rs`, below the map.

use std::collections::hash_map::RandomState;

use std::marker::PhantomData;

use crate::config::{default_shards, BuildError, DEFAULT_BACKPRESSURE, MAX_SHARDS};
use crate::inline::Inline;
use crate::layout::{Layout, Stable};
use crate::reclaim::{Backpressure, ReclaimMode};
use crate::{EpochMap, FlatEpochMap, Map};

impl EpochMap<(), (), RandomState> {
    /// A [`Builder`] for shard count, capacity, hasher and reclamation settings.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, u64> = epochmap::EpochMap::builder().shards(8).build();
    /// assert_eq!(map.shard_count(), 8);
    /// ```
    pub fn builder() -> Builder<RandomState> {
        Builder::new()
    }
}

impl FlatEpochMap<(), (), RandomState> {
    /// A [`Builder`] for shard count, capacity, hasher and reclamation settings of a
    /// [`FlatEpochMap`].
    ///
    /// ```
    /// use epochmap::FlatEpochMap;
    ///
    /// let map: FlatEpochMap<u64, u64> = FlatEpochMap::builder().shards(8).build();
    /// assert_eq!(map.shard_count(), 8);
    /// ```
    pub fn builder() -> Builder<RandomState, Inline> {
        Builder::new()
    }
}

/// Builds an [`EpochMap`] with non-default settings; from [`EpochMap::builder`].
///
/// ```
/// use epochmap::{EpochMap, ReclaimMode};
///
/// let map: EpochMap<String, u32> = EpochMap::builder()
///     .shards(16)
///     .capacity(10_000)
///     .reclaim_mode(ReclaimMode::Background)
///     .build();
/// assert_eq!(map.shard_count(), 16);
/// assert!(map.capacity() >= 10_000);
/// ```
///
/// `L` is the layout of the map it builds ([`layouts`](crate::layouts)): `Stable` from
/// [`EpochMap::builder`], `Inline` from [`FlatEpochMap::builder`].
#[derive(Debug)]
pub struct Builder<S = RandomState, L = Stable> {
    shards: Option<usize>,
    capacity: usize,
    hasher: S,
    reclaim_mode: ReclaimMode,
    backpressure: Backpressure,
    layout: PhantomData<fn() -> L>,
}

// By hand: a derive would demand `L: Clone` of a marker type that has no values.
impl<S: Clone, L> Clone for Builder<S, L> {
    fn clone(&self) -> Self {
        Builder {
            shards: self.shards,
            capacity: self.capacity,
            hasher: self.hasher.clone(),
            reclaim_mode: self.reclaim_mode,
            backpressure: self.backpressure,
            layout: PhantomData,
        }
    }
}

impl<L> Builder<RandomState, L> {
    pub(crate) fn new() -> Self {
        Builder {
            shards: None,
            capacity: 0,
            hasher: RandomState::new(),
            reclaim_mode: ReclaimMode::default(),
            backpressure: DEFAULT_BACKPRESSURE,
            layout: PhantomData,
        }
    }
}

impl<S, L> Builder<S, L> {
    /// Number of shards, rounded up to a power of two. Default: four per core, at least 4.
    ///
    /// More shards mean less contention between writers and more fixed memory per map.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::builder().shards(3).build();
    /// assert_eq!(map.shard_count(), 4);
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Entries the map should hold before any shard grows (approximately: keys spread over shards
    /// by hash). Default: 0.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::builder().capacity(1000).build();
    /// assert!(map.capacity() >= 1000);
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The hasher builder. Lookups, shard choice and probe tags all come from its output, so use a
    /// well-mixed hash (the default `RandomState` or foldhash/ahash); a degenerate hasher stays
    /// correct but turns every probe into a scan.
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    ///
    /// let map: epochmap::EpochMap<u8, u8, BuildHasherDefault<DefaultHasher>> =
    ///     epochmap::EpochMap::builder().hasher(BuildHasherDefault::default()).build();
    /// map.insert(1, 2);
    /// assert_eq!(map.get_cloned(&1), Some(2));
    /// ```
    pub fn hasher<S2>(self, hasher: S2) -> Builder<S2, L> {
        Builder {
            shards: self.shards,
            capacity: self.capacity,
            hasher,
            reclaim_mode: self.reclaim_mode,
            backpressure: self.backpressure,
            layout: PhantomData,
        }
    }

    /// Who frees the entries of cleared tables. Default: [`ReclaimMode::Background`].
    ///
    /// ```
    /// use epochmap::{EpochMap, ReclaimMode};
    /// let map: EpochMap<u8, u8> = EpochMap::builder().reclaim_mode(ReclaimMode::Inline).build();
    /// assert!(map.is_empty());
    /// ```
    pub fn reclaim_mode(mut self, mode: ReclaimMode) -> Self {
        self.reclaim_mode = mode;
        self
    }

    /// Pending retired bytes (tables, and entries at `size_of::<(K, V)>()` each) above which the
    /// threads that retire more help the reclaimer: `clear`, `clear_keep_capacity`, `drain`,
    /// and any write that hands a batch of removed entries (or a grown-out-of table) to the epoch
    /// then advance the epoch and run queued reclamation themselves, after releasing their locks,
    /// so a storm of clears cannot pile up garbage without bound. Default:
    /// [`DEFAULT_BACKPRESSURE_BYTES`](crate::DEFAULT_BACKPRESSURE_BYTES) (64 MiB). `usize::MAX`
    /// turns this bound off; 0 makes every clear try to free what it retired before returning.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> =
    ///     epochmap::EpochMap::builder().backpressure_bytes(1 << 20).build();
    /// map.clear();
    /// ```
    pub fn backpressure_bytes(mut self, bytes: usize) -> Self {
        self.backpressure.bytes = bytes;
        self
    }

    /// Removed or replaced entries that may wait for their grace period before the writers that
    /// remove or replace more help free them. This is the bound that keeps a churning map's
    /// memory in check when values own heap memory (a `Vec`, a `String`): `size_of` does not see
    /// it, a count of entries does. Writers check it once per batch of 64 entries they retire, and
    /// help with no lock held: they advance the epoch, run queued reclamation, and yield to
    /// threads whose pins hold the epoch back. Default:
    /// [`DEFAULT_BACKPRESSURE_ENTRIES`](crate::DEFAULT_BACKPRESSURE_ENTRIES).
    /// `usize::MAX` turns it off (the reclaimer thread alone then frees removed entries, and
    /// writers that outrun it pile them up).
    ///
    /// A reader that stays pinned (a long-held `Ref`, `Pinned` or iterator) holds back every
    /// entry retired after it pinned, whatever this bound: writers help for a bounded number of
    /// rounds, then go on. `memory_stats().pending_entries` shows what is waiting.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u64, Vec<u8>> =
    ///     epochmap::EpochMap::builder().backpressure_entries(1024).build();
    /// for i in 0..10_000u64 {
    ///     map.insert(i % 100, vec![0; 512]); // replaces: each retires the old value
    /// }
    /// // Nothing pins across the loop, so writers kept the backlog near the bound.
    /// assert!(map.memory_stats().pending_entries <= 1024 + 64 * map.shard_count());
    /// ```
    pub fn backpressure_entries(mut self, entries: usize) -> Self {
        self.backpressure.entries = entries;
        self
    }

    /// Builds the map, or says which setting is invalid.
    ///
    /// ```
    /// use epochmap::{BuildError, EpochMap};
    /// let err = EpochMap::builder().capacity(usize::MAX).try_build::<u64, u64>().unwrap_err();
    /// assert!(matches!(err, BuildError::CapacityOverflow { .. }));
    /// ```
    pub fn try_build<K, V>(self) -> Result<Map<K, V, S, L>, BuildError>
    where
        L: Layout<K, V>,
    {
        let shards = match self.shards {
            None => default_shards(),
            Some(0) => return Err(BuildError::ZeroShards),
            Some(n) if n > MAX_SHARDS => return Err(BuildError::TooManyShards { requested: n }),
            Some(n) => n.next_power_of_two(),
        };
        Map::from_config(
            shards,
            self.capacity,
            self.hasher,
            self.reclaim_mode,
            self.backpressure,
        )
    }

    /// Builds the map.
    ///
    /// # Panics
    /// If a setting is invalid; the message is [`BuildError`]'s. Use [`try_build`](Builder::try_build)
    /// to handle that as an error.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::builder().shards(1).build();
    /// assert_eq!(map.shard_count(), 1);
    /// ```
    pub fn build<K, V>(self) -> Map<K, V, S, L>
    where
        L: Layout<K, V>,
    {
        match self.try_build() {
            Ok(map) => map,
            Err(err) => panic!("epochmap: invalid configuration: {err}"),
        }
    }
}
