//! Socket.IO events with connection state recovery: a `tick` subscription,
//! an emit with an acknowledgement, and what each reconnect recovered.
//!
//! `cargo run -p redial-async-std --example smol_socket_io_events -- 'ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket'`

use redial_async_std::redial_core::{CallOptions, Event, SocketIo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On smol: the driver runs on smol's executor.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket".into());
    let (handle, mut events) = redial_async_std::Builder::new(
        redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach()),
        url,
    )
    .protocol(SocketIo::new())
    .connect()?;
    handle.subscribe("tick").await?;
    // Built before the task: a JSON array of arguments, checked here.
    let request = SocketIo::call_request("sum", "[2,3]")?;
    let ask = handle.clone();
    smol::spawn(async move {
        match ask.call(request, CallOptions::new()).await {
            Ok(reply) => eprintln!("sum acknowledged: {}", reply.as_text().unwrap_or("")),
            Err(e) => eprintln!("sum: {e}"),
        }
    })
    .detach();
    while let Some(event) = events.recv().await {
        match event {
            Event::Message {
                channel, payload, ..
            } => println!("{channel:?}: {}", payload.as_text().unwrap_or("")),
            Event::Connected {
                reconnect: true,
                resumed,
                ..
            } => eprintln!("reconnected; session recovered: {resumed}"),
            Event::Resubscribed { channel } => {
                eprintln!("{channel}: events may have been missed while away")
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
