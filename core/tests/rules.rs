//! One test per rule of the reconnect ladder, through the public API.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use redial_core::wire::{self, Frame as W};
use redial_core::{
    Action, AuthToken, Backoff, CloseClass, CloseFrame, Config, ConfigBuilder, DialFailure, Event,
    Frame, Payload, Raw, ResumeToken, SendError, Session, State, TerminalReason, Text,
    TokenFailure, Wire,
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
            Session::new(config, Raw::new())
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
    // The second comes from the proportional ladder: 2.4 s +-20 %.
    t.until_dial();
    t.s.handle_dial_failed(t.now, DialFailure::Io("refused".into()));
    t.drain();
    let (_, d) = *t.scheduled().last().unwrap();
    assert!(
        d >= Duration::from_millis(1920) && d <= Duration::from_millis(2880),
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
    // but 1013 keeps climbing (the default's second rung: 2.4 s +-20 %).
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
    // The first rung, U(0, 2 s), would put about 96 % of 200 draws under
    // the second rung's 1.92 s floor.
    assert!(lo >= Backoff::default().bounds(1).1.mul_f64(0.9));
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
            Action::Send(Frame::Binary(b), _) => match wire::decode(b.clone(), &Default::default())
            {
                Ok(W::Hello(h)) => Some(h.resume_token.is_some()),
                _ => None,
            },
            _ => None,
        })
        .unwrap()
}

#[test]
fn replayed_counts_what_a_lost_link_carried_and_the_server_lacked() {
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome(false);
    for n in 0..4 {
        t.s.handle_publish(t.now, "c", Payload::text(n.to_string()))
            .unwrap();
    }
    t.drain();
    assert_eq!(t.s.replayed(), 0, "first writes are not replays");
    t.close(1006);
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    // The server already had seqs 1 and 2: only 3 and 4 are written again.
    let welcome = W::Welcome(wire::Welcome {
        version: wire::VERSION,
        resumed: true,
        session_id: Text::from("id"),
        name: Text::from("calm-heron-7"),
        resume_token: ResumeToken::new(Bytes::from_static(b"tok")),
        token_lifetime_ms: 86_400_000,
        last_client_seq: 2,
        kept: vec![],
    });
    t.s.handle_frame(t.now, Frame::Binary(welcome.to_bytes()));
    t.drain();
    assert_eq!(t.s.replayed(), 2);
    // A publish on the new link is a first write.
    t.s.handle_publish(t.now, "c", Payload::text("5")).unwrap();
    t.drain();
    assert_eq!(t.s.replayed(), 2);
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
    assert!(t.scheduled()[0].1 <= Backoff::default().bounds(1).1);
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
        .any(|a| matches!(a, Action::Send(Frame::Ping(_), _))));
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason == "pong timeout")));
    // The metrics' close class reads the session's own words for it.
    assert!(t.events.iter().any(|e| matches!(e,
        Event::Disconnected { code, reason, .. } if CloseClass::of(*code, reason) == CloseClass::Timeout)));
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
                .any(|a| matches!(a, Action::Send(Frame::Ping(_), _)))
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
            .any(|a| matches!(a, Action::Send(Frame::Ping(_), _))),
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
    assert!(!t.actions.iter().any(|a| matches!(a, Action::Send(_, _))));
    t.s.handle_dial_ok(t.now);
    t.drain();
    let sent: Vec<String> = t
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Frame::Text(x), _) => Some(x.to_string()),
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

// ----- issue 12: one test per item ------------------------------------

/// A policy whose every rung has a lower bound above zero, so that a delay
/// taken under the ladder shows.
fn floored() -> ConfigBuilder {
    quiet().backoff(Backoff::grpc()).max_attempts(0)
}

impl T {
    fn frame(&mut self, f: W) {
        self.s.handle_frame(self.now, Frame::Binary(f.to_bytes()));
        self.drain();
    }

    fn going_away(&mut self, retry_after_ms: u64, window_ms: u64) {
        self.frame(W::GoingAway {
            retry_after_ms,
            window_ms,
        });
    }

