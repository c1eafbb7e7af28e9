//! What an operator sees: the metrics rendered in the Prometheus text
//! format (here printed every 10 s; a real service serves them on
//! `/metrics`), the spans through a `tracing-subscriber` formatter, and the
//! handle's own state watch and counters.
//!
//! `cargo run -p redial-tokio --features metrics --example metrics_prometheus -- ws://127.0.0.1:9000/`

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use redial_tokio::redial_core::Event;
use tracing_subscriber::fmt::format::FmtSpan;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9000/".into());
    // Spans: a line per event with the session's and the attempt's fields,
    // and one when an attempt's span closes (its outcome and close class).
    tracing_subscriber::fmt()
        .with_span_events(FmtSpan::CLOSE)
        .try_init()
        .map_err(|e| e.to_string())?;
    // The recorder first: a connection takes its metric handles when built.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let (handle, mut events) = redial_tokio::builder(url)
        .client_label("example")
        .connect()?;
    let mut watch = handle.watch_state();
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Closed { reason, .. }) => {
                    eprintln!("closed: {}", reason.name());
                    break;
                }
                Some(_) => {}
                None => break,
            },
            Some(state) = watch.changed() => eprintln!("state: {state}"),
            _ = every.tick() => {
                let stats = handle.stats();
                eprintln!(
                    "reconnects {} disconnects {} queued {}",
                    stats.reconnects,
                    stats.disconnects_total(),
                    stats.queue_depth
                );
                println!("{}", prometheus.render());
            }
        }
    }
    Ok(())
}
