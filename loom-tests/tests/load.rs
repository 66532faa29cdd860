//! The single-flight hand-off of `get_or_load`: registration and completion under the shard lock,
//! waiters parked on the flight's condition variable or waker list, failure and cancellation
//! handing the load on. Loom reports a lost wake-up as a deadlock (every thread blocked), so each
//! model also proves that no waiter is left waiting.
#![cfg(epochmap_loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Wake, Waker};

use epochmap::{EpochMap, ReclaimMode};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, one_shard_map, Drops, IdHash, Tracked};

/// How many loaders ran: the test's bookkeeping (plain `std` atomics, no schedule points).
fn counter() -> std::sync::Arc<AtomicUsize> {
    std::sync::Arc::new(AtomicUsize::new(0))
}

/// get_or_load ∥ get_or_load of one absent key. The interleavings: the second caller finds the
/// key, finds the first one's registered load (and waits on its condition variable while the
/// loader runs, then is notified after the insert), or arrives first and leads itself. Exactly
/// one loader runs, both callers get its value, and the waiter is always woken.
#[test]
fn two_callers_of_one_key_run_one_loader_and_both_get_its_value() {
    model(|| {
        let drops = Drops::new(2);
        let map = Arc::new(one_shard_map(0));
        let runs = counter();
        let other = {
            let (map, drops, runs) = (Arc::clone(&map), drops.clone(), runs.clone());
            thread::spawn(move || {
                let got = map.get_or_load(1, || {
                    runs.fetch_add(1, SeqCst);
                    Tracked::new(1, &drops)
                });
                got.check()
            })
        };
        let mine = map
            .get_or_load(1, || {
                runs.fetch_add(1, SeqCst);
                Tracked::new(0, &drops)
            })
            .check();
        let theirs = other.join().unwrap();
        assert_eq!(runs.load(SeqCst), 1, "one loader ran");
        assert_eq!(mine, theirs, "both callers got its value");
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// try_get_or_load failing ∥ get_or_load succeeding, one key. If the failing call leads, its
/// `Err` resolves the flight and the waiting caller runs its own loader; if the succeeding call
/// leads, the other finds its entry (or waits for it) and its loader never runs. Either way the
/// succeeding caller gets its own value, nothing is cached from the failure, and no one is left
/// waiting.
#[test]
fn a_failed_load_wakes_its_waiter_which_loads_instead() {
    model(|| {
        let drops = Drops::new(1);
        let map = Arc::new(one_shard_map(0));
        let failed = counter();
        let other = {
            let (map, failed) = (Arc::clone(&map), failed.clone());
            thread::spawn(move || {
                map.try_get_or_load(1, || {
                    failed.fetch_add(1, SeqCst);
                    Err(())
                })
                .map(|r| r.check())
            })
        };
        let mine = map.get_or_load(1, || Tracked::new(0, &drops)).check();
        assert_eq!(mine, 0);
        match other.join().unwrap() {
            Ok(seen) => {
                assert_eq!(seen, 0);
                assert_eq!(
                    failed.load(SeqCst),
                    0,
                    "a caller that succeeds never loaded"
                );
            }
            Err(()) => assert_eq!(failed.load(SeqCst), 1),
        }
        drop(map);
        drops.assert_all_dropped_once();
    });
}

/// Counts the wake-ups a future receives and passes them on.
struct CountWakes<F> {
    inner: Pin<Box<F>>,
    wakes: std::sync::Arc<AtomicUsize>,
    pending: bool,
}

struct Counting {
    wakes: std::sync::Arc<AtomicUsize>,
    waker: Waker,
}

impl Wake for Counting {
    fn wake(self: std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, SeqCst);
        self.waker.wake_by_ref();
    }
}

impl<F: Future> Future for CountWakes<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let waker: Waker = std::sync::Arc::new(Counting {
            wakes: self.wakes.clone(),
            waker: cx.waker().clone(),
        })
        .into();
        let mut cx = Context::from_waker(&waker);
        let out = self.inner.as_mut().poll(&mut cx);
        self.pending |= out.is_pending();
        out
    }
}

/// A one-shard map with plain `u64` values, for the async calls (which return clones).
fn u64_map() -> EpochMap<u64, u64, IdHash> {
    EpochMap::builder()
        .shards(1)
        .hasher(IdHash)
        .reclaim_mode(ReclaimMode::Inline)
        .build()
}

struct Noop;

/// A waker that unparks the calling loom thread: what both executors below park on.
fn unpark_this_thread() -> Waker {
    struct Unpark(loom::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    std::sync::Arc::new(Unpark(thread::current())).into()
}

/// Polls `future` on this loom thread, parking (a loom schedule point) until woken.
fn block_on<F: Future + Unpin>(mut future: F) -> F::Output {
    let waker = unpark_this_thread();
    let mut cx = Context::from_waker(&waker);
    loop {
        match Pin::new(&mut future).poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => thread::park(),
        }
    }
}

