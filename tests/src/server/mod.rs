//! The reference server: speaks redial's `Wire` protocol (see `PROTOCOL.md`)
//! and takes scripted faults at runtime.
//!
//! Start one with [`Server::start`], point clients at [`ServerControl::url`],
//! and drive it through the returned [`ServerHandle`] (or cloned
//! [`ServerControl`]s): close connections, refuse handshakes, throttle
//! admissions, stop answering pings, restart with or without the signing
//! key. [`ServerControl::stats`] and [`ServerControl::applied`] let a test
//! check what the server really did, e.g. that every publish was applied
//! exactly once and in order.
//!
//! Behaviour choices the protocol leaves open:
//! * One ACK per PUBLISH, cumulative, queued right after the MESSAGEs that
//!   publish caused (a duplicate is acked with the current high-water mark).
//! * A requested name is refused only while a *connected* session holds it; a
//!   session waiting to be resumed gives its name up and is forgotten.
//! * A token is honoured for `token_lifetime` after its session's connection
//!   was lost (PROTOCOL.md 8.6); it never expires while the session is
//!   connected. Resuming a session that is still connected (a half-open old
//!   link) takes it over and closes the old connection with 1000.
//! * `restart(true)` keeps the signing key *and* the session table, like a
//!   restart that persisted its state: tokens resume the same session with
//!   its subscriptions and replay buffer. `restart(false)` rotates the key
//!   and forgets every session: old tokens look forged, so clients get fresh
//!   sessions with new names. Scripted faults and stats survive both.

mod admission;
pub mod client;
mod conn;
pub mod names;
mod state;
pub mod token;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redial_core::payload::{Payload, Text};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::{JoinHandle, JoinSet};

use self::admission::Admission;
use self::state::{Inner, Rules};
use self::token::TokenSigner;

/// Everything that can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listener failed.
    #[error("binding the listener: {0}")]
    Io(#[from] io::Error),
    /// The OS could not supply randomness for the signing key.
    #[error("no randomness for the signing key: {0}")]
    Random(getrandom::Error),
    /// The harness only ever listens on loopback.
    #[error("refusing to listen on {0}: only loopback addresses are allowed")]
    NotLoopback(SocketAddr),
}

/// How the server starts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; must be a loopback address. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// How long a token stays usable after its connection is lost.
    /// Default 24 h.
    pub token_lifetime: Duration,
    /// MESSAGEs kept per session for replay; older ones are dropped (the
    /// client then sees a gap). Default 1024.
    pub replay_capacity: usize,
    /// Channels whose SUBSCRIBE is answered with SUBSCRIBE_ERROR
    /// (`unauthorized`).
    pub deny_channels: Vec<String>,
    /// At most this many WebSocket upgrades per second; the rest get 503
    /// with `Retry-After`. Default: no limit.
    pub admission_per_sec: Option<u32>,
    /// Seed for generated names, so a run can be repeated name for name.
    pub name_seed: u64,
    /// Signing key for tokens; `None` draws one from the OS.
    pub signing_key: Option<[u8; 32]>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token_lifetime: Duration::from_secs(24 * 60 * 60),
            replay_capacity: 1024,
            deny_channels: Vec::new(),
            admission_per_sec: None,
            name_seed: 0x5EED,
            signing_key: None,
        }
    }
}

/// An HTTP refusal of the WebSocket upgrade, for
/// [`ServerControl::reject_handshakes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// The HTTP status, e.g. 401, 403, 429 or 503. Values that are not valid
    /// statuses are sent as 500.
    pub status: u16,
    /// Sent as `Retry-After` in whole seconds, rounded up.
    pub retry_after: Option<Duration>,
}

/// Global counters. Every field only grows, except `live_connections`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Connections currently open (handshaking or in a session).
    pub live_connections: usize,
    /// Upgrades refused with an HTTP error (scripted, admission control or
    /// a missing `redial.v1` subprotocol).
    pub handshakes_rejected: u64,
    /// Of those, refused by admission control.
    pub admissions_throttled: u64,
    /// WELCOMEs for fresh sessions.
    pub sessions_created: u64,
    /// WELCOMEs that resumed a session.
    pub sessions_resumed: u64,
    /// HELLOs whose token was present but not honoured.
    pub tokens_rejected: u64,
    /// HELLOs answered with ERROR (bad version, name unavailable).
    pub hello_errors: u64,
    /// PUBLISHes applied (first time seen).
    pub publishes_applied: u64,
    /// PUBLISHes acknowledged but not applied again.
    pub duplicates_dropped: u64,
    /// MESSAGEs numbered and queued for sessions (replays not counted).
    pub messages_queued: u64,
    /// Frames that broke the protocol and closed their connection (1002).
    pub protocol_errors: u64,
    /// Calls to [`ServerControl::restart`].
    pub restarts: u64,
}

/// One applied PUBLISH, as recorded for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedPublish {
    /// Its seq.
    pub seq: u64,
    /// Its channel, if any.
    pub channel: Option<String>,
    /// Its payload.
    pub payload: Payload,
}

