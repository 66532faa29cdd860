//! [`ZeroedArray`]: the owned, zero-initialised arrays that tables are made of.
//!
//! Two properties matter for a hash table that is probed at random and swapped out whole:
//!
//! * **Zeroed in one pass.** An all-zero bucket is a valid empty bucket, so a fresh table is one
//!   `alloc_zeroed` call and needs no per-bucket initialisation. Because buckets are 64-byte
//!   aligned, std's `System` allocator serves this with an aligned allocation plus a `memset`
//!   (`calloc`'s lazily zeroed pages are only used for alignments of 16 or less), so a fresh table
//!   costs one pass over its memory at memset speed: about 10 ms for the 16 MiB of tables of a
//!   1M-entry map on our machine, which is what `clear_keep_capacity` pays.
//! * **Huge pages for big arrays.** Random probes into a multi-megabyte array miss the TLB on nearly
//!   every access with 4 KiB pages. Arrays of at least 2 MiB are therefore aligned to 2 MiB and, on
//!   Linux, advised `MADV_HUGEPAGE`, so that transparent huge pages back them when the system allows
//!   it (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise` or `always`). The advice is a hint:
//!   if it fails, nothing changes but speed.
//!
//! Under loom, atomics are not plain integers, so the array is built element by element instead.

use std::ops::Deref;

/// Arrays at least this large are 2 MiB-aligned and advised to use huge pages.
#[cfg(not(epochmap_loom))]
const HUGE_PAGE: usize = 2 << 20;

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
        let layout = if layout.size() >= HUGE_PAGE {
            layout
                .align_to(HUGE_PAGE)
                .expect("2 MiB is a valid alignment")
        } else {
            layout
        };
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw.cast::<T>()) else {
            return Err(layout);
        };
        if layout.size() >= HUGE_PAGE {
            advise_huge_pages(raw, layout.size());
        }
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

/// Asks the kernel to back `len` bytes at `addr` with transparent huge pages. A hint only.
#[cfg(all(
    not(epochmap_loom),
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn advise_huge_pages(addr: *mut u8, len: usize) {
    // `MADV_HUGEPAGE` on x86_64 and aarch64 Linux (asm-generic/mman-common.h).
    const MADV_HUGEPAGE: i32 = 14;
    extern "C" {
        fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
    }
    // SAFETY: `addr..addr + len` is a live allocation we own, `addr` is 2 MiB- (so page-) aligned,
    // and MADV_HUGEPAGE changes no contents, only how the range is backed. Failure is harmless.
    let _ = unsafe { madvise(addr, len, MADV_HUGEPAGE) };
}

#[cfg(all(
    not(epochmap_loom),
    not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
))]
fn advise_huge_pages(_addr: *mut u8, _len: usize) {}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn small_and_huge_arrays_start_zeroed_and_aligned() {
        for len in [1, 100, (4 << 20) / 8] {
            // SAFETY: zero is a valid AtomicU64.
            let array = unsafe { ZeroedArray::new(len, || AtomicU64::new(0)) }.unwrap();
            assert_eq!(array.len(), len);
            assert!(array.iter().all(|a| a.load(Ordering::Relaxed) == 0));
            if len * 8 >= HUGE_PAGE {
                assert_eq!(array.as_ptr() as usize % HUGE_PAGE, 0);
            }
            array[len - 1].store(7, Ordering::Relaxed);
            assert_eq!(array[len - 1].load(Ordering::Relaxed), 7);
        }
    }
}