    fn welcome_full(&mut self, version: u64, resumed: bool, kept: &[&str]) {
        self.frame(W::Welcome(wire::Welcome {
            version,
            resumed,
            session_id: Text::from("id"),
            name: Text::from("calm-heron-7"),
            resume_token: ResumeToken::new(Bytes::from_static(b"tok")),
            token_lifetime_ms: 86_400_000,
            last_client_seq: 0,
            kept: kept.iter().map(|c| Text::from(*c)).collect(),
        }));
    }

    /// Wire frames the session sent, decoded.
    fn sent(&self) -> Vec<W> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(Frame::Binary(b), _) => {
                    wire::decode(b.clone(), &Default::default()).ok()
                }
                _ => None,
            })
            .collect()
    }

    fn disconnects(&self) -> Vec<bool> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Disconnected { will_reconnect, .. } => Some(*will_reconnect),
                _ => None,
            })
            .collect()
    }
}

/// Every scheduled delay against the policy's lower bound for its rung
/// (here rung = attempt: no connection in these runs was stable).
fn assert_on_the_ladder(policy: &Backoff, scheduled: &[(u32, Duration)]) {
    for (attempt, d) in scheduled {
        let lo = policy.bounds(*attempt).0;
        assert!(
            *d >= lo,
            "attempt {attempt}: {d:?} under the ladder's {lo:?}"
        );
    }
}

/// Item 1: twenty accept → WELCOME → GOING_AWAY{0, 0} → 1001 cycles. The
/// first server wait of the outage is taken as given (a deploy's window);
/// every later one stays on the ladder.
#[test]
fn issue12_1_going_away_zero_never_undercuts_the_ladder_within_an_outage() {
    let mut t = T::with(floored(), true);
    t.connect();
    t.welcome(false);
    for _ in 0..20 {
        t.going_away(0, 0);
        t.close(1001);
        t.until_dial();
        t.s.handle_dial_ok(t.now);
        t.welcome(true);
    }
    let scheduled = t.scheduled();
    assert_eq!(scheduled.len(), 20);
    assert_eq!(
        scheduled.last().unwrap().0,
        20,
        "unstable: the count goes on"
    );
    assert_eq!(scheduled[0], (1, Duration::ZERO), "the first wait as given");
    assert_on_the_ladder(&Backoff::grpc(), &scheduled[1..]);
    let total: Duration = scheduled.iter().map(|(_, d)| *d).sum();
    assert!(
        total > S(600),
        "twenty hinted reconnects took only {total:?}"
    );
}

/// Item 1: twenty-five 503 answers with `Retry-After: 0`: one booking taken
/// as given, then the ladder.
#[test]
fn issue12_1_retry_after_zero_never_undercuts_the_ladder() {
    let mut t = T::new(floored().max_attempts(50));
    t.s.handle_connect(t.now);
    for _ in 0..25 {
        t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(Duration::ZERO)));
        t.until_dial();
    }
    let scheduled = t.scheduled();
    assert_eq!(scheduled.len(), 25);
    assert_eq!(scheduled[0], (1, Duration::ZERO), "the first wait as given");
    assert_on_the_ladder(&Backoff::grpc(), &scheduled[1..]);
    assert!(t.s.attempts() == 25 && t.s.state() == State::Reconnecting);
}

/// Item 1: a 1001 whose hint is 0 is taken as it is only on the first retry
/// after a stable connection (a deploy's spread), then the ladder binds.
#[test]
fn issue12_1_a_zero_hint_shortens_only_the_first_retry_after_a_stable_connection() {
    let mut t = T::with(floored(), true);
    t.connect();
    t.welcome(false);
    t.advance(S(60));
    t.going_away(0, 0);
    t.close(1001);
    assert_eq!(t.scheduled(), vec![(1, Duration::ZERO)]);
    assert_eq!(t.until_dial(), Duration::ZERO);
    t.s.handle_dial_ok(t.now);
    t.welcome(true);
    t.going_away(0, 0);
    t.close(1001);
    let (attempt, d) = t.scheduled()[1];
    assert_eq!(attempt, 2);
    assert!(d >= Backoff::grpc().bounds(2).0, "{d:?}");
    // A hint longer than the ladder's draw still lengthens the wait.
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.welcome(true);
    t.going_away(40_000, 0);
    t.close(1001);
    assert!(t.scheduled()[2].1 >= S(40));
}

