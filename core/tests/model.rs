//! Model-based test: a small reference model of the reconnect ladder, run
//! side by side with the real `Session` over generated transition sequences
//! (proptest-state-machine). After every transition the session must agree
//! with the model on state, attempt count and terminal reason, and every
//! delay it chooses must sit inside the bounds the model allows.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use redial_core::{
    Action, Backoff, CloseFrame, Config, DialFailure, Event, Raw, Session, State, TerminalReason,
};

const STABLE_AFTER: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Exactly the server's Retry-After, up to 10 % more.
    RetryAfter(Duration),
    /// At least the floor (up to 10 % more) or the rung, whichever is larger.
    Floor(Duration, u32),
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
    BackoffElapsed,
    RetryNow,
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
                ever_connected: false,
                reason: None,
                expect: None,
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
        match m.phase {
            Phase::Idle => prop_oneof![Just(Transition::Connect), Just(Transition::UserClose)].boxed(),
            Phase::Dialing => prop_oneof![
                4 => Just(Transition::DialOk),
                2 => Just(Transition::DialIo),
                2 => (statuses, proptest::option::of(0u64..20)).prop_map(|(s, ra)| Transition::DialHttp(s, ra)),
                1 => Just(Transition::ConnectTimeout),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Connected => prop_oneof![
                4 => codes.prop_map(Transition::Drop),
                2 => Just(Transition::BecomeStable),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Waiting => prop_oneof![
                4 => Just(Transition::BackoffElapsed),
                1 => Just(Transition::RetryNow),
                1 => Just(Transition::UserClose),
            ]
            .boxed(),
            Phase::Closed => Just(Transition::UserClose).boxed(),
        }
    }

    fn apply(mut m: Model, t: &Transition) -> Model {
        let terminal = |m: &mut Model, r| {
            m.phase = Phase::Closed;
            m.reason = Some(r);
        };
        match (m.phase, t) {
            (Phase::Closed, _) => {}
            (_, Transition::UserClose) => terminal(&mut m, TerminalReason::ClosedByUser),
            (Phase::Idle, Transition::Connect) => m.phase = Phase::Dialing,
            (Phase::Dialing, Transition::DialOk) => {
                m.phase = Phase::Connected;
                m.ever_connected = true;
                m.stable = false;
            }
            (Phase::Dialing, Transition::DialIo | Transition::ConnectTimeout) => m.fail(None),
            (Phase::Dialing, Transition::DialHttp(status, ra)) => match status {
                401 => terminal(&mut m, TerminalReason::Unauthorized),
                403 => terminal(&mut m, TerminalReason::Forbidden),
                429 | 503 if ra.is_some() => {
                    let ra = Duration::from_secs(ra.unwrap_or_default());
                    m.fail(Some(Expect::RetryAfter(ra)));
                }
                _ => m.fail(None),
            },
            (Phase::Connected, Transition::BecomeStable) => m.stable = true,
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
                    if m.stable {
                        m.attempts = 0;
                        if *code != Some(1013) {
                            m.rung = 0;
                        }
                    }
                    m.stable = false;
                    let floor = (*code == Some(4010)).then_some(Duration::from_secs(30));
                    m.fail(floor.map(|f| Expect::Floor(f, 0)));
                }
            }
            (Phase::Waiting, Transition::BackoffElapsed | Transition::RetryNow) => {
                m.phase = Phase::Dialing;
            }
            _ => {}
        }
        m
    }

    fn preconditions(m: &Model, t: &Transition) -> bool {
        matches!(
            (m.phase, t),
            (_, Transition::UserClose)
                | (Phase::Idle, Transition::Connect)
                | (
                    Phase::Dialing,
                    Transition::DialOk
                        | Transition::DialIo
                        | Transition::DialHttp(..)
                        | Transition::ConnectTimeout
                )
                | (
                    Phase::Connected,
                    Transition::Drop(_) | Transition::BecomeStable
                )
                | (
                    Phase::Waiting,
                    Transition::BackoffElapsed | Transition::RetryNow
                )
        )
    }
}

impl Model {
    /// One more failure: back off, or give up when the attempts are spent.
    fn fail(&mut self, expect: Option<Expect>) {
        if self.max_attempts != 0 && self.attempts >= self.max_attempts {
            self.phase = Phase::Closed;
            self.reason = Some(TerminalReason::AttemptsExhausted);
            return;
        }
        self.attempts += 1;
        self.rung += 1;
        self.phase = Phase::Waiting;
        self.expect = Some(match expect {
            Some(Expect::Floor(f, _)) => Expect::Floor(f, self.rung),
            Some(e) => e,
            None => Expect::Rung(self.rung),
        });
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
}

impl Sut {
    fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::Dial { .. } => {
                    assert!(!self.dialing, "second dial in flight");
                    self.dialing = true;
                }
                Action::Close(_) => self.dialing = false,
                _ => {}
            }
        }
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::ReconnectScheduled { delay, .. } => self.delays.push(delay),
                Event::Closed { reason, .. } => {
                    assert!(self.closed.is_none(), "closed twice");
                    self.closed = Some(reason);
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
            .build()
            .unwrap();
        Sut {
            session: Session::new(config, Raw),
            now: Instant::now(),
            dialing: false,
            delays: Vec::new(),
            closed: None,
        }
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
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
            Transition::RetryNow => s.handle_retry_now(now),
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
        if m.phase != Phase::Closed {
            assert_eq!(sut.session.attempts(), m.attempts, "attempt count differs");
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
        Expect::RetryAfter(ra) => {
            assert!(
                delay >= ra && delay <= ra + ra / 10,
                "Retry-After {ra:?} gave {delay:?}"
            );
        }
        Expect::Floor(f, rung) => {
            let hi = policy.bounds(rung).1.max(f + f / 10);
            assert!(delay >= f && delay <= hi, "floor {f:?} gave {delay:?}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn session_follows_the_reference_model(sequential 1..60 => SessionTest);
}
