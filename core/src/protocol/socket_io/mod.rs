//! SocketIo: Socket.IO (protocol 5, Engine.IO 4) on the session layer,
//! WebSocket transport only.

pub mod codec;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::call::CallId;
use crate::close_policy::CloseRule;
use crate::error::SendError;
use crate::event::TerminalReason;
use crate::payload::{Payload, Text};
use crate::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, LinkDead, OpenContext, Outgoing, Output,
    Protocol, ProtocolError, Ready, TimerContext,
};
use crate::secret::AuthToken;
use crate::transport::Frame;

use codec::{DecodeError, EnginePacket, Limits, Packet, PacketKind};

const NAME: &str = "socket.io";

/// The reason an `Event::Closed` carries when the server disconnected the
/// socket on purpose (Socket.IO's own words for it).
pub const SERVER_DISCONNECT: &str = "io server disconnect";

/// The most events kept from before the CONNECT reply (a recovering server
/// sends the missed events first), and their most bytes; more is a
/// protocol error.
const MAX_EARLY_EVENTS: usize = 4096;
const MAX_EARLY_BYTES: usize = 16 * 1024 * 1024;

/// Event names Socket.IO reserves: a server never receives them as events,
/// so publishing one is refused.
const RESERVED: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Socket.IO over WebSocket, with connection state recovery.
///
/// # The URL
/// Give the session the server's Engine.IO endpoint with the WebSocket
/// transport selected: `ws://host:port/socket.io/?EIO=4&transport=websocket`
/// (`wss://` over TLS; the path is the server's `path` option, `/socket.io/`
/// by default). Long-polling is not spoken: the socket starts on WebSocket.
///
/// # A connection
/// The server opens with the Engine.IO open packet (its session id, ping
/// interval and ping timeout); the client then joins its one
/// [`namespace`](Self::namespace) with a CONNECT whose auth object is the
/// configured [`auth`](Self::auth) with the token provider's token under
/// [`token_key`](Self::token_key) and, when it has them, the private
/// session id and last offset (below). The server's CONNECT reply makes the
/// session connected. The server pings every interval; each ping is
/// answered with a pong, and no ping within interval + timeout closes the
/// link as dead (1001) and reconnects.
///
/// # Events
/// A subscription's key is an event name (its spec is ignored): events of
/// that name arrive as [`Event::Message`](crate::Event::Message) with the
/// name as channel and the JSON array of the event's arguments as payload;
/// events nobody subscribed to are dropped. Publishing needs a channel, the
/// event name, and a JSON array of arguments as payload (`[]` for none);
/// it is written once and leaves the queue (Socket.IO has no delivery
/// acknowledgement of its own). An emit with an acknowledgement is a call
/// ([`Session::handle_call`](crate::Session::handle_call)) whose request is
/// the JSON array `["event", args...]`; the server's acknowledgement
/// arguments come back as the call's result, a JSON array. Events the
/// server sends asking for an acknowledgement are delivered and not
/// acknowledged. Binary attachments are refused as a protocol error.
///
/// # Across a reconnect
/// With connection state recovery on the server, the CONNECT reply carries
/// a private session id and each event the server emits without asking
/// for an acknowledgement ends with its offset, a string argument
/// (delivered with the others, as Socket.IO clients deliver it).
/// The client keeps the id and the last event's offset and presents both
/// on the next CONNECT.
/// - Recovered (the server answers with the same private id):
///   [`Event::Connected`](crate::Event::Connected) has `resumed: true`,
///   subscriptions stand as they were, and the events the server emitted
///   meanwhile arrive once, in order, before anything newer.
/// - Not recovered (past the server's window, a server that lost its
///   state, recovery off, or no event received yet so no offset to give):
///   `resumed: false`, and every subscription confirmed on the earlier
///   connection gets [`Event::Resubscribed`](crate::Event::Resubscribed):
///   events may have been missed.
///
/// Publishes and unacknowledged calls follow the session's rules: queued
/// messages wait for the next connection; a message written just before a
/// drop may be lost; a repeatable call is sent again.
///
/// # Ends
/// A DISCONNECT from the server (Socket.IO's "io server disconnect") ends
/// the session ([`TerminalReason::AdminDisconnect`], reason
/// [`SERVER_DISCONNECT`]), as Socket.IO clients do; so does a CONNECT_ERROR
/// (the server's middleware refused the namespace: terminal
/// [`TerminalReason::ServerError`] with code 0 and the server's message).
/// An Engine.IO close, a transport error or a malformed packet reconnects.
///
/// # Bounds
/// Packets are bounded by [`codec::Limits`] (1 MB, 256 arguments, 256-byte
/// namespaces, nesting 32 by default); calls in flight by the session's own
/// bound. A recovering server sends the missed events ahead of its CONNECT
/// reply: up to 4096 events and 16 MiB are held until the reply and then
/// delivered; more is a protocol error.
#[derive(Clone)]
pub struct SocketIo {
    namespace: String,
    auth: serde_json::Map<String, serde_json::Value>,
    token_key: String,
    limits: Limits,
    /// The private session id the server gave, kept across connections.
    pid: Option<String>,
    /// The offset of the last event received, kept across connections.
    offset: Option<String>,
    /// Subscribed event names on this connection.
    subscribed: BTreeSet<Text>,
    /// Those of the connection before, until this one is ready.
    previous: BTreeSet<Text>,
    conn: Conn,
}

