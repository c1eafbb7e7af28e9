//! What the adapter reports about its transport: frames, closes, dial failures.

use std::time::Duration;

use bytes::Bytes;

use crate::payload::Text;

/// One WebSocket frame, either direction.
///
/// Close frames are not frames here: the adapter reports an inbound close
/// with [`Session::handle_transport_closed`](crate::Session::handle_transport_closed)
/// and carries out [`Action::Close`](crate::Action::Close) for outbound ones.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A text message; the bytes are UTF-8.
    Text(Text),
    /// A binary message.
    Binary(Bytes),
    /// A ping. The transport answers pings itself (tungstenite does); the
    /// session only counts them as proof of life.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
}

impl Frame {
    /// Bytes of application data the frame carries.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
        }
    }

    /// True when the frame carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Frame {
    // Frames carry user data; show their kind and size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Frame::Text(_) => "Text",
            Frame::Binary(_) => "Binary",
            Frame::Ping(_) => "Ping",
            Frame::Pong(_) => "Pong",
        };
        write!(f, "{kind}({} bytes)", self.len())
    }
}

/// A close frame's code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The reason text (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// A close frame.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// Why a dial did not produce an open WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialFailure {
    /// DNS, TCP, TLS or any other IO error before the upgrade answered.
    Io(String),
    /// The adapter gave up waiting. (The session's own connect timeout does
    /// not need reporting: the session already knows.)
    Timeout,
    /// TLS refused the server's certificate (unknown issuer, expired, wrong
    /// name, ...): the text is the TLS library's reason. What follows is the
    /// [`ClosePolicy`](crate::ClosePolicy)'s certificate rule (terminal
    /// `certificate_rejected` by default: retrying cannot fix a certificate).
    Certificate(String),
    /// The server answered the upgrade with an HTTP status other than 101.
    Http {
        /// The status code.
        status: u16,
        /// The parsed `Retry-After` header, when there was one.
        retry_after: Option<Duration>,
    },
}

impl DialFailure {
    /// An HTTP rejection.
    pub fn http(status: u16, retry_after: Option<Duration>) -> Self {
        DialFailure::Http {
            status,
            retry_after,
        }
    }

    /// A short description for events and logs.
    pub fn describe(&self) -> String {
        match self {
            DialFailure::Io(e) => format!("io error: {e}"),
            DialFailure::Certificate(e) => format!("certificate rejected: {e}"),
            DialFailure::Timeout => "dial timed out".to_owned(),
            DialFailure::Http { status, .. } => format!("HTTP {status}"),
        }
    }
}

/// Which of the transport's size limits an inbound message broke; see
/// [`Session::handle_message_too_large`](crate::Session::handle_message_too_large).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeLimit {
    /// The limit on a whole message (all its fragments together).
    Message,
    /// The limit on a single frame.
    Frame,
}

impl SizeLimit {
    /// The limit's name in snake case (`"message"`, `"frame"`).
    pub fn name(self) -> &'static str {
        match self {
            SizeLimit::Message => "message",
            SizeLimit::Frame => "frame",
        }
    }
}

/// Parses an HTTP `Retry-After` value given in seconds (the only form a
/// reconnecting client can use without a wall clock). HTTP-dates give `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("99999999999"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn frame_debug_shows_no_payload() {
        let f = Frame::Text(Text::from("password=1"));
        assert_eq!(format!("{f:?}"), "Text(10 bytes)");
    }
}
