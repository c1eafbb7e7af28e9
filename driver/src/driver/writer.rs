//! The writer: the frames the session asked for, on their way into the
//! socket, batched so that one flush carries every message handed over in
//! one turn.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures_sink::Sink;
use futures_util::SinkExt;
use redial_core::SendKind;
use tungstenite::Message;

/// Frames handed to the socket before a flush is no longer put off for
/// more (see [`Writer::poll_write`]).
const MAX_UNFLUSHED: u32 = 256;

/// The outbox and the flush.
///
/// Every frame keeps the [`SendKind`] the session gave it until the socket
/// takes it, so what the socket never took goes back to the session frame
/// by frame ([`take_unsent`](Self::take_unsent)), whatever the mix of
/// messages and control frames.
#[derive(Default)]
pub(super) struct Writer {
    /// Frames the socket has not taken yet, oldest first.
    outbox: VecDeque<(Message, SendKind)>,
    needs_flush: bool,
    /// A poke was taken since the last write: its sender may hand over the
    /// next message as soon as it runs.
    took_poke: bool,
    /// The flush waits until this poll of the task ends.
    flush_deferred: bool,
    /// A socket message was taken since the socket last had nothing more
    /// to give: what the session answers (acknowledgements, pongs) waits
    /// for the answers to the messages the socket already holds, and all
    /// go out with one flush once it runs dry
    /// ([`stop_reading`](Self::stop_reading)).
    reading: bool,
    /// Frames handed to the socket since the last flush.
    unflushed: u32,
}

/// What one [`Writer::poll_write`] did.
#[derive(Debug)]
pub(super) enum Wrote {
    /// The socket failed; the caller drops it.
    Failed(tungstenite::Error),
    Done {
        /// The outbox had frames and is now empty.
        drained: bool,
        /// Frames are left: the socket answered `Pending`.
        full: bool,
        /// The flush was put off for a batch: the caller takes the pokes
        /// already waiting before it writes again.
        batch: bool,
    },
}

impl Writer {
    /// Queues `message` for the socket.
    pub(super) fn push(&mut self, message: Message, kind: SendKind) {
        self.outbox.push_back((message, kind));
    }

    /// Whether every frame was handed to the socket.
    pub(super) fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// The socket queued a frame of its own (tungstenite's pong): the next
    /// write flushes it.
    pub(super) fn flush_needed(&mut self) {
        self.needs_flush = true;
    }

    /// A handle just called into the session.
    pub(super) fn took_poke(&mut self) {
        self.took_poke = true;
    }

    /// The task's poll ends (it yields): a flush put off waits no longer.
    pub(super) fn poll_ended(&mut self) {
        self.flush_deferred = false;
    }

    /// The socket handed over a message; more may be buffered behind it.
    pub(super) fn took_message(&mut self) {
        self.reading = true;
    }

    /// The socket has nothing more buffered. True when a flush was held
    /// for it: the caller writes again before the task yields, so that
    /// hold never outlives the read burst.
    pub(super) fn stop_reading(&mut self) -> bool {
        std::mem::take(&mut self.reading) && self.needs_flush
    }

    /// Takes the frames the socket never took, oldest first, each with its
    /// kind, and forgets the socket's flush state (a new socket or none
    /// follows).
    pub(super) fn take_unsent(&mut self) -> VecDeque<(Message, SendKind)> {
        let unsent = std::mem::take(&mut self.outbox);
        self.needs_flush = false;
        self.reading = false;
        self.unflushed = 0;
        unsent
    }

