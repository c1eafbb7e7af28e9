//! Mqtt: MQTT 3.1.1 and 5.0 over WebSocket (subprotocol `mqtt`).

pub mod codec;
mod rules;
mod state;
mod topic;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::close_policy::CloseRule;
use crate::error::SendError;
use crate::event::SessionInfo;
use crate::headers::Headers;
use crate::payload::{Payload, Text};
use crate::transport::Frame;

use self::codec::{
    Ack, Connect, Decoder, Packet, Password, Properties, Property, Publish, QoS, Subscribe,
    SubscriptionOptions, Unsubscribe, Version,
};
use self::state::{Delivery, OutState, Step};
use super::{
    Capabilities, FrameContext, Handshake, Inbound, InputLimits, LinkDead, OpenContext, Outgoing,
    Output, Protocol, ProtocolError, Ready, TimerContext,
};

const NAME: &str = "mqtt";

/// The header a retained inbound message carries (value `1`), after its
/// user properties.
pub const RETAIN_HEADER: &str = "mqtt-retain";

/// The most publishes in flight this client ever allows (the broker's
/// receive maximum may lower it); the rest of the 65,535 packet ids stay
/// free for subscribes and unsubscribes.
pub const MAX_IN_FLIGHT: u16 = 65_000;

/// MQTT 3.1.1 or 5.0 over WebSocket, with a persistent session: QoS 1 and
/// 2 publishes that survive reconnects, subscriptions with wildcards, and
/// a keepalive of its own.
///
/// Build it with [`Mqtt::builder`]. Publishes need a channel: the topic
/// name. Subscriptions are keyed by their topic filter (wildcards `+` and
/// `#` allowed); the spec is the QoS wanted, `"0"`, `"1"` or `"2"`, or
/// empty for [`MqttBuilder::subscribe_qos`]. Messages arrive as
/// [`Event::Message`](crate::Event::Message) with the topic name as their
/// channel, MQTT 5.0 user properties as headers, and a retained message
/// marked with the header [`RETAIN_HEADER`] = `1`.
///
/// # Connecting
/// CONNECT carries the client id, Clean Session off (3.1.1) or Clean Start
/// off with a Session Expiry Interval (5.0), the keepalive, the user name
/// from the builder and the token from the token provider as the password
/// (never kept, never in `Debug`). The CONNACK code decides what follows:
///
/// | CONNACK | rule |
/// |---|---|
/// | accepted | connected; [`Event::Connected`](crate::Event::Connected)'s `resumed` is the broker's "session present" |
/// | bad user name or password, not authorized (3.1.1 4, 5; 5.0 0x86, 0x87), banned, bad authentication method | terminal `unauthorized` |
/// | unacceptable protocol version (1; 0x84) | terminal `unsupported_version` |
/// | identifier rejected (2; 0x85) | terminal `name_unavailable` |
/// | server unavailable (3; 0x88), busy (0x89), quota exceeded (0x97), connection rate exceeded (0x9F) | reconnect, stepping the ladder |
/// | use another server (0x9C), server moved (0x9D) | reconnect: a connection refused before it was stable moves the session to the next configured endpoint |
/// | any other refusal | reconnect on the ladder |
///
/// The session's `Event::Disconnected` or `Event::Closed` carries the
/// CONNACK code. A broker's DISCONNECT (5.0) is read the same way.
///
/// # Keepalive
/// A PINGREQ goes out every keepalive interval (the broker's Server Keep
/// Alive when it sets one) whatever else flows, one at a time; when its
/// PINGRESP does not come within [`MqttBuilder::ping_timeout`] the link is
/// dead and the session reconnects. A broker that sends anything but MQTT
/// (a text message, a packet that does not decode, a packet a broker never
/// sends) is a protocol error: close and reconnect.
///
/// # Publishing
/// Every publish goes out at the QoS of [`MqttBuilder::qos`]. At QoS 0 a
/// message leaves the queue once written. At QoS 1 and 2 it stays in the
/// session's queue (bounded by its `queue_max_messages` and
/// `queue_max_bytes`) until the broker has it, and
/// [`Event::Acked`](crate::Event::Acked) reports the oldest messages that
/// are complete: PUBACK for QoS 1, PUBCOMP for QoS 2. Packet ids are taken
/// when a message is first written and kept until it is complete, so an id
/// is never used twice while in flight. At most
/// [`MqttBuilder::max_in_flight`] publishes are in flight (lowered to the
/// 5.0 broker's Receive Maximum); later ones wait, in order. Publishes made
/// while disconnected wait in the session's queue. A 5.0 broker's Maximum
/// Packet Size bounds what can be published: a larger message is refused
/// with [`SendError::TooLarge`] (a message
/// already queued that a later broker announces too small for is dropped
/// rather than sent to a broker that must disconnect for it; it counts as
/// complete). With 5.0, headers go out as user properties.
///
/// # Receiving
/// An inbound QoS 1 or 2 message is acknowledged (PUBACK, PUBREC) in the
/// same input that makes it an [`Event::Message`](crate::Event::Message):
/// the session's `handle_frame` queues the acknowledgement as a send action
/// and the message as an event together. The protocol interface has no
/// later point at which the application says it is done with a message,
/// and the session taking it is where it leaves the protocol's hands; an
/// application that must not lose a message it had not yet processed when
/// its process died needs QoS 2 on the publisher's side or its own
/// idempotence. A QoS 2 message is delivered once: its packet id is
/// remembered from the PUBLISH until the broker's PUBREL, across
/// reconnects, so a re-sent PUBLISH (DUP) under that id is acknowledged
/// again and not delivered.
///
/// # Bounds
/// Outbound state: one entry per message in the session's queue (bounded
/// by its `queue_max_messages` and `queue_max_bytes`), packet ids only for
/// those in flight (at most [`MqttBuilder::max_in_flight`]). Inbound QoS 2
/// ids: at most 65,535 (the id space). SUBSCRIBE and UNSUBSCRIBE requests
/// in flight: one per subscription at most. Inbound packets: at most
/// [`MqttBuilder::max_packet_size`], checked from the fixed header.
///
/// # Across a reconnect
/// The client id, the packet ids in flight and the QoS 2 state live on
/// across connections (until the session ends):
/// - QoS 0: at most once; what was written to a link that died may be
///   lost.
/// - QoS 1: at least once. Every message without its PUBACK is sent again,
///   in order, with DUP set; none is lost while the broker keeps its
///   session, and the broker may see one twice.
/// - QoS 2: exactly once while the broker keeps its session. A message
///   without PUBREC is sent again with DUP under the same packet id (the
///   broker drops its copy if it had one); one with PUBREC but no PUBCOMP
///   has its PUBREL sent again.
/// - Inbound: what the broker holds for the session (QoS 1 and 2 messages
///   matching its subscriptions, queued while the client was away) arrives
///   after the reconnect; QoS 2 ones are not delivered twice.
/// - Subscriptions: with "session present" the broker still holds them,
///   and they are not sent again (each is confirmed by
///   [`Event::Subscribed`](crate::Event::Subscribed) without a SUBSCRIBE);
///   without it (a first connection, or a broker that lost the session)
///   every subscription is sent again.
///
/// A broker that lost the session (no "session present" on a
/// reconnect) also lost what it had acknowledged and not yet delivered;
/// the client cannot bring that back. The session reports it with
/// [`Event::ResumeRejected`](crate::Event::ResumeRejected), and the QoS 2
/// state is cleared: inbound packet ids start afresh, and outbound
/// messages still in flight are sent again as they are (a message that had
/// its PUBREC gets only its PUBREL, which the fresh session completes).
#[derive(Debug)]
pub struct Mqtt {
    settings: Settings,
    /// Per connection.
    decoder: Decoder,
    link: Link,
    /// Across connections.
    out_state: OutState,
    /// Inbound QoS 2 packet ids between PUBLISH and PUBREL.
    inbound_qos2: BTreeSet<u16>,
    /// Subscriptions the broker confirmed, which it keeps in its session.
    confirmed: BTreeSet<Text>,
    /// The broker's maximum packet size, from the last CONNACK (5.0).
    server_max_packet: Option<usize>,
    /// A client id the broker assigned, used from then on.
    assigned_id: Option<String>,
}

