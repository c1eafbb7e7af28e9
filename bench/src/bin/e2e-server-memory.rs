//! redial-server memory per idle session, with the memory store.
//!
//! This process is the server: one node with a `MemoryStore` on its own
//! thread and current-thread runtime, and a counting global allocator
//! (`stats_alloc` over `System`), so heap in use is read exactly, besides
//! `VmRSS`. The clients run in a child process (this binary again, with
//! `--client`): `--sessions` (2,000) redial-tokio `Wire` clients, each with
//! a session and no subscription, idle.
//!
//! Two figures, per session:
//! - **live**: every session connected. Counts the node's whole cost of a
//!   connected session: the WebSocket (tungstenite's buffers), the
//!   connection task, the session core, the registry entry and the store's
//!   session.
//! - **held in the store**: the client process is killed (its sockets close
//!   without a WebSocket close, so every session stays resumable), the node
//!   sees every connection go, and what remains is the store's session
//!   state, kept for the token lifetime. Heap only: freed heap is not always
//!   given back to the OS, so RSS after the loss says little.
//!
//! A warm-up session (opened and dropped before the baseline) keeps
//! one-time allocations out of the figures.
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-server-memory [-- --quick] [--sessions N] [--read-buffer BYTES]
//! ```
#![forbid(unsafe_code)]

use std::alloc::System;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use redial_bench::{load_average, proc_status_kib, vmrss_kib, Args};
use redial_core::{Event, Wire};
use redial_server::memory::MemoryStore;
use redial_server::token::TokenKey;
use redial_server::{Node, ServerConfig};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::sync::{mpsc, oneshot};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long to let the node settle before a reading.
const SETTLE: Duration = Duration::from_secs(1);
/// The longest any phase may take.
const PHASE: Duration = Duration::from_secs(120);

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    if let Some(port) = args.value("--client") {
        let port: u16 = port.parse()?;
        return client(port, args.number("--sessions", 2000) as usize);
    }
    let quick = args.flag("--quick");
    let read_buffer = args.number("--read-buffer", redial_server::DEFAULT_READ_BUFFER as u64);
    server(
        args.number("--sessions", if quick { 100 } else { 2000 }) as usize,
        read_buffer as usize,
    )
}

/// Heap bytes in use in this process now.
fn heap() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

struct Reading {
    heap: i64,
    rss_kib: u64,
    anon_kib: u64,
}

fn read() -> Reading {
    Reading {
        heap: heap(),
        rss_kib: vmrss_kib().unwrap_or(0),
        anon_kib: proc_status_kib("RssAnon:").unwrap_or(0),
    }
}

fn server(n: usize, read_buffer: usize) -> Result<(), BoxError> {
    let store = Arc::new(MemoryStore::new());
    let node_store = Arc::clone(&store);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(u16, Node), String>>();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        runtime.block_on(async move {
            let config = match ServerConfig::builder()
                .key(TokenKey::new(1, [0x42; 32]))
                .read_buffer(read_buffer)
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let node = Node::builder_arc(config, node_store).build();
            let listener = match redial_server::tokio::bind(("127.0.0.1", 0)).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let _ = ready_tx.send(Ok((port, node.clone())));
            tokio::select! {
                _ = redial_server::tokio::serve(listener, node) => {}
                _ = stop_rx => {}
            }
        });
    });
    let (port, node) = ready_rx.recv()??;
    println!(
        "e2e-server-memory: {n} idle Wire sessions (no subscriptions), memory store, read buffer {read_buffer} B; load average {}",
        load_average()
    );

    // Warm-up: one client process with one session, killed.
    run_clients(port, 1, &node, |_| Ok(()))?;
    std::thread::sleep(SETTLE);
    let base = read();
    let mut live = None;
    run_clients(port, n, &node, |_| {
        std::thread::sleep(SETTLE);
        live = Some(read());
        Ok(())
    })?;
    let live = live.ok_or("no reading while connected")?;
    std::thread::sleep(SETTLE);
    let held = read();
    let sessions = store.sessions();

    let per = |a: i64, b: i64| (b - a) as f64 / n as f64 / 1024.0;
    let per_kib = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    println!(
        "  live (connected, idle):    heap {:>7.2} KiB/session   VmRSS {:>7.2} KiB/session   (RssAnon {:.2})",
        per(base.heap, live.heap),
        per_kib(base.rss_kib, live.rss_kib),
        per_kib(base.anon_kib, live.anon_kib)
    );
    println!(
        "  held in the store only:    heap {:>7.2} KiB/session   ({} sessions in the store, {} connections live)",
        per(base.heap, held.heap),
        sessions,
        node.stats().live_connections
    );
    println!("  target: <= 7 KiB per live idle session");
    let _ = stop.send(());
    let _ = thread.join();
    Ok(())
}

/// Runs a client process with `n` sessions; calls `connected` once the node
/// holds all of them, then kills the process and waits until the node saw
/// every connection go.
fn run_clients(
    port: u16,
    n: usize,
    node: &Node,
    connected: impl FnOnce(&Node) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["--client", &port.to_string(), "--sessions", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no client stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "READY" {
        let _ = child.kill();
        return Err(format!("client said {line:?}").into());
    }
    wait_until(|| node.stats().live_connections == n as u64)?;
    connected(node)?;
    child.kill()?;
    child.wait()?;
    wait_until(|| node.stats().live_connections == 0)
}

/// Polls the node's gauge: it lives on another thread, with nothing this
/// thread can block on.
fn wait_until(cond: impl Fn() -> bool) -> Result<(), BoxError> {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > PHASE {
            return Err("the node did not reach the expected connection count".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The client process: `n` Wire sessions, `READY` once all are connected,
/// then idle until killed.
fn client(port: u16, n: usize) -> Result<(), BoxError> {
    let url = format!("ws://127.0.0.1:{port}/");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (handle, mut events) = redial_tokio::builder(url.clone())
                .protocol(Wire)
                .connect()?;
            handles.push(handle);
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    if matches!(e, Event::Connected { .. }) {
                        let _ = tx.send(());
                    }
                }
            });
        }
        for _ in 0..n {
            tokio::time::timeout(PHASE, rx.recv())
                .await
                .map_err(|_| "sessions did not all connect")?
                .ok_or("event task ended")?;
        }
        println!("READY");
        // Idle until the parent kills this process.
        std::future::pending::<()>().await;
        drop(handles);
        Ok(())
    })
}
