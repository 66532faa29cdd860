//! A shard: one epoch-protected table pointer, the writer lock that serialises its writers, and its
//! length.
//!
//! Readers never touch the lock: they load the table pointer (`Acquire`) under an epoch guard and
//! probe. Writers take the lock, change the current table with `Release` stores, and retire whatever
//! they unlink (entries in batches, tables whole) through the epoch. The table pointer is only ever
//! stored under the lock, so writers read it `Relaxed`.

use std::borrow::Borrow;
use std::mem::ManuallyDrop;

use crossbeam_utils::CachePadded;

use crate::entry::Entry;
use crate::flight::Pending;
use crate::layout::{Layout, Stable};
use crate::reclaim::{self, Backpressure, ReclaimMode, Retire, ENTRY_BATCH};
use crate::reentrancy::Held;
use crate::reserve::TryReserveError;
use crate::slab::{EntrySlab, SlabCache};
use crate::stats::Counters;
use crate::sync::{epoch, lock, Arc, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::table::Table;

/// A removal shrinks its shard's table once fewer than `1 / SHRINK_BELOW` of the table's capacity
/// (`Table::max_len`) is in use, to a table whose capacity is `SHRINK_TO`-fold what is left
/// (rounded up to a power of two of buckets, so between 2x and 4x). The gap between the two is
/// the hysteresis: after a shrink at `len`, the next one needs the length to halve again and the
/// next growth needs it to double, so the O(len) rebuild is paid for by at least `len / 2`
/// operations (O(1) amortised per remove), and a map that empties and refills rebuilds each size
/// once on the way down and once on the way up.
const SHRINK_BELOW: usize = 8;
const SHRINK_TO: usize = 2;
/// No automatic shrink goes below this many buckets (a 0.6 KiB table for 42 entries), nor below
/// the size a shard was built with (`EpochMap::with_capacity`): tiny tables are not worth
/// rebuilding, and a capacity asked for up front is kept.
#[cfg(not(epochmap_loom))]
const SHRINK_MIN_BUCKETS: usize = 8;
/// Under loom, a model with a dozen keys can shrink a four-bucket table.
#[cfg(epochmap_loom)]
const SHRINK_MIN_BUCKETS: usize = 1;

/// A table a shard handed to `drain`, with its entries (see `Shard::take_table`).
pub(crate) struct Taken<K, V, L: Layout<K, V> = Stable> {
    /// Swapped out of its shard; allocated as a crossbeam `Owned`.
    pub(crate) table: *mut Table<K, V, L>,
    /// Entries it holds (the shard's `len` at the swap).
    pub(crate) entries: usize,
    /// Its bytes, as `Table::bytes` counts them.
    pub(crate) bytes: usize,
    pub(crate) slab: Arc<EntrySlab<K, V>>,
}

/// What the map as a whole lends a shard for one write.
pub(crate) struct Ctx<'m> {
    pub(crate) counters: &'m Arc<Counters>,
    pub(crate) mode: ReclaimMode,
    /// When a write that retired something helps free what is pending (after its lock is
    /// released).
    pub(crate) backpressure: Backpressure,
    /// Identifies the map for re-entrancy detection (the address of its shard array).
    pub(crate) map_id: usize,
    /// The `par_retain` call this write is a task of, or `reentrancy::ORDINARY`: which nested
    /// locks the re-entrancy detector allows depends on it (see `src/reentrancy.rs`).
    pub(crate) call: usize,
}

impl Ctx<'_> {
    /// What a write that retired something does once its lock is released: flush `guard`, so
    /// the batch reaches the epoch instead of waiting in this thread's bag (and, in
    /// [`ReclaimMode::Inline`], runs what is ready, users' `Drop`s included, which may write to
    /// any map now), then, over the map's backpressure bounds, help free what is pending. Once per
    /// retired batch or table, never per write: when the backlog passes its bounds the writers
    /// producing it help free it, so garbage cannot outgrow reclamation however many writers
    /// there are.
    fn flush_and_relieve(&self, guard: &epoch::Guard) {
        guard.flush();
        reclaim::relieve(self.counters, self.backpressure);
    }
}

/// Where a lock holder found a key: valid until that writer changes the table.
pub(crate) struct Slot<'g, K, V> {
    /// The key's hash, which a layout that replaces by moving to another slot needs.
    hash: u64,
    bucket: usize,
    slot: usize,
    /// The entry found there; it stays readable for 'g even after it is replaced or removed.
    pub(crate) entry: &'g Entry<K, V>,
}

// Manual impls: a derive would demand `K: Copy, V: Copy`, but a `Slot` only holds a reference.
impl<K, V> Clone for Slot<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Slot<'_, K, V> {}

/// A shard's writer lock, held for one write.
///
/// The methods keep the shard consistent at every point where user code can panic: `find` runs
/// `Eq`, `insert` may run `Hash` (growth) before it changes anything, and the caller's closures run
/// between calls. A panic unwinds through the handle, which releases the lock.
///
/// Whatever a write retires is flushed to the epoch's global queue when the handle drops, *after*
/// the lock is released: flushing also runs deferred functions that have become ready, and in
/// [`ReclaimMode::Inline`] those drop users' keys and values. A `Drop` that writes to this map
/// must not run under its lock (it would be a re-entrant write), nor one that writes to another
/// map (two threads doing that in opposite directions would deadlock). If this thread still holds
/// another shard lock (this write came from code running under it), the jobs are owed until it
/// releases that one too (`reclaim::run_or_owe`). Then, over the map's backpressure bounds, the
/// writer helps free what is pending (`reclaim::relieve`).
pub(crate) struct ShardWriter<'s, 'g, K, V, L: Layout<K, V> = Stable> {
    shard: &'s Shard<K, V, L>,
    ctx: &'s Ctx<'s>,
    guard: &'g epoch::Guard,
    table: &'g Table<K, V, L>,
    /// Released in `Drop`, before the flush (or earlier by `unlock_drop_and_resume`).
    locked: ManuallyDrop<Locked<'s, K, V, L>>,
    /// `locked` was already released: a panic is unwinding through this handle.
    released: bool,
    /// Set when this write handed garbage to the epoch, which must be flushed after unlocking.
    flush: bool,
}

impl<K, V, L: Layout<K, V>> Drop for ShardWriter<'_, '_, K, V, L> {
    #[inline]
    fn drop(&mut self) {
        if !self.released {
            // SAFETY: `locked` is dropped exactly once, here, and not used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.locked) };
        }
        if self.flush {
            self.ctx.flush_and_relieve(self.guard);
        }
    }
}

