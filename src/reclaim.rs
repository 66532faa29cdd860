//! Retiring tables and entries through the epoch, and the background reclaimer that frees them.
//!
//! Two kinds of table retirement, never confused:
//!
//! * **Shell** (growth, shrink): the entries live on in the successor table, so only the arrays are
//!   freed. That is O(1) in work, but freeing a large array is an `munmap` (with its TLB
//!   shootdowns), so in `Background` mode it too goes to the reclaimer thread.
//! * **Full** (`clear`): the entries are reachable from nowhere else, so reclaiming the table drops
//!   every entry it holds, skipping buckets whose summary or mark bit says they are empty. That is
//!   O(entries), so in [`ReclaimMode::Background`] the deferred function only enqueues the table
//!   and the reclaimer thread does the work, off the caller's path (and off the path of whichever
//!   unrelated thread happens to run the deferred function).
//!
//! Removed and replaced entries are retired in batches of [`ENTRY_BATCH`] per shard (see
//! `shard.rs`), one deferred function and one `Arc` clone per batch instead of per entry.
//!
//! Every operation that retires something flushes its guard's deferred functions to the global
//! queue before it returns (`Guard::flush`, once per operation, not per shard), so garbage never
//! sits in an idle thread's local bag (crossbeam#566). In `Background` mode the deferred functions
//! themselves only enqueue work, so the flush (which also runs whatever deferred functions have
//! become ready) stays cheap for the caller instead of freeing other operations' garbage. Every user `Drop` that reclamation runs
//! is wrapped in `catch_unwind`: a panicking destructor is counted, never allowed to unwind through
//! crossbeam's collector or kill the reclaimer, and never stops the rest of a table from being freed.

use std::marker::PhantomData;

use crate::entry::Entry;
use crate::layout::Layout;
use crate::owed::{self, Job};
use crate::slab::{DropPanics, EntrySlab};
use crate::stats::Counters;
use crate::sync::{epoch, Arc, AtomicBool, Ordering};
use crate::table::Table;

/// Removed or replaced entries a shard collects before handing them to the epoch as one batch.
#[cfg(not(epochmap_loom))]
pub(crate) const ENTRY_BATCH: usize = 64;
/// Under loom, a batch of two, so a model with a handful of removes fills and retires a batch
/// (the way crossbeam shrinks its bags under `crossbeam_sanitize`).
#[cfg(epochmap_loom)]
pub(crate) const ENTRY_BATCH: usize = 2;

/// Rounds of "advance the epoch, then help" a thread spends on backpressure in one call before
/// giving up (a reader that stays pinned can hold the epoch back indefinitely; writers must not
/// wait for it forever). Rounds that free something do not count against [`RELIEF_STALLS`].
#[cfg(not(epochmap_loom))]
const RELIEF_ROUNDS: usize = 256;
/// Under loom, enough rounds to pass a grace period (the epoch needs two advances) when no other
/// thread is pinned, and few enough to keep the models' state space small.
#[cfg(epochmap_loom)]
const RELIEF_ROUNDS: usize = 3;

/// Rounds in a row that free nothing before a relieving thread gives up; between them it yields,
/// so that a thread the scheduler preempted while it was pinned (the usual reason the epoch cannot
/// advance when there are more threads than cores) gets to run and unpin. Four, not more: with 16
/// writers on 2 cores, 16 stalls made 612K `sched_yield`s per 2 s and rapid-grow ran at 9.5 M
/// ops/s, 4 stalls 13.6, with the same peak memory under churn (`docs/design.md`, "Backpressure").
#[cfg(not(epochmap_loom))]
const RELIEF_STALLS: u32 = 4;
#[cfg(epochmap_loom)]
const RELIEF_STALLS: u32 = 3;

/// How far over its bounds a map's backlog must be before a stalled writer sleeps instead of
/// yielding. Below it, yields are enough and cheaper: measured (8 writers on 2 cores, 512-byte
/// values, release), yields only held the peak at 141-154 MiB at 2.7-4.3 M ops/s, sleeping on every
/// stall at 139-146 MiB but 1.9-2.5 M ops/s. Past it the machine is so loaded (a debug build under
/// a parallel CI run once ran 70K entries past a 4K bound on yields alone) that `sched_yield` does
/// not hand the CPU to the preempted thread, and only a sleep does.
const RELIEF_HARD_FACTOR: usize = 8;

/// The pause after the `stalls`-th fruitless round in a row: a yield, or when `hard`, a sleep of
/// 20 µs doubling to 640 µs (a relief that gives up has then slept about 2.5 ms).
fn stall_pause(stalls: u32, hard: bool) {
    if hard {
        crate::sync::pause(std::time::Duration::from_micros(20 << (stalls - 1).min(5)));
    } else {
        crate::sync::yield_now();
    }
}

/// After a relief that slept gives up, the map's reliefs only yield for this long: the epoch is
/// held by a reader that stays pinned (a long-held `Ref` or `Pinned`), which no waiting by
/// writers releases, and writers should not each sleep per batch while it lasts. (A cool-down
/// after every give-up, sleeping or not, was tried: at 8 writers on 2 cores it let the peak reach
/// 191-214 MiB, against 141-154 without it.)
#[cfg(not(epochmap_loom))]
const RELIEF_COOL_DOWN: std::time::Duration = std::time::Duration::from_millis(100);

