#![allow(dead_code)]
//! `flat-proto`: a prototype of an inline-entry ("flat") layout for epochmap, bench-side only.
//!
//! `FLAT_SHARDS` shards chosen by hash bits 48.., each with a read line (the table pointer) and a
//! writer line (a mutex over the writer state), padded apart. A table is a power of two of
//! buckets; bucket `b` has a control word (epochmap's: seven tags, the mark bit and an F14
//! overflow count), a 128-byte data block of seven inline `(K, V)` pairs and a writer-only
//! "reserved" byte (slots whose pair was removed but whose grace period has not passed).
//!
//! With `EMBED = false` the control words are a dense array of their own (epochmap's layout);
//! with `EMBED = true` each sits at the head of its bucket's data block (one line for a miss).
//!
//! Reads pin, load the table, prefetch the home block, match tags and copy the value out: no lock,
//! no shared write. Writers lock their shard. A removed (or replaced) pair keeps its slot reserved
//! until a deferred job, run after the grace period, drops it and clears the reserved bit; jobs
//! and a retired table each hold one count of the table's refcount, the last one frees it.
//!
//! The `W` knobs ([`NOPIN`], [`WRES`], [`GROW4`]) are write-path variants (`flat-nopin`,
//! `flat-wres`, `flat-both`, `flat-grow4`). Measured at 2 threads on a busy machine (two runs of
//! scaling.sh, 5 interleaved rounds each, exchange and rapid-grow, medians): no pin per write is
//! what they gain (exchange 0.38-0.40x dashmap to 0.53-0.57x, rapid-grow 0.20-0.33x to
//! 0.35-0.60x); writer-side reserved bits gain nothing alone and little on top; 4x growth of small
//! tables nothing. In a quiet round all variants meet (flat-proto 16-19 M ops/s, 0.8-1.0x dashmap on
//! exchange, 0.6x on rapid-grow): the pin per write is what costs under load. One thread: no
//! pin takes 2-4 ns off a remove (still about 1.7-2.5x dashmap's). In `perf`, growth (the copy,
//! its claims and the new table's page faults) is 20-25% of rapid-grow; the shard lock's cmpxchg
//! and unlock about 30-40%, the control word and key lines most of the rest.

use std::alloc::{alloc, alloc_zeroed, dealloc, Layout};
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_epoch::{self as epoch, Guard};
use crossbeam_utils::CachePadded;

/// Write-path knobs, the `W` parameter of [`Flat`] (bit flags; 0 is the prototype as measured in
/// design.md).
///
/// `NOPIN`: remove, replace and update return nothing (no `Ref`), so they do not pin per call; a
/// full batch of retired slots still pins once when it is handed to the epoch.
pub const NOPIN: u8 = 1;
/// `WRES`: reserved bits are the writer's alone, set and cleared under the shard lock with plain
/// load + store. A job, after the grace period, drops its pairs and pushes its slot list onto the
/// shard's [`Returned`] list; the writer, on its next lock, sees the flag and clears the bits.
pub const WRES: u8 = 2;
/// `GROW4`: while a shard's table is small (below [`GROW4_BELOW`] buckets), grow it 4x instead of
/// 2x.
pub const GROW4: u8 = 4;
/// Buckets per shard below which `GROW4` quadruples.
pub const GROW4_BELOW: usize = 1 << 14;

/// Shards: epochmap's default on 2 cores.
pub const FLAT_SHARDS: usize = 8;
const SHARD_MASK: u64 = FLAT_SHARDS as u64 - 1;
/// Removed pairs per hand-off to the epoch.
const BATCH: usize = 64;
const SLOTS: usize = 7;
/// Bytes of one bucket's data block (two cache lines).
const BLOCK: usize = 128;
/// Load factor: live + reserved slots may fill 7/8 of the slots.
/// Load factor numerator in eighths (default 7). An experiment knob.
pub static LOAD_EIGHTHS: AtomicUsize = AtomicUsize::new(7);
const LOAD_DEN: usize = 8;
const MIN_BUCKETS: usize = 4;

