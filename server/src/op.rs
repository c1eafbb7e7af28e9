//! Store calls as values: what the session core asks of the [`Store`] and
//! what comes back, so the core stays free of IO and the runtime only
//! carries them.

use redial_core::payload::Payload;

use crate::store::{
    CreateRefused, Owner, PublishOutcome, SessionId, SessionState, Store, StoreError, StoredMessage,
};

/// One call the session core needs made, in order; its result goes back
/// through [`crate::Connection::handle_store_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOp {
    /// [`Store::create`].
    Create {
        /// The name asked for or generated.
        name: String,
    },
    /// [`Store::resume`].
    Resume {
        /// The session the token names.
        session: SessionId,
        /// The token lifetime.
        lifetime_ms: u64,
    },
    /// [`Store::detach`].
    Detach {
        /// The holder.
        owner: Owner,
    },
    /// [`Store::end`].
    End {
        /// The holder.
        owner: Owner,
    },
    /// [`Store::publish`].
    Publish {
        /// The holder.
        owner: Owner,
        /// The PUBLISH seq.
        seq: u64,
        /// Its channel, `None` for a request to the application.
        channel: Option<String>,
        /// Its payload.
        payload: Payload,
    },
    /// [`Store::subscribe`].
    Subscribe {
        /// The holder.
        owner: Owner,
        /// The channel.
        channel: String,
    },
    /// [`Store::unsubscribe`].
    Unsubscribe {
        /// The holder.
        owner: Owner,
        /// The channel.
        channel: String,
    },
    /// [`Store::fetch`].
    Fetch {
        /// The holder.
        owner: Owner,
        /// Offsets above this.
        after: u64,
        /// At most this many.
        max: usize,
    },
    /// [`Store::received`].
    Received {
        /// The holder.
        owner: Owner,
        /// Delivered up to here.
        offset: u64,
    },
}

/// The result of a [`StoreOp`], matched to it by order.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreReply {
    /// From `Create`.
    Created(Result<SessionState, CreateRefused>),
    /// From `Resume`.
    Resumed(Option<SessionState>),
    /// From `Publish`.
    Published(PublishOutcome),
    /// From `Fetch`.
    Fetched(Vec<StoredMessage>),
    /// From `Detach`, `End`, `Subscribe`, `Unsubscribe` and `Received`.
    Done,
    /// The call failed.
    Failed(StoreError),
}

impl StoreOp {
    /// Makes the call on `store` at `now_ms` and wraps its result.
    pub async fn execute(&self, store: &dyn Store, now_ms: u64) -> StoreReply {
        let r = match self {
            StoreOp::Create { name } => store.create(name, now_ms).await.map(StoreReply::Created),
            StoreOp::Resume {
                session,
                lifetime_ms,
            } => store
                .resume(session, *lifetime_ms, now_ms)
                .await
                .map(StoreReply::Resumed),
            StoreOp::Detach { owner } => {
                store.detach(owner, now_ms).await.map(|()| StoreReply::Done)
            }
            StoreOp::End { owner } => store.end(owner).await.map(|()| StoreReply::Done),
            StoreOp::Publish {
                owner,
                seq,
                channel,
                payload,
            } => store
                .publish(owner, *seq, channel.as_deref(), payload)
                .await
                .map(StoreReply::Published),
            StoreOp::Subscribe { owner, channel } => store
                .subscribe(owner, channel)
                .await
                .map(|()| StoreReply::Done),
            StoreOp::Unsubscribe { owner, channel } => store
                .unsubscribe(owner, channel)
                .await
                .map(|()| StoreReply::Done),
            StoreOp::Fetch { owner, after, max } => store
                .fetch(owner, *after, *max)
                .await
                .map(StoreReply::Fetched),
            StoreOp::Received { owner, offset } => store
                .received(owner, *offset)
                .await
                .map(|()| StoreReply::Done),
        };
        r.unwrap_or_else(StoreReply::Failed)
    }

    /// Its place in the metrics' operation list (`meter::STORE_OPS`).
    #[cfg(feature = "tokio")]
    pub(crate) fn meter_index(&self) -> usize {
        match self {
            StoreOp::Create { .. } => 0,
            StoreOp::Resume { .. } => 1,
            StoreOp::Detach { .. } => 2,
            StoreOp::End { .. } => 3,
            StoreOp::Publish { .. } => 4,
            StoreOp::Subscribe { .. } => 5,
            StoreOp::Unsubscribe { .. } => 6,
            StoreOp::Fetch { .. } => 7,
            StoreOp::Received { .. } => 8,
        }
    }
}
