//! The session: one long-lived connection's whole life, as a state machine.

mod inbound;
mod lifecycle;
mod link;
mod outage;
mod outbound;
mod resume;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::action::{Action, SendKind};
use crate::backoff::Ladder;
use crate::call::{CallError, CallId, CallOptions, Calls};
use crate::close_policy::{handshake_rule, CloseRule, HandshakeRule};
use crate::config::Config;
use crate::endpoint::Endpoints;
use crate::error::SendError;
use crate::event::{Event, SessionInfo, State, TerminalReason};
use crate::headers::Headers;
use crate::keepalive::{Keepalive, PingDue};
use crate::payload::{Payload, Text};
use crate::protocol::{
    Capabilities, Data, FrameContext, Handshake, Inbound, InputLimits, OpenContext, Outgoing,
    Output, Protocol, ProtocolError, Ready, TimerContext,
};
use crate::queue::{Queue, SendLimits};
use crate::rng::Rng;
use crate::secret::AuthToken;
use crate::timer::{deadline, SessionTimers, Timer};
use crate::transport::{CloseFrame, DialFailure, Frame, SizeLimit};

use link::Link;
use outage::{Delay, Outage};
use resume::{Delivery, Resume};

/// The token provider could not produce a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFailure {
    /// The provider says the user is not authorized (a terminal answer):
    /// retrying cannot help.
    pub unauthorized: bool,
    /// What went wrong, for events and logs. Must not contain the token.
    pub message: String,
}

impl TokenFailure {
    /// A failure worth retrying (provider down, timeout, ...).
    pub fn transient(message: impl Into<String>) -> Self {
        TokenFailure {
            unauthorized: false,
            message: message.into(),
        }
    }

    /// The provider refuses: the session ends as `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        TokenFailure {
            unauthorized: true,
            message: message.into(),
        }
    }
}

/// Where the connection is, in more detail than the public [`State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    FetchingToken,
    Dialing,
    /// Transport open, handshake sent, waiting for the protocol's reply.
    Handshaking,
    Connected,
    /// Backing off before the next attempt.
    Waiting,
    Closed,
}

/// One reconnecting WebSocket client, without IO.
///
/// # Calling contract
/// - Feed every input through a `handle_*` method with the current time.
///   Time must not go backwards; an earlier `now` is treated as the latest
///   one seen.
/// - After any input, drain [`poll_action`](Self::poll_action) and
///   [`poll_event`](Self::poll_event) until both return `None`, carrying out
///   each action in order.
/// - Then wait until [`poll_timeout`](Self::poll_timeout) (or the next input)
///   and call [`handle_timeout`](Self::handle_timeout). Calling it early or
///   twice is harmless; after it, `poll_timeout` is later than `now` or `None`.
/// - Report the result of every [`Action::FetchToken`] and [`Action::Dial`];
///   after an [`Action::Close`] report nothing more about that transport.
///
/// A session never reads a clock, never does IO and draws randomness only
/// from the seed in its [`Config`]: the same seed and inputs give the same
/// outputs.
#[derive(Debug)]
pub struct Session {
    config: Config,
    protocol: Box<dyn Protocol>,
    caps: Capabilities,
    /// The protocol's limits on keys and channels.
    limits: InputLimits,
    /// Frames and facts from the protocol, drained after every call to it.
    out: Output,
    /// The largest message the last server said it takes.
    server_max_message: Option<usize>,
    rng: Rng,
    /// Which endpoint the next dial goes to.
    endpoints: Endpoints,
    ladder: Ladder,
    timers: SessionTimers,
    keepalive: Option<Keepalive>,
    phase: Phase,
    /// The state last reported in [`Event::StateChanged`].
    reported: State,
    closing: bool,
    now: Option<Instant>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    queue: Queue,
    /// Calls waiting for a transport or in flight on this one.
    calls: Calls,
    ever_connected: bool,
    /// Subscription key → spec (what the protocol needs to renew it).
    subscriptions: BTreeMap<Text, Payload>,