const HIGH_BITS: u64 = 0x0080_8080_8080_8080;
const BYTE_ONES: u64 = 0x0101_0101_0101_0101;
const OCCUPIED: u64 = 1 << 63;
const OVERFLOW_SHIFT: u32 = 56;
const OVERFLOW_MASK: u64 = 0x7f << OVERFLOW_SHIFT;
const OVERFLOW_MAX: u64 = 0x7f;

#[inline]
fn tag_of(hash: u64) -> u8 {
    ((hash >> 40) as u8) | 0x80
}

/// Slots of control word `c` whose tag is `tag`, bit `i` for slot `i`.
#[inline]
fn matches(c: u64, tag: u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_cvtsi64_si128, _mm_movemask_epi8};
        // SAFETY: SSE2 is baseline on x86_64.
        let bits = unsafe {
            let ctrl = _mm_cvtsi64_si128(c as i64);
            let tags = _mm_cvtsi64_si128((u64::from(tag) * BYTE_ONES) as i64);
            _mm_movemask_epi8(_mm_cmpeq_epi8(ctrl, tags))
        };
        bits as u32 & ((1 << SLOTS) - 1)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0..SLOTS)
            .filter(|&s| (c >> (8 * s)) as u8 == tag)
            .fold(0, |m, s| m | 1 << s)
    }
}

/// Slots whose tag is zero, bit `i` for slot `i` (a set tag has its high bit set).
#[inline]
fn free_slots(c: u64) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cvtsi64_si128, _mm_movemask_epi8};
        // SAFETY: SSE2 is baseline on x86_64.
        let occupied = unsafe { _mm_movemask_epi8(_mm_cvtsi64_si128(c as i64)) } as u32;
        !occupied & ((1 << SLOTS) - 1)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (0..SLOTS)
            .filter(|&s| (c >> (8 * s)) as u8 == 0)
            .fold(0, |m, s| m | 1 << s)
    }
}

#[inline]
fn overflow(c: u64) -> u64 {
    (c & OVERFLOW_MASK) >> OVERFLOW_SHIFT
}

#[inline]
fn overflow_step(c: u64, up: bool) -> u64 {
    let n = match (up, overflow(c)) {
        (_, OVERFLOW_MAX) => OVERFLOW_MAX,
        (true, n) => n + 1,
        (false, n) => n.saturating_sub(1),
    };
    (c & !OVERFLOW_MASK) | (n << OVERFLOW_SHIFT)
}

#[inline]
fn with_tag(c: u64, slot: usize, tag: u8) -> u64 {
    c | (u64::from(tag) << (8 * slot)) | OCCUPIED
}

#[inline]
fn without_tag(c: u64, slot: usize) -> u64 {
    let rest = c & !(0xff << (8 * slot));
    let occ = if rest & HIGH_BITS == 0 { 0 } else { OCCUPIED };
    (rest & !OCCUPIED) | occ
}

#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a hint; never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One table. The arrays are raw allocations freed when `refs` reaches zero. The header is read
/// by every probe; the counters that jobs write live on a line of their own, and the header is
/// aligned so no neighbouring allocation (another shard's table) shares its line.
#[repr(align(128))]
struct Table<K, V, const EMBED: bool> {
    /// Dense control words (`EMBED = false`), else null.
    ctrl: *mut AtomicU64,
    /// `buckets` blocks of `BLOCK` bytes, 128-aligned.
    blocks: *mut u8,
    /// One reserved bitmap byte per bucket: writers and jobs only.
    reserved: *mut AtomicU8,
    mask: usize,
    counts: CachePadded<Counts>,
    _pairs: PhantomData<(K, V)>,
}

struct Counts {
    /// Slots reserved in this table whose job has run (written by jobs, read by the writer).
    released: AtomicUsize,
    /// The retire of the table and each outstanding job hold one.
    refs: AtomicUsize,
}

// SAFETY: pairs are shared read-only between threads; writes are ordered by the control words.
unsafe impl<K: Send + Sync, V: Send + Sync, const E: bool> Send for Table<K, V, E> {}
unsafe impl<K: Send + Sync, V: Send + Sync, const E: bool> Sync for Table<K, V, E> {}

