//! JsonRpc against a real Ethereum node (anvil, mining a block a second),
//! on tokio, async-std and smol: subscriptions under a stable key across
//! node restarts, and a refused subscription that stays refused.
//!
//! Without anvil (`npm ci` in tests/anvil) the scenarios skip with a
//! message, unless `CI` is set: then they fail.

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::{fast_config, Client};
use redial_core::json_rpc::error_code;
use redial_core::{Event, JsonRpc, Text};
use redial_driver::{Builder, Runtime};
use redial_tests::servers::anvil::{AnvilOptions, AnvilServer};
use redial_tests::servers::or_skip;

fn is_head(e: &Event) -> bool {
    matches!(e, Event::Message { channel: Some(c), payload, .. }
        if c == "heads" && payload.as_text().is_some_and(|t| t.contains(r#""number":"0x"#)))
}

fn subscribed_id(e: &Event, key: &str) -> Option<Text> {
    match e {
        Event::Subscribed {
            channel,
            server_id: Some(id),
        } if channel == key => Some(id.clone()),
        _ => None,
    }
}

fn client<R: Runtime>(node: &AnvilServer, make: impl Fn(String) -> Builder<R>) -> Client<R> {
    let builder = make(node.url())
        .config(fast_config().build().unwrap())
        .protocol(JsonRpc::new());
    Client::connect(builder)
}

async fn new_heads_keep_their_key_across_two_node_restarts<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let Some(mut node) = or_skip(AnvilServer::start(AnvilOptions::default())) else {
        return;
    };
    let mut c = client(&node, make);
    c.handle
        .subscribe_with("heads", JsonRpc::subscription(r#"["newHeads"]"#).unwrap())
        .await
        .unwrap();
    let first = c
        .next("subscribed", |e| subscribed_id(e, "heads").is_some())
        .await;
    let mut ids = vec![subscribed_id(&first.event, "heads").unwrap()];
    c.next("a head", is_head).await;
    for round in 1..=2 {
        node.restart().unwrap();
        c.disconnected("the node's restart").await;
        let again = c
            .next("subscribed again", |e| subscribed_id(e, "heads").is_some())
            .await;
        ids.push(subscribed_id(&again.event, "heads").unwrap());
        c.next(
            "the missed-data notice right after",
            |e| matches!(e, Event::Resubscribed { channel } if channel == "heads"),
        )
        .await;
        c.next("a head from the new node, under the same key", is_head)
            .await;
        c.events.check(
            ids[round] != ids[round - 1],
            &format!("a new server id after restart {round}: {ids:?}"),
        );
    }
    c.events.check(
        c.events
            .matching(|e| matches!(e, Event::Resubscribed { .. }))
            .len()
            == 2,
        "one notice per resubscription, none for the first",
    );
    c.close().await;
}

async fn a_refused_subscription_fails_once_and_is_never_sent_again<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let Some(mut node) = or_skip(AnvilServer::start(AnvilOptions::default())) else {
        return;
    };
    let mut c = client(&node, make);
    c.handle
        .subscribe_with("heads", JsonRpc::subscription(r#"["newHeads"]"#).unwrap())
        .await
        .unwrap();
    c.handle
        .subscribe_with("bad", JsonRpc::subscription(r#"["nonsense"]"#).unwrap())
        .await
        .unwrap();
    let failed = c
        .next("the refusal", |e| {
            matches!(e, Event::SubscribeFailed { .. })
        })
        .await;
    assert!(
        matches!(&failed.event, Event::SubscribeFailed { channel, code, .. }
            if channel == "bad" && *code == error_code::INVALID_PARAMS),
        "{:?}",
        failed.event
    );
    // The connection stays and the other subscription keeps flowing.
    for _ in 0..2 {
        c.events
            .next_without(&c.rt, "heads after the refusal", is_head, |e| {
                matches!(e, Event::Disconnected { .. })
            })
            .await;
    }
    node.restart().unwrap();
    c.next(
        "resubscribed",
        |e| matches!(e, Event::Resubscribed { channel } if channel == "heads"),
    )
    .await;
    // Sent again, `bad` would be refused again, and its refusal would come
    // right after `heads`' confirmation: before the first head.
    c.next("a head from the new node", is_head).await;
    c.events.check(
        c.events
            .matching(|e| matches!(e, Event::SubscribeFailed { .. }))
            .len()
            == 1,
        "refused once",
    );
    c.close().await;
}

on_every_runtime!(
    new_heads_keep_their_key_across_two_node_restarts,
    a_refused_subscription_fails_once_and_is_never_sent_again,
);