/// State only the lock holder touches.
struct Writer<K, V, L: Layout<K, V>> {
    /// Unlinked entries waiting to be handed to the epoch as one batch.
    garbage: Vec<L::Unlinked>,
    /// For an inline layout, the slots of the current table unlinked since it was published:
    /// with the table's count of those released, the slots still reserved (see
    /// [`ShardWriter::reserved`]).
    unlinked: usize,
    /// Slots for new entries, taken from the shard's slab a few at a time.
    cache: SlabCache,
    /// Loads in flight for keys of this shard (`src/load.rs`): registered and completed under
    /// this lock, so "absent and not loading" is decided atomically with every other write.
    pending: Pending<K>,
}

// SAFETY: the garbage pointers are owned entries, moved between threads only together with the lock
// that guards them; `Shard` is only shared when `K` and `V` are `Send` (see `EpochMap`'s impls).
unsafe impl<K: Send, V: Send, L: Layout<K, V>> Send for Writer<K, V, L> {}

/// One shard. Laid out so that what readers load is never on a line that writers write (issue 19):
/// `table`, the one field a reader touches, shares its line only with fields written once, at
/// construction; everything a write changes (the mutex word, the writer's state, the lengths)
/// lives in `hot`, padded onto lines of its own. Before, `table` sat 8 bytes from the mutex word
/// and every lock, unlock and garbage push invalidated the line each reader of the shard loads
/// first. The map pads each shard as a whole, so no other shard's lines are shared either.
/// `layout_keeps_the_table_pointer_off_the_writers_lines` pins this down. `repr(C)` keeps the
/// order: the reader's line first, the writers' after it.
#[repr(C)]
pub(crate) struct Shard<K, V, L: Layout<K, V> = Stable> {
    table: epoch::Atomic<Table<K, V, L>>,
    /// The fewest buckets an automatic shrink leaves: the size the shard was built with, or
    /// [`SHRINK_MIN_BUCKETS`] if that is more.
    floor: usize,
    /// Where this shard's entries live; shared with the reclamation jobs that free them.
    slab: Arc<EntrySlab<K, V>>,
    /// What writers write.
    hot: CachePadded<WriterSide<K, V, L>>,
}

/// The part of a shard that writes change, apart from the table pointer readers load.
struct WriterSide<K, V, L: Layout<K, V>> {
    writer: Mutex<Writer<K, V, L>>,
    len: AtomicUsize,
    buckets: AtomicUsize,
    garbage_len: AtomicUsize,
}

/// A table a lock holder is building to replace the current one (growth, shrink, `fit`). If the
/// build unwinds (a `Clone` or the hasher panicked), an inline table holds clones that must be
/// dropped, but not here under the lock (no user `Drop` runs under it): it is retired through
/// the epoch like a cleared table. A `Stable` table holds pointers to entries the current table
/// still owns, so only its arrays are freed.
struct Unpublished<'a, 'g, K: Send + 'static, V: Send + 'static, L: Layout<K, V>> {
    table: Option<epoch::Owned<Table<K, V, L>>>,
    shard: &'a Shard<K, V, L>,
    ctx: &'a Ctx<'a>,
    guard: &'g epoch::Guard,
}

impl<K: Send + 'static, V: Send + 'static, L: Layout<K, V>> Unpublished<'_, '_, K, V, L> {
    /// The table being built.
    fn table(&self) -> &Table<K, V, L> {
        self.table.as_ref().expect("only `into_inner` takes it")
    }

    /// The finished table, to publish.
    fn into_inner(mut self) -> epoch::Owned<Table<K, V, L>> {
        self.table.take().expect("taken once")
    }
}

impl<K: Send + 'static, V: Send + 'static, L: Layout<K, V>> Drop for Unpublished<'_, '_, K, V, L> {
    fn drop(&mut self) {
        let Some(table) = self.table.take() else {
            return;
        };
        if L::INLINE {
            let table = table.into_shared(self.guard).as_raw() as *mut Table<K, V, L>;
            // SAFETY: never published, so no reader or writer can reach it, and the clones it
            // holds are in no other table: a full retire, handed over once.
            unsafe {
                reclaim::retire_table(
                    self.guard,
                    table,
                    Retire::Full,
                    0,
                    self.ctx.mode,
                    self.ctx.counters,
                    &self.shard.slab,
                )
            };
        }
    }
}

/// The shard lock, registered with the re-entrancy detector.
struct Locked<'s, K, V, L: Layout<K, V>> {
    writer: MutexGuard<'s, Writer<K, V, L>>,
    _held: Held,
}

impl<K, V, L: Layout<K, V>> Shard<K, V, L> {
    /// A shard with an empty table of `buckets` buckets, or `None` if the allocator refused it.
    pub(crate) fn try_new(buckets: usize, counters: &Counters) -> Option<Self> {
        let table = Table::try_new(buckets).ok()?;
        Counters::add(&counters.table_bytes, table.bytes());
        Some(Shard {
            table: epoch::Atomic::new(table),
            floor: buckets.max(SHRINK_MIN_BUCKETS),
            slab: Arc::new(EntrySlab::new()),
            hot: CachePadded::new(WriterSide {
                writer: Mutex::new(Writer {
                    garbage: Vec::new(),
                    unlinked: 0,
                    cache: SlabCache::new(),
                    pending: Pending::new(),
                }),
                len: AtomicUsize::new(0),
                buckets: AtomicUsize::new(buckets),
                garbage_len: AtomicUsize::new(0),
            }),
        })
    }

    /// Entries in the shard; exact when no writer is active. Relaxed: a statistic.
    pub(crate) fn len(&self) -> usize {
        self.hot.len.load(Ordering::Relaxed)
    }

    /// Buckets in the current table. Relaxed: a statistic.
    pub(crate) fn bucket_count(&self) -> usize {
        self.hot.buckets.load(Ordering::Relaxed)
    }

    /// Bytes of this shard's entry slab. Relaxed: a statistic.
    pub(crate) fn slab_bytes(&self) -> usize {
        self.slab.chunk_bytes()
    }

    /// Removed entries waiting in this shard's batch. Relaxed: a statistic.
    pub(crate) fn garbage_len(&self) -> usize {
        self.hot.garbage_len.load(Ordering::Relaxed)
    }

