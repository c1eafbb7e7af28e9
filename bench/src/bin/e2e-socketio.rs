//! redial-server side by side with Socket.IO, in one run, on one redis-server.
//!
//! Both servers run as child processes on 127.0.0.1, so each one's memory
//! is its own process's RSS:
//! - **redial**: this binary again (`--redial-node`), one `redial_server`
//!   node with the Redis store on a current-thread tokio runtime.
//! - **Socket.IO**: `bench/socketio/server.mjs` on Node: Socket.IO 4.8 with
//!   connection state recovery and `@socket.io/redis-streams-adapter`,
//!   WebSocket transport only (`npm ci` in `bench/socketio` first).
//!
//! Both run single-threaded (Node's event loop, one tokio thread) and share
//! the bench's redis-server. The clients of both are in this process, on
//! one current-thread runtime: minimal clients over tokio-tungstenite for
//! both protocols (a Wire HELLO/WELCOME client; an Engine.IO v4 / Socket.IO
//! v5 text-packet client), and redial-tokio clients for redial's fan-out
//! (they acknowledge deliveries, which the server's window needs).
//!
//! Measured, per server:
//! - **memory**: RSS growth of the server process per idle connection, at
//!   `--connections` (10,000) connected and idle; Node's heap is collected
//!   (`--expose-gc`) before each reading.
//! - **fan-out**: 1 publisher, `--subscribers` (1,000) subscribers of one
//!   channel/room, `--messages` (100) of 1 KiB; deliveries/s.
//! - **latency**: the same subscribers, publishes paced at half the
//!   measured fan-out rate; publish-to-delivery p50/p99 (each payload
//!   carries its send time).
//! - **resume**: `--sessions` (1,000) clients on node A; A goes; all come
//!   back to node B at once; dial to the resumed handshake answer, from
//!   each dial. redial's A is killed (SIGKILL); Socket.IO's A is closed
//!   (its adapter saves sessions only when a socket disconnects, so after a
//!   SIGKILL nothing is recoverable, also measured).
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-socketio [-- --quick] [--only memory|fanout|resume]
//! ```
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use redial_bench::{
    connected_wire_client, dial, load_average, percentile, pid_status_kib, socketio_script,
    wire_handshake, Args, Ws,
};
use redial_core::wire::{self, Hello, Welcome};
use redial_core::{Config, Event, Payload, ResumeToken, Wire};
use redial_server::redis::RedisStore;
use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};
use redial_tests::third_party::redis::RedisServer;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes per published message.
const PAYLOAD: usize = 1024;
/// The channel (redial) and room (Socket.IO) of the fan-out.
const CHANNEL: &str = "fan";
/// How long any one phase may take before the run fails.
const PHASE: Duration = Duration::from_secs(300);
/// Connections dialled at once while filling a server.
const DIAL_AT_ONCE: usize = 50;

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    if let Some(url) = args.value("--redial-node") {
        let prefix = args.value("--prefix").unwrap_or("sio-compare:").to_owned();
        return redial_node(url.to_owned(), prefix);
    }
    let quick = args.flag("--quick");
    let n = |name: &str, full: u64, small: u64| args.number(name, if quick { small } else { full });
    let connections = n("--connections", 10_000, 100) as usize;
    let subscribers = n("--subscribers", 1000, 20) as usize;
    let messages = n("--messages", 100, 20) as usize;
    let sessions = n("--sessions", 1000, 20) as usize;
    let only = args.value("--only").map(str::to_owned);
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    // Before anything starts: without `npm ci` this fails with the fix.
    socketio_script("server.mjs")?;
    let redis = RedisServer::start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "e2e-socketio: redial-server (Redis store) and Socket.IO 4.8 (recovery, Redis Streams adapter), \
         each one single-threaded process; clients in this process; load average {}",
        load_average()
    );
    runtime.block_on(async {
        for kind in [Kind::Redial, Kind::SocketIo] {
            if runs("memory") {
                memory(kind, &redis, connections).await?;
            }
            if runs("fanout") {
                fanout(kind, &redis, subscribers, messages).await?;
            }
            if runs("resume") {
                resume(kind, &redis, sessions, true).await?;
                // The smoke skips the SIGKILL variant: it only shows that
                // nothing is recovered, and costs two more Node starts.
                if kind == Kind::SocketIo && !quick {
                    resume(kind, &redis, sessions, false).await?;
                }
            }
        }
        println!("  load average after: {}", load_average());
        Ok::<_, BoxError>(())
    })?;
    drop(redis);
    Ok(())
}

