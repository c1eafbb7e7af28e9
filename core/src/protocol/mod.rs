//! The session layer protocols plug into: what a protocol tells the session
//! and what the session asks of it.
//!
//! The session runs the same ladder, queue, timers and close policy for
//! every protocol and never asks which protocol it talks to. A protocol is a
//! small pure state machine between the two: it turns the session's intents
//! (the socket opened, publish this, subscribe that, the link is quiet) into
//! WebSocket frames, and WebSocket frames into [`Inbound`] facts (ready,
//! data, acked, subscribed, going away, a server error and what it means).
//! [`Raw`], [`Wire`], and with their features [`GraphqlWs`], [`Nats`],
//! [`JsonRpc`] and [`SocketIo`] are the implementations that come with
//! redial.
//!
//! # Writing a protocol
//! Implement [`Protocol`]: say what you have in [`Capabilities`], send your
//! handshake from [`on_open`](Protocol::on_open) and report
//! [`Inbound::Ready`] when the server's reply comes, map each message to
//! facts in [`on_frame`](Protocol::on_frame). Everything else has a
//! default.
//!
//! Two more things a protocol can do (see [`Protocol`]'s "Time" section):
//! keep a timer of its own ([`Output::wake_at`], called back in
//! [`on_timer`](Protocol::on_timer), from which it may declare the link
//! dead with [`LinkDead`]), and carry the application's calls
//! ([`Capabilities::calls`]: [`call`](Protocol::call) sends one under the
//! session's [`CallId`], [`Inbound::Replied`] and [`Inbound::CallRejected`]
//! end it). Each protocol states its own [`InputLimits`].
//!
//! The hard part of a pubsub protocol is usually the server's ids: the
//! application subscribes under a key of its own, the server answers with
//! an id it picked, and that id changes on every connection. Below is the
//! core of an `eth_subscribe` client doing that: the reply to each subscribe
//! request maps the server's id to the key, notifications carry the key,
//! and ids from an earlier connection mean nothing. ([`JsonRpc`] is the
//! complete one: calls, unsubscribe, liveness, a notice after every
//! resubscription.)
//!
//! ```
//! use std::collections::BTreeMap;
//! use redial_core::json_rpc::{self, Batch, Id, Message};
//! use redial_core::protocol::{
//!     Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output,
//! };
//! use redial_core::{Event, Frame, Payload, Protocol, ProtocolError, Text};
//!
//! #[derive(Debug, Default)]
//! struct EthRpc {
//!     next_id: i64,
//!     pending: BTreeMap<i64, Text>,   // subscribe request id -> key
//!     active: BTreeMap<String, Text>, // the server's subscription id -> key
//! }
//!
//! impl Protocol for EthRpc {
//!     fn name(&self) -> &'static str {
//!         "eth-rpc"
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::default().with_subscriptions()
//!     }
//!     fn on_open(&mut self, _cx: &OpenContext<'_>, _out: &mut Output) -> Handshake {
//!         // Ids from the last connection mean nothing on this one; the
//!         // session subscribes every key again.
//!         self.pending.clear();
//!         self.active.clear();
//!         Handshake::Ready // no handshake: usable as soon as the socket is
//!     }
//!     fn on_frame(
//!         &mut self,
//!         frame: Frame,
//!         _cx: &FrameContext<'_>,
//!         out: &mut Output,
//!     ) -> Result<(), ProtocolError> {
//!         let bad = |why: &str| ProtocolError::invalid("eth-rpc", why);
//!         let Frame::Text(text) = frame else {
//!             return Err(bad("binary message"));
//!         };
//!         let limits = json_rpc::Limits::default();
//!         let Ok(Batch::Single(message)) = json_rpc::decode(text.as_str(), limits) else {
//!             return Err(bad("not one JSON-RPC message"));
//!         };
//!         match message {
//!             Message::Result { id: Id::Number(id), result } => {
//!                 if let Some(key) = self.pending.remove(&id) {
//!                     self.active.insert(result.get().to_owned(), key.clone());
//!                     let server_id = Some(Text::from(result.get()));
//!                     out.fact(Inbound::Subscribed { key, server_id });
//!                 }
//!             }
//!             Message::Error { id: Id::Number(id), error } => {
//!                 if let Some(key) = self.pending.remove(&id) {
//!                     let reason = Text::from(error.message.as_ref());
//!                     out.fact(Inbound::SubscribeFailed { key, code: error.code, reason });
//!                 }
//!             }
//!             Message::Notification { params: Some(params), .. } => {
//!                 let params: serde_json::Value =
//!                     serde_json::from_str(params.get()).map_err(|_| bad("params"))?;
//!                 // Only the server's id says whose data this is; one this
//!                 // connection never confirmed is stale, and dropped.
//!                 if let Some(key) = self.active.get(&params["subscription"].to_string()) {
//!                     out.fact(Inbound::Data {
//!                         key: Some(key.clone()),
//!                         offset: None,
//!                         payload: Payload::text(params["result"].to_string()),
//!                         headers: None,
//!                     });
//!                 }
//!             }
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//!     fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
//!         out.send_payload(msg.payload);
//!     }
//!     fn subscribe(&mut self, key: &Text, spec: &Payload, out: &mut Output) {
//!         self.next_id += 1;
//!         self.pending.insert(self.next_id, key.clone());
//!         let params = spec.as_text().unwrap_or("[]");
//!         out.send(Frame::Text(Text::from(format!(
//!             r#"{{"jsonrpc":"2.0","id":{},"method":"eth_subscribe","params":{params}}}"#,
//!             self.next_id
//!         ))));
//!     }
//! }
//!
//! let config = redial_core::Config::builder().seed(1).build().expect("valid");
//! let mut session = redial_core::Session::new(config, EthRpc::default());
//! let now = std::time::Instant::now();
//! session
//!     .handle_subscribe_with(now, "heads", Payload::text(r#"["newHeads"]"#))
//!     .expect("subscriptions are supported");
//! session.handle_connect(now);
//! session.handle_dial_ok(now); // Dial action, then the socket opens
//! let sent: Vec<_> = std::iter::from_fn(|| session.poll_action()).collect();
//! assert!(matches!(&sent[1], redial_core::Action::Send(Frame::Text(t), _)
//!     if t.as_str().contains("eth_subscribe")));
//! let server = |text: &str| Frame::Text(Text::from(text));
//! session.handle_frame(now, server(r#"{"jsonrpc":"2.0","id":1,"result":"0x9c"}"#));
//! session.handle_frame(now, server(
//!     r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x9c","result":{"number":"0x1"}}}"#,
//! ));
//! session.handle_frame(now, server( // an id nobody holds: dropped
//!     r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x11","result":{}}}"#,
//! ));
//! let messages: Vec<_> = std::iter::from_fn(|| session.poll_event())
//!     .filter_map(|e| match e {
//!         Event::Message { channel, payload, .. } => Some((channel, payload)),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(messages.len(), 1);
//! assert_eq!(messages[0].0.as_ref().map(Text::as_str), Some("heads"));
//! assert_eq!(messages[0].1.as_text(), Some(r#"{"number":"0x1"}"#));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::call::CallId;
use crate::close_policy::CloseRule;
use crate::config::Config;
use crate::event::SessionInfo;
use crate::headers::Headers;
use crate::payload::{Payload, Text};
use crate::secret::{AuthToken, ResumeToken};
use crate::transport::Frame;
use crate::wire::Limits;