    /// The current table, for a lock-free reader.
    #[inline]
    pub(crate) fn current<'g>(&self, guard: &'g epoch::Guard) -> &'g Table<K, V, L> {
        // Acquire pairs with the Release store that published this table (construction, growth or
        // clear): its buckets and everything they point to are initialised before we probe.
        let table = self.table.load(Ordering::Acquire, guard);
        // SAFETY: a shard always holds a table (it is created with one and every swap stores a
        // non-null one); a table loaded under `guard` is freed only after `guard` unpins.
        unsafe { table.deref() }
    }

    /// Lock-free lookup.
    #[inline]
    pub(crate) fn find<'g, Q>(
        &self,
        hash: u64,
        key: &Q,
        guard: &'g epoch::Guard,
    ) -> Option<&'g Entry<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let table = self.current(guard);
        // SAFETY: the table was loaded under `guard`, which outlives 'g.
        unsafe { table.find(hash, key) }.map(|found| found.entry)
    }

    #[inline]
    fn lock(&self, ctx: &Ctx<'_>) -> Locked<'_, K, V, L> {
        let held = Held::enter(ctx.map_id, self as *const Self as usize, ctx.call);
        Locked {
            writer: lock(&self.hot.writer),
            _held: held,
        }
    }

    /// The table a lock holder writes to.
    #[inline]
    fn current_locked<'g>(&self, guard: &'g epoch::Guard) -> &'g Table<K, V, L> {
        // Relaxed: the pointer is only stored under the lock the caller holds, so the lock orders
        // the last store before this load.
        let table = self.table.load(Ordering::Relaxed, guard);
        // SAFETY: non-null as in `current`; the lock holder is the only one that could retire it.
        unsafe { table.deref() }
    }
}

impl<K: Send + 'static, V: Send + 'static, L: Layout<K, V>> Shard<K, V, L> {
    /// Takes the shard's writer lock for one write, under `guard`.
    #[inline]
    pub(crate) fn writer<'s, 'g>(
        &'s self,
        ctx: &'s Ctx<'s>,
        guard: &'g epoch::Guard,
    ) -> ShardWriter<'s, 'g, K, V, L> {
        let locked = ManuallyDrop::new(self.lock(ctx));
        ShardWriter {
            table: self.current_locked(guard),
            shard: self,
            ctx,
            guard,
            locked,
            released: false,
            flush: false,
        }
    }

    /// Queues an unlinked entry for retirement, handing a full batch to the epoch. Returns true if
    /// it did: the caller then flushes the guard once it has released the lock (the batch must not
    /// wait in this thread's local bag for unrelated activity, and see [`ShardWriter`] for why not
    /// under the lock).
    #[must_use]
    #[inline]
    fn discard(
        &self,
        ctx: &Ctx<'_>,
        guard: &epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
        entry: L::Unlinked,
    ) -> bool {
        if L::INLINE {
            locked.writer.unlinked += 1;
        }
        let garbage = &mut locked.writer.garbage;
        garbage.push(entry);
        if garbage.len() >= ENTRY_BATCH {
            self.retire_garbage(ctx, guard, locked);
            true
        } else {
            self.hot.garbage_len.store(garbage.len(), Ordering::Relaxed);
            false
        }
    }

    /// Hands the pending batch to the epoch; the caller flushes the guard.
    fn retire_garbage(
        &self,
        ctx: &Ctx<'_>,
        guard: &epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
    ) {
        // Pre-sized: the next batch fills to `ENTRY_BATCH` without regrowing.
        let batch = std::mem::replace(&mut locked.writer.garbage, Vec::with_capacity(ENTRY_BATCH));
        let bytes = batch.len() * Entry::<K, V>::BYTES;
        Counters::add(&ctx.counters.backlog.pending_bytes, bytes);
        self.hot.garbage_len.store(0, Ordering::Relaxed);
        // Only an inline batch needs its table (it holds it); `Stable` entries outlive any table,
        // and under loom the load would be one more branch per batch.
        let table = if L::INLINE {
            Some(self.current_locked(guard))
        } else {
            None
        };
        // SAFETY: every entry in the batch was unlinked from the current table under the lock we
        // hold, before this call, and the batch is their only owner.
        unsafe { reclaim::retire_entries(guard, batch, table, ctx.mode, ctx.counters, &self.slab) };
    }

    /// Hands this shard's partial batch of removed entries to the epoch now; the caller flushes
    /// the guard.
    pub(crate) fn retire_pending(&self, ctx: &Ctx<'_>, guard: &epoch::Guard) {
        let mut locked = self.lock(ctx);
        if !locked.writer.garbage.is_empty() {
            self.retire_garbage(ctx, guard, &mut locked);
        }
    }

