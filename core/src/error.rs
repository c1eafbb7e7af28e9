//! Errors returned to the caller of a `handle_*` input.

/// A send, subscribe or unsubscribe was refused. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outbound queue is at its limit. Wait for
    /// [`Event::Acked`](crate::Event::Acked) (Wire) or for the connection
    /// (Raw) and try again: the adapters turn this into backpressure.
    #[error("outbound queue full ({messages} messages, {bytes} bytes queued)")]
    QueueFull {
        /// Messages queued.
        messages: usize,
        /// Payload bytes queued.
        bytes: usize,
    },
    /// The message alone is larger than the queue or the frame limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The protocol has no such feature (subscriptions with Raw).
    #[error("the {protocol} protocol does not support {what}")]
    Unsupported {
        /// The protocol's name.
        protocol: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// The protocol cannot send this (a subscription spec or a subject it
    /// does not accept).
    #[error("{protocol}: {reason}")]
    Invalid {
        /// The protocol's name.
        protocol: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A channel name is empty or too long.
    #[error("invalid channel name ({len} bytes, limit {max})")]
    InvalidChannel {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// As many calls as the config's `max_calls` are waiting or in flight:
    /// wait for one to end.
    #[error("{max} calls already waiting or in flight")]
    TooManyCalls {
        /// The limit.
        max: usize,
    },
    /// The session is closing: no new messages are taken.
    #[error("session is closing")]
    Closing,
    /// The session is closed.
    #[error("session is closed")]
    Closed,
}