/// Under loom, the rounds `drive_until_reclaimed` spends instead of waiting for a deadline. Two
/// epoch advances pass a grace period once no other thread is pinned; each round also yields
/// (`sync::pause`), which lets loom run exiting threads' teardown and makes this thread's loads
/// catch up with their stores, so a few more rounds cover a thread that has not finished exiting.
#[cfg(epochmap_loom)]
const LOOM_DRIVE_ROUNDS: usize = 4;

/// Who frees the entries of tables retired by `clear`.
///
/// ```
/// use epochmap::{EpochMap, ReclaimMode};
///
/// let map: EpochMap<u64, String> = EpochMap::builder().reclaim_mode(ReclaimMode::Inline).build();
/// map.insert(1, "one".to_string());
/// map.clear(); // the old table is freed by whichever thread next advances the epoch
/// assert!(map.is_empty());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReclaimMode {
    /// A process-wide thread named `epochmap-reclaim` (started on first use, never keeping the
    /// process alive) drops the entries of cleared tables and frees them, so neither `clear` nor a
    /// later unrelated pin pays O(entries). Under loom this behaves as `Inline`.
    #[default]
    Background,
    /// The epoch's deferred function does the work itself, on whichever thread runs it. Useful in
    /// tests and in programs that must not start threads.
    Inline,
}

/// A raw pointer to retired memory (an entry of a batch, or a table) that crosses to the thread
/// that runs a deferred function and frees it there. `O` is what freeing the pointee drops: the
/// entries, `Entry<K, V>`. The pointer is `Send` only when `O` is, so the soundness of handing it
/// to another thread is in the type, not in the bounds of whichever function builds one (a
/// `Table<K, V>` alone is `Send` for every `K` and `V`: its slots are `AtomicPtr`s).
struct SendPtr<T, O>(*mut T, PhantomData<O>);

impl<T, O> SendPtr<T, O> {
    fn new(ptr: *mut T) -> Self {
        SendPtr(ptr, PhantomData)
    }
}

// SAFETY: the pointee is only ever touched by the one deferred function or job that owns the
// pointer, so sending the pointer moves ownership of the pointee, and freeing it drops values of
// type `O` on the receiving thread: sound exactly when `O: Send`.
unsafe impl<T, O: Send> Send for SendPtr<T, O> {}

/// What a job freed, folded into the map's counters once per job rather than once per entry: a
/// reclaimer draining a cleared table of a million entries writes the shared counters once.
#[derive(Default)]
struct Freed {
    entries: u64,
    /// `Drop` panics contained, the key's and the value's each counting.
    panics: u64,
}

impl Freed {
    /// Folds this job's counts into `counters`. Relaxed: statistics. The caller does this before
    /// its `Release` decrement of `pending_bytes`, which publishes the counts with the frees.
    fn fold_into(self, counters: &Counters) {
        if self.panics > 0 {
            Counters::bump(&counters.reclaimed.drop_panics, self.panics);
        }
        Counters::bump(&counters.reclaimed.entries_reclaimed, self.entries);
    }
}

/// Removed or replaced entries on their way to being freed: slab slots for `Stable`, retired
/// slots of one table for `Inline`.
struct EntryJob<K, V, L: Layout<K, V>> {
    batch: Vec<L::Unlinked>,
    /// `batch.len()`, for `Counters::pending_entries` (the batch is consumed before the count
    /// goes down).
    entries: usize,
    bytes: usize,
    counters: Arc<Counters>,
    /// The slab the entries live in, kept alive by the job even if the map is gone.
    slab: Arc<EntrySlab<K, V>>,
    /// For an inline layout, the table the retired slots are in, which the job holds
    /// (`Table::hold`) until it has freed them; null otherwise.
    table: *mut Table<K, V, L>,
}

// SAFETY: the job owns the unlinked entries (and, inline, a hold on their table); running it on
// another thread moves them there and drops them, which needs exactly `K: Send` and `V: Send`.
unsafe impl<K: Send, V: Send, L: Layout<K, V>> Send for EntryJob<K, V, L> {}

impl<K, V, L: Layout<K, V>> EntryJob<K, V, L> {
    fn run(self) {
        let mut releaser = self.slab.releaser();
        let mut freed = Freed::default();
        for unlinked in self.batch {
            // The grace period has passed (jobs are created by deferred functions), the batch owns
            // each entry exactly once, the entries came from the shard's slab, and an inline batch
            // holds its table.
            // SAFETY: so `free_unlinked`'s contract holds.
            let panics = unsafe { L::free_unlinked(unlinked, &mut releaser) };
            freed.panics += panics.count;
            freed.entries += 1;
        }
        // Returns the slots before the pending bytes go down, so a caller that waits for them
        // sees the slab's memory back too.
        drop(releaser);
        freed.fold_into(&self.counters);
        // SAFETY: the batch's slots were all released above, and this is the job's one let-go.
        unsafe { slots_released(self.table, self.entries, &self.counters) };
        Counters::sub(&self.counters.backlog.pending_entries, self.entries);
        self.counters.sub_pending(self.bytes);
    }
}

