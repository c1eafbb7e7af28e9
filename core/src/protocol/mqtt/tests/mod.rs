//! `Mqtt` driven through a `Session`, against a scripted broker.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use super::codec::{ConnAck, Decoder, Reason, SubAck};
use super::*;
use crate::{Action, AuthToken, Config, Event, Session, State, TerminalReason};

mod model;

/// A session over an `Mqtt`, the broker's view of what it sent, and a
/// clock.
pub(super) struct H {
    pub(super) s: Session,
    pub(super) now: Instant,
    version: Version,
    broker: Decoder,
    pub(super) events: Vec<Event>,
    pub(super) closes: usize,
}

pub(super) fn props(list: Vec<Property>) -> Properties {
    Properties(list)
}

pub(super) fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::new(),
    }
}

pub(super) fn connack(session_present: bool, code: u8) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: Properties::new(),
    })
}

pub(super) fn publish(qos: QoS, packet_id: Option<u16>, topic: &str, payload: &str) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Properties::new(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

impl H {
    pub(super) fn new(mqtt: MqttBuilder) -> Self {
        let mqtt = mqtt.build().unwrap();
        let version = mqtt.settings.version;
        let config = Config::builder()
            .seed(7)
            .build()
            .unwrap()
            .with_token_provider(true);
        H {
            s: Session::new(config, mqtt),
            now: Instant::now(),
            version,
            broker: Decoder::new(version, 1 << 20),
            events: Vec::new(),
            closes: 0,
        }
    }

    /// What the client wrote since the last call, as packets; dials and
    /// token fetches are answered on the way.
    pub(super) fn sent(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(a) = self.s.poll_action() {
            match a {
                Action::FetchToken => self.s.handle_token(self.now, AuthToken::new("s3cret")),
                Action::Dial { .. } => {
                    self.broker.reset();
                    self.s.handle_dial_ok(self.now);
                }
                Action::Send(Frame::Binary(b), _) => {
                    self.broker.push(&b);
                    while let Some(p) = self.broker.next_packet().unwrap() {
                        packets.push(p);
                    }
                }
                Action::Close(_) => {
                    self.closes += 1;
                    self.s.handle_transport_closed(self.now, None);
                }
                _ => {}
            }
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
        packets
    }

    pub(super) fn take_events(&mut self) -> Vec<Event> {
        self.sent_into_void();
        std::mem::take(&mut self.events)
    }

    fn sent_into_void(&mut self) {
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    /// The broker writes `p`.
    pub(super) fn reply(&mut self, p: Packet) {
        let mut buf = BytesMut::new();
        p.encode(self.version, &mut buf).unwrap();
        self.s.handle_frame(self.now, Frame::Binary(buf.freeze()));
    }

    /// Connects (the first time or again) and returns the CONNECT.
    pub(super) fn open(&mut self) -> Connect {
        if self.s.state() == State::Idle {
            self.s.handle_connect(self.now);
        }
        for _ in 0..50 {
            let sent = self.sent();
            if let Some(Packet::Connect(c)) = sent.into_iter().next() {
                return c;
            }
            let at = self.s.poll_timeout().unwrap();
            self.now = self.now.max(at);
            self.s.handle_timeout(self.now);
        }
        panic!("no CONNECT");
    }

    /// The link drops.
    pub(super) fn drop_link(&mut self) {
        self.s.handle_transport_closed(self.now, None);
        self.sent();
    }

    /// Moves the clock to the session's next deadline and fires it.
    pub(super) fn tick(&mut self) {
        let at = self.s.poll_timeout().unwrap();
        self.now = self.now.max(at);
        self.s.handle_timeout(self.now);
    }
}

fn v311() -> MqttBuilder {
    Mqtt::builder("c1").username("u")
}

fn connected(b: MqttBuilder) -> H {
    let mut h = H::new(b);
    h.open();
    h.reply(connack(false, 0));
    h.sent();
    h
}

fn payloads(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                channel, payload, ..
            } => Some((
                channel.as_ref().unwrap().to_string(),
                payload.as_text().unwrap().to_owned(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_carries_the_client_id_a_persistent_session_and_the_token_as_password() {
    let mut h = H::new(v311().keep_alive(Duration::from_secs(5)));
    let c = h.open();
    assert_eq!(c.client_id, "c1");
    assert!(!c.clean_start);
    assert_eq!(c.keep_alive, 5);
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password.as_ref().unwrap().expose().as_ref(), b"s3cret");
    assert!(!format!("{:?}", h.s).contains("s3cret"));
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn v5_connect_asks_for_a_session_that_outlives_the_link() {
    let mut h = H::new(v311().version(Version::V5).session_expiry(600));
    let c = h.open();
    assert_eq!(c.properties.session_expiry_interval(), Some(600));
    assert_eq!(c.properties.maximum_packet_size(), Some(1 << 20));
}

#[test]
fn refused_credentials_end_the_session_on_both_versions() {
    for (version, code) in [
        (Version::V311, 4),
        (Version::V311, 5),
        (Version::V5, 0x86),
        (Version::V5, 0x87),
    ] {
        let mut h = H::new(v311().version(version));
        h.open();
        h.reply(connack(false, code));
        h.sent();
        let events = h.take_events();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Event::Closed {
                    reason: TerminalReason::Unauthorized,
                    ..
                }
            )),
            "{version:?} {code}: {events:?}"
        );
        assert_eq!(h.s.state(), State::Closed);
    }
}

#[test]
fn a_busy_broker_is_retried() {
    let mut h = H::new(v311().version(Version::V5));
    h.open();
    h.reply(connack(false, 0x89));
    h.sent();
    assert_eq!(h.s.state(), State::Reconnecting);
    h.open();
}

#[test]
fn subscriptions_are_sent_after_connack_and_not_again_when_the_session_is_present() {
    let mut h = H::new(v311());
    h.s.handle_subscribe_with(h.now, "a/+/c", Payload::text("2"))
        .unwrap();
    h.open();
    h.reply(connack(false, 0));
    let sent = h.sent();
    let Some(Packet::Subscribe(sub)) = sent.first() else {
        panic!("{sent:?}");
    };
    assert_eq!(sub.filters[0].0, "a/+/c");
    assert_eq!(sub.filters[0].1.qos, QoS::ExactlyOnce);
    h.reply(Packet::SubAck(SubAck {
        packet_id: sub.packet_id,
        properties: Properties::new(),
        codes: vec![2],
    }));
    h.sent();
    assert!(h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Subscribed { channel, .. } if channel.as_str() == "a/+/c")));
    h.drop_link();
    h.open();
    h.reply(connack(true, 0));
    let sent = h.sent();
    assert!(
        !sent.iter().any(|p| matches!(p, Packet::Subscribe(_))),
        "{sent:?}"
    );
    let events = h.take_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Connected { resumed: true, .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Subscribed { channel, .. } if channel.as_str() == "a/+/c")));
    // A broker that lost the session gets them again.
    h.drop_link();
    h.open();
    h.reply(connack(false, 0));
    assert!(h.sent().iter().any(|p| matches!(p, Packet::Subscribe(_))));
}

