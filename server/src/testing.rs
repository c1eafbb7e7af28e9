//! A synchronous reference store and a driver that runs a [`Connection`]
//! against it without a runtime: for unit, property and fuzz tests (feature
//! `testing`).
//!
//! [`ScriptedStore`] follows the [`Store`](crate::store::Store) contract in
//! the simplest way that can be checked by eye; it is a test oracle, not a
//! storage backend.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redial_core::payload::Payload;
use redial_core::wire::Frame;

use crate::clock::WallClock;
use crate::connection::{Action, Connection, Request};
use crate::op::{StoreOp, StoreReply};
use crate::policy::Policy;
use crate::store::{
    CreateRefused, Notice, Owner, PublishOutcome, SessionId, SessionState, StoreError,
    StoredMessage,
};
use crate::ServerConfig;

#[derive(Debug, Clone)]
struct Session {
    name: String,
    epoch: u64,
    connected: bool,
    detached_at: u64,
    h: u64,
    subscriptions: BTreeSet<String>,
    /// Entries appended for the session and not numbered yet.
    unnumbered: VecDeque<(Option<String>, Payload)>,
    /// Numbered, not RECEIVED.
    kept: BTreeMap<u64, StoredMessage>,
    last_offset: u64,
}

/// The reference store: every session and message in plain maps.
#[derive(Debug, Default)]
pub struct ScriptedStore {
    sessions: BTreeMap<SessionId, Session>,
    next_id: u64,
    /// Notices not yet taken by [`ScriptedStore::take_notices`].
    notices: Vec<Notice>,
    /// Keep at most this many numbered MESSAGEs per session; older ones
    /// are dropped when new ones are numbered (the client sees a gap).
    pub backlog: Option<usize>,
    /// Every applied publish: (session, seq, channel, payload).
    pub applied: Vec<(SessionId, u64, Option<String>, Payload)>,
    /// When set, the next call fails with `Unavailable`.
    pub fail_next: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("scripted failure")]
struct Scripted;

