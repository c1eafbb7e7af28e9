//! One test per rule of the reconnect ladder, through the public API.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use redial_core::wire::{self, Frame as W};
use redial_core::{
    Action, AuthToken, Backoff, CloseFrame, Config, ConfigBuilder, DialFailure, Event, Frame,
    Payload, Raw, ResumeToken, SendError, Session, State, TerminalReason, Text, TokenFailure, Wire,
};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// A session plus the outputs it produced, and a clock.
struct T {
    s: Session,
    now: Instant,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl T {
    fn new(b: ConfigBuilder) -> Self {
        Self::with(b, false)
    }

    fn with(b: ConfigBuilder, wire: bool) -> Self {
        let config = b.build().unwrap();
        let s = if wire {
            Session::new(config, Wire)
        } else {
            Session::new(config, Raw)
        };
        T {
            s,
            now: Instant::now(),
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.s.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    fn connect(&mut self) {
        self.s.handle_connect(self.now);
        self.s.handle_dial_ok(self.now);
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.drain();
    }

    /// Fires timers until the next dial (or token fetch), returning the wait.
    fn until_dial(&mut self) -> Duration {
        self.drain();
        let start = self.now;
        let is_dial = |a: &Action| matches!(a, Action::Dial { .. } | Action::FetchToken);
        let before = self.actions.iter().filter(|a| is_dial(a)).count();
        for _ in 0..10 {
            let Some(at) = self.s.poll_timeout() else {
                break;
            };
            self.now = self.now.max(at);
            self.s.handle_timeout(self.now);
            self.drain();
            if self.actions.iter().filter(|a| is_dial(a)).count() > before {
                break;
            }
        }
        self.now - start
    }

    fn close(&mut self, code: u16) {
        self.s
            .handle_transport_closed(self.now, Some(CloseFrame::new(code, "server says")));
        self.drain();
    }

    /// The server's WELCOME on the open transport (a fresh or resumed
    /// session with a day-long resume token).
    fn welcome(&mut self, resumed: bool) {
        self.welcome_with(resumed, 86_400_000);
    }

    fn welcome_with(&mut self, resumed: bool, token_lifetime_ms: u64) {
        let welcome = W::Welcome(wire::Welcome {
            version: wire::VERSION,
            resumed,
            session_id: Text::from("id"),
            name: Text::from("calm-heron-7"),
            resume_token: ResumeToken::new(Bytes::from_static(b"tok")),
            token_lifetime_ms,
            last_client_seq: 0,
            kept: vec![],
        });
        self.s
            .handle_frame(self.now, Frame::Binary(welcome.to_bytes()));
    }

    fn dials(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Dial { .. }))
            .count()
    }

    fn scheduled(&self) -> Vec<(u32, Duration)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ReconnectScheduled { attempt, delay } => Some((*attempt, *delay)),
                _ => None,
            })
            .collect()
    }

    fn closed(&self) -> Option<TerminalReason> {
        self.events.iter().find_map(|e| match e {
            Event::Closed { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

fn quiet() -> ConfigBuilder {
    Config::builder().seed(1).ping_interval(None)
}

#[test]
fn first_connect_dials_at_once_and_reconnects_use_the_default_ladder() {
    let mut t = T::new(quiet());
    t.connect();
    assert_eq!(t.s.state(), State::Connected);
    assert_eq!(t.dials(), 1);
    t.close(1006);
    let (_, d) = t.scheduled()[0];
    assert!(
        d <= Duration::from_secs(2),
        "first reconnect within the 2 s window, got {d:?}"
    );
    assert_eq!(t.s.state(), State::Reconnecting);
    // The second comes from the proportional ladder: 7 s +-30 %.
    t.until_dial();
    t.s.handle_dial_failed(t.now, DialFailure::Io("refused".into()));
    t.drain();
    let (_, d) = *t.scheduled().last().unwrap();
    assert!(
        d >= Duration::from_millis(4900) && d <= Duration::from_millis(9100),
        "{d:?}"
    );
}

#[test]
fn normal_closes_reconnect_and_report_will_reconnect() {
    for code in [1000, 1001, 1002, 1006, 1011, 1012, 3000, 4000, 4999] {
        let mut t = T::new(quiet());
        t.connect();
        t.close(code);
        assert!(
            t.events.contains(&Event::Disconnected {
                code: Some(code),
                reason: "server says".into(),
                will_reconnect: true
            }),
            "{code}"
        );
        assert_eq!(t.s.state(), State::Reconnecting, "{code}");
        t.until_dial();
        assert_eq!(t.dials(), 2, "{code}");
    }
}

#[test]
fn terminal_codes_end_the_session_with_their_names_and_never_redial() {
    for (code, name) in [
        (1008, "policy_violation"),
        (4001, "invalid_token"),
        (4003, "channel_not_authorized"),
        (4012, "account_suspended"),
        (4020, "admin_disconnect"),
    ] {
        let mut t = T::new(quiet());
        t.connect();
        t.close(code);
        assert_eq!(t.closed().map(|r| r.name()), Some(name));
        assert_eq!(t.s.state(), State::Closed);
        assert_eq!(t.s.poll_timeout(), None);
        t.advance(S(3600));
        assert_eq!(t.dials(), 1, "{code} must not be retried");
        assert!(matches!(
            t.events.last(),
            Some(Event::Closed { code: Some(c), .. }) if *c == code
        ));
    }
}

#[test]
fn close_4002_fetches_a_fresh_token_and_reconnects_at_once_once() {
    let mut t = T::new(quiet().token_provider(true));
    t.s.handle_connect(t.now);
    t.s.handle_token(t.now, AuthToken::new("old"));
    t.s.handle_dial_ok(t.now);
    t.drain();
    t.close(4002);
    assert_eq!(t.scheduled(), vec![(1, Duration::ZERO)]);
    t.until_dial();
    assert!(matches!(t.actions.last(), Some(Action::FetchToken)));
    t.s.handle_token(t.now, AuthToken::new("new"));
    t.s.handle_dial_ok(t.now);
    t.drain();
    // A provider that keeps handing out the stale token does not loop at
    // full speed: the second 4002 in the same outage uses the ladder.
    t.close(4002);
    let (attempt, delay) = t.scheduled()[1];
    assert_eq!(attempt, 2);
    let (lo, hi) = Backoff::default().bounds(2);
    assert!(delay >= lo && delay <= hi, "{delay:?}");
    let mut t = T::new(quiet());
    t.connect();
    t.close(4002);
    assert_eq!(t.closed(), Some(TerminalReason::TokenExpired));
}

#[test]
fn close_4010_waits_at_least_the_30s_floor() {
    for seed in 0..50 {
        let mut t = T::new(quiet().seed(seed));
        t.connect();
        t.close(4010);
        let (_, d) = t.scheduled()[0];
        assert!(d >= S(30) && d <= S(33), "{d:?}");
        let waited = t.until_dial();
        assert!(waited >= S(30));
    }
}

#[test]
fn close_1013_steps_the_ladder_even_after_a_stable_connection() {
    let mut t = T::new(quiet());
    t.connect();
    t.close(1006);
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.advance(S(6));
    // Stable now: a plain close would start from the first rung again,
    // but 1013 keeps climbing (the default's second rung: 7 s +-30 %).
    let mut windows = Vec::new();
    for seed in 0..200 {
        let mut u = T::new(quiet().seed(seed));
        u.connect();
        u.close(1006);
        u.until_dial();
        u.s.handle_dial_ok(u.now);
        u.advance(S(6));
        u.close(1013);
        windows.push(u.scheduled()[1].1);
    }
    let (lo, hi) = Backoff::default().bounds(2);
    assert!(lo > Backoff::default().bounds(1).1);
    assert!(
        windows.iter().all(|d| *d >= lo && *d <= hi),
        "1013 must step the ladder"
    );
}

#[test]
fn going_away_hint_replaces_the_backoff_for_1001() {
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome(false);
    let away = W::GoingAway {
        retry_after_ms: 8000,
        window_ms: 4000,
    };
    t.s.handle_frame(t.now, Frame::Binary(away.to_bytes()));
    t.close(1001);
    assert!(t.events.contains(&Event::GoingAway {
        retry_after: S(8),
        window: S(4)
    }));
    let (_, d) = t.scheduled()[0];
    assert!(d >= S(8) && d <= S(12), "{d:?}");
}

/// Regression (found by the `session_events` fuzz target): a GOING_AWAY or
/// Retry-After with an absurd value cannot park the client beyond
/// `max_server_delay`.
#[test]
fn server_waits_are_capped() {
    let mut t = T::with(quiet().max_server_delay(S(60)), true);
    t.connect();
    t.welcome(true);
    // The fuzzer's input: GOING_AWAY retry_after 11 ms, window 553443 ms.
    t.s.handle_frame(
        t.now,
        Frame::Binary(Bytes::from_static(&[0x0b, 0x0b, 0xe3, 0xe3, 0x21])),
    );
    t.close(1001);
    assert!(t.scheduled()[0].1 <= S(60), "{:?}", t.scheduled());
    let mut t = T::new(quiet().max_server_delay(S(60)));
    t.s.handle_connect(t.now);
    t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(S(86_400))));
    t.drain();
    let d = t.scheduled()[0].1;
    assert!(d >= S(60) && d <= S(66), "{d:?}");
}

/// The HELLO on the newest transport: whether it presented a resume token.
fn hello_has_token(t: &T) -> bool {
    t.actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Send(Frame::Binary(b)) => match wire::decode(b.clone(), &Default::default()) {
                Ok(W::Hello(h)) => Some(h.resume_token.is_some()),
                _ => None,
            },
            _ => None,
        })
        .unwrap()
}

