//! New block headers from an Ethereum node (`eth_subscribe ["newHeads"]`)
//! with `eth_chainId` as a liveness call: the subscription is sent again
//! after every reconnect under the same key, a node that stops answering
//! requests (while its notifications still flow, or not) is left within
//! 15 + 10 s, and each resubscription says blocks may have been missed
//! while away (backfill them with `eth_getBlockByNumber` from the last
//! number seen).
//!
//! `cargo run -p redial-async-std --example smol_eth_new_heads -- ws://127.0.0.1:8545`

use std::time::Duration;

use redial_async_std::redial_core::protocol::json_rpc::Liveness;
use redial_async_std::redial_core::{Event, JsonRpc};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On smol: the driver runs on smol's executor.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8545".into());
    let liveness = Liveness::new(
        "eth_chainId",
        Duration::from_secs(15),
        Duration::from_secs(10),
    );
    let (handle, mut events) = redial_async_std::Builder::new(
        redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach()),
        url,
    )
    .protocol(JsonRpc::new().liveness(liveness))
    .connect()?;
    handle
        .subscribe_with("heads", JsonRpc::subscription(r#"["newHeads"]"#)?)
        .await?;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message { payload, .. } => {
                println!("{}", String::from_utf8_lossy(payload.bytes()));
            }
            Event::Resubscribed { channel } => {
                eprintln!("{channel}: resubscribed; blocks may have been missed while away");
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
