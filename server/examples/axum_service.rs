//! Wire added to an existing axum service: one route, the node as state,
//! and graceful shutdown on SIGTERM or Ctrl-C.
//!
//! ```sh
//! cargo run -p redial-server --example axum_service
//! ```

use axum::routing::get;
use axum::Router;
use redial_core::payload::Payload;
use redial_core::wire::error_code;
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{Node, Peer, Policy, PublishVerdict, Refusal, Rejection, ServerConfig};

/// Publishes fan out, except on `announcements`, which only the server
/// writes to.
struct Rules;

impl Policy for Rules {
    fn publish(&self, _: Peer<'_>, channel: Option<&str>, _: &Payload) -> PublishVerdict {
        match channel {
            Some("announcements") => {
                PublishVerdict::Reject(Refusal::new(error_code::UNAUTHORIZED, "read-only channel"))
            }
            Some(_) => PublishVerdict::FanOut,
            None => PublishVerdict::Request,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig::builder().key(TokenKey::random(1)?).build()?;
    let node = Node::builder(config, MemoryStore::new())
        .policy(Rules)
        // Any bearer token will do here; a real service checks it.
        .authorize(
            |req: &http::Request<()>| match req.headers().get("authorization") {
                Some(v) => Ok(v.to_str().ok().map(str::to_owned)),
                None => Err(Rejection::new(401, "a bearer token is required")),
            },
        )
        // Requests (publishes without a channel) are echoed to their sender.
        .on_request(|req, node| async move {
            let _ = node.send_to(&req.name, req.payload).await;
        })
        .build();

    let app = Router::new()
        .route("/", get(|| async { "hello from the rest of the service" }))
        .route("/wire", get(redial_server::axum::handler))
        .with_state(node.clone());

    let listener = redial_server::tokio::bind("127.0.0.1:8080").await?;
    println!("Wire on ws://{}/wire", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            node.shut_down().await;
        })
        .await?;
    Ok(())
}
