//! The application's side: a cloneable [`Handle`] and the [`Events`] stream.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_channel::oneshot;
use futures_core::Stream;
use redial_core::{
    CallError, CallId, CallOptions, Event, Headers, Payload, SendError, Session, State, Text,
};

/// Where the driver puts a call's end for the handle awaiting it.
type CallReply = oneshot::Sender<Result<Payload, CallError>>;

/// The session, and what the driver and the handles say to each other
/// about it, behind one lock.
///
/// Whoever holds the lock holds it for a few synchronous calls into the
/// session, never across an `await`.
pub(crate) struct Core {
    pub(crate) session: Session,
    /// Set by the driver while the socket is not taking frames: new
    /// messages are then answered `QueueFull` and wait in the handles,
    /// so nothing piles up between the session and the socket.
    pub(crate) socket_full: bool,
    /// Messages handed to the session since the driver last took its
    /// actions. At `hand_limit` new ones are answered `QueueFull` too:
    /// a sender that never yields cannot pile up frames the driver has not
    /// seen, and each batch is written with one flush.
    pub(crate) handed: usize,
    hand_limit: usize,
    /// A message was refused as `QueueFull`: whether the driver's side
    /// (socket or `hand_limit`) was full then, and the session's queue
    /// length. The driver wakes the waiting senders when that changes.
    pub(crate) refused: Option<(bool, usize)>,
    /// The driver task ended (or was dropped with its runtime): nobody
    /// will carry out what the session is handed, so nothing is taken.
    pub(crate) driver_gone: bool,
    /// The handles awaiting calls, by id: the driver completes each from
    /// its [`Event::CallDone`]. As many as the session keeps calls (the
    /// config's `max_calls`); a caller that stopped waiting leaves its
    /// entry until the call ends.
    calls: BTreeMap<CallId, CallReply>,
    /// A handle subscribed or unsubscribed since the driver last looked:
    /// the subscription count is taken again.
    pub(crate) subscriptions_changed: bool,
    /// A handle called into the session since the driver last looked: its
    /// actions and events are the driver's to carry out.
    poked: bool,
    /// Woken (and taken) by the first handle that pokes.
    driver: Option<Waker>,
}

impl Core {
    /// Hands a call's end to the handle awaiting it; any other event is
    /// given back, for the application.
    pub(crate) fn route(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::CallDone { id, result } => {
                if let Some(reply) = self.calls.remove(&id) {
                    // The caller may have stopped waiting: nothing to do.
                    let _ = reply.send(result);
                }
                None
            }
            other => Some(other),
        }
    }

    /// The driver is gone: every awaited call ends as closed (dropping
    /// the senders tells the callers).
    pub(crate) fn abandon_calls(&mut self) {
        self.calls.clear();
    }

    /// Marks the session as handed something and wakes the driver (outside
    /// the lock, by the caller, with the waker returned).
    fn poke(&mut self) -> Option<Waker> {
        self.poked = true;
        self.driver.take()
    }

    /// True when a handle poked since the last call; otherwise registers
    /// `waker` to be woken by the next poke. Checked and registered under
    /// the same lock, so no poke is missed.
    pub(crate) fn take_poke(&mut self, waker: &Waker) -> bool {
        if std::mem::take(&mut self.poked) {
            return true;
        }
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
        false
    }
}

/// What the handles and the driver share.
pub(crate) struct Shared {
    state: Mutex<State>,
    core: Mutex<Core>,
    /// The runtime's clock: the `now` a handle passes to the session.
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    /// Notified when a refused send may now fit.
    pub(crate) space: event_listener::Event,
    /// Notified when the state changes.
    pub(crate) changed: event_listener::Event,
    /// The counters behind `Handle::stats` and the state watch.
    pub(crate) observed: crate::observe::Observed,
}

