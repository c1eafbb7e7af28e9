//! Where sessions and channel logs live: the [`Store`] trait.
//!
//! A store holds everything a session needs to survive its connection and
//! its node: the name, the publish high-water mark `H` (PROTOCOL.md 8.4),
//! the subscriptions, the MESSAGEs numbered for it and not yet RECEIVED,
//! and the channel logs those MESSAGEs come from. Every node of a cluster
//! talks to the same store, so any node can resume any session.
//!
//! The caller (the server runtime) must:
//! * hold a session only through the [`Owner`] that [`Store::create`] or
//!   [`Store::resume`] returned, and pass it to every later call for that
//!   session; a call whose owner was superseded fails with
//!   [`StoreError::Fenced`], and the caller must then close its connection
//!   (another connection, maybe on another node, now holds the session);
//! * call [`Store::detach`] when the connection is lost, so the token
//!   lifetime starts counting;
//! * after a [`Notice`] that concerns a session it holds, call
//!   [`Store::fetch`] for it and send what comes back, in order.
//!
//! Offsets are numbered per session when [`Store::fetch`] first sees a
//! channel entry for it, and persisted before they are returned, so a
//! MESSAGE is never sent with an offset that another node could give to a
//! different message.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures_core::Stream;
use redial_core::payload::Payload;

/// MESSAGEs a store keeps per session by default until RECEIVED. It is also
/// the server's default `max_backlog`, so a connection never has more in
/// flight than the store keeps.
pub const DEFAULT_BACKLOG: usize = 4096;
/// Notices a store buffers per listener by default before it yields
/// [`Notice::Lagged`].
pub const DEFAULT_NOTICE_BUFFER: usize = 1024;

/// A session's identity across the cluster (WELCOME's `session_id`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// Wraps an identifier; at most 64 bytes (PROTOCOL.md 5).
    pub fn new(id: impl Into<String>) -> Self {
        SessionId(id.into())
    }

    /// The identifier as sent in WELCOME.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Proof that the caller holds a session: its id and the epoch the store
/// gave the holding connection. Each `create`/`resume` increments the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The session held.
    pub session: SessionId,
    /// The holder's epoch; older epochs are fenced.
    pub epoch: u64,
}

/// A session as the store hands it to the connection that now holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Who holds it now; pass to every later call.
    pub owner: Owner,
    /// The session's name (PROTOCOL.md 8.2).
    pub name: String,
    /// `H`: the highest PUBLISH seq stored (WELCOME's `last_client_seq`).
    pub last_client_seq: u64,
    /// The channels the session is subscribed to, sorted (WELCOME's `kept`).
    pub subscriptions: Vec<String>,
    /// The highest offset numbered for the session so far (0 = none).
    pub last_offset: u64,
}

/// One MESSAGE of a session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its per-session offset, at least 1.
    pub offset: u64,
    /// The channel it was published on; `None` for a message addressed to
    /// the session directly.
    pub channel: Option<String>,
    /// Its payload.
    pub payload: Payload,
}

/// What [`Store::publish`] did with a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishOutcome {
    /// `seq` was above `H`: the message was stored (appended to the
    /// channel's log when it has one) and `H` is now `seq`.
    Applied,
    /// `seq` was at most `H`: nothing was stored; acknowledge it anyway.
    Duplicate,
}

/// Why [`Store::create`] did not create a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateRefused {
    /// A session that is connected right now holds the name.
    NameTaken,
}

/// Something that happened in the store that a node may need to act on.
///
/// Notices are hints: a node that receives one re-reads the store; a node
/// that may have missed some (a [`Notice::Lagged`]) re-reads everything it
/// holds. Every node receives every notice.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// New entries were appended to this channel's log.
    Channel(String),
    /// A message was addressed to this session directly.
    Session(SessionId),
    /// This session was resumed by a connection with this epoch; a holder
    /// with an older epoch must close its connection.
    TakenOver(Owner),
    /// Notices were lost (a slow reader or a dropped link to the store):
    /// fetch for every session held.
    Lagged,
}

/// The stream of [`Notice`]s a node listens to.
pub type Notices = Pin<Box<dyn Stream<Item = Notice> + Send + 'static>>;

/// A store failure the caller can match on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The caller's epoch was superseded: another connection holds the
    /// session. Close this connection (normally with 1000).
    #[error("session {0} is held by a newer connection")]
    Fenced(SessionId),
    /// The session does not exist (ended or never created).
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// The call took longer than the node's store timeout (milliseconds);
    /// handled like [`StoreError::Unavailable`].
    #[error("store call took over {0} ms")]
    TimedOut(u64),
    /// The store could not be reached or failed; the connection should be
    /// closed with ERROR `internal` and the client will resume later.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The future every [`Store`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Session and channel storage shared by every node of one logical server.
