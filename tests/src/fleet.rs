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
//!   sessions in any one second (see below). A dial over the limit gets
//!   HTTP 503, with an honest `Retry-After` when [`FleetConfig::retry_after`]
//!   is set and without one otherwise.
//! - Dials are answered after [`FleetConfig::dial_latency`] (default zero:
//!   at once); keepalive pings are answered at once; token fetches (if the
//!   config asks for them) succeed at once. Connected clients stay connected.
//!
//! # The admission limit
//! One promise holds in both modes: **at most `R` admissions in any one
//! second**, checked on a sliding window (every interval of one second,
//! not only the seconds counted from the return). The server keeps the
//! instants of the admissions of the last second and refuses a dial that
//! would be the `R + 1`-th; [`FleetReport::max_admitted_per_second`] is the
//! most admissions any one-second window saw, measured the same way.
//!
//! Without `Retry-After` the server books nothing. It is a token bucket
//! that refills at `R` per second and holds at most
//! [`FleetConfig::admission_burst`] tokens (default `R / 10`, a tenth of a
//! second's worth; the bucket is full when the server comes back), and the
//! one-second window above on top of it: a dial is admitted when a token is
//! there and the last second has room, and refused with a bare 503
//! otherwise. The clients fall back on their backoff ladder.
//!
//! With `Retry-After` the server paces bookings: one slot every `1/R`
//! second, no bursts. A dial that finds no slot free *now* (or a full last
//! second) is refused with 503; the refusal books the next free slot for
//! this client (so clients already turned away keep their places: the
//! bookings are a queue) and answers with the whole seconds until that
//! slot, rounded *up* because the header carries whole seconds. That is
//! what honest means: come back after the time given and there is a place
//! for you; no client is told to wait longer than its place in the queue
//! needs (bar the rounding). Clients come back late (the rounding, and the
//! session's up to 10 % of jitter on every `Retry-After`), and late comers
//! from different slots can land together. A booked client that comes back
//! at or after its slot is admitted if the last second has room; if not,
//! its handshake waits for a later slot: the server holds the answer until
//! the instant one more admission keeps every second within `R` (admissions
//! are made in order, so a held handshake is promised its instant), or, if
//! that is more than two seconds away, refuses it again and books it at the
//! tail of the queue. Newcomers are admitted only when no held handshake is
//! waiting and the last second has room. A client that comes back
//! *before* its slot is refused again with the time still left, and counted
//! in [`FleetReport::dials_before_retry_after`]: with a correct session that
//! count is zero.
//!
//! # Dial latency
//! With [`FleetConfig::dial_latency`] above zero, a dial reaches the server
//! and its answer reaches the client that long after the session asked for
//! it (the server's state is read at the answer's instant). A dial is
//! counted in the histogram when it starts. If the session gives up on a dial
//! before its answer (a connect timeout shorter than the latency), the
//! answer is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
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
    /// Without `Retry-After`: the token bucket's size (`None`: a tenth of
    /// the limit, at least 1). Whatever the burst, no second admits more
    /// than the limit.
    pub admission_burst: Option<u32>,
    /// How long a dial takes to be answered (zero: at once).
    pub dial_latency: Duration,
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
            admission_burst: None,
            dial_latency: Duration::ZERO,
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
    /// The most admissions in any one-second window (sliding), whether or
    /// not there is an admission limit. With a limit this is at most the
    /// limit by construction; reported so tests can check the simulator.
    pub max_admitted_per_second: u32,
    /// Inputs fed to sessions (timeouts, dial results, pongs).
    pub steps: u64,
}

impl FleetReport {
    /// The busiest bucket's dial count.
    pub fn peak_dials_per_bucket(&self) -> u32 {
        self.dials_per_bucket.iter().copied().max().unwrap_or(0)
    }

    /// The busiest bucket's dial count among the buckets that start at or
    /// after `from` (for "no stampede when the server returns").
    pub fn peak_dials_per_bucket_from(&self, from: Duration) -> u32 {
        let first = usize::try_from(from.as_nanos().div_ceil(self.bucket.as_nanos().max(1)))
            .unwrap_or(usize::MAX);
        self.dials_per_bucket
            .iter()
            .skip(first)
            .copied()
            .max()
            .unwrap_or(0)
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
        nearest_rank(&self.reconnected_at, p)
    }
}

