//! The runtime end to end: a node on the memory store served by the tokio
//! accept loop on 127.0.0.1, driven by raw tungstenite clients (for exact
//! frames) and a real redial client; `clients.rs` runs the redial-client
//! scenarios on every client runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use futures_util::{FutureExt, SinkExt, StreamExt};
use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::wire::{self, error_code, Frame, Hello, Limits, Welcome};
use redial_core::{Config, Event, Wire};
use redial_server::memory::MemoryStore;
use redial_server::store::{
    CreateRefused, Notices, Owner, PublishOutcome, SessionId, SessionState, Store, StoreError,
    StoreFuture, StoredMessage,
};
use redial_server::token::TokenKey;
use redial_server::{Node, Peer, Policy, Refusal, Rejection, ServerConfig, ServerConfigBuilder};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn config() -> ServerConfigBuilder {
    ServerConfig::builder().key(TokenKey::new(1, [4; 32]))
}

/// Serves `node` with the library's accept loop; returns the URL.
async fn serve(node: &Node) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(redial_server::tokio::serve(listener, node.clone()));
    format!("ws://{addr}/")
}

/// Serves with an accept loop that outlives a shutdown, so upgrades after
/// it are answered (and refused) too.
async fn serve_forever(node: &Node) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = node.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(redial_server::tokio::serve_connection(s, node.clone()));
        }
    });
    format!("ws://{addr}/")
}

fn node(cfg: ServerConfigBuilder) -> Node {
    Node::builder(cfg.build().unwrap(), MemoryStore::new()).build()
}

/// Dials with `redial.v1` offered and extra headers.
async fn dial(
    url: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", wire::SUBPROTOCOL.parse().unwrap());
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        wire::SUBPROTOCOL
    );
    Ok(ws)
}

fn http_status(e: tokio_tungstenite::tungstenite::Error) -> (u16, Option<String>) {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => (
            r.status().as_u16(),
            r.headers()
                .get("Retry-After")
                .map(|v| v.to_str().unwrap().to_owned()),
        ),
        other => panic!("not an HTTP refusal: {other}"),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, f: Frame) {
    ws.send(Message::Binary(f.to_bytes())).await.unwrap();
}

