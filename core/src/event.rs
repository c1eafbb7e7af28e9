//! Events: what the session tells the application.

use std::fmt;
use std::time::Duration;

use crate::call::{CallError, CallId};
use crate::headers::Headers;
use crate::payload::{Payload, Text};
use crate::protocol::ProtocolError;
use crate::transport::SizeLimit;

/// The connection's state as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Created, not yet asked to connect.
    Idle,
    /// Dialing for the first time.
    Connecting,
    /// Connected (for [`Wire`](crate::Wire): WELCOME received).
    Connected,
    /// Lost the connection (or never got one) and trying again.
    Reconnecting,
    /// The user asked to close; flushing what can be flushed.
    Closing,
    /// Finished; see [`Event::Closed`] for why. Nothing more happens.
    Closed,
}

impl State {
    /// The state's name in snake case (`"reconnecting"`).
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Reconnecting => "reconnecting",
            State::Closing => "closing",
            State::Closed => "closed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a session ended. [`TerminalReason::name`] gives the stable symbolic
/// name applications switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TerminalReason {
    /// Close 4001: the token's signature or format is wrong.
    InvalidToken,
    /// Close 4002 with no token provider to get a fresh one.
    TokenExpired,
    /// Close 4003: the token does not grant the channel.
    ChannelNotAuthorized,
    /// Close 4012: the account is suspended.
    AccountSuspended,
    /// Close 4020: an administrator disconnected this client.
    AdminDisconnect,
    /// Close 1008.
    PolicyViolation,
    /// HTTP 401 on the upgrade (after one retry with a fresh token, when a
    /// provider is configured), or the token provider said unauthorized.
    Unauthorized,
    /// HTTP 403 on the upgrade.
    Forbidden,
    /// `max_attempts` reconnect attempts failed in a row.
    AttemptsExhausted,
    /// The user closed the session.
    ClosedByUser,
    /// The server does not speak a protocol version we do (its terminal
    /// ERROR `unsupported_version`; a WELCOME with a version we did not
    /// offer is a protocol error and a reconnect instead).
    UnsupportedVersion,
    /// The requested session name is invalid or taken.
    NameUnavailable,
    /// A terminal ERROR frame with another code.
    ServerError(u16),
    /// A close code the user's [`ClosePolicy`](crate::ClosePolicy) made terminal.
    CloseCode(u16),
    /// The TLS handshake rejected the server's certificate.
    CertificateRejected,
    /// A message over the size limit (close 1009, ours or the server's).
    MessageTooLarge,
}

impl TerminalReason {
    /// The stable symbolic name, such as `"invalid_token"`.
    pub fn name(self) -> &'static str {
        match self {
            TerminalReason::InvalidToken => "invalid_token",
            TerminalReason::TokenExpired => "token_expired",
            TerminalReason::ChannelNotAuthorized => "channel_not_authorized",
            TerminalReason::AccountSuspended => "account_suspended",
            TerminalReason::AdminDisconnect => "admin_disconnect",
            TerminalReason::PolicyViolation => "policy_violation",
            TerminalReason::Unauthorized => "unauthorized",
            TerminalReason::Forbidden => "forbidden",
            TerminalReason::AttemptsExhausted => "attempts_exhausted",
            TerminalReason::ClosedByUser => "closed_by_user",
            TerminalReason::UnsupportedVersion => "unsupported_version",
            TerminalReason::NameUnavailable => "name_unavailable",
            TerminalReason::ServerError(_) => "server_error",
            TerminalReason::CloseCode(_) => "terminal_close_code",
            TerminalReason::CertificateRejected => "certificate_rejected",
            TerminalReason::MessageTooLarge => "message_too_large",
        }
    }
}

impl fmt::Display for TerminalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The server-side session a [`Wire`](crate::Wire) connection joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The server's session id.
    pub id: Text,
    /// The session's name (for a tunnel: its subdomain).
    pub name: Text,
}

