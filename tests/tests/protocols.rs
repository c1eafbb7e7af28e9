//! The protocols on the session layer against real servers: nats-server,
//! the Node graphql-ws server, and a plain WebSocket feed for Raw; every
//! scenario on tokio, async-std and smol.
//!
//! Without nats-server or node (plus `npm ci` in tests/graphql-server) the
//! scenarios that need them skip with a message, unless `CI` is set: then
//! they fail.

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// tungstenite's handshake callback returns its large error type by value.
#![allow(clippy::result_large_err)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fast_config, is_connected, message_text, ms, pause, Client, ProxyThread};
use futures_util::{SinkExt, StreamExt};
use redial_core::nats::Credentials;
use redial_core::{
    AuthToken, Event, GraphqlWs, Headers, Nats, Payload, Raw, RawHeartbeat, TerminalReason,
};
use redial_driver::{Builder, Runtime};
use redial_tests::third_party::graphql::{GraphqlOptions, GraphqlServer};
use redial_tests::third_party::nats::{NatsAuth, NatsOptions, NatsServer};
use redial_tests::third_party::started;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn bytes_are(e: &Event, want: &[u8]) -> bool {
    matches!(e, Event::Message { payload, .. } if payload.bytes().as_ref() == want)
}

fn text_has(e: &Event, want: &str) -> bool {
    message_text(e).is_some_and(|t| t.contains(want))
}

// ----- helpers on the server side ----------------------------------------

/// What the plain WebSocket server does with each connection.
#[derive(Clone, Copy)]
enum Script {
    /// A market-data style feed: answers every text `t` with `ack:t`,
    /// never answers WebSocket pings' meaning beyond the library's pong.
    Feed,
    /// Sends a line that is no protocol at all, then keeps reading.
    Garbage,
}

