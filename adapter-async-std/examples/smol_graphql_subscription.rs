//! A GraphQL subscription over graphql-transport-ws, renewed with the same
//! id after every reconnect.
//!
//! `cargo run -p redial-async-std --example smol_graphql_subscription -- ws://127.0.0.1:4000/graphql`

use redial_async_std::redial_core::{Event, GraphqlWs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On smol: the driver runs on smol's executor.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:4000/graphql".into());
    let protocol = GraphqlWs::new().init_payload(r#"{"client":"redial-example"}"#)?;
    let (handle, mut events) = redial_async_std::Builder::new(
        redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach()),
        url,
    )
    .protocol(protocol)
    .connect()?;
    let spec = GraphqlWs::subscription(
        "subscription Ticks($every: Int!) { ticks(every: $every) }",
        Some(r#"{"every":1000}"#),
    )?;
    handle.subscribe_with("ticks", spec).await?;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message {
                channel, payload, ..
            } => println!("{channel:?}: {}", payload.as_text().unwrap_or("")),
            Event::Closed { reason, .. } => {
                eprintln!("closed: {reason}");
                break;
            }
            other => eprintln!("{other:?}"),
        }
    }
    Ok(())
}
