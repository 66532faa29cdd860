//! [`ZeroedArray`]: the owned, zero-initialised arrays that tables are made of.
//!
//! What matters for a hash table that is swapped out whole, and what was tried and dropped:
//!
//! * **Zeroed by the allocator, lazily.** All-zero control words and slot lines are a valid empty
//!   bucket, so a fresh table is an `alloc_zeroed` call per array and needs no per-bucket
//!   initialisation. Slot lines want 64-byte alignment, but std's `System` allocator serves
//!   `alloc_zeroed` with `calloc` only for alignments up to its natural one (16 bytes on 64-bit
//!   targets); above that it takes an aligned allocation
//!   and `memset`s it, touching every page. So arrays of over-aligned elements are requested at the
//!   natural alignment with [`slack`](ZeroedArray::slack) bytes to spare and aligned up inside the
//!   block. Large blocks then come from `calloc`'s fresh `mmap` pages, which the kernel zeroes on
//!   first touch: a fresh table costs what its writers touch, not its size, and `with_capacity` of
//!   millions of entries returns in microseconds. (Measured before the change: 10 ms of memset for
//!   the 16 MiB of tables of a 1M-entry map; figures after it are in docs/design.md.) A custom
//!   global allocator gets the same natural-alignment zeroed request and may do the same.
//! * **No huge-page advice.** Earlier versions aligned arrays of 2 MiB and more to 2 MiB and advised
//!   `MADV_HUGEPAGE`. With the tables verifiably on huge pages (`AnonHugePages` in `smaps`), pinned
//!   lookups on 1M- and 4M-entry maps were no faster on our machine (47.8 vs 47.5-49.7 ns at 1M,
//!   53-56 ns either way at 4M): the miss that dominates a lookup is the entry's, not the bucket's.
//!   Without a measured gain, the advice, its `unsafe` FFI call and the alignment padding were removed.
//!
//! Under loom, atomics are not plain integers, so the array is built element by element instead.

use std::ops::Deref;

/// An owned array of `T` for which all-zero bytes are a valid value.
pub(crate) struct ZeroedArray<T> {
    /// The first element: `block` aligned up to `T`'s alignment.
    #[cfg(not(epochmap_loom))]
    ptr: std::ptr::NonNull<T>,
    #[cfg(not(epochmap_loom))]
    len: usize,
    /// The block as the allocator returned it, and the layout it was requested with.
    #[cfg(not(epochmap_loom))]
    block: std::ptr::NonNull<u8>,
    #[cfg(not(epochmap_loom))]
    layout: std::alloc::Layout,
    #[cfg(epochmap_loom)]
    items: Box<[T]>,
}

// SAFETY: a `ZeroedArray<T>` owns its elements like a `Box<[T]>` does, so it is `Send`/`Sync`
// exactly when `T` is.
unsafe impl<T: Send> Send for ZeroedArray<T> {}
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for ZeroedArray<T> {}

/// The alignment up to which std's `System` allocator serves `alloc_zeroed` with `calloc` (its
/// `MIN_ALIGN`): 16 bytes on 64-bit targets, 8 on 32-bit ones.
const NATURAL_ALIGN: usize = if cfg!(target_pointer_width = "64") {
    16
} else {
    8
};

impl<T> ZeroedArray<T> {
    /// Bytes requested beyond the elements themselves: room to align an over-aligned `T` up
    /// inside a block that has only the allocator's natural alignment.
    pub(crate) const fn slack() -> usize {
        std::mem::align_of::<T>().saturating_sub(NATURAL_ALIGN)
    }

    /// Heap bytes an array of `len` elements requests from the allocator, or `None` on overflow.
    pub(crate) fn bytes_for(len: usize) -> Option<usize> {
        len.checked_mul(std::mem::size_of::<T>())?
            .checked_add(Self::slack())
    }
}

