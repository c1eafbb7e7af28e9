//! [`MemoryStore`]: sessions and channel logs in this process's memory, the
//! default [`Store`] for a server that runs on one node.
//!
//! Every method completes at once (the futures are ready when made) and
//! needs no async runtime. A channel entry is numbered for each subscriber
//! when it is appended, which is the order the contract asks for; payloads
//! are shared between subscribers, not copied.
//!
//! Memory is bounded per session: at most [`MemoryStoreBuilder::backlog`]
//! MESSAGEs that were not RECEIVED are kept, and when a new one arrives the
//! oldest is dropped. Its offset is not reused, so the client sees the
//! drop as a gap and reports its size (PROTOCOL.md 8.5); the store counts
//! drops in [`MemoryStore::dropped`]. Ended sessions are removed at once; a
//! session that lost its connection is removed when a resume finds it
//! expired, when its name is taken by a new session, or by
//! [`MemoryStore::purge`], which the caller should run now and then.

use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redial_core::payload::Payload;

use crate::notify::Fanout;
use crate::store::{
    CreateRefused, Notice, Notices, Owner, PublishOutcome, SessionId, SessionState, Store,
    StoreError, StoreFuture, StoredMessage,
};

/// The defaults every store shares (see [`crate::store`]).
pub use crate::store::{DEFAULT_BACKLOG, DEFAULT_NOTICE_BUFFER};

/// A [`MemoryStoreBuilder`] setting that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryConfigError {
    /// The per-session backlog must hold at least one message.
    #[error("the per-session backlog must be at least 1")]
    ZeroBacklog,
    /// Each notice listener must buffer at least one notice.
    #[error("the notice buffer must be at least 1")]
    ZeroNoticeBuffer,
}

/// Settings for a [`MemoryStore`]; [`MemoryStoreBuilder::build`] checks them.
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    backlog: usize,
    notice_buffer: usize,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        MemoryStoreBuilder {
            backlog: DEFAULT_BACKLOG,
            notice_buffer: DEFAULT_NOTICE_BUFFER,
        }
    }
}

impl MemoryStoreBuilder {
    /// How many MESSAGEs not yet RECEIVED a session keeps (default
    /// [`DEFAULT_BACKLOG`]); beyond it the oldest is dropped and the client
    /// sees a gap.
    pub fn backlog(mut self, messages: usize) -> Self {
        self.backlog = messages;
        self
    }

    /// How many notices each [`Store::notices`] stream buffers (default
    /// [`DEFAULT_NOTICE_BUFFER`]) before it yields [`Notice::Lagged`].
    pub fn notice_buffer(mut self, notices: usize) -> Self {
        self.notice_buffer = notices;
        self
    }

    /// The store.
    ///
    /// # Errors
    /// When a setting is zero.
    pub fn build(self) -> Result<MemoryStore, MemoryConfigError> {
        if self.backlog == 0 {
            return Err(MemoryConfigError::ZeroBacklog);
        }
        if self.notice_buffer == 0 {
            return Err(MemoryConfigError::ZeroNoticeBuffer);
        }
        Ok(MemoryStore::with(self.backlog, self.notice_buffer))
    }
}

/// Sessions and channels in this process's memory; see the module docs.
pub struct MemoryStore {
    state: Mutex<State>,
    fanout: Fanout,
    backlog: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.lock().sessions.len())
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

struct State {
    sessions: HashMap<SessionId, Session>,
    names: HashMap<Box<str>, SessionId>,
    /// Each channel's subscribers; a channel without any is removed.
    channels: HashMap<Arc<str>, BTreeSet<SessionId>>,
    /// Makes ids unique across restarts of the process, so a token from an
    /// earlier run can never name a session of this one.
    id_prefix: u64,
    next_id: u64,
    dropped: u64,
}

/// One session; kept small because idle sessions are most of them.
struct Session {
    name: Box<str>,
    epoch: u64,
    /// `H` (PROTOCOL.md 8.4).
    last_client_seq: u64,
    last_offset: u64,
    received: u64,
    connected: bool,
    lost_at_ms: u64,
    /// Sorted; the same `Arc`s as the keys of `State::channels`.
    subscriptions: Vec<Arc<str>>,
    /// Numbered MESSAGEs above `received`, in offset order.
    inbox: VecDeque<Kept>,
}

