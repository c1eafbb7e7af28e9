//! What tunnel users know: one long-lived WebSocket whose
//! session name (the tunnel's subdomain) survives reconnects thanks to a
//! resume token, a fresh name once the token has expired, 401/403 on
//! reconnect and a cap on reconnect attempts that end the session.
//!
//! Every scenario runs on tokio, async-std and smol.

// Integration-test helpers: a failed unwrap is a failed test, and these
// helper functions are not `#[test]` functions, which clippy.toml covers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fast_config, ms, Client, Harness};
use redial_core::{AuthToken, Event, State, TerminalReason, TokenFailure, Wire};
use redial_driver::{Builder, Runtime};
use redial_tests::proxy::Cut;
use redial_tests::reference::{Reject, ServerConfig};

on_every_runtime!(
    name_survives_drops_and_restarts,
    expired_token_gets_a_new_name,
    short_token_lifetime_gets_a_new_name,
    unauthorized_on_reconnect_stops,
    unauthorized_after_one_fresh_token_stops,
    forbidden_on_reconnect_stops,
    attempts_exhausted_when_refused,
    attempts_exhausted_on_server_errors,
    requested_name_is_kept_and_exclusive,
);

fn reconnecting(e: &Event) -> bool {
    matches!(
        e,
        Event::StateChanged {
            to: State::Reconnecting,
            ..
        }
    )
}

fn dial_failed(e: &Event) -> bool {
    matches!(e, Event::DialFailed { .. })
}

/// Cut with RST, cut with FIN, server restart keeping its key: every time
/// the client goes through `reconnecting` and comes back to the same
/// session, under the same name.
async fn name_survives_drops_and_restarts<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    let config = fast_config().build().unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    let (_, first) = c.connected("the first connection").await;
    assert!(!first.reconnect && !first.resumed, "{first:?}");
    let name = first.name();

    for fault in ["cut (RST)", "cut (FIN)", "restart keeping the key"] {
        let code = match fault {
            "cut (RST)" => {
                assert_eq!(h.proxy.cut_all(Cut::Reset), 1);
                None
            }
            "cut (FIN)" => {
                assert_eq!(h.proxy.cut_all(Cut::Fin), 1);
                None
            }
            _ => {
                h.server.restart(true);
                Some(1012)
            }
        };
        let d = c.disconnected(fault).await;
        assert!(
            matches!(d.event, Event::Disconnected { code: got, will_reconnect: true, .. } if got == code),
            "{fault}: {:?}",
            d.event
        );
        c.next("the reconnecting state", reconnecting).await;
        let (_, again) = c.connected("the reconnect").await;
        assert!(again.reconnect && again.resumed, "{fault}: {again:?}");
        assert_eq!(again.name(), name, "{fault}: the name changed");
        assert_eq!(again.session.id, first.session.id, "{fault}");
    }

    // One session on the server, resumed once per reconnect we saw.
    assert_eq!(h.server.session_names(), std::slice::from_ref(&name));
    let reconnects = c.events.reconnects();
    let info = h.server.session(&name).unwrap();
    assert_eq!(info.resumes, reconnects as u64);
    c.close().await;
}

/// The client is away longer than the token lives (the server's clock is
/// moved on while it cannot reach it): it presents its token, the server
/// refuses it, the application hears `ResumeRejected` naming the old session,
/// and the new session has a new name.
async fn expired_token_gets_a_new_name<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    let config = fast_config().build().unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    let (_, first) = c.connected("the first connection").await;
    let name = first.name();

    h.proxy.set_refusing(true);
    h.proxy.cut_all(Cut::Reset);
    c.disconnected("the cut").await;
    // The server has let the connection go, so the token's lifetime runs...
    h.server_reaches(&c.rt, "the server to notice the drop", |s| {
        s.live_connections == 0
    })
    .await;
    c.next("a refused redial", dial_failed).await;
    // ... and a day later it is over.
    h.server.advance_clock(Duration::from_secs(25 * 3600));
    h.proxy.set_refusing(false);

    let rejected = c
        .next("ResumeRejected", |e| {
            matches!(e, Event::ResumeRejected { .. })
        })
        .await;
    match rejected.event {
        Event::ResumeRejected { previous } => {
            assert_eq!(previous.name.as_str(), name);
            assert_eq!(previous.id, first.session.id);
        }
        other => unreachable!("{other:?}"),
    }
    let (_, fresh) = c.connected("the fresh session").await;
    assert!(fresh.reconnect && !fresh.resumed, "{fresh:?}");
    assert_ne!(
        fresh.name(),
        name,
        "an expired token must not keep the name"
    );
    assert_eq!(h.server.stats().tokens_rejected, 1);
    assert_eq!(h.server.session_names(), [fresh.name()]);
    c.close().await;
}

