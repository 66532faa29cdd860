//! How a table keeps the entries its slots hold: the one part `EpochMap` and the flat map of
//! issue 20 are meant to differ in.
//!
//! A table (`table.rs`) owns everything about a bucket that does not depend on where an entry
//! lives: the control words (tags, mark bit, overflow counts), probing, the summary bitmap and the
//! placements. A [`Layout`] owns a bucket's *line*: what sits in its seven slots, and how an entry
//! is stored there, found by a reader, replaced, unlinked and taken out by an owner.
//!
//! * [`Stable`] (`EpochMap`): a slot holds a pointer to an [`Entry`] in the shard's slab. An entry
//!   never moves while it is in the map, so `&V` keeps its address across growth and other
//!   writes; a hit costs a load that depends on the slot pointer.
//!
//! The orderings each method relies on are those of the table's protocol ("The atomics, their
//! writers, readers and orderings" in `docs/design.md`); each implementation says which of its
//! accesses pairs with which.

use crate::bucket::{Control, Placement, Slots};
use crate::entry::Entry;
use crate::slab::{DropPanics, EntrySlab, OwnedReleaser, Releaser, SlabCache};
use crate::sync::Ordering;

/// What an in-place replace hands back: the unlinked old entry and the published new one.
pub(crate) type Replaced<U, K, V> = (U, *mut Entry<K, V>);

