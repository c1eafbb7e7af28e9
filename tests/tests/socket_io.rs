//! SocketIo against a real Socket.IO 4.8 server (Node, connection state
//! recovery on), on tokio, async-std and smol: a link cut within the
//! recovery window is recovered with every event emitted meanwhile once
//! and in order; with the Redis streams adapter the same across a server
//! restart; past the window or after a restart without Redis, the
//! missed-data notice; acknowledgements answered; the ping deadline
//! catching a silent link (a fault proxy in front of the server); "io
//! server disconnect" ending the session.
//!
//! Without node and `npm ci` in tests/socketio-server the scenarios are
//! ignored, unless `CI` is set: then they fail.

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{fast_config, ms, pause, Client, ProxyThread};
use redial_core::{CallOptions, Event, SocketIo, TerminalReason};
use redial_driver::{Builder, Runtime};
use redial_tests::proxy::Cut;
use redial_tests::third_party::redis::RedisServer;
use redial_tests::third_party::socketio::{SocketIoOptions, SocketIoServer};
use redial_tests::third_party::started;

/// A `tick` event's first argument and its offset (the last argument).
fn tick(e: &Event) -> Option<(u64, String)> {
    let Event::Message {
        channel: Some(c),
        payload,
        ..
    } = e
    else {
        return None;
    };
    if c != "tick" {
        return None;
    }
    let args: Vec<serde_json::Value> = serde_json::from_str(payload.as_text()?).ok()?;
    Some((args.first()?.as_u64()?, args.last()?.as_str()?.to_owned()))
}

fn connected(e: &Event) -> Option<bool> {
    match e {
        Event::Connected { resumed, .. } => Some(*resumed),
        _ => None,
    }
}

/// A client through a proxy in front of `server`, subscribed to `tick`
/// and connected.
async fn client<R: Runtime>(
    server: &SocketIoServer,
    make: impl Fn(String) -> Builder<R>,
) -> (Client<R>, ProxyThread) {
    let proxy = ProxyThread::start(server.addr());
    let url = server
        .url()
        .replace(&server.addr().to_string(), &proxy.handle.addr().to_string());
    let builder = make(url)
        .config(fast_config().build().unwrap())
        .protocol(SocketIo::new());
    let mut c = Client::connect(builder);
    c.handle.subscribe("tick").await.unwrap();
    c.next("connected", |e| connected(e).is_some()).await;
    (c, proxy)
}

/// `n` ticks, in the order they came.
async fn ticks<R: Runtime>(c: &mut Client<R>, n: usize, what: &str) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let seen = c.next(what, |e| tick(e).is_some()).await;
        got.extend(tick(&seen.event));
    }
    got
}

/// Ticks 1..=3 before the fault, 1..=5 emitted while the client is away,
/// then whether the reconnect recovered; with `recovered`, every missed
/// tick once and in order; without, the missed-data notice.
async fn away_and_back<R: Runtime>(
    c: &mut Client<R>,
    proxy: &ProxyThread,
    server: &mut SocketIoServer,
    restart: bool,
    away: Duration,
    recovered: bool,
) {
    server.emit("tick", 3).unwrap();
    let before = ticks(c, 3, "ticks before the fault").await;
    assert_eq!(before.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2, 3]);
    let mark = c.events.mark();
    proxy.handle.set_refusing(true);
    if restart {
        server.restart().unwrap();
    } else {
        proxy.handle.cut_all(Cut::Reset);
    }
    c.disconnected("the fault").await;
    server.emit("tick", 5).unwrap();
    pause(&c.rt, away).await;
    proxy.handle.set_refusing(false);
    let back = c.next("back", |e| connected(e).is_some()).await;
    assert_eq!(connected(&back.event), Some(recovered), "{:?}", back.event);
    if recovered {
        let missed = ticks(c, 5, "the missed ticks").await;
        assert_eq!(
            missed.iter().map(|t| t.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        server.emit("tick", 1).unwrap();
        ticks(c, 1, "a tick after the missed ones").await;
        let all = c.events.matching(|e| tick(e).is_some());
        let offsets: std::collections::BTreeSet<_> = all
            .iter()
            .filter_map(|s| tick(&s.event))
            .map(|t| t.1)
            .collect();
        assert_eq!(offsets.len(), 9, "each event once: {all:?}");
        c.events.check(
            c.events
                .matching(|e| matches!(e, Event::Resubscribed { .. }))
                .is_empty(),
            "no missed-data notice after a recovery",
        );
    } else {
        c.events.rewind(mark);
        c.next(
            "the missed-data notice",
            |e| matches!(e, Event::Resubscribed { channel } if channel == "tick"),
        )
        .await;
        server.emit("tick", 1).unwrap();
        ticks(c, 1, "ticks flow again").await;
    }
}

async fn a_cut_within_the_window_is_recovered_with_every_missed_event_once_in_order<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mut server = started(SocketIoServer::start(SocketIoOptions::default()));
    let (mut c, proxy) = client(&server, make).await;
    away_and_back(&mut c, &proxy, &mut server, false, ms(0), true).await;
    c.close().await;
}

