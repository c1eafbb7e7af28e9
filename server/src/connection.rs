//! One WebSocket connection's protocol state machine, sans IO.
//!
//! # Calling contract
//!
//! The runtime owns the socket, the clock and the [`Store`](crate::Store);
//! a [`Connection`] owns the protocol. `now` is the runtime's monotonic
//! `Instant`, never decreasing, as for the client's `Session`; the only
//! wall-clock time it writes (a token's issue time) comes from the
//! [`WallClock`] it was created with (see [`crate::clock`]).
//!
//! * Feed every input: [`Connection::handle_frame`] for each binary
//!   message, [`Connection::handle_text`] for a text message,
//!   [`Connection::handle_notice`] for every store [`Notice`],
//!   [`Connection::handle_written`] when frames reached the socket,
//!   [`Connection::handle_timeout`] when [`Connection::poll_timeout`] is
//!   due, [`Connection::handle_going_away`] to shut down, and
//!   [`Connection::handle_closed`] when the socket is gone.
//! * After each input, drain [`Connection::poll_action`] until `None` and
//!   carry every [`Action`] out in order. A [`Action::Store`] must be made
//!   and its result handed to [`Connection::handle_store_reply`] before the
//!   next action is carried out: the core has at most one store call
//!   outstanding and relies on replies arriving in order.
//! * Read from the socket only while [`Connection::wants_input`] is true:
//!   that is the inbound half of the bounded memory.
//!
//! # Bounded memory and a subscriber that can't keep up
//!
//! MESSAGEs are pulled from the store, never pushed: the connection calls
//! `fetch` only while its outbound window (frames handed to the socket and
//! not yet reported written, [`ServerConfigBuilder::outbound_window`]) has
//! room and the session has fewer than `max_backlog` MESSAGEs sent and not
//! RECEIVED. A slow socket or a client that does not confirm therefore
//! costs the node at most one window of frames. When MESSAGEs are waiting
//! (a notice said so) but the connection can take none for
//! `stall_timeout_ms`, it sends ERROR `slow_consumer` (code 7, not
//! terminal) and closes with 1013: the client reconnects after its backoff
//! and resumes from its last offset, and what it missed is replayed from
//! the store. Nothing is dropped on the way: if the store no longer keeps
//! some of the MESSAGEs, the offsets jump and the client reports the gap.
//!
//! [`ServerConfigBuilder::outbound_window`]: crate::ServerConfigBuilder::outbound_window

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::timer::{TimerKind, TimerTable};
use redial_core::wire::{self, error_code, Frame, Hello, Welcome};

use crate::clock::{after, WallClock};
use crate::config::ServerConfig;
use crate::names::{is_valid_name, NameGen, SplitMix};
use crate::op::{StoreOp, StoreReply};
use crate::policy::{Peer, Policy, PublishVerdict};
use crate::store::{
    CreateRefused, Notice, Owner, PublishOutcome, SessionId, SessionState, StoreError,
};
use crate::token::Claims;

/// `slow_consumer`: the session had MESSAGEs waiting that the client did
/// not take in time (PROTOCOL.md 6); not terminal, closes with 1013.
pub const SLOW_CONSUMER: u16 = error_code::SLOW_CONSUMER;

/// How many generated names are tried before giving up on a fresh session.
const NAME_ATTEMPTS: u32 = 8;

/// What the runtime must do next.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Write this frame (as one binary message). Frames may be coalesced:
    /// feed several, flush once, then report them with
    /// [`Connection::handle_written`].
    Send(Frame),
    /// Make this store call and hand its result to
    /// [`Connection::handle_store_reply`] before the next action.
    Store(StoreOp),
    /// Give this publish to the application (the policy said
    /// [`PublishVerdict::Request`]); it was stored exactly once.
    Request(Request),
    /// Flush what was sent, close the WebSocket with this code, and stop
    /// reading. Store calls that follow (a detach) must still be made.
    Close {
        /// The WebSocket close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// A publish for the application itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The publishing session.
    pub session: SessionId,
    /// Its name (answer it with a direct message to this name).
    pub name: String,
    /// What the upgrade's authorization said about the caller.
    pub principal: Option<String>,
    /// The PUBLISH seq.
    pub seq: u64,
    /// The channel it named, if any.
    pub channel: Option<String>,
    /// Its payload.
    pub payload: Payload,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for HELLO.
    AwaitHello,
    /// HELLO received, the session is being created or resumed.
    Handshaking,
    /// WELCOME sent: frames flow.
    Open,
    /// GOING_AWAY sent: finishing the store call in flight, then closing.
    Draining,
    /// Closed (by either side); only store replies are still taken.
    Closed,
}

/// How long a RECEIVED may wait before the store hears of it, when fewer
/// than [`ServerConfigBuilder::fetch_batch`] MESSAGEs were confirmed since
/// the store last heard.
///
/// [`ServerConfigBuilder::fetch_batch`]: crate::ServerConfigBuilder::fetch_batch
pub const ACK_DELAY_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Hello,
    Stall,
    Drain,
    /// A RECEIVED the store has not heard of is due.
    Ack,
}

impl TimerKind for Timer {
    const ALL: &'static [Timer] = &[Timer::Hello, Timer::Stall, Timer::Drain, Timer::Ack];

    fn index(self) -> usize {
        match self {
            Timer::Hello => 0,
            Timer::Stall => 1,
            Timer::Drain => 2,
            Timer::Ack => 3,
        }
    }
}

/// What an outstanding store call is for.
#[derive(Debug)]
enum Pending {
    Resume,
    Create {
        attempt: u32,
    },
    Publish {
        seq: u64,
        request: Option<(Option<String>, Payload)>,
    },
    Subscribe {
        channel: Text,
    },
    Fetch {
        max: usize,
        generation: u64,
    },
    /// Detach, End, Unsubscribe, Received: only the failure matters.
    Plain,
}

#[derive(Debug)]
struct Held {
    owner: Owner,
    name: String,
    subscriptions: BTreeSet<String>,
    fenced: bool,
}

impl Held {
    /// Bumped whenever `subscriptions` changes.
    fn subscribed(&mut self, version: &mut u64, channel: &str, on: bool) {
        let changed = if on {
            self.subscriptions.insert(channel.to_owned())
        } else {
            self.subscriptions.remove(channel)
        };
        if changed {
            *version += 1;
        }
    }
}

