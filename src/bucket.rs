//! One bucket: seven slot pointers and the control word that filters them. A table keeps the two
//! apart (see `table.rs`): the control words in a dense array of their own, eight bytes per
//! bucket, and the slot pointers in one cache line per bucket.
//!
//! ```text
//! control word (u64):  byte 0..=6  tag of slot 0..=6 (0 = empty, else 0x80 | 7 hash bits)
//!                      byte 7      bit 7: OCCUPIED (the inverted "known empty" mark bit)
//!                                  bits 0..=6: overflow count, saturating at 127
//! slot line (64 B):    7 x AtomicPtr<Entry<K, V>>, one byte of placement per slot
//! ```
//!
//! * **Tags** let a probe compare keys only where seven hash bits already match.
//! * **The mark bit** says whether the bucket is known to be empty. It is stored inverted
//!   (`OCCUPIED`) so that an all-zero bucket is a valid empty bucket, which lets a fresh table come
//!   from one `alloc_zeroed` call instead of initialising each bucket.
//!   It lives in the same word as the tags, so the one `Release` store that changes the tags changes
//!   the mark in the same instant: the two can never disagree.
//! * **The overflow count** is the number of entries whose probe passed *through* this bucket
//!   because it was full when they were inserted (F14's scheme). A lookup stops at the first bucket
//!   without a match whose count is zero. Removal decrements the counts along the removed entry's
//!   path, so no tombstones build up; only a count that reached 127 sticks until the next rebuild.

use crate::entry::Entry;
use crate::sync::{AtomicPtr, AtomicU8, Ordering};

/// Slots per bucket: seven pointers fill a 64-byte line, and seven tags plus the mark bit and the
/// overflow count fill one control word.
pub(crate) const SLOTS: usize = 7;

const LOW_BITS: u64 = 0x0001_0101_0101_0101;
const HIGH_BITS: u64 = 0x0080_8080_8080_8080;
const BYTE_ONES: u64 = 0x0101_0101_0101_0101;
const SLOT_BITS: u32 = (1 << SLOTS) - 1;
const OCCUPIED: u64 = 1 << 63;
const OVERFLOW_SHIFT: u32 = 56;
const OVERFLOW_MASK: u64 = 0x7f << OVERFLOW_SHIFT;
/// The largest overflow count; a count that reaches it is never decremented again.
pub(crate) const OVERFLOW_MAX: u64 = 0x7f;

/// The tag stored for a hash: seven hash bits that neither the shard index (top 16 bits at most)
/// nor the bucket index (low bits) use, with the high bit set so an occupied slot is never 0.
#[inline]
pub(crate) fn tag_of(hash: u64) -> u8 {
    ((hash >> 40) as u8) | 0x80
}

/// A snapshot of a bucket's control word, decoded without touching the slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Control(pub(crate) u64);

