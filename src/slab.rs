//! [`EntrySlab`]: where a shard's entries live.
//!
//! Entries used to be one `Box` each. That cost a `malloc` per insert and, worse, a `free` on
//! whichever thread reclaimed the entry (usually the `epochmap-reclaim` thread): glibc then moves
//! the chunk back to the inserting thread's arena under the arena lock, and in an insert/remove
//! workload the two threads spent about 40% of their samples in the allocator and in its lock's
//! futex wake-ups. A hit also pays for the spread-out heap: each 16-byte entry sat in its own
//! 32-byte glibc chunk.
//!
//! A slab hands out fixed-size slots from chunks it allocates from the global allocator. Chunks
//! grow geometrically, like a `Vec`: the first holds 8 slots, each new one as many slots as the
//! slab already has, up to 4 KiB ([`CHUNK`]: small, so that scattered survivors of mass removals
//! pin little). A map with a handful of entries per shard therefore costs a few hundred bytes per
//! shard, while a big one is carved into 4 KiB chunks.
//!
//! * **Allocation** happens under the shard lock, from a small per-shard cache of slots
//!   ([`SlabCache`]) that is refilled [`REFILL`] slots at a time under the slab's own mutex.
//! * **Release** happens after an entry was dropped (or moved out), on whichever thread reclaims it.
//!   Releasers return slots in batches under the slab mutex, so a batch of 64 removed entries costs
//!   one lock, not 64 `free`s.
//! * **Memory comes back**: each chunk counts the slots handed out of it; a chunk whose count drops
//!   to zero goes back to the global allocator, except that one empty chunk is kept while the slab
//!   still holds live entries (so a workload hovering around a chunk boundary does not allocate and
//!   free a chunk over and over). When the slab holds no entry at all, every chunk goes and the next
//!   one starts small again: after `clear` and the grace period the allocator gets all of it back.
//! * **Finding a slot's chunk** on release is a mask: every chunk is aligned to its largest size
//!   rounded up to a power of two (`CHUNK_ALIGN`, a page for entries up to ~500 bytes), so a
//!   slot's chunk starts at the slot's address rounded down. The chunk list is unordered (each
//!   header knows its index), so adding or freeing a chunk is O(1). With 64 KiB chunks a binary
//!   search over a sorted list was cheap enough; with 4 KiB ones the list holds thousands of
//!   chunks per shard and each freed chunk's `Vec::remove` moved half of it (dropping a one-shard
//!   map of 4M entries: 140-210 ms with 64 KiB chunks, 480-500 ms with sorted 4 KiB chunks).
//! * **Lifetime**: the slab is shared (`Arc`) by its shard and by every reclamation job that frees
//!   entries into it, so it outlives the map when retired entries are still waiting for their grace
//!   period; the last owner frees whatever chunks remain.
//!
//! The slab mutex is a leaf lock: nothing else is locked and no user code runs while it is held
//! (entries are dropped before their slots are returned). Lock order: shard lock, then slab mutex.
//!
//! Entries whose slot would exceed [`MAX_SLOT`] bytes (or need more than 64-byte alignment) are not
//! worth pooling; they keep one `Box` each, behind the same interface.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::{self, NonNull};

use crate::entry::Entry;
use crate::sync::{lock, Arc, AtomicUsize, Mutex, Ordering};

/// The most bytes a chunk spans (unless [`MIN_SLOTS`] slots need more): a page. Entries never
/// move, so one entry left in a chunk keeps the whole chunk; with 64 KiB chunks, a 1M-entry map
/// thinned to one entry in a thousand kept every chunk (15.5 of 15.5 MiB), with 4 KiB chunks it
/// keeps about a fifth of them (see "Automatic shrink and slab release" in `docs/design.md`).
const CHUNK: usize = 4 << 10;
/// Slots in a slab's first chunk.
const MIN_SLOTS: usize = 8;
/// The largest slot the slab pools; bigger entries are boxed one by one.
const MAX_SLOT: usize = 4 << 10;
/// The largest alignment the slab serves; entries that need more are boxed.
const MAX_ALIGN: usize = 64;
/// Slots a shard takes from the slab per refill of its cache.
#[cfg(not(epochmap_loom))]
const REFILL: usize = 32;
/// Slots a releaser collects before it takes the slab mutex to return them.
#[cfg(not(epochmap_loom))]
const RELEASE_BATCH: usize = 1024;
/// Under loom, tiny refills and release batches, so a model with a handful of entries refills
/// and releases several times and the slab mutex's interleavings get explored.
#[cfg(epochmap_loom)]
const REFILL: usize = 2;
#[cfg(epochmap_loom)]
const RELEASE_BATCH: usize = 2;

/// What a chunk header is padded to, so that no slot shares its line: see `EntrySlab::FIRST`.
const HEADER_LINE: usize = 128;

