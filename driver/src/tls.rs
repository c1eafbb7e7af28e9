//! A rustls client configuration for `wss://`: the webpki roots and the ring
//! provider, chosen explicitly so that neither a process-wide default nor
//! the set of rustls features enabled elsewhere in the build matters.
//!
//! Extra roots (a private CA, a self-signed development server) are added
//! with [`Builder::root_certificates`](crate::Builder::root_certificates);
//! [`certificates_from_pem`] reads them from PEM text.

use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// PEM text that does not hold usable certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The text has no `CERTIFICATE` section.
    #[error("no certificate found in the PEM text")]
    NoCertificates,
    /// A section could not be decoded.
    #[error("invalid PEM: {0}")]
    Invalid(String),
}

/// Every certificate in `pem` (the `CERTIFICATE` sections; other sections
/// are skipped). At least one must be there.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificates);
    }
    Ok(certs)
}

/// The shared client configuration, built on first use.
pub fn client_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(|| build(&[])).clone()
}

/// A client configuration that trusts `extra` as well as the webpki roots.
/// A certificate that is not a usable trust anchor is an error.
pub(crate) fn client_config_with(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    build(extra)
}

fn build(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("unusable root certificate: {e}"))?;
    }
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
    use super::*;

    #[test]
    fn builds() {
        assert!(client_config().is_ok());
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert_eq!(
            certificates_from_pem(b"not pem at all"),
            Err(PemError::NoCertificates)
        );
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates_from_pem(broken),
            Err(PemError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_root() {
        let junk = CertificateDer::from(vec![1, 2, 3]);
        assert!(client_config_with(&[junk]).is_err());
    }
}
