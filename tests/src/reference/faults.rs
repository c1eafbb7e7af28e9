//! The fault switches, as decorators over redial-server's extension points:
//! the authorization hook (scripted refusals), the [`Policy`] (denied
//! channels), the node clock (a settable offset) and a socket wrapper
//! (`close_after`, stalls, the abrupt drop of a dropped harness, and the
//! counters that can only be read off the wire).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{Sink, Stream};
use redial_core::wire::{self, error_code, Frame, Limits};
use redial_server::tokio::{Message, WebSocketStream, WsError};
use redial_server::{Peer, Policy, Refusal, Rejection};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{lock, Reject};

/// Faults and knobs that can change at runtime, and the counters the
/// library does not keep. Shared by every node the harness builds.
pub(crate) struct Faults {
    pub reject: Mutex<Option<Reject>>,
    pub admission_per_sec: Mutex<Option<u32>>,
    pub close_after: Mutex<Option<u64>>,
    pub deny_channels: Mutex<Vec<String>>,
    pub stalled: watch::Sender<bool>,
    /// Set when the harness is dropped: every socket goes silent.
    pub dead: AtomicBool,
    clock_offset_ms: AtomicU64,
    base_ms: u64,
    base: tokio::time::Instant,
    pub connections: AtomicU64,
    pub live_connections: AtomicUsize,
    pub sessions_created: AtomicU64,
    pub sessions_resumed: AtomicU64,
    pub tokens_rejected: AtomicU64,
    pub hello_errors: AtomicU64,
    pub restarts: AtomicU64,
    /// PUBLISHes at or below the session's high-water mark, per session
    /// name: read off the wire, since the library acks most of them
    /// without asking the store.
    pub duplicates: Mutex<HashMap<String, u64>>,
    /// Poked after every counted change, for `ServerControl::wait_for`.
    pub changed: watch::Sender<()>,
}

impl Faults {
    /// Must be called inside a tokio runtime (the clock reads tokio's).
    pub fn new(admission_per_sec: Option<u32>, deny_channels: Vec<String>) -> Self {
        let base_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Faults {
            reject: Mutex::new(None),
            admission_per_sec: Mutex::new(admission_per_sec),
            close_after: Mutex::new(None),
            deny_channels: Mutex::new(deny_channels),
            stalled: watch::Sender::new(false),
            dead: AtomicBool::new(false),
            clock_offset_ms: AtomicU64::new(0),
            base_ms,
            base: tokio::time::Instant::now(),
            connections: AtomicU64::new(0),
            live_connections: AtomicUsize::new(0),
            sessions_created: AtomicU64::new(0),
            sessions_resumed: AtomicU64::new(0),
            tokens_rejected: AtomicU64::new(0),
            hello_errors: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            duplicates: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(()),
        }
    }

    /// The node clock (Unix ms): tokio's clock, so a paused test clock
    /// drives it, shifted by `advance_clock`.
    pub fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.base);
        self.base_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .saturating_add(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn poke(&self) {
        self.changed.send_replace(());
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.poke();
    }

    /// The authorization hook's answer: the scripted refusal, if any.
    pub fn authorize(&self) -> Result<Option<String>, Rejection> {
        match *lock(&self.reject) {
            None => Ok(None),
            Some(r) => Err(Rejection {
                status: r.status,
                retry_after_secs: r
                    .retry_after
                    .map(|d| u64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u64::MAX)),
                reason: "rejected by the test".into(),
            }),
        }
    }
}

/// The [`Policy`] for `deny_channels`: SUBSCRIBE to a listed channel is
/// refused with `unauthorized`.
pub(crate) struct DenyChannels(pub std::sync::Arc<Faults>);

impl Policy for DenyChannels {
    fn subscribe(&self, _: Peer<'_>, channel: &str) -> Result<(), Refusal> {
        if lock(&self.0.deny_channels).iter().any(|d| d == channel) {
            return Err(Refusal::new(error_code::UNAUTHORIZED, "forbidden"));
        }
        Ok(())
    }
}