/// A plain WebSocket server on 127.0.0.1 on its own thread: records every
/// text it receives; `kick` closes every connection with 1012 (a restart).
struct PlainServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    kick: tokio::sync::watch::Sender<u64>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PlainServer {
    fn start(script: Script) -> PlainServer {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kick = tokio::sync::watch::Sender::new(0u64);
        let (log, kicks) = (Arc::clone(&received), kick.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let _ = ready_tx.send(listener.local_addr().unwrap());
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (log, mut kicked) = (Arc::clone(&log), kicks.subscribe());
                        tokio::spawn(async move {
                            // Selects whatever subprotocol the client asks for.
                            let echo = |req: &Request, mut resp: Response| {
                                if let Some(p) = req.headers().get("Sec-WebSocket-Protocol") {
                                    let first = p.to_str().unwrap_or("").split(',').next();
                                    if let Ok(v) = HeaderValue::from_str(first.unwrap_or("").trim()) {
                                        resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
                                    }
                                }
                                Ok(resp)
                            };
                            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, echo).await
                            else {
                                return;
                            };
                            kicked.borrow_and_update();
                            if let Script::Garbage = script {
                                let _ = ws.send(Message::text("}{ not a protocol")).await;
                            }
                            loop {
                                tokio::select! {
                                    _ = kicked.changed() => {
                                        let _ = ws.send(Message::Close(Some(CloseFrame {
                                            code: CloseCode::Restart,
                                            reason: "restart".into(),
                                        }))).await;
                                        return;
                                    }
                                    m = ws.next() => match m {
                                        Some(Ok(Message::Text(t))) => {
                                            log.lock().unwrap().push(t.to_string());
                                            if let Script::Feed = script {
                                                let _ = ws.send(Message::text(format!("ack:{t}"))).await;
                                            }
                                        }
                                        Some(Ok(_)) => {}
                                        _ => return,
                                    },
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        PlainServer {
            addr: ready_rx.recv().unwrap(),
            received,
            kick,
            _stop: stop_tx,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn restart(&self) {
        self.kick.send_modify(|n| *n += 1);
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

// ----- NATS ------------------------------------------------------------------

async fn nats_subscriptions_survive_a_server_restart<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mut server = started(NatsServer::start(NatsOptions::default()));
    let builder = make(server.ws_url())
        .config(fast_config().build().unwrap())
        .protocol(Nats::new());
    let mut c = Client::connect(builder);
    c.handle.subscribe("feed.>").await.unwrap();
    c.next("connected", is_connected).await;
    c.handle
        .publish("feed.a", Payload::text("before"))
        .await
        .unwrap();
    c.next("the message before the restart", |e| {
        bytes_are(e, b"before")
    })
    .await;
    server.restart().unwrap();
    c.disconnected("the restart").await;
    c.next("the reconnect", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: true,
                ..
            }
        )
    })
    .await;
    c.handle
        .publish("feed.b", Payload::text("after"))
        .await
        .unwrap();
    let seen = c
        .next("a message after the restart: resubscribed", |e| {
            bytes_are(e, b"after")
        })
        .await;
    assert!(matches!(seen.event, Event::Message { channel: Some(ref s), .. } if s == "feed.b"));
    c.close().await;
}

async fn nats_headers_go_out_as_hpub_and_come_back_from_hmsg<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let server = started(NatsServer::start(NatsOptions::default()));
    let builder = make(server.ws_url())
        .config(fast_config().build().unwrap())
        .protocol(Nats::new());
    let mut c = Client::connect(builder);
    c.handle.subscribe("hdr.>").await.unwrap();
    c.next("connected", is_connected).await;
    let sent = Headers::new()
        .with("Trace-Id", "t-17")
        .with("Kind", "a")
        .with("Kind", "b");
    c.handle
        .publish_with_headers("hdr.a", sent.clone(), Payload::text("with"))
        .await
        .unwrap();
    let seen = c
        .next("the message with headers", |e| bytes_are(e, b"with"))
        .await;
    match seen.event {
        Event::Message {
            channel, headers, ..
        } => {
            assert_eq!(channel.as_ref().map(|c| c.as_str()), Some("hdr.a"));
            assert_eq!(
                headers,
                Some(sent),
                "every pair, in order, through the server"
            );
        }
        other => panic!("{other:?}"),
    }
    c.handle
        .publish("hdr.b", Payload::text("without"))
        .await
        .unwrap();
    let seen = c
        .next("the message without", |e| bytes_are(e, b"without"))
        .await;
    assert!(
        matches!(seen.event, Event::Message { headers: None, .. }),
        "{:?}",
        seen.event
    );
    c.close().await;
}

async fn nats_server_pings_are_answered<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let options = NatsOptions {
        ping_interval: ms(200),
        ..NatsOptions::default()
    };
    let server = started(NatsServer::start(options));
    // No client pings: only the server's PINGs and our PONGs keep it up.
    let config = fast_config().ping_interval(None).build().unwrap();
    let mut c = Client::connect(make(server.ws_url()).config(config).protocol(Nats::new()));
    c.next("connected", is_connected).await;
    // The server calls a client stale after two unanswered PINGs (400 ms):
    // time passing is the condition here.
    pause(&c.rt, ms(1500)).await;
    c.events.check(
        c.events
            .matching(|e| matches!(e, Event::Disconnected { .. }))
            .is_empty(),
        "the server dropped us: its PINGs were not answered",
    );
    c.close().await;
}

async fn nats_half_open_is_caught_by_the_protocols_heartbeat<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let server = started(NatsServer::start(NatsOptions::default()));
    let proxy = ProxyThread::start(server.ws_addr());
    let url = format!("ws://{}", proxy.handle.addr());
    let mut c = Client::connect(
        make(url)
            .config(fast_config().build().unwrap())
            .protocol(Nats::new()),
    );
    c.next("connected", is_connected).await;
    proxy.handle.blackhole(true);
    let seen = c.disconnected("the dead link").await;
    assert!(
        matches!(&seen.event, Event::Disconnected { reason, .. } if reason == "pong timeout"),
        "{:?}",
        seen.event
    );
    proxy.handle.blackhole(false);
    c.next("connected again", is_connected).await;
    c.close().await;
}

async fn nats_authorization_violation_is_terminal<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let options = NatsOptions {
        auth: NatsAuth::Token("right".into()),
        ..NatsOptions::default()
    };
    let server = started(NatsServer::start(options));
    let nats = Nats::new().credentials(Credentials::Token(AuthToken::new("wrong")));
    let mut c = Client::connect(
        make(server.ws_url())
            .config(fast_config().build().unwrap())
            .protocol(nats),
    );
    let (reason, _) = c.closed("the refusal").await;
    assert_eq!(reason, TerminalReason::Unauthorized);
}