/// The `p`-th percentile (0..=100, nearest rank) of `times`, a `None`
/// (never) ranking after every time; `None` for an empty list too.
fn nearest_rank(times: &[Option<Duration>], p: f64) -> Option<Duration> {
    let n = times.len();
    if n == 0 {
        return None;
    }
    let mut times = times.to_vec();
    // `None` sorts first for Option; put the stragglers last instead.
    times.sort_by_key(|t| (t.is_none(), *t));
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
    times[rank.min(n) - 1]
}

/// One client whose server restarts, over many seeds: what a single user
/// sees after a deploy or a crash, where [`run`] shows what the server sees.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartReport {
    /// How long the server was down.
    pub down_for: Duration,
    /// Per seed: the time from the server's return to the client's
    /// reconnect (`None`: not within the run).
    pub back_after_return: Vec<Option<Duration>>,
    /// Per seed: dials after the loss, the successful one included.
    pub dials: Vec<u32>,
}

impl RestartReport {
    /// The `p`-th percentile (0..=100, nearest rank) of the time from the
    /// server's return to the reconnect, over the seeds (a seed that never
    /// reconnected ranks last).
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        nearest_rank(&self.back_after_return, p)
    }

    /// Mean dials per seed.
    pub fn mean_dials(&self) -> f64 {
        if self.dials.is_empty() {
            return 0.0;
        }
        self.dials.iter().map(|&d| f64::from(d)).sum::<f64>() / self.dials.len() as f64
    }
}

/// Runs one client with `config` against a server down `down_for` once
/// per seed in `seeds` (each a fleet of one: no admission limit, dials
/// answered at once, two simulated minutes after the return).
pub fn restart(
    config: &Config,
    down_for: Duration,
    seeds: std::ops::RangeInclusive<u64>,
) -> RestartReport {
    let mut report = RestartReport {
        down_for,
        back_after_return: Vec::new(),
        dials: Vec::new(),
    };
    for seed in seeds {
        let r = run(&FleetConfig {
            down_for,
            seed,
            duration: down_for + Duration::from_secs(120),
            ..FleetConfig::new(1, config.clone())
        });
        report.back_after_return.push(
            r.reconnected_at
                .first()
                .copied()
                .flatten()
                .map(|t| t.saturating_sub(down_for)),
        );
        report.dials.extend(r.dials_per_client);
    }
    report
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
    /// Admitted, but the handshake is held until this instant.
    Hold(u64),
    Refuse(DialFailure),
}

/// The longest the server holds a booked client's handshake for room in
/// the last second, rather than turning it away again.
const MAX_HOLD: u64 = 2 * SECOND;