#[test]
fn resume_token_lifetime_counts_from_the_loss_not_the_issue() {
    let hour = S(3600);
    let mut t = T::with(quiet().max_attempts(0), true);
    t.connect();
    assert!(!hello_has_token(&t));
    t.welcome_with(false, 24 * 3_600_000);
    // Connected for two days: the token is still good once the link drops.
    t.now += hour * 48;
    t.close(1006);
    t.until_dial();
    t.now += hour * 23;
    t.s.handle_dial_ok(t.now);
    t.drain();
    assert!(
        hello_has_token(&t),
        "23 h after the loss the token is presented"
    );
    t.welcome_with(true, 24 * 3_600_000);
    t.close(1006);
    t.until_dial();
    t.now += hour * 25;
    t.s.handle_dial_ok(t.now);
    t.drain();
    assert!(!hello_has_token(&t), "25 h after the loss it is not");
    t.welcome_with(false, 24 * 3_600_000);
    t.drain();
    let rejected = t
        .events
        .iter()
        .position(|e| matches!(e, Event::ResumeRejected { .. }));
    let connected = t
        .events
        .iter()
        .rposition(|e| matches!(e, Event::Connected { .. }));
    assert!(
        rejected.is_some() && rejected < connected,
        "the lost session is reported"
    );
    // A lifetime of 0 never resumes.
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome_with(false, 0);
    t.close(1006);
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.drain();
    assert!(!hello_has_token(&t));
}

