//! Harness entry points for the cargo-fuzz targets in `fuzz/` (and the
//! property tests): each drives the real code and panics on any broken
//! invariant.
//!
//! Compiled with the `fuzzing` feature or under `cfg(fuzzing)`. The entry
//! points take the base `Instant` from the caller because redial-core never
//! reads a clock, not even here.

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;

use crate::backoff::{Backoff, Ladder};
use crate::rng::Rng;
use crate::wire::{self, Limits};
use crate::{
    Action, AuthToken, CloseFrame, Config, DialFailure, Event, Frame, Payload, Raw, Session, State,
    Text, TokenFailure, Wire,
};

/// Decodes `data` as a Wire frame: never panics, and whatever decodes
/// re-encodes to exactly `data`.
pub fn decode_frame(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let limits = Limits {
        max_frame_len: 64 * 1024,
        ..Limits::default()
    };
    if let Ok(frame) = wire::decode(input.clone(), &limits) {
        let again = frame.to_bytes();
        assert_eq!(again, input, "re-encoding {frame:?} changed the bytes");
        assert_eq!(frame.encoded_len(), again.len());
    }
}

/// A connected session (Raw and Wire) whose transport closes with `code`
/// and `reason`: the outcome follows the close policy and every invariant
/// holds.
pub fn close_frame(base: Instant, code: u16, reason: &[u8]) {
    let reason = String::from_utf8_lossy(reason).into_owned();
    for wire in [false, true] {
        let mut h = Harness::new(base, 1, wire, false, Some(5), Backoff::default());
        h.step(&Step::Connect);
        h.step(&Step::DialOk);
        if wire {
            h.step(&Step::Welcome {
                resumed: false,
                last_client_seq: 0,
                lifetime_ms: 1000,
            });
        }
        h.step(&Step::Send(3));
        h.step(&Step::TransportClosed(Some(code), reason.clone()));
        let rule = h.session.config().close_policy().rule_for(Some(code));
        let terminal = matches!(rule, crate::CloseRule::Terminal(_)) || (code == 4002);
        assert_eq!(
            h.session.state() == State::Closed,
            terminal,
            "code {code} rule {rule:?}"
        );
        for _ in 0..8 {
            h.step(&Step::AdvanceToTimeout);
        }
    }
}

/// Which backoff policy a scenario uses.
#[derive(Arbitrary, Debug, Clone)]
pub enum PolicyChoice {
    /// The default ([`Backoff::default`]).
    Default,
    /// Full jitter with small values (milliseconds).
    FullJitter(u16, u16),
    /// Proportional (initial ms, multiplier tenths, jitter percent, max ms).
    Proportional(u16, u8, u8, u16),
    /// Decorrelated (base ms, cap ms).
    Decorrelated(u16, u16),
    /// Staged (first window ms, initial ms, multiplier tenths, jitter
    /// percent, max ms).
    Staged(u16, u16, u8, u8, u16),
}

impl PolicyChoice {
    /// The policy, when the numbers make a valid one.
    pub fn policy(&self) -> Option<Backoff> {
        let ms = |v: u16| Duration::from_millis(u64::from(v));
        let b = match *self {
            PolicyChoice::Default => Backoff::default(),
            PolicyChoice::FullJitter(w, c) => Backoff::full_jitter(ms(w), ms(c)),
            PolicyChoice::Proportional(i, m, j, max) => Backoff::proportional(
                ms(i),
                1.0 + f64::from(m) / 10.0,
                f64::from(j % 100) / 100.0,
                ms(max),
            ),
            PolicyChoice::Decorrelated(b, c) => Backoff::decorrelated(ms(b), ms(c)),
            PolicyChoice::Staged(w, i, m, j, max) => Backoff::staged(
                ms(w),
                ms(i),
                1.0 + f64::from(m) / 10.0,
                f64::from(j % 100) / 100.0,
                ms(max),
            ),
        };
        b.validate().ok().map(|_| b)
    }
}

