//! `memory_stats()` read from another thread, as a dashboard would, while writers insert, remove,
//! clear, drain, shrink and wait for reclamation: every figure is sane at every instant.
//!
//! Run in debug (as `cargo test` does): there a byte counter that wraps below zero fails the
//! debug assertion in `stats::bytes`, and a sum that overflows panics, instead of showing up as a
//! figure near 2^64. A counter's decrement that could land before its increment (the slab's
//! free-slot stacks were one: `concurrent-memory-stats-overflow` in the fuzz regressions) makes
//! these tests fail sometimes; the loom model `slab_bytes_never_read_below_zero_...` in
//! `src/stats.rs` finds that one every time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use epochmap::{MemoryStats, ReclaimMode};

for_each_map! {
    /// Far above anything these maps hold (a few MiB), far below a wrapped counter (near 2^64).
    const SANE_BYTES: usize = 1 << 32;
    /// Writers per map.
    const WRITERS: u64 = 2;

    /// Every figure of one snapshot is within bounds, and the sums are at least their parts.
    fn assert_sane(stats: &MemoryStats, keys: u64) {
        let bytes = [
            ("table_bytes", stats.table_bytes),
            ("entry_bytes", stats.entry_bytes),
            ("slab_bytes", stats.slab_bytes),
            ("pending_bytes", stats.pending_bytes),
            ("drain_bytes", stats.drain_bytes),
            ("allocated_bytes", stats.allocated_bytes),
            ("total_bytes()", stats.total_bytes()),
        ];
        for (name, value) in bytes {
            assert!(value < SANE_BYTES, "{name} = {value}: {stats:?}");
        }
        assert!(stats.len <= (keys * WRITERS) as usize, "{stats:?}");
        assert!(stats.buckets < SANE_BYTES, "{stats:?}");
        // `allocated_bytes` sums the very `table_bytes` this snapshot reports.
        assert!(stats.allocated_bytes >= stats.table_bytes, "{stats:?}");
    }

    /// One writer's rounds over its own `keys` keys: fill, thin out, then one of clear, clear keeping
    /// capacity, a drain consumed halfway and dropped (the rest goes to the reclaimer), shrink, or a
    /// wait for reclamation (which runs queued jobs on this thread, beside the reclaimer).
    fn write<V>(
        map: &TestMap<u64, V>,
        writer: u64,
        (keys, rounds): (u64, usize),
        value: impl Fn(u64) -> V,
    ) where
        V: Clone + Send + 'static,
    {
        let keys = writer * keys..(writer + 1) * keys;
        for round in 0..rounds {
            for k in keys.clone() {
                map.insert(k, value(k));
            }
            for k in keys.clone().step_by(2) {
                map.remove(&k);
            }
            match (round + writer as usize) % 5 {
                0 => map.clear(),
                1 => map.clear_keep_capacity(),
                2 => {
                    let mut drain = map.drain();
                    let half = drain.len() / 2;
                    for _ in 0..half {
                        if drain.next_timeout(Duration::from_millis(5)).is_err() {
                            break;
                        }
                    }
                }
                3 => map.shrink_to_fit(),
                _ => {
                    map.wait_for_reclamation(Duration::from_millis(5));
                }
            }
        }
    }

    /// Runs [`write`] on [`WRITERS`] threads against one map of `shards` shards in `mode`, while a
    /// poller reads `memory_stats()` as fast as it can, and checks every snapshot; then checks the
    /// map at rest. Returns how many snapshots were checked.
    fn churn_while_polling<V>(
        mode: ReclaimMode,
        shards: usize,
        work: (u64, usize),
        value: impl Fn(u64) -> V + Sync,
    ) -> usize
    where
        V: Clone + Send + Sync + 'static,
    {
        let map: TestMap<u64, V> = TestMap::builder()
            .shards(shards)
            .reclaim_mode(mode)
            .build();
        let done = AtomicBool::new(false);
        let polls = AtomicUsize::new(0);
        let start = Barrier::new(WRITERS as usize + 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                // Relaxed: a stop flag; the scope's join orders everything the test reads afterwards.
                while !done.load(Ordering::Relaxed) {
                    assert_sane(&map.memory_stats(), work.0);
                    polls.fetch_add(1, Ordering::Relaxed);
                }
            });
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (map, start, value) = (&map, &start, &value);
                    s.spawn(move || {
                        start.wait();
                        write(map, w, work, value);
                    })
                })
                .collect();
            stop_after(writers, &done);
        });
        map.clear();
        assert!(map.wait_for_reclamation(Duration::from_secs(30)));
        let rest = map.memory_stats();
        assert_sane(&rest, work.0);
        assert_eq!((rest.len, rest.pending_bytes, rest.drain_bytes), (0, 0, 0));
        polls.into_inner()
    }

    /// Both reclaim modes, pooled and boxed entries: `rounds` rounds over `keys` keys per writer.
    fn every_mode(shards: usize, keys: u64, rounds: usize) {
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let pooled = churn_while_polling(mode, shards, (keys, rounds), |k| k);
            // Entries over 4 KiB are not pooled: `allocated_bytes` then counts them from the
            // pending and drain counters instead of the slab's.
            let boxed = churn_while_polling(mode, shards, (keys, rounds / 8), |k| [k; 520]);
            eprintln!("{mode:?}, {shards} shard(s), {keys} keys: {pooled} + {boxed} snapshots checked");
        }
    }

    /// The slab emptying completely, time and again, from two threads at once: the case in which a
    /// misordered counter wraps below zero rather than just reading low. In lockstep rounds, two
    /// writers each insert a handful of keys and remove some (a partial batch), one clears (which
    /// retires that batch and the table, two reclamation jobs for one slab, and returns the slot
    /// cache), and both wait for reclamation, which runs the jobs on both threads at once (and on the
    /// reclaimer in `Background` mode), while a poller reads `memory_stats()`.
    fn clear_together(mode: ReclaimMode, rounds: usize) -> usize {
        const KEYS: u64 = 6;
        let map: TestMap<u64, u64> = TestMap::builder().shards(1).reclaim_mode(mode).build();
        let done = AtomicBool::new(false);
        let polls = AtomicUsize::new(0);
        let step = Barrier::new(WRITERS as usize);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Relaxed: a stop flag; the scope's join orders everything the test reads afterwards.
                while !done.load(Ordering::Relaxed) {
                    assert_sane(&map.memory_stats(), KEYS);
                    polls.fetch_add(1, Ordering::Relaxed);
                }
            });
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (map, step) = (&map, &step);
                    s.spawn(move || {
                        for _ in 0..rounds {
                            for k in w * KEYS..(w + 1) * KEYS {
                                map.insert(k, k);
                            }
                            for k in (w * KEYS..(w + 1) * KEYS).step_by(2) {
                                map.remove(&k);
                            }
                            step.wait();
                            if w == 0 {
                                map.clear();
                            }
                            step.wait();
                            map.wait_for_reclamation(Duration::from_millis(20));
                            step.wait();
                        }
                    })
                })
                .collect();
            stop_after(writers, &done);
        });
        polls.into_inner()
    }

    /// Joins the writers, then stops the poller; a writer's panic stops it first and is re-raised.
    fn stop_after(writers: Vec<std::thread::ScopedJoinHandle<'_, ()>>, done: &AtomicBool) {
        for w in writers {
            let result = w.join();
            if let Err(payload) = result {
                done.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(payload);
            }
        }
        done.store(true, Ordering::Relaxed);
    }

    #[test]
    fn memory_stats_figures_stay_sane_while_two_threads_empty_the_slab_at_once() {
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let polls = clear_together(mode, 300);
            eprintln!("{mode:?}, lockstep clears: {polls} snapshots checked");
        }
    }

    #[test]
    fn memory_stats_figures_stay_sane_while_writers_churn_clear_and_drain_one_shard() {
        every_mode(1, 512, 40);
    }

    #[test]
    fn memory_stats_figures_stay_sane_while_writers_churn_clear_and_drain_four_shards() {
        every_mode(4, 512, 40);
    }

    /// The long variant: rounds until `EPOCHMAP_STRESS_SECS` have passed. Not in `.ci/stress.sh`,
    /// which builds in release, where neither the counters' debug assertion nor overflow checks are
    /// on; run it in debug: `cargo test --test memory_stats -- --ignored`.
    #[test]
    #[ignore]
    fn memory_stats_figures_stay_sane_while_writers_churn_clear_and_drain_long() {
        let deadline = std::time::Instant::now() + common::stress_budget();
        while std::time::Instant::now() < deadline {
            clear_together(ReclaimMode::Inline, 3000);
            clear_together(ReclaimMode::Background, 3000);
            every_mode(1, 512, 200);
            every_mode(4, 512, 200);
        }
    }
}
