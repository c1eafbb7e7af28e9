//! Test harness for redial: the fault-injecting TCP proxy (re-exported
//! from `redial-testkit`), a reference server speaking the `Wire` protocol,
//! and launchers for the third-party servers (nats-server, a Node
//! graphql-ws server) the suites test against.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fleet;
pub mod server;
pub mod servers;

// The proxy and the generator live in the published test kit; these paths
// keep every `redial_tests::proxy::...` import working.
pub use redial_testkit::{proxy, rng};