/// The next frame; `None` at a close (with its code).
async fn next<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<Frame, Option<u16>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("frame in time")
        {
            Some(Ok(Message::Binary(b))) => return Ok(wire::decode(b, &Limits::default()).unwrap()),
            Some(Ok(Message::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    token: Option<ResumeToken>,
    last_offset: u64,
) -> Welcome {
    send(
        ws,
        Frame::Hello(Hello {
            version: 1,
            resume_token: token,
            last_offset,
            name: None,
        }),
    )
    .await;
    match next(ws).await {
        Ok(Frame::Welcome(w)) => w,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn message(f: Frame) -> (u64, String) {
    match f {
        Frame::Message {
            offset, payload, ..
        } => (offset, payload.as_text().unwrap().to_owned()),
        other => panic!("expected MESSAGE, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_selects_redial_v1_and_refuses_without_it() {
    let node = node(config());
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    let w = hello(&mut ws, None, 0).await;
    assert!(!w.resumed);
    assert!(redial_server::names::is_valid_name(w.name.as_str()));
    // No subprotocol offered: 400.
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    assert_eq!(http_status(err).0, 400);
    // A text message is a protocol error: ERROR malformed_frame, 1002.
    ws.send(Message::Text("hi".into())).await.unwrap();
    assert!(matches!(
        next(&mut ws).await,
        Ok(Frame::Error {
            code: error_code::MALFORMED_FRAME,
            ..
        })
    ));
    assert_eq!(next(&mut ws).await, Err(Some(1002)));
    assert_eq!(node.stats().protocol_errors, 1);
}

#[tokio::test]
async fn authorization_hook_rejects_with_its_status_and_names_the_caller() {
    struct OwnChannel;
    impl Policy for OwnChannel {
        fn subscribe(&self, peer: Peer<'_>, channel: &str) -> Result<(), Refusal> {
            match peer.principal {
                Some(p) if channel == format!("user.{p}") => Ok(()),
                _ => Err(Refusal::new(error_code::UNAUTHORIZED, "not yours")),
            }
        }
    }
    let node = Node::builder(config().build().unwrap(), MemoryStore::new())
        .policy(OwnChannel)
        .authorize(
            |req: &http::Request<()>| match req.headers().get("authorization") {
                Some(v) if v == "Bearer alice" => Ok(Some("alice".to_owned())),
                Some(_) => Err(Rejection::new(403, "forbidden")),
                None => Err(Rejection::new(401, "who are you")),
            },
        )
        .build();
    let url = serve(&node).await;
    assert_eq!(http_status(dial(&url, &[]).await.unwrap_err()).0, 401);
    assert_eq!(
        http_status(
            dial(&url, &[("authorization", "Bearer mallory")])
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    let mut ws = dial(&url, &[("authorization", "Bearer alice")])
        .await
        .unwrap();
    hello(&mut ws, None, 0).await;
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "user.alice".into(),
        },
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Ok(Frame::Subscribed {
            channel: "user.alice".into()
        })
    );
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "user.bob".into(),
        },
    )
    .await;
    assert!(matches!(
        next(&mut ws).await,
        Ok(Frame::SubscribeError {
            code: error_code::UNAUTHORIZED,
            ..
        })
    ));
    assert_eq!(node.stats().upgrades_refused, 2);
}

#[tokio::test]
async fn resume_on_the_same_node_replays_in_order() {
    let node = node(config());
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    let w = hello(&mut ws, None, 0).await;
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "news".into(),
        },
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Ok(Frame::Subscribed {
            channel: "news".into()
        })
    );
    for m in ["m1", "m2", "m3"] {
        node.publish("news", Payload::text(m)).await.unwrap();
    }
    for want in [(1, "m1"), (2, "m2"), (3, "m3")] {
        let (o, p) = message(next(&mut ws).await.unwrap());
        assert_eq!((o, p.as_str()), want);
    }
    send(&mut ws, Frame::Received { offset: 1 }).await;
    drop(ws);
    // Published while the client is away.
    node.publish("news", Payload::text("m4")).await.unwrap();

    let mut ws = dial(&url, &[]).await.unwrap();
    let w2 = hello(&mut ws, Some(w.resume_token), 1).await;
    assert!(w2.resumed);
    assert_eq!(w2.session_id, w.session_id);
    assert_eq!(w2.kept, vec![Text::from("news")]);
    for want in [(2, "m2"), (3, "m3"), (4, "m4")] {
        let (o, p) = message(next(&mut ws).await.unwrap());
        assert_eq!((o, p.as_str()), want);
    }
    let st = node.stats();
    assert_eq!((st.sessions_created, st.sessions_resumed), (1, 1));
}

#[tokio::test]
async fn a_publish_whose_ack_was_lost_is_applied_once() {
    let node = node(config());
    let url = serve(&node).await;
    let mut sub = dial(&url, &[]).await.unwrap();
    hello(&mut sub, None, 0).await;
    send(
        &mut sub,
        Frame::Subscribe {
            channel: "c".into(),
        },
    )
    .await;
    next(&mut sub).await.unwrap();

    let mut publisher = dial(&url, &[]).await.unwrap();
    let w = hello(&mut publisher, None, 0).await;
    let publish = |seq: u64, text: &str| Frame::Publish {
        seq,
        channel: Some("c".into()),
        payload: Payload::text(text),
    };
    send(&mut publisher, publish(1, "a")).await;
    // Stored (the subscriber has it); the publisher never reads its ACK.
    assert_eq!(message(next(&mut sub).await.unwrap()).1, "a");
    drop(publisher);

    let mut publisher = dial(&url, &[]).await.unwrap();
    let w2 = hello(&mut publisher, Some(w.resume_token), 0).await;
    assert!(w2.resumed);
    assert_eq!(w2.last_client_seq, 1);
    // A client that ignored last_client_seq sends 1 again: acknowledged,
    // not applied.
    send(&mut publisher, publish(1, "a")).await;
    send(&mut publisher, publish(2, "b")).await;
    assert_eq!(next(&mut publisher).await, Ok(Frame::Ack { seq: 1 }));
    assert_eq!(next(&mut publisher).await, Ok(Frame::Ack { seq: 2 }));
    node.publish("c", Payload::text("end")).await.unwrap();
    assert_eq!(message(next(&mut sub).await.unwrap()).1, "b");
    assert_eq!(message(next(&mut sub).await.unwrap()).1, "end");
}

fn client_config() -> Config {
    Config::builder()
        .backoff(redial_core::Backoff::full_jitter(
            Duration::from_millis(20),
            Duration::from_millis(50),
        ))
        .stable_after(Duration::from_millis(50))
        .build()
        .unwrap()
}

async fn wait_event(
    events: &mut redial_tokio::Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = events
                .recv()
                .await
                .unwrap_or_else(|| panic!("events ended waiting for {what}"));
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} in time"))
}

#[tokio::test(start_paused = true)]
async fn admission_refuses_with_an_honest_retry_after() {
    let node = node(config().admission_per_sec(Some(1)));
    let url = serve(&node).await;
    let _a = dial(&url, &[]).await.unwrap();
    let (s, ra) = http_status(dial(&url, &[]).await.unwrap_err());
    assert_eq!((s, ra.as_deref()), (503, Some("1")));
    let (s, ra) = http_status(dial(&url, &[]).await.unwrap_err());
    assert_eq!((s, ra.as_deref()), (503, Some("2")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _b = dial(&url, &[]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _c = dial(&url, &[]).await.unwrap();
    let st = node.stats();
    assert_eq!((st.upgrades, st.admissions_throttled), (3, 2));
}

#[tokio::test]
async fn shutdown_sends_going_away_closes_1001_and_refuses_new_upgrades() {
    let node = node(config().going_away(1500, 4000));
    let url = serve_forever(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    hello(&mut ws, None, 0).await;
    let (c, mut events) = redial_tokio::builder(url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    wait_event(&mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    let n = node.clone();
    let down = tokio::spawn(async move { n.shut_down().await });
    assert_eq!(
        next(&mut ws).await,
        Ok(Frame::GoingAway {
            retry_after_ms: 1500,
            window_ms: 4000
        })
    );
    assert_eq!(next(&mut ws).await, Err(Some(1001)));
    let e = wait_event(&mut events, "GOING_AWAY", |e| {
        matches!(e, Event::GoingAway { .. })
    })
    .await;
    assert!(
        matches!(e, Event::GoingAway { retry_after, window } if retry_after == Duration::from_millis(1500) && window == Duration::from_secs(4))
    );
    wait_event(&mut events, "the close", |e| {
        matches!(
            e,
            Event::Disconnected {
                code: Some(1001),
                ..
            }
        )
    })
    .await;
    down.await.unwrap();
    assert!(node.is_shutting_down());
    // Retry-After: the GOING_AWAY wait and window, in whole seconds.
    let (s, ra) = http_status(dial(&url, &[]).await.unwrap_err());
    assert_eq!((s, ra.as_deref()), (503, Some("6")));
    drop(c);
}

/// A subscriber that takes nothing: no RECEIVED and (after WELCOME) no
/// reads. The node stops at `max_backlog` MESSAGEs, then closes with
/// ERROR slow_consumer and 1013; the client resumes from its offset and
/// gets everything after it.
#[tokio::test]
async fn a_slow_subscriber_is_closed_with_1013_and_resumes_from_its_offset() {
    let node = node(
        config()
            .outbound_window(4, 1 << 20)
            .fetch_batch(2)
            .max_backlog(8)
            .stall_timeout_ms(300),
    );
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    let w = hello(&mut ws, None, 0).await;
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "c".into(),
        },
    )
    .await;
    next(&mut ws).await.unwrap();
    for i in 1..=20 {
        node.publish("c", Payload::text(format!("m{i}")))
            .await
            .unwrap();
    }
    let mut offsets = Vec::new();
    let close = loop {
        match next(&mut ws).await {
            Ok(Frame::Message { offset, .. }) => offsets.push(offset),
            Ok(Frame::Error { code, terminal, .. }) => {
                assert_eq!((code, terminal), (error_code::SLOW_CONSUMER, false));
            }
            Ok(other) => panic!("{other:?}"),
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1013));
    assert_eq!(node.stats().slow_consumers, 1);
    assert_eq!(
        offsets,
        (1..=8).collect::<Vec<_>>(),
        "at most max_backlog sent"
    );
    // It had delivered 5.
    let mut ws = dial(&url, &[]).await.unwrap();
    let w2 = hello(&mut ws, Some(w.resume_token), 5).await;
    assert!(w2.resumed);
    for want in 6..=20u64 {
        let (o, p) = message(next(&mut ws).await.unwrap());
        assert_eq!((o, p), (want, format!("m{want}")));
        send(&mut ws, Frame::Received { offset: o }).await;
    }
}

#[tokio::test]
async fn axum_handler_serves_wire() {
    let node = node(config());
    let app = axum::Router::new()
        .route("/wire", axum::routing::get(redial_server::axum::handler))
        .with_state(node.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/wire", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let err = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_err();
    assert_eq!(http_status(err).0, 400);
    let (c, mut events) = redial_tokio::builder(url)
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    c.subscribe("c").await.unwrap();
    wait_event(&mut events, "subscribed", |e| {
        matches!(e, Event::Subscribed { .. })
    })
    .await;
    c.publish("c", Payload::text("hello")).await.unwrap();
    let e = wait_event(&mut events, "the echo", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Message { offset: Some(1), ref payload, .. } if payload.as_text() == Some("hello"))
    );
    let _ = Arc::new(());
}

#[tokio::test]
async fn resuming_a_connected_session_closes_the_old_connection() {
    let node = node(config());
    let url = serve(&node).await;
    let mut old = dial(&url, &[]).await.unwrap();
    let w = hello(&mut old, None, 0).await;
    let mut new = dial(&url, &[]).await.unwrap();
    let w2 = hello(&mut new, Some(w.resume_token), 0).await;
    assert!(w2.resumed);
    // The old holder is told by the store's takeover notice, without
    // having to touch the session first.
    assert_eq!(next(&mut old).await, Err(Some(1000)));
    send(
        &mut new,
        Frame::Publish {
            seq: 1,
            channel: None,
            payload: Payload::text("x"),
        },
    )
    .await;
    assert_eq!(next(&mut new).await, Ok(Frame::Ack { seq: 1 }));
    assert_eq!(node.stats().sessions, 1);
}

/// A peer that completes the handshake and then reads nothing: the socket
/// fills, the connection stalls and is closed, and its task ends even
/// though the close frame can never be written.
#[tokio::test]
async fn a_peer_that_never_reads_does_not_keep_its_connection_alive() {
    let node = node(
        config()
            .outbound_window(64, 8 << 20)
            .max_backlog(1024)
            .stall_timeout_ms(200)
            .drain_timeout_ms(5000),
    );
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    hello(&mut ws, None, 0).await;
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "big".into(),
        },
    )
    .await;
    next(&mut ws).await.unwrap();
    let payload = Payload::binary(vec![7u8; 256 << 10]);
    for _ in 0..200 {
        node.publish("big", payload.clone()).await.unwrap();
    }
    // 50 MB for a socket that reads nothing: the writer blocks on it.
    let started = tokio::time::Instant::now();
    node.shut_down().await;
    assert_eq!(
        node.stats().live_connections,
        0,
        "the connection task is stuck"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(ws);
}

/// Timeouts as large as the config allows do not overflow the clock.
#[tokio::test]
async fn huge_timeouts_are_as_good_as_never() {
    let node = node(
        config()
            .stall_timeout_ms(u64::MAX)
            .hello_timeout_ms(u64::MAX)
            .drain_timeout_ms(u64::MAX / 2),
    );
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    hello(&mut ws, None, 0).await;
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "c".into(),
        },
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Ok(Frame::Subscribed {
            channel: "c".into()
        })
    );
}

/// Rebalancing: GOING_AWAY and 1001 for the connections open now, while
/// new upgrades are still accepted; `close_all` closes with the given code
/// and the session stays resumable.
#[tokio::test]
async fn going_away_and_close_all_reach_open_connections_only() {
    let node = node(config());
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    let w = hello(&mut ws, None, 0).await;
    node.going_away(700, 300);
    assert_eq!(
        next(&mut ws).await,
        Ok(Frame::GoingAway {
            retry_after_ms: 700,
            window_ms: 300
        })
    );
    assert_eq!(next(&mut ws).await, Err(Some(1001)));
    assert!(!node.is_shutting_down());

    let mut ws = dial(&url, &[]).await.unwrap();
    let w2 = hello(&mut ws, Some(w.resume_token), 0).await;
    assert!(w2.resumed);
    node.close_all(4020, "admin");
    assert_eq!(next(&mut ws).await, Err(Some(4020)));
    let mut ws = dial(&url, &[]).await.unwrap();
    assert!(hello(&mut ws, Some(w2.resume_token), 0).await.resumed);
}

/// The read buffer starts small ([`redial_server::DEFAULT_READ_BUFFER`])
/// and grows: a PUBLISH far larger than it arrives whole.
#[tokio::test]
async fn messages_larger_than_the_read_buffer_arrive_whole() {
    let node = node(config());
    assert_eq!(
        node.config().read_buffer(),
        redial_server::DEFAULT_READ_BUFFER
    );
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    hello(&mut ws, None, 0).await;
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "c".into(),
        },
    )
    .await;
    next(&mut ws).await.unwrap();
    let big = Payload::binary(vec![0xA5u8; 300 << 10]);
    send(
        &mut ws,
        Frame::Publish {
            seq: 1,
            channel: Some("c".into()),
            payload: big.clone(),
        },
    )
    .await;
    let mut got = None;
    for _ in 0..2 {
        match next(&mut ws).await.unwrap() {
            Frame::Message { payload, .. } => got = Some(payload),
            Frame::Ack { seq } => assert_eq!(seq, 1),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, Some(big));
}

/// A client that closes gets the server's half of the close handshake
/// back, not just the end of the TCP stream.
#[tokio::test]
async fn a_client_close_is_answered() {
    let node = node(config());
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    hello(&mut ws, None, 0).await;
    ws.close(None).await.unwrap();
    let mut echoed = false;
    while let Some(m) = ws.next().await {
        if matches!(m, Ok(Message::Close(_))) {
            echoed = true;
        }
    }
    assert!(echoed, "no close frame came back");
}

#[tokio::test]
async fn a_clock_hook_expires_tokens_and_keeps_timers_running() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let offset = Arc::new(AtomicU64::new(0));
    let shift = offset.clone();
    let cfg = config()
        .token_lifetime_ms(60_000)
        .hello_timeout_ms(200)
        .build()
        .unwrap();
    let node = Node::builder(cfg, MemoryStore::new())
        .clock(move || {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            u64::try_from(wall.as_millis()).unwrap() + shift.load(Ordering::Relaxed)
        })
        .build();
    let url = serve(&node).await;
    let mut ws = dial(&url, &[]).await.unwrap();
    let w = hello(&mut ws, None, 0).await;
    // The node answers a close after it detached the session, so the
    // lifetime counts from before the jump.
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    // Past the token lifetime on the node's clock only.
    offset.store(61_000, Ordering::Relaxed);
    let mut ws = dial(&url, &[]).await.unwrap();
    let w2 = hello(&mut ws, Some(w.resume_token), 0).await;
    assert!(!w2.resumed);
    assert_ne!(w2.session_id, w.session_id);

    // Deadlines taken after the jump still fire on tokio's timer: a
    // connection without HELLO is closed after the hello timeout, not a
    // minute later.
    let mut silent = dial(&url, &[]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), next(&mut silent)).await;
    assert!(matches!(closed, Ok(Err(_))), "{closed:?}");
}

