//! The one place the map gets its concurrency primitives from.
//!
//! Every atomic, lock, `Arc` and thread-local used inside the crate is imported from here (only
//! `collector.rs`, which sits below this module, picks its `thread_local!` by the same cfg itself),
//! so a loom run (`--cfg epochmap_loom --cfg crossbeam_loom`) swaps all of them for loom's model-checked
//! versions at once. crossbeam-epoch follows along through its own `crossbeam_loom` cfg, so the
//! epoch guard, `Atomic` and the deferred-destruction queue are modelled too.
//!
//! We use a crate-specific cfg (`epochmap_loom`) rather than plain `loom` so that a dependent crate
//! that runs its own loom tests with `--cfg loom` does not flip our internals by accident.

#[cfg(not(epochmap_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(not(epochmap_loom))]
pub(crate) use std::thread_local;

#[cfg(epochmap_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(epochmap_loom)]
pub(crate) use loom::thread_local;

/// crossbeam-epoch's types, with `pin` and `is_pinned` taken from the crate's own collector
/// (`src/collector.rs`) instead of the default one: every guard the crate takes must come from
/// the collector its memory is retired through.
pub(crate) mod epoch {
    pub(crate) use crate::collector::{is_pinned, pin};
    pub(crate) use crossbeam_epoch::{unprotected, Atomic, Guard, Owned, Shared};
}

/// Locks `mutex`, ignoring poison.
///
/// Poison is the wrong signal for this crate: every write path leaves its shard consistent at each
/// point where user code (`Hash`, `Eq`, closures, `Drop`) may panic, so a panic while the lock was
/// held says nothing about the shard's state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Waits on `condvar`, ignoring poison (see [`lock`]).
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match condvar.wait(guard) {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Gives other threads a chance to run while waiting for the epoch to advance.
#[cfg(not(epochmap_loom))]
pub(crate) fn pause(duration: std::time::Duration) {
    std::thread::sleep(duration);
}

/// Under loom, waiting is a yield so the model explores the other threads.
#[cfg(epochmap_loom)]
pub(crate) fn pause(_duration: std::time::Duration) {
    loom::thread::yield_now();
}

/// Lets another thread run: a writer held back by backpressure yields to the thread whose pin
/// holds the epoch back (often one the scheduler preempted while it was pinned).
#[cfg(not(epochmap_loom))]
pub(crate) fn yield_now() {
    std::thread::yield_now();
}

/// Under loom, a yield lets the model run the other threads.
#[cfg(epochmap_loom)]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

/// A cell for memory that readers share without atomics once it is published: an inline entry
/// of the flat layout (`src/inline.rs`). Under loom it is loom's `UnsafeCell`, so a model catches
/// a write to a slot that a reader could still be reading (a slot reused before its grace period)
/// as a data race; otherwise a plain `UnsafeCell`.
#[cfg(not(epochmap_loom))]
#[cfg_attr(not(test), allow(dead_code))] // until the flat map uses `src/inline.rs` (issue 20)
pub(crate) struct SlotCell<T>(std::cell::UnsafeCell<T>);

#[cfg(epochmap_loom)]
pub(crate) struct SlotCell<T>(loom::cell::UnsafeCell<T>);

impl<T> SlotCell<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(epochmap_loom))]
        return SlotCell(std::cell::UnsafeCell::new(value));
        #[cfg(epochmap_loom)]
        return SlotCell(loom::cell::UnsafeCell::new(value));
    }

    /// A pointer to read the contents through; under loom, the read is recorded here.
    #[inline(always)]
    pub(crate) fn read_ptr(&self) -> *const T {
        #[cfg(not(epochmap_loom))]
        return self.0.get();
        #[cfg(epochmap_loom)]
        return self.0.with(|ptr| ptr);
    }

    /// A pointer to write (or move out of) the contents through; under loom, the write is
    /// recorded here.
    #[inline(always)]
    pub(crate) fn write_ptr(&self) -> *mut T {
        #[cfg(not(epochmap_loom))]
        return self.0.get();
        #[cfg(epochmap_loom)]
        return self.0.with_mut(|ptr| ptr);
    }
}
