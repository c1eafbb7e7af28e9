//! Socket.IO event throughput on loopback: redial-tokio with `SocketIo`
//! against rust_socketio 0.6 (its `async` client), both receiving the same
//! events from the same Node Socket.IO 4.8 server, small and 1 KiB events.
//!
//! One server, `bench/socketio/emitter.mjs` (`npm ci` in `bench/socketio`
//! first), serves every run on 127.0.0.1: WebSocket transport only, no
//! compression, no connection state recovery, so both clients read
//! byte-identical frames. A client emits `go` (count, size); the server
//! emits `count` events `e`, each with one string argument of `size` bytes,
//! as fast as the client reads them (it refills Engine.IO's write buffer on
//! each drain, so the socket's kernel buffers hold the backlog, and corks
//! the TCP socket per flush, so one write carries a flush's frames), then
//! `done` (count).
//!
//! Each run connects a fresh client on its own thread with a current-thread
//! tokio runtime (both clients spawn their tasks there), asks for the
//! warm-up and waits for its `done`; the clock runs from the measured `go`
//! to the measured `done`, and every event in between is counted and its
//! size checked. Each round runs both clients per size, the order swapped
//! every round so neither always goes first; the report gives every run,
//! the medians and the ratio redial/rust_socketio of the medians. Each run
//! also gives the client thread's on-CPU time per event (the whole client
//! runs on that thread), which queueing for a busy CPU does not inflate,
//! and how busy the server's event loop was (its main thread's on-CPU time
//! over the run's wall time): near 100% means the server, not the client,
//! set the pace.
//!
//! | client | transport | counts |
//! |---|---|---|
//! | redial-tokio (`SocketIo`) | WebSocket (the only one it speaks) | `Event::Message` on channel `e` from `Events::recv` |
//! | rust_socketio 0.6 (`async`) | `TransportType::Websocket`: no polling handshake | its `on("e")` callback |
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-sio-client [-- --quick] [--events N] [--warmup N] [--rounds N] [--only redial|rust_socketio]
//! ```
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use redial_bench::progress::median;
use redial_bench::{load_average, socketio_script, Args};
use redial_core::{Event, Payload, SocketIo};
use rust_socketio::asynchronous::ClientBuilder;
use rust_socketio::TransportType;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The event sizes measured: the string argument's bytes.
const SIZES: [usize; 2] = [16, 1024];
/// How long one run may take before it fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: u64,
    events: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Redial,
    RustSocketio,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Redial => "redial-tokio (SocketIo)",
            Client::RustSocketio => "rust_socketio 0.6 (async)",
        }
    }
}

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let plan = Plan {
        warmup: args.number("--warmup", if quick { 1_000 } else { 20_000 }),
        events: args
            .number("--events", if quick { 10_000 } else { 200_000 })
            .max(1),
    };
    let rounds = args.number("--rounds", if quick { 2 } else { 5 }).max(1);
    // One client alone, for a profiler.
    let only = match args.value("--only") {
        None => None,
        Some("redial") => Some(Client::Redial),
        Some("rust_socketio") => Some(Client::RustSocketio),
        Some(other) => return Err(format!("--only redial|rust_socketio, not {other:?}").into()),
    };
    println!(
        "e2e-sio-client: {} warm-up + {} measured events per run, sizes {SIZES:?} B, {rounds} rounds; load average {}",
        plan.warmup,
        plan.events,
        load_average()
    );
    let server = Emitter::start()?;
    let mut rates = vec![[Vec::new(), Vec::new()]; SIZES.len()];
    let mut cpus = vec![[Vec::new(), Vec::new()]; SIZES.len()];
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [Client::Redial, Client::RustSocketio]
        } else {
            [Client::RustSocketio, Client::Redial]
        };
        for (s, &size) in SIZES.iter().enumerate() {
            for client in order.into_iter().filter(|c| only.is_none_or(|o| o == *c)) {
                let m = measure(client, &server, size, plan)
                    .map_err(|e| format!("{} ({size} B, round {round}): {e}", client.name()))?;
                let rate = plan.events as f64 / m.elapsed.as_secs_f64();
                let per_event =
                    |d: Option<Duration>| d.map(|d| d.as_nanos() as f64 / plan.events as f64);
                let cpu = per_event(m.cpu);
                let busy = m
                    .server_cpu
                    .map(|d| 100.0 * d.as_secs_f64() / m.elapsed.as_secs_f64());
                println!(
                    "  round {round} {size:>5} B  {:<26} {rate:>9.0} ev/s  ({:.3} s)  client {} CPU ns/ev  server loop {} busy",
                    client.name(),
                    m.elapsed.as_secs_f64(),
                    cpu.map_or("?".to_owned(), |c| format!("{c:.0}")),
                    busy.map_or("?".to_owned(), |b| format!("{b:.0}%")),
                );
                rates[s][client as usize].push(rate);
                if let Some(cpu) = cpu {
                    cpus[s][client as usize].push(cpu);
                }
            }
        }
    }
    println!("medians over {rounds} rounds:");
    for (s, size) in SIZES.iter().enumerate() {
        let redial = median(&mut rates[s][Client::Redial as usize]);
        let other = median(&mut rates[s][Client::RustSocketio as usize]);
        let redial_cpu = median(&mut cpus[s][Client::Redial as usize]);
        let other_cpu = median(&mut cpus[s][Client::RustSocketio as usize]);
        println!(
            "  {size:>5} B  redial {redial:>9.0} ev/s  rust_socketio {other:>9.0} ev/s  ratio redial/rust_socketio {}",
            ratio(redial, other)
        );
        if redial_cpu > 0.0 && other_cpu > 0.0 {
            println!(
                "           client thread CPU per event: redial {redial_cpu:.0} ns, rust_socketio {other_cpu:.0} ns, ratio rust_socketio/redial {}",
                ratio(other_cpu, redial_cpu)
            );
        }
    }
    server.stop()?;
    println!("load average after: {}", load_average());
    Ok(())
}

