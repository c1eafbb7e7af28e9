//! What realtime-SDK users know: terminal close codes with their
//! symbolic names and no retry, 4002 refreshing the token through the
//! provider, a slow floor after 4010, GOING_AWAY's retry hint, channels
//! resubscribed after every reconnect, and a stuck-reconnect notice.
//!
//! Every scenario runs on tokio, async-std and smol.

// Integration-test helpers: a failed unwrap is a failed test, and these
// helper functions are not `#[test]` functions, which clippy.toml covers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{fast_config, message_text, ms, Client, Harness};
use redial_core::{
    AuthToken, ClosePolicy, CloseRule, Event, Payload, State, TerminalReason, TokenFailure, Wire,
};
use redial_driver::{Builder, Runtime};
use redial_tests::proxy::Cut;

on_every_runtime!(
    terminal_close_codes_end_the_session,
    token_expired_4002_refreshes_the_token,
    concurrency_cap_4010_waits_for_the_floor,
    going_away_1001_honours_the_hint,
    channels_are_resubscribed_after_every_reconnect,
    stuck_notice_once_per_outage,
    token_provider_failures_are_reported,
);

fn subscribed_to(channel: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Subscribed { channel: c, .. } if c.as_str() == channel)
}

/// 4001, 4003, 4012, 4020 (and 1008, and 4002 without a token provider)
/// end the session with their symbolic reason; the server never sees a
/// second dial.
async fn terminal_close_codes_end_the_session<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    for (code, expected) in [
        (4001, TerminalReason::InvalidToken),
        (4003, TerminalReason::ChannelNotAuthorized),
        (4012, TerminalReason::AccountSuspended),
        (4020, TerminalReason::AdminDisconnect),
        (1008, TerminalReason::PolicyViolation),
        (4002, TerminalReason::TokenExpired),
    ] {
        let config = fast_config().build().unwrap();
        let mut c = Client::connect(make(h.direct_url()).protocol(Wire).config(config));
        c.connected("the connection").await;
        let dials = h.server.stats().connections;

        h.server.close_all(code, "scripted");
        let d = c.disconnected("the close").await;
        assert!(
            matches!(
                d.event,
                Event::Disconnected { code: Some(got), will_reconnect: false, .. } if got == code
            ),
            "{code}: {:?}",
            d.event
        );
        let (reason, got) = c.closed("the end of the session").await;
        assert_eq!(reason, expected, "{code}");
        assert_eq!(got, Some(code));
        let name = match code {
            4001 => "invalid_token",
            4003 => "channel_not_authorized",
            4012 => "account_suspended",
            4020 => "admin_disconnect",
            1008 => "policy_violation",
            _ => "token_expired",
        };
        assert_eq!(reason.name(), name);
        // The event stream has ended, so the driver is gone: no redial.
        assert_eq!(h.server.stats().connections, dials, "{code}: redialed");
        assert!(c
            .events
            .matching(|e| matches!(e, Event::ReconnectScheduled { .. }))
            .is_empty());
        assert_eq!(c.handle.state(), State::Closed);
    }
}

/// 4002: the token provider is asked again and the client reconnects at
/// once, resuming its session.
async fn token_expired_4002_refreshes_the_token<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let provider = move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Ok::<_, TokenFailure>(AuthToken::new(format!("jwt-{n}"))))
    };
    let config = fast_config().token_provider(true).build().unwrap();
    let mut c = Client::connect(
        make(h.direct_url())
            .protocol(Wire)
            .config(config)
            .token_provider(provider),
    );
    let (_, first) = c.connected("the first connection").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    h.server.close_all(4002, "token expired");
    let d = c.disconnected("the 4002 close").await;
    assert!(
        matches!(
            d.event,
            Event::Disconnected {
                code: Some(4002),
                will_reconnect: true,
                ..
            }
        ),
        "{:?}",
        d.event
    );
    let scheduled = c
        .next("the reconnect", |e| {
            matches!(e, Event::ReconnectScheduled { .. })
        })
        .await;
    assert!(
        matches!(scheduled.event, Event::ReconnectScheduled { delay, .. } if delay.is_zero()),
        "a refresh reconnects at once: {:?}",
        scheduled.event
    );
    let (_, again) = c.connected("the reconnect").await;
    assert!(again.reconnect && again.resumed, "{again:?}");
    assert_eq!(again.name(), first.name());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one fresh token");
    c.close().await;
}

