//! The chaos soak: a publisher and a subscriber, both through the fault
//! proxy, while seeded random chaos cuts the link (RST and FIN), blackholes
//! it, adds latency, refuses new connections and restarts the server (key
//! kept). Afterwards every publish must have been applied by the server
//! exactly once and in order, and delivered to the subscriber exactly once
//! and in order.
//!
//! Runs on tokio, async-std and smol side by side (each with its own server
//! and proxy) and prints one summary line per runtime. This file has its own
//! `main` (`harness = false`) so the summary shows in `cargo test` output.
//!
//! - `REDIAL_SOAK_SECS`: chaos duration per runtime (default 12).
//! - `REDIAL_SOAK_SEED`: the chaos seed (default fixed; printed).

// Integration-test helpers: a failed unwrap is a failed test, and these
// helper functions are not `#[test]` functions, which clippy.toml covers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fast_config, message_text, ms, pause, within, Client, Harness, Seen};
use redial_core::{Event, Payload, Wire};
use redial_driver::{Builder, Runtime};
use redial_tests::proxy::Cut;
use redial_tests::reference::ServerConfig;
use redial_tests::rng::SeededRng;

const DEFAULT_SECS: u64 = 12;
const DEFAULT_SEED: u64 = 0x5EED_50A4;
/// Between two publishes.
const PACE: Duration = Duration::from_millis(5);
/// How long the system may take to settle once the chaos is over.
const DRAIN: Duration = Duration::from_secs(30);

/// What the chaos did, by kind.
#[derive(Debug, Default, Clone)]
struct Chaos {
    rst: u32,
    fin: u32,
    blackhole: u32,
    latency: u32,
    refuse: u32,
    restart: u32,
}

/// Runs seeded chaos on the server's runtime until `stop`, then heals
/// everything and reports.
async fn chaos(
    server: redial_tests::reference::ServerControl,
    proxy: redial_tests::proxy::ProxyHandle,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Chaos {
    let mut rng = SeededRng::new(seed);
    let mut did = Chaos::default();
    while !stop.load(Ordering::SeqCst) {
        // Long enough between faults that most connections get somewhere.
        tokio::time::sleep(rng.millis(200, 700)).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match rng.below(100) {
            0..=29 => {
                proxy.cut_all(Cut::Reset);
                did.rst += 1;
            }
            30..=49 => {
                proxy.cut_all(Cut::Fin);
                did.fin += 1;
            }
            50..=64 => {
                proxy.blackhole(true);
                tokio::time::sleep(rng.millis(300, 1200)).await;
                proxy.blackhole(false);
                did.blackhole += 1;
            }
            65..=77 => {
                proxy.set_latency(rng.millis(10, 60));
                tokio::time::sleep(rng.millis(500, 1500)).await;
                proxy.set_latency(Duration::ZERO);
                did.latency += 1;
            }
            78..=87 => {
                proxy.refuse_new(Some(rng.millis(200, 800)));
                proxy.cut_all(Cut::Reset);
                did.refuse += 1;
            }
            _ => {
                server.restart(true);
                did.restart += 1;
            }
        }
    }
    proxy.blackhole(false);
    proxy.set_latency(Duration::ZERO);
    proxy.set_refusing(false);
    did
}

/// One runtime's result.
struct Report {
    sent: usize,
    applied: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    gaps: usize,
    reconnects: usize,
    recoveries: Vec<Duration>,
    chaos: Chaos,
    publisher_names: usize,
}

impl Report {
    fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.gaps == 0
            && self.applied == self.sent
            && self.delivered == self.sent
    }

    fn line(&self, label: &str) -> String {
        let mut r = self.recoveries.clone();
        r.sort();
        let pct = |p: f64| -> String {
            if r.is_empty() {
                return "-".into();
            }
            let i = ((r.len() - 1) as f64 * p).round() as usize;
            format!("{}ms", r[i].as_millis())
        };
        let c = &self.chaos;
        format!(
            "soak[{label}]: sent={} applied={} delivered={} lost={} duplicated={} \
             out_of_order={} gaps={} reconnects={} recovery_p50={} recovery_p99={} \
             chaos=rst:{},fin:{},blackhole:{},latency:{},refuse:{},restart:{}{}",
            self.sent,
            self.applied,
            self.delivered,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.gaps,
            self.reconnects,
            pct(0.5),
            pct(0.99),
            c.rst,
            c.fin,
            c.blackhole,
            c.latency,
            c.refuse,
            c.restart,
            if self.publisher_names == 1 {
                String::new()
            } else {
                format!(" publisher_sessions={}", self.publisher_names)
            },
        )
    }
}