#[cfg(feature = "graphql-ws")]
pub mod graphql_ws;
#[cfg(feature = "json-rpc")]
pub mod json_rpc;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
mod raw;
#[cfg(feature = "socket-io")]
pub mod socket_io;
pub mod wire;

// Raw JSON values, shared by the JSON-based codecs.
#[cfg(any(feature = "graphql-ws", feature = "json-rpc"))]
mod json;

#[cfg(feature = "graphql-ws")]
pub use graphql_ws::GraphqlWs;
#[cfg(feature = "json-rpc")]
pub use json_rpc::JsonRpc;
#[cfg(feature = "nats")]
pub use nats::Nats;
// mqtt protocol
#[cfg(feature = "mqtt")]
pub use mqtt::{Mqtt, MqttBuilder};
pub use raw::{Raw, RawHeartbeat};
#[cfg(feature = "socket-io")]
pub use socket_io::SocketIo;
pub use wire::{Wire, WireError};

/// The server broke the protocol. The session closes the transport (1002,
/// or the protocol's own [`protocol_error_close`](Protocol::protocol_error_close))
/// and reconnects through the ladder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A [`Wire`] frame that broke PROTOCOL.md.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The server acknowledged a message we never sent (protocols with
    /// [`Capabilities::acked_delivery`]).
    #[error("ACK for seq {seq}, but the highest seq sent is {highest}")]
    AckBeyondSent {
        /// The acked seq.
        seq: u64,
        /// The highest we sent.
        highest: u64,
    },
    /// A message a protocol's codec refused, or one that is valid but
    /// makes no sense at this point.
    #[error("{protocol}: {detail}")]
    Invalid {
        /// The protocol's name.
        protocol: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Application data before the protocol's handshake completed.
    #[error("data before the handshake completed")]
    DataBeforeReady,
}

