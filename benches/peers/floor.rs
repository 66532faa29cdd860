//! Write-path floor models for the mixes (issue 11): not maps anyone should use, but what a layout
//! costs by itself. Each is `FLOOR_SHARDS` mutexes over hashbrown tables (dashmap's structure), and
//! every operation, reads included, takes the shard's mutex:
//!
//! - `floor-inline`: entries inline in the table (dashmap's layout);
//! - `floor-pool`: each entry in a slot of a per-shard pool that the table points to, freed back to
//!   the pool at once, under the lock: the indirection that keeps a value's address stable, with no
//!   allocator call and no epoch;
//! - `floor-epoch`: `floor-pool` plus what a map whose `Ref`s outlive removal must add: an epoch pin
//!   around each operation, and removed or replaced entries handed to crossbeam's epoch in batches
//!   of 64 per shard, their slots returning to the pool only after the grace period.
//!
//! `floor-epoch ÷ floor-inline` is what stable addresses with epoch reclamation cost before any of
//! epochmap's own machinery (lock-free reads, slab, memory accounting).
//!
//! The flat layout's floors (issue 20, `FlatEpochMap`: entries inline, read lock-free) keep the
//! entries inline and add what lock-free readers of inline entries force on the writer
//! ([`FlatShard`]):
//!
//! - `floor-flat`: a replace or update writes the new entry into another slot and unlinks the old
//!   one (never an overwrite in place), and an unlinked entry stays in the table, dead (lookups
//!   skip it), until it is reclaimed, here at once in batches of 64 per shard; growth copies the
//!   live entries into a new table;
//! - `floor-flat-epoch`: `floor-flat` plus a pin around each operation, the dead entries handed to
//!   the epoch in batches of 64 per shard and removed from the table (under the shard lock) only
//!   after the grace period, and a table replaced by growth freed after it too;
//! - `floor-flat-pinned`: `floor-flat-epoch` with one pin per batch of 64 operations, as a caller
//!   of `map.pin()` gets.
//!
//! `floor-flat-epoch ÷ dashmap` is the ceiling of any design with these obligations and dashmap's
//! structure; `FlatEpochMap` reads without the lock, which these models do not.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_epoch::Guard;
use crossbeam_utils::CachePadded;

use super::common::{hasher, Hasher};
use super::mixmaps::{MapVisitor, MixMap, Op, BATCH};

/// dashmap's and epochmap's default shard count on this machine's 2 cores (four per core).
const FLOOR_SHARDS: usize = 8;

/// Entries retired per hand-off to the epoch, as epochmap does.
const EPOCH_BATCH: usize = 64;

/// One shard's table, as each model stores it.
pub trait FloorShard: Send + Default {
    /// What the shard keeps of an unlinked entry until it may be reused (the epoch models hand
    /// these to the epoch in batches).
    type Retired: Send + 'static;
    fn get(&mut self, hash: u64, k: u64) -> Option<u64>;
    fn insert(&mut self, hasher: &Hasher, hash: u64, k: u64, v: u64);
    fn remove(&mut self, hash: u64, k: u64);
    /// Adds 1 to the value, copy-on-write as epochmap's `update` does.
    fn update(&mut self, hasher: &Hasher, hash: u64, k: u64);
    /// Makes the shard keep what it unlinks for [`unlinked`](Self::unlinked) (the epoch models)
    /// instead of freeing it itself.
    fn retire_through_epoch(&mut self) {}
    /// Entries unlinked since the last call, for the epoch models to retire.
    fn unlinked(&mut self) -> Option<&mut Vec<Self::Retired>> {
        None
    }
    /// Takes back entries whose grace period has passed.
    fn reclaimed(&mut self, _retired: Vec<Self::Retired>) {}
    /// A table the last operation replaced with a rebuilt one, which the epoch models free only
    /// after the grace period (a lock-free reader may still be reading it).
    fn replaced(&mut self) -> Option<Box<dyn Send>> {
        None
    }
}

/// How a model pins crossbeam's epoch.
pub type Pin = u8;
/// No epoch: nothing is pinned, and a shard frees what it unlinks itself.
pub const NO_EPOCH: Pin = 0;
/// A pin around each operation, as a map whose one-call operations return a `Ref` needs.
pub const PIN_EACH: Pin = 1;
/// One pin per batch of [`BATCH`] operations, as a caller of `map.pin()` gets.
pub const PIN_BATCH: Pin = 2;

