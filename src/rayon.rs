//! Rayon integration (feature `rayon`): parallel iteration, extension, collection and retain,
//! parallelised over shards.
//!
//! A shard is the natural unit of parallel work: it has its own table and its own writer lock, so
//! one rayon task per shard walks (or filters) it without touching any other.
//!
//! ## Why `par_iter` yields owned clones, not references
//!
//! A reference into the map is valid only while the thread that loaded it stays pinned (that is
//! crossbeam-epoch's guarantee: a guard protects what *its own thread* loads). In a parallel
//! iterator the entries are loaded by rayon worker threads, and items routinely outlive the task
//! that produced them (`collect`, `reduce`, `min_by_key`, `find_any` all hand items to other
//! threads or back to the caller after the workers unpinned). A `(&K, &V)` item could then point at
//! an entry a concurrent `remove` has already freed. [`Ref`](crate::Ref), which owns its guard,
//! cannot be sent between threads at all. So [`EpochMap::par_iter`](Map::par_iter) clones each entry on the
//! worker, under that worker's guard, and yields owned values: sound whatever the consumer does,
//! and cheap for the `Arc`-valued maps caches usually are. To work on borrowed values without
//! cloning, use [`EpochMap::par_retain`](Map::par_retain) (whose closure sees `&K, &V` under the worker's guard) or
//! a serial [`EpochMap::pin`](Map::pin) walk.

use std::hash::{BuildHasher, Hash};

use ::rayon::iter::plumbing::UnindexedConsumer;
use ::rayon::iter::{
    FromParallelIterator, IntoParallelIterator, IntoParallelRefIterator,
    IntoParallelRefMutIterator, ParallelExtend, ParallelIterator,
};
use crossbeam_utils::CachePadded;

use crate::iter::RawIter;
use crate::layout::{Layout, Stable};
use crate::reentrancy::{Held, ParRetainCall};
use crate::shard::{Ctx, Shard};
use crate::sync::epoch::{self, Guard};
use crate::Map;

/// Walks one shard under a guard pinned on the thread that drives it, projecting each entry to an
/// owned item. Created and consumed inside one rayon task (`flat_map_iter` does not send it), so
/// the guard never leaves its thread.
struct ShardWalk<'a, K, V, L: Layout<K, V>, T> {
    raw: RawIter<'a, K, V, L>,
    guard: Guard,
    project: fn(&K, &V) -> T,
}

impl<'a, K, V, T, L: Layout<K, V>> ShardWalk<'a, K, V, L, T>
where
    L::Line: Send + Sync,
{
    fn new(shard: &'a CachePadded<Shard<K, V, L>>, project: fn(&K, &V) -> T) -> Self {
        ShardWalk {
            raw: RawIter::new(std::slice::from_ref(shard)),
            guard: epoch::pin(),
            project,
        }
    }
}

impl<K, V, T, L: Layout<K, V>> Iterator for ShardWalk<'_, K, V, L, T>
where
    L::Line: Send + Sync,
{
    type Item = T;

    fn next(&mut self) -> Option<T> {
        // SAFETY: every call passes this walk's own guard, pinned on this thread when the walk was
        // created and kept until it drops; the entry is used (projected) before `next` returns.
        let entry = unsafe { self.raw.next(&self.guard) }?;
        Some((self.project)(&entry.key, &entry.value))
    }
}

/// Drives one parallel walk over a map's shards.
fn drive_shards<K, V, L: Layout<K, V>, T, C>(
    shards: &[CachePadded<Shard<K, V, L>>],
    project: fn(&K, &V) -> T,
    consumer: C,
) -> C::Result
where
    K: Send + Sync,
    V: Send + Sync,
    L::Line: Send + Sync,
    T: Send,
    C: UnindexedConsumer<T>,
{
    shards
        .par_iter()
        .flat_map_iter(move |shard| ShardWalk::new(shard, project))
        .drive_unindexed(consumer)
}

/// Parallel iterator over clones of a map's entries, from [`EpochMap::par_iter`](Map::par_iter).
///
/// Weakly consistent like [`EpochMap::iter`](Map::iter): an entry present for the whole iteration is yielded
/// exactly once.
///
/// ```
/// use epochmap::{EpochMap, ParIter};
/// use rayon::prelude::*;
///
/// let map: EpochMap<u32, u32> = (0..100).map(|i| (i, i)).collect();
/// let iter: ParIter<'_, u32, u32> = map.par_iter();
/// assert_eq!(iter.filter(|(k, v)| k == v).count(), 100);
/// ```
pub struct ParIter<'a, K, V, L: Layout<K, V> = Stable> {
    shards: &'a [CachePadded<Shard<K, V, L>>],
}