/// The fixed part of an [`Mqtt`]'s configuration.
#[derive(Debug, Clone)]
struct Settings {
    version: Version,
    client_id: String,
    username: Option<String>,
    keep_alive: Duration,
    ping_timeout: Duration,
    session_expiry: u32,
    qos: QoS,
    subscribe_qos: QoS,
    max_in_flight: u16,
    max_packet_size: usize,
}

/// State of the current connection.
#[derive(Debug, Default)]
struct Link {
    /// CONNACK accepted.
    ready: bool,
    /// The keepalive in force on this connection.
    keep_alive: Duration,
    next_ping: Option<Instant>,
    pingresp_due: Option<Instant>,
    /// SUBSCRIBE / UNSUBSCRIBE packet ids in flight on this connection.
    subscribes: std::collections::BTreeMap<u16, Option<Text>>,
}

/// Why an [`MqttBuilder`] cannot build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MqttConfigError {
    /// A client id longer than 65,535 bytes or holding U+0000.
    #[error("invalid client id")]
    ClientId,
    /// A keepalive of zero or over 65,535 s, or a zero ping timeout.
    #[error("keepalive must be 1..=65535 s and the ping timeout non-zero")]
    KeepAlive,
    /// A maximum in flight of zero or over [`MAX_IN_FLIGHT`].
    #[error("max_in_flight must be 1..={MAX_IN_FLIGHT}")]
    InFlight,
    /// A maximum packet size under 128 bytes.
    #[error("max_packet_size must be at least 128 bytes")]
    PacketSize,
}