impl<K, V, const EMBED: bool> Table<K, V, EMBED> {
    const PAIR_OFFSET: usize = if EMBED { 8 } else { 0 };
    const PAIR: usize = size_of::<(K, V)>();

    fn layouts(buckets: usize) -> (Layout, Layout, Layout) {
        (
            Layout::array::<AtomicU64>(buckets).unwrap(),
            Layout::from_size_align(buckets * BLOCK, BLOCK).unwrap(),
            Layout::array::<AtomicU8>(buckets).unwrap(),
        )
    }

    fn new(buckets: usize) -> *mut Self {
        assert!(Self::PAIR_OFFSET + SLOTS * Self::PAIR <= BLOCK);
        assert!(std::mem::align_of::<(K, V)>() <= 8);
        let (c, b, r) = Self::layouts(buckets);
        // SAFETY: non-zero sizes; zeroed control words and reserved bytes are empty buckets.
        let t = unsafe {
            Table {
                ctrl: if EMBED {
                    ptr::null_mut()
                } else {
                    alloc_zeroed(c).cast()
                },
                blocks: if EMBED { alloc_zeroed(b) } else { alloc(b) },
                reserved: alloc_zeroed(r).cast(),
                mask: buckets - 1,
                counts: CachePadded::new(Counts {
                    released: AtomicUsize::new(0),
                    refs: AtomicUsize::new(1),
                }),
                _pairs: PhantomData,
            }
        };
        assert!(!t.blocks.is_null() && !t.reserved.is_null());
        TABLES.fetch_add(1, Ordering::Relaxed);
        Box::into_raw(Box::new(t))
    }

    fn buckets(&self) -> usize {
        self.mask + 1
    }

    fn max_load(&self) -> usize {
        self.buckets() * SLOTS * LOAD_EIGHTHS.load(Ordering::Relaxed) / LOAD_DEN
    }

    /// Heap bytes of the table.
    fn bytes(&self) -> usize {
        let n = self.buckets();
        n * BLOCK + n + if EMBED { 0 } else { n * 8 } + size_of::<Self>()
    }

    #[inline]
    fn block(&self, b: usize) -> *mut u8 {
        // SAFETY: callers pass `b <= mask`.
        unsafe { self.blocks.add(b * BLOCK) }
    }

    #[inline]
    fn ctrl(&self, b: usize) -> &AtomicU64 {
        // SAFETY: `b <= mask`; in EMBED mode the block's first 8 bytes are the (zeroed) word.
        unsafe {
            if EMBED {
                &*self.block(b).cast::<AtomicU64>()
            } else {
                &*self.ctrl.add(b)
            }
        }
    }

    #[inline]
    fn reserved(&self, b: usize) -> &AtomicU8 {
        // SAFETY: `b <= mask`.
        unsafe { &*self.reserved.add(b) }
    }

    #[inline]
    fn pair(&self, b: usize, s: usize) -> *mut (K, V) {
        // SAFETY: within the block; offsets are multiples of 8, as is the pair's alignment.
        unsafe { self.block(b).add(Self::PAIR_OFFSET + s * Self::PAIR).cast() }
    }

