//! Frame codec for the `Wire` protocol, version 1 (specified in `PROTOCOL.md`).
//!
//! Each WebSocket binary message carries one [`Frame`]. [`decode`] parses a
//! received message; [`Frame::encode`] and [`Frame::to_bytes`] produce one.
//!
//! Decoding never copies: every string, token and payload in a decoded frame
//! is a slice of the input [`Bytes`]. Every length is checked against the
//! bytes that are left and against [`Limits`] before anything is allocated,
//! so a hostile peer cannot make the decoder allocate more than the frame it
//! sent (plus one `Vec` of slices for WELCOME's kept channels).
//!
//! The encoding is canonical: a byte string that decodes re-encodes to the
//! same bytes, and a frame that passes [`Frame::validate`] decodes back to
//! itself.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::payload::{Payload, Text};
use crate::secret::ResumeToken;

/// The protocol version this codec speaks.
///
/// A client sends it in [`Hello::version`]; a server answers with it in
/// [`Welcome::version`] or refuses with [`error_code::UNSUPPORTED_VERSION`].
pub const VERSION: u64 = 1;

/// The WebSocket subprotocol token for this version (`Sec-WebSocket-Protocol`).
///
/// The client must offer it when dialing and treat a handshake that did not
/// select it as a failed dial.
pub const SUBPROTOCOL: &str = "redial.v1";

/// Codes carried by [`Frame::Error`] and [`Frame::SubscribeError`].
///
/// Act on the frame's `terminal` flag, not on the code: the code says what
/// went wrong, the flag says whether reconnecting can help. Unknown codes
/// must be accepted.
pub mod error_code {
    /// The server speaks no version at or below the client's; sent terminal.
    pub const UNSUPPORTED_VERSION: u16 = 1;
    /// The peer sent a frame that does not decode or is not allowed here.
    pub const MALFORMED_FRAME: u16 = 2;
    /// The requested name ("subdomain") is invalid or taken; sent terminal.
    pub const NAME_UNAVAILABLE: u16 = 3;
    /// The credentials were refused; sent terminal.
    pub const UNAUTHORIZED: u16 = 4;
    /// The client sends faster than the server allows.
    pub const RATE_LIMITED: u16 = 5;
    /// The server failed for reasons of its own.
    pub const INTERNAL: u16 = 6;
    /// The session had MESSAGEs waiting that the client did not take in
    /// time; it resumes from its offset after the reconnect.
    pub const SLOW_CONSUMER: u16 = 7;

    /// The terminal flag that goes with a code (PROTOCOL.md 6): set for
    /// `unsupported_version`, `name_unavailable` and `unauthorized`, clear
    /// for the others and for codes this version does not define.
    pub fn is_terminal(code: u16) -> bool {
        matches!(code, UNSUPPORTED_VERSION | NAME_UNAVAILABLE | UNAUTHORIZED)
    }

    /// The WebSocket close code that follows an ERROR when its sender closes
    /// the connection (PROTOCOL.md 6): 1008 after a terminal one; after a
    /// non-terminal one 1002 for `malformed_frame`, 1013 for `rate_limited`
    /// and `slow_consumer`, and 1011 otherwise. None of the non-terminal ones is terminal in the
    /// client's default close policy, and a client that saw the ERROR
    /// follows its flag whatever the close code.
    pub fn close_code(code: u16, terminal: bool) -> u16 {
        match (code, terminal) {
            (_, true) => 1008,
            (MALFORMED_FRAME, false) => 1002,
            (RATE_LIMITED | SLOW_CONSUMER, false) => 1013,
            (_, false) => 1011,
        }
    }

    /// The snake_case name of a known code, for logs; `None` for others.
    ///
    /// Callers must still handle unknown codes, which later versions may add.
    pub fn name(code: u16) -> Option<&'static str> {
        Some(match code {
            UNSUPPORTED_VERSION => "unsupported_version",
            MALFORMED_FRAME => "malformed_frame",
            NAME_UNAVAILABLE => "name_unavailable",
            UNAUTHORIZED => "unauthorized",
            RATE_LIMITED => "rate_limited",
            INTERNAL => "internal",
            SLOW_CONSUMER => "slow_consumer",
            _ => return None,
        })
    }
}

/// Upper bounds the decoder enforces, and [`Frame::validate`] checks.
///
/// Use the same values on both sides of a connection; the defaults are the
/// ones `PROTOCOL.md` documents, so keep them unless both peers agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame (type byte included), in bytes. Default 1 MiB.
    pub max_frame_len: usize,
    /// Longest channel name, in bytes. Default 255.
    pub max_channel_len: usize,
    /// Longest session name, in bytes. Default 255.
    pub max_name_len: usize,
    /// Longest ERROR / SUBSCRIBE_ERROR reason, in bytes. Default 1024.
    pub max_reason_len: usize,
    /// Longest resume token, in bytes. Default 1024.
    pub max_token_len: usize,
    /// Longest session id, in bytes. Default 64.
    pub max_session_id_len: usize,
    /// Most channels a WELCOME may list as kept. Default 1024.
    pub max_kept_channels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_len: 1 << 20,
            max_channel_len: 255,
            max_name_len: 255,
            max_reason_len: 1024,
            max_token_len: 1024,
            max_session_id_len: 64,
            max_kept_channels: 1024,
        }
    }
}

/// HELLO: the client's first frame on every connection.
///
/// Send it right after the WebSocket opens and send nothing else until the
/// WELCOME (or ERROR) arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the client speaks; normally [`VERSION`].
    pub version: u64,
    /// The token from the last WELCOME, to resume that session; `None` for a
    /// fresh session.
    pub resume_token: Option<ResumeToken>,
    /// Highest MESSAGE offset the client has delivered (0 = none); the server
    /// replays what comes after it.
    pub last_offset: u64,
    /// Name the client asks for; `None` lets the server pick one.
    pub name: Option<Text>,
}

/// WELCOME: the server's acceptance of a HELLO.
///
/// On receipt, the client must drop pending publishes with
/// `seq <= last_client_seq`, store the new `resume_token`, and re-subscribe to
/// wanted channels that are not in `kept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version the server chose; never above the HELLO's.
    pub version: u64,
    /// True when the HELLO's resume token was accepted and the old session
    /// continues; false for a fresh session.
    pub resumed: bool,
    /// Server-assigned session identifier, for logs and support.
    pub session_id: Text,
    /// The session's name (the requested one, or one the server picked).
    pub name: Text,
    /// Opaque token to present in the next HELLO to resume this session.
    pub resume_token: ResumeToken,
    /// How long the token stays usable after the connection ends, in ms.
    pub token_lifetime_ms: u64,
    /// Highest PUBLISH seq the server has stored for this session (0 = none).
    pub last_client_seq: u64,
    /// Channels the session is still subscribed to.
    pub kept: Vec<Text>,
}