/// The start of every chunk. Its fields are read and written only under the slab mutex.
#[repr(C)]
struct ChunkHeader {
    /// Slots handed out of this chunk and not yet returned (live entries and cached slots).
    in_use: usize,
    /// Indices of returned slots, ready to hand out again. A dense stack rather than a list
    /// threaded through the free slots: a refill then reads one array instead of chasing a cold
    /// slot per pop (measured: the list walk was 13% of an insert/remove workload).
    free: Vec<u16>,
    /// The next slot never handed out yet; `slots` once the chunk has been carved up.
    bump: usize,
    /// Slots in this chunk.
    slots: usize,
    /// This chunk's index in `SlabState::partial` (it has a free or never-used slot), or
    /// [`NOT_PARTIAL`].
    partial_at: usize,
    /// This chunk's index in `SlabState::chunks`.
    listed_at: usize,
}

const NOT_PARTIAL: usize = usize::MAX;

/// Where a slab's chunks are; guarded by the slab mutex.
struct SlabState {
    /// Every chunk the slab owns, in no particular order (see `ChunkHeader::listed_at`).
    chunks: Vec<NonNull<ChunkHeader>>,
    /// Slots over all chunks: the size of the next chunk.
    slots: usize,
    /// Chunks with a free or never-used slot; refills take from the back.
    partial: Vec<NonNull<ChunkHeader>>,
    /// Slots handed out over all chunks.
    in_use: usize,
    /// An empty chunk kept for reuse while the slab is in use (it may have been reused since, so
    /// its `in_use` is checked before it is trusted to be empty).
    spare: Option<NonNull<ChunkHeader>>,
}

impl SlabState {
    /// Bytes of the two chunk lists' buffers: with 4 KiB chunks a slab lists hundreds of chunks,
    /// so the lists are memory the slab holds too (counted in `chunk_bytes`).
    fn list_bytes(&self) -> usize {
        (self.chunks.capacity() + self.partial.capacity()) * size_of::<NonNull<ChunkHeader>>()
    }

    /// Gives back most of a list buffer that has become much longer than its list, so that the
    /// lists follow the chunks down as they are freed (doubling back up costs O(1) amortised).
    fn trim_lists(&mut self) {
        for list in [&mut self.chunks, &mut self.partial] {
            if list.capacity() > 16 && list.capacity() > 4 * list.len() {
                list.shrink_to(2 * list.len());
            }
        }
    }

    /// Removes `chunk` from `chunks`.
    ///
    /// # Safety
    /// The caller holds the slab mutex and `chunk` is a live chunk of this state.
    unsafe fn unlist_chunk(&mut self, chunk: NonNull<ChunkHeader>) {
        // SAFETY: headers are only touched under the slab mutex (the caller's contract).
        let at = unsafe { (*chunk.as_ptr()).listed_at };
        debug_assert_eq!(self.chunks[at], chunk);
        self.chunks.swap_remove(at);
        if let Some(moved) = self.chunks.get(at) {
            // SAFETY: as above.
            unsafe { (*moved.as_ptr()).listed_at = at };
        }
    }

    /// Removes `chunk` from `partial`.
    ///
    /// # Safety
    /// The caller holds the slab mutex and `chunk` is a live chunk of this state in `partial`.
    unsafe fn unlist_partial(&mut self, chunk: NonNull<ChunkHeader>) {
        // SAFETY: headers are only touched under the slab mutex (the caller's contract).
        let at = unsafe { std::mem::replace(&mut (*chunk.as_ptr()).partial_at, NOT_PARTIAL) };
        self.partial.swap_remove(at);
        if let Some(moved) = self.partial.get(at) {
            // SAFETY: as above.
            unsafe { (*moved.as_ptr()).partial_at = at };
        }
    }
}

// SAFETY: the chunk pointers are owned memory that only the holder of the slab mutex touches.
unsafe impl Send for SlabState {}

/// The slot allocator of one shard's entries. See the module docs.
pub(crate) struct EntrySlab<K, V> {
    state: Mutex<SlabState>,
    /// Bytes of all chunks and of their free-slot stacks, readable without the mutex (a
    /// statistic: `Relaxed`).
    chunk_bytes: AtomicUsize,
    _entries: PhantomData<fn(Entry<K, V>)>,
}

/// A shard's private stock of slots, taken from its slab and used under the shard lock.
pub(crate) struct SlabCache {
    slots: Vec<NonNull<u8>>,
}

// SAFETY: the cached slots are unused memory owned by whoever owns the cache; the cache moves
// between threads only inside the shard lock.
unsafe impl Send for SlabCache {}

impl SlabCache {
    pub(crate) fn new() -> Self {
        SlabCache {
            slots: Vec::with_capacity(REFILL),
        }
    }
}

/// Slots an owner has finished with (their entries already dropped or moved out), returned to the
/// slab in batches. Dropping a `Releaser` returns what it holds.
pub(crate) struct Releaser<'s, K, V> {
    slab: &'s EntrySlab<K, V>,
    slots: Vec<NonNull<u8>>,
}

