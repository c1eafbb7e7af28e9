//! One server node: the store, the policy, the hooks, the live connections
//! and their registry, shutdown, and the handle the application holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use redial_core::payload::Payload;
use redial_core::wire;
use tokio::sync::watch;

use crate::admission::{retry_after_secs, Admission, Admit};
use crate::clock::WallClock;
use crate::connection::Request;
use crate::meter::{self, Meters};
use crate::op::{StoreOp, StoreReply};
use crate::policy::{AllowAll, Policy};
use crate::registry::{Mailbox, Registry};
use crate::store::{SessionId, Store, StoreError};
use crate::ServerConfig;

/// An HTTP refusal of the WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status (e.g. 401, 403).
    pub status: u16,
    /// `Retry-After` in whole seconds, if any.
    pub retry_after_secs: Option<u64>,
    /// The response body.
    pub reason: String,
}

impl Rejection {
    /// A refusal with `status` and a reason for the body.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            retry_after_secs: None,
            reason: reason.into(),
        }
    }
}

/// Decides an upgrade from its request (headers, URI): accept, naming the
/// caller (the *principal* the [`Policy`] sees), or reject with a status.
///
/// Called for every upgrade before admission control; it must not block.
pub trait Authorize: Send + Sync + 'static {
    /// `Ok(principal)` to accept, `Err` to refuse with its status.
    fn authorize(&self, request: &http::Request<()>) -> Result<Option<String>, Rejection>;
}

impl<F> Authorize for F
where
    F: Fn(&http::Request<()>) -> Result<Option<String>, Rejection> + Send + Sync + 'static,
{
    fn authorize(&self, request: &http::Request<()>) -> Result<Option<String>, Rejection> {
        self(request)
    }
}

/// Accepts everyone, naming no one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open;

impl Authorize for Open {
    fn authorize(&self, _: &http::Request<()>) -> Result<Option<String>, Rejection> {
        Ok(None)
    }
}

/// The application's store calls in `meter::STORE_OPS`.
const BROADCAST: usize = 9;
const SEND_TO: usize = 10;

/// What the request hook returns, boxed.
type RequestFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type OnRequest = Arc<dyn Fn(Request, Node) -> RequestFuture + Send + Sync>;
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What the node has done, counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Connections open now.
    pub live_connections: u64,
    /// Sessions held by this node's connections now.
    pub sessions: u64,
    /// Upgrades accepted.
    pub upgrades: u64,
    /// Upgrades refused (any status).
    pub upgrades_refused: u64,
    /// Of those, by admission control.
    pub admissions_throttled: u64,
    /// Of those, because the node was shutting down.
    pub refused_shutting_down: u64,
    /// WELCOMEs for fresh sessions.
    pub sessions_created: u64,
    /// WELCOMEs that resumed a session.
    pub sessions_resumed: u64,
    /// Connections closed for a protocol error (1002).
    pub protocol_errors: u64,
    /// Connections closed with ERROR `slow_consumer`.
    pub slow_consumers: u64,
    /// Connections woken by store notices: one per connection a notice
    /// concerned (a subscriber of its channel, the holder of its session),
    /// however many notices coalesced before it fetched.
    pub notice_wakeups: u64,
    /// PUBLISH frames stored (not counting duplicates by seq).
    pub publishes_applied: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    upgrades: AtomicU64,
    refused: AtomicU64,
    throttled: AtomicU64,
    refused_shutting_down: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) resumed: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) publishes_applied: AtomicU64,
    notice_wakeups: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) cfg: Arc<ServerConfig>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) policy: Arc<dyn Policy>,
    authorize: Arc<dyn Authorize>,
    on_request: Option<OnRequest>,
    /// Who on this node listens to which session and channel.
    registry: Mutex<Registry>,
    admission: Mutex<Option<Admission>>,
    /// The latest order of each kind, for every connection open at the
    /// time: a watch, so no number of orders can overflow it.
    pub(crate) control: watch::Sender<Orders>,
    next_order: AtomicU64,
    /// `Some((retry_after_ms, window_ms))` once shutdown started.
    pub(crate) shutdown: watch::Sender<Option<(u64, u64)>>,
    live: watch::Sender<u64>,
    pub(crate) counters: Counters,
    pub(crate) meters: Meters,
    next_conn: AtomicU64,
    /// The default clock: the wall clock when the node started, then
    /// tokio's monotonic clock.
    wall: WallClock,
    clock: Option<Clock>,
}

/// A running node and the application's handle to it: cheap to clone.
///
/// Create it inside a tokio runtime with [`Node::builder`]; serve it with
/// [`crate::tokio::serve`] or the axum handler.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Node`].
pub struct NodeBuilder {
    cfg: ServerConfig,
    store: Arc<dyn Store>,
    policy: Arc<dyn Policy>,
    authorize: Arc<dyn Authorize>,
    on_request: Option<OnRequest>,
    clock: Option<Clock>,
}

