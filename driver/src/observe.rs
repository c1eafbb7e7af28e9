//! What an operator sees of a connection: a state watch and a counters
//! snapshot on the [`Handle`], tracing spans, and (cargo feature `metrics`)
//! metrics through the `metrics` facade.
//!
//! The driver tells the [`Watch`] every event and every dial; the watch
//! keeps the counters in atomics the handles read ([`Observed`]), opens and
//! closes the connection spans, and records the metrics. Nothing here
//! decides anything, and nothing here ever sees a token: the spans carry the
//! endpoint without user info or query (see `RequestTemplate::endpoint`).
//!
//! The span names and fields, the metric names and labels are listed in
//! the adapters' READMEs (section Observability): a stable interface, so a
//! change there is a change here and the other way round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial_core::{CallError, CloseClass, Event, Payload, State};
use tracing::{field, Span};

use crate::handle::{Handle, Shared};

/// The longest client label [`Builder::client_label`](crate::Builder::client_label)
/// accepts.
pub const MAX_CLIENT_LABEL: usize = 64;

/// Every state, in the order of [`state_index`].
#[cfg(feature = "metrics")]
const STATES: [State; 6] = [
    State::Idle,
    State::Connecting,
    State::Connected,
    State::Reconnecting,
    State::Closing,
    State::Closed,
];

#[cfg(feature = "metrics")]
fn state_index(state: State) -> usize {
    STATES.iter().position(|s| *s == state).unwrap_or(0)
}

fn class_index(class: CloseClass) -> usize {
    CloseClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(0)
}

/// Whether `label` may be a client label: 1 to [`MAX_CLIENT_LABEL`] ASCII
/// letters, digits, `_`, `-` or `.`.
pub(crate) fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_CLIENT_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// How a call ended, for [`Stats::calls`] and the `outcome` label of
/// `redial_calls_total`: a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// The server replied.
    Reply,
    /// The server answered with an error.
    Rejected,
    /// No reply within the call's timeout.
    Timeout,
    /// The link dropped with the call in flight.
    ConnectionLost,
    /// The session closed first (or the call ended without a reply
    /// another way).
    Closed,
}

impl CallOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Reply,
        CallOutcome::Rejected,
        CallOutcome::Timeout,
        CallOutcome::ConnectionLost,
        CallOutcome::Closed,
    ];

    /// The outcome's name in snake case (`"connection_lost"`), the label.
    pub fn name(self) -> &'static str {
        match self {
            CallOutcome::Reply => "reply",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Timeout => "timeout",
            CallOutcome::ConnectionLost => "connection_lost",
            CallOutcome::Closed => "closed",
        }
    }

    /// The outcome of an [`Event::CallDone`]'s result.
    pub fn of(result: &Result<Payload, CallError>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Reply,
            Err(CallError::Rejected { .. }) => CallOutcome::Rejected,
            Err(CallError::Timeout) => CallOutcome::Timeout,
            Err(CallError::ConnectionLost) => CallOutcome::ConnectionLost,
            Err(_) => CallOutcome::Closed,
        }
    }

    fn index(self) -> usize {
        CallOutcome::ALL
            .iter()
            .position(|o| *o == self)
            .unwrap_or(0)
    }
}

/// A connection's counters since it was built. Read with
/// [`Handle::stats`]; every field only grows except the gauges
/// (`state`, `queue_depth`, `subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The state, as of the driver's last step.
    pub state: State,
    /// Dials that connected (for [`Wire`](redial_core::Wire): after
    /// WELCOME).
    pub dials_ok: u64,
    /// Dials (or their token fetches) that failed.
    pub dials_failed: u64,
    /// Connections after the first.
    pub reconnects: u64,
    /// Connections that ended after the WebSocket upgrade, by class, in
    /// [`CloseClass::ALL`] order; see [`Stats::disconnects`].
    pub disconnects_by_class: [u64; 9],
    /// Messages the session accepted from the application.
    pub messages_sent: u64,
    /// Application messages that arrived.
    pub messages_received: u64,
    /// Gaps the server reported.
    pub gaps: u64,
    /// Messages inside those gaps.
    pub messages_missed: u64,
    /// Messages written again after a reconnect because the connection
    /// that carried them was lost before the server acknowledged them
    /// (protocols with acknowledged delivery, such as `Wire`).
    pub messages_replayed: u64,
    /// Messages queued (unsent, or sent and not yet acknowledged).
    pub queue_depth: u64,
    /// Subscriptions held.
    pub subscriptions: u64,
    /// Calls that ended, by outcome, in [`CallOutcome::ALL`] order; see
    /// [`Stats::calls`].
    pub calls_by_outcome: [u64; 5],
}

