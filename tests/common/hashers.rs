//! Hashers for exercising the map's probing under good, degenerate and hand-placed hashes.
//!
//! The map uses the hash's top bits (up to 16) for the shard, bits 40..=46 for the one-byte slot
//! tag, and the low bits for the home bucket. [`TestHasher::Identity`] lets a test place a `u64`
//! key precisely; [`TestHasher::Colliding`] sends every key to the same shard, tag and bucket.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hasher};

/// One `BuildHasher` type for every hashing behaviour the tests need, so a test body written once
/// runs against all of them (see [`crate::common::with_map`]).
#[derive(Clone, Debug)]
pub enum TestHasher {
    /// std's `RandomState` (SipHash, random keys): the well-mixed case.
    Random(RandomState),
    /// Every key hashes to this one value: the worst case, every lookup is a scan of one chain.
    Colliding(u64),
    /// A good hash with only the bits of `mask` kept: few distinct values, all in the same bit
    /// positions (e.g. a low-bits-only mask puts every key in shard 0 with one tag).
    Weak(u64),
    /// The hash is the last `u64` written (for `u64` keys: the key itself), so a test can choose
    /// shard, tag and home bucket by choosing the key's bits.
    Identity,
}

impl TestHasher {
    /// The default, well-mixed hasher.
    pub fn random() -> Self {
        TestHasher::Random(RandomState::new())
    }

    /// Every key hashes to `hash`.
    pub fn colliding(hash: u64) -> Self {
        TestHasher::Colliding(hash)
    }

    /// Only the bits of `mask` survive.
    pub fn weak(mask: u64) -> Self {
        TestHasher::Weak(mask)
    }
}

impl Default for TestHasher {
    fn default() -> Self {
        TestHasher::random()
    }
}

/// The `Hasher` that [`TestHasher`] builds.
#[derive(Clone, Debug)]
pub enum TestHasherState {
    Sip(DefaultHasher),
    Colliding(u64),
    Weak(DefaultHasher, u64),
    Identity(u64),
}

impl BuildHasher for TestHasher {
    type Hasher = TestHasherState;

    fn build_hasher(&self) -> TestHasherState {
        match self {
            TestHasher::Random(s) => TestHasherState::Sip(s.build_hasher()),
            TestHasher::Colliding(h) => TestHasherState::Colliding(*h),
            TestHasher::Weak(mask) => TestHasherState::Weak(DefaultHasher::new(), *mask),
            TestHasher::Identity => TestHasherState::Identity(0),
        }
    }
}

impl Hasher for TestHasherState {
    fn finish(&self) -> u64 {
        match self {
            TestHasherState::Sip(h) => h.finish(),
            TestHasherState::Colliding(h) => *h,
            TestHasherState::Weak(h, mask) => h.finish() & mask,
            TestHasherState::Identity(v) => *v,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        match self {
            TestHasherState::Sip(h) | TestHasherState::Weak(h, _) => h.write(bytes),
            TestHasherState::Colliding(_) => {}
            TestHasherState::Identity(v) => {
                for &b in bytes {
                    *v = (*v << 8) | u64::from(b);
                }
            }
        }
    }

    fn write_u64(&mut self, n: u64) {
        match self {
            TestHasherState::Sip(h) | TestHasherState::Weak(h, _) => h.write_u64(n),
            TestHasherState::Colliding(_) => {}
            TestHasherState::Identity(v) => *v = n,
        }
    }
}
