//! `redis-server` on a random 127.0.0.1 port, with its working directory in
//! a temporary directory and persistence switched off.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{find_program, free_port, LaunchError, Process, TempDir};

/// How many ports to try when another process takes the one picked.
const PORT_TRIES: usize = 5;

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: Process,
    dir: TempDir,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server on a free port and returns once it answers PING.
    ///
    /// # Errors
    /// [`LaunchError::Missing`] without `redis-server` on `PATH`; others when
    /// it does not start.
    pub fn start() -> Result<Self, LaunchError> {
        let program = find_program("redis-server").ok_or_else(missing)?;
        let dir = TempDir::new("redial-redis")?;
        let mut last = None;
        for _ in 0..PORT_TRIES {
            let addr = free_port()?;
            match launch(&program, &dir, addr) {
                Ok(process) => return Ok(RedisServer { process, dir, addr }),
                // The port was taken between picking and binding: another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(LaunchError::Control("no port tried".into())))
    }

    /// Kills the server and starts an empty one on the same port (nothing
    /// is persisted): every client connection drops and all data is gone.
    ///
    /// # Errors
    /// When the new server does not start.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.process.kill();
        let program = find_program("redis-server").ok_or_else(missing)?;
        self.process = launch(&program, &self.dir, self.addr)?;
        Ok(())
    }

    /// The URL clients connect to (`redis://127.0.0.1:PORT/`).
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The last lines the server logged.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// `PING` answered with `+PONG`: the server takes commands.
fn answers(addr: SocketAddr) -> Result<(), LaunchError> {
    let io = |source| LaunchError::Io {
        what: format!("pinging redis-server on {addr}"),
        source,
    };
    let mut stream = TcpStream::connect(addr).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    stream.write_all(b"PING\r\n").map_err(io)?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).map_err(io)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(LaunchError::Control(format!(
            "redis-server answered PING with {:?}",
            String::from_utf8_lossy(&reply)
        )))
    }
}

fn missing() -> LaunchError {
    LaunchError::Missing {
        what: "redis-server".into(),
        hint: "install it with `apt-get install redis-server`",
    }
}

/// Starts `redis-server` on `addr` and waits until it answers.
fn launch(program: &Path, dir: &TempDir, addr: SocketAddr) -> Result<Process, LaunchError> {
    let mut command = Command::new(program);
    // Everything on the command line, no configuration file: no snapshot or
    // append-only file, nothing written outside `dir`.
    command
        .current_dir(dir.path())
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(addr.port().to_string())
        .arg("--dir")
        .arg(dir.path())
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "yes", "--logfile", ""]);
    let mut process = Process::spawn("redis-server", command, true, true)?;
    process.wait_for(|line| line.contains("Ready to accept connections").then_some(()))?;
    answers(addr)?;
    Ok(process)
}
