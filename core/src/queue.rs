//! The outbound queue: every message keeps its sequence number until the
//! protocol says it is safe to forget.

use std::collections::VecDeque;

use crate::error::SendError;
use crate::headers::Headers;
use crate::payload::{Payload, Text};
use crate::protocol::{Capabilities, InputLimits};
use crate::wire::Limits;

/// What a session refuses for good, whatever its state: a message too large
/// for the queue or a frame, or a channel the protocol cannot carry.
///
/// [`Session::send_limits`](crate::Session::send_limits) gives a copy, so
/// that code away from the session (an adapter's handle) can refuse such a
/// message up front with exactly the session's rules.
#[derive(Debug, Clone)]
pub struct SendLimits {
    protocol: &'static str,
    caps: Capabilities,
    queue_max_bytes: usize,
    input: InputLimits,
    wire: Limits,
}

impl SendLimits {
    pub(crate) fn new(
        protocol: &'static str,
        caps: Capabilities,
        queue_max_bytes: usize,
        input: InputLimits,
        wire: Limits,
    ) -> Self {
        SendLimits {
            protocol,
            caps,
            queue_max_bytes,
            input,
            wire,
        }
    }

    /// `Ok` when the session could take this message given room in its
    /// queue; otherwise the refusal it would give.
    pub fn check(&self, channel: Option<&Text>, payload: &Payload) -> Result<(), SendError> {
        let channel_len = channel.map_or(0, Text::len);
        if channel.is_none() && self.caps.channel_required {
            return Err(SendError::Unsupported {
                protocol: self.protocol,
                what: "messages without a channel",
            });
        }
        if let Some(channel) = channel {
            if !self.caps.channels {
                return Err(SendError::Unsupported {
                    protocol: self.protocol,
                    what: "channels",
                });
            }
            self.input.check_channel(channel)?;
        }
        if let Some(overhead) = self.caps.frame_overhead {
            let frame_len = payload.len() + channel_len + overhead;
            if frame_len > self.wire.max_frame_len {
                return Err(SendError::TooLarge {
                    len: frame_len,
                    max: self.wire.max_frame_len,
                });
            }
        }
        let len = payload.len() + channel_len;
        if len > self.queue_max_bytes {
            return Err(SendError::TooLarge {
                len,
                max: self.queue_max_bytes,
            });
        }
        Ok(())
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) channel: Option<Text>,
    pub(crate) payload: Payload,
    pub(crate) headers: Option<Headers>,
    /// The payload is a frame the protocol already encoded (handed over
    /// once, never written, given back): it is written as it is.
    pub(crate) encoded: bool,
}

/// Messages in sequence order: `[0, sent)` were written to the current
/// transport, `[sent, len)` wait for one; `[0, written_before)` were
/// written to an earlier transport and not acknowledged there, so writing
/// them now is a replay.
///
/// With acks (Wire) an entry leaves only when acknowledged; without (Raw) it
/// leaves when written, which is the at-most-once edge of a transport that
/// dies right after the write.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    entries: VecDeque<Entry>,
    sent: usize,
    written_before: usize,
    replayed: u64,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    next_seq: u64,
}

