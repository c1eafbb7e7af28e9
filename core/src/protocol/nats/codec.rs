//! Codec for the NATS client protocol (text control lines ending in CRLF,
//! length-prefixed payloads), as spoken over a WebSocket.
//!
//! The protocol is a byte stream: one WebSocket message may hold several
//! operations, and one operation may span several messages. [`Decoder`]
//! takes each message with [`Decoder::push`] and hands out whole server
//! operations ([`ServerOp`]) with [`Decoder::next_op`]. [`ClientOp::encode`]
//! writes what a client sends.
//!
//! Decoding copies as little as the stream allows: when a message holds
//! whole operations (the usual case), subjects, headers and payloads are
//! slices of that message; only an operation split across messages is
//! reassembled into a buffer of the decoder's own. [`Limits`] bound the
//! control line and the payload, checked before waiting for the bytes, so
//! a peer cannot make the decoder hold more than one operation within the
//! limits plus the rest of the message it last pushed.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::close_policy::CloseRule;
use crate::event::TerminalReason;
use crate::payload::Text;
use crate::secret::AuthToken;

/// Upper bounds the decoder enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line (the text before CRLF), in bytes. Default
    /// 64 KiB: INFO lists a cluster's URLs and can be long.
    pub max_control_line: usize,
    /// Largest MSG/HMSG payload (headers included), in bytes. Default 1 MiB,
    /// the server's own default; raise it to the `max_payload` the server
    /// announces with [`Decoder::set_max_payload`].
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: 64 * 1024,
            max_payload: 1024 * 1024,
        }
    }
}

/// Why the bytes from the server are not the NATS protocol.
///
/// The stream is out of step after any of these: close the connection and
/// reconnect (a fresh connection needs a fresh or [reset](Decoder::reset)
/// decoder).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No CRLF within [`Limits::max_control_line`] bytes.
    #[error("control line longer than {limit} bytes")]
    ControlLineTooLong {
        /// The limit.
        limit: usize,
    },
    /// A line ended in LF without CR before it.
    #[error("line ends in LF without CR")]
    BareLf,
    /// A control line or header block is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// An operation name the protocol does not define (first 32 bytes).
    #[error("unknown operation {0:?}")]
    UnknownOp(String),
    /// An operation with the wrong arguments or framing.
    #[error("malformed {op}: {why}")]
    Malformed {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A payload over [`Limits::max_payload`].
    #[error("{op} payload of {len} bytes is over the limit of {limit}")]
    PayloadTooLarge {
        /// The operation.
        op: &'static str,
        /// The announced length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// INFO's JSON does not parse or lacks a required field.
    #[error("malformed INFO: {0}")]
    Info(String),
    /// An HMSG header block that is not `NATS/1.0` and `name: value` lines.
    #[error("malformed headers: {0}")]
    Headers(&'static str),
}

/// Why a client operation cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A subject, reply subject or queue group that is empty or holds
    /// whitespace or control characters.
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    /// A header name that is empty or holds `:`, whitespace or control
    /// characters, or a value with CR or LF.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
}

/// What the server says about itself (INFO), on connect and again when
/// something changes (cluster membership, lame duck mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The server's unique id.
    pub server_id: String,
    /// The server's name.
    #[serde(default)]
    pub server_name: String,
    /// The server's version.
    pub version: String,
    /// Protocol level; 1 and above send INFO updates.
    #[serde(default)]
    pub proto: i64,
    /// Host the server listens on.
    #[serde(default)]
    pub host: String,
    /// Port the server listens on.
    #[serde(default)]
    pub port: u16,
    /// Whether the server accepts HPUB and sends HMSG.
    #[serde(default)]
    pub headers: bool,
    /// Largest payload the server accepts from this client; publishing more
    /// gets `-ERR 'Maximum Payload Violation'` and a closed connection.
    pub max_payload: u64,
    /// Whether CONNECT must carry credentials.
    #[serde(default)]
    pub auth_required: bool,
    /// Whether the server requires TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Other servers of the cluster, `host:port`.
    #[serde(default)]
    pub connect_urls: Vec<String>,
    /// Other servers' WebSocket listeners.
    #[serde(default)]
    pub ws_connect_urls: Vec<String>,
    /// The server entered lame duck mode: it will close every client soon,
    /// so leave (within a spread window) and reconnect elsewhere or later.
    #[serde(default)]
    pub ldm: bool,
    /// The server's id for this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// A nonce to sign for NKey authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// How a `-ERR` affects the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrKind {
    /// The credentials were refused (`Authorization Violation`, user or
    /// account authentication expired or revoked): terminal, another
    /// attempt presents the same credentials.
    Credentials,
    /// The server is shedding load (`Slow Consumer`, `Maximum Connections
    /// Exceeded`): it closes the connection; come back on a growing ladder.
    Overloaded,
    /// Any other error the server closes the connection after (`Stale
    /// Connection`, `Authorization Timeout`, `Parser Error`, ...): reconnect.
    Closing,
    /// The server keeps the connection (`Invalid Subject`, `Permissions
    /// Violation for ...`): report it, stay connected.
    KeepsConnection,
}

