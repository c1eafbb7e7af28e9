//! Test harness for redial: a fault-injecting TCP proxy and a reference
//! server speaking the `Wire` protocol.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod proxy;
pub mod server;
