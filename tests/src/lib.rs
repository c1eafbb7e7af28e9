//! Test harness for redial: a fault-injecting TCP proxy and a reference
//! server speaking the `Wire` protocol, and launchers for the third-party
//! servers (nats-server, a Node graphql-ws server) the suites test against.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fleet;
pub mod proxy;
pub mod rng;
pub mod server;
pub mod servers;
