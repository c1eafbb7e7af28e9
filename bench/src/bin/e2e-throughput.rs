//! Throughput on loopback, two workloads: one-way (1 KiB binary messages,
//! client to a counting server) and echo (64 B and 1 KiB, a plain server
//! echoes every message, up to 256 in flight).
//!
//! # One-way
//! One counting tokio-tungstenite server (its own thread and current-thread
//! runtime) receives from one client at a time. Each client connects with
//! Nagle off, sends a warm-up batch, waits until the server counted it, then
//! sends `--messages` more; the clock runs from the first send of that batch
//! until the server has counted its last message. Every client sends the
//! same `Bytes` (a refcount clone per message) and flushes after every
//! message, as its documented per-message send does, except the batched
//! ceiling and the redial `feed` rows, whose driver flushes once per batch
//! of commands it finds waiting (up to 32):
//!
//! | client | how it sends |
//! |---|---|
//! | plain tokio-tungstenite 0.30 | `ws.send(msg).await` (feed + flush) |
//! | plain 0.28 / 0.26 | the same on the versions stream-tungstenite / ezsockets use |
//! | plain, batched (ceiling) | `ws.feed(msg).await`, one flush at the end |
//! | redial-tokio (Raw) | `handle.send(payload).await` |
//! | redial-tokio (feed) | `handle.feed(payload).await` (as `send`, without the seq) |
//! | plain async-tungstenite 0.35 (async-io) | `ws.send(msg).await`, on `async_io::block_on` |
//! | redial-async-std (Raw) | `handle.send(payload).await`, driver on the same executor thread |
//! | redial-async-std (feed) | `handle.feed(payload).await`, driver on the same executor thread |
//! | redial-async-std, built-in | the same, driver on the adapter's own executor thread |
//! | stream-tungstenite 0.6.1 | `sender.send_async(msg).await` (bounded queue, writer task) |
//! | ezsockets 0.7.2 | `client.binary(bytes)` (unbounded queue, actor task) |
//!
//! The tokio clients run as a spawned task on a current-thread runtime on
//! the main thread.
//!
//! # Echo
//! A plain tokio-tungstenite server (its own thread and current-thread
//! runtime; `send` with a flush per echo, Nagle off as every server here)
//! sends every message back. The client has one task writing and one task
//! counting echoes; the writer waits for a permit before each message, and
//! the counter gives one back per echo, so at most 256 messages are in
//! flight. After a warm-up that is fully echoed, the clock runs from the
//! first measured write until the last echo was counted.
//!
//! | client | writes | counts |
//! |---|---|---|
//! | plain tokio-tungstenite 0.30 | `SinkExt::send` (a flush per message) on the split socket, `connect_async` (Nagle on): as a user gets it | the split socket's stream |
//! | plain, TCP_NODELAY | the same with Nagle off (context) | the same |
//! | redial-tokio `send` | `handle.send(payload).await` (returns the seq) | `Event::Message` from `Events` |
//! | redial-tokio `feed` | `handle.feed(payload).await` | the same |
//!
//! # Observability's cost
//! Built with the package's `metrics` feature, redial-tokio records its
//! metrics; `--observe installed` also installs a Prometheus recorder
//! (never rendered) and a tracing subscriber (INFO, formatting into
//! `io::sink`) before any client starts. Without it nothing is installed.
//! The first line says which of the three this binary measures.
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-throughput [-- --quick] [--messages N] [--only NAME] [--workload one-way|echo|both] [--size BYTES]
//! cargo run --release -p redial-bench --features metrics --bin e2e-throughput -- [--observe installed] ...
//! ```
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use redial_bench::{load_average, Args, Counters, CountingServer, Mode};
use redial_core::{Event, Payload};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MESSAGE_SIZE: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: u64,
    messages: u64,
}

