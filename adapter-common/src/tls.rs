//! A rustls client configuration for `wss://`: the webpki roots and the ring
//! provider, chosen explicitly so that neither a process-wide default nor
//! the set of rustls features enabled elsewhere in the build matters.

use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::{ClientConfig, RootCertStore};

/// The shared client configuration, built on first use.
pub fn client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build).clone()
}

fn build() -> Result<Arc<ClientConfig>, String> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds() {
        assert!(super::client_config().is_ok());
    }
}