impl Control {
    /// The slots whose tag equals `tag`: every candidate a lookup must confirm by comparing keys.
    ///
    /// On x86_64 this is one SSE2 byte compare (exact, and short, which matters: a lookup's
    /// instruction count decides how many lookups' cache misses the CPU can overlap).
    #[inline]
    pub(crate) fn matches(self, tag: u8) -> SlotBits {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_cvtsi64_si128, _mm_movemask_epi8};
            // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are always available.
            let bits = unsafe {
                let ctrl = _mm_cvtsi64_si128(self.0 as i64);
                // The tag in every byte, by one multiply: cheaper than a byte shuffle.
                let tags = _mm_cvtsi64_si128((u64::from(tag) * BYTE_ONES) as i64);
                _mm_movemask_epi8(_mm_cmpeq_epi8(ctrl, tags))
            };
            // Byte 7 holds the mark bit and overflow count, not a tag; bytes 8.. are zero padding.
            SlotBits(bits as u32 & SLOT_BITS)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.matches_swar(tag)
        }
    }

    /// [`matches`](Self::matches) in portable arithmetic: the classic SWAR zero-byte test. It can
    /// report a false positive in a byte just above a true match, which is harmless because every
    /// candidate is confirmed by comparing keys.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline]
    pub(crate) fn matches_swar(self, tag: u8) -> SlotBits {
        let x = self.0 ^ (LOW_BITS * u64::from(tag));
        let hits = x.wrapping_sub(LOW_BITS) & !x & HIGH_BITS;
        SlotBits(SlotMask(hits).fold(0, |bits, slot| bits | 1 << slot))
    }

    /// The tag of `slot` (0 if the slot is free).
    #[inline]
    pub(crate) fn tag(self, slot: usize) -> u8 {
        (self.0 >> (8 * slot)) as u8
    }

    /// The slots whose tag is set, i.e. which hold an entry.
    #[inline]
    pub(crate) fn full(self) -> SlotMask {
        SlotMask(self.0 & HIGH_BITS)
    }

    /// The slots whose tag is set, bit `i` for slot `i` (the lookup path's form of
    /// [`full`](Self::full)): one SSE2 byte mask on x86_64.
    #[inline]
    pub(crate) fn full_bits(self) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_cvtsi64_si128, _mm_movemask_epi8};
            // SAFETY: SSE2 is part of the x86_64 baseline.
            let bits = unsafe { _mm_movemask_epi8(_mm_cvtsi64_si128(self.0 as i64)) };
            // Byte 7's high bit is the mark bit, not a tag.
            bits as u32 & SLOT_BITS
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.full().fold(0, |bits, slot| bits | 1 << slot)
        }
    }

    /// The first slot whose tag is zero, if any.
    #[inline]
    pub(crate) fn first_free(self) -> Option<usize> {
        SlotMask(!self.0 & HIGH_BITS).lowest()
    }

    /// The mark bit: true exactly while no slot of the bucket holds an entry.
    #[inline]
    pub(crate) fn known_empty(self) -> bool {
        self.0 & OCCUPIED == 0
    }

    /// How many entries probed past this bucket because it was full.
    #[inline]
    pub(crate) fn overflow(self) -> u64 {
        (self.0 & OVERFLOW_MASK) >> OVERFLOW_SHIFT
    }

    /// This word with the free `slot` given `tag` (non-zero): the bucket is then occupied.
    #[inline]
    pub(crate) fn with_new_tag(self, slot: usize, tag: u8) -> Control {
        debug_assert!(
            tag != 0 && (self.0 >> (8 * slot)) as u8 == 0,
            "slot {slot} is not free"
        );
        Control(self.0 | (u64::from(tag) << (8 * slot)) | OCCUPIED)
    }

    /// This word with `slot`'s tag cleared and the mark bit recomputed.
    #[inline]
    pub(crate) fn without_tag(self, slot: usize) -> Control {
        let rest = self.0 & !(0xff << (8 * slot));
        let occupied = if rest & HIGH_BITS == 0 { 0 } else { OCCUPIED };
        Control((rest & !OCCUPIED) | occupied)
    }

    /// This word with the overflow count stepped up or down by one; a saturated count stays.
    #[inline]
    pub(crate) fn with_overflow_step(self, up: bool) -> Control {
        let count = self.overflow();
        let next = match (up, count) {
            (_, OVERFLOW_MAX) => OVERFLOW_MAX,
            (true, c) => c + 1,
            // Saturating rather than asserting: only a key whose `Hash` changed while it was in the
            // map (a user bug) can walk a path it never raised, and that must not panic halfway
            // through a removal. Its lookups may then miss; nothing is freed or leaked wrongly.
            (false, c) => c.saturating_sub(1),
        };
        Control((self.0 & !OVERFLOW_MASK) | (next << OVERFLOW_SHIFT))
    }
}

/// A set of slots, one bit per slot at the high bit of the slot's control byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotMask(u64);

impl SlotMask {
    #[inline]
    pub(crate) fn lowest(self) -> Option<usize> {
        if self.0 == 0 {
            None
        } else {
            Some(self.0.trailing_zeros() as usize / 8)
        }
    }
}

impl Iterator for SlotMask {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let slot = self.lowest()?;
        self.0 &= self.0 - 1;
        Some(slot)
    }
}

/// A set of slots, bit `i` for slot `i`: the lookup path's form of [`SlotMask`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotBits(u32);

impl Iterator for SlotBits {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let slot = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(slot)
    }
}