/// A key prefix (redial) or stream name (Socket.IO) no other server of
/// this run shares, unless asked to.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "cmp{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Redial,
    SocketIo,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redial => "redial-server",
            Kind::SocketIo => "Socket.IO",
        }
    }
}

/// A server child process, driven by lines on its stdin (`gc`, `stats`,
/// `stop`), answering on its stdout.
struct ServerProc {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    port: u16,
}

impl ServerProc {
    /// Starts a server of `kind` on `redis`, with `name` as its key prefix
    /// or stream: two servers with one name share sessions.
    fn start(kind: Kind, redis: &RedisServer, name: &str) -> Result<ServerProc, BoxError> {
        let mut cmd = match kind {
            Kind::Redial => {
                let mut c = Command::new(std::env::current_exe()?);
                c.args([
                    "--redial-node",
                    &redis.url(),
                    "--prefix",
                    &format!("{name}:"),
                ]);
                c
            }
            Kind::SocketIo => {
                let mut c = Command::new("node");
                c.arg("--expose-gc")
                    .arg(socketio_script("server.mjs")?)
                    .args([redis.url().as_str(), name]);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proc = ServerProc {
            child,
            stdin,
            lines,
            port: 0,
        };
        let line = proc.expect("LISTENING ")?;
        proc.port = line.trim().parse()?;
        Ok(proc)
    }

    /// The next line that starts with `prefix`, without it.
    fn expect(&mut self, prefix: &str) -> Result<String, BoxError> {
        let deadline = Instant::now() + PHASE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("the server never said {prefix:?}"))?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.to_owned());
            }
        }
    }

    fn ask(&mut self, cmd: &str, answer: &str) -> Result<String, BoxError> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        self.expect(answer)
    }

    fn live(&mut self) -> Result<u64, BoxError> {
        Ok(self.ask("stats", "LIVE ")?.trim().parse()?)
    }

    /// Resident memory after a full collection (Node) and a settle.
    async fn rss_kib(&mut self) -> Result<u64, BoxError> {
        self.ask("gc", "GC")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        pid_status_kib(&self.child.id().to_string(), "VmRSS:").ok_or("no VmRSS".into())
    }

    async fn wait_live(&mut self, n: u64) -> Result<(), BoxError> {
        let start = Instant::now();
        while self.live()? != n {
            if start.elapsed() > PHASE {
                return Err(format!("the server never held {n} connections").into());
            }
            // The server is another process: its count can only be polled.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// A graceful stop: `stop`, then the exit.
    fn stop(mut self) -> Result<(), BoxError> {
        self.ask("stop", "STOPPED")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the redial node child ----

/// The one signing key of every node: any node can resume any session.
fn key() -> TokenKey {
    TokenKey::new(1, [0x42; 32])
}

fn redial_node(redis_url: String, prefix: String) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if cmd_tx.send(line).is_err() {
                return;
            }
        }
    });
    runtime.block_on(serve_node(redis_url, prefix, cmd_rx))
}

async fn serve_node(
    redis_url: String,
    prefix: String,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<String>,
) -> Result<(), BoxError> {
    let store = RedisStore::builder(redis_url)
        .prefix(prefix)
        .channel_cap(100_000)
        .connect()
        .await?;
    let config = ServerConfig::builder().key(key()).build()?;
    let node = Node::builder(config, store).build();
    let listener = redial_server::tokio::bind(("127.0.0.1", 0)).await?;
    println!("LISTENING {}", listener.local_addr()?.port());
    let serving = redial_server::tokio::serve(listener, node.clone());
    tokio::pin!(serving);
    loop {
        tokio::select! {
            _ = &mut serving => return Ok(()),
            cmd = commands.recv() => match cmd.as_deref().map(str::trim) {
                Some("gc") => println!("GC"),
                Some("stats") => println!("LIVE {}", node.stats().live_connections),
                Some("stop") => {
                    println!("STOPPED");
                    return Ok(());
                }
                Some(_) => {}
                // The bench is gone: so is this node.
                None => return Ok(()),
            },
        }
    }
}

// ---- minimal clients ----

/// A Wire session on `port`: HELLO (resuming `token` if given), WELCOME.
async fn wire_hello(port: u16, token: Option<ResumeToken>) -> Result<(Ws, Welcome), BoxError> {
    let hello = Hello {
        version: wire::VERSION,
        resume_token: token,
        last_offset: 0,
        name: None,
    };
    wire_handshake(&format!("ws://127.0.0.1:{port}/"), hello).await
}

/// What a Socket.IO CONNECT answer carries.
#[derive(Debug, Clone)]
struct SioSession {
    sid: String,
    pid: String,
}

