//! [`Pinned::scan`] and [`ScanCursor`]: a resumable walk in small steps, like Redis `SCAN`.
//!
//! **Keys are points, the cursor sweeps.** Give every key the point `p = reverse_bits(hash)`, a
//! 64-bit fraction of the shard. In a table of `2^n` buckets the key's home bucket is
//! `hash & (2^n - 1)`, whose bits reversed are exactly the top `n` bits of `p`: home bucket `i` holds
//! the keys whose points lie in one dyadic interval of width `2^(64 - n)`, and the intervals of all
//! buckets tile the shard. A scan visits buckets in the order of their intervals, and its cursor is
//! the end of the last interval visited: every key whose point is below it has been returned.
//! Visiting the bucket whose interval contains the cursor returns every key of that interval,
//! then moves the cursor to the interval's end, so the invariant holds whatever the table's size
//! at each call:
//!
//! * after **growth** the intervals are finer and the one containing the cursor starts exactly at
//!   it: nothing is skipped and nothing repeated;
//! * after a **shrink** they are coarser and the one containing the cursor may start before it:
//!   keys between that start and the cursor are returned again (allowed: "at least once").
//!
//! This is Redis' reverse-binary cursor (`dictScan`), stated on the reversed bits: the cursor is
//! stored reversed, so advancing it is `(position | low bits) + 1`, and a shard is done when that
//! overflows. Shards are scanned one after another (a key's shard never changes).
//!
//! **Visiting a home bucket** returns every entry whose home it is, wherever it sits. The table is
//! open-addressed with F14-style overflow counts: an entry whose home is `b` sits in `b`, or in
//! `b + 1, b + 2, ...` past full buckets whose counts it raised. So the visit reads `b`, then walks
//! on while the bucket just read has a non-zero count (at most the table size), keeping entries
//! whose hash's home is `b`. Hashing is skipped in `b` itself when bucket `b - 1`'s count is 0: an
//! entry sitting in `b` with another home would have passed through `b - 1` and raised it. `b - 1`
//! is loaded after `b`, so the count is at least the one stored before any entry we saw in `b`; a
//! race can only make the visit return an extra entry (one that another visit returns too), never
//! drop one.
//!
//! Everything is read through the readers' `Acquire` loads (`Table::load_ctrl`, `load_entry`),
//! under the `Pinned`'s guard: no lock, no shared-memory write, no new atomic.

use std::hash::{BuildHasher, Hash};

use crate::bucket::Control;
use crate::entry::Entry;
use crate::layout::Layout;
use crate::pinned::Pinned;
use crate::table::Table;

/// Where a [`Pinned::scan`] resumes: a plain value the caller keeps between calls (a CLOCK hand,
/// an incremental expiry sweep).
///
/// [`ScanCursor::default()`] starts a scan; each call returns the cursor to pass next, or `None`
/// once the scan is complete. A cursor stays valid across any number of writes, growths, shrinks
/// and clears between calls (see [`Pinned::scan`] for what is guaranteed). A cursor from another
/// map is just a position: it ends the scan at once if its shard index is not below this map's
/// [`shard_count`](crate::EpochMap::shard_count), and otherwise resumes from that position.
///
/// For storage it converts to and from a `u64` ([`to_u64`](Self::to_u64),
/// [`from_u64`](Self::from_u64), and `From` both ways), e.g. to share a hand between threads in
/// an `AtomicU64`. The conversion is exact for tables of up to 2^48 buckets per shard (16 PiB of
/// buckets, beyond any machine); beyond that it rounds the position down, so a scan resumed from
/// it may return some entries again, and never skips one.
///
/// ```
/// use epochmap::{EpochMap, ScanCursor};
///
/// let map: EpochMap<u64, u64> = (0..100).map(|i| (i, i)).collect();
/// let pinned = map.pin();
/// let (_, next) = pinned.scan(ScanCursor::default(), 4);
/// let next = next.unwrap();
/// let stored: u64 = next.into();
/// assert_eq!(ScanCursor::from(stored), next);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScanCursor {
    /// The shard being scanned.
    shard: u16,
    /// The end of the last visited interval of that shard, as a 64-bit fraction of the shard (the
    /// reversed bucket cursor; see the module docs). 0 at the start of a shard.
    position: u64,
}