#[tokio::test(start_paused = true)]
async fn the_admission_limit_can_change_at_runtime() {
    let node = node(config());
    let url = serve(&node).await;
    let _a = dial(&url, &[]).await.unwrap();
    let _b = dial(&url, &[]).await.unwrap();
    node.set_admission_limit(Some(1));
    let _c = dial(&url, &[]).await.unwrap();
    let (s, ra) = http_status(dial(&url, &[]).await.unwrap_err());
    assert_eq!((s, ra.as_deref()), (503, Some("1")));
    node.set_admission_limit(None);
    let _d = dial(&url, &[]).await.unwrap();
    assert_eq!(node.stats().admissions_throttled, 1);
}

/// A PUBLISH whose encoded frame is exactly `len` bytes.
fn publish_of_len(len: usize) -> Bytes {
    let frame = |n: usize| Frame::Publish {
        seq: 1,
        channel: None,
        payload: Payload::binary(vec![0x5Au8; n]),
    };
    let mut n = len;
    loop {
        let got = frame(n).encoded_len();
        if got == len {
            return frame(n).to_bytes();
        }
        n = n + len - got;
    }
}

/// PROTOCOL.md 5: a frame over the 1 MiB limit is malformed: ERROR
/// `malformed_frame`, then 1002, whatever its size, and the node keeps
/// serving the other connections.
async fn over_limit_frames_are_malformed(url: &str, node: &Node) {
    let limit = node.config().limits().max_frame_len;
    assert_eq!(limit, 1 << 20);
    let mut other = dial(url, &[]).await.unwrap();
    hello(&mut other, None, 0).await;
    for len in [limit + 1, 8 << 20] {
        let ws = dial(url, &[]).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::Binary(
            Frame::Hello(Hello {
                version: 1,
                resume_token: None,
                last_offset: 0,
                name: None,
            })
            .to_bytes(),
        ))
        .await
        .unwrap();
        // The server stops reading mid-frame: write from another task so
        // this one can read the answer.
        let big = publish_of_len(len);
        let writer = tokio::spawn(async move {
            let _ = sink.send(Message::Binary(big)).await;
            sink
        });
        let mut frames = Vec::new();
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an answer in time")
            {
                Some(Ok(Message::Binary(b))) => {
                    frames.push(wire::decode(b, &Limits::default()).unwrap())
                }
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{len} bytes: no close frame: {e}; got {frames:?}"),
                None => panic!("{len} bytes: no close frame; got {frames:?}"),
            }
        };
        assert!(
            matches!(frames.first(), Some(Frame::Welcome(_))),
            "{frames:?}"
        );
        assert!(
            matches!(
                frames.get(1),
                Some(Frame::Error { code, .. }) if *code == error_code::MALFORMED_FRAME
            ),
            "{len} bytes: {frames:?}"
        );
        assert_eq!(close, Some(1002), "{len} bytes");
        writer.abort();
    }
    send(
        &mut other,
        Frame::Publish {
            seq: 1,
            channel: None,
            payload: Payload::text("still here"),
        },
    )
    .await;
    assert_eq!(next(&mut other).await, Ok(Frame::Ack { seq: 1 }));
    assert_eq!(node.stats().protocol_errors, 2);
}