/// One Wire frame, either direction.
///
/// Build one and send [`Frame::to_bytes`] as a WebSocket binary message;
/// check it with [`Frame::validate`] first when its fields come from users.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Client's handshake (0x01).
    Hello(Hello),
    /// Server's handshake answer (0x02).
    Welcome(Welcome),
    /// Client asks to receive a channel's messages (0x03).
    Subscribe {
        /// The channel.
        channel: Text,
    },
    /// Client stops receiving a channel's messages (0x04).
    Unsubscribe {
        /// The channel.
        channel: Text,
    },
    /// Server confirms a SUBSCRIBE (0x05).
    Subscribed {
        /// The channel.
        channel: Text,
    },
    /// Server refuses a SUBSCRIBE (0x06).
    SubscribeError {
        /// The channel.
        channel: Text,
        /// Why, as an [`error_code`].
        code: u16,
        /// Human-readable detail; may be empty.
        reason: Text,
    },
    /// Client sends an application message (0x07).
    Publish {
        /// Per-session sequence number, starting at 1; never 0.
        seq: u64,
        /// Target channel; `None` addresses the server application itself.
        channel: Option<Text>,
        /// The message.
        payload: Payload,
    },
    /// Server has stored every PUBLISH with a seq up to this one (0x08).
    Ack {
        /// Cumulative: all seqs `<=` this are stored.
        seq: u64,
    },
    /// Server delivers an application message (0x09).
    Message {
        /// Per-session offset, starting at 1; never 0.
        offset: u64,
        /// Source channel; `None` for messages sent to the session directly.
        channel: Option<Text>,
        /// The message.
        payload: Payload,
    },
    /// Client has delivered every MESSAGE up to this offset (0x0A).
    Received {
        /// Cumulative: all offsets `<=` this are delivered.
        offset: u64,
    },
    /// Server is about to close this connection (0x0B).
    GoingAway {
        /// Minimum wait before reconnecting, in ms.
        retry_after_ms: u64,
        /// Spread: wait an extra uniform random `0..=window_ms` ms.
        window_ms: u64,
    },
    /// Something went wrong (0x0C, either direction).
    Error {
        /// Which problem, as an [`error_code`].
        code: u16,
        /// True when reconnecting cannot help: stop and report.
        terminal: bool,
        /// Human-readable detail; may be empty.
        reason: Text,
    },
}

/// Which kind of frame, without its fields: for logs, metrics and matching.
///
/// Match with a wildcard arm: later versions may add kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// HELLO (0x01).
    Hello,
    /// WELCOME (0x02).
    Welcome,
    /// SUBSCRIBE (0x03).
    Subscribe,
    /// UNSUBSCRIBE (0x04).
    Unsubscribe,
    /// SUBSCRIBED (0x05).
    Subscribed,
    /// SUBSCRIBE_ERROR (0x06).
    SubscribeError,
    /// PUBLISH (0x07).
    Publish,
    /// ACK (0x08).
    Ack,
    /// MESSAGE (0x09).
    Message,
    /// RECEIVED (0x0A).
    Received,
    /// GOING_AWAY (0x0B).
    GoingAway,
    /// ERROR (0x0C).
    Error,
}

