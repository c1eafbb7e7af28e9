//! A Raw market-data style feed: a subscribe request renewed after every
//! reconnect, an auth frame first on every connection, and an application
//! heartbeat for servers that never answer WebSocket pings.
//!
//! `cargo run -p redial-async-std --example smol_raw_feed -- ws://127.0.0.1:9000/`

use std::time::Duration;

use redial_async_std::redial_core::{Config, Event, Payload, Raw, RawHeartbeat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On smol: the driver runs on smol's executor.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    let raw = Raw::new()
        .on_connect(Payload::text(r#"{"op":"auth","key":"demo"}"#))
        .heartbeat(RawHeartbeat::new(Payload::text(r#"{"op":"ping"}"#)));
    // The heartbeat goes out after 10 s of silence; no message within 5 s
    // after it means the link is dead.
    let config = Config::builder()
        .ping_interval(Some(Duration::from_secs(10)))
        .pong_timeout(Duration::from_secs(5))
        .build()?;
    let (handle, mut events) = redial_async_std::Builder::new(
        redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach()),
        url,
    )
    .config(config)
    .protocol(raw)
    .connect()?;
    handle
        .subscribe_with(
            "btc",
            Payload::text(r#"{"op":"subscribe","channel":"trades.BTC"}"#),
        )
        .await?;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message { payload, .. } => {
                println!("{}", payload.as_text().unwrap_or("<binary>"))
            }
            Event::Closed { reason, .. } => {
                eprintln!("closed: {reason}");
                break;
            }
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