async fn with_redis_streams_a_server_restart_is_recovered<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let redis = started(RedisServer::start());
    let options = SocketIoOptions {
        redis: Some(redis.url()),
        ..SocketIoOptions::default()
    };
    let mut server = started(SocketIoServer::start(options));
    let (mut c, proxy) = client(&server, make).await;
    away_and_back(&mut c, &proxy, &mut server, true, ms(0), true).await;
    c.close().await;
}

async fn a_restart_without_redis_gives_the_missed_data_notice<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mut server = started(SocketIoServer::start(SocketIoOptions::default()));
    let (mut c, proxy) = client(&server, make).await;
    away_and_back(&mut c, &proxy, &mut server, true, ms(0), false).await;
    c.close().await;
}

async fn past_the_window_gives_the_missed_data_notice<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let options = SocketIoOptions {
        recovery_window: ms(300),
        ..SocketIoOptions::default()
    };
    let mut server = started(SocketIoServer::start(options));
    let (mut c, proxy) = client(&server, make).await;
    away_and_back(&mut c, &proxy, &mut server, false, ms(800), false).await;
    c.close().await;
}

async fn an_emit_with_an_ack_is_answered<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = started(SocketIoServer::start(SocketIoOptions::default()));
    let (c, _proxy) = client(&server, make).await;
    let request = SocketIo::call_request("sum", "[2,3]").unwrap();
    let reply = c.handle.call(request, CallOptions::new()).await.unwrap();
    assert_eq!(reply.as_text(), Some("[5]"));
    c.close().await;
}

async fn the_ping_deadline_catches_a_silent_link<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let options = SocketIoOptions {
        ping_interval: ms(300),
        ping_timeout: ms(300),
        ..SocketIoOptions::default()
    };
    let server = started(SocketIoServer::start(options));
    let proxy = ProxyThread::start(server.addr());
    let url = server
        .url()
        .replace(&server.addr().to_string(), &proxy.handle.addr().to_string());
    // The session's own quiet-link pings off: only the Engine.IO ping
    // deadline can tell.
    let builder = make(url)
        .config(fast_config().ping_interval(None).build().unwrap())
        .protocol(SocketIo::new());
    let mut c = Client::connect(builder);
    c.next("connected", |e| connected(e).is_some()).await;
    proxy.handle.blackhole(true);
    let lost = c
        .events
        .next_within(&c.rt, ms(600 + 1000), "the ping deadline's verdict", |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await;
    assert!(
        matches!(&lost.event, Event::Disconnected { reason, will_reconnect: true, .. }
            if reason.contains("ping")),
        "{:?}",
        lost.event
    );
    proxy.handle.blackhole(false);
    c.next("connected again", |e| connected(e).is_some()).await;
    c.close().await;
}

async fn io_server_disconnect_ends_the_session<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = started(SocketIoServer::start(SocketIoOptions::default()));
    let (mut c, _proxy) = client(&server, make).await;
    assert_eq!(server.kick().unwrap(), 1);
    let (reason, _) = c.closed("the server's disconnect").await;
    assert_eq!(reason, TerminalReason::AdminDisconnect);
}

on_every_runtime!(
    a_cut_within_the_window_is_recovered_with_every_missed_event_once_in_order: socketio,
    with_redis_streams_a_server_restart_is_recovered: socketio_redis,
    a_restart_without_redis_gives_the_missed_data_notice: socketio,
    past_the_window_gives_the_missed_data_notice: socketio,
    an_emit_with_an_ack_is_answered: socketio,
    the_ping_deadline_catches_a_silent_link: socketio,
    io_server_disconnect_ends_the_session: socketio,
);