impl<K: Send, V: Send, L: Layout<K, V>> Job for EntryJob<K, V, L> {
    fn run_boxed(self: Box<Self>) {
        (*self).run();
    }
}

impl<K: Send + 'static, V: Send + 'static, L: Layout<K, V>> EntryJob<K, V, L> {
    /// For an inline batch past its grace period in `Background` mode: frees its retired slots
    /// now, on whichever thread collected the batch, and leaves the reclaimer only the entries'
    /// drops (user code), moved out to an allocation of their own, or nothing when the entries
    /// have no drop glue. Queued whole, the slots would stay reserved for as long as the
    /// reclaimer lags, and a small table filled with them is rebuilt at its size (`make_room`):
    /// in an insert/remove loop over 1K keys, 463-1,046 rebuilds where `Inline` mode needs 13
    /// (docs/design.md, "The flat layout").
    ///
    /// It runs no user code (moves, atomic stores, and at most the table's memory if this batch
    /// holds it last), so it may run under a shard lock, as deferred functions can.
    fn free_slots_now(self) {
        let EntryJob {
            batch,
            entries,
            bytes,
            counters,
            slab,
            table,
        } = self;
        let drops = std::mem::needs_drop::<Entry<K, V>>();
        let mut moved = Vec::with_capacity(if drops { entries } else { 0 });
        // What the allocation holds (0 if it holds nothing), counted before the drop job that
        // takes it off again exists.
        let moved_bytes = moved.capacity() * std::mem::size_of::<Entry<K, V>>();
        Counters::add(&counters.backlog.unslotted_bytes, moved_bytes);
        for unlinked in batch {
            // SAFETY: the grace period has passed (this runs in a deferred function), the batch
            // owns each entry once, and it holds the table the slots are in.
            let entry = unsafe { L::release_unlinked(unlinked, &slab) };
            if drops {
                moved.push(entry);
            } else {
                // No drop glue: nothing left to do.
                std::mem::forget(entry);
            }
        }
        // SAFETY: the batch's slots were all released above, and this is the job's one let-go.
        unsafe { slots_released(table, entries, &counters) };
        let job = DropJob {
            moved,
            moved_bytes,
            entries,
            bytes,
            counters,
        };
        if drops {
            background::enqueue(Box::new(job), false);
        } else {
            job.run();
        }
    }
}

/// For an inline batch whose `entries` retired slots have all been released: counts them as
/// released in their table (for the writer's load threshold) and lets go of the batch's hold on
/// it. Nothing for a `Stable` batch (`table` null).
///
/// # Safety
/// `table` is null or the table the batch holds (once), and the caller lets go of it only here.
unsafe fn slots_released<K, V, L: Layout<K, V>>(
    table: *mut Table<K, V, L>,
    entries: usize,
    counters: &Counters,
) {
    if table.is_null() {
        return;
    }
    // SAFETY: the batch's hold keeps the table allocated until the call below.
    unsafe { &*table }.note_released(entries);
    // SAFETY: the batch holds the table once and lets go once, here; the table was allocated as
    // a crossbeam `Owned` and retired or drained before its last holder goes.
    unsafe { unhold_table(table, counters, 0) };
}

/// Retired inline entries moved out of their slots (`EntryJob::free_slots_now`), for the
/// reclaimer to drop.
struct DropJob<K, V> {
    moved: Vec<Entry<K, V>>,
    /// The bytes `moved` holds from the allocator, in `Backlog::unslotted_bytes`.
    moved_bytes: usize,
    /// The batch's count and bytes, for the backlog (as `EntryJob`'s).
    entries: usize,
    bytes: usize,
    counters: Arc<Counters>,
}

impl<K, V> DropJob<K, V> {
    fn run(self) {
        let mut freed = Freed::default();
        for entry in self.moved {
            let mut entry = std::mem::ManuallyDrop::new(entry);
            // SAFETY: we own the moved-out entry, and `ManuallyDrop` keeps it from a second drop.
            let panics = unsafe { DropPanics::drop_entry(std::ptr::from_mut(&mut *entry)) };
            freed.panics += panics.count;
        }
        freed.entries = self.entries as u64;
        freed.fold_into(&self.counters);
        Counters::sub(&self.counters.backlog.unslotted_bytes, self.moved_bytes);
        Counters::sub(&self.counters.backlog.pending_entries, self.entries);
        self.counters.sub_pending(self.bytes);
    }
}

impl<K: Send, V: Send> Job for DropJob<K, V> {
    fn run_boxed(self: Box<Self>) {
        (*self).run();
    }
}

