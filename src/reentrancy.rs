//! Detects a thread taking a shard lock it can deadlock on, and panics instead.
//!
//! Closures passed to `get_or_insert_with`, `update`, `retain`, `remove_if` and `compute` (and the
//! key's `Hash`/`Eq`) run while the shard's writer lock is held. We keep, per thread, the shard
//! locks it holds (map, shard, and which `par_retain` call took each, if one did), and check each
//! new lock against them.
//!
//! # The rule: which nested lock can deadlock
//!
//! A thread that already holds shard locks of a map and takes another lock of the same map:
//!
//! 1. **The same shard** would wait for itself, forever (the mutex is not re-entrant): panic.
//! 2. **Another shard, from code running under a lock** (a closure writing to its own map, a
//!    `Drop`, a rayon job that happens to run there) holds one lock while waiting for a second.
//!    Another thread doing the same in the opposite order closes a cycle (A holds shard 1 and
//!    waits for 2, B holds 2 and waits for 1): panic. Whether the other shard is free right now
//!    does not matter; the order is the hazard.
//! 3. **Another shard, for a task of the same `par_retain` call** that rayon's work stealing ran
//!    on this thread while it waited in a `join` inside `keep`: allowed, as long as that call is
//!    the only `par_retain` running on the map. A `par_retain` call locks each shard exactly once,
//!    in one task; so the holder of the shard this thread waits for is either a task of the same
//!    call (impossible: that task is this one), or a write that by rules 1 and 2 never waits for a
//!    second lock of this map while it holds one, or a task of *another* `par_retain` call of the
//!    same map. Only the last can wait for a lock this thread holds, so the exception requires the
//!    call to be alone on its map (checked against a registry of running calls, which only
//!    `par_retain` and this nested case touch). Two calls at once on one map that both nest
//!    this way panic instead; the one whose check comes second sees both calls registered.
//!
//! Reads (`get`, `iter`, `len`, ...) take no lock and are always allowed. What stays undetected:
//! a cycle through two *different* maps (a closure on map A writing to map B while another
//! thread's closure on B writes to A; documented where the closures are), and a thread that
//! blocks on anything else while holding a lock (a channel, another mutex, a rayon pool whose
//! threads are all blocked on this map's locks).

use std::cell::{Cell, RefCell};

use crate::sync::thread_local;

/// One held shard lock.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Lock {
    /// The map (the address of its shard array); 0 only in [`Lock::NONE`].
    map: usize,
    /// The shard (its address).
    shard: usize,
    /// The `par_retain` call that took it, or [`ORDINARY`].
    call: usize,
}

impl Lock {
    /// No lock: what [`FIRST`] holds while the thread holds none. No map lives at address 0.
    const NONE: Lock = Lock {
        map: 0,
        shard: 0,
        call: ORDINARY,
    };
}

/// The `call` of a lock taken by anything but a `par_retain` task.
pub(crate) const ORDINARY: usize = 0;

// The record is split so that the common case costs one load and one store on each side: every
// write that is not nested in a closure holds exactly one lock, which lives in `FIRST` (a `const`
// thread-local without a destructor compiles to a plain thread-local access, with no lazy
// initialisation to check, and is readable even during thread teardown). Locks taken while
// `FIRST` is held, which only code running under a lock can do, go to `NESTED`, and
// `NESTED_LEN` counts them so that releasing `FIRST` touches `NESTED` only when there are some.
// Invariant: `FIRST` is `NONE` exactly while the thread holds no lock; releasing it promotes the
// oldest nested lock. Measured: the single `RefCell<Vec>` this replaces cost ~80 instructions per
// write.
#[cfg(not(epochmap_loom))]
thread_local! {
    static FIRST: Cell<Lock> = const { Cell::new(Lock::NONE) };
    static NESTED_LEN: Cell<usize> = const { Cell::new(0) };
    static NESTED: RefCell<Vec<Lock>> = const { RefCell::new(Vec::new()) };
}

// loom's `thread_local!` does not accept the `const { .. }` form.
#[cfg(epochmap_loom)]
thread_local! {
    static FIRST: Cell<Lock> = Cell::new(Lock::NONE);
    static NESTED_LEN: Cell<usize> = Cell::new(0);
    static NESTED: RefCell<Vec<Lock>> = RefCell::new(Vec::new());
}