/// A floor model: `FLOOR_SHARDS` mutex-guarded shards, padded apart as the map's own shards are.
/// `PIN` selects the epoch variant ([`NO_EPOCH`], [`PIN_EACH`], [`PIN_BATCH`]): with an epoch,
/// unlinked entries are retired in batches.
pub struct Floor<S: FloorShard, const PIN: Pin> {
    shards: Box<[CachePadded<Mutex<S>>]>,
    /// Per shard, entries whose grace period has passed.
    returned: Box<[Arc<Returned<S::Retired>>]>,
    hasher: Hasher,
}

/// Every floor model, by its name in the mixes and the scaling run (`--maps floor-flat,...`).
pub fn each_floor(v: &mut impl MapVisitor) {
    v.visit("floor-inline", Inline::new);
    v.visit("floor-pool", Pooled::new);
    v.visit("floor-epoch", Epoch::new);
    v.visit("floor-flat", Flat::new);
    v.visit("floor-flat-epoch", FlatEpoch::new);
    v.visit("floor-flat-pinned", FlatPinned::new);
}

/// One shard's entries back from the epoch, pushed by the deferred functions (which run inside
/// some pin, where the shard lock is not held) and taken back under the shard lock.
struct Returned<T> {
    list: Mutex<Vec<T>>,
    /// Set after a push, so that an operation looks at `list` only when it holds something: a
    /// load per operation, where taking the list's mutex each time would add two locked
    /// instructions per operation that no map needs.
    any: AtomicBool,
}

impl<T> Default for Returned<T> {
    fn default() -> Self {
        Returned {
            list: Mutex::default(),
            any: AtomicBool::new(false),
        }
    }
}

/// Entries inline.
pub type Inline = Floor<InlineShard, NO_EPOCH>;
/// Entries in a per-shard pool, freed at once.
pub type Pooled = Floor<PoolShard, NO_EPOCH>;
/// Entries in a per-shard pool, retired through the epoch.
pub type Epoch = Floor<PoolShard, PIN_EACH>;
/// Entries inline, never overwritten in place nor reused at once; no epoch.
pub type Flat = Floor<FlatShard, NO_EPOCH>;
/// [`Flat`] with a pin per operation and dead entries retired through the epoch.
pub type FlatEpoch = Floor<FlatShard, PIN_EACH>;
/// [`FlatEpoch`] with one pin per batch of operations.
pub type FlatPinned = Floor<FlatShard, PIN_BATCH>;

impl<S: FloorShard, const PIN: Pin> Floor<S, PIN> {
    pub fn new() -> Self {
        Floor {
            shards: (0..FLOOR_SHARDS)
                .map(|_| {
                    let mut shard = S::default();
                    if PIN != NO_EPOCH {
                        shard.retire_through_epoch();
                    }
                    CachePadded::new(Mutex::new(shard))
                })
                .collect(),
            returned: (0..FLOOR_SHARDS).map(|_| Arc::default()).collect(),
            hasher: hasher(),
        }
    }

    /// Runs `op` on `k`'s shard under its lock, then, under `guard` (the epoch models' pin),
    /// takes back what the epoch returned and retires what `op` unlinked.
    fn with<R>(&self, guard: Option<&Guard>, k: u64, op: impl FnOnce(&mut S, u64) -> R) -> R {
        let hash = self.hasher.hash_one(k);
        // Bits hashbrown leaves alone: it indexes with the low bits and tags with the top seven.
        let at = (hash >> 32) as usize % FLOOR_SHARDS;
        let mut shard = self.shards[at].lock().unwrap();
        let result = op(&mut shard, hash);
        let Some(guard) = guard else {
            return result;
        };
        let returned = &self.returned[at];
        // The flag is a hint, loaded `Relaxed`: the list's mutex orders a push before its take,
        // and a set not seen yet is seen by a later operation. The swap is `Acquire` so that the
        // take below cannot move before the clear: a push after the take sets the flag again.
        if returned.any.load(Ordering::Relaxed) && returned.any.swap(false, Ordering::Acquire) {
            let back = std::mem::take(&mut *returned.list.lock().unwrap());
            shard.reclaimed(back);
        }
        let mut deferred = false;
        if let Some(table) = shard.replaced() {
            guard.defer(move || drop(table));
            deferred = true;
        }
        let unlinked = shard
            .unlinked()
            .expect("the epoch models keep their unlinked entries");
        if unlinked.len() >= EPOCH_BATCH {
            let batch = std::mem::take(unlinked);
            let returned = Arc::clone(returned);
            guard.defer(move || {
                returned.list.lock().unwrap().extend(batch);
                // `Relaxed`: the list's mutex carries the batch; the flag only says to look.
                returned.any.store(true, Ordering::Relaxed);
            });
            deferred = true;
        }
        drop(shard);
        // After unlocking, as epochmap does: a batch must not wait in this thread's bag.
        if deferred {
            guard.flush();
        }
        result
    }