#[test]
fn handshake_statuses() {
    // 401 without a provider, 403: terminal, named.
    for (status, reason) in [
        (401, TerminalReason::Unauthorized),
        (403, TerminalReason::Forbidden),
    ] {
        let mut t = T::new(quiet());
        t.s.handle_connect(t.now);
        t.s.handle_dial_failed(t.now, DialFailure::http(status, None));
        t.drain();
        assert_eq!(t.closed(), Some(reason));
        assert!(
            matches!(t.events.last(), Some(Event::Closed { code: Some(c), .. }) if *c == status)
        );
    }
    // 401 with a provider: one more try at once with a fresh token, then terminal.
    let mut t = T::new(quiet().token_provider(true));
    t.s.handle_connect(t.now);
    t.s.handle_token(t.now, AuthToken::new("a"));
    t.s.handle_dial_failed(t.now, DialFailure::http(401, None));
    t.drain();
    assert_eq!(t.scheduled(), vec![(1, Duration::ZERO)]);
    t.until_dial();
    t.s.handle_token(t.now, AuthToken::new("b"));
    t.s.handle_dial_failed(t.now, DialFailure::http(401, None));
    t.drain();
    assert_eq!(t.closed(), Some(TerminalReason::Unauthorized));
    // 429 and 503 honour Retry-After, never earlier, at most 10 % later.
    for status in [429, 503] {
        for seed in 0..30 {
            let mut t = T::new(quiet().seed(seed));
            t.s.handle_connect(t.now);
            t.s.handle_dial_failed(t.now, DialFailure::http(status, Some(S(20))));
            t.drain();
            let (_, d) = t.scheduled()[0];
            assert!(d >= S(20) && d <= S(22), "{status}: {d:?}");
            assert!(t.until_dial() >= S(20));
        }
    }
    // Anything else steps the ladder.
    let mut t = T::new(quiet());
    t.s.handle_connect(t.now);
    t.s.handle_dial_failed(t.now, DialFailure::http(500, Some(S(100))));
    t.drain();
    assert!(t.scheduled()[0].1 <= S(2));
}

