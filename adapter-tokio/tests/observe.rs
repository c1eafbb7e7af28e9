//! The spans and their fields, read through a `tracing-subscriber`
//! formatter: stable names, the close class, and never a credential.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use redial_driver::redial_core::{AuthToken, Event};
use redial_driver::testing::{fast_config, wait_event, within, Plan, ScriptedPeer, WAIT};
use redial_driver::TokenPlacement;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::MakeWriter;

/// Everything the formatter writes, in one buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Current-thread runtime: the driver task runs on this thread, under the
// subscriber set below.
#[tokio::test]
async fn spans_carry_the_documented_fields_and_no_credential() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    // The same server, reached with user info and a key in the query.
    let url = server
        .url()
        .replacen("ws://", "ws://alice:pw-in-url@", 1)
        .replacen("/socket", "/socket?api_key=key-in-query", 1);
    let config = fast_config().token_provider(true).build().unwrap();
    let builder = redial_tokio::builder(url)
        .config(config)
        .token_provider(|| async { Ok(AuthToken::new("token-value-42")) })
        .token_placement(TokenPlacement::query("access_token"))
        .client_label("orders-1");
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    server.close(0, 1001, "going away");
    wait_event(&rt, &mut events, "reconnected", |e| {
        matches!(
            e,
            Event::Connected {
                reconnect: true,
                ..
            }
        )
    })
    .await;
    within(&rt, WAIT, "close", handle.close()).await;
    drop(events);

    let log = captured.text();
    for secret in ["alice", "pw-in-url", "key-in-query", "token-value-42"] {
        assert!(!log.contains(secret), "{secret} in:\n{log}");
    }
    for field in [
        "redial{",
        "protocol=\"raw\"",
        "client=\"orders-1\"",
        "redial.connection{",
        "attempt=0",
        "endpoint=0",
        "outcome=\"closed\"",
        "close_code=1001",
        "close_class=\"going_away\"",
        "attempt=1",
        "delay_ms=",
        "state changed",
    ] {
        assert!(log.contains(field), "no {field} in:\n{log}");
    }
}