    /// Builds a table of `buckets` buckets holding the current entries, publishes it and retires the
    /// old one. Caller holds the lock, and flushes the guard after releasing it.
    fn resize<'g>(
        &self,
        ctx: &Ctx<'_>,
        guard: &'g epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
        old: &'g Table<K, V, L>,
        buckets: usize,
        hasher: &dyn Fn(&K) -> u64,
    ) -> &'g Table<K, V, L> {
        self.rehash_into(ctx, guard, locked, old, Table::new(buckets), hasher)
    }

    /// The body of [`Shard::resize`], for a table the caller has already allocated (`fit` uses
    /// `Table::try_new`, so that a failed allocation is an error rather than an abort).
    ///
    /// `Stable` moves each entry's pointer and retires the old array as a shell. `Inline` clones
    /// each entry (`Layout::relocate`): readers may still read the old copies, which are dropped
    /// with the old table after the grace period (a full retire). If a `Clone` (or `hasher`)
    /// panics, nothing has changed: the unpublished table goes, and the clones it holds are
    /// dropped by the reclaimer, never under this lock.
    fn rehash_into<'g>(
        &self,
        ctx: &Ctx<'_>,
        guard: &'g epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
        old: &'g Table<K, V, L>,
        fresh: Table<K, V, L>,
        hasher: &dyn Fn(&K) -> u64,
    ) -> &'g Table<K, V, L> {
        let fresh = self.copy_into(ctx, guard, old, fresh, hasher, None);
        self.publish_rebuilt(ctx, guard, locked, fresh)
    }

    /// The first half of [`rehash_into`](Self::rehash_into): every entry of `old` (the current
    /// table), except the one at `skip`, relocated into `fresh`, which is not yet published.
    fn copy_into<'a, 'g>(
        &'a self,
        ctx: &'a Ctx<'a>,
        guard: &'g epoch::Guard,
        old: &'g Table<K, V, L>,
        fresh: Table<K, V, L>,
        hasher: &dyn Fn(&K) -> u64,
        skip: Option<(usize, usize)>,
    ) -> Unpublished<'a, 'g, K, V, L> {
        let fresh = Unpublished {
            table: Some(epoch::Owned::new(fresh)),
            shard: self,
            ctx,
            guard,
        };
        let table = fresh.table();
        old.for_each_occupied(|index| {
            for (slot, entry) in old.entries_in(index) {
                if skip == Some((index, slot)) {
                    continue;
                }
                // Called only when the entry's placement cannot say where it goes (see
                // `Placement`). If `hasher` panics, `fresh` drops and frees only its arrays: the
                // entries still belong to `old`.
                // SAFETY: `old` is the current table and we hold the lock: its entries are live.
                let hash = || hasher(unsafe { &(*entry).key });
                // SAFETY: `entry` is a full slot's (`entries_in`) and we hold the lock.
                let moved = unsafe { L::relocate(entry) };
                // `fresh` is unpublished (we are its only writer), keys are distinct, the fresh
                // table was sized to hold every entry below the load threshold, `old` is locked.
                // SAFETY: so `insert_moved`'s contract holds.
                unsafe { table.insert_moved(old, index, slot, moved, hash) };
            }
        });
        fresh
    }

    /// The second half of [`rehash_into`](Self::rehash_into): publishes the rebuilt table and
    /// retires the current one, as a shell (`Stable`: the entries moved) or fully (`Inline`: the
    /// old copies, as many as the shard's length, die with it).
    fn publish_rebuilt<'g>(
        &self,
        ctx: &Ctx<'_>,
        guard: &'g epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
        fresh: Unpublished<'_, 'g, K, V, L>,
    ) -> &'g Table<K, V, L> {
        let fresh = fresh.into_inner();
        // A shell retire counts no entries (and under loom, a load is a branch).
        let (kind, len) = if L::INLINE {
            (Retire::Full, self.hot.len.load(Ordering::Relaxed))
        } else {
            (Retire::Shell, 0)
        };
        // The lock is held; `fresh` holds every entry of the current table, moved (`Stable`: the
        // old array is a shell) or copied (`Inline`: the old copies, `len` of them, die with it;
        // a replaced entry's new value stands in for its copy).
        // SAFETY: so `publish`'s contract holds for `kind`.
        unsafe { self.publish(ctx, guard, locked, fresh, kind, len) }
    }

    /// Publishes `fresh` as the shard's table and retires the one it replaces as `kind`, keeping
    /// the bucket count and the map's table bytes in step. Returns the published table.
    ///
    /// # Safety
    /// The caller holds the shard lock. For [`Retire::Shell`], `fresh` holds every entry of the
    /// current table; for [`Retire::Full`], it holds none of them (or, inline, copies) and
    /// `entries` is how many the current table holds.
    unsafe fn publish<'g>(
        &self,
        ctx: &Ctx<'_>,
        guard: &'g epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
        fresh: epoch::Owned<Table<K, V, L>>,
        kind: Retire,
        entries: usize,
    ) -> &'g Table<K, V, L> {
        self.leave_current(ctx, guard, locked);
        let buckets = fresh.bucket_count();
        let new_bytes = fresh.bytes();
        let fresh = fresh.into_shared(guard);
        // Release: readers that acquire the new pointer see the fully built (or empty) table.
        let old = self.table.swap(fresh, Ordering::Release, guard);
        self.hot.buckets.store(buckets, Ordering::Relaxed);
        // SAFETY: the swap happened under the lock and `guard`, so the old table is still alive.
        let old_bytes = unsafe { old.deref() }.bytes();
        Counters::add(&ctx.counters.table_bytes, new_bytes);
        Counters::sub(&ctx.counters.table_bytes, old_bytes);
        // SAFETY: `old` was just unlinked under the lock, exactly once; the caller's contract says
        // whether its entries live on in `fresh` (shell) or nowhere else (full).
        unsafe {
            reclaim::retire_table(
                guard,
                old.as_raw() as *mut Table<K, V, L>,
                kind,
                entries,
                ctx.mode,
                ctx.counters,
                &self.slab,
            )
        };
        // SAFETY: just published; it can only be retired after `guard` unpins.
        unsafe { fresh.deref() }
    }

    /// Before the current table is swapped out: an inline layout's batch of retired slots points
    /// into it, so it is retired now, holding the table; and the new table starts with no slot
    /// reserved. (`Stable`'s batch holds slab slots, which outlive any table: it fills on.)
    fn leave_current(&self, ctx: &Ctx<'_>, guard: &epoch::Guard, locked: &mut Locked<'_, K, V, L>) {
        if L::INLINE {
            if !locked.writer.garbage.is_empty() {
                self.retire_garbage(ctx, guard, locked);
            }
            locked.writer.unlinked = 0;
        }
    }

    /// Whether a table holding `len` entries is sparse enough for an automatic shrink (see
    /// [`SHRINK_BELOW`]); the check every removal makes, so it is a few arithmetic instructions
    /// on the table's bucket count.
    #[inline]
    fn too_sparse(&self, table: &Table<K, V, L>, len: usize) -> bool {
        len < table.max_len() / SHRINK_BELOW && table.bucket_count() > self.floor
    }

    /// The automatic shrink: rebuilds `table` (the current one, which holds `len` entries) at
    /// [`SHRINK_TO`] times the size `len` needs, but never below `floor`, and returns the new
    /// table; `None` if that would not be smaller, or if the allocator refused the new table (a
    /// sparse table is not worth an abort: the next removal tries again). Caller holds the lock
    /// and flushes the guard after releasing it. `hasher` runs only for entries whose placement
    /// lost track of their home (see `Placement`); if it panics, nothing has changed.
    #[cold]
    #[inline(never)]
    fn shrink_to_len<'g>(
        &self,
        ctx: &Ctx<'_>,
        guard: &'g epoch::Guard,
        locked: &mut Locked<'_, K, V, L>,
        table: &'g Table<K, V, L>,
        len: usize,
        hasher: &dyn Fn(&K) -> u64,
    ) -> Option<&'g Table<K, V, L>> {
        let buckets = len
            .checked_mul(SHRINK_TO)
            .and_then(Table::<K, V, L>::buckets_for)?
            .max(self.floor);
        if buckets >= table.bucket_count() {
            return None;
        }
        let fresh = Table::try_new(buckets).ok()?;
        Some(self.rehash_into(ctx, guard, locked, table, fresh, hasher))
    }

    /// Resizes the table to fit `len.max(at_least)` entries if that means growing (`grow`) or
    /// shrinking (`shrink`). Fails, changing nothing, if that size does not fit in the address
    /// space or the allocator refuses the new table.
    pub(crate) fn fit(
        &self,
        ctx: &Ctx<'_>,
        guard: &epoch::Guard,
        hasher: &dyn Fn(&K) -> u64,
        at_least: usize,
        grow: bool,
        shrink: bool,
    ) -> Result<(), TryReserveError> {
        let mut locked = self.lock(ctx);
        let table = self.current_locked(guard);
        let len = self.hot.len.load(Ordering::Relaxed);
        let buckets = len
            .checked_add(at_least.saturating_sub(len))
            .and_then(Table::<K, V, L>::buckets_for)
            .ok_or(TryReserveError::CapacityOverflow)?;
        let current = table.bucket_count();
        if (grow && buckets > current) || (shrink && buckets < current) {
            let fresh =
                Table::try_new(buckets).map_err(|layout| TryReserveError::AllocError { layout })?;
            self.rehash_into(ctx, guard, &mut locked, table, fresh, hasher);
            drop(locked);
            ctx.flush_and_relieve(guard);
        }
        Ok(())
    }

    /// Swaps in an empty table (of the same size with `keep_capacity`, else minimal) and fully
    /// retires the old one with its entries. The caller flushes the guard after the last shard.
    pub(crate) fn clear(&self, ctx: &Ctx<'_>, guard: &epoch::Guard, keep_capacity: bool) {
        let mut locked = self.lock(ctx);
        let old = self.current_locked(guard);
        let len = self.hot.len.load(Ordering::Relaxed);
        if len == 0 && (keep_capacity || old.bucket_count() == 1) {
            return;
        }
        let buckets = if keep_capacity { old.bucket_count() } else { 1 };
        let fresh = epoch::Owned::new(Table::new(buckets));
        // SAFETY: the lock is held and the fresh table is empty; no other live table holds the
        // old one's `len` entries (growth moves entries, it never shares them between tables).
        unsafe { self.publish(ctx, guard, &mut locked, fresh, Retire::Full, len) };
        self.hot.len.store(0, Ordering::Relaxed);
        if !locked.writer.garbage.is_empty() {
            self.retire_garbage(ctx, guard, &mut locked);
        }
        // Cached slots would keep a chunk of the slab alive; give them back so that, once the old
        // entries are reclaimed, all of the slab's memory can go.
        self.slab.return_cache(&mut locked.writer.cache);
    }

    /// For `drain`: swaps in a fresh minimal table exactly as `clear` does, but hands the old table
    /// and its entries to the caller instead of retiring it. Returns `None` if the shard held no
    /// entry (an empty but grown table is then fully retired, as `clear` would, so the drain only
    /// ever holds tables with entries). The shard's pending batch of removed entries is retired as
    /// usual: those were removed before the drain and are not its to yield. The caller flushes the
    /// guard after the last shard.
    ///
    /// The caller owns the returned table but must not move anything out of it (nor free it)
    /// before the grace period of this call has passed: readers pinned now may still probe it.
    /// The table's bytes and its entries' are added to `held`, the drain's counters.
    pub(crate) fn take_table(
        &self,
        ctx: &Ctx<'_>,
        guard: &epoch::Guard,
        held: &crate::stats::DrainHeld,
    ) -> Option<Taken<K, V, L>> {
        let mut locked = self.lock(ctx);
        let old = self.current_locked(guard);
        let len = self.hot.len.load(Ordering::Relaxed);
        let taken = if len == 0 {
            if old.bucket_count() > 1 {
                let fresh = epoch::Owned::new(Table::new(1));
                // SAFETY: the lock is held, the fresh table is empty and so is the old one.
                unsafe { self.publish(ctx, guard, &mut locked, fresh, Retire::Full, 0) };
            }
            None
        } else {
            let fresh = epoch::Owned::new(Table::new(1));
            let new_bytes = fresh.bytes();
            self.leave_current(ctx, guard, &mut locked);
            let fresh = fresh.into_shared(guard);
            // Release, as in `publish`: readers that acquire the new pointer see the empty table.
            let old = self.table.swap(fresh, Ordering::Release, guard);
            self.hot.buckets.store(1, Ordering::Relaxed);
            // SAFETY: swapped out under the lock and `guard`, so the old table is still alive.
            let old_bytes = unsafe { old.deref() }.bytes();
            Counters::add(&ctx.counters.table_bytes, new_bytes);
            Counters::sub(&ctx.counters.table_bytes, old_bytes);
            // Relaxed: statistics (the drain's own counters, see `Counters::drains`).
            held.total
                .fetch_add(old_bytes + len * L::ENTRY_BYTES_OUTSIDE, Ordering::Relaxed);
            held.tables.fetch_add(old_bytes, Ordering::Relaxed);
            self.hot.len.store(0, Ordering::Relaxed);
            Some(Taken {
                table: old.as_raw() as *mut Table<K, V, L>,
                entries: len,
                bytes: old_bytes,
                slab: Arc::clone(&self.slab),
            })
        };
        if !locked.writer.garbage.is_empty() {
            self.retire_garbage(ctx, guard, &mut locked);
        }
        // As in `clear`: cached slots would keep a chunk of the slab alive.
        self.slab.return_cache(&mut locked.writer.cache);
        taken
    }

    /// Removes every entry for which `keep` returns false. `keep` and `hasher` run under the lock.
    pub(crate) fn retain(
        &self,
        ctx: &Ctx<'_>,
        guard: &epoch::Guard,
        hasher: &dyn Fn(&K) -> u64,
        keep: &mut dyn FnMut(&K, &V) -> bool,
    ) {
        let mut locked = self.lock(ctx);
        let table = self.current_locked(guard);
        let mut flush = false;
        table.for_each_occupied(|index| {
            for (slot, ptr) in table.entries_in(index) {
                // SAFETY: current table, lock held: the entry is live and only we can unlink it.
                let entry = unsafe { &*ptr };
                if keep(&entry.key, &entry.value) {
                    continue;
                }
                let hash = hasher(&entry.key);
                // SAFETY: lock held; (index, slot) is where this entry lives and `hash` is its hash.
                let old = unsafe { table.remove_at(hash, index, slot) };
                // A load and a store, not a `fetch_sub`: only the lock holder writes `len`, so a
                // locked instruction per removed entry would buy nothing.
                let len = self.hot.len.load(Ordering::Relaxed);
                self.hot.len.store(len - 1, Ordering::Relaxed);
                flush |= self.discard(ctx, guard, &mut locked, old);
            }
        });
        // After the walk, not during it: the walk reads `table`, which a shrink retires.
        let len = self.hot.len.load(Ordering::Relaxed);
        if self.too_sparse(table, len) {
            flush |= self
                .shrink_to_len(ctx, guard, &mut locked, table, len, hasher)
                .is_some();
        }
        // After unlocking (see `ShardWriter`). If `keep` or `hasher` panicked, the batch waits in
        // this thread's bag for its next flush or collection instead.
        drop(locked);
        if flush {
            ctx.flush_and_relieve(guard);
        }
    }
}