/// Hands a batch of unlinked entries to the epoch. The caller flushes the guard after releasing
/// the shard lock, so the batch does not wait in this thread's local bag: a thread that removes
/// some entries and then goes idle must not keep them from being freed (crossbeam#566). In
/// `Background` mode the deferred function only queues the batch for the reclaimer, without waking
/// it (see the `background` module).
///
/// # Safety
/// Every entry in `batch` was unlinked from `table` (the shard's current table, whose lock the
/// caller holds) before `guard` called this (so every reader that could still see it is pinned
/// now, and the grace period covers it), and is owned by the batch.
pub(crate) unsafe fn retire_entries<K: Send + 'static, V: Send + 'static, L: Layout<K, V>>(
    guard: &epoch::Guard,
    batch: Vec<L::Unlinked>,
    table: Option<&Table<K, V, L>>,
    mode: ReclaimMode,
    counters: &Arc<Counters>,
    slab: &Arc<EntrySlab<K, V>>,
) {
    if batch.is_empty() {
        return;
    }
    let table = match table {
        Some(table) if L::INLINE => {
            // The slots are in the table's memory: hold it until the job has freed them.
            table.hold();
            std::ptr::from_ref(table).cast_mut()
        }
        _ => std::ptr::null_mut(),
    };
    // Boxed here, once: the closure below then captures two words, which crossbeam stores inline
    // in its bag (a larger closure it boxes itself), and the reclaimer's queue takes the same box.
    // Relaxed: a statistic and the backpressure heuristic (see `Backpressure`); the job's
    // decrement can only run after the deferral below, so it never precedes this increment.
    Counters::add(&counters.backlog.pending_entries, batch.len());
    let job = Box::new(EntryJob::<K, V, L> {
        entries: batch.len(),
        bytes: batch.len() * Entry::<K, V>::BYTES,
        batch,
        counters: Arc::clone(counters),
        slab: Arc::clone(slab),
        table,
    });
    let free = move || match mode {
        ReclaimMode::Background if L::INLINE => (*job).free_slots_now(),
        ReclaimMode::Background => background::enqueue(job, false),
        ReclaimMode::Inline => run_or_owe(job),
    };
    // SAFETY: `free` only touches entries unlinked before `guard` deferred it, which the epoch
    // keeps alive until every thread pinned now has unpinned; it owns everything it captures.
    unsafe { guard.defer_unchecked(free) };
}

/// Whether a retired table's entries die with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retire {
    /// Growth or shrink of `Stable`: the successor owns the entries; free the arrays only.
    Shell,
    /// Clear, and growth or shrink of `Inline` (whose successor holds copies): drop every entry
    /// the table holds, then free the arrays.
    Full,
}

/// A retired table on its way to being freed.
struct TableJob<K, V, L: Layout<K, V>> {
    table: *mut Table<K, V, L>,
    kind: Retire,
    /// Pending bytes of the entries a full retire drops (the table's own are taken off by
    /// whoever frees it, `unhold_table`).
    entry_bytes: usize,
    counters: Arc<Counters>,
    /// The slab a full retire's entries live in.
    slab: Arc<EntrySlab<K, V>>,
}

// SAFETY: the job owns the table and (for a full retire) its entries; moving them to the thread
// that frees them needs `K: Send` and `V: Send`, which the bounds require.
unsafe impl<K: Send, V: Send, L: Layout<K, V>> Send for TableJob<K, V, L> {}

impl<K, V, L: Layout<K, V>> TableJob<K, V, L> {
    fn run(self) {
        let TableJob {
            table,
            kind,
            entry_bytes,
            counters,
            slab,
        } = self;
        if kind == Retire::Full {
            let mut releaser = slab.releaser();
            let mut freed = Freed::default();
            let free = |entry| {
                // SAFETY: each entry is handed over once, by a table the job owns; a `Stable`
                // entry lives in this shard's slab.
                let panics = unsafe { L::free_taken(entry, &mut releaser) };
                freed.panics += panics.count;
                freed.entries += 1;
            };
            // SAFETY: the job owns the table (grace period passed, no writer can reach it). The
            // retired slots of an inline table are not its to free: their batches do that.
            let counts = unsafe { (*table).drain_entries(free) };
            drop(releaser);
            freed.fold_into(&counters);
            Counters::bump(&counters.reclaimed.buckets_scanned, counts.scanned);
            Counters::bump(&counters.reclaimed.buckets_skipped, counts.skipped);
        }
        // SAFETY: the job is the table's owner and lets go once, here.
        unsafe { unhold_table(table, &counters, entry_bytes) };
    }
}

impl<K: Send, V: Send, L: Layout<K, V>> Job for TableJob<K, V, L> {
    fn run_boxed(self: Box<Self>) {
        (*self).run();
    }
}

/// Lets go of one hold on a table that has left its shard (see `Table::hold`); the last holder
/// frees it and takes its bytes off the backlog, where it was counted when it left. `also` is
/// what else of the backlog the caller has freed (a full retire's entries), taken off with the
/// table's bytes in one decrement, or at once if the table lives on.
///
/// # Safety
/// The caller holds `table` once and does not touch it again; it was allocated as a crossbeam
/// `Owned` and is counted in `retired_table_bytes` and `pending_bytes` (`retire_table`, or
/// `count_as_retired` for a drained or dropped table).
pub(crate) unsafe fn unhold_table<K, V, L: Layout<K, V>>(
    table: *mut Table<K, V, L>,
    counters: &Counters,
    also: usize,
) {
    // Only inline tables have holders besides their owner: `Stable` skips the count (under loom,
    // one access fewer per freed table keeps the scan models under loom's branch limit).
    // SAFETY: our hold keeps it allocated.
    if L::INLINE && !unsafe { &*table }.unhold() {
        if also > 0 {
            counters.sub_pending(also);
        }
        return;
    }
    // SAFETY: the last holder, after every other's release (`unhold`'s AcqRel): we own it.
    let table = unsafe { epoch::Shared::from(table as *const Table<K, V, L>).into_owned() };
    let table_bytes = table.bytes();
    drop(table);
    // Relaxed, both: statistics. They come before the `Release` below, which publishes them
    // with the frees: a caller whose `wait_for_reclamation` reads the last decrement sees
    // every count of what it waited for (loom: `a_wait_that_returns_true_sees_the_counts_...`;
    // the count once came after it, and a fuzzed run saw 9 tables retired, 8 reclaimed).
    Counters::sub(&counters.backlog.retired_table_bytes, table_bytes);
    Counters::bump(&counters.reclaimed.tables_reclaimed, 1);
    counters.sub_pending(table_bytes + also);
}

