//! A cluster of redial-server nodes on one Redis, behind the fault proxy
//! (one address, round robin over the nodes, dead nodes skipped):
//!
//! - `*_rt::restarted_node_serves_old_sessions`: a node crashes and comes
//!   back with no local state; its client resumes its session there with
//!   the messages it missed replayed (tokio, async-std and smol clients).
//! - `cluster_soak`: three nodes while seeded chaos crashes nodes (their
//!   runtime is dropped: no GOING_AWAY, no detach), restarts them with no
//!   local state and cuts connections through the proxy; tokio and smol
//!   clients publish with Wire and subscribe meanwhile. It ends with every
//!   publish applied once (read back from the channel logs in Redis) and
//!   delivered once to every subscriber, in per-channel order. On a
//!   Redis Cluster (`backend/`) the chaos also kills one Redis master
//!   halfway and goes on once its replica took over.
//!
//! - `REDIAL_SOAK_SECS`: seconds of chaos (default 20).
//! - `REDIAL_SOAK_SEED`: the chaos seed (default fixed; printed).

// Integration-test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;
mod backend;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend::{Backend, Target};
use common::{fast_config, message_text, ms, pause, within, Client};
use redial_core::{Event, Payload, Wire};
use redial_driver::{Builder, Runtime};
use redial_server::redis::RedisStoreBuilder;
use redial_server::store::Store;
use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};
use redial_tests::proxy::{Cut, Proxy, ProxyHandle};
use redial_tests::rng::SeededRng;

const DEFAULT_SECS: u64 = 20;
const DEFAULT_SEED: u64 = 0xC1A5_7E55;
/// Between two publishes of one client.
const PACE: Duration = Duration::from_millis(20);
/// How long the cluster may take to settle once the chaos is over.
const DRAIN: Duration = Duration::from_secs(60);
/// Every node signs and checks tokens with this key, as a cluster must.
const KEY: [u8; 32] = [7; 32];

// ----- the cluster ------------------------------------------------------

/// One node: its own thread and tokio runtime, so that a crash is the
/// runtime dropped with every task on it.
struct RunningNode {
    kill: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// What every node of one cluster shares.
#[derive(Clone)]
struct Shared {
    target: Target,
    prefix: String,
}

impl Shared {
    /// A store builder on the cluster's Redis, with its key prefix.
    fn store(&self) -> RedisStoreBuilder {
        self.target
            .builder()
            .expect("the Redis store runs on this backend")
            .prefix(&self.prefix)
    }
}

fn start_node(shared: &Shared, addr: SocketAddr, seed: u64) -> (SocketAddr, RunningNode) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name(format!("node-{seed}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("node runtime");
            rt.block_on(async move {
                let listener = bind(addr).await;
                let store = shared
                    .store()
                    // The soak reads every channel log back in full.
                    .channel_cap(1 << 20)
                    .node_ttl(Duration::from_secs(3))
                    .connect()
                    .await
                    .expect("the node reaches Redis");
                let config = ServerConfig::builder()
                    .key(TokenKey::new(1, KEY))
                    .seed(seed)
                    .build()
                    .expect("node config");
                let node = Node::builder(config, store).build();
                let _ = ready_tx.send(listener.local_addr().expect("node address"));
                tokio::select! {
                    served = redial_server::tokio::serve(listener, node) => {
                        served.expect("the node serves");
                    }
                    _ = kill_rx => {}
                }
            });
            // A crash: every connection task is dropped where it stands.
            rt.shutdown_background();
        })
        .expect("node thread");
    let addr = ready_rx.recv().expect("the node started");
    (addr, RunningNode { kill, thread })
}

/// Binds `addr` (port 0 for a fresh one), retrying while the previous
/// incarnation's socket is still being torn down.
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let mut tries = 0;
    loop {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return listener,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(ms(20)).await;
            }
            Err(e) => panic!("binding {addr}: {e}"),
        }
    }
}

impl RunningNode {
    fn crash(self) {
        let _ = self.kill.send(());
        self.thread.join().expect("node thread");
    }
}