struct Outcome {
    name: &'static str,
    elapsed: Duration,
    messages: u64,
}

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let plan = Plan {
        warmup: args
            .number("--warmup", if quick { 2_000 } else { 20_000 })
            .max(1),
        messages: args.number("--messages", if quick { 10_000 } else { 200_000 }),
    };
    let only = args.value("--only").map(str::to_owned);
    observe(args.value("--observe"))?;
    let workload = args.value("--workload").unwrap_or("both").to_owned();
    if !matches!(workload.as_str(), "one-way" | "echo" | "both") {
        return Err(format!("--workload {workload}: one-way, echo or both").into());
    }
    // One echo size only (for profiling): `--size 64` or `--size 1024`.
    let sizes: Vec<usize> = match args.value("--size") {
        None => vec![64, 1024],
        Some(size) => vec![size
            .parse()
            .map_err(|_| format!("--size {size}: a byte count"))?],
    };
    if workload != "one-way" {
        echo_workload(plan, &sizes, only.as_deref())?;
    }
    if workload != "echo" {
        one_way_workload(plan, only.as_deref())?;
    }
    println!("load average after: {}", load_average());
    Ok(())
}

/// Installs the recorder and the subscriber for `--observe installed`
/// (feature `metrics` only), and says what this run measures.
fn observe(how: Option<&str>) -> Result<(), BoxError> {
    let installed = match how {
        None | Some("none") => false,
        Some("installed") => true,
        Some(other) => return Err(format!("--observe {other}: none or installed").into()),
    };
    #[cfg(feature = "metrics")]
    if installed {
        metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber)?;
    }
    #[cfg(not(feature = "metrics"))]
    if installed {
        return Err("--observe installed needs the metrics feature".into());
    }
    println!(
        "observability: metrics feature {}, recorder and subscriber {}",
        if cfg!(feature = "metrics") {
            "on"
        } else {
            "off"
        },
        if installed {
            "installed"
        } else {
            "not installed"
        }
    );
    Ok(())
}