impl<K, V> EntrySlab<K, V> {
    /// Bytes of one slot: the entry, but at least one byte so that slots have distinct addresses.
    const SLOT: usize = round_up(max(size_of::<Entry<K, V>>(), 1), Self::ALIGN);
    const ALIGN: usize = align_of::<Entry<K, V>>();
    /// [`FIRST`](Self::FIRST), for the layout test.
    #[cfg(test)]
    pub(crate) const fn first_slot_offset() -> usize {
        Self::FIRST
    }

    /// Whether entries of this type are pooled (`true`) or boxed one by one.
    pub(crate) const POOLED: bool = Self::SLOT <= MAX_SLOT && Self::ALIGN <= MAX_ALIGN;
    /// Offset of the first slot: the header, rounded up to a 128-byte line pair (and the slot
    /// alignment). The header is written under the slab mutex on every refill and release; readers
    /// load the first slot's entry, so the two must not share a line (or the adjacent-line pair
    /// x86 prefetches together, which is why `CachePadded` is 128 bytes there too). It costs 64
    /// bytes of a 4 KiB chunk.
    const FIRST: usize = round_up(size_of::<ChunkHeader>(), max(Self::ALIGN, HEADER_LINE));
    /// The alignment of every chunk: the largest chunk's size rounded up to a power of two, so that
    /// masking a slot's address gives its chunk (see the module docs). Evaluated for pooled types
    /// only (a huge unpooled entry would overflow it).
    const CHUNK_ALIGN: usize = if Self::POOLED {
        max(
            (Self::FIRST + Self::MAX_SLOTS * Self::SLOT).next_power_of_two(),
            max(Self::ALIGN, align_of::<ChunkHeader>()),
        )
    } else {
        1
    };
    /// The most slots a chunk holds: as many as fit in [`CHUNK`] bytes but at least [`MIN_SLOTS`]
    /// (entries of up to `MAX_SLOT` bytes are pooled, and a chunk of one or two would cost a
    /// header per entry), and never more than a `u16` free-stack index can name.
    const MAX_SLOTS: usize = {
        let slots = max(CHUNK.saturating_sub(Self::FIRST) / Self::SLOT, MIN_SLOTS);
        if slots > u16::MAX as usize {
            u16::MAX as usize
        } else {
            slots
        }
    };

    pub(crate) fn new() -> Self {
        EntrySlab {
            state: Mutex::new(SlabState {
                chunks: Vec::new(),
                slots: 0,
                partial: Vec::new(),
                in_use: 0,
                spare: None,
            }),
            chunk_bytes: AtomicUsize::new(0),
            _entries: PhantomData,
        }
    }

    /// Moves `entry` into a slot and returns it. The caller holds the shard lock that guards
    /// `cache`, and later frees the entry with a [`Releaser`] of this slab (or [`take`](Self::take)).
    #[inline]
    pub(crate) fn alloc(&self, cache: &mut SlabCache, entry: Entry<K, V>) -> *mut Entry<K, V> {
        if !Self::POOLED {
            return Box::into_raw(Box::new(entry));
        }
        let slot = match cache.slots.pop() {
            Some(slot) => slot,
            None => self.refill_and_take(cache),
        };
        let ptr = slot.as_ptr().cast::<Entry<K, V>>();
        // Chunks are allocated with alignment `ALIGN` and slots are `SLOT`-strided from the
        // `ALIGN`-aligned offset `FIRST`, so every slot is aligned for an entry.
        // SAFETY: an unused, aligned slot of `SLOT >= size_of::<Entry>()` bytes the cache owned.
        unsafe { ptr.write(entry) };
        ptr
    }

    /// Moves the entry out of `ptr` and returns its slot to the slab.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`](Self::alloc) on this slab, is owned by the caller (reachable from
    /// no table and from no reader), and is not used again.
    pub(crate) unsafe fn take(&self, ptr: *mut Entry<K, V>) -> Entry<K, V> {
        // SAFETY: the caller owns a live entry at `ptr`.
        let entry = unsafe { ptr.read() };
        let mut releaser = self.releaser();
        // SAFETY: the entry was moved out above, so the slot holds nothing that needs dropping.
        unsafe { releaser.release(ptr) };
        entry
    }

