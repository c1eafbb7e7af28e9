//! Message codec for JSON-RPC 2.0 over WebSocket: one request,
//! notification or response (or a batch of them) per text frame.
//!
//! [`decode`] parses what either side sends, under [`Limits`] on the text's
//! length, its nesting depth and a batch's length; [`Message::encode`] and
//! [`Batch::encode`] write it back. Decoding does not copy: methods, string
//! ids, params and results borrow from the input text (a string with JSON
//! escapes in it is unescaped into an owned `String`), and params, results
//! and error data stay raw JSON ([`Json`]), so a caller forwarding a
//! notification's result never parses it twice.
//!
//! The codec is strict where the specification is: a message without
//! `"jsonrpc": "2.0"`, with both or neither of `result` and `error`, with
//! params that are neither an array nor an object, an error without an
//! integer `code` and a string `message`, or an empty batch is a
//! [`DecodeError`]. Fields the specification does not name are ignored.
//! Numeric ids must be integers that fit an `i64` (the specification says
//! they should not have fractional parts; a client only ever sees ids it
//! issued, and this codec issues integers).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::protocol::json::{InvalidJson, Json};

use super::scan::{self, Members, Pubsub, Scanned};

/// Error codes the specification reserves, with the meaning it gives them.
///
/// Codes from -32000 to -32099 are left to servers for their own errors;
/// everything outside -32768..=-32000 is the application's.
pub mod error_code {
    /// The server could not parse the JSON text it received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON was not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (or it is not available).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method exists but refused the params.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server failed on its own.
    pub const INTERNAL_ERROR: i64 = -32603;

    /// The specification's name for a code, for logs; `None` for codes it
    /// does not name.
    pub fn name(code: i64) -> Option<&'static str> {
        Some(match code {
            PARSE_ERROR => "parse_error",
            INVALID_REQUEST => "invalid_request",
            METHOD_NOT_FOUND => "method_not_found",
            INVALID_PARAMS => "invalid_params",
            INTERNAL_ERROR => "internal_error",
            -32099..=-32000 => "server_error",
            _ => return None,
        })
    }
}

/// Bounds on what [`decode`] accepts; anything beyond one is a
/// [`DecodeError`], found before the text is read (its length) or as soon
/// as the read reaches it (its nesting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest text, in bytes. Default 16 MiB: a large block with its
    /// transactions fits; the session's own inbound size limit (close 1009)
    /// usually bounds the frame first.
    pub max_len: usize,
    /// The deepest nesting of arrays and objects, the message's own object
    /// (and a batch's array) included. Default 64: Ethereum and Substrate
    /// payloads stay under 10.
    pub max_depth: usize,
    /// The most messages in one batch. Default 64.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_len: 16 * 1024 * 1024,
            max_depth: 64,
            max_batch: 64,
        }
    }
}

impl Limits {
    /// Sets [`max_len`](Self::max_len).
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes;
        self
    }

    /// Sets [`max_depth`](Self::max_depth).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// Sets [`max_batch`](Self::max_batch).
    pub fn max_batch(mut self, messages: usize) -> Self {
        self.max_batch = messages;
        self
    }
}

/// A request id: what ties a response to its request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id<'a> {
    /// An integer id (what this codec's users issue).
    Number(i64),
    /// A string id.
    String(Cow<'a, str>),
    /// `null`: in an error response, the server could not read the
    /// request's id. Discouraged in requests.
    Null,
}

impl Id<'_> {
    /// The id with nothing borrowed from the input.
    pub fn into_owned(self) -> Id<'static> {
        match self {
            Id::Number(n) => Id::Number(n),
            Id::String(s) => Id::String(Cow::Owned(s.into_owned())),
            Id::Null => Id::Null,
        }
    }
}

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
            Id::Null => f.write_str("null"),
        }
    }
}

impl Serialize for Id<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Number(n) => s.serialize_i64(*n),
            Id::String(v) => s.serialize_str(v),
            Id::Null => s.serialize_none(),
        }
    }
}

