//! What a reconnect needs to resume the server-side session: the resume
//! token and its lifetime, the session it names, and the inbound offsets.

use std::time::{Duration, Instant};

use crate::event::SessionInfo;
use crate::secret::ResumeToken;

/// Resume state: kept across connections, started again when the server
/// does not resume.
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// The latest resume token and its lifetime, counted from `lost_at`.
    token: Option<(ResumeToken, Duration)>,
    /// When the last established session's connection was lost (cleared
    /// while connected; a handshake that fails before WELCOME leaves it).
    pub(super) lost_at: Option<Instant>,
    info: Option<SessionInfo>,
    /// Highest inbound offset delivered to the application.
    delivered: u64,
    /// Highest inbound offset reported to the server.
    reported: u64,
}

/// Where an inbound offset stands against what was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// A replay of something the application already has: drop it.
    Replay,
    /// The next one, or one after a gap of `from..=to` the server skipped.
    New { gap: Option<(u64, u64)> },
}

impl Resume {
    /// The token a handshake at `now` may present: one whose lifetime,
    /// counted from the loss of the connection it came on (PROTOCOL.md
    /// 8.6), has not run out; a lifetime of 0 never resumes. An expired
    /// token is forgotten.
    pub(super) fn token_at(&mut self, now: Instant) -> Option<&ResumeToken> {
        let valid = match (&self.token, self.lost_at) {
            (Some((_, life)), Some(lost)) => {
                !life.is_zero() && now.saturating_duration_since(lost) < *life
            }
            (Some((_, life)), None) => !life.is_zero(),
            _ => false,
        };
        if !valid {
            self.token = None;
        }
        self.token.as_ref().map(|(t, _)| t)
    }

    /// The handshake completed: `resumed` says whether the server kept the
    /// session. Returns the session it did not resume, if there was one.
    pub(super) fn on_ready(
        &mut self,
        resumed: bool,
        token: Option<(ResumeToken, Duration)>,
        info: Option<SessionInfo>,
    ) -> Option<SessionInfo> {
        let mut previous = None;
        if !resumed {
            // Whether the server refused the token or we no longer presented
            // it (expired on our clock), the old session and its name are
            // gone, and a fresh session numbers its messages from 1 again.
            previous = self.info.take();
            self.delivered = 0;
            self.reported = 0;
        }
        self.token = token;
        self.info = info;
        previous
    }

    /// Takes inbound `offset` for delivery, if the application lacks it.
    pub(super) fn deliver(&mut self, offset: u64) -> Delivery {
        if offset <= self.delivered {
            return Delivery::Replay;
        }
        let gap = (offset > self.delivered + 1).then(|| (self.delivered + 1, offset - 1));
        self.delivered = offset;
        Delivery::New { gap }
    }

    /// The offset to report to the server, if it moved since the last
    /// report (the caller must send it).
    pub(super) fn take_report(&mut self) -> Option<u64> {
        (self.delivered > self.reported).then(|| {
            self.reported = self.delivered;
            self.delivered
        })
    }

    /// The highest inbound offset delivered to the application.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The server-side session, once a handshake reported one.
    pub(super) fn info(&self) -> Option<&SessionInfo> {
        self.info.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn token(life: Duration) -> Option<(ResumeToken, Duration)> {
        Some((ResumeToken::new("r"), life))
    }

    #[test]
    fn a_token_lives_its_lifetime_from_the_loss() {
        let t0 = Instant::now();
        let mut r = Resume::default();
        assert!(r.token_at(t0).is_none());
        r.on_ready(false, token(S * 10), None);
        // Not yet lost: good however long the connection lasted.
        assert!(r.token_at(t0 + S * 100).is_some());
        r.lost_at = Some(t0);
        assert!(r.token_at(t0 + S * 9).is_some());
        assert!(r.token_at(t0 + S * 10).is_none());
        // Forgotten once expired, even if the clock reads earlier again.
        assert!(r.token_at(t0).is_none());
    }

    #[test]
    fn a_zero_lifetime_never_resumes() {
        let mut r = Resume::default();
        r.on_ready(false, token(Duration::ZERO), None);
        assert!(r.token_at(Instant::now()).is_none());
    }

    #[test]
    fn offsets_skip_replays_report_gaps_and_restart_when_not_resumed() {
        let mut r = Resume::default();
        assert_eq!(r.deliver(1), Delivery::New { gap: None });
        assert_eq!(r.deliver(1), Delivery::Replay);
        assert_eq!(r.deliver(5), Delivery::New { gap: Some((2, 4)) });
        assert_eq!(r.take_report(), Some(5));
        assert_eq!(r.take_report(), None);
        r.on_ready(true, None, None);
        assert_eq!(r.delivered(), 5, "a resumed session keeps its offsets");
        assert_eq!(r.deliver(3), Delivery::Replay);
        r.on_ready(false, None, None);
        assert_eq!(r.delivered(), 0);
        assert_eq!(r.deliver(1), Delivery::New { gap: None });
        assert_eq!(r.take_report(), Some(1));
    }
}
