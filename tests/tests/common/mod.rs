//! What the end-to-end suites share: the server and proxy on their own
//! thread, an event recorder, bounded waits on the client's runtime, and the
//! runners that put one scenario body on tokio, async-std and smol.
//!
//! Every scenario is an `async fn name<R: Runtime>(make: impl Fn(String) ->
//! Builder<R>)`; [`on_every_runtime!`] turns a list of them into one
//! `#[test]` per runtime. Waits are on events or server/proxy counters, each
//! with a generous timeout as a safety net only.

// Test support: an unmet expectation is a failed test, so panicking on it is
// the point. Each suite uses a different subset of the helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use redial_core::{Backoff, Config, ConfigBuilder, Event, SessionInfo, TerminalReason};
use redial_driver::{Builder, Handle, Runtime};
use redial_tests::proxy::{Proxy, ProxyHandle};
use redial_tests::reference::{Server, ServerConfig, ServerControl, ServerStats};
use tokio::sync::watch;

/// The safety net for one wait. Far above what any healthy wait takes, so it
/// only fires when something is really wrong.
pub const WAIT: Duration = Duration::from_secs(10);

/// Small settings so the suites are fast: ping 400 ms, pong 400 ms, full
/// jitter from a 100 ms window up to 400 ms, stable after 300 ms.
pub fn fast_config() -> ConfigBuilder {
    Config::builder()
        .ping_interval(Some(Duration::from_millis(400)))
        .pong_timeout(Duration::from_millis(400))
        .backoff(Backoff::full_jitter(
            Duration::from_millis(100),
            Duration::from_millis(400),
        ))
        .connect_timeout(Duration::from_secs(2))
        .stable_after(Duration::from_millis(300))
        .close_linger(Duration::from_secs(5))
}

// ----- runners ----------------------------------------------------------

/// Builders for the async-std and smol runners: the driver task goes on that
/// runtime's own executor.
pub fn async_std_builder(url: String) -> redial_async_std::Builder {
    let rt = redial_async_std::AsyncIo::with_spawner(|task| {
        async_std::task::spawn(task);
    });
    redial_async_std::Builder::new(rt, url)
}

/// See [`async_std_builder`].
pub fn smol_builder(url: String) -> redial_async_std::Builder {
    let rt = redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach());
    redial_async_std::Builder::new(rt, url)
}

/// Runs a scenario on a fresh tokio runtime.
pub fn on_tokio<Fut: Future<Output = ()>>(
    body: impl FnOnce(fn(String) -> redial_tokio::Builder) -> Fut,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(body(redial_tokio::builder));
}

/// Runs a scenario under async-std.
pub fn on_async_std<Fut: Future<Output = ()>>(
    body: impl FnOnce(fn(String) -> redial_async_std::Builder) -> Fut,
) {
    async_std::task::block_on(body(async_std_builder));
}

/// Runs a scenario under smol.
pub fn on_smol<Fut: Future<Output = ()>>(
    body: impl FnOnce(fn(String) -> redial_async_std::Builder) -> Fut,
) {
    smol::block_on(body(smol_builder));
}

/// One `#[test]` per scenario and runtime: `tokio_rt::name`,
/// `async_std_rt::name`, `smol_rt::name`. `name: nats` marks a scenario
/// that needs a third-party server (see `redial_tests::needs!`).
#[allow(unused_macros)] // the soak has its own main
macro_rules! on_every_runtime {
    ($($name:ident $(: $server:ident)?),* $(,)?) => {
        mod tokio_rt {
            $(
                redial_tests::needs! { $($server)?;
                    #[test]
                    fn $name() {
                        crate::common::on_tokio(|make| super::$name(make));
                    }
                }
            )*
        }
        mod async_std_rt {
            $(
                redial_tests::needs! { $($server)?;
                    #[test]
                    fn $name() {
                        crate::common::on_async_std(|make| super::$name(make));
                    }
                }
            )*
        }
        mod smol_rt {
            $(
                redial_tests::needs! { $($server)?;
                    #[test]
                    fn $name() {
                        crate::common::on_smol(|make| super::$name(make));
                    }
                }
            )*
        }
    };
}