/// `a / b`, or a dash when a client did not run (`--only`).
fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.3}x", a / b)
    } else {
        "-".to_owned()
    }
}

/// One run's figures.
struct Measured {
    /// The measured `go` emitted to its `done` received.
    elapsed: Duration,
    /// On-CPU time of the client's thread (its runtime, socket reads,
    /// decoding, counting) over the measured events; none where
    /// `/proc/thread-self/schedstat` is missing.
    cpu: Option<Duration>,
    /// On-CPU time of the server's main thread (Node's event loop) over
    /// the same span.
    server_cpu: Option<Duration>,
}

/// On-CPU time of a thread, from the scheduler's own nanosecond account
/// (`/proc/<path>/schedstat`, first field).
fn schedstat(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{path}/schedstat")).ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Both clients' CPU clocks at one instant: this thread's and the
/// server's main thread's.
#[derive(Clone, Copy)]
struct Clocks {
    at: Instant,
    cpu: Option<Duration>,
    server: Option<Duration>,
}

impl Clocks {
    fn now(server_pid: u32) -> Clocks {
        Clocks {
            at: Instant::now(),
            cpu: schedstat("thread-self"),
            server: schedstat(&server_pid.to_string()),
        }
    }

    fn since(self, start: Clocks) -> Measured {
        let diff = |a: Option<Duration>, b: Option<Duration>| a?.checked_sub(b?);
        Measured {
            elapsed: self.at - start.at,
            cpu: diff(self.cpu, start.cpu),
            server_cpu: diff(self.server, start.server),
        }
    }
}

/// A run: a fresh `client` on its own thread and current-thread runtime.
fn measure(
    client: Client,
    server: &Emitter,
    size: usize,
    plan: Plan,
) -> Result<Measured, BoxError> {
    let port = server.port;
    let pid = server.child.id();
    let thread = std::thread::Builder::new().name("client".into()).spawn(
        move || -> Result<Measured, BoxError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let run = async move {
                    match client {
                        Client::Redial => redial(port, pid, size, plan).await,
                        Client::RustSocketio => rust_socketio(port, pid, size, plan).await,
                    }
                };
                tokio::time::timeout(RUN_LIMIT, tokio::spawn(run))
                    .await
                    .map_err(|_| format!("no result within {RUN_LIMIT:?}"))??
            })
        },
    )?;
    thread.join().map_err(|_| "the client thread panicked")?
}

/// The `go` arguments.
fn go_args(count: u64, size: usize) -> String {
    format!("[{count},{size}]")
}

