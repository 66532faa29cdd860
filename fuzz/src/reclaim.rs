//! Reclamation target: fill / clear / clear_keep_capacity / hold a `Ref` / drop it /
//! `wait_for_reclamation` sequences, checking [`MemoryStats`] and exact drop counts.
//!
//! Single-threaded, so every snapshot is exact. Checked after every step: `len` and `entry_bytes`
//! agree with the model, counters never go backwards, no more tables reclaimed than retired, no
//! `Drop` panicked, no value in the map or under a held `Ref` was dropped, and a held `Ref` still
//! reads its value after the map was cleared. After `wait_for_reclamation` with no `Ref` held:
//! it succeeds, `pending_bytes` is 0, every retired table was reclaimed, `entries_reclaimed` equals
//! the entries the model retired (replaced, removed, retained away, cleared), and exactly the
//! values outside the map have been dropped, each once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use epochmap::{EpochMap, MemoryStats, ReclaimMode, Ref};

use crate::{Counted, FuzzHasher, Ledger};

/// Most `Ref`s held at once.
const MAX_HELD: usize = 4;

#[derive(Debug, Arbitrary)]
struct Config {
    /// Shards: `1 << (shards_log % 4)`, so 1 to 8.
    shards_log: u8,
    hasher: FuzzHasher,
    inline: bool,
    /// Backpressure bytes: `0`, 4 KiB, or the default, by `backpressure % 3`.
    backpressure: u8,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// Inserts keys `start..start + count` (replacing what is there).
    Fill {
        start: u8,
        count: u8,
    },
    Insert(u8, u32),
    Remove(u8),
    RetainEven,
    Clear,
    ClearKeepCapacity,
    ShrinkToFit,
    Reserve(u8),
    /// Holds a `Ref` to the key, if present.
    Hold(u8),
    /// Holds the `Ref` that a replacing insert returns (the old value).
    HoldReplaced(u8, u32),
    /// Drops the held `Ref` at `index % held`.
    Drop(u8),
    DropAll,
    /// `wait_for_reclamation`: must succeed when no `Ref` is held.
    Wait,
    Stats,
}

type Map = EpochMap<Box<u16>, Counted, FuzzHasher>;

struct Run<'m> {
    map: &'m Map,
    ledger: std::sync::Arc<Ledger>,
    /// Key → id of the value the map should hold.
    model: HashMap<u16, u32>,
    held: Vec<Ref<'m, Box<u16>, Counted>>,
    /// Entries the map has retired: replaced, removed, retained away or cleared.
    retired: u64,
    last: MemoryStats,
    entry_size: Option<usize>,
}

/// Runs one input: see the module docs.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(config) = Config::arbitrary(&mut u) else {
        return;
    };
    let map: Map = EpochMap::builder()
        .shards(1 << (config.shards_log % 4))
        .hasher(config.hasher)
        .reclaim_mode(if config.inline {
            ReclaimMode::Inline
        } else {
            ReclaimMode::Background
        })
        .backpressure_bytes(
            [0, 4096, epochmap::DEFAULT_BACKPRESSURE_BYTES][usize::from(config.backpressure % 3)],
        )
        .build();
    let mut run = Run {
        map: &map,
        ledger: Ledger::new(),
        model: HashMap::new(),
        held: Vec::new(),
        retired: 0,
        last: map.memory_stats(),
        entry_size: None,
    };
    // `arbitrary` pads an exhausted input with zeros, so stop when the bytes run out.
    while let (false, Ok(op)) = (u.is_empty(), Op::arbitrary(&mut u)) {
        run.apply(op);
        run.check();
    }
    run.held.clear();
    run.wait();
    let ledger = run.ledger.clone();
    drop(run);
    // Dropping the map drops what it held, on this thread: then every value was dropped once.
    drop(map);
    ledger.assert_exactly(&HashSet::new());
}