impl<'g, K: Send + 'static, V: Send + 'static, L: Layout<K, V>> ShardWriter<'_, 'g, K, V, L> {
    /// Looks `key` up in the current table.
    #[inline]
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<Slot<'g, K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // SAFETY: we hold the lock and `guard` (which outlives 'g), so the table and its entries do.
        unsafe { self.table.find(hash, key) }.map(|f| Slot {
            hash,
            bucket: f.bucket,
            slot: f.slot,
            entry: f.entry,
        })
    }

    /// Inserts a key that `find` just reported absent, growing the table first if it is at its
    /// load threshold. Returns the published entry.
    #[inline]
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        hasher: &dyn Fn(&K) -> u64,
    ) -> &'g Entry<K, V> {
        let len = self.shard.hot.len.load(Ordering::Relaxed);
        let (key, value) = if self.needs_room(len) {
            self.make_room(len, hasher, (key, value))
        } else {
            (key, value)
        };
        let entry = self.new_entry(key, value);
        // The lock is held; the key is absent (the caller's `find` said so and only lock holders
        // insert); the table is below its load threshold after `make_room`, reserved slots
        // included.
        // SAFETY: so `insert_new`'s contract holds.
        let entry = unsafe { self.table.insert_new(hash, entry) };
        self.shard.hot.len.store(len + 1, Ordering::Relaxed);
        // SAFETY: published under the lock; it can only be retired through the epoch after
        // `guard` (which outlives 'g) was pinned.
        unsafe { &*entry }
    }

    /// Slots of the current table that an inline layout still keeps retired (unlinked, not yet
    /// released after their grace period): a writer cannot use them, so they count against the
    /// load threshold with the live entries. Always 0 for `Stable`.
    #[inline]
    fn reserved(&self) -> usize {
        if !L::INLINE {
            return 0;
        }
        // Saturating: `released` only counts slots this count includes, but a wrap here would be
        // a huge table for nothing.
        self.locked
            .writer
            .unlinked
            .saturating_sub(self.table.released())
    }

    /// Whether one more entry (an insert, or an inline replace, which publishes the new entry
    /// before it retires the old) would pass the current table's load threshold, with `len` live
    /// entries and the reserved slots. The check every insert makes: a comparison, plus (inline,
    /// and only near the threshold) a load of the table's count of released slots.
    #[inline]
    fn needs_room(&self, len: usize) -> bool {
        let max = self.table.max_len();
        let unlinked = if L::INLINE {
            self.locked.writer.unlinked
        } else {
            0
        };
        len + unlinked >= max && len + self.reserved() >= max
    }

    /// Rebuilds the table so that one more entry fits, for a write that owns `owned` (the user's
    /// key and value, handed back). The table doubles once the live entries fill half of its
    /// threshold; below that only reserved slots fill it, and a table of the same size, which
    /// starts with none reserved, is enough (at most once per half-threshold of removals, so
    /// O(1) amortised per write).
    ///
    /// The rebuild runs `hasher`, and for `Inline` `Clone`, on other entries. If either panics
    /// nothing has changed, but `owned` is ours: unwinding would drop it here, under the lock,
    /// and a `Drop` that writes to this map would then panic during a panic (an abort). So the
    /// panic is caught, the lock released, and only then is `owned` dropped and the panic
    /// resumed.
    #[cold]
    #[inline(never)]
    fn make_room<T>(&mut self, len: usize, hasher: &dyn Fn(&K) -> u64, owned: T) -> T {
        let grown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let buckets = self.room_buckets(len);
            self.shard.resize(
                self.ctx,
                self.guard,
                &mut self.locked,
                self.table,
                buckets,
                hasher,
            )
        }));
        match grown {
            Ok(table) => {
                self.table = table;
                self.flush = true;
                owned
            }
            Err(payload) => self.unlock_drop_and_resume(owned, payload),
        }
    }

    /// The size of a table rebuilt so that one more entry fits (see [`make_room`](Self::make_room)).
    fn room_buckets(&self, len: usize) -> usize {
        let current = self.table.bucket_count();
        let floor = if len >= self.table.max_len() / 2 {
            current * 2
        } else {
            current
        };
        Table::<K, V, L>::buckets_for(len + 1)
            .expect("epochmap: capacity overflow")
            .max(floor)
    }

    /// For a panic caught under the lock while this write owns user values: releases the lock,
    /// then drops `owned` (a panic from its `Drop` is discarded: the first panic is the one to
    /// report), then resumes the panic. The handle's own `Drop` then only flushes.
    #[cold]
    fn unlock_drop_and_resume<T>(&mut self, owned: T, payload: Box<dyn std::any::Any + Send>) -> ! {
        // SAFETY: `locked` has not been released yet (`released` is false until here) and is
        // never used again: `released` makes `Drop` skip it.
        unsafe { ManuallyDrop::drop(&mut self.locked) };
        self.released = true;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(owned)));
        std::panic::resume_unwind(payload)
    }

    /// Publishes a new entry in place of the one at `at`. `key` must equal the key found there.
    ///
    /// An inline layout publishes the new entry in a free slot before it retires the old one, so
    /// at the load threshold it first rebuilds the table (as an insert would, `hasher` and `Clone`
    /// running on other entries) and finds the key again there (running `Eq`).
    #[inline]
    pub(crate) fn replace(
        &mut self,
        at: Slot<'_, K, V>,
        key: K,
        value: V,
        hasher: &dyn Fn(&K) -> u64,
    ) -> &'g Entry<K, V>
    where
        K: Eq,
    {
        let (mut bucket, mut slot) = (at.bucket, at.slot);
        let len = self.shard.hot.len.load(Ordering::Relaxed);
        let (key, value) = if L::INLINE && self.needs_room(len) {
            let (key, value) = self.make_room(len, hasher, (key, value));
            let found =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.find(at.hash, &key)));
            match found {
                Ok(Some(now)) => (bucket, slot) = (now.bucket, now.slot),
                // A rebuild keeps every key, so only an `Eq` that disagrees with itself gets
                // here. The map is whole (the old entry is in the new table); the write fails
                // like a panicking `Eq` would, with the user's key and value dropped unlocked.
                Ok(None) => self.unlock_drop_and_resume(
                    (key, value),
                    Box::new(
                        "epochmap: a key was not found again after its table was rebuilt \
                         (its Eq is inconsistent); no entry was changed",
                    ),
                ),
                Err(payload) => self.unlock_drop_and_resume((key, value), payload),
            }
            (key, value)
        } else {
            (key, value)
        };
        if L::INLINE && !self.table.replace_keeps_walk_order(at.hash, bucket, slot) {
            return self.replace_by_rebuild(at.hash, bucket, slot, key, value, hasher);
        }
        let entry = self.new_entry(key, value);
        // The lock is held; (bucket, slot) came from `find` on this table under this lock and
        // nothing moved since (`insert` and `remove` resize; no caller follows either by an older
        // slot's replace; a rebuild above is followed by a new `find`); an inline layout has a
        // free slot for the new entry, at or after its bucket in walk order (`needs_room`,
        // `replace_keeps_walk_order`).
        // SAFETY: so `replace`'s contract holds.
        let (old, entry) = unsafe { self.table.replace(at.hash, bucket, slot, entry) };
        self.flush |= self
            .shard
            .discard(self.ctx, self.guard, &mut self.locked, old);
        // SAFETY: as in `insert`.
        unsafe { &*entry }
    }

    /// An inline replace whose new entry would move the key backwards in walk order
    /// (`Table::walk_len`): builds a table of the current one's entries without the old one and
    /// with the new one, and publishes it.
    ///
    /// A replace that publishes the new entry in another bucket moves the key forward in walk
    /// order, which a walk (`iter`, the rayon walks) sees at least once, never not at all: the
    /// key's position only grows while the walk's does. Moving it backwards would put it behind
    /// a walk that has not reached the old entry yet, which would then miss it; a walk holds the
    /// table it started on, so publishing a new table keeps it whole. It takes a run of seven
    /// full buckets at the table's start, so with hashed keys it practically never happens.
    #[cold]
    #[inline(never)]
    fn replace_by_rebuild(
        &mut self,
        hash: u64,
        bucket: usize,
        slot: usize,
        key: K,
        value: V,
        hasher: &dyn Fn(&K) -> u64,
    ) -> &'g Entry<K, V> {
        let len = self.shard.hot.len.load(Ordering::Relaxed);
        let buckets = self.room_buckets(len);
        // Copying runs `Clone` and maybe `hasher`: a panic leaves the current table as it was,
        // and the user's key and value are dropped after unlocking (see `make_room`).
        let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.shard.copy_into(
                self.ctx,
                self.guard,
                self.table,
                Table::new(buckets),
                hasher,
                Some((bucket, slot)),
            )
        }));
        let fresh = match copied {
            Ok(fresh) => fresh,
            Err(payload) => self.unlock_drop_and_resume((key, value), payload),
        };
        let entry = self.new_entry(key, value);
        // `fresh` is unpublished (we are its only writer); it holds every key but this one, which
        // hashes to `hash` (a replace's hash is the map's own, `replace_trusting`), and `len`
        // entries fit below its threshold.
        // SAFETY: so `insert_new`'s contract holds.
        let entry = unsafe { fresh.table().insert_new(hash, entry) };
        // The old entry stays in the old table, which is retired fully: it is dropped with the
        // other old copies after the grace period, and readers that found it keep reading it.
        self.table = self
            .shard
            .publish_rebuilt(self.ctx, self.guard, &mut self.locked, fresh);
        self.flush = true;
        // SAFETY: as in `insert`.
        unsafe { &*entry }
    }

    /// [`replace`](Self::replace) for a slot found with a hash the caller supplied, which may be
    /// wrong. `Stable` replaces in the slot, where the hash plays no part. `Inline` may publish
    /// the new entry in another slot, which must be on the key's own probe path with its own
    /// placement, so it takes the hash from `real` (run under the lock, as in
    /// [`remove_trusting`](Self::remove_trusting)).
    pub(crate) fn replace_trusting(
        &mut self,
        at: Slot<'_, K, V>,
        key: K,
        value: V,
        real: &dyn Fn(&K) -> u64,
    ) -> &'g Entry<K, V>
    where
        K: Eq,
    {
        if !L::INLINE {
            return self.replace(at, key, value, real);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| real(&key))) {
            Ok(hash) => self.replace(Slot { hash, ..at }, key, value, real),
            Err(payload) => self.unlock_drop_and_resume((key, value), payload),
        }
    }

    /// An unpublished entry: in a slot of the shard's slab (`Stable`), or the entry itself.
    #[inline]
    fn new_entry(&mut self, key: K, value: V) -> L::New {
        L::new_entry(
            &self.shard.slab,
            &mut self.locked.writer.cache,
            Entry { key, value },
        )
    }

    /// The loads in flight for this shard's keys.
    pub(crate) fn pending(&mut self) -> &mut Pending<K> {
        &mut self.locked.writer.pending
    }

    /// [`remove`](Self::remove) for a `hash` the caller supplied, which may be wrong.
    ///
    /// Removal lowers the overflow counts along the path from the entry's home bucket, which is
    /// where its insertion raised them; entries are always placed by the map's own hash (`real`).
    /// So if the entry is not in `hash`'s home bucket, the path is walked from the home of
    /// `real(key)`, never from a home a wrong `hash` names (that would lower counts other entries
    /// rely on, and later lookups of those would miss). If it is in `hash`'s home bucket, there is
    /// nothing to walk for a right `hash`; for a wrong one the entry's own path keeps its raised
    /// counts: probes past it stay longer than needed until the next rebuild, never too short.
    /// `real` runs under the lock, before anything changes, and again as the map's hasher if the
    /// removal shrinks the table (see [`remove`](Self::remove)).
    pub(crate) fn remove_trusting(
        &mut self,
        hash: u64,
        at: Slot<'_, K, V>,
        real: &dyn Fn(&K) -> u64,
    ) {
        let walk = if self.table.is_home(hash, at.bucket) {
            hash
        } else {
            real(&at.entry.key)
        };
        self.remove(walk, at, real);
    }

    /// Unlinks the entry at `at`, which `find` located for a key with `hash`, then shrinks the
    /// table if it has become too sparse (see [`SHRINK_BELOW`]). Slots found before this call are
    /// stale afterwards.
    #[inline]
    pub(crate) fn remove(&mut self, hash: u64, at: Slot<'_, K, V>, hasher: &dyn Fn(&K) -> u64) {
        // SAFETY: lock held; `at` came from `find(hash, ..)` on this table under this lock.
        let old = unsafe { self.table.remove_at(hash, at.bucket, at.slot) };
        let len = self.shard.hot.len.load(Ordering::Relaxed) - 1;
        self.shard.hot.len.store(len, Ordering::Relaxed);
        self.flush |= self
            .shard
            .discard(self.ctx, self.guard, &mut self.locked, old);
        if self.shard.too_sparse(self.table, len) {
            self.shrink(len, hasher);
        }
    }

    /// The automatic shrink after a removal (see [`Shard::shrink_to_len`]).
    #[cold]
    #[inline(never)]
    fn shrink(&mut self, len: usize, hasher: &dyn Fn(&K) -> u64) {
        // The removal is done and its entry is in the shard's batch, owned by no local, so a
        // panic from `hasher` drops nothing of the user's here. It is still caught and resumed
        // after unlocking, as in `insert`, so that no caller's unwinding runs under the lock.
        let shrunk = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.shard.shrink_to_len(
                self.ctx,
                self.guard,
                &mut self.locked,
                self.table,
                len,
                hasher,
            )
        }));
        match shrunk {
            Ok(Some(table)) => {
                self.table = table;
                self.flush = true;
            }
            Ok(None) => {}
            Err(payload) => self.unlock_drop_and_resume((), payload),
        }
    }
}