#[test]
fn a_suback_failure_fails_the_subscription_with_its_code() {
    let mut h = connected(v311());
    h.s.handle_subscribe(h.now, "secret/#").unwrap();
    let sent = h.sent();
    let Some(Packet::Subscribe(sub)) = sent.first() else {
        panic!("{sent:?}");
    };
    h.reply(Packet::SubAck(SubAck {
        packet_id: sub.packet_id,
        properties: Properties::new(),
        codes: vec![0x80],
    }));
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::SubscribeFailed { channel, code: 0x80, .. } if channel.as_str() == "secret/#"
    )));
}

#[test]
fn bad_filters_and_specs_are_refused_before_they_are_kept() {
    let mut h = H::new(v311());
    assert!(h.s.handle_subscribe(h.now, "a/#/b").is_err());
    assert!(h
        .s
        .handle_subscribe_with(h.now, "a/b", Payload::text("3"))
        .is_err());
    assert!(h
        .s
        .handle_publish(h.now, "a/+", Payload::text("x"))
        .is_err());
    assert!(h.s.handle_send(h.now, Payload::text("no topic")).is_err());
}

#[test]
fn keepalive_pings_whatever_the_traffic_and_a_missing_pingresp_kills_the_link() {
    let mut h = connected(
        v311()
            .keep_alive(Duration::from_secs(2))
            .ping_timeout(Duration::from_secs(1)),
    );
    let start = h.now;
    // Traffic every half second does not hold the PINGREQ back.
    let mut pinged = None;
    for i in 1..=8 {
        h.now = start + Duration::from_millis(500 * i);
        h.s.handle_timeout(h.now);
        h.reply(publish(QoS::AtMostOnce, None, "t", "x"));
        if h.sent().contains(&Packet::PingReq) {
            pinged = Some(h.now - start);
            break;
        }
    }
    assert_eq!(pinged, Some(Duration::from_secs(2)));
    h.reply(Packet::PingResp);
    h.sent();
    // The next one goes unanswered.
    h.tick();
    assert_eq!(h.sent(), vec![Packet::PingReq]);
    let asked = h.now;
    h.tick();
    h.sent();
    assert_eq!(h.now - asked, Duration::from_secs(1));
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::Disconnected { reason, will_reconnect: true, .. } if reason.contains("PINGRESP")
    )));
}

