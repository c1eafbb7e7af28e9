//! SocketIo driven through a real `Session` on an injected clock.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::{Action, CallOptions, Config, Event, Session};

struct Harness {
    session: Session,
    now: Instant,
}

const OPEN: &str =
    r#"0{"sid":"e1","upgrades":[],"pingInterval":1000,"pingTimeout":500,"maxPayload":1000000}"#;

impl Harness {
    fn new(protocol: SocketIo) -> Self {
        let config = Config::builder()
            .seed(7)
            .ping_interval(None)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let now = Instant::now();
        let mut session = Session::new(config, protocol);
        session.handle_connect(now);
        let mut h = Harness { session, now };
        h.dial();
        h
    }

    /// Runs the clock until the session dials, and opens the socket.
    fn dial(&mut self) {
        for _ in 0..20 {
            if let Some(Action::Dial { .. }) = self.find_dial() {
                self.session.handle_dial_ok(self.now);
                return;
            }
            match self.session.poll_timeout() {
                Some(at) => {
                    self.now = self.now.max(at);
                    self.session.handle_timeout(self.now);
                }
                None => panic!("no dial scheduled"),
            }
        }
        panic!("never dialed");
    }

    fn find_dial(&mut self) -> Option<Action> {
        std::iter::from_fn(|| self.session.poll_action()).find(|a| matches!(a, Action::Dial { .. }))
    }

    fn server(&mut self, text: &str) {
        self.session
            .handle_frame(self.now, Frame::Text(Text::from(text)));
    }

    fn sent(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.session.poll_action())
            .filter_map(|a| match a {
                Action::Send(Frame::Text(t), _) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    /// The open packet, then the CONNECT the client sent.
    fn open(&mut self) -> String {
        self.server(OPEN);
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        sent[0].clone()
    }

    fn drop_link(&mut self) {
        self.session.handle_transport_closed(self.now, None);
        self.events();
        self.dial();
    }
}

/// The auth object of a CONNECT to the main namespace (`40{..}`), parsed:
/// compared as JSON, since the order of its keys depends on serde_json's
/// features, which another crate in the same build may turn on.
fn auth(connect: &str) -> serde_json::Value {
    let json = connect
        .strip_prefix("40")
        .unwrap_or_else(|| panic!("not a CONNECT to the main namespace: {connect}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{connect}: {e}"))
}

fn messages(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                channel: Some(c),
                payload,
                ..
            } => Some((c.to_string(), payload.as_text().unwrap_or("").to_owned())),
            _ => None,
        })
        .collect()
}

/// Whether the link dropped (and `will_reconnect` says what next).
fn dropped(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::Disconnected { .. }))
}

fn resumed(events: &[Event]) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::Connected { resumed, .. } => Some(*resumed),
        _ => None,
    })
}

fn resubscribed(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Resubscribed { channel } => Some(channel.to_string()),
            _ => None,
        })
        .collect()
}