impl Queue {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        Queue {
            entries: VecDeque::new(),
            sent: 0,
            written_before: 0,
            replayed: 0,
            bytes: 0,
            max_messages,
            max_bytes,
            next_seq: 1,
        }
    }

    /// Queues a message and returns its sequence number.
    pub(crate) fn push(
        &mut self,
        channel: Option<Text>,
        payload: Payload,
        headers: Option<Headers>,
    ) -> Result<u64, SendError> {
        let len = payload.len()
            + channel.as_ref().map_or(0, Text::len)
            + headers.as_ref().map_or(0, Headers::byte_len);
        if len > self.max_bytes {
            return Err(SendError::TooLarge {
                len,
                max: self.max_bytes,
            });
        }
        if self.entries.len() >= self.max_messages || self.bytes + len > self.max_bytes {
            return Err(SendError::QueueFull {
                messages: self.entries.len(),
                bytes: self.bytes,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += len;
        self.entries.push_back(Entry {
            seq,
            channel,
            payload,
            headers,
            encoded: false,
        });
        Ok(seq)
    }

    /// Puts messages that left the queue but were never written back at
    /// its front, oldest first (protocols without acks). They were admitted
    /// once, so the limits do not refuse them; they keep no seq (0): Raw
    /// reports no seq after the send.
    pub(crate) fn requeue_front(&mut self, encoded: impl DoubleEndedIterator<Item = Payload>) {
        debug_assert_eq!(self.sent, 0, "ack-less queues keep nothing written");
        for payload in encoded.rev() {
            self.bytes += payload.len();
            self.entries.push_front(Entry {
                seq: 0,
                channel: None,
                payload,
                headers: None,
                encoded: true,
            });
        }
    }

    /// The next entry to write, marked as written.
    pub(crate) fn next_unsent(&mut self) -> Option<&Entry> {
        let e = self.entries.get(self.sent)?;
        if self.sent < self.written_before {
            self.replayed += 1;
        }
        self.sent += 1;
        Some(e)
    }

    /// The next entry to write, removed (protocols without acks).
    pub(crate) fn pop_unsent(&mut self) -> Option<Entry> {
        debug_assert_eq!(self.sent, 0, "ack-less queues keep nothing written");
        let e = self.entries.pop_front()?;
        self.bytes -= entry_len(&e);
        Some(e)
    }

    /// Forgets every entry up to and including `seq`; returns how many went.
    pub(crate) fn ack_through(&mut self, seq: u64) -> usize {
        let mut n = 0;
        while self.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= entry_len(&e);
                n += 1;
            }
        }
        self.sent = self.sent.saturating_sub(n);
        self.written_before = self.written_before.saturating_sub(n);
        n
    }

    /// A new transport: everything still here must be written again.
    pub(crate) fn rewind(&mut self) {
        // Two rewinds without a write in between (a connection lost before
        // its handshake completed) keep what the earlier transport wrote.
        self.written_before = self.written_before.max(self.sent);
        self.sent = 0;
    }

    /// Messages written again after a reconnect, since the queue was made.
    pub(crate) fn replayed(&self) -> u64 {
        self.replayed
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The highest sequence number handed out so far (0: none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

fn entry_len(e: &Entry) -> usize {
    e.payload.len()
        + e.channel.as_ref().map_or(0, Text::len)
        + e.headers.as_ref().map_or(0, Headers::byte_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Payload {
        Payload::text(s)
    }

    #[test]
    fn seqs_are_consecutive_and_acks_are_cumulative() {
        let mut q = Queue::new(10, 1000);
        for i in 1..=5 {
            assert_eq!(q.push(None, p("x"), None).unwrap(), i);
        }
        assert_eq!(q.next_unsent().unwrap().seq, 1);
        assert_eq!(q.next_unsent().unwrap().seq, 2);
        assert_eq!(q.ack_through(1), 1);
        assert_eq!(q.next_unsent().unwrap().seq, 3);
        q.rewind();
        assert_eq!(q.next_unsent().unwrap().seq, 2);
        assert_eq!(q.ack_through(10), 4);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.push(None, p("y"), None).unwrap(), 6);
    }

    #[test]
    fn only_what_an_earlier_transport_wrote_counts_as_replayed() {
        let mut q = Queue::new(10, 1000);
        for _ in 0..4 {
            q.push(None, p("x"), None).unwrap();
        }
        // Seqs 1-3 written, then the link drops; a second drop comes
        // before anything is written on the next one.
        for _ in 0..3 {
            q.next_unsent();
        }
        q.rewind();
        q.rewind();
        // The server had seq 1 (acked at once on resume).
        assert_eq!(q.ack_through(1), 1);
        let seqs: Vec<u64> = std::iter::from_fn(|| q.next_unsent().map(|e| e.seq)).collect();
        assert_eq!(seqs, [2, 3, 4]);
        // 2 and 3 again; 4 is written for the first time.
        assert_eq!(q.replayed(), 2);
        q.rewind();
        assert_eq!(q.ack_through(4), 3);
        assert_eq!(q.next_unsent().map(|e| e.seq), None);
        assert_eq!(q.replayed(), 2);
    }

    #[test]
    fn limits_are_errors_not_drops() {
        let mut q = Queue::new(2, 10);
        q.push(None, p("aaaa"), None).unwrap();
        q.push(None, p("bbbb"), None).unwrap();
        assert_eq!(
            q.push(None, p("c"), None),
            Err(SendError::QueueFull {
                messages: 2,
                bytes: 8
            })
        );
        let mut q = Queue::new(10, 10);
        q.push(Some(Text::from("chan")), p("aaaa"), None).unwrap();
        assert!(matches!(
            q.push(None, p("bbb"), None),
            Err(SendError::QueueFull { .. })
        ));
        assert!(matches!(
            q.push(None, p("01234567890"), None),
            Err(SendError::TooLarge { len: 11, max: 10 })
        ));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn pop_unsent_removes() {
        let mut q = Queue::new(10, 100);
        q.push(None, p("a"), None).unwrap();
        q.push(None, p("b"), None).unwrap();
        assert_eq!(q.pop_unsent().unwrap().seq, 1);
        assert_eq!(q.len(), 1);
        assert_eq!(q.bytes(), 1);
    }
}
