//! Drives the built `redial` binary: stdin in, stdout and stderr lines out.
// Test helpers: a failed setup step should panic with its message; the
// handshake callback's (large) error type is tungstenite's, not ours.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    dead_code
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Safety net for anything that should happen promptly on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

pub const BIN: &str = env!("CARGO_BIN_EXE_redial");

/// A running `redial` process.
pub struct Run {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
    /// Every stderr line read so far.
    pub stderr_seen: Vec<String>,
}

impl Run {
    pub fn start(args: &[&str]) -> Run {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redial");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Run {
            child,
            stdin,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// Writes one line to the child's stdin.
    pub async fn write(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes the child's stdin.
    pub fn eof(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("timed out waiting for a stdout line")
            .unwrap()
            .expect("stdout ended")
    }

    /// The next stderr line, or `None` at EOF.
    pub async fn err_line(&mut self) -> Option<String> {
        let line = tokio::time::timeout(WAIT, self.stderr.next_line())
            .await
            .unwrap_or_else(|_| panic!("timed out on stderr; seen {:#?}", self.stderr_seen))
            .unwrap();
        if let Some(l) = &line {
            self.stderr_seen.push(l.clone());
        }
        line
    }

    /// Reads stderr (JSON lines) until an event named `name`; checks every
    /// line on the way is an object with `event` and `ts_ms`.
    pub async fn event(&mut self, name: &str) -> Value {
        self.event_of(&[name]).await
    }

    /// Like [`event`](Self::event), for the first of several names.
    pub async fn event_of(&mut self, names: &[&str]) -> Value {
        let name = names.join(" or ");
        loop {
            let Some(line) = self.err_line().await else {
                panic!("stderr ended before {name}; seen {:#?}", self.stderr_seen);
            };
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(line.starts_with("{\"event\":"), "event name first: {line}");
            assert!(v["event"].is_string(), "no event name: {line}");
            assert!(v["ts_ms"].is_u64(), "no ts_ms: {line}");
            if names.iter().any(|n| v["event"] == *n) {
                return v;
            }
        }
    }

    /// Reads stderr until a line contains `needle`.
    pub async fn text(&mut self, needle: &str) -> String {
        loop {
            let Some(line) = self.err_line().await else {
                panic!(
                    "stderr ended before {needle:?}; seen {:#?}",
                    self.stderr_seen
                );
            };
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits for the exit code, then reads the rest of stderr.
    pub async fn exit(&mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("redial did not exit; stderr {:#?}", self.stderr_seen))
            .unwrap();
        while self.err_line().await.is_some() {}
        status.code().expect("exited by a signal")
    }

    /// Sends a signal with `kill`.
    pub async fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("still running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(ok.success());
    }

    /// Every stderr line parsed as JSON.
    pub fn events_seen(&self) -> Vec<Value> {
        self.stderr_seen
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A loopback port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Headers of every upgrade a [`echo_server`] accepted.
pub type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A plain WebSocket echo server that says what kind of frame it got:
/// text `t` comes back as `text:t`, binary `b` as `binary:b`.
pub async fn echo_server() -> (String, Seen) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let callback = |req: &Request, resp: Response| {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    record.lock().unwrap().push(headers);
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => format!("text:{}", t.as_str()),
                        Message::Binary(b) => format!("binary:{}", String::from_utf8_lossy(&b)),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(Message::text(reply)).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, seen)
}
