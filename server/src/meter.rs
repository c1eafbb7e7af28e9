//! The node's metrics through the `metrics` facade (cargo feature
//! `metrics`). Without the feature every method here is empty and nothing
//! is recorded or timed.
//!
//! Every label value comes from a fixed list (README, "Observability"):
//! never a session id or name, a channel, a principal, a URL or a token.

use redial_core::wire::Frame;

use crate::store::{Notice, PublishOutcome};

/// Why an upgrade was refused: the `result` label of
/// `redial_server_upgrades_total` (with `accepted`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum UpgradeRefusal {
    ShuttingDown,
    NoSubprotocol,
    Unauthorized,
    Throttled,
}

/// The store calls timed, by their `op` label: the connection's
/// [`StoreOp`](crate::StoreOp)s and the application's publishes and direct
/// messages through the node.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) const STORE_OPS: [&str; 11] = [
    "create",
    "resume",
    "detach",
    "end",
    "publish",
    "subscribe",
    "unsubscribe",
    "fetch",
    "received",
    "broadcast",
    "send_to",
];

#[cfg(feature = "metrics")]
pub(crate) use on::Meters;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::Meters;

#[cfg(not(feature = "metrics"))]
mod off {
    use super::*;

    /// Nothing: the `metrics` feature is off.
    pub(crate) struct Meters;

    impl Meters {
        pub(crate) fn new() -> Self {
            Meters
        }
        pub(crate) fn connection(&self, _open: bool) {}
        pub(crate) fn admitted(&self) {}
        pub(crate) fn refused(&self, _why: UpgradeRefusal) {}
        pub(crate) fn sent(&self, _frame: &Frame) {}
        pub(crate) fn published(&self, _outcome: PublishOutcome) {}
        pub(crate) fn notice(&self, _notice: &Notice, _woken: usize) {}
        pub(crate) fn started(&self) -> Option<std::convert::Infallible> {
            None
        }
        pub(crate) fn store_call(
            &self,
            _op: usize,
            _started: Option<std::convert::Infallible>,
            _timed_out: bool,
        ) {
        }
    }
}

