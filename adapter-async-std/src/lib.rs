#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use async_executor::Executor;
use async_tungstenite::smol::ConnectStream;
use async_tungstenite::WebSocketStream;
use redial_driver::tungstenite::handshake::client::Request;
use redial_driver::tungstenite::protocol::WebSocketConfig;
use redial_driver::tungstenite::Error as WsError;
use redial_driver::{BoxFuture, Runtime, TlsTrust};

pub use redial_core;
/// rustls and PEM reading, for [`Builder::root_certificates`].
#[cfg(feature = "rustls")]
pub use redial_driver::tls;
/// tungstenite, for [`Builder::websocket_config`] (message size limits).
pub use redial_driver::tungstenite;
pub use redial_driver::{
    BuildError, Driver, Events, Handle, SpawnError, TokenPlacement, TokenProvider,
};

/// Configures a connection; see [`builder`].
pub type Builder = redial_driver::Builder<AsyncIo>;

/// A builder for `url` (`ws://` or `wss://`) with the default
/// [`Config`](redial_core::Config) and the [`Raw`](redial_core::Raw)
/// protocol. The driver task runs on a small built-in executor thread; use
/// [`AsyncIo::with_spawner`] to run it on yours.
pub fn builder(url: impl Into<String>) -> Builder {
    Builder::new(AsyncIo::default(), url)
}

type Spawner = Arc<dyn Fn(BoxFuture<()>) + Send + Sync>;

/// The runtime-neutral [`Runtime`]: `async-net` sockets, `async-io`
/// timers and the system clock. Works under async-std, smol, or anything
/// else, since `async-io` drives its own reactor.
#[derive(Clone, Default)]
pub struct AsyncIo {
    spawner: Option<Spawner>,
}

impl fmt::Debug for AsyncIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncIo")
            .field("own_spawner", &self.spawner.is_some())
            .finish()
    }
}

impl AsyncIo {
    /// Runs driver tasks with `spawn`, for example
    /// `|task| { async_std::task::spawn(task); }` or
    /// `|task| smol::spawn(task).detach()`.
    pub fn with_spawner(spawn: impl Fn(BoxFuture<()>) + Send + Sync + 'static) -> Self {
        AsyncIo {
            spawner: Some(Arc::new(spawn)),
        }
    }
}

/// A timer on `async-io`'s reactor.
#[derive(Debug)]
pub struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Runtime for AsyncIo {
    type Socket = WebSocketStream<ConnectStream>;
    type Sleep = Sleep;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep(async_io::Timer::at(deadline))
    }

    fn dial(
        &self,
        request: Request,
        config: WebSocketConfig,
        trust: TlsTrust,
    ) -> BoxFuture<Result<Self::Socket, WsError>> {
        Box::pin(async move {
            let (socket, _response) = connect(request, config, trust).await?;
            Ok(socket)
        })
    }

    fn spawn(&self, task: BoxFuture<()>) -> Result<(), SpawnError> {
        match &self.spawner {
            Some(spawn) => spawn(task),
            None => executor()?.spawn(task).detach(),
        }
        Ok(())
    }
}

type Connected = (
    WebSocketStream<ConnectStream>,
    async_tungstenite::tungstenite::handshake::client::Response,
);

#[cfg(feature = "rustls")]
async fn connect(
    request: Request,
    config: WebSocketConfig,
    trust: TlsTrust,
) -> Result<Connected, WsError> {
    let connector = if request.uri().scheme_str() == Some("wss") {
        let tls = trust
            .client_config()
            .map_err(|e| WsError::Io(std::io::Error::other(e)))?;
        Some(futures_rustls::TlsConnector::from(tls))
    } else {
        None
    };
    async_tungstenite::smol::connect_async_with_tls_connector_and_config(
        request,
        connector,
        Some(config),
    )
    .await
}

#[cfg(not(feature = "rustls"))]
async fn connect(
    request: Request,
    config: WebSocketConfig,
    _trust: TlsTrust,
) -> Result<Connected, WsError> {
    async_tungstenite::smol::connect_async_with_config(request, Some(config)).await
}

/// The built-in executor: one thread, started on first use, running every
/// driver task of the process (they only wait on IO and timers).
fn executor() -> Result<&'static Executor<'static>, SpawnError> {
    static EXECUTOR: Executor<'static> = Executor::new();
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("redial-driver".into())
                .spawn(|| async_io::block_on(EXECUTOR.run(std::future::pending::<()>())))
                .map(|_| ())
                .map_err(|e| format!("cannot start the executor thread: {e}"))
        })
        .clone()
        .map_err(SpawnError)?;
    Ok(&EXECUTOR)
}