/// A snapshot of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's name.
    pub name: String,
    /// The id sent in WELCOME.
    pub session_id: String,
    /// Whether a connection is attached.
    pub connected: bool,
    /// Highest PUBLISH seq stored.
    pub last_client_seq: u64,
    /// Last MESSAGE offset assigned.
    pub last_offset: u64,
    /// MESSAGEs held for replay.
    pub replay_len: usize,
    /// Current subscriptions, sorted.
    pub subscriptions: Vec<String>,
    /// PUBLISHes applied in this session.
    pub publishes_applied: u64,
    /// Duplicate PUBLISHes in this session.
    pub duplicates_dropped: u64,
    /// Times the session was resumed.
    pub resumes: u64,
}

/// Broadcast to every connection task.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    Close(u16, String),
    GoingAway { retry_after_ms: u64, window_ms: u64 },
    Restart,
    Stop,
}

/// Faults and knobs that can change at runtime.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub reject: Option<Reject>,
    pub admission_per_sec: Option<u32>,
    pub admission: Admission,
    pub close_after: Option<u64>,
    pub deny_channels: Vec<String>,
}

pub(crate) struct State {
    pub addr: SocketAddr,
    pub inner: Mutex<Inner>,
    pub faults: Mutex<Faults>,
    pub control: broadcast::Sender<Control>,
    pub stalled: watch::Sender<bool>,
    pub stats: watch::Sender<ServerStats>,
    clock_offset_ms: AtomicU64,
    pub next_conn: AtomicU64,
}

impl State {
    /// The server's clock (Unix ms), shifted by [`ServerControl::advance_clock`].
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        real.saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    pub fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }
}

