//! JsonRpc: JSON-RPC 2.0 pubsub on the session layer.

pub mod codec;
mod scan;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::call::CallId;
use crate::error::SendError;
use crate::payload::{Payload, Text};
use crate::transport::Frame;

use self::codec::{error_code, Decoded, ErrorObject, Id, Json, Limits, Message};
use self::scan::Pubsub;
use super::{
    Capabilities, FrameContext, Handshake, Inbound, LinkDead, OpenContext, Outgoing, Output,
    Protocol, ProtocolError, TimerContext,
};

const NAME: &str = "json-rpc";

/// The pubsub method names of a node: the Ethereum ones by default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Methods {
    /// Starts a subscription; its result is the server's subscription id.
    pub subscribe: Cow<'static, str>,
    /// Ends one; its params are `[server id]`.
    pub unsubscribe: Cow<'static, str>,
    /// The notification that carries `{"subscription": id, "result": ..}`.
    pub notification: Cow<'static, str>,
}

impl Default for Methods {
    fn default() -> Self {
        Methods::new("eth_subscribe", "eth_unsubscribe", "eth_subscription")
    }
}

impl Methods {
    /// Names of a node's own (Substrate-style nodes name them per
    /// subscription: `chain_subscribeNewHeads`, `chain_unsubscribeNewHeads`,
    /// `chain_newHead`).
    pub fn new(
        subscribe: impl Into<Cow<'static, str>>,
        unsubscribe: impl Into<Cow<'static, str>>,
        notification: impl Into<Cow<'static, str>>,
    ) -> Self {
        Methods {
            subscribe: subscribe.into(),
            unsubscribe: unsubscribe.into(),
            notification: notification.into(),
        }
    }
}

/// A request sent every [`every`](Self::every) whatever the traffic, whose
/// reply must come within [`deadline`](Self::deadline): what finds a deaf
/// node (one that keeps pushing notifications and answers nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Liveness {
    /// The method called (`eth_chainId`, `system_health`): one that is
    /// cheap and always answers.
    pub method: Cow<'static, str>,
    /// Time from one request to the next (at least 1 ms).
    pub every: Duration,
    /// Time the reply has, from its request (at least 1 ms). Any reply
    /// counts, an error reply too: the node heard us.
    pub deadline: Duration,
}

impl Liveness {
    /// `method` with no params every `every`, each reply due within
    /// `deadline`; durations under 1 ms are taken as 1 ms.
    pub fn new(method: impl Into<Cow<'static, str>>, every: Duration, deadline: Duration) -> Self {
        const MIN: Duration = Duration::from_millis(1);
        Liveness {
            method: method.into(),
            every: every.max(MIN),
            deadline: deadline.max(MIN),
        }
    }
}

/// JSON-RPC 2.0 over WebSocket, with pubsub (`eth_subscribe` and its
/// kind) that survives reconnects.
///
/// No handshake: the link is usable as soon as the socket opens.
/// Subscriptions are subscribe requests whose params are the spec (build it
/// with [`JsonRpc::subscription`], or [`JsonRpc::subscription_with`] for a
/// subscription with method names of its own); the server's reply carries
/// the id it assigned, which this type maps back to the application's key
/// for as long as the connection lasts. Each notification for that id
/// becomes an [`Event::Message`](crate::Event::Message) with the key as its
/// channel and the notification's `result` as its payload; notifications
/// for ids this connection never confirmed (or unsubscribed) are dropped.
/// An error reply fails the subscription
/// ([`Event::SubscribeFailed`](crate::Event::SubscribeFailed), the server's
/// message as the reason) and it is not sent again. Other notifications
/// reach the application whole, without a channel; a request from the
/// server is answered with "method not found" (-32601).
///
/// With a [`Liveness`] call (off by default) the link is also proven alive
/// by request: the first one goes out `every` after the socket opens, then
/// one every `every` whatever else flows, never two at once; when a reply
/// does not come within `deadline` the session closes the socket (1001)
/// and reconnects, so a deaf node is found within `every + deadline`.
///
/// A binary message, text that is not JSON-RPC 2.0 (over the codec's
/// [`Limits`]), or a pubsub notification without its subscription id and
/// result is a protocol error: the session closes and reconnects.
///
/// # Calls
/// Build a request with [`JsonRpc::request`] and call with it: it goes out
/// under its [`CallId`] as a positive integer id, while this type's own
/// requests (subscribe, unsubscribe, liveness) use negative ones, so the
/// two never collide. The reply's `result` (raw JSON) is the call's
/// payload; an error reply rejects it with the server's signed code. A
/// reply under a numeric id nobody waits for any more (a call that timed
/// out) is dropped. Requests the application writes itself through
/// [`Session::handle_send`](crate::Session::handle_send) must use string
/// ids: their replies reach it whole, without a channel.
///
/// # Across a reconnect
/// Every subscription still wanted is sent again, before anything queued;
/// the server assigns it a new id, and notifications arrive under the same
/// key as before. What the node emitted while the client was away is gone:
/// each confirmation after the first is followed by
/// [`Event::Resubscribed`](crate::Event::Resubscribed), the cue to backfill
/// (`eth_getLogs` from the last block seen, for example).
///
/// A call answered before the drop is answered once. A call in flight when
/// the link drops fails with
/// [`CallError::ConnectionLost`](crate::CallError::ConnectionLost) and is
/// not sent again, so it reaches the node at most once; one marked
/// [`repeatable`](crate::CallOptions::repeatable) is sent once more on the
/// next connection, after the resubscriptions, and answered once. Calls
/// made while disconnected wait in the session (bounded by `max_calls`)
/// and go out on the next connection. A liveness request in flight is
/// forgotten; the schedule starts over on the new connection.
#[derive(Debug, Clone, Default)]
pub struct JsonRpc {
    methods: Methods,
    limits: Limits,
    /// The last id of our own requests: negative, counting down, never
    /// reset, so they stay unique for the life of the session and apart
    /// from calls, which go out under their positive [`CallId`].
    next_id: i64,
    /// Calls in flight on this connection (by wire id). Bounded by the
    /// session's `max_calls`.
    calls: BTreeSet<i64>,
    /// Requests of ours on this connection awaiting their reply.
    pending: BTreeMap<i64, Pending>,
    /// Server subscription id (canonical JSON) -> key, on this connection.
    active: BTreeMap<String, Active>,
    liveness: Option<Liveness>,
    /// This connection's liveness schedule.
    probe: Probe,
    /// Keys confirmed on this or an earlier connection and not ended
    /// since: a confirmation of one of them is a resubscription. Bounded
    /// by the session's subscriptions.
    confirmed: BTreeSet<Text>,
}

