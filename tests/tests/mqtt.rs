//! The mosquitto launcher works and speaks redial-core's MQTT codec: a
//! plain tokio-tungstenite client (subprotocol `mqtt`) connects, subscribes,
//! publishes at QoS 1 and gets its own message back, on 3.1.1 and 5.0; a
//! wrong password is refused; a persistent session survives a SIGTERM
//! restart and the ports stay the same through a SIGKILL restart.
//!
//! Then `Mqtt` on the session, on tokio, async-std and smol: a QoS 1 and a
//! QoS 2 publisher and subscriber through cuts and a blackhole in the fault
//! proxy (the blackhole caught by the MQTT keepalive), through SIGTERM
//! restarts (session present after each) and through SIGKILL restarts
//! (what the broker lost counted apart from what the clients lost); a
//! wrong password is terminal; a peer sending garbage is a protocol error
//! and a reconnect.

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use redial_core::mqtt::{
    Ack, ConnAck, Connect, Decoder, Packet, Password, Properties, Property, Publish, QoS,
    Subscribe, SubscriptionOptions, Version, DEFAULT_MAX_PACKET_SIZE,
};
use redial_tests::third_party::mosquitto::{Mosquitto, MosquittoOptions};
use redial_tests::third_party::started;
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

// ----- Mqtt on the session ----------------------------------------------

mod session {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use redial_core::mqtt::{QoS, Version};
    use redial_core::{AuthToken, Config, Event, Mqtt, Payload, TerminalReason};
    use redial_driver::{Builder, Runtime};
    use redial_tests::proxy::Cut;
    use redial_tests::third_party::mosquitto::{Mosquitto, MosquittoOptions};
    use redial_tests::third_party::started;

    use crate::common::{fast_config, is_connected, ms, pause, Client, ProxyThread};

    /// Messages per phase: small, the suite runs on three runtimes.
    const PER_PHASE: usize = 20;

    /// The session config: no WebSocket pings, so that only the MQTT
    /// keepalive finds a dead link.
    fn config() -> Config {
        fast_config().ping_interval(None).build().unwrap()
    }

    fn mqtt(id: &str, qos: QoS) -> Mqtt {
        Mqtt::builder(id)
            .version(Version::V5)
            .qos(qos)
            .subscribe_qos(qos)
            .keep_alive(Duration::from_secs(1))
            .ping_timeout(ms(500))
            .build()
            .unwrap()
    }

    fn client<R: Runtime>(url: String, make: &impl Fn(String) -> Builder<R>, m: Mqtt) -> Client<R> {
        Client::connect(make(url).config(config()).protocol(m))
    }

    /// What reached the subscriber: how often each message number came.
    fn received<R: Runtime>(c: &Client<R>) -> BTreeMap<usize, usize> {
        let mut seen = BTreeMap::new();
        for s in c.events.all() {
            if let Event::Message { payload, .. } = &s.event {
                if let Some(n) = payload.as_text().and_then(|t| t.parse().ok()) {
                    *seen.entry(n).or_insert(0) += 1;
                }
            }
        }
        seen
    }

    fn is_message(e: &Event) -> bool {
        matches!(e, Event::Message { .. })
    }