#[cfg(not(epochmap_loom))]
impl<T> ZeroedArray<T> {
    /// `len` zeroed elements, or the layout the allocator could not provide.
    ///
    /// # Safety
    /// All-zero bytes must be a valid `T` (integers, atomics of integers and pointers, and structs of
    /// those). `make` is only used by the loom build.
    pub(crate) unsafe fn new(
        len: usize,
        _make: impl FnMut() -> T,
    ) -> Result<Self, std::alloc::Layout> {
        use std::alloc::{alloc_zeroed, Layout};
        let size = Self::bytes_for(len).expect("array size checked by Table::buckets_for");
        let align = std::mem::align_of::<T>().min(NATURAL_ALIGN);
        let layout =
            Layout::from_size_align(size, align).expect("array size checked by Table::buckets_for");
        assert!(
            len != 0 && std::mem::size_of::<T>() != 0,
            "tables have at least one bucket"
        );
        // SAFETY: the layout has a non-zero size (asserted above).
        let Some(block) = std::ptr::NonNull::new(unsafe { alloc_zeroed(layout) }) else {
            return Err(layout);
        };
        // The block is `align`-aligned, so at most `align_of::<T>() - align` = `slack()` bytes
        // separate it from the first `T`-aligned address, and `len` elements fit after that.
        // Computed from the address rather than with `align_offset`, whose contract lets it give
        // up (return `usize::MAX`), which the bound below must not depend on.
        let t_align = std::mem::align_of::<T>();
        let offset = (block.as_ptr() as usize).wrapping_neg() & (t_align - 1);
        debug_assert!(offset <= Self::slack());
        // SAFETY: `offset <= slack()`, so the pointer stays inside the block (see above).
        let ptr = unsafe { block.add(offset) }.cast::<T>();
        Ok(ZeroedArray {
            ptr,
            len,
            block,
            layout,
        })
    }
}

#[cfg(epochmap_loom)]
impl<T> ZeroedArray<T> {
    /// `len` elements built by `make` (loom's atomics cannot be zero-initialised in bulk).
    ///
    /// # Safety
    /// None under loom; the signature matches the non-loom build.
    pub(crate) unsafe fn new(
        len: usize,
        make: impl FnMut() -> T,
    ) -> Result<Self, std::alloc::Layout> {
        Ok(ZeroedArray {
            items: std::iter::repeat_with(make).take(len).collect(),
        })
    }
}

impl<T> Deref for ZeroedArray<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        #[cfg(not(epochmap_loom))]
        // SAFETY: `ptr` points to `len` initialised (zeroed, valid per `new`'s contract) elements
        // that this array owns and frees only in `drop`.
        return unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) };
        #[cfg(epochmap_loom)]
        return &self.items;
    }
}

#[cfg(not(epochmap_loom))]
impl<T> Drop for ZeroedArray<T> {
    fn drop(&mut self) {
        // SAFETY: 1. every element is valid, so dropping them in place is sound (for the atomics used
        // here it is a no-op); 2. `block` was allocated with exactly `self.layout` and is freed once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            std::alloc::dealloc(self.block.as_ptr(), self.layout);
        }
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[repr(C, align(64))]
    struct Line([AtomicU64; 8]);

    #[test]
    fn over_aligned_elements_are_aligned_inside_a_naturally_aligned_block() {
        assert_eq!(ZeroedArray::<Line>::slack(), 64 - NATURAL_ALIGN);
        assert_eq!(ZeroedArray::<AtomicU64>::slack(), 0);
        for len in [1, 3, 1000, (8 << 20) / 64] {
            // SAFETY: zero is a valid `Line` (atomics of integers).
            let array = unsafe { ZeroedArray::new(len, || unreachable!()) }.unwrap();
            let first: &Line = &array[0];
            assert_eq!(first as *const Line as usize % 64, 0);
            assert_eq!(
                ZeroedArray::<Line>::bytes_for(len),
                Some(len * 64 + ZeroedArray::<Line>::slack())
            );
            let last: &Line = &array[len - 1];
            assert!(last.0.iter().all(|a| a.load(Ordering::Relaxed) == 0));
            last.0[7].store(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn small_and_large_arrays_start_zeroed() {
        for len in [1, 100, (4 << 20) / 8] {
            // SAFETY: zero is a valid AtomicU64.
            let array = unsafe { ZeroedArray::new(len, || AtomicU64::new(0)) }.unwrap();
            assert_eq!(array.len(), len);
            assert!(array.iter().all(|a| a.load(Ordering::Relaxed) == 0));
            array[len - 1].store(7, Ordering::Relaxed);
            assert_eq!(array[len - 1].load(Ordering::Relaxed), 7);
        }
    }
}
