//! The `Store` contract (server/src/store.rs), checked on every store: one
//! body per property, run on `MemoryStore`, on `RedisStore` against a
//! real `redis-server` started on 127.0.0.1 for the test, and on
//! `RedisStore` against a Redis Cluster of three masters and three replicas
//! (the setups are in `backend/`, which builds every Redis store). Each cluster has two
//! nodes: for Redis two stores sharing a key prefix (what two server
//! processes would hold), for memory the same store twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redial_core::payload::Payload;
use redial_server::memory::MemoryStore;
use redial_server::redis::RedisStore;
use redial_server::store::{
    CreateRefused, Notice, Notices, Owner, PublishOutcome, SessionState, Store, StoreError,
    StoredMessage,
};
use redial_tests::third_party::redis::RedisServer;
use redial_tests::third_party::started;

mod backend;
use backend::Backend;

/// How long a notice may take to arrive through Redis pub/sub before the
/// test fails (it normally takes well under a millisecond).
const NOTICE_DEADLINE: Duration = Duration::from_secs(10);

/// Two nodes of one logical store.
struct Cluster {
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    /// The servers, when the test gave them away: stopped when it ends.
    _backend: Option<Backend>,
}

/// A unique key prefix, so stores of different clusters never meet.
fn prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "conf{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn redis_node(backend: &Backend, prefix: &str, backlog: usize) -> RedisStore {
    backend
        .redis_builder()
        .prefix(prefix)
        .backlog(backlog)
        .channel_cap(1_000)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("redis store: {e}"))
}

/// Two nodes on `backend`, which the cluster keeps until the test ends.
async fn nodes(backend: Backend, backlog: usize) -> Cluster {
    let cluster = nodes_on(&backend, backlog).await;
    Cluster {
        _backend: Some(backend),
        ..cluster
    }
}

/// Two nodes on `backend`, left running by the caller: for Redis two
/// stores sharing a fresh key prefix (what two server processes would
/// hold), so several clusters can share one Redis; for memory one store
/// twice.
async fn nodes_on(backend: &Backend, backlog: usize) -> Cluster {
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = match backend {
        Backend::Memory => {
            let store = Arc::new(
                MemoryStore::builder()
                    .backlog(backlog)
                    .build()
                    .unwrap_or_else(|e| panic!("memory store: {e}")),
            );
            (Arc::clone(&store) as Arc<dyn Store>, store)
        }
        Backend::Redis(_) | Backend::Cluster(_) => {
            let prefix = prefix();
            let a = redis_node(backend, &prefix, backlog).await;
            let b = redis_node(backend, &prefix, backlog).await;
            (Arc::new(a), Arc::new(b))
        }
    };
    Cluster {
        a,
        b,
        _backend: None,
    }
}

fn text(s: &str) -> Payload {
    Payload::text(s)
}

async fn create(store: &dyn Store, name: &str) -> SessionState {
    match store.create(name, 0).await {
        Ok(Ok(state)) => state,
        other => panic!("create {name}: {other:?}"),
    }
}

async fn resume(store: &dyn Store, state: &SessionState, now_ms: u64) -> Option<SessionState> {
    store
        .resume(&state.owner.session, 60_000, now_ms)
        .await
        .unwrap_or_else(|e| panic!("resume: {e}"))
}

async fn fetch(store: &dyn Store, owner: &Owner, after: u64) -> Vec<StoredMessage> {
    store
        .fetch(owner, after, 10_000)
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}"))
}

