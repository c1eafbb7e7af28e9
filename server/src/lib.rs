//! The server half of redial's `Wire` protocol (see `PROTOCOL.md`).
//!
//! # Layers
//!
//! * A sans-IO session core, [`Connection`]: one per WebSocket, in the
//!   client core's style. Inputs are `handle_*(now, ..)`, outputs are
//!   polled ([`Connection::poll_action`], [`Connection::poll_timeout`]);
//!   it reads no clock, does no IO and draws from no global generator
//!   (its seed comes from the [`ServerConfig`]). Storage is asynchronous,
//!   so the core asks for store calls as [`Action::Store`] values and takes
//!   their results back through [`Connection::handle_store_reply`].
//! * Pure building blocks it uses: [`token`] (resume tokens with key
//!   rotation), [`names`] (the name rule and a seeded generator),
//!   [`admission`] (at most R upgrades per second, honest `Retry-After`).
//! * The storage contract, [`store::Store`], shared by every node of one
//!   logical server: [`memory::MemoryStore`] for one process, `RedisStore`
//!   (feature `redis`) for a cluster.
//! * Runtimes (features `tokio`, the default, and `axum`): an accept loop
//!   over tokio-tungstenite and a handler for axum's `WebSocketUpgrade`,
//!   both driving the same core, with a `Node` holding the store, the
//!   application's hooks (`Policy`, `Authorize`, requests) and the handle
//!   (publish, direct messages, GOING_AWAY, shutdown, stats).
//! * Observability: a `tracing` span per connection and (feature
//!   `metrics`) the node's metrics through the `metrics` facade; every
//!   span, metric and label is listed in the README (Observability).
//!
//! # Policy for a subscriber that can't keep up
//!
//! Per-session memory is bounded: a connection pulls MESSAGEs from the
//! store only while its outbound window (frames not yet written to the
//! socket) has room and the session has fewer than `max_backlog` MESSAGEs
//! sent and not RECEIVED. When MESSAGEs wait and the connection cannot
//! take any for `stall_timeout_ms`, it sends ERROR `slow_consumer` (code 7,
//! not terminal) and closes with 1013 (try again later). The client
//! reconnects through its backoff and resumes from its last offset; the
//! store replays what it missed. Nothing is dropped silently: when the
//! store no longer keeps some MESSAGEs, the offsets jump and the client
//! reports the gap (PROTOCOL.md 8.5).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admission;
#[cfg(feature = "axum")]
pub mod axum;
pub mod clock;
mod config;
mod connection;
#[cfg(feature = "tokio")]
mod drive;
pub mod memory;
#[cfg(feature = "tokio")]
mod meter;
pub mod names;
#[cfg(feature = "tokio")]
mod node;
mod notify;
mod op;
mod policy;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "tokio")]
mod registry;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use clock::WallClock;
pub use config::{
    ConfigError, ServerConfig, ServerConfigBuilder, DEFAULT_READ_BUFFER, DEFAULT_STORE_TIMEOUT_MS,
    DEFAULT_WRITE_BUFFER,
};
pub use connection::{Action, Connection, Phase, Request, ACK_DELAY_MS, SLOW_CONSUMER};
#[cfg(feature = "tokio")]
pub use node::{Authorize, Node, NodeBuilder, NodeStats, Open, Rejection};
pub use op::{StoreOp, StoreReply};
pub use policy::{AllowAll, Peer, Policy, PublishVerdict, Refusal};

/// The README's examples, compiled as doc tests.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
