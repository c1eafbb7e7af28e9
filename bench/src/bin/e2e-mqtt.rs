//! MQTT subscription throughput on loopback: redial-tokio with `Mqtt`
//! against rumqttc (its `websocket` feature), both subscribed over the same
//! mosquitto's WebSocket listener, at QoS 0 and QoS 1, with 1 KiB and 32 B
//! payloads.
//!
//! What is measured is the subscriber side: messages per second the client
//! under test receives (and, at QoS 1, acknowledges with PUBACK, which the
//! broker needs before it sends more than its in-flight window).
//!
//! One mosquitto (`redial_tests::third_party::mosquitto`, 127.0.0.1, its
//! default limits) serves every run. The publisher is a raw MQTT 3.1.1
//! writer on the broker's plain TCP listener, on the main thread: CONNECT
//! once, then PUBLISH packets at the run's QoS written [`CHUNK`] at a time;
//! a second thread reads and drops the broker's PUBACKs. It costs the same
//! for both subscribers and stays at most [`WINDOW`] messages ahead of what
//! the subscriber has received, below what mosquitto queues per client
//! (1,000 messages plus 20 in flight by default), so nothing is dropped
//! and every message is counted.
//!
//! Each run connects a fresh subscriber (a new client id, a persistent
//! session like the one redial's `Mqtt` always asks for) on its own thread
//! with a current-thread tokio runtime, subscribes to a topic of its own
//! at the run's QoS and waits for the SUBACK. Then the publisher sends the
//! warm-up, waits until all of it arrived, and the clock runs from the
//! first measured publish until the subscriber received the last measured
//! message. Each round runs both clients, the order swapped every round so
//! neither always goes first; the report gives every round, the medians and
//! the ratio redial/rumqttc of the medians per QoS and payload size. Each
//! run also gives the subscriber thread's on-CPU time per measured message
//! (the whole client runs on that thread) and the broker's (mosquitto is
//! single-threaded, and on loopback it is what sets the pace), which
//! queueing for a busy CPU does not inflate: a client that makes the
//! broker work harder per message (one TCP segment per PUBACK, say) shows
//! there.
//!
//! | client | subscribes with | counts |
//! |---|---|---|
//! | redial-tokio (`Mqtt`, 3.1.1) | `handle.subscribe_with(topic, qos)` | `Event::Message` from `Events::recv` |
//! | rumqttc 0.25 (`websocket`, 3.1.1) | `client.subscribe(topic, qos)` | `Incoming::Publish` from `EventLoop::poll` |
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-mqtt [-- --quick] [--messages N] [--warmup N] [--rounds N] [--qos 0|1] [--size BYTES]
//! ```
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redial_bench::progress::{
    main_thread_cpu, median, subscriber_failure, Finished, Plan, Progress,
};
use redial_bench::{load_average, Args};
use redial_core::mqtt::QoS;
use redial_core::{Event, Mqtt, Payload};
use redial_tests::third_party::mosquitto::{Mosquitto, MosquittoOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Payload sizes measured, in bytes.
const SIZES: [usize; 2] = [1024, 32];
/// Messages per publisher write.
const CHUNK: u64 = 100;
/// Messages the publisher may be ahead of the subscriber: under
/// mosquitto's default per-client queue (1,000 messages) plus its default
/// in-flight window (20), past which it drops messages for the client.
const WINDOW: u64 = 500;
/// A run that takes longer has lost messages (or a client is stuck).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// One QoS and payload size.
#[derive(Debug, Clone, Copy)]
struct Case {
    qos: u8,
    size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Redial,
    Rumqttc,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Redial => "redial-tokio (Mqtt)",
            Client::Rumqttc => "rumqttc 0.25 (websocket)",
        }
    }
}

