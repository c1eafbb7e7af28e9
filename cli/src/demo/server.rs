//! The demo's server: redial-server nodes on one [`Ledger`] store behind
//! one loopback listener. A deploy replaces the node; the store, the
//! signing key and the port stay, so sessions resume on the new node.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ledger::Ledger;

/// What the demo's deploy announces: back in 1 s, reconnects spread over 1 s.
const GOING_AWAY_MS: (u64, u64) = (1000, 1000);

/// Why the demo's server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No OS randomness for the signing key.
    #[error("no randomness for the signing key: {0}")]
    Key(String),
    /// The configuration was refused.
    #[error("server config: {0}")]
    Config(#[from] redial_server::ConfigError),
    /// The listener could not be bound.
    #[error("binding 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
}

/// The running server: the node serving now, and what outlives it.
pub struct DemoServer {
    addr: SocketAddr,
    config: ServerConfig,
    ledger: Arc<Ledger>,
    node: watch::Sender<Node>,
    accept: JoinHandle<()>,
}

impl DemoServer {
    /// Binds 127.0.0.1 on a free port and starts the first node; session
    /// names come from `seed`. Must be called inside a tokio runtime.
    pub async fn start(seed: u64, token_lifetime: Duration) -> Result<Self, StartError> {
        let key = TokenKey::random(1).map_err(|e| StartError::Key(e.to_string()))?;
        let config = ServerConfig::builder()
            .key(key)
            .token_lifetime_ms(u64::try_from(token_lifetime.as_millis()).unwrap_or(u64::MAX))
            .going_away(GOING_AWAY_MS.0, GOING_AWAY_MS.1)
            .seed(seed)
            .build()?;
        let ledger = Arc::new(Ledger::new());
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (node, nodes) = watch::channel(Self::node(&config, &ledger));
        let accept = tokio::spawn(accept_loop(listener, nodes));
        Ok(DemoServer {
            addr,
            config,
            ledger,
            node,
            accept,
        })
    }

    fn node(config: &ServerConfig, ledger: &Arc<Ledger>) -> Node {
        Node::builder_arc(config.clone(), ledger.clone()).build()
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `ws://` URL.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The store, with its applied-publish record and clock.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A deploy that keeps state: new connections go to a new node on the
    /// same store and key from now on, while the old node shuts down
    /// (GOING_AWAY to each of its connections, then close 1001).
    pub fn restart(&self) {
        let old = self
            .node
            .send_replace(Self::node(&self.config, &self.ledger));
        tokio::spawn(async move { old.shut_down().await });
    }

    /// Returns once the serving node has no connection left.
    pub async fn all_gone(&self) {
        // The node exposes a snapshot, not a signal: poll it.
        let node = self.node.borrow().clone();
        while node.stats().live_connections > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes every connection of the serving node with `code`.
    pub fn close_all(&self, code: u16, reason: &str) {
        self.node.borrow().close_all(code, reason);
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, nodes: watch::Receiver<Node>) {
    while let Ok((stream, _)) = listener.accept().await {
        let node = nodes.borrow().clone();
        tokio::spawn(redial_server::tokio::serve_connection(stream, node));
    }
}
