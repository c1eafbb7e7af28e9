//! Which of this node's connections holds which session and listens to
//! which channel, so a store [`Notice`] wakes only the connections it
//! concerns: a publish costs O(subscribers on this node), not
//! O(connections).
//!
//! Each connection has one [`Mailbox`]: a flag and a wake-up, not a queue.
//! A notice is a hint to fetch, so any number of them between two reads
//! coalesce into one fetch, and a connection that is slow to read holds
//! two words of state, never a backlog.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::store::{Notice, SessionId};

/// What a connection was woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wake {
    /// New MESSAGEs may wait for the session: fetch.
    pub(crate) fetch: bool,
    /// The highest epoch that took the session over since the last wake.
    pub(crate) taken_over: Option<u64>,
}

/// One connection's coalescing inbox for notices.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    fetch: AtomicBool,
    /// 0: no takeover seen (epochs start at 1).
    taken_over: AtomicU64,
    notify: Notify,
}

impl Mailbox {
    /// Asks the connection to fetch.
    pub(crate) fn fetch(&self) {
        self.fetch.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn taken_over(&self, epoch: u64) {
        self.taken_over.fetch_max(epoch, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Waits until something was posted and takes all of it. Cancel-safe:
    /// a wake-up that is not taken stays posted.
    pub(crate) async fn wait(&self) -> Wake {
        loop {
            self.notify.notified().await;
            let wake = Wake {
                fetch: self.fetch.swap(false, Ordering::AcqRel),
                taken_over: Some(self.taken_over.swap(0, Ordering::AcqRel)).filter(|&e| e > 0),
            };
            if wake.fetch || wake.taken_over.is_some() {
                return wake;
            }
        }
    }
}

type Listeners = HashMap<u64, Arc<Mailbox>>;

/// Sessions and channel subscriptions of one node's connections, by
/// connection id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Usually one connection per session; two while one takes over from
    /// the other, and the old one must hear of it.
    sessions: HashMap<SessionId, Listeners>,
    channels: HashMap<String, Listeners>,
}

impl Registry {
    /// Connection `conn` holds `session` from now on.
    pub(crate) fn hold(&mut self, session: SessionId, conn: u64, mailbox: &Arc<Mailbox>) {
        self.sessions
            .entry(session)
            .or_default()
            .insert(conn, mailbox.clone());
    }

    /// Connection `conn` listens to `channel`.
    pub(crate) fn listen(&mut self, channel: &str, conn: u64, mailbox: &Arc<Mailbox>) {
        self.channels
            .entry(channel.to_owned())
            .or_default()
            .insert(conn, mailbox.clone());
    }

    /// Connection `conn` no longer listens to `channel`.
    pub(crate) fn unlisten(&mut self, channel: &str, conn: u64) {
        forget(&mut self.channels, channel, conn);
    }

    /// Connection `conn` no longer holds `session`.
    pub(crate) fn release(&mut self, session: &SessionId, conn: u64) {
        forget(&mut self.sessions, session, conn);
    }

    /// Sessions held by some connection.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Posts `notice` to the connections it concerns; returns how many.
    pub(crate) fn route(&self, notice: &Notice) -> usize {
        let post = |listeners: Option<&Listeners>, f: &dyn Fn(&Mailbox)| {
            listeners.map_or(0, |l| {
                l.values().for_each(|m| f(m));
                l.len()
            })
        };
        match notice {
            Notice::Channel(c) => post(self.channels.get(c), &Mailbox::fetch),
            Notice::Session(s) => post(self.sessions.get(s), &Mailbox::fetch),
            // The connection compares epochs: the new holder ignores it.
            Notice::TakenOver(o) => post(self.sessions.get(&o.session), &|m| m.taken_over(o.epoch)),
            // Anything may have been missed: every connection fetches, and
            // a fenced one learns so from the store.
            Notice::Lagged => self
                .sessions
                .values()
                .map(|l| post(Some(l), &Mailbox::fetch))
                .sum(),
            // Later notice kinds are unknown to this node; none exist yet.
            #[allow(unreachable_patterns)]
            _ => 0,
        }
    }
}

fn forget<K, Q>(map: &mut HashMap<K, Listeners>, key: &Q, conn: u64)
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    if let Some(l) = map.get_mut(key) {
        l.remove(&conn);
        if l.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Owner;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn poll_wait(m: &Mailbox) -> Poll<Wake> {
        let mut f = pin!(m.wait());
        f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_channel_notice_reaches_its_listeners_only() {
        let mut r = Registry::default();
        let (a, b) = (Arc::new(Mailbox::default()), Arc::new(Mailbox::default()));
        r.listen("x", 1, &a);
        r.listen("y", 2, &b);
        assert_eq!(r.route(&Notice::Channel("x".into())), 1);
        assert_eq!(
            poll_wait(&a),
            Poll::Ready(Wake {
                fetch: true,
                taken_over: None
            })
        );
        assert_eq!(poll_wait(&b), Poll::Pending);
        r.unlisten("x", 1);
        assert_eq!(r.route(&Notice::Channel("x".into())), 0);
        assert!(!r.channels.contains_key("x"), "empty channels are dropped");
    }

    #[test]
    fn notices_coalesce_into_one_wake() {
        let mut r = Registry::default();
        let a = Arc::new(Mailbox::default());
        r.listen("x", 1, &a);
        r.hold(SessionId::new("s"), 1, &a);
        for _ in 0..1000 {
            r.route(&Notice::Channel("x".into()));
        }
        r.route(&Notice::TakenOver(Owner {
            session: SessionId::new("s"),
            epoch: 3,
        }));
        r.route(&Notice::TakenOver(Owner {
            session: SessionId::new("s"),
            epoch: 2,
        }));
        assert_eq!(
            poll_wait(&a),
            Poll::Ready(Wake {
                fetch: true,
                taken_over: Some(3)
            })
        );
        assert_eq!(poll_wait(&a), Poll::Pending);
    }

    #[test]
    fn a_takeover_reaches_both_holders_and_lagged_reaches_everyone() {
        let mut r = Registry::default();
        let (old, new, other) = (
            Arc::new(Mailbox::default()),
            Arc::new(Mailbox::default()),
            Arc::new(Mailbox::default()),
        );
        let s = SessionId::new("s");
        r.hold(s.clone(), 1, &old);
        r.hold(s.clone(), 2, &new);
        r.hold(SessionId::new("t"), 3, &other);
        let taken = Notice::TakenOver(Owner {
            session: s.clone(),
            epoch: 2,
        });
        assert_eq!(r.route(&taken), 2);
        assert_eq!(r.route(&Notice::Lagged), 3);
        r.release(&s, 1);
        r.release(&s, 2);
        assert_eq!(r.sessions(), 1);
    }
}
