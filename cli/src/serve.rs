//! `redial serve`: the reference Wire server from `redial-tests`, standalone.

use std::io::Write;
use std::time::Duration;

use redial_tests::server::{Reject, Server, ServerConfig, ServerError};

use crate::args::ServeArgs;
use crate::signals::Signals;
use crate::{CliError, Exit};

/// Starts the server, prints `listening on ws://…/`, serves until Ctrl-C or
/// SIGTERM, then shuts down as PROTOCOL.md section 1 asks: GOING_AWAY on
/// every connection, then close 1001.
pub async fn run(a: ServeArgs) -> Result<Exit, CliError> {
    let mut signals = Signals::listen()?;
    let config = ServerConfig {
        listen: a.listen,
        token_lifetime: Duration::from_millis(a.token_lifetime_ms),
        replay_capacity: a.replay_capacity,
        deny_channels: a.deny_channel.clone(),
        admission_per_sec: a.admission_per_sec,
        name_seed: a.name_seed,
        ..ServerConfig::default()
    };
    let server = Server::start(config).await.map_err(|e| match e {
        ServerError::NotLoopback(_) => CliError::Usage(format!("--listen: {e}")),
        other => CliError::Failure(other.to_string()),
    })?;
    if let Some(status) = a.reject_status {
        server.reject_handshakes(Some(Reject {
            status,
            retry_after: a.retry_after_s.map(Duration::from_secs),
        }));
    }
    server.close_after(a.close_after);
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.url());
        let _ = out.flush();
    }
    signals.recv().await;
    let stats = server.stats();
    server
        .shut_down(
            Duration::from_millis(a.going_away_retry_ms),
            Duration::from_millis(a.going_away_window_ms),
        )
        .await;
    eprintln!(
        "redial serve: stopped after {} connections, {} sessions ({} resumed), {} publishes applied, {} handshakes rejected",
        stats.connections,
        stats.sessions_created,
        stats.sessions_resumed,
        stats.publishes_applied,
        stats.handshakes_rejected
    );
    Ok(Exit::Clean)
}