/// A Socket.IO connection to the main namespace on `port`: the Engine.IO
/// open packet, then CONNECT (with `{pid, offset}` to recover a session)
/// and its answer. Pings that arrive meanwhile are answered.
async fn sio_connect(
    port: u16,
    recover: Option<(&SioSession, &str)>,
) -> Result<(Ws, SioSession), BoxError> {
    let mut ws = dial(
        &format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
        None,
    )
    .await?;
    let open = sio_next(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!("expected an Engine.IO open packet, got {open:?}").into());
    }
    let connect = match recover {
        None => "40".to_owned(),
        Some((s, offset)) => format!(
            "40{}",
            serde_json::json!({ "pid": s.pid, "offset": offset })
        ),
    };
    ws.send(Message::text(connect)).await?;
    let answer = sio_next(&mut ws).await?;
    let body = answer
        .strip_prefix("40")
        .ok_or_else(|| format!("expected CONNECT, got {answer:?}"))?;
    let v: serde_json::Value = serde_json::from_str(body)?;
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_owned);
    Ok((
        ws,
        SioSession {
            sid: field("sid").ok_or("CONNECT without sid")?,
            pid: field("pid").ok_or("CONNECT without pid: is recovery on?")?,
        },
    ))
}

/// The next text packet that is not a ping (pings are answered).
async fn sio_next(ws: &mut Ws) -> Result<String, BoxError> {
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.as_str() == "2" {
                ws.send(Message::text("3")).await?;
                continue;
            }
            return Ok(t.as_str().to_owned());
        }
    }
    Err("closed".into())
}

/// Keeps an idle connection open: reads, answers Engine.IO pings.
async fn hold(mut ws: Ws) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = &m {
            if t.as_str() == "2" && ws.send(Message::text("3")).await.is_err() {
                return;
            }
        }
    }
}

/// Dials `n` connections to a server of `kind`, `DIAL_AT_ONCE` at a time,
/// each held open by its own task.
async fn fill(
    kind: Kind,
    port: u16,
    n: usize,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BoxError> {
    let mut held = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(DIAL_AT_ONCE);
        let dials = (0..k).map(|_| async move {
            match kind {
                Kind::Redial => wire_hello(port, None).await.map(|(ws, _)| ws),
                Kind::SocketIo => sio_connect(port, None).await.map(|(ws, _)| ws),
            }
        });
        for ws in futures_util::future::join_all(dials).await {
            held.push(tokio::spawn(hold(ws?)));
        }
        left -= k;
    }
    Ok(held)
}

// ---- memory ----

async fn memory(kind: Kind, redis: &RedisServer, n: usize) -> Result<(), BoxError> {
    let mut server = ServerProc::start(kind, redis, &unique_name())?;
    // Warm-up: one-time allocations out of the baseline.
    for task in fill(kind, server.port, 10).await? {
        task.abort();
    }
    server.wait_live(0).await?;
    let base = server.rss_kib().await?;
    let held = fill(kind, server.port, n).await?;
    server.wait_live(n as u64).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let live = server.rss_kib().await?;
    println!(
        "memory  {:<14} {:>7.2} KiB RSS per idle connection ({n} connections: {base} -> {live} KiB)",
        kind.name(),
        (live as f64 - base as f64) / n as f64
    );
    for task in held {
        task.abort();
    }
    server.kill()
}

// ---- fan-out and latency ----

/// Microseconds since the run's first use of this clock.
fn stamp() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A 1 KiB payload that starts with its send time.
fn stamped_payload() -> Vec<u8> {
    let mut p = format!("{:020}", stamp()).into_bytes();
    p.resize(PAYLOAD, b'x');
    p
}

fn read_stamp(p: &[u8]) -> Option<u64> {
    std::str::from_utf8(p.get(..20)?).ok()?.parse().ok()
}

/// Shared by one run's subscribers.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    recording: AtomicBool,
    latencies: Mutex<Vec<Duration>>,
    changed: Notify,
}

