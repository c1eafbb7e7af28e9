//! Raw: every WebSocket message is application data, with optional
//! resubscribe, on-connect messages and an application heartbeat.

use std::fmt;
use std::sync::Arc;

use crate::payload::{Payload, Text};
use crate::transport::Frame;

use super::{
    Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output, Protocol,
    ProtocolError,
};

/// Transparent: every WebSocket message is application data.
///
/// Messages sent while disconnected wait in the bounded queue and go out
/// after the next connect. A message written to a transport that then dies
/// is gone: without acknowledgements nobody can know whether it arrived, so
/// Raw is at-most-once across a drop. Use [`Wire`](crate::Wire) when that
/// matters.
///
/// For feeds that need more than a socket:
/// - subscriptions: [`Session::handle_subscribe_with`](crate::Session::handle_subscribe_with)
///   keeps a message (the feed's subscribe request) that is sent after every
///   connect, before anything queued; unsubscribing sends the message given
///   with it;
/// - [`on_connect`](Self::on_connect) messages (an auth or hello frame),
///   sent first on every connection;
/// - an application [`heartbeat`](Self::heartbeat) for servers that never
///   answer WebSocket pings.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    on_connect: Vec<Payload>,
    heartbeat: Option<RawHeartbeat>,
}

/// An application heartbeat for [`Raw`]: sent when the link has been quiet
/// for the config's `ping_interval`; the reply must come within
/// `pong_timeout` or the link is taken for dead and reconnected.
///
/// By default any inbound message counts as the reply. A feed that keeps
/// sending data while its session behind it is gone needs a stricter
/// answer: name the reply with [`reply`](Self::reply) or
/// [`reply_when`](Self::reply_when), and only that clears the deadline.
/// The reply is still delivered to the application as a message.
#[derive(Debug, Clone)]
pub struct RawHeartbeat {
    message: Payload,
    reply: Reply,
}

/// What answers a [`RawHeartbeat`].
#[derive(Clone)]
enum Reply {
    Any,
    Exact(Payload),
    Matching(Arc<dyn Fn(&Frame) -> bool + Send + Sync>),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Any => f.write_str("Any"),
            Reply::Exact(p) => f.debug_tuple("Exact").field(p).finish(),
            Reply::Matching(_) => f.write_str("Matching(..)"),
        }
    }
}

impl Reply {
    fn answers(&self, frame: &Frame) -> bool {
        match self {
            Reply::Any => true,
            Reply::Exact(want) => match frame {
                Frame::Text(t) => want.as_text() == Some(t.as_str()),
                Frame::Binary(b) => want.as_text().is_none() && want.bytes() == b,
                // WebSocket pings and pongs are not the feed's reply.
                Frame::Ping(_) | Frame::Pong(_) => false,
            },
            Reply::Matching(f) => f(frame),
        }
    }
}

impl RawHeartbeat {
    /// Sends `message` on a quiet link; any inbound message is the reply.
    pub fn new(message: Payload) -> Self {
        RawHeartbeat {
            message,
            reply: Reply::Any,
        }
    }

    /// Only this exact message is the reply: a text message with the same
    /// text, or a binary one with the same bytes.
    pub fn reply(mut self, message: Payload) -> Self {
        self.reply = Reply::Exact(message);
        self
    }

    /// Only messages `is_reply` accepts are the reply (it also sees
    /// WebSocket pings and pongs). Keep it cheap: it runs on every inbound
    /// message.
    pub fn reply_when(mut self, is_reply: impl Fn(&Frame) -> bool + Send + Sync + 'static) -> Self {
        self.reply = Reply::Matching(Arc::new(is_reply));
        self
    }

    /// Any inbound message is the reply (the default).
    pub fn reply_any(mut self) -> Self {
        self.reply = Reply::Any;
        self
    }
}

impl Raw {
    /// No on-connect messages, WebSocket pings as the heartbeat.
    pub fn new() -> Self {
        Raw::default()
    }

    /// Adds a message sent first on every connection, in the order added.
    pub fn on_connect(mut self, message: Payload) -> Self {
        self.on_connect.push(message);
        self
    }

    /// Uses an application heartbeat instead of WebSocket pings.
    pub fn heartbeat(mut self, heartbeat: RawHeartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }
}

impl Protocol for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_subscriptions()
    }

    fn on_open(&mut self, _cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
        for m in &self.on_connect {
            out.send_payload(m);
        }
        Handshake::Ready
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        _cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        out.fact(Inbound::data(match frame {
            Frame::Text(t) => Payload::text(t),
            Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => Payload::binary(b),
        }));
        Ok(())
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        out.send_payload(msg.payload);
    }

    fn subscribe(&mut self, _key: &Text, spec: &Payload, out: &mut Output) {
        out.send_payload(spec);
    }

    fn unsubscribe(
        &mut self,
        _key: &Text,
        _spec: &Payload,
        message: Option<&Payload>,
        out: &mut Output,
    ) {
        if let Some(m) = message {
            out.send_payload(m);
        }
    }

    fn answers_heartbeat(&self, frame: &Frame) -> bool {
        self.heartbeat
            .as_ref()
            .is_none_or(|h| h.reply.answers(frame))
    }

    fn heartbeat(&mut self, out: &mut Output) -> bool {
        match &self.heartbeat {
            Some(h) => {
                out.send_payload(&h.message);
                true
            }
            None => false,
        }
    }
}
