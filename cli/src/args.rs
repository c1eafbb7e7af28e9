//! Command-line arguments (clap derive). Every flag is documented in
//! `cli/README.md`; keep the two in step.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "redial",
    version,
    about = "A WebSocket client that stays connected: stdin lines out, messages in",
    long_about = "A WebSocket client that stays connected.\n\n\
        Every stdin line is sent as a message; every message received is \
        printed on stdout, one per line. Connection events go to stderr \
        (--events text|json). On stdin EOF everything sent is flushed (raw) \
        or acknowledged (wire), then the socket closes with 1000.\n\n\
        Exit codes: 0 clean, 1 other failure, 2 usage or configuration, \
        3 rejected by the server, 4 reconnect attempts exhausted.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Wire server (redial-server, loopback only) until Ctrl-C.
    Serve(Box<ServeArgs>),
    /// A Wire server, the fault proxy and clients through scripted chaos.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    /// Plain WebSocket messages, no acknowledgements.
    Raw,
    /// redial's Wire protocol (subprotocol redial.v1): acknowledged,
    /// replayed, resumable.
    Wire,
    /// GraphQL subscriptions (subprotocol graphql-transport-ws).
    GraphqlWs,
    /// The NATS client protocol over a WebSocket listener.
    Nats,
    /// JSON-RPC 2.0 with pubsub (`eth_subscribe`): subscriptions renewed
    /// after every reconnect, stdin lines as calls.
    JsonRpc,
    /// MQTT 3.1.1 over WebSocket (subprotocol mqtt) with a persistent
    /// session: QoS 1 and 2 publishes survive reconnects.
    Mqtt,
    /// Socket.IO 5 (Engine.IO 4, WebSocket transport; URL
    /// ws://HOST:PORT/socket.io/?EIO=4&transport=websocket): events of the
    /// --subscribe names printed, stdin lines emitted as --channel events,
    /// connection state recovery across reconnects.
    #[value(name = "socket.io")]
    SocketIo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventsArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackoffArg {
    /// The library's default: a full-jitter first retry within 2 s, then
    /// 2.4 s x1.6 +-20 % up to 20 s (the other --backoff-* flags do not apply).
    Default,
    /// U(0, min(cap, first * 2^(n-1))).
    FullJitter,
    /// min(cap, first * multiplier^(n-1)) * (1 +- jitter).
    Proportional,
    /// min(cap, U(first, 3 * previous)).
    Decorrelated,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The ws:// or wss:// URL to connect to.
    #[arg(value_name = "URL", required = true)]
    pub url: Option<String>,

    /// Another node of the same service (repeatable, same scheme as URL):
    /// the client starts on one of URL and these, stays while connections
    /// hold and moves to the next after a failed dial or a connection that
    /// did not last.
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,

    /// raw: stdin lines are plain messages; wire: redial.v1 publishes,
    /// acknowledged and replayed across reconnects; graphql-ws: prints each
    /// `next` payload of the --subscribe operations; nats: prints messages
    /// of the --subscribe subjects, publishes stdin lines to --channel;
    /// json-rpc: prints `KEY<TAB>RESULT` per notification of the
    /// --subscribe subscriptions (keys 1, 2, ... in order), and each stdin
    /// line `METHOD [PARAMS-JSON]` is a call whose reply is printed as one
    /// JSON line; mqtt: prints messages of the --subscribe topic filters
    /// (`TOPIC<TAB>PAYLOAD` with several), publishes stdin lines to
    /// --channel at --qos; socket.io: prints the arguments (a JSON array)
    /// of each event named by --subscribe (`EVENT<TAB>ARGS` with several),
    /// and emits each stdin line, a JSON array of arguments, as a --channel
    /// event.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Raw)]
    pub protocol: ProtocolArg,

    /// Send stdin lines as binary frames instead of text.
    #[arg(long)]
    pub binary: bool,

    /// Subscribe (repeatable): a channel (wire), a subscription operation
    /// such as 'subscription { ticks }' (graphql-ws), a subject (nats), the
    /// subscribe params as JSON such as '["newHeads"]' (json-rpc), a topic
    /// filter with an optional QoS such as 'sensors/+/temp:2' (mqtt), an
    /// event name (socket.io).
    #[arg(long, value_name = "CHANNEL|QUERY|SUBJECT|PARAMS|TOPIC[:QOS]|EVENT")]
    pub subscribe: Vec<String>,

    /// Publish stdin lines to CHANNEL (wire), subject (nats), topic (mqtt)
    /// or event (socket.io); all but wire need it to send anything.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,

    /// The Socket.IO namespace to join (socket.io only; default `/`).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// The connection_init payload, a JSON object (graphql-ws only); a
    /// --token/--token-cmd token is added to it as "token".
    #[arg(long, value_name = "JSON")]
    pub init_payload: Option<String>,

    /// Call METHOD (no params) every --liveness-every-ms whatever the
    /// traffic; no reply within --liveness-deadline-ms drops the link and
    /// reconnects (json-rpc only; e.g. eth_chainId).
    #[arg(long, value_name = "METHOD")]
    pub liveness_call: Option<String>,

    /// Interval of the --liveness-call.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 15_000,
        requires = "liveness_call"
    )]
    pub liveness_every_ms: u64,

    /// Time the --liveness-call's reply has.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 10_000,
        requires = "liveness_call"
    )]
    pub liveness_deadline_ms: u64,

    /// The QoS of every publish, 0, 1 or 2 (mqtt only; default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,

    /// The MQTT client id, which names the broker's session (mqtt only;
    /// default `redial-` and the process id).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// The MQTT user name; the token is its password (mqtt only).
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,

    /// Send MSG first on every connection (repeatable; raw only).
    #[arg(long, value_name = "MSG")]
    pub on_connect: Vec<String>,

    /// Send MSG after every connect, before anything queued (repeatable;
    /// raw only): a feed's subscribe request.
    #[arg(long, value_name = "MSG")]
    pub resubscribe: Vec<String>,

    /// Session name to request from the server (wire only).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Extra header on every upgrade request, as 'Name: value' (repeatable).
    #[arg(long, value_name = "HEADER", value_parser = parse_header)]
    pub header: Vec<(String, String)>,

    /// A fixed token, sent on every dial (`Authorization: Bearer TOKEN`, or in
    /// the opening message of protocols that carry it themselves).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_cmd")]
    pub token: Option<String>,

    /// Run CMD with `sh -c` before every dial; its stdout, trimmed, is the
    /// token. A non-zero exit or empty output is a transient failure.
    #[arg(long, value_name = "CMD")]
    pub token_cmd: Option<String>,

    /// Where connection events go on stderr: text or json (one object per line).
    #[arg(long, value_enum, default_value_t = EventsArg::Text)]
    pub events: EventsArg,

    /// Don't close on stdin EOF: keep printing messages until Ctrl-C or the
    /// session ends.
    #[arg(long)]
    pub keep_open: bool,

    /// Reconnect attempts per outage before giving up (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_reconnect_attempts: u32,

    /// Backoff policy between reconnect attempts.
    #[arg(long, value_enum, default_value_t = BackoffArg::Default)]
    pub backoff: BackoffArg,

    /// First window (full-jitter, default 2000), initial delay
    /// (proportional, default 1000) or base (decorrelated, default 1000).
    #[arg(long, value_name = "MS")]
    pub backoff_first_ms: Option<u64>,

    /// Largest delay window (default 30000; proportional 120000).
    #[arg(long, value_name = "MS")]
    pub backoff_cap_ms: Option<u64>,

    /// Growth per attempt (proportional only).
    #[arg(long, value_name = "X", default_value_t = 1.6)]
    pub backoff_multiplier: f64,

    /// Spread either side as a fraction of the delay, in [0, 1)
    /// (proportional only).
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    pub backoff_jitter: f64,

    /// Keepalive ping interval on a quiet link (0 = off).
    #[arg(long, value_name = "MS", default_value_t = 15_000)]
    pub ping_interval_ms: u64,

    /// Silence after a ping that means the link is dead.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub pong_timeout_ms: u64,

    /// Time allowed for token + TCP + upgrade (+ WELCOME for wire).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// Uptime after which the backoff ladder resets (flap damping).
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub stable_after_ms: u64,

    /// Report `stuck` this far into an outage.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub stuck_after_ms: u64,

    /// On close, how long to wait for unsent (raw) or unacknowledged (wire)
    /// messages.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub close_linger_ms: u64,

    /// Largest inbound message (and frame) accepted, in bytes. A larger one
    /// is not delivered: the client closes with 1009 and ends with
    /// `message_too_large`.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_message_size: u64,

    /// Also trust the CA (or self-signed) certificates in this PEM file for
    /// wss:// (the public web roots stay trusted).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Serve the client's metrics in the Prometheus text format on
    /// http://ADDR/metrics (loopback addresses only; port 0 picks a free
    /// port, printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// The `client` label of the metrics and spans (1 to 64 of A-Z a-z
    /// 0-9 _ - .).
    #[arg(long, value_name = "LABEL")]
    pub client_label: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen; loopback addresses only. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Serve the server's metrics in the Prometheus text format on
    /// http://ADDR/metrics (loopback addresses only; port 0 picks a free
    /// port, printed before the listening line).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// How long a session stays resumable after its connection is lost.
    #[arg(long, value_name = "MS", default_value_t = 24 * 3600 * 1000)]
    pub token_lifetime_ms: u64,

    /// Messages kept per session for replay.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub replay_capacity: usize,

    /// Refuse SUBSCRIBE to CHANNEL (repeatable).
    #[arg(long, value_name = "CHANNEL")]
    pub deny_channel: Vec<String>,

    /// Admit at most N upgrades per second (503 + Retry-After for the rest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub admission_per_sec: Option<u32>,

    /// Refuse every upgrade with this HTTP status (400-599).
    #[arg(long, value_name = "STATUS", value_parser = clap::value_parser!(u16).range(400..600))]
    pub reject_status: Option<u16>,

    /// With --reject-status: send Retry-After with this many seconds.
    #[arg(long, value_name = "S", requires = "reject_status")]
    pub retry_after_s: Option<u64>,

    /// Drop every connection abruptly after its N-th frame following HELLO.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub close_after: Option<u64>,

    /// Seed for generated session names.
    #[arg(long, value_name = "N", default_value_t = 0x5EED)]
    pub name_seed: u64,

    /// On Ctrl-C or SIGTERM: the GOING_AWAY retry_after_ms sent to every
    /// client before the 1001 close.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub going_away_retry_ms: u64,

    /// On Ctrl-C or SIGTERM: the GOING_AWAY window_ms (clients spread their
    /// reconnects over it).
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub going_away_window_ms: u64,

    /// Keep sessions and channel logs in the Redis at URL (loopback only)
    /// instead of this process: every `serve` on the same Redis, prefix and
    /// token key is one node of a cluster, and a client resumes on any.
    #[arg(long, value_name = "URL", requires = "token_key_file")]
    pub redis: Option<String>,

    /// With --redis: the prefix of every key (nodes of one cluster share it).
    #[arg(long, value_name = "PREFIX", requires = "redis")]
    pub redis_prefix: Option<String>,

    /// Sign resume tokens with the key in FILE (64 hex digits), so nodes of
    /// a cluster accept each other's tokens. Default: a random key.
    #[arg(long, value_name = "FILE")]
    pub token_key_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the clients publish (5 to 3600).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub seconds: u64,

    /// How many clients (1 to 64).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub clients: u64,

    /// Seed for the clients' jitter, the random chaos and the server's names.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
}

/// `'Name: value'` (the value may be empty; surrounding spaces are trimmed).
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected 'Name: value', got {s:?}"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("empty header name in {s:?}"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            parse_header("X-Trace:  a:b "),
            Ok(("X-Trace".into(), "a:b".into()))
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn url_or_subcommand() {
        let c = Cli::try_parse_from(["redial", "ws://127.0.0.1:1/"]).unwrap();
        assert!(c.command.is_none());
        let c = Cli::try_parse_from(["redial", "serve", "--listen", "127.0.0.1:9"]).unwrap();
        assert!(matches!(c.command, Some(Command::Serve(_))));
        assert!(Cli::try_parse_from(["redial"]).is_err());
    }
}