    /// One operation under `guard`; returns the value a get found, else 0.
    fn one(&self, guard: Option<&Guard>, op: Op, k: u64) -> u64 {
        let h = &self.hasher;
        match op {
            Op::Get => self.with(guard, k, |s, hash| s.get(hash, k)).unwrap_or(0),
            Op::Insert => {
                self.with(guard, k, |s, hash| s.insert(h, hash, k, k));
                0
            }
            Op::Remove => {
                self.with(guard, k, |s, hash| s.remove(hash, k));
                0
            }
            Op::Update => {
                self.with(guard, k, |s, hash| s.update(h, hash, k));
                0
            }
        }
    }
}

impl<S: FloorShard, const PIN: Pin> MixMap for Floor<S, PIN> {
    fn run(&self, ops: &[(Op, u64)]) -> u64 {
        let mut sum = 0u64;
        if PIN == PIN_BATCH {
            for batch in ops.chunks(BATCH) {
                let guard = crossbeam_epoch::pin();
                for &(op, k) in batch {
                    sum = sum.wrapping_add(self.one(Some(&guard), op, k));
                }
            }
            return sum;
        }
        for &(op, k) in ops {
            let v = match PIN {
                NO_EPOCH => self.one(None, op, k),
                _ => self.one(Some(&crossbeam_epoch::pin()), op, k),
            };
            sum = sum.wrapping_add(v);
        }
        sum
    }
    fn prefill(&self, keys: impl Iterator<Item = u64>) {
        for k in keys {
            self.run(&[(Op::Insert, k)]);
        }
    }
}

#[derive(Default)]
pub struct InlineShard(hashbrown::HashTable<(u64, u64)>);

impl FloorShard for InlineShard {
    type Retired = ();
    fn get(&mut self, hash: u64, k: u64) -> Option<u64> {
        self.0.find(hash, |e| e.0 == k).map(|e| e.1)
    }
    fn insert(&mut self, hasher: &Hasher, hash: u64, k: u64, v: u64) {
        match self.0.find_mut(hash, |e| e.0 == k) {
            Some(e) => *e = (k, v),
            None => {
                self.0.insert_unique(hash, (k, v), |e| hasher.hash_one(e.0));
            }
        }
    }
    fn remove(&mut self, hash: u64, k: u64) {
        if let Ok(e) = self.0.find_entry(hash, |e| e.0 == k) {
            e.remove();
        }
    }
    fn update(&mut self, _: &Hasher, hash: u64, k: u64) {
        if let Some(e) = self.0.find_mut(hash, |e| e.0 == k) {
            *e = (k, e.1.wrapping_add(1));
        }
    }
}

/// Slots per chunk of a pool.
const POOL_CHUNK: usize = 4096;

/// A slot of a [`PoolShard`]'s pool. Only the pool makes them, each pointing into one of its
/// chunks, which live as long as the pool: reading a slot is always reading initialised memory
/// (a freed slot keeps its last entry, and nothing reads it before it is reused).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Slot(*mut (u64, u64));

// SAFETY: a slot is only read or written by the holder of its shard's mutex; the deferred
// functions of the epoch model only move slots between lists.
unsafe impl Send for Slot {}

impl Slot {
    fn read(self) -> (u64, u64) {
        // SAFETY: see the type's docs; the shard's lock is held by every caller.
        unsafe { *self.0 }
    }
}

/// A table of pointers into a per-shard pool of entry slots. In the epoch model, unlinked
/// entries wait in `retired` instead of going back to `free` at once.
#[derive(Default)]
pub struct PoolShard {
    table: hashbrown::HashTable<Slot>,
    free: Vec<Slot>,
    chunks: Vec<Box<[(u64, u64)]>>,
    retired: Vec<Slot>,
    epoch: bool,
}

