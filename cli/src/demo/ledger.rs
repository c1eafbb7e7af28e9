//! The demo's store: the memory store, plus a record of every publish it
//! applied (what the exactly-once check reads) and a clock offset (what
//! expires resume tokens without waiting a day).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redial_core::payload::Payload;
use redial_server::memory::MemoryStore;
use redial_server::store::{
    CreateRefused, Decorate, Owner, PublishOutcome, SessionId, SessionState, Store, StoreFuture,
};

/// A [`MemoryStore`] that counts what it applied and can jump its clock.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: MemoryStore,
    offset_ms: AtomicU64,
    applied_total: AtomicU64,
    /// Payload text -> how many times a PUBLISH carrying it was applied.
    applied: Mutex<HashMap<String, u64>>,
}

impl Ledger {
    /// An empty ledger over a fresh memory store.
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Moves the store's clock forward by `by`: a detached session whose
    /// token lifetime runs out within `by` can no longer be resumed.
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Publishes applied so far (duplicates by seq are not counted).
    pub fn applied_total(&self) -> u64 {
        self.applied_total.load(Ordering::Relaxed)
    }

    /// Every applied publish's payload (as text) and how often it was
    /// applied: more than once is a duplicate the dedupe missed.
    pub fn applied(&self) -> HashMap<String, u64> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }
}

impl Decorate for Ledger {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        self.inner.create(name, self.now(now_ms))
    }

    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        self.inner.resume(session, lifetime_ms, self.now(now_ms))
    }

    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        self.inner.detach(owner, self.now(now_ms))
    }

    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        Box::pin(async move {
            let outcome = self.inner.publish(owner, seq, channel, payload).await?;
            if outcome == PublishOutcome::Applied {
                self.applied_total.fetch_add(1, Ordering::Relaxed);
                let body = payload.as_text().unwrap_or_default().to_owned();
                *self.lock().entry(body).or_default() += 1;
            }
            Ok(outcome)
        })
    }
}

#[cfg(test)]
mod tests {
    // Store alone: with Decorate in scope too, `ledger.create` names two traits.
    use super::{Duration, Ledger, Payload, PublishOutcome};
    use redial_server::store::Store;

    #[tokio::test]
    async fn counts_applied_publishes_not_duplicates() {
        let ledger = Ledger::new();
        let s = ledger.create("a", 0).await.unwrap().unwrap();
        let p = Payload::text("c0-0");
        let publish = |seq| ledger.publish(&s.owner, seq, Some("demo"), &p);
        assert_eq!(publish(1).await.unwrap(), PublishOutcome::Applied);
        assert_eq!(publish(1).await.unwrap(), PublishOutcome::Duplicate);
        assert_eq!(ledger.applied_total(), 1);
        // The same payload under a new seq (a fresh session re-sending it)
        // is applied again: the check must see it as a duplicate.
        assert_eq!(publish(2).await.unwrap(), PublishOutcome::Applied);
        assert_eq!(ledger.applied().get("c0-0"), Some(&2));
    }

    #[tokio::test]
    async fn the_clock_jump_expires_detached_sessions() {
        let ledger = Ledger::new();
        let day = 24 * 3600 * 1000;
        let s = ledger.create("a", 1_000).await.unwrap().unwrap();
        ledger.detach(&s.owner, 2_000).await.unwrap();
        let id = s.owner.session.clone();
        let kept = ledger.resume(&id, day, 3_000).await.unwrap().unwrap();
        ledger.detach(&kept.owner, 4_000).await.unwrap();
        ledger.advance_clock(Duration::from_secs(25 * 3600));
        assert_eq!(ledger.resume(&id, day, 5_000).await.unwrap(), None);
    }
}