impl ErrKind {
    /// Classifies the text of a `-ERR` (quotes already removed).
    pub fn of(message: &str) -> ErrKind {
        let lower = message.trim().to_ascii_lowercase();
        let starts = |p: &str| lower.starts_with(p);
        if starts("authorization violation")
            || starts("user authentication expired")
            || starts("user authentication revoked")
            || starts("account authentication expired")
        {
            ErrKind::Credentials
        } else if starts("slow consumer") || starts("maximum connections exceeded") {
            ErrKind::Overloaded
        } else if starts("invalid subject") || starts("permissions violation") {
            ErrKind::KeepsConnection
        } else {
            ErrKind::Closing
        }
    }

    /// The row this error adds to the close-policy table; `None` when the
    /// connection stays up.
    pub fn close_rule(self) -> Option<CloseRule> {
        match self {
            ErrKind::Credentials => Some(CloseRule::Terminal(TerminalReason::Unauthorized)),
            ErrKind::Overloaded => Some(CloseRule::StepLadder { honour_hint: false }),
            ErrKind::Closing => Some(CloseRule::Reconnect { honour_hint: false }),
            ErrKind::KeepsConnection => None,
        }
    }
}

/// A `-ERR` from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// The message, without the single quotes around it.
    pub message: Text,
    /// What it means for the connection.
    pub kind: ErrKind,
}

/// The header block of an HMSG: `NATS/1.0`, an optional status, then
/// `name: value` lines. Names keep their case and may repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    // The block as received, final CRLF CRLF included; validated.
    block: Text,
}

const HEADER_VERSION: &str = "NATS/1.0";

impl Headers {
    /// Checks a header block (as sent, ending in CRLF CRLF).
    ///
    /// # Errors
    /// [`DecodeError::Headers`] naming what is wrong.
    pub fn parse(block: Text) -> Result<Self, DecodeError> {
        let s = block.as_str();
        let body = s
            .strip_suffix("\r\n\r\n")
            .ok_or(DecodeError::Headers("does not end in CRLF CRLF"))?;
        let mut lines = body.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let rest = status_line
            .strip_prefix(HEADER_VERSION)
            .ok_or(DecodeError::Headers("does not start with NATS/1.0"))?;
        if !rest.is_empty() {
            let rest = rest
                .strip_prefix(' ')
                .ok_or(DecodeError::Headers("bad status line"))?;
            let code = rest.get(..3).ok_or(DecodeError::Headers("bad status"))?;
            if !code.bytes().all(|b| b.is_ascii_digit())
                || !matches!(rest.as_bytes().get(3), None | Some(b' '))
            {
                return Err(DecodeError::Headers("bad status"));
            }
        }
        if status_line.contains(['\r', '\n']) {
            return Err(DecodeError::Headers("stray CR or LF"));
        }
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or(DecodeError::Headers("line without ':'"))?;
            if !valid_header_name(name) {
                return Err(DecodeError::Headers("bad header name"));
            }
            if value.contains(['\r', '\n']) {
                return Err(DecodeError::Headers("stray CR or LF"));
            }
        }
        Ok(Headers { block })
    }

    /// Builds the block for `headers` (with no status).
    ///
    /// # Errors
    /// [`EncodeError::InvalidHeader`] for a bad name or value.
    pub fn build(headers: &[(&str, &str)]) -> Result<Self, EncodeError> {
        let mut block = String::from(HEADER_VERSION);
        block.push_str("\r\n");
        for (name, value) in headers {
            if !valid_header_name(name) || value.contains(['\r', '\n']) {
                return Err(EncodeError::InvalidHeader(format!("{name}: {value}")));
            }
            block.push_str(name);
            block.push_str(": ");
            block.push_str(value);
            block.push_str("\r\n");
        }
        block.push_str("\r\n");
        Ok(Headers {
            block: Text::from(block),
        })
    }

    /// The status code, if the status line has one (503: no responders).
    pub fn status(&self) -> Option<u16> {
        let line = self
            .status_line()
            .strip_prefix(HEADER_VERSION)?
            .trim_start();
        line.get(..3)?.parse().ok()
    }

    /// The status description after the code, if any.
    pub fn description(&self) -> Option<&str> {
        let line = self
            .status_line()
            .strip_prefix(HEADER_VERSION)?
            .trim_start();
        line.get(3..).map(str::trim).filter(|d| !d.is_empty())
    }

    /// Every `(name, value)` pair in order, values trimmed.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let s = self.block.as_str();
        let body = s.strip_suffix("\r\n\r\n").unwrap_or(s);
        body.split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n, v.trim()))
    }

    /// The first value of header `name` (names compare exactly).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The block as sent on the wire.
    pub fn as_text(&self) -> &Text {
        &self.block
    }

    fn status_line(&self) -> &str {
        self.block.as_str().split("\r\n").next().unwrap_or_default()
    }
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn valid_subject(subject: &str) -> bool {
    !subject.is_empty() && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A message delivered to a subscription (MSG, or HMSG with headers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    /// The subject it was published to.
    pub subject: Text,
    /// The subscription it was delivered for. Numeric, as [`ClientOp::Sub`]
    /// writes them; a server echoing anything else is a protocol error.
    pub sid: u64,
    /// Where to send a reply, for requests.
    pub reply: Option<Text>,
    /// The headers, for HMSG.
    pub headers: Option<Headers>,
    /// The payload (without the headers).
    pub payload: Bytes,
}

/// An operation the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerOp {
    /// INFO: on connect (answer with CONNECT) and on changes.
    Info(Box<Info>),
    /// MSG or HMSG.
    Msg(Msg),
    /// The server's keepalive: answer with PONG.
    Ping,
    /// The answer to our PING.
    Pong,
    /// `+OK`, only in verbose mode.
    Ok,
    /// `-ERR`.
    Err(ServerError),
}