impl<K, V, L: Layout<K, V>> Shard<K, V, L> {
    /// Takes the next entry at or after bucket `*cursor` out of the shard, for an owner draining it.
    pub(crate) fn take_next(&mut self, cursor: &mut usize) -> Option<(K, V)> {
        // SAFETY: `&mut self` means no reader or writer can reach this shard.
        let table = unsafe {
            self.table
                .load(Ordering::Relaxed, epoch::unprotected())
                .deref()
        };
        let entry = table.take_next(cursor)?;
        self.hot.len.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `take_next` unlinked the entry and we own the shard, so we own the entry; it
        // came from this shard's slab, or lives in its table.
        let entry = unsafe { L::move_out_of(entry, &self.slab) };
        Some((entry.key, entry.value))
    }

    /// Frees the table, its entries and the pending batch; for the map's `Drop`. Returns the first
    /// panic raised by a key's or value's `Drop`, after everything else has been freed.
    pub(crate) fn free_all(
        &mut self,
        counters: &Counters,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        let mut first_panic = None;
        let mut releaser = self.slab.releaser();
        let mut note = |panics: crate::slab::DropPanics| {
            if let Some(payload) = panics.first {
                first_panic.get_or_insert(payload);
            }
        };
        // Exclusive access: the map is being dropped, so no `Ref` or guard of it exists, and
        // every retired batch's grace period has passed. The batch's entries (inline: slots of
        // the current table, still allocated) are freed before the table.
        for unlinked in std::mem::take(&mut lock(&self.hot.writer).garbage) {
            // SAFETY: so each is freed once, here, from a live table or this shard's slab.
            note(unsafe { L::free_unlinked(unlinked, &mut releaser) });
        }
        // SAFETY: `&mut self`: nobody else can load the table, so no guard is needed.
        let unguarded = unsafe { epoch::unprotected() };
        let table = self
            .table
            .swap(epoch::Shared::null(), Ordering::Relaxed, unguarded);
        if !table.is_null() {
            let raw = table.as_raw() as *mut Table<K, V, L>;
            // SAFETY: we just unlinked the table and hold the only access to it.
            let table = unsafe { &*raw };
            Counters::sub(&counters.table_bytes, table.bytes());
            // SAFETY: exclusive ownership; each entry is taken once.
            unsafe { table.drain_entries(|entry| note(L::free_taken(entry, &mut releaser))) };
            if L::INLINE {
                // Batches of retired slots retired earlier may still hold an inline table (their
                // jobs run on any thread, later): whichever of us lets go last frees it.
                reclaim::count_as_retired(table, counters);
                // SAFETY: the shard's hold, let go once; counted as retired just above.
                unsafe { reclaim::unhold_table(raw, counters, 0) };
            } else {
                // SAFETY: unlinked above, allocated as a crossbeam `Owned`, and nothing else holds
                // a `Stable` table.
                drop(unsafe { epoch::Shared::from(raw as *const Table<K, V, L>).into_owned() });
            }
        }
        drop(releaser);
        self.slab.return_cache(&mut lock(&self.hot.writer).cache);
        self.hot.len.store(0, Ordering::Relaxed);
        first_panic
    }
}

