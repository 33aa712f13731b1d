//! Exponential backoff with jitter from a seedable RNG.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::DiscoveryOptions;

/// Pauses of `initial`, `2·initial`, `4·initial`, … capped at `max`, each shortened by a random
/// fraction in `[0, jitter_ratio]`: with the defaults 1, 2, 4, 8, 8, … s, the n-th pause lies
/// in `[base·(1 − jitter_ratio), base]`. The cap is therefore never exceeded.
///
/// Not thread-safe by itself: one retry loop owns one `Backoff`.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter_ratio: f64,
    next_base: Duration,
    rng: StdRng,
}

impl Backoff {
    /// A backoff starting at `initial`, doubling up to `max`. `jitter_ratio` is clamped to
    /// `[0, 1)`; `seed` `None` seeds from the OS.
    pub fn new(initial: Duration, max: Duration, jitter_ratio: f64, seed: Option<u64>) -> Backoff {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            jitter_ratio: if jitter_ratio.is_finite() {
                jitter_ratio.clamp(0.0, 0.999)
            } else {
                0.0
            },
            next_base: initial,
            rng,
        }
    }

    /// The backoff [`DiscoveryOptions`] describe.
    pub fn from_options(opts: &DiscoveryOptions) -> Backoff {
        Backoff::new(
            opts.backoff_initial,
            opts.backoff_max,
            opts.jitter_ratio,
            opts.seed,
        )
    }

    /// The un-jittered pause the next [`next_delay`](Self::next_delay) is drawn from.
    pub fn next_base(&self) -> Duration {
        self.next_base
    }

    /// The pause before the next attempt; advances the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next_base;
        self.next_base = (base * 2).min(self.max);
        let cut = if self.jitter_ratio > 0.0 {
            self.rng.random_range(0.0..=self.jitter_ratio)
        } else {
            0.0
        };
        base.mul_f64(1.0 - cut)
    }

    /// Back to `initial`, after a success.
    pub fn reset(&mut self) {
        self.next_base = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn doubles_to_the_cap_within_jitter_bounds() {
        for seed in 0..50 {
            let mut b = Backoff::new(secs(1.0), secs(8.0), 0.2, Some(seed));
            for base in [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] {
                let d = b.next_delay();
                assert!(
                    d >= secs(base * 0.8) && d <= secs(base),
                    "seed {seed}: {d:?} not in [{}, {base}] s",
                    base * 0.8
                );
            }
        }
    }

    #[test]
    fn same_seed_same_pauses_and_reset_starts_over() {
        let draw = |seed| {
            let mut b = Backoff::new(secs(1.0), secs(8.0), 0.2, Some(seed));
            (0..5).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));

        let mut b = Backoff::new(secs(1.0), secs(8.0), 0.0, Some(1));
        let first: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(
            first,
            [1.0, 2.0, 4.0, 8.0, 8.0].map(secs),
            "without jitter the pauses are exact"
        );
        b.reset();
        assert_eq!(b.next_delay(), secs(1.0));
    }
}
