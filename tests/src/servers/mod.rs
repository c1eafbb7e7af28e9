//! Third-party servers the suites test against, started on 127.0.0.1 by the
//! tests themselves and stopped (killed) when dropped: [`nats::NatsServer`]
//! (`nats-server` with a WebSocket listener), [`graphql::GraphqlServer`]
//! (the Node graphql-ws server in `tests/graphql-server/`),
//! [`redis::RedisServer`] (`redis-server`, for the Redis store) and
//! [`anvil::AnvilServer`] (the Ethereum development node pinned in
//! `tests/anvil/`).
//!
//! A launcher returns [`LaunchError::Missing`] when what it needs is not
//! installed. Pass its result through [`or_skip`]: outside CI a missing
//! server skips the test with a message saying how to install it; with `CI`
//! set it fails the test, because `.ci/run` installs them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod anvil;
pub mod graphql;
pub mod nats;
pub mod redis;

/// How long a server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines kept for error messages.
const LOG_TAIL: usize = 40;

/// Why a server could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program or its dependencies are not installed.
    #[error("{what} is not installed; {hint}")]
    Missing {
        /// What is missing.
        what: String,
        /// How to install it.
        hint: &'static str,
    },
    /// Spawning, writing its configuration or signalling failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server exited or stayed silent instead of becoming ready.
    #[error("{what} did not become ready ({why}); its last output:\n{log}")]
    NotReady {
        /// Which server.
        what: &'static str,
        /// Exited or timed out.
        why: &'static str,
        /// The tail of its output.
        log: String,
    },
    /// A control command (such as the lame-duck signal) failed.
    #[error("{0}")]
    Control(String),
}

/// The server, or `None` (after printing why) when it is not installed and
/// `CI` is unset.
///
/// # Panics
/// On any other launch error, and on a missing server when `CI` is set.
pub fn or_skip<T>(launched: Result<T, LaunchError>) -> Option<T> {
    match launched {
        Ok(server) => Some(server),
        Err(e @ LaunchError::Missing { .. }) if std::env::var_os("CI").is_none() => {
            // Straight to stderr, past libtest's capture, so the skip shows
            // in a plain `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {e} (CI is unset; under CI=true this fails)"
            );
            None
        }
        Err(e) => panic!("starting a test server: {e}"),
    }
}

/// `program` on `PATH`, or `None`.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A child process whose output lines are read on a thread, so readiness is
/// awaited on its own words rather than on a timer.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    what: &'static str,
    lines: Receiver<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// Spawns `command`, reading the given output streams line by line.
    pub(crate) fn spawn(
        what: &'static str,
        mut command: Command,
        read_stdout: bool,
        read_stderr: bool,
    ) -> Result<Self, LaunchError> {
        command
            .stdin(Stdio::null())
            .stdout(if read_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if read_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn().map_err(|source| LaunchError::Io {
            what: format!("spawning {what}"),
            source,
        })?;
        let (tx, lines) = mpsc::channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut pipes: Vec<Box<dyn Read + Send>> = Vec::new();
        if let Some(out) = child.stdout.take() {
            pipes.push(Box::new(out));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push(Box::new(err));
        }
        for pipe in pipes {
            let tx = tx.clone();
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == LOG_TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line.clone());
                    }
                    // The receiver is gone once the server is ready; keep
                    // draining so the child never blocks on a full pipe.
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Process {
            child,
            what,
            lines,
            tail,
        })
    }

    /// Reads output lines until `found` returns `Some` for one of them.
    pub(crate) fn wait_for<T>(
        &mut self,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = found(&line) {
                        return Ok(value);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(self.not_ready("timed out")),
                Err(RecvTimeoutError::Disconnected) => return Err(self.not_ready("it exited")),
            }
        }
    }

    /// The output lines read since readiness (or the last call), without
    /// waiting.
    pub(crate) fn take_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    fn not_ready(&mut self, why: &'static str) -> LaunchError {
        self.kill();
        LaunchError::NotReady {
            what: self.what,
            why,
            log: self.log(),
        }
    }

    /// The last lines of output.
    pub(crate) fn log(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and reaps it, so its ports are free afterwards.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> Result<Self, LaunchError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).map_err(|source| LaunchError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(TempDir(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
