//! Frames handed over but never written (`Session::handle_unsent`): Raw
//! messages come back to the queue in order, control frames never come back
//! as data, Wire takes nothing (it replays from its own queue).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use redial_core::wire::{self, Frame as W};
use redial_core::{
    Action, Config, Event, Frame, Payload, Raw, ResumeToken, SendKind, Session, State,
    TerminalReason, Text, Wire,
};

fn session(wire: bool) -> Session {
    let config = Config::builder()
        .seed(7)
        .ping_interval(None)
        .build()
        .unwrap();
    if wire {
        Session::new(config, Wire)
    } else {
        Session::new(config, Raw::new())
    }
}

/// The frames handed over, each with what the session said it is.
fn handed_over(s: &mut Session) -> Vec<(Frame, SendKind)> {
    let mut out = Vec::new();
    while let Some(a) = s.poll_action() {
        if let Action::Send(f, kind) = a {
            out.push((f, kind));
        }
    }
    while s.poll_event().is_some() {}
    out
}

fn sends(s: &mut Session) -> Vec<Frame> {
    frames(&handed_over(s))
}

fn frames(handed: &[(Frame, SendKind)]) -> Vec<Frame> {
    handed.iter().map(|(f, _)| f.clone()).collect()
}

/// Fires timers until the session dials again, then completes the dial.
fn reconnect(s: &mut Session, now: &mut Instant) {
    for _ in 0..10 {
        if s.state() == State::Connected {
            return;
        }
        let Some(at) = s.poll_timeout() else { break };
        *now = (*now).max(at);
        s.handle_timeout(*now);
        let mut dialed = false;
        while let Some(a) = s.poll_action() {
            dialed |= matches!(a, Action::Dial { .. });
        }
        while s.poll_event().is_some() {}
        if dialed {
            s.handle_dial_ok(*now);
            return;
        }
    }
    panic!("no redial");
}

fn text(s: &str) -> Frame {
    Frame::Text(Text::from(s))
}

#[test]
fn raw_messages_not_written_come_back_first_in_order_without_pings() {
    let mut now = Instant::now();
    let mut s = session(false);
    s.handle_connect(now);
    s.handle_dial_ok(now);
    for m in ["a", "b", "c"] {
        s.handle_send(now, Payload::text(m)).unwrap();
    }
    let handed = sends(&mut s);
    assert_eq!(handed, [text("a"), text("b"), text("c")]);
    assert_eq!(s.queued(), 0, "Raw hands messages over and forgets them");

    // "a" was written; a ping came between "b" and "c"; neither was written.
    let unsent = vec![
        (text("b"), SendKind::Message),
        (Frame::Ping(Bytes::from_static(b"p")), SendKind::Control),
        (text("c"), SendKind::Message),
    ];
    assert_eq!(s.handle_unsent(now, unsent), 2);
    assert_eq!((s.queued(), s.queued_bytes()), (2, 2));
    s.handle_transport_closed(now, None);
    assert_eq!(s.state(), State::Reconnecting);
    // Sent during the outage: after the ones handed back.
    s.handle_send(now, Payload::text("d")).unwrap();
    assert!(sends(&mut s).is_empty());

    reconnect(&mut s, &mut now);
    assert_eq!(sends(&mut s), [text("b"), text("c"), text("d")]);
    assert_eq!(s.queued(), 0);
}

#[test]
fn binary_frames_come_back_as_they_were_written() {
    let now = Instant::now();
    let mut s = session(false);
    s.handle_connect(now);
    s.handle_dial_ok(now);
    let bytes = Bytes::from_static(&[0, 159, 146, 150, 255]);
    s.handle_send(now, Payload::binary(bytes.clone())).unwrap();
    let handed = handed_over(&mut s);
    assert_eq!(frames(&handed), [Frame::Binary(bytes.clone())]);
    assert_eq!(s.handle_unsent(now, handed), 1);
    s.handle_transport_closed(now, None);
    let mut now = now;
    reconnect(&mut s, &mut now);
    assert_eq!(sends(&mut s), [Frame::Binary(bytes)]);
}