#[test]
fn flapping_server_sees_growing_windows_not_a_tight_loop() {
    let mut t = T::new(quiet().max_attempts(0));
    t.connect();
    for _ in 0..8 {
        t.close(1006);
        t.until_dial();
        t.s.handle_dial_ok(t.now); // accepts, then drops at once
        t.drain();
    }
    let attempts: Vec<u32> = t.scheduled().iter().map(|(a, _)| *a).collect();
    assert_eq!(
        attempts,
        (1..=8).collect::<Vec<_>>(),
        "unstable connections never reset the ladder"
    );
    let total: Duration = t.scheduled().iter().map(|(_, d)| *d).sum();
    assert!(total > S(20), "eight flaps took only {total:?}");
}

#[test]
fn a_stable_connection_resets_the_ladder() {
    let mut t = T::new(quiet());
    t.connect();
    for _ in 0..4 {
        t.close(1006);
        t.until_dial();
        t.s.handle_dial_ok(t.now);
    }
    t.advance(S(5));
    t.close(1006);
    assert_eq!(t.scheduled().last().map(|(a, _)| *a), Some(1));
    assert_eq!(t.s.attempts(), 1);
}

#[test]
fn max_attempts_ends_with_attempts_exhausted() {
    let mut t = T::new(quiet().max_attempts(3));
    t.s.handle_connect(t.now);
    t.drain();
    for _ in 0..4 {
        t.s.handle_dial_failed(t.now, DialFailure::Io("refused".into()));
        t.until_dial();
    }
    assert_eq!(t.dials(), 4, "the first dial and three reconnect attempts");
    assert_eq!(t.closed(), Some(TerminalReason::AttemptsExhausted));
    // 0 is unlimited.
    let mut t = T::new(quiet().max_attempts(0));
    t.s.handle_connect(t.now);
    for _ in 0..200 {
        t.s.handle_dial_failed(t.now, DialFailure::Io("refused".into()));
        t.until_dial();
    }
    assert_eq!(t.closed(), None);
    assert!(t.scheduled().iter().all(|(_, d)| *d <= S(30)), "cap held");
}

#[test]
fn connect_timeout_abandons_the_dial_and_backs_off() {
    let mut t = T::new(quiet());
    t.s.handle_connect(t.now);
    t.drain();
    t.advance(S(10));
    assert!(t.actions.iter().any(|a| matches!(a, Action::Close(_))));
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::DialFailed { .. })));
    assert_eq!(t.scheduled().len(), 1);
}

