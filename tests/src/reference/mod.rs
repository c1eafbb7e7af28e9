//! The reference server: redial-server (the [`redial_server::Node`] on its
//! memory store) behind the harness API the suites script faults with.
//!
//! Start one with [`Server::start`], point clients at [`ServerControl::url`],
//! and drive it through the returned [`ServerHandle`] (or cloned
//! [`ServerControl`]s): close connections, refuse handshakes, throttle
//! admissions, stop answering pings, restart with or without the signing
//! key. [`ServerControl::stats`] and [`ServerControl::applied`] let a test
//! check what the server really did, e.g. that every publish was applied
//! exactly once and in order.
//!
//! The protocol is the library's; the harness adds only fault switches, as
//! decorators over the library's extension points (the authorization hook,
//! the [`redial_server::Policy`], the node clock, admission control, a
//! socket wrapper and a [`redial_server::store::Store`] that records). What
//! the harness itself decides:
//! * A PUBLISH without a channel is a request; the harness answers it by
//!   sending the payload back to its session as a direct MESSAGE.
//! * `restart(true)` keeps the signing key *and* the store, like a restart
//!   that persisted its state: tokens resume the same session with its
//!   subscriptions and replay buffer. `restart(false)` rotates the key and
//!   starts on an empty store: old tokens look forged, so clients get fresh
//!   sessions with new names. Scripted faults, stats and the record of
//!   applied publishes survive both.

pub mod client;
mod faults;
mod record;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use redial_core::payload::Payload;
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::Node;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use self::faults::{DenyChannels, FaultSocket, Faults};
use self::record::{Log, Recorder};