/// Medians of one case.
struct Summary {
    case: Case,
    rates: [f64; 2],
    cpus: [f64; 2],
    broker_cpus: [f64; 2],
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
            (10_000, 100_000)
        },
    );
    let rounds = args.number("--rounds", if quick { 2 } else { 5 }).max(1);
    // One QoS or one payload size only, for a profile.
    let qos_only = args.value("--qos").and_then(|q| q.parse::<u8>().ok());
    let sizes = match args.value("--size").and_then(|s| s.parse::<usize>().ok()) {
        Some(size) => vec![size],
        None => SIZES.to_vec(),
    };
    println!(
        "e2e-mqtt: {} warm-up + {} measured messages per run, {sizes:?} B payloads, {rounds} rounds; load average {}",
        plan.warmup,
        plan.messages,
        load_average()
    );
    let broker = Mosquitto::start(MosquittoOptions::default())?;
    let mut publisher = Publisher::connect(broker.tcp_addr())?;
    let url = broker.ws_url();
    let broker_pid = broker.pid();

    let mut summaries = Vec::new();
    let mut run = 0u64;
    for qos in [0u8, 1]
        .into_iter()
        .filter(|q| qos_only.is_none_or(|o| o == *q))
    {
        for &size in &sizes {
            let case = Case { qos, size };
            println!("QoS {qos}, {size} B payloads:");
            let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            let mut cpus: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            let mut broker_cpus: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for round in 1..=rounds {
                let order = if round % 2 == 1 {
                    [Client::Redial, Client::Rumqttc]
                } else {
                    [Client::Rumqttc, Client::Redial]
                };
                for client in order {
                    run += 1;
                    let measured =
                        measure(client, &url, broker_pid, run, case, &mut publisher, plan)
                            .map_err(|e| {
                                format!(
                                    "{} (QoS {qos}, {size} B, round {round}): {e}\nbroker log:\n{}",
                                    client.name(),
                                    broker.log()
                                )
                            })?;
                    let rate = plan.messages as f64 / measured.elapsed.as_secs_f64();
                    let per_message =
                        |d: Option<Duration>| d.map(|c| c.as_nanos() as f64 / plan.messages as f64);
                    let cpu = per_message(measured.cpu);
                    let broker_cpu = per_message(measured.broker_cpu);
                    let shown = |v: Option<f64>| v.map_or("?".to_owned(), |c| format!("{c:.0}"));
                    println!(
                        "  round {round}  {:<26} {:>10.0} msg/s  ({:.3} s)  CPU ns/msg: subscriber {}, broker {}",
                        client.name(),
                        rate,
                        measured.elapsed.as_secs_f64(),
                        shown(cpu),
                        shown(broker_cpu)
                    );
                    rates[client as usize].push(rate);
                    cpus[client as usize].extend(cpu);
                    broker_cpus[client as usize].extend(broker_cpu);
                }
            }
            summaries.push(Summary {
                case,
                rates: [median(&mut rates[0]), median(&mut rates[1])],
                cpus: [median(&mut cpus[0]), median(&mut cpus[1])],
                broker_cpus: [median(&mut broker_cpus[0]), median(&mut broker_cpus[1])],
            });
        }
    }
    println!(
        "medians over {rounds} rounds (msg/s received; CPU ns per message, redial / rumqttc):"
    );
    println!(
        "  {:<5} {:>7} {:>12} {:>12} {:>8}   {:>17} {:>17}",
        "QoS", "payload", "redial", "rumqttc", "ratio", "subscriber CPU", "broker CPU"
    );
    for s in &summaries {
        let [redial, rumqttc] = s.rates;
        let [redial_cpu, rumqttc_cpu] = s.cpus;
        let [redial_broker, rumqttc_broker] = s.broker_cpus;
        println!(
            "  {:<5} {:>5} B {:>12.0} {:>12.0} {:>7.3}x   {:>8.0} / {:>6.0} {:>8.0} / {:>6.0}",
            s.case.qos,
            s.case.size,
            redial,
            rumqttc,
            redial / rumqttc,
            redial_cpu,
            rumqttc_cpu,
            redial_broker,
            rumqttc_broker
        );
    }
    println!("load average after: {}", load_average());
    Ok(())
}

/// One run: a fresh subscriber of `client` on a topic of its own, warm-up,
/// then the measured messages; the time from the first measured publish to
/// the last measured message received.
#[allow(clippy::too_many_arguments)]
fn measure(
    client: Client,
    url: &str,
    broker_pid: u32,
    run: u64,
    case: Case,
    publisher: &mut Publisher,
    plan: Plan,
) -> Result<Measured, BoxError> {
    let progress = Arc::new(Progress::new(plan.warmup, CHUNK));
    let total = plan.warmup + plan.messages;
    let topic = format!("bench/run{run}");
    let subscriber = spawn_subscriber(client, url, run, &topic, case, total, progress.clone())?;
    if !progress.wait(|p| p.ready)
        || !publisher.publish(&topic, case, plan.warmup, &progress)?
        || !progress.wait(|p| p.received >= plan.warmup)
    {
        return Err(subscriber_failure(subscriber));
    }
    let start = Instant::now();
    let broker_start = main_thread_cpu(broker_pid);
    if !publisher.publish(&topic, case, plan.messages, &progress)? {
        return Err(subscriber_failure(subscriber));
    }
    let (end, cpu) = subscriber
        .join()
        .map_err(|_| "the subscriber thread panicked")??;
    let broker_cpu = match (broker_start, main_thread_cpu(broker_pid)) {
        (Some(a), Some(b)) => b.checked_sub(a),
        _ => None,
    };
    Ok(Measured {
        elapsed: end - start,
        cpu,
        broker_cpu,
    })
}

