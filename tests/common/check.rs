//! Whole-map consistency checks against a `std::collections::HashMap` model.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hash};

use epochmap::EpochMap;

/// Panics unless `map` holds exactly the entries of `model`, checked every way the map can be
/// read: `len`/`is_empty`, `get` and `contains_key` of every model key, `iter` (each key once,
/// with its value), `keys`, `values`, and a `Pinned` walk.
#[track_caller]
pub fn assert_matches_model<K, V, S>(map: &EpochMap<K, V, S>, model: &HashMap<K, V>, context: &str)
where
    K: Hash + Eq + Clone + Debug,
    V: PartialEq + Clone + Debug,
    S: BuildHasher,
{
    assert_eq!(map.len(), model.len(), "len, {context}");
    assert_eq!(map.is_empty(), model.is_empty(), "is_empty, {context}");
    for (k, v) in model {
        assert_eq!(map.get(k).as_deref(), Some(v), "get({k:?}), {context}");
        assert!(map.contains_key(k), "contains_key({k:?}), {context}");
    }
    let mut seen: HashMap<K, V> = HashMap::with_capacity(model.len());
    for r in map.iter() {
        let previous = seen.insert(r.key().clone(), r.value().clone());
        assert!(
            previous.is_none(),
            "iter yielded {:?} twice, {context}",
            r.key()
        );
    }
    assert_eq!(&seen, model, "iter contents, {context}");
    assert_eq!(map.keys().count(), model.len(), "keys().count(), {context}");
    assert_eq!(
        map.values().count(),
        model.len(),
        "values().count(), {context}"
    );
    let pinned = map.pin();
    assert_eq!(pinned.iter().count(), model.len(), "pinned iter, {context}");
}
