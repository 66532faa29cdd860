//! A counting global allocator, for test binaries that measure what the allocator really holds
//! rather than what the map says it holds. A binary opts in with
//! `#[global_allocator] static GLOBAL: common::alloc::Counting = common::alloc::Counting;`
//! (a process has one global allocator, so the static is declared there, not here) and runs its
//! measuring tests one at a time, since they share the counter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `System`, plus a count of the bytes it holds ([`allocated`]).
pub struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Bytes allocated and not yet freed, in this process, through [`Counting`].
pub fn allocated() -> usize {
    // Relaxed: a statistic read by the thread that caused the allocations it cares about.
    ALLOCATED.load(Ordering::Relaxed)
}

// SAFETY: forwards every call to `System` unchanged and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed, here and below: a counter, ordered with nothing else.
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc`, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed`, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc`, forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc`, forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