/// Builds an [`Mqtt`] with validated defaults.
#[derive(Debug, Clone)]
pub struct MqttBuilder {
    settings: Settings,
}

impl MqttBuilder {
    /// MQTT 3.1.1 (the default) or 5.0.
    pub fn version(mut self, version: Version) -> Self {
        self.settings.version = version;
        self
    }

    /// The user name sent with the token as password (none by default).
    pub fn username(mut self, name: impl Into<String>) -> Self {
        self.settings.username = Some(name.into());
        self
    }

    /// Time between PINGREQs (default 30 s; whole seconds, 1 to 65,535).
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.settings.keep_alive = every;
        self
    }

    /// Time a PINGRESP has (default 10 s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ping_timeout = timeout;
        self
    }

    /// How long a 5.0 broker keeps the session after the link drops, in
    /// seconds (default 3,600; `u32::MAX`: never expires).
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.settings.session_expiry = seconds;
        self
    }

    /// The QoS of every publish (default 1).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.settings.qos = qos;
        self
    }

    /// The QoS of a subscription with an empty spec (default 1).
    pub fn subscribe_qos(mut self, qos: QoS) -> Self {
        self.settings.subscribe_qos = qos;
        self
    }

    /// Most publishes in flight (default 64, at most [`MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, n: u16) -> Self {
        self.settings.max_in_flight = n;
        self
    }

    /// Largest packet taken from the broker, in bytes (default 1 MiB;
    /// told to a 5.0 broker as Maximum Packet Size).
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.settings.max_packet_size = bytes;
        self
    }

    /// The protocol.
    ///
    /// # Errors
    /// [`MqttConfigError`] for a value out of range.
    pub fn build(self) -> Result<Mqtt, MqttConfigError> {
        let s = self.settings;
        if s.client_id.len() > usize::from(u16::MAX) || s.client_id.contains('\0') {
            return Err(MqttConfigError::ClientId);
        }
        let secs = s.keep_alive.as_secs();
        if secs == 0 || secs > u64::from(u16::MAX) || s.ping_timeout.is_zero() {
            return Err(MqttConfigError::KeepAlive);
        }
        if s.max_in_flight == 0 || s.max_in_flight > MAX_IN_FLIGHT {
            return Err(MqttConfigError::InFlight);
        }
        if s.max_packet_size < 128 {
            return Err(MqttConfigError::PacketSize);
        }
        Ok(Mqtt {
            decoder: Decoder::new(s.version, s.max_packet_size),
            settings: s,
            link: Link::default(),
            out_state: OutState::default(),
            inbound_qos2: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            server_max_packet: None,
            assigned_id: None,
        })
    }
}

impl Mqtt {
    /// A builder for client `client_id` (empty: the broker assigns one on
    /// the first connection, kept for the next ones).
    pub fn builder(client_id: impl Into<String>) -> MqttBuilder {
        MqttBuilder {
            settings: Settings {
                version: Version::V311,
                client_id: client_id.into(),
                username: None,
                keep_alive: Duration::from_secs(30),
                ping_timeout: Duration::from_secs(10),
                session_expiry: 3600,
                qos: QoS::AtLeastOnce,
                subscribe_qos: QoS::AtLeastOnce,
                max_in_flight: 64,
                max_packet_size: codec::DEFAULT_MAX_PACKET_SIZE,
            },
        }
    }