/// Where the liveness call stands on this connection.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    /// When the next request goes out.
    next: Option<Instant>,
    /// The request awaiting its reply, and when that reply is due.
    waiting: Option<(i64, Instant)>,
}

impl Probe {
    /// The one deadline the session should wake us at.
    fn wake(&self, out: &mut Output) {
        let due = self.waiting.map(|(_, due)| due);
        match (self.next, due) {
            (Some(a), Some(b)) => out.wake_at(a.min(b)),
            (Some(t), None) | (None, Some(t)) => out.wake_at(t),
            (None, None) => out.cancel_wake(),
        }
    }
}

#[derive(Debug, Clone)]
enum Pending {
    Subscribe {
        key: Text,
        unsubscribe: String,
    },
    /// A subscribe the application ended before its reply came: once the
    /// reply names the server's id, that subscription is ended too.
    Abandoned {
        unsubscribe: String,
    },
    Unsubscribe,
}

#[derive(Debug, Clone)]
struct Active {
    key: Text,
    /// The server's id as it sent it, for the unsubscribe request.
    raw_id: String,
    unsubscribe: String,
}

/// A subscription spec: params, and method names when they are its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec<'a> {
    /// A call's method.
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    subscribe: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    unsubscribe: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

impl JsonRpc {
    /// The Ethereum method names and the codec's default [`Limits`].
    pub fn new() -> Self {
        JsonRpc::default()
    }

    /// The pubsub method names subscriptions use unless their spec names
    /// their own.
    pub fn methods(mut self, methods: Methods) -> Self {
        self.methods = methods;
        self
    }