fn one_way_workload(plan: Plan, only: Option<&str>) -> Result<(), BoxError> {
    println!(
        "e2e-throughput: {} warm-up + {} measured messages of {} B per client; load average {}",
        plan.warmup,
        plan.messages,
        MESSAGE_SIZE,
        load_average()
    );
    let server = CountingServer::spawn(Mode::Sink)?;
    let url = server.url();
    let counters = server.counters().clone();
    let payload = Bytes::from(vec![0xA5u8; MESSAGE_SIZE]);

    type Runner = fn(&str, &Arc<Counters>, Bytes, Plan) -> Result<Duration, BoxError>;
    let clients: [(&'static str, Runner); 12] = [
        ("plain tokio-tungstenite", plain),
        ("plain tokio-tungstenite 0.28", plain_028),
        ("plain tokio-tungstenite 0.26", plain_026),
        ("plain, batched flush", plain_batched),
        ("redial-tokio", redial_tokio),
        ("redial-tokio (feed)", redial_tokio_feed),
        ("plain async-tungstenite", plain_async_tungstenite),
        ("redial-async-std", redial_async_std_same_thread),
        ("redial-async-std (feed)", redial_async_std_same_thread_feed),
        (
            "redial-async-std, built-in executor",
            redial_async_std_builtin,
        ),
        ("stream-tungstenite 0.6.1", stream_tungstenite),
        ("ezsockets 0.7.2", ezsockets_client),
    ];
    let mut outcomes = Vec::new();
    for (name, run) in clients {
        if only.is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let elapsed =
            run(&url, &counters, payload.clone(), plan).map_err(|e| format!("{name}: {e}"))?;
        let o = Outcome {
            name,
            elapsed,
            messages: plan.messages,
        };
        println!(
            "  {:<38} {:>10.0} msg/s {:>8.1} MB/s  ({:.3} s)",
            o.name,
            rate(&o),
            rate(&o) * MESSAGE_SIZE as f64 / 1e6,
            o.elapsed.as_secs_f64()
        );
        outcomes.push(o);
        // Let the closed connection's teardown finish off the clock.
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(base) = outcomes
        .iter()
        .find(|o| o.name == "plain tokio-tungstenite")
    {
        println!("ratios to plain tokio-tungstenite (send + flush per message):");
        for o in &outcomes {
            println!("  {:<38} {:>6.3}x", o.name, rate(o) / rate(base));
        }
    }
    Ok(())
}

/// Messages in flight in the echo workload.
const IN_FLIGHT: usize = 256;

type EchoRunner = fn(&str, Bytes, Plan) -> Result<Duration, BoxError>;

/// Every echo client at 64 B and at 1 KiB, side by side, each size's
/// ratios to the plain client as a user gets it.
fn echo_workload(plan: Plan, sizes: &[usize], only: Option<&str>) -> Result<(), BoxError> {
    println!(
        "echo: {} warm-up + {} measured messages, up to {IN_FLIGHT} in flight; load average {}",
        plan.warmup,
        plan.messages,
        load_average()
    );
    let server = CountingServer::spawn(Mode::Echo)?;
    let url = server.url();
    let clients: [(&'static str, EchoRunner); 4] = [
        ("echo plain tokio-tungstenite", echo_plain),
        ("echo plain, TCP_NODELAY", echo_plain_nodelay),
        ("echo redial-tokio send", echo_redial_send),
        ("echo redial-tokio feed", echo_redial_feed),
    ];
    for &size in sizes {
        let payload = Bytes::from(vec![0x5Au8; size]);
        let mut outcomes = Vec::new();
        for (name, run) in clients {
            if only.is_some_and(|o| !name.starts_with(o)) {
                continue;
            }
            let elapsed = run(&url, payload.clone(), plan).map_err(|e| format!("{name}: {e}"))?;
            let o = Outcome {
                name,
                elapsed,
                messages: plan.messages,
            };
            println!(
                "  {size:>4} B  {:<32} {:>10.0} msg/s  ({:.3} s)",
                o.name,
                rate(&o),
                o.elapsed.as_secs_f64()
            );
            outcomes.push(o);
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(base) = outcomes
            .iter()
            .find(|o| o.name == "echo plain tokio-tungstenite")
        {
            println!(
                "  {size:>4} B  ratios to plain tokio-tungstenite (Nagle on, send per message):"
            );
            for o in &outcomes {
                println!(
                    "  {size:>4} B  {:<32} {:>6.3}x",
                    o.name,
                    rate(o) / rate(base)
                );
            }
        }
    }
    println!("echo done; load average {}", load_average());
    Ok(())
}

/// Writes a fully echoed warm-up, then the measured messages, each
/// `$send` (an awaited `Result`) after taking one of [`IN_FLIGHT`] permits
/// that `$echoes` (a stream yielding `()` per echo, read on its own task)
/// gives back. Evaluates to the time from the first measured write to the
/// last echo.
macro_rules! echoed {
    ($plan:expr, $echoes:expr, $send:expr) => {{
        let plan: Plan = $plan;
        let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let warm = Arc::new(tokio::sync::Notify::new());
        let total = plan.warmup + plan.messages;
        let reader = tokio::spawn(count_echoes(
            $echoes,
            total,
            plan.warmup,
            window.clone(),
            warm.clone(),
        ));
        for _ in 0..plan.warmup {
            window.acquire().await?.forget();
            $send?;
        }
        warm.notified().await;
        let start = Instant::now();
        for _ in 0..plan.messages {
            window.acquire().await?.forget();
            $send?;
        }
        let end = reader.await??;
        end - start
    }};
}

/// Counts `total` echoes, one permit back per echo; tells `warm` when the
/// warm-up is all back. Returns when the last one came.
async fn count_echoes(
    mut echoes: impl Stream<Item = ()> + Unpin,
    total: u64,
    warmup: u64,
    window: Arc<tokio::sync::Semaphore>,
    warm: Arc<tokio::sync::Notify>,
) -> Result<Instant, BoxError> {
    let mut got = 0;
    while got < total {
        if echoes.next().await.is_none() {
            return Err(format!("connection ended after {got} echoes").into());
        }
        got += 1;
        window.add_permits(1);
        if got == warmup {
            warm.notify_one();
        }
    }
    Ok(Instant::now())
}

fn echo_plain(url: &str, payload: Bytes, plan: Plan) -> Result<Duration, BoxError> {
    echo_plain_with(url, payload, plan, false)
}

fn echo_plain_nodelay(url: &str, payload: Bytes, plan: Plan) -> Result<Duration, BoxError> {
    echo_plain_with(url, payload, plan, true)
}

fn echo_plain_with(
    url: &str,
    payload: Bytes,
    plan: Plan,
    nodelay: bool,
) -> Result<Duration, BoxError> {
    use tokio_tungstenite::tungstenite::Message;
    let url = url.to_owned();
    on_current_thread(async move {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, nodelay).await?;
        let (mut sink, stream) = ws.split();
        let echoes = stream
            .filter_map(|m| std::future::ready(matches!(m, Ok(Message::Binary(_))).then_some(())));
        let elapsed = echoed!(
            plan,
            echoes,
            sink.send(Message::Binary(payload.clone())).await
        );
        let _ = sink.close().await;
        Ok(elapsed)
    })
}

fn echo_redial_send(url: &str, payload: Bytes, plan: Plan) -> Result<Duration, BoxError> {
    echo_redial(url, payload, plan, Via::Send)
}

fn echo_redial_feed(url: &str, payload: Bytes, plan: Plan) -> Result<Duration, BoxError> {
    echo_redial(url, payload, plan, Via::Feed)
}

fn echo_redial(url: &str, payload: Bytes, plan: Plan, via: Via) -> Result<Duration, BoxError> {
    let url = url.to_owned();
    on_current_thread(async move {
        let (handle, mut events) = redial_tokio::builder(url).connect()?;
        wait_connected(&mut events).await?;
        let echoes = events
            .filter_map(|e| std::future::ready(matches!(e, Event::Message { .. }).then_some(())));
        let elapsed = match via {
            Via::Send => echoed!(
                plan,
                echoes,
                handle
                    .send(Payload::binary(payload.clone()))
                    .await
                    .map(|_seq| ())
            ),
            Via::Feed => echoed!(
                plan,
                echoes,
                handle.feed(Payload::binary(payload.clone())).await
            ),
        };
        handle.close().await;
        Ok(elapsed)
    })
}

fn rate(o: &Outcome) -> f64 {
    o.messages as f64 / o.elapsed.as_secs_f64()
}

/// Runs `client` as a spawned task on a fresh current-thread runtime on
/// this thread. Spawned, not the `block_on` future itself: redial's and the
/// peers' background tasks then hand over to it through the run queue, as
/// in an application where the sender is a task (a `block_on` future is
/// only polled again after a pass through the IO driver).
fn on_current_thread<F>(client: F) -> Result<Duration, BoxError>
where
    F: std::future::Future<Output = Result<Duration, BoxError>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move { tokio::spawn(client).await? })
}

/// Sends a warm-up batch and a measured batch, one `$send` expression
/// (an awaited `Result`) per message, timing the measured batch until the
/// server has counted it.
macro_rules! timed {
    ($counters:expr, $plan:expr, $send:expr) => {{
        let counters: &Counters = $counters;
        let plan: Plan = $plan;
        let base = counters.messages();
        counters.set_target(base + plan.warmup);
        for _ in 0..plan.warmup {
            $send?;
        }
        counters.wait_target().await;
        counters.set_target(base + plan.warmup + plan.messages);
        let start = Instant::now();
        for _ in 0..plan.messages {
            $send?;
        }
        counters.wait_target().await;
        start.elapsed()
    }};
}

/// A plain client of one tokio-tungstenite version: `ws.send(msg).await`.
macro_rules! plain_client {
    ($name:ident, $tt:path) => {
        fn $name(
            url: &str,
            counters: &Arc<Counters>,
            payload: Bytes,
            plan: Plan,
        ) -> Result<Duration, BoxError> {
            use $tt as tt;
            let (url, counters) = (url.to_owned(), counters.clone());
            on_current_thread(async move {
                let (mut ws, _) = tt::connect_async_with_config(url.as_str(), None, true).await?;
                let elapsed = timed!(
                    &counters,
                    plan,
                    ws.send(tt::tungstenite::Message::Binary(payload.clone()))
                        .await
                );
                let _ = ws.close(None).await;
                Ok(elapsed)
            })
        }
    };
}

plain_client!(plain, tokio_tungstenite);
// The versions the peers are built on, to tell the peer from its version.
plain_client!(plain_028, stream_tungstenite_tt);
plain_client!(plain_026, ezsockets_tungstenite);

fn plain_batched(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    let (url, counters) = (url.to_owned(), counters.clone());
    on_current_thread(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let base = counters.messages();
        let mut elapsed = Duration::ZERO;
        for (batch, measured) in [(plan.warmup, false), (plan.messages, true)] {
            let start = Instant::now();
            counters.set_target(counters.messages() + batch);
            for _ in 0..batch {
                ws.feed(tokio_tungstenite::tungstenite::Message::Binary(
                    payload.clone(),
                ))
                .await?;
            }
            ws.flush().await?;
            counters.wait_target().await;
            if measured {
                elapsed = start.elapsed();
            }
        }
        debug_assert_eq!(counters.messages(), base + plan.warmup + plan.messages);
        let _ = ws.close(None).await;
        Ok(elapsed)
    })
}

