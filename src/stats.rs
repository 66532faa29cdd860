//! Where a map's memory is: the counters behind [`EpochMap::memory_stats`](crate::EpochMap::memory_stats).
//!
//! The counters are plain atomics updated with `Relaxed` ordering: each is a statistic, read on its
//! own, and nothing is published through them, with one exception: `wait_for_reclamation` promises
//! that once it returns `true` the `Drop`s it waited for have happened, so the reclaimers' decrements
//! of `pending_bytes` are `Release` and its poll is `Acquire` ([`Counters::sub_pending`],
//! [`Counters::nothing_pending`]). A snapshot taken while other threads write is a mix of moments,
//! exact only when the map is quiescent.
//!
//! **No figure is ever "negative".** Every byte counter is raised before the handoff that lets
//! another thread lower it again (a retire adds before it defers, a slab counts a chunk's growth
//! before it releases its mutex), so in each counter's modification order every decrement comes
//! after its increment and no counter passes below zero. `memory_stats` still reads each one
//! through [`bytes`], which takes a value above `isize::MAX` (no allocation, and so no sum of
//! them, can be that large) as the wrapped negative it would be and reports 0, and it sums with
//! saturating additions: should a future change break the first rule, a dashboard shows a figure
//! briefly too low, never one near 2^64, and a debug build says so (`debug_assert!`).

use crossbeam_utils::CachePadded;

use crate::sync::{lock, Arc, AtomicU64, AtomicUsize, Mutex, Ordering};

/// Counters shared by a map and the retired tables and entry batches it has handed to the epoch
/// (which hold an `Arc` of it, so they can report back after the map itself is gone).
///
/// **Who writes which line.** No counter is written per entry: writers add to `backlog` once per
/// retired batch of entries (or per retired table), reclaimers fold what a job freed into
/// `backlog` and `reclaimed` once per job. The groups sit on cache lines of their own
/// (`CachePadded`, which also aligns the whole allocation, so no neighbouring allocation shares a
/// line with it): a reclaimer's per-job report (`reclaimed`) does not take the line that writers'
/// backpressure checks read (only its one `backlog` decrement per job does), and nothing here
/// shares a line with what readers load (readers load none of it).
#[derive(Default)]
pub(crate) struct Counters {
    /// What is retired and not yet freed: written by writers per batch and reclaimers per job,
    /// read by every writer's backpressure check.
    pub(crate) backlog: CachePadded<Backlog>,
    /// What reclaimers have done: written once per job, read only by `memory_stats`.
    pub(crate) reclaimed: CachePadded<Reclaimed>,
    /// Bytes of the shards' live tables: written when a table is built, grown, shrunk or swapped.
    pub(crate) table_bytes: AtomicUsize,
    pub(crate) tables_retired: AtomicU64,
    /// One record per live `Drain`: the bytes of the tables and entries it still holds. Each is
    /// written only by its `Drain` (plain `Relaxed` stores, no read-modify-write on the per-entry
    /// path) and summed by `memory_stats`; a `Drain` registers in `drain()` and leaves on drop.
    pub(crate) drains: Mutex<Vec<Arc<DrainHeld>>>,
}

/// The retired-but-not-freed account: see [`Counters::backlog`].
#[derive(Default)]
pub(crate) struct Backlog {
    pub(crate) pending_bytes: AtomicUsize,
    /// Removed or replaced entries in batches handed to the epoch and not yet dropped (entries of
    /// cleared tables are not counted here: they are in `pending_bytes` only). Backpressure
    /// bounds it; see `reclaim::Backpressure`.
    pub(crate) pending_entries: AtomicUsize,
    /// The part of `pending_bytes` that is retired tables (arrays and headers), not entries.
    pub(crate) retired_table_bytes: AtomicUsize,
    /// The part of `pending_bytes` that is retired inline entries moved out of their slots to
    /// wait for the reclaimer's drop, in an allocation of their own (`reclaim::EntryJob::
    /// free_slots_now`): bytes the tables no longer hold. Always 0 for `Stable`.
    pub(crate) unslotted_bytes: AtomicUsize,
    /// When (microseconds on a process clock, 0 for never) a backpressure relief of this map last
    /// gave up because the epoch would not advance; see `reclaim::RELIEF_COOL_DOWN`. Not under
    /// loom, which has no time (and no cool-down).
    #[cfg(not(epochmap_loom))]
    pub(crate) relief_gave_up_at: AtomicU64,
}

