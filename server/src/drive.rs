//! The connection task both runtimes share: WebSocket messages in, store
//! calls awaited in order, notices routed in, frames out with coalesced
//! writes, all through one [`Connection`].

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use redial_core::wire::{error_code, Frame};
use tracing::Instrument;

use crate::connection::{Action, Connection};
use crate::node::{monotonic_now, Counters, Node, Orders};
use crate::registry::{Mailbox, Wake};
use crate::store::{Notice, Owner, PublishOutcome};
use crate::StoreReply;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// A WebSocket message type as the task needs to see it.
pub(crate) enum Incoming {
    Binary(Bytes),
    Text,
    Close,
    /// Ping, pong: answered by the WebSocket layer.
    Other,
}

/// A read error of either WebSocket library, seen alike.
pub(crate) trait ReadError: Send + 'static {
    /// The peer sent a message over the configured limit (the frame limit
    /// of PROTOCOL.md 5, which the WebSocket layer enforces first). The
    /// socket can still be written to.
    fn too_large(&self) -> bool;
}

/// The two WebSocket libraries' message types, seen alike.
pub(crate) trait WsMessage: Sized + Send + 'static {
    fn binary(b: Bytes) -> Self;
    fn close(code: u16, reason: &str) -> Self;
    fn classify(self) -> Incoming;
}

enum Write<M> {
    Frames(Vec<M>),
    Close(M),
}

/// What a write hands back: the sink and how many frames reached the
/// socket, or `None` once the socket failed or was closed.
type Written<K> = Option<(K, usize)>;
type Writing<K> = Pin<Box<dyn Future<Output = Written<K>> + Send>>;

/// The socket's write half, written from the connection's own task.
///
/// One task per connection rather than a reader and a writer: a second
/// task costs every connection, idle or not, its task cell and a hand-off
/// between the two (about 0.8 KiB). A write under way is a boxed future
/// that owns the sink, polled once when it is queued (a socket with room
/// takes it at once, so frames never wait for the store call that follows
/// them) and then from the connection's loop; idle, the connection keeps
/// the sink and nothing else. Bounded as before: the session core's
/// outbound window caps what is queued.
struct Writer<M, K> {
    /// The sink, while no write is under way.
    sink: Option<K>,
    writing: Option<Writing<K>>,
    queue: VecDeque<Write<M>>,
    /// Frames written since the connection last took the count.
    written: usize,
    /// The socket failed: nothing more is written.
    failed: bool,
    /// A close was handed over: nothing more is written.
    closed: bool,
}

impl<M, K> Writer<M, K>
where
    M: WsMessage,
    K: Sink<M> + Unpin + Send + 'static,
{
    fn new(sink: K) -> Self {
        Writer {
            sink: Some(sink),
            writing: None,
            queue: VecDeque::new(),
            written: 0,
            failed: false,
            closed: false,
        }
    }

    /// Queues `w` (dropped once the socket failed or was closed) and
    /// starts it if no write is under way.
    fn send(&mut self, w: Write<M>) {
        if self.failed || self.closed {
            return;
        }
        self.queue.push_back(w);
        self.start();
    }

    /// Starts queued writes while none is under way. Each is polled once
    /// here with a no-op waker: one that does not finish is polled again by
    /// [`Writer::progress`] in the connection's loop, which registers the
    /// task's own waker.
    fn start(&mut self) {
        while self.writing.is_none() {
            let Some(sink) = self.sink.take() else { return };
            let Some(w) = self.queue.pop_front() else {
                self.sink = Some(sink);
                // An idle connection keeps no queue.
                self.queue = VecDeque::new();
                return;
            };
            self.closed |= matches!(w, Write::Close(_));
            let mut writing: Writing<K> = Box::pin(write_one(sink, w));
            match writing
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(r) => self.finished(r),
                Poll::Pending => self.writing = Some(writing),
            }
        }
    }

    fn finished(&mut self, r: Written<K>) {
        match r {
            Some((sink, n)) => {
                self.sink = Some(sink);
                self.written += n;
            }
            None => {
                self.failed |= !self.closed;
                self.queue = VecDeque::new();
            }
        }
    }

    /// Whether a write is under way.
    fn busy(&self) -> bool {
        self.writing.is_some()
    }

    /// Waits for the write under way to end, then starts the next.
    /// Cancel-safe: an unfinished write stays under way.
    async fn progress(&mut self) {
        let r = std::future::poll_fn(|cx| match &mut self.writing {
            Some(w) => w.as_mut().poll(cx),
            None => Poll::Pending,
        })
        .await;
        self.writing = None;
        self.finished(r);
        self.start();
    }

    /// Frames written since the last call, and whether the socket failed.
    fn take_written(&mut self) -> (usize, bool) {
        (std::mem::take(&mut self.written), self.failed)
    }

    /// Writes what is queued; then, if the peer closed first, closes the
    /// sink, which writes the answer to its close frame that the WebSocket
    /// layer queued.
    async fn finish(&mut self) {
        while self.busy() {
            self.progress().await;
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.close().await;
        }
    }
}

