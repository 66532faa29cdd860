//! [`Inline`]: the flat layout of issue 20, each bucket's seven entries stored in the table itself.
//!
//! A hit then reads the bucket's control word and the line its entry sits in: two loads that
//! do not depend on each other (a probe prefetches the line with the control word), where
//! [`Stable`](crate::layout::Stable) adds a third that depends on the slot pointer. The price is
//! the address: an entry is copied when its table is rebuilt, so `&V` is a snapshot.
//!
//! **A published slot is never written until every reader that could see it has unpinned.** A
//! slot is in one of three states:
//!
//! | state | tag (control word) | reserved bit (this line) | entry |
//! |---|---|---|---|
//! | free | clear | clear | uninitialised |
//! | live | set | clear | initialised; readers may read it |
//! | retired | clear | set | initialised; readers pinned before its unlink may still read it |
//!
//! * free → live: the lock holder writes the entry ([`Layout::put`]), then the table publishes
//!   it with a `Release` store of the control word carrying the tag.
//! * live → retired: the table clears the tag (`Release`), then [`Layout::unlink`] sets the
//!   reserved bit and hands back a [`RetiredSlot`], which the shard retires through the epoch.
//! * retired → free: after the grace period, [`RetiredSlot::release`] moves the entry out and
//!   clears the reserved bit (`Release`); writers find free slots with an `Acquire` load of the
//!   bits ([`Layout::first_free`]), so the move happens before any overwrite.
//!
//! A replacement is never written over the old entry: [`Layout::replace_in_place`] declines, and
//! the table publishes the new entry in a free slot first (`Table::replace_elsewhere`).

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::bucket::{Control, Placement, SLOTS};
use crate::entry::Entry;
use crate::layout::{Layout, Replaced};
use crate::prefetch::prefetch;
use crate::slab::{DropPanics, EntrySlab, OwnedReleaser, Releaser, SlabCache};
use crate::sync::{AtomicU8, Ordering, SlotCell};

/// [`FlatEpochMap`](crate::FlatEpochMap)'s layout: each entry is stored in its table, and copied
/// (by `Clone`) when the table is rebuilt, so `&V` is a snapshot that does not follow the map.
///
/// A marker type, naming the layout in [`Map`](crate::Map)'s last parameter (and in the
/// iterators'); it has no values.
///
/// ```
/// use epochmap::{layouts::Inline, FlatEpochMap, Map};
///
/// let map: Map<u32, u32, std::collections::hash_map::RandomState, Inline> = FlatEpochMap::new();
/// map.insert(1, 1);
/// ```
#[derive(Debug)]
pub enum Inline {}

/// One bucket's entries, their placements and which of its slots are retired.
#[repr(C, align(64))]
pub(crate) struct Pairs<K, V> {
    entries: [SlotCell<MaybeUninit<Entry<K, V>>>; SLOTS],
    /// Slot `i`'s [`Placement`]; lock holder or owner only (readers never read them), so
    /// `Relaxed`, as in `Slots::placements`.
    placements: [AtomicU8; SLOTS],
    /// Bit `i`: slot `i` is retired (see the module docs). Set by the lock holder, cleared by
    /// whoever releases the slot after its grace period, possibly while another thread holds the
    /// lock: both are read-modify-writes, so neither loses the other's bit.
    reserved: AtomicU8,
}

// SAFETY: a `Pairs` owns its initialised entries like a `[Option<Entry<K, V>>; 7]` would, and
// moves them between threads only with the table (growth, drain, reclamation).
unsafe impl<K: Send, V: Send> Send for Pairs<K, V> {}
// SAFETY: shared access reads an entry only while it is live or retired, and the only write to an
// entry (`put`, or the move out in `release`/`take`) happens while no reader can reach it: a free
// slot, a retired slot after its grace period, or a table owned exclusively. So sharing a `Pairs`
// shares `&K` and `&V` across threads (`Sync`), and lets whichever thread releases a retired slot
// take its entry (`Send`), as `Arc<T>` needs both of `T`.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Pairs<K, V> {}