/// The three kinds of server-imposed wait, each 20 s or more from `now`.
#[derive(Debug, Clone, Copy)]
enum ServerWait {
    Close4010,
    RetryAfter,
    GoingAway,
}

impl ServerWait {
    /// Sets the wait up on a fresh session; returns its shortest length.
    fn impose(self, t: &mut T) -> Duration {
        match self {
            ServerWait::Close4010 => {
                t.connect();
                t.welcome(false);
                t.close(4010);
                S(30)
            }
            ServerWait::RetryAfter => {
                // The outage's first booking is taken as given; the second
                // is weighed against the ladder.
                t.s.handle_connect(t.now);
                t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(S(1))));
                t.until_dial();
                t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(S(20))));
                t.drain();
                S(20)
            }
            ServerWait::GoingAway => {
                // Not stable, and not the outage's first server wait: the
                // hint lengthens the ladder's draw rather than replacing it.
                t.connect();
                t.welcome(false);
                t.going_away(1_000, 0);
                t.close(1001);
                t.until_dial();
                t.s.handle_dial_ok(t.now);
                t.welcome(true);
                t.going_away(20_000, 0);
                t.close(1001);
                S(20)
            }
        }
    }
}

fn shortcut(t: &mut T, input: &str) {
    match input {
        "retry_now" => t.s.handle_retry_now(t.now),
        "network_online" => t.s.handle_network_online(t.now),
        "wake" => t.s.handle_wake(t.now),
        _ => unreachable!(),
    }
    t.drain();
}

/// Item 2: `retry_now`, `network_online` and `wake`, one second into each
/// kind of server-imposed wait: no dial until the server's wait is over,
/// and at its end exactly (not at the ladder's longer draw).
#[test]
fn issue12_2_shortcuts_never_cut_a_server_imposed_wait() {
    for wait in [
        ServerWait::Close4010,
        ServerWait::RetryAfter,
        ServerWait::GoingAway,
    ] {
        for input in ["retry_now", "network_online", "wake"] {
            // A ladder drawing far beyond the server's wait, so that a dial
            // at the server's end proves only the ladder's share was cut.
            let slow = Backoff::proportional(S(600), 2.0, 0.0, S(600));
            // (No stuck notice to get in the way of `poll_timeout`.)
            let mut t = T::with(quiet().backoff(slow).stuck_after(S(3600)), true);
            let least = wait.impose(&mut t);
            let failed = t.now;
            let dials = t.dials();
            assert!(t.scheduled().last().unwrap().1 >= S(600), "{wait:?}");
            t.advance(S(1));
            shortcut(&mut t, input);
            assert_eq!(t.dials(), dials, "{input} cut the {wait:?} wait");
            let due = t.s.poll_timeout().unwrap();
            assert!(
                due - failed >= least && due - failed <= least + least / 10,
                "{input} during {wait:?}: dial moved to {:?}",
                due - failed
            );
            t.until_dial();
            assert_eq!(t.dials(), dials + 1);
            assert_eq!(t.now, due);
        }
    }
}

/// Item 2, the other half: the client's own backoff is cut at once.
#[test]
fn issue12_2_shortcuts_cut_the_clients_own_backoff() {
    for input in ["retry_now", "network_online", "wake"] {
        let slow = Backoff::proportional(S(600), 2.0, 0.0, S(600));
        let mut t = T::new(quiet().backoff(slow));
        t.connect();
        t.close(1006);
        let dials = t.dials();
        shortcut(&mut t, input);
        assert_eq!(t.dials(), dials + 1, "{input} did not dial at once");
        assert_eq!(t.s.attempts(), 1, "{input} keeps the count");
    }
    // Once the server's part is over, the rest of the wait is the client's.
    let mut t = T::new(quiet().backoff(Backoff::proportional(S(600), 2.0, 0.0, S(600))));
    t.s.handle_connect(t.now);
    t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(S(1))));
    t.until_dial();
    t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(S(5))));
    t.drain();
    t.advance(S(6));
    let dials = t.dials();
    shortcut(&mut t, "wake");
    assert_eq!(t.dials(), dials + 1);
}