/// Counts a table that left its shard other than by `retire_table` (drained, or its map
/// dropped) as retired, for [`unhold_table`]: an inline table may outlive its owner, held by
/// batches of retired slots, and whichever of them frees it takes these counts off again.
pub(crate) fn count_as_retired<K, V, L: Layout<K, V>>(table: &Table<K, V, L>, counters: &Counters) {
    let bytes = table.bytes();
    Counters::add(&counters.backlog.pending_bytes, bytes);
    Counters::add(&counters.backlog.retired_table_bytes, bytes);
    Counters::bump(&counters.tables_retired, 1);
}

/// Retires `table`, which the caller has just unlinked from its shard. The caller flushes the
/// guard when it is done retiring.
///
/// `entries` is how many entries a full retire takes with it (for the pending-bytes account).
///
/// # Safety
/// `table` was allocated as a crossbeam `Owned`, was unlinked (swapped out of its shard under the
/// shard lock) before `guard` called this, and is retired exactly once. For [`Retire::Full`] no other
/// table holds its entries; for [`Retire::Shell`] the successor does.
pub(crate) unsafe fn retire_table<K: Send + 'static, V: Send + 'static, L: Layout<K, V>>(
    guard: &epoch::Guard,
    table: *mut Table<K, V, L>,
    kind: Retire,
    entries: usize,
    mode: ReclaimMode,
    counters: &Arc<Counters>,
    slab: &Arc<EntrySlab<K, V>>,
) {
    // SAFETY: the caller just unlinked it; it is alive until the grace period ends.
    let table_bytes = unsafe { &*table }.bytes();
    let entry_bytes = match kind {
        Retire::Shell => 0,
        Retire::Full => entries * L::ENTRY_BYTES_OUTSIDE,
    };
    Counters::add(&counters.backlog.pending_bytes, table_bytes + entry_bytes);
    Counters::add(&counters.backlog.retired_table_bytes, table_bytes);
    Counters::bump(&counters.tables_retired, 1);
    let ptr: SendPtr<Table<K, V, L>, Entry<K, V>> = SendPtr::new(table);
    let counters = Arc::clone(counters);
    let slab = Arc::clone(slab);
    let reclaim = move || {
        let ptr = ptr;
        // This runs after the grace period of an unlinked table retired once, so the job is its
        // owner.
        let job = TableJob {
            table: ptr.0,
            kind,
            entry_bytes,
            counters,
            slab,
        };
        match mode {
            // A cleared table is memory the caller expects back soon: wake the reclaimer for it.
            ReclaimMode::Background => background::enqueue(Box::new(job), kind == Retire::Full),
            ReclaimMode::Inline => run_or_owe(Box::new(job)),
        }
    };
    // SAFETY: `reclaim` frees only the table unlinked before this call (and, for a full retire, the
    // entries only it holds); the epoch runs it after every thread pinned now has unpinned.
    unsafe { guard.defer_unchecked(reclaim) };
}

/// Runs `job` (which drops users' keys and values) on this thread now, unless this thread holds a
/// shard lock of some map: then it is owed, and runs when the thread releases its last lock
/// ([`pay_owed`](crate::owed::pay_owed)).
///
/// That happens when code running under map A's lock (a closure, a `Hash`) writes to map B, or
/// pins: B's flush, or any pin's periodic collection, runs whatever deferred functions are ready,
/// A's among them. Run there, a `Drop` of A's value that writes to A would be a re-entrant write
/// (a panic, its write lost) and one that takes a lock of the user's could deadlock; the docs
/// promise no `Drop` runs under a shard lock.
fn run_or_owe(job: Box<dyn Job>) {
    if crate::reentrancy::holds_lock() {
        // If the thread's record is gone (thread teardown), run it: nothing would pay it later.
        if let Err(job) = owed::push(job) {
            job.run_boxed();
        }
    } else {
        job.run_boxed();
    }
}

/// Runs queued reclamation work on the calling thread, unless it holds a shard lock (the work
/// drops users' keys and values; see [`run_or_owe`]). The reclaimer thread does it then.
pub(crate) fn help() {
    if !crate::reentrancy::holds_lock() {
        background::drain_here();
    }
}

/// How much retired memory a map lets pile up before the threads that retire more help free it
/// (set by the builder's `backpressure_bytes` and `backpressure_entries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backpressure {
    /// Bound on `Counters::pending_bytes`: retired tables and entries, at `size_of` each.
    pub(crate) bytes: usize,
    /// Bound on `Counters::pending_entries`: removed or replaced entries not yet dropped. This
    /// is the bound that matters for values that own heap memory (`size_of` does not see it).
    pub(crate) entries: usize,
}

