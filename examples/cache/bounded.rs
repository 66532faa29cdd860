//! `BoundedCache`: a bounded, concurrent, loading cache built on `EpochMap`.
//!
//! Shared by `examples/cache.rs` (which measures it) and `tests/cache.rs` (which checks it), so
//! both use the same code.
//!
//! Design, and why:
//!
//! * **Misses load through `EpochMap::get_or_load_ref`**, which is single-flight and runs the
//!   loader with no map lock held: concurrent misses on one key wait for the one load instead of
//!   repeating it, a slow loader never blocks writers of other keys in the same shard, and a
//!   loader that panics inserts nothing (the next caller loads again). The borrowed-key form
//!   clones the key only for the caller that loads; hits and waiters allocate nothing.
//! * **Hits take no lock**: `EpochMap::with` runs a closure on the slot under a
//!   short epoch guard, clones the value out and refreshes the stamp (a relaxed store, skipped when
//!   the stamp is already current, so a hot key's cache line is not written on every hit).
//! * **Eviction is batched LRU.** The stamp is a coarse clock that advances once every
//!   `capacity / 64` admissions (so readers rarely see its cache line change). When the cache is
//!   full, one thread samples 1024 stamps, estimates the cut-off below which the oldest tenth of
//!   the capacity lies (`select_nth_unstable` on the sample), and removes the entries at or below
//!   it with `EpochMap::retain`: one O(n) pass per batch of n/10 evictions, about 10 entry visits
//!   per insert amortised, and no per-access bookkeeping beyond the stamp. It is Redis's sampled
//!   LRU turned around: instead of sampling a few candidates per eviction (which needs random
//!   access, which a hash map does not offer cheaply) it samples once per batch and sweeps; and
//!   unlike CLOCK it needs no shared ring of keys. The example measures its hit ratio against an
//!   exact LRU on the same trace.
//! * **The bound is exact.** `occupied` counts entries plus reservations of loads that are
//!   about to insert; the loading caller reserves once its loader has produced a value (evicting
//!   first if the count is at capacity), and `get_or_load` inserts that value: nothing else
//!   inserts into the map, so every reservation becomes exactly one entry. The evictor subtracts
//!   exactly what `retain` removed. So the map never holds more than `capacity` entries.
//!   `invalidate_all` takes the admission lock exclusively; a loading caller takes it shared from
//!   its reservation until `get_or_load` has inserted (never around the load itself), so
//!   invalidation can reset the count while nothing is in flight; its `clear()` is O(shards) and
//!   the old entries are freed in the background.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use crossbeam_utils::CachePadded;
use epochmap::{EpochMap, MemoryStats};

/// How many stamps an eviction round samples to find its cut-off.
const SAMPLE: usize = 1024;

/// One cached value and when it was last used. The map keeps it at a stable address, so the
/// stamp can be an atomic that hits update in place.
struct Slot<V> {
    value: V,
    last_used: AtomicU64,
}

impl<V> Slot<V> {
    fn new(value: V, now: u64) -> Self {
        Slot {
            value,
            last_used: AtomicU64::new(now),
        }
    }

    fn touch(&self, now: u64) {
        // Relaxed: the stamp is an eviction hint; a stale read only makes eviction slightly less
        // exact. The load-before-store keeps hot slots' cache lines shared between readers.
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }
}

/// A counter striped over cache lines so that threads counting hits do not contend.
struct Striped([CachePadded<AtomicU64>; 16]);

impl Striped {
    fn new() -> Self {
        Striped(std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))))
    }

    fn add(&self, n: u64) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % 16);
        // Relaxed: a statistic, summed after the fact.
        STRIPE.with(|&i| self.0[i].fetch_add(n, Ordering::Relaxed));
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Counters describing a cache's behaviour so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found no value (including those that then waited for another thread's load).
    pub misses: u64,
    /// Times a loader actually ran.
    pub loads: u64,
    /// Entries removed to respect the bound.
    pub evictions: u64,
    /// Full invalidations.
    pub invalidations: u64,
}

impl CacheStats {
    /// hits / (hits + misses), or 0 before any lookup.
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// A bounded, concurrent, loading cache with batched-LRU eviction. See the module docs.
pub struct BoundedCache<K, V> {
    map: EpochMap<K, Slot<V>>,
    capacity: usize,
    /// Entries freed per eviction round.
    batch: usize,
    /// Entries in the map plus reservations about to be inserted; never above `capacity`.
    occupied: CachePadded<AtomicUsize>,
    /// The coarse LRU clock, advanced every `tick_every` admissions.
    clock: CachePadded<AtomicU64>,
    admitted: CachePadded<AtomicU64>,
    tick_every: u64,
    /// Shared from a load's reservation until its insertion (and the evictions it triggers),
    /// exclusive for `invalidate_all`.
    admission: RwLock<()>,
    evicting: Mutex<()>,
    hits: Striped,
    misses: Striped,
    loads: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

impl<K, V> BoundedCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `capacity` entries.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a cache needs room for at least one entry");
        BoundedCache {
            map: EpochMap::with_capacity(capacity),
            capacity,
            batch: (capacity / 10).max(1),
            occupied: CachePadded::new(AtomicUsize::new(0)),
            clock: CachePadded::new(AtomicU64::new(0)),
            admitted: CachePadded::new(AtomicU64::new(0)),
            tick_every: (capacity as u64 / 64).max(1),
            admission: RwLock::new(()),
            evicting: Mutex::new(()),
            hits: Striped::new(),
            misses: Striped::new(),
            loads: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        // Relaxed: see `Slot::touch`.
        self.clock.load(Ordering::Relaxed)
    }

