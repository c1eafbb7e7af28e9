//! The Node graphql-ws server in `tests/graphql-server/` (graphql-ws 6,
//! ws 8), on a random 127.0.0.1 port. `npm ci` in that directory installs
//! what it needs; `.ci/run` does it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{find_program, LaunchError, Process};

/// The server's settings (passed as arguments to `server.mjs`).
#[derive(Clone, Debug)]
pub struct GraphqlOptions {
    /// The token `connection_init` must carry as `{"token": ...}`; a wrong
    /// or missing one is closed with 4403. `None`: anyone is acknowledged.
    pub token: Option<String>,
    /// Interval of the server's WebSocket pings.
    pub keepalive: Duration,
    /// How long the server waits for `connection_init` before closing with
    /// 4408.
    pub init_timeout: Duration,
}

impl Default for GraphqlOptions {
    fn default() -> Self {
        GraphqlOptions {
            token: None,
            keepalive: Duration::from_secs(12),
            init_timeout: Duration::from_secs(3),
        }
    }
}

/// A running graphql-ws server, killed on drop.
#[derive(Debug)]
pub struct GraphqlServer {
    process: Process,
    options: GraphqlOptions,
    port: u16,
}

/// The directory of `server.mjs` and its `package.json`.
pub fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("graphql-server")
}

impl GraphqlServer {
    /// Starts the server on a random port and returns once it listens.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] without `node` on `PATH` or without
    /// `npm ci` having been run; others when it does not start.
    pub fn start(options: GraphqlOptions) -> Result<Self, LaunchError> {
        let (process, port) = launch(&options, 0)?;
        Ok(GraphqlServer {
            process,
            options,
            port,
        })
    }

    /// The URL clients dial (`ws://127.0.0.1:PORT/graphql`); offer the
    /// `graphql-transport-ws` subprotocol.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/graphql", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the server and starts a new one on the same port; every
    /// subscription is gone until clients subscribe again.
    ///
    /// # Errors
    /// When the new server does not start.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.process.kill();
        let (process, _) = launch(&self.options, self.port)?;
        self.process = process;
        Ok(())
    }

    /// The last lines the server printed.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn launch(options: &GraphqlOptions, port: u16) -> Result<(Process, u16), LaunchError> {
    let node = find_program("node").ok_or(LaunchError::Missing {
        what: "node".into(),
        hint: "install Node.js (apt-get install nodejs npm), then run `npm ci` in tests/graphql-server",
    })?;
    let dir = server_dir();
    if !dir.join("node_modules/graphql-ws/package.json").is_file() {
        return Err(LaunchError::Missing {
            what: format!("{}/node_modules", dir.display()),
            hint: "run `npm ci` in tests/graphql-server",
        });
    }
    let mut command = Command::new(node);
    command
        .current_dir(&dir)
        .arg("server.mjs")
        .args(["--port", &port.to_string()])
        .args(["--keepalive", &options.keepalive.as_millis().to_string()])
        .args([
            "--init-timeout",
            &options.init_timeout.as_millis().to_string(),
        ]);
    if let Some(token) = &options.token {
        command.args(["--token", token]);
    }
    let mut process = Process::spawn("graphql-ws server", command, true, true)?;
    let port =
        process.wait_for(|line| line.strip_prefix("listening ")?.trim().parse::<u16>().ok())?;
    Ok((process, port))
}
