//! Which of the configured endpoints the next dial goes to.
//!
//! The rule: start at an endpoint drawn from the seed (a fleet with distinct
//! seeds spreads evenly over the list), stay on an endpoint while its
//! connections hold, and move to the next one, in list order, after a failure
//! there: a dial that failed or a connection lost before `stable_after`.
//! A server's GOING_AWAY also moves the client on, since the node said it is
//! leaving. The adapter dials the index it is given and decides nothing.

use crate::rng::Rng;

/// Mixed into the seed so the starting endpoint does not reuse the draws of
/// the session's own generator: adding endpoints changes no jitter.
const START_SALT: u64 = 0x656E_6470_6F69_6E74;

/// The endpoint cursor of one session.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    count: usize,
    current: usize,
}

impl Endpoints {
    /// `count` endpoints (at least one is assumed), starting at one drawn
    /// from `seed`.
    pub(crate) fn new(count: usize, seed: u64) -> Self {
        let count = count.max(1);
        let last = u64::try_from(count - 1).unwrap_or(u64::MAX);
        let start = Rng::new(seed ^ START_SALT).below_inclusive(last);
        Endpoints {
            count,
            current: usize::try_from(start).unwrap_or(0),
        }
    }

    /// The endpoint the next (or current) dial uses.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// The endpoint failed us: the next dial goes to the next one.
    pub(crate) fn rotate(&mut self) {
        self.current = (self.current + 1) % self.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_endpoint_never_moves() {
        for seed in 0..100 {
            let mut e = Endpoints::new(1, seed);
            assert_eq!(e.current(), 0);
            e.rotate();
            assert_eq!(e.current(), 0);
        }
    }

    #[test]
    fn rotation_visits_every_endpoint_in_order_and_wraps() {
        let mut e = Endpoints::new(3, 42);
        let start = e.current();
        let mut seen = Vec::new();
        for _ in 0..3 {
            e.rotate();
            seen.push(e.current());
        }
        assert_eq!(seen, [(start + 1) % 3, (start + 2) % 3, start]);
    }

    #[test]
    fn the_start_depends_only_on_the_seed() {
        for seed in 0..1000 {
            assert_eq!(
                Endpoints::new(5, seed).current(),
                Endpoints::new(5, seed).current()
            );
        }
    }

    #[test]
    fn ten_thousand_seeds_spread_evenly() {
        for n in [2usize, 3, 7] {
            let mut counts = vec![0u32; n];
            for seed in 0..10_000u64 {
                counts[Endpoints::new(n, seed).current()] += 1;
            }
            let fair = 10_000 / n as u32;
            // Binomial standard deviation is below 50 here; 4 sigma.
            for c in &counts {
                assert!(c.abs_diff(fair) < 200, "{n} endpoints: {counts:?}");
            }
        }
    }
}