/// A bucket's slot pointers and their [`Placement`]s: one cache line. All-zero bytes are valid
/// (null pointers, unknown placements), and a slot's pointer and placement mean something only
/// while the slot's tag in the control word is set.
#[repr(C, align(64))]
pub(crate) struct Slots<K, V> {
    pub(crate) ptrs: [AtomicPtr<Entry<K, V>>; SLOTS],
    /// Slot `i`'s [`Placement`] (the eighth byte is unused). Only the shard's lock holder or the
    /// table's exclusive owner reads or writes them (readers never do), so every access is
    /// `Relaxed`; one byte each, so recording one is a single byte store.
    pub(crate) placements: [AtomicU8; SLOTS + 1],
}

impl<K, V> Slots<K, V> {
    /// Null slots, for the loom build where atomics cannot be zero-initialised in bulk.
    pub(crate) fn empty() -> Self {
        Slots {
            ptrs: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            placements: std::array::from_fn(|_| AtomicU8::new(0)),
        }
    }

    /// Slot `slot`'s placement. Lock holder or owner only (see `placements`).
    #[inline]
    pub(crate) fn placement(&self, slot: usize) -> Placement {
        Placement(self.placements[slot].load(Ordering::Relaxed))
    }

    /// Records slot `slot`'s placement. Lock holder or owner only (see `placements`).
    #[inline]
    pub(crate) fn set_placement(&self, slot: usize, placement: Placement) {
        self.placements[slot].store(placement.0, Ordering::Relaxed);
    }
}

/// Where an entry sits relative to its hash, kept beside its slot pointer so that growth and
/// shrink can place it in the new table without reading its key (a dependent cache miss per
/// entry) or running its `Hash`.
///
/// ```text
/// bits 5..=7  displacement: how many buckets past its home bucket the entry sits (0..=6; 7 = unknown)
/// bits 0..=4  the hash bits above the table's bucket index, lowest first, ended by a marker bit:
///             `1xxxx` holds four bits, `01xxx` three, ..., `00001` none; `00000` is unknown
/// ```
///
/// A doubling consumes one bit (the new index bit) and a shrink gives the dropped index bits back
/// (up to four), so an entry is rehashed only after four doublings since its hash was last
/// computed, or if it sat seven or more buckets from home (at the 3/4 load factor, practically
/// never). Three displacement bits rather than two: with 0..=2 known, 1.1% of the entries moved
/// while a map grew by inserts sat further from home and were rehashed. All-zero is unknown, so
/// a zeroed slot line needs no initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement(pub(crate) u8);

/// Hash bits a placement holds above the bucket index when it is made from a full hash.
const PLACEMENT_BITS: u32 = 4;
const DISPLACEMENT_SHIFT: u32 = PLACEMENT_BITS + 1;
const DISPLACEMENT_UNKNOWN: usize = 7;

impl Placement {
    /// The placement of an entry with `hash` in a table of `2^log2` buckets, `displacement`
    /// buckets past its home.
    #[inline]
    pub(crate) fn new(hash: u64, log2: u32, displacement: usize) -> Placement {
        // `log2 < 64`: a table has fewer than 2^64 buckets.
        let above = hash.wrapping_shr(log2) as u8 & ((1 << PLACEMENT_BITS) - 1);
        Placement::with(1 << PLACEMENT_BITS | above, displacement)
    }

    /// `bits` (marker-ended, see the type docs) with `displacement`, saturated to "unknown".
    #[inline]
    fn with(bits: u8, displacement: usize) -> Placement {
        let d = displacement.min(DISPLACEMENT_UNKNOWN) as u8;
        debug_assert!(bits < 1 << DISPLACEMENT_SHIFT);
        Placement(bits | d << DISPLACEMENT_SHIFT)
    }