/// Incremental parser of the server's byte stream.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    // The unparsed bytes: a message pushed whole while nothing was pending
    // stays `shared` (ops are slices of it); otherwise they collect in
    // `owned`. At most one of the two is non-empty.
    shared: Bytes,
    owned: BytesMut,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder for one connection.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            ..Decoder::default()
        }
    }

    /// Raises or lowers the payload limit, for example to the server's
    /// [`Info::max_payload`].
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.limits.max_payload = max_payload;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends the next WebSocket message's bytes. Then call
    /// [`Decoder::next_op`] until it returns `Ok(None)`.
    pub fn push(&mut self, data: Bytes) {
        if self.shared.is_empty() && self.owned.is_empty() {
            self.shared = data;
            return;
        }
        if !self.shared.is_empty() {
            self.owned.extend_from_slice(&self.shared);
            self.shared = Bytes::new();
        }
        self.owned.extend_from_slice(&data);
    }

    /// Bytes received and not yet returned as operations.
    pub fn buffered(&self) -> usize {
        self.shared.len() + self.owned.len()
    }

    /// Forgets everything buffered and any error, for a new connection.
    pub fn reset(&mut self) {
        self.shared = Bytes::new();
        self.owned = BytesMut::new();
        self.failed = None;
    }

    /// The next whole operation; `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A [`DecodeError`] when the stream breaks the protocol or the limits;
    /// the decoder then keeps returning it until [`Decoder::reset`].
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.parse();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn view(&self) -> &[u8] {
        if self.shared.is_empty() {
            &self.owned
        } else {
            &self.shared
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        if self.shared.is_empty() {
            self.owned.split_to(n).freeze()
        } else {
            self.shared.split_to(n)
        }
    }

    fn parse(&mut self) -> Result<Option<ServerOp>, DecodeError> {
        let limits = self.limits;
        let view = self.view();
        // Saturating: a caller may give `usize::MAX` for "no limit".
        let window = &view[..view.len().min(limits.max_control_line.saturating_add(2))];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            if view.len() > limits.max_control_line.saturating_add(1) {
                return Err(DecodeError::ControlLineTooLong {
                    limit: limits.max_control_line,
                });
            }
            return Ok(None);
        };
        if lf == 0 || view[lf - 1] != b'\r' {
            return Err(DecodeError::BareLf);
        }
        let line_len = lf - 1;
        if line_len > limits.max_control_line {
            return Err(DecodeError::ControlLineTooLong {
                limit: limits.max_control_line,
            });
        }
        let line = std::str::from_utf8(&view[..line_len]).map_err(|_| DecodeError::NotUtf8)?;
        // Only MSG and HMSG have a fixed field count; INFO's JSON and
        // -ERR's text may hold any number of spaces, so the rest of the line
        // is split only for the former.
        let mut all = fields(line);
        let (op_start, op_end) = all.next().unwrap_or((0, 0));
        let op = &line[op_start..op_end];
        let rest_of_line = &line[op_end..];
        let mut tokens: [Range<usize>; 7] = std::array::from_fn(|_| 0..0);
        tokens[0] = op_start..op_end;
        let mut count = 1;
        let fixed = ["MSG", "HMSG", "PING", "PONG", "+OK"];
        if !fixed.iter().any(|f| op.eq_ignore_ascii_case(f)) {
            drop(all);
        } else {
            for (start, end) in all {
                if count == tokens.len() {
                    return Err(DecodeError::Malformed {
                        op: "control line",
                        why: "too many fields",
                    });
                }
                tokens[count] = start..end;
                count += 1;
            }
        }
        let args = &tokens[1..count];
        let after_line = lf + 1;
        let simple = |op: &'static str, value: ServerOp| {
            if args.is_empty() {
                Ok((value, after_line))
            } else {
                Err(DecodeError::Malformed {
                    op,
                    why: "unexpected arguments",
                })
            }
        };
        let (value, consumed) = if op.eq_ignore_ascii_case("MSG") || op.eq_ignore_ascii_case("HMSG")
        {
            return self.parse_msg(line_len, &tokens[..count]);
        } else if op.eq_ignore_ascii_case("PING") {
            simple("PING", ServerOp::Ping)?
        } else if op.eq_ignore_ascii_case("PONG") {
            simple("PONG", ServerOp::Pong)?
        } else if op.eq_ignore_ascii_case("+OK") {
            simple("+OK", ServerOp::Ok)?
        } else if op.eq_ignore_ascii_case("-ERR") {
            let rest = rest_of_line.trim_matches([' ', '\t']);
            let message = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .unwrap_or(rest);
            let kind = ErrKind::of(message);
            let start = message.as_ptr() as usize - line.as_ptr() as usize;
            let range = start..start + message.len();
            let frame = self.take(after_line);
            let message = text(&frame, range)?;
            return Ok(Some(ServerOp::Err(ServerError { message, kind })));
        } else if op.eq_ignore_ascii_case("INFO") {
            let json = rest_of_line.trim_matches([' ', '\t']);
            let info: Info =
                serde_json::from_str(json).map_err(|e| DecodeError::Info(e.to_string()))?;
            (ServerOp::Info(Box::new(info)), after_line)
        } else {
            return Err(DecodeError::UnknownOp(op.chars().take(32).collect()));
        };
        self.take(consumed);
        Ok(Some(value))
    }

    /// MSG `subject sid [reply] len` or HMSG `subject sid [reply] hlen len`.
    fn parse_msg(
        &mut self,
        line_len: usize,
        tokens: &[Range<usize>],
    ) -> Result<Option<ServerOp>, DecodeError> {
        let view = self.view();
        let line = std::str::from_utf8(&view[..line_len]).map_err(|_| DecodeError::NotUtf8)?;
        let headers = tokens[0].len() == 4;
        let op = if headers { "HMSG" } else { "MSG" };
        let counts = if headers { 5..=6 } else { 4..=5 };
        if !counts.contains(&tokens.len()) {
            return Err(DecodeError::Malformed {
                op,
                why: "wrong number of fields",
            });
        }
        let field = |i: usize| &line[tokens[i].clone()];
        let number = |i: usize, why: &'static str| {
            let s = field(i);
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecodeError::Malformed { op, why });
            }
            s.parse::<u64>()
                .map_err(|_| DecodeError::Malformed { op, why })
        };
        let sid = number(2, "sid is not a number")?;
        let last = tokens.len() - 1;
        let total = number(last, "length is not a number")?;
        let header_len = if headers {
            let h = number(last - 1, "header length is not a number")?;
            if h > total {
                return Err(DecodeError::Malformed {
                    op,
                    why: "header length over total length",
                });
            }
            Some(h)
        } else {
            None
        };
        let reply = (tokens.len() == if headers { 6 } else { 5 }).then(|| tokens[3].clone());
        if total > self.limits.max_payload as u64 {
            return Err(DecodeError::PayloadTooLarge {
                op,
                len: total,
                limit: self.limits.max_payload,
            });
        }
        // Both fit in usize: they are at most max_payload.
        let total = total as usize;
        let body = line_len + 2;
        // Saturating: with a `usize::MAX` payload limit the sum can
        // overflow, and a buffer that long never arrives anyway.
        let needed = body.saturating_add(total).saturating_add(2);
        if view.len() < needed {
            return Ok(None);
        }
        if &view[body + total..needed] != b"\r\n" {
            return Err(DecodeError::Malformed {
                op,
                why: "payload not followed by CRLF",
            });
        }
        let subject = tokens[1].clone();
        let frame = self.take(needed);
        let header_len = header_len.map(|h| h as usize).unwrap_or(0);
        let headers = if headers {
            Some(Headers::parse(text(&frame, body..body + header_len)?)?)
        } else {
            None
        };
        Ok(Some(ServerOp::Msg(Msg {
            subject: text(&frame, subject)?,
            sid,
            reply: reply.map(|r| text(&frame, r)).transpose()?,
            headers,
            payload: frame.slice(body + header_len..body + total),
        })))
    }
}