const REENTRANT: &str = "epochmap: re-entrant write. Code running under one of this map's shard \
     locks (a closure given to get_or_insert_with/update/retain/remove_if/compute, or a key's \
     Hash/Eq) called a method that takes this map's shard locks (insert, remove, clear, retain, \
     par_retain, par_extend, reserve, shrink_to_fit, wait_for_reclamation, ...). That would \
     deadlock; read with get/get_cloned inside the closure and write after it returns.";

/// Proof that this thread has registered a shard lock as held.
pub(crate) struct Held {
    lock: Lock,
}

impl Held {
    /// Registers that this thread is about to lock `shard` of `map`, for `call` (a `par_retain`
    /// call's id, or [`ORDINARY`]).
    ///
    /// # Panics
    /// If that lock can deadlock (see the module docs).
    #[inline]
    pub(crate) fn enter(map: usize, shard: usize, call: usize) -> Held {
        let lock = Lock { map, shard, call };
        // `try_with`: a write may come from another thread-local's destructor (say, a per-thread
        // token that deregisters itself from a global map on thread exit). Under loom `FIRST` is
        // lazily initialised and may already be destroyed there; `with` would then panic, and a
        // panic in a thread-local destructor aborts the process. Outside loom it never fails.
        let first = FIRST.try_with(Cell::get).unwrap_or(Lock::NONE);
        if first == Lock::NONE {
            // The common case, every write not nested in a closure: nothing held, nothing to check.
            let _ = FIRST.try_with(|f| f.set(lock));
        } else {
            Self::enter_nested(first, lock);
        }
        Held { lock }
    }

    /// [`enter`](Self::enter) for a thread that already holds `first`: checks `lock` against every
    /// lock held and records it in `NESTED`.
    #[cold]
    #[inline(never)]
    fn enter_nested(first: Lock, lock: Lock) {
        // `try_with`: during thread teardown `NESTED` may be gone. Detection is skipped there: a
        // destructor runs at thread exit, outside any closure of ours, so only a write nested in a
        // closure *within* that destructor goes undetected.
        let _ = NESTED.try_with(|nested| {
            let mut nested = nested.borrow_mut();
            let Lock { map, shard, call } = lock;
            let held = std::iter::once(&first).chain(nested.iter());
            let mut same_map = held.filter(|h| h.map == map).peekable();
            if same_map.peek().is_some() {
                let same_shard = same_map.clone().any(|h| h.shard == shard);
                let one_call = call != ORDINARY && same_map.all(|h| h.call == call);
                if same_shard || !one_call {
                    drop(nested);
                    panic!("{REENTRANT}");
                }
                if !calls::alone(map, call) {
                    drop(nested);
                    panic!(
                        "{REENTRANT} (Here: work stealing ran a task of one par_retain on a \
                         thread that holds another shard for it, while a second par_retain of \
                         the same map is running; the two could each wait for a shard the other \
                         holds. Do not run par_retain calls on one map at once when their keep \
                         uses rayon.)"
                    );
                }
            }
            nested.push(lock);
            let _ = NESTED_LEN.try_with(|len| len.set(nested.len()));
        });
    }

    /// Panics if this thread holds a shard lock of `map`: for writes whose locks are taken on
    /// other threads (`par_retain`, `par_extend`), where the per-lock check would not run on the
    /// thread that holds the lock, and the caller would wait for them forever; and for `drain`,
    /// which must fail before it swaps out any shard's table, not halfway through.
    pub(crate) fn assert_not_holding(map: usize) {
        let first = FIRST.try_with(Cell::get).unwrap_or(Lock::NONE);
        let holds = first != Lock::NONE
            && (first.map == map
                || NESTED
                    .try_with(|nested| nested.borrow().iter().any(|h| h.map == map))
                    .unwrap_or(false));
        if holds {
            panic!("{REENTRANT}");
        }
    }
}