impl PoolShard {
    fn alloc(&mut self, entry: (u64, u64)) -> Slot {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let mut chunk = vec![(0, 0); POOL_CHUNK].into_boxed_slice();
                self.free.extend(chunk[1..].iter_mut().map(|s| Slot(s)));
                let first = Slot(&mut chunk[0]);
                self.chunks.push(chunk);
                first
            }
        };
        // SAFETY: a free slot of a chunk this shard owns, and we hold its lock.
        unsafe { slot.0.write(entry) };
        slot
    }

    fn release(&mut self, slot: Slot) {
        if self.epoch {
            self.retired.push(slot);
        } else {
            self.free.push(slot);
        }
    }
}

impl FloorShard for PoolShard {
    type Retired = Slot;
    fn get(&mut self, hash: u64, k: u64) -> Option<u64> {
        self.table
            .find(hash, |e| e.read().0 == k)
            .map(|e| e.read().1)
    }
    fn insert(&mut self, hasher: &Hasher, hash: u64, k: u64, v: u64) {
        let new = self.alloc((k, v));
        match self.table.find_mut(hash, |e| e.read().0 == k) {
            Some(e) => {
                let old = std::mem::replace(e, new);
                self.release(old);
            }
            None => {
                self.table
                    .insert_unique(hash, new, |e| hasher.hash_one(e.read().0));
            }
        }
    }
    fn remove(&mut self, hash: u64, k: u64) {
        if let Ok(e) = self.table.find_entry(hash, |e| e.read().0 == k) {
            let (old, _) = e.remove();
            self.release(old);
        }
    }
    fn update(&mut self, _: &Hasher, hash: u64, k: u64) {
        let Some(&old) = self.table.find(hash, |e| e.read().0 == k) else {
            return;
        };
        let new = self.alloc((k, old.read().1.wrapping_add(1)));
        let e = self
            .table
            .find_mut(hash, |&e| e == old)
            .expect("found above");
        *e = new;
        self.release(old);
    }
    fn retire_through_epoch(&mut self) {
        self.epoch = true;
    }
    fn unlinked(&mut self) -> Option<&mut Vec<Slot>> {
        Some(&mut self.retired)
    }
    fn reclaimed(&mut self, slots: Vec<Slot>) {
        self.free.extend(slots);
    }
}

/// The key of a dead entry: lookups compare keys, so they skip it, and no workload key is it
/// (keys are `key(rank)` for ranks far below the one that would give it). The entry's value then
/// holds its retirement's id.
const DEAD: u64 = u64::MAX;

/// A dead entry waiting for reclamation: its hash (the probe path that finds it) and its id.
pub struct Dead {
    hash: u64,
    id: u64,
}

/// Entries inline, as [`InlineShard`], with the two things lock-free readers of inline entries
/// force on the writer even before an epoch (`FlatEpochMap`'s slot protocol):
///
/// 1. A replace or update never overwrites the entry in place (a reader may be reading it, not
///    atomically): the new entry is inserted into another slot and the old one unlinked.
/// 2. An unlinked entry's slot is not free at once (its readers have not left yet): the entry stays
///    in the table as a dead one (key [`DEAD`]) that lookups skip, until it is reclaimed by a
///    removal from the table: at once in batches of [`EPOCH_BATCH`] (`floor-flat`), or in those
///    batches after the epoch's grace period (`floor-flat-epoch`, `floor-flat-pinned`).
///
/// Growth is the flat map's too: when the table is full, live and dead entries counted, it is
/// rebuilt (twice the size if the live ones fill half of it, else at its size) with the live
/// entries copied and the dead ones left behind; the old table is freed at once (`floor-flat`) or
/// after the grace period (the epoch models: a reader may still be in it), and dead entries not
/// yet reclaimed go with it. hashbrown's own growth, which would carry dead entries along and free
/// the old table at once, never runs (the table is rebuilt before it is full).
///
/// What the model leaves out: the flat map's dead slots are skipped by their control word where a
/// dead entry here is compared (the same line the lookup reads anyway), and reclamation here finds
/// a dead entry by probing its hash where the map's job goes to the slot directly.
#[derive(Default)]
pub struct FlatShard {
    table: hashbrown::HashTable<(u64, u64)>,
    /// `table`'s capacity when it was built (tombstones left by reclamation lower
    /// `HashTable::capacity` later).
    built_for: usize,
    /// Dead entries in `table`.
    dead: usize,
    /// Dead entries not yet reclaimed (`floor-flat`) or handed to the epoch.
    retired: Vec<Dead>,
    /// The id of the next retirement; ids below `first_id` are of replaced tables.
    next_id: u64,
    first_id: u64,
    /// The table the last rebuild replaced, for the epoch models to free after the grace period.
    replaced: Option<hashbrown::HashTable<(u64, u64)>>,
    epoch: bool,
}

