//! epochmap pins on a collector of its own, not on crossbeam-epoch's default one (issue 19,
//! `docs/design.md`, "A collector of our own"). What another crossbeam-epoch user does on the
//! default collector, deferring a closure or holding a guard, never reaches into our calls, and
//! ours never waits for it.
//!
//! The tests here pin the default collector on purpose, in a binary of their own so that no other
//! test's pins run or hold back what they defer.

use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use epochmap::{EpochMap, ReclaimMode};

/// Long enough for a loaded CI machine; the waits below return as soon as they succeed.
const PATIENCE: Duration = Duration::from_secs(30);

/// Every write path that flushes or collects: replacements and removals past a batch (each full
/// batch of 64 flushes the guard, and its collect runs what is ready), `clear`, the waits, and
/// enough plain pins (every 128th collects) to advance an epoch many times over.
fn exercise(map: &EpochMap<u64, u64>) {
    for round in 0..20u64 {
        for k in 0..1_000 {
            map.insert(k, k + round);
        }
        for k in 0..500 {
            map.remove(&k);
        }
        for k in 0..1_000 {
            assert!(map.get(&k).is_none() || k >= 500);
        }
    }
    map.clear();
    assert!(map.wait_for_reclamation(PATIENCE));
    assert_eq!(map.drain().count(), 0);
}

#[test]
fn another_crates_deferred_closure_never_runs_inside_our_calls() {
    for mode in [ReclaimMode::Background, ReclaimMode::Inline] {
        let map: EpochMap<u64, u64> = EpochMap::builder().shards(2).reclaim_mode(mode).build();
        // The thread that ran the closure. The other tests of this binary pin the default
        // collector too, so it may run on theirs; it must not run on this one, which does
        // nothing but call epochmap until the check.
        let ran_on: Arc<Mutex<Option<ThreadId>>> = Arc::default();
        {
            let record = Arc::clone(&ran_on);
            let guard = crossbeam_epoch::pin();
            guard.defer(move || *record.lock().unwrap() = Some(std::thread::current().id()));
            // Into the default collector's global queue, where any collect of it can run it.
            guard.flush();
        }
        exercise(&map);
        let here = std::thread::current().id();
        assert_ne!(
            *ran_on.lock().unwrap(),
            Some(here),
            "{mode:?}: a closure deferred on crossbeam's default collector ran inside epochmap's calls"
        );
        // The closure was runnable all along: the default collector's own pins run it. (On the
        // default collector, the writes above ran it, on this thread, inside `insert`.)
        let deadline = Instant::now() + PATIENCE;
        while ran_on.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the deferred closure never ran");
            crossbeam_epoch::pin().flush();
        }
    }
}

#[test]
fn another_crates_guard_does_not_hold_back_our_reclamation() {
    let map: EpochMap<u64, String> = EpochMap::new();
    for k in 0..1_000 {
        map.insert(k, k.to_string());
    }
    let foreign = crossbeam_epoch::pin();
    for k in 0..1_000 {
        map.remove(&k);
    }
    map.insert(0, String::new());
    map.clear();
    // On the default collector this could not pass before `foreign` is dropped: the epoch cannot
    // advance past a pinned thread, and this thread is pinned.
    assert!(map.wait_for_reclamation(PATIENCE));
    assert_eq!(map.memory_stats().pending_bytes, 0);
    drop(foreign);
}

#[test]
fn drain_next_does_not_count_another_crates_guard_as_pinned() {
    let map: EpochMap<u64, u64> = (0..100).map(|i| (i, i)).collect();
    let foreign = crossbeam_epoch::pin();
    // `Drain::next` panics when this thread holds one of our guards (its wait could never end);
    // another crate's guard holds back nothing of ours, so it waits and returns.
    let mut drained: Vec<u64> = map.drain().map(|(k, _)| k).collect();
    drained.sort_unstable();
    assert_eq!(drained, (0..100).collect::<Vec<_>>());
    drop(foreign);
}