    /// The cached value for `key`, without loading. Lock-free.
    pub fn get(&self, key: &K) -> Option<V> {
        let found = self.lookup(key);
        match found {
            Some(_) => self.hits.add(1),
            None => self.misses.add(1),
        }
        found
    }

    fn lookup(&self, key: &K) -> Option<V> {
        let now = self.now();
        self.map.with(key, |slot| {
            slot.touch(now);
            slot.value.clone()
        })
    }

    /// The value for `key`, loading it with `load` on a miss. Under contention for one key the
    /// loader runs once and every caller gets its value; it runs outside any map lock.
    pub fn get_or_load(&self, key: K, load: impl FnOnce(&K) -> V) -> V {
        if let Some(value) = self.lookup(&key) {
            self.hits.add(1);
            return value;
        }
        self.misses.add(1);
        // Held from the reservation until `get_or_load_ref` has inserted the value, so that
        // `invalidate_all` never resets the count between the two.
        let mut admission: Option<RwLockReadGuard<'_, ()>> = None;
        let value = self
            .map
            .get_or_load_ref(&key, || {
                self.loads.fetch_add(1, Ordering::Relaxed);
                // The load itself runs with no lock of ours or the map's held.
                let value = load(&key);
                admission = Some(
                    self.admission
                        .read()
                        .unwrap_or_else(PoisonError::into_inner),
                );
                // The stamp is the admission period; waiting for a load is not another use.
                Slot::new(value, self.reserve())
            })
            .value
            .clone();
        drop(admission);
        value
    }

    /// Takes one unit of occupancy, evicting first while the cache is full; returns the stamp for
    /// the entry about to be admitted (the clock period it is admitted in).
    fn reserve(&self) -> u64 {
        // Relaxed throughout: `occupied` is a single counter whose modification order alone
        // carries the bound (each successful increment saw a value below capacity); it publishes
        // no other data.
        let mut n = self.occupied.load(Ordering::Relaxed);
        loop {
            if n < self.capacity {
                match self.occupied.compare_exchange_weak(
                    n,
                    n + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(current) => n = current,
                }
            } else {
                self.evict();
                n = self.occupied.load(Ordering::Relaxed);
            }
        }
        let now = self.now();
        let admitted = self.admitted.fetch_add(1, Ordering::Relaxed) + 1;
        if admitted % self.tick_every == 0 {
            self.clock.fetch_add(1, Ordering::Relaxed);
        }
        now
    }

    /// One round of batched LRU: brings the entry count down to `capacity - batch`, or waits for
    /// the round another thread is running.
    fn evict(&self) {
        let _evicting = match self.evicting.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // Someone else is evicting; once they are done there is room, or we go again.
                drop(self.evicting.lock().unwrap_or_else(PoisonError::into_inner));
                return;
            }
        };
        let len = self.map.len();
        let target = self.capacity - self.batch;
        if len <= target {
            // The count is made of reservations still on their way into the map: let them land.
            std::thread::yield_now();
            return;
        }
        // Estimate the stamp below which the oldest `len - target` entries lie from a sample of
        // stamps. Entries sit in the table by hash, which says nothing about recency, so the
        // first SAMPLE entries in iteration order are as good a sample as any.
        let mut stamps: Vec<u64> = self
            .map
            .pin()
            .values()
            .take(SAMPLE)
            .map(|slot| slot.last_used.load(Ordering::Relaxed))
            .collect();
        if stamps.is_empty() {
            return;
        }
        let rank = ((len - target) * stamps.len())
            .div_ceil(len)
            .clamp(1, stamps.len());
        let (_, &mut cutoff, _) = stamps.select_nth_unstable(rank - 1);
        // Older than the cut-off: evict. At the cut-off (the clock is coarse, so many entries may
        // share a stamp): evict only the estimated shortfall, so a tie does not empty a tenth of
        // the cache at once. With the whole map in the sample (small caches) this is exact.
        let need = len - target;
        let below = stamps.iter().filter(|&&stamp| stamp < cutoff).count();
        let tie_quota = need.saturating_sub(below * len / stamps.len());
        let (mut removed, mut ties_removed) = (0, 0);
        self.map.retain(|_, slot| {
            // Entries touched since the sample carry a newer stamp and survive.
            let stamp = slot.last_used.load(Ordering::Relaxed);
            let evict = stamp < cutoff || (stamp == cutoff && ties_removed < tie_quota);
            ties_removed += usize::from(evict && stamp == cutoff);
            removed += usize::from(evict);
            !evict
        });
        self.occupied.fetch_sub(removed, Ordering::Relaxed);
        self.evictions.fetch_add(removed as u64, Ordering::Relaxed);
    }

    /// Drops every entry in O(shards); the memory comes back in the background. Loads already
    /// running finish for their callers; later lookups load afresh.
    pub fn invalidate_all(&self) {
        let _exclusive = self
            .admission
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.map.clear();
        // No reservation is in flight (they hold the admission lock shared) and no eviction runs
        // (evictions happen inside reservations), so the map is empty and so is the count.
        self.occupied.store(0, Ordering::Relaxed);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Entries in the cache (weakly consistent under concurrent writes, like `EpochMap::len`).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries plus reservations in flight: an upper bound on `len()` that never exceeds
    /// `capacity()`, and equals `len()` when no miss is in progress.
    pub fn occupancy(&self) -> usize {
        self.occupied.load(Ordering::Relaxed)
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            misses: self.misses.sum(),
            loads: self.loads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }

    /// The underlying map's memory statistics.
    pub fn memory_stats(&self) -> MemoryStats {
        self.map.memory_stats()
    }

    /// Blocks until the memory of invalidated and evicted entries is freed (see
    /// `EpochMap::wait_for_reclamation`).
    pub fn wait_for_reclamation(&self, timeout: std::time::Duration) -> bool {
        self.map.wait_for_reclamation(timeout)
    }
}
