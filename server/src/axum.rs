//! Wire behind an existing axum service: a handler for axum's
//! `WebSocketUpgrade`.
//!
//! Route it with the [`Node`] as state (or as a part of yours, through
//! `FromRef`):
//!
//! ```no_run
//! # async fn run(node: redial_server::Node) {
//! let app = axum::Router::new()
//!     .route("/wire", axum::routing::get(redial_server::axum::handler))
//!     .with_state(node);
//! let listener = redial_server::tokio::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::drive::{drive, Incoming, ReadError, WsMessage};
use crate::node::{Node, Rejection};

impl WsMessage for Message {
    fn binary(b: Bytes) -> Self {
        Message::Binary(b)
    }

    fn close(code: u16, reason: &str) -> Self {
        Message::Close(Some(CloseFrame {
            code,
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

impl ReadError for axum::Error {
    fn too_large(&self) -> bool {
        // axum hides the WebSocket library's error behind its own; its
        // source is the original.
        let source = std::error::Error::source(self);
        matches!(
            source.and_then(|e| e.downcast_ref()),
            Some(axum_tungstenite::Error::Capacity(_))
        )
    }
}

/// The axum handler: decides the upgrade (shutdown, the `redial.v1`
/// subprotocol, the node's authorization, admission control) and serves the
/// session on the upgraded socket.
pub async fn handler(
    State(node): State<Node>,
    ws: WebSocketUpgrade,
    parts: axum::http::request::Parts,
) -> Response {
    let request = axum::http::Request::from_parts(parts, ());
    let principal = match node.admit(&request) {
        Ok(p) => p,
        Err(r) => return rejection(&r.0),
    };
    let max = node.config().limits().max_frame_len;
    ws.protocols([redial_core::wire::SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(node.config().read_buffer())
        .write_buffer_size(node.config().write_buffer())
        .on_upgrade(move |socket| drive::<Message, _, _>(node, socket, principal))
}

fn rejection(r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, r.reason.clone()).into_response();
    if let Some(secs) = r.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
