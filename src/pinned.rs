//! [`Pinned`]: one epoch guard held across many operations, returning plain references.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::iter::PinnedIter;
use crate::layout::{Layout, Stable};
use crate::sync::epoch::{self, Guard};
use crate::Map;

/// One epoch guard for many operations on a map: the fast path for batches.
///
/// Returned by [`EpochMap::pin`](Map::pin). Its methods return plain `&V`/`&K` that live as long as the
/// `Pinned`, with no per-call pinning. Like [`Ref`](crate::Ref) it holds no lock (writers are never blocked by
/// it) but keeps memory retired after it was created from being freed until it is dropped, so pin
/// per batch, not per program.
///
/// ```
/// use epochmap::EpochMap;
///
/// let map: EpochMap<u64, u64> = (0..100).map(|i| (i, i * i)).collect();
/// let pinned = map.pin();
/// let sum: u64 = (0..100).filter_map(|i| pinned.get(&i)).sum();
/// assert_eq!(sum, (0..100).map(|i| i * i).sum());
/// ```
pub struct Pinned<'a, K, V, S, L: Layout<K, V> = Stable> {
    pub(crate) map: &'a Map<K, V, S, L>,
    pub(crate) guard: Guard,
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L> {
    /// Pins one epoch guard for a batch of operations; see [`Pinned`].
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let pinned = map.pin();
    /// pinned.insert(1, "a");
    /// assert_eq!(pinned.get(&1), Some(&"a"));
    /// ```
    pub fn pin(&self) -> Pinned<'_, K, V, S, L> {
        Pinned {
            map: self,
            guard: epoch::pin(),
        }
    }
}

impl<K, V, S, L: Layout<K, V>> fmt::Debug for Pinned<'_, K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pinned")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl<K, V, S, L: Layout<K, V>> Pinned<'_, K, V, S, L> {
    /// Number of entries (see [`EpochMap::len`](Map::len)).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = [(1, 1)].into_iter().collect();
    /// assert_eq!(map.pin().len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if the map is empty (see [`EpochMap::is_empty`](Map::is_empty)).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = epochmap::EpochMap::new();
    /// assert!(map.pin().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Iterates over `(&K, &V)` under this guard; weakly consistent like [`EpochMap::iter`](Map::iter).
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = [(1, 10), (2, 20)].into_iter().collect();
    /// let pinned = map.pin();
    /// let total: u32 = pinned.iter().map(|(_, v)| u32::from(*v)).sum();
    /// assert_eq!(total, 30);
    /// ```
    pub fn iter(&self) -> PinnedIter<'_, K, V, L> {
        PinnedIter {
            raw: self.map.raw_iter(),
            guard: &self.guard,
        }
    }

    /// Iterates over the keys under this guard.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = [(1, 10)].into_iter().collect();
    /// assert_eq!(map.pin().keys().copied().collect::<Vec<_>>(), [1]);
    /// ```
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Iterates over the values under this guard.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u8, u8> = [(1, 10)].into_iter().collect();
    /// assert_eq!(map.pin().values().copied().collect::<Vec<_>>(), [10]);
    /// ```
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }
}

impl<K, V, S, L: Layout<K, V>> Pinned<'_, K, V, S, L>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// The value for `key`, valid as long as this `Pinned`. Lock-free, no per-call pin.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert("a".to_string(), 1);
    /// assert_eq!(map.pin().get("a"), Some(&1));
    /// ```
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.find(key, &self.guard).map(|e| &e.value)
    }

    /// Key and value for `key`.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, "a");
    /// assert_eq!(map.pin().get_key_value(&1), Some((&1, &"a")));
    /// ```
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.find(key, &self.guard).map(|e| (&e.key, &e.value))
    }

    /// True if `key` is present.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1, ());
    /// assert!(map.pin().contains_key(&1));
    /// ```
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.find(key, &self.guard).is_some()
    }
}

impl<K, V, S, L: Layout<K, V>> Pinned<'_, K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    /// Inserts `key → value`; returns the previous value, readable while this `Pinned` lives.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.insert(1, "a"), None);
    /// assert_eq!(pinned.insert(1, "b"), Some(&"a"));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<&V> {
        self.map
            .insert_in(key, value, &self.guard)
            .map(|e| &e.value)
    }

    /// Removes `key`; returns its value, readable while this `Pinned` lives.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let pinned = map.pin();
    /// pinned.insert(1, "a");
    /// assert_eq!(pinned.remove(&1), Some(&"a"));
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .remove_if_in(key, &self.guard, |_, _| true)
            .map(|e| &e.value)
    }

    /// The value for `key`, inserting `make()` first if absent (see
    /// [`EpochMap::get_or_insert_with`](Map::get_or_insert_with)).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let pinned = map.pin();
    /// assert_eq!(pinned.get_or_insert_with(1, || 10), &10);
    /// ```
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> &V {
        &self.map.get_or_insert_with_in(key, make, &self.guard).value
    }
}
