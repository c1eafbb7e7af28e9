//! What users of a hand-written reconnect supervisor know: no
//! publish lost or repeated across drops, half-open links caught by the pong
//! deadline; and flap damping: a server that accepts and drops at once sees
//! growing delays, not a tight loop.
//!
//! Every scenario runs on tokio, async-std and smol.

// Integration-test helpers: a failed unwrap is a failed test, and these
// helper functions are not `#[test]` functions, which clippy.toml covers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fast_config, ms, pause, Client, Harness};
use redial_core::{Backoff, Event, Payload, Wire};
use redial_driver::{Builder, Runtime};
use redial_tests::proxy::Cut;

on_every_runtime!(
    no_publish_lost_or_repeated_across_drops,
    half_open_link_detected_by_pong_deadline,
    flapping_server_gets_growing_delays,
);

fn acked_through(n: u64) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Acked { seq } if *seq >= n)
}

/// Publishes while the link is cut (RST and FIN), while the server drops
/// every connection right after applying a publish (its ACK lost), and
/// under latency: the server applied each publish exactly once, in order.
async fn no_publish_lost_or_repeated_across_drops<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    let config = fast_config()
        .backoff(Backoff::full_jitter(ms(50), ms(200)))
        .build()
        .unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    let (_, first) = c.connected("the first connection").await;
    let name = first.name();

    let mut sent: Vec<(u64, String)> = Vec::new();
    let mut next = 1u64;
    let mut publish_up_to = |last: u64, cut_at: &[(u64, Cut)], c: &Client<R>| {
        let mut batch = Vec::new();
        while next <= last {
            batch.push(next);
            next += 1;
        }
        let cuts = cut_at.to_vec();
        let proxy = h.proxy.clone();
        let handle = c.handle.clone();
        async move {
            let mut out = Vec::new();
            for i in batch {
                let body = format!("order-{i}");
                let seq = handle.send(Payload::text(body.clone())).await.unwrap();
                out.push((seq, body));
                if let Some((_, how)) = cuts.iter().find(|(at, _)| *at == i) {
                    proxy.cut_all(*how);
                }
            }
            out
        }
    };

    // 1. Cuts while publishes are in flight.
    sent.extend(publish_up_to(40, &[(10, Cut::Reset), (25, Cut::Fin)], &c).await);
    c.next("acks through 40", acked_through(40)).await;

    // 2. Every connection drops right after its 3rd frame is applied, before
    // the ACK goes out: the client must learn from WELCOME what was stored.
    h.server.close_after(Some(3));
    sent.extend(publish_up_to(60, &[], &c).await);
    h.server_reaches(&c.rt, "all 60 applied", |s| s.publishes_applied >= 60)
        .await;
    h.server.close_after(None);
    c.next("acks through 60", acked_through(60)).await;

    // 3. Latency, and a cut with a backlog on the wire.
    h.proxy.set_latency(ms(30));
    sent.extend(publish_up_to(100, &[(80, Cut::Reset)], &c).await);
    h.proxy.set_latency(Duration::ZERO);
    c.next("acks through 100", acked_through(100)).await;

    let applied: Vec<(u64, String)> = h
        .server
        .applied(&name)
        .into_iter()
        .map(|p| (p.seq, p.payload.as_text().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(applied, sent, "applied exactly once, in order");
    assert_eq!(h.server.stats().publishes_applied, 100);
    assert_eq!(h.server.session_names(), [name]);
    let reconnects = c.events.reconnects();
    assert!(reconnects >= 3, "only {reconnects} reconnects");
    c.close().await;
}

/// The proxy turns the link into a black hole (no FIN, no RST, nothing):
/// the client gives up on it at the pong deadline, keeps trying, and is
/// back (same session) once the hole is lifted.
async fn half_open_link_detected_by_pong_deadline<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let ping = ms(200);
    let pong = ms(300);
    let h = Harness::default_server();
    let config = fast_config()
        .ping_interval(Some(ping))
        .pong_timeout(pong)
        .connect_timeout(ms(800))
        .build()
        .unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));
    let (_, first) = c.connected("the first connection").await;

    let start = Instant::now();
    h.proxy.blackhole(true);
    let lost = c.disconnected("the pong timeout").await;
    match &lost.event {
        Event::Disconnected {
            code,
            reason,
            will_reconnect,
        } => {
            assert_eq!(*code, None);
            assert_eq!(reason, "pong timeout");
            assert!(*will_reconnect);
        }
        other => unreachable!("{other:?}"),
    }
    // At worst the last frame came just before the hole: one quiet ping
    // interval, then the pong deadline, plus scheduling slack.
    let took = lost.at.duration_since(start);
    assert!(took <= ping + pong + ms(400), "detected after {took:?}");

    // Dials into the hole time out; the session keeps trying.
    let failed = c
        .next("a dial lost in the hole", |e| {
            matches!(e, Event::DialFailed { .. })
        })
        .await;
    assert!(
        matches!(&failed.event, Event::DialFailed { status: None, .. }),
        "{:?}",
        failed.event
    );
    h.proxy.blackhole(false);
    let (_, again) = c.connected("the recovery").await;
    assert!(again.reconnect && again.resumed, "{again:?}");
    assert_eq!(again.name(), first.name());
    c.close().await;
}