// ----- waiting ----------------------------------------------------------

/// `fut`, or a panic naming `what` after `limit` on `rt`'s clock.
pub async fn within<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> T {
    let sleep = std::pin::pin!(rt.sleep_until(rt.now() + limit));
    let fut = std::pin::pin!(fut);
    match select(fut, sleep).await {
        Either::Left((value, _)) => value,
        Either::Right(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Lets `d` pass on `rt`'s clock. Only for waits where time passing *is* the
/// condition (a connection must outlive `stable_after`, a publisher paces
/// itself), never for something an event could signal.
pub async fn pause<R: Runtime>(rt: &R, d: Duration) {
    rt.sleep_until(rt.now() + d).await;
}

// ----- the server side --------------------------------------------------

/// The reference server and a fault proxy in front of it, on their own
/// thread and tokio runtime, so clients on any runtime are independent of
/// them. Dropping it stops both.
pub struct Harness {
    /// The server's controls (faults, stats, what it applied).
    pub server: ServerControl,
    /// The proxy's controls (cuts, black hole, latency, refusal).
    pub proxy: ProxyHandle,
    rt: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Harness {
    /// Starts a server with `config` and a proxy to it.
    pub fn start(config: ServerConfig) -> Harness {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("suite-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                rt.block_on(async move {
                    let server = Server::start(config).await.expect("server starts");
                    let proxy = Proxy::start(server.addr()).await.expect("proxy starts");
                    let _ = ready_tx.send((
                        server.control(),
                        proxy.handle(),
                        tokio::runtime::Handle::current(),
                    ));
                    let _ = stop_rx.await;
                    drop(proxy);
                    drop(server);
                });
            })
            .expect("server thread");
        let (server, proxy, rt) = ready_rx.recv().expect("server and proxy started");
        Harness {
            server,
            proxy,
            rt,
            _stop: stop_tx,
        }
    }

    /// A server with the default configuration.
    pub fn default_server() -> Harness {
        Self::start(ServerConfig::default())
    }

    /// The URL through the proxy.
    pub fn proxied_url(&self) -> String {
        format!("ws://{}/", self.proxy.addr())
    }

    /// The server's own URL.
    pub fn direct_url(&self) -> String {
        self.server.url()
    }

    /// Runs `fut` on the server's runtime (fault scripts).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(fut);
    }

    /// Waits until the server's counters satisfy `pred`.
    pub async fn server_reaches<R: Runtime>(
        &self,
        rt: &R,
        what: &str,
        pred: impl FnMut(&ServerStats) -> bool,
    ) -> ServerStats {
        within(rt, WAIT, what, self.server.wait_for(pred)).await
    }
}

/// A fault proxy on its own thread and tokio runtime (the clients may run
/// on another runtime). Dropping it stops the proxy.
pub struct ProxyThread {
    /// The proxy's controls.
    pub handle: ProxyHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ProxyThread {
    /// Starts a proxy in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> ProxyThread {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let proxy = Proxy::start(upstream).await.unwrap();
                let _ = ready_tx.send(proxy.handle());
                let _ = stop_rx.await;
                drop(proxy);
            });
        });
        ProxyThread {
            handle: ready_rx.recv().unwrap(),
            _stop: stop_tx,
        }
    }
}

// ----- the client side --------------------------------------------------

/// An event and when the recorder saw it (never earlier than it happened).
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it was read off the event stream.
    pub at: Instant,
    /// The event.
    pub event: Event,
}

struct Log {
    seen: Mutex<Vec<Seen>>,
    /// How many events are logged, and whether the stream has ended.
    progress: watch::Sender<(usize, bool)>,
}