/// One run's figures.
struct Measured {
    /// First measured publish to last measured message received.
    elapsed: Duration,
    /// On-CPU time of the subscriber's thread (the whole client: its
    /// runtime, socket reads, decoding, acknowledging, counting) over the
    /// measured messages; none where `/proc/thread-self/schedstat` is
    /// missing.
    cpu: Option<Duration>,
    /// The broker's on-CPU time over the same span (to the subscriber
    /// thread's end, a few microseconds later).
    broker_cpu: Option<Duration>,
}

/// Runs the subscriber on its own thread and current-thread runtime;
/// returns when it received `total` messages, with the instant of the last
/// one, or fails after [`RUN_TIMEOUT`].
fn spawn_subscriber(
    client: Client,
    url: &str,
    run: u64,
    topic: &str,
    case: Case,
    total: u64,
    progress: Arc<Progress>,
) -> Result<JoinHandle<Result<Finished, BoxError>>, BoxError> {
    let url = url.to_owned();
    let topic = topic.to_owned();
    let client_id = format!("bench-sub-{run}");
    let thread = std::thread::Builder::new()
        .name("subscriber".into())
        .spawn(move || -> Result<Finished, BoxError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(async {
                let sub = Subscriber {
                    url,
                    client_id,
                    topic,
                    case,
                    total,
                    progress: progress.clone(),
                };
                let task = match client {
                    Client::Redial => tokio::spawn(sub.redial()),
                    Client::Rumqttc => tokio::spawn(sub.rumqttc()),
                };
                match tokio::time::timeout(RUN_TIMEOUT, task).await {
                    Ok(joined) => joined?,
                    Err(_) => Err(format!(
                        "no end within {RUN_TIMEOUT:?} ({} of {total} received)",
                        progress.count()
                    )
                    .into()),
                }
            });
            progress.set_ended();
            outcome
        })?;
    Ok(thread)
}

/// Checks one message: the run's payload size.
fn check(payload: &[u8], case: Case) -> Result<(), BoxError> {
    if payload.len() != case.size {
        return Err(format!("unexpected payload of {} B", payload.len()).into());
    }
    Ok(())
}

/// What one subscriber task needs.
struct Subscriber {
    url: String,
    client_id: String,
    topic: String,
    case: Case,
    total: u64,
    progress: Arc<Progress>,
}

impl Subscriber {
    async fn redial(self) -> Result<Finished, BoxError> {
        let qos = if self.case.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mqtt = Mqtt::builder(self.client_id.as_str())
            .subscribe_qos(qos)
            .build()?;
        let (handle, mut events) = redial_tokio::builder(self.url).protocol(mqtt).connect()?;
        // An empty spec: the builder's subscribe QoS.
        handle
            .subscribe_with(self.topic.as_str(), Payload::text(""))
            .await?;
        while let Some(event) = events.recv().await {
            match event {
                Event::Subscribed { .. } => self.progress.set_ready(),
                Event::Message { payload, .. } => {
                    check(payload.bytes(), self.case)?;
                    if self.progress.received(self.total) == self.total {
                        let end = Instant::now();
                        let cpu = self.progress.measured_cpu();
                        handle.close().await;
                        return Ok((end, cpu));
                    }
                }
                Event::SubscribeFailed { .. }
                | Event::Disconnected { .. }
                | Event::Closed { .. } => {
                    return Err(format!("{event:?}").into());
                }
                _ => {}
            }
        }
        Err("events ended".into())
    }

    async fn rumqttc(self) -> Result<Finished, BoxError> {
        use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, NetworkOptions, Transport};
        let qos = if self.case.qos == 0 {
            rumqttc::QoS::AtMostOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        };
        // With the `websocket` transport the host is the whole URL (the
        // port is read from it).
        let mut options = MqttOptions::new(self.client_id.as_str(), self.url.as_str(), 0);
        options
            .set_transport(Transport::Ws)
            .set_keep_alive(Duration::from_secs(30))
            // A persistent session, as redial's `Mqtt` asks for.
            .set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        // Nagle off, like redial-tokio: PUBACKs leave at once.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        // Queued until the event loop has connected.
        client.subscribe(self.topic.as_str(), qos).await?;
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Incoming::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err("SUBACK failure".into());
                    }
                    self.progress.set_ready();
                }
                Event::Incoming(Incoming::Publish(publish)) => {
                    check(&publish.payload, self.case)?;
                    if self.progress.received(self.total) == self.total {
                        let end = Instant::now();
                        let cpu = self.progress.measured_cpu();
                        return Ok((end, cpu));
                    }
                }
                _ => {}
            }
        }
    }
}

