//! Ctrl-C and SIGTERM, listened for from the start so a signal that arrives
//! early is not lost (or fatal).

use crate::CliError;

/// Registered signal streams; [`Signals::recv`] waits for the next one.
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening for SIGINT and SIGTERM (Ctrl-C elsewhere).
    /// Must be called inside the runtime.
    pub fn listen() -> Result<Signals, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let fail =
                |e: std::io::Error| CliError::Failure(format!("cannot listen for signals: {e}"));
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
                terminate: signal(SignalKind::terminate()).map_err(fail)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The next Ctrl-C or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