impl<K, V> Pairs<K, V> {
    #[inline(always)]
    fn entry(&self, slot: usize) -> &SlotCell<MaybeUninit<Entry<K, V>>> {
        &self.entries[slot]
    }
}

/// A slot unlinked by [`Layout::unlink`] whose entry readers may still be reading. The shard
/// retires it through the epoch; after the grace period [`release`](Self::release) frees it.
///
/// It points into its table's memory, so the table must outlive it: the shard keeps the table
/// alive until every retired slot of it is released (issue 20's table reference count).
pub(crate) struct RetiredSlot<K, V> {
    line: NonNull<Pairs<K, V>>,
    slot: u8,
}

// SAFETY: a retired slot is handed to the thread that releases it after the grace period; the
// entry it moves out then belongs to that thread, as a removed `Entry` of the stable layout does.
unsafe impl<K: Send, V: Send> Send for RetiredSlot<K, V> {}

impl<K, V> RetiredSlot<K, V> {
    /// Moves the entry out and frees the slot for writers. The caller drops the entry, outside
    /// every shard lock (it is user code).
    ///
    /// # Safety
    /// The grace period of the unlink that made this slot has passed (no reader can still see the
    /// entry), the table is still allocated, and each retired slot is released once.
    pub(crate) unsafe fn release(self) -> Entry<K, V> {
        // SAFETY: the table is allocated (the contract), so the line is.
        let line = unsafe { self.line.as_ref() };
        let slot = usize::from(self.slot);
        // Writers skip a slot whose reserved bit is set, which is cleared only below.
        // SAFETY: retired (initialised), past its grace period (no reader), reserved (no writer).
        let entry = unsafe { line.entry(slot).write_ptr().read().assume_init() };
        // Release: a writer that sees the bit clear (`first_free`'s Acquire load) sees the move
        // above done before it writes the slot.
        line.reserved.fetch_and(!(1 << slot), Ordering::Release);
        entry
    }
}

/// `Clone` because relocation clones (see [`Layout::relocate`]): a reader may still hold `&V` of
/// the old copy, which a bitwise move would leave dangling inside `V` (a `Mutex<Vec<u8>>` pushed
/// to through the old copy would reallocate a buffer the new copy points to).
impl<K: Clone, V: Clone> Layout<K, V> for Inline {
    type Line = Pairs<K, V>;
    type New = Entry<K, V>;
    type Unlinked = RetiredSlot<K, V>;

    const INLINE: bool = true;
    const ENTRY_BYTES_OUTSIDE: usize = 0;

    #[inline(always)]
    fn new_entry(_: &EntrySlab<K, V>, _: &mut SlabCache, entry: Entry<K, V>) -> Entry<K, V> {
        entry
    }

    #[inline]
    unsafe fn relocate(entry: *mut Entry<K, V>) -> Entry<K, V> {
        // SAFETY: the slot is full (the contract): its entry is initialised, and only the lock
        // holder, which we are, could unlink it.
        let entry = unsafe { &*entry };
        Entry {
            key: entry.key.clone(),
            value: entry.value.clone(),
        }
    }

    #[inline]
    unsafe fn free_unlinked(slot: RetiredSlot<K, V>, _: &mut Releaser<'_, K, V>) -> DropPanics {
        // SAFETY: past its grace period, its table allocated, released once (the contract).
        let mut entry = std::mem::ManuallyDrop::new(unsafe { slot.release() });
        // SAFETY: we own the moved-out entry, and `ManuallyDrop` keeps it from a second drop.
        unsafe { DropPanics::drop_entry(std::ptr::from_mut(&mut *entry)) }
    }

    #[inline]
    unsafe fn release_unlinked(slot: RetiredSlot<K, V>, _: &EntrySlab<K, V>) -> Entry<K, V> {
        // SAFETY: past its grace period, its table allocated, released once (the contract).
        unsafe { slot.release() }
    }