#[cfg(feature = "metrics")]
mod on {
    use super::*;
    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Unit};
    use redial_core::wire::error_code;
    use std::time::Duration;

    /// The node's metric handles, taken once when it is built.
    pub(crate) struct Meters {
        connections: Gauge,
        accepted: Counter,
        refused: [Counter; 4],
        created: Counter,
        resumed: Counter,
        deliveries: Counter,
        protocol_errors: Counter,
        slow_consumers: Counter,
        applied: Counter,
        duplicates: Counter,
        lagged: Counter,
        wakeups: Counter,
        store: [Histogram; STORE_OPS.len()],
        timeouts: [Counter; STORE_OPS.len()],
    }

    impl Meters {
        pub(crate) fn new() -> Self {
            static DESCRIBED: std::sync::Once = std::sync::Once::new();
            DESCRIBED.call_once(describe);
            let upgrades =
                |r: &'static str| counter!("redial_server_upgrades_total", "result" => r);
            let sessions = |k: &'static str| counter!("redial_server_sessions_total", "kind" => k);
            let published =
                |r: &'static str| counter!("redial_server_publishes_total", "result" => r);
            let closes =
                |r: &'static str| counter!("redial_server_error_closes_total", "error" => r);
            Meters {
                connections: gauge!("redial_server_connections"),
                accepted: upgrades("accepted"),
                refused: [
                    upgrades("shutting_down"),
                    upgrades("no_subprotocol"),
                    upgrades("unauthorized"),
                    upgrades("throttled"),
                ],
                created: sessions("created"),
                resumed: sessions("resumed"),
                deliveries: counter!("redial_server_deliveries_total"),
                protocol_errors: closes("malformed_frame"),
                slow_consumers: closes("slow_consumer"),
                applied: published("applied"),
                duplicates: published("duplicate"),
                lagged: counter!("redial_server_notices_lagged_total"),
                wakeups: counter!("redial_server_notice_wakeups_total"),
                store: STORE_OPS.map(|op| histogram!("redial_server_store_seconds", "op" => op)),
                timeouts: STORE_OPS
                    .map(|op| counter!("redial_server_store_timeouts_total", "op" => op)),
            }
        }

        /// A connection opened (`true`) or ended.
        pub(crate) fn connection(&self, open: bool) {
            if open {
                self.connections.increment(1.0);
            } else {
                self.connections.decrement(1.0);
            }
        }

        pub(crate) fn admitted(&self) {
            self.accepted.increment(1);
        }

        pub(crate) fn refused(&self, why: UpgradeRefusal) {
            self.refused[why as usize].increment(1);
        }

        /// A frame the node sends.
        pub(crate) fn sent(&self, frame: &Frame) {
            let counter = match frame {
                Frame::Welcome(w) if w.resumed => &self.resumed,
                Frame::Welcome(_) => &self.created,
                Frame::Message { .. } => &self.deliveries,
                Frame::Error { code, .. } if *code == error_code::MALFORMED_FRAME => {
                    &self.protocol_errors
                }
                Frame::Error { code, .. } if *code == error_code::SLOW_CONSUMER => {
                    &self.slow_consumers
                }
                _ => return,
            };
            counter.increment(1);
        }

        pub(crate) fn published(&self, outcome: PublishOutcome) {
            match outcome {
                PublishOutcome::Applied => self.applied.increment(1),
                PublishOutcome::Duplicate => self.duplicates.increment(1),
            }
        }

        /// A store notice that woke `woken` connections of this node.
        pub(crate) fn notice(&self, notice: &Notice, woken: usize) {
            if matches!(notice, Notice::Lagged) {
                self.lagged.increment(1);
            }
            self.wakeups.increment(woken as u64);
        }

        /// When a store call starts (read only with the feature on).
        pub(crate) fn started(&self) -> Option<tokio::time::Instant> {
            Some(tokio::time::Instant::now())
        }

        /// Store call `op` (an index into [`STORE_OPS`]) ended.
        pub(crate) fn store_call(
            &self,
            op: usize,
            started: Option<tokio::time::Instant>,
            timed_out: bool,
        ) {
            if let Some(started) = started {
                let took: Duration = started.elapsed();
                self.store[op].record(took.as_secs_f64());
            }
            if timed_out {
                self.timeouts[op].increment(1);
            }
        }
    }

    /// The help text of every series (Prometheus' `# HELP`), once per process.
    fn describe() {
        let counters = [
            (
                "redial_server_upgrades_total",
                "WebSocket upgrades accepted or refused, by result.",
            ),
            (
                "redial_server_sessions_total",
                "WELCOMEs sent, by kind (created or resumed).",
            ),
            (
                "redial_server_deliveries_total",
                "MESSAGE frames sent to clients (replays included).",
            ),
            (
                "redial_server_error_closes_total",
                "Connections closed after an ERROR, by error.",
            ),
            (
                "redial_server_publishes_total",
                "Client PUBLISHes, by result (applied or duplicate by seq).",
            ),
            (
                "redial_server_notices_lagged_total",
                "Times the node's store notices lagged (every session refetches).",
            ),
            (
                "redial_server_notice_wakeups_total",
                "Connections woken by store notices.",
            ),
            (
                "redial_server_store_timeouts_total",
                "Store calls that ran past the store timeout, by operation.",
            ),
        ];
        for (name, help) in counters {
            metrics::describe_counter!(name, Unit::Count, help);
        }
        metrics::describe_gauge!(
            "redial_server_connections",
            Unit::Count,
            "WebSocket connections open now."
        );
        metrics::describe_histogram!(
            "redial_server_store_seconds",
            Unit::Seconds,
            "Store call latency, by operation (timed-out calls included)."
        );
    }
}