/// One input to a session, as an adapter and a server would produce it.
#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    /// Let this many milliseconds pass, then `handle_timeout`.
    Advance(u16),
    /// Jump to `poll_timeout` and `handle_timeout`.
    AdvanceToTimeout,
    /// `handle_connect`.
    Connect,
    /// Send a payload of this many bytes.
    Send(u8),
    /// Publish to channel `c{n % 4}`.
    Publish(u8, u8),
    /// Subscribe to channel `c{n % 4}`.
    Subscribe(u8),
    /// Unsubscribe from channel `c{n % 4}`.
    Unsubscribe(u8),
    /// `handle_close`.
    Close,
    /// `handle_retry_now`.
    RetryNow,
    /// `handle_network_online`.
    NetworkOnline,
    /// `handle_wake`.
    Wake,
    /// The dial succeeded.
    DialOk,
    /// The dial failed with an IO error.
    DialIo,
    /// The dial failed with an HTTP status and optional Retry-After (s).
    DialHttp(u16, Option<u8>),
    /// The token provider answered.
    TokenOk,
    /// The token provider failed (unauthorized or not).
    TokenFailed(bool),
    /// The transport closed.
    TransportClosed(Option<u16>, String),
    /// Arbitrary bytes as a binary frame.
    Binary(Vec<u8>),
    /// Arbitrary text frame.
    Text(String),
    /// A ping or pong arrived.
    Pong,
    /// WELCOME.
    Welcome {
        /// Resumed flag.
        resumed: bool,
        /// When resumed: the highest PUBLISH seen on the wire minus `n % 3`.
        last_client_seq: u8,
        /// Resume token lifetime.
        lifetime_ms: u16,
    },
    /// ACK: of the highest PUBLISH seen on the wire minus `n % 4`; 255 acks
    /// a seq never sent.
    Ack(u8),
    /// MESSAGE: mostly the server's next offset; `n % 8` of 5 or 6 replays
    /// an earlier one, 7 skips two (a gap).
    Message(u8),
    /// GOING_AWAY (retry after ms, window ms).
    GoingAway(u16, u16),
    /// ERROR (code, terminal).
    Error(u16, bool),
    /// SUBSCRIBED.
    Subscribed(u8),
    /// SUBSCRIBE_ERROR.
    SubscribeError(u8),
}

/// A whole scenario for [`session_events`].
#[derive(Arbitrary, Debug, Clone)]
pub struct SessionScenario {
    /// The session's seed.
    pub seed: u64,
    /// Wire (true) or Raw.
    pub wire: bool,
    /// Whether a token provider is configured.
    pub token_provider: bool,
    /// max_attempts (0 = unlimited).
    pub max_attempts: u8,
    /// The backoff policy.
    pub policy: PolicyChoice,
    /// The inputs.
    pub steps: Vec<Step>,
}

/// Runs the scenario twice: every invariant holds after every step, and the
/// two traces are identical.
pub fn session_events(base: Instant, s: &SessionScenario) {
    let Some(policy) = s.policy.policy() else {
        return;
    };
    let run = || {
        let mut h = Harness::new(
            base,
            s.seed,
            s.wire,
            s.token_provider,
            Some(u32::from(s.max_attempts)),
            policy.clone(),
        );
        for step in s.steps.iter().take(256) {
            h.step(step);
        }
        h.trace
    };
    let first = run();
    assert_eq!(first, run(), "same seed, same inputs, different trace");
}

/// The trace of one run (for debugging a scenario).
pub fn trace(base: Instant, s: &SessionScenario) -> Vec<String> {
    let Some(policy) = s.policy.policy() else {
        return Vec::new();
    };
    let mut h = Harness::new(
        base,
        s.seed,
        s.wire,
        s.token_provider,
        Some(u32::from(s.max_attempts)),
        policy,
    );
    for step in s.steps.iter().take(256) {
        h.step(step);
    }
    h.trace
}

/// A ladder scenario for [`backoff_ladder`].
#[derive(Arbitrary, Debug, Clone)]
pub struct LadderScenario {
    /// The seed.
    pub seed: u64,
    /// The policy.
    pub policy: PolicyChoice,
    /// Failures before each reset.
    pub runs: Vec<u8>,
}

/// Delays within each rung's bounds, windows never shrinking up the ladder,
/// the cap held, and after a reset the first rung again.
pub fn backoff_ladder(s: &LadderScenario) {
    let Some(policy) = s.policy.policy() else {
        return;
    };
    let mut rng = Rng::new(s.seed);
    let mut ladder = Ladder::new(policy.clone());
    for run in s.runs.iter().take(32) {
        let mut previous_hi = Duration::ZERO;
        for step in 1..=u32::from(*run) {
            let d = ladder.next_delay(&mut rng);
            let (lo, hi) = policy.bounds(step);
            assert!(
                d >= lo && d <= hi,
                "step {step}: {d:?} outside {lo:?}..={hi:?}"
            );
            assert!(hi >= previous_hi, "window shrank at step {step}");
            assert!(d <= policy.largest(), "cap broken at step {step}");
            previous_hi = hi;
        }
        ladder.reset();
    }
}