impl ProtocolError {
    /// A message `protocol` cannot accept, and why.
    pub fn invalid(protocol: &'static str, detail: impl fmt::Display) -> Self {
        ProtocolError::Invalid {
            protocol,
            detail: detail.to_string(),
        }
    }
}

/// What a protocol takes from the application: the longest subscription
/// key and publish channel, checked before anything is kept or queued (a
/// longer one is refused with
/// [`SendError::InvalidChannel`](crate::SendError::InvalidChannel)).
///
/// Each protocol declares its own through [`Protocol::limits`]; the session
/// holds no protocol's limits as its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InputLimits {
    /// Longest subscription key, in bytes (an empty key is always refused).
    pub max_key_len: usize,
    /// Longest publish channel (or subject), in bytes.
    pub max_channel_len: usize,
}

impl InputLimits {
    /// The limits of a protocol that says nothing: 4096 bytes for keys and
    /// channels, a bound that keeps a key within what a server's control
    /// line takes (nats-server's default `max_control_line`).
    pub const DEFAULT_LEN: usize = 4096;

    /// Keys up to `max_key_len` and channels up to `max_channel_len` bytes.
    pub fn new(max_key_len: usize, max_channel_len: usize) -> Self {
        InputLimits {
            max_key_len,
            max_channel_len,
        }
    }

    /// Refuses an empty key or one over [`max_key_len`](Self::max_key_len).
    ///
    /// # Errors
    /// [`SendError::InvalidChannel`](crate::SendError::InvalidChannel).
    pub fn check_key(&self, key: &Text) -> Result<(), crate::SendError> {
        check_len(key, self.max_key_len)
    }

    /// Refuses an empty channel or one over
    /// [`max_channel_len`](Self::max_channel_len).
    ///
    /// # Errors
    /// [`SendError::InvalidChannel`](crate::SendError::InvalidChannel).
    pub fn check_channel(&self, channel: &Text) -> Result<(), crate::SendError> {
        check_len(channel, self.max_channel_len)
    }
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits::new(Self::DEFAULT_LEN, Self::DEFAULT_LEN)
    }
}