impl Tally {
    fn delivered(&self, payload: &[u8]) {
        if self.recording.load(Ordering::Relaxed) {
            if let Some(sent) = read_stamp(payload) {
                let d = Duration::from_micros(stamp().saturating_sub(sent));
                if let Ok(mut l) = self.latencies.lock() {
                    l.push(d);
                }
            }
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    async fn wait_for(&self, total: u64) -> Result<(), BoxError> {
        tokio::time::timeout(PHASE, async {
            loop {
                let notified = self.changed.notified();
                if self.delivered.load(Ordering::Relaxed) >= total {
                    return;
                }
                notified.await;
            }
        })
        .await
        .map_err(|_| {
            format!(
                "{} of {total} deliveries arrived",
                self.delivered.load(Ordering::Relaxed)
            )
            .into()
        })
    }
}

/// One publisher of either kind.
enum Publisher {
    Redial(redial_tokio::Handle),
    SocketIo(Box<Ws>),
}

impl Publisher {
    async fn publish(&mut self) -> Result<(), BoxError> {
        let p = stamped_payload();
        match self {
            Publisher::Redial(h) => h
                .feed_publish(CHANNEL, Payload::binary(bytes::Bytes::from(p)))
                .await
                .map_err(Into::into),
            Publisher::SocketIo(ws) => {
                let data = String::from_utf8(p)?;
                let packet = format!("42{}", serde_json::json!(["pub", CHANNEL, data]));
                ws.send(Message::text(packet)).await.map_err(Into::into)
            }
        }
    }
}

async fn redial_subscribers(
    port: u16,
    n: usize,
    tally: &Arc<Tally>,
) -> Result<Vec<redial_tokio::Handle>, BoxError> {
    let url = format!("ws://127.0.0.1:{port}/");
    let subscribed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (handle, mut events) = redial_tokio::builder(url.clone())
            .config(Config::builder().build()?)
            .protocol(Wire)
            .connect()?;
        handle.subscribe(CHANNEL).await?;
        handles.push(handle);
        let tally = Arc::clone(tally);
        let subscribed = Arc::clone(&subscribed);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    Event::Subscribed { .. } => {
                        subscribed.fetch_add(1, Ordering::Relaxed);
                        tally.changed.notify_waiters();
                    }
                    Event::Message { payload, .. } => tally.delivered(payload.bytes()),
                    _ => {}
                }
            }
        });
    }
    tokio::time::timeout(PHASE, async {
        loop {
            let notified = tally.changed.notified();
            if subscribed.load(Ordering::Relaxed) >= n as u64 {
                return;
            }
            notified.await;
        }
    })
    .await
    .map_err(|_| "subscriptions were not all confirmed")?;
    Ok(handles)
}

async fn sio_subscriber(
    port: u16,
    tally: Arc<Tally>,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let (mut ws, _) = sio_connect(port, None).await?;
    ws.send(Message::text(format!(
        "421{}",
        serde_json::json!(["sub", CHANNEL])
    )))
    .await?;
    let ack = sio_next(&mut ws).await?;
    if ack != "431[]" {
        return Err(format!("expected the sub acknowledgement, got {ack:?}").into());
    }
    Ok(tokio::spawn(async move {
        while let Ok(packet) = sio_next(&mut ws).await {
            if let Some(rest) = packet.strip_prefix("42[\"msg\",\"") {
                tally.delivered(rest.as_bytes());
            }
        }
    }))
}

async fn fanout(
    kind: Kind,
    redis: &RedisServer,
    subscribers: usize,
    messages: usize,
) -> Result<(), BoxError> {
    let server = ServerProc::start(kind, redis, &unique_name())?;
    let tally = Arc::new(Tally::default());
    let mut redial_handles = Vec::new();
    let mut sio_tasks = Vec::new();
    let mut publisher = match kind {
        Kind::Redial => {
            redial_handles = redial_subscribers(server.port, subscribers, &tally).await?;
            let url = format!("ws://127.0.0.1:{}/", server.port);
            Publisher::Redial(connected_wire_client(url, PHASE).await?)
        }
        Kind::SocketIo => {
            for _ in 0..subscribers {
                sio_tasks.push(sio_subscriber(server.port, Arc::clone(&tally)).await?);
            }
            let (ws, _) = sio_connect(server.port, None).await?;
            Publisher::SocketIo(Box::new(ws))
        }
    };
    let per_publish = subscribers as u64;

    // Capacity: publish as fast as the publisher can.
    let start = Instant::now();
    for _ in 0..messages {
        publisher.publish().await?;
    }
    tally.wait_for(per_publish * messages as u64).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let rate = (per_publish * messages as u64) as f64 / elapsed;
    let publishes_per_sec = messages as f64 / elapsed;
    println!(
        "fan-out {:<14} {:>9.0} deliveries/s ({subscribers} subscribers, {messages} x {PAYLOAD} B in {elapsed:.2} s)",
        kind.name(),
        rate
    );

    // Latency at half that rate.
    let paced = (publishes_per_sec / 2.0).max(1.0);
    let count = ((paced * 3.0) as usize).clamp(20, messages.max(20));
    tally.recording.store(true, Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / paced));
    for _ in 0..count {
        tick.tick().await;
        publisher.publish().await?;
    }
    tally
        .wait_for(per_publish * (messages + count) as u64)
        .await?;
    let mut lat = tally
        .latencies
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    lat.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "latency {:<14} p50 {:>8.2} ms  p99 {:>8.2} ms  ({count} publishes at {paced:.0}/s = {:.0} deliveries/s, {} deliveries)",
        kind.name(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        paced * per_publish as f64,
        lat.len()
    );
    for h in &redial_handles {
        h.close().await;
    }
    if let Publisher::Redial(h) = &publisher {
        h.close().await;
    }
    for t in sio_tasks {
        t.abort();
    }
    server.kill()
}