async fn redial(port: u16, pid: u32, size: usize, plan: Plan) -> Result<Measured, BoxError> {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (handle, mut events) = redial_tokio::builder(url)
        .protocol(SocketIo::new())
        .connect()?;
    // Subscribing is local: before `go`, so no event is dropped.
    handle.subscribe("e").await?;
    handle.subscribe("done").await?;
    // `["x...x"]`: the argument array of one string of `size` bytes.
    let expected = size + 4;
    let mut receive = async |count: u64| -> Result<(), BoxError> {
        handle
            .publish("go", Payload::text(go_args(count, size)))
            .await?;
        let mut n = 0u64;
        while let Some(event) = events.recv().await {
            match event {
                Event::Message {
                    channel: Some(channel),
                    payload,
                    ..
                } => match channel.as_str() {
                    "e" if payload.bytes().len() == expected => n += 1,
                    "done" if n == count && payload.as_text() == Some(&format!("[{count}]")) => {
                        return Ok(())
                    }
                    _ => {
                        return Err(format!(
                            "{channel} after {n} events: {} B",
                            payload.bytes().len()
                        )
                        .into())
                    }
                },
                Event::Disconnected { .. } | Event::Closed { .. } => {
                    return Err(format!("{event:?}").into());
                }
                _ => {}
            }
        }
        Err("events ended".into())
    };
    receive(plan.warmup).await?;
    let start = Clocks::now(pid);
    receive(plan.events).await?;
    let measured = Clocks::now(pid).since(start);
    handle.close().await;
    Ok(measured)
}

async fn rust_socketio(port: u16, pid: u32, size: usize, plan: Plan) -> Result<Measured, BoxError> {
    use rust_socketio::Payload;
    // Events of the expected shape, and of any other.
    let good = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Payload>();
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (g, b) = (good.clone(), bad.clone());
    let client = ClientBuilder::new(format!("http://127.0.0.1:{port}/"))
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on("e", move |payload, _| {
            let ok = matches!(&payload, Payload::Text(args)
                if args.len() == 1 && args[0].as_str().map(str::len) == Some(size));
            let counter = if ok { g.clone() } else { b.clone() };
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            .boxed()
        })
        .on("done", move |payload, _| {
            let done = done_tx.clone();
            async move {
                let _ = done.send(payload);
            }
            .boxed()
        })
        .on(rust_socketio::Event::Connect, move |_, _| {
            let connected = connected_tx.clone();
            async move {
                let _ = connected.send(());
            }
            .boxed()
        })
        .connect()
        .await?;
    // `connect` returns once the CONNECT packet is sent; the server drops
    // an event that arrives before it has joined the socket to the
    // namespace, so `go` waits for the server's reply.
    connected_rx.recv().await.ok_or("the client ended")?;
    let mut receive = async |count: u64| -> Result<(), BoxError> {
        good.store(0, Ordering::Relaxed);
        client
            .emit("go", Payload::Text(vec![count.into(), size.into()]))
            .await?;
        let done = done_rx.recv().await.ok_or("the client ended")?;
        let n = good.load(Ordering::Relaxed);
        let wrong = bad.load(Ordering::Relaxed);
        match done {
            Payload::Text(args)
                if n == count && wrong == 0 && args == [serde_json::Value::from(count)] =>
            {
                Ok(())
            }
            other => Err(format!("done {other:?} after {n} events and {wrong} malformed").into()),
        }
    };
    receive(plan.warmup).await?;
    let start = Clocks::now(pid);
    receive(plan.events).await?;
    let measured = Clocks::now(pid).since(start);
    client.disconnect().await?;
    Ok(measured)
}

/// `bench/socketio/emitter.mjs` on Node, listening on 127.0.0.1.
struct Emitter {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
}

impl Emitter {
    fn start() -> Result<Emitter, BoxError> {
        let script = socketio_script("emitter.mjs")?;
        let mut child = Command::new("node")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut emitter = Emitter {
            child,
            stdin,
            port: 0,
        };
        // The server prints its port or exits (its stdout then ends).
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        emitter.port = line
            .trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("the server said {line:?}"))?
            .parse()?;
        Ok(emitter)
    }

    /// Asks the server to close and waits for it to exit.
    fn stop(mut self) -> Result<(), BoxError> {
        if let Some(mut stdin) = self.stdin.take() {
            writeln!(stdin, "stop")?;
        }
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("the server exited with {status}").into());
        }
        Ok(())
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        // Stopped already, or an error cut the run short: make sure it goes.
        if self.stdin.is_some() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_needs_both_figures() {
        assert_eq!(ratio(3.0, 2.0), "1.500x");
        assert_eq!(ratio(3.0, 0.0), "-");
    }

    #[test]
    fn go_arguments_are_a_json_array() {
        assert_eq!(go_args(200_000, 1024), "[200000,1024]");
    }
}
