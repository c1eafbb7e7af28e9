//! The mosquitto launcher works and speaks redial-core's MQTT codec: a
//! plain tokio-tungstenite client (subprotocol `mqtt`) connects, subscribes,
//! publishes at QoS 1 and gets its own message back, on 3.1.1 and 5.0; a
//! wrong password is refused; a persistent session survives a SIGTERM
//! restart and the ports stay the same through a SIGKILL restart.

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use redial_core::mqtt::{
    Ack, ConnAck, Connect, Decoder, Packet, Password, Properties, Property, Publish, QoS,
    Subscribe, SubscriptionOptions, Version, DEFAULT_MAX_PACKET_SIZE,
};
use redial_tests::servers::mosquitto::{Mosquitto, MosquittoOptions};
use redial_tests::servers::started;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Safety net for one wait; a healthy one takes milliseconds.
const WAIT: Duration = Duration::from_secs(10);

struct Client {
    ws: Ws,
    decoder: Decoder,
    version: Version,
}

impl Client {
    async fn dial(broker: &Mosquitto, version: Version) -> Client {
        let mut request = broker.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("dial timed out")
            .expect("dial failed");
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "mqtt"
        );
        Client {
            ws,
            decoder: Decoder::new(version, DEFAULT_MAX_PACKET_SIZE),
            version,
        }
    }

    async fn send(&mut self, packets: &[Packet]) {
        // Several packets in one message: MQTT over WebSocket allows it.
        let mut out = BytesMut::new();
        for p in packets {
            p.encode(self.version, &mut out).unwrap();
        }
        self.ws.send(Message::Binary(out.freeze())).await.unwrap();
    }

    /// The next packet, or `None` when the broker closed the connection.
    async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.decoder.next_packet().expect("broker stream decodes") {
                return Some(p);
            }
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no MQTT packet in time");
            match message {
                Some(Ok(Message::Binary(b))) => self.decoder.push(&b),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    async fn connect(&mut self, connect: Connect) -> Option<ConnAck> {
        self.send(&[Packet::Connect(connect)]).await;
        match self.next().await? {
            Packet::ConnAck(a) => Some(a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

fn connect(version: Version, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        version,
        client_id: client_id.into(),
        clean_start,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
        properties: match version {
            // A persistent session on 5.0 needs an expiry past the
            // connection; 3.1.1 keeps it while clean session is off.
            Version::V5 => Properties(vec![Property::SessionExpiryInterval(600)]),
            Version::V311 => Properties::new(),
        },
    }
}

fn publish(topic: &str, id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(id),
        properties: Properties::new(),
        payload: Bytes::from_static(payload),
    })
}

fn subscribe(filter: &str, id: u16) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id,
        properties: Properties::new(),
        filters: vec![(filter.into(), SubscriptionOptions::qos(QoS::AtLeastOnce))],
    })
}

async fn round_trip(version: Version) {
    let broker = started(Mosquitto::start(MosquittoOptions::default()));
    let mut c = Client::dial(&broker, version).await;
    let ack = c.connect(connect(version, "smoke", true)).await.unwrap();
    assert_eq!((ack.session_present, ack.code), (false, 0));
    c.send(&[subscribe("smoke/+", 1)]).await;
    let Some(Packet::SubAck(s)) = c.next().await else {
        panic!("no SUBACK");
    };
    assert_eq!((s.packet_id, s.codes), (1, vec![1]));
    c.send(&[publish("smoke/a", 2, b"hello")]).await;
    // The PUBACK and our own message, in either order.
    let (mut acked, mut got) = (false, None);
    while !acked || got.is_none() {
        match c.next().await.expect("broker closed") {
            Packet::PubAck(a) => {
                assert_eq!(a.packet_id, 2);
                acked = true;
            }
            Packet::Publish(p) => {
                assert_eq!((p.topic.as_str(), p.qos), ("smoke/a", QoS::AtLeastOnce));
                c.send(&[Packet::PubAck(Ack {
                    packet_id: p.packet_id.unwrap(),
                    reason: 0,
                    properties: Properties::new(),
                })])
                .await;
                got = Some(p.payload);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got.unwrap(), Bytes::from_static(b"hello"));
    c.send(&[Packet::PingReq]).await;
    assert_eq!(c.next().await, Some(Packet::PingResp));
}

#[cfg_attr(
    not(redial_has_mosquitto),
    ignore = "needs mosquitto: apt-get install mosquitto"
)]
#[tokio::test]
async fn mosquitto_speaks_the_codec_over_websocket_v311() {
    round_trip(Version::V311).await;
}

