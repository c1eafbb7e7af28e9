//! Packet codec for Socket.IO (protocol 5) over Engine.IO (protocol 4) on
//! the WebSocket transport: one Engine.IO packet per text message.
//!
//! An Engine.IO packet is one type digit and its data: `0` open (a JSON
//! object with the session id and the ping timing), `1` close, `2` ping,
//! `3` pong, `4` message, `5` upgrade, `6` noop. A message carries one
//! Socket.IO packet: a type digit, the attachment count and a `-` for the
//! binary types, the namespace and a `,` unless it is `/`, an acknowledgement
//! id in decimal, then the JSON data.
//!
//! [`decode_engine`] splits the first layer, [`Packet::decode`] the second,
//! under [`Limits`] on the text's length, the number of event arguments and
//! the namespace's length and the data's nesting depth, all checked by one
//! scan before the JSON is parsed, once. [`Packet::encode`] writes a packet
//! back. Binary messages and the binary packet types (5 and 6, whose
//! attachments follow in separate WebSocket messages) are refused with
//! [`DecodeError::Binary`]: this codec carries JSON only. Decoding does not
//! copy: the namespace and the data borrow from the input.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Bounds on what the decoders accept; anything beyond one is a
/// [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest text, in bytes. Default 1 000 000, the Socket.IO
    /// server's own default message limit (`maxHttpBufferSize`).
    pub max_len: usize,
    /// The most arguments an event or acknowledgement may carry (the event
    /// name counted). Default 256.
    pub max_args: usize,
    /// The longest namespace, in bytes. Default 256.
    pub max_namespace: usize,
    /// The deepest nesting of arrays and objects in a packet's data, its
    /// own array or object included. Default 32.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_len: 1_000_000,
            max_args: 256,
            max_namespace: 256,
            max_depth: 32,
        }
    }
}

impl Limits {
    /// Sets [`max_len`](Self::max_len).
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// Sets [`max_args`](Self::max_args).
    pub fn max_args(mut self, args: usize) -> Self {
        self.max_args = args;
        self
    }
}

/// Why a text is not a packet this codec takes. From a server, every
/// variant is a protocol violation by the peer (or, for
/// [`Binary`](Self::Binary), a feature this client does not carry).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`Limits::max_len`].
    #[error("packet of {len} bytes, over the limit of {max}")]
    TooLong {
        /// The text's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty text.
    #[error("empty packet")]
    Empty,
    /// A packet type this codec does not know.
    #[error("unknown {layer} packet type {found:?}")]
    UnknownType {
        /// `"Engine.IO"` or `"Socket.IO"`.
        layer: &'static str,
        /// The type character.
        found: char,
    },
    /// Binary data: a binary WebSocket message or a packet with
    /// attachments (types 5 and 6).
    #[error("binary Socket.IO packets are not supported (JSON only)")]
    Binary,
    /// A namespace longer than [`Limits::max_namespace`], or one without
    /// the `,` that ends it.
    #[error("malformed namespace")]
    Namespace,
    /// An acknowledgement id that does not fit a `u64`.
    #[error("acknowledgement id out of range")]
    AckId,
    /// Nested deeper than [`Limits::max_depth`].
    #[error("data nested deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More arguments than [`Limits::max_args`].
    #[error("{len} arguments, over the limit of {max}")]
    TooManyArgs {
        /// How many came.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The data is not JSON, or not the JSON this packet type needs
    /// (serde_json's explanation, or what was expected).
    #[error("bad packet data: {0}")]
    Data(String),
    /// A field the packet needs is absent.
    #[error("{kind} without {what}")]
    Missing {
        /// The packet kind.
        kind: &'static str,
        /// What it lacks.
        what: &'static str,
    },
}

/// An Engine.IO packet as it came, its data borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnginePacket<'a> {
    /// The handshake: the server's session and its ping timing.
    Open(Open),
    /// The server closes the Engine.IO session.
    Close,
    /// A ping (the server's, in protocol 4), with optional data.
    Ping(&'a str),
    /// A pong, with optional data.
    Pong(&'a str),
    /// A message: a Socket.IO packet, decoded with [`Packet::decode`].
    Message(&'a str),
    /// An upgrade (only meaningful when starting on long-polling).
    Upgrade,
    /// A noop (only meaningful on long-polling).
    Noop,
}

/// The Engine.IO open packet's fields.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Open {
    /// The Engine.IO session id.
    pub sid: String,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// How long after a ping the server waits for the pong (and, as the
    /// client sees it, how late a ping may come).
    pub ping_timeout: Duration,
    /// The largest message the server takes, if it said.
    pub max_payload: Option<u64>,
}

// The sid identifies the connection to the server: kept out of logs.
impl std::fmt::Debug for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Open")
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("max_payload", &self.max_payload)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenJson {
    sid: String,
    ping_interval: u64,
    ping_timeout: u64,
    max_payload: Option<u64>,
}

/// Splits an Engine.IO text packet.
///
/// # Errors
/// A [`DecodeError`] for an empty, oversized or unknown packet, or an open
/// packet whose data is not the object the protocol defines.
pub fn decode_engine(text: &str, limits: Limits) -> Result<EnginePacket<'_>, DecodeError> {
    if text.len() > limits.max_len {
        return Err(DecodeError::TooLong {
            len: text.len(),
            max: limits.max_len,
        });
    }
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => {
            let open: OpenJson =
                serde_json::from_str(rest).map_err(|e| DecodeError::Data(e.to_string()))?;
            EnginePacket::Open(Open {
                sid: open.sid,
                ping_interval: Duration::from_millis(open.ping_interval),
                ping_timeout: Duration::from_millis(open.ping_timeout),
                max_payload: open.max_payload,
            })
        }
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping(rest),
        '3' => EnginePacket::Pong(rest),
        '4' => EnginePacket::Message(rest),
        '5' => EnginePacket::Upgrade,
        '6' => EnginePacket::Noop,
        found => {
            return Err(DecodeError::UnknownType {
                layer: "Engine.IO",
                found,
            })
        }
    })
}

