//! The connection builder: one API shape for every runtime.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redial_core::{Config, Protocol, Raw, Session};
use tungstenite::protocol::WebSocketConfig;

use crate::driver::Driver;
use crate::handle::{Events, Handle, Shared};
use crate::request::{RequestTemplate, TokenPlacement};
use crate::token::TokenProvider;
use crate::trust::TlsTrust;
use crate::{Runtime, SpawnError};

/// Events buffered for a slow consumer before the driver waits (default).
pub const DEFAULT_EVENT_CAPACITY: usize = 64;
/// Messages handed to the session before senders wait for the driver
/// (default).
pub const DEFAULT_COMMAND_CAPACITY: usize = 64;
/// How long a closing socket may take to say goodbye (default).
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection could not be set up. Nothing was dialed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("invalid WebSocket URL: {0}")]
    InvalidUrl(String),
    /// [`Builder::endpoints`] was given an empty list.
    #[error("no endpoint to dial: the endpoint list is empty")]
    NoEndpoints,
    /// The endpoint list mixes `ws://` and `wss://`: rotating would send the
    /// token and the data in clear whenever a plain endpoint comes up.
    #[error("the endpoints mix ws:// and wss://; use one scheme for all")]
    MixedSchemes,
    /// More endpoints than a session rotates over (1024).
    #[error("too many endpoints: {0} (at most 1024)")]
    TooManyEndpoints(usize),
    /// A header name or value is not valid HTTP.
    #[error("invalid header {0:?}")]
    InvalidHeader(String),
    /// The token query parameter's name is empty.
    #[error("the token query parameter needs a name")]
    InvalidTokenParam,
    /// The config asks for a token before every dial
    /// (`ConfigBuilder::token_provider(true)`) but no provider was given.
    #[error("the config fetches a token before every dial, but no token provider was given")]
    MissingTokenProvider,
    /// A certificate given to `Builder::root_certificates` (cargo feature
    /// `rustls`) is not a usable trust anchor.
    #[error("invalid root certificate: {0}")]
    InvalidRootCertificate(String),
    /// A capacity is zero.
    #[error("{0} must be at least 1")]
    ZeroCapacity(&'static str),
    /// The client label is empty, longer than 64 bytes, or has a byte
    /// other than an ASCII letter, digit, `_`, `-` or `.`.
    #[error("invalid client label {0:?}: 1 to 64 of A-Z a-z 0-9 _ - .")]
    InvalidClientLabel(String),
    /// The runtime could not start the driver task.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

type MakeSession = Box<dyn FnOnce(Config) -> Session + Send>;

/// Configures one connection; [`connect`](Builder::connect) starts it.
///
/// The adapters give this a runtime (`redial_tokio::builder(url)`,
/// `redial_async_std::builder(url)`).
pub struct Builder<R: Runtime> {
    runtime: R,
    urls: Vec<String>,
    headers: Vec<(String, String)>,
    config: Config,
    protocol: ProtocolChoice,
    token: Option<Arc<dyn TokenProvider>>,
    /// `None` until the application chooses: the protocol's default then.
    placement: Option<TokenPlacement>,
    event_capacity: usize,
    command_capacity: usize,
    close_timeout: Duration,
    websocket: WebSocketConfig,
    /// The `client` label of spans and metrics (`Builder::client_label`).
    pub(crate) label: Option<String>,
    /// Extra roots for `wss://` (the webpki roots are always trusted).
    #[cfg(feature = "rustls")]
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl<R: Runtime> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("headers", &self.headers.len())
            .field("config", &self.config)
            .field("token_provider", &self.token.is_some())
            .field("placement", &self.placement)
            .field("event_capacity", &self.event_capacity)
            .field("command_capacity", &self.command_capacity)
            .field("close_timeout", &self.close_timeout)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Builder<R> {
    /// A builder for `url` (`ws://` or `wss://`) on `runtime`, with the
    /// default [`Config`] and the [`Raw`] protocol.
    pub fn new(runtime: R, url: impl Into<String>) -> Self {
        Builder {
            runtime,
            urls: vec![url.into()],
            headers: Vec::new(),
            config: Config::default(),
            protocol: ProtocolChoice::new(Raw::new()),
            token: None,
            placement: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            websocket: crate::default_websocket_config(),
            label: None,
            #[cfg(feature = "rustls")]
            roots: Vec::new(),
        }
    }

    /// Dial these endpoints instead of the one given to
    /// [`new`](Self::new): nodes of one cluster, each a `ws://` or `wss://`
    /// URL (all with the same scheme), validated like that one.
    ///
    /// The session picks the endpoint of every dial: it starts on one drawn
    /// from the config's seed (so a fleet spreads over the list), stays on
    /// it while connections hold, and moves to the next in the list after a
    /// failed dial, a connection lost before `stable_after`, or a server's
    /// GOING_AWAY. Events name the endpoint by its index in this list.
    /// Headers, token placement and trust apply to every endpoint. A list
    /// may repeat a URL to weight it. [`connect`](Self::connect) fails with
    /// [`BuildError::NoEndpoints`] for an empty list and
    /// [`BuildError::MixedSchemes`] when `ws://` and `wss://` are mixed.
    pub fn endpoints<U: Into<String>>(mut self, urls: impl IntoIterator<Item = U>) -> Self {
        self.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// The runtime this builder will spawn on.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Adds a header to every upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The session's configuration. Without a seed, one is drawn from OS
    /// randomness so a fleet does not jitter in lockstep.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The protocol ([`Raw`], the default, or [`Wire`](redial_core::Wire)).
    /// Its WebSocket subprotocol, if it has one, is requested on every dial;
    /// a later call replaces the protocol and what it requests.
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocol = ProtocolChoice::new(protocol);
        self
    }

    /// Fetches a token before every dial (this turns on the config's
    /// `token_provider`).
    pub fn token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.token = Some(Arc::new(provider));
        self
    }

    /// Where the token goes on the upgrade request.
    ///
    /// By default it is `Authorization: Bearer <token>`, except for
    /// protocols that send the token in their own opening message
    /// ([`Capabilities::token_in_handshake`](redial_core::protocol::Capabilities::token_in_handshake):
    /// graphql-ws, NATS, MQTT, Socket.IO), where it goes there only. Setting
    /// a placement puts it on the upgrade request as well, for servers that
    /// check it at the upgrade.
    pub fn token_placement(mut self, placement: TokenPlacement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Events buffered before the driver waits for the consumer (default 64).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Messages handed to the session before senders wait for the driver
    /// to take them (default 64): the most one flush carries from one
    /// sender that does not yield.
    pub fn command_capacity(mut self, capacity: usize) -> Self {
        self.command_capacity = capacity;
        self
    }

    /// tungstenite's socket settings for every dial (default:
    /// [`default_websocket_config`](crate::default_websocket_config): 16 KiB
    /// read and write buffers, tungstenite's 64 MiB message and 16 MiB frame
    /// limits). Start from that function to change one setting.
    pub fn websocket_config(mut self, config: WebSocketConfig) -> Self {
        self.websocket = config;
        self
    }

    /// Also trusts these root certificates on `wss://` dials, besides the
    /// webpki roots: a private CA, or a self-signed development server's
    /// certificate. [`tls::certificates_from_pem`](crate::tls::certificates_from_pem)
    /// reads them from a PEM file's text. A certificate that cannot be a
    /// trust anchor fails [`connect`](Self::connect) with
    /// [`BuildError::InvalidRootCertificate`].
    #[cfg(feature = "rustls")]
    pub fn root_certificates(
        mut self,
        certs: impl IntoIterator<Item = rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        self.roots.extend(certs);
        self
    }

    /// How long a socket being closed may take to send its close frame and
    /// hear the answer before it is dropped (default 2 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Starts connecting in a task on the runtime. The first events say how
    /// it goes.
    pub fn connect(self) -> Result<(Handle, Events), BuildError> {
        let runtime = self.runtime.clone();
        let (handle, events, driver) = self.start()?;
        runtime.spawn(Box::pin(driver.run()))?;
        Ok((handle, events))
    }

    /// Like [`connect`](Self::connect) but hands back the driver instead of
    /// spawning it, for callers with their own executor: run
    /// [`Driver::run`] to completion.
    pub fn start(self) -> Result<(Handle, Events, Driver<R>), BuildError> {
        let Builder {
            runtime,
            urls,
            headers,
            config,
            protocol,
            token,
            placement,
            event_capacity,
            command_capacity,
            close_timeout,
            websocket,
            label,
            #[cfg(feature = "rustls")]
            roots,
        } = self;
        if let Some(label) = label.as_deref().filter(|l| !crate::observe::valid_label(l)) {
            return Err(BuildError::InvalidClientLabel(label.to_owned()));
        }
        if event_capacity == 0 {
            return Err(BuildError::ZeroCapacity("event_capacity"));
        }
        if command_capacity == 0 {
            return Err(BuildError::ZeroCapacity("command_capacity"));
        }
        if config.token_provider() && token.is_none() {
            return Err(BuildError::MissingTokenProvider);
        }
        #[cfg(feature = "rustls")]
        let trust = if roots.is_empty() {
            TlsTrust::default()
        } else {
            TlsTrust::new(
                crate::tls::client_config_with(&roots)
                    .map_err(BuildError::InvalidRootCertificate)?,
            )
        };
        #[cfg(not(feature = "rustls"))]
        let trust = TlsTrust::default();
        let config = config.with_token_provider(token.is_some());
        let headers = protocol.upgrade_headers(headers);
        let placement = protocol.placement(placement);
        let templates = endpoint_templates(urls, &headers, placement.as_ref())?;
        let config = config.with_endpoints(templates.len());
        let config = match config.seed() {
            Some(_) => config,
            None => config.with_seed(os_seed()),
        };
        let mut session = (protocol.make_session)(config);
        session.handle_connect(runtime.now());
        let (event_tx, event_rx) = async_channel::bounded(event_capacity);
        let first = templates
            .get(session.endpoint())
            .map_or("", |t| t.endpoint());
        let protocol = session.protocol_name();
        let span = tracing::info_span!(
            "redial",
            endpoint = %first,
            endpoints = templates.len(),
            protocol,
            client = label.as_deref().unwrap_or_default(),
        );
        let clock = runtime.clone();
        let shared = Arc::new(Shared::new(
            session,
            command_capacity,
            Box::new(move || clock.now()),
        ));
        let driver = Driver::new(
            runtime,
            templates,
            token,
            event_tx,
            Arc::clone(&shared),
            close_timeout,
            websocket,
            trust,
            span,
            protocol,
            label.as_deref(),
        );
        Ok((Handle::new(shared), Events::new(event_rx), driver))
    }
}

/// The protocol a builder will run, the subprotocol it asks for and where
/// its token goes by default: one value, so that giving another protocol
/// replaces them all.
struct ProtocolChoice {
    make_session: MakeSession,
    subprotocol: Option<&'static str>,
    token_in_handshake: bool,
}

impl ProtocolChoice {
    fn new(protocol: impl Protocol) -> Self {
        ProtocolChoice {
            subprotocol: protocol.subprotocol(),
            token_in_handshake: protocol.capabilities().token_in_handshake,
            make_session: Box::new(move |config| Session::new(config, protocol)),
        }
    }

    /// Where the token goes on the upgrade request: the application's
    /// choice, else the bearer header unless the protocol carries the token
    /// itself.
    fn placement(&self, chosen: Option<TokenPlacement>) -> Option<TokenPlacement> {
        chosen.or_else(|| (!self.token_in_handshake).then(TokenPlacement::default))
    }

    /// The user's headers and the protocol's `Sec-WebSocket-Protocol`, if
    /// it has one.
    fn upgrade_headers(&self, mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
        if let Some(sub) = self.subprotocol {
            headers.push(("Sec-WebSocket-Protocol".to_owned(), sub.to_owned()));
        }
        headers
    }
}

/// One checked upgrade-request template per endpoint, in list order.
fn endpoint_templates(
    urls: Vec<String>,
    headers: &[(String, String)],
    placement: Option<&TokenPlacement>,
) -> Result<Vec<RequestTemplate>, BuildError> {
    if urls.is_empty() {
        return Err(BuildError::NoEndpoints);
    }
    if urls.len() > MAX_ENDPOINTS {
        return Err(BuildError::TooManyEndpoints(urls.len()));
    }
    let templates = urls
        .into_iter()
        .map(|url| RequestTemplate::new(url, headers, placement))
        .collect::<Result<Vec<_>, _>>()?;
    let secure = templates[0].secure();
    if templates.iter().any(|t| t.secure() != secure) {
        return Err(BuildError::MixedSchemes);
    }
    Ok(templates)
}

/// The most endpoints a session rotates over (the core's limit).
const MAX_ENDPOINTS: usize = 1024;

/// A seed from the OS: `RandomState` keys come from the OS's generator,
/// mixed with a counter and the wall clock so every call differs.
fn os_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_are_checked() {
        let p = TokenPlacement::default();
        let t = |urls: &[&str]| {
            endpoint_templates(
                urls.iter().map(|u| (*u).to_owned()).collect(),
                &[],
                Some(&p),
            )
            .map(|t| t.len())
        };
        assert_eq!(t(&[]), Err(BuildError::NoEndpoints));
        assert_eq!(
            t(&["ws://127.0.0.1:1/a", "wss://127.0.0.1:2/a"]),
            Err(BuildError::MixedSchemes)
        );
        assert!(matches!(
            t(&["ws://127.0.0.1:1/a", "not a url"]),
            Err(BuildError::InvalidUrl(_))
        ));
        assert_eq!(t(&["ws://127.0.0.1:1/a", "ws://127.0.0.1:2/a"]), Ok(2));
        assert_eq!(t(&["wss://127.0.0.1:1/a", "wss://127.0.0.1:1/a"]), Ok(2));
        let many: Vec<&str> = vec!["ws://127.0.0.1:1/"; 1025];
        assert_eq!(t(&many), Err(BuildError::TooManyEndpoints(1025)));
    }

    #[test]
    fn a_protocol_offers_its_own_subprotocol_only() {
        let user = vec![("X-App".to_owned(), "1".to_owned())];
        let sub = |s: &str| ("Sec-WebSocket-Protocol".to_owned(), s.to_owned());
        let wire = ProtocolChoice::new(redial_core::Wire);
        assert_eq!(
            wire.upgrade_headers(user.clone()),
            vec![user[0].clone(), sub(redial_core::wire::SUBPROTOCOL)]
        );
        // `.protocol(Wire).protocol(Raw)`: the second choice replaces the
        // first, subprotocol included.
        let raw = ProtocolChoice::new(Raw::new());
        assert_eq!(raw.upgrade_headers(user.clone()), user);
    }

    #[test]
    fn a_protocol_that_sends_the_token_itself_keeps_it_off_the_upgrade() {
        let bearer = Some(TokenPlacement::bearer());
        let query = TokenPlacement::query("t");
        let raw = ProtocolChoice::new(Raw::new());
        assert_eq!(raw.placement(None), bearer);
        let nats = ProtocolChoice::new(redial_core::Nats::new());
        assert_eq!(nats.placement(None), None);
        // The application's choice wins for both.
        assert_eq!(nats.placement(Some(query.clone())), Some(query.clone()));
        assert_eq!(raw.placement(Some(query.clone())), Some(query));
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(os_seed(), os_seed());
    }
}
