//! The scenarios each adapter runs against [`ScriptedPeer`]. Each takes a
//! function making the adapter's builder for a URL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join, select, Either};
use redial_core::{
    AuthToken, Backoff, Event, Payload, SendError, State, TerminalReason, TokenFailure,
};

use super::{fast_config, wait_event, wait_server, within, Plan, ScriptedPeer, ServerEvent, WAIT};
use crate::{Builder, Runtime, TokenPlacement};

fn text(e: &Event) -> Option<&str> {
    match e {
        Event::Message { payload, .. } => payload.as_text(),
        _ => None,
    }
}

fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected { .. })
}

fn is_closed(e: &Event) -> bool {
    matches!(e, Event::Closed { .. })
}

/// Connect, send, receive, then close.
pub async fn connect_send_receive<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    // A driver on another thread (smol, async-std) may have connected over
    // loopback already.
    let first = handle.state();
    assert!(
        matches!(first, State::Connecting | State::Connected),
        "{first:?}"
    );
    wait_event(&rt, &mut events, "connected", is_connected).await;
    assert_eq!(handle.state(), State::Connected);

    handle.send(Payload::text("hello")).await.expect("send");
    let got = wait_server(&rt, &mut server, "hello", |e| {
        matches!(e, ServerEvent::Text { .. })
    })
    .await;
    assert_eq!(
        got,
        ServerEvent::Text {
            conn: 0,
            text: "hello".into()
        }
    );

    server.send_text(0, "world");
    let e = wait_event(&rt, &mut events, "message", |e| text(e).is_some()).await;
    assert_eq!(text(&e), Some("world"));

    within(&rt, WAIT, "close", handle.close()).await;
    assert_eq!(handle.state(), State::Closed);
    wait_server(&rt, &mut server, "close frame", |e| {
        matches!(
            e,
            ServerEvent::Closed {
                code: Some(1000),
                ..
            }
        )
    })
    .await;
}

