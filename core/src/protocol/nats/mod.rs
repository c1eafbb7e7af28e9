//! Nats: the NATS client protocol over WebSocket on the session layer.

pub mod codec;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;

use crate::close_policy::CloseRule;
use crate::error::SendError;
use crate::headers::Headers;
use crate::nats::{self, ClientOp, Connect, Credentials, Decoder, ErrKind, ServerOp};
use crate::payload::{Payload, Text};
use crate::transport::Frame;

use crate::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output, Protocol,
    ProtocolError, Ready,
};

const NAME: &str = "nats";

/// Where the handshake of the current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The server speaks first: INFO.
    AwaitInfo,
    /// CONNECT and PING sent; the PONG says the server took the CONNECT
    /// (with `verbose: false` a refusal is a `-ERR` instead).
    AwaitPong,
    Ready,
}

/// The NATS client protocol over a WebSocket (nats-server's `websocket`
/// listener).
///
/// On every connection: the server's INFO, our CONNECT (`verbose: false`,
/// headers on, the configured [`Credentials`]; a token from the token
/// provider is sent as `auth_token` and wins), then a PING whose PONG means
/// ready. Subscriptions: the session's subscription key is the subject and
/// the spec an optional queue group
/// ([`Session::handle_subscribe`](crate::Session::handle_subscribe) for a
/// plain one); each gets a sid once and keeps it, so after a reconnect the
/// same SUBs go out with the same sids. MSG and HMSG become
/// [`Event::Message`](crate::Event::Message) with the message's subject as
/// the channel and, for HMSG, its [`Headers`] (the pairs; a status line is
/// not kept); a publish is
/// [`Session::handle_publish`](crate::Session::handle_publish) with the
/// subject as the channel (PUB), or
/// [`Session::handle_publish_with_headers`](crate::Session::handle_publish_with_headers)
/// (HPUB). PING and PONG are the heartbeat both ways:
/// the server's PING is answered, a quiet link gets our PING (the config's
/// `ping_interval`). `-ERR` by meaning ([`ErrKind`]): refused credentials
/// are terminal, a server shedding load steps the ladder, other closing
/// errors reconnect, the rest are reported and the connection stays (a
/// refused subscription becomes
/// [`Event::SubscribeFailed`](crate::Event::SubscribeFailed)). An INFO with
/// `ldm: true` (lame duck mode) is a GOING_AWAY: the client leaves at once
/// and comes back after a random delay within
/// [`ldm_window`](Self::ldm_window), so a fleet does not return in one wave.
///
/// # Across a reconnect
/// Publishes made while disconnected wait in the bounded queue and go out
/// after the reconnect; a publish written to a socket that then dies is
/// gone (NATS core has no acknowledgements). Subscriptions are renewed, but
/// NATS core is at most once: every message published to a subject while
/// this client was away is missed, and nothing in the protocol says how
/// many. A publisher that numbers its messages lets the subscriber count
/// the gap; JetStream, not this type, is the way to get them replayed.
#[derive(Debug)]
pub struct Nats {
    connect: Connect,
    ldm_window: Duration,
    decoder: Decoder,
    stage: Stage,
    /// Subject → sid, kept across connections.
    sids: BTreeMap<Text, u64>,
    /// Sid → subject, for the subscriptions of the current connection.
    active: BTreeMap<u64, Text>,
    next_sid: u64,
}

impl Default for Nats {
    fn default() -> Self {
        Nats {
            connect: Connect::default(),
            ldm_window: Duration::from_secs(10),
            decoder: Decoder::new(nats::Limits::default()),
            stage: Stage::AwaitInfo,
            sids: BTreeMap::new(),
            active: BTreeMap::new(),
            next_sid: 1,
        }
    }
}

impl Nats {
    /// No credentials, a 10 s lame duck window.
    pub fn new() -> Self {
        Nats::default()
    }

