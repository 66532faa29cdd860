//! [`Ref`] and [`KeyRef`]: handles to one entry that own the epoch guard keeping it alive.
//!
//! A `Ref` holds no lock. Holding one never blocks a writer, so `get` followed by
//! `insert` on the same key from the same thread cannot deadlock (the classic dashmap trap,
//! dashmap#74). What they do hold back is memory reclamation: while any guard is pinned, nothing
//! retired after it was pinned can be freed. Keep them short-lived, and never across an `.await`
//! (they are `!Send` for that reason; use [`EpochMap::get_cloned`](crate::EpochMap::get_cloned) or
//! [`EpochMap::with`](crate::EpochMap::with) in async code).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use crate::entry::Entry;
use crate::sync::epoch::Guard;

/// A reference to an entry of an [`EpochMap`](crate::EpochMap), returned by `get`, `insert`, `remove` and friends.
///
/// It dereferences to the value, and [`key`](Ref::key) gives the key. The entry it points to is
/// immutable: a later `insert` of the same key publishes a *new* entry, so a `Ref` keeps showing the
/// value it was created with, even after that value was replaced or removed from the map. It owns an
/// epoch guard, which keeps the entry's memory alive and holds no lock; it is not `Send` because a
/// crossbeam guard belongs to the thread that pinned it.
///
/// ```
/// use epochmap::EpochMap;
///
/// let map = EpochMap::new();
/// map.insert("k", 1);
/// let one = map.get("k").unwrap();
/// map.insert("k", 2); // no deadlock: `one` holds no lock
/// assert_eq!(*one, 1); // `one` still reads the entry it found
/// assert_eq!(*map.get("k").unwrap(), 2);
/// ```
pub struct Ref<'a, K, V> {
    _guard: Guard,
    entry: NonNull<Entry<K, V>>,
    _map: PhantomData<&'a Entry<K, V>>,
}

impl<'a, K, V> Ref<'a, K, V> {
    /// # Safety
    /// `entry` is a live entry of a map borrowed for `'a`, loaded while `guard` (or an enclosing
    /// guard of the same thread) was pinned, so it stays alive at least as long as `guard`.
    pub(crate) unsafe fn new(guard: Guard, entry: &Entry<K, V>) -> Self {
        Ref {
            _guard: guard,
            entry: NonNull::from(entry),
            _map: PhantomData,
        }
    }

    fn entry(&self) -> &Entry<K, V> {
        // SAFETY: `new`'s contract: the entry outlives the guard this `Ref` owns.
        unsafe { self.entry.as_ref() }
    }

    /// The entry's key.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(7, "seven");
    /// assert_eq!(*map.get(&7).unwrap().key(), 7);
    /// ```
    pub fn key(&self) -> &K {
        &self.entry().key
    }

    /// The entry's value (also reachable through `Deref`).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(7, "seven");
    /// assert_eq!(*map.get(&7).unwrap().value(), "seven");
    /// ```
    pub fn value(&self) -> &V {
        &self.entry().value
    }

    /// Key and value together.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(7, "seven");
    /// assert_eq!(map.get(&7).unwrap().pair(), (&7, &"seven"));
    /// ```
    pub fn pair(&self) -> (&K, &V) {
        let entry = self.entry();
        (&entry.key, &entry.value)
    }
}

impl<K, V> Deref for Ref<'_, K, V> {
    type Target = V;

    fn deref(&self) -> &V {
        self.value()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for Ref<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ref")
            .field("key", self.key())
            .field("value", self.value())
            .finish()
    }
}

/// A reference to a key, yielded by [`EpochMap::keys`](crate::EpochMap::keys); like [`Ref`] but dereferences to the key.
///
/// ```
/// let map: epochmap::EpochMap<u32, ()> = [(1, ())].into_iter().collect();
/// let keys: Vec<u32> = map.keys().map(|k| *k).collect();
/// assert_eq!(keys, [1]);
/// ```
pub struct KeyRef<'a, K, V>(pub(crate) Ref<'a, K, V>);

impl<'a, K, V> KeyRef<'a, K, V> {
    /// The whole entry this key belongs to.
    ///
    /// ```
    /// let map: epochmap::EpochMap<u32, &str> = [(1, "one")].into_iter().collect();
    /// let key = map.keys().next().unwrap();
    /// assert_eq!(*key.into_ref(), "one");
    /// ```
    pub fn into_ref(self) -> Ref<'a, K, V> {
        self.0
    }
}

impl<K, V> Deref for KeyRef<'_, K, V> {
    type Target = K;

    fn deref(&self) -> &K {
        self.0.key()
    }
}

impl<K: fmt::Debug, V> fmt::Debug for KeyRef<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyRef").field(self.0.key()).finish()
    }
}