impl Shared {
    pub(crate) fn new(
        session: Session,
        hand_limit: usize,
        clock: Box<dyn Fn() -> Instant + Send + Sync>,
    ) -> Self {
        Shared {
            state: Mutex::new(session.state()),
            core: Mutex::new(Core {
                session,
                socket_full: false,
                handed: 0,
                hand_limit,
                refused: None,
                driver_gone: false,
                calls: BTreeMap::new(),
                subscriptions_changed: false,
                poked: false,
                driver: None,
            }),
            clock,
            space: event_listener::Event::new(),
            changed: event_listener::Event::new(),
            observed: crate::observe::Observed::default(),
        }
    }

    /// Locks the session. Hold the guard for synchronous calls only.
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        // A panic while locked leaves the session as the core left it;
        // the driver goes on with it rather than panicking in turn.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a message to the session and wakes the driver to write it:
    /// the session's answer (the sequence number, or why not) comes back
    /// without a round trip through the driver task.
    fn offer(
        &self,
        channel: Option<Text>,
        headers: Option<Headers>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.with_session(|core, now| core.offer(now, channel, headers, payload))
    }

    /// Calls into the session (`f` gets it with the handles' clock) and
    /// wakes the driver to carry out what the session then has to say:
    /// the one way from a handle to the session.
    fn with_session<T>(&self, f: impl FnOnce(&mut Core, Instant) -> T) -> T {
        let now = (self.clock)();
        let mut core = self.core();
        let answer = f(&mut core, now);
        let driver = core.poke();
        drop(core);
        if let Some(driver) = driver {
            driver.wake();
        }
        answer
    }

    /// Hands a call to the session and wakes the driver to send it; the
    /// receiver gets the call's end.
    fn call(
        &self,
        request: Payload,
        options: CallOptions,
    ) -> Result<oneshot::Receiver<Result<Payload, CallError>>, SendError> {
        self.with_session(|core, now| {
            if core.driver_gone {
                return Err(SendError::Closed);
            }
            let id = core.session.handle_call(now, request, options)?;
            let (reply, end) = oneshot::channel();
            core.calls.insert(id, reply);
            Ok(end)
        })
    }

    /// Subscribes (with `spec`, when given) or, with `subscribe` false,
    /// unsubscribes (sending `message` where the protocol takes one).
    fn subscription(
        &self,
        subscribe: bool,
        key: Text,
        spec_or_message: Option<Payload>,
    ) -> Result<(), SendError> {
        self.with_session(|core, now| {
            if core.driver_gone {
                return Err(SendError::Closed);
            }
            core.subscriptions_changed = true;
            let session = &mut core.session;
            match (subscribe, spec_or_message) {
                (true, Some(spec)) => session.handle_subscribe_with(now, key, spec),
                (true, None) => session.handle_subscribe(now, key),
                (false, message) => session.handle_unsubscribe_with(now, key, message),
            }
        })
    }

    /// Tells the session something that has no answer (retry now, network
    /// online, close); nothing once the driver is gone.
    fn tell(&self, f: impl FnOnce(&mut Session, Instant)) {
        self.with_session(|core, now| {
            if !core.driver_gone {
                f(&mut core.session, now);
            }
        });
    }

