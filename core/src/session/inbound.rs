//! What the session does with what the protocol found in inbound frames:
//! the handshake reply, data, acknowledgements, call replies, subscription
//! news.

use super::*;

impl Session {
    /// Acts on the facts the protocol reported, in order.
    pub(super) fn take_facts(&mut self, now: Instant) {
        if let Some(data) = self.out.take_lone_data() {
            // The usual message: one data fact, nothing else.
            self.on_data(now, data);
        }
        while let Some(fact) = self.out.pop_fact() {
            if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
                // An earlier fact ended the transport: the rest of what it
                // carried is moot.
                self.out.clear_facts();
                break;
            }
            self.on_fact(now, fact);
        }
    }

    /// Application data the protocol found in a message.
    pub(super) fn on_data(&mut self, now: Instant, data: Data) {
        if self.phase == Phase::Handshaking {
            return self.protocol_error(now, ProtocolError::DataBeforeReady);
        }
        match data.offset {
            Some(offset) => self.on_message(now, offset, data.key, data.payload, data.headers),
            None => self.events.push_back(Event::Message {
                channel: data.key,
                offset: None,
                payload: data.payload,
                headers: data.headers,
            }),
        }
    }

    /// One fact the protocol found in a message.
    pub(super) fn on_fact(&mut self, now: Instant, fact: Inbound) {
        let handshaking = self.phase == Phase::Handshaking;
        match fact {
            Inbound::Ready(ready) if handshaking => self.on_ready(now, ready),
            Inbound::Ready(_) => self.protocol_error(
                now,
                ProtocolError::invalid(self.protocol.name(), "handshake reply while connected"),
            ),
            Inbound::GoingAway {
                retry_after,
                window,
                leave,
            } => {
                let cap = self.config.max_server_delay;
                let retry_after = retry_after.min(cap);
                let window = window.min(cap);
                let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                let spread = Duration::from_millis(self.rng.below_inclusive(window_ms));
                if let Some(link) = &mut self.link {
                    link.hint = Some(retry_after.saturating_add(spread).min(cap));
                }
                self.events.push_back(Event::GoingAway {
                    retry_after,
                    window,
                });
                if leave {
                    // The server closes everyone soon; leaving now and
                    // coming back after the spread hint keeps a fleet from
                    // returning in one wave.
                    self.close_transport(1001, "server going away");
                    let rule = CloseRule::Reconnect { honour_hint: true };
                    self.lost(now, None, "server going away".into(), rule);
                }
            }
            Inbound::Failed { code, reason, rule } => {
                self.close_transport(1000, "server error");
                // The close code of what follows: the server's code when it
                // is one (Wire's are u16), else none, and the code typed
                // on an event of its own.
                let signed = code;
                let code = u16::try_from(code).ok().filter(|c| *c != 0);
                if code.is_none() && signed != 0 {
                    self.events.push_back(Event::ServerFailed {
                        code: signed,
                        reason: reason.clone(),
                    });
                }
                match rule {
                    CloseRule::Terminal(why) => self.finish(why, code, reason.to_string()),
                    rule => self.lost(now, code, reason.to_string(), rule),
                }
            }
            Inbound::ServerError { code, reason } => {
                if let Some(link) = &mut self.link {
                    link.error_before_close = true;
                }
                self.events.push_back(Event::ServerError { code, reason });
            }
            Inbound::Data {
                key,
                offset,
                payload,
                headers,
            } => self.on_data(
                now,
                Data {
                    key,
                    offset,
                    payload,
                    headers,
                },
            ),
            _ if handshaking => self.protocol_error(now, ProtocolError::DataBeforeReady),
            Inbound::Acked { seq } => self.on_ack(now, seq),
            Inbound::Replied { call, result } => self.call_done(call, Ok(result)),
            Inbound::CallRejected {
                call,
                code,
                message,
            } => self.call_done(call, Err(CallError::Rejected { code, message })),
            Inbound::Subscribed { key, server_id } => self.events.push_back(Event::Subscribed {
                channel: key,
                server_id,
            }),
            Inbound::Resubscribed { key } => {
                self.events.push_back(Event::Resubscribed { channel: key })
            }
            Inbound::SubscribeFailed { key, code, reason } => {
                self.subscriptions.remove(&key);
                self.events.push_back(Event::SubscribeFailed {
                    channel: key,
                    code,
                    reason,
                });
            }
            Inbound::SubscriptionEnded { key } => {
                if self.subscriptions.remove(&key).is_some() {
                    self.events
                        .push_back(Event::SubscriptionEnded { channel: key });
                }
            }
        }
    }

    /// The handshake completed (at once, for protocols without one).
    pub(super) fn on_ready(&mut self, now: Instant, ready: Ready) {
        let Ready {
            session,
            resumed,
            resume,
            last_client_seq,
            kept,
            heartbeat,
            max_message,
        } = ready;
        self.server_max_message = max_message;
        if let Some(previous) = self.resume.on_ready(resumed, resume, session.clone()) {
            self.events.push_back(Event::ResumeRejected { previous });
        }
        self.queue.rewind();
        if last_client_seq > 0 {
            let highest = self.queue.last_seq();
            let seq = last_client_seq.min(highest);
            if self.queue.ack_through(seq) > 0 {
                self.events.push_back(Event::Acked { seq });
            }
        }
        let kept: BTreeSet<Text> = kept.into_iter().collect();
        let mut confirmed = Vec::new();
        {
            let Session {
                subscriptions,
                protocol,
                out,
                ..
            } = self;
            for (key, spec) in subscriptions.iter() {
                if kept.contains(key) {
                    confirmed.push(key.clone());
                } else {
                    protocol.subscribe(key, spec, out);
                }
            }
            // Kept subscriptions the user dropped while disconnected
            // (PROTOCOL.md 8.3).
            let empty = Payload::binary(bytes::Bytes::new());
            for key in kept.iter().filter(|k| !subscriptions.contains_key(*k)) {
                protocol.unsubscribe(key, &empty, None, out);
            }
        }
        self.drain_frames();
        self.on_connected(now, resumed, session, heartbeat);
        // After `Connected`, so that events about the session follow the
        // event that introduces it (unless it closed at once).
        if self.phase == Phase::Connected {
            for channel in confirmed {
                self.events.push_back(Event::Subscribed {
                    channel,
                    server_id: None,
                });
            }
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, seq: u64) {
        let highest = self.queue.last_seq();
        if seq > highest {
            return self.protocol_error(now, ProtocolError::AckBeyondSent { seq, highest });
        }
        if self.queue.ack_through(seq) > 0 {
            self.events.push_back(Event::Acked { seq });
        }
        if self.closing && self.queue.is_empty() {
            self.close_now();
        }
    }

    pub(super) fn on_message(
        &mut self,
        now: Instant,
        offset: u64,
        channel: Option<Text>,
        payload: Payload,
        headers: Option<Headers>,
    ) {
        match self.resume.deliver(offset) {
            Delivery::Replay => return,
            Delivery::New { gap: None } => {}
            Delivery::New {
                gap: Some((from, to)),
            } => self.events.push_back(Event::Gap { from, to }),
        }
        self.events.push_back(Event::Message {
            channel,
            offset: Some(offset),
            payload,
            headers,
        });
        let Some(link) = &mut self.link else { return };
        link.unreported += 1;
        if link.unreported >= self.config.ack_every {
            self.report_offset();
        } else if !self.timers.is_set(Timer::InboundAck) {
            self.timers
                .set(Timer::InboundAck, deadline(now, self.config.ack_delay));
        }
    }

    pub(super) fn report_offset(&mut self) {
        self.timers.stop(Timer::InboundAck);
        if let Some(link) = &mut self.link {
            link.unreported = 0;
        }
        if self.phase != Phase::Connected {
            return;
        }
        if let Some(offset) = self.resume.take_report() {
            self.protocol.report_offset(offset, &mut self.out);
            self.drain_frames();
        }
    }
}
