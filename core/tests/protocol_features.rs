//! What a protocol can tell the session beyond data: signed error codes
//! and server-assigned subscription ids, driven through `Session` with a
//! scripted protocol whose server speaks in short text lines.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use redial_core::close_policy::CloseRule;
use redial_core::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output,
};
use redial_core::{Config, Event, Frame, Payload, Protocol, ProtocolError, Session, Text};

/// Server lines: `sub KEY ID` confirms with a server id, `refuse KEY CODE`
/// refuses, `error CODE` is a server error, `fail CODE` ends the
/// connection.
#[derive(Debug, Default)]
struct Scripted;

fn field<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<&'a str, ProtocolError> {
    words
        .next()
        .ok_or_else(|| ProtocolError::invalid("scripted", "missing field"))
}

fn code<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<i64, ProtocolError> {
    field(words)?
        .parse()
        .map_err(|_| ProtocolError::invalid("scripted", "bad code"))
}

impl Protocol for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_subscriptions()
    }
    fn on_open(&mut self, _cx: &OpenContext<'_>, _out: &mut Output) -> Handshake {
        Handshake::Ready
    }
    fn on_frame(
        &mut self,
        frame: Frame,
        _cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let Frame::Text(text) = frame else {
            return Err(ProtocolError::invalid("scripted", "binary"));
        };
        let mut words = text.as_str().split(' ');
        match field(&mut words)? {
            "sub" => {
                let key = Text::from(field(&mut words)?);
                let id = Text::from(field(&mut words)?);
                out.fact(Inbound::Subscribed {
                    key,
                    server_id: Some(id),
                });
            }
            "refuse" => {
                let key = Text::from(field(&mut words)?);
                let code = code(&mut words)?;
                out.fact(Inbound::SubscribeFailed {
                    key,
                    code,
                    reason: Text::from("refused"),
                });
            }
            "error" => out.fact(Inbound::ServerError {
                code: code(&mut words)?,
                reason: Text::from("said no"),
            }),
            "fail" => out.fact(Inbound::Failed {
                code: code(&mut words)?,
                reason: Text::from("gone"),
                rule: CloseRule::Reconnect { honour_hint: false },
            }),
            _ => out.fact(Inbound::data(Payload::text(text))),
        }
        Ok(())
    }
    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        out.send_payload(msg.payload);
    }
    fn subscribe(&mut self, key: &Text, _spec: &Payload, out: &mut Output) {
        out.send(Frame::Text(Text::from(format!("subscribe {key}"))));
    }
}

struct T {
    s: Session,
    now: Instant,
}

impl T {
    fn connected(p: impl Protocol) -> Self {
        let config = Config::builder()
            .seed(5)
            .ping_interval(None)
            .build()
            .unwrap();
        let mut t = T {
            s: Session::new(config, p),
            now: Instant::now(),
        };
        t.s.handle_connect(t.now);
        t.s.handle_dial_ok(t.now);
        t.events();
        t
    }

    fn line(&mut self, line: &str) {
        self.s.handle_frame(self.now, Frame::Text(Text::from(line)));
    }

    fn events(&mut self) -> Vec<Event> {
        while self.s.poll_action().is_some() {}
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }
}

#[test]
fn negative_codes_and_server_ids_reach_the_application() {
    let mut t = T::connected(Scripted);
    t.s.handle_subscribe_with(t.now, "heads", Payload::text("[]"))
        .unwrap();
    t.s.handle_subscribe_with(t.now, "nonsense", Payload::text("[]"))
        .unwrap();
    t.line("sub heads 0x9cef478923ff08bf67fde6c64013158d");
    t.line("refuse nonsense -32602");
    t.line("error -32000");
    let events = t.events();
    assert!(events.contains(&Event::Subscribed {
        channel: Text::from("heads"),
        server_id: Some(Text::from("0x9cef478923ff08bf67fde6c64013158d")),
    }));
    assert!(events.contains(&Event::SubscribeFailed {
        channel: Text::from("nonsense"),
        code: -32602,
        reason: Text::from("refused"),
    }));
    assert!(events.contains(&Event::ServerError {
        code: -32000,
        reason: Text::from("said no"),
    }));
    assert_eq!(
        t.s.subscriptions().map(Text::as_str).collect::<Vec<_>>(),
        ["heads"],
        "the refused one is dropped from the set"
    );
}

#[test]
fn a_failed_code_that_is_no_close_code_leaves_the_close_code_empty() {
    let mut t = T::connected(Scripted);
    t.line("fail -32603");
    let events = t.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Disconnected { code: None, reason, will_reconnect: true } if reason == "gone"
    )));
    let mut t = T::connected(Scripted);
    t.line("fail 4321");
    assert!(t.events().iter().any(|e| matches!(
        e,
        Event::Disconnected {
            code: Some(4321),
            ..
        }
    )));
}