/// The error member of a failed response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorObject<'a> {
    /// Signed: the specification's own codes are negative
    /// ([`error_code`]).
    pub code: i64,
    /// A short description.
    pub message: Cow<'a, str>,
    /// Anything else the server chose to add, raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Json<'a>>,
}

/// One JSON-RPC 2.0 message, either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// A call that wants an answer under `id`.
    Request {
        /// Echoed by the response.
        id: Id<'a>,
        /// The method called.
        method: Cow<'a, str>,
        /// An array or an object.
        params: Option<Json<'a>>,
    },
    /// A call that wants no answer; pubsub servers push their events as
    /// these (`eth_subscription` with the subscription id in the params).
    Notification {
        /// The method called.
        method: Cow<'a, str>,
        /// An array or an object.
        params: Option<Json<'a>>,
    },
    /// The answer to request `id`: it succeeded.
    Result {
        /// The request's id.
        id: Id<'a>,
        /// Any JSON value, `null` included.
        result: Json<'a>,
    },
    /// The answer to request `id`: it failed.
    Error {
        /// The request's id; [`Id::Null`] when the server could not read it.
        id: Id<'a>,
        /// What went wrong.
        error: ErrorObject<'a>,
    },
}

/// What one text frame holds: a message or a batch of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch<'a> {
    /// One message.
    Single(Message<'a>),
    /// A non-empty array of messages, at most [`Limits::max_batch`].
    Many(Vec<Message<'a>>),
}

impl<'a> Batch<'a> {
    /// The messages, in the order they were sent.
    pub fn into_messages(self) -> Vec<Message<'a>> {
        match self {
            Batch::Single(m) => vec![m],
            Batch::Many(ms) => ms,
        }
    }

    /// The frame's text: a message, or an array of them.
    pub fn encode(&self) -> String {
        match self {
            Batch::Single(m) => m.encode(),
            Batch::Many(ms) => {
                let parts: Vec<String> = ms.iter().map(Message::encode).collect();
                format!("[{}]", parts.join(","))
            }
        }
    }
}

/// Why a text is not valid JSON-RPC 2.0.
///
/// From a server, every variant is a protocol violation by the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than [`Limits::max_len`].
    #[error("message of {len} bytes, over the limit of {max}")]
    TooLong {
        /// The text's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`Limits::max_depth`].
    #[error("message nested deeper than {max}")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// A batch longer than [`Limits::max_batch`].
    #[error("batch of {len} messages, over the limit of {max}")]
    BatchTooLong {
        /// The batch's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty array: the specification makes it invalid.
    #[error("empty batch")]
    EmptyBatch,
    /// Not a JSON object or array of objects (serde_json's explanation).
    #[error("not a JSON-RPC message: {0}")]
    Json(String),
    /// `jsonrpc` absent or not `"2.0"`.
    #[error("`jsonrpc` must be \"2.0\"")]
    Version,
    /// A field the message kind requires is absent.
    #[error("{kind} without `{field}`")]
    MissingField {
        /// The message kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A field holds the wrong kind of JSON value.
    #[error("{kind}: `{field}` must be {expected}")]
    WrongShape {
        /// The message kind.
        kind: &'static str,
        /// The field.
        field: &'static str,
        /// What the specification requires there.
        expected: &'static str,
    },
    /// Fields of two kinds of message in one (`result` with `error`, or a
    /// `method` with either).
    #[error("a message with both `{0}` and `{1}`")]
    Conflicting(&'static str, &'static str),
}

impl From<InvalidJson> for DecodeError {
    fn from(e: InvalidJson) -> Self {
        DecodeError::Json(e.0)
    }
}

#[derive(Deserialize)]
struct InError<'a> {
    code: i64,
    #[serde(borrow)]
    message: Borrowed<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// A string that borrows from the input when it has no escapes (serde's own
/// `Cow<str>` always copies).
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

/// A field that is present, `null` included (plain `Option` folds `null`
/// into absent, and a `null` data is not an absent one).
fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Decodes one text frame: a message or a batch.
///
/// # Errors
/// Any [`DecodeError`]. The length is checked before anything is read and
/// the nesting depth as the text is read, so a text over either limit
/// costs no more than reading it up to the limit.
pub fn decode(text: &str, limits: Limits) -> Result<Batch<'_>, DecodeError> {
    decode_frame(text, limits).map(|frame| match frame {
        Decoded::Single(m, _) => Batch::Single(m),
        Decoded::Many(items) => Batch::Many(items.into_iter().map(|i| i.message).collect()),
    })
}

/// A decoded frame, each message with its pubsub params when they hold a
/// `subscription` and a `result` (found in the same pass).
pub(crate) enum Decoded<'a> {
    Single(Message<'a>, Option<Pubsub<'a>>),
    Many(Vec<Item<'a>>),
}

/// One message of a batch.
pub(crate) struct Item<'a> {
    pub message: Message<'a>,
    pub pubsub: Option<Pubsub<'a>>,
    /// Its own text, as the batch held it.
    pub text: &'a str,
}