impl ScanCursor {
    /// The cursor as one `u64`: the shard index in the top 16 bits, the position's top 48 bits
    /// below. Exact for tables of up to 2^48 buckets (see the type's docs).
    ///
    /// ```
    /// use epochmap::ScanCursor;
    ///
    /// assert_eq!(ScanCursor::default().to_u64(), 0);
    /// assert_eq!(ScanCursor::from_u64(12345).to_u64(), 12345);
    /// ```
    pub const fn to_u64(self) -> u64 {
        ((self.shard as u64) << 48) | (self.position >> 16)
    }

    /// The cursor that [`to_u64`](Self::to_u64) encoded. Every `u64` is a valid cursor: one whose
    /// shard index is not below a map's shard count ends that map's scan at once.
    ///
    /// ```
    /// use epochmap::{EpochMap, ScanCursor};
    ///
    /// let map: EpochMap<u8, u8> = EpochMap::builder().shards(4).build();
    /// map.insert(1, 1);
    /// let foreign = ScanCursor::from_u64(u64::MAX); // shard 65535 of a bigger map
    /// assert_eq!(map.pin().scan(foreign, 10), (vec![], None));
    /// ```
    pub const fn from_u64(value: u64) -> Self {
        ScanCursor {
            shard: (value >> 48) as u16,
            position: value << 16,
        }
    }
}

impl From<ScanCursor> for u64 {
    /// [`ScanCursor::to_u64`].
    fn from(cursor: ScanCursor) -> u64 {
        cursor.to_u64()
    }
}

impl From<u64> for ScanCursor {
    /// [`ScanCursor::from_u64`].
    fn from(value: u64) -> ScanCursor {
        ScanCursor::from_u64(value)
    }
}