impl ScriptedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notices since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The session's state, for assertions.
    pub fn session_by_name(&self, name: &str) -> Option<(SessionId, u64, u64)> {
        self.sessions
            .iter()
            .find(|(_, s)| s.name == name)
            .map(|(id, s)| (id.clone(), s.h, s.last_offset))
    }

    fn state(id: &SessionId, s: &Session) -> SessionState {
        SessionState {
            owner: Owner {
                session: id.clone(),
                epoch: s.epoch,
            },
            name: s.name.clone(),
            last_client_seq: s.h,
            subscriptions: s.subscriptions.iter().cloned().collect(),
            last_offset: s.last_offset,
        }
    }

    fn held(&mut self, owner: &Owner) -> Result<&mut Session, StoreError> {
        match self.sessions.get_mut(&owner.session) {
            None => Err(StoreError::UnknownSession(owner.session.clone())),
            Some(s) if s.epoch != owner.epoch => Err(StoreError::Fenced(owner.session.clone())),
            Some(s) => Ok(s),
        }
    }

    /// Appends `payload` to `channel` for every subscriber.
    pub fn broadcast(&mut self, channel: &str, payload: &Payload) {
        for s in self.sessions.values_mut() {
            if s.subscriptions.contains(channel) {
                s.unnumbered
                    .push_back((Some(channel.to_owned()), payload.clone()));
            }
        }
        self.notices.push(Notice::Channel(channel.to_owned()));
    }

    /// A direct message to the session named `name`.
    pub fn send_to(&mut self, name: &str, payload: &Payload) -> bool {
        let Some((id, s)) = self.sessions.iter_mut().find(|(_, s)| s.name == name) else {
            return false;
        };
        s.unnumbered.push_back((None, payload.clone()));
        self.notices.push(Notice::Session(id.clone()));
        true
    }

    /// Carries out `op` at `now`, as a [`Store`](crate::store::Store) would.
    pub fn apply(&mut self, op: &StoreOp, now: u64) -> StoreReply {
        if std::mem::take(&mut self.fail_next) {
            return StoreReply::Failed(StoreError::Unavailable(Box::new(Scripted)));
        }
        match self.apply_inner(op, now) {
            Ok(r) => r,
            Err(e) => StoreReply::Failed(e),
        }
    }

    fn apply_inner(&mut self, op: &StoreOp, now: u64) -> Result<StoreReply, StoreError> {
        Ok(match op {
            StoreOp::Create { name } => {
                if let Some((id, s)) = self.sessions.iter().find(|(_, s)| &s.name == name) {
                    if s.connected {
                        return Ok(StoreReply::Created(Err(CreateRefused::NameTaken)));
                    }
                    let id = id.clone();
                    self.sessions.remove(&id);
                }
                self.next_id += 1;
                let id = SessionId::new(format!("s-{:x}", self.next_id));
                let s = Session {
                    name: name.clone(),
                    epoch: 1,
                    connected: true,
                    detached_at: 0,
                    h: 0,
                    subscriptions: BTreeSet::new(),
                    unnumbered: VecDeque::new(),
                    kept: BTreeMap::new(),
                    last_offset: 0,
                };
                let st = Self::state(&id, &s);
                self.sessions.insert(id, s);
                StoreReply::Created(Ok(st))
            }
            StoreOp::Resume {
                session,
                lifetime_ms,
            } => {
                let expired = match self.sessions.get(session) {
                    None => return Ok(StoreReply::Resumed(None)),
                    Some(s) => !s.connected && now.saturating_sub(s.detached_at) > *lifetime_ms,
                };
                if expired {
                    self.sessions.remove(session);
                    return Ok(StoreReply::Resumed(None));
                }
                let Some(s) = self.sessions.get_mut(session) else {
                    return Ok(StoreReply::Resumed(None));
                };
                s.epoch += 1;
                s.connected = true;
                let st = Self::state(session, s);
                self.notices.push(Notice::TakenOver(st.owner.clone()));
                StoreReply::Resumed(Some(st))
            }
            StoreOp::Detach { owner } => {
                if let Ok(s) = self.held(owner) {
                    s.connected = false;
                    s.detached_at = now;
                }
                StoreReply::Done
            }
            StoreOp::End { owner } => {
                self.held(owner)?;
                self.sessions.remove(&owner.session);
                StoreReply::Done
            }
            StoreOp::Publish {
                owner,
                seq,
                channel,
                payload,
            } => {
                let s = self.held(owner)?;
                if *seq <= s.h {
                    return Ok(StoreReply::Published(PublishOutcome::Duplicate));
                }
                s.h = *seq;
                self.applied.push((
                    owner.session.clone(),
                    *seq,
                    channel.clone(),
                    payload.clone(),
                ));
                if let Some(c) = channel {
                    self.broadcast(c, payload);
                }
                StoreReply::Published(PublishOutcome::Applied)
            }
            StoreOp::Subscribe { owner, channel } => {
                self.held(owner)?.subscriptions.insert(channel.clone());
                StoreReply::Done
            }
            StoreOp::Unsubscribe { owner, channel } => {
                self.held(owner)?.subscriptions.remove(channel);
                StoreReply::Done
            }
            StoreOp::Fetch { owner, after, max } => {
                let backlog = self.backlog;
                let s = self.held(owner)?;
                while let Some((channel, payload)) = s.unnumbered.pop_front() {
                    s.last_offset += 1;
                    let offset = s.last_offset;
                    s.kept.insert(
                        offset,
                        StoredMessage {
                            offset,
                            channel,
                            payload,
                        },
                    );
                    if let Some(b) = backlog {
                        while s.kept.len() > b {
                            s.kept.pop_first();
                        }
                    }
                }
                StoreReply::Fetched(
                    s.kept
                        .range(after.saturating_add(1)..)
                        .take(*max)
                        .map(|(_, m)| m.clone())
                        .collect(),
                )
            }
            StoreOp::Received { owner, offset } => {
                let s = self.held(owner)?;
                s.kept.retain(|&o, _| o > *offset);
                StoreReply::Done
            }
        })
    }
}

/// The virtual clock the drivers here share: `ms` milliseconds after an
/// origin taken once per process.
pub fn at(ms: u64) -> Instant {
    origin() + Duration::from_millis(ms)
}

