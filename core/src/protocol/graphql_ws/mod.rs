//! GraphqlWs: the graphql-transport-ws protocol on the session layer.

pub mod codec;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::close_policy::CloseRule;
use crate::error::SendError;
use crate::graphql_ws::{self, close_code, DecodeError, Json, Message};
use crate::payload::{Payload, Text};
use crate::transport::Frame;

use crate::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, OpenContext, Outgoing, Output, Protocol,
    ProtocolError, Ready,
};

const NAME: &str = "graphql-ws";

/// GraphQL subscriptions over the graphql-transport-ws protocol
/// (subprotocol `graphql-transport-ws`).
///
/// On every connection: `connection_init` with the configured payload (the
/// token provider's token goes in it, under [`token_key`](Self::token_key)),
/// then `connection_ack` awaited for [`ack_timeout`](Self::ack_timeout).
/// Subscriptions are `subscribe` messages whose id is the session's
/// subscription key and whose payload is the spec (build it with
/// [`GraphqlWs::subscription`]); each `next` becomes an
/// [`Event::Message`](crate::Event::Message) with the id as its channel and
/// the result object as its payload; `error` ends the subscription as
/// [`Event::SubscribeFailed`](crate::Event::SubscribeFailed) and `complete`
/// as [`Event::SubscriptionEnded`](crate::Event::SubscriptionEnded). The
/// server's `ping` is answered with `pong`; on a quiet link we send `ping`
/// (the config's `ping_interval`) and any message within `pong_timeout`
/// answers it. Close codes mean what the protocol says
/// ([`graphql_ws::close_rule`]): 4401/4403 (credentials refused) and
/// 4400/4406 are terminal, 4408/4409/4429/4499 reconnect, 4500 reconnects
/// on a growing ladder; the user's close-policy overrides still win. A
/// malformed message is closed with 4400 and reconnected.
///
/// # Across a reconnect
/// Every active subscription is sent again, with the same id, query and
/// variables, before anything queued. Results the server produced while the
/// client was away are gone unless the server itself replays them: the
/// protocol has no offsets, so nothing tells the client what it missed.
///
/// Messages given to [`Session::handle_send`](crate::Session::handle_send)
/// are written as they are (for operations this type does not model).
#[derive(Clone)]
pub struct GraphqlWs {
    init_payload: serde_json::Map<String, serde_json::Value>,
    token_key: String,
    ack_timeout: Duration,
    /// Operation ids active on this connection: a `next` for any other id
    /// is late (we completed it) and dropped, as the protocol allows.
    active: BTreeMap<String, Text>,
}

// The init payload often carries credentials: Debug names its fields only.
impl std::fmt::Debug for GraphqlWs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphqlWs")
            .field(
                "init_payload_fields",
                &self.init_payload.keys().collect::<Vec<_>>(),
            )
            .field("token_key", &self.token_key)
            .field("ack_timeout", &self.ack_timeout)
            .field("active", &self.active.len())
            .finish()
    }
}

impl Default for GraphqlWs {
    fn default() -> Self {
        GraphqlWs {
            init_payload: serde_json::Map::new(),
            token_key: "token".to_owned(),
            ack_timeout: Duration::from_secs(10),
            active: BTreeMap::new(),
        }
    }
}

impl GraphqlWs {
    /// An empty `connection_init` payload, the token under `"token"`, a
    /// 10 s ack timeout.
    pub fn new() -> Self {
        GraphqlWs::default()
    }

    /// The `connection_init` payload: a JSON object.
    ///
    /// # Errors
    /// [`DecodeError::WrongShape`] when `json` is not a JSON object.
    pub fn init_payload(mut self, json: &str) -> Result<Self, DecodeError> {
        self.init_payload = serde_json::from_str(json).map_err(|_| DecodeError::WrongShape {
            kind: "connection_init",
            field: "payload",
            expected: "a JSON object",
        })?;
        Ok(self)
    }

    /// The field of the `connection_init` payload that carries the token
    /// provider's token (default `"token"`).
    pub fn token_key(mut self, key: impl Into<String>) -> Self {
        self.token_key = key.into();
        self
    }

    /// How long to wait for `connection_ack` (default 10 s).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// The spec for a subscription: `query` and, optionally, `variables`
    /// (a JSON object).
    ///
    /// # Errors
    /// [`DecodeError::WrongShape`] when `variables` is not a JSON object.
    pub fn subscription(query: &str, variables: Option<&str>) -> Result<Payload, DecodeError> {
        let variables = variables.map(Json::parse).transpose()?;
        let payload = graphql_ws::SubscribePayload {
            query: query.into(),
            variables,
            operation_name: None,
            extensions: None,
        };
        Message::Subscribe {
            id: "x".into(),
            payload: payload.clone(),
        }
        .validate()?;
        let spec = serde_json::to_string(&payload).map_err(|e| DecodeError::Json(e.to_string()))?;
        Ok(Payload::text(spec))
    }
}