impl Backpressure {
    /// Over a bound.
    #[inline]
    fn exceeded(&self, counters: &Counters) -> bool {
        self.exceeded_times(counters, 1)
    }

    /// Over [`RELIEF_HARD_FACTOR`] times a bound.
    fn far_exceeded(&self, counters: &Counters) -> bool {
        self.exceeded_times(counters, RELIEF_HARD_FACTOR)
    }

    /// Over `factor` times either bound. Relaxed, both loads: a heuristic bound; nothing is read
    /// on the strength of these values.
    #[inline]
    fn exceeded_times(&self, counters: &Counters, factor: usize) -> bool {
        counters.backlog.pending_entries.load(Ordering::Relaxed)
            > self.entries.saturating_mul(factor)
            || counters.backlog.pending_bytes.load(Ordering::Relaxed)
                > self.bytes.saturating_mul(factor)
    }
}

/// Backpressure: while `counters` is over `bounds`, advance the epoch and help the reclaimer, for
/// a bounded number of rounds, yielding whenever a round freed nothing. A thread that holds a
/// shard lock never helps (it would run users' `Drop`s under it). Call it with no lock held and as
/// few guards as possible: a guard the caller holds keeps the epoch from passing the moment it was
/// pinned, so what was retired since cannot be freed in this call.
#[inline]
pub(crate) fn relieve(counters: &Counters, bounds: Backpressure) {
    if bounds.exceeded(counters) {
        relieve_slow(counters, bounds);
    }
}

#[cold]
#[inline(never)]
fn relieve_slow(counters: &Counters, bounds: Backpressure) {
    if crate::reentrancy::holds_lock() {
        return;
    }
    // Relaxed: progress detection only.
    let pending = || {
        counters.backlog.pending_entries.load(Ordering::Relaxed)
            + counters.backlog.pending_bytes.load(Ordering::Relaxed)
    };
    let mut slept = false;
    let mut stalls = 0;
    for _ in 0..RELIEF_ROUNDS {
        let before = pending();
        // Advance the epoch and run (Inline) or queue (Background) what its grace period freed,
        // then run the queue here rather than wait for the reclaimer thread.
        epoch::pin().flush();
        help();
        if !bounds.exceeded(counters) {
            return;
        }
        if pending() < before {
            stalls = 0;
            continue;
        }
        stalls += 1;
        if stalls >= RELIEF_STALLS {
            if slept {
                cool_down::start(counters);
            }
            return;
        }
        let hard = bounds.far_exceeded(counters) && !cool_down::active(counters);
        slept |= hard;
        stall_pause(stalls, hard);
    }
}

#[cfg(not(epochmap_loom))]
mod cool_down {
    //! When the last relief of a map gave up (`RELIEF_COOL_DOWN`).
    use std::sync::OnceLock;
    use std::time::Instant;

    use crate::stats::Counters;
    use crate::sync::Ordering;

    /// Microseconds since the first call, never 0 (0 means "never gave up").
    fn now_micros() -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        start.elapsed().as_micros() as u64 + 1
    }

    /// Relaxed, here and in `start`: a heuristic; at worst a writer pauses once more or once less.
    pub(super) fn active(counters: &Counters) -> bool {
        let gave_up = counters.backlog.relief_gave_up_at.load(Ordering::Relaxed);
        gave_up != 0
            && now_micros().saturating_sub(gave_up) < super::RELIEF_COOL_DOWN.as_micros() as u64
    }

    pub(super) fn start(counters: &Counters) {
        counters
            .backlog
            .relief_gave_up_at
            .store(now_micros(), Ordering::Relaxed);
    }
}

/// Under loom there is no time: no cool-down (every relief makes its bounded rounds).
#[cfg(epochmap_loom)]
mod cool_down {
    use crate::stats::Counters;

    pub(super) fn active(_counters: &Counters) -> bool {
        false
    }

    pub(super) fn start(_counters: &Counters) {}
}

/// Advances the epoch and runs queued work until `counters` shows nothing pending, or `deadline`
/// (never, for `None`, as in [`Grace::wait`]).
pub(crate) fn drive_until_reclaimed(
    counters: &Counters,
    deadline: Option<std::time::Instant>,
) -> bool {
    let mut pause = std::time::Duration::from_micros(10);
    let mut rounds = 0;
    loop {
        // Acquire (inside `nothing_pending`): `true` promises the caller the effects of the
        // `Drop`s it waited for, which the reclaiming threads published with their decrements.
        if counters.nothing_pending() {
            return true;
        }
        if deadline.is_some_and(|d| out_of_time(d, rounds)) {
            return false;
        }
        rounds += 1;
        help();
        epoch::pin().flush();
        crate::sync::pause(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(2));
    }
}

