//! A protocol with a timer of its own, for the harnesses and the model
//! test: a liveness request on a fixed period whatever the traffic, its
//! reply due within a deadline.

use std::time::{Duration, Instant};

use crate::payload::{Payload, Text};
use crate::protocol::{
    Capabilities, FrameContext, Handshake, Inbound, LinkDead, OpenContext, Outgoing, Output,
    Protocol, ProtocolError, TimerContext,
};
use crate::transport::Frame;

/// Every [`every`](Self::new) it sends the text `probe`, whatever the
/// traffic; the text `pong` within the deadline answers it, else the link
/// is dead ([`LinkDead`]). The text `wake-now` asks to be woken at once
/// (the session must not spin on it); every other message is data.
#[derive(Debug, Clone)]
pub struct Prober {
    every: Duration,
    deadline: Duration,
    /// When the next probe is due.
    next: Option<Instant>,
    /// The reply to the probe in flight is due by then.
    reply_by: Option<Instant>,
}

impl Prober {
    /// Probes every `every`; each reply due within `deadline`.
    pub fn new(every: Duration, deadline: Duration) -> Self {
        Prober {
            every,
            deadline,
            next: None,
            reply_by: None,
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
        Capabilities::default()
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
            Frame::Text(t) => out.fact(Inbound::data(Payload::text(t))),
            Frame::Binary(b) => out.fact(Inbound::data(Payload::binary(b))),
            Frame::Ping(_) | Frame::Pong(_) => {}
        }
        Ok(())
    }

    fn publish(&mut self, msg: Outgoing<'_>, out: &mut Output) {
        out.send_payload(msg.payload);
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
        self.next = None;
        self.reply_by = None;
    }
}
