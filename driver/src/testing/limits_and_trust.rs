//! Scenarios for the transport's refusals: an inbound message over the size
//! limit, and a `wss://` server whose certificate is or is not trusted.

use redial_core::{ClosePolicy, CloseRule, Event, Payload, SizeLimit, State, TerminalReason};
use tungstenite::protocol::WebSocketConfig;

use super::{fast_config, wait_event, wait_server, within, Plan, ScriptedPeer, ServerEvent, WAIT};
use crate::{Builder, Runtime};

fn text(e: &Event) -> Option<&str> {
    match e {
        Event::Message { payload, .. } => payload.as_text(),
        _ => None,
    }
}

/// A message over `max_message_size` is not delivered: the client closes
/// with 1009, says which limit and by how much, and (by default) stops.
/// The message before it arrives intact.
pub async fn too_large_message_closes_1009<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned())
        .config(fast_config().build().expect("config"))
        .websocket_config(WebSocketConfig::default().max_message_size(Some(1024)));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    server.send_text(0, "small");
    server.send_text(0, "x".repeat(2000));
    let e = wait_event(&rt, &mut events, "small message", |e| text(e).is_some()).await;
    assert_eq!(text(&e), Some("small"));
    let e = wait_event(&rt, &mut events, "too large", |e| {
        !matches!(e, Event::StateChanged { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::MessageTooLarge {
            limit: SizeLimit::Message,
            size: 2000,
            max: 1024
        }
    );
    let e = wait_event(&rt, &mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            Event::Disconnected {
                code: Some(1009),
                will_reconnect: false,
                ..
            }
        ),
        "{e:?}"
    );
    let e = wait_event(&rt, &mut events, "closed", |e| {
        matches!(e, Event::Closed { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            Event::Closed {
                reason: TerminalReason::MessageTooLarge,
                code: Some(1009),
                ..
            }
        ),
        "{e:?}"
    );
    let e = wait_server(&rt, &mut server, "the client's close", |e| {
        matches!(e, ServerEvent::Closed { .. })
    })
    .await;
    // A close frame with 1009, not a dropped connection.
    assert_eq!(
        e,
        ServerEvent::Closed {
            conn: 0,
            code: Some(1009)
        }
    );
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(server.dials(), 1);
}

/// A frame over `max_frame_size` names the frame limit; with 1009
/// overridden to reconnect, the client comes back and works.
pub async fn too_large_frame_follows_the_policy<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let policy = ClosePolicy::new().with_code(1009, CloseRule::Reconnect { honour_hint: false });
    let config = fast_config().close_policy(policy).build().expect("config");
    let builder = make(server.url().to_owned())
        .config(config)
        .websocket_config(
            WebSocketConfig::default()
                .max_frame_size(Some(512))
                .max_message_size(Some(4096)),
        );
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    server.send_text(0, "y".repeat(1000));
    let e = wait_event(&rt, &mut events, "too large", |e| {
        matches!(e, Event::MessageTooLarge { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::MessageTooLarge {
            limit: SizeLimit::Frame,
            size: 1000,
            max: 512
        }
    );
    let e = wait_event(&rt, &mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            Event::Disconnected {
                code: Some(1009),
                will_reconnect: true,
                ..
            }
        ),
        "{e:?}"
    );
    wait_server(&rt, &mut server, "the client's 1009", |e| {
        matches!(
            e,
            ServerEvent::Closed {
                conn: 0,
                code: Some(1009)
            }
        )
    })
    .await;
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
    server.send_text(1, "fits");
    let e = wait_event(&rt, &mut events, "message", |e| text(e).is_some()).await;
    assert_eq!(text(&e), Some("fits"));
    within(&rt, WAIT, "close", handle.close()).await;
}

/// A `wss://` server whose certificate nobody vouches for: one dial, a
/// typed terminal failure, and the TLS library's reason without wrappers.
pub async fn untrusted_certificate_is_terminal<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = ScriptedPeer::start_tls(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    let mut seen = Vec::new();
    let closed = within(&rt, WAIT, "closed", async {
        loop {
            match events.recv().await {
                Some(e @ Event::Closed { .. }) => return e,
                Some(e) => seen.push(e),
                None => panic!("events ended before Closed"),
            }
        }
    })
    .await;
    let reason = "certificate rejected: invalid peer certificate: UnknownIssuer";
    assert_eq!(
        closed,
        Event::Closed {
            reason: TerminalReason::CertificateRejected,
            code: None,
            detail: reason.into(),
            undelivered: 0
        }
    );
    let failures: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, Event::DialFailed { .. }))
        .collect();
    assert_eq!(
        failures,
        vec![&Event::DialFailed {
            attempt: 0,
            endpoint: 0,
            status: None,
            reason: reason.into()
        }]
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::ReconnectScheduled { .. })),
        "{seen:?}"
    );
    assert_eq!(handle.state(), State::Closed);
    // The upgrade never happened: TLS stopped it.
    assert_eq!(server.dials(), 0);
}

/// The same server, its certificate given as a root: connects, and
/// messages go both ways.
pub async fn trusted_root_connects<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start_tls(|_| Plan::Accept).expect("server");
    let root = server.certificate().expect("certificate").clone();
    let builder = make(server.url().to_owned())
        .config(fast_config().build().expect("config"))
        .root_certificates([root]);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    handle.send(Payload::text("over tls")).await.expect("send");
    let got = wait_server(&rt, &mut server, "text", |e| {
        matches!(e, ServerEvent::Text { .. })
    })
    .await;
    assert_eq!(
        got,
        ServerEvent::Text {
            conn: 0,
            text: "over tls".into()
        }
    );
    server.send_text(0, "back");
    let e = wait_event(&rt, &mut events, "message", |e| text(e).is_some()).await;
    assert_eq!(text(&e), Some("back"));
    within(&rt, WAIT, "close", handle.close()).await;
    assert_eq!(handle.state(), State::Closed);
}
