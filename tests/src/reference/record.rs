//! The [`Store`] decorator that lets tests see what the server did: a table
//! of sessions as the store sees them, and every applied publish.
//!
//! It passes every call through to the [`MemoryStore`] it wraps and
//! records the outcome ([`Decorate`] forwards the calls it does not watch). The record of applied publishes and the counters
//! live in a [`Log`] that outlives the store, so `restart(false)` (a fresh
//! store and a fresh `Recorder`) forgets the sessions but not the history.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use redial_core::payload::Payload;
use redial_server::memory::MemoryStore;
use redial_server::store::{
    CreateRefused, Decorate, Owner, PublishOutcome, SessionId, SessionState, Store, StoreFuture,
    StoredMessage,
};
use tokio::sync::watch;

use super::{lock, AppliedPublish, SessionInfo};

/// What survives restarts: the applied publishes per session name and the
/// counters the store decorator feeds.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub applied: HashMap<String, Vec<AppliedPublish>>,
    pub publishes_applied: u64,
    pub messages_queued: u64,
}

/// One session as the decorator saw it.
#[derive(Debug)]
struct Entry {
    epoch: u64,
    info: SessionInfo,
    /// When its connection was lost (node clock), while not connected.
    lost_at: Option<u64>,
    /// Offsets fetched for it and not yet RECEIVED.
    unreceived: BTreeSet<u64>,
}

/// A [`Store`] that records what passes through it.
pub(crate) struct Recorder {
    inner: MemoryStore,
    sessions: Mutex<HashMap<SessionId, Entry>>,
    log: Arc<Mutex<Log>>,
    /// Poked after every recorded change, for `ServerControl::wait_for`.
    changed: watch::Sender<()>,
}