    pub(crate) fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Core {
    /// Hands a message to the session unless the driver's side is full.
    fn offer(
        &mut self,
        now: Instant,
        channel: Option<Text>,
        headers: Option<Headers>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        let core = self;
        let closing = matches!(core.session.state(), State::Closing | State::Closed);
        let backlog = core.socket_full || core.handed >= core.hand_limit;
        let result = if core.driver_gone {
            Err(SendError::Closed)
        } else if backlog && !closing {
            Err(SendError::QueueFull {
                messages: core.session.queued(),
                bytes: core.session.queued_bytes(),
            })
        } else {
            match (channel, headers) {
                // `Handle` sends headers only with a channel.
                (None, _) => core.session.handle_send(now, payload),
                (Some(c), None) => core.session.handle_publish(now, c, payload),
                (Some(c), Some(h)) => core.session.handle_publish_with_headers(now, c, h, payload),
            }
        };
        match result {
            Ok(_) => core.handed += 1,
            Err(SendError::QueueFull { .. }) => {
                let queued = core.session.queued();
                // Waiters for either reason are woken by the first change.
                core.refused = Some(match core.refused {
                    Some((b, q)) => (b || backlog, q.min(queued)),
                    None => (backlog, queued),
                });
            }
            Err(_) => {}
        }
        result
    }
}

impl Shared {
    pub(crate) fn set_state(&self, state: State) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *s != state {
            *s = state;
            self.observed.state_changed();
            drop(s);
            self.changed.notify(usize::MAX);
            if state == State::Closed {
                self.space.notify(usize::MAX);
            }
        }
    }
}

/// Talks to one connection. Cheap to clone; every clone drives the same
/// session.
///
/// Dropping the last handle closes the connection as [`Handle::close`] does
/// (flush, then close with 1000). Every method is safe to call after the
/// session closed: sends answer [`SendError::Closed`], the rest do nothing.
///
/// # `send` or `feed`
/// Both hand the message to the session directly (no round trip through
/// the driver task) and wake the driver, which writes every message
/// handed over meanwhile with one flush. They differ only in what they
/// return:
/// - [`send`](Self::send) / [`publish`](Self::publish): the sequence
///   number (to match [`Event::Acked`]).
/// - [`feed`](Self::feed) / [`feed_publish`](Self::feed_publish): nothing,
///   for callers that do not track messages.
///
/// Both wait (never drop) while the queue is full, and both answer the
/// session's refusals. Messages from one task, whichever way they were
/// sent, are queued in the order sent.
#[derive(Clone)]
pub struct Handle {
    owner: Arc<Owner>,
}