impl Wake for Noop {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// get_or_load (blocking leader) ∥ get_or_load_async of one key. The async caller registers its
/// waker under the flight's lock, the leader resolves the flight and wakes it. The interleaving
/// that matters is the async caller checking "not done" just as the leader resolves: its waker is
/// either registered before the list is taken (and woken) or it sees `done`. It is woken at most
/// once, exactly once if it ever returned `Pending`, and both callers agree on the value.
#[test]
fn an_async_waiter_is_woken_exactly_once_and_never_lost() {
    model(|| {
        let map = Arc::new(u64_map());
        let leader = {
            let map = Arc::clone(&map);
            thread::spawn(move || *map.get_or_load(1, || 10))
        };
        let wakes = counter();
        let mut waiter = CountWakes {
            inner: Box::pin(map.get_or_load_async(1, async { 20 })),
            wakes: wakes.clone(),
            pending: false,
        };
        let value = block_on(&mut waiter);
        let led = leader.join().unwrap();
        assert_eq!(value, led, "both callers got the one loaded value");
        let w = wakes.load(SeqCst);
        assert!(w <= 1, "woken {w} times");
        if waiter.pending {
            assert_eq!(w, 1, "a pending waiter is woken");
        }
    });
}

/// A cancelled async leader ∥ a blocking caller. The async caller is polled once (it leads, or
/// waits if the blocking caller got there first) and then dropped. If it led, its `Drop`
/// unregisters the load and resolves the flight, and the blocking caller, waiting or not yet
/// arrived, runs its own loader. The blocking caller always gets its own value, and is never left
/// waiting for a load nobody runs.
#[test]
fn a_cancelled_async_leader_hands_the_load_on() {
    model(|| {
        let map = Arc::new(u64_map());
        let runs = counter();
        let blocking = {
            let (map, runs) = (Arc::clone(&map), runs.clone());
            thread::spawn(move || {
                *map.get_or_load(1, || {
                    runs.fetch_add(1, SeqCst);
                    7
                })
            })
        };
        {
            let mut cancelled = Box::pin(map.get_or_load_async(1, std::future::pending()));
            let waker: Waker = std::sync::Arc::new(Noop).into();
            let mut cx = Context::from_waker(&waker);
            if let Poll::Ready(found) = cancelled.as_mut().poll(&mut cx) {
                assert_eq!(found, 7);
            }
            // Dropped here, whatever it was doing.
        }
        assert_eq!(blocking.join().unwrap(), 7);
        assert_eq!(
            runs.load(SeqCst),
            1,
            "the blocking caller's loader ran once"
        );
    });
}

/// Polls `a` and `b` on this loom thread until both are ready, parking (a loom schedule point)
/// while both are pending.
fn block_on_both<A, B>(mut a: A, mut b: B) -> (A::Output, B::Output)
where
    A: Future + Unpin,
    B: Future + Unpin,
{
    let waker = unpark_this_thread();
    let mut cx = Context::from_waker(&waker);
    let (mut from_a, mut from_b) = (None, None);
    loop {
        if from_a.is_none() {
            if let Poll::Ready(out) = Pin::new(&mut a).poll(&mut cx) {
                from_a = Some(out);
            }
        }
        if from_b.is_none() {
            if let Poll::Ready(out) = Pin::new(&mut b).poll(&mut cx) {
                from_b = Some(out);
            }
        }
        if let (Some(_), Some(_)) = (&from_a, &from_b) {
            return (from_a.unwrap(), from_b.unwrap());
        }
        thread::park();
    }
}

/// Slot reuse in a load's waker list: get_or_load (blocking leader) ∥ three async callers of the
/// key on one thread. `gone` is polled once and dropped, giving its slot back; then `kept` and
/// `late` are polled until ready: `kept` takes the freed slot, `late` one of its own. The leader's
/// `resolve` races every step: a waiter dropped before it gives its slot back, one dropped after
/// finds the list taken (and must not index it); a slot is reused only once its owner dropped,
/// so the two live waiters never share one. Each of them is woken at most once, exactly once if
/// it was ever pending, and every caller gets the one loaded value.
#[test]
fn a_cancelled_waiters_slot_goes_to_one_later_waiter_and_no_wake_up_is_lost() {
    model(|| {
        let map = Arc::new(u64_map());
        let leader = {
            let map = Arc::clone(&map);
            thread::spawn(move || *map.get_or_load(1, || 10))
        };
        let gone_saw = {
            let mut gone = Box::pin(map.get_or_load_async(1, async { 20 }));
            let waker: Waker = std::sync::Arc::new(Noop).into();
            match gone.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(found) => Some(found),
                Poll::Pending => None,
            }
            // Dropped here: a waiter gives its slot back; a leader (it found no load and its
            // loader finished in the poll) has already completed.
        };
        let (kept_wakes, late_wakes) = (counter(), counter());
        let mut kept = CountWakes {
            inner: Box::pin(map.get_or_load_async(1, async { 30 })),
            wakes: kept_wakes.clone(),
            pending: false,
        };
        let mut late = CountWakes {
            inner: Box::pin(map.get_or_load_async(1, async { 40 })),
            wakes: late_wakes.clone(),
            pending: false,
        };
        let (from_kept, from_late) = block_on_both(&mut kept, &mut late);
        let led = leader.join().unwrap();
        assert_eq!((from_kept, from_late), (led, led), "one loaded value");
        if let Some(found) = gone_saw {
            assert_eq!(found, led);
        }
        for (waiter, wakes) in [(&kept.pending, &kept_wakes), (&late.pending, &late_wakes)] {
            let w = wakes.load(SeqCst);
            assert!(w <= 1, "woken {w} times");
            if *waiter {
                assert_eq!(w, 1, "a pending waiter is woken");
            }
        }
    });
}