async fn wait_connected(events: &mut redial_tokio::Events) -> Result<(), BoxError> {
    while let Some(event) = events.recv().await {
        if matches!(event, Event::Connected { .. }) {
            return Ok(());
        }
    }
    Err("session closed before connecting".into())
}

/// How a redial client hands over each message.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// `handle.send(..).await`: returns the sequence number.
    Send,
    /// `handle.feed(..).await`: the same without the sequence number.
    Feed,
}

fn redial_tokio(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    redial_tokio_via(url, counters, payload, plan, Via::Send)
}

fn redial_tokio_feed(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    redial_tokio_via(url, counters, payload, plan, Via::Feed)
}

fn redial_tokio_via(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
    via: Via,
) -> Result<Duration, BoxError> {
    let (url, counters) = (url.to_owned(), counters.clone());
    on_current_thread(async move {
        let (handle, mut events) = redial_tokio::builder(url).connect()?;
        wait_connected(&mut events).await?;
        // Keep the events flowing, as an application would.
        let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
        let elapsed = match via {
            Via::Send => timed!(
                &counters,
                plan,
                handle.send(Payload::binary(payload.clone())).await
            ),
            Via::Feed => timed!(
                &counters,
                plan,
                handle.feed(Payload::binary(payload.clone())).await
            ),
        };
        handle.close().await;
        let _ = drain.await;
        Ok(elapsed)
    })
}