/// What reclaimers have freed: see [`Counters::reclaimed`].
#[derive(Default)]
pub(crate) struct Reclaimed {
    pub(crate) tables_reclaimed: AtomicU64,
    pub(crate) buckets_scanned: AtomicU64,
    pub(crate) buckets_skipped: AtomicU64,
    pub(crate) entries_reclaimed: AtomicU64,
    pub(crate) drop_panics: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicUsize, n: usize) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicUsize, n: usize) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes `n` reclaimed bytes off `pending_bytes`, after the reclaiming thread has dropped and
    /// freed what they stood for.
    ///
    /// Release: pairs with the `Acquire` poll in `reclaim::drive_until_reclaimed`. A waiter that
    /// reads the value this decrement (or any later add or subtract, which continue its release
    /// sequence) wrote sees every effect of the `Drop`s and frees that came before it in this
    /// thread, such as a drop counter or an `Arc`'s strong count. `Relaxed` would let a waiter on
    /// ARM or POWER see 0 and still read the old counter.
    pub(crate) fn sub_pending(&self, n: usize) {
        self.backlog.pending_bytes.fetch_sub(n, Ordering::Release);
    }

    /// Whether nothing is pending. Acquire: pairs with [`Counters::sub_pending`], so once this
    /// reads 0 every `Drop` behind the bytes that were pending happens-before the caller's next
    /// step.
    pub(crate) fn nothing_pending(&self) -> bool {
        self.backlog.pending_bytes.load(Ordering::Acquire) == 0
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A byte counter's value for a snapshot. Relaxed: a statistic. See [`bytes`].
    pub(crate) fn bytes_of(counter: &AtomicUsize) -> usize {
        bytes(counter.load(Ordering::Relaxed))
    }

    /// A new live drain's byte counters, registered (starting at 0).
    pub(crate) fn register_drain(&self) -> Arc<DrainHeld> {
        let held = Arc::new(DrainHeld::default());
        lock(&self.drains).push(Arc::clone(&held));
        held
    }

    /// Forgets a drain's counters (its drain has handed everything on).
    pub(crate) fn unregister_drain(&self, held: &Arc<DrainHeld>) {
        lock(&self.drains).retain(|d| !Arc::ptr_eq(d, held));
    }

    /// What all live drains hold: `(tables and entries, of which tables)`. Relaxed: statistics.
    pub(crate) fn drain_bytes(&self) -> (usize, usize) {
        lock(&self.drains).iter().fold((0, 0), |(all, tables), d| {
            (
                all.saturating_add(Counters::bytes_of(&d.total)),
                tables.saturating_add(Counters::bytes_of(&d.tables)),
            )
        })
    }
}

/// The sum of a snapshot's figures, saturating (see the module docs).
pub(crate) fn sum(figures: impl IntoIterator<Item = usize>) -> usize {
    figures.into_iter().fold(0, usize::saturating_add)
}

/// A byte count read from a counter, for a snapshot: a value above `isize::MAX` can only be a
/// counter that was lowered before it was raised (it wrapped below zero), so it reads as 0. No
/// real figure comes near: every counter counts memory the map holds at once, and no address
/// space holds `isize::MAX` bytes. Debug builds assert that it never happens (the module docs say
/// why it cannot).
pub(crate) fn bytes(raw: usize) -> usize {
    let signed = raw as isize;
    debug_assert!(
        signed >= 0,
        "a byte counter read {signed}: a decrement landed before its increment"
    );
    signed.max(0) as usize
}

/// What one live `Drain` holds, in bytes: written by `drain()` while it takes the tables (`Relaxed`
/// `fetch_add`s) and afterwards only by its `Drain` (`Relaxed` stores); read by `memory_stats`.
#[derive(Default)]
pub(crate) struct DrainHeld {
    /// The tables it took and the entries not yet moved out (`size_of` each).
    pub(crate) total: AtomicUsize,
    /// Of which the tables (arrays and headers) not yet freed.
    pub(crate) tables: AtomicUsize,
}