/// The end of one grace period, observed: [`Grace::start`] defers a function through the epoch
/// that sets a flag, so the flag is set once every thread that was pinned at the call has unpinned.
/// `Drain` waits on it before it moves any entry out of the tables it took.
///
/// Waiting reuses the reclamation machinery rather than spinning: a waiter drives collection (pin
/// and flush, which advances the epoch when it can and runs expired deferred functions, ours among
/// them) and then sleeps on a condition variable until the deferred function wakes it or a backoff
/// (10 µs doubling to 2 ms, as in [`drive_until_reclaimed`]) passes, after which it drives again.
/// The backoff is needed because the epoch only advances when some thread collects: if every other
/// thread is idle, the waiter is the one that has to.
pub(crate) struct Grace {
    /// Set by the deferred function. Release/Acquire: see [`Grace::passed`].
    passed: AtomicBool,
    /// Wakes a waiter. Under loom there is none: a waiter yields instead (loom cannot model time,
    /// and the flag alone carries every ordering the drain relies on).
    #[cfg(not(epochmap_loom))]
    wake: (std::sync::Mutex<()>, std::sync::Condvar),
}

impl Grace {
    fn new(passed: bool) -> Self {
        Grace {
            passed: AtomicBool::new(passed),
            #[cfg(not(epochmap_loom))]
            wake: (std::sync::Mutex::new(()), std::sync::Condvar::new()),
        }
    }

    /// A grace period that has already passed (nothing to wait for).
    pub(crate) fn passed_already() -> Arc<Grace> {
        Arc::new(Grace::new(true))
    }

    /// Starts watching for the end of the grace period of everything unlinked before this call
    /// under `guard`. The caller flushes `guard` (so the function does not wait in this thread's
    /// local bag for unrelated activity).
    pub(crate) fn start(guard: &epoch::Guard) -> Arc<Grace> {
        let grace = Arc::new(Grace::new(false));
        let signal = Arc::clone(&grace);
        // The epoch runs the function only after every thread pinned now has unpinned; it
        // touches nothing but the `Arc` it owns, so the safe `defer` suffices.
        guard.defer(move || signal.set());
        grace
    }

    fn set(&self) {
        // Release pairs with the Acquire load in `passed`: crossbeam orders every access made by
        // a thread pinned at `start` before this deferred function runs (its `SeqCst` pin and
        // collect fences); the Release store carries that order on to the thread that sees `true`
        // and then moves entries out.
        self.passed.store(true, Ordering::Release);
        #[cfg(not(epochmap_loom))]
        {
            // Taking the mutex between the store and the notification closes the window in which
            // a waiter has checked the flag but is not waiting yet (it checks under the mutex).
            drop(self.wake.0.lock().unwrap_or_else(|p| p.into_inner()));
            self.wake.1.notify_all();
        }
    }

    /// Whether the grace period has passed. Acquire: see `set`; a `true` here makes every
    /// access of the readers that were pinned at `start` happen before the caller's next step.
    pub(crate) fn passed(&self) -> bool {
        self.passed.load(Ordering::Acquire)
    }

    /// One round of driving: advance the epoch if every pinned thread allows it and run expired
    /// deferred functions. Cheap when there is nothing to do.
    pub(crate) fn drive(&self) -> bool {
        if !self.passed() {
            epoch::pin().flush();
        }
        self.passed()
    }

    /// Drives collection and waits until the grace period has passed, or until `deadline` (never,
    /// for `None`); returns whether it passed. Never returns `false` without a deadline.
    pub(crate) fn wait(&self, deadline: Option<std::time::Instant>) -> bool {
        let mut pause = std::time::Duration::from_micros(10);
        let mut rounds = 0;
        loop {
            if self.drive() {
                return true;
            }
            if deadline.is_some_and(|d| out_of_time(d, rounds)) {
                return false;
            }
            rounds += 1;
            self.sleep(pause, deadline);
            pause = (pause * 2).min(std::time::Duration::from_millis(2));
        }
    }

    /// Sleeps up to `pause` (and not past `deadline`), or until `set` wakes us.
    #[cfg(not(epochmap_loom))]
    fn sleep(&self, pause: std::time::Duration, deadline: Option<std::time::Instant>) {
        let pause = match deadline {
            Some(d) => pause.min(d.saturating_duration_since(std::time::Instant::now())),
            None => pause,
        };
        let held = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
        if !self.passed() {
            // A spurious or timed-out wake-up is fine: the caller drives and checks again.
            drop(self.wake.1.wait_timeout(held, pause));
        }
    }

    #[cfg(epochmap_loom)]
    fn sleep(&self, pause: std::time::Duration, _deadline: Option<std::time::Instant>) {
        crate::sync::pause(pause);
    }
}

impl std::fmt::Debug for Grace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grace")
            .field("passed", &self.passed())
            .finish_non_exhaustive()
    }
}

#[cfg(not(epochmap_loom))]
fn out_of_time(deadline: std::time::Instant, _rounds: usize) -> bool {
    std::time::Instant::now() >= deadline
}

/// Under loom, a bounded number of rounds instead of a deadline: loom cannot model time, and an
/// unbounded loop would make a model's state space unbounded.
#[cfg(epochmap_loom)]
fn out_of_time(_deadline: std::time::Instant, rounds: usize) -> bool {
    rounds >= LOOM_DRIVE_ROUNDS
}

