//! `redial [OPTIONS] <URL>`: stdin lines out, messages in, events on stderr.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use redial_core::mqtt::QoS;
use redial_core::protocol::json_rpc::Liveness;
use redial_core::{
    AuthToken, Backoff, CallError, CallOptions, Config, ConfigError, Event, GraphqlWs, JsonRpc,
    Mqtt, Nats, Payload, Raw, SendError, SocketIo, TerminalReason, Text, Wire,
};
use redial_tokio::tls::certificates_from_pem;
use redial_tokio::tls::rustls::pki_types::CertificateDer;
use redial_tokio::tungstenite::protocol::WebSocketConfig;
use redial_tokio::{BuildError, Events, Handle};
use tokio::sync::mpsc;

use crate::args::{BackoffArg, ClientArgs, ProtocolArg};
use crate::report::{endpoint_label, Reporter};
use crate::signals::Signals;
use crate::token::run_token_cmd;
use crate::{CliError, Exit};

/// Lines buffered between the stdin thread and the session.
const STDIN_BUFFER: usize = 64;

/// The exit code for a session that ended with `reason`.
pub fn exit_for(reason: TerminalReason, undelivered: usize) -> Exit {
    match reason {
        TerminalReason::ClosedByUser if undelivered == 0 => Exit::Clean,
        TerminalReason::ClosedByUser => Exit::Failure,
        TerminalReason::AttemptsExhausted => Exit::Exhausted,
        TerminalReason::InvalidToken
        | TerminalReason::TokenExpired
        | TerminalReason::ChannelNotAuthorized
        | TerminalReason::AccountSuspended
        | TerminalReason::AdminDisconnect
        | TerminalReason::PolicyViolation
        | TerminalReason::Unauthorized
        | TerminalReason::Forbidden
        | TerminalReason::UnsupportedVersion
        | TerminalReason::NameUnavailable
        | TerminalReason::ServerError(_)
        | TerminalReason::CloseCode(_) => Exit::Rejected,
        _ => Exit::Failure,
    }
}

/// Builds the session configuration from the flags. Errors name the flag.
pub fn build_config(a: &ClientArgs) -> Result<Config, CliError> {
    let ms = Duration::from_millis;
    let backoff = match a.backoff {
        BackoffArg::Default if a.backoff_first_ms.is_some() || a.backoff_cap_ms.is_some() => {
            return Err(CliError::Usage(
                "--backoff-first-ms and --backoff-cap-ms need --backoff full-jitter, \
                 proportional or decorrelated (the default policy has its own)"
                    .to_owned(),
            ));
        }
        BackoffArg::Default => Backoff::default(),
        BackoffArg::FullJitter => Backoff::full_jitter(
            ms(a.backoff_first_ms.unwrap_or(2_000)),
            ms(a.backoff_cap_ms.unwrap_or(30_000)),
        ),
        BackoffArg::Proportional => Backoff::proportional(
            ms(a.backoff_first_ms.unwrap_or(1_000)),
            a.backoff_multiplier,
            a.backoff_jitter,
            ms(a.backoff_cap_ms.unwrap_or(120_000)),
        ),
        BackoffArg::Decorrelated => Backoff::decorrelated(
            ms(a.backoff_first_ms.unwrap_or(1_000)),
            ms(a.backoff_cap_ms.unwrap_or(30_000)),
        ),
    };
    let mut b = Config::builder()
        .backoff(backoff)
        .max_attempts(a.max_reconnect_attempts)
        .ping_interval((a.ping_interval_ms > 0).then(|| ms(a.ping_interval_ms)))
        .pong_timeout(ms(a.pong_timeout_ms))
        .connect_timeout(ms(a.connect_timeout_ms))
        .stable_after(ms(a.stable_after_ms))
        .stuck_after(ms(a.stuck_after_ms))
        .close_linger(ms(a.close_linger_ms))
        .token_provider(a.token.is_some() || a.token_cmd.is_some());
    if let Some(name) = &a.name {
        b = b.session_name(name.as_str());
    }
    b.build().map_err(|e| CliError::Usage(config_message(&e)))
}