struct Kept {
    offset: u64,
    channel: Option<Arc<str>>,
    payload: Payload,
}

impl Session {
    fn state(&self, id: &SessionId) -> SessionState {
        SessionState {
            owner: Owner {
                session: id.clone(),
                epoch: self.epoch,
            },
            name: self.name.to_string(),
            last_client_seq: self.last_client_seq,
            subscriptions: self.subscriptions.iter().map(|c| c.to_string()).collect(),
            last_offset: self.last_offset,
        }
    }

    /// Numbers a message for this session; returns whether the oldest kept
    /// one was dropped to make room.
    fn push(&mut self, channel: Option<Arc<str>>, payload: Payload, backlog: usize) -> bool {
        self.last_offset += 1;
        let dropped = self.inbox.len() >= backlog;
        if dropped {
            self.inbox.pop_front();
        }
        self.inbox.push_back(Kept {
            offset: self.last_offset,
            channel,
            payload,
        });
        dropped
    }

    fn expired(&self, lifetime_ms: u64, now_ms: u64) -> bool {
        !self.connected && now_ms.saturating_sub(self.lost_at_ms) >= lifetime_ms
    }
}

impl State {
    /// The session `owner` holds, or why it does not hold one.
    fn held(&mut self, owner: &Owner) -> Result<&mut Session, StoreError> {
        match self.sessions.get_mut(&owner.session) {
            None => Err(StoreError::UnknownSession(owner.session.clone())),
            Some(s) if s.epoch != owner.epoch => Err(StoreError::Fenced(owner.session.clone())),
            Some(s) => Ok(s),
        }
    }