impl Stats {
    /// Connections that ended after the upgrade with this class.
    pub fn disconnects(&self, class: CloseClass) -> u64 {
        self.disconnects_by_class[class_index(class)]
    }

    /// Calls that ended with this outcome.
    pub fn calls(&self, outcome: CallOutcome) -> u64 {
        self.calls_by_outcome[outcome.index()]
    }

    /// Connections that ended after the upgrade, whatever the class.
    pub fn disconnects_total(&self) -> u64 {
        self.disconnects_by_class.iter().sum()
    }
}

/// The counters the driver writes and the handles read (relaxed atomics:
/// each is a count on its own, a snapshot is not a transaction).
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Bumped with every state change, so a watcher knows it missed one.
    version: AtomicU64,
    dials_ok: AtomicU64,
    dials_failed: AtomicU64,
    reconnects: AtomicU64,
    disconnects: [AtomicU64; 9],
    sent: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    missed: AtomicU64,
    /// The session's running total (`Session::replayed`).
    replayed: AtomicU64,
    queue_depth: AtomicU64,
    subscriptions: AtomicU64,
    calls: [AtomicU64; 5],
}

impl Observed {
    /// Called by `Shared::set_state` (under its lock) for every change.
    pub(crate) fn state_changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Watches a connection's state: the latest state wins.
///
/// A slow reader is never handed one change per retry: [`changed`]
/// answers the state as it is when it runs, having skipped whatever came
/// and went in between. Cheap to create ([`Handle::watch_state`]); each
/// watch remembers what it last saw on its own.
///
/// [`changed`]: StateWatch::changed
pub struct StateWatch {
    shared: Arc<Shared>,
    seen: u64,
    closed_seen: bool,
}

impl std::fmt::Debug for StateWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWatch")
            .field("state", &self.current())
            .finish_non_exhaustive()
    }
}

impl StateWatch {
    /// The state now.
    pub fn current(&self) -> State {
        self.shared.state()
    }

    /// Waits until the state changed since this watch last answered (or
    /// was created), and returns the state now. `None` once
    /// [`State::Closed`] was answered: nothing changes after it.
    pub async fn changed(&mut self) -> Option<State> {
        loop {
            if self.closed_seen {
                return None;
            }
            let listener = self.shared.changed.listen();
            if let Some(state) = self.try_changed() {
                return Some(state);
            }
            if self.closed_seen {
                return None;
            }
            listener.await;
        }
    }

    /// [`changed`](Self::changed) without waiting: `Some` when the state
    /// changed since the last answer.
    pub fn try_changed(&mut self) -> Option<State> {
        let version = self.shared.observed.version();
        if version == self.seen || self.closed_seen {
            return None;
        }
        self.seen = version;
        let state = self.shared.state();
        self.closed_seen = state == State::Closed;
        Some(state)
    }
}

impl Handle {
    /// A watch on the connection's state (see [`StateWatch`]): its first
    /// [`changed`](StateWatch::changed) answers the first change after
    /// this call.
    pub fn watch_state(&self) -> StateWatch {
        let shared = Arc::clone(self.shared());
        let seen = shared.observed.version();
        StateWatch {
            shared,
            seen,
            closed_seen: false,
        }
    }

    /// The connection's counters now (see [`Stats`]). A few relaxed atomic
    /// loads: cheap enough for a status line refreshed every second.
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        let o = &shared.observed;
        let mut disconnects_by_class = [0; 9];
        for (slot, counter) in disconnects_by_class.iter_mut().zip(&o.disconnects) {
            *slot = Observed::get(counter);
        }
        let mut calls_by_outcome = [0; 5];
        for (slot, counter) in calls_by_outcome.iter_mut().zip(&o.calls) {
            *slot = Observed::get(counter);
        }
        Stats {
            calls_by_outcome,
            state: shared.state(),
            dials_ok: Observed::get(&o.dials_ok),
            dials_failed: Observed::get(&o.dials_failed),
            reconnects: Observed::get(&o.reconnects),
            disconnects_by_class,
            messages_sent: Observed::get(&o.sent),
            messages_received: Observed::get(&o.received),
            gaps: Observed::get(&o.gaps),
            messages_missed: Observed::get(&o.missed),
            messages_replayed: Observed::get(&o.replayed),
            queue_depth: Observed::get(&o.queue_depth),
            subscriptions: Observed::get(&o.subscriptions),
        }
    }
}