    /// The entry's home bucket and its hash bits above the index, for a table of `2^to` buckets,
    /// given that it sits in bucket `index` of a table of `2^from` buckets; `None` if this
    /// placement does not hold enough bits (the caller then hashes the key).
    #[inline]
    pub(crate) fn relocate(self, index: usize, from: u32, to: u32) -> Option<(usize, u8)> {
        let displacement = (self.0 >> DISPLACEMENT_SHIFT) as usize;
        let bits = self.0 & ((1 << DISPLACEMENT_SHIFT) - 1);
        if displacement == DISPLACEMENT_UNKNOWN || bits == 0 {
            return None;
        }
        let held = 7 - bits.leading_zeros(); // hash bits below the marker
        let home = index.wrapping_sub(displacement) & ((1usize << from) - 1);
        if to >= from {
            let gained = to - from;
            if gained > held {
                return None;
            }
            let next = usize::from(bits) & ((1 << gained) - 1);
            Some((home | next << from, bits >> gained))
        } else {
            // Shrinking: the index bits the new table drops become hash bits above its index,
            // below the ones already held; the highest held bits go if there is no room.
            let dropped = from - to;
            let values = u64::from(bits & !(1 << held)) << dropped | (home >> to) as u64;
            let keep = (held + dropped).min(PLACEMENT_BITS);
            let kept = (values & ((1 << keep) - 1)) as u8;
            Some((home & ((1 << to) - 1), 1 << keep | kept))
        }
    }

    /// How many buckets past its home the entry sits; 7 means 7 or more.
    #[inline]
    pub(crate) fn displacement(self) -> usize {
        (self.0 >> DISPLACEMENT_SHIFT) as usize
    }