/// What a bucket's slots hold and how. See the module docs.
///
/// "Lock holder" below means the writer that holds the shard lock of a published table, or the
/// builder of an unpublished one; "owner" means a thread with exclusive access to a table that no
/// reader can reach any more (after its grace period, or under `&mut` of the map).
pub(crate) trait Layout<K, V>: Sized + 'static {
    /// One bucket's slots. All-zero bytes must be an empty line, so that a fresh table is one
    /// `alloc_zeroed` call (`array.rs`).
    type Line;
    /// What a write hands the table to store in a free slot.
    type New;
    /// What unlinking a slot leaves for the caller to retire through the epoch.
    type Unlinked;

    /// Whether entries live in the table's own lines. Then an unlinked entry keeps its slot (and
    /// so its table's memory and capacity) until it is freed after its grace period, so a batch
    /// of them holds its table alive (`Table::hold`) and counts against the table's load
    /// threshold; and rebuilding a table copies its entries, so the old table's copies die with
    /// it (a full retire) instead of moving.
    const INLINE: bool;
    /// Bytes an entry occupies outside its table (a slab slot for `Stable`; none inline).
    const ENTRY_BYTES_OUTSIDE: usize;

    /// What a write stores for a new entry: `entry` itself, or a slab slot holding it.
    fn new_entry(slab: &EntrySlab<K, V>, cache: &mut SlabCache, entry: Entry<K, V>) -> Self::New;

    /// A full slot's entry (`entry`, as [`peek`](Self::peek) gave it), to publish in the table
    /// being built to replace this one (growth, shrink). `Stable` hands over the pointer;
    /// `Inline` clones the entry (the old copy stays readable until the grace period ends), so
    /// this may run user code and panic.
    ///
    /// # Safety
    /// Lock holder only; `entry` is the entry of a full slot of the current table.
    unsafe fn relocate(entry: *mut Entry<K, V>) -> Self::New;

    /// Frees an unlinked entry after its grace period, containing its `Drop` panics.
    ///
    /// # Safety
    /// The grace period of its unlink has passed, it is freed once, and `releaser` is of the
    /// shard's slab; for `Inline`, its table is still allocated (the batch holds it).
    unsafe fn free_unlinked(
        unlinked: Self::Unlinked,
        releaser: &mut Releaser<'_, K, V>,
    ) -> DropPanics;

    /// Moves an unlinked entry out of its storage after its grace period and frees the storage at
    /// once; the caller drops the entry. For `Inline` the storage is a slot of its table, room a
    /// writer may be waiting for, which this gives back before the entry's `Drop` (user code) has
    /// run anywhere.
    ///
    /// # Safety
    /// As for [`free_unlinked`](Self::free_unlinked), with `slab` the shard's slab.
    unsafe fn release_unlinked(unlinked: Self::Unlinked, slab: &EntrySlab<K, V>) -> Entry<K, V>;

    /// Frees an entry an owner took out of a table ([`take`](Self::take)), containing its `Drop`
    /// panics.
    ///
    /// # Safety
    /// The caller owns the entry at `ptr` (taken once, from a table it owns); `releaser` is of the
    /// shard's slab.
    unsafe fn free_taken(ptr: *mut Entry<K, V>, releaser: &mut Releaser<'_, K, V>) -> DropPanics;

    /// Moves an entry an owner took out of a table ([`take`](Self::take)) out of its storage.
    ///
    /// # Safety
    /// As for [`free_taken`](Self::free_taken).
    unsafe fn move_out(ptr: *mut Entry<K, V>, releaser: &mut OwnedReleaser<K, V>) -> Entry<K, V>;

    /// [`move_out`](Self::move_out) for one entry, without a releaser.
    ///
    /// # Safety
    /// As for [`free_taken`](Self::free_taken), with `slab` the shard's slab.
    unsafe fn move_out_of(ptr: *mut Entry<K, V>, slab: &EntrySlab<K, V>) -> Entry<K, V>;

    /// An empty line, for the loom build (whose atomics cannot be zeroed in bulk).
    fn empty_line() -> Self::Line;

    /// Slot `slot`'s placement. Lock holder or owner only.
    fn placement(line: &Self::Line, slot: usize) -> Placement;

    /// Records slot `slot`'s placement. Lock holder only.
    fn set_placement(line: &Self::Line, slot: usize, placement: Placement);

    /// The first slot of this bucket a writer may fill, given its control word `ctrl`. Lock
    /// holder only.
    fn first_free(line: &Self::Line, ctrl: Control) -> Option<usize>;

    /// Stores `new` in `slot`, which [`first_free`](Self::first_free) returned, and returns the
    /// stored entry (without reading the slot back: under loom every load is a branch); the
    /// caller then publishes it by setting the slot's tag with a `Release` store of the control
    /// word.
    ///
    /// # Safety
    /// Lock holder only; `slot` is free.
    unsafe fn put(line: &Self::Line, slot: usize, new: Self::New) -> *mut Entry<K, V>;

    /// Publishes `new` in `slot` in place of its entry and returns the old one to retire and the
    /// new one, if this layout replaces in place; otherwise gives `new` back.
    ///
    /// # Safety
    /// Lock holder only; `slot` is full and `new` holds a key equal to its entry's.
    unsafe fn replace_in_place(
        line: &Self::Line,
        slot: usize,
        new: Self::New,
    ) -> Result<Replaced<Self::Unlinked, K, V>, Self::New>;

    /// Unlinks `slot`'s entry, whose tag the caller has just cleared; `bucket` is the line's
    /// bucket index.
    ///
    /// # Safety
    /// Lock holder only; `slot` was full before its tag was cleared.
    unsafe fn unlink(line: &Self::Line, bucket: usize, slot: usize) -> Self::Unlinked;

    /// For a lock-free reader that acquired the bucket's control word and saw `slot`'s tag set:
    /// the slot's entry, or null if it has been unlinked since.
    ///
    /// # Safety
    /// The reader's guard was pinned before it loaded the table, so whatever the slot held when
    /// the tag was stored is still alive (see `Table::find`).
    unsafe fn load(line: &Self::Line, slot: usize) -> *const Entry<K, V>;

    /// The entry of a full slot, for the lock holder or an owner.
    fn peek(line: &Self::Line, slot: usize) -> *mut Entry<K, V>;

    /// Takes a full slot's entry out of the line for an owner, which then owns the entry; null
    /// if the slot held none. The table clears the slot's tag, so what the line keeps is never
    /// read again.
    ///
    /// # Safety
    /// Owner only.
    unsafe fn take(line: &Self::Line, slot: usize) -> *mut Entry<K, V>;

    /// Hints the CPU to start loading the entries of the full slots of `ctrl`. Reads nothing
    /// through any pointer, so it needs no guard.
    fn prefetch_entries(line: &Self::Line, ctrl: Control);
}

