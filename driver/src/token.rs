//! The token provider: asked for a token before every dial.

use std::future::Future;

use redial_core::{AuthToken, TokenFailure};

use crate::BoxFuture;

/// Produces the token presented on each dial.
///
/// Called once per dial, when the session asks for it
/// ([`Action::FetchToken`](redial_core::Action::FetchToken)); a fetch that
/// outlives the connect timeout is abandoned. Return
/// [`TokenFailure::transient`] for failures worth retrying and
/// [`TokenFailure::unauthorized`] when retrying cannot help.
///
/// Any `Fn() -> impl Future<Output = Result<AuthToken, TokenFailure>>` that
/// is `Send + Sync` is a provider.
pub trait TokenProvider: Send + Sync + 'static {
    /// Fetches a token.
    fn token(&self) -> BoxFuture<Result<AuthToken, TokenFailure>>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AuthToken, TokenFailure>> + Send + 'static,
{
    fn token(&self) -> BoxFuture<Result<AuthToken, TokenFailure>> {
        Box::pin(self())
    }
}
