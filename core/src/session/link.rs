//! What belongs to one connection: created by the dial that opens it,
//! dropped when it is lost, so none of it can outlive its connection.

use std::time::{Duration, Instant};

use crate::secret::AuthToken;

/// One connection's own facts, from its dial until it is lost.
#[derive(Debug)]
pub(super) struct Link {
    /// The token the dial presented (the handshake may need it again).
    pub(super) token: Option<AuthToken>,
    /// The handshake reply awaited, for the reason given when it is late.
    pub(super) awaiting: &'static str,
    /// When the handshake completed.
    pub(super) connected_at: Option<Instant>,
    /// The last frame was a non-terminal ERROR, so a close that follows it
    /// is not terminal whatever its code (PROTOCOL.md 6).
    pub(super) error_before_close: bool,
    /// Delay drawn from a GOING_AWAY on this connection, for the reconnect
    /// after it.
    pub(super) hint: Option<Duration>,
    /// Inbound messages delivered since the offset was last reported.
    pub(super) unreported: u32,
}

impl Link {
    /// The connection a dial with `token` opens.
    pub(super) fn dial(token: Option<AuthToken>) -> Self {
        Link {
            token,
            awaiting: "handshake reply",
            connected_at: None,
            error_before_close: false,
            hint: None,
            unreported: 0,
        }
    }

    /// Whether the connection, lost at `now`, had been up for at least
    /// `stable_after` (judged by uptime at the loss, not by a timer: after a
    /// suspend the close and the overdue timers arrive at one instant).
    pub(super) fn was_stable(&self, now: Instant, stable_after: Duration) -> bool {
        self.connected_at
            .is_some_and(|at| now.saturating_duration_since(at) >= stable_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_only_once_connected_for_long_enough() {
        let t0 = Instant::now();
        let stable = Duration::from_secs(10);
        let mut link = Link::dial(None);
        assert!(!link.was_stable(t0 + stable * 2, stable), "never connected");
        link.connected_at = Some(t0);
        assert!(!link.was_stable(t0 + stable - Duration::from_millis(1), stable));
        assert!(link.was_stable(t0 + stable, stable));
        // A loss reported before the connect reads as no uptime.
        link.connected_at = Some(t0 + stable);
        assert!(!link.was_stable(t0, stable));
    }
}
