//! Hash once: [`EpochMap::hash_key`](Map::hash_key) and the calls that take its result instead of hashing again.
//!
//! A cache often hashes a key for its own purposes first (an admission sketch, a frequency
//! counter); these calls let it hand that hash to the map. The hash goes right after the key it
//! belongs to (`get_with_hash(key, hash)`, `insert_with_hash(key, hash, value)`), with any
//! closure last, as in the other calls.
//!
//! **Wrong hashes.** The table's overflow counts (`src/bucket.rs`) are only correct if removal
//! walks the probe path that insertion raised, and the table stores no hash per entry: growth,
//! `retain` and every other removal re-derive an entry's path from the map's own hasher. So:
//!
//! * Lookups (`get_with_hash`, the lock-free part of the others) trust the hash. A wrong one probes
//!   the wrong shard or buckets and misses (or, by chance, finds the key: the key comparison
//!   decides, so it never returns another key's entry).
//! * A **new entry is always placed by the map's own hash**: `insert_with_hash` and
//!   `get_or_load_with_hash` hash the key themselves when the key is absent. Placing it by a
//!   wrong hash would raise counts on a path no later removal walks down, and lower others.
//! * `remove_with_hash` removes what its lookup found; if that entry sits outside `hash`'s home
//!   bucket it re-derives the path to lower from the map's own hash (see
//!   `ShardWriter::remove_trusting`), so a wrong hash never lowers a count another entry needs.
//!
//! Net effect: a wrong hash can make a read or a removal miss, and can leave probe paths longer
//! than needed until the next rebuild; it never makes a later correct call miss a present key,
//! never duplicates a key, and never breaks memory safety.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use crate::entry::Entry;
use crate::layout::Layout;
use crate::refs::Ref;
use crate::sync::epoch;
use crate::Map;

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// The map's own hash of `key` (`S::hash_one`), to compute once and pass to
    /// [`get_with_hash`](Map::get_with_hash), [`insert_with_hash`](Map::insert_with_hash),
    /// [`remove_with_hash`](Map::remove_with_hash) and
    /// [`get_or_load_with_hash`](Map::get_or_load_with_hash), or to use for something of your
    /// own (a cache's admission sketch). `hash_key(k)` equals `hash_key(k.borrow())`, as `Borrow`
    /// requires.
    ///
    /// In every `_with_hash` call the hash comes right after the key. A wrong hash (not
    /// `hash_key` of that key on this map) gives wrong answers, never undefined behaviour: reads
    /// and removals may miss the key, and probe paths may stay longer than needed until the table
    /// is next rebuilt. New entries are always placed by the map's own hash, so a wrong hash never
    /// makes a *later* call with the right hash miss or duplicate a key.
    ///
    /// ```
    /// let map: epochmap::EpochMap<String, u32> = epochmap::EpochMap::new();
    /// let hash = map.hash_key("apple"); // a `&str` hashes as its `String` does
    /// assert_eq!(hash, map.hash_key(&String::from("apple")));
    /// map.insert_with_hash("apple".to_string(), hash, 3);
    /// assert_eq!(*map.get_with_hash("apple", hash).unwrap(), 3);
    /// assert_eq!(*map.get("apple").unwrap(), 3);
    /// ```
    pub fn hash_key<Q>(&self, key: &Q) -> u64
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        self.hash(key)
    }

    /// [`get`](Map::get) with the key's [`hash_key`](Map::hash_key): lock-free, and
    /// the key is not hashed again. A wrong `hash` finds nothing (or, by chance, the key itself).
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert(1u64, "one");
    /// let hash = map.hash_key(&1);
    /// assert_eq!(*map.get_with_hash(&1, hash).unwrap(), "one");
    /// assert!(map.get_with_hash(&2, map.hash_key(&2)).is_none());
    /// ```
    #[inline]
    pub fn get_with_hash<Q>(&self, key: &Q, hash: u64) -> Option<Ref<'_, K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        let entry: *const Entry<K, V> = self.shard(hash).find(hash, key, &guard)?;
        // SAFETY: found under `guard`, which the `Ref` takes over.
        Some(unsafe { Ref::new(guard, &*entry) })
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    /// [`insert`](Map::insert) with the key's [`hash_key`](Map::hash_key). In an
    /// [`EpochMap`](crate::EpochMap), replacing a present key uses `hash` alone (the new entry
    /// takes the old one's slot); a [`FlatEpochMap`](crate::FlatEpochMap) may publish the new
    /// entry in another slot, so it hashes the key with the map's hasher under the shard lock. A
    /// key that is absent is hashed with the map's hasher before its entry is placed (the table's
    /// probe counts must follow the hash every later removal uses, see
    /// [`hash_key`](Map::hash_key)); so a wrong `hash` costs a hash and still inserts correctly.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let hash = map.hash_key("k");
    /// assert!(map.insert_with_hash("k", hash, 1).is_none());
    /// assert_eq!(*map.insert_with_hash("k", hash, 2).unwrap(), 1); // an EpochMap replaces without hashing
    /// assert_eq!(*map.get("k").unwrap(), 2);
    /// ```
    pub fn insert_with_hash(&self, key: K, hash: u64, value: V) -> Option<Ref<'_, K, V>> {
        let guard = epoch::pin();
        let shard = self.shard(hash);
        let replaced: Result<*const Entry<K, V>, (K, V)> = match shard.find(hash, &key, &guard) {
            None => Err((key, value)),
            Some(_) => {
                let ctx = self.ctx();
                let mut writer = shard.writer(&ctx, &guard);
                match writer.find(hash, &key) {
                    Some(at) => {
                        // Same key, same slot: the tag and probe counts are untouched, so the
                        // caller's hash is only trusted for finding it.
                        writer.replace_trusting(at, key, value, &|k| self.hash(k));
                        Ok(at.entry)
                    }
                    // Removed since the lock-free look-up: insert it as a new key below.
                    None => Err((key, value)),
                }
            }
        };
        let old = match replaced {
            Ok(old) => Some(old),
            Err((key, value)) => {
                let real = self.hash(&key);
                self.insert_hashed(key, real, value, &guard)
                    .map(|old| old as *const Entry<K, V>)
            }
        };
        // SAFETY: the old entry was found under `guard` and retired after it was pinned.
        old.map(|old| unsafe { Ref::new(guard, &*old) })
    }

    /// `insert` with the map's own hash of `key` already computed: the locked part of every
    /// insert-or-replace (`insert_in` adds its lock-free pre-probe in front).
    pub(crate) fn insert_hashed<'g>(
        &self,
        key: K,
        hash: u64,
        value: V,
        guard: &'g epoch::Guard,
    ) -> Option<&'g Entry<K, V>> {
        let ctx = self.ctx();
        let mut writer = self.shard(hash).writer(&ctx, guard);
        match writer.find(hash, &key) {
            Some(at) => {
                writer.replace(at, key, value, &|k| self.hash(k));
                Some(at.entry)
            }
            None => {
                writer.insert(hash, key, value, &|k| self.hash(k));
                None
            }
        }
    }

    /// [`remove`](Map::remove) with the key's [`hash_key`](Map::hash_key). A wrong `hash`
    /// usually misses (the key stays); if its look-up finds the key anyway, the key is removed
    /// and the table's probe counts are lowered along the key's real path, hashing it with the
    /// map's hasher (under the shard lock) only when the entry is not in `hash`'s home bucket.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// map.insert("k", 1);
    /// let hash = map.hash_key("k");
    /// assert_eq!(*map.remove_with_hash("k", hash).unwrap(), 1);
    /// assert!(map.remove_with_hash("k", hash).is_none());
    /// ```
    pub fn remove_with_hash<Q>(&self, key: &Q, hash: u64) -> Option<Ref<'_, K, V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let guard = epoch::pin();
        let old: *const Entry<K, V> = {
            let shard = self.shard(hash);
            // Lock-free miss: no lock for keys that are not there.
            shard.find(hash, key, &guard)?;
            let ctx = self.ctx();
            let mut writer = shard.writer(&ctx, &guard);
            let at = writer.find(hash, key)?;
            writer.remove_trusting(hash, at, &|k| self.hash(k));
            at.entry
        };
        // SAFETY: the entry was found under `guard` and retired after it was pinned.
        Some(unsafe { Ref::new(guard, &*old) })
    }
}