/// The server: down until `up_at`, then limiting admissions (see the
/// module docs).
struct Server {
    up_at: u64,
    /// The limit per second (`None`: no limit).
    limit: Option<u32>,
    /// Nanoseconds between two slots at the limit's rate.
    spacing: u64,
    retry_after: bool,
    /// Without Retry-After: how far ahead of its schedule the bucket may
    /// run, `(burst - 1) * spacing` (GCRA's tolerance).
    tolerance: u64,
    /// Without Retry-After, the bucket's theoretical arrival time; with it,
    /// the next slot free for booking.
    next_slot: u64,
    /// Instants of the admissions in the last second and of those promised
    /// to held handshakes, in order.
    window: VecDeque<u64>,
    /// The most admissions any one-second window held.
    max_in_window: u32,
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
        let limit = cfg.admission_per_sec.map(|r| r.max(1));
        // Rounded up, so that no second holds more than R slots.
        let spacing = limit.map_or(0, |r| SECOND.div_ceil(u64::from(r)));
        let burst = limit.map_or(1, |r| cfg.admission_burst.unwrap_or(r / 10).clamp(1, r));
        Server {
            up_at,
            limit,
            spacing,
            retry_after: cfg.retry_after,
            tolerance: u64::from(burst - 1) * spacing,
            next_slot: up_at,
            window: VecDeque::new(),
            max_in_window: 0,
            booking: vec![None; cfg.clients],
            not_before: vec![None; cfg.clients],
            rejected_503: 0,
            early: 0,
        }
    }

    /// The earliest instant at or after `t` at which one more admission
    /// keeps every one-second window within the limit, counting the
    /// admissions made and those promised to held handshakes.
    fn earliest_admission(&mut self, t: u64) -> u64 {
        while self.window.front().is_some_and(|&a| a + SECOND <= t) {
            self.window.pop_front();
        }
        // Admissions are made in order, so the window is sorted and only the
        // R-th latest matters: one more must come a second after it.
        let mut x = t.max(self.window.back().copied().unwrap_or(0));
        if let Some(r) = self.limit.and_then(|r| usize::try_from(r).ok()) {
            if self.window.len() >= r {
                x = x.max(self.window[self.window.len() - r] + SECOND);
            }
        }
        x
    }

    /// Admits at `x` (`t` is now; `x > t` holds the handshake until `x`).
    fn admit_at(&mut self, t: u64, x: u64) -> Answer {
        self.window.push_back(x);
        let older = self.window.partition_point(|&a| a + SECOND <= x);
        let n = u32::try_from(self.window.len() - older).unwrap_or(u32::MAX);
        self.max_in_window = self.max_in_window.max(n);
        if x > t {
            Answer::Hold(x)
        } else {
            Answer::Admit
        }
    }

    fn dial(&mut self, client: usize, t: u64) -> Answer {
        if self.not_before[client].is_some_and(|nb| t < nb) {
            self.early += 1;
        }
        if t < self.up_at {
            return Answer::Refuse(DialFailure::Io("connection refused".to_owned()));
        }
        if self.limit.is_none() {
            return self.admit_at(t, t);
        }
        if !self.retry_after {
            // Token bucket (GCRA with a tolerance) under the window.
            if t + self.tolerance >= self.next_slot && self.earliest_admission(t) == t {
                self.next_slot = self.next_slot.max(t) + self.spacing;
                return self.admit_at(t, t);
            }
            self.rejected_503 += 1;
            return Answer::Refuse(DialFailure::http(503, None));
        }
        if let Some(slot) = self.booking[client] {
            if t < slot {
                return self.refuse_until(client, t, slot);
            }
            // Back after its slot, but the last second may be full of other
            // late comers: the handshake waits for room (briefly), or the
            // client is booked again.
            let x = self.earliest_admission(t);
            if x - t <= MAX_HOLD {
                self.booking[client] = None;
                return self.admit_at(t, x);
            }
            return self.book(client, t);
        }
        if self.next_slot <= t && self.earliest_admission(t) == t {
            self.next_slot = t + self.spacing;
            return self.admit_at(t, t);
        }
        self.book(client, t)
    }

    /// Books the next free slot (the tail of the queue) and refuses until
    /// then.
    fn book(&mut self, client: usize, t: u64) -> Answer {
        let slot = self.next_slot.max(t);
        self.next_slot = slot + self.spacing;
        self.booking[client] = Some(slot);
        self.refuse_until(client, t, slot)
    }

    /// 503 with the whole seconds until `at`, rounded up (at least one: a
    /// zero would invite the client straight back).
    fn refuse_until(&mut self, client: usize, t: u64, at: u64) -> Answer {
        let secs = (at - t).div_ceil(SECOND).max(1);
        self.not_before[client] = Some(t + secs * SECOND);
        self.rejected_503 += 1;
        Answer::Refuse(DialFailure::http(503, Some(Duration::from_secs(secs))))
    }
}

struct Client {
    session: Session,
    /// The deadline queued for this client (older queue entries are stale).
    scheduled: Option<u64>,
    /// When the answer to the dial in flight arrives, if one is.
    answer_at: Option<u64>,
    /// That answer is already decided: admitted, handshake held.
    held: bool,
    dials: u32,
    reconnected_at: Option<u64>,
    gave_up: bool,
}

/// What a queue entry wakes a client for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    /// The dial in flight is answered.
    Answer,
    /// The session's own deadline.
    Timeout,
}

type Queue = BinaryHeap<Reverse<(u64, usize, Wake)>>;

