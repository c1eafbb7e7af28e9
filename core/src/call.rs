//! Calls: request/response over the reconnecting link, for protocols with
//! [`Capabilities::calls`](crate::protocol::Capabilities::calls).
//!
//! The session gives every call a [`CallId`], keeps it (bounded by the
//! config's `max_calls`) until one [`Event::CallDone`](crate::Event::CallDone)
//! says how it ended, and decides what a dropped link means for it: a call
//! in flight fails with [`CallError::ConnectionLost`] unless it was marked
//! [`repeatable`](CallOptions::repeatable), in which case it is sent once
//! more, on the next connection, after the resubscriptions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::SendError;
use crate::payload::{Payload, Text};

/// A call's id, unique within its session (counted from 1).
///
/// A protocol turns it into the request's id on the wire in its own id
/// space, so that the application's calls never collide with the requests
/// the protocol makes for itself (subscriptions, liveness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(u64);

impl CallId {
    /// The id numbered `n`: for a protocol reading back the id it put on
    /// the wire (the session ignores ids it did not give).
    pub fn from_raw(n: u64) -> Self {
        CallId(n)
    }

    /// The number behind the id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a call may be treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// Safe to send twice (a read such as `eth_blockNumber`): a call in
    /// flight when the link drops is sent once more on the next
    /// connection instead of failing with [`CallError::ConnectionLost`].
    /// Leave it off for anything with an effect (a transfer, an order): such
    /// a call reaches the server at most once.
    pub repeatable: bool,
    /// How long the caller waits for the reply, counted from the call,
    /// waiting for a connection included; `None`: the config's
    /// `call_timeout`.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Not repeatable, the config's timeout.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Marks the call safe to send twice (see [`repeatable`](Self::repeatable)).
    pub fn repeatable(mut self, repeatable: bool) -> Self {
        self.repeatable = repeatable;
        self
    }

    /// Waits at most `timeout` for the reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Why a call has no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The session did not take the call (no calls in this protocol, too
    /// many in flight, closing, ...). Only from the adapters' handle: the
    /// session answers [`Session::handle_call`](crate::Session::handle_call)
    /// with the [`SendError`] itself.
    #[error("call refused: {0}")]
    Refused(#[from] SendError),
    /// No reply within the call's timeout. A call that was sent may still
    /// have reached the server.
    #[error("no reply in time")]
    Timeout,
    /// The server answered with an error.
    #[error("rejected ({code}): {message}")]
    Rejected {
        /// The server's code (JSON-RPC's are negative).
        code: i64,
        /// The server's message.
        message: Text,
    },
    /// The link dropped while the call was in flight and it was not
    /// [`repeatable`](CallOptions::repeatable) (or it dropped again after
    /// the one repeat): it may or may not have reached the server.
    #[error("connection lost with the call in flight")]
    ConnectionLost,
    /// The session closed before the call was answered.
    #[error("session closed")]
    Closed,
}

/// One call the session keeps.
#[derive(Debug, Clone)]
struct Pending {
    request: Payload,
    repeatable: bool,
    deadline: Instant,
    /// Sent on the current transport.
    in_flight: bool,
    /// Times sent, over every transport.
    sends: u8,
}

/// The calls the session keeps, in id order: waiting for a transport or in
/// flight on the current one.
#[derive(Debug, Clone)]
pub(crate) struct Calls {
    pending: BTreeMap<CallId, Pending>,
    next: u64,
    max: usize,
}

/// How a dropped link ended a call.
pub(crate) type Ended = (CallId, Result<Payload, CallError>);

impl Calls {
    pub(crate) fn new(max: usize) -> Self {
        Calls {
            pending: BTreeMap::new(),
            next: 1,
            max,
        }
    }

    /// Takes a call, not yet sent.
    pub(crate) fn push(
        &mut self,
        request: Payload,
        repeatable: bool,
        deadline: Instant,
    ) -> Result<CallId, SendError> {
        if self.pending.len() >= self.max {
            return Err(SendError::TooManyCalls { max: self.max });
        }
        let id = CallId(self.next);
        self.next += 1;
        self.pending.insert(
            id,
            Pending {
                request,
                repeatable,
                deadline,
                in_flight: false,
                sends: 0,
            },
        );
        Ok(id)
    }

    /// The calls not yet sent on the current transport, marked sent, in id
    /// order.
    pub(crate) fn take_unsent(&mut self) -> Vec<(CallId, Payload)> {
        self.pending
            .iter_mut()
            .filter(|(_, p)| !p.in_flight)
            .map(|(id, p)| {
                p.in_flight = true;
                p.sends = p.sends.saturating_add(1);
                (*id, p.request.clone())
            })
            .collect()
    }

    /// The transport is gone: a call in flight fails, unless repeatable
    /// and sent only once, which then waits for the next transport.
    pub(crate) fn on_lost(&mut self) -> Vec<Ended> {
        let mut ended = Vec::new();
        self.pending.retain(|id, p| {
            if !p.in_flight {
                return true;
            }
            p.in_flight = false;
            let again = p.repeatable && p.sends < 2;
            if !again {
                ended.push((*id, Err(CallError::ConnectionLost)));
            }
            again
        });
        ended
    }

    /// Ends call `id` (a reply, a rejection); `None` when the session
    /// does not know it (answered, timed out, never made).
    pub(crate) fn finish(&mut self, id: CallId) -> Option<()> {
        self.pending.remove(&id).map(drop)
    }

    /// The calls whose deadline is at or before `now`, removed, with
    /// whether each was in flight.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(CallId, bool)> {
        let mut expired = Vec::new();
        self.pending.retain(|id, p| {
            let due = p.deadline <= now;
            if due {
                expired.push((*id, p.in_flight));
            }
            !due
        });
        expired
    }

    /// Every call, removed: the session is closed.
    pub(crate) fn drain(&mut self) -> Vec<CallId> {
        std::mem::take(&mut self.pending).into_keys().collect()
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_fails_calls_in_flight_except_a_repeatable_ones_first_send() {
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        let mut calls = Calls::new(4);
        let once = calls.push(Payload::text("a"), false, later).unwrap();
        let twice = calls.push(Payload::text("b"), true, later).unwrap();
        assert_eq!(calls.take_unsent().len(), 2);
        let waiting = calls.push(Payload::text("c"), false, later).unwrap();
        assert_eq!(
            calls.on_lost(),
            vec![(once, Err(CallError::ConnectionLost))]
        );
        let resent: Vec<CallId> = calls.take_unsent().into_iter().map(|(id, _)| id).collect();
        assert_eq!(resent, [twice, waiting], "in id order");
        // The repeat was the one repeat: a second drop fails it too.
        let ended: Vec<CallId> = calls.on_lost().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ended, [twice, waiting]);
        assert_eq!(calls.len(), 0);
    }

    #[test]
    fn the_bound_counts_waiting_and_in_flight_calls() {
        let now = Instant::now();
        let mut calls = Calls::new(2);
        calls.push(Payload::text("a"), false, now).unwrap();
        calls.take_unsent();
        calls.push(Payload::text("b"), false, now).unwrap();
        assert_eq!(
            calls.push(Payload::text("c"), false, now),
            Err(SendError::TooManyCalls { max: 2 })
        );
        assert_eq!(calls.expire(now).len(), 2);
        assert!(calls.push(Payload::text("c"), false, now).is_ok());
    }
}
