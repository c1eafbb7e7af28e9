//! Backoff policies: how long to wait before reconnect attempt *n*.
//!
//! The [`Session`](crate::Session) keeps one ladder; `step` counts the
//! failures since the ladder was last reset (a connection that stayed up for
//! `stable_after`). Every policy draws from the session's seeded generator, so
//! a seed reproduces the same delays.

use std::time::Duration;

use crate::config::ConfigError;
use crate::rng::Rng;

/// A reconnect delay policy.
///
/// Pick one with the constructors; [`Backoff::default`] is full jitter with a
/// 2 s first window and a 30 s cap. Policies are checked by
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
        Backoff::FullJitter {
            first_window: Duration::from_secs(2),
            cap: Duration::from_secs(30),
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
            } => {
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
            Backoff::Decorrelated { base, cap } => (base, cap),
        }
    }

    /// The longest delay this policy can ever choose.
    pub fn largest(&self) -> Duration {
        match *self {
            Backoff::FullJitter { cap, .. } => cap,
            Backoff::Proportional { max, jitter, .. } => max.mul_f64(1.0 + jitter),
            Backoff::Decorrelated { cap, .. } => cap,
        }
    }
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
            } => {
                let c = proportional_centre(initial, multiplier, max, self.step);
                let spread = (rng.unit_f64() * 2.0 - 1.0) * jitter;
                c.mul_f64(1.0 + spread)
            }
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

    #[test]
    fn default_is_full_jitter_2s_window_30s_cap() {
        let b = Backoff::default();
        assert_eq!(b.bounds(1), (Duration::ZERO, Duration::from_secs(2)));
        assert_eq!(b.bounds(2).1, Duration::from_secs(4));
        assert_eq!(b.bounds(4).1, Duration::from_secs(16));
        assert_eq!(b.bounds(5).1, Duration::from_secs(30));
        assert_eq!(b.bounds(u32::MAX).1, Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_draws_spread_over_the_whole_window_on_the_first_attempt() {
        let firsts: Vec<Duration> = (0..2000)
            .map(|s| draws(Backoff::default(), s, 1)[0])
            .collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!(firsts.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(firsts.iter().any(|d| *d > Duration::from_millis(1800)));
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
        assert!(d <= Duration::from_secs(2));
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
        ] {
            assert!(
                matches!(b.validate(), Err(ConfigError::Backoff(_))),
                "{b:?}"
            );
        }
        assert!(Backoff::grpc().validate().is_ok());
    }
}
