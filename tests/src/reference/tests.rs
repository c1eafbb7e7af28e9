//! Tests of the harness around redial-server, driven by the raw client:
//! its fault switches and the counters and records it keeps. The protocol
//! itself is redial-server's and tested there.

use std::time::Duration;

use bytes::Bytes;
use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::wire::{error_code, Frame, Welcome};

use super::client::{fresh_hello, resume_hello, ClientError, RawClient};
use super::*;
use redial_server::names::is_valid_name;

/// Safety net for waits that an event ends; never reached when things work.
const NET: Duration = Duration::from_secs(5);

async fn server() -> ServerHandle {
    Server::start(ServerConfig::default()).await.unwrap()
}

async fn server_with(f: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut cfg = ServerConfig::default();
    f(&mut cfg);
    Server::start(cfg).await.unwrap()
}

async fn join(s: &ServerControl) -> (RawClient, Welcome) {
    let mut c = RawClient::connect(&s.url()).await.unwrap();
    let w = c.hello(fresh_hello(None)).await.unwrap();
    (c, w)
}

async fn resume(s: &ServerControl, token: &ResumeToken, last_offset: u64) -> (RawClient, Welcome) {
    let mut c = RawClient::connect(&s.url()).await.unwrap();
    let w = c.hello(resume_hello(token, last_offset)).await.unwrap();
    (c, w)
}

/// Closes the client and waits until the server has let go of the
/// connection (so its session is detached).
async fn leave(s: &ServerControl, c: RawClient) {
    c.close().await.unwrap();
    settle(s).await;
}

async fn settle(s: &ServerControl) {
    tokio::time::timeout(NET, s.wait_for(|st| st.live_connections == 0))
        .await
        .unwrap();
}

fn text(s: &str) -> Payload {
    Payload::text(s)
}

async fn expect_message(c: &mut RawClient, offset: u64, channel: Option<&str>, payload: &str) {
    match c.recv().await.unwrap() {
        Frame::Message {
            offset: o,
            channel: ch,
            payload: p,
        } => {
            assert_eq!(o, offset);
            assert_eq!(ch.as_ref().map(Text::as_str), channel);
            assert_eq!(p, text(payload));
        }
        other => panic!("expected MESSAGE {offset}, got {other:?}"),
    }
}

async fn expect_ack(c: &mut RawClient, seq: u64) {
    match c.recv().await.unwrap() {
        Frame::Ack { seq: s } => assert_eq!(s, seq),
        other => panic!("expected ACK {seq}, got {other:?}"),
    }
}

/// The ACK for `seq` and the MESSAGE its publish caused, in either order:
/// the protocol does not order an ACK against MESSAGEs.
async fn expect_ack_and_message(
    c: &mut RawClient,
    seq: u64,
    offset: u64,
    channel: Option<&str>,
    payload: &str,
) {
    let (mut acked, mut got) = (false, false);
    while !(acked && got) {
        match c.recv().await.unwrap() {
            Frame::Ack { seq: s } if !acked => {
                assert_eq!(s, seq);
                acked = true;
            }
            Frame::Message {
                offset: o,
                channel: ch,
                payload: p,
            } if !got => {
                assert_eq!(o, offset);
                assert_eq!(ch.as_ref().map(Text::as_str), channel);
                assert_eq!(p, text(payload));
                got = true;
            }
            other => panic!("expected ACK {seq} and MESSAGE {offset}, got {other:?}"),
        }
    }
}

async fn expect_close(c: &mut RawClient, code: u16) {
    loop {
        match c.recv().await {
            Err(ClientError::Closed(Some(f))) => {
                assert_eq!(u16::from(f.code), code, "reason {:?}", f.reason);
                return;
            }
            Err(e) => panic!("expected close {code}, got {e:?}"),
            Ok(_) => {}
        }
    }
}

