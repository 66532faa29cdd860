//! `BoundedCache`: a bounded, concurrent, loading cache with sampled-LRU eviction and TTL expiry,
//! built on `EpochMap`'s cache primitives.
//!
//! Shared by `examples/cache.rs`, `examples/cache_async.rs` (which measure it), `tests/cache.rs`
//! and `tests/cache_async.rs` (which check it), so all of them use the same code.
//!
//! Design, and why:
//!
//! * **Misses load through the map's single-flight loads** (`get_or_load_ref`, and
//!   `get_or_load_async` for the async form): concurrent misses on one key wait for one load
//!   instead of repeating it, the loader runs with no map lock held (a slow loader never blocks
//!   writers of other keys in its shard), and a loader that panics, fails or is cancelled inserts
//!   nothing. The borrowed-key form clones the key only in the caller that loads.
//! * **Hits take no lock.** A lookup hashes the key once (`hash_key`) and reads with
//!   `get_with_hash`; it refreshes the entry's stamp with a relaxed store, skipped when the stamp is
//!   already current, so a hot key's cache line is not written on every hit. (A miss hashes again
//!   in `get_or_load_ref`, which takes a borrowed key; it is about to load anyway. A cache with an
//!   admission sketch would hand the same hash to it.)
//! * **Eviction is sampled LRU.** Each entry carries a last-use stamp (an atomic inside the value:
//!   the map never moves entries, so hits can update it in place). The clock is the admission
//!   count: it ticks once per entry admitted, so hits only read it. When the cache is full, the
//!   admitting caller takes `Pinned::sample` of `samples` random entries, picks the expired one or
//!   else the one with the oldest stamp, and removes it with `remove_if` **only if it is still the
//!   same entry with the same stamp** (compared by address, which is sound while the `Pinned` is
//!   held: a sampled entry's memory cannot be reused before the guard drops). One victim per
//!   admission, O(samples) work, no lock of the cache's own.
//! * **TTL expiry is an incremental hand over `Pinned::scan`.** The hand keeps its `ScanCursor`
//!   between calls; each `expire(budget)` visits at most `budget` buckets from there and removes
//!   the expired entries it finds (again by `remove_if` of the same entry). Every admission runs
//!   one such step (`expiry_budget` buckets) when the cache has a TTL, and a housekeeping thread
//!   may call `expire` too. A lookup that finds an expired entry removes it and treats it as a
//!   miss, so an expired value is never returned.
//! * **The bound is exact: the map never holds more than `occupancy() <= capacity()` entries,
//!   at any moment.** `occupied` counts entries plus admissions about to insert. (`len()` is the
//!   map's `len`, exact at rest; read during writes on a cache of several shards it sums the
//!   shards one after another and can overshoot by entries that moved between shards meanwhile.) A loading caller reserves one unit after its
//!   loader produced a value (evicting first while the count is at capacity) and the map inserts
//!   that value right after, in the same call. Each removal (eviction, expiry, `invalidate`, a
//!   replacing `insert`) gives back exactly one unit, after the entry is out of the map; a
//!   reservation whose value lost to a concurrent `insert` of the same key, or whose insert
//!   unwound (a panicking `Hash` or `Eq`), is given back too.
//!   `invalidate_all` uses `EpochMap::drain`, which says exactly how many entries it took (an
//!   `ExactSizeIterator`), so it gives back exactly those and needs no lock against loads in
//!   flight; the drained entries are dropped by the reclaimer in the background.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
// Statistics, the manual clock and the sampling seed are plain std atomics in every build: they
// carry no part of the protocol.
use std::sync::atomic::{AtomicU64 as StatU64, AtomicUsize as StatUsize, Ordering};
use std::sync::{Arc, TryLockError};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use epochmap::{EpochMap, MemoryStats, ReclaimMode, ScanCursor};
// The protocol's atomics, lock and yield: loom's under `--cfg epochmap_loom`, where
// `loom-tests/tests/cache.rs` model-checks this file.
#[cfg(epochmap_loom)]
use loom::{
    sync::atomic::{AtomicU64, AtomicUsize},
    sync::Mutex,
    thread::yield_now,
};
#[cfg(not(epochmap_loom))]
use std::{
    sync::atomic::{AtomicU64, AtomicUsize},
    sync::Mutex,
    thread::yield_now,
};

