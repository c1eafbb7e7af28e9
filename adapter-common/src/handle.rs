//! The application's side: a cloneable [`Handle`] and the [`Events`] stream.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_channel::oneshot;
use futures_core::Stream;
use redial_core::{Event, Headers, Payload, SendError, SendLimits, State, Text};

/// What a handle asks of the driver.
pub(crate) enum Command {
    Send {
        channel: Option<Text>,
        /// Only with a channel: see [`Handle::publish_with_headers`].
        headers: Option<Headers>,
        payload: Payload,
        reply: oneshot::Sender<Result<u64, SendError>>,
    },
    Subscribe {
        channel: Text,
        spec: Option<Payload>,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    Unsubscribe {
        channel: Text,
        message: Option<Payload>,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    /// A send nobody waits on: see [`Handle::feed`].
    Feed {
        channel: Option<Text>,
        payload: Payload,
    },
    RetryNow,
    NetworkOnline,
    Close,
}

/// What the driver publishes for the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// The session's own up-front refusals, for [`Handle::feed`].
    limits: SendLimits,
    /// Fed messages the driver could not queue after `feed` returned.
    feeds_refused: AtomicU64,
    /// Set by [`Handle::close`] and by dropping the last handle: a driver
    /// that holds back a fed message (and so reads no commands) closes
    /// anyway.
    pub(crate) close_asked: AtomicBool,
    /// Notified when `close_asked` is set.
    pub(crate) wake_driver: event_listener::Event,
    /// Notified when a refused send may now fit.
    pub(crate) space: event_listener::Event,
    /// Notified when the state changes.
    pub(crate) changed: event_listener::Event,
}

impl Shared {
    pub(crate) fn new(state: State, limits: SendLimits) -> Self {
        Shared {
            state: Mutex::new(state),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            limits,
            feeds_refused: AtomicU64::new(0),
            close_asked: AtomicBool::new(false),
            wake_driver: event_listener::Event::new(),
            space: event_listener::Event::new(),
            changed: event_listener::Event::new(),
        }
    }

    pub(crate) fn feed_refused(&self) {
        self.feeds_refused.fetch_add(1, Ordering::Relaxed);
    }

    fn ask_close(&self) {
        self.close_asked.store(true, Ordering::Release);
        self.wake_driver.notify(usize::MAX);
    }

    pub(crate) fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_state(&self, state: State) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *s != state {
            *s = state;
            drop(s);
            self.changed.notify(usize::MAX);
            if state == State::Closed {
                self.space.notify(usize::MAX);
            }
        }
    }

    pub(crate) fn set_queued(&self, messages: usize, bytes: usize) {
        self.queued.store(messages, Ordering::Relaxed);
        self.queued_bytes.store(bytes, Ordering::Relaxed);
    }

