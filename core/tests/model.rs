//! Model-based test: a small reference model of the reconnect ladder, run
//! side by side with the real `Session` over generated transition sequences
//! (proptest-state-machine). After every transition the session must agree
//! with the model on state, attempt count and terminal reason, and every
//! delay it chooses must sit inside the bounds the model allows: above the
//! ladder rung's lower bound as well as below its upper one, whatever the
//! server said, and no dial may follow the failure before it sooner than
//! that lower bound (or, after `retry_now`, than the server's own wait).
//!
//! The session speaks a protocol with a timer of its own and calls
//! (`Prober`: a probe every ten minutes whatever the traffic, its reply due
//! within a second): the probe goes out when the timer table says, an
//! answer keeps the link, and silence past the deadline is a lost link like
//! any other. Calls made in any state end exactly as the model says, in
//! order: a reply, `ConnectionLost` for a call in flight at a drop (a
//! repeatable one only at its second), `Closed` for the rest when the
//! session ends.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use redial_core::fuzzing::Prober;
use redial_core::{
    Action, Backoff, CallError, CallOptions, CloseFrame, Config, DialFailure, Event, Frame,
    Payload, Session, State, TerminalReason, Text,
};

const STABLE_AFTER: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Far beyond any other step's time, so only `ProbeDue` reaches it.
const PROBE_EVERY: Duration = Duration::from_secs(600);
/// Beyond the longest run (60 steps of at most `PROBE_EVERY`): no call
/// times out here.
const CALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Replied,
    Lost,
    Closed,
}

/// A call the model keeps.
#[derive(Debug, Clone)]
struct Call {
    id: u64,
    repeatable: bool,
    in_flight: bool,
    sends: u8,
}
const PROBE_DEADLINE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Dialing,
    Connected,
    Waiting,
    Closed,
}

/// What the model knows about the next delay.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Anywhere in the ladder rung's bounds.
    Rung(u32),
    /// A later Retry-After of the outage: at least the server's wait (up to
    /// 10 % more) and the rung's lower bound (its draw where that is 0).
    RetryAfter(Duration, u32),
    /// At least the floor (up to 10 % more) or the rung, whichever is larger.
    Floor(Duration, u32),
    /// The first server wait of an outage: taken as given (up to 10 % more).
    Booked(Duration),
}

#[derive(Debug, Clone)]
struct Model {
    phase: Phase,
    max_attempts: u32,
    policy: Backoff,
    attempts: u32,
    rung: u32,
    stable: bool,
    ever_connected: bool,
    reason: Option<TerminalReason>,
    expect: Option<Expect>,
    /// Lower bound of the part of the pending wait the server imposed.
    server_min: Duration,
    /// A server's wait was taken as given in this outage.
    booked: bool,
    /// Lower bound of the time from the last failure to the next dial.
    gap_min: Duration,
    /// The protocol's probe is out and unanswered.
    probing: bool,
    /// Calls waiting or in flight, in id order.
    calls: Vec<Call>,
    next_call: u64,
    /// Every call's end so far, in order.
    ended: Vec<(u64, End)>,
}

#[derive(Debug, Clone)]
enum Transition {
    Connect,
    DialOk,
    DialIo,
    DialHttp(u16, Option<u64>),
    ConnectTimeout,
    Drop(Option<u16>),
    BecomeStable,
    /// The protocol's timer: the probe goes out.
    ProbeDue,
    /// The server answers the probe.
    ProbeAnswered,
    /// The probe's deadline passes in silence.
    ProbeUnanswered,
    /// The application calls (repeatable or not).
    Call(bool),
    /// The server answers call number `n`.
    Reply(u64),
    BackoffElapsed,
    RetryNow,
    NetworkOnline,
    Wake,
    UserClose,
}

