//! Codec for MQTT 3.1.1 and 5.0 control packets, as carried over a
//! WebSocket (subprotocol `mqtt`).
//!
//! Over WebSocket, MQTT travels in binary messages, and a message need not
//! hold exactly one packet: both specifications let one message carry
//! several packets or a part of one, and say the receiver must not assume
//! packets line up with messages. [`Decoder`] therefore treats the
//! messages as one byte stream: [`Decoder::push`] takes each binary
//! message, [`Decoder::next_packet`] hands out whole packets. The encoder
//! ([`Packet::encode`]) writes one packet; a caller may put several into
//! one message.
//!
//! Bounds: the remaining length is a variable byte integer of at most four
//! bytes, in its shortest form; a packet whose total size (fixed header
//! included) is over [`Decoder::max_packet_size`] is refused as soon as
//! its fixed header is read, before its body arrives, so the decoder never
//! holds more than one packet within the limit plus the rest of the message
//! pushed last. Every length inside a packet is checked against the bytes
//! the packet has; malformed input is a [`DecodeError`], never a panic.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest remaining length a four-byte variable byte integer holds.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The default [`Decoder::max_packet_size`]: 1 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024;

/// The protocol version a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Delivery guarantee of a publish or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once (PUBACK).
    AtLeastOnce = 1,
    /// Exactly once (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its number, if it is 0, 1 or 2.
    pub fn from_u8(n: u8) -> Option<QoS> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Why bytes from the peer are not MQTT.
///
/// The stream is out of step after any of these: close the connection and
/// reconnect with a fresh or [reset](Decoder::reset) decoder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A variable byte integer longer than four bytes or not in its
    /// shortest form.
    #[error("malformed variable byte integer")]
    BadVarint,
    /// A packet whose total size is over the limit.
    #[error("packet of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// The packet's total size, fixed header included.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Packet type 0, or reserved flags that are not what the type needs.
    #[error("bad fixed header byte {0:#04x}")]
    BadHeader(u8),
    /// A field runs past the end of its packet, or bytes are left over.
    #[error("malformed {packet}: {why}")]
    Malformed {
        /// The packet type.
        packet: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A string that is not UTF-8 or holds U+0000.
    #[error("invalid UTF-8 string")]
    BadString,
    /// A property identifier MQTT 5.0 does not define.
    #[error("unknown property {0:#04x}")]
    UnknownProperty(u8),
    /// A property that may appear once appears twice.
    #[error("property {0:#04x} given twice")]
    DuplicateProperty(u8),
    /// A CONNECT for a protocol other than MQTT 3.1.1 or 5.0.
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol {
        /// The protocol name.
        name: String,
        /// The protocol level.
        level: u8,
    },
}

/// Why a packet cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("field of {0} bytes is longer than 65535")]
    FieldTooLong(usize),
    /// A string holding U+0000.
    #[error("string holds U+0000")]
    NulInString,
    /// A packet whose remaining length is over 268,435,455 bytes.
    #[error("packet too large for MQTT")]
    TooLarge,
    /// A packet id of 0, a PUBLISH whose packet id does not match its QoS,
    /// a topic name with wildcards or a SUBSCRIBE/UNSUBSCRIBE with no
    /// filters.
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

/// A password, kept out of Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Bytes);

impl Password {
    /// A password from its bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Password(bytes.into())
    }

    /// The bytes, for the wire.
    pub fn expose(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// One MQTT 5.0 property (section 2.2.2.2), typed by its identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Property {
    /// 0x01: the payload is UTF-8 (1) or unspecified bytes (0).
    PayloadFormat(u8),
    /// 0x02: seconds the broker keeps the message.
    MessageExpiryInterval(u32),
    /// 0x03: the payload's content type.
    ContentType(String),
    /// 0x08: the topic a response goes to.
    ResponseTopic(String),
    /// 0x09: data that ties a response to its request.
    CorrelationData(Bytes),
    /// 0x0B: the subscription a message matched (may repeat).
    SubscriptionIdentifier(u32),
    /// 0x11: seconds the broker keeps the session after a disconnect.
    SessionExpiryInterval(u32),
    /// 0x12: the client id the broker chose for an empty one.
    AssignedClientIdentifier(String),
    /// 0x13: the keepalive the broker wants instead of the client's.
    ServerKeepAlive(u16),
    /// 0x15: the extended authentication method.
    AuthenticationMethod(String),
    /// 0x16: extended authentication data.
    AuthenticationData(Bytes),
    /// 0x17: whether the peer may send reason strings and user properties
    /// on failures.
    RequestProblemInformation(u8),
    /// 0x18: seconds the will waits after the session ends.
    WillDelayInterval(u32),
    /// 0x19: whether the client asks for response information.
    RequestResponseInformation(u8),
    /// 0x1A: the base of response topics.
    ResponseInformation(String),
    /// 0x1C: another server to use.
    ServerReference(String),
    /// 0x1F: a human-readable reason.
    ReasonString(String),
    /// 0x21: how many QoS 1 and 2 publishes may be unacknowledged at once.
    ReceiveMaximum(u16),
    /// 0x22: the highest topic alias accepted.
    TopicAliasMaximum(u16),
    /// 0x23: a topic alias.
    TopicAlias(u16),
    /// 0x24: the highest QoS the broker supports.
    MaximumQos(u8),
    /// 0x25: whether the broker supports retained messages.
    RetainAvailable(u8),
    /// 0x26: a name and value pair (may repeat, order kept).
    UserProperty(String, String),
    /// 0x27: the largest packet the sender accepts.
    MaximumPacketSize(u32),
    /// 0x28: whether wildcard subscriptions are supported.
    WildcardSubscriptionAvailable(u8),
    /// 0x29: whether subscription identifiers are supported.
    SubscriptionIdentifierAvailable(u8),
    /// 0x2A: whether shared subscriptions are supported.
    SharedSubscriptionAvailable(u8),
}