/// Parallel iterator over clones of a map's keys, from [`EpochMap::par_keys`](Map::par_keys).
///
/// ```
/// use epochmap::EpochMap;
/// use rayon::prelude::*;
///
/// let map: EpochMap<u32, ()> = (0..100).map(|i| (i, ())).collect();
/// assert_eq!(map.par_keys().sum::<u32>(), 4950);
/// ```
pub struct ParKeys<'a, K, V, L: Layout<K, V> = Stable> {
    shards: &'a [CachePadded<Shard<K, V, L>>],
}

/// Parallel iterator over clones of a map's values, from [`EpochMap::par_values`](Map::par_values).
///
/// ```
/// use epochmap::EpochMap;
/// use rayon::prelude::*;
///
/// let map: EpochMap<u32, String> = (0..3).map(|i| (i, "ab".repeat(i as usize))).collect();
/// assert_eq!(map.par_values().map(|v| v.len()).sum::<usize>(), 6);
/// ```
pub struct ParValues<'a, K, V, L: Layout<K, V> = Stable> {
    shards: &'a [CachePadded<Shard<K, V, L>>],
}

macro_rules! debug_shard_walk {
    ($($name:ident),*) => {$(
        impl<K, V> std::fmt::Debug for $name<'_, K, V> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("shards", &self.shards.len())
                    .finish()
            }
        }
    )*};
}

debug_shard_walk!(ParIter, ParKeys, ParValues);

impl<K, V, L: Layout<K, V>> ParallelIterator for ParIter<'_, K, V, L>
where
    L::Line: Send + Sync,
    K: Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    type Item = (K, V);

    fn drive_unindexed<C: UnindexedConsumer<(K, V)>>(self, consumer: C) -> C::Result {
        drive_shards(self.shards, |k, v| (k.clone(), v.clone()), consumer)
    }
}

impl<K, V, L: Layout<K, V>> ParallelIterator for ParKeys<'_, K, V, L>
where
    L::Line: Send + Sync,
    K: Clone + Send + Sync,
    V: Send + Sync,
{
    type Item = K;

    fn drive_unindexed<C: UnindexedConsumer<K>>(self, consumer: C) -> C::Result {
        drive_shards(self.shards, |k, _| k.clone(), consumer)
    }
}