/// Default number of entries sampled per eviction.
pub const DEFAULT_SAMPLES: usize = 8;
/// Default number of buckets the expiry hand visits per admission when the cache has a TTL.
pub const DEFAULT_EXPIRY_BUDGET: usize = 8;

/// One cached value with its eviction and expiry metadata. The map keeps it at a stable address,
/// so the stamp can be an atomic that hits update in place.
pub struct Slot<V> {
    value: V,
    /// The admission ticket: the clock value this entry was admitted at, unique per admission.
    born: u64,
    /// The clock value at the entry's last use (an eviction hint, see `Slot::touch`).
    last_used: AtomicU64,
    /// When the entry expires, in milliseconds on the cache's clock (`u64::MAX`: never).
    expires_at: u64,
}

impl<V> Slot<V> {
    fn new(value: V, born: u64, expires_at: u64) -> Self {
        Slot {
            value,
            born,
            last_used: AtomicU64::new(born),
            expires_at,
        }
    }

    fn touch(&self, now: u64) {
        // Relaxed: the stamp is an eviction hint and publishes nothing; a stale read only makes
        // eviction slightly less exact. The load before the store keeps a hot slot's cache line
        // shared between readers instead of bouncing it on every hit.
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    fn stamp(&self) -> u64 {
        // Relaxed: see `touch`.
        self.last_used.load(Ordering::Relaxed)
    }
}

/// `get_or_load_async` hands back a clone of the map's value.
impl<V: Clone> Clone for Slot<V> {
    fn clone(&self) -> Self {
        Slot {
            value: self.value.clone(),
            born: self.born,
            last_used: AtomicU64::new(self.stamp()),
            expires_at: self.expires_at,
        }
    }
}

/// Time for TTLs, in milliseconds: the monotonic clock, or a manual one that tests advance.
#[derive(Clone)]
enum TimeSource {
    Monotonic(Instant),
    Manual(ManualClock),
}

impl TimeSource {
    fn now_ms(&self) -> u64 {
        match self {
            TimeSource::Monotonic(start) => start.elapsed().as_millis() as u64,
            TimeSource::Manual(clock) => clock.now_ms(),
        }
    }
}

/// A clock that moves only when told to: deterministic TTL tests without sleeping.
#[derive(Clone, Default)]
pub struct ManualClock(Arc<StatU64>);

impl ManualClock {
    /// A clock at 0 ms.
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        // Relaxed: a test's own thread advances it and then calls into the cache; other threads
        // reading a slightly old time only expire an entry a step later.
        self.0.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why an entry left the cache, as reported to a removal listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Evicted to respect the bound.
    Evicted,
    /// Its TTL passed (found by the expiry hand or by a lookup).
    Expired,
    /// Removed by `invalidate` or replaced by `insert`.
    Explicit,
}

type Listener<K, V> = Arc<dyn Fn(&K, &V, Removal) + Send + Sync>;

/// How to build a [`BoundedCache`].
pub struct CacheConfig<K, V> {
    capacity: usize,
    ttl: Option<Duration>,
    samples: usize,
    expiry_budget: usize,
    shards: Option<usize>,
    reclaim_mode: ReclaimMode,
    clock: Option<ManualClock>,
    listener: Option<Listener<K, V>>,
}

impl<K, V> CacheConfig<K, V> {
    /// A cache of at most `capacity` entries, no TTL, [`DEFAULT_SAMPLES`] samples per eviction.
    pub fn new(capacity: usize) -> Self {
        CacheConfig {
            capacity,
            ttl: None,
            samples: DEFAULT_SAMPLES,
            expiry_budget: DEFAULT_EXPIRY_BUDGET,
            shards: None,
            reclaim_mode: ReclaimMode::Background,
            clock: None,
            listener: None,
        }
    }

    /// Entries expire `ttl` after they are admitted.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Entries sampled per eviction (more: closer to exact LRU, slower evictions).
    pub fn samples(mut self, samples: usize) -> Self {
        self.samples = samples;
        self
    }

    /// Buckets the expiry hand visits per admission (0: only explicit `expire` calls expire).
    pub fn expiry_budget(mut self, buckets: usize) -> Self {
        self.expiry_budget = buckets;
        self
    }

