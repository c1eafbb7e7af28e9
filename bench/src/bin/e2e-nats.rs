//! NATS subscription throughput on loopback: redial-tokio with `Nats`
//! against async-nats (its `websockets` feature), both subscribed over the
//! same nats-server's WebSocket listener, 1 KiB payloads.
//!
//! One nats-server (`redial_tests::third_party::NatsServer`, 127.0.0.1) serves
//! every run. The publisher is a raw TCP writer on the server's plain client
//! port, on the main thread: CONNECT once, then `PUB` frames written in
//! chunks of [`CHUNK`] messages from one prebuilt buffer, so it costs the
//! same for both subscribers and never is the bottleneck. It keeps at most
//! [`WINDOW`] messages ahead of what the subscriber has received, which
//! stays far below the server's slow-consumer limit, so nothing is dropped
//! and every message is counted.
//!
//! Each run connects a fresh subscriber on its own thread with a
//! current-thread tokio runtime (the counting loop a spawned task, as in
//! `e2e-throughput`), subscribes to a subject of its own, publishes one
//! probe on it from the same connection and waits for it: the server
//! handles a connection's operations in order, so the probe coming back
//! proves the subscription is in place. Then the publisher sends the
//! warm-up, waits until all of it arrived, and the clock runs from the
//! first measured publish until the subscriber received the last measured
//! message. Each round runs both clients, the order swapped every round so
//! neither always goes first; the report gives every round, the medians and
//! the ratio redial/async-nats of the medians. Each run also gives the
//! subscriber thread's on-CPU time per measured message (the whole client
//! runs on that thread), which queueing for a busy CPU does not inflate.
//!
//! | client | subscribes with | counts |
//! |---|---|---|
//! | redial-tokio (`Nats`) | `handle.subscribe(subject)` | `Event::Message` from `Events::recv` |
//! | async-nats 0.46 (`websockets`) | `client.subscribe(subject)` | `Message` from the `Subscriber` stream |
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-nats [-- --quick] [--messages N] [--warmup N] [--rounds N]
//! ```
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redial_bench::progress::{median, subscriber_failure, Finished, Plan, Progress};
use redial_bench::{load_average, Args};
use redial_core::{Event, Nats, Payload};
use redial_tests::third_party::nats::{NatsOptions, NatsServer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const MESSAGE_SIZE: usize = 1024;
/// Messages per publisher write.
const CHUNK: u64 = 500;
/// Messages the publisher may be ahead of the subscriber (8 MiB of
/// payload; nats-server closes a subscriber as a slow consumer at 64 MiB
/// pending).
const WINDOW: u64 = 8 * 1024;
/// The first byte of the probe payload; measured payloads start with `M`.
const PROBE: u8 = b'P';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Redial,
    AsyncNats,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Redial => "redial-tokio (Nats)",
            Client::AsyncNats => "async-nats 0.46 (websockets)",
        }
    }
}

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let plan = Plan::from_args(
        &args,
        CHUNK,
        if quick {
            (1_000, 5_000)
        } else {
            (20_000, 200_000)
        },
    );
    let rounds = args.number("--rounds", if quick { 2 } else { 5 }).max(1);
    println!(
        "e2e-nats: {} warm-up + {} measured messages of {MESSAGE_SIZE} B per run, {rounds} rounds; load average {}",
        plan.warmup,
        plan.messages,
        load_average()
    );
    // The server's keepalive would need the raw publisher to answer PINGs;
    // no run lasts anywhere near this long.
    let server = NatsServer::start(NatsOptions {
        ping_interval: Duration::from_secs(3600),
        ..NatsOptions::default()
    })?;
    let mut publisher = Publisher::connect(server.client_addr())?;
    let url = server.ws_url();

    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpus: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut run = 0u64;
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [Client::Redial, Client::AsyncNats]
        } else {
            [Client::AsyncNats, Client::Redial]
        };
        for client in order {
            run += 1;
            let subject = format!("bench.run{run}");
            let measured = measure(client, &url, &subject, &mut publisher, plan)
                .map_err(|e| format!("{} (round {round}): {e}", client.name()))?;
            let rate = plan.messages as f64 / measured.elapsed.as_secs_f64();
            let cpu = measured
                .cpu
                .map(|c| c.as_nanos() as f64 / plan.messages as f64);
            println!(
                "  round {round}  {:<30} {:>10.0} msg/s {:>8.1} MB/s  ({:.3} s)  {} CPU ns/msg",
                client.name(),
                rate,
                rate * MESSAGE_SIZE as f64 / 1e6,
                measured.elapsed.as_secs_f64(),
                cpu.map_or("?".to_owned(), |c| format!("{c:.0}"))
            );
            rates[client as usize].push(rate);
            if let Some(cpu) = cpu {
                cpus[client as usize].push(cpu);
            }
        }
    }
    let redial = median(&mut rates[Client::Redial as usize]);
    let async_nats = median(&mut rates[Client::AsyncNats as usize]);
    println!("medians over {rounds} rounds:");
    println!("  {:<39} {redial:>10.0} msg/s", Client::Redial.name());
    println!(
        "  {:<39} {async_nats:>10.0} msg/s",
        Client::AsyncNats.name()
    );
    println!("  ratio redial/async-nats {:.3}x", redial / async_nats);
    let redial_cpu = median(&mut cpus[Client::Redial as usize]);
    let async_nats_cpu = median(&mut cpus[Client::AsyncNats as usize]);
    if redial_cpu > 0.0 && async_nats_cpu > 0.0 {
        println!(
            "  subscriber thread CPU per message (median): redial {redial_cpu:.0} ns, async-nats {async_nats_cpu:.0} ns, ratio async-nats/redial {:.3}x",
            async_nats_cpu / redial_cpu
        );
    }
    println!("load average after: {}", load_average());
    Ok(())
}

