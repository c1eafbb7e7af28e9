//! `redial --protocol json-rpc` against anvil (the Ethereum node pinned in
//! tests/anvil): subscriptions printed under their key, the subscribed
//! event with the node's id, a refused one with its signed code, and the
//! resubscription after the node restarts. Skips without anvil unless `CI`
//! is set.
#![allow(clippy::unwrap_used)]

mod common;

use redial_tests::servers::anvil::{AnvilOptions, AnvilServer};
use redial_tests::servers::or_skip;

use common::Run;

#[tokio::test]
async fn json_rpc_prints_keyed_notifications_and_pubsub_events() {
    let Some(mut node) = or_skip(AnvilServer::start(AnvilOptions::default())) else {
        return;
    };
    let mut run = Run::start(&[
        "--protocol",
        "json-rpc",
        "--events",
        "json",
        "--backoff",
        "full-jitter",
        "--backoff-first-ms",
        "50",
        "--backoff-cap-ms",
        "100",
        "--liveness-call",
        "eth_chainId",
        "--liveness-every-ms",
        "500",
        "--subscribe",
        r#"["newHeads"]"#,
        "--subscribe",
        r#"["nonsense"]"#,
        &node.url(),
    ]);
    // The node answers the two in either order.
    let (mut subscribed, mut failed) = (None, None);
    while subscribed.is_none() || failed.is_none() {
        let v = run.event_of(&["subscribed", "subscribe_failed"]).await;
        if v["event"] == "subscribed" {
            subscribed = Some(v);
        } else {
            failed = Some(v);
        }
    }
    let (subscribed, failed) = (subscribed.unwrap(), failed.unwrap());
    assert_eq!(subscribed["channel"], "1");
    assert!(subscribed["server_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("0x")));
    assert_eq!(failed["channel"], "2");
    assert_eq!(failed["code"], -32602);
    let line = run.line().await;
    let (key, head) = line.split_once('\t').unwrap();
    assert_eq!(key, "1");
    let head: serde_json::Value = serde_json::from_str(head).unwrap();
    assert!(head["number"].is_string(), "{line}");

    node.restart().unwrap();
    run.event("resubscribed").await;
    assert!(run.line().await.starts_with("1\t{"));
    run.eof();
    assert_eq!(run.exit().await, 0);
}