fn check_len(name: &Text, max: usize) -> Result<(), crate::SendError> {
    if name.is_empty() || name.len() > max {
        return Err(crate::SendError::InvalidChannel {
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// What a protocol offers, as facts the session acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The server acknowledges publishes ([`Inbound::Acked`]): the queue
    /// keeps each message until then and writes it again after a reconnect.
    /// Without it a message leaves the queue once written.
    pub acked_delivery: bool,
    /// Publishes may name a channel (or subject).
    pub channels: bool,
    /// Every publish must name one (NATS subjects).
    pub channel_required: bool,
    /// The session takes subscriptions and renews them after every connect.
    pub subscriptions: bool,
    /// Subscriptions need a spec (the message, query or subject behind the
    /// key); an empty one is refused.
    pub subscription_spec: bool,
    /// Publishes travel in frames bounded by the config's
    /// `wire_limits.max_frame_len`, each adding at most this many bytes to
    /// the payload and channel.
    pub frame_overhead: Option<usize>,
    /// The application can make calls
    /// ([`Session::handle_call`](crate::Session::handle_call)): the
    /// protocol sends them in [`Protocol::call`] and reports their ends as
    /// [`Inbound::Replied`] and [`Inbound::CallRejected`].
    pub calls: bool,
    /// The protocol carries the token from the provider in its own opening
    /// message (a CONNECT password, an init payload), so the adapter puts it
    /// on the upgrade request only when the application asks it to: a
    /// credential then travels in one place, not two.
    pub token_in_handshake: bool,
}

impl Capabilities {
    /// Turns on [`calls`](Self::calls).
    pub fn with_calls(mut self) -> Self {
        self.calls = true;
        self
    }

    /// Turns on [`subscriptions`](Self::subscriptions) with a required spec.
    pub fn with_subscriptions(mut self) -> Self {
        self.subscriptions = true;
        self.subscription_spec = true;
        self
    }
}

/// How the link becomes usable after the WebSocket opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handshake {
    /// At once: the session is connected now.
    Ready,
    /// After the protocol reports [`Inbound::Ready`].
    Await {
        /// The reply awaited, for the reason given when it does not come.
        reply: &'static str,
        /// How long to wait; `None`: what is left of the connect timeout.
        timeout: Option<Duration>,
    },
}

/// What the session knows when the WebSocket opens.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct OpenContext<'a> {
    /// The session's current time (the `now` of the input being handled),
    /// for deadlines given to [`Output::wake_at`].
    pub now: Instant,
    /// The token the token provider gave for this dial.
    pub token: Option<&'a AuthToken>,
    /// A resume token still valid on our clock.
    pub resume: Option<&'a ResumeToken>,
    /// The highest inbound offset delivered to the application.
    pub last_offset: u64,
    /// The configured session name.
    pub name: Option<&'a Text>,
    /// Every connection after the first.
    pub reconnect: bool,
    /// The configured wire limits.
    pub limits: &'a Limits,
}

/// What the session knows when a message arrives.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FrameContext<'a> {
    /// The session's current time, for deadlines given to
    /// [`Output::wake_at`].
    pub now: Instant,
    /// [`Inbound::Ready`] (or [`Handshake::Ready`]) already happened on
    /// this transport.
    pub ready: bool,
    /// The configured wire limits.
    pub limits: &'a Limits,
}

/// What the session knows when a protocol's own deadline comes
/// ([`Protocol::on_timer`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TimerContext {
    /// The session's current time: at or after the deadline asked for.
    pub now: Instant,
    /// The handshake completed on this transport.
    pub ready: bool,
}

/// A protocol's verdict from [`Protocol::on_timer`]: the link is dead (a
/// liveness request went unanswered, a deadline the server must meet
/// passed). The session closes the transport with 1001 and follows
/// [`rule`](Self::rule), as for a missed pong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkDead {
    /// Why, for [`Event::Disconnected`](crate::Event::Disconnected).
    pub reason: String,
    /// What happens next (by default: reconnect through the ladder).
    pub rule: CloseRule,
}

impl LinkDead {
    /// Dead for `reason`; reconnect through the ladder.
    pub fn new(reason: impl Into<String>) -> Self {
        LinkDead {
            reason: reason.into(),
            rule: CloseRule::Reconnect { honour_hint: true },
        }
    }

    /// Follow `rule` instead (a [`CloseRule::Terminal`] ends the session).
    pub fn with_rule(mut self, rule: CloseRule) -> Self {
        self.rule = rule;
        self
    }
}

/// An application message leaving the queue.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Outgoing<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// The channel it was published to, if any.
    pub channel: Option<&'a Text>,
    /// The payload.
    pub payload: &'a Payload,
    /// Its headers, when published with some (only after
    /// [`Protocol::check_headers`] took them).
    pub headers: Option<&'a Headers>,
}

/// What the server's handshake reply told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ready {
    /// The server-side session, for protocols that have one.
    pub session: Option<SessionInfo>,
    /// The server resumed our previous session.
    pub resumed: bool,
    /// A token to resume this session with, and how long it stays good
    /// after the connection is lost.
    pub resume: Option<(ResumeToken, Duration)>,
    /// The highest client seq the server already has (acked at once).
    pub last_client_seq: u64,
    /// Subscriptions the server kept through the reconnect: not sent again.
    /// The ones it kept that we no longer want are dropped through
    /// [`Protocol::unsubscribe`].
    pub kept: Vec<Text>,
    /// The heartbeat interval the server wants: when shorter than the
    /// config's `ping_interval` it is used on this connection (keepalive
    /// off stays off).
    pub heartbeat: Option<Duration>,
    /// The largest message the server takes: larger sends are refused with
    /// [`SendError::TooLarge`](crate::SendError::TooLarge) from then on.
    pub max_message: Option<usize>,
}

impl Ready {
    /// A ready reply that says nothing more.
    pub fn new() -> Self {
        Ready::default()
    }

