//! A test kit for code that must survive a bad network: a fault-injecting
//! TCP proxy for 127.0.0.1 and a seeded generator for chaos schedules.
//!
//! Put a [`proxy::Proxy`] between your client and your server, point the
//! client at [`proxy::ProxyHandle::addr`], and break the link from the test while
//! traffic flows: cut every connection with an RST or a FIN, turn the link
//! into a silent black hole, add latency, refuse new connections. Then
//! assert on what your client did (reconnected, resumed, lost nothing).
//!
//! ```no_run
//! use std::time::Duration;
//! use redial_testkit::proxy::{Cut, Proxy};
//!
//! # async fn test(server: std::net::SocketAddr) -> std::io::Result<()> {
//! let proxy = Proxy::start(server).await?;
//! let url = format!("ws://{}/", proxy.addr());
//! // ... connect the client under test to `url` ...
//! proxy.cut_all(Cut::Reset); // every live connection gets an RST
//! proxy.blackhole(true); // bytes stop flowing, nothing is closed
//! proxy.blackhole(false);
//! proxy.set_latency(Duration::from_millis(200));
//! # let _ = url;
//! # Ok(()) }
//! ```
//!
//! The proxy runs on tokio and listens on 127.0.0.1 only. Faults are plain
//! state changes: they never block, so a test can flip them from any task.
//! [`rng::SeededRng`] makes a random fault schedule replayable from its seed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod proxy;
pub mod rng;
