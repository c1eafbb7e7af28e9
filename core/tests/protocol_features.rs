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

// ----- protocol timers ------------------------------------------------

mod timers {
    use super::*;
    use redial_core::fuzzing::Prober;
    use redial_core::{Action, State};
    use std::time::Duration;

    const EVERY: Duration = Duration::from_secs(15);
    const DEADLINE: Duration = Duration::from_secs(2);

    impl T {
        /// Steps through the session's own deadlines up to `until`,
        /// feeding `line` every second of it; returns the texts sent.
        fn run_until(&mut self, until: Instant, line: Option<&str>) -> Vec<String> {
            let mut sent = Vec::new();
            loop {
                let tick = self.now + Duration::from_secs(1);
                let next = self.s.poll_timeout().map_or(tick, |at| at.min(tick));
                if next > until {
                    break;
                }
                self.now = next;
                self.s.handle_timeout(self.now);
                if let Some(l) = line {
                    if self.s.state() == State::Connected {
                        self.line(l);
                    }
                }
                while let Some(a) = self.s.poll_action() {
                    if let Action::Send(Frame::Text(t)) = a {
                        sent.push(t.to_string());
                    }
                }
            }
            sent
        }
    }

    #[test]
    fn a_deaf_link_is_found_within_interval_and_deadline_while_data_flows() {
        let mut t = T::connected(Prober::new(EVERY, DEADLINE));
        let start = t.now;
        let sent = t.run_until(start + EVERY + DEADLINE, Some("notification"));
        assert_eq!(sent, ["probe"], "sent at its time, whatever the traffic");
        let events = t.events();
        let lost = events.iter().find_map(|e| match e {
            Event::Disconnected {
                reason,
                will_reconnect,
                ..
            } => Some((reason.clone(), *will_reconnect)),
            _ => None,
        });
        assert_eq!(lost, Some(("probe unanswered".to_owned(), true)));
        assert!(events.iter().any(|e| matches!(e, Event::Message { .. })));
        assert_eq!(t.s.state(), State::Reconnecting);
    }

    #[test]
    fn an_answered_probe_keeps_the_link_and_the_next_comes_on_time() {
        let mut t = T::connected(Prober::new(EVERY, DEADLINE));
        let start = t.now;
        assert_eq!(t.s.poll_timeout(), Some(start + EVERY), "one table");
        let sent = t.run_until(start + EVERY, None);
        assert_eq!(sent, ["probe"]);
        t.now += Duration::from_secs(1);
        t.line("pong");
        let sent = t.run_until(start + EVERY * 2 + DEADLINE * 2, None);
        assert_eq!(sent, ["probe"], "the second probe, then silence");
        assert_eq!(
            t.s.state(),
            State::Reconnecting,
            "the second went unanswered"
        );
    }

    #[test]
    fn asking_for_now_does_not_spin_and_a_drop_forgets_the_timer() {
        let mut t = T::connected(Prober::new(EVERY, DEADLINE));
        t.line("wake-now");
        let at = t.s.poll_timeout().unwrap();
        assert!(at > t.now, "a wake-up for now is taken as 1 ms later");
        t.now = at;
        t.s.handle_timeout(t.now);
        assert!(t.s.poll_timeout().unwrap() > t.now);
        t.s.handle_transport_closed(t.now, None);
        t.events();
        // Waiting: only the backoff (and stuck notice) remain; the probe's
        // deadline went with the transport.
        let backoff = t.s.poll_timeout().unwrap();
        assert!(backoff < t.now + EVERY);
        t.now = backoff;
        t.s.handle_timeout(t.now);
        while let Some(a) = t.s.poll_action() {
            if let Action::Dial { .. } = a {
                t.s.handle_dial_ok(t.now);
            }
        }
        assert_eq!(t.s.state(), State::Connected);
        assert_eq!(
            t.s.poll_timeout(),
            Some(t.now + EVERY),
            "asked again on open"
        );
    }

    #[test]
    fn a_terminal_rule_from_a_timer_ends_the_session() {
        #[derive(Debug)]
        struct Doomed;
        impl Protocol for Doomed {
            fn name(&self) -> &'static str {
                "doomed"
            }
            fn capabilities(&self) -> Capabilities {
                Capabilities::default()
            }
            fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
                out.wake_at(cx.now + Duration::from_secs(1));
                Handshake::Ready
            }
            fn on_frame(
                &mut self,
                _frame: Frame,
                _cx: &FrameContext<'_>,
                _out: &mut Output,
            ) -> Result<(), ProtocolError> {
                Ok(())
            }
            fn publish(&mut self, _msg: Outgoing<'_>, _out: &mut Output) {}
            fn on_timer(
                &mut self,
                _cx: &redial_core::protocol::TimerContext,
                _out: &mut Output,
            ) -> Result<(), redial_core::protocol::LinkDead> {
                Err(
                    redial_core::protocol::LinkDead::new("account gone").with_rule(
                        CloseRule::Terminal(redial_core::TerminalReason::AccountSuspended),
                    ),
                )
            }
        }
        let mut t = T::connected(Doomed);
        t.now += Duration::from_secs(1);
        t.s.handle_timeout(t.now);
        let mut closes = Vec::new();
        while let Some(a) = t.s.poll_action() {
            if let Action::Close(c) = a {
                closes.push(c.code);
            }
        }
        assert_eq!(closes, [1001]);
        assert!(t.events().iter().any(|e| matches!(
            e,
            Event::Closed {
                reason: redial_core::TerminalReason::AccountSuspended,
                ..
            }
        )));
        assert_eq!(t.s.poll_timeout(), None);
    }
}
