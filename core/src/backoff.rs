//! Backoff policies: how long to wait before reconnect attempt *n*.
//!
//! The [`Session`](crate::Session) keeps one ladder; `step` counts the
//! failures since the ladder was last reset (a connection that stayed up for
//! `stable_after`). Every policy draws from the session's seeded generator, so
//! a seed reproduces the same delays.
//!
//! # The default
//! [`Backoff::default`] is [`Backoff::Staged`]: the first retry is
//! `U(0, 2 s)`, later ones `min(20 s, 2.4 s * 1.6^(n-2)) * (1 ± 0.2)`:
//! 1.92-2.88 s, 3.07-4.61 s, 4.92-7.37 s, 7.86-11.8 s, 12.6-18.9 s, then
//! 16-24 s. With [`Config::max_attempts`](crate::Config::max_attempts) 100
//! that is at least 25 minutes of retrying whatever the draws. Why each
//! part (figures from the fleet simulator, `redial-fleet`: 10,000 seeds for
//! one client, seeds 1-10 for 10,000 clients; BENCHMARKS.md has the rest):
//!
//! - A quick first retry: a single dropped connection to a server that is
//!   still up is back in about 1 s (the draw's p50 1 s, p99 1.98 s, plus
//!   the dial).
//! - A quick second rung: a server restarted within 1.5 s is found 1.40 s
//!   after its return at the median, 2.25 s at p90 (1.92-2.88 s after a
//!   first retry that came too early); one down 3 s, 3.74 s at p90. The
//!   previous second rung, 7 s ± 30 %, made those 5.57 s, 7.78 s and
//!   6.77 s.
//! - A floor from the second retry on: the second rung starts about where
//!   the first window ends, so a fleet that lost its server at once sends
//!   its second wave after its first, not on top of it, and the third rung
//!   (from 3.07 s) lands after a 5 s outage: 10,000 clients against a
//!   server down 5 s reconnect with 3.0 dials each (never a fourth), p99
//!   8.9 s, no more than 552 dials in any 100 ms.
//! - A 20 s ceiling ± 20 %: a server that stays down sees a dial from each
//!   client every 16-24 s, 3 a minute; after a 60 s outage 10,000 clients
//!   come back at no more than 133 dials per 100 ms, after 5 minutes 73.
//!
//! The cost: a third dial in a 5 s outage (the second lands while the
//! server is still down; the previous ladder made it two dials, with a p99
//! of 10.7 s), and the first two waves are as dense as 10,000 dials within
//! 2 s make them: 500 per 100 ms on average, 552 in the busiest.

use std::time::Duration;

use crate::config::ConfigError;
use crate::rng::Rng;