    #[inline]
    unsafe fn free_taken(ptr: *mut Entry<K, V>, _: &mut Releaser<'_, K, V>) -> DropPanics {
        // SAFETY: the caller owns the entry in its (owned) table's slot; the slot's tag is clear,
        // so nothing reads or drops it again.
        unsafe { DropPanics::drop_entry(ptr) }
    }

    #[inline]
    unsafe fn move_out(ptr: *mut Entry<K, V>, _: &mut OwnedReleaser<K, V>) -> Entry<K, V> {
        // SAFETY: as in `free_taken`: read once, never again.
        unsafe { ptr.read() }
    }

    #[inline]
    unsafe fn move_out_of(ptr: *mut Entry<K, V>, _: &EntrySlab<K, V>) -> Entry<K, V> {
        // SAFETY: as in `free_taken`: read once, never again.
        unsafe { ptr.read() }
    }

    fn empty_line() -> Pairs<K, V> {
        Pairs {
            entries: std::array::from_fn(|_| SlotCell::new(MaybeUninit::uninit())),
            placements: std::array::from_fn(|_| AtomicU8::new(0)),
            reserved: AtomicU8::new(0),
        }
    }

    #[inline]
    fn placement(line: &Pairs<K, V>, slot: usize) -> Placement {
        Placement(line.placements[slot].load(Ordering::Relaxed))
    }

    #[inline]
    fn set_placement(line: &Pairs<K, V>, slot: usize, placement: Placement) {
        line.placements[slot].store(placement.0, Ordering::Relaxed);
    }

    #[inline]
    fn first_free(line: &Pairs<K, V>, ctrl: Control) -> Option<usize> {
        // Acquire pairs with `release`'s Release clear: the retired entry has been moved out
        // before we may write the slot.
        let reserved = u32::from(line.reserved.load(Ordering::Acquire));
        let free = !(ctrl.full_bits() | reserved) & ((1 << SLOTS) - 1);
        (free != 0).then(|| free.trailing_zeros() as usize)
    }

    #[inline(always)]
    unsafe fn put(line: &Pairs<K, V>, slot: usize, new: Entry<K, V>) -> *mut Entry<K, V> {
        let cell = line.entry(slot).write_ptr();
        // SAFETY: the slot is free (the caller's contract): no reader can reach it, and its old
        // entry, if any, was moved out by `release` or `take`.
        unsafe { cell.write(MaybeUninit::new(new)) };
        cell.cast()
    }

    #[inline]
    unsafe fn replace_in_place(
        _: &Pairs<K, V>,
        _: usize,
        new: Entry<K, V>,
    ) -> Result<Replaced<RetiredSlot<K, V>, K, V>, Entry<K, V>> {
        // Readers may be reading the old entry: it is never written over.
        Err(new)
    }

    #[inline]
    unsafe fn unlink(line: &Pairs<K, V>, _bucket: usize, slot: usize) -> RetiredSlot<K, V> {
        // Relaxed: readers never read the bits, and the lock orders this before the holder's own
        // later `first_free`; an RMW so that a concurrent `release` of another slot is kept.
        line.reserved.fetch_or(1 << slot, Ordering::Relaxed);
        RetiredSlot {
            line: NonNull::from(line),
            slot: slot as u8,
        }
    }

    #[inline(always)]
    unsafe fn load(line: &Pairs<K, V>, slot: usize) -> *const Entry<K, V> {
        // The caller acquired the control word carrying this slot's tag, which was stored after
        // the entry (`put`): the entry is initialised. It stays so while the caller's guard
        // lives, because a slot is freed only after the grace period of its unlink.
        line.entry(slot).read_ptr().cast()
    }

    #[inline]
    fn peek(line: &Pairs<K, V>, slot: usize) -> *mut Entry<K, V> {
        line.entry(slot).read_ptr().cast_mut().cast()
    }

    #[inline]
    unsafe fn take(line: &Pairs<K, V>, slot: usize) -> *mut Entry<K, V> {
        // The owner moves the entry out (or drops it) through this pointer; the slot's tag is
        // cleared by the table, and the table is never probed again.
        line.entry(slot).write_ptr().cast()
    }