impl FrameKind {
    /// Every kind, in type-byte order.
    pub const ALL: [FrameKind; 12] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Subscribe,
        FrameKind::Unsubscribe,
        FrameKind::Subscribed,
        FrameKind::SubscribeError,
        FrameKind::Publish,
        FrameKind::Ack,
        FrameKind::Message,
        FrameKind::Received,
        FrameKind::GoingAway,
        FrameKind::Error,
    ];

    /// The name `PROTOCOL.md` uses, e.g. `"SUBSCRIBE_ERROR"`.
    pub fn name(&self) -> &'static str {
        match self {
            FrameKind::Hello => "HELLO",
            FrameKind::Welcome => "WELCOME",
            FrameKind::Subscribe => "SUBSCRIBE",
            FrameKind::Unsubscribe => "UNSUBSCRIBE",
            FrameKind::Subscribed => "SUBSCRIBED",
            FrameKind::SubscribeError => "SUBSCRIBE_ERROR",
            FrameKind::Publish => "PUBLISH",
            FrameKind::Ack => "ACK",
            FrameKind::Message => "MESSAGE",
            FrameKind::Received => "RECEIVED",
            FrameKind::GoingAway => "GOING_AWAY",
            FrameKind::Error => "ERROR",
        }
    }

    /// The frame's first byte on the wire.
    pub fn type_byte(&self) -> u8 {
        match self {
            FrameKind::Hello => 0x01,
            FrameKind::Welcome => 0x02,
            FrameKind::Subscribe => 0x03,
            FrameKind::Unsubscribe => 0x04,
            FrameKind::Subscribed => 0x05,
            FrameKind::SubscribeError => 0x06,
            FrameKind::Publish => 0x07,
            FrameKind::Ack => 0x08,
            FrameKind::Message => 0x09,
            FrameKind::Received => 0x0A,
            FrameKind::GoingAway => 0x0B,
            FrameKind::Error => 0x0C,
        }
    }

    /// The kind a type byte stands for; `None` when version 1 defines none.
    pub fn from_type_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            0x01 => FrameKind::Hello,
            0x02 => FrameKind::Welcome,
            0x03 => FrameKind::Subscribe,
            0x04 => FrameKind::Unsubscribe,
            0x05 => FrameKind::Subscribed,
            0x06 => FrameKind::SubscribeError,
            0x07 => FrameKind::Publish,
            0x08 => FrameKind::Ack,
            0x09 => FrameKind::Message,
            0x0A => FrameKind::Received,
            0x0B => FrameKind::GoingAway,
            0x0C => FrameKind::Error,
            _ => return None,
        })
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a received message is not a valid frame.
///
/// The receiver must treat the connection as broken by a protocol error:
/// send ERROR [`error_code::MALFORMED_FRAME`] if it can, then close with 1002.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame ends before `field` is complete (empty input reports `type`).
    #[error("frame ends inside {field}: needs {needed} more bytes, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field still needed.
        needed: u64,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes follow a complete frame that has no trailing payload.
    #[error("{count} extra bytes after a complete {kind} frame")]
    TrailingBytes {
        /// The frame's kind.
        kind: FrameKind,
        /// How many bytes were left over.
        count: usize,
    },
    /// The first byte names no frame type of this version.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A varint has a redundant trailing zero byte (not minimally encoded).
    #[error("varint is not minimally encoded")]
    OverlongVarint,
    /// A varint does not fit in 64 bits.
    #[error("varint does not fit in 64 bits")]
    VarintOverflow,
    /// A number is outside the range its field allows.
    #[error("{field} is {value}, must be between {min} and {max}")]
    ValueOutOfRange {
        /// The field.
        field: &'static str,
        /// The value received.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A flags byte has bits set that this frame type does not define.
    #[error("{kind} flags 0x{flags:02x} set undefined bits (defined: 0x{defined:02x})")]
    ReservedFlags {
        /// The frame's kind.
        kind: FrameKind,
        /// The flags byte received.
        flags: u8,
        /// The bits this frame type defines.
        defined: u8,
    },
    /// A string field (or a text payload) is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A string or byte field is longer than its limit.
    #[error("{field} is {len} bytes, limit {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The declared length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A list declares more entries than its limit.
    #[error("{field} lists {count} entries, limit {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The declared count.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// The whole message is larger than [`Limits::max_frame_len`].
    #[error("frame is {len} bytes, limit {max}")]
    FrameTooLarge {
        /// The message's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why a frame cannot be sent: a peer with the same [`Limits`] would reject it.
///
/// Returned by [`Frame::validate`]; the caller must not send the frame (or
/// must shorten the offending field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or byte field is longer than its limit.
    #[error("{field} is {len} bytes, limit {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list has more entries than its limit.
    #[error("{field} lists {count} entries, limit {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Its entry count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A number is below the smallest value its field allows (seq or offset 0).
    #[error("{field} is {value}, must be at least {min}")]
    ValueOutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
    },
    /// The encoded frame is larger than [`Limits::max_frame_len`].
    #[error("frame is {len} bytes, limit {max}")]
    FrameTooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

// Flag bits. Any bit not listed for a frame type must be zero.
const HELLO_HAS_TOKEN: u8 = 0x01;
const HELLO_HAS_NAME: u8 = 0x02;
const WELCOME_RESUMED: u8 = 0x01;
const DATA_HAS_CHANNEL: u8 = 0x01;
const DATA_IS_TEXT: u8 = 0x02;
const ERROR_TERMINAL: u8 = 0x01;

/// Parses one received WebSocket binary message as a frame.
///
/// Pass the whole message; the result's strings and payload share its buffer.
/// On error, treat the connection as broken (see [`DecodeError`]).
pub fn decode(input: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
    if input.len() > limits.max_frame_len {
        return Err(DecodeError::FrameTooLarge {
            len: input.len(),
            max: limits.max_frame_len,
        });
    }
    let mut r = Reader::new(input);
    let type_byte = r.u8("type")?;
    let kind =
        FrameKind::from_type_byte(type_byte).ok_or(DecodeError::UnknownFrameType(type_byte))?;
    let frame = match kind {
        FrameKind::Hello => Frame::Hello(decode_hello(&mut r, limits)?),
        FrameKind::Welcome => Frame::Welcome(decode_welcome(&mut r, limits)?),
        FrameKind::Subscribe => Frame::Subscribe {
            channel: r.text("channel", limits.max_channel_len)?,
        },
        FrameKind::Unsubscribe => Frame::Unsubscribe {
            channel: r.text("channel", limits.max_channel_len)?,
        },
        FrameKind::Subscribed => Frame::Subscribed {
            channel: r.text("channel", limits.max_channel_len)?,
        },
        FrameKind::SubscribeError => Frame::SubscribeError {
            channel: r.text("channel", limits.max_channel_len)?,
            code: r.u16("code")?,
            reason: r.text("reason", limits.max_reason_len)?,
        },
        FrameKind::Publish => {
            let seq = r.positive("seq")?;
            let (channel, payload) = r.data(kind, limits)?;
            Frame::Publish {
                seq,
                channel,
                payload,
            }
        }
        FrameKind::Ack => Frame::Ack {
            seq: r.varint("seq")?,
        },
        FrameKind::Message => {
            let offset = r.positive("offset")?;
            let (channel, payload) = r.data(kind, limits)?;
            Frame::Message {
                offset,
                channel,
                payload,
            }
        }
        FrameKind::Received => Frame::Received {
            offset: r.varint("offset")?,
        },
        FrameKind::GoingAway => Frame::GoingAway {
            retry_after_ms: r.varint("retry_after_ms")?,
            window_ms: r.varint("window_ms")?,
        },
        FrameKind::Error => {
            let code = r.u16("code")?;
            let flags = r.flags(kind, ERROR_TERMINAL)?;
            Frame::Error {
                code,
                terminal: flags & ERROR_TERMINAL != 0,
                reason: r.text("reason", limits.max_reason_len)?,
            }
        }
    };
    // PUBLISH and MESSAGE consumed everything; for the rest, leftovers mean
    // the peer and we disagree about the layout.
    r.finish(kind)?;
    Ok(frame)
}

fn decode_hello(r: &mut Reader, limits: &Limits) -> Result<Hello, DecodeError> {
    let version = r.varint("version")?;
    let flags = r.flags(FrameKind::Hello, HELLO_HAS_TOKEN | HELLO_HAS_NAME)?;
    let resume_token = if flags & HELLO_HAS_TOKEN != 0 {
        Some(ResumeToken::new(
            r.bytes("resume_token", limits.max_token_len)?,
        ))
    } else {
        None
    };
    let last_offset = r.varint("last_offset")?;
    let name = if flags & HELLO_HAS_NAME != 0 {
        Some(r.text("name", limits.max_name_len)?)
    } else {
        None
    };
    Ok(Hello {
        version,
        resume_token,
        last_offset,
        name,
    })
}

fn decode_welcome(r: &mut Reader, limits: &Limits) -> Result<Welcome, DecodeError> {
    let version = r.varint("version")?;
    let flags = r.flags(FrameKind::Welcome, WELCOME_RESUMED)?;
    let session_id = r.text("session_id", limits.max_session_id_len)?;
    let name = r.text("name", limits.max_name_len)?;
    let resume_token = ResumeToken::new(r.bytes("resume_token", limits.max_token_len)?);
    let token_lifetime_ms = r.varint("token_lifetime_ms")?;
    let last_client_seq = r.varint("last_client_seq")?;
    let count = r.varint("kept_count")?;
    if count > as_u64(limits.max_kept_channels) {
        return Err(DecodeError::TooMany {
            field: "kept",
            count,
            max: limits.max_kept_channels,
        });
    }
    // Every entry needs at least its length byte, so a count above the bytes
    // left is a lie; rejecting it here bounds the Vec below by the input size.
    let available = r.remaining();
    let count = match usize::try_from(count) {
        Ok(n) if n <= available => n,
        _ => {
            return Err(DecodeError::Truncated {
                field: "kept",
                needed: count,
                available,
            })
        }
    };
    let mut kept = Vec::with_capacity(count);
    for _ in 0..count {
        kept.push(r.text("kept", limits.max_channel_len)?);
    }
    Ok(Welcome {
        version,
        resumed: flags & WELCOME_RESUMED != 0,
        session_id,
        name,
        resume_token,
        token_lifetime_ms,
        last_client_seq,
        kept,
    })
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A cursor over the input; every read checks bounds and returns slices.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(DecodeError::Truncated {
                field,
                needed: 1,
                available: 0,
            }),
        }
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10u32 {
            let byte = self.u8(field)?;
            if i == 9 && byte > 0x01 {
                // Bits past 64 (or a continuation bit) in the last byte.
                return Err(DecodeError::VarintOverflow);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(DecodeError::OverlongVarint);
                }
                return Ok(value);
            }
        }
        // The tenth byte either ended the varint or was rejected above.
        Err(DecodeError::VarintOverflow)
    }

    fn positive(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        match self.varint(field)? {
            0 => Err(DecodeError::ValueOutOfRange {
                field,
                value: 0,
                min: 1,
                max: u64::MAX,
            }),
            v => Ok(v),
        }
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let value = self.varint(field)?;
        u16::try_from(value).map_err(|_| DecodeError::ValueOutOfRange {
            field,
            value,
            min: 0,
            max: u64::from(u16::MAX),
        })
    }

    fn flags(&mut self, kind: FrameKind, defined: u8) -> Result<u8, DecodeError> {
        let flags = self.u8("flags")?;
        if flags & !defined != 0 {
            return Err(DecodeError::ReservedFlags {
                kind,
                flags,
                defined,
            });
        }
        Ok(flags)
    }

    /// A length-prefixed byte string, checked against `max` then the input.
    fn bytes(&mut self, field: &'static str, max: usize) -> Result<Bytes, DecodeError> {
        let len = self.varint(field)?;
        if len > as_u64(max) {
            return Err(DecodeError::TooLong { field, len, max });
        }
        let available = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= available => {
                let start = self.pos;
                self.pos = start + n;
                Ok(self.buf.slice(start..self.pos))
            }
            _ => Err(DecodeError::Truncated {
                field,
                needed: len,
                available,
            }),
        }
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<Text, DecodeError> {
        let bytes = self.bytes(field, max)?;
        Text::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// PUBLISH / MESSAGE tail: flags, optional channel, payload to the end.
    fn data(
        &mut self,
        kind: FrameKind,
        limits: &Limits,
    ) -> Result<(Option<Text>, Payload), DecodeError> {
        let flags = self.flags(kind, DATA_HAS_CHANNEL | DATA_IS_TEXT)?;
        let channel = if flags & DATA_HAS_CHANNEL != 0 {
            Some(self.text("channel", limits.max_channel_len)?)
        } else {
            None
        };
        // The payload is the rest of the input: take the input itself and
        // drop the header, rather than slicing (a refcount round trip, or
        // an allocation when the input is not yet in shared form).
        let start = self.pos.min(self.buf.len());
        let mut rest = std::mem::take(&mut self.buf);
        rest.advance(start);
        self.pos = 0;
        let payload = if flags & DATA_IS_TEXT != 0 {
            let text =
                Text::from_utf8(rest).map_err(|_| DecodeError::InvalidUtf8 { field: "payload" })?;
            Payload::text(text)
        } else {
            Payload::binary(rest)
        };
        Ok((channel, payload))
    }

    fn finish(self, kind: FrameKind) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { kind, count }),
        }
    }
}

