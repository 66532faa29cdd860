//! Standard trait implementations for [`EpochMap`](crate::EpochMap), and [`IntoIter`], the owning iterator of its
//! `IntoIterator`.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::iter::FusedIterator;

use crate::layout::{Layout, Stable};
use crate::Map;

/// An empty map with the default shard count and `S::default()` as its hasher, for any hasher
/// builder that has a default (as std's `HashMap` allows).
impl<K, V, S: BuildHasher + Default, L: Layout<K, V>> Default for Map<K, V, S, L> {
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S, L: Layout<K, V>> fmt::Debug for Map<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.pin().iter()).finish()
    }
}

impl<K, V, S, L: Layout<K, V>> Clone for Map<K, V, S, L>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + 'static,
    S: BuildHasher + Clone,
{
    /// A map with the same settings and a snapshot of the entries (weakly consistent under
    /// concurrent writes, like iteration).
    fn clone(&self) -> Self {
        let clone = Map::from_config(
            self.shard_count(),
            self.len(),
            self.hasher().clone(),
            self.mode,
            self.backpressure,
        )
        .expect("a clone needs no more memory than its source");
        let pinned = self.pin();
        let target = clone.pin();
        for (k, v) in pinned.iter() {
            target.insert(k.clone(), v.clone());
        }
        drop(target);
        clone
    }
}

impl<K, V, S, L: Layout<K, V>> PartialEq for Map<K, V, S, L>
where
    K: Hash + Eq,
    V: PartialEq,
    S: BuildHasher,
{
    /// Same keys with equal values (compared under concurrent writes, the answer is as weak as
    /// iteration).
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let (ours, theirs) = (self.pin(), other.pin());
        ours.iter().all(|(k, v)| theirs.get(k) == Some(v))
    }
}

impl<K: Hash + Eq, V: Eq, S: BuildHasher, L: Layout<K, V>> Eq for Map<K, V, S, L> {}

impl<K, V, S, L: Layout<K, V>> FromIterator<(K, V)> for Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher + Default,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut map = Map::with_capacity_and_hasher(iter.size_hint().0, S::default());
        map.extend(iter);
        map
    }
}

impl<K, V, S, L: Layout<K, V>> Extend<(K, V)> for Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        (&*self).extend(iter);
    }
}

/// Extending through a shared reference: the map is concurrent, so `&EpochMap` can be extended.
impl<K, V, S, L: Layout<K, V>> Extend<(K, V)> for &Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        // One guard for the batch, re-pinned now and then so the tables that growth retires along
        // the way can be freed during a long extend instead of after it.
        let mut guard = crate::sync::epoch::pin();
        for (i, (k, v)) in iter.into_iter().enumerate() {
            self.insert_in(k, v, &guard);
            if i % 1024 == 1023 {
                guard.repin();
            }
        }
    }
}

/// Extending with borrowed pairs of `Copy` keys and values, as std's `HashMap` allows (e.g. from
/// another map's `iter()` of `(&K, &V)`).
impl<'a, K, V, S, L: Layout<K, V>> Extend<(&'a K, &'a V)> for Map<K, V, S, L>
where
    K: Hash + Eq + Copy + Send + 'static,
    V: Copy + Send + 'static,
    S: BuildHasher,
{
    fn extend<I: IntoIterator<Item = (&'a K, &'a V)>>(&mut self, iter: I) {
        (&*self).extend(iter.into_iter().map(|(&k, &v)| (k, v)));
    }
}

impl<K, V, S, L: Layout<K, V>> IntoIterator for Map<K, V, S, L> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V, S, L>;

    fn into_iter(self) -> IntoIter<K, V, S, L> {
        IntoIter {
            map: self,
            shard: 0,
            cursor: 0,
        }
    }
}

impl<'a, K, V, S, L: Layout<K, V>> IntoIterator for &'a Map<K, V, S, L> {
    type Item = crate::Ref<'a, K, V>;
    type IntoIter = crate::Iter<'a, K, V, L>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Owning iterator over `(K, V)`, from `IntoIterator for EpochMap`.
pub struct IntoIter<K, V, S, L: Layout<K, V> = Stable> {
    map: Map<K, V, S, L>,
    shard: usize,
    cursor: usize,
}

impl<K, V, S, L: Layout<K, V>> Iterator for IntoIter<K, V, S, L> {
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

impl<K, V, S, L: Layout<K, V>> ExactSizeIterator for IntoIter<K, V, S, L> {}
impl<K, V, S, L: Layout<K, V>> FusedIterator for IntoIter<K, V, S, L> {}

impl<K, V, S, L: Layout<K, V>> fmt::Debug for IntoIter<K, V, S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntoIter")
            .field("remaining", &self.map.len())
            .finish()
    }
}
