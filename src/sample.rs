//! [`Pinned::sample`]: a few entries chosen at random, the basis of sampled eviction.
//!
//! Uniform over entries, whatever the shard sizes, in O(n + shards) expected time without walking
//! the map:
//!
//! 1. **Shard by weight.** A shard is drawn with probability proportional to its `len` (prefix sums
//!    over the shards' lengths), so a shard holding 10x the entries is drawn 10x as often.
//! 2. **Entry by rejection, within that shard.** A uniform bucket of the shard's table and a uniform
//!    `u` in `0..SLOTS`; the draw is accepted if `u` is below the number of full slots the bucket's
//!    control word shows, and then takes the `u`-th full slot. Each (bucket, full slot) pair has the
//!    same chance, `1 / (buckets * SLOTS)`, so an accepted draw is uniform over the shard's
//!    entries. A rejected draw retries *in the same shard*: re-drawing the shard instead would
//!    favour shards whose tables are fuller.
//! 3. **Distinct.** Draws are made with replacement and an entry already taken (same address) is
//!    drawn again: each new entry is then uniform over those not yet taken, which is uniform
//!    sampling without replacement.
//!
//! When `n` is at least half the map's length, duplicates would make the draws slow (a coupon
//! collector), so the map is walked once instead and `n` of the entries are picked by a partial
//! Fisher-Yates shuffle: exactly uniform, and O(len + buckets) = O(n) for tables that are not
//! thinned out.
//!
//! A very sparse table (many removals and no `shrink_to_fit`) makes rejection slow, so each draw
//! tries [`ATTEMPTS`] times and then falls back to the first full slot at or after a random
//! bucket. That fallback is biased: an entry after a long run of empty buckets is more likely to
//! be picked than one in a dense run. With the load factor between 3/8 (just grown) and 3/4 a
//! draw is rejected with probability at most 5/8, so the fallback is reached with probability
//! below `(5/8)^ATTEMPTS`, about 3e-7: only sparse tables see it.
//!
//! Readers may not read a table's summary bitmap (writers only), so everything here goes through
//! the same `Acquire` loads of control words and slots that `get` uses; no new atomics.

use std::collections::HashSet;

use crate::bucket::SLOTS;
use crate::entry::Entry;
use crate::layout::Layout;
use crate::pinned::Pinned;
use crate::table::Table;

/// Rejection attempts per draw before the forward fallback (see the module docs).
const ATTEMPTS: usize = 32;

/// Up to this many taken entries are deduplicated by a linear search, beyond it by a `HashSet`.
const LINEAR_DEDUP: usize = 32;

/// SplitMix64: one `u64` of state, good enough statistically for sampling, and deterministic for
/// a seed (no `rand` dependency in the library).
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`) by multiply-and-shift: its bias is below `n / 2^64`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The entries already taken, by address.
enum Taken {
    Few(Vec<usize>),
    Many(HashSet<usize>),
}

impl Taken {
    /// Records `addr`; false if it was already taken.
    fn insert(&mut self, addr: usize) -> bool {
        match self {
            Taken::Few(v) if v.contains(&addr) => false,
            Taken::Few(v) if v.len() < LINEAR_DEDUP => {
                v.push(addr);
                true
            }
            Taken::Few(v) => {
                let mut set: HashSet<usize> = v.drain(..).collect();
                set.insert(addr);
                *self = Taken::Many(set);
                true
            }
            Taken::Many(set) => set.insert(addr),
        }
    }
}

/// One uniform entry of `table`, or `None` if its draws and the fallback found nothing (the table
/// is empty, or emptied under us).
///
/// # Safety
/// `table` was loaded under a guard that outlives `'g`.
unsafe fn draw<'g, K, V, L: Layout<K, V>>(
    table: &'g Table<K, V, L>,
    rng: &mut SplitMix,
) -> Option<&'g Entry<K, V>> {
    let buckets = table.bucket_count();
    for _ in 0..ATTEMPTS {
        let bucket = rng.below(buckets);
        let u = rng.below(SLOTS);
        let full = full_slots(table, bucket);
        if u < full.count_ones() as usize {
            // SAFETY: forwarded from this function's contract.
            if let Some(entry) = unsafe { table.load_entry(bucket, nth_set_bit(full, u)) } {
                return Some(entry);
            }
        }
    }
    // Sparse: the first full slot at or after a random bucket (biased; see the module docs).
    let start = rng.below(buckets);
    for step in 0..buckets {
        let bucket = (start + step) & (buckets - 1);
        let full = full_slots(table, bucket);
        let count = full.count_ones() as usize;
        if count != 0 {
            let slot = nth_set_bit(full, rng.below(count));
            // SAFETY: forwarded from this function's contract.
            if let Some(entry) = unsafe { table.load_entry(bucket, slot) } {
                return Some(entry);
            }
        }
    }
    None
}

/// The full slots of `bucket` (below the bucket count) as a bit set, bit `i` for slot `i`.
fn full_slots<K, V, L: Layout<K, V>>(table: &Table<K, V, L>, bucket: usize) -> u8 {
    table
        .load_ctrl(bucket)
        .full()
        .fold(0u8, |bits, slot| bits | (1 << slot))
}

/// The position of the `n`-th (from 0) set bit of `bits`, which has more than `n` set bits.
fn nth_set_bit(mut bits: u8, n: usize) -> usize {
    for _ in 0..n {
        bits &= bits - 1;
    }
    bits.trailing_zeros() as usize
}

