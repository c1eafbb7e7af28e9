//! `redial demo`: a redial-server node (memory store) and the test kit's
//! fault proxy in-process on 127.0.0.1, a few Wire clients that publish and
//! subscribe through scripted and seeded random chaos, a live status line,
//! and a summary that says whether anything was lost or duplicated.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redial_core::{Backoff, Config, Event, Payload, State, TerminalReason, Wire};
use redial_testkit::proxy::{Cut, Proxy};
use redial_testkit::rng::SeededRng;
use redial_tokio::Handle;

use crate::args::DemoArgs;
use crate::{CliError, Exit};

mod ledger;
mod server;

use server::DemoServer;

/// Every client publishes on, and subscribes to, this channel.
const CHANNEL: &str = "demo";
/// Time between two publishes of one client.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How long a detached session stays resumable on the demo's server.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How far the store's clock jumps to expire every resume token.
const CLOCK_JUMP: Duration = Duration::from_secs(25 * 3600);

/// What one client has seen, updated by its event task.
#[derive(Debug)]
struct View {
    state: State,
    attempt: u32,
    reconnects: u64,
    fresh_sessions: u64,
    received: u64,
    gaps: u64,
    lost_at: Option<Instant>,
    recoveries: Vec<Duration>,
    closed: Option<(TerminalReason, usize)>,
}

impl Default for View {
    fn default() -> Self {
        View {
            state: State::Connecting,
            attempt: 0,
            reconnects: 0,
            fresh_sessions: 0,
            received: 0,
            gaps: 0,
            lost_at: None,
            recoveries: Vec::new(),
            closed: None,
        }
    }
}

type SharedView = Arc<Mutex<View>>;

fn view(v: &SharedView) -> MutexGuard<'_, View> {
    v.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fault the script applies.
#[derive(Debug, Clone, Copy)]
enum Chaos {
    CutReset,
    CutFin,
    Blackhole,
    LiftBlackhole,
    Latency(Duration),
    NoLatency,
    Deploy,
    ExpireTokens,
    AcceptAgain,
}

impl Chaos {
    fn describe(self) -> String {
        match self {
            Chaos::CutReset => "cut every connection (RST)".into(),
            Chaos::CutFin => "cut every connection (FIN)".into(),
            Chaos::Blackhole => "blackhole: the link goes silent, nothing is closed".into(),
            Chaos::LiftBlackhole => "blackhole lifted".into(),
            Chaos::Latency(d) => format!("latency {} ms each way", d.as_millis()),
            Chaos::NoLatency => "latency back to 0".into(),
            Chaos::Deploy => {
                "deploy: GOING_AWAY (back in 1 s, spread 1 s), restart keeping sessions, 1 s down"
                    .into()
            }
            Chaos::ExpireTokens => {
                "long outage: refuse + cut (FIN), store clock +25 h (resume tokens expire)".into()
            }
            Chaos::AcceptAgain => "network back: accepting connections".into(),
        }
    }

    async fn apply(self, proxy: &Proxy, server: &DemoServer) {
        match self {
            Chaos::CutReset => drop(proxy.cut_all(Cut::Reset)),
            Chaos::CutFin => drop(proxy.cut_all(Cut::Fin)),
            Chaos::Blackhole => proxy.blackhole(true),
            Chaos::LiftBlackhole => proxy.blackhole(false),
            Chaos::Latency(d) => proxy.set_latency(d),
            Chaos::NoLatency => proxy.set_latency(Duration::ZERO),
            Chaos::Deploy => {
                // GOING_AWAY comes from the old node's shutdown (back in
                // 1 s, spread 1 s, from the demo's config).
                server.restart();
                proxy.refuse_new(Some(Duration::from_secs(1)));
            }
            Chaos::ExpireTokens => {
                proxy.set_refusing(true);
                proxy.cut_all(Cut::Fin);
                // A token's lifetime runs from when the server saw its
                // connection go: jump only once every connection is gone.
                let _ = tokio::time::timeout(Duration::from_secs(3), server.all_gone()).await;
                server.ledger().advance_clock(CLOCK_JUMP);
            }
            Chaos::AcceptAgain => proxy.set_refusing(false),
        }
    }
}