fn offsets(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

fn described(messages: &[StoredMessage]) -> Vec<(u64, Option<&str>, &str)> {
    messages
        .iter()
        .map(|m| {
            (
                m.offset,
                m.channel.as_deref(),
                m.payload.as_text().unwrap_or("<binary>"),
            )
        })
        .collect()
}

async fn ok<T>(f: impl std::future::Future<Output = Result<T, StoreError>>) -> T {
    f.await.unwrap_or_else(|e| panic!("store call failed: {e}"))
}

/// Waits for a notice matching `want`, skipping others.
async fn expect_notice(notices: &mut Notices, want: impl Fn(&Notice) -> bool) -> Notice {
    let wait = async {
        while let Some(n) = notices.next().await {
            if want(&n) {
                return n;
            }
        }
        panic!("the notice stream ended");
    };
    tokio::time::timeout(NOTICE_DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("no matching notice within {NOTICE_DEADLINE:?}"))
}

// ---- the properties -------------------------------------------------------

async fn names(c: Cluster) {
    let first = create(&*c.a, "alpha").await;
    assert_eq!(first.name, "alpha");
    assert_eq!(first.owner.epoch, 1);
    assert_eq!(
        c.b.create("alpha", 0).await.ok(),
        Some(Err(CreateRefused::NameTaken)),
        "a connected session keeps its name on every node"
    );
    ok(c.a.detach(&first.owner, 100)).await;
    let second = create(&*c.b, "alpha").await;
    assert_ne!(second.owner.session, first.owner.session);
    assert_eq!(
        resume(&*c.a, &first, 200).await,
        None,
        "the session that gave its name up has ended"
    );
    // Ending frees the name at once.
    ok(c.b.end(&second.owner)).await;
    create(&*c.a, "alpha").await;
}

async fn fencing(c: Cluster) {
    let mut notices = c.a.notices();
    let old = create(&*c.a, "alpha").await;
    ok(c.a.subscribe(&old.owner, "x")).await;
    let new = resume(&*c.b, &old, 10)
        .await
        .unwrap_or_else(|| panic!("resume"));
    assert_eq!(new.owner.epoch, old.owner.epoch + 1);
    assert_eq!(new.subscriptions, ["x"]);
    let seen = expect_notice(&mut notices, |n| matches!(n, Notice::TakenOver(_))).await;
    assert_eq!(seen, Notice::TakenOver(new.owner.clone()));

    let o = &old.owner;
    let fenced = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Fenced(_)));
    assert!(fenced(
        c.a.publish(o, 1, Some("x"), &text("m")).await.map(drop)
    ));
    assert!(fenced(c.a.subscribe(o, "y").await));
    assert!(fenced(c.a.unsubscribe(o, "x").await));
    assert!(fenced(c.a.fetch(o, 0, 10).await.map(drop)));
    assert!(fenced(c.a.received(o, 1).await));
    assert!(fenced(c.a.end(o).await));
    // The old holder's detach does nothing: the session stays connected.
    ok(c.a.detach(o, 20)).await;
    assert_eq!(
        c.a.create("alpha", 30).await.ok(),
        Some(Err(CreateRefused::NameTaken))
    );
    // Nothing the fenced holder tried was stored.
    let state = resume(&*c.a, &new, 40)
        .await
        .unwrap_or_else(|| panic!("resume"));
    assert_eq!(state.last_client_seq, 0);
    assert_eq!(state.subscriptions, ["x"]);
    assert!(matches!(
        c.a.fetch(&new.owner, 0, 1).await,
        Err(StoreError::Fenced(_))
    ));
    // An ended session is unknown.
    ok(c.b.end(&state.owner)).await;
    assert!(matches!(
        c.b.fetch(&state.owner, 0, 1).await,
        Err(StoreError::UnknownSession(_))
    ));
}

async fn dedupe(c: Cluster) {
    let s = create(&*c.a, "alpha").await;
    ok(c.a.subscribe(&s.owner, "x")).await;
    use PublishOutcome::{Applied, Duplicate};
    let mut outcomes = Vec::new();
    for (node, seq) in [(0, 1), (1, 1), (0, 3), (1, 2), (1, 3), (0, 4)] {
        let store = if node == 0 { &c.a } else { &c.b };
        let m = text(&format!("seq{seq}"));
        outcomes.push(ok(store.publish(&s.owner, seq, Some("x"), &m)).await);
    }
    assert_eq!(
        outcomes,
        [Applied, Duplicate, Applied, Duplicate, Duplicate, Applied]
    );
    // Without a channel only H moves.
    assert_eq!(
        ok(c.b.publish(&s.owner, 5, None, &text("app"))).await,
        Applied
    );
    assert_eq!(
        ok(c.b.publish(&s.owner, 5, None, &text("app"))).await,
        Duplicate
    );
    let got = fetch(&*c.b, &s.owner, 0).await;
    assert_eq!(
        described(&got),
        [
            (1, Some("x"), "seq1"),
            (2, Some("x"), "seq3"),
            (3, Some("x"), "seq4")
        ]
    );
    let state = resume(&*c.a, &s, 0)
        .await
        .unwrap_or_else(|| panic!("resume"));
    assert_eq!((state.last_client_seq, state.last_offset), (5, 3));
    // Seqs beyond what a float holds exactly still compare exactly.
    let big = u64::MAX - 1;
    assert_eq!(
        ok(c.a.publish(&state.owner, big, None, &text("b"))).await,
        Applied
    );
    assert_eq!(
        ok(c.a.publish(&state.owner, big - 1, None, &text("b"))).await,
        Duplicate
    );
    assert_eq!(
        ok(c.a.publish(&state.owner, big + 1, None, &text("b"))).await,
        Applied
    );
}