/// 4010: the next dial waits at least the floor. The floor is shortened
/// here with a policy override to keep the suite fast; the default 30 s
/// floor is unit-tested in core (`close_policy.rs`, `tests/rules.rs`).
async fn concurrency_cap_4010_waits_for_the_floor<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let floor = ms(700);
    let h = Harness::default_server();
    let config = fast_config()
        .close_policy(ClosePolicy::new().with_code(4010, CloseRule::Floor(floor)))
        .build()
        .unwrap();
    let mut c = Client::connect(make(h.direct_url()).protocol(Wire).config(config));
    c.connected("the first connection").await;
    let dials = h.server.stats().connections;

    let start = Instant::now();
    h.server.close_all(4010, "too many connections");
    let d = c.disconnected("the 4010 close").await;
    assert!(
        matches!(
            d.event,
            Event::Disconnected {
                code: Some(4010),
                will_reconnect: true,
                ..
            }
        ),
        "{:?}",
        d.event
    );
    let scheduled = c
        .next("the reconnect", |e| {
            matches!(e, Event::ReconnectScheduled { .. })
        })
        .await;
    match scheduled.event {
        // The floor plus up to 10 % so a fleet does not come back at once.
        Event::ReconnectScheduled { delay, .. } => {
            assert!(delay >= floor && delay <= floor + floor / 10, "{delay:?}")
        }
        other => unreachable!("{other:?}"),
    }
    let (back, again) = c.connected("the reconnect").await;
    assert!(again.resumed);
    // The close cannot have reached the client before `start`, and the
    // reconnect cannot be seen before it happened: a sound lower bound.
    let gap = back.at.duration_since(start);
    assert!(gap >= floor, "redialed after {gap:?}, floor {floor:?}");
    assert_eq!(
        h.server.stats().connections,
        dials + 1,
        "exactly one redial"
    );
    c.close().await;
}

/// 1001 after GOING_AWAY: no dial before `retry_after`, and at most
/// `window` later.
async fn going_away_1001_honours_the_hint<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let retry_after = ms(600);
    let window = ms(200);
    let h = Harness::default_server();
    let config = fast_config().build().unwrap();
    let mut c = Client::connect(make(h.direct_url()).protocol(Wire).config(config));
    let (_, first) = c.connected("the first connection").await;
    let dials = h.server.stats().connections;

    let start = Instant::now();
    h.server.going_away(retry_after, window);
    let hint = c
        .next("GOING_AWAY", |e| matches!(e, Event::GoingAway { .. }))
        .await;
    assert!(
        matches!(hint.event, Event::GoingAway { retry_after: r, window: w } if r == retry_after && w == window),
        "{:?}",
        hint.event
    );
    let d = c.disconnected("the 1001 close").await;
    assert!(
        matches!(
            d.event,
            Event::Disconnected {
                code: Some(1001),
                will_reconnect: true,
                ..
            }
        ),
        "{:?}",
        d.event
    );
    let scheduled = c
        .next("the reconnect", |e| {
            matches!(e, Event::ReconnectScheduled { .. })
        })
        .await;
    match scheduled.event {
        Event::ReconnectScheduled { delay, .. } => assert!(
            delay >= retry_after && delay <= retry_after + window,
            "{delay:?}"
        ),
        other => unreachable!("{other:?}"),
    }
    let (back, again) = c.connected("the reconnect").await;
    assert!(again.resumed && again.name() == first.name(), "{again:?}");
    let gap = back.at.duration_since(start);
    assert!(gap >= retry_after, "redialed after {gap:?}");
    assert_eq!(
        h.server.stats().connections,
        dials + 1,
        "exactly one redial"
    );
    c.close().await;
}

/// A subscriber (through the proxy) keeps getting what another client
/// publishes on its channel: after a cut (the resumed session kept the
/// subscription) and after a restart that forgot every session (the client
/// subscribes again on its own).
async fn channels_are_resubscribed_after_every_reconnect<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let h = Harness::default_server();
    let config = fast_config().build().unwrap();
    let mut sub = Client::connect(make(h.proxied_url()).protocol(Wire).config(config.clone()));
    let publisher = Client::connect(make(h.direct_url()).protocol(Wire).config(config));
    sub.connected("the subscriber's connection").await;
    sub.handle.subscribe("news").await.unwrap();
    sub.next("the subscription", subscribed_to("news")).await;

    let mut expected = Vec::new();
    for step in ["before any drop", "after a cut", "after a restart"] {
        match step {
            "after a cut" => {
                h.proxy.cut_all(Cut::Reset);
                sub.disconnected(step).await;
                let mark = sub.events.mark();
                let (_, again) = sub.connected(step).await;
                assert!(again.resumed, "{again:?}");
                // Reported as confirmed from WELCOME's `kept` list (the
                // session announces it just before `Connected`).
                sub.events.rewind(mark);
                sub.next("the kept subscription", subscribed_to("news"))
                    .await;
            }
            "after a restart" => {
                h.server.restart(false);
                sub.disconnected(step).await;
                sub.next("ResumeRejected", |e| {
                    matches!(e, Event::ResumeRejected { .. })
                })
                .await;
                let (_, fresh) = sub.connected(step).await;
                assert!(!fresh.resumed, "{fresh:?}");
                // Confirmed by the server: the client subscribed again.
                sub.next("the renewed subscription", subscribed_to("news"))
                    .await;
                let info = h.server.session(&fresh.name()).unwrap();
                assert_eq!(info.subscriptions, ["news"]);
            }
            _ => {}
        }
        let text = format!("news {step}");
        publisher
            .handle
            .publish("news", Payload::text(text.clone()))
            .await
            .unwrap();
        let got = sub
            .next(&text, |e| matches!(e, Event::Message { .. }))
            .await;
        match &got.event {
            Event::Message { channel, .. } => {
                assert_eq!(channel.as_ref().map(|c| c.as_str()), Some("news"))
            }
            other => unreachable!("{other:?}"),
        }
        assert_eq!(message_text(&got.event), Some(text.as_str()));
        expected.push(text);
    }
    // Each exactly once.
    let all: Vec<String> = sub
        .events
        .matching(|e| matches!(e, Event::Message { .. }))
        .iter()
        .filter_map(|s| message_text(&s.event).map(str::to_owned))
        .collect();
    assert_eq!(all, expected);
    publisher.close().await;
    sub.close().await;
}