/// The virtual clock's [`WallClock`]: its origin is Unix millisecond 0, so
/// `wall().ms(at(ms)) == ms` and the store sees the same milliseconds.
pub fn wall() -> WallClock {
    WallClock::new(origin(), 0)
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A [`Connection`] run against a [`ScriptedStore`]: what it sent, how it
/// closed and what it handed the application.
#[derive(Debug)]
pub struct Driver {
    /// The connection under test.
    pub conn: Connection,
    /// Every frame sent, in order.
    pub sent: Vec<Frame>,
    /// The close, if any.
    pub closed: Option<(u16, String)>,
    /// Requests handed to the application.
    pub requests: Vec<Request>,
    /// Report every frame written right after it is sent.
    pub auto_write: bool,
}

/// Its `now` is milliseconds on the shared virtual clock ([`at`]).
impl Driver {
    /// A connection accepted at `now` with `policy`.
    pub fn new(now: u64, cfg: Arc<ServerConfig>, policy: Arc<dyn Policy>, seed: u64) -> Self {
        Driver {
            conn: Connection::new(at(now), wall(), cfg, policy, None, seed),
            sent: Vec::new(),
            closed: None,
            requests: Vec::new(),
            auto_write: true,
        }
    }

    /// Carries out every action, answering store calls from `store`.
    pub fn run(&mut self, store: &mut ScriptedStore, now: u64) {
        while let Some(a) = self.conn.poll_action() {
            match a {
                Action::Send(f) => self.sent.push(f),
                Action::Store(op) => {
                    let reply = store.apply(&op, now);
                    self.conn.handle_store_reply(at(now), reply);
                }
                Action::Request(r) => self.requests.push(r),
                Action::Close { code, reason } => {
                    if self.closed.is_none() {
                        self.closed = Some((code, reason));
                    }
                }
            }
            if self.auto_write {
                let n = self.conn.unwritten_frames();
                if n > 0 {
                    self.conn.handle_written(at(now), n);
                }
            }
        }
    }

    /// Feeds one frame and runs.
    pub fn frame(&mut self, store: &mut ScriptedStore, now: u64, frame: &Frame) {
        self.conn.handle_frame(at(now), frame.to_bytes());
        self.run(store, now);
    }

    /// Routes `notices` and runs.
    pub fn notices(&mut self, store: &mut ScriptedStore, now: u64, notices: &[Notice]) {
        for n in notices {
            self.conn.handle_notice(at(now), n);
        }
        self.run(store, now);
    }

    /// Frames sent since `from`.
    pub fn sent_since(&self, from: usize) -> &[Frame] {
        &self.sent[from.min(self.sent.len())..]
    }
}

/// Runs one connection (and a second one that may take its session over)
/// through the steps encoded in `data`, checking the invariants a client
/// relies on: nothing is sent after the close, ACKs never decrease, MESSAGE
/// offsets strictly increase. Any byte string is a valid input; the fuzz
/// target `server_frames` and a property test feed it.
///
/// Panics only if an invariant breaks (or the core panics).
pub fn fuzz_steps(data: &[u8]) {
    let cfg = match ServerConfig::builder()
        .key(crate::token::TokenKey::new(1, [1; 32]))
        .outbound_window(3, 256)
        .fetch_batch(2)
        .max_backlog(4)
        .max_inbox(3)
        .stall_timeout_ms(50)
        .hello_timeout_ms(500)
        .drain_timeout_ms(20)
        .build()
    {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("fuzz config: {e}"),
    };
    let mut store = ScriptedStore::new();
    store.backlog = data.first().map(|&b| usize::from(b % 4) + 1);
    let mut now = 0u64;
    let mut conns = vec![Driver::new(0, cfg.clone(), Arc::new(crate::AllowAll), 1)];
    let mut token: Option<redial_core::secret::ResumeToken> = None;
    let mut bytes = data.iter().copied().skip(1);
    let mut checked = vec![0usize];
    let mut acked = vec![0u64];
    let mut offset = vec![0u64];
    let mut closed_at = vec![None::<usize>];
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let which = usize::from(op >> 7).min(conns.len() - 1);
        now += u64::from(arg % 16);
        let d = &mut conns[which];
        match op % 16 {
            0 => {
                // Raw bytes: a length, then that many.
                let n = usize::from(arg % 24);
                let raw: Vec<u8> = bytes.by_ref().take(n).collect();
                d.conn.handle_frame(at(now), bytes::Bytes::from(raw));
            }
            1 => {
                let hello = Frame::Hello(redial_core::wire::Hello {
                    version: u64::from(arg % 3),
                    resume_token: if arg & 0x10 != 0 { token.clone() } else { None },
                    last_offset: u64::from(arg >> 5),
                    name: if arg & 0x08 != 0 {
                        Some("fuzz-name".into())
                    } else {
                        None
                    },
                });
                d.conn.handle_frame(at(now), hello.to_bytes());
            }
            2 => d.conn.handle_frame(
                at(now),
                Frame::Publish {
                    seq: u64::from(arg % 8) + 1,
                    channel: if arg & 0x80 != 0 {
                        None
                    } else {
                        Some("c".into())
                    },
                    payload: Payload::binary(vec![arg]),
                }
                .to_bytes(),
            ),
            3 => d.conn.handle_frame(
                at(now),
                Frame::Subscribe {
                    channel: "c".into(),
                }
                .to_bytes(),
            ),
            4 => d.conn.handle_frame(
                at(now),
                Frame::Unsubscribe {
                    channel: "c".into(),
                }
                .to_bytes(),
            ),
            5 => d.conn.handle_frame(
                at(now),
                Frame::Received {
                    offset: u64::from(arg % 12),
                }
                .to_bytes(),
            ),
            6 if arg & 1 == 0 => d.conn.handle_text(at(now)),
            // A message the WebSocket layer refused as over the limit.
            6 => d.conn.handle_oversized(at(now)),
            7 => {
                store.broadcast("c", &Payload::binary(vec![arg]));
            }
            8 => {
                store.send_to("fuzz-name", &Payload::binary(vec![arg]));
            }
            // A wake from the node's registry, with or without news.
            9 if arg & 0x80 != 0 => d.conn.handle_wake(at(now)),
            9 => {
                let n = usize::from(arg % 4);
                let n = n.min(d.conn.unwritten_frames());
                d.conn.handle_written(at(now), n);
            }
            10 => d.auto_write = !d.auto_write,
            11 => {
                if let Some(due) = d.conn.poll_timeout() {
                    now = now.max(wall().ms(due));
                    d.conn.handle_timeout(at(now));
                }
            }
            12 => d.conn.handle_going_away(at(now), u64::from(arg), 100),
            13 => d.conn.handle_closed(at(now)),
            14 => {
                if arg & 2 == 0 {
                    store.fail_next = arg & 1 == 1;
                } else {
                    d.conn.handle_close(at(now), 4000 + u16::from(arg), "fuzz");
                }
            }
            _ => {
                if conns.len() < 2 {
                    conns.push(Driver::new(now, cfg.clone(), Arc::new(crate::AllowAll), 2));
                    checked.push(0);
                    acked.push(0);
                    offset.push(0);
                    closed_at.push(None);
                }
            }
        }
        let notices = store.take_notices();
        for i in 0..conns.len() {
            conns[i].notices(&mut store, now, &notices);
            let d = &conns[i];
            for f in d.sent_since(checked[i]) {
                if let Some(at) = closed_at[i] {
                    panic!("frame {f:?} sent after the close (at frame {at})");
                }
                match f {
                    Frame::Welcome(w) => {
                        token = Some(w.resume_token.clone());
                        acked[i] = w.last_client_seq;
                    }
                    Frame::Ack { seq } => {
                        assert!(*seq >= acked[i], "ACK went back");
                        acked[i] = *seq;
                    }
                    Frame::Message { offset: o, .. } => {
                        assert!(*o > offset[i], "offset {o} after {}", offset[i]);
                        offset[i] = *o;
                    }
                    _ => {}
                }
            }
            checked[i] = d.sent.len();
            if d.closed.is_some() && closed_at[i].is_none() {
                closed_at[i] = Some(d.sent.len());
            }
        }
    }
}
