//! Wire: redial's own binary protocol (PROTOCOL.md) on the session layer.

pub mod codec;

use std::time::Duration;

use crate::close_policy::CloseRule;
use crate::event::{SessionInfo, TerminalReason};
use crate::payload::{Payload, Text};
use crate::transport::Frame;
use crate::wire::{self, error_code};

use crate::config::Config;
use crate::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, InputLimits, OpenContext, Outgoing, Output,
    Protocol, ProtocolError, Ready,
};

/// A frame a [`Wire`] server sent that breaks PROTOCOL.md, wrapped in
/// [`ProtocolError::Wire`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame did not decode.
    #[error("malformed frame: {0}")]
    Decode(#[from] codec::DecodeError),
    /// A text message: Wire only uses binary ones.
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
}

impl WireError {
    fn unexpected(kind: codec::FrameKind, when: &'static str) -> ProtocolError {
        WireError::UnexpectedFrame {
            kind: kind.name(),
            when,
        }
        .into()
    }
}

/// redial's own binary protocol (see `PROTOCOL.md`): resumable sessions,
/// acknowledged publishes, replayed messages, subscriptions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wire;

/// The PUBLISH header is at most 1 + 10 + 1 + 2 bytes besides the channel.
const PUBLISH_OVERHEAD: usize = 14;

fn send(out: &mut Output, frame: &wire::Frame) {
    out.send(Frame::Binary(frame.to_bytes()));
}

impl Protocol for Wire {
    fn name(&self) -> &'static str {
        "wire"
    }

    fn subprotocol(&self) -> Option<&'static str> {
        Some(wire::SUBPROTOCOL)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            acked_delivery: true,
            channels: true,
            channel_required: false,
            subscriptions: true,
            subscription_spec: false,
            frame_overhead: Some(PUBLISH_OVERHEAD),
            calls: false,
            // The token travels on the upgrade request (PROTOCOL.md).
            token_in_handshake: false,
        }
    }

    /// Channels (and subscription keys, which are channels) up to the
    /// configured `wire_limits.max_channel_len`: 255 bytes by default, the
    /// limit PROTOCOL.md sets.
    fn limits(&self, config: &Config) -> InputLimits {
        let max = config.wire_limits().max_channel_len;
        InputLimits::new(max, max)
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
        send(
            out,
            &wire::Frame::Hello(wire::Hello {
                version: wire::VERSION,
                resume_token: cx.resume.cloned(),
                last_offset: cx.last_offset,
                name: cx.name.cloned(),
            }),
        );
        Handshake::Await {
            reply: "WELCOME",
            timeout: None,
        }
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        use wire::Frame as F;
        let Frame::Binary(bytes) = frame else {
            return Err(WireError::UnexpectedText.into());
        };
        let frame = wire::decode(bytes, cx.limits).map_err(WireError::Decode)?;
        let handshaking = !cx.ready;
        let fact = match frame {
            F::Welcome(w) if handshaking => {
                if w.version != wire::VERSION {
                    // A protocol error, not the end (PROTOCOL.md 7.4): in a
                    // rolling deploy the next node may well speak our
                    // version.
                    return Err(WireError::VersionMismatch {
                        chosen: w.version,
                        offered: wire::VERSION,
                    }
                    .into());
                }
                let mut ready = Ready::new().session(
                    SessionInfo {
                        id: w.session_id,
                        name: w.name,
                    },
                    w.resumed,
                );
                ready.resume = (!w.resume_token.is_empty())
                    .then(|| (w.resume_token, Duration::from_millis(w.token_lifetime_ms)));
                ready.last_client_seq = w.last_client_seq;
                ready.kept = w.kept;
                Inbound::Ready(ready)
            }
            F::GoingAway {
                retry_after_ms,
                window_ms,
            } => Inbound::GoingAway {
                retry_after: Duration::from_millis(retry_after_ms),
                window: Duration::from_millis(window_ms),
                leave: false,
            },
            F::Error {
                code,
                terminal: true,
                reason,
            } => {
                let why = match code {
                    error_code::UNSUPPORTED_VERSION => TerminalReason::UnsupportedVersion,
                    error_code::NAME_UNAVAILABLE => TerminalReason::NameUnavailable,
                    error_code::UNAUTHORIZED => TerminalReason::Unauthorized,
                    c => TerminalReason::ServerError(c),
                };
                Inbound::Failed {
                    code: code.into(),
                    reason,
                    rule: CloseRule::Terminal(why),
                }
            }
            F::Error { code, reason, .. } => Inbound::ServerError {
                code: code.into(),
                reason,
            },
            f if handshaking => return Err(WireError::unexpected(f.kind(), "before WELCOME")),
            F::Ack { seq } => Inbound::Acked { seq },
            F::Message {
                offset,
                channel,
                payload,
            } => Inbound::Data {
                key: channel,
                offset: Some(offset),
                payload,
                headers: None,
            },
            F::Subscribed { channel } => Inbound::subscribed(channel),
            F::SubscribeError {
                channel,
                code,
                reason,
            } => Inbound::SubscribeFailed {
                key: channel,
                code: code.into(),
                reason,
            },
            f => return Err(WireError::unexpected(f.kind(), "from a server")),
        };
        out.fact(fact);
        Ok(())
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        send(
            out,
            &wire::Frame::Publish {
                seq: msg.seq,
                channel: msg.channel.cloned(),
                payload: msg.payload.clone(),
            },
        );
    }

    fn subscribe(&mut self, key: &Text, _spec: &Payload, out: &mut Output) {
        send(
            out,
            &wire::Frame::Subscribe {
                channel: key.clone(),
            },
        );
    }

    fn unsubscribe(
        &mut self,
        key: &Text,
        _spec: &Payload,
        _message: Option<&Payload>,
        out: &mut Output,
    ) {
        send(
            out,
            &wire::Frame::Unsubscribe {
                channel: key.clone(),
            },
        );
    }

    fn report_offset(&mut self, offset: u64, out: &mut Output) {
        send(out, &wire::Frame::Received { offset });
    }

    fn report_error(&mut self, reason: &str, out: &mut Output) {
        // Tell the server why before the 1002 (PROTOCOL.md 3.3).
        send(
            out,
            &wire::Frame::Error {
                code: error_code::MALFORMED_FRAME,
                terminal: false,
                reason: Text::from(reason),
            },
        );
    }
}