/// A config error in terms of the flag that caused it.
fn config_message(e: &ConfigError) -> String {
    match e {
        ConfigError::Backoff(why) => {
            format!("invalid backoff (--backoff, --backoff-first-ms, --backoff-cap-ms, ...): {why}")
        }
        ConfigError::OutOfRange { field, why } => {
            let flag = match *field {
                "ping_interval" => "--ping-interval-ms",
                "pong_timeout" => "--pong-timeout-ms",
                "connect_timeout" => "--connect-timeout-ms",
                "stable_after" => "--stable-after-ms",
                "stuck_after" => "--stuck-after-ms",
                "close_linger" => "--close-linger-ms",
                "session_name" => "--name",
                _ => return e.to_string(),
            };
            let why = if *field == "ping_interval" {
                "must be at least 10 ms (or 0 for off)"
            } else {
                why
            };
            format!("invalid {flag}: {why}")
        }
        other => other.to_string(),
    }
}

fn usage_checks(a: &ClientArgs) -> Result<String, CliError> {
    let url = a.url.clone().unwrap_or_default();
    for url in std::iter::once(&url).chain(&a.endpoint) {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("ws://") || lower.starts_with("wss://")) {
            return Err(CliError::Usage(format!(
                "invalid URL {url:?}: must start with ws:// or wss://"
            )));
        }
    }
    use ProtocolArg::{GraphqlWs as Gql, JsonRpc as J, Mqtt as M, Nats as N, Raw as R, Wire as W};
    let sio = ProtocolArg::SocketIo;
    let allowed: [(&str, bool, &[ProtocolArg]); 11] = [
        (
            "--subscribe",
            !a.subscribe.is_empty(),
            &[W, Gql, N, J, M, sio],
        ),
        ("--liveness-call", a.liveness_call.is_some(), &[J]),
        ("--channel", a.channel.is_some(), &[W, N, M, sio]),
        ("--qos", a.qos.is_some(), &[M]),
        ("--client-id", a.client_id.is_some(), &[M]),
        ("--username", a.username.is_some(), &[M]),
        ("--namespace", a.namespace.is_some(), &[sio]),
        ("--name", a.name.is_some(), &[W]),
        ("--init-payload", a.init_payload.is_some(), &[Gql]),
        ("--on-connect", !a.on_connect.is_empty(), &[R]),
        ("--resubscribe", !a.resubscribe.is_empty(), &[R]),
    ];
    if let Some((flag, _, protocols)) = allowed
        .iter()
        .find(|(_, used, ok)| *used && !ok.contains(&a.protocol))
    {
        let names: Vec<_> = protocols
            .iter()
            .filter_map(clap::ValueEnum::to_possible_value)
            .map(|v| v.get_name().to_owned())
            .collect();
        return Err(CliError::Usage(format!(
            "{flag} needs --protocol {}",
            names.join(" or ")
        )));
    }
    if let Some(t) = &a.token {
        if t.trim().is_empty() {
            return Err(CliError::Usage("--token must not be empty".into()));
        }
    }
    Ok(url)
}

/// The `Mqtt` the mqtt flags describe.
fn mqtt(a: &ClientArgs) -> Result<Mqtt, CliError> {
    let qos = a.qos.and_then(QoS::from_u8).unwrap_or(QoS::AtLeastOnce);
    let id = a
        .client_id
        .clone()
        .unwrap_or_else(|| format!("redial-{}", std::process::id()));
    let mut m = Mqtt::builder(id).qos(qos);
    if let Some(user) = &a.username {
        m = m.username(user.as_str());
    }
    m.build()
        .map_err(|e| CliError::Usage(format!("invalid MQTT settings: {e}")))
}

/// `TOPIC[:QOS]`: the filter and the QoS spec (empty: the default). A
/// colon not followed by 0, 1 or 2 belongs to the filter.
fn mqtt_subscription(arg: &str) -> (&str, &str) {
    match arg.rsplit_once(':') {
        Some((filter, qos)) if matches!(qos, "0" | "1" | "2") => (filter, qos),
        _ => (arg, ""),
    }
}