/// The Engine.IO pong that answers a ping with `data`.
pub fn encode_pong(data: &str) -> String {
    format!("3{data}")
}

/// The Socket.IO packet types this codec carries (the binary ones are
/// refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketKind {
    /// `0`: join a namespace (client, with auth) or joined (server, with
    /// the socket's ids).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event: `[name, args...]`.
    Event,
    /// `3`: the answer to an event sent with an acknowledgement id.
    Ack,
    /// `4`: the server refused to join the namespace.
    ConnectError,
}

impl PacketKind {
    fn digit(self) -> char {
        match self {
            PacketKind::Connect => '0',
            PacketKind::Disconnect => '1',
            PacketKind::Event => '2',
            PacketKind::Ack => '3',
            PacketKind::ConnectError => '4',
        }
    }

    /// The protocol's name for the kind, for errors.
    pub fn name(self) -> &'static str {
        match self {
            PacketKind::Connect => "CONNECT",
            PacketKind::Disconnect => "DISCONNECT",
            PacketKind::Event => "EVENT",
            PacketKind::Ack => "ACK",
            PacketKind::ConnectError => "CONNECT_ERROR",
        }
    }
}

/// One Socket.IO packet, its namespace and data borrowed from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// What it is.
    pub kind: PacketKind,
    /// Its namespace (`/` when the text names none).
    pub namespace: &'a str,
    /// The acknowledgement id, for events that want one and their acks.
    pub ack_id: Option<u64>,
    /// The JSON data, valid JSON when present.
    pub data: Option<&'a str>,
}

impl<'a> Packet<'a> {
    /// Decodes the Socket.IO packet in an Engine.IO message's data.
    ///
    /// # Errors
    /// A [`DecodeError`] for anything malformed, oversized or binary.
    pub fn decode(text: &'a str, limits: Limits) -> Result<Self, DecodeError> {
        Self::decode_with_args(text, limits).map(|(packet, _)| packet)
    }

