//! anvil, the Ethereum development node, from the npm package
//! `@foundry-rs/anvil` pinned in `tests/anvil/` (the binary ships inside
//! the package's platform dependency). `npm ci` in that directory installs
//! it; `.ci/run` does it.
//!
//! The node mines a block every [`AnvilOptions::block_time`] and serves
//! JSON-RPC over HTTP and WebSocket on the same port. It logs the requests
//! it handles by method name, which [`AnvilServer::calls`] counts; pubsub
//! requests (`eth_subscribe`, `eth_unsubscribe`) are not logged.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{LaunchError, Process};

/// The node's settings.
#[derive(Clone, Debug)]
pub struct AnvilOptions {
    /// Interval between mined blocks (whole seconds; anvil's resolution).
    pub block_time: Duration,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        AnvilOptions {
            block_time: Duration::from_secs(1),
        }
    }
}

/// A running anvil, killed on drop.
#[derive(Debug)]
pub struct AnvilServer {
    process: Process,
    options: AnvilOptions,
    port: u16,
    /// Log lines read so far, across restarts: what [`Self::calls`] counts.
    seen: Vec<String>,
}

/// The directory of the `package.json` that pins anvil.
pub fn package_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("anvil")
}

/// The anvil binary inside the package's platform dependency, for this
/// machine; `None` on a platform the package does not ship.
pub fn binary() -> Option<PathBuf> {
    let os = match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "darwin",
        "windows" => "win32",
        _ => return None,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => return None,
    };
    let exe = if os == "win32" { "anvil.exe" } else { "anvil" };
    Some(
        package_dir()
            .join("node_modules/@foundry-rs")
            .join(format!("anvil-{os}-{arch}"))
            .join("bin")
            .join(exe),
    )
}

impl AnvilServer {
    /// Starts anvil on a random 127.0.0.1 port and returns once it listens.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] when `npm ci` has not been run in
    /// `tests/anvil` (or the platform has no anvil); others when it does
    /// not start.
    pub fn start(options: AnvilOptions) -> Result<Self, LaunchError> {
        let (process, port) = launch(&options, 0)?;
        Ok(AnvilServer {
            process,
            options,
            port,
            seen: Vec::new(),
        })
    }

    /// The WebSocket URL (`ws://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the node and starts a fresh one (a new chain from block 0) on
    /// the same port; every subscription is gone until clients subscribe
    /// again.
    ///
    /// # Errors
    /// When the new node does not start.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        let (process, _) = launch(&self.options, self.port)?;
        self.process = process;
        Ok(())
    }

    /// Kills the node and keeps the port for [`Self::restart`]: clients
    /// see the connection drop and their dials refused until then.
    pub fn kill(&mut self) {
        self.process.kill();
        self.read_log();
    }

    /// How many requests for `method` the node has logged so far, across
    /// restarts (anvil logs each request it handles by method name, on its
    /// own line; pubsub requests excepted).
    pub fn calls(&mut self, method: &str) -> usize {
        self.read_log();
        self.seen
            .iter()
            .filter(|line| line.trim() == method)
            .count()
    }

    /// Waits (blocking, up to the launch timeout) until the node has
    /// logged at least `n` requests for `method`, and returns how many it
    /// has: a request is answered before its log line reaches us, so count
    /// after a reply with this, not with [`Self::calls`].
    ///
    /// # Errors
    /// [`LaunchError::NotReady`] when fewer come in time (the node is
    /// killed then).
    pub fn await_calls(&mut self, method: &str, n: usize) -> Result<usize, LaunchError> {
        let mut count = self.calls(method);
        if count >= n {
            return Ok(count);
        }
        let seen = &mut self.seen;
        self.process.wait_for(|line| {
            seen.push(line.to_owned());
            count += usize::from(line.trim() == method);
            (count >= n).then_some(())
        })?;
        Ok(count)
    }

    /// The last lines the node printed.
    pub fn log(&self) -> String {
        self.process.log()
    }

    fn read_log(&mut self) {
        self.seen.extend(self.process.take_lines());
    }
}

fn launch(options: &AnvilOptions, port: u16) -> Result<(Process, u16), LaunchError> {
    const HINT: &str =
        "install Node.js (apt-get install nodejs npm), then run `npm ci` in tests/anvil";
    let binary = binary().ok_or(LaunchError::Missing {
        what: format!(
            "anvil for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
        hint: "@foundry-rs/anvil ships linux, macos and windows on x86_64 and aarch64",
    })?;
    if !binary.is_file() {
        return Err(LaunchError::Missing {
            what: binary.display().to_string(),
            hint: HINT,
        });
    }
    let block_time = options.block_time.as_secs().max(1).to_string();
    let mut command = Command::new(binary);
    command
        .args(["--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--block-time", &block_time]);
    let mut process = Process::spawn("anvil", command, true, true)?;
    let port = process.wait_for(|line| {
        line.trim()
            .strip_prefix("Listening on 127.0.0.1:")?
            .parse::<u16>()
            .ok()
    })?;
    Ok((process, port))
}