/// The driver's side: connection spans, timing, metrics.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    session_span: Span,
    /// The open attempt's span, from its dial until it fails or ends.
    connection: Option<Span>,
    /// The delay announced for the next attempt.
    next_delay: Option<Duration>,
    dialed_at: Option<Instant>,
    lost_at: Option<Instant>,
    /// The state as the events told it.
    state: State,
    /// Subscriptions may have changed: recount at the end of the turn.
    recount: bool,
    #[cfg(feature = "metrics")]
    meters: Meters,
}

impl Watch {
    pub(crate) fn new(
        shared: Arc<Shared>,
        session_span: Span,
        protocol: &'static str,
        label: Option<&str>,
    ) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (protocol, label);
        Watch {
            shared,
            session_span,
            connection: None,
            next_delay: None,
            dialed_at: None,
            lost_at: None,
            state: State::Idle,
            recount: false,
            #[cfg(feature = "metrics")]
            meters: Meters::new(protocol, label),
        }
    }

    /// A dial starts: opens the attempt's span.
    pub(crate) fn dialing(&mut self, now: Instant, attempt: u32, endpoint: usize) {
        let span = tracing::info_span!(
            parent: &self.session_span,
            "redial.connection",
            attempt,
            endpoint,
            delay_ms = field::Empty,
            outcome = field::Empty,
            close_code = field::Empty,
            close_class = field::Empty,
        );
        if let Some(delay) = self.next_delay.take() {
            span.record("delay_ms", millis(delay));
        }
        self.connection = Some(span);
        self.dialed_at = Some(now);
    }

    /// The span an event belongs in: the attempt's while one is open.
    pub(crate) fn span(&self) -> &Span {
        self.connection.as_ref().unwrap_or(&self.session_span)
    }

    /// Counts `event` and closes the attempt's span when it ends it. Call
    /// after logging the event, so the log line is inside the span.
    pub(crate) fn event(&mut self, now: Instant, event: &Event) {
        let o = &self.shared.observed;
        match event {
            Event::StateChanged { from, to } => {
                #[cfg(feature = "metrics")]
                self.meters.state(*from, *to);
                #[cfg(not(feature = "metrics"))]
                let _ = from;
                self.state = *to;
            }
            Event::ReconnectScheduled { delay, .. } => self.next_delay = Some(*delay),
            Event::DialFailed { .. } => {
                Observed::add(&o.dials_failed, 1);
                #[cfg(feature = "metrics")]
                self.meters.dials_failed.increment(1);
                if let Some(span) = self.connection.take() {
                    span.record("outcome", "dial_failed");
                }
                self.dialed_at = None;
            }
            Event::Connected { reconnect, .. } => {
                Observed::add(&o.dials_ok, 1);
                if *reconnect {
                    Observed::add(&o.reconnects, 1);
                }
                if let Some(span) = &self.connection {
                    span.record("outcome", "connected");
                }
                let handshake = self
                    .dialed_at
                    .take()
                    .map(|at| now.saturating_duration_since(at));
                let outage = self
                    .lost_at
                    .take()
                    .map(|at| now.saturating_duration_since(at));
                #[cfg(feature = "metrics")]
                self.meters.connected(*reconnect, handshake, outage);
                #[cfg(not(feature = "metrics"))]
                let _ = (handshake, outage);
                self.recount = true;
            }
            Event::Disconnected {
                code,
                reason,
                will_reconnect,
            } => {
                let class = CloseClass::of(*code, reason);
                Observed::add(&o.disconnects[class_index(class)], 1);
                #[cfg(feature = "metrics")]
                self.meters.disconnects[class_index(class)].increment(1);
                if let Some(span) = self.connection.take() {
                    span.record("outcome", "closed");
                    if let Some(code) = code {
                        span.record("close_code", code);
                    }
                    span.record("close_class", class.name());
                }
                // An outage runs from the first loss, through every
                // handshake that fails on the way back.
                if *will_reconnect && self.lost_at.is_none() {
                    self.lost_at = Some(now);
                }
            }
            Event::Message { .. } => {
                Observed::add(&o.received, 1);
                #[cfg(feature = "metrics")]
                self.meters.received.increment(1);
            }
            Event::Gap { from, to } => {
                let missed = to.saturating_sub(*from).saturating_add(1);
                Observed::add(&o.gaps, 1);
                Observed::add(&o.missed, missed);
                #[cfg(feature = "metrics")]
                {
                    self.meters.gaps.increment(1);
                    self.meters.missed.increment(missed);
                }
            }
            Event::Subscribed { .. }
            | Event::SubscribeFailed { .. }
            | Event::SubscriptionEnded { .. } => self.recount = true,
            Event::CallDone { result, .. } => {
                let outcome = CallOutcome::of(result).index();
                Observed::add(&o.calls[outcome], 1);
                #[cfg(feature = "metrics")]
                self.meters.calls[outcome].increment(1);
            }
            Event::Closed { .. } => {
                self.connection = None;
            }
            _ => {}
        }
    }

    /// A subscribe or unsubscribe was handed to the session.
    pub(crate) fn subscriptions_changed(&mut self) {
        self.recount = true;
    }

    /// The end of a driver turn: `sent` messages were handed over since
    /// the last one, `queued` wait in the session, which has replayed
    /// `replayed` in all. `subscriptions` is called only when they may
    /// have changed.
    pub(crate) fn turn(
        &mut self,
        sent: usize,
        queued: usize,
        replayed: u64,
        subscriptions: impl FnOnce() -> usize,
    ) {
        let o = &self.shared.observed;
        let before = o.replayed.swap(replayed, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if replayed > before {
            self.meters.replayed.increment(replayed - before);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = before;
        let sent = sent as u64;
        if sent > 0 {
            Observed::add(&o.sent, sent);
            #[cfg(feature = "metrics")]
            self.meters.sent.increment(sent);
        }
        let queued = queued as u64;
        let before = o.queue_depth.swap(queued, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.meters.queue.set_from(before, queued);
        #[cfg(not(feature = "metrics"))]
        let _ = before;
        if std::mem::take(&mut self.recount) {
            let now = subscriptions() as u64;
            let before = o.subscriptions.swap(now, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.meters.subscriptions.set_from(before, now);
            #[cfg(not(feature = "metrics"))]
            let _ = before;
        }
    }
}

impl Drop for Watch {
    /// The session is gone: its share of the gauges goes with it.
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        {
            let o = &self.shared.observed;
            self.meters
                .queue
                .set_from(o.queue_depth.load(Ordering::Relaxed), 0);
            self.meters
                .subscriptions
                .set_from(o.subscriptions.load(Ordering::Relaxed), 0);
            self.meters.leave(self.state);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The metric handles of one connection, taken once when it is built.
#[cfg(feature = "metrics")]
struct Meters {
    dials_ok: metrics::Counter,
    dials_failed: metrics::Counter,
    reconnects: metrics::Counter,
    disconnects: [metrics::Counter; 9],
    calls: [metrics::Counter; 5],
    sent: metrics::Counter,
    received: metrics::Counter,
    gaps: metrics::Counter,
    missed: metrics::Counter,
    replayed: metrics::Counter,
    states: [metrics::Gauge; 6],
    queue: Shares,
    subscriptions: Shares,
    outage: metrics::Histogram,
    handshake: metrics::Histogram,
}

/// A gauge several sessions with the same labels add into: each moves it
/// by its own change, so the series is the sum over them.
#[cfg(feature = "metrics")]
struct Shares(metrics::Gauge);

#[cfg(feature = "metrics")]
impl Shares {
    fn set_from(&self, before: u64, now: u64) {
        if now > before {
            self.0.increment((now - before) as f64);
        } else if before > now {
            self.0.decrement((before - now) as f64);
        }
    }
}

#[cfg(feature = "metrics")]
impl Meters {
    fn new(protocol: &'static str, label: Option<&str>) -> Self {
        let mut labels = vec![metrics::Label::new("protocol", protocol)];
        if let Some(label) = label {
            labels.push(metrics::Label::new("client", label.to_owned()));
        }
        let with = |name: &'static str, value: &'static str| {
            let mut l = labels.clone();
            l.push(metrics::Label::new(name, value));
            l
        };
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(describe);
        let meters = Meters {
            dials_ok: metrics::counter!("redial_dials_total", with("result", "ok")),
            dials_failed: metrics::counter!("redial_dials_total", with("result", "failed")),
            reconnects: metrics::counter!("redial_reconnects_total", labels.clone()),
            disconnects: CloseClass::ALL
                .map(|c| metrics::counter!("redial_disconnects_total", with("class", c.name()))),
            calls: CallOutcome::ALL
                .map(|c| metrics::counter!("redial_calls_total", with("outcome", c.name()))),
            sent: metrics::counter!("redial_messages_sent_total", labels.clone()),
            received: metrics::counter!("redial_messages_received_total", labels.clone()),
            gaps: metrics::counter!("redial_gaps_total", labels.clone()),
            missed: metrics::counter!("redial_messages_missed_total", labels.clone()),
            replayed: metrics::counter!("redial_messages_replayed_total", labels.clone()),
            states: STATES.map(|s| metrics::gauge!("redial_sessions", with("state", s.name()))),
            queue: Shares(metrics::gauge!("redial_queue_depth", labels.clone())),
            subscriptions: Shares(metrics::gauge!("redial_subscriptions", labels.clone())),
            outage: metrics::histogram!("redial_outage_seconds", labels.clone()),
            handshake: metrics::histogram!("redial_handshake_seconds", labels),
        };
        // Counted from idle: the session's first event moves it on.
        meters.states[state_index(State::Idle)].increment(1.0);
        meters
    }

    fn state(&self, from: State, to: State) {
        self.states[state_index(from)].decrement(1.0);
        self.states[state_index(to)].increment(1.0);
    }

    fn leave(&self, state: State) {
        self.states[state_index(state)].decrement(1.0);
    }

    fn connected(&self, reconnect: bool, handshake: Option<Duration>, outage: Option<Duration>) {
        self.dials_ok.increment(1);
        if reconnect {
            self.reconnects.increment(1);
        }
        if let Some(d) = handshake {
            self.handshake.record(d.as_secs_f64());
        }
        if let Some(d) = outage {
            self.outage.record(d.as_secs_f64());
        }
    }
}

/// The help text of every series (Prometheus' `# HELP`), once per process.
#[cfg(feature = "metrics")]
fn describe() {
    use metrics::Unit;
    let counters = [
        (
            "redial_dials_total",
            "Dials that connected or failed, by result.",
        ),
        (
            "redial_disconnects_total",
            "Established connections that ended, by close class.",
        ),
        ("redial_reconnects_total", "Connections after the first."),
        ("redial_calls_total", "Calls that ended, by outcome."),
        (
            "redial_messages_sent_total",
            "Messages the session accepted from the application.",
        ),
        (
            "redial_messages_received_total",
            "Application messages that arrived.",
        ),
        (
            "redial_gaps_total",
            "Gaps the server reported (messages it could not replay).",
        ),
        (
            "redial_messages_missed_total",
            "Messages inside the reported gaps.",
        ),
        (
            "redial_messages_replayed_total",
            "Messages written again after a reconnect, unacknowledged when the link was lost.",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, Unit::Count, help);
    }
    metrics::describe_gauge!("redial_sessions", Unit::Count, "Sessions in each state.");
    metrics::describe_gauge!(
        "redial_queue_depth",
        Unit::Count,
        "Messages queued (unsent, or sent and not yet acknowledged)."
    );
    metrics::describe_gauge!("redial_subscriptions", Unit::Count, "Subscriptions held.");
    metrics::describe_histogram!(
        "redial_outage_seconds",
        Unit::Seconds,
        "From losing a connection to the next one connected."
    );
    metrics::describe_histogram!(
        "redial_handshake_seconds",
        Unit::Seconds,
        "From the dial to connected (upgrade and protocol handshake)."
    );
}

impl<R: crate::Runtime> crate::Builder<R> {
    /// Names this connection in spans (`client`) and metrics (the `client`
    /// label), to tell several connections of one process apart. Keep the
    /// set of labels a process uses small and fixed: each one is a series
    /// per metric. 1 to [`MAX_CLIENT_LABEL`] ASCII letters, digits, `_`,
    /// `-` or `.`; anything else fails `connect` with
    /// [`BuildError::InvalidClientLabel`](crate::BuildError::InvalidClientLabel).
    pub fn client_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_outcomes_have_distinct_names_and_cover_every_error() {
        let names: std::collections::BTreeSet<_> =
            CallOutcome::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), CallOutcome::ALL.len());
        let rejected = CallError::Rejected {
            code: -32601,
            message: "no such method".into(),
        };
        for (result, want) in [
            (Ok(Payload::text("r")), CallOutcome::Reply),
            (Err(rejected), CallOutcome::Rejected),
            (Err(CallError::Timeout), CallOutcome::Timeout),
            (Err(CallError::ConnectionLost), CallOutcome::ConnectionLost),
            (Err(CallError::Closed), CallOutcome::Closed),
        ] {
            assert_eq!(CallOutcome::of(&result), want);
            assert_eq!(CallOutcome::ALL[want.index()], want);
        }
    }

    #[test]
    fn labels_are_checked() {
        assert!(valid_label("orders-1.eu_west"));
        for bad in ["", "a b", "é", "a/b", &"x".repeat(MAX_CLIENT_LABEL + 1)] {
            assert!(!valid_label(bad), "{bad:?}");
        }
        assert!(valid_label(&"x".repeat(MAX_CLIENT_LABEL)));
    }
}
