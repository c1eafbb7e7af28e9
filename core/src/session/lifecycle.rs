//! A connection's life: attempts, dials, the handshake's end, losses,
//! the wait before the next attempt, timers and the end of the session.

use super::*;

impl Session {
    pub(super) fn start_attempt(&mut self, now: Instant) {
        self.outage.server_until = None;
        self.timers.set(
            Timer::ConnectTimeout,
            deadline(now, self.config.connect_timeout),
        );
        if self.config.token_provider {
            self.phase = Phase::FetchingToken;
            self.actions.push_back(Action::FetchToken);
        } else {
            self.dial(None);
        }
    }

    pub(super) fn dial(&mut self, token: Option<AuthToken>) {
        self.phase = Phase::Dialing;
        self.actions.push_back(Action::Dial {
            attempt: self.outage.attempts,
            endpoint: self.endpoints.current(),
            token: token.clone(),
        });
        self.link = Some(Link::dial(token));
    }

    pub(super) fn on_connected(
        &mut self,
        now: Instant,
        resumed: bool,
        session: Option<SessionInfo>,
        heartbeat: Option<Duration>,
    ) {
        self.phase = Phase::Connected;
        for t in [Timer::ConnectTimeout, Timer::Backoff, Timer::Stuck] {
            self.timers.stop(t);
        }
        let reconnect = self.ever_connected;
        self.ever_connected = true;
        self.outage.started = None;
        self.resume.lost_at = None;
        if let Some(link) = &mut self.link {
            link.connected_at = Some(now);
            // What came before the handshake's reply says nothing about
            // the connection it opened.
            link.error_before_close = false;
            link.hint = None;
        }
        if let Some(k) = &mut self.keepalive {
            let first = k.start(now, &mut self.rng, heartbeat);
            self.timers.set(Timer::Ping, first);
        }
        // State first, so that a consumer reacting to `Connected` reads
        // `State::Connected`.
        self.sync_state();
        self.events.push_back(Event::Connected {
            reconnect,
            resumed,
            session,
            endpoint: self.endpoints.current(),
        });
        // After the resubscriptions (sent with the handshake's reply).
        self.send_calls();
        self.flush_queue();
        if self.closing && self.queue.is_empty() {
            self.close_now();
        }
    }