/// One run: a fresh subscriber of `client` on `subject`, warm-up, then the
/// measured messages; the time from the first measured publish to the last
/// measured message received.
fn measure(
    client: Client,
    url: &str,
    subject: &str,
    publisher: &mut Publisher,
    plan: Plan,
) -> Result<Measured, BoxError> {
    let progress = Arc::new(Progress::new(plan.warmup, CHUNK));
    let total = plan.warmup + plan.messages;
    let subscriber = spawn_subscriber(client, url, subject, total, progress.clone())?;
    if !progress.wait(|p| p.ready)
        || !publisher.publish(subject, plan.warmup, &progress)?
        || !progress.wait(|p| p.received >= plan.warmup)
    {
        return Err(subscriber_failure(subscriber));
    }
    let start = Instant::now();
    if !publisher.publish(subject, plan.messages, &progress)? {
        return Err(subscriber_failure(subscriber));
    }
    let (end, cpu) = subscriber
        .join()
        .map_err(|_| "the subscriber thread panicked")??;
    Ok(Measured {
        elapsed: end - start,
        cpu,
    })
}

/// One run's figures.
struct Measured {
    /// First measured publish to last measured message received.
    elapsed: Duration,
    /// On-CPU time of the subscriber's thread (the whole client: its
    /// runtime, socket reads, decoding, counting) over the measured
    /// messages; none where `/proc/thread-self/schedstat` is missing.
    cpu: Option<Duration>,
}

/// Runs the subscriber on its own thread and current-thread runtime;
/// returns when it received `total` messages after its probe, with the
/// instant of the last one.
fn spawn_subscriber(
    client: Client,
    url: &str,
    subject: &str,
    total: u64,
    progress: Arc<Progress>,
) -> Result<JoinHandle<Result<Finished, BoxError>>, BoxError> {
    let url = url.to_owned();
    let subject = subject.to_owned();
    let thread = std::thread::Builder::new()
        .name("subscriber".into())
        .spawn(move || -> Result<Finished, BoxError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(async {
                let task = match client {
                    Client::Redial => tokio::spawn(redial(url, subject, total, progress.clone())),
                    Client::AsyncNats => {
                        tokio::spawn(async_nats(url, subject, total, progress.clone()))
                    }
                };
                task.await?
            });
            progress.set_ended();
            outcome
        })?;
    Ok(thread)
}

fn probe() -> Bytes {
    Bytes::from(vec![PROBE; MESSAGE_SIZE])
}

