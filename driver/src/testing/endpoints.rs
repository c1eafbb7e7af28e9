//! Several endpoints: the session picks each dial's node, the driver dials it.

use std::time::Duration;

use redial_core::{Event, Raw, Session};

use super::{fast_config, wait_event, wait_server, within, Plan, ScriptedPeer, ServerEvent, WAIT};
use crate::{Builder, Events, Runtime};

/// The next `Connected`, with the endpoints of the dial failures before it.
async fn next_connected<R: Runtime>(rt: &R, events: &mut Events) -> (Event, Vec<usize>) {
    let mut failed = Vec::new();
    let e = wait_event(rt, events, "connected", |e| {
        if let Event::DialFailed { endpoint, .. } = e {
            failed.push(*endpoint);
        }
        matches!(e, Event::Connected { .. })
    })
    .await;
    (e, failed)
}

fn connected_to(e: &Event) -> Option<usize> {
    match e {
        Event::Connected { endpoint, .. } => Some(*endpoint),
        _ => None,
    }
}

/// Two nodes, A (listed first) and B. A is down: the first dial goes to A
/// and fails, the next goes to B. B drops the connection after it held: the
/// client stays with B. Then A comes up at its address and B dies: the
/// client fails one dial on B and moves back to A.
pub async fn endpoints_rotate_to_a_live_node<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    // A's address, with nothing listening on it yet.
    let port_a = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url_a = format!("ws://127.0.0.1:{port_a}/socket");
    let mut b = ScriptedPeer::start(|_| Plan::Accept).expect("server b");
    let url_b = b.url().to_owned();

    // stable_after 0: every connection counts as one that held, so the
    // client leaves a node only after a dial to it fails.
    let base = fast_config().stable_after(Duration::ZERO).endpoints(2);
    // A seed whose first dial goes to A, found through the core's own rule.
    let seed = (0..)
        .find(|&s| Session::new(base.clone().seed(s).build().unwrap(), Raw::new()).endpoint() == 0)
        .expect("a seed that starts on A");
    let config = base.seed(seed).build().expect("config");
    let builder = make(url_b.clone()).endpoints([url_a, url_b]).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");

    let (e, failed) = next_connected(&rt, &mut events).await;
    assert_eq!(failed, [0], "the first dial went to A, which is down");
    assert_eq!(connected_to(&e), Some(1), "{e:?}");
    wait_server(&rt, &mut b, "B's first upgrade", |e| {
        matches!(e, ServerEvent::Dialed { conn: 0, .. })
    })
    .await;

    b.drop_conn(0);
    let (e, failed) = next_connected(&rt, &mut events).await;
    assert_eq!(failed, Vec::<usize>::new(), "no dial to A after B held");
    assert_eq!(connected_to(&e), Some(1), "stayed with B: {e:?}");
    assert!(matches!(
        e,
        Event::Connected {
            reconnect: true,
            ..
        }
    ));
    assert_eq!(b.dials(), 2);

    let mut a = ScriptedPeer::start_on(port_a, |_| Plan::Accept).expect("server a at its port");
    // Dropping B closes its listener before its connections, so the client
    // sees the loss only once B refuses dials.
    drop(b);
    let (e, failed) = next_connected(&rt, &mut events).await;
    assert_eq!(failed, [1], "one failed dial to B, which is gone");
    assert_eq!(connected_to(&e), Some(0), "moved back to A: {e:?}");
    wait_server(&rt, &mut a, "A's upgrade", |e| {
        matches!(e, ServerEvent::Dialed { conn: 0, .. })
    })
    .await;
    assert_eq!(a.dials(), 1);
    within(&rt, WAIT, "close", handle.close()).await;
}
