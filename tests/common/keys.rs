//! [`PanicKey`]: a key whose `Hash`, `Eq` or `Clone` panics when a test flips a switch.
//!
//! ```ignore
//! let switch = PanicSwitch::new();
//! let tracker = Tracker::new();
//! map.insert(switch.key(&tracker, 7), 0);
//! switch.panic_on_hash(7);  // from now on hashing key 7 panics, wherever the map does it
//! let err = expect_panic(|| map.insert(switch.key(&tracker, 99), 0)); // (if that grows the table)
//! switch.disarm();
//! ```

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::drops::{Tracked, Tracker};

const NONE: u64 = u64::MAX;

/// Decides which key ids panic in `Hash` and `Eq`. Shared by every key made from it.
#[derive(Clone, Debug)]
pub struct PanicSwitch(Arc<Switches>);

#[derive(Debug)]
struct Switches {
    hash: AtomicU64,
    eq: AtomicU64,
    clone: AtomicU64,
    /// Comparisons of the armed `eq` id that still pass before they start panicking.
    eq_skip: AtomicU64,
}

impl Default for PanicSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl PanicSwitch {
    /// A switch with nothing armed.
    pub fn new() -> Self {
        PanicSwitch(Arc::new(Switches {
            hash: AtomicU64::new(NONE),
            eq: AtomicU64::new(NONE),
            clone: AtomicU64::new(NONE),
            eq_skip: AtomicU64::new(0),
        }))
    }

    /// A key with `id`, whose drops `tracker` counts.
    pub fn key(&self, tracker: &Tracker, id: u64) -> PanicKey {
        PanicKey {
            inner: tracker.value(id),
            switch: self.clone(),
        }
    }

    /// Hashing a key with `id` panics from now on.
    pub fn panic_on_hash(&self, id: u64) {
        self.0.hash.store(id, Ordering::SeqCst);
    }

    /// Cloning a key with `id` panics from now on (`update` clones the key under the lock).
    pub fn panic_on_clone(&self, id: u64) {
        self.0.clone.store(id, Ordering::SeqCst);
    }

    /// Comparing a key with `id` (on either side) panics from now on.
    pub fn panic_on_eq(&self, id: u64) {
        self.panic_on_eq_after(id, 0);
    }

    /// Comparing a key with `id` panics from now on, except for the next `skip` comparisons: lets
    /// a test get past a lock-free lookup and panic in the locked one that follows.
    pub fn panic_on_eq_after(&self, id: u64, skip: u64) {
        self.0.eq_skip.store(skip, Ordering::SeqCst);
        self.0.eq.store(id, Ordering::SeqCst);
    }

    /// Nothing panics any more.
    pub fn disarm(&self) {
        self.0.hash.store(NONE, Ordering::SeqCst);
        self.0.eq.store(NONE, Ordering::SeqCst);
        self.0.clone.store(NONE, Ordering::SeqCst);
    }
}

/// A key that hashes and compares by its id, panics on demand (see [`PanicSwitch`]), and counts its
/// drops through a [`Tracker`]. `Clone` (needed by `update`) makes a new tracked instance, or
/// panics on demand.
#[derive(Debug)]
pub struct PanicKey {
    inner: Tracked,
    switch: PanicSwitch,
}

impl Clone for PanicKey {
    fn clone(&self) -> Self {
        if self.switch.0.clone.load(Ordering::SeqCst) == self.inner.id {
            panic!("{} Clone of key {}", super::EXPECTED_PANIC, self.inner.id);
        }
        PanicKey {
            inner: self.inner.clone(),
            switch: self.switch.clone(),
        }
    }
}

impl PanicKey {
    pub fn id(&self) -> u64 {
        self.inner.id
    }
}

impl Hash for PanicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if self.switch.0.hash.load(Ordering::SeqCst) == self.inner.id {
            panic!("{} Hash of key {}", super::EXPECTED_PANIC, self.inner.id);
        }
        self.inner.id.hash(state);
    }
}

impl PartialEq for PanicKey {
    fn eq(&self, other: &Self) -> bool {
        let armed = self.switch.0.eq.load(Ordering::SeqCst);
        let skipped = || {
            let s = &self.switch.0.eq_skip;
            s.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if (armed == self.inner.id || armed == other.inner.id) && !skipped() {
            panic!("{} Eq of key {}", super::EXPECTED_PANIC, armed);
        }
        self.inner.id == other.inner.id
    }
}

impl Eq for PanicKey {}