/// Per-connection state, reset on every open.
#[derive(Clone, Default)]
struct Conn {
    /// The Engine.IO open came: interval + timeout, the longest wait for a
    /// ping.
    ping_window: Option<Duration>,
    /// The token for this connection's CONNECT.
    token: Option<AuthToken>,
    /// The CONNECT reply came.
    ready: bool,
    /// The server recovered our session on this connection.
    recovered: bool,
    /// The largest message the server takes, from its open packet.
    max_payload: Option<u64>,
    /// Calls in flight: ack id to the session's call.
    calls: BTreeMap<u64, CallId>,
    /// Events that came before the CONNECT reply, delivered right after
    /// it: name and arguments.
    early: Vec<(Text, String)>,
    /// Their bytes.
    early_bytes: usize,
}

// The auth object and the token may hold credentials, the private session
// id lets its holder take over the session: Debug shows neither.
impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("namespace", &self.namespace)
            .field("auth_fields", &self.auth.keys().collect::<Vec<_>>())
            .field("token_key", &self.token_key)
            .field("pid", &self.pid.as_ref().map(|_| "<redacted>"))
            .field("offset", &self.offset)
            .field("subscribed", &self.subscribed.len())
            .field("ready", &self.conn.ready)
            .finish_non_exhaustive()
    }
}

impl Default for SocketIo {
    fn default() -> Self {
        SocketIo {
            namespace: "/".to_owned(),
            auth: serde_json::Map::new(),
            token_key: "token".to_owned(),
            limits: Limits::default(),
            pid: None,
            offset: None,
            subscribed: BTreeSet::new(),
            previous: BTreeSet::new(),
            conn: Conn::default(),
        }
    }
}

impl SocketIo {
    /// The main namespace `/`, an empty auth object, the token under
    /// `"token"`, the default [`codec::Limits`].
    pub fn new() -> Self {
        SocketIo::default()
    }

    /// The namespace to join (default `/`); a leading `/` is added when
    /// missing.
    ///
    /// # Errors
    /// [`DecodeError::Namespace`] for one with a `,` in it or longer than
    /// the limits allow.
    pub fn namespace(mut self, namespace: &str) -> Result<Self, DecodeError> {
        let namespace = if namespace.starts_with('/') {
            namespace.to_owned()
        } else {
            format!("/{namespace}")
        };
        if namespace.contains(',') || namespace.len() > self.limits.max_namespace {
            return Err(DecodeError::Namespace);
        }
        self.namespace = namespace;
        Ok(self)
    }

    /// The auth object sent with every CONNECT: a JSON object.
    ///
    /// # Errors
    /// [`DecodeError::Data`] when `json` is not a JSON object.
    pub fn auth(mut self, json: &str) -> Result<Self, DecodeError> {
        self.auth = serde_json::from_str(json)
            .map_err(|_| DecodeError::Data("auth must be a JSON object".into()))?;
        Ok(self)
    }