/// Checks one measured message: 1 KiB, not the probe.
fn check(payload: &[u8]) -> Result<(), BoxError> {
    if payload.len() != MESSAGE_SIZE || payload.first() == Some(&PROBE) {
        return Err(format!("unexpected payload of {} B", payload.len()).into());
    }
    Ok(())
}

async fn redial(
    url: String,
    subject: String,
    total: u64,
    progress: Arc<Progress>,
) -> Result<Finished, BoxError> {
    let (handle, mut events) = redial_tokio::builder(url)
        .protocol(Nats::new().connection_name("bench-redial"))
        .connect()?;
    handle.subscribe(subject.as_str()).await?;
    handle
        .publish(subject.as_str(), Payload::binary(probe()))
        .await?;
    let mut probed = false;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message { payload, .. } if !probed => {
                probed = payload.bytes().first() == Some(&PROBE);
                if probed {
                    progress.set_ready();
                }
            }
            Event::Message { payload, .. } => {
                check(payload.bytes())?;
                if progress.received(total) == total {
                    let end = Instant::now();
                    let cpu = progress.measured_cpu();
                    handle.close().await;
                    return Ok((end, cpu));
                }
            }
            Event::Disconnected { .. } | Event::Closed { .. } => {
                return Err(format!("{event:?}").into());
            }
            _ => {}
        }
    }
    Err("events ended".into())
}

async fn async_nats(
    url: String,
    subject: String,
    total: u64,
    progress: Arc<Progress>,
) -> Result<Finished, BoxError> {
    let client = async_nats::ConnectOptions::new()
        .name("bench-async-nats")
        .connect(url)
        .await?;
    let mut subscriber = client.subscribe(subject.clone()).await?;
    client.publish(subject, probe()).await?;
    client.flush().await?;
    match subscriber.next().await {
        Some(m) if m.payload.first() == Some(&PROBE) => progress.set_ready(),
        Some(_) => return Err("a message before the probe".into()),
        None => return Err("subscription ended".into()),
    }
    while let Some(message) = subscriber.next().await {
        check(&message.payload)?;
        if progress.received(total) == total {
            let end = Instant::now();
            let cpu = progress.measured_cpu();
            let _ = subscriber.unsubscribe().await;
            drop(client);
            return Ok((end, cpu));
        }
    }
    Err("subscription ended".into())
}

/// A raw NATS publisher on the plain TCP client port.
struct Publisher {
    stream: TcpStream,
    payload: Vec<u8>,
}

impl Publisher {
    fn connect(addr: SocketAddr) -> Result<Publisher, BoxError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut info = String::new();
        BufReader::new(&stream).read_line(&mut info)?;
        if !info.starts_with("INFO ") {
            return Err(format!("expected INFO, got {info:?}").into());
        }
        let mut publisher = Publisher {
            stream,
            payload: vec![b'M'; MESSAGE_SIZE],
        };
        publisher.stream.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"bench-publisher\"}\r\nPING\r\n",
        )?;
        // The PONG says the CONNECT was taken (a refusal is an -ERR).
        let mut reply = String::new();
        BufReader::new(&publisher.stream).read_line(&mut reply)?;
        if reply.trim_end() != "PONG" {
            return Err(format!("expected PONG, got {reply:?}").into());
        }
        Ok(publisher)
    }

    /// Publishes `count` messages on `subject`, a chunk at a time, staying
    /// at most [`WINDOW`] messages ahead of `progress`. False if the
    /// subscriber ended first.
    fn publish(
        &mut self,
        subject: &str,
        count: u64,
        progress: &Progress,
    ) -> Result<bool, BoxError> {
        let mut frame = format!("PUB {subject} {MESSAGE_SIZE}\r\n").into_bytes();
        frame.extend_from_slice(&self.payload);
        frame.extend_from_slice(b"\r\n");
        let chunk = frame.repeat(CHUNK as usize);
        let base = progress.count();
        let mut sent = 0;
        while sent < count {
            let n = (count - sent).min(CHUNK);
            let ahead = base + sent + n;
            if !progress.wait(|p| ahead <= p.received + WINDOW) {
                return Ok(false);
            }
            self.stream.write_all(&chunk[..frame.len() * n as usize])?;
            sent += n;
        }
        self.stream.flush()?;
        Ok(true)
    }
}