#[cfg(test)]
mod layout_tests {
    use std::mem::{align_of, offset_of, size_of};

    use crossbeam_utils::CachePadded;

    use super::{Shard, WriterSide};

    /// Issue 19: the table pointer (all a reader loads from a shard) shares no cache line with
    /// anything a write stores, and no shard shares a line with another. A line here is
    /// `CachePadded`'s alignment (128 bytes on x86-64, where the adjacent-line prefetcher pairs
    /// 64-byte lines), so a field added in the wrong place fails this test, not a profile.
    #[test]
    fn layout_keeps_the_table_pointer_off_the_writers_lines() {
        type S = Shard<u64, String>;
        let line = align_of::<CachePadded<u8>>();
        let table = offset_of!(S, table);
        let hot = offset_of!(S, hot);
        let hot_end =
            hot + size_of::<CachePadded<WriterSide<u64, String, crate::layout::Stable>>>();
        assert_eq!(hot % line, 0, "the writer side starts a line");
        let table_line = table / line;
        assert!(
            table_line < hot / line || table_line > (hot_end - 1) / line,
            "table at {table} shares a line with the writer side at {hot}..{hot_end}"
        );
        assert!(hot_end <= size_of::<S>());
        // The map keeps each shard on lines of its own.
        assert_eq!(align_of::<CachePadded<S>>() % line, 0);
        assert_eq!(size_of::<CachePadded<S>>() % line, 0);
        println!(
            "line {line} B: table at {table}, writer side {hot}..{hot_end}, shard {} B",
            size_of::<CachePadded<S>>()
        );
    }