/// A snapshot of where a map's memory is, from [`EpochMap::memory_stats`](crate::EpochMap::memory_stats).
///
/// [`allocated_bytes`](MemoryStats::allocated_bytes) is the one figure that answers "how much
/// memory does this map hold from the allocator right now"; the other byte counts say where it
/// is, and they overlap (a retired entry is in `pending_bytes` and, pooled, in `slab_bytes`).
/// Byte counts are what the map asked the allocator for (`size_of` based); the allocator's own
/// overhead per allocation is not included. All fields come from counters, so taking a snapshot is
/// cheap (no walk of the table) and exact whenever no other thread is writing.
///
/// ```
/// use epochmap::EpochMap;
/// use std::time::Duration;
///
/// let map: EpochMap<u64, u64> = (0..10_000).map(|i| (i, i)).collect();
/// let full = map.memory_stats();
/// assert_eq!(full.len, 10_000);
/// assert!(full.entry_bytes >= 10_000 * 16);
/// // Tables plus the slab the entries live in, plus the shards themselves.
/// assert!(full.allocated_bytes >= full.table_bytes + full.slab_bytes);
///
/// map.clear();
/// let cleared = map.memory_stats();
/// assert_eq!(cleared.len, 0);
/// assert!(cleared.table_bytes < full.table_bytes);
///
/// // Once the grace period has passed and the reclaimer has run, nothing is pending.
/// assert!(map.wait_for_reclamation(Duration::from_secs(10)));
/// let reclaimed = map.memory_stats();
/// assert_eq!(reclaimed.pending_bytes, 0);
/// assert!(reclaimed.allocated_bytes < full.allocated_bytes / 10);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Entries in the map.
    pub len: usize,
    /// Buckets in the live tables of all shards.
    pub buckets: usize,
    /// Bytes of the live tables (bucket arrays, summary bitmaps, headers). Retired tables are in
    /// `pending_bytes` instead.
    pub table_bytes: usize,
    /// Bytes of the live entries: `len * size_of::<(K, V)>()` (a zero-sized entry counts as one
    /// byte). Where they live: in `slab_bytes` when entries are pooled, else one allocation each.
    /// 0 for a [`FlatEpochMap`](crate::FlatEpochMap), whose entries are in `table_bytes`.
    pub entry_bytes: usize,
    /// Bytes the shards' entry slabs hold from the allocator, in chunks of up to 4 KiB: slots of live
    /// entries, of retired entries not yet freed, and free slots kept for reuse (plus each chunk's
    /// stack of free-slot indices, 2 bytes per slot freed, and the slabs' lists of chunks). Entries are
    /// pooled this way unless one is larger than 4 KiB (then each is its own allocation, counted
    /// in `entry_bytes` and `pending_bytes` only, and this is 0). Well above `entry_bytes` after
    /// mass removals: a chunk goes back to the allocator only once none of its slots is in use.
    pub slab_bytes: usize,
    /// Bytes retired (by `clear`, growth, `shrink_to_fit`, `remove`, replacing inserts) and not yet
    /// freed: tables, and entries at `size_of::<(K, V)>()` each (pooled entries' slots are also
    /// in `slab_bytes`). They wait for the epoch grace period, the reclaimer, or a writer's batch
    /// to fill. 0 after a successful [`wait_for_reclamation`](crate::EpochMap::wait_for_reclamation).
    /// In a [`FlatEpochMap`](crate::FlatEpochMap) a removed entry stays in its table's slot until
    /// its grace period ends, so its bytes are counted here and in its table's; in
    /// [`Background`](crate::ReclaimMode::Background) mode it then leaves the slot, and one that
    /// needs dropping waits for the reclaimer in an allocation of its own (counted here and in
    /// `allocated_bytes`). A cleared or rebuilt table's entries are in the table's bytes only.
    pub pending_bytes: usize,
    /// Removed or replaced entries not yet dropped: in a shard's batch, or handed to the epoch
    /// and waiting for their grace period or the reclaimer. (Entries of cleared tables are not
    /// counted here; their bytes are in `pending_bytes`.) Their values' heap memory is still held
    /// too, which `pending_bytes` cannot see; the builder's
    /// [`backpressure_entries`](crate::Builder::backpressure_entries) bounds this count while no
    /// reader stays pinned. A count that keeps growing means a reader is holding the epoch back.
    pub pending_entries: usize,
    /// Bytes that [`EpochMap::drain`](crate::EpochMap::drain) took out of the map and a live
    /// [`Drain`](crate::Drain) still holds: the tables it swapped out and the entries it has not
    /// yielded yet. Each yielded entry leaves this count (its key and value are the caller's now);
    /// a table leaves it when the drain has emptied and freed it, or when the `Drain` is dropped
    /// early and hands what is left to the reclaimer (then it moves to `pending_bytes`).
    pub drain_bytes: usize,
    /// Bytes this map holds from the allocator right now, each byte counted once: live and
    /// retired-but-unfreed tables, the entry slabs' chunks (or, for entries too big to pool, each
    /// live or retired entry's own allocation; for a flat map, retired entries moved out of their
    /// slots to wait for their drop), and the shard array with its per-shard slab and
    /// counter records. Not included: small per-shard bookkeeping (a shard's removal batch and
    /// slot cache, a slab's chunk lists: about 1 KiB per shard), the epoch's own queue, and what
    /// the keys and values own on the heap (a `String`'s buffer).
    pub allocated_bytes: usize,
    /// Tables retired so far (growth, shrink and clear each retire one per shard they touch).
    pub tables_retired: u64,
    /// Retired tables whose memory has been given back.
    pub tables_reclaimed: u64,
    /// Buckets of retired tables whose slots the reclaimer had to read.
    pub buckets_scanned: u64,
    /// Buckets of retired tables the reclaimer skipped because their mark bit (or the table's
    /// summary bitmap) said they were empty: the work that sparse tables did not cost.
    pub buckets_skipped: u64,
    /// Entries dropped by reclamation (of cleared tables and of removed or replaced entries).
    pub entries_reclaimed: u64,
    /// Panics caught from the `Drop` of a key or a value during reclamation, one per panicking
    /// `Drop` (an entry whose key and value both panic counts 2: they are dropped one after the
    /// other, each caught, never one during the other's unwinding). The rest of the table was
    /// still freed; the panicking value's memory was released as far as unwinding allowed.
    pub drop_panics: u64,
}