    /// Publishes in flight or waiting for a packet id (kept across
    /// reconnects until complete).
    pub fn unfinished(&self) -> usize {
        self.out_state.len()
    }

    fn client_id(&self) -> &str {
        self.assigned_id
            .as_deref()
            .unwrap_or(&self.settings.client_id)
    }

    fn send(&self, packet: &Packet, out: &mut Output) {
        let mut buf = BytesMut::new();
        // Every packet this type builds is valid: topics, filters and ids
        // are checked before they get here.
        if packet.encode(self.settings.version, &mut buf).is_ok() {
            out.send(Frame::Binary(buf.freeze()));
        }
    }

    fn ack(&self, kind: fn(Ack) -> Packet, packet_id: u16, out: &mut Output) {
        self.send(
            &kind(Ack {
                packet_id,
                reason: 0,
                properties: Properties::new(),
            }),
            out,
        );
    }

    /// The bytes a publish of `topic` and `payload` takes on the wire, at
    /// most (fixed header at its longest).
    fn publish_size(&self, topic: &str, payload: usize, properties: usize) -> usize {
        let pid = if self.settings.qos == QoS::AtMostOnce {
            0
        } else {
            2
        };
        let props = if self.settings.version == Version::V5 {
            properties + 4
        } else {
            0
        };
        5 + 2 + topic.len() + pid + props + payload
    }

    /// Writes what the broker may take now, in order.
    fn pump(&mut self, out: &mut Output) {
        let max = self.server_max_packet;
        loop {
            let subscribes = &self.link.subscribes;
            let Some(step) = self.out_state.next_step(|id| !subscribes.contains_key(&id)) else {
                break;
            };
            match step {
                Step::Publish {
                    packet_id,
                    dup,
                    msg,
                } => {
                    let packet = Packet::Publish(Publish {
                        dup,
                        qos: self.settings.qos,
                        retain: false,
                        topic: msg.topic.clone(),
                        packet_id: Some(packet_id),
                        properties: msg.properties.clone(),
                        payload: msg.payload.clone(),
                    });
                    let mut buf = BytesMut::new();
                    let fits = packet.encode(self.settings.version, &mut buf).ok();
                    match fits {
                        Some(size) if max.is_none_or(|m| size <= m) => {
                            out.send(Frame::Binary(buf.freeze()));
                        }
                        _ => {
                            // Too large for this broker: never sendable.
                            self.out_state.complete(packet_id);
                        }
                    }
                }
                Step::Release { packet_id } => self.ack(Packet::PubRel, packet_id, out),
            }
        }
        self.report_acked(out);
    }

    fn report_acked(&mut self, out: &mut Output) {
        if let Some(seq) = self.out_state.take_acked() {
            out.fact(Inbound::Acked { seq });
        }
    }

    fn arm(&self, out: &mut Output) {
        match (self.link.next_ping, self.link.pingresp_due) {
            (Some(a), Some(b)) => out.wake_at(a.min(b)),
            (Some(t), None) | (None, Some(t)) => out.wake_at(t),
            (None, None) => out.cancel_wake(),
        }
    }

