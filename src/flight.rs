//! One load in flight ([`Flight`]) and a shard's list of them ([`Pending`]): the single-flight
//! machinery of `EpochMap::get_or_load` (see `load.rs` for the protocol). A shard holds its
//! [`Pending`] list under its lock; the map-level calls that register, wait for and resolve
//! flights are in `load.rs`, above the map.

use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::reentrancy::thread_token;
use crate::sync::{lock, wait, Arc, Condvar, Mutex};

/// The loads in flight for one shard's keys. Only the shard lock's holder touches it.
pub(crate) struct Pending<K> {
    loads: Vec<PendingLoad<K>>,
}

struct PendingLoad<K> {
    hash: u64,
    /// The leader's key, parked here while it loads: waiters compare against it under the lock.
    key: K,
    flight: Arc<Flight>,
}

impl<K> Pending<K> {
    pub(crate) fn new() -> Self {
        Pending { loads: Vec::new() }
    }

    /// The flight loading `key`, if any. Runs `Eq` only on loads whose hash matches.
    pub(crate) fn find<Q>(&self, hash: u64, key: &Q) -> Option<&Arc<Flight>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.loads
            .iter()
            .find(|load| load.hash == hash && load.key.borrow() == key)
            .map(|load| &load.flight)
    }

    pub(crate) fn push(&mut self, hash: u64, key: K, flight: Arc<Flight>) {
        self.loads.push(PendingLoad { hash, key, flight });
    }

    /// Unregisters `flight`'s load and hands its key back.
    pub(crate) fn take(&mut self, flight: &Arc<Flight>) -> Option<K> {
        let at = self
            .loads
            .iter()
            .position(|load| Arc::ptr_eq(&load.flight, flight))?;
        Some(self.loads.swap_remove(at).key)
    }

    // Only the std build's unit tests (`load.rs`) count pending loads; the loom build has none.
    #[cfg(all(test, not(epochmap_loom)))]
    pub(crate) fn len(&self) -> usize {
        self.loads.len()
    }
}

/// One load in flight: what its waiters wait on.
pub(crate) struct Flight {
    state: Mutex<FlightState>,
    /// Signalled once, when the flight resolves; blocking waiters wait on it.
    resolved: Condvar,
    /// The leader's [`thread_token`] if it is a blocking call (0 for an async one). A blocking
    /// leader's thread runs nothing but its loader until the flight resolves, so a waiter on that
    /// thread, blocking or async, is the loader asking for its own key, which would never return.
    leader: usize,
}

struct FlightState {
    done: bool,
    /// Async waiters' wakers, one slot per waiting future (emptied when that future is dropped).
    wakers: Vec<Option<Waker>>,
    /// The emptied slots of `wakers`, which the next waiters take before the list grows: waiters
    /// polled once and dropped (a `select!` against a timeout) may come and go by the million
    /// during one slow load, and the list stays as long as the most that were alive at once.
    /// A slot is reused only after its owner dropped, and only its owner knows its index, so no
    /// two live waiters ever share one.
    free: Vec<usize>,
}

impl Flight {
    pub(crate) fn new(leader: usize) -> Self {
        Flight {
            state: Mutex::new(FlightState {
                done: false,
                wakers: Vec::new(),
                free: Vec::new(),
            }),
            resolved: Condvar::new(),
            leader,
        }
    }

    /// Marks the load finished (loaded or failed) and wakes every waiter, each exactly once.
    pub(crate) fn resolve(&self) {
        let wakers = {
            let mut state = lock(&self.state);
            debug_assert!(!state.done, "a flight resolves once");
            state.done = true;
            std::mem::take(&mut state.wakers)
        };
        // After the state's lock is released: a woken waiter's first step is to take it.
        self.resolved.notify_all();
        // Outside every lock: waking is the runtime's code. It may panic; every waker is still
        // woken (a waiter left unwoken would never be polled again, and the flight is already
        // resolved, so nobody would retry), then the first panic is resumed — unless this thread is
        // already unwinding (a leader's loader panicked), where a second panic would abort.
        let mut first_panic = None;
        for waker in wakers.into_iter().flatten() {
            if let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()))
            {
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            if !std::thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }

    /// Whether this thread is the flight's blocking leader, so that waiting here would be its
    /// loader waiting for itself. Meaningful only while the flight is not resolved.
    fn led_by_this_thread(&self) -> bool {
        self.leader != 0 && self.leader == thread_token()
    }

    /// Blocks (no spinning) until the flight resolves.
    ///
    /// # Panics
    /// If this thread is the flight's blocking leader: its loader asked for the key it loads.
    pub(crate) fn wait(&self) {
        if self.led_by_this_thread() {
            self_wait();
        }
        let mut state = lock(&self.state);
        // A loop, not one wait: condition variables may wake spuriously.
        while !state.done {
            state = wait(&self.resolved, state);
        }
    }
}

