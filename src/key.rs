//! Owned or borrowed keys for the write-like calls, so one implementation serves `compute` and
//! `compute_ref`, `try_insert` and `try_insert_ref`, `get_or_load` and `get_or_load_ref`.
//!
//! The borrowed forms look the key up through `&Q` and call `Q::to_owned` only at the point where
//! they publish an entry (or register a load that will), so a call that finds its key allocates
//! nothing.

use std::borrow::Borrow;
use std::hash::Hash;

/// A key as a write-like call receives it: something to look up with, and to turn into the owned
/// `K` that a new entry holds.
pub(crate) trait KeyArg<K> {
    /// What lookups compare against (`K` itself for an owned key).
    type Q: ?Sized + Hash + Eq;

    /// The key to hash and compare.
    fn get(&self) -> &Self::Q;

    /// The owned key for a new entry. For a borrowed key this is where it is allocated.
    fn into_owned(self) -> K;
}

/// A key the caller gave by value.
pub(crate) struct Owned<K>(pub(crate) K);

impl<K: Hash + Eq> KeyArg<K> for Owned<K> {
    type Q = K;

    #[inline]
    fn get(&self) -> &K {
        &self.0
    }

    #[inline]
    fn into_owned(self) -> K {
        self.0
    }
}

/// A key the caller lent, owned only on insertion.
pub(crate) struct Borrowed<'q, Q: ?Sized>(pub(crate) &'q Q);

impl<K, Q> KeyArg<K> for Borrowed<'_, Q>
where
    K: Borrow<Q>,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
{
    type Q = Q;

    #[inline]
    fn get(&self) -> &Q {
        self.0
    }

    #[inline]
    fn into_owned(self) -> K {
        self.0.to_owned()
    }
}