impl Recorder {
    pub fn new(inner: MemoryStore, log: Arc<Mutex<Log>>, changed: watch::Sender<()>) -> Self {
        Recorder {
            inner,
            sessions: Mutex::new(HashMap::new()),
            log,
            changed,
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        lock(&self.sessions)
    }

    fn poke(&self) {
        self.changed.send_replace(());
    }

    fn attach(&self, state: &SessionState, resumed: bool) {
        let mut sessions = self.sessions();
        // A name given to a new session ends whichever session had it.
        sessions.retain(|id, e| *id == state.owner.session || e.info.name != state.name);
        let entry = sessions
            .entry(state.owner.session.clone())
            .or_insert_with(|| Entry {
                epoch: 0,
                info: SessionInfo {
                    name: state.name.clone(),
                    session_id: state.owner.session.as_str().to_owned(),
                    connected: false,
                    last_client_seq: 0,
                    last_offset: 0,
                    replay_len: 0,
                    subscriptions: Vec::new(),
                    publishes_applied: 0,
                    duplicates_dropped: 0,
                    resumes: 0,
                },
                lost_at: None,
                unreceived: BTreeSet::new(),
            });
        entry.epoch = state.owner.epoch;
        entry.lost_at = None;
        entry.info.connected = true;
        entry.info.last_client_seq = state.last_client_seq;
        entry.info.last_offset = entry.info.last_offset.max(state.last_offset);
        entry.info.subscriptions = state.subscriptions.clone();
        if resumed {
            entry.info.resumes += 1;
        }
    }

    /// Runs `f` on the entry `owner` holds, if it still holds it.
    fn with_owned(&self, owner: &Owner, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.sessions().get_mut(&owner.session) {
            if e.epoch == owner.epoch {
                f(e);
            }
        }
    }

    /// The session named `name`, unless its token could no longer resume
    /// it at `now_ms` (the store ends such a session at the next resume).
    pub fn info(&self, name: &str, lifetime_ms: u64, now_ms: u64) -> Option<SessionInfo> {
        self.sessions()
            .values()
            .find(|e| e.info.name == name && alive(e, lifetime_ms, now_ms))
            .map(|e| {
                let mut info = e.info.clone();
                info.replay_len = e.unreceived.len();
                info
            })
    }

    /// Names of the sessions that can still be resumed or are connected.
    pub fn names(&self, lifetime_ms: u64, now_ms: u64) -> Vec<String> {
        let mut names: Vec<String> = self
            .sessions()
            .values()
            .filter(|e| alive(e, lifetime_ms, now_ms))
            .map(|e| e.info.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Sessions subscribed to `channel`.
    pub fn subscribers(&self, channel: &str, lifetime_ms: u64, now_ms: u64) -> usize {
        self.sessions()
            .values()
            .filter(|e| alive(e, lifetime_ms, now_ms))
            .filter(|e| e.info.subscriptions.iter().any(|c| c == channel))
            .count()
    }
}

fn alive(e: &Entry, lifetime_ms: u64, now_ms: u64) -> bool {
    e.lost_at
        .is_none_or(|at| now_ms.saturating_sub(at) < lifetime_ms)
}

impl Decorate for Recorder {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        Box::pin(async move {
            let r = self.inner.create(name, now_ms).await?;
            if let Ok(state) = &r {
                self.attach(state, false);
                self.poke();
            }
            Ok(r)
        })
    }

    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        Box::pin(async move {
            let r = self.inner.resume(session, lifetime_ms, now_ms).await?;
            match &r {
                Some(state) => self.attach(state, true),
                None => {
                    self.sessions().remove(session);
                }
            }
            self.poke();
            Ok(r)
        })
    }

    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.inner.detach(owner, now_ms).await?;
            self.with_owned(owner, |e| {
                e.info.connected = false;
                e.lost_at = Some(now_ms);
            });
            self.poke();
            Ok(())
        })
    }

    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.inner.end(owner).await?;
            let mut sessions = self.sessions();
            if sessions
                .get(&owner.session)
                .is_some_and(|e| e.epoch == owner.epoch)
            {
                sessions.remove(&owner.session);
            }
            drop(sessions);
            self.poke();
            Ok(())
        })
    }

    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        Box::pin(async move {
            let outcome = self.inner.publish(owner, seq, channel, payload).await?;
            let applied = outcome == PublishOutcome::Applied;
            let mut name = None;
            self.with_owned(owner, |e| {
                if applied {
                    e.info.last_client_seq = seq;
                    e.info.publishes_applied += 1;
                }
                name = Some(e.info.name.clone());
            });
            let mut log = lock(&self.log);
            if applied {
                log.publishes_applied += 1;
                if let Some(name) = name {
                    log.applied.entry(name).or_default().push(AppliedPublish {
                        seq,
                        channel: channel.map(str::to_owned),
                        payload: payload.clone(),
                    });
                }
            }
            drop(log);
            self.poke();
            Ok(outcome)
        })
    }

    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.inner.subscribe(owner, channel).await?;
            self.with_owned(owner, |e| {
                if let Err(at) = e
                    .info
                    .subscriptions
                    .binary_search_by(|c| c.as_str().cmp(channel))
                {
                    e.info.subscriptions.insert(at, channel.to_owned());
                }
            });
            self.poke();
            Ok(())
        })
    }

    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.inner.unsubscribe(owner, channel).await?;
            self.with_owned(owner, |e| e.info.subscriptions.retain(|c| c != channel));
            self.poke();
            Ok(())
        })
    }

    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(async move {
            let msgs = self.inner.fetch(owner, after, max).await?;
            let mut fresh = 0;
            self.with_owned(owner, |e| {
                for m in &msgs {
                    // Numbered now for the first time, not a replay.
                    if m.offset > e.info.last_offset {
                        fresh += 1;
                        e.info.last_offset = m.offset;
                    }
                    e.unreceived.insert(m.offset);
                }
            });
            if fresh > 0 {
                lock(&self.log).messages_queued += fresh;
                self.poke();
            }
            Ok(msgs)
        })
    }

    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.inner.received(owner, offset).await?;
            self.with_owned(owner, |e| {
                e.unreceived = e.unreceived.split_off(&offset.saturating_add(1));
            });
            Ok(())
        })
    }
}