/// [`decode`], keeping what the one pass over the text found about
/// pubsub params.
pub(crate) fn decode_frame(text: &str, limits: Limits) -> Result<Decoded<'_>, DecodeError> {
    if text.len() > limits.max_len {
        return Err(DecodeError::TooLong {
            len: text.len(),
            max: limits.max_len,
        });
    }
    match scan::frame(text, limits.max_depth)? {
        Scanned::One(members) => {
            let pubsub = members.pubsub;
            Ok(Decoded::Single(message(members)?, pubsub))
        }
        Scanned::Many(items) => {
            if items.is_empty() {
                return Err(DecodeError::EmptyBatch);
            }
            if items.len() > limits.max_batch {
                return Err(DecodeError::BatchTooLong {
                    len: items.len(),
                    max: limits.max_batch,
                });
            }
            let messages = items
                .into_iter()
                .map(|item| {
                    let members = scan::batch_element(item, limits.max_depth)?;
                    Ok(Item {
                        pubsub: members.pubsub,
                        message: message(members)?,
                        text: item,
                    })
                })
                .collect::<Result<Vec<_>, DecodeError>>()?;
            Ok(Decoded::Many(messages))
        }
    }
}

/// The message the members of one object make, as the specification has
/// it.
fn message(m: Members<'_>) -> Result<Message<'_>, DecodeError> {
    if m.jsonrpc != Some("\"2.0\"") {
        return Err(DecodeError::Version);
    }
    if let Some(method) = m.method {
        let kind = if m.id.is_some() {
            "request"
        } else {
            "notification"
        };
        if m.result.is_some() {
            return Err(DecodeError::Conflicting("method", "result"));
        }
        if m.error.is_some() {
            return Err(DecodeError::Conflicting("method", "error"));
        }
        let method = scan::unquote(method).ok_or(DecodeError::WrongShape {
            kind,
            field: "method",
            expected: "a string",
        })?;
        let params = m.params.map(Json::scanned);
        if params.is_some_and(|p| !p.is_structured()) {
            return Err(DecodeError::WrongShape {
                kind,
                field: "params",
                expected: "an array or an object",
            });
        }
        return Ok(match m.id {
            Some(id) => Message::Request {
                id: parse_id(id, kind)?,
                method,
                params,
            },
            None => Message::Notification { method, params },
        });
    }
    let kind = "response";
    let id = parse_id(
        m.id.ok_or(DecodeError::MissingField { kind, field: "id" })?,
        kind,
    )?;
    match (m.result, m.error) {
        (Some(_), Some(_)) => Err(DecodeError::Conflicting("result", "error")),
        (Some(result), None) => Ok(Message::Result {
            id,
            result: Json::scanned(result),
        }),
        (None, Some(error)) => {
            let shape = || DecodeError::WrongShape {
                kind,
                field: "error",
                expected: "an object with an integer `code` and a string `message`",
            };
            if !error.starts_with('{') {
                return Err(shape());
            }
            let e: InError<'_> = serde_json::from_str(error).map_err(|_| shape())?;
            Ok(Message::Error {
                id,
                error: ErrorObject {
                    code: e.code,
                    message: e.message.0,
                    data: e.data.map(Json::new),
                },
            })
        }
        (None, None) => Err(DecodeError::MissingField {
            kind,
            field: "result` or `error",
        }),
    }
}

/// An id as scanned: `null`, a string or an integer that fits an `i64`
/// (the grammar was checked, so an integer is `-`, digits, nothing else).
fn parse_id<'a>(text: &'a str, kind: &'static str) -> Result<Id<'a>, DecodeError> {
    let shape = DecodeError::WrongShape {
        kind,
        field: "id",
        expected: "a string, an integer or null",
    };
    if text == "null" {
        return Ok(Id::Null);
    }
    if text.starts_with('"') {
        return scan::unquote(text).map(Id::String).ok_or(shape);
    }
    text.parse::<i64>().map(Id::Number).map_err(|_| shape)
}

#[derive(Serialize)]
struct Out<'m, 'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'m Id<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'m str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Json<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Json<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'m ErrorObject<'a>>,
}

