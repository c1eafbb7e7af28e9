//! The tokio accept loop over tokio-tungstenite.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::drive::{drive, Incoming, ReadError, WsMessage};
use crate::node::{Node, Rejection};

impl WsMessage for Message {
    fn binary(b: Bytes) -> Self {
        Message::Binary(b)
    }

    fn close(code: u16, reason: &str) -> Self {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        }))
    }

    fn classify(self) -> Incoming {
        match self {
            Message::Binary(b) => Incoming::Binary(b),
            Message::Text(_) => Incoming::Text,
            Message::Close(_) => Incoming::Close,
            _ => Incoming::Other,
        }
    }
}

impl ReadError for WsError {
    fn too_large(&self) -> bool {
        matches!(self, WsError::Capacity(_))
    }
}

/// The message and stream types [`serve_socket`] takes, for callers that
/// wrap the socket (a fault injector, a meter).
pub use tokio_tungstenite::tungstenite::Error as WsError;
pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::WebSocketStream;

/// The listen backlog [`bind`] asks for (the kernel caps it at its own
/// limit, `net.core.somaxconn` on Linux).
///
/// A node that dies sends its clients to the others all at once: a
/// thousand reconnecting clients dial within milliseconds, faster than a
/// busy node's accept loop takes them. Connections that find the backlog
/// full are not refused but dropped, and the client's TCP retries after a
/// second; the standard library's (and tokio's) default of 128 made that
/// second most of a resume burst's p99.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a backlog of [`LISTEN_BACKLOG`], for
/// [`serve`]; `TcpListener::bind` has a backlog of 128.
pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match listen(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")))
}

fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind`: a restarted node can take its port at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections on `listener` and serves each on its own task until
/// `node` has shut down and every connection has closed. Make the listener
/// with [`bind`] unless it needs settings of its own: its backlog must hold
/// a burst of reconnecting clients.
///
/// During a shutdown the loop keeps accepting, to refuse upgrades with 503
/// and `Retry-After`; it returns once the drain is over. A failed accept
/// (a connection reset before it was taken, no file descriptors left) is
/// skipped after a short pause rather than ending the server.
pub async fn serve(listener: TcpListener, node: Node) -> io::Result<()> {
    let mut shutdown = node.inner.shutdown.subscribe();
    let mut live = node.inner.live_watch();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, node.clone()));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            _ = async {
                let _ = shutdown.wait_for(Option::is_some).await;
                let _ = live.wait_for(|&n| n == 0).await;
            } => return Ok(()),
        }
    }
}

/// Serves one accepted TCP connection: the upgrade, then the session.
pub async fn serve_connection(stream: TcpStream, node: Node) {
    // Boxed: the handshake's state is larger than the session's, and would
    // otherwise size this task's future for the connection's whole life.
    if let Some((ws, principal)) = Box::pin(accept(stream, &node)).await {
        serve_socket(node.clone(), ws, principal).await;
    }
}

/// The WebSocket upgrade alone: shutdown, the `redial.v1` subprotocol, the
/// node's authorization and admission control decide it. `None` when it
/// was refused (the HTTP answer is sent) or failed; otherwise the socket and
/// the principal the authorization named, for [`serve_socket`].
pub async fn accept(
    stream: TcpStream,
    node: &Node,
) -> Option<(WebSocketStream<TcpStream>, Option<String>)> {
    let _ = stream.set_nodelay(true);
    let principal = Arc::new(Mutex::new(None));
    let decided = principal.clone();
    let n = node.clone();
    // The refusal type is tungstenite's callback signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        match n.admit(req) {
            Ok(p) => {
                if let Ok(mut slot) = decided.lock() {
                    *slot = p;
                }
                resp.headers_mut().insert(
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(redial_core::wire::SUBPROTOCOL),
                );
                Ok(resp)
            }
            Err(r) => Err(error_response(&r.0)),
        }
    };
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(node.config().limits().max_frame_len);
    config.max_frame_size = Some(node.config().limits().max_frame_len);
    config.read_buffer_size = node.config().read_buffer();
    config.write_buffer_size = node.config().write_buffer();
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let timeout = std::time::Duration::from_millis(node.config().hello_timeout_ms);
    let Ok(Ok(ws)) = tokio::time::timeout(timeout, upgrade).await else {
        return None;
    };
    let principal = principal.lock().map(|mut p| p.take()).unwrap_or(None);
    Some((ws, principal))
}

/// Serves the session on an upgraded socket (from [`accept`], maybe
/// wrapped) until it closes: await the returned future.
///
/// The socket is taken apart before the future exists, so the future does
/// not carry a copy of it for the connection's whole life.
pub fn serve_socket<S>(
    node: Node,
    socket: S,
    principal: Option<String>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: futures_util::Stream<Item = Result<Message, WsError>>
        + futures_util::Sink<Message>
        + Unpin
        + Send
        + 'static,
{
    drive::<Message, _, _>(node, socket, principal)
}

#[allow(clippy::result_large_err)]
fn error_response(r: &Rejection) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(r.reason.clone()));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(secs) = r.retry_after_secs {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_bound_listener_holds_more_than_the_default_backlog_unaccepted() {
        let listener = bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Dialled while nobody accepts: with `TcpListener::bind`'s backlog
        // of 128 the kernel drops what does not fit, and no more than 129
        // can be taken without waiting for the clients' retries.
        let clients: Vec<_> = (0..400)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let listener = listener.into_std().unwrap();
        let mut queued = 0;
        while listener.accept().is_ok() {
            queued += 1;
        }
        assert!(queued > 129, "only {queued} of 400 were held");
        drop(clients);
    }
}