    /// The auth field that carries the token provider's token (default
    /// `"token"`).
    pub fn token_key(mut self, key: impl Into<String>) -> Self {
        self.token_key = key.into();
        self
    }

    /// The packet bounds (default [`codec::Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A call request: emit `event` with `args` (a JSON array) and wait for
    /// the server's acknowledgement.
    ///
    /// # Errors
    /// [`SendError::Invalid`] when `args` is not a JSON array.
    pub fn call_request(event: &str, args: &str) -> Result<Payload, SendError> {
        let data = event_data(event, args).ok_or_else(|| invalid("args must be a JSON array"))?;
        Ok(Payload::text(data))
    }

    fn packet<'a>(&'a self, kind: PacketKind, ack_id: Option<u64>, data: Option<&'a str>) -> Frame {
        let packet = Packet {
            kind,
            namespace: &self.namespace,
            ack_id,
            data,
        };
        Frame::Text(Text::from(packet.encode_message()))
    }

    /// The CONNECT auth object: the configured one, the token, and what
    /// recovery needs.
    fn connect_auth(&self) -> String {
        let mut auth = self.auth.clone();
        if let Some(token) = &self.conn.token {
            auth.insert(
                self.token_key.clone(),
                serde_json::Value::String(token.expose().to_owned()),
            );
        }
        if let Some(pid) = &self.pid {
            auth.insert("pid".into(), serde_json::Value::String(pid.clone()));
            if let Some(offset) = &self.offset {
                auth.insert("offset".into(), serde_json::Value::String(offset.clone()));
            }
        }
        serde_json::Value::Object(auth).to_string()
    }

    fn arm_ping(&self, now: Instant, out: &mut Output) {
        if let Some(window) = self.conn.ping_window {
            out.wake_at(now + window);
        }
    }

    /// One packet; `args` are an EVENT's or an ACK's arguments.
    fn on_packet(
        &mut self,
        packet: Packet<'_>,
        args: Vec<&RawValue>,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let bad = |e: DecodeError| ProtocolError::invalid(NAME, e);
        if packet.namespace != self.namespace {
            // Only one namespace is joined: another's packets are not ours.
            return Ok(());
        }
        match packet.kind {
            PacketKind::Connect if self.conn.ready => {
                return Err(ProtocolError::invalid(NAME, "a second CONNECT"));
            }
            PacketKind::Connect => {
                let connected = codec::Connected::parse(&packet).map_err(bad)?;
                let recovered = connected.pid.is_some() && connected.pid == self.pid;
                if !recovered {
                    // A fresh session: offsets from the old one mean nothing.
                    self.offset = None;
                }
                self.pid = connected.pid;
                self.conn.ready = true;
                self.conn.recovered = recovered;
                let mut ready = Ready::new();
                ready.resumed = recovered;
                ready.max_message = self
                    .conn
                    .max_payload
                    .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
                if recovered {
                    // The server kept the socket's state: every event name
                    // stands; the session unsubscribes those dropped since.
                    self.subscribed = std::mem::take(&mut self.previous);
                    ready.kept = self.subscribed.iter().cloned().collect();
                }
                out.fact(Inbound::Ready(ready));
                // A recovering server sends the missed events ahead of its
                // reply: now they go out, in order, for the names that
                // stand (recovered) or are about to be subscribed again.
                for (name, args) in std::mem::take(&mut self.conn.early) {
                    let key = self.subscribed.get(&name).or(self.previous.get(&name));
                    if let Some(key) = key {
                        out.fact(Inbound::Data {
                            key: Some(key.clone()),
                            offset: None,
                            payload: Payload::text(args),
                            headers: None,
                        });
                    }
                }
                self.conn.early_bytes = 0;
            }
            PacketKind::ConnectError => out.fact(Inbound::Failed {
                code: 0,
                reason: Text::from(codec::connect_error_message(&packet)),
                rule: CloseRule::Terminal(TerminalReason::ServerError(0)),
            }),
            PacketKind::Disconnect => out.fact(Inbound::Failed {
                code: 0,
                reason: Text::from(SERVER_DISCONNECT),
                rule: CloseRule::Terminal(TerminalReason::AdminDisconnect),
            }),
            PacketKind::Ack if !cx.ready => return Err(ProtocolError::DataBeforeReady),
            PacketKind::Event => {
                let (name, rest) = split_name(&args).ok_or_else(|| {
                    bad(DecodeError::Missing {
                        kind: "EVENT",
                        what: "an event name",
                    })
                })?;
                if self.pid.is_some() {
                    if let Some(offset) = rest.last().and_then(|a| string_arg(a)) {
                        self.offset = Some(offset);
                    }
                }
                let name = Text::from(name);
                if !self.conn.ready {
                    let args = join(rest);
                    self.conn.early_bytes += name.len() + args.len();
                    if self.conn.early.len() >= MAX_EARLY_EVENTS
                        || self.conn.early_bytes > MAX_EARLY_BYTES
                    {
                        return Err(ProtocolError::invalid(
                            NAME,
                            "too many events before the CONNECT reply",
                        ));
                    }
                    self.conn.early.push((name, args));
                } else if let Some(key) = self.subscribed.get(&name) {
                    out.fact(Inbound::Data {
                        key: Some(key.clone()),
                        offset: None,
                        payload: Payload::text(join(rest)),
                        headers: None,
                    });
                }
            }
            PacketKind::Ack => {
                let call = packet.ack_id.and_then(|id| self.conn.calls.remove(&id));
                if let Some(call) = call {
                    out.fact(Inbound::Replied {
                        call,
                        result: Payload::text(join(&args)),
                    });
                }
            }
        }
        Ok(())
    }
}

