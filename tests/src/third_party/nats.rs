//! `nats-server` (2.9 or later) with a plain-text WebSocket listener, on
//! random 127.0.0.1 ports.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::{find_program, LaunchError, Process, TempDir};

/// How clients must authenticate.
#[derive(Clone, Debug, Default)]
pub enum NatsAuth {
    /// Anyone may connect.
    #[default]
    None,
    /// CONNECT must carry this user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// CONNECT must carry this `auth_token`.
    Token(String),
}

/// What the launcher writes into the server's configuration file.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Authentication.
    pub auth: NatsAuth,
    /// How often the server PINGs each client (NATS' own keepalive).
    pub ping_interval: Duration,
    /// How long lame duck mode waits before it starts closing clients.
    pub lame_duck_grace_period: Duration,
    /// Over how long lame duck mode spreads the closes (the server's
    /// minimum is 30 s).
    pub lame_duck_duration: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            auth: NatsAuth::None,
            ping_interval: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(1),
            lame_duck_duration: Duration::from_secs(30),
        }
    }
}

/// A running `nats-server`, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    process: Process,
    options: NatsOptions,
    dir: TempDir,
    client: SocketAddr,
    websocket: SocketAddr,
}

impl NatsServer {
    /// Starts a server on random ports and returns once it says it is ready.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] without `nats-server` on `PATH`; others when
    /// it does not start.
    pub fn start(options: NatsOptions) -> Result<Self, LaunchError> {
        let dir = TempDir::new("redial-nats")?;
        let (process, client, websocket) = launch(&dir, &options, None)?;
        Ok(NatsServer {
            process,
            options,
            dir,
            client,
            websocket,
        })
    }

    /// The WebSocket URL clients dial (`ws://127.0.0.1:PORT`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.websocket)
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.websocket
    }

    /// The plain TCP client listener's address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the server and starts a new one on the same ports (every
    /// client is dropped; subscriptions are gone until clients renew them).
    ///
    /// # Errors
    /// When the new server does not start.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.process.kill();
        let (process, _, _) = launch(
            &self.dir,
            &self.options,
            Some((self.client, self.websocket)),
        )?;
        self.process = process;
        Ok(())
    }

    /// Puts the server into lame duck mode (`nats-server --signal ldm=PID`):
    /// it sends its clients an INFO with `ldm: true`, waits the grace
    /// period, then closes them spread over the lame duck duration.
    ///
    /// # Errors
    /// When the signal command fails.
    pub fn signal_lame_duck(&self) -> Result<(), LaunchError> {
        let program = find_program("nats-server").ok_or_else(missing)?;
        let output = Command::new(program)
            .arg("--signal")
            .arg(format!("ldm={}", self.pid()))
            .output()
            .map_err(|source| LaunchError::Io {
                what: "running nats-server --signal ldm".into(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(LaunchError::Control(format!(
                "nats-server --signal ldm={} failed: {}",
                self.pid(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// The last lines the server logged.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn missing() -> LaunchError {
    LaunchError::Missing {
        what: "nats-server".into(),
        hint: "install it with `apt-get install nats-server` (2.9 or later)",
    }
}

/// Writes the configuration and starts the server, on `ports` or random
/// ones, returning the addresses it reports.
fn launch(
    dir: &TempDir,
    options: &NatsOptions,
    ports: Option<(SocketAddr, SocketAddr)>,
) -> Result<(Process, SocketAddr, SocketAddr), LaunchError> {
    let program = find_program("nats-server").ok_or_else(missing)?;
    let (client_port, ws_port) = ports.map_or((-1, -1), |(c, w)| {
        (i32::from(c.port()), i32::from(w.port()))
    });
    let auth = match &options.auth {
        NatsAuth::None => String::new(),
        NatsAuth::UserPassword { user, password } => {
            format!("authorization {{ user: {user:?}, password: {password:?} }}\n")
        }
        NatsAuth::Token(token) => format!("authorization {{ token: {token:?} }}\n"),
    };
    let config = format!(
        "host: 127.0.0.1\nport: {client_port}\n\
         websocket {{\n  host: 127.0.0.1\n  port: {ws_port}\n  no_tls: true\n}}\n\
         ping_interval: \"{}ms\"\n\
         lame_duck_grace_period: \"{}ms\"\n\
         lame_duck_duration: \"{}ms\"\n{auth}",
        options.ping_interval.as_millis(),
        options.lame_duck_grace_period.as_millis(),
        options.lame_duck_duration.as_millis(),
    );
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, config).map_err(|source| LaunchError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    let mut command = Command::new(program);
    command.arg("-c").arg(&path);
    let mut process = Process::spawn("nats-server", command, false, true)?;
    let mut client = None;
    let mut websocket = None;
    process.wait_for(|line| {
        if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
            client = addr.trim().parse::<SocketAddr>().ok();
        }
        if let Some(url) = line
            .split("Listening for websocket clients on ws://")
            .nth(1)
        {
            websocket = url.trim().parse::<SocketAddr>().ok();
        }
        line.contains("Server is ready").then_some(())
    })?;
    match (client, websocket) {
        (Some(client), Some(websocket)) => Ok((process, client, websocket)),
        _ => Err(LaunchError::NotReady {
            what: "nats-server",
            why: "it did not report both listeners",
            log: process.log(),
        }),
    }
}