/// The server drops the connection; messages sent during the outage are
/// delivered, in order, after the reconnect.
pub async fn reconnect_delivers_outage_messages<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    // A fixed 300 ms backoff: the sends below surely land in the outage.
    let fixed = Duration::from_millis(300);
    let config = fast_config()
        .backoff(Backoff::proportional(fixed, 1.0, 0.0, fixed))
        .build()
        .expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    server.drop_conn(0);
    let e = wait_event(&rt, &mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        e,
        Event::Disconnected {
            code: None,
            will_reconnect: true,
            ..
        }
    ));
    for m in ["one", "two", "three"] {
        handle.send(Payload::text(m)).await.expect("queued");
    }
    assert_eq!(handle.state(), State::Reconnecting);

    let e = wait_event(&rt, &mut events, "reconnected", is_connected).await;
    assert!(matches!(
        e,
        Event::Connected {
            reconnect: true,
            ..
        }
    ));
    let mut got = Vec::new();
    while got.len() < 3 {
        match wait_server(&rt, &mut server, "outage messages", |e| {
            matches!(e, ServerEvent::Text { .. })
        })
        .await
        {
            ServerEvent::Text { conn, text } => {
                assert_eq!(conn, 1, "sent on the new connection");
                got.push(text);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, ["one", "two", "three"]);
    assert_eq!(server.dials(), 2);
    within(&rt, WAIT, "close", handle.close()).await;
}

/// Close 4001 ends the session as `invalid_token`, with no second dial.
pub async fn close_4001_is_terminal<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    server.close(0, 4001, "invalid token");
    let e = wait_event(&rt, &mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert_eq!(
        e,
        Event::Disconnected {
            code: Some(4001),
            reason: "invalid token".into(),
            will_reconnect: false
        }
    );
    let e = wait_event(&rt, &mut events, "closed", is_closed).await;
    assert!(matches!(
        e,
        Event::Closed {
            reason: TerminalReason::InvalidToken,
            code: Some(4001),
            ..
        }
    ));
    // The stream ends: the driver is gone, so no dial can follow.
    assert_eq!(
        within(&rt, WAIT, "end of events", events.recv()).await,
        None
    );
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(server.dials(), 1);
    assert_eq!(
        handle.send(Payload::text("late")).await,
        Err(SendError::Closed)
    );
}

/// A burst of messages the socket holds at once, then the server's close:
/// every message arrives, in order, before the disconnect (the driver
/// hands a burst to the session in one go and the close after it).
pub async fn burst_then_close_keeps_order<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (_handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    const BURST: usize = 200;
    for i in 0..BURST {
        server.send_text(0, format!("m{i}"));
    }
    server.close(0, 4001, "invalid token");
    let mut seen = Vec::new();
    loop {
        let e = wait_event(&rt, &mut events, "message or disconnect", |e| {
            text(e).is_some() || matches!(e, Event::Disconnected { .. })
        })
        .await;
        match text(&e) {
            Some(t) => seen.push(t.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = (0..BURST).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want);
}

/// A 503 with `Retry-After: 1` holds the next dial back at least 1 s.
pub async fn retry_after_is_honoured<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|n| match n {
        0 => Plan::Reject {
            status: 503,
            retry_after: Some(1),
        },
        _ => Plan::Accept,
    })
    .expect("server");
    retry_after_against(make, &mut server).await;
}

/// [`retry_after_is_honoured`] against a given server (the tokio adapter
/// runs it on a paused clock with [`ScriptedPeer::start_local`]).
pub async fn retry_after_against<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
    server: &mut ScriptedPeer,
) {
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    let e = wait_event(&rt, &mut events, "dial failure", |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            Event::DialFailed {
                status: Some(503),
                ..
            }
        ),
        "{e:?}"
    );
    let e = wait_event(&rt, &mut events, "reconnect scheduled", |e| {
        matches!(e, Event::ReconnectScheduled { .. })
    })
    .await;
    let Event::ReconnectScheduled { delay, .. } = e else {
        unreachable!()
    };
    assert!(delay >= Duration::from_secs(1), "{delay:?}");
    assert!(delay <= Duration::from_millis(1100), "{delay:?}");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    let mut dials = Vec::new();
    while dials.len() < 2 {
        let e = wait_server(&rt, server, "dials", |e| {
            matches!(e, ServerEvent::Dialed { .. })
        })
        .await;
        if let ServerEvent::Dialed { at, .. } = e {
            dials.push(at);
        }
    }
    let gap = dials[1].duration_since(dials[0]);
    assert!(gap >= Duration::from_secs(1), "redialed after {gap:?}");
    assert_eq!(server.dials(), 2);
    within(&rt, WAIT, "close", handle.close()).await;
}

/// A server that stops reading (so pings go unanswered) is declared dead
/// within ping interval + pong timeout, and the client reconnects.
pub async fn half_open_is_detected<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    half_open_against(make, &server).await;
}

