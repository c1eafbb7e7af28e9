//! `redial --protocol socket.io` against the Node Socket.IO server
//! (tests/socketio-server): events of the subscribed names printed with
//! their name when there are several, stdin lines emitted as events (the
//! server echoes `echo`), and the exit after "io server disconnect".
//! Ignored without node and `npm ci` there unless `CI` is set.
#![allow(clippy::unwrap_used)]

mod common;

use redial_tests::third_party::socketio::{SocketIoOptions, SocketIoServer};
use redial_tests::third_party::started;

use common::Run;

#[tokio::test]
#[cfg_attr(
    not(redial_has_socketio),
    ignore = "needs node and tests/socketio-server/node_modules: apt-get install nodejs npm; cd tests/socketio-server; npm ci"
)]
async fn socket_io_prints_subscribed_events_and_emits_stdin_lines() {
    let server = started(SocketIoServer::start(SocketIoOptions::default()));
    let mut run = Run::start(&[
        "--protocol",
        "socket.io",
        "--events",
        "json",
        "--subscribe",
        "tick",
        "--subscribe",
        "echo",
        "--channel",
        "echo",
        &server.url(),
    ]);
    run.event("connected").await;
    server.emit("tick", 2).unwrap();
    for n in 1..=2 {
        let line = run.line().await;
        let (event, args) = line.split_once('\t').unwrap();
        assert_eq!(event, "tick");
        let args: serde_json::Value = serde_json::from_str(args).unwrap();
        assert_eq!(args[0], n, "{line}");
    }
    run.write(r#"["hello",{"n":1}]"#).await;
    // With recovery on, the server adds the event's offset as the last
    // argument.
    let line = run.line().await;
    let args = line.strip_prefix("echo\t").unwrap();
    let args: Vec<serde_json::Value> = serde_json::from_str(args).unwrap();
    assert_eq!(
        args[..2],
        [serde_json::json!("hello"), serde_json::json!({"n": 1})]
    );
    assert!(
        args.get(2).is_some_and(serde_json::Value::is_string),
        "{line}"
    );
    assert_eq!(server.kick().unwrap(), 1);
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "admin_disconnect", "{closed}");
}
