//! Session configuration: a builder with validated defaults.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::close_policy::{ClosePolicy, CloseRule};
use crate::payload::Text;
use crate::wire::Limits;

/// The most endpoints one session rotates over.
pub(crate) const MAX_ENDPOINTS: usize = 1024;

/// A configuration value was out of range. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The backoff policy is invalid.
    #[error("invalid backoff policy: {0}")]
    Backoff(String),
    /// A field is out of range.
    #[error("invalid {field}: {why}")]
    OutOfRange {
        /// The builder method's name.
        field: &'static str,
        /// What is allowed.
        why: &'static str,
    },
}

/// Everything a [`Session`](crate::Session) needs to know up front.
///
/// Make one with [`Config::builder`]; every field has a production default
/// and [`ConfigBuilder::build`] rejects values that cannot work.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) seed: Option<u64>,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) pong_timeout: Duration,
    pub(crate) stable_after: Duration,
    pub(crate) stuck_after: Duration,
    pub(crate) token_provider: bool,
    pub(crate) token_failure_threshold: u32,
    pub(crate) close_policy: ClosePolicy,
    pub(crate) queue_max_messages: usize,
    pub(crate) queue_max_bytes: usize,
    pub(crate) close_linger: Duration,
    pub(crate) wire_limits: Limits,
    pub(crate) session_name: Option<Text>,
    pub(crate) ack_delay: Duration,
    pub(crate) ack_every: u32,
    pub(crate) max_server_delay: Duration,
    pub(crate) endpoints: usize,
    pub(crate) max_calls: usize,
    pub(crate) call_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: None,
            backoff: Backoff::default(),
            max_attempts: 100,
            connect_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(15)),
            pong_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(5),
            stuck_after: Duration::from_secs(30),
            token_provider: false,
            token_failure_threshold: 3,
            close_policy: ClosePolicy::default(),
            queue_max_messages: 1024,
            queue_max_bytes: 4 * 1024 * 1024,
            close_linger: Duration::from_secs(10),
            wire_limits: Limits::default(),
            session_name: None,
            ack_delay: Duration::from_millis(50),
            ack_every: 64,
            max_server_delay: Duration::from_secs(3600),
            endpoints: 1,
            max_calls: 256,
            call_timeout: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// A builder holding the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// The random seed, when one was set. A session without one uses 0: set
    /// a different seed per client (the adapters draw one from the OS) or a
    /// fleet will jitter in lockstep.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// The same configuration with `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The same configuration with token fetching on or off (adapters turn
    /// it on when they are given a token provider).
    pub fn with_token_provider(mut self, on: bool) -> Self {
        self.token_provider = on;
        self
    }

    /// The same configuration with `count` endpoints to rotate over (the
    /// adapters set it from their URL list; 0 is taken as 1).
    pub fn with_endpoints(mut self, count: usize) -> Self {
        self.endpoints = count.clamp(1, MAX_ENDPOINTS);
        self
    }

    /// How many endpoints the session rotates over (see
    /// [`Action::Dial`](crate::Action::Dial)'s `endpoint`).
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// The backoff policy.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Reconnect attempts per outage before giving up (0 = unlimited).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long a dial (token fetch, upgrade and, for Wire, WELCOME) may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Keepalive ping interval; `None` when keepalive is off.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }

    /// How long after a ping silence means the transport is dead.
    pub fn pong_timeout(&self) -> Duration {
        self.pong_timeout
    }

    /// How long a connection must stay up before the ladder resets.
    pub fn stable_after(&self) -> Duration {
        self.stable_after
    }

    /// How far into an outage [`Event::Stuck`](crate::Event::Stuck) fires.
    pub fn stuck_after(&self) -> Duration {
        self.stuck_after
    }

    /// Whether a token is fetched before every dial.
    pub fn token_provider(&self) -> bool {
        self.token_provider
    }

    /// The close-code table.
    pub fn close_policy(&self) -> &ClosePolicy {
        &self.close_policy
    }

    /// Outbound queue limit in messages.
    pub fn queue_max_messages(&self) -> usize {
        self.queue_max_messages
    }

    /// Outbound queue limit in payload bytes.
    pub fn queue_max_bytes(&self) -> usize {
        self.queue_max_bytes
    }

    /// The most calls waiting for a connection or in flight at once.
    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    /// How long a call waits for its reply unless it says otherwise.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Wire decoder limits.
    pub fn wire_limits(&self) -> &Limits {
        &self.wire_limits
    }

    /// The longest wait a server can impose through Retry-After, GOING_AWAY
    /// or a close-policy floor (before the 10 % jitter).
    pub fn max_server_delay(&self) -> Duration {
        self.max_server_delay
    }

    /// The session name requested in HELLO ([`Wire`](crate::Wire) only).
    pub fn session_name(&self) -> Option<&Text> {
        self.session_name.as_ref()
    }
}

