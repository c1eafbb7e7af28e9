//! Test harness for redial: the fault-injecting TCP proxy (re-exported
//! from `redial-testkit`), a reference server speaking the `Wire` protocol,
//! launchers for the third-party servers (nats-server, a Node graphql-ws
//! server) the suites test against, the fleet simulator and the
//! whole-system simulation (`sim`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fleet;
pub mod reference;
pub mod sim;
pub mod third_party;

// The proxy and the generator live in the published test kit; these paths
// keep every `redial_tests::proxy::...` import working.
pub use redial_testkit::{proxy, rng};
