//! A bucket array: the unit that is published, grown, swapped out by `clear` and reclaimed.
//!
//! Besides the buckets a table keeps a **summary bitmap** with one bit per bucket (64 buckets per
//! word), set exactly while the bucket's mark bit says "occupied". Writers keep it in step with the
//! mark bits under the shard lock; nobody else reads it while the table is live. Growth, `retain`,
//! and the reclaimer walk the summary instead of the buckets, so their cost follows what the table
//! holds rather than its size: a retired 1M-bucket table holding one entry costs 16K summary words
//! and one bucket, not 64 MiB of cache lines.
//!
//! What a bucket's slots hold (pointers to entries, or the entries themselves) is the table's
//! [`Layout`]; probing, control words, overflow counts, placements and the summary are the same
//! for every layout.
//!
//! Entries are never dropped by a table's own `Drop`: whether a table's entries die with it
//! ("full retire", after `clear`) or live on in a successor ("shell retire", after growth) is the
//! caller's decision, made explicit by calling [`Table::drain_entries`] or not.

use std::borrow::Borrow;

use crate::array::ZeroedArray;
use crate::bucket::{tag_of, Control, Placement, SLOTS};
use crate::entry::Entry;
use crate::layout::{Layout, Stable};
use crate::prefetch::prefetch;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

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

/// How many of the first buckets a walk of an inline table reads a second time, for the entries
/// whose probe path wrapped past the last bucket (see `Table::walk_len`): the displacements a
/// placement records exactly are 0..=6, so an entry in bucket `i < 7` is known to have wrapped
/// exactly when its displacement is above `i`.
const WRAP_ZONE: usize = 7;

/// Whether an entry in bucket `index`, `displacement` buckets past its home, counts as wrapped in
/// walk order (see `Table::walk_len`).
#[inline]
fn wrapped(index: usize, displacement: usize) -> bool {
    index < WRAP_ZONE && displacement > index
}

/// A table keeps each bucket's control word in a dense array (`ctrl`, 8 bytes per bucket) and its
/// slots in another (`slots`: one [`Layout::Line`] per bucket, for [`Stable`] a cache line of slot
/// pointers). A probe reads the control word first and a slot only where a tag matches, so the
/// control words, 1.1 bytes per slot, stay in cache where 64-byte buckets did not: an operation
/// on an absent key (a miss, the insert of a new key, the remove of an absent one) costs no table
/// miss at all (see "Buckets and probing" in `docs/design.md` for the measurements).
///
/// The header is read by every probe of its shard (the array pointers and the mask) and written by
/// nobody while the table is live; it is aligned to a 128-byte line pair of its own so that no
/// neighbouring allocation that someone writes (a garbage batch, a job) can share its line.
#[repr(align(128))]
pub(crate) struct Table<K, V, L: Layout<K, V> = Stable> {
    ctrl: ZeroedArray<AtomicU64>,
    slots: ZeroedArray<L::Line>,
    summary: ZeroedArray<AtomicU64>,
    mask: usize,
    /// `log2(bucket count)`, kept rather than derived: `count_ones` is a dozen instructions on
    /// x86_64's baseline (no `popcnt`), on every insert.
    log2: u32,
    /// Who still needs this table's memory; see [`Holds`].
    holds: Holds,
}

/// For a layout whose entries live in the table ([`Layout::INLINE`]), the batches of unlinked
/// slots waiting for their grace period point into the table, and may be freed after the table
/// itself leaves its shard (jobs run on any thread, in no fixed order). So the table counts its
/// holders and the last one to let go frees it: its owner (the shard, then whoever retired,
/// drained or dropped it) and each such batch. A line of its own: batches write it, probes read
/// the header's first line.
#[repr(align(64))]
struct Holds {
    /// Holders: 1 for the owner, plus one per batch of unlinked slots not yet freed.
    refs: AtomicUsize,
    /// Unlinked slots of this table freed so far (the lock holder counts those it unlinked, so
    /// the difference is the slots still reserved; see `Shard::reserved`).
    released: AtomicUsize,
}