/// Plays adapter and server around a session and checks it after every step.
struct Harness {
    session: Session,
    now: Instant,
    wire: bool,
    max_attempts: u32,
    largest_delay: Duration,
    dial_pending: bool,
    token_pending: bool,
    open: bool,
    closed: bool,
    state: State,
    acked: u64,
    sent_ok: Vec<u64>,
    written_raw: u64,
    delivered: u64,
    /// Highest PUBLISH seq written on the wire (the server's view).
    published: u64,
    /// Highest seq the server has acknowledged, by ACK or resumed WELCOME.
    server_acked: u64,
    next_offset: u64,
    welcomed: bool,
    /// Highest PUBLISH seq written on the current transport: replays and new
    /// messages must go out in order.
    written_seq: u64,
    trace: Vec<String>,
}

impl Harness {
    fn new(
        base: Instant,
        seed: u64,
        wire: bool,
        token_provider: bool,
        max_attempts: Option<u32>,
        backoff: Backoff,
    ) -> Self {
        let max_attempts = max_attempts.unwrap_or(50);
        let config = Config::builder()
            .seed(seed)
            .backoff(backoff.clone())
            .max_attempts(max_attempts)
            .token_provider(token_provider)
            .queue_max_messages(16)
            .queue_max_bytes(2048)
            .build();
        let Ok(config) = config else {
            panic!("harness config rejected");
        };
        let session = if wire {
            Session::new(config, Wire)
        } else {
            Session::new(config, Raw)
        };
        // The largest delay any input can legitimately ask for: the policy's
        // cap, a server's wait (capped at max_server_delay, +10 %), or the
        // 30 s concurrency floor (+10 %).
        let largest_delay = backoff
            .largest()
            .max(session.config().max_server_delay().mul_f64(1.1))
            .max(Duration::from_secs(33));
        Harness {
            session,
            now: base,
            wire,
            max_attempts,
            largest_delay,
            dial_pending: false,
            token_pending: false,
            open: false,
            closed: false,
            state: State::Idle,
            acked: 0,
            sent_ok: Vec::new(),
            written_raw: 0,
            delivered: 0,
            published: 0,
            server_acked: 0,
            next_offset: 1,
            welcomed: false,
            written_seq: 0,
            trace: Vec::new(),
        }
    }

    fn channel(n: u8) -> Text {
        Text::from(format!("c{}", n % 4))
    }

    fn server(&mut self, frame: wire::Frame) {
        let now = self.now;
        self.session
            .handle_frame(now, Frame::Binary(frame.to_bytes()));
    }