fn text(s: String) -> Frame {
    Frame::Text(Text::from(s))
}

/// The `subscribe` message for `key` with `spec`; `None` when the spec is
/// not a subscribe payload.
fn subscribe_message(key: &Text, spec: &Payload) -> Option<String> {
    let spec = spec.as_text()?;
    let id = serde_json::to_string(key.as_str()).ok()?;
    let message = format!(r#"{{"type":"subscribe","id":{id},"payload":{spec}}}"#);
    graphql_ws::decode(&message).ok()?;
    Some(message)
}

/// A slice of `whole` when `part` lies inside it (no copy), else a copy.
fn share(whole: &Text, part: &str) -> Payload {
    let base = whole.as_str().as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at >= base && at + part.len() <= base + whole.len() {
        let start = at - base;
        let bytes: Bytes = whole.as_bytes().slice(start..start + part.len());
        if let Ok(t) = Text::try_from(bytes) {
            return Payload::text(t);
        }
    }
    Payload::text(part)
}

impl Protocol for GraphqlWs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn subprotocol(&self) -> Option<&'static str> {
        Some(graphql_ws::SUBPROTOCOL)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            token_in_handshake: true,
            ..Capabilities::default().with_subscriptions()
        }
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
        self.active.clear();
        let mut payload = self.init_payload.clone();
        if let Some(token) = cx.token {
            payload.insert(
                self.token_key.clone(),
                serde_json::Value::String(token.expose().to_owned()),
            );
        }
        let message = serde_json::json!({"type": "connection_init", "payload": payload});
        out.send(text(message.to_string()));
        Handshake::Await {
            reply: "connection_ack",
            timeout: Some(self.ack_timeout),
        }
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        let Frame::Text(whole) = frame else {
            return Err(ProtocolError::invalid(NAME, "binary message"));
        };
        let message = graphql_ws::decode_server(whole.as_str())
            .map_err(|e| ProtocolError::invalid(NAME, e))?;
        match message {
            Message::ConnectionAck { .. } if !cx.ready => out.fact(Inbound::Ready(Ready::new())),
            Message::ConnectionAck { .. } => {
                return Err(ProtocolError::invalid(NAME, "a second connection_ack"))
            }
            Message::Ping { .. } => out.send(text(r#"{"type":"pong"}"#.to_owned())),
            Message::Pong { .. } => {}
            Message::Next { id, payload } => {
                if let Some(key) = self.active.get(id.as_ref()) {
                    let key = key.clone();
                    out.fact(Inbound::Data {
                        key: Some(key),
                        offset: None,
                        payload: share(&whole, payload.get()),
                        headers: None,
                    });
                }
            }
            Message::Error { id, payload } => {
                if let Some(key) = self.active.remove(id.as_ref()) {
                    out.fact(Inbound::SubscribeFailed {
                        key,
                        code: 0,
                        reason: Text::from(payload.get()),
                    });
                }
            }
            Message::Complete { id } => {
                if let Some(key) = self.active.remove(id.as_ref()) {
                    out.fact(Inbound::SubscriptionEnded { key });
                }
            }
            other => {
                return Err(ProtocolError::invalid(
                    NAME,
                    format!("unexpected {}", other.kind()),
                ))
            }
        }
        Ok(())
    }

    fn check_subscription(&self, key: &Text, spec: &Payload) -> Result<(), SendError> {
        match subscribe_message(key, spec) {
            Some(_) => Ok(()),
            None => Err(SendError::Invalid {
                protocol: NAME,
                reason: "the spec is not a subscribe payload (see GraphqlWs::subscription)"
                    .to_owned(),
            }),
        }
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        out.send_payload(msg.payload);
    }

    fn subscribe(&mut self, key: &Text, spec: &Payload, out: &mut Output) {
        // Checked when the user subscribed; a spec that fails here is
        // never sent.
        if let Some(message) = subscribe_message(key, spec) {
            self.active.insert(key.as_str().to_owned(), key.clone());
            out.send(text(message));
        }
    }

    fn unsubscribe(
        &mut self,
        key: &Text,
        _spec: &Payload,
        _message: Option<&Payload>,
        out: &mut Output,
    ) {
        if self.active.remove(key.as_str()).is_some() {
            let message = Message::Complete {
                id: key.as_str().into(),
            };
            out.send(text(message.encode()));
        }
    }

    fn heartbeat(&mut self, out: &mut Output) -> bool {
        out.send(text(r#"{"type":"ping"}"#.to_owned()));
        true
    }

    fn protocol_error_close(&self) -> u16 {
        close_code::BAD_REQUEST
    }

    fn close_rule(&self, code: u16) -> Option<CloseRule> {
        graphql_ws::close_rule(code)
    }

    fn on_closed(&mut self) {
        self.active.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_init_payload_values() {
        let g = GraphqlWs::new()
            .init_payload(r#"{"token":"s3cret"}"#)
            .unwrap_or_default();
        let shown = format!("{g:?}");
        assert!(
            shown.contains("token") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
