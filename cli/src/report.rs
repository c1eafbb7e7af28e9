//! Connection events on stderr: human lines or JSON lines.
//!
//! The JSON names and fields are a stable interface, documented in
//! `cli/README.md`; add fields freely, never rename or remove one.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redial_core::{Event, SessionInfo, State};
use serde_json::{json, Map, Value};

use crate::args::EventsArg;

/// Writes events to stderr in the chosen format.
#[derive(Debug, Clone)]
pub struct Reporter {
    json: bool,
    label: String,
}

impl Reporter {
    /// `label` prefixes text lines (`[127.0.0.1:9000] ...`).
    pub fn new(mode: EventsArg, label: String) -> Self {
        Reporter {
            json: mode == EventsArg::Json,
            label,
        }
    }

    /// Reports one session event (not messages: those go to stdout).
    pub fn event(&self, event: &Event) {
        if self.json {
            if let Some(v) = json_event(event) {
                self.write_json(v);
            }
        } else if let Some(line) = text_event(event) {
            self.write_text(&line);
        }
    }

    /// A CLI-level note (`warning` in JSON).
    pub fn warning(&self, message: &str) {
        if self.json {
            self.write_json(json!({ "event": "warning", "message": message }));
        } else {
            self.write_text(&format!("warning: {message}"));
        }
    }

    /// Where `--metrics-listen` serves (`metrics_listening` in JSON).
    pub fn metrics_listening(&self, addr: std::net::SocketAddr) {
        let url = format!("http://{addr}/metrics");
        if self.json {
            self.write_json(json!({ "event": "metrics_listening", "url": url }));
        } else {
            self.write_text(&format!("metrics on {url}"));
        }
    }

    fn write_text(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[{}] {line}", self.label);
    }

