//! Test support for the adapters (cargo feature `test-server`): a scripted
//! loopback WebSocket server and the scenarios every adapter must pass,
//! written once and run by each adapter's tests on its own runtime.
//!
//! Scenarios wait on events, never on sleeps; every wait has a generous
//! timeout as a safety net and panics (failing the test) when it runs out.

// Test support: an unmet expectation is a failed test, so panicking on it
// is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod calls;
mod endpoints;
mod limits_and_trust;
mod observe;
mod peer;
mod scenarios;

use std::future::Future;
use std::time::Duration;

use futures_util::future::{select, Either};
use redial_core::{Backoff, ConfigBuilder, Event};

pub use calls::*;
pub use endpoints::*;
pub use limits_and_trust::*;
pub use observe::*;
pub use peer::{Plan, ScriptedPeer, ServerEvent};
pub use scenarios::*;

use crate::{Events, Runtime};

/// The safety net for a single wait.
pub const WAIT: Duration = Duration::from_secs(5);

/// Small, fast settings: ping 200 ms, pong 200 ms, backoff window 50 ms.
pub fn fast_config() -> ConfigBuilder {
    redial_core::Config::builder()
        .ping_interval(Some(Duration::from_millis(200)))
        .pong_timeout(Duration::from_millis(200))
        .backoff(Backoff::full_jitter(
            Duration::from_millis(50),
            Duration::from_millis(50),
        ))
        .connect_timeout(Duration::from_secs(3))
        .stable_after(Duration::from_millis(100))
        .close_linger(Duration::from_secs(2))
}

/// `fut`, or a panic naming `what` after `limit` on `rt`'s clock.
pub async fn within<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> T {
    let sleep = rt.sleep_until(rt.now() + limit);
    let fut = std::pin::pin!(fut);
    let sleep = std::pin::pin!(sleep);
    match select(fut, sleep).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Reads events until one matches `pred`, which is returned.
pub async fn wait_event<R: Runtime>(
    rt: &R,
    events: &mut Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    within(rt, WAIT, what, async {
        loop {
            match events.recv().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    })
    .await
}

/// Reads server events until one matches `pred`, which is returned.
pub async fn wait_server<R: Runtime>(
    rt: &R,
    server: &mut ScriptedPeer,
    what: &str,
    mut pred: impl FnMut(&ServerEvent) -> bool,
) -> ServerEvent {
    within(rt, WAIT, what, async {
        loop {
            match server.next().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("server stopped while waiting for {what}"),
            }
        }
    })
    .await
}
