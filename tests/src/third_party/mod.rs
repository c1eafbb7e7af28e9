//! Third-party servers the suites test against, started on 127.0.0.1 by the
//! tests themselves and stopped (killed) when dropped: [`nats::NatsServer`]
//! (`nats-server` with a WebSocket listener), [`graphql::GraphqlServer`]
//! (the Node graphql-ws server in `tests/graphql-server/`),
//! [`redis::RedisServer`] (`redis-server`, for the Redis store),
//! [`redis_cluster::RedisCluster`] (six `redis-server`s made one Redis
//! Cluster by `redis-cli`, with failover),
//! [`mosquitto::Mosquitto`] (the MQTT broker with a WebSocket listener) and
//! [`anvil::AnvilServer`] (the Ethereum development node pinned in
//! `tests/anvil/`) and [`socketio::SocketIoServer`] (the Node Socket.IO
//! server in `tests/socketio-server/`).
//!
//! # A test that needs a server is ignored, never passed, without it
//!
//! The package's build script finds which servers are installed
//! ([`installed`]) and sets one cfg for each (`redial_has_nats`,
//! `redial_has_redis`, `redial_has_redis_cluster`, `redial_has_graphql`,
//! `redial_has_mosquitto`, ...).
//! Every test that starts one
//! carries `#[cfg_attr(not(redial_has_x), ignore = "needs x: install command")]`,
//! written out on a plain test (so rustfmt still formats the test) and put
//! there by [`needs!`](crate::needs) on tests a macro generates; so on a machine without the server cargo counts the test as *ignored*
//! and shows the reason next to its name. With `CI` set the build script
//! sets every cfg: nothing is ignored and a missing server fails its tests
//! (`.ci/run` installs them, and fails if anything was ignored). The script
//! reruns when `CI`, `PATH`, a directory on `PATH` or the graphql server's
//! `node_modules` changes, so installing a server needs no `cargo clean`.
//!
//! Inside such a test, start the server with [`started`], which panics on
//! any launch error: the test only runs where the server is expected.
//!
//! A new launcher (say `foo.rs` for `foo-server`) must:
//! 1. add a variant to [`installed::Server`] with its cfg
//!    (`redial_has_foo`), its programs and any file it needs;
//! 2. add a `foo` arm to [`needs!`](crate::needs) with the ignore reason
//!    and the install command;
//! 3. return [`LaunchError::Missing`] when its program is absent;
//! 4. have `.ci/run` install it;
//! 5. mark each test that starts it with that same `cfg_attr` line (or
//!    write `name: foo` in a suite's `on_every_runtime!` list) and start it
//!    with [`started`].
//!
//! Another package's tests that start a launcher (the CLI's) cannot see
//! these cfgs: that package's own build script sets the same cfg names for
//! what its tests need (see `cli/build.rs`).
//!
//! Binaries that are not tests (the benchmarks) may use [`or_skip`], which
//! prints why it skipped.

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
pub mod installed;
pub mod mosquitto;
pub mod nats;
pub mod redis;
pub mod redis_cluster;
pub mod socketio;

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

/// The started server, for a test wrapped in [`needs!`](crate::needs).
///
/// # Panics
/// On any launch error, a missing server included: the test is ignored
/// where the server is not installed, so where it runs the server must start.
#[track_caller]
pub fn started<T>(launched: Result<T, LaunchError>) -> T {
    match launched {
        Ok(server) => server,
        Err(e) => panic!("starting a test server: {e}"),
    }
}

/// The server, or `None` (after printing why) when it is not installed and
/// `CI` is unset: for benchmark binaries, which are not counted as tests.
/// Tests use [`needs!`](crate::needs) and [`started`] instead.
///
/// # Panics
/// On any other launch error, and on a missing server when `CI` is set.
pub fn or_skip<T>(launched: Result<T, LaunchError>) -> Option<T> {
    match launched {
        Ok(server) => Some(server),
        Err(e @ LaunchError::Missing { .. }) if std::env::var_os("CI").is_none() => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {e} (CI is unset; under CI=true this fails)"
            );
            None
        }
        Err(e) => panic!("starting a test server: {e}"),
    }
}

/// Marks tests that need a third-party server, so that cargo reports them
/// as ignored (with the install command) where the server is not installed.
///
/// `needs!(nats; #[test] fn a() {..} #[tokio::test] async fn b() {..})`
/// puts `#[cfg_attr(not(redial_has_nats), ignore = "..")]` on each item;
/// the servers are `nats`, `redis`, `redis_cluster`, `graphql`,
/// `mosquitto`, `anvil`, `socketio` and `socketio_redis` (both), and `needs!(; ..)` leaves
/// the items as they are (for macros whose tests may or may not need one).
/// See the [module docs](crate::third_party) for how the cfgs are set.
#[macro_export]
macro_rules! needs {
    (nats; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_nats),
                ignore = "needs nats-server: apt-get install nats-server"
            )]
            $item
        )*
    };
    (redis; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_redis),
                ignore = "needs redis-server: apt-get install redis-server"
            )]
            $item
        )*
    };
    (redis_cluster; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_redis_cluster),
                ignore = "needs redis-server and redis-cli (Redis 7.0 or later): apt-get install redis-server redis-tools"
            )]
            $item
        )*
    };
    (graphql; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_graphql),
                ignore = "needs node and tests/graphql-server/node_modules: apt-get install nodejs npm; cd tests/graphql-server; npm ci"
            )]
            $item
        )*
    };
    (mosquitto; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_mosquitto),
                ignore = "needs mosquitto: apt-get install mosquitto"
            )]
            $item
        )*
    };
    (anvil; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_anvil),
                ignore = "needs tests/anvil/node_modules: apt-get install nodejs npm; cd tests/anvil; npm ci"
            )]
            $item
        )*
    };
    (socketio; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(redial_has_socketio),
                ignore = "needs node and tests/socketio-server/node_modules: apt-get install nodejs npm; cd tests/socketio-server; npm ci"
            )]
            $item
        )*
    };
    (socketio_redis; $($item:item)*) => {
        $(
            #[cfg_attr(
                not(all(redial_has_socketio, redial_has_redis)),
                ignore = "needs node, tests/socketio-server/node_modules and redis-server: apt-get install nodejs npm redis-server; cd tests/socketio-server; npm ci"
            )]
            $item
        )*
    };
    (; $($item:item)*) => {
        $($item)*
    };
}

/// `program` on `PATH`, or `None`.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    installed::find_program(std::env::var_os("PATH").as_deref(), program)
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

    /// Sends SIGTERM and waits (at most `timeout`, then kills) until the
    /// process has exited, which its output closing signals, then reaps it.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Result<(), LaunchError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|source| LaunchError::Io {
                what: format!("sending SIGTERM to {}", self.what),
                source,
            })?;
        if !status.success() {
            return Err(LaunchError::Control(format!(
                "kill -TERM {} failed: {status}",
                self.pid()
            )));
        }
        // Drain its output until the pipes close (it exited) or time is up.
        let deadline = Instant::now() + timeout;
        while self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        self.kill();
        Ok(())
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

/// A free port on 127.0.0.1 (free when picked: another process may take it
/// before the server binds it, so launchers retry with another).
pub(crate) fn free_port() -> Result<std::net::SocketAddr, LaunchError> {
    let io = |source| LaunchError::Io {
        what: "picking a free port".into(),
        source,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    listener.local_addr().map_err(io)
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
