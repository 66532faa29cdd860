//! The crate's own epoch collector: every guard epochmap takes is pinned here, never on
//! crossbeam-epoch's process-wide default collector.
//!
//! A collector is the set of threads registered with it (one `Local` record each) and the queue
//! of deferred functions they have flushed. Two things follow from sharing the default one with
//! every other crossbeam-epoch user in the process:
//!
//! * every collect (each 128th pin of a thread, and every `Guard::flush`, which the write path
//!   does once per 64 removals or replacements of a shard) walks the records of *all* threads
//!   ever registered with it and still alive, rayon workers and other crates' threads included,
//!   and runs whatever expired deferred functions the queue holds, other crates' among them, on
//!   our caller's thread, inside our call;
//! * a thread pinned by another crate (a long-held guard of some other epoch-based structure)
//!   holds back our grace periods, so our garbage waits for it, and `Drain::next` on such a
//!   thread would wait forever.
//!
//! With a collector of our own, a collect walks only the threads that have used an `EpochMap`
//! and runs only our deferred functions, and only our own pins hold back our reclamation.
//!
//! **The one rule this module exists for:** a guard that protects a read of a map's memory must
//! come from the same collector the memory is retired through. Every pin in the crate therefore
//! goes through [`pin`]; `crate::sync::epoch` re-exports crossbeam's types but not its `pin` or
//! `is_pinned`, so a pin on the default collector cannot be written by accident.

use crossbeam_epoch::{Collector, Guard, LocalHandle};

// `thread_local!` straight from std or loom, as `crate::sync` picks it: this module sits below
// `sync` (which re-exports its `pin`), so it does not import from there.
#[cfg(epochmap_loom)]
use loom::thread_local;
#[cfg(not(epochmap_loom))]
use std::thread_local;

/// The collector every epochmap guard belongs to, created on first use and never dropped.
#[cfg(not(epochmap_loom))]
fn collector() -> &'static Collector {
    static COLLECTOR: std::sync::OnceLock<Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(Collector::new)
}

/// Under loom, a `lazy_static` of loom's, as crossbeam's own default collector does there: loom
/// drops it at the end of each execution, so every model execution starts with a fresh
/// collector (a `OnceLock` would carry one execution's epoch and records into the next).
#[cfg(epochmap_loom)]
fn collector() -> &'static Collector {
    loom::lazy_static! {
        static ref COLLECTOR: Collector = Collector::new();
    }
    &COLLECTOR
}

thread_local! {
    /// This thread's record in [`collector`], registered on the thread's first pin and
    /// unregistered when the thread exits.
    static HANDLE: LocalHandle = collector().register();
}

/// Pins the current thread on the crate's collector.
///
/// The guard is crossbeam's, made by its `Local::pin` exactly as `crossbeam_epoch::pin` makes one
/// (the same `SeqCst` fence after publishing the pinned epoch), so every ordering argument in the
/// crate that rests on "pinned before" or "unpinned after" reads as before. What changed is only
/// whom it orders against: an epoch orders the threads pinned on its own collector and no others,
/// which is why a read protected by a guard of any other collector would be a use-after-free.
#[inline]
pub(crate) fn pin() -> Guard {
    with_handle(LocalHandle::pin)
}

/// Whether the current thread is pinned on the crate's collector (by a `Ref`, `Pinned`, iterator
/// or an operation in progress of any `EpochMap`; another crate's guard does not count).
#[inline]
pub(crate) fn is_pinned() -> bool {
    with_handle(LocalHandle::is_pinned)
}

#[inline]
fn with_handle<R>(f: impl Fn(&LocalHandle) -> R) -> R {
    // While the thread-local is being destroyed (a pin from some other thread-local's `Drop` at
    // thread exit), register a temporary record instead. crossbeam keeps a record alive while a
    // guard of it lives, so the guard may outlive the temporary handle.
    HANDLE
        .try_with(|handle| f(handle))
        .unwrap_or_else(|_| f(&collector().register()))
}