async fn offsets_in_order(c: Cluster) {
    let a = create(&*c.a, "alpha").await;
    let b = create(&*c.b, "beta").await;
    ok(c.a.subscribe(&a.owner, "x")).await;
    ok(c.a.subscribe(&a.owner, "y")).await;
    ok(c.b.subscribe(&b.owner, "y")).await;
    ok(c.b.broadcast("x", &text("x1"))).await;
    ok(c.a.publish(&b.owner, 1, Some("y"), &text("y1"))).await;
    assert!(ok(c.b.send_to("alpha", &text("direct"))).await);
    assert!(!ok(c.b.send_to("nobody", &text("lost"))).await);
    ok(c.a.broadcast("x", &text("x2"))).await;
    ok(c.b.broadcast("y", &Payload::binary(vec![0u8, 255]))).await;
    let got = fetch(&*c.a, &a.owner, 0).await;
    assert_eq!(
        described(&got),
        [
            (1, Some("x"), "x1"),
            (2, Some("y"), "y1"),
            (3, None, "direct"),
            (4, Some("x"), "x2"),
            (5, Some("y"), "<binary>"),
        ]
    );
    assert_eq!(got[4].payload, Payload::binary(vec![0u8, 255]));
    // Offsets are per session.
    assert_eq!(offsets(&fetch(&*c.b, &b.owner, 0).await), [1, 2]);
    // A window, and the same numbering when fetched again from another node.
    let window = ok(c.b.fetch(&a.owner, 1, 2)).await;
    assert_eq!(described(&window), described(&got[1..3]));
    // Subscribing twice is harmless; unsubscribed channels stop.
    ok(c.a.subscribe(&a.owner, "x")).await;
    ok(c.a.unsubscribe(&a.owner, "y")).await;
    ok(c.a.unsubscribe(&a.owner, "never")).await;
    ok(c.b.broadcast("y", &text("y2"))).await;
    ok(c.b.broadcast("x", &text("x3"))).await;
    let later = fetch(&*c.a, &a.owner, 5).await;
    assert_eq!(described(&later), [(6, Some("x"), "x3")]);
}

async fn subscribe_starts_now(c: Cluster) {
    let a = create(&*c.a, "alpha").await;
    ok(c.a.broadcast("x", &text("before"))).await;
    ok(c.b.subscribe(&a.owner, "x")).await;
    ok(c.a.broadcast("x", &text("after"))).await;
    let got = fetch(&*c.a, &a.owner, 0).await;
    assert_eq!(described(&got), [(1, Some("x"), "after")]);
}

async fn replay_after_resume(c: Cluster) {
    let s = create(&*c.a, "alpha").await;
    ok(c.a.subscribe(&s.owner, "y")).await;
    ok(c.a.subscribe(&s.owner, "x")).await;
    ok(c.a.broadcast("x", &text("1"))).await;
    assert_eq!(offsets(&fetch(&*c.a, &s.owner, 0).await), [1]);
    ok(c.a.detach(&s.owner, 1_000)).await;
    // While nobody holds it, messages keep arriving for it.
    ok(c.b.broadcast("y", &text("2"))).await;
    assert!(ok(c.b.send_to("alpha", &text("3"))).await);
    ok(c.b.broadcast("x", &text("4"))).await;
    // Another node resumes it and replays from the client's offset.
    let state = resume(&*c.b, &s, 2_000)
        .await
        .unwrap_or_else(|| panic!("resume"));
    assert_eq!(state.name, "alpha");
    assert_eq!(state.subscriptions, ["x", "y"]);
    let replay = fetch(&*c.b, &state.owner, 1).await;
    assert_eq!(
        described(&replay),
        [(2, Some("y"), "2"), (3, None, "3"), (4, Some("x"), "4")]
    );
    // The client had only delivered offset 0: everything not RECEIVED.
    assert_eq!(offsets(&fetch(&*c.b, &state.owner, 0).await), [1, 2, 3, 4]);
}

async fn gaps_are_counted(c: Cluster) {
    // Built with a backlog of 3.
    let s = create(&*c.a, "alpha").await;
    ok(c.a.subscribe(&s.owner, "x")).await;
    for i in 1..=5 {
        ok(c.b.broadcast("x", &text(&format!("m{i}")))).await;
    }
    let got = fetch(&*c.a, &s.owner, 0).await;
    assert_eq!(
        described(&got),
        [
            (3, Some("x"), "m3"),
            (4, Some("x"), "m4"),
            (5, Some("x"), "m5")
        ]
    );
    // Direct messages are bounded the same way.
    for i in 6..=10 {
        assert!(ok(c.b.send_to("alpha", &text(&format!("d{i}")))).await);
    }
    let got = fetch(&*c.a, &s.owner, 5).await;
    assert_eq!(
        described(&got),
        [(8, None, "d8"), (9, None, "d9"), (10, None, "d10")]
    );
}

