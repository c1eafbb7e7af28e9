//! The protocols on the session layer, driven through `Session` with
//! scripted frames: Raw's resubscribe, on-connect messages and heartbeat,
//! graphql-transport-ws and NATS.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redial_core::{
    Action, CloseFrame, Config, ConfigBuilder, Event, Frame, Headers, Payload, Protocol, Raw,
    RawHeartbeat, SendError, Session, State, Text,
};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A session, what it did, and a clock.
struct T {
    s: Session,
    now: Instant,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl T {
    fn new(b: ConfigBuilder, p: impl Protocol) -> Self {
        T {
            s: Session::new(b.build().unwrap(), p),
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

    /// Takes what was sent (text as is, binary as `bin:<len>`, pings as
    /// `PING`) since the last call.
    fn sent(&mut self) -> Vec<String> {
        self.drain();
        std::mem::take(&mut self.actions)
            .into_iter()
            .filter_map(|a| match a {
                Action::Send(Frame::Text(t)) => Some(t.to_string()),
                Action::Send(Frame::Binary(b)) => Some(format!("bin:{}", b.len())),
                Action::Send(Frame::Ping(_)) => Some("PING".to_owned()),
                Action::Close(c) => Some(format!("close:{}", c.code)),
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    fn open(&mut self) {
        if self.s.state() == State::Idle {
            self.s.handle_connect(self.now);
        }
        self.s.handle_dial_ok(self.now);
    }

    fn text(&mut self, t: &str) {
        self.s.handle_frame(self.now, Frame::Text(Text::from(t)));
    }

    fn drop_link(&mut self) {
        self.s.handle_transport_closed(self.now, None);
    }

    fn close(&mut self, code: u16) {
        self.s
            .handle_transport_closed(self.now, Some(CloseFrame::new(code, "server says")));
    }

    /// Fires timers until the next dial, then opens the socket.
    fn reconnect(&mut self) {
        self.drain();
        for _ in 0..20 {
            let Some(at) = self.s.poll_timeout() else {
                break;
            };
            self.now = self.now.max(at);
            self.s.handle_timeout(self.now);
            while let Some(a) = self.s.poll_action() {
                if matches!(a, Action::Dial { .. }) {
                    self.s.handle_dial_ok(self.now);
                    return;
                }
                self.actions.push(a);
            }
        }
        panic!("no dial");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }
}

fn quiet() -> ConfigBuilder {
    Config::builder().seed(3).ping_interval(None)
}

// ----- Raw ------------------------------------------------------------

#[test]
fn wire_still_refuses_a_channel_of_256_bytes() {
    let mut t = T::new(quiet(), redial_core::Wire);
    let ok = "c".repeat(255);
    let long = "c".repeat(256);
    t.s.handle_subscribe(t.now, ok.as_str()).unwrap();
    t.s.handle_publish(t.now, ok.as_str(), Payload::text("x"))
        .unwrap();
    let refused = Err(SendError::InvalidChannel { len: 256, max: 255 });
    assert_eq!(t.s.handle_subscribe(t.now, long.as_str()), refused);
    assert_eq!(
        t.s.handle_publish(t.now, long.as_str(), Payload::text("x"))
            .map(|_| ()),
        refused
    );
    assert_eq!(
        t.s.send_limits()
            .check(Some(&Text::from(long)), &Payload::text("x")),
        refused
    );
}

#[test]
fn raw_resubscribes_after_every_connect_before_the_queue() {
    let raw = Raw::new()
        .on_connect(Payload::text("auth"))
        .on_connect(Payload::text("hello"));
    let mut t = T::new(quiet(), raw);
    t.s.handle_subscribe_with(t.now, "btc", Payload::text("sub btc"))
        .unwrap();
    t.s.handle_send(t.now, Payload::text("queued")).unwrap();
    t.open();
    assert_eq!(t.sent(), ["auth", "hello", "sub btc", "queued"]);
    t.s.handle_subscribe_with(t.now, "eth", Payload::text("sub eth"))
        .unwrap();
    assert_eq!(t.sent(), ["sub eth"], "sent at once while connected");
    // The same key with the same message again is not a new subscription.
    t.s.handle_subscribe_with(t.now, "eth", Payload::text("sub eth"))
        .unwrap();
    assert!(t.sent().is_empty());

    t.drop_link();
    t.s.handle_send(t.now, Payload::text("while away")).unwrap();
    t.reconnect();
    assert_eq!(
        t.sent(),
        ["auth", "hello", "sub btc", "sub eth", "while away"],
        "every subscription renewed (in key order) before what was queued"
    );
}

#[test]
fn raw_unsubscribe_sends_its_message_and_is_not_renewed() {
    let mut t = T::new(quiet(), Raw::new());
    t.s.handle_subscribe_with(t.now, "btc", Payload::text("sub btc"))
        .unwrap();
    t.open();
    assert_eq!(t.sent(), ["sub btc"]);
    t.s.handle_unsubscribe_with(t.now, "btc", Some(Payload::text("unsub btc")))
        .unwrap();
    assert_eq!(t.sent(), ["unsub btc"]);
    assert_eq!(t.s.subscriptions().count(), 0);
    t.drop_link();
    t.reconnect();
    assert!(t.sent().is_empty(), "nothing renewed");

    // Dropped while disconnected: nothing to send then, nothing renewed.
    t.s.handle_subscribe_with(t.now, "sol", Payload::text("sub sol"))
        .unwrap();
    assert_eq!(t.sent(), ["sub sol"]);
    t.drop_link();
    t.s.handle_unsubscribe_with(t.now, "sol", Some(Payload::text("unsub sol")))
        .unwrap();
    t.reconnect();
    assert!(t.sent().is_empty());
}

#[test]
fn raw_refuses_a_subscription_without_a_message_and_channels() {
    let mut t = T::new(quiet(), Raw::new());
    assert!(matches!(
        t.s.handle_subscribe(t.now, "btc"),
        Err(SendError::Unsupported { .. })
    ));
    assert!(matches!(
        t.s.handle_publish(t.now, "news", Payload::text("x")),
        Err(SendError::Unsupported { .. })
    ));
}

#[test]
fn protocols_without_headers_refuse_them() {
    let h = Headers::new().with("K", "v");
    let mut t = T::new(quiet(), Raw::new());
    assert_eq!(
        t.s.handle_publish_with_headers(t.now, "news", h.clone(), Payload::text("x")),
        Err(SendError::Unsupported {
            protocol: "raw",
            what: "message headers"
        })
    );
    let mut t = T::new(quiet(), redial_core::Wire);
    assert_eq!(
        t.s.handle_publish_with_headers(t.now, "news", h, Payload::text("x")),
        Err(SendError::Unsupported {
            protocol: "wire",
            what: "message headers"
        })
    );
    assert_eq!(t.s.queued(), 0);
}

#[test]
fn raw_application_heartbeat_replaces_websocket_pings() {
    let b = Config::builder()
        .seed(3)
        .ping_interval(Some(MS(1000)))
        .pong_timeout(MS(500));
    let raw = Raw::new().heartbeat(RawHeartbeat::new(Payload::text(r#"{"op":"ping"}"#)));
    let mut t = T::new(b, raw);
    t.open();
    t.sent();
    t.advance(MS(1000));
    assert_eq!(
        t.sent(),
        [r#"{"op":"ping"}"#],
        "the feed's ping, no WS ping"
    );
    // Any message answers it.
    t.advance(MS(100));
    t.text(r#"{"op":"pong"}"#);
    t.advance(MS(450));
    assert_eq!(t.s.state(), State::Connected);
    // A silent feed after the next heartbeat is a dead link.
    t.advance(MS(1000));
    assert_eq!(t.sent(), [r#"{"op":"ping"}"#]);
    t.advance(MS(500));
    let events = t.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason == "pong timeout")),
        "{events:?}"
    );
}

fn pong_timed_out(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason == "pong timeout"))
}

/// A Raw session with an application heartbeat every second, 500 ms to
/// answer, connected and past its first heartbeat.
fn raw_pinged(heartbeat: RawHeartbeat) -> T {
    let b = Config::builder()
        .seed(3)
        .ping_interval(Some(MS(1000)))
        .pong_timeout(MS(500));
    let mut t = T::new(b, Raw::new().heartbeat(heartbeat));
    t.open();
    t.sent();
    t.advance(MS(1000));
    assert_eq!(t.sent(), ["ping"]);
    t
}

#[test]
fn raw_heartbeat_with_an_exact_reply_is_answered_only_by_it() {
    let hb = RawHeartbeat::new(Payload::text("ping")).reply(Payload::text("pong"));
    let mut t = raw_pinged(hb.clone());
    // Data keeps coming, but it is not the reply: the deadline stands.
    t.advance(MS(100));
    t.text("tick 1");
    t.advance(MS(200));
    t.text("tick 2");
    t.s.handle_frame(t.now, Frame::Pong(bytes::Bytes::new()));
    t.s.handle_frame(t.now, Frame::Binary(bytes::Bytes::from_static(b"pong")));
    t.advance(MS(200));
    let events = t.events();
    assert!(pong_timed_out(&events), "{events:?}");
    let data: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .collect();
    assert_eq!(data.len(), 3, "the other messages are still delivered");

    // The reply itself clears it, and is delivered too.
    let mut t = raw_pinged(hb);
    t.advance(MS(100));
    t.text("tick");
    t.text("pong");
    t.advance(MS(450));
    assert_eq!(t.s.state(), State::Connected);
    let events = t.events();
    assert!(!pong_timed_out(&events));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Message { payload, .. } if payload.as_text() == Some("pong"))));
}

#[test]
fn raw_heartbeat_with_a_predicate_reply() {
    let hb = RawHeartbeat::new(Payload::text("ping"))
        .reply_when(|f| matches!(f, Frame::Text(t) if t.as_str().contains(r#""op":"pong""#)));
    let mut t = raw_pinged(hb.clone());
    t.advance(MS(100));
    t.text(r#"{"op":"pong","ts":17}"#);
    t.advance(MS(450));
    assert_eq!(t.s.state(), State::Connected);
    assert!(!pong_timed_out(&t.events()));

    let mut t = raw_pinged(hb);
    t.advance(MS(100));
    t.text(r#"{"op":"trade"}"#);
    t.advance(MS(450));
    assert!(pong_timed_out(&t.events()));
}

#[test]
fn raw_heartbeat_reply_any_is_the_default() {
    let hb = RawHeartbeat::new(Payload::text("ping"))
        .reply(Payload::text("pong"))
        .reply_any();
    let mut t = raw_pinged(hb);
    t.advance(MS(100));
    t.text("tick");
    t.advance(MS(450));
    assert_eq!(t.s.state(), State::Connected);
    assert!(!pong_timed_out(&t.events()));
}

#[test]
fn raw_without_heartbeat_still_pings_the_websocket() {
    let b = Config::builder()
        .seed(3)
        .ping_interval(Some(MS(1000)))
        .pong_timeout(MS(500));
    let mut t = T::new(b, Raw::new());
    t.open();
    t.sent();
    t.advance(MS(1000));
    assert_eq!(t.sent(), ["PING"]);
}

// ----- graphql-transport-ws ---------------------------------------------

mod graphql {
    use super::*;
    use redial_core::{AuthToken, ClosePolicy, CloseRule, GraphqlWs, TerminalReason};

    const ACK: &str = r#"{"type":"connection_ack"}"#;

    fn spec(q: &str) -> Payload {
        GraphqlWs::subscription(q, Some(r#"{"n":1}"#)).unwrap()
    }

    /// Connected, with subscription "1" sent.
    fn connected() -> T {
        let mut t = T::new(quiet(), GraphqlWs::new());
        t.s.handle_subscribe_with(t.now, "1", spec("subscription { ticks }"))
            .unwrap();
        t.open();
        t.text(ACK);
        t.sent();
        t.events();
        t
    }

    fn closed_reason(events: &[Event]) -> Option<TerminalReason> {
        events.iter().find_map(|e| match e {
            Event::Closed { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    #[test]
    fn init_carries_the_token_and_nothing_goes_out_before_the_ack() {
        let b = quiet().token_provider(true);
        let p = GraphqlWs::new()
            .init_payload(r#"{"client":"redial"}"#)
            .unwrap()
            .token_key("authToken");
        let mut t = T::new(b, p);
        t.s.handle_subscribe_with(t.now, "1", spec("subscription { ticks }"))
            .unwrap();
        t.s.handle_send(t.now, Payload::text("queued")).unwrap();
        t.s.handle_connect(t.now);
        t.drain();
        assert!(matches!(t.actions.pop(), Some(Action::FetchToken)));
        t.s.handle_token(t.now, AuthToken::new("s3cret"));
        t.open();
        // Key order depends on serde_json's features in the build, so the
        // parts are checked, not the whole text.
        let sent = t.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        for part in [
            r#""type":"connection_init""#,
            r#""authToken":"s3cret""#,
            r#""client":"redial""#,
        ] {
            assert!(sent[0].contains(part), "{part} in {sent:?}");
        }
        assert_eq!(t.s.state(), State::Connecting, "not before connection_ack");
        t.text(ACK);
        assert_eq!(
            t.sent(),
            [
                r#"{"type":"subscribe","id":"1","payload":{"query":"subscription { ticks }","variables":{"n":1}}}"#,
                "queued"
            ]
        );
        assert_eq!(t.s.state(), State::Connected);
    }

    #[test]
    fn subscriptions_are_sent_again_with_their_ids_after_a_reconnect() {
        let mut t = connected();
        t.s.handle_subscribe_with(t.now, "2", spec("subscription { news }"))
            .unwrap();
        assert_eq!(t.sent().len(), 1);
        t.close(1006);
        t.reconnect();
        assert_eq!(t.sent().len(), 1, "connection_init only");
        t.text(ACK);
        let sent = t.sent();
        assert_eq!(sent.len(), 2);
        assert!(sent[0].contains(r#""id":"1""#) && sent[0].contains("ticks"));
        assert!(sent[1].contains(r#""id":"2""#) && sent[1].contains("news"));
    }

    #[test]
    fn next_error_complete_carry_the_id() {
        let mut t = connected();
        t.s.handle_subscribe_with(t.now, "2", spec("subscription { news }"))
            .unwrap();
        t.text(r#"{"type":"next","id":"1","payload":{"data":{"ticks":7}}}"#);
        t.text(r#"{"type":"next","id":"9","payload":{"data":{}}}"#); // unknown: dropped
        t.text(r#"{"type":"error","id":"2","payload":[{"message":"no"}]}"#);
        t.text(r#"{"type":"complete","id":"1"}"#);
        let events = t.events();
        let messages: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Message {
                    channel, payload, ..
                } => Some((channel.clone(), payload.as_text().unwrap().to_owned())),
                _ => None,
            })
            .collect();
        assert_eq!(
            messages,
            [(Some(Text::from("1")), r#"{"data":{"ticks":7}}"#.to_owned())]
        );
        assert!(events.iter().any(
            |e| matches!(e, Event::SubscribeFailed { channel, reason, .. } if channel == "2" && reason.as_str().contains("no"))
        ));
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::SubscriptionEnded { channel } if channel == "1")));
        assert_eq!(t.s.subscriptions().count(), 0, "neither is renewed");
    }

    #[test]
    fn the_servers_ping_is_answered_and_ours_is_a_protocol_ping() {
        let b = Config::builder()
            .seed(3)
            .ping_interval(Some(MS(1000)))
            .pong_timeout(MS(500));
        let mut t = T::new(b, GraphqlWs::new());
        t.open();
        t.text(ACK);
        t.sent();
        t.text(r#"{"type":"ping"}"#);
        assert_eq!(t.sent(), [r#"{"type":"pong"}"#]);
        t.advance(MS(1000));
        assert_eq!(t.sent(), [r#"{"type":"ping"}"#]);
        t.advance(MS(500));
        assert!(t
            .events()
            .iter()
            .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason == "pong timeout")));
    }

    #[test]
    fn no_ack_in_time_reconnects() {
        let p = GraphqlWs::new().ack_timeout(MS(300));
        let mut t = T::new(quiet(), p);
        t.open();
        t.sent();
        t.advance(MS(300));
        let events = t.events();
        assert!(
            events.iter().any(|e| matches!(e, Event::Disconnected { reason, will_reconnect: true, .. } if reason == "no connection_ack in time")),
            "{events:?}"
        );
    }

    #[test]
    fn refused_credentials_are_terminal() {
        for (code, why) in [
            (4401, TerminalReason::Unauthorized),
            (4403, TerminalReason::Forbidden),
        ] {
            let mut t = T::new(quiet(), GraphqlWs::new());
            t.open();
            t.close(code);
            assert_eq!(closed_reason(&t.events()), Some(why), "{code}");
            assert_eq!(t.s.state(), State::Closed);
        }
    }

    #[test]
    fn too_many_inits_and_init_timeout_reconnect() {
        for code in [4429, 4408, 4409, 4499, 4500] {
            let mut t = connected();
            t.close(code);
            let events = t.events();
            assert!(closed_reason(&events).is_none(), "{code}: {events:?}");
            t.reconnect();
            assert_eq!(t.sent().len(), 1, "{code}: a fresh connection_init");
        }
    }

    #[test]
    fn the_users_override_beats_the_protocols_row() {
        let policy =
            ClosePolicy::new().with_code(4403, CloseRule::Reconnect { honour_hint: false });
        let mut t = T::new(quiet().close_policy(policy), GraphqlWs::new());
        t.open();
        t.close(4403);
        assert!(closed_reason(&t.events()).is_none());
    }

    #[test]
    fn garbage_is_a_protocol_error_closed_with_4400_and_a_reconnect() {
        for garbage in [
            "not json",
            r#"{"type":"nope"}"#,
            r#"{"type":"next","id":"1"}"#,
            r#"{"type":"connection_ack"}"#, // a second one
            "",
        ] {
            let mut t = connected();
            t.text(garbage);
            assert_eq!(t.sent(), ["close:4400"], "{garbage}");
            let events = t.events();
            assert!(events
                .iter()
                .any(|e| matches!(e, Event::ProtocolError { .. })));
            assert!(closed_reason(&events).is_none());
            t.reconnect();
            t.text(ACK);
            assert_eq!(t.s.state(), State::Connected);
        }
        let mut t = connected();
        t.s.handle_frame(t.now, Frame::Binary(vec![0xff, 0].into()));
        assert_eq!(t.sent(), ["close:4400"]);
    }

    #[test]
    fn a_spec_that_is_not_a_subscribe_payload_is_refused() {
        let mut t = T::new(quiet(), GraphqlWs::new());
        assert!(matches!(
            t.s.handle_subscribe_with(t.now, "1", Payload::text("[1]")),
            Err(SendError::Invalid { .. })
        ));
        assert!(GraphqlWs::subscription("q", Some("[]")).is_err());
    }
}

// ----- NATS ---------------------------------------------------------------

mod nats {
    use super::*;
    use redial_core::{AuthToken, Nats, TerminalReason};

    const INFO: &str = r#"INFO {"server_id":"S","version":"2.9.25","proto":1,"headers":true,"max_payload":1048576}"#;

    impl T {
        fn nats(&mut self, data: &str) {
            self.s
                .handle_frame(self.now, Frame::Binary(data.as_bytes().to_vec().into()));
        }

        /// What was sent, as text (NATS frames are binary).
        fn nats_sent(&mut self) -> String {
            self.drain();
            std::mem::take(&mut self.actions)
                .into_iter()
                .filter_map(|a| match a {
                    Action::Send(Frame::Binary(b)) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    Action::Close(c) => Some(format!("close:{}\n", c.code)),
                    _ => None,
                })
                .collect()
        }

        fn handshake(&mut self) {
            self.open();
            self.nats(&format!("{INFO}\r\n"));
            self.nats("PONG\r\n");
        }
    }

    fn closed_reason(events: &[Event]) -> Option<TerminalReason> {
        events.iter().find_map(|e| match e {
            Event::Closed { reason, .. } => Some(*reason),
            _ => None,
        })
    }

    #[test]
    fn info_connect_ping_pong_then_subscriptions_then_queued_publishes() {
        let mut t = T::new(quiet().token_provider(true), Nats::new());
        t.s.handle_subscribe(t.now, "prices.>").unwrap();
        t.s.handle_subscribe_with(t.now, "jobs", Payload::text("workers"))
            .unwrap();
        t.s.handle_publish(t.now, "orders", Payload::text("buy"))
            .unwrap();
        t.s.handle_connect(t.now);
        t.drain();
        t.actions.clear();
        t.s.handle_token(t.now, AuthToken::new("s3cret"));
        t.open();
        assert_eq!(t.nats_sent(), "", "the server speaks first");
        t.nats(&format!("{INFO}\r\n"));
        let connect = t.nats_sent();
        assert!(connect.starts_with("CONNECT {"), "{connect}");
        assert!(connect.contains(r#""verbose":false"#) && connect.contains(r#""headers":true"#));
        assert!(connect.contains(r#""auth_token":"s3cret""#));
        assert!(connect.ends_with("\r\nPING\r\n"));
        assert_eq!(t.s.state(), State::Connecting);
        t.nats("PONG\r\n");
        assert_eq!(t.s.state(), State::Connected);
        assert_eq!(
            t.nats_sent(),
            "SUB jobs workers 1\r\nSUB prices.> 2\r\nPUB orders 3\r\nbuy\r\n"
        );
    }

    /// Each protocol has its own limits: a NATS subject is not held to
    /// Wire's 255-byte channels.
    #[test]
    fn a_subject_of_a_thousand_bytes_subscribes_and_publishes() {
        let subject = "s".repeat(1000);
        let mut t = T::new(quiet(), Nats::new());
        t.s.handle_subscribe(t.now, subject.as_str()).unwrap();
        t.s.handle_publish(t.now, subject.as_str(), Payload::text("x"))
            .unwrap();
        t.handshake();
        let sent = t.nats_sent();
        assert!(
            sent.ends_with(&format!(
                "PING\r\nSUB {subject} 1\r\nPUB {subject} 1\r\nx\r\n"
            )),
            "{sent}"
        );
        let long = "s".repeat(redial_core::protocol::InputLimits::DEFAULT_LEN + 1);
        assert!(matches!(
            t.s.handle_subscribe(t.now, long.as_str()),
            Err(SendError::InvalidChannel {
                len: 4097,
                max: 4096
            })
        ));
    }

    #[test]
    fn the_same_sids_are_renewed_after_a_reconnect_and_messages_carry_the_subject() {
        let mut t = T::new(quiet(), Nats::new());
        t.s.handle_subscribe(t.now, "a").unwrap();
        t.handshake();
        assert!(t.nats_sent().ends_with("\r\nPING\r\nSUB a 1\r\n"));
        t.s.handle_subscribe(t.now, "b.*").unwrap();
        assert_eq!(t.nats_sent(), "SUB b.* 2\r\n");
        // Two messages in one WebSocket message, one for an unknown sid.
        t.nats("MSG a 1 2\r\nhi\r\nMSG b.x 2 5\r\nhello\r\nMSG z 9 1\r\n?\r\n");
        let got: Vec<_> = t
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Message {
                    channel, payload, ..
                } => Some((channel.unwrap().to_string(), payload.bytes().to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_owned(), b"hi".to_vec()),
                ("b.x".to_owned(), b"hello".to_vec())
            ]
        );
        t.drop_link();
        t.s.handle_publish(t.now, "out", Payload::text("while away"))
            .unwrap();
        t.reconnect();
        t.nats(&format!("{INFO}\r\n"));
        t.nats_sent();
        t.nats("PONG\r\n");
        assert_eq!(
            t.nats_sent(),
            "SUB a 1\r\nSUB b.* 2\r\nPUB out 10\r\nwhile away\r\n"
        );
        t.s.handle_unsubscribe(t.now, "a").unwrap();
        assert_eq!(t.nats_sent(), "UNSUB 1\r\n");
        t.s.handle_subscribe(t.now, "c").unwrap();
        assert_eq!(
            t.nats_sent(),
            "SUB c 3\r\n",
            "a new sid, never a reused one"
        );
    }

    #[test]
    fn publishes_with_headers_go_out_as_hpub_also_after_a_reconnect() {
        let mut t = T::new(quiet(), Nats::new());
        let h = Headers::new().with("Trace", "a1").with("Trace", "b2");
        // "NATS/1.0\r\n" 10 + "Trace: a1\r\n" 11 twice + "\r\n" 2 = 34.
        let hpub = "HPUB orders 34 37\r\nNATS/1.0\r\nTrace: a1\r\nTrace: b2\r\n\r\nbuy\r\n";
        t.handshake();
        t.nats_sent();
        t.s.handle_publish_with_headers(t.now, "orders", h.clone(), Payload::text("buy"))
            .unwrap();
        assert_eq!(t.nats_sent(), hpub);
        // Queued while away, it keeps its headers.
        t.drop_link();
        t.s.handle_publish_with_headers(t.now, "orders", h, Payload::text("buy"))
            .unwrap();
        t.s.handle_publish(t.now, "orders", Payload::text("plain"))
            .unwrap();
        t.reconnect();
        t.nats(&format!("{INFO}\r\n"));
        t.nats_sent();
        t.nats("PONG\r\n");
        assert_eq!(t.nats_sent(), format!("{hpub}PUB orders 5\r\nplain\r\n"));
    }

    #[test]
    fn hmsg_headers_reach_the_application_and_msg_has_none() {
        let mut t = T::new(quiet(), Nats::new());
        t.s.handle_subscribe(t.now, "a").unwrap();
        t.handshake();
        t.nats_sent();
        // Block: 10 + "K: v1\r\n" 7 + "Empty:\r\n" 8 + 2 = 27; payload 2.
        t.nats("HMSG a 1 27 29\r\nNATS/1.0\r\nK: v1\r\nEmpty:\r\n\r\nhi\r\nMSG a 1 2\r\nho\r\n");
        let got: Vec<_> = t
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Message {
                    payload, headers, ..
                } => Some((payload.bytes().to_vec(), headers)),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    b"hi".to_vec(),
                    Some(Headers::new().with("K", "v1").with("Empty", ""))
                ),
                (b"ho".to_vec(), None)
            ]
        );
    }

    #[test]
    fn headers_are_checked_before_queueing() {
        let mut t = T::new(quiet(), Nats::new());
        for bad in [
            Headers::new().with("Bad Name", "v"),
            Headers::new().with("K", "line\r\nbreak"),
            Headers::new().with("", "v"),
        ] {
            assert!(
                matches!(
                    t.s.handle_publish_with_headers(t.now, "s", bad.clone(), Payload::text("x")),
                    Err(SendError::Invalid {
                        protocol: "nats",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(t.s.queued(), 0);
        // The server's max_payload counts the header block too.
        t.open();
        t.text(r#"INFO {"server_id":"S","version":"2.9","max_payload":32}"#);
        t.s.handle_frame(t.now, Frame::Binary(b"\r\nPONG\r\n".to_vec().into()));
        let h = Headers::new().with("K", "v"); // block of 18 bytes
        assert!(matches!(
            t.s.handle_publish_with_headers(
                t.now,
                "s",
                h.clone(),
                Payload::text("fifteen bytes!!")
            ),
            Err(SendError::TooLarge { len: 33, max: 32 })
        ));
        assert!(t
            .s
            .handle_publish_with_headers(t.now, "s", h, Payload::text("fourteen bytes"))
            .is_ok());
    }

    #[test]
    fn the_servers_ping_is_answered_and_ours_is_a_nats_ping() {
        let b = Config::builder()
            .seed(3)
            .ping_interval(Some(MS(1000)))
            .pong_timeout(MS(500));
        let mut t = T::new(b, Nats::new());
        t.handshake();
        t.nats_sent();
        t.nats("PING\r\n");
        assert_eq!(t.nats_sent(), "PONG\r\n");
        t.advance(MS(1000));
        assert_eq!(t.nats_sent(), "PING\r\n");
        t.advance(MS(500));
        assert!(t
            .events()
            .iter()
            .any(|e| matches!(e, Event::Disconnected { reason, .. } if reason == "pong timeout")));
    }

    #[test]
    fn authorization_violation_is_terminal_others_by_meaning() {
        let mut t = T::new(quiet(), Nats::new());
        t.open();
        t.nats(&format!("{INFO}\r\n"));
        t.nats("-ERR 'Authorization Violation'\r\n");
        assert_eq!(
            closed_reason(&t.events()),
            Some(TerminalReason::Unauthorized)
        );

        let mut t = T::new(quiet(), Nats::new());
        t.handshake();
        t.nats("-ERR 'Stale Connection'\r\n");
        let events = t.events();
        assert!(closed_reason(&events).is_none());
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Disconnected {
                will_reconnect: true,
                ..
            }
        )));

        let mut t = T::new(quiet(), Nats::new());
        t.s.handle_subscribe(t.now, "secret").unwrap();
        t.handshake();
        t.nats("-ERR 'Permissions Violation for Subscription to \"secret\"'\r\n");
        let events = t.events();
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::SubscribeFailed { channel, .. } if channel == "secret")));
        assert_eq!(t.s.state(), State::Connected);
    }

    #[test]
    fn lame_duck_leaves_and_comes_back_within_the_window() {
        let mut delays = Vec::new();
        for seed in 0..8 {
            let b = Config::builder().seed(seed).ping_interval(None);
            let mut t = T::new(b, Nats::new().ldm_window(Duration::from_secs(20)));
            t.handshake();
            t.nats_sent();
            t.nats(r#"INFO {"server_id":"S","version":"2.9","max_payload":1048576,"ldm":true}"#);
            t.nats("\r\n");
            assert_eq!(t.nats_sent(), "close:1001\n");
            let events = t.events();
            assert!(events.iter().any(|e| matches!(e, Event::GoingAway { .. })));
            let delay = events
                .iter()
                .find_map(|e| match e {
                    Event::ReconnectScheduled { delay, .. } => Some(*delay),
                    _ => None,
                })
                .unwrap();
            assert!(delay <= Duration::from_secs(20), "{delay:?}");
            delays.push(delay);
        }
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 4, "spread, not one wave: {delays:?}");
    }

    #[test]
    fn garbage_is_a_protocol_error_and_a_reconnect() {
        for garbage in [
            "HELLO\r\n",
            "MSG a x 2\r\nhi\r\n",
            "PING\n",
            "\u{0}\u{1}\r\n",
        ] {
            let mut t = T::new(quiet(), Nats::new());
            t.s.handle_subscribe(t.now, "a").unwrap();
            t.handshake();
            t.nats_sent();
            t.nats(garbage);
            assert_eq!(t.nats_sent(), "close:1002\n", "{garbage:?}");
            let events = t.events();
            assert!(events
                .iter()
                .any(|e| matches!(e, Event::ProtocolError { .. })));
            t.reconnect();
            t.nats(&format!("{INFO}\r\n"));
            t.nats("PONG\r\n");
            assert_eq!(t.s.state(), State::Connected, "a fresh decoder");
        }
    }

    #[test]
    fn messages_before_the_handshake_are_dropped_and_bad_subjects_refused() {
        let mut t = T::new(quiet(), Nats::new());
        t.s.handle_subscribe(t.now, "a").unwrap();
        assert!(matches!(
            t.s.handle_send(t.now, Payload::text("no subject")),
            Err(SendError::Unsupported { .. })
        ));
        assert!(matches!(
            t.s.handle_publish(t.now, "bad subject", Payload::text("x")),
            Err(SendError::Invalid { .. })
        ));
        assert!(matches!(
            t.s.handle_subscribe(t.now, "bad subject"),
            Err(SendError::Invalid { .. })
        ));
        t.open();
        t.nats(&format!("{INFO}\r\n"));
        // No SUB went out on this connection yet: nothing is ours.
        t.nats("MSG a 1 2\r\nhi\r\n");
        let events = t.events();
        assert!(!events.iter().any(|e| matches!(e, Event::Message { .. })));
        assert_eq!(t.s.state(), State::Connecting);
    }
}

// ----- every protocol, arbitrary inputs ----------------------------------

mod arbitrary_inputs {
    use proptest::prelude::*;
    use redial_core::fuzzing::{self, ProtocolScenario};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// The fuzz target `protocol_events`, as a property test.
        #[test]
        fn invariants_hold_for_every_protocol(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Some(s) = ProtocolScenario::from_bytes(&bytes) {
                fuzzing::protocol_events(std::time::Instant::now(), &s);
            }
        }
    }
}

// ----- what the handshake reply tells -------------------------------------

mod ready_facts {
    use super::*;
    use redial_core::protocol::{
        Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output, Ready,
    };
    use redial_core::{Nats, ProtocolError};

    /// A protocol whose reply `ready` announces a 200 ms heartbeat and a
    /// 10-byte message limit.
    #[derive(Debug)]
    struct Announcing;

    impl Protocol for Announcing {
        fn name(&self) -> &'static str {
            "announcing"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn on_open(&mut self, _cx: &OpenContext<'_>, _out: &mut Output) -> Handshake {
            Handshake::Await {
                reply: "ready",
                timeout: None,
            }
        }
        fn on_frame(
            &mut self,
            frame: Frame,
            cx: &FrameContext<'_>,
            out: &mut Output,
        ) -> Result<(), ProtocolError> {
            if !cx.ready && matches!(&frame, Frame::Text(t) if t == "ready") {
                let mut ready = Ready::new();
                ready.heartbeat = Some(MS(200));
                ready.max_message = Some(10);
                out.fact(Inbound::Ready(ready));
            }
            Ok(())
        }
        fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
            out.send_payload(msg.payload);
        }
    }

    #[test]
    fn a_shorter_server_heartbeat_wins_and_the_limit_refuses_larger_sends() {
        let b = Config::builder()
            .seed(3)
            .ping_interval(Some(MS(10_000)))
            .pong_timeout(MS(500));
        let mut t = T::new(b, Announcing);
        assert!(t
            .s
            .handle_send(t.now, Payload::text("more than ten"))
            .is_ok());
        t.open();
        t.text("ready");
        assert_eq!(
            t.sent(),
            ["more than ten"],
            "queued before the limit was known"
        );
        t.advance(MS(200));
        assert_eq!(t.sent(), ["PING"], "the server's 200 ms, not our 10 s");
        assert!(matches!(
            t.s.handle_send(t.now, Payload::text("more than ten")),
            Err(SendError::TooLarge { len: 13, max: 10 })
        ));
        assert!(t.s.handle_send(t.now, Payload::text("ten bytes!")).is_ok());
    }

    #[test]
    fn nats_max_payload_from_info_bounds_publishes() {
        let mut t = T::new(quiet(), Nats::new());
        t.open();
        t.text(r#"INFO {"server_id":"S","version":"2.9","max_payload":16}"#);
        t.s.handle_frame(t.now, Frame::Binary(b"\r\nPONG\r\n".to_vec().into()));
        assert_eq!(t.s.state(), State::Connected);
        assert!(matches!(
            t.s.handle_publish(t.now, "s", Payload::text("seventeen bytes!!")),
            Err(SendError::TooLarge { len: 17, max: 16 })
        ));
        assert!(t
            .s
            .handle_publish(t.now, "s", Payload::text("sixteen bytes!!!"))
            .is_ok());
    }
}

/// A protocol with a handshake that passes every message on as data, so
/// the session's own rule is what refuses data before the handshake.
mod data_before_ready {
    use super::*;
    use redial_core::protocol::{
        Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output,
    };
    use redial_core::{Protocol, ProtocolError};

    #[derive(Debug)]
    struct Echoing;

    impl Protocol for Echoing {
        fn name(&self) -> &'static str {
            "echoing"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn on_open(&mut self, _cx: &OpenContext<'_>, _out: &mut Output) -> Handshake {
            Handshake::Await {
                reply: "hello",
                timeout: None,
            }
        }
        fn on_frame(
            &mut self,
            frame: Frame,
            cx: &FrameContext<'_>,
            out: &mut Output,
        ) -> Result<(), ProtocolError> {
            let Frame::Text(text) = frame else {
                return Ok(());
            };
            if text.as_str() == "hello" && !cx.ready {
                out.fact(Inbound::Ready(redial_core::protocol::Ready::new()));
            } else {
                out.fact(Inbound::data(Payload::text(text)));
            }
            Ok(())
        }
        fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
            out.send_payload(msg.payload);
        }
    }

    #[test]
    fn a_lone_data_fact_before_the_handshake_is_a_protocol_error() {
        let mut t = T::new(quiet(), Echoing);
        t.open();
        t.text("early");
        let events = t.events();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::ProtocolError {
                    error: ProtocolError::DataBeforeReady
                }
            )),
            "{events:?}"
        );
        assert!(!events.iter().any(|e| matches!(e, Event::Message { .. })));
        assert_eq!(t.s.state(), State::Reconnecting);
    }

    #[test]
    fn a_lone_data_fact_after_the_handshake_is_a_message() {
        let mut t = T::new(quiet(), Echoing);
        t.open();
        t.text("hello");
        t.text("late");
        let events = t.events();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Message { payload, .. } if payload.as_text() == Some("late")
            )),
            "{events:?}"
        );
        assert_eq!(t.s.state(), State::Connected);
    }
}
