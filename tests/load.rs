//! Single-flight loading (`get_or_load`, `try_get_or_load`, `get_or_load_async`, `get_or_load_ref`,
//! `get_or_load_with_hash`): the loader runs with no map lock held, concurrent callers of one key
//! share one load, failures and cancellations hand the load on, and the documented rules for
//! writes racing a load hold. Every test runs against both maps (`for_each_map!`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{block_on, expect_panic, Delay, Manual, Tracker, EXPECTED_PANIC};
use epochmap::Operation;

const A: u64 = 1;
const B: u64 = 2;

/// CPU time (user + system) the calling thread has used, in clock ticks (1/100 s on Linux).
#[cfg(target_os = "linux")]
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    // Fields after the command name (which is in parentheses and may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A waker that panics when woken (a broken runtime), and one that counts its wakes.
struct PanickingWake;

impl std::task::Wake for PanickingWake {
    fn wake(self: Arc<Self>) {
        panic!("{EXPECTED_PANIC} a runtime's wake panicked");
    }
}

struct CountingWake(AtomicUsize);

impl std::task::Wake for CountingWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker whose `clone` panics (a broken runtime); waking and dropping it do nothing.
fn waker_whose_clone_panics() -> std::task::Waker {
    use std::task::{RawWaker, RawWakerVTable, Waker};
    fn clone(_: *const ()) -> RawWaker {
        panic!("{EXPECTED_PANIC} a runtime's waker clone panicked");
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the `RawWaker` contract asks that the vtable's functions be sound for the data
    // pointer from any thread; none of them reads the (null) pointer and none has state.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

for_each_map! {
    fn one_shard<K: Clone, V: Clone>() -> Arc<TestMap<K, V>> {
        Arc::new(TestMap::builder().shards(1).build())
    }

    /// A blocking caller on another thread that leads the load of key `A`, whose loader returns 5
    /// once `release` is passed; returns after giving it time to register, so the load is in
    /// flight.
    fn load_held_until(
        map: &Arc<TestMap<u64, u64>>,
        release: &Arc<Barrier>,
    ) -> thread::JoinHandle<u64> {
        let (map, release) = (Arc::clone(map), Arc::clone(release));
        let leader = thread::spawn(move || {
            *map.get_or_load(A, || {
                release.wait();
                5
            })
        });
        thread::sleep(Duration::from_millis(50));
        leader
    }

    /// The measurement: one shard, a 300 ms loader for key A; `insert`, `get` and `remove`
    /// of key B, each from its own thread, run during the load. Each must finish in under 5 ms.
    /// For contrast the same is measured against `get_or_insert_with`, whose closure runs under the
    /// shard lock.
    #[test]
    fn a_slow_load_blocks_no_other_key_of_its_shard() {
        let map = one_shard::<u64, u64>();
        for k in 100..1100 {
            map.insert(k, k);
        }
        let loading = Arc::new(Barrier::new(4));
        let load_ends = Arc::new(Mutex::new(None));
        let loader = {
            let (map, loading, load_ends) = (map.clone(), loading.clone(), load_ends.clone());
            thread::spawn(move || {
                let value = *map.get_or_load(A, || {
                    loading.wait();
                    thread::sleep(Duration::from_millis(300));
                    7
                });
                *load_ends.lock().unwrap() = Some(Instant::now());
                value
            })
        };
        let ops: Vec<_> = ["insert", "get", "remove"]
            .into_iter()
            .map(|op| {
                let (map, loading) = (map.clone(), loading.clone());
                thread::spawn(move || {
                    loading.wait();
                    let until = Instant::now() + Duration::from_millis(200);
                    let mut times = Vec::new();
                    let mut i = 0;
                    while Instant::now() < until {
                        let start = Instant::now();
                        match op {
                            "insert" => drop(map.insert(B, i)),
                            "get" => drop(map.get(&B)),
                            _ => drop(map.remove(&B)),
                        }
                        times.push(start.elapsed());
                        assert!(map.get(&A).is_none(), "the load is still running");
                        i += 1;
                        thread::sleep(Duration::from_millis(10));
                    }
                    (op, times, Instant::now())
                })
            })
            .collect();
        let mut worst = Duration::ZERO;
        let mut last_op = None;
        for op in ops {
            let (name, mut times, ended) = op.join().unwrap();
            times.sort();
            let max = *times.last().unwrap();
            println!(
                "during a 300 ms load of A (1 shard): {name:<6} of B x{:<3} median {:.3} ms, max {:.3} ms",
                times.len(),
                ms(times[times.len() / 2]),
                ms(max)
            );
            worst = worst.max(max);
            last_op = last_op.max(Some(ended));
        }
        assert_eq!(loader.join().unwrap(), 7);
        assert!(
            load_ends.lock().unwrap().unwrap() > last_op.unwrap(),
            "every measured op ran while the load was in flight"
        );
        assert!(
            worst < Duration::from_millis(5),
            "an op on another key waited {worst:?} for a loader"
        );

        // The contrast: the same insert while `get_or_insert_with` runs a 300 ms closure under the
        // lock.
        let map = one_shard::<u64, u64>();
        let started = Arc::new(Barrier::new(2));
        let holder = {
            let (map, started) = (map.clone(), started.clone());
            thread::spawn(move || {
                map.get_or_insert_with(A, || {
                    started.wait();
                    thread::sleep(Duration::from_millis(300));
                    7
                });
            })
        };
        started.wait();
        thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        map.insert(B, 0);
        let waited = start.elapsed();
        holder.join().unwrap();
        println!(
            "for contrast, insert of B during a 300 ms get_or_insert_with closure: {:.1} ms",
            ms(waited)
        );
        assert!(waited > Duration::from_millis(100));
    }

    /// 16 callers of one absent key: the loader runs once, everyone gets its value, and the 15
    /// waiters block without spinning (each uses almost no CPU during the 300 ms wait).
    #[test]
    fn sixteen_callers_of_one_key_run_the_loader_once() {
        let map = one_shard::<u64, String>();
        let runs = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(16));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (map, runs, start) = (map.clone(), runs.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    #[cfg(target_os = "linux")]
                    let cpu = thread_cpu_ticks();
                    let mut ran = false;
                    let value = map
                        .get_or_load(A, || {
                            ran = true;
                            runs.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(300));
                            String::from("loaded")
                        })
                        .clone();
                    #[cfg(target_os = "linux")]
                    let cpu = thread_cpu_ticks() - cpu;
                    #[cfg(not(target_os = "linux"))]
                    let cpu = 0;
                    (value, ran, cpu)
                })
            })
            .collect();
        let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the loader ran once");
        assert!(results.iter().all(|(v, _, _)| v == "loaded"));
        let waiter_ticks: Vec<u64> = results
            .iter()
            .filter(|(_, ran, _)| !ran)
            .map(|r| r.2)
            .collect();
        assert_eq!(waiter_ticks.len(), 15);
        let total: u64 = waiter_ticks.iter().sum();
        println!(
            "16 callers of one key: loader ran {} time(s); the 15 waiters used {} clock ticks of CPU in all during the 300 ms wait",
            runs.load(Ordering::SeqCst),
            total
        );
        // Spinning for 300 ms would cost ~30 ticks per waiter; parked waiters cost ~0.
        assert!(
            total <= 15,
            "waiters spun: {waiter_ticks:?} ticks (1 tick = 10 ms)"
        );
    }

    #[test]
    fn a_present_key_is_returned_without_the_lock_or_the_loader() {
        let map = one_shard::<u64, u64>();
        map.insert(A, 1);
        // `compute`'s closure holds the only shard lock for 300 ms.
        let started = Arc::new(Barrier::new(2));
        let holder = {
            let (map, started) = (map.clone(), started.clone());
            thread::spawn(move || {
                map.compute(B, |_| {
                    started.wait();
                    thread::sleep(Duration::from_millis(300));
                    Operation::Abort
                });
            })
        };
        started.wait();
        let start = Instant::now();
        assert_eq!(*map.get_or_load(A, || unreachable!()), 1);
        assert_eq!(
            block_on(map.get_or_load_async(A, async { unreachable!() })),
            1
        );
        let took = start.elapsed();
        holder.join().unwrap();
        assert!(
            took < Duration::from_millis(100),
            "a hit took the lock: {took:?}"
        );
    }

    /// The loader panics after others have started waiting: nothing is inserted, the panic reaches
    /// the leader's caller, and exactly one waiter runs its loader; all waiters get that value.
    #[test]
    fn a_panicking_loader_inserts_nothing_and_one_waiter_loads_instead() {
        common::quiet_expected_panics();
        let map = one_shard::<u64, u64>();
        let runs = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (map, runs) = (map.clone(), runs.clone());
            thread::spawn(move || {
                map.get_or_load(A, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(200));
                    panic!("{EXPECTED_PANIC} loader fails");
                });
            })
        };
        thread::sleep(Duration::from_millis(50));
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let (map, runs) = (map.clone(), runs.clone());
                thread::spawn(move || {
                    *map.get_or_load(A, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(50));
                        10 + i
                    })
                })
            })
            .collect();
        assert!(
            leader.join().is_err(),
            "the panic reaches the leader's caller"
        );
        let values: Vec<u64> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the panicked load and one more"
        );
        assert!(values.iter().all(|&v| v == values[0]), "{values:?}");
        assert_eq!(map.get_cloned(&A), Some(values[0]));
    }

    #[test]
    fn an_error_is_returned_to_its_caller_only_and_never_cached() {
        let map = one_shard::<u64, u64>();
        let runs = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (map, runs) = (map.clone(), runs.clone());
            thread::spawn(move || {
                map.try_get_or_load(A, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(200));
                    Err("backend down")
                })
                .map(|r| *r)
            })
        };
        thread::sleep(Duration::from_millis(50));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (map, runs) = (map.clone(), runs.clone());
                thread::spawn(move || {
                    map.try_get_or_load(A, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok::<u64, &str>(5)
                    })
                    .map(|r| *r)
                })
            })
            .collect();
        assert_eq!(leader.join().unwrap(), Err("backend down"));
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(5), "waiters never see the error");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // And a failure with no waiters leaves the key loadable.
        assert!(map.try_get_or_load(B, || Err::<u64, _>(())).is_err());
        assert!(map.get(&B).is_none());
        assert_eq!(*map.try_get_or_load(B, || Ok::<_, ()>(3)).unwrap(), 3);
    }

    /// The rule for a write of the key during its load: the map's entry wins. The loaded value is
    /// dropped (exactly once), and the leader and its waiters get the entry in the map.
    #[test]
    fn an_insert_during_the_load_wins_and_the_loaded_value_is_dropped() {
        let tracker = Tracker::new();
        let map = one_shard::<u64, common::Tracked>();
        let waiter = {
            let map = map.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                map.get_or_load(A, || unreachable!("a load is in flight"))
                    .id()
            })
        };
        let got = map
            .get_or_load(A, || {
                thread::sleep(Duration::from_millis(150));
                // A write of the same key while the load runs (allowed: no lock is held).
                assert!(
                    map.insert(A, tracker.value(99)).is_none(),
                    "the key is not in the map yet"
                );
                tracker.value(1)
            })
            .id();
        assert_eq!(got, 99, "the leader gets the map's entry");
        assert_eq!(waiter.join().unwrap(), 99, "so does the waiter");
        assert_eq!(map.get(&A).unwrap().id(), 99);
        assert_eq!(tracker.created(), 2);
        assert_eq!(
            tracker.live(),
            1,
            "the loaded value was dropped, not leaked"
        );
        drop(map);
        tracker.assert_all_dropped_once();
    }

    /// The rule for `remove` and `clear` during a load: they find nothing to remove and do not
    /// cancel it; the load's value is inserted when it returns.
    #[test]
    fn remove_and_clear_during_a_load_do_not_cancel_it() {
        let map = one_shard::<u64, u64>();
        map.insert(B, 2);
        let got = *map.get_or_load(A, || {
            assert!(map.remove(&A).is_none());
            map.clear();
            assert!(map.get(&B).is_none());
            1
        });
        assert_eq!(got, 1);
        assert_eq!(map.get_cloned(&A), Some(1));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn a_loader_may_write_to_its_own_shard() {
        let map = one_shard::<u64, u64>();
        let got = common::completes_within(Duration::from_secs(10), "a writing loader", {
            let map = map.clone();
            move || {
                *map.get_or_load(A, || {
                    map.insert(B, 2);
                    *map.get_or_load(3, || 3) + 1
                })
            }
        });
        assert_eq!(got, 4);
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn a_loader_asking_for_its_own_key_panics_and_leaves_the_key_loadable() {
        let map = one_shard::<u64, u64>();
        let message = expect_panic(|| map.get_or_load(A, || *map.get_or_load(A, || 1)));
        assert!(message.contains("its own key"), "{message}");
        assert!(map.get(&A).is_none());
        assert_eq!(*map.get_or_load(A, || 2), 2);
    }

    /// The documented self-wait panic holds for an async wait too: a blocking loader that polls
    /// `get_or_load_async` for its own key (here through `block_on`, as a sync wrapper around async
    /// code would) panics with the same message instead of parking forever, and the key stays
    /// loadable.
    #[test]
    fn a_blocking_loader_awaiting_its_own_key_asynchronously_panics_instead_of_hanging() {
        let map = one_shard::<u64, u64>();
        let message = common::completes_within(Duration::from_secs(10), "the self-wait", {
            let map = map.clone();
            move || {
                expect_panic(|| {
                    *map.get_or_load(A, || block_on(map.get_or_load_async(A, async { 1 })))
                })
            }
        });
        assert!(message.contains("its own key"), "{message}");
        assert!(map.get(&A).is_none());
        assert_eq!(*map.get_or_load(A, || 2), 2);
    }

    /// Borrowed keys: a hit, a waiter and a failed lookup allocate nothing; the leader allocates
    /// once.
    #[test]
    fn get_or_load_ref_allocates_the_key_only_for_the_load() {
        let map: Arc<TestMap<String, usize>> = Arc::new(TestMap::new());
        assert_eq!(*map.get_or_load_ref("apple", || 5), 5);
        assert_eq!(*map.get_or_load_ref("apple", || unreachable!()), 5);
        assert_eq!(map.get_cloned("apple"), Some(5));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn get_or_load_with_hash_finds_present_keys_by_the_hash_and_recovers_from_a_wrong_one() {
        let map = one_shard::<u64, u64>();
        let hash = map.hash_key(&A);
        assert_eq!(*map.get_or_load_with_hash(A, hash, || 1), 1);
        assert_eq!(*map.get_or_load_with_hash(A, hash, || unreachable!()), 1);
        // A wrong hash misses the fast path, then hashes properly: same entry, no second load.
        assert_eq!(*map.get_or_load_with_hash(A, !hash, || unreachable!()), 1);
        assert_eq!(*map.get_or_load_with_hash(B, !map.hash_key(&B), || 2), 2);
        assert_eq!(*map.get_with_hash(&B, map.hash_key(&B)).unwrap(), 2);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn async_callers_of_one_key_share_one_load() {
        let map = one_shard::<u64, Arc<str>>();
        let runs = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (map, runs) = (map.clone(), runs.clone());
                thread::spawn(move || {
                    block_on(map.get_or_load_async(A, async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Delay::new(Duration::from_millis(200)).await;
                        Arc::from("loaded")
                    }))
                })
            })
            .collect();
        // Blocking callers join the same flight.
        thread::sleep(Duration::from_millis(50));
        let blocking = map.get_or_load(A, || unreachable!()).clone();
        for c in callers {
            assert_eq!(&*c.join().unwrap(), "loaded");
        }
        assert_eq!(&*blocking, "loaded");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    /// Dropping the future that runs the loader (cancellation) wakes its waiters, blocking and
    /// async, and one of them loads.
    #[test]
    fn a_cancelled_async_leader_hands_the_load_on() {
        let map = one_shard::<u64, u64>();
        let mut leader = Manual::new(map.get_or_load_async(A, std::future::pending::<u64>()));
        assert!(
            leader.poll().is_pending(),
            "registered and awaiting its loader"
        );
        let runs = Arc::new(AtomicUsize::new(0));
        let blocking: Vec<_> = (0..3)
            .map(|_| {
                let (map, runs) = (map.clone(), runs.clone());
                thread::spawn(move || {
                    *map.get_or_load(A, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        7
                    })
                })
            })
            .collect();
        let mut waiter = Manual::new(map.get_or_load_async(A, async { unreachable!() }));
        assert!(waiter.poll().is_pending(), "waiting for the leader");
        thread::sleep(Duration::from_millis(100));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "everyone waits for the leader"
        );
        drop(leader);
        for b in blocking {
            assert_eq!(b.join().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(waiter.run_for(Duration::from_secs(10)), Some(7));
        assert_eq!(
            waiter.wakes.get(),
            1,
            "the async waiter was woken exactly once"
        );
    }

    /// A cancelled waiter stops waiting; the others are unaffected.
    #[test]
    fn a_cancelled_async_waiter_strands_nobody() {
        let map = one_shard::<u64, u64>();
        let release = Arc::new(Barrier::new(2));
        let leader = load_held_until(&map, &release);
        let mut gone = Manual::new(map.get_or_load_async(A, async { unreachable!() }));
        let mut stays = Manual::new(map.get_or_load_async(A, async { unreachable!() }));
        assert!(gone.poll().is_pending() && stays.poll().is_pending());
        drop(gone);
        release.wait();
        assert_eq!(leader.join().unwrap(), 5);
        assert_eq!(stays.run_for(Duration::from_secs(10)), Some(5));
    }

    #[test]
    fn get_or_load_async_future_is_send_when_keys_values_and_loader_are() {
        fn assert_send<T: Send>(t: T) -> T {
            t
        }
        let map: TestMap<String, Vec<u8>> = TestMap::new();
        let future = assert_send(map.get_or_load_async(String::from("k"), async { vec![1] }));
        assert_eq!(block_on(future), vec![1]);
        let future = assert_send(map.get_or_load_async(String::from("k"), async {
            Delay::new(Duration::from_millis(1)).await;
            vec![2]
        }));
        assert_eq!(
            block_on(future),
            vec![1],
            "present: the loader is not awaited"
        );
    }

    #[test]
    fn an_async_loader_that_panics_hands_the_load_on() {
        common::quiet_expected_panics();
        let map = one_shard::<u64, u64>();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            block_on(map.get_or_load_async(A, async {
                panic!("{EXPECTED_PANIC} async loader fails");
            }))
        }));
        assert!(panicked.is_err());
        assert!(map.get(&A).is_none());
        assert_eq!(block_on(map.get_or_load_async(A, async { 3 })), 3);
    }

    /// Many keys, many threads, a loader that fails now and then: per key, every successful caller
    /// sees the same value and at most one load succeeded.
    #[test]
    fn concurrent_loads_of_many_keys_agree_per_key() {
        let map: Arc<TestMap<u64, u64>> = Arc::new(TestMap::builder().shards(4).build());
        let loads = Arc::new(Mutex::new(HashMap::<u64, usize>::new()));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (map, loads) = (map.clone(), loads.clone());
                thread::spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..2000u64 {
                        let key = (i * 7 + t) % 300;
                        let r = map.try_get_or_load(key, || {
                            if (i + t) % 5 == 0 {
                                return Err(());
                            }
                            *loads.lock().unwrap().entry(key).or_default() += 1;
                            Ok(key * 1000 + t)
                        });
                        if let Ok(v) = r {
                            seen.push((key, *v));
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut value_of = HashMap::new();
        for t in threads {
            for (key, v) in t.join().unwrap() {
                assert_eq!(*value_of.entry(key).or_insert(v), v, "key {key}");
                assert_eq!(v / 1000, key);
            }
        }
        for (key, n) in loads.lock().unwrap().iter() {
            assert_eq!(*n, 1, "key {key} loaded {n} times");
        }
    }

    /// A key whose `Eq` panics once armed and whose `Drop` then writes to its own map: if such a
    /// key were dropped under a shard lock, that write would be a re-entrant write panicking during
    /// a panic, and the process would abort. A copy (the flat map clones keys when it rebuilds a
    /// table) is the same key and shares its flags: the write is made once, by the first copy
    /// dropped while armed.
    #[derive(Clone)]
    struct WritingKey {
        id: u64,
        armed: Arc<std::sync::atomic::AtomicBool>,
        map: std::sync::Weak<TestMap<WritingKey, u64>>,
        wrote: Arc<AtomicUsize>,
    }

    impl std::hash::Hash for WritingKey {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.id.hash(state);
        }
    }

    impl PartialEq for WritingKey {
        fn eq(&self, other: &Self) -> bool {
            if self.armed.load(Ordering::SeqCst) || other.armed.load(Ordering::SeqCst) {
                panic!("{EXPECTED_PANIC} Eq of key {}", self.id);
            }
            self.id == other.id
        }
    }

    impl Eq for WritingKey {}

    impl Drop for WritingKey {
        fn drop(&mut self) {
            if self.armed.swap(false, Ordering::SeqCst) {
                if let Some(map) = self.map.upgrade() {
                    let inert = WritingKey {
                        id: 1000 + self.id,
                        armed: Arc::default(),
                        map: std::sync::Weak::new(),
                        wrote: Arc::default(),
                    };
                    map.insert(inert, self.id);
                    self.wrote.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// The leader's key is compared (`Eq`) with an entry that appeared while the loader ran; when
    /// that comparison panicked, the key used to be dropped with the lock held. Now the panic
    /// reaches the caller, the key's `Drop` runs after the lock is released (its write lands), and
    /// the map stays usable from this thread and another.
    #[test]
    fn a_key_dropped_by_an_eq_panic_after_a_load_is_dropped_outside_the_lock() {
        common::in_child_process(
            &format!("{MODULE}::a_key_dropped_by_an_eq_panic_after_a_load_is_dropped_outside_the_lock"),
            || {
                let map: Arc<TestMap<WritingKey, u64>> = one_shard();
                let wrote = Arc::new(AtomicUsize::new(0));
                let key = |id: u64, armed: &Arc<std::sync::atomic::AtomicBool>| WritingKey {
                    id,
                    armed: Arc::clone(armed),
                    map: Arc::downgrade(&map),
                    wrote: Arc::clone(&wrote),
                };
                let disarmed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let leader_armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let msg = expect_panic(|| {
                    map.get_or_load(key(7, &leader_armed), || {
                        // An entry for the same key lands while the load runs, then `Eq` is armed:
                        // `complete` must compare the two.
                        map.insert(key(7, &disarmed), 70);
                        leader_armed.store(true, Ordering::SeqCst);
                        77
                    })
                });
                assert!(msg.contains("Eq of key 7"), "{msg}");
                assert_eq!(
                    wrote.load(Ordering::SeqCst),
                    1,
                    "the key's Drop wrote to the map"
                );
                let probe = key(1007, &disarmed);
                assert_eq!(map.get(&probe).map(|v| *v), Some(7));
                let other = Arc::clone(&map);
                let writer = thread::spawn(move || {
                    let inert = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let k = WritingKey {
                        id: 9,
                        armed: inert,
                        map: std::sync::Weak::new(),
                        wrote: Arc::default(),
                    };
                    other.insert(k, 9);
                });
                writer.join().expect("another thread can write");
                drop(probe);
            },
        );
    }

    /// When a load resolves, a panicking `Waker::wake` of one async waiter must not keep the others
    /// from being woken (an unwoken waiter is never polled again, and nobody would retry): every
    /// waiter is woken, then the panic reaches the thread that resolved the load, whose value is in
    /// the map.
    #[test]
    fn a_panicking_wake_strands_no_other_async_waiter() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        common::quiet_expected_panics();
        let map = one_shard::<u64, u64>();
        let release = Arc::new(Barrier::new(2));
        let leader = load_held_until(&map, &release);
        let broken = Waker::from(Arc::new(PanickingWake));
        let counted = Arc::new(CountingWake(AtomicUsize::new(0)));
        let counted_waker = Waker::from(Arc::clone(&counted));
        let mut first = Box::pin(map.get_or_load_async(A, async { unreachable!() }));
        let mut second = Box::pin(map.get_or_load_async(A, async { unreachable!() }));
        assert!(first
            .as_mut()
            .poll(&mut Context::from_waker(&broken))
            .is_pending());
        assert!(second
            .as_mut()
            .poll(&mut Context::from_waker(&counted_waker))
            .is_pending());
        release.wait();
        let resolved = leader.join();
        let msg = common::panics::panic_message(
            &*resolved.expect_err("the wake's panic reaches the leader"),
        );
        assert!(msg.contains("a runtime's wake panicked"), "{msg}");
        assert_eq!(
            counted.0.load(Ordering::SeqCst),
            1,
            "the other waiter was woken once"
        );
        assert_eq!(
            second
                .as_mut()
                .poll(&mut Context::from_waker(&counted_waker)),
            Poll::Ready(5)
        );
        assert_eq!(map.get(&A).map(|v| *v), Some(5));
    }

    /// A waker's `clone` is the runtime's code and may panic. When it does as an async waiter
    /// registers with a load in flight, that `poll` panics, and nothing else happens: the future is
    /// dropped cleanly (while unwinding, as a runtime's `block_on` drops its stack-pinned future,
    /// or later, after a runtime caught the panic), the leader finishes its load, and every other
    /// waiter (registered before or after) is woken once. The broken behaviour was an abort (the
    /// waiter's `Drop` indexed a slot it had recorded but never pushed, while unwinding), hence the
    /// child process.
    #[test]
    fn a_waker_whose_clone_panics_fails_its_own_poll_and_strands_no_one() {
        use std::future::Future;
        use std::task::Context;
        common::in_child_process(
            &format!("{MODULE}::a_waker_whose_clone_panics_fails_its_own_poll_and_strands_no_one"),
            || {
                let map = one_shard::<u64, u64>();
                let release = Arc::new(Barrier::new(2));
                let leader = load_held_until(&map, &release);
                let waiter = || Manual::new(map.get_or_load_async(A, async { unreachable!() }));
                let mut before = waiter();
                assert!(before.poll().is_pending());
                let broken = waker_whose_clone_panics();
                let message = expect_panic(|| {
                    let future = std::pin::pin!(map.get_or_load_async(A, async { unreachable!() }));
                    future.poll(&mut Context::from_waker(&broken)).is_ready()
                });
                assert!(message.contains("waker clone panicked"), "{message}");
                let mut caught = Box::pin(map.get_or_load_async(A, async { unreachable!() }));
                let message = expect_panic(|| {
                    caught
                        .as_mut()
                        .poll(&mut Context::from_waker(&broken))
                        .is_ready()
                });
                assert!(message.contains("waker clone panicked"), "{message}");
                drop(caught);
                let mut after = waiter();
                assert!(after.poll().is_pending());
                release.wait();
                assert_eq!(leader.join().unwrap(), 5, "the leader finished its load");
                for waiter in [&mut before, &mut after] {
                    assert_eq!(waiter.run_for(Duration::from_secs(10)), Some(5));
                    assert_eq!(waiter.wakes.get(), 1, "each live waiter was woken once");
                }
            },
        );
    }
}