async fn received_trims(c: Cluster) {
    let s = create(&*c.a, "alpha").await;
    ok(c.a.subscribe(&s.owner, "x")).await;
    for _ in 0..4 {
        ok(c.b.broadcast("x", &text("m"))).await;
    }
    assert_eq!(offsets(&fetch(&*c.a, &s.owner, 0).await), [1, 2, 3, 4]);
    ok(c.a.received(&s.owner, 2)).await;
    ok(c.b.received(&s.owner, 1)).await;
    assert_eq!(offsets(&fetch(&*c.b, &s.owner, 0).await), [3, 4]);
    // A value above anything numbered is clamped: later messages survive.
    ok(c.a.received(&s.owner, 1_000)).await;
    ok(c.b.broadcast("x", &text("m"))).await;
    assert_eq!(offsets(&fetch(&*c.a, &s.owner, 0).await), [5]);
}

async fn send_to_reaches_connected_and_waiting_sessions(c: Cluster) {
    let s = create(&*c.a, "alpha").await;
    assert!(ok(c.b.send_to("alpha", &text("one"))).await);
    ok(c.a.detach(&s.owner, 10)).await;
    assert!(ok(c.b.send_to("alpha", &text("two"))).await);
    let state = resume(&*c.b, &s, 20)
        .await
        .unwrap_or_else(|| panic!("resume"));
    let got = fetch(&*c.b, &state.owner, 0).await;
    assert_eq!(described(&got), [(1, None, "one"), (2, None, "two")]);
    ok(c.b.end(&state.owner)).await;
    assert!(!ok(c.a.send_to("alpha", &text("three"))).await);
}

async fn notices_reach_every_node(c: Cluster) {
    let mut on_a = c.a.notices();
    let mut on_b = c.b.notices();
    let s = create(&*c.a, "alpha").await;
    ok(c.a.publish(&s.owner, 1, Some("x"), &text("m"))).await;
    for n in [&mut on_a, &mut on_b] {
        let got = expect_notice(n, |n| matches!(n, Notice::Channel(_))).await;
        assert_eq!(got, Notice::Channel("x".into()));
    }
    assert!(ok(c.b.send_to("alpha", &text("d"))).await);
    ok(c.b.broadcast("z", &text("b"))).await;
    for n in [&mut on_a, &mut on_b] {
        let got = expect_notice(n, |n| matches!(n, Notice::Session(_))).await;
        assert_eq!(got, Notice::Session(s.owner.session.clone()));
        let got = expect_notice(n, |n| matches!(n, Notice::Channel(_))).await;
        assert_eq!(got, Notice::Channel("z".into()));
    }
}

async fn expiry(c: Cluster) {
    let s = create(&*c.a, "alpha").await;
    ok(c.a.detach(&s.owner, 1_000)).await;
    let lifetime = 500;
    let again =
        c.b.resume(&s.owner.session, lifetime, 1_499)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("expired early"));
    ok(c.b.detach(&again.owner, 2_000)).await;
    assert_eq!(
        c.a.resume(&s.owner.session, lifetime, 2_500).await.ok(),
        Some(None)
    );
    // Once ended it stays ended, however long the lifetime asked for.
    assert_eq!(
        c.a.resume(&s.owner.session, u64::MAX, 2_501).await.ok(),
        Some(None)
    );
    // A lifetime of 0 never resumes a detached session; a connected one
    // can always be taken over.
    let t = create(&*c.a, "beta").await;
    assert!(c
        .a
        .resume(&t.owner.session, 0, 0)
        .await
        .ok()
        .flatten()
        .is_some());
    let u = create(&*c.a, "gamma").await;
    ok(c.a.detach(&u.owner, 7)).await;
    assert_eq!(c.b.resume(&u.owner.session, 0, 7).await.ok(), Some(None));
}