    #[inline]
    fn prefetch_entries(line: &Pairs<K, V>, ctrl: Control) {
        for slot in ctrl.full() {
            // The cell's own address, not `read_ptr`: a hint reads nothing, and under loom (where
            // `prefetch` is a no-op) recording a read here would report races that are none.
            prefetch(std::ptr::from_ref(line.entry(slot)));
        }
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::table::Table;

    /// A hash whose home is bucket 0 of any table and whose tag is `0x80 | k`.
    fn hash(k: u64) -> u64 {
        k << 40
    }

    fn entry(k: u64, value: &Arc<()>) -> Entry<u64, Arc<()>> {
        Entry {
            key: k,
            value: Arc::clone(value),
        }
    }

    #[test]
    fn a_removed_slot_is_not_reused_until_it_is_released() {
        let table = Table::<u64, Arc<()>, Inline>::new(1);
        let value = Arc::new(());
        for k in 0..7 {
            // SAFETY: the test owns the table; keys are distinct and seven fit in one bucket.
            unsafe { table.insert_new(hash(k), entry(k, &value)) };
        }
        // SAFETY: the test owns the table.
        let at = unsafe { table.find(hash(3), &3) }.expect("key 3 is in");
        // SAFETY: `at` came from a find under the same ownership.
        let retired = unsafe { table.remove_at(hash(3), at.bucket, at.slot) };
        // SAFETY: the test owns the table.
        assert!(unsafe { table.find(hash(3), &3) }.is_none());
        let ctrl = table.load_ctrl(0);
        assert_eq!(ctrl.tag(at.slot), 0, "readers no longer see the slot");
        assert_eq!(
            Inline::first_free(table_line(&table), ctrl),
            None,
            "writers must not reuse it either"
        );
        // SAFETY: no reader exists, so the grace period has passed; released once.
        let old = unsafe { retired.release() };
        assert_eq!(old.key, 3);
        drop(old);
        assert_eq!(Inline::first_free(table_line(&table), ctrl), Some(at.slot));
        // SAFETY: as above; the slot is free again.
        unsafe { table.insert_new(hash(9), entry(9, &value)) };
        // SAFETY: the test owns the table.
        let again = unsafe { table.find(hash(9), &9) }.expect("key 9 is in");
        assert_eq!(again.slot, at.slot, "the released slot is the one reused");
        drain_all(&table);
        assert_eq!(
            Arc::strong_count(&value),
            1,
            "every entry dropped exactly once"
        );
    }

    #[test]
    fn a_replace_publishes_the_new_entry_and_retires_the_old_one_for_release() {
        let table = Table::<u64, Arc<()>, Inline>::new(2);
        let (old_value, new_value) = (Arc::new(()), Arc::new(()));
        // SAFETY: the test owns the table.
        unsafe { table.insert_new(hash(1), entry(1, &old_value)) };
        // SAFETY: the test owns the table.
        let at = unsafe { table.find(hash(1), &1) }.unwrap();
        // SAFETY: `at` came from a find under the same ownership; the key is the same.
        let (retired, _) =
            unsafe { table.replace(hash(1), at.bucket, at.slot, entry(1, &new_value)) };
        // SAFETY: the test owns the table.
        let now = unsafe { table.find(hash(1), &1) }.unwrap();
        assert!(Arc::ptr_eq(&now.entry.value, &new_value));
        assert_ne!(now.slot, at.slot, "the old slot was not written over");
        // SAFETY: no reader, so past the grace period; released once.
        let old = unsafe { retired.release() };
        assert!(Arc::ptr_eq(&old.value, &old_value));
        drop(old);
        drain_all(&table);
        assert_eq!(Arc::strong_count(&old_value), 1);
        assert_eq!(Arc::strong_count(&new_value), 1);
    }

    #[test]
    fn draining_takes_the_live_entries_and_leaves_retired_ones_to_their_release() {
        let table = Table::<u64, Arc<()>, Inline>::new(4);
        let value = Arc::new(());
        for k in 0..3 {
            // SAFETY: the test owns the table.
            unsafe { table.insert_new(hash(k), entry(k, &value)) };
        }
        // SAFETY: the test owns the table; `at` came from a find under it.
        let retired = unsafe {
            let at = table.find(hash(1), &1).unwrap();
            table.remove_at(hash(1), at.bucket, at.slot)
        };
        assert_eq!(drain_all(&table), vec![0, 2]);
        assert_eq!(
            Arc::strong_count(&value),
            2,
            "the retired entry is still owned"
        );
        // SAFETY: no reader; released once, after the drain, as a job may run after a retire.
        drop(unsafe { retired.release() });
        assert_eq!(Arc::strong_count(&value), 1);
    }

    /// Real threads, the whole slot protocol: one writer (the shard lock's role) inserts,
    /// replaces and removes 24 keys of an 8-bucket table at random, retiring each unlinked slot
    /// through the epoch and writing slots again as soon as they are released; two readers look
    /// keys up, pinned, and check every value they find: four words that all name the key and
    /// one version, so a torn read, a value of another key or a slot rewritten under a reader
    /// shows as mismatched words.
    #[test]
    fn readers_never_see_a_torn_or_foreign_value_while_slots_are_retired_and_reused() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
        use std::time::{Duration, Instant};

        use crate::sync::epoch::pin;

        type Value = [u64; 4];
        const KEYS: u64 = 24;
        let value = |k: u64, version: u64| -> Value { [k << 32 | version; 4] };
        // Spread hashes (the tag and home bucket come from different bits).
        let hash = |k: u64| (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let table = Arc::new(Table::<u64, Value, Inline>::new(8));
        let stop = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (table, stop) = (Arc::clone(&table), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let (mut k, mut found) = (r, 0u64);
                    while !stop.load(Relaxed) {
                        k = (k * 7 + 3) % KEYS;
                        let _guard = pin();
                        // SAFETY: pinned before the lookup; what it finds outlives `_guard`.
                        if let Some(at) = unsafe { table.find(hash(k), &k) } {
                            let words = at.entry.value;
                            assert!(words.iter().all(|&w| w == words[0]), "torn: {words:x?}");
                            assert_eq!(words[0] >> 32, k, "key {k} read {words:x?}");
                            found += 1;
                        }
                    }
                    found
                })
            })
            .collect();
        let mut live = [None::<u64>; KEYS as usize]; // each key's version, if present
        let (mut retired, mut rng, mut version) = (0usize, 0x2545_f491_4f6c_dd1d_u64, 0);
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            // Keep a free slot for every write (the table's contract): of the 56 slots, wait for
            // releases whenever live and retired ones leave fewer than two free.
            let in_use = live.iter().flatten().count() + retired - released.load(Relaxed);
            if in_use + 2 > 56 {
                pin().flush();
                std::thread::yield_now();
                continue;
            }
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = rng % KEYS;
            version += 1;
            let guard = pin();
            // SAFETY: this thread is the only writer; `at` comes from a find just before; a
            // free slot exists (counted above).
            let unlinked = unsafe {
                match (table.find(hash(k), &k), rng >> 62) {
                    (None, _) => {
                        let new = Entry {
                            key: k,
                            value: value(k, version),
                        };
                        table.insert_new(hash(k), new);
                        live[k as usize] = Some(version);
                        None
                    }
                    (Some(at), 0) => {
                        live[k as usize] = None;
                        Some(table.remove_at(hash(k), at.bucket, at.slot))
                    }
                    (Some(at), _) => {
                        let new = Entry {
                            key: k,
                            value: value(k, version),
                        };
                        live[k as usize] = Some(version);
                        Some(table.replace(hash(k), at.bucket, at.slot, new).0)
                    }
                }
            };
            if let Some(slot) = unlinked {
                retired += 1;
                let (owner, released) = (Arc::clone(&table), Arc::clone(&released));
                guard.defer(move || {
                    // SAFETY: run after the grace period of the unlink; `owner` keeps the
                    // table alive; once.
                    let old = unsafe { slot.release() };
                    assert!(old.value.iter().all(|&w| w >> 32 == old.key));
                    released.fetch_add(1, Relaxed);
                    drop(owner);
                });
                guard.flush();
            }
        }
        stop.store(true, Relaxed);
        let found: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        for _ in 0..1_000 {
            if released.load(Relaxed) == retired {
                break;
            }
            pin().flush();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            released.load(Relaxed),
            retired,
            "every retired slot released once"
        );
        for k in 0..KEYS {
            // SAFETY: every thread is done; the table is owned by this one.
            let at = unsafe { table.find(hash(k), &k) };
            let expected = live[k as usize].map(|v| value(k, v));
            assert_eq!(at.map(|at| at.entry.value), expected, "key {k} at the end");
        }
        eprintln!("{found} values checked, {retired} slots retired and released");
        assert!(
            found > 0 && retired > 100,
            "found {found}, retired {retired}"
        );
    }

    fn table_line(table: &Table<u64, Arc<()>, Inline>) -> &Pairs<u64, Arc<()>> {
        table.line(0)
    }

    /// Drops every live entry as a full retirement does, returning their keys.
    fn drain_all(table: &Table<u64, Arc<()>, Inline>) -> Vec<u64> {
        let mut keys = Vec::new();
        // SAFETY: the test owns the table and drops each entry it is handed once.
        unsafe {
            table.drain_entries(|e| {
                keys.push((*e).key);
                std::ptr::drop_in_place(e);
            })
        };
        keys.sort_unstable();
        keys
    }
}

