//! The one place where the server's monotonic time becomes wall-clock
//! milliseconds.
//!
//! A [`Connection`](crate::Connection) runs on `Instant`s, like the
//! client's `Session`: its timers live in the shared
//! [`TimerTable`](redial_core::timer::TimerTable) and no clock jump can fire
//! or delay them. Milliseconds since the Unix epoch remain only where a
//! time leaves the process: the issue time inside a resume token, and the
//! times the [`Store`](crate::store::Store) compares across the nodes of one
//! cluster (detach times, token lifetimes). Those two worlds meet here: a
//! [`WallClock`] is an anchor taken once (an `Instant` and the Unix
//! milliseconds it stands for) and maps any later `Instant` onto the
//! wall clock from it. A test on a virtual clock anchors it at its own
//! origin, so the mapping stays deterministic.

use std::time::{Duration, Instant};

/// Maps `Instant`s to Unix milliseconds from one anchor.
///
/// Take it once per node (or per test clock) and hand clones to the
/// connections: every wall-clock time the server writes is derived here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    anchor: Instant,
    anchor_ms: u64,
}

impl WallClock {
    /// `anchor` stands for `anchor_ms` Unix milliseconds (a virtual clock
    /// may use any number, 0 included).
    pub fn new(anchor: Instant, anchor_ms: u64) -> Self {
        WallClock { anchor, anchor_ms }
    }

    /// The system's wall clock, anchored at `anchor` (the caller's reading
    /// of its monotonic clock, so a paused tokio clock still drives it).
    pub fn system(anchor: Instant) -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        WallClock::new(anchor, ms)
    }

    /// `at` in Unix milliseconds: whole milliseconds since the anchor, added
    /// to the anchor's (an `Instant` before the anchor maps to the anchor).
    pub fn ms(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.anchor);
        self.anchor_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}

/// `now` plus `ms` milliseconds, saturating (the client's deadline rule: a
/// configured timeout can be as large as `u64` allows, and past what an
/// `Instant` can hold it is as good as never).
pub(crate) fn after(now: Instant, ms: u64) -> Instant {
    redial_core::timer::deadline(now, Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_instants_from_the_anchor() {
        let t0 = Instant::now();
        let wall = WallClock::new(t0, 1_000);
        assert_eq!(wall.ms(t0), 1_000);
        assert_eq!(wall.ms(t0 + Duration::from_micros(2_999)), 1_002);
        assert_eq!(wall.ms(t0 + Duration::from_secs(60)), 61_000);
        assert_eq!(WallClock::new(t0 + Duration::from_secs(1), 5).ms(t0), 5);
        assert_eq!(
            WallClock::new(t0, u64::MAX).ms(t0 + Duration::from_secs(1)),
            u64::MAX
        );
    }

    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        assert_eq!(after(now, 3), now + Duration::from_millis(3));
        let far = after(now, u64::MAX);
        assert!(far > now + Duration::from_secs(365 * 24 * 3600));
        assert!(after(far, u64::MAX) >= far);
    }
}