    /// A batch of slots to return to this slab.
    pub(crate) fn releaser(&self) -> Releaser<'_, K, V> {
        Releaser {
            slab: self,
            slots: Vec::new(),
        }
    }

    /// Gives the slots in `cache` back to the slab, so that chunks that hold no entry can go.
    pub(crate) fn return_cache(&self, cache: &mut SlabCache) {
        if !cache.slots.is_empty() {
            self.give_back(&mut cache.slots);
        }
    }

    /// Bytes the slab holds from the global allocator (whole chunks). Relaxed: a statistic.
    pub(crate) fn chunk_bytes(&self) -> usize {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    /// The layout of a chunk of `slots` slots (at most `MAX_SLOTS`, so it fits in `CHUNK_ALIGN`).
    fn chunk_layout(slots: usize) -> Layout {
        Layout::from_size_align(Self::FIRST + slots * Self::SLOT, Self::CHUNK_ALIGN)
            .expect("pooled slots are bounded, so a chunk's size and alignment are valid")
    }

    /// Drops a chunk's header and gives its memory back; returns its size in bytes, including its
    /// free-slot stack's buffer (counted in `chunk_bytes` as it grew).
    ///
    /// # Safety
    /// `chunk` was allocated by `refill`, nothing can reach it any more, and it is freed once.
    unsafe fn free_chunk(chunk: NonNull<ChunkHeader>) -> usize {
        // SAFETY: the header was written in `refill` and is read and dropped once, here; the
        // memory was allocated with `chunk_layout(slots)`.
        unsafe {
            let layout = Self::chunk_layout((*chunk.as_ptr()).slots);
            let stack = (*chunk.as_ptr()).free.capacity() * size_of::<u16>();
            ptr::drop_in_place(chunk.as_ptr());
            std::alloc::dealloc(chunk.as_ptr().cast(), layout);
            layout.size() + stack
        }
    }

    /// Allocates a chunk sized for the slab's current capacity (doubling it, up to `MAX_SLOTS`
    /// slots), lists it, and returns it; the layout the allocator refused, if it did.
    fn new_chunk(&self, state: &mut SlabState) -> Result<NonNull<ChunkHeader>, Layout> {
        let slots = state
            .slots
            .clamp(MIN_SLOTS.min(Self::MAX_SLOTS), Self::MAX_SLOTS);
        let layout = Self::chunk_layout(slots);
        // SAFETY: the layout has a non-zero size (it holds the header).
        let raw = unsafe { std::alloc::alloc(layout) };
        let chunk = NonNull::new(raw).ok_or(layout)?.cast::<ChunkHeader>();
        // SAFETY: a fresh allocation, aligned for and large enough to hold the header.
        unsafe {
            chunk.as_ptr().write(ChunkHeader {
                in_use: 0,
                free: Vec::new(),
                bump: 0,
                slots,
                partial_at: state.partial.len(),
                listed_at: state.chunks.len(),
            })
        };
        let lists = state.list_bytes();
        state.chunks.push(chunk);
        state.partial.push(chunk);
        state.slots += slots;
        // The lists only grow here, so the difference is not negative.
        let grown = layout.size() + state.list_bytes() - lists;
        self.chunk_bytes.fetch_add(grown, Ordering::Relaxed);
        Ok(chunk)
    }

    /// [`refill`](Self::refill)s `cache` (which is empty) and takes one of the slots: the cold part
    /// of [`alloc`](Self::alloc), once per [`REFILL`] entries, kept out of the inlined path.
    #[cold]
    #[inline(never)]
    fn refill_and_take(&self, cache: &mut SlabCache) -> NonNull<u8> {
        self.refill(cache);
        cache
            .slots
            .pop()
            .expect("a refill provides at least one slot")
    }

    /// Takes up to [`REFILL`] slots into `cache` (which is empty), carving a new chunk if no chunk
    /// has room.
    fn refill(&self, cache: &mut SlabCache) {
        let mut state = lock(&self.state);
        while cache.slots.len() < REFILL {
            let chunk = match state.partial.last() {
                Some(&chunk) => chunk,
                // A new chunk only for an empty cache: a refill that carved several chunks at
                // once would give a one-entry shard three of them.
                None if !cache.slots.is_empty() => break,
                None => match self.new_chunk(&mut state) {
                    Ok(chunk) => chunk,
                    // Like `Box::new`: an allocation failure aborts.
                    Err(layout) => std::alloc::handle_alloc_error(layout),
                },
            };
            // SAFETY: chunk headers are only touched under the slab mutex, which we hold.
            let header = unsafe { &mut *chunk.as_ptr() };
            while cache.slots.len() < REFILL {
                let index = if let Some(index) = header.free.pop() {
                    usize::from(index)
                } else if header.bump < header.slots {
                    header.bump += 1;
                    header.bump - 1
                } else {
                    break;
                };
                // SAFETY: `index < slots`, so the slot lies inside the chunk's allocation
                // (`FIRST + slots * SLOT` bytes).
                let slot = unsafe {
                    chunk
                        .as_ptr()
                        .cast::<u8>()
                        .add(Self::FIRST + index * Self::SLOT)
                };
                header.in_use += 1;
                state.in_use += 1;
                // SAFETY: `slot` points into a live chunk, so it is not null.
                cache.slots.push(unsafe { NonNull::new_unchecked(slot) });
            }
            if header.free.is_empty() && header.bump == header.slots {
                // SAFETY: we hold the mutex; `chunk` is live and in `partial`.
                unsafe { state.unlist_partial(chunk) };
            }
        }
    }

    /// Returns `slots` (emptying the vector) and frees chunks that hold nothing any more. O(1) per
    /// slot and per chunk freed, plus trimming the lists' buffers (O(1) amortised).
    fn give_back(&self, slots: &mut Vec<NonNull<u8>>) {
        let mut freed = Vec::new();
        let (mut grown, mut bytes) = (0, 0);
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            let lists = state.list_bytes();
            let mut emptied = Vec::new();
            for slot in slots.drain(..) {
                // Every returned slot lies in a live chunk of this slab (a chunk is not freed while
                // it has slots in use), which starts at the slot's address rounded down to
                // `CHUNK_ALIGN` (chunks are that aligned and no larger). `wrapping_sub` keeps the
                // slot pointer's provenance, which is the chunk's allocation.
                let into = slot.as_ptr() as usize & (Self::CHUNK_ALIGN - 1);
                let base = slot.as_ptr().wrapping_sub(into).cast::<ChunkHeader>();
                // SAFETY: `base` is the start of a live chunk, so it is not null.
                let chunk = unsafe { NonNull::new_unchecked(base) };
                // SAFETY: headers are only touched under the slab mutex, which we hold.
                let header = unsafe { &mut *chunk.as_ptr() };
                debug_assert_eq!(state.chunks.get(header.listed_at), Some(&chunk));
                let offset = slot.as_ptr() as usize - chunk.as_ptr() as usize - Self::FIRST;
                debug_assert!(offset < header.slots * Self::SLOT && offset % Self::SLOT == 0);
                // `slots <= u16::MAX` (see `MAX_SLOTS`).
                let capacity = header.free.capacity();
                header.free.push((offset / Self::SLOT) as u16);
                // The free-slot stack is memory the slab holds too (`allocated_bytes`).
                grown += (header.free.capacity() - capacity) * size_of::<u16>();
                header.in_use -= 1;
                state.in_use -= 1;
                if header.partial_at == NOT_PARTIAL {
                    header.partial_at = state.partial.len();
                    state.partial.push(chunk);
                }
                if header.in_use == 0 {
                    emptied.push(chunk);
                }
            }
            if state.in_use == 0 {
                // Nothing lives in the slab: every chunk goes back, and so do the lists' buffers
                // (an emptied map should hold what a new one does); the next chunk starts small.
                freed = std::mem::take(&mut state.chunks);
                state.partial = Vec::new();
                state.spare = None;
                state.slots = 0;
            } else {
                // A chunk is in `emptied` at most once: `in_use` only falls in this call, so it
                // reaches zero once. Nothing is deallocated before the loop ends.
                for chunk in emptied {
                    let spare_empty = state.spare.is_some_and(|s| {
                        // SAFETY: the spare is live while recorded; we hold the slab mutex.
                        s != chunk && unsafe { (*s.as_ptr()).in_use } == 0
                    });
                    if !spare_empty {
                        state.spare = Some(chunk);
                        continue;
                    }
                    // SAFETY: we hold the mutex; the chunk is live, listed in `chunks`, and
                    // (having free slots) in `partial`.
                    unsafe {
                        state.unlist_partial(chunk);
                        state.unlist_chunk(chunk);
                    }
                    // SAFETY: as above; `slots` is read before the chunk is freed after the loop.
                    state.slots -= unsafe { (*chunk.as_ptr()).slots };
                    freed.push(chunk);
                }
                state.trim_lists();
            }
            // The lists may have grown (`partial`) or shrunk (trimmed, or taken into `freed`,
            // whose buffer goes when this function returns).
            let after = state.list_bytes();
            grown += after.saturating_sub(lists);
            bytes += lists.saturating_sub(after);
            // Counted before the mutex is released: from then on another `give_back` can empty
            // this chunk and subtract its stack's bytes, and its subtraction must come after this
            // addition in the counter's modification order. The mutex orders the two (our unlock
            // happens-before its lock), so it does. Added after the unlock (as it once was), the
            // other thread's subtraction could land first and a reader saw the counter wrapped
            // below zero (`memory_stats` reported ~2^64 bytes; the `concurrent` fuzz target's
            // `concurrent-memory-stats-overflow`). Relaxed: a statistic; the mutex does the
            // ordering.
            if grown > 0 {
                self.chunk_bytes.fetch_add(grown, Ordering::Relaxed);
            }
        }
        // Outside the lock: `dealloc` may be slow (an `munmap`), and nothing references these.
        for chunk in freed {
            // SAFETY: unlinked above and holding no slot in use, so nothing can reach it any more.
            bytes += unsafe { Self::free_chunk(chunk) };
        }
        // After the frees: the counter may briefly say more than the slab holds, never less.
        // Every chunk freed here was counted by `new_chunk` (and its stack's growth by some
        // `give_back`) under the mutex before this call took it. Relaxed: a statistic.
        self.chunk_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl<K, V> Releaser<'_, K, V> {
    /// Queues the slot of an entry that has already been dropped or moved out.
    ///
    /// # Safety
    /// `ptr` came from `alloc` on this releaser's slab, its entry has been dropped or moved out,
    /// and nothing uses the slot again.
    pub(crate) unsafe fn release(&mut self, ptr: *mut Entry<K, V>) {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.slab.queue_slot(&mut self.slots, ptr) };
    }

    /// Drops the entry at `ptr` and queues its slot, reporting which of its key's and value's
    /// `Drop`s panicked (the slot is queued either way).
    ///
    /// The key and the value are dropped one after the other, each under its own `catch_unwind`:
    /// dropping the pair in one `drop_in_place` would run the value's `Drop` while the key's panic
    /// unwinds, and a second panic there aborts the process.
    ///
    /// # Safety
    /// `ptr` came from `alloc` on this releaser's slab, is owned by the caller (reachable from no
    /// table and no reader), and is not used again.
    pub(crate) unsafe fn free(&mut self, ptr: *mut Entry<K, V>) -> DropPanics {
        // SAFETY: the caller owns the live entry at `ptr` and does not use it again.
        let panics = unsafe { DropPanics::drop_entry(ptr) };
        // SAFETY: the entry is gone either way; the caller gave up the slot.
        unsafe { self.release(ptr) };
        panics
    }
}