/// Byte ranges of the space- or tab-separated fields of `line`.
fn fields(line: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = line.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        if i == bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        Some((start, i))
    })
}

fn text(frame: &Bytes, range: Range<usize>) -> Result<Text, DecodeError> {
    Text::from_utf8(frame.slice(range)).map_err(|_| DecodeError::NotUtf8)
}

impl ServerOp {
    /// Writes the operation as a server would (for test servers and the
    /// round-trip tests); the decoder turns it back into an equal value.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ServerOp::Info(info) => {
                out.put_slice(b"INFO ");
                // A struct of strings, numbers and bools always serializes.
                out.put_slice(serde_json::to_string(info).unwrap_or_default().as_bytes());
                out.put_slice(b"\r\n");
            }
            ServerOp::Msg(msg) => {
                let header_len = msg.headers.as_ref().map_or(0, |h| h.as_text().len());
                out.put_slice(if msg.headers.is_some() {
                    b"HMSG "
                } else {
                    b"MSG "
                });
                out.put_slice(msg.subject.as_bytes());
                out.put_slice(format!(" {}", msg.sid).as_bytes());
                if let Some(reply) = &msg.reply {
                    out.put_u8(b' ');
                    out.put_slice(reply.as_bytes());
                }
                if msg.headers.is_some() {
                    out.put_slice(format!(" {header_len}").as_bytes());
                }
                out.put_slice(format!(" {}\r\n", header_len + msg.payload.len()).as_bytes());
                if let Some(h) = &msg.headers {
                    out.put_slice(h.as_text().as_bytes());
                }
                out.put_slice(&msg.payload);
                out.put_slice(b"\r\n");
            }
            ServerOp::Ping => out.put_slice(b"PING\r\n"),
            ServerOp::Pong => out.put_slice(b"PONG\r\n"),
            ServerOp::Ok => out.put_slice(b"+OK\r\n"),
            ServerOp::Err(e) => {
                out.put_slice(b"-ERR '");
                out.put_slice(e.message.as_bytes());
                out.put_slice(b"'\r\n");
            }
        }
    }
}

/// Credentials for CONNECT. Debug output never shows a password or token.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: AuthToken,
    },
    /// A token (`auth_token`).
    Token(AuthToken),
}

/// What the client says in CONNECT, beyond the fixed choices (not
/// verbose, not pedantic, headers on, protocol 1).
#[derive(Clone, Debug, Default)]
pub struct Connect {
    /// The credentials.
    pub credentials: Credentials,
    /// A name for this connection in the server's monitoring.
    pub name: Option<String>,
    /// Ask for a 503 status message instead of silence when a request has
    /// no responders.
    pub no_responders: bool,
}