    /// The map's shard count (default: the map's own choice). One shard puts every key under one
    /// writer lock: the harshest contention, for tests.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How the map frees what it retires (default `Background`; loom models need `Inline`).
    pub fn reclaim_mode(mut self, mode: ReclaimMode) -> Self {
        self.reclaim_mode = mode;
        self
    }

    /// Uses `clock` instead of the monotonic clock for TTLs.
    pub fn manual_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Calls `listener` for every entry evicted, expired, invalidated or replaced (not for those
    /// `invalidate_all` drops), after the entry is out of the map and with no map lock held.
    /// Evictions and expiry steps run during admissions, so the listener may run inside the
    /// loader call of another key: it must not ask the cache for that key (the map's
    /// single-flight load would be waiting for itself, and panics instead).
    pub fn on_removal(
        mut self,
        listener: impl Fn(&K, &V, Removal) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }
}

/// A counter striped over cache lines so that threads counting hits do not contend.
struct Striped([CachePadded<StatU64>; 16]);

impl Striped {
    fn new() -> Self {
        Striped(std::array::from_fn(|_| CachePadded::new(StatU64::new(0))))
    }

    fn add(&self, n: u64) {
        static NEXT: StatUsize = StatUsize::new(0);
        thread_local!(static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % 16);
        // Relaxed: a statistic, summed after the fact.
        STRIPE.with(|&i| self.0[i].fetch_add(n, Ordering::Relaxed));
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// A seed for `Pinned::sample`: a per-thread SplitMix64 stream, started from the address of a
/// thread-local (distinct per thread). Under loom the stream is loom's thread-local, reset for
/// each execution and started from a constant, so every execution draws the same samples.
fn next_seed() -> u64 {
    #[cfg(not(epochmap_loom))]
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0) });
    #[cfg(epochmap_loom)]
    loom::thread_local!(static STATE: Cell<u64> = Cell::new(1));
    STATE.with(|state| {
        if state.get() == 0 {
            state.set(state as *const Cell<u64> as u64);
        }
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// Counters describing a cache's behaviour so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found no fresh value (including those that then waited for another caller's
    /// load).
    pub misses: u64,
    /// Times a loader actually ran to completion.
    pub loads: u64,
    /// Entries removed to respect the bound.
    pub evictions: u64,
    /// Entries removed because their TTL passed.
    pub expirations: u64,
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

/// What one [`BoundedCache::expire`] step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryStep {
    /// Entries the hand looked at.
    pub visited: usize,
    /// Of which expired and removed.
    pub expired: usize,
    /// The hand reached the end of the map and starts over at the next step.
    pub pass_complete: bool,
    /// Another thread was moving the hand; this call did nothing.
    pub busy: bool,
}

/// The unit of occupancy a caller reserved for a value on its way into the map (`ticket`: the
/// value's admission ticket). Settled once the caller knows where the value went; dropped while
/// still holding a ticket only if the map's insert unwound (a panicking `Hash` or `Eq` of the
/// key), and then the value was not inserted, so the unit goes back. (The one panic that can
/// follow a successful insert is an async waiter's `Waker` panicking when the load wakes it; the
/// unit would then be given back for an entry in the map, one too few. Runtimes' wakers do not
/// panic.)
struct Reservation<'c, K, V, S> {
    cache: &'c BoundedCache<K, V, S>,
    ticket: Option<u64>,
}

impl<'c, K, V, S> Reservation<'c, K, V, S> {
    fn none(cache: &'c BoundedCache<K, V, S>) -> Self {
        Reservation {
            cache,
            ticket: None,
        }
    }

    /// The call returned with the entry whose ticket is `in_map`. If this caller reserved but the
    /// entry is another one (a concurrent `insert` of the key won and the loaded value was
    /// dropped), the unit goes back; if it is this caller's, the unit is now that entry's.
    fn settle(&mut self, in_map: u64) {
        if self.ticket.take().is_some_and(|ticket| ticket != in_map) {
            self.cache.release(1);
        }
    }
}

impl<K, V, S> Drop for Reservation<'_, K, V, S> {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            self.cache.release(1);
        }
    }
}