/// The panics raised by the `Drop`s of one entry's key and value (see [`Releaser::free`]).
#[derive(Default)]
pub(crate) struct DropPanics {
    /// How many of the two `Drop`s panicked: 0, 1 or 2.
    pub(crate) count: u64,
    /// The first panic's payload.
    pub(crate) first: Option<Box<dyn std::any::Any + Send>>,
}

impl DropPanics {
    /// Drops the entry at `ptr` in place, its key and then its value, each under its own
    /// `catch_unwind` (see [`Releaser::free`]), and reports their panics.
    ///
    /// # Safety
    /// The caller owns the live entry at `ptr`, which is not used again.
    pub(crate) unsafe fn drop_entry<K, V>(ptr: *mut Entry<K, V>) -> Self {
        let mut panics = DropPanics::default();
        // `Entry` has no `Drop` of its own, so dropping its fields one by one is all that
        // dropping the entry does.
        // SAFETY: the caller owns the live entry at `ptr`; its key is dropped once, here.
        panics.catch(|| unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*ptr).key)) });
        // SAFETY: as for the key; a panic from the key's `Drop` was caught above and left the
        // value untouched.
        panics.catch(|| unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*ptr).value)) });
        panics
    }

    fn catch(&mut self, drop: impl FnOnce()) {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(drop)) {
            self.count += 1;
            self.first.get_or_insert(payload);
        }
    }

    /// Panics if a `Drop` panicked: for tests whose entries must drop cleanly.
    #[cfg(test)]
    pub(crate) fn unwrap(self) {
        assert_eq!(self.count, 0, "a key's or value's Drop panicked");
    }
}

