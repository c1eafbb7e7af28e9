//! Message codec for the graphql-transport-ws protocol (GraphQL over
//! WebSocket, subprotocol [`SUBPROTOCOL`]).
//!
//! Every message is one JSON object in a text frame with a `type` field.
//! [`decode_server`] parses what a server sends, [`Message::encode`] writes
//! what a client sends; [`decode`] accepts either direction, for test
//! servers and tools.
//!
//! Decoding does not copy: ids, queries and every payload of a [`Message`]
//! borrow from the input text (a string with JSON escapes in it is the one
//! exception: it is unescaped into an owned `String`). Payloads stay raw
//! JSON ([`Json`]), so a caller forwarding `next` results never parses them
//! twice.
//!
//! The codec is strict where the protocol is: a message of an unknown type,
//! without a field the protocol requires, or with a field of the wrong JSON
//! kind is a [`DecodeError`], which the protocol answers by closing the
//! socket with [`close_code::BAD_REQUEST`]. Fields the protocol does not
//! name are ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::close_policy::CloseRule;
use crate::event::TerminalReason;

pub use crate::protocol::json::{InvalidJson, Json};

/// The WebSocket subprotocol token (`Sec-WebSocket-Protocol`).
///
/// The client must offer it when dialing; a server that selects none is
/// not a graphql-transport-ws server.
pub const SUBPROTOCOL: &str = "graphql-transport-ws";

/// Close codes the protocol defines, with the meaning it gives them.
pub mod close_code {
    /// The peer sent a message of an unknown type or shape.
    pub const BAD_REQUEST: u16 = 4400;
    /// An operation was requested before the connection was acknowledged;
    /// servers also use it to refuse credentials.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The server refused the `connection_init` (its payload, usually the
    /// credentials in it).
    pub const FORBIDDEN: u16 = 4403;
    /// The handshake did not select [`super::SUBPROTOCOL`].
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    /// No `connection_init` reached the server within its waiting time.
    pub const CONNECTION_INIT_TIMEOUT: u16 = 4408;
    /// A `subscribe` reused the id of an operation still active.
    pub const SUBSCRIBER_ALREADY_EXISTS: u16 = 4409;
    /// More than one `connection_init` on one socket.
    pub const TOO_MANY_INIT_REQUESTS: u16 = 4429;
    /// The reference client's own code for a socket it gave up on.
    pub const TERMINATED: u16 = 4499;
    /// The server failed for reasons of its own.
    pub const INTERNAL_SERVER_ERROR: u16 = 4500;

    /// The protocol's name for a code, for logs; `None` for codes it does
    /// not define.
    pub fn name(code: u16) -> Option<&'static str> {
        Some(match code {
            BAD_REQUEST => "bad_request",
            UNAUTHORIZED => "unauthorized",
            FORBIDDEN => "forbidden",
            SUBPROTOCOL_NOT_ACCEPTABLE => "subprotocol_not_acceptable",
            CONNECTION_INIT_TIMEOUT => "connection_init_timeout",
            SUBSCRIBER_ALREADY_EXISTS => "subscriber_already_exists",
            TOO_MANY_INIT_REQUESTS => "too_many_init_requests",
            TERMINATED => "terminated",
            INTERNAL_SERVER_ERROR => "internal_server_error",
            _ => return None,
        })
    }
}

/// What a reconnecting client does when the server closes with `code`:
/// the rows this protocol adds to the close-policy table; `None` for codes
/// it does not define.
///
/// Credentials refused (4401, 4403) and a peer that cannot understand us
/// (4400, 4406) are terminal: another attempt sends the same thing. The
/// codes that describe one socket's history (4408, 4409, 4429, 4499) start
/// over on a fresh socket. A failing server (4500) is retried on a growing
/// ladder.
pub fn close_rule(code: u16) -> Option<CloseRule> {
    use close_code::*;
    Some(match code {
        UNAUTHORIZED => CloseRule::Terminal(TerminalReason::Unauthorized),
        FORBIDDEN => CloseRule::Terminal(TerminalReason::Forbidden),
        BAD_REQUEST | SUBPROTOCOL_NOT_ACCEPTABLE => {
            CloseRule::Terminal(TerminalReason::CloseCode(code))
        }
        CONNECTION_INIT_TIMEOUT
        | SUBSCRIBER_ALREADY_EXISTS
        | TOO_MANY_INIT_REQUESTS
        | TERMINATED => CloseRule::Reconnect { honour_hint: false },
        INTERNAL_SERVER_ERROR => CloseRule::StepLadder { honour_hint: false },
        _ => return None,
    })
}

