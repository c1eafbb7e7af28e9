//! The session: one long-lived connection's whole life, as a state machine.

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
use crate::secret::{AuthToken, ResumeToken};
use crate::timer::{deadline, SessionTimers, Timer};
use crate::transport::{CloseFrame, DialFailure, Frame, SizeLimit};

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

/// How soon to come back after a failure.
///
/// The ladder steps on every failure whatever the kind. The first wait a
/// server gives in an outage (a deploy's GOING_AWAY window, an admission
/// limiter's Retry-After booking) is taken as it is: that is what spreads a
/// fleet, and an honest limiter's slot is only worth something if the client
/// keeps it. Every later server wait in the same outage is weighed against
/// the ladder: it may lengthen the attempt but never take it below the
/// rung's lower bound (for full jitter, whose rungs reach down to 0, below
/// the rung's draw), so no sequence of server answers makes a tight loop: at
/// most one attempt per outage comes at the server's word alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delay {
    Ladder,
    /// A wait the server asked for (Retry-After, GOING_AWAY), capped and
    /// jittered already.
    Server(Duration),
    /// A close-policy floor: the ladder's draw, but no sooner than this
    /// (capped by `max_server_delay`, jittered up to +10 %).
    Floor(Duration),
    /// At once (the ladder still steps): the one fresh-token retry per
    /// outage after a 401 or 4002.
    Now,
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
    /// The handshake reply awaited, for the reason given when it is late.
    awaiting: &'static str,
    /// The token of the dial in flight or the open transport.
    token: Option<AuthToken>,
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

    /// Reconnect attempts in the current outage. Kept while connected: a
    /// connection lost before `stable_after` continues the count.
    attempts: u32,
    ever_connected: bool,
    outage_started: Option<Instant>,
    /// When the current connection was established.
    connected_at: Option<Instant>,
    /// A server's wait was already taken as given in this outage (reset
    /// when a stable connection ends it).
    server_wait_taken: bool,
    /// The end of the part of the pending wait the server imposed (its
    /// Retry-After, GOING_AWAY or a close-code floor), which the client's own
    /// shortcuts (`retry_now`, network online, wake) must not cut.
    server_until: Option<Instant>,
    /// The last frame on this transport was a non-terminal ERROR, so a close
    /// that follows it is not terminal whatever its code (PROTOCOL.md 6).
    error_before_close: bool,
    fresh_token_retry_used: bool,
    refresh_retry_used: bool,
    token_failures: u32,
    /// Delay drawn from the last GOING_AWAY, for the next reconnect.
    hint: Option<Duration>,

    /// The latest resume token and its lifetime, counted from `lost_at`.
    resume: Option<(ResumeToken, Duration)>,
    /// When the last established session's connection was lost (cleared
    /// while connected; a handshake that fails before WELCOME leaves it).
    lost_at: Option<Instant>,
    info: Option<SessionInfo>,
    /// Subscription key → spec (what the protocol needs to renew it).
    subscriptions: BTreeMap<Text, Payload>,
    /// Highest inbound offset delivered to the application.
    delivered: u64,
    /// Highest inbound offset reported to the server.
    reported_offset: u64,
    unreported: u32,
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
            awaiting: "handshake reply",
            token: None,
            server_max_message: None,
            timers: SessionTimers::default(),
            keepalive,
            phase: Phase::Idle,
            reported: State::Idle,
            closing: false,
            now: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            attempts: 0,
            ever_connected: false,
            outage_started: None,
            connected_at: None,
            server_wait_taken: false,
            server_until: None,
            error_before_close: false,
            fresh_token_retry_used: false,
            refresh_retry_used: false,
            token_failures: 0,
            hint: None,
            resume: None,
            lost_at: None,
            info: None,
            subscriptions: BTreeMap::new(),
            delivered: 0,
            reported_offset: 0,
            unreported: 0,
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
            self.attempts
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
        self.info.as_ref()
    }

    /// The subscription keys (channels) this session wants.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Text> {
        self.subscriptions.keys()
    }

    /// The highest inbound offset delivered to the application.
    pub fn delivered_offset(&self) -> u64 {
        self.delivered
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
        self.outage_started = Some(now);
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
        match self.server_until {
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
        self.token_failures = 0;
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
        let valid = match (&self.resume, self.lost_at) {
            (Some((_, life)), Some(lost)) => {
                !life.is_zero() && now.saturating_duration_since(lost) < *life
            }
            (Some((_, life)), None) => !life.is_zero(),
            _ => false,
        };
        if !valid {
            self.resume = None;
        }
        let cx = OpenContext {
            now,
            token: self.token.as_ref(),
            resume: self.resume.as_ref().map(|(t, _)| t),
            last_offset: self.delivered,
            name: self.config.session_name.as_ref(),
            reconnect: self.ever_connected,
            limits: &self.config.wire_limits,
        };
        let handshake = self.protocol.on_open(&cx, &mut self.out);
        self.phase = Phase::Handshaking;
        self.drain_frames();
        match handshake {
            Handshake::Await { reply, timeout } => {
                self.awaiting = reply;
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
        self.error_before_close = false;
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

    /// Acts on the facts the protocol reported, in order.
    fn take_facts(&mut self, now: Instant) {
        if let Some(data) = self.out.take_lone_data() {
            // The usual message: one data fact, nothing else.
            self.on_data(now, data);
        }
        while let Some(fact) = self.out.pop_fact() {
            if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
                // An earlier fact ended the transport: the rest of what it
                // carried is moot.
                self.out.clear_facts();
                break;
            }
            self.on_fact(now, fact);
        }
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
        if std::mem::take(&mut self.error_before_close) && matches!(rule, CloseRule::Terminal(_)) {
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
            _ if self.ever_connected || self.attempts > 0 => State::Reconnecting,
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

    /// Checks a subscribe or unsubscribe before it touches the set.
    fn subscription_input(&mut self, now: Instant, channel: Text) -> Result<Text, SendError> {
        self.clock(now);
        self.check_open()?;
        if !self.caps.subscriptions {
            return Err(self.unsupported("subscriptions"));
        }
        self.limits.check_key(&channel)?;
        Ok(channel)
    }

    fn enqueue(
        &mut self,
        now: Instant,
        channel: Option<Text>,
        headers: Option<Headers>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.clock(now);
        let header_len = match &headers {
            Some(h) => self.protocol.check_headers(h)?,
            None => 0,
        };
        self.send_limits().check(channel.as_ref(), &payload)?;
        self.protocol.check_publish(channel.as_ref(), &payload)?;
        if let Some(max) = self.server_max_message {
            let len = payload.len() + header_len;
            if len > max {
                return Err(SendError::TooLarge { len, max });
            }
        }
        self.check_open()?;
        let seq = self.queue.push(channel, payload, headers)?;
        if self.phase == Phase::Connected {
            self.flush_queue();
        }
        Ok(seq)
    }

    /// Writes every queued message the current transport has not had.
    fn flush_queue(&mut self) {
        let Session {
            queue,
            protocol,
            out,
            caps,
            ..
        } = self;
        let caps_acked = caps.acked_delivery;
        if caps_acked {
            // Kept until acknowledged, and written again after a reconnect.
            while let Some(e) = queue.next_unsent() {
                protocol.publish(
                    Outgoing {
                        seq: e.seq,
                        channel: e.channel.as_ref(),
                        payload: &e.payload,
                        headers: e.headers.as_ref(),
                    },
                    out,
                );
            }
        }
        self.drain_frames();
        if caps_acked {
            return;
        }
        while let Some(e) = self.queue.pop_unsent() {
            if e.encoded {
                // Handed back unwritten by the last transport: as it was.
                self.hand_over(encoded_frame(&e.payload), SendKind::Message);
                continue;
            }
            self.protocol.publish(
                Outgoing {
                    seq: e.seq,
                    channel: e.channel.as_ref(),
                    payload: &e.payload,
                    headers: e.headers.as_ref(),
                },
                &mut self.out,
            );
            while let Some(f) = self.out.pop_frame() {
                self.hand_over(f, SendKind::Message);
            }
        }
        self.take_wake();
    }

    /// Turns the frames the protocol wrote into send actions, in order,
    /// and takes its timer request.
    fn drain_frames(&mut self) {
        while let Some(f) = self.out.pop_frame() {
            self.hand_over(f, SendKind::Control);
        }
        self.take_wake();
    }

    /// Puts the protocol's timer request in the table, while a transport is
    /// open; never less than 1 ms ahead, so no request can make
    /// `handle_timeout` fire it again and again at one instant.
    fn take_wake(&mut self) {
        let Some(request) = self.out.take_wake() else {
            return;
        };
        match request {
            Some(at) if matches!(self.phase, Phase::Handshaking | Phase::Connected) => {
                let now = self.now.unwrap_or(at);
                let soonest = deadline(now, Duration::from_millis(1));
                self.timers.set(Timer::Protocol, at.max(soonest));
            }
            _ => self.timers.stop(Timer::Protocol),
        }
    }

    /// One [`Action::Send`], marked for [`handle_unsent`](Self::handle_unsent).
    fn hand_over(&mut self, frame: Frame, kind: SendKind) {
        self.actions.push_back(Action::Send(frame, kind));
    }

    fn start_attempt(&mut self, now: Instant) {
        self.server_until = None;
        self.timers.set(
            Timer::ConnectTimeout,
            deadline(now, self.config.connect_timeout),
        );
        if self.config.token_provider {
            self.phase = Phase::FetchingToken;
            self.actions.push_back(Action::FetchToken);
        } else {
            self.dial(None);
        }
    }

    fn dial(&mut self, token: Option<AuthToken>) {
        self.phase = Phase::Dialing;
        self.token.clone_from(&token);
        self.actions.push_back(Action::Dial {
            attempt: self.attempts,
            endpoint: self.endpoints.current(),
            token,
        });
    }

    fn on_connected(
        &mut self,
        now: Instant,
        resumed: bool,
        session: Option<SessionInfo>,
        heartbeat: Option<Duration>,
    ) {
        self.phase = Phase::Connected;
        for t in [Timer::ConnectTimeout, Timer::Backoff, Timer::Stuck] {
            self.timers.stop(t);
        }
        let reconnect = self.ever_connected;
        self.ever_connected = true;
        self.outage_started = None;
        self.lost_at = None;
        self.connected_at = Some(now);
        self.error_before_close = false;
        self.hint = None;
        if let Some(k) = &mut self.keepalive {
            let first = k.start(now, &mut self.rng, heartbeat);
            self.timers.set(Timer::Ping, first);
        }
        // State first, so that a consumer reacting to `Connected` reads
        // `State::Connected`.
        self.sync_state();
        self.events.push_back(Event::Connected {
            reconnect,
            resumed,
            session,
            endpoint: self.endpoints.current(),
        });
        // After the resubscriptions (sent with the handshake's reply).
        self.send_calls();
        self.flush_queue();
        if self.closing && self.queue.is_empty() {
            self.close_now();
        }
    }

    /// Application data the protocol found in a message.
    fn on_data(&mut self, now: Instant, data: Data) {
        if self.phase == Phase::Handshaking {
            return self.protocol_error(now, ProtocolError::DataBeforeReady);
        }
        match data.offset {
            Some(offset) => self.on_message(now, offset, data.key, data.payload, data.headers),
            None => self.events.push_back(Event::Message {
                channel: data.key,
                offset: None,
                payload: data.payload,
                headers: data.headers,
            }),
        }
    }

    /// One fact the protocol found in a message.
    fn on_fact(&mut self, now: Instant, fact: Inbound) {
        let handshaking = self.phase == Phase::Handshaking;
        match fact {
            Inbound::Ready(ready) if handshaking => self.on_ready(now, ready),
            Inbound::Ready(_) => self.protocol_error(
                now,
                ProtocolError::invalid(self.protocol.name(), "handshake reply while connected"),
            ),
            Inbound::GoingAway {
                retry_after,
                window,
                leave,
            } => {
                let cap = self.config.max_server_delay;
                let retry_after = retry_after.min(cap);
                let window = window.min(cap);
                let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                let spread = Duration::from_millis(self.rng.below_inclusive(window_ms));
                self.hint = Some(retry_after.saturating_add(spread).min(cap));
                self.events.push_back(Event::GoingAway {
                    retry_after,
                    window,
                });
                if leave {
                    // The server closes everyone soon; leaving now and
                    // coming back after the spread hint keeps a fleet from
                    // returning in one wave.
                    self.close_transport(1001, "server going away");
                    let rule = CloseRule::Reconnect { honour_hint: true };
                    self.lost(now, None, "server going away".into(), rule);
                }
            }
            Inbound::Failed { code, reason, rule } => {
                self.close_transport(1000, "server error");
                // The close code of what follows: the server's code when it
                // is one (Wire's are u16), else none, and the code typed
                // on an event of its own.
                let signed = code;
                let code = u16::try_from(code).ok().filter(|c| *c != 0);
                if code.is_none() && signed != 0 {
                    self.events.push_back(Event::ServerFailed {
                        code: signed,
                        reason: reason.clone(),
                    });
                }
                match rule {
                    CloseRule::Terminal(why) => self.finish(why, code, reason.to_string()),
                    rule => self.lost(now, code, reason.to_string(), rule),
                }
            }
            Inbound::ServerError { code, reason } => {
                self.error_before_close = true;
                self.events.push_back(Event::ServerError { code, reason });
            }
            Inbound::Data {
                key,
                offset,
                payload,
                headers,
            } => self.on_data(
                now,
                Data {
                    key,
                    offset,
                    payload,
                    headers,
                },
            ),
            _ if handshaking => self.protocol_error(now, ProtocolError::DataBeforeReady),
            Inbound::Acked { seq } => self.on_ack(now, seq),
            Inbound::Replied { call, result } => self.call_done(call, Ok(result)),
            Inbound::CallRejected {
                call,
                code,
                message,
            } => self.call_done(call, Err(CallError::Rejected { code, message })),
            Inbound::Subscribed { key, server_id } => self.events.push_back(Event::Subscribed {
                channel: key,
                server_id,
            }),
            Inbound::Resubscribed { key } => {
                self.events.push_back(Event::Resubscribed { channel: key })
            }
            Inbound::SubscribeFailed { key, code, reason } => {
                self.subscriptions.remove(&key);
                self.events.push_back(Event::SubscribeFailed {
                    channel: key,
                    code,
                    reason,
                });
            }
            Inbound::SubscriptionEnded { key } => {
                if self.subscriptions.remove(&key).is_some() {
                    self.events
                        .push_back(Event::SubscriptionEnded { channel: key });
                }
            }
        }
    }

    /// The handshake completed (at once, for protocols without one).
    fn on_ready(&mut self, now: Instant, ready: Ready) {
        let Ready {
            session,
            resumed,
            resume,
            last_client_seq,
            kept,
            heartbeat,
            max_message,
        } = ready;
        self.server_max_message = max_message;
        if !resumed {
            // Whether the server refused the token or we no longer presented
            // it (expired on our clock), the old session and its name are gone.
            if let Some(previous) = self.info.take() {
                self.events.push_back(Event::ResumeRejected { previous });
            }
            // A fresh session numbers its messages from 1 again.
            self.delivered = 0;
            self.reported_offset = 0;
            self.unreported = 0;
        }
        self.resume = resume;
        self.info.clone_from(&session);
        self.queue.rewind();
        if last_client_seq > 0 {
            let highest = self.queue.last_seq();
            let seq = last_client_seq.min(highest);
            if self.queue.ack_through(seq) > 0 {
                self.events.push_back(Event::Acked { seq });
            }
        }
        let kept: BTreeSet<Text> = kept.into_iter().collect();
        let mut confirmed = Vec::new();
        {
            let Session {
                subscriptions,
                protocol,
                out,
                ..
            } = self;
            for (key, spec) in subscriptions.iter() {
                if kept.contains(key) {
                    confirmed.push(key.clone());
                } else {
                    protocol.subscribe(key, spec, out);
                }
            }
            // Kept subscriptions the user dropped while disconnected
            // (PROTOCOL.md 8.3).
            let empty = Payload::binary(bytes::Bytes::new());
            for key in kept.iter().filter(|k| !subscriptions.contains_key(*k)) {
                protocol.unsubscribe(key, &empty, None, out);
            }
        }
        self.drain_frames();
        self.on_connected(now, resumed, session, heartbeat);
        // After `Connected`, so that events about the session follow the
        // event that introduces it (unless it closed at once).
        if self.phase == Phase::Connected {
            for channel in confirmed {
                self.events.push_back(Event::Subscribed {
                    channel,
                    server_id: None,
                });
            }
        }
    }

    fn on_ack(&mut self, now: Instant, seq: u64) {
        let highest = self.queue.last_seq();
        if seq > highest {
            return self.protocol_error(now, ProtocolError::AckBeyondSent { seq, highest });
        }
        if self.queue.ack_through(seq) > 0 {
            self.events.push_back(Event::Acked { seq });
        }
        if self.closing && self.queue.is_empty() {
            self.close_now();
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        offset: u64,
        channel: Option<Text>,
        payload: Payload,
        headers: Option<Headers>,
    ) {
        if offset <= self.delivered {
            // A replay of something the application already has.
            return;
        }
        if offset > self.delivered + 1 {
            self.events.push_back(Event::Gap {
                from: self.delivered + 1,
                to: offset - 1,
            });
        }
        self.delivered = offset;
        self.events.push_back(Event::Message {
            channel,
            offset: Some(offset),
            payload,
            headers,
        });
        self.unreported += 1;
        if self.unreported >= self.config.ack_every {
            self.report_offset();
        } else if !self.timers.is_set(Timer::InboundAck) {
            self.timers
                .set(Timer::InboundAck, deadline(now, self.config.ack_delay));
        }
    }

    fn report_offset(&mut self) {
        self.timers.stop(Timer::InboundAck);
        self.unreported = 0;
        if self.delivered > self.reported_offset && self.phase == Phase::Connected {
            self.reported_offset = self.delivered;
            self.protocol.report_offset(self.delivered, &mut self.out);
            self.drain_frames();
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::ConnectTimeout => match self.phase {
                Phase::FetchingToken => {
                    self.token_failed(now, TokenFailure::transient("token provider timed out"))
                }
                Phase::Dialing => {
                    self.close_transport(1000, "connect timeout");
                    self.dial_failed(now, DialFailure::Timeout);
                }
                Phase::Handshaking => {
                    let why = format!("no {} in time", self.awaiting);
                    self.close_transport(1002, &why);
                    let rule = CloseRule::Reconnect { honour_hint: true };
                    self.lost(now, None, why, rule);
                }
                _ => {}
            },
            Timer::Backoff => {
                if self.phase == Phase::Waiting {
                    self.start_attempt(now);
                }
            }
            Timer::Ping => {
                if self.phase != Phase::Connected {
                    return;
                }
                let Some(k) = &mut self.keepalive else { return };
                match k.on_ping_timer(now) {
                    PingDue::NotYet { next } => self.timers.set(Timer::Ping, next),
                    PingDue::Send {
                        payload,
                        deadline,
                        next,
                    } => {
                        self.send_heartbeat(payload);
                        if !self.timers.is_set(Timer::PongDeadline) {
                            self.timers.set(Timer::PongDeadline, deadline);
                        }
                        self.timers.set(Timer::Ping, next);
                    }
                }
            }
            Timer::PongDeadline => {
                if self.phase == Phase::Connected {
                    self.close_transport(1001, "pong timeout");
                    let rule = CloseRule::Reconnect { honour_hint: true };
                    self.lost(now, None, "pong timeout".into(), rule);
                }
            }
            Timer::Stuck => {
                if let Some(since) = self.outage_started {
                    self.events.push_back(Event::Stuck {
                        for_: now.saturating_duration_since(since),
                        attempts: self.attempts,
                    });
                }
            }
            Timer::CloseLinger => {
                if self.closing {
                    self.close_now();
                }
            }
            Timer::InboundAck => self.report_offset(),
            Timer::Protocol => self.protocol_timer(now),
            Timer::Call => {
                for (id, in_flight) in self.calls.expire(now) {
                    if in_flight {
                        self.protocol.forget_call(id);
                    }
                    self.events.push_back(Event::CallDone {
                        id,
                        result: Err(CallError::Timeout),
                    });
                }
                self.arm_calls();
            }
        }
    }

    /// Sends every call the current transport has not had, in id order.
    fn send_calls(&mut self) {
        for (id, request) in self.calls.take_unsent() {
            self.protocol.call(id, &request, &mut self.out);
        }
        self.drain_frames();
    }

    /// The call timer at the earliest call deadline.
    fn arm_calls(&mut self) {
        match self.calls.next_deadline() {
            Some(at) => self.timers.set(Timer::Call, at),
            None => self.timers.stop(Timer::Call),
        }
    }

    /// Call `id` ended with `result`, if the session still keeps it.
    fn call_done(&mut self, id: CallId, result: Result<Payload, CallError>) {
        if self.calls.finish(id).is_some() {
            self.events.push_back(Event::CallDone { id, result });
            self.arm_calls();
        }
    }

    /// The protocol's own deadline came.
    fn protocol_timer(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            return;
        }
        let cx = TimerContext {
            now,
            ready: self.phase == Phase::Connected,
        };
        let result = self.protocol.on_timer(&cx, &mut self.out);
        self.drain_frames();
        match result {
            Ok(()) => self.take_facts(now),
            Err(dead) => {
                self.out.clear_facts();
                self.close_transport(1001, &dead.reason);
                self.lost(now, None, dead.reason, dead.rule);
            }
        }
    }

    fn probe(&mut self, now: Instant) {
        let Some(k) = &mut self.keepalive else { return };
        let (payload, deadline) = k.probe(now);
        self.send_heartbeat(payload);
        if !self.timers.is_set(Timer::PongDeadline) {
            self.timers.set(Timer::PongDeadline, deadline);
        }
    }

    /// The protocol's own heartbeat when it has one, else a WebSocket ping
    /// with `payload`. The protocol says which inbound messages answer it.
    fn send_heartbeat(&mut self, payload: bytes::Bytes) {
        if !self.protocol.heartbeat(&mut self.out) {
            self.out.send(Frame::Ping(payload));
        }
        self.drain_frames();
    }

    fn token_failed(&mut self, now: Instant, failure: TokenFailure) {
        if failure.unauthorized {
            return self.finish(TerminalReason::Unauthorized, None, failure.message);
        }
        self.token_failures = self.token_failures.saturating_add(1);
        self.events.push_back(Event::DialFailed {
            attempt: self.attempts,
            endpoint: self.endpoints.current(),
            status: None,
            reason: format!("token provider: {}", failure.message),
        });
        if self.token_failures >= self.config.token_failure_threshold {
            self.events.push_back(Event::TokenProviderFailing {
                consecutive: self.token_failures,
                message: failure.message,
            });
        }
        self.retry(now, Delay::Ladder);
    }

    fn dial_failed(&mut self, now: Instant, failure: DialFailure) {
        let status = match failure {
            DialFailure::Http { status, .. } => Some(status),
            _ => None,
        };
        self.events.push_back(Event::DialFailed {
            attempt: self.attempts,
            endpoint: self.endpoints.current(),
            status,
            reason: failure.describe(),
        });
        // The endpoint failed this dial; the token provider's failures above
        // say nothing about it.
        self.endpoints.rotate();
        let rule = match failure {
            DialFailure::Http {
                status,
                retry_after,
            } => handshake_rule(
                status,
                retry_after,
                self.config.token_provider,
                self.fresh_token_retry_used,
            ),
            DialFailure::Certificate(_) => self.config.close_policy.certificate_decision(),
            _ => HandshakeRule::Ladder,
        };
        match rule {
            HandshakeRule::RetryWithFreshToken => {
                self.fresh_token_retry_used = true;
                self.retry(now, Delay::Now);
            }
            HandshakeRule::RetryAfter(d) => {
                let d = d.min(self.config.max_server_delay);
                let extra = self.jitter_tenth(d);
                self.retry(now, Delay::Server(d.saturating_add(extra)));
            }
            HandshakeRule::Ladder => self.retry(now, Delay::Ladder),
            HandshakeRule::Terminal(why) => self.finish(why, status, failure.describe()),
        }
    }

    /// Up to 10 % of `d`, so a fleet told the same thing does not return
    /// in lockstep.
    fn jitter_tenth(&mut self, d: Duration) -> Duration {
        let tenth = u64::try_from(d.as_nanos() / 10).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.below_inclusive(tenth))
    }

    /// The open transport is gone (closed by the server, or by us after
    /// deciding it is dead). `rule` says what happens next.
    fn lost(&mut self, now: Instant, code: Option<u16>, reason: String, rule: CloseRule) {
        for t in [
            Timer::Ping,
            Timer::PongDeadline,
            Timer::InboundAck,
            Timer::ConnectTimeout,
            Timer::Protocol,
        ] {
            self.timers.stop(t);
        }
        self.unreported = 0;
        self.error_before_close = false;
        self.protocol.on_closed();
        // A request made on the transport that is gone is moot.
        let _ = self.out.take_wake();
        let established = self.phase == Phase::Connected;
        if established {
            // Only the loss of an established session starts the resume
            // token's lifetime (PROTOCOL.md 8.6); a handshake that fails
            // before WELCOME must not extend it.
            self.lost_at = Some(now);
        }
        // Judged by uptime at the moment of the loss, not by whether a timer
        // fired first: after a suspend the driver hands over the close and
        // the overdue timers at the same instant.
        let was_stable = established
            && self
                .connected_at
                .is_some_and(|at| now.saturating_duration_since(at) >= self.config.stable_after);
        self.connected_at = None;
        let will_reconnect = match &rule {
            CloseRule::Terminal(_) => false,
            CloseRule::RefreshToken => self.config.token_provider,
            _ => !(self.closing && self.queue.is_empty()),
        };
        self.events.push_back(Event::Disconnected {
            code,
            reason: reason.clone(),
            will_reconnect,
        });
        for (id, result) in self.calls.on_lost() {
            self.events.push_back(Event::CallDone { id, result });
        }
        self.arm_calls();
        if !will_reconnect {
            let why = match rule {
                CloseRule::Terminal(why) => why,
                CloseRule::RefreshToken if !self.config.token_provider => {
                    TerminalReason::TokenExpired
                }
                _ => TerminalReason::ClosedByUser,
            };
            return self.finish(why, code, reason);
        }
        if was_stable {
            self.attempts = 0;
            self.server_wait_taken = false;
            self.fresh_token_retry_used = false;
            self.refresh_retry_used = false;
            if !matches!(rule, CloseRule::StepLadder { .. }) {
                self.ladder.reset();
            }
        }
        if self.outage_started.is_none() {
            self.outage_started = Some(now);
            self.timers
                .set(Timer::Stuck, deadline(now, self.config.stuck_after));
        }
        let hint = self.hint.take();
        // Stay on an endpoint that held; leave one whose connection did not
        // last or whose server said it is going away.
        if !was_stable || hint.is_some() {
            self.endpoints.rotate();
        }
        let delay = match rule {
            CloseRule::Reconnect { honour_hint } | CloseRule::StepLadder { honour_hint } => {
                match hint {
                    Some(d) if honour_hint => Delay::Server(d),
                    _ => Delay::Ladder,
                }
            }
            CloseRule::RefreshToken if !self.refresh_retry_used => {
                self.refresh_retry_used = true;
                Delay::Now
            }
            CloseRule::RefreshToken => Delay::Ladder,
            CloseRule::Floor(f) => Delay::Floor(f),
            CloseRule::Terminal(_) => Delay::Ladder,
        };
        self.retry(now, delay);
    }

    /// Schedules the next attempt, or ends the session when the attempts are
    /// used up.
    fn retry(&mut self, now: Instant, delay: Delay) {
        let max = self.config.max_attempts;
        if max != 0 && self.attempts >= max {
            return self.finish(
                TerminalReason::AttemptsExhausted,
                None,
                format!("{max} reconnect attempts failed"),
            );
        }
        self.attempts += 1;
        // The ladder steps on every failure, whatever sets this delay, so a
        // server that keeps sending hints still sees the windows grow.
        let draw = self.ladder.next_delay(&mut self.rng);
        // (the delay, the part of it the server imposed)
        let (delay, imposed) = match delay {
            Delay::Ladder => (draw, Duration::ZERO),
            Delay::Server(d) if !self.server_wait_taken => {
                self.server_wait_taken = true;
                (d, d)
            }
            Delay::Server(d) => {
                let least = match self.ladder.lower_bound() {
                    // Full jitter's rungs reach down to 0: its draw is what
                    // stands between a server answering 0 and a tight loop.
                    zero if zero.is_zero() => draw,
                    lower => lower,
                };
                (d.max(least), d)
            }
            Delay::Floor(f) => {
                // A user's floor obeys the same cap as a server's wait.
                let f = f.min(self.config.max_server_delay);
                let floor = f.saturating_add(self.jitter_tenth(f));
                (draw.max(floor), floor)
            }
            Delay::Now => (Duration::ZERO, Duration::ZERO),
        };
        self.server_until = (!imposed.is_zero()).then(|| deadline(now, imposed));
        self.phase = Phase::Waiting;
        self.timers.set(Timer::Backoff, deadline(now, delay));
        self.events.push_back(Event::ReconnectScheduled {
            attempt: self.attempts,
            delay,
        });
    }

    fn protocol_error(&mut self, now: Instant, error: ProtocolError) {
        let reason = error.to_string();
        self.events.push_back(Event::ProtocolError { error });
        if matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            // Tell the server why before the close (PROTOCOL.md 3.3), when
            // the protocol has a way to.
            let why = crate::utf8::prefix(&reason, self.config.wire_limits.max_reason_len);
            self.protocol.report_error(why, &mut self.out);
            self.drain_frames();
        }
        let code = self.protocol.protocol_error_close();
        self.close_transport(code, "protocol error");
        self.lost(
            now,
            None,
            reason,
            CloseRule::Reconnect { honour_hint: false },
        );
    }

    /// Asks the adapter to close the transport (or abandon the dial).
    fn close_transport(&mut self, code: u16, reason: &str) {
        if matches!(
            self.phase,
            Phase::Dialing | Phase::Handshaking | Phase::Connected
        ) {
            self.actions
                .push_back(Action::Close(CloseFrame::new(code, reason)));
        }
    }

    fn close_now(&mut self) {
        self.report_offset();
        self.close_transport(1000, "closed by user");
        let detail = if self.queue.is_empty() {
            "closed by user".to_owned()
        } else {
            format!(
                "closed by user with {} messages undelivered",
                self.queue.len()
            )
        };
        self.finish(TerminalReason::ClosedByUser, None, detail);
    }

    /// Ends the session. Nothing happens after this.
    fn finish(&mut self, reason: TerminalReason, code: Option<u16>, detail: String) {
        self.phase = Phase::Closed;
        self.closing = false;
        self.timers.stop_all();
        self.sync_state();
        for id in self.calls.drain() {
            self.events.push_back(Event::CallDone {
                id,
                result: Err(CallError::Closed),
            });
        }
        self.events.push_back(Event::Closed {
            reason,
            code,
            detail,
            undelivered: self.queue.len(),
        });
    }
}

/// A message handed back by [`Session::handle_unsent`], as it was written.
fn encoded_frame(payload: &Payload) -> Frame {
    match payload.text_value() {
        Some(text) => Frame::Text(text),
        None => Frame::Binary(payload.bytes().clone()),
    }
}