    pub(super) fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::ConnectTimeout => match self.phase {
                Phase::FetchingToken => {
                    self.token_failed(now, TokenFailure::transient("token provider timed out"))
                }
                Phase::Dialing => {
                    self.close_transport(1000, "connect timeout");
                    self.dial_failed(now, DialFailure::Timeout);
                }
                Phase::Handshaking => {
                    let awaiting = self.link.as_ref().map_or("handshake reply", |l| l.awaiting);
                    let why = format!("no {awaiting} in time");
                    self.close_transport(1002, &why);
                    let rule = CloseRule::Reconnect { honour_hint: true };
                    self.lost(now, None, why, rule);
                }
                _ => {}
            },
            Timer::Backoff => {
                if self.phase == Phase::Waiting {
                    self.start_attempt(now);
                }
            }
            Timer::Ping => {
                if self.phase != Phase::Connected {
                    return;
                }
                let Some(k) = &mut self.keepalive else { return };
                match k.on_ping_timer(now) {
                    PingDue::NotYet { next } => self.timers.set(Timer::Ping, next),
                    PingDue::Send {
                        payload,
                        deadline,
                        next,
                    } => {
                        self.send_heartbeat(payload);
                        if !self.timers.is_set(Timer::PongDeadline) {
                            self.timers.set(Timer::PongDeadline, deadline);
                        }
                        self.timers.set(Timer::Ping, next);
                    }
                }
            }
            Timer::PongDeadline => {
                if self.phase == Phase::Connected {
                    self.close_transport(1001, "pong timeout");
                    let rule = CloseRule::Reconnect { honour_hint: true };
                    self.lost(now, None, "pong timeout".into(), rule);
                }
            }
            Timer::Stuck => {
                if let Some(since) = self.outage.started {
                    self.events.push_back(Event::Stuck {
                        for_: now.saturating_duration_since(since),
                        attempts: self.outage.attempts,
                    });
                }
            }
            Timer::CloseLinger => {
                if self.closing {
                    self.close_now();
                }
            }
            Timer::InboundAck => self.report_offset(),
            Timer::Protocol => self.protocol_timer(now),
            Timer::Call => {
                for (id, in_flight) in self.calls.expire(now) {
                    if in_flight {
                        self.protocol.forget_call(id);
                    }
                    self.events.push_back(Event::CallDone {
                        id,
                        result: Err(CallError::Timeout),
                    });
                }
                self.arm_calls();
            }
        }
    }

    /// The protocol's own deadline came.
    pub(super) fn protocol_timer(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            return;
        }
        let cx = TimerContext {
            now,
            ready: self.phase == Phase::Connected,
        };
        let result = self.protocol.on_timer(&cx, &mut self.out);
        self.drain_frames();
        match result {
            Ok(()) => self.take_facts(now),
            Err(dead) => {
                self.out.clear_facts();
                self.close_transport(1001, &dead.reason);
                self.lost(now, None, dead.reason, dead.rule);
            }
        }
    }

    pub(super) fn token_failed(&mut self, now: Instant, failure: TokenFailure) {
        if failure.unauthorized {
            return self.finish(TerminalReason::Unauthorized, None, failure.message);
        }
        self.outage.token_failures = self.outage.token_failures.saturating_add(1);
        self.events.push_back(Event::DialFailed {
            attempt: self.outage.attempts,
            endpoint: self.endpoints.current(),
            status: None,
            reason: format!("token provider: {}", failure.message),
        });
        if self.outage.token_failures >= self.config.token_failure_threshold {
            self.events.push_back(Event::TokenProviderFailing {
                consecutive: self.outage.token_failures,
                message: failure.message,
            });
        }
        self.retry(now, Delay::Ladder);
    }

    pub(super) fn dial_failed(&mut self, now: Instant, failure: DialFailure) {
        self.link = None;
        let status = match failure {
            DialFailure::Http { status, .. } => Some(status),
            _ => None,
        };
        self.events.push_back(Event::DialFailed {
            attempt: self.outage.attempts,
            endpoint: self.endpoints.current(),
            status,
            reason: failure.describe(),
        });
        // The endpoint failed this dial; the token provider's failures above
        // say nothing about it.
        self.endpoints.rotate();
        let rule = match failure {
            DialFailure::Http {
                status,
                retry_after,
            } => handshake_rule(
                status,
                retry_after,
                self.config.token_provider,
                self.outage.fresh_token_retry_used,
            ),
            DialFailure::Certificate(_) => self.config.close_policy.certificate_decision(),
            _ => HandshakeRule::Ladder,
        };
        match rule {
            HandshakeRule::RetryWithFreshToken => {
                self.outage.fresh_token_retry_used = true;
                self.retry(now, Delay::Now);
            }
            HandshakeRule::RetryAfter(d) => {
                let d = d.min(self.config.max_server_delay);
                let extra = self.jitter_tenth(d);
                self.retry(now, Delay::Server(d.saturating_add(extra)));
            }
            HandshakeRule::Ladder => self.retry(now, Delay::Ladder),
            HandshakeRule::Terminal(why) => self.finish(why, status, failure.describe()),
        }
    }

    /// Up to 10 % of `d`, so a fleet told the same thing does not return
    /// in lockstep.
    pub(super) fn jitter_tenth(&mut self, d: Duration) -> Duration {
        jitter_tenth(&mut self.rng, d)
    }

    /// The open transport is gone (closed by the server, or by us after
    /// deciding it is dead). `rule` says what happens next.
    pub(super) fn lost(
        &mut self,
        now: Instant,
        code: Option<u16>,
        reason: String,
        rule: CloseRule,
    ) {
        let link = self.link.take();
        // The timers that only mean something on an open connection (the
        // table stays one, so timers due together keep their firing order).
        for t in [
            Timer::Ping,
            Timer::PongDeadline,
            Timer::InboundAck,
            Timer::ConnectTimeout,
            Timer::Protocol,
        ] {
            self.timers.stop(t);
        }
        self.protocol.on_closed();
        // A request made on the transport that is gone is moot.
        let _ = self.out.take_wake();
        let established = self.phase == Phase::Connected;
        if established {
            // Only the loss of an established session starts the resume
            // token's lifetime (PROTOCOL.md 8.6); a handshake that fails
            // before WELCOME must not extend it.
            self.resume.lost_at = Some(now);
        }
        let was_stable = established
            && link
                .as_ref()
                .is_some_and(|l| l.was_stable(now, self.config.stable_after));
        let hint = link.and_then(|l| l.hint);
        let will_reconnect = match &rule {
            CloseRule::Terminal(_) => false,
            CloseRule::RefreshToken => self.config.token_provider,
            _ => !(self.closing && self.queue.is_empty()),
        };
        self.events.push_back(Event::Disconnected {
            code,
            reason: reason.clone(),
            will_reconnect,
        });
        for (id, result) in self.calls.on_lost() {
            self.events.push_back(Event::CallDone { id, result });
        }
        self.arm_calls();
        if !will_reconnect {
            let why = match rule {
                CloseRule::Terminal(why) => why,
                CloseRule::RefreshToken if !self.config.token_provider => {
                    TerminalReason::TokenExpired
                }
                _ => TerminalReason::ClosedByUser,
            };
            return self.finish(why, code, reason);
        }
        if was_stable {
            // A connection that held ends the outage.
            self.outage = Outage::default();
            if !matches!(rule, CloseRule::StepLadder { .. }) {
                self.ladder.reset();
            }
        }
        if self.outage.started.is_none() {
            self.outage.started = Some(now);
            self.timers
                .set(Timer::Stuck, deadline(now, self.config.stuck_after));
        }
        // Stay on an endpoint that held; leave one whose connection did not
        // last or whose server said it is going away.
        if !was_stable || hint.is_some() {
            self.endpoints.rotate();
        }
        let delay = match rule {
            CloseRule::Reconnect { honour_hint } | CloseRule::StepLadder { honour_hint } => {
                match hint {
                    Some(d) if honour_hint => Delay::Server(d),
                    _ => Delay::Ladder,
                }
            }
            CloseRule::RefreshToken if !self.outage.refresh_retry_used => {
                self.outage.refresh_retry_used = true;
                Delay::Now
            }
            CloseRule::RefreshToken => Delay::Ladder,
            CloseRule::Floor(f) => Delay::Floor(f),
            CloseRule::Terminal(_) => Delay::Ladder,
        };
        self.retry(now, delay);
    }

    /// Schedules the next attempt, or ends the session when the attempts are
    /// used up.
    pub(super) fn retry(&mut self, now: Instant, delay: Delay) {
        let max = self.config.max_attempts;
        if max != 0 && self.outage.attempts >= max {
            return self.finish(
                TerminalReason::AttemptsExhausted,
                None,
                format!("{max} reconnect attempts failed"),
            );
        }
        self.outage.attempts += 1;
        // The ladder steps on every failure, whatever sets this delay, so a
        // server that keeps sending hints still sees the windows grow.
        let draw = self.ladder.next_delay(&mut self.rng);
        let lower = self.ladder.lower_bound();
        let Session {
            outage,
            rng,
            config,
            ..
        } = self;
        let delay = outage.wait(now, delay, draw, lower, |f| {
            // A user's floor obeys the same cap as a server's wait.
            let f = f.min(config.max_server_delay);
            f.saturating_add(jitter_tenth(rng, f))
        });
        self.phase = Phase::Waiting;
        self.timers.set(Timer::Backoff, deadline(now, delay));
        self.events.push_back(Event::ReconnectScheduled {
            attempt: self.outage.attempts,
            delay,
        });
    }

    pub(super) fn protocol_error(&mut self, now: Instant, error: ProtocolError) {
        let reason = error.to_string();
        self.events.push_back(Event::ProtocolError { error });
        if matches!(self.phase, Phase::Handshaking | Phase::Connected) {
            // Tell the server why before the close (PROTOCOL.md 3.3), when
            // the protocol has a way to.
            let why = crate::utf8::prefix(&reason, self.config.wire_limits.max_reason_len);
            self.protocol.report_error(why, &mut self.out);
            self.drain_frames();
        }
        let code = self.protocol.protocol_error_close();
        self.close_transport(code, "protocol error");
        self.lost(
            now,
            None,
            reason,
            CloseRule::Reconnect { honour_hint: false },
        );
    }

    /// Asks the adapter to close the transport (or abandon the dial).
    pub(super) fn close_transport(&mut self, code: u16, reason: &str) {
        if matches!(
            self.phase,
            Phase::Dialing | Phase::Handshaking | Phase::Connected
        ) {
            self.actions
                .push_back(Action::Close(CloseFrame::new(code, reason)));
        }
    }

    pub(super) fn close_now(&mut self) {
        self.report_offset();
        self.close_transport(1000, "closed by user");
        let detail = if self.queue.is_empty() {
            "closed by user".to_owned()
        } else {
            format!(
                "closed by user with {} messages undelivered",
                self.queue.len()
            )
        };
        self.finish(TerminalReason::ClosedByUser, None, detail);
    }

    /// Ends the session. Nothing happens after this.
    pub(super) fn finish(&mut self, reason: TerminalReason, code: Option<u16>, detail: String) {
        self.phase = Phase::Closed;
        self.link = None;
        self.closing = false;
        self.timers.stop_all();
        self.sync_state();
        for id in self.calls.drain() {
            self.events.push_back(Event::CallDone {
                id,
                result: Err(CallError::Closed),
            });
        }
        self.events.push_back(Event::Closed {
            reason,
            code,
            detail,
            undelivered: self.queue.len(),
        });
    }
}

/// Up to 10 % of `d`, drawn from `rng`.
fn jitter_tenth(rng: &mut Rng, d: Duration) -> Duration {
    let tenth = u64::try_from(d.as_nanos() / 10).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.below_inclusive(tenth))
}
