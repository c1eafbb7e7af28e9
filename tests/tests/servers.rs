//! The third-party server launchers work: nats-server, the Node graphql-ws
//! server and anvil start on 127.0.0.1, answer a plain tokio-tungstenite
//! client speaking through redial-core's codecs, restart on the same port,
//! refuse bad credentials (or params) the way their protocols say, and
//! (NATS) announce lame duck mode.
//!
//! Without nats-server or node (plus `npm ci`) these skip with a message,
//! unless `CI` is set: then they fail.

// Integration-test helpers: a failed unwrap is a failed test, and these
// helper functions are not `#[test]` functions, which clippy.toml covers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use redial_core::graphql_ws::{self, close_code, Message as GqlMessage, SubscribePayload};
use redial_core::json_rpc::{self, error_code, Batch, Id, Message as RpcMessage};
use redial_core::nats::{ClientOp, Connect, Credentials, Decoder, ErrKind, Limits, ServerOp};
use redial_core::AuthToken;
use redial_tests::third_party::anvil::{AnvilOptions, AnvilServer};
use redial_tests::third_party::graphql::{GraphqlOptions, GraphqlServer};
use redial_tests::third_party::nats::{NatsAuth, NatsOptions, NatsServer};
use redial_tests::third_party::started;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Safety net for one wait; a healthy one takes milliseconds.
const WAIT: Duration = Duration::from_secs(10);

async fn dial(url: &str, subprotocol: Option<&str>) -> Ws {
    let mut request = url.into_client_request().unwrap();
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("dial timed out")
        .expect("dial failed");
    if let Some(p) = subprotocol {
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap()),
            Some(p)
        );
    }
    ws
}

// ---- NATS ----

/// The next NATS operation, reading WebSocket messages as needed.
async fn next_op(ws: &mut Ws, decoder: &mut Decoder) -> ServerOp {
    loop {
        if let Some(op) = decoder.next_op().expect("server stream decodes") {
            return op;
        }
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no NATS operation in time")
            .expect("stream ended")
            .expect("WebSocket error");
        match message {
            Message::Binary(b) => decoder.push(b),
            Message::Text(t) => decoder.push(Bytes::copy_from_slice(t.as_bytes())),
            _ => {}
        }
    }
}