async fn nats_lame_duck_gives_a_spread_reconnect<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = started(NatsServer::start(NatsOptions::default()));
    let window = Duration::from_secs(3);
    let nats = Nats::new().ldm_window(window);
    let mut c = Client::connect(
        make(server.ws_url())
            .config(fast_config().build().unwrap())
            .protocol(nats),
    );
    c.next("connected", is_connected).await;
    server.signal_lame_duck().unwrap();
    c.next(
        "lame duck as GOING_AWAY",
        |e| matches!(e, Event::GoingAway { window: w, .. } if *w == window),
    )
    .await;
    let seen = c.disconnected("leaving before the server closes").await;
    assert!(
        matches!(&seen.event, Event::Disconnected { reason, code: None, .. } if reason == "server going away"),
        "{:?}",
        seen.event
    );
    let seen = c
        .next("the reconnect", |e| {
            matches!(e, Event::ReconnectScheduled { .. })
        })
        .await;
    let Event::ReconnectScheduled { delay, .. } = seen.event else {
        unreachable!()
    };
    // The ladder's first window (400 ms) or the spread, whichever is longer.
    assert!(delay <= window + ms(400), "{delay:?}");
}

/// NATS core is at most once: what is published while a subscriber is away
/// is missed, and the subscriber can count it when the publisher numbers its
/// messages. Nothing published before the reconnect arrives after it.
async fn nats_counts_what_a_subscriber_misses_in_an_outage<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let server = started(NatsServer::start(NatsOptions::default()));
    let proxy = ProxyThread::start(server.ws_addr());
    let config = || fast_config().build().unwrap();
    let mut sub = Client::connect(
        make(format!("ws://{}", proxy.handle.addr()))
            .config(config())
            .protocol(Nats::new()),
    );
    let mut publisher =
        Client::connect(make(server.ws_url()).config(config()).protocol(Nats::new()));
    sub.handle.subscribe("seq").await.unwrap();
    publisher.handle.subscribe("seq").await.unwrap();
    sub.next("subscriber connected", is_connected).await;
    publisher.next("publisher connected", is_connected).await;
    let number = |e: &Event| match e {
        Event::Message { payload, .. } => std::str::from_utf8(payload.bytes())
            .ok()
            .and_then(|t| t.parse::<u32>().ok()),
        _ => None,
    };
    // The subscriber is away: its link cut, new dials refused.
    proxy.handle.set_refusing(true);
    proxy.handle.cut_all(redial_tests::proxy::Cut::Reset);
    sub.disconnected("the outage").await;
    for n in 1..=10u32 {
        publisher
            .handle
            .publish("seq", Payload::text(n.to_string()))
            .await
            .unwrap();
    }
    // The publisher's own copies prove the server has handled all ten.
    publisher
        .next("the server handled 1..10", |e| number(e) == Some(10))
        .await;
    proxy.handle.set_refusing(false);
    sub.next("the subscriber is back", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: true,
                ..
            }
        )
    })
    .await;
    // Its own marker coming back proves its SUB is in place again.
    sub.handle.publish("seq", Payload::text("0")).await.unwrap();
    sub.next("the subscription is renewed", |e| number(e) == Some(0))
        .await;
    for n in 11..=20u32 {
        publisher
            .handle
            .publish("seq", Payload::text(n.to_string()))
            .await
            .unwrap();
    }
    sub.next("the last message", |e| number(e) == Some(20))
        .await;
    let got: Vec<u32> = sub
        .events
        .all()
        .iter()
        .filter_map(|s| number(&s.event))
        .filter(|n| *n > 0)
        .collect();
    let missed = 20 - got.len();
    assert_eq!(got, (11..=20).collect::<Vec<_>>(), "at most once, in order");
    assert_eq!(
        missed, 10,
        "everything published during the outage is missed"
    );
    sub.close().await;
    publisher.close().await;
}

// ----- graphql-ws ------------------------------------------------------------

fn ticks(every_ms: u64) -> Payload {
    GraphqlWs::subscription(
        &format!("subscription {{ ticks(every: {every_ms}) }}"),
        None,
    )
    .unwrap()
}