/// Feeds every message of a batch and flushes once; or sends a close.
async fn write_one<M, K>(mut sink: K, w: Write<M>) -> Written<K>
where
    M: WsMessage,
    K: Sink<M> + Unpin,
{
    match w {
        Write::Frames(batch) => {
            let n = batch.len();
            for m in batch {
                if sink.feed(m).await.is_err() {
                    return None;
                }
            }
            if sink.flush().await.is_err() {
                return None;
            }
            Some((sink, n))
        }
        Write::Close(m) => {
            let _ = sink.send(m).await;
            let _ = sink.close().await;
            None
        }
    }
}

/// Serves one upgraded WebSocket until it closes.
///
/// Not an `async fn`: the socket is split (moved into its shared half)
/// before the future exists. An `async fn` keeps each argument in its
/// future for the whole connection, and every caller's future keeps its
/// own copy of what it passed: a few hundred bytes of WebSocket state,
/// three times over, in every idle connection's task.
pub(crate) fn drive<M, S, E>(
    node: Node,
    socket: S,
    principal: Option<String>,
) -> impl Future<Output = ()> + Send
where
    M: WsMessage,
    E: ReadError,
    S: Stream<Item = Result<M, E>> + Sink<M> + Unpin + Send + 'static,
{
    let conn_id = node.next_conn();
    // Fields listed in the README ("Observability"); never a session name,
    // a token or a principal.
    let span = tracing::info_span!(
        "redial_server_connection",
        conn = conn_id,
        resumed = tracing::field::Empty,
        close_code = tracing::field::Empty,
    );
    let (sink, stream) = socket.split();
    serve(node, sink, stream, principal, conn_id).instrument(span)
}