/// [`half_open_is_detected`] against a given server (the tokio adapter
/// also runs it on a paused clock with [`ScriptedPeer::start_local`]).
pub async fn half_open_against<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
    server: &ScriptedPeer,
) {
    // Short close timeout: the dead socket will never answer our close.
    let builder = make(server.url().to_owned())
        .config(fast_config().build().expect("config"))
        .close_timeout(Duration::from_millis(100));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    let connected_at = rt.now();
    server.stop_reading(0);

    let e = wait_event(&rt, &mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let detected = rt.now().duration_since(connected_at);
    let Event::Disconnected { code, reason, .. } = e else {
        unreachable!()
    };
    assert_eq!(code, None);
    assert!(reason.contains("pong"), "{reason}");
    // Worst case is interval + timeout (400 ms); allow scheduling slack.
    assert!(detected <= Duration::from_millis(700), "took {detected:?}");
    assert!(detected >= Duration::from_millis(250), "took {detected:?}");

    let e = wait_event(&rt, &mut events, "reconnected", is_connected).await;
    assert!(matches!(
        e,
        Event::Connected {
            reconnect: true,
            ..
        }
    ));
    within(&rt, WAIT, "close", handle.close()).await;
}

/// `close()` delivers what is queued, closes with 1000, and resolves when
/// the session is closed; the event stream then ends.
pub async fn graceful_close<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    for m in ["a", "b", "c"] {
        handle.send(Payload::text(m)).await.expect("send");
    }
    within(&rt, WAIT, "close", handle.close()).await;
    assert_eq!(handle.state(), State::Closed);
    let e = wait_event(&rt, &mut events, "closed", is_closed).await;
    assert!(matches!(
        e,
        Event::Closed {
            reason: TerminalReason::ClosedByUser,
            undelivered: 0,
            ..
        }
    ));
    assert_eq!(
        within(&rt, WAIT, "end of events", events.recv()).await,
        None
    );

    let mut seen = Vec::new();
    loop {
        match wait_server(&rt, &mut server, "messages and close", |_| true).await {
            ServerEvent::Text { text, .. } => seen.push(text),
            ServerEvent::Closed { code, .. } => {
                assert_eq!(code, Some(1000));
                break;
            }
            ServerEvent::Dialed { .. } => {}
        }
    }
    assert_eq!(seen, ["a", "b", "c"]);
    assert_eq!(
        handle.send(Payload::text("late")).await,
        Err(SendError::Closed)
    );
}

/// Dropping every handle closes the connection cleanly (1000).
pub async fn dropping_handles_closes<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned()).config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    let clone = handle.clone();
    drop(handle);
    clone.send(Payload::text("last")).await.expect("send");
    drop(clone);
    let e = wait_event(&rt, &mut events, "closed", is_closed).await;
    assert!(matches!(
        e,
        Event::Closed {
            reason: TerminalReason::ClosedByUser,
            ..
        }
    ));
    assert_eq!(
        within(&rt, WAIT, "end of events", events.recv()).await,
        None
    );
    let e = wait_server(&rt, &mut server, "close frame", |e| {
        matches!(e, ServerEvent::Closed { .. })
    })
    .await;
    assert_eq!(
        e,
        ServerEvent::Closed {
            conn: 0,
            code: Some(1000)
        }
    );
}

/// `close()` resolves while the application has stopped reading events
/// and the event buffer is full (a consumer that stopped at the message
/// it wanted): the driver takes the close while it waits for the
/// consumer. Whoever reads on still gets what was read from the socket, in
/// order, then `Closed`, then the end of the stream.
pub async fn close_while_events_go_unread<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned())
        .config(fast_config().build().expect("config"))
        .event_capacity(1);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    let sent: Vec<String> = (0..16).map(|i| format!("m{i}")).collect();
    for m in &sent {
        server.send_text(0, m.clone());
    }
    // The driver is reading the rest: with room for one event it soon
    // waits for a consumer that does not come.
    wait_event(&rt, &mut events, "the first message", |e| {
        text(e) == Some("m0")
    })
    .await;
    within(&rt, WAIT, "close with events unread", handle.close()).await;
    assert_eq!(handle.state(), State::Closed);

    let mut seen = Vec::new();
    loop {
        match within(&rt, WAIT, "the events left", events.recv()).await {
            Some(Event::Message { payload, .. }) => {
                seen.push(payload.as_text().unwrap_or_default().to_owned())
            }
            Some(Event::Closed { reason, .. }) => {
                assert_eq!(reason, TerminalReason::ClosedByUser);
                break;
            }
            Some(_) => {}
            None => panic!("the stream ended before Closed"),
        }
    }
    assert_eq!(seen, sent[1..=seen.len()], "in order, none lost in between");
    assert_eq!(
        within(&rt, WAIT, "end of events", events.recv()).await,
        None
    );
    let e = wait_server(&rt, &mut server, "close frame", |e| {
        matches!(e, ServerEvent::Closed { .. })
    })
    .await;
    assert_eq!(
        e,
        ServerEvent::Closed {
            conn: 0,
            code: Some(1000)
        }
    );
}

