//! A NATS subscriber on a nats-server WebSocket listener: the subscription
//! keeps its sid across reconnects; NATS core is at most once, so messages
//! published while the client is away are missed.
//!
//! `cargo run -p redial-async-std --example smol_nats_subscriber -- ws://127.0.0.1:8080 'orders.>'`

use redial_async_std::redial_core::{Event, Nats};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On smol: the driver runs on smol's executor.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let subject = args.next().unwrap_or_else(|| ">".into());
    let (handle, mut events) = redial_async_std::Builder::new(
        redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach()),
        url,
    )
    .protocol(Nats::new().connection_name("redial-example"))
    .connect()?;
    handle.subscribe(subject.as_str()).await?;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message {
                channel, payload, ..
            } => println!(
                "{}: {}",
                channel.as_ref().map_or("", |c| c.as_str()),
                String::from_utf8_lossy(payload.bytes())
            ),
            Event::Closed { reason, .. } => {
                eprintln!("closed: {reason}");
                break;
            }
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
