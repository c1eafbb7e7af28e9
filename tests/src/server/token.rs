//! Resume tokens: session id, name and issue time, signed with HMAC-SHA256.
//!
//! Layout (all integers big-endian):
//! `version:u8 | session_id:u64 | issued_unix_ms:u64 | nonce:u64 | name_len:u8 | name | tag:[u8; 32]`.
//! The tag covers every byte before it. Tokens are opaque to clients.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// Bytes of the fixed header: version, session id, issue time, nonce, name
/// length.
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + 1;

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The server's id for the session the token was issued to.
    pub session_id: u64,
    /// The session's name when the token was issued.
    pub name: String,
    /// Issue time, milliseconds since the Unix epoch on the server's clock.
    pub issued_unix_ms: u64,
    /// Makes every token distinct, even two issued in the same millisecond.
    pub nonce: u64,
}

/// Why a token did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server could have written.
    #[error("malformed resume token")]
    Malformed,
    /// Well formed but the tag does not match this server's key.
    #[error("resume token signature does not verify")]
    Forged,
}

/// Issues and verifies tokens with one secret key.
#[derive(Clone)]
pub struct TokenSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(<key redacted>)")
    }
}

impl TokenSigner {
    /// A signer with the given key; use [`TokenSigner::random`] outside tests.
    pub fn new(key: [u8; 32]) -> Self {
        TokenSigner { key }
    }

    /// A signer with a fresh key from the OS generator.
    ///
    /// Fails only if the OS has no randomness to give.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(TokenSigner { key })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; the fallback
        // keeps the signature free of panics all the same.
        <HmacSha256 as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
    }

    /// A token for `claims`. Names longer than 255 bytes are cut, which
    /// cannot happen for names that passed validation or came from the
    /// generator.
    pub fn issue(&self, claims: &Claims) -> Vec<u8> {
        let name = claims.name.as_bytes();
        let name = &name[..name.len().min(usize::from(u8::MAX))];
        let mut out = Vec::with_capacity(HEADER_LEN + name.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&claims.session_id.to_be_bytes());
        out.extend_from_slice(&claims.issued_unix_ms.to_be_bytes());
        out.extend_from_slice(&claims.nonce.to_be_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The claims of `token` if this key signed it.
    ///
    /// Expiry is the caller's to judge: the protocol counts the lifetime from
    /// when the session's connection was lost, which only the server knows.
    pub fn verify(&self, token: &[u8]) -> Result<Claims, TokenError> {
        if token.len() < HEADER_LEN + TAG_LEN || token[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let name_len = usize::from(token[HEADER_LEN - 1]);
        if token.len() != HEADER_LEN + name_len + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = token.split_at(HEADER_LEN + name_len);
        let mut mac = self.mac();
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(tag).map_err(|_| TokenError::Forged)?;

        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let session_id = u64_at(1);
        let issued_unix_ms = u64_at(9);
        let nonce = u64_at(17);
        let name = std::str::from_utf8(&body[HEADER_LEN..])
            .map_err(|_| TokenError::Malformed)?
            .to_owned();
        Ok(Claims {
            session_id,
            name,
            issued_unix_ms,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            session_id: 7,
            name: "quiet-heron-3".into(),
            issued_unix_ms: 1_000_000,
            nonce: 5,
        }
    }

    #[test]
    fn round_trip() {
        let s = TokenSigner::new([9; 32]);
        let t = s.issue(&claims());
        assert_eq!(s.verify(&t), Ok(claims()));
    }

    #[test]
    fn tampering_and_other_keys_are_forged() {
        let s = TokenSigner::new([9; 32]);
        let t = s.issue(&claims());
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            assert!(s.verify(&bad).is_err(), "byte {i}");
        }
        let other = TokenSigner::new([8; 32]);
        assert_eq!(other.verify(&t), Err(TokenError::Forged));
        assert_eq!(s.verify(b""), Err(TokenError::Malformed));
        assert_eq!(s.verify(&t[..t.len() - 1]), Err(TokenError::Malformed));
    }
}
