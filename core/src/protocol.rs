//! Pluggable protocols: how WebSocket messages map to session semantics.

use std::fmt;

use crate::payload::{Payload, Text};
use crate::transport::Frame;
use crate::wire::{self, DecodeError, FrameKind, Limits};

/// What a message from the server means to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// Application data with no session layer around it.
    Data(Payload),
    /// A session-layer frame.
    Frame(wire::Frame),
}

/// The server broke the protocol. The session closes the transport with 1002
/// and reconnects through the ladder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame did not decode.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// A text message where the protocol only uses binary ones.
    #[error("text message on a binary protocol")]
    UnexpectedText,
    /// A frame that is valid but not at this point (or not from a server).
    #[error("unexpected {kind} frame {when}")]
    UnexpectedFrame {
        /// The frame's name.
        kind: &'static str,
        /// When it came.
        when: &'static str,
    },
    /// The WELCOME chose a version the HELLO did not offer (PROTOCOL.md 7.4).
    #[error("WELCOME chose version {chosen}, but HELLO offered {offered}")]
    VersionMismatch {
        /// The version in the WELCOME.
        chosen: u64,
        /// The version in the HELLO (the highest this client speaks).
        offered: u64,
    },
    /// The server acknowledged a message we never sent.
    #[error("ACK for seq {seq}, but the highest seq sent is {highest}")]
    AckBeyondSent {
        /// The acked seq.
        seq: u64,
        /// The highest we sent.
        highest: u64,
    },
}

impl ProtocolError {
    pub(crate) fn unexpected(kind: FrameKind, when: &'static str) -> Self {
        ProtocolError::UnexpectedFrame {
            kind: kind.name(),
            when,
        }
    }
}

/// A codec between WebSocket messages and session semantics.
///
/// The session speaks in [`wire::Frame`] values (HELLO, PUBLISH, ACK, ...);
/// a protocol decides how each travels. Implement it to put redial's
/// continuity rules on another server's framing: return `None` from
/// [`encode`](Protocol::encode) for frames your server has no use for.
pub trait Protocol: fmt::Debug + Send + 'static {
    /// A short name for errors and logs.
    fn name(&self) -> &'static str;

    /// True when the protocol has a session layer: HELLO/WELCOME, acks,
    /// offsets and subscriptions. Without one the session sends only
    /// PUBLISH payloads and takes every message as [`Inbound::Data`].
    fn has_session(&self) -> bool;

    /// The WebSocket subprotocol (`Sec-WebSocket-Protocol`) the adapter
    /// must request on every dial, if any.
    fn subprotocol(&self) -> Option<&'static str> {
        None
    }

    /// The WebSocket message for a client frame, or `None` to not send it.
    fn encode(&mut self, frame: &wire::Frame) -> Option<Frame>;

    /// What a text or binary message from the server means.
    fn decode(&mut self, frame: Frame, limits: &Limits) -> Result<Inbound, ProtocolError>;
}

/// Transparent: every WebSocket message is application data.
///
/// Messages sent while disconnected wait in the bounded queue and go out
/// after the next connect. A message written to a transport that then dies
/// is gone: without acknowledgements nobody can know whether it arrived, so
/// Raw is at-most-once across a drop. Use [`Wire`] when that matters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Protocol for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn has_session(&self) -> bool {
        false
    }

    fn encode(&mut self, frame: &wire::Frame) -> Option<Frame> {
        match frame {
            wire::Frame::Publish { payload, .. } => Some(match payload.text_value() {
                Some(text) => Frame::Text(text),
                None => Frame::Binary(payload.bytes().clone()),
            }),
            _ => None,
        }
    }

    fn decode(&mut self, frame: Frame, _limits: &Limits) -> Result<Inbound, ProtocolError> {
        Ok(Inbound::Data(match frame {
            Frame::Text(t) => Payload::text(t),
            Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => Payload::binary(b),
        }))
    }
}

/// redial's own binary protocol (see `PROTOCOL.md`): resumable sessions,
/// acknowledged publishes, replayed messages, subscriptions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wire;

impl Protocol for Wire {
    fn name(&self) -> &'static str {
        "wire"
    }

    fn has_session(&self) -> bool {
        true
    }

    fn subprotocol(&self) -> Option<&'static str> {
        Some(wire::SUBPROTOCOL)
    }

    fn encode(&mut self, frame: &wire::Frame) -> Option<Frame> {
        Some(Frame::Binary(frame.to_bytes()))
    }

    fn decode(&mut self, frame: Frame, limits: &Limits) -> Result<Inbound, ProtocolError> {
        match frame {
            Frame::Binary(b) => Ok(Inbound::Frame(wire::decode(b, limits)?)),
            _ => Err(ProtocolError::UnexpectedText),
        }
    }
}

/// The channel a frame is about, for validation of user input.
pub(crate) fn check_channel(channel: &Text, limits: &Limits) -> Result<(), crate::SendError> {
    if channel.is_empty() || channel.len() > limits.max_channel_len {
        return Err(crate::SendError::InvalidChannel {
            len: channel.len(),
            max: limits.max_channel_len,
        });
    }
    Ok(())
}