#[tokio::test]
async fn frames_over_the_limit_get_malformed_frame_then_1002() {
    let node = node(config());
    let url = serve(&node).await;
    over_limit_frames_are_malformed(&url, &node).await;
}

#[tokio::test]
async fn frames_over_the_limit_get_malformed_frame_then_1002_behind_axum() {
    let node = node(config());
    let app = axum::Router::new()
        .route("/wire", axum::routing::get(redial_server::axum::handler))
        .with_state(node.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    over_limit_frames_are_malformed(&format!("ws://{addr}/wire"), &node).await;
}

/// A connection to `node` over an in-process pipe of `buffer` bytes each
/// way (no sockets: thousands are cheap, and a paused clock advances only
/// when every task waits on something in this process).
async fn pipe(node: &Node, buffer: usize) -> WebSocketStream<DuplexStream> {
    let (client, server) = tokio::io::duplex(buffer);
    let server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
    tokio::spawn(redial_server::tokio::serve_socket(
        node.clone(),
        server,
        None,
    ));
    WebSocketStream::from_raw_socket(client, Role::Client, None).await
}

async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, channel: &str) {
    send(
        ws,
        Frame::Subscribe {
            channel: channel.into(),
        },
    )
    .await;
    assert!(matches!(next(ws).await, Ok(Frame::Subscribed { .. })));
}