impl<K, V> EntrySlab<K, V> {
    /// Queues the slot of an entry that has already been dropped or moved out in `slots`, giving
    /// the queue back once it holds [`RELEASE_BATCH`] slots; an unpooled entry's box is freed now.
    ///
    /// # Safety
    /// As for [`Releaser::release`]; `slots` holds only slots of this slab.
    unsafe fn queue_slot(&self, slots: &mut Vec<NonNull<u8>>, ptr: *mut Entry<K, V>) {
        if !Self::POOLED {
            // SAFETY: unpooled entries are `Box` allocations (see `alloc`) whose contents are
            // gone; `MaybeUninit` frees the allocation without dropping anything.
            drop(unsafe { Box::from_raw(ptr.cast::<std::mem::MaybeUninit<Entry<K, V>>>()) });
            return;
        }
        // SAFETY: slots are never null.
        slots.push(unsafe { NonNull::new_unchecked(ptr.cast()) });
        if slots.len() >= RELEASE_BATCH {
            self.give_back(slots);
        }
    }
}

/// A [`Releaser`] that owns its slab's `Arc`, for an owner that outlives any borrow of the shard
/// (a `Drain`, which may outlive the map). Moves entries out and returns their slots in batches;
/// dropping it returns what it still holds.
pub(crate) struct OwnedReleaser<K, V> {
    slab: Arc<EntrySlab<K, V>>,
    slots: Vec<NonNull<u8>>,
}

// SAFETY: the queued slots are unused memory of the slab this releaser keeps alive; only its owner
// touches them, and returning them takes the slab mutex. `EntrySlab` itself is `Send + Sync`.
unsafe impl<K, V> Send for OwnedReleaser<K, V> {}
// SAFETY: `&OwnedReleaser` gives access to nothing (every method takes `&mut self`).
unsafe impl<K, V> Sync for OwnedReleaser<K, V> {}

impl<K, V> OwnedReleaser<K, V> {
    pub(crate) fn new(slab: Arc<EntrySlab<K, V>>) -> Self {
        OwnedReleaser {
            slab,
            slots: Vec::new(),
        }
    }