/// A reconnect delay policy.
///
/// Pick one with the constructors; [`Backoff::default`] is
/// [`Backoff::Staged`] (a full-jitter first retry within 2 s, then 2.4 s
/// x1.6 ±20 % up to 20 s; the module docs give its figures). Policies are
/// checked by
/// [`ConfigBuilder::build`](crate::ConfigBuilder::build).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// Full jitter on every attempt, the first included:
    /// `delay(n) = U(0, min(cap, first_window * 2^(n-1)))`.
    ///
    /// Spreads a fleet that lost a server at once across the whole window,
    /// which is what keeps a restart from turning into a reconnect storm.
    FullJitter {
        /// Upper end of the first attempt's window.
        first_window: Duration,
        /// Largest window.
        cap: Duration,
    },
    /// Exponential with proportional jitter:
    /// `w(n) = min(max, initial * multiplier^(n-1))`, `delay = w(n) * (1 + U(-jitter, jitter))`.
    ///
    /// With 1 s, x1.6, ±0.2 and 120 s this is the gRPC connection-backoff
    /// schedule; 500 ms, x2, ±0.2, 30 s is the common browser-SDK one.
    Proportional {
        /// Centre of the first attempt's delay.
        initial: Duration,
        /// Growth per attempt (> 1.0 to grow, 1.0 for a fixed delay).
        multiplier: f64,
        /// Fraction of the centre to spread either side, in `[0, 1)`.
        jitter: f64,
        /// Largest centre.
        max: Duration,
    },
    /// A quick first retry, then a proportional ladder: the first delay is
    /// full jitter `U(0, first_window)`; delay *n* (n >= 2) is
    /// `c(n) * (1 + U(-jitter, jitter))` with
    /// `c(n) = min(max, initial * multiplier^(n-2))`.
    ///
    /// The first rung keeps a single dropped connection's recovery short;
    /// the later rungs have a floor (`c(n) * (1 - jitter)`), so that a fleet
    /// whose first retry failed comes back spread over a window that starts
    /// well after the first wave, not on top of it.
    Staged {
        /// Upper end of the first attempt's window.
        first_window: Duration,
        /// Centre of the second attempt's delay.
        initial: Duration,
        /// Growth per attempt from the second on (>= 1.0).
        multiplier: f64,
        /// Fraction of the centre to spread either side, in `[0, 1)`.
        jitter: f64,
        /// Largest centre.
        max: Duration,
    },
    /// Decorrelated jitter: `delay = min(cap, U(base, 3 * previous))`, with
    /// `previous` starting at `base`.
    Decorrelated {
        /// Smallest delay.
        base: Duration,
        /// Largest delay.
        cap: Duration,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Staged {
            first_window: Duration::from_secs(2),
            initial: Duration::from_millis(2400),
            multiplier: 1.6,
            jitter: 0.2,
            max: Duration::from_secs(20),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Backoff {
    /// Full jitter with the given first window and cap.
    pub fn full_jitter(first_window: Duration, cap: Duration) -> Self {
        Backoff::FullJitter { first_window, cap }
    }

    /// Exponential backoff with proportional (±fraction) jitter.
    pub fn proportional(initial: Duration, multiplier: f64, jitter: f64, max: Duration) -> Self {
        Backoff::Proportional {
            initial,
            multiplier,
            jitter,
            max,
        }
    }

    /// The gRPC connection-backoff schedule: 1 s, x1.6, ±20 %, at most 120 s.
    pub fn grpc() -> Self {
        Self::proportional(Duration::from_secs(1), 1.6, 0.2, Duration::from_secs(120))
    }

    /// A full-jitter first retry over `first_window`, then proportional
    /// from `initial` (see [`Backoff::Staged`]).
    pub fn staged(
        first_window: Duration,
        initial: Duration,
        multiplier: f64,
        jitter: f64,
        max: Duration,
    ) -> Self {
        Backoff::Staged {
            first_window,
            initial,
            multiplier,
            jitter,
            max,
        }
    }

    /// Decorrelated jitter between `base` and `cap`.
    pub fn decorrelated(base: Duration, cap: Duration) -> Self {
        Backoff::Decorrelated { base, cap }
    }

    /// Checks the policy; [`ConfigBuilder::build`](crate::ConfigBuilder::build) calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: &str| Err(ConfigError::Backoff(why.to_owned()));
        match *self {
            Backoff::FullJitter { first_window, cap } => {
                if first_window.is_zero() {
                    return bad("first_window must be above zero");
                }
                if cap < first_window {
                    return bad("cap must be at least first_window");
                }
            }
            Backoff::Proportional {
                initial,
                multiplier,
                jitter,
                max,
            } => check_proportional(initial, multiplier, jitter, max)?,
            Backoff::Staged {
                first_window,
                initial,
                multiplier,
                jitter,
                max,
            } => {
                if first_window.is_zero() {
                    return bad("first_window must be above zero");
                }
                check_proportional(initial, multiplier, jitter, max)?;
                // The windows never shrink from one attempt to the next.
                if first_window > initial.mul_f64(1.0 + jitter) {
                    return bad("first_window must be at most initial * (1 + jitter)");
                }
            }
            Backoff::Decorrelated { base, cap } => {
                if base.is_zero() {
                    return bad("base must be above zero");
                }
                if cap < base {
                    return bad("cap must be at least base");
                }
            }
        }
        if self.largest() > Duration::from_secs(24 * 3600) {
            return bad("delays above 24 h are not supported");
        }
        Ok(())
    }

    /// The range a delay for failure number `step` (1-based) may fall in,
    /// whatever the random draw. For [`Backoff::Decorrelated`] this is the
    /// whole `[base, cap]`, since its window depends on the previous draw.
    pub fn bounds(&self, step: u32) -> (Duration, Duration) {
        match *self {
            Backoff::FullJitter { first_window, cap } => {
                (Duration::ZERO, full_jitter_window(first_window, cap, step))
            }
            Backoff::Proportional {
                initial,
                multiplier,
                jitter,
                max,
            } => {
                let c = proportional_centre(initial, multiplier, max, step);
                (c.mul_f64(1.0 - jitter), c.mul_f64(1.0 + jitter))
            }
            Backoff::Staged { first_window, .. } if step <= 1 => (Duration::ZERO, first_window),
            Backoff::Staged {
                initial,
                multiplier,
                jitter,
                max,
                ..
            } => {
                let c = proportional_centre(initial, multiplier, max, step - 1);
                (c.mul_f64(1.0 - jitter), c.mul_f64(1.0 + jitter))
            }
            Backoff::Decorrelated { base, cap } => (base, cap),
        }
    }

    /// The longest delay this policy can ever choose.
    pub fn largest(&self) -> Duration {
        match *self {
            Backoff::FullJitter { cap, .. } => cap,
            Backoff::Proportional { max, jitter, .. } => max.mul_f64(1.0 + jitter),
            Backoff::Staged {
                first_window,
                max,
                jitter,
                ..
            } => first_window.max(max.mul_f64(1.0 + jitter)),
            Backoff::Decorrelated { cap, .. } => cap,
        }
    }
}

fn check_proportional(
    initial: Duration,
    multiplier: f64,
    jitter: f64,
    max: Duration,
) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError::Backoff(why.to_owned()));
    if initial.is_zero() {
        return bad("initial must be above zero");
    }
    if !(multiplier.is_finite() && (1.0..=100.0).contains(&multiplier)) {
        return bad("multiplier must be between 1.0 and 100.0");
    }
    if !(jitter.is_finite() && (0.0..1.0).contains(&jitter)) {
        return bad("jitter must be in [0, 1)");
    }
    if max < initial {
        return bad("max must be at least initial");
    }
    Ok(())
}