/// Many sessions fetching at once (on Redis, in one batched call) each get
/// their own offsets and every message once; a fenced owner among them
/// fails alone.
async fn concurrent_fetches_stay_apart(c: Cluster) {
    let mut owners = Vec::new();
    for i in 0..40 {
        let s = create(&*c.a, &format!("s{i}")).await;
        ok(c.a.subscribe(&s.owner, "x")).await;
        if i % 2 == 0 {
            ok(c.a.subscribe(&s.owner, "y")).await;
        }
        owners.push(s.owner);
    }
    // One session read once already, so its cursor differs from the rest.
    ok(c.b.broadcast("x", &text("x1"))).await;
    assert_eq!(offsets(&fetch(&*c.a, &owners[3], 0).await), [1]);
    ok(c.b.broadcast("y", &text("y1"))).await;
    ok(c.b.broadcast("x", &text("x2"))).await;
    let mut stale = owners[5].clone();
    stale.epoch += 1;
    let calls = owners.iter().enumerate().map(|(i, o)| {
        let owner = if i == 5 { &stale } else { o };
        c.a.fetch(owner, 0, 100)
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, got) in results.into_iter().enumerate() {
        if i == 5 {
            assert!(matches!(got, Err(StoreError::Fenced(_))), "{got:?}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("session {i}: {e}"));
        let want: Vec<(u64, Option<&str>, &str)> = if i % 2 == 0 {
            vec![
                (1, Some("x"), "x1"),
                (2, Some("y"), "y1"),
                (3, Some("x"), "x2"),
            ]
        } else {
            vec![(1, Some("x"), "x1"), (2, Some("x"), "x2")]
        };
        assert_eq!(described(&got), want, "session {i}");
    }
}

/// One test per property and store: memory, and Redis on a fresh
/// `redis-server` each; on a Redis Cluster, which takes seconds to form,
/// one test that starts one and runs every property on it in turn, each on
/// its own prefix, then the interleavings model.
macro_rules! on_every_store {
    ($($name:ident($backlog:expr);)*) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::nodes(super::Backend::Memory, $backlog).await).await;
                }
            )*
        }
        mod redis {
            $(
                redial_tests::needs! { redis;
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::$name(super::nodes(super::Backend::redis(), $backlog).await).await;
                    }
                }
            )*
        }
        mod redis_cluster {
            redial_tests::needs! { redis_cluster;
                #[test]
                fn every_property() {
                    let backend = super::Backend::cluster();
                    super::interleavings::runtime().block_on(async {
                        $(
                            super::$name(super::nodes_on(&backend, $backlog).await).await;
                        )*
                    });
                    super::interleavings::model_on(&backend);
                }
            }
        }
    };
}

on_every_store! {
    names(1024);
    fencing(1024);
    dedupe(1024);
    offsets_in_order(1024);
    subscribe_starts_now(1024);
    replay_after_resume(1024);
    gaps_are_counted(3);
    received_trims(1024);
    send_to_reaches_connected_and_waiting_sessions(1024);
    notices_reach_every_node(1024);
    expiry(1024);
    concurrent_fetches_stay_apart(1024);
}

// ---- Redis only ------------------------------------------------------------

/// A session away while its channel's log was trimmed resumes with a gap
/// of exactly the trimmed size, and the store counts it.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trimmed_channel_log_gives_an_exact_gap() {
    let backend = Backend::redis();
    let store = backend
        .redis_builder()
        .prefix(prefix())
        .channel_cap(10)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("redis store: {e}"));
    let s = create(&store, "alpha").await;
    ok(store.subscribe(&s.owner, "x")).await;
    // Redis trims whole blocks of 100 entries, so publish well past them.
    let total = 450;
    for i in 1..=total {
        ok(store.broadcast("x", &text(&format!("m{i}")))).await;
    }
    let got = fetch(&store, &s.owner, 0).await;
    let first = got.first().map_or(0, |m| m.offset);
    assert!(first > 1, "nothing was trimmed; the test proves nothing");
    // Offsets run on without holes from the first kept one to `total`, and
    // the first kept one is the message with that number: the gap is exact.
    assert_eq!(offsets(&got), (first..=total).collect::<Vec<_>>());
    assert_eq!(got[0].payload.as_text(), Some(format!("m{first}").as_str()));
    assert_eq!(ok(store.dropped()).await, first - 1);
}

/// When the notice link drops and comes back, listeners are told they may
/// have missed notices.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_notice_link_gives_lagged() {
    let backend = Backend::redis();
    let store = redis_node(&backend, &prefix(), 16).await;
    let mut notices = store.notices();
    let killed: u64 = backend
        .query(::redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
        .unwrap_or_else(|e| panic!("CLIENT KILL: {e}"));
    assert_eq!(killed, 1);
    expect_notice(&mut notices, |n| *n == Notice::Lagged).await;
    // And notices flow again on the new link.
    ok(store.broadcast("x", &text("m"))).await;
    expect_notice(&mut notices, |n| *n == Notice::Channel("x".into())).await;
}

