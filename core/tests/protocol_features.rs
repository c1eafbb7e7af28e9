//! What a protocol can tell the session beyond data: signed error codes,
//! server-assigned subscription ids, timers of its own and calls, driven
//! through `Session` with scripted protocols whose servers speak in short
//! text lines.

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
        Capabilities::default().with_subscriptions().with_calls()
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
    fn call(&mut self, id: redial_core::CallId, request: &Payload, out: &mut Output) {
        let request = request.as_text().unwrap_or("");
        out.send(Frame::Text(Text::from(format!("call {id} {request}"))));
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
    let failed = events
        .iter()
        .position(|e| {
            *e == Event::ServerFailed {
                code: -32603,
                reason: Text::from("gone"),
            }
        })
        .expect("the signed code, typed");
    let lost = events.iter().position(|e| {
        matches!(
            e,
            Event::Disconnected { code: None, reason, will_reconnect: true } if reason == "gone"
        )
    });
    assert!(lost.is_some_and(|lost| lost > failed), "{events:?}");
    let mut t = T::connected(Scripted);
    t.line("fail 4321");
    let events = t.events();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            code: Some(4321),
            ..
        }
    )));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ServerFailed { .. })),
        "a close code comes as the close code"
    );
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
                    if let Action::Send(Frame::Text(t), _) = a {
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

// ----- calls ------------------------------------------------------------

mod calls {
    use super::*;
    use redial_core::fuzzing::Prober;
    use redial_core::{Action, CallError, CallId, CallOptions, SendError, State};
    use std::time::Duration;

    fn prober() -> Prober {
        // Probes far away: only calls are under test.
        Prober::new(Duration::from_secs(3600), Duration::from_secs(1))
    }

    impl T {
        fn sent(&mut self) -> Vec<String> {
            let mut sent = Vec::new();
            while let Some(a) = self.s.poll_action() {
                if let Action::Send(Frame::Text(t), _) = a {
                    sent.push(t.to_string());
                }
            }
            sent
        }

        fn done(&mut self) -> Vec<(CallId, Result<Payload, CallError>)> {
            std::iter::from_fn(|| self.s.poll_event())
                .filter_map(|e| match e {
                    Event::CallDone { id, result } => Some((id, result)),
                    _ => None,
                })
                .collect()
        }

        fn call(&mut self, request: &str, options: CallOptions) -> CallId {
            self.s
                .handle_call(self.now, Payload::text(request), options)
                .unwrap()
        }

        /// Drops the link.
        fn redial(&mut self) {
            self.s.handle_transport_closed(self.now, None);
        }

        /// Waits out the backoff and opens the next link.
        fn open_next(&mut self) {
            loop {
                let at = self.s.poll_timeout().unwrap();
                self.now = self.now.max(at);
                self.s.handle_timeout(self.now);
                let mut dialed = false;
                while let Some(a) = self.s.poll_action() {
                    dialed |= matches!(a, Action::Dial { .. });
                }
                if dialed {
                    self.s.handle_dial_ok(self.now);
                    return;
                }
            }
        }
    }

    #[test]
    fn replies_and_rejections_end_their_calls_once() {
        let mut t = T::connected(prober());
        let a = t.call("eth_blockNumber", CallOptions::new());
        let b = t.call("eth_subscribe", CallOptions::new());
        assert_eq!(t.sent(), ["call 1 eth_blockNumber", "call 2 eth_subscribe"]);
        t.line("reject 2 -32602");
        t.line("reply 1 0x10");
        t.line("reply 1 0x11"); // a second answer is not a second end
        assert_eq!(
            t.done(),
            [
                (
                    b,
                    Err(CallError::Rejected {
                        code: -32602,
                        message: Text::from("rejected")
                    })
                ),
                (a, Ok(Payload::text("0x10"))),
            ]
        );
        assert_eq!(t.s.calls(), 0);
        assert_eq!(t.s.state(), State::Connected);
    }

    #[test]
    fn a_call_times_out_and_its_late_reply_is_dropped() {
        let mut t = T::connected(prober());
        let a = t.call("slow", CallOptions::new().timeout(Duration::from_secs(2)));
        t.sent();
        assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(2)));
        t.now += Duration::from_secs(2);
        t.s.handle_timeout(t.now);
        assert_eq!(t.done(), [(a, Err(CallError::Timeout))]);
        t.line("reply 1 late");
        assert!(t.events().iter().all(|e| !matches!(
            e,
            Event::CallDone { .. } | Event::ProtocolError { .. } | Event::Message { .. }
        )));
        // The default timeout is the config's.
        let b = t.call("default", CallOptions::new());
        t.now += Duration::from_secs(30);
        t.s.handle_timeout(t.now);
        assert_eq!(t.done(), [(b, Err(CallError::Timeout))]);
    }

    #[test]
    fn a_drop_fails_a_call_in_flight_and_repeats_a_repeatable_one_once() {
        let mut t = T::connected(prober());
        let once = t.call("send_tx", CallOptions::new());
        let read = t.call("block", CallOptions::new().repeatable(true));
        t.sent();
        t.redial();
        assert_eq!(t.done(), [(once, Err(CallError::ConnectionLost))]);
        let waiting = t.call("later", CallOptions::new());
        t.open_next();
        assert_eq!(
            t.sent(),
            ["call 2 block", "call 3 later"],
            "the repeat, then the call made while away; never send_tx"
        );
        t.redial();
        assert_eq!(
            t.done(),
            [
                (read, Err(CallError::ConnectionLost)),
                (waiting, Err(CallError::ConnectionLost))
            ],
            "sent once more, not twice more"
        );
    }

    #[test]
    fn calls_go_out_after_the_resubscriptions() {
        let config = Config::builder()
            .seed(5)
            .ping_interval(None)
            .build()
            .unwrap();
        let mut t = T {
            s: Session::new(config, Scripted),
            now: Instant::now(),
        };
        t.s.handle_subscribe_with(t.now, "heads", Payload::text("[]"))
            .unwrap();
        t.call("eth_chainId", CallOptions::new());
        t.s.handle_send(t.now, Payload::text("queued")).unwrap();
        t.s.handle_connect(t.now);
        t.s.handle_dial_ok(t.now);
        assert_eq!(
            t.sent(),
            ["subscribe heads", "call 1 eth_chainId", "queued"]
        );
    }

    #[test]
    fn calls_are_bounded_refused_without_the_capability_and_closed_with_the_session() {
        let config = Config::builder()
            .seed(5)
            .ping_interval(None)
            .max_calls(2)
            .build()
            .unwrap();
        let mut s = Session::new(config, prober());
        let now = Instant::now();
        s.handle_call(now, Payload::text("a"), CallOptions::new())
            .unwrap();
        s.handle_call(now, Payload::text("b"), CallOptions::new())
            .unwrap();
        assert_eq!(
            s.handle_call(now, Payload::text("c"), CallOptions::new()),
            Err(SendError::TooManyCalls { max: 2 })
        );
        s.handle_close(now);
        let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
        let ends: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::CallDone { result, .. } => Some(result.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ends, [Err(CallError::Closed), Err(CallError::Closed)]);
        assert!(matches!(events.last(), Some(Event::Closed { .. })));
        assert_eq!(
            s.handle_call(now, Payload::text("d"), CallOptions::new()),
            Err(SendError::Closed)
        );
        let mut raw = Session::new(Config::default(), redial_core::Raw::new());
        assert!(matches!(
            raw.handle_call(now, Payload::text("x"), CallOptions::new()),
            Err(SendError::Unsupported { what: "calls", .. })
        ));
    }
}