#[derive(Serialize)]
struct ConnectJson<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    headers: bool,
    no_responders: bool,
    lang: &'static str,
    version: &'static str,
    protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<&'a str>,
}

/// An operation the client sends.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum ClientOp<'a> {
    /// CONNECT: the answer to the first INFO.
    Connect(&'a Connect),
    /// PUB: publish `payload` to `subject`.
    Pub {
        /// Where to publish.
        subject: &'a str,
        /// Where replies go, for requests.
        reply: Option<&'a str>,
        /// The payload.
        payload: &'a [u8],
    },
    /// HPUB: publish with headers.
    HPub {
        /// Where to publish.
        subject: &'a str,
        /// Where replies go, for requests.
        reply: Option<&'a str>,
        /// The headers.
        headers: &'a Headers,
        /// The payload.
        payload: &'a [u8],
    },
    /// SUB: subscribe `subject` (optionally in a queue group) as `sid`.
    Sub {
        /// Subject, wildcards allowed.
        subject: &'a str,
        /// Queue group: one member of the group gets each message.
        queue: Option<&'a str>,
        /// The client's id for this subscription; MSG carries it back.
        sid: u64,
    },
    /// UNSUB: end subscription `sid`, now or after `max` more messages.
    Unsub {
        /// The subscription.
        sid: u64,
        /// Messages to receive before the server ends it.
        max: Option<u64>,
    },
    /// PING: the server answers PONG.
    Ping,
    /// PONG: the answer to the server's PING.
    Pong,
}

impl ClientOp<'_> {
    /// Appends the operation to `out`.
    ///
    /// # Errors
    /// [`EncodeError::InvalidSubject`] for a subject, reply or queue group
    /// that would break the control line; nothing is written then.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let check = |s: &str| {
            if valid_subject(s) {
                Ok(())
            } else {
                Err(EncodeError::InvalidSubject(s.to_owned()))
            }
        };
        match *self {
            ClientOp::Connect(connect) => {
                let (user, pass, auth_token) = match &connect.credentials {
                    Credentials::None => (None, None, None),
                    Credentials::UserPassword { user, password } => {
                        (Some(user.as_str()), Some(password.expose()), None)
                    }
                    Credentials::Token(token) => (None, None, Some(token.expose())),
                };
                let json = ConnectJson {
                    verbose: false,
                    pedantic: false,
                    tls_required: false,
                    headers: true,
                    no_responders: connect.no_responders,
                    lang: "rust",
                    version: env!("CARGO_PKG_VERSION"),
                    protocol: 1,
                    name: connect.name.as_deref(),
                    user,
                    pass,
                    auth_token,
                };
                out.put_slice(b"CONNECT ");
                // Strings and bools always serialize.
                out.put_slice(serde_json::to_string(&json).unwrap_or_default().as_bytes());
                out.put_slice(b"\r\n");
            }
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => {
                check(subject)?;
                reply.map(check).transpose()?;
                put_line(out, &["PUB", subject], reply, &[len(payload.len())]);
                out.put_slice(payload);
                out.put_slice(b"\r\n");
            }
            ClientOp::HPub {
                subject,
                reply,
                headers,
                payload,
            } => {
                check(subject)?;
                reply.map(check).transpose()?;
                let h = headers.as_text();
                put_line(
                    out,
                    &["HPUB", subject],
                    reply,
                    &[len(h.len()), len(h.len() + payload.len())],
                );
                out.put_slice(h.as_bytes());
                out.put_slice(payload);
                out.put_slice(b"\r\n");
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                check(subject)?;
                queue.map(check).transpose()?;
                put_line(out, &["SUB", subject], queue, &[sid]);
            }
            ClientOp::Unsub { sid, max } => match max {
                Some(max) => out.put_slice(format!("UNSUB {sid} {max}\r\n").as_bytes()),
                None => out.put_slice(format!("UNSUB {sid}\r\n").as_bytes()),
            },
            ClientOp::Ping => out.put_slice(b"PING\r\n"),
            ClientOp::Pong => out.put_slice(b"PONG\r\n"),
        }
        Ok(())
    }
}