// ---- random interleavings from two nodes -----------------------------------

mod interleavings {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    const SESSIONS: usize = 2;
    const CHANNELS: [&str; 3] = ["a", "b", "c"];

    #[derive(Debug, Clone)]
    enum Op {
        /// A PUBLISH with the next seq, or (`again`) the last applied one.
        Publish {
            node: bool,
            session: usize,
            channel: usize,
            again: bool,
        },
        Broadcast {
            node: bool,
            channel: usize,
        },
        Subscribe {
            node: bool,
            session: usize,
            channel: usize,
        },
        Fetch {
            node: bool,
            session: usize,
            max: usize,
        },
        Received {
            node: bool,
            session: usize,
        },
        /// A new connection on `node` takes the session over.
        Resume {
            node: bool,
            session: usize,
        },
        /// The previous holder, now fenced, tries to publish and fetch.
        Stale {
            node: bool,
            session: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let n = any::<bool>();
        let s = 0..SESSIONS;
        let c = 0..CHANNELS.len();
        prop_oneof![
            4 => (n, s.clone(), c.clone(), proptest::bool::weighted(0.25)).prop_map(
                |(node, session, channel, again)| Op::Publish { node, session, channel, again }
            ),
            2 => (n, c.clone()).prop_map(|(node, channel)| Op::Broadcast { node, channel }),
            2 => (n, s.clone(), c).prop_map(|(node, session, channel)| Op::Subscribe {
                node,
                session,
                channel
            }),
            3 => (n, s.clone(), 1..6usize).prop_map(|(node, session, max)| Op::Fetch {
                node,
                session,
                max
            }),
            1 => (n, s.clone()).prop_map(|(node, session)| Op::Received { node, session }),
            1 => (n, s.clone()).prop_map(|(node, session)| Op::Resume { node, session }),
            1 => (n, s).prop_map(|(node, session)| Op::Stale { node, session }),
        ]
    }

    /// What the model knows of one session.
    struct Model {
        owner: Owner,
        stale: Option<Owner>,
        /// `H`, and the next fresh seq.
        applied_seq: u64,
        subscribed: BTreeSet<usize>,
        /// The highest offset the "client" delivered.
        delivered: u64,
        /// offset -> payload id, for every message ever delivered.
        by_offset: BTreeMap<u64, u64>,
        /// Payload ids delivered, to catch duplicates.
        seen: BTreeSet<u64>,
        /// The last payload id delivered per channel, for the order.
        last_on: HashMap<usize, u64>,
        /// Payload ids this session must get exactly once.
        owed: BTreeSet<u64>,
    }

    /// Delivers a fetched batch to the model, checking every invariant.
    fn deliver(m: &mut Model, got: &[StoredMessage], channel_of: &HashMap<u64, usize>) {
        for msg in got {
            assert!(
                msg.offset > m.delivered,
                "offset {} not above {}",
                msg.offset,
                m.delivered
            );
            // The backlog is never full here, so offsets have no holes.
            assert_eq!(msg.offset, m.delivered + 1, "unexpected gap");
            let id: u64 = msg
                .payload
                .as_text()
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("foreign payload"));
            if let Some(before) = m.by_offset.insert(msg.offset, id) {
                assert_eq!(before, id, "offset {} given two messages", msg.offset);
            }
            assert!(m.seen.insert(id), "message {id} delivered twice");
            assert!(
                m.owed.contains(&id),
                "message {id} was not for this session"
            );
            let channel = channel_of[&id];
            assert_eq!(msg.channel.as_deref(), Some(CHANNELS[channel]));
            if let Some(prev) = m.last_on.insert(channel, id) {
                assert!(
                    prev < id,
                    "channel {channel} out of order: {prev} then {id}"
                );
            }
            m.delivered = msg.offset;
        }
    }