fn chat() -> SocketIo {
    SocketIo::new()
        .namespace("chat")
        .and_then(|s| s.auth(r#"{"room":"a"}"#))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn joins_the_namespace_with_its_auth_after_the_open() {
    let mut h = Harness::new(chat());
    assert_eq!(h.open(), r#"40/chat,{"room":"a"}"#);
    h.server(r#"40/chat,{"sid":"s1"}"#);
    let events = h.events();
    assert_eq!(resumed(&events), Some(false));
}

#[test]
fn answers_pings_and_a_missing_ping_kills_the_link() {
    let mut h = Harness::new(SocketIo::new());
    h.open();
    h.server(r#"40{"sid":"s1"}"#);
    h.events();
    // Pings keep coming within interval + timeout (1.5 s): alive.
    for _ in 0..3 {
        h.now += Duration::from_millis(1400);
        h.session.handle_timeout(h.now);
        h.server("2");
        assert_eq!(h.sent(), ["3"]);
    }
    assert!(!dropped(&h.events()));
    // Then silence.
    h.now += Duration::from_millis(1501);
    h.session.handle_timeout(h.now);
    let events = h.events();
    assert!(
        events.iter().any(|e| matches!(e,
            Event::Disconnected { reason, will_reconnect: true, .. } if reason.contains("ping"))),
        "{events:?}"
    );
}

#[test]
fn events_reach_subscribers_with_their_arguments() {
    let mut h = Harness::new(chat());
    h.session
        .handle_subscribe(h.now, "tick")
        .unwrap_or_else(|e| panic!("{e}"));
    h.open();
    h.server(r#"40/chat,{"sid":"s1"}"#);
    h.server(r#"42/chat,["tick",1,{"a":"b"}]"#);
    h.server(r#"42/chat,["other",2]"#);
    h.server(r#"42["tick",3]"#); // the main namespace: not joined
    h.server(r#"42/chat,["tick"]"#);
    let events = h.events();
    assert_eq!(
        messages(&events),
        [
            ("tick".to_owned(), r#"[1,{"a":"b"}]"#.to_owned()),
            ("tick".to_owned(), "[]".to_owned())
        ]
    );
    // Subscribing while connected confirms at once.
    h.session
        .handle_subscribe(h.now, "other")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::Subscribed { channel, .. } if channel == "other")));
}

#[test]
fn publishes_are_events_and_bad_ones_are_refused() {
    let mut h = Harness::new(chat());
    h.open();
    h.server(r#"40/chat,{"sid":"s1"}"#);
    h.session
        .handle_publish(h.now, "say", Payload::text(r#"["hi",2]"#))
        .unwrap_or_else(|e| panic!("{e}"));
    h.session
        .handle_publish(h.now, "nothing", Payload::text("[]"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        h.sent(),
        [r#"42/chat,["say","hi",2]"#, r#"42/chat,["nothing"]"#]
    );
    let refused = [
        h.session.handle_send(h.now, Payload::text("[]")),
        h.session.handle_publish(h.now, "say", Payload::text("{}")),
        h.session
            .handle_publish(h.now, "disconnect", Payload::text("[]")),
    ];
    assert!(refused.iter().all(Result::is_err), "{refused:?}");
}

#[test]
fn an_emit_with_an_ack_is_a_call() {
    let mut h = Harness::new(SocketIo::new());
    h.open();
    h.server(r#"40{"sid":"s1"}"#);
    let request = SocketIo::call_request("sum", "[1,2]").unwrap_or_else(|e| panic!("{e}"));
    let id = h
        .session
        .handle_call(h.now, request, CallOptions::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let n = id.get();
    assert_eq!(h.sent(), [format!(r#"42{n}["sum",1,2]"#)]);
    h.server(&format!("43{}[3]", n + 1000)); // nobody's: dropped
    h.server(&format!("43{n}[3]"));
    let done: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CallDone { id, result } => Some((id, result)),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, id);
    assert_eq!(
        done[0].1.as_ref().ok().and_then(|p| p.as_text()),
        Some("[3]")
    );
    assert!(SocketIo::call_request("x", "{}").is_err());
    let reserved = Payload::text(r#"["connect"]"#);
    assert!(h
        .session
        .handle_call(h.now, reserved, CallOptions::new())
        .is_err());
}

#[test]
fn a_recovered_session_replays_and_keeps_its_subscriptions() {
    let mut h = Harness::new(SocketIo::new());
    h.session
        .handle_subscribe(h.now, "tick")
        .unwrap_or_else(|e| panic!("{e}"));
    h.open();
    h.server(r#"40{"sid":"s1","pid":"P1"}"#);
    h.server(r#"42["tick",1,"o-1"]"#);
    h.server(r#"42["tick",2,"o-2"]"#);
    h.events();
    h.drop_link();
    let connect = h.open();
    assert_eq!(auth(&connect), auth(r#"40{"offset":"o-2","pid":"P1"}"#));
    // The server sends the missed events ahead of its reply.
    h.server(r#"42["tick",3,"o-3"]"#);
    h.server(r#"42["other",9,"o-4"]"#);
    h.server(r#"42["tick",4,"o-5"]"#);
    h.server(r#"40{"sid":"s1","pid":"P1"}"#);
    h.server(r#"42["tick",5,"o-6"]"#);
    let events = h.events();
    assert_eq!(resumed(&events), Some(true));
    assert!(resubscribed(&events).is_empty(), "{events:?}");
    let connected_at = events
        .iter()
        .position(|e| matches!(e, Event::Connected { .. }));
    let first_message = events
        .iter()
        .position(|e| matches!(e, Event::Message { .. }));
    assert!(connected_at < first_message, "{events:?}");
    assert_eq!(
        messages(&events),
        [
            ("tick".to_owned(), r#"[3,"o-3"]"#.to_owned()),
            ("tick".to_owned(), r#"[4,"o-5"]"#.to_owned()),
            ("tick".to_owned(), r#"[5,"o-6"]"#.to_owned())
        ]
    );
    h.drop_link();
    assert_eq!(auth(&h.open()), auth(r#"40{"offset":"o-6","pid":"P1"}"#));
}

#[test]
fn a_session_not_recovered_says_data_may_be_missing() {
    let mut h = Harness::new(SocketIo::new());
    h.session
        .handle_subscribe(h.now, "tick")
        .unwrap_or_else(|e| panic!("{e}"));
    h.open();
    h.server(r#"40{"sid":"s1","pid":"P1"}"#);
    h.server(r#"42["tick",1,"o-1"]"#);
    h.events();
    h.drop_link();
    assert_eq!(auth(&h.open()), auth(r#"40{"offset":"o-1","pid":"P1"}"#));
    h.server(r#"40{"sid":"s2","pid":"P2"}"#);
    let events = h.events();
    assert_eq!(resumed(&events), Some(false));
    assert_eq!(resubscribed(&events), ["tick"]);
    // The new session's id is presented next time, without an offset.
    h.drop_link();
    assert_eq!(auth(&h.open()), auth(r#"40{"pid":"P2"}"#));
}

#[test]
fn a_server_disconnect_ends_the_session() {
    let mut h = Harness::new(chat());
    h.open();
    h.server(r#"40/chat,{"sid":"s1"}"#);
    h.server("41/chat,");
    let events = h.events();
    assert!(
        events.iter().any(|e| matches!(e,
            Event::Closed { reason: TerminalReason::AdminDisconnect, detail, .. }
                if detail == SERVER_DISCONNECT)),
        "{events:?}"
    );
}

#[test]
fn a_connect_error_ends_the_session() {
    let mut h = Harness::new(SocketIo::new());
    h.open();
    h.server(r#"44{"message":"not authorized"}"#);
    let events = h.events();
    assert!(
        events.iter().any(|e| matches!(e,
            Event::Closed { detail, .. } if detail == "not authorized")),
        "{events:?}"
    );
}

#[test]
fn garbage_binary_and_an_engine_close_reconnect() {
    for bad in [
        "42[1]",
        "7",
        "5",
        "451-[\"a\",{\"_placeholder\":true,\"num\":0}]",
        "1",
    ] {
        let mut h = Harness::new(SocketIo::new());
        h.open();
        h.server(r#"40{"sid":"s1"}"#);
        h.events();
        h.server(bad);
        let events = h.events();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Disconnected {
                    will_reconnect: true,
                    ..
                }
            )),
            "{bad}: {events:?}"
        );
    }
    let mut h = Harness::new(SocketIo::new());
    h.open();
    h.session
        .handle_frame(h.now, Frame::Binary(bytes::Bytes::from_static(b"\x04")));
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Disconnected {
            will_reconnect: true,
            ..
        }
    )));
}

#[test]
fn events_before_the_connect_reply_are_bounded() {
    let mut h = Harness::new(SocketIo::new());
    h.open();
    for n in 0..MAX_EARLY_EVENTS {
        h.server(&format!(r#"42["tick",{n}]"#));
    }
    assert!(!dropped(&h.events()));
    h.server(r#"42["tick",1]"#);
    assert!(dropped(&h.events()));
}

#[test]
fn an_ack_before_the_connect_reply_is_a_protocol_error() {
    let mut h = Harness::new(SocketIo::new());
    h.open();
    h.server(r#"431[1]"#);
    assert!(dropped(&h.events()));
}

#[test]
fn debug_hides_the_session_id_and_credentials() {
    let mut h = Harness::new(
        SocketIo::new()
            .auth(r#"{"password":"hunter2"}"#)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    h.open();
    h.server(r#"40{"sid":"s1","pid":"private-pid"}"#);
    let shown = format!("{:?}", h.session);
    assert!(shown.contains("password"), "{shown}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("private-pid"),
        "{shown}"
    );
}

/// A step of the recovery model.
#[derive(Debug, Clone)]
enum Step {
    /// The server emits an event, with an offset or (a direct emit) not.
    Event { offset: bool },
    /// The link drops and the next CONNECT reply recovers or not (and
    /// carries a pid or not).
    Reconnect { recovered: bool, pid: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<bool>().prop_map(|offset| Step::Event { offset }),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(recovered, pid)| Step::Reconnect { recovered, pid }),
    ]
}

proptest! {
    /// What the client presents on each CONNECT, and what it tells the
    /// application, follow the model: the pid of the last session, the
    /// offset of its last offset-carrying event, `resumed` exactly when the
    /// server answered with that pid, the missed-data notice otherwise.
    #[test]
    fn recovery_bookkeeping_follows_the_model(steps in proptest::collection::vec(step(), 1..30)) {
        let mut h = Harness::new(SocketIo::new());
        h.session.handle_subscribe(h.now, "e").unwrap_or_else(|e| panic!("{e}"));
        h.open();
        h.server(r#"40{"sid":"s","pid":"p0"}"#);
        h.events();
        let (mut pid, mut offset): (Option<String>, Option<String>) = (Some("p0".into()), None);
        let mut next = 0u32;
        let mut delivered = 0usize;
        for step in steps {
            next += 1;
            match step {
                Step::Event { offset: with } => {
                    let text = if with {
                        format!(r#"42["e",{next},"o{next}"]"#)
                    } else {
                        format!(r#"42["e",{next}]"#)
                    };
                    h.server(&text);
                    if with && pid.is_some() {
                        offset = Some(format!("o{next}"));
                    }
                    delivered += messages(&h.events()).len();
                }
                Step::Reconnect { recovered, pid: with_pid } => {
                    h.drop_link();
                    let mut auth = serde_json::Map::new();
                    if let Some(p) = &pid {
                        if let Some(o) = &offset {
                            auth.insert("offset".into(), o.clone().into());
                        }
                        auth.insert("pid".into(), p.clone().into());
                    }
                    prop_assert_eq!(self::auth(&h.open()), serde_json::Value::Object(auth));
                    let answer = match (&pid, recovered, with_pid) {
                        (Some(p), true, _) => Some(p.clone()),
                        (_, _, true) => Some(format!("n{next}")),
                        _ => None,
                    };
                    let reply = match &answer {
                        Some(p) => format!(r#"40{{"sid":"s","pid":"{p}"}}"#),
                        None => r#"40{"sid":"s"}"#.to_owned(),
                    };
                    h.server(&reply);
                    let is_recovered = answer.is_some() && answer == pid;
                    if !is_recovered {
                        offset = None;
                    }
                    pid = answer;
                    let events = h.events();
                    prop_assert_eq!(resumed(&events), Some(is_recovered));
                    let notice = resubscribed(&events);
                    prop_assert_eq!(notice.is_empty(), is_recovered);
                }
            }
        }
        prop_assert!(delivered <= next as usize);
    }
}