    /// Drops one count; the last frees the arrays (pairs are dropped by their owners first).
    ///
    /// # Safety
    /// `this` is live and the caller owns one count.
    unsafe fn release(this: *mut Self) {
        let counts: &Counts = &(*this).counts;
        if counts.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            let t = Box::from_raw(this);
            let (c, b, r) = Self::layouts(t.buckets());
            if !EMBED {
                dealloc(t.ctrl.cast(), c);
            }
            dealloc(t.blocks, b);
            dealloc(t.reserved.cast(), r);
            TABLES.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops every tagged pair. Owner only.
    unsafe fn drop_live(&self) {
        if !std::mem::needs_drop::<(K, V)>() {
            return;
        }
        for b in 0..self.buckets() {
            let c = self.ctrl(b).load(Ordering::Relaxed);
            for s in 0..SLOTS {
                if (c >> (8 * s)) as u8 != 0 {
                    ptr::drop_in_place(self.pair(b, s));
                }
            }
        }
    }
}

impl<K: Eq, V, const EMBED: bool> Table<K, V, EMBED> {
    /// Where `key` is: (bucket, slot). Reader or writer; the caller keeps the table alive.
    #[inline]
    fn find(&self, hash: u64, key: &K) -> Option<(usize, usize)> {
        let mut b = hash as usize & self.mask;
        let block = self.block(b);
        match PREFETCH_LINES.load(Ordering::Relaxed) {
            0 => {}
            1 => prefetch(block),
            _ => {
                prefetch(block);
                prefetch(block.wrapping_add(64));
            }
        }
        let tag = tag_of(hash);
        let last = b.wrapping_sub(1) & self.mask;
        loop {
            let c = self.ctrl(b).load(Ordering::Acquire);
            let mut m = matches(c, tag);
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                // SAFETY: a tagged slot holds an initialised pair, published by the Release store
                // we synchronised with, and not overwritten before the grace period of our pin.
                if unsafe { &(*self.pair(b, s)).0 } == key {
                    return Some((b, s));
                }
            }
            // A probe visits each bucket at most once: in a small table every bucket can have
            // a non-zero overflow count.
            if overflow(c) == 0 || b == last {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// Writer: the first bucket at or after `from` with a slot that is free and not reserved;
    /// raises the overflow count of every bucket passed. Returns (bucket, slot).
    fn claim(&self, from: usize) -> (usize, usize) {
        let mut b = from;
        loop {
            let c = self.ctrl(b).load(Ordering::Relaxed);
            let res = u32::from(self.reserved(b).load(Ordering::Acquire));
            let free = free_slots(c) & !res;
            if free != 0 {
                return (b, free.trailing_zeros() as usize);
            }
            self.ctrl(b)
                .store(overflow_step(c, true), Ordering::Release);
            b = (b + 1) & self.mask;
        }
    }
}

/// A batch of removed slots of one table, waiting for a grace period.
struct Job<K, V, const E: bool> {
    table: *mut Table<K, V, E>,
    slots: Vec<(u32, u8)>,
    /// `WRES`: where to hand the slots back, with the shard's table generation at retirement.
    returned: Option<(Arc<Returned>, u64)>,
}

/// `WRES`: slot lists whose grace period has passed, per shard, tagged with the table generation
/// they belong to; the flag says the list is non-empty (one Relaxed load per writer lock).
/// Aligned to a line pair of its own: the eight shards' lists are small neighbouring
/// allocations, and the Arc counts that each hand-off and job write would otherwise share a line
/// with other shards' flags.
#[derive(Default)]
#[repr(align(128))]
struct Returned {
    any: AtomicBool,
    lists: Mutex<Vec<(u64, Slots)>>,
}

/// (bucket, slot) pairs of one batch.
type Slots = Vec<(u32, u8)>;

// SAFETY: the job owns its pairs and one count of the table.
unsafe impl<K: Send + Sync, V: Send + Sync, const E: bool> Send for Job<K, V, E> {}

impl<K, V, const E: bool> Job<K, V, E> {
    /// After the grace period: drop the pairs, free their slots, release the table.
    unsafe fn run(self) {
        let t = &*self.table;
        if let Some((returned, gen)) = self.returned {
            for &(b, s) in &self.slots {
                drop(ptr::read(t.pair(b as usize, s as usize)));
            }
            // The mutex orders the drops before the writer's reuse of the slots.
            let mut lists = returned.lists.lock().unwrap();
            lists.push((gen, self.slots));
            returned.any.store(true, Ordering::Relaxed);
            drop(lists);
            Table::release(self.table);
            JOBS.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        for &(b, s) in &self.slots {
            let (b, s) = (b as usize, s as usize);
            drop(ptr::read(t.pair(b, s)));
            t.reserved(b).fetch_and(!(1 << s), Ordering::Release);
        }
        t.counts
            .released
            .fetch_add(self.slots.len(), Ordering::Release);
        Table::release(self.table);
        JOBS.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Writer {
    len: usize,
    /// Slots reserved in the current table since it was made.
    retired: usize,
    batch: Vec<(u32, u8)>,
    /// Tables made so far (`WRES`: returned lists of older tables are dropped).
    gen: u64,
}

struct Shard<K, V, const E: bool> {
    table: CachePadded<AtomicPtr<Table<K, V, E>>>,
    writer: CachePadded<Mutex<Writer>>,
    returned: Arc<Returned>,
}

/// The prototype map.
pub struct Flat<K, V, S, const EMBED: bool, const W: u8 = 0> {
    shards: Box<[Shard<K, V, EMBED>]>,
    hasher: S,
}

pub type FlatProto<K, V, S> = Flat<K, V, S, false>;
pub type FlatEmbed<K, V, S> = Flat<K, V, S, true>;

unsafe impl<K: Send + Sync, V: Send + Sync, S: Send, const E: bool, const W: u8> Send
    for Flat<K, V, S, E, W>
{
}
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync, const E: bool, const W: u8> Sync
    for Flat<K, V, S, E, W>
{
}

/// The table of a locked shard: it cannot be swapped or freed while the lock is held.
struct Locked<'a, K, V, const E: bool> {
    w: MutexGuard<'a, Writer>,
    shard: &'a Shard<K, V, E>,
}

impl<K, V, const E: bool> Locked<'_, K, V, E> {
    fn table(&self) -> &Table<K, V, E> {
        // SAFETY: the lock holder is the only one who swaps the table.
        unsafe { &*self.shard.table.load(Ordering::Relaxed) }
    }
}

impl<K, V, S, const EMBED: bool, const W: u8> Flat<K, V, S, EMBED, W>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher,
{
    pub fn with_hasher(hasher: S) -> Self {
        let shards = (0..FLAT_SHARDS)
            .map(|_| Shard {
                table: CachePadded::new(AtomicPtr::new(Table::new(MIN_BUCKETS))),
                writer: CachePadded::new(Mutex::new(Writer {
                    len: 0,
                    retired: 0,
                    batch: Vec::with_capacity(BATCH),
                    gen: 0,
                })),
                returned: Arc::default(),
            })
            .collect();
        Flat { shards, hasher }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, V, EMBED> {
        &self.shards[((hash >> 48) & SHARD_MASK) as usize]
    }

    fn lock(&self, hash: u64) -> Locked<'_, K, V, EMBED> {
        let shard = self.shard(hash);
        let mut l = Locked {
            w: shard.writer.lock().unwrap(),
            shard,
        };
        if W & WRES != 0 && shard.returned.any.load(Ordering::Relaxed) {
            Self::take_returned(&mut l);
        }
        l
    }

    /// `WRES`: clears the reserved bits of the slots whose jobs have run (current table only).
    #[cold]
    fn take_returned(l: &mut Locked<'_, K, V, EMBED>) {
        l.shard.returned.any.store(false, Ordering::Relaxed);
        let lists = std::mem::take(&mut *l.shard.returned.lists.lock().unwrap());
        let t = l.table();
        let mut n = 0;
        for (gen, slots) in lists {
            if gen != l.w.gen {
                continue;
            }
            for (b, s) in slots {
                let r = t.reserved(b as usize);
                r.store(r.load(Ordering::Relaxed) & !(1 << s), Ordering::Relaxed);
                n += 1;
            }
        }
        l.w.retired -= n;
    }

    /// The per-call pin of a `Ref`-returning write, unless `NOPIN`.
    #[inline]
    fn ref_pin() -> Option<Guard> {
        (W & NOPIN == 0).then(epoch::pin)
    }

    /// After unlocking: flush what this call handed to the epoch.
    #[inline]
    fn flush_after(guard: Option<Guard>) {
        match guard {
            Some(g) => g.flush_if_batched(),
            None => flush_if_resized(),
        }
    }

    /// Lock-free read: pin, probe, copy the value out.
    #[inline]
    pub fn get(&self, key: &K) -> Option<V> {
        let guard = epoch::pin();
        self.get_pinned(&guard, key)
    }

    /// [`get`](Self::get) under a guard the caller pinned for a batch of reads (the real map's
    /// `pin()`), so a lookup costs no pin of its own.
    #[inline]
    pub fn get_pinned(&self, _guard: &Guard, key: &K) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        // SAFETY: `_guard` is pinned; a table is freed only after a grace period that started
        // after it was unlinked.
        let t = unsafe { &*shard.table.load(Ordering::Acquire) };
        let (b, s) = t.find(hash, key)?;
        // SAFETY: as in `find`.
        Some(unsafe { (*t.pair(b, s)).1.clone() })
    }

    /// Inserts or replaces; true if the key was new.
    pub fn insert(&self, key: K, value: V) -> bool {
        let hash = self.hasher.hash_one(&key);
        let mut l = self.lock(hash);
        self.reserve_one(&mut l);
        let t = l.table();
        match t.find(hash, &key) {
            None => {
                let (b, s) = t.claim(hash as usize & t.mask);
                // SAFETY: a free, unreserved slot: nobody reads it.
                unsafe { t.pair(b, s).write((key, value)) };
                let c = t.ctrl(b).load(Ordering::Relaxed);
                t.ctrl(b)
                    .store(with_tag(c, s, tag_of(hash)), Ordering::Release);
                l.w.len += 1;
                drop(l);
                flush_if_resized();
                true
            }
            Some(at) => {
                // The real insert returns a `Ref` to the old pair: a pin per replace.
                let guard = Self::ref_pin();
                self.replace(&mut l, hash, at, (key, value), guard.as_ref());
                drop(l);
                Self::flush_after(guard);
                false
            }
        }
    }

    /// Adds to the value through `f`, copy-on-write; true if present.
    pub fn update(&self, key: &K, f: impl FnOnce(&V) -> V) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut l = self.lock(hash);
        self.reserve_one(&mut l);
        let t = l.table();
        let Some((b, s)) = t.find(hash, key) else {
            return false;
        };
        // The real update returns a `Ref` to the new pair: a pin per update.
        let guard = Self::ref_pin();
        // SAFETY: tagged, and we hold the lock.
        let old = unsafe { &*t.pair(b, s) };
        let new = (old.0.clone(), f(&old.1));
        self.replace(&mut l, hash, (b, s), new, guard.as_ref());
        drop(l);
        Self::flush_after(guard);
        true
    }

    /// Removes; true if the key was there.
    pub fn remove(&self, key: &K) -> bool {
        let hash = self.hasher.hash_one(key);
        let mut l = self.lock(hash);
        let t = l.table();
        let Some((b, s)) = t.find(hash, key) else {
            return false;
        };
        // The real remove returns a `Ref` to the removed pair: a pin per remove that finds one.
        let guard = Self::ref_pin();
        let c = t.ctrl(b).load(Ordering::Relaxed);
        t.ctrl(b).store(without_tag(c, s), Ordering::Release);
        // Step down the overflow counts along the removed pair's path.
        let home = hash as usize & t.mask;
        let mut p = home;
        while p != b {
            let c = t.ctrl(p).load(Ordering::Relaxed);
            t.ctrl(p).store(overflow_step(c, false), Ordering::Release);
            p = (p + 1) & t.mask;
        }
        l.w.len -= 1;
        self.retire_slot(&mut l, b, s, guard.as_ref());
        drop(l);
        Self::flush_after(guard);
        true
    }

    /// Replaces the pair at `at` by `new`: into a free slot of the same bucket (one control
    /// store swaps the tags) or of a later bucket on the probe path (publish the new, then clear
    /// the old); the old slot is retired like a removal.
    fn replace(
        &self,
        l: &mut Locked<'_, K, V, EMBED>,
        hash: u64,
        (ob, os): (usize, usize),
        new: (K, V),
        guard: Option<&Guard>,
    ) {
        let t = l.table();
        let tag = tag_of(hash);
        let (b, s) = t.claim(ob);
        // SAFETY: a free, unreserved slot.
        unsafe { t.pair(b, s).write(new) };
        if b == ob {
            let c = t.ctrl(b).load(Ordering::Relaxed);
            t.ctrl(b)
                .store(without_tag(with_tag(c, s, tag), os), Ordering::Release);
        } else {
            let c = t.ctrl(b).load(Ordering::Relaxed);
            t.ctrl(b).store(with_tag(c, s, tag), Ordering::Release);
            // Buckets home..ob already count the old pair's path, which the new one inherits.
            let c = t.ctrl(ob).load(Ordering::Relaxed);
            t.ctrl(ob).store(without_tag(c, os), Ordering::Release);
        }
        self.retire_slot(l, ob, os, guard);
    }

    /// Reserves slot `(b, s)` (just untagged) and hands it to the epoch with its batch.
    fn retire_slot(
        &self,
        l: &mut Locked<'_, K, V, EMBED>,
        b: usize,
        s: usize,
        guard: Option<&Guard>,
    ) {
        let t = l.table();
        let r = t.reserved(b);
        if W & WRES != 0 {
            r.store(r.load(Ordering::Relaxed) | 1 << s, Ordering::Relaxed);
        } else {
            r.fetch_or(1 << s, Ordering::Relaxed);
        }
        l.w.retired += 1;
        l.w.batch.push((b as u32, s as u8));
        if l.w.batch.len() >= BATCH {
            match guard {
                Some(g) => Self::hand_off(l, g),
                // No per-call pin: the batch pins once.
                None => Self::hand_off(l, &epoch::pin()),
            }
        }
    }

    /// Defers the shard's batch (if any) as one job holding a count of the current table.
    fn hand_off(l: &mut Locked<'_, K, V, EMBED>, guard: &Guard) {
        if l.w.batch.is_empty() {
            return;
        }
        let table = l.shard.table.load(Ordering::Relaxed);
        // SAFETY: the table is live (we hold the lock).
        let counts: &Counts = unsafe { &(*table).counts };
        counts.refs.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            table,
            slots: std::mem::replace(&mut l.w.batch, Vec::with_capacity(BATCH)),
            returned: (W & WRES != 0).then(|| (Arc::clone(&l.shard.returned), l.w.gen)),
        };
        // SAFETY: the slots were untagged before this defer, so no reader pinned after it can
        // reach them; the job owns their pairs.
        JOBS.fetch_add(1, Ordering::Relaxed);
        unsafe { guard.defer_unchecked(move || job.run()) };
        mark_batched();
    }