    async fn run(c: Cluster, ops: Vec<Op>) {
        let node = |n: bool| if n { &c.b } else { &c.a };
        let mut models = Vec::new();
        for i in 0..SESSIONS {
            let s = create(&*c.a, &format!("s{i}")).await;
            models.push(Model {
                owner: s.owner,
                stale: None,
                applied_seq: 0,
                subscribed: BTreeSet::new(),
                delivered: 0,
                by_offset: BTreeMap::new(),
                seen: BTreeSet::new(),
                last_on: HashMap::new(),
                owed: BTreeSet::new(),
            });
        }
        let mut next_id = 0u64;
        let mut channel_of = HashMap::new();
        for op in ops {
            match op {
                Op::Publish {
                    node: n,
                    session,
                    channel,
                    again,
                } => {
                    let m = &mut models[session];
                    let (seq, want) = if again && m.applied_seq > 0 {
                        (m.applied_seq, PublishOutcome::Duplicate)
                    } else {
                        (m.applied_seq + 1, PublishOutcome::Applied)
                    };
                    next_id += 1;
                    let payload = text(&next_id.to_string());
                    let owner = m.owner.clone();
                    let got =
                        ok(node(n).publish(&owner, seq, Some(CHANNELS[channel]), &payload)).await;
                    assert_eq!(got, want);
                    if got == PublishOutcome::Applied {
                        models[session].applied_seq = seq;
                        channel_of.insert(next_id, channel);
                        for m in models
                            .iter_mut()
                            .filter(|m| m.subscribed.contains(&channel))
                        {
                            m.owed.insert(next_id);
                        }
                    }
                }
                Op::Broadcast { node: n, channel } => {
                    next_id += 1;
                    ok(node(n).broadcast(CHANNELS[channel], &text(&next_id.to_string()))).await;
                    channel_of.insert(next_id, channel);
                    for m in models
                        .iter_mut()
                        .filter(|m| m.subscribed.contains(&channel))
                    {
                        m.owed.insert(next_id);
                    }
                }
                Op::Subscribe {
                    node: n,
                    session,
                    channel,
                } => {
                    let m = &mut models[session];
                    ok(node(n).subscribe(&m.owner, CHANNELS[channel])).await;
                    m.subscribed.insert(channel);
                }
                Op::Fetch {
                    node: n,
                    session,
                    max,
                } => {
                    let m = &mut models[session];
                    let got = ok(node(n).fetch(&m.owner, m.delivered, max)).await;
                    assert!(got.len() <= max);
                    deliver(m, &got, &channel_of);
                }
                Op::Received { node: n, session } => {
                    let m = &models[session];
                    ok(node(n).received(&m.owner, m.delivered)).await;
                }
                Op::Resume { node: n, session } => {
                    let m = &mut models[session];
                    let state = node(n)
                        .resume(&m.owner.session, 60_000, 0)
                        .await
                        .unwrap_or_else(|e| panic!("resume: {e}"))
                        .unwrap_or_else(|| panic!("session ended"));
                    assert_eq!(state.owner.epoch, m.owner.epoch + 1);
                    assert_eq!(state.last_client_seq, m.applied_seq);
                    let kept: BTreeSet<usize> = state
                        .subscriptions
                        .iter()
                        .filter_map(|s| CHANNELS.iter().position(|c| c == s))
                        .collect();
                    assert_eq!(kept, m.subscribed);
                    assert!(state.last_offset >= m.delivered);
                    m.stale = Some(std::mem::replace(&mut m.owner, state.owner));
                }
                Op::Stale { node: n, session } => {
                    let m = &models[session];
                    if let Some(stale) = &m.stale {
                        let p = text("stale");
                        let publish = node(n).publish(stale, u64::MAX, Some("a"), &p).await;
                        assert!(matches!(publish, Err(StoreError::Fenced(_))));
                        let fetch = node(n).fetch(stale, 0, 10).await;
                        assert!(matches!(fetch, Err(StoreError::Fenced(_))));
                    }
                }
            }
        }
        // Everything owed arrives, each exactly once.
        for (i, m) in models.iter_mut().enumerate() {
            let got = ok(node(i % 2 == 1).fetch(&m.owner, m.delivered, 100_000)).await;
            deliver(m, &got, &channel_of);
            let missing: Vec<_> = m.owed.difference(&m.seen).collect();
            assert!(missing.is_empty(), "session {i} lost {missing:?}");
        }
    }