/// Reads `n` MESSAGEs, checks they are offsets `1..=n` in order, and
/// RECEIVEs as it goes so the backlog keeps moving.
async fn take_messages<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, n: u64) {
    for want in 1..=n {
        let (offset, _) = message(next(ws).await.unwrap());
        assert_eq!(offset, want);
        if offset % 256 == 0 || offset == n {
            send(ws, Frame::Received { offset }).await;
        }
    }
}

/// Publishes `n` messages, letting the node route the notices every few
/// so the store's notice buffer never overflows (which would wake every
/// connection, correctly, and is not what this measures).
async fn publish_many(node: &Node, channel: &str, n: u64, size: usize) {
    for i in 0..n {
        node.publish(channel, Payload::text("x".repeat(size)))
            .await
            .unwrap();
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
}

/// A publish wakes the connections subscribed to its channel and no other:
/// 10,000 notices on one channel cost 10,000 wake-ups of its one
/// subscriber, and none of the 1,000 connections subscribed elsewhere.
#[tokio::test]
async fn notices_wake_only_the_subscribers_of_their_channel() {
    let node = node(config());
    let mut elsewhere = Vec::new();
    for _ in 0..1000 {
        let mut ws = pipe(&node, 4 << 10).await;
        hello(&mut ws, None, 0).await;
        subscribe(&mut ws, "elsewhere").await;
        elsewhere.push(ws);
    }
    let mut busy = pipe(&node, 64 << 10).await;
    hello(&mut busy, None, 0).await;
    subscribe(&mut busy, "busy").await;
    let before = node.stats().notice_wakeups;
    // Read while publishing: the store keeps 4096 per session.
    let reader = tokio::spawn(async move { take_messages(&mut busy, 10_000).await });
    publish_many(&node, "busy", 10_000, 16).await;
    reader.await.unwrap();
    assert_eq!(node.stats().notice_wakeups - before, 10_000);
    for ws in &mut elsewhere {
        assert!(ws.next().now_or_never().is_none(), "nothing was sent");
    }
}

/// A subscriber that stops reading does not hold up the others: they get
/// every message while its socket stays full.
#[tokio::test]
async fn a_slow_subscriber_does_not_slow_the_others() {
    let node = node(config().stall_timeout_ms(600_000));
    let mut slow = pipe(&node, 4 << 10).await;
    hello(&mut slow, None, 0).await;
    subscribe(&mut slow, "c").await;
    let mut fast = Vec::new();
    for _ in 0..3 {
        let mut ws = pipe(&node, 64 << 10).await;
        hello(&mut ws, None, 0).await;
        subscribe(&mut ws, "c").await;
        fast.push(ws);
    }
    let reader = tokio::spawn(async move {
        for ws in &mut fast {
            take_messages(ws, 2_000).await;
        }
        fast
    });
    publish_many(&node, "c", 2_000, 1 << 10).await;
    let _fast = reader.await.unwrap();
    // The slow one is still open, its window full, and gets its first
    // message once it reads.
    assert_eq!(node.stats().live_connections, 4);
    let (offset, _) = message(next(&mut slow).await.unwrap());
    assert_eq!(offset, 1);
}

/// GOING_AWAY reaches every connection however many orders came at once
/// (the orders are a watch, not a queue that can overflow).
#[tokio::test]
async fn every_connection_gets_its_going_away_after_a_burst_of_orders() {
    let node = node(config());
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut ws = pipe(&node, 4 << 10).await;
        hello(&mut ws, None, 0).await;
        conns.push(ws);
    }
    for i in 0..40 {
        node.going_away(100 + i, 50);
    }
    for ws in &mut conns {
        assert_eq!(
            next(ws).await,
            Ok(Frame::GoingAway {
                retry_after_ms: 139,
                window_ms: 50
            })
        );
        assert_eq!(next(ws).await, Err(Some(1001)));
    }
}

