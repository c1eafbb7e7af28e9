//! `redial-fleet`: the fleet scenarios on a virtual clock, for every
//! backoff policy the config can express, with an SVG of the dial waves.
//!
//! `redial-fleet [--clients N] [--seed N] [--svg PATH] [--minutes M] [--quick]`
//!
//! Scenarios (N clients all lose the server at t = 0):
//! - (a) server down 5 s, then no admission limit;
//! - (b) server up, admits 1,000 new sessions per second, 503 with an honest
//!   Retry-After over that;
//! - (b') the same without Retry-After.
//!
//! `--quick` simulates one minute instead of ten (a CI smoke run).

use std::time::{Duration, Instant};

use redial_core::{Backoff, Config};
use redial_tests::fleet::{self, FleetConfig, FleetReport};

struct Args {
    clients: usize,
    seed: u64,
    svg: String,
    minutes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        clients: 10_000,
        seed: 1,
        svg: "target/fleet.svg".to_owned(),
        minutes: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => args.clients = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("{e}"))?,
            "--svg" => args.svg = value()?,
            "--minutes" => args.minutes = value()?.parse().map_err(|e| format!("{e}"))?,
            "--quick" => args.minutes = 1,
            "-h" | "--help" => return Err(
                "usage: redial-fleet [--clients N] [--seed N] [--svg PATH] [--minutes M] [--quick]"
                    .to_owned(),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn policies() -> Result<Vec<(&'static str, Config)>, String> {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    [
        ("default: full jitter 2 s x2 cap 30 s", Backoff::default()),
        (
            "SDK: 500 ms x2 +-20 % cap 30 s",
            Backoff::proportional(ms(500), 2.0, 0.2, s(30)),
        ),
        ("gRPC: 1 s x1.6 +-20 % cap 120 s", Backoff::grpc()),
        (
            "decorrelated: 500 ms..30 s",
            Backoff::decorrelated(ms(500), s(30)),
        ),
    ]
    .into_iter()
    .map(|(name, b)| {
        Config::builder()
            .backoff(b)
            .build()
            .map(|c| (name, c))
            .map_err(|e| e.to_string())
    })
    .collect()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn row(policy: &str, r: &FleetReport, wall: Duration) {
    println!(
        "  {policy:<42} {:>6} {:>7.2} {:>4} {:>7} {:>7} {:>7} {:>6}/{:<6} {:>6} {:>8.0}",
        r.peak_dials_per_bucket(),
        r.mean_dials_per_client(),
        r.dials_per_client.iter().max().copied().unwrap_or(0),
        secs(r.reconnect_percentile(50.0)),
        secs(r.reconnect_percentile(99.0)),
        secs(r.reconnect_percentile(100.0)),
        r.reconnected(),
        r.clients,
        if r.max_admitted_per_second > 0 {
            r.max_admitted_per_second.to_string()
        } else {
            "-".to_owned()
        },
        wall.as_secs_f64() * 1000.0,
    );
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let policies = match policies() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let n = args.clients;
    let base = |config: Config| FleetConfig {
        seed: args.seed,
        duration: Duration::from_secs(args.minutes * 60),
        ..FleetConfig::new(n, config)
    };
    type Scenario = (&'static str, &'static str, fn(FleetConfig) -> FleetConfig);
    let scenarios: [Scenario; 3] = [
        (
            "a",
            "server down 5 s, no admission limit (targets: peak <= 600/100 ms, p99 <= 12 s, <= 2.5 dials/client)",
            |c| FleetConfig {
                down_for: Duration::from_secs(5),
                ..c
            },
        ),
        (
            "b",
            "server up, 1,000 new sessions/s, 503 + honest Retry-After (targets: p99 <= 12 s, floor N/1000 s; <= 2.0 dials/client)",
            |c| FleetConfig {
                admission_per_sec: Some(1000),
                retry_after: true,
                ..c
            },
        ),
        (
            "b'",
            "server up, 1,000 new sessions/s, 503 without Retry-After (no target)",
            |c| FleetConfig {
                admission_per_sec: Some(1000),
                retry_after: false,
                ..c
            },
        ),
    ];

    println!(
        "redial-fleet: {n} clients, {} simulated minute(s) after the loss, seed {}",
        args.minutes, args.seed
    );
    let mut panels: Vec<(String, FleetReport, Duration)> = Vec::new();
    let mut total_wall = Duration::ZERO;
    for (tag, what, make) in scenarios {
        println!("\n({tag}) {what}");
        let row_start = panels.len();
        let mut span = Duration::from_secs(10);
        println!(
            "  {:<42} {:>6} {:>7} {:>4} {:>7} {:>7} {:>7} {:>13} {:>6} {:>8}",
            "policy",
            "peak",
            "dials/c",
            "max",
            "p50 s",
            "p99 s",
            "max s",
            "reconnected",
            "adm/s",
            "wall ms"
        );
        for (name, config) in &policies {
            let cfg = make(base(config.clone()));
            let started = Instant::now();
            let r = fleet::run(&cfg);
            let wall = started.elapsed();
            total_wall += wall;
            row(name, &r, wall);
            if r.dials_before_retry_after > 0 || r.admitted_while_down > 0 {
                println!(
                    "    !! {} dials before Retry-After, {} admitted while down",
                    r.dials_before_retry_after, r.admitted_while_down
                );
            }
            if let Some(p99) = r.reconnect_percentile(99.0) {
                span = span.max(p99 + Duration::from_secs(2));
            }
            panels.push((format!("({tag}) {name}"), r, Duration::ZERO));
        }
        // One time axis per scenario, to the slowest policy's p99 and a bit.
        for p in &mut panels[row_start..] {
            p.2 = span.min(Duration::from_secs(120));
        }
    }
    println!(
        "\npeak = most dials in one 100 ms bucket; dials/c = mean dials per client after the loss \
         (the successful one included); adm/s = most admissions in one second since the server \
         came back (limited runs only); wall = real time of that run. Total wall {:.2} s.",
        total_wall.as_secs_f64()
    );

    let refs: Vec<(String, &FleetReport, Duration)> =
        panels.iter().map(|(t, r, s)| (t.clone(), r, *s)).collect();
    match fleet::svg_histograms(&refs, policies.len()) {
        Ok(svg) => {
            if let Some(dir) = std::path::Path::new(&args.svg).parent() {
                if !dir.as_os_str().is_empty() {
                    let _ = std::fs::create_dir_all(dir);
                }
            }
            match std::fs::write(&args.svg, svg) {
                Ok(()) => println!("dial histograms: {}", args.svg),
                Err(e) => {
                    eprintln!("cannot write {}: {e}", args.svg);
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("cannot draw the histograms: {e}");
            std::process::exit(1);
        }
    }
}