/// [`EpochMap`](crate::EpochMap)'s layout: each slot points to an entry that never moves while
/// it is in the map, so `&V` keeps its address across growth, shrink and other writes.
///
/// A marker type, naming the layout in [`Map`](crate::Map)'s last parameter (and in the
/// iterators'); it has no values.
///
/// ```
/// use epochmap::{layouts::Stable, EpochMap, Map};
///
/// let map: Map<u32, u32, std::collections::hash_map::RandomState, Stable> = EpochMap::new();
/// map.insert(1, 1);
/// ```
#[derive(Debug)]
pub enum Stable {}

impl<K, V> Layout<K, V> for Stable {
    type Line = Slots<K, V>;
    type New = *mut Entry<K, V>;
    type Unlinked = *mut Entry<K, V>;

    const INLINE: bool = false;
    const ENTRY_BYTES_OUTSIDE: usize = Entry::<K, V>::BYTES;

    #[inline]
    fn new_entry(slab: &EntrySlab<K, V>, cache: &mut SlabCache, entry: Entry<K, V>) -> Self::New {
        slab.alloc(cache, entry)
    }

    #[inline]
    unsafe fn relocate(entry: *mut Entry<K, V>) -> *mut Entry<K, V> {
        // The entry itself moves to the new table: its address, and so every `&V`, stays.
        entry
    }

    #[inline]
    unsafe fn free_unlinked(
        unlinked: *mut Entry<K, V>,
        releaser: &mut Releaser<'_, K, V>,
    ) -> DropPanics {
        // SAFETY: an unlinked entry is a slot of the shard's slab, owned by the caller after its
        // grace period (the contract).
        unsafe { releaser.free(unlinked) }
    }

    unsafe fn release_unlinked(unlinked: *mut Entry<K, V>, slab: &EntrySlab<K, V>) -> Entry<K, V> {
        // SAFETY: an unlinked entry is a slot of the shard's slab, owned by the caller after its
        // grace period (the contract).
        unsafe { slab.take(unlinked) }
    }

    #[inline]
    unsafe fn free_taken(ptr: *mut Entry<K, V>, releaser: &mut Releaser<'_, K, V>) -> DropPanics {
        // SAFETY: a taken entry is a slot of the shard's slab owned by the caller (the contract).
        unsafe { releaser.free(ptr) }
    }

    #[inline]
    unsafe fn move_out(ptr: *mut Entry<K, V>, releaser: &mut OwnedReleaser<K, V>) -> Entry<K, V> {
        // SAFETY: as in `free_taken`.
        unsafe { releaser.take(ptr) }
    }

    #[inline]
    unsafe fn move_out_of(ptr: *mut Entry<K, V>, slab: &EntrySlab<K, V>) -> Entry<K, V> {
        // SAFETY: as in `free_taken`.
        unsafe { slab.take(ptr) }
    }

    fn empty_line() -> Slots<K, V> {
        Slots::empty()
    }

    #[inline]
    fn placement(line: &Slots<K, V>, slot: usize) -> Placement {
        line.placement(slot)
    }

    #[inline]
    fn set_placement(line: &Slots<K, V>, slot: usize, placement: Placement) {
        line.set_placement(slot, placement);
    }

    #[inline]
    fn first_free(_: &Slots<K, V>, ctrl: Control) -> Option<usize> {
        // A slot is free exactly while its tag is clear: an unlinked entry lives on in the slab,
        // not in the slot, so the slot can be reused at once.
        ctrl.first_free()
    }

