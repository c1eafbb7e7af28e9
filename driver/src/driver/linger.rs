//! The close linger: a socket we are done with says goodbye, bounded in
//! time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use futures_util::{SinkExt, StreamExt};
use tracing::debug;
use tungstenite::Message;

/// Messages read from a closing socket per wake-up.
const MAX_LINGER_READS: u32 = 64;

/// A socket being closed: what it still has to write (the close frame, if
/// ours, last) goes out and is flushed, then whatever the peer still sends
/// is read and discarded until it ends. Dropped when done or when the
/// deadline comes, whichever is first.
pub(super) struct Linger<S, D> {
    socket: S,
    /// Frames still to write, the close frame (if ours) last.
    out: VecDeque<Message>,
    flushed: bool,
    deadline: Pin<Box<D>>,
}

impl<S, D> Linger<S, D>
where
    S: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Unpin,
    D: Future<Output = ()>,
{
    /// Lingers on `socket`, writing `out`, until `deadline` at the latest.
    pub(super) fn new(socket: S, out: VecDeque<Message>, deadline: D) -> Self {
        Linger {
            socket,
            out,
            flushed: false,
            deadline: Box::pin(deadline),
        }
    }

    /// Drives the goodbye; `Ready` once the socket can be dropped. Reads at
    /// most [`MAX_LINGER_READS`] messages per call (then wakes the task to
    /// come back), so a peer that keeps talking cannot hold the task.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            debug!("closing socket timed out; dropped");
            return Poll::Ready(());
        }
        let mut reads = 0;
        let done = 'lingering: loop {
            while let Some(message) = self.out.pop_front() {
                match self.socket.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        if self.socket.start_send_unpin(message).is_err() {
                            break 'lingering true;
                        }
                        self.flushed = false;
                    }
                    Poll::Ready(Err(_)) => break 'lingering true,
                    Poll::Pending => {
                        self.out.push_front(message);
                        break 'lingering false;
                    }
                }
            }
            if !self.flushed {
                match self.socket.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => self.flushed = true,
                    Poll::Ready(Err(_)) => break true,
                    Poll::Pending => break false,
                }
            }
            match self.socket.poll_next_unpin(cx) {
                // Whatever still comes is discarded; reading it may queue a
                // reply (pong, close), so flush again.
                Poll::Ready(Some(Ok(_))) => self.flushed = false,
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
            reads += 1;
            if reads >= MAX_LINGER_READS {
                cx.waker().wake_by_ref();
                break false;
            }
        };
        if done {
            debug!("socket closed");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use super::super::memory::{wakes, MemorySocket};
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s)
    }

    #[test]
    fn writes_what_is_left_then_the_close_and_reads_until_the_peer_ends() {
        let socket = MemorySocket::default();
        let out = VecDeque::from([text("a"), text("b"), Message::Close(None)]);
        let mut linger = Linger::new(socket.clone(), out, pending());
        let (waker, _) = wakes();
        let mut cx = Context::from_waker(&waker);
        assert!(linger.poll(&mut cx).is_pending(), "the peer has not ended");
        assert_eq!(
            socket.flushed(),
            vec![text("a"), text("b"), Message::Close(None)]
        );
        socket.receive(text("late"));
        socket.end();
        assert!(linger.poll(&mut cx).is_ready());
    }

    #[test]
    fn a_socket_that_takes_nothing_is_dropped_at_the_deadline() {
        let socket = MemorySocket::default();
        socket.set_capacity(0);
        let out = VecDeque::from([Message::Close(None)]);
        let mut linger = Linger::new(socket.clone(), out, pending());
        let (waker, _) = wakes();
        let mut cx = Context::from_waker(&waker);
        assert!(linger.poll(&mut cx).is_pending());
        assert!(socket.flushed().is_empty());
        let out = VecDeque::from([Message::Close(None)]);
        let mut linger = Linger::new(socket.clone(), out, ready(()));
        assert!(linger.poll(&mut cx).is_ready(), "the deadline came");
    }

    #[test]
    fn a_talkative_peer_gets_a_bounded_number_of_reads_per_wake_up() {
        let socket = MemorySocket::default();
        for i in 0..(MAX_LINGER_READS + 10) {
            socket.receive(text(&i.to_string()));
        }
        let mut linger = Linger::new(socket.clone(), VecDeque::new(), pending());
        let (waker, count) = wakes();
        let mut cx = Context::from_waker(&waker);
        assert!(linger.poll(&mut cx).is_pending());
        assert_eq!(socket.unread(), 10);
        assert_eq!(count(), 1, "it wakes itself to read on");
        assert!(linger.poll(&mut cx).is_pending());
        assert_eq!(socket.unread(), 0);
    }

    #[test]
    fn a_failing_socket_ends_the_linger() {
        let socket = MemorySocket::default();
        socket.fail();
        let out = VecDeque::from([Message::Close(None)]);
        let mut linger = Linger::new(socket, out, pending());
        let (waker, _) = wakes();
        assert!(linger.poll(&mut Context::from_waker(&waker)).is_ready());
    }
}