#[test]
fn qos1_publishes_are_sent_again_with_dup_after_a_reconnect() {
    let mut h = connected(v311());
    let seq = h.s.handle_publish(h.now, "t", Payload::text("m1")).unwrap();
    let sent = h.sent();
    let Some(Packet::Publish(p)) = sent.first() else {
        panic!("{sent:?}");
    };
    assert!(!p.dup);
    let id = p.packet_id.unwrap();
    h.drop_link();
    h.open();
    h.reply(connack(true, 0));
    let sent = h.sent();
    let Some(Packet::Publish(again)) = sent.first() else {
        panic!("{sent:?}");
    };
    assert!(again.dup);
    assert_eq!(again.packet_id, Some(id));
    h.reply(Packet::PubAck(ack(id)));
    assert!(h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Acked { seq: s } if *s == seq)));
}

#[test]
fn qos2_state_survives_a_reconnect() {
    let mut h = connected(v311().qos(QoS::ExactlyOnce));
    let seq = h.s.handle_publish(h.now, "t", Payload::text("m1")).unwrap();
    let Some(Packet::Publish(p)) = h.sent().into_iter().next() else {
        panic!();
    };
    let id = p.packet_id.unwrap();
    h.reply(Packet::PubRec(ack(id)));
    assert_eq!(h.sent(), vec![Packet::PubRel(ack(id))]);
    h.drop_link();
    h.open();
    h.reply(connack(true, 0));
    // Only the release goes again: the broker has the message.
    assert_eq!(h.sent(), vec![Packet::PubRel(ack(id))]);
    h.reply(Packet::PubComp(ack(id)));
    assert!(h
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::Acked { seq: s } if *s == seq)));
}

#[test]
fn inbound_qos2_is_delivered_once_across_a_reconnect() {
    let mut h = connected(v311());
    h.reply(publish(QoS::ExactlyOnce, Some(9), "t", "once"));
    assert_eq!(h.sent(), vec![Packet::PubRec(ack(9))]);
    h.drop_link();
    h.open();
    h.reply(connack(true, 0));
    h.sent();
    // The broker did not see our PUBREC and sends it again.
    let Packet::Publish(mut again) = publish(QoS::ExactlyOnce, Some(9), "t", "once") else {
        panic!();
    };
    again.dup = true;
    h.reply(Packet::Publish(again));
    assert_eq!(h.sent(), vec![Packet::PubRec(ack(9))]);
    h.reply(Packet::PubRel(ack(9)));
    assert_eq!(h.sent(), vec![Packet::PubComp(ack(9))]);
    // Id 9 is free again: a new message under it is new.
    h.reply(publish(QoS::ExactlyOnce, Some(9), "t", "twice"));
    h.sent();
    assert_eq!(
        payloads(&h.take_events()),
        vec![("t".into(), "once".into()), ("t".into(), "twice".into())]
    );
}

#[test]
fn inbound_qos1_is_acked_and_carries_its_topic() {
    let mut h = connected(v311());
    h.reply(publish(QoS::AtLeastOnce, Some(3), "a/b", "hi"));
    assert_eq!(h.sent(), vec![Packet::PubAck(ack(3))]);
    assert_eq!(
        payloads(&h.take_events()),
        vec![("a/b".into(), "hi".into())]
    );
}