/// The certificates in `--ca-file`.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let fail = |why: String| CliError::Usage(format!("--ca-file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    certificates_from_pem(&pem).map_err(|e| fail(e.to_string()))
}

fn build_error(e: BuildError) -> CliError {
    match e {
        BuildError::InvalidUrl(_)
        | BuildError::MixedSchemes
        | BuildError::TooManyEndpoints(_)
        | BuildError::InvalidHeader(_)
        | BuildError::InvalidClientLabel(_)
        | BuildError::InvalidRootCertificate(_) => CliError::Usage(e.to_string()),
        other => CliError::Failure(other.to_string()),
    }
}

/// What ended the session, as seen by the event task.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    reason: TerminalReason,
    undelivered: usize,
}

/// Runs the client until the session ends; returns the exit code.
pub async fn run(a: ClientArgs) -> Result<Exit, CliError> {
    let url = usage_checks(&a)?;
    let config = build_config(&a)?;
    let reporter = Reporter::new(a.events, endpoint_label(&url));

    // Before the connection is built: the driver takes its metric handles
    // from the recorder installed then.
    let metrics = match a.metrics_listen {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let mut builder = redial_tokio::builder(url.clone()).config(config);
    if let Some(label) = &a.client_label {
        builder = builder.client_label(label.as_str());
    }
    if !a.endpoint.is_empty() {
        builder = builder.endpoints(std::iter::once(url).chain(a.endpoint.iter().cloned()));
    }
    builder = match a.protocol {
        ProtocolArg::Raw => {
            let raw = a.on_connect.iter().fold(Raw::new(), |raw, m| {
                raw.on_connect(Payload::text(m.as_str()))
            });
            builder.protocol(raw)
        }
        ProtocolArg::Wire => builder.protocol(Wire),
        ProtocolArg::GraphqlWs => {
            let mut gql = GraphqlWs::new();
            if let Some(json) = &a.init_payload {
                gql = gql
                    .init_payload(json)
                    .map_err(|e| CliError::Usage(format!("invalid --init-payload: {e}")))?;
            }
            builder.protocol(gql)
        }
        ProtocolArg::Nats => builder.protocol(Nats::new()),
        ProtocolArg::JsonRpc => {
            let mut rpc = JsonRpc::new();
            if let Some(method) = &a.liveness_call {
                rpc = rpc.liveness(Liveness::new(
                    method.clone(),
                    Duration::from_millis(a.liveness_every_ms),
                    Duration::from_millis(a.liveness_deadline_ms),
                ));
            }
            builder.protocol(rpc)
        }
        ProtocolArg::Mqtt => builder.protocol(mqtt(&a)?),
        ProtocolArg::SocketIo => {
            let mut sio = SocketIo::new();
            if let Some(ns) = &a.namespace {
                sio = sio
                    .namespace(ns)
                    .map_err(|e| CliError::Usage(format!("invalid --namespace: {e}")))?;
            }
            builder.protocol(sio)
        }
    };
    for (name, value) in &a.header {
        builder = builder.header(name.as_str(), value.as_str());
    }
    // One limit for messages and frames: a user thinks in messages.
    let max = usize::try_from(a.max_message_size).unwrap_or(usize::MAX);
    builder = builder.websocket_config(
        WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max)),
    );
    if let Some(path) = &a.ca_file {
        builder = builder.root_certificates(read_ca_file(path)?);
    }
    if let Some(token) = &a.token {
        let token = AuthToken::new(token.trim());
        builder = builder.token_provider(move || {
            let token = token.clone();
            async move { Ok(token) }
        });
    } else if let Some(cmd) = &a.token_cmd {
        let cmd: Arc<str> = Arc::from(cmd.as_str());
        builder = builder.token_provider(move || run_token_cmd(cmd.clone()));
    }
    let mut signals = Signals::listen()?;
    let (handle, events) = builder.connect().map_err(build_error)?;
    let _metrics = match metrics {
        Some((listener, recorder)) => {
            if let Ok(addr) = listener.local_addr() {
                reporter.metrics_listening(addr);
            }
            Some(AbortOnDrop(tokio::spawn(crate::metrics::serve(
                listener, recorder,
            ))))
        }
        None => None,
    };
    // Read events from the start: the driver waits while they pile up.
    let calls = a.protocol == ProtocolArg::JsonRpc;
    // The channel goes with each message where it tells them apart: MQTT
    // topics and Socket.IO event names when there are several.
    let keyed = calls
        || (matches!(a.protocol, ProtocolArg::Mqtt | ProtocolArg::SocketIo)
            && a.subscribe.len() > 1);
    let mut printer = tokio::spawn(print_events(events, reporter.clone(), keyed));
    // Recorded now, sent once connected and renewed after reconnects.
    for (i, sub) in a.subscribe.iter().enumerate() {
        let result = match a.protocol {
            ProtocolArg::GraphqlWs => match GraphqlWs::subscription(sub, None) {
                Ok(spec) => handle.subscribe_with(format!("{}", i + 1), spec).await,
                Err(e) => {
                    reporter.warning(&format!("cannot subscribe with {sub:?}: {e}"));
                    continue;
                }
            },
            ProtocolArg::JsonRpc => match JsonRpc::subscription(sub) {
                Ok(spec) => handle.subscribe_with(format!("{}", i + 1), spec).await,
                Err(e) => {
                    reporter.warning(&format!("cannot subscribe with {sub:?}: {e}"));
                    continue;
                }
            },
            ProtocolArg::Mqtt => {
                let (filter, qos) = mqtt_subscription(sub);
                handle.subscribe_with(filter, Payload::text(qos)).await
            }
            _ => handle.subscribe(sub.as_str()).await,
        };
        if let Err(e) = result {
            reporter.warning(&format!("cannot subscribe to {sub}: {e}"));
        }
    }
    for (i, message) in a.resubscribe.iter().enumerate() {
        let spec = Payload::text(message.as_str());
        if let Err(e) = handle.subscribe_with(format!("r{}", i + 1), spec).await {
            reporter.warning(&format!("cannot keep {message:?}: {e}"));
        }
    }
    let mut forwarder = if calls {
        tokio::spawn(call_stdin(handle.clone(), reporter.clone()))
    } else {
        tokio::spawn(forward_stdin(
            handle.clone(),
            reporter.clone(),
            a.binary,
            a.channel.clone().map(Text::from),
        ))
    };

    // Wait for stdin to end, a signal, or the session to end on its own.
    let ended = tokio::select! {
        done = &mut printer => Some(done),
        _ = &mut forwarder, if !a.keep_open => None,
        _ = signals.recv() => None,
    };
    forwarder.abort();
    let outcome = match ended {
        Some(done) => done.map_err(join_error)?,
        None => {
            // Graceful close; a second signal stops waiting for it.
            tokio::select! {
                _ = handle.close() => printer.await.map_err(join_error)?,
                _ = signals.recv() => {
                    reporter.warning("interrupted again; not waiting for the close to finish");
                    return Ok(Exit::Interrupted);
                }
            }
        }
    };
    match outcome {
        Some(o) => Ok(exit_for(o.reason, o.undelivered)),
        None => Err(CliError::Failure(
            "the session ended without saying why".into(),
        )),
    }
}