/// A short token lifetime from the server (in WELCOME): once the outage
/// outlasts it the client starts over with a fresh session and a new name.
///
/// `ResumeRejected` is not expected here: the client knows the token
/// expired and does not present it (see `Event::ResumeRejected`), so the
/// application learns of the new name from `Connected { resumed: false }`.
async fn short_token_lifetime_gets_a_new_name<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let lifetime = ms(300);
    let h = Harness::start(ServerConfig {
        token_lifetime: lifetime,
        ..ServerConfig::default()
    });
    let config = fast_config().build().unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    let (_, first) = c.connected("the first connection").await;
    let name = first.name();

    h.proxy.set_refusing(true);
    h.proxy.cut_all(Cut::Reset);
    let lost = c.disconnected("the cut").await;
    // The outage goes on, dial after failed dial, until it has outlasted
    // the token (with a margin for the server, which counts from its own
    // view of the drop).
    loop {
        let failed = c.next("a refused redial", dial_failed).await;
        if failed.at.duration_since(lost.at) > lifetime + ms(150) {
            break;
        }
    }
    h.proxy.set_refusing(false);

    let (_, fresh) = c.connected("the fresh session").await;
    assert!(fresh.reconnect && !fresh.resumed, "{fresh:?}");
    assert_ne!(fresh.name(), name);
    assert_ne!(fresh.session.id, first.session.id);
    c.close().await;
}

/// Counts its calls and hands out `token-<n>`.
fn counting_provider(
    calls: &Arc<AtomicUsize>,
) -> impl Fn() -> std::future::Ready<Result<AuthToken, TokenFailure>> + Send + Sync + 'static {
    let calls = Arc::clone(calls);
    move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Ok(AuthToken::new(format!("token-{n}"))))
    }
}

/// The server starts refusing upgrades with `status` after a first good
/// connection; the link drops; the session ends with `expected` after
/// `rejections` refused dials, and nothing dials again.
async fn refused_on_reconnect<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
    status: u16,
    with_provider: bool,
    expected: TerminalReason,
    rejections: u64,
) {
    let h = Harness::default_server();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut builder = make(h.proxied_url()).protocol(Wire);
    if with_provider {
        builder = builder.token_provider(counting_provider(&calls));
    }
    let config = fast_config().token_provider(with_provider).build().unwrap();
    let mut c = Client::connect(builder.config(config));
    c.connected("the first connection").await;
    let calls_before = calls.load(Ordering::SeqCst);
    let dials_before = h.proxy.accepted();

    h.server.reject_handshakes(Some(Reject {
        status,
        retry_after: None,
    }));
    h.proxy.cut_all(Cut::Reset);
    c.disconnected("the cut").await;
    let failed = c.next("the refused redial", dial_failed).await;
    assert!(
        matches!(failed.event, Event::DialFailed { status: Some(s), .. } if s == status),
        "{:?}",
        failed.event
    );
    let (reason, code) = c.closed("the end of the session").await;
    assert_eq!(reason, expected);
    assert_eq!(reason.name(), expected.name());
    assert_eq!(code, Some(status));

    // The stream has ended: the driver is gone and no dial can follow.
    let stats = h.server.stats();
    assert_eq!(stats.handshakes_rejected, rejections);
    assert_eq!(h.proxy.accepted(), dials_before + rejections);
    assert_eq!(c.handle.state(), State::Closed);
    if with_provider {
        // One token per dial; a 401 earns exactly one more.
        assert_eq!(
            calls.load(Ordering::SeqCst),
            calls_before + rejections as usize
        );
    }
}

/// 401 on reconnect without a token provider: `unauthorized` at once.
async fn unauthorized_on_reconnect_stops<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    refused_on_reconnect(make, 401, false, TerminalReason::Unauthorized, 1).await;
}