/// Runs one fleet simulation.
pub fn run(cfg: &FleetConfig) -> FleetReport {
    let origin = Instant::now();
    let at = |t: u64| origin + Duration::from_nanos(t);
    let since = |i: Instant| nanos(i.saturating_duration_since(origin));
    let end = nanos(cfg.duration);
    let bucket = nanos(cfg.bucket).max(1);

    let mut sim = Sim {
        server: Server::new(cfg),
        report: FleetReport {
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
        },
        queue: BinaryHeap::with_capacity(cfg.clients),
        latency: nanos(cfg.dial_latency),
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
                answer_at: None,
                held: false,
                dials: 0,
                reconnected_at: None,
                gave_up: false,
            }
        })
        .collect();

    for (i, c) in clients.iter_mut().enumerate() {
        sim.drive(i, c, 0, &at);
        sim.reschedule(i, c, &since);
    }

    while let Some(Reverse((t, i, wake))) = sim.queue.pop() {
        if t > end {
            break;
        }
        let c = &mut clients[i];
        match wake {
            Wake::Timeout => {
                if c.scheduled != Some(t) {
                    continue; // superseded
                }
                c.scheduled = None;
                // A deadline while a dial is in flight is the session giving
                // up on it: its answer, when it comes, is for nobody.
                c.answer_at = None;
                c.held = false;
                c.session.handle_timeout(at(t));
                sim.report.steps += 1;
            }
            Wake::Answer => {
                if c.answer_at != Some(t) {
                    continue; // abandoned
                }
                c.answer_at = None;
                if c.held {
                    c.held = false;
                    c.session.handle_dial_ok(at(t));
                } else {
                    sim.answer(i, c, t, &at);
                }
            }
        }
        sim.drive(i, c, t, &at);
        sim.reschedule(i, c, &since);
    }

    let Sim {
        server, mut report, ..
    } = sim;
    report.dials_per_client = clients.iter().map(|c| c.dials).collect();
    report.reconnected_at = clients
        .iter()
        .map(|c| c.reconnected_at.map(Duration::from_nanos))
        .collect();
    report.gave_up = clients.iter().filter(|c| c.gave_up).count();
    report.rejected_503 = server.rejected_503;
    report.dials_before_retry_after = server.early;
    report.max_admitted_per_second = server.max_in_window;
    report
}

/// Everything one run shares but the clients.
struct Sim {
    server: Server,
    report: FleetReport,
    queue: Queue,
    latency: u64,
}

impl Sim {
    /// The server answers client `i`'s dial at `t`.
    fn answer(&mut self, i: usize, c: &mut Client, t: u64, at: &impl Fn(u64) -> Instant) {
        self.report.steps += 1;
        match self.server.dial(i, t) {
            Answer::Admit => {
                if t < self.server.up_at {
                    self.report.admitted_while_down += 1;
                }
                c.session.handle_dial_ok(at(t));
            }
            Answer::Hold(x) => {
                c.answer_at = Some(x);
                c.held = true;
                self.queue.push(Reverse((x, i, Wake::Answer)));
            }
            Answer::Refuse(f) => c.session.handle_dial_failed(at(t), f),
        }
    }

    /// Carries out a client's actions (dials go to the server) and reads its
    /// events, until it has nothing more to say.
    fn drive(&mut self, i: usize, c: &mut Client, t: u64, at: &impl Fn(u64) -> Instant) {
        let now = at(t);
        loop {
            let Some(action) = c.session.poll_action() else {
                break;
            };
            match action {
                Action::Dial { .. } => {
                    c.dials += 1;
                    self.report.dials += 1;
                    let b = t / nanos(self.report.bucket);
                    if let Some(n) = self
                        .report
                        .dials_per_bucket
                        .get_mut(usize::try_from(b).unwrap_or(usize::MAX))
                    {
                        *n += 1;
                    }
                    if self.latency == 0 {
                        self.answer(i, c, t, at);
                    } else {
                        let when = t + self.latency;
                        c.answer_at = Some(when);
                        self.queue.push(Reverse((when, i, Wake::Answer)));
                    }
                }
                Action::Send(Frame::Ping(p)) => {
                    self.report.steps += 1;
                    c.session.handle_frame(now, Frame::Pong(p));
                }
                Action::FetchToken => {
                    self.report.steps += 1;
                    c.session.handle_token(now, AuthToken::new("fleet"));
                }
                _ => {}
            }
        }
        while let Some(e) = c.session.poll_event() {
            match e {
                Event::Connected { .. } if c.reconnected_at.is_none() => c.reconnected_at = Some(t),
                Event::Closed { .. } => c.gave_up = true,
                _ => {}
            }
        }
    }

