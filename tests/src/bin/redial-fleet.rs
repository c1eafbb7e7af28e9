//! `redial-fleet`: fleet scenarios on a virtual clock (see
//! `redial_tests::fleet`), for the default backoff policy or any policy the
//! config can express, over one seed or a range, with an SVG of the dial
//! waves, and one client against a restarting server over many seeds.
//! `redial-fleet --help` lists every option.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use redial_core::{Backoff, Config};
use redial_tests::fleet::{self, FleetConfig, FleetReport};

const USAGE: &str = "\
usage: redial-fleet [OPTIONS]

N clients all lose the server at t = 0. Without --outage-secs or --cap,
runs the standard scenarios:
  (restart) one client, server down 1, 1.5, 3 and 5 s, once per restart
         seed: the time from the server's return to the reconnect
  (a)    server down 5 s, then no admission limit
  (b)    server up, admits 1,000 new sessions/s, 503 + honest Retry-After
  (b')   the same without Retry-After
  (60s)  server down 60 s, then no limit
  (5min) server down 5 min, then no limit
  (10min) server down 10 min, then no limit (run for 15 minutes: who gives up?)
With --outage-secs and/or --cap, runs that one scenario (outage, then cap).
  --scenario TAG         only this standard scenario (repeatable):
                         restart, a, b, b', 60s, 5min or 10min

Fleet and server:
  --clients N            clients (default 10000)
  --outage-secs S        server down for S seconds after the loss
  --cap R                then admit at most R new sessions per second
  --retry-after on|off   503 over the cap carries an honest Retry-After (default on)
  --burst B              token bucket size without Retry-After (default R/10)
  --dial-latency-ms MS   each dial is answered MS ms after it starts (default 0)
  --minutes M            simulated minutes after the loss (default 10)
  --quick                one simulated minute (a CI smoke run)
  --seed N               one seed (default 1)
  --seeds A..B           every seed from A to B inclusive: each, mean and worst
  --restart-seeds N      (restart): seeds 1 to N, one client each (default
                         10000; 1000 with --quick)

Policy (repeatable; without any, the default policy runs and says so):
  --policy SPEC          default | sdk | grpc | peers (default, sdk, grpc, decorrelated)
                         (default is the library's Backoff::default(), {DEFAULT})
                         | full-jitter:FIRST,CAP            e.g. full-jitter:2s,30s
                         | proportional:INITIAL,MULT,JITTER,MAX  e.g. proportional:500ms,2,0.2,30s
                         | staged:FIRST,INITIAL,MULT,JITTER,MAX  e.g. staged:2s,6s,1.5,0.3,30s
                         | decorrelated:BASE,CAP           e.g. decorrelated:500ms,30s
                         durations: 500ms, 2s, 1.5s
  --max-attempts N       reconnect attempts before giving up (default: the config's)

Output:
  --json                 one JSON object per line per scenario and policy (no table)
  --svg PATH             dial histograms (default target/fleet.svg; first seed only)
  -h, --help             this text
";

struct Args {
    clients: usize,
    outage: Option<u64>,
    cap: Option<u32>,
    retry_after: bool,
    burst: Option<u32>,
    latency_ms: u64,
    minutes: Option<u64>,
    seeds: Vec<u64>,
    policies: Vec<(String, Backoff)>,
    max_attempts: Option<u32>,
    json: bool,
    svg: String,
    restart_seeds: Option<u64>,
    quick: bool,
    only: Vec<String>,
}

/// The help text, with the default policy spelled as a `--policy` spec.
fn usage() -> String {
    USAGE.replace("{DEFAULT}", &spec(&Backoff::default()))
}

/// `b` in the `--policy` syntax (what `policy` parses back).
fn spec(b: &Backoff) -> String {
    let d = |d: &Duration| format!("{}s", d.as_secs_f64());
    match b {
        Backoff::FullJitter { first_window, cap } => {
            format!("full-jitter:{},{}", d(first_window), d(cap))
        }
        Backoff::Proportional {
            initial,
            multiplier,
            jitter,
            max,
        } => format!(
            "proportional:{},{multiplier},{jitter},{}",
            d(initial),
            d(max)
        ),
        Backoff::Staged {
            first_window,
            initial,
            multiplier,
            jitter,
            max,
        } => format!(
            "staged:{},{},{multiplier},{jitter},{}",
            d(first_window),
            d(initial),
            d(max)
        ),
        Backoff::Decorrelated { base, cap } => format!("decorrelated:{},{}", d(base), d(cap)),
        other => format!("{other:?}"),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?} (say 500ms or 2s)");
    let (num, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(bad());
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !(v.is_finite() && v >= 0.0 && v * unit < 86_400.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * unit))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

fn sdk() -> Backoff {
    Backoff::proportional(
        Duration::from_millis(500),
        2.0,
        0.2,
        Duration::from_secs(30),
    )
}

fn policy(spec: &str) -> Result<Vec<(String, Backoff)>, String> {
    let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
    let p: Vec<&str> = if params.is_empty() {
        Vec::new()
    } else {
        params.split(',').collect()
    };
    let want = |n: usize| {
        if p.len() == n {
            Ok(())
        } else {
            Err(format!("{name} takes {n} parameters, got {}", p.len()))
        }
    };
    let one = |b: Backoff| Ok(vec![(spec.to_owned(), b)]);
    match name {
        "default" => {
            want(0)?;
            Ok(vec![(default_name(), Backoff::default())])
        }
        "sdk" => Ok(vec![("SDK: 500ms x2 +-20% cap 30s".to_owned(), sdk())]),
        "grpc" => Ok(vec![(
            "gRPC: 1s x1.6 +-20% cap 120s".to_owned(),
            Backoff::grpc(),
        )]),
        "peers" => Ok(vec![
            (default_name(), Backoff::default()),
            ("SDK: 500ms x2 +-20% cap 30s".to_owned(), sdk()),
            ("gRPC: 1s x1.6 +-20% cap 120s".to_owned(), Backoff::grpc()),
            (
                "decorrelated: 500ms..30s".to_owned(),
                Backoff::decorrelated(Duration::from_millis(500), Duration::from_secs(30)),
            ),
        ]),
        "full-jitter" => {
            want(2)?;
            one(Backoff::full_jitter(duration(p[0])?, duration(p[1])?))
        }
        "proportional" => {
            want(4)?;
            one(Backoff::proportional(
                duration(p[0])?,
                number(p[1])?,
                number(p[2])?,
                duration(p[3])?,
            ))
        }
        "staged" => {
            want(5)?;
            one(Backoff::staged(
                duration(p[0])?,
                duration(p[1])?,
                number(p[2])?,
                number(p[3])?,
                duration(p[4])?,
            ))
        }
        "decorrelated" => {
            want(2)?;
            one(Backoff::decorrelated(duration(p[0])?, duration(p[1])?))
        }
        other => Err(format!("unknown policy {other:?}")),
    }
}

fn default_name() -> String {
    format!("default ({})", spec(&Backoff::default()))
}

enum Parsed {
    Run(Box<Args>),
    Help,
}

fn parse_args() -> Result<Parsed, String> {
    let mut args = Args {
        clients: 10_000,
        outage: None,
        cap: None,
        retry_after: true,
        burst: None,
        latency_ms: 0,
        minutes: None,
        seeds: vec![1],
        policies: Vec::new(),
        max_attempts: None,
        json: false,
        svg: "target/fleet.svg".to_owned(),
        restart_seeds: None,
        quick: false,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => args.clients = number(&value()?)?,
            "--outage-secs" => args.outage = Some(number(&value()?)?),
            "--cap" => args.cap = Some(number(&value()?)?),
            "--retry-after" => {
                args.retry_after = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => return Err(format!("--retry-after takes on or off, not {v:?}")),
                }
            }
            "--burst" => args.burst = Some(number(&value()?)?),
            "--dial-latency-ms" => args.latency_ms = number(&value()?)?,
            "--minutes" => args.minutes = Some(number(&value()?)?),
            "--quick" => {
                args.minutes = Some(1);
                args.quick = true;
            }
            "--seed" => args.seeds = vec![number(&value()?)?],
            "--seeds" => {
                let v = value()?;
                let (a, b) = v
                    .split_once("..")
                    .ok_or(format!("--seeds takes A..B, not {v:?}"))?;
                let (a, b): (u64, u64) = (number(a)?, number(b)?);
                if a > b || b - a > 10_000 {
                    return Err(format!("bad seed range {v:?}"));
                }
                args.seeds = (a..=b).collect();
            }
            "--policy" => args.policies.extend(policy(&value()?)?),
            "--max-attempts" => args.max_attempts = Some(number(&value()?)?),
            "--json" => args.json = true,
            "--svg" => args.svg = value()?,
            "--restart-seeds" => {
                let n: u64 = number(&value()?)?;
                if !(1..=1_000_000).contains(&n) {
                    return Err(format!("--restart-seeds takes 1 to 1000000, not {n}"));
                }
                args.restart_seeds = Some(n);
            }
            "--scenario" => {
                let v = value()?;
                if !SCENARIOS.contains(&v.as_str()) {
                    return Err(format!("unknown scenario {v:?} (one of {SCENARIOS:?})"));
                }
                args.only.push(v);
            }
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other}\n\n{}", usage())),
        }
    }
    if args.policies.is_empty() {
        args.policies = policy("default")?;
    }
    Ok(Parsed::Run(Box::new(args)))
}

/// The standard scenarios' tags, for `--scenario`.
const SCENARIOS: [&str; 7] = ["restart", "a", "b", "b'", "60s", "5min", "10min"];

/// The outages of the (restart) case, in milliseconds.
const RESTART_DOWN_MS: [u64; 4] = [1000, 1500, 3000, 5000];

struct Scenario {
    tag: String,
    what: String,
    down: u64,
    cap: Option<u32>,
    retry_after: bool,
    /// Simulated minutes unless --minutes says otherwise.
    minutes: u64,
    /// The histogram's span in the SVG.
    span: Duration,
}

fn scenarios(a: &Args) -> Vec<Scenario> {
    let s = |tag: &str, what: &str, down, cap, retry_after, minutes, span| Scenario {
        tag: tag.to_owned(),
        what: what.to_owned(),
        down,
        cap,
        retry_after,
        minutes,
        span: Duration::from_secs(span),
    };
    if a.outage.is_some() || a.cap.is_some() {
        let down = a.outage.unwrap_or(0);
        let what = match a.cap {
            Some(r) => format!(
                "server down {down} s, then at most {r} new sessions/s, 503 {} Retry-After",
                if a.retry_after { "with" } else { "without" }
            ),
            None => format!("server down {down} s, then no admission limit"),
        };
        return vec![s(
            "custom",
            &what,
            down,
            a.cap,
            a.retry_after,
            10,
            down + 30,
        )];
    }
    let all = vec![
        s(
            "a",
            "server down 5 s, no admission limit (targets, worst of seeds 1-10: peak <= 560/100 ms, p99 <= 11.5 s, <= 3.0 dials/client)",
            5,
            None,
            true,
            10,
            30,
        ),
        s(
            "b",
            "server up, 1,000 new sessions/s, 503 + honest Retry-After (targets: <= 2.05 dials/client, p99 <= 12 s, <= 1,000 admitted in any second)",
            0,
            Some(1000),
            true,
            10,
            30,
        ),
        s(
            "b'",
            "server up, 1,000 new sessions/s, 503 without Retry-After (no target)",
            0,
            Some(1000),
            false,
            10,
            60,
        ),
        s(
            "60s",
            "server down 60 s, no limit (target: <= 150 dials/100 ms after the return)",
            60,
            None,
            true,
            10,
            120,
        ),
        s(
            "5min",
            "server down 5 min, no limit (target: <= 150 dials/100 ms after the return)",
            300,
            None,
            true,
            10,
            400,
        ),
        s(
            "10min",
            "server down 10 min, no limit, 15 simulated minutes (target: nobody gives up)",
            600,
            None,
            true,
            15,
            700,
        ),
    ];
    all.into_iter()
        .filter(|sc| a.only.is_empty() || a.only.contains(&sc.tag))
        .collect()
}

/// Whether the (restart) case runs: in the standard set, unless
/// `--scenario` leaves it out.
fn runs_restart(a: &Args) -> bool {
    a.outage.is_none()
        && a.cap.is_none()
        && (a.only.is_empty() || a.only.iter().any(|t| t == "restart"))
}

/// The (restart) case: one client per seed, for each outage and policy.
fn restart_case(a: &Args, configs: &[(String, Config)]) {
    let seeds = a
        .restart_seeds
        .unwrap_or(if a.quick { 1000 } else { 10_000 });
    if !a.json {
        println!(
            "\n(restart) one client, server down D s, seeds 1..{seeds}: time from the server's \
             return to the reconnect (targets: down 1.5 s p50 <= 1.5 s and p90 <= 3 s; down 3 s \
             p90 <= 4 s)"
        );
    }
    for (name, config) in configs {
        if !a.json {
            println!(" policy {name}");
            println!(
                "  {:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>13} {:>8}",
                "down s", "p50 s", "p90 s", "p99 s", "max s", "dials", "reconnected", "wall ms"
            );
        }
        for down_ms in RESTART_DOWN_MS {
            let down = Duration::from_millis(down_ms);
            let started = Instant::now();
            let r = fleet::restart(config, down, 1..=seeds);
            let wall = started.elapsed().as_secs_f64() * 1000.0;
            let p = |q: f64| r.percentile(q).map(|d| d.as_secs_f64());
            let back = r.back_after_return.iter().flatten().count();
            if a.json {
                println!(
                    "{{\"scenario\":\"restart\",\"policy\":{},\"clients\":1,\"seeds\":{seeds},\
                     \"down_s\":{},\"p50_after_return_s\":{},\"p90_after_return_s\":{},\
                     \"p99_after_return_s\":{},\"max_after_return_s\":{},\"dials_per_client\":{:.4},\
                     \"reconnected\":{back},\"wall_ms\":{wall:.1}}}",
                    json_str(name),
                    down.as_secs_f64(),
                    json_secs(p(50.0)),
                    json_secs(p(90.0)),
                    json_secs(p(99.0)),
                    json_secs(p(100.0)),
                    r.mean_dials(),
                );
            } else {
                println!(
                    "  {:<8} {:>7} {:>7} {:>7} {:>7} {:>7.2} {:>6}/{:<6} {:>8.0}",
                    down.as_secs_f64(),
                    secs(p(50.0)),
                    secs(p(90.0)),
                    secs(p(99.0)),
                    secs(p(100.0)),
                    r.mean_dials(),
                    back,
                    seeds,
                    wall,
                );
            }
        }
    }
}

/// The figures one run gives, as reported per seed and summarised.
#[derive(Clone, Copy)]
struct Figures {
    peak: f64,
    peak_after_return: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    dials: f64,
    max_dials: f64,
    gave_up: f64,
    reconnected: f64,
    max_admitted: f64,
    early: f64,
    wall_ms: f64,
}

impl Figures {
    fn of(r: &FleetReport, down: u64, wall: Duration) -> Self {
        let s = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        Figures {
            peak: f64::from(r.peak_dials_per_bucket()),
            peak_after_return: f64::from(r.peak_dials_per_bucket_from(Duration::from_secs(down))),
            p50: s(r.reconnect_percentile(50.0)),
            p99: s(r.reconnect_percentile(99.0)),
            max: s(r.reconnect_percentile(100.0)),
            dials: r.mean_dials_per_client(),
            max_dials: f64::from(r.dials_per_client.iter().max().copied().unwrap_or(0)),
            gave_up: r.gave_up as f64,
            reconnected: r.reconnected() as f64,
            max_admitted: f64::from(r.max_admitted_per_second),
            early: r.dials_before_retry_after as f64,
            wall_ms: wall.as_secs_f64() * 1000.0,
        }
    }

    /// Mean and worst (largest, but fewest reconnected) over seeds.
    fn summarise(all: &[Figures]) -> (Figures, Figures) {
        let n = all.len().max(1) as f64;
        let mean = |f: fn(&Figures) -> f64| all.iter().map(f).sum::<f64>() / n;
        let worst = |f: fn(&Figures) -> f64| all.iter().map(f).fold(f64::MIN, f64::max);
        let opt_mean = |f: fn(&Figures) -> Option<f64>| {
            let v: Option<Vec<f64>> = all.iter().map(f).collect();
            v.map(|v| v.iter().sum::<f64>() / n)
        };
        let opt_worst = |f: fn(&Figures) -> Option<f64>| {
            let v: Option<Vec<f64>> = all.iter().map(f).collect();
            v.map(|v| v.into_iter().fold(f64::MIN, f64::max))
        };
        let m = Figures {
            peak: mean(|f| f.peak),
            peak_after_return: mean(|f| f.peak_after_return),
            p50: opt_mean(|f| f.p50),
            p99: opt_mean(|f| f.p99),
            max: opt_mean(|f| f.max),
            dials: mean(|f| f.dials),
            max_dials: mean(|f| f.max_dials),
            gave_up: mean(|f| f.gave_up),
            reconnected: mean(|f| f.reconnected),
            max_admitted: mean(|f| f.max_admitted),
            early: mean(|f| f.early),
            wall_ms: mean(|f| f.wall_ms),
        };
        let w = Figures {
            peak: worst(|f| f.peak),
            peak_after_return: worst(|f| f.peak_after_return),
            p50: opt_worst(|f| f.p50),
            p99: opt_worst(|f| f.p99),
            max: opt_worst(|f| f.max),
            dials: worst(|f| f.dials),
            max_dials: worst(|f| f.max_dials),
            gave_up: worst(|f| f.gave_up),
            reconnected: all.iter().map(|f| f.reconnected).fold(f64::MAX, f64::min),
            max_admitted: worst(|f| f.max_admitted),
            early: worst(|f| f.early),
            wall_ms: worst(|f| f.wall_ms),
        };
        (m, w)
    }
}

fn secs(d: Option<f64>) -> String {
    d.map_or("never".to_owned(), |d| format!("{d:.2}"))
}

fn json_secs(d: Option<f64>) -> String {
    d.map_or("null".to_owned(), |d| format!("{d:.3}"))
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn table_header() {
    println!(
        "  {:<14} {:>6} {:>6} {:>7} {:>4} {:>7} {:>7} {:>7} {:>13} {:>6} {:>6} {:>8}",
        "seed",
        "peak",
        "peak>up",
        "dials/c",
        "max",
        "p50 s",
        "p99 s",
        "max s",
        "reconnected",
        "gaveup",
        "adm/s",
        "wall ms"
    );
}

fn table_row(label: &str, f: &Figures, clients: usize) {
    println!(
        "  {label:<14} {:>6.0} {:>7.0} {:>7.2} {:>4.0} {:>7} {:>7} {:>7} {:>6.0}/{:<6} {:>6.0} {:>6.0} {:>8.0}",
        f.peak,
        f.peak_after_return,
        f.dials,
        f.max_dials,
        secs(f.p50),
        secs(f.p99),
        secs(f.max),
        f.reconnected,
        clients,
        f.gave_up,
        f.max_admitted,
        f.wall_ms,
    );
}

fn json_line(sc: &Scenario, policy: &str, clients: usize, seed: &str, f: &Figures) -> String {
    format!(
        "{{\"scenario\":{},\"policy\":{},\"clients\":{clients},\"seed\":{},\"down_s\":{},\"cap\":{},\"retry_after\":{},\
         \"peak_per_100ms\":{:.1},\"peak_per_100ms_after_return\":{:.1},\"p50_s\":{},\"p99_s\":{},\"max_s\":{},\
         \"dials_per_client\":{:.4},\"max_dials\":{:.0},\"gave_up\":{:.1},\"reconnected\":{:.1},\
         \"max_admitted_per_s\":{:.1},\"dials_before_retry_after\":{:.0},\"wall_ms\":{:.1}}}",
        json_str(&sc.tag),
        json_str(policy),
        json_str(seed),
        sc.down,
        sc.cap.map_or("null".to_owned(), |c| c.to_string()),
        sc.retry_after,
        f.peak,
        f.peak_after_return,
        json_secs(f.p50),
        json_secs(f.p99),
        json_secs(f.max),
        f.dials,
        f.max_dials,
        f.gave_up,
        f.reconnected,
        f.max_admitted,
        f.early,
        f.wall_ms,
    )
}

fn fail(e: impl std::fmt::Display, code: i32) -> ! {
    eprintln!("{e}");
    std::process::exit(code)
}

fn main() {
    let args = match parse_args() {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            print!("{}", usage());
            return;
        }
        Err(e) => fail(e, 2),
    };
    let mut configs = Vec::new();
    for (name, b) in &args.policies {
        let mut builder = Config::builder().backoff(b.clone());
        if let Some(m) = args.max_attempts {
            builder = builder.max_attempts(m);
        }
        match builder.build() {
            Ok(c) => configs.push((name.clone(), c)),
            Err(e) => fail(format!("{name}: {e}"), 2),
        }
    }
    let n = args.clients;
    if !args.json {
        let policies: Vec<&str> = configs.iter().map(|(p, _)| p.as_str()).collect();
        println!(
            "redial-fleet: {n} clients, seeds {}..{}, dial latency {} ms; policy: {}{}",
            args.seeds.first().copied().unwrap_or(0),
            args.seeds.last().copied().unwrap_or(0),
            args.latency_ms,
            policies.join("; "),
            if args.policies.len() == 1 && args.policies[0].1 == Backoff::default() {
                " [no --policy given: the default policy]"
            } else {
                ""
            },
        );
        if let Some((_, c)) = configs.first() {
            println!("max attempts: {}", c.max_attempts());
        }
    }

    if runs_restart(&args) {
        restart_case(&args, &configs);
    }
    let mut panels: Vec<(String, FleetReport, Duration)> = Vec::new();
    let mut total_wall = Duration::ZERO;
    for sc in scenarios(&args) {
        let minutes = args.minutes.unwrap_or(sc.minutes);
        if sc.down >= minutes * 60 {
            if !args.json {
                println!(
                    "\n({}) skipped: the server is down for the whole run",
                    sc.tag
                );
            }
            continue;
        }
        if !args.json {
            println!("\n({}) {}", sc.tag, sc.what);
        }
        for (name, config) in &configs {
            if !args.json {
                println!(" policy {name}");
                table_header();
            }
            let mut all = Vec::new();
            for (k, &seed) in args.seeds.iter().enumerate() {
                let cfg = FleetConfig {
                    down_for: Duration::from_secs(sc.down),
                    admission_per_sec: sc.cap,
                    retry_after: sc.retry_after,
                    admission_burst: args.burst,
                    dial_latency: Duration::from_millis(args.latency_ms),
                    seed,
                    duration: Duration::from_secs(minutes * 60),
                    ..FleetConfig::new(n, config.clone())
                };
                let started = Instant::now();
                let r = fleet::run(&cfg);
                let wall = started.elapsed();
                total_wall += wall;
                let f = Figures::of(&r, sc.down, wall);
                if args.json {
                    println!("{}", json_line(&sc, name, n, &seed.to_string(), &f));
                } else {
                    table_row(&format!("{seed}"), &f, n);
                    if r.dials_before_retry_after > 0 || r.admitted_while_down > 0 {
                        println!(
                            "    !! {} dials before Retry-After, {} admitted while down",
                            r.dials_before_retry_after, r.admitted_while_down
                        );
                    }
                }
                all.push(f);
                if k == 0 {
                    panels.push((format!("({}) {name}", sc.tag), r, sc.span));
                }
            }
            if all.len() > 1 {
                let (mean, worst) = Figures::summarise(&all);
                if args.json {
                    println!("{}", json_line(&sc, name, n, "mean", &mean));
                    println!("{}", json_line(&sc, name, n, "worst", &worst));
                } else {
                    table_row("mean", &mean, n);
                    table_row("worst", &worst, n);
                }
            }
        }
    }
    if panels.is_empty() {
        // Only the (restart) case ran: no fleet, no histogram.
        return;
    }
    if !args.json {
        println!(
            "\npeak = most dials in one 100 ms bucket; peak>up = the same from the server's \
             return on; dials/c = mean dials per client after the loss (the successful one \
             included); max = most dials by one client; gaveup = sessions that ended; adm/s = \
             most admissions in any one-second window; wall = real time of that run; worst = \
             the largest over the seeds (fewest for reconnected). Total wall {:.2} s.",
            total_wall.as_secs_f64()
        );
    }

    let refs: Vec<(String, &FleetReport, Duration)> =
        panels.iter().map(|(t, r, s)| (t.clone(), r, *s)).collect();
    let svg = match fleet::svg_histograms(&refs, configs.len().max(1)) {
        Ok(svg) => svg,
        Err(e) => fail(format!("cannot draw the histograms: {e}"), 1),
    };
    if let Some(dir) = std::path::Path::new(&args.svg).parent() {
        if !dir.as_os_str().is_empty() {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    if let Err(e) = std::fs::write(&args.svg, svg) {
        fail(format!("cannot write {}: {e}", args.svg), 1);
    }
    if !args.json {
        println!("dial histograms: {}", args.svg);
    }
}
