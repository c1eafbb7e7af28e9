//! The session's timers: one enum, one table.

use std::time::{Duration, Instant};

/// `now + d`, saturating: the latest instant this platform can represent
/// within `d` instead of a panic. Every deadline goes through here, so no
/// configured or server-given duration can overflow an `Instant`.
pub(crate) fn deadline(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(at) = now.checked_add(d) {
            return at;
        }
        d /= 2;
        if d.is_zero() {
            return now;
        }
    }
}

/// Every deadline the session can be waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The token fetch, dial or WELCOME is taking too long.
    ConnectTimeout,
    /// The backoff before the next reconnect attempt is over.
    Backoff,
    /// Time to send a keepalive ping (if nothing arrived lately).
    Ping,
    /// A ping went unanswered: the transport is dead.
    PongDeadline,
    /// The outage has lasted `stuck_after`.
    Stuck,
    /// A graceful close waited long enough for the queue to drain.
    CloseLinger,
    /// Acknowledge received messages (coalesced).
    InboundAck,
    /// A call's timeout (the earliest of them).
    Call,
    /// The protocol asked to be woken ([`Output::wake_at`](crate::protocol::Output::wake_at)).
    Protocol,
}

impl Timer {
    /// Table order: also the order in which timers due at the same instant
    /// fire. A dead transport is noticed before a ping would be sent on it.
    pub(crate) const ALL: [Timer; 9] = [
        Timer::ConnectTimeout,
        Timer::PongDeadline,
        Timer::Protocol,
        Timer::Backoff,
        Timer::Ping,
        Timer::Stuck,
        Timer::CloseLinger,
        Timer::InboundAck,
        Timer::Call,
    ];

    fn index(self) -> usize {
        match self {
            Timer::ConnectTimeout => 0,
            Timer::PongDeadline => 1,
            Timer::Backoff => 2,
            Timer::Ping => 3,
            Timer::Stuck => 4,
            Timer::CloseLinger => 5,
            Timer::InboundAck => 6,
            Timer::Protocol => 7,
            Timer::Call => 8,
        }
    }
}

/// When each timer is due, if armed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    due: [Option<Instant>; 9],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.due[timer.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.due[timer.index()] = None;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.due[timer.index()]
    }

    pub(crate) fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    pub(crate) fn stop_all(&mut self) {
        self.due = Default::default();
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.due.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer (in table order) due at or before
    /// `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let t = Timer::ALL
            .into_iter()
            .find(|t| self.get(*t).is_some_and(|at| at <= now))?;
        self.stop(t);
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(
            deadline(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let far = deadline(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
        assert!(deadline(far, Duration::MAX) >= far);
    }
}