fn policy() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        Just(Backoff::default()),
        Just(Backoff::grpc()),
        Just(Backoff::proportional(
            Duration::from_millis(500),
            2.0,
            0.2,
            Duration::from_secs(30)
        )),
        Just(Backoff::decorrelated(
            Duration::from_millis(100),
            Duration::from_secs(20)
        )),
        Just(Backoff::staged(
            Duration::from_millis(300),
            Duration::from_secs(1),
            1.5,
            0.3,
            Duration::from_secs(5)
        )),
    ]
}

struct Ref;

impl ReferenceStateMachine for Ref {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        (0u32..6, policy())
            .prop_map(|(max_attempts, policy)| Model {
                phase: Phase::Idle,
                max_attempts,
                policy,
                attempts: 0,
                rung: 0,
                stable: false,
                booked: false,
                ever_connected: false,
                reason: None,
                expect: None,
                server_min: Duration::ZERO,
                gap_min: Duration::ZERO,
                probing: false,
                calls: Vec::new(),
                next_call: 1,
                ended: Vec::new(),
            })
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Transition> {
        let codes = prop_oneof![
            Just(None),
            Just(Some(1000u16)),
            Just(Some(1001)),
            Just(Some(1006)),
            Just(Some(1008)),
            Just(Some(1011)),
            Just(Some(1013)),
            Just(Some(3000)),
            Just(Some(4001)),
            Just(Some(4002)),
            Just(Some(4003)),
            Just(Some(4010)),
            Just(Some(4012)),
            Just(Some(4020)),
        ];
        let statuses = prop_oneof![
            Just(401u16),
            Just(403),
            Just(429),
            Just(500),
            Just(503),
            Just(404)
        ];
        let in_flight = m.calls.iter().find(|c| c.in_flight).map(|c| c.id);
        let base = match m.phase {
            Phase::Idle => prop_oneof![Just(Transition::Connect), Just(Transition::UserClose)].boxed(),
            Phase::Dialing => prop_oneof![
                4 => Just(Transition::DialOk),
                2 => Just(Transition::DialIo),
                2 => (statuses, proptest::option::of(0u64..20)).prop_map(|(s, ra)| Transition::DialHttp(s, ra)),
                1 => Just(Transition::ConnectTimeout),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Connected if m.probing => prop_oneof![
                2 => codes.prop_map(Transition::Drop),
                2 => Just(Transition::ProbeAnswered),
                2 => Just(Transition::ProbeUnanswered),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Connected => prop_oneof![
                4 => codes.prop_map(Transition::Drop),
                2 => Just(Transition::BecomeStable),
                2 => Just(Transition::ProbeDue),
                1 => Just(Transition::NetworkOnline),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Waiting => prop_oneof![
                4 => Just(Transition::BackoffElapsed),
                1 => Just(Transition::RetryNow),
                1 => Just(Transition::NetworkOnline),
                1 => Just(Transition::Wake),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Closed => Just(Transition::UserClose).boxed(),
        };
        match (m.phase, in_flight) {
            (Phase::Closed, _) => base,
            (_, Some(id)) => prop_oneof![
                6 => base,
                1 => any::<bool>().prop_map(Transition::Call),
                2 => Just(Transition::Reply(id)),
            ]
            .boxed(),
            _ => prop_oneof![6 => base, 1 => any::<bool>().prop_map(Transition::Call)].boxed(),
        }
    }

    fn apply(mut m: Model, t: &Transition) -> Model {
        let terminal = |m: &mut Model, r| {
            m.phase = Phase::Closed;
            m.reason = Some(r);
            m.close_calls();
        };
        // The transport goes, for good or not: calls in flight end first.
        if m.phase == Phase::Connected
            && matches!(t, Transition::Drop(_) | Transition::ProbeUnanswered)
        {
            m.lose_calls();
        }
        match (m.phase, t) {
            (Phase::Closed, _) => {}
            (_, Transition::UserClose) => terminal(&mut m, TerminalReason::ClosedByUser),
            (Phase::Idle, Transition::Connect) => m.phase = Phase::Dialing,
            (Phase::Dialing, Transition::DialOk) => {
                m.phase = Phase::Connected;
                m.ever_connected = true;
                m.stable = false;
                m.probing = false;
                m.send_calls();
            }
            (_, Transition::Call(repeatable)) => {
                m.calls.push(Call {
                    id: m.next_call,
                    repeatable: *repeatable,
                    in_flight: false,
                    sends: 0,
                });
                m.next_call += 1;
                if m.phase == Phase::Connected {
                    m.send_calls();
                }
            }
            (Phase::Connected, Transition::Reply(id)) => {
                m.calls.retain(|c| c.id != *id);
                m.ended.push((*id, End::Replied));
            }
            (Phase::Dialing, Transition::DialIo | Transition::ConnectTimeout) => m.fail(None),
            (Phase::Dialing, Transition::DialHttp(status, ra)) => match status {
                401 => terminal(&mut m, TerminalReason::Unauthorized),
                403 => terminal(&mut m, TerminalReason::Forbidden),
                429 | 503 if ra.is_some() => {
                    let ra = Duration::from_secs(ra.unwrap_or_default());
                    m.fail(Some(Expect::RetryAfter(ra, 0)));
                }
                _ => m.fail(None),
            },
            (Phase::Connected, Transition::BecomeStable) => m.stable = true,
            (Phase::Connected, Transition::ProbeDue) => {
                // An hour of uptime: stable by then.
                m.stable = true;
                m.probing = true;
            }
            (Phase::Connected, Transition::ProbeAnswered) => m.probing = false,
            // The link is dead: lost like a drop without a close frame.
            (Phase::Connected, Transition::ProbeUnanswered) => m.lost(None),
            (Phase::Connected, Transition::Drop(code)) => {
                let reason = match code {
                    Some(1008) => Some(TerminalReason::PolicyViolation),
                    Some(4001) => Some(TerminalReason::InvalidToken),
                    // No token provider: an expired token cannot be refreshed.
                    Some(4002) => Some(TerminalReason::TokenExpired),
                    Some(4003) => Some(TerminalReason::ChannelNotAuthorized),
                    Some(4012) => Some(TerminalReason::AccountSuspended),
                    Some(4020) => Some(TerminalReason::AdminDisconnect),
                    _ => None,
                };
                if let Some(r) = reason {
                    terminal(&mut m, r);
                } else {
                    m.lost(*code);
                }
            }
            (Phase::Waiting, Transition::BackoffElapsed) => m.phase = Phase::Dialing,
            // `retry_now` cuts the client's own backoff, never the server's
            // wait: the dial moves to the end of that instead.
            (
                Phase::Waiting,
                Transition::RetryNow | Transition::NetworkOnline | Transition::Wake,
            ) if !m.server_min.is_zero() => {
                m.gap_min = m.server_min;
            }
            (
                Phase::Waiting,
                Transition::RetryNow | Transition::NetworkOnline | Transition::Wake,
            ) => m.phase = Phase::Dialing,
            _ => {}
        }
        m
    }

    fn preconditions(m: &Model, t: &Transition) -> bool {
        match (m.phase, t) {
            (_, Transition::UserClose)
            | (Phase::Idle, Transition::Connect)
            | (
                Phase::Dialing,
                Transition::DialOk
                | Transition::DialIo
                | Transition::DialHttp(..)
                | Transition::ConnectTimeout,
            )
            | (Phase::Connected, Transition::Drop(_))
            | (
                Phase::Waiting,
                Transition::BackoffElapsed
                | Transition::RetryNow
                | Transition::NetworkOnline
                | Transition::Wake,
            ) => true,
            (
                Phase::Connected,
                Transition::BecomeStable | Transition::NetworkOnline | Transition::ProbeDue,
            ) => !m.probing,
            (Phase::Connected, Transition::ProbeAnswered | Transition::ProbeUnanswered) => {
                m.probing
            }
            (Phase::Closed, Transition::Call(_)) => false,
            (_, Transition::Call(_)) => true,
            (Phase::Connected, Transition::Reply(id)) => {
                m.calls.iter().any(|c| c.id == *id && c.in_flight)
            }
            _ => false,
        }
    }
}

impl Model {
    /// The connection was lost (not for good): the ladder restarts after a
    /// stable one, then one more failure.
    fn lost(&mut self, code: Option<u16>) {
        if self.stable {
            self.attempts = 0;
            self.booked = false;
            if code != Some(1013) {
                self.rung = 0;
            }
        }
        self.stable = false;
        self.probing = false;
        let floor = (code == Some(4010)).then_some(Duration::from_secs(30));
        self.fail(floor.map(|f| Expect::Floor(f, 0)));
    }

    /// Every waiting call goes out on the new transport.
    fn send_calls(&mut self) {
        for c in self.calls.iter_mut().filter(|c| !c.in_flight) {
            c.in_flight = true;
            c.sends += 1;
        }
    }

    /// The transport went: a call in flight fails, unless repeatable and
    /// sent once, which then waits.
    fn lose_calls(&mut self) {
        let mut ended = Vec::new();
        self.calls.retain_mut(|c| {
            if !c.in_flight {
                return true;
            }
            c.in_flight = false;
            let again = c.repeatable && c.sends < 2;
            if !again {
                ended.push((c.id, End::Lost));
            }
            again
        });
        self.ended.extend(ended);
    }

    /// The session ended: every call left ends with it.
    fn close_calls(&mut self) {
        for c in self.calls.drain(..) {
            self.ended.push((c.id, End::Closed));
        }
    }

    /// One more failure: back off, or give up when the attempts are spent.
    fn fail(&mut self, expect: Option<Expect>) {
        if self.max_attempts != 0 && self.attempts >= self.max_attempts {
            self.phase = Phase::Closed;
            self.reason = Some(TerminalReason::AttemptsExhausted);
            self.close_calls();
            return;
        }
        self.attempts += 1;
        self.rung += 1;
        self.phase = Phase::Waiting;
        let expect = match expect {
            Some(Expect::Floor(f, _)) => Expect::Floor(f, self.rung),
            Some(Expect::RetryAfter(ra, _)) if !self.booked => {
                self.booked = true;
                Expect::Booked(ra)
            }
            Some(Expect::RetryAfter(ra, _)) => Expect::RetryAfter(ra, self.rung),
            Some(e) => e,
            None => Expect::Rung(self.rung),
        };
        let lo = self.policy.bounds(self.rung).0;
        (self.server_min, self.gap_min) = match expect {
            Expect::Rung(_) => (Duration::ZERO, lo),
            Expect::Booked(d) => (d, d),
            Expect::RetryAfter(d, _) | Expect::Floor(d, _) => (d, d.max(lo)),
        };
        self.expect = Some(expect);
    }

    /// What `Session::attempts` reads: 0 while connected.
    fn attempts(&self) -> u32 {
        if self.phase == Phase::Connected {
            0
        } else {
            self.attempts
        }
    }

    fn state(&self) -> State {
        match self.phase {
            Phase::Idle => State::Idle,
            Phase::Connected => State::Connected,
            Phase::Closed => State::Closed,
            _ if self.ever_connected || self.attempts > 0 => State::Reconnecting,
            _ => State::Connecting,
        }
    }
}

struct Sut {
    session: Session,
    now: Instant,
    dialing: bool,
    delays: Vec<Duration>,
    closed: Option<TerminalReason>,
    /// When the last reconnect was scheduled.
    failed_at: Instant,
    /// Time from the last failure to the dial the last transition made.
    gap: Option<Duration>,
    /// Probes the protocol sent.
    probes: u32,
    /// Every call's end so far, in order.
    ended: Vec<(u64, End)>,
}

impl Sut {
    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Dial { .. } => {
                    assert!(!self.dialing, "second dial in flight");
                    self.dialing = true;
                    self.gap = Some(self.now - self.failed_at);
                }
                Action::Close(_) => self.dialing = false,
                Action::Send(Frame::Text(t)) if t.as_str() == "probe" => self.probes += 1,
                _ => {}
            }
        }
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::ReconnectScheduled { delay, .. } => {
                    self.delays.push(delay);
                    self.failed_at = self.now;
                }
                Event::Closed { reason, .. } => {
                    assert!(self.closed.is_none(), "closed twice");
                    self.closed = Some(reason);
                }
                Event::CallDone { id, result } => {
                    assert!(self.closed.is_none(), "a call ended after Closed");
                    let end = match result {
                        Ok(_) => End::Replied,
                        Err(CallError::ConnectionLost) => End::Lost,
                        Err(CallError::Closed) => End::Closed,
                        Err(other) => panic!("call {id}: {other:?}"),
                    };
                    self.ended.push((id.get(), end));
                }
                _ => {}
            }
        }
    }
}

