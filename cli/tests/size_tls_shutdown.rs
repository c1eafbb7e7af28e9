//! `--max-message-size`, `--ca-file` and `redial serve`'s shutdown, end to
//! end on 127.0.0.1. Every wait is on something a process prints or a
//! server reports.
// Test helpers unwrap too: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use redial_driver::testing::{Plan, ScriptedPeer, ServerEvent};

use common::{echo_server, Run, WAIT};

/// A message over `--max-message-size` is not printed: the client closes
/// with 1009, says which limit and by how much, and exits 1.
#[tokio::test]
async fn max_message_size_closes_1009() {
    let (url, _) = echo_server().await;
    let mut run = Run::start(&["--events", "json", "--max-message-size", "1000", &url]);
    run.event("connected").await;
    run.write("fits").await;
    assert_eq!(run.line().await, "text:fits");
    // Echoed as "text:" + 3000 bytes.
    run.write(&"x".repeat(3000)).await;
    let too_large = run.event("message_too_large").await;
    assert_eq!(too_large["limit"], "message");
    assert_eq!(too_large["size"], 3005);
    assert_eq!(too_large["max"], 1000);
    let gone = run.event("disconnected").await;
    assert_eq!(gone["code"], 1009);
    assert_eq!(gone["will_reconnect"], false);
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "message_too_large");
    assert_eq!(closed["code"], 1009);
    assert_eq!(run.exit().await, 1);

    // Text events name the flag.
    let mut run = Run::start(&["--max-message-size", "1000", &url]);
    run.write(&"y".repeat(2000)).await;
    let line = run.text("over the 1000-byte limit").await;
    assert!(line.contains("1005 over; --max-message-size"), "{line}");
    assert_eq!(run.exit().await, 1);
}

/// A self-signed `wss://` server: refused at once without `--ca-file`
/// (one dial, a clean reason), trusted with it.
#[tokio::test]
async fn ca_file_trusts_a_self_signed_server() {
    let mut server = ScriptedPeer::start_tls(|_| Plan::Accept).unwrap();
    let url = server.url().to_owned();

    let mut run = Run::start(&["--events", "json", &url]);
    let failed = run.event("dial_failed").await;
    let reason = "certificate rejected: invalid peer certificate: UnknownIssuer";
    assert_eq!(failed["reason"], reason);
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "certificate_rejected");
    assert_eq!(closed["detail"], reason);
    assert_eq!(run.exit().await, 1);
    let failures = run
        .events_seen()
        .iter()
        .filter(|e| e["event"] == "dial_failed" || e["event"] == "reconnect_scheduled")
        .count();
    assert_eq!(failures, 1, "{:#?}", run.stderr_seen);

    let ca = TempFile::write("ca.pem", server.certificate_pem().unwrap());
    let mut run = Run::start(&["--events", "json", "--ca-file", ca.path(), &url]);
    run.event("connected").await;
    run.write("over tls").await;
    let (conn, got) = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ServerEvent::Text { conn, text }) = server.next().await {
                return (conn, text);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got, "over tls");
    // Connection numbers count TCP accepts: the refused client had 0.
    server.send_text(conn, "back");
    assert_eq!(run.line().await, "back");
    run.eof();
    assert_eq!(run.exit().await, 0);
}

/// A `--ca-file` that is missing or holds no certificate is a usage error.
#[tokio::test]
async fn bad_ca_file_exits_2() {
    let not_pem = TempFile::write("ca.pem", "not a certificate");
    for path in [not_pem.path(), "/nonexistent/redial-ca.pem"] {
        let mut run = Run::start(&["--ca-file", path, "wss://127.0.0.1:9/"]);
        let line = run.text("--ca-file").await;
        assert!(line.contains(path), "{line}");
        assert_eq!(run.exit().await, 2);
    }
}

/// SIGTERM to `redial serve`: GOING_AWAY with the configured timing, then
/// close 1001 (PROTOCOL.md section 1), then exit 0.
#[tokio::test]
async fn serve_sends_going_away_on_sigterm() {
    let mut serve = Run::start(&[
        "serve",
        "--going-away-retry-ms",
        "2500",
        "--going-away-window-ms",
        "4000",
    ]);
    let url = serve.line().await.replace("listening on ", "");
    let mut run = Run::start(&["--protocol", "wire", "--events", "json", &url]);
    run.event("connected").await;
    serve.signal("-TERM").await;
    let going = run.event("going_away").await;
    assert_eq!(going["retry_after_ms"], 2500);
    assert_eq!(going["window_ms"], 4000);
    let gone = run.event("disconnected").await;
    assert_eq!(gone["code"], 1001);
    assert_eq!(gone["will_reconnect"], true);
    // The hint is honoured: no sooner than retry_after, within the window.
    let next = run.event("reconnect_scheduled").await;
    let delay = next["delay_ms"].as_u64().unwrap();
    assert!((2500..=6500).contains(&delay), "{delay}");
    assert_eq!(serve.exit().await, 0);
    run.eof();
    assert_eq!(run.exit().await, 0);
}

/// A file in the temp dir (a CA certificate, a token key), removed when
/// dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn write(name: &str, contents: &str) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("redial-cli-{}-{nanos}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket to a `serve` offering `redial.v1`, for exact frames.
async fn wire_dial(url: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        redial_core::wire::SUBPROTOCOL.parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn wire_send(ws: &mut Ws, frame: redial_core::wire::Frame) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Binary(frame.to_bytes())).await.unwrap();
}

/// The next frame, `None` at the end of the connection.
async fn wire_next(ws: &mut Ws) -> Option<redial_core::wire::Frame> {
    use futures_util::StreamExt;
    use redial_core::wire::{self, Limits};
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => {
                return Some(wire::decode(b, &Limits::default()).unwrap())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return None,
        }
    }
}

