//! The shared scenarios on tokio, against a server on its own thread (real
//! time), plus paused-clock versions where a local server keeps time exact.

use std::time::Duration;

use redial_driver::testing::{self, Plan, ScriptedPeer};
use redial_tokio::builder;

#[tokio::test]
async fn stats_count_dials_disconnects_and_messages() {
    testing::stats_count_dials_disconnects_and_messages(builder).await;
}

#[tokio::test]
async fn state_watch_keeps_only_the_latest() {
    testing::state_watch_keeps_only_the_latest(builder).await;
}

#[tokio::test]
async fn connect_send_receive() {
    testing::connect_send_receive(builder).await;
}

#[tokio::test]
async fn reconnect_delivers_outage_messages() {
    testing::reconnect_delivers_outage_messages(builder).await;
}

#[tokio::test]
async fn close_4001_is_terminal() {
    testing::close_4001_is_terminal(builder).await;
}

#[tokio::test]
async fn half_open_is_detected() {
    testing::half_open_is_detected(builder).await;
}

#[tokio::test]
async fn graceful_close() {
    testing::graceful_close(builder).await;
}

#[tokio::test]
async fn dropping_handles_closes() {
    testing::dropping_handles_closes(builder).await;
}

#[tokio::test]
async fn token_provider_once_per_dial() {
    testing::token_provider_once_per_dial(builder).await;
}

#[tokio::test]
async fn token_in_query() {
    testing::token_in_query(builder).await;
}

#[tokio::test]
async fn send_waits_for_room() {
    testing::send_waits_for_room(builder).await;
}

#[tokio::test]
async fn burst_then_close_keeps_order() {
    testing::burst_then_close_keeps_order(builder).await;
}

#[tokio::test]
async fn send_and_feed_keep_order() {
    testing::send_and_feed_keep_order(builder).await;
}

#[tokio::test]
async fn feed_across_reconnect() {
    testing::feed_across_reconnect(builder).await;
}

#[tokio::test]
async fn feed_waits_for_slow_server() {
    testing::feed_waits_for_slow_server(builder).await;
}

#[tokio::test]
async fn feed_refusals() {
    testing::feed_refusals(builder).await;
}

#[tokio::test]
async fn too_large_message_closes_1009() {
    testing::too_large_message_closes_1009(builder).await;
}

#[tokio::test]
async fn too_large_frame_follows_the_policy() {
    testing::too_large_frame_follows_the_policy(builder).await;
}

#[tokio::test]
async fn untrusted_certificate_is_terminal() {
    testing::untrusted_certificate_is_terminal(builder).await;
}

#[tokio::test]
async fn trusted_root_connects() {
    testing::trusted_root_connects(builder).await;
}

#[tokio::test]
async fn largest_frame_arrives() {
    testing::largest_frame_arrives(builder).await;
}

#[tokio::test]
async fn unsent_frames_survive_a_drop() {
    testing::unsent_frames_survive_a_drop(builder).await;
}

#[tokio::test]
async fn close_while_events_go_unread() {
    testing::close_while_events_go_unread(builder).await;
}

#[tokio::test]
async fn calls_across_a_drop() {
    testing::calls_across_a_drop(builder).await;
}

#[tokio::test]
async fn endpoints_rotate_to_a_live_node() {
    testing::endpoints_rotate_to_a_live_node(builder).await;
}

/// Retry-After on a paused clock: the server runs on this runtime, so the
/// clock only jumps when both sides are idle, i.e. to the backoff deadline.
/// The 1 s wait costs no real time, and the gap is exact virtual time.
#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_paused() {
    let mut server = ScriptedPeer::start_local(|n| match n {
        0 => Plan::Reject {
            status: 503,
            retry_after: Some(1),
        },
        _ => Plan::Accept,
    })
    .unwrap();
    let real = std::time::Instant::now();
    testing::retry_after_against(builder, &mut server).await;
    assert!(
        real.elapsed() < Duration::from_millis(900),
        "{:?}",
        real.elapsed()
    );
}

/// Connecting outside a runtime is an error, not a panic.
#[test]
fn connect_outside_a_runtime_fails() {
    let err = builder("ws://127.0.0.1:9/").connect().unwrap_err();
    assert!(matches!(err, redial_tokio::BuildError::Spawn(_)), "{err}");
}

/// A config that fetches tokens, with no provider to fetch them, is refused.
#[tokio::test]
async fn token_config_needs_a_provider() {
    let config = redial_tokio::redial_core::Config::builder()
        .token_provider(true)
        .build()
        .unwrap();
    let err = builder("ws://127.0.0.1:9/")
        .config(config)
        .connect()
        .unwrap_err();
    assert!(matches!(
        err,
        redial_tokio::BuildError::MissingTokenProvider
    ));
}

/// A root certificate that cannot be a trust anchor is refused before
/// anything is dialed.
#[tokio::test]
async fn unusable_root_certificate_is_refused() {
    let junk = redial_tokio::tls::rustls::pki_types::CertificateDer::from(vec![1, 2, 3]);
    let err = builder("wss://127.0.0.1:9/")
        .root_certificates([junk])
        .connect()
        .unwrap_err();
    assert!(
        matches!(err, redial_tokio::BuildError::InvalidRootCertificate(_)),
        "{err}"
    );
}

/// Half-open detection on a paused clock: once the server stops reading,
/// nothing is runnable until the pong deadline, so the clock jumps straight
/// there and detection time is exact virtual time.
#[tokio::test(start_paused = true)]
async fn half_open_is_detected_paused() {
    let server = ScriptedPeer::start_local(|_| Plan::Accept).unwrap();
    testing::half_open_against(builder, &server).await;
}
