//! Runs the reference `Wire` server until interrupted.
//!
//! Usage: `redial-reference-server [--listen 127.0.0.1:PORT] [--token-lifetime-ms N]`.
//! Prints `listening on ws://…/` once ready, so a script can wait for it.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use redial_tests::reference::{Server, ServerConfig};

const USAGE: &str =
    "usage: redial-reference-server [--listen 127.0.0.1:PORT] [--token-lifetime-ms N]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<ServerConfig, String> {
    let mut cfg = ServerConfig::default();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                cfg.listen = v
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "--token-lifetime-ms" => {
                let v = value("--token-lifetime-ms")?;
                let ms: u64 = v
                    .parse()
                    .map_err(|e| format!("--token-lifetime-ms {v}: {e}"))?;
                cfg.token_lifetime = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(cfg)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match parse(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redial-reference-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    server.stop().await;
    ExitCode::SUCCESS
}
