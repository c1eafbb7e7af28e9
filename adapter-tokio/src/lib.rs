#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::Instant;

use redial_driver::tungstenite::handshake::client::Request;
use redial_driver::tungstenite::protocol::WebSocketConfig;
use redial_driver::{BoxFuture, Runtime, TlsTrust};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use redial_core;
/// rustls and PEM reading, for [`Builder::root_certificates`].
#[cfg(feature = "rustls")]
pub use redial_driver::tls;
/// tungstenite, for [`Builder::websocket_config`] (message size limits).
pub use redial_driver::tungstenite;
pub use redial_driver::{
    BuildError, Driver, Events, Handle, SpawnError, TokenPlacement, TokenProvider,
};

/// Configures a connection on tokio; see [`builder`].
pub type Builder = redial_driver::Builder<Tokio>;

/// A builder for `url` (`ws://` or `wss://`) with the default
/// [`Config`](redial_core::Config) and the [`Raw`](redial_core::Raw)
/// protocol. [`Builder::connect`] must be called inside a tokio runtime.
pub fn builder(url: impl Into<String>) -> Builder {
    Builder::new(Tokio::default(), url)
}

/// The tokio [`Runtime`]: tokio's clock (so `start_paused` tests work),
/// tokio timers, `tokio-tungstenite` sockets, `tokio::spawn`.
#[derive(Debug, Clone, Default)]
pub struct Tokio {
    _private: (),
}

impl Runtime for Tokio {
    type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline))
    }

    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
        trust: TlsTrust,
    ) -> BoxFuture<Result<Self::Socket, tokio_tungstenite::tungstenite::Error>> {
        Box::pin(async move {
            let (socket, _response) = connect(request, config, trust).await?;
            Ok(socket)
        })
    }

    fn spawn(&self, task: BoxFuture<()>) -> Result<(), SpawnError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| SpawnError(format!("not inside a tokio runtime: {e}")))?;
        runtime.spawn(task);
        Ok(())
    }
}

type Connected = (
    WebSocketStream<MaybeTlsStream<TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
);

/// TCP (no Nagle: keepalive pings should not wait), TLS for `wss://` with
/// the shared rustls configuration, then the upgrade.
#[cfg(feature = "rustls")]
async fn connect(
    request: Request,
    config: WebSocketConfig,
    trust: TlsTrust,
) -> Result<Connected, tokio_tungstenite::tungstenite::Error> {
    let connector = if request.uri().scheme_str() == Some("wss") {
        let tls = trust
            .client_config()
            .map_err(|e| tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other(e)))?;
        Some(tokio_tungstenite::Connector::Rustls(tls))
    } else {
        None
    };
    tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector).await
}

#[cfg(not(feature = "rustls"))]
async fn connect(
    request: Request,
    config: WebSocketConfig,
    _trust: TlsTrust,
) -> Result<Connected, tokio_tungstenite::tungstenite::Error> {
    tokio_tungstenite::connect_async_with_config(request, Some(config), true).await
}