/// Redis, `n` nodes and the proxy in front of them.
struct Cluster {
    backend: Backend,
    shared: Shared,
    addrs: Vec<SocketAddr>,
    nodes: Mutex<Vec<Option<RunningNode>>>,
    restarts: Mutex<u64>,
    proxy: ProxyHandle,
    _proxy_stop: tokio::sync::oneshot::Sender<()>,
}

impl Cluster {
    /// Starts `n` nodes on `backend`'s Redis and the proxy.
    fn start(backend: Backend, n: usize, prefix: &str) -> Cluster {
        let shared = Shared {
            target: backend.target().expect("the soak runs on Redis"),
            prefix: prefix.to_owned(),
        };
        let mut addrs = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let (addr, node) = start_node(&shared, "127.0.0.1:0".parse().unwrap(), i as u64 + 1);
            addrs.push(addr);
            nodes.push(Some(node));
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let upstreams = addrs.clone();
        std::thread::Builder::new()
            .name("cluster-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let proxy = Proxy::start_many(upstreams).await.expect("proxy starts");
                    let _ = ready_tx.send(proxy.handle());
                    let _ = stop_rx.await;
                    drop(proxy);
                });
            })
            .expect("proxy thread");
        let proxy = ready_rx.recv().expect("the proxy started");
        Cluster {
            backend,
            shared,
            addrs,
            nodes: Mutex::new(nodes),
            restarts: Mutex::new(0),
            proxy,
            _proxy_stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.proxy.addr())
    }

    fn live(&self) -> Vec<usize> {
        let nodes = self.nodes.lock().unwrap();
        (0..nodes.len()).filter(|&i| nodes[i].is_some()).collect()
    }

    /// Crashes node `i` (no GOING_AWAY, no detach: its runtime is dropped).
    fn crash(&self, i: usize) {
        let node = self.nodes.lock().unwrap()[i].take();
        if let Some(node) = node {
            node.crash();
        }
    }

    /// Starts node `i` again on its address, with nothing from before but
    /// what is in Redis.
    fn restart(&self, i: usize) {
        if self.nodes.lock().unwrap()[i].is_some() {
            return;
        }
        let seed = {
            let mut r = self.restarts.lock().unwrap();
            *r += 1;
            100 + *r
        };
        let (_, node) = start_node(&self.shared, self.addrs[i], seed);
        self.nodes.lock().unwrap()[i] = Some(node);
    }

    /// Appends to `channel` as the application would, through a store of
    /// its own (on a thread with a tokio runtime, whatever runs the test).
    fn broadcast(&self, channel: &str, text: &str) {
        let shared = self.shared.clone();
        let (channel, text) = (channel.to_owned(), text.to_owned());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = shared
                    .store()
                    .connect()
                    .await
                    .expect("a store for the test");
                store
                    .broadcast(&channel, &Payload::text(text))
                    .await
                    .expect("broadcast");
            });
        })
        .join()
        .expect("broadcast thread");
    }

    /// `H` of a session: the highest publish seq its store applied.
    fn applied_seq(&self, session: &str) -> u64 {
        let h: Option<u64> = self
            .backend
            .query(
                redis::cmd("HGET")
                    .arg(format!("{}{{s:{session}}}", self.shared.prefix))
                    .arg("h"),
            )
            .expect("HGET");
        h.unwrap_or(0)
    }

    /// The key of `channel`'s log in Redis.
    fn channel_key(&self, channel: &str) -> String {
        format!("{}{{c:{channel}}}:log", self.shared.prefix)
    }

    /// Every payload in `channel`'s log, in log order.
    fn channel_log(&self, channel: &str) -> Vec<String> {
        let entries: Vec<(String, HashMap<String, Vec<u8>>)> = self
            .backend
            .query(
                redis::cmd("XRANGE")
                    .arg(self.channel_key(channel))
                    .arg("-")
                    .arg("+"),
            )
            .expect("XRANGE");
        entries
            .into_iter()
            .filter_map(|(_, fields)| {
                fields
                    .get("p")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let nodes: Vec<_> = self.nodes.lock().unwrap().drain(..).flatten().collect();
        for node in nodes {
            node.crash();
        }
    }
}

fn client_config(seed: u64) -> redial_core::Config {
    fast_config()
        .seed(seed)
        .ping_interval(Some(ms(300)))
        .pong_timeout(ms(300))
        .connect_timeout(ms(1000))
        .max_attempts(0)
        .close_linger(ms(2000))
        .build()
        .unwrap()
}

// ----- a restarted node serves its old sessions -------------------------

async fn restarted_node_serves_old_sessions<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = format!(
        "restart{}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let cluster = Cluster::start(Backend::redis(), 1, &prefix);
    let mut client = Client::connect(make(cluster.url()).protocol(Wire).config(client_config(1)));
    let (_, first) = client.connected("the first connection").await;
    client.handle.subscribe("news").await.unwrap();
    client
        .next("the subscription", |e| {
            matches!(e, Event::Subscribed { .. })
        })
        .await;
    cluster.broadcast("news", "before");
    client
        .next("the first message", |e| message_text(e) == Some("before"))
        .await;

    // The only node crashes; while it is down the channel moves on.
    cluster.crash(0);
    client.disconnected("the crash").await;
    for text in ["missed-1", "missed-2"] {
        cluster.broadcast("news", text);
    }
    cluster.restart(0);

    let (_, again) = client.connected("the reconnect").await;
    assert!(again.resumed, "the restarted node resumed the session");
    assert_eq!(again.session.id, first.session.id);
    assert_eq!(again.session.name, first.session.name);
    let mut replayed = Vec::new();
    for text in ["missed-1", "missed-2"] {
        let seen = client
            .next("a replayed message", |e| message_text(e) == Some(text))
            .await;
        if let Event::Message { offset, .. } = seen.event {
            replayed.push(offset);
        }
    }
    assert_eq!(replayed, [Some(2), Some(3)], "original offsets, in order");
    // Still subscribed (kept across the restart): new messages flow.
    cluster.broadcast("news", "after");
    client
        .next("a message after the restart", |e| {
            message_text(e) == Some("after")
        })
        .await;
    let gaps = client.events.matching(|e| matches!(e, Event::Gap { .. }));
    assert!(gaps.is_empty(), "no gap: {gaps:?}");
    client.close().await;
}

on_every_runtime!(restarted_node_serves_old_sessions: redis);

// ----- the soak ---------------------------------------------------------

/// What the chaos did.
#[derive(Debug, Default)]
struct Chaos {
    crashes: u32,
    double_crashes: u32,
    rst: u32,
    fin: u32,
    /// Redis masters killed, each with its replica promoted before the
    /// chaos went on.
    failovers: u32,
    /// From each kill to the promotion seen by every Redis node.
    promotions: Vec<Duration>,
}

/// Seeded chaos from `started` until `until`, then every node restarted.
/// On a backend that fails over, the Redis master holding the log of one
/// of `channels` is killed halfway through (while the nodes serve), and
/// the chaos goes on once its replica took over.
fn chaos(
    cluster: &Cluster,
    channels: &[String],
    seed: u64,
    started: Instant,
    until: Instant,
) -> Chaos {
    let mut rng = SeededRng::new(seed);
    let mut did = Chaos::default();
    let fail_over_at = started + (until - started) / 2;
    // Time passing is what chaos is made of: these sleeps pace it.
    while Instant::now() < until {
        std::thread::sleep(rng.millis(300, 900));
        if did.failovers == 0 && Instant::now() >= fail_over_at && cluster.backend.fails_over() {
            let channel = &channels[rng.below(channels.len() as u64) as usize];
            if let Some(promoted) = cluster.backend.fail_over(&cluster.channel_key(channel)) {
                let promoted = promoted.unwrap_or_else(|e| {
                    panic!(
                        "failing over a Redis master: {e}\n{}",
                        cluster.backend.log()
                    )
                });
                did.promotions.push(promoted.took);
                did.failovers += 1;
                continue;
            }
        }
        match rng.below(100) {
            0..=39 => {
                let live = cluster.live();
                let victim = live[rng.below(live.len() as u64) as usize];
                cluster.crash(victim);
                std::thread::sleep(rng.millis(200, 1500));
                cluster.restart(victim);
                did.crashes += 1;
            }
            40..=54 => {
                let live = cluster.live();
                let a = live[rng.below(live.len() as u64) as usize];
                let b = live[(live.iter().position(|&x| x == a).unwrap() + 1) % live.len()];
                cluster.crash(a);
                cluster.crash(b);
                std::thread::sleep(rng.millis(200, 1500));
                cluster.restart(a);
                cluster.restart(b);
                did.double_crashes += 1;
            }
            55..=79 => {
                cluster.proxy.cut_all(Cut::Reset);
                did.rst += 1;
            }
            _ => {
                cluster.proxy.cut_all(Cut::Fin);
                did.fin += 1;
            }
        }
    }
    for i in 0..cluster.addrs.len() {
        cluster.restart(i);
    }
    did
}

/// One client's record, taken once everything settled.
struct ClientRecord {
    label: String,
    channel: String,
    sent: Vec<String>,
    /// Per channel, the payloads delivered, in delivery order.
    delivered: BTreeMap<String, Vec<String>>,
    gaps: usize,
    reconnects: usize,
    /// Sessions the client had (1 unless one was lost).
    sessions: usize,
    /// The session it ended in, and the seq of its last publish.
    session: String,
    last_seq: u64,
}

/// What the clients share: every channel, a start line and the last
/// payload of every channel once publishing is over.
struct Plan {
    channels: Vec<String>,
    subscribed: tokio::sync::Barrier,
    published: tokio::sync::Barrier,
    last: Mutex<HashMap<String, String>>,
    duration: Duration,
}

async fn soak_client<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
    url: String,
    label: String,
    channel: String,
    seed: u64,
    plan: Arc<Plan>,
) -> ClientRecord {
    let mut c = Client::connect(make(url).protocol(Wire).config(client_config(seed)));
    c.connected("the first connection").await;
    for ch in &plan.channels {
        c.handle.subscribe(ch.as_str()).await.unwrap();
    }
    let mut confirmed = HashSet::new();
    while confirmed.len() < plan.channels.len() {
        let seen = c
            .next("the subscriptions", |e| {
                matches!(e, Event::Subscribed { .. })
            })
            .await;
        if let Event::Subscribed { channel, .. } = seen.event {
            confirmed.insert(channel.to_string());
        }
    }
    // Everyone is subscribed before anyone publishes, so every subscriber
    // is owed every message.
    plan.subscribed.wait().await;

    let start = Instant::now();
    let mut sent = Vec::new();
    let mut last_seq = 0;
    while start.elapsed() < plan.duration {
        let body = format!("{channel}:{}", sent.len() + 1);
        last_seq = c
            .handle
            .publish(channel.as_str(), Payload::text(body.clone()))
            .await
            .unwrap();
        sent.push(body);
        pause(&c.rt, PACE).await;
    }
    c.events
        .next_within(
            &c.rt,
            DRAIN,
            "the last ack",
            |e| matches!(e, Event::Acked { seq } if *seq >= last_seq),
        )
        .await;
    if let Some(last) = sent.last() {
        plan.last
            .lock()
            .unwrap()
            .insert(channel.clone(), last.clone());
    }
    plan.published.wait().await;
    let last = plan.last.lock().unwrap().clone();
    // Until the last message of every channel arrived, or DRAIN passed:
    // what is missing then shows in the report rather than as a timeout.
    let all_in = |events: &[common::Seen]| {
        last.iter().all(|(ch, body)| {
            events.iter().any(|s| {
                matches!(&s.event, Event::Message { channel: Some(got), payload, .. }
                    if got.as_str() == ch && payload.as_text() == Some(body.as_str()))
            })
        })
    };
    let deadline = Instant::now() + DRAIN;
    while !all_in(&c.events.all()) && Instant::now() < deadline {
        let wait = c.events.next_within(&c.rt, DRAIN, "any event", |_| true);
        let limit = pause(&c.rt, deadline.saturating_duration_since(Instant::now()));
        futures_util::future::select(std::pin::pin!(wait), std::pin::pin!(limit)).await;
    }

    let all = c.events.all();
    let mut delivered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sessions = HashSet::new();
    let mut session = String::new();
    let mut gaps = 0;
    for s in &all {
        match &s.event {
            Event::Message {
                channel: Some(ch),
                payload,
                ..
            } => delivered
                .entry(ch.to_string())
                .or_default()
                .push(payload.as_text().unwrap_or_default().to_owned()),
            Event::Gap { .. } => gaps += 1,
            Event::Connected {
                session: Some(info),
                ..
            } => {
                sessions.insert(info.id.to_string());
                session = info.id.to_string();
            }
            _ => {}
        }
    }
    let record = ClientRecord {
        label,
        channel,
        sent,
        delivered,
        gaps,
        reconnects: c.events.reconnects(),
        sessions: sessions.len(),
        session,
        last_seq,
    };
    within(&c.rt, DRAIN, "the close", c.handle.close()).await;
    record
}

