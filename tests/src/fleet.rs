//! A fleet simulator: thousands of real [`Session`]s against a simulated
//! server on a virtual clock, to see what a reconnect policy does to a
//! server that has just lost (or is rationing) all its clients.
//!
//! Nothing here sleeps or reads a clock. Every input a session gets is
//! taken from one event queue ordered by virtual instant, so a run of
//! 10,000 clients over ten simulated minutes takes a fraction of a second
//! in a release build, and the same [`FleetConfig`] always gives the same
//! [`FleetReport`].
//!
//! # The model
//! - At `t = 0` every client is connected (Raw protocol) and all of them lose
//!   the server at once: the transport closes without a close frame.
//! - For [`FleetConfig::down_for`] the server is down: every dial fails with
//!   [`DialFailure::Io`].
//! - After that it admits every dial, or, with
//!   [`FleetConfig::admission_per_sec`] = `Some(R)`, at most `R` new
//!   sessions per second, paced one every `1/R` second. A dial
//!   over the limit gets HTTP 503, with an honest `Retry-After` when
//!   [`FleetConfig::retry_after`] is set and without one otherwise.
//! - Dials complete instantly (no network latency); keepalive pings are
//!   answered at once; token fetches (if the config asks for them) succeed
//!   at once. Connected clients stay connected.
//!
//! # The admission limit and what "honest Retry-After" means here
//! The server paces admissions: one per `1/R` second, no bursts (the
//! generic cell rate algorithm with no tolerance). Every admission takes
//! the next free slot on that schedule.
//!
//! A dial that finds no slot free *now* is refused with 503. With
//! `Retry-After`, the refusal books the next free slot for this client (so
//! clients already turned away keep their places: the bookings are a
//! queue) and answers with the whole seconds until that slot, rounded *up*
//! because the header carries whole seconds. That is what honest means:
//! come back after the time given and there is a place for you, already
//! paid for; no client is told a time at which it would be refused again,
//! and no client is told to wait longer than its place in the queue needs
//! (bar the rounding). A booked client is admitted whenever it comes back
//! at or after its slot, even late (the session adds up to 10 % of jitter to
//! every Retry-After), so a wall-clock second can see somewhat more than `R`
//! admissions when late clients land together: [`FleetReport::max_admitted_per_second`]
//! shows how many. A client that comes back *before* its slot is refused
//! again with the time still left, and counted in
//! [`FleetReport::dials_before_retry_after`]: with a correct session that
//! count is zero.
//!
//! Without `Retry-After` the server books nothing: a dial is admitted if a
//! slot is free now and refused otherwise, so at most `R` are admitted in
//! any second, and the clients fall back on their backoff ladder.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

use redial_core::{Action, AuthToken, Config, DialFailure, Event, Frame, Raw, Session};

const SECOND: u64 = 1_000_000_000;

/// One fleet run: who, against what server, with which policy.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How many clients.
    pub clients: usize,
    /// How long the server stays down after everyone lost it.
    pub down_for: Duration,
    /// Most new sessions the server admits per second once up (`None`: no
    /// limit).
    pub admission_per_sec: Option<u32>,
    /// Whether a 503 over the admission limit carries an honest
    /// `Retry-After` (see the module docs).
    pub retry_after: bool,
    /// Every client's configuration; each gets its own seed derived from
    /// [`FleetConfig::seed`] and its index.
    pub config: Config,
    /// The fleet's seed.
    pub seed: u64,
    /// Simulated time after the loss (default 10 minutes).
    pub duration: Duration,
    /// Width of the dial histogram's buckets (default 100 ms).
    pub bucket: Duration,
}

impl FleetConfig {
    /// `clients` clients with `config`, a server that comes straight back
    /// with no admission limit, seed 1, ten simulated minutes, 100 ms
    /// buckets.
    pub fn new(clients: usize, config: Config) -> Self {
        FleetConfig {
            clients,
            down_for: Duration::ZERO,
            admission_per_sec: None,
            retry_after: true,
            config,
            seed: 1,
            duration: Duration::from_secs(600),
            bucket: Duration::from_millis(100),
        }
    }
}

