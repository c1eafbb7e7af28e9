//! The application's decisions inside a session: who may subscribe to what,
//! and what a PUBLISH does.
//!
//! The session core calls a [`Policy`] synchronously, so its answers must
//! not block; anything slow (a database look-up) belongs in the upgrade's
//! authorization, whose result reaches the policy as [`Peer::principal`].

use redial_core::payload::Payload;

/// Who is on the other end, as far as the policy needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The session's name.
    pub name: &'a str,
    /// What the upgrade's authorization said about the caller (for example
    /// a user id); `None` when the deployment authorizes no one.
    pub principal: Option<&'a str>,
}

/// A refusal with a Wire error code (PROTOCOL.md 6) and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code, e.g. [`redial_core::wire::error_code::UNAUTHORIZED`].
    pub code: u16,
    /// Human-readable detail sent to the client.
    pub reason: String,
}

impl Refusal {
    /// A refusal with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

/// What a PUBLISH does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishVerdict {
    /// Store it on its channel's log: every subscriber gets it.
    FanOut,
    /// Store it exactly once without a channel and hand it to the
    /// application as a request (the application may answer with a direct
    /// message to the session).
    Request,
    /// Refuse it: ERROR with this code, then close (PROTOCOL.md 8.4); the
    /// client sends it again after reconnecting unless the code is terminal.
    Reject(Refusal),
}

/// The application's rules for subscriptions and publishes.
pub trait Policy: Send + Sync + 'static {
    /// May `peer` subscribe to `channel`? Default: yes.
    fn subscribe(&self, peer: Peer<'_>, channel: &str) -> Result<(), Refusal> {
        let _ = (peer, channel);
        Ok(())
    }

    /// What a PUBLISH on `channel` (`None`: to the server application)
    /// does. Default: fan out when there is a channel, a request otherwise.
    fn publish(&self, peer: Peer<'_>, channel: Option<&str>, payload: &Payload) -> PublishVerdict {
        let _ = (peer, payload);
        match channel {
            Some(_) => PublishVerdict::FanOut,
            None => PublishVerdict::Request,
        }
    }
}

/// The default policy: everyone may subscribe to anything; publishes with
/// a channel fan out, those without are requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Policy for AllowAll {}
