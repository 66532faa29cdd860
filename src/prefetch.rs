//! A cache-line prefetch hint, for the lookup, iteration and drain paths that know which line they
//! will need a few steps before they need it.

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
