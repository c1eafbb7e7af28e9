//! JSON-RPC over WebSocket on loopback: redial-tokio with `JsonRpc` against
//! jsonrpsee's WebSocket client, on the same small local server.
//!
//! The server (tokio-tungstenite, on its own thread and runtime, a 4 KiB
//! read buffer) answers `eth_subscribe ["bench"]` with a subscription id
//! and then pushes `eth_subscription` notifications as fast as the socket
//! takes them, 64 per flush so that it outruns either client, each with
//! the same 180-byte block-header-like result; `eth_subscribe
//! ["idle"]` is answered and never notified; any other request is answered
//! at once with `"0x1b4"`.
//!
//! Three figures, each client in its own fresh connection per run, the two
//! clients alternating (the order swapped every round) so neither always
//! goes first:
//! - notifications per second: from the subscribe request until the
//!   client's stream has yielded the `--notifications`-th, counted by a task
//!   reading that stream. The clock starts at the request, not after a
//!   warm-up, because a client that reads the socket ahead into a buffer
//!   (jsonrpsee's subscription buffer) would otherwise be credited with
//!   draining its memory, not with taking frames off the socket. That
//!   buffer has room for every notification of the run: jsonrpsee ends a
//!   subscription whose buffer overflows. A stream that ends before the
//!   last notification fails the run;
//! - call round trips per second: `--calls` sequential calls
//!   (`eth_blockNumber`), each awaited before the next;
//! - memory per idle subscribed connection: a child process per client
//!   opens one warm-up connection, reads `VmRSS`, opens `--connections`
//!   more on a current-thread runtime, each subscribed (`idle`), and
//!   reports the growth per connection.
//!
//! | client | subscribes with | calls with |
//! |---|---|---|
//! | redial-tokio (`JsonRpc`) | `handle.subscribe_with(key, JsonRpc::subscription(..))`, counting `Event::Message` | `handle.call(JsonRpc::request(..), CallOptions::new())` |
//! | jsonrpsee 0.26 (`ws-client`) | `client.subscribe("eth_subscribe", .., "eth_unsubscribe")`, counting the `Subscription` stream | `client.request("eth_blockNumber", ..)` |
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-jsonrpc [-- --quick] [--notifications N] [--calls N] [--connections N] [--rounds N]
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::WsClientBuilder;
use redial_bench::{load_average, vmrss_kib, Args};
use redial_core::{CallOptions, Event, JsonRpc};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every notification carries.
const HEAD: &str = r#"{"number":"0x1b4","hash":"0xdc0818cf78f21a8e70579cb46a43643f78291264dda342ae31049421c82d21ae","parentHash":"0xe99e022112df268087ea7eafaf4790497fd21dbeeb6bd7a1721df161a6657a54","timestamp":"0x55ba467c"}"#;

const CLIENTS: [&str; 2] = ["redial", "jsonrpsee"];

