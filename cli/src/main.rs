//! `redial`: a reconnecting WebSocket client for the shell, a Wire server
//! (redial-server) standalone, and the chaos demo. See `cli/README.md`.
#![forbid(unsafe_code)]

mod args;
mod client;
mod demo;
mod metrics;
mod report;
mod serve;
mod signals;
mod token;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

/// The exit codes, as documented in `cli/README.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Closed cleanly (stdin EOF, Ctrl-C, or `serve` stopped).
    Clean = 0,
    /// Anything else: IO failures, undelivered messages, a failed demo.
    Failure = 1,
    /// Bad arguments or configuration; nothing was sent.
    Usage = 2,
    /// The server ended the session for good (terminal close code or
    /// handshake status).
    Rejected = 3,
    /// `--max-reconnect-attempts` ran out.
    Exhausted = 4,
    /// A second Ctrl-C cut the graceful close short.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error that ends the program, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags, URL or configuration: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Anything else: exit 1.
    #[error("{0}")]
    Failure(String),
}

impl CliError {
    fn exit(&self) -> Exit {
        match self {
            CliError::Usage(_) => Exit::Usage,
            CliError::Failure(_) => Exit::Failure,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redial: cannot start the runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Serve(a)) => serve::run(*a).await,
            Some(Command::Demo(a)) => demo::run(a).await,
            None => client::run(cli.client).await,
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redial: {e}");
            e.exit()
        }
    };
    let _ = std::io::stdout().flush();
    // The stdin reader thread may be blocked in a read; don't wait for it.
    runtime.shutdown_background();
    code.into()
}

/// Help and version go to stdout with exit 0; every other parse error is one
/// line on stderr and exit 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                Exit::Usage.into()
            } else {
                Exit::Clean.into()
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            // "the following required arguments were not provided:" names
            // them on the next line.
            if message.ends_with(':') {
                if let Some(next) = lines.next() {
                    message = format!("{message} {next}");
                }
            }
            eprintln!("redial: {message} (see redial --help)");
            Exit::Usage.into()
        }
    }
}