/// The operation a `subscribe` message requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePayload<'a> {
    /// The GraphQL document.
    pub query: Cow<'a, str>,
    /// The operation's variables: a JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Json<'a>>,
    /// Which operation of the document to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<Cow<'a, str>>,
    /// Protocol extensions: a JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Json<'a>>,
}

/// One graphql-transport-ws message, either direction.
///
/// An optional payload that is absent and one that is `null` are the same
/// (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// Client → server, first message on a socket; the payload usually
    /// carries the credentials. Must be a JSON object.
    ConnectionInit {
        /// What the server's `onConnect` sees.
        payload: Option<Json<'a>>,
    },
    /// Server → client: the connection is ready for operations.
    ConnectionAck {
        /// Details the server chose to send; a JSON object.
        payload: Option<Json<'a>>,
    },
    /// Either direction: the receiver must answer with [`Message::Pong`].
    Ping {
        /// A JSON object.
        payload: Option<Json<'a>>,
    },
    /// Either direction: the answer to a ping, or a one-way heartbeat.
    Pong {
        /// A JSON object.
        payload: Option<Json<'a>>,
    },
    /// Client → server: start an operation under `id`.
    Subscribe {
        /// Unique among the client's active operations.
        id: Cow<'a, str>,
        /// The operation.
        payload: SubscribePayload<'a>,
    },
    /// Server → client: one result of operation `id` (an `ExecutionResult`
    /// object).
    Next {
        /// The operation.
        id: Cow<'a, str>,
        /// The result object, raw.
        payload: Json<'a>,
    },
    /// Server → client: operation `id` failed and is over; a non-empty
    /// array of GraphQL errors.
    Error {
        /// The operation.
        id: Cow<'a, str>,
        /// The errors array, raw.
        payload: Json<'a>,
    },
    /// Either direction: operation `id` is over (server) or no longer
    /// wanted (client).
    Complete {
        /// The operation.
        id: Cow<'a, str>,
    },
}

/// Why a text is not a valid graphql-transport-ws message.
///
/// Every variant is a protocol violation by the peer: close with
/// [`close_code::BAD_REQUEST`] and reconnect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a JSON object with a string `type` (serde_json's explanation).
    #[error("not a graphql-transport-ws message: {0}")]
    Json(String),
    /// A `type` the protocol does not define.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A field the message type requires is absent (or `null`).
    #[error("`{kind}` message without `{field}`")]
    MissingField {
        /// The message type.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field holds the wrong kind of JSON value.
    #[error("`{kind}` message: `{field}` must be {expected}")]
    WrongShape {
        /// The message type.
        kind: &'static str,
        /// The field.
        field: &'static str,
        /// What the protocol requires there.
        expected: &'static str,
    },
    /// A client-only message (`connection_init`, `subscribe`) from a server.
    #[error("`{0}` is sent by clients, not by servers")]
    WrongDirection(&'static str),
}

impl From<InvalidJson> for DecodeError {
    fn from(e: InvalidJson) -> Self {
        DecodeError::Json(e.0)
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InSubscribe<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed")]
    query: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    variables: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "borrowed")]
    operation_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    extensions: Option<&'a RawValue>,
}

/// An optional string that borrows from the input when it has no escapes
/// (serde's own `Option<Cow<str>>` always copies).
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

#[derive(Serialize)]
struct Out<'m, 'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'m str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<OutPayload<'m, 'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutPayload<'m, 'a> {
    Raw(Json<'a>),
    Subscribe(&'m SubscribePayload<'a>),
}

/// Decodes a message a server sent.
///
/// # Errors
/// Any [`DecodeError`]; [`DecodeError::WrongDirection`] for a message only
/// clients send.
pub fn decode_server(text: &str) -> Result<Message<'_>, DecodeError> {
    let message = decode(text)?;
    match message {
        Message::ConnectionInit { .. } => Err(DecodeError::WrongDirection("connection_init")),
        Message::Subscribe { .. } => Err(DecodeError::WrongDirection("subscribe")),
        other => Ok(other),
    }
}