    fn write_json(&self, mut v: Value) {
        if let Value::Object(map) = &mut v {
            // `event` first, then `ts_ms`, then the rest: easier to scan.
            let mut ordered = Map::new();
            for (key, value) in std::mem::take(map) {
                let after_name = key == "event";
                ordered.insert(key, value);
                if after_name {
                    ordered.insert("ts_ms".into(), json!(unix_ms()));
                }
            }
            v = Value::Object(ordered);
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `1.4s`, `0.0s`, `75.0s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `host:port` of a ws URL, without scheme, user info, path or query (so a
/// token in the query string never reaches a log line).
pub fn endpoint_label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        "redial".to_owned()
    } else {
        host.to_owned()
    }
}

fn session_json(info: Option<&SessionInfo>) -> (Value, Value) {
    match info {
        Some(i) => (json!(i.id.as_str()), json!(i.name.as_str())),
        None => (Value::Null, Value::Null),
    }
}

/// The JSON object for an event, or `None` for events reported elsewhere.
pub fn json_event(event: &Event) -> Option<Value> {
    let v = match event {
        Event::StateChanged { from, to } => json!({
            "event": "state",
            "from": from.name(),
            "to": to.name(),
        }),
        Event::ReconnectScheduled { attempt, delay } => json!({
            "event": "reconnect_scheduled",
            "attempt": attempt,
            "delay_ms": ms(*delay),
        }),
        Event::DialFailed {
            attempt,
            endpoint,
            status,
            reason,
        } => json!({
            "event": "dial_failed",
            "attempt": attempt,
            "endpoint": endpoint,
            "status": status,
            "reason": reason,
        }),
        Event::Connected {
            reconnect,
            resumed,
            session,
            endpoint,
        } => {
            let (id, name) = session_json(session.as_ref());
            json!({
                "event": "connected",
                "endpoint": endpoint,
                "reconnect": reconnect,
                "resumed": resumed,
                "session_id": id,
                "session_name": name,
            })
        }
        Event::ResumeRejected { previous } => json!({
            "event": "resume_rejected",
            "previous_session_id": previous.id.as_str(),
            "previous_session_name": previous.name.as_str(),
        }),
        Event::Disconnected {
            code,
            reason,
            will_reconnect,
        } => json!({
            "event": "disconnected",
            "code": code,
            "reason": reason,
            "will_reconnect": will_reconnect,
        }),
        Event::GoingAway {
            retry_after,
            window,
        } => json!({
            "event": "going_away",
            "retry_after_ms": ms(*retry_after),
            "window_ms": ms(*window),
        }),
        Event::Stuck { for_, attempts } => json!({
            "event": "stuck",
            "for_ms": ms(*for_),
            "attempts": attempts,
        }),
        Event::TokenProviderFailing {
            consecutive,
            message,
        } => json!({
            "event": "token_provider_failing",
            "consecutive": consecutive,
            "message": message,
        }),
        Event::Message { .. } => return None,
        Event::Acked { seq } => json!({ "event": "acked", "seq": seq }),
        Event::Gap { from, to } => json!({ "event": "gap", "from": from, "to": to }),
        Event::Subscribed { channel, server_id } => json!({
            "event": "subscribed",
            "channel": channel.as_str(),
            "server_id": server_id.as_ref().map(|id| id.as_str()),
        }),
        Event::Resubscribed { channel } => json!({
            "event": "resubscribed",
            "channel": channel.as_str(),
        }),
        Event::SubscribeFailed {
            channel,
            code,
            reason,
        } => json!({
            "event": "subscribe_failed",
            "channel": channel.as_str(),
            "code": code,
            "reason": reason.as_str(),
        }),
        Event::ProtocolError { error } => json!({
            "event": "protocol_error",
            "error": error.to_string(),
        }),
        Event::MessageTooLarge { limit, size, max } => json!({
            "event": "message_too_large",
            "limit": limit.name(),
            "size": size,
            "max": max,
        }),
        Event::ServerError { code, reason } => json!({
            "event": "server_error",
            "code": code,
            "reason": reason.as_str(),
        }),
        Event::ServerFailed { code, reason } => json!({
            "event": "server_failed",
            "code": code,
            "reason": reason.as_str(),
        }),
        Event::Closed {
            reason,
            code,
            detail,
            undelivered,
        } => json!({
            "event": "closed",
            "reason": reason.name(),
            "code": code,
            "detail": detail,
            "undelivered": undelivered,
            "exit_code": crate::client::exit_for(*reason, *undelivered) as u8,
        }),
        other => json!({ "event": "other", "debug": format!("{other:?}") }),
    };
    Some(v)
}

/// The human line for an event, or `None` for events not worth a line.
pub fn text_event(event: &Event) -> Option<String> {
    let line = match event {
        Event::StateChanged { to, .. } => match to {
            State::Connecting => "connecting".to_owned(),
            State::Closing => "closing: flushing what was sent".to_owned(),
            _ => return None,
        },
        Event::ReconnectScheduled { attempt, delay } => {
            format!("reconnecting attempt {attempt} in {}", secs(*delay))
        }
        Event::DialFailed {
            attempt,
            status,
            reason,
            ..
        } => match status {
            Some(s) => format!("dial failed (attempt {attempt}): HTTP {s}: {reason}"),
            None => format!("dial failed (attempt {attempt}): {reason}"),
        },
        Event::Connected {
            reconnect,
            resumed,
            session,
            ..
        } => {
            let mut parts = Vec::new();
            if *reconnect {
                parts.push(if *resumed { "resumed" } else { "new session" }.to_owned());
            }
            if let Some(info) = session {
                parts.push(format!("session {}", info.name.as_str()));
            }
            if parts.is_empty() {
                "connected".to_owned()
            } else {
                format!("connected ({})", parts.join(", "))
            }
        }
        Event::ResumeRejected { previous } => format!(
            "session {} could not be resumed; its name and unread messages are gone",
            previous.name.as_str()
        ),
        Event::Disconnected {
            code,
            reason,
            will_reconnect,
        } => {
            let code = code.map(|c| format!(" {c}")).unwrap_or_default();
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            };
            let then = if *will_reconnect { "" } else { " (final)" };
            format!("disconnected{code}{reason}{then}")
        }
        Event::GoingAway {
            retry_after,
            window,
        } => format!(
            "server going away: back in {} (spread over {})",
            secs(*retry_after),
            secs(*window)
        ),
        Event::Stuck { for_, attempts } => format!(
            "still reconnecting after {} ({attempts} attempts)",
            secs(*for_)
        ),
        Event::TokenProviderFailing {
            consecutive,
            message,
        } => format!("token provider failing ({consecutive} in a row): {message}"),
        Event::Message { .. } | Event::Acked { .. } => return None,
        Event::Gap { from, to } => format!("missed messages {from}..={to} (not replayable)"),
        Event::Subscribed { channel, .. } => format!("subscribed to {}", channel.as_str()),
        Event::Resubscribed { channel } => format!(
            "resubscribed to {}: messages may have been missed while away",
            channel.as_str()
        ),
        Event::SubscribeFailed {
            channel,
            code,
            reason,
        } => format!(
            "subscribe to {} refused: {code} {}",
            channel.as_str(),
            reason.as_str()
        ),
        Event::ProtocolError { error } => format!("protocol error: {error}"),
        Event::ServerError { code, reason } => {
            format!("server error {code}: {}", reason.as_str())
        }
        Event::ServerFailed { code, reason } => {
            format!("server failed {code}: {}", reason.as_str())
        }
        Event::MessageTooLarge { limit, size, max } => format!(
            "inbound {} of {size} bytes over the {max}-byte limit ({} over; --max-message-size)",
            limit.name(),
            size.saturating_sub(*max)
        ),
        Event::Closed {
            reason,
            code,
            detail,
            undelivered,
        } => {
            let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
            let lost = if *undelivered > 0 {
                format!(", {undelivered} messages undelivered")
            } else {
                String::new()
            };
            format!("closed: {}{code}: {detail}{lost}", reason.name())
        }
        other => format!("{other:?}"),
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redial_core::{TerminalReason, Text};

    #[test]
    fn labels_hide_paths_queries_and_credentials() {
        assert_eq!(
            endpoint_label("ws://127.0.0.1:9000/x?token=abc"),
            "127.0.0.1:9000"
        );
        assert_eq!(endpoint_label("wss://u:p@host.example/"), "host.example");
        assert_eq!(endpoint_label("ws://[::1]:80#f"), "[::1]:80");
    }

    #[test]
    fn text_lines_read_like_the_tunnel_cli() {
        let e = Event::ReconnectScheduled {
            attempt: 3,
            delay: Duration::from_millis(1400),
        };
        assert_eq!(text_event(&e).unwrap(), "reconnecting attempt 3 in 1.4s");
        let e = Event::Connected {
            reconnect: true,
            resumed: true,
            session: Some(SessionInfo {
                id: Text::from("s1"),
                name: Text::from("calm-otter-7"),
            }),
            endpoint: 0,
        };
        assert_eq!(
            text_event(&e).unwrap(),
            "connected (resumed, session calm-otter-7)"
        );
    }

    #[test]
    fn json_carries_the_documented_fields() {
        let v = json_event(&Event::Disconnected {
            code: Some(1006),
            reason: "reset".into(),
            will_reconnect: true,
        })
        .unwrap();
        assert_eq!(v["event"], "disconnected");
        assert_eq!(v["code"], 1006);
        assert_eq!(v["will_reconnect"], true);
        let v = json_event(&Event::Closed {
            reason: TerminalReason::AttemptsExhausted,
            code: None,
            detail: "x".into(),
            undelivered: 0,
        })
        .unwrap();
        assert_eq!(v["reason"], "attempts_exhausted");
        assert_eq!(v["exit_code"], 4);
        assert!(v["code"].is_null());
    }
}
