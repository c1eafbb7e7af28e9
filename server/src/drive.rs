//! The connection task both runtimes share: WebSocket messages in, store
//! calls awaited in order, notices routed in, frames out with coalesced
//! writes, all through one [`Connection`].

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use redial_core::wire::{error_code, Frame};
use tokio::sync::Notify;
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

/// The hand-off between a connection task and its writer task: writes one
/// way, counts of frames written the other.
///
/// A queue under a lock and two wake-ups rather than two channels: a
/// tokio channel allocates its first block of slots (and cache-padded
/// ends) when it is made, about 1.5 KiB per channel per connection, idle
/// or not; this holds nothing until a write is queued. Bounded as the
/// channel was: the session core's outbound window caps what is queued.
struct Outbox<M> {
    state: Mutex<OutboxState<M>>,
    /// Wakes the writer: a write queued, or the connection task gone.
    to_writer: Notify,
    /// Wakes the connection task: frames written, or the writer gone.
    to_conn: Notify,
}

struct OutboxState<M> {
    queue: VecDeque<Write<M>>,
    /// Frames written since the connection task last took the count.
    written: usize,
    conn_gone: bool,
    writer_gone: bool,
}

impl<M> Outbox<M> {
    fn new() -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                queue: VecDeque::new(),
                written: 0,
                conn_gone: false,
                writer_gone: false,
            }),
            to_writer: Notify::new(),
            to_conn: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState<M>> {
        // Nothing panics while holding it; a poisoned lock still holds
        // consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `w` for the writer (dropped if the writer is gone).
    fn send(&self, w: Write<M>) {
        let mut s = self.state();
        if !s.writer_gone {
            s.queue.push_back(w);
        }
        drop(s);
        self.to_writer.notify_one();
    }

    /// The connection task is done queueing: the writer ends once the
    /// queue is empty.
    fn close(&self) {
        self.state().conn_gone = true;
        self.to_writer.notify_one();
    }

    /// The next queued write, or `None` once the connection task is gone
    /// and everything it queued was taken.
    async fn next_write(&self) -> Option<Write<M>> {
        loop {
            let notified = self.to_writer.notified();
            {
                let mut s = self.state();
                if let Some(w) = s.queue.pop_front() {
                    if s.queue.is_empty() {
                        // An idle connection keeps no queue.
                        s.queue = VecDeque::new();
                    }
                    return Some(w);
                }
                if s.conn_gone {
                    return None;
                }
            }
            notified.await;
        }
    }

    fn written(&self, n: usize) {
        self.state().written += n;
        self.to_conn.notify_one();
    }

    fn writer_gone(&self) {
        let mut s = self.state();
        s.writer_gone = true;
        s.queue.clear();
        drop(s);
        self.to_conn.notify_one();
    }

    /// Frames written since the last call, or `None` once the writer has
    /// stopped (the socket failed) and every count was taken. Cancel-safe.
    async fn wait_written(&self) -> Option<usize> {
        loop {
            let notified = self.to_conn.notified();
            {
                let mut s = self.state();
                if s.written > 0 {
                    return Some(std::mem::take(&mut s.written));
                }
                if s.writer_gone {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// Writes what it is given, feeding every message of a batch and flushing
/// once, and reports how many frames reached the socket.
async fn writer<M, K>(mut sink: K, outbox: Arc<Outbox<M>>)
where
    M: WsMessage,
    K: Sink<M> + Unpin,
{
    write_all(&mut sink, &outbox).await;
    outbox.writer_gone();
}

async fn write_all<M, K>(sink: &mut K, outbox: &Outbox<M>)
where
    M: WsMessage,
    K: Sink<M> + Unpin,
{
    while let Some(w) = outbox.next_write().await {
        match w {
            Write::Frames(batch) => {
                let n = batch.len();
                for m in batch {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                outbox.written(n);
            }
            Write::Close(m) => {
                let _ = sink.send(m).await;
                let _ = sink.close().await;
                return;
            }
        }
    }
    // The peer closed first: its close frame's answer is queued in the
    // WebSocket layer; closing the sink writes it.
    let _ = sink.close().await;
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
) -> impl std::future::Future<Output = ()> + Send
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
    let outbox = Arc::new(Outbox::new());
    let writer = tokio::spawn(writer(sink, outbox.clone()));
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
                        outbox.send(Write::Frames(std::mem::take(&mut batch)));
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
                        outbox.send(Write::Frames(std::mem::take(&mut batch)));
                    }
                    if !peer_gone {
                        outbox.send(Write::Close(M::close(code, &reason)));
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
            outbox.send(Write::Frames(batch));
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
            n = outbox.wait_written() => match n {
                Some(n) => conn.handle_written(monotonic_now(), n),
                // The writer stopped: the socket failed.
                None => {
                    peer_gone = true;
                    conn.handle_closed(monotonic_now());
                }
            },
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
    outbox.close();
    // A peer that stopped reading leaves the writer stuck on a full socket:
    // give it the linger to finish, then drop the socket.
    let mut writer = writer;
    if tokio::time::timeout(CLOSE_LINGER, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
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