impl Property {
    fn id(&self) -> u8 {
        match self {
            Property::PayloadFormat(_) => 0x01,
            Property::MessageExpiryInterval(_) => 0x02,
            Property::ContentType(_) => 0x03,
            Property::ResponseTopic(_) => 0x08,
            Property::CorrelationData(_) => 0x09,
            Property::SubscriptionIdentifier(_) => 0x0B,
            Property::SessionExpiryInterval(_) => 0x11,
            Property::AssignedClientIdentifier(_) => 0x12,
            Property::ServerKeepAlive(_) => 0x13,
            Property::AuthenticationMethod(_) => 0x15,
            Property::AuthenticationData(_) => 0x16,
            Property::RequestProblemInformation(_) => 0x17,
            Property::WillDelayInterval(_) => 0x18,
            Property::RequestResponseInformation(_) => 0x19,
            Property::ResponseInformation(_) => 0x1A,
            Property::ServerReference(_) => 0x1C,
            Property::ReasonString(_) => 0x1F,
            Property::ReceiveMaximum(_) => 0x21,
            Property::TopicAliasMaximum(_) => 0x22,
            Property::TopicAlias(_) => 0x23,
            Property::MaximumQos(_) => 0x24,
            Property::RetainAvailable(_) => 0x25,
            Property::UserProperty(..) => 0x26,
            Property::MaximumPacketSize(_) => 0x27,
            Property::WildcardSubscriptionAvailable(_) => 0x28,
            Property::SubscriptionIdentifierAvailable(_) => 0x29,
            Property::SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(self.id());
        match self {
            Property::PayloadFormat(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQos(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v) => out.put_u8(*v),
            Property::ServerKeepAlive(v)
            | Property::ReceiveMaximum(v)
            | Property::TopicAliasMaximum(v)
            | Property::TopicAlias(v) => out.put_u16(*v),
            Property::MessageExpiryInterval(v)
            | Property::SessionExpiryInterval(v)
            | Property::WillDelayInterval(v)
            | Property::MaximumPacketSize(v) => out.put_u32(*v),
            Property::SubscriptionIdentifier(v) => put_varint(out, *v as usize)?,
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => put_str(out, s)?,
            Property::CorrelationData(b) | Property::AuthenticationData(b) => put_bin(out, b)?,
            Property::UserProperty(k, v) => {
                put_str(out, k)?;
                put_str(out, v)?;
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader) -> Result<Property, DecodeError> {
        let id = r.u8()?;
        Ok(match id {
            0x01 => Property::PayloadFormat(r.u8()?),
            0x02 => Property::MessageExpiryInterval(r.u32()?),
            0x03 => Property::ContentType(r.string()?),
            0x08 => Property::ResponseTopic(r.string()?),
            0x09 => Property::CorrelationData(r.binary()?),
            0x0B => Property::SubscriptionIdentifier(r.varint()? as u32),
            0x11 => Property::SessionExpiryInterval(r.u32()?),
            0x12 => Property::AssignedClientIdentifier(r.string()?),
            0x13 => Property::ServerKeepAlive(r.u16()?),
            0x15 => Property::AuthenticationMethod(r.string()?),
            0x16 => Property::AuthenticationData(r.binary()?),
            0x17 => Property::RequestProblemInformation(r.u8()?),
            0x18 => Property::WillDelayInterval(r.u32()?),
            0x19 => Property::RequestResponseInformation(r.u8()?),
            0x1A => Property::ResponseInformation(r.string()?),
            0x1C => Property::ServerReference(r.string()?),
            0x1F => Property::ReasonString(r.string()?),
            0x21 => Property::ReceiveMaximum(r.u16()?),
            0x22 => Property::TopicAliasMaximum(r.u16()?),
            0x23 => Property::TopicAlias(r.u16()?),
            0x24 => Property::MaximumQos(r.u8()?),
            0x25 => Property::RetainAvailable(r.u8()?),
            0x26 => Property::UserProperty(r.string()?, r.string()?),
            0x27 => Property::MaximumPacketSize(r.u32()?),
            0x28 => Property::WildcardSubscriptionAvailable(r.u8()?),
            0x29 => Property::SubscriptionIdentifierAvailable(r.u8()?),
            0x2A => Property::SharedSubscriptionAvailable(r.u8()?),
            other => return Err(DecodeError::UnknownProperty(other)),
        })
    }

    /// User properties and subscription identifiers may repeat; the rest
    /// may not.
    fn repeatable(&self) -> bool {
        matches!(
            self,
            Property::UserProperty(..) | Property::SubscriptionIdentifier(_)
        )
    }
}

/// The properties of an MQTT 5.0 packet, in wire order. Always empty on
/// 3.1.1, whose packets have none (the encoder leaves them out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<Property>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Session Expiry Interval, in seconds.
    pub fn session_expiry_interval(&self) -> Option<u32> {
        self.0.iter().find_map(|p| match p {
            Property::SessionExpiryInterval(v) => Some(*v),
            _ => None,
        })
    }

    /// Maximum Packet Size: what the sender accepts.
    pub fn maximum_packet_size(&self) -> Option<u32> {
        self.0.iter().find_map(|p| match p {
            Property::MaximumPacketSize(v) => Some(*v),
            _ => None,
        })
    }

    /// Server Keep Alive, in seconds.
    pub fn server_keep_alive(&self) -> Option<u16> {
        self.0.iter().find_map(|p| match p {
            Property::ServerKeepAlive(v) => Some(*v),
            _ => None,
        })
    }

    /// Assigned Client Identifier.
    pub fn assigned_client_identifier(&self) -> Option<&str> {
        self.0.iter().find_map(|p| match p {
            Property::AssignedClientIdentifier(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// Server Reference: another server to use.
    pub fn server_reference(&self) -> Option<&str> {
        self.0.iter().find_map(|p| match p {
            Property::ServerReference(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// Reason String.
    pub fn reason_string(&self) -> Option<&str> {
        self.0.iter().find_map(|p| match p {
            Property::ReasonString(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// The user properties, in order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    fn encode(&self, version: Version, out: &mut BytesMut) -> Result<(), EncodeError> {
        if version == Version::V311 {
            return Ok(());
        }
        let mut body = BytesMut::new();
        for p in &self.0 {
            p.encode(&mut body)?;
        }
        put_varint(out, body.len())?;
        out.put_slice(&body);
        Ok(())
    }

    fn decode(r: &mut Reader, version: Version) -> Result<Properties, DecodeError> {
        if version == Version::V311 {
            return Ok(Properties::new());
        }
        let len = r.varint()?;
        let mut inner = r.sub(len)?;
        let mut props = Vec::new();
        // Ids seen once, as a bit set over 0x00..=0x3F.
        let mut seen = 0u64;
        while inner.has_remaining() {
            let p = Property::decode(&mut inner)?;
            let bit = 1u64 << p.id();
            if !p.repeatable() && seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(p.id()));
            }
            seen |= bit;
            props.push(p);
        }
        Ok(Properties(props))
    }
}

/// A will message, published by the broker when the session ends badly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Where it is published.
    pub topic: String,
    /// What is published.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// Will properties (5.0).
    pub properties: Properties,
}

/// CONNECT: the client's first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version; the decoder reads it from the packet and the
    /// encoder writes it (whatever version [`Packet::encode`] is given).
    pub version: Version,
    /// The client id (empty: the broker assigns one).
    pub client_id: String,
    /// Clean Session (3.1.1) or Clean Start (5.0): start without the
    /// session the broker holds. Off for a persistent session.
    pub clean_start: bool,
    /// Keepalive in seconds (0: none).
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password (3.1.1 allows one only with a user name).
    pub password: Option<Password>,
    /// The will, if any.
    pub will: Option<Will>,
    /// CONNECT properties (5.0), e.g. Session Expiry Interval.
    pub properties: Properties,
}

/// CONNACK: the broker's answer to CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// The broker held a session for this client id.
    pub session_present: bool,
    /// Return code (3.1.1, 0 to 5) or reason code (5.0); 0 accepts.
    pub code: u8,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH, both ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Sent before, on an earlier connection (QoS 1 and 2 only).
    pub dup: bool,
    /// Its QoS.
    pub qos: QoS,
    /// Retained (outbound: keep it; inbound: it was kept).
    pub retain: bool,
    /// The topic name (no wildcards; 5.0 allows it empty with a topic
    /// alias).
    pub topic: String,
    /// The packet id: present exactly for QoS 1 and 2, never 0.
    pub packet_id: Option<u16>,
    /// PUBLISH properties (5.0), e.g. user properties.
    pub properties: Properties,
    /// The application message.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The packet id it acknowledges.
    pub packet_id: u16,
    /// The reason code (5.0; always 0 on 3.1.1).
    pub reason: u8,
    /// Properties (5.0).
    pub properties: Properties,
}

/// How a subscription behaves (5.0 adds all but the QoS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// The highest QoS the client wants messages at.
    pub qos: QoS,
    /// Do not send the client its own publishes (5.0).
    pub no_local: bool,
    /// Keep the retain flag as published (5.0).
    pub retain_as_published: bool,
    /// When retained messages are sent: 0 at subscribe, 1 only for a new
    /// subscription, 2 never (5.0).
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    /// Options with only a QoS.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Its packet id.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// Topic filters and their options, at least one.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK or UNSUBACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// The packet id it answers.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// One code per filter, in order: for SUBACK the granted QoS (0 to 2)
    /// or a failure (0x80 and up); for UNSUBACK (5.0 only; empty on 3.1.1)
    /// 0 or a failure.
    pub codes: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Its packet id.
    pub packet_id: u16,
    /// Properties (5.0).
    pub properties: Properties,
    /// Topic filters, at least one.
    pub filters: Vec<String>,
}

/// DISCONNECT or AUTH: a reason code and properties (both 5.0; a 3.1.1
/// DISCONNECT has neither and decodes with reason 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// The reason code (0: normal).
    pub code: u8,
    /// Properties (5.0).
    pub properties: Properties,
}

/// One MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packet {
    /// CONNECT.
    Connect(Connect),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK: QoS 1 delivered.
    PubAck(Ack),
    /// PUBREC: QoS 2 received (part 1).
    PubRec(Ack),
    /// PUBREL: QoS 2 released (part 2).
    PubRel(Ack),
    /// PUBCOMP: QoS 2 complete (part 3).
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(SubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Reason),
    /// AUTH (5.0 only).
    Auth(Reason),
}

impl Packet {
    fn name(kind: u8) -> &'static str {
        match kind {
            1 => "CONNECT",
            2 => "CONNACK",
            3 => "PUBLISH",
            4 => "PUBACK",
            5 => "PUBREC",
            6 => "PUBREL",
            7 => "PUBCOMP",
            8 => "SUBSCRIBE",
            9 => "SUBACK",
            10 => "UNSUBSCRIBE",
            11 => "UNSUBACK",
            12 => "PINGREQ",
            13 => "PINGRESP",
            14 => "DISCONNECT",
            _ => "AUTH",
        }
    }

    /// Appends this packet to `out` in `version`'s encoding (a
    /// [`Connect`] uses its own version) and returns its size in bytes.
    ///
    /// On error nothing is appended. Compare the size with the peer's
    /// maximum packet size before sending; the encoder does not know it.
    pub fn encode(&self, version: Version, out: &mut BytesMut) -> Result<usize, EncodeError> {
        let mut body = BytesMut::new();
        let first = self.encode_body(version, &mut body)?;
        if body.len() > MAX_REMAINING_LENGTH {
            return Err(EncodeError::TooLarge);
        }
        let start = out.len();
        out.put_u8(first);
        put_varint(out, body.len())?;
        out.put_slice(&body);
        Ok(out.len() - start)
    }

    /// Writes the variable header and payload; returns the fixed header's
    /// first byte.
    fn encode_body(&self, version: Version, b: &mut BytesMut) -> Result<u8, EncodeError> {
        Ok(match self {
            Packet::Connect(c) => {
                let v = c.version;
                put_str(b, "MQTT")?;
                b.put_u8(v.level());
                if v == Version::V311 && c.password.is_some() && c.username.is_none() {
                    return Err(EncodeError::Invalid(
                        "3.1.1 has no password without a user name",
                    ));
                }
                let mut flags = 0u8;
                if c.clean_start {
                    flags |= 0x02;
                }
                if let Some(w) = &c.will {
                    flags |= 0x04 | (w.qos as u8) << 3;
                    if w.retain {
                        flags |= 0x20;
                    }
                }
                if c.password.is_some() {
                    flags |= 0x40;
                }
                if c.username.is_some() {
                    flags |= 0x80;
                }
                b.put_u8(flags);
                b.put_u16(c.keep_alive);
                c.properties.encode(v, b)?;
                put_str(b, &c.client_id)?;
                if let Some(w) = &c.will {
                    w.properties.encode(v, b)?;
                    put_str(b, &w.topic)?;
                    put_bin(b, &w.payload)?;
                }
                if let Some(u) = &c.username {
                    put_str(b, u)?;
                }
                if let Some(p) = &c.password {
                    put_bin(b, p.expose())?;
                }
                0x10
            }
            Packet::ConnAck(a) => {
                b.put_u8(u8::from(a.session_present));
                b.put_u8(a.code);
                a.properties.encode(version, b)?;
                0x20
            }
            Packet::Publish(p) => {
                if p.topic.contains(['+', '#']) {
                    return Err(EncodeError::Invalid("wildcard in a topic name"));
                }
                put_str(b, &p.topic)?;
                match (p.qos, p.packet_id) {
                    (QoS::AtMostOnce, None) if !p.dup => {}
                    (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) if id != 0 => b.put_u16(id),
                    _ => {
                        return Err(EncodeError::Invalid(
                            "packet id or DUP does not fit the QoS",
                        ))
                    }
                }
                p.properties.encode(version, b)?;
                b.put_slice(&p.payload);
                0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain)
            }
            Packet::PubAck(a) => encode_ack(a, version, b, 0x40)?,
            Packet::PubRec(a) => encode_ack(a, version, b, 0x50)?,
            Packet::PubRel(a) => encode_ack(a, version, b, 0x62)?,
            Packet::PubComp(a) => encode_ack(a, version, b, 0x70)?,
            Packet::Subscribe(s) => {
                if s.filters.is_empty() {
                    return Err(EncodeError::Invalid("SUBSCRIBE without filters"));
                }
                put_id(b, s.packet_id)?;
                s.properties.encode(version, b)?;
                for (filter, o) in &s.filters {
                    put_str(b, filter)?;
                    let mut byte = o.qos as u8;
                    if version == Version::V5 {
                        byte |= u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | (o.retain_handling & 0x03) << 4;
                    }
                    b.put_u8(byte);
                }
                0x82
            }
            Packet::SubAck(s) => {
                put_id(b, s.packet_id)?;
                s.properties.encode(version, b)?;
                b.put_slice(&s.codes);
                0x90
            }
            Packet::Unsubscribe(u) => {
                if u.filters.is_empty() {
                    return Err(EncodeError::Invalid("UNSUBSCRIBE without filters"));
                }
                put_id(b, u.packet_id)?;
                u.properties.encode(version, b)?;
                for filter in &u.filters {
                    put_str(b, filter)?;
                }
                0xA2
            }
            Packet::UnsubAck(s) => {
                put_id(b, s.packet_id)?;
                if version == Version::V5 {
                    s.properties.encode(version, b)?;
                    b.put_slice(&s.codes);
                }
                0xB0
            }
            Packet::PingReq => 0xC0,
            Packet::PingResp => 0xD0,
            Packet::Disconnect(r) => {
                encode_reason(r, version, b)?;
                0xE0
            }
            Packet::Auth(r) => {
                encode_reason(r, version, b)?;
                0xF0
            }
        })
    }
}

fn put_id(b: &mut BytesMut, id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::Invalid("packet id 0"));
    }
    b.put_u16(id);
    Ok(())
}

/// The ack forms: 3.1.1 has only the packet id; 5.0 may end after the
/// packet id (reason 0, no properties) or after the reason code (no
/// properties), and this encoder writes the shortest form.
fn encode_ack(a: &Ack, version: Version, b: &mut BytesMut, first: u8) -> Result<u8, EncodeError> {
    put_id(b, a.packet_id)?;
    if version == Version::V5 && (a.reason != 0 || !a.properties.is_empty()) {
        b.put_u8(a.reason);
        if !a.properties.is_empty() {
            a.properties.encode(version, b)?;
        }
    }
    Ok(first)
}

/// DISCONNECT and AUTH: empty means reason 0, no properties.
fn encode_reason(r: &Reason, version: Version, b: &mut BytesMut) -> Result<(), EncodeError> {
    if version == Version::V5 && (r.code != 0 || !r.properties.is_empty()) {
        b.put_u8(r.code);
        if !r.properties.is_empty() {
            r.properties.encode(version, b)?;
        }
    }
    Ok(())
}

fn put_varint(out: &mut BytesMut, mut n: usize) -> Result<(), EncodeError> {
    if n > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge);
    }
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if n == 0 {
            return Ok(());
        }
    }
}

