//! What belongs to one outage: from the loss of a connection that held
//! (or the first connect) until the next such loss.
//!
//! A connection lost before `stable_after` does not end the outage (flap
//! damping): its attempts, the server wait it took and its one-time token
//! retries carry on into the next one.

use std::time::{Duration, Instant};

use crate::timer::deadline;

/// How soon to come back after a failure.
///
/// The ladder steps on every failure whatever the kind. The first wait a
/// server gives in an outage (a deploy's GOING_AWAY window, an admission
/// limiter's Retry-After booking) is taken as it is: that is what spreads a
/// fleet, and an honest limiter's slot is only worth something if the client
/// keeps it. Every later server wait in the same outage is weighed against
/// the ladder: it may lengthen the attempt but never take it below the
/// rung's lower bound (for full jitter, whose rungs reach down to 0, below
/// the rung's draw), so no sequence of server answers makes a tight loop: at
/// most one attempt per outage comes at the server's word alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delay {
    Ladder,
    /// A wait the server asked for (Retry-After, GOING_AWAY), capped and
    /// jittered already.
    Server(Duration),
    /// A close-policy floor: the ladder's draw, but no sooner than this
    /// (capped by `max_server_delay`, jittered up to +10 %).
    Floor(Duration),
    /// At once (the ladder still steps): the one fresh-token retry per
    /// outage after a 401 or 4002.
    Now,
}

/// One outage's counts; a new outage starts from `Outage::default()`.
#[derive(Debug, Default)]
pub(super) struct Outage {
    /// Reconnect attempts so far. Kept while connected: a connection lost
    /// before `stable_after` continues the count.
    pub(super) attempts: u32,
    /// When the client last lost its link (or first connected): the stuck
    /// clock, which every connect stops.
    pub(super) started: Option<Instant>,
    /// A server's wait was already taken as given.
    pub(super) server_wait_taken: bool,
    /// The end of the part of the pending wait the server imposed (its
    /// Retry-After, GOING_AWAY or a close-code floor), which the client's
    /// own shortcuts (`retry_now`, network online, wake) must not cut.
    pub(super) server_until: Option<Instant>,
    /// The one retry with a fresh token after a 401 or 4002 was used.
    pub(super) fresh_token_retry_used: bool,
    /// The one immediate retry after a token-expired close was used.
    pub(super) refresh_retry_used: bool,
    /// Consecutive token provider failures.
    pub(super) token_failures: u32,
}

impl Outage {
    /// The wait before the next attempt, given the ladder's `draw` and its
    /// rung's `lower` bound; `floor` caps and jitters a close-policy floor
    /// (called only for [`Delay::Floor`], so it may draw randomness).
    /// Records which part of the wait the server imposed.
    pub(super) fn wait(
        &mut self,
        now: Instant,
        delay: Delay,
        draw: Duration,
        lower: Duration,
        floor: impl FnOnce(Duration) -> Duration,
    ) -> Duration {
        // (the delay, the part of it the server imposed)
        let (delay, imposed) = match delay {
            Delay::Ladder => (draw, Duration::ZERO),
            Delay::Server(d) if !self.server_wait_taken => {
                self.server_wait_taken = true;
                (d, d)
            }
            Delay::Server(d) => {
                let least = match lower {
                    // Full jitter's rungs reach down to 0: its draw is what
                    // stands between a server answering 0 and a tight loop.
                    zero if zero.is_zero() => draw,
                    lower => lower,
                };
                (d.max(least), d)
            }
            Delay::Floor(f) => {
                let floor = floor(f);
                (draw.max(floor), floor)
            }
            Delay::Now => (Duration::ZERO, Duration::ZERO),
        };
        self.server_until = (!imposed.is_zero()).then(|| deadline(now, imposed));
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn no_floor(_: Duration) -> Duration {
        unreachable!("only a floor is jittered")
    }

    #[test]
    fn only_the_first_server_wait_is_taken_as_given() {
        let now = Instant::now();
        let mut o = Outage::default();
        assert_eq!(
            o.wait(now, Delay::Server(Duration::ZERO), S * 3, S * 2, no_floor),
            Duration::ZERO
        );
        assert_eq!(o.server_until, None, "a zero wait imposes nothing");
        // The second one may lengthen the wait but not undercut the rung.
        assert_eq!(o.wait(now, Delay::Server(S), S * 3, S * 2, no_floor), S * 2);
        assert_eq!(o.server_until, Some(now + S));
        assert_eq!(
            o.wait(now, Delay::Server(S * 5), S * 3, S * 2, no_floor),
            S * 5
        );
        // With full jitter (lower bound 0) the draw is the least.
        assert_eq!(
            o.wait(now, Delay::Server(S), S * 3, Duration::ZERO, no_floor),
            S * 3
        );
    }

    #[test]
    fn a_floor_holds_the_ladder_up_and_the_client_cannot_cut_it() {
        let now = Instant::now();
        let mut o = Outage::default();
        let delay = o.wait(now, Delay::Floor(S * 4), S, S, |f| f + S);
        assert_eq!(delay, S * 5);
        assert_eq!(o.server_until, Some(now + S * 5));
        assert_eq!(o.wait(now, Delay::Floor(S), S * 9, S, |f| f), S * 9);
        assert!(!o.server_wait_taken, "a floor is not the server's wait");
    }

    #[test]
    fn ladder_and_now_impose_nothing() {
        let now = Instant::now();
        let mut o = Outage {
            server_until: Some(now + S),
            ..Outage::default()
        };
        assert_eq!(o.wait(now, Delay::Ladder, S * 2, S, no_floor), S * 2);
        assert_eq!(o.server_until, None);
        assert_eq!(o.wait(now, Delay::Now, S * 2, S, no_floor), Duration::ZERO);
        assert_eq!(o.server_until, None);
    }
}