    /// With the server-side session.
    pub fn session(mut self, info: SessionInfo, resumed: bool) -> Self {
        self.session = Some(info);
        self.resumed = resumed;
        self
    }
}

/// One fact a protocol reports about what the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inbound {
    /// The handshake completed: the link is usable.
    Ready(Ready),
    /// Application data.
    Data {
        /// The subscription key or channel it belongs to.
        key: Option<Text>,
        /// The server's offset, for protocols with offsets (gaps and
        /// replays are judged by it, and reported through
        /// [`Protocol::report_offset`]).
        offset: Option<u64>,
        /// The payload.
        payload: Payload,
        /// The message's headers, for protocols that carry them.
        headers: Option<Headers>,
    },
    /// The server has every publish up to and including `seq`.
    Acked {
        /// Cumulative sequence number.
        seq: u64,
    },
    /// A subscription is confirmed.
    Subscribed {
        /// Its key.
        key: Text,
        /// The id the server gave it on this connection, for protocols
        /// whose servers assign one (for logging; the application keeps
        /// using `key`).
        server_id: Option<Text>,
    },
    /// A subscription confirmed on an earlier connection is confirmed
    /// again (after its [`Inbound::Subscribed`]): what the server emitted
    /// while the client was away may be missing, for protocols that cannot
    /// replay it.
    Resubscribed {
        /// Its key.
        key: Text,
    },
    /// A subscription was refused; it is dropped from the set.
    SubscribeFailed {
        /// Its key.
        key: Text,
        /// The server's code (0 when the protocol has none); signed, since
        /// some protocols' are negative (JSON-RPC's -32602).
        code: i64,
        /// The server's reason.
        reason: Text,
    },
    /// The server ended a subscription; it is dropped from the set.
    SubscriptionEnded {
        /// Its key.
        key: Text,
    },
    /// The reply to a call made through [`Protocol::call`]. A reply to a
    /// call the session no longer keeps (it timed out) is dropped.
    Replied {
        /// The call.
        call: CallId,
        /// The result, as the protocol gives it to the application.
        result: Payload,
    },
    /// The server answered a call with an error.
    CallRejected {
        /// The call.
        call: CallId,
        /// The server's code.
        code: i64,
        /// The server's message.
        message: Text,
    },
    /// The server is going away: leave, and come back after `retry_after`
    /// spread over `window`.
    GoingAway {
        /// No sooner than this.
        retry_after: Duration,
        /// Spread over this window.
        window: Duration,
        /// Close the transport now rather than wait for the server to.
        leave: bool,
    },
    /// The server reported an error that does not end the connection by
    /// itself; a close that follows is not terminal (PROTOCOL.md 6).
    ServerError {
        /// The server's code (0 when the protocol has none).
        code: i64,
        /// The server's words.
        reason: Text,
    },
    /// The server reported an error that ends this connection, with the
    /// rule the protocol gives it. The session closes with 1000 and follows
    /// the rule (a terminal rule ends the session).
    Failed {
        /// The server's code (0 when the protocol has none). One that fits
        /// a `u16` is also the `code` of the [`Event::Disconnected`](crate::Event::Disconnected)
        /// or [`Event::Closed`](crate::Event::Closed) that follows; the
        /// reason carries the server's words either way.
        code: i64,
        /// The server's words.
        reason: Text,
        /// What happens next.
        rule: CloseRule,
    },
}

impl Inbound {
    /// Subscription `key` is confirmed, with no server-assigned id.
    pub fn subscribed(key: Text) -> Self {
        Inbound::Subscribed {
            key,
            server_id: None,
        }
    }

    /// Data with no key and no offset.
    pub fn data(payload: Payload) -> Self {
        Inbound::Data {
            key: None,
            offset: None,
            payload,
            headers: None,
        }
    }
}

/// Where a protocol puts the frames to send and the facts it found, in
/// order.
#[derive(Debug, Default)]
pub struct Output {
    frames: VecDeque<Frame>,
    facts: VecDeque<Inbound>,
    /// The protocol's last word on its timer since the session last looked:
    /// `Some(None)` cancels it.
    wake: Option<Option<Instant>>,
    /// A message's data fact while it is the only fact: most messages are
    /// exactly that, and keeping it out of `facts` spares moving a whole
    /// `Inbound` (the size of its largest variant) in and out of the queue
    /// on every message.
    lone: Option<Data>,
}

