//! The run's only source of choices: which replica, which flow, how big, which bytes.
//!
//! Every operation draws from its own stream, [`Rng::stream`]`(seed, op index)`, so what
//! an operation does depends on the seed and its index alone, never on how the tasks
//! happened to interleave: the same `--seed` replays the same requests, bytes included.

use bytes::Bytes;

use crate::bench::payload::SplitMix64;

/// A seeded generator with the few draws the workload needs.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// The independent stream number `stream` of the run seeded with `seed`.
    pub fn stream(seed: u64, stream: u64) -> Self {
        // Two rounds of SplitMix over (seed, stream) so neighbouring streams share nothing.
        let mut mix = SplitMix64::new(seed);
        let first = mix.next_u64();
        let mut mix = SplitMix64::new(first ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self(SplitMix64::new(mix.next_u64()))
    }

    /// A fresh random seed for a run (from a v4 UUID).
    pub fn entropy_seed() -> u64 {
        SplitMix64::from_entropy().next_u64()
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A value in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0.below(bound)
    }

    /// An index into a collection of `len` elements (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A value in `low..=high` (`low` when `high < low`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low { low } else { low + self.below(high - low + 1) }
    }

    /// A value in `low..=high` spread evenly over orders of magnitude, so that sizes from a
    /// few bytes to megabytes all come up often.
    pub fn log_between(&mut self, low: u64, high: u64) -> u64 {
        let low = low.max(1);
        if high <= low {
            return low;
        }
        let (lo, hi) = ((low as f64).ln(), ((high + 1) as f64).ln());
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + unit * (hi - lo)).exp() as u64).clamp(low, high)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: u64) -> Bytes {
        let mut buf = vec![0; len as usize];
        self.0.fill(&mut buf);
        Bytes::from(buf)
    }

    /// A lowercase hex token of `len` characters (names, notes).
    pub fn token(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len + 16);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(len);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let mut a = Rng::stream(42, 7);
        let mut b = Rng::stream(42, 7);
        assert_eq!(a.bytes(100), b.bytes(100));
        assert_ne!(Rng::stream(42, 7).next_u64(), Rng::stream(42, 8).next_u64());
        assert_ne!(Rng::stream(42, 7).next_u64(), Rng::stream(43, 7).next_u64());
    }

    #[test]
    fn draws_stay_in_bounds() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let v = r.between(3, 9);
            assert!((3..=9).contains(&v));
            let l = r.log_between(1, 6 << 20);
            assert!((1..=6 << 20).contains(&l));
            assert!(r.index(5) < 5);
        }
        assert_eq!(r.between(5, 5), 5);
        assert_eq!(r.log_between(10, 3), 10);
        assert_eq!(r.index(0), 0);
        assert_eq!(r.token(21).len(), 21);
    }

    #[test]
    fn log_between_reaches_both_ends_of_the_scale() {
        let mut r = Rng::new(2);
        let draws: Vec<u64> = (0..2000).map(|_| r.log_between(1, 1 << 20)).collect();
        assert!(draws.iter().any(|&v| v < 64));
        assert!(draws.iter().any(|&v| v > 256 << 10));
    }
}
