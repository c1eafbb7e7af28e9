//! Outbound QoS 1 and 2 state: packet ids, stages and the order of sending,
//! kept across connections until each message is complete.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::codec::Properties;

/// What a publish carries, kept until it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    pub(super) topic: String,
    pub(super) payload: Bytes,
    pub(super) properties: Properties,
}

/// Where a message is in its exchange with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Never written.
    New,
    /// PUBLISH written, no PUBACK / PUBREC yet.
    Sent,
    /// PUBREC received, PUBREL written, no PUBCOMP yet (QoS 2).
    Released,
}

#[derive(Debug)]
struct Entry {
    msg: Message,
    packet_id: Option<u16>,
    stage: Stage,
    /// Written on the current connection (counts against the quota).
    sent_here: bool,
}

/// The broker's answer to one of our packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// PUBACK (QoS 1), or a refusal that ends the exchange.
    Ack,
    /// PUBREC (QoS 2, part 1).
    Received,
    /// PUBCOMP (QoS 2, part 3).
    Complete,
}

/// The next packet to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// PUBLISH under `packet_id`, with DUP when written before.
    Publish {
        packet_id: u16,
        dup: bool,
        msg: Message,
    },
    /// PUBREL for `packet_id`.
    Release { packet_id: u16 },
}

/// Every unfinished QoS 1 and 2 publish, by the session's seq.
///
/// Bounds: one entry per message in the session's queue (it hands each
/// over once per connection and keeps it until it is acked); packet ids
/// are held only by messages written and not complete, at most the quota
/// of one connection at a time, since messages are written in seq order
/// and the oldest keep their ids.
#[derive(Debug, Default)]
pub(super) struct OutState {
    entries: BTreeMap<u64, Entry>,
    ids: BTreeMap<u16, u64>,
    last_id: u16,
    /// The highest seq handed over.
    highest: u64,
    /// The highest seq reported complete.
    reported: u64,
    /// This connection: how many may be in flight, how many are, and what
    /// waits for a slot, in order.
    quota: u16,
    in_flight: u16,
    waiting: VecDeque<u64>,
}

impl OutState {
    /// Unfinished messages.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// A connection was accepted; at most `quota` publishes in flight on
    /// it. The session hands every unfinished message over again.
    pub(super) fn connected(&mut self, quota: u16) {
        self.quota = quota;
        self.in_flight = 0;
        self.waiting.clear();
        for e in self.entries.values_mut() {
            e.sent_here = false;
        }
    }

    /// The connection is gone.
    pub(super) fn disconnected(&mut self) {
        self.quota = 0;
        self.in_flight = 0;
        self.waiting.clear();
    }

    /// The session hands over message `seq` (again, after a reconnect):
    /// it is written when a slot is free.
    pub(super) fn publish(&mut self, seq: u64, msg: Message) {
        self.entries.entry(seq).or_insert(Entry {
            msg,
            packet_id: None,
            stage: Stage::New,
            sent_here: false,
        });
        self.highest = self.highest.max(seq);
        self.waiting.push_back(seq);
    }