/// The memory store, or a store whose calls never finish once `hung` is set.
#[derive(Default)]
struct Hangs {
    inner: MemoryStore,
    hung: AtomicBool,
}

impl Hangs {
    fn gate<'a, T: Send + 'a>(&'a self, call: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        if self.hung.load(Ordering::Relaxed) {
            Box::pin(std::future::pending())
        } else {
            call
        }
    }
}

impl Store for Hangs {
    fn create<'a>(
        &'a self,
        name: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        self.gate(self.inner.create(name, now_ms))
    }
    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        self.gate(self.inner.resume(session, lifetime_ms, now_ms))
    }
    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        self.gate(self.inner.detach(owner, now_ms))
    }
    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        self.gate(self.inner.end(owner))
    }
    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        self.gate(self.inner.publish(owner, seq, channel, payload))
    }
    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        self.gate(self.inner.subscribe(owner, channel))
    }
    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        self.gate(self.inner.unsubscribe(owner, channel))
    }
    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        self.gate(self.inner.fetch(owner, after, max))
    }
    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()> {
        self.gate(self.inner.received(owner, offset))
    }
    fn broadcast<'a>(&'a self, channel: &'a str, payload: &'a Payload) -> StoreFuture<'a, ()> {
        self.gate(self.inner.broadcast(channel, payload))
    }
    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool> {
        self.gate(self.inner.send_to(name, payload))
    }
    fn notices(&self) -> Notices {
        self.inner.notices()
    }
}