    fn reschedule(&mut self, i: usize, c: &mut Client, since: &impl Fn(Instant) -> u64) {
        let next = c.session.poll_timeout().map(since);
        if next != c.scheduled {
            c.scheduled = next;
            if let Some(t) = next {
                self.queue.push(Reverse((t, i, Wake::Timeout)));
            }
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
        if let Some(limit) = cfg.admission_per_sec {
            assert!(r.max_admitted_per_second <= limit);
            if cfg.dial_latency.is_zero() {
                assert!(busiest_second(r) <= limit as usize);
            }
        }
    }

    /// The most reconnections in any one-second window, from the clients'
    /// side (with no dial latency a client connects when it is admitted).
    fn busiest_second(r: &FleetReport) -> usize {
        let mut t: Vec<Duration> = r.reconnected_at.iter().flatten().copied().collect();
        t.sort();
        let mut most = 0;
        let mut lo = 0;
        for hi in 0..t.len() {
            while t[hi] - t[lo] >= Duration::from_secs(1) {
                lo += 1;
            }
            most = most.max(hi - lo + 1);
        }
        most
    }

    /// A small LCG, so that the server tests need no session.
    fn arrivals(seed: u64, n: usize, over: Duration) -> Vec<u64> {
        let mut x = seed;
        let mut t: Vec<u64> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 11) % nanos(over)
            })
            .collect();
        t.sort();
        t
    }

    /// Feeds `times` (one dial each, by distinct clients) to a server;
    /// returns the admission instants.
    fn admissions(server: &mut Server, times: &[u64]) -> Vec<u64> {
        times
            .iter()
            .enumerate()
            .filter_map(|(i, &t)| matches!(server.dial(i, t), Answer::Admit).then_some(t))
            .collect()
    }

    fn max_in_any_second(admitted: &[u64]) -> usize {
        let mut most = 0;
        let mut lo = 0;
        for hi in 0..admitted.len() {
            while admitted[hi] - admitted[lo] >= SECOND {
                lo += 1;
            }
            most = most.max(hi - lo + 1);
        }
        most
    }

    #[test]
    fn without_retry_after_the_limit_admits_r_per_second_and_never_more() {
        // 3,000 random dials a second for 10 s against R = 1,000: the server
        // is busy all along, so an honest "R per second" admits close to
        // 10,000 (a limiter that refuses for 1 ms after each admission
        // admits about 750 a second here).
        let times = arrivals(7, 30_000, Duration::from_secs(10));
        let cfg = FleetConfig {
            admission_per_sec: Some(1000),
            retry_after: false,
            ..FleetConfig::new(times.len(), Config::default())
        };
        let mut server = Server::new(&cfg);
        let admitted = admissions(&mut server, &times);
        assert!(max_in_any_second(&admitted) <= 1000);
        assert_eq!(server.max_in_window as usize, max_in_any_second(&admitted));
        assert!(
            admitted.len() >= 9_800,
            "admitted {} in 10 s",
            admitted.len()
        );
        // The burst: a quiet server takes a tenth of a second's worth at once.
        let together = vec![0; 500];
        let mut server = Server::new(&cfg);
        assert_eq!(admissions(&mut server, &together).len(), 100);
        let mut server = Server::new(&FleetConfig {
            admission_burst: Some(400),
            ..cfg
        });
        assert_eq!(admissions(&mut server, &together).len(), 400);
    }

    #[test]
    fn with_retry_after_no_second_admits_more_than_the_limit() {
        // The old server admitted a booked client whenever it came back, so
        // late clients landing together gave 1,255 in one second here.
        let cfg = FleetConfig {
            admission_per_sec: Some(1000),
            duration: Duration::from_secs(60),
            ..FleetConfig::new(10_000, Config::default())
        };
        let r = run(&cfg);
        structural(&r, &cfg);
        assert!(busiest_second(&r) <= 1000, "{}", busiest_second(&r));
        assert!(r.max_admitted_per_second >= 900, "the limit is used");
    }

    #[test]
    fn a_booked_client_back_late_waits_for_room() {
        let cfg = FleetConfig {
            admission_per_sec: Some(1),
            ..FleetConfig::new(5, Config::default())
        };
        let mut s = Server::new(&cfg);
        let ms = |m: u64| m * 1_000_000;
        assert!(matches!(s.dial(0, 0), Answer::Admit));
        // One slot a second: clients 1..=4 are booked at 1, 2, 3 and 4 s.
        for i in 1..=4 {
            assert!(matches!(s.dial(i, ms(i as u64)), Answer::Refuse(_)));
            assert_eq!(s.booking[i], Some(ms(1000 * i as u64)));
        }
        // All four come back late, together, at 4.5 s. Admitting them all
        // then would put four in one second: the first goes in, the next
        // two wait a second each for room, and the last, which would wait
        // more than two seconds, is booked again.
        assert!(matches!(s.dial(1, ms(4500)), Answer::Admit));
        assert!(matches!(s.dial(2, ms(4500)), Answer::Hold(t) if t == ms(5500)));
        assert!(matches!(s.dial(3, ms(4500)), Answer::Hold(t) if t == ms(6500)));
        assert!(matches!(s.dial(4, ms(4500)), Answer::Refuse(_)));
        assert_eq!(s.booking[4], Some(ms(5000)));
        assert_eq!(s.max_in_window, 1);
        // A newcomer finds no room either (the held ones come first).
        assert!(matches!(s.dial(0, ms(6000)), Answer::Refuse(_)));
        assert_eq!(s.early, 0);
    }

    #[test]
    fn dial_latency_delays_every_answer() {
        // The server is up: every client connects with its first dial, that
        // dial's latency later than without latency.
        let cfg = FleetConfig {
            dial_latency: Duration::from_millis(80),
            ..fleet(Config::default())
        };
        let r = run(&cfg);
        structural(&r, &cfg);
        let instant = run(&FleetConfig {
            dial_latency: Duration::ZERO,
            ..cfg.clone()
        });
        for (slow, fast) in r.reconnected_at.iter().zip(&instant.reconnected_at) {
            assert_eq!(*slow, fast.map(|t| t + Duration::from_millis(80)));
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
            // One refusal with a booking, then admission (a late comer's
            // handshake may be held for room, not refused again).
            assert!(r.dials_per_client.iter().all(|&d| d <= 2), "{r}");
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
    fn restart_times_are_counted_from_the_servers_return() {
        // A fixed 1 s wait: dials at 1 s (refused) and 2 s, whatever the
        // seed, so a server down 1.5 s has this client back 0.5 s after it.
        let fixed = Config::builder()
            .backoff(Backoff::proportional(
                Duration::from_secs(1),
                1.0,
                0.0,
                Duration::from_secs(1),
            ))
            .build()
            .unwrap();
        let r = restart(&fixed, Duration::from_millis(1500), 1..=20);
        assert_eq!(
            r.back_after_return,
            vec![Some(Duration::from_millis(500)); 20]
        );
        assert_eq!(r.dials, vec![2; 20]);
        assert_eq!(r.percentile(90.0), Some(Duration::from_millis(500)));
        assert_eq!(r.mean_dials(), 2.0);
    }

    #[test]
    fn the_default_finds_a_restarted_server_within_the_targets() {
        let config = Config::default();
        let r = restart(&config, Duration::from_millis(1500), 1..=2000);
        assert!(r.back_after_return.iter().all(Option::is_some));
        let p50 = r.percentile(50.0).unwrap();
        let p90 = r.percentile(90.0).unwrap();
        assert!(
            p50 <= Duration::from_millis(1500),
            "down 1.5 s: p50 {p50:?}"
        );
        assert!(p90 <= Duration::from_secs(3), "down 1.5 s: p90 {p90:?}");
        let r = restart(&config, Duration::from_secs(3), 1..=2000);
        let p90 = r.percentile(90.0).unwrap();
        assert!(p90 <= Duration::from_secs(4), "down 3 s: p90 {p90:?}");
        // Different seeds draw differently: not one time for all.
        assert!(r.percentile(10.0) < r.percentile(90.0));
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