    /// [`decode`](Self::decode), and for an EVENT or an ACK its argument
    /// list as [`args`](Self::args) gives it (empty for the other kinds):
    /// the data is scanned and parsed once, not once to check it and again
    /// for its arguments.
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_with_args(
        text: &'a str,
        limits: Limits,
    ) -> Result<(Self, Vec<&'a RawValue>), DecodeError> {
        if text.len() > limits.max_len {
            return Err(DecodeError::TooLong {
                len: text.len(),
                max: limits.max_len,
            });
        }
        let mut chars = text.chars();
        let kind = match chars.next().ok_or(DecodeError::Empty)? {
            '0' => PacketKind::Connect,
            '1' => PacketKind::Disconnect,
            '2' => PacketKind::Event,
            '3' => PacketKind::Ack,
            '4' => PacketKind::ConnectError,
            '5' | '6' => return Err(DecodeError::Binary),
            found => {
                return Err(DecodeError::UnknownType {
                    layer: "Socket.IO",
                    found,
                })
            }
        };
        let mut rest = chars.as_str();
        let mut namespace = "/";
        if rest.starts_with('/') {
            // A namespace runs to its `,` (or, with nothing after it, to the
            // end: `41/chat`).
            let end = rest.find(',').unwrap_or(rest.len());
            if end > limits.max_namespace {
                return Err(DecodeError::Namespace);
            }
            namespace = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let ack_id = if digits > 0 {
            let id = rest[..digits].parse().map_err(|_| DecodeError::AckId)?;
            rest = &rest[digits..];
            Some(id)
        } else {
            None
        };
        let with_args = matches!(kind, PacketKind::Event | PacketKind::Ack);
        let mut args = Vec::new();
        let data = if rest.is_empty() {
            None
        } else if !rest.starts_with(['{', '[', '"']) {
            // Socket.IO data is an object, an array or a string; anything
            // else (a number) would run into the ack id when written back.
            return Err(DecodeError::Data(
                "expected an object, array or string".into(),
            ));
        } else {
            let shape = shape(rest);
            if shape.deepest > limits.max_depth {
                return Err(DecodeError::TooDeep {
                    max: limits.max_depth,
                });
            }
            if with_args {
                // The argument list proves the data is JSON; the text
                // without trailing whitespace, as a parsed value's would be.
                args = parse_args(rest, shape.items, limits)?;
                Some(rest.trim_end_matches([' ', '\t', '\n', '\r']))
            } else {
                // Parsed once to prove it is JSON; kept as the borrowed text.
                let raw: &RawValue =
                    serde_json::from_str(rest).map_err(|e| DecodeError::Data(e.to_string()))?;
                Some(raw.get())
            }
        };
        let packet = Packet {
            kind,
            namespace,
            ack_id,
            data,
        };
        packet.check(&args)?;
        Ok((packet, args))
    }

    /// Checks what the kind needs; `args` are the EVENT's or ACK's.
    fn check(&self, args: &[&RawValue]) -> Result<(), DecodeError> {
        let missing = |what| DecodeError::Missing {
            kind: self.kind.name(),
            what,
        };
        match self.kind {
            PacketKind::Event => match args.first() {
                Some(name) if name.get().starts_with('"') => Ok(()),
                _ => Err(missing("an event name")),
            },
            PacketKind::Ack => self.ack_id.map(drop).ok_or(missing("an id")),
            PacketKind::Connect | PacketKind::ConnectError => match self.data {
                None => Ok(()),
                Some(d) if d.starts_with('{') => Ok(()),
                Some(_) if self.kind == PacketKind::ConnectError => Ok(()),
                Some(_) => Err(DecodeError::Data("CONNECT data must be an object".into())),
            },
            PacketKind::Disconnect => Ok(()),
        }
    }

    /// The data as an argument list (events and acks), each argument raw
    /// JSON.
    ///
    /// # Errors
    /// [`DecodeError::Data`] when the data is not a JSON array,
    /// [`DecodeError::TooManyArgs`] over [`Limits::max_args`].
    pub fn args(&self, limits: Limits) -> Result<Vec<&'a RawValue>, DecodeError> {
        let Some(data) = self.data else {
            return Ok(Vec::new());
        };
        parse_args(data, shape(data).items, limits)
    }

    /// Writes the packet as Engine.IO message data (without the leading
    /// `4`).
    pub fn encode(&self) -> String {
        let mut s =
            String::with_capacity(2 + self.namespace.len() + 20 + self.data.map_or(0, str::len));
        s.push(self.kind.digit());
        if self.namespace != "/" {
            s.push_str(self.namespace);
            s.push(',');
        }
        if let Some(id) = self.ack_id {
            s.push_str(&id.to_string());
        }
        if let Some(data) = self.data {
            s.push_str(data);
        }
        s
    }

    /// Writes the packet as a whole Engine.IO message (`4` and the
    /// packet).
    pub fn encode_message(&self) -> String {
        let mut s = String::from("4");
        s.push_str(&self.encode());
        s
    }
}

/// What one scan of a JSON text tells before it is parsed.
struct Shape {
    /// The deepest nesting of arrays and objects.
    deepest: usize,
    /// How many items the outermost array or object holds.
    items: usize,
}

