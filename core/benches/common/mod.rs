//! Fixtures shared by the core benchmarks: connected sessions and
//! pre-encoded server frames.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redial_core::wire::{self, Welcome};
use redial_core::{Action, Config, Event, Frame, Payload, Raw, ResumeToken, Session, Wire};

/// The default configuration with a fixed seed.
pub fn config() -> Config {
    Config::builder()
        .seed(1)
        .build()
        .expect("default config is valid")
}

/// Drops every pending action and event.
pub fn drain(s: &mut Session) {
    while s.poll_action().is_some() {}
    while s.poll_event().is_some() {}
}

/// A Raw session with an open transport.
pub fn connected_raw(now: Instant) -> Session {
    let mut s = Session::new(config(), Raw::new());
    s.handle_connect(now);
    drain(&mut s);
    s.handle_dial_ok(now);
    drain(&mut s);
    s
}

/// A Wire session past its WELCOME.
pub fn connected_wire(now: Instant) -> Session {
    let mut s = Session::new(config(), Wire);
    s.handle_connect(now);
    drain(&mut s);
    s.handle_dial_ok(now);
    drain(&mut s); // HELLO
    let welcome = wire::Frame::Welcome(Welcome {
        version: wire::VERSION,
        resumed: false,
        session_id: "bench-session".into(),
        name: "bench".into(),
        resume_token: ResumeToken::new(Bytes::from_static(b"resume-token")),
        token_lifetime_ms: 60_000,
        last_client_seq: 0,
        kept: Vec::new(),
    });
    s.handle_frame(now, Frame::Binary(welcome.to_bytes()));
    let mut connected = false;
    while let Some(e) = s.poll_event() {
        connected |= matches!(e, Event::Connected { .. });
    }
    while s.poll_action().is_some() {}
    assert!(connected, "the WELCOME connects the session");
    s
}

/// A binary payload of `len` bytes.
pub fn payload(len: usize) -> Payload {
    Payload::binary(vec![0xA5u8; len])
}

/// A MESSAGE frame (no channel, binary payload of `len` bytes).
pub fn message(offset: u64, len: usize) -> wire::Frame {
    wire::Frame::Message {
        offset,
        channel: None,
        payload: payload(len),
    }
}

/// `frame` as the adapter receives it: tungstenite cuts each message out of
/// its read buffer with `BytesMut::split_to(..).freeze()`, so the `Bytes`
/// is already in the shared (reference-counted) form and slicing it costs
/// a refcount, not an allocation.
pub fn received(frame: &wire::Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.encoded_len());
    frame.encode(&mut buf);
    buf.split().freeze()
}

/// A received MESSAGE frame (see [`received`]).
pub fn message_frame(offset: u64, len: usize) -> Bytes {
    received(&message(offset, len))
}

/// An encoded ACK frame.
pub fn ack_frame(seq: u64) -> Bytes {
    received(&wire::Frame::Ack { seq })
}

/// One outbound message through a connected Wire session: send, take the
/// PUBLISH off the action queue, feed the server's ACK, take the `Acked`
/// event. Returns the written frame so the caller decides where it drops.
pub fn send_and_ack(s: &mut Session, now: Instant, p: Payload, ack: Bytes) -> Option<Action> {
    let seq = s.handle_send(now, p).expect("queue has room");
    let sent = s.poll_action();
    debug_assert!(matches!(sent, Some(Action::Send(Frame::Binary(_), _))));
    s.handle_frame(now, Frame::Binary(ack));
    let acked = s.poll_event();
    debug_assert!(matches!(acked, Some(Event::Acked { seq: a }) if a == seq));
    sent
}

/// One inbound Wire MESSAGE: decode, deliver, take the event (and any
/// cumulative RECEIVED the session writes every `ack_every` messages).
pub fn wire_inbound(s: &mut Session, now: Instant, frame: Bytes) -> Option<Event> {
    s.handle_frame(now, Frame::Binary(frame));
    let e = s.poll_event();
    debug_assert!(matches!(e, Some(Event::Message { .. })));
    while s.poll_action().is_some() {}
    e
}

/// One inbound Raw message: deliver and take the event.
pub fn raw_inbound(s: &mut Session, now: Instant, frame: Bytes) -> Option<Event> {
    s.handle_frame(now, Frame::Binary(frame));
    let e = s.poll_event();
    debug_assert!(matches!(e, Some(Event::Message { .. })));
    e
}

/// A GraphqlWs session past its `connection_ack`, with subscription "1".
#[allow(dead_code)] // the alloc bench does not use it
pub fn connected_graphql(now: Instant) -> Session {
    let mut s = Session::new(config(), redial_core::GraphqlWs::new());
    let spec = redial_core::GraphqlWs::subscription("subscription { x }", None)
        .expect("valid subscription");
    s.handle_subscribe_with(now, "1", spec)
        .expect("subscriptions are supported");
    s.handle_connect(now);
    drain(&mut s);
    s.handle_dial_ok(now);
    drain(&mut s); // connection_init
    s.handle_frame(
        now,
        Frame::Text(redial_core::Text::from(r#"{"type":"connection_ack"}"#)),
    );
    let mut connected = false;
    while let Some(e) = s.poll_event() {
        connected |= matches!(e, Event::Connected { .. });
    }
    while s.poll_action().is_some() {}
    assert!(connected, "the ack connects the session");
    s
}

/// A `next` message for subscription "1" whose whole text is `len` bytes.
#[allow(dead_code)]
pub fn graphql_next(len: usize) -> redial_core::Text {
    let head = r#"{"type":"next","id":"1","payload":{"data":{"x":""#;
    let tail = r#""}}}"#;
    let body = len - head.len() - tail.len();
    let text = format!("{head}{}{tail}", "a".repeat(body));
    assert_eq!(text.len(), len);
    redial_core::Text::from(text)
}

/// One graphql-ws `next` into a connected session, and its event out.
#[allow(dead_code)]
pub fn graphql_inbound(s: &mut Session, now: Instant, text: redial_core::Text) -> Option<Event> {
    s.handle_frame(now, Frame::Text(text));
    let e = s.poll_event();
    debug_assert!(matches!(e, Some(Event::Message { .. })));
    e
}
