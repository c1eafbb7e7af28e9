//! Endpoint choice: the session picks the endpoint of every dial.
//!
//! Rotate after a failure there (a failed dial, a connection lost before
//! `stable_after`, a GOING_AWAY), stay after a connection that held, and
//! start a fleet spread over the list by seed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use redial_core::wire::{self, Frame as W};
use redial_core::{
    Action, Backoff, CloseFrame, Config, DialFailure, Event, Frame, Raw, ResumeToken, Session,
    Text, TokenFailure, Wire,
};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// What happens to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The dial fails (connection refused).
    DialFails,
    /// The server answers the upgrade with 503.
    Http503,
    /// Connected, lost before `stable_after`.
    ShortLived,
    /// Connected, stays up past `stable_after`, then lost.
    Stable,
    /// The token provider fails (says nothing about the endpoint).
    TokenFails,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::DialFails),
        Just(Outcome::Http503),
        Just(Outcome::ShortLived),
        Just(Outcome::Stable),
        Just(Outcome::TokenFails),
    ]
}

fn config(endpoints: usize, seed: u64, token: bool) -> Config {
    Config::builder()
        .seed(seed)
        .endpoints(endpoints)
        .backoff(Backoff::full_jitter(MS(10), MS(100)))
        .max_attempts(0)
        .ping_interval(None)
        .stable_after(MS(1000))
        .token_provider(token)
        .build()
        .unwrap()
}