impl MemoryStats {
    /// `table_bytes + entry_bytes + pending_bytes + drain_bytes`: the logical size of what the map
    /// and its live [`Drain`](crate::Drain)s hold, live, waiting to be freed or waiting to be moved
    /// out, at `size_of` per entry. It leaves out free slab slots and counts a retired pooled
    /// entry's slot only once it is pending; for the bytes held from the allocator, read
    /// [`allocated_bytes`](MemoryStats::allocated_bytes).
    ///
    /// ```
    /// let map = epochmap::EpochMap::<u32, u32>::new();
    /// let stats = map.memory_stats();
    /// assert_eq!(
    ///     stats.total_bytes(),
    ///     stats.table_bytes + stats.entry_bytes + stats.pending_bytes + stats.drain_bytes
    /// );
    /// ```
    pub fn total_bytes(&self) -> usize {
        // Saturating: a `MemoryStats` is plain data a caller may build; `memory_stats`' own
        // figures are far below the limit (see `stats::bytes`).
        sum([
            self.table_bytes,
            self.entry_bytes,
            self.pending_bytes,
            self.drain_bytes,
        ])
    }
}

/// Loom models of the byte counters' protocol, over the crate's internals (the `loom-tests` crate
/// reaches only the public API, where `memory_stats` would hide a wrapped counter as 0). Run by
/// `.ci/loom.sh` (`cargo test -p epochmap --lib loom_models` under the loom cfgs).
#[cfg(all(test, epochmap_loom))]
mod loom_models {
    use crate::entry::Entry;
    use crate::slab::{EntrySlab, SlabCache};
    use crate::sync::Arc;

    /// Frees the entries at `ptrs` (addresses, so they can cross to a thread) into `slab` and
    /// returns what its byte counter reads right after, as a signed number.
    fn free_and_read(slab: &EntrySlab<u64, u64>, ptrs: [usize; 2]) -> isize {
        let mut releaser = slab.releaser();
        for ptr in ptrs {
            // SAFETY: each entry was allocated from `slab` by the model, is owned by this call
            // alone (the model splits them between the threads) and is freed once.
            unsafe { releaser.free(ptr as *mut Entry<u64, u64>) }.unwrap();
        }
        drop(releaser);
        slab.chunk_bytes() as isize
    }

    /// Two releasers return slots to one slab ∥ each reads the slab's byte counter right after.
    /// Under loom a release batch is two slots, so each thread's two frees are one `give_back`.
    /// The interleaving: the first `give_back` pushes two indices onto the chunk's free-slot
    /// stack (growing its buffer by 8 bytes) and releases the slab mutex; the second returns the
    /// last two slots in use, frees the chunk with its stack (8 bytes the first one counted)
    /// and subtracts it. The first one's addition must already be in the counter: when it was
    /// made after the unlock, the second thread read the counter at -8 (2^64 - 8 as a `usize`,
    /// the figure the `concurrent` fuzz target's `memory_stats` overflowed on).
    #[test]
    fn slab_bytes_never_read_below_zero_while_two_threads_return_slots() {
        // `std` atomic: the test's own count of executions, printed as `loom-tests` models do.
        let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&executions);
        loom::model(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let slab = Arc::new(EntrySlab::<u64, u64>::new());
            let mut cache = SlabCache::new();
            // Two refills of two slots from one chunk of eight: the cache ends empty and all
            // four slots are in use.
            let ptrs: Vec<usize> = (0..4)
                .map(|k| slab.alloc(&mut cache, Entry { key: k, value: k }) as usize)
                .collect();
            let other = {
                let slab = Arc::clone(&slab);
                let mine = [ptrs[0], ptrs[1]];
                loom::thread::spawn(move || free_and_read(&slab, mine))
            };
            let here = free_and_read(&slab, [ptrs[2], ptrs[3]]);
            let there = other.join().unwrap();
            assert!(here >= 0 && there >= 0, "read {here} and {there} bytes");
            assert_eq!(slab.chunk_bytes(), 0, "every chunk went back");
        });
        eprintln!(
            "loom explored {} executions",
            executions.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