/// A bounded, concurrent, loading cache with sampled-LRU eviction and TTL expiry. See the module
/// docs.
pub struct BoundedCache<K, V, S = RandomState> {
    map: EpochMap<K, Slot<V>, S>,
    capacity: usize,
    ttl_ms: Option<u64>,
    samples: usize,
    expiry_budget: usize,
    time: TimeSource,
    listener: Option<Listener<K, V>>,
    /// Entries in the map plus reservations about to be inserted; never above `capacity`.
    occupied: CachePadded<AtomicUsize>,
    /// The LRU clock: ticks (by 2) once per admission; its value is the admitted entry's ticket.
    clock: CachePadded<AtomicU64>,
    /// The expiry hand: where the next `expire` step resumes.
    hand: Mutex<ScanCursor>,
    hits: Striped,
    misses: Striped,
    loads: StatU64,
    evictions: StatU64,
    expirations: StatU64,
    invalidations: StatU64,
}

impl<K, V, S> fmt::Debug for BoundedCache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedCache")
            .field("capacity", &self.capacity)
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl<K, V, S> BoundedCache<K, V, S> {
    /// Gives back `n` units of occupancy, after their entries left the map.
    fn release(&self, n: usize) {
        // Relaxed: `occupied` is a single counter whose modification order alone carries the bound
        // (see `reserve`); it publishes no other data.
        self.occupied.fetch_sub(n, Ordering::Relaxed);
    }
}

impl<K, V> BoundedCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `capacity` entries, without TTL.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(CacheConfig::new(capacity))
    }

    /// A cache built from `config`.
    ///
    /// # Panics
    /// If the capacity or the number of samples is 0.
    pub fn with_config(config: CacheConfig<K, V>) -> Self {
        Self::with_config_and_hasher(config, RandomState::new())
    }
}