/// What happened in one fleet run. Times are measured from the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetReport {
    /// How many clients.
    pub clients: usize,
    /// Every dial made after the loss (failed or not).
    pub dials: u64,
    /// Dials per client, by client index.
    pub dials_per_client: Vec<u32>,
    /// Dials per bucket of [`FleetReport::bucket`], from the loss on.
    pub dials_per_bucket: Vec<u32>,
    /// The bucket width.
    pub bucket: Duration,
    /// When each client was connected again (`None`: not within the run).
    pub reconnected_at: Vec<Option<Duration>>,
    /// Clients whose session ended (attempts exhausted or a terminal answer).
    pub gave_up: usize,
    /// Dials the server admitted while it was down. Zero by construction;
    /// reported so tests can check the simulator itself.
    pub admitted_while_down: u64,
    /// 503 answers given (with or without `Retry-After`).
    pub rejected_503: u64,
    /// Dials that came before the `Retry-After` the same client had been
    /// given (should be zero).
    pub dials_before_retry_after: u64,
    /// The most admissions in any one second counted from when the server
    /// came back (0 without an admission limit). Without `Retry-After` this
    /// is at most the limit; booked clients arriving late can push it above.
    pub max_admitted_per_second: u32,
    /// Inputs fed to sessions (timeouts, dial results, pongs).
    pub steps: u64,
}

impl FleetReport {
    /// The busiest bucket's dial count.
    pub fn peak_dials_per_bucket(&self) -> u32 {
        self.dials_per_bucket.iter().copied().max().unwrap_or(0)
    }

    /// Mean dials per client.
    pub fn mean_dials_per_client(&self) -> f64 {
        if self.clients == 0 {
            return 0.0;
        }
        self.dials as f64 / self.clients as f64
    }

    /// Clients connected again within the run.
    pub fn reconnected(&self) -> usize {
        self.reconnected_at.iter().flatten().count()
    }

    /// The `p`-th percentile (0..=100, nearest rank) of the time to
    /// reconnect over all clients; a client that never reconnected counts
    /// as slower than any that did, so this is `None` when the rank lands on
    /// one of them.
    pub fn reconnect_percentile(&self, p: f64) -> Option<Duration> {
        let n = self.reconnected_at.len();
        if n == 0 {
            return None;
        }
        let mut times: Vec<Option<Duration>> = self.reconnected_at.clone();
        // `None` sorts first for Option; put the stragglers last instead.
        times.sort_by_key(|t| (t.is_none(), *t));
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        times[rank.min(n) - 1]
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => "never".to_owned(),
        };
        write!(
            f,
            "peak {} dials/{} ms, {:.2} dials/client (max {}), reconnect p50 {} p99 {} max {}, {}/{} reconnected",
            self.peak_dials_per_bucket(),
            self.bucket.as_millis(),
            self.mean_dials_per_client(),
            self.dials_per_client.iter().max().copied().unwrap_or(0),
            ms(self.reconnect_percentile(50.0)),
            ms(self.reconnect_percentile(99.0)),
            ms(self.reconnect_percentile(100.0)),
            self.reconnected(),
            self.clients,
        )
    }
}

/// A client-specific seed: SplitMix64 of the fleet seed and the index.
fn client_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The simulated server's answer to one dial.
enum Answer {
    Admit,
    Refuse(DialFailure),
}

/// The server: down until `up_at`, then pacing admissions (see the module
/// docs).
struct Server {
    up_at: u64,
    /// Nanoseconds between two admission slots (`None`: no limit).
    spacing: Option<u64>,
    retry_after: bool,
    /// The next free admission slot (GCRA's theoretical arrival time).
    next_slot: u64,
    /// Admissions by the second (since `up_at`) they happened in.
    admitted: Vec<u32>,
    /// Per client: its booked slot, if any.
    booking: Vec<Option<u64>>,
    /// Per client: the earliest instant the last Retry-After allows.
    not_before: Vec<Option<u64>>,
    rejected_503: u64,
    early: u64,
}

impl Server {
    fn new(cfg: &FleetConfig) -> Self {
        let up_at = nanos(cfg.down_for);
        Server {
            up_at,
            // Rounded up, so that no second holds more than R slots.
            spacing: cfg
                .admission_per_sec
                .map(|r| SECOND.div_ceil(u64::from(r.max(1)))),
            retry_after: cfg.retry_after,
            next_slot: up_at,
            admitted: Vec::new(),
            booking: vec![None; cfg.clients],
            not_before: vec![None; cfg.clients],
            rejected_503: 0,
            early: 0,
        }
    }