/// Scans `json` once, brackets and commas inside strings not counted, so
/// a hostile text costs one linear pass and never a parser's recursion.
/// String bodies, most of an event's bytes, are skipped a quote or a
/// backslash at a time ([`string_end`]), not a byte at a time.
fn shape(json: &str) -> Shape {
    let bytes = json.as_bytes();
    let (mut depth, mut deepest, mut commas, mut any) = (0usize, 0usize, 0usize, false);
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        at += 1;
        if depth == 1 && !b.is_ascii_whitespace() && !matches!(b, b']' | b'}' | b',') {
            any = true;
        }
        match b {
            b'"' => at = string_end(bytes, at),
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => commas += 1,
            _ => {}
        }
    }
    Shape {
        deepest,
        items: if any { commas + 1 } else { 0 },
    }
}

/// Where the string whose body starts at `from` ends: just past its
/// closing quote, or the end of `bytes` when it has none. A backslash
/// escapes the byte after it.
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    loop {
        let rest = bytes.get(from..).unwrap_or_default();
        let Some(found) = memchr::memchr2(b'"', b'\\', rest) else {
            return bytes.len();
        };
        let at = from + found;
        if bytes.get(at) == Some(&b'"') {
            return at + 1;
        }
        from = at + 2;
    }
}

/// The argument list in `data`, whose [`shape`] counted `items`: refused
/// before parsing when there are too many, so a huge list costs one scan.
fn parse_args(data: &str, items: usize, limits: Limits) -> Result<Vec<&RawValue>, DecodeError> {
    if !data.starts_with('[') {
        return Err(DecodeError::Data("arguments must be an array".into()));
    }
    if items > limits.max_args {
        return Err(DecodeError::TooManyArgs {
            len: items,
            max: limits.max_args,
        });
    }
    serde_json::from_str(data).map_err(|e| DecodeError::Data(e.to_string()))
}

/// The server's CONNECT data: the socket's id and, with connection state
/// recovery on, its private session id.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Connected {
    /// The socket id.
    pub sid: String,
    /// The private session id, to present when reconnecting.
    pub pid: Option<String>,
}