fn invalid(reason: &str) -> SendError {
    SendError::Invalid {
        protocol: NAME,
        reason: reason.to_owned(),
    }
}

/// `["event", args...]` from an event name and a JSON array of arguments;
/// `None` when `args` is not an array.
fn event_data(event: &str, args: &str) -> Option<String> {
    let args: Vec<&RawValue> = serde_json::from_str(args).ok()?;
    let name = serde_json::to_string(event).ok()?;
    let mut items = Vec::with_capacity(args.len() + 1);
    items.push(name.as_str());
    items.extend(args.iter().map(|a| a.get()));
    Some(format!("[{}]", items.join(",")))
}

/// The event name and the arguments after it.
fn split_name<'a, 'b>(args: &'b [&'a RawValue]) -> Option<(String, &'b [&'a RawValue])> {
    let (first, rest) = args.split_first()?;
    let name = string_arg(first)?;
    Some((name, rest))
}

fn string_arg(arg: &RawValue) -> Option<String> {
    serde_json::from_str(arg.get()).ok()
}

fn join(args: &[&RawValue]) -> String {
    let items: Vec<&str> = args.iter().map(|a| a.get()).collect();
    format!("[{}]", items.join(","))
}

impl Protocol for SocketIo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default().with_calls();
        caps.channels = true;
        caps.channel_required = true;
        caps.subscriptions = true;
        caps.token_in_handshake = true;
        caps
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, _out: &mut Output) -> Handshake {
        self.conn = Conn {
            token: cx.token.cloned(),
            ..Conn::default()
        };
        // Until the server says whether it recovered, what this connection
        // subscribes is new; the last connection's names decide the notice.
        let last = std::mem::take(&mut self.subscribed);
        self.previous.extend(last);
        // The server speaks first (the Engine.IO open).
        Handshake::Await {
            reply: "Engine.IO open and Socket.IO CONNECT",
            timeout: None,
        }
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let bad = |e: DecodeError| ProtocolError::invalid(NAME, e);
        let Frame::Text(text) = frame else {
            return Err(bad(DecodeError::Binary));
        };
        match codec::decode_engine(text.as_str(), self.limits).map_err(bad)? {
            EnginePacket::Open(_) if self.conn.ping_window.is_some() => {
                return Err(ProtocolError::invalid(NAME, "a second Engine.IO open"));
            }
            EnginePacket::Open(open) => {
                self.conn.ping_window = Some(open.ping_interval.saturating_add(open.ping_timeout));
                self.conn.max_payload = open.max_payload;
                self.arm_ping(cx.now, out);
                let auth = self.connect_auth();
                out.send(self.packet(PacketKind::Connect, None, Some(&auth)));
            }
            _ if self.conn.ping_window.is_none() => {
                return Err(ProtocolError::invalid(NAME, "a packet before the open"));
            }
            EnginePacket::Ping(data) => {
                out.send(Frame::Text(Text::from(codec::encode_pong(data))));
                self.arm_ping(cx.now, out);
            }
            EnginePacket::Pong(_) => {}
            EnginePacket::Close => out.fact(Inbound::Failed {
                code: 0,
                reason: Text::from("the server closed the Engine.IO session"),
                rule: CloseRule::Reconnect { honour_hint: true },
            }),
            EnginePacket::Upgrade | EnginePacket::Noop => {
                return Err(ProtocolError::invalid(
                    NAME,
                    "upgrade or noop on a WebSocket session",
                ));
            }
            EnginePacket::Message(m) => {
                let (packet, args) = Packet::decode_with_args(m, self.limits).map_err(bad)?;
                self.on_packet(packet, args, cx, out)?;
            }
        }
        Ok(())
    }

    fn check_publish(&self, channel: Option<&Text>, payload: &Payload) -> Result<(), SendError> {
        let Some(event) = channel else {
            return Err(invalid("an event needs a name (the channel)"));
        };
        if RESERVED.contains(&event.as_str()) {
            return Err(invalid("a reserved event name"));
        }
        let args = payload.as_text().unwrap_or("");
        match serde_json::from_str::<Vec<&RawValue>>(args) {
            Ok(_) => Ok(()),
            Err(_) => Err(invalid("the payload must be a JSON array of arguments")),
        }
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        let (Some(event), Some(args)) = (msg.channel, msg.payload.as_text()) else {
            return;
        };
        // Checked in check_publish: a message that fails here is dropped.
        if let Some(data) = event_data(event.as_str(), args) {
            out.send(self.packet(PacketKind::Event, None, Some(&data)));
        }
    }

    fn check_call(&self, request: &Payload) -> Result<(), SendError> {
        let request = request.as_text().unwrap_or("");
        let args: Vec<&RawValue> = serde_json::from_str(request)
            .map_err(|_| invalid("a call request is a JSON array [\"event\", args...]"))?;
        match split_name(&args) {
            Some((name, _)) if !RESERVED.contains(&name.as_str()) => Ok(()),
            Some(_) => Err(invalid("a reserved event name")),
            None => Err(invalid("a call request starts with the event name")),
        }
    }

    fn call(&mut self, id: CallId, request: &Payload, out: &mut Output) {
        let Some(data) = request.as_text() else {
            return;
        };
        self.conn.calls.insert(id.get(), id);
        out.send(self.packet(PacketKind::Event, Some(id.get()), Some(data)));
    }

    fn forget_call(&mut self, id: CallId) {
        self.conn.calls.remove(&id.get());
    }

    fn subscribe(&mut self, key: &Text, _spec: &Payload, out: &mut Output) {
        // Subscribing is local: the server sends every event to the socket.
        let had = self.previous.remove(key);
        self.subscribed.insert(key.clone());
        out.fact(Inbound::subscribed(key.clone()));
        if had && !self.conn.recovered {
            out.fact(Inbound::Resubscribed { key: key.clone() });
        }
    }

    fn unsubscribe(
        &mut self,
        key: &Text,
        _spec: &Payload,
        _message: Option<&Payload>,
        _out: &mut Output,
    ) {
        self.subscribed.remove(key);
        self.previous.remove(key);
    }

    fn on_timer(&mut self, cx: &TimerContext, out: &mut Output) -> Result<(), LinkDead> {
        // Every ping moves the one deadline: reaching it means none came.
        let _ = (cx, out);
        Err(LinkDead::new(
            "no Engine.IO ping within the ping interval and ping timeout",
        ))
    }

    fn on_closed(&mut self) {
        self.conn = Conn::default();
    }
}

#[cfg(test)]
mod tests;