impl NodeBuilder {
    /// The node's clock, in Unix milliseconds (default: the wall clock at
    /// start, then tokio's monotonic clock). The store's times (token
    /// expiry), token issue times and admission control read it; a test
    /// harness uses it to jump time forward. The connections' timers run
    /// on tokio's clock and do not follow it. It must not go backwards and
    /// must not block.
    pub fn clock(mut self, now_ms: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(now_ms));
        self
    }

    /// The application's rules for subscriptions and publishes (default
    /// [`AllowAll`]).
    pub fn policy(mut self, policy: impl Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The upgrade's authorization (default [`Open`]).
    pub fn authorize(mut self, authorize: impl Authorize) -> Self {
        self.authorize = Arc::new(authorize);
        self
    }

    /// Called with every publish the policy made a request (stored once,
    /// never again for a duplicate); answer with [`Node::send_to`].
    ///
    /// The connection's task awaits the returned future before it handles
    /// anything else of that session, so one session's requests run one at
    /// a time, in the order they were published, and replies sent from
    /// the future keep that order. Meanwhile the connection reads nothing
    /// and its timers wait: keep the future short, and hand long work to a
    /// task of your own (which then owns the order of its replies).
    pub fn on_request<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Request, Node) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_request = Some(Arc::new(move |r, n| Box::pin(f(r, n))));
        self
    }

    /// Starts the node: must be called inside a tokio runtime (it spawns the
    /// task that routes the store's notices).
    pub fn build(self) -> Node {
        let admission = self.cfg.admission_per_sec.map(Admission::new);
        let node = Node {
            inner: Arc::new(Inner {
                cfg: Arc::new(self.cfg),
                store: self.store,
                policy: self.policy,
                authorize: self.authorize,
                on_request: self.on_request,
                registry: Mutex::new(Registry::default()),
                admission: Mutex::new(admission),
                control: watch::channel(Orders::default()).0,
                next_order: AtomicU64::new(1),
                shutdown: watch::channel(None).0,
                live: watch::channel(0).0,
                counters: Counters::default(),
                meters: Meters::new(),
                next_conn: AtomicU64::new(1),
                wall: WallClock::system(monotonic_now()),
                clock: self.clock,
            }),
        };
        let weak = Arc::downgrade(&node.inner);
        let mut stream = node.inner.store.notices();
        tokio::spawn(async move {
            while let Some(n) = stream.next().await {
                let Some(inner) = weak.upgrade() else { break };
                let woken = lock(&inner.registry).route(&n);
                inner.meters.notice(&n, woken);
                inner
                    .counters
                    .notice_wakeups
                    .fetch_add(woken as u64, Ordering::Relaxed);
            }
        });
        node
    }
}

/// Tokio's clock as the `Instant` a [`Connection`](crate::Connection)
/// takes: a paused test clock drives the connections' timers too.
pub(crate) fn monotonic_now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never leaves these maps half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The latest order of each kind for the connections open at the time,
/// each with its serial (increasing across both kinds): a connection acts
/// on those newer than what it saw, in serial order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Orders {
    /// `(serial, retry_after_ms, window_ms)`.
    pub(crate) going_away: Option<(u64, u64, u64)>,
    /// `(serial, code, reason)`.
    pub(crate) close: Option<(u64, u16, String)>,
}

impl Orders {
    /// The highest serial in it (0: none).
    pub(crate) fn serial(&self) -> u64 {
        let ga = self.going_away.as_ref().map_or(0, |o| o.0);
        let close = self.close.as_ref().map_or(0, |o| o.0);
        ga.max(close)
    }
}

/// Why an upgrade was refused, for the runtimes.
pub(crate) struct Refused(pub(crate) Rejection);

impl Node {
    /// A builder for a node serving `config` on `store`.
    pub fn builder(config: ServerConfig, store: impl Store) -> NodeBuilder {
        Self::builder_arc(config, Arc::new(store))
    }

    /// Like [`Node::builder`] with a store shared with other code.
    pub fn builder_arc(config: ServerConfig, store: Arc<dyn Store>) -> NodeBuilder {
        NodeBuilder {
            cfg: config,
            store,
            policy: Arc::new(AllowAll),
            authorize: Arc::new(Open),
            on_request: None,
            clock: None,
        }
    }

    /// The node's clock in milliseconds (wall clock at start, then tokio's
    /// monotonic clock, so a paused test clock drives it), or the one given
    /// to [`NodeBuilder::clock`].
    pub fn now_ms(&self) -> u64 {
        match &self.inner.clock {
            Some(clock) => clock(),
            None => self.inner.wall.ms(monotonic_now()),
        }
    }