async fn expect_terminal_error(c: &mut RawClient, code: u16) -> String {
    match c.recv().await.unwrap() {
        Frame::Error {
            code: got,
            terminal,
            reason,
        } => {
            assert_eq!(got, code);
            assert!(terminal);
            reason.as_str().to_owned()
        }
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn fresh_hello_gets_a_generated_name() {
    let s = server().await;
    let (_c, w) = join(&s).await;
    assert!(!w.resumed);
    assert!(is_valid_name(w.name.as_str()), "{}", w.name);
    assert_eq!(w.name.as_str().split('-').count(), 3);
    assert_eq!(w.last_client_seq, 0);
    assert!(w.kept.is_empty());
    assert_eq!(w.token_lifetime_ms, 24 * 3600 * 1000);
    let (_d, w2) = join(&s).await;
    assert_ne!(w.name, w2.name);
    assert_ne!(w.session_id, w2.session_id);
    assert_eq!(s.stats().sessions_created, 2);
}

#[tokio::test]
async fn resume_keeps_name_session_and_subscriptions() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    c.send(&Frame::Subscribe {
        channel: "news".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        c.recv().await.unwrap(),
        Frame::Subscribed {
            channel: "news".into()
        }
    );
    leave(&s, c).await;

    let (_c, w2) = resume(&s, &w.resume_token, 0).await;
    assert!(w2.resumed);
    assert_eq!(w2.name, w.name);
    assert_eq!(w2.session_id, w.session_id);
    assert_eq!(w2.kept, vec![Text::from("news")]);
    assert_ne!(w2.resume_token, w.resume_token);
    let st = s.stats();
    assert_eq!((st.sessions_created, st.sessions_resumed), (1, 1));
}

#[tokio::test]
async fn forged_token_gets_a_fresh_session_and_new_name() {
    let s = server().await;
    let (c, w) = join(&s).await;
    leave(&s, c).await;
    let mut forged = w.resume_token.expose().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x40;
    let (_c, w2) = resume(&s, &ResumeToken::new(forged), 0).await;
    assert!(!w2.resumed);
    assert_ne!(w2.name, w.name);
    assert_ne!(w2.session_id, w.session_id);
    assert_eq!(s.stats().tokens_rejected, 1);

    // Garbage is treated the same way.
    let (_d, w3) = resume(&s, &ResumeToken::new(Bytes::from_static(b"junk")), 0).await;
    assert!(!w3.resumed);
}

#[tokio::test]
async fn expired_token_gets_a_fresh_session_and_new_name() {
    let s = server_with(|c| c.token_lifetime = Duration::from_secs(60)).await;
    let (c, w) = join(&s).await;
    assert_eq!(w.token_lifetime_ms, 60_000);
    leave(&s, c).await;

    // Within the lifetime (counted from the loss of the connection).
    s.advance_clock(Duration::from_secs(59));
    let (c, w2) = resume(&s, &w.resume_token, 0).await;
    assert!(w2.resumed);
    leave(&s, c).await;

    s.advance_clock(Duration::from_secs(61));
    let (_c, w3) = resume(&s, &w2.resume_token, 0).await;
    assert!(!w3.resumed);
    assert_ne!(w3.name, w.name);
    assert_eq!(s.stats().tokens_rejected, 1);
}

#[tokio::test]
async fn tokens_do_not_expire_while_connected() {
    let s = server_with(|c| c.token_lifetime = Duration::from_secs(1)).await;
    let (c, w) = join(&s).await;
    s.advance_clock(Duration::from_secs(3600));
    // The old connection is still attached (half-open, say): resuming takes
    // the session over and closes the old one.
    let (_d, w2) = resume(&s, &w.resume_token, 0).await;
    assert!(w2.resumed);
    let mut c = c;
    expect_close(&mut c, 1000).await;
}

#[tokio::test]
async fn invalid_requested_name_is_a_terminal_error() {
    let s = server().await;
    for bad in ["Bad_Name", "ab", "-edge", "edge-"] {
        let mut c = RawClient::connect(&s.url()).await.unwrap();
        c.send(&Frame::Hello(fresh_hello(Some(bad)))).await.unwrap();
        let reason = expect_terminal_error(&mut c, error_code::NAME_UNAVAILABLE).await;
        assert_eq!(reason, "subdomain unavailable");
        expect_close(&mut c, 1008).await;
    }
    assert_eq!(s.stats().hello_errors, 4);
    assert_eq!(s.stats().sessions_created, 0);
}

#[tokio::test]
async fn unsupported_version_is_a_terminal_error() {
    let s = server().await;
    let mut c = RawClient::connect(&s.url()).await.unwrap();
    let mut hello = fresh_hello(None);
    hello.version = 0;
    c.send(&Frame::Hello(hello)).await.unwrap();
    expect_terminal_error(&mut c, error_code::UNSUPPORTED_VERSION).await;
    // A later version is answered with ours.
    let mut c = RawClient::connect(&s.url()).await.unwrap();
    let mut hello = fresh_hello(None);
    hello.version = 7;
    assert_eq!(c.hello(hello).await.unwrap().version, 1);
}

#[tokio::test]
async fn publish_is_echoed_acked_and_deduplicated() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    c.publish(1, None, "one").await.unwrap();
    expect_ack_and_message(&mut c, 1, 1, None, "one").await;

    // A resend of seq 1 is acked with the high-water mark, not applied.
    c.publish(1, None, "one").await.unwrap();
    expect_ack(&mut c, 1).await;
    c.publish(2, None, "two").await.unwrap();
    expect_ack_and_message(&mut c, 2, 2, None, "two").await;

    let applied: Vec<(u64, Payload)> = s
        .applied(w.name.as_str())
        .into_iter()
        .map(|a| (a.seq, a.payload))
        .collect();
    assert_eq!(applied, vec![(1, text("one")), (2, text("two"))]);
    let st = s.stats();
    assert_eq!((st.publishes_applied, st.duplicates_dropped), (2, 1));
    let info = s.session(w.name.as_str()).unwrap();
    assert_eq!(info.last_client_seq, 2);
    assert_eq!(info.duplicates_dropped, 1);
}

#[tokio::test]
async fn channel_publish_fans_out_to_subscribers() {
    let s = server_with(|c| c.deny_channels = vec!["admin".into()]).await;
    let (mut a, _) = join(&s).await;
    let (mut b, _) = join(&s).await;
    let (mut other, _) = join(&s).await;
    for c in [&mut a, &mut b] {
        c.send(&Frame::Subscribe {
            channel: "news".into(),
        })
        .await
        .unwrap();
        assert!(matches!(c.recv().await.unwrap(), Frame::Subscribed { .. }));
    }
    other
        .send(&Frame::Subscribe {
            channel: "admin".into(),
        })
        .await
        .unwrap();
    match other.recv().await.unwrap() {
        Frame::SubscribeError { channel, code, .. } => {
            assert_eq!(channel.as_str(), "admin");
            assert_eq!(code, error_code::UNAUTHORIZED);
        }
        f => panic!("{f:?}"),
    }

    a.publish(1, Some("news"), "hi").await.unwrap();
    expect_ack_and_message(&mut a, 1, 1, Some("news"), "hi").await;
    expect_message(&mut b, 1, Some("news"), "hi").await;

    // The server can publish too.
    assert_eq!(s.publish("news", text("from server")), 2);
    expect_message(&mut b, 2, Some("news"), "from server").await;

    b.send(&Frame::Unsubscribe {
        channel: "news".into(),
    })
    .await
    .unwrap();
    // UNSUBSCRIBE has no reply; a PUBLISH after it shows it took effect
    // (frames from one connection are handled in order).
    b.publish(1, None, "marker").await.unwrap();
    expect_ack_and_message(&mut b, 1, 3, None, "marker").await;
    assert_eq!(s.publish("news", text("only a")), 1);
}

#[tokio::test]
async fn resume_replays_what_the_client_missed() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    c.send(&Frame::Subscribe {
        channel: "feed".into(),
    })
    .await
    .unwrap();
    c.recv().await.unwrap();
    for i in 1..=3 {
        s.publish("feed", text(&format!("m{i}")));
    }
    for i in 1..=3 {
        expect_message(&mut c, i, Some("feed"), &format!("m{i}")).await;
    }
    c.send(&Frame::Received { offset: 1 }).await.unwrap();
    c.publish(1, Some("elsewhere"), "x").await.unwrap();
    expect_ack(&mut c, 1).await;
    leave(&s, c).await;
    // The store hears of RECEIVEDs in batches, at the latest when the
    // session detaches: by now it has dropped what the client confirmed.
    assert_eq!(s.session(w.name.as_str()).unwrap().replay_len, 2);

    s.publish("feed", text("m4"));
    s.send_to(w.name.as_str(), text("direct"));
    // The client delivered up to 2 before it lost the connection.
    let (mut c, w2) = resume(&s, &w.resume_token, 2).await;
    assert!(w2.resumed);
    assert_eq!(w2.last_client_seq, 1);
    expect_message(&mut c, 3, Some("feed"), "m3").await;
    expect_message(&mut c, 4, Some("feed"), "m4").await;
    expect_message(&mut c, 5, None, "direct").await;
    // And live delivery carries on after the replay.
    s.publish("feed", text("m6"));
    expect_message(&mut c, 6, Some("feed"), "m6").await;
}