/// Item 2: while connected, wake and network-online probe with a ping whose
/// deadline is exactly `pong_timeout` later.
#[test]
fn issue12_2_wake_and_network_online_probe_a_live_connection() {
    for input in ["network_online", "wake"] {
        let mut t = T::new(Config::builder().seed(1));
        t.connect();
        let pings = |t: &T| {
            t.actions
                .iter()
                .filter(|a| matches!(a, Action::Send(Frame::Ping(_), _)))
                .count()
        };
        t.advance(S(1));
        let before = pings(&t);
        shortcut(&mut t, input);
        assert_eq!(pings(&t), before + 1, "{input} sent no probe");
        assert_eq!(t.s.poll_timeout(), Some(t.now + S(10)));
        t.advance(S(10) - Duration::from_nanos(1));
        assert_eq!(t.s.state(), State::Connected);
        t.advance(Duration::from_nanos(1));
        assert_eq!(t.s.state(), State::Reconnecting, "{input}: no pong in 10 s");
    }
}

/// Item 3: a connection up 60 s whose close is handled before any timer
/// (as after a suspend) is stable: attempt 1 on the first rung.
#[test]
fn issue12_3_stability_is_judged_by_uptime_not_timer_order() {
    let mut t = T::new(quiet());
    t.connect();
    // Two flaps first, so a lost stability would show as attempt 3.
    for _ in 0..2 {
        t.close(1006);
        t.until_dial();
        t.s.handle_dial_ok(t.now);
        t.drain();
    }
    t.now += S(60);
    t.close(1006);
    let (attempt, d) = *t.scheduled().last().unwrap();
    assert_eq!(attempt, 1);
    assert!(d <= Backoff::default().bounds(1).1, "{d:?}");
    // The boundary: up one nanosecond less than stable_after is a flap.
    let mut t = T::new(quiet());
    t.connect();
    t.now += S(5) - Duration::from_nanos(1);
    t.close(1006);
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.now += S(5) - Duration::from_nanos(1);
    t.close(1006);
    assert_eq!(t.scheduled().last().unwrap().0, 2);
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.now += S(5);
    t.close(1006);
    assert_eq!(t.scheduled().last().unwrap().0, 1);
}

/// Item 4: `attempts()` reads 0 while connected, stable or not; a flap
/// continues the count once the connection is gone.
#[test]
fn issue12_4_attempts_reads_zero_while_connected() {
    let mut t = T::new(quiet());
    t.connect();
    assert_eq!(t.s.attempts(), 0);
    for n in 1..=3 {
        t.close(1006);
        assert_eq!(t.s.attempts(), n);
        t.until_dial();
        t.s.handle_dial_ok(t.now);
        t.drain();
        assert_eq!(t.s.attempts(), 0, "connected after {n} flaps");
    }
    t.advance(S(60));
    assert_eq!(t.s.attempts(), 0, "connected and stable");
    t.s.handle_dial_ok(t.now);
    t.now += S(1);
    t.close(1006);
    assert_eq!(t.s.attempts(), 1, "a stable connection ended the outage");
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.close(1006);
    assert_eq!(t.s.attempts(), 2, "a flap continues it");
}

/// Item 5: unworkable floors are refused by `build`, workable ones obey
/// `max_server_delay`.
#[test]
fn issue12_5_close_policy_floors_are_validated_and_capped() {
    use redial_core::{ClosePolicy, CloseRule, ConfigError};
    for floor in [Duration::MAX, S(u64::MAX / 2), S(48 * 3600)] {
        let policy = ClosePolicy::new().with_code(4100, CloseRule::Floor(floor));
        let e = quiet().close_policy(policy).build().unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::OutOfRange {
                    field: "close_policy",
                    ..
                }
            ),
            "{floor:?}: {e}"
        );
    }
    let policy = ClosePolicy::new().with_code(4100, CloseRule::Floor(S(20 * 3600)));
    for seed in 0..20 {
        let b = quiet()
            .seed(seed)
            .close_policy(policy.clone())
            .max_server_delay(S(3600));
        let mut t = T::new(b);
        t.connect();
        t.close(4100);
        let d = t.scheduled()[0].1;
        assert!(d >= S(3600) && d <= S(3960), "{d:?}");
    }
}