struct SessionTest;

impl StateMachineTest for SessionTest {
    type SystemUnderTest = Sut;
    type Reference = Ref;

    fn init_test(m: &Model) -> Sut {
        let config = Config::builder()
            .seed(7)
            .backoff(m.policy.clone())
            .max_attempts(m.max_attempts)
            .ping_interval(None)
            .stable_after(STABLE_AFTER)
            .connect_timeout(CONNECT_TIMEOUT)
            .call_timeout(CALL_TIMEOUT)
            .build()
            .unwrap();
        let now = Instant::now();
        Sut {
            session: Session::new(config, Prober::new(PROBE_EVERY, PROBE_DEADLINE)),
            now,
            dialing: false,
            delays: Vec::new(),
            closed: None,
            failed_at: now,
            gap: None,
            probes: 0,
            ended: Vec::new(),
        }
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        sut.gap = None;
        let now = sut.now;
        let s = &mut sut.session;
        match t {
            Transition::Connect => s.handle_connect(now),
            Transition::UserClose => s.handle_close(now),
            Transition::DialOk => {
                sut.dialing = false;
                s.handle_dial_ok(now);
            }
            Transition::DialIo => {
                sut.dialing = false;
                s.handle_dial_failed(now, DialFailure::Io("refused".into()));
            }
            Transition::DialHttp(status, ra) => {
                sut.dialing = false;
                s.handle_dial_failed(now, DialFailure::http(status, ra.map(Duration::from_secs)));
            }
            Transition::ConnectTimeout => {
                sut.now += CONNECT_TIMEOUT;
                s.handle_timeout(sut.now);
            }
            Transition::Drop(code) => {
                s.handle_transport_closed(now, code.map(|c| CloseFrame::new(c, "bye")));
            }
            Transition::BecomeStable => {
                sut.now += STABLE_AFTER;
                s.handle_timeout(sut.now);
            }
            Transition::ProbeDue => {
                // A pong for a network-online ping, if one is out: only the
                // protocol's timer is under test here.
                s.handle_frame(now, Frame::Pong(bytes::Bytes::new()));
                let due = s.poll_timeout().unwrap();
                assert!(
                    due > now && due <= now + PROBE_EVERY,
                    "the probe's time is in the table"
                );
                let before = sut.probes;
                sut.now = due;
                s.handle_timeout(sut.now);
                sut.drain();
                assert_eq!(sut.probes, before + 1, "the probe went out at its time");
                assert_eq!(sut.session.state(), State::Connected);
                let reply_by = sut.session.poll_timeout().unwrap();
                assert_eq!(reply_by, sut.now + PROBE_DEADLINE, "and its deadline");
            }
            Transition::ProbeAnswered => s.handle_frame(now, Frame::Text(Text::from("pong"))),
            Transition::ProbeUnanswered => {
                sut.now += PROBE_DEADLINE;
                s.handle_timeout(sut.now);
            }
            Transition::Call(repeatable) => {
                let options = CallOptions::new().repeatable(repeatable);
                s.handle_call(now, Payload::text("q"), options).unwrap();
            }
            Transition::Reply(id) => {
                s.handle_frame(now, Frame::Text(Text::from(format!("reply {id} r"))))
            }
            Transition::RetryNow => s.handle_retry_now(now),
            Transition::NetworkOnline => s.handle_network_online(now),
            Transition::Wake => s.handle_wake(now),
            Transition::BackoffElapsed => {
                // Fire timers in order until the dial goes out; the stuck
                // notice may come first.
                for _ in 0..4 {
                    let Some(at) = s.poll_timeout() else { break };
                    sut.now = sut.now.max(at);
                    s.handle_timeout(sut.now);
                    if s.state() != State::Reconnecting {
                        break;
                    }
                    let mut dialed = false;
                    while let Some(a) = s.poll_action() {
                        if matches!(a, Action::Dial { .. }) {
                            dialed = true;
                            sut.dialing = true;
                            sut.gap = Some(sut.now - sut.failed_at);
                        }
                    }
                    if dialed {
                        break;
                    }
                }
            }
        }
        sut.drain();
        if let (Some(expect), Some(delay)) = (m.expect, sut.delays.last().copied()) {
            check_delay(&m.policy, expect, delay);
        }
        let least = match t {
            Transition::BackoffElapsed => Some(m.gap_min),
            Transition::RetryNow | Transition::NetworkOnline | Transition::Wake => {
                Some(m.server_min)
            }
            _ => None,
        };
        if let (Some(gap), Some(least)) = (sut.gap, least) {
            assert!(
                gap >= least,
                "dialed {gap:?} after the failure, the model allows no sooner than {least:?}"
            );
        }
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        assert_eq!(
            sut.session.state(),
            m.state(),
            "state differs from the model"
        );
        assert_eq!(
            sut.closed, m.reason,
            "terminal reason differs from the model"
        );
        assert_eq!(
            sut.ended, m.ended,
            "calls ended otherwise than the model says"
        );
        assert_eq!(sut.session.calls(), m.calls.len(), "calls kept");
        if m.phase != Phase::Closed {
            assert_eq!(
                sut.session.attempts(),
                m.attempts(),
                "attempt count differs"
            );
            assert_eq!(
                sut.dialing,
                m.phase == Phase::Dialing,
                "a dial in flight where the model has none, or none where it has one"
            );
        } else {
            assert_eq!(sut.session.poll_timeout(), None);
        }
        if m.max_attempts != 0 {
            assert!(sut.session.attempts() <= m.max_attempts);
        }
    }
}

fn check_delay(policy: &Backoff, expect: Expect, delay: Duration) {
    match expect {
        Expect::Rung(rung) => {
            let (lo, hi) = policy.bounds(rung);
            assert!(
                delay >= lo && delay <= hi,
                "rung {rung}: {delay:?} not in {lo:?}..={hi:?}"
            );
        }
        Expect::Booked(ra) => {
            assert!(
                delay >= ra && delay <= ra + ra / 10,
                "first Retry-After {ra:?} of the outage gave {delay:?}"
            );
        }
        Expect::RetryAfter(ra, rung) => {
            let (lo, hi) = policy.bounds(rung);
            assert!(
                delay >= ra.max(lo) && delay <= hi.max(ra + ra / 10),
                "Retry-After {ra:?} on rung {rung} ({lo:?}..={hi:?}) gave {delay:?}"
            );
        }
        Expect::Floor(f, rung) => {
            let (lo, hi) = policy.bounds(rung);
            let hi = hi.max(f + f / 10);
            assert!(
                delay >= f.max(lo) && delay <= hi,
                "floor {f:?} on rung {rung} gave {delay:?}"
            );
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn session_follows_the_reference_model(sequential 1..60 => SessionTest);
}