    /// The dial in flight or the open connection: `Some` exactly while
    /// dialing, handshaking or connected.
    link: Option<Link>,
    /// The current outage (kept while connected: see [`Outage`]).
    outage: Outage,
    /// What the next handshake needs to resume the server-side session.
    resume: Resume,
}

impl Session {
    /// A session in [`State::Idle`]; call [`handle_connect`](Self::handle_connect)
    /// to start.
    pub fn new(config: Config, protocol: impl Protocol) -> Self {
        let keepalive = config
            .ping_interval
            .map(|i| Keepalive::new(i, config.pong_timeout));
        Session {
            rng: Rng::new(config.seed.unwrap_or(0)),
            endpoints: Endpoints::new(config.endpoints, config.seed.unwrap_or(0)),
            ladder: Ladder::new(config.backoff.clone()),
            queue: Queue::new(config.queue_max_messages, config.queue_max_bytes),
            calls: Calls::new(config.max_calls),
            caps: protocol.capabilities(),
            limits: protocol.limits(&config),
            protocol: Box::new(protocol),
            out: Output::default(),
            server_max_message: None,
            timers: SessionTimers::default(),
            keepalive,
            phase: Phase::Idle,
            reported: State::Idle,
            closing: false,
            now: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            ever_connected: false,
            subscriptions: BTreeMap::new(),
            link: None,
            outage: Outage::default(),
            resume: Resume::default(),
            config,
        }
    }

    // ----- outputs -----------------------------------------------------

    /// The next action for the adapter.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next; `None`
    /// when nothing is pending (idle with no call waiting, or closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ----- read-only views -------------------------------------------

    /// The public state.
    pub fn state(&self) -> State {
        self.public_state()
    }

    /// Reconnect attempts in the current outage; 0 while connected.
    ///
    /// A connection lost before `stable_after` does not end the outage (flap
    /// damping): the next outage's count continues from where the last one
    /// stood. After a stable connection it starts again from 1.
    pub fn attempts(&self) -> u32 {
        if self.phase == Phase::Connected {
            0
        } else {
            self.outage.attempts
        }
    }

    /// The endpoint of the dial in flight or the open connection, else of
    /// the next dial (an index into the configured list).
    pub fn endpoint(&self) -> usize {
        self.endpoints.current()
    }

    /// Messages queued (not yet written, or written but not acked).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Messages written again on a new connection because an earlier one
    /// was lost before the server acknowledged them (protocols with
    /// acknowledged delivery; what the server reported it already had is
    /// skipped, not counted). A running total.
    pub fn replayed(&self) -> u64 {
        self.queue.replayed()
    }

    /// Payload bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// The server-side session, once the protocol's handshake reported one
    /// (a [`Wire`](crate::Wire) WELCOME).
    pub fn session_info(&self) -> Option<&SessionInfo> {
        self.resume.info()
    }