    /// What the decoder accepts from the server (length, nesting, batch
    /// size); anything beyond is a protocol error and a reconnect.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Turns on the liveness call (off by default).
    pub fn liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// The spec for a subscription with the default method names: its
    /// params, a JSON array or object (`["newHeads"]`,
    /// `["logs", {"address": "0x.."}]`).
    ///
    /// # Errors
    /// [`codec::DecodeError`] when `params` is not one JSON array or object.
    pub fn subscription(params: &str) -> Result<Payload, codec::DecodeError> {
        let json = structured(params)?;
        Ok(Payload::text(format!(r#"{{"params":{}}}"#, json.get())))
    }

    /// The spec for a subscription with method names of its own, as
    /// Substrate-style nodes have (`chain_subscribeNewHeads` with `[]`,
    /// ended by `chain_unsubscribeNewHeads`). Its notifications are
    /// recognised by their subscription id, whatever their method.
    ///
    /// # Errors
    /// [`codec::DecodeError`] when `params` is not one JSON array or object.
    pub fn subscription_with(
        subscribe: &str,
        unsubscribe: &str,
        params: &str,
    ) -> Result<Payload, codec::DecodeError> {
        let json = structured(params)?;
        let spec = serde_json::json!({
            "subscribe": subscribe,
            "unsubscribe": unsubscribe,
            "params": json,
        });
        Ok(Payload::text(spec.to_string()))
    }

    /// The request for a call: `method(params)`, params a JSON array or
    /// object (`"[]"` for none). Give it to `Handle::call` (or
    /// [`Session::handle_call`](crate::Session::handle_call)); the reply's
    /// `result` is the call's payload, an error reply its
    /// [`CallError::Rejected`](crate::CallError::Rejected) with the signed
    /// code.
    ///
    /// # Errors
    /// [`codec::DecodeError`] when `params` is not one JSON array or object.
    pub fn request(method: &str, params: &str) -> Result<Payload, codec::DecodeError> {
        let json = structured(params)?;
        let spec = serde_json::json!({ "method": method, "params": json });
        Ok(Payload::text(spec.to_string()))
    }

    fn next_id(&mut self) -> i64 {
        self.next_id = self.next_id.checked_sub(1).unwrap_or(-1);
        self.next_id
    }

    /// Writes request `method(params)` under a fresh id and returns it.
    fn send_own(&mut self, method: &str, params: Option<Json<'_>>, out: &mut Output) -> i64 {
        let id = self.next_id();
        let message = Message::Request {
            id: Id::Number(id),
            method: method.into(),
            params,
        };
        out.send(Frame::Text(Text::from(message.encode())));
        id
    }

    /// One message; `pubsub`: its params' subscription id and result, as
    /// the decoder found them.
    fn on_message(
        &mut self,
        message: Message<'_>,
        pubsub: Option<Pubsub<'_>>,
        whole: &Text,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        if let Some(id) = message.id() {
            if self.answers_probe(id, out) {
                return Ok(());
            }
        }
        match message {
            Message::Result {
                id: Id::Number(n),
                result,
            } if n > 0 => {
                // Not in flight: the session gave up on it; dropped.
                if self.calls.remove(&n) {
                    out.fact(Inbound::Replied {
                        call: CallId::from_raw(n.unsigned_abs()),
                        result: Payload::text(part(whole, result.get())),
                    });
                }
                return Ok(());
            }
            Message::Error {
                id: Id::Number(n),
                error,
            } if n > 0 => {
                if self.calls.remove(&n) {
                    out.fact(Inbound::CallRejected {
                        call: CallId::from_raw(n.unsigned_abs()),
                        code: error.code,
                        message: Text::from(error.message.as_ref()),
                    });
                }
                return Ok(());
            }
            _ => {}
        }
        match message {
            Message::Notification { method, .. } => {
                self.on_notification(&method, pubsub, whole, out)
            }
            Message::Request { id, .. } => {
                let refusal = Message::Error {
                    id,
                    error: ErrorObject {
                        code: error_code::METHOD_NOT_FOUND,
                        message: "a client serves no methods".into(),
                        data: None,
                    },
                };
                out.send(Frame::Text(Text::from(refusal.encode())));
                Ok(())
            }
            Message::Result { id, result } => {
                match self.take_pending(&id) {
                    Some(Pending::Subscribe { key, unsubscribe }) => {
                        let raw_id = result.get().to_owned();
                        let (canonical, shown) = sub_id(result.get()).ok_or_else(|| {
                            ProtocolError::invalid(
                                NAME,
                                format!("subscription id {raw_id} is not a string or a number"),
                            )
                        })?;
                        self.active.insert(
                            canonical.into_owned(),
                            Active {
                                key: key.clone(),
                                raw_id,
                                unsubscribe,
                            },
                        );
                        let again = !self.confirmed.insert(key.clone());
                        out.fact(Inbound::Subscribed {
                            key: key.clone(),
                            server_id: Some(Text::from(shown)),
                        });
                        if again {
                            out.fact(Inbound::Resubscribed { key });
                        }
                    }
                    Some(Pending::Abandoned { unsubscribe }) => {
                        let params = format!("[{}]", result.get());
                        let id = self.send_own(&unsubscribe, Json::parse(&params).ok(), out);
                        self.pending.insert(id, Pending::Unsubscribe);
                    }
                    Some(Pending::Unsubscribe) => {}
                    None => self.not_ours(&id, whole, out),
                }
                Ok(())
            }
            Message::Error { id, error } => {
                match self.take_pending(&id) {
                    Some(Pending::Subscribe { key, .. }) => {
                        self.confirmed.remove(&key);
                        out.fact(Inbound::SubscribeFailed {
                            key,
                            code: error.code,
                            reason: Text::from(error.message.as_ref()),
                        })
                    }
                    Some(Pending::Abandoned { .. } | Pending::Unsubscribe) => {}
                    // The server could not read the id of something we
                    // sent: it says so without ending the connection.
                    None if id == Id::Null => out.fact(Inbound::ServerError {
                        code: error.code,
                        reason: Text::from(error.message.as_ref()),
                    }),
                    None => self.not_ours(&id, whole, out),
                }
                Ok(())
            }
        }
    }

    /// A reply to no request of ours on this connection: the application's
    /// own (string ids) reaches it whole; a numeric one is late, dropped.
    fn not_ours(&self, id: &Id<'_>, whole: &Text, out: &mut Output) {
        if matches!(id, Id::String(_)) {
            out.fact(Inbound::data(Payload::text(whole.clone())));
        }
    }

    /// Whether `id` is the liveness request's: any reply to it is proof of
    /// life.
    fn answers_probe(&mut self, id: &Id<'_>, out: &mut Output) -> bool {
        match (self.probe.waiting, id) {
            (Some((probe, _)), Id::Number(n)) if probe == *n => {
                self.probe.waiting = None;
                self.probe.wake(out);
                true
            }
            _ => false,
        }
    }

    fn take_pending(&mut self, id: &Id<'_>) -> Option<Pending> {
        match id {
            Id::Number(n) => self.pending.remove(n),
            _ => None,
        }
    }

    fn on_notification(
        &mut self,
        method: &str,
        pubsub: Option<Pubsub<'_>>,
        whole: &Text,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let Some(note) = pubsub else {
            if method == self.methods.notification {
                return Err(ProtocolError::invalid(
                    NAME,
                    format!("`{method}` without a subscription id and a result"),
                ));
            }
            out.fact(Inbound::data(Payload::text(whole.clone())));
            return Ok(());
        };
        // A notification for an id this connection does not hold is late
        // (unsubscribed) or foreign: dropped, as pubsub allows.
        let key = canonical_id(note.subscription).and_then(|id| self.active.get(id.as_ref()));
        if let Some(active) = key {
            out.fact(Inbound::Data {
                key: Some(active.key.clone()),
                offset: None,
                payload: Payload::text(part(whole, note.result)),
                headers: None,
            });
        }
        Ok(())
    }
}

/// `part` of the frame `whole` as its own text, sharing the frame's buffer
/// (a copy only when it is not borrowed from it).
fn part(whole: &Text, part: &str) -> Text {
    whole.slice_ref(part).unwrap_or_else(|| Text::from(part))
}

/// `text` as one JSON array or object.
fn structured(text: &str) -> Result<Json<'_>, codec::DecodeError> {
    let json = Json::parse(text.trim())?;
    if !json.is_structured() {
        return Err(codec::DecodeError::WrongShape {
            kind: "subscription",
            field: "params",
            expected: "an array or an object",
        });
    }
    Ok(json)
}

/// A subscription id (its JSON text) as (one form whatever its escapes,
/// the form for people).
fn sub_id(raw: &str) -> Option<(Cow<'_, str>, String)> {
    let canonical = canonical_id(raw)?;
    let shown = match scan::unquote(raw) {
        Some(text) => text.into_owned(),
        None => canonical.to_string(),
    };
    Some((canonical, shown))
}

/// One form of a subscription id (its JSON text) whatever its escapes,
/// strings and numbers kept apart so `"42"` is not `42`: a string as
/// serde_json writes it, a number as serde_json prints it. An id the
/// server wrote without escapes, the usual case, is its own form and is
/// not copied (serde_json escapes only what such a string cannot hold).
fn canonical_id(raw: &str) -> Option<Cow<'_, str>> {
    if raw.starts_with('"') {
        if !raw.contains('\\') {
            return Some(Cow::Borrowed(raw));
        }
        let text: String = serde_json::from_str(raw).ok()?;
        return serde_json::to_string(&text).ok().map(Cow::Owned);
    }
    let number: serde_json::Number = serde_json::from_str(raw).ok()?;
    Some(Cow::Owned(number.to_string()))
}

/// A call's method and params, or `None` when `request` is not one
/// [`JsonRpc::request`] builds.
fn parse_request(request: &Payload) -> Option<(Cow<'_, str>, Json<'_>)> {
    let spec: Spec<'_> = serde_json::from_str(request.as_text()?).ok()?;
    let params = Json::new(spec.params?);
    (params.is_structured() && spec.unsubscribe.is_none())
        .then_some(())
        .and(spec.method.map(|m| (m, params)))
}

/// The subscribe request's method, params and unsubscribe method for
/// `spec`, or `None` when it is not a spec [`JsonRpc::subscription`] builds.
fn parse_spec<'s>(
    spec: &'s Payload,
    methods: &Methods,
) -> Option<(Cow<'s, str>, Json<'s>, String)> {
    let text = spec.as_text()?;
    let spec: Spec<'_> = serde_json::from_str(text).ok()?;
    if spec.method.is_some() {
        return None;
    }
    let params = Json::new(spec.params?);
    if !params.is_structured() {
        return None;
    }
    let subscribe = spec
        .subscribe
        .unwrap_or_else(|| Cow::Owned(methods.subscribe.to_string()));
    let unsubscribe = spec
        .unsubscribe
        .map_or_else(|| methods.unsubscribe.to_string(), Cow::into_owned);
    Some((subscribe, params, unsubscribe))
}

