//! `--metrics-listen ADDR`: the client's or `serve`'s metrics in the
//! Prometheus text format on `http://ADDR/metrics`, loopback only.
//!
//! The recorder is installed before the connection or the node is built
//! (both take their metric handles then). The endpoint answers one request at a
//! time: a request head of at most 8 KiB read within 5 s, then the answer
//! and the close. That bounds what a scraper (or anything else that
//! connects) can hold; `GET /metrics` is the only path, anything else is
//! a 404.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::CliError;

/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one request may take to arrive and be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the recorder and binds `addr`; serve with [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, PrometheusHandle), CliError> {
    if !addr.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "--metrics-listen: refusing to listen on {addr}: only loopback addresses are allowed"
        )));
    }
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| CliError::Failure(format!("--metrics-listen: {e}")))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Failure(format!("--metrics-listen {addr}: {e}")))?;
    Ok((listener, handle))
}

/// Answers scrapes until the task is dropped.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // An error only ends that one request.
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &handle)).await;
    }
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") {
        ("200 OK", handle.render())
    } else {
        ("404 Not Found", "not found: try GET /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
