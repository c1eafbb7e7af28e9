//! Resume tokens: the session id and issue time, signed with HMAC-SHA256
//! under a key that has an id, so keys can rotate.
//!
//! Layout (integers big-endian):
//! `version:u8 | key_id:u8 | issued_ms:u64 | nonce:u64 | id_len:u8 | session_id | tag:[u8; 32]`.
//! The tag covers every byte before it. Tokens are opaque to clients.
//!
//! Rotation: sign with the current key, accept the current and the previous
//! one. To rotate, make the current key the previous one and add a new
//! current key with another id; once every token signed with the old key
//! has outlived the token lifetime, drop it.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::store::SessionId;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// version, key id, issue time, nonce, id length.
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 1;
/// Longest session id a token can name (PROTOCOL.md 5 allows 64 bytes).
pub const MAX_SESSION_ID_LEN: usize = 64;

/// A 256-bit HMAC key and its id. Never printed: its `Debug` shows the id
/// only.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    id: u8,
    secret: [u8; 32],
}

impl TokenKey {
    /// A key with id `id`; every key a node accepts needs a distinct id.
    pub fn new(id: u8, secret: [u8; 32]) -> Self {
        TokenKey { id, secret }
    }

    /// A key drawn from the operating system's generator.
    ///
    /// Every node of a cluster must share its keys, so a cluster loads them
    /// from its configuration instead; a random key suits one process.
    #[cfg(feature = "getrandom")]
    pub fn random(id: u8) -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(TokenKey { id, secret })
    }

    /// The key's id, written into every token it signs.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; the fallback
        // keeps the path free of panics all the same.
        <HmacSha256 as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()))
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey(id {}, <secret redacted>)", self.id)
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The session the token was issued for.
    pub session: SessionId,
    /// Issue time on the server's clock, milliseconds.
    pub issued_ms: u64,
    /// Makes two tokens of one session issued in the same millisecond differ.
    pub nonce: u64,
}

/// Why a token did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token this server could have written.
    #[error("malformed resume token")]
    Malformed,
    /// Signed with a key id this node does not hold (rotated out, or another
    /// deployment's).
    #[error("resume token signed with an unknown key")]
    UnknownKey,
    /// The tag does not match: tampered with or forged.
    #[error("resume token signature does not verify")]
    Forged,
}

/// Signs with the current key and verifies with the current or previous
/// one.
#[derive(Debug, Clone)]
pub struct TokenKeys {
    current: TokenKey,
    previous: Option<TokenKey>,
}

impl TokenKeys {
    /// Keys that sign with `current` and accept only it.
    pub fn new(current: TokenKey) -> Self {
        TokenKeys {
            current,
            previous: None,
        }
    }

    /// Also accepts tokens signed with `previous` (a key being rotated out).
    /// A previous key with the current key's id is ignored.
    pub fn with_previous(mut self, previous: TokenKey) -> Self {
        if previous.id != self.current.id {
            self.previous = Some(previous);
        }
        self
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &TokenKey {
        &self.current
    }

    /// A token for `claims`. A session id longer than
    /// [`MAX_SESSION_ID_LEN`] is refused with `None` (stores never make one).
    pub fn issue(&self, claims: &Claims) -> Option<Vec<u8>> {
        let id = claims.session.as_str().as_bytes();
        if id.len() > MAX_SESSION_ID_LEN {
            return None;
        }
        let mut out = Vec::with_capacity(HEADER_LEN + id.len() + TAG_LEN);
        out.push(VERSION);
        out.push(self.current.id);
        out.extend_from_slice(&claims.issued_ms.to_be_bytes());
        out.extend_from_slice(&claims.nonce.to_be_bytes());
        out.push(u8::try_from(id.len()).ok()?);
        out.extend_from_slice(id);
        let mut mac = self.current.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        Some(out)
    }

    /// The claims of `token` if one of the accepted keys signed it.
    ///
    /// Expiry is the store's to judge: PROTOCOL.md 8.6 counts the lifetime
    /// from the loss of the session's connection, not from the issue time.
    pub fn verify(&self, token: &[u8]) -> Result<Claims, TokenError> {
        if token.len() < HEADER_LEN + TAG_LEN || token[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let id_len = usize::from(token[HEADER_LEN - 1]);
        if id_len > MAX_SESSION_ID_LEN || token.len() != HEADER_LEN + id_len + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        let key_id = token[1];
        let key = if key_id == self.current.id {
            &self.current
        } else {
            match &self.previous {
                Some(k) if k.id == key_id => k,
                _ => return Err(TokenError::UnknownKey),
            }
        };
        let (body, tag) = token.split_at(HEADER_LEN + id_len);
        let mut mac = key.mac();
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(tag).map_err(|_| TokenError::Forged)?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let session =
            std::str::from_utf8(&body[HEADER_LEN..]).map_err(|_| TokenError::Malformed)?;
        Ok(Claims {
            session: SessionId::new(session),
            issued_ms: u64_at(2),
            nonce: u64_at(10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            session: SessionId::new("s-2a"),
            issued_ms: 1_000_000,
            nonce: 5,
        }
    }

    #[test]
    fn round_trip() {
        let k = TokenKeys::new(TokenKey::new(1, [9; 32]));
        let t = k.issue(&claims()).unwrap();
        assert_eq!(k.verify(&t), Ok(claims()));
    }

    #[test]
    fn tampering_and_other_keys_fail() {
        let k = TokenKeys::new(TokenKey::new(1, [9; 32]));
        let t = k.issue(&claims()).unwrap();
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x01;
            assert!(k.verify(&bad).is_err(), "byte {i}");
        }
        let same_id_other_secret = TokenKeys::new(TokenKey::new(1, [8; 32]));
        assert_eq!(same_id_other_secret.verify(&t), Err(TokenError::Forged));
        let other_id = TokenKeys::new(TokenKey::new(2, [9; 32]));
        assert_eq!(other_id.verify(&t), Err(TokenError::UnknownKey));
        assert_eq!(k.verify(b""), Err(TokenError::Malformed));
        assert_eq!(k.verify(&t[..t.len() - 1]), Err(TokenError::Malformed));
    }

    #[test]
    fn rotation_accepts_the_previous_key_and_signs_with_the_new_one() {
        let old = TokenKeys::new(TokenKey::new(1, [1; 32]));
        let old_token = old.issue(&claims()).unwrap();
        let rotated =
            TokenKeys::new(TokenKey::new(2, [2; 32])).with_previous(TokenKey::new(1, [1; 32]));
        assert_eq!(rotated.verify(&old_token), Ok(claims()));
        let new_token = rotated.issue(&claims()).unwrap();
        assert_eq!(new_token[1], 2);
        // The old deployment does not know the new key.
        assert_eq!(old.verify(&new_token), Err(TokenError::UnknownKey));
        // Rotated out twice: refused.
        let twice =
            TokenKeys::new(TokenKey::new(3, [3; 32])).with_previous(TokenKey::new(2, [2; 32]));
        assert_eq!(twice.verify(&old_token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = TokenKeys::new(TokenKey::new(7, [0xAB; 32]));
        let s = format!("{k:?}");
        assert!(s.contains("redacted"));
        assert!(!s.contains("171"), "{s}");
        assert!(!s.to_lowercase().contains("ab, "), "{s}");
    }

    #[test]
    fn overlong_session_ids_are_not_signed() {
        let k = TokenKeys::new(TokenKey::new(1, [9; 32]));
        let c = Claims {
            session: SessionId::new("x".repeat(65)),
            ..claims()
        };
        assert_eq!(k.issue(&c), None);
    }
}
