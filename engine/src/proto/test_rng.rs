//! A small deterministic generator for tests (xorshift64): tests must not depend on a
//! clock or on the operating system's randomness.

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next value; the seed must not be zero.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
