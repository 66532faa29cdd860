//! Shared helpers for the loom models in `tests/`.
//!
//! Everything here exists only under `--cfg epochmap_loom` (with `--cfg crossbeam_loom`); see
//! `docs/testing.md` for the command that runs the models.
//!
//! * [`Tracked`] values count their drops in a [`Drops`] ledger, so a model can assert that every
//!   value is dropped exactly once, and never while a reader still holds it. Each carries its
//!   payload in a loom atomic created with the value: loom requires every access to an atomic to
//!   happen-after its creation, so a reader that reaches a value through a publication that lacks a
//!   `Release`/`Acquire` pair fails the model with a causality violation.
//! * [`IdHash`] hashes a `u64` key to itself, so a model chooses shard, home bucket and tag.
#![cfg(epochmap_loom)]

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use epochmap::{EpochMap, ReclaimMode};

/// Runs `f` under loom with the default configuration (the preemption bound comes from
/// `LOOM_MAX_PREEMPTIONS`), and prints how many executions loom explored (shown with
/// `--nocapture`), so the cost of each model is visible.
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&executions);
    loom::model(move || {
        counter.fetch_add(1, SeqCst);
        f();
    });
    eprintln!("loom explored {} executions", executions.load(SeqCst));
}

/// Per-value drop counts for one model execution.
///
/// Plain `std` atomics, not loom's: they are the test's own bookkeeping, not part of the protocol
/// under test, and loom runs one thread at a time, so they record the real order of events without
/// adding schedule points to explore.
#[derive(Debug)]
pub struct Drops {
    made: Vec<AtomicUsize>,
    dropped: Vec<AtomicUsize>,
}

impl Drops {
    /// A ledger for values `0..n`.
    pub fn new(n: usize) -> std::sync::Arc<Drops> {
        std::sync::Arc::new(Drops {
            made: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            dropped: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// How many times value `id` has been dropped so far.
    pub fn dropped(&self, id: usize) -> usize {
        self.dropped[id].load(SeqCst)
    }

    /// How many values with `id` have been made so far.
    pub fn made(&self, id: usize) -> usize {
        self.made[id].load(SeqCst)
    }

    /// Asserts that every value made was dropped exactly once, and nothing else was dropped.
    pub fn assert_all_dropped_once(&self) {
        for id in 0..self.made.len() {
            assert_eq!(
                self.dropped(id),
                self.made(id),
                "value {id}: made {} time(s) but dropped {} time(s)",
                self.made(id),
                self.dropped(id)
            );
            assert!(self.made(id) <= 1, "value {id} was made more than once");
        }
    }
}

/// A value that records its drop in a [`Drops`] ledger and carries a loom-tracked payload.
///
/// `repr(C)` with a leading pad and a canary: if a broken variant of the map frees a value under a
/// reader, the reader's [`check`](Tracked::check) most likely finds the canary its `Drop` wrote
/// (the allocator's free-list header lands in the pad) and fails with a clear message, instead of
/// following a dangling field into a crash. A correct map never lets that read happen.
#[derive(Debug)]
#[repr(C)]
pub struct Tracked {
    _pad: [usize; 4],
    canary: usize,
    id: usize,
    drops: std::sync::Arc<Drops>,
    payload: loom::sync::atomic::AtomicUsize,
}

const ALIVE: usize = 0xA11CE;
const DEAD: usize = 0xDEAD;

impl Tracked {
    /// Value `id`, whose payload is `id * 10 + 7`.
    pub fn new(id: usize, drops: &std::sync::Arc<Drops>) -> Tracked {
        drops.made[id].fetch_add(1, SeqCst);
        Tracked {
            _pad: [0; 4],
            canary: ALIVE,
            id,
            payload: loom::sync::atomic::AtomicUsize::new(id * 10 + 7),
            drops: std::sync::Arc::clone(drops),
        }
    }

    /// Which value this is.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Reads the value as a reader would, checking that it is whole and still alive: the payload
    /// load fails the model if this thread is not ordered after the value's construction, and the
    /// ledger says whether the value was dropped under us.
    pub fn check(&self) -> usize {
        // SAFETY: `self` is a live reference as far as the map's contract goes; the volatile read
        // only keeps the compiler from assuming the canary cannot have changed.
        let canary = unsafe { std::ptr::read_volatile(&self.canary) };
        assert_eq!(
            canary, ALIVE,
            "a value was dropped while a reader could still read it"
        );
        assert_eq!(
            self.drops.dropped(self.id),
            0,
            "value {} was dropped while a reader could still read it",
            self.id
        );
        let payload = self.payload.load(loom::sync::atomic::Ordering::Relaxed);
        assert_eq!(payload, self.id * 10 + 7, "value {} is torn", self.id);
        self.id
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Recorded, never asserted here: reclamation runs `Drop` under `catch_unwind`, so a panic
        // would be counted and swallowed. Models check the ledger instead.
        self.drops.dropped[self.id].fetch_add(1, SeqCst);
        // SAFETY: writing our own field; volatile so the store is not elided as dead.
        unsafe { std::ptr::write_volatile(&mut self.canary, DEAD) };
    }
}

/// A hasher builder that hashes a `u64` key to itself.
///
/// With it a model picks the key's shard (`(hash >> 48) & (shards - 1)`), home bucket (low bits)
/// and tag (bits 40..47), so it can force collisions and overflow on purpose. Small keys all land
/// in shard 0 with the same tag.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

/// The hasher [`IdHash`] builds.
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

/// The map every model uses: `u64` keys hashed to themselves, [`Tracked`] values.
pub type Map = EpochMap<u64, Tracked, IdHash>;

/// A map with one shard (so every key shares one table and one lock), inline reclamation and the
/// given capacity hint. Under loom a fresh table is one bucket of seven slots, which grows on the
/// sixth entry.
pub fn one_shard_map(capacity: usize) -> Map {
    EpochMap::builder()
        .shards(1)
        .capacity(capacity)
        .hasher(IdHash)
        .reclaim_mode(ReclaimMode::Inline)
        .build()
}

/// Drives reclamation to the end: under loom `wait_for_reclamation` spends a bounded number of
/// epoch advances instead of waiting for a deadline. Call it once no other thread is pinned.
pub fn reclaim_all(map: &Map) {
    assert!(
        map.wait_for_reclamation(std::time::Duration::from_secs(1)),
        "everything retired is freed once no thread is pinned: {:?}",
        map.memory_stats()
    );
}