    /// A packet id no unfinished message holds and `free` allows.
    pub(super) fn alloc_id(&mut self, free: impl Fn(u16) -> bool) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            if !self.ids.contains_key(&self.last_id) && free(self.last_id) {
                return Some(self.last_id);
            }
        }
        None
    }

    /// The next packet to write, while the quota allows; `free` says which
    /// packet ids others hold.
    pub(super) fn next_step(&mut self, free: impl Fn(u16) -> bool) -> Option<Step> {
        while self.in_flight < self.quota {
            let seq = *self.waiting.front()?;
            let Some(entry) = self.entries.get(&seq) else {
                self.waiting.pop_front();
                continue;
            };
            let packet_id = match entry.packet_id {
                Some(id) => id,
                None => {
                    let id = self.alloc_id(&free)?;
                    self.ids.insert(id, seq);
                    id
                }
            };
            self.waiting.pop_front();
            let entry = self.entries.get_mut(&seq)?;
            entry.packet_id = Some(packet_id);
            if entry.sent_here {
                continue;
            }
            entry.sent_here = true;
            self.in_flight += 1;
            return Some(match entry.stage {
                Stage::Released => Step::Release { packet_id },
                stage => {
                    entry.stage = Stage::Sent;
                    Step::Publish {
                        packet_id,
                        dup: stage == Stage::Sent,
                        msg: entry.msg.clone(),
                    }
                }
            });
        }
        None
    }

    /// The broker answered `packet_id`: returns true when the answer fits
    /// the message's stage (the caller writes PUBREL after a PUBREC and
    /// then writes what may follow).
    pub(super) fn on_ack(&mut self, packet_id: u16, delivery: Delivery) -> bool {
        let Some(seq) = self.ids.get(&packet_id) else {
            return false;
        };
        let Some(entry) = self.entries.get_mut(seq) else {
            return false;
        };
        match (delivery, entry.stage) {
            (Delivery::Received, Stage::Sent | Stage::Released) => {
                entry.stage = Stage::Released;
                true
            }
            (Delivery::Ack | Delivery::Complete, Stage::Sent | Stage::Released) => {
                self.complete(packet_id);
                true
            }
            _ => false,
        }
    }

    /// The message under `packet_id` is done with: its id is free again.
    pub(super) fn complete(&mut self, packet_id: u16) {
        let Some(seq) = self.ids.remove(&packet_id) else {
            return;
        };
        if let Some(entry) = self.entries.remove(&seq) {
            if entry.sent_here {
                self.in_flight = self.in_flight.saturating_sub(1);
            }
        }
    }

    /// The highest seq through which every message is complete, when it
    /// moved since the last take.
    pub(super) fn take_acked(&mut self) -> Option<u64> {
        let through = match self.entries.keys().next() {
            Some(&first) => first - 1,
            None => self.highest,
        };
        (through > self.reported).then(|| {
            self.reported = through;
            through
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u64) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::from(n.to_string()),
            properties: Properties::new(),
        }
    }

    fn steps(s: &mut OutState) -> Vec<Step> {
        std::iter::from_fn(|| s.next_step(|_| true)).collect()
    }

    #[test]
    fn the_quota_holds_later_messages_back_in_order() {
        let mut s = OutState::default();
        s.connected(2);
        for seq in 1..=3 {
            s.publish(seq, msg(seq));
        }
        let first = steps(&mut s);
        assert_eq!(first.len(), 2);
        assert!(s.on_ack(1, Delivery::Ack));
        assert_eq!(s.take_acked(), Some(1));
        let next = steps(&mut s);
        assert!(
            matches!(&next[..], [Step::Publish { packet_id: 3, dup: false, msg }] if msg.payload == "3")
        );
    }

    #[test]
    fn acks_out_of_order_report_only_the_complete_prefix() {
        let mut s = OutState::default();
        s.connected(10);
        for seq in 1..=3 {
            s.publish(seq, msg(seq));
        }
        steps(&mut s);
        assert!(s.on_ack(2, Delivery::Ack));
        assert_eq!(s.take_acked(), None);
        assert!(s.on_ack(1, Delivery::Ack));
        assert_eq!(s.take_acked(), Some(2));
        assert!(
            !s.on_ack(1, Delivery::Ack),
            "a second PUBACK changes nothing"
        );
    }

    #[test]
    fn after_a_reconnect_sent_messages_go_again_with_dup_and_released_ones_as_pubrel() {
        let mut s = OutState::default();
        s.connected(10);
        s.publish(1, msg(1));
        s.publish(2, msg(2));
        steps(&mut s);
        assert!(s.on_ack(1, Delivery::Received));
        s.disconnected();
        s.connected(10);
        s.publish(1, msg(1));
        s.publish(2, msg(2));
        let again = steps(&mut s);
        assert_eq!(again[0], Step::Release { packet_id: 1 });
        assert!(matches!(
            &again[1],
            Step::Publish {
                packet_id: 2,
                dup: true,
                ..
            }
        ));
    }

    #[test]
    fn ids_in_flight_are_never_handed_out_again() {
        let mut s = OutState::default();
        s.connected(u16::MAX);
        for seq in 1..=u64::from(u16::MAX) {
            s.publish(seq, msg(seq));
        }
        let written = steps(&mut s);
        assert_eq!(written.len(), usize::from(u16::MAX));
        s.publish(70_000, msg(70_000));
        assert!(s.next_step(|_| true).is_none(), "no id is free");
        assert!(s.on_ack(500, Delivery::Ack));
        assert!(matches!(
            s.next_step(|_| true),
            Some(Step::Publish { packet_id: 500, .. })
        ));
    }
}