// ---- resume burst ----

fn summary(label: &str, mut times: Vec<Duration>, tried: usize) {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "resume  {label:<40} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} of {tried} resumed)",
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        times.len()
    );
}

/// `n` sessions on node A, A goes (`graceful`: a clean stop, else
/// SIGKILL), all `n` dial node B at once; each timed from its own dial to
/// its resumed handshake answer.
async fn resume(kind: Kind, redis: &RedisServer, n: usize, graceful: bool) -> Result<(), BoxError> {
    let name = unique_name();
    let a = ServerProc::start(kind, redis, &name)?;
    let b = ServerProc::start(kind, redis, &name)?;
    let port = b.port;
    let label;
    let times = match kind {
        Kind::Redial => {
            let mut tokens = Vec::with_capacity(n);
            let mut sockets = Vec::with_capacity(n);
            for _ in 0..n {
                let (ws, welcome) = wire_hello(a.port, None).await?;
                tokens.push(welcome.resume_token);
                sockets.push(ws);
            }
            label = "redial-server, A killed (SIGKILL)".to_owned();
            a.kill()?;
            drop(sockets);
            let tasks: Vec<_> = tokens
                .into_iter()
                .map(|t| {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        let (ws, w) = wire_hello(port, Some(t)).await?;
                        let took = start.elapsed();
                        drop(ws);
                        Ok::<_, BoxError>(w.resumed.then_some(took))
                    })
                })
                .collect();
            collect(tasks).await?
        }
        Kind::SocketIo => {
            // A session is recoverable from an offset the client has seen:
            // every client subscribes, and one message reaches them all.
            let mut clients = Vec::with_capacity(n);
            for _ in 0..n {
                let (mut ws, s) = sio_connect(a.port, None).await?;
                ws.send(Message::text(format!(
                    "421{}",
                    serde_json::json!(["sub", CHANNEL])
                )))
                .await?;
                if sio_next(&mut ws).await? != "431[]" {
                    return Err("no sub acknowledgement".into());
                }
                clients.push((ws, s));
            }
            let (mut publisher, _) = sio_connect(a.port, None).await?;
            publisher
                .send(Message::text(format!(
                    "42{}",
                    serde_json::json!(["pub", CHANNEL, "x"])
                )))
                .await?;
            let mut sessions = Vec::with_capacity(n);
            let mut sockets = Vec::with_capacity(n);
            for (mut ws, s) in clients {
                let packet = sio_next(&mut ws).await?;
                let v: serde_json::Value =
                    serde_json::from_str(packet.strip_prefix("42").ok_or("expected an event")?)?;
                let offset = v
                    .get(2)
                    .and_then(|o| o.as_str())
                    .ok_or("an event without an offset: is recovery on?")?
                    .to_owned();
                sessions.push((s, offset));
                sockets.push(ws);
            }
            sockets.push(publisher);
            if graceful {
                label = "Socket.IO, A closed (io.close)".to_owned();
                a.stop()?;
            } else {
                label = "Socket.IO, A killed (SIGKILL)".to_owned();
                a.kill()?;
            }
            drop(sockets);
            let tasks: Vec<_> = sessions
                .into_iter()
                .map(|(s, offset)| {
                    tokio::spawn(async move {
                        let start = Instant::now();
                        let (ws, got) = sio_connect(port, Some((&s, &offset))).await?;
                        let took = start.elapsed();
                        drop(ws);
                        Ok::<_, BoxError>((got.sid == s.sid).then_some(took))
                    })
                })
                .collect();
            collect(tasks).await?
        }
    };
    summary(&label, times, n);
    b.kill()
}

/// The resumed ones' times.
async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Result<Option<Duration>, BoxError>>>,
) -> Result<Vec<Duration>, BoxError> {
    let mut times = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Some(d) = t.await?? {
            times.push(d);
        }
    }
    Ok(times)
}
