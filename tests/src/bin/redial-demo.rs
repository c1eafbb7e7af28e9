//! `redial-demo`: the reference server, the fault proxy and a few
//! reconnecting clients, all on 127.0.0.1, through scripted chaos; ends with
//! a summary of what was sent, stored, lost and duplicated.
//!
//! `redial-demo [--seconds N] [--clients N] [--seed N]`

use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial_core::{Config, Event, Payload, State, Wire};
use redial_tests::proxy::{Cut, Proxy};
use redial_tests::server::{Server, ServerConfig};

struct Args {
    seconds: u64,
    clients: usize,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 20,
        clients: 4,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--seconds" => args.seconds = value("--seconds")?.clamp(5, 3600),
            "--clients" => args.clients = value("--clients")?.clamp(1, 200) as usize,
            "--seed" => args.seed = value("--seed")?,
            "-h" | "--help" => {
                return Err("usage: redial-demo [--seconds N] [--clients N] [--seed N]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    reconnects: u64,
    received: u64,
    recoveries: Vec<Duration>,
    undelivered: usize,
    closed: Option<String>,
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::start(ServerConfig::default()).await?;
    let proxy = Proxy::start(server.addr()).await?;
    let url = format!("ws://{}/", proxy.addr());
    println!(
        "redial demo: server {}  proxy {}  {} clients  {} s",
        server.url(),
        url,
        args.clients,
        args.seconds
    );

    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..args.clients {
        // Keepalive shortened so the blackhole phase is noticed within the
        // demo; backoff and everything else are the defaults.
        let config = Config::builder()
            .seed(args.seed.wrapping_mul(1000).wrapping_add(i as u64))
            .ping_interval(Some(Duration::from_secs(1)))
            .pong_timeout(Duration::from_secs(1))
            .max_attempts(0)
            .build()?;
        let (handle, mut events) = redial_tokio::builder(url.clone())
            .config(config)
            .protocol(Wire)
            .connect()?;
        handle.subscribe("demo").await?;
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let seen_events = seen.clone();
        let watcher = tokio::spawn(async move {
            let mut lost_at: Option<Instant> = None;
            while let Some(e) = events.recv().await {
                let Ok(mut s) = seen_events.lock() else {
                    return;
                };
                match e {
                    Event::Connected {
                        reconnect, session, ..
                    } => {
                        if let Some(info) = session {
                            s.names.insert(info.name.to_string());
                        }
                        if reconnect {
                            s.reconnects += 1;
                        }
                        if let Some(t) = lost_at.take() {
                            s.recoveries.push(t.elapsed());
                        }
                    }
                    Event::Disconnected { .. } => lost_at = lost_at.or(Some(Instant::now())),
                    Event::Message { .. } => s.received += 1,
                    Event::Closed {
                        reason,
                        undelivered,
                        ..
                    } => {
                        s.undelivered = undelivered;
                        s.closed = Some(reason.name().to_owned());
                    }
                    _ => {}
                }
            }
        });
        clients.push((handle, seen, watcher));
    }

    // Publishers: one message every 100 ms per client while the demo runs.
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut publishers = Vec::new();
    for (i, (handle, _, _)) in clients.iter().enumerate() {
        let handle = handle.clone();
        let sent = sent.clone();
        publishers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let body = format!("client{i} message {n}");
                if handle.publish("demo", Payload::text(body)).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    // The chaos script, spread over the run, plus seeded random cuts.
    let total = args.seconds as f64;
    let at = |f: f64| Duration::from_secs_f64(total * f);
    let script: Vec<(Duration, &str)> = vec![
        (at(0.15), "cut (RST)"),
        (at(0.30), "blackhole"),
        (at(0.42), "lift blackhole"),
        (at(0.55), "going away (retry after 1 s, window 1 s)"),
        (at(0.70), "cut (FIN)"),
        (at(0.82), "restart (key kept)"),
    ];
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut next = 0;
    let mut last_status = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some((when, what)) = script.get(next) {
            if start.elapsed() >= *when {
                next += 1;
                println!("\n[{:>5.1}s] chaos: {what}", start.elapsed().as_secs_f64());
                match *what {
                    "cut (RST)" => drop(proxy.cut_all(Cut::Reset)),
                    "blackhole" => proxy.blackhole(true),
                    "lift blackhole" => proxy.blackhole(false),
                    "cut (FIN)" => drop(proxy.cut_all(Cut::Fin)),
                    "restart (key kept)" => server.restart(true),
                    _ => server.going_away(Duration::from_secs(1), Duration::from_secs(1)),
                }
            }
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            let connected = clients
                .iter()
                .filter(|(h, _, _)| h.state() == State::Connected)
                .count();
            let stats = server.stats();
            let line = format!(
                "[{:>5.1}s] connected {connected}/{}  sent {}  stored {}  reconnects {}",
                start.elapsed().as_secs_f64(),
                clients.len(),
                sent.load(Ordering::Relaxed),
                stats.publishes_applied,
                clients
                    .iter()
                    .map(|(_, s, _)| s.lock().map(|s| s.reconnects).unwrap_or(0))
                    .sum::<u64>(),
            );
            if tty {
                print!("\r{line}   ");
                use std::io::Write;
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
    }
    for p in publishers {
        let _ = p.await;
    }
    println!("\nclosing: waiting for every publish to be acknowledged");
    for (handle, _, _) in &clients {
        handle.close().await;
    }
    let mut seen = Vec::new();
    for (handle, s, watcher) in clients {
        drop(handle);
        let _ = watcher.await;
        seen.push(s);
    }

    // What the server stored, per session name: exactly once, in order.
    let mut stored = 0u64;
    let mut duplicated = 0u64;
    let mut reconnects = 0u64;
    let mut received = 0u64;
    let mut undelivered = 0usize;
    let mut recoveries = Vec::new();
    for s in &seen {
        let Ok(s) = s.lock() else { continue };
        reconnects += s.reconnects;
        received += s.received;
        undelivered += s.undelivered;
        recoveries.extend(s.recoveries.iter().copied());
        let mut counts: HashMap<String, u64> = HashMap::new();
        for name in &s.names {
            for p in server.applied(name) {
                let body = p.payload.as_text().unwrap_or_default().to_owned();
                *counts.entry(body).or_default() += 1;
            }
        }
        stored += counts.len() as u64;
        duplicated += counts.values().map(|c| c - 1).sum::<u64>();
    }
    let sent = sent.load(Ordering::Relaxed);
    let lost = sent.saturating_sub(stored);
    recoveries.sort();
    let pct = |p: f64| {
        recoveries
            .get(((recoveries.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    println!();
    println!("| sent | stored | lost | duplicated | received | reconnects | recovery p50 | recovery p99 |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {sent} | {stored} | {lost} | {duplicated} | {received} | {reconnects} | {} | {} |",
        pct(0.5),
        pct(0.99)
    );
    if lost > 0 || duplicated > 0 || undelivered > 0 {
        return Err(
            format!("{lost} lost, {duplicated} duplicated, {undelivered} undelivered").into(),
        );
    }
    Ok(())
}