    fn queue_full(&self) -> SendError {
        SendError::QueueFull {
            messages: self.queued.load(Ordering::Relaxed),
            bytes: self.queued_bytes.load(Ordering::Relaxed),
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
/// - [`send`](Self::send) / [`publish`](Self::publish) wait for the
///   session's answer: you get the sequence number (to match
///   [`Event::Acked`]) or the exact error. One message per round trip to
///   the driver task, so one sender has one message in flight.
/// - [`feed`](Self::feed) / [`feed_publish`](Self::feed_publish) hand the
///   message to the driver and return: no sequence number, and only the
///   errors that can be known up front. Many messages in flight, written in
///   batches with one flush: use it for throughput. Backpressure is the
///   same (a full queue makes `feed` wait, nothing is dropped).
///
/// Both go through the same ordered command channel: messages from one
/// task, whichever way they were sent, are queued in the order sent.
#[derive(Clone)]
pub struct Handle {
    tx: async_channel::Sender<Command>,
    shared: Arc<Shared>,
    _last: Arc<LastHandle>,
}

/// Dropped with the last [`Handle`]: tells a driver that is not reading
/// commands (see [`Handle::feed`]) that nobody is left.
struct LastHandle(Arc<Shared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.ask_close();
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
    pub(crate) fn new(tx: async_channel::Sender<Command>, shared: Arc<Shared>) -> Self {
        Handle {
            tx,
            _last: Arc::new(LastHandle(Arc::clone(&shared))),
            shared,
        }
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
    /// once instead of waiting for room.
    pub async fn try_send(&self, payload: Payload) -> Result<u64, SendError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Send {
            channel: None,
            headers: None,
            payload,
            reply,
        };
        match self.tx.try_send(command) {
            Ok(()) => answer.await.unwrap_or(Err(SendError::Closed)),
            Err(async_channel::TrySendError::Full(_)) => Err(self.shared.queue_full()),
            Err(async_channel::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
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

    /// Hands a message to the driver without waiting for the session's
    /// answer (for [`Wire`](redial_core::Wire): a publish with no channel).
    /// The fast way to send many messages; see "`send` or `feed`" above.
    ///
    /// Returns as soon as the bounded command channel took the message: it
    /// waits only for room there. The driver queues fed messages in order
    /// and never drops one for lack of room: when the session's queue is
    /// full (or the socket is not taking frames) it holds the message and
    /// reads no more commands until there is room, so the command channel
    /// fills and `feed` waits. Backpressure instead of loss, as with
    /// [`send`](Self::send).
    ///
    /// # Errors
    /// Answered here, before anything is handed over: every refusal the
    /// session would give for good ([`SendError::TooLarge`], and for
    /// [`feed_publish`](Self::feed_publish) [`SendError::Unsupported`] and
    /// [`SendError::InvalidChannel`]), and [`SendError::Closing`] /
    /// [`SendError::Closed`] when the session is already closing or closed.
    /// Never [`SendError::QueueFull`]: `feed` waits instead.
    ///
    /// Not answered: a close that overtakes a message already fed (another
    /// handle's [`close`](Self::close), the last handle dropped, or the
    /// session ending on its own). Such a message is not queued; the driver
    /// logs a `warn` and counts it in [`feeds_refused`](Self::feeds_refused).
    /// A close asked while the driver holds a message for lack of room
    /// waits for room at most the builder's `close_timeout` (default 2 s),
    /// then takes effect anyway (the server may never come back): what was
    /// fed but not yet queued is then refused, as the waiting
    /// [`send`](Self::send)s would be. With a server that is just slow,
    /// the close comes in its turn, after everything fed before it. If you
    /// need to know about every message, use `send`.
    pub async fn feed(&self, payload: Payload) -> Result<(), SendError> {
        self.feed_to(None, payload).await
    }

    /// [`feed`](Self::feed) to a channel ([`Wire`](redial_core::Wire) only):
    /// the fire-and-forget form of [`publish`](Self::publish).
    pub async fn feed_publish(
        &self,
        channel: impl Into<Text>,
        payload: Payload,
    ) -> Result<(), SendError> {
        self.feed_to(Some(channel.into()), payload).await
    }

    /// Fed messages that were handed over but could not be queued because
    /// the session closed first (see [`feed`](Self::feed)). Zero unless a
    /// close raced the feeds.
    pub fn feeds_refused(&self) -> u64 {
        self.shared.feeds_refused.load(Ordering::Relaxed)
    }

    /// Subscribes to a channel ([`Wire`](redial_core::Wire)) or subject
    /// ([`Nats`](redial_core::Nats)); renewed after every reconnect. The
    /// confirmation, where the protocol has one, arrives as
    /// [`Event::Subscribed`].
    pub async fn subscribe(&self, channel: impl Into<Text>) -> Result<(), SendError> {
        let channel = channel.into();
        self.request(|reply| Command::Subscribe {
            channel,
            spec: None,
            reply,
        })
        .await
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
        let channel = key.into();
        self.request(|reply| Command::Subscribe {
            channel,
            spec: Some(spec),
            reply,
        })
        .await
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
        let channel = key.into();
        self.request(|reply| Command::Unsubscribe {
            channel,
            message,
            reply,
        })
        .await
    }

    /// Cuts the client's own backoff short and dials now (the attempt count
    /// stays). A wait the server imposed (Retry-After, GOING_AWAY, a 4010
    /// floor) is kept: the dial then comes when that wait ends.
    pub async fn retry_now(&self) {
        let _ = self.tx.send(Command::RetryNow).await;
    }

    /// Tells the session the network came back or changed: while waiting it
    /// dials as [`retry_now`](Self::retry_now) does (never inside a wait the
    /// server imposed), while connected it probes the socket with a ping.
    pub async fn network_online(&self) {
        let _ = self.tx.send(Command::NetworkOnline).await;
    }

    /// Closes gracefully: no new messages are taken, what is queued is
    /// delivered (for at most the config's `close_linger`), then the socket
    /// closes with 1000. Resolves when the session is
    /// [`Closed`](State::Closed).
    pub async fn close(&self) {
        // Reaches the driver even while it reads no commands (holding a fed
        // message for lack of room); the command keeps the usual order.
        self.shared.ask_close();
        let _ = self.tx.send(Command::Close).await;
        loop {
            let changed = self.shared.changed.listen();
            if self.state() == State::Closed {
                return;
            }
            changed.await;
        }
    }

    /// The session's state, as of the driver's last step.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    async fn feed_to(&self, channel: Option<Text>, payload: Payload) -> Result<(), SendError> {
        self.shared.limits.check(channel.as_ref(), &payload)?;
        match self.state() {
            State::Closed => return Err(SendError::Closed),
            State::Closing => return Err(SendError::Closing),
            _ => {}
        }
        self.tx
            .send(Command::Feed { channel, payload })
            .await
            .map_err(|_| SendError::Closed)
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
                .request(|reply| Command::Send {
                    channel: channel.clone(),
                    headers: headers.clone(),
                    payload: payload.clone(),
                    reply,
                })
                .await;
            match answer {
                Err(SendError::QueueFull { .. }) if self.state() != State::Closed => {
                    match space.take() {
                        // Listen, then ask again before waiting, so room
                        // made in between is not missed.
                        None => space = Some(self.shared.space.listen()),
                        Some(listener) => listener.await,
                    }
                }
                other => return other,
            }
        }
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SendError>>) -> Command,
    ) -> Result<T, SendError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(command(reply)).await.is_err() {
            return Err(SendError::Closed);
        }
        answer.await.unwrap_or(Err(SendError::Closed))
    }
}

/// The session's [`Event`]s, in order, ending after [`Event::Closed`].
///
/// Bounded: while it is full the driver waits, reading nothing from the
/// socket (see the crate docs). Dropping it is fine; events are then
/// discarded.
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