#[tokio::test]
async fn bounded_replay_leaves_a_gap() {
    let s = server_with(|c| c.replay_capacity = 2).await;
    let (mut c, w) = join(&s).await;
    c.send(&Frame::Subscribe {
        channel: "feed".into(),
    })
    .await
    .unwrap();
    c.recv().await.unwrap();
    leave(&s, c).await;
    for i in 1..=4 {
        s.publish("feed", text(&format!("m{i}")));
    }
    let (mut c, _) = resume(&s, &w.resume_token, 0).await;
    expect_message(&mut c, 3, Some("feed"), "m3").await;
    expect_message(&mut c, 4, Some("feed"), "m4").await;
}

#[tokio::test]
async fn lost_ack_is_recovered_through_last_client_seq() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    s.close_after(Some(1));
    c.publish(1, Some("void"), "applied, ack lost")
        .await
        .unwrap();
    // Dropped without a close frame and without the ACK.
    match c.recv().await {
        Err(ClientError::Closed(None) | ClientError::Ws(_)) => {}
        other => panic!("expected an abrupt drop, got {other:?}"),
    }
    settle(&s).await;
    s.close_after(None);
    let (mut c, w2) = resume(&s, &w.resume_token, 0).await;
    assert_eq!(w2.last_client_seq, 1);
    // A client that resends anyway gets a duplicate ACK, and the server
    // applied it once.
    c.publish(1, Some("void"), "applied, ack lost")
        .await
        .unwrap();
    expect_ack(&mut c, 1).await;
    assert_eq!(s.applied(w.name.as_str()).len(), 1);
    assert_eq!(s.stats().duplicates_dropped, 1);
}