fn len(n: usize) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn put_line(out: &mut BytesMut, head: &[&str], optional: Option<&str>, numbers: &[u64]) {
    out.put_slice(head.join(" ").as_bytes());
    if let Some(o) = optional {
        out.put_u8(b' ');
        out.put_slice(o.as_bytes());
    }
    for n in numbers {
        out.put_slice(format!(" {n}").as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Fuzz entry point: `data` split into WebSocket-sized chunks (sizes drawn
/// from its first bytes) decodes exactly like `data` pushed whole, never
/// panics, never buffers more than one operation within the limits, and
/// every operation re-encodes to bytes that decode to an equal operation.
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub fn fuzz_decode(data: &[u8]) {
    let limits = Limits {
        max_control_line: 256,
        max_payload: 1024,
    };
    let bound = limits.max_control_line + 2 + limits.max_payload + 2;
    let (sizes, stream) = data.split_at(data.len().min(4));
    let run = |chunks: &mut dyn Iterator<Item = Bytes>| {
        let mut d = Decoder::new(limits);
        let mut ops = Vec::new();
        for chunk in chunks {
            d.push(chunk);
            loop {
                match d.next_op() {
                    Ok(Some(op)) => ops.push(op),
                    Ok(None) => break,
                    Err(e) => return (ops, Some(e)),
                }
            }
            assert!(d.buffered() <= bound, "{} bytes buffered", d.buffered());
        }
        (ops, None)
    };
    let whole = Bytes::copy_from_slice(stream);
    let expected = run(&mut std::iter::once(whole.clone()));
    let mut at = 0;
    let mut i = 0;
    let mut split = std::iter::from_fn(|| {
        if at >= whole.len() {
            return None;
        }
        let size = usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(7)) + 1;
        i += 1;
        let end = whole.len().min(at + size);
        let chunk = whole.slice(at..end);
        at = end;
        Some(chunk)
    });
    assert_eq!(run(&mut split), expected, "splitting changed the result");
    for op in expected.0 {
        let mut out = BytesMut::new();
        op.encode(&mut out);
        let mut d = Decoder::new(Limits {
            max_control_line: 64 * 1024,
            max_payload: 64 * 1024,
        });
        d.push(out.freeze());
        assert_eq!(d.next_op(), Ok(Some(op)));
        assert_eq!(d.next_op(), Ok(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut Decoder) -> Result<Vec<ServerOp>, DecodeError> {
        let mut ops = Vec::new();
        while let Some(op) = decoder.next_op()? {
            ops.push(op);
        }
        Ok(ops)
    }

    fn encode(op: ClientOp<'_>) -> String {
        let mut out = BytesMut::new();
        op.encode(&mut out).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(out.to_vec()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn decodes_a_message_holding_several_ops_without_copying() {
        let input = Bytes::from_static(
            b"INFO {\"server_id\":\"S\",\"version\":\"2.9.10\",\"max_payload\":1048576,\"headers\":true,\"ldm\":true,\"connect_urls\":[\"127.0.0.1:4222\"]}\r\n\
              PING\r\npong\r\n+OK\r\nmsg foo.bar  7\tinbox.1 5\r\nhello\r\n\
              HMSG foo 9 34 45\r\nNATS/1.0\r\nFoodGroup: vegetable\r\n\r\nHello World\r\n\
              -ERR 'Authorization Violation'\r\n",
        );
        let mut d = Decoder::new(Limits::default());
        d.push(input.clone());
        let ops = decode_all(&mut d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ops.len(), 7);
        match &ops[0] {
            ServerOp::Info(info) => {
                assert!(info.ldm && info.headers);
                assert_eq!(info.max_payload, 1_048_576);
                assert_eq!(info.connect_urls, ["127.0.0.1:4222"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ops[1..4], [ServerOp::Ping, ServerOp::Pong, ServerOp::Ok]);
        match &ops[4] {
            ServerOp::Msg(m) => {
                assert_eq!(m.subject, "foo.bar");
                assert_eq!(m.sid, 7);
                assert_eq!(m.reply.as_ref().map(Text::as_str), Some("inbox.1"));
                assert_eq!(&m.payload[..], b"hello");
                let inside = input.as_ptr_range();
                assert!(
                    inside.contains(&m.payload.as_ptr()),
                    "payload is a slice of the input"
                );
            }
            other => panic!("{other:?}"),
        }
        match &ops[5] {
            ServerOp::Msg(m) => {
                let h = m.headers.as_ref().unwrap_or_else(|| panic!("headers"));
                assert_eq!(h.get("FoodGroup"), Some("vegetable"));
                assert_eq!(h.status(), None);
                assert_eq!(&m.payload[..], b"Hello World");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ops[6],
            ServerOp::Err(ServerError {
                message: Text::from("Authorization Violation"),
                kind: ErrKind::Credentials,
            })
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn an_op_split_across_messages_waits_for_the_rest() {
        let mut d = Decoder::new(Limits::default());
        d.push(Bytes::from_static(b"MSG a 1 5\r\nhel"));
        assert_eq!(d.next_op(), Ok(None));
        d.push(Bytes::from_static(b"lo\r"));
        assert_eq!(d.next_op(), Ok(None));
        d.push(Bytes::from_static(b"\nPI"));
        assert!(matches!(d.next_op(), Ok(Some(ServerOp::Msg(m))) if &m.payload[..] == b"hello"));
        assert_eq!(d.next_op(), Ok(None));
        d.push(Bytes::from_static(b"NG\r\n"));
        assert_eq!(d.next_op(), Ok(Some(ServerOp::Ping)));
    }

    #[test]
    fn headers_status_line_is_parsed() {
        let mut d = Decoder::new(Limits::default());
        d.push(Bytes::from_static(
            b"HMSG _INBOX.x 2 30 30\r\nNATS/1.0 503 No Responders\r\n\r\n\r\n",
        ));
        match d.next_op() {
            Ok(Some(ServerOp::Msg(m))) => {
                let h = m.headers.unwrap_or_else(|| panic!("headers"));
                assert_eq!(h.status(), Some(503));
                assert_eq!(h.description(), Some("No Responders"));
                assert!(m.payload.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limits_fail_before_the_bytes_arrive() {
        let limits = Limits {
            max_control_line: 16,
            max_payload: 8,
        };
        let mut d = Decoder::new(limits);
        d.push(Bytes::from_static(b"MSG a 1 9\r\n"));
        assert!(matches!(
            d.next_op(),
            Err(DecodeError::PayloadTooLarge { len: 9, .. })
        ));
        assert!(d.next_op().is_err(), "an error sticks until reset");
        d.reset();
        d.push(Bytes::from(vec![b'x'; 18]));
        assert_eq!(
            d.next_op(),
            Err(DecodeError::ControlLineTooLong { limit: 16 })
        );
        d.reset();
        d.push(Bytes::from(vec![b'x'; 17]));
        assert_eq!(d.next_op(), Ok(None), "CR may still come");
    }

    /// Regression: `usize::MAX` limits ("no limit") used to overflow
    /// `max_control_line + 2` and the payload's end.
    #[test]
    fn unbounded_limits_do_not_overflow() {
        let limits = Limits {
            max_control_line: usize::MAX,
            max_payload: usize::MAX,
        };
        let mut d = Decoder::new(limits);
        d.push(Bytes::from_static(b"PING\r\nMSG a 1 3\r\nab"));
        assert_eq!(d.next_op(), Ok(Some(ServerOp::Ping)));
        assert_eq!(d.next_op(), Ok(None), "the payload is not all here");
        d.push(Bytes::from_static(b"c\r\n"));
        assert!(matches!(d.next_op(), Ok(Some(ServerOp::Msg(m))) if &m.payload[..] == b"abc"));
        d.reset();
        d.push(Bytes::from(format!("MSG a 1 {}\r\n", u64::MAX)));
        assert_eq!(d.next_op(), Ok(None), "waits for a payload it cannot get");
        d.reset();
        d.push(Bytes::from(vec![b'x'; 100]));
        assert_eq!(d.next_op(), Ok(None), "no line limit: CR may still come");
    }

    /// Regression (decode_nats fuzz finding): INFO JSON and -ERR text may
    /// hold any number of spaces, and a line may start with whitespace.
    #[test]
    fn free_text_lines_are_not_split_into_fields() {
        let mut d = Decoder::new(Limits::default());
        d.push(Bytes::from_static(
            b"INFO { \"server_id\" : \"a b c d e f g h\" , \"version\" : \"2\" , \"max_payload\" : 9 }\r\n\
              \t-ERR #'Auth a b c d e f g h\r\n",
        ));
        assert!(
            matches!(d.next_op(), Ok(Some(ServerOp::Info(i))) if i.server_id == "a b c d e f g h")
        );
        assert!(
            matches!(d.next_op(), Ok(Some(ServerOp::Err(e))) if e.message == "#'Auth a b c d e f g h")
        );
        let crash = b"q\t\t\t\t-ERR #'AuthoRizationiatVo li\x01\x01\x01\x01HMSG _INBOX.x 2 `0 30\r\n\
                      NATS/1.0 503 No Responders\r\n\r\n\r\non'\r\n-ERR 'Perm\0\0\0\0\0\0t\x14oo'\r\n";
        fuzz_decode(crash);
    }

    #[test]
    fn malformed_streams_are_errors() {
        let cases: [&[u8]; 12] = [
            b"PING\n",
            b"HELLO\r\n",
            b"PING x\r\n",
            b"MSG a 1\r\n",
            b"MSG a x 1\r\na\r\n",
            b"MSG a 1 -1\r\n",
            b"MSG a 1 1\r\nab\r\n",
            b"HMSG a 1 9 3\r\n",
            b"HMSG a 1 3 3\r\nabc\r\n",
            b"HMSG a 1 15 15\r\nNATS/1.0\r\nx\r\n\r\n\r\n",
            b"INFO {}\r\n",
            b"MSG \xff 1 1\r\na\r\n",
        ];
        for case in cases {
            let mut d = Decoder::new(Limits::default());
            d.push(Bytes::from_static(case));
            assert!(d.next_op().is_err(), "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn err_messages_are_classified_by_meaning() {
        assert_eq!(ErrKind::of("Authorization Violation"), ErrKind::Credentials);
        assert_eq!(
            ErrKind::of("User Authentication Revoked"),
            ErrKind::Credentials
        );
        assert_eq!(ErrKind::of("Slow Consumer"), ErrKind::Overloaded);
        assert_eq!(ErrKind::of("Stale Connection"), ErrKind::Closing);
        assert_eq!(ErrKind::of("Authorization Timeout"), ErrKind::Closing);
        assert_eq!(
            ErrKind::of("Permissions Violation for Publish to foo"),
            ErrKind::KeepsConnection
        );
        assert_eq!(ErrKind::of("Invalid Subject"), ErrKind::KeepsConnection);
        assert_eq!(
            ErrKind::Credentials.close_rule(),
            Some(CloseRule::Terminal(TerminalReason::Unauthorized))
        );
        assert_eq!(ErrKind::KeepsConnection.close_rule(), None);
    }

    #[test]
    fn client_ops_encode_as_the_protocol_writes_them() {
        assert_eq!(
            encode(ClientOp::Pub {
                subject: "a.b",
                reply: Some("in.1"),
                payload: b"hi"
            }),
            "PUB a.b in.1 2\r\nhi\r\n"
        );
        let headers = Headers::build(&[("Bar", "Baz")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            encode(ClientOp::HPub {
                subject: "FOO",
                reply: None,
                headers: &headers,
                payload: b"Hello NATS!"
            }),
            "HPUB FOO 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n"
        );
        assert_eq!(
            encode(ClientOp::Sub {
                subject: "x.>",
                queue: Some("q"),
                sid: 4
            }),
            "SUB x.> q 4\r\n"
        );
        assert_eq!(
            encode(ClientOp::Sub {
                subject: "x",
                queue: None,
                sid: 1
            }),
            "SUB x 1\r\n"
        );
        assert_eq!(
            encode(ClientOp::Unsub {
                sid: 4,
                max: Some(2)
            }),
            "UNSUB 4 2\r\n"
        );
        assert_eq!(encode(ClientOp::Unsub { sid: 4, max: None }), "UNSUB 4\r\n");
        let mut out = BytesMut::new();
        let bad = ClientOp::Pub {
            subject: "a b",
            reply: None,
            payload: b"",
        };
        assert!(matches!(
            bad.encode(&mut out),
            Err(EncodeError::InvalidSubject(_))
        ));
        assert!(out.is_empty());
        assert!(Headers::build(&[("a:b", "c")]).is_err());
        assert!(Headers::build(&[("a", "c\r\n")]).is_err());
    }

    #[test]
    fn connect_carries_credentials_but_debug_does_not() {
        let connect = Connect {
            credentials: Credentials::UserPassword {
                user: "u".into(),
                password: AuthToken::new("s3cret"),
            },
            name: Some("redial".into()),
            no_responders: true,
        };
        let line = encode(ClientOp::Connect(&connect));
        let json: serde_json::Value = serde_json::from_str(
            line.strip_prefix("CONNECT ")
                .and_then(|l| l.strip_suffix("\r\n"))
                .unwrap_or_else(|| panic!("{line}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["verbose"], false);
        assert_eq!(json["pedantic"], false);
        assert_eq!(json["headers"], true);
        assert_eq!(json["no_responders"], true);
        assert_eq!(json["protocol"], 1);
        assert_eq!(json["user"], "u");
        assert_eq!(json["pass"], "s3cret");
        assert!(!format!("{connect:?}").contains("s3cret"));
        let token = Connect {
            credentials: Credentials::Token(AuthToken::new("t0k")),
            ..Connect::default()
        };
        assert!(encode(ClientOp::Connect(&token)).contains(r#""auth_token":"t0k""#));
        assert!(!format!("{token:?}").contains("t0k"));
    }

    fn subject() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_*>.-]{1,16}"
    }

    fn server_op() -> impl Strategy<Value = ServerOp> {
        let msg = (
            subject(),
            any::<u64>(),
            proptest::option::of(subject()),
            proptest::option::of((
                proptest::collection::vec(("[A-Za-z-]{1,8}", "[ -~]{0,12}"), 0..3),
                proptest::option::of(100u16..600),
            )),
            proptest::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(subject, sid, reply, headers, payload)| {
                let headers = headers.map(|(pairs, status)| {
                    let mut block = String::from("NATS/1.0");
                    if let Some(s) = status {
                        block.push_str(&format!(" {s} Status"));
                    }
                    block.push_str("\r\n");
                    for (n, v) in pairs {
                        block.push_str(&format!("{n}:{v}\r\n"));
                    }
                    block.push_str("\r\n");
                    Headers::parse(Text::from(block)).unwrap_or_else(|e| panic!("{e}"))
                });
                ServerOp::Msg(Msg {
                    subject: Text::from(subject),
                    sid,
                    reply: reply.map(Text::from),
                    headers,
                    payload: Bytes::from(payload),
                })
            });
        let info = (
            "[a-zA-Z0-9 \"]{0,12}",
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec("[0-9.:]{1,12}", 0..3),
        )
            .prop_map(|(id, max_payload, ldm, urls)| {
                ServerOp::Info(Box::new(Info {
                    server_id: id,
                    version: "2.9.10".into(),
                    max_payload,
                    ldm,
                    connect_urls: urls,
                    ..Info::default()
                }))
            });
        let err = "[ -~]{0,24}".prop_map(|m| {
            let message = m.trim_matches([' ', '\t']).to_owned();
            let kind = ErrKind::of(&message);
            ServerOp::Err(ServerError {
                message: Text::from(message),
                kind,
            })
        });
        prop_oneof![
            4 => msg,
            1 => info,
            1 => err,
            1 => Just(ServerOp::Ping),
            1 => Just(ServerOp::Pong),
            1 => Just(ServerOp::Ok),
        ]
    }

    proptest! {
        #[test]
        fn server_ops_round_trip_however_the_stream_is_split(
            ops in proptest::collection::vec(server_op(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let mut stream = BytesMut::new();
            for op in &ops {
                op.encode(&mut stream);
            }
            let stream = stream.freeze();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = Decoder::new(Limits::default());
            let mut got = Vec::new();
            for pair in points.windows(2) {
                d.push(stream.slice(pair[0]..pair[1]));
                while let Some(op) = d.next_op().map_err(|e| TestCaseError::fail(e.to_string()))? {
                    got.push(op);
                }
            }
            prop_assert_eq!(got, ops);
            prop_assert_eq!(d.buffered(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
        ) {
            let limits = Limits { max_control_line: 32, max_payload: 32 };
            let mut d = Decoder::new(limits);
            for chunk in chunks {
                let len = chunk.len();
                d.push(Bytes::from(chunk));
                while let Ok(Some(_)) = d.next_op() {}
                if d.next_op().is_ok() {
                    // Waiting for more: never more than one op within the
                    // limits plus the last chunk.
                    prop_assert!(d.buffered() <= 32 + 2 + 32 + 2, "{} buffered after a {len}-byte chunk", d.buffered());
                }
            }
        }
    }
}