/// Stops the metrics endpoint with the client.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn join_error(e: tokio::task::JoinError) -> CliError {
    CliError::Failure(format!("event task failed: {e}"))
}

/// Prints messages on stdout and events on stderr until the session ends;
/// `keyed`: a message with a channel is printed as `CHANNEL<TAB>PAYLOAD`.
async fn print_events(mut events: Events, reporter: Reporter, keyed: bool) -> Option<Outcome> {
    let mut outcome = None;
    let mut stdout_ok = true;
    while let Some(event) = events.recv().await {
        match &event {
            Event::Message {
                payload, channel, ..
            } => {
                if stdout_ok {
                    let mut out = std::io::stdout().lock();
                    let key = channel.as_ref().filter(|_| keyed);
                    let written = key
                        .map_or(Ok(()), |k| {
                            out.write_all(k.as_bytes())
                                .and_then(|()| out.write_all(b"\t"))
                        })
                        .and_then(|()| out.write_all(payload.bytes()))
                        .and_then(|()| out.write_all(b"\n"))
                        .and_then(|()| out.flush());
                    if let Err(e) = written {
                        stdout_ok = false;
                        reporter.warning(&format!("stdout: {e}; messages are no longer printed"));
                    }
                }
            }
            Event::Closed {
                reason,
                undelivered,
                ..
            } => {
                outcome = Some(Outcome {
                    reason: *reason,
                    undelivered: *undelivered,
                });
                reporter.event(&event);
            }
            _ => reporter.event(&event),
        }
    }
    outcome
}

