//! `redial --protocol json-rpc` against anvil (the Ethereum node pinned in
//! tests/anvil): subscriptions printed under their key, the subscribed
//! event with the node's id, a refused one with its signed code, stdin
//! calls answered as JSON lines, and the resubscription after the node
//! restarts. Ignored without anvil unless `CI` is set.
#![allow(clippy::unwrap_used)]

mod common;

use redial_tests::third_party::anvil::{AnvilOptions, AnvilServer};
use redial_tests::third_party::started;

use common::Run;

#[tokio::test]
#[cfg_attr(
    not(redial_has_anvil),
    ignore = "needs tests/anvil/node_modules: apt-get install nodejs npm; cd tests/anvil; npm ci"
)]
async fn json_rpc_prints_keyed_notifications_and_pubsub_events() {
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
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

    // Calls from stdin, each answered as one JSON line (heads may come
    // in between).
    run.write("eth_chainId").await;
    run.write("eth_getBalance [\"0x0000000000000000000000000000000000000000\", \"latest\"]")
        .await;
    run.write("no_such_method []").await;
    let mut replies = Vec::new();
    while replies.len() < 3 {
        let line = run.line().await;
        if !line.starts_with("1\t") {
            replies.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
        }
    }
    assert_eq!(replies[0]["line"], 1);
    assert_eq!(replies[0]["result"], "0x7a69", "anvil's chain id 31337");
    assert!(replies[1]["result"].is_string());
    assert!(replies[2]["error"]["code"].as_i64().is_some_and(|c| c < 0));

    node.restart().unwrap();
    run.event("resubscribed").await;
    assert!(run.line().await.starts_with("1\t{"));
    run.eof();
    assert_eq!(run.exit().await, 0);
}