    fn admit(&mut self, t: u64) -> Answer {
        let second = usize::try_from((t - self.up_at) / SECOND).unwrap_or(usize::MAX);
        if self.admitted.len() <= second {
            self.admitted.resize(second + 1, 0);
        }
        self.admitted[second] += 1;
        Answer::Admit
    }

    fn dial(&mut self, client: usize, t: u64) -> Answer {
        if self.not_before[client].is_some_and(|nb| t < nb) {
            self.early += 1;
        }
        if t < self.up_at {
            return Answer::Refuse(DialFailure::Io("connection refused".to_owned()));
        }
        let Some(spacing) = self.spacing else {
            return Answer::Admit;
        };
        if let Some(slot) = self.booking[client] {
            if t >= slot {
                self.booking[client] = None;
                return self.admit(t);
            }
            return self.refuse_until(client, t, slot);
        }
        let slot = self.next_slot.max(t);
        if slot <= t {
            self.next_slot = slot + spacing;
            return self.admit(t);
        }
        if !self.retry_after {
            self.rejected_503 += 1;
            return Answer::Refuse(DialFailure::http(503, None));
        }
        // Book the next free slot: the tail of the queue.
        self.next_slot = slot + spacing;
        self.booking[client] = Some(slot);
        self.refuse_until(client, t, slot)
    }

    /// 503 with the whole seconds until `at`, rounded up.
    fn refuse_until(&mut self, client: usize, t: u64, at: u64) -> Answer {
        let secs = (at - t).div_ceil(SECOND);
        self.not_before[client] = Some(t + secs * SECOND);
        self.rejected_503 += 1;
        Answer::Refuse(DialFailure::http(503, Some(Duration::from_secs(secs))))
    }
}

struct Client {
    session: Session,
    /// The deadline queued for this client (older queue entries are stale).
    scheduled: Option<u64>,
    dials: u32,
    reconnected_at: Option<u64>,
    gave_up: bool,
}

/// Runs one fleet simulation.
pub fn run(cfg: &FleetConfig) -> FleetReport {
    let origin = Instant::now();
    let at = |t: u64| origin + Duration::from_nanos(t);
    let since = |i: Instant| nanos(i.saturating_duration_since(origin));
    let end = nanos(cfg.duration);
    let bucket = nanos(cfg.bucket).max(1);

    let mut server = Server::new(cfg);
    let mut report = FleetReport {
        clients: cfg.clients,
        dials: 0,
        dials_per_client: Vec::new(),
        dials_per_bucket: vec![0; usize::try_from(end / bucket + 1).unwrap_or(0)],
        bucket: Duration::from_nanos(bucket),
        reconnected_at: Vec::new(),
        gave_up: 0,
        admitted_while_down: 0,
        rejected_503: 0,
        dials_before_retry_after: 0,
        max_admitted_per_second: 0,
        steps: 0,
    };

    // Everyone connected at t = 0, then the transport goes without a word.
    let mut clients: Vec<Client> = (0..cfg.clients)
        .map(|i| {
            let config = cfg.config.clone().with_seed(client_seed(cfg.seed, i));
            let mut session = Session::new(config, Raw::new());
            let t0 = at(0);
            session.handle_connect(t0);
            while let Some(a) = session.poll_action() {
                match a {
                    Action::FetchToken => session.handle_token(t0, AuthToken::new("fleet")),
                    Action::Dial { .. } => session.handle_dial_ok(t0),
                    _ => {}
                }
            }
            session.handle_transport_closed(t0, None);
            while session.poll_event().is_some() {}
            Client {
                session,
                scheduled: None,
                dials: 0,
                reconnected_at: None,
                gave_up: false,
            }
        })
        .collect();

    let mut queue: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::with_capacity(cfg.clients);
    for (i, c) in clients.iter_mut().enumerate() {
        drive(i, c, 0, &mut server, &mut report, &at);
        reschedule(i, c, &mut queue, &since);
    }

    while let Some(Reverse((t, i))) = queue.pop() {
        if t > end {
            break;
        }
        let c = &mut clients[i];
        if c.scheduled != Some(t) {
            continue; // superseded
        }
        c.scheduled = None;
        c.session.handle_timeout(at(t));
        report.steps += 1;
        drive(i, c, t, &mut server, &mut report, &at);
        reschedule(i, c, &mut queue, &since);
    }

    report.dials_per_client = clients.iter().map(|c| c.dials).collect();
    report.reconnected_at = clients
        .iter()
        .map(|c| c.reconnected_at.map(Duration::from_nanos))
        .collect();
    report.gave_up = clients.iter().filter(|c| c.gave_up).count();
    report.rejected_503 = server.rejected_503;
    report.dials_before_retry_after = server.early;
    report.max_admitted_per_second = server.admitted.iter().copied().max().unwrap_or(0);
    report
}

