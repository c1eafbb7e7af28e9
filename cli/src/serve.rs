//! `redial serve`: a Wire server on `redial-server` (the memory store, or
//! a Redis shared with other `serve` processes), standalone, with the fault
//! switches the CLI's users script against.

use std::collections::HashSet;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use redial_core::wire::error_code;
use redial_server::memory::MemoryStore;
use redial_server::redis::RedisStore;
use redial_server::store::Store;
use redial_server::token::TokenKey;
use redial_server::tokio::{Message, WebSocketStream};
use redial_server::{Node, Peer, Policy, Refusal, Rejection, ServerConfig};
use tokio::net::{TcpListener, TcpStream};

use crate::args::ServeArgs;
use crate::signals::Signals;
use crate::{CliError, Exit};

/// How often sessions whose token lifetime has run out are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(30);

/// `--deny-channel`: SUBSCRIBE to these is refused with `unauthorized`.
struct DenyChannels(HashSet<String>);

impl Policy for DenyChannels {
    fn subscribe(&self, _: Peer<'_>, channel: &str) -> Result<(), Refusal> {
        if self.0.contains(channel) {
            return Err(Refusal::new(error_code::UNAUTHORIZED, "forbidden"));
        }
        Ok(())
    }
}

/// Starts the server, prints `listening on ws://…/`, serves until Ctrl-C or
/// SIGTERM, then shuts down as PROTOCOL.md section 1 asks: GOING_AWAY on
/// every connection, then close 1001.
pub async fn run(a: ServeArgs) -> Result<Exit, CliError> {
    let mut signals = Signals::listen()?;
    if !a.listen.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--listen: refusing to listen on {}: only loopback addresses are allowed",
            a.listen
        )));
    }
    let key = match &a.token_key_file {
        Some(path) => read_key(path)?,
        None => TokenKey::random(1)
            .map_err(|e| CliError::Failure(format!("no randomness for the signing key: {e}")))?,
    };
    // Before the node is built: it takes its metric handles from the
    // recorder installed then.
    let metrics = match a.metrics_listen {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let listener = redial_server::tokio::bind(a.listen)
        .await
        .map_err(|e| CliError::Failure(format!("binding the listener: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Failure(e.to_string()))?;
    // Nodes of one cluster must not generate the same names in step: each
    // mixes its own port into the seed.
    let seed = match &a.redis {
        Some(_) => a.name_seed ^ u64::from(addr.port()).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        None => a.name_seed,
    };
    let config = ServerConfig::builder()
        .key(key)
        .token_lifetime_ms(a.token_lifetime_ms)
        .admission_per_sec(a.admission_per_sec)
        .going_away(a.going_away_retry_ms, a.going_away_window_ms)
        .seed(seed)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let (store, memory): (Arc<dyn Store>, _) = match &a.redis {
        Some(url) => (redis_store(url, &a).await?, None),
        None => {
            let memory = MemoryStore::builder()
                .backlog(a.replay_capacity)
                .build()
                .map_err(|e| CliError::Usage(format!("--replay-capacity: {e}")))?;
            let memory = Arc::new(memory);
            (memory.clone() as Arc<dyn Store>, Some(memory))
        }
    };
    let reject = a.reject_status.map(|status| Rejection {
        status,
        retry_after_secs: a.retry_after_s,
        reason: "rejected by --reject-status".into(),
    });
    let node = Node::builder_arc(config, store)
        .policy(DenyChannels(a.deny_channel.iter().cloned().collect()))
        .authorize(move |_: &http::Request<()>| match &reject {
            Some(r) => Err(r.clone()),
            None => Ok(None),
        })
        // A publish without a channel comes back to its sender.
        .on_request(|req, node| async move {
            let _ = node.send_to(&req.name, req.payload).await;
        })
        .build();
    let accept = tokio::spawn(accept_loop(listener, node.clone(), a.close_after));
    // Sessions whose token lifetime ran out would otherwise stay in the
    // memory store for as long as the server runs (Redis expires its own).
    let purge = memory.map(|store| {
        let node = node.clone();
        let lifetime = a.token_lifetime_ms;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PURGE_EVERY);
            loop {
                every.tick().await;
                store.purge(lifetime, node.now_ms());
            }
        })
    });
    let mut metrics_url = None;
    let metrics = metrics.map(|(listener, recorder)| {
        metrics_url = listener.local_addr().ok();
        tokio::spawn(crate::metrics::serve(listener, recorder))
    });
    {
        let mut out = std::io::stdout().lock();
        if let Some(at) = metrics_url {
            let _ = writeln!(out, "metrics on http://{at}/metrics");
        }
        let _ = writeln!(out, "listening on ws://{addr}/");
        let _ = out.flush();
    }
    signals.recv().await;
    node.shut_down().await;
    accept.abort();
    if let Some(purge) = purge {
        purge.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    let stats = node.stats();
    eprintln!(
        "redial serve: stopped after {} connections, {} sessions ({} resumed), {} publishes applied, {} upgrades refused ({} by admission control)",
        stats.upgrades,
        stats.sessions_created + stats.sessions_resumed,
        stats.sessions_resumed,
        stats.publishes_applied,
        stats.upgrades_refused,
        stats.admissions_throttled
    );
    Ok(Exit::Clean)
}

/// `--redis`: the store on a loopback Redis, sessions kept as long as
/// their tokens last.
async fn redis_store(url: &str, a: &ServeArgs) -> Result<Arc<dyn Store>, CliError> {
    if !redis_host_is_loopback(url) {
        return Err(CliError::Usage(
            "--redis: only a redis:// URL on a loopback address is allowed".into(),
        ));
    }
    let mut builder = RedisStore::builder(url)
        .backlog(a.replay_capacity)
        .detached_ttl(Duration::from_millis(a.token_lifetime_ms.max(1)));
    if let Some(prefix) = &a.redis_prefix {
        builder = builder.prefix(prefix.as_str());
    }
    let store = builder
        .connect()
        .await
        .map_err(|e| CliError::Failure(format!("--redis: {e}")))?;
    Ok(Arc::new(store))
}

/// Whether `url` is `redis://[user:password@]host[:port][/db]` with a
/// loopback host.
fn redis_host_is_loopback(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("redis://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        // [::1]:6379
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `--token-key-file`: 64 hex digits (surrounding whitespace ignored).
fn read_key(path: &std::path::Path) -> Result<TokenKey, CliError> {
    let bad = |why: String| CliError::Usage(format!("--token-key-file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let hex = text.trim().as_bytes();
    if hex.len() != 64 {
        return Err(bad("expected 64 hex digits".into()));
    }
    let mut secret = [0u8; 32];
    for (byte, pair) in secret.iter_mut().zip(hex.chunks(2)) {
        let digits = std::str::from_utf8(pair).ok();
        *byte = digits
            .and_then(|d| u8::from_str_radix(d, 16).ok())
            .ok_or_else(|| bad("expected 64 hex digits".into()))?;
    }
    Ok(TokenKey::new(1, secret))
}

async fn accept_loop(listener: TcpListener, node: Node, close_after: Option<u64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            if let Some((ws, principal)) = redial_server::tokio::accept(stream, &node).await {
                let socket = CloseAfter {
                    inner: ws,
                    frames: 0,
                    limit: close_after.map(|n| n.saturating_add(1)),
                    tripped: false,
                };
                redial_server::tokio::serve_socket(node, socket, principal).await;
            }
        });
    }
}

/// `--close-after N`: after the N-th binary message following HELLO, the
/// connection goes silent and ends, and nothing more is written (an applied
/// publish whose ACK is lost).
struct CloseAfter {
    inner: WebSocketStream<TcpStream>,
    frames: u64,
    /// HELLO plus N.
    limit: Option<u64>,
    tripped: bool,
}

type WsError = redial_server::tokio::WsError;

impl Stream for CloseAfter {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped {
            return Poll::Ready(None);
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(Message::Binary(_)))) = &item {
            self.frames += 1;
            if self.limit.is_some_and(|l| self.frames >= l) {
                self.tripped = true;
            }
        }
        item
    }
}

impl Sink<Message> for CloseAfter {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.tripped {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        if self.tripped {
            return Ok(());
        }
        Pin::new(&mut self.inner).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.tripped {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        if self.tripped {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redis_urls_pass() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "redis://:secret@127.0.0.2:7000/",
            "redis://[::1]:6379/1",
        ] {
            assert!(redis_host_is_loopback(ok), "{ok}");
        }
        for bad in [
            "redis://10.0.0.5:6379/0",
            "redis://example.com/",
            "rediss://127.0.0.1/",
            "redis://127.0.0.1@10.0.0.5/",
            "127.0.0.1:6379",
        ] {
            assert!(!redis_host_is_loopback(bad), "{bad}");
        }
    }
}