#[cfg_attr(
    not(redial_has_mosquitto),
    ignore = "needs mosquitto: apt-get install mosquitto"
)]
#[tokio::test]
async fn mosquitto_speaks_the_codec_over_websocket_v5() {
    round_trip(Version::V5).await;
}

#[cfg_attr(
    not(redial_has_mosquitto),
    ignore = "needs mosquitto: apt-get install mosquitto"
)]
#[tokio::test]
async fn mosquitto_refuses_a_wrong_password() {
    let broker = started(Mosquitto::start(MosquittoOptions {
        credentials: Some(("alice".into(), "right".into())),
    }));
    // mosquitto 2.0 answers a wrong password with "not authorized" on both
    // versions (3.1.1 return code 5, 5.0 reason code 0x87), not with "bad
    // user name or password" (4, 0x86).
    for (version, refused) in [(Version::V311, 5), (Version::V5, 0x87)] {
        let with = |password: &'static [u8]| {
            let mut c = connect(version, "pw", true);
            c.username = Some("alice".into());
            c.password = Some(Password::new(password));
            c
        };
        let mut c = Client::dial(&broker, version).await;
        let ack = c.connect(with(b"wrong")).await.unwrap();
        assert_eq!(ack.code, refused, "{version:?}");
        let mut c = Client::dial(&broker, version).await;
        let ack = c.connect(with(b"right")).await.unwrap();
        assert_eq!(ack.code, 0, "{version:?}");
    }
}

#[cfg_attr(
    not(redial_has_mosquitto),
    ignore = "needs mosquitto: apt-get install mosquitto"
)]
#[tokio::test]
async fn mosquitto_restarts_keep_ports_and_a_sigterm_keeps_the_session() {
    let mut broker = started(Mosquitto::start(MosquittoOptions::default()));
    let ports = (broker.ws_addr(), broker.tcp_addr());
    let mut c = Client::dial(&broker, Version::V5).await;
    c.connect(connect(Version::V5, "keeper", false))
        .await
        .unwrap();
    c.send(&[subscribe("kept", 1)]).await;
    assert!(matches!(c.next().await, Some(Packet::SubAck(_))));

    broker.restart_graceful().unwrap();
    assert_eq!(c.next().await, None, "the restart drops the connection");
    assert_eq!((broker.ws_addr(), broker.tcp_addr()), ports);
    let mut c = Client::dial(&broker, Version::V5).await;
    let ack = c
        .connect(connect(Version::V5, "keeper", false))
        .await
        .unwrap();
    assert!(ack.session_present, "SIGTERM saved the session");
    // The saved subscription still routes.
    c.send(&[publish("kept", 2, b"after")]).await;
    let mut got = false;
    while !got {
        match c.next().await.expect("broker closed") {
            Packet::Publish(p) => got = p.payload == Bytes::from_static(b"after"),
            Packet::PubAck(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    let pid = broker.pid();
    broker.restart_killed().unwrap();
    assert_ne!(broker.pid(), pid);
    assert_eq!((broker.ws_addr(), broker.tcp_addr()), ports);
    let mut c = Client::dial(&broker, Version::V311).await;
    let ack = c
        .connect(connect(Version::V311, "fresh", true))
        .await
        .unwrap();
    assert_eq!(ack.code, 0);
}