/// A raw MQTT 3.1.1 publisher on the broker's plain TCP listener.
struct Publisher {
    stream: TcpStream,
    packet_id: u16,
    /// The packets of one write, rebuilt per write (packet ids differ).
    buf: Vec<u8>,
    /// Reads and drops the broker's PUBACKs until the stream closes.
    drain: Option<JoinHandle<()>>,
}

impl Publisher {
    fn connect(addr: SocketAddr) -> Result<Publisher, BoxError> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let client_id = b"bench-publisher";
        let mut body = Vec::new();
        // Protocol name, level 4 (3.1.1), Clean Session, no keepalive (no
        // run lasts long enough to need PINGREQs).
        body.extend_from_slice(b"\x00\x04MQTT\x04\x02\x00\x00");
        body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
        body.extend_from_slice(client_id);
        let mut connect = vec![0x10];
        remaining_length(body.len(), &mut connect);
        connect.extend_from_slice(&body);
        stream.write_all(&connect)?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack)?;
        if connack != [0x20, 0x02, 0x00, 0x00] {
            return Err(format!("expected CONNACK accepted, got {connack:02x?}").into());
        }
        let mut reader = stream.try_clone()?;
        let drain = std::thread::Builder::new()
            .name("puback-drain".into())
            .spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            })?;
        Ok(Publisher {
            stream,
            packet_id: 0,
            buf: Vec::new(),
            drain: Some(drain),
        })
    }

    /// Publishes `count` messages of the case's size and QoS on `topic`, a
    /// chunk at a time, staying at most [`WINDOW`] messages ahead of
    /// `progress`. False if the subscriber ended first.
    fn publish(
        &mut self,
        topic: &str,
        case: Case,
        count: u64,
        progress: &Progress,
    ) -> Result<bool, BoxError> {
        let payload = vec![b'M'; case.size];
        let base = progress.count();
        let mut sent = 0;
        while sent < count {
            let n = (count - sent).min(CHUNK);
            let ahead = base + sent + n;
            if !progress.wait(|p| ahead <= p.received + WINDOW) {
                return Ok(false);
            }
            self.buf.clear();
            for _ in 0..n {
                self.packet_id = self.packet_id.checked_add(1).unwrap_or(1);
                encode_publish(topic, case.qos, self.packet_id, &payload, &mut self.buf);
            }
            self.stream.write_all(&self.buf)?;
            sent += n;
        }
        self.stream.flush()?;
        Ok(true)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

/// A PUBLISH packet: QoS 0 or 1, not retained, not DUP.
fn encode_publish(topic: &str, qos: u8, packet_id: u16, payload: &[u8], out: &mut Vec<u8>) {
    let id_len = if qos > 0 { 2 } else { 0 };
    out.push(0x30 | (qos << 1));
    remaining_length(2 + topic.len() + id_len + payload.len(), out);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// MQTT's variable-length "remaining length": 7 bits a byte, low first.
fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        if len == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redial_core::mqtt::{Decoder, Packet, Version};

    #[test]
    fn the_raw_publishes_decode_as_mqtt() {
        let mut buf = Vec::new();
        encode_publish("bench/run1", 1, 7, &[b'M'; 1024], &mut buf);
        encode_publish("bench/run1", 0, 8, &[b'M'; 32], &mut buf);
        let mut decoder = Decoder::new(Version::V311, 1 << 20);
        decoder.push(&buf);
        let Ok(Some(Packet::Publish(first))) = decoder.next_packet() else {
            panic!("not a PUBLISH");
        };
        assert_eq!(
            (
                first.topic.as_str(),
                first.qos,
                first.packet_id,
                first.payload.len()
            ),
            ("bench/run1", QoS::AtLeastOnce, Some(7), 1024)
        );
        let Ok(Some(Packet::Publish(second))) = decoder.next_packet() else {
            panic!("not a PUBLISH");
        };
        assert_eq!(
            (second.qos, second.packet_id, second.payload.len()),
            (QoS::AtMostOnce, None, 32)
        );
        assert!(matches!(decoder.next_packet(), Ok(None)));
    }

    #[test]
    fn remaining_length_takes_seven_bits_a_byte() {
        let encoded = |n| {
            let mut out = Vec::new();
            remaining_length(n, &mut out);
            out
        };
        assert_eq!(encoded(0), [0x00]);
        assert_eq!(encoded(127), [0x7f]);
        assert_eq!(encoded(128), [0x80, 0x01]);
        assert_eq!(encoded(16_383), [0xff, 0x7f]);
        assert_eq!(encoded(16_384), [0x80, 0x80, 0x01]);
    }
}