    /// Issue 19: what readers load besides the shard (the table header; an entry's slot) sits on
    /// no line that anyone writes while they read, and the map's counters, written per batch and
    /// per reclamation job, share no line with each other's writers or with any other allocation.
    #[test]
    fn layout_keeps_read_lines_apart_from_written_ones() {
        use crate::stats::{Backlog, Counters};
        use crate::table::Table;
        let line = align_of::<CachePadded<u8>>();
        // The table header is an allocation of its own lines: no neighbour can share them.
        assert_eq!(align_of::<Table<u64, String>>() % line, 0);
        assert_eq!(size_of::<Table<u64, String>>() % line, 0);
        // A slab chunk's header (written under the slab mutex) ends a line before the first slot.
        assert!(crate::slab::EntrySlab::<u64, u64>::first_slot_offset() >= line);
        assert_eq!(
            crate::slab::EntrySlab::<u64, u64>::first_slot_offset() % line,
            0
        );
        // The counters: the backlog (writers per batch, reclaimers per job), what reclaimers
        // report (per job) and the rarely written rest each on lines of their own.
        assert_eq!(align_of::<Counters>() % line, 0);
        let backlog = offset_of!(Counters, backlog);
        let reclaimed = offset_of!(Counters, reclaimed);
        let cold = offset_of!(Counters, table_bytes);
        assert!(size_of::<Backlog>() <= line);
        assert_eq!(backlog % line, 0);
        assert_eq!(reclaimed % line, 0);
        assert_ne!(backlog / line, reclaimed / line);
        assert!(cold / line != backlog / line && cold / line != reclaimed / line);
    }
}