#[test]
fn retained_flag_and_user_properties_reach_the_application() {
    let mut h = connected(v311().version(Version::V5));
    let Packet::Publish(mut p) = publish(QoS::AtMostOnce, None, "t", "r") else {
        panic!();
    };
    p.retain = true;
    p.properties = props(vec![Property::UserProperty("k".into(), "v".into())]);
    h.reply(Packet::Publish(p));
    let events = h.take_events();
    let headers = events
        .iter()
        .find_map(|e| match e {
            Event::Message { headers, .. } => headers.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(headers.get("k"), Some("v"));
    assert_eq!(headers.get(RETAIN_HEADER), Some("1"));
}

#[test]
fn v5_headers_go_out_as_user_properties_and_311_refuses_them() {
    let mut h = connected(v311().version(Version::V5));
    h.s.handle_publish_with_headers(
        h.now,
        "t",
        Headers::new().with("trace", "abc"),
        Payload::text("x"),
    )
    .unwrap();
    let Some(Packet::Publish(p)) = h.sent().into_iter().next() else {
        panic!();
    };
    assert_eq!(
        p.properties.user_properties().collect::<Vec<_>>(),
        vec![("trace", "abc")]
    );
    let mut old = connected(v311());
    assert!(old
        .s
        .handle_publish_with_headers(
            old.now,
            "t",
            Headers::new().with("a", "b"),
            Payload::text("x")
        )
        .is_err());
}

#[test]
fn the_brokers_maximum_packet_size_bounds_publishes() {
    let mut h = H::new(v311().version(Version::V5));
    h.open();
    h.reply(Packet::ConnAck(ConnAck {
        session_present: false,
        code: 0,
        properties: props(vec![Property::MaximumPacketSize(64)]),
    }));
    h.sent();
    assert!(h
        .s
        .handle_publish(h.now, "t", Payload::text("small"))
        .is_ok());
    let big = "x".repeat(100);
    assert!(matches!(
        h.s.handle_publish(h.now, "t", Payload::text(big)),
        Err(SendError::TooLarge { max: 64, .. })
    ));
}

#[test]
fn the_receive_maximum_holds_publishes_back_until_a_slot_frees() {
    let mut h = H::new(v311().version(Version::V5));
    h.open();
    h.reply(Packet::ConnAck(ConnAck {
        session_present: false,
        code: 0,
        properties: props(vec![Property::ReceiveMaximum(2)]),
    }));
    h.sent();
    for i in 0..4 {
        h.s.handle_publish(h.now, "t", Payload::text(i.to_string()))
            .unwrap();
    }
    let first: Vec<u16> = h
        .sent()
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 2);
    h.reply(Packet::PubAck(ack(first[0])));
    assert_eq!(h.sent().len(), 1);
}

#[test]
fn garbage_from_the_broker_is_a_protocol_error_and_a_reconnect() {
    let mut h = connected(v311());
    h.s.handle_frame(
        h.now,
        Frame::Binary(Bytes::from_static(&[0x00, 0xff, 0xff, 0xff, 0xff])),
    );
    h.sent();
    assert_eq!(h.closes, 1);
    assert_eq!(h.s.state(), State::Reconnecting);
    let mut h = connected(v311());
    h.s.handle_frame(h.now, Frame::Text(Text::from("hello")));
    h.sent();
    assert_eq!(h.s.state(), State::Reconnecting);
    // A packet only clients send.
    let mut h = connected(v311());
    h.reply(Packet::PingReq);
    h.sent();
    assert_eq!(h.s.state(), State::Reconnecting);
}

#[test]
fn a_packet_before_connack_is_a_protocol_error() {
    let mut h = H::new(v311());
    h.open();
    h.reply(Packet::PingResp);
    h.sent();
    assert_eq!(h.s.state(), State::Reconnecting);
}

#[test]
fn a_v5_disconnect_is_read_like_a_connack() {
    let mut h = connected(v311().version(Version::V5));
    h.reply(Packet::Disconnect(Reason {
        code: 0x87,
        properties: Properties::new(),
    }));
    h.sent();
    assert_eq!(h.s.state(), State::Closed);
}

#[test]
fn qos0_publishes_leave_the_queue_once_written() {
    let mut h = connected(v311().qos(QoS::AtMostOnce));
    h.s.handle_publish(h.now, "t", Payload::text("x")).unwrap();
    let sent = h.sent();
    assert!(matches!(&sent[..], [Packet::Publish(p)] if p.packet_id.is_none()));
    h.drop_link();
    h.open();
    h.reply(connack(true, 0));
    assert!(h.sent().is_empty());
}

#[test]
fn the_builder_refuses_values_out_of_range() {
    assert!(Mqtt::builder("c")
        .keep_alive(Duration::ZERO)
        .build()
        .is_err());
    assert!(Mqtt::builder("c").max_in_flight(0).build().is_err());
    assert!(Mqtt::builder("c\0").build().is_err());
    assert!(Mqtt::builder("c").max_packet_size(10).build().is_err());
}

#[test]
fn use_another_server_moves_to_the_next_endpoint() {
    let mut h = H::new(v311().version(Version::V5));
    let config = Config::builder().seed(7).build().unwrap().with_endpoints(2);
    h.s = Session::new(config, v311().version(Version::V5).build().unwrap());
    h.open();
    let first = h.s.endpoint();
    h.reply(connack(false, 0x9C));
    h.sent();
    assert_eq!(h.s.state(), State::Reconnecting);
    h.open();
    assert_ne!(h.s.endpoint(), first);
}