/// Carries out a client's actions (dials go to the server) and reads its
/// events, until it has nothing more to say.
fn drive(
    i: usize,
    c: &mut Client,
    t: u64,
    server: &mut Server,
    report: &mut FleetReport,
    at: &impl Fn(u64) -> Instant,
) {
    let now = at(t);
    let s = &mut c.session;
    while let Some(action) = s.poll_action() {
        match action {
            Action::Dial { .. } => {
                c.dials += 1;
                report.dials += 1;
                if let Some(b) = report
                    .dials_per_bucket
                    .get_mut(usize::try_from(t / nanos(report.bucket)).unwrap_or(usize::MAX))
                {
                    *b += 1;
                }
                report.steps += 1;
                match server.dial(i, t) {
                    Answer::Admit => {
                        if t < server.up_at {
                            report.admitted_while_down += 1;
                        }
                        s.handle_dial_ok(now)
                    }
                    Answer::Refuse(f) => s.handle_dial_failed(now, f),
                }
            }
            Action::Send(Frame::Ping(p)) => {
                report.steps += 1;
                s.handle_frame(now, Frame::Pong(p));
            }
            Action::FetchToken => {
                report.steps += 1;
                s.handle_token(now, AuthToken::new("fleet"));
            }
            _ => {}
        }
    }
    while let Some(e) = s.poll_event() {
        match e {
            Event::Connected { .. } if c.reconnected_at.is_none() => c.reconnected_at = Some(t),
            Event::Closed { .. } => c.gave_up = true,
            _ => {}
        }
    }
}

fn reschedule(
    i: usize,
    c: &mut Client,
    queue: &mut BinaryHeap<Reverse<(u64, usize)>>,
    since: &impl Fn(Instant) -> u64,
) {
    let next = c.session.poll_timeout().map(since);
    if next != c.scheduled {
        c.scheduled = next;
        if let Some(t) = next {
            queue.push(Reverse((t, i)));
        }
    }
}