/// The scripted faults plus the seeded random ones, sorted by time.
fn schedule(total: Duration, seed: u64) -> Vec<(Duration, Chaos)> {
    let at = |f: f64| total.mul_f64(f);
    let mut plan = vec![
        (at(0.10), Chaos::CutReset),
        (at(0.20), Chaos::Blackhole),
        (at(0.33), Chaos::LiftBlackhole),
        (at(0.45), Chaos::Deploy),
        (at(0.62), Chaos::ExpireTokens),
        (at(0.62) + Duration::from_millis(1500), Chaos::AcceptAgain),
        (at(0.78), Chaos::CutFin),
    ];
    let mut rng = SeededRng::new(seed ^ 0xC4A0_5C4A_05C4_A05C);
    let random = (total.as_secs() / 4).max(1);
    for _ in 0..random {
        let when = at(0.05 + 0.83 * rng.unit());
        let chaos = match rng.below(3) {
            0 => Chaos::CutReset,
            1 => Chaos::CutFin,
            _ => Chaos::Latency(rng.millis(100, 399)),
        };
        plan.push((when, chaos));
        if let Chaos::Latency(_) = chaos {
            plan.push((when + Duration::from_secs(1), Chaos::NoLatency));
        }
    }
    plan.sort_by_key(|(t, _)| *t);
    plan
}

fn client_config(seed: u64, i: u64) -> Result<Config, CliError> {
    // Keepalive and backoff tightened so a 20 s run shows every recovery;
    // flap damping, queueing and replay are the library defaults.
    Config::builder()
        .seed(seed.wrapping_mul(1_000).wrapping_add(i))
        .backoff(Backoff::full_jitter(
            Duration::from_millis(500),
            Duration::from_secs(4),
        ))
        .ping_interval(Some(Duration::from_secs(1)))
        .pong_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(3))
        .stable_after(Duration::from_secs(2))
        .close_linger(Duration::from_secs(15))
        .max_attempts(0)
        .build()
        .map_err(|e| CliError::Failure(format!("demo config: {e}")))
}

/// Keeps a client's [`View`] up to date until its session ends.
async fn watch(mut events: redial_tokio::Events, v: SharedView) {
    while let Some(e) = events.recv().await {
        let mut s = view(&v);
        match e {
            Event::StateChanged { to, .. } => s.state = to,
            Event::ReconnectScheduled { attempt, .. } => s.attempt = attempt,
            Event::Connected { reconnect, .. } => {
                if reconnect {
                    s.reconnects += 1;
                }
                s.attempt = 0;
                if let Some(t) = s.lost_at.take() {
                    s.recoveries.push(t.elapsed());
                }
            }
            Event::Disconnected {
                will_reconnect: true,
                ..
            } => {
                s.lost_at = s.lost_at.or(Some(Instant::now()));
            }
            Event::ResumeRejected { .. } => s.fresh_sessions += 1,
            Event::Message { .. } => s.received += 1,
            Event::Gap { .. } => s.gaps += 1,
            Event::Closed {
                reason,
                undelivered,
                ..
            } => s.closed = Some((reason, undelivered)),
            _ => {}
        }
    }
}

/// Status output: one rewritten line on a terminal, plain lines otherwise.
struct Screen {
    tty: bool,
    start: Instant,
}

impl Screen {
    fn stamp(&self) -> String {
        format!("[{:>5.1}s]", self.start.elapsed().as_secs_f64())
    }

    /// A line that stays (chaos, phases).
    fn log(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K");
        }
        let _ = writeln!(out, "{} {line}", self.stamp());
        let _ = out.flush();
    }

    /// The status line: rewritten on a terminal, printed otherwise.
    fn status(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\r\x1b[2K{} {line}", self.stamp());
        } else {
            let _ = writeln!(out, "{} {line}", self.stamp());
        }
        let _ = out.flush();
    }

    fn end_status(&self) {
        if self.tty {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out);
            let _ = out.flush();
        }
    }
}

