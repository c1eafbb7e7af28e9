//! redial-server under load: channel fan-out, resume on another node, and
//! how fan-out grows from one node to three.
//!
//! Every server node runs in this process on its own thread with its own
//! current-thread tokio runtime (one core's worth of scheduler per node);
//! the clients, all redial-tokio `Wire` clients unless said otherwise, run
//! on the main thread's current-thread runtime. Redis (for the Redis store
//! and the cluster) is a `redis-server` started on a random 127.0.0.1 port
//! in a temporary directory, and stopped at the end.
//!
//! - `fanout`: one publisher, `--subscribers` (1,000) subscribers of one
//!   channel, `--messages` (1,000) publishes of 1 KiB; the clock runs from
//!   the first publish until every subscriber has every message. Reported as
//!   deliveries/s (messages received by subscribers) and publishes/s, with
//!   the memory store and with the Redis store, one node.
//! - `resume`: sessions opened on node A, then resumed on node B (both on
//!   one Redis): the time from the dial (TCP connect) to the WELCOME with
//!   the resumed flag, measured by a minimal Wire client written against
//!   `redial_core::wire`, so no backoff or scheduling of the redial client
//!   is counted. Two cases: one at a time after A noticed the loss, and
//!   every session at once after A was stopped dead.
//! - `scale`: `fanout` on a Redis cluster of 1, 2 and 3 nodes, subscribers
//!   spread evenly over the nodes, the publisher on the first.
//!
//! `--quick` is the CI smoke: 100 subscribers, 50 messages, 50 sessions;
//! it prints figures and asserts nothing about time.
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-server [-- --quick] [--only fanout|resume|scale]
//!     [--subscribers N] [--messages N] [--sessions N]
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial_bench::{connected_wire_client, load_average, percentile, wire_handshake, Args, Ws};
use redial_core::wire::{self, Hello};
use redial_core::{Config, Event, Payload, ResumeToken, Wire};
use redial_server::memory::MemoryStore;
use redial_server::redis::RedisStore;
use redial_server::store::Store;
use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};
use redial_tests::third_party::redis::RedisServer;
use tokio::sync::{oneshot, Notify};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The payload size of every publish.
const PAYLOAD: usize = 1024;
/// The channel every subscriber listens to.
const CHANNEL: &str = "fan";
/// How long any one phase may take before the run fails.
const PHASE: Duration = Duration::from_secs(300);

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let subscribers = args.number("--subscribers", if quick { 100 } else { 1000 }) as usize;
    let messages = args.number("--messages", if quick { 50 } else { 1000 }) as usize;
    let sessions = args.number("--sessions", if quick { 50 } else { 1000 }) as usize;
    let only = args.value("--only").map(str::to_owned);
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "e2e-server: nodes on their own threads (current-thread runtimes), clients on one; load average {}",
        load_average()
    );
    let redis = RedisServer::start()?;
    runtime.block_on(async {
        if runs("fanout") {
            println!(
                "fan-out: 1 publisher, {subscribers} subscribers, {messages} x {PAYLOAD} B, one node"
            );
            for kind in [StoreKind::Memory, StoreKind::Redis] {
                let node = start_node(kind, &redis, &unique_prefix(), 1)?;
                let r = fanout(&[node.url()], subscribers, messages).await?;
                println!("  {:<6} {r}", kind.name());
                node.stop();
            }
        }
        if runs("resume") {
            resume(&redis, sessions).await?;
        }
        if runs("scale") {
            println!(
                "scale (Redis store): 1 publisher, {subscribers} subscribers spread over the nodes, {messages} x {PAYLOAD} B"
            );
            for n in 1..=3 {
                let prefix = unique_prefix();
                let nodes = (0..n)
                    .map(|i| start_node(StoreKind::Redis, &redis, &prefix, i as u8 + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                let urls: Vec<String> = nodes.iter().map(NodeThread::url).collect();
                let r = fanout(&urls, subscribers, messages).await?;
                println!("  {n} node{} {r}", if n == 1 { " " } else { "s" });
                for node in nodes {
                    node.stop();
                }
            }
        }
        println!("  load average after: {}", load_average());
        Ok::<_, BoxError>(())
    })?;
    drop(redis);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Redis,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
        }
    }
}

/// A key prefix no other run of this binary shares.
fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The one signing key of every node: any node can resume any session.
fn key() -> TokenKey {
    TokenKey::new(1, [0x42; 32])
}

