//! The server half of redial's `Wire` protocol (see `PROTOCOL.md`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod memory;
mod notify;
#[cfg(feature = "redis")]
pub mod redis;
pub mod store;