#[tokio::test]
async fn admission_limit_answers_503_with_retry_after() {
    let s = server_with(|c| c.admission_per_sec = Some(2)).await;
    // Admissions are paced one every 1/R s: the second at once is refused.
    let _a = RawClient::connect(&s.url()).await.unwrap();
    match RawClient::connect(&s.url()).await {
        Err(ClientError::Refused {
            status,
            retry_after,
        }) => {
            assert_eq!(status.as_u16(), 503);
            assert_eq!(retry_after, Some(1));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    let st = s.stats();
    assert_eq!((st.handshakes_rejected, st.admissions_throttled), (1, 1));
    s.set_admission_limit(None);
    RawClient::connect(&s.url()).await.unwrap();
}

#[tokio::test]
async fn scripted_handshake_rejections() {
    let s = server().await;
    for (status, retry) in [
        (401, None),
        (403, None),
        (429, Some(1500)),
        (503, Some(30_000)),
    ] {
        s.reject_handshakes(Some(Reject {
            status,
            retry_after: retry.map(Duration::from_millis),
        }));
        match RawClient::connect(&s.url()).await {
            Err(ClientError::Refused {
                status: got,
                retry_after,
            }) => {
                assert_eq!(got.as_u16(), status);
                // Rounded up to whole seconds.
                assert_eq!(retry_after, retry.map(|ms: u64| ms.div_ceil(1000)));
            }
            other => panic!("expected {status}, got {other:?}"),
        }
    }
    assert_eq!(s.stats().handshakes_rejected, 4);
    s.reject_handshakes(None);
    join(&s).await;
}

#[tokio::test]
async fn upgrade_without_subprotocol_is_refused() {
    use tokio_tungstenite::tungstenite;
    let s = server().await;
    match tokio_tungstenite::connect_async(s.url()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 400),
        other => panic!("expected 400, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn going_away_then_1001() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    s.going_away(Duration::from_millis(1000), Duration::from_millis(5000));
    assert_eq!(
        c.recv().await.unwrap(),
        Frame::GoingAway {
            retry_after_ms: 1000,
            window_ms: 5000
        }
    );
    expect_close(&mut c, 1001).await;
    settle(&s).await;
    let (_c, w2) = resume(&s, &w.resume_token, 0).await;
    assert!(w2.resumed);
}

#[tokio::test]
async fn close_all_uses_the_given_code() {
    let s = server().await;
    let (mut a, _) = join(&s).await;
    let (mut b, _) = join(&s).await;
    s.close_all(4010, "over capacity");
    expect_close(&mut a, 4010).await;
    expect_close(&mut b, 4010).await;
}

#[tokio::test]
async fn stalled_server_does_not_answer_pings() {
    let s = server().await;
    let (mut c, _) = join(&s).await;
    c.ping(Bytes::from_static(b"1")).await.unwrap();
    c.recv_pong_within(NET).await.unwrap();

    s.stop_answering_pings(true);
    c.ping(Bytes::from_static(b"2")).await.unwrap();
    s.publish("x", text("irrelevant"));
    // Silence is the thing under test, so a bounded wait is the assertion.
    match c.recv_pong_within(Duration::from_millis(300)).await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    // Frames sent meanwhile are queued, not lost.
    c.publish(1, None, "while stalled").await.unwrap();

    s.stop_answering_pings(false);
    c.recv_pong_within(NET).await.unwrap();
    expect_ack_and_message(&mut c, 1, 1, None, "while stalled").await;
}

#[tokio::test]
async fn restart_keeping_the_key_resumes_sessions() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    s.restart(true);
    expect_close(&mut c, 1012).await;
    settle(&s).await;
    let (_c, w2) = resume(&s, &w.resume_token, 0).await;
    assert!(w2.resumed);
    assert_eq!(w2.name, w.name);
    assert_eq!(s.stats().restarts, 1);
}

#[tokio::test]
async fn restart_rotating_the_key_forgets_sessions() {
    let s = server().await;
    let (mut c, w) = join(&s).await;
    c.publish(1, None, "before").await.unwrap();
    expect_ack_and_message(&mut c, 1, 1, None, "before").await;
    s.restart(false);
    expect_close(&mut c, 1012).await;
    settle(&s).await;
    let (_c, w2) = resume(&s, &w.resume_token, 0).await;
    assert!(!w2.resumed);
    assert_ne!(w2.name, w.name);
    assert_eq!(w2.last_client_seq, 0);
    // The log of applied publishes survives, for exactly-once checks.
    assert_eq!(s.applied(w.name.as_str()).len(), 1);
}

#[tokio::test]
async fn stop_closes_with_1001_and_stops_listening() {
    let s = server().await;
    let (mut c, _) = join(&s).await;
    let url = s.url();
    let stopping = tokio::spawn(s.stop());
    expect_close(&mut c, 1001).await;
    stopping.await.unwrap();
    assert!(RawClient::connect(&url).await.is_err());
}

#[tokio::test]
async fn refuses_non_loopback_listen_addresses() {
    let cfg = ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    assert!(matches!(
        Server::start(cfg).await,
        Err(ServerError::NotLoopback(_))
    ));
}

#[tokio::test]
async fn resumes_through_the_proxy_after_a_reset() {
    use crate::proxy::{Cut, Proxy};
    let s = server().await;
    let proxy = Proxy::start(s.addr()).await.unwrap();
    let url = format!("ws://{}/", proxy.addr());
    let mut c = RawClient::connect(&url).await.unwrap();
    let w = c.hello(fresh_hello(None)).await.unwrap();
    c.publish(1, None, "before").await.unwrap();
    expect_ack_and_message(&mut c, 1, 1, None, "before").await;

    assert_eq!(proxy.cut_all(Cut::Reset), 1);
    assert!(c.recv().await.is_err());
    settle(&s).await;
    s.send_to(w.name.as_str(), text("while away"));

    let mut c = RawClient::connect(&url).await.unwrap();
    let w2 = c.hello(resume_hello(&w.resume_token, 1)).await.unwrap();
    assert!(w2.resumed);
    assert_eq!(w2.last_client_seq, 1);
    expect_message(&mut c, 2, None, "while away").await;
}