async fn redial_async_std_run(
    builder: redial_async_std::Builder,
    counters: &Counters,
    payload: Bytes,
    plan: Plan,
    via: Via,
) -> Result<Duration, BoxError> {
    let (handle, mut events) = builder.connect()?;
    loop {
        match events.recv().await {
            Some(Event::Connected { .. }) => break,
            Some(_) => {}
            None => return Err("session closed before connecting".into()),
        }
    }
    let elapsed = match via {
        Via::Send => timed!(
            counters,
            plan,
            handle.send(Payload::binary(payload.clone())).await
        ),
        Via::Feed => timed!(
            counters,
            plan,
            handle.feed(Payload::binary(payload.clone())).await
        ),
    };
    handle.close().await;
    drop(events);
    Ok(elapsed)
}

/// The async-io baseline for redial-async-std: async-tungstenite's smol
/// connector (as redial-async-std dials), `ws.send(msg).await`.
fn plain_async_tungstenite(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    async_io::block_on(async {
        let (mut ws, _) = async_tungstenite::smol::connect_async(url).await?;
        let elapsed = timed!(
            counters.as_ref(),
            plan,
            ws.send(async_tungstenite::tungstenite::Message::Binary(
                payload.clone()
            ))
            .await
        );
        let _ = ws.close(None).await;
        Ok(elapsed)
    })
}

/// The driver and the sender on one executor thread, like the tokio
/// current-thread runs.
fn redial_async_std_same_thread(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    redial_async_std_same_thread_via(url, counters, payload, plan, Via::Send)
}

/// [`redial_async_std_same_thread`] with `handle.feed`.
fn redial_async_std_same_thread_feed(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    redial_async_std_same_thread_via(url, counters, payload, plan, Via::Feed)
}

fn redial_async_std_same_thread_via(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
    via: Via,
) -> Result<Duration, BoxError> {
    let executor = Arc::new(async_executor::Executor::new());
    let spawner = executor.clone();
    let runtime = redial_async_std::AsyncIo::with_spawner(move |task| spawner.spawn(task).detach());
    let builder = redial_async_std::Builder::new(runtime, url);
    async_io::block_on(executor.run(redial_async_std_run(builder, counters, payload, plan, via)))
}

