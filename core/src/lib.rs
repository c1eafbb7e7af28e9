//! The sans-IO heart of redial: one reconnecting WebSocket client as a pure
//! state machine.
//!
//! A [`Session`] takes time, transport events and user intents through
//! `handle_*` methods, each given the current `now`, and answers with
//! [`Action`]s for the adapter (dial, send, close, fetch a token) and
//! [`Event`]s for the application (state changes, reconnect scheduled,
//! messages, why it ended). It reads no clock, does no IO and draws randomness
//! only from the seed in its [`Config`], so a seed and a list of inputs always
//! give the same outputs: fuzzable, property-testable and simulable for a
//! whole fleet on a virtual clock.
//!
//! # The calling contract
//! 1. Feed an input (`handle_connect`, `handle_frame`, `handle_timeout`, ...).
//! 2. Drain [`Session::poll_action`] and [`Session::poll_event`] until both
//!    are empty; carry out every action in order.
//! 3. Sleep until [`Session::poll_timeout`] or the next input, whichever
//!    comes first, and call [`Session::handle_timeout`]. Early or repeated
//!    calls are harmless; after one, `poll_timeout` is later than `now`.
//! 4. Report the outcome of every [`Action::FetchToken`] and [`Action::Dial`].
//!    After [`Action::Close`], report nothing more about that transport.
//!
//! # A run loop
//! A complete driver over a scripted transport: the server accepts, echoes
//! one message, then drops; the session reconnects after its backoff.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use redial_core::{Action, Config, Event, Frame, Payload, Raw, Session, State};
//!
//! let config = Config::builder().seed(42).build().expect("valid config");
//! let mut session = Session::new(config, Raw::new());
//! let mut now = Instant::now();
//! session.handle_connect(now);
//! session.handle_send(now, Payload::text("hello")).expect("queue has room");
//!
//! let mut dials = 0;
//! let mut echoed = Vec::new();
//! while dials < 2 {
//!     while let Some(action) = session.poll_action() {
//!         match action {
//!             Action::Dial { .. } => {
//!                 dials += 1;
//!                 session.handle_dial_ok(now); // the WebSocket is open
//!             }
//!             Action::Send(Frame::Text(t), _) => {
//!                 echoed.push(t.to_string());
//!                 session.handle_frame(now, Frame::Text(t)); // the echo
//!                 session.handle_transport_closed(now, None); // then a drop
//!             }
//!             Action::Send(_, _) | Action::FetchToken | Action::Close(_) => {}
//!             _ => {}
//!         }
//!     }
//!     while let Some(event) = session.poll_event() {
//!         if let Event::ReconnectScheduled { attempt, delay } = event {
//!             assert_eq!(attempt, 1);
//!             // The default's first retry: full jitter within 2 s.
//!             assert!(delay <= Duration::from_secs(2));
//!         }
//!     }
//!     match session.poll_timeout() {
//!         Some(deadline) => {
//!             now = now.max(deadline); // a real driver sleeps until then
//!             session.handle_timeout(now);
//!         }
//!         None => break,
//!     }
//! }
//! assert_eq!(echoed, ["hello"]);
//! assert_eq!(dials, 2);
//! assert_eq!(session.state(), State::Connected);
//! ```
//!
//! # Where things are
//! - [`backoff`]: the delay policies (by default a quick first retry, then a
//!   jittered ladder with a floor).
//! - [`close_policy`]: where a close code or handshake status becomes a
//!   decision.
//! - [`protocol`]: the session layer protocols plug into; [`Raw`], [`Wire`],
//!   `GraphqlWs`, `Nats`, `JsonRpc` and `SocketIo` implement it, and so can
//!   you.
//! - [`wire`], `graphql_ws`, `nats`, `json_rpc`, `mqtt`, `socket_io`: the codecs under them (each lives in
//!   its protocol's folder, `protocol::<name>::codec`).
//! - [`Session`]: the state machine that ties them together.
//! - [`timer`]: the deadline table the session (and the server's
//!   connection) keeps its timers in; [`utf8`]: text cut to a byte limit.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod action;
pub mod backoff;
mod call;
pub mod close_policy;
mod config;
mod endpoint;
mod error;
mod event;
#[cfg(any(fuzzing, feature = "fuzzing"))]
pub mod fuzzing;
mod headers;
mod keepalive;
pub mod payload;
pub mod protocol;
mod queue;
mod rng;
pub mod secret;
mod session;
pub mod timer;
pub mod transport;
pub mod utf8;

#[cfg(feature = "graphql-ws")]
pub use protocol::graphql_ws::codec as graphql_ws;
#[cfg(feature = "json-rpc")]
pub use protocol::json_rpc::codec as json_rpc;
#[cfg(feature = "mqtt")]
pub use protocol::mqtt::codec as mqtt;
#[cfg(feature = "nats")]
pub use protocol::nats::codec as nats;
#[cfg(feature = "socket-io")]
pub use protocol::socket_io::codec as socket_io;
pub use protocol::wire::codec as wire;

pub use action::{Action, SendKind};
pub use backoff::Backoff;
pub use call::{CallError, CallId, CallOptions};
pub use close_policy::{CloseClass, ClosePolicy, CloseRule};
pub use config::{Config, ConfigBuilder, ConfigError};
pub use error::SendError;
pub use event::{Event, SessionInfo, State, TerminalReason};
pub use headers::Headers;
pub use payload::{Payload, Text};
#[cfg(feature = "graphql-ws")]
pub use protocol::GraphqlWs;
#[cfg(feature = "json-rpc")]
pub use protocol::JsonRpc;
#[cfg(feature = "nats")]
pub use protocol::Nats;
#[cfg(feature = "socket-io")]
pub use protocol::SocketIo;
#[cfg(feature = "mqtt")]
pub use protocol::{Mqtt, MqttBuilder};
pub use protocol::{Protocol, ProtocolError, Raw, RawHeartbeat, Wire, WireError};

pub use queue::SendLimits;
pub use secret::{AuthToken, ResumeToken};
pub use session::{Session, TokenFailure};
pub use transport::{CloseFrame, DialFailure, Frame, SizeLimit};