/// This runtime's clients, side by side.
async fn soak_clients<R: Runtime>(
    make: fn(String) -> Builder<R>,
    url: String,
    rt: &str,
    seed: u64,
    plan: Arc<Plan>,
) -> Vec<ClientRecord> {
    let clients = (0..PER_RUNTIME).map(|i| {
        soak_client(
            make,
            url.clone(),
            format!("{rt}#{i}"),
            format!("{rt}-{i}"),
            seed.wrapping_add(i as u64),
            Arc::clone(&plan),
        )
    });
    futures_util::future::join_all(clients).await
}

/// Missing, extra and out-of-order entries of `got` against `want`.
fn compare(want: &[String], got: &[String]) -> (usize, usize, usize) {
    let position: HashMap<&str, usize> = want
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut seen = vec![0usize; want.len()];
    let mut out_of_order = 0;
    let mut last = None;
    for g in got {
        match position.get(g.as_str()) {
            Some(&i) => {
                seen[i] += 1;
                if last.is_some_and(|l| i < l) {
                    out_of_order += 1;
                }
                last = Some(i);
            }
            None => out_of_order += 1,
        }
    }
    let lost = seen.iter().filter(|&&n| n == 0).count();
    let duplicated = seen.iter().map(|&n| n.saturating_sub(1)).sum();
    (lost, duplicated, out_of_order)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two clients per runtime, tokio and smol, each publishing on its own
/// channel and subscribed to all four.
const PER_RUNTIME: usize = 2;

#[cfg_attr(
    not(redial_has_redis),
    ignore = "needs redis-server: apt-get install redis-server"
)]
#[test]
fn cluster_soak() {
    soak(Backend::redis());
}

