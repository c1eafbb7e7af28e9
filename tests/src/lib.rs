//! Test harness for redial: a fault-injecting TCP proxy and a reference
//! server speaking the `Wire` protocol.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fleet;
pub mod proxy;
pub mod rng;
pub mod server;