    fn on_connack(
        &mut self,
        ack: codec::ConnAck,
        now: Instant,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        if ack.code != 0 {
            let rule = rules::connack_rule(self.settings.version, ack.code);
            let reason = ack
                .properties
                .reason_string()
                .map(str::to_owned)
                .unwrap_or_else(|| rules::connack_reason(self.settings.version, ack.code).into());
            out.fact(Inbound::Failed {
                code: i64::from(ack.code),
                reason: Text::from(format!("CONNACK {}: {reason}", ack.code)),
                rule,
            });
            return Ok(());
        }
        let props = &ack.properties;
        if let Some(id) = props.assigned_client_identifier() {
            self.assigned_id = Some(id.to_owned());
        }
        if !ack.session_present {
            // A fresh session on the broker: it holds no subscriptions and
            // no QoS 2 state of ours.
            self.confirmed.clear();
            self.inbound_qos2.clear();
        }
        let receive_max = props.0.iter().find_map(|p| match p {
            Property::ReceiveMaximum(n) => Some(*n),
            _ => None,
        });
        let quota = receive_max
            .unwrap_or(u16::MAX)
            .min(self.settings.max_in_flight);
        self.out_state.connected(quota);
        self.server_max_packet = props
            .maximum_packet_size()
            .and_then(|m| usize::try_from(m).ok());
        if let Some(secs) = props.server_keep_alive() {
            if secs > 0 {
                self.link.keep_alive = Duration::from_secs(u64::from(secs));
            }
        }
        self.link.ready = true;
        self.link.next_ping = Some(now + self.link.keep_alive);
        self.arm(out);
        let id = Text::from(self.client_id());
        let kept = if ack.session_present {
            self.confirmed.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let mut ready = Ready::new().session(
            SessionInfo {
                id: id.clone(),
                name: id,
            },
            ack.session_present,
        );
        ready.kept = kept;
        out.fact(Inbound::Ready(ready));
        Ok(())
    }

    fn on_publish(&mut self, p: Publish, out: &mut Output) -> Result<(), ProtocolError> {
        if p.topic.is_empty() {
            // We announce no topic aliases, so a broker must name the topic.
            return Err(ProtocolError::invalid(NAME, "PUBLISH without a topic"));
        }
        let deliver = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => true,
            (QoS::AtLeastOnce, Some(id)) => {
                self.ack(Packet::PubAck, id, out);
                true
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let fresh = self.inbound_qos2.insert(id);
                self.ack(Packet::PubRec, id, out);
                fresh
            }
            _ => return Err(ProtocolError::invalid(NAME, "PUBLISH without packet id")),
        };
        if !deliver {
            return Ok(());
        }
        let mut headers = Headers::new();
        for (k, v) in p.properties.user_properties() {
            headers.append(k, v);
        }
        if p.retain {
            headers.append(RETAIN_HEADER, "1");
        }
        // The acknowledgement written above and this fact are handled in
        // the same input: the session makes the message an event there.
        out.fact(Inbound::Data {
            key: Some(Text::from(p.topic)),
            offset: None,
            payload: match Text::from_utf8(p.payload.clone()) {
                Ok(text) => Payload::text(text),
                Err(_) => Payload::binary(p.payload),
            },
            headers: (!headers.is_empty()).then_some(headers),
        });
        Ok(())
    }

    fn on_packet(
        &mut self,
        packet: Packet,
        now: Instant,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        if !self.link.ready {
            return match packet {
                Packet::ConnAck(ack) => self.on_connack(ack, now, out),
                _ => Err(ProtocolError::invalid(NAME, "packet before CONNACK")),
            };
        }
        match packet {
            Packet::Publish(p) => self.on_publish(p, out)?,
            Packet::PubAck(a) => {
                self.publish_refused(&a, out);
                if self.out_state.on_ack(a.packet_id, Delivery::Ack) {
                    self.pump(out);
                }
            }
            Packet::PubRec(a) => {
                let refused = self.publish_refused(&a, out);
                let kind = if refused {
                    Delivery::Ack
                } else {
                    Delivery::Received
                };
                if self.out_state.on_ack(a.packet_id, kind) {
                    if !refused {
                        self.ack(Packet::PubRel, a.packet_id, out);
                    }
                    self.pump(out);
                }
            }
            Packet::PubComp(a) => {
                if self.out_state.on_ack(a.packet_id, Delivery::Complete) {
                    self.pump(out);
                }
            }
            Packet::PubRel(a) => {
                self.inbound_qos2.remove(&a.packet_id);
                self.ack(Packet::PubComp, a.packet_id, out);
            }
            Packet::SubAck(s) => {
                if let Some(Some(key)) = self.link.subscribes.remove(&s.packet_id) {
                    match s.codes.first() {
                        Some(&code) if code < 0x80 => {
                            self.confirmed.insert(key.clone());
                            out.fact(Inbound::subscribed(key));
                        }
                        code => {
                            let code = code.copied().unwrap_or(0x80);
                            let reason = s
                                .properties
                                .reason_string()
                                .map(str::to_owned)
                                .unwrap_or_else(|| format!("SUBACK failure {code:#04x}"));
                            out.fact(Inbound::SubscribeFailed {
                                key,
                                code: i64::from(code),
                                reason: Text::from(reason),
                            });
                        }
                    }
                }
            }
            Packet::UnsubAck(s) => {
                self.link.subscribes.remove(&s.packet_id);
            }
            Packet::PingResp => {
                self.link.pingresp_due = None;
                self.arm(out);
            }
            Packet::Disconnect(r) => {
                let reason = r
                    .properties
                    .reason_string()
                    .map(str::to_owned)
                    .unwrap_or_else(|| rules::connack_reason(Version::V5, r.code).into());
                out.fact(Inbound::Failed {
                    code: i64::from(r.code),
                    reason: Text::from(format!("DISCONNECT {}: {reason}", r.code)),
                    rule: rules::disconnect_rule(r.code),
                });
            }
            Packet::ConnAck(_) => return Err(ProtocolError::invalid(NAME, "second CONNACK")),
            _ => return Err(ProtocolError::invalid(NAME, "a packet only clients send")),
        }
        Ok(())
    }