    fn step(&mut self, step: &Step) {
        let now = self.now;
        // The scripted server keeps to the protocol (exactly one WELCOME per
        // transport, nothing before it, nothing without a transport); a
        // misbehaving server is what `Binary` and `Text` are for.
        let server_frame = matches!(
            step,
            Step::Ack(_)
                | Step::Message(_)
                | Step::GoingAway(..)
                | Step::Subscribed(_)
                | Step::SubscribeError(_)
        );
        let handshaking = self.open && !self.welcomed;
        let connected = self.open && self.welcomed;
        if (server_frame && !connected) || (matches!(step, Step::Welcome { .. }) && !handshaking) {
            return;
        }
        self.trace.push(format!("> {step:?}"));
        let s = &mut self.session;
        match step {
            Step::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(*ms));
                self.timeout();
            }
            Step::AdvanceToTimeout => {
                if let Some(t) = s.poll_timeout() {
                    self.now = self.now.max(t);
                }
                self.timeout();
            }
            Step::Connect => s.handle_connect(now),
            Step::Send(n) => {
                let r = s.handle_send(now, Payload::binary(vec![*n; usize::from(*n)]));
                self.sent(r);
            }
            Step::Publish(c, n) => {
                let r = s.handle_publish(
                    now,
                    Self::channel(*c),
                    Payload::text("x".repeat(usize::from(*n))),
                );
                self.sent(r);
            }
            Step::Subscribe(c) => {
                let _ = s.handle_subscribe(now, Self::channel(*c));
            }
            Step::Unsubscribe(c) => {
                let _ = s.handle_unsubscribe(now, Self::channel(*c));
            }
            Step::Close => s.handle_close(now),
            Step::RetryNow => s.handle_retry_now(now),
            Step::NetworkOnline => s.handle_network_online(now),
            Step::Wake => s.handle_wake(now),
            Step::DialOk => {
                if std::mem::take(&mut self.dial_pending) {
                    self.open = true;
                }
                s.handle_dial_ok(now);
            }
            Step::DialIo => {
                self.dial_pending = false;
                s.handle_dial_failed(now, DialFailure::Io("refused".into()));
            }
            Step::DialHttp(status, ra) => {
                self.dial_pending = false;
                let ra = ra.map(|s| Duration::from_secs(u64::from(s)));
                s.handle_dial_failed(now, DialFailure::http(*status, ra));
            }
            Step::TokenOk => {
                self.token_pending = false;
                s.handle_token(now, AuthToken::new("t"));
            }
            Step::TokenFailed(unauthorized) => {
                self.token_pending = false;
                let f = if *unauthorized {
                    TokenFailure::unauthorized("no")
                } else {
                    TokenFailure::transient("down")
                };
                s.handle_token_failed(now, f);
            }
            Step::TransportClosed(code, reason) => {
                self.open = false;
                self.welcomed = false;
                s.handle_transport_closed(now, code.map(|c| CloseFrame::new(c, reason.clone())));
            }
            Step::Binary(b) => s.handle_frame(now, Frame::Binary(Bytes::copy_from_slice(b))),
            Step::Text(t) => s.handle_frame(now, Frame::Text(Text::from(t.as_str()))),
            Step::Pong => s.handle_frame(now, Frame::Pong(Bytes::new())),
            Step::Welcome {
                resumed,
                last_client_seq,
                lifetime_ms,
            } => {
                let last_client_seq = if *resumed {
                    self.published
                        .saturating_sub(u64::from(*last_client_seq % 3))
                } else {
                    self.next_offset = 1;
                    0
                };
                self.server_acked = self.server_acked.max(last_client_seq);
                self.server(wire::Frame::Welcome(wire::Welcome {
                    version: wire::VERSION,
                    resumed: *resumed,
                    session_id: Text::from("s1"),
                    name: Text::from("quiet-otter-1"),
                    resume_token: crate::ResumeToken::new(Bytes::from_static(b"tok")),
                    token_lifetime_ms: u64::from(*lifetime_ms),
                    last_client_seq,
                    kept: vec![Self::channel(0)],
                }))
            }
            Step::Ack(n) => {
                let seq = if *n == 255 {
                    self.published + 1
                } else {
                    self.published.saturating_sub(u64::from(n % 4))
                };
                if seq <= self.published {
                    self.server_acked = self.server_acked.max(seq);
                }
                self.server(wire::Frame::Ack { seq })
            }
            Step::Message(n) => {
                let offset = match n % 8 {
                    5 | 6 => self.next_offset.saturating_sub(u64::from(n % 3) + 1).max(1),
                    7 => {
                        self.next_offset += 2;
                        self.next_offset - 1
                    }
                    _ => self.next_offset,
                };
                self.next_offset = self.next_offset.max(offset + 1);
                self.server(wire::Frame::Message {
                    offset,
                    channel: Some(Self::channel(*n)),
                    payload: Payload::binary(Bytes::from_static(b"m")),
                })
            }
            Step::GoingAway(ra, w) => self.server(wire::Frame::GoingAway {
                retry_after_ms: u64::from(*ra),
                window_ms: u64::from(*w),
            }),
            Step::Error(code, terminal) => self.server(wire::Frame::Error {
                code: *code,
                terminal: *terminal,
                reason: Text::from("e"),
            }),
            Step::Subscribed(c) => self.server(wire::Frame::Subscribed {
                channel: Self::channel(*c),
            }),
            Step::SubscribeError(c) => self.server(wire::Frame::SubscribeError {
                channel: Self::channel(*c),
                code: 1,
                reason: Text::from("denied"),
            }),
        }
        self.drain();
    }

    fn sent(&mut self, r: Result<u64, crate::SendError>) {
        match r {
            Ok(seq) => {
                assert!(!self.closed, "a closed session took a message");
                if let Some(last) = self.sent_ok.last() {
                    assert_eq!(seq, last + 1, "seqs must be consecutive");
                }
                self.sent_ok.push(seq);
            }
            Err(e) => self.trace.push(format!("send error {e}")),
        }
    }

    fn timeout(&mut self) {
        self.session.handle_timeout(self.now);
        if let Some(t) = self.session.poll_timeout() {
            assert!(
                t > self.now,
                "poll_timeout {t:?} not after handle_timeout({:?})",
                self.now
            );
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            assert!(!self.closed, "action {a:?} after Closed");
            self.trace.push(format!("{a:?}"));
            match a {
                Action::FetchToken => {
                    // A fetch that outlived the connect timeout is replaced,
                    // never run beside a dial.
                    assert!(!self.dial_pending, "token fetch while dialing");
                    self.token_pending = true;
                }
                Action::Dial { attempt, .. } => {
                    assert!(!self.dial_pending, "two dials in flight");
                    assert!(!self.open, "dial while a transport is open");
                    if self.max_attempts != 0 {
                        assert!(
                            attempt <= self.max_attempts,
                            "attempt {attempt} over the max"
                        );
                    }
                    self.token_pending = false;
                    self.dial_pending = true;
                    self.written_seq = 0;
                }
                Action::Send(Frame::Binary(b)) if self.wire => {
                    if let Ok(wire::Frame::Publish { seq, .. }) =
                        wire::decode(b, &Limits::default())
                    {
                        assert!(seq > self.acked, "acked seq {seq} sent again");
                        assert!(
                            seq > self.server_acked,
                            "seq {seq} the server acked was sent again"
                        );
                        assert!(
                            seq > self.written_seq,
                            "seq {seq} written after {}",
                            self.written_seq
                        );
                        self.written_seq = seq;
                        self.published = self.published.max(seq);
                    }
                }
                Action::Send(Frame::Text(_) | Frame::Binary(_)) => self.written_raw += 1,
                Action::Send(_) => {}
                Action::Close(_) => {
                    self.dial_pending = false;
                    self.open = false;
                    self.welcomed = false;
                }
            }
        }
        while let Some(e) = self.session.poll_event() {
            assert!(!self.closed, "event {e:?} after Closed");
            self.trace.push(format!("{e:?}"));
            match e {
                Event::StateChanged { from, to } => {
                    assert_eq!(from, self.state, "state chain broken");
                    assert_ne!(from, to);
                    self.state = to;
                }
                Event::ReconnectScheduled { attempt, delay } => {
                    if self.max_attempts != 0 {
                        assert!(attempt <= self.max_attempts);
                    }
                    assert!(
                        delay <= self.largest_delay,
                        "delay {delay:?} beyond every bound"
                    );
                    self.open = false;
                    self.welcomed = false;
                }
                Event::Acked { seq } => {
                    assert!(seq >= self.acked, "acks went backwards");
                    self.acked = seq;
                }
                Event::Connected { resumed, .. } => {
                    self.welcomed = true;
                    if self.wire && !resumed {
                        self.delivered = 0;
                    }
                }
                Event::Message {
                    offset: Some(offset),
                    ..
                } => {
                    assert!(offset > self.delivered, "offset {offset} delivered twice");
                    self.delivered = offset;
                }
                Event::Closed { undelivered, .. } => {
                    self.closed = true;
                    assert_eq!(undelivered, self.session.queued());
                }
                _ => {}
            }
        }
        let c = self.session.config();
        assert!(self.session.queued() <= c.queue_max_messages());
        assert!(self.session.queued_bytes() <= c.queue_max_bytes());
        if self.wire {
            let unacked = self.sent_ok.iter().filter(|s| **s > self.acked).count();
            assert_eq!(
                self.session.queued(),
                unacked,
                "an unacked message went missing"
            );
        } else {
            let queued = self.sent_ok.len() as u64 - self.written_raw;
            assert_eq!(
                self.session.queued() as u64,
                queued,
                "a raw message went missing"
            );
        }
        if self.closed {
            assert_eq!(self.session.state(), State::Closed);
            assert_eq!(self.session.poll_timeout(), None);
        }
        assert_eq!(self.session.state(), self.state, "reported state differs");
    }
}