/// The panic of a loader that asks for its own key, blocking or async: the documented answer to a
/// wait that could never end.
#[cold]
#[track_caller]
fn self_wait() -> ! {
    panic!(
        "epochmap: get_or_load (or get_or_load_async) called, from inside a loader, for the key \
         that loader is loading. It would wait for itself forever; a loader must not ask the map \
         for its own key."
    );
}

/// An async waiter: resolves when the flight does.
pub(crate) struct FlightWait<'f> {
    flight: &'f Flight,
    /// This waiter's slot in the flight's waker list, once it has one.
    slot: Option<usize>,
}

impl<'f> FlightWait<'f> {
    /// A waiter for `flight`, not yet registered: its first poll parks its waker.
    pub(crate) fn new(flight: &'f Flight) -> Self {
        FlightWait { flight, slot: None }
    }
}

impl Future for FlightWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = lock(&this.flight.state);
        if state.done {
            return Poll::Ready(());
        }
        // Checked after `done`: a future made inside the loader may legitimately be polled on
        // this thread once the load is over. Before that, this thread is inside the loader, and
        // the leader's `resolve` cannot run until this poll returns and the loader does.
        if this.flight.led_by_this_thread() {
            drop(state);
            self_wait();
        }
        // Registered under the same lock `resolve` takes the list under: either `resolve` has
        // not run yet and will wake this waker, or it has and `done` was seen above. No lost
        // wake-up.
        // A waker this replaces is dropped after the flight's lock is released: dropping a waker
        // is the runtime's code.
        // Cloning is the runtime's code too, and may panic: each arm clones before it changes
        // anything (the slot, the list, `self.slot`), so such a panic leaves the list and this
        // waiter as they were and `Drop` finds them consistent, even while unwinding.
        let replaced = match this.slot {
            Some(at) => {
                let slot = &mut state.wakers[at];
                if slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    None
                } else {
                    let waker = cx.waker().clone();
                    slot.replace(waker)
                }
            }
            None => {
                let waker = cx.waker().clone();
                let at = match state.free.pop() {
                    Some(at) => {
                        debug_assert!(state.wakers[at].is_none(), "a free slot is empty");
                        state.wakers[at] = Some(waker);
                        at
                    }
                    None => {
                        state.wakers.push(Some(waker));
                        state.wakers.len() - 1
                    }
                };
                this.slot = Some(at);
                None
            }
        };
        drop(state);
        drop(replaced);
        Poll::Pending
    }
}

impl Drop for FlightWait<'_> {
    fn drop(&mut self) {
        // A cancelled waiter has nothing to hand on (only the leader has duties); it just stops
        // being woken, and gives its slot to the next waiter.
        if let Some(at) = self.slot {
            let mut state = lock(&self.flight.state);
            // Once resolved, the list was taken whole (`wakers` is empty, `at` out of it) and no
            // waiter registers again: nothing to give back.
            let waker = if state.done {
                None
            } else {
                state.free.push(at);
                state.wakers[at].take()
            };
            // Dropped after the flight's lock is released, as in `poll`.
            drop(state);
            drop(waker);
        }
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_resolved_flight_wakes_each_parked_waker_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let flight = Flight::new(0);
        let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker: Waker = std::sync::Arc::clone(&count).into();
        let mut cx = Context::from_waker(&waker);
        let mut waits: Vec<_> = (0..3)
            .map(|_| FlightWait {
                flight: &flight,
                slot: None,
            })
            .collect();
        for w in &mut waits {
            assert!(Pin::new(&mut *w).poll(&mut cx).is_pending());
            // A second poll with the same waker does not register it twice.
            assert!(Pin::new(&mut *w).poll(&mut cx).is_pending());
        }
        drop(waits.pop()); // a cancelled waiter is not woken
        flight.resolve();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        for w in &mut waits {
            assert!(Pin::new(&mut *w).poll(&mut cx).is_ready());
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_dropped_waiters_slot_is_taken_by_the_next_and_the_list_stays_as_long_as_the_live() {
        use std::task::Wake;
        struct Noop;
        impl Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let flight = Flight::new(0);
        let waker: Waker = std::sync::Arc::new(Noop).into();
        let mut cx = Context::from_waker(&waker);
        let waiter = || FlightWait {
            flight: &flight,
            slot: None,
        };
        let mut live = [waiter(), waiter()];
        for w in &mut live {
            assert!(Pin::new(w).poll(&mut cx).is_pending());
        }
        for _ in 0..1_000 {
            let mut gone = waiter();
            assert!(Pin::new(&mut gone).poll(&mut cx).is_pending());
        }
        let state = lock(&flight.state);
        assert_eq!(
            state.wakers.len(),
            3,
            "two live waiters and one reused slot"
        );
        assert_eq!(state.wakers.iter().flatten().count(), 2);
        assert_eq!(state.free, [2]);
        drop(state);
        drop(live);
        assert_eq!(lock(&flight.state).free.len(), 3);
    }
}
