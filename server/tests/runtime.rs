//! The runtime end to end: a node on the memory store served by the tokio
//! accept loop on 127.0.0.1, driven by raw tungstenite clients (for exact
//! frames) and real redial clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::wire::{self, error_code, Frame, Hello, Limits, Welcome};
use redial_core::{Config, Event, Wire};
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{
    Node, Peer, Policy, PublishVerdict, Refusal, Rejection, ServerConfig, ServerConfigBuilder,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
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

async fn send(ws: &mut Ws, f: Frame) {
    ws.send(Message::Binary(f.to_bytes())).await.unwrap();
}

/// The next frame; `None` at a close (with its code).
async fn next(ws: &mut Ws) -> Result<Frame, Option<u16>> {
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

async fn hello(ws: &mut Ws, token: Option<ResumeToken>, last_offset: u64) -> Welcome {
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

/// Real redial clients: the publisher's connection is closed under it by a
/// refused publish (ERROR rate_limited, 1013); it resumes and sends again,
/// and the subscriber gets every publish exactly once, in order.
#[tokio::test]
async fn publishes_are_delivered_exactly_once_across_a_reconnect() {
    struct RefuseP3Once(std::sync::atomic::AtomicBool);
    impl Policy for RefuseP3Once {
        fn publish(&self, _: Peer<'_>, _: Option<&str>, payload: &Payload) -> PublishVerdict {
            if payload.as_text() == Some("p3")
                && !self.0.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return PublishVerdict::Reject(Refusal::new(error_code::RATE_LIMITED, "once"));
            }
            PublishVerdict::FanOut
        }
    }
    let node = Node::builder(config().build().unwrap(), MemoryStore::new())
        .policy(RefuseP3Once(Default::default()))
        .build();
    let url = serve(&node).await;
    let (sub, mut sub_events) = redial_tokio::builder(url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    sub.subscribe("c").await.unwrap();
    wait_event(&mut sub_events, "subscribed", |e| {
        matches!(e, Event::Subscribed { .. })
    })
    .await;
    let (publisher, mut pub_events) = redial_tokio::builder(url)
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    for i in 1..=5 {
        publisher
            .publish("c", Payload::text(format!("p{i}")))
            .await
            .unwrap();
    }
    wait_event(&mut pub_events, "the refusal", |e| {
        matches!(
            e,
            Event::ServerError {
                code: error_code::RATE_LIMITED,
                ..
            }
        )
    })
    .await;
    wait_event(&mut pub_events, "the resumed connection", |e| {
        matches!(e, Event::Connected { resumed: true, .. })
    })
    .await;
    wait_event(&mut pub_events, "the last ACK", |e| {
        matches!(e, Event::Acked { seq: 5 })
    })
    .await;
    let mut got = Vec::new();
    while got.len() < 5 {
        if let Event::Message { payload, .. } = wait_event(&mut sub_events, "messages", |e| {
            matches!(e, Event::Message { .. })
        })
        .await
        {
            got.push(payload.as_text().unwrap().to_owned());
        }
    }
    node.publish("c", Payload::text("end")).await.unwrap();
    let Event::Message { payload, .. } = wait_event(&mut sub_events, "end", |e| {
        matches!(e, Event::Message { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(got, ["p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(
        payload.as_text(),
        Some("end"),
        "nothing after p5 but the sentinel"
    );
}

#[tokio::test]
async fn subscribe_denied_by_the_policy_reaches_a_redial_client() {
    struct NoAdmin;
    impl Policy for NoAdmin {
        fn subscribe(&self, _: Peer<'_>, channel: &str) -> Result<(), Refusal> {
            if channel == "admin" {
                return Err(Refusal::new(error_code::UNAUTHORIZED, "forbidden"));
            }
            Ok(())
        }
    }
    let node = Node::builder(config().build().unwrap(), MemoryStore::new())
        .policy(NoAdmin)
        .build();
    let url = serve(&node).await;
    let (c, mut events) = redial_tokio::builder(url)
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    c.subscribe("admin").await.unwrap();
    let e = wait_event(&mut events, "the refusal", |e| {
        matches!(e, Event::SubscribeFailed { .. })
    })
    .await;
    assert!(
        matches!(e, Event::SubscribeFailed { code: error_code::UNAUTHORIZED, ref channel, .. } if channel == "admin")
    );
    c.subscribe("news").await.unwrap();
    wait_event(
        &mut events,
        "news",
        |e| matches!(e, Event::Subscribed { channel } if channel == "news"),
    )
    .await;
}

#[tokio::test]
async fn requests_reach_the_application_which_answers_directly() {
    let node = Node::builder(config().build().unwrap(), MemoryStore::new())
        .on_request(|req, node| {
            tokio::spawn(async move {
                let answer = format!("re:{}", req.payload.as_text().unwrap_or(""));
                node.send_to(&req.name, Payload::text(answer))
                    .await
                    .unwrap();
            });
        })
        .build();
    let url = serve(&node).await;
    let (c, mut events) = redial_tokio::builder(url)
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    c.send(Payload::text("ping")).await.unwrap();
    let e = wait_event(&mut events, "the answer", |e| {
        matches!(e, Event::Message { .. })
    })
    .await;
    assert!(
        matches!(e, Event::Message { channel: None, ref payload, .. } if payload.as_text() == Some("re:ping"))
    );
}

/// At most one upgrade per second; refusals are booked, and a client that
/// comes back when told is admitted. Paused clock: the waits cost nothing.
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
