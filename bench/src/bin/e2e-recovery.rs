//! Recovery latency end to end, with redial-tokio's default policy.
//!
//! Clients (Raw protocol, default `Config`) connect through the
//! fault-injecting proxy of `redial-tests` to a counting tokio-tungstenite
//! server; everything on 127.0.0.1.
//!
//! 1. **Cuts.** `--clients` clients (default 40) are cut together with
//!    `cut_all(Cut::Reset)`, `--rounds` times (default 5): 200 samples. A
//!    sample is the time from the cut to that client's next
//!    `Event::Connected`. Before every cut each client has been connected
//!    for at least 5.5 s, past the default `stable_after` (5 s), so every
//!    cut starts a fresh outage (the first backoff window), as a single cut
//!    of a long-lived connection would. The scheduled delay of each
//!    reconnect is recorded too, so the overhead beyond the policy's own
//!    wait (detection + dial + handshake) is reported separately.
//! 2. **Restart.** The same, but the server is down `--down-ms` (default
//!    1500) from the cut: the proxy resets every new connection on arrival
//!    until then, as a load balancer whose server restarts does, so every
//!    dial before the return fails. A sample is the time from the server's
//!    return to that client's next `Event::Connected`; the dials each client
//!    made are counted too.
//! 3. **Half-open.** `--halfopen` clients (default 6) connect staggered over
//!    one ping interval, then the proxy is blackholed; a sample is the time
//!    from the blackhole to `Event::Disconnected` with reason
//!    "pong timeout". Staggering spreads the clients' ping phases, so the
//!    samples cover the range of the bound (ping interval + pong timeout,
//!    25 s).
//!
//! `--quick` (CI smoke): 5 clients, 1 cut, 1 restart; the half-open part
//! with a 1 s ping interval and 1 s pong timeout instead of the defaults.
//! About 20 s.
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-recovery [-- --quick] [--clients N] [--rounds N] [--down-ms MS] [--halfopen N] [--skip-cuts] [--skip-restart] [--skip-halfopen]
//! ```
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use redial_bench::{load_average, percentile, secs, Args, CountingServer, Mode};
use redial_core::{Config, Event};
use redial_tests::proxy::{Cut, Proxy};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a client saw, with when the bench heard of it.
#[derive(Debug)]
enum Seen {
    Connected,
    Disconnected { reason: String },
    Scheduled { delay: Duration },
}

/// Starts one client whose events are reported as `(id, seen, at)`.
fn start_client(
    id: usize,
    url: &str,
    config: Config,
    report: mpsc::UnboundedSender<(usize, Seen, Instant)>,
) -> Result<redial_tokio::Handle, BoxError> {
    let (handle, mut events) = redial_tokio::builder(url).config(config).connect()?;
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let at = Instant::now();
            let seen = match event {
                Event::Connected { .. } => Seen::Connected,
                Event::Disconnected { reason, .. } => Seen::Disconnected { reason },
                Event::ReconnectScheduled { delay, .. } => Seen::Scheduled { delay },
                _ => continue,
            };
            if report.send((id, seen, at)).is_err() {
                break;
            }
        }
    });
    Ok(handle)
}

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let clients = args.number("--clients", if quick { 5 } else { 40 }) as usize;
    let rounds = args.number("--rounds", if quick { 1 } else { 5 }) as usize;
    let halfopen = args.number("--halfopen", if quick { 3 } else { 6 }) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("e2e-recovery: load average {}", load_average());
        let server = CountingServer::spawn(Mode::Sink)?;
        if !args.flag("--skip-cuts") {
            cuts(server.addr(), clients, rounds, Duration::ZERO).await?;
        }
        if !args.flag("--skip-restart") {
            let down = Duration::from_millis(args.number("--down-ms", 1500).max(1));
            cuts(server.addr(), clients, rounds, down).await?;
        }
        if !args.flag("--skip-halfopen") {
            half_open(server.addr(), halfopen, quick).await?;
        }
        println!("load average after: {}", load_average());
        Ok(())
    })
}