redial_tests::needs! { redis_cluster;
    /// The soak on a Redis Cluster: its chaos also kills a Redis master
    /// halfway and goes on once its replica took over.
    #[test]
    fn cluster_soak_on_redis_cluster() {
        soak(Backend::cluster());
    }
}

/// Three nodes on `backend`'s Redis under seeded chaos, then the checks:
/// every publish applied once and delivered once to every subscriber, in
/// order.
fn soak(backend: Backend) {
    let secs = env_u64("REDIAL_SOAK_SECS", DEFAULT_SECS);
    let seed = env_u64("REDIAL_SOAK_SEED", DEFAULT_SEED);
    let prefix = format!("soak{}:", std::process::id());
    let cluster = Cluster::start(backend, 3, &prefix);
    let duration = Duration::from_secs(secs);
    let runtimes = ["tokio", "smol"];
    let channels: Vec<String> = runtimes
        .iter()
        .flat_map(|rt| (0..PER_RUNTIME).map(move |i| format!("{rt}-{i}")))
        .collect();
    let plan = Arc::new(Plan {
        channels: channels.clone(),
        subscribed: tokio::sync::Barrier::new(channels.len() + 1),
        published: tokio::sync::Barrier::new(channels.len()),
        last: Mutex::new(HashMap::new()),
        duration,
    });

    let mut threads = Vec::new();
    for (r, rt) in runtimes.into_iter().enumerate() {
        let url = cluster.url();
        let plan = Arc::clone(&plan);
        threads.push(std::thread::spawn(move || {
            let mut records = Vec::new();
            let out = &mut records;
            let seed = seed.wrapping_add(r as u64 * 10);
            match rt {
                "tokio" => common::on_tokio(|make| async move {
                    *out = soak_clients(make, url, rt, seed, plan).await;
                }),
                _ => common::on_smol(|make| async move {
                    *out = soak_clients(make, url, rt, seed, plan).await;
                }),
            }
            records
        }));
    }
    // The chaos starts with the publishing.
    let wait_subscribed = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    wait_subscribed.block_on(plan.subscribed.wait());
    let started = Instant::now();
    let did = chaos(&cluster, &channels, seed, started, started + duration);
    let records: Vec<ClientRecord> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread"))
        .collect();

    // Applied: each channel's log in Redis against what its publisher sent.
    let (mut lost, mut duplicated, mut out_of_order) = (0, 0, 0);
    let mut sent_total = 0;
    let mut delivered_total = 0;
    let sent: HashMap<&str, &[String]> = records
        .iter()
        .map(|r| (r.channel.as_str(), r.sent.as_slice()))
        .collect();
    for (ch, want) in &sent {
        sent_total += want.len();
        let (l, d, o) = compare(want, &cluster.channel_log(ch));
        lost += l;
        duplicated += d;
        out_of_order += o;
    }
    // Delivered: every subscriber, every channel.
    for r in &records {
        for (ch, want) in &sent {
            let got = r.delivered.get(*ch).map(Vec::as_slice).unwrap_or(&[]);
            delivered_total += got.len();
            let (l, d, o) = compare(want, got);
            lost += l;
            duplicated += d;
            out_of_order += o;
        }
    }
    // And each publisher's session applied exactly its seqs.
    let seq_mismatches = records
        .iter()
        .filter(|r| cluster.applied_seq(&r.session) != r.last_seq)
        .count();
    let gaps: usize = records.iter().map(|r| r.gaps).sum();
    let reconnects: usize = records.iter().map(|r| r.reconnects).sum();
    let lost_sessions: usize = records.iter().map(|r| r.sessions - 1).sum();
    let promoted: String = did
        .promotions
        .iter()
        .map(|took| format!(" (replica promoted {took:.1?} after the kill)"))
        .collect();
    let line = format!(
        "cluster soak: {secs} s, seed {seed:#x}, 3 nodes, clients {}: published={sent_total} \
         delivered={delivered_total} lost={lost} duplicated={duplicated} \
         out_of_order={out_of_order} gaps={gaps} reconnects={reconnects} \
         lost_sessions={lost_sessions} seq_mismatches={seq_mismatches} chaos=crash:{},double_crash:{},rst:{},fin:{},failover:{}{promoted} \
         (REDIAL_SOAK_SECS, REDIAL_SOAK_SEED)",
        records
            .iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(","),
        did.crashes,
        did.double_crashes,
        did.rst,
        did.fin,
        did.failovers,
    );
    // Past libtest's capture, so the summary shows in a plain run.
    let _ = writeln!(std::io::stderr(), "{line}");
    assert!(sent_total > 0 && records.len() == channels.len(), "{line}");
    assert_eq!(
        delivered_total,
        sent_total * records.len(),
        "every subscriber got every message: {line}"
    );
    assert_eq!(
        (lost, duplicated, out_of_order, gaps, seq_mismatches),
        (0, 0, 0, 0, 0),
        "{line}"
    );
}
