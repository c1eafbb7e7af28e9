//! What the session hands the transport: queued messages, calls,
//! subscriptions, heartbeats, each as an [`Action::Send`] marked for
//! [`Session::handle_unsent`].

use super::*;

impl Session {
    /// Checks a subscribe or unsubscribe before it touches the set.
    pub(super) fn subscription_input(
        &mut self,
        now: Instant,
        channel: Text,
    ) -> Result<Text, SendError> {
        self.clock(now);
        self.check_open()?;
        if !self.caps.subscriptions {
            return Err(self.unsupported("subscriptions"));
        }
        self.limits.check_key(&channel)?;
        Ok(channel)
    }

    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        channel: Option<Text>,
        headers: Option<Headers>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.clock(now);
        let header_len = match &headers {
            Some(h) => self.protocol.check_headers(h)?,
            None => 0,
        };
        self.send_limits().check(channel.as_ref(), &payload)?;
        self.protocol.check_publish(channel.as_ref(), &payload)?;
        if let Some(max) = self.server_max_message {
            let len = payload.len() + header_len;
            if len > max {
                return Err(SendError::TooLarge { len, max });
            }
        }
        self.check_open()?;
        let seq = self.queue.push(channel, payload, headers)?;
        if self.phase == Phase::Connected {
            self.flush_queue();
        }
        Ok(seq)
    }

    /// Writes every queued message the current transport has not had.
    pub(super) fn flush_queue(&mut self) {
        let Session {
            queue,
            protocol,
            out,
            caps,
            ..
        } = self;
        let caps_acked = caps.acked_delivery;
        if caps_acked {
            // Kept until acknowledged, and written again after a reconnect.
            while let Some(e) = queue.next_unsent() {
                protocol.publish(
                    Outgoing {
                        seq: e.seq,
                        channel: e.channel.as_ref(),
                        payload: &e.payload,
                        headers: e.headers.as_ref(),
                    },
                    out,
                );
            }
        }
        self.drain_frames();
        if caps_acked {
            return;
        }
        while let Some(e) = self.queue.pop_unsent() {
            if e.encoded {
                // Handed back unwritten by the last transport: as it was.
                self.hand_over(encoded_frame(&e.payload), SendKind::Message);
                continue;
            }
            self.protocol.publish(
                Outgoing {
                    seq: e.seq,
                    channel: e.channel.as_ref(),
                    payload: &e.payload,
                    headers: e.headers.as_ref(),
                },
                &mut self.out,
            );
            while let Some(f) = self.out.pop_frame() {
                self.hand_over(f, SendKind::Message);
            }
        }
        self.take_wake();
    }

    /// Turns the frames the protocol wrote into send actions, in order,
    /// and takes its timer request.
    pub(super) fn drain_frames(&mut self) {
        while let Some(f) = self.out.pop_frame() {
            self.hand_over(f, SendKind::Control);
        }
        self.take_wake();
    }

    /// Puts the protocol's timer request in the table, while a transport is
    /// open; never less than 1 ms ahead, so no request can make
    /// `handle_timeout` fire it again and again at one instant.
    pub(super) fn take_wake(&mut self) {
        let Some(request) = self.out.take_wake() else {
            return;
        };
        match request {
            Some(at) if matches!(self.phase, Phase::Handshaking | Phase::Connected) => {
                let now = self.now.unwrap_or(at);
                let soonest = deadline(now, Duration::from_millis(1));
                self.timers.set(Timer::Protocol, at.max(soonest));
            }
            _ => self.timers.stop(Timer::Protocol),
        }
    }

    /// One [`Action::Send`], marked for [`handle_unsent`](Self::handle_unsent).
    pub(super) fn hand_over(&mut self, frame: Frame, kind: SendKind) {
        self.actions.push_back(Action::Send(frame, kind));
    }

    /// Sends every call the current transport has not had, in id order.
    pub(super) fn send_calls(&mut self) {
        for (id, request) in self.calls.take_unsent() {
            self.protocol.call(id, &request, &mut self.out);
        }
        self.drain_frames();
    }

    /// The call timer at the earliest call deadline.
    pub(super) fn arm_calls(&mut self) {
        match self.calls.next_deadline() {
            Some(at) => self.timers.set(Timer::Call, at),
            None => self.timers.stop(Timer::Call),
        }
    }

    /// Call `id` ended with `result`, if the session still keeps it.
    pub(super) fn call_done(&mut self, id: CallId, result: Result<Payload, CallError>) {
        if self.calls.finish(id).is_some() {
            self.events.push_back(Event::CallDone { id, result });
            self.arm_calls();
        }
    }

    pub(super) fn probe(&mut self, now: Instant) {
        let Some(k) = &mut self.keepalive else { return };
        let (payload, deadline) = k.probe(now);
        self.send_heartbeat(payload);
        if !self.timers.is_set(Timer::PongDeadline) {
            self.timers.set(Timer::PongDeadline, deadline);
        }
    }

    /// The protocol's own heartbeat when it has one, else a WebSocket ping
    /// with `payload`. The protocol says which inbound messages answer it.
    pub(super) fn send_heartbeat(&mut self, payload: bytes::Bytes) {
        if !self.protocol.heartbeat(&mut self.out) {
            self.out.send(Frame::Ping(payload));
        }
        self.drain_frames();
    }
}

/// A message handed back by [`Session::handle_unsent`], as it was written.
fn encoded_frame(payload: &Payload) -> Frame {
    match payload.text_value() {
        Some(text) => Frame::Text(text),
        None => Frame::Binary(payload.bytes().clone()),
    }
}