async fn graphql_subscriptions_survive_a_server_restart<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mut server = started(GraphqlServer::start(GraphqlOptions::default()));
    let builder = make(server.url())
        .config(fast_config().build().unwrap())
        .protocol(GraphqlWs::new());
    let mut c = Client::connect(builder);
    c.handle.subscribe_with("t1", ticks(50)).await.unwrap();
    c.next("connected", is_connected).await;
    let seen = c.next("a tick", |e| text_has(e, r#""ticks":2"#)).await;
    assert!(matches!(seen.event, Event::Message { channel: Some(ref id), .. } if id == "t1"));
    server.restart().unwrap();
    c.disconnected("the restart").await;
    c.next("the reconnect", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: true,
                ..
            }
        )
    })
    .await;
    // A fresh subscription counts from 1 again: it was sent anew.
    c.next("the first tick of the renewed subscription", |e| {
        text_has(e, r#""ticks":1}"#)
    })
    .await;
    c.close().await;
}

async fn graphql_server_pings_are_answered<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let options = GraphqlOptions {
        keepalive: ms(150),
        ..GraphqlOptions::default()
    };
    let server = started(GraphqlServer::start(options));
    let config = fast_config().ping_interval(None).build().unwrap();
    let mut c = Client::connect(make(server.url()).config(config).protocol(GraphqlWs::new()));
    c.next("connected", is_connected).await;
    // The server terminates a socket whose ping went unanswered by its next
    // one: time passing is the condition.
    pause(&c.rt, ms(1000)).await;
    c.events.check(
        c.events
            .matching(|e| matches!(e, Event::Disconnected { .. }))
            .is_empty(),
        "the server dropped us: its pings were not answered",
    );
    c.close().await;
}

async fn graphql_half_open_is_caught_by_the_protocols_heartbeat<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let server = started(GraphqlServer::start(GraphqlOptions::default()));
    let proxy = ProxyThread::start(SocketAddr::from(([127, 0, 0, 1], server.port())));
    let url = format!("ws://{}/graphql", proxy.handle.addr());
    let mut c = Client::connect(
        make(url)
            .config(fast_config().build().unwrap())
            .protocol(GraphqlWs::new()),
    );
    c.next("connected", is_connected).await;
    proxy.handle.blackhole(true);
    let seen = c.disconnected("the dead link").await;
    assert!(
        matches!(&seen.event, Event::Disconnected { reason, .. } if reason == "pong timeout"),
        "{:?}",
        seen.event
    );
    c.close().await;
}

async fn graphql_bad_token_is_terminal<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let options = GraphqlOptions {
        token: Some("right".into()),
        ..GraphqlOptions::default()
    };
    let server = started(GraphqlServer::start(options));
    let gql = GraphqlWs::new()
        .init_payload(r#"{"token":"wrong"}"#)
        .unwrap();
    let mut c = Client::connect(
        make(server.url())
            .config(fast_config().build().unwrap())
            .protocol(gql),
    );
    let (reason, code) = c.closed("the refusal").await;
    assert_eq!((reason, code), (TerminalReason::Forbidden, Some(4403)));
}

async fn graphql_init_timeout_4408_reconnects<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let options = GraphqlOptions {
        init_timeout: ms(200),
        ..GraphqlOptions::default()
    };
    let server = started(GraphqlServer::start(options));
    let proxy = ProxyThread::start(SocketAddr::from(([127, 0, 0, 1], server.port())));
    // Our connection_init reaches the server only after its 200 ms.
    proxy.handle.set_latency(ms(300));
    let url = format!("ws://{}/graphql", proxy.handle.addr());
    let mut c = Client::connect(
        make(url)
            .config(fast_config().build().unwrap())
            .protocol(GraphqlWs::new()),
    );
    let seen = c.disconnected("the server's 4408").await;
    assert!(
        matches!(
            seen.event,
            Event::Disconnected {
                code: Some(4408),
                will_reconnect: true,
                ..
            }
        ),
        "{:?}",
        seen.event
    );
    proxy.handle.set_latency(Duration::ZERO);
    c.next("connected once the link is fast", is_connected)
        .await;
    c.close().await;
}