impl<'a> Message<'a> {
    /// The message kind, for errors and logs: `request`, `notification`,
    /// `result` or `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request { .. } => "request",
            Message::Notification { .. } => "notification",
            Message::Result { .. } => "result",
            Message::Error { .. } => "error",
        }
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&Id<'a>> {
        match self {
            Message::Request { id, .. }
            | Message::Result { id, .. }
            | Message::Error { id, .. } => Some(id),
            Message::Notification { .. } => None,
        }
    }

    /// The message as the JSON text of one WebSocket text frame.
    ///
    /// Writes what it is given: params that are not an array or an object
    /// encode, and [`decode`] refuses them.
    pub fn encode(&self) -> String {
        let mut out = Out {
            jsonrpc: "2.0",
            id: None,
            method: None,
            params: None,
            result: None,
            error: None,
        };
        match self {
            Message::Request { id, method, params } => {
                out.id = Some(id);
                out.method = Some(method);
                out.params = *params;
            }
            Message::Notification { method, params } => {
                out.method = Some(method);
                out.params = *params;
            }
            Message::Result { id, result } => {
                out.id = Some(id);
                out.result = Some(*result);
            }
            Message::Error { id, error } => {
                out.id = Some(id);
                out.error = Some(error);
            }
        }
        // Serializing strings, integers and already-valid raw JSON into a
        // String has no failure path; the fallback keeps this total anyway.
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// Fuzz entry point: any bytes as a received text frame never panic, and
/// whatever decodes re-encodes to text that decodes to an equal batch.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub fn fuzz_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Small limits, so the fuzzer reaches them.
    let limits = Limits::default().max_depth(8).max_batch(4);
    if let Ok(batch) = decode(text, limits) {
        let again = batch.encode();
        // Re-encoding never adds nesting or messages, and may only shorten
        // the text (escapes, whitespace and `-0` ids go).
        assert!(again.len() <= text.len(), "{text} -> {again}");
        assert_eq!(decode(&again, limits), Ok(batch), "{again}");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> Result<Message<'_>, DecodeError> {
        match decode(text, Limits::default())? {
            Batch::Single(m) => Ok(m),
            Batch::Many(ms) => panic!("a batch: {ms:?}"),
        }
    }

    #[test]
    fn decodes_every_kind() {
        let req = one(r#"{"jsonrpc":"2.0","id":7,"method":"eth_subscribe","params":["newHeads"]}"#);
        assert!(
            matches!(&req, Ok(Message::Request { id: Id::Number(7), method, params: Some(p) })
            if method == "eth_subscribe" && p.get() == r#"["newHeads"]"#)
        );

        let note = one(
            r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"number":"0x1"}}}"#,
        );
        assert!(
            matches!(&note, Ok(Message::Notification { method, params: Some(p) })
            if method == "eth_subscription" && p.get().starts_with(r#"{"subscription""#))
        );

        let ok = one(r#"{"jsonrpc":"2.0","id":"a","result":null}"#);
        assert!(
            matches!(&ok, Ok(Message::Result { id: Id::String(s), result })
            if s == "a" && result.get() == "null")
        );

        let err =
            one(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad","data":[1]}}"#);
        assert!(
            matches!(&err, Ok(Message::Error { id: Id::Number(3), error })
            if error.code == error_code::INVALID_PARAMS && error.message == "bad"
                && error.data.is_some_and(|d| d.get() == "[1]"))
        );

        let no_id = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#);
        assert!(matches!(no_id, Ok(Message::Error { id: Id::Null, .. })));

        let no_params = one(r#"{"jsonrpc":"2.0","method":"ping"}"#);
        assert!(matches!(
            no_params,
            Ok(Message::Notification { params: None, .. })
        ));
    }

    #[test]
    fn borrows_what_has_no_escapes() {
        let text = r#"{"jsonrpc":"2.0","id":"plain","method":"a\u0062c"}"#;
        let Ok(Message::Request {
            id: Id::String(id),
            method,
            ..
        }) = one(text)
        else {
            panic!("not a request");
        };
        assert!(matches!(id, Cow::Borrowed("plain")));
        assert!(matches!(method, Cow::Owned(ref m) if m == "abc"));
    }

    #[test]
    fn refuses_what_the_specification_does() {
        let cases: &[(&str, DecodeError)] = &[
            (r#"{"id":1,"result":1}"#, DecodeError::Version),
            (
                r#"{"jsonrpc":"1.0","id":1,"result":1}"#,
                DecodeError::Version,
            ),
            (r#"{"jsonrpc":2.0,"id":1,"result":1}"#, DecodeError::Version),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":""}}"#,
                DecodeError::Conflicting("result", "error"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"m","result":1}"#,
                DecodeError::Conflicting("method", "result"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1}"#,
                DecodeError::MissingField {
                    kind: "response",
                    field: "result` or `error",
                },
            ),
            (
                r#"{"jsonrpc":"2.0","result":1}"#,
                DecodeError::MissingField {
                    kind: "response",
                    field: "id",
                },
            ),
            (
                r#"{"jsonrpc":"2.0","method":"m","params":3}"#,
                DecodeError::WrongShape {
                    kind: "notification",
                    field: "params",
                    expected: "an array or an object",
                },
            ),
            (
                r#"{"jsonrpc":"2.0","method":5}"#,
                DecodeError::WrongShape {
                    kind: "notification",
                    field: "method",
                    expected: "a string",
                },
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"result":1}"#,
                DecodeError::WrongShape {
                    kind: "response",
                    field: "id",
                    expected: "a string, an integer or null",
                },
            ),
            (
                r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#,
                DecodeError::WrongShape {
                    kind: "request",
                    field: "id",
                    expected: "a string, an integer or null",
                },
            ),
            ("[]", DecodeError::EmptyBatch),
        ];
        for (text, want) in cases {
            assert_eq!(one(text).as_ref().err(), Some(want), "{text}");
        }
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1.5,"message":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":"boom"}"#,
        ] {
            assert!(
                matches!(
                    one(text),
                    Err(DecodeError::WrongShape { field: "error", .. })
                ),
                "{text}"
            );
        }
        for text in [
            "",
            "null",
            "7",
            r#""x""#,
            "{",
            r#"{"jsonrpc":"2.0","id":1,"result":1} {}"#,
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"result":1}"#,
            "[1]",
            "[[]]",
        ] {
            assert!(matches!(one(text), Err(DecodeError::Json(_))), "{text}");
        }
    }

    #[test]
    fn limits_are_checked_before_parsing() {
        let limits = Limits::default().max_len(40).max_depth(3).max_batch(2);
        let long = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":"{}"}}"#,
            "x".repeat(40)
        );
        assert_eq!(
            decode(&long, limits),
            Err(DecodeError::TooLong {
                len: long.len(),
                max: 40
            })
        );
        let limits = limits.max_len(1000);
        // Three levels pass; a fourth fails even though the text is not
        // valid JSON at all: the scan comes first.
        assert!(decode(r#"{"jsonrpc":"2.0","id":1,"result":[[]]}"#, limits).is_ok());
        assert_eq!(decode("[[[[", limits), Err(DecodeError::TooDeep { max: 3 }));
        // Brackets inside strings, escaped quotes included, do not count.
        assert!(decode(r#"{"jsonrpc":"2.0","id":"\"[[[[","result":1}"#, limits).is_ok());
        let r = r#"{"jsonrpc":"2.0","id":1,"result":1}"#;
        assert!(
            matches!(decode(&format!("[{r},{r}]"), limits), Ok(Batch::Many(v)) if v.len() == 2)
        );
        assert_eq!(
            decode(&format!("[{r},{r},{r}]"), limits),
            Err(DecodeError::BatchTooLong { len: 3, max: 2 })
        );
        // One bad message spoils its batch.
        assert!(decode(&format!(r#"[{r},{{"id":1}}]"#), limits).is_err());
    }

    #[test]
    fn a_million_brackets_is_an_error_not_a_stack_overflow() {
        let text = "[".repeat(1_000_000);
        assert_eq!(
            decode(&text, Limits::default()),
            Err(DecodeError::TooDeep { max: 64 })
        );
    }

    #[test]
    fn encodes_what_clients_and_servers_send() {
        let params = Json::parse(r#"["newHeads"]"#).unwrap_or_else(|e| panic!("{e}"));
        let req = Message::Request {
            id: Id::Number(1),
            method: Cow::Borrowed("eth_subscribe"),
            params: Some(params),
        };
        assert_eq!(
            req.encode(),
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#
        );
        let err = Message::Error {
            id: Id::Null,
            error: ErrorObject {
                code: error_code::PARSE_ERROR,
                message: Cow::Borrowed("parse \"error\""),
                data: None,
            },
        };
        assert_eq!(
            err.encode(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse \"error\""}}"#
        );
        let batch = Batch::Many(vec![req.clone(), err.clone()]);
        assert_eq!(decode(&batch.encode(), Limits::default()), Ok(batch));
        assert_eq!(error_code::name(-32050), Some("server_error"));
        assert_eq!(error_code::name(-32602), Some("invalid_params"));
        assert_eq!(error_code::name(1), None);
    }

    /// Any JSON value, a few levels deep (the scanner's tests use it too).
    pub(in crate::protocol::json_rpc) fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn raw(v: &serde_json::Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    proptest! {
        #[test]
        fn every_message_round_trips(
            kind in 0..4u8,
            num in any::<i64>(),
            text_id in prop::option::of("\\PC{0,8}"),
            method in "\\PC{0,12}",
            value in json_value(),
            array in prop::collection::vec(json_value(), 0..3),
            code in any::<i64>(),
        ) {
            let id = match text_id {
                Some(s) => Id::String(Cow::Owned(s)),
                None => Id::Number(num),
            };
            let (value, params) = (raw(&value), raw(&serde_json::Value::Array(array)));
            let message = match kind {
                0 => Message::Request { id, method: method.into(), params: Some(Json::new(&params)) },
                1 => Message::Notification { method: method.into(), params: None },
                2 => Message::Result { id, result: Json::new(&value) },
                _ => Message::Error {
                    id,
                    error: ErrorObject { code, message: method.into(), data: Some(Json::new(&value)) },
                },
            };
            let text = message.encode();
            prop_assert_eq!(decode(&text, Limits::default()), Ok(Batch::Single(message)));
        }

        #[test]
        fn arbitrary_text_never_panics_and_what_decodes_re_decodes(text in "\\PC{0,80}") {
            if let Ok(batch) = decode(&text, Limits::default()) {
                let again = batch.encode();
                prop_assert_eq!(decode(&again, Limits::default()), Ok(batch));
            }
        }
    }
}
