//! Serde integration (feature `serde`): an [`EpochMap`](crate::EpochMap) serializes as a map and deserializes from
//! one, like `std::collections::HashMap`.

use std::collections::hash_map::{Entry, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use ::serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use ::serde::ser::{Serialize, Serializer};

use crate::layout::Layout;
use crate::Map;

/// Serializes the entries as a map.
///
/// The entries are snapshotted under one epoch guard first, so the map's length written up front
/// is exactly the number of entries that follow, even while other threads write to the map (formats
/// with a length prefix, such as bincode, depend on that). Under concurrent writes the snapshot is
/// weakly consistent, like [`EpochMap::iter`](Map::iter), with one more promise: each key is written at most
/// once. (A walk can meet a key twice when a writer removes it behind the walk and re-inserts it
/// ahead, say into a later bucket its home bucket overflowed into; the snapshot keeps the entry
/// met last, the newer one.) That costs a set of the snapshot's keys, hence `K: Hash + Eq`.
///
/// ```
/// let map = epochmap::EpochMap::new();
/// map.insert("answer".to_string(), 42);
/// assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"answer":42}"#);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<K: Serialize + Hash + Eq, V: Serialize, S, L: Layout<K, V>> Serialize for Map<K, V, S, L> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let pinned = self.pin();
        serializer.collect_map(unique_keys(pinned.iter()))
    }
}

/// The entries of `walk`, keeping for each key only the last entry met, in walk order otherwise.
fn unique_keys<'a, K: Hash + Eq, V>(
    walk: impl Iterator<Item = (&'a K, &'a V)>,
) -> Vec<(&'a K, &'a V)> {
    let mut entries: Vec<(&K, &V)> = Vec::new();
    let mut at: HashMap<&K, usize> = HashMap::new();
    for (key, value) in walk {
        match at.entry(key) {
            Entry::Occupied(seen) => entries[*seen.get()] = (key, value),
            Entry::Vacant(new) => {
                new.insert(entries.len());
                entries.push((key, value));
            }
        }
    }
    entries
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
impl<'de, K, V, S, L: Layout<K, V>> Deserialize<'de> for Map<K, V, S, L>
where
    K: Deserialize<'de> + Hash + Eq + Send + 'static,
    V: Deserialize<'de> + Send + 'static,
    S: BuildHasher + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Builds a `Map<K, V, S, L>`; `fn() -> _` keeps the visitor `Send`/`Sync` whatever K, V, S are.
type Makes<K, V, S, L> = fn() -> Map<K, V, S, L>;

struct MapVisitor<K, V, S, L: Layout<K, V>>(PhantomData<Makes<K, V, S, L>>);

impl<'de, K, V, S, L: Layout<K, V>> Visitor<'de> for MapVisitor<K, V, S, L>
where
    K: Deserialize<'de> + Hash + Eq + Send + 'static,
    V: Deserialize<'de> + Send + 'static,
    S: BuildHasher + Default,
{
    type Value = Map<K, V, S, L>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        // Trust the input's length hint only up to about 1 MiB of entries, as serde's own
        // collections do: a hostile hint must not make us allocate before any entry has arrived.
        let cautious = (1 << 20) / std::mem::size_of::<(K, V)>().max(1);
        let capacity = access.size_hint().unwrap_or(0).min(cautious);
        let map = Map::with_capacity_and_hasher(capacity, S::default());
        while let Some((key, value)) = access.next_entry()? {
            map.insert(key, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};

    use super::unique_keys;
    use crate::EpochMap;

    /// Hashes a `u64` key to itself, so the test places keys in buckets.
    #[derive(Clone, Copy, Default)]
    struct Identity;

    #[derive(Default)]
    struct IdentityHasher(u64);

    impl Hasher for IdentityHasher {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, _: &[u8]) {
            unreachable!("only u64 keys")
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }

    impl BuildHasher for Identity {
        type Hasher = IdentityHasher;
        fn build_hasher(&self) -> IdentityHasher {
            IdentityHasher::default()
        }
    }

    /// The walk that used to write a key twice: bucket 0 is full (7 keys homing there), the walk
    /// passes it, then a writer removes key 0, fills its slot with another key of bucket 0 and
    /// re-inserts key 0, which overflows into bucket 1, still ahead of the walk. The raw walk
    /// meets key 0 twice; the snapshot `Serialize` writes keeps it once, with the newer value.
    #[test]
    fn a_key_reinserted_ahead_of_the_walk_is_written_once() {
        let map: EpochMap<u64, &str, Identity> = EpochMap::builder()
            .shards(1)
            .capacity(100)
            .hasher(Identity)
            .build();
        let buckets = map.memory_stats().buckets as u64;
        assert!(buckets >= 2);
        for i in 0..7 {
            map.insert(i * buckets, "old");
        }
        let pinned = map.pin();
        let mut walk = pinned.iter();
        let passed: Vec<(&u64, &&str)> = walk.by_ref().take(7).collect();
        assert!(
            passed.iter().all(|(k, _)| *k % buckets == 0),
            "bucket 0 first"
        );
        map.remove(&0);
        map.insert(7 * buckets, "filler");
        map.insert(0, "new");
        let walked: Vec<(&u64, &&str)> = passed.into_iter().chain(walk).collect();
        let zeros = walked.iter().filter(|(k, _)| **k == 0).count();
        assert_eq!(zeros, 2, "the raw walk meets key 0 twice: {walked:?}");

        let unique = unique_keys(walked.into_iter());
        assert_eq!(unique.iter().filter(|(k, _)| **k == 0).count(), 1);
        assert_eq!(
            unique.iter().find(|(k, _)| **k == 0).map(|(_, v)| **v),
            Some("new")
        );
        assert_eq!(unique.len(), 7);
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json.matches("\"0\":").count(), 1, "{json}");
    }
}
