//! The connection span and its fields, read through a `tracing-subscriber`
//! formatter: the documented names, and never a session name or token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redial_core::{Config, Event, Wire};
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};
use tracing_subscriber::fmt::format::FmtSpan;

async fn next(events: &mut redial_driver::Events, what: &str, pred: fn(&Event) -> bool) {
    let found = async {
        while let Some(e) = events.recv().await {
            if pred(&e) {
                return;
            }
        }
        panic!("events ended waiting for {what}");
    };
    tokio::time::timeout(Duration::from_secs(10), found)
        .await
        .unwrap_or_else(|_| panic!("no {what} in time"));
}

// Current-thread runtime: the node's and the client's tasks run on this
// thread, under the subscriber set below.
#[tokio::test]
async fn connection_spans_carry_the_documented_fields_and_no_session_secret() {
    // What the formatter writes goes to a file of this test's own.
    let path =
        std::env::temp_dir().join(format!("redial-server-observe-{}.log", std::process::id()));
    let log = std::fs::File::create(&path).unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log)
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let cfg = ServerConfig::builder()
        .key(TokenKey::new(1, [6; 32]))
        .build()
        .unwrap();
    let node = Node::builder(cfg, MemoryStore::new()).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let serving = tokio::spawn(redial_server::tokio::serve(listener, node.clone()));

    let config = Config::builder()
        .session_name("quiet-heron-42")
        .backoff(redial_core::Backoff::full_jitter(
            Duration::from_millis(20),
            Duration::from_millis(50),
        ))
        .build()
        .unwrap();
    let (handle, mut events) = redial_tokio::builder(url)
        .config(config)
        .protocol(Wire)
        .connect()
        .unwrap();
    next(&mut events, "connected", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: false,
                ..
            }
        )
    })
    .await;
    // Closed by the node (recorded as close_code), then resumed.
    node.close_all(1012, "restart");
    next(&mut events, "reconnected", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: true,
                ..
            }
        )
    })
    .await;
    handle.close().await;
    next(&mut events, "closed", |e| matches!(e, Event::Closed { .. })).await;
    // Returns once no connection is open: both spans have closed.
    node.shut_down().await;
    serving.abort();
    assert_eq!(node.stats().live_connections, 0);

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let spans: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("redial_server_connection") && l.contains("close"))
        .collect();
    assert!(
        text.contains("redial_server_connection{conn=1 resumed=false close_code=1012}"),
        "{text}"
    );
    assert!(
        text.contains("redial_server_connection{conn=2 resumed=true"),
        "{text}"
    );
    assert!(text.contains("session welcomed"), "{text}");
    assert!(spans.len() >= 2, "{text}");
    assert!(!text.contains("quiet-heron-42"), "{text}");
}