impl Drop for Held {
    #[inline]
    fn drop(&mut self) {
        // `try_with`: during thread teardown the record may already be gone (under loom), and
        // then there is nothing left to keep consistent.
        let first = FIRST.try_with(Cell::get).unwrap_or(Lock::NONE);
        let nested = NESTED_LEN.try_with(Cell::get).unwrap_or(0);
        if first == self.lock && nested == 0 {
            // The common case: the only lock held.
            let _ = FIRST.try_with(|f| f.set(Lock::NONE));
            // The thread holds no lock now: reclamation it had to put off because it ran under
            // one (see `reclaim::run_or_owe`) can drop users' keys and values here.
            crate::owed::pay_owed();
        } else {
            self.release_nested(first);
        }
    }
}

/// Whether this thread holds a shard lock of any map. Reclamation checks it before it drops keys
/// and values: a `Drop` must never run under a shard lock (it may write to that map, which would
/// be a re-entrant write, or take a lock of its own, which could deadlock). During thread
/// teardown, when the record may be gone (under loom), a thread counts as holding none.
#[inline]
pub(crate) fn holds_lock() -> bool {
    FIRST.try_with(Cell::get).unwrap_or(Lock::NONE) != Lock::NONE
}

impl Held {
    /// [`Drop`] for a thread that holds more than this lock: removes it from `NESTED`, or, if it
    /// is `FIRST`, promotes the oldest nested lock in its place.
    #[cold]
    #[inline(never)]
    fn release_nested(&self, first: Lock) {
        let _ = NESTED.try_with(|nested| {
            let mut nested = nested.borrow_mut();
            if first == self.lock {
                let next = if nested.is_empty() {
                    Lock::NONE
                } else {
                    nested.remove(0)
                };
                let _ = FIRST.try_with(|f| f.set(next));
            } else if let Some(at) = nested.iter().rposition(|&h| h == self.lock) {
                nested.remove(at);
            }
            let _ = NESTED_LEN.try_with(|len| len.set(nested.len()));
        });
    }
}

/// A number that identifies the calling thread among the threads alive now (the address of its
/// record of held locks), or 0 during thread teardown. Lets a load detect that its own loader asks
/// for the key it is loading, which would otherwise wait for itself forever.
pub(crate) fn thread_token() -> usize {
    FIRST
        .try_with(|first| first as *const Cell<Lock> as usize)
        .unwrap_or(0)
}

#[cfg(feature = "rayon")]
pub(crate) use calls::ParRetainCall;

/// The registry of running `par_retain` calls (rule 3 of the module docs).
#[cfg(feature = "rayon")]
mod calls {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// `(map, call)` for every `par_retain` call running now. A plain `std` mutex: the `rayon`
    /// feature is not built for loom, and this is touched only when a call starts or ends and when
    /// a task nests in another of its call (never on the ordinary write path).
    static RUNNING: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    /// Registration of one running `par_retain` call; deregisters on drop.
    pub(crate) struct ParRetainCall {
        map: usize,
        pub(crate) id: usize,
    }

    impl ParRetainCall {
        /// Registers a call on `map` and gives it a fresh id.
        pub(crate) fn start(map: usize) -> Self {
            // Relaxed: the counter only has to hand out distinct ids, which any RMW does.
            static NEXT: AtomicUsize = AtomicUsize::new(super::ORDINARY + 1);
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            running().push((map, id));
            ParRetainCall { map, id }
        }
    }

    impl Drop for ParRetainCall {
        fn drop(&mut self) {
            let mut running = running();
            if let Some(at) = running.iter().position(|&r| r == (self.map, self.id)) {
                running.swap_remove(at);
            }
        }
    }

    fn running() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
        RUNNING.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `call` is the only `par_retain` running on `map`. The mutex orders this check
    /// after the registration of every call whose task already holds a lock of `map`.
    pub(super) fn alone(map: usize, call: usize) -> bool {
        running().iter().all(|&(m, c)| m != map || c == call)
    }
}

/// Without `rayon` there is no `par_retain`, so no lock is ever taken for one.
#[cfg(not(feature = "rayon"))]
mod calls {
    pub(super) fn alone(_map: usize, _call: usize) -> bool {
        unreachable!("only par_retain tasks take locks for a call")
    }
}
