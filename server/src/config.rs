//! The node's settings: [`ServerConfig`] and its validating builder.

use redial_core::wire::Limits;

use crate::token::{TokenKey, TokenKeys};

/// The default bound on one store call: long enough for a store under
/// load, short enough that a hung one frees its connections promptly.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 5_000;

/// The default [`ServerConfigBuilder::read_buffer`]: 2 KiB, a whole HELLO,
/// SUBSCRIBE or small PUBLISH in one read, at a quarter of what an idle
/// connection held with 8 KiB.
pub const DEFAULT_READ_BUFFER: usize = 2 << 10;

/// The default [`ServerConfigBuilder::write_buffer`]: 16 KiB, as redial's
/// clients use.
pub const DEFAULT_WRITE_BUFFER: usize = 16 << 10;

/// Everything the session core and the runtime need to know, validated.
///
/// Build it with [`ServerConfig::builder`]; every field has a default but
/// the signing key.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub(crate) keys: TokenKeys,
    pub(crate) token_lifetime_ms: u64,
    pub(crate) hello_timeout_ms: u64,
    pub(crate) window_frames: usize,
    pub(crate) window_bytes: usize,
    pub(crate) fetch_batch: usize,
    pub(crate) max_backlog: u64,
    pub(crate) stall_timeout_ms: u64,
    pub(crate) max_inbox: usize,
    pub(crate) admission_per_sec: Option<u32>,
    pub(crate) going_away_retry_ms: u64,
    pub(crate) going_away_window_ms: u64,
    pub(crate) drain_timeout_ms: u64,
    pub(crate) store_timeout_ms: u64,
    pub(crate) seed: u64,
    pub(crate) limits: Limits,
    pub(crate) read_buffer: usize,
    pub(crate) write_buffer: usize,
}

impl ServerConfig {
    /// A builder with the defaults; it needs [`ServerConfigBuilder::key`].
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder::default()
    }

    /// The token lifetime sent in WELCOME, in milliseconds.
    pub fn token_lifetime_ms(&self) -> u64 {
        self.token_lifetime_ms
    }

    /// At most this many upgrades per second (`None`: no limit).
    pub fn admission_per_sec(&self) -> Option<u32> {
        self.admission_per_sec
    }

    /// GOING_AWAY's `retry_after_ms` and `window_ms` at shutdown.
    pub fn going_away(&self) -> (u64, u64) {
        (self.going_away_retry_ms, self.going_away_window_ms)
    }

    /// The longest a shutdown waits for connections to drain.
    pub fn drain_timeout_ms(&self) -> u64 {
        self.drain_timeout_ms
    }

    /// The frame limits the node decodes with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The longest one store call may take; see
    /// [`ServerConfigBuilder::store_timeout_ms`].
    pub fn store_timeout_ms(&self) -> u64 {
        self.store_timeout_ms
    }

    /// The seed; each connection derives its own from it.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The WebSocket read buffer each connection starts with, in bytes.
    pub fn read_buffer(&self) -> usize {
        self.read_buffer
    }

    /// The WebSocket write buffer threshold, in bytes.
    pub fn write_buffer(&self) -> usize {
        self.write_buffer
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No signing key was given.
    #[error("a token signing key is required")]
    MissingKey,
    /// A bound that must be at least 1 was 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The outbound window cannot hold one fetch batch.
    #[error("fetch_batch ({batch}) exceeds the outbound window ({window} frames)")]
    BatchOverWindow {
        /// The batch size.
        batch: usize,
        /// The window in frames.
        window: usize,
    },
    /// The backlog bound is below the outbound window, so a healthy client
    /// could never fill its window.
    #[error("max_backlog ({backlog}) is below the outbound window ({window} frames)")]
    BacklogUnderWindow {
        /// The backlog bound.
        backlog: u64,
        /// The window in frames.
        window: usize,
    },
}

/// Builds a [`ServerConfig`]; see each setter for its default.
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder {
    key: Option<TokenKey>,
    previous_key: Option<TokenKey>,
    token_lifetime_ms: u64,
    hello_timeout_ms: u64,
    window_frames: usize,
    window_bytes: usize,
    fetch_batch: usize,
    max_backlog: u64,
    stall_timeout_ms: u64,
    max_inbox: usize,
    admission_per_sec: Option<u32>,
    going_away_retry_ms: u64,
    going_away_window_ms: u64,
    drain_timeout_ms: u64,
    store_timeout_ms: u64,
    seed: u64,
    limits: Limits,
    read_buffer: usize,
    write_buffer: usize,
}

