//! Real redial clients on tokio, async-std and smol against a node on the
//! memory store (served by the tokio accept loop on its own runtime, on
//! 127.0.0.1). Each scenario runs once per client runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::{select, Either};
use redial_core::payload::Payload;
use redial_core::wire::error_code;
use redial_core::{Config, Event, Wire};
use redial_driver::{Builder, Events, Runtime};
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{Node, NodeBuilder, Peer, Policy, PublishVerdict, Refusal, ServerConfig};

/// A node serving on its own tokio runtime, whatever the client runs on.
struct Server {
    rt: Option<tokio::runtime::Runtime>,
    node: Node,
    url: String,
}

impl Server {
    fn start(make: impl FnOnce(NodeBuilder) -> NodeBuilder + Send + 'static) -> Server {
        // Built on a thread of its own: the client may be inside a tokio
        // runtime already, where blocking on another one is not allowed.
        std::thread::spawn(move || Server::start_here(make))
            .join()
            .unwrap()
    }

    fn start_here(make: impl FnOnce(NodeBuilder) -> NodeBuilder) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (node, url) = rt.block_on(async {
            let cfg = ServerConfig::builder()
                .key(TokenKey::new(1, [6; 32]))
                .going_away(300, 200)
                .build()
                .unwrap();
            let node = make(Node::builder(cfg, MemoryStore::new())).build();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/", listener.local_addr().unwrap());
            tokio::spawn(redial_server::tokio::serve(listener, node.clone()));
            (node, url)
        });
        Server {
            rt: Some(rt),
            node,
            url,
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    /// Runs `f` on the server's runtime and waits for it.
    async fn on_server<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        self.rt().spawn(f).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which a client's tokio runtime forbids.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn client_config() -> Config {
    Config::builder()
        .backoff(redial_core::Backoff::full_jitter(
            Duration::from_millis(20),
            Duration::from_millis(50),
        ))
        .stable_after(Duration::from_millis(50))
        .build()
        .unwrap()
}

/// The next event that matches, within 10 s (a runtime-neutral timer).
async fn wait(events: &mut Events, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
    let deadline = async_io::Timer::after(Duration::from_secs(10));
    let found = async {
        loop {
            let e = events
                .recv()
                .await
                .unwrap_or_else(|| panic!("events ended waiting for {what}"));
            if pred(&e) {
                return e;
            }
        }
    };
    match select(Box::pin(found), deadline).await {
        Either::Left((e, _)) => e,
        Either::Right(_) => panic!("no {what} in time"),
    }
}

async fn message(events: &mut Events, what: &str) -> (Option<u64>, Option<String>, String) {
    match wait(events, what, |e| matches!(e, Event::Message { .. })).await {
        Event::Message {
            offset,
            channel,
            payload,
            ..
        } => (
            offset,
            channel.map(|c| c.as_str().to_owned()),
            payload.as_text().unwrap().to_owned(),
        ),
        _ => unreachable!(),
    }
}

/// Refuses the first publish of `p3` (ERROR rate_limited, close 1013).
struct RefuseP3Once(AtomicBool);

impl Policy for RefuseP3Once {
    fn publish(&self, _: Peer<'_>, _: Option<&str>, payload: &Payload) -> PublishVerdict {
        if payload.as_text() == Some("p3") && !self.0.swap(true, Ordering::SeqCst) {
            return PublishVerdict::Reject(Refusal::new(error_code::RATE_LIMITED, "once"));
        }
        PublishVerdict::FanOut
    }
}

/// The publisher's connection is closed under it by a refused publish; it
/// resumes its session and sends again; the subscriber gets every publish
/// exactly once, in order, with offsets that continue.
async fn publishes_are_delivered_exactly_once_across_a_reconnect<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
) {
    let s = Server::start(|b| b.policy(RefuseP3Once(AtomicBool::new(false))));
    let (sub, mut sub_events) = make(s.url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    sub.subscribe("c").await.unwrap();
    wait(&mut sub_events, "subscribed", |e| {
        matches!(e, Event::Subscribed { .. })
    })
    .await;
    let (publisher, mut pub_events) = make(s.url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    for i in 1..=5 {
        publisher
            .publish("c", Payload::text(format!("p{i}")))
            .await
            .unwrap();
    }
    wait(&mut pub_events, "the refusal", |e| {
        matches!(e, Event::ServerError { code, .. } if *code == i64::from(error_code::RATE_LIMITED))
    })
    .await;
    wait(&mut pub_events, "the resume", |e| {
        matches!(e, Event::Connected { resumed: true, .. })
    })
    .await;
    wait(&mut pub_events, "the last ACK", |e| {
        matches!(e, Event::Acked { seq: 5 })
    })
    .await;
    let mut got = Vec::new();
    for _ in 1..=5 {
        let (offset, _, text) = message(&mut sub_events, "a publish").await;
        got.push((offset.unwrap(), text));
    }
    let node = s.node.clone();
    s.on_server(async move { node.publish("c", Payload::text("end")).await.unwrap() })
        .await;
    let (_, _, end) = message(&mut sub_events, "the sentinel").await;
    let want: Vec<(u64, String)> = (1..=5).map(|i| (i, format!("p{i}"))).collect();
    assert_eq!(got, want);
    assert_eq!(end, "end", "nothing after p5 but the sentinel");
}

/// SUBSCRIBE refused by the policy reaches the client as SubscribeFailed;
/// other channels are confirmed.
async fn subscribe_denied_by_the_policy<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    struct NoAdmin;
    impl Policy for NoAdmin {
        fn subscribe(&self, _: Peer<'_>, channel: &str) -> Result<(), Refusal> {
            if channel == "admin" {
                return Err(Refusal::new(error_code::UNAUTHORIZED, "forbidden"));
            }
            Ok(())
        }
    }
    let s = Server::start(|b| b.policy(NoAdmin));
    let (c, mut events) = make(s.url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    c.subscribe("admin").await.unwrap();
    let e = wait(&mut events, "the refusal", |e| {
        matches!(e, Event::SubscribeFailed { .. })
    })
    .await;
    assert!(
        matches!(e, Event::SubscribeFailed { code, ref channel, .. } if code == i64::from(error_code::UNAUTHORIZED) && channel == "admin"),
        "{e:?}"
    );
    c.subscribe("news").await.unwrap();
    wait(
        &mut events,
        "news",
        |e| matches!(e, Event::Subscribed { channel, .. } if channel == "news"),
    )
    .await;
}

/// A publish without a channel is a request; the application answers with
/// a direct message.
async fn requests_are_answered_directly<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let s = Server::start(|b| {
        b.on_request(|req, node| async move {
            let answer = format!("re:{}", req.payload.as_text().unwrap_or(""));
            node.send_to(&req.name, Payload::text(answer))
                .await
                .unwrap();
        })
    });
    let (c, mut events) = make(s.url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    c.send(Payload::text("ping")).await.unwrap();
    let (_, channel, text) = message(&mut events, "the answer").await;
    assert_eq!((channel, text.as_str()), (None, "re:ping"));
}

/// Shutdown: the client is told GOING_AWAY with the node's timing, then
/// closed with 1001, and will reconnect.
async fn shutdown_sends_going_away_then_1001<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let s = Server::start(|b| b);
    let (_c, mut events) = make(s.url.clone())
        .protocol(Wire)
        .config(client_config())
        .connect()
        .unwrap();
    wait(&mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let node = s.node.clone();
    let down = s.rt().spawn(async move { node.shut_down().await });
    let e = wait(&mut events, "GOING_AWAY", |e| {
        matches!(e, Event::GoingAway { .. })
    })
    .await;
    assert!(
        matches!(e, Event::GoingAway { retry_after, window } if retry_after == Duration::from_millis(300) && window == Duration::from_millis(200)),
        "{e:?}"
    );
    let e = wait(&mut events, "the close", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            e,
            Event::Disconnected {
                code: Some(1001),
                will_reconnect: true,
                ..
            }
        ),
        "{e:?}"
    );
    down.await.unwrap();
}

fn on_tokio<Fut: Future<Output = ()>>(
    body: impl FnOnce(fn(String) -> redial_tokio::Builder) -> Fut,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(body(redial_tokio::builder));
}

fn async_std_builder(url: String) -> redial_async_std::Builder {
    let rt = redial_async_std::AsyncIo::with_spawner(|task| {
        async_std::task::spawn(task);
    });
    redial_async_std::Builder::new(rt, url)
}

fn smol_builder(url: String) -> redial_async_std::Builder {
    let rt = redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach());
    redial_async_std::Builder::new(rt, url)
}

macro_rules! on_every_runtime {
    ($($name:ident),* $(,)?) => {
        mod tokio_rt {
            $(
                #[test]
                fn $name() {
                    crate::on_tokio(|make| super::$name(make));
                }
            )*
        }
        mod async_std_rt {
            $(
                #[test]
                fn $name() {
                    async_std::task::block_on(super::$name(crate::async_std_builder));
                }
            )*
        }
        mod smol_rt {
            $(
                #[test]
                fn $name() {
                    smol::block_on(super::$name(crate::smol_builder));
                }
            )*
        }
    };
}

on_every_runtime!(
    publishes_are_delivered_exactly_once_across_a_reconnect,
    subscribe_denied_by_the_policy,
    requests_are_answered_directly,
    shutdown_sends_going_away_then_1001,
);