type Resume = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A served socket with the fault switches applied.
pub(crate) struct FaultSocket {
    inner: WebSocketStream<TcpStream>,
    faults: std::sync::Arc<Faults>,
    /// Binary frames read, HELLO included.
    frames_in: u64,
    /// `close_after` fired: reads end, writes are swallowed.
    tripped: bool,
    /// Whether HELLO carried a resume token, once it was read.
    hello_token: bool,
    /// The first frame out (WELCOME or ERROR) was seen.
    answered: bool,
    /// The session's name and its highest PUBLISH seq seen, from WELCOME on.
    session: Option<(String, u64)>,
    read_resume: Option<Resume>,
    write_resume: Option<Resume>,
}

impl FaultSocket {
    pub fn new(inner: WebSocketStream<TcpStream>, faults: std::sync::Arc<Faults>) -> Self {
        FaultSocket {
            inner,
            faults,
            frames_in: 0,
            tripped: false,
            hello_token: false,
            answered: false,
            session: None,
            read_resume: None,
            write_resume: None,
        }
    }

    fn silent(&self) -> bool {
        self.tripped || self.faults.dead.load(Ordering::Relaxed)
    }

    /// Counts what the first frame out says about the HELLO.
    fn on_send(&mut self, item: &Message) {
        let Message::Binary(b) = item else { return };
        if self.answered {
            return;
        }
        self.answered = true;
        let f = &self.faults;
        match wire::decode(b.clone(), &Limits::default()) {
            Ok(Frame::Welcome(w)) => {
                self.session = Some((w.name.as_str().to_owned(), w.last_client_seq));
                if w.resumed {
                    f.count(&f.sessions_resumed);
                } else {
                    if self.hello_token {
                        f.tokens_rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    f.count(&f.sessions_created);
                }
            }
            Ok(Frame::Error { .. }) => f.count(&f.hello_errors),
            _ => {}
        }
    }

    fn on_read(&mut self, b: &bytes::Bytes) {
        self.frames_in += 1;
        if self.frames_in == 1 {
            self.hello_token = matches!(
                wire::decode(b.clone(), &Limits::default()),
                Ok(Frame::Hello(h)) if h.resume_token.is_some()
            );
            return;
        }
        if let Some((name, high)) = &mut self.session {
            if let Ok(Frame::Publish { seq, .. }) = wire::decode(b.clone(), &Limits::default()) {
                if seq <= *high {
                    *lock(&self.faults.duplicates)
                        .entry(name.clone())
                        .or_default() += 1;
                    self.faults.poke();
                } else {
                    *high = seq;
                }
            }
        }
        // The n-th frame after HELLO (frames_in counts HELLO too): as if the
        // connection died right after it was processed, before any answer
        // to it was written.
        if lock(&self.faults.close_after).is_some_and(|n| self.frames_in > n) {
            self.tripped = true;
        }
    }
}

/// Whether the stall switch holds this direction; if so, the task is woken
/// when it is released.
fn held(slot: &mut Option<Resume>, stalled: &watch::Sender<bool>, cx: &mut Context<'_>) -> bool {
    if !*stalled.borrow() {
        *slot = None;
        return false;
    }
    let resume = slot.get_or_insert_with(|| {
        let mut rx = stalled.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|s| !*s).await;
        })
    });
    match resume.as_mut().poll(cx) {
        Poll::Ready(()) => {
            *slot = None;
            false
        }
        Poll::Pending => true,
    }
}

impl Stream for FaultSocket {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.silent() {
            return Poll::Ready(None);
        }
        // Not reading also means tungstenite answers no ping.
        if held(&mut this.read_resume, &this.faults.stalled, cx) {
            return Poll::Pending;
        }
        let item = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(Message::Binary(b)))) = &item {
            this.on_read(b);
        }
        item
    }
}

impl Sink<Message> for FaultSocket {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.silent() {
            return Poll::Ready(Ok(()));
        }
        if held(&mut this.write_resume, &this.faults.stalled, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let this = self.get_mut();
        this.on_send(&item);
        if this.silent() {
            return Ok(());
        }
        Pin::new(&mut this.inner).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.silent() {
            return Poll::Ready(Ok(()));
        }
        if held(&mut this.write_resume, &this.faults.stalled, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let this = self.get_mut();
        if this.silent() {
            return Poll::Ready(Ok(()));
        }
        if held(&mut this.write_resume, &this.faults.stalled, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_close(cx)
    }
}