async fn graphql_garbage_is_a_protocol_error_and_a_reconnect<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let server = PlainServer::start(Script::Garbage);
    let mut c = Client::connect(
        make(server.url())
            .config(fast_config().build().unwrap())
            .protocol(GraphqlWs::new()),
    );
    c.next("the protocol error", |e| {
        matches!(e, Event::ProtocolError { .. })
    })
    .await;
    c.next("a reconnect", |e| {
        matches!(e, Event::ReconnectScheduled { .. })
    })
    .await;
    c.next("another protocol error", |e| {
        matches!(e, Event::ProtocolError { .. })
    })
    .await;
    c.close().await;
}

// ----- Raw ---------------------------------------------------------------

async fn raw_resubscribes_against_a_plain_feed<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = PlainServer::start(Script::Feed);
    let raw = Raw::new().on_connect(Payload::text("hello"));
    let mut c = Client::connect(
        make(server.url())
            .config(fast_config().build().unwrap())
            .protocol(raw),
    );
    c.handle
        .subscribe_with("btc", Payload::text("sub btc"))
        .await
        .unwrap();
    c.next("subscribed", |e| message_text(e) == Some("ack:sub btc"))
        .await;
    server.restart();
    c.disconnected("the restart").await;
    c.next("subscribed again", |e| {
        message_text(e) == Some("ack:sub btc")
    })
    .await;
    c.handle
        .unsubscribe_with("btc", Some(Payload::text("unsub btc")))
        .await
        .unwrap();
    c.next("unsubscribed", |e| message_text(e) == Some("ack:unsub btc"))
        .await;
    assert_eq!(
        server.received(),
        ["hello", "sub btc", "hello", "sub btc", "unsub btc"]
    );
    c.close().await;
}

async fn raw_heartbeat_is_answered_only_by_the_named_reply<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    // The feed answers our "ping" with "ack:ping".
    let server = PlainServer::start(Script::Feed);
    let named = Raw::new()
        .heartbeat(RawHeartbeat::new(Payload::text("ping")).reply(Payload::text("ack:ping")));
    let mut c = Client::connect(
        make(server.url())
            .config(fast_config().build().unwrap())
            .protocol(named),
    );
    c.next("connected", is_connected).await;
    for n in 1..=2 {
        c.events
            .next_without(
                &c.rt,
                &format!("heartbeat reply {n}"),
                |e| message_text(e) == Some("ack:ping"),
                |e| matches!(e, Event::Disconnected { .. }),
            )
            .await;
    }
    c.close().await;

    // A reply the feed never sends: its "ack:ping" arrives, yet the
    // deadline stands and the link is given up.
    let wrong =
        Raw::new().heartbeat(RawHeartbeat::new(Payload::text("ping")).reply(Payload::text("pong")));
    let mut c = Client::connect(
        make(server.url())
            .config(fast_config().build().unwrap())
            .protocol(wrong),
    );
    c.next("connected", is_connected).await;
    c.next("the feed's answer, not the reply", |e| {
        message_text(e) == Some("ack:ping")
    })
    .await;
    let seen = c.disconnected("the pong timeout").await;
    assert!(
        matches!(&seen.event, Event::Disconnected { reason, .. } if reason == "pong timeout"),
        "{:?}",
        seen.event
    );
    c.close().await;
}

on_every_runtime!(
    nats_subscriptions_survive_a_server_restart: nats,
    nats_headers_go_out_as_hpub_and_come_back_from_hmsg: nats,
    nats_server_pings_are_answered: nats,
    nats_half_open_is_caught_by_the_protocols_heartbeat: nats,
    nats_authorization_violation_is_terminal: nats,
    nats_lame_duck_gives_a_spread_reconnect: nats,
    nats_counts_what_a_subscriber_misses_in_an_outage: nats,
    graphql_subscriptions_survive_a_server_restart: graphql,
    graphql_server_pings_are_answered: graphql,
    graphql_half_open_is_caught_by_the_protocols_heartbeat: graphql,
    graphql_bad_token_is_terminal: graphql,
    graphql_init_timeout_4408_reconnects: graphql,
    graphql_garbage_is_a_protocol_error_and_a_reconnect,
    raw_resubscribes_against_a_plain_feed,
    raw_heartbeat_is_answered_only_by_the_named_reply,
);
