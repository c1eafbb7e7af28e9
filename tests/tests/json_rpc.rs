//! JsonRpc against a real Ethereum node (anvil, mining a block a second),
//! on tokio, async-std and smol: subscriptions under a stable key across
//! node restarts, calls across restarts (a repeatable one in flight at the
//! kill answered once, another failing with ConnectionLost and reaching the
//! node at most once), a refused subscription that stays refused, and a
//! deaf or silent link (a fault proxy in front of the node) found by the
//! liveness call.
//!
//! Without anvil (`npm ci` in tests/anvil) the scenarios are ignored,
//! unless `CI` is set: then they fail.

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{fast_config, ms, within, Client, ProxyThread, WAIT};
use futures_util::future::join;
use redial_core::json_rpc::error_code;
use redial_core::protocol::json_rpc::Liveness;
use redial_core::{CallError, CallOptions, Event, JsonRpc, Payload, Text};
use redial_driver::{Builder, Runtime};
use redial_tests::proxy::ProxyHandle;
use redial_tests::third_party::anvil::{AnvilOptions, AnvilServer};
use redial_tests::third_party::started;

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
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
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
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
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

fn block_number() -> Payload {
    JsonRpc::request("eth_blockNumber", "[]").unwrap()
}

/// The reply's hex quantity as a number.
fn quantity(reply: &Payload) -> u64 {
    let text: String = serde_json::from_str(reply.as_text().unwrap()).unwrap();
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap()
}

async fn block_number_calls_are_answered_across_restarts<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
    let c = client(&node, make);
    let repeatable = CallOptions::new().repeatable(true);
    for _ in 0..2 {
        let reply = c.handle.call(block_number(), repeatable).await.unwrap();
        quantity(&reply);
        node.kill();
        // Made while the node is down: it waits for the next connection.
        let waiting = c.handle.call(block_number(), repeatable);
        let (reply, ()) = join(waiting, async { node.restart().unwrap() }).await;
        // A fresh chain: counting from 0 again, a block a second.
        assert!(quantity(&reply.unwrap()) < 5);
    }
    // The node's refusal reaches the caller with its signed code (anvil
    // says -32602 for a method it does not know), and the link stays.
    let refused = c
        .handle
        .call(
            JsonRpc::request("no_such_method", "[]").unwrap(),
            CallOptions::new(),
        )
        .await;
    assert!(
        matches!(&refused, Err(CallError::Rejected { code, .. }) if *code < 0),
        "{refused:?}"
    );
    c.handle.call(block_number(), repeatable).await.unwrap();
    c.close().await;
}

/// A client through a proxy turned deaf, with one call sent into the void;
/// then the node is killed and restarted: the call was in flight at the
/// kill.
async fn in_flight_at_the_kill<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
    request: Payload,
    options: CallOptions,
) -> Option<(
    Result<Payload, CallError>,
    AnvilServer,
    Client<R>,
    ProxyThread,
)> {
    let mut node = started(AnvilServer::start(AnvilOptions::default()));
    let proxy = ProxyThread::start(SocketAddr::from(([127, 0, 0, 1], node.port())));
    let builder = make(format!("ws://{}", proxy.handle.addr()))
        .config(fast_config().build().unwrap())
        .protocol(JsonRpc::new());
    let mut c = Client::connect(builder);
    c.next("connected", common::is_connected).await;
    proxy.handle.deaf(true);
    let call = c.handle.call(request, options);
    let kill = async {
        within(
            &c.rt,
            WAIT,
            "the request written and lost",
            proxy.handle.wait_for(|n| n.deaf_dropped > 0),
        )
        .await;
        proxy.handle.deaf(false);
        node.restart().unwrap();
    };
    let (result, ()) = join(call, kill).await;
    Some((result, node, c, proxy))
}

async fn a_repeatable_call_in_flight_at_the_kill_is_answered_once_after_the_reconnect<
    R: Runtime,
>(
    make: impl Fn(String) -> Builder<R>,
) {
    let options = CallOptions::new().repeatable(true);
    let Some((result, mut node, c, _proxy)) =
        in_flight_at_the_kill(make, block_number(), options).await
    else {
        return;
    };
    quantity(&result.unwrap());
    // Sent once more, on the new node only: the deaf link lost the first.
    assert_eq!(node.await_calls("eth_blockNumber", 1).unwrap(), 1);
    c.close().await;
}