async fn send_ops(ws: &mut Ws, ops: &[ClientOp<'_>]) {
    let mut out = BytesMut::new();
    for op in ops {
        op.encode(&mut out).unwrap();
    }
    ws.send(Message::Binary(out.freeze())).await.unwrap();
}

/// Dials, reads INFO, sends CONNECT and a PING, and returns what answered
/// the PING (PONG, or -ERR when the credentials are refused).
async fn nats_connect(server: &NatsServer, credentials: Credentials) -> (Ws, Decoder, ServerOp) {
    let mut ws = dial(&server.ws_url(), None).await;
    let mut decoder = Decoder::new(Limits::default());
    let ServerOp::Info(info) = next_op(&mut ws, &mut decoder).await else {
        panic!("the first operation is not INFO");
    };
    assert!(info.headers, "nats-server 2.9 supports headers");
    assert!(info.max_payload > 0);
    decoder.set_max_payload(usize::try_from(info.max_payload).unwrap());
    let connect = Connect {
        credentials,
        name: Some("redial-smoke".into()),
        no_responders: true,
    };
    send_ops(&mut ws, &[ClientOp::Connect(&connect), ClientOp::Ping]).await;
    let answer = next_op(&mut ws, &mut decoder).await;
    (ws, decoder, answer)
}

#[cfg_attr(
    not(redial_has_nats),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn nats_server_speaks_the_codec_over_websocket() {
    let server = started(NatsServer::start(NatsOptions::default()));
    let (mut ws, mut decoder, answer) = nats_connect(&server, Credentials::None).await;
    assert_eq!(answer, ServerOp::Pong);
    let headers = redial_core::nats::Headers::build(&[("Trace", "7")]).unwrap();
    send_ops(
        &mut ws,
        &[
            ClientOp::Sub {
                subject: "smoke.>",
                queue: None,
                sid: 42,
            },
            ClientOp::Pub {
                subject: "smoke.a",
                reply: Some("inbox.1"),
                payload: b"one",
            },
            ClientOp::HPub {
                subject: "smoke.b",
                reply: None,
                headers: &headers,
                payload: b"two",
            },
        ],
    )
    .await;
    let ServerOp::Msg(first) = next_op(&mut ws, &mut decoder).await else {
        panic!("not MSG")
    };
    assert_eq!((first.subject.as_str(), first.sid), ("smoke.a", 42));
    assert_eq!(first.reply.as_ref().map(|r| r.as_str()), Some("inbox.1"));
    assert_eq!(&first.payload[..], b"one");
    assert!(first.headers.is_none());
    let ServerOp::Msg(second) = next_op(&mut ws, &mut decoder).await else {
        panic!("not HMSG")
    };
    assert_eq!(&second.payload[..], b"two");
    assert_eq!(
        second.headers.as_ref().and_then(|h| h.get("Trace")),
        Some("7")
    );
}

#[cfg_attr(
    not(redial_has_nats),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn nats_credentials_are_checked() {
    let token = NatsOptions {
        auth: NatsAuth::Token("s3cret".into()),
        ..NatsOptions::default()
    };
    let server = started(NatsServer::start(token));
    let (_ws, _, answer) =
        nats_connect(&server, Credentials::Token(AuthToken::new("s3cret"))).await;
    assert_eq!(answer, ServerOp::Pong);
    let (_ws, _, answer) = nats_connect(&server, Credentials::Token(AuthToken::new("wrong"))).await;
    match answer {
        ServerOp::Err(e) => {
            assert_eq!(e.kind, ErrKind::Credentials, "{:?}", e.message);
            assert_eq!(e.message, "Authorization Violation");
        }
        other => panic!("a wrong token was answered with {other:?}"),
    }

    let user = NatsOptions {
        auth: NatsAuth::UserPassword {
            user: "u".into(),
            password: "p".into(),
        },
        ..NatsOptions::default()
    };
    let server = started(NatsServer::start(user));
    let good = Credentials::UserPassword {
        user: "u".into(),
        password: AuthToken::new("p"),
    };
    assert_eq!(nats_connect(&server, good).await.2, ServerOp::Pong);
    let bad = Credentials::UserPassword {
        user: "u".into(),
        password: AuthToken::new("q"),
    };
    assert!(matches!(
        nats_connect(&server, bad).await.2,
        ServerOp::Err(e) if e.kind == ErrKind::Credentials
    ));
}

#[cfg_attr(
    not(redial_has_nats),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn nats_restart_keeps_the_ports_and_drops_clients() {
    let mut server = started(NatsServer::start(NatsOptions::default()));
    let url = server.ws_url();
    let (mut ws, _, answer) = nats_connect(&server, Credentials::None).await;
    assert_eq!(answer, ServerOp::Pong);
    let old_pid = server.pid();
    server.restart().unwrap();
    assert_ne!(server.pid(), old_pid);
    assert_eq!(server.ws_url(), url);
    // The old connection ends (close frame or error), it does not hang.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the restart did not drop the old connection");
    let (_ws, _, answer) = nats_connect(&server, Credentials::None).await;
    assert_eq!(answer, ServerOp::Pong);
}

#[cfg_attr(
    not(redial_has_nats),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn nats_lame_duck_is_announced_with_an_ldm_info() {
    let server = started(NatsServer::start(NatsOptions::default()));
    let (mut ws, mut decoder, answer) = nats_connect(&server, Credentials::None).await;
    assert_eq!(answer, ServerOp::Pong);
    server.signal_lame_duck().unwrap();
    loop {
        match next_op(&mut ws, &mut decoder).await {
            ServerOp::Info(info) if info.ldm => break,
            ServerOp::Ping => send_ops(&mut ws, &[ClientOp::Pong]).await,
            _ => {}
        }
    }
}

#[cfg_attr(
    not(redial_has_nats),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn nats_server_pings_are_nats_pings() {
    let fast = NatsOptions {
        ping_interval: Duration::from_millis(200),
        ..NatsOptions::default()
    };
    let server = started(NatsServer::start(fast));
    let (mut ws, mut decoder, answer) = nats_connect(&server, Credentials::None).await;
    assert_eq!(answer, ServerOp::Pong);
    for _ in 0..2 {
        assert_eq!(next_op(&mut ws, &mut decoder).await, ServerOp::Ping);
        send_ops(&mut ws, &[ClientOp::Pong]).await;
    }
}

// ---- graphql-ws ----

async fn next_gql(ws: &mut Ws) -> Result<String, Option<u16>> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time");
        match message {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return Err(None),
        }
    }
}

async fn send_gql(ws: &mut Ws, message: &GqlMessage<'_>) {
    message.validate().unwrap();
    ws.send(Message::text(message.encode())).await.unwrap();
}

/// Dials with the subprotocol, sends `connection_init` with `token`, and
/// returns the socket with the server's answer (a message or a close code).
async fn gql_connect(server: &GraphqlServer, token: &str) -> (Ws, Result<String, Option<u16>>) {
    let mut ws = dial(&server.url(), Some(graphql_ws::SUBPROTOCOL)).await;
    let payload = RawValue::from_string(serde_json::json!({ "token": token }).to_string()).unwrap();
    send_gql(
        &mut ws,
        &GqlMessage::ConnectionInit {
            payload: Some(graphql_ws::Json::new(&payload)),
        },
    )
    .await;
    let answer = next_gql(&mut ws).await;
    (ws, answer)
}

