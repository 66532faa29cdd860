//! Serde integration (feature `serde`): an [`EpochMap`] serializes as a map and deserializes from
//! one, like `std::collections::HashMap`.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use ::serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use ::serde::ser::{Serialize, Serializer};

use crate::EpochMap;

/// Serializes the entries as a map.
///
/// The entries are snapshotted under one epoch guard first, so the map's length written up front
/// is exactly the number of entries that follow, even while other threads write to the map (formats
/// with a length prefix, such as bincode, depend on that). Under concurrent writes the snapshot is
/// weakly consistent, like [`EpochMap::iter`].
///
/// ```
/// let map = epochmap::EpochMap::new();
/// map.insert("answer".to_string(), 42);
/// assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"answer":42}"#);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<K: Serialize, V: Serialize, S> Serialize for EpochMap<K, V, S> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let pinned = self.pin();
        let entries: Vec<(&K, &V)> = pinned.iter().collect();
        serializer.collect_map(entries)
    }
}

/// Deserializes a map; if a key occurs more than once, the last value wins (as for `HashMap`).
///
/// ```
/// use epochmap::EpochMap;
///
/// let map: EpochMap<String, u32> = serde_json::from_str(r#"{"a": 1, "b": 2}"#).unwrap();
/// assert_eq!(map.len(), 2);
/// assert_eq!(*map.get("b").unwrap(), 2);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de, K, V, S> Deserialize<'de> for EpochMap<K, V, S>
where
    K: Deserialize<'de> + Hash + Eq + Send + 'static,
    V: Deserialize<'de> + Send + 'static,
    S: BuildHasher + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Builds an `EpochMap<K, V, S>`; `fn() -> _` keeps the visitor `Send`/`Sync` whatever K, V, S are.
type Makes<K, V, S> = fn() -> EpochMap<K, V, S>;

struct MapVisitor<K, V, S>(PhantomData<Makes<K, V, S>>);

impl<'de, K, V, S> Visitor<'de> for MapVisitor<K, V, S>
where
    K: Deserialize<'de> + Hash + Eq + Send + 'static,
    V: Deserialize<'de> + Send + 'static,
    S: BuildHasher + Default,
{
    type Value = EpochMap<K, V, S>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        // Trust the input's length hint only up to about 1 MiB of entries, as serde's own
        // collections do: a hostile hint must not make us allocate before any entry has arrived.
        let cautious = (1 << 20) / std::mem::size_of::<(K, V)>().max(1);
        let capacity = access.size_hint().unwrap_or(0).min(cautious);
        let map = EpochMap::with_capacity_and_hasher(capacity, S::default());
        while let Some((key, value)) = access.next_entry()? {
            map.insert(key, value);
        }
        Ok(map)
    }
}
