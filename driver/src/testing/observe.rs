//! Scenarios for what an operator sees: the counters snapshot and the
//! state watch.

use redial_core::{CloseClass, Event, Payload, State};

use super::{fast_config, wait_event, wait_server, within, Plan, ScriptedPeer, ServerEvent, WAIT};
use crate::{Builder, Events, Runtime};

fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected { .. })
}

async fn reconnected<R: Runtime>(rt: &R, events: &mut Events) {
    wait_event(rt, events, "reconnected", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: true,
                ..
            }
        )
    })
    .await;
}

/// Three forced reconnects, each with another close class, two sends and a
/// message in: the snapshot counts each.
pub async fn stats_count_dials_disconnects_and_messages<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    let fresh = handle.stats();
    assert_eq!((fresh.dials_ok, fresh.reconnects), (1, 0));
    assert_eq!(fresh.disconnects_total(), 0);

    server.close(0, 1001, "going away");
    reconnected(&rt, &mut events).await;
    server.close(1, 1013, "try later");
    reconnected(&rt, &mut events).await;
    server.drop_conn(2);
    reconnected(&rt, &mut events).await;

    handle.send(Payload::text("a")).await.expect("send");
    handle.feed(Payload::text("b")).await.expect("feed");
    server.send_text(3, "in");
    wait_event(&rt, &mut events, "the message", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    for want in ["a", "b"] {
        let got = wait_server(&rt, &mut server, want, |e| {
            matches!(e, ServerEvent::Text { .. })
        })
        .await;
        assert!(matches!(got, ServerEvent::Text { text, .. } if text == want));
    }

    let stats = handle.stats();
    assert_eq!(stats.state, State::Connected);
    assert_eq!(stats.dials_ok, 4);
    assert_eq!(stats.dials_failed, 0);
    assert_eq!(stats.reconnects, 3);
    assert_eq!(stats.disconnects(CloseClass::GoingAway), 1);
    assert_eq!(stats.disconnects(CloseClass::ServerHint), 1);
    assert_eq!(stats.disconnects(CloseClass::Transport), 1);
    assert_eq!(stats.disconnects_total(), 3);
    assert_eq!(stats.messages_sent, 2);
    assert_eq!(stats.messages_received, 1);
    assert_eq!((stats.gaps, stats.messages_missed), (0, 0));
    within(&rt, WAIT, "close", handle.close()).await;
    assert_eq!(handle.stats().state, State::Closed);
}

/// A watch read only after several reconnects answers the state now, once:
/// latest wins, never one answer per change.
pub async fn state_watch_keeps_only_the_latest<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    let mut watch = handle.watch_state();
    wait_event(&rt, &mut events, "connected", is_connected).await;
    for conn in 0..3 {
        server.drop_conn(conn);
        reconnected(&rt, &mut events).await;
    }
    // Six changes (three times reconnecting, then connected) went by.
    assert_eq!(
        within(&rt, WAIT, "a change", watch.changed()).await,
        Some(State::Connected)
    );
    assert_eq!(watch.try_changed(), None);
    assert_eq!(watch.current(), State::Connected);

    within(&rt, WAIT, "close", handle.close()).await;
    let mut last = None;
    while let Some(state) = within(&rt, WAIT, "closed", watch.changed()).await {
        last = Some(state);
    }
    assert_eq!(last, Some(State::Closed));
    // A watch made after the end answers nothing more.
    assert_eq!(handle.watch_state().try_changed(), None);
}