/// Disconnected → next Connected, for every outage a client went through.
fn recoveries(events: &[Seen]) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut lost: Option<Instant> = None;
    for s in events {
        match s.event {
            Event::Disconnected { .. } => lost = lost.or(Some(s.at)),
            Event::Connected { .. } => {
                if let Some(t) = lost.take() {
                    out.push(s.at.duration_since(t));
                }
            }
            _ => {}
        }
    }
    out
}

/// Counts, for `got` against `want` (distinct, in order): missing entries,
/// extra copies, and entries that came after a later one.
fn compare(want: &[String], got: &[String]) -> (usize, usize, usize) {
    use std::collections::HashMap;
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
            // Something nobody sent: count it against the order check.
            None => out_of_order += 1,
        }
    }
    let lost = seen.iter().filter(|&&n| n == 0).count();
    let duplicated = seen.iter().map(|&n| n.saturating_sub(1)).sum();
    (lost, duplicated, out_of_order)
}

async fn soak<R: Runtime>(
    make: impl Fn(String) -> Builder<R>,
    duration: Duration,
    seed: u64,
) -> Report {
    let h = Harness::start(ServerConfig {
        // Nothing may fall out of the replay buffer during a long outage.
        replay_capacity: 1 << 20,
        ..ServerConfig::default()
    });
    let config = |n: u64| {
        fast_config()
            .seed(seed.wrapping_add(n))
            .ping_interval(Some(ms(300)))
            .pong_timeout(ms(300))
            .connect_timeout(ms(1000))
            .max_attempts(0)
            .close_linger(DRAIN)
            .build()
            .unwrap()
    };
    let mut sub = Client::connect(make(h.proxied_url()).protocol(Wire).config(config(1)));
    let mut publisher = Client::connect(make(h.proxied_url()).protocol(Wire).config(config(2)));
    sub.connected("the subscriber's connection").await;
    sub.handle.subscribe("soak").await.unwrap();
    sub.next("the subscription", |e| {
        matches!(e, Event::Subscribed { .. })
    })
    .await;
    publisher.connected("the publisher's connection").await;

    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    {
        let (server, proxy, stop) = (h.server.clone(), h.proxy.clone(), Arc::clone(&stop));
        h.spawn(async move {
            let did = chaos(server, proxy, seed, stop).await;
            let _ = done_tx.send(did);
        });
    }

    let start = Instant::now();
    let mut sent = Vec::new();
    let mut last_seq = 0;
    while start.elapsed() < duration {
        let body = format!("m-{}", sent.len() + 1);
        last_seq = publisher
            .handle
            .publish("soak", Payload::text(body.clone()))
            .await
            .unwrap();
        sent.push(body);
        pause(&publisher.rt, PACE).await;
    }
    stop.store(true, Ordering::SeqCst);
    let chaos = within(&publisher.rt, DRAIN, "the chaos to stop", done_rx)
        .await
        .unwrap();

    // Settle: every publish acknowledged, the last one delivered.
    let last = sent.last().cloned().unwrap();
    publisher
        .events
        .next_within(
            &publisher.rt,
            DRAIN,
            "the last ack",
            |e| matches!(e, Event::Acked { seq } if *seq >= last_seq),
        )
        .await;
    sub.events
        .next_within(&sub.rt, DRAIN, "the last message", |e| {
            message_text(e) == Some(&last)
        })
        .await;

    let names: Vec<String> = publisher
        .events
        .all()
        .iter()
        .filter_map(|s| match &s.event {
            Event::Connected {
                session: Some(info),
                ..
            } => Some(info.name.to_string()),
            _ => None,
        })
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let applied: Vec<String> = names
        .iter()
        .flat_map(|n| h.server.applied(n))
        .map(|p| p.payload.as_text().unwrap_or_default().to_owned())
        .collect();
    let received: Vec<String> = sub
        .events
        .all()
        .iter()
        .filter_map(|s| message_text(&s.event).map(str::to_owned))
        .collect();
    let gaps = sub
        .events
        .matching(|e| matches!(e, Event::Gap { .. }))
        .len();

    let (lost_a, dup_a, order_a) = compare(&sent, &applied);
    let (lost_d, dup_d, order_d) = compare(&sent, &received);
    let mut all_recoveries = recoveries(&sub.events.all());
    all_recoveries.extend(recoveries(&publisher.events.all()));
    let reconnected = |c: &Client<R>| {
        c.events
            .matching(|e| {
                matches!(
                    e,
                    Event::Connected {
                        reconnect: true,
                        ..
                    }
                )
            })
            .len()
    };
    let report = Report {
        sent: sent.len(),
        applied: applied.len(),
        delivered: received.len(),
        lost: lost_a.max(lost_d),
        duplicated: dup_a + dup_d,
        out_of_order: order_a + order_d,
        gaps,
        reconnects: reconnected(&sub) + reconnected(&publisher),
        recoveries: all_recoveries,
        chaos,
        publisher_names: names.len(),
    };
    publisher.close().await;
    sub.close().await;
    report
}