/// The adapter's default: the driver on its built-in executor thread, the
/// sender on the main thread.
fn redial_async_std_builtin(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    async_io::block_on(redial_async_std_run(
        redial_async_std::builder(url),
        counters,
        payload,
        plan,
        Via::Send,
    ))
}

fn stream_tungstenite(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    use stream_tungstenite::tokio_tungstenite::tungstenite::Message;
    use stream_tungstenite::{ClientConfig, ConnectionEvent, WebSocketClient};
    let (url, counters) = (url.to_owned(), counters.clone());
    on_current_thread(async move {
        let client = Arc::new(
            WebSocketClient::builder(url)
                .config(ClientConfig::default().with_nodelay(true))
                .build(),
        );
        let mut states = client.subscribe_events();
        let runner = tokio::spawn({
            let client = client.clone();
            async move { client.run().await }
        });
        loop {
            match tokio::time::timeout(Duration::from_secs(10), states.recv()).await {
                Ok(Ok(ConnectionEvent::Connected { .. })) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err("stream-tungstenite did not connect".into()),
            }
        }
        // The supervisor publishes the sender right after `Connected`.
        let sender = loop {
            if let Some(sender) = client.sender().await {
                break sender;
            }
            tokio::task::yield_now().await;
        };
        let elapsed = timed!(
            &counters,
            plan,
            sender
                .send_async(Message::Binary(payload.clone()))
                .await
                .map_err(|e| format!("{e:?}"))
        );
        client.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(2), runner).await;
        Ok(elapsed)
    })
}

struct EzClient {
    connected: Option<tokio::sync::oneshot::Sender<()>>,
}

#[async_trait::async_trait]
impl ezsockets::ClientExt for EzClient {
    type Call = ();

    async fn on_text(&mut self, _text: ezsockets::Utf8Bytes) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    async fn on_binary(&mut self, _bytes: ezsockets::Bytes) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    async fn on_call(&mut self, _call: ()) -> Result<(), ezsockets::Error> {
        Ok(())
    }

    async fn on_connect(&mut self) -> Result<(), ezsockets::Error> {
        if let Some(tx) = self.connected.take() {
            let _ = tx.send(());
        }
        Ok(())
    }
}

/// ezsockets' tokio connector with `TCP_NODELAY` on (its own leaves Nagle on).
#[derive(Clone)]
struct NoDelayConnector {
    handle: enfync::builtin::native::TokioHandle,
}

#[async_trait::async_trait]
impl ezsockets::client::ClientConnector for NoDelayConnector {
    type Handle = enfync::builtin::native::TokioHandle;
    type Message = ezsockets_tungstenite::tungstenite::Message;
    type WSError = ezsockets_tungstenite::tungstenite::Error;
    type Socket = ezsockets_tungstenite::WebSocketStream<
        ezsockets_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    fn handle(&self) -> Self::Handle {
        self.handle.clone()
    }

    async fn connect(
        &self,
        config: &ezsockets::ClientConfig,
    ) -> Result<Self::Socket, Self::WSError> {
        let request = config.connect_http_request();
        let (socket, _) =
            ezsockets_tungstenite::connect_async_with_config(request, None, true).await?;
        Ok(socket)
    }
}

fn ezsockets_client(
    url: &str,
    counters: &Arc<Counters>,
    payload: Bytes,
    plan: Plan,
) -> Result<Duration, BoxError> {
    let (url, counters) = (url.to_owned(), counters.clone());
    on_current_thread(async move {
        let config = ezsockets::ClientConfig::new(url.as_str());
        let connector = NoDelayConnector {
            handle: tokio::runtime::Handle::current().into(),
        };
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let (client, mut future) = ezsockets::connect_with(
            move |_| EzClient {
                connected: Some(connected_tx),
            },
            config,
            connector,
        );
        tokio::time::timeout(Duration::from_secs(10), connected_rx)
            .await
            .map_err(|_| "ezsockets did not connect")??;
        let elapsed = timed!(
            &counters,
            plan,
            client.binary(payload.clone()).map_err(|e| e.to_string())
        );
        let _ = client.close(None);
        let _ = tokio::time::timeout(Duration::from_secs(2), future.extract()).await;
        Ok(elapsed)
    })
}