/// The server is unreachable: `Stuck` comes once, no sooner than
/// `stuck_after` into the outage, and the client recovers when the server
/// is back.
async fn stuck_notice_once_per_outage<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let stuck_after = ms(500);
    let h = Harness::default_server();
    let config = fast_config().stuck_after(stuck_after).build().unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    c.connected("the first connection").await;

    h.proxy.set_refusing(true);
    let start = Instant::now();
    h.proxy.cut_all(Cut::Reset);
    c.disconnected("the cut").await;
    let stuck = c
        .events
        .next_without(
            &c.rt,
            "the stuck notice",
            |e| matches!(e, Event::Stuck { .. }),
            common::is_connected,
        )
        .await;
    match stuck.event {
        Event::Stuck { for_, attempts } => {
            assert!(for_ >= stuck_after, "{for_:?}");
            assert!(attempts >= 1);
        }
        other => unreachable!("{other:?}"),
    }
    assert!(stuck.at.duration_since(start) >= stuck_after);
    assert_eq!(c.handle.state(), State::Reconnecting);

    // Two more failed dials, and still only one notice for this outage.
    for _ in 0..2 {
        c.next("another refused dial", |e| {
            matches!(e, Event::DialFailed { .. })
        })
        .await;
    }
    h.proxy.set_refusing(false);
    let (_, again) = c.connected("the recovery").await;
    assert!(again.resumed);
    assert_eq!(
        c.events
            .matching(|e| matches!(e, Event::Stuck { .. }))
            .len(),
        1
    );
    c.close().await;
}

/// The token provider keeps failing: `TokenProviderFailing` from the third
/// failure in a row, the session keeps trying and recovers when the
/// provider does; a provider that says "unauthorized" ends the session.
async fn token_provider_failures_are_reported<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    const OK: u8 = 0;
    const DOWN: u8 = 1;
    const REVOKED: u8 = 2;
    let h = Harness::default_server();
    let mode = Arc::new(AtomicU8::new(OK));
    let provider = {
        let mode = Arc::clone(&mode);
        move || {
            std::future::ready(match mode.load(Ordering::SeqCst) {
                OK => Ok(AuthToken::new("jwt")),
                DOWN => Err(TokenFailure::transient("auth backend down")),
                _ => Err(TokenFailure::unauthorized("session revoked")),
            })
        }
    };
    let config = fast_config()
        .token_provider(true)
        .token_failure_threshold(3)
        .build()
        .unwrap();
    let mut c = Client::connect(
        make(h.direct_url())
            .protocol(Wire)
            .config(config)
            .token_provider(provider),
    );
    c.connected("the first connection").await;

    mode.store(DOWN, Ordering::SeqCst);
    h.server.close_all(1011, "internal error");
    c.disconnected("the close").await;
    let failing = c
        .events
        .next_without(
            &c.rt,
            "the provider warning",
            |e| matches!(e, Event::TokenProviderFailing { .. }),
            common::is_connected,
        )
        .await;
    assert!(
        matches!(&failing.event, Event::TokenProviderFailing { consecutive: 3, message } if message == "auth backend down"),
        "{:?}",
        failing.event
    );
    assert_eq!(c.handle.state(), State::Reconnecting);
    mode.store(OK, Ordering::SeqCst);
    let (_, again) = c.connected("the recovery").await;
    assert!(again.resumed);

    let dials = h.server.stats().connections;
    mode.store(REVOKED, Ordering::SeqCst);
    h.server.close_all(1011, "internal error");
    let (reason, _) = c.closed("the end of the session").await;
    assert_eq!(reason, TerminalReason::Unauthorized);
    assert_eq!(
        h.server.stats().connections,
        dials,
        "no dial without a token"
    );
}