    /// The node's clock as a [`WallClock`] for a connection starting now:
    /// the node's own anchor, or, with a [`NodeBuilder::clock`] hook, the
    /// hook's reading now (a later jump of the hook reaches the store's
    /// times at once and a connection's token issue times from its next
    /// connection on).
    pub(crate) fn wall_clock(&self) -> WallClock {
        match &self.inner.clock {
            Some(clock) => WallClock::new(monotonic_now(), clock()),
            None => self.inner.wall,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    /// Appends a message from the application to `channel`: every
    /// subscribed session, on every node, gets it.
    ///
    /// Bounded by the store timeout ([`StoreError::TimedOut`]).
    pub async fn publish(&self, channel: &str, payload: Payload) -> Result<(), StoreError> {
        self.bounded(BROADCAST, self.inner.store.broadcast(channel, &payload))
            .await
    }

    /// A direct message (MESSAGE without a channel) to the session named
    /// `name`; `false` when there is none.
    ///
    /// Bounded by the store timeout ([`StoreError::TimedOut`]).
    pub async fn send_to(&self, name: &str, payload: Payload) -> Result<bool, StoreError> {
        self.bounded(SEND_TO, self.inner.store.send_to(name, &payload))
            .await
    }

    /// Makes a connection's store call, bounded by the store timeout.
    pub(crate) async fn execute(&self, op: &StoreOp) -> StoreReply {
        let call = async { Ok(op.execute(self.inner.store.as_ref(), self.now_ms()).await) };
        let reply = self
            .bounded(op.meter_index(), call)
            .await
            .unwrap_or_else(StoreReply::Failed);
        if let StoreReply::Published(outcome) = reply {
            self.inner.meters.published(outcome);
        }
        reply
    }

    /// `call`, bounded by the store timeout and timed as store operation
    /// `op` (its index in `meter::STORE_OPS`).
    async fn bounded<T>(
        &self,
        op: usize,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let ms = self.inner.cfg.store_timeout_ms();
        let started = self.inner.meters.started();
        let r = tokio::time::timeout(Duration::from_millis(ms), call).await;
        self.inner.meters.store_call(op, started, r.is_err());
        r.unwrap_or(Err(StoreError::TimedOut(ms)))
    }

    /// Graceful shutdown: every connection gets GOING_AWAY with the
    /// configured retry and spread window, flushes and closes with 1001;
    /// new upgrades are refused with 503 and `Retry-After` meanwhile.
    /// Returns once every connection closed, or after the drain timeout.
    pub async fn shut_down(&self) {
        let (retry, window) = self.inner.cfg.going_away();
        self.inner.shutdown.send_replace(Some((retry, window)));
        let mut live = self.inner.live.subscribe();
        let drain = Duration::from_millis(self.inner.cfg.drain_timeout_ms());
        let _ = tokio::time::timeout(drain, live.wait_for(|&n| n == 0)).await;
    }

    /// GOING_AWAY with `retry_after_ms` and `window_ms` to every connection
    /// open now, then close 1001; new upgrades are still accepted (a drain
    /// for rebalancing, not a shutdown).
    pub fn going_away(&self, retry_after_ms: u64, window_ms: u64) {
        let serial = self.inner.next_order.fetch_add(1, Ordering::Relaxed);
        self.inner
            .control
            .send_modify(|o| o.going_away = Some((serial, retry_after_ms, window_ms)));
    }

    /// Closes every connection open now with `code` and `reason`, without
    /// an ERROR (1012 for a restart, an application's 4000-4999 code); the
    /// sessions stay resumable.
    pub fn close_all(&self, code: u16, reason: &str) {
        let serial = self.inner.next_order.fetch_add(1, Ordering::Relaxed);
        self.inner
            .control
            .send_modify(|o| o.close = Some((serial, code, reason.to_owned())));
    }

    /// Replaces the admission limit (at most `per_sec` upgrades per second;
    /// `None`: no limit) from now on, forgetting past admissions.
    pub fn set_admission_limit(&self, per_sec: Option<u32>) {
        *lock(&self.inner.admission) = per_sec.map(Admission::new);
    }

    /// Whether [`Node::shut_down`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.borrow().is_some()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> NodeStats {
        let c = &self.inner.counters;
        NodeStats {
            live_connections: *self.inner.live.borrow(),
            sessions: lock(&self.inner.registry).sessions() as u64,
            upgrades: c.upgrades.load(Ordering::Relaxed),
            upgrades_refused: c.refused.load(Ordering::Relaxed),
            admissions_throttled: c.throttled.load(Ordering::Relaxed),
            refused_shutting_down: c.refused_shutting_down.load(Ordering::Relaxed),
            sessions_created: c.created.load(Ordering::Relaxed),
            sessions_resumed: c.resumed.load(Ordering::Relaxed),
            protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
            slow_consumers: c.slow_consumers.load(Ordering::Relaxed),
            publishes_applied: c.publishes_applied.load(Ordering::Relaxed),
            notice_wakeups: c.notice_wakeups.load(Ordering::Relaxed),
        }
    }

    /// Decides an upgrade: shutdown, subprotocol, authorization, admission,
    /// in that order. `Ok` carries the principal.
    pub(crate) fn admit(&self, request: &http::Request<()>) -> Result<Option<String>, Refused> {
        let c = &self.inner.counters;
        let refuse = |r: Rejection| {
            c.refused.fetch_add(1, Ordering::Relaxed);
            Err(Refused(r))
        };
        let meters = &self.inner.meters;
        if let Some((retry, window)) = *self.inner.shutdown.borrow() {
            c.refused_shutting_down.fetch_add(1, Ordering::Relaxed);
            meters.refused(meter::UpgradeRefusal::ShuttingDown);
            // Honest: the same wait the connected clients were given.
            return refuse(Rejection {
                status: 503,
                retry_after_secs: Some(retry_after_secs(retry.saturating_add(window))),
                reason: "shutting down".into(),
            });
        }
        if !offers_subprotocol(request.headers()) {
            meters.refused(meter::UpgradeRefusal::NoSubprotocol);
            return refuse(Rejection::new(400, "subprotocol redial.v1 required"));
        }
        let principal = match self.inner.authorize.authorize(request) {
            Ok(p) => p,
            Err(r) => {
                meters.refused(meter::UpgradeRefusal::Unauthorized);
                return refuse(r);
            }
        };
        let now = self.now_ms();
        if let Some(a) = lock(&self.inner.admission).as_mut() {
            if let Admit::RetryAfter(secs) = a.try_admit(now) {
                c.throttled.fetch_add(1, Ordering::Relaxed);
                meters.refused(meter::UpgradeRefusal::Throttled);
                return refuse(Rejection {
                    status: 503,
                    retry_after_secs: Some(secs),
                    reason: "admission limit reached".into(),
                });
            }
        }
        c.upgrades.fetch_add(1, Ordering::Relaxed);
        meters.admitted();
        Ok(principal)
    }

    pub(crate) fn next_conn(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn request(&self, r: Request) {
        if let Some(f) = &self.inner.on_request {
            f(r, self.clone()).await;
        }
    }

    /// Connection `conn` holds `session`: its notices reach `mailbox`.
    pub(crate) fn hold(&self, session: SessionId, conn: u64, mailbox: &Arc<Mailbox>) {
        lock(&self.inner.registry).hold(session, conn, mailbox);
    }

    /// Connection `conn` listens to the channels in `to` instead of those
    /// in `from`. A channel it starts listening to asks it to fetch, since
    /// a notice may have come before it listened.
    pub(crate) fn relisten<'a>(
        &self,
        conn: u64,
        mailbox: &Arc<Mailbox>,
        from: impl IntoIterator<Item = &'a str>,
        to: impl IntoIterator<Item = &'a str>,
    ) {
        let mut reg = lock(&self.inner.registry);
        for c in from {
            reg.unlisten(c, conn);
        }
        let mut added = false;
        for c in to {
            reg.listen(c, conn, mailbox);
            added = true;
        }
        if added {
            mailbox.fetch();
        }
    }

    /// Connection `conn` is gone: it holds `session` and listens to
    /// `channels` no more.
    pub(crate) fn release<'a>(
        &self,
        session: &SessionId,
        conn: u64,
        channels: impl IntoIterator<Item = &'a str>,
    ) {
        let mut reg = lock(&self.inner.registry);
        reg.release(session, conn);
        for c in channels {
            reg.unlisten(c, conn);
        }
    }

    pub(crate) fn live_guard(&self) -> LiveGuard {
        self.inner.live.send_modify(|n| *n += 1);
        self.inner.meters.connection(true);
        LiveGuard(self.clone())
    }
}

impl Inner {
    pub(crate) fn live_watch(&self) -> watch::Receiver<u64> {
        self.live.subscribe()
    }
}

/// Counts a connection as live until dropped.
pub(crate) struct LiveGuard(Node);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.inner.live.send_modify(|n| *n = n.saturating_sub(1));
        self.0.inner.meters.connection(false);
    }
}

/// Whether the request offers `redial.v1` (PROTOCOL.md 1).
pub(crate) fn offers_subprotocol(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == wire::SUBPROTOCOL)
}