/// The most one client's run may take (each memory child too); with
/// `--quick`, [`QUICK_LIMIT`]: a smoke run fails rather than hangs.
const RUN_LIMIT: Duration = Duration::from_secs(120);
const QUICK_LIMIT: Duration = Duration::from_secs(20);

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    let quick = args.flag("--quick");
    let limit = if quick { QUICK_LIMIT } else { RUN_LIMIT };
    if let Some(client) = args.value("--rss-client") {
        let port = u16::try_from(args.number("--port", 0))?;
        let n = usize::try_from(args.number("--connections", 1000))?;
        return rss_client(client, port, n, limit);
    }
    let notifications = args.number("--notifications", if quick { 2_000 } else { 200_000 });
    let calls = args.number("--calls", if quick { 200 } else { 20_000 });
    let connections = args.number("--connections", if quick { 50 } else { 1_000 });
    let rounds = args.number("--rounds", if quick { 1 } else { 5 });
    let addr = spawn_server()?;
    let url = format!("ws://{addr}");
    println!("e2e-jsonrpc: {notifications} notifications, {calls} calls, {connections} idle connections, {rounds} rounds; load {}", load_average());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut trips: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            // A run that stalls is an error, not a hang.
            let run = measure(CLIENTS[i], &url, notifications, calls);
            let (rate, trip) = runtime
                .block_on(async { tokio::time::timeout(limit, run).await })
                .map_err(|_| format!("{} stalled: no result within {limit:?}", CLIENTS[i]))??;
            println!(
                "round {round} {:<9} notifications/s {rate:>10.0}   calls/s {trip:>8.0}",
                CLIENTS[i]
            );
            rates[i].push(rate);
            trips[i].push(trip);
        }
    }
    let (r, j) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "median    notifications/s redial {r:.0}, jsonrpsee {j:.0}: redial/jsonrpsee {:.2}x",
        r / j
    );
    let (r, j) = (median(&mut trips[0]), median(&mut trips[1]));
    println!(
        "median    call round trips/s redial {r:.0}, jsonrpsee {j:.0}: redial/jsonrpsee {:.2}x",
        r / j
    );

    let me = std::env::current_exe()?;
    for client in CLIENTS {
        let out = Command::new(&me)
            .args(["--rss-client", client, "--port", &addr.port().to_string()])
            .args(["--connections", &connections.to_string()])
            .args(quick.then_some("--quick"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{client} memory run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        print!("{text}");
    }
    println!("load after: {}", load_average());
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One client's notifications per second and call round trips per second.
async fn measure(
    client: &str,
    url: &str,
    notifications: u64,
    calls: u64,
) -> Result<(f64, f64), BoxError> {
    match client {
        "redial" => {
            let (handle, mut events) = redial_tokio::builder(url.to_owned())
                .protocol(JsonRpc::new())
                .connect()?;
            let request = JsonRpc::request("eth_blockNumber", "[]")?;
            // The first call also waits for the connection.
            handle.call(request.clone(), CallOptions::new()).await?;
            let start = Instant::now();
            for _ in 0..calls {
                handle.call(request.clone(), CallOptions::new()).await?;
            }
            let trips = calls as f64 / start.elapsed().as_secs_f64();
            let start = Instant::now();
            handle
                .subscribe_with("heads", JsonRpc::subscription(r#"["bench"]"#)?)
                .await?;
            let mut seen = 0u64;
            while let Some(event) = events.recv().await {
                if let Event::Message { .. } = event {
                    seen += 1;
                    if seen == notifications {
                        break;
                    }
                }
            }
            let rate = notifications as f64 / start.elapsed().as_secs_f64();
            if seen < notifications {
                return Err(format!(
                    "redial's events ended after {seen} of {notifications} notifications"
                )
                .into());
            }
            handle.close().await;
            Ok((rate, trips))
        }
        _ => {
            // jsonrpsee ends a subscription whose buffer overflows (its
            // reader outruns its consumer here, and at 64 Ki it ended the
            // stream after about 68,000 notifications): room for all of
            // them, so it delivers every one, as redial does by holding
            // the socket back.
            let room = usize::try_from(notifications)?.max(1024);
            let client = WsClientBuilder::default()
                .max_buffer_capacity_per_subscription(room)
                .build(url)
                .await?;
            let _: String = client.request("eth_blockNumber", rpc_params![]).await?;
            let start = Instant::now();
            for _ in 0..calls {
                let _: String = client.request("eth_blockNumber", rpc_params![]).await?;
            }
            let trips = calls as f64 / start.elapsed().as_secs_f64();
            let start = Instant::now();
            let mut sub = client
                .subscribe::<Box<RawValue>, _>(
                    "eth_subscribe",
                    rpc_params!["bench"],
                    "eth_unsubscribe",
                )
                .await?;
            let mut seen = 0u64;
            while let Some(item) = sub.next().await {
                item?;
                seen += 1;
                if seen == notifications {
                    break;
                }
            }
            let rate = notifications as f64 / start.elapsed().as_secs_f64();
            // A stream that ended early took fewer notifications than the
            // rate would say.
            if seen < notifications {
                return Err(format!(
                    "jsonrpsee's subscription ended after {seen} of {notifications} notifications"
                )
                .into());
            }
            Ok((rate, trips))
        }
    }
}

/// A child process: memory per idle subscribed connection for `client`.
fn rss_client(client: &str, port: u16, n: usize, limit: Duration) -> Result<(), BoxError> {
    let url = format!("ws://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let run = async {
        let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        let mut before = 0;
        for i in 0..=n {
            if i == 1 {
                before = vmrss_kib().unwrap_or(0);
            }
            keep.push(idle_connection(client, &url).await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = vmrss_kib().unwrap_or(0);
        let per = after.saturating_sub(before) as f64 * 1024.0 / n as f64;
        println!(
            "memory    {client:<9} {n} idle subscribed connections: {:.1} KiB each (VmRSS {before} -> {after} KiB)",
            per / 1024.0
        );
        drop(keep);
        Ok(())
    };
    runtime
        .block_on(async { tokio::time::timeout(limit, run).await })
        .map_err(|_| format!("{client} memory run: no result within {limit:?}"))?
}

/// One connection subscribed to `idle`, confirmed, kept the way an
/// application keeps it (a task reading its events or its stream).
async fn idle_connection(client: &str, url: &str) -> Result<Box<dyn std::any::Any>, BoxError> {
    if client == "redial" {
        let (handle, mut events) = redial_tokio::builder(url.to_owned())
            .protocol(JsonRpc::new())
            .connect()?;
        handle
            .subscribe_with("idle", JsonRpc::subscription(r#"["idle"]"#)?)
            .await?;
        while let Some(event) = events.recv().await {
            if let Event::Subscribed { .. } = event {
                break;
            }
        }
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        Ok(Box::new(handle))
    } else {
        let client = WsClientBuilder::default().build(url).await?;
        let mut sub = client
            .subscribe::<Box<RawValue>, _>("eth_subscribe", rpc_params!["idle"], "eth_unsubscribe")
            .await?;
        tokio::spawn(async move { while sub.next().await.is_some() {} });
        Ok(Box::new(client))
    }
}

/// The server on its own thread; returns where it listens.
fn spawn_server() -> Result<SocketAddr, BoxError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("jsonrpc-server".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
                    return;
                };
                let _ = tx.send(listener.local_addr());
                while let Ok((tcp, _)) = listener.accept().await {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(serve(tcp));
                }
            });
        })?;
    Ok(rx.recv()??)
}

/// One connection: answers requests, and streams notifications once
/// subscribed to `bench`.
/// Notifications the server writes per flush while streaming.
const NOTE_BATCH: usize = 64;

async fn serve(tcp: tokio::net::TcpStream) {
    // A small read buffer: tungstenite zero-fills up to this much before
    // every read attempt, and the loop below tries a read between batches;
    // at the 128 KiB default that zeroing, not the clients, set the pace.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let note = Message::text(format!(
        r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"0x9ce59a13059e417087c02d3236a0b1cc","result":{HEAD}}}}}"#
    ));
    let mut streaming = false;
    loop {
        let inbound = if streaming {
            tokio::select! {
                biased;
                m = rx.next() => m,
                // A batch per flush, so the server outruns either client
                // and what is measured is the client.
                sent = async {
                    for _ in 0..NOTE_BATCH {
                        tx.feed(note.clone()).await?;
                    }
                    tx.flush().await
                } => {
                    if sent.is_err() {
                        return;
                    }
                    continue;
                }
            }
        } else {
            rx.next().await
        };
        let Some(Ok(Message::Text(text))) = inbound else {
            match inbound {
                Some(Ok(_)) => continue,
                _ => return,
            }
        };
        let Ok(request) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            return;
        };
        let id = &request["id"];
        let reply = match request["method"].as_str() {
            Some("eth_subscribe") => {
                streaming |= request["params"][0] == "bench";
                serde_json::json!({"jsonrpc": "2.0", "id": id, "result": "0x9ce59a13059e417087c02d3236a0b1cc"})
            }
            Some("eth_unsubscribe") => {
                streaming = false;
                serde_json::json!({"jsonrpc": "2.0", "id": id, "result": true})
            }
            _ => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": "0x1b4"}),
        };
        if tx.send(Message::text(reply.to_string())).await.is_err() {
            return;
        }
    }
}
