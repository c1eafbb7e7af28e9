//! Shared pieces of redial's end-to-end benchmarks: a counting WebSocket
//! server on 127.0.0.1, percentiles, `/proc` readers and a tiny argument
//! parser. The benchmarks themselves are the binaries in `src/bin/`:
//!
//! - `e2e-throughput`: client→server messages/s for redial-tokio, plain
//!   tokio-tungstenite, stream-tungstenite, ezsockets and redial-async-std.
//! - `e2e-recovery`: time from a proxy cut to `Event::Connected`, and
//!   half-open detection time, with the default policy.
//! - `e2e-rss`: resident memory per idle connection, redial-tokio against
//!   plain tokio-tungstenite, one process per variant.
//! - `e2e-nats`: NATS subscription messages/s, redial-tokio with `Nats`
//!   against async-nats, over one nats-server's WebSocket listener.
//! - `e2e-mqtt`: MQTT subscription messages/s at QoS 0 and 1, redial-tokio
//!   with `Mqtt` against rumqttc, over one mosquitto's WebSocket listener.
//! - `e2e-server`: redial-server fan-out (memory and Redis stores), resume
//!   on another node, and fan-out on 1 to 3 nodes.
//! - `e2e-server-memory`: redial-server heap and RSS per idle session, live
//!   and held in the memory store.
//! - `e2e-socketio`: redial-server (Redis store) side by side with a
//!   Socket.IO 4.8 server (connection state recovery, Redis Streams
//!   adapter): memory per idle connection, fan-out, latency, resume burst.
//!
//! Every binary takes `--quick` for a CI smoke run of a few seconds that
//! prints figures but asserts nothing about timing.
#![forbid(unsafe_code)]

pub mod progress;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// What the server saw, shared with the benchmark.
#[derive(Debug, Default)]
pub struct Counters {
    /// Data messages (text or binary) received, over all connections.
    pub messages: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
    /// Connections whose WebSocket handshake completed and that are still
    /// open.
    pub live: AtomicUsize,
    /// When `messages` reaches this value, `reached` is notified once.
    target: AtomicU64,
    reached: Notify,
}

impl Counters {
    /// Arms the notification for `messages == target`.
    pub fn set_target(&self, target: u64) {
        self.target.store(target, Ordering::SeqCst);
    }

    /// Resolves once `messages` reached the armed target (at once if it
    /// already has).
    pub async fn wait_target(&self) {
        loop {
            let notified = self.reached.notified();
            if self.messages.load(Ordering::SeqCst) >= self.target.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Messages received so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::SeqCst)
    }

    /// Open WebSocket connections.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// What the server does with data messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Count them and drop them.
    Sink,
    /// Count them and send them back.
    Echo,
}

/// A plain tokio-tungstenite server, counting what it receives. Pings are
/// answered by tungstenite itself (the pong goes out with the next read or
/// write).
#[derive(Debug)]
pub struct CountingServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl CountingServer {
    /// Starts the server on its own thread with its own current-thread tokio
    /// runtime, so it never shares a scheduler with the clients measured.
    pub fn spawn(mode: Mode) -> io::Result<CountingServer> {
        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = counters.clone();
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => accept_loop(listener, shared, mode).await,
                        Err(e) => eprintln!("server: {e}"),
                    }
                })
            })?;
        Ok(CountingServer { addr, counters })
    }

    /// Where it listens (127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The live counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

/// Runs a counting server on the current tokio runtime until the process
/// ends (for the separate server process of `e2e-rss`).
pub async fn serve(listener: TcpListener, counters: Arc<Counters>, mode: Mode) {
    accept_loop(listener, counters, mode).await
}

async fn accept_loop(listener: TcpListener, counters: Arc<Counters>, mode: Mode) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, counters.clone(), mode));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn connection(stream: TcpStream, counters: Arc<Counters>, mode: Mode) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    counters.live.fetch_add(1, Ordering::SeqCst);
    while let Some(Ok(message)) = ws.next().await {
        let len = match &message {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            Message::Close(_) => break,
            _ => continue,
        };
        counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let n = counters.messages.fetch_add(1, Ordering::SeqCst) + 1;
        if n == counters.target.load(Ordering::SeqCst) {
            counters.reached.notify_one();
        }
        if mode == Mode::Echo && ws.send(message).await.is_err() {
            break;
        }
    }
    counters.live.fetch_sub(1, Ordering::SeqCst);
}