fn subscribe<'a>(id: &'a str, query: &'a str) -> GqlMessage<'a> {
    GqlMessage::Subscribe {
        id: id.into(),
        payload: SubscribePayload {
            query: query.into(),
            variables: None,
            operation_name: None,
            extensions: None,
        },
    }
}

fn token_options() -> GraphqlOptions {
    GraphqlOptions {
        token: Some("t0k".into()),
        ..GraphqlOptions::default()
    }
}

#[cfg_attr(
    not(redial_has_graphql),
    ignore = "needs node and tests/graphql-server/node_modules: apt-get install nodejs npm; cd tests/graphql-server; npm ci"
)]
#[tokio::test]
async fn graphql_server_acknowledges_and_streams() {
    let server = started(GraphqlServer::start(token_options()));
    let (mut ws, answer) = gql_connect(&server, "t0k").await;
    let ack = answer.unwrap();
    assert!(
        matches!(
            graphql_ws::decode_server(&ack),
            Ok(GqlMessage::ConnectionAck { .. })
        ),
        "{ack}"
    );

    send_gql(
        &mut ws,
        &subscribe("t", "subscription { ticks(every: 5, count: 2) }"),
    )
    .await;
    for n in 1..=2 {
        let text = next_gql(&mut ws).await.unwrap();
        match graphql_ws::decode_server(&text).unwrap() {
            GqlMessage::Next { id, payload } => {
                assert_eq!(id, "t");
                assert_eq!(payload.get(), format!(r#"{{"data":{{"ticks":{n}}}}}"#));
            }
            other => panic!("{other:?}"),
        }
    }
    let text = next_gql(&mut ws).await.unwrap();
    assert_eq!(
        graphql_ws::decode_server(&text),
        Ok(GqlMessage::Complete { id: "t".into() })
    );

    // Publishing reaches an echo subscription; the protocol's ping is answered.
    send_gql(
        &mut ws,
        &subscribe("e", r#"subscription { echo(topic: "x") }"#),
    )
    .await;
    send_gql(&mut ws, &GqlMessage::Ping { payload: None }).await;
    let pong = next_gql(&mut ws).await.unwrap();
    assert_eq!(
        graphql_ws::decode_server(&pong),
        Ok(GqlMessage::Pong { payload: None })
    );
    send_gql(
        &mut ws,
        &subscribe("p", r#"mutation { publish(topic: "x", text: "hi") }"#),
    )
    .await;
    let mut echoed = false;
    let mut published = false;
    while !(echoed && published) {
        let text = next_gql(&mut ws).await.unwrap();
        match graphql_ws::decode_server(&text).unwrap() {
            GqlMessage::Next { id, payload } if id == "e" => {
                assert_eq!(payload.get(), r#"{"data":{"echo":"hi"}}"#);
                echoed = true;
            }
            GqlMessage::Next { id, payload } if id == "p" => {
                assert_eq!(payload.get(), r#"{"data":{"publish":1}}"#);
                published = true;
            }
            GqlMessage::Complete { id } if id == "p" => {}
            other => panic!("{other:?}"),
        }
    }
}

#[cfg_attr(
    not(redial_has_graphql),
    ignore = "needs node and tests/graphql-server/node_modules: apt-get install nodejs npm; cd tests/graphql-server; npm ci"
)]
#[tokio::test]
async fn graphql_bad_token_is_closed_4403_and_protocol_errors_with_their_codes() {
    let server = started(GraphqlServer::start(token_options()));
    let (_ws, answer) = gql_connect(&server, "wrong").await;
    assert_eq!(answer, Err(Some(close_code::FORBIDDEN)));

    // A second connection_init: 4429.
    let (mut ws, answer) = gql_connect(&server, "t0k").await;
    assert!(answer.is_ok());
    send_gql(&mut ws, &GqlMessage::ConnectionInit { payload: None }).await;
    assert_eq!(
        next_gql(&mut ws).await,
        Err(Some(close_code::TOO_MANY_INIT_REQUESTS))
    );

    // Subscribing before the ack: 4401.
    let mut ws = dial(&server.url(), Some(graphql_ws::SUBPROTOCOL)).await;
    send_gql(&mut ws, &subscribe("1", "{ hello }")).await;
    assert_eq!(next_gql(&mut ws).await, Err(Some(close_code::UNAUTHORIZED)));

    // Garbage: 4400.
    let mut ws = dial(&server.url(), Some(graphql_ws::SUBPROTOCOL)).await;
    ws.send(Message::text("{\"type\":\"nonsense\"}"))
        .await
        .unwrap();
    assert_eq!(next_gql(&mut ws).await, Err(Some(close_code::BAD_REQUEST)));
}

#[cfg_attr(
    not(redial_has_graphql),
    ignore = "needs node and tests/graphql-server/node_modules: apt-get install nodejs npm; cd tests/graphql-server; npm ci"
)]
#[tokio::test]
async fn graphql_init_timeout_is_4408() {
    let quick = GraphqlOptions {
        init_timeout: Duration::from_millis(100),
        ..GraphqlOptions::default()
    };
    let server = started(GraphqlServer::start(quick));
    let mut ws = dial(&server.url(), Some(graphql_ws::SUBPROTOCOL)).await;
    assert_eq!(
        next_gql(&mut ws).await,
        Err(Some(close_code::CONNECTION_INIT_TIMEOUT))
    );
}

#[cfg_attr(
    not(redial_has_graphql),
    ignore = "needs node and tests/graphql-server/node_modules: apt-get install nodejs npm; cd tests/graphql-server; npm ci"
)]
#[tokio::test]
async fn graphql_restart_keeps_the_port() {
    let mut server = started(GraphqlServer::start(token_options()));
    let url = server.url();
    let (mut ws, answer) = gql_connect(&server, "t0k").await;
    assert!(answer.is_ok());
    server.restart().unwrap();
    assert_eq!(server.url(), url);
    assert!(next_gql(&mut ws).await.is_err(), "the old socket ends");
    let (_ws, answer) = gql_connect(&server, "t0k").await;
    assert!(matches!(
        graphql_ws::decode_server(&answer.unwrap()),
        Ok(GqlMessage::ConnectionAck { .. })
    ));
}