/// Draws the dial histograms of several runs as one SVG: one panel per
/// `(title, report, span)`, `columns` panels per row, each over the first
/// `span` after the loss. Text is emitted as SVG `<text>`; no font files
/// are read.
pub fn svg_histograms(
    panels: &[(String, &FleetReport, Duration)],
    columns: usize,
) -> Result<String, String> {
    use plotters::prelude::*;

    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let (w, h) = (420 * columns as u32, 260 * rows as u32);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows, columns));
        for ((title, report, span), area) in panels.iter().zip(areas.iter()) {
            let bucket_s = report.bucket.as_secs_f64();
            let n = ((span.as_secs_f64() / bucket_s).ceil() as usize)
                .min(report.dials_per_bucket.len());
            let shown = &report.dials_per_bucket[..n];
            let top = shown.iter().copied().max().unwrap_or(0).max(1);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{title} (peak {})", report.peak_dials_per_bucket()),
                    ("sans-serif", 13),
                )
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..span.as_secs_f64(), 0u32..top + top / 10 + 1)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc("seconds after the loss")
                .y_desc(format!("dials / {} ms", report.bucket.as_millis()))
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(
                    shown
                        .iter()
                        .enumerate()
                        .filter(|(_, &d)| d > 0)
                        .map(|(i, &d)| {
                            let x0 = i as f64 * bucket_s;
                            Rectangle::new([(x0, 0), (x0 + bucket_s, d)], BLUE.mix(0.7).filled())
                        }),
                )
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redial_core::Backoff;

    fn fleet(config: Config) -> FleetConfig {
        FleetConfig {
            duration: Duration::from_secs(120),
            ..FleetConfig::new(200, config)
        }
    }

    fn policies() -> Vec<Config> {
        let s = Duration::from_secs;
        [
            Backoff::default(),
            Backoff::proportional(Duration::from_millis(500), 2.0, 0.2, s(30)),
            Backoff::grpc(),
            Backoff::decorrelated(Duration::from_millis(500), s(30)),
        ]
        .into_iter()
        .map(|b| Config::builder().backoff(b).build().unwrap())
        .collect()
    }

    fn structural(r: &FleetReport, cfg: &FleetConfig) {
        assert_eq!(r.reconnected(), cfg.clients, "every client reconnects");
        assert_eq!(r.gave_up, 0);
        let per_client: u64 = r.dials_per_client.iter().map(|&d| u64::from(d)).sum();
        let per_bucket: u64 = r.dials_per_bucket.iter().map(|&d| u64::from(d)).sum();
        assert_eq!(per_client, r.dials);
        assert_eq!(per_bucket, r.dials);
        assert!(r.dials_per_client.iter().all(|&d| d >= 1));
        assert_eq!(r.admitted_while_down, 0);
        for t in r.reconnected_at.iter().flatten() {
            assert!(
                *t >= cfg.down_for,
                "nobody is admitted while the server is down"
            );
        }
        assert_eq!(r.dials_before_retry_after, 0, "Retry-After is honoured");
        if let (Some(limit), false) = (cfg.admission_per_sec, cfg.retry_after) {
            assert!(r.max_admitted_per_second <= limit);
        }
    }

    #[test]
    fn outage_every_policy_reconnects_everyone() {
        for config in policies() {
            let cfg = FleetConfig {
                down_for: Duration::from_secs(5),
                ..fleet(config)
            };
            let r = run(&cfg);
            structural(&r, &cfg);
            assert!(
                r.dials > cfg.clients as u64,
                "the outage costs failed dials"
            );
        }
    }

    #[test]
    fn admission_limit_with_retry_after_books_and_is_honoured() {
        for config in policies() {
            let cfg = FleetConfig {
                admission_per_sec: Some(20),
                ..fleet(config)
            };
            let r = run(&cfg);
            structural(&r, &cfg);
            assert!(r.rejected_503 > 0, "the limit turned some dials away");
            // One refusal with a booking, then admission: at most two dials.
            assert!(r.dials_per_client.iter().all(|&d| d <= 2));
        }
    }

    #[test]
    fn admission_limit_without_retry_after_falls_back_on_the_ladder() {
        for config in policies() {
            let cfg = FleetConfig {
                admission_per_sec: Some(20),
                retry_after: false,
                ..fleet(config)
            };
            let r = run(&cfg);
            structural(&r, &cfg);
            assert!(r.rejected_503 > 0);
            assert!(r.max_admitted_per_second <= 20);
        }
    }

    #[test]
    fn outage_and_limit_together() {
        let cfg = FleetConfig {
            down_for: Duration::from_secs(3),
            admission_per_sec: Some(25),
            ..fleet(Config::default())
        };
        let r = run(&cfg);
        structural(&r, &cfg);
    }

    #[test]
    fn same_config_same_report() {
        let cfg = FleetConfig {
            down_for: Duration::from_secs(2),
            admission_per_sec: Some(30),
            seed: 9,
            ..fleet(Config::default())
        };
        assert_eq!(run(&cfg), run(&cfg));
        let other = run(&FleetConfig {
            seed: 10,
            ..cfg.clone()
        });
        assert_ne!(run(&cfg).dials_per_bucket, other.dials_per_bucket);
    }

    #[test]
    fn percentiles_rank_stragglers_last() {
        let r = FleetReport {
            clients: 4,
            dials: 4,
            dials_per_client: vec![1; 4],
            dials_per_bucket: vec![4],
            bucket: Duration::from_millis(100),
            reconnected_at: vec![
                Some(Duration::from_secs(3)),
                None,
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
            ],
            gave_up: 0,
            admitted_while_down: 0,
            rejected_503: 0,
            dials_before_retry_after: 0,
            max_admitted_per_second: 0,
            steps: 0,
        };
        assert_eq!(r.reconnect_percentile(50.0), Some(Duration::from_secs(2)));
        assert_eq!(r.reconnect_percentile(75.0), Some(Duration::from_secs(3)));
        assert_eq!(r.reconnect_percentile(100.0), None);
    }

    #[test]
    fn svg_has_one_panel_per_run() {
        let r = run(&FleetConfig {
            down_for: Duration::from_secs(1),
            ..fleet(Config::default())
        });
        let span = Duration::from_secs(10);
        let svg =
            svg_histograms(&[("a".to_owned(), &r, span), ("b".to_owned(), &r, span)], 2).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<rect"));
    }
}