/// The fields of an [`Inbound::Data`].
#[derive(Debug)]
pub(crate) struct Data {
    pub(crate) key: Option<Text>,
    pub(crate) offset: Option<u64>,
    pub(crate) payload: Payload,
    pub(crate) headers: Option<Headers>,
}

impl From<Data> for Inbound {
    fn from(d: Data) -> Self {
        Inbound::Data {
            key: d.key,
            offset: d.offset,
            payload: d.payload,
            headers: d.headers,
        }
    }
}

impl Output {
    /// Sends a WebSocket message.
    pub fn send(&mut self, frame: Frame) {
        self.frames.push_back(frame);
    }

    /// Sends a payload as it is: text as a text message, else binary.
    pub fn send_payload(&mut self, payload: &Payload) {
        self.send(match payload.text_value() {
            Some(text) => Frame::Text(text),
            None => Frame::Binary(payload.bytes().clone()),
        });
    }

    /// Asks the session to call [`Protocol::on_timer`] at `at`, replacing
    /// any earlier request: a protocol has one timer (keep the earliest of
    /// your deadlines here). Kept only while a transport is open: the
    /// session forgets it when the transport goes. A deadline less than
    /// 1 ms after the session's `now` is taken as 1 ms after it, so a
    /// protocol that keeps asking for "now" cannot spin the session.
    pub fn wake_at(&mut self, at: Instant) {
        self.wake = Some(Some(at));
    }

    /// Withdraws the request made with [`wake_at`](Self::wake_at).
    pub fn cancel_wake(&mut self) {
        self.wake = Some(None);
    }

    /// Reports a fact to the session.
    pub fn fact(&mut self, fact: Inbound) {
        match fact {
            Inbound::Data {
                key,
                offset,
                payload,
                headers,
            } if self.lone.is_none() && self.facts.is_empty() => {
                self.lone = Some(Data {
                    key,
                    offset,
                    payload,
                    headers,
                });
            }
            fact => {
                // A second fact: the first goes to the queue ahead of it.
                if let Some(first) = self.lone.take() {
                    self.facts.push_back(first.into());
                }
                self.facts.push_back(fact);
            }
        }
    }

    /// The protocol's timer request, if it made one since the last take.
    pub(crate) fn take_wake(&mut self) -> Option<Option<Instant>> {
        self.wake.take()
    }

    pub(crate) fn pop_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// The data fact, when it is the only fact reported since the last
    /// take: the session handles it without going through [`Inbound`].
    pub(crate) fn take_lone_data(&mut self) -> Option<Data> {
        self.lone.take()
    }

    pub(crate) fn pop_fact(&mut self) -> Option<Inbound> {
        match self.lone.take() {
            Some(first) => Some(first.into()),
            None => self.facts.pop_front(),
        }
    }

    pub(crate) fn clear_facts(&mut self) {
        self.lone = None;
        self.facts.clear();
    }
}