#[test]
fn messages_handed_back_count_when_the_connection_ends() {
    // A close asked while frames were still unwritten: the drop then finds
    // them queued, so the session reconnects to deliver them (within the
    // close linger) instead of closing with them lost.
    let now = Instant::now();
    let mut s = session(false);
    s.handle_connect(now);
    s.handle_dial_ok(now);
    s.handle_send(now, Payload::text("x")).unwrap();
    let handed = handed_over(&mut s);
    s.handle_close(now);
    assert_eq!(
        s.state(),
        State::Closed,
        "Raw's queue was empty: closed at once"
    );
    let _ = sends(&mut s);
    // Too late: a closed session takes nothing.
    assert_eq!(s.handle_unsent(now, handed), 0);

    let mut s = session(false);
    s.handle_connect(now);
    s.handle_dial_ok(now);
    s.handle_send(now, Payload::text("y")).unwrap();
    let handed = handed_over(&mut s);
    assert_eq!(s.handle_unsent(now, handed), 1);
    s.handle_transport_closed(now, None);
    s.handle_close(now);
    let mut undelivered = None;
    let mut t = now;
    // No connection comes back: the close linger runs out.
    while s.state() != State::Closed {
        t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        while let Some(a) = s.poll_action() {
            if matches!(a, Action::Dial { .. }) {
                s.handle_dial_failed(t, redial_core::DialFailure::Io("refused".into()));
            }
        }
        while let Some(e) = s.poll_event() {
            if let Event::Closed {
                reason,
                undelivered: n,
                ..
            } = e
            {
                assert_eq!(reason, TerminalReason::ClosedByUser);
                undelivered = Some(n);
            }
        }
    }
    assert!(t > now);
    assert_eq!(undelivered, Some(1), "the message handed back is reported");
}

#[test]
fn wire_takes_nothing_back_and_replays_its_own_queue() {
    let mut now = Instant::now();
    let mut s = session(true);
    s.handle_connect(now);
    s.handle_dial_ok(now);
    let welcome = W::Welcome(wire::Welcome {
        version: wire::VERSION,
        resumed: false,
        session_id: Text::from("id"),
        name: Text::from("n"),
        resume_token: ResumeToken::new(Bytes::from_static(b"tok")),
        token_lifetime_ms: 60_000,
        last_client_seq: 0,
        kept: vec![],
    });
    s.handle_frame(now, Frame::Binary(welcome.to_bytes()));
    let _ = sends(&mut s);
    s.handle_send(now, Payload::text("m")).unwrap();
    let handed = handed_over(&mut s);
    assert_eq!(handed.len(), 1);
    assert_eq!(s.handle_unsent(now, handed), 0);
    assert_eq!(s.queued(), 1, "still queued until acked");
    s.handle_transport_closed(now, None);
    reconnect(&mut s, &mut now);
    let hello = sends(&mut s);
    assert!(matches!(
        wire::decode(bytes_of(&hello[0]), &wire::Limits::default()),
        Ok(W::Hello(_))
    ));
    assert_eq!(hello.len(), 1, "nothing but HELLO before the WELCOME");
    s.handle_frame(now, Frame::Binary(welcome.to_bytes()));
    let replay = sends(&mut s);
    assert_eq!(replay.len(), 1, "the PUBLISH once, from the queue");
    assert!(matches!(
        wire::decode(bytes_of(&replay[0]), &wire::Limits::default()),
        Ok(W::Publish { seq: 1, .. })
    ));
}

fn bytes_of(f: &Frame) -> Bytes {
    match f {
        Frame::Binary(b) => b.clone(),
        other => panic!("not binary: {other:?}"),
    }
}

/// A message for the property: text or binary, identified by its number.
fn message(i: usize, binary: bool) -> Payload {
    if binary {
        Payload::binary(Bytes::from(format!("b{i}").into_bytes()))
    } else {
        Payload::text(format!("t{i}"))
    }
}

fn frame_of(p: &Payload) -> Frame {
    match p.text_value() {
        Some(t) => Frame::Text(t),
        None => Frame::Binary(p.bytes().clone()),
    }
}