fn put_str(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    if s.contains('\0') {
        return Err(EncodeError::NulInString);
    }
    put_bin(out, s.as_bytes())
}

fn put_bin(out: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong(b.len()))?;
    out.put_u16(len);
    out.put_slice(b);
    Ok(())
}

/// The outcome of reading a variable byte integer from a prefix.
enum Varint {
    /// The value and how many bytes it took.
    Done(usize, usize),
    /// The bytes end before the integer does.
    Short,
}

fn read_varint(bytes: &[u8]) -> Result<Varint, DecodeError> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // The shortest form: no trailing zero byte after the first.
            if i > 0 && byte == 0 {
                return Err(DecodeError::BadVarint);
            }
            return Ok(Varint::Done(value, i + 1));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::BadVarint)
    } else {
        Ok(Varint::Short)
    }
}

/// A cursor over one packet's body; every read is bounds-checked.
struct Reader {
    buf: Bytes,
    packet: &'static str,
}

impl Reader {
    fn short(&self) -> DecodeError {
        DecodeError::Malformed {
            packet: self.packet,
            why: "field runs past the end",
        }
    }

    fn has_remaining(&self) -> bool {
        self.buf.has_remaining()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n {
            Err(self.short())
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    fn varint(&mut self) -> Result<usize, DecodeError> {
        match read_varint(&self.buf)? {
            Varint::Done(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            Varint::Short => Err(self.short()),
        }
    }

    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader {
            buf: self.take(n)?,
            packet: self.packet,
        })
    }

    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.binary()?;
        let s = std::str::from_utf8(&b).map_err(|_| DecodeError::BadString)?;
        if s.contains('\0') {
            return Err(DecodeError::BadString);
        }
        Ok(s.to_owned())
    }

    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Malformed {
                packet: self.packet,
                why: "packet id 0",
            }),
            id => Ok(id),
        }
    }

    fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.has_remaining() {
            Err(DecodeError::Malformed {
                packet: self.packet,
                why: "bytes after the last field",
            })
        } else {
            Ok(())
        }
    }

    fn malformed(&self, why: &'static str) -> DecodeError {
        DecodeError::Malformed {
            packet: self.packet,
            why,
        }
    }
}

