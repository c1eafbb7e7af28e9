//! One connection: the HTTP upgrade (where scripted rejections and admission
//! control happen), then HELLO, then the session loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use redial_core::payload::Text;
use redial_core::wire::{self, error_code, Frame, Limits};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::admission::retry_after_secs;
use super::state::{HelloOutcome, Out, OutTx};
use super::{Control, State};

type Ws = WebSocketStream<TcpStream>;

/// A client that opens a socket and says nothing is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peer's half of a close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Decrements `live_connections` however the task ends, aborts included.
struct LiveGuard(Arc<State>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0
            .stats
            .send_modify(|s| s.live_connections = s.live_connections.saturating_sub(1));
    }
}

// The refusal type is tungstenite's callback signature, not ours to shrink.
#[allow(clippy::result_large_err)]
pub(crate) async fn run(
    stream: TcpStream,
    state: Arc<State>,
    control: broadcast::Receiver<Control>,
) {
    let _guard = LiveGuard(state.clone());
    let _ = stream.set_nodelay(true);
    let st = state.clone();
    let upgrade =
        tokio_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| {
            admit(&st, req, resp)
        });
    let Ok(Ok(ws)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await else {
        return;
    };
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    Conn {
        ws,
        state,
        control,
        conn,
        session: None,
        frames_in: 0,
    }
    .serve()
    .await;
}

/// Decides the HTTP upgrade: scripted rejection first, then the subprotocol
/// (PROTOCOL.md 1 requires `redial.v1`), then admission control.
#[allow(clippy::result_large_err)]
fn admit(state: &State, req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == wire::SUBPROTOCOL);
    let mut faults = state.faults();
    let refusal = if let Some(r) = faults.reject {
        Some((r.status, r.retry_after, "rejected by test script", false))
    } else if !offered {
        Some((400, None, "subprotocol redial.v1 required", false))
    } else if let Some(per_sec) = faults.admission_per_sec {
        match faults.admission.try_admit(per_sec, Instant::now()) {
            Ok(()) => None,
            Err(wait) => Some((503, Some(wait), "admission limit reached", true)),
        }
    } else {
        None
    };
    drop(faults);
    if let Some((status, retry_after, reason, throttled)) = refusal {
        state.stats.send_modify(|s| {
            s.handshakes_rejected += 1;
            if throttled {
                s.admissions_throttled += 1;
            }
        });
        return Err(error_response(status, retry_after, reason));
    }
    resp.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(wire::SUBPROTOCOL),
    );
    Ok(resp)
}

fn error_response(status: u16, retry_after: Option<Duration>, reason: &str) -> ErrorResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = ErrorResponse::new(Some(reason.to_owned()));
    *resp.status_mut() = status;
    if let Some(wait) = retry_after {
        resp.headers_mut()
            .insert("Retry-After", HeaderValue::from(retry_after_secs(wait)));
    }
    resp
}

/// What the loop does after handling one event.
enum Flow {
    Continue,
    /// Send `last` (an ERROR or GOING_AWAY) if any, then close.
    Close {
        last: Option<Frame>,
        code: u16,
        reason: String,
    },
    /// Drop the connection without a close frame.
    Abort,
}

struct Conn {
    ws: Ws,
    state: Arc<State>,
    control: broadcast::Receiver<Control>,
    conn: u64,
    /// The session id, once HELLO succeeded.
    session: Option<u64>,
    frames_in: u64,
}

