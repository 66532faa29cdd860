//! Fuzz targets for `epochmap`, kept in one place.
//!
//! Each module exposes `run(data: &[u8])`, which decodes the bytes into a configuration and an
//! operation sequence with [`arbitrary`], applies it, and panics on any violated property. The
//! `cargo fuzz` binaries in `fuzz_targets/` call it under libFuzzer (with AddressSanitizer), and
//! `tests/replay.rs` feeds it every committed input in `corpus/<target>/` and
//! `regressions/<target>/` on stable Rust, so a crash once found stays fixed.
//!
//! * [`ops`]: differential against `std::collections::HashMap`, single thread; every input on
//!   an `EpochMap` and on a `FlatEpochMap`.
//! * [`concurrent`]: two or three threads on one map; global invariants and exact drop counts;
//!   every input on an `EpochMap` and on a `FlatEpochMap`.
//! * [`reclaim`]: clear / hold a `Ref` / reclaim sequences; `memory_stats()` consistency.
//! * [`builder`]: arbitrary `Builder` settings; `try_build` errors are the documented ones.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;

pub mod builder;
pub mod concurrent;
pub mod ops;
pub mod reclaim;

/// A deterministic hasher that is either well mixed or deliberately weak.
///
/// Weak variants squeeze every key into `1 << bits` distinct hashes and place them where they
/// hurt: only in the low bits (one shard, one tag, neighbouring home buckets), only in the top
/// bits (spread over shards, same home bucket and tag), mixed, or all equal. Identical hashes
/// force overflow chains across buckets; few distinct ones make probes compare many keys.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum FuzzHasher {
    /// SipHash with fixed keys (`DefaultHasher::new()`): well mixed and reproducible.
    Sip,
    /// At most `1 << (bits % 7)` distinct hashes, laid out as [`WeakLayout`] says.
    Weak {
        /// Distinct hash values: `1 << (bits % 7)`.
        bits: u8,
        /// Where in the 64-bit hash the few distinct values land.
        layout: WeakLayout,
    },
}

/// Where a weak hash's entropy goes (see [`FuzzHasher`]).
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum WeakLayout {
    /// The raw small value: shard 0, tag 0, consecutive home buckets.
    Low,
    /// The value in the top bits: different shards, the same home bucket.
    High,
    /// The value multiplied by an odd constant: spread everywhere, but few of them.
    Mixed,
    /// Every key hashes to 0.
    Constant,
}

impl BuildHasher for FuzzHasher {
    type Hasher = FuzzHasherState;

    fn build_hasher(&self) -> FuzzHasherState {
        FuzzHasherState {
            config: *self,
            sip: std::collections::hash_map::DefaultHasher::new(),
        }
    }
}

/// The per-hash state of [`FuzzHasher`].
#[derive(Debug)]
pub struct FuzzHasherState {
    config: FuzzHasher,
    sip: std::collections::hash_map::DefaultHasher,
}

impl Hasher for FuzzHasherState {
    fn write(&mut self, bytes: &[u8]) {
        self.sip.write(bytes);
    }

    fn finish(&self) -> u64 {
        let full = self.sip.finish();
        match self.config {
            FuzzHasher::Sip => full,
            FuzzHasher::Weak { bits, layout } => {
                let small = full & ((1u64 << (bits % 7)) - 1);
                match layout {
                    WeakLayout::Low => small,
                    WeakLayout::High => small << 58,
                    WeakLayout::Mixed => small.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    WeakLayout::Constant => 0,
                }
            }
        }
    }
}

/// Drop counts of every value a run created, shared by the values themselves.
///
/// A [`Counted`] value records its drop here instead of asserting in `Drop` (the map catches
/// panics from `Drop` during reclamation, which would hide the failure); the run checks the
/// counts at the points where they are known exactly.
#[derive(Debug, Default)]
pub struct Ledger {
    drops: Mutex<Vec<Arc<AtomicU32>>>,
}

impl Ledger {
    /// A new, empty ledger.
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    /// Creates a value for `key` carrying `payload`, with a fresh id.
    pub fn make(self: &Arc<Self>, key: u16, payload: u32) -> Counted {
        let counter = Arc::new(AtomicU32::new(0));
        let mut drops = self.drops.lock().unwrap();
        let id = drops.len() as u32;
        drops.push(counter.clone());
        Counted {
            key,
            payload: Box::new(payload),
            id,
            dropped: counter,
            ledger: Arc::clone(self),
        }
    }

    /// Values created so far.
    pub fn created(&self) -> usize {
        self.drops.lock().unwrap().len()
    }

    /// How often value `id` has been dropped.
    pub fn drops_of(&self, id: u32) -> u32 {
        self.drops.lock().unwrap()[id as usize].load(Ordering::SeqCst)
    }

    /// Panics unless no value was dropped twice.
    pub fn assert_no_double_drop(&self) {
        for (id, count) in self.drops.lock().unwrap().iter().enumerate() {
            let n = count.load(Ordering::SeqCst);
            assert!(n <= 1, "value {id} dropped {n} times");
        }
    }

    /// Panics unless exactly the values in `live` are undropped and every other value was dropped
    /// exactly once.
    pub fn assert_exactly(&self, live: &std::collections::HashSet<u32>) {
        for (id, count) in self.drops.lock().unwrap().iter().enumerate() {
            let n = count.load(Ordering::SeqCst);
            let want = u32::from(!live.contains(&(id as u32)));
            assert_eq!(n, want, "value {id}: dropped {n} times, expected {want}");
        }
    }
}

/// A map value that knows which key it was written for and counts its drops in a [`Ledger`].
/// Its payload is boxed, so AddressSanitizer sees any read of a freed value.
pub struct Counted {
    /// The key this value was written for.
    pub key: u16,
    /// Arbitrary data (on the heap).
    pub payload: Box<u32>,
    /// Unique per ledger.
    pub id: u32,
    dropped: Arc<AtomicU32>,
    /// Where a clone registers itself.
    ledger: Arc<Ledger>,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("key", &self.key)
            .field("payload", &self.payload)
            .field("id", &self.id)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

/// A `FlatEpochMap` clones its values when it rebuilds a table. A clone is a value of its own:
/// same key and payload, a fresh id in the same ledger, its own drop count, so "every value ever
/// created was dropped exactly once" covers the copies the map made.
impl Clone for Counted {
    fn clone(&self) -> Self {
        self.ledger.make(self.key, *self.payload)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// The committed inputs of `target`: every file in `corpus/<target>/` and `regressions/<target>/`
/// under this crate, sorted.
pub fn committed_inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        files.extend(files_in(&root.join(dir).join(target)));
    }
    files.sort();
    files
}

fn files_in(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let Ok(dir) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != ".gitkeep"))
        .collect()
}

/// `main` of a fuzz binary built without libFuzzer: runs `target` on every file named on the
/// command line (directories are expanded), printing each name first so a failure points at it.
pub fn replay_main(target: fn(&[u8])) {
    let mut count = 0;
    for arg in std::env::args_os().skip(1) {
        let mut files = files_in(Path::new(&arg));
        files.sort();
        for file in files {
            eprintln!("replaying {}", file.display());
            target(&std::fs::read(&file).expect("readable input"));
            count += 1;
        }
    }
    eprintln!("replayed {count} inputs");
}
