//! A bucket array: the unit that is published, grown, swapped out by `clear` and reclaimed.
//!
//! Besides the buckets a table keeps a **summary bitmap** with one bit per bucket (64 buckets per
//! word), set exactly while the bucket's mark bit says "occupied". Writers keep it in step with the
//! mark bits under the shard lock; nobody else reads it while the table is live. Growth, `retain`,
//! and the reclaimer walk the summary instead of the buckets, so their cost follows what the table
//! holds rather than its size: a retired 1M-bucket table holding one entry costs 16K summary words
//! and one bucket, not 64 MiB of cache lines.
//!
//! Entries are never dropped by a table's own `Drop`: whether a table's entries die with it
//! ("full retire", after `clear`) or live on in a successor ("shell retire", after growth) is the
//! caller's decision, made explicit by calling [`Table::drain_entries`] or not.

use std::borrow::Borrow;

use crate::array::ZeroedArray;
use crate::bucket::{tag_of, Control, Placement, Slots, SLOTS};
use crate::entry::Entry;
use crate::sync::{AtomicU64, Ordering};

/// Load factor numerator/denominator: a table grows once it holds more than 3/4 of its slots.
/// With seven-slot buckets that keeps the share of buckets that overflow small (about 1 in 5 at the
/// threshold, far fewer on average) while the table stays within dashmap's bytes per entry.
const LOAD_NUM: usize = 3;
const LOAD_DEN: usize = 4;

/// Where a key was found.
#[derive(Clone, Copy)]
pub(crate) struct Found<'g, K, V> {
    pub(crate) bucket: usize,
    pub(crate) slot: usize,
    pub(crate) entry: &'g Entry<K, V>,
}

/// The outcome of looking in one bucket.
enum Probe<'g, K, V> {
    Found(Found<'g, K, V>),
    /// Not here, and no entry ever probed past this bucket: the key is absent.
    Absent,
    /// Not here, but entries did probe past: the search goes on in the next bucket.
    Overflowed,
}

/// What reclaiming a table's entries cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DrainCounts {
    /// Buckets whose slots were read.
    pub(crate) scanned: u64,
    /// Buckets skipped on the strength of their summary or mark bit, slots never read.
    pub(crate) skipped: u64,
    /// Entries handed to the callback.
    pub(crate) entries: u64,
}

/// Hints the CPU to load `ptr`'s cache line; never faults and changes nothing observable. A no-op
/// off x86_64 and under loom (where it would only add modelled loads to explore).
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(all(target_arch = "x86_64", not(epochmap_loom)))]
    // SAFETY: `prefetcht0` is a hint: it never faults, whatever the address, and SSE (which it
    // needs) is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(epochmap_loom))))]
    let _ = ptr;
}

/// A table keeps each bucket's control word in a dense array (`ctrl`, 8 bytes per bucket) and its
/// slot pointers in a cache line of another (`slots`). A probe reads the control word first and a
/// pointer only where a tag matches, so the control words, 1.1 bytes per slot, stay in cache
/// where 64-byte buckets did not: an operation on an absent key (a miss, the insert of a new key,
/// the remove of an absent one) costs no table miss at all (see "Buckets and probing" in
/// `docs/design.md` for the measurements).
///
/// The header is read by every probe of its shard (the array pointers and the mask) and written by
/// nobody while the table is live; it is aligned to a 128-byte line pair of its own so that no
/// neighbouring allocation that someone writes (a garbage batch, a job) can share its line.
#[repr(align(128))]
pub(crate) struct Table<K, V> {
    ctrl: ZeroedArray<AtomicU64>,
    slots: ZeroedArray<Slots<K, V>>,
    summary: ZeroedArray<AtomicU64>,
    mask: usize,
    /// `log2(bucket count)`, kept rather than derived: `count_ones` is a dozen instructions on
    /// x86_64's baseline (no `popcnt`), on every insert.
    log2: u32,
}