/// Reads a client's events on its runtime as they come (so the driver never
/// waits for the test) and lets the test wait for them in order.
pub struct Recorder {
    log: Arc<Log>,
    /// Index of the first event [`Recorder::next`] has not consumed.
    cursor: usize,
}

impl Recorder {
    /// Starts reading `events` in a task on `rt`.
    pub fn start<R: Runtime>(rt: &R, mut events: redial_driver::Events) -> Recorder {
        let log = Arc::new(Log {
            seen: Mutex::new(Vec::new()),
            progress: watch::Sender::new((0, false)),
        });
        let writer = Arc::clone(&log);
        rt.spawn(Box::pin(async move {
            while let Some(event) = events.recv().await {
                let n = {
                    let mut seen = writer.seen.lock().unwrap();
                    seen.push(Seen {
                        at: Instant::now(),
                        event,
                    });
                    seen.len()
                };
                writer.progress.send_replace((n, false));
            }
            writer.progress.send_modify(|p| p.1 = true);
        }))
        .expect("spawn the event recorder");
        Recorder { log, cursor: 0 }
    }

    /// Where [`next`](Self::next) stands now, for [`rewind`](Self::rewind).
    pub fn mark(&self) -> usize {
        self.cursor
    }

    /// Makes [`next`](Self::next) look again from `mark`: for events whose
    /// order relative to each other does not matter.
    pub fn rewind(&mut self, mark: usize) {
        self.cursor = mark;
    }

