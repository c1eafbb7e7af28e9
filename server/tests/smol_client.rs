//! A redial client on smol against the node on tokio: subscribe, receive,
//! lose the connection to a refused publish, resume the same session and
//! carry on with the offsets where they were.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redial_core::payload::Payload;
use redial_core::wire::error_code;
use redial_core::{Config, Event, Wire};
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{Node, Peer, Policy, PublishVerdict, Refusal, ServerConfig};

struct RefuseByeOnce(AtomicBool);

impl Policy for RefuseByeOnce {
    fn publish(&self, _: Peer<'_>, _: Option<&str>, payload: &Payload) -> PublishVerdict {
        if payload.as_text() == Some("bye") && !self.0.swap(true, Ordering::SeqCst) {
            return PublishVerdict::Reject(Refusal::new(error_code::RATE_LIMITED, "once"));
        }
        PublishVerdict::FanOut
    }
}

async fn wait(
    events: &mut redial_async_std::Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = smol::future::or(async { events.recv().await }, async {
            smol::Timer::at(deadline).await;
            None
        })
        .await
        .unwrap_or_else(|| panic!("no {what} in time"));
        if pred(&e) {
            return e;
        }
    }
}

#[test]
fn smol_client_resumes_its_session_on_the_tokio_node() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (node, url) = rt.block_on(async {
        let cfg = ServerConfig::builder()
            .key(TokenKey::new(1, [6; 32]))
            .build()
            .unwrap();
        let node = Node::builder(cfg, MemoryStore::new())
            .policy(RefuseByeOnce(AtomicBool::new(false)))
            .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(redial_server::tokio::serve(listener, node.clone()));
        (node, url)
    });
    smol::block_on(async {
        let rt_io = redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach());
        let config = Config::builder()
            .backoff(redial_core::Backoff::full_jitter(
                Duration::from_millis(20),
                Duration::from_millis(50),
            ))
            .build()
            .unwrap();
        let (c, mut events) = redial_async_std::Builder::new(rt_io, url)
            .protocol(Wire)
            .config(config)
            .connect()
            .unwrap();
        c.subscribe("c").await.unwrap();
        wait(&mut events, "subscribed", |e| {
            matches!(e, Event::Subscribed { .. })
        })
        .await;
        rt.block_on(node.publish("c", Payload::text("m1"))).unwrap();
        let e = wait(&mut events, "m1", |e| matches!(e, Event::Message { .. })).await;
        assert!(matches!(
            e,
            Event::Message {
                offset: Some(1),
                ..
            }
        ));

        c.publish("c", Payload::text("bye")).await.unwrap();
        wait(&mut events, "the refusal", |e| {
            matches!(e, Event::ServerError { .. })
        })
        .await;
        wait(&mut events, "the resume", |e| {
            matches!(e, Event::Connected { resumed: true, .. })
        })
        .await;
        // The refused publish was sent again and fanned out this time.
        let e = wait(&mut events, "bye", |e| matches!(e, Event::Message { .. })).await;
        assert!(
            matches!(e, Event::Message { offset: Some(2), ref payload, .. } if payload.as_text() == Some("bye"))
        );
        rt.block_on(node.publish("c", Payload::text("m3"))).unwrap();
        let e = wait(&mut events, "m3", |e| matches!(e, Event::Message { .. })).await;
        assert!(matches!(
            e,
            Event::Message {
                offset: Some(3),
                ..
            }
        ));
    });
}