async fn serve<M, S, E>(
    node: Node,
    sink: SplitSink<S, M>,
    mut stream: SplitStream<S>,
    principal: Option<String>,
    conn_id: u64,
) where
    M: WsMessage,
    E: ReadError,
    S: Stream<Item = Result<M, E>> + Sink<M> + Unpin + Send + 'static,
{
    let _live = node.live_guard();
    let inner = node.inner.clone();
    let mut writer = Writer::new(sink);
    let mailbox = Arc::new(Mailbox::default());
    let mut shutdown = inner.shutdown.subscribe();
    // Orders given before this connection opened are not for it.
    let mut control = inner.control.subscribe();
    let mut orders_seen = control.borrow_and_update().serial();
    let seed = inner.cfg.seed() ^ conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut conn = Connection::new(
        monotonic_now(),
        node.wall_clock(),
        inner.cfg.clone(),
        inner.policy.clone(),
        principal,
        seed,
    );
    let mut registered = None;
    // The channels this connection is registered for, and the core's
    // subscriptions version they reflect.
    let mut listening = BTreeSet::new();
    let mut listening_version = 0;
    let mut closing = false;
    let mut going_away_seen = false;
    let mut peer_gone = false;
    // The WebSocket layer stopped mid-message: nothing more can be read.
    let mut unreadable = false;

    if let Some((r, w)) = *shutdown.borrow_and_update() {
        conn.handle_going_away(monotonic_now(), r, w);
        going_away_seen = true;
    }
    loop {
        // Carry out everything the core asked for, in order.
        let mut batch = Vec::new();
        while let Some(action) = conn.poll_action() {
            match action {
                Action::Send(frame) => {
                    count(&inner.counters, &frame);
                    inner.meters.sent(&frame);
                    if let Frame::Welcome(w) = &frame {
                        tracing::Span::current().record("resumed", w.resumed);
                        tracing::debug!(resumed = w.resumed, "session welcomed");
                    }
                    batch.push(M::binary(frame.to_bytes()));
                }
                Action::Store(op) => {
                    // What is ready goes out before the round trip: a
                    // WELCOME must not wait for the fetch that follows it.
                    if !batch.is_empty() {
                        writer.send(Write::Frames(std::mem::take(&mut batch)));
                    }
                    // Boxed, as below: an await's state sizes the task's
                    // future even while the connection is idle.
                    let reply = Box::pin(node.execute(&op)).await;
                    if let StoreReply::Published(PublishOutcome::Applied) = reply {
                        inner
                            .counters
                            .publishes_applied
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    conn.handle_store_reply(monotonic_now(), reply);
                }
                // Awaited here, so one session's requests (and the replies
                // they send) keep their order.
                Action::Request(r) => Box::pin(node.request(r)).await,
                Action::Close { code, reason } => {
                    tracing::Span::current().record("close_code", code);
                    tracing::debug!(close_code = code, "closing");
                    if !batch.is_empty() {
                        writer.send(Write::Frames(std::mem::take(&mut batch)));
                    }
                    if !peer_gone {
                        writer.send(Write::Close(M::close(code, &reason)));
                    }
                    closing = true;
                }
                // Later actions are unknown to this runtime; none exist yet.
                #[allow(unreachable_patterns)]
                _ => {}
            }
            if registered.is_none() {
                if let Some(owner) = conn.owner() {
                    node.hold(owner.session.clone(), conn_id, &mailbox);
                    registered = Some(owner.session.clone());
                }
            }
            if registered.is_some() && conn.subscriptions_version() != listening_version {
                listening_version = conn.subscriptions_version();
                let now: BTreeSet<String> = conn.subscriptions().map(str::to_owned).collect();
                node.relisten(
                    conn_id,
                    &mailbox,
                    listening.difference(&now).map(String::as_str),
                    now.difference(&listening).map(String::as_str),
                );
                listening = now;
            }
        }
        if !batch.is_empty() {
            writer.send(Write::Frames(batch));
        }
        // Writes that finished at once, or a socket that failed.
        let (written, failed) = writer.take_written();
        if written > 0 || (failed && !peer_gone) {
            let now = monotonic_now();
            if written > 0 {
                conn.handle_written(now, written);
            }
            if failed && !peer_gone {
                peer_gone = true;
                conn.handle_closed(now);
            }
            continue;
        }
        if closing || peer_gone {
            break;
        }
        let timeout = conn.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            msg = stream.next(), if conn.wants_input() => {
                let now = monotonic_now();
                match msg.map(|m| m.map(WsMessage::classify)) {
                    Some(Ok(Incoming::Binary(b))) => conn.handle_frame(now, b),
                    Some(Ok(Incoming::Text)) => conn.handle_text(now),
                    Some(Ok(Incoming::Other)) => {}
                    // The layer read the length and stopped: the core
                    // answers as for any malformed frame.
                    Some(Err(e)) if e.too_large() => {
                        unreadable = true;
                        conn.handle_oversized(now);
                    }
                    Some(Ok(Incoming::Close)) | Some(Err(_)) | None => {
                        peer_gone = true;
                        conn.handle_closed(now);
                    }
                }
            }
            () = writer.progress(), if writer.busy() => {}
            Wake { fetch, taken_over } = mailbox.wait() => {
                let now = monotonic_now();
                if let (Some(epoch), Some(session)) = (taken_over, &registered) {
                    let owner = Owner { session: session.clone(), epoch };
                    conn.handle_notice(now, &Notice::TakenOver(owner));
                }
                if fetch {
                    conn.handle_wake(now);
                }
            }
            changed = shutdown.changed(), if !going_away_seen => {
                if changed.is_ok() {
                    if let Some((r, w)) = *shutdown.borrow_and_update() {
                        going_away_seen = true;
                        conn.handle_going_away(monotonic_now(), r, w);
                    }
                } else {
                    going_away_seen = true;
                }
            }
            Ok(()) = control.changed() => {
                let orders = control.borrow_and_update().clone();
                carry_out(&mut conn, monotonic_now(), &orders, orders_seen);
                orders_seen = orders.serial();
            }
            () = sleep_until(timeout), if timeout.is_some() => conn.handle_timeout(monotonic_now()),
        }
    }
    // Store calls after the close (the detach).
    while let Some(action) = conn.poll_action() {
        if let Action::Store(op) = action {
            let reply = node.execute(&op).await;
            conn.handle_store_reply(monotonic_now(), reply);
        }
    }
    if let Some(s) = &registered {
        node.release(s, conn_id, listening.iter().map(String::as_str));
    }
    // A peer that stopped reading leaves the write stuck on a full socket:
    // give it the linger to finish, then drop the socket.
    if tokio::time::timeout(CLOSE_LINGER, writer.finish())
        .await
        .is_err()
    {
        return;
    }
    if unreadable {
        // The rest of the oversized message is unread, so dropping the
        // socket resets it, and a reset can discard the ERROR and close
        // frame before the peer reads them: give it the linger first.
        tokio::time::sleep(CLOSE_LINGER).await;
    } else if !peer_gone {
        // Let the peer's close frame arrive so the TCP close is orderly.
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
}

/// Hands `conn` the orders newer than serial `seen`, oldest first.
fn carry_out(conn: &mut Connection, now: Instant, orders: &Orders, seen: u64) {
    let going_away = orders.going_away.as_ref().map(|o| o.0);
    let close = orders.close.as_ref().map(|o| o.0);
    let mut due: Vec<u64> = [going_away, close].into_iter().flatten().collect();
    due.retain(|&serial| serial > seen);
    due.sort_unstable();
    for serial in due {
        match (&orders.going_away, &orders.close) {
            (Some((g, r, w)), _) if *g == serial => conn.handle_going_away(now, *r, *w),
            (_, Some((c, code, reason))) if *c == serial => conn.handle_close(now, *code, reason),
            _ => {}
        }
    }
}

/// Counts what the node reports in its stats from the frames it sends.
fn count(c: &Counters, frame: &Frame) {
    let counter = match frame {
        Frame::Welcome(w) if w.resumed => &c.resumed,
        Frame::Welcome(_) => &c.created,
        Frame::Error { code, .. } if *code == error_code::MALFORMED_FRAME => &c.protocol_errors,
        Frame::Error { code, .. } if *code == error_code::SLOW_CONSUMER => &c.slow_consumers,
        _ => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