#[test]
fn keepalive_detects_a_half_open_socket_within_interval_plus_timeout() {
    let mut t = T::new(Config::builder());
    t.connect();
    let start = t.now;
    // Nothing ever arrives again.
    while t.s.state() == State::Connected {
        let at = t.s.poll_timeout().unwrap();
        t.now = at;
        t.s.handle_timeout(at);
        t.drain();
    }
    let detected = t.now - start;
    assert!(detected <= S(25), "detected after {detected:?}");
    assert!(t
        .actions
        .iter()
        .any(|a| matches!(a, Action::Send(Frame::Ping(_)))));
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason == "pong timeout")));
}

#[test]
fn first_ping_is_jittered_inside_the_interval_then_regular() {
    let mut firsts = Vec::new();
    for seed in 0..50 {
        let mut t = T::new(Config::builder().seed(seed));
        t.connect();
        let start = t.now;
        let pinged = |t: &T| {
            t.actions
                .iter()
                .any(|a| matches!(a, Action::Send(Frame::Ping(_))))
        };
        while !pinged(&t) {
            let at = t.s.poll_timeout().unwrap();
            t.now = at;
            t.s.handle_timeout(at);
            t.drain();
        }
        let at = t.now;
        firsts.push(at - start);
        // The pong arrives; the next ping is one interval after the first.
        t.s.handle_frame(t.now, Frame::Pong(Bytes::new()));
        let next = t.s.poll_timeout().unwrap();
        assert!(next - at <= S(15));
    }
    assert!(
        firsts.iter().all(|d| *d >= MS(7500) && *d <= S(15)),
        "{firsts:?}"
    );
    assert!(firsts.iter().any(|d| *d < S(10)) && firsts.iter().any(|d| *d > S(12)));
}

#[test]
fn any_inbound_frame_is_proof_of_life() {
    let mut t = T::new(Config::builder());
    t.connect();
    for _ in 0..100 {
        t.now += S(1);
        t.s.handle_frame(t.now, Frame::Text(Text::from("tick")));
        t.s.handle_timeout(t.now);
        t.drain();
    }
    assert_eq!(t.s.state(), State::Connected);
    assert!(
        !t.actions
            .iter()
            .any(|a| matches!(a, Action::Send(Frame::Ping(_)))),
        "a busy link is not pinged"
    );
}

#[test]
fn stuck_fires_once_per_outage_after_30s() {
    let mut t = T::new(quiet().max_attempts(0));
    t.connect();
    t.close(1006);
    for _ in 0..30 {
        t.until_dial();
        t.s.handle_dial_failed(t.now, DialFailure::Io("down".into()));
        t.drain();
    }
    let stuck: Vec<_> = t
        .events
        .iter()
        .filter(|e| matches!(e, Event::Stuck { .. }))
        .collect();
    assert_eq!(stuck.len(), 1);
    assert!(matches!(stuck[0], Event::Stuck { for_, .. } if *for_ >= S(30)));
}

#[test]
fn token_provider_failures_warn_from_the_third_and_keep_retrying() {
    let mut t = T::new(quiet().token_provider(true).max_attempts(0));
    t.s.handle_connect(t.now);
    for _ in 0..5 {
        t.s.handle_token_failed(t.now, TokenFailure::transient("provider down"));
        t.until_dial();
    }
    let failing: Vec<u32> = t
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TokenProviderFailing { consecutive, .. } => Some(*consecutive),
            _ => None,
        })
        .collect();
    assert_eq!(failing, vec![3, 4, 5]);
    let failed = t
        .events
        .iter()
        .filter(|e| matches!(e, Event::DialFailed { status: None, .. }));
    assert_eq!(
        failed.count(),
        5,
        "every provider failure is a failed attempt"
    );
    assert_eq!(t.s.state(), State::Reconnecting);
    t.s.handle_token_failed(t.now, TokenFailure::unauthorized("user logged out"));
    t.drain();
    assert_eq!(t.closed(), Some(TerminalReason::Unauthorized));
}