impl<K, V, L: Layout<K, V>> Table<K, V, L> {
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
            // SAFETY: an all-zero line is empty (`Layout::Line`'s contract).
            slots: unsafe { ZeroedArray::new(buckets, L::empty_line) }?,
            // SAFETY: zero is a valid `AtomicU64`.
            summary: unsafe { ZeroedArray::new(buckets.div_ceil(64), || AtomicU64::new(0)) }?,
            mask: buckets - 1,
            log2: buckets.trailing_zeros(),
            holds: Holds {
                refs: AtomicUsize::new(1),
                released: AtomicUsize::new(0),
            },
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
        let slots = ZeroedArray::<L::Line>::bytes_for(buckets)?;
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
        // of the slot: a tag we see comes with the entry it describes.
        let ctrl = Control(ctrl.load(Ordering::Acquire));
        for slot in ctrl.matches(tag) {
            // SAFETY: we acquired the word and saw `slot`'s tag, under this fn's contract.
            let ptr = unsafe { L::load(slots, slot) };
            // Unlinking goes through the epoch, and `'g`'s guard was pinned before it.
            // SAFETY: a non-null entry is live for `'g` (this fn's contract).
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
    pub(crate) unsafe fn insert_new(&self, hash: u64, entry: L::New) -> *mut Entry<K, V> {
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
        old: &Table<K, V, L>,
        index: usize,
        slot: usize,
        entry: L::New,
        hash_of: impl FnOnce() -> u64,
    ) -> *mut Entry<K, V> {
        // Relaxed: the caller owns `old` or holds its lock (placements are writer-only).
        let tag = Control(old.ctrl[index].load(Ordering::Relaxed)).tag(slot);
        let (from, to) = (old.log2, self.log2);
        match L::placement(&old.slots[index], slot).relocate(index, from, to) {
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
        entry: L::New,
        placed: impl FnOnce(usize) -> Placement,
    ) -> *mut Entry<K, V> {
        // SAFETY: `home <= mask`, the last bucket (both arrays have one element per bucket).
        let (word, line) = unsafe {
            (
                self.ctrl.get_unchecked(home),
                self.slots.get_unchecked(home),
            )
        };
        let ctrl = Control(word.load(Ordering::Relaxed));
        // Relaxed (above and in `place_past`): only the writer that holds the shard lock stores
        // control words.
        match L::first_free(line, ctrl) {
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
        entry: L::New,
        placed: impl FnOnce(usize) -> Placement,
    ) -> *mut Entry<K, V> {
        let mut index = home;
        for displacement in 0..self.ctrl.len() {
            let word = &self.ctrl[index];
            let ctrl = Control(word.load(Ordering::Relaxed));
            if let Some(slot) = L::first_free(&self.slots[index], ctrl) {
                let placement = placed(displacement);
                // SAFETY: `index` is a bucket and `slot` a free slot of it.
                return unsafe { self.publish_at(index, slot, ctrl, tag, entry, placement) };
            }
            // Release, like every store of a control word: a reader that acquires this value must
            // also see the slot pointers that the tags it carries describe.
            word.store(ctrl.with_overflow_step(true).0, Ordering::Release);
            index = (index + 1) & self.mask;
        }
        unreachable!("a table below its load threshold always has a free slot");
    }

    /// Stores `entry` and its `placement` in the free `slot` of bucket `index`, whose control word
    /// is `ctrl`, then publishes it by setting the slot's tag. Returns the published entry.
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
        entry: L::New,
        placement: Placement,
    ) -> *mut Entry<K, V> {
        // SAFETY: `index` is a bucket and `slot < SLOTS` (the caller's contract).
        let (word, slots) = unsafe {
            (
                self.ctrl.get_unchecked(index),
                self.slots.get_unchecked(index),
            )
        };
        L::set_placement(slots, slot, placement);
        // SAFETY: `slot` is free (the caller's contract).
        let entry = unsafe { L::put(slots, slot, entry) };
        // Release: a reader that sees the tag (Acquire) also sees the slot stored above.
        word.store(ctrl.with_new_tag(slot, tag).0, Ordering::Release);
        if ctrl.known_empty() {
            self.set_summary(index, true);
        }
        entry
    }

    /// Publishes `entry` in place of the entry at `bucket`/`slot` (whose key hashes to `hash`)
    /// and returns the old one, which the caller retires through the epoch, with the new one.
    ///
    /// # Safety
    /// The caller is this table's only writer, `bucket`/`slot` came from a `find` of a key with
    /// this `hash` under the same lock, and `entry` holds a key equal to the one it replaces.
    #[inline]
    pub(crate) unsafe fn replace(
        &self,
        hash: u64,
        bucket: usize,
        slot: usize,
        entry: L::New,
    ) -> (L::Unlinked, *mut Entry<K, V>) {
        let line = &self.slots[bucket];
        // SAFETY: the caller's contract; `bucket` is a bucket of this table.
        match unsafe { L::replace_in_place(line, slot, entry) } {
            Ok(replaced) => replaced,
            // SAFETY: forwarded.
            Err(entry) => unsafe { self.replace_elsewhere(hash, bucket, slot, entry) },
        }
    }

    /// [`replace`](Self::replace) for a layout that never writes a published slot: publishes
    /// `entry` in a free slot at or past `bucket` on the key's probe path, then unlinks the old
    /// one. A lock-free reader finds one of the two, never neither:
    ///
    /// * in one bucket, one `Release` store of its control word sets the new tag and clears the
    ///   old one, so a reader sees the word before or after, with exactly one of them;
    /// * otherwise `bucket` is full, the overflow counts on the way to the new slot (including
    ///   `bucket`'s) are raised and the new entry published *before* the old tag is cleared, and
    ///   a reader walks the path in order: if it reads `bucket` after the clear, the raised count
    ///   sends it on to the new entry.
    ///
    /// # Safety
    /// As for [`replace`](Self::replace), and a free slot exists on the probe path.
    #[cold]
    #[inline(never)]
    unsafe fn replace_elsewhere(
        &self,
        hash: u64,
        bucket: usize,
        slot: usize,
        entry: L::New,
    ) -> (L::Unlinked, *mut Entry<K, V>) {
        let (home, tag, log2) = (self.home(hash), tag_of(hash), self.log2);
        let past_home = bucket.wrapping_sub(home) & self.mask;
        let (word, line) = (&self.ctrl[bucket], &self.slots[bucket]);
        // Relaxed: only the lock holder stores control words.
        let ctrl = Control(word.load(Ordering::Relaxed));
        if let Some(free) = L::first_free(line, ctrl) {
            L::set_placement(line, free, Placement::new(hash, log2, past_home));
            // SAFETY: `free` is free; the caller holds the lock.
            let new = unsafe { L::put(line, free, entry) };
            // Release: the new tag publishes the slot stored above (see `publish_at`).
            word.store(
                ctrl.with_new_tag(free, tag).without_tag(slot).0,
                Ordering::Release,
            );
            // SAFETY: `slot` was full until the store above cleared its tag.
            return (unsafe { L::unlink(line, bucket, slot) }, new);
        }
        // The new path runs through every bucket the old one did: raise the counts from home up
        // to `bucket` for it (`remove_at` lowers them for the old entry below), then place it
        // past `bucket` as an insert does, which raises `bucket`'s own count first.
        self.step_counts(home, bucket, true);
        let placed = move |displacement| Placement::new(hash, log2, past_home + displacement);
        // SAFETY: the caller holds the lock and a free slot exists past `bucket` (its contract).
        let new = unsafe { self.place_past(bucket, tag, entry, placed) };
        // SAFETY: `bucket`/`slot` still hold the old entry, found under this lock.
        (unsafe { self.remove_at(hash, bucket, slot) }, new)
    }

    /// Unlinks the entry at `bucket`/`slot` (which `hash` hashes to) and returns it. The caller
    /// retires it through the epoch.
    ///
    /// # Safety
    /// The caller is this table's only writer, and `bucket`/`slot` came from a `find` of a key with
    /// this `hash` under the same lock.
    pub(crate) unsafe fn remove_at(&self, hash: u64, bucket: usize, slot: usize) -> L::Unlinked {
        // SAFETY: `bucket` came from a `find` on this table (the caller's contract).
        let (word, line) = unsafe {
            (
                self.ctrl.get_unchecked(bucket),
                self.slots.get_unchecked(bucket),
            )
        };
        // Relaxed load: the writer is the only one storing. Release store: see `insert_new`.
        let ctrl = Control(word.load(Ordering::Relaxed)).without_tag(slot);
        word.store(ctrl.0, Ordering::Release);
        // SAFETY: `slot` was full until the store above (it came from a `find` under this lock).
        let entry = unsafe { L::unlink(line, bucket, slot) };
        if ctrl.known_empty() {
            self.set_summary(bucket, false);
        }
        let home = self.home(hash);
        if home != bucket {
            self.step_counts(home, bucket, false);
        }
        entry
    }

    /// Raises (`up`) or lowers the overflow counts of the buckets from `home` up to (not
    /// including) `bucket`: the path an entry that homes in `home` takes to `bucket`.
    #[cold]
    #[inline(never)]
    fn step_counts(&self, home: usize, bucket: usize, up: bool) {
        let mut index = home;
        while index != bucket {
            let passed = &self.ctrl[index];
            let c = Control(passed.load(Ordering::Relaxed));
            // Release, like every store of a control word (see `place_past`).
            passed.store(c.with_overflow_step(up).0, Ordering::Release);
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
        ctrl.full().map(move |slot| (slot, L::peek(slots, slot)))
    }

    /// Whether a replace of the entry at `bucket`/`slot` (whose key hashes to `hash`) keeps the
    /// key from moving backwards in walk order (see [`walk_len`](Self::walk_len)): true unless
    /// the first bucket from `bucket` on with a free slot comes earlier in walk order. Lock
    /// holder only; `Stable` replaces in the slot and never moves a key.
    pub(crate) fn replace_keeps_walk_order(&self, hash: u64, bucket: usize, slot: usize) -> bool {
        if !L::INLINE {
            return true;
        }
        let from = self.walk_position(
            bucket,
            L::placement(&self.slots[bucket], slot).displacement(),
        );
        let home = self.home(hash);
        let mut index = bucket;
        for _ in 0..self.ctrl.len() {
            // Relaxed: only the lock holder stores control words.
            let ctrl = Control(self.ctrl[index].load(Ordering::Relaxed));
            if L::first_free(&self.slots[index], ctrl).is_some() {
                let displacement = index.wrapping_sub(home) & self.mask;
                return self.walk_position(index, displacement) >= from;
            }
            index = (index + 1) & self.mask;
        }
        false
    }

    /// Positions a walk of this table reads, in order (`load_bucket`): every bucket, then, for
    /// an inline layout, the first [`WRAP_ZONE`] buckets again.
    ///
    /// An inline replace may publish the new entry in a later bucket than the old one, and a
    /// walk that reads bucket after bucket finds such a key at least once as long as it only
    /// moves forward in the walk's order (its position and the walk's both grow). A probe path
    /// that wraps from the last bucket to the first ones would move it backwards; so the walk
    /// counts an entry whose path wrapped (it sits in one of the first buckets, further from its
    /// home than from bucket 0) as coming after the last bucket, and reads the first buckets a
    /// second time for those entries only. A replace that would still move a key backwards
    /// (which takes a run of full buckets seven long at the table's start) rebuilds the table
    /// instead (`ShardWriter::replace_by_rebuild`). `Stable` never moves an entry within a live
    /// table, so its walk reads each bucket once.
    pub(crate) fn walk_len(&self) -> usize {
        let buckets = self.ctrl.len();
        if L::INLINE {
            buckets + buckets.min(WRAP_ZONE)
        } else {
            buckets
        }
    }

    /// The walk position of an entry in bucket `index`, `displacement` buckets past its home (7
    /// meaning 7 or more, as placements record it). See [`walk_len`](Self::walk_len).
    fn walk_position(&self, index: usize, displacement: usize) -> usize {
        if L::INLINE && wrapped(index, displacement) {
            self.ctrl.len() + index
        } else {
            index
        }
    }

    /// Adds a holder: a batch of unlinked slots that points into the table. The caller is a
    /// holder already (the lock holder, for the shard), so the count is above zero.
    pub(crate) fn hold(&self) {
        // Relaxed: the caller's own hold keeps the table alive; the count only decides who frees.
        self.holds.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a holder; true if it was the last, and the caller must now free the table.
    pub(crate) fn unhold(&self) -> bool {
        // AcqRel, as in `Arc::drop`: each holder's accesses to the table happen before the free,
        // which the last one makes after acquiring every earlier release.
        self.holds.refs.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Counts `n` unlinked slots of this table as freed, after their release.
    pub(crate) fn note_released(&self, n: usize) {
        // Release: a lock holder that reads the count (Acquire) also sees the slots' reserved
        // bits cleared, so `n` more slots are really free for it.
        self.holds.released.fetch_add(n, Ordering::Release);
    }

    /// Unlinked slots of this table freed so far (see [`note_released`](Self::note_released)).
    pub(crate) fn released(&self) -> usize {
        self.holds.released.load(Ordering::Acquire)
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
                // SAFETY: exclusive access (the contract).
                let ptr = unsafe { L::take(slots, slot) };
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
                    // SAFETY: exclusive access (see the function docs); `slot` was full.
                    return Some(unsafe { L::take(&self.slots[index], slot) });
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
        position: usize,
        out: &mut [*const Entry<K, V>; SLOTS],
    ) -> Option<usize> {
        // Which bucket the walk position names, and, in the first buckets of an inline table,
        // which of its entries belong to this position (see `walk_len`).
        let buckets = self.ctrl.len();
        let (index, second_pass) = if position < buckets {
            (position, false)
        } else if position < self.walk_len() {
            (position - buckets, true)
        } else {
            return None;
        };
        let split = L::INLINE && index < WRAP_ZONE;
        let word = self.ctrl.get(index)?;
        // SAFETY: the two arrays have the same length, and `index` is in bounds of `ctrl`.
        let slots = unsafe { self.slots.get_unchecked(index) };
        // Acquire: as in `find`, the tags we act on come with their slot pointers.
        let ctrl = Control(word.load(Ordering::Acquire));
        let mut n = 0;
        for slot in ctrl.full() {
            // As in `find`, the entry's contents are visible once we see it. A slot whose tag we
            // saw may already be empty again (a removal after our control load): that entry was
            // not present for the whole walk, and skipping it is allowed.
            // Relaxed: the placement was stored before the tag we acquired, and stays while the
            // guard does (a slot is rewritten only after its grace period).
            if split && wrapped(index, L::placement(slots, slot).displacement()) != second_pass {
                continue;
            }
            // SAFETY: we acquired the word and saw `slot`'s tag, under this fn's contract.
            let ptr = unsafe { L::load(slots, slot) };
            if !ptr.is_null() {
                // SAFETY: a bucket has `SLOTS` slots, so at most `SLOTS` are full and `n < SLOTS`.
                unsafe { *out.get_unchecked_mut(n) = ptr };
                n += 1;
            }
        }
        Some(n)
    }

    /// Bucket `index`'s line, for tests of a layout's protocol through the table.
    #[cfg(all(test, not(epochmap_loom)))]
    pub(crate) fn line(&self, index: usize) -> &L::Line {
        &self.slots[index]
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
        // SAFETY: the caller acquired the bucket's control word and saw `slot`'s tag (contract).
        let ptr = unsafe { L::load(&self.slots[index], slot) };
        // SAFETY: per this function's contract a non-null entry is live for as long as the
        // caller's guard.
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
        // Relaxed: nothing is read through what it finds; a stale word costs a useless prefetch.
        let ctrl = Control(word.load(Ordering::Relaxed));
        L::prefetch_entries(slots, ctrl);
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
    use crate::slab::{DropPanics, EntrySlab, OwnedReleaser, Releaser, SlabCache};

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

    /// `Stable` except that it never replaces in place, as a layout that keeps published slots
    /// unwritten must not: it exercises `Table::replace_elsewhere`.
    enum Relinking {}

    impl Layout<u64, u64> for Relinking {
        type Line = <Stable as Layout<u64, u64>>::Line;
        type New = *mut Entry<u64, u64>;
        type Unlinked = *mut Entry<u64, u64>;
        const INLINE: bool = false;
        const ENTRY_BYTES_OUTSIDE: usize = 0;
        fn empty_line() -> Self::Line {
            <Stable as Layout<u64, u64>>::empty_line()
        }
        fn new_entry(_: &EntrySlab<u64, u64>, _: &mut SlabCache, _: Entry<u64, u64>) -> Self::New {
            unreachable!("the test builds its entries itself")
        }
        unsafe fn relocate(entry: *mut Entry<u64, u64>) -> Self::New {
            entry
        }
        unsafe fn free_unlinked(_: Self::Unlinked, _: &mut Releaser<'_, u64, u64>) -> DropPanics {
            unreachable!("the test frees its entries itself")
        }
        unsafe fn release_unlinked(_: Self::Unlinked, _: &EntrySlab<u64, u64>) -> Entry<u64, u64> {
            unreachable!("the test frees its entries itself")
        }
        unsafe fn free_taken(
            _: *mut Entry<u64, u64>,
            _: &mut Releaser<'_, u64, u64>,
        ) -> DropPanics {
            unreachable!("the test frees its entries itself")
        }
        unsafe fn move_out(
            _: *mut Entry<u64, u64>,
            _: &mut OwnedReleaser<u64, u64>,
        ) -> Entry<u64, u64> {
            unreachable!("the test frees its entries itself")
        }
        unsafe fn move_out_of(_: *mut Entry<u64, u64>, _: &EntrySlab<u64, u64>) -> Entry<u64, u64> {
            unreachable!("the test frees its entries itself")
        }
        fn placement(line: &Self::Line, slot: usize) -> Placement {
            Stable::placement(line, slot)
        }
        fn set_placement(line: &Self::Line, slot: usize, placement: Placement) {
            Stable::set_placement(line, slot, placement)
        }
        fn first_free(line: &Self::Line, ctrl: Control) -> Option<usize> {
            Stable::first_free(line, ctrl)
        }
        unsafe fn put(line: &Self::Line, slot: usize, new: Self::New) -> *mut Entry<u64, u64> {
            // SAFETY: the same contract, forwarded.
            unsafe { Stable::put(line, slot, new) }
        }
        unsafe fn replace_in_place(
            _: &Self::Line,
            _: usize,
            new: Self::New,
        ) -> Result<crate::layout::Replaced<Self::Unlinked, u64, u64>, Self::New> {
            Err(new)
        }
        unsafe fn unlink(line: &Self::Line, bucket: usize, slot: usize) -> Self::Unlinked {
            // SAFETY: the same contract, forwarded.
            unsafe { Stable::unlink(line, bucket, slot) }
        }
        unsafe fn load(line: &Self::Line, slot: usize) -> *const Entry<u64, u64> {
            // SAFETY: the same contract, forwarded.
            unsafe { Stable::load(line, slot) }
        }
        fn peek(line: &Self::Line, slot: usize) -> *mut Entry<u64, u64> {
            Stable::peek(line, slot)
        }
        unsafe fn take(line: &Self::Line, slot: usize) -> *mut Entry<u64, u64> {
            // SAFETY: the same contract, forwarded.
            unsafe { Stable::take(line, slot) }
        }
        fn prefetch_entries(line: &Self::Line, ctrl: Control) {
            Stable::prefetch_entries(line, ctrl)
        }
    }

    #[test]
    fn a_replace_that_cannot_write_in_place_moves_along_the_probe_path_and_keeps_the_counts() {
        let table = Table::<u64, u64, Relinking>::new(4);
        // Every key homes in bucket 0. 13 keys: bucket 0 full, six in bucket 1 and one slot free
        // there. Replacing a key of the full bucket 0 moves it past (to bucket 1), which frees a
        // slot in bucket 0 for the next key's same-bucket replace: both paths run in every round.
        let hash = 0x1234_5678_9abc_def0 & !3;
        let keys: Vec<u64> = (0..13).collect();
        for &k in &keys {
            // SAFETY: the test owns the table; keys are distinct and fit.
            unsafe { table.insert_new(hash, boxed(k)) };
        }
        for round in 1..=3u64 {
            for &k in &keys {
                // SAFETY: the test owns the table; `at` came from a find under that ownership.
                unsafe {
                    let at = table.find(hash, &k).unwrap();
                    let new = Box::into_raw(Box::new(Entry {
                        key: k,
                        value: k * 10 + round,
                    }));
                    let (old, _) = table.replace(hash, at.bucket, at.slot, new);
                    assert_eq!((*old).value, k * 10 + round - 1);
                    drop(Box::from_raw(old));
                }
            }
            for &k in &keys {
                // SAFETY: the test owns the table.
                let found = unsafe { table.find(hash, &k) }.expect("a replaced key is found");
                assert_eq!(found.entry.value, k * 10 + round, "round {round}");
            }
            let occupied: usize = (0..4)
                .map(|b| {
                    Control(table.ctrl[b].load(Ordering::Relaxed))
                        .full()
                        .count()
                })
                .sum();
            assert_eq!(occupied, keys.len(), "one slot per key after round {round}");
        }
        for &k in &keys {
            // SAFETY: as above.
            unsafe {
                let at = table.find(hash, &k).unwrap();
                drop(Box::from_raw(table.remove_at(hash, at.bucket, at.slot)));
            }
        }
        for b in 0..4 {
            let ctrl = Control(table.ctrl[b].load(Ordering::Relaxed));
            assert_eq!(
                ctrl,
                Control(0),
                "bucket {b}: no tag and no overflow count left"
            );
        }
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