impl<K, V> Table<K, V> {
    /// An empty table of `buckets` buckets.
    ///
    /// # Panics
    /// If `buckets` is not a power of two or its byte size does not fit in `isize`; callers size
    /// tables through [`Table::buckets_for`], which rules both out. If the allocator fails, this
    /// calls `handle_alloc_error` like std's collections; [`Table::try_new`] reports it instead.
    pub(crate) fn new(buckets: usize) -> Self {
        Self::try_new(buckets).unwrap_or_else(|layout| std::alloc::handle_alloc_error(layout))
    }

    /// [`Table::new`], or the layout the allocator could not provide.
    pub(crate) fn try_new(buckets: usize) -> Result<Self, std::alloc::Layout> {
        assert!(
            buckets.is_power_of_two(),
            "bucket count must be a power of two"
        );
        Ok(Table {
            // SAFETY: a zero control word is an empty bucket with no overflow.
            ctrl: unsafe { ZeroedArray::new(buckets, || AtomicU64::new(0)) }?,
            // SAFETY: all-zero slot pointers are null.
            slots: unsafe { ZeroedArray::new(buckets, Slots::empty) }?,
            // SAFETY: zero is a valid `AtomicU64`.
            summary: unsafe { ZeroedArray::new(buckets.div_ceil(64), || AtomicU64::new(0)) }?,
            mask: buckets - 1,
            log2: buckets.trailing_zeros(),
        })
    }

    /// The smallest power-of-two bucket count whose load threshold admits `len` entries, or `None`
    /// if such a table would not fit in the address space.
    pub(crate) fn buckets_for(len: usize) -> Option<usize> {
        let slots = len.checked_mul(LOAD_DEN)?.div_ceil(LOAD_NUM);
        let buckets = slots.div_ceil(SLOTS).max(1).checked_next_power_of_two()?;
        Self::bytes_for(buckets).filter(|&b| b <= isize::MAX as usize)?;
        Some(buckets)
    }

    /// Heap bytes of a table with `buckets` buckets: control words, slot lines (with their
    /// alignment slack), summary and header, exactly as requested from the allocator.
    pub(crate) fn bytes_for(buckets: usize) -> Option<usize> {
        let ctrl = ZeroedArray::<AtomicU64>::bytes_for(buckets)?;
        let slots = ZeroedArray::<Slots<K, V>>::bytes_for(buckets)?;
        let summary = ZeroedArray::<AtomicU64>::bytes_for(buckets.div_ceil(64))?;
        ctrl.checked_add(slots)?
            .checked_add(summary)?
            .checked_add(std::mem::size_of::<Self>())
    }

    pub(crate) fn bytes(&self) -> usize {
        Self::bytes_for(self.ctrl.len()).expect("a live table's size fits in usize")
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.ctrl.len()
    }

    /// How many entries this table takes before its shard grows it.
    pub(crate) fn max_len(&self) -> usize {
        self.ctrl.len() * SLOTS * LOAD_NUM / LOAD_DEN
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask
    }

    /// Whether `bucket` is the home bucket of `hash` in this table.
    #[inline]
    pub(crate) fn is_home(&self, hash: u64, bucket: usize) -> bool {
        self.home(hash) == bucket
    }