// ---- JSON-RPC (anvil) ----

/// The next text message, or `None` once the socket ends.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time");
        match message {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn rpc(text: &str) -> RpcMessage<'_> {
    match json_rpc::decode(text, json_rpc::Limits::default()) {
        Ok(Batch::Single(m)) => m,
        other => panic!("anvil sent {text}: {other:?}"),
    }
}

async fn call_rpc(ws: &mut Ws, id: i64, method: &str, params: &str) {
    let params = RawValue::from_string(params.to_owned()).unwrap();
    let request = RpcMessage::Request {
        id: Id::Number(id),
        method: method.into(),
        params: Some(json_rpc::Json::new(&params)),
    };
    ws.send(Message::text(request.encode())).await.unwrap();
}

/// The text of the reply to request `id`, skipping notifications.
async fn reply(ws: &mut Ws, id: i64) -> String {
    loop {
        let text = next_text(ws).await.expect("the socket ended");
        if rpc(&text).id() == Some(&Id::Number(id)) {
            return text;
        }
    }
}

redial_tests::needs! { anvil;
#[tokio::test]
async fn anvil_speaks_the_codec_over_websocket() {
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
    let mut ws = dial(&node.url(), None).await;
    call_rpc(&mut ws, 1, "eth_subscribe", r#"["newHeads"]"#).await;
    let text = reply(&mut ws, 1).await;
    let RpcMessage::Result { result, .. } = rpc(&text) else {
        panic!("eth_subscribe failed: {text}");
    };
    let sub: String = serde_json::from_str(result.get()).unwrap();

    // The node says why it refuses a subscription, with the signed code.
    call_rpc(&mut ws, 2, "eth_subscribe", r#"["nonsense"]"#).await;
    let text = reply(&mut ws, 2).await;
    let RpcMessage::Error { error, .. } = rpc(&text) else {
        panic!("eth_subscribe nonsense succeeded: {text}");
    };
    assert_eq!(error.code, error_code::INVALID_PARAMS, "{error:?}");

    // A block a second, under the server's subscription id.
    let heads: serde_json::Value = loop {
        let text = next_text(&mut ws).await.expect("the socket ended");
        if let RpcMessage::Notification {
            method,
            params: Some(p),
        } = rpc(&text)
        {
            assert_eq!(method, "eth_subscription");
            break serde_json::from_str(p.get()).unwrap();
        }
    };
    assert_eq!(heads["subscription"], serde_json::Value::from(sub));
    assert!(heads["result"]["number"].is_string(), "{heads}");

    call_rpc(&mut ws, 3, "eth_blockNumber", "[]").await;
    let text = reply(&mut ws, 3).await;
    assert!(matches!(rpc(&text), RpcMessage::Result { .. }), "{text}");
    assert_eq!(node.await_calls("eth_blockNumber", 1).unwrap(), 1);
}

#[tokio::test]
async fn anvil_restart_keeps_the_port() {
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
    let url = node.url();
    let mut ws = dial(&url, None).await;
    node.restart().unwrap();
    assert_eq!(node.url(), url);
    while next_text(&mut ws).await.is_some() {}
    let mut ws = dial(&url, None).await;
    call_rpc(&mut ws, 1, "eth_blockNumber", "[]").await;
    let text = reply(&mut ws, 1).await;
    assert!(matches!(rpc(&text), RpcMessage::Result { .. }), "{text}");
}
}