impl Protocol for JsonRpc {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_subscriptions().with_calls()
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
        self.pending.clear();
        self.active.clear();
        self.calls.clear();
        self.probe = Probe {
            next: self.liveness.as_ref().map(|l| cx.now + l.every),
            waiting: None,
        };
        self.probe.wake(out);
        Handshake::Ready
    }

    fn on_timer(&mut self, cx: &TimerContext, out: &mut Output) -> Result<(), LinkDead> {
        let Some(liveness) = self.liveness.clone() else {
            return Ok(());
        };
        if let Some((_, due)) = self.probe.waiting {
            if cx.now >= due {
                return Err(LinkDead::new(format!(
                    "no reply to the liveness call `{}` within {:?}",
                    liveness.method, liveness.deadline
                )));
            }
        }
        match self.probe.next {
            // One request at a time: a slow reply postpones the next.
            Some(next) if cx.now >= next && self.probe.waiting.is_none() => {
                let params = Json::parse("[]").ok();
                let id = self.send_own(&liveness.method, params, out);
                self.probe.waiting = Some((id, cx.now + liveness.deadline));
                self.probe.next = Some(cx.now + liveness.every);
            }
            Some(next) if cx.now >= next => {
                self.probe.next = Some(cx.now + liveness.every);
            }
            _ => {}
        }
        self.probe.wake(out);
        Ok(())
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        _cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let Frame::Text(whole) = frame else {
            return Err(ProtocolError::invalid(NAME, "binary message"));
        };
        let decoded = codec::decode_frame(whole.as_str(), self.limits)
            .map_err(|e| ProtocolError::invalid(NAME, e))?;
        match decoded {
            Decoded::Single(message, pubsub) => self.on_message(message, pubsub, &whole, out),
            Decoded::Many(messages) => {
                for item in messages {
                    // Each with its own text, as if it had come alone.
                    let text = part(&whole, item.text);
                    self.on_message(item.message, item.pubsub, &text, out)?;
                }
                Ok(())
            }
        }
    }

    fn check_subscription(&self, _key: &Text, spec: &Payload) -> Result<(), SendError> {
        match parse_spec(spec, &self.methods) {
            Some(_) => Ok(()),
            None => Err(SendError::Invalid {
                protocol: NAME,
                reason: "the spec is not a subscription (see JsonRpc::subscription)".to_owned(),
            }),
        }
    }

    fn check_call(&self, request: &Payload) -> Result<(), SendError> {
        match parse_request(request) {
            Some(_) => Ok(()),
            None => Err(SendError::Invalid {
                protocol: NAME,
                reason: "the request is not a call (see JsonRpc::request)".to_owned(),
            }),
        }
    }

    fn call(&mut self, id: CallId, request: &Payload, out: &mut Output) {
        // Checked when the application called; one that fails here is never
        // sent, and the session's timeout ends it.
        let (Some((method, params)), Ok(wire)) = (parse_request(request), i64::try_from(id.get()))
        else {
            return;
        };
        let message = Message::Request {
            id: Id::Number(wire),
            method,
            params: Some(params),
        };
        out.send(Frame::Text(Text::from(message.encode())));
        self.calls.insert(wire);
    }

    fn forget_call(&mut self, id: CallId) {
        if let Ok(wire) = i64::try_from(id.get()) {
            self.calls.remove(&wire);
        }
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        out.send_payload(msg.payload);
    }

    fn subscribe(&mut self, key: &Text, spec: &Payload, out: &mut Output) {
        // Checked when the user subscribed; a spec that fails here is
        // never sent.
        let Some((method, params, unsubscribe)) = parse_spec(spec, &self.methods) else {
            return;
        };
        let id = self.send_own(&method, Some(params), out);
        self.pending.insert(
            id,
            Pending::Subscribe {
                key: key.clone(),
                unsubscribe,
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
        self.confirmed.remove(key);
        for pending in self.pending.values_mut() {
            if let Pending::Subscribe {
                key: k,
                unsubscribe,
            } = pending
            {
                if k == key {
                    let unsubscribe = std::mem::take(unsubscribe);
                    *pending = Pending::Abandoned { unsubscribe };
                }
            }
        }
        let found = self
            .active
            .iter()
            .find(|(_, a)| &a.key == key)
            .map(|(id, _)| id.clone());
        let Some(active) = found.and_then(|id| self.active.remove(&id)) else {
            return;
        };
        let params = format!("[{}]", active.raw_id);
        let params = Json::parse(&params).ok();
        let id = self.send_own(&active.unsubscribe, params, out);
        self.pending.insert(id, Pending::Unsubscribe);
    }

    fn on_closed(&mut self) {
        self.pending.clear();
        self.active.clear();
        self.calls.clear();
        self.probe = Probe::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits as WireLimits;

    fn sent(out: &mut Output) -> Vec<String> {
        std::iter::from_fn(|| out.pop_frame())
            .map(|f| match f {
                Frame::Text(t) => t.to_string(),
                other => panic!("not text: {other:?}"),
            })
            .collect()
    }

    fn facts(out: &mut Output) -> Vec<Inbound> {
        std::iter::from_fn(|| out.pop_fact()).collect()
    }

    fn frame(p: &mut JsonRpc, text: &str, out: &mut Output) -> Result<(), ProtocolError> {
        let limits = WireLimits::default();
        let cx = FrameContext {
            now: Instant::now(),
            ready: true,
            limits: &limits,
        };
        p.on_frame(Frame::Text(Text::from(text)), &cx, out)
    }

    fn ok(p: &mut JsonRpc, text: &str) -> Vec<Inbound> {
        let mut out = Output::default();
        frame(p, text, &mut out).unwrap_or_else(|e| panic!("{text}: {e}"));
        facts(&mut out)
    }

    fn data(key: &str, payload: &str) -> Inbound {
        Inbound::Data {
            key: Some(Text::from(key)),
            offset: None,
            payload: Payload::text(payload),
            headers: None,
        }
    }

    fn spec(params: &str) -> Payload {
        JsonRpc::subscription(params).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A protocol with `heads` subscribed as server id `0xa`.
    fn subscribed() -> JsonRpc {
        let mut p = JsonRpc::new();
        let mut out = Output::default();
        p.subscribe(&Text::from("heads"), &spec(r#"["newHeads"]"#), &mut out);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-1,"method":"eth_subscribe","params":["newHeads"]}"#]
        );
        assert_eq!(
            ok(&mut p, r#"{"jsonrpc":"2.0","id":-1,"result":"0xa"}"#),
            [Inbound::Subscribed {
                key: Text::from("heads"),
                server_id: Some(Text::from("0xa")),
            }]
        );
        p
    }

    const NOTE_A: &str = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xa","result":{"number":"0x1"}}}"#;
    const NOTE_B: &str = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xb","result":{"number":"0x2"}}}"#;

    #[test]
    fn notifications_carry_the_key_and_unknown_ids_are_dropped() {
        let mut p = subscribed();
        assert_eq!(ok(&mut p, NOTE_A), [data("heads", r#"{"number":"0x1"}"#)]);
        assert_eq!(ok(&mut p, NOTE_B), []);
        // The same id with other escapes is the same id.
        let escaped = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"\u0030xa","result":7}}"#;
        assert_eq!(ok(&mut p, escaped), [data("heads", "7")]);
    }

    #[test]
    fn a_notifications_result_shares_the_frames_buffer() {
        let mut p = subscribed();
        let whole = Text::from(NOTE_A);
        let mut out = Output::default();
        let limits = WireLimits::default();
        let cx = FrameContext {
            now: Instant::now(),
            ready: true,
            limits: &limits,
        };
        p.on_frame(Frame::Text(whole.clone()), &cx, &mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        let Some(Inbound::Data { payload, .. }) = out.pop_fact() else {
            panic!("no data");
        };
        let at = whole.as_str().find(r#"{"number""#).unwrap_or_default();
        assert_eq!(payload.as_text(), Some(r#"{"number":"0x1"}"#));
        assert_eq!(payload.bytes().as_ptr(), whole.as_bytes()[at..].as_ptr());
    }

    #[test]
    fn a_new_connection_maps_the_key_to_the_new_id() {
        let mut p = subscribed();
        p.on_closed();
        let mut out = Output::default();
        p.subscribe(&Text::from("heads"), &spec(r#"["newHeads"]"#), &mut out);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-2,"method":"eth_subscribe","params":["newHeads"]}"#],
            "ids are never reused"
        );
        let key = Text::from("heads");
        assert_eq!(
            ok(&mut p, r#"{"jsonrpc":"2.0","id":-2,"result":"0xb"}"#),
            [
                Inbound::Subscribed {
                    key: key.clone(),
                    server_id: Some(Text::from("0xb")),
                },
                Inbound::Resubscribed { key }
            ]
        );
        assert_eq!(ok(&mut p, NOTE_A), [], "the old id is stale");
        assert_eq!(ok(&mut p, NOTE_B), [data("heads", r#"{"number":"0x2"}"#)]);
    }

    #[test]
    fn an_error_reply_fails_that_subscription() {
        let mut p = JsonRpc::new();
        let mut out = Output::default();
        p.subscribe(&Text::from("bad"), &spec(r#"["nonsense"]"#), &mut out);
        let f = ok(
            &mut p,
            r#"{"jsonrpc":"2.0","id":-1,"error":{"code":-32602,"message":"unknown variant `nonsense`"}}"#,
        );
        assert!(
            matches!(&f[..], [Inbound::SubscribeFailed { key, code: -32602, reason }]
                if key == "bad" && reason.as_str().contains("nonsense")),
            "{f:?}"
        );
    }

    #[test]
    fn unsubscribe_ends_it_on_the_server_and_drops_late_notifications() {
        let mut p = subscribed();
        let mut out = Output::default();
        p.unsubscribe(&Text::from("heads"), &spec("[]"), None, &mut out);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-2,"method":"eth_unsubscribe","params":["0xa"]}"#]
        );
        assert_eq!(ok(&mut p, NOTE_A), []);
        assert_eq!(ok(&mut p, r#"{"jsonrpc":"2.0","id":-2,"result":true}"#), []);
        // Subscribed anew, it is a first confirmation, not a resubscription.
        p.subscribe(&Text::from("heads"), &spec(r#"["newHeads"]"#), &mut out);
        assert_eq!(
            ok(&mut p, r#"{"jsonrpc":"2.0","id":-3,"result":"0xc"}"#).len(),
            1
        );
    }

    #[test]
    fn a_subscription_ended_before_its_reply_is_ended_once_the_reply_comes() {
        let mut p = JsonRpc::new();
        let mut out = Output::default();
        let key = Text::from("heads");
        p.subscribe(&key, &spec(r#"["newHeads"]"#), &mut out);
        p.unsubscribe(&key, &spec("[]"), None, &mut out);
        assert_eq!(sent(&mut out).len(), 1, "nothing to end yet");
        frame(
            &mut p,
            r#"{"jsonrpc":"2.0","id":-1,"result":"0xa"}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(facts(&mut out), []);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-2,"method":"eth_unsubscribe","params":["0xa"]}"#]
        );
        assert_eq!(ok(&mut p, NOTE_A), []);
    }

    #[test]
    fn substrate_style_names_per_subscription() {
        let mut p = JsonRpc::new();
        let mut out = Output::default();
        let spec = JsonRpc::subscription_with(
            "chain_subscribeNewHeads",
            "chain_unsubscribeNewHeads",
            "[]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let key = Text::from("heads");
        assert_eq!(p.check_subscription(&key, &spec), Ok(()));
        p.subscribe(&key, &spec, &mut out);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-1,"method":"chain_subscribeNewHeads","params":[]}"#]
        );
        ok(&mut p, r#"{"jsonrpc":"2.0","id":-1,"result":42}"#);
        let note = r#"{"jsonrpc":"2.0","method":"chain_newHead","params":{"subscription":42,"result":{"number":"0x5"}}}"#;
        assert_eq!(ok(&mut p, note), [data("heads", r#"{"number":"0x5"}"#)]);
        p.unsubscribe(&key, &spec, None, &mut out);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-2,"method":"chain_unsubscribeNewHeads","params":[42]}"#]
        );
    }

    #[test]
    fn configured_method_names_apply_to_plain_specs() {
        let mut p = JsonRpc::new().methods(Methods::new("sub", "unsub", "note"));
        let mut out = Output::default();
        p.subscribe(&Text::from("k"), &spec(r#"{"topic":"x"}"#), &mut out);
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-1,"method":"sub","params":{"topic":"x"}}"#]
        );
        ok(&mut p, r#"{"jsonrpc":"2.0","id":-1,"result":"s"}"#);
        let bare = r#"{"jsonrpc":"2.0","method":"note","params":["s"]}"#;
        assert!(frame(&mut p, bare, &mut Output::default()).is_err());
    }

    #[test]
    fn specs_are_checked() {
        let p = JsonRpc::new();
        let key = Text::from("k");
        for bad in ["", "[", "7", r#"{"params":7}"#, r#"{"paramz":[]}"#, "[]"] {
            assert!(
                p.check_subscription(&key, &Payload::text(bad)).is_err(),
                "{bad}"
            );
        }
        assert!(JsonRpc::subscription("\"newHeads\"").is_err());
        assert!(JsonRpc::subscription("[1] x").is_err());
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        let mut p = subscribed();
        let limits = WireLimits::default();
        let cx = FrameContext {
            now: Instant::now(),
            ready: true,
            limits: &limits,
        };
        let mut out = Output::default();
        let binary = Frame::Binary(bytes::Bytes::from_static(b"{}"));
        assert!(p.on_frame(binary, &cx, &mut out).is_err());
        for bad in [
            "not json",
            r#"{"id":-1,"result":1}"#,
            "[]",
            r#"{"jsonrpc":"2.0","method":"eth_subscription"}"#,
            r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xa"}}"#,
        ] {
            assert!(frame(&mut p, bad, &mut out).is_err(), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(frame(&mut p, &deep, &mut out).is_err());
        // A subscription id that is not a string or a number.
        let mut out = Output::default();
        p.subscribe(&Text::from("x"), &spec("[]"), &mut out);
        assert!(frame(&mut p, r#"{"jsonrpc":"2.0","id":-2,"result":{}}"#, &mut out).is_err());
    }

    #[test]
    fn what_is_not_ours_reaches_the_application_whole() {
        let mut p = subscribed();
        for other in [
            r#"{"jsonrpc":"2.0","method":"node_event","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":"app-1","result":"0x10"}"#,
            r#"{"jsonrpc":"2.0","id":"app-2","error":{"code":-1,"message":"x"}}"#,
        ] {
            assert_eq!(ok(&mut p, other), [Inbound::data(Payload::text(other))]);
        }
        // Numeric ids are ours: one we do not hold is late, and dropped.
        for late in [
            r#"{"jsonrpc":"2.0","id":77,"result":"0x10"}"#,
            r#"{"jsonrpc":"2.0","id":-77,"error":{"code":-1,"message":"x"}}"#,
        ] {
            assert_eq!(ok(&mut p, late), [], "{late}");
        }
    }

    fn request(method: &str, params: &str) -> Payload {
        JsonRpc::request(method, params).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn calls_go_out_under_their_call_id_apart_from_our_own_requests() {
        let mut p = subscribed();
        assert!(p.capabilities().calls);
        let mut out = Output::default();
        let req = request("eth_blockNumber", "[]");
        assert_eq!(p.check_call(&req), Ok(()));
        p.call(CallId::from_raw(1), &req, &mut out);
        p.call(
            CallId::from_raw(2),
            &request("eth_call", r#"[{"to":"0x1"},"latest"]"#),
            &mut out,
        );
        assert_eq!(
            sent(&mut out),
            [
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#,
                r#"{"jsonrpc":"2.0","id":2,"method":"eth_call","params":[{"to":"0x1"},"latest"]}"#,
            ]
        );
        assert_eq!(
            ok(&mut p, r#"{"jsonrpc":"2.0","id":1,"result":"0x1b4"}"#),
            [Inbound::Replied {
                call: CallId::from_raw(1),
                result: Payload::text(r#""0x1b4""#)
            }]
        );
        assert_eq!(
            ok(
                &mut p,
                r#"{"jsonrpc":"2.0","id":2,"error":{"code":3,"message":"execution reverted"}}"#
            ),
            [Inbound::CallRejected {
                call: CallId::from_raw(2),
                code: 3,
                message: Text::from("execution reverted")
            }]
        );
        assert_eq!(
            ok(&mut p, r#"{"jsonrpc":"2.0","id":1,"result":"0x1b4"}"#),
            [],
            "answered once"
        );
    }

    #[test]
    fn a_forgotten_call_or_one_from_a_dropped_link_is_not_answered() {
        let mut p = JsonRpc::new();
        let mut out = Output::default();
        p.call(CallId::from_raw(5), &request("eth_chainId", "[]"), &mut out);
        p.forget_call(CallId::from_raw(5));
        assert_eq!(ok(&mut p, r#"{"jsonrpc":"2.0","id":5,"result":"0x1"}"#), []);
        p.call(CallId::from_raw(6), &request("eth_chainId", "[]"), &mut out);
        p.on_closed();
        assert_eq!(ok(&mut p, r#"{"jsonrpc":"2.0","id":6,"result":"0x1"}"#), []);
    }

    #[test]
    fn requests_are_checked() {
        let p = JsonRpc::new();
        for bad in [
            "",
            "[]",
            r#"{"method":"m"}"#,
            r#"{"method":"m","params":1}"#,
            r#"{"params":[]}"#,
            r#"{"method":"m","params":[],"extra":1}"#,
        ] {
            assert!(p.check_call(&Payload::text(bad)).is_err(), "{bad}");
        }
        assert!(JsonRpc::request("m", "1").is_err());
        // A call request is no subscription spec, and the other way round.
        let key = Text::from("k");
        assert!(p.check_subscription(&key, &request("m", "[]")).is_err());
        assert!(p.check_call(&spec("[]")).is_err());
    }

    #[test]
    fn an_error_about_an_unreadable_request_is_a_server_error() {
        let mut p = JsonRpc::new();
        assert_eq!(
            ok(
                &mut p,
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#
            ),
            [Inbound::ServerError {
                code: -32700,
                reason: Text::from("Parse error")
            }]
        );
    }

    #[test]
    fn a_request_from_the_server_is_refused() {
        let mut p = JsonRpc::new();
        let mut out = Output::default();
        frame(
            &mut p,
            r#"{"jsonrpc":"2.0","id":"s1","method":"ping"}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            sent(&mut out),
            [
                r#"{"jsonrpc":"2.0","id":"s1","error":{"code":-32601,"message":"a client serves no methods"}}"#
            ]
        );
    }

    fn timer(p: &mut JsonRpc, now: Instant, out: &mut Output) -> Result<(), LinkDead> {
        p.on_timer(&TimerContext { now, ready: true }, out)
    }

    fn opened(p: &mut JsonRpc, now: Instant) -> Output {
        let limits = WireLimits::default();
        let cx = OpenContext {
            now,
            token: None,
            resume: None,
            last_offset: 0,
            name: None,
            reconnect: false,
            limits: &limits,
        };
        let mut out = Output::default();
        assert_eq!(p.on_open(&cx, &mut out), Handshake::Ready);
        out
    }

    #[test]
    fn no_liveness_call_by_default() {
        let mut p = JsonRpc::new();
        let mut out = opened(&mut p, Instant::now());
        assert_eq!(out.take_wake(), Some(None));
    }

    #[test]
    fn the_liveness_call_goes_out_whatever_the_traffic_and_its_silence_kills_the_link() {
        const S: fn(u64) -> Duration = Duration::from_secs;
        let mut p = subscribed().liveness(Liveness::new("eth_chainId", S(15), S(5)));
        let t0 = Instant::now();
        let mut out = opened(&mut p, t0);
        assert_eq!(out.take_wake(), Some(Some(t0 + S(15))));
        timer(&mut p, t0 + S(15), &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            sent(&mut out),
            [r#"{"jsonrpc":"2.0","id":-2,"method":"eth_chainId","params":[]}"#]
        );
        assert_eq!(
            out.take_wake(),
            Some(Some(t0 + S(20))),
            "the reply's deadline"
        );
        // Any reply, an error too, is proof of life.
        frame(
            &mut p,
            r#"{"jsonrpc":"2.0","id":-2,"error":{"code":-32601,"message":"no"}}"#,
            &mut out,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(facts(&mut out), []);
        assert_eq!(out.take_wake(), Some(Some(t0 + S(30))));
        timer(&mut p, t0 + S(30), &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(sent(&mut out).len(), 1);
        // Notifications keep coming; they prove nothing about requests.
        frame(&mut p, NOTE_A, &mut out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.take_wake(), Some(Some(t0 + S(35))));
        let dead = timer(&mut p, t0 + S(35), &mut out);
        assert!(
            matches!(&dead, Err(d) if d.reason.contains("eth_chainId")),
            "{dead:?}"
        );
    }

    #[test]
    fn a_slow_reply_postpones_the_next_call_instead_of_stacking_them() {
        const S: fn(u64) -> Duration = Duration::from_secs;
        let mut p = JsonRpc::new().liveness(Liveness::new("ping", S(1), S(5)));
        let t0 = Instant::now();
        let mut out = opened(&mut p, t0);
        timer(&mut p, t0 + S(1), &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(sent(&mut out).len(), 1);
        out.take_wake();
        timer(&mut p, t0 + S(2), &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(sent(&mut out), Vec::<String>::new(), "one at a time");
        // A reconnect starts the schedule over and forgets the old request.
        p.on_closed();
        let mut out = opened(&mut p, t0 + S(3));
        assert_eq!(out.take_wake(), Some(Some(t0 + S(4))));
        let late = r#"{"jsonrpc":"2.0","id":-1,"result":"0x1"}"#;
        assert_eq!(ok(&mut p, late), [], "late, and dropped");
    }

    #[test]
    fn a_batch_is_handled_in_order() {
        let mut p = subscribed();
        let batch = format!("[{NOTE_A},{NOTE_B},{NOTE_A}]");
        assert_eq!(
            ok(&mut p, &batch),
            [
                data("heads", r#"{"number":"0x1"}"#),
                data("heads", r#"{"number":"0x1"}"#)
            ]
        );
    }
}
