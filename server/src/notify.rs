//! Fan-out of [`Notice`]s to every listener of one store, with bounded
//! buffers: a listener that falls behind gets [`Notice::Lagged`] instead of
//! an ever-growing queue.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::store::{Notice, Notices};

/// One listener as the sender sees it.
struct Listener {
    tx: async_channel::Sender<Notice>,
    /// Set when a notice could not be queued; the listener's stream then
    /// yields [`Notice::Lagged`] before anything else.
    lagged: Arc<AtomicBool>,
}

/// Every listener of one store; [`Fanout::send`] reaches all of them.
pub(crate) struct Fanout {
    listeners: Mutex<Vec<Listener>>,
    capacity: usize,
}

impl Fanout {
    /// A fan-out whose listeners each buffer at most `capacity` notices.
    pub(crate) fn new(capacity: usize) -> Self {
        Fanout {
            listeners: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
        }
    }

    /// A new listener that receives every notice sent from now on.
    pub(crate) fn subscribe(&self) -> Notices {
        let (tx, rx) = async_channel::bounded(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        self.lock().push(Listener {
            tx,
            lagged: Arc::clone(&lagged),
        });
        Box::pin(NoticeStream {
            rx: Box::pin(rx),
            lagged,
        })
    }

    /// Queues `notice` for every listener; a full listener is marked lagged,
    /// a dropped one is forgotten. Never waits.
    pub(crate) fn send(&self, notice: &Notice) {
        self.lock().retain(|l| match l.tx.try_send(notice.clone()) {
            Ok(()) => true,
            Err(async_channel::TrySendError::Full(_)) => {
                l.lagged.store(true, Ordering::Release);
                true
            }
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
    }

    /// How many listeners are registered (dropped ones go on the next send).
    #[cfg(test)]
    pub(crate) fn listeners(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Listener>> {
        // The list stays consistent even if a holder panicked mid-retain.
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One listener's stream: its queue, preceded by `Lagged` when the queue
/// overflowed.
struct NoticeStream {
    rx: Pin<Box<async_channel::Receiver<Notice>>>,
    lagged: Arc<AtomicBool>,
}

impl Stream for NoticeStream {
    type Item = Notice;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notice>> {
        // The flag is only set while the queue is full, so a reader parked
        // on an empty queue never misses it: the queue filling woke it.
        if self.lagged.swap(false, Ordering::AcqRel) {
            return Poll::Ready(Some(Notice::Lagged));
        }
        self.rx.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionId;
    use std::task::Waker;

    fn next(s: &mut Notices) -> Poll<Option<Notice>> {
        s.as_mut()
            .poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn every_listener_gets_every_notice_in_order() {
        let f = Fanout::new(8);
        let mut a = f.subscribe();
        let mut b = f.subscribe();
        f.send(&Notice::Channel("x".into()));
        f.send(&Notice::Session(SessionId::new("s")));
        for s in [&mut a, &mut b] {
            assert_eq!(next(s), Poll::Ready(Some(Notice::Channel("x".into()))));
            assert_eq!(
                next(s),
                Poll::Ready(Some(Notice::Session(SessionId::new("s"))))
            );
            assert_eq!(next(s), Poll::Pending);
        }
    }

    #[test]
    fn a_full_listener_sees_lagged_first() {
        let f = Fanout::new(2);
        let mut a = f.subscribe();
        for i in 0..5 {
            f.send(&Notice::Channel(format!("c{i}")));
        }
        assert_eq!(next(&mut a), Poll::Ready(Some(Notice::Lagged)));
        assert_eq!(
            next(&mut a),
            Poll::Ready(Some(Notice::Channel("c0".into())))
        );
        assert_eq!(
            next(&mut a),
            Poll::Ready(Some(Notice::Channel("c1".into())))
        );
        assert_eq!(next(&mut a), Poll::Pending);
    }

    #[test]
    fn lagged_reaches_an_idle_listener() {
        let f = Fanout::new(2);
        let mut a = f.subscribe();
        f.send(&Notice::Lagged);
        assert_eq!(next(&mut a), Poll::Ready(Some(Notice::Lagged)));
    }

    #[test]
    fn dropped_listeners_are_forgotten() {
        let f = Fanout::new(2);
        let a = f.subscribe();
        let _b = f.subscribe();
        drop(a);
        f.send(&Notice::Lagged);
        assert_eq!(f.listeners(), 1);
    }
}