    #[inline(always)]
    unsafe fn put(line: &Slots<K, V>, slot: usize, new: *mut Entry<K, V>) -> *mut Entry<K, V> {
        // SAFETY: `slot < SLOTS` (it came from `first_free`).
        let ptr = unsafe { line.ptrs.get_unchecked(slot) };
        // Release: the entry's contents are visible to whoever acquires this pointer.
        ptr.store(new, Ordering::Release);
        new
    }

    #[inline]
    unsafe fn replace_in_place(
        line: &Slots<K, V>,
        slot: usize,
        new: *mut Entry<K, V>,
    ) -> Result<Replaced<*mut Entry<K, V>, K, V>, *mut Entry<K, V>> {
        let ptr = &line.ptrs[slot];
        // A load and a store, not a `swap`: only the lock holder stores slot pointers, so nothing
        // can change the slot between the two, and a `swap` would be a locked instruction (a full
        // barrier on x86) on every replace. Relaxed load: the lock orders the last store before it.
        let old = ptr.load(Ordering::Relaxed);
        // Release publishes the new entry's contents to readers that acquire the slot; the tag is
        // unchanged because the key (and so its hash) is the same.
        ptr.store(new, Ordering::Release);
        Ok((old, new))
    }

    #[inline]
    unsafe fn unlink(line: &Slots<K, V>, _bucket: usize, slot: usize) -> *mut Entry<K, V> {
        // SAFETY: `slot < SLOTS` (the caller's contract: it was full).
        let ptr = unsafe { line.ptrs.get_unchecked(slot) };
        // Load then store rather than `swap`, as in `replace_in_place`. Relaxed store: a null
        // pointer publishes nothing; a reader that still sees the old pointer reads a retired but
        // live entry, which is a valid pre-removal view.
        let entry = ptr.load(Ordering::Relaxed);
        ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
        entry
    }

    #[inline(always)]
    unsafe fn load(line: &Slots<K, V>, slot: usize) -> *const Entry<K, V> {
        // Acquire pairs with the Release store that published the entry (`put` or
        // `replace_in_place`), so the entry's key and value are initialised before we read them;
        // for a replacement, which leaves the control word as it was, this is the only pairing.
        // SAFETY: the caller saw `slot`'s tag, so `slot < SLOTS`.
        unsafe { line.ptrs.get_unchecked(slot) }.load(Ordering::Acquire)
    }

    #[inline]
    fn peek(line: &Slots<K, V>, slot: usize) -> *mut Entry<K, V> {
        // Relaxed: the lock holder or owner is ordered after every store by the lock or the epoch.
        line.ptrs[slot].load(Ordering::Relaxed)
    }

    #[inline]
    unsafe fn take(line: &Slots<K, V>, slot: usize) -> *mut Entry<K, V> {
        // One load: the pointer is left in place, because the table clears the slot's tag and a
        // slot pointer means nothing without its tag. Not a `swap`: with exclusive access nothing
        // can race, and on x86 a swap is a locked `xchg` (measured: a third of `drain`'s
        // per-entry time on cached tables); nor a load and a null store, which under loom is
        // one more modelled access per entry for a value nobody reads (the scan models' paths
        // through a map's drop are near loom's branch limit).
        line.ptrs[slot].load(Ordering::Relaxed)
    }

    #[inline]
    fn prefetch_entries(line: &Slots<K, V>, ctrl: Control) {
        for slot in ctrl.full() {
            // Relaxed: nothing is read through these pointers; a stale one costs a useless
            // prefetch.
            // SAFETY: `full` yields slot numbers below `SLOTS`.
            let ptr = unsafe { line.ptrs.get_unchecked(slot) }.load(Ordering::Relaxed);
            crate::prefetch::prefetch(ptr);
        }
    }
}