fn counting_provider(
    calls: Arc<AtomicUsize>,
) -> impl Fn() -> std::future::Ready<Result<AuthToken, TokenFailure>> + Send + Sync + 'static {
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Ok(AuthToken::new(format!("tok-{n}"))))
    }
}

/// The provider is called once per dial, and each dial carries the token
/// it returned (header placement, the default).
pub async fn token_provider_once_per_dial<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let calls = Arc::new(AtomicUsize::new(0));
    let config = fast_config().token_provider(true).build().expect("config");
    let builder = make(server.url().to_owned())
        .config(config)
        .token_provider(counting_provider(Arc::clone(&calls)));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    server.drop_conn(0);
    wait_event(&rt, &mut events, "reconnected", is_connected).await;

    let mut auth = Vec::new();
    while auth.len() < 2 {
        if let ServerEvent::Dialed { authorization, .. } =
            wait_server(&rt, &mut server, "dials", |e| {
                matches!(e, ServerEvent::Dialed { .. })
            })
            .await
        {
            auth.push(authorization.unwrap_or_default());
        }
    }
    assert_eq!(auth, ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(server.dials(), 2);
    within(&rt, WAIT, "close", handle.close()).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The token can travel as a query parameter instead.
pub async fn token_in_query<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let calls = Arc::new(AtomicUsize::new(0));
    let config = fast_config().token_provider(true).build().expect("config");
    let builder = make(server.url().to_owned())
        .config(config)
        .token_provider(counting_provider(Arc::clone(&calls)))
        .token_placement(TokenPlacement::query("access_token"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;
    let e = wait_server(&rt, &mut server, "dial", |e| {
        matches!(e, ServerEvent::Dialed { .. })
    })
    .await;
    let ServerEvent::Dialed {
        path,
        authorization,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(path, "/socket?access_token=tok-1");
    assert_eq!(authorization, None);
    within(&rt, WAIT, "close", handle.close()).await;
}

/// With the queue full, `try_send` says so at once and `send` waits for
/// room (here: the reconnect that flushes the queue) instead of failing.
pub async fn send_waits_for_room<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|n| match n {
        0 => Plan::Reject {
            status: 500,
            retry_after: None,
        },
        _ => Plan::Accept,
    })
    .expect("server");
    let fixed = Duration::from_millis(300);
    let config = fast_config()
        .backoff(Backoff::proportional(fixed, 1.0, 0.0, fixed))
        .queue_max_messages(2)
        .build()
        .expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "dial failure", |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await;
    handle.try_send(Payload::text("1")).expect("room");
    handle.try_send(Payload::text("2")).expect("room");
    assert!(matches!(
        handle.try_send(Payload::text("x")),
        Err(SendError::QueueFull { messages: 2, .. })
    ));
    let waiting = async {
        let seq = handle.send(Payload::text("3")).await.expect("send waits");
        // Room only appears when the reconnect flushes the queue.
        assert_eq!(handle.state(), State::Connected);
        seq
    };
    let watch = wait_event(&rt, &mut events, "connected", is_connected);
    let (seq, _) = within(&rt, WAIT, "send to finish", join(waiting, watch)).await;
    assert_eq!(seq, 3);
    let mut got = Vec::new();
    while got.len() < 3 {
        if let ServerEvent::Text { text, .. } = wait_server(&rt, &mut server, "messages", |e| {
            matches!(e, ServerEvent::Text { .. })
        })
        .await
        {
            got.push(text);
        }
    }
    assert_eq!(got, ["1", "2", "3"]);
    within(&rt, WAIT, "close", handle.close()).await;
}

/// A numbered text message: six digits, then `pad` bytes of filler.
fn numbered(i: usize, pad: usize) -> Payload {
    Payload::text(format!("{i:06}{}", "x".repeat(pad)))
}

/// The next `n` texts the server reads, as (connection, number).
async fn read_numbered<R: Runtime>(
    rt: &R,
    server: &mut ScriptedPeer,
    n: usize,
) -> Vec<(usize, usize)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        if let ServerEvent::Text { conn, text } = wait_server(rt, server, "fed messages", |e| {
            matches!(e, ServerEvent::Text { .. })
        })
        .await
        {
            let number = text
                .get(..6)
                .and_then(|d| d.parse().ok())
                .expect("numbered");
            got.push((conn, number));
        }
    }
    got
}