    /// A 5.0 PUBACK or PUBREC with a failure code: the broker will not
    /// take the message, so it is complete; the application hears why.
    fn publish_refused(&self, a: &Ack, out: &mut Output) -> bool {
        if a.reason < 0x80 {
            return false;
        }
        let reason = a
            .properties
            .reason_string()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("publish refused with {:#04x}", a.reason));
        out.fact(Inbound::ServerError {
            code: i64::from(a.reason),
            reason: Text::from(reason),
        });
        true
    }
}

impl Protocol for Mqtt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn subprotocol(&self) -> Option<&'static str> {
        Some("mqtt")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            acked_delivery: self.settings.qos != QoS::AtMostOnce,
            channels: true,
            channel_required: true,
            subscriptions: true,
            token_in_handshake: true,
            ..Capabilities::default()
        }
    }

    fn limits(&self, _config: &crate::Config) -> InputLimits {
        InputLimits::new(usize::from(u16::MAX), usize::from(u16::MAX))
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
        self.decoder.reset();
        self.link = Link {
            keep_alive: self.settings.keep_alive,
            ..Link::default()
        };
        let mut properties = Properties::new();
        if self.settings.version == Version::V5 {
            properties.0.push(Property::SessionExpiryInterval(
                self.settings.session_expiry,
            ));
            properties.0.push(Property::MaximumPacketSize(
                u32::try_from(self.settings.max_packet_size).unwrap_or(u32::MAX),
            ));
        }
        let connect = Packet::Connect(Connect {
            version: self.settings.version,
            client_id: self.client_id().to_owned(),
            clean_start: false,
            keep_alive: u16::try_from(self.settings.keep_alive.as_secs()).unwrap_or(u16::MAX),
            username: self.settings.username.clone(),
            password: cx
                .token
                .map(|t| Password::new(Bytes::copy_from_slice(t.expose().as_bytes()))),
            will: None,
            properties,
        });
        self.send(&connect, out);
        Handshake::Await {
            reply: "CONNACK",
            timeout: None,
        }
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let Frame::Binary(bytes) = frame else {
            return Err(ProtocolError::invalid(NAME, "text message"));
        };
        self.decoder.push(&bytes);
        loop {
            match self.decoder.next_packet() {
                Ok(Some(packet)) => self.on_packet(packet, cx.now, out)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(ProtocolError::invalid(NAME, e)),
            }
        }
    }

    fn check_publish(&self, channel: Option<&Text>, payload: &Payload) -> Result<(), SendError> {
        let invalid = |reason: &str| SendError::Invalid {
            protocol: NAME,
            reason: reason.into(),
        };
        let Some(topic) = channel else {
            return Err(invalid("a publish needs a topic"));
        };
        topic::check_name(topic.as_str()).map_err(invalid)?;
        if let Some(max) = self.server_max_packet {
            let len = self.publish_size(topic.as_str(), payload.len(), 0);
            if len > max {
                return Err(SendError::TooLarge { len, max });
            }
        }
        Ok(())
    }

    fn check_headers(&self, headers: &Headers) -> Result<usize, SendError> {
        if self.settings.version != Version::V5 {
            return Err(SendError::Unsupported {
                protocol: NAME,
                what: "headers (user properties need MQTT 5.0)",
            });
        }
        let mut len = 0;
        for (k, v) in headers.iter() {
            if k.len() > usize::from(u16::MAX) || v.len() > usize::from(u16::MAX) {
                return Err(SendError::Invalid {
                    protocol: NAME,
                    reason: "user property over 65535 bytes".into(),
                });
            }
            if k.contains('\0') || v.contains('\0') {
                return Err(SendError::Invalid {
                    protocol: NAME,
                    reason: "user property holds U+0000".into(),
                });
            }
            len += 5 + k.len() + v.len();
        }
        Ok(len)
    }

    fn check_subscription(&self, key: &Text, spec: &Payload) -> Result<(), SendError> {
        let invalid = |reason: &str| SendError::Invalid {
            protocol: NAME,
            reason: reason.into(),
        };
        topic::check_filter(key.as_str()).map_err(invalid)?;
        parse_qos(spec, self.settings.subscribe_qos)
            .map(|_| ())
            .ok_or_else(|| invalid("the spec is a QoS: \"0\", \"1\", \"2\" or empty"))
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        let Some(topic) = msg.channel else {
            return; // refused by check_publish
        };
        let mut properties = Properties::new();
        if let Some(h) = msg.headers {
            for (k, v) in h.iter() {
                properties
                    .0
                    .push(Property::UserProperty(k.to_owned(), v.to_owned()));
            }
        }
        if self.settings.qos == QoS::AtMostOnce {
            let size = self.publish_size(topic.as_str(), msg.payload.len(), 0);
            if self.server_max_packet.is_some_and(|m| size > m) {
                return; // never sendable to this broker
            }
            self.send(
                &Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: topic.as_str().to_owned(),
                    packet_id: None,
                    properties,
                    payload: msg.payload.bytes().clone(),
                }),
                out,
            );
            return;
        }
        self.out_state.publish(
            msg.seq,
            state::Message {
                topic: topic.as_str().to_owned(),
                payload: msg.payload.bytes().clone(),
                properties,
            },
        );
        self.pump(out);
    }

    fn subscribe(&mut self, key: &Text, spec: &Payload, out: &mut Output) {
        let qos = parse_qos(spec, self.settings.subscribe_qos).unwrap_or(QoS::AtLeastOnce);
        let Some(packet_id) = self.alloc_control_id() else {
            return;
        };
        self.link.subscribes.insert(packet_id, Some(key.clone()));
        self.send(
            &Packet::Subscribe(Subscribe {
                packet_id,
                properties: Properties::new(),
                filters: vec![(key.as_str().to_owned(), SubscriptionOptions::qos(qos))],
            }),
            out,
        );
    }

    fn unsubscribe(
        &mut self,
        key: &Text,
        _spec: &Payload,
        _message: Option<&Payload>,
        out: &mut Output,
    ) {
        self.confirmed.remove(key);
        let Some(packet_id) = self.alloc_control_id() else {
            return;
        };
        self.link.subscribes.insert(packet_id, None);
        self.send(
            &Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: Properties::new(),
                filters: vec![key.as_str().to_owned()],
            }),
            out,
        );
    }

    fn on_timer(&mut self, cx: &TimerContext, out: &mut Output) -> Result<(), LinkDead> {
        if !self.link.ready {
            return Ok(());
        }
        if self.link.pingresp_due.is_some_and(|due| cx.now >= due) {
            return Err(LinkDead::new(format!(
                "no PINGRESP within {:?}",
                self.settings.ping_timeout
            ))
            .with_rule(CloseRule::Reconnect { honour_hint: false }));
        }
        if self.link.next_ping.is_some_and(|at| cx.now >= at) {
            if self.link.pingresp_due.is_none() {
                self.send(&Packet::PingReq, out);
                self.link.pingresp_due = Some(cx.now + self.settings.ping_timeout);
            }
            self.link.next_ping = Some(cx.now + self.link.keep_alive);
        }
        self.arm(out);
        Ok(())
    }

    fn on_closed(&mut self) {
        self.link = Link::default();
        self.decoder.reset();
        self.out_state.disconnected();
    }
}

impl Mqtt {
    /// A packet id for a SUBSCRIBE or UNSUBSCRIBE: one no publish and no
    /// other request of this connection holds.
    fn alloc_control_id(&mut self) -> Option<u16> {
        let subscribes = &self.link.subscribes;
        self.out_state.alloc_id(|id| !subscribes.contains_key(&id))
    }
}

/// The QoS a subscription spec names, `default` for an empty one.
fn parse_qos(spec: &Payload, default: QoS) -> Option<QoS> {
    match spec.bytes().as_ref() {
        b"" => Some(default),
        [d @ b'0'..=b'2'] => QoS::from_u8(d - b'0'),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