    /// The credentials CONNECT carries (a token provider's token replaces
    /// them).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.connect.credentials = credentials;
        self
    }

    /// A name for this connection in the server's monitoring.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connect.name = Some(name.into());
        self
    }

    /// The window a lame duck server's clients spread their return over
    /// (default 10 s).
    pub fn ldm_window(mut self, window: Duration) -> Self {
        self.ldm_window = window;
        self
    }

    fn sid(&mut self, subject: &Text) -> u64 {
        if let Some(sid) = self.sids.get(subject) {
            return *sid;
        }
        let sid = self.next_sid;
        self.next_sid += 1;
        self.sids.insert(subject.clone(), sid);
        sid
    }

    fn on_op(&mut self, op: ServerOp, out: &mut Output, buf: &mut BytesMut) {
        match op {
            ServerOp::Info(info) => match self.stage {
                Stage::AwaitInfo => {
                    let max = usize::try_from(info.max_payload).unwrap_or(usize::MAX);
                    if max > 0 {
                        self.decoder.set_max_payload(max);
                    }
                    // CONNECT's only failure is a bad subject; it has none.
                    let _ = ClientOp::Connect(&self.connect).encode(buf);
                    let _ = ClientOp::Ping.encode(buf);
                    self.stage = Stage::AwaitPong;
                }
                _ if info.ldm => out.fact(Inbound::GoingAway {
                    retry_after: Duration::ZERO,
                    window: self.ldm_window,
                    leave: true,
                }),
                // Cluster membership changes: nothing to do with one URL.
                _ => {}
            },
            ServerOp::Ping => {
                let _ = ClientOp::Pong.encode(buf);
            }
            ServerOp::Pong if self.stage == Stage::AwaitPong => {
                self.stage = Stage::Ready;
                let mut ready = Ready::new();
                ready.max_message = Some(self.decoder.limits().max_payload);
                out.fact(Inbound::Ready(ready));
            }
            ServerOp::Pong | ServerOp::Ok => {}
            ServerOp::Msg(m) => {
                // A message for a sid we unsubscribed may still be in flight.
                if self.active.contains_key(&m.sid) {
                    out.fact(Inbound::Data {
                        key: Some(m.subject),
                        offset: None,
                        payload: Payload::binary(m.payload),
                        headers: m.headers.as_ref().map(headers_of),
                    });
                }
            }
            ServerOp::Err(e) => {
                let rule = e.kind.close_rule();
                match rule {
                    Some(rule) => out.fact(Inbound::Failed {
                        code: 0,
                        reason: e.message,
                        rule,
                    }),
                    None => match self.refused_subject(e.kind, e.message.as_str()) {
                        Some(key) => out.fact(Inbound::SubscribeFailed {
                            key,
                            code: 0,
                            reason: e.message,
                        }),
                        None => out.fact(Inbound::ServerError {
                            code: 0,
                            reason: e.message,
                        }),
                    },
                }
            }
        }
    }

    /// The subscription a `Permissions Violation for Subscription to "S"`
    /// refuses, if it is one of ours.
    fn refused_subject(&self, kind: ErrKind, message: &str) -> Option<Text> {
        const PREFIX: &str = "permissions violation for subscription to ";
        if kind != ErrKind::KeepsConnection || message.len() < PREFIX.len() {
            return None;
        }
        let (head, rest) = message.split_at_checked(PREFIX.len())?;
        if !head.eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let subject = rest.trim().trim_matches('"');
        self.sids.keys().find(|k| k.as_str() == subject).cloned()
    }
}

/// An HMSG's header block as the application sees it: the pairs, in order
/// (a status line, which only replies to requests carry, is not kept).
fn headers_of(block: &nats::Headers) -> Headers {
    block
        .iter()
        .map(|(n, v)| (Text::from(n), Text::from(v)))
        .collect()
}

/// The HPUB header block for `headers`.
fn block_of(headers: &Headers) -> Result<nats::Headers, SendError> {
    let pairs: Vec<(&str, &str)> = headers.iter().collect();
    nats::Headers::build(&pairs).map_err(|e| SendError::Invalid {
        protocol: NAME,
        reason: e.to_string(),
    })
}

fn flush(buf: &mut BytesMut, out: &mut Output) {
    if !buf.is_empty() {
        out.send(Frame::Binary(buf.split().freeze()));
    }
}