    /// How [`through_faults`] hurts the link or the broker between phases.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        Cut,
        Blackhole,
        Sigterm,
        Sigkill,
    }

    /// Publishes `PER_PHASE` messages per phase at `qos` (publisher and
    /// subscriber both behind the fault proxy), hurting the link or the
    /// broker between phases; then every message is acked at the publisher
    /// and the subscriber has each one (QoS 2: exactly once). After a
    /// SIGKILL the broker may have lost what it had acked: that is counted
    /// and printed apart; only what the clients lost fails the test.
    async fn through_faults<R: Runtime>(
        make: impl Fn(String) -> Builder<R>,
        qos: QoS,
        faults: &[Fault],
    ) {
        let mut broker = started(Mosquitto::start(MosquittoOptions::default()));
        let proxy = ProxyThread::start(broker.ws_addr());
        let url = format!("ws://{}/mqtt", proxy.handle.addr());
        let q = qos as u8;
        let mut sub = client(url.clone(), &make, mqtt(&format!("sub{q}"), qos));
        sub.handle.subscribe(format!("q{q}/#")).await.unwrap();
        sub.next("subscribed", |e| matches!(e, Event::Subscribed { .. }))
            .await;
        let mut publ = client(url, &make, mqtt(&format!("pub{q}"), qos));
        publ.next("connected", is_connected).await;
        let mut total = 0;
        let mut last = 0;
        for (phase, fault) in faults.iter().map(Some).chain([None]).enumerate() {
            for _ in 0..PER_PHASE {
                let body = Payload::text(total.to_string());
                last = publ.handle.publish(format!("q{q}/m"), body).await.unwrap();
                total += 1;
            }
            let Some(&fault) = fault else { break };
            match fault {
                Fault::Cut => {
                    proxy.handle.cut_all(Cut::Reset);
                }
                Fault::Blackhole => proxy.handle.blackhole(true),
                Fault::Sigterm => broker.restart_graceful().unwrap(),
                Fault::Sigkill => broker.restart_killed().unwrap(),
            }
            let lost = publ
                .disconnected(&format!("{fault:?} in phase {phase}"))
                .await;
            if fault == Fault::Blackhole {
                publ.events.check(
                    matches!(&lost.event, Event::Disconnected { reason, .. } if reason.contains("PINGRESP")),
                    "the keepalive found the blackhole",
                );
                proxy.handle.blackhole(false);
            }
            let back = publ.next("back", is_connected).await;
            if fault == Fault::Sigterm {
                publ.events.check(
                    matches!(back.event, Event::Connected { resumed: true, .. }),
                    "session present after a SIGTERM restart",
                );
            }
        }
        publ.next(
            "every message acked",
            |e| matches!(e, Event::Acked { seq } if *seq >= last),
        )
        .await;
        let killed = faults.contains(&Fault::Sigkill);
        if killed {
            // What a killed broker lost never comes; give the rest time.
            pause(&sub.rt, ms(700)).await;
        } else {
            while received(&sub).len() < total {
                sub.next("the next message", is_message).await;
            }
        }
        let got = received(&sub);
        let missing = (0..total).filter(|i| !got.contains_key(i)).count();
        let duplicated: usize = got.values().map(|c| c - 1).sum();
        eprintln!(
            "{qos:?} through {faults:?}: {total} published, all acked by the broker; \
             subscriber: {} distinct, {duplicated} duplicates, {missing} missing",
            got.len()
        );
        if !killed {
            sub.events
                .check(missing == 0, &format!("{missing} lost at {qos:?}"));
        }
        if qos == QoS::ExactlyOnce && !killed {
            sub.events.check(
                duplicated == 0,
                &format!("{duplicated} duplicated at QoS 2"),
            );
        }
        publ.close().await;
        sub.close().await;
    }

    async fn qos1_through_cuts_and_a_blackhole<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
        through_faults(
            make,
            QoS::AtLeastOnce,
            &[Fault::Cut, Fault::Blackhole, Fault::Cut],
        )
        .await;
    }

    async fn qos2_through_cuts_and_a_blackhole<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
        through_faults(
            make,
            QoS::ExactlyOnce,
            &[Fault::Cut, Fault::Blackhole, Fault::Cut],
        )
        .await;
    }

    async fn qos1_and_qos2_through_sigterm_restarts<R: Runtime>(
        make: impl Fn(String) -> Builder<R>,
    ) {
        let faults = [Fault::Sigterm, Fault::Sigterm];
        through_faults(&make, QoS::AtLeastOnce, &faults).await;
        through_faults(&make, QoS::ExactlyOnce, &faults).await;
    }

    async fn clients_recover_from_sigkill_restarts<R: Runtime>(
        make: impl Fn(String) -> Builder<R>,
    ) {
        through_faults(&make, QoS::AtLeastOnce, &[Fault::Sigkill]).await;
        through_faults(&make, QoS::ExactlyOnce, &[Fault::Sigkill]).await;
    }

    async fn a_wrong_password_is_terminal<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
        let broker = started(Mosquitto::start(MosquittoOptions {
            credentials: Some(("alice".into(), "right".into())),
        }));
        let m = Mqtt::builder("alice1").username("alice").build().unwrap();
        let mut c = Client::connect(
            make(broker.ws_url())
                .config(config())
                .protocol(m)
                .token_provider(|| async { Ok(AuthToken::new("wrong")) }),
        );
        let (reason, _) = c.closed("the refusal").await;
        assert_eq!(reason, TerminalReason::Unauthorized);
        c.events.check(
            c.events.matching(is_connected).is_empty(),
            "never connected",
        );
    }

    async fn garbage_from_the_peer_is_a_protocol_error_and_a_reconnect<R: Runtime>(
        make: impl Fn(String) -> Builder<R>,
    ) {
        let peer = super::garbage::Peer::start();
        let m = Mqtt::builder("g").build().unwrap();
        let mut c = Client::connect(make(peer.url()).config(config()).protocol(m));
        for round in 0..2 {
            let lost = c.disconnected(&format!("garbage {round}")).await;
            c.events.check(
                matches!(
                    &lost.event,
                    Event::Disconnected {
                        will_reconnect: true,
                        ..
                    }
                ),
                "a reconnect follows",
            );
        }
        c.events.check(peer.accepted() >= 2, "the client came back");
        c.close().await;
    }

    on_every_runtime!(
        qos1_through_cuts_and_a_blackhole: mosquitto,
        qos2_through_cuts_and_a_blackhole: mosquitto,
        qos1_and_qos2_through_sigterm_restarts: mosquitto,
        clients_recover_from_sigkill_restarts: mosquitto,
        a_wrong_password_is_terminal: mosquitto,
        garbage_from_the_peer_is_a_protocol_error_and_a_reconnect,
    );
}

/// A WebSocket peer that answers every `mqtt` upgrade with bytes that are
/// not MQTT.
// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
mod garbage {
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    pub struct Peer {
        addr: SocketAddr,
        accepted: Arc<AtomicU64>,
    }

    impl Peer {
        pub fn start() -> Peer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicU64::new(0));
            let count = accepted.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    while let Ok((tcp, _)) = listener.accept().await {
                        count.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            let echo_mqtt = |_: &Request, mut r: Response| {
                                r.headers_mut().insert(
                                    "Sec-WebSocket-Protocol",
                                    HeaderValue::from_static("mqtt"),
                                );
                                Ok(r)
                            };
                            let Ok(mut ws) =
                                tokio_tungstenite::accept_hdr_async(tcp, echo_mqtt).await
                            else {
                                return;
                            };
                            // A CONNACK, then a packet of reserved type 0.
                            let bytes: &[u8] = &[0x20, 0x02, 0x00, 0x00, 0x00, 0x03, 1, 2, 3];
                            let _ = ws.send(Message::Binary(bytes.to_vec().into())).await;
                            let _ = futures_util::StreamExt::next(&mut ws).await;
                        });
                    }
                });
            });
            Peer { addr, accepted }
        }

        pub fn url(&self) -> String {
            format!("ws://{}/mqtt", self.addr)
        }

        pub fn accepted(&self) -> u64 {
            self.accepted.load(Ordering::SeqCst)
        }
    }
}