/// Runs `outcomes` through a Raw session; returns the endpoint of every
/// dial, checking that every DialFailed and Connected names the endpoint of
/// its dial.
fn run(endpoints: usize, seed: u64, outcomes: &[Outcome]) -> Vec<usize> {
    let token = outcomes.contains(&Outcome::TokenFails);
    let mut s = Session::new(config(endpoints, seed, token), Raw::new());
    let mut now = Instant::now();
    let mut dialed = Vec::new();
    s.handle_connect(now);
    let mut next = outcomes.iter();
    let mut current = None;
    loop {
        while let Some(a) = s.poll_action() {
            match a {
                Action::FetchToken => {
                    current = Some(s.endpoint());
                    match next.clone().next() {
                        Some(Outcome::TokenFails) => {
                            next.next();
                            s.handle_token_failed(now, TokenFailure::transient("down"));
                        }
                        _ => s.handle_token(now, redial_core::AuthToken::new("t")),
                    };
                }
                Action::Dial { endpoint, .. } => {
                    assert!(endpoint < endpoints);
                    assert_eq!(endpoint, s.endpoint());
                    dialed.push(endpoint);
                    current = Some(endpoint);
                    match next.next() {
                        None => return dialed,
                        Some(Outcome::DialFails) => {
                            s.handle_dial_failed(now, DialFailure::Io("connection refused".into()))
                        }
                        Some(Outcome::Http503) => s.handle_dial_failed(
                            now,
                            DialFailure::Http {
                                status: 503,
                                retry_after: None,
                            },
                        ),
                        Some(Outcome::ShortLived) => {
                            s.handle_dial_ok(now);
                            now += MS(999);
                            s.handle_timeout(now);
                            s.handle_transport_closed(now, None);
                        }
                        Some(Outcome::Stable) => {
                            s.handle_dial_ok(now);
                            now += MS(1000);
                            s.handle_timeout(now);
                            s.handle_transport_closed(now, Some(CloseFrame::new(1006, "gone")));
                        }
                        Some(Outcome::TokenFails) => {
                            unreachable!("token outcomes are taken at the fetch")
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(e) = s.poll_event() {
            match e {
                Event::DialFailed { endpoint, .. } | Event::Connected { endpoint, .. } => {
                    assert_eq!(Some(endpoint), current, "{e:?}");
                }
                Event::Closed { .. } => panic!("closed: {e:?}"),
                _ => {}
            }
        }
        let at = s.poll_timeout().unwrap();
        now = now.max(at);
        s.handle_timeout(now);
    }
}

/// The endpoints the rule expects for `outcomes`, from `start`.
fn expected(endpoints: usize, start: usize, outcomes: &[Outcome]) -> Vec<usize> {
    let mut at = start;
    let mut out = vec![];
    for o in outcomes {
        match o {
            Outcome::TokenFails => continue,
            Outcome::Stable => out.push(at),
            _ => {
                out.push(at);
                at = (at + 1) % endpoints;
            }
        }
    }
    out.push(at);
    out
}

#[test]
fn a_failed_dial_moves_to_the_next_endpoint_and_wraps() {
    let start = run(3, 7, &[])[0];
    let got = run(3, 7, &[Outcome::DialFails; 4]);
    let want: Vec<usize> = (0..5).map(|i| (start + i) % 3).collect();
    assert_eq!(got, want);
}

#[test]
fn a_stable_connection_keeps_its_endpoint() {
    let got = run(2, 1, &[Outcome::Stable; 3]);
    assert!(got.iter().all(|&e| e == got[0]), "{got:?}");
}

#[test]
fn a_connection_that_did_not_last_moves_on() {
    let got = run(2, 1, &[Outcome::ShortLived, Outcome::ShortLived]);
    assert_eq!(got, [got[0], 1 - got[0], got[0]]);
}

#[test]
fn a_token_failure_does_not_move() {
    let got = run(2, 3, &[Outcome::TokenFails, Outcome::TokenFails]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], run(2, 3, &[])[0]);
}

#[test]
fn one_endpoint_is_always_zero() {
    let got = run(
        1,
        99,
        &[Outcome::DialFails, Outcome::ShortLived, Outcome::Stable],
    );
    assert_eq!(got, [0, 0, 0, 0]);
}

#[test]
fn going_away_moves_a_stable_client_on() {
    let mut s = Session::new(config(2, 5, false), Wire);
    let mut now = Instant::now();
    s.handle_connect(now);
    let first = s.endpoint();
    while s.poll_action().is_some() {}
    s.handle_dial_ok(now);
    let welcome = W::Welcome(wire::Welcome {
        version: wire::VERSION,
        resumed: false,
        session_id: Text::from("id"),
        name: Text::from("calm-heron-7"),
        resume_token: ResumeToken::new(Bytes::from_static(b"tok")),
        token_lifetime_ms: 60_000,
        last_client_seq: 0,
        kept: vec![],
    });
    s.handle_frame(now, Frame::Binary(welcome.to_bytes()));
    now += MS(10_000);
    s.handle_timeout(now);
    let away = W::GoingAway {
        retry_after_ms: 0,
        window_ms: 0,
    };
    s.handle_frame(now, Frame::Binary(away.to_bytes()));
    s.handle_transport_closed(now, Some(CloseFrame::new(1001, "deploy")));
    let mut dial = None;
    for _ in 0..10 {
        while let Some(a) = s.poll_action() {
            if let Action::Dial { endpoint, .. } = a {
                dial = Some(endpoint);
            }
        }
        if dial.is_some() {
            break;
        }
        now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
    }
    assert_eq!(dial, Some(1 - first));
}

#[test]
fn ten_thousand_seeds_start_spread_evenly_over_four_endpoints() {
    let mut counts = [0u32; 4];
    for seed in 0..10_000 {
        let s = Session::new(config(4, seed, false), Raw::new());
        counts[s.endpoint()] += 1;
    }
    // 2,500 each; the binomial standard deviation is 43: 5 sigma.
    for c in counts {
        assert!(c.abs_diff(2_500) < 220, "{counts:?}");
    }
}

#[test]
fn the_endpoint_does_not_change_the_jitter() {
    // Adding endpoints must not shift the ladder's draws (fleet simulations
    // and recorded traces stay comparable).
    let delays = |n| {
        let mut s = Session::new(config(n, 11, false), Raw::new());
        let mut now = Instant::now();
        s.handle_connect(now);
        let mut out = vec![];
        while out.len() < 5 {
            while let Some(a) = s.poll_action() {
                if matches!(a, Action::Dial { .. }) {
                    s.handle_dial_failed(now, DialFailure::Io("refused".into()));
                }
            }
            while let Some(e) = s.poll_event() {
                if let Event::ReconnectScheduled { delay, .. } = e {
                    out.push(delay);
                }
            }
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
        }
        out
    };
    assert_eq!(delays(1), delays(3));
}

proptest! {
    /// Whatever happens to each attempt, every dial goes where the rule
    /// says: the next endpoint after a failure there, the same after a
    /// connection that held, unchanged by a token provider's failure.
    #[test]
    fn every_dial_follows_the_rotation_rule(
        endpoints in 1usize..6,
        seed in any::<u64>(),
        outcomes in proptest::collection::vec(outcome(), 0..40),
    ) {
        let got = run(endpoints, seed, &outcomes);
        let start = got[0];
        prop_assert_eq!(got, expected(endpoints, start, &outcomes));
    }

    /// The start is a function of the seed alone.
    #[test]
    fn the_start_is_deterministic(endpoints in 1usize..10, seed in any::<u64>()) {
        let a = Session::new(config(endpoints, seed, false), Raw::new()).endpoint();
        let b = Session::new(config(endpoints, seed, false), Raw::new()).endpoint();
        prop_assert_eq!(a, b);
        prop_assert!(a < endpoints);
    }
}