impl Protocol for Nats {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            channels: true,
            channel_required: true,
            subscriptions: true,
            token_in_handshake: true,
            ..Capabilities::default()
        }
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, _out: &mut Output) -> Handshake {
        // A fresh decoder: the last server's max_payload is not this one's.
        self.decoder = Decoder::new(nats::Limits::default());
        self.active.clear();
        self.stage = Stage::AwaitInfo;
        if let Some(token) = cx.token {
            self.connect.credentials = Credentials::Token(token.clone());
        }
        Handshake::Await {
            reply: "INFO and PONG",
            timeout: None,
        }
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        _cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let bytes = match frame {
            Frame::Binary(b) => b,
            Frame::Text(t) => t.into_bytes(),
            Frame::Ping(_) | Frame::Pong(_) => return Ok(()),
        };
        self.decoder.push(bytes);
        let mut buf = BytesMut::new();
        loop {
            match self.decoder.next_op() {
                Ok(Some(op)) => self.on_op(op, out, &mut buf),
                Ok(None) => break,
                Err(e) => return Err(ProtocolError::invalid(NAME, e)),
            }
        }
        flush(&mut buf, out);
        Ok(())
    }

    fn check_publish(&self, channel: Option<&Text>, _payload: &Payload) -> Result<(), SendError> {
        // `channel_required` refused a publish without one already.
        let Some(subject) = channel else {
            return Ok(());
        };
        let mut probe = BytesMut::new();
        ClientOp::Pub {
            subject: subject.as_str(),
            reply: None,
            payload: &[],
        }
        .encode(&mut probe)
        .map_err(|e| SendError::Invalid {
            protocol: NAME,
            reason: e.to_string(),
        })?;
        // The size against the server's max_payload is the session's
        // check (Ready::max_message).
        Ok(())
    }

    fn check_headers(&self, headers: &Headers) -> Result<usize, SendError> {
        // The server's max_payload counts the header block too.
        Ok(block_of(headers)?.as_text().len())
    }

    fn check_subscription(&self, key: &Text, spec: &Payload) -> Result<(), SendError> {
        let queue = match spec.as_text() {
            Some(q) => q,
            None if spec.is_empty() => "",
            None => {
                return Err(SendError::Invalid {
                    protocol: NAME,
                    reason: "a queue group must be text".to_owned(),
                })
            }
        };
        let mut probe = BytesMut::new();
        ClientOp::Sub {
            subject: key.as_str(),
            queue: (!queue.is_empty()).then_some(queue),
            sid: 0,
        }
        .encode(&mut probe)
        .map(|_| ())
        .map_err(|e| SendError::Invalid {
            protocol: NAME,
            reason: e.to_string(),
        })
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        let Some(subject) = msg.channel else { return };
        let mut buf = BytesMut::with_capacity(msg.payload.len() + subject.len() + 24);
        // Subject and headers were checked (`check_publish`,
        // `check_headers`) before the message was queued.
        let encoded = match msg.headers {
            None => ClientOp::Pub {
                subject: subject.as_str(),
                reply: None,
                payload: msg.payload.bytes(),
            }
            .encode(&mut buf),
            Some(headers) => match block_of(headers) {
                Ok(block) => ClientOp::HPub {
                    subject: subject.as_str(),
                    reply: None,
                    headers: &block,
                    payload: msg.payload.bytes(),
                }
                .encode(&mut buf),
                Err(_) => return,
            },
        };
        if encoded.is_ok() {
            flush(&mut buf, out);
        }
    }

    fn subscribe(&mut self, key: &Text, spec: &Payload, out: &mut Output) {
        let sid = self.sid(key);
        let queue = spec.as_text().filter(|q| !q.is_empty());
        let mut buf = BytesMut::new();
        let op = ClientOp::Sub {
            subject: key.as_str(),
            queue,
            sid,
        };
        if op.encode(&mut buf).is_ok() {
            self.active.insert(sid, key.clone());
            flush(&mut buf, out);
        }
    }

    fn unsubscribe(
        &mut self,
        key: &Text,
        _spec: &Payload,
        _message: Option<&Payload>,
        out: &mut Output,
    ) {
        if let Some(sid) = self.sids.remove(key) {
            self.active.remove(&sid);
            let mut buf = BytesMut::new();
            let _ = ClientOp::Unsub { sid, max: None }.encode(&mut buf);
            flush(&mut buf, out);
        }
    }

    fn heartbeat(&mut self, out: &mut Output) -> bool {
        out.send(Frame::Binary(bytes::Bytes::from_static(b"PING\r\n")));
        true
    }

    fn close_rule(&self, _code: u16) -> Option<CloseRule> {
        None
    }

    fn on_closed(&mut self) {
        self.decoder.reset();
        self.active.clear();
        self.stage = Stage::AwaitInfo;
    }
}