/// The latest `Instant` this platform can represent (to within a second).
fn end_of_time() -> Instant {
    let mut at = Instant::now();
    let mut step = Duration::MAX;
    while step >= S(1) {
        match at.checked_add(step) {
            Some(later) => at = later,
            None => step /= 2,
        }
    }
    at
}

/// Item 5: every deadline saturates: a session at the end of representable
/// time runs a whole reconnect cycle without an overflow panic.
#[test]
fn issue12_5_deadlines_saturate_at_the_end_of_time() {
    let mut t = T::with(Config::builder().seed(1), true);
    t.now = end_of_time();
    t.connect();
    t.welcome(false);
    t.s.handle_frame(
        t.now,
        Frame::Binary(
            W::Message {
                offset: 1,
                channel: None,
                payload: Payload::text("m"),
            }
            .to_bytes(),
        ),
    );
    t.s.handle_network_online(t.now);
    t.going_away(u64::MAX, u64::MAX);
    t.close(4010);
    t.s.handle_retry_now(t.now);
    t.drain();
    assert!(t.s.poll_timeout().unwrap() >= t.now);
    t.until_dial();
    assert_eq!(
        t.dials(),
        2,
        "the wait ends by the last representable instant"
    );
    t.s.handle_dial_failed(t.now, DialFailure::http(503, Some(S(u64::MAX / 4))));
    t.drain();
    assert_eq!(t.s.state(), State::Reconnecting);
    t.s.handle_close(t.now);
    t.drain();
    assert_eq!(t.closed(), Some(TerminalReason::ClosedByUser));
}

/// Item 6: a kept channel the user dropped while disconnected is
/// unsubscribed after the resume (PROTOCOL.md 8.3).
#[test]
fn issue12_6_kept_channels_dropped_while_disconnected_are_unsubscribed() {
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome(false);
    t.s.handle_subscribe(t.now, "a").unwrap();
    t.s.handle_subscribe(t.now, "b").unwrap();
    t.close(1006);
    t.s.handle_unsubscribe(t.now, "a").unwrap();
    t.s.handle_subscribe(t.now, "c").unwrap();
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    let from = t.actions.len();
    t.welcome_full(wire::VERSION, true, &["a", "b"]);
    let after: Vec<W> = T {
        actions: t.actions[from..].to_vec(),
        ..T::new(quiet())
    }
    .sent();
    assert!(
        after.contains(&W::Unsubscribe {
            channel: Text::from("a")
        }),
        "{after:?}"
    );
    assert!(after.contains(&W::Subscribe {
        channel: Text::from("c")
    }));
    assert!(!after
        .iter()
        .any(|f| matches!(f, W::Subscribe { channel } if channel.as_str() != "c")));
}

/// Item 7: a handshake that fails before WELCOME does not restart the
/// resume token's lifetime.
#[test]
fn issue12_7_failed_handshakes_do_not_extend_the_resume_token() {
    let hour = S(3600);
    let mut t = T::with(quiet().max_attempts(0), true);
    t.connect();
    t.welcome_with(false, 24 * 3_600_000);
    let lost = t.now;
    t.close(1006);
    t.until_dial();
    t.now = lost + hour * 23;
    t.s.handle_dial_ok(t.now);
    t.drain();
    assert!(hello_has_token(&t), "23 h after the loss");
    t.close(1011); // before WELCOME
    t.now = lost + hour * 25;
    t.s.handle_timeout(t.now);
    t.drain();
    t.s.handle_dial_ok(t.now);
    t.drain();
    assert!(!hello_has_token(&t), "25 h after the last established loss");
}