fn varint_len(v: u64) -> usize {
    // Bits needed (at least 1), seven per byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn prefixed_len(len: usize) -> usize {
    varint_len(as_u64(len)) + len
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_prefixed(out: &mut BytesMut, bytes: &[u8]) {
    put_varint(out, as_u64(bytes.len()));
    out.put_slice(bytes);
}

fn data_flags(channel: &Option<Text>, payload: &Payload) -> u8 {
    let mut flags = 0;
    if channel.is_some() {
        flags |= DATA_HAS_CHANNEL;
    }
    if payload.is_text() {
        flags |= DATA_IS_TEXT;
    }
    flags
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooLong { field, len, max });
    }
    Ok(())
}

fn check_positive(field: &'static str, value: u64) -> Result<(), EncodeError> {
    if value == 0 {
        return Err(EncodeError::ValueOutOfRange {
            field,
            value,
            min: 1,
        });
    }
    Ok(())
}

impl Frame {
    /// This frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Welcome(_) => FrameKind::Welcome,
            Frame::Subscribe { .. } => FrameKind::Subscribe,
            Frame::Unsubscribe { .. } => FrameKind::Unsubscribe,
            Frame::Subscribed { .. } => FrameKind::Subscribed,
            Frame::SubscribeError { .. } => FrameKind::SubscribeError,
            Frame::Publish { .. } => FrameKind::Publish,
            Frame::Ack { .. } => FrameKind::Ack,
            Frame::Message { .. } => FrameKind::Message,
            Frame::Received { .. } => FrameKind::Received,
            Frame::GoingAway { .. } => FrameKind::GoingAway,
            Frame::Error { .. } => FrameKind::Error,
        }
    }

    /// Exact number of bytes [`Frame::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        let body = match self {
            Frame::Hello(h) => {
                varint_len(h.version)
                    + 1
                    + h.resume_token.as_ref().map_or(0, |t| prefixed_len(t.len()))
                    + varint_len(h.last_offset)
                    + h.name.as_ref().map_or(0, |n| prefixed_len(n.len()))
            }
            Frame::Welcome(w) => {
                varint_len(w.version)
                    + 1
                    + prefixed_len(w.session_id.len())
                    + prefixed_len(w.name.len())
                    + prefixed_len(w.resume_token.len())
                    + varint_len(w.token_lifetime_ms)
                    + varint_len(w.last_client_seq)
                    + varint_len(as_u64(w.kept.len()))
                    + w.kept.iter().map(|c| prefixed_len(c.len())).sum::<usize>()
            }
            Frame::Subscribe { channel }
            | Frame::Unsubscribe { channel }
            | Frame::Subscribed { channel } => prefixed_len(channel.len()),
            Frame::SubscribeError {
                channel,
                code,
                reason,
            } => {
                prefixed_len(channel.len())
                    + varint_len(u64::from(*code))
                    + prefixed_len(reason.len())
            }
            Frame::Publish {
                seq: n,
                channel,
                payload,
            }
            | Frame::Message {
                offset: n,
                channel,
                payload,
            } => {
                varint_len(*n)
                    + 1
                    + channel.as_ref().map_or(0, |c| prefixed_len(c.len()))
                    + payload.len()
            }
            Frame::Ack { seq: n } | Frame::Received { offset: n } => varint_len(*n),
            Frame::GoingAway {
                retry_after_ms,
                window_ms,
            } => varint_len(*retry_after_ms) + varint_len(*window_ms),
            Frame::Error { code, reason, .. } => {
                varint_len(u64::from(*code)) + 1 + prefixed_len(reason.len())
            }
        };
        1 + body
    }

    /// Appends the frame's encoding to `out`.
    ///
    /// Never fails and checks no limits: call [`Frame::validate`] first when
    /// the fields may exceed them, or the peer will reject the frame.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_u8(self.kind().type_byte());
        match self {
            Frame::Hello(h) => {
                put_varint(out, h.version);
                let mut flags = 0;
                if h.resume_token.is_some() {
                    flags |= HELLO_HAS_TOKEN;
                }
                if h.name.is_some() {
                    flags |= HELLO_HAS_NAME;
                }
                out.put_u8(flags);
                if let Some(token) = &h.resume_token {
                    put_prefixed(out, token.expose());
                }
                put_varint(out, h.last_offset);
                if let Some(name) = &h.name {
                    put_prefixed(out, name.as_bytes());
                }
            }
            Frame::Welcome(w) => {
                put_varint(out, w.version);
                out.put_u8(if w.resumed { WELCOME_RESUMED } else { 0 });
                put_prefixed(out, w.session_id.as_bytes());
                put_prefixed(out, w.name.as_bytes());
                put_prefixed(out, w.resume_token.expose());
                put_varint(out, w.token_lifetime_ms);
                put_varint(out, w.last_client_seq);
                put_varint(out, as_u64(w.kept.len()));
                for channel in &w.kept {
                    put_prefixed(out, channel.as_bytes());
                }
            }
            Frame::Subscribe { channel }
            | Frame::Unsubscribe { channel }
            | Frame::Subscribed { channel } => put_prefixed(out, channel.as_bytes()),
            Frame::SubscribeError {
                channel,
                code,
                reason,
            } => {
                put_prefixed(out, channel.as_bytes());
                put_varint(out, u64::from(*code));
                put_prefixed(out, reason.as_bytes());
            }
            Frame::Publish {
                seq: n,
                channel,
                payload,
            }
            | Frame::Message {
                offset: n,
                channel,
                payload,
            } => {
                put_varint(out, *n);
                out.put_u8(data_flags(channel, payload));
                if let Some(channel) = channel {
                    put_prefixed(out, channel.as_bytes());
                }
                out.put_slice(payload.bytes());
            }
            Frame::Ack { seq: n } | Frame::Received { offset: n } => put_varint(out, *n),
            Frame::GoingAway {
                retry_after_ms,
                window_ms,
            } => {
                put_varint(out, *retry_after_ms);
                put_varint(out, *window_ms);
            }
            Frame::Error {
                code,
                terminal,
                reason,
            } => {
                put_varint(out, u64::from(*code));
                out.put_u8(if *terminal { ERROR_TERMINAL } else { 0 });
                put_prefixed(out, reason.as_bytes());
            }
        }
    }

    /// The frame's encoding in a buffer of its own, ready to send.
    ///
    /// Like [`Frame::encode`], this checks no limits.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Checks that a peer decoding with `limits` would accept this frame.
    ///
    /// When it returns `Ok`, `decode(self.to_bytes(), limits)` gives back an
    /// equal frame; when it returns `Err`, do not send the frame.
    pub fn validate(&self, limits: &Limits) -> Result<(), EncodeError> {
        match self {
            Frame::Hello(h) => {
                if let Some(token) = &h.resume_token {
                    check_len("resume_token", token.len(), limits.max_token_len)?;
                }
                if let Some(name) = &h.name {
                    check_len("name", name.len(), limits.max_name_len)?;
                }
            }
            Frame::Welcome(w) => {
                check_len("session_id", w.session_id.len(), limits.max_session_id_len)?;
                check_len("name", w.name.len(), limits.max_name_len)?;
                check_len("resume_token", w.resume_token.len(), limits.max_token_len)?;
                if w.kept.len() > limits.max_kept_channels {
                    return Err(EncodeError::TooMany {
                        field: "kept",
                        count: w.kept.len(),
                        max: limits.max_kept_channels,
                    });
                }
                for channel in &w.kept {
                    check_len("kept", channel.len(), limits.max_channel_len)?;
                }
            }
            Frame::Subscribe { channel }
            | Frame::Unsubscribe { channel }
            | Frame::Subscribed { channel } => {
                check_len("channel", channel.len(), limits.max_channel_len)?;
            }
            Frame::SubscribeError {
                channel, reason, ..
            } => {
                check_len("channel", channel.len(), limits.max_channel_len)?;
                check_len("reason", reason.len(), limits.max_reason_len)?;
            }
            Frame::Publish { seq, channel, .. } => {
                check_positive("seq", *seq)?;
                if let Some(channel) = channel {
                    check_len("channel", channel.len(), limits.max_channel_len)?;
                }
            }
            Frame::Message {
                offset, channel, ..
            } => {
                check_positive("offset", *offset)?;
                if let Some(channel) = channel {
                    check_len("channel", channel.len(), limits.max_channel_len)?;
                }
            }
            Frame::Error { reason, .. } => {
                check_len("reason", reason.len(), limits.max_reason_len)?;
            }
            Frame::Ack { .. } | Frame::Received { .. } | Frame::GoingAway { .. } => {}
        }
        let len = self.encoded_len();
        if len > limits.max_frame_len {
            return Err(EncodeError::FrameTooLarge {
                len,
                max: limits.max_frame_len,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
// A failing test should panic with the value it got.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn dec(bytes: &[u8]) -> Result<Frame, DecodeError> {
        decode(Bytes::copy_from_slice(bytes), &Limits::default())
    }

    fn t(s: &str) -> Text {
        Text::from(s)
    }

    #[test]
    fn the_close_code_after_an_error_follows_the_table_in_section_6() {
        use error_code::*;
        let table = [
            (UNSUPPORTED_VERSION, true, 1008),
            (MALFORMED_FRAME, false, 1002),
            (NAME_UNAVAILABLE, true, 1008),
            (UNAUTHORIZED, true, 1008),
            (RATE_LIMITED, false, 1013),
            (INTERNAL, false, 1011),
            (999, false, 1011),
        ];
        for (code, terminal, close) in table {
            assert_eq!(is_terminal(code), terminal, "{code}");
            assert_eq!(close_code(code, terminal), close, "{code}");
        }
        assert_eq!(close_code(RATE_LIMITED, true), 1008);
    }

    // ---- PROTOCOL.md examples ----

    /// The frame each `### Example: NAME` in PROTOCOL.md must encode.
    fn example_frame(name: &str) -> Option<Frame> {
        let old_token = || ResumeToken::new(vec![0x9f, 0x3c, 0x11, 0xe2, 0x07, 0x5a]);
        Some(match name {
            "HELLO (fresh)" => Frame::Hello(Hello {
                version: 1,
                resume_token: None,
                last_offset: 0,
                name: None,
            }),
            "HELLO (fresh, requested name)" => Frame::Hello(Hello {
                version: 1,
                resume_token: None,
                last_offset: 0,
                name: Some(t("myapp")),
            }),
            "HELLO (resume)" => Frame::Hello(Hello {
                version: 1,
                resume_token: Some(old_token()),
                last_offset: 300,
                name: Some(t("myapp")),
            }),
            "WELCOME (fresh)" => Frame::Welcome(Welcome {
                version: 1,
                resumed: false,
                session_id: t("s-7f3a"),
                name: t("myapp"),
                resume_token: old_token(),
                token_lifetime_ms: 120_000,
                last_client_seq: 0,
                kept: vec![],
            }),
            "WELCOME (resumed)" => Frame::Welcome(Welcome {
                version: 1,
                resumed: true,
                session_id: t("s-7f3a"),
                name: t("myapp"),
                resume_token: ResumeToken::new(vec![0x4b, 0x80, 0xd1, 0x2e, 0x6c, 0x03]),
                token_lifetime_ms: 120_000,
                last_client_seq: 41,
                kept: vec![t("news"), t("chat")],
            }),
            "SUBSCRIBE" => Frame::Subscribe { channel: t("news") },
            "UNSUBSCRIBE" => Frame::Unsubscribe { channel: t("chat") },
            "SUBSCRIBED" => Frame::Subscribed { channel: t("news") },
            "SUBSCRIBE_ERROR" => Frame::SubscribeError {
                channel: t("admin"),
                code: error_code::UNAUTHORIZED,
                reason: t("forbidden"),
            },
            "PUBLISH (text, channel)" => Frame::Publish {
                seq: 42,
                channel: Some(t("news")),
                payload: Payload::text("hi"),
            },
            "PUBLISH (binary, no channel)" => Frame::Publish {
                seq: 300,
                channel: None,
                payload: Payload::binary(vec![0x00, 0xff, 0x10]),
            },
            "ACK" => Frame::Ack { seq: 42 },
            "MESSAGE (text, channel)" => Frame::Message {
                offset: 301,
                channel: Some(t("news")),
                payload: Payload::text("hello"),
            },
            "MESSAGE (binary, no channel)" => Frame::Message {
                offset: 1,
                channel: None,
                payload: Payload::binary(vec![0xde, 0xad, 0xbe, 0xef]),
            },
            "RECEIVED" => Frame::Received { offset: 301 },
            "GOING_AWAY" => Frame::GoingAway {
                retry_after_ms: 1000,
                window_ms: 5000,
            },
            "ERROR (unsupported_version)" => Frame::Error {
                code: error_code::UNSUPPORTED_VERSION,
                terminal: true,
                reason: t("need v2"),
            },
            "ERROR (name_unavailable)" => Frame::Error {
                code: error_code::NAME_UNAVAILABLE,
                terminal: true,
                reason: t("name taken"),
            },
            "ERROR (rate_limited)" => Frame::Error {
                code: error_code::RATE_LIMITED,
                terminal: false,
                reason: t(""),
            },
            _ => return None,
        })
    }

    /// Every `### Example: NAME` heading followed by a ```hex block.
    fn md_examples(md: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut lines = md.lines();
        while let Some(line) = lines.next() {
            let Some(name) = line.strip_prefix("### Example: ") else {
                continue;
            };
            let name = name.trim().to_owned();
            let fence = lines.by_ref().find(|l| !l.trim().is_empty());
            assert_eq!(fence.map(str::trim), Some("```hex"), "example {name}");
            let mut bytes = Vec::new();
            let mut closed = false;
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    closed = true;
                    break;
                }
                for tok in l.split_whitespace() {
                    assert!(
                        tok.len() == 2 && tok == tok.to_ascii_lowercase(),
                        "example {name}: bad byte {tok:?}"
                    );
                    bytes.push(u8::from_str_radix(tok, 16).expect("hex byte"));
                }
            }
            assert!(closed, "example {name}: unclosed block");
            out.push((name, bytes));
        }
        out
    }

    #[test]
    fn protocol_md_examples_match_the_codec() {
        let examples = md_examples(include_str!("../../../PROTOCOL.md"));
        let mut names = std::collections::HashSet::new();
        let mut kinds = std::collections::HashSet::new();
        for (name, bytes) in &examples {
            assert!(names.insert(name.clone()), "duplicate example {name}");
            let frame = example_frame(name)
                .unwrap_or_else(|| panic!("no frame for PROTOCOL.md example {name:?}"));
            assert_eq!(dec(bytes), Ok(frame.clone()), "decoding example {name}");
            assert_eq!(
                frame.to_bytes().as_ref(),
                &bytes[..],
                "encoding example {name}"
            );
            assert_eq!(frame.validate(&Limits::default()), Ok(()), "{name}");
            kinds.insert(frame.kind());
        }
        for kind in FrameKind::ALL {
            assert!(kinds.contains(&kind), "PROTOCOL.md has no {kind} example");
        }
    }

    // ---- DecodeError variants ----

    #[test]
    fn truncated() {
        assert_eq!(
            dec(&[]),
            Err(DecodeError::Truncated {
                field: "type",
                needed: 1,
                available: 0
            })
        );
        assert_eq!(
            dec(&[0x03, 0x05, b'n', b'e']),
            Err(DecodeError::Truncated {
                field: "channel",
                needed: 5,
                available: 2
            })
        );
        // Input ends inside a varint.
        assert_eq!(
            dec(&[0x08, 0x80]),
            Err(DecodeError::Truncated {
                field: "seq",
                needed: 1,
                available: 0
            })
        );
        // Flags byte missing.
        assert!(matches!(
            dec(&[0x07, 0x01]),
            Err(DecodeError::Truncated { field: "flags", .. })
        ));
        // A kept_count larger than the bytes left cannot be honest.
        let mut w = Frame::Welcome(Welcome {
            version: 1,
            resumed: false,
            session_id: t("s"),
            name: t("n"),
            resume_token: ResumeToken::new(Bytes::new()),
            token_lifetime_ms: 0,
            last_client_seq: 0,
            kept: vec![],
        })
        .to_bytes()
        .to_vec();
        *w.last_mut().unwrap() = 3;
        w.extend_from_slice(&[0x00, 0x00]);
        assert_eq!(
            dec(&w),
            Err(DecodeError::Truncated {
                field: "kept",
                needed: 3,
                available: 2
            })
        );
    }

    #[test]
    fn trailing_bytes() {
        assert_eq!(
            dec(&[0x08, 0x01, 0x00]),
            Err(DecodeError::TrailingBytes {
                kind: FrameKind::Ack,
                count: 1
            })
        );
        assert_eq!(
            dec(&[0x03, 0x01, b'a', b'b', b'c']),
            Err(DecodeError::TrailingBytes {
                kind: FrameKind::Subscribe,
                count: 2
            })
        );
    }

    #[test]
    fn unknown_frame_type() {
        for b in [0x00, 0x0d, 0x7f, 0xff] {
            assert_eq!(dec(&[b, 0x00]), Err(DecodeError::UnknownFrameType(b)));
        }
        assert_eq!(
            DecodeError::UnknownFrameType(0x0d).to_string(),
            "unknown frame type 0x0d"
        );
    }

    #[test]
    fn overlong_varint() {
        assert_eq!(dec(&[0x08, 0x80, 0x00]), Err(DecodeError::OverlongVarint));
        assert_eq!(
            dec(&[0x08, 0xff, 0x80, 0x00]),
            Err(DecodeError::OverlongVarint)
        );
        // A single zero byte is the minimal encoding of 0.
        assert_eq!(dec(&[0x08, 0x00]), Ok(Frame::Ack { seq: 0 }));
    }

    #[test]
    fn varint_overflow_and_edges() {
        let mut max = vec![0x08];
        max.extend_from_slice(&[0xff; 9]);
        max.push(0x01);
        assert_eq!(dec(&max), Ok(Frame::Ack { seq: u64::MAX }));
        assert_eq!(Frame::Ack { seq: u64::MAX }.to_bytes().as_ref(), &max[..]);

        let mut over = max.clone();
        *over.last_mut().unwrap() = 0x02;
        assert_eq!(dec(&over), Err(DecodeError::VarintOverflow));
        // An 11-byte varint: the tenth byte still has its continuation bit.
        let mut long = vec![0x08];
        long.extend_from_slice(&[0x80; 10]);
        long.push(0x01);
        assert_eq!(dec(&long), Err(DecodeError::VarintOverflow));

        for (v, len) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)] {
            assert_eq!(varint_len(v), len, "{v}");
            assert_eq!(Frame::Ack { seq: v }.encoded_len(), 1 + len);
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn value_out_of_range() {
        assert_eq!(
            dec(&[0x07, 0x00, 0x00]),
            Err(DecodeError::ValueOutOfRange {
                field: "seq",
                value: 0,
                min: 1,
                max: u64::MAX
            })
        );
        assert!(matches!(
            dec(&[0x09, 0x00, 0x00]),
            Err(DecodeError::ValueOutOfRange {
                field: "offset",
                ..
            })
        ));
        // 65536 = 80 80 04
        assert_eq!(
            dec(&[0x0c, 0x80, 0x80, 0x04, 0x00, 0x00]),
            Err(DecodeError::ValueOutOfRange {
                field: "code",
                value: 65_536,
                min: 0,
                max: 65_535
            })
        );
        assert!(matches!(
            dec(&[0x06, 0x01, b'a', 0x80, 0x80, 0x04, 0x00]),
            Err(DecodeError::ValueOutOfRange { field: "code", .. })
        ));
        // 65535 = ff ff 03 is fine.
        assert_eq!(
            dec(&[0x0c, 0xff, 0xff, 0x03, 0x00, 0x00]),
            Ok(Frame::Error {
                code: u16::MAX,
                terminal: false,
                reason: t("")
            })
        );
    }

    #[test]
    fn reserved_flags() {
        assert_eq!(
            dec(&[0x01, 0x01, 0x04, 0x00]),
            Err(DecodeError::ReservedFlags {
                kind: FrameKind::Hello,
                flags: 0x04,
                defined: 0x03
            })
        );
        assert!(matches!(
            dec(&[0x02, 0x01, 0x02]),
            Err(DecodeError::ReservedFlags {
                kind: FrameKind::Welcome,
                ..
            })
        ));
        assert!(matches!(
            dec(&[0x07, 0x01, 0x04]),
            Err(DecodeError::ReservedFlags {
                kind: FrameKind::Publish,
                ..
            })
        ));
        assert!(matches!(
            dec(&[0x09, 0x01, 0x80]),
            Err(DecodeError::ReservedFlags {
                kind: FrameKind::Message,
                ..
            })
        ));
        assert_eq!(
            dec(&[0x0c, 0x02, 0x81, 0x00]).unwrap_err().to_string(),
            "ERROR flags 0x81 set undefined bits (defined: 0x01)"
        );
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(
            dec(&[0x03, 0x02, 0xc3, 0x28]),
            Err(DecodeError::InvalidUtf8 { field: "channel" })
        );
        assert_eq!(
            dec(&[0x07, 0x01, 0x02, 0xff]),
            Err(DecodeError::InvalidUtf8 { field: "payload" })
        );
        assert_eq!(
            dec(&[0x01, 0x01, 0x02, 0x00, 0x01, 0x80]),
            Err(DecodeError::InvalidUtf8 { field: "name" })
        );
        // The same bytes are fine as a binary payload.
        assert_eq!(
            dec(&[0x07, 0x01, 0x00, 0xff]),
            Ok(Frame::Publish {
                seq: 1,
                channel: None,
                payload: Payload::binary(vec![0xff])
            })
        );
    }

    #[test]
    fn too_long_is_checked_before_the_input() {
        // Declares 300 bytes (ac 02) but sends none: the limit speaks first.
        let err = dec(&[0x03, 0xac, 0x02]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLong {
                field: "channel",
                len: 300,
                max: 255
            }
        );
        assert_eq!(err.to_string(), "channel is 300 bytes, limit 255");
        let mut huge = vec![0x0c, 0x01, 0x00];
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x01);
        assert!(matches!(
            dec(&huge),
            Err(DecodeError::TooLong {
                field: "reason",
                len: u64::MAX,
                ..
            })
        ));
        let limits = Limits {
            max_token_len: 2,
            ..Limits::default()
        };
        assert!(matches!(
            decode(
                Bytes::from_static(&[0x01, 0x01, 0x01, 0x03, 1, 2, 3, 0]),
                &limits
            ),
            Err(DecodeError::TooLong {
                field: "resume_token",
                len: 3,
                max: 2
            })
        ));
    }

    #[test]
    fn too_many_kept_channels() {
        let limits = Limits {
            max_kept_channels: 1,
            ..Limits::default()
        };
        let frame = Frame::Welcome(Welcome {
            version: 1,
            resumed: true,
            session_id: t("s"),
            name: t("n"),
            resume_token: ResumeToken::new(Bytes::from_static(b"k")),
            token_lifetime_ms: 1,
            last_client_seq: 1,
            kept: vec![t("a"), t("b")],
        });
        assert_eq!(
            decode(frame.to_bytes(), &limits),
            Err(DecodeError::TooMany {
                field: "kept",
                count: 2,
                max: 1
            })
        );
        assert_eq!(
            frame.validate(&limits),
            Err(EncodeError::TooMany {
                field: "kept",
                count: 2,
                max: 1
            })
        );
    }

    #[test]
    fn frame_too_large() {
        let limits = Limits {
            max_frame_len: 8,
            ..Limits::default()
        };
        let frame = Frame::Publish {
            seq: 1,
            channel: None,
            payload: Payload::binary(vec![0u8; 6]),
        };
        assert_eq!(
            decode(frame.to_bytes(), &limits),
            Err(DecodeError::FrameTooLarge { len: 9, max: 8 })
        );
        assert_eq!(
            frame.validate(&limits),
            Err(EncodeError::FrameTooLarge { len: 9, max: 8 })
        );
    }

    // ---- other unit tests ----

    #[test]
    fn validate_rejects_what_decode_would() {
        let limits = Limits::default();
        let long = Text::from("x".repeat(256));
        assert_eq!(
            Frame::Subscribe {
                channel: long.clone()
            }
            .validate(&limits),
            Err(EncodeError::TooLong {
                field: "channel",
                len: 256,
                max: 255
            })
        );
        assert!(matches!(
            Frame::Publish {
                seq: 0,
                channel: None,
                payload: Payload::binary(Bytes::new())
            }
            .validate(&limits),
            Err(EncodeError::ValueOutOfRange { field: "seq", .. })
        ));
        assert!(matches!(
            Frame::Message {
                offset: 0,
                channel: None,
                payload: Payload::binary(Bytes::new())
            }
            .validate(&limits),
            Err(EncodeError::ValueOutOfRange {
                field: "offset",
                ..
            })
        ));
        assert!(matches!(
            Frame::Hello(Hello {
                version: 1,
                resume_token: None,
                last_offset: 0,
                name: Some(long),
            })
            .validate(&limits),
            Err(EncodeError::TooLong { field: "name", .. })
        ));
    }

    #[test]
    fn decoded_fields_share_the_input_buffer() {
        let frame = Frame::Message {
            offset: 7,
            channel: Some(t("news")),
            payload: Payload::text("x".repeat(1024)),
        };
        let input = frame.to_bytes();
        let range = input.as_ptr_range();
        let inside = |b: &Bytes| range.contains(&b.as_ptr());
        let Ok(Frame::Message {
            channel: Some(channel),
            payload,
            ..
        }) = decode(input.clone(), &Limits::default())
        else {
            panic!("did not decode");
        };
        assert!(inside(channel.as_bytes()));
        assert!(inside(payload.bytes()));

        let welcome = Frame::Welcome(Welcome {
            version: 1,
            resumed: true,
            session_id: t("sid"),
            name: t("name"),
            resume_token: ResumeToken::new(Bytes::from_static(b"tok")),
            token_lifetime_ms: 5,
            last_client_seq: 5,
            kept: vec![t("a")],
        });
        let input = welcome.to_bytes();
        let range = input.as_ptr_range();
        let inside = |b: &Bytes| range.contains(&b.as_ptr());
        let Ok(Frame::Welcome(w)) = decode(input.clone(), &Limits::default()) else {
            panic!("did not decode");
        };
        assert!(inside(w.session_id.as_bytes()));
        assert!(inside(w.name.as_bytes()));
        assert!(inside(w.resume_token.expose()));
        assert!(inside(w.kept[0].as_bytes()));
    }

    #[test]
    fn debug_hides_tokens_and_payloads() {
        let frames = [
            Frame::Hello(Hello {
                version: 1,
                resume_token: Some(ResumeToken::new(Bytes::from_static(b"tok-SECRET"))),
                last_offset: 0,
                name: None,
            }),
            Frame::Welcome(Welcome {
                version: 1,
                resumed: false,
                session_id: t("s"),
                name: t("n"),
                resume_token: ResumeToken::new(Bytes::from_static(b"tok-SECRET")),
                token_lifetime_ms: 0,
                last_client_seq: 0,
                kept: vec![],
            }),
            Frame::Publish {
                seq: 1,
                channel: None,
                payload: Payload::text("pay-SECRET"),
            },
            Frame::Message {
                offset: 1,
                channel: None,
                payload: Payload::binary(Bytes::from_static(b"pay-SECRET")),
            },
        ];
        for f in frames {
            let s = format!("{f:?}");
            assert!(!s.contains("SECRET"), "{s}");
        }
    }

    #[test]
    fn kinds_and_codes() {
        for (i, kind) in FrameKind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(kind.type_byte()), i + 1);
            assert_eq!(FrameKind::from_type_byte(kind.type_byte()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(FrameKind::from_type_byte(0), None);
        assert_eq!(FrameKind::from_type_byte(13), None);
        assert_eq!(error_code::name(3), Some("name_unavailable"));
        assert_eq!(error_code::name(7), Some("slow_consumer"));
        assert_eq!(error_code::name(8), None);
        assert!(!error_code::is_terminal(error_code::SLOW_CONSUMER));
        assert_eq!(
            error_code::close_code(error_code::SLOW_CONSUMER, false),
            1013
        );
    }

    #[test]
    fn encode_appends() {
        let mut out = BytesMut::from(&b"xy"[..]);
        Frame::Ack { seq: 300 }.encode(&mut out);
        assert_eq!(&out[..], &[b'x', b'y', 0x08, 0xac, 0x02]);
    }

    // ---- property tests ----

    fn num() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..200, 0u64..100_000, any::<u64>()]
    }

    fn positive() -> impl Strategy<Value = u64> {
        prop_oneof![1u64..200, 1u64..=u64::MAX]
    }

    fn text(max_chars: usize) -> impl Strategy<Value = Text> {
        prop_oneof![
            proptest::string::string_regex(&format!("[a-z0-9._-]{{0,{max_chars}}}")).unwrap(),
            proptest::string::string_regex(&format!("\\PC{{0,{max_chars}}}")).unwrap(),
        ]
        .prop_map(Text::from)
    }

    fn raw(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
    }

    fn payload(max: usize) -> impl Strategy<Value = Payload> {
        prop_oneof![
            raw(max).prop_map(Payload::binary),
            proptest::string::string_regex(&format!("\\PC{{0,{max}}}"))
                .unwrap()
                .prop_map(Payload::text),
        ]
    }

    /// Frames of every kind; strings up to `chars` characters (4 bytes each
    /// at most), payloads up to `bytes` bytes.
    fn frame(chars: usize, bytes: usize) -> BoxedStrategy<Frame> {
        let hello = (
            num(),
            proptest::option::of(raw(chars)),
            num(),
            proptest::option::of(text(chars)),
        )
            .prop_map(|(version, token, last_offset, name)| {
                Frame::Hello(Hello {
                    version,
                    resume_token: token.map(ResumeToken::new),
                    last_offset,
                    name,
                })
            });
        let welcome = (
            (num(), any::<bool>(), text(chars), text(chars), raw(chars)),
            (num(), num(), proptest::collection::vec(text(chars), 0..4)),
        )
            .prop_map(
                |((version, resumed, session_id, name, token), (life, seq, kept))| {
                    Frame::Welcome(Welcome {
                        version,
                        resumed,
                        session_id,
                        name,
                        resume_token: ResumeToken::new(token),
                        token_lifetime_ms: life,
                        last_client_seq: seq,
                        kept,
                    })
                },
            );
        prop_oneof![
            hello,
            welcome,
            text(chars).prop_map(|channel| Frame::Subscribe { channel }),
            text(chars).prop_map(|channel| Frame::Unsubscribe { channel }),
            text(chars).prop_map(|channel| Frame::Subscribed { channel }),
            (text(chars), any::<u16>(), text(chars)).prop_map(|(channel, code, reason)| {
                Frame::SubscribeError {
                    channel,
                    code,
                    reason,
                }
            }),
            (
                positive(),
                proptest::option::of(text(chars)),
                payload(bytes)
            )
                .prop_map(|(seq, channel, payload)| Frame::Publish {
                    seq,
                    channel,
                    payload
                }),
            num().prop_map(|seq| Frame::Ack { seq }),
            (
                positive(),
                proptest::option::of(text(chars)),
                payload(bytes)
            )
                .prop_map(|(offset, channel, payload)| Frame::Message {
                    offset,
                    channel,
                    payload
                }),
            num().prop_map(|offset| Frame::Received { offset }),
            (num(), num()).prop_map(|(retry_after_ms, window_ms)| Frame::GoingAway {
                retry_after_ms,
                window_ms
            }),
            (any::<u16>(), any::<bool>(), text(chars)).prop_map(|(code, terminal, reason)| {
                Frame::Error {
                    code,
                    terminal,
                    reason,
                }
            }),
        ]
        .boxed()
    }

    /// If `bytes` decodes, it is the canonical encoding of what it decodes to.
    fn check_canonical(bytes: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
        if let Ok(f) = decode(Bytes::copy_from_slice(bytes), limits) {
            let again = f.to_bytes();
            prop_assert_eq!(again.as_ref(), bytes);
            prop_assert_eq!(f.encoded_len(), bytes.len());
            prop_assert_eq!(f.validate(limits), Ok(()));
        }
        Ok(())
    }

    fn mutate(mut v: Vec<u8>, ops: &[(u8, Index, u8)]) -> Vec<u8> {
        for (op, at, byte) in ops {
            match op {
                0 if !v.is_empty() => {
                    let i = at.index(v.len());
                    v[i] = *byte;
                }
                1 => v.insert(at.index(v.len() + 1), *byte),
                2 if !v.is_empty() => {
                    v.remove(at.index(v.len()));
                }
                _ => v.truncate(at.index(v.len() + 1)),
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(f in frame(16, 300)) {
            let limits = Limits::default();
            prop_assert_eq!(f.validate(&limits), Ok(()));
            let bytes = f.to_bytes();
            prop_assert_eq!(f.encoded_len(), bytes.len());
            prop_assert_eq!(bytes.first().copied(), Some(f.kind().type_byte()));
            prop_assert_eq!(decode(bytes, &limits), Ok(f));
        }

        #[test]
        fn mutations_decode_only_to_canonical_frames(
            f in frame(6, 12),
            ops in proptest::collection::vec((0u8..4, any::<Index>(), any::<u8>()), 1..4),
        ) {
            let bytes = mutate(f.to_bytes().to_vec(), &ops);
            check_canonical(&bytes, &Limits::default())?;
        }

        #[test]
        fn arbitrary_bytes_decode_only_to_canonical_frames(
            ty in 0u8..=14,
            body in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut bytes = vec![ty];
            bytes.extend_from_slice(&body);
            check_canonical(&bytes, &Limits::default())?;
            check_canonical(&body, &Limits::default())?;
        }

        #[test]
        fn validate_agrees_with_decode_under_tight_limits(f in frame(12, 30)) {
            let limits = Limits {
                max_frame_len: 48,
                max_channel_len: 10,
                max_name_len: 9,
                max_reason_len: 11,
                max_token_len: 8,
                max_session_id_len: 7,
                max_kept_channels: 2,
            };
            let decoded = decode(f.to_bytes(), &limits);
            prop_assert_eq!(f.validate(&limits).is_ok(), decoded.is_ok(), "{:?}", decoded);
            if let Ok(g) = decoded {
                prop_assert_eq!(g, f);
            }
        }
    }
}