/// What every clone of one [`Handle`] holds: dropped with the last clone,
/// which closes the session as [`Handle::close`] does.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.tell(|session, now| session.handle_close(now));
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handle {
            owner: Arc::new(Owner { shared }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Sends an application message (for [`Wire`](redial_core::Wire): a
    /// publish with no channel) and returns its sequence number once the
    /// session has queued it.
    ///
    /// When the queue is full this waits for room rather than failing:
    /// backpressure instead of loss. It fails for the session's other
    /// refusals ([`SendError::TooLarge`], [`SendError::Closing`],
    /// [`SendError::Closed`], ...).
    pub async fn send(&self, payload: Payload) -> Result<u64, SendError> {
        self.send_waiting(None, None, payload).await
    }

    /// Like [`send`](Self::send), but answers [`SendError::QueueFull`] at
    /// once instead of waiting for room. It never waits, so it is a plain
    /// function: callable from synchronous code too.
    pub fn try_send(&self, payload: Payload) -> Result<u64, SendError> {
        self.shared().offer(None, None, payload)
    }

    /// Publishes to a channel ([`Wire`](redial_core::Wire) only); waits for
    /// queue room like [`send`](Self::send).
    pub async fn publish(
        &self,
        channel: impl Into<Text>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.send_waiting(Some(channel.into()), None, payload).await
    }

    /// Publishes to a channel with message headers ([`Nats`](redial_core::Nats):
    /// an HPUB); waits for queue room like [`send`](Self::send). Received
    /// headers arrive in [`Event::Message`]'s `headers`.
    ///
    /// # Errors
    /// [`SendError::Unsupported`] from a protocol without headers,
    /// [`SendError::Invalid`] for a name or value the protocol cannot
    /// encode, and what [`publish`](Self::publish) refuses.
    pub async fn publish_with_headers(
        &self,
        channel: impl Into<Text>,
        headers: Headers,
        payload: Payload,
    ) -> Result<u64, SendError> {
        self.send_waiting(Some(channel.into()), Some(headers), payload)
            .await
    }

    /// Sends a message as [`send`](Self::send) does, without returning its
    /// sequence number (for [`Wire`](redial_core::Wire): a publish with no
    /// channel). Waits for room the same way; see "`send` or `feed`" above.
    ///
    /// # Errors
    /// What [`send`](Self::send) refuses.
    pub async fn feed(&self, payload: Payload) -> Result<(), SendError> {
        self.send_waiting(None, None, payload).await.map(drop)
    }

    /// [`feed`](Self::feed) to a channel ([`Wire`](redial_core::Wire) only):
    /// [`publish`](Self::publish) without the sequence number.
    pub async fn feed_publish(
        &self,
        channel: impl Into<Text>,
        payload: Payload,
    ) -> Result<(), SendError> {
        self.send_waiting(Some(channel.into()), None, payload)
            .await
            .map(drop)
    }

    /// Subscribes to a channel ([`Wire`](redial_core::Wire)) or subject
    /// ([`Nats`](redial_core::Nats)); renewed after every reconnect. The
    /// confirmation, where the protocol has one, arrives as
    /// [`Event::Subscribed`].
    pub async fn subscribe(&self, channel: impl Into<Text>) -> Result<(), SendError> {
        self.shared().subscription(true, channel.into(), None)
    }

    /// Subscribes under `key` with the protocol's `spec`, renewed after
    /// every reconnect before anything queued: for
    /// [`Raw`](redial_core::Raw) the message to send, for
    /// [`GraphqlWs`](redial_core::GraphqlWs) the operation
    /// (`GraphqlWs::subscription(query, variables)`, `key` is its id), for
    /// [`Nats`](redial_core::Nats) a queue group (`key` is the subject).
    pub async fn subscribe_with(
        &self,
        key: impl Into<Text>,
        spec: Payload,
    ) -> Result<(), SendError> {
        self.shared().subscription(true, key.into(), Some(spec))
    }

    /// Drops a subscription.
    pub async fn unsubscribe(&self, channel: impl Into<Text>) -> Result<(), SendError> {
        self.unsubscribe_with(channel, None).await
    }

    /// Drops subscription `key`, sending `message` with it where the
    /// protocol takes one ([`Raw`](redial_core::Raw): the feed's
    /// unsubscribe request).
    pub async fn unsubscribe_with(
        &self,
        key: impl Into<Text>,
        message: Option<Payload>,
    ) -> Result<(), SendError> {
        self.shared().subscription(false, key.into(), message)
    }

    /// Calls the server with `request` (protocols with calls) and waits for
    /// the reply, going the same way a send does: the session takes the call
    /// at once (sent now when connected, else on the next connection after
    /// the resubscriptions) and the driver hands back its end.
    ///
    /// What a drop means depends on `options`: a call in flight fails with
    /// [`CallError::ConnectionLost`] (it may or may not have reached the
    /// server) unless [`CallOptions::repeatable`], which is sent once more
    /// on the next connection. The wait is bounded by the options' timeout
    /// (default: the config's `call_timeout`, 30 s); calls waiting or in
    /// flight are bounded by the config's `max_calls` (256). Dropping the
    /// future stops the wait, not the call.
    ///
    /// # Errors
    /// [`CallError::Refused`] when the session does not take the call
    /// ([`SendError::Unsupported`] without calls, [`SendError::TooManyCalls`]
    /// at the bound, [`SendError::Closing`], [`SendError::Closed`]);
    /// [`CallError::Timeout`], [`CallError::Rejected`] with the server's
    /// code and message, [`CallError::ConnectionLost`],
    /// [`CallError::Closed`].
    pub async fn call(&self, request: Payload, options: CallOptions) -> Result<Payload, CallError> {
        let end = self.shared().call(request, options)?;
        end.await.unwrap_or(Err(CallError::Closed))
    }

    /// Cuts the client's own backoff short and dials now (the attempt count
    /// stays). A wait the server imposed (Retry-After, GOING_AWAY, a 4010
    /// floor) is kept: the dial then comes when that wait ends.
    pub async fn retry_now(&self) {
        self.shared()
            .tell(|session, now| session.handle_retry_now(now));
    }

    /// Tells the session the network came back or changed: while waiting it
    /// dials as [`retry_now`](Self::retry_now) does (never inside a wait the
    /// server imposed), while connected it probes the socket with a ping.
    pub async fn network_online(&self) {
        self.shared()
            .tell(|session, now| session.handle_network_online(now));
    }

    /// Closes gracefully: no new messages are taken, what is queued is
    /// delivered (for at most the config's `close_linger`), then the socket
    /// closes with 1000. Resolves when the session is
    /// [`Closed`](State::Closed), also while nobody reads [`Events`] and it
    /// is full (a consumer that stopped at the event it wanted): the events
    /// still unread, [`Event::Closed`] last, wait for a reader, and the
    /// socket's close frame goes out once they are read or [`Events`] is
    /// dropped.
    pub async fn close(&self) {
        self.shared().tell(|session, now| session.handle_close(now));
        loop {
            let changed = self.shared().changed.listen();
            if self.state() == State::Closed {
                return;
            }
            changed.await;
        }
    }

    /// The session's state, as of the driver's last step.
    pub fn state(&self) -> State {
        self.shared().state()
    }

    async fn send_waiting(
        &self,
        channel: Option<Text>,
        headers: Option<Headers>,
        payload: Payload,
    ) -> Result<u64, SendError> {
        // Listening costs an allocation: only after a first `QueueFull`.
        let mut space = None;
        loop {
            let answer = self
                .shared()
                .offer(channel.clone(), headers.clone(), payload.clone());
            match answer {
                Err(SendError::QueueFull { .. }) if self.state() != State::Closed => {
                    match space.take() {
                        // Listen, then ask again before waiting, so room
                        // made in between is not missed.
                        None => space = Some(self.shared().space.listen()),
                        Some(listener) => listener.await,
                    }
                }
                other => return other,
            }
        }
    }
}

/// The session's [`Event`]s, in order, ending after [`Event::Closed`].
///
/// Bounded: while it is full the driver waits, reading nothing from the
/// socket (see the crate docs) but still carrying out what the handles ask
/// (a [`Handle::close`], the last handle dropped). Dropping it is fine;
/// events are then discarded.
pub struct Events {
    rx: Pin<Box<async_channel::Receiver<Event>>>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("buffered", &self.rx.len())
            .finish()
    }
}

impl Events {
    pub(crate) fn new(rx: async_channel::Receiver<Event>) -> Self {
        Events { rx: Box::pin(rx) }
    }

    /// The next event; `None` once the session has closed and every event
    /// was read.
    pub async fn recv(&mut self) -> Option<Event> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use redial_core::{Config, Raw};

    use super::*;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn shared(hand_limit: usize) -> Shared {
        let now = Instant::now();
        let mut session = Session::new(Config::default(), Raw::new());
        session.handle_connect(now);
        Shared::new(session, hand_limit, Box::new(move || now))
    }

    fn offer(shared: &Shared, text: &str) -> Result<u64, SendError> {
        shared.offer(None, None, Payload::text(text))
    }

    #[test]
    fn offer_answers_the_sessions_seq_and_wakes_the_driver_once() {
        let shared = shared(8);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(!shared.core().take_poke(&waker));
        assert_eq!(offer(&shared, "a"), Ok(1));
        assert_eq!(offer(&shared, "b"), Ok(2));
        // The first offer took the registered waker: one wake-up for both.
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(shared.core().take_poke(&waker));
        assert!(!shared.core().take_poke(&waker));
        assert_eq!(shared.core().session.queued(), 2);
    }

    #[test]
    fn messages_the_driver_has_not_taken_are_bounded() {
        let shared = shared(2);
        assert_eq!(offer(&shared, "a"), Ok(1));
        assert_eq!(offer(&shared, "b"), Ok(2));
        assert!(matches!(
            offer(&shared, "c"),
            Err(SendError::QueueFull { messages: 2, .. })
        ));
        assert_eq!(shared.core().refused, Some((true, 2)));
        // What the driver does once it took the session's actions.
        shared.core().handed = 0;
        assert_eq!(offer(&shared, "c"), Ok(3));
    }

    #[test]
    fn a_full_socket_holds_new_messages_in_the_handles() {
        let shared = shared(8);
        shared.core().socket_full = true;
        assert!(matches!(
            offer(&shared, "a"),
            Err(SendError::QueueFull { messages: 0, .. })
        ));
        assert_eq!(shared.core().session.queued(), 0);
        shared.core().socket_full = false;
        assert_eq!(offer(&shared, "a"), Ok(1));
    }

    #[test]
    fn a_calls_end_reaches_its_caller_and_other_events_pass() {
        let shared = shared(8);
        let mut core = shared.core();
        let (reply, mut end) = oneshot::channel();
        let id = CallId::from_raw(7);
        core.calls.insert(id, reply);
        let done = Event::CallDone {
            id,
            result: Err(CallError::Timeout),
        };
        assert_eq!(core.route(done.clone()), None);
        assert_eq!(end.try_recv(), Ok(Some(Err(CallError::Timeout))));
        assert_eq!(core.route(done), None, "a caller already answered");
        let other = Event::Acked { seq: 1 };
        assert_eq!(core.route(other.clone()), Some(other));
        // The driver goes: awaited calls end (as closed, for the handle).
        let (reply, mut end) = oneshot::channel();
        core.calls.insert(CallId::from_raw(8), reply);
        core.abandon_calls();
        assert!(end.try_recv().is_err());
    }

    #[test]
    fn a_protocol_without_calls_refuses_them_at_once() {
        let shared = shared(8);
        assert!(matches!(
            shared.call(Payload::text("x"), CallOptions::new()),
            Err(SendError::Unsupported { what: "calls", .. })
        ));
        assert!(shared.core().calls.is_empty());
    }

    #[test]
    fn subscriptions_go_to_the_session_under_the_lock_and_wake_the_driver() {
        let shared = shared(8);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(!shared.core().take_poke(&waker));
        let spec = Some(Payload::text("sub"));
        assert_eq!(shared.subscription(true, "k".into(), spec), Ok(()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        {
            let mut core = shared.core();
            assert_eq!(core.session.subscriptions().count(), 1);
            assert!(std::mem::take(&mut core.subscriptions_changed));
        }
        assert!(shared.core().take_poke(&waker));
        // The session's refusal comes back as it is.
        assert!(matches!(
            shared.subscription(true, "k2".into(), None),
            Err(SendError::Unsupported { .. })
        ));
        assert_eq!(shared.subscription(false, "k".into(), None), Ok(()));
        assert_eq!(shared.core().session.subscriptions().count(), 0);
        shared.core().driver_gone = true;
        let spec = Some(Payload::text("sub"));
        assert_eq!(
            shared.subscription(true, "k".into(), spec),
            Err(SendError::Closed)
        );
    }

    #[test]
    fn dropping_the_last_handle_closes_the_session() {
        let shared = Arc::new(shared(8));
        let handle = Handle::new(Arc::clone(&shared));
        let clone = handle.clone();
        drop(handle);
        assert_eq!(shared.core().session.state(), State::Connecting);
        drop(clone);
        assert_eq!(shared.core().session.state(), State::Closed);
    }

    #[test]
    fn nothing_is_taken_once_the_driver_is_gone() {
        let shared = shared(8);
        shared.core().driver_gone = true;
        assert_eq!(offer(&shared, "a"), Err(SendError::Closed));
        assert_eq!(shared.core().session.queued(), 0);
    }
}
