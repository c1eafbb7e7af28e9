//! What follows an inbound message over the size limit (close 1009) and a
//! dial whose certificate TLS rejected: both decided by the close policy.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redial_core::{
    Action, CloseFrame, ClosePolicy, CloseRule, Config, ConfigBuilder, DialFailure, Event, Raw,
    Session, SizeLimit, State, TerminalReason, Wire,
};

fn quiet() -> ConfigBuilder {
    Config::builder().seed(1).ping_interval(None)
}

fn drain(s: &mut Session) -> (Vec<Action>, Vec<Event>) {
    let mut actions = Vec::new();
    let mut events = Vec::new();
    while let Some(a) = s.poll_action() {
        actions.push(a);
    }
    while let Some(e) = s.poll_event() {
        events.push(e);
    }
    (actions, events)
}

fn connected(b: ConfigBuilder) -> (Session, Instant) {
    let now = Instant::now();
    let mut s = Session::new(b.build().unwrap(), Raw::new());
    s.handle_connect(now);
    s.handle_dial_ok(now);
    drain(&mut s);
    assert_eq!(s.state(), State::Connected);
    (s, now)
}

#[test]
fn too_large_closes_1009_and_ends_the_session_by_default() {
    let (mut s, now) = connected(quiet());
    s.handle_message_too_large(now, SizeLimit::Frame, 20 << 20, 16 << 20);
    let (actions, events) = drain(&mut s);
    assert_eq!(
        actions,
        vec![Action::Close(CloseFrame::new(1009, "message too big"))]
    );
    assert_eq!(
        events[0],
        Event::MessageTooLarge {
            limit: SizeLimit::Frame,
            size: 20 << 20,
            max: 16 << 20
        }
    );
    assert!(matches!(
        &events[1],
        Event::Disconnected { code: Some(1009), will_reconnect: false, reason }
            if reason == "inbound frame of 20971520 bytes over the 16777216-byte limit"
    ));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Closed {
            reason: TerminalReason::MessageTooLarge,
            code: Some(1009),
            ..
        }
    )));
    assert_eq!(s.state(), State::Closed);
}

#[test]
fn too_large_follows_a_1009_override() {
    let policy = ClosePolicy::new().with_code(1009, CloseRule::Reconnect { honour_hint: false });
    let (mut s, now) = connected(quiet().close_policy(policy));
    s.handle_message_too_large(now, SizeLimit::Message, 11, 10);
    let (actions, events) = drain(&mut s);
    assert_eq!(
        actions,
        vec![Action::Close(CloseFrame::new(1009, "message too big"))]
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ReconnectScheduled { attempt: 1, .. })));
    assert_eq!(s.state(), State::Reconnecting);
}

#[test]
fn too_large_is_ignored_without_an_open_transport() {
    let now = Instant::now();
    let mut s = Session::new(quiet().build().unwrap(), Wire);
    s.handle_message_too_large(now, SizeLimit::Message, 11, 10);
    assert_eq!(drain(&mut s), (vec![], vec![]));
    s.handle_connect(now);
    drain(&mut s);
    // Dialing: no transport yet, nothing to close.
    s.handle_message_too_large(now, SizeLimit::Message, 11, 10);
    let (actions, events) = drain(&mut s);
    assert!(
        actions.is_empty() && events.is_empty(),
        "{actions:?} {events:?}"
    );
    assert_eq!(s.state(), State::Connecting);
}

#[test]
fn a_server_1009_is_terminal_too() {
    let (mut s, now) = connected(quiet());
    s.handle_transport_closed(now, Some(CloseFrame::new(1009, "too big")));
    drain(&mut s);
    assert_eq!(s.state(), State::Closed);
}

fn dial_rejected(b: ConfigBuilder) -> (Session, Vec<Event>) {
    let now = Instant::now();
    let mut s = Session::new(b.build().unwrap(), Raw::new());
    s.handle_connect(now);
    drain(&mut s);
    s.handle_dial_failed(
        now,
        DialFailure::Certificate("invalid peer certificate: UnknownIssuer".into()),
    );
    let (_, events) = drain(&mut s);
    (s, events)
}

#[test]
fn rejected_certificate_is_terminal_by_default() {
    let (s, events) = dial_rejected(quiet());
    assert_eq!(s.state(), State::Closed);
    let detail = "certificate rejected: invalid peer certificate: UnknownIssuer";
    assert!(matches!(
        &events[0],
        Event::DialFailed { attempt: 0, status: None, reason, .. } if reason == detail
    ));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Closed { reason: TerminalReason::CertificateRejected, code: None, detail: d, .. }
            if d == detail
    )));
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::ReconnectScheduled { .. })));
}