/// Closes, and checks that the server read nothing more before the close
/// frame on `conn` (so every message came exactly once).
async fn close_with_nothing_more<R: Runtime>(
    rt: &R,
    server: &mut ScriptedPeer,
    handle: &crate::Handle,
    conn: usize,
) {
    within(rt, WAIT, "close", handle.close()).await;
    loop {
        match wait_server(rt, server, "close frame", |_| true).await {
            ServerEvent::Text { text, .. } => {
                panic!("read again: {:?}", text.get(..6).unwrap_or(&text))
            }
            ServerEvent::Closed { conn: c, code } if c == conn => {
                assert_eq!(code, Some(1000));
                break;
            }
            _ => {}
        }
    }
}

/// `send` and `feed` interleaved from one task, more at once than the
/// driver takes in one batch (`command_capacity` 4): the session assigns
/// the sequence numbers in call order, and the server reads every message
/// once, in that order.
pub async fn send_and_feed_keep_order<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned())
        .config(fast_config().build().expect("config"))
        .command_capacity(4);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    const N: usize = 200;
    let sending = async {
        for i in 0..N {
            if i % 3 == 0 {
                handle.feed(numbered(i, 0)).await.expect("fed");
            } else {
                let seq = handle.send(numbered(i, 0)).await.expect("sent");
                assert_eq!(seq, i as u64 + 1, "seq of message {i}");
            }
        }
    };
    within(&rt, WAIT, "sends", sending).await;
    let got = read_numbered(&rt, &mut server, N).await;
    assert_eq!(got, (0..N).map(|i| (0, i)).collect::<Vec<_>>());
    close_with_nothing_more(&rt, &mut server, &handle, 0).await;
}

/// `feed` while connected, then through an outage: everything arrives once,
/// in order. During the outage the queue (8) fills; the next `feed` waits
/// until the reconnect makes room, and then everything is delivered.
pub async fn feed_across_reconnect<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    // A fixed 300 ms backoff: the feeds below surely start in the outage.
    let fixed = Duration::from_millis(300);
    let config = fast_config()
        .backoff(Backoff::proportional(fixed, 1.0, 0.0, fixed))
        .queue_max_messages(8)
        .build()
        .expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    for i in 0..20 {
        handle.feed(numbered(i, 0)).await.expect("fed");
    }
    let got = read_numbered(&rt, &mut server, 20).await;
    assert_eq!(got, (0..20).map(|i| (0, i)).collect::<Vec<_>>());

    server.drop_conn(0);
    wait_event(&rt, &mut events, "disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    const TAKEN_IN_OUTAGE: usize = 8;
    let feeding = async {
        for i in 20..120 {
            handle.feed(numbered(i, 0)).await.expect("fed");
            if i - 20 >= TAKEN_IN_OUTAGE {
                // Only the reconnect could have made room.
                assert_eq!(handle.state(), State::Connected, "feed {i} did not wait");
            }
        }
    };
    let watch = wait_event(&rt, &mut events, "reconnected", is_connected);
    within(&rt, WAIT, "feeds", join(feeding, watch)).await;

    let got = read_numbered(&rt, &mut server, 100).await;
    assert_eq!(got, (20..120).map(|i| (1, i)).collect::<Vec<_>>());
    assert_eq!(server.dials(), 2);
    close_with_nothing_more(&rt, &mut server, &handle, 1).await;
}

