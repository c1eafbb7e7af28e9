//! Keepalive: pings on a quiet link and the pong deadline that catches a
//! half-open socket.
//!
//! Any inbound frame is proof of life, so a busy link sends no pings at all;
//! a quiet one is pinged every `interval`, and a ping that sees no frame at
//! all within `pong_timeout` declares the transport dead. The worst case from
//! the last frame to detection is `interval + pong_timeout`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rng::Rng;
use crate::timer::deadline;

/// What the ping timer should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PingDue {
    /// Something arrived lately: check again at `next`.
    NotYet { next: Instant },
    /// Send this ping, expect life by `deadline`, check again at `next`.
    Send {
        payload: Bytes,
        deadline: Instant,
        next: Instant,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Keepalive {
    /// The configured interval.
    configured: Duration,
    /// The interval on this transport: the configured one, or the server's
    /// when it asked for a shorter one.
    interval: Duration,
    pong_timeout: Duration,
    last_rx: Option<Instant>,
    pings: u64,
}

impl Keepalive {
    pub(crate) fn new(interval: Duration, pong_timeout: Duration) -> Self {
        Keepalive {
            configured: interval,
            interval,
            pong_timeout,
            last_rx: None,
            pings: 0,
        }
    }

    /// A new transport. Returns when the first ping is due: jittered inside
    /// the interval so a fleet that connected together does not ping together.
    /// `server`: the heartbeat interval the server announced, if any; a
    /// shorter one than configured wins for this transport.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        server: Option<Duration>,
    ) -> Instant {
        self.interval = match server {
            Some(s) if !s.is_zero() => s.min(self.configured),
            _ => self.configured,
        };
        // Forget the previous transport's traffic: the first timer must
        // really ping, or its jitter would be lost to a full quiet interval.
        self.last_rx = None;
        let nanos = u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        deadline(now, Duration::from_nanos(rng.between(nanos / 2, nanos)))
    }

    pub(crate) fn on_rx(&mut self, now: Instant) {
        self.last_rx = Some(now);
    }

    pub(crate) fn on_ping_timer(&mut self, now: Instant) -> PingDue {
        if let Some(rx) = self.last_rx {
            let quiet_since = deadline(rx, self.interval);
            if quiet_since > now {
                return PingDue::NotYet { next: quiet_since };
            }
        }
        self.pings += 1;
        PingDue::Send {
            payload: Bytes::copy_from_slice(&self.pings.to_be_bytes()),
            deadline: deadline(now, self.pong_timeout),
            next: deadline(now, self.interval),
        }
    }

    /// A probe after a wake or network change: ping now.
    pub(crate) fn probe(&mut self, now: Instant) -> (Bytes, Instant) {
        self.pings += 1;
        (
            Bytes::copy_from_slice(&self.pings.to_be_bytes()),
            deadline(now, self.pong_timeout),
        )
    }
}
