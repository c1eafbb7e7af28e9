//! Wire: redial's own binary protocol (PROTOCOL.md) on the session layer.

use std::time::Duration;

use crate::close_policy::CloseRule;
use crate::event::{SessionInfo, TerminalReason};
use crate::payload::{Payload, Text};
use crate::transport::Frame;
use crate::wire::{self, error_code};

use super::{
    Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output, Protocol,
    ProtocolError, Ready,
};

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
        }
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
            return Err(ProtocolError::UnexpectedText);
        };
        let frame = wire::decode(bytes, cx.limits)?;
        let handshaking = !cx.ready;
        let fact = match frame {
            F::Welcome(w) if handshaking => {
                if w.version != wire::VERSION {
                    // A protocol error, not the end (PROTOCOL.md 7.4): in a
                    // rolling deploy the next node may well speak our
                    // version.
                    return Err(ProtocolError::VersionMismatch {
                        chosen: w.version,
                        offered: wire::VERSION,
                    });
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
                    code,
                    reason,
                    rule: CloseRule::Terminal(why),
                }
            }
            F::Error { code, reason, .. } => Inbound::ServerError { code, reason },
            f if handshaking => return Err(ProtocolError::unexpected(f.kind(), "before WELCOME")),
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
            F::Subscribed { channel } => Inbound::Subscribed { key: channel },
            F::SubscribeError {
                channel,
                code,
                reason,
            } => Inbound::SubscribeFailed {
                key: channel,
                code,
                reason,
            },
            f => return Err(ProtocolError::unexpected(f.kind(), "from a server")),
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
