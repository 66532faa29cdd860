//! Just enough async runtime for tests, using std `Waker`s only: the map's async calls are
//! runtime-agnostic, and these helpers prove it without pulling a runtime in.
//!
//! * [`block_on`]: poll a future on this thread, parking between polls.
//! * [`Manual`]: poll a future by hand, one step at a time, and drop it whenever the test wants
//!   (how cancellation is tested); counts the wake-ups it receives.
//! * [`Delay`]: a future that becomes ready after a duration (a helper thread wakes it).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the calling thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker: Waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}

/// Counts wake-ups.
#[derive(Default)]
pub struct WakeCount(AtomicUsize);

impl WakeCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future polled by hand with a counting waker.
pub struct Manual<F: Future> {
    future: Pin<Box<F>>,
    pub wakes: Arc<WakeCount>,
    waker: Waker,
}

impl<F: Future> Manual<F> {
    pub fn new(future: F) -> Self {
        let wakes = Arc::new(WakeCount::default());
        let waker = Arc::clone(&wakes).into();
        Manual {
            future: Box::pin(future),
            wakes,
            waker,
        }
    }

    /// Polls once.
    pub fn poll(&mut self) -> Poll<F::Output> {
        let mut cx = Context::from_waker(&self.waker);
        self.future.as_mut().poll(&mut cx)
    }

    /// Polls whenever woken until ready or `limit` passes (then `None`); a `limit` past what
    /// `Instant` can hold (`Duration::MAX`) is no limit.
    pub fn run_for(&mut self, limit: Duration) -> Option<F::Output> {
        let deadline = Instant::now().checked_add(limit);
        let mut seen = usize::MAX;
        while deadline.map_or(true, |d| Instant::now() < d) {
            let now = self.wakes.get();
            if now != seen {
                seen = now;
                if let Poll::Ready(out) = self.poll() {
                    return Some(out);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }
}

/// Ready after `duration`, measured from the first poll.
pub struct Delay {
    duration: Duration,
    state: Arc<Mutex<DelayState>>,
}

#[derive(Default)]
struct DelayState {
    started: bool,
    done: bool,
    waker: Option<Waker>,
}

impl Delay {
    pub fn new(duration: Duration) -> Self {
        Delay {
            duration,
            state: Arc::default(),
        }
    }
}

impl Future for Delay {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock().unwrap();
        if state.done {
            return Poll::Ready(());
        }
        state.waker = Some(cx.waker().clone());
        if !state.started {
            state.started = true;
            let (shared, duration) = (Arc::clone(&self.state), self.duration);
            std::thread::spawn(move || {
                std::thread::sleep(duration);
                let mut state = shared.lock().unwrap();
                state.done = true;
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
            });
        }
        Poll::Pending
    }
}
