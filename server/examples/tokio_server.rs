//! A Wire server on tokio: the library's accept loop on the memory store,
//! with graceful shutdown on SIGTERM or Ctrl-C.
//!
//! ```sh
//! cargo run -p redial-server --example tokio_server -- 127.0.0.1:8080
//! ```

use std::sync::Arc;
use std::time::Duration;

use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let config = ServerConfig::builder()
        .key(TokenKey::random(1)?)
        .admission_per_sec(Some(500))
        .build()?;
    let lifetime = config.token_lifetime_ms();
    let store = Arc::new(MemoryStore::new());
    let node = Node::builder_arc(config, store.clone()).build();

    // Sessions whose token lifetime ran out are removed now and then.
    let purge = node.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            store.purge(lifetime, purge.now_ms());
        }
    });

    let listener = redial_server::tokio::bind(&addr).await?;
    println!("Wire on ws://{}/", listener.local_addr()?);
    let stop = node.clone();
    tokio::spawn(async move {
        terminated().await;
        println!("shutting down: GOING_AWAY, drain, 1001");
        stop.shut_down().await;
    });
    redial_server::tokio::serve(listener, node).await?;
    Ok(())
}

/// SIGTERM (a deploy) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