/// Loom models of the flat layout's slot protocol, over the table itself (the map that uses it is
/// not built yet). Run by `.ci/loom.sh` with the crate's other `loom_models`.
#[cfg(all(test, epochmap_loom))]
mod loom_models {
    use super::*;
    use crate::sync::epoch::pin;
    use crate::sync::{Arc, AtomicBool};
    use crate::table::Table;

    /// A hash whose home is bucket 0 of any table and whose tag is `0x80 | k`.
    fn hash(k: u64) -> u64 {
        k << 40
    }

    /// A table of `buckets` buckets holding keys `1..=keys` at `hash(key)`, each with value
    /// `10 * key`.
    fn filled(buckets: usize, keys: u64, hash: fn(u64) -> u64) -> Arc<Table<u64, u64, Inline>> {
        let table = Arc::new(Table::new(buckets));
        for k in 1..=keys {
            let entry = Entry {
                key: k,
                value: k * 10,
            };
            // SAFETY: no reader yet; distinct keys, which the callers size to fit.
            unsafe { table.insert_new(hash(k), entry) };
        }
        table
    }

    /// A reader looks key 1 up ∥ the writer removes it, retires its slot through the epoch and,
    /// once the slot is released, writes another key into that very slot (the bucket's other six
    /// are full). The reader must read key 1's value or nothing; and the slot's entry lives in
    /// loom's `UnsafeCell`, so a write to it that is not ordered after the reader's read fails the
    /// model as a data race. Planted and reverted (docs/testing.md): releasing the slot at once
    /// instead of through the epoch fails it ("Causality violation: Concurrent read and write
    /// accesses").
    #[test]
    fn a_removed_slot_is_written_again_only_after_its_readers_unpinned() {
        // `std` atomics: the test's own counts, printed as the other models do.
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let counts = std::sync::Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let seen = std::sync::Arc::clone(&counts);
        loom::model(move || {
            seen[0].fetch_add(1, Relaxed);
            let table = filled(1, 7, hash);
            let reader = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || {
                    let _guard = pin();
                    // SAFETY: pinned before the lookup, so what it finds outlives `_guard`.
                    if let Some(found) = unsafe { table.find(hash(1), &1) } {
                        assert_eq!(found.entry.value, 10, "key 1 read another value");
                    }
                })
            };
            let released = Arc::new(AtomicBool::new(false));
            {
                let guard = pin();
                // SAFETY: this thread is the only writer; `at` came from a find just now.
                let retired = unsafe {
                    let at = table.find(hash(1), &1).unwrap();
                    table.remove_at(hash(1), at.bucket, at.slot)
                };
                let (table, released) = (Arc::clone(&table), Arc::clone(&released));
                guard.defer(move || {
                    // SAFETY: the epoch runs this after every thread pinned at the unlink has
                    // unpinned; `table` keeps the table alive; it runs once.
                    let entry = unsafe { retired.release() };
                    assert_eq!(
                        (entry.key, entry.value),
                        (1, 10),
                        "the retired entry intact"
                    );
                    drop(table);
                    released.store(true, Ordering::Release);
                });
                guard.flush();
            }
            // Advance the epoch a bounded number of times; the reuse happens only if the slot
            // came back (unbounded spinning would not terminate under loom).
            for _ in 0..3 {
                if released.load(Ordering::Acquire) {
                    break;
                }
                pin().flush();
                loom::thread::yield_now();
            }
            if released.load(Ordering::Acquire) {
                seen[1].fetch_add(1, Relaxed);
                // SAFETY: the only writer; key 8 is new and the released slot is the free one.
                unsafe { table.insert_new(hash(8), Entry { key: 8, value: 80 }) };
            }
            reader.join().unwrap();
            // SAFETY: every thread is done: the table is owned; each live entry dropped once.
            unsafe { table.drain_entries(|e| std::ptr::drop_in_place(e)) };
        });
        let (executions, reused) = (counts[0].load(Relaxed), counts[1].load(Relaxed));
        eprintln!("loom explored {executions} executions, {reused} of them reusing the slot");
        assert!(
            reused > 0,
            "no execution reached the reuse the model is about"
        );
    }

    /// A reader looks key 1 up ∥ the writer replaces its value, 10 by 11. The flat layout never
    /// writes a published slot, so the new entry goes to another slot: with `keys` = 6 the free
    /// slot of the same bucket (one control-word store switches the tags), with `keys` = 7 a slot
    /// of the next bucket (published, with the home bucket's overflow count raised, before the
    /// old tag is cleared). Either way the reader finds key 1, with 10 or 11: never neither.
    fn replace_seen_as_old_or_new(keys: u64) {
        // `std` atomic: the test's own count of executions, printed as the other models do.
        let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&executions);
        loom::model(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Every key homes in bucket 0 of the two.
            let table = filled(2, keys, |k| hash(k) & !1);
            let reader = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || {
                    let _guard = pin();
                    // SAFETY: pinned before the lookup.
                    let found = unsafe { table.find(hash(1) & !1, &1) };
                    let value = found.expect("key 1 was never absent").entry.value;
                    assert!(value == 10 || value == 11, "key 1 read {value}");
                })
            };
            let guard = pin();
            // SAFETY: the only writer; `at` came from a find just now; same key.
            let retired = unsafe {
                let at = table.find(hash(1) & !1, &1).unwrap();
                table
                    .replace(
                        hash(1) & !1,
                        at.bucket,
                        at.slot,
                        Entry { key: 1, value: 11 },
                    )
                    .0
            };
            let owner = Arc::clone(&table);
            guard.defer(move || {
                // SAFETY: after the grace period of the unlink; `owner` keeps the table alive.
                let old = unsafe { retired.release() };
                assert_eq!(old.value, 10);
                drop(owner);
            });
            drop(guard);
            reader.join().unwrap();
            // Let the deferred release run (its `Arc` of the table must not leak).
            for _ in 0..4 {
                pin().flush();
            }
        });
        eprintln!(
            "loom explored {} executions",
            executions.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    #[test]
    fn a_replace_in_one_bucket_is_seen_as_old_or_new_never_neither() {
        replace_seen_as_old_or_new(6);
    }

    #[test]
    fn a_replace_into_the_next_bucket_is_seen_as_old_or_new_never_neither() {
        replace_seen_as_old_or_new(7);
    }
}
