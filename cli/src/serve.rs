//! `redial serve`: a Wire server on `redial-server` (the memory store),
//! standalone, with the fault switches the CLI's users script against.

use std::collections::HashSet;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use redial_core::wire::error_code;
use redial_server::memory::MemoryStore;
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
    let key = TokenKey::random(1)
        .map_err(|e| CliError::Failure(format!("no randomness for the signing key: {e}")))?;
    let config = ServerConfig::builder()
        .key(key)
        .token_lifetime_ms(a.token_lifetime_ms)
        .admission_per_sec(a.admission_per_sec)
        .going_away(a.going_away_retry_ms, a.going_away_window_ms)
        .seed(a.name_seed)
        .build()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let store = MemoryStore::builder()
        .backlog(a.replay_capacity)
        .build()
        .map_err(|e| CliError::Usage(format!("--replay-capacity: {e}")))?;
    let reject = a.reject_status.map(|status| Rejection {
        status,
        retry_after_secs: a.retry_after_s,
        reason: "rejected by --reject-status".into(),
    });
    let store = Arc::new(store);
    let node = Node::builder_arc(config, store.clone())
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
    let listener = TcpListener::bind(a.listen)
        .await
        .map_err(|e| CliError::Failure(format!("binding the listener: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Failure(e.to_string()))?;
    let accept = tokio::spawn(accept_loop(listener, node.clone(), a.close_after));
    // Sessions whose token lifetime ran out would otherwise stay in the
    // memory store for as long as the server runs.
    let purge = {
        let node = node.clone();
        let lifetime = a.token_lifetime_ms;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PURGE_EVERY);
            loop {
                every.tick().await;
                store.purge(lifetime, node.now_ms());
            }
        })
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on ws://{addr}/");
        let _ = out.flush();
    }
    signals.recv().await;
    node.shut_down().await;
    accept.abort();
    purge.abort();
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