impl<K, V, S, L: Layout<K, V>> Pinned<'_, K, V, S, L>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// Visits at most `budget` home buckets from `cursor` and returns the entries found there,
    /// with the cursor to resume from (`None` when the scan is complete). Lock-free, like
    /// [`get`](Self::get): it reads under this `Pinned`'s guard, takes no lock and writes no
    /// shared memory. Start with [`ScanCursor::default()`]; the cursor is a plain value, so each
    /// call may use a different `Pinned` (pin per call to let memory be reclaimed in between).
    ///
    /// **Guarantee** (Redis `SCAN`'s): every entry present for the whole scan (from the first
    /// call to the one returning `None`) is returned at least once, even if the tables grow or
    /// shrink between or during the calls. An entry may be returned more than once (after a
    /// shrink, or when it raced a write), and entries inserted, replaced or removed during the scan
    /// may or may not be returned; a replaced key is returned with its old or new value. After a
    /// [`clear`](crate::EpochMap::clear) during a scan nothing breaks: the scan goes on over what
    /// the map holds from then on (the entries before the clear were not present throughout).
    ///
    /// **Budget**: one unit per home bucket visited, whether or not it holds anything; each call
    /// visits at least one bucket when `budget >= 1`. A visit also reads the buckets its entries
    /// overflowed into (with a well-mixed hash rarely more than one), which cost no budget. A
    /// shard that is empty (`len` 0) when the scan reaches it is skipped at no cost, so an empty
    /// map finishes in one call, and the returned cursor never points into a shard that was empty
    /// at the end of the call. A full scan costs about [`capacity`](crate::EpochMap::capacity)`/
    /// 5` units. With a degenerate hash (every key in one probe chain) each visit walks the chain:
    /// O(len) per bucket, still correct.
    ///
    /// **`budget = 0`** visits nothing and returns `(vec![], Some(cursor))` (or `None` for a
    /// cursor past this map's last shard): a loop that passes 0 never ends.
    ///
    /// **Cursors**: a cursor from an earlier table size is valid by design. A cursor whose shard
    /// index is not below [`shard_count`](crate::EpochMap::shard_count) (e.g. from another map)
    /// returns `(vec![], None)`.
    ///
    /// Removing what a scan found while this `Pinned` is held is fine (e.g. with
    /// [`EpochMap::remove_if`](crate::EpochMap::remove_if)): the references stay valid and keep
    /// reading the removed entries' keys and values, freed only after this `Pinned` is dropped,
    /// and the scan resumes correctly from the returned cursor.
    ///
    /// # Panics
    /// If `K`'s `Hash` panics (the visit hashes entries found outside their bucket's trusted
    /// range). No lock is held and nothing is left changed.
    ///
    /// ```
    /// use epochmap::{EpochMap, ScanCursor};
    /// use std::collections::HashSet;
    ///
    /// let map: EpochMap<u64, u64> = (0..1000).map(|i| (i, i)).collect();
    /// let mut seen = HashSet::new();
    /// let mut cursor = ScanCursor::default();
    /// loop {
    ///     let pinned = map.pin();
    ///     let (found, next) = pinned.scan(cursor, 16);
    ///     for (k, v) in found {
    ///         if k % 10 == 0 {
    ///             map.remove_if(k, |_, current| current == v); // expire while scanning
    ///         }
    ///         seen.insert(*k);
    ///     }
    ///     drop(pinned);
    ///     map.insert(1000 + seen.len() as u64, 0); // writes between calls are fine
    ///     match next {
    ///         Some(next) => cursor = next,
    ///         None => break,
    ///     }
    /// }
    /// assert!((0..1000).all(|k| seen.contains(&k)));
    /// assert!(map.pin().get(&10).is_none());
    /// ```
    pub fn scan(&self, cursor: ScanCursor, budget: usize) -> (Vec<(&K, &V)>, Option<ScanCursor>) {
        let shards = &self.map.shards;
        let mut shard = usize::from(cursor.shard);
        let mut position = cursor.position;
        let mut out = Vec::new();
        if shard >= shards.len() {
            return (out, None);
        }
        if budget == 0 {
            return (out, Some(cursor));
        }
        let mut left = budget;
        loop {
            // `len` is a statistic (`Relaxed`), but an entry present throughout keeps it above 0.
            while shard < shards.len() && shards[shard].len() == 0 {
                shard += 1;
                position = 0;
            }
            if shard == shards.len() {
                return (out, None);
            }
            if left == 0 {
                let shard = u16::try_from(shard).expect("MAX_SHARDS is 65536");
                return (out, Some(ScanCursor { shard, position }));
            }
            let table = shards[shard].current(&self.guard);
            let mask = table.bucket_count() - 1;
            // Below the `n` bits of a `2^n`-bucket table: what one visit advances past.
            let low = u64::MAX >> mask.count_ones();
            loop {
                // The home bucket whose interval contains `position`: its top `n` bits, reversed.
                let home = position.reverse_bits() as usize & mask;
                // SAFETY: `table` was loaded under `self.guard`, which lives as long as `self`.
                unsafe { self.visit(table, home, &mut out) };
                left -= 1;
                match (position | low).checked_add(1) {
                    Some(next) => position = next,
                    None => {
                        shard += 1;
                        position = 0;
                        break;
                    }
                }
                if left == 0 {
                    break;
                }
            }
        }
    }

    /// Pushes every entry of `table` whose home bucket is `home` (see the module docs).
    ///
    /// # Safety
    /// `table` was loaded under `self.guard`.
    unsafe fn visit<'g>(
        &'g self,
        table: &'g Table<K, V, L>,
        home: usize,
        out: &mut Vec<(&'g K, &'g V)>,
    ) {
        let mask = table.bucket_count() - 1;
        let ctrl = table.load_ctrl(home);
        // Loaded after `home`'s word: an entry we saw in `home` that came from another home raised
        // this count before its tag was published, so 0 means every entry seen in `home` is home.
        let trusted = mask == 0 || table.load_ctrl(home.wrapping_sub(1) & mask).overflow() == 0;
        // SAFETY: forwarded from this function's contract.
        unsafe { self.collect(table, home, ctrl, home, trusted, out) };
        let mut overflow = ctrl.overflow();
        let mut index = home;
        // Bounded by the table size, like `find_past`: saturated counts cannot make it loop.
        for _ in 0..mask {
            if overflow == 0 {
                break;
            }
            index = (index + 1) & mask;
            let ctrl = table.load_ctrl(index);
            overflow = ctrl.overflow();
            // SAFETY: as above.
            unsafe { self.collect(table, index, ctrl, home, false, out) };
        }
    }

    /// Pushes the entries of bucket `index` (whose control word read `ctrl`) whose home is `home`
    /// (all of them if `trusted`).
    ///
    /// # Safety
    /// As for [`visit`](Self::visit).
    unsafe fn collect<'g>(
        &'g self,
        table: &'g Table<K, V, L>,
        index: usize,
        ctrl: Control,
        home: usize,
        trusted: bool,
        out: &mut Vec<(&'g K, &'g V)>,
    ) {
        for slot in ctrl.full() {
            // SAFETY: `table` and its entries live as long as `self.guard` (the contract).
            let entry: Option<&'g Entry<K, V>> = unsafe { table.load_entry(index, slot) };
            if let Some(entry) = entry {
                if trusted || table.is_home(self.map.hash(&entry.key), home) {
                    out.push((&entry.key, &entry.value));
                }
            }
        }
    }
}