impl<K, V, L: Layout<K, V>> ParallelIterator for ParValues<'_, K, V, L>
where
    L::Line: Send + Sync,
    K: Send + Sync,
    V: Clone + Send + Sync,
{
    type Item = V;

    fn drive_unindexed<C: UnindexedConsumer<V>>(self, consumer: C) -> C::Result {
        drive_shards(self.shards, |_, v| v.clone(), consumer)
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    L::Line: Send + Sync,
    K: Send + Sync,
    V: Send + Sync,
{
    /// A parallel iterator over clones of the entries, one rayon task per shard.
    ///
    /// Items are owned `(K, V)` clones rather than references: see the [module
    /// documentation](crate#feature-flags) on why a reference loaded by a worker thread may not
    /// outlive that worker's epoch pin. Wrap large values in `Arc` to make the clone cheap.
    ///
    /// ```
    /// use epochmap::EpochMap;
    /// use rayon::prelude::*;
    ///
    /// let map: EpochMap<u64, u64> = (0..10_000).map(|i| (i, i * 2)).collect();
    /// let sum: u64 = map.par_iter().map(|(_, v)| v).sum();
    /// assert_eq!(sum, map.iter().map(|r| *r).sum());
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_iter(&self) -> ParIter<'_, K, V, L> {
        ParIter {
            shards: &self.shards,
        }
    }

    /// A parallel iterator over clones of the keys, one rayon task per shard.
    ///
    /// ```
    /// use epochmap::EpochMap;
    /// use rayon::prelude::*;
    ///
    /// let map: EpochMap<u64, ()> = (0..1000).map(|i| (i, ())).collect();
    /// let mut keys: Vec<u64> = map.par_keys().collect();
    /// keys.sort_unstable();
    /// assert_eq!(keys, (0..1000).collect::<Vec<_>>());
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_keys(&self) -> ParKeys<'_, K, V, L> {
        ParKeys {
            shards: &self.shards,
        }
    }

    /// A parallel iterator over clones of the values, one rayon task per shard.
    ///
    /// ```
    /// use epochmap::EpochMap;
    /// use rayon::prelude::*;
    ///
    /// let map: EpochMap<u64, u64> = (0..1000).map(|i| (i, i % 7)).collect();
    /// assert_eq!(map.par_values().max(), Some(6));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_values(&self) -> ParValues<'_, K, V, L> {
        ParValues {
            shards: &self.shards,
        }
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    L::Line: Send + Sync,
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Sync,
{
    /// Keeps only the entries for which `keep` returns true, filtering the shards in parallel (one
    /// rayon task per shard).
    ///
    /// The same contract as [`retain`](Map::retain): each shard is filtered under its writer
    /// lock (readers are not blocked), atomically with respect to that shard's writers and weakly
    /// consistent across shards. `keep` runs under the lock, so it must not write to this map (that
    /// panics rather than deadlocks). It may use rayon itself: a worker waiting in a nested `join`
    /// may then run another shard's task of this same call and lock that shard while it holds its
    /// own, which cannot deadlock (each shard is locked by one task of the call) and is allowed
    /// while this is the only `par_retain` running on the map. Two `par_retain` calls on one map
    /// at once whose `keep`s use rayon could each wait for a shard the other holds; that nesting
    /// panics instead (`src/reentrancy.rs` has the full rule).
    ///
    /// What is **not** detected: parallel work that `keep` (or any closure running under a lock:
    /// `compute`, `update`, ...) spawns and that *writes* to this map. Its pieces run on other pool
    /// threads, which do not hold the lock and so wait for it, while the thread that holds it waits
    /// for them in `join`: a deadlock, not a panic. Parallel work inside `keep` may read the map,
    /// never write to it.
    ///
    /// ```
    /// use epochmap::EpochMap;
    ///
    /// let map: EpochMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
    /// map.par_retain(|_, v| v % 3 == 0);
    /// assert_eq!(map.len(), 3334);
    /// assert!(map.contains_key(&9) && !map.contains_key(&10));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
    pub fn par_retain(&self, keep: impl Fn(&K, &V) -> bool + Sync + Send) {
        let map_id = self.ctx().map_id;
        // The tasks lock on other threads, which cannot see that this one holds a lock.
        Held::assert_not_holding(map_id);
        // Registered for the whole call: its tasks may nest on one thread through work stealing
        // (allowed while it is the only `par_retain` on this map; see `src/reentrancy.rs`).
        let call = ParRetainCall::start(map_id);
        self.shards.par_iter().for_each(|shard| {
            let guard = epoch::pin();
            let ctx = Ctx {
                call: call.id,
                ..self.ctx()
            };
            shard.retain(&ctx, &guard, &|k| self.hash(k), &mut |k, v| keep(k, v));
        });
    }
}

/// Owning parallel iterator over a map's entries, from `IntoParallelIterator for EpochMap`.
///
/// The map is consumed, so nothing else can reach it: each shard is drained by one rayon task
/// without any guard or lock. Entries the consumer does not take (it may stop early, as
/// `find_any` does) are dropped with the map.
///
/// ```
/// use epochmap::{EpochMap, IntoParIter};
/// use rayon::prelude::*;
///
/// let map: EpochMap<u32, Vec<u8>> = (0..10).map(|i| (i, vec![0; i as usize])).collect();
/// let iter: IntoParIter<_, _, _> = map.into_par_iter();
/// let mut lens: Vec<usize> = iter.map(|(_, v)| v.len()).collect();
/// lens.sort();
/// assert_eq!(lens, (0..10).collect::<Vec<_>>());
/// ```
#[derive(Debug)]
pub struct IntoParIter<K, V, S, L: Layout<K, V> = Stable> {
    map: Map<K, V, S, L>,
}

impl<K: Send, V: Send, S: Send, L: Layout<K, V>> ParallelIterator for IntoParIter<K, V, S, L>
where
    L::Line: Send + Sync,
{
    type Item = (K, V);

    fn drive_unindexed<C: UnindexedConsumer<(K, V)>>(self, consumer: C) -> C::Result {
        let mut map = self.map;
        // Entries the consumer does not take (it may stop early) stay in their shards and are
        // dropped with `map` when this returns.
        map.shards
            .par_iter_mut()
            .flat_map_iter(|shard| {
                let mut cursor = 0;
                std::iter::from_fn(move || shard.take_next(&mut cursor))
            })
            .drive_unindexed(consumer)
    }
}

/// Consumes the map into a parallel iterator over its `(K, V)` pairs.
///
/// ```
/// use epochmap::EpochMap;
/// use rayon::prelude::*;
///
/// let map: EpochMap<u32, String> = (0..100).map(|i| (i, i.to_string())).collect();
/// let total: usize = map.into_par_iter().map(|(_, s)| s.len()).sum();
/// assert_eq!(total, 10 + 90 * 2);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
impl<K: Send, V: Send, S: Send, L: Layout<K, V>> IntoParallelIterator for Map<K, V, S, L>
where
    L::Line: Send + Sync,
{
    type Item = (K, V);
    type Iter = IntoParIter<K, V, S, L>;

    fn into_par_iter(self) -> IntoParIter<K, V, S, L> {
        IntoParIter { map: self }
    }
}

/// Extends the map in parallel through a shared reference (the map is concurrent).
///
/// ```
/// use epochmap::EpochMap;
/// use rayon::prelude::*;
///
/// let map: EpochMap<u64, u64> = EpochMap::new();
/// (&map).par_extend((0..10_000u64).into_par_iter().map(|i| (i, i)));
/// assert_eq!(map.len(), 10_000);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
impl<K, V, S, L: Layout<K, V>> ParallelExtend<(K, V)> for &Map<K, V, S, L>
where
    L::Line: Send + Sync,
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Sync,
{
    fn par_extend<I>(&mut self, par_iter: I)
    where
        I: IntoParallelIterator<Item = (K, V)>,
    {
        let map: &Map<K, V, S, L> = self;
        // The inserts lock on other threads, which cannot see that this one holds a lock.
        Held::assert_not_holding(map.ctx().map_id);
        // One guard per rayon job, created on the worker that runs the job (`for_each_init` does
        // not send it) and re-pinned every 1024 inserts so tables retired by growth along the way
        // can be freed during a long extend, as the serial `Extend` does.
        par_iter.into_par_iter().for_each_init(
            || (epoch::pin(), 0u32),
            |(guard, inserted), (key, value)| {
                map.insert_in(key, value, guard);
                *inserted = inserted.wrapping_add(1);
                if *inserted % 1024 == 0 {
                    guard.repin();
                }
            },
        );
    }
}

/// Extends the map in parallel.
///
/// ```
/// use epochmap::EpochMap;
/// use rayon::prelude::*;
///
/// let mut map: EpochMap<u64, u64> = EpochMap::new();
/// map.par_extend((0..1000u64).into_par_iter().map(|i| (i, i + 1)));
/// assert_eq!(*map.get(&999).unwrap(), 1000);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
impl<K, V, S, L: Layout<K, V>> ParallelExtend<(K, V)> for Map<K, V, S, L>
where
    L::Line: Send + Sync,
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Sync,
{
    fn par_extend<I>(&mut self, par_iter: I)
    where
        I: IntoParallelIterator<Item = (K, V)>,
    {
        (&*self).par_extend(par_iter);
    }
}

/// Collects a parallel iterator into a map, sized up front when the iterator knows its length.
///
/// ```
/// use epochmap::EpochMap;
/// use rayon::prelude::*;
///
/// let map: EpochMap<u64, u64> = (0..10_000u64).into_par_iter().map(|i| (i, i * i)).collect();
/// assert_eq!(map.len(), 10_000);
/// assert_eq!(*map.get(&100).unwrap(), 10_000);
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "rayon")))]
impl<K, V, S, L: Layout<K, V>> FromParallelIterator<(K, V)> for Map<K, V, S, L>
where
    L::Line: Send + Sync,
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
    S: BuildHasher + Default + Sync,
{
    fn from_par_iter<I>(par_iter: I) -> Self
    where
        I: IntoParallelIterator<Item = (K, V)>,
    {
        let par_iter = par_iter.into_par_iter();
        let mut map = Map::with_capacity_and_hasher(par_iter.opt_len().unwrap_or(0), S::default());
        map.par_extend(par_iter);
        map
    }
}