// Both ids are credentials of a kind: whoever holds the pid can take over
// the session's missed events.
impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("pid", &self.pid.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Connected {
    /// Reads a server's CONNECT data.
    ///
    /// # Errors
    /// [`DecodeError::Missing`] when there is none or it lacks the sid.
    pub fn parse(packet: &Packet<'_>) -> Result<Self, DecodeError> {
        let data = packet.data.ok_or(DecodeError::Missing {
            kind: "CONNECT",
            what: "the socket id",
        })?;
        serde_json::from_str(data).map_err(|_| DecodeError::Missing {
            kind: "CONNECT",
            what: "a string sid",
        })
    }
}

/// The message of a CONNECT_ERROR: its `message` field, or the data as it
/// is when it has none (older servers send a bare string).
pub fn connect_error_message(packet: &Packet<'_>) -> String {
    #[derive(Deserialize)]
    struct WithMessage {
        message: String,
    }
    let Some(data) = packet.data else {
        return String::new();
    };
    if let Ok(m) = serde_json::from_str::<WithMessage>(data) {
        return m.message;
    }
    serde_json::from_str::<String>(data).unwrap_or_else(|_| data.to_owned())
}

/// Fuzz entry point: any bytes as a received text message never panic, and
/// whatever decodes as a Socket.IO packet re-encodes to text that decodes
/// to an equal packet.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub fn fuzz_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default().max_args(8);
    if let Ok(EnginePacket::Message(m)) = decode_engine(text, limits) {
        if let Ok(packet) = Packet::decode(m, limits) {
            let again = packet.encode_message();
            assert_eq!(
                decode_engine(&again, limits),
                Ok(EnginePacket::Message(&again[1..]))
            );
            assert_eq!(Packet::decode(&again[1..], limits), Ok(packet), "{again}");
            let _ = Connected::parse(&packet);
            let _ = connect_error_message(&packet);
        }
    }
    if let Ok(packet) = Packet::decode(text, limits) {
        let again = packet.encode();
        assert_eq!(Packet::decode(&again, limits), Ok(packet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn decodes_the_open_packet() {
        let text = r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let Ok(EnginePacket::Open(open)) = decode_engine(text, limits()) else {
            panic!("not an open packet");
        };
        assert_eq!(open.ping_interval, Duration::from_secs(25));
        assert_eq!(open.ping_timeout, Duration::from_secs(20));
        assert_eq!(open.max_payload, Some(1_000_000));
        assert!(!format!("{open:?}").contains("lv_VI97"), "sid in Debug");
    }

    #[test]
    fn an_open_packet_without_timing_is_refused() {
        assert!(matches!(
            decode_engine(r#"0{"sid":"a"}"#, limits()),
            Err(DecodeError::Data(_))
        ));
    }

    #[test]
    fn engine_packet_types() {
        let l = limits();
        assert_eq!(decode_engine("1", l), Ok(EnginePacket::Close));
        assert_eq!(decode_engine("2", l), Ok(EnginePacket::Ping("")));
        assert_eq!(decode_engine("3probe", l), Ok(EnginePacket::Pong("probe")));
        assert_eq!(decode_engine("5", l), Ok(EnginePacket::Upgrade));
        assert_eq!(decode_engine("6", l), Ok(EnginePacket::Noop));
        assert_eq!(decode_engine("40", l), Ok(EnginePacket::Message("0")));
        assert_eq!(decode_engine("", l), Err(DecodeError::Empty));
        assert_eq!(
            decode_engine("9", l),
            Err(DecodeError::UnknownType {
                layer: "Engine.IO",
                found: '9'
            })
        );
        assert_eq!(encode_pong(""), "3");
    }

    #[test]
    fn decodes_socket_io_packets() {
        let l = limits();
        assert_eq!(
            Packet::decode(r#"0{"sid":"x"}"#, l),
            Ok(Packet {
                kind: PacketKind::Connect,
                namespace: "/",
                ack_id: None,
                data: Some(r#"{"sid":"x"}"#),
            })
        );
        assert_eq!(
            Packet::decode(r#"2/chat,12["hello",1,{"a":[2]}]"#, l),
            Ok(Packet {
                kind: PacketKind::Event,
                namespace: "/chat",
                ack_id: Some(12),
                data: Some(r#"["hello",1,{"a":[2]}]"#),
            })
        );
        assert_eq!(
            Packet::decode("1/chat,", l),
            Ok(Packet {
                kind: PacketKind::Disconnect,
                namespace: "/chat",
                ack_id: None,
                data: None,
            })
        );
        let ack = Packet::decode(r#"3/a,7["ok"]"#, l);
        assert_eq!(ack.map(|p| p.ack_id), Ok(Some(7)));
        let error = Packet::decode(r#"4{"message":"Not authorized"}"#, l);
        assert_eq!(
            error.map(|p| connect_error_message(&p)),
            Ok("Not authorized".to_owned())
        );
    }

    #[test]
    fn malformed_packets_are_typed_errors() {
        let l = limits();
        assert_eq!(
            Packet::decode(r#"51-["a",{"_placeholder":true,"num":0}]"#, l),
            Err(DecodeError::Binary)
        );
        assert_eq!(Packet::decode("6", l), Err(DecodeError::Binary));
        assert!(matches!(
            Packet::decode("2[1]", l),
            Err(DecodeError::Missing { .. })
        ));
        assert!(matches!(
            Packet::decode(r#"2{"a":1}"#, l),
            Err(DecodeError::Data(_))
        ));
        assert!(matches!(
            Packet::decode(r#"2["a""#, l),
            Err(DecodeError::Data(_))
        ));
        assert!(matches!(
            Packet::decode("3[]", l),
            Err(DecodeError::Missing { .. })
        ));
        assert!(matches!(
            Packet::decode("0[]", l),
            Err(DecodeError::Data(_))
        ));
        assert_eq!(
            Packet::decode("299999999999999999999999[\"a\"]", l),
            Err(DecodeError::AckId)
        );
        let deep = format!("2[\"a\",{}{}]", "[".repeat(500), "]".repeat(500));
        assert_eq!(
            Packet::decode(&deep, l),
            Err(DecodeError::TooDeep { max: 32 })
        );
    }

    #[test]
    fn bounds_hold() {
        let l = limits().max_args(3).max_len(64);
        assert_eq!(
            Packet::decode(r#"2["a",1,2,3]"#, l),
            Err(DecodeError::TooManyArgs { len: 4, max: 3 })
        );
        assert!(Packet::decode(r#"2["a",[1,2,3,4],"x,y"]"#, l).is_ok());
        let long = format!("2[\"{}\"]", "x".repeat(64));
        assert!(matches!(
            Packet::decode(&long, l),
            Err(DecodeError::TooLong { .. })
        ));
        let ns = format!("2/{},[\"a\"]", "n".repeat(300));
        assert_eq!(Packet::decode(&ns, limits()), Err(DecodeError::Namespace));
    }

    #[test]
    fn scans_items_and_depth() {
        let items = |s: &str| shape(s).items;
        assert_eq!(items("[]"), 0);
        assert_eq!(items("[ ]"), 0);
        assert_eq!(items("[1]"), 1);
        assert_eq!(items(r#"["a,b",{"x":[1,2]},3]"#), 3);
        assert_eq!(items(r#"[[],{}]"#), 2);
        assert_eq!(shape(r#"["[[[",{"a":[[]]}]"#).deepest, 4);
    }

    /// The scan a byte at a time, as the model [`shape`] must agree with.
    fn shape_bytewise(json: &str) -> (usize, usize) {
        let (mut depth, mut deepest, mut commas, mut any) = (0usize, 0usize, 0usize, false);
        let (mut in_string, mut escaped) = (false, false);
        for b in json.bytes() {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            if depth == 1 && !b.is_ascii_whitespace() && !matches!(b, b']' | b'}' | b',') {
                any = true;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' if depth == 1 => commas += 1,
                _ => {}
            }
        }
        (deepest, if any { commas + 1 } else { 0 })
    }

    #[test]
    fn strings_are_skipped_to_their_closing_quote() {
        let bytes = br#""ab\"c\\",1"#;
        assert_eq!(string_end(bytes, 1), 9);
        assert_eq!(string_end(b"\"abc", 1), 4, "unterminated");
        assert_eq!(string_end(b"\"ab\\", 1), 4, "a backslash at the end");
        assert_eq!(shape(r#"["a\"],[", "b"]"#).items, 2);
    }

    #[test]
    fn connect_data_is_read_and_hidden_in_debug() {
        let packet = Packet::decode(r#"0{"sid":"s1","pid":"secret-pid"}"#, limits());
        let connected = packet.as_ref().map(Connected::parse);
        let Ok(Ok(connected)) = connected else {
            panic!("{packet:?}");
        };
        assert_eq!(connected.pid.as_deref(), Some("secret-pid"));
        assert!(!format!("{connected:?}").contains("secret"));
        let bare = Packet::decode("0", limits());
        assert!(matches!(
            bare.as_ref().map(Connected::parse),
            Ok(Err(DecodeError::Missing { .. }))
        ));
    }

    fn json_arg() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i32>().prop_map(|n| n.to_string()),
            "[a-z,\\[\\]{}\"]{0,8}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("{\"k\":[1,{\"j\":null}]}".to_owned()),
            Just("[]".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip(
            ns in prop_oneof![Just("/".to_owned()), "/[a-z]{1,8}"],
            id in proptest::option::of(any::<u64>()),
            name in "[a-zA-Z0-9 ,:]{1,12}",
            args in proptest::collection::vec(json_arg(), 0..5),
        ) {
            let mut items = vec![serde_json::Value::String(name).to_string()];
            items.extend(args);
            let data = format!("[{}]", items.join(","));
            let packet = Packet { kind: PacketKind::Event, namespace: &ns, ack_id: id, data: Some(&data) };
            let text = packet.encode_message();
            let Ok(EnginePacket::Message(m)) = decode_engine(&text, limits()) else {
                panic!("{text}");
            };
            prop_assert_eq!(Packet::decode(m, limits()), Ok(packet));
            prop_assert_eq!(packet.args(limits()).map(|a| a.len()), Ok(items.len()));
        }

        #[test]
        fn the_scan_agrees_with_a_byte_at_a_time_scan(json in "[\\[\\]{}\",\\\\ a1]{0,40}") {
            let s = shape(&json);
            prop_assert_eq!((s.deepest, s.items), shape_bytewise(&json));
        }

        #[test]
        fn decoded_args_are_those_args_gives(text in "[23][0-9]{0,2}\\[(\"[a-z\\\\\",\\[\\]]{0,6}\"|[0-9]|,|\\[|\\]| ){0,12}") {
            if let Ok((packet, args)) = Packet::decode_with_args(&text, limits()) {
                let again = packet.args(limits());
                let raw = |a: &[&RawValue]| a.iter().map(|v| v.get().to_owned()).collect::<Vec<_>>();
                prop_assert_eq!(again.map(|a| raw(&a)), Ok(raw(&args)));
            }
        }

        #[test]
        fn any_text_decodes_or_errs(text in "\\PC{0,40}") {
            let _ = decode_engine(&text, limits());
            if let Ok(p) = Packet::decode(&text, limits()) {
                let again = p.encode();
                prop_assert_eq!(Packet::decode(&again, limits()), Ok(p));
            }
        }
    }
}