/// The protocol state machine of one connection (see the module docs for
/// the calling contract).
pub struct Connection {
    cfg: Arc<ServerConfig>,
    policy: Arc<dyn Policy>,
    principal: Option<String>,
    rng: SplitMix,
    names: NameGen,
    phase: Phase,
    hello: Option<Hello>,
    held: Option<Held>,
    /// H (PROTOCOL.md 8.4): the highest seq stored, as acknowledged.
    acked: u64,
    /// The highest offset handed to the socket.
    sent_offset: u64,
    /// The highest offset the client RECEIVED (or resumed from).
    received: u64,
    /// The highest RECEIVED the store was told of (or is being told).
    /// RECEIVED is cumulative, so the store hears only the latest one, once
    /// `fetch_batch` more MESSAGEs were confirmed or after
    /// [`ACK_DELAY_MS`]: one store call per batch, not per RECEIVED.
    stored_received: u64,
    /// [`ACK_DELAY_MS`] passed since a RECEIVED the store has not heard of.
    ack_due: bool,
    /// Encoded sizes of the frames handed out and not yet written.
    unwritten: VecDeque<usize>,
    unwritten_bytes: usize,
    inbox: VecDeque<Frame>,
    in_flight: Option<Pending>,
    queued: VecDeque<(StoreOp, Pending)>,
    /// Notices that may mean new MESSAGEs, counted.
    generation: u64,
    fetch_wanted: bool,
    /// Changes whenever the held subscriptions do.
    subscriptions_version: u64,
    actions: VecDeque<Action>,
    timers: TimerTable<Timer, Instant, 4>,
    /// Where token issue times come from.
    wall: WallClock,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("phase", &self.phase)
            .field("session", &self.held.as_ref().map(|h| &h.owner))
            .field("acked", &self.acked)
            .field("sent_offset", &self.sent_offset)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection accepted at `now`. `wall` maps the runtime's instants
    /// to the Unix milliseconds written into resume tokens (the node's
    /// clock); `principal` is what the upgrade's authorization said about
    /// the caller; `seed` should differ per connection (the node derives it
    /// from its own seed).
    pub fn new(
        now: Instant,
        wall: WallClock,
        cfg: Arc<ServerConfig>,
        policy: Arc<dyn Policy>,
        principal: Option<String>,
        seed: u64,
    ) -> Self {
        let mut rng = SplitMix::new(seed);
        let names = NameGen::new(rng.next_u64());
        let mut timers = TimerTable::default();
        timers.set(Timer::Hello, after(now, cfg.hello_timeout_ms));
        Connection {
            cfg,
            policy,
            principal,
            rng,
            names,
            phase: Phase::AwaitHello,
            hello: None,
            held: None,
            acked: 0,
            sent_offset: 0,
            received: 0,
            stored_received: 0,
            ack_due: false,
            unwritten: VecDeque::new(),
            unwritten_bytes: 0,
            inbox: VecDeque::new(),
            in_flight: None,
            queued: VecDeque::new(),
            generation: 0,
            fetch_wanted: false,
            subscriptions_version: 0,
            actions: VecDeque::new(),
            timers,
            wall,
        }
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The session held, once WELCOME was sent.
    pub fn owner(&self) -> Option<&Owner> {
        self.held.as_ref().map(|h| &h.owner)
    }

    /// The session's name, once WELCOME was sent.
    pub fn name(&self) -> Option<&str> {
        self.held.as_ref().map(|h| h.name.as_str())
    }

    /// The channels the session is subscribed to (none before WELCOME).
    /// A runtime that routes channel notices to the connections subscribed
    /// re-reads them whenever [`Connection::subscriptions_version`] changes.
    pub fn subscriptions(&self) -> impl Iterator<Item = &str> {
        self.held
            .iter()
            .flat_map(|h| h.subscriptions.iter().map(String::as_str))
    }

    /// A counter that changes whenever [`Connection::subscriptions`] does.
    pub fn subscriptions_version(&self) -> u64 {
        self.subscriptions_version
    }

    /// The highest offset sent and the highest RECEIVED.
    pub fn offsets(&self) -> (u64, u64) {
        (self.sent_offset, self.received)
    }

    /// Frames handed out and not yet reported written.
    pub fn unwritten_frames(&self) -> usize {
        self.unwritten.len()
    }

    /// Whether the runtime should read the next message from the socket.
    pub fn wants_input(&self) -> bool {
        match self.phase {
            Phase::AwaitHello => true,
            Phase::Open => self.inbox.len() < self.cfg.max_inbox,
            _ => false,
        }
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if action.is_none() {
            self.release_idle();
        }
        action
    }

    /// Gives back the queues' allocations once they are empty: an idle
    /// connection keeps none (about 1.3 KiB otherwise), at the price of one
    /// small allocation per busy turn.
    fn release_idle(&mut self) {
        if self.actions.capacity() > 0 {
            self.actions = VecDeque::new();
        }
        if self.queued.is_empty() && self.queued.capacity() > 0 {
            self.queued = VecDeque::new();
        }
    }

    /// When [`Connection::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// A binary message arrived.
    pub fn handle_frame(&mut self, now: Instant, message: bytes::Bytes) {
        let frame = match wire::decode(message, &self.cfg.limits) {
            Ok(f) => f,
            Err(e) => return self.protocol_error(&e.to_string()),
        };
        match self.phase {
            Phase::AwaitHello => match frame {
                Frame::Hello(h) => self.on_hello(now, h),
                other => self.protocol_error(&format!("expected HELLO, got {}", other.kind())),
            },
            Phase::Handshaking => {
                self.protocol_error(&format!("{} before WELCOME", frame.kind()));
            }
            Phase::Open => {
                if let Frame::Received { offset } = frame {
                    // Taken at once rather than behind the inbox: it needs
                    // no store reply to decide anything, and it opens the
                    // backlog the next fetch is waiting for.
                    self.on_received(now, offset);
                    return self.pump(now);
                }
                if self.inbox.len() >= self.cfg.max_inbox {
                    return self.fail(error_code::RATE_LIMITED, "too many frames in flight");
                }
                self.inbox.push_back(frame);
                self.pump(now);
            }
            Phase::Draining | Phase::Closed => {}
        }
    }

    /// A message over [`Limits::max_frame_len`](redial_core::wire::Limits)
    /// arrived and the WebSocket layer refused to read it: malformed
    /// (PROTOCOL.md 5), so ERROR `malformed_frame` and close 1002. The
    /// runtime must read nothing more from the socket.
    pub fn handle_oversized(&mut self, _now: Instant) {
        let max = self.cfg.limits.max_frame_len;
        self.protocol_error(&format!("frame over the {max}-byte limit"));
    }

    /// A text message arrived: a protocol error (PROTOCOL.md 1).
    pub fn handle_text(&mut self, _now: Instant) {
        if !matches!(self.phase, Phase::Closed | Phase::Draining) {
            self.protocol_error("text messages are not allowed");
        }
    }

    /// A notice from the store; the connection picks what concerns it.
    pub fn handle_notice(&mut self, now: Instant, notice: &Notice) {
        let Some(held) = &self.held else {
            // Before WELCOME: the first fetch after it reads everything.
            return;
        };
        if self.phase != Phase::Open {
            return;
        }
        let concerns = match notice {
            Notice::Channel(c) => held.subscriptions.contains(c),
            Notice::Session(s) => *s == held.owner.session,
            Notice::TakenOver(o) => {
                if o.session == held.owner.session && o.epoch > held.owner.epoch {
                    self.fenced("session resumed on another connection");
                }
                return;
            }
            Notice::Lagged => true,
        };
        if concerns {
            self.handle_wake(now);
        }
    }

    /// The session may have new MESSAGEs (a runtime that already picked the
    /// notices concerning this session passes them on as this): fetch.
    /// Ignored before WELCOME, whose first fetch reads everything.
    pub fn handle_wake(&mut self, now: Instant) {
        if self.held.is_none() || self.phase != Phase::Open {
            return;
        }
        self.generation += 1;
        self.fetch_wanted = true;
        self.pump(now);
    }

    /// `frames` more of the frames handed out (oldest first) were written
    /// to the socket.
    pub fn handle_written(&mut self, now: Instant, frames: usize) {
        for _ in 0..frames {
            match self.unwritten.pop_front() {
                Some(n) => self.unwritten_bytes -= n,
                None => break,
            }
        }
        self.pump(now);
    }

    /// The result of the store call last handed out.
    pub fn handle_store_reply(&mut self, now: Instant, reply: StoreReply) {
        let Some(pending) = self.in_flight.take() else {
            return;
        };
        if self.phase == Phase::Closed {
            return;
        }
        match reply {
            StoreReply::Failed(e) => return self.store_failed(e),
            StoreReply::Resumed(Some(state)) if matches!(pending, Pending::Resume) => {
                self.welcome(now, state, true)
            }
            StoreReply::Resumed(None) if matches!(pending, Pending::Resume) => self.start_fresh(),
            StoreReply::Created(r) => match (pending, r) {
                (Pending::Create { .. }, Ok(state)) => self.welcome(now, state, false),
                (Pending::Create { attempt }, Err(CreateRefused::NameTaken)) => {
                    let requested = self.hello.as_ref().is_some_and(|h| h.name.is_some());
                    if requested {
                        return self.fail(error_code::NAME_UNAVAILABLE, "name taken");
                    }
                    if attempt + 1 >= NAME_ATTEMPTS {
                        return self.fail(error_code::INTERNAL, "no free name");
                    }
                    let name = self.names.next_name();
                    self.queue(
                        StoreOp::Create { name },
                        Pending::Create {
                            attempt: attempt + 1,
                        },
                    );
                }
                _ => return self.fail(error_code::INTERNAL, "store reply out of order"),
            },
            StoreReply::Published(outcome) => {
                let Pending::Publish { seq, request } = pending else {
                    return self.fail(error_code::INTERNAL, "store reply out of order");
                };
                self.acked = self.acked.max(seq);
                self.send(Frame::Ack { seq: self.acked });
                if outcome == PublishOutcome::Applied {
                    if let (Some((channel, payload)), Some(held)) = (request, &self.held) {
                        self.actions.push_back(Action::Request(Request {
                            session: held.owner.session.clone(),
                            name: held.name.clone(),
                            principal: self.principal.clone(),
                            seq,
                            channel,
                            payload,
                        }));
                    }
                }
            }
            StoreReply::Fetched(messages) => {
                let Pending::Fetch { max, generation } = pending else {
                    return self.fail(error_code::INTERNAL, "store reply out of order");
                };
                let full = messages.len() >= max;
                for m in messages {
                    if m.offset <= self.sent_offset {
                        continue;
                    }
                    self.sent_offset = m.offset;
                    self.send(Frame::Message {
                        offset: m.offset,
                        channel: m.channel.map(Text::from),
                        payload: m.payload,
                    });
                }
                self.fetch_wanted = full || generation != self.generation;
            }
            StoreReply::Done => match pending {
                Pending::Subscribe { channel } => {
                    if let Some(h) = &mut self.held {
                        h.subscribed(&mut self.subscriptions_version, channel.as_str(), true);
                    }
                    self.send(Frame::Subscribed { channel });
                }
                Pending::Plain => {}
                _ => return self.fail(error_code::INTERNAL, "store reply out of order"),
            },
            _ => return self.fail(error_code::INTERNAL, "store reply out of order"),
        }
        self.pump(now);
    }

    /// Any timer that is due at `now` fires.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Handlers only disarm timers, so each due timer fires once.
        while let Some(t) = self.timers.pop_expired(now) {
            match t {
                Timer::Hello => {
                    if matches!(self.phase, Phase::AwaitHello | Phase::Handshaking) {
                        self.close(1002, "no HELLO in time");
                    }
                }
                Timer::Stall => {
                    if self.phase == Phase::Open && self.stalled() {
                        self.fail(
                            SLOW_CONSUMER,
                            "messages waiting: the client is not taking them",
                        );
                    }
                }
                Timer::Drain => {
                    if self.phase == Phase::Draining {
                        self.close(1001, "going away");
                    }
                }
                Timer::Ack => self.ack_due = true,
            }
        }
        self.pump(now);
    }