    /// The subscription keys (channels) this session wants.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Text> {
        self.subscriptions.keys()
    }

    /// The highest inbound offset delivered to the application.
    pub fn delivered_offset(&self) -> u64 {
        self.resume.delivered()
    }

    /// The refusals that do not depend on the session's state, for checking
    /// a message before handing it over.
    pub fn send_limits(&self) -> SendLimits {
        SendLimits::new(
            self.protocol.name(),
            self.caps,
            self.config.queue_max_bytes,
            self.limits,
            self.config.wire_limits,
        )
    }

    /// The protocol's name.
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- inputs: user intent -----------------------------------------

    /// Start connecting. Only meaningful in [`State::Idle`].
    pub fn handle_connect(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.phase != Phase::Idle {
            return;
        }
        self.outage.started = Some(now);
        self.timers
            .set(Timer::Stuck, deadline(now, self.config.stuck_after));
        self.start_attempt(now);
        self.sync_state();
    }

    /// Send an application message (for [`Wire`](crate::Wire): a PUBLISH
    /// with no channel). Returns its sequence number.
    ///
    /// Queued until a transport takes it; with [`Wire`](crate::Wire) kept
    /// until acknowledged and replayed after a reconnect. A full queue is an
    /// error, never a silent drop.
    pub fn handle_send(&mut self, now: Instant, payload: Payload) -> Result<u64, SendError> {
        self.enqueue(now, None, None, payload)
    }

    /// Publish to a channel ([`Wire`](crate::Wire) only).
    pub fn handle_publish(
        &mut self,
        now: Instant,
        channel: impl Into<Text>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.enqueue(now, Some(channel.into()), None, payload)
    }

    /// Publish to a channel with message headers ([`Nats`](crate::Nats):
    /// an HPUB). Queued like [`handle_publish`](Self::handle_publish); the
    /// headers count toward the queue's byte limit and the server's
    /// message size limit.
    ///
    /// # Errors
    /// [`SendError::Unsupported`] from a protocol without headers,
    /// [`SendError::Invalid`] for a name or value the protocol cannot
    /// encode, and what [`handle_publish`](Self::handle_publish) refuses.
    pub fn handle_publish_with_headers(
        &mut self,
        now: Instant,
        channel: impl Into<Text>,
        headers: Headers,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.enqueue(now, Some(channel.into()), Some(headers), payload)
    }

    /// Calls the server with `request` (for protocols with
    /// [`Capabilities::calls`]) and returns the call's id; exactly one
    /// [`Event::CallDone`] with that id says how it ended: the reply,
    /// [`CallError::Rejected`] with the server's code and message,
    /// [`CallError::Timeout`] after the options' timeout (default: the
    /// config's `call_timeout`, 30 s), [`CallError::ConnectionLost`], or
    /// [`CallError::Closed`].
    ///
    /// Sent at once while connected; otherwise it waits and is sent on the
    /// next connection, after the resubscriptions. A call in flight when the
    /// link drops fails with `ConnectionLost` and is never sent again,
    /// unless [`CallOptions::repeatable`]: then it is sent once more, on
    /// the next connection. Waiting and in-flight calls together are
    /// bounded by the config's `max_calls` (default 256).
    ///
    /// # Errors
    /// [`SendError::Unsupported`] from a protocol without calls,
    /// [`SendError::TooManyCalls`] at the bound, what the protocol's
    /// [`check_call`](Protocol::check_call) refuses,
    /// [`SendError::Closing`] and [`SendError::Closed`].
    pub fn handle_call(
        &mut self,
        now: Instant,
        request: Payload,
        options: CallOptions,
    ) -> Result<CallId, SendError> {
        let now = self.clock(now);
        self.check_open()?;
        if !self.caps.calls {
            return Err(self.unsupported("calls"));
        }
        self.protocol.check_call(&request)?;
        let timeout = options.timeout.unwrap_or(self.config.call_timeout);
        let id = self
            .calls
            .push(request, options.repeatable, deadline(now, timeout))?;
        if self.phase == Phase::Connected {
            self.send_calls();
        }
        self.arm_calls();
        Ok(id)
    }

    /// Calls waiting for a connection or in flight.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// Subscribe to a channel, for protocols whose subscriptions need
    /// nothing but a name ([`Wire`](crate::Wire)). The subscription is
    /// renewed after every reconnect the server did not keep it through.
    pub fn handle_subscribe(
        &mut self,
        now: Instant,
        channel: impl Into<Text>,
    ) -> Result<(), SendError> {
        self.handle_subscribe_with(now, channel, Payload::binary(bytes::Bytes::new()))
    }

    /// Subscribe under `key` with the protocol's `spec`: the message
    /// ([`Raw`](crate::Raw)), the query, the subject. Sent now when
    /// connected and again after every connect, before anything queued.
    /// Subscribing again under a key replaces its spec (sent at once when
    /// connected).
    pub fn handle_subscribe_with(
        &mut self,
        now: Instant,
        key: impl Into<Text>,
        spec: Payload,
    ) -> Result<(), SendError> {
        let key = self.subscription_input(now, key.into())?;
        if self.caps.subscription_spec && spec.is_empty() {
            return Err(self.unsupported("subscriptions without a spec"));
        }
        self.protocol.check_subscription(&key, &spec)?;
        let changed = self.subscriptions.get(&key) != Some(&spec);
        if changed {
            self.subscriptions.insert(key.clone(), spec.clone());
            if self.phase == Phase::Connected {
                self.protocol.subscribe(&key, &spec, &mut self.out);
                self.drain_frames();
                // A protocol whose subscriptions are local confirms at once.
                self.take_facts(now);
            }
        }
        Ok(())
    }

    /// Drop a subscription.
    pub fn handle_unsubscribe(
        &mut self,
        now: Instant,
        channel: impl Into<Text>,
    ) -> Result<(), SendError> {
        self.handle_unsubscribe_with(now, channel, None)
    }

    /// Drop subscription `key`; while connected the protocol ends it on
    /// the server, sending `message` with it if the protocol takes one
    /// ([`Raw`](crate::Raw) sends it as it is).
    pub fn handle_unsubscribe_with(
        &mut self,
        now: Instant,
        key: impl Into<Text>,
        message: Option<Payload>,
    ) -> Result<(), SendError> {
        let key = self.subscription_input(now, key.into())?;
        if let Some(spec) = self.subscriptions.remove(&key) {
            if self.phase == Phase::Connected {
                self.protocol
                    .unsubscribe(&key, &spec, message.as_ref(), &mut self.out);
                self.drain_frames();
            }
        }
        Ok(())
    }

    /// Close gracefully: take no new messages, wait (at most `close_linger`,
    /// reconnecting if need be) until everything queued is delivered, then
    /// close with 1000. Ends in [`Event::Closed`] with `closed_by_user`;
    /// calls still waiting or in flight then end with
    /// [`CallError::Closed`] (graceful close waits for messages, not for
    /// replies).
    pub fn handle_close(&mut self, now: Instant) {
        let now = self.clock(now);
        match self.phase {
            Phase::Closed => return,
            Phase::Idle => {
                self.finish(TerminalReason::ClosedByUser, None, "closed by user".into());
                return;
            }
            _ => {}
        }
        if self.closing {
            return;
        }
        self.closing = true;
        if self.queue.is_empty() {
            self.close_now();
        } else {
            self.timers
                .set(Timer::CloseLinger, deadline(now, self.config.close_linger));
            self.sync_state();
        }
    }

    /// Cut the client's own backoff short: while waiting, dial now. The
    /// attempt count stays.
    ///
    /// A wait the server imposed is not cut: after a 429/503 Retry-After, a
    /// GOING_AWAY or a close-code floor (4010) the dial moves to the end of
    /// the server's part of the wait (when that is still ahead) instead of
    /// happening now. Only the ladder's share beyond it is skipped.
    pub fn handle_retry_now(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.phase != Phase::Waiting {
            return;
        }
        match self.outage.server_until {
            Some(until) if until > now => {
                let due = self
                    .timers
                    .get(Timer::Backoff)
                    .map_or(until, |at| at.min(until));
                self.timers.set(Timer::Backoff, due);
            }
            _ => {
                self.timers.stop(Timer::Backoff);
                self.start_attempt(now);
            }
        }
        self.sync_state();
    }

    /// The network came back (or changed): while waiting, as
    /// [`handle_retry_now`](Self::handle_retry_now) (never earlier than a
    /// wait the server imposed); while connected, probe the transport with a
    /// ping, since the old path may be gone without a word.
    pub fn handle_network_online(&mut self, now: Instant) {
        let now = self.clock(now);
        match self.phase {
            Phase::Waiting => self.handle_retry_now(now),
            Phase::Connected => self.probe(now),
            _ => {}
        }
    }

    /// The machine woke from sleep: same as
    /// [`handle_network_online`](Self::handle_network_online).
    pub fn handle_wake(&mut self, now: Instant) {
        self.handle_network_online(now);
    }

    // ----- inputs: token provider --------------------------------------

    /// The token provider answered [`Action::FetchToken`].
    pub fn handle_token(&mut self, now: Instant, token: AuthToken) {
        self.clock(now);
        if self.phase != Phase::FetchingToken {
            return;
        }
        self.outage.token_failures = 0;
        self.dial(Some(token));
    }

    /// The token provider failed.
    pub fn handle_token_failed(&mut self, now: Instant, failure: TokenFailure) {
        let now = self.clock(now);
        if self.phase != Phase::FetchingToken {
            return;
        }
        self.timers.stop(Timer::ConnectTimeout);
        self.token_failed(now, failure);
        self.sync_state();
    }

    // ----- inputs: transport -------------------------------------------

    /// The WebSocket handshake of the dial in flight completed.
    pub fn handle_dial_ok(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.phase != Phase::Dialing {
            return;
        }
        // A token is good for its lifetime after the connection it came on
        // was lost (PROTOCOL.md 8.6); a lifetime of 0 never resumes.
        let last_offset = self.resume.delivered();
        let cx = OpenContext {
            now,
            token: self.link.as_ref().and_then(|l| l.token.as_ref()),
            resume: self.resume.token_at(now),
            last_offset,
            name: self.config.session_name.as_ref(),
            reconnect: self.ever_connected,
            limits: &self.config.wire_limits,
        };
        let handshake = self.protocol.on_open(&cx, &mut self.out);
        self.phase = Phase::Handshaking;
        self.drain_frames();
        match handshake {
            Handshake::Await { reply, timeout } => {
                if let Some(link) = &mut self.link {
                    link.awaiting = reply;
                }
                if let Some(t) = timeout {
                    self.timers.set(Timer::ConnectTimeout, deadline(now, t));
                }
            }
            _ => self.on_ready(now, Ready::new()),
        }
        self.sync_state();
    }

    /// The dial in flight failed.
    pub fn handle_dial_failed(&mut self, now: Instant, failure: DialFailure) {
        let now = self.clock(now);
        if self.phase != Phase::Dialing {
            return;
        }
        self.timers.stop(Timer::ConnectTimeout);
        self.dial_failed(now, failure);
        self.sync_state();
    }

    /// A frame arrived on the open transport.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        let now = self.clock(now);
        if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            return;
        }
        if let Some(k) = &mut self.keepalive {
            k.on_rx(now);
        }
        if self.protocol.answers_heartbeat(&frame) {
            self.timers.stop(Timer::PongDeadline);
        }
        if matches!(frame, Frame::Ping(_) | Frame::Pong(_)) {
            return;
        }
        // Set again below when this frame is itself a non-terminal ERROR.
        if let Some(link) = &mut self.link {
            link.error_before_close = false;
        }
        let cx = FrameContext {
            now,
            ready: self.phase == Phase::Connected,
            limits: &self.config.wire_limits,
        };
        let result = self.protocol.on_frame(frame, &cx, &mut self.out);
        self.drain_frames();
        match result {
            Ok(()) => self.take_facts(now),
            Err(e) => {
                self.out.clear_facts();
                self.protocol_error(now, e);
            }
        }
        self.sync_state();
    }

    /// The transport closed, with the server's close frame if one came.
    pub fn handle_transport_closed(&mut self, now: Instant, close: Option<CloseFrame>) {
        let now = self.clock(now);
        if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            return;
        }
        let (code, reason) = match close {
            Some(c) => (Some(c.code), c.reason),
            None => (None, "connection lost".to_owned()),
        };
        let protocol = &self.protocol;
        let mut rule = self
            .config
            .close_policy
            .rule_with(code, |c| protocol.close_rule(c));
        let after_error = self.link.as_ref().is_some_and(|l| l.error_before_close);
        if after_error && matches!(rule, CloseRule::Terminal(_)) {
            // The ERROR just before the close said reconnecting can help, and
            // receivers act on the flag, not the code (PROTOCOL.md 6). Step
            // the ladder: the server refused something, so coming back
            // sooner each time would be wrong.
            rule = CloseRule::StepLadder { honour_hint: true };
        }
        self.lost(now, code, reason, rule);
        self.sync_state();
    }

    /// An inbound message broke the transport's size `limit` of `max` bytes
    /// with `size` bytes; the adapter did not deliver it. The session asks to
    /// close with 1009 ([`Action::Close`]) and reports
    /// [`Event::MessageTooLarge`]; what follows is the close policy's 1009
    /// rule. The adapter reports nothing more about this transport.
    pub fn handle_message_too_large(
        &mut self,
        now: Instant,
        limit: SizeLimit,
        size: u64,
        max: u64,
    ) {
        let now = self.clock(now);
        if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            return;
        }
        self.events
            .push_back(Event::MessageTooLarge { limit, size, max });
        self.close_transport(1009, "message too big");
        let reason = format!(
            "inbound {} of {size} bytes over the {max}-byte limit",
            limit.name()
        );
        let protocol = &self.protocol;
        let rule = self
            .config
            .close_policy
            .rule_with(Some(1009), |c| protocol.close_rule(c));
        self.lost(now, Some(1009), reason, rule);
        self.sync_state();
    }

    /// Frames from [`Action::Send`] that were never written, each with the
    /// [`SendKind`] it came with: the adapter hands them back, oldest first,
    /// instead of dropping them. Returns how many went back to the queue as
    /// messages.
    ///
    /// Call it only about a transport that is gone or being closed: when it
    /// ends with frames not yet written (before
    /// [`handle_transport_closed`](Self::handle_transport_closed), so the
    /// session counts them when it decides what comes next), and when
    /// carrying out an [`Action::Close`] while the session is not closing
    /// (it reconnects: writing them to the transport it gave up on would
    /// lose them). Only frames never handed to the transport qualify, in the
    /// order they came. A frame written to a transport that then died stays
    /// at most once.
    ///
    /// Without acknowledged delivery ([`Raw`](crate::Raw),
    /// [`GraphqlWs`](crate::GraphqlWs), [`Nats`](crate::Nats)) application
    /// messages go back to the front of the queue, in order, and are written
    /// first, as they were encoded, on the next transport; control frames
    /// (pings, handshakes, resubscriptions) are dropped, since the next
    /// transport makes its own and writing one twice can break the next
    /// session (a graphql-ws id reused). With it ([`Wire`](crate::Wire))
    /// nothing is taken: every unacknowledged PUBLISH is still queued and is
    /// written again anyway, and HELLO, SUBSCRIBE and RECEIVED are rebuilt
    /// for the next transport. A closed session takes nothing.
    pub fn handle_unsent(
        &mut self,
        now: Instant,
        frames: impl IntoIterator<Item = (Frame, SendKind)>,
    ) -> usize {
        self.clock(now);
        if self.caps.acked_delivery || self.phase == Phase::Closed {
            return 0;
        }
        let messages: Vec<Payload> = frames
            .into_iter()
            .filter_map(|(frame, kind)| match (frame, kind) {
                (Frame::Text(t), SendKind::Message) => Some(Payload::text(t)),
                (Frame::Binary(b), SendKind::Message) => Some(Payload::binary(b)),
                _ => None,
            })
            .collect();
        let n = messages.len();
        // Not written now even while `Connected`: the adapter is reporting
        // on a transport that is gone; the next one writes them first.
        self.queue.requeue_front(messages.into_iter());
        n
    }

    /// Time passed: fire every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some(timer) = self.timers.pop_expired(now) {
            self.on_timer(now, timer);
        }
        self.sync_state();
    }

    // ----- internals ---------------------------------------------------

    fn clock(&mut self, now: Instant) -> Instant {
        let now = match self.now {
            Some(prev) if prev > now => prev,
            _ => now,
        };
        self.now = Some(now);
        now
    }

    fn public_state(&self) -> State {
        match self.phase {
            Phase::Idle => State::Idle,
            Phase::Closed => State::Closed,
            _ if self.closing => State::Closing,
            Phase::Connected => State::Connected,
            _ if self.ever_connected || self.outage.attempts > 0 => State::Reconnecting,
            _ => State::Connecting,
        }
    }

    fn sync_state(&mut self) {
        let to = self.public_state();
        if to != self.reported {
            let from = std::mem::replace(&mut self.reported, to);
            self.events.push_back(Event::StateChanged { from, to });
        }
    }

    fn unsupported(&self, what: &'static str) -> SendError {
        SendError::Unsupported {
            protocol: self.protocol.name(),
            what,
        }
    }

    fn check_open(&self) -> Result<(), SendError> {
        match (self.phase, self.closing) {
            (Phase::Closed, _) => Err(SendError::Closed),
            (_, true) => Err(SendError::Closing),
            _ => Ok(()),
        }
    }
}