/// Item 8: a WELCOME above the HELLO's version is a protocol error and a
/// reconnect through the ladder, not the end of the session.
#[test]
fn issue12_8_a_welcome_above_the_hellos_version_is_a_protocol_error() {
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome_full(wire::VERSION + 1, false, &[]);
    assert!(t.events.iter().any(|e| matches!(
        e,
        Event::ProtocolError {
            error: redial_core::ProtocolError::Wire(redial_core::WireError::VersionMismatch {
                chosen: 2,
                offered: 1
            })
        }
    )));
    assert!(t
        .actions
        .iter()
        .any(|a| matches!(a, Action::Close(c) if c.code == 1002)));
    assert_eq!(t.closed(), None);
    assert_eq!(t.s.state(), State::Reconnecting);
    assert_eq!(t.scheduled().len(), 1);
    // The next node speaks our version.
    t.until_dial();
    t.s.handle_dial_ok(t.now);
    t.welcome(false);
    assert_eq!(t.s.state(), State::Connected);
}

/// Item 9: when an ERROR came just before the close, its flag decides, not
/// the close code.
#[test]
fn issue12_9_the_error_flag_beats_the_close_code() {
    let error = |terminal| W::Error {
        code: wire::error_code::RATE_LIMITED,
        terminal,
        reason: Text::from("slow down"),
    };
    // Non-terminal ERROR then 1008: reconnect, stepping the ladder.
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome(false);
    t.frame(error(false));
    t.close(1008);
    assert_eq!(t.disconnects(), vec![true]);
    assert_eq!(t.closed(), None);
    assert_eq!(t.s.state(), State::Reconnecting);
    // 1008 with no ERROR before it, or with other frames in between: terminal.
    for between in [false, true] {
        let mut t = T::with(quiet(), true);
        t.connect();
        t.welcome(false);
        if between {
            t.frame(error(false));
            t.frame(W::Ack { seq: 0 });
        }
        t.close(1008);
        assert_eq!(t.closed(), Some(TerminalReason::PolicyViolation));
    }
    // A terminal ERROR ends the session whatever follows.
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome(false);
    t.frame(error(true));
    assert_eq!(t.closed(), Some(TerminalReason::ServerError(5)));
}

/// Item 11 (PROTOCOL.md 3.3): the client sends ERROR `malformed_frame`
/// before it closes with 1002.
#[test]
fn issue12_11_a_protocol_error_sends_malformed_frame_before_the_1002() {
    let mut t = T::with(quiet(), true);
    t.connect();
    t.welcome(false);
    t.s.handle_frame(t.now, Frame::Text(Text::from("text is not allowed")));
    t.drain();
    let error = t.actions.iter().position(|a| {
        matches!(a, Action::Send(Frame::Binary(b), _)
            if matches!(wire::decode(b.clone(), &Default::default()),
                Ok(W::Error { code: wire::error_code::MALFORMED_FRAME, terminal: false, .. })))
    });
    let close = t
        .actions
        .iter()
        .position(|a| matches!(a, Action::Close(c) if c.code == 1002));
    assert!(error.is_some() && error < close, "{:?}", t.actions);
    // Raw has no ERROR frame: nothing but the close.
    let mut t = T::new(quiet());
    t.connect();
    t.s.handle_frame(t.now, Frame::Binary(Bytes::from_static(b"x")));
    t.drain();
    assert!(!t.actions.iter().any(|a| matches!(a, Action::Send(_, _))));
}

// ----- issue 12: exact timings where the docs give numbers -------------

/// The stuck notice comes at exactly 30.000 s into the outage.
#[test]
fn issue12_stuck_notice_at_exactly_30s() {
    let mut t = T::new(quiet().max_attempts(0));
    t.connect();
    let lost = t.now;
    t.close(1006);
    let stuck = |t: &T| t.events.iter().any(|e| matches!(e, Event::Stuck { .. }));
    while !stuck(&t) {
        let before = t.now;
        t.until_dial();
        if !stuck(&t) {
            assert!(t.now - lost < S(30));
            t.s.handle_dial_failed(t.now, DialFailure::Io("down".into()));
            t.drain();
        } else {
            assert!(before - lost < S(30));
        }
    }
    let for_ = t.events.iter().find_map(|e| match e {
        Event::Stuck { for_, .. } => Some(*for_),
        _ => None,
    });
    assert_eq!(for_, Some(S(30)));
}