    /// Makes room for one more slot: grows (or rebuilds at the same size, if reserved slots are
    /// what fill the table) when live + reserved reach the load limit.
    fn reserve_one(&self, l: &mut Locked<'_, K, V, EMBED>) {
        let t = l.table();
        let max = t.max_load();
        if l.w.len + l.w.retired < max {
            return;
        }
        // `WRES`: `retired` is exact (the writer subtracts what comes back).
        let reserved = if W & WRES != 0 {
            l.w.retired
        } else {
            l.w.retired - t.counts.released.load(Ordering::Acquire)
        };
        if l.w.len + reserved < max {
            return;
        }
        let buckets = if l.w.len + 1 > max / 2 {
            if W & GROW4 != 0 && t.buckets() < GROW4_BELOW {
                t.buckets() * 4
            } else {
                t.buckets() * 2
            }
        } else {
            t.buckets()
        };
        self.resize(l, buckets);
    }

    fn resize(&self, l: &mut Locked<'_, K, V, EMBED>, buckets: usize) {
        if buckets == l.table().buckets() {
            REBUILDS.fetch_add(1, Ordering::Relaxed);
        } else {
            GROWS.fetch_add(1, Ordering::Relaxed);
        }
        let guard = epoch::pin();
        Self::hand_off(l, &guard);
        let old_ptr = l.shard.table.load(Ordering::Relaxed);
        let old = l.table();
        let new_ptr = Table::<K, V, EMBED>::new(buckets);
        // SAFETY: not yet published: ours alone.
        let new = unsafe { &*new_ptr };
        for b in 0..old.buckets() {
            let c = old.ctrl(b).load(Ordering::Relaxed);
            if c & OCCUPIED == 0 {
                continue;
            }
            for s in 0..SLOTS {
                if (c >> (8 * s)) as u8 == 0 {
                    continue;
                }
                // SAFETY: a tagged pair of the locked shard's table.
                let p = unsafe { &*old.pair(b, s) };
                let pair = (p.0.clone(), p.1.clone());
                let hash = self.hasher.hash_one(&pair.0);
                let (nb, ns) = new.claim(hash as usize & new.mask);
                // SAFETY: free slot of an unpublished table.
                unsafe { new.pair(nb, ns).write(pair) };
                let nc = new.ctrl(nb).load(Ordering::Relaxed);
                new.ctrl(nb)
                    .store(with_tag(nc, ns, tag_of(hash)), Ordering::Relaxed);
            }
        }
        l.shard.table.store(new_ptr, Ordering::Release);
        l.w.retired = 0;
        l.w.gen += 1;
        let retired = SendPtr(old_ptr);
        // SAFETY: unlinked above; after the grace period nobody reads the old table's pairs.
        unsafe {
            guard.defer_unchecked(move || {
                let retired = retired;
                (*retired.0).drop_live();
                Table::release(retired.0);
            })
        };
        mark_batched();
    }