    /// Looks `key` up, lock-free.
    ///
    /// # Safety
    /// Every slot pointer of this table must stay valid for `'g`: the caller loaded the table under
    /// an epoch guard that outlives `'g`, or owns the table exclusively. (Entries unlinked from a
    /// table are retired through the epoch after the unlink, and a table is freed only after its own
    /// grace period, so a guard pinned before the table load keeps both alive.)
    #[inline]
    pub(crate) unsafe fn find<'g, Q>(&'g self, hash: u64, key: &Q) -> Option<Found<'g, K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // The home bucket is probed inline and the rest of the path out of line: nearly every
        // lookup ends in its home bucket, and a short inline path lets the CPU overlap the cache
        // misses of more consecutive lookups.
        let index = self.home(hash);
        // Start the slot line's miss alongside the control word's: a hit needs both, and after a
        // tag match the pointer load then overlaps instead of waiting for the control word.
        // SAFETY: `index <= mask`, the last bucket.
        prefetch(unsafe { self.slots.get_unchecked(index) });
        // SAFETY: forwarded from this function's contract.
        match unsafe { self.find_in(index, tag_of(hash), key) } {
            Probe::Found(found) => Some(found),
            Probe::Absent => None,
            // SAFETY: as above.
            Probe::Overflowed => unsafe { self.find_past(index, tag_of(hash), key) },
        }
    }

    /// [`find`](Self::find) beyond the home bucket `home`, whose overflow count was non-zero.
    ///
    /// # Safety
    /// As for [`Table::find`].
    #[cold]
    #[inline(never)]
    unsafe fn find_past<'g, Q>(&'g self, home: usize, tag: u8, key: &Q) -> Option<Found<'g, K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut index = home;
        // Bounded so that a table whose every overflow count has saturated still terminates.
        for _ in 0..self.mask {
            index = (index + 1) & self.mask;
            // SAFETY: forwarded from this function's contract.
            match unsafe { self.find_in(index, tag, key) } {
                Probe::Found(found) => return Some(found),
                Probe::Absent => return None,
                Probe::Overflowed => {}
            }
        }
        None
    }

    /// Looks for `key` in bucket `index` alone.
    ///
    /// # Safety
    /// As for [`Table::find`].
    #[inline(always)]
    unsafe fn find_in<'g, Q>(&'g self, index: usize, tag: u8, key: &Q) -> Probe<'g, K, V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let index = index & self.mask;
        // SAFETY: `index` is masked by `mask`, the bucket count minus one.
        let (ctrl, slots) = unsafe {
            (
                self.ctrl.get_unchecked(index),
                self.slots.get_unchecked(index),
            )
        };
        // Acquire pairs with the writer's Release store of this word, which follows its store
        // of the slot pointer: a tag we see comes with the pointer it describes.
        let ctrl = Control(ctrl.load(Ordering::Acquire));
        for slot in ctrl.matches(tag) {
            // Acquire pairs with the Release store that published the entry (insert or
            // replace), so the entry's key and value are initialised before we read them.
            // SAFETY: `matches` yields slot numbers below `SLOTS`.
            let ptr = unsafe { slots.ptrs.get_unchecked(slot) }.load(Ordering::Acquire);
            // Unlinking goes through the epoch, and `'g`'s guard was pinned before it.
            // SAFETY: a non-null slot pointer is a live entry for `'g` (this fn's contract).
            if let Some(entry) = unsafe { ptr.as_ref() } {
                if entry.key.borrow() == key {
                    return Probe::Found(Found {
                        bucket: index,
                        slot,
                        entry,
                    });
                }
            }
        }
        if ctrl.overflow() == 0 {
            Probe::Absent
        } else {
            Probe::Overflowed
        }
    }

    /// Publishes `entry` in the first free slot on `hash`'s probe path.
    ///
    /// Overflow counts along the way are raised *before* the entry is published, so a reader that
    /// can see the entry can also follow the counts to it.
    ///
    /// # Safety
    /// The caller is this table's only writer (it holds the shard lock, or the table is not yet
    /// published), `entry` is a live entry whose key hashes to `hash` and is not in the table, and
    /// the table is below its load threshold, so a free slot exists.
    #[inline]
    pub(crate) unsafe fn insert_new(&self, hash: u64, entry: *mut Entry<K, V>) {
        let log2 = self.log2;
        let placed = move |displacement| Placement::new(hash, log2, displacement);
        // SAFETY: the caller's contract; `home` is `hash`'s home bucket.
        unsafe { self.place(self.home(hash), tag_of(hash), entry, placed) }
    }

    /// Publishes entry `entry`, which sits in slot `slot` of bucket `index` of `old`, in this
    /// table, which is being built to replace `old` (growth, shrink). Its home bucket here comes
    /// from the slot's [`Placement`] when that holds enough hash bits, without touching the entry;
    /// otherwise from `hash_of()`, its hash, which the caller computes from its key.
    ///
    /// # Safety
    /// As for [`Table::insert_new`], and `old` is the table the entry was taken from, owned or
    /// locked by the caller.
    pub(crate) unsafe fn insert_moved(
        &self,
        old: &Table<K, V>,
        index: usize,
        slot: usize,
        entry: *mut Entry<K, V>,
        hash_of: impl FnOnce() -> u64,
    ) {
        // Relaxed: the caller owns `old` or holds its lock (see `Slots::placements`).
        let tag = Control(old.ctrl[index].load(Ordering::Relaxed)).tag(slot);
        let (from, to) = (old.log2, self.log2);
        match old.slots[index].placement(slot).relocate(index, from, to) {
            Some((home, bits)) => {
                let placed = move |displacement| Placement::relocated(bits, displacement);
                // SAFETY: the caller's contract; `home` is the entry's home bucket here.
                unsafe { self.place(home, tag, entry, placed) }
            }
            None => {
                let hash = hash_of();
                let placed = move |displacement| Placement::new(hash, to, displacement);
                // SAFETY: as above, with the home bucket from the entry's hash.
                unsafe { self.place(self.home(hash), tag, entry, placed) }
            }
        }
    }

    /// Publishes `entry` (tag `tag`) in the first free slot from bucket `home` on, recording the
    /// slot's placement as `placed(displacement)`.
    ///
    /// # Safety
    /// As for [`Table::insert_new`], with `home` the entry's home bucket and `tag` its tag.
    #[inline(always)]
    unsafe fn place(
        &self,
        home: usize,
        tag: u8,
        entry: *mut Entry<K, V>,
        placed: impl FnOnce(usize) -> Placement,
    ) {
        // SAFETY: `home <= mask`, the last bucket.
        let ctrl = Control(unsafe { self.ctrl.get_unchecked(home) }.load(Ordering::Relaxed));
        // Relaxed (above and in `place_past`): only the writer that holds the shard lock stores
        // control words.
        match ctrl.first_free() {
            // SAFETY: `home` is a bucket and `slot` a free slot of it; the caller's contract.
            Some(slot) => unsafe { self.publish_at(home, slot, ctrl, tag, entry, placed(0)) },
            // SAFETY: the caller's contract.
            None => unsafe { self.place_past(home, tag, entry, placed) },
        }
    }

    /// [`place`](Self::place) when the home bucket `home` is full: raises the overflow count of
    /// every full bucket from `home` on and publishes the entry in the first free slot.
    ///
    /// # Safety
    /// As for [`Table::place`].
    #[cold]
    #[inline(never)]
    unsafe fn place_past(
        &self,
        home: usize,
        tag: u8,
        entry: *mut Entry<K, V>,
        placed: impl FnOnce(usize) -> Placement,
    ) {
        let mut index = home;
        for displacement in 0..self.ctrl.len() {
            let word = &self.ctrl[index];
            let ctrl = Control(word.load(Ordering::Relaxed));
            if let Some(slot) = ctrl.first_free() {
                let placement = placed(displacement);
                // SAFETY: `index` is a bucket and `slot` a free slot of it.
                unsafe { self.publish_at(index, slot, ctrl, tag, entry, placement) };
                return;
            }
            // Release, like every store of a control word: a reader that acquires this value must
            // also see the slot pointers that the tags it carries describe.
            word.store(ctrl.with_overflow_step(true).0, Ordering::Release);
            index = (index + 1) & self.mask;
        }
        unreachable!("a table below its load threshold always has a free slot");
    }

    /// Stores `entry` and its `placement` in the free `slot` of bucket `index`, whose control word
    /// is `ctrl`, then publishes it by setting the slot's tag.
    ///
    /// # Safety
    /// The caller is this table's only writer, `index` is a bucket, `slot` is free in `ctrl`, and
    /// `ctrl` is the bucket's current control word.
    #[inline(always)]
    unsafe fn publish_at(
        &self,
        index: usize,
        slot: usize,
        ctrl: Control,
        tag: u8,
        entry: *mut Entry<K, V>,
        placement: Placement,
    ) {
        // SAFETY: `index` is a bucket and `slot < SLOTS` (the caller's contract).
        let (word, slots) = unsafe {
            (
                self.ctrl.get_unchecked(index),
                self.slots.get_unchecked(index),
            )
        };
        slots.set_placement(slot, placement);
        // SAFETY: `slot < SLOTS`.
        let ptr = unsafe { slots.ptrs.get_unchecked(slot) };
        // Release: the entry's contents are visible to whoever acquires this pointer.
        ptr.store(entry, Ordering::Release);
        // Release: a reader that sees the tag (Acquire) also sees the pointer stored above.
        word.store(ctrl.with_new_tag(slot, tag).0, Ordering::Release);
        if ctrl.known_empty() {
            self.set_summary(index, true);
        }
    }

    /// Publishes `entry` in place of the entry at `bucket`/`slot` and returns the old one.
    ///
    /// # Safety
    /// The caller is this table's only writer and `entry` holds a key equal to the one it replaces.
    pub(crate) unsafe fn replace(
        &self,
        bucket: usize,
        slot: usize,
        entry: *mut Entry<K, V>,
    ) -> *mut Entry<K, V> {
        let slot = &self.slots[bucket].ptrs[slot];
        // A load and a store, not a `swap`: only the lock holder stores slot pointers, so nothing
        // can change the slot between the two, and a `swap` would be a locked instruction (a full
        // barrier on x86) on every replace. Relaxed load: the lock orders the last store before it.
        let old = slot.load(Ordering::Relaxed);
        // Release publishes the new entry's contents to readers that acquire the slot; the tag is
        // unchanged because the key (and so its hash) is the same.
        slot.store(entry, Ordering::Release);
        old
    }

    /// Unlinks the entry at `bucket`/`slot` (which `hash` hashes to) and returns it. The caller
    /// retires it through the epoch.
    ///
    /// # Safety
    /// The caller is this table's only writer, and `bucket`/`slot` came from a `find` of a key with
    /// this `hash` under the same lock.
    pub(crate) unsafe fn remove_at(
        &self,
        hash: u64,
        bucket: usize,
        slot: usize,
    ) -> *mut Entry<K, V> {
        // SAFETY: `bucket` and `slot` came from a `find` on this table (the caller's contract).
        let (word, ptr) = unsafe {
            (
                self.ctrl.get_unchecked(bucket),
                self.slots.get_unchecked(bucket).ptrs.get_unchecked(slot),
            )
        };
        // Relaxed load: the writer is the only one storing. Release store: see `insert_new`.
        let ctrl = Control(word.load(Ordering::Relaxed)).without_tag(slot);
        word.store(ctrl.0, Ordering::Release);
        // Load then store rather than `swap`, as in `replace`: the lock holder is the only writer.
        // Relaxed store: a null pointer publishes nothing; a reader that still sees the old
        // pointer reads a retired but live entry, which is a valid pre-removal view.
        let entry = ptr.load(Ordering::Relaxed);
        ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
        if ctrl.known_empty() {
            self.set_summary(bucket, false);
        }
        let home = self.home(hash);
        if home != bucket {
            self.lower_counts(home, bucket);
        }
        entry
    }

    /// Lowers the overflow counts of the buckets from `home` up to (not including) `bucket`: the
    /// path an entry that homes in `home` took to `bucket` when it was inserted.
    #[cold]
    #[inline(never)]
    fn lower_counts(&self, home: usize, bucket: usize) {
        let mut index = home;
        while index != bucket {
            let passed = &self.ctrl[index];
            let c = Control(passed.load(Ordering::Relaxed));
            passed.store(c.with_overflow_step(false).0, Ordering::Release);
            index = (index + 1) & self.mask;
        }
    }

    #[inline]
    fn set_summary(&self, bucket: usize, occupied: bool) {
        let word = &self.summary[bucket / 64];
        let bit = 1u64 << (bucket % 64);
        // Relaxed, and a plain load/store rather than an RMW: the summary is written only under the
        // shard lock and read only by that lock's holder or by the reclaimer after the grace period,
        // both of which are ordered after this store by the lock or the epoch.
        let old = word.load(Ordering::Relaxed);
        let new = if occupied { old | bit } else { old & !bit };
        word.store(new, Ordering::Relaxed);
    }

    /// Calls `f` for every bucket the summary marks occupied, in index order. Writers and owners
    /// only (see the module docs).
    pub(crate) fn for_each_occupied(&self, mut f: impl FnMut(usize)) -> DrainCounts {
        let mut counts = DrainCounts::default();
        let total = self.ctrl.len() as u64;
        for (w, word) in self.summary.iter().enumerate() {
            // Relaxed: see `set_summary`.
            let mut bits = word.load(Ordering::Relaxed);
            counts.scanned += u64::from(bits.count_ones());
            while bits != 0 {
                f(w * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        counts.skipped = total - counts.scanned;
        counts
    }

    /// The entries of bucket `index` as raw pointers, read by the table's writer or owner.
    pub(crate) fn entries_in(
        &self,
        index: usize,
    ) -> impl Iterator<Item = (usize, *mut Entry<K, V>)> + '_ {
        let slots = &self.slots[index];
        // Relaxed: the caller is the writer or the owner, ordered after every store by the lock or
        // by the epoch.
        let ctrl = Control(self.ctrl[index].load(Ordering::Relaxed));
        ctrl.full()
            .map(move |slot| (slot, slots.ptrs[slot].load(Ordering::Relaxed)))
    }

    /// Hands every entry to `f`, skipping buckets the summary or mark bit says are empty without
    /// reading their slots, and leaves the table empty of entries (its arrays are freed when it
    /// drops).
    ///
    /// # Safety
    /// The caller owns the table exclusively (it is unpublished, or retired and past its grace
    /// period, or the map is being dropped) and takes ownership of each entry passed to `f`.
    pub(crate) unsafe fn drain_entries(&self, mut f: impl FnMut(*mut Entry<K, V>)) -> DrainCounts {
        let mut marked = 0;
        let mut entries = 0;
        let mut counts = self.for_each_occupied(|index| {
            let (word, slots) = (&self.ctrl[index], &self.slots[index]);
            // Relaxed: exclusive access (see the contract).
            let ctrl = Control(word.load(Ordering::Relaxed));
            if ctrl.known_empty() {
                marked += 1;
                return;
            }
            for slot in ctrl.full() {
                let ptr = slots.ptrs[slot].swap(std::ptr::null_mut(), Ordering::Relaxed);
                if !ptr.is_null() {
                    entries += 1;
                    f(ptr);
                }
            }
            word.store(0, Ordering::Relaxed);
        });
        counts.scanned -= marked;
        counts.skipped += marked;
        counts.entries = entries;
        counts
    }

    /// Unlinks and returns the next entry at or after bucket `*cursor`, for an owner draining the
    /// table. Overflow counts are left as they were: a drained table is never probed again.
    pub(crate) fn take_next(&self, cursor: &mut usize) -> Option<*mut Entry<K, V>> {
        while *cursor < self.ctrl.len() {
            let word = *cursor / 64;
            // Relaxed: exclusive access.
            let bits = self.summary[word].load(Ordering::Relaxed) & (!0u64 << (*cursor % 64));
            if bits == 0 {
                *cursor = (word + 1) * 64;
                continue;
            }
            let index = word * 64 + bits.trailing_zeros() as usize;
            *cursor = index;
            let word = &self.ctrl[index];
            let ctrl = Control(word.load(Ordering::Relaxed));
            match ctrl.full().lowest() {
                Some(slot) => {
                    let next = ctrl.without_tag(slot);
                    word.store(next.0, Ordering::Relaxed);
                    if next.known_empty() {
                        self.set_summary(index, false);
                    }
                    // A load and a store rather than a `swap`: with exclusive access nothing can
                    // race, and on x86 a swap is a locked `xchg` (measured: a third of `drain`'s
                    // per-entry time on cached tables).
                    let ptr = &self.slots[index].ptrs[slot];
                    let entry = ptr.load(Ordering::Relaxed);
                    ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
                    return Some(entry);
                }
                None => self.set_summary(index, false),
            }
        }
        None
    }

    /// For a lock-free reader: the entries of bucket `index`, read with one control-word load and
    /// one slot load per full slot, stored in `out[..n]`; returns `n`, or `None` past the last
    /// bucket. Reading the whole bucket at once lets an iterator yield from a local buffer and
    /// read the bucket's slot line once.
    ///
    /// # Safety
    /// As for [`Table::find`]: every pointer stored in `out[..n]` is then a live entry for as long
    /// as the guard the caller loaded this table under.
    #[inline]
    pub(crate) unsafe fn load_bucket(
        &self,
        index: usize,
        out: &mut [*const Entry<K, V>; SLOTS],
    ) -> Option<usize> {
        let word = self.ctrl.get(index)?;
        // SAFETY: the two arrays have the same length, and `index` is in bounds of `ctrl`.
        let slots = unsafe { self.slots.get_unchecked(index) };
        // Acquire: as in `find`, the tags we act on come with their slot pointers.
        let ctrl = Control(word.load(Ordering::Acquire));
        let mut n = 0;
        for slot in ctrl.full() {
            // Acquire: as in `find`, the entry's contents are visible once we see its pointer (a
            // replacement changes the pointer alone, not the control word). A slot whose tag we
            // saw may already be null again (a removal after our control load): that entry was
            // not present for the whole walk, and skipping it is allowed.
            // SAFETY: `full` yields slot numbers below `SLOTS`.
            let ptr = unsafe { slots.ptrs.get_unchecked(slot) }.load(Ordering::Acquire);
            if !ptr.is_null() {
                // SAFETY: a bucket has `SLOTS` slots, so at most `SLOTS` are full and `n < SLOTS`.
                unsafe { *out.get_unchecked_mut(n) = ptr };
                n += 1;
            }
        }
        Some(n)
    }

    /// For a lock-free reader: bucket `index`'s control word (tags, mark bit, overflow count).
    /// `index` must be below the bucket count.
    pub(crate) fn load_ctrl(&self, index: usize) -> Control {
        // Acquire: as in `find`, the tags we act on come with their slot pointers, and an
        // overflow count we read is at least the one stored before any entry we saw past it.
        Control(self.ctrl[index].load(Ordering::Acquire))
    }

    /// For a lock-free reader: the entry in `slot` of bucket `index`, if any.
    ///
    /// # Safety
    /// As for [`Table::find`].
    pub(crate) unsafe fn load_entry(&self, index: usize, slot: usize) -> Option<&Entry<K, V>> {
        // Acquire: as in `find`, the entry's contents are visible once we see its pointer.
        let ptr = self.slots[index].ptrs[slot].load(Ordering::Acquire);
        // SAFETY: per this function's contract a non-null slot pointer is a live entry for as long
        // as the caller's guard.
        unsafe { ptr.as_ref() }
    }

    /// Hints the CPU to start loading the entries of bucket `index` (nothing past the last
    /// bucket). Entries are random slots of their shard's slab, so a walk in bucket order misses
    /// the cache on nearly every one; started a few buckets ahead, several misses are in flight at
    /// once. Reads only: the pointers are never dereferenced, so it needs no guard.
    #[inline]
    pub(crate) fn prefetch_entries(&self, index: usize) {
        let (Some(word), Some(slots)) = (self.ctrl.get(index), self.slots.get(index)) else {
            return;
        };
        // Relaxed: nothing is read through these pointers; a stale one costs a useless prefetch.
        let ctrl = Control(word.load(Ordering::Relaxed));
        for slot in ctrl.full() {
            // SAFETY: `full` yields slot numbers below `SLOTS`.
            let ptr = unsafe { slots.ptrs.get_unchecked(slot) }.load(Ordering::Relaxed);
            prefetch(ptr);
        }
    }

    /// Hints the CPU to start loading bucket `index`'s slot line (nothing past the last bucket;
    /// the control words are read in order, which the hardware prefetcher follows by itself);
    /// reads nothing, so it needs no guard.
    #[inline]
    pub(crate) fn prefetch_bucket(&self, index: usize) {
        if let Some(slots) = self.slots.get(index) {
            prefetch(slots);
        }
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;

    fn boxed(k: u64) -> *mut Entry<u64, u64> {
        Box::into_raw(Box::new(Entry {
            key: k,
            value: k * 10,
        }))
    }

    #[test]
    fn buckets_for_grows_by_powers_of_two_and_respects_the_load_factor() {
        assert_eq!(Table::<u64, u64>::buckets_for(0), Some(1));
        assert_eq!(Table::<u64, u64>::buckets_for(5), Some(1));
        assert_eq!(Table::<u64, u64>::buckets_for(6), Some(2));
        let b = Table::<u64, u64>::buckets_for(1_000_000).unwrap();
        assert!(b.is_power_of_two());
        assert!(b * SLOTS * 3 / 4 >= 1_000_000);
        assert!(b / 2 * SLOTS * 3 / 4 < 1_000_000);
        assert_eq!(Table::<u64, u64>::buckets_for(usize::MAX), None);
        assert_eq!(Table::<u64, u64>::buckets_for(usize::MAX / 8), None);
    }

    #[test]
    fn colliding_hashes_overflow_into_neighbours_and_removal_undoes_the_counts() {
        let table = Table::<u64, u64>::new(4);
        let hash = 0x1234_5678_9abc_def0 & !3; // every key homes in bucket 0
        let keys: Vec<u64> = (0..12).collect();
        for &k in &keys {
            // SAFETY: single-threaded test owns the table; keys are distinct; 12 < 4 * 7.
            unsafe { table.insert_new(hash, boxed(k)) };
        }
        for &k in &keys {
            // SAFETY: the test owns the table.
            let found = unsafe { table.find(hash, &k) }.expect("every inserted key is found");
            assert_eq!(found.entry.value, k * 10);
        }
        // SAFETY: the test owns the table.
        assert!(unsafe { table.find(hash, &99) }.is_none());
        for &k in &keys {
            // SAFETY: the test owns the table; `found` came from a find under the same ownership.
            unsafe {
                let found = table.find(hash, &k).unwrap();
                drop(Box::from_raw(table.remove_at(
                    hash,
                    found.bucket,
                    found.slot,
                )));
            }
        }
        for b in 0..4 {
            let ctrl = Control(table.ctrl[b].load(Ordering::Relaxed));
            assert_eq!(ctrl, Control(0), "bucket {b} is back to all-zero");
        }
        let counts = table.for_each_occupied(|_| panic!("no bucket is occupied"));
        assert_eq!(counts.skipped, 4);
    }

    #[test]
    fn draining_a_sparse_table_reads_only_the_occupied_bucket() {
        let table = Table::<u64, u64>::new(1 << 14);
        // SAFETY: the test owns the table.
        unsafe { table.insert_new(7, boxed(7)) };
        let mut seen = Vec::new();
        // SAFETY: the test owns the table and takes the entries it is handed.
        let counts = unsafe {
            table.drain_entries(|e| {
                seen.push((*e).key);
                drop(Box::from_raw(e));
            })
        };
        assert_eq!(seen, vec![7]);
        assert_eq!(counts.scanned, 1);
        assert_eq!(counts.skipped, (1 << 14) - 1);
        assert_eq!(counts.entries, 1);
    }
}