#[cfg(not(epochmap_loom))]
mod background {
    //! The process-wide reclaimer thread and its queue.
    //!
    //! Waking a thread costs a futex syscall and, on a busy machine, a context switch. Entry
    //! batches arrive often (one per 64 removals), so they never wake the reclaimer: after running
    //! out of work it keeps polling for a while ([`IDLE_POLLS`] rounds) and only then blocks,
    //! announcing that it sleeps. An enqueue wakes it only when it is blocked, or when the job is
    //! urgent (a cleared table, whose memory the caller expects back soon). Under sustained churn
    //! that is at most one wake-up per poll instead of one per batch.
    //!
    //! The polls start short ([`FIRST_POLL`]) after a job and double up to [`POLL`]: a writer
    //! removing an entry every 60 ns retires 4,096 (the default backpressure bound) in 0.25 ms,
    //! so with 2 ms polls a single writer with a whole idle core beside it found the bound passed
    //! between polls and freed its garbage itself (removes at 100K entries: 100 ns instead of 62).
    //! With short polls while work keeps coming, a reclaimer that has a core keeps up, and writers
    //! help only when it cannot.
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
    use std::time::Duration;

    use super::Job;

    /// How long the idle reclaimer waits before looking at the queue again.
    const POLL: Duration = Duration::from_millis(2);
    /// The first poll after the reclaimer ran out of work; each empty poll doubles it, up to
    /// [`POLL`].
    const FIRST_POLL: Duration = Duration::from_micros(50);
    /// Empty polls before the reclaimer blocks until woken (about 31 ms of idleness: 50 µs doubling
    /// to 2 ms, then 2 ms polls).
    const IDLE_POLLS: u32 = 20;

    struct State {
        jobs: VecDeque<Box<dyn Job>>,
        /// The reclaimer is blocked in `wait` and must be woken for new work.
        asleep: bool,
    }

    struct Queue {
        state: Mutex<State>,
        ready: Condvar,
        /// False if the thread could not be started (resource limits); jobs then run inline.
        has_thread: bool,
    }

    static QUEUE: OnceLock<Queue> = OnceLock::new();

    fn queue() -> &'static Queue {
        QUEUE.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("epochmap-reclaim".into())
                .spawn(run);
            Queue {
                state: Mutex::new(State {
                    jobs: VecDeque::new(),
                    asleep: false,
                }),
                ready: Condvar::new(),
                has_thread: spawned.is_ok(),
            }
        })
    }

    fn lock(q: &Queue) -> MutexGuard<'_, State> {
        q.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reclaimer: runs jobs as they come. It is detached, so it never keeps the process alive;
    /// jobs still queued at exit are memory the OS takes back anyway.
    fn run() {
        let q = queue();
        let mut idle = 0;
        loop {
            let job = {
                let mut state = lock(q);
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        idle = 0;
                        break job;
                    }
                    if idle < IDLE_POLLS {
                        let poll = (FIRST_POLL * (1 << idle.min(8))).min(POLL);
                        idle += 1;
                        state = q
                            .ready
                            .wait_timeout(state, poll)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    } else {
                        state.asleep = true;
                        state = q.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                        state.asleep = false;
                    }
                }
            };
            // Jobs contain user `Drop` panics themselves; this is the last line of defence that
            // keeps the reclaimer alive whatever happens.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run_boxed()));
        }
    }

    /// Queues `job`; `urgent` jobs wake the reclaimer even while it is polling.
    pub(super) fn enqueue(job: Box<dyn Job>, urgent: bool) {
        let q = queue();
        if !q.has_thread {
            super::run_or_owe(job);
            return;
        }
        let mut state = lock(q);
        state.jobs.push_back(job);
        let wake = urgent || state.asleep;
        drop(state);
        if wake {
            q.ready.notify_one();
        }
    }

    pub(super) fn drain_here() {
        let Some(q) = QUEUE.get() else { return };
        loop {
            let Some(job) = lock(q).jobs.pop_front() else {
                return;
            };
            job.run_boxed();
        }
    }
}

#[cfg(epochmap_loom)]
mod background {
    //! Under loom there is no reclaimer thread: background work runs inline.
    use super::Job;

    pub(super) fn enqueue(job: Box<dyn Job>, _urgent: bool) {
        super::run_or_owe(job);
    }

    pub(super) fn drain_here() {}
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::SendPtr;
    use crate::entry::Entry;
    use crate::table::Table;

    /// `<T as AmbiguousIfSend<_>>::check` compiles only if exactly one impl applies, i.e. only if
    /// `T` is not `Send` (the trick of `static_assertions::assert_not_impl_any`).
    trait AmbiguousIfSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    struct IsSend;
    impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}

    fn assert_send<T: Send>() {}

    /// Before the bound was on the type, `SendPtr<T>` was `Send` for every `T`, so this did not
    /// compile: a retired table of `Rc` keys could have been handed to the reclaimer thread.
    #[test]
    fn send_ptr_is_send_only_when_what_it_frees_is() {
        let _ = <SendPtr<Table<Rc<u8>, u8>, Entry<Rc<u8>, u8>> as AmbiguousIfSend<_>>::check;
        let _ = <SendPtr<Entry<u8, Rc<u8>>, Entry<u8, Rc<u8>>> as AmbiguousIfSend<_>>::check;
        assert_send::<SendPtr<Table<String, u8>, Entry<String, u8>>>();
        assert_send::<SendPtr<Entry<String, u8>, Entry<String, u8>>>();
    }
}
