//! A scripted loopback WebSocket server for the adapters' tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// How the server answers the upgrade of connection number `n` (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Upgrade and keep the connection.
    Accept,
    /// Answer with this HTTP status (and `Retry-After: secs`).
    Reject {
        /// The status.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
}

/// What the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// An upgrade request arrived (accepted or not).
    Dialed {
        /// The connection number.
        conn: usize,
        /// When, on the server runtime's clock (tokio's: virtual under a
        /// paused test clock).
        at: Instant,
        /// The request's path and query.
        path: String,
        /// The `Authorization` header, if any.
        authorization: Option<String>,
    },
    /// A text message.
    Text {
        /// The connection number.
        conn: usize,
        /// The text.
        text: String,
    },
    /// The client closed: its close code, or `None` for a drop.
    Closed {
        /// The connection number.
        conn: usize,
        /// The client's close code.
        code: Option<u16>,
    },
}

#[derive(Debug)]
enum ConnCommand {
    Text(String),
    Drop,
    Close(u16, String),
    StopReading,
    ResumeReading,
}

type Script = Arc<dyn Fn(usize) -> Plan + Send + Sync>;

#[derive(Default)]
struct Conns {
    commands: Mutex<Vec<Option<mpsc::UnboundedSender<ConnCommand>>>>,
    dials: AtomicUsize,
}

/// A WebSocket server on 127.0.0.1 that follows a script, reports what it
/// sees, and does what the test tells each connection to do.
///
/// [`start`](Self::start) runs it on its own thread with its own tokio
/// runtime, so tests on any runtime can use it; [`start_local`](Self::start_local)
/// runs it on the calling tokio runtime (for paused-clock tests, where a
/// server elsewhere would let the clock jump while waiting for it). Its
/// event buffer is unbounded: it is a test tool.
pub struct ScriptedPeer {
    url: String,
    events: mpsc::UnboundedReceiver<ServerEvent>,
    conns: Arc<Conns>,
    certificate: Option<(CertificateDer<'static>, String)>,
    _shutdown: oneshot::Sender<()>,
}

impl std::fmt::Debug for ScriptedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedPeer")
            .field("url", &self.url)
            .finish()
    }
}

impl ScriptedPeer {
    /// Starts a server on its own thread.
    pub fn start(script: impl Fn(usize) -> Plan + Send + Sync + 'static) -> std::io::Result<Self> {
        Self::start_on_thread(Arc::new(script), None)
    }

    /// Starts a `wss://` server on its own thread, with a self-signed
    /// certificate for 127.0.0.1 made on the spot; see
    /// [`certificate`](Self::certificate).
    pub fn start_tls(
        script: impl Fn(usize) -> Plan + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .map_err(std::io::Error::other)?;
        let certificate = made.cert.der().clone();
        let pem = made.cert.pem();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .map_err(std::io::Error::other)?;
        let mut server =
            Self::start_on_thread(Arc::new(script), Some(TlsAcceptor::from(Arc::new(config))))?;
        server.url = server.url.replacen("ws://", "wss://", 1);
        server.certificate = Some((certificate, pem));
        Ok(server)
    }

