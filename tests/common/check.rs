//! Whole-map consistency checks against a `std::collections::HashMap` model.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash};

use epochmap::{EpochMap, FlatEpochMap};

/// Every way [`assert_matches_model`] reads a map, for both maps (their layout trait is private to
/// the crate, so a helper cannot be generic over `Map<K, V, S, L>` itself).
pub trait ModelView<K, V> {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool;
    fn get_cloned(&self, key: &K) -> Option<V>;
    fn contains_key(&self, key: &K) -> bool;
    /// `iter`'s entries, cloned, in iteration order.
    fn entries(&self) -> Vec<(K, V)>;
    fn keys_count(&self) -> usize;
    fn values_count(&self) -> usize;
    fn pinned_count(&self) -> usize;
}

macro_rules! impl_model_view {
    ($map:ident) => {
        impl<K, V, S> ModelView<K, V> for $map<K, V, S>
        where
            K: Hash + Eq + Clone,
            V: Clone,
            S: BuildHasher,
        {
            fn len(&self) -> usize {
                $map::len(self)
            }
            fn is_empty(&self) -> bool {
                $map::is_empty(self)
            }
            fn get_cloned(&self, key: &K) -> Option<V> {
                self.get(key).map(|r| r.clone())
            }
            fn contains_key(&self, key: &K) -> bool {
                $map::contains_key(self, key)
            }
            fn entries(&self) -> Vec<(K, V)> {
                self.iter()
                    .map(|r| (r.key().clone(), r.value().clone()))
                    .collect()
            }
            fn keys_count(&self) -> usize {
                self.keys().count()
            }
            fn values_count(&self) -> usize {
                self.values().count()
            }
            fn pinned_count(&self) -> usize {
                self.pin().iter().count()
            }
        }
    };
}

impl_model_view!(EpochMap);
impl_model_view!(FlatEpochMap);

/// Panics unless `map` (an `EpochMap` or a `FlatEpochMap`) holds exactly the entries of `model`,
/// checked every way the map can be read: `len`/`is_empty`, `get` and `contains_key` of every
/// model key, `iter` (each key once, with its value), `keys`, `values`, and a `Pinned` walk.
#[track_caller]
pub fn assert_matches_model<K, V>(map: &impl ModelView<K, V>, model: &HashMap<K, V>, context: &str)
where
    K: Hash + Eq + Clone + Debug,
    V: PartialEq + Clone + Debug,
{
    assert_eq!(map.len(), model.len(), "len, {context}");
    assert_eq!(map.is_empty(), model.is_empty(), "is_empty, {context}");
    for (k, v) in model {
        assert_eq!(map.get_cloned(k).as_ref(), Some(v), "get({k:?}), {context}");
        assert!(map.contains_key(k), "contains_key({k:?}), {context}");
    }
    let mut seen: HashMap<K, V> = HashMap::with_capacity(model.len());
    for (k, v) in map.entries() {
        let previous = seen.insert(k.clone(), v);
        assert!(previous.is_none(), "iter yielded {k:?} twice, {context}");
    }
    assert_eq!(&seen, model, "iter contents, {context}");
    assert_eq!(map.keys_count(), model.len(), "keys().count(), {context}");
    assert_eq!(
        map.values_count(),
        model.len(),
        "values().count(), {context}"
    );
    assert_eq!(map.pinned_count(), model.len(), "pinned iter, {context}");
}