    pub(super) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn memory_store(ops in proptest::collection::vec(op(), 1..60)) {
            runtime().block_on(async { run(nodes(Backend::Memory, 1024).await, ops).await });
        }
    }

    #[cfg_attr(
        not(redial_has_redis),
        ignore = "needs redis-server: apt-get install redis-server"
    )]
    #[test]
    fn redis_store() {
        model_on(&Backend::redis());
    }

    /// The model on a Redis backend: 48 cases, each on its own prefix.
    pub(super) fn model_on(backend: &Backend) {
        let rt = runtime();
        let config = ProptestConfig::with_cases(48);
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(&proptest::collection::vec(op(), 1..60), |ops| {
            rt.block_on(async { run(nodes_on(backend, 1024).await, ops).await });
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// A node that dies holds nothing: once its heartbeat lapses, the names of
/// the sessions it held can be taken, and any node can resume them.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_dead_nodes_sessions_give_their_names_up() {
    let server = started(RedisServer::start());
    let prefix = prefix();
    let node = |ttl_ms: u64| {
        RedisStore::builder(server.url())
            .prefix(prefix.clone())
            .node_ttl(Duration::from_millis(ttl_ms))
            .connect()
    };
    let doomed = node(300).await.unwrap_or_else(|e| panic!("{e}"));
    let survivor = node(15_000).await.unwrap_or_else(|e| panic!("{e}"));
    let kept = create(&doomed, "kept").await;
    create(&doomed, "named").await;
    assert_eq!(
        survivor.create("named", 0).await.ok(),
        Some(Err(CreateRefused::NameTaken))
    );
    // A crash: the node's tasks stop, nothing is detached.
    drop(doomed);
    // Time passing is the condition here: the heartbeat must lapse.
    let freed = async {
        loop {
            match survivor.create("named", 0).await {
                Ok(Ok(state)) => return state,
                Ok(Err(CreateRefused::NameTaken)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("create: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), freed)
        .await
        .unwrap_or_else(|_| panic!("the dead node's name was never freed"));
    let resumed = resume(&survivor, &kept, 0).await;
    assert_eq!(resumed.map(|s| s.owner.epoch), Some(2));
}

/// A connected session outlives the detached TTL (its node renews it); a
/// detached one is gone from Redis once the TTL has passed.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_session_keys_live_while_held_and_expire_when_detached() {
    let server = started(RedisServer::start());
    let store = RedisStore::builder(server.url())
        .prefix(prefix())
        .detached_ttl(Duration::from_millis(400))
        .node_ttl(Duration::from_millis(90))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let held = create(&store, "held").await;
    let left = create(&store, "left").await;
    ok(store.subscribe(&held.owner, "x")).await;
    ok(store.detach(&left.owner, 0)).await;
    // Time passing is the condition: several detached TTLs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let state = resume(&store, &held, 0).await;
    assert_eq!(state.map(|s| s.subscriptions), Some(vec!["x".to_owned()]));
    // Given any lifetime, the detached session is gone.
    assert_eq!(
        store.resume(&left.owner.session, u64::MAX, 0).await.ok(),
        Some(None)
    );
}

/// With Redis gone, calls fail with `Unavailable` (the caller closes the
/// connection with `internal` and the client resumes later): no panic, no
/// hang.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_is_unavailable() {
    let server = started(RedisServer::start());
    let store = RedisStore::builder(server.url())
        .prefix(prefix())
        .response_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("redis store: {e}"));
    let s = create(&store, "alpha").await;
    drop(server);
    let calls = async {
        let created = store.create("beta", 0).await;
        assert!(
            matches!(created, Err(StoreError::Unavailable(_))),
            "{created:?}"
        );
        let fetched = store.fetch(&s.owner, 0, 10).await;
        assert!(
            matches!(fetched, Err(StoreError::Unavailable(_))),
            "{fetched:?}"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), calls)
        .await
        .unwrap_or_else(|_| panic!("a call hung with Redis gone"));
}

/// Redis restarts empty: the store reconnects by itself, old sessions are
/// unknown (their clients get fresh sessions), new ones never reuse an old
/// id, and listeners are told they may have missed notices.
#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_recovers_without_reusing_ids() {
    let mut server = started(RedisServer::start());
    let store = RedisStore::builder(server.url())
        .prefix(prefix())
        .response_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("redis store: {e}"));
    let mut notices = store.notices();
    let before = create(&store, "alpha").await;
    server.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    expect_notice(&mut notices, |n| *n == Notice::Lagged).await;
    // The first call after the drop may fail while the link comes back.
    let after = async {
        loop {
            match store.create("alpha", 0).await {
                Ok(Ok(state)) => return state,
                Err(StoreError::Unavailable(_)) => {}
                other => panic!("create: {other:?}"),
            }
        }
    };
    let after = tokio::time::timeout(Duration::from_secs(30), after)
        .await
        .unwrap_or_else(|_| panic!("the store never came back"));
    assert_ne!(after.owner.session, before.owner.session);
    assert!(matches!(
        store.fetch(&before.owner, 0, 1).await,
        Err(StoreError::UnknownSession(_))
    ));
    assert_eq!(resume(&store, &before, 0).await, None);
    ok(store.subscribe(&after.owner, "x")).await;
    ok(store.broadcast("x", &text("m"))).await;
    assert_eq!(offsets(&fetch(&store, &after.owner, 0).await), [1]);
}