/// Makes each stdin line `METHOD [PARAMS-JSON]` a call (params `[]` when
/// absent), one at a time, and prints its end as one JSON line on stdout:
/// `{"line":N,"result":..}`, or `{"line":N,"error":{"code":..,"message":..}}`
/// (code `null` when the node did not answer: timeout, connection lost).
async fn call_stdin(handle: Handle, reporter: Reporter) {
    let Some(mut rx) = stdin_lines(&reporter) else {
        return;
    };
    let mut line_no = 0u64;
    while let Some(line) = rx.recv().await {
        line_no += 1;
        let line = String::from_utf8_lossy(&line).into_owned();
        let (method, params) = match line.trim().split_once(char::is_whitespace) {
            Some((m, p)) => (m, p.trim()),
            None => (line.trim(), "[]"),
        };
        if method.is_empty() {
            continue;
        }
        let request = match JsonRpc::request(method, params) {
            Ok(r) => r,
            Err(e) => {
                reporter.warning(&format!(
                    "line {line_no}: params must be a JSON array or object: {e}"
                ));
                continue;
            }
        };
        let outcome = match handle.call(request, CallOptions::new()).await {
            Ok(result) => {
                let raw = result.as_text().unwrap_or("null");
                format!(r#"{{"line":{line_no},"result":{raw}}}"#)
            }
            Err(CallError::Rejected { code, message }) => serde_json::json!({
                "line": line_no,
                "error": { "code": code, "message": message.as_str() },
            })
            .to_string(),
            Err(e @ CallError::Refused(SendError::Closing | SendError::Closed)) => {
                reporter.warning(&format!("line {line_no} not called: {e}"));
                return;
            }
            Err(e) => serde_json::json!({
                "line": line_no,
                "error": { "code": null, "message": e.to_string() },
            })
            .to_string(),
        };
        let mut out = std::io::stdout().lock();
        if out
            .write_all(outcome.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// A channel of stdin lines, read on a plain thread (a blocking stdin read
/// must not hold up shutdown); `None` (after a warning) when that thread
/// cannot start.
fn stdin_lines(reporter: &Reporter) -> Option<mpsc::Receiver<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(STDIN_BUFFER);
    let reader = reporter.clone();
    let spawned = std::thread::Builder::new()
        .name("redial-stdin".into())
        .spawn(move || read_lines(&tx, &reader));
    match spawned {
        Ok(_) => Some(rx),
        Err(e) => {
            reporter.warning(&format!("cannot read stdin: {e}"));
            None
        }
    }
}

/// Sends every stdin line until EOF or the session refuses.
async fn forward_stdin(handle: Handle, reporter: Reporter, binary: bool, channel: Option<Text>) {
    let Some(mut rx) = stdin_lines(&reporter) else {
        return;
    };
    let mut line_no = 0u64;
    while let Some(line) = rx.recv().await {
        line_no += 1;
        let payload = if binary {
            Payload::binary(line)
        } else {
            match String::from_utf8(line) {
                Ok(s) => Payload::text(s),
                Err(e) => {
                    reporter.warning(&format!(
                        "line {line_no} is not UTF-8; sent with replacement characters (use --binary)"
                    ));
                    Payload::text(String::from_utf8_lossy(e.as_bytes()).into_owned())
                }
            }
        };
        let sent = match &channel {
            Some(c) => handle.publish(c.clone(), payload).await,
            None => handle.send(payload).await,
        };
        match sent {
            Ok(_) => {}
            Err(e @ (SendError::Closing | SendError::Closed)) => {
                reporter.warning(&format!("line {line_no} not sent: {e}"));
                return;
            }
            Err(e) => reporter.warning(&format!("line {line_no} not sent: {e}")),
        }
    }
}

/// Reads stdin line by line (without the `\n` and a `\r` before it).
fn read_lines(tx: &mpsc::Sender<Vec<u8>>, reporter: &Reporter) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                reporter.warning(&format!("reading stdin: {e}; treating it as EOF"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ClientArgs {
        let mut v = vec!["redial"];
        v.extend_from_slice(extra);
        v.push("ws://127.0.0.1:1/");
        crate::args::Cli::try_parse_from(v).unwrap().client
    }

    #[test]
    fn defaults_build_the_library_defaults() {
        let c = build_config(&args(&[])).unwrap();
        assert_eq!(c.max_attempts(), 100);
        assert_eq!(c.backoff(), &Backoff::default());
        assert_eq!(c.ping_interval(), Some(Duration::from_secs(15)));
        let c = build_config(&args(&["--ping-interval-ms", "0"])).unwrap();
        assert_eq!(c.ping_interval(), None);
    }

    #[test]
    fn config_errors_name_the_flag() {
        let e = build_config(&args(&["--ping-interval-ms", "5"])).unwrap_err();
        assert!(e.to_string().contains("--ping-interval-ms"), "{e}");
        let e = build_config(&args(&["--backoff-first-ms", "100"])).unwrap_err();
        assert!(e.to_string().contains("--backoff full-jitter"), "{e}");
        let e = build_config(&args(&[
            "--backoff",
            "full-jitter",
            "--backoff-first-ms",
            "0",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("backoff"), "{e}");
        let e = build_config(&args(&[
            "--backoff",
            "proportional",
            "--backoff-jitter",
            "1.5",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("jitter"), "{e}");
    }

    #[test]
    fn protocol_flags_need_their_protocol() {
        let e = usage_checks(&args(&["--subscribe", "x"])).unwrap_err();
        assert!(
            e.to_string().contains("--subscribe needs --protocol"),
            "{e}"
        );
        let e = usage_checks(&args(&["--protocol", "nats", "--init-payload", "{}"])).unwrap_err();
        assert!(e.to_string().contains("graphql-ws"), "{e}");
        let e = usage_checks(&args(&["--protocol", "wire", "--resubscribe", "x"])).unwrap_err();
        assert!(e.to_string().contains("--protocol raw"), "{e}");
        for ok in [
            &[
                "--protocol",
                "graphql-ws",
                "--subscribe",
                "subscription { t }",
            ][..],
            &[
                "--protocol",
                "nats",
                "--subscribe",
                "a.>",
                "--channel",
                "a.b",
            ],
            &["--on-connect", "auth", "--resubscribe", "sub btc"],
            &[
                "--protocol",
                "mqtt",
                "--subscribe",
                "a/#:2",
                "--qos",
                "0",
                "--client-id",
                "c",
            ],
        ] {
            usage_checks(&args(ok)).unwrap();
        }
        let e = usage_checks(&args(&["--protocol", "wire", "--qos", "1"])).unwrap_err();
        assert!(e.to_string().contains("--qos needs --protocol mqtt"), "{e}");
    }

    #[test]
    fn an_mqtt_subscription_takes_an_optional_qos_suffix() {
        assert_eq!(mqtt_subscription("a/+/b:2"), ("a/+/b", "2"));
        assert_eq!(mqtt_subscription("a/#"), ("a/#", ""));
        assert_eq!(mqtt_subscription("host:8080"), ("host:8080", ""));
    }

    #[test]
    fn exit_codes_follow_the_reason() {
        assert_eq!(exit_for(TerminalReason::ClosedByUser, 0), Exit::Clean);
        assert_eq!(exit_for(TerminalReason::ClosedByUser, 2), Exit::Failure);
        assert_eq!(exit_for(TerminalReason::Forbidden, 0), Exit::Rejected);
        assert_eq!(exit_for(TerminalReason::InvalidToken, 0), Exit::Rejected);
        assert_eq!(
            exit_for(TerminalReason::AttemptsExhausted, 0),
            Exit::Exhausted
        );
    }
}