    /// The slab the entries live in.
    pub(crate) fn slab(&self) -> &Arc<EntrySlab<K, V>> {
        &self.slab
    }

    /// Moves the entry out of `ptr` and queues its slot, like [`EntrySlab::take`] but one slab
    /// lock per [`RELEASE_BATCH`] entries instead of one per entry.
    ///
    /// # Safety
    /// As for [`EntrySlab::take`].
    pub(crate) unsafe fn take(&mut self, ptr: *mut Entry<K, V>) -> Entry<K, V> {
        // SAFETY: the caller owns a live entry at `ptr`.
        let entry = unsafe { ptr.read() };
        // SAFETY: moved out above, so the slot holds nothing that needs dropping; it is a slot
        // of this slab (the caller's contract).
        unsafe { self.slab.queue_slot(&mut self.slots, ptr) };
        entry
    }

    /// Returns the queued slots now.
    pub(crate) fn flush(&mut self) {
        if !self.slots.is_empty() {
            self.slab.give_back(&mut self.slots);
        }
    }

    /// Returns the queued slots and frees the queue's own buffer (up to 8 KiB), for an owner that
    /// is done with this slab but lives on.
    pub(crate) fn finish(&mut self) {
        self.flush();
        self.slots = Vec::new();
    }
}

impl<K, V> Drop for OwnedReleaser<K, V> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<K, V> Drop for Releaser<'_, K, V> {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            self.slab.give_back(&mut self.slots);
        }
    }
}

impl<K, V> Drop for EntrySlab<K, V> {
    fn drop(&mut self) {
        // The last owner: the shard and every job that could free an entry into this slab are
        // gone, so nothing can reach these chunks. Normally every slot has been returned by now;
        // if a job was dropped without running (its entries leaked), their memory goes here.
        let state = match self.state.get_mut() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        for chunk in state.chunks.drain(..) {
            // SAFETY: the last owner; each chunk is freed once, here.
            unsafe { Self::free_chunk(chunk) };
        }
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

const fn round_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;

    fn entry(k: u64) -> Entry<u64, u64> {
        Entry { key: k, value: !k }
    }

    /// The chunks a slab holds, by address.
    fn chunks<K, V>(slab: &EntrySlab<K, V>) -> Vec<usize> {
        let mut chunks: Vec<usize> = lock(&slab.state)
            .chunks
            .iter()
            .map(|c| c.as_ptr() as usize)
            .collect();
        chunks.sort_unstable();
        chunks
    }

    #[test]
    fn slots_are_reused_and_chunks_go_back_when_the_slab_empties() {
        let slab = EntrySlab::<u64, u64>::new();
        let mut cache = SlabCache::new();
        let n = 20_000;
        let ptrs: Vec<_> = (0..n).map(|k| slab.alloc(&mut cache, entry(k))).collect();
        for (k, &p) in ptrs.iter().enumerate() {
            // SAFETY: live entries we allocated.
            assert_eq!(unsafe { (*p).key }, k as u64);
            assert_eq!(p as usize % align_of::<Entry<u64, u64>>(), 0);
        }
        let mut distinct = ptrs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ptrs.len(), "no slot is handed out twice");
        let full = slab.chunk_bytes();
        // The entries, plus each chunk's padded header (128 of every 4 KiB, about 3%) and its
        // free-slot stack, plus at most the unused tail of the last chunks.
        let payload = n as usize * 16;
        assert!(full >= payload && full < payload + payload / 16 + 3 * CHUNK);
        let mut releaser = slab.releaser();
        for &p in &ptrs {
            // SAFETY: each entry is owned here and freed once.
            unsafe { releaser.free(p) }.unwrap();
        }
        drop(releaser);
        // The cached slots (from one chunk: a refill never spans two new ones) still hold their
        // chunk, plus one spare.
        assert!((1..=2).contains(&chunks(&slab).len()));
        slab.return_cache(&mut cache);
        assert_eq!(slab.chunk_bytes(), 0);
        assert!(chunks(&slab).is_empty());
    }

    #[test]
    fn chunks_start_small_and_double_up_to_4_kib() {
        let slab = EntrySlab::<u64, u64>::new();
        let mut cache = SlabCache::new();
        let first = slab.alloc(&mut cache, entry(1));
        assert!(
            slab.chunk_bytes() <= 512,
            "one entry costs a small chunk: {} bytes",
            slab.chunk_bytes()
        );
        let mut ptrs = vec![first];
        ptrs.extend((2..100_000).map(|k| slab.alloc(&mut cache, entry(k))));
        let sizes: Vec<usize> = lock(&slab.state)
            .chunks
            .iter()
            // SAFETY: the test owns the slab; headers are read under its mutex.
            .map(|c| unsafe { (*c.as_ptr()).slots })
            .collect();
        assert!(sizes.iter().all(|&s| s * 16 <= CHUNK));
        let full = EntrySlab::<u64, u64>::MAX_SLOTS;
        let small = sizes.iter().filter(|&&s| s < full).count();
        assert!(small < 8, "geometric growth to full chunks: {sizes:?}");
        assert!(sizes.len() <= 100_000 / full + 8, "{} chunks", sizes.len());
        slab.return_cache(&mut cache);
        let mut releaser = slab.releaser();
        for p in ptrs {
            // SAFETY: owned, freed once.
            unsafe { releaser.free(p) }.unwrap();
        }
        drop(releaser);
        assert_eq!(slab.chunk_bytes(), 0);
    }

