//! Resident memory per idle connection: redial-tokio against plain
//! tokio-tungstenite.
//!
//! One command runs everything: this binary starts itself once as the
//! server process (a counting tokio-tungstenite server on 127.0.0.1) and
//! once per variant as a client process, so no variant's memory (nor the
//! server's) is counted in another's figure. A client process opens one
//! warm-up connection, reads `VmRSS` from `/proc/self/status`, opens
//! `--connections` more (default 1000) on a current-thread tokio runtime,
//! waits until all are connected and a second more, reads `VmRSS` again and
//! reports the difference per connection.
//!
//! Every connection is kept the way an application keeps it: plain
//! connections by a task reading the socket (so pings would be answered);
//! redial connections by a task reading `Events`.
//!
//! Variants: `plain` and `redial` (the defaults: redial's are
//! `redial_driver::default_websocket_config()`, 16 KiB buffers), plus
//! three that say what dominates: `plain-8k` (tungstenite's read buffer at
//! 8 KiB instead of 128 KiB), `redial-cap1` (event and command channels of
//! capacity 1 instead of 64) and `redial-128k` (redial with tungstenite's
//! own defaults, 128 KiB buffers: redial's default before it chose its own).
//!
//! Needs about `connections + 100` file descriptors per process
//! (`ulimit -n`); it says so when the limit is lower.
//!
//! ```text
//! cargo run --release -p redial-bench --bin e2e-rss [-- --quick] [--connections N] [--only VARIANT]
//! ```
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redial_bench::{load_average, proc_status_kib, vmrss_kib, Args, Counters, Mode};
use redial_core::Event;
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const VARIANTS: [&str; 5] = ["plain", "redial", "plain-8k", "redial-cap1", "redial-128k"];

fn main() -> Result<(), BoxError> {
    let args = Args::from_env();
    if args.flag("--serve") {
        return serve();
    }
    if let Some(variant) = args.value("--client") {
        let port = args.number("--port", 0) as u16;
        let n = args.number("--connections", 1000) as usize;
        return client(variant, port, n);
    }
    orchestrate(&args)
}

fn orchestrate(args: &Args) -> Result<(), BoxError> {
    let quick = args.flag("--quick");
    let n = args.number("--connections", if quick { 100 } else { 1000 });
    if let Some(limit) = open_files_limit() {
        if limit < n + 100 {
            return Err(format!(
                "`ulimit -n` is {limit}; {n} connections need about {}: raise it (ulimit -n 4096)",
                n + 100
            )
            .into());
        }
    }
    let exe = std::env::current_exe()?;
    let mut server = Command::new(&exe)
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let port = {
        let stdout = server.stdout.take().ok_or("no server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        line.trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("server said {line:?}"))?
    };
    println!(
        "e2e-rss: {n} idle connections per variant, one process each; load average {}",
        load_average()
    );
    println!(
        "  {:<12} {:>12} {:>12} {:>14}",
        "variant", "VmRSS before", "VmRSS after", "per connection"
    );
    let only = args.value("--only");
    for variant in VARIANTS {
        if only.is_some_and(|o| o != variant) {
            continue;
        }
        let output = Command::new(&exe)
            .args(["--client", variant, "--port", &port.to_string()])
            .args(["--connections", &n.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let Some(result) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            return Err(format!("{variant}: no result ({})", output.status).into());
        };
        let fields: Vec<u64> = result
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [before, after, anon_before, anon_after] = fields[..] else {
            return Err(format!("{variant}: bad result {result:?}").into());
        };
        let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
        println!(
            "  {:<12} {:>9} KiB {:>9} KiB {:>10.1} KiB   (anonymous: {:.1} KiB)",
            variant,
            before,
            after,
            per(before, after),
            per(anon_before, anon_after)
        );
    }
    println!("  target: <= 64 KiB per connection");
    println!(
        "  for scale: size_of::<Event>() = {} B; the event channel holds up to 64 of them",
        std::mem::size_of::<Event>()
    );
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}

/// The soft `Max open files` limit of this process.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The server process: prints `PORT n`, serves until its stdin closes.
fn serve() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(|| {
        // The parent holds our stdin: when it goes, so do we.
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        println!("PORT {}", listener.local_addr()?.port());
        redial_bench::serve(listener, Arc::new(Counters::default()), Mode::Sink).await;
        Ok(())
    })
}

/// A client process: one variant, `n` connections, prints
/// `RESULT vmrss_before vmrss_after anon_before anon_after` (KiB).
fn client(variant: &str, port: u16, n: usize) -> Result<(), BoxError> {
    let url = format!("ws://127.0.0.1:{port}/");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let variant = variant.to_owned();
    runtime.block_on(async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // One warm-up connection: one-time allocations stay out of the figure.
        open(&variant, &url, tx.clone())?;
        rx.recv().await.ok_or("warm-up connection failed")??;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = (vmrss_kib(), proc_status_kib("RssAnon:"));
        for _ in 0..n {
            open(&variant, &url, tx.clone())?;
        }
        for _ in 0..n {
            tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .map_err(|_| "connections did not all open")?
                .ok_or("connection task ended")??;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = (vmrss_kib(), proc_status_kib("RssAnon:"));
        println!(
            "RESULT {} {} {} {}",
            before.0.unwrap_or(0),
            after.0.unwrap_or(0),
            before.1.unwrap_or(0),
            after.1.unwrap_or(0)
        );
        Ok(())
    })
}

type Ready = mpsc::UnboundedSender<Result<(), BoxError>>;

/// Opens one connection of `variant`; `ready` hears when it is connected.
fn open(variant: &str, url: &str, ready: Ready) -> Result<(), BoxError> {
    match variant {
        "plain" | "plain-8k" => {
            let config = (variant == "plain-8k").then(|| {
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
            });
            let url = url.to_owned();
            tokio::spawn(async move {
                match tokio_tungstenite::connect_async_with_config(url, config, true).await {
                    Ok((mut ws, _)) => {
                        let _ = ready.send(Ok(()));
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e.into()));
                    }
                }
            });
        }
        "redial" | "redial-cap1" => {
            let mut builder = redial_tokio::builder(url);
            if variant == "redial-cap1" {
                builder = builder.event_capacity(1).command_capacity(1);
            }
            let (handle, mut events) = builder.connect()?;
            tokio::spawn(async move {
                let _handle = handle;
                while let Some(event) = events.recv().await {
                    if matches!(event, Event::Connected { .. }) {
                        let _ = ready.send(Ok(()));
                    }
                }
            });
        }
        "redial-128k" => {
            let websocket = redial_driver::tungstenite::protocol::WebSocketConfig::default();
            let (handle, mut events) = redial_tokio::builder(url)
                .websocket_config(websocket)
                .connect()?;
            tokio::spawn(async move {
                let _handle = handle;
                while let Some(event) = events.recv().await {
                    if matches!(event, Event::Connected { .. }) {
                        let _ = ready.send(Ok(()));
                    }
                }
            });
        }
        other => return Err(format!("unknown variant {other}").into()),
    }
    Ok(())
}