fn full_jitter_window(first_window: Duration, cap: Duration, step: u32) -> Duration {
    let shift = step.saturating_sub(1);
    if shift >= 63 {
        return cap;
    }
    let w = nanos(first_window).saturating_mul(1u64 << shift);
    Duration::from_nanos(w).min(cap)
}

fn proportional_centre(initial: Duration, multiplier: f64, max: Duration, step: u32) -> Duration {
    let exp = step.saturating_sub(1).min(4096) as i32;
    let factor = multiplier.powi(exp);
    let c = initial.as_secs_f64() * factor;
    if !c.is_finite() || c >= max.as_secs_f64() {
        max
    } else {
        Duration::from_secs_f64(c)
    }
}

fn proportional_draw(
    initial: Duration,
    multiplier: f64,
    jitter: f64,
    max: Duration,
    step: u32,
    rng: &mut Rng,
) -> Duration {
    let c = proportional_centre(initial, multiplier, max, step);
    let spread = (rng.unit_f64() * 2.0 - 1.0) * jitter;
    c.mul_f64(1.0 + spread)
}

/// The ladder: a policy plus where the session stands on it.
#[derive(Debug, Clone)]
pub(crate) struct Ladder {
    policy: Backoff,
    step: u32,
    previous: Duration,
}

impl Ladder {
    pub(crate) fn new(policy: Backoff) -> Self {
        let previous = match policy {
            Backoff::Decorrelated { base, .. } => base,
            _ => Duration::ZERO,
        };
        Ladder {
            policy,
            step: 0,
            previous,
        }
    }

    /// Failures counted since the last reset.
    #[cfg(test)]
    pub(crate) fn step(&self) -> u32 {
        self.step
    }

    /// The lowest delay the current rung can draw.
    pub(crate) fn lower_bound(&self) -> Duration {
        self.policy.bounds(self.step.max(1)).0
    }

    /// Back to the bottom rung: the next delay is a first attempt's.
    pub(crate) fn reset(&mut self) {
        *self = Ladder::new(self.policy.clone());
    }