/// 401 on reconnect with a token provider: one immediate retry with a fresh
/// token, then `unauthorized`.
async fn unauthorized_after_one_fresh_token_stops<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    refused_on_reconnect(make, 401, true, TerminalReason::Unauthorized, 2).await;
}

/// 403 on reconnect: `forbidden` at once, even with a token provider.
async fn forbidden_on_reconnect_stops<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    refused_on_reconnect(make, 403, true, TerminalReason::Forbidden, 1).await;
}

/// After the link drops, every redial fails; with `max_attempts(3)` the
/// session ends `attempts_exhausted` after exactly three attempts.
/// `refuse_tcp`: the proxy resets every connection; otherwise the server
/// answers every upgrade with 500.
async fn attempts_exhausted<R: Runtime>(make: impl Fn(String) -> Builder<R>, refuse_tcp: bool) {
    let h = Harness::default_server();
    let config = fast_config().max_attempts(3).build().unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    c.connected("the first connection").await;

    if refuse_tcp {
        h.proxy.set_refusing(true);
    } else {
        h.server.reject_handshakes(Some(Reject {
            status: 500,
            retry_after: None,
        }));
    }
    let start = Instant::now();
    h.proxy.cut_all(Cut::Reset);
    let (reason, code) = c.closed("attempts_exhausted").await;
    assert_eq!(reason, TerminalReason::AttemptsExhausted);
    assert_eq!(reason.name(), "attempts_exhausted");
    assert_eq!(code, None);

    let scheduled: Vec<u32> = c
        .events
        .matching(|e| matches!(e, Event::ReconnectScheduled { .. }))
        .into_iter()
        .filter(|s| s.at >= start)
        .map(|s| match s.event {
            Event::ReconnectScheduled { attempt, .. } => attempt,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(scheduled, [1, 2, 3]);
    let failures: Vec<Option<u16>> = c
        .events
        .matching(dial_failed)
        .into_iter()
        .map(|s| match s.event {
            Event::DialFailed { status, .. } => status,
            _ => unreachable!(),
        })
        .collect();
    if refuse_tcp {
        assert_eq!(failures, [None, None, None]);
        assert_eq!(h.proxy.refused(), 3);
    } else {
        assert_eq!(failures, [Some(500), Some(500), Some(500)]);
        assert_eq!(h.server.stats().handshakes_rejected, 3);
    }
}

async fn attempts_exhausted_when_refused<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    attempts_exhausted(make, true).await;
}

async fn attempts_exhausted_on_server_errors<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    attempts_exhausted(make, false).await;
}

/// A requested name (a reserved subdomain): granted, refused to a second
/// client while the first holds it, and asked for again after the token
/// expired, so the fresh session gets the same name back.
async fn requested_name_is_kept_and_exclusive<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    let config = fast_config().session_name("acme-staging").build().unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config.clone()));
    let (_, first) = c.connected("the first connection").await;
    assert_eq!(first.name(), "acme-staging");

    let mut rival = Client::connect(make(h.direct_url()).protocol(Wire).config(config));
    let (reason, _) = rival.closed("the rival's refusal").await;
    assert_eq!(reason, TerminalReason::NameUnavailable);
    assert_eq!(reason.name(), "name_unavailable");

    h.proxy.set_refusing(true);
    h.proxy.cut_all(Cut::Reset);
    c.disconnected("the cut").await;
    h.server_reaches(&c.rt, "the server to notice the drop", |s| {
        s.live_connections == 0
    })
    .await;
    c.next("a refused redial", dial_failed).await;
    h.server.advance_clock(Duration::from_secs(25 * 3600));
    h.proxy.set_refusing(false);

    let rejected = c
        .next("ResumeRejected", |e| {
            matches!(e, Event::ResumeRejected { .. })
        })
        .await;
    assert!(
        matches!(&rejected.event, Event::ResumeRejected { previous } if previous.id == first.session.id),
        "{:?}",
        rejected.event
    );
    let (_, fresh) = c.connected("the fresh session").await;
    assert!(!fresh.resumed, "{fresh:?}");
    assert_eq!(
        fresh.name(),
        "acme-staging",
        "the requested name is asked for again"
    );
    assert_ne!(fresh.session.id, first.session.id);
    c.close().await;
}
