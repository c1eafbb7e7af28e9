//! Actions: what the session asks the adapter to do.

use crate::secret::AuthToken;
use crate::transport::{CloseFrame, Frame};

/// Work for the adapter. Drain with
/// [`Session::poll_action`](crate::Session::poll_action) and carry each out
/// in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Call the token provider, then report with
    /// [`handle_token`](crate::Session::handle_token) or
    /// [`handle_token_failed`](crate::Session::handle_token_failed).
    /// A fetch still running from an earlier attempt (one that outlived the
    /// connect timeout) is abandoned: only the newest answer counts.
    FetchToken,
    /// Open a new WebSocket, then report with
    /// [`handle_dial_ok`](crate::Session::handle_dial_ok) or
    /// [`handle_dial_failed`](crate::Session::handle_dial_failed).
    /// There is never more than one dial in flight.
    Dial {
        /// 0 for the first connection, then the reconnect attempt (1-based).
        attempt: u32,
        /// Which of the configured endpoints to dial (an index into the
        /// adapter's URL list; always 0 with one endpoint). The session
        /// chose it: the adapter dials it and decides nothing.
        endpoint: usize,
        /// The token to present, when a provider is configured.
        token: Option<AuthToken>,
    },
    /// Write this frame to the open transport. Keep the [`SendKind`] with
    /// the frame until it is written: a frame never written goes back to
    /// [`Session::handle_unsent`](crate::Session::handle_unsent) with it.
    Send(Frame, SendKind),
    /// Close the transport with this frame and drop it, or abandon the dial
    /// in flight. Report nothing more about that transport.
    Close(CloseFrame),
}

/// What a frame in [`Action::Send`] carries: the session needs it back with
/// each frame handed to [`Session::handle_unsent`](crate::Session::handle_unsent)
/// to tell the application's messages (which a reconnect may write again)
/// from control frames (which the next transport makes anew).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendKind {
    /// An application message, encoded as the protocol writes it.
    Message,
    /// Anything else: a handshake, a subscription, a ping, an acknowledgement.
    Control,
}
