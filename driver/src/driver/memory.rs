//! An in-memory WebSocket for the driver's unit tests: what it was sent,
//! what it flushed, and inbound messages the test puts in.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use futures_sink::Sink;
use tungstenite::Message;

#[derive(Default)]
struct State {
    inbound: VecDeque<Message>,
    ended: bool,
    failed: bool,
    /// Frames it takes before `poll_ready` answers `Pending`; `None`: any.
    capacity: Option<usize>,
    /// Started, not flushed yet.
    written: Vec<Message>,
    flushed: Vec<Message>,
    flushes: usize,
}

/// One socket; clones share it, so a test keeps a clone to look inside.
#[derive(Clone, Default)]
pub(super) struct MemorySocket(Arc<Mutex<State>>);

impl MemorySocket {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer sends `message`.
    pub(super) fn receive(&self, message: Message) {
        self.state().inbound.push_back(message);
    }

    /// The peer ends the stream after what it sent.
    pub(super) fn end(&self) {
        self.state().ended = true;
    }

    /// Every operation fails from now on.
    pub(super) fn fail(&self) {
        self.state().failed = true;
    }

    /// Takes `frames` more frames, then answers `Pending` to `poll_ready`.
    pub(super) fn set_capacity(&self, frames: usize) {
        self.state().capacity = Some(frames);
    }

    /// Takes any number of frames again.
    pub(super) fn unlimited(&self) {
        self.state().capacity = None;
    }

    /// What reached the peer (sent and flushed), in order.
    pub(super) fn flushed(&self) -> Vec<Message> {
        self.state().flushed.clone()
    }

    /// Sent but not flushed yet.
    pub(super) fn unflushed(&self) -> usize {
        self.state().written.len()
    }

    /// How many flushes wrote something.
    pub(super) fn flushes(&self) -> usize {
        self.state().flushes
    }

    /// Inbound messages not read yet.
    pub(super) fn unread(&self) -> usize {
        self.state().inbound.len()
    }
}

fn closed() -> tungstenite::Error {
    tungstenite::Error::ConnectionClosed
}

impl Sink<Message> for MemorySocket {
    type Error = tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let s = self.state();
        if s.failed {
            Poll::Ready(Err(closed()))
        } else if s.capacity == Some(0) {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        let mut s = self.state();
        if s.failed {
            return Err(closed());
        }
        if let Some(c) = &mut s.capacity {
            *c = c.saturating_sub(1);
        }
        s.written.push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut s = self.state();
        if s.failed {
            return Poll::Ready(Err(closed()));
        }
        if !s.written.is_empty() {
            s.flushes += 1;
            let written = std::mem::take(&mut s.written);
            s.flushed.extend(written);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_flush(cx)
    }
}

impl Stream for MemorySocket {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.state();
        if s.failed {
            return Poll::Ready(Some(Err(closed())));
        }
        match s.inbound.pop_front() {
            Some(m) => Poll::Ready(Some(Ok(m))),
            None if s.ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker and how often it was woken.
pub(super) fn wakes() -> (Waker, impl Fn() -> usize) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    (waker, move || count.0.load(Ordering::SeqCst))
}