/// Builds a [`Config`]; every setter has a validated default.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ConfigBuilder {
    /// The seed for jitter. Same seed, same inputs: same outputs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    setter!(
        /// The backoff policy (default: [`Backoff::default`], a full-jitter
        /// first retry within 2 s, then 2.4 s x1.6 +-20 % up to 20 s).
        backoff: Backoff
    );
    setter!(
        /// Reconnect attempts per outage before giving up; 0 = unlimited
        /// (default 100: with the default backoff that is at least 25
        /// minutes of retrying, whatever the draws).
        max_attempts: u32
    );
    setter!(
        /// Time allowed for token fetch + dial + (Wire) WELCOME (default 10 s).
        connect_timeout: Duration
    );
    setter!(
        /// Keepalive ping interval, `None` to turn keepalive off (default 15 s).
        ping_interval: Option<Duration>
    );
    setter!(
        /// Silence after a ping that means the transport is dead (default 10 s).
        pong_timeout: Duration
    );
    setter!(
        /// Uptime after which the ladder resets (default 5 s). Shorter-lived
        /// connections count as failures: this is the flap damping.
        stable_after: Duration
    );
    setter!(
        /// When a still-running outage is reported as stuck (default 30 s).
        stuck_after: Duration
    );
    setter!(
        /// Fetch a token before every dial (default off; the adapters turn it on
        /// when given a provider).
        token_provider: bool
    );
    setter!(
        /// Consecutive provider failures before
        /// [`Event::TokenProviderFailing`](crate::Event::TokenProviderFailing) (default 3).
        token_failure_threshold: u32
    );
    setter!(
        /// The close-code table (default: see [`ClosePolicy`]).
        close_policy: ClosePolicy
    );
    setter!(
        /// Outbound queue limit in messages (default 1024).
        queue_max_messages: usize
    );
    setter!(
        /// Outbound queue limit in payload bytes (default 4 MiB).
        queue_max_bytes: usize
    );
    setter!(
        /// How long a graceful close waits for the queue to drain (default 10 s).
        close_linger: Duration
    );
    setter!(
        /// Wire decoder limits (default: [`Limits::default`]).
        wire_limits: Limits
    );
    setter!(
        /// Delay before acknowledging received messages, so acks coalesce
        /// (default 50 ms; [`Wire`](crate::Wire) only).
        ack_delay: Duration
    );
    setter!(
        /// Acknowledge at once after this many unacknowledged messages (default 64).
        ack_every: u32
    );
    setter!(
        /// Cap on any wait a server asks for (Retry-After, GOING_AWAY) and on
        /// close-policy floors, so a broken or hostile server cannot park the
        /// client for days (default 1 h).
        max_server_delay: Duration
    );
    setter!(
        /// The most calls waiting for a connection or in flight at once
        /// (default 256; at least 1): one more is refused with
        /// [`SendError::TooManyCalls`](crate::SendError::TooManyCalls).
        max_calls: usize
    );
    setter!(
        /// How long a call waits for its reply, from the call, waiting for a
        /// connection included, unless its
        /// [`CallOptions`](crate::CallOptions) say otherwise (default 30 s).
        call_timeout: Duration
    );

    /// How many endpoints to rotate over (default 1, at most 1024). The
    /// session starts on one drawn from the seed, stays while connections
    /// hold and moves to the next after a failure; each
    /// [`Action::Dial`](crate::Action::Dial) names the one to dial.
    pub fn endpoints(mut self, count: usize) -> Self {
        self.config.endpoints = count;
        self
    }

    /// The session name to request in HELLO ([`Wire`](crate::Wire) only).
    pub fn session_name(mut self, name: impl Into<Text>) -> Self {
        self.config.session_name = Some(name.into());
        self
    }

    /// Checks every field and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        c.backoff.validate()?;
        let range = |field, why| Err(ConfigError::OutOfRange { field, why });
        if c.connect_timeout < Duration::from_millis(1) {
            return range("connect_timeout", "must be at least 1 ms");
        }
        if let Some(p) = c.ping_interval {
            if p < Duration::from_millis(10) {
                return range("ping_interval", "must be at least 10 ms (or None)");
            }
        }
        if c.pong_timeout < Duration::from_millis(1) {
            return range("pong_timeout", "must be at least 1 ms");
        }
        if c.stuck_after.is_zero() {
            return range("stuck_after", "must be above zero");
        }
        if c.token_failure_threshold == 0 {
            return range("token_failure_threshold", "must be at least 1");
        }
        if c.queue_max_messages == 0 {
            return range("queue_max_messages", "must be at least 1");
        }
        if c.queue_max_bytes == 0 {
            return range("queue_max_bytes", "must be at least 1");
        }
        if c.endpoints == 0 || c.endpoints > MAX_ENDPOINTS {
            return range("endpoints", "must be 1 to 1024");
        }
        if c.max_calls == 0 {
            return range("max_calls", "must be at least 1");
        }
        if c.call_timeout < Duration::from_millis(1) {
            return range("call_timeout", "must be at least 1 ms");
        }
        if c.ack_every == 0 {
            return range("ack_every", "must be at least 1");
        }
        if let Some(name) = &c.session_name {
            if name.is_empty() || name.len() > c.wire_limits.max_name_len {
                return range("session_name", "must be 1 byte up to the wire name limit");
            }
        }
        let day = Duration::from_secs(24 * 3600);
        for rule in c.close_policy.overrides() {
            if matches!(rule, CloseRule::Floor(f) if *f > day) {
                return range("close_policy", "a Floor must be at most 24 h");
            }
        }
        for (field, d) in [
            ("connect_timeout", c.connect_timeout),
            ("pong_timeout", c.pong_timeout),
            ("stable_after", c.stable_after),
            ("stuck_after", c.stuck_after),
            ("close_linger", c.close_linger),
            ("ack_delay", c.ack_delay),
            ("max_server_delay", c.max_server_delay),
            ("call_timeout", c.call_timeout),
            ("ping_interval", c.ping_interval.unwrap_or_default()),
        ] {
            if d > day {
                return range(field, "must be at most 24 h");
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.max_attempts(), 100);
        assert_eq!(c.connect_timeout(), Duration::from_secs(10));
        assert_eq!(c.ping_interval(), Some(Duration::from_secs(15)));
        assert_eq!(c.pong_timeout(), Duration::from_secs(10));
        assert_eq!(c.stable_after(), Duration::from_secs(5));
        assert_eq!(c.stuck_after(), Duration::from_secs(30));
        assert_eq!(c.backoff(), &Backoff::default());
        assert_eq!(c.seed(), None);
        assert_eq!(c.endpoints(), 1);
        assert_eq!(c.max_calls(), 256);
        assert_eq!(c.call_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn endpoint_counts_are_validated() {
        for bad in [0, 1025] {
            let e = Config::builder().endpoints(bad).build().unwrap_err();
            assert!(e.to_string().contains("endpoints"), "{bad}: {e}");
        }
        assert_eq!(
            Config::builder().endpoints(3).build().unwrap().endpoints(),
            3
        );
        assert_eq!(Config::default().with_endpoints(0).endpoints(), 1);
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = Config::builder()
            .ping_interval(Some(Duration::ZERO))
            .build();
        assert!(matches!(
            e,
            Err(ConfigError::OutOfRange {
                field: "ping_interval",
                ..
            })
        ));
        let e = Config::builder().queue_max_messages(0).build().unwrap_err();
        assert!(e.to_string().contains("queue_max_messages"), "{e}");
        let e = Config::builder()
            .backoff(Backoff::full_jitter(Duration::ZERO, Duration::from_secs(1)))
            .build()
            .unwrap_err();
        assert!(matches!(e, ConfigError::Backoff(_)));
        let e = Config::builder().session_name("").build().unwrap_err();
        assert!(e.to_string().contains("session_name"));
    }

    #[test]
    fn close_policy_floors_beyond_a_day_are_rejected() {
        for f in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 2),
            Duration::from_secs(24 * 3600 + 1),
        ] {
            let policy = ClosePolicy::new().with_code(4100, CloseRule::Floor(f));
            let e = Config::builder().close_policy(policy).build().unwrap_err();
            assert!(
                matches!(
                    e,
                    ConfigError::OutOfRange {
                        field: "close_policy",
                        ..
                    }
                ),
                "{f:?}: {e}"
            );
            let policy = ClosePolicy::new().with_range(4100..=4199, CloseRule::Floor(f));
            assert!(Config::builder().close_policy(policy).build().is_err());
        }
        let day = ClosePolicy::new().with_code(4100, CloseRule::Floor(Duration::from_secs(86_400)));
        assert!(Config::builder().close_policy(day).build().is_ok());
    }
}