///
/// Implementations: `memory` (one process, the default)
/// and `redis` (a cluster). Every method is atomic with respect to the
/// others for the same session.
pub trait Store: Send + Sync + 'static {
    /// Creates a fresh session named `name`, held by the caller from now on.
    ///
    /// Refused when a *connected* session holds the name; a session waiting
    /// to be resumed gives its name up (it ends).
    fn create<'a>(
        &'a self,
        name: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>>;

    /// Takes over an existing session for a new connection: increments its
    /// epoch (fencing any older holder, which gets [`Notice::TakenOver`]) and
    /// marks it connected.
    ///
    /// `None` when the session has ended or was lost more than
    /// `lifetime_ms` before `now_ms` (it then ends); the caller creates a
    /// fresh session instead.
    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>>;

    /// The holder's connection was lost at `now_ms`; the token lifetime
    /// counts from here. Does nothing if `owner` was superseded.
    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()>;

    /// Ends the session now (a terminal ERROR): its tokens yield fresh
    /// sessions from here on and its name is free.
    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()>;

    /// Stores a PUBLISH exactly once: applied when `seq` is above `H`, then
    /// `H = seq` and, with a channel, the payload is appended to that
    /// channel's log (every subscriber, on every node, is notified). Without
    /// a channel only `H` moves: the message was for the application, which
    /// the caller hands it to when the outcome is [`PublishOutcome::Applied`].
    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome>;

    /// Subscribes the session: entries appended to `channel`'s log from now
    /// on are numbered for it. Subscribing twice is not an error.
    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()>;

    /// Unsubscribes the session; not subscribed is not an error.
    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()>;

    /// The session's MESSAGEs with an offset above `after`, in offset order,
    /// at most `max` of them.
    ///
    /// Channel entries not yet numbered for the session are numbered first
    /// (in the order they were appended) and persisted before they are
    /// returned. Messages the store no longer keeps are skipped, so the
    /// first offset returned may be above `after + 1` (the client sees a gap).
    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>>;

    /// RECEIVED: every MESSAGE up to `offset` was delivered and may be
    /// discarded. Values that do not advance are ignored.
    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()>;

    /// Appends a message from the application to `channel`'s log.
    fn broadcast<'a>(&'a self, channel: &'a str, payload: &'a Payload) -> StoreFuture<'a, ()>;

    /// Addresses a message to the session named `name` directly (a MESSAGE
    /// without a channel). `false` when no session has that name.
    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool>;

    /// A new stream of every [`Notice`] from now on.
    fn notices(&self) -> Notices;
}

/// A [`Store`] that wraps another and changes only some of its calls.
///
/// Implement [`Decorate::inner`] and override the calls the decorator
/// watches or alters; every other call goes to the inner store unchanged.
/// Every `Decorate` is a [`Store`]. A method called on a decorator where
/// both traits are in scope is ambiguous: bring only one into scope there.
pub trait Decorate: Send + Sync + 'static {
    /// The store every call not overridden goes to.
    type Inner: Store;

    /// The wrapped store.
    fn inner(&self) -> &Self::Inner;

    /// See [`Store::create`].
    fn create<'a>(
        &'a self,
        name: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        self.inner().create(name, now_ms)
    }

    /// See [`Store::resume`].
    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        self.inner().resume(session, lifetime_ms, now_ms)
    }

    /// See [`Store::detach`].
    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        self.inner().detach(owner, now_ms)
    }

    /// See [`Store::end`].
    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        self.inner().end(owner)
    }

    /// See [`Store::publish`].
    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        self.inner().publish(owner, seq, channel, payload)
    }

    /// See [`Store::subscribe`].
    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        self.inner().subscribe(owner, channel)
    }

    /// See [`Store::unsubscribe`].
    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        self.inner().unsubscribe(owner, channel)
    }

    /// See [`Store::fetch`].
    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        self.inner().fetch(owner, after, max)
    }

    /// See [`Store::received`].
    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()> {
        self.inner().received(owner, offset)
    }

    /// See [`Store::broadcast`].
    fn broadcast<'a>(&'a self, channel: &'a str, payload: &'a Payload) -> StoreFuture<'a, ()> {
        self.inner().broadcast(channel, payload)
    }

    /// See [`Store::send_to`].
    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool> {
        self.inner().send_to(name, payload)
    }

    /// See [`Store::notices`].
    fn notices(&self) -> Notices {
        self.inner().notices()
    }
}

impl<D: Decorate> Store for D {
    fn create<'a>(
        &'a self,
        name: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        Decorate::create(self, name, now_ms)
    }

    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        Decorate::resume(self, session, lifetime_ms, now_ms)
    }

    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        Decorate::detach(self, owner, now_ms)
    }

    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        Decorate::end(self, owner)
    }

    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        Decorate::publish(self, owner, seq, channel, payload)
    }

    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Decorate::subscribe(self, owner, channel)
    }

    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Decorate::unsubscribe(self, owner, channel)
    }

    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Decorate::fetch(self, owner, after, max)
    }

    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()> {
        Decorate::received(self, owner, offset)
    }

    fn broadcast<'a>(&'a self, channel: &'a str, payload: &'a Payload) -> StoreFuture<'a, ()> {
        Decorate::broadcast(self, channel, payload)
    }

    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool> {
        Decorate::send_to(self, name, payload)
    }

    fn notices(&self) -> Notices {
        Decorate::notices(self)
    }
}
