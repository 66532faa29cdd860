//! [`ZeroedArray`]: the owned, zero-initialised arrays that tables are made of.
//!
//! What matters for a hash table that is swapped out whole, and what was tried and dropped:
//!
//! * **Zeroed in one pass.** An all-zero bucket is a valid empty bucket, so a fresh table is one
//!   `alloc_zeroed` call and needs no per-bucket initialisation. Because buckets are 64-byte
//!   aligned, std's `System` allocator serves this with an aligned allocation plus a `memset`
//!   (`calloc`'s lazily zeroed pages are only used for alignments of 16 or less), so a fresh table
//!   costs one pass over its memory at memset speed: about 10 ms for the 16 MiB of tables of a
//!   1M-entry map on our machine, which is what `clear_keep_capacity` pays.
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
    #[cfg(not(epochmap_loom))]
    ptr: std::ptr::NonNull<T>,
    #[cfg(not(epochmap_loom))]
    len: usize,
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
        let layout = Layout::array::<T>(len).expect("array size checked by Table::buckets_for");
        assert!(layout.size() != 0, "tables have at least one bucket");
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw.cast::<T>()) else {
            return Err(layout);
        };
        Ok(ZeroedArray { ptr, len, layout })
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
        // here it is a no-op); 2. `ptr` was allocated with exactly `self.layout` and is freed once.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            std::alloc::dealloc(self.ptr.as_ptr().cast(), self.layout);
        }
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

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