/// A protocol between WebSocket messages and the session's rules.
///
/// Implementations are pure: no IO, no clock, no randomness (the session
/// spreads and jitters). They may keep per-connection state, reset in
/// [`on_open`](Self::on_open) or [`on_closed`](Self::on_closed).
///
/// # Time
/// A protocol never reads a clock: the session's `now` comes in
/// [`OpenContext::now`], [`FrameContext::now`] and [`TimerContext::now`].
/// To act at a time of its own (a liveness request every N seconds
/// whatever the traffic, a reply due within a deadline), it asks with
/// [`Output::wake_at`] and is called back through
/// [`on_timer`](Self::on_timer). The session keeps that deadline in its
/// one timer table, so [`Session::poll_timeout`](crate::Session::poll_timeout)
/// covers it and the calling contract does not change. The request lives
/// as long as the transport: after [`on_closed`](Self::on_closed) nothing
/// fires, and [`on_open`](Self::on_open) asks again.
///
/// # The quiet link and proof of life
/// With the config's `ping_interval` set, the session watches inbound
/// silence on its own: after `ping_interval` without any inbound message
/// (data, control, WebSocket ping or pong: anything the server sent
/// restarts that clock) it calls [`heartbeat`](Self::heartbeat), and
/// unless an inbound message that [`answers_heartbeat`](Self::answers_heartbeat)
/// arrives within `pong_timeout`, it closes with 1001 and reconnects. For
/// every inbound message the session asks, in this order:
/// 1. `answers_heartbeat(&frame)`: true clears an outstanding heartbeat's
///    deadline; this is the only proof of life the session counts;
/// 2. then, for text and binary messages only,
///    [`on_frame`](Self::on_frame).
///
/// Traffic alone therefore never proves a link alive when a protocol says
/// what answers its heartbeat, but it does postpone the next heartbeat: a
/// link where notifications keep flowing and requests go unanswered (a
/// "deaf" link) is found only by a timer of the protocol's own, which
/// sends its request whatever the traffic and returns [`LinkDead`] when
/// the reply does not come.
pub trait Protocol: fmt::Debug + Send + 'static {
    /// A short name for errors and logs.
    fn name(&self) -> &'static str;

    /// The WebSocket subprotocol (`Sec-WebSocket-Protocol`) the adapter
    /// must request on every dial, if any.
    fn subprotocol(&self) -> Option<&'static str> {
        None
    }

    /// What this protocol offers.
    fn capabilities(&self) -> Capabilities;

    /// The longest key and channel this protocol takes, given the session's
    /// `config`; asked once, when the session is made. The default:
    /// [`InputLimits::default`].
    fn limits(&self, config: &Config) -> InputLimits {
        let _ = config;
        InputLimits::default()
    }

    /// The WebSocket opened: send the handshake through `out` and say when
    /// the link is usable.
    fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake;

    /// A text or binary message from the server (WebSocket pings and pongs
    /// stay with the session): push the facts it holds and any frames to
    /// send in answer (a pong to the server's own ping, ...).
    ///
    /// # Errors
    /// A [`ProtocolError`] for anything malformed or out of place: the
    /// session reports it, closes and reconnects.
    fn on_frame(
        &mut self,
        frame: Frame,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError>;

    /// Refuses a message this protocol cannot carry, before it is queued
    /// (a channel it needs and lacks, a subject it cannot encode).
    ///
    /// # Errors
    /// The [`SendError`](crate::SendError) the caller gets.
    fn check_publish(
        &self,
        channel: Option<&Text>,
        payload: &Payload,
    ) -> Result<(), crate::SendError> {
        let _ = (channel, payload);
        Ok(())
    }

    /// Takes or refuses the headers of a publish, before it is queued;
    /// returns how many bytes they add to the message, for the server's
    /// message size limit. The default refuses them: a protocol that
    /// carries headers overrides it and reads
    /// [`Outgoing::headers`] in [`publish`](Self::publish).
    ///
    /// # Errors
    /// [`SendError::Unsupported`](crate::SendError::Unsupported) when the
    /// protocol has no headers; [`SendError::Invalid`](crate::SendError::Invalid)
    /// for a name or value it cannot encode.
    fn check_headers(&self, headers: &Headers) -> Result<usize, crate::SendError> {
        let _ = headers;
        Err(crate::SendError::Unsupported {
            protocol: self.name(),
            what: "message headers",
        })
    }

    /// Refuses a subscription this protocol cannot send, before it is
    /// kept.
    ///
    /// # Errors
    /// The [`SendError`](crate::SendError) the caller gets.
    fn check_subscription(&self, key: &Text, spec: &Payload) -> Result<(), crate::SendError> {
        let _ = (key, spec);
        Ok(())
    }

    /// Sends an application message leaving the queue.
    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output);

    /// Refuses a call request this protocol cannot send, before the
    /// session keeps it (only with [`Capabilities::calls`]).
    ///
    /// # Errors
    /// The [`SendError`](crate::SendError) the caller gets.
    fn check_call(&self, request: &Payload) -> Result<(), crate::SendError> {
        let _ = request;
        Ok(())
    }

    /// Sends call `id` with the application's `request` (only with
    /// [`Capabilities::calls`]). Called while connected, after the
    /// resubscriptions on a new connection, and again on the next
    /// connection for a repeatable call whose link dropped: the same `id`,
    /// so number the request on the wire from it in an id space apart from
    /// the protocol's own requests. Report the answer as
    /// [`Inbound::Replied`] or [`Inbound::CallRejected`] with this `id`.
    fn call(&mut self, id: CallId, request: &Payload, out: &mut Output) {
        let _ = (id, request, out);
    }

    /// The session gave up on call `id` (its timeout passed) while it was
    /// in flight: forget it, so that a late reply is dropped rather than
    /// taken for an unknown one. Calls in flight when the transport goes
    /// are forgotten with the rest in [`on_closed`](Self::on_closed).
    fn forget_call(&mut self, id: CallId) {
        let _ = id;
    }

    /// Sends subscription `key` with its `spec`: after every
    /// [`Inbound::Ready`] (unless kept) and when the user subscribes while
    /// connected.
    fn subscribe(&mut self, key: &Text, spec: &Payload, out: &mut Output) {
        let _ = (key, spec, out);
    }

    /// Ends subscription `key` while connected; `message` is what the user
    /// gave to send with it, if anything.
    fn unsubscribe(
        &mut self,
        key: &Text,
        spec: &Payload,
        message: Option<&Payload>,
        out: &mut Output,
    ) {
        let _ = (key, spec, message, out);
    }

    /// The link is quiet: send an application heartbeat and return true,
    /// or return false to have the session send a WebSocket ping. What
    /// counts as the answer is [`answers_heartbeat`](Self::answers_heartbeat).
    fn heartbeat(&mut self, out: &mut Output) -> bool {
        let _ = out;
        false
    }

    /// Whether `frame` (any inbound message, WebSocket pings and pongs
    /// included) answers an outstanding heartbeat and clears its deadline.
    /// The default: every inbound message does.
    fn answers_heartbeat(&self, frame: &Frame) -> bool {
        let _ = frame;
        true
    }

    /// Tells the server how far the application got, for protocols with
    /// offsets.
    fn report_offset(&mut self, offset: u64, out: &mut Output) {
        let _ = (offset, out);
    }

    /// The server broke the protocol: tell it why, if the protocol has a
    /// way, before the session closes the socket.
    fn report_error(&mut self, reason: &str, out: &mut Output) {
        let _ = (reason, out);
    }

    /// The close code the session uses after a [`ProtocolError`].
    fn protocol_error_close(&self) -> u16 {
        1002
    }

    /// The rule this protocol gives close `code`; consulted after the
    /// user's overrides and before the default table.
    fn close_rule(&self, code: u16) -> Option<CloseRule> {
        let _ = code;
        None
    }

    /// The deadline asked for with [`Output::wake_at`] came: send what is
    /// due (a liveness request, a PINGREQ) and ask for the next wake-up, or
    /// declare the link dead.
    ///
    /// # Errors
    /// [`LinkDead`]: the session closes the transport (1001) and follows
    /// its rule.
    fn on_timer(&mut self, cx: &TimerContext, out: &mut Output) -> Result<(), LinkDead> {
        let _ = (cx, out);
        Ok(())
    }

    /// The transport is gone: forget per-connection state.
    fn on_closed(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: u64) -> Inbound {
        Inbound::Data {
            key: None,
            offset: Some(n),
            payload: Payload::text(n.to_string()),
            headers: None,
        }
    }

    fn drain(out: &mut Output) -> Vec<Inbound> {
        std::iter::from_fn(|| out.pop_fact()).collect()
    }

    #[test]
    fn a_lone_data_fact_is_taken_without_the_queue() {
        let mut out = Output::default();
        out.fact(data(1));
        let lone = out.take_lone_data().map(Inbound::from);
        assert_eq!(lone, Some(data(1)));
        assert_eq!(out.take_lone_data().map(Inbound::from), None);
        assert!(drain(&mut out).is_empty());
    }

    #[test]
    fn facts_after_a_data_fact_keep_their_order() {
        let mut out = Output::default();
        out.fact(data(1));
        out.fact(Inbound::Acked { seq: 7 });
        out.fact(data(2));
        assert!(out.take_lone_data().is_none(), "two facts: none is lone");
        assert_eq!(
            drain(&mut out),
            vec![data(1), Inbound::Acked { seq: 7 }, data(2)]
        );
    }

    #[test]
    fn a_data_fact_after_another_fact_is_not_lone() {
        let mut out = Output::default();
        out.fact(Inbound::Acked { seq: 3 });
        out.fact(data(1));
        assert!(out.take_lone_data().is_none());
        assert_eq!(drain(&mut out), vec![Inbound::Acked { seq: 3 }, data(1)]);
    }

    #[test]
    fn clearing_drops_the_lone_data_fact_too() {
        let mut out = Output::default();
        out.fact(data(1));
        out.clear_facts();
        assert!(out.take_lone_data().is_none());
        assert!(drain(&mut out).is_empty());
    }
}