/// Decodes a message of either direction.
///
/// # Errors
/// Any [`DecodeError`] but [`DecodeError::WrongDirection`].
pub fn decode(text: &str) -> Result<Message<'_>, DecodeError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let payload = envelope.payload.map(Json::new);
    let message = match &*envelope.kind {
        "connection_init" => Message::ConnectionInit { payload },
        "connection_ack" => Message::ConnectionAck { payload },
        "ping" => Message::Ping { payload },
        "pong" => Message::Pong { payload },
        "subscribe" => {
            let id = required_id("subscribe", envelope.id)?;
            let raw = payload.ok_or(DecodeError::MissingField {
                kind: "subscribe",
                field: "payload",
            })?;
            let shape = || DecodeError::WrongShape {
                kind: "subscribe",
                field: "payload",
                expected: "an object with a string `query`",
            };
            if !raw.is_object() {
                return Err(shape());
            }
            let fields: InSubscribe<'_> = serde_json::from_str(raw.get()).map_err(|_| shape())?;
            Message::Subscribe {
                id,
                payload: SubscribePayload {
                    query: fields.query.ok_or(DecodeError::MissingField {
                        kind: "subscribe",
                        field: "payload.query",
                    })?,
                    variables: fields.variables.map(Json::new),
                    operation_name: fields.operation_name,
                    extensions: fields.extensions.map(Json::new),
                },
            }
        }
        "next" => Message::Next {
            id: required_id("next", envelope.id)?,
            payload: payload.ok_or(DecodeError::MissingField {
                kind: "next",
                field: "payload",
            })?,
        },
        "error" => Message::Error {
            id: required_id("error", envelope.id)?,
            payload: payload.ok_or(DecodeError::MissingField {
                kind: "error",
                field: "payload",
            })?,
        },
        "complete" => Message::Complete {
            id: required_id("complete", envelope.id)?,
        },
        other => return Err(DecodeError::UnknownType(other.to_owned())),
    };
    message.validate()?;
    Ok(message)
}

fn required_id<'a>(
    kind: &'static str,
    id: Option<Cow<'a, str>>,
) -> Result<Cow<'a, str>, DecodeError> {
    id.ok_or(DecodeError::MissingField { kind, field: "id" })
}