    #[test]
    fn one_spare_chunk_stays_while_entries_live() {
        let slab = EntrySlab::<u64, u64>::new();
        let mut cache = SlabCache::new();
        let ptrs: Vec<_> = (0..30_000)
            .map(|k| slab.alloc(&mut cache, entry(k)))
            .collect();
        slab.return_cache(&mut cache);
        let bases = chunks(&slab);
        assert!(bases.len() >= 4);
        let chunk_of =
            |p: *mut Entry<u64, u64>| bases[bases.partition_point(|&b| b <= p as usize) - 1];
        let kept = chunk_of(ptrs[ptrs.len() / 2]);
        let (keep, free): (Vec<_>, Vec<_>) = ptrs.iter().partition(|&&p| chunk_of(p) == kept);
        let mut releaser = slab.releaser();
        for &p in free {
            // SAFETY: owned, freed once.
            unsafe { releaser.free(p) }.unwrap();
        }
        drop(releaser);
        assert_eq!(chunks(&slab).len(), 2, "the chunk in use and one spare");
        assert!(chunks(&slab).contains(&kept));
        let mut releaser = slab.releaser();
        for &p in keep {
            // SAFETY: owned, freed once.
            unsafe { releaser.free(p) }.unwrap();
        }
        drop(releaser);
        assert_eq!(slab.chunk_bytes(), 0, "an empty slab keeps nothing");
    }

    #[test]
    fn take_moves_the_entry_out_and_big_entries_are_boxed() {
        let slab = EntrySlab::<String, [u8; 8192]>::new();
        const { assert!(!EntrySlab::<String, [u8; 8192]>::POOLED) };
        let mut cache = SlabCache::new();
        let p = slab.alloc(
            &mut cache,
            Entry {
                key: "k".to_string(),
                value: [7; 8192],
            },
        );
        // SAFETY: owned, taken once.
        let e = unsafe { slab.take(p) };
        assert_eq!((e.key.as_str(), e.value[8191]), ("k", 7));
        assert_eq!(slab.chunk_bytes(), 0);

        let slab = EntrySlab::<String, u64>::new();
        let p = slab.alloc(
            &mut cache,
            Entry {
                key: "x".into(),
                value: 1,
            },
        );
        // SAFETY: owned, taken once.
        let e = unsafe { slab.take(p) };
        assert_eq!(e.key, "x");
        slab.return_cache(&mut cache);
        assert_eq!(slab.chunk_bytes(), 0);
    }

    #[test]
    fn over_aligned_entries_are_pooled_up_to_64_bytes_of_alignment_and_boxed_beyond() {
        #[repr(align(64))]
        struct Line(u64);
        #[repr(align(128))]
        struct Pair(u64);
        const { assert!(EntrySlab::<u8, Line>::POOLED) };
        const { assert!(!EntrySlab::<u8, Pair>::POOLED) };
        let lines = EntrySlab::<u8, Line>::new();
        let pairs = EntrySlab::<u8, Pair>::new();
        let mut cache = SlabCache::new();
        let mut held = Vec::new();
        for i in 0..100u8 {
            let p = lines.alloc(
                &mut cache,
                Entry {
                    key: i,
                    value: Line(u64::from(i)),
                },
            );
            assert_eq!(p as usize % 64, 0);
            held.push(p);
        }
        let q = pairs.alloc(
            &mut SlabCache::new(),
            Entry {
                key: 1,
                value: Pair(7),
            },
        );
        assert_eq!(q as usize % 128, 0);
        // SAFETY: each entry is owned here and taken once.
        unsafe {
            for p in held {
                assert_eq!((*p).value.0, u64::from(lines.take(p).key));
            }
            assert_eq!(pairs.take(q).value.0, 7);
        }
        lines.return_cache(&mut cache);
        assert_eq!(lines.chunk_bytes(), 0);
    }

    #[test]
    fn zero_sized_entries_get_distinct_slots() {
        let slab = EntrySlab::<(), ()>::new();
        let mut cache = SlabCache::new();
        let a = slab.alloc(&mut cache, Entry { key: (), value: () });
        let b = slab.alloc(&mut cache, Entry { key: (), value: () });
        assert_ne!(a, b);
        let mut releaser = slab.releaser();
        // SAFETY: owned, freed once each.
        unsafe {
            releaser.free(a).unwrap();
            releaser.free(b).unwrap();
        }
        drop(releaser);
        slab.return_cache(&mut cache);
        assert_eq!(slab.chunk_bytes(), 0);
    }
}
