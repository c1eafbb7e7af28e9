//! `mosquitto` (2.0) with a plain MQTT listener and a WebSocket listener on
//! random 127.0.0.1 ports, persistence on, everything in a temporary
//! directory.
//!
//! The plain listener comes first because mosquitto 2.0.11 refuses a
//! configuration whose only listener speaks WebSocket. Restarts keep both
//! ports and the persistence file: [`Mosquitto::restart_graceful`] stops the
//! broker with SIGTERM, on which it saves its in-memory database, and
//! [`Mosquitto::restart_killed`] with SIGKILL, on which it saves nothing
//! (what it acknowledged since its last save is gone).

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{find_program, free_port, LaunchError, Process, TempDir};

/// How many port pairs to try when another process takes one picked.
const PORT_TRIES: usize = 5;
/// How long a SIGTERM may take (saving the database) before a SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start the broker.
#[derive(Clone, Debug, Default)]
pub struct MosquittoOptions {
    /// A user name and password the broker requires; `None` lets anyone in.
    pub credentials: Option<(String, String)>,
}

/// A running `mosquitto`, killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    process: Process,
    config: PathBuf,
    tcp: SocketAddr,
    ws: SocketAddr,
    // Dropped after the process: its persistence file lives here.
    dir: TempDir,
}

impl Mosquitto {
    /// Starts a broker and returns once it says it is running.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] without `mosquitto` (or, with credentials,
    /// `mosquitto_passwd`) on `PATH`; others when it does not start.
    pub fn start(options: MosquittoOptions) -> Result<Self, LaunchError> {
        let program = find_program("mosquitto").ok_or_else(missing)?;
        let dir = TempDir::new("redial-mosquitto")?;
        let passwords = match &options.credentials {
            Some((user, password)) => Some(password_file(&dir, user, password)?),
            None => None,
        };
        let mut last = None;
        for _ in 0..PORT_TRIES {
            let (tcp, ws) = (free_port()?, free_port()?);
            if tcp == ws {
                continue;
            }
            let config = write_config(&dir, tcp, ws, passwords.as_deref())?;
            match launch(&program, &config) {
                Ok(process) => {
                    return Ok(Mosquitto {
                        process,
                        config,
                        tcp,
                        ws,
                        dir,
                    })
                }
                // A port was taken between picking and binding: others.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(LaunchError::Control("no ports tried".into())))
    }

    /// Stops the broker with SIGTERM (it saves its database), then starts
    /// it again on the same ports from that database.
    ///
    /// # Errors
    /// When signalling fails or the new broker does not start.
    pub fn restart_graceful(&mut self) -> Result<(), LaunchError> {
        self.process.terminate(STOP_TIMEOUT)?;
        self.relaunch()
    }

    /// Kills the broker with SIGKILL (nothing saved since its last save),
    /// then starts it again on the same ports.
    ///
    /// # Errors
    /// When the new broker does not start.
    pub fn restart_killed(&mut self) -> Result<(), LaunchError> {
        self.process.kill();
        self.relaunch()
    }

    fn relaunch(&mut self) -> Result<(), LaunchError> {
        let program = find_program("mosquitto").ok_or_else(missing)?;
        self.process = launch(&program, &self.config)?;
        Ok(())
    }

    /// The WebSocket URL clients connect to (subprotocol `mqtt`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/mqtt", self.ws)
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws
    }

    /// The plain MQTT listener's address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The last lines the broker logged.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The temporary directory holding the configuration and database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn missing() -> LaunchError {
    LaunchError::Missing {
        what: "mosquitto".into(),
        hint: "install it with `apt-get install mosquitto`",
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> LaunchError {
    move |source| LaunchError::Io { what, source }
}

/// A password file made by `mosquitto_passwd` holding one user.
fn password_file(dir: &TempDir, user: &str, password: &str) -> Result<PathBuf, LaunchError> {
    let program = find_program("mosquitto_passwd").ok_or_else(missing)?;
    let file = dir.path().join("passwords");
    let output = Command::new(program)
        .arg("-b")
        .arg("-c")
        .arg(&file)
        .arg(user)
        .arg(password)
        .output()
        .map_err(io("running mosquitto_passwd".into()))?;
    if !output.status.success() {
        return Err(LaunchError::Control(format!(
            "mosquitto_passwd failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(file)
}

/// Writes `mosquitto.conf` into `dir` and returns its path.
fn write_config(
    dir: &TempDir,
    tcp: SocketAddr,
    ws: SocketAddr,
    passwords: Option<&Path>,
) -> Result<PathBuf, LaunchError> {
    let path = dir.path().join("mosquitto.conf");
    let mut config = String::new();
    // Started as root, mosquitto drops to the `mosquitto` user, which cannot
    // write our temporary directory: stay whoever owns it.
    let owner = std::fs::metadata(dir.path())
        .map_err(io(format!("reading {}", dir.path().display())))?
        .uid();
    if owner == 0 {
        config.push_str("user root\n");
    }
    config.push_str(&format!("listener {} 127.0.0.1\n", tcp.port()));
    config.push_str(&format!("listener {} 127.0.0.1\n", ws.port()));
    config.push_str("protocol websockets\n");
    match passwords {
        Some(file) => {
            config.push_str("allow_anonymous false\n");
            config.push_str(&format!("password_file {}\n", file.display()));
        }
        None => config.push_str("allow_anonymous true\n"),
    }
    config.push_str("persistence true\n");
    // The trailing slash: mosquitto appends the file name as is.
    config.push_str(&format!("persistence_location {}/\n", dir.path().display()));
    config.push_str("log_dest stderr\n");
    for kind in ["error", "warning", "notice", "information"] {
        config.push_str(&format!("log_type {kind}\n"));
    }
    std::fs::write(&path, config).map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// Starts `mosquitto -c config` and waits for its "running" line.
fn launch(program: &Path, config: &Path) -> Result<Process, LaunchError> {
    let mut command = Command::new(program);
    command.arg("-c").arg(config);
    let mut process = Process::spawn("mosquitto", command, true, true)?;
    process.wait_for(|line| {
        (line.contains("mosquitto version") && line.ends_with(" running")).then_some(())
    })?;
    Ok(process)
}
