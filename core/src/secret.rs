//! Credentials that must never reach `Debug` output or logs.

use std::fmt;

use bytes::Bytes;

/// An authentication token from the user's token provider, presented on dial.
///
/// `Debug` prints `AuthToken(<redacted>)`. Read it with [`AuthToken::expose`]
/// only where it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        AuthToken(token.into())
    }

    /// The token itself, for the header or query parameter that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// A server-issued resume token (opaque bytes), presented in HELLO to get the
/// same session back.
///
/// `Debug` prints the length only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ResumeToken(Bytes);

impl ResumeToken {
    /// Wraps token bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        ResumeToken(bytes.into())
    }

    /// The token bytes, for the frame that carries them.
    pub fn expose(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResumeToken(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let a = AuthToken::new("hunter2-jwt");
        let r = ResumeToken::new(Bytes::from_static(b"sig-abc"));
        let s = format!("{a:?} {r:?} {:?}", Some(&a));
        assert!(!s.contains("hunter2"), "{s}");
        assert!(!s.contains("sig-abc"), "{s}");
    }
}
