//! `redial --protocol mqtt` against mosquitto: two clients, one printing
//! the messages of its topic filters (with the topic, since there are
//! two), the other publishing stdin lines at QoS 2; the subscriber keeps
//! its session across a broker SIGTERM restart. Ignored without mosquitto
//! unless `CI` is set.
#![allow(clippy::unwrap_used)]

mod common;

use redial_tests::third_party::mosquitto::{Mosquitto, MosquittoOptions};
use redial_tests::third_party::started;

use common::Run;

fn args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--protocol",
        "mqtt",
        "--events",
        "json",
        "--backoff",
        "full-jitter",
        "--backoff-first-ms",
        "50",
        "--backoff-cap-ms",
        "100",
    ];
    v.extend_from_slice(extra);
    v.push(url);
    v
}

#[tokio::test]
#[cfg_attr(
    not(redial_has_mosquitto),
    ignore = "needs mosquitto: apt-get install mosquitto"
)]
async fn mqtt_subscribes_publishes_and_keeps_its_session_across_a_restart() {
    let mut broker = started(Mosquitto::start(MosquittoOptions::default()));
    let url = broker.ws_url();
    let mut sub = Run::start(&args(
        &url,
        &[
            "--client-id",
            "cli-sub",
            "--keep-open",
            "--subscribe",
            "s/+/temp:2",
            "--subscribe",
            "other/#",
        ],
    ));
    for _ in 0..2 {
        sub.event("subscribed").await;
    }
    let mut publ = Run::start(&args(
        &url,
        &[
            "--client-id",
            "cli-pub",
            "--qos",
            "2",
            "--channel",
            "s/kitchen/temp",
        ],
    ));
    publ.event("connected").await;
    publ.write("21.5").await;
    assert_eq!(sub.line().await, "s/kitchen/temp\t21.5");

    broker.restart_graceful().unwrap();
    let back = sub.event("connected").await;
    assert_eq!(back["resumed"], true, "session present: {back}");
    publ.event("connected").await;
    publ.write("22.0").await;
    assert_eq!(sub.line().await, "s/kitchen/temp\t22.0");
    publ.eof();
    assert_eq!(publ.exit().await, 0);
}