fn short_state(s: &View) -> String {
    match s.state {
        State::Connected => "up".into(),
        State::Reconnecting if s.attempt > 0 => format!("retry#{}", s.attempt),
        State::Reconnecting => "retry".into(),
        State::Connecting => "dial".into(),
        State::Closing => "closing".into(),
        State::Closed => "closed".into(),
        _ => s.state.name().into(),
    }
}

fn status_line(views: &[SharedView], sent: u64, delivered: u64) -> String {
    let snapshot: Vec<(String, State, u64)> = views
        .iter()
        .map(|v| {
            let s = view(v);
            (short_state(&s), s.state, s.reconnects)
        })
        .collect();
    let reconnects: u64 = snapshot.iter().map(|(_, _, r)| r).sum();
    let states = if snapshot.len() <= 6 {
        snapshot
            .iter()
            .enumerate()
            .map(|(i, (s, _, _))| format!("c{i} {s:<8}"))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        let up = snapshot
            .iter()
            .filter(|(_, s, _)| *s == State::Connected)
            .count();
        format!("connected {up}/{}", snapshot.len())
    };
    format!("{states} | sent {sent}  delivered {delivered}  reconnects {reconnects}")
}

fn percentile(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted
        .get(i.min(sorted.len() - 1))
        .map(|d| format!("{:.2} s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// Prints `header` over `row`, right-aligned.
fn table(header: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = header
        .iter()
        .zip(row)
        .map(|(h, r)| h.len().max(r.len()))
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    format!(
        "{}\n{}",
        line(header.iter().map(|h| (*h).to_owned()).collect()),
        line(row.to_vec())
    )
}

struct Client {
    handle: Handle,
    view: SharedView,
    watcher: tokio::task::JoinHandle<()>,
}

/// Runs the demo; exits 1 when anything was lost or duplicated.
pub async fn run(a: DemoArgs) -> Result<Exit, CliError> {
    let total = Duration::from_secs(a.seconds);
    let fail = |what: &str, e: &dyn std::fmt::Display| CliError::Failure(format!("{what}: {e}"));
    let server = DemoServer::start(a.seed, TOKEN_LIFETIME)
        .await
        .map_err(|e| fail("starting the server", &e))?;
    let proxy = Proxy::start(server.addr())
        .await
        .map_err(|e| fail("starting the proxy", &e))?;
    let url = format!("ws://{}/", proxy.addr());
    let screen = Screen {
        tty: std::io::stdout().is_terminal(),
        start: Instant::now(),
    };
    println!(
        "redial demo: server {}, proxy {url}, {} clients, {} s, seed {}",
        server.url(),
        a.clients,
        a.seconds,
        a.seed
    );
    println!(
        "clients: Wire, publish every {} ms and subscribe to {CHANNEL:?}; keepalive 1 s, full jitter 0.5 s..4 s",
        PUBLISH_EVERY.as_millis()
    );

    let mut clients = Vec::new();
    for i in 0..a.clients {
        let (handle, events) = redial_tokio::builder(url.clone())
            .config(client_config(a.seed, i)?)
            .protocol(Wire)
            .connect()
            .map_err(|e| fail("starting a client", &e))?;
        handle
            .subscribe(CHANNEL)
            .await
            .map_err(|e| fail("subscribing", &e))?;
        let v = SharedView::default();
        let watcher = tokio::spawn(watch(events, v.clone()));
        clients.push(Client {
            handle,
            view: v,
            watcher,
        });
    }

    // Publishers.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let handle = c.handle.clone();
        let sent = sent.clone();
        let stop = stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(PUBLISH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let body = format!("c{i}-{n}");
                match handle.publish(CHANNEL, Payload::text(body)).await {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    Err(_) => return,
                }
            }
        }));
    }

    // The chaos script and the status line.
    let plan = schedule(total, a.seed);
    let mut next = 0;
    let views: Vec<SharedView> = clients.iter().map(|c| c.view.clone()).collect();
    let refresh = if screen.tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_status = Instant::now();
    while screen.start.elapsed() < total {
        tick.tick().await;
        while let Some((when, chaos)) = plan.get(next) {
            if screen.start.elapsed() < *when {
                break;
            }
            next += 1;
            screen.log(&format!("chaos: {}", chaos.describe()));
            chaos.apply(&proxy, &server).await;
        }
        if last_status.elapsed() >= refresh {
            last_status = Instant::now();
            let line = status_line(
                &views,
                sent.load(Ordering::Relaxed),
                server.ledger().applied_total(),
            );
            screen.status(&line);
        }
    }

    // Wind down: heal the network, stop publishing, wait for every ack.
    stop.store(true, Ordering::Relaxed);
    proxy.blackhole(false);
    proxy.set_refusing(false);
    proxy.set_latency(Duration::ZERO);
    for p in publishers {
        let _ = p.await;
    }
    screen.log("closing: waiting for every publish to be acknowledged");
    let mut closers = Vec::new();
    for c in &clients {
        let handle = c.handle.clone();
        closers.push(tokio::spawn(async move { handle.close().await }));
    }
    for c in closers {
        let _ = c.await;
    }
    for c in clients.iter_mut() {
        let _ = (&mut c.watcher).await;
    }
    screen.status(&status_line(
        &views,
        sent.load(Ordering::Relaxed),
        server.ledger().applied_total(),
    ));
    screen.end_status();

    // What the store applied, per payload, across every session any client
    // had: each publish exactly once.
    let (mut reconnects, mut fresh, mut received, mut gaps, mut undelivered) = (0, 0, 0, 0, 0);
    let mut recoveries = Vec::new();
    let mut not_clean = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let s = view(&c.view);
        reconnects += s.reconnects;
        fresh += s.fresh_sessions;
        received += s.received;
        gaps += s.gaps;
        recoveries.extend(s.recoveries.iter().copied());
        match s.closed {
            Some((TerminalReason::ClosedByUser, n)) => undelivered += n,
            Some((reason, n)) => {
                undelivered += n;
                not_clean.push(format!("c{i} ended as {reason}"));
            }
            None => not_clean.push(format!("c{i} never closed")),
        }
    }
    let counts: HashMap<String, u64> = server.ledger().applied();
    let sent = sent.load(Ordering::Relaxed);
    let delivered = counts.len() as u64;
    let duplicated: u64 = counts.values().map(|c| c - 1).sum();
    let lost = sent.saturating_sub(delivered);
    recoveries.sort();
    println!();
    println!(
        "{}",
        table(
            &[
                "sent",
                "delivered",
                "lost",
                "duplicated",
                "received",
                "reconnects",
                "fresh sessions",
                "recovery p50",
                "recovery p99",
            ],
            &[
                sent.to_string(),
                delivered.to_string(),
                lost.to_string(),
                duplicated.to_string(),
                received.to_string(),
                reconnects.to_string(),
                fresh.to_string(),
                percentile(&recoveries, 0.5),
                percentile(&recoveries, 0.99),
            ],
        )
    );
    println!(
        "delivered: stored by the server exactly once; received: messages the subscribers got ({gaps} gaps reported)"
    );
    server.close_all(1000, "demo over");
    drop(proxy);
    if lost > 0 || duplicated > 0 || undelivered > 0 || !not_clean.is_empty() {
        eprintln!(
            "redial demo: FAILED: {lost} lost, {duplicated} duplicated, {undelivered} undelivered{}",
            if not_clean.is_empty() {
                String::new()
            } else {
                format!("; {}", not_clean.join(", "))
            }
        );
        return Ok(Exit::Failure);
    }
    println!("nothing lost, nothing duplicated");
    Ok(Exit::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_seeded_and_sorted() {
        let total = Duration::from_secs(20);
        let a = schedule(total, 7);
        let b = schedule(total, 7);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(a.iter().all(|(t, _)| *t < total));
        assert_ne!(format!("{a:?}"), format!("{:?}", schedule(total, 8)));
    }

    #[test]
    fn percentiles_of_nothing_are_dashes() {
        assert_eq!(percentile(&[], 0.5), "-");
        let d = [Duration::from_millis(100), Duration::from_millis(300)];
        assert_eq!(percentile(&d, 0.99), "0.30 s");
    }
}
