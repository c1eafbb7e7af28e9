//! An MQTT client on a broker's WebSocket listener (mosquitto: `listener
//! 8080` + `protocol websockets`), on smol: it subscribes to a topic filter
//! at QoS 2 and publishes a reading every second at QoS 1 under a fixed
//! client id, so the broker keeps its session. Across a reconnect,
//! unacknowledged readings are sent again (DUP) and what the broker queued
//! for the subscription while the client was away arrives, each QoS 2
//! message once.
//!
//! `cargo run -p redial-async-std --example smol_mqtt_sensor -- ws://127.0.0.1:8080/mqtt 'sensors/#'`

use std::time::Duration;

use redial_async_std::redial_core::mqtt::QoS;
use redial_async_std::redial_core::{Event, Mqtt, Payload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On smol: the driver runs on smol's executor.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/mqtt".into());
    let filter = args.next().unwrap_or_else(|| "sensors/#".into());
    let mqtt = Mqtt::builder("redial-example-sensor")
        .qos(QoS::AtLeastOnce)
        .keep_alive(Duration::from_secs(15))
        .build()?;
    let (handle, mut events) = redial_async_std::Builder::new(
        redial_async_std::AsyncIo::with_spawner(|task| smol::spawn(task).detach()),
        url,
    )
    .protocol(mqtt)
    .connect()?;
    // The spec is the QoS wanted for the filter.
    handle.subscribe_with(filter, Payload::text("2")).await?;
    let publisher = handle.clone();
    smol::spawn(async move {
        for n in 0u64.. {
            smol::Timer::after(Duration::from_secs(1)).await;
            // Waits for queue room while disconnected; refused once closed.
            let reading = Payload::text(format!("{}", 20 + n % 5));
            if publisher
                .publish("sensors/kitchen/temp", reading)
                .await
                .is_err()
            {
                break;
            }
        }
    })
    .detach();
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