async fn a_plain_call_in_flight_at_the_kill_fails_and_is_never_sent_again<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let mine = JsonRpc::request("evm_mine", "[]").unwrap();
    let Some((result, mut node, c, _proxy)) =
        in_flight_at_the_kill(make, mine, CallOptions::new()).await
    else {
        return;
    };
    assert_eq!(result, Err(CallError::ConnectionLost));
    // A later call goes out after anything the session would have sent
    // again on this connection; once it is answered, `evm_mine` would have
    // been logged before it.
    let repeatable = CallOptions::new().repeatable(true);
    c.handle.call(block_number(), repeatable).await.unwrap();
    assert_eq!(node.await_calls("eth_blockNumber", 1).unwrap(), 1);
    assert_eq!(node.calls("evm_mine"), 0, "{}", node.log());
    c.close().await;
}

/// How often the liveness scenarios call, and how long a reply has.
const EVERY: Duration = ms(1500);
const DEADLINE: Duration = ms(1500);

/// A client with the liveness call through a proxy in front of `node`,
/// with the session's own quiet-link pings off so only the call can tell;
/// subscribed to heads and past the first one.
async fn proxied_client<R: Runtime>(
    node: &AnvilServer,
    make: impl Fn(String) -> Builder<R>,
) -> (Client<R>, ProxyThread) {
    let proxy = ProxyThread::start(SocketAddr::from(([127, 0, 0, 1], node.port())));
    let builder = make(format!("ws://{}", proxy.handle.addr()))
        .config(fast_config().ping_interval(None).build().unwrap())
        .protocol(JsonRpc::new().liveness(Liveness::new("eth_chainId", EVERY, DEADLINE)));
    let mut c = Client::connect(builder);
    c.handle
        .subscribe_with("heads", JsonRpc::subscription(r#"["newHeads"]"#).unwrap())
        .await
        .unwrap();
    c.next("a head", is_head).await;
    (c, proxy)
}

/// Waits for the liveness call to drop the link, within `EVERY + DEADLINE`
/// (and a margin for the machine) of the fault, and for the link to come
/// back once `heal` lifted it.
async fn caught_by_the_liveness_call<R: Runtime>(
    c: &mut Client<R>,
    proxy: &ProxyHandle,
    heal: impl FnOnce(&ProxyHandle),
) {
    let lost = c
        .events
        .next_within(
            &c.rt,
            EVERY + DEADLINE + ms(1000),
            "the liveness call's verdict",
            |e| matches!(e, Event::Disconnected { .. }),
        )
        .await;
    assert!(
        matches!(&lost.event, Event::Disconnected { reason, .. } if reason.contains("eth_chainId")),
        "{:?}",
        lost.event
    );
    heal(proxy);
    c.next(
        "resubscribed on a healthy link",
        |e| matches!(e, Event::Resubscribed { channel } if channel == "heads"),
    )
    .await;
    c.next("heads again", is_head).await;
}

async fn a_deaf_node_is_caught_by_the_liveness_call_while_heads_flow<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let node = started(AnvilServer::start(AnvilOptions::default()));
    let (mut c, proxy) = proxied_client(&node, make).await;
    proxy.handle.deaf(true);
    let mark = c.events.mark();
    c.events
        .next_without(&c.rt, "a head while deaf", is_head, |e| {
            matches!(e, Event::Disconnected { .. })
        })
        .await;
    c.events.rewind(mark);
    caught_by_the_liveness_call(&mut c, &proxy.handle, |p| p.deaf(false)).await;
    c.close().await;
}

async fn a_silent_link_is_caught_by_the_liveness_call<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let node = started(AnvilServer::start(AnvilOptions::default()));
    let (mut c, proxy) = proxied_client(&node, make).await;
    proxy.handle.blackhole(true);
    caught_by_the_liveness_call(&mut c, &proxy.handle, |p| p.blackhole(false)).await;
    c.close().await;
}

on_every_runtime!(
    block_number_calls_are_answered_across_restarts: anvil,
    a_repeatable_call_in_flight_at_the_kill_is_answered_once_after_the_reconnect: anvil,
    a_plain_call_in_flight_at_the_kill_fails_and_is_never_sent_again: anvil,
    a_deaf_node_is_caught_by_the_liveness_call_while_heads_flow: anvil,
    a_silent_link_is_caught_by_the_liveness_call: anvil,
    new_heads_keep_their_key_across_two_node_restarts: anvil,
    a_refused_subscription_fails_once_and_is_never_sent_again: anvil,
);