/// Reassembles packets from WebSocket binary messages.
///
/// Holds at most one partial packet (bounded by
/// [`max_packet_size`](Self::max_packet_size)) plus the rest of the message
/// pushed last; a packet over the limit is an error as soon as its fixed
/// header is in.
#[derive(Debug)]
pub struct Decoder {
    version: Version,
    max_packet_size: usize,
    buf: BytesMut,
}

impl Decoder {
    /// A decoder for `version` refusing packets over `max_packet_size`
    /// bytes (fixed header included; at most
    /// [`MAX_REMAINING_LENGTH`] + 5).
    pub fn new(version: Version, max_packet_size: usize) -> Self {
        Decoder {
            version,
            max_packet_size: max_packet_size.min(MAX_REMAINING_LENGTH + 5),
            buf: BytesMut::new(),
        }
    }

    /// The largest packet accepted, in bytes.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// The version packets are decoded as.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Bytes held: a partial packet and whatever follows it.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops what is buffered, for a fresh connection.
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Appends one WebSocket binary message.
    pub fn push(&mut self, message: &[u8]) {
        self.buf.extend_from_slice(message);
    }

    /// The next whole packet, `Ok(None)` if more bytes are needed.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, DecodeError> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let (len, header) = match read_varint(&self.buf[1..])? {
            Varint::Done(len, n) => (len, n + 1),
            Varint::Short => return Ok(None),
        };
        let size = header + len;
        if size > self.max_packet_size {
            return Err(DecodeError::TooLarge {
                size,
                limit: self.max_packet_size,
            });
        }
        if self.buf.len() < size {
            return Ok(None);
        }
        let mut packet = self.buf.split_to(size).freeze();
        packet.advance(header);
        decode_body(first, packet, self.version).map(Some)
    }
}