proptest! {
    /// Any number of messages handed over, any suffix of them not written
    /// (with pings anywhere in it), any messages sent during the outage:
    /// the next transport gets exactly the unwritten messages, in order,
    /// then the later ones, and never a ping as data.
    #[test]
    fn unwritten_suffix_comes_back_in_order(
        kinds in proptest::collection::vec(any::<bool>(), 0..40),
        written in any::<prop::sample::Index>(),
        pings in proptest::collection::vec(any::<bool>(), 0..40),
        later in 0usize..10,
    ) {
        let mut now = Instant::now();
        let mut s = session(false);
        s.handle_connect(now);
        s.handle_dial_ok(now);
        let messages: Vec<Payload> =
            kinds.iter().enumerate().map(|(i, b)| message(i, *b)).collect();
        for m in &messages {
            s.handle_send(now, m.clone()).unwrap();
        }
        let handed = sends(&mut s);
        prop_assert_eq!(&handed, &messages.iter().map(frame_of).collect::<Vec<_>>());
        let w = if handed.is_empty() { 0 } else { written.index(handed.len() + 1) };
        let mut unsent = Vec::new();
        for (j, f) in handed[w..].iter().enumerate() {
            if pings.get(j).copied().unwrap_or(false) {
                unsent.push((Frame::Ping(Bytes::from_static(b"k")), SendKind::Control));
            }
            unsent.push((f.clone(), SendKind::Message));
        }
        prop_assert_eq!(s.handle_unsent(now, unsent), handed.len() - w);
        s.handle_transport_closed(now, None);
        let extra: Vec<Payload> = (0..later).map(|i| message(1000 + i, i % 2 == 0)).collect();
        for m in &extra {
            s.handle_send(now, m.clone()).unwrap();
        }
        now += Duration::from_millis(1);
        reconnect(&mut s, &mut now);
        let mut expected = handed[w..].to_vec();
        expected.extend(extra.iter().map(frame_of));
        prop_assert_eq!(sends(&mut s), expected);
        prop_assert_eq!(s.queued(), 0);
        prop_assert_eq!(s.queued_bytes(), 0);
    }
}

/// A Raw feed's on-connect and resubscribe messages are control frames: if
/// the transport never wrote them they are not queued as data (the next
/// transport sends its own), while the application message among them is.
#[test]
fn control_frames_handed_back_are_not_requeued_as_messages() {
    let config = Config::builder()
        .seed(7)
        .ping_interval(None)
        .build()
        .unwrap();
    let raw = Raw::new().on_connect(Payload::text("auth"));
    let mut s = Session::new(config, raw);
    let mut now = Instant::now();
    s.handle_subscribe_with(now, "btc", Payload::text("sub btc"))
        .unwrap();
    s.handle_connect(now);
    s.handle_send(now, Payload::text("data")).unwrap();
    s.handle_dial_ok(now);
    let handed = handed_over(&mut s);
    let text = |(f, _): &(Frame, SendKind)| match f {
        Frame::Text(t) => t.to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(
        handed.iter().map(text).collect::<Vec<_>>(),
        ["auth", "sub btc", "data"]
    );
    assert_eq!(
        s.handle_unsent(now, handed),
        1,
        "only the message comes back"
    );
    s.handle_transport_closed(now, None);
    now += Duration::from_millis(1);
    reconnect(&mut s, &mut now);
    assert_eq!(
        handed_over(&mut s).iter().map(text).collect::<Vec<_>>(),
        ["auth", "sub btc", "data"],
        "control frames rebuilt once, the message written once"
    );
}

/// More alternating runs of messages and control frames than any bounded
/// record of runs could hold, none of them written: every message comes
/// back, in order, and no control frame does.
#[test]
fn many_alternating_runs_keep_every_message() {
    const ROUNDS: usize = 100;
    let mut now = Instant::now();
    let mut s = session(false);
    s.handle_connect(now);
    s.handle_dial_ok(now);
    let _ = sends(&mut s);
    for i in 0..ROUNDS {
        s.handle_subscribe_with(now, format!("c{i}"), Payload::text(format!("sub c{i}")))
            .unwrap();
        s.handle_send(now, Payload::text(format!("m{i}"))).unwrap();
    }
    let handed = handed_over(&mut s);
    assert_eq!(
        handed.len(),
        2 * ROUNDS,
        "a control frame and a message each"
    );
    assert_eq!(
        s.handle_unsent(now, handed),
        ROUNDS,
        "every message comes back"
    );
    s.handle_transport_closed(now, None);
    now += Duration::from_millis(1);
    reconnect(&mut s, &mut now);
    let written: Vec<String> = sends(&mut s)
        .iter()
        .filter_map(|f| match f {
            Frame::Text(t) if t.as_str().starts_with('m') => Some(t.to_string()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..ROUNDS).map(|i| format!("m{i}")).collect();
    assert_eq!(written, expected, "each message once, in order");
}