impl Default for ServerConfigBuilder {
    fn default() -> Self {
        ServerConfigBuilder {
            key: None,
            previous_key: None,
            token_lifetime_ms: 5 * 60 * 1000,
            hello_timeout_ms: 10_000,
            window_frames: 256,
            window_bytes: 4 << 20,
            fetch_batch: 64,
            max_backlog: crate::store::DEFAULT_BACKLOG as u64,
            stall_timeout_ms: 10_000,
            max_inbox: 64,
            admission_per_sec: None,
            going_away_retry_ms: 1000,
            going_away_window_ms: 5000,
            drain_timeout_ms: 5000,
            store_timeout_ms: DEFAULT_STORE_TIMEOUT_MS,
            seed: 0x5EED,
            limits: Limits::default(),
            read_buffer: DEFAULT_READ_BUFFER,
            write_buffer: DEFAULT_WRITE_BUFFER,
        }
    }
}

impl ServerConfigBuilder {
    /// The key new resume tokens are signed with (required). Every node of
    /// a cluster must have the same keys.
    pub fn key(mut self, key: TokenKey) -> Self {
        self.key = Some(key);
        self
    }

    /// A key being rotated out: tokens it signed are still accepted.
    pub fn previous_key(mut self, key: TokenKey) -> Self {
        self.previous_key = Some(key);
        self
    }

    /// How long a session can be resumed after its connection is lost.
    /// Default 5 minutes; 0 makes sessions unresumable.
    pub fn token_lifetime_ms(mut self, ms: u64) -> Self {
        self.token_lifetime_ms = ms;
        self
    }

    /// A connection that sends no HELLO this long after the upgrade is
    /// closed. Default 10 s.
    pub fn hello_timeout_ms(mut self, ms: u64) -> Self {
        self.hello_timeout_ms = ms;
        self
    }

    /// The outbound window: frames, and their bytes, handed to the socket
    /// and not yet written. No MESSAGE is fetched while it is full. Default
    /// 256 frames, 4 MiB.
    pub fn outbound_window(mut self, frames: usize, bytes: usize) -> Self {
        self.window_frames = frames;
        self.window_bytes = bytes;
        self
    }

    /// At most this many MESSAGEs per store fetch. Default 64.
    pub fn fetch_batch(mut self, n: usize) -> Self {
        self.fetch_batch = n;
        self
    }

    /// The most MESSAGEs a session may have sent and not RECEIVED. Past it
    /// the connection fetches nothing more; see [`Self::stall_timeout_ms`].
    /// Default [`DEFAULT_BACKLOG`](crate::store::DEFAULT_BACKLOG) (4096).
    pub fn max_backlog(mut self, n: u64) -> Self {
        self.max_backlog = n;
        self
    }

    /// A connection that has MESSAGEs waiting but cannot take them (its
    /// window or backlog is full) this long is closed with ERROR
    /// `slow_consumer` and 1013; the client resumes from its offset.
    /// Default 10 s.
    pub fn stall_timeout_ms(mut self, ms: u64) -> Self {
        self.stall_timeout_ms = ms;
        self
    }

    /// Client frames queued while a store call is in flight; past it the
    /// connection is closed with ERROR `rate_limited`. Default 64.
    pub fn max_inbox(mut self, n: usize) -> Self {
        self.max_inbox = n;
        self
    }

    /// At most this many upgrades per second; refused ones get 503 with an
    /// honest `Retry-After`. Default: no limit.
    pub fn admission_per_sec(mut self, per_sec: Option<u32>) -> Self {
        self.admission_per_sec = per_sec;
        self
    }

    /// GOING_AWAY at shutdown: clients wait `retry_ms` plus a random share
    /// of `window_ms` after the close. Default 1 s and 5 s.
    pub fn going_away(mut self, retry_ms: u64, window_ms: u64) -> Self {
        self.going_away_retry_ms = retry_ms;
        self.going_away_window_ms = window_ms;
        self
    }

    /// The longest a shutdown waits for connections to flush and close.
    /// Default 5 s.
    pub fn drain_timeout_ms(mut self, ms: u64) -> Self {
        self.drain_timeout_ms = ms;
        self
    }

    /// The longest one store call may take, in milliseconds. A call that
    /// takes longer fails as the store being unavailable: the connection
    /// that made it gets ERROR `internal` and closes with 1011, and its
    /// session stays resumable. [`crate::Node::publish`] and
    /// [`crate::Node::send_to`] are bounded the same way. Default
    /// [`DEFAULT_STORE_TIMEOUT_MS`] (5 s).
    pub fn store_timeout_ms(mut self, ms: u64) -> Self {
        self.store_timeout_ms = ms;
        self
    }