/// The pong deadline is the ping plus exactly 10.000 s.
#[test]
fn issue12_pong_deadline_at_ping_plus_exactly_10s() {
    let mut t = T::new(Config::builder().seed(3));
    t.connect();
    let ping_at = t.s.poll_timeout().unwrap();
    t.now = ping_at;
    t.s.handle_timeout(t.now);
    t.drain();
    assert!(t
        .actions
        .iter()
        .any(|a| matches!(a, Action::Send(Frame::Ping(_), _))));
    assert_eq!(t.s.poll_timeout(), Some(ping_at + S(10)));
    t.now = ping_at + S(10) - Duration::from_nanos(1);
    t.s.handle_timeout(t.now);
    t.drain();
    assert_eq!(t.s.state(), State::Connected);
    t.now = ping_at + S(10);
    t.s.handle_timeout(t.now);
    t.drain();
    assert_eq!(t.s.state(), State::Reconnecting);
}

/// 4010 ten times over (never stable): every wait is at least the 30 s
/// floor and the ladder's own lower bound, and no dial comes sooner.
#[test]
fn issue12_close_4010_ten_times_waits_the_floor_every_time() {
    let mut t = T::new(floored());
    t.connect();
    for n in 1..=10 {
        t.close(4010);
        let (attempt, d) = *t.scheduled().last().unwrap();
        assert_eq!(attempt, n);
        let lo = Backoff::grpc().bounds(n).0.max(S(30));
        assert!(d >= lo, "attempt {n}: {d:?} under {lo:?}");
        assert!(t.until_dial() >= lo);
        t.s.handle_dial_ok(t.now);
        t.drain();
    }
}

/// A token the provider delivers resets the count of consecutive failures.
#[test]
fn issue12_token_failure_count_is_reset_by_a_success() {
    let mut t = T::new(quiet().token_provider(true).max_attempts(0));
    t.s.handle_connect(t.now);
    for _ in 0..2 {
        t.s.handle_token_failed(t.now, TokenFailure::transient("down"));
        t.until_dial();
    }
    t.s.handle_token(t.now, AuthToken::new("ok"));
    t.s.handle_dial_failed(t.now, DialFailure::Io("refused".into()));
    t.until_dial();
    for _ in 0..2 {
        t.s.handle_token_failed(t.now, TokenFailure::transient("down"));
        t.until_dial();
    }
    let failing = |t: &T| {
        t.events
            .iter()
            .filter_map(|e| match e {
                Event::TokenProviderFailing { consecutive, .. } => Some(*consecutive),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        failing(&t),
        Vec::<u32>::new(),
        "2 + success + 2 is not 3 in a row"
    );
    t.s.handle_token_failed(t.now, TokenFailure::transient("down"));
    t.drain();
    assert_eq!(failing(&t), vec![3]);
}

/// A provider that never answers times out with the connect timeout, and
/// each timeout counts as a failure.
#[test]
fn issue12_token_provider_timeouts_count_as_failures() {
    let b = quiet()
        .token_provider(true)
        .max_attempts(0)
        .stuck_after(S(3600));
    let mut t = T::new(b);
    t.s.handle_connect(t.now);
    t.drain();
    for n in 1..=3 {
        let asked = t.now;
        let fetches = t
            .actions
            .iter()
            .filter(|a| matches!(a, Action::FetchToken))
            .count();
        assert_eq!(fetches, n);
        assert_eq!(t.s.poll_timeout(), Some(asked + S(10)), "fetch {n}");
        t.until_dial();
    }
    let reasons: Vec<&String> = t
        .events
        .iter()
        .filter_map(|e| match e {
            Event::DialFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons.iter().all(|r| r.contains("timed out")),
        "{reasons:?}"
    );
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::TokenProviderFailing { consecutive: 3, .. })));
}