impl<'m> Run<'m> {
    fn insert(&mut self, k: u16, payload: u32) -> Option<Ref<'m, Box<u16>, Counted>> {
        let value = self.ledger.make(k, payload);
        let id = value.id;
        let old = self.map.insert(Box::new(k), value);
        let want = self.model.insert(k, id);
        assert_eq!(
            old.as_ref().map(|r| r.id),
            want,
            "insert({k}) returned the wrong entry"
        );
        if old.is_some() {
            self.retired += 1;
        }
        old
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Fill { start, count } => {
                for i in 0..u16::from(count) {
                    self.insert(u16::from(start) + i, u32::from(i));
                }
            }
            Op::Insert(k, p) => {
                self.insert(u16::from(k), p);
            }
            Op::Remove(k) => {
                let k = u16::from(k);
                let got = self.map.remove(&k).map(|r| r.id);
                assert_eq!(got, self.model.remove(&k), "remove({k})");
                if got.is_some() {
                    self.retired += 1;
                }
            }
            Op::RetainEven => {
                self.map.retain(|k, _| **k % 2 == 0);
                let before = self.model.len();
                self.model.retain(|k, _| k % 2 == 0);
                self.retired += (before - self.model.len()) as u64;
            }
            Op::Clear | Op::ClearKeepCapacity => {
                let values: Vec<(u32, u32)> =
                    self.held.iter().map(|r| (r.id, *r.payload)).collect();
                if matches!(op, Op::Clear) {
                    self.map.clear();
                } else {
                    self.map.clear_keep_capacity();
                }
                self.retired += self.model.len() as u64;
                self.model.clear();
                for (r, (id, payload)) in self.held.iter().zip(values) {
                    assert_eq!(
                        (r.id, *r.payload),
                        (id, payload),
                        "a held Ref changed on clear"
                    );
                }
            }
            Op::ShrinkToFit => self.map.shrink_to_fit(),
            Op::Reserve(n) => self.map.reserve(usize::from(n) * 8),
            Op::Hold(k) => {
                if self.held.len() < MAX_HELD {
                    if let Some(r) = self.map.get(&u16::from(k)) {
                        self.held.push(r);
                    }
                }
            }
            Op::HoldReplaced(k, p) => {
                let old = self.insert(u16::from(k), p);
                if let Some(r) = old {
                    if self.held.len() < MAX_HELD {
                        self.held.push(r);
                    }
                }
            }
            Op::Drop(i) => {
                if !self.held.is_empty() {
                    let i = usize::from(i) % self.held.len();
                    self.held.remove(i);
                }
            }
            Op::DropAll => self.held.clear(),
            Op::Wait => {
                if self.held.is_empty() {
                    self.wait();
                } else {
                    // A held Ref may hold the epoch back; a short attempt must still be consistent.
                    if self.map.wait_for_reclamation(Duration::from_millis(1)) {
                        assert_eq!(self.map.memory_stats().pending_bytes, 0);
                    }
                }
            }
            Op::Stats => {
                let stats = self.map.memory_stats();
                assert_eq!(
                    stats.total_bytes(),
                    stats.table_bytes + stats.entry_bytes + stats.pending_bytes + stats.drain_bytes
                );
                assert!(stats.buckets >= self.map.shard_count(), "{stats:?}");
            }
        }
    }

    /// With no `Ref` held: reclamation must finish, and then every count is exact.
    fn wait(&mut self) {
        assert!(self.held.is_empty());
        assert!(
            self.map.wait_for_reclamation(Duration::from_secs(30)),
            "reclamation did not finish with no Ref held: {:?}",
            self.map.memory_stats()
        );
        let stats = self.map.memory_stats();
        assert_eq!(stats.pending_bytes, 0, "{stats:?}");
        assert_eq!(stats.tables_reclaimed, stats.tables_retired, "{stats:?}");
        assert_eq!(
            stats.entries_reclaimed, self.retired,
            "entries reclaimed vs entries retired: {stats:?}"
        );
        let live: HashSet<u32> = self.model.values().copied().collect();
        self.ledger.assert_exactly(&live);
        self.check();
    }

    /// Checks that hold after every step.
    fn check(&mut self) {
        let stats = self.map.memory_stats();
        let len = self.model.len();
        assert_eq!(stats.len, len, "memory_stats().len");
        assert_eq!(self.map.len(), len);
        if let Some(per_entry) = stats.entry_bytes.checked_div(len) {
            let size = *self.entry_size.get_or_insert(per_entry);
            assert!(size > 0);
            assert_eq!(
                stats.entry_bytes,
                size * len,
                "entry_bytes is len * entry size"
            );
        } else {
            assert_eq!(stats.entry_bytes, 0);
        }
        assert!(stats.table_bytes > 0, "every shard has a table: {stats:?}");
        assert!(stats.tables_reclaimed <= stats.tables_retired, "{stats:?}");
        assert!(
            stats.entries_reclaimed <= self.retired,
            "reclaimed {} entries, only {} retired",
            stats.entries_reclaimed,
            self.retired
        );
        let last = self.last;
        assert!(
            stats.tables_retired >= last.tables_retired,
            "counter went back"
        );
        assert!(
            stats.tables_reclaimed >= last.tables_reclaimed,
            "counter went back"
        );
        assert!(
            stats.buckets_scanned >= last.buckets_scanned,
            "counter went back"
        );
        assert!(
            stats.buckets_skipped >= last.buckets_skipped,
            "counter went back"
        );
        assert!(
            stats.entries_reclaimed >= last.entries_reclaimed,
            "counter went back"
        );
        assert_eq!(stats.drop_panics, 0);
        self.last = stats;

        for (k, id) in &self.model {
            assert_eq!(
                self.ledger.drops_of(*id),
                0,
                "value {id} of key {k} dropped while present"
            );
        }
        for r in &self.held {
            assert_eq!(r.key, **r.key(), "a held Ref reads another key's value");
            assert_eq!(
                self.ledger.drops_of(r.id),
                0,
                "value {} dropped under a held Ref",
                r.id
            );
        }
        self.ledger.assert_no_double_drop();
    }
}
