//! Which servers a `wss://` dial trusts: handed to [`Runtime::dial`](crate::Runtime::dial)
//! with every upgrade request.

use std::fmt;
#[cfg(feature = "rustls")]
use std::sync::Arc;

/// The TLS trust for one connection's dials: the webpki roots, plus the
/// roots given to `Builder::root_certificates`.
///
/// A runtime's `dial` takes its rustls configuration from
/// `TlsTrust::client_config` (both with the cargo feature `rustls`).
#[derive(Clone, Default)]
pub struct TlsTrust {
    #[cfg(feature = "rustls")]
    config: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsTrust");
        #[cfg(feature = "rustls")]
        d.field("extra_roots", &self.config.is_some());
        d.finish()
    }
}

#[cfg(feature = "rustls")]
impl TlsTrust {
    /// Trust from this client configuration.
    pub(crate) fn new(config: Arc<rustls::ClientConfig>) -> Self {
        TlsTrust {
            config: Some(config),
        }
    }

    /// The rustls client configuration for a `wss://` dial.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        match &self.config {
            Some(config) => Ok(Arc::clone(config)),
            None => crate::tls::client_config(),
        }
    }
}