/// Feeds numbered 64 KiB messages from `*fed` on until one waits, and
/// returns that waiting feed (its message not yet handed over).
///
/// No event says "this feed is waiting", so a feed counts as waiting once
/// it has not finished for a quiet period; a busy machine can only end the
/// loop early, which the callers tolerate.
async fn feed_until_waiting<'h, R: Runtime>(
    rt: &R,
    handle: &'h crate::Handle,
    fed: &mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SendError>> + Send + 'h>> {
    const PAD: usize = 64 * 1024;
    const LIMIT: usize = 2000;
    let first = *fed;
    loop {
        assert!(
            *fed - first < LIMIT,
            "{LIMIT} feeds never waited for the socket"
        );
        let mut feed = Box::pin(handle.feed(numbered(*fed, PAD)));
        let quiet = Box::pin(rt.sleep_until(rt.now() + Duration::from_millis(300)));
        match select(feed.as_mut(), quiet).await {
            Either::Left((result, _)) => {
                result.expect("fed");
                *fed += 1;
            }
            Either::Right(_) => return feed,
        }
    }
}

/// A server that stops reading: once the socket takes no more, `feed`
/// waits (backpressure) instead of dropping or buffering without bound,
/// and goes on when the server reads again. Then a close asked while a
/// feed waits for the full socket: it waits for the server to read and
/// comes after everything fed before it. Nothing is lost.
pub async fn feed_waits_for_slow_server<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    // No keepalive: unanswered pings would end the connection.
    let config = fast_config()
        .ping_interval(None)
        .queue_max_messages(2)
        .build()
        .expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    // 64 KiB messages fill the TCP buffers after a few MiB.
    server.stop_reading(0);
    let mut fed = 0;
    let waiting = feed_until_waiting(&rt, &handle, &mut fed).await;
    assert!(fed > 2, "waited after {fed} messages");
    server.resume_reading(0);
    within(&rt, WAIT, "the waiting feed", waiting)
        .await
        .expect("fed");
    fed += 1;
    let got = read_numbered(&rt, &mut server, fed).await;
    assert_eq!(got, (0..fed).map(|i| (0, i)).collect::<Vec<_>>());

    server.stop_reading(0);
    let first = fed;
    // Cancelled: its message is never handed over.
    drop(feed_until_waiting(&rt, &handle, &mut fed).await);
    let resume = async {
        server.resume_reading(0);
    };
    within(&rt, WAIT, "close", join(handle.close(), resume)).await;
    let got = read_numbered(&rt, &mut server, fed - first).await;
    assert_eq!(got, (first..fed).map(|i| (0, i)).collect::<Vec<_>>());
    let e = wait_server(&rt, &mut server, "close frame", |_| true).await;
    assert_eq!(
        e,
        ServerEvent::Closed {
            conn: 0,
            code: Some(1000)
        }
    );
}