    /// The self-signed certificate of a [`start_tls`](Self::start_tls) server.
    pub fn certificate(&self) -> Option<&CertificateDer<'static>> {
        self.certificate.as_ref().map(|(der, _)| der)
    }

    /// The same certificate as PEM text, as a CA file would hold it.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate.as_ref().map(|(_, pem)| pem.as_str())
    }

    /// Starts a server on its own thread on 127.0.0.1:`port`, for a test
    /// that brings a node back at the address it had.
    pub fn start_on(
        port: u16,
        script: impl Fn(usize) -> Plan + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::start_on_thread_at(port, Arc::new(script), None)
    }

    fn start_on_thread(script: Script, tls: Option<TlsAcceptor>) -> std::io::Result<Self> {
        Self::start_on_thread_at(0, script, tls)
    }

    fn start_on_thread_at(
        port: u16,
        script: Script,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let (listener, server, task) = Self::prepare(port, script, tls)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("redial-test-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    if let Ok(listener) = TcpListener::from_std(listener) {
                        task(listener).await;
                    }
                })
            })?;
        Ok(server)
    }

    /// Starts a server as a task on the current tokio runtime.
    pub fn start_local(
        script: impl Fn(usize) -> Plan + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (listener, server, task) = Self::prepare(0, Arc::new(script), None)?;
        let listener = TcpListener::from_std(listener)?;
        tokio::spawn(task(listener));
        Ok(server)
    }

    #[allow(clippy::type_complexity)]
    fn prepare(
        port: u16,
        script: Script,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<(
        std::net::TcpListener,
        ScriptedPeer,
        impl FnOnce(TcpListener) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    )> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let url = format!("ws://{}/socket", listener.local_addr()?);
        let (event_tx, events) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let conns = Arc::new(Conns::default());
        let server = ScriptedPeer {
            url,
            events,
            conns: Arc::clone(&conns),
            certificate: None,
            _shutdown: shutdown_tx,
        };
        let task = move |listener: TcpListener| -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            Box::pin(async move {
                tokio::select! {
                    _ = accept_loop(listener, script, event_tx, conns, tls) => {}
                    _ = shutdown_rx => {}
                }
            })
        };
        Ok((listener, server, task))
    }

    /// The URL to dial.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Upgrade requests seen so far.
    pub fn dials(&self) -> usize {
        self.conns.dials.load(Ordering::SeqCst)
    }

    /// The next thing the server saw; `None` if the server stopped.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        self.events.recv().await
    }

    /// The next event, if one is already there.
    pub fn try_next(&mut self) -> Option<ServerEvent> {
        self.events.try_recv().ok()
    }

    /// Sends a text message on connection `conn`.
    pub fn send_text(&self, conn: usize, text: impl Into<String>) {
        self.command(conn, ConnCommand::Text(text.into()));
    }

    /// Drops connection `conn` without a close frame.
    pub fn drop_conn(&self, conn: usize) {
        self.command(conn, ConnCommand::Drop);
    }

    /// Closes connection `conn` with this code and reason.
    pub fn close(&self, conn: usize, code: u16, reason: impl Into<String>) {
        self.command(conn, ConnCommand::Close(code, reason.into()));
    }

    /// Stops reading connection `conn`: pings go unanswered (half-open).
    pub fn stop_reading(&self, conn: usize) {
        self.command(conn, ConnCommand::StopReading);
    }

    /// Reads connection `conn` again after [`stop_reading`](Self::stop_reading).
    pub fn resume_reading(&self, conn: usize) {
        self.command(conn, ConnCommand::ResumeReading);
    }

    fn command(&self, conn: usize, command: ConnCommand) {
        let commands = self
            .conns
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(Some(tx)) = commands.get(conn) {
            let _ = tx.send(command);
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    script: Script,
    events: mpsc::UnboundedSender<ServerEvent>,
    conns: Arc<Conns>,
    tls: Option<TlsAcceptor>,
) {
    let mut n = 0;
    while let Ok((stream, _)) = listener.accept().await {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut commands = conns.commands.lock().unwrap_or_else(|e| e.into_inner());
            commands.push(Some(tx));
        }
        let plan = script(n);
        let (events, conns, tls) = (events.clone(), Arc::clone(&conns), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(stream, n, plan, events, rx, conns).await,
                // A client that refuses the certificate ends here.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve(stream, n, plan, events, rx, conns).await;
                    }
                }
            }
        });
        n += 1;
    }
}

// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
async fn serve(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    conn: usize,
    plan: Plan,
    events: mpsc::UnboundedSender<ServerEvent>,
    mut commands: mpsc::UnboundedReceiver<ConnCommand>,
    conns: Arc<Conns>,
) {
    let callback = |request: &Request, response: Response| {
        conns.dials.fetch_add(1, Ordering::SeqCst);
        let _ = events.send(ServerEvent::Dialed {
            conn,
            at: tokio::time::Instant::now().into_std(),
            path: request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            authorization: request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        match &plan {
            Plan::Accept => Ok(response),
            Plan::Reject {
                status,
                retry_after,
            } => {
                let mut error = ErrorResponse::new(Some("refused".to_owned()));
                *error.status_mut() =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                if let Some(secs) = retry_after {
                    if let Ok(v) = secs.to_string().parse() {
                        error.headers_mut().insert("retry-after", v);
                    }
                }
                Err(error)
            }
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let mut reading = true;
    let mut close_seen = false;
    loop {
        tokio::select! {
            message = ws.next(), if reading => match message {
                Some(Ok(Message::Text(t))) => {
                    let _ = events.send(ServerEvent::Text { conn, text: t.to_string() });
                }
                Some(Ok(Message::Close(frame))) => {
                    close_seen = true;
                    let code = frame.map(|f| u16::from(f.code));
                    let _ = events.send(ServerEvent::Closed { conn, code });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    if !close_seen {
                        let _ = events.send(ServerEvent::Closed { conn, code: None });
                    }
                    return;
                }
            },
            command = commands.recv() => match command {
                Some(ConnCommand::Text(t)) => {
                    let _ = ws.send(Message::text(t)).await;
                }
                Some(ConnCommand::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                    close_seen = true;
                }
                Some(ConnCommand::StopReading) => reading = false,
                Some(ConnCommand::ResumeReading) => reading = true,
                Some(ConnCommand::Drop) | None => return,
            },
        }
    }
}
