//! Values that account for their own drops: the basis of every "dropped exactly once" test.
//!
//! ```ignore
//! let tracker = Tracker::new();
//! let map = EpochMap::new();
//! map.insert(1, tracker.value(10));
//! map.insert(1, tracker.value(11));           // the first value is retired...
//! assert!(map.wait_for_reclamation(RECLAIM_TIMEOUT));
//! assert_eq!(tracker.live(), 1);               // ...and now dropped
//! drop(map);
//! tracker.assert_all_dropped_once();           // every instance ever made, exactly once
//! ```

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts creations and drops of [`Tracked`] values. Each instance (including each clone) gets its
/// own slot, so a double drop of one instance is caught even when another instance has the same id.
#[derive(Clone, Debug, Default)]
pub struct Tracker(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Drops per instance, indexed by instance number. Saturates at 255 (a double drop is 2).
    drops: Mutex<Vec<Arc<AtomicU8>>>,
    created: AtomicUsize,
    /// Instances created whose `Drop` panics (clones of one included).
    panicking: AtomicUsize,
    dropped: AtomicUsize,
    double_drops: AtomicUsize,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new tracked value carrying `id` (the payload tests compare; equality and hashing use it).
    pub fn value(&self, id: u64) -> Tracked {
        self.make(id, false)
    }

    /// A tracked value whose `Drop` panics (after recording the drop) with [`EXPECTED_PANIC`] in
    /// the message.
    ///
    /// [`EXPECTED_PANIC`]: crate::common::EXPECTED_PANIC
    pub fn panicking_value(&self, id: u64) -> Tracked {
        self.make(id, true)
    }

    /// A tracked value whose `Drop` panics even while the thread is already unwinding, which
    /// aborts the process if anything drops it during a panic. Only for tests that run in a child
    /// process ([`in_child_process`](crate::common::in_child_process)): they prove the map never
    /// does that.
    pub fn always_panicking_value(&self, id: u64) -> Tracked {
        let mut value = self.make(id, true);
        value.panic_while_unwinding = true;
        value
    }

    fn make(&self, id: u64, panic_on_drop: bool) -> Tracked {
        let slot = Arc::new(AtomicU8::new(0));
        self.0.drops.lock().unwrap().push(Arc::clone(&slot));
        self.0.created.fetch_add(1, Ordering::SeqCst);
        if panic_on_drop {
            self.0.panicking.fetch_add(1, Ordering::SeqCst);
        }
        Tracked {
            id,
            slot,
            tracker: Arc::clone(&self.0),
            panic_on_drop,
            panic_while_unwinding: false,
        }
    }

    /// Instances created so far.
    pub fn created(&self) -> usize {
        self.0.created.load(Ordering::SeqCst)
    }

    /// Instances created so far whose `Drop` panics, clones included: a map that copies its
    /// values (the flat map, on every rebuild) makes more of them than the test did.
    pub fn panicking_created(&self) -> usize {
        self.0.panicking.load(Ordering::SeqCst)
    }

    /// Instance drops so far (a double drop counts twice).
    pub fn dropped(&self) -> usize {
        self.0.dropped.load(Ordering::SeqCst)
    }

    /// Instances created and not yet dropped.
    pub fn live(&self) -> usize {
        self.created() - self.dropped()
    }

    /// Drops of an instance that was already dropped. Always 0 in a correct map.
    pub fn double_drops(&self) -> usize {
        self.0.double_drops.load(Ordering::SeqCst)
    }

    /// Panics unless no instance was dropped twice.
    pub fn assert_no_double_drop(&self) {
        assert_eq!(self.double_drops(), 0, "some value was dropped twice");
    }

    /// Panics unless every instance ever created was dropped exactly once.
    pub fn assert_all_dropped_once(&self) {
        self.assert_no_double_drop();
        let drops = self.0.drops.lock().unwrap();
        let leaked = drops
            .iter()
            .filter(|d| d.load(Ordering::SeqCst) == 0)
            .count();
        assert_eq!(
            leaked,
            0,
            "{leaked} of {} values were never dropped",
            drops.len()
        );
        assert_eq!(self.created(), self.dropped());
    }
}

/// A value registered with a [`Tracker`]. `Eq`, `Ord` and `Hash` look at `id` only, so it works as
/// a key too. `Clone` registers a new instance with the same id.
#[derive(Debug)]
pub struct Tracked {
    pub id: u64,
    slot: Arc<AtomicU8>,
    tracker: Arc<Inner>,
    panic_on_drop: bool,
    panic_while_unwinding: bool,
}

impl Tracked {
    /// The id (the same as the public field; handy in closures).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        let mut clone = Tracker(Arc::clone(&self.tracker)).make(self.id, self.panic_on_drop);
        clone.panic_while_unwinding = self.panic_while_unwinding;
        clone
    }
}

impl PartialEq for Tracked {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Tracked {}

impl Hash for Tracked {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let before = self.slot.fetch_add(1, Ordering::SeqCst);
        self.tracker.dropped.fetch_add(1, Ordering::SeqCst);
        if before != 0 {
            // Never panic here: a double drop may run on the reclaimer thread, where a panic would
            // be swallowed. The counter is checked by the test instead.
            self.tracker.double_drops.fetch_add(1, Ordering::SeqCst);
        }
        if self.panic_on_drop && (self.panic_while_unwinding || !std::thread::panicking()) {
            panic!(
                "{} Tracked({}) panicked in Drop",
                super::EXPECTED_PANIC,
                self.id
            );
        }
    }
}