    /// Forgets a session: its name, its subscriptions, its messages.
    fn remove(&mut self, id: &SessionId) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        if self.names.get(&session.name) == Some(id) {
            self.names.remove(&session.name);
        }
        for channel in &session.subscriptions {
            self.unsubscribe_index(channel, id);
        }
    }

    fn unsubscribe_index(&mut self, channel: &str, id: &SessionId) {
        if let Some(subscribers) = self.channels.get_mut(channel) {
            subscribers.remove(id);
            if subscribers.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// Numbers `payload` for every subscriber of `channel`.
    fn append(&mut self, channel: &str, payload: &Payload, backlog: usize) {
        let Some((name, subscribers)) = self.channels.get_key_value(channel) else {
            return;
        };
        for id in subscribers {
            if let Some(session) = self.sessions.get_mut(id) {
                if session.push(Some(Arc::clone(name)), payload.clone(), backlog) {
                    self.dropped += 1;
                }
            }
        }
    }
}

impl MemoryStore {
    /// A store with the default settings.
    pub fn new() -> Self {
        MemoryStore::with(DEFAULT_BACKLOG, DEFAULT_NOTICE_BUFFER)
    }

    fn with(backlog: usize, notice_buffer: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                sessions: HashMap::new(),
                names: HashMap::new(),
                channels: HashMap::new(),
                id_prefix: random_u64(),
                next_id: 0,
                dropped: 0,
            }),
            fanout: Fanout::new(notice_buffer),
            backlog,
        }
    }

    /// Settings to change before building a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
    }

    /// Removes every session whose connection was lost at least
    /// `lifetime_ms` before `now_ms` (its tokens could no longer resume it)
    /// and returns how many. Call it now and then (every few seconds), with
    /// the token lifetime, so memory does not grow with ended sessions.
    pub fn purge(&self, lifetime_ms: u64, now_ms: u64) -> usize {
        let mut state = self.lock();
        let expired: Vec<SessionId> = state
            .sessions
            .iter()
            .filter(|(_, s)| s.expired(lifetime_ms, now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            state.remove(id);
        }
        expired.len()
    }

    /// How many sessions the store holds, connected or waiting to resume.
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// How many MESSAGEs were dropped so far because a session's backlog
    /// was full (each one a gap its client reports).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves the state consistent between statements that
        // could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_now(&self, name: &str) -> Result<SessionState, CreateRefused> {
        let mut state = self.lock();
        if let Some(holder) = state.names.get(name).cloned() {
            match state.sessions.get(&holder) {
                Some(s) if s.connected => return Err(CreateRefused::NameTaken),
                // A session waiting to be resumed gives its name up and ends.
                _ => state.remove(&holder),
            }
        }
        state.next_id += 1;
        let id = SessionId::new(format!("m{:016x}-{}", state.id_prefix, state.next_id));
        let session = Session {
            name: name.into(),
            epoch: 1,
            last_client_seq: 0,
            last_offset: 0,
            received: 0,
            connected: true,
            lost_at_ms: 0,
            subscriptions: Vec::new(),
            inbox: VecDeque::new(),
        };
        let out = session.state(&id);
        state.names.insert(name.into(), id.clone());
        state.sessions.insert(id, session);
        Ok(out)
    }

    fn resume_now(&self, id: &SessionId, lifetime_ms: u64, now_ms: u64) -> Option<SessionState> {
        let mut state = self.lock();
        let session = state.sessions.get_mut(id)?;
        if session.expired(lifetime_ms, now_ms) {
            state.remove(id);
            return None;
        }
        session.epoch += 1;
        session.connected = true;
        let out = session.state(id);
        drop(state);
        self.fanout.send(&Notice::TakenOver(out.owner.clone()));
        Some(out)
    }

    fn publish_now(
        &self,
        owner: &Owner,
        seq: u64,
        channel: Option<&str>,
        payload: &Payload,
    ) -> Result<PublishOutcome, StoreError> {
        let mut state = self.lock();
        let session = state.held(owner)?;
        if seq <= session.last_client_seq {
            return Ok(PublishOutcome::Duplicate);
        }
        session.last_client_seq = seq;
        if let Some(channel) = channel {
            state.append(channel, payload, self.backlog);
            drop(state);
            self.fanout.send(&Notice::Channel(channel.to_owned()));
        }
        Ok(PublishOutcome::Applied)
    }

    fn subscribe_now(&self, owner: &Owner, channel: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.held(owner)?;
        let name = match state.channels.entry(Arc::from(channel)) {
            MapEntry::Occupied(mut e) => {
                e.get_mut().insert(owner.session.clone());
                Arc::clone(e.key())
            }
            MapEntry::Vacant(e) => {
                let name = Arc::clone(e.key());
                e.insert(BTreeSet::from([owner.session.clone()]));
                name
            }
        };
        let session = state.held(owner)?;
        if let Err(at) = session.subscriptions.binary_search(&name) {
            session.subscriptions.insert(at, name);
        }
        Ok(())
    }

    fn unsubscribe_now(&self, owner: &Owner, channel: &str) -> Result<(), StoreError> {
        let mut state = self.lock();
        let session = state.held(owner)?;
        if let Ok(at) = session
            .subscriptions
            .binary_search_by(|c| c.as_ref().cmp(channel))
        {
            session.subscriptions.remove(at);
            state.unsubscribe_index(channel, &owner.session);
        }
        Ok(())
    }

    fn fetch_now(
        &self,
        owner: &Owner,
        after: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut state = self.lock();
        let session = state.held(owner)?;
        let start = session.inbox.partition_point(|k| k.offset <= after);
        Ok(session
            .inbox
            .range(start..)
            .take(max)
            .map(|k| StoredMessage {
                offset: k.offset,
                channel: k.channel.as_deref().map(str::to_owned),
                payload: k.payload.clone(),
            })
            .collect())
    }

    fn received_now(&self, owner: &Owner, offset: u64) -> Result<(), StoreError> {
        let mut state = self.lock();
        let session = state.held(owner)?;
        // A client never acknowledges what it was not sent; clamping keeps
        // a bad value from discarding messages numbered later.
        let offset = offset.min(session.last_offset);
        if offset > session.received {
            session.received = offset;
            while session.inbox.front().is_some_and(|k| k.offset <= offset) {
                session.inbox.pop_front();
            }
        }
        Ok(())
    }

    fn send_to_now(&self, name: &str, payload: &Payload) -> bool {
        let mut state = self.lock();
        let Some(id) = state.names.get(name).cloned() else {
            return false;
        };
        let Some(session) = state.sessions.get_mut(&id) else {
            return false;
        };
        if session.push(None, payload.clone(), self.backlog) {
            state.dropped += 1;
        }
        drop(state);
        self.fanout.send(&Notice::Session(id));
        true
    }
}

