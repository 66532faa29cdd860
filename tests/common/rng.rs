//! A tiny deterministic PRNG, so random operation sequences replay exactly from their seed.

/// SplitMix64: one `u64` of state, passes BigCrush, and is trivially seedable. Not for crypto.
///
/// ```ignore
/// let mut rng = Rng::new(42);
/// let key = rng.below(1000);
/// if rng.chance(1, 10) { /* 10% of the time */ }
/// ```
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator that produces the same sequence for the same seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`); the tiny modulo bias is irrelevant for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A child generator for thread `index`, independent of the parent's later output.
    pub fn fork(&self, index: u64) -> Rng {
        let mut child = Rng(self.0 ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
        child.next_u64();
        child
    }
}

/// The seed a test uses: `EPOCHMAP_TEST_SEED` if set (to replay a failure with another seed),
/// else `default`. Tests print it on failure through [`crate::common::with_map`]'s context.
pub fn seed(default: u64) -> u64 {
    std::env::var("EPOCHMAP_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