/// What `feed` refuses, and a close while a `feed` waits for room: the
/// close is not stuck behind it, and the waiting feed is answered.
pub async fn feed_refusals<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let server = ScriptedPeer::start(|_| Plan::Reject {
        status: 500,
        retry_after: None,
    })
    .expect("server");
    let config = fast_config()
        .queue_max_messages(2)
        .queue_max_bytes(1024)
        .close_linger(Duration::from_millis(100))
        .build()
        .expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    assert!(matches!(
        handle.feed_publish("news", Payload::text("x")).await,
        Err(SendError::Unsupported { .. })
    ));
    assert_eq!(
        handle.feed(Payload::binary(vec![0; 2000])).await,
        Err(SendError::TooLarge {
            len: 2000,
            max: 1024
        })
    );
    wait_event(&rt, &mut events, "dial failure", |e| {
        matches!(e, Event::DialFailed { .. })
    })
    .await;
    for m in ["1", "2"] {
        handle.feed(Payload::text(m)).await.expect("fed");
    }
    // "3" has no room until a connection that never comes: it waits, and
    // the close answers it.
    let third = handle.feed(Payload::text("3"));
    let (third, ()) = within(&rt, WAIT, "close", join(third, handle.close())).await;
    assert!(
        matches!(third, Err(SendError::Closing | SendError::Closed)),
        "{third:?}"
    );
    let e = wait_event(&rt, &mut events, "closed", is_closed).await;
    assert!(
        matches!(
            e,
            Event::Closed {
                reason: TerminalReason::ClosedByUser,
                undelivered: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        handle.feed(Payload::text("late")).await,
        Err(SendError::Closed)
    );
}

/// With the builder's default socket settings (small buffers), the largest
/// message a server sends without fragmenting it (one frame of
/// [`DEFAULT_MAX_FRAME_SIZE`](crate::DEFAULT_MAX_FRAME_SIZE) bytes) still
/// arrives whole, and the connection goes on.
pub async fn largest_frame_arrives<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    // No keepalive: on a loaded machine 16 MiB in a debug build can take
    // longer than the fast config's pong deadline to arrive, and a ping's
    // answer queues behind it.
    let config = fast_config().ping_interval(None).build().expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    let size = crate::DEFAULT_MAX_FRAME_SIZE;
    assert!(size > 100 * crate::DEFAULT_READ_BUFFER_SIZE);
    let mut big = "y".repeat(size - 6);
    big.insert_str(0, "large:");
    server.send_text(0, big);
    server.send_text(0, "after");
    // A generous limit: only a failure waits it out.
    let large = async {
        loop {
            match events.recv().await {
                Some(e) if text(&e).is_some() => return e,
                Some(_) => {}
                None => panic!("event stream ended while waiting for the large message"),
            }
        }
    };
    let e = within(&rt, Duration::from_secs(60), "the large message", large).await;
    let got = text(&e).expect("text");
    assert_eq!(got.len(), size);
    assert!(got.starts_with("large:") && got.bytes().skip(6).all(|b| b == b'y'));
    let e = wait_event(&rt, &mut events, "the next message", |e| text(e).is_some()).await;
    assert_eq!(text(&e), Some("after"));
    assert_eq!(handle.state(), State::Connected);
    within(&rt, WAIT, "close", handle.close()).await;
    wait_server(&rt, &mut server, "close frame", |e| {
        matches!(
            e,
            ServerEvent::Closed {
                code: Some(1000),
                ..
            }
        )
    })
    .await;
}

/// Raw messages the session handed over but the socket never took go back
/// to the session when the connection drops, and arrive after the
/// reconnect, in order, before anything sent later. Only what the socket
/// had taken (written, then lost with the connection) may be missing.
pub async fn unsent_frames_survive_a_drop<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    // No keepalive: unanswered pings would end the connection first.
    let config = fast_config().ping_interval(None).build().expect("config");
    let builder = make(server.url().to_owned()).config(config);
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", is_connected).await;

    // The server reads nothing: the TCP buffers fill, then the socket
    // takes no more and frames wait in the driver.
    server.stop_reading(0);
    let mut fed = 0;
    let waiting = feed_until_waiting(&rt, &handle, &mut fed).await;
    // `fed` waits in the handle for the full socket. Everything before it
    // went to the session, which handed it to the driver; whatever the
    // socket had not taken is still in the driver when the connection drops.
    assert!(fed > 1, "waited after {fed} messages");
    let held_outside = fed;
    server.drop_conn(0);
    wait_event(&rt, &mut events, "reconnected", is_connected).await;
    within(&rt, WAIT, "the waiting feed", waiting)
        .await
        .expect("fed");

    let mut got = Vec::new();
    while got.last() != Some(&fed) {
        let (conn, number) = read_numbered(&rt, &mut server, 1).await[0];
        assert_eq!(conn, 1, "the first connection read nothing");
        got.push(number);
    }
    let first = got[0];
    assert_eq!(
        got,
        (first..=fed).collect::<Vec<_>>(),
        "in order, once each, nothing after the gap missing"
    );
    assert!(
        first < held_outside,
        "no message the driver had been handed came back (first after the drop: {first}, \
         held outside the driver from {held_outside})"
    );
    close_with_nothing_more(&rt, &mut server, &handle, 1).await;
}
