//! Memory held by the async waiters of a load in flight: its own binary, with a counting global
//! allocator (`common::alloc`), so it measures what the allocator really holds.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::alloc::{allocated, Counting};
use common::Manual;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocator is process-wide: the test runs once per map, one at a time, so that neither
/// counts the other's allocations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

for_each_map! {
    /// The case: waiters that are polled once and then dropped (a `select!` against a
    /// timeout) while one slow load runs. Each used to keep its slot in the load's waker list until
    /// the load finished (16 bytes each: a million of them held 16.8 MB). A dropped waiter frees its
    /// slot for the next, so the list is as long as the most waiters alive at once, not as all that
    /// ever waited: 100,000 cancelled waiters, with ten live ones spread among them, leave the
    /// allocator within a few KiB of where it started. And the live ones, whose slots the cancelled
    /// ones came and went around, are each woken once when the load finishes.
    #[test]
    fn cancelled_async_waiters_hold_no_memory_while_the_load_runs() {
        let _serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        const CANCELLED: usize = 100_000;
        const LIVE_EVERY: usize = 10_000;
        let map: Arc<TestMap<u64, u64>> = Arc::new(TestMap::builder().shards(1).build());
        let (started_tx, started_rx) = mpsc::channel();
        let release = Arc::new(Barrier::new(2));
        let leader = {
            let (map, release) = (Arc::clone(&map), Arc::clone(&release));
            thread::spawn(move || {
                *map.get_or_load(1, || {
                    started_tx.send(()).unwrap();
                    release.wait();
                    5
                })
            })
        };
        started_rx.recv().unwrap();
        let waiter = || Manual::new(map.get_or_load_async(1, async { unreachable!() }));
        let mut live = Vec::with_capacity(CANCELLED / LIVE_EVERY + 1);
        let baseline = allocated();
        for i in 0..CANCELLED {
            let mut w = waiter();
            assert!(w.poll().is_pending(), "the load is in flight");
            if i % LIVE_EVERY == 0 {
                live.push(w);
            }
        }
        let held = allocated() as isize - baseline as isize;
        // Generous: a `Manual`, its future and a slot each, plus 32 KiB for what other threads of
        // the process allocate meanwhile (the allocator is process-wide, and the test harness
        // records the other map's finished test while this one runs: one CI run measured 15,979
        // bytes, every other run 4,272). The bug this guards against held 1.6 MB here.
        let live_bytes = live.len() * 1024 + 32 * 1024;
        println!(
            "{CANCELLED} waiters polled and dropped, {} kept: {held} bytes held",
            live.len()
        );
        assert!(
            held <= live_bytes as isize,
            "{held} bytes held by {CANCELLED} cancelled and {} live waiters",
            live.len()
        );
        release.wait();
        assert_eq!(leader.join().unwrap(), 5);
        for w in &mut live {
            assert_eq!(w.run_for(Duration::from_secs(10)), Some(5));
            assert_eq!(w.wakes.get(), 1, "each live waiter was woken once");
        }
    }
}