impl Conn {
    async fn serve(mut self) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        let mut stalled_rx = self.state.stalled.subscribe();
        let mut stalled = *stalled_rx.borrow_and_update();
        let hello_deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let flow = loop {
            let flow = tokio::select! {
                ctl = self.control.recv() => self.on_control(ctl).await,
                changed = stalled_rx.changed() => {
                    if changed.is_err() {
                        break Flow::Abort;
                    }
                    stalled = *stalled_rx.borrow_and_update();
                    Flow::Continue
                }
                out = rx.recv(), if !stalled => match out {
                    Some(Out::Frame(f)) => self.write(&f).await,
                    Some(Out::Close(code, reason)) => Flow::Close { last: None, code, reason },
                    None => Flow::Abort,
                },
                msg = self.ws.next(), if !stalled => self.on_message(msg, &tx),
                () = tokio::time::sleep_until(hello_deadline), if self.session.is_none() => Flow::Abort,
            };
            if !matches!(flow, Flow::Continue) {
                break flow;
            }
        };
        if let Flow::Close { last, code, reason } = flow {
            if let Some(e) = last {
                let _ = self.ws.send(Message::Binary(e.to_bytes())).await;
            }
            self.close(code, &reason).await;
        }
        if let Some(sid) = self.session {
            let now = self.state.now_ms();
            self.state.inner().detach(sid, self.conn, now);
        }
    }

    async fn write(&mut self, frame: &Frame) -> Flow {
        match self.ws.send(Message::Binary(frame.to_bytes())).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Abort,
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        if self.ws.close(Some(frame)).await.is_ok() {
            // Wait for the client's close so the TCP close is orderly.
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
    }

    async fn on_control(&mut self, ctl: Result<Control, broadcast::error::RecvError>) -> Flow {
        match ctl {
            Ok(Control::Close(code, reason)) => Flow::Close {
                last: None,
                code,
                reason,
            },
            Ok(Control::GoingAway {
                retry_after_ms,
                window_ms,
            }) => Flow::Close {
                last: Some(Frame::GoingAway {
                    retry_after_ms,
                    window_ms,
                }),
                code: 1001,
                reason: "going away".into(),
            },
            Ok(Control::Restart) => Flow::Close {
                last: None,
                code: 1012,
                reason: "service restart".into(),
            },
            Ok(Control::Stop) => Flow::Close {
                last: None,
                code: 1001,
                reason: "server stopping".into(),
            },
            // Missed controls were all "close" of some kind.
            Err(broadcast::error::RecvError::Lagged(_)) => Flow::Close {
                last: None,
                code: 1001,
                reason: "going away".into(),
            },
            Err(broadcast::error::RecvError::Closed) => Flow::Abort,
        }
    }

    fn protocol_error(&self, reason: String) -> Flow {
        self.state.stats.send_modify(|s| s.protocol_errors += 1);
        Flow::Close {
            last: Some(Frame::Error {
                code: error_code::MALFORMED_FRAME,
                terminal: false,
                reason: Text::from(reason),
            }),
            code: error_code::close_code(error_code::MALFORMED_FRAME, false),
            reason: "protocol error".into(),
        }
    }

    fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        tx: &OutTx,
    ) -> Flow {
        let bytes = match msg {
            None | Some(Err(_)) => return Flow::Abort,
            Some(Ok(Message::Binary(b))) => b,
            // Pings are answered by tungstenite itself; a close is answered
            // too and the stream then ends.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_),
            )) => return Flow::Continue,
            Some(Ok(Message::Text(_))) => {
                return self.protocol_error("text messages are not allowed".into())
            }
        };
        let frame = match wire::decode(bytes, &Limits::default()) {
            Ok(f) => f,
            Err(e) => return self.protocol_error(e.to_string()),
        };
        let Some(sid) = self.session else {
            return self.on_hello(frame, tx);
        };
        self.frames_in += 1;
        // Answers go on `tx` (after anything already queued); a scripted
        // abort below drops them unsent.
        let alive = match frame {
            Frame::Publish {
                seq,
                channel,
                payload,
            } => {
                let mut inner = self.state.inner();
                let mut alive = false;
                self.state.stats.send_modify(|s| {
                    alive = inner.publish(sid, seq, channel, payload, tx, s);
                });
                alive
            }
            Frame::Subscribe { channel } => {
                let denied = self
                    .state
                    .faults()
                    .deny_channels
                    .iter()
                    .any(|d| d == channel.as_str());
                self.state.inner().subscribe(sid, channel, denied, tx)
            }
            Frame::Unsubscribe { channel } => self.state.inner().unsubscribe(sid, channel.as_str()),
            Frame::Received { offset } => self.state.inner().received(sid, offset),
            // A client reports its own protocol errors before closing;
            // nothing to do but let the close arrive.
            Frame::Error { .. } => true,
            other => {
                return self
                    .protocol_error(format!("{} not allowed from a client here", other.kind()))
            }
        };
        if !alive {
            // The session was forgotten under us (restart without key).
            return Flow::Abort;
        }
        let close_after = self.state.faults().close_after;
        if close_after.is_some_and(|n| self.frames_in >= n) {
            return Flow::Abort;
        }
        Flow::Continue
    }

    fn on_hello(&mut self, frame: Frame, tx: &OutTx) -> Flow {
        let Frame::Hello(hello) = frame else {
            return self.protocol_error(format!("expected HELLO, got {}", frame.kind()));
        };
        let now = self.state.now_ms();
        let mut inner = self.state.inner();
        let mut outcome = None;
        self.state.stats.send_modify(|s| {
            outcome = Some(inner.hello(&hello, self.conn, tx, now, s));
        });
        drop(inner);
        match outcome {
            Some(HelloOutcome::Welcome { session }) => {
                self.session = Some(session);
                Flow::Continue
            }
            Some(HelloOutcome::Refuse { code, reason }) => {
                // The flag and the close code that follow from the code
                // (PROTOCOL.md 6): a non-terminal refusal must not close with
                // a code the client takes as terminal.
                let terminal = error_code::is_terminal(code);
                Flow::Close {
                    last: Some(Frame::Error {
                        code,
                        terminal,
                        reason: Text::from(reason.clone()),
                    }),
                    code: error_code::close_code(code, terminal),
                    reason,
                }
            }
            None => Flow::Abort,
        }
    }
}