impl<'a> Message<'a> {
    /// The protocol's `type` string for this message.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::ConnectionInit { .. } => "connection_init",
            Message::ConnectionAck { .. } => "connection_ack",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Subscribe { .. } => "subscribe",
            Message::Next { .. } => "next",
            Message::Error { .. } => "error",
            Message::Complete { .. } => "complete",
        }
    }

    /// The operation id, for the message types that carry one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Message::Subscribe { id, .. }
            | Message::Next { id, .. }
            | Message::Error { id, .. }
            | Message::Complete { id } => Some(id),
            _ => None,
        }
    }

    /// Checks the shape rules [`decode`] enforces: non-empty ids, object
    /// payloads (`next`, init, ack, ping, pong, variables, extensions), a
    /// non-empty errors array.
    ///
    /// A message that passes encodes to text that [`decode`] turns back
    /// into an equal message.
    ///
    /// # Errors
    /// [`DecodeError::WrongShape`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let kind = self.kind();
        if self.id().is_some_and(str::is_empty) {
            return Err(DecodeError::WrongShape {
                kind,
                field: "id",
                expected: "a non-empty string",
            });
        }
        let object = |field: &'static str, value: &Option<Json<'_>>| match value {
            Some(v) if !v.is_object() && !v.is_null() => Err(DecodeError::WrongShape {
                kind,
                field,
                expected: "an object or null",
            }),
            _ => Ok(()),
        };
        match self {
            Message::ConnectionInit { payload }
            | Message::ConnectionAck { payload }
            | Message::Ping { payload }
            | Message::Pong { payload } => object("payload", payload),
            Message::Subscribe { payload, .. } => {
                object("payload.variables", &payload.variables)?;
                object("payload.extensions", &payload.extensions)
            }
            Message::Next { payload, .. } if !payload.is_object() => Err(DecodeError::WrongShape {
                kind,
                field: "payload",
                expected: "an execution result object",
            }),
            Message::Error { payload, .. } if !payload.is_non_empty_array() => {
                Err(DecodeError::WrongShape {
                    kind,
                    field: "payload",
                    expected: "a non-empty array of errors",
                })
            }
            _ => Ok(()),
        }
    }

    /// The message as the JSON text of one WebSocket text frame.
    ///
    /// Writes what it is given; call [`Message::validate`] first for a
    /// message built from untrusted parts.
    pub fn encode(&self) -> String {
        let (id, payload) = match self {
            Message::ConnectionInit { payload }
            | Message::ConnectionAck { payload }
            | Message::Ping { payload }
            | Message::Pong { payload } => (None, payload.map(OutPayload::Raw)),
            Message::Subscribe { id, payload } => {
                (Some(&**id), Some(OutPayload::Subscribe(payload)))
            }
            Message::Next { id, payload } | Message::Error { id, payload } => {
                (Some(&**id), Some(OutPayload::Raw(*payload)))
            }
            Message::Complete { id } => (Some(&**id), None),
        };
        let out = Out {
            kind: self.kind(),
            id,
            payload,
        };
        // Serializing strings and already-valid raw JSON into a String has
        // no failure path; the fallback keeps this function total anyway.
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// Fuzz entry point: any bytes as a received text frame never panic, and
/// whatever decodes passes [`Message::validate`] and re-encodes to text that
/// decodes to an equal message.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub fn fuzz_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let server = decode_server(text);
    match decode(text) {
        Ok(message) => {
            assert_eq!(message.validate(), Ok(()));
            let again = message.encode();
            assert_eq!(decode(&again), Ok(message.clone()), "{again}");
            match message {
                Message::ConnectionInit { .. } | Message::Subscribe { .. } => {
                    assert!(matches!(server, Err(DecodeError::WrongDirection(_))));
                }
                _ => assert_eq!(server, Ok(message)),
            }
        }
        Err(e) => assert_eq!(server, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn decodes_every_server_message() {
        let ack = decode_server(r#"{"type":"connection_ack","payload":{"v":1}}"#);
        assert!(
            matches!(ack, Ok(Message::ConnectionAck { payload: Some(p) }) if p.get() == r#"{"v":1}"#)
        );
        assert_eq!(
            decode_server(r#"{"type":"ping"}"#),
            Ok(Message::Ping { payload: None })
        );
        assert_eq!(
            decode_server(r#"{"type":"pong","payload":null}"#),
            Ok(Message::Pong { payload: None })
        );
        let next = decode_server(r#"{"id":"7","type":"next","payload":{"data":{"tick":3}}}"#);
        match next {
            Ok(Message::Next { id, payload }) => {
                assert_eq!(id, "7");
                assert_eq!(payload.get(), r#"{"data":{"tick":3}}"#);
                assert!(matches!(id, Cow::Borrowed(_)), "ids without escapes borrow");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_server(r#"{"id":"7","type":"error","payload":[{"message":"no"}]}"#),
            Ok(Message::Error { .. })
        ));
        assert_eq!(
            decode_server(r#"{"id":"a\"b","type":"complete"}"#),
            Ok(Message::Complete { id: "a\"b".into() })
        );
    }

    #[test]
    fn rejects_what_the_protocol_forbids() {
        let cases = [
            ("[]", "json"),
            (r#"{"payload":{}}"#, "json"),
            (r#"{"type":"start","id":"1"}"#, "unknown"),
            (r#"{"type":"next","payload":{}}"#, "missing"),
            (r#"{"type":"next","id":"1"}"#, "missing"),
            (r#"{"type":"next","id":"1","payload":null}"#, "missing"),
            (r#"{"type":"next","id":"1","payload":[1]}"#, "shape"),
            (r#"{"type":"next","id":"","payload":{}}"#, "shape"),
            (r#"{"type":"error","id":"1","payload":[ ]}"#, "shape"),
            (
                r#"{"type":"error","id":"1","payload":{"message":"x"}}"#,
                "shape",
            ),
            (r#"{"type":"connection_ack","payload":"yes"}"#, "shape"),
            (r#"{"type":"complete","id":5}"#, "json"),
            (r#"{"type":"connection_init"}"#, "direction"),
            (
                r#"{"type":"subscribe","id":"1","payload":{"query":"{a}"}}"#,
                "direction",
            ),
        ];
        for (text, want) in cases {
            let got = decode_server(text);
            let ok = matches!(
                (&got, want),
                (Err(DecodeError::Json(_)), "json")
                    | (Err(DecodeError::UnknownType(_)), "unknown")
                    | (Err(DecodeError::MissingField { .. }), "missing")
                    | (Err(DecodeError::WrongShape { .. }), "shape")
                    | (Err(DecodeError::WrongDirection(_)), "direction")
            );
            assert!(ok, "{text}: wanted {want}, got {got:?}");
        }
    }

    #[test]
    fn subscribe_encodes_camel_case_and_omits_absent_fields() {
        let vars = raw(r#"{"n":1}"#);
        let msg = Message::Subscribe {
            id: "1".into(),
            payload: SubscribePayload {
                query: "subscription { tick }".into(),
                variables: Some(Json::new(&vars)),
                operation_name: None,
                extensions: None,
            },
        };
        assert_eq!(
            msg.encode(),
            r#"{"type":"subscribe","id":"1","payload":{"query":"subscription { tick }","variables":{"n":1}}}"#
        );
        assert_eq!(
            Message::ConnectionInit { payload: None }.encode(),
            r#"{"type":"connection_init"}"#
        );
        let encoded = msg.encode();
        assert_eq!(decode(&encoded), Ok(msg));
    }

    #[test]
    fn close_codes_follow_the_protocol() {
        assert_eq!(
            close_rule(close_code::FORBIDDEN),
            Some(CloseRule::Terminal(TerminalReason::Forbidden))
        );
        assert_eq!(
            close_rule(close_code::UNAUTHORIZED),
            Some(CloseRule::Terminal(TerminalReason::Unauthorized))
        );
        assert!(matches!(
            close_rule(close_code::TOO_MANY_INIT_REQUESTS),
            Some(CloseRule::Reconnect { .. })
        ));
        assert!(matches!(
            close_rule(close_code::CONNECTION_INIT_TIMEOUT),
            Some(CloseRule::Reconnect { .. })
        ));
        assert!(matches!(
            close_rule(close_code::INTERNAL_SERVER_ERROR),
            Some(CloseRule::StepLadder { .. })
        ));
        assert_eq!(close_rule(1000), None);
        assert_eq!(close_rule(4000), None);
        for code in [4400, 4401, 4403, 4406, 4408, 4409, 4429, 4499, 4500] {
            assert!(close_code::name(code).is_some() && close_rule(code).is_some());
        }
    }

    /// Owned parts of an arbitrary valid message; `build` borrows them.
    #[derive(Debug, Clone)]
    struct Parts {
        kind: u8,
        id: String,
        text: String,
        object: Option<Box<RawValue>>,
        other: Option<Box<RawValue>>,
        errors: Box<RawValue>,
    }

    impl Parts {
        fn build(&self) -> Message<'_> {
            let object = self.object.as_deref().map(Json::new);
            let id = Cow::Borrowed(self.id.as_str());
            match self.kind % 8 {
                0 => Message::ConnectionInit { payload: object },
                1 => Message::ConnectionAck { payload: object },
                2 => Message::Ping { payload: object },
                3 => Message::Pong { payload: object },
                4 => Message::Subscribe {
                    id,
                    payload: SubscribePayload {
                        query: Cow::Borrowed(&self.text),
                        variables: object,
                        operation_name: self.other.as_ref().map(|_| Cow::Borrowed(&*self.text)),
                        extensions: self.other.as_deref().map(Json::new),
                    },
                },
                5 => Message::Next {
                    id,
                    payload: object.unwrap_or(Json::new(&self.errors)),
                },
                6 => Message::Error {
                    id,
                    payload: Json::new(&self.errors),
                },
                _ => Message::Complete { id },
            }
        }
    }

    fn json_object() -> impl Strategy<Value = Box<RawValue>> {
        proptest::collection::btree_map("[a-z\"\\\\é]{0,6}", any::<i64>(), 0..4).prop_map(|m| {
            let value = serde_json::to_value(m).unwrap_or_default();
            serde_json::value::to_raw_value(&value).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    fn parts() -> impl Strategy<Value = Parts> {
        (
            any::<u8>(),
            "\\PC{1,12}",
            "\\PC{0,40}",
            proptest::option::of(json_object()),
            proptest::option::of(json_object()),
            proptest::collection::vec("\\PC{0,10}", 1..3),
        )
            .prop_map(|(kind, id, text, object, other, messages)| {
                let errors: Vec<_> = messages
                    .into_iter()
                    .map(|m| serde_json::json!({ "message": m }))
                    .collect();
                Parts {
                    kind,
                    id,
                    text,
                    object,
                    other,
                    errors: serde_json::value::to_raw_value(&errors)
                        .unwrap_or_else(|e| panic!("{e}")),
                }
            })
    }

    proptest! {
        #[test]
        fn every_valid_message_round_trips(parts in parts()) {
            let message = parts.build();
            // `next` with an object payload only; the builder may pick the
            // errors array for it, which `validate` rejects.
            prop_assume!(message.validate().is_ok());
            let text = message.encode();
            prop_assert_eq!(decode(&text), Ok(message.clone()));
            let server_side = decode_server(&text);
            match message {
                Message::ConnectionInit { .. } | Message::Subscribe { .. } => {
                    prop_assert!(matches!(server_side, Err(DecodeError::WrongDirection(_))));
                }
                _ => prop_assert_eq!(server_side, Ok(message)),
            }
        }

        #[test]
        fn arbitrary_text_never_panics_and_what_decodes_re_decodes(text in "\\PC{0,80}") {
            if let Ok(message) = decode(&text) {
                let again = message.encode();
                prop_assert_eq!(decode(&again), Ok(message));
            }
        }
    }
}