/// Something the application may want to know. Drain with
/// [`Session::poll_event`](crate::Session::poll_event).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The public [`State`] changed.
    StateChanged {
        /// The state before.
        from: State,
        /// The state now.
        to: State,
    },
    /// A reconnect attempt is scheduled after `delay`.
    ReconnectScheduled {
        /// Which attempt of this outage (1-based).
        attempt: u32,
        /// The delay chosen.
        delay: Duration,
    },
    /// A dial (or its token fetch) failed; a [`Event::ReconnectScheduled`] or
    /// [`Event::Closed`] follows.
    DialFailed {
        /// The attempt that failed (0: the first connection).
        attempt: u32,
        /// The endpoint it was for (an index into the configured list).
        endpoint: usize,
        /// The HTTP status, when the server answered the upgrade.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
    },
    /// Connected (for [`Wire`](crate::Wire): after WELCOME).
    Connected {
        /// True for every connection after the first.
        reconnect: bool,
        /// True when the server resumed our previous session.
        resumed: bool,
        /// The server-side session ([`Wire`](crate::Wire) only).
        session: Option<SessionInfo>,
        /// The endpoint connected to (an index into the configured list).
        endpoint: usize,
    },
    /// We had a session but got a fresh one (the server refused our resume
    /// token, or it had expired on our clock and was not presented): the old
    /// session and its name are gone. Comes just before `Connected`.
    ResumeRejected {
        /// The session we had.
        previous: SessionInfo,
    },
    /// The transport went away.
    Disconnected {
        /// The close code, when a close frame came.
        code: Option<u16>,
        /// The close reason or what went wrong.
        reason: String,
        /// False when this ends the session.
        will_reconnect: bool,
    },
    /// The server announced it is going away and when to come back.
    GoingAway {
        /// Come back no sooner than this.
        retry_after: Duration,
        /// Spread over this window after `retry_after`.
        window: Duration,
    },
    /// Still reconnecting `stuck_after` into an outage (once per outage).
    Stuck {
        /// How long the outage has lasted.
        for_: Duration,
        /// Attempts so far.
        attempts: u32,
    },
    /// The token provider failed `consecutive` times in a row (from the
    /// configured threshold on). The session keeps trying.
    TokenProviderFailing {
        /// Failures in a row.
        consecutive: u32,
        /// The provider's message.
        message: String,
    },
    /// An application message arrived.
    Message {
        /// The channel ([`Wire`](crate::Wire) publishes to a channel).
        channel: Option<Text>,
        /// The server offset ([`Wire`](crate::Wire) only).
        offset: Option<u64>,
        /// The payload.
        payload: Payload,
        /// The message's headers, for protocols that carry them (a NATS
        /// HMSG); `None` for a message without.
        headers: Option<Headers>,
    },
    /// The server stored every message up to and including `seq`.
    Acked {
        /// Cumulative sequence number.
        seq: u64,
    },
    /// Messages the server could not replay were skipped.
    Gap {
        /// First missing offset.
        from: u64,
        /// Last missing offset.
        to: u64,
    },
    /// A subscription is confirmed.
    Subscribed {
        /// The channel.
        channel: Text,
        /// The id the server gave the subscription on this connection, when
        /// the protocol has one (for logging: messages keep arriving under
        /// `channel`).
        server_id: Option<Text>,
    },
    /// A subscription confirmed on an earlier connection is confirmed
    /// again (right after its [`Event::Subscribed`]), and the protocol
    /// cannot replay what the server emitted meanwhile: messages may have
    /// been missed while away. Backfill from the last one you have (for a
    /// JSON-RPC node, `eth_getLogs` from the last block seen).
    Resubscribed {
        /// The channel.
        channel: Text,
    },
    /// A subscription was refused; the channel is dropped from the set.
    SubscribeFailed {
        /// The channel.
        channel: Text,
        /// The server's code (0 when the protocol has none); signed, since
        /// some protocols' are negative (JSON-RPC's -32602).
        code: i64,
        /// The server's reason.
        reason: Text,
    },
    /// The server ended a subscription (a graphql-ws `complete`); it is
    /// dropped from the set and not renewed.
    SubscriptionEnded {
        /// The subscription key.
        channel: Text,
    },
    /// The server sent a frame we could not decode; the connection is closed
    /// with 1002 and re-established.
    ProtocolError {
        /// What was wrong.
        error: ProtocolError,
    },
    /// An inbound message was over the transport's size limit: it was not
    /// read, and the connection is closed with 1009. A
    /// [`Event::Disconnected`] follows, then what the close policy's 1009 rule
    /// says (terminal `message_too_large` by default).
    MessageTooLarge {
        /// Which limit.
        limit: SizeLimit,
        /// The size the message (or frame) announced or reached, in bytes.
        size: u64,
        /// The limit, in bytes.
        max: u64,
    },
    /// The server reported an error that ends this connection with a code
    /// that is no WebSocket close code (negative or over 65535, such as
    /// JSON-RPC's -32603): the protocol's own code, typed. The
    /// [`Event::Disconnected`] or [`Event::Closed`] that follows (with no
    /// close code) says what happens next. A code that fits a `u16` comes
    /// as that event's `code` instead.
    ServerFailed {
        /// The protocol's code, signed.
        code: i64,
        /// The server's words (also the reason of the event that follows).
        reason: Text,
    },
    /// The server reported a non-terminal error.
    ServerError {
        /// The error code (0 when the protocol has none); signed, since some
        /// protocols' are negative.
        code: i64,
        /// The reason.
        reason: Text,
    },
    /// A call ended: one event per call made with
    /// [`Session::handle_call`](crate::Session::handle_call), with its
    /// reply or why there is none. (The adapters' `Handle::call` takes
    /// these; they do not reach the application's event stream there.)
    CallDone {
        /// The call.
        id: CallId,
        /// The reply, or why there is none (never
        /// [`CallError::Refused`]).
        result: Result<Payload, CallError>,
    },
    /// The session ended. Always the last event.
    Closed {
        /// Why.
        reason: TerminalReason,
        /// The close code or HTTP status that caused it, if any.
        code: Option<u16>,
        /// The server's words or a description.
        detail: String,
        /// Messages sent but not delivered (not acked, for
        /// [`Wire`](crate::Wire); not written, for [`Raw`](crate::Raw)).
        undelivered: usize,
    },
}