/// A store call that never returns fails after the store timeout: ERROR
/// `internal` (not terminal), close 1011, and the session resumes once the
/// store answers again; the application's calls are bounded the same way.
#[tokio::test(start_paused = true)]
async fn a_hung_store_times_out_and_the_session_stays_resumable() {
    let store = Arc::new(Hangs::default());
    let cfg = config().store_timeout_ms(2_000).build().unwrap();
    let build = || Node::builder_arc(cfg, store.clone()).build();
    // The node takes its metric handles from the recorder set while built.
    #[cfg(feature = "metrics")]
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    #[cfg(feature = "metrics")]
    let node = metrics::with_local_recorder(&recorder, build);
    #[cfg(not(feature = "metrics"))]
    let node = build();
    let mut ws = pipe(&node, 4 << 10).await;
    let w = hello(&mut ws, None, 0).await;
    store.hung.store(true, Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    send(
        &mut ws,
        Frame::Subscribe {
            channel: "c".into(),
        },
    )
    .await;
    assert!(
        matches!(
            next(&mut ws).await,
            Ok(Frame::Error { code, terminal: false, .. }) if code == error_code::INTERNAL
        ),
        "ERROR internal"
    );
    assert_eq!(next(&mut ws).await, Err(Some(1011)));
    assert_eq!(start.elapsed(), Duration::from_millis(2_000));
    assert!(matches!(
        node.publish("c", Payload::text("x")).await,
        Err(StoreError::TimedOut(2_000))
    ));
    store.hung.store(false, Ordering::Relaxed);
    let mut ws = pipe(&node, 4 << 10).await;
    assert!(hello(&mut ws, Some(w.resume_token), 0).await.resumed);

    #[cfg(feature = "metrics")]
    {
        let body = recorder.handle().render();
        for line in [
            r#"redial_server_store_timeouts_total{op="subscribe"} 1"#,
            r#"redial_server_store_timeouts_total{op="broadcast"} 1"#,
            r#"redial_server_store_timeouts_total{op="resume"} 0"#,
            // Timed-out calls are timed too.
            r#"redial_server_store_seconds_count{op="subscribe"} 1"#,
            r#"redial_server_store_seconds_count{op="create"} 1"#,
            r#"redial_server_sessions_total{kind="created"} 1"#,
            r#"redial_server_sessions_total{kind="resumed"} 1"#,
        ] {
            assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
        }
    }
}

/// The node on a multi-thread runtime: connection tasks, the notice router
/// and the publisher on different threads; every subscriber gets every
/// message in order, and a session resumes where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_multi_thread_runtime_fans_out_and_resumes() {
    let node = node(config());
    let url = serve(&node).await;
    let mut readers = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..50 {
        let mut ws = dial(&url, &[]).await.unwrap();
        tokens.push(hello(&mut ws, None, 0).await.resume_token);
        subscribe(&mut ws, "c").await;
        readers.push(tokio::spawn(async move {
            take_messages(&mut ws, 500).await;
        }));
    }
    publish_many(&node, "c", 500, 64).await;
    for r in readers {
        r.await.unwrap();
    }
    // Every reader RECEIVED all 500; one more message, then a resume.
    node.publish("c", Payload::text("after")).await.unwrap();
    let mut ws = dial(&url, &[]).await.unwrap();
    let token = tokens.pop().unwrap();
    assert!(hello(&mut ws, Some(token), 500).await.resumed);
    assert_eq!(message(next(&mut ws).await.unwrap()), (501, "after".into()));
}