/// A random number from the standard library's per-process hash seed, so
/// the store needs no random-number crate.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x7265_6469_616c);
    hasher.finish()
}

fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Store for MemoryStore {
    fn create<'a>(
        &'a self,
        name: &'a str,
        _now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        ready(Ok(self.create_now(name)))
    }

    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        ready(Ok(self.resume_now(session, lifetime_ms, now_ms)))
    }

    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        let mut state = self.lock();
        if let Ok(session) = state.held(owner) {
            session.connected = false;
            session.lost_at_ms = now_ms;
        }
        ready(Ok(()))
    }

    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        let mut state = self.lock();
        let result = state.held(owner).map(|_| ());
        if result.is_ok() {
            state.remove(&owner.session);
        }
        ready(result)
    }

    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        ready(self.publish_now(owner, seq, channel, payload))
    }

    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        ready(self.subscribe_now(owner, channel))
    }

    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        ready(self.unsubscribe_now(owner, channel))
    }

    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        ready(self.fetch_now(owner, after, max))
    }

    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()> {
        ready(self.received_now(owner, offset))
    }

    fn broadcast<'a>(&'a self, channel: &'a str, payload: &'a Payload) -> StoreFuture<'a, ()> {
        self.lock().append(channel, payload, self.backlog);
        self.fanout.send(&Notice::Channel(channel.to_owned()));
        ready(Ok(()))
    }

    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool> {
        ready(Ok(self.send_to_now(name, payload)))
    }

    fn notices(&self) -> Notices {
        self.fanout.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};

    /// The result of a memory-store future, which is ready when made.
    fn now<T>(mut f: StoreFuture<'_, T>) -> Result<T, StoreError> {
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("a memory-store future was not ready"),
        }
    }

    fn created(store: &MemoryStore, name: &str) -> Owner {
        match now(store.create(name, 0)) {
            Ok(Ok(state)) => state.owner,
            other => panic!("create {name}: {other:?}"),
        }
    }

    fn text(s: &str) -> Payload {
        Payload::text(s)
    }

    fn offsets(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.offset).collect()
    }

    #[test]
    fn builder_refuses_zero_settings() {
        assert_eq!(
            MemoryStore::builder().backlog(0).build().err(),
            Some(MemoryConfigError::ZeroBacklog)
        );
        assert_eq!(
            MemoryStore::builder().notice_buffer(0).build().err(),
            Some(MemoryConfigError::ZeroNoticeBuffer)
        );
    }

    #[test]
    fn a_connected_name_is_refused_a_detached_one_is_given_up() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        assert_eq!(
            now(store.create("alpha", 0)).ok(),
            Some(Err(CreateRefused::NameTaken))
        );
        now(store.detach(&a, 10)).ok();
        let b = created(&store, "alpha");
        assert_ne!(a.session, b.session);
        // The detached session ended: its token yields nothing.
        assert_eq!(now(store.resume(&a.session, 60_000, 20)).ok(), Some(None));
        assert_eq!(store.sessions(), 1);
    }

    #[test]
    fn resume_fences_the_older_holder_and_tells_it() {
        let store = MemoryStore::new();
        let mut notices = store.notices();
        let a = created(&store, "alpha");
        let state = now(store.resume(&a.session, 1_000, 5)).ok().flatten();
        let b = state
            .map(|s| s.owner)
            .unwrap_or_else(|| panic!("not resumed"));
        assert_eq!(b.epoch, a.epoch + 1);
        assert!(matches!(
            now(store.publish(&a, 1, None, &text("x"))),
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            now(store.fetch(&a, 0, 10)),
            Err(StoreError::Fenced(_))
        ));
        // The fenced holder's detach does not disconnect the new holder.
        now(store.detach(&a, 7)).ok();
        assert!(matches!(
            now(store.create("alpha", 8)).ok(),
            Some(Err(CreateRefused::NameTaken))
        ));
        let got = notices
            .as_mut()
            .poll_next(&mut Context::from_waker(Waker::noop()));
        assert_eq!(got, Poll::Ready(Some(Notice::TakenOver(b))));
    }

    #[test]
    fn tokens_expire_a_lifetime_after_the_loss() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        now(store.detach(&a, 1_000)).ok();
        let resumed = now(store.resume(&a.session, 500, 1_499)).ok().flatten();
        let b = resumed
            .map(|s| s.owner)
            .unwrap_or_else(|| panic!("expired early"));
        now(store.detach(&b, 2_000)).ok();
        assert_eq!(now(store.resume(&b.session, 500, 2_500)).ok(), Some(None));
        assert_eq!(store.sessions(), 0);
    }

    #[test]
    fn a_zero_lifetime_cannot_be_resumed_but_a_connected_session_can() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        assert!(now(store.resume(&a.session, 0, 0)).ok().flatten().is_some());
        let b = created(&store, "beta");
        now(store.detach(&b, 3)).ok();
        assert_eq!(now(store.resume(&b.session, 0, 3)).ok(), Some(None));
    }

    #[test]
    fn purge_removes_only_expired_sessions() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        let b = created(&store, "beta");
        let _c = created(&store, "gamma");
        now(store.detach(&a, 100)).ok();
        now(store.detach(&b, 900)).ok();
        assert_eq!(store.purge(500, 1_000), 1);
        assert_eq!(store.sessions(), 2);
        // The purged name is free again; beta's is not.
        created(&store, "alpha");
        assert!(now(store.resume(&b.session, 500, 1_000))
            .ok()
            .flatten()
            .is_some());
    }

    #[test]
    fn publish_is_applied_once_per_seq() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        now(store.subscribe(&a, "news")).ok();
        let outcomes: Vec<_> = [1, 1, 3, 2, 3, 4]
            .into_iter()
            .map(|seq| now(store.publish(&a, seq, Some("news"), &text("m"))).ok())
            .collect();
        use PublishOutcome::*;
        assert_eq!(
            outcomes,
            [Applied, Duplicate, Applied, Duplicate, Duplicate, Applied].map(Some)
        );
        assert_eq!(
            offsets(&now(store.fetch(&a, 0, 100)).unwrap_or_default()),
            [1, 2, 3]
        );
        let state = now(store.resume(&a.session, 1, 0)).ok().flatten();
        assert_eq!(
            state.map(|s| (s.last_client_seq, s.last_offset)),
            Some((4, 3))
        );
    }

    #[test]
    fn offsets_number_every_source_in_append_order() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        let b = created(&store, "beta");
        now(store.subscribe(&a, "x")).ok();
        now(store.subscribe(&a, "y")).ok();
        now(store.subscribe(&b, "y")).ok();
        now(store.broadcast("x", &text("x1"))).ok();
        now(store.publish(&b, 1, Some("y"), &text("y1"))).ok();
        assert_eq!(
            now(store.send_to("alpha", &text("direct"))).ok(),
            Some(true)
        );
        assert_eq!(
            now(store.send_to("nobody", &text("lost"))).ok(),
            Some(false)
        );
        now(store.broadcast("x", &text("x2"))).ok();
        let got = now(store.fetch(&a, 0, 100)).unwrap_or_default();
        let seen: Vec<_> = got
            .iter()
            .map(|m| {
                (
                    m.offset,
                    m.channel.clone(),
                    m.payload.as_text().map(str::to_owned),
                )
            })
            .collect();
        let want = [
            (1, Some("x"), "x1"),
            (2, Some("y"), "y1"),
            (3, None, "direct"),
            (4, Some("x"), "x2"),
        ]
        .map(|(o, c, p)| (o, c.map(str::to_owned), Some(p.to_owned())));
        assert_eq!(seen, want);
        // beta numbers its own messages from 1.
        assert_eq!(
            offsets(&now(store.fetch(&b, 0, 100)).unwrap_or_default()),
            [1]
        );
        // `after` and `max` select a window.
        assert_eq!(
            offsets(&now(store.fetch(&a, 1, 2)).unwrap_or_default()),
            [2, 3]
        );
    }

    #[test]
    fn subscribing_only_sees_what_comes_after_and_unsubscribing_stops_it() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        now(store.broadcast("x", &text("before"))).ok();
        now(store.subscribe(&a, "x")).ok();
        now(store.subscribe(&a, "x")).ok();
        now(store.broadcast("x", &text("during"))).ok();
        now(store.unsubscribe(&a, "x")).ok();
        now(store.unsubscribe(&a, "x")).ok();
        now(store.broadcast("x", &text("after"))).ok();
        let got = now(store.fetch(&a, 0, 100)).unwrap_or_default();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.as_text(), Some("during"));
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_and_the_gap_shows() {
        let store = MemoryStore::builder()
            .backlog(3)
            .build()
            .unwrap_or_default();
        let a = created(&store, "alpha");
        now(store.subscribe(&a, "x")).ok();
        for i in 0..5 {
            now(store.broadcast("x", &text(&format!("m{i}")))).ok();
        }
        assert_eq!(
            offsets(&now(store.fetch(&a, 0, 100)).unwrap_or_default()),
            [3, 4, 5]
        );
        assert_eq!(store.dropped(), 2);
    }

    #[test]
    fn received_trims_and_ignores_values_that_do_not_advance() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        now(store.subscribe(&a, "x")).ok();
        for _ in 0..4 {
            now(store.broadcast("x", &text("m"))).ok();
        }
        now(store.received(&a, 2)).ok();
        now(store.received(&a, 1)).ok();
        assert_eq!(
            offsets(&now(store.fetch(&a, 0, 100)).unwrap_or_default()),
            [3, 4]
        );
        // Beyond what was numbered: clamped, so later messages survive.
        now(store.received(&a, 99)).ok();
        now(store.broadcast("x", &text("m"))).ok();
        assert_eq!(
            offsets(&now(store.fetch(&a, 0, 100)).unwrap_or_default()),
            [5]
        );
    }

    #[test]
    fn replay_after_resume_keeps_offsets_and_subscriptions() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        now(store.subscribe(&a, "y")).ok();
        now(store.subscribe(&a, "x")).ok();
        now(store.broadcast("x", &text("1"))).ok();
        now(store.detach(&a, 10)).ok();
        now(store.broadcast("y", &text("2"))).ok();
        let state = now(store.resume(&a.session, 1_000, 20)).ok().flatten();
        let state = state.unwrap_or_else(|| panic!("not resumed"));
        assert_eq!(state.subscriptions, ["x", "y"]);
        assert_eq!(state.last_offset, 2);
        let replay = now(store.fetch(&state.owner, 1, 100)).unwrap_or_default();
        assert_eq!(offsets(&replay), [2]);
        assert_eq!(replay[0].channel.as_deref(), Some("y"));
    }

    #[test]
    fn ending_a_session_frees_its_name_and_its_subscriptions() {
        let store = MemoryStore::new();
        let a = created(&store, "alpha");
        now(store.subscribe(&a, "x")).ok();
        now(store.end(&a)).ok();
        assert!(matches!(
            now(store.fetch(&a, 0, 1)),
            Err(StoreError::UnknownSession(_))
        ));
        assert!(store.lock().channels.is_empty());
        created(&store, "alpha");
    }

    #[test]
    fn notices_name_what_changed() {
        let store = MemoryStore::new();
        let mut notices = store.notices();
        let a = created(&store, "alpha");
        now(store.publish(&a, 1, Some("x"), &text("m"))).ok();
        now(store.publish(&a, 1, Some("x"), &text("m"))).ok();
        now(store.send_to("alpha", &text("d"))).ok();
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = Vec::new();
        while let Poll::Ready(Some(n)) = notices.as_mut().poll_next(&mut cx) {
            seen.push(n);
        }
        // The duplicate stored nothing and notified nobody.
        assert_eq!(
            seen,
            [Notice::Channel("x".into()), Notice::Session(a.session)]
        );
    }

    #[test]
    fn an_idle_session_record_is_small() {
        // The heap part of an idle session is its id (twice), its name
        // (twice) and the map slots; the record itself must stay well under
        // the 4 KiB per idle session the server aims for.
        assert!(std::mem::size_of::<Session>() <= 160);
    }
}