    /// A placement holding `bits` (from [`relocate`](Self::relocate)) for an entry `displacement`
    /// buckets past its home.
    #[inline]
    pub(crate) fn relocated(bits: u8, displacement: usize) -> Placement {
        Placement::with(bits, displacement)
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_s_slot_pointers_are_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slots<u64, u64>>(), 64);
        assert_eq!(std::mem::align_of::<Slots<u64, u64>>(), 64);
    }

    #[test]
    fn a_zeroed_control_word_is_an_empty_bucket_with_no_overflow() {
        let c = Control(0);
        assert!(c.known_empty());
        assert_eq!(c.overflow(), 0);
        assert_eq!(c.first_free(), Some(0));
        assert_eq!(c.full().count(), 0);
    }

    #[test]
    fn setting_and_clearing_tags_keeps_the_mark_bit_exact() {
        let tag = tag_of(0xdead_beef_cafe_f00d);
        let c = Control(0).with_new_tag(3, tag);
        assert!(!c.known_empty());
        assert_eq!(c.full().collect::<Vec<_>>(), vec![3]);
        assert!(c.matches(tag).any(|s| s == 3));
        let c = c.with_new_tag(5, tag).without_tag(3);
        assert!(!c.known_empty());
        assert_eq!(c.full().collect::<Vec<_>>(), vec![5]);
        let c = c.without_tag(5);
        assert!(c.known_empty());
        assert_eq!(c, Control(0));
    }

    #[test]
    fn matches_finds_every_slot_with_the_tag() {
        let mut c = Control(0);
        for slot in 0..SLOTS {
            c = c.with_new_tag(slot, if slot % 2 == 0 { 0x9a } else { 0x81 });
        }
        let m: Vec<_> = c.matches(0x9a).collect();
        for slot in [0, 2, 4, 6] {
            assert!(m.contains(&slot));
        }
        assert_eq!(c.first_free(), None);
    }

    #[test]
    fn the_sse2_and_portable_tag_matches_agree_up_to_harmless_false_positives() {
        let mut seed = 0x1234_5678_9abc_def0_u64;
        for _ in 0..10_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut c = Control(seed & (OCCUPIED | OVERFLOW_MASK));
            for slot in 0..SLOTS {
                let byte = (seed >> (8 * slot)) as u8;
                // Few distinct tags, so matches are common.
                if byte & 1 == 1 {
                    c = c.with_new_tag(slot, 0x80 | (byte >> 5));
                }
            }
            for tag in 0x80..=0x87 {
                let exact: Vec<usize> = (0..SLOTS)
                    .filter(|&s| (c.0 >> (8 * s)) as u8 == tag)
                    .collect();
                assert_eq!(
                    c.matches(tag).collect::<Vec<_>>(),
                    exact,
                    "{c:?} tag {tag:#x}"
                );
                let swar: Vec<usize> = c.matches_swar(tag).collect();
                assert!(exact.iter().all(|s| swar.contains(s)), "{c:?} tag {tag:#x}");
            }
        }
    }

    /// Hashes spread over every bit position.
    fn hashes() -> impl Iterator<Item = u64> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        std::iter::repeat_with(move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed ^ (seed >> 29)
        })
        .take(2_000)
    }

    #[test]
    fn a_placement_finds_its_hash_s_home_through_every_doubling_it_has_bits_for() {
        for hash in hashes() {
            for log2 in [0, 1, 5, 12, 20] {
                let mask = (1usize << log2) - 1;
                for displacement in 0..=6 {
                    let index = (hash as usize).wrapping_add(displacement) & mask;
                    let placement = Placement::new(hash, log2, displacement);
                    for gained in 0..=PLACEMENT_BITS {
                        let to = log2 + gained;
                        let (home, _) = placement
                            .relocate(index, log2, to)
                            .expect("enough bits for this doubling");
                        assert_eq!(
                            home,
                            hash as usize & ((1 << to) - 1),
                            "{hash:#x} {log2}->{to}"
                        );
                    }
                    assert_eq!(
                        placement.relocate(index, log2, log2 + PLACEMENT_BITS + 1),
                        None
                    );
                }
            }
        }
    }

    #[test]
    fn relocated_placements_keep_following_the_hash_through_grows_and_shrinks() {
        // Each step moves the entry to a table of 2^sizes[i] buckets, as growth and shrink do.
        let sizes = [4, 6, 9, 3, 1, 5, 8, 2];
        for hash in hashes() {
            let mut log2 = 10;
            let mut index = hash as usize & ((1 << log2) - 1);
            let mut placement = Placement::new(hash, log2, 0);
            for &to in &sizes {
                let (home, bits) = match placement.relocate(index, log2, to) {
                    Some(found) => found,
                    // Out of bits: the map hashes the key again.
                    None => (
                        hash as usize & ((1 << to) - 1),
                        Placement::new(hash, to, 0).0,
                    ),
                };
                assert_eq!(
                    home,
                    hash as usize & ((1 << to) - 1),
                    "{hash:#x} {log2}->{to}"
                );
                placement = Placement::relocated(bits, 0);
                (log2, index) = (to, home);
            }
        }
    }

    #[test]
    fn a_shrink_turns_dropped_index_bits_into_bits_for_growing_back() {
        for hash in hashes() {
            let index = hash as usize & ((1 << 13) - 1);
            // No bits left above the index (every bit was spent on doublings).
            let spent = Placement::relocated(1, 0);
            let (home, bits) = spent
                .relocate(index, 13, 5)
                .expect("shrinking needs no bits");
            assert_eq!(home, hash as usize & 31);
            let (back, _) = Placement::relocated(bits, 0)
                .relocate(home, 5, 9)
                .expect("four of the eight dropped bits are kept");
            assert_eq!(back, hash as usize & 511);
            assert_eq!(Placement::relocated(bits, 0).relocate(home, 5, 10), None);
        }
    }

    #[test]
    fn unknown_placements_relocate_nowhere() {
        assert_eq!(Placement(0).relocate(3, 4, 5), None, "a zeroed slot line");
        let far = Placement::new(0, 4, 7);
        assert_eq!(
            far.relocate(3, 4, 5),
            None,
            "seven buckets or more from home"
        );
    }

    #[test]
    fn full_bits_names_exactly_the_tagged_slots() {
        let mut seed = 0x0f1e_2d3c_4b5a_6978_u64;
        for _ in 0..1_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut c = Control(seed & OVERFLOW_MASK);
            for slot in 0..SLOTS {
                if (seed >> (8 * slot + 3)) & 1 == 1 {
                    c = c.with_new_tag(slot, 0x80 | (seed >> (8 * slot)) as u8);
                }
            }
            let expected = c.full().fold(0, |bits, slot| bits | 1 << slot);
            assert_eq!(c.full_bits(), expected, "{c:?}");
        }
    }

    #[test]
    fn overflow_count_saturates_and_then_sticks() {
        let mut c = Control(0).with_new_tag(0, 0x80);
        for _ in 0..200 {
            c = c.with_overflow_step(true);
        }
        assert_eq!(c.overflow(), OVERFLOW_MAX);
        c = c.with_overflow_step(false);
        assert_eq!(c.overflow(), OVERFLOW_MAX);
        assert_eq!(c.full().collect::<Vec<_>>(), vec![0]);
        let d = Control(0)
            .with_overflow_step(true)
            .with_overflow_step(false);
        assert_eq!(d, Control(0));
    }
}