/// Locks a mutex, carrying on if a holder panicked: a panicking test thread
/// must not turn every later call into a second panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Entry point; see [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `config.listen` (loopback only) and starts serving.
    ///
    /// Must be called inside a tokio runtime. Keep the returned handle alive:
    /// dropping it stops the server.
    pub async fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
        if !config.listen.ip().is_loopback() {
            return Err(ServerError::NotLoopback(config.listen));
        }
        let signer = match config.signing_key {
            Some(key) => TokenSigner::new(key),
            None => TokenSigner::random().map_err(ServerError::Random)?,
        };
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (control, _) = broadcast::channel(64);
        let rules = Rules {
            lifetime_ms: u64::try_from(config.token_lifetime.as_millis()).unwrap_or(u64::MAX),
            replay_capacity: config.replay_capacity,
        };
        let state = Arc::new(State {
            addr,
            inner: Mutex::new(Inner::new(rules, signer, config.name_seed)),
            faults: Mutex::new(Faults {
                admission_per_sec: config.admission_per_sec,
                deny_channels: config.deny_channels,
                ..Faults::default()
            }),
            control,
            stalled: watch::Sender::new(false),
            stats: watch::Sender::new(ServerStats::default()),
            clock_offset_ms: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(ServerHandle {
            control: ServerControl { state },
            accept: Some(accept),
        })
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Owned here so that aborting this task (on stop or drop) takes every
    // connection down with it.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors and the like: don't spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // Subscribe before spawning, so a control sent right after
                // this accept reaches the connection.
                let control = state.control.subscribe();
                state.stats.send_modify(|s| {
                    s.connections += 1;
                    s.live_connections += 1;
                });
                conns.spawn(conn::run(stream, state.clone(), control));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Owns a running server: stops it when dropped.
///
/// Derefs to [`ServerControl`]; use [`ServerHandle::control`] for a clone to
/// hand to other tasks.
#[derive(Debug)]
pub struct ServerHandle {
    control: ServerControl,
    accept: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// A cloneable controller for the same server.
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }

    /// Closes every connection with 1001 and stops listening. Waits at most
    /// two seconds for the close handshakes.
    pub async fn stop(self) {
        let _ = self.control.state.control.send(Control::Stop);
        self.finish().await;
    }

    /// Shuts down as PROTOCOL.md sections 1 and 8.7 ask: GOING_AWAY
    /// (`retry_after`, `window`) on every connection, then close 1001, then
    /// stop listening. Waits at most two seconds for the close handshakes.
    pub async fn shut_down(self, retry_after: Duration, window: Duration) {
        self.control.going_away(retry_after, window);
        self.finish().await;
    }

    /// Waits (two seconds at most) for the connections to close, then stops
    /// listening.
    async fn finish(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.control.wait_for(|s| s.live_connections == 0),
        )
        .await;
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

impl std::ops::Deref for ServerHandle {
    type Target = ServerControl;

    fn deref(&self) -> &ServerControl {
        &self.control
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        // Abrupt: connections are dropped without a close handshake. Use
        // `stop` for a polite shutdown.
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

/// Cloneable controller: faults, knobs and observations. Every method
/// returns at once except the `wait_*` ones.
#[derive(Clone)]
pub struct ServerControl {
    state: Arc<State>,
}

impl std::fmt::Debug for ServerControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerControl")
            .field("addr", &self.state.addr)
            .finish_non_exhaustive()
    }
}

impl ServerControl {
    /// The listening address (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `ws://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.state.addr)
    }

    /// Closes every live connection with `code` and `reason` (close
    /// handshake, no GOING_AWAY). Sessions stay resumable.
    pub fn close_all(&self, code: u16, reason: &str) {
        let _ = self
            .state
            .control
            .send(Control::Close(code, reason.to_owned()));
    }

    /// Makes every connection (live or new) drop abruptly, without a close
    /// frame, right after it has processed its `n`-th frame after HELLO and
    /// before any reply to that frame is written: e.g. a PUBLISH is applied
    /// but its ACK is lost. `None` turns this off.
    pub fn close_after(&self, n: Option<u64>) {
        self.state.faults().close_after = n;
    }

    /// Sends GOING_AWAY(`retry_after`, `window`) on every live connection,
    /// then closes each with 1001.
    pub fn going_away(&self, retry_after: Duration, window: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let _ = self.state.control.send(Control::GoingAway {
            retry_after_ms: ms(retry_after),
            window_ms: ms(window),
        });
    }

    /// Refuses every WebSocket upgrade with `reject` until called with
    /// `None`. Live connections are unaffected.
    pub fn reject_handshakes(&self, reject: Option<Reject>) {
        self.state.faults().reject = reject;
    }

    /// Admits at most `per_sec` upgrades per second (503 with an honest
    /// `Retry-After` for the rest); `None` lifts the limit.
    pub fn set_admission_limit(&self, per_sec: Option<u32>) {
        let mut f = self.state.faults();
        f.admission_per_sec = per_sec;
        f.admission.clear();
    }

    /// While `true`, every connection in a session stops reading and
    /// writing: pings go unanswered (tungstenite only answers while it
    /// reads), messages queue up, nothing is closed. New connections still
    /// complete their HTTP upgrade but get no WELCOME. `false` resumes them.
    pub fn stop_answering_pings(&self, stop: bool) {
        self.state.stalled.send_replace(stop);
    }

    /// Refuses SUBSCRIBE to `channels` from now on (replaces the list).
    pub fn set_denied_channels(&self, channels: Vec<String>) {
        self.state.faults().deny_channels = channels;
    }

    /// Drops every connection (close 1012) and, with `keep_key`, keeps the
    /// signing key and sessions so tokens resume; without it, rotates the key
    /// and forgets every session. See the module docs.
    pub fn restart(&self, keep_key: bool) {
        let new_signer = if keep_key {
            None
        } else {
            // Without OS randomness, derive a new key from the old
            // generator state: still different, which is all a test needs.
            Some(TokenSigner::random().unwrap_or_else(|_| {
                let n = self.state.now_ms().to_le_bytes();
                let mut key = [0x5Au8; 32];
                key[..8].copy_from_slice(&n);
                TokenSigner::new(key)
            }))
        };
        let now = self.state.now_ms();
        // Under the table lock, so no HELLO can attach between the control
        // message and the table change.
        let mut inner = self.state.inner();
        let _ = self.state.control.send(Control::Restart);
        inner.restart(keep_key, new_signer, now);
        drop(inner);
        self.state.faults().admission.clear();
        self.state.stats.send_modify(|s| s.restarts += 1);
    }

    /// Moves the server's clock forward, e.g. to expire tokens without
    /// waiting. Affects only token expiry.
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.state.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Publishes `payload` on `channel` from the server side. Returns how
    /// many sessions it was queued for.
    pub fn publish(&self, channel: &str, payload: Payload) -> usize {
        let mut inner = self.state.inner();
        let mut n = 0;
        self.state.stats.send_modify(|s| {
            n = inner.fan_out(&Text::from(channel), payload, s);
        });
        n
    }

    /// Sends `payload` as a MESSAGE without channel to the session named
    /// `name`. Returns false if there is no such session.
    pub fn send_to(&self, name: &str, payload: Payload) -> bool {
        let mut inner = self.state.inner();
        let Some(sid) = inner.session_by_name(name) else {
            return false;
        };
        let mut ok = false;
        self.state.stats.send_modify(|s| {
            ok = inner.deliver(sid, None, payload, s);
        });
        ok
    }

    /// A snapshot of the global counters.
    pub fn stats(&self) -> ServerStats {
        self.state.stats.borrow().clone()
    }

    /// Waits until `pred` holds for the counters, without polling.
    ///
    /// Wrap it in a timeout: it waits forever if the condition never holds.
    pub async fn wait_for(&self, mut pred: impl FnMut(&ServerStats) -> bool) -> ServerStats {
        let mut rx = self.state.stats.subscribe();
        if let Ok(s) = rx.wait_for(|s| pred(s)).await {
            return s.clone();
        }
        let last = rx.borrow().clone();
        last
    }

    /// The session currently named `name`.
    pub fn session(&self, name: &str) -> Option<SessionInfo> {
        self.state.inner().info(name)
    }

    /// Names of all sessions in the table (connected or resumable), sorted.
    pub fn session_names(&self) -> Vec<String> {
        self.state.inner().names()
    }

    /// Every publish applied for sessions named `name`, in the order they
    /// were applied, across resumes and restarts.
    pub fn applied(&self, name: &str) -> Vec<AppliedPublish> {
        self.state.inner().applied(name)
    }
}