    /// Steps up one rung and draws that rung's delay.
    pub(crate) fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        self.step = self.step.saturating_add(1);
        match self.policy {
            Backoff::FullJitter { first_window, cap } => {
                let w = full_jitter_window(first_window, cap, self.step);
                Duration::from_nanos(rng.below_inclusive(nanos(w)))
            }
            Backoff::Proportional {
                initial,
                multiplier,
                jitter,
                max,
            } => proportional_draw(initial, multiplier, jitter, max, self.step, rng),
            Backoff::Staged { first_window, .. } if self.step <= 1 => {
                Duration::from_nanos(rng.below_inclusive(nanos(first_window)))
            }
            Backoff::Staged {
                initial,
                multiplier,
                jitter,
                max,
                ..
            } => proportional_draw(initial, multiplier, jitter, max, self.step - 1, rng),
            Backoff::Decorrelated { base, cap } => {
                let hi = nanos(self.previous).saturating_mul(3).min(nanos(cap));
                let d = Duration::from_nanos(rng.between(nanos(base).min(hi), hi));
                self.previous = d;
                d
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(policy: Backoff, seed: u64, n: usize) -> Vec<Duration> {
        let mut rng = Rng::new(seed);
        let mut l = Ladder::new(policy);
        (0..n).map(|_| l.next_delay(&mut rng)).collect()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_micros(1)
    }

    #[test]
    fn default_is_a_first_retry_within_2s_then_2_4s_x1_6_within_20_percent_up_to_20s() {
        let b = Backoff::default();
        assert!(b.validate().is_ok());
        assert_eq!(b.bounds(1), (Duration::ZERO, Duration::from_secs(2)));
        for (step, lo, hi) in [
            (2, 1.92, 2.88),
            (3, 3.072, 4.608),
            (4, 4.9152, 7.3728),
            (5, 7.86432, 11.79648),
            (6, 12.582912, 18.874368),
            (7, 16.0, 24.0),
            (8, 16.0, 24.0),
            (100, 16.0, 24.0),
            (u32::MAX, 16.0, 24.0),
        ] {
            let (l, h) = b.bounds(step);
            assert!(
                close(l, secs(lo)) && close(h, secs(hi)),
                "step {step}: {l:?}..{h:?}"
            );
        }
        assert_eq!(b.largest(), secs(24.0));
    }

    #[test]
    fn the_default_retries_for_at_least_25_minutes_and_waits_at_least_15_s_at_the_top() {
        // With the default 100 attempts, whatever the draws: the sum of the
        // lower bounds of the 100 waits.
        let b = Backoff::default();
        let least: Duration = (1..=100).map(|n| b.bounds(n).0).sum();
        assert!(least >= Duration::from_secs(25 * 60), "{least:?}");
        // At the top: no wait shorter than 15 s.
        assert!(b.bounds(u32::MAX).0 >= Duration::from_secs(15));
    }

    #[test]
    fn default_first_retry_spreads_over_its_whole_window() {
        let firsts: Vec<Duration> = (0..2000)
            .map(|s| draws(Backoff::default(), s, 1)[0])
            .collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(firsts.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(firsts.iter().any(|d| *d > Duration::from_millis(1800)));
        let mean = firsts.iter().sum::<Duration>() / 2000;
        assert!(mean > secs(0.9) && mean < secs(1.1), "{mean:?}");
    }

    #[test]
    fn full_jitter_doubles_its_window_up_to_the_cap() {
        let b = Backoff::full_jitter(Duration::from_secs(2), Duration::from_secs(30));
        assert_eq!(b.bounds(1), (Duration::ZERO, Duration::from_secs(2)));
        assert_eq!(b.bounds(2).1, Duration::from_secs(4));
        assert_eq!(b.bounds(4).1, Duration::from_secs(16));
        assert_eq!(b.bounds(5).1, Duration::from_secs(30));
        assert_eq!(b.bounds(u32::MAX).1, Duration::from_secs(30));
        let firsts: Vec<Duration> = (0..2000).map(|s| draws(b.clone(), s, 1)[0]).collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(firsts.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(firsts.iter().any(|d| *d > Duration::from_millis(1800)));
    }

    #[test]
    fn the_seed_documents_schedule_is_still_expressible() {
        let b = Backoff::proportional(
            Duration::from_millis(500),
            2.0,
            0.2,
            Duration::from_secs(30),
        );
        assert!(b.validate().is_ok());
        assert!(close(b.bounds(1).0, secs(0.4)) && close(b.bounds(1).1, secs(0.6)));
        assert!(close(b.bounds(2).0, secs(0.8)) && close(b.bounds(2).1, secs(1.2)));
        assert!(close(b.bounds(9).0, secs(24.0)) && close(b.bounds(9).1, secs(36.0)));
    }

    #[test]
    fn staged_second_rung_starts_the_proportional_ladder() {
        let s = Duration::from_secs;
        let b = Backoff::staged(s(1), s(4), 2.0, 0.5, s(10));
        assert!(b.validate().is_ok());
        assert_eq!(b.bounds(1), (Duration::ZERO, s(1)));
        assert_eq!(b.bounds(2), (s(2), s(6)));
        assert_eq!(b.bounds(3), (s(4), s(12)));
        assert_eq!(b.bounds(4), (s(5), s(15)));
        // The first window may not be wider than the second rung's.
        assert!(Backoff::staged(s(7), s(4), 2.0, 0.5, s(10))
            .validate()
            .is_err());
        assert!(Backoff::staged(s(6), s(4), 2.0, 0.5, s(10))
            .validate()
            .is_ok());
    }

    /// One nanosecond either side, for float rounding.
    fn within(d: Duration, (lo, hi): (Duration, Duration)) -> bool {
        d + Duration::from_nanos(1) >= lo && d <= hi + Duration::from_nanos(1)
    }

    proptest::proptest! {
        #[test]
        fn staged_draws_stay_within_their_bounds(
            first_pct in 1u64..=100,
            initial_ms in 1u64..20_000,
            multiplier in 1.0f64..4.0,
            jitter in 0.0f64..0.99,
            max_extra_ms in 0u64..60_000,
            seed in proptest::prelude::any::<u64>(),
        ) {
            // Up to the second rung's top, the widest first window allowed.
            let first = Duration::from_millis(initial_ms).mul_f64((1.0 + jitter) * first_pct as f64 / 100.0);
            let b = Backoff::staged(
                first.max(Duration::from_nanos(1)),
                Duration::from_millis(initial_ms),
                multiplier,
                jitter,
                Duration::from_millis(initial_ms + max_extra_ms),
            );
            proptest::prop_assert!(b.validate().is_ok());
            for (i, d) in draws(b.clone(), seed, 30).into_iter().enumerate() {
                let step = i as u32 + 1;
                proptest::prop_assert!(within(d, b.bounds(step)), "step {} delay {:?}", step, d);
                proptest::prop_assert!(d <= b.largest() + Duration::from_nanos(1));
            }
        }

        #[test]
        fn the_default_draws_stay_within_its_bounds(seed in proptest::prelude::any::<u64>()) {
            let b = Backoff::default();
            for (i, d) in draws(b.clone(), seed, 40).into_iter().enumerate() {
                proptest::prop_assert!(within(d, b.bounds(i as u32 + 1)));
            }
        }
    }

    #[test]
    fn grpc_schedule_matches_the_spec_centres() {
        let b = Backoff::grpc();
        let (lo, hi) = b.bounds(1);
        assert_eq!(
            (lo, hi),
            (Duration::from_millis(800), Duration::from_millis(1200))
        );
        let (lo, hi) = b.bounds(2);
        assert!((lo.as_secs_f64() - 1.28).abs() < 1e-9 && (hi.as_secs_f64() - 1.92).abs() < 1e-9);
        assert_eq!(b.bounds(100).1, Duration::from_secs(144));
        for (i, d) in draws(b.clone(), 3, 40).into_iter().enumerate() {
            let (lo, hi) = b.bounds(i as u32 + 1);
            assert!(d >= lo && d <= hi, "step {} delay {d:?}", i + 1);
        }
    }

    #[test]
    fn decorrelated_stays_between_base_and_cap() {
        let b = Backoff::decorrelated(Duration::from_millis(100), Duration::from_secs(10));
        for d in draws(b, 9, 500) {
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(10));
        }
    }

    #[test]
    fn reset_returns_to_the_first_rung() {
        let mut rng = Rng::new(1);
        let mut l = Ladder::new(Backoff::default());
        for _ in 0..6 {
            l.next_delay(&mut rng);
        }
        assert_eq!(l.step(), 6);
        l.reset();
        let d = l.next_delay(&mut rng);
        assert_eq!(l.step(), 1);
        assert!(d <= Backoff::default().bounds(1).1);
    }

    #[test]
    fn invalid_policies_are_rejected_with_a_reason() {
        let z = Duration::ZERO;
        let s = Duration::from_secs(1);
        for b in [
            Backoff::full_jitter(z, s),
            Backoff::full_jitter(s * 2, s),
            Backoff::proportional(s, 0.5, 0.2, s * 10),
            Backoff::proportional(s, 2.0, 1.0, s * 10),
            Backoff::proportional(s, f64::NAN, 0.2, s * 10),
            Backoff::decorrelated(z, s),
            Backoff::full_jitter(s, Duration::from_secs(90_000)),
            Backoff::staged(z, s, 1.5, 0.3, s * 10),
            Backoff::staged(s, z, 1.5, 0.3, s * 10),
            Backoff::staged(s, s, 0.9, 0.3, s * 10),
            Backoff::staged(s, s, 1.5, 1.0, s * 10),
            Backoff::staged(s, s * 10, 1.5, 0.3, s),
            Backoff::staged(s * 2, s, 1.5, 0.3, s * 10),
        ] {
            assert!(
                matches!(b.validate(), Err(ConfigError::Backoff(_))),
                "{b:?}"
            );
        }
        assert!(Backoff::grpc().validate().is_ok());
    }
}