#[test]
fn rejected_certificate_follows_the_override() {
    let ladder =
        ClosePolicy::new().with_certificate_rule(CloseRule::Reconnect { honour_hint: false });
    let (s, events) = dial_rejected(quiet().close_policy(ladder));
    assert_eq!(s.state(), State::Reconnecting);
    let delay = events.iter().find_map(|e| match e {
        Event::ReconnectScheduled { attempt: 1, delay } => Some(*delay),
        _ => None,
    });
    // The ladder's first step: within its window.
    let first = s.config().backoff().bounds(1).1;
    assert!(delay.unwrap() <= first, "{delay:?}");

    let floor = Duration::from_secs(60);
    let floored = ClosePolicy::new().with_certificate_rule(CloseRule::Floor(floor));
    let (_, events) = dial_rejected(quiet().close_policy(floored));
    let delay = events
        .iter()
        .find_map(|e| match e {
            Event::ReconnectScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .unwrap();
    assert!(delay >= floor && delay <= floor + floor / 10, "{delay:?}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn rule() -> impl Strategy<Value = CloseRule> {
        prop_oneof![
            Just(CloseRule::Terminal(TerminalReason::MessageTooLarge)),
            Just(CloseRule::Terminal(TerminalReason::CloseCode(1009))),
            Just(CloseRule::Reconnect { honour_hint: false }),
            Just(CloseRule::StepLadder { honour_hint: true }),
            (1u64..120).prop_map(|s| CloseRule::Floor(Duration::from_secs(s))),
        ]
    }

    /// The first delay after `events`, if one was scheduled.
    fn first_delay(events: &[Event]) -> Option<Duration> {
        events.iter().find_map(|e| match e {
            Event::ReconnectScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
    }

    fn check(rule: &CloseRule, s: &Session, events: &[Event]) -> Result<(), TestCaseError> {
        match rule {
            CloseRule::Terminal(why) => {
                prop_assert_eq!(s.state(), State::Closed);
                let closed = events
                    .iter()
                    .any(|e| matches!(e, Event::Closed { reason, .. } if reason == why));
                prop_assert!(closed, "{:?}", events);
                prop_assert_eq!(first_delay(events), None);
            }
            CloseRule::Floor(floor) => {
                prop_assert_eq!(s.state(), State::Reconnecting);
                let d = first_delay(events).unwrap_or_default();
                // No sooner than the floor; the ladder's own draw may be later.
                let ladder = s.config().backoff().bounds(1).1;
                let upper = (*floor + *floor / 10).max(ladder);
                prop_assert!(d >= *floor && d <= upper, "{:?}", d);
            }
            _ => {
                prop_assert_eq!(s.state(), State::Reconnecting);
                prop_assert!(first_delay(events).is_some());
            }
        }
        Ok(())
    }

    proptest! {
        /// Whatever the 1009 rule, an over-limit message is closed with
        /// 1009 exactly once, reported first, and the rule is followed.
        #[test]
        fn too_large_follows_any_rule(
            rule in rule(),
            seed in any::<u64>(),
            max in 1u64..(1 << 40),
            over in 1u64..(1 << 20),
            frame in any::<bool>(),
        ) {
            let policy = ClosePolicy::new().with_code(1009, rule.clone());
            let (mut s, now) = connected(quiet().seed(seed).close_policy(policy));
            let limit = if frame { SizeLimit::Frame } else { SizeLimit::Message };
            s.handle_message_too_large(now, limit, max + over, max);
            let (actions, events) = drain(&mut s);
            let closes: Vec<_> = actions
                .into_iter()
                .filter(|a| matches!(a, Action::Close(_)))
                .collect();
            prop_assert_eq!(
                closes,
                vec![Action::Close(CloseFrame::new(1009, "message too big"))]
            );
            prop_assert_eq!(
                &events[0],
                &Event::MessageTooLarge { limit, size: max + over, max }
            );
            check(&rule, &s, &events)?;
        }

        /// Whatever the certificate rule, a rejected certificate follows it
        /// and is reported once as a dial failure.
        #[test]
        fn rejected_certificate_follows_any_rule(rule in rule(), seed in any::<u64>()) {
            let policy = ClosePolicy::new().with_certificate_rule(rule.clone());
            let (s, events) = dial_rejected(quiet().seed(seed).close_policy(policy));
            let failures = events
                .iter()
                .filter(|e| matches!(e, Event::DialFailed { .. }))
                .count();
            prop_assert_eq!(failures, 1);
            check(&rule, &s, &events)?;
        }
    }
}
