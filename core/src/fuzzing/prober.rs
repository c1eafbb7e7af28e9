//! A protocol with a timer of its own and calls, for the harnesses and the
//! model test: a liveness request on a fixed period whatever the traffic,
//! its reply due within a deadline; calls answered by id.

use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use crate::call::CallId;
use crate::payload::{Payload, Text};
use crate::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, LinkDead, OpenContext, Outgoing, Output,
    Protocol, ProtocolError, TimerContext,
};
use crate::transport::Frame;

/// Every [`every`](Self::new) it sends the text `probe`, whatever the
/// traffic; the text `pong` within the deadline answers it, else the link
/// is dead ([`LinkDead`]). The text `wake-now` asks to be woken at once
/// (the session must not spin on it). A call goes out as `call ID REQUEST`;
/// `reply ID RESULT` answers it and `reject ID CODE` refuses it (for an id
/// not in flight on this connection both are dropped). Every other message
/// is data.
#[derive(Debug, Clone)]
pub struct Prober {
    every: Duration,
    deadline: Duration,
    /// When the next probe is due.
    next: Option<Instant>,
    /// The reply to the probe in flight is due by then.
    reply_by: Option<Instant>,
    /// Calls in flight on this connection.
    calls: BTreeSet<u64>,
}

impl Prober {
    /// Probes every `every`; each reply due within `deadline`.
    pub fn new(every: Duration, deadline: Duration) -> Self {
        Prober {
            every,
            deadline,
            next: None,
            reply_by: None,
            calls: BTreeSet::new(),
        }
    }

    fn rearm(&self, out: &mut Output) {
        match (self.next, self.reply_by) {
            (Some(n), Some(r)) => out.wake_at(n.min(r)),
            (Some(at), None) | (None, Some(at)) => out.wake_at(at),
            (None, None) => out.cancel_wake(),
        }
    }
}

impl Protocol for Prober {
    fn name(&self) -> &'static str {
        "prober"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_calls()
    }

    fn on_open(&mut self, cx: &OpenContext<'_>, out: &mut Output) -> Handshake {
        self.reply_by = None;
        self.next = cx.now.checked_add(self.every);
        self.rearm(out);
        Handshake::Ready
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        cx: &FrameContext<'_>,
        out: &mut Output,
    ) -> Result<(), ProtocolError> {
        match frame {
            Frame::Text(t) if t.as_str() == "pong" => {
                self.reply_by = None;
                self.rearm(out);
            }
            Frame::Text(t) if t.as_str() == "wake-now" => out.wake_at(cx.now),
            Frame::Text(t)
                if t.as_str().starts_with("reply ") || t.as_str().starts_with("reject ") =>
            {
                let mut words = t.as_str().splitn(3, ' ');
                let (verb, id, rest) = (words.next(), words.next(), words.next());
                let Some(id) = id.and_then(|id| id.parse::<u64>().ok()) else {
                    return Err(ProtocolError::invalid("prober", "a reply without an id"));
                };
                if !self.calls.remove(&id) {
                    return Ok(());
                }
                let call = CallId::from_raw(id);
                let rest = rest.unwrap_or("");
                out.fact(match verb {
                    Some("reply") => Inbound::Replied {
                        call,
                        result: Payload::text(rest),
                    },
                    _ => Inbound::CallRejected {
                        call,
                        code: rest.parse().unwrap_or(0),
                        message: Text::from("rejected"),
                    },
                });
            }
            Frame::Text(t) => out.fact(Inbound::data(Payload::text(t))),
            Frame::Binary(b) => out.fact(Inbound::data(Payload::binary(b))),
            Frame::Ping(_) | Frame::Pong(_) => {}
        }
        Ok(())
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        out.send_payload(msg.payload);
    }

    fn call(&mut self, id: CallId, request: &Payload, out: &mut Output) {
        self.calls.insert(id.get());
        let request = request.as_text().unwrap_or("");
        out.send(Frame::Text(Text::from(format!("call {id} {request}"))));
    }

    fn forget_call(&mut self, id: CallId) {
        self.calls.remove(&id.get());
    }

    fn on_timer(&mut self, cx: &TimerContext, out: &mut Output) -> Result<(), LinkDead> {
        if self.reply_by.is_some_and(|by| cx.now >= by) {
            return Err(LinkDead::new("probe unanswered"));
        }
        if self.next.is_some_and(|at| cx.now >= at) {
            out.send(Frame::Text(Text::from("probe")));
            // A probe still unanswered keeps its own, earlier deadline.
            if self.reply_by.is_none() {
                self.reply_by = cx.now.checked_add(self.deadline);
            }
            self.next = cx.now.checked_add(self.every);
        }
        self.rearm(out);
        Ok(())
    }

    fn on_closed(&mut self) {
        self.calls.clear();
        self.next = None;
        self.reply_by = None;
    }
}
