//! Detects a thread writing to a map from inside code that runs under one of that map's shard locks.
//!
//! Closures passed to `get_or_insert_with`, `update`, `retain`, `remove_if` and `compute` (and the
//! key's `Hash`/`Eq`) run while the shard's writer lock is held. If such code writes to the same map
//! it would wait for a lock its own thread holds (same shard), or take two shard locks in an order
//! another thread may reverse (different shards): a deadlock either way. Instead of deadlocking
//! silently we keep, per thread, the maps whose locks it holds, and panic with an explanation.
//! Reads (`get`, `iter`, `len`, ...) take no lock and are always allowed.

use std::cell::RefCell;

use crate::sync::thread_local;

thread_local! {
    // Not `const { .. }`: loom's `thread_local!` does not accept that form.
    #[allow(clippy::missing_const_for_thread_local)]
    static HELD: RefCell<Vec<usize>> = RefCell::new(Vec::new());
}

/// Proof that this thread has registered a shard lock of map `map` as held.
pub(crate) struct Held {
    map: usize,
}

impl Held {
    /// Registers that this thread is about to lock a shard of `map`.
    ///
    /// # Panics
    /// If this thread already holds a shard lock of `map`.
    pub(crate) fn enter(map: usize) -> Held {
        // `try_with`: a write may come from another thread-local's destructor (say, a per-thread
        // token that deregisters itself from a global map on thread exit) after `HELD` is already
        // destroyed. `with` would panic there, and a panic in a thread-local destructor aborts the
        // process. Detection is skipped there: a destructor runs at thread exit, outside any closure
        // of ours, so only a write nested in a closure *within* that destructor goes undetected.
        let _ = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            if held.contains(&map) {
                drop(held);
                panic!(
                    "epochmap: re-entrant write. Code running under one of this map's shard locks \
                     (a closure given to get_or_insert_with/update/retain/remove_if/compute, or a \
                     key's Hash/Eq) called a method that takes this map's shard locks (insert, \
                     remove, clear, retain, reserve, shrink_to_fit, wait_for_reclamation, ...). \
                     That would deadlock; read with get/get_cloned inside the closure and write \
                     after it returns."
                );
            }
            held.push(map);
        });
        Held { map }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // `try_with`: during thread teardown the list may already be gone, and then there is
        // nothing left to keep consistent.
        let _ = HELD.try_with(|held| {
            let mut held = held.borrow_mut();
            if let Some(at) = held.iter().rposition(|&m| m == self.map) {
                held.remove(at);
            }
        });
    }
}

/// A number that identifies the calling thread among the threads alive now (the address of its
/// record of held locks), or 0 during thread teardown. Lets a load detect that its own loader asks
/// for the key it is loading, which would otherwise wait for itself forever.
pub(crate) fn thread_token() -> usize {
    HELD.try_with(|held| held as *const RefCell<Vec<usize>> as usize)
        .unwrap_or(0)
}