#[test]
fn user_close_is_terminal_and_clean_and_retry_now_keeps_the_count() {
    let mut t = T::new(quiet());
    t.s.handle_connect(t.now);
    t.s.handle_dial_failed(t.now, DialFailure::Io("x".into()));
    t.s.handle_dial_failed(t.now, DialFailure::Io("ignored: no dial in flight".into()));
    t.drain();
    assert_eq!(t.s.attempts(), 1);
    t.s.handle_retry_now(t.now);
    t.drain();
    assert_eq!(t.dials(), 2, "retry-now dials without waiting");
    assert_eq!(t.s.attempts(), 1);
    t.s.handle_dial_ok(t.now);
    t.s.handle_close(t.now);
    t.drain();
    assert!(t
        .actions
        .iter()
        .any(|a| matches!(a, Action::Close(c) if c.code == 1000)));
    assert_eq!(t.closed(), Some(TerminalReason::ClosedByUser));
    assert_eq!(
        t.s.handle_send(t.now, Payload::text("late")),
        Err(SendError::Closed)
    );
}

#[test]
fn raw_queues_while_disconnected_and_flushes_in_order() {
    let mut t = T::new(quiet());
    t.s.handle_connect(t.now);
    for i in 0..3 {
        t.s.handle_send(t.now, Payload::text(format!("m{i}")))
            .unwrap();
    }
    t.drain();
    assert!(!t.actions.iter().any(|a| matches!(a, Action::Send(_))));
    t.s.handle_dial_ok(t.now);
    t.drain();
    let sent: Vec<String> = t
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Frame::Text(x)) => Some(x.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, ["m0", "m1", "m2"]);
    assert_eq!(t.s.queued(), 0);
}

#[test]
fn a_full_queue_is_an_error_and_a_server_that_never_acks_fills_it() {
    let mut t = T::with(quiet().queue_max_messages(8).queue_max_bytes(1 << 20), true);
    t.connect();
    t.welcome(false);
    for i in 0..8 {
        assert_eq!(
            t.s.handle_send(t.now, Payload::binary(vec![1u8; 100])),
            Ok(i + 1)
        );
    }
    assert!(matches!(
        t.s.handle_send(t.now, Payload::binary(vec![1u8; 100])),
        Err(SendError::QueueFull {
            messages: 8,
            bytes: 800
        })
    ));
    assert_eq!(t.s.queued(), 8);
    // An ack makes room.
    t.s.handle_frame(t.now, Frame::Binary(W::Ack { seq: 2 }.to_bytes()));
    assert_eq!(
        t.s.handle_send(t.now, Payload::binary(vec![1u8; 100])),
        Ok(9)
    );
}

#[test]
fn a_malformed_frame_is_a_protocol_error_and_a_reconnect() {
    let mut t = T::with(quiet(), true);
    t.connect();
    t.s.handle_frame(t.now, Frame::Binary(Bytes::from_static(&[0xff, 0x00])));
    t.drain();
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::ProtocolError { .. })));
    assert!(t
        .actions
        .iter()
        .any(|a| matches!(a, Action::Close(c) if c.code == 1002)));
    assert_eq!(t.s.state(), State::Reconnecting);
}

#[test]
fn same_seed_same_delays_other_seed_other_delays() {
    let run = |seed| {
        let mut t = T::new(quiet().seed(seed).max_attempts(0));
        t.s.handle_connect(t.now);
        for _ in 0..10 {
            t.s.handle_dial_failed(t.now, DialFailure::Io("x".into()));
            t.until_dial();
        }
        t.scheduled()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn policies_are_configurable() {
    let t = T::new(quiet().backoff(Backoff::grpc()));
    assert_eq!(t.s.config().backoff(), &Backoff::grpc());
}