/// Every session the server sets up is cut at once. With a jitter-free
/// ladder (40 ms, x2) the delays are exactly 40, 80, 160, 320, 640 ms: the
/// attempt count never resets because no connection lives `stable_after`.
/// Once the flapping stops and a connection stays up, the ladder starts
/// over.
async fn flapping_server_gets_growing_delays<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let h = Harness::default_server();
    let flapping = Arc::new(AtomicBool::new(true));
    {
        let server = h.server.clone();
        let proxy = h.proxy.clone();
        let flapping = Arc::clone(&flapping);
        h.spawn(async move {
            let mut sessions = 0;
            loop {
                let s = server
                    .wait_for(|s| s.sessions_created + s.sessions_resumed > sessions)
                    .await;
                sessions = s.sessions_created + s.sessions_resumed;
                if !flapping.load(Ordering::SeqCst) {
                    return;
                }
                proxy.cut_all(Cut::Reset);
            }
        });
    }
    let config = fast_config()
        .backoff(Backoff::proportional(ms(40), 2.0, 0.0, ms(5000)))
        .stable_after(ms(300))
        .build()
        .unwrap();
    let mut c = Client::connect(make(h.proxied_url()).protocol(Wire).config(config));

    let start = Instant::now();
    let mut delays = Vec::new();
    for attempt in 1..=5u32 {
        let s = c
            .next("a scheduled reconnect", |e| {
                matches!(e, Event::ReconnectScheduled { .. })
            })
            .await;
        match s.event {
            Event::ReconnectScheduled { attempt: a, delay } => {
                assert_eq!(a, attempt, "the ladder was reset while flapping");
                delays.push(delay);
            }
            _ => unreachable!(),
        }
    }
    flapping.store(false, Ordering::SeqCst);
    let expected: Vec<Duration> = [40, 80, 160, 320, 640].map(ms).to_vec();
    for (got, want) in delays.iter().zip(&expected) {
        let diff = got.abs_diff(*want);
        assert!(diff <= ms(1), "delays {delays:?}, expected {expected:?}");
    }
    // No tight loop: the first four waits really happened.
    let spent = start.elapsed();
    assert!(spent >= ms(40 + 80 + 160 + 320), "{spent:?}");
    let sessions = {
        let s = h.server.stats();
        s.sessions_created + s.sessions_resumed
    };
    assert!(sessions <= 5, "{sessions} sessions in {spent:?}");

    // The flapping is over: this connection stays, and outlives
    // `stable_after` (time passing is the point here).
    c.connected("a connection that stays").await;
    pause(&c.rt, ms(600)).await;
    h.proxy.cut_all(Cut::Reset);
    c.disconnected("a cut after a stable connection").await;
    let s = c
        .next("the reconnect", |e| {
            matches!(e, Event::ReconnectScheduled { .. })
        })
        .await;
    assert!(
        matches!(s.event, Event::ReconnectScheduled { attempt: 1, delay } if delay.abs_diff(ms(40)) <= ms(1)),
        "the ladder starts over: {:?}",
        s.event
    );
    c.connected("the reconnect").await;
    c.close().await;
}