impl FlatShard {
    /// Makes room for one more entry, rebuilding the table when it is full.
    fn reserve_one(&mut self, hasher: &Hasher) {
        if self.table.len() < self.table.capacity() {
            return;
        }
        let live = self.table.len() - self.dead;
        let capacity = if live * 2 >= self.built_for {
            (self.built_for * 2).max(3)
        } else {
            self.built_for
        };
        let old = std::mem::replace(
            &mut self.table,
            hashbrown::HashTable::with_capacity(capacity),
        );
        self.built_for = self.table.capacity();
        for &e in old.iter().filter(|e| e.0 != DEAD) {
            self.table
                .insert_unique(hasher.hash_one(e.0), e, |e| hasher.hash_one(e.0));
        }
        self.dead = 0;
        self.retired.clear();
        self.first_id = self.next_id;
        if self.epoch {
            self.replaced = Some(old);
        }
    }

    /// Marks `e` dead (its slot stays taken until reclaimed) and queues it for reclamation.
    fn unlink(e: &mut (u64, u64), hash: u64, next_id: &mut u64, retired: &mut Vec<Dead>) {
        *e = (DEAD, *next_id);
        retired.push(Dead { hash, id: *next_id });
        *next_id += 1;
    }

    /// After an unlink: without an epoch, a full batch is reclaimed at once.
    fn retired_one(&mut self) {
        self.dead += 1;
        if !self.epoch && self.retired.len() >= EPOCH_BATCH {
            let batch = std::mem::take(&mut self.retired);
            self.reclaim(&batch);
            self.retired = batch;
            self.retired.clear();
        }
    }

    /// Removes the batch's dead entries from the table, freeing their slots.
    fn reclaim(&mut self, batch: &[Dead]) {
        for d in batch.iter().filter(|d| d.id >= self.first_id) {
            let Ok(e) = self.table.find_entry(d.hash, |e| *e == (DEAD, d.id)) else {
                unreachable!("a dead entry of the current table stays in it until reclaimed");
            };
            e.remove();
            self.dead -= 1;
        }
    }

    /// Inserts `(k, v)` into a free slot, unlinking `k`'s live entry if there is one; with
    /// `v == None`, adds 1 to the live entry's value, and does nothing if there is none.
    fn put(&mut self, hasher: &Hasher, hash: u64, k: u64, v: Option<u64>) {
        debug_assert_ne!(k, DEAD, "a workload key is the dead marker");
        self.reserve_one(hasher);
        let v = match self.table.find_mut(hash, |e| e.0 == k) {
            Some(e) => {
                let v = v.unwrap_or(e.1.wrapping_add(1));
                Self::unlink(e, hash, &mut self.next_id, &mut self.retired);
                self.retired_one();
                v
            }
            None => match v {
                Some(v) => v,
                None => return,
            },
        };
        self.table
            .insert_unique(hash, (k, v), |e| hasher.hash_one(e.0));
    }
}

impl FloorShard for FlatShard {
    type Retired = Dead;
    fn get(&mut self, hash: u64, k: u64) -> Option<u64> {
        self.table.find(hash, |e| e.0 == k).map(|e| e.1)
    }
    fn insert(&mut self, hasher: &Hasher, hash: u64, k: u64, v: u64) {
        self.put(hasher, hash, k, Some(v));
    }
    fn remove(&mut self, hash: u64, k: u64) {
        if let Some(e) = self.table.find_mut(hash, |e| e.0 == k) {
            Self::unlink(e, hash, &mut self.next_id, &mut self.retired);
            self.retired_one();
        }
    }
    fn update(&mut self, hasher: &Hasher, hash: u64, k: u64) {
        self.put(hasher, hash, k, None);
    }
    fn retire_through_epoch(&mut self) {
        self.epoch = true;
    }
    fn unlinked(&mut self) -> Option<&mut Vec<Dead>> {
        Some(&mut self.retired)
    }
    fn reclaimed(&mut self, batch: Vec<Dead>) {
        self.reclaim(&batch);
    }
    fn replaced(&mut self) -> Option<Box<dyn Send>> {
        self.replaced.take().map(|t| Box::new(t) as Box<dyn Send>)
    }
}