    /// Heap bytes of the tables and entries (live tables only).
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            // SAFETY: pinned for the load; the table is live.
            .map(|s| unsafe {
                let _g = epoch::pin();
                (*s.table.load(Ordering::Acquire)).bytes()
            })
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.writer.lock().unwrap().len)
            .sum()
    }
}

/// Lines of the home block a probe prefetches (0, 1 or 2; default 2). An experiment knob.
pub static PREFETCH_LINES: AtomicUsize = AtomicUsize::new(2);

/// Same-size rebuilds and doublings, process-wide (diagnostics).
pub static REBUILDS: AtomicUsize = AtomicUsize::new(0);
pub static GROWS: AtomicUsize = AtomicUsize::new(0);
/// Tables allocated and not yet freed; jobs deferred and not yet run (diagnostics).
pub static TABLES: AtomicUsize = AtomicUsize::new(0);
pub static JOBS: AtomicUsize = AtomicUsize::new(0);

struct SendPtr<T>(*mut T);
// SAFETY: the retired table is only touched by its deferred function.
unsafe impl<T> Send for SendPtr<T> {}

thread_local! {
    static BATCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn mark_batched() {
    BATCHED.with(|b| b.set(true));
}

/// After unlocking: flush what a resize under the lock handed to the epoch.
fn flush_if_resized() {
    if BATCHED.with(|b| b.replace(false)) {
        epoch::pin().flush();
    }
}

/// `guard.flush()` after unlocking, when this call handed something to the epoch.
trait FlushIfBatched {
    fn flush_if_batched(&self);
}

impl FlushIfBatched for Guard {
    fn flush_if_batched(&self) {
        if BATCHED.with(|b| b.replace(false)) {
            self.flush();
        }
    }
}

impl<K, V, S, const E: bool, const W: u8> Drop for Flat<K, V, S, E, W> {
    fn drop(&mut self) {
        if std::env::var_os("FLAT_DEBUG").is_some() {
            eprintln!(
                "flat drop: {} doublings, {} same-size rebuilds so far; tables alive {}, jobs pending {}; {}",
                GROWS.load(Ordering::Relaxed),
                REBUILDS.load(Ordering::Relaxed),
                TABLES.load(Ordering::Relaxed),
                JOBS.load(Ordering::Relaxed),
                std::fs::read_to_string("/proc/self/status")
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.starts_with("VmRSS"))
                    .unwrap_or("")
            );
        }
        for shard in self.shards.iter_mut() {
            let t = *shard.table.get_mut();
            let w = shard.writer.get_mut().unwrap();
            // SAFETY: exclusive: no reader or writer is left. Pending (unhanded) slots are ours.
            unsafe {
                for &(b, s) in &w.batch {
                    drop(ptr::read((*t).pair(b as usize, s as usize)));
                }
                (*t).drop_live();
                Table::release(t);
            }
        }
    }
}
