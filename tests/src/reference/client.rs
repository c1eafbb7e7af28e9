//! A tiny raw `Wire` client for tests: one WebSocket, frames in and out, no
//! reconnect logic of its own.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::wire::{self, Frame, Hello, Limits, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long [`RawClient::recv`] waits before calling the server silent.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP upgrade was answered with a status other than 101.
    #[error("handshake refused with HTTP {status} (Retry-After: {retry_after:?})")]
    Refused {
        /// The status the server sent.
        status: StatusCode,
        /// The `Retry-After` header, in seconds, if present and numeric.
        retry_after: Option<u64>,
    },
    /// Transport or WebSocket failure.
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// A binary message that is not a valid frame.
    #[error("undecodable frame: {0}")]
    Decode(#[from] wire::DecodeError),
    /// Nothing arrived within the timeout.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server closed the WebSocket (close frame, or EOF if `None`).
    #[error("closed by server: {0:?}")]
    Closed(Option<CloseFrame>),
    /// A frame arrived that the caller did not expect here.
    #[error("unexpected frame {0:?}")]
    Unexpected(Box<Frame>),
    /// A non-binary data message (the protocol uses binary only).
    #[error("unexpected non-binary message")]
    NotBinary,
}

/// One raw connection to a `Wire` server.
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    limits: Limits,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient").finish_non_exhaustive()
    }
}

impl RawClient {
    /// Opens a WebSocket to `url` offering [`wire::SUBPROTOCOL`]; sends no
    /// frame yet (call [`RawClient::hello`] next).
    pub async fn connect(url: &str) -> Result<RawClient, ClientError> {
        let mut req = url.into_client_request()?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(wire::SUBPROTOCOL),
        );
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(RawClient {
                ws,
                limits: Limits::default(),
            }),
            Err(tungstenite::Error::Http(resp)) => Err(ClientError::Refused {
                status: resp.status(),
                retry_after: resp
                    .headers()
                    .get("Retry-After")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one frame as a binary message.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.ws.send(Message::Binary(frame.to_bytes())).await?;
        Ok(())
    }

    /// Sends raw bytes as a binary message, for malformed-frame tests.
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        self.ws.send(Message::Binary(bytes)).await?;
        Ok(())
    }

    /// Sends a WebSocket ping with `payload`.
    pub async fn ping(&mut self, payload: Bytes) -> Result<(), ClientError> {
        self.ws.send(Message::Ping(payload)).await?;
        Ok(())
    }

    /// The next frame, or [`ClientError::Timeout`] after `timeout`. Pongs
    /// are skipped unless `want_pong`, in which case the pong's payload is
    /// returned as `Ok(None)`.
    async fn next(
        &mut self,
        timeout: Duration,
        want_pong: bool,
    ) -> Result<Option<Frame>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match msg {
                None => return Err(ClientError::Closed(None)),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Binary(b))) => return Ok(Some(wire::decode(b, &self.limits)?)),
                Some(Ok(Message::Close(frame))) => {
                    // Send the queued close reply now, so the server sees a
                    // complete close handshake instead of waiting it out.
                    let _ = self.ws.flush().await;
                    return Err(ClientError::Closed(frame));
                }
                Some(Ok(Message::Pong(_))) if want_pong => return Ok(None),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => return Err(ClientError::NotBinary),
            }
        }
    }

    /// The next frame, waiting at most [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        self.recv_within(RECV_TIMEOUT).await
    }

    /// The next frame, waiting at most `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> Result<Frame, ClientError> {
        loop {
            if let Some(f) = self.next(timeout, false).await? {
                return Ok(f);
            }
        }
    }

    /// Waits for a pong (frames arriving first are returned as
    /// [`ClientError::Unexpected`]).
    pub async fn recv_pong_within(&mut self, timeout: Duration) -> Result<(), ClientError> {
        match self.next(timeout, true).await? {
            None => Ok(()),
            Some(f) => Err(ClientError::Unexpected(Box::new(f))),
        }
    }

    /// Sends HELLO and returns the WELCOME; any other answer (an ERROR, say)
    /// comes back as [`ClientError::Unexpected`].
    pub async fn hello(&mut self, hello: Hello) -> Result<Welcome, ClientError> {
        self.send(&Frame::Hello(hello)).await?;
        match self.recv().await? {
            Frame::Welcome(w) => Ok(w),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends PUBLISH.
    pub async fn publish(
        &mut self,
        seq: u64,
        channel: Option<&str>,
        payload: &str,
    ) -> Result<(), ClientError> {
        self.send(&Frame::Publish {
            seq,
            channel: channel.map(Text::from),
            payload: Payload::text(payload),
        })
        .await
    }

    /// Sends a close frame and waits for the server's answer.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.ws.close(None).await?;
        while let Some(msg) = self.ws.next().await {
            if msg.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// A HELLO for a fresh session, optionally asking for `name`.
pub fn fresh_hello(name: Option<&str>) -> Hello {
    Hello {
        version: wire::VERSION,
        resume_token: None,
        last_offset: 0,
        name: name.map(Text::from),
    }
}

/// A HELLO resuming with `token`, having delivered up to `last_offset`.
pub fn resume_hello(token: &ResumeToken, last_offset: u64) -> Hello {
    Hello {
        version: wire::VERSION,
        resume_token: Some(token.clone()),
        last_offset,
        name: None,
    }
}