/// HELLO (resuming with `token`, if any) and its WELCOME.
async fn wire_hello(
    ws: &mut Ws,
    token: Option<redial_core::secret::ResumeToken>,
) -> redial_core::wire::Welcome {
    use redial_core::wire::{Frame, Hello};
    wire_send(
        ws,
        Frame::Hello(Hello {
            version: 1,
            resume_token: token,
            last_offset: 0,
            name: None,
        }),
    )
    .await;
    match wire_next(ws).await {
        Some(Frame::Welcome(w)) => w,
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

/// `redial serve --close-after 1`: the first frame after HELLO (a PUBLISH)
/// is stored, but its ACK never comes and the connection ends; the resumed
/// session reports it stored (`last_client_seq` 1), so the client does not
/// send it again.
#[tokio::test]
async fn serve_close_after_loses_the_ack_not_the_publish() {
    use redial_core::wire::Frame;

    let mut serve = Run::start(&["serve", "--close-after", "1"]);
    let url = serve.line().await.replace("listening on ", "");
    let mut ws = wire_dial(&url).await;
    let w = wire_hello(&mut ws, None).await;
    let publish = Frame::Publish {
        seq: 1,
        channel: None,
        payload: redial_core::Payload::text("once"),
    };
    wire_send(&mut ws, publish).await;
    // No ACK: the connection just ends.
    assert_eq!(wire_next(&mut ws).await, None);
    let mut ws = wire_dial(&url).await;
    let w2 = wire_hello(&mut ws, Some(w.resume_token)).await;
    assert!(w2.resumed);
    assert_eq!(w2.last_client_seq, 1);
    serve.signal("-TERM").await;
    assert_eq!(serve.exit().await, 0);
}

/// `redial serve --redis`: three processes on one Redis are one cluster. A
/// session made on the first resumes on the second after the first was
/// killed, with its subscription and its unreceived MESSAGE, and gets what
/// a client of the third publishes.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test]
async fn serve_on_redis_resumes_a_session_on_another_process() {
    use redial_core::wire::Frame;
    use redial_tests::third_party::{redis::RedisServer, started};

    let redis = started(RedisServer::start());
    let key = TempFile::write("token.key", &"5a".repeat(32));
    let url = redis.url();
    let args = [
        "serve",
        "--redis",
        url.as_str(),
        "--redis-prefix",
        "cli-cluster",
        "--token-key-file",
        key.path(),
    ];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut serve = Run::start(&args);
        let url = serve.line().await.replace("listening on ", "");
        nodes.push((serve, url));
    }
    let publish = |seq, text: &str| Frame::Publish {
        seq,
        channel: Some("news".into()),
        payload: redial_core::Payload::text(text),
    };
    let mut ws = wire_dial(&nodes[0].1).await;
    let w = wire_hello(&mut ws, None).await;
    wire_send(
        &mut ws,
        Frame::Subscribe {
            channel: "news".into(),
        },
    )
    .await;
    assert!(matches!(
        wire_next(&mut ws).await,
        Some(Frame::Subscribed { .. })
    ));
    wire_send(&mut ws, publish(1, "first")).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(wire_next(&mut ws).await.unwrap());
    }
    assert!(got.contains(&Frame::Ack { seq: 1 }), "{got:?}");
    nodes[0].0.signal("-KILL").await;

    let mut ws = wire_dial(&nodes[1].1).await;
    let w2 = wire_hello(&mut ws, Some(w.resume_token)).await;
    assert!(w2.resumed);
    assert_eq!(w2.session_id, w.session_id);
    assert_eq!(w2.last_client_seq, 1);
    assert_eq!(w2.kept, ["news"]);
    let offset = |f: Option<Frame>| match f {
        Some(Frame::Message {
            offset, payload, ..
        }) => (offset, payload.as_text().unwrap().to_owned()),
        other => panic!("expected MESSAGE, got {other:?}"),
    };
    assert_eq!(offset(wire_next(&mut ws).await), (1, "first".to_owned()));

    let mut other = wire_dial(&nodes[2].1).await;
    wire_hello(&mut other, None).await;
    wire_send(&mut other, publish(1, "from the third")).await;
    assert_eq!(wire_next(&mut other).await, Some(Frame::Ack { seq: 1 }));
    assert_eq!(
        offset(wire_next(&mut ws).await),
        (2, "from the third".to_owned())
    );
    for (serve, _) in &mut nodes[1..] {
        serve.signal("-TERM").await;
        assert_eq!(serve.exit().await, 0);
    }
}

/// `redial serve` echoes a publish without a channel to its sender: 60
/// lines through connections that each end after 5 frames come back once
/// each and in the order they were written, and the closing summary counts
/// them applied.
#[tokio::test]
async fn serve_echoes_in_order_across_reconnects() {
    let mut serve = Run::start(&["serve", "--close-after", "5"]);
    let url = serve.line().await.replace("listening on ", "");
    let mut run = Run::start(&[
        "--protocol",
        "wire",
        "--backoff",
        "full-jitter",
        "--backoff-first-ms",
        "20",
        "--backoff-cap-ms",
        "20",
        &url,
    ]);
    let lines: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    for l in &lines {
        run.write(l).await;
    }
    let mut echoed = Vec::new();
    for _ in &lines {
        echoed.push(run.line().await);
    }
    assert_eq!(echoed, lines);
    run.eof();
    assert_eq!(run.exit().await, 0);
    serve.signal("-TERM").await;
    let summary = serve.text("stopped after").await;
    assert!(summary.contains("60 publishes applied"), "{summary}");
    assert_eq!(serve.exit().await, 0);
}