/// A node on its own thread and runtime. Stopping it drops the runtime, and
/// with it the listener and every connection: the node dies, it does not
/// drain.
struct NodeThread {
    addr: SocketAddr,
    node: Node,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl NodeThread {
    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn start_node(
    kind: StoreKind,
    redis: &RedisServer,
    prefix: &str,
    seed: u8,
) -> Result<NodeThread, BoxError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(SocketAddr, Node), String>>();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let redis_url = redis.url();
    let prefix = prefix.to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("node-{seed}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = async {
                    let store: Arc<dyn Store> = match kind {
                        StoreKind::Memory => Arc::new(MemoryStore::new()),
                        StoreKind::Redis => Arc::new(
                            RedisStore::builder(redis_url)
                                .prefix(prefix)
                                .channel_cap(100_000)
                                .connect()
                                .await
                                .map_err(|e| e.to_string())?,
                        ),
                    };
                    let config = ServerConfig::builder()
                        .key(key())
                        .seed(u64::from(seed))
                        .build()
                        .map_err(|e| e.to_string())?;
                    let node = Node::builder_arc(config, store).build();
                    let listener = redial_server::tokio::bind(("127.0.0.1", 0))
                        .await
                        .map_err(|e| e.to_string())?;
                    let addr = listener.local_addr().map_err(|e| e.to_string())?;
                    Ok::<_, String>((listener, node, addr))
                };
                match started.await {
                    Ok((listener, node, addr)) => {
                        let _ = ready_tx.send(Ok((addr, node.clone())));
                        tokio::select! {
                            _ = redial_server::tokio::serve(listener, node) => {}
                            _ = stop_rx => {}
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
    let (addr, node) = ready_rx.recv()??;
    Ok(NodeThread {
        addr,
        node,
        stop,
        thread,
    })
}

/// What one fan-out run measured.
struct FanoutResult {
    deliveries: u64,
    elapsed: Duration,
    messages: usize,
    gaps: u64,
    /// Subscriber connections lost during the run (each resumed).
    drops: u64,
}

impl std::fmt::Display for FanoutResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.elapsed.as_secs_f64();
        write!(
            f,
            "{:>10.0} deliveries/s  {:>8.1} publishes/s  ({} deliveries in {:.2} s, gaps {}, subscriber drops {})",
            self.deliveries as f64 / s,
            self.messages as f64 / s,
            self.deliveries,
            s,
            self.gaps,
            self.drops
        )
    }
}

/// Shared by the subscriber tasks of one run.
#[derive(Default)]
struct Tally {
    subscribed: AtomicUsize,
    finished: AtomicUsize,
    delivered: AtomicU64,
    gaps: AtomicU64,
    drops: AtomicU64,
    changed: Notify,
}

impl Tally {
    async fn wait(&self, what: &str, pred: impl Fn(&Tally) -> bool) -> Result<(), BoxError> {
        tokio::time::timeout(PHASE, async {
            loop {
                let notified = self.changed.notified();
                if pred(self) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .map_err(|_| format!("timed out waiting for {what}").into())
    }
}

fn client_config() -> Result<Config, BoxError> {
    // Keepalive stays at its default; nothing here is idle long enough for
    // it to matter.
    Ok(Config::builder().build()?)
}

async fn fanout(
    urls: &[String],
    subscribers: usize,
    messages: usize,
) -> Result<FanoutResult, BoxError> {
    let tally = Arc::new(Tally::default());
    let mut handles = Vec::with_capacity(subscribers + 1);
    for i in 0..subscribers {
        let url = &urls[i % urls.len()];
        let (handle, mut events) = redial_tokio::builder(url.clone())
            .config(client_config()?)
            .protocol(Wire)
            .connect()?;
        handle.subscribe(CHANNEL).await?;
        handles.push(handle);
        let tally = Arc::clone(&tally);
        tokio::spawn(async move {
            let mut got = 0usize;
            while let Some(e) = events.recv().await {
                match e {
                    Event::Subscribed { .. } => {
                        tally.subscribed.fetch_add(1, Ordering::Relaxed);
                        tally.changed.notify_waiters();
                    }
                    Event::Message { .. } => {
                        got += 1;
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                        if got == messages {
                            tally.finished.fetch_add(1, Ordering::Relaxed);
                            tally.changed.notify_waiters();
                        }
                    }
                    Event::Gap { from, to } => {
                        tally.gaps.fetch_add(to - from + 1, Ordering::Relaxed);
                    }
                    Event::Disconnected { .. } if got < messages => {
                        tally.drops.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
    }
    tally
        .wait("every subscription", |t| {
            t.subscribed.load(Ordering::Relaxed) >= subscribers
        })
        .await?;

    let publisher = connected_wire_client(urls[0].clone(), PHASE).await?;

    let payload = Payload::binary(bytes::Bytes::from(vec![0x5A; PAYLOAD]));
    let start = Instant::now();
    // `feed_publish`: no reply awaited per message, so the publisher's own
    // round trips to its driver do not pace the run.
    for _ in 0..messages {
        publisher.feed_publish(CHANNEL, payload.clone()).await?;
    }
    tally
        .wait("every delivery", |t| {
            t.finished.load(Ordering::Relaxed) >= subscribers
        })
        .await?;
    let elapsed = start.elapsed();
    handles.push(publisher);
    for h in &handles {
        h.close().await;
    }
    Ok(FanoutResult {
        deliveries: tally.delivered.load(Ordering::Relaxed),
        elapsed,
        messages,
        gaps: tally.gaps.load(Ordering::Relaxed),
        drops: tally.drops.load(Ordering::Relaxed),
    })
}

fn hello(resume: Option<ResumeToken>) -> Hello {
    Hello {
        version: wire::VERSION,
        resume_token: resume,
        last_offset: 0,
        name: None,
    }
}

/// Dial to resumed WELCOME on `url` with `token`.
async fn timed_resume(url: &str, token: ResumeToken) -> Result<(Duration, Ws), BoxError> {
    let start = Instant::now();
    let (ws, welcome) = wire_handshake(url, hello(Some(token))).await?;
    let took = start.elapsed();
    if !welcome.resumed {
        return Err("the session was not resumed".into());
    }
    Ok((took, ws))
}

/// `n` fresh sessions on `url`: their sockets and resume tokens.
async fn open_sessions(url: &str, n: usize) -> Result<Vec<(Ws, ResumeToken)>, BoxError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (ws, welcome) = wire_handshake(url, hello(None)).await?;
        out.push((ws, welcome.resume_token));
    }
    Ok(out)
}

async fn wait_live(node: &Node, live: u64) -> Result<(), BoxError> {
    tokio::time::timeout(PHASE, async {
        while node.stats().live_connections != live {
            // The node runs on another thread with no event this side can
            // await; a short poll is the only way to see its gauge.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .map_err(|_| "the node did not see the connections go".into())
}

fn summary(label: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {label:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} resumes)",
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        times.len()
    );
}

async fn resume(redis: &RedisServer, sessions: usize) -> Result<(), BoxError> {
    println!("resume on another node (Redis store, two nodes), dial to WELCOME(resumed):");
    let prefix = unique_prefix();
    let a = start_node(StoreKind::Redis, redis, &prefix, 1)?;
    let b = start_node(StoreKind::Redis, redis, &prefix, 2)?;

    // One at a time: A noticed each loss before the client comes to B.
    let opened = open_sessions(&a.url(), sessions).await?;
    let mut tokens = Vec::with_capacity(sessions);
    for (ws, token) in opened {
        drop(ws);
        tokens.push(token);
    }
    wait_live(&a.node, 0).await?;
    let mut times = Vec::with_capacity(sessions);
    for token in tokens {
        let (took, ws) = timed_resume(&b.url(), token).await?;
        times.push(took);
        drop(ws);
    }
    summary("one at a time, A alive", times);
    wait_live(&b.node, 0).await?;

    // A dies with every session connected; all come to B at once.
    let opened = open_sessions(&a.url(), sessions).await?;
    let (sockets, tokens): (Vec<Ws>, Vec<ResumeToken>) = opened.into_iter().unzip();
    a.stop();
    drop(sockets);
    let url = b.url();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let url = url.clone();
            tokio::spawn(async move { timed_resume(&url, t).await.map(|(d, _ws)| d) })
        })
        .collect();
    let mut times = Vec::with_capacity(sessions);
    for t in tasks {
        times.push(t.await??);
    }
    summary(&format!("all {sessions} at once, A stopped dead"), times);
    b.stop();
    Ok(())
}