/// Cuts every client `rounds` times; with `down` above zero the server
/// stays down that long from each cut (new connections reset on arrival).
async fn cuts(
    server: std::net::SocketAddr,
    clients: usize,
    rounds: usize,
    down: Duration,
) -> Result<(), BoxError> {
    let proxy = Proxy::start(server).await?;
    let url = format!("ws://{}/", proxy.addr());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for id in 0..clients {
        handles.push(start_client(id, &url, Config::default(), tx.clone())?);
    }
    let mut connected = 0;
    while connected < clients {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some((_, Seen::Connected, _))) => connected += 1,
            Ok(Some(_)) => {}
            _ => return Err("clients did not connect".into()),
        }
    }
    let what = if down.is_zero() {
        "cuts".to_owned()
    } else {
        format!("restart (server down {} from each cut)", secs(down))
    };
    println!(
        "{what}: {clients} clients x {rounds} rounds through the proxy, default Config \
         ({:?}; stable_after 5 s)",
        redial_core::Backoff::default()
    );
    let stable = Duration::from_millis(5_500);
    let mut latency = Vec::new();
    let mut after_return = Vec::new();
    let mut dials = Vec::new();
    let mut overhead = Vec::new();
    let mut detect = Vec::new();
    let mut last_connect = Instant::now();
    for round in 0..rounds {
        tokio::time::sleep_until((last_connect + stable).into()).await;
        // Nothing from before the cut may count.
        while rx.try_recv().is_ok() {}
        if !down.is_zero() {
            // First, so that no reconnect slips in between the two.
            proxy.refuse_new(Some(down));
        }
        let cut_at = Instant::now();
        let return_at = cut_at + down;
        let cut = proxy.cut_all(Cut::Reset);
        let mut delay = vec![None; clients];
        let mut scheduled = vec![0u32; clients];
        let mut back = 0;
        while back < clients {
            let Ok(Some((id, seen, at))) =
                tokio::time::timeout(Duration::from_secs(60), rx.recv()).await
            else {
                return Err(format!("round {round}: only {back} of {clients} reconnected").into());
            };
            match seen {
                Seen::Disconnected { .. } => detect.push(at - cut_at),
                Seen::Scheduled { delay: d } => {
                    delay[id] = Some(d);
                    scheduled[id] += 1;
                }
                Seen::Connected => {
                    back += 1;
                    let l = at - cut_at;
                    latency.push(l);
                    after_return.push(at.saturating_duration_since(return_at));
                    dials.push(scheduled[id]);
                    // A restart's last wait started after earlier failed
                    // dials: the overhead is the single drop's figure.
                    if let (Some(d), true) = (delay[id].take(), down.is_zero()) {
                        overhead.push(l.saturating_sub(d));
                    }
                    last_connect = at;
                }
            }
        }
        println!(
            "  round {}: cut {cut} connections, all {clients} back after {}",
            round + 1,
            secs(last_connect - cut_at)
        );
    }
    latency.sort();
    after_return.sort();
    overhead.sort();
    detect.sort();
    let row = |name: &str, v: &[Duration]| {
        println!(
            "  {name:<34} n={:<4} p50 {}  p90 {}  p99 {}  max {}",
            v.len(),
            secs(percentile(v, 0.5)),
            secs(percentile(v, 0.9)),
            secs(percentile(v, 0.99)),
            secs(percentile(v, 1.0))
        );
    };
    row("cut -> Connected", &latency);
    row("cut -> Disconnected", &detect);
    if down.is_zero() {
        row("Connected - scheduled delay - cut", &overhead);
        println!("  targets: p50 <= 1.200 s, p99 <= 2.200 s");
    } else {
        row("server's return -> Connected", &after_return);
        let total: u32 = dials.iter().sum();
        println!(
            "  dials per client: mean {:.2}, max {}",
            f64::from(total) / dials.len().max(1) as f64,
            dials.iter().max().copied().unwrap_or(0)
        );
        println!("  targets (down 1.5 s): return -> Connected p50 <= 1.500 s, p90 <= 3.000 s");
    }
    for h in &handles {
        h.close().await;
    }
    Ok(())
}

async fn half_open(
    server: std::net::SocketAddr,
    clients: usize,
    quick: bool,
) -> Result<(), BoxError> {
    let (ping, pong) = if quick {
        (Duration::from_secs(1), Duration::from_secs(1))
    } else {
        let d = Config::default();
        (
            d.ping_interval().unwrap_or(Duration::from_secs(15)),
            d.pong_timeout(),
        )
    };
    let config = if quick {
        Config::builder()
            .ping_interval(Some(ping))
            .pong_timeout(pong)
            .build()?
    } else {
        Config::default()
    };
    let bound = ping + pong;
    println!(
        "half-open: {clients} clients staggered over {}, then blackhole; ping {}, pong timeout {}{}",
        secs(ping),
        secs(ping),
        secs(pong),
        if quick { " (quick: not the defaults)" } else { " (defaults)" }
    );
    let proxy = Proxy::start(server).await?;
    let url = format!("ws://{}/", proxy.addr());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    let step = ping / clients.max(1) as u32;
    for id in 0..clients {
        handles.push(start_client(id, &url, config.clone(), tx.clone())?);
        tokio::time::sleep(step).await;
    }
    let mut connected = 0;
    while connected < clients {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some((_, Seen::Connected, _))) => connected += 1,
            Ok(Some(_)) => {}
            _ => return Err("clients did not connect".into()),
        }
    }
    let hole_at = Instant::now();
    proxy.blackhole(true);
    let mut found = vec![None; clients];
    let mut other = Vec::new();
    while found.iter().any(Option::is_none) {
        let Ok(Some((id, seen, at))) =
            tokio::time::timeout(bound + Duration::from_secs(10), rx.recv()).await
        else {
            break;
        };
        if let Seen::Disconnected { reason } = seen {
            if reason == "pong timeout" {
                found[id].get_or_insert(at - hole_at);
            } else {
                other.push(reason);
            }
        }
    }
    let mut samples: Vec<Duration> = found.iter().flatten().copied().collect();
    samples.sort();
    let listed: Vec<String> = samples
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    println!(
        "  blackhole -> Disconnected(\"pong timeout\"): n={} of {clients}, min {}  median {}  max {}  (bound {})",
        samples.len(),
        secs(percentile(&samples, 0.0)),
        secs(percentile(&samples, 0.5)),
        secs(percentile(&samples, 1.0)),
        secs(bound)
    );
    println!("  samples (s): {}", listed.join(" "));
    if !other.is_empty() {
        println!("  other disconnect reasons: {other:?}");
    }
    proxy.blackhole(false);
    drop(handles);
    Ok(())
}