    /// Shut down: GOING_AWAY, finish the store call in flight, close 1001.
    /// Before WELCOME the connection is closed with 1001 at once.
    pub fn handle_going_away(&mut self, now: Instant, retry_after_ms: u64, window_ms: u64) {
        match self.phase {
            Phase::AwaitHello | Phase::Handshaking => self.close(1001, "going away"),
            Phase::Open | Phase::Draining => {
                self.send(Frame::GoingAway {
                    retry_after_ms,
                    window_ms,
                });
                self.phase = Phase::Draining;
                self.inbox.clear();
                self.fetch_wanted = false;
                self.timers.stop_all();
                self.timers
                    .set(Timer::Drain, after(now, self.cfg.drain_timeout_ms));
                self.pump(now);
            }
            Phase::Closed => {}
        }
    }

    /// The application closes this connection with `code` (for example
    /// 1012 for a restart, or one of its own 4000-4999 codes), without an
    /// ERROR: the session is detached and stays resumable.
    pub fn handle_close(&mut self, _now: Instant, code: u16, reason: &str) {
        self.close(code, reason);
    }

    /// The socket is gone (the peer closed, or it failed).
    pub fn handle_closed(&mut self, _now: Instant) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.finish(false);
        }
    }

    // ----- internals -----

    fn peer(&self) -> Peer<'_> {
        Peer {
            name: self.held.as_ref().map_or("", |h| h.name.as_str()),
            principal: self.principal.as_deref(),
        }
    }

    fn send(&mut self, frame: Frame) {
        let n = frame.encoded_len();
        self.unwritten.push_back(n);
        self.unwritten_bytes += n;
        self.actions.push_back(Action::Send(frame));
    }

    fn queue(&mut self, op: StoreOp, pending: Pending) {
        self.queued.push_back((op, pending));
    }

    fn window_room(&self) -> usize {
        if self.unwritten_bytes >= self.cfg.window_bytes {
            return 0;
        }
        self.cfg.window_frames.saturating_sub(self.unwritten.len())
    }

    fn backlog_room(&self) -> u64 {
        self.cfg
            .max_backlog
            .saturating_sub(self.sent_offset.saturating_sub(self.received))
    }

    /// MESSAGEs (or client frames) are waiting and the connection cannot
    /// take them.
    fn stalled(&self) -> bool {
        let blocked_fetch =
            self.fetch_wanted && (self.window_room() == 0 || self.backlog_room() == 0);
        let blocked_inbox = !self.inbox.is_empty() && self.window_room() == 0;
        blocked_fetch || blocked_inbox
    }

    /// Hands out the next store call, or works through the inbox, until a
    /// store call is outstanding or nothing is left to do.
    fn pump(&mut self, now: Instant) {
        loop {
            if self.in_flight.is_some() || self.phase == Phase::Closed {
                break;
            }
            if let Some((op, pending)) = self.queued.pop_front() {
                self.in_flight = Some(pending);
                self.actions.push_back(Action::Store(op));
                break;
            }
            if self.phase == Phase::Draining {
                self.close(1001, "going away");
                break;
            }
            if self.phase != Phase::Open {
                break;
            }
            if let Some(op) = self.take_ack(false) {
                self.queue(op, Pending::Plain);
                continue;
            }
            let room = self.window_room();
            if self.fetch_wanted && room > 0 && self.backlog_room() > 0 {
                let max = room
                    .min(self.cfg.fetch_batch)
                    .min(usize::try_from(self.backlog_room()).unwrap_or(usize::MAX));
                if let Some(held) = &self.held {
                    let op = StoreOp::Fetch {
                        owner: held.owner.clone(),
                        after: self.sent_offset,
                        max,
                    };
                    let generation = self.generation;
                    self.queue(op, Pending::Fetch { max, generation });
                    continue;
                }
            }
            if room == 0 {
                break;
            }
            match self.inbox.pop_front() {
                Some(frame) => self.on_frame(now, frame),
                None => break,
            }
        }
        let stall = self.phase == Phase::Open && self.stalled();
        match (stall, self.timers.is_set(Timer::Stall)) {
            (true, false) => self
                .timers
                .set(Timer::Stall, after(now, self.cfg.stall_timeout_ms)),
            (false, true) => self.timers.stop(Timer::Stall),
            _ => {}
        }
    }

    fn on_hello(&mut self, _now: Instant, hello: Hello) {
        if hello.version < 1 {
            return self.fail(
                error_code::UNSUPPORTED_VERSION,
                &format!("supported versions: {}", wire::VERSION),
            );
        }
        self.phase = Phase::Handshaking;
        let claims = hello
            .resume_token
            .as_ref()
            .and_then(|t| self.cfg.keys.verify(t.expose()).ok());
        self.hello = Some(hello);
        match claims {
            Some(c) => {
                let op = StoreOp::Resume {
                    session: c.session,
                    lifetime_ms: self.cfg.token_lifetime_ms,
                };
                self.queue(op, Pending::Resume);
            }
            None => self.start_fresh(),
        }
        self.pump(_now);
    }

    fn start_fresh(&mut self) {
        let requested = self
            .hello
            .as_ref()
            .and_then(|h| h.name.as_ref())
            .map(|n| n.as_str().to_owned());
        let name = match requested {
            Some(n) if is_valid_name(&n) => n,
            Some(_) => return self.fail(error_code::NAME_UNAVAILABLE, "subdomain unavailable"),
            None => self.names.next_name(),
        };
        self.queue(StoreOp::Create { name }, Pending::Create { attempt: 0 });
    }

    fn welcome(&mut self, now: Instant, state: SessionState, resumed: bool) {
        let nonce = self.rng.next_u64();
        let Some(token) = self.cfg.keys.issue(&Claims {
            session: state.owner.session.clone(),
            issued_ms: self.wall.ms(now),
            nonce,
        }) else {
            return self.fail(error_code::INTERNAL, "session id too long");
        };
        let last_offset = self.hello.as_ref().map_or(0, |h| h.last_offset);
        let from = if resumed {
            last_offset.min(state.last_offset)
        } else {
            0
        };
        let welcome = Welcome {
            version: wire::VERSION,
            resumed,
            session_id: Text::from(state.owner.session.as_str()),
            name: Text::from(state.name.as_str()),
            resume_token: ResumeToken::new(token),
            token_lifetime_ms: self.cfg.token_lifetime_ms,
            last_client_seq: state.last_client_seq,
            kept: state
                .subscriptions
                .iter()
                .map(|c| Text::from(c.as_str()))
                .collect(),
        };
        let frame = Frame::Welcome(welcome);
        if frame.validate(&self.cfg.limits).is_err() {
            return self.fail(
                error_code::INTERNAL,
                "session state exceeds the frame limits",
            );
        }
        self.acked = state.last_client_seq;
        self.sent_offset = from;
        self.received = from;
        self.held = Some(Held {
            owner: state.owner.clone(),
            name: state.name,
            subscriptions: state.subscriptions.into_iter().collect(),
            fenced: false,
        });
        self.subscriptions_version += 1;
        self.phase = Phase::Open;
        self.hello = None;
        self.timers.stop(Timer::Hello);
        self.send(frame);
        if from > 0 {
            // Delivered up to here: as good as a RECEIVED.
            self.stored_received = from;
            self.queue(
                StoreOp::Received {
                    owner: state.owner,
                    offset: from,
                },
                Pending::Plain,
            );
        }
        self.fetch_wanted = true;
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) {
        let Some(held) = &self.held else { return };
        let owner = held.owner.clone();
        match frame {
            Frame::Publish {
                seq,
                channel,
                payload,
            } => {
                if seq <= self.acked {
                    // A duplicate: stored before, acknowledge again.
                    self.send(Frame::Ack { seq: self.acked });
                    return;
                }
                let channel = channel.map(|c| c.as_str().to_owned());
                let verdict = self
                    .policy
                    .publish(self.peer(), channel.as_deref(), &payload);
                let (store_channel, request) = match verdict {
                    PublishVerdict::FanOut if channel.is_some() => (channel, None),
                    PublishVerdict::FanOut | PublishVerdict::Request => {
                        (None, Some((channel, payload.clone())))
                    }
                    PublishVerdict::Reject(r) => {
                        let code = r.code;
                        return self.fail(code, &r.reason);
                    }
                };
                let op = StoreOp::Publish {
                    owner,
                    seq,
                    channel: store_channel,
                    payload,
                };
                self.queue(op, Pending::Publish { seq, request });
            }
            Frame::Subscribe { channel }
                if !held.subscriptions.contains(channel.as_str())
                    && held.subscriptions.len() >= self.cfg.limits.max_kept_channels =>
            {
                // WELCOME could not list them all after a reconnect.
                self.send(Frame::SubscribeError {
                    channel,
                    code: error_code::RATE_LIMITED,
                    reason: Text::from("too many subscriptions"),
                });
            }
            Frame::Subscribe { channel } => {
                match self.policy.subscribe(self.peer(), channel.as_str()) {
                    Ok(()) => {
                        let op = StoreOp::Subscribe {
                            owner,
                            channel: channel.as_str().to_owned(),
                        };
                        self.queue(op, Pending::Subscribe { channel });
                    }
                    Err(r) => self.send(Frame::SubscribeError {
                        channel,
                        code: r.code,
                        reason: Text::from(r.reason),
                    }),
                }
            }
            Frame::Unsubscribe { channel } => {
                if let Some(h) = &mut self.held {
                    h.subscribed(&mut self.subscriptions_version, channel.as_str(), false);
                }
                let op = StoreOp::Unsubscribe {
                    owner,
                    channel: channel.as_str().to_owned(),
                };
                self.queue(op, Pending::Plain);
            }
            Frame::Received { offset } => self.on_received(now, offset),
            // The client reports its own error before closing; wait for it.
            Frame::Error { .. } => {}
            other => self.protocol_error(&format!("{} not allowed from a client", other.kind())),
        }
    }

    /// RECEIVED `offset`: it opens the backlog at once; the store hears of
    /// it (coalesced with those that follow) once `fetch_batch` MESSAGEs
    /// were confirmed, after [`ACK_DELAY_MS`], or when the session detaches.
    fn on_received(&mut self, now: Instant, offset: u64) {
        // Above what was sent: covers everything sent (3.3).
        let offset = offset.min(self.sent_offset);
        if offset > self.received {
            self.received = offset;
            if !self.timers.is_set(Timer::Ack) {
                self.timers.set(Timer::Ack, after(now, ACK_DELAY_MS));
            }
        }
    }

    /// The `Received` call the store is due (any unheard RECEIVED when
    /// `all`), marked as made.
    fn take_ack(&mut self, all: bool) -> Option<StoreOp> {
        let unheard = self.received.saturating_sub(self.stored_received);
        let batch = u64::try_from(self.cfg.fetch_batch).unwrap_or(u64::MAX);
        if unheard == 0 || !(all || self.ack_due || unheard >= batch) {
            return None;
        }
        let held = self.held.as_ref()?;
        self.stored_received = self.received;
        self.ack_due = false;
        self.timers.stop(Timer::Ack);
        Some(StoreOp::Received {
            owner: held.owner.clone(),
            offset: self.received,
        })
    }

    fn protocol_error(&mut self, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.fail(error_code::MALFORMED_FRAME, reason);
    }

    /// ERROR with `code` (terminal as PROTOCOL.md 6 says) and the close code
    /// that goes with it.
    fn fail(&mut self, code: u16, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        let terminal = error_code::is_terminal(code);
        let reason = redial_core::utf8::prefix(reason, self.cfg.limits.max_reason_len).to_owned();
        self.send(Frame::Error {
            code,
            terminal,
            reason: Text::from(reason.as_str()),
        });
        self.phase = Phase::Closed;
        self.timers.stop_all();
        self.actions.push_back(Action::Close {
            code: error_code::close_code(code, terminal),
            reason,
        });
        self.finish(terminal);
    }

    fn close(&mut self, code: u16, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.timers.stop_all();
        self.actions.push_back(Action::Close {
            code,
            reason: reason.to_owned(),
        });
        self.finish(false);
    }

    /// Another connection holds the session now: close without touching it.
    fn fenced(&mut self, reason: &str) {
        if let Some(h) = &mut self.held {
            h.fenced = true;
        }
        self.close(1000, reason);
    }

    fn store_failed(&mut self, e: StoreError) {
        match e {
            StoreError::Fenced(_) => self.fenced("session resumed on another connection"),
            other => {
                let reason = match other {
                    StoreError::UnknownSession(_) => "session ended".to_owned(),
                    e => format!("store: {e}"),
                };
                if let Some(h) = &mut self.held {
                    // Nothing to detach from.
                    h.fenced = true;
                }
                self.fail(error_code::INTERNAL, &reason)
            }
        }
    }

    /// Releases the session: ended after a terminal ERROR, detached
    /// otherwise, untouched when another connection holds it.
    fn finish(&mut self, terminal: bool) {
        self.inbox.clear();
        self.queued.clear();
        self.timers.stop_all();
        let Some(owner) = self
            .held
            .as_ref()
            .filter(|h| !h.fenced)
            .map(|h| h.owner.clone())
        else {
            return;
        };
        let op = if terminal {
            StoreOp::End { owner }
        } else {
            // What the client confirmed need not be kept for a resume.
            if let Some(ack) = self.take_ack(true) {
                self.actions.push_back(Action::Store(ack));
            }
            StoreOp::Detach { owner }
        };
        self.actions.push_back(Action::Store(op));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::policy::{AllowAll, Refusal};
    use crate::testing::{at, wall, Driver, ScriptedStore};
    use crate::token::TokenKey;
    use crate::ServerConfig;

    fn cfg() -> Arc<ServerConfig> {
        Arc::new(
            ServerConfig::builder()
                .key(TokenKey::new(1, [3; 32]))
                .outbound_window(4, 1 << 20)
                .fetch_batch(2)
                .max_backlog(6)
                .stall_timeout_ms(1000)
                .token_lifetime_ms(60_000)
                .build()
                .unwrap(),
        )
    }

    fn hello(token: Option<ResumeToken>, last_offset: u64, name: Option<&str>) -> Frame {
        Frame::Hello(Hello {
            version: 1,
            resume_token: token,
            last_offset,
            name: name.map(Text::from),
        })
    }

    fn welcome_of(d: &Driver) -> Welcome {
        d.sent
            .iter()
            .find_map(|f| match f {
                Frame::Welcome(w) => Some(w.clone()),
                _ => None,
            })
            .unwrap()
    }

    fn open(store: &mut ScriptedStore, policy: Arc<dyn Policy>) -> Driver {
        let mut d = Driver::new(0, cfg(), policy, 1);
        d.frame(store, 0, &hello(None, 0, None));
        assert_eq!(d.conn.phase(), Phase::Open);
        d
    }

    fn publish(seq: u64, channel: Option<&str>) -> Frame {
        Frame::Publish {
            seq,
            channel: channel.map(Text::from),
            payload: Payload::text(format!("p{seq}")),
        }
    }

    fn offsets(frames: &[Frame]) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Message { offset, .. } => Some(*offset),
                _ => None,
            })
            .collect()
    }

    fn last_error(d: &Driver) -> (u16, bool) {
        d.sent
            .iter()
            .rev()
            .find_map(|f| match f {
                Frame::Error { code, terminal, .. } => Some((*code, *terminal)),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn fresh_hello_gets_a_welcome_with_a_valid_name_and_token() {
        let mut store = ScriptedStore::new();
        let d = open(&mut store, Arc::new(AllowAll));
        let w = welcome_of(&d);
        assert!(!w.resumed);
        assert!(crate::names::is_valid_name(w.name.as_str()));
        assert_eq!(w.token_lifetime_ms, 60_000);
        let claims = cfg().keys.verify(w.resume_token.expose()).unwrap();
        assert_eq!(claims.session.as_str(), w.session_id.as_str());
    }

    #[test]
    fn version_zero_is_unsupported_and_terminal() {
        let mut store = ScriptedStore::new();
        let mut d = Driver::new(0, cfg(), Arc::new(AllowAll), 1);
        let mut h = hello(None, 0, None);
        if let Frame::Hello(x) = &mut h {
            x.version = 0;
        }
        d.frame(&mut store, 0, &h);
        assert_eq!(last_error(&d), (error_code::UNSUPPORTED_VERSION, true));
        assert_eq!(d.closed.as_ref().unwrap().0, 1008);
    }

    #[test]
    fn malformed_and_text_messages_close_with_1002() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        d.conn
            .handle_frame(at(1), bytes::Bytes::from_static(&[0x07, 0x00]));
        d.run(&mut store, 1);
        assert_eq!(last_error(&d), (error_code::MALFORMED_FRAME, false));
        assert_eq!(d.closed.as_ref().unwrap().0, 1002);
        // The session was detached, not ended: it can be resumed.
        let (id, _, _) = store.session_by_name(d.conn.name().unwrap()).unwrap();
        assert_eq!(d.conn.owner().unwrap().session, id);

        let mut d = open(&mut store, Arc::new(AllowAll));
        d.conn.handle_text(at(1));
        d.run(&mut store, 1);
        assert_eq!(d.closed.as_ref().unwrap().0, 1002);

        // Anything but HELLO first.
        let mut d = Driver::new(0, cfg(), Arc::new(AllowAll), 1);
        d.frame(&mut store, 0, &publish(1, None));
        assert_eq!(d.closed.as_ref().unwrap().0, 1002);
    }

    #[test]
    fn publishes_are_stored_once_and_acks_are_cumulative() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        d.frame(&mut store, 1, &publish(1, Some("a")));
        d.frame(&mut store, 1, &publish(2, Some("a")));
        d.frame(&mut store, 1, &publish(2, Some("a")));
        d.frame(&mut store, 1, &publish(1, Some("a")));
        let acks: Vec<u64> = d
            .sent
            .iter()
            .filter_map(|f| match f {
                Frame::Ack { seq } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(acks, vec![1, 2, 2, 2]);
        assert_eq!(store.applied.len(), 2);
    }

    #[test]
    fn subscribe_follows_the_policy() {
        struct DenyAdmin;
        impl Policy for DenyAdmin {
            fn subscribe(&self, _: Peer<'_>, channel: &str) -> Result<(), Refusal> {
                if channel == "admin" {
                    Err(Refusal::new(error_code::UNAUTHORIZED, "forbidden"))
                } else {
                    Ok(())
                }
            }
        }
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(DenyAdmin));
        let n = d.sent.len();
        d.frame(
            &mut store,
            1,
            &Frame::Subscribe {
                channel: "news".into(),
            },
        );
        d.frame(
            &mut store,
            1,
            &Frame::Subscribe {
                channel: "admin".into(),
            },
        );
        assert_eq!(
            d.sent_since(n),
            &[
                Frame::Subscribed {
                    channel: "news".into()
                },
                Frame::SubscribeError {
                    channel: "admin".into(),
                    code: error_code::UNAUTHORIZED,
                    reason: "forbidden".into()
                }
            ]
        );
        assert!(d.closed.is_none());
    }

    #[test]
    fn messages_are_numbered_and_replayed_after_resume() {
        let mut store = ScriptedStore::new();
        let mut d = delivered(&mut store, "news", 3);
        assert_eq!(offsets(&d.sent), vec![1, 2, 3]);
        // The client delivered 1, then the connection drops.
        d.frame(&mut store, 3, &Frame::Received { offset: 1 });
        d.conn.handle_closed(at(4));
        d.run(&mut store, 4);
        store.take_notices();
        let w = welcome_of(&d);

        let mut d2 = Driver::new(10, cfg(), Arc::new(AllowAll), 2);
        d2.frame(
            &mut store,
            10,
            &hello(Some(w.resume_token.clone()), 1, None),
        );
        let w2 = welcome_of(&d2);
        assert!(w2.resumed);
        assert_eq!(w2.session_id, w.session_id);
        assert_eq!(w2.kept, vec![Text::from("news")]);
        assert_eq!(offsets(&d2.sent), vec![2, 3]);
        // New messages continue the numbering.
        store.broadcast("news", &Payload::text("m3"));
        let n = store.take_notices();
        d2.notices(&mut store, 11, &n);
        assert_eq!(offsets(&d2.sent), vec![2, 3, 4]);
    }

    #[test]
    fn an_expired_token_yields_a_fresh_session() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        let w = welcome_of(&d);
        d.conn.handle_closed(at(5));
        d.run(&mut store, 5);
        let mut d2 = Driver::new(70_006, cfg(), Arc::new(AllowAll), 2);
        d2.frame(&mut store, 70_006, &hello(Some(w.resume_token), 9, None));
        let w2 = welcome_of(&d2);
        assert!(!w2.resumed);
        assert_ne!(w2.session_id, w.session_id);
        assert_eq!(w2.last_client_seq, 0);
    }

    #[test]
    fn requests_reach_the_application_once_and_rejections_close() {
        struct Rules;
        impl Policy for Rules {
            fn publish(&self, _: Peer<'_>, channel: Option<&str>, _: &Payload) -> PublishVerdict {
                match channel {
                    Some("bad") => {
                        PublishVerdict::Reject(Refusal::new(error_code::RATE_LIMITED, "slow down"))
                    }
                    Some("evil") => {
                        PublishVerdict::Reject(Refusal::new(error_code::UNAUTHORIZED, "no"))
                    }
                    Some(_) => PublishVerdict::FanOut,
                    None => PublishVerdict::Request,
                }
            }
        }
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(Rules));
        d.frame(&mut store, 1, &publish(1, None));
        d.frame(&mut store, 1, &publish(1, None));
        assert_eq!(d.requests.len(), 1);
        assert_eq!(d.requests[0].seq, 1);
        d.frame(&mut store, 1, &publish(2, Some("bad")));
        assert_eq!(last_error(&d), (error_code::RATE_LIMITED, false));
        assert_eq!(d.closed.as_ref().unwrap().0, 1013);
        let (_, h, _) = store.session_by_name(d.conn.name().unwrap()).unwrap();
        assert_eq!(h, 1, "a refused publish is not stored");

        let mut d = open(&mut store, Arc::new(Rules));
        let name = d.conn.name().unwrap().to_owned();
        d.frame(&mut store, 1, &publish(1, Some("evil")));
        assert_eq!(last_error(&d), (error_code::UNAUTHORIZED, true));
        assert_eq!(d.closed.as_ref().unwrap().0, 1008);
        assert!(
            store.session_by_name(&name).is_none(),
            "a terminal ERROR ends the session"
        );
    }

    #[test]
    fn a_slow_socket_holds_at_most_one_window_and_is_closed_when_it_stalls() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        d.frame(
            &mut store,
            1,
            &Frame::Subscribe {
                channel: "c".into(),
            },
        );
        d.auto_write = false;
        for i in 0..20 {
            store.broadcast("c", &Payload::text(format!("m{i}")));
        }
        let n = store.take_notices();
        d.notices(&mut store, 2, &n);
        // WELCOME and SUBSCRIBED were written; the window holds 4 frames.
        assert_eq!(offsets(&d.sent), vec![1, 2, 3, 4]);
        assert_eq!(d.conn.unwritten_frames(), 4);
        assert_eq!(d.conn.poll_timeout().map(|t| wall().ms(t)), Some(1002));
        // Two are written: two more are fetched.
        d.conn.handle_written(at(500), 2);
        d.run(&mut store, 500);
        assert_eq!(offsets(&d.sent), vec![1, 2, 3, 4, 5, 6]);
        // The stall timer restarted when the window opened, and fires.
        let due = d.conn.poll_timeout().map(|t| wall().ms(t)).unwrap();
        assert_eq!(due, 1500);
        d.conn.handle_timeout(at(due));
        d.run(&mut store, due);
        assert_eq!(last_error(&d), (SLOW_CONSUMER, false));
        assert_eq!(d.closed.as_ref().unwrap().0, 1013);
    }

    #[test]
    fn a_client_that_does_not_confirm_is_bounded_by_the_backlog_then_resumes() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        d.frame(
            &mut store,
            1,
            &Frame::Subscribe {
                channel: "c".into(),
            },
        );
        for i in 0..10 {
            store.broadcast("c", &Payload::text(format!("m{i}")));
        }
        let n = store.take_notices();
        d.notices(&mut store, 2, &n);
        // Written at once, but never RECEIVED: max_backlog (6) is the cap.
        assert_eq!(offsets(&d.sent), (1..=6).collect::<Vec<_>>());
        let due = d.conn.poll_timeout().map(|t| wall().ms(t)).unwrap();
        d.conn.handle_timeout(at(due));
        d.run(&mut store, due);
        assert_eq!(last_error(&d), (SLOW_CONSUMER, false));
        let w = welcome_of(&d);
        // The client had delivered 4; it resumes and gets 5.. with nothing lost.
        let mut d2 = Driver::new(due + 10, cfg(), Arc::new(AllowAll), 2);
        d2.frame(&mut store, due + 10, &hello(Some(w.resume_token), 4, None));
        assert!(welcome_of(&d2).resumed);
        assert_eq!(offsets(&d2.sent), vec![5, 6, 7, 8, 9, 10]);
        d2.frame(&mut store, due + 11, &Frame::Received { offset: 10 });
        assert!(d2.closed.is_none());
    }

    #[test]
    fn gaps_come_only_from_the_store() {
        let mut store = ScriptedStore::new();
        store.backlog = Some(3);
        let mut d = open(&mut store, Arc::new(AllowAll));
        d.frame(
            &mut store,
            1,
            &Frame::Subscribe {
                channel: "c".into(),
            },
        );
        let w = welcome_of(&d);
        d.conn.handle_closed(at(2));
        d.run(&mut store, 2);
        for i in 0..5 {
            store.broadcast("c", &Payload::text(format!("m{i}")));
        }
        // A fetch numbers all five and keeps three: the replay starts at 3.
        store.take_notices();
        let mut d2 = Driver::new(3, cfg(), Arc::new(AllowAll), 2);
        d2.frame(&mut store, 3, &hello(Some(w.resume_token), 0, None));
        assert_eq!(offsets(&d2.sent), vec![3, 4, 5]);
    }

    #[test]
    fn going_away_sends_the_window_then_closes_1001_and_keeps_the_session() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        let name = d.conn.name().unwrap().to_owned();
        d.conn.handle_going_away(at(5), 1000, 4000);
        d.run(&mut store, 5);
        assert_eq!(
            d.sent.last(),
            Some(&Frame::GoingAway {
                retry_after_ms: 1000,
                window_ms: 4000
            })
        );
        assert_eq!(d.closed.as_ref().unwrap().0, 1001);
        assert!(store.session_by_name(&name).is_some());
        // Before WELCOME: closed at once.
        let mut d = Driver::new(0, cfg(), Arc::new(AllowAll), 1);
        d.conn.handle_going_away(at(1), 1000, 4000);
        d.run(&mut store, 1);
        assert_eq!(d.closed.as_ref().unwrap().0, 1001);
        assert!(d.sent.is_empty());
    }

    #[test]
    fn going_away_waits_for_the_store_call_in_flight() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        d.conn.handle_frame(at(1), publish(1, Some("x")).to_bytes());
        let op = match d.conn.poll_action() {
            Some(Action::Store(op)) => op,
            other => panic!("{other:?}"),
        };
        d.conn.handle_going_away(at(2), 0, 0);
        assert!(matches!(
            d.conn.poll_action(),
            Some(Action::Send(Frame::GoingAway { .. }))
        ));
        assert!(d.conn.poll_action().is_none(), "no close before the ACK");
        let reply = store.apply(&op, 2);
        d.conn.handle_store_reply(at(3), reply);
        d.run(&mut store, 3);
        assert_eq!(d.sent.last(), Some(&Frame::Ack { seq: 1 }));
        assert_eq!(d.closed.as_ref().unwrap().0, 1001);
    }

    /// An open session subscribed to `channel`, sent `n` MESSAGEs there.
    fn delivered(store: &mut ScriptedStore, channel: &str, n: usize) -> Driver {
        let mut d = open(store, Arc::new(AllowAll));
        d.frame(
            store,
            1,
            &Frame::Subscribe {
                channel: channel.into(),
            },
        );
        for i in 0..n {
            store.broadcast(channel, &Payload::text(format!("m{i}")));
        }
        let notices = store.take_notices();
        d.notices(store, 2, &notices);
        d
    }

    /// Carries out the actions due, store calls applied at `now`; returns
    /// the store calls made, by name.
    fn run_store_calls(d: &mut Driver, store: &mut ScriptedStore, now: u64) -> Vec<String> {
        let mut calls = Vec::new();
        while let Some(a) = d.conn.poll_action() {
            match a {
                Action::Store(op) => {
                    calls.push(match &op {
                        StoreOp::Received { offset, .. } => format!("Received {offset}"),
                        other => format!("{other:?}")
                            .split([' ', '{'])
                            .next()
                            .unwrap()
                            .to_owned(),
                    });
                    let reply = store.apply(&op, now);
                    d.conn.handle_store_reply(at(now), reply);
                }
                Action::Send(f) => d.sent.push(f),
                Action::Close { code, reason } => d.closed = Some((code, reason)),
                other => panic!("{other:?}"),
            }
        }
        calls
    }

    #[test]
    fn receiveds_during_a_store_call_become_one_call_with_the_latest_offset() {
        let mut store = ScriptedStore::new();
        let mut d = delivered(&mut store, "c", 4);
        assert_eq!(offsets(&d.sent), vec![1, 2, 3, 4]);
        d.conn.handle_frame(at(3), publish(1, Some("x")).to_bytes());
        let op = match d.conn.poll_action() {
            Some(Action::Store(op)) => op,
            other => panic!("{other:?}"),
        };
        for offset in [1, 3, 2] {
            d.conn
                .handle_frame(at(4), Frame::Received { offset }.to_bytes());
        }
        assert!(d.conn.poll_action().is_none(), "one store call at a time");
        assert_eq!(d.conn.offsets(), (4, 3), "taken at once, not queued");
        let reply = store.apply(&op, 5);
        d.conn.handle_store_reply(at(5), reply);
        assert_eq!(run_store_calls(&mut d, &mut store, 5), vec!["Received 3"]);
        assert_eq!(d.sent.last(), Some(&Frame::Ack { seq: 1 }));
        assert!(d.closed.is_none());
    }

    #[test]
    fn a_lone_received_reaches_the_store_after_the_delay_or_before_the_detach() {
        let mut store = ScriptedStore::new();
        let mut d = delivered(&mut store, "c", 2);
        assert_eq!(offsets(&d.sent), vec![1, 2]);
        // One MESSAGE confirmed, below the batch of two: not yet.
        d.conn
            .handle_frame(at(3), Frame::Received { offset: 1 }.to_bytes());
        assert!(run_store_calls(&mut d, &mut store, 3).is_empty());
        assert_eq!(d.conn.poll_timeout(), Some(at(3 + ACK_DELAY_MS)));
        d.conn.handle_timeout(at(3 + ACK_DELAY_MS));
        assert_eq!(
            run_store_calls(&mut d, &mut store, 1003),
            vec!["Received 1"]
        );
        assert_eq!(d.conn.poll_timeout(), None, "nothing left to tell");

        // Confirmed and then closed: told before the detach.
        let mut d = delivered(&mut store, "c", 1);
        d.conn
            .handle_frame(at(3), Frame::Received { offset: 1 }.to_bytes());
        assert!(run_store_calls(&mut d, &mut store, 3).is_empty());
        d.conn.handle_closed(at(4));
        assert_eq!(
            run_store_calls(&mut d, &mut store, 4),
            vec!["Received 1", "Detach"]
        );
    }

    #[test]
    fn the_application_can_close_a_connection_and_the_session_stays() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        let w = welcome_of(&d);
        d.conn.handle_close(at(1), 4020, "admin");
        d.run(&mut store, 1);
        assert_eq!(d.closed, Some((4020, "admin".to_owned())));
        let mut d2 = Driver::new(2, cfg(), Arc::new(AllowAll), 2);
        d2.frame(&mut store, 2, &hello(Some(w.resume_token), 0, None));
        assert!(welcome_of(&d2).resumed);
    }

    #[test]
    fn no_hello_in_time_closes() {
        let mut store = ScriptedStore::new();
        let mut d = Driver::new(0, cfg(), Arc::new(AllowAll), 1);
        assert_eq!(d.conn.poll_timeout().map(|t| wall().ms(t)), Some(10_000));
        d.conn.handle_timeout(at(10_000));
        d.run(&mut store, 10_000);
        assert_eq!(d.closed.as_ref().unwrap().0, 1002);
    }

    #[test]
    fn a_taken_over_connection_closes_without_detaching() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        let w = welcome_of(&d);
        let mut d2 = Driver::new(1, cfg(), Arc::new(AllowAll), 2);
        d2.frame(&mut store, 1, &hello(Some(w.resume_token), 0, None));
        let n = store.take_notices();
        d.notices(&mut store, 2, &n);
        assert_eq!(d.closed.as_ref().unwrap().0, 1000);
        // The new holder is still connected and can publish.
        d2.frame(&mut store, 3, &publish(1, Some("x")));
        assert_eq!(d2.sent.last(), Some(&Frame::Ack { seq: 1 }));
    }

    #[test]
    fn names_follow_the_rule_and_connected_names_are_taken() {
        let mut store = ScriptedStore::new();
        let mut d = Driver::new(0, cfg(), Arc::new(AllowAll), 1);
        d.frame(&mut store, 0, &hello(None, 0, Some("my-app")));
        assert_eq!(welcome_of(&d).name, "my-app");
        let mut d2 = Driver::new(0, cfg(), Arc::new(AllowAll), 2);
        d2.frame(&mut store, 0, &hello(None, 0, Some("my-app")));
        assert_eq!(last_error(&d2), (error_code::NAME_UNAVAILABLE, true));
        let mut d3 = Driver::new(0, cfg(), Arc::new(AllowAll), 3);
        d3.frame(&mut store, 0, &hello(None, 0, Some("Bad_Name")));
        assert_eq!(last_error(&d3), (error_code::NAME_UNAVAILABLE, true));
    }

    #[test]
    fn subscriptions_stop_at_what_welcome_can_list() {
        let cfg = Arc::new(
            ServerConfig::builder()
                .key(TokenKey::new(1, [3; 32]))
                .limits(wire::Limits {
                    max_kept_channels: 2,
                    ..wire::Limits::default()
                })
                .build()
                .unwrap(),
        );
        let mut store = ScriptedStore::new();
        let mut d = Driver::new(0, cfg.clone(), Arc::new(AllowAll), 1);
        d.frame(&mut store, 0, &hello(None, 0, None));
        for c in ["a", "b", "a", "c"] {
            d.frame(&mut store, 1, &Frame::Subscribe { channel: c.into() });
        }
        let n = d.sent.len();
        assert!(matches!(
            &d.sent[n - 1],
            Frame::SubscribeError { code: error_code::RATE_LIMITED, channel, .. } if channel == "c"
        ));
        assert_eq!(
            d.sent[n - 2],
            Frame::Subscribed {
                channel: "a".into()
            }
        );
        // The session still resumes: WELCOME lists both.
        let w = welcome_of(&d);
        d.conn.handle_closed(at(2));
        d.run(&mut store, 2);
        let mut d2 = Driver::new(3, cfg, Arc::new(AllowAll), 2);
        d2.frame(&mut store, 3, &hello(Some(w.resume_token), 0, None));
        assert_eq!(welcome_of(&d2).kept.len(), 2);
    }

    #[test]
    fn a_store_failure_is_an_internal_error() {
        let mut store = ScriptedStore::new();
        let mut d = open(&mut store, Arc::new(AllowAll));
        store.fail_next = true;
        d.frame(&mut store, 1, &publish(1, Some("x")));
        assert_eq!(last_error(&d), (error_code::INTERNAL, false));
        assert_eq!(d.closed.as_ref().unwrap().0, 1011);
    }
}
