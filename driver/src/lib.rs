//! The runtime-neutral half of redial's adapters: one task per connection
//! that drives a [`redial_core::Session`] over a tungstenite WebSocket.
//!
//! `redial-tokio` and `redial-async-std` are thin: each implements
//! [`Runtime`] (a clock, a sleep, a dial and a spawn) in a few dozen lines
//! and re-exports the [`Builder`], [`Handle`] and [`Events`] defined here.
//! Every decision (when to retry, what a close code means, what to replay)
//! belongs to the core; this crate only carries out its
//! [`Action`](redial_core::Action)s and reports what the socket did.
//!
//! # The driver task
//! One future per connection ([`Driver`]) waits on all its inputs at once:
//! the socket, the handles' wake-ups after they called into the session,
//! the dial or token fetch in flight and the
//! session's single timer. After every input it drains the session's
//! actions and events, exactly as the core's calling contract asks.
//!
//! # Bounded everywhere
//! - [`Handle::send`] and [`Handle::feed`] hand the message to the session
//!   themselves (it sits behind a lock the handles share with the driver
//!   task), get its answer at once and wake the driver: no round trip
//!   through the driver task per message. When the session answers
//!   [`SendError::QueueFull`](redial_core::SendError::QueueFull) they wait
//!   for queue space: backpressure instead of loss. While the socket itself
//!   is not taking frames, or once `command_capacity` messages were handed
//!   over that the driver has not taken yet, new messages are answered
//!   `QueueFull` too, so nothing piles up between the session and the
//!   socket. The driver writes every message handed over meanwhile and
//!   flushes once at the end of its turn: one flush per batch. What the
//!   session answers to inbound messages (acknowledgements, pongs) is
//!   flushed once the socket has no more buffered (at most 256 frames
//!   later): a burst from the server gets its answers in one flush.
//! - [`Handle::call`] goes the same way as a send: it hands the call to the
//!   session under the lock, wakes the driver and waits for the call's end,
//!   which the driver passes back from the session's event. Calls waiting
//!   or in flight are bounded by the config's `max_calls` (256 by default),
//!   each by its timeout (`call_timeout`, 30 s by default).
//! - Every other handle operation (subscribe, unsubscribe, retry, close,
//!   ...) goes the same way: it calls the session under the lock and wakes
//!   the driver. There is no command channel; dropping the last handle
//!   closes the session as [`Handle::close`] does.
//! - [`Events`] is a bounded stream. With a slow consumer the driver waits
//!   for room before it does anything else but notice the handles' calls: it
//!   stops reading the socket, so TCP backpressure reaches the server, and
//!   keepalive deadlines are judged only after the frames that arrived
//!   meanwhile have been read. A consumer that stops reading altogether
//!   stalls the connection, though not [`Handle::close`] (nor the last
//!   handle's drop): the session closes and the unread events wait for a
//!   reader. Drop the [`Events`] to ignore events instead.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod builder;
mod convert;
mod driver;
mod handle;
mod observe;
mod request;
#[cfg(feature = "test-server")]
pub mod testing;
#[cfg(feature = "rustls")]
pub mod tls;
mod token;
mod trust;
mod websocket;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_core::Stream;
use futures_sink::Sink;

pub use builder::{BuildError, Builder};
pub use convert::{close_frame_to_ws, dial_failure, frame_to_message, message_to_frame};
pub use driver::Driver;
pub use handle::{Events, Handle};
pub use observe::{CallOutcome, StateWatch, Stats, MAX_CLIENT_LABEL};
pub use redial_core;
pub use request::TokenPlacement;
pub use token::TokenProvider;
pub use trust::TlsTrust;
pub use tungstenite;
pub use websocket::{
    default_websocket_config, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_SIZE,
};

/// A boxed, sendable future, as the [`Runtime`] hands them around.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The few things a runtime must provide to run a connection.
///
/// Implemented by each adapter; nothing here decides anything.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// An open WebSocket.
    type Socket: Stream<Item = Result<tungstenite::Message, tungstenite::Error>>
        + Sink<tungstenite::Message, Error = tungstenite::Error>
        + Send
        + Unpin
        + 'static;

    /// What [`sleep_until`](Runtime::sleep_until) returns.
    type Sleep: Future<Output = ()> + Send + 'static;

    /// The current time on this runtime's clock (the session's `now`).
    fn now(&self) -> Instant;

    /// Completes at `deadline` on this runtime's clock.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// Opens a WebSocket for this upgrade request (TCP, TLS for `wss://`,
    /// then the HTTP upgrade). An HTTP answer other than 101 is
    /// [`tungstenite::Error::Http`].
    ///
    /// `config` is tungstenite's socket configuration (buffer sizes, message
    /// limits) from [`Builder::websocket_config`]; `trust` says which
    /// certificates a `wss://` dial accepts (`Builder::root_certificates`).
    fn dial(
        &self,
        request: tungstenite::handshake::client::Request,
        config: tungstenite::protocol::WebSocketConfig,
        trust: TlsTrust,
    ) -> BoxFuture<Result<Self::Socket, tungstenite::Error>>;

    /// Runs the connection's driver task in the background.
    fn spawn(&self, task: BoxFuture<()>) -> Result<(), SpawnError>;
}

/// The runtime could not start the driver task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot spawn the driver task: {0}")]
pub struct SpawnError(pub String);