fn decode_body(first: u8, body: Bytes, version: Version) -> Result<Packet, DecodeError> {
    let kind = first >> 4;
    let flags = first & 0x0F;
    let expected_flags = match kind {
        0 => return Err(DecodeError::BadHeader(first)),
        3 => flags,
        6 | 8 | 10 => 0x02,
        15 if version == Version::V311 => return Err(DecodeError::BadHeader(first)),
        _ => 0,
    };
    if flags != expected_flags {
        return Err(DecodeError::BadHeader(first));
    }
    let mut r = Reader {
        buf: body,
        packet: Packet::name(kind),
    };
    let packet = match kind {
        1 => Packet::Connect(decode_connect(&mut r)?),
        2 => {
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(r.malformed("reserved acknowledge flags"));
            }
            Packet::ConnAck(ConnAck {
                session_present: ack_flags == 1,
                code: r.u8()?,
                properties: Properties::decode(&mut r, version)?,
            })
        }
        3 => {
            let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::BadHeader(first))?;
            let dup = flags & 0x08 != 0;
            if dup && qos == QoS::AtMostOnce {
                return Err(DecodeError::BadHeader(first));
            }
            let topic = r.string()?;
            if topic.contains(['+', '#']) {
                return Err(r.malformed("wildcard in the topic name"));
            }
            let packet_id = match qos {
                QoS::AtMostOnce => None,
                _ => Some(r.packet_id()?),
            };
            let properties = Properties::decode(&mut r, version)?;
            let aliased = properties
                .0
                .iter()
                .any(|p| matches!(p, Property::TopicAlias(_)));
            if topic.is_empty() && !aliased {
                return Err(r.malformed("empty topic name"));
            }
            Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                packet_id,
                properties,
                payload: r.rest(),
            })
        }
        4..=7 => {
            let packet_id = r.packet_id()?;
            let (reason, properties) = if version == Version::V5 && r.has_remaining() {
                let reason = r.u8()?;
                let properties = if r.has_remaining() {
                    Properties::decode(&mut r, version)?
                } else {
                    Properties::new()
                };
                (reason, properties)
            } else {
                (0, Properties::new())
            };
            let ack = Ack {
                packet_id,
                reason,
                properties,
            };
            match kind {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                6 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        8 => {
            let packet_id = r.packet_id()?;
            let properties = Properties::decode(&mut r, version)?;
            let mut filters = Vec::new();
            while r.has_remaining() {
                let filter = r.string()?;
                let byte = r.u8()?;
                let reserved = match version {
                    Version::V311 => 0xFC,
                    Version::V5 => 0xC0,
                };
                let qos = QoS::from_u8(byte & 0x03);
                let retain_handling = (byte >> 4) & 0x03;
                let (Some(qos), 0, 0..=2) = (qos, byte & reserved, retain_handling) else {
                    return Err(r.malformed("bad subscription options"));
                };
                filters.push((
                    filter,
                    SubscriptionOptions {
                        qos,
                        no_local: byte & 0x04 != 0,
                        retain_as_published: byte & 0x08 != 0,
                        retain_handling,
                    },
                ));
            }
            if filters.is_empty() {
                return Err(r.malformed("no topic filters"));
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        }
        9 | 11 => {
            let packet_id = r.packet_id()?;
            let (properties, codes) = if kind == 11 && version == Version::V311 {
                (Properties::new(), Vec::new())
            } else {
                let properties = Properties::decode(&mut r, version)?;
                (properties, r.rest().to_vec())
            };
            if kind == 9 && codes.is_empty() {
                return Err(r.malformed("no return codes"));
            }
            let ack = SubAck {
                packet_id,
                properties,
                codes,
            };
            if kind == 9 {
                Packet::SubAck(ack)
            } else {
                Packet::UnsubAck(ack)
            }
        }
        10 => {
            let packet_id = r.packet_id()?;
            let properties = Properties::decode(&mut r, version)?;
            let mut filters = Vec::new();
            while r.has_remaining() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(r.malformed("no topic filters"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        }
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        _ => {
            let reason = if version == Version::V5 && r.has_remaining() {
                let code = r.u8()?;
                let properties = if r.has_remaining() {
                    Properties::decode(&mut r, version)?
                } else {
                    Properties::new()
                };
                Reason { code, properties }
            } else {
                Reason {
                    code: 0,
                    properties: Properties::new(),
                }
            };
            if kind == 14 {
                Packet::Disconnect(reason)
            } else {
                Packet::Auth(reason)
            }
        }
    };
    r.end()?;
    Ok(packet)
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        _ => return Err(DecodeError::UnsupportedProtocol { name, level }),
    };
    let flags = r.u8()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03);
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if flags & 0x01 != 0
        || will_qos.is_none()
        || (!will_flag && (flags & 0x38 != 0))
        || (version == Version::V311 && has_password && !has_username)
    {
        return Err(r.malformed("bad connect flags"));
    }
    let keep_alive = r.u16()?;
    let properties = Properties::decode(r, version)?;
    let client_id = r.string()?;
    let will = match (will_flag, will_qos) {
        (true, Some(qos)) => {
            let properties = Properties::decode(r, version)?;
            Some(Will {
                topic: r.string()?,
                payload: r.binary()?,
                qos,
                retain: will_retain,
                properties,
            })
        }
        _ => None,
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(Password(r.binary()?))
    } else {
        None
    };
    Ok(Connect {
        version,
        client_id,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        username,
        password,
        will,
        properties,
    })
}

/// Fuzzing entry point: any bytes as an MQTT stream (the first byte picks
/// the version, the next four the chunk sizes), pushed whole and in
/// chunks: the same packets and error either way, bounded buffering, never
/// a panic, and every packet re-encodes to bytes that decode to an equal
/// packet.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub fn fuzz_decode(data: &[u8]) {
    const LIMIT: usize = 4096;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let version = if pick & 1 == 0 {
        Version::V311
    } else {
        Version::V5
    };
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let run = |chunks: &mut dyn Iterator<Item = &[u8]>| {
        let mut d = Decoder::new(version, LIMIT);
        let mut packets = Vec::new();
        for chunk in chunks {
            d.push(chunk);
            loop {
                match d.next_packet() {
                    Ok(Some(p)) => packets.push(p),
                    Ok(None) => break,
                    Err(e) => return (packets, Some(e)),
                }
            }
            assert!(
                d.buffered() <= LIMIT + chunk.len(),
                "{} buffered",
                d.buffered()
            );
        }
        (packets, None)
    };
    let expected = run(&mut std::iter::once(stream));
    let mut i = 0;
    let mut chunks = std::iter::from_fn(|| {
        let size = usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(7)) + 1;
        i += 1;
        size.into()
    });
    let mut at = 0;
    let mut split = std::iter::from_fn(|| {
        if at >= stream.len() {
            return None;
        }
        let end = stream.len().min(at + chunks.next().unwrap_or(1));
        let chunk = &stream[at..end];
        at = end;
        Some(chunk)
    });
    assert_eq!(run(&mut split), expected, "splitting changed the result");
    for packet in expected.0 {
        let mut out = BytesMut::new();
        let encoded = packet.encode(version, &mut out);
        // A CONNECT carries its own version; the rest re-encode as read.
        let version = match &packet {
            Packet::Connect(c) => c.version,
            _ => version,
        };
        let Ok(_) = encoded else {
            panic!("{packet:?} does not re-encode: {encoded:?}");
        };
        let mut d = Decoder::new(version, MAX_REMAINING_LENGTH + 5);
        d.push(&out);
        assert_eq!(d.next_packet(), Ok(Some(packet)));
        assert_eq!(d.buffered(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(version: Version, bytes: &[u8]) -> Result<Vec<Packet>, DecodeError> {
        let mut d = Decoder::new(version, DEFAULT_MAX_PACKET_SIZE);
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(p) = d.next_packet()? {
            out.push(p);
        }
        Ok(out)
    }

    fn encode(version: Version, p: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        let n = p.encode(version, &mut out).unwrap();
        assert_eq!(n, out.len());
        out.to_vec()
    }

    #[test]
    fn connect_311_matches_the_spec_layout() {
        let c = Packet::Connect(Connect {
            version: Version::V311,
            client_id: "c1".into(),
            clean_start: false,
            keep_alive: 60,
            username: Some("u".into()),
            password: Some(Password::new(&b"p"[..])),
            will: None,
            properties: Properties::new(),
        });
        let bytes = encode(Version::V311, &c);
        assert_eq!(
            bytes,
            [
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC0, 0, 60, 0, 2, b'c', b'1', 0, 1,
                b'u', 0, 1, b'p'
            ]
        );
        assert_eq!(decode_all(Version::V311, &bytes).unwrap(), [c]);
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let p = Password::new(&b"hunter2"[..]);
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn connack_v5_properties_are_read() {
        // session present, reason 0, properties: max packet size 256,
        // server keep alive 30, assigned id "a", server reference "s".
        let bytes = [
            0x20, 19, 1, 0, 16, 0x27, 0, 0, 1, 0, 0x13, 0, 30, 0x12, 0, 1, b'a', 0x1C, 0, 1, b's',
        ];
        let [Packet::ConnAck(a)] = &decode_all(Version::V5, &bytes).unwrap()[..] else {
            panic!("not one CONNACK");
        };
        assert!(a.session_present);
        assert_eq!(a.code, 0);
        assert_eq!(a.properties.maximum_packet_size(), Some(256));
        assert_eq!(a.properties.server_keep_alive(), Some(30));
        assert_eq!(a.properties.assigned_client_identifier(), Some("a"));
        assert_eq!(a.properties.server_reference(), Some("s"));
        assert_eq!(encode(Version::V5, &Packet::ConnAck(a.clone())), bytes);
    }

    #[test]
    fn several_packets_in_one_message_and_one_across_many() {
        let mut stream = Vec::new();
        let packets = [
            Packet::PingResp,
            Packet::PubAck(Ack {
                packet_id: 7,
                reason: 0,
                properties: Properties::new(),
            }),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "a/b".into(),
                packet_id: Some(9),
                properties: Properties(vec![Property::UserProperty("k".into(), "v".into())]),
                payload: Bytes::from(vec![1u8; 300]),
            }),
        ];
        for p in &packets {
            stream.extend(encode(Version::V5, p));
        }
        assert_eq!(decode_all(Version::V5, &stream).unwrap(), packets);
        let mut d = Decoder::new(Version::V5, DEFAULT_MAX_PACKET_SIZE);
        let mut got = Vec::new();
        for byte in &stream {
            d.push(std::slice::from_ref(byte));
            while let Some(p) = d.next_packet().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got, packets);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn an_oversized_packet_is_refused_from_its_header() {
        let mut d = Decoder::new(Version::V311, 100);
        // PUBLISH announcing 200 bytes; only the fixed header is here.
        d.push(&[0x30, 0xC8, 0x01]);
        assert_eq!(
            d.next_packet(),
            Err(DecodeError::TooLarge {
                size: 203,
                limit: 100
            })
        );
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let v5_cases: &[&[u8]] = &[
            &[0x00, 0x00],                                  // type 0
            &[0xC1, 0x00],                                  // PINGREQ with flags
            &[0x80, 0x03, 0, 1, 0],                         // SUBSCRIBE without 0b0010
            &[0x3E, 0x00],                                  // QoS 3
            &[0x38, 0x03, 0, 1, b'a'],                      // DUP at QoS 0
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],          // five-byte length
            &[0x30, 0x80, 0x00],                            // not the shortest form
            &[0x30, 0x03, 0, 5, b'a'],                      // topic past the end
            &[0x30, 0x04, 0, 1, b'+', 0],                   // wildcard topic
            &[0x30, 0x03, 0, 0, 0],                         // empty topic, no alias
            &[0x32, 0x05, 0, 1, b'a', 0, 0],                // packet id 0
            &[0x30, 0x05, 0, 1, b'a', 2, 0x7F],             // unknown property
            &[0x40, 0x08, 0, 1, 0, 4, 0x1F, 0, 9, 0],       // reason string short
            &[0x20, 0x05, 0, 0, 2, 0x13, 0],                // keep alive short
            &[0x20, 0x09, 0, 0, 6, 0x13, 0, 1, 0x13, 0, 1], // duplicate property
            &[0x20, 0x03, 2, 0, 0],                         // reserved ack flags
            &[0x82, 0x03, 0, 1, 0],                         // no filters
            &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x03],       // QoS 3 option
            &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30],       // retain handling 3
            &[0x90, 0x03, 0, 1, 0],                         // SUBACK without codes
            &[0x30, 0x04, 0, 1, 0xFF, 0],                   // invalid UTF-8
            &[0x30, 0x04, 0, 1, 0, 0],                      // U+0000
            &[0xD0, 0x01, 0],                               // PINGRESP with a body
            &[0x10, 0x07, 0, 4, b'M', b'Q', b'T', b'T', 3], // MQTT 3.1
        ];
        for case in v5_cases {
            assert!(decode_all(Version::V5, case).is_err(), "{case:02x?}");
        }
        let v311_cases: &[&[u8]] = &[
            &[0xF0, 0x00],                         // AUTH
            &[0x40, 0x03, 0, 1, 0],                // PUBACK with a reason
            &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x04], // 5.0 option bit
        ];
        for case in v311_cases {
            assert!(decode_all(Version::V311, case).is_err(), "{case:02x?}");
        }
    }

    #[test]
    fn truncations_never_panic_and_wait_or_fail() {
        let p = Packet::Connect(Connect {
            version: Version::V5,
            client_id: "id".into(),
            clean_start: true,
            keep_alive: 5,
            username: Some("u".into()),
            password: Some(Password::new(&b"pw"[..])),
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties(vec![Property::WillDelayInterval(3)]),
            }),
            properties: Properties(vec![Property::SessionExpiryInterval(600)]),
        });
        let bytes = encode(Version::V5, &p);
        for cut in 0..bytes.len() {
            assert_eq!(decode_all(Version::V5, &bytes[..cut]), Ok(vec![]));
        }
        assert_eq!(decode_all(Version::V5, &bytes), Ok(vec![p]));
    }

    #[test]
    fn encoder_refuses_what_mqtt_cannot_carry() {
        let publish = |qos, packet_id, topic: &str| {
            Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.into(),
                packet_id,
                properties: Properties::new(),
                payload: Bytes::new(),
            })
        };
        let mut out = BytesMut::new();
        for bad in [
            publish(QoS::AtLeastOnce, None, "a"),
            publish(QoS::AtMostOnce, Some(1), "a"),
            publish(QoS::AtLeastOnce, Some(0), "a"),
            publish(QoS::AtMostOnce, None, "a/#"),
            publish(QoS::AtMostOnce, None, "a\0"),
            publish(QoS::AtMostOnce, None, &"x".repeat(70_000)),
        ] {
            assert!(bad.encode(Version::V5, &mut out).is_err());
        }
        assert!(out.is_empty());
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-z/]{0,8}"
    }

    fn topic() -> impl Strategy<Value = String> {
        "[a-z/]{1,8}"
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn property() -> impl Strategy<Value = Property> {
        prop_oneof![
            any::<u32>().prop_map(Property::SessionExpiryInterval),
            any::<u32>().prop_map(Property::MaximumPacketSize),
            any::<u16>().prop_map(Property::ServerKeepAlive),
            text().prop_map(Property::ReasonString),
            (text(), text()).prop_map(|(k, v)| Property::UserProperty(k, v)),
            (1u32..MAX_REMAINING_LENGTH as u32).prop_map(Property::SubscriptionIdentifier),
            proptest::collection::vec(any::<u8>(), 0..8)
                .prop_map(|b| Property::CorrelationData(b.into())),
        ]
    }

    fn properties(version: Version) -> BoxedStrategy<Properties> {
        match version {
            Version::V311 => Just(Properties::new()).boxed(),
            // Only repeatable kinds twice: the rest at most once.
            Version::V5 => proptest::collection::vec(property(), 0..4)
                .prop_map(|ps| {
                    let mut seen = Vec::new();
                    Properties(
                        ps.into_iter()
                            .filter(|p| {
                                let fresh = p.repeatable() || !seen.contains(&p.id());
                                seen.push(p.id());
                                fresh
                            })
                            .collect(),
                    )
                })
                .boxed(),
        }
    }

    fn ack(version: Version) -> impl Strategy<Value = Ack> {
        let reason = match version {
            Version::V311 => Just(0u8).boxed(),
            Version::V5 => any::<u8>().boxed(),
        };
        (1..=u16::MAX, reason, properties(version)).prop_map(|(packet_id, reason, properties)| {
            Ack {
                packet_id,
                reason,
                properties,
            }
        })
    }

    fn packet(version: Version) -> impl Strategy<Value = Packet> {
        let props = move || properties(version);
        let options = move || {
            (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(q, nl, rap, rh)| {
                match version {
                    Version::V311 => SubscriptionOptions::qos(q),
                    Version::V5 => SubscriptionOptions {
                        qos: q,
                        no_local: nl,
                        retain_as_published: rap,
                        retain_handling: rh,
                    },
                }
            })
        };
        let connect = (
            text(),
            any::<bool>(),
            any::<u16>(),
            proptest::option::of(text()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
            props(),
        )
            .prop_map(
                move |(client_id, clean_start, keep_alive, username, pw, properties)| {
                    let password = pw
                        .filter(|_| version == Version::V5 || username.is_some())
                        .map(Password::new);
                    Packet::Connect(Connect {
                        version,
                        client_id,
                        clean_start,
                        keep_alive,
                        username,
                        password,
                        will: None,
                        properties,
                    })
                },
            );
        let publish = (
            qos(),
            any::<bool>(),
            any::<bool>(),
            topic(),
            1..=u16::MAX,
            props(),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: (!at_most_once).then_some(id),
                    properties,
                    payload: payload.into(),
                })
            });
        let sub_codes = proptest::collection::vec(any::<u8>(), 1..4);
        prop_oneof![
            connect,
            (any::<bool>(), any::<u8>(), props()).prop_map(
                |(session_present, code, properties)| {
                    Packet::ConnAck(ConnAck {
                        session_present,
                        code,
                        properties,
                    })
                }
            ),
            publish,
            ack(version).prop_map(Packet::PubAck),
            ack(version).prop_map(Packet::PubRec),
            ack(version).prop_map(Packet::PubRel),
            ack(version).prop_map(Packet::PubComp),
            (
                1..=u16::MAX,
                props(),
                proptest::collection::vec((topic(), options()), 1..4)
            )
                .prop_map(|(packet_id, properties, filters)| Packet::Subscribe(
                    Subscribe {
                        packet_id,
                        properties,
                        filters
                    }
                )),
            (1..=u16::MAX, props(), sub_codes.clone()).prop_map(
                |(packet_id, properties, codes)| Packet::SubAck(SubAck {
                    packet_id,
                    properties,
                    codes
                })
            ),
            (
                1..=u16::MAX,
                props(),
                proptest::collection::vec(topic(), 1..4)
            )
                .prop_map(|(packet_id, properties, filters)| Packet::Unsubscribe(
                    Unsubscribe {
                        packet_id,
                        properties,
                        filters
                    }
                )),
            (1..=u16::MAX, props(), sub_codes).prop_map(move |(packet_id, properties, codes)| {
                Packet::UnsubAck(match version {
                    Version::V311 => SubAck {
                        packet_id,
                        properties: Properties::new(),
                        codes: Vec::new(),
                    },
                    Version::V5 => SubAck {
                        packet_id,
                        properties,
                        codes,
                    },
                })
            }),
            Just(Packet::PingReq),
            Just(Packet::PingResp),
            (any::<u8>(), props()).prop_map(move |(code, properties)| {
                Packet::Disconnect(match version {
                    Version::V311 => Reason {
                        code: 0,
                        properties,
                    },
                    Version::V5 => Reason { code, properties },
                })
            }),
        ]
    }

    fn version() -> impl Strategy<Value = Version> {
        prop_oneof![Just(Version::V311), Just(Version::V5)]
    }

    proptest! {
        #[test]
        fn packets_round_trip_whole_and_split(
            (version, packets) in version().prop_flat_map(|v| {
                (Just(v), proptest::collection::vec(packet(v), 1..6))
            }),
            chunk in 1usize..20,
        ) {
            let mut stream = Vec::new();
            for p in &packets {
                stream.extend(encode(version, p));
            }
            prop_assert_eq!(&decode_all(version, &stream).unwrap(), &packets);
            let mut d = Decoder::new(version, DEFAULT_MAX_PACKET_SIZE);
            let mut got = Vec::new();
            for part in stream.chunks(chunk) {
                d.push(part);
                while let Some(p) = d.next_packet().unwrap() {
                    got.push(p);
                }
            }
            prop_assert_eq!(got, packets);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(
            data in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            fuzz_decode(&data);
        }
    }
}