/// The value at quantile `q` (0..=1) of `sorted`, nearest rank.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Seconds with millisecond precision, for printing.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// This process's resident set size in KiB (`VmRSS` in `/proc/self/status`).
pub fn vmrss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

/// A `kB` field of `/proc/self/status`.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    pid_status_kib("self", field)
}

/// A `/proc/<pid>/status` field in KiB (`"VmRSS:"`), of another process
/// (`pid` a number) or of this one (`"self"`).
pub fn pid_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The process's command line, parsed just enough for these benchmarks.
#[derive(Debug, Clone)]
pub struct Args(Vec<String>);

impl Args {
    /// The command line after the program name.
    pub fn from_env() -> Args {
        Args(std::env::args().skip(1).collect())
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// The word after `--name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }

    /// The number after `--name`, or `default`.
    pub fn number(&self, name: &str, default: u64) -> u64 {
        self.value(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// A redial-tokio `Wire` client on `url` with the default configuration,
/// once connected (within `within`); its later events are drained. For a
/// publisher whose deliveries the benchmark counts elsewhere.
pub async fn connected_wire_client(
    url: String,
    within: Duration,
) -> Result<redial_tokio::Handle, Box<dyn std::error::Error + Send + Sync>> {
    let (handle, mut events) = redial_tokio::builder(url)
        .config(redial_core::Config::builder().build()?)
        .protocol(redial_core::Wire)
        .connect()?;
    tokio::time::timeout(within, async {
        while let Some(e) = events.recv().await {
            if matches!(e, redial_core::Event::Connected { .. }) {
                break;
            }
        }
    })
    .await
    .map_err(|_| "the client did not connect")?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Ok(handle)
}

/// A client WebSocket over plain TCP, as the minimal bench clients use it.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Dials `url`, offering `subprotocol` when given (Nagle off).
pub async fn dial(
    url: &str,
    subprotocol: Option<&'static str>,
) -> Result<Ws, Box<dyn std::error::Error + Send + Sync>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    if let Some(p) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(p),
        );
    }
    // A 4 KiB read buffer, as the servers under test use: tungstenite
    // zero-fills up to this much before every read attempt, and at its
    // 128 KiB default a burst of a thousand dialling clients spent more
    // CPU zeroing than the server spent serving them (the clients' own
    // cost, counted in every client's dial-to-answer time).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    Ok(ws)
}

/// A minimal Wire client: dials `url`, sends `hello`, returns the socket
/// and the server's WELCOME (anything else first is an error).
pub async fn wire_handshake(
    url: &str,
    hello: redial_core::wire::Hello,
) -> Result<(Ws, redial_core::wire::Welcome), Box<dyn std::error::Error + Send + Sync>> {
    use futures_util::{SinkExt, StreamExt};
    use redial_core::wire::{self, Frame, Limits};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = dial(url, Some(wire::SUBPROTOCOL)).await?;
    ws.send(Message::Binary(Frame::Hello(hello).to_bytes()))
        .await?;
    while let Some(m) = ws.next().await {
        if let Message::Binary(b) = m? {
            return match wire::decode(b, &Limits::default())? {
                Frame::Welcome(w) => Ok((ws, w)),
                other => Err(format!("expected WELCOME, got {other:?}").into()),
            };
        }
    }
    Err("closed before WELCOME".into())
}

/// The path of `bench/socketio/<name>`, a Node script of this package;
/// an error naming the fix when `npm ci` has not installed its packages.
pub fn socketio_script(
    name: &str,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("socketio");
    if !dir.join("node_modules").is_dir() {
        return Err(format!(
            "{} has no node_modules: run `npm ci` in bench/socketio",
            dir.display()
        )
        .into());
    }
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn reads_own_rss() {
        assert!(vmrss_kib().is_some_and(|k| k > 0));
    }
}