impl<K, V, S, L: Layout<K, V>> Pinned<'_, K, V, S, L> {
    /// Up to `n` distinct entries chosen at random, close to uniformly over all entries whatever
    /// the shard sizes: the basis of sampled LRU/LFU eviction. Lock-free, like [`get`](Self::get):
    /// it reads under this `Pinned`'s guard, takes no lock and writes no shared memory.
    ///
    /// * **Cost**: O(n + shards) expected, without walking the map: a shard is drawn by its
    ///   length, then an entry of it by rejection over its table's slots (one control-word load
    ///   per attempt, accepted with probability = the table's fill: 3/8 to 3/4 for a table that
    ///   grew to its contents, less for one reserved far ahead of them or thinned by removals).
    ///   When `n` is at least half of [`len`](Self::len) the map is walked once instead and `n`
    ///   entries picked from it (uniform, O(len + buckets)).
    /// * **Result**: `min(n, len)` entries when no other thread writes, fewer if entries vanish
    ///   during the call. (The draws are capped at `8n + 64`, so a map emptied meanwhile cannot
    ///   keep the call looping; with `n < len / 2` and no writers, each draw finds a new entry
    ///   with probability above 1/2, and hitting the cap has probability below 1e-14.) Distinct
    ///   entries (no entry twice); a key removed and re-inserted by another thread during the
    ///   call may appear as both its old and new entry.
    /// * **Deterministic**: the same `seed` on the same map contents and table layout gives the
    ///   same entries in the same order; vary the seed between calls.
    /// * **Bias**: uniform (each entry with the same probability, drawn without replacement) up
    ///   to the generator's quality, except on a very sparse table (fill far below 3/8: thinned
    ///   by removals with no [`shrink_to_fit`](crate::EpochMap::shrink_to_fit), or reserved far
    ///   ahead): a draw that misses 32 times in a row takes an entry of the first occupied bucket
    ///   after a random one, which favours entries that follow long empty runs.
    /// * **`n = 0`** returns an empty `Vec`.
    ///
    /// Removing what a sample found while this `Pinned` is held is fine (e.g. with
    /// [`EpochMap::remove_if`](crate::EpochMap::remove_if), which checks the entry is still the
    /// one sampled): the references stay valid and keep reading the removed entry's key and
    /// value, which are freed only after this `Pinned` is dropped.
    ///
    /// ```
    /// use epochmap::EpochMap;
    ///
    /// let map: EpochMap<u64, u64> = (0..1000).map(|i| (i, i * 2)).collect();
    /// let pinned = map.pin();
    /// let picked = pinned.sample(5, 42);
    /// assert_eq!(picked.len(), 5);
    /// for (k, v) in &picked {
    ///     assert_eq!(**v, **k * 2);
    /// }
    /// // Evict the first sampled key if it still holds the sampled value.
    /// let (k, v) = picked[0];
    /// assert!(map.remove_if(k, |_, current| current == v).is_some());
    /// assert_eq!(*v, *k * 2); // still readable while `pinned` lives
    /// assert_eq!(map.len(), 999);
    /// ```
    pub fn sample(&self, n: usize, seed: u64) -> Vec<(&K, &V)> {
        if n == 0 {
            return Vec::new();
        }
        let mut rng = SplitMix::new(seed);
        let shards = &self.map.shards;
        // Prefix sums of the shard lengths (statistics, `Relaxed`): shard `i` holds positions
        // `ends[i - 1]..ends[i]` of a virtual concatenation of all entries.
        let mut total = 0usize;
        let ends: Vec<usize> = shards
            .iter()
            .map(|shard| {
                total += shard.len();
                total
            })
            .collect();
        if total == 0 {
            return Vec::new();
        }
        if n.saturating_mul(2) >= total {
            return self.sample_by_walk(n, &mut rng);
        }
        let mut out = Vec::with_capacity(n);
        let mut taken = Taken::Few(Vec::new());
        // Bounded so that a map emptied under us (lengths are read once) ends the call: with
        // n < total / 2, a draw finds a new entry with probability above 1/2.
        let mut draws = n.saturating_mul(8).saturating_add(64);
        while out.len() < n && draws > 0 {
            draws -= 1;
            let position = rng.below(total);
            let shard = ends.partition_point(|&end| end <= position);
            let table = shards[shard].current(&self.guard);
            // SAFETY: `table` was loaded under `self.guard`, which lives as long as `self`.
            if let Some(entry) = unsafe { draw(table, &mut rng) } {
                if taken.insert(entry as *const Entry<K, V> as usize) {
                    out.push((&entry.key, &entry.value));
                }
            }
        }
        out
    }

    /// `n` of the entries (all of them if fewer), by one walk and a partial Fisher-Yates shuffle.
    fn sample_by_walk(&self, n: usize, rng: &mut SplitMix) -> Vec<(&K, &V)> {
        let mut all: Vec<(&K, &V)> = self.iter().collect();
        let take = n.min(all.len());
        for i in 0..take {
            let j = i + rng.below(all.len() - i);
            all.swap(i, j);
        }
        all.truncate(take);
        all
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;

    #[test]
    fn nth_set_bit_counts_from_the_lowest() {
        assert_eq!(nth_set_bit(0b1011_0100, 0), 2);
        assert_eq!(nth_set_bit(0b1011_0100, 1), 4);
        assert_eq!(nth_set_bit(0b1011_0100, 3), 7);
        assert_eq!(nth_set_bit(0b0000_0001, 0), 0);
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        let mut rng = SplitMix::new(7);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn taken_switches_to_a_set_and_still_rejects_duplicates() {
        let mut taken = Taken::Few(Vec::new());
        for a in 0..100 {
            assert!(taken.insert(a));
        }
        assert!(matches!(taken, Taken::Many(_)));
        for a in 0..100 {
            assert!(!taken.insert(a));
        }
    }
}