    /// Everything seen so far.
    pub fn all(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    /// Events seen so far matching `pred`.
    pub fn matching(&self, pred: impl Fn(&Event) -> bool) -> Vec<Seen> {
        self.all().into_iter().filter(|s| pred(&s.event)).collect()
    }

    /// How many `Connected` events were reconnects.
    pub fn reconnects(&self) -> usize {
        self.matching(|e| {
            matches!(
                e,
                Event::Connected {
                    reconnect: true,
                    ..
                }
            )
        })
        .len()
    }

    /// Whether the event stream has ended (the session is closed).
    pub fn has_ended(&self) -> bool {
        self.log.progress.borrow().1
    }

    fn dump(&self) -> String {
        let all = self.all();
        let start = all.first().map(|s| s.at);
        all.iter()
            .map(|s| {
                let ms = start.map_or(0, |t| s.at.duration_since(t).as_millis());
                format!("\n  +{ms}ms {:?}", s.event)
            })
            .collect()
    }

    /// The first event after the last one returned that matches `pred`.
    /// Panics (with the whole log) if the stream ends or [`WAIT`] passes.
    pub async fn next<R: Runtime>(
        &mut self,
        rt: &R,
        what: &str,
        pred: impl FnMut(&Event) -> bool,
    ) -> Seen {
        self.next_within(rt, WAIT, what, pred).await
    }

    /// [`next`](Self::next) with another safety net than [`WAIT`].
    pub async fn next_within<R: Runtime>(
        &mut self,
        rt: &R,
        limit: Duration,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Seen {
        let mut progress = self.log.progress.subscribe();
        let found = within(rt, limit, what, async {
            loop {
                // Marked seen before looking, so an event logged while we
                // look wakes the wait below.
                let ended = progress.borrow_and_update().1;
                {
                    let seen = self.log.seen.lock().unwrap();
                    if let Some(i) = (self.cursor..seen.len()).find(|&i| pred(&seen[i].event)) {
                        self.cursor = i + 1;
                        return Some(seen[i].clone());
                    }
                    self.cursor = seen.len();
                }
                if ended || progress.changed().await.is_err() {
                    return None;
                }
            }
        });
        match found.await {
            Some(seen) => seen,
            None => panic!(
                "event stream ended while waiting for {what}; events:{}",
                self.dump()
            ),
        }
    }

    /// Like [`next`](Self::next), but also fails if an event matching
    /// `forbidden` comes first.
    pub async fn next_without<R: Runtime>(
        &mut self,
        rt: &R,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
        forbidden: impl Fn(&Event) -> bool,
    ) -> Seen {
        let seen = self.next(rt, what, |e| pred(e) || forbidden(e)).await;
        if forbidden(&seen.event) && !pred(&seen.event) {
            panic!(
                "{:?} came while waiting for {what}; events:{}",
                seen.event,
                self.dump()
            );
        }
        seen
    }

    /// Waits until the event stream ends: the driver task is finished, so
    /// nothing (no dial in particular) can follow.
    pub async fn ended<R: Runtime>(&self, rt: &R) {
        let mut progress = self.log.progress.subscribe();
        let ended = within(rt, WAIT, "the end of the event stream", async {
            progress.wait_for(|p| p.1).await.is_ok()
        })
        .await;
        assert!(ended, "recorder vanished");
    }

    /// Panics with the log if `cond` is false.
    pub fn check(&self, cond: bool, what: &str) {
        if !cond {
            panic!("{what}; events:{}", self.dump());
        }
    }
}

/// A connected client: its handle, its recorded events and its runtime.
pub struct Client<R: Runtime> {
    /// The handle.
    pub handle: Handle,
    /// Everything it reported.
    pub events: Recorder,
    /// The runtime it runs on.
    pub rt: R,
}

impl<R: Runtime> Client<R> {
    /// Starts `builder` (configure it first) and records its events.
    pub fn connect(builder: Builder<R>) -> Client<R> {
        let rt = builder.runtime().clone();
        let (handle, events) = builder.connect().expect("connect");
        let events = Recorder::start(&rt, events);
        Client { handle, events, rt }
    }

    /// The next event matching `pred`.
    pub async fn next(&mut self, what: &str, pred: impl FnMut(&Event) -> bool) -> Seen {
        self.events.next(&self.rt, what, pred).await
    }

    /// The next `Connected`, with its session (Wire).
    pub async fn connected(&mut self, what: &str) -> (Seen, Connected) {
        let seen = self.next(what, is_connected).await;
        let c = Connected::of(&seen.event);
        (seen, c)
    }

    /// The next `Disconnected`.
    pub async fn disconnected(&mut self, what: &str) -> Seen {
        self.next(what, |e| matches!(e, Event::Disconnected { .. }))
            .await
    }

    /// The next `Closed`, then the end of the stream.
    pub async fn closed(&mut self, what: &str) -> (TerminalReason, Option<u16>) {
        let seen = self.next(what, |e| matches!(e, Event::Closed { .. })).await;
        self.events.ended(&self.rt).await;
        match seen.event {
            Event::Closed { reason, code, .. } => (reason, code),
            _ => unreachable!(),
        }
    }

    /// Closes gracefully and waits for the end.
    pub async fn close(&self) {
        within(&self.rt, WAIT, "a graceful close", self.handle.close()).await;
    }
}

/// What a `Connected` event says.
#[derive(Debug, Clone)]
pub struct Connected {
    /// Not the first connection.
    pub reconnect: bool,
    /// The server resumed the previous session.
    pub resumed: bool,
    /// The server's session.
    pub session: SessionInfo,
}

impl Connected {
    fn of(e: &Event) -> Connected {
        match e {
            Event::Connected {
                reconnect,
                resumed,
                session: Some(session),
                ..
            } => Connected {
                reconnect: *reconnect,
                resumed: *resumed,
                session: session.clone(),
            },
            other => panic!("expected a Wire Connected, got {other:?}"),
        }
    }

    /// The session's name as a plain string.
    pub fn name(&self) -> String {
        self.session.name.to_string()
    }
}

/// Whether `e` is `Connected`.
pub fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected { .. })
}

/// The text of a `Message`.
pub fn message_text(e: &Event) -> Option<&str> {
    match e {
        Event::Message { payload, .. } => payload.as_text(),
        _ => None,
    }
}

/// Millisecond shorthand.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
