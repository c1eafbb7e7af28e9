//! Harness entry points for the cargo-fuzz targets in `fuzz/` (and the
//! property tests): each drives the real code and panics on any broken
//! invariant.
//!
//! Compiled with the `fuzzing` feature or under `cfg(fuzzing)`. The entry
//! points take the base `Instant` from the caller because redial-core never
//! reads a clock, not even here.

mod prober;

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

pub use prober::Prober;

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
    /// An inbound message over the size limit (frame limit or not, the
    /// limit, how far over).
    TooLarge(bool, u32, u16),
    /// The dial failed: TLS rejected the certificate.
    DialCertificate,
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

/// A reconnect the session scheduled, for checking the dial that ends it.
#[derive(Debug, Clone, Copy)]
struct Scheduled {
    at: Instant,
    delay: Duration,
    /// Lower bound of the part of the wait the server imposed.
    server_min: Duration,
    /// A `retry_now`, wake or network-online came since: only the server's
    /// part still binds.
    cut: bool,
}

/// Plays adapter and server around a session and checks it after every step.
struct Harness {
    session: Session,
    now: Instant,
    wire: bool,
    max_attempts: u32,
    largest_delay: Duration,
    policy: Backoff,
    /// A lower estimate of the session's ladder rung: it counts every
    /// scheduled reconnect and resets after every stable connection (the
    /// session does not reset for 1013), and a rung's lower bound never
    /// falls as the rung grows, so its lower bound is one the session must
    /// respect.
    rung: u32,
    /// When the current connection was established.
    connected_at: Option<Instant>,
    /// The retry_after of a GOING_AWAY on the current connection.
    going_away: Option<Duration>,
    /// An attempt of this outage already came below the ladder (the
    /// session takes the outage's first server wait as given, and weighs
    /// every later one against the ladder).
    server_wait_seen: bool,
    scheduled: Option<Scheduled>,
    /// The input being handled.
    input: Option<Step>,
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
            Session::new(config, Raw::new())
        };
        // The largest delay any input can legitimately ask for: the policy's
        // cap, a server's wait (capped at max_server_delay, +10 %), or the
        // 30 s concurrency floor (+10 %).
        let largest_delay = backoff
            .clone()
            .largest()
            .max(session.config().max_server_delay().mul_f64(1.1))
            .max(Duration::from_secs(33));
        Harness {
            session,
            now: base,
            wire,
            max_attempts,
            largest_delay,
            policy: backoff,
            rung: 0,
            server_wait_seen: false,
            connected_at: None,
            going_away: None,
            scheduled: None,
            input: None,
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
        self.input = Some(step.clone());
        if matches!(step, Step::RetryNow | Step::Wake | Step::NetworkOnline) {
            if let Some(sch) = &mut self.scheduled {
                sch.cut = true;
            }
        }
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
            Step::TooLarge(frame, max, over) => {
                // The session asks to close the transport (1009): `drain`
                // sees that Close.
                let limit = if *frame {
                    crate::SizeLimit::Frame
                } else {
                    crate::SizeLimit::Message
                };
                let max = u64::from(*max);
                s.handle_message_too_large(now, limit, max + u64::from(*over) + 1, max);
            }
            Step::DialCertificate => {
                self.dial_pending = false;
                s.handle_dial_failed(now, DialFailure::Certificate("UnknownIssuer".into()));
            }
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

    /// Checks a scheduled reconnect's delay from below: no server answer may
    /// take it under the ladder's lower bound for its rung, except the
    /// documented ones.
    fn scheduled(&mut self, delay: Duration) {
        let c = self.session.config();
        let stable_after = c.stable_after();
        let cap = c.max_server_delay();
        let stable = self
            .connected_at
            .take()
            .is_some_and(|at| self.now.saturating_duration_since(at) >= stable_after);
        if stable {
            self.rung = 0;
            self.server_wait_seen = false;
        }
        self.rung = self.rung.saturating_add(1);
        let going_away = self.going_away.take();
        // What the server imposed, as far as the input tells (a lower bound).
        let server_min = match &self.input {
            Some(Step::DialHttp(429 | 503, Some(ra))) => {
                Duration::from_secs(u64::from(*ra)).min(cap)
            }
            Some(Step::TransportClosed(Some(4010), _)) => {
                crate::close_policy::CONCURRENCY_FLOOR.min(cap)
            }
            Some(Step::TransportClosed(None | Some(1001 | 1012 | 1013), _)) => {
                going_away.unwrap_or_default()
            }
            _ => Duration::ZERO,
        };
        let lo = self.policy.bounds(self.rung).0;
        // The one retry at once with a fresh token after a 401 or 4002.
        let fresh_token = matches!(
            &self.input,
            Some(Step::DialHttp(401, _) | Step::TransportClosed(Some(4002), _))
        );
        if !fresh_token {
            assert!(
                delay >= server_min,
                "delay {delay:?} under the server's wait {server_min:?}"
            );
            // Only the first server wait of an outage (a deploy's window, a
            // limiter's booking) may take an attempt below the ladder: at
            // most one attempt per outage at the server's word alone.
            if delay < lo {
                assert!(
                    !self.server_wait_seen,
                    "delay {delay:?} under the ladder's lower bound {lo:?} for rung {}, \
                     and not the outage's first",
                    self.rung
                );
                self.server_wait_seen = true;
            }
        }
        self.scheduled = Some(Scheduled {
            at: self.now,
            delay,
            server_min,
            cut: false,
        });
    }

    /// A token fetch or dial went out: not before the scheduled delay, or
    /// after a shortcut, not before the server's part of it.
    fn attempt_started(&mut self) {
        let Some(sch) = self.scheduled.take() else {
            return;
        };
        let gap = self.now.saturating_duration_since(sch.at);
        let least = if sch.cut { sch.server_min } else { sch.delay };
        assert!(
            gap >= least,
            "attempt {gap:?} after the failure, {least:?} required (cut short: {})",
            sch.cut
        );
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
                    self.attempt_started();
                }
                Action::Dial { attempt, .. } => {
                    self.attempt_started();
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
                Action::Send(Frame::Binary(b), _) if self.wire => {
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
                Action::Send(Frame::Text(_) | Frame::Binary(_), _) => self.written_raw += 1,
                Action::Send(_, _) => {}
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
                    self.scheduled(delay);
                    self.open = false;
                    self.welcomed = false;
                }
                Event::GoingAway { retry_after, .. } => self.going_away = Some(retry_after),
                Event::Acked { seq } => {
                    assert!(seq >= self.acked, "acks went backwards");
                    self.acked = seq;
                }
                Event::Connected { resumed, .. } => {
                    self.connected_at = Some(self.now);
                    self.going_away = None;
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

// ----- every protocol ---------------------------------------------------

/// Which protocol a [`ProtocolScenario`] runs.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum ProtocolKind {
    /// [`Raw`] with an on-connect message and an application heartbeat.
    Raw,
    /// [`Wire`].
    Wire,
    /// [`crate::GraphqlWs`].
    #[cfg(feature = "graphql-ws")]
    GraphqlWs,
    /// [`crate::Nats`].
    #[cfg(feature = "nats")]
    Nats,
    /// [`crate::JsonRpc`] with a liveness call every second (due within
    /// 300 ms): replies to its own requests, notifications for current and
    /// stale subscription ids, call replies and rejections.
    #[cfg(feature = "json-rpc")]
    JsonRpc,
    /// [`crate::Mqtt`] (3.1.1, publishing at QoS 2, a PINGREQ every second
    /// due within 300 ms): CONNACKs accepting and refusing, every
    /// acknowledgement for a few packet ids, inbound publishes at each QoS,
    /// SUBACKs granting and failing, PINGRESP.
    #[cfg(feature = "mqtt")]
    Mqtt,
    /// [`Prober`]: a protocol timer (a probe every second, its reply due
    /// within 300 ms), answered, ignored or asked to fire at once; calls,
    /// answered, rejected or not.
    Timed,
    /// [`crate::SocketIo`]: the Engine.IO open, CONNECT replies that
    /// recover the session or not, pings, events with offsets, acks,
    /// server disconnects, connect errors, Engine.IO closes.
    #[cfg(feature = "socket-io")]
    SocketIo,
}

/// One input of a [`ProtocolScenario`].
#[derive(Debug, Clone, Arbitrary)]
pub enum ProtocolStep {
    /// `handle_connect`.
    Connect,
    /// The pending dial succeeds.
    DialOk,
    /// The pending dial fails with this HTTP status (0: an IO error).
    DialFailed(u16),
    /// The pending token fetch succeeds.
    Token,
    /// Time passes (ms), then `handle_timeout`.
    Advance(u16),
    /// A well-formed server message from the protocol's vocabulary.
    Server(u8),
    /// The server's side of the protocol's handshake, in order.
    Handshake,
    /// Up to 8 arbitrary bytes as a text (true) or binary message. (Short
    /// and fixed-size so that one step does not swallow the fuzzer's input:
    /// the codecs have targets of their own.)
    Garbage(u64, u8, bool),
    /// A message of the vocabulary cut short after this many bytes.
    Truncated(u8, u8),
    /// The transport closes with this code (none: no close frame).
    Closed(Option<u16>),
    /// `handle_send`.
    Send(u8),
    /// `handle_publish` to one of four channels.
    Publish(u8),
    /// Subscribe to one of four keys.
    Subscribe(u8),
    /// Unsubscribe one of four keys.
    Unsubscribe(u8),
    /// `handle_close`.
    Close,
    /// `handle_retry_now`.
    RetryNow,
    /// `handle_network_online`.
    NetworkOnline,
    /// `handle_call`, repeatable or not, with a timeout of 0 to 2.55 s.
    Call(bool, u8),
}

/// Arbitrary inputs into a session speaking any of the protocols.
#[derive(Debug, Clone, Arbitrary)]
pub struct ProtocolScenario {
    /// The protocol.
    pub kind: ProtocolKind,
    /// The session's seed.
    pub seed: u64,
    /// Whether a token provider is configured.
    pub token_provider: bool,
    /// The inputs.
    pub steps: Vec<ProtocolStep>,
}

impl ProtocolScenario {
    /// A scenario taking every byte of `data`: the protocol, seed and
    /// token-provider flag first, then steps until the bytes run out (a
    /// derived `Vec` would stop after a couple of steps on random input).
    pub fn from_bytes(data: &[u8]) -> Option<ProtocolScenario> {
        let mut u = arbitrary::Unstructured::new(data);
        let kind = ProtocolKind::arbitrary(&mut u).ok()?;
        let seed = u64::arbitrary(&mut u).ok()?;
        let token_provider = bool::arbitrary(&mut u).ok()?;
        let mut steps = Vec::new();
        while !u.is_empty() {
            match ProtocolStep::arbitrary(&mut u) {
                Ok(step) => steps.push(step),
                Err(_) => break,
            }
        }
        Some(ProtocolScenario {
            kind,
            seed,
            token_provider,
            steps,
        })
    }
}

fn vocabulary(kind: ProtocolKind, n: u8) -> Frame {
    let text = |s: String| Frame::Text(Text::from(s));
    let key = n % 4;
    match kind {
        ProtocolKind::Raw => text(format!("m{n}")),
        ProtocolKind::Wire => {
            use wire::Frame as W;
            let frame = match n % 7 {
                0 => W::Welcome(wire::Welcome {
                    version: wire::VERSION,
                    resumed: n % 2 == 0,
                    session_id: Text::from("s"),
                    name: Text::from("n"),
                    resume_token: crate::ResumeToken::new(Bytes::from_static(b"t")),
                    token_lifetime_ms: 1000,
                    last_client_seq: u64::from(n / 7),
                    kept: vec![Text::from(format!("c{key}"))],
                }),
                1 => W::Ack {
                    seq: u64::from(n / 7),
                },
                2 => W::Message {
                    offset: u64::from(n / 7) + 1,
                    channel: None,
                    payload: Payload::text("m"),
                },
                3 => W::GoingAway {
                    retry_after_ms: u64::from(n) * 10,
                    window_ms: 100,
                },
                4 => W::Error {
                    code: 1,
                    terminal: n % 2 == 0,
                    reason: Text::from("e"),
                },
                5 => W::Subscribed {
                    channel: Text::from(format!("c{key}")),
                },
                _ => W::SubscribeError {
                    channel: Text::from(format!("c{key}")),
                    code: 3,
                    reason: Text::from("no"),
                },
            };
            Frame::Binary(frame.to_bytes())
        }
        #[cfg(feature = "graphql-ws")]
        ProtocolKind::GraphqlWs => text(match n % 6 {
            0 => r#"{"type":"connection_ack"}"#.to_owned(),
            1 => r#"{"type":"ping"}"#.to_owned(),
            2 => r#"{"type":"pong"}"#.to_owned(),
            3 => format!(r#"{{"type":"next","id":"c{key}","payload":{{"data":1}}}}"#),
            4 => format!(r#"{{"type":"error","id":"c{key}","payload":[{{"message":"x"}}]}}"#),
            _ => format!(r#"{{"type":"complete","id":"c{key}"}}"#),
        }),
        #[cfg(feature = "nats")]
        ProtocolKind::Nats => Frame::Binary(Bytes::from(match n % 8 {
            0 => r#"INFO {"server_id":"S","version":"2.9","max_payload":4096}"#.to_owned() + "\r\n",
            1 => {
                r#"INFO {"server_id":"S","version":"2.9","max_payload":4096,"ldm":true}"#.to_owned()
                    + "\r\n"
            }
            2 => "PONG\r\n".to_owned(),
            3 => "PING\r\n".to_owned(),
            4 => format!("MSG c{key} {} 2\r\nhi\r\n", n % 5),
            5 => "-ERR 'Stale Connection'\r\n".to_owned(),
            6 => "-ERR 'Authorization Violation'\r\n".to_owned(),
            _ => format!("-ERR 'Permissions Violation for Subscription to \"c{key}\"'\r\n"),
        })),
        // Its own requests count down from -1 (subscribes, unsubscribes,
        // liveness calls), calls up from 1; subscription ids are `s<n>`.
        #[cfg(feature = "json-rpc")]
        ProtocolKind::JsonRpc => {
            let own = -i64::from(n % 8) - 1;
            let call = n % 8 + 1;
            text(match n % 6 {
                0 => format!(r#"{{"jsonrpc":"2.0","id":{own},"result":"s{key}"}}"#),
                1 => format!(
                    r#"{{"jsonrpc":"2.0","id":{own},"error":{{"code":-32602,"message":"no"}}}}"#
                ),
                2 => format!(
                    r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"s{key}","result":{n}}}}}"#
                ),
                3 => format!(r#"{{"jsonrpc":"2.0","id":{call},"result":"0x{n:x}"}}"#),
                4 => format!(
                    r#"{{"jsonrpc":"2.0","id":{call},"error":{{"code":-32000,"message":"x"}}}}"#
                ),
                _ => format!(r#"{{"jsonrpc":"2.0","method":"other","params":[{n}]}}"#),
            })
        }
        #[cfg(feature = "mqtt")]
        ProtocolKind::Mqtt => mqtt_vocabulary(n),
        ProtocolKind::Timed => text(match n % 5 {
            0 => "pong".to_owned(),
            1 => "wake-now".to_owned(),
            2 => format!("reply {} r", n / 5 % 8),
            3 => format!("reject {} -32602", n / 5 % 8),
            _ => format!("m{n}"),
        }),
        #[cfg(feature = "socket-io")]
        ProtocolKind::SocketIo => text(match n % 9 {
            0 => r#"0{"sid":"e","upgrades":[],"pingInterval":1000,"pingTimeout":500}"#.to_owned(),
            1 => format!(r#"40{{"sid":"s","pid":"p{}"}}"#, n / 9 % 2),
            2 => "2".to_owned(),
            3 => format!(r#"42["c{key}",{n},"o{n}"]"#),
            4 => format!("43{}[{n}]", n / 9 % 8 + 1),
            5 => "41".to_owned(),
            6 => r#"44{"message":"no"}"#.to_owned(),
            7 => "1".to_owned(),
            _ => format!(r#"42["c{key}"]"#),
        }),
    }
}

/// The vocabulary entries that complete the handshake.
fn handshake(kind: ProtocolKind) -> &'static [u8] {
    match kind {
        ProtocolKind::Raw => &[],
        ProtocolKind::Wire => &[14], // a fresh WELCOME
        #[cfg(feature = "graphql-ws")]
        ProtocolKind::GraphqlWs => &[0],
        #[cfg(feature = "nats")]
        ProtocolKind::Nats => &[0, 2],
        #[cfg(feature = "json-rpc")]
        ProtocolKind::JsonRpc => &[],
        #[cfg(feature = "mqtt")]
        ProtocolKind::Mqtt => &[0],
        ProtocolKind::Timed => &[],
        #[cfg(feature = "socket-io")]
        ProtocolKind::SocketIo => &[0, 1],
    }
}

fn spec_for(kind: ProtocolKind, key: u8) -> Payload {
    match kind {
        ProtocolKind::Raw => Payload::text(format!("sub c{key}")),
        #[cfg(feature = "graphql-ws")]
        ProtocolKind::GraphqlWs => Payload::text(r#"{"query":"subscription { t }"}"#),
        #[cfg(feature = "json-rpc")]
        ProtocolKind::JsonRpc => Payload::text(format!(r#"{{"params":["c{key}"]}}"#)),
        _ => Payload::binary(Bytes::new()),
    }
}

/// One MQTT packet from the broker, as [`vocabulary`] entry `n`.
#[cfg(feature = "mqtt")]
fn mqtt_vocabulary(n: u8) -> Frame {
    use crate::mqtt::{Ack, ConnAck, Packet, Properties, Publish, QoS, SubAck};
    let id = u16::from(n / 9 % 8) + 1;
    let ack = Ack {
        packet_id: id,
        reason: 0,
        properties: Properties::new(),
    };
    let packet = match n % 9 {
        0 | 1 => Packet::ConnAck(ConnAck {
            session_present: n % 2 == 0,
            // Entry 0 accepts; the others accept or refuse (1 to 5).
            code: if n % 9 == 0 { 0 } else { n / 9 % 6 },
            properties: Properties::new(),
        }),
        2 => Packet::PubAck(ack),
        3 => Packet::PubRec(ack),
        4 => Packet::PubComp(ack),
        5 => {
            let qos = QoS::from_u8(n / 9 % 3).unwrap_or(QoS::AtMostOnce);
            Packet::Publish(Publish {
                dup: n % 2 == 1,
                qos,
                retain: n % 4 == 0,
                topic: format!("c{}", n % 4),
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties: Properties::new(),
                payload: Bytes::from_static(b"m"),
            })
        }
        6 => Packet::PubRel(ack),
        7 => Packet::SubAck(SubAck {
            packet_id: id,
            properties: Properties::new(),
            codes: vec![if n % 2 == 0 { 1 } else { 0x80 }],
        }),
        _ => Packet::PingResp,
    };
    let mut out = bytes::BytesMut::new();
    // Every packet above is valid for 3.1.1.
    let _ = packet.encode(crate::mqtt::Version::V311, &mut out);
    Frame::Binary(out.freeze())
}

/// What a call asks, in the protocol's terms.
fn request_for(kind: ProtocolKind) -> Payload {
    match kind {
        #[cfg(feature = "json-rpc")]
        ProtocolKind::JsonRpc => Payload::text(r#"{"method":"eth_blockNumber","params":[]}"#),
        #[cfg(feature = "socket-io")]
        ProtocolKind::SocketIo => Payload::text(r#"["c0",1]"#),
        _ => Payload::text("q"),
    }
}

/// What a publish carries, in the protocol's terms.
fn publish_for(kind: ProtocolKind) -> Payload {
    match kind {
        #[cfg(feature = "socket-io")]
        ProtocolKind::SocketIo => Payload::text("[1]"),
        _ => Payload::text("p"),
    }
}

/// The text [`Prober`] takes as the answer to its probe.
fn is_pong(frame: &Frame) -> bool {
    matches!(frame, Frame::Text(t) if t.as_str() == "pong")
}

/// Runs a [`ProtocolScenario`]: never panics, and the protocol-neutral
/// invariants hold after every input: nothing is sent without an open
/// transport, no dial while one is open, `handle_timeout` leaves no timer
/// due, `Closed` is the last event and the state stays closed after it.
pub fn protocol_events(base: Instant, s: &ProtocolScenario) {
    let config = Config::builder()
        .seed(s.seed)
        .token_provider(s.token_provider)
        .max_attempts(20)
        .queue_max_messages(8)
        .queue_max_bytes(1024)
        .build();
    let Ok(config) = config else {
        panic!("harness config rejected");
    };
    let mut session = match s.kind {
        ProtocolKind::Raw => Session::new(
            config,
            Raw::new()
                .on_connect(Payload::text("hello"))
                .heartbeat(crate::RawHeartbeat::new(Payload::text("ping"))),
        ),
        ProtocolKind::Wire => Session::new(config, Wire),
        #[cfg(feature = "graphql-ws")]
        ProtocolKind::GraphqlWs => Session::new(config, crate::GraphqlWs::new()),
        #[cfg(feature = "nats")]
        ProtocolKind::Nats => Session::new(config, crate::Nats::new()),
        #[cfg(feature = "json-rpc")]
        ProtocolKind::JsonRpc => Session::new(
            config,
            crate::JsonRpc::new().liveness(crate::protocol::json_rpc::Liveness::new(
                "eth_chainId",
                Duration::from_secs(1),
                Duration::from_millis(300),
            )),
        ),
        #[cfg(feature = "mqtt")]
        ProtocolKind::Mqtt => {
            let mqtt = crate::Mqtt::builder("fuzz")
                .qos(crate::mqtt::QoS::ExactlyOnce)
                .keep_alive(Duration::from_secs(1))
                .ping_timeout(Duration::from_millis(300))
                .build();
            let Ok(mqtt) = mqtt else {
                panic!("harness Mqtt rejected");
            };
            Session::new(config, mqtt)
        }
        ProtocolKind::Timed => Session::new(
            config,
            Prober::new(Duration::from_secs(1), Duration::from_millis(300)),
        ),
        #[cfg(feature = "socket-io")]
        ProtocolKind::SocketIo => Session::new(config, crate::SocketIo::new()),
    };
    let mut now = base;
    let (mut dial_pending, mut token_pending, mut open, mut closed) = (false, false, false, false);
    // Timed: when the unanswered probe went out.
    let mut probed_at: Option<Instant> = None;
    // Calls taken and not yet ended, with their deadlines.
    let mut calls = std::collections::BTreeMap::new();
    for step in &s.steps {
        match step {
            ProtocolStep::Connect => session.handle_connect(now),
            ProtocolStep::DialOk if dial_pending => {
                dial_pending = false;
                open = true;
                session.handle_dial_ok(now);
            }
            ProtocolStep::DialFailed(status) if dial_pending => {
                dial_pending = false;
                let failure = if *status == 0 {
                    DialFailure::Timeout
                } else {
                    DialFailure::http(*status, None)
                };
                session.handle_dial_failed(now, failure);
            }
            ProtocolStep::Token if token_pending => {
                token_pending = false;
                session.handle_token(now, AuthToken::new("t"));
            }
            ProtocolStep::Advance(ms) => {
                now += Duration::from_millis(u64::from(*ms));
                session.handle_timeout(now);
                if let Some(at) = session.poll_timeout() {
                    assert!(at > now, "a timer still due after handle_timeout");
                }
            }
            ProtocolStep::Server(n) if open => {
                let frame = vocabulary(s.kind, *n);
                if is_pong(&frame) {
                    probed_at = None;
                }
                session.handle_frame(now, frame);
            }
            ProtocolStep::Handshake if open => {
                for n in handshake(s.kind) {
                    session.handle_frame(now, vocabulary(s.kind, *n));
                }
            }
            ProtocolStep::Garbage(bits, len, text) if open => {
                let bytes = &bits.to_le_bytes()[..usize::from(*len % 9)];
                let frame = if *text {
                    Frame::Text(Text::from(String::from_utf8_lossy(bytes).into_owned()))
                } else {
                    Frame::Binary(Bytes::copy_from_slice(bytes))
                };
                if is_pong(&frame) {
                    probed_at = None;
                }
                session.handle_frame(now, frame);
            }
            ProtocolStep::Truncated(n, cut) if open => {
                let frame = match vocabulary(s.kind, *n) {
                    Frame::Text(t) => Frame::Text(Text::from(crate::utf8::prefix(
                        t.as_str(),
                        usize::from(*cut),
                    ))),
                    Frame::Binary(b) => Frame::Binary(b.slice(..usize::from(*cut).min(b.len()))),
                    other => other,
                };
                if is_pong(&frame) {
                    probed_at = None;
                }
                session.handle_frame(now, frame);
            }
            ProtocolStep::Closed(code) if open => {
                open = false;
                probed_at = None;
                session.handle_transport_closed(now, code.map(|c| CloseFrame::new(c, "bye")));
            }
            ProtocolStep::Send(n) => {
                let _ = session.handle_send(now, Payload::text(format!("s{n}")));
            }
            ProtocolStep::Publish(n) => {
                let _ = session.handle_publish(now, format!("c{}", n % 4), publish_for(s.kind));
            }
            ProtocolStep::Subscribe(n) => {
                let key = n % 4;
                let _ =
                    session.handle_subscribe_with(now, format!("c{key}"), spec_for(s.kind, key));
            }
            ProtocolStep::Unsubscribe(n) => {
                let _ = session.handle_unsubscribe_with(
                    now,
                    format!("c{}", n % 4),
                    Some(Payload::text("unsub")),
                );
            }
            ProtocolStep::Close => session.handle_close(now),
            ProtocolStep::RetryNow => session.handle_retry_now(now),
            ProtocolStep::NetworkOnline => session.handle_network_online(now),
            ProtocolStep::Call(repeatable, tenths) => {
                let options = crate::CallOptions::new()
                    .repeatable(*repeatable)
                    .timeout(Duration::from_millis(u64::from(*tenths) * 10));
                if let Ok(id) = session.handle_call(now, request_for(s.kind), options) {
                    let by = now + Duration::from_millis(u64::from(*tenths) * 10);
                    assert!(calls.insert(id, by).is_none(), "a call id given twice");
                }
            }
            _ => {}
        }
        while let Some(action) = session.poll_action() {
            match action {
                Action::Dial { .. } => {
                    assert!(!open && !dial_pending, "a dial while a transport is open");
                    dial_pending = true;
                }
                Action::FetchToken => token_pending = true,
                Action::Send(frame, _) => {
                    assert!(open, "a send without an open transport");
                    if matches!(&frame, Frame::Text(t) if t.as_str() == "probe") {
                        probed_at.get_or_insert(now);
                    }
                }
                Action::Close(_) => {
                    // A close abandons a dial in flight as well.
                    open = false;
                    dial_pending = false;
                    probed_at = None;
                }
            }
        }
        if let Some(at) = probed_at {
            // The protocol's own deadline is kept: an unanswered probe
            // ends the link by its deadline whatever else happened.
            assert!(
                now < at + Duration::from_millis(300),
                "a probe unanswered for {:?} and the link still open",
                now - at
            );
        }
        while let Some(event) = session.poll_event() {
            assert!(!closed, "an event after Closed: {event:?}");
            match event {
                Event::CallDone { id, .. } => {
                    assert!(
                        calls.remove(&id).is_some(),
                        "call {id} ended twice or never made"
                    );
                }
                Event::Closed { .. } => {
                    assert!(calls.is_empty(), "calls {calls:?} outlived the session");
                    closed = true;
                }
                _ => {}
            }
        }
        if closed {
            assert_eq!(session.state(), State::Closed);
        }
        if matches!(step, ProtocolStep::Advance(_)) {
            // Every call ends by its timeout, whatever the link did.
            let late: Vec<_> = calls.iter().filter(|(_, by)| **by <= now).collect();
            assert!(late.is_empty(), "calls past their timeout: {late:?}");
        }
    }
}