    /// Seed of the name generator and token nonces. Default fixed; give
    /// each node its own in a cluster.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Frame limits (default PROTOCOL.md 5).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The WebSocket read buffer each connection starts with, and the most
    /// one read takes from the socket (a larger message grows the buffer
    /// for as long as it is read). The WebSocket layer allocates and
    /// zero-fills it up front and never gives it back, so it is the largest
    /// part of what an idle connection costs. Default
    /// [`DEFAULT_READ_BUFFER`] (tungstenite's own default is 128 KiB).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = bytes;
        self
    }

    /// How many bytes of encoded frames the WebSocket layer gathers before
    /// it writes without waiting for the flush that ends every batch. Its
    /// buffer is allocated on the first write and never shrinks, so this
    /// caps what a connection keeps after a burst. Default
    /// [`DEFAULT_WRITE_BUFFER`], as redial's clients use (tungstenite's own
    /// default is 128 KiB).
    pub fn write_buffer(mut self, bytes: usize) -> Self {
        self.write_buffer = bytes;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<ServerConfig, ConfigError> {
        let key = self.key.ok_or(ConfigError::MissingKey)?;
        let mut keys = TokenKeys::new(key);
        if let Some(p) = self.previous_key {
            keys = keys.with_previous(p);
        }
        for (v, name) in [
            (self.window_frames, "outbound window frames"),
            (self.window_bytes, "outbound window bytes"),
            (self.fetch_batch, "fetch_batch"),
            (self.max_inbox, "max_inbox"),
            (self.read_buffer, "read_buffer"),
            (self.write_buffer, "write_buffer"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.store_timeout_ms == 0 {
            return Err(ConfigError::Zero("store_timeout_ms"));
        }
        if self.admission_per_sec == Some(0) {
            return Err(ConfigError::Zero("admission_per_sec"));
        }
        if self.fetch_batch > self.window_frames {
            return Err(ConfigError::BatchOverWindow {
                batch: self.fetch_batch,
                window: self.window_frames,
            });
        }
        if self.max_backlog < self.window_frames as u64 {
            return Err(ConfigError::BacklogUnderWindow {
                backlog: self.max_backlog,
                window: self.window_frames,
            });
        }
        Ok(ServerConfig {
            keys,
            token_lifetime_ms: self.token_lifetime_ms,
            hello_timeout_ms: self.hello_timeout_ms,
            window_frames: self.window_frames,
            window_bytes: self.window_bytes,
            fetch_batch: self.fetch_batch,
            max_backlog: self.max_backlog,
            stall_timeout_ms: self.stall_timeout_ms,
            max_inbox: self.max_inbox,
            admission_per_sec: self.admission_per_sec,
            going_away_retry_ms: self.going_away_retry_ms,
            going_away_window_ms: self.going_away_window_ms,
            drain_timeout_ms: self.drain_timeout_ms,
            store_timeout_ms: self.store_timeout_ms,
            seed: self.seed,
            limits: self.limits,
            read_buffer: self.read_buffer,
            write_buffer: self.write_buffer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(1, [7; 32])
    }

    #[test]
    fn defaults_build_with_a_key_and_not_without() {
        assert_eq!(
            ServerConfig::builder().build().unwrap_err(),
            ConfigError::MissingKey
        );
        let c = ServerConfig::builder().key(key()).build().unwrap();
        assert_eq!(c.token_lifetime_ms(), 300_000);
        assert!(c.fetch_batch <= c.window_frames);
    }

    #[test]
    fn inconsistent_bounds_are_refused() {
        let b = || ServerConfig::builder().key(key());
        assert_eq!(
            b().fetch_batch(0).build().unwrap_err(),
            ConfigError::Zero("fetch_batch")
        );
        assert!(matches!(
            b().outbound_window(8, 1 << 20).fetch_batch(16).build(),
            Err(ConfigError::BatchOverWindow { .. })
        ));
        assert!(matches!(
            b().max_backlog(10).build(),
            Err(ConfigError::BacklogUnderWindow { .. })
        ));
        assert_eq!(
            b().admission_per_sec(Some(0)).build().unwrap_err(),
            ConfigError::Zero("admission_per_sec")
        );
    }

    #[test]
    fn debug_hides_the_keys() {
        let c = ServerConfig::builder().key(key()).build().unwrap();
        assert!(!format!("{c:?}").contains("7, 7"));
    }
}