/// The few libtest arguments that matter to a single-test binary: `--list`
/// (nextest discovers tests this way), `--ignored`, `--exact`, `--skip` and
/// name filters. Other options are accepted and ignored.
fn selected() -> bool {
    const NAME: &str = "soak";
    // libtest options that take a value, which is not a filter.
    const WITH_VALUE: [&str; 7] = [
        "--format",
        "--test-threads",
        "--skip",
        "--logfile",
        "--color",
        "--shuffle-seed",
        "-Z",
    ];
    let (mut list, mut ignored, mut exact) = (false, false, false);
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--ignored" => ignored = true,
            "--exact" => exact = true,
            "--skip" => skips.extend(args.next()),
            a if WITH_VALUE.contains(&a) => {
                args.next();
            }
            a if a.starts_with('-') => {}
            _ => filters.push(arg),
        }
    }
    let hit = |f: &String| {
        if exact {
            f == NAME
        } else {
            NAME.contains(f.as_str())
        }
    };
    let chosen =
        !ignored && (filters.is_empty() || filters.iter().any(hit)) && !skips.iter().any(hit);
    if list {
        if chosen {
            println!("{NAME}: test");
        }
        return false;
    }
    chosen
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !selected() {
        return;
    }
    let secs = env_u64("REDIAL_SOAK_SECS", DEFAULT_SECS);
    let seed = env_u64("REDIAL_SOAK_SEED", DEFAULT_SEED);
    let duration = Duration::from_secs(secs);
    println!(
        "soak: {secs} s of chaos per runtime, seed {seed:#x} (+1000 per runtime; \
         REDIAL_SOAK_SECS, REDIAL_SOAK_SEED)"
    );

    type Slot = Arc<Mutex<Option<Report>>>;
    let runs: Vec<(&str, std::thread::JoinHandle<()>, Slot)> = ["tokio", "async-std", "smol"]
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            // Each runtime gets its own (reproducible) chaos.
            let seed = seed.wrapping_add(i as u64 * 1000);
            let slot: Slot = Arc::default();
            let out = Arc::clone(&slot);
            let thread =
                std::thread::Builder::new()
                    .name(format!("soak-{label}"))
                    .spawn(move || {
                        let put = move |r| *out.lock().unwrap() = Some(r);
                        match label {
                            "tokio" => common::on_tokio(|make| async move {
                                put(soak(make, duration, seed).await)
                            }),
                            "async-std" => common::on_async_std(|make| async move {
                                put(soak(make, duration, seed).await)
                            }),
                            _ => common::on_smol(|make| async move {
                                put(soak(make, duration, seed).await)
                            }),
                        }
                    })
                    .unwrap();
            (label, thread, slot)
        })
        .collect();

    let mut failed = false;
    for (label, thread, slot) in runs {
        let outcome = thread.join();
        let report = slot.lock().unwrap().take();
        match (outcome, report) {
            (Ok(()), Some(r)) => {
                println!("{}", r.line(label));
                if !r.ok() {
                    println!("soak[{label}]: FAILED: messages lost, repeated or out of order");
                    failed = true;
                }
            }
            (Err(panic), _) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                println!("soak[{label}]: FAILED: {why}");
                failed = true;
            }
            (Ok(()), None) => {
                println!("soak[{label}]: FAILED: no report");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!("soak: ok");
}
