//! Timers: one enum per state machine, one table of deadlines.
//!
//! The client's `Session` and the server's `Connection` each name their
//! timers in an enum that implements [`TimerKind`] and keep the deadlines
//! in a [`TimerTable`]; the caller asks the table for the next deadline and
//! pops expired timers one at a time, in the enum's firing order.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// The timers one state machine can wait for, each with a slot in a
/// [`TimerTable`].
pub trait TimerKind: Copy + 'static {
    /// Every timer, in firing order: timers due at the same instant fire in
    /// this order.
    const ALL: &'static [Self];

    /// This timer's slot: distinct per timer and below the table's `N`.
    fn index(self) -> usize;
}

/// `now + d`, saturating: the latest instant this platform can represent
/// within `d` instead of a panic. Every deadline of the client and server
/// cores goes through here, so no configured or peer-given duration can
/// overflow an `Instant`.
pub fn deadline(now: Instant, d: Duration) -> Instant {
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

impl TimerKind for Timer {
    /// A dead transport is noticed before a ping would be sent on it.
    const ALL: &'static [Timer] = &[
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

/// The session's table: one slot per [`Timer`].
pub(crate) type SessionTimers = TimerTable<Timer, Instant, 9>;

/// When each timer of `T` is due, if armed, as an `At` (an `Instant`, or
/// milliseconds on the caller's clock): `N` slots, one per timer.
#[derive(Debug, Clone)]
pub struct TimerTable<T, At, const N: usize> {
    due: [Option<At>; N],
    kind: PhantomData<T>,
}

impl<T: TimerKind, At: Copy + Ord, const N: usize> Default for TimerTable<T, At, N> {
    fn default() -> Self {
        TimerTable {
            due: [None; N],
            kind: PhantomData,
        }
    }
}

impl<T: TimerKind, At: Copy + Ord, const N: usize> TimerTable<T, At, N> {
    /// Arms `timer` for `at`, replacing any earlier deadline.
    pub fn set(&mut self, timer: T, at: At) {
        self.due[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: T) {
        self.due[timer.index()] = None;
    }

    /// When `timer` is due, if armed.
    pub fn get(&self, timer: T) -> Option<At> {
        self.due[timer.index()]
    }

    /// Whether `timer` is armed.
    pub fn is_set(&self, timer: T) -> bool {
        self.get(timer).is_some()
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.due = [None; N];
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<At> {
        self.due.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer (in [`TimerKind::ALL`] order) due
    /// at or before `now`.
    pub fn pop_expired(&mut self, now: At) -> Option<T> {
        let t = T::ALL
            .iter()
            .copied()
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