/// Everything that can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listener failed.
    #[error("binding the listener: {0}")]
    Io(#[from] io::Error),
    /// The OS could not supply randomness for the signing key.
    #[error("no randomness for the signing key: {0}")]
    Random(getrandom::Error),
    /// A setting redial-server refuses (e.g. a replay capacity of 0).
    #[error("invalid setting: {0}")]
    Config(String),
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

/// Locks a mutex, carrying on if a holder panicked: a panicking test thread
/// must not turn every later call into a second panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of nodes replaced by `restart(false)`, kept for the totals.
#[derive(Debug, Default, Clone, Copy)]
struct Retired {
    refused: u64,
    throttled: u64,
    protocol_errors: u64,
}

/// The node serving now and what it serves from.
struct Current {
    node: Node,
    store: Arc<Recorder>,
    key_id: u8,
}

struct State {
    addr: SocketAddr,
    /// The runtime serving: `restart(false)` builds its node there, since
    /// callers may be on another runtime (async-std, smol).
    runtime: tokio::runtime::Handle,
    config: ServerConfig,
    faults: Arc<Faults>,
    log: Arc<Mutex<Log>>,
    current: Mutex<Current>,
    retired: Mutex<Retired>,
}

impl State {
    fn node(&self) -> Node {
        lock(&self.current).node.clone()
    }

    fn store(&self) -> Arc<Recorder> {
        lock(&self.current).store.clone()
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.config.token_lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    fn new_store(&self) -> Result<Arc<Recorder>, ServerError> {
        let memory = MemoryStore::builder()
            .backlog(self.config.replay_capacity)
            .build()
            .map_err(|e| ServerError::Config(format!("replay_capacity: {e}")))?;
        Ok(Arc::new(Recorder::new(
            memory,
            self.log.clone(),
            self.faults.changed.clone(),
        )))
    }
}

/// A node over `store` signing with `key`, with the harness's hooks.
fn build_node(
    config: &ServerConfig,
    faults: &Arc<Faults>,
    key: TokenKey,
    store: Arc<Recorder>,
) -> Result<Node, ServerError> {
    // Each key's node draws other names than the last one's: a client that
    // gets a fresh session after `restart(false)` gets a new name.
    let generation = u64::from(key.id().wrapping_sub(1));
    let seed = config.name_seed ^ generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let cfg = redial_server::ServerConfig::builder()
        .key(key)
        .token_lifetime_ms(u64::try_from(config.token_lifetime.as_millis()).unwrap_or(u64::MAX))
        .admission_per_sec(*lock(&faults.admission_per_sec))
        .seed(seed)
        .build()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let auth = faults.clone();
    let clock = faults.clone();
    Ok(Node::builder_arc(cfg, store)
        .policy(DenyChannels(faults.clone()))
        .authorize(move |_: &tokio_tungstenite::tungstenite::http::Request<()>| auth.authorize())
        .clock(move || clock.now_ms())
        // A publish without a channel comes back to its sender, in order.
        .on_request(|req, node| async move {
            let _ = node.send_to(&req.name, req.payload).await;
        })
        .build())
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
        let key_id = 1;
        let key = match config.signing_key {
            Some(secret) => TokenKey::new(key_id, secret),
            None => TokenKey::random(key_id).map_err(ServerError::Random)?,
        };
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::new(
            config.admission_per_sec,
            config.deny_channels.clone(),
        ));
        let log = Arc::new(Mutex::new(Log::default()));
        let memory = MemoryStore::builder()
            .backlog(config.replay_capacity)
            .build()
            .map_err(|e| ServerError::Config(format!("replay_capacity: {e}")))?;
        let store = Arc::new(Recorder::new(memory, log.clone(), faults.changed.clone()));
        let node = build_node(&config, &faults, key, store.clone())?;
        let state = Arc::new(State {
            addr,
            runtime: tokio::runtime::Handle::current(),
            config,
            faults,
            log,
            current: Mutex::new(Current {
                node,
                store,
                key_id,
            }),
            retired: Mutex::new(Retired::default()),
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
                let f = &state.faults;
                f.connections.fetch_add(1, Ordering::Relaxed);
                f.live_connections.fetch_add(1, Ordering::Relaxed);
                f.poke();
                conns.spawn(serve(stream, state.node(), f.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Counts a connection as live until dropped (also when its task is
/// aborted).
struct Live(Arc<Faults>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live_connections.fetch_sub(1, Ordering::Relaxed);
        self.0.poke();
    }
}

async fn serve(stream: TcpStream, node: Node, faults: Arc<Faults>) {
    let _live = Live(faults.clone());
    if let Some((ws, principal)) = redial_server::tokio::accept(stream, &node).await {
        let socket = FaultSocket::new(ws, faults);
        redial_server::tokio::serve_socket(node, socket, principal).await;
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
        self.control.close_all(1001, "server stopping");
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
            self.control
                .state
                .faults
                .dead
                .store(true, Ordering::Relaxed);
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

    /// The node serving now (it changes at `restart(false)`).
    pub fn node(&self) -> Node {
        self.state.node()
    }

    /// Closes every live connection with `code` and `reason` (close
    /// handshake, no GOING_AWAY). Sessions stay resumable.
    pub fn close_all(&self, code: u16, reason: &str) {
        self.state.node().close_all(code, reason);
    }

    /// Makes every connection (live or new) drop abruptly, without a close
    /// frame, right after it has processed its `n`-th frame after HELLO and
    /// before any reply to that frame is written: e.g. a PUBLISH is applied
    /// but its ACK is lost. `None` turns this off.
    pub fn close_after(&self, n: Option<u64>) {
        *lock(&self.state.faults.close_after) = n;
    }

    /// Sends GOING_AWAY(`retry_after`, `window`) on every live connection,
    /// then closes each with 1001.
    pub fn going_away(&self, retry_after: Duration, window: Duration) {
        self.state.node().going_away(ms(retry_after), ms(window));
    }

    /// Refuses every WebSocket upgrade with `reject` until called with
    /// `None`. Live connections are unaffected.
    pub fn reject_handshakes(&self, reject: Option<Reject>) {
        *lock(&self.state.faults.reject) = reject;
    }

    /// Admits at most `per_sec` upgrades per second (503 with an honest
    /// `Retry-After` for the rest); `None` lifts the limit.
    pub fn set_admission_limit(&self, per_sec: Option<u32>) {
        *lock(&self.state.faults.admission_per_sec) = per_sec;
        self.state.node().set_admission_limit(per_sec);
    }

    /// While `true`, every connection in a session stops reading and
    /// writing: pings go unanswered (tungstenite only answers while it
    /// reads), messages queue up, nothing is closed. New connections still
    /// complete their HTTP upgrade but get no WELCOME. `false` resumes them.
    pub fn stop_answering_pings(&self, stop: bool) {
        self.state.faults.stalled.send_replace(stop);
    }

    /// Refuses SUBSCRIBE to `channels` from now on (replaces the list).
    pub fn set_denied_channels(&self, channels: Vec<String>) {
        *lock(&self.state.faults.deny_channels) = channels;
    }

    /// Drops every connection (close 1012) and, with `keep_key`, keeps the
    /// signing key and the store so tokens resume; without it, rotates the
    /// key and starts on an empty store. See the module docs.
    pub fn restart(&self, keep_key: bool) {
        let state = &self.state;
        let per_sec = *lock(&state.faults.admission_per_sec);
        let old = {
            let mut cur = lock(&state.current);
            let old = cur.node.clone();
            if keep_key {
                old.set_admission_limit(per_sec);
            } else {
                let key_id = cur.key_id.wrapping_add(1);
                let key = TokenKey::random(key_id).unwrap_or_else(|_| {
                    // Without OS randomness, a key derived from the clock is
                    // still different, which is all a test needs.
                    let mut secret = [0x5Au8; 32];
                    secret[..8].copy_from_slice(&state.faults.now_ms().to_le_bytes());
                    TokenKey::new(key_id, secret)
                });
                // Both were built from the same settings at start, so they
                // cannot fail now; if they did, the old node keeps serving.
                let _runtime = state.runtime.enter();
                if let Ok(store) = state.new_store() {
                    if let Ok(node) = build_node(&state.config, &state.faults, key, store.clone()) {
                        let s = old.stats();
                        let mut r = lock(&state.retired);
                        r.refused += s.upgrades_refused;
                        r.throttled += s.admissions_throttled;
                        r.protocol_errors += s.protocol_errors;
                        *cur = Current {
                            node,
                            store,
                            key_id,
                        };
                    }
                }
            }
            old
        };
        old.close_all(1012, "service restart");
        state.faults.restarts.fetch_add(1, Ordering::Relaxed);
        state.faults.poke();
    }

    /// Moves the server's clock forward, e.g. to expire tokens without
    /// waiting. Affects token expiry and admission control.
    pub fn advance_clock(&self, by: Duration) {
        self.state.faults.advance_clock(by);
    }

    /// Publishes `payload` on `channel` from the server side. Returns how
    /// many sessions it was queued for.
    pub fn publish(&self, channel: &str, payload: Payload) -> usize {
        let n = self.state.store().subscribers(
            channel,
            self.state.lifetime_ms(),
            self.state.faults.now_ms(),
        );
        let node = self.state.node();
        let channel = channel.to_owned();
        // The memory store appends at once, so publishes keep their order.
        let _ = async move { node.publish(&channel, payload).await }.now_or_never();
        n
    }

    /// Sends `payload` as a MESSAGE without channel to the session named
    /// `name`. Returns false if there is no such session.
    pub fn send_to(&self, name: &str, payload: Payload) -> bool {
        let node = self.state.node();
        let name = name.to_owned();
        matches!(
            async move { node.send_to(&name, payload).await }.now_or_never(),
            Some(Ok(true))
        )
    }

    /// A snapshot of the global counters.
    pub fn stats(&self) -> ServerStats {
        let f = &self.state.faults;
        let node = self.state.node().stats();
        let retired = *lock(&self.state.retired);
        let log = lock(&self.state.log);
        ServerStats {
            connections: f.connections.load(Ordering::Relaxed),
            live_connections: f.live_connections.load(Ordering::Relaxed),
            handshakes_rejected: retired.refused + node.upgrades_refused,
            admissions_throttled: retired.throttled + node.admissions_throttled,
            sessions_created: f.sessions_created.load(Ordering::Relaxed),
            sessions_resumed: f.sessions_resumed.load(Ordering::Relaxed),
            tokens_rejected: f.tokens_rejected.load(Ordering::Relaxed),
            hello_errors: f.hello_errors.load(Ordering::Relaxed),
            publishes_applied: log.publishes_applied,
            duplicates_dropped: lock(&f.duplicates).values().sum(),
            messages_queued: log.messages_queued,
            protocol_errors: retired.protocol_errors + node.protocol_errors,
            restarts: f.restarts.load(Ordering::Relaxed),
        }
    }

    /// Waits until `pred` holds for the counters, without polling.
    ///
    /// Wrap it in a timeout: it waits forever if the condition never holds.
    pub async fn wait_for(&self, mut pred: impl FnMut(&ServerStats) -> bool) -> ServerStats {
        // Subscribed before the first look, so no change is missed.
        let mut changed = self.state.faults.changed.subscribe();
        loop {
            let s = self.stats();
            if pred(&s) || changed.changed().await.is_err() {
                return s;
            }
        }
    }

    /// The session currently named `name`.
    pub fn session(&self, name: &str) -> Option<SessionInfo> {
        let mut info =
            self.state
                .store()
                .info(name, self.state.lifetime_ms(), self.state.faults.now_ms())?;
        info.duplicates_dropped = lock(&self.state.faults.duplicates)
            .get(name)
            .copied()
            .unwrap_or(0);
        Some(info)
    }

    /// Names of all sessions in the table (connected or resumable), sorted.
    pub fn session_names(&self) -> Vec<String> {
        self.state
            .store()
            .names(self.state.lifetime_ms(), self.state.faults.now_ms())
    }

    /// Every publish applied for sessions named `name`, in the order they
    /// were applied, across resumes and restarts.
    pub fn applied(&self, name: &str) -> Vec<AppliedPublish> {
        lock(&self.state.log)
            .applied
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}
