//! The Node Socket.IO 4.8 server in `tests/socketio-server/`, on a random
//! 127.0.0.1 port, with connection state recovery on: the in-memory
//! adapter, or the Redis streams adapter on a given Redis so that recovery
//! survives a restart. `npm ci` in that directory installs what it needs;
//! `.ci/run` does it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{find_program, LaunchError, Process};

/// The server's settings (passed as arguments to `server.mjs`).
#[derive(Clone, Debug)]
pub struct SocketIoOptions {
    /// How long after a disconnection the server can still recover the
    /// session (`maxDisconnectionDuration`).
    pub recovery_window: Duration,
    /// The Engine.IO ping interval.
    pub ping_interval: Duration,
    /// The Engine.IO ping timeout.
    pub ping_timeout: Duration,
    /// A Redis URL: the recovery state lives there (Redis streams adapter)
    /// rather than in the process.
    pub redis: Option<String>,
}

impl Default for SocketIoOptions {
    fn default() -> Self {
        SocketIoOptions {
            recovery_window: Duration::from_secs(120),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            redis: None,
        }
    }
}

/// A running Socket.IO server, killed on drop.
#[derive(Debug)]
pub struct SocketIoServer {
    process: Process,
    options: SocketIoOptions,
    port: u16,
}

/// The directory of `server.mjs` and its `package.json`.
pub fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio-server")
}

impl SocketIoServer {
    /// Starts the server on a random port and returns once it listens.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] without `node` on `PATH` or without
    /// `npm ci` having been run; others when it does not start.
    pub fn start(options: SocketIoOptions) -> Result<Self, LaunchError> {
        let (process, port) = launch(&options, 0)?;
        Ok(SocketIoServer {
            process,
            options,
            port,
        })
    }

    /// The URL clients dial: the Engine.IO endpoint with the WebSocket
    /// transport.
    pub fn url(&self) -> String {
        format!(
            "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
            self.port
        )
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Broadcasts `event` `n` times to every socket, with the arguments 1
    /// to `n`; returns once the server has emitted them.
    ///
    /// # Errors
    /// When the control request fails.
    pub fn emit(&self, event: &str, n: u32) -> Result<(), LaunchError> {
        self.control(&format!("/control/emit?n={n}&event={event}"))
            .map(drop)
    }

    /// Disconnects every socket on purpose (the client sees "io server
    /// disconnect"); returns how many there were.
    ///
    /// # Errors
    /// When the control request fails.
    pub fn kick(&self) -> Result<usize, LaunchError> {
        let answer = self.control("/control/kick")?;
        Ok(answer
            .strip_prefix("kicked ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Stops the server with SIGTERM (it closes every socket as a server
    /// shutting down and lets the adapter save the sessions) and starts a
    /// new one on the same port and Redis: with Redis the recovery state
    /// survives, without it is gone.
    ///
    /// # Errors
    /// When the old server cannot be signalled or the new one does not
    /// start.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.process.terminate(Duration::from_secs(5))?;
        let (process, _) = launch(&self.options, self.port)?;
        self.process = process;
        Ok(())
    }

    /// The last lines the server printed.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// One control request; the body's line.
    fn control(&self, path: &str) -> Result<String, LaunchError> {
        let io = |source| LaunchError::Io {
            what: format!("control request {path}"),
            source,
        };
        let mut stream = TcpStream::connect(self.addr()).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .map_err(io)?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(io)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(LaunchError::NotReady {
                what: "socket.io control",
                why: "the control request was refused",
                log: response.clone(),
            });
        }
        Ok(body.trim().to_owned())
    }
}

fn launch(options: &SocketIoOptions, port: u16) -> Result<(Process, u16), LaunchError> {
    let node = find_program("node").ok_or(LaunchError::Missing {
        what: "node".into(),
        hint: "install Node.js (apt-get install nodejs npm), then run `npm ci` in tests/socketio-server",
    })?;
    let dir = server_dir();
    if !dir.join("node_modules/socket.io/package.json").is_file() {
        return Err(LaunchError::Missing {
            what: format!("{}/node_modules", dir.display()),
            hint: "run `npm ci` in tests/socketio-server",
        });
    }
    let ms = |d: Duration| d.as_millis().to_string();
    let mut command = Command::new(node);
    command
        .current_dir(&dir)
        .arg("server.mjs")
        .args(["--port", &port.to_string()])
        .args(["--recovery-ms", &ms(options.recovery_window)])
        .args(["--ping-interval", &ms(options.ping_interval)])
        .args(["--ping-timeout", &ms(options.ping_timeout)]);
    if let Some(redis) = &options.redis {
        command.args(["--redis", redis]);
    }
    let mut process = Process::spawn("socket.io server", command, true, true)?;
    let port =
        process.wait_for(|line| line.strip_prefix("listening ")?.trim().parse::<u16>().ok())?;
    Ok((process, port))
}