impl<K, V, S> BoundedCache<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    /// A cache built from `config` whose map hashes with `hasher`.
    ///
    /// # Panics
    /// If the capacity or the number of samples is 0.
    pub fn with_config_and_hasher(config: CacheConfig<K, V>, hasher: S) -> Self {
        assert!(
            config.capacity > 0,
            "a cache needs room for at least one entry"
        );
        assert!(config.samples > 0, "eviction needs at least one sample");
        BoundedCache {
            map: {
                let builder = EpochMap::builder()
                    .capacity(config.capacity)
                    .reclaim_mode(config.reclaim_mode)
                    .hasher(hasher);
                match config.shards {
                    Some(shards) => builder.shards(shards).build(),
                    None => builder.build(),
                }
            },
            capacity: config.capacity,
            ttl_ms: config.ttl.map(|ttl| ttl.as_millis() as u64),
            samples: config.samples,
            expiry_budget: config.expiry_budget,
            time: match config.clock {
                Some(clock) => TimeSource::Manual(clock),
                None => TimeSource::Monotonic(Instant::now()),
            },
            listener: config.listener,
            occupied: CachePadded::new(AtomicUsize::new(0)),
            clock: CachePadded::new(AtomicU64::new(0)),
            hand: Mutex::new(ScanCursor::default()),
            hits: Striped::new(),
            misses: Striped::new(),
            loads: StatU64::new(0),
            evictions: StatU64::new(0),
            expirations: StatU64::new(0),
            invalidations: StatU64::new(0),
        }
    }

    /// The stamp for a use now: odd, one above the last admission's (even) ticket, so a hit is
    /// newer than every entry admitted before it and older than every entry admitted after it.
    fn now(&self) -> u64 {
        // Relaxed: see `Slot::touch`.
        self.clock.load(Ordering::Relaxed) + 1
    }

    /// The expiry deadline for an entry admitted now.
    fn deadline(&self) -> u64 {
        match self.ttl_ms {
            Some(ttl) => self.time.now_ms().saturating_add(ttl),
            None => u64::MAX,
        }
    }

    /// The milliseconds at which entries count as expired: now with a TTL, never without.
    fn expiry_now(&self) -> u64 {
        match self.ttl_ms {
            Some(_) => self.time.now_ms(),
            None => 0,
        }
    }

    /// The fresh value for `key`, touching its stamp; an expired entry is removed and missed.
    fn fresh<Q>(&self, key: &Q, hash: u64) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.map.get_with_hash(key, hash)?;
        let slot: &Slot<V> = &found;
        if slot.expires_at <= self.expiry_now() {
            // The `Ref` is still held, so the expired entry's memory cannot be reused meanwhile:
            // an entry at the same address is this entry.
            let expired = self
                .map
                .remove_if(key, |_, current| std::ptr::eq(current, slot));
            if let Some(removed) = expired {
                self.removed(removed.pair(), Removal::Expired);
            }
            return None;
        }
        slot.touch(self.now());
        Some(slot.value.clone())
    }

    /// Book-keeping for one entry that this cache took out of the map.
    fn removed(&self, (key, slot): (&K, &Slot<V>), why: Removal) {
        self.release(1);
        // Relaxed: statistics.
        match why {
            Removal::Evicted => self.evictions.fetch_add(1, Ordering::Relaxed),
            Removal::Expired => self.expirations.fetch_add(1, Ordering::Relaxed),
            Removal::Explicit => 0,
        };
        if let Some(listener) = &self.listener {
            listener(key, &slot.value, why);
        }
    }

    /// The cached value for `key`, without loading. Lock-free.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.fresh(key, self.map.hash_key(key));
        match found {
            Some(_) => self.hits.add(1),
            None => self.misses.add(1),
        }
        found
    }

    /// The value for `key`, loading it with `load` on a miss. Under contention for one key the
    /// loader runs once and every caller gets its value; it runs outside every lock. The owned
    /// key is made (`to_owned`) only by the caller that loads.
    pub fn get_or_load<Q>(&self, key: &Q, load: impl FnOnce(&Q) -> V) -> V
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        if let Some(value) = self.fresh(key, self.map.hash_key(key)) {
            self.hits.add(1);
            return value;
        }
        self.misses.add(1);
        let mut reservation = Reservation::none(self);
        let entry = self.map.get_or_load_ref(key, || {
            // No lock of ours or the map's is held here.
            let value = load(key);
            self.count_load();
            let (born, expires_at) = self.admit();
            reservation.ticket = Some(born);
            Slot::new(value, born, expires_at)
        });
        reservation.settle(entry.born);
        entry.value.clone()
    }

    /// The async form of [`get_or_load`](BoundedCache::get_or_load), through the map's
    /// `get_or_load_async`: the same single-flight rules, waiters park their task's waker, and
    /// a cancelled caller (its future dropped) strands nobody. The future holds no lock and no
    /// epoch guard across an `.await`, so it is `Send` when `K`, `V` and `load` are.
    pub async fn get_or_load_async<F>(&self, key: K, load: F) -> V
    where
        F: Future<Output = V>,
    {
        if let Some(value) = self.fresh(&key, self.map.hash_key(&key)) {
            self.hits.add(1);
            return value;
        }
        self.misses.add(1);
        let mut reservation = Reservation::none(self);
        let admitted = &mut reservation.ticket;
        let slot = self
            .map
            .get_or_load_async(key, async move {
                let value = load.await;
                self.count_load();
                // From here to the map's insertion there is no `.await`: a cancelled future never
                // leaves a reservation behind.
                let (born, expires_at) = self.admit();
                *admitted = Some(born);
                Slot::new(value, born, expires_at)
            })
            .await;
        reservation.settle(slot.born);
        slot.value
    }

    fn count_load(&self) {
        // Relaxed: a statistic.
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    /// Inserts `value` for `key` (replacing any cached value), evicting first if the cache is
    /// full.
    pub fn insert(&self, key: K, value: V) {
        let (born, expires_at) = self.admit();
        let mut reservation = Reservation::none(self);
        reservation.ticket = Some(born);
        let old = self.map.insert(key, Slot::new(value, born, expires_at));
        // Inserted: the unit is the new entry's.
        reservation.settle(born);
        if let Some(old) = old {
            self.removed(old.pair(), Removal::Explicit);
        }
    }

    /// Removes `key`; true if it was cached.
    pub fn invalidate<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.remove(key) {
            Some(old) => {
                self.removed(old.pair(), Removal::Explicit);
                true
            }
            None => false,
        }
    }

    /// Admits one entry: one expiry step (with a TTL), a unit of occupancy (evicting while the
    /// cache is full), and its ticket and deadline.
    fn admit(&self) -> (u64, u64) {
        if self.ttl_ms.is_some() && self.expiry_budget > 0 {
            self.expire(self.expiry_budget);
        }
        self.reserve();
        // Relaxed: the ticket only needs to be unique (one modification order) and the clock is an
        // eviction hint. Steps of 2 leave the odd values between two admissions to hits.
        let born = self.clock.fetch_add(2, Ordering::Relaxed) + 2;
        (born, self.deadline())
    }

    /// Takes one unit of occupancy, evicting while the cache is full.
    fn reserve(&self) {
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
                    Ok(_) => return,
                    Err(current) => n = current,
                }
            } else {
                if !self.evict_one() {
                    // Every unit is taken by reservations still on their way into the map, or
                    // another thread removed the victim first: let them land.
                    yield_now();
                }
                n = self.occupied.load(Ordering::Relaxed);
            }
        }
    }

    /// One sampled-LRU eviction; true if it removed an entry.
    fn evict_one(&self) -> bool {
        let pinned = self.map.pin();
        let expiry_now = self.expiry_now();
        // Expired entries go first; among the rest, the oldest stamp.
        let victim = pinned
            .sample(self.samples, next_seed())
            .into_iter()
            .map(|(key, slot)| (key, slot, slot.stamp()))
            .min_by_key(|&(_, slot, stamp)| (slot.expires_at > expiry_now, stamp));
        let Some((key, slot, stamp)) = victim else {
            return false;
        };
        let why = if slot.expires_at <= expiry_now {
            Removal::Expired
        } else {
            Removal::Evicted
        };
        // Removing while `pinned` is held is fine: the entry is unlinked now and freed after the
        // guard drops. Same address means same entry (its memory is not reused while `pinned`
        // lives); an unchanged stamp means no hit touched it since it was sampled.
        let removed = self.map.remove_if(key, |_, current| {
            std::ptr::eq(current, slot) && current.stamp() == stamp
        });
        match removed {
            Some(old) => {
                self.removed(old.pair(), why);
                true
            }
            None => false,
        }
    }

    /// Moves the expiry hand by at most `budget` buckets (at least 1) and removes the expired
    /// entries it passes. Returns what it did; `busy` if another thread holds the hand. Calls
    /// until `pass_complete` has been seen twice remove every entry that was expired when the
    /// first of them started.
    pub fn expire(&self, budget: usize) -> ExpiryStep {
        let mut hand = match self.hand.try_lock() {
            Ok(hand) => hand,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return ExpiryStep {
                    busy: true,
                    ..ExpiryStep::default()
                }
            }
        };
        let now = self.expiry_now();
        let pinned = self.map.pin();
        let (found, next) = pinned.scan(*hand, budget.max(1));
        let mut step = ExpiryStep {
            visited: found.len(),
            pass_complete: next.is_none(),
            ..ExpiryStep::default()
        };
        for (key, slot) in found {
            if slot.expires_at <= now {
                // As in `evict_one`: same address under the held `pinned`, same entry.
                if let Some(old) = self
                    .map
                    .remove_if(key, |_, current| std::ptr::eq(current, slot))
                {
                    self.removed(old.pair(), Removal::Expired);
                    step.expired += 1;
                }
            }
        }
        *hand = next.unwrap_or_default();
        step
    }

    /// Drops every entry in O(shards), without waiting for loads in flight (they insert when they
    /// finish). The entries are dropped in the background; `wait_for_reclamation` waits for that.
    pub fn invalidate_all(&self) {
        let drained = self.map.drain();
        // Exactly the entries the drain took: each had its unit, and nobody else removes them now.
        self.release(drained.len());
        // Dropped unconsumed: the drain hands its tables to the reclaimer whole, as `clear` does.
        drop(drained);
        // Relaxed: statistics.
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

    /// Entries plus reservations in flight: never above `capacity()`, and equal to `len()` when
    /// no admission is in progress.
    pub fn occupancy(&self) -> usize {
        // Relaxed: a snapshot of one counter.
        self.occupied.load(Ordering::Relaxed)
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        // Relaxed: statistics.
        CacheStats {
            hits: self.hits.sum(),
            misses: self.misses.sum(),
            loads: self.loads.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }

    /// The underlying map's memory statistics.
    pub fn memory_stats(&self) -> MemoryStats {
        self.map.memory_stats()
    }

    /// Blocks until the memory of invalidated and evicted entries is freed (see
    /// `EpochMap::wait_for_reclamation`).
    pub fn wait_for_reclamation(&self, timeout: Duration) -> bool {
        self.map.wait_for_reclamation(timeout)
    }
}