    /// Moves frames from the outbox into `socket` and flushes, unless the
    /// flush is put off for a batch.
    ///
    /// While the socket is being read ([`took_message`](Self::took_message)
    /// until [`stop_reading`](Self::stop_reading)), the flush waits (at
    /// most [`MAX_UNFLUSHED`] frames): a peer that sent a burst gets its
    /// answers (MQTT's PUBACKs, say) in one TCP segment, not one each.
    ///
    /// Otherwise a flush is put off for one turn of the executor, so that messages
    /// other tasks are about to hand over go out with it: one flush (and
    /// one TCP segment, with `TCP_NODELAY`) per batch, not per message.
    /// Only right after a poke was taken (a sender that just got its
    /// answer often has the next message ready), at most [`MAX_UNFLUSHED`]
    /// frames, and never twice in a row without a new poke: a lone message
    /// waits one turn. Until the task's poll ends
    /// ([`poll_ended`](Self::poll_ended)) nothing is flushed (socket input
    /// handled meanwhile does not cut the batch short); the task wakes
    /// itself whenever it holds a flush, and the next poll looks at pokes
    /// before it writes, so the batch grows while each turn brings a
    /// message and is flushed at the first turn that brings none.
    pub(super) fn poll_write<S>(&mut self, socket: &mut S, cx: &mut Context<'_>) -> Wrote
    where
        S: Sink<Message, Error = tungstenite::Error> + Unpin,
    {
        let had_frames = !self.outbox.is_empty();
        while !self.outbox.is_empty() {
            match socket.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some((message, _)) = self.outbox.pop_front() {
                        if let Err(e) = socket.start_send_unpin(message) {
                            return Wrote::Failed(e);
                        }
                        self.needs_flush = true;
                        self.unflushed = self.unflushed.saturating_add(1);
                    }
                }
                Poll::Ready(Err(e)) => return Wrote::Failed(e),
                Poll::Pending => break,
            }
        }
        let mut batch = false;
        let hold = self.needs_flush
            && self.unflushed < MAX_UNFLUSHED
            && (self.reading || self.flush_deferred || {
                batch = self.defer_flush();
                batch
            });
        // A hold for reading ends before the task yields (`stop_reading`);
        // one for a batch ends after, so the task must come back.
        if hold && !self.reading {
            // Whatever made this poll end (even an event waiting for room
            // in `drain`), the task comes back to flush: no flush is left
            // waiting for a wake-up that would never come.
            cx.waker().wake_by_ref();
        }
        if self.needs_flush && !hold {
            match socket.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    self.unflushed = 0;
                }
                Poll::Ready(Err(e)) => return Wrote::Failed(e),
                Poll::Pending => {}
            }
        }
        Wrote::Done {
            drained: had_frames && self.outbox.is_empty(),
            // Left with frames only when the socket said `Pending`.
            full: !self.outbox.is_empty(),
            batch,
        }
    }

    fn defer_flush(&mut self) -> bool {
        if !std::mem::take(&mut self.took_poke) {
            return false;
        }
        self.flush_deferred = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::{wakes, MemorySocket};
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s)
    }

    fn done(w: Wrote) -> (bool, bool, bool) {
        match w {
            Wrote::Done {
                drained,
                full,
                batch,
            } => (drained, full, batch),
            Wrote::Failed(e) => panic!("socket failed: {e}"),
        }
    }

    #[test]
    fn a_lone_frame_is_written_and_flushed_at_once() {
        let mut socket = MemorySocket::default();
        let mut w = Writer::default();
        let (waker, woken) = wakes();
        let mut cx = Context::from_waker(&waker);
        w.push(text("a"), SendKind::Message);
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (true, false, false)
        );
        assert_eq!(socket.flushed(), vec![text("a")]);
        assert_eq!(woken(), 0);
    }

    #[test]
    fn after_a_poke_the_flush_waits_for_the_batch_then_goes_once() {
        let mut socket = MemorySocket::default();
        let mut w = Writer::default();
        let (waker, woken) = wakes();
        let mut cx = Context::from_waker(&waker);
        w.took_poke();
        w.push(text("a"), SendKind::Message);
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (true, false, true)
        );
        assert_eq!(socket.unflushed(), 1, "held for the batch");
        assert_eq!(woken(), 1, "the task comes back to flush");
        // More in the same poll of the task: still held.
        w.took_poke();
        w.push(text("b"), SendKind::Message);
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (true, false, false)
        );
        assert_eq!(socket.unflushed(), 2);
        // The task yielded: the second poke holds the flush one turn more.
        w.poll_ended();
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (false, false, true)
        );
        assert_eq!(socket.unflushed(), 2);
        // A turn with no new poke: one flush for both.
        w.poll_ended();
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (false, false, false)
        );
        assert_eq!(socket.flushed(), vec![text("a"), text("b")]);
        assert_eq!(socket.flushes(), 1);
    }

    #[test]
    fn answers_to_a_read_burst_go_out_with_one_flush_when_the_socket_runs_dry() {
        let mut socket = MemorySocket::default();
        let mut w = Writer::default();
        let (waker, woken) = wakes();
        let mut cx = Context::from_waker(&waker);
        for ack in ["ack1", "ack2", "ack3"] {
            w.took_message();
            w.push(text(ack), SendKind::Control);
            assert_eq!(
                done(w.poll_write(&mut socket, &mut cx)),
                (true, false, false)
            );
        }
        assert_eq!(socket.unflushed(), 3, "held while the socket has more");
        assert_eq!(socket.flushes(), 0);
        assert_eq!(woken(), 0, "ended by stop_reading, not by a wake");
        assert!(w.stop_reading(), "a flush was held");
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (false, false, false)
        );
        assert_eq!(
            socket.flushed(),
            vec![text("ack1"), text("ack2"), text("ack3")]
        );
        assert_eq!(socket.flushes(), 1);
        assert!(!w.stop_reading(), "nothing held any more");
    }

    #[test]
    fn a_read_burst_holds_at_most_max_unflushed_frames() {
        let mut socket = MemorySocket::default();
        let mut w = Writer::default();
        let (waker, _) = wakes();
        let mut cx = Context::from_waker(&waker);
        for i in 0..MAX_UNFLUSHED {
            w.took_message();
            w.push(text(&i.to_string()), SendKind::Control);
            done(w.poll_write(&mut socket, &mut cx));
        }
        assert_eq!(socket.flushes(), 1, "flushed at the bound");
        assert_eq!(socket.unflushed(), 0);
    }

    #[test]
    fn a_full_socket_keeps_the_rest_with_their_kinds_for_the_hand_back() {
        let mut socket = MemorySocket::default();
        socket.set_capacity(1);
        let mut w = Writer::default();
        let (waker, _) = wakes();
        let mut cx = Context::from_waker(&waker);
        w.push(text("a"), SendKind::Message);
        w.push(text("ping"), SendKind::Control);
        w.push(text("b"), SendKind::Message);
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (false, true, false)
        );
        assert_eq!(socket.flushed(), vec![text("a")]);
        let unsent: Vec<_> = w.take_unsent().into_iter().collect();
        assert_eq!(
            unsent,
            vec![
                (text("ping"), SendKind::Control),
                (text("b"), SendKind::Message)
            ]
        );
        assert!(w.is_empty());
        socket.unlimited();
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (false, false, false)
        );
        assert_eq!(socket.flushes(), 1, "nothing left to flush");
    }

    /// More alternating runs of messages and control frames than a bounded
    /// record of runs could tell apart: each frame keeps its own kind.
    #[test]
    fn every_frame_keeps_its_kind_across_many_alternating_runs() {
        let mut socket = MemorySocket::default();
        socket.set_capacity(0);
        let mut w = Writer::default();
        let (waker, _) = wakes();
        let mut cx = Context::from_waker(&waker);
        let frames: Vec<(Message, SendKind)> = (0..200)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    SendKind::Message
                } else {
                    SendKind::Control
                };
                (text(&i.to_string()), kind)
            })
            .collect();
        for (m, k) in frames.clone() {
            w.push(m, k);
        }
        assert_eq!(
            done(w.poll_write(&mut socket, &mut cx)),
            (false, true, false)
        );
        assert_eq!(w.take_unsent().into_iter().collect::<Vec<_>>(), frames);
    }

    #[test]
    fn a_failing_socket_is_reported() {
        let mut socket = MemorySocket::default();
        socket.fail();
        let mut w = Writer::default();
        let (waker, _) = wakes();
        w.push(text("a"), SendKind::Message);
        assert!(matches!(
            w.poll_write(&mut socket, &mut Context::from_waker(&waker)),
            Wrote::Failed(_)
        ));
    }
}
